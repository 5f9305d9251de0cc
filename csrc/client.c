/*
 * client.c — the client's side of a connection until it speaks WebSocket: the non-blocking
 * connect, the upgrade request (with a fresh random key), and reading and checking the
 * server's response (pyws_handshake_check_response). After a valid 101 the connection is an
 * ordinary WebSocket in the client role (ws.c masks every frame it sends).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core.h"
#include "http.h"

#define MAX_RESPONSE_HEADERS 64

/* Start the non-blocking connect to host:port: a new client connection in CONNECTING, watched
 * for writability, with its deadline (handshake_timeout) set. */
static int dial(pyws_loop *loop, const char *host, int port, const pyws_opts *opts,
                pyws_conn **out)
{
    pyws_conn tmp;
    socklen_t salen = sizeof(tmp.peer);
    memset(&tmp.peer, 0, sizeof(tmp.peer));
    int used = 0;
    int fd = pw_net_connect(host, port, 0, &used, &tmp.peer.sa, &salen, loop->errbuf,
                              sizeof(loop->errbuf));
    if (fd < 0)
        return fd; /* the kind: PYWS_ERR_DNS, _REFUSED, _TIMEOUT or _SYS */
    pyws_conn *c = pw_conn_new(loop, PYWS_KIND_CONN, fd);
    if (!c) {
        close(fd);
        return pw_set_error(loop, PYWS_ERR_NOMEM, "out of memory");
    }
    c->opts = *opts;
    c->peer = tmp.peer;
    c->role = PYWS_ROLE_CLIENT;
    pw_conn_set_state(loop, c, PYWS_ST_CONNECTING);
    c->port = port;
    c->addr_index = used;
    c->host = strdup(host);
    if (!c->host) {
        pw_conn_free(loop, c);
        return pw_set_error(loop, PYWS_ERR_NOMEM, "out of memory");
    }
    if (pw_poller_add(loop->poller, fd, c->id, PYWS_POLL_IN | PYWS_POLL_OUT) < 0) {
        pw_set_error(loop, PYWS_ERR_SYS, "cannot watch the socket: %s", strerror(errno));
        pw_conn_free(loop, c);
        return PYWS_ERR_SYS;
    }
    c->flags |= CF_WANT_WRITE;
    if (c->opts.handshake_timeout) {
        c->deadline_hs = pw_now_ms() + c->opts.handshake_timeout;
        pw_conn_deadline(loop, c, c->deadline_hs);
    }
    *out = c;
    return PYWS_OK;
}

int pyws_stream_connect(pyws_loop *loop, const char *host, int port, const pyws_opts *opts,
                        uint64_t *id)
{
    if (port <= 0 || port > 65535)
        return pw_set_error(loop, PYWS_ERR_ARG, "port %d is out of range", port);
    if (!host)
        return pw_set_error(loop, PYWS_ERR_ARG, "host is required");
    pyws_opts def;
    if (!opts) {
        pyws_opts_default(&def);
        opts = &def;
    }
    pyws_conn *c = NULL;
    int rc = dial(loop, host, port, opts, &c);
    if (rc != PYWS_OK)
        return rc;
    c->flags |= CF_STREAM;
    *id = c->id;
    return PYWS_OK;
}

int pyws_ws_connect(pyws_loop *loop, const char *host, int port,
                    const pyws_handshake_request *request, const pyws_opts *opts, uint64_t *id)
{
    if (port <= 0 || port > 65535)
        return pw_set_error(loop, PYWS_ERR_ARG, "port %d is out of range", port);
    if (!host || !request)
        return pw_set_error(loop, PYWS_ERR_ARG, "host and request are required");
    pyws_opts def;
    if (!opts) {
        pyws_opts_default(&def);
        opts = &def;
    }
    /* the request as it will be sent, checked before any socket exists; the key (16 bytes
     * from the OS's random source) and the extension offer are the core's */
    uint8_t nonce[16];
    char key[25];
    pw_random(loop, nonce, sizeof(nonce));
    pyws_client_key(nonce, key);
    char ext[512];
    int elen = pyws_pmd_offer(opts, ext, sizeof(ext));
    pyws_handshake_request req = *request;
    req.host = request->host ? request->host : host;
    req.key = key;
    req.extensions = elen > 0 ? ext : NULL;
    int64_t need = pyws_handshake_format_request(&req, NULL, 0);
    if (need == PYWS_ERR_ARG)
        return pw_set_error(loop, PYWS_ERR_ARG, "invalid upgrade request: a host without "
                              "spaces or brackets, a port in 0..65535, a path starting with '/', "
                              "subprotocol tokens, header lines 'Name: value\\r\\n' without "
                              "control characters");
    pyws_conn *c = NULL;
    int rc0 = dial(loop, host, port, opts, &c);
    if (rc0 != PYWS_OK)
        return rc0;

    memcpy(c->key, key, sizeof(key));
    if (req.protocols && *req.protocols) {
        c->protocols = strdup(req.protocols);
        if (!c->protocols)
            goto nomem;
    }
    char *head = malloc((size_t)-need);
    if (!head)
        goto nomem;
    int64_t n = pyws_handshake_format_request(&req, head, (size_t)-need);
    int rc = n > 0 ? pw_conn_queue(loop, c, (const uint8_t *)head, (size_t)n, NULL, 0)
                   : PYWS_ERR_ARG;
    free(head);
    if (rc != PYWS_OK)
        goto nomem;
    *id = c->id;
    return PYWS_OK;
nomem:
    pw_conn_free(loop, c);
    return pw_set_error(loop, PYWS_ERR_NOMEM, "out of memory");
}

