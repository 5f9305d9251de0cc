/*
 * state.h — the states of a connection's life and the one way to change them (state.c).
 * Internal to the event half; the public view (PYWS_STATE_*, pyws_conn_state) is in pyws.h.
 *
 * Every change of c->state goes through pw_conn_set_state(), which checks it against the
 * const table of allowed transitions in state.c. docs/architecture.md ("Connection states")
 * lists the same table; tests/test_states.py compares the two.
 *
 *   server:  NEW ─► HTTP ─► HTTP_REQUEST ─(ws_upgrade)─► WS_OPEN
 *   client:  NEW ─► CONNECTING ─► CLIENT_HS ─(valid 101)─► WS_OPEN
 *
 *   WS_OPEN ─(our close queued)─► WS_CLOSE_SENT ──(peer's close)──┐
 *      └──(peer's close)──► WS_CLOSE_RECEIVED ─(our echo queued)──┤
 *                                                                 ├─ server ─► WS_CLOSE_FLUSH ─► DRAINING
 *                                                                 └─ client ─► WS_CLOSE_WAIT
 *   failing / drain() / HTTP answer ─► FLUSHING ─(queue written, FIN)─► LINGER
 *   any state ─(EOF, I/O error, timeout, abort, end of LINGER/DRAINING/WAIT)─► CLOSED
 *
 * The peer's EOF (CF_EOF) is not a state: it is a fact about the socket's read side that
 * coexists with FLUSHING (keep writing: the peer may still read), WS_CLOSE_RECEIVED (the echo
 * still goes out) and a failing WS_OPEN (pending_code: the close frame still goes out); folding
 * it in would double those states. The transport's own handshake (TLS) is not a state either:
 * it is the transport's (tr_flags), it happens under HTTP, CONNECTING and CLIENT_HS alike, and
 * a transport never changes the connection's state.
 */
#ifndef PYWS_STATE_H
#define PYWS_STATE_H

#include <stdint.h>

#include "pyws.h"

enum {
    PYWS_ST_NEW = 0,          /* just allocated, not set up yet */
    PYWS_ST_CONNECTING,       /* client: TCP connect in progress (upgrade request or, for a
                                 stream, its first bytes queued) */
    PYWS_ST_CLIENT_HS,        /* client: connected, upgrade request sent, reading the answer */
    PYWS_ST_HTTP,             /* server: reading HTTP; no request delivered yet */
    PYWS_ST_HTTP_REQUEST,     /* server: a request was delivered (EV_HTTP_MSG); its upgrade
                                 data is stored, so ws_upgrade() may answer it; keep-alive
                                 requests that follow stay here */
    PYWS_ST_WS_OPEN,          /* WebSocket open (a failing one has pending_code set: its close
                                 frame goes out at the next poll) */
    PYWS_ST_WS_CLOSE_SENT,    /* our close frame is queued; waiting for the peer's */
    PYWS_ST_WS_CLOSE_RECEIVED,/* the peer's close frame arrived; our echo goes out next poll */
    PYWS_ST_WS_CLOSE_WAIT,    /* client: both close frames went by; the server ends TCP */
    PYWS_ST_WS_CLOSE_FLUSH,   /* server: both close frames went by; write the queue, then
                                 DRAINING (the server ends TCP first, RFC 6455 §7.1.1) */
    PYWS_ST_DRAINING,         /* server, after WS_CLOSE_FLUSH: FIN sent; drop what the peer
                                 still sends, close once its input is empty */
    PYWS_ST_FLUSHING,         /* write what is queued, then LINGER (no close handshake owed) */
    PYWS_ST_LINGER,           /* FIN sent; discard input until the peer's EOF or close_timeout */
    PYWS_ST_STREAM,           /* client: a plain byte stream (pyws_stream_connect), connected:
                                 input is delivered as EV_DATA, output is pyws_send_raw */
    PYWS_ST_CLOSED,           /* freed: EV_CLOSE delivered (or never announced) */
    PYWS_ST_COUNT
};

struct pyws_conn;

/* Change c's state to `to` (the same state: nothing happens). A change the table does not
 * allow is a bug: with PYWS_CHECK_STATES (the sanitizer build) it aborts; otherwise it is
 * reported as EV_ERROR (code PYWS_ERR_STATE) on the connection and made anyway, since the
 * caller's next steps assume it (refusing it could leave a connection that never ends). */
void pw_conn_set_state(pyws_loop *loop, struct pyws_conn *c, int to);

/* Groups of states the rules are written in. */
static inline int pyws_st_http(int s)     /* a server connection still speaking HTTP */
{
    return s == PYWS_ST_HTTP || s == PYWS_ST_HTTP_REQUEST;
}
static inline int pyws_st_opening(int s)  /* before the WebSocket opened (either role) */
{
    return s == PYWS_ST_NEW || s == PYWS_ST_CONNECTING || s == PYWS_ST_CLIENT_HS ||
           pyws_st_http(s);
}
static inline int pyws_st_may_send(int s) /* a WebSocket whose close frame has not gone out */
{
    return s == PYWS_ST_WS_OPEN || s == PYWS_ST_WS_CLOSE_RECEIVED;
}
static inline int pyws_st_ws_input(int s) /* frames from the peer still go to the session */
{
    return s == PYWS_ST_WS_OPEN || s == PYWS_ST_WS_CLOSE_SENT ||
           s == PYWS_ST_WS_CLOSE_RECEIVED || s == PYWS_ST_WS_CLOSE_WAIT;
}
static inline int pyws_st_ending(int s)   /* on the way out: only queued bytes leave */
{
    return s == PYWS_ST_FLUSHING || s == PYWS_ST_LINGER || s == PYWS_ST_WS_CLOSE_FLUSH ||
           s == PYWS_ST_DRAINING;
}

#endif
