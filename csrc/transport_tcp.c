/*
 * transport_tcp.c — the plain transport: the connection's bytes are the socket's bytes. recv
 * into the caller's buffer, sendmsg straight from the write queue's segments (one syscall for
 * up to PYWS_TR_IOV_MAX of them). No handshake, no state (tr_ctx stays NULL, tr_flags 0).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "core.h"

#ifdef MSG_NOSIGNAL
#define SEND_FLAGS MSG_NOSIGNAL
#else
#define SEND_FLAGS 0 /* SO_NOSIGPIPE was set on the socket (net.c) */
#endif

static int tcp_accept(pyws_loop *loop, pyws_conn *c, const pyws_conn *listener)
{
    (void)loop;
    (void)listener;
    c->tr = &pw_transport_tcp;
    c->tr_ctx = NULL;
    c->tr_flags = 0;
    return PYWS_OK;
}

static int tcp_handshake(pyws_loop *loop, pyws_conn *c)
{
    (void)loop;
    (void)c;
    return 1; /* nothing to agree on */
}

static ssize_t tcp_read(pyws_loop *loop, pyws_conn *c, uint8_t *dst, size_t room)
{
    (void)loop;
    ssize_t n = recv(c->fd, dst, room, 0);
    if (n >= 0)
        return n;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return PYWS_TR_AGAIN;
    return PYWS_TR_ERROR;
}

static ssize_t tcp_writev(pyws_loop *loop, pyws_conn *c, const struct iovec *iov, int iovcnt)
{
    (void)loop;
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = (struct iovec *)iov; /* sendmsg only reads them */
    msg.msg_iovlen = (size_t)iovcnt;
    for (;;) {
        ssize_t n = sendmsg(c->fd, &msg, SEND_FLAGS);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return PYWS_TR_AGAIN;
        return PYWS_TR_ERROR;
    }
}

static void tcp_shutdown(pyws_loop *loop, pyws_conn *c)
{
    (void)loop;
    shutdown(c->fd, SHUT_WR);
}

static int tcp_expired(pyws_loop *loop, pyws_conn *c)
{
    (void)loop;
    (void)c;
    return PYWS_CLOSE_ABNORMAL; /* never handshaking: not called */
}

static void tcp_free(pyws_conn *c)
{
    c->tr_ctx = NULL;
}

const pyws_transport pw_transport_tcp = {
    .name = "tcp",
    .accept = tcp_accept,
    .handshake = tcp_handshake,
    .read = tcp_read,
    .writev = tcp_writev,
    .shutdown = tcp_shutdown,
    .expired = tcp_expired,
    .free = tcp_free,
};