/* Report why this client connection failed, then close it. */
void pw_client_fail(pyws_loop *loop, pyws_conn *c, int code, const char *why)
{
    pw_event_error(loop, c->id, code, why);
    pw_conn_close(loop, c, PYWS_CLOSE_ABNORMAL);
}

void pw_client_connected(pyws_loop *loop, pyws_conn *c)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err && c->host) {
        /* try the host's next address (say 127.0.0.1 after ::1 refused); the request stays
         * queued for whichever connect succeeds */
        pyws_conn tmp;
        socklen_t salen = sizeof(tmp.peer);
        int used = 0;
        char ignored[64];
        int fd = pw_net_connect(c->host, c->port, c->addr_index + 1, &used, &tmp.peer.sa,
                                  &salen, ignored, sizeof(ignored));
        if (fd >= 0) {
            pw_poller_del(loop->poller, c->fd, PYWS_POLL_IN | PYWS_POLL_OUT);
            close(c->fd);
            c->fd = fd;
            c->peer = tmp.peer;
            c->addr_index = used;
            if (pw_poller_add(loop->poller, fd, c->id, PYWS_POLL_IN | PYWS_POLL_OUT) == 0)
                return; /* wait for this one */
            err = errno;
        }
    }
    if (err) {
        char why[200];
        char addr[80];
        if (pw_net_format_addr(&c->peer.sa, addr, sizeof(addr)) < 0)
            strcpy(addr, "the server");
        snprintf(why, sizeof(why), "cannot connect to %s: %s", addr, strerror(err));
        pw_client_fail(loop, c, pw_net_error_code(err), why);
        return;
    }
    if (c->flags & CF_STREAM) {
        /* a stream is open once TCP is: no answer to wait for; the deadline stays only for a
         * TLS handshake still to come (pw_conn_timeout) */
        if (!(c->tr_flags & PYWS_TR_HANDSHAKING))
            c->deadline_hs = 0;
        pw_conn_set_state(loop, c, PYWS_ST_STREAM);
        pw_event_push(loop, PYWS_EV_CONNECT, c->id);
        pw_conn_flush(loop, c);
        return;
    }
    pw_conn_set_state(loop, c, PYWS_ST_CLIENT_HS);
    pw_event_push(loop, PYWS_EV_CONNECT, c->id);
    /* the upgrade request, queued while connecting (after the TLS handshake, if any) */
    pw_conn_flush(loop, c);
}

/* Copy the first n bytes of the read buffer into the batch's scratch space. */
static const uint8_t *keep(pyws_loop *loop, pyws_conn *c, size_t n)
{
    uint8_t *copy = pw_scratch(loop, n);
    if (copy)
        memcpy(copy, c->rbuf, n);
    return copy;
}

void pw_client_input(pyws_loop *loop, pyws_conn *c)
{
    pyws_http_head head;
    pyws_header headers[MAX_RESPONSE_HEADERS];
    int r = pyws_http_parse_response((const char *)c->rbuf, c->rlen, c->opts.max_header_bytes,
                                     &head, headers, MAX_RESPONSE_HEADERS);
    if (r == PYWS_HTTP_PARTIAL)
        return;
    if (r < 0) {
        pw_client_fail(loop, c, PYWS_ERR_HANDSHAKE,
                    r == PYWS_HTTP_TOO_LARGE ? "the server's response head is too large"
                                             : "the server's response is not valid HTTP");
        return;
    }
    size_t head_len = (size_t)r;
    if (head.status != 101) {
        /* EV_HTTP_RESP carries the head (and whatever body came with it); Python decides
         * whether to follow a redirect. */
        pyws_event *ev = pw_event_push(loop, PYWS_EV_HTTP_RESP, c->id);
        if (ev) {
            ev->data = keep(loop, c, c->rlen);
            ev->len = ev->data ? head_len : 0;
            ev->data2 = ev->data ? ev->data + head_len : NULL;
            ev->len2 = ev->data ? c->rlen - head_len : 0;
            ev->code = head.status;
        }
        c->close_code = PYWS_CLOSE_ABNORMAL;
        pw_conn_close(loop, c, PYWS_CLOSE_ABNORMAL);
        return;
    }
    pyws_str protocol;
    const char *why = pyws_handshake_check_response(&head, headers, c->key, c->protocols,
                                                    &protocol);
    pyws_str values[16];
    size_t nv = pw_http_values(headers, head.num_headers, "sec-websocket-extensions", values, 16);
    pyws_pmd_params agreed;
    int deflate = 0;
    if (!why)
        why = pyws_pmd_check_response(values, nv, &c->opts, &agreed, &deflate);
    if (why) {
        pw_client_fail(loop, c, PYWS_ERR_HANDSHAKE, why);
        return;
    }
    pyws_event *ev = pw_event_push(loop, PYWS_EV_WS_OPEN, c->id);
    if (ev) {
        ev->data = keep(loop, c, head_len);
        ev->len = ev->data ? head_len : 0;
    }
    free(c->protocols);
    c->protocols = NULL;
    pw_ws_start(loop, c, PYWS_ROLE_CLIENT);
    if (!c->sess || (deflate && pw_ws_enable_deflate(loop, c, &agreed) < 0)) {
        pw_client_fail(loop, c, PYWS_ERR_NOMEM, "out of memory");
        return;
    }
    /* frames the server sent right behind its 101 */
    size_t rest = c->rlen - head_len;
    uint8_t *more = rest ? pw_scratch(loop, rest) : NULL;
    if (more)
        memcpy(more, c->rbuf + head_len, rest);
    free(c->rbuf);
    c->rbuf = NULL;
    c->rlen = c->rcap = 0;
    if (more)
        pw_ws_input(loop, c, more, rest);
}
