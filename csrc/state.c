/*
 * state.c — the connection state machine: the const table of allowed transitions, the one
 * function that changes a connection's state, and the public view of it (pyws_conn_state,
 * PYWS_STATE_*). See state.h for the states and docs/architecture.md for the table in prose.
 */
#include <stdio.h>
#include <stdlib.h>

#include "core.h"

static const char *const names[PYWS_ST_COUNT] = {
    [PYWS_ST_NEW] = "NEW",
    [PYWS_ST_CONNECTING] = "CONNECTING",
    [PYWS_ST_CLIENT_HS] = "CLIENT_HS",
    [PYWS_ST_HTTP] = "HTTP",
    [PYWS_ST_HTTP_REQUEST] = "HTTP_REQUEST",
    [PYWS_ST_WS_OPEN] = "WS_OPEN",
    [PYWS_ST_WS_CLOSE_SENT] = "WS_CLOSE_SENT",
    [PYWS_ST_WS_CLOSE_RECEIVED] = "WS_CLOSE_RECEIVED",
    [PYWS_ST_WS_CLOSE_WAIT] = "WS_CLOSE_WAIT",
    [PYWS_ST_WS_CLOSE_FLUSH] = "WS_CLOSE_FLUSH",
    [PYWS_ST_DRAINING] = "DRAINING",
    [PYWS_ST_FLUSHING] = "FLUSHING",
    [PYWS_ST_LINGER] = "LINGER",
    [PYWS_ST_STREAM] = "STREAM",
    [PYWS_ST_CLOSED] = "CLOSED",
};

/* What Python sees (pyws.State). */
static const uint8_t public_state[PYWS_ST_COUNT] = {
    [PYWS_ST_NEW] = PYWS_STATE_CONNECTING,
    [PYWS_ST_CONNECTING] = PYWS_STATE_CONNECTING,
    [PYWS_ST_CLIENT_HS] = PYWS_STATE_CONNECTING,
    [PYWS_ST_HTTP] = PYWS_STATE_CONNECTING,
    [PYWS_ST_HTTP_REQUEST] = PYWS_STATE_CONNECTING,
    [PYWS_ST_WS_OPEN] = PYWS_STATE_OPEN,
    [PYWS_ST_WS_CLOSE_SENT] = PYWS_STATE_CLOSING,
    [PYWS_ST_WS_CLOSE_RECEIVED] = PYWS_STATE_CLOSING,
    [PYWS_ST_WS_CLOSE_WAIT] = PYWS_STATE_CLOSING,
    [PYWS_ST_WS_CLOSE_FLUSH] = PYWS_STATE_CLOSING,
    [PYWS_ST_DRAINING] = PYWS_STATE_CLOSING,
    [PYWS_ST_FLUSHING] = PYWS_STATE_CLOSING,
    [PYWS_ST_LINGER] = PYWS_STATE_CLOSING,
    [PYWS_ST_STREAM] = PYWS_STATE_OPEN,
    [PYWS_ST_CLOSED] = PYWS_STATE_CLOSED,
};

