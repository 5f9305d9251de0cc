/*
 * transport.h — how a connection's bytes reach its socket (internal). Two backends, each in its
 * own file with static functions behind one const table: transport_tcp.c (plain TCP: recv and
 * sendmsg) and tls.c (OpenSSL). conn.c reads and writes through c->tr and knows nothing of
 * what is behind it; any connection of the loop (a WebSocket, or another protocol's client
 * living in the same loop) gets the read buffer, write queue, deadlines and transport alike.
 *
 * Why a table of function pointers per connection, not a switch over a kind: both backends live
 * in one process at once (a wss:// listener beside a ws:// one), unlike the poller, which is
 * chosen at build time. A table lets tls.c keep every OpenSSL detail static, lets a later
 * transport (a test double, a unix socket) be added without touching conn.c, and costs one
 * indirect call per read or write, which is nothing next to the syscall it makes.
 *
 * Ownership. c->tr points to a static table and is never NULL (pw_conn_new sets TCP).
 * c->tr_ctx belongs to the transport: on a connection it is the transport's per-connection
 * state (tls.c: the SSL and its retry length; TCP: NULL); on a listener it is the shared
 * configuration its accepted connections start from (tls.c: an SSL_CTX reference). tr->free
 * releases it, for both kinds. c->tr_flags is written by the transport only; conn.c reads it.
 *
 * What read() and writev() return (handshake() says its own, below):
 *   n > 0             bytes read into dst / taken from the front of iov
 *   0                 read() only: the peer ended the stream (EOF)
 *   PYWS_TR_AGAIN     nothing now ("would block"): PYWS_TR_WANT_WRITE in tr_flags says the
 *                     transport waits for writability, otherwise it waits for input
 *   PYWS_TR_ERROR     the stream is broken and the caller closes the connection (closing with
 *                     PYWS_CLOSE_ABNORMAL keeps any close_code the transport set). The
 *                     transport may have reported why first: EV_ERROR, c->close_code.
 * A transport never closes or frees the connection, never calls back into conn.c and never
 * changes the poller's interest: after a call that changed tr_flags the caller syncs it
 * (pw_conn_watch reads tr_flags). Of the connection it uses c->fd, c->role and c->id (its
 * reports) only, never the WebSocket state: any connection of the loop can have one.
 */
#ifndef PYWS_TRANSPORT_H
#define PYWS_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "pyws.h"

struct pyws_conn;

#define PYWS_TR_AGAIN (-1)
#define PYWS_TR_ERROR (-2)

/* tr_flags: the transport's state as the connection needs to see it */
#define PYWS_TR_HANDSHAKING 0x01u /* the transport's own handshake is in progress: application
                                   * bytes wait; call handshake() when the socket is ready */
#define PYWS_TR_WANT_WRITE 0x02u  /* the transport needs the socket writable to go on, whether
                                   * or not the write queue has bytes */
#define PYWS_TR_PENDING 0x04u     /* read() filled dst and input is left inside the transport
                                   * (OpenSSL's decrypted bytes): no socket event will report
                                   * it, so read again at the next poll */

#define PYWS_TR_IOV_MAX 64 /* segments one writev() is offered at most */

typedef struct pyws_transport {
    const char *name; /* "tcp", "tls" */

    /* Start this transport on c, just accepted by `listener` (whose tr is this table and whose
     * tr_ctx is its configuration): sets c->tr, c->tr_ctx, c->tr_flags. PYWS_OK, or a PYWS_ERR_*
     * code with c left as plain TCP (the caller frees c). */
    int (*accept)(pyws_loop *loop, struct pyws_conn *c, const struct pyws_conn *listener);

    /* Drive the handshake while PYWS_TR_HANDSHAKING is set: 1 done (the flag is cleared and
     * queued bytes may be written), 0 more round trips (PYWS_TR_WANT_WRITE says which way),
     * PYWS_TR_ERROR failed (reported). */
    int (*handshake)(pyws_loop *loop, struct pyws_conn *c);

    /* Read at most room bytes (room > 0) into dst, which the caller owns. Returns as above.
     * Sets PYWS_TR_PENDING when input is left inside the transport, clears it otherwise. */
    ssize_t (*read)(pyws_loop *loop, struct pyws_conn *c, uint8_t *dst, size_t room);

    /* Write from the iovcnt (1..PYWS_TR_IOV_MAX) segments at the head of the caller's queue, in
     * order. Returns how many bytes were taken (the caller drops them from its queue; fewer
     * than offered is normal: tls.c writes at most one record, its coalescing of small
     * segments), PYWS_TR_AGAIN or PYWS_TR_ERROR. After PYWS_TR_AGAIN the next call must offer
     * the same bytes again (OpenSSL's retry rule): the caller may append to its queue but not
     * change or drop what was offered. The segments are only read during the call. */
    ssize_t (*writev)(pyws_loop *loop, struct pyws_conn *c, const struct iovec *iov,
                      int iovcnt);

    /* End our direction of the stream: TLS close_notify (best effort, only once its handshake
     * is done), then TCP SHUT_WR. Afterwards tr_flags is 0 and read() only drains the socket
     * (the bytes are to be discarded), until 0 (EOF) or PYWS_TR_ERROR. */
    void (*shutdown)(pyws_loop *loop, struct pyws_conn *c);

    /* The connection's handshake deadline passed while PYWS_TR_HANDSHAKING was set: report why
     * (EV_ERROR) and return the close code for EV_CLOSE; the caller closes. */
    int (*expired)(pyws_loop *loop, struct pyws_conn *c);

    /* Release c->tr_ctx (connection or listener) and set it to NULL. The fd is the caller's. */
    void (*free)(struct pyws_conn *c);
} pyws_transport;

extern const pyws_transport pw_transport_tcp; /* transport_tcp.c */
extern const pyws_transport pw_transport_tls; /* tls.c */

/* tls.c: start TLS on a connection that has exchanged no byte yet (client: right after its
 * connect began; server: just accepted). c->role picks the side; server_name (clients, may be
 * NULL) is sent as SNI and checked against the certificate when the context verifies. */
int pw_tls_start(pyws_loop *loop, struct pyws_conn *c, const pyws_tls_ctx *ctx,
                   const char *server_name);

#endif