/* The allowed transitions, one line each; docs/architecture.md says when each happens. */
#define T(from, to) [PYWS_ST_##from][PYWS_ST_##to] = 1
static const uint8_t allowed[PYWS_ST_COUNT][PYWS_ST_COUNT] = {
    T(NEW, HTTP),                        /* accepted by a listener */
    T(NEW, CONNECTING),                  /* pyws_ws_connect started the connect */
    T(NEW, CLOSED),                      /* set-up failed */

    T(CONNECTING, CLIENT_HS),            /* connected: the upgrade request goes out */
    T(CONNECTING, STREAM),               /* a stream connected: its queued bytes go out */
    T(CONNECTING, FLUSHING),             /* the application closed it before it connected */
    T(CONNECTING, CLOSED),               /* refused, timed out, aborted */

    T(CLIENT_HS, WS_OPEN),               /* a valid 101 */
    T(CLIENT_HS, FLUSHING),              /* the application closed it before the answer */
    T(CLIENT_HS, CLOSED),                /* another answer, a bad 101, EOF, timeout */

    T(HTTP, HTTP_REQUEST),               /* a request was delivered */
    T(HTTP, FLUSHING),                   /* a bad request answered (4xx, 408), drain() */
    T(HTTP, CLOSED),                     /* EOF, idle timeout, I/O error, abort */

    T(HTTP_REQUEST, WS_OPEN),            /* ws_upgrade() */
    T(HTTP_REQUEST, FLUSHING),           /* a bad upgrade or request answered, drain() */
    T(HTTP_REQUEST, CLOSED),             /* EOF, idle timeout, I/O error, abort */

    T(WS_OPEN, WS_CLOSE_SENT),           /* our close frame queued */
    T(WS_OPEN, WS_CLOSE_RECEIVED),       /* the peer's close frame arrived */
    T(WS_OPEN, FLUSHING),                /* drain() */
    T(WS_OPEN, CLOSED),                  /* EOF without a close frame, write limit, abort */

    T(WS_CLOSE_SENT, WS_CLOSE_WAIT),     /* client: the server's close frame arrived */
    T(WS_CLOSE_SENT, WS_CLOSE_FLUSH),    /* server: the client's close frame arrived */
    T(WS_CLOSE_SENT, FLUSHING),          /* failing: do not wait for the peer's close */
    T(WS_CLOSE_SENT, CLOSED),            /* EOF, close_timeout, I/O error, abort */

    T(WS_CLOSE_RECEIVED, WS_CLOSE_WAIT), /* client: our echo queued */
    T(WS_CLOSE_RECEIVED, WS_CLOSE_FLUSH),/* server: our echo queued */
    T(WS_CLOSE_RECEIVED, FLUSHING),      /* client echo after the server's EOF, drain() */
    T(WS_CLOSE_RECEIVED, CLOSED),        /* I/O error, write limit, abort */

    T(WS_CLOSE_WAIT, FLUSHING),          /* drain() */
    T(WS_CLOSE_WAIT, CLOSED),            /* the server's EOF, close_timeout */

    T(WS_CLOSE_FLUSH, DRAINING),         /* queue written: FIN sent */
    T(WS_CLOSE_FLUSH, CLOSED),           /* close_timeout, I/O error, abort */

    T(DRAINING, CLOSED),                 /* the peer's input ended or stopped, close_timeout */

    T(FLUSHING, LINGER),                 /* queue written: FIN sent */
    T(FLUSHING, CLOSED),                 /* close_timeout, I/O error, abort */

    T(LINGER, CLOSED),                   /* the peer's EOF, close_timeout */

    T(STREAM, FLUSHING),                 /* drain(): write what is queued, then FIN */
    T(STREAM, CLOSED),                   /* the peer's EOF, I/O error, write limit, abort */
};
#undef T

int pyws_state_count(void)
{
    return PYWS_ST_COUNT;
}

const char *pyws_state_name(int s)
{
    return s >= 0 && s < PYWS_ST_COUNT ? names[s] : NULL;
}

int pyws_state_allowed(int from, int to)
{
    if (from < 0 || from >= PYWS_ST_COUNT || to < 0 || to >= PYWS_ST_COUNT)
        return 0;
    return allowed[from][to];
}

int pyws_state_public(int s)
{
    return s >= 0 && s < PYWS_ST_COUNT ? public_state[s] : PYWS_ERR_ARG;
}

void pw_conn_set_state(pyws_loop *loop, pyws_conn *c, int to)
{
    int from = c->state;
    if (from == to)
        return;
    if (!pyws_state_allowed(from, to)) {
        const char *f = pyws_state_name(from), *t = pyws_state_name(to);
#ifdef PYWS_CHECK_STATES
        (void)loop;
        fprintf(stderr, "pyws: illegal connection state change %s -> %s (connection %#llx)\n",
                f ? f : "?", t ? t : "?", (unsigned long long)c->id);
        abort();
#else
        char why[128];
        snprintf(why, sizeof(why), "internal error: illegal connection state change %s -> %s",
                 f ? f : "?", t ? t : "?");
        pw_event_error(loop, c->id, PYWS_ERR_STATE, why);
#endif
    }
    c->state = (uint8_t)to;
}

int pyws_conn_state(pyws_loop *loop, uint64_t id)
{
    pyws_conn *c = pw_conn_get(loop, id);
    if (!c || c->kind != PYWS_KIND_CONN)
        return PYWS_STATE_CLOSED;
    return public_state[c->state];
}
