/*
 * session.h — one WebSocket's protocol state (internal). Sans-I/O: bytes in, events out.
 *
 * The session turns frames from the parser into whole messages and control events, enforces the
 * message-level rules (UTF-8 for text, the maximum message size, close frame payloads) and owns
 * the message assembly buffer. It never touches a socket; whoever drives it writes the replies.
 */
#ifndef PYWS_SESSION_H
#define PYWS_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "pyws.h"

enum {
    PYWS_SESS_NONE = 0,   /* input exhausted: feed more */
    PYWS_SESS_MESSAGE,    /* a whole data message: opcode, data/len */
    PYWS_SESS_PING,       /* data/len: ping payload (the driver answers with a pong) */
    PYWS_SESS_PONG,       /* data/len: pong payload */
    PYWS_SESS_CLOSE,      /* the peer's close: code (1005 if none), reason/reason_len */
    PYWS_SESS_ERROR,      /* fail the connection with code and reason (static string) */
};

typedef struct pyws_sess_event {
    int kind;
    int opcode;
    const uint8_t *data;
    size_t len;
    int code;
    const char *reason;
    size_t reason_len;
} pyws_sess_event;

typedef struct pyws_session {
    pyws_parser parser;
    pyws_utf8 utf8;
    uint64_t max_message;     /* bytes; 0 = unlimited */
    uint64_t msg_len;         /* bytes of the data message in progress */
    uint8_t msg_opcode;       /* TEXT/BINARY of the message in progress, 0 if none */
    uint8_t failed;           /* an ERROR was reported: all later input is ignored */
    uint8_t closed;           /* a CLOSE was reported: all later input is ignored */
    uint8_t ctl_len;
    uint8_t ctl[128];         /* control frame payload being assembled */
    /* message assembly buffer; `held` means a MESSAGE view into it is still in use */
    uint8_t *buf;
    size_t buf_len;
    size_t buf_cap;
    uint8_t held;
} pyws_session;

void pyws_session_init(pyws_session *s, int role, uint64_t max_message);
/* Free the assembly buffer. */
void pyws_session_free(pyws_session *s);

/* Feed buf[0..len) (modified in place: unmasking). Consumes a prefix, stores *consumed and
 * returns one event (PYWS_SESS_NONE when everything was consumed without one). Views in *ev
 * point into buf or into the session's assembly buffer and stay valid until
 * pyws_session_release() — the driver calls that once the views are no longer used. A second
 * MESSAGE assembled while the first is held goes to a fresh buffer; the held one is handed to
 * *retired (caller frees it later with free()). */
int pyws_session_feed(pyws_session *s, uint8_t *buf, size_t len, size_t *consumed,
                      pyws_sess_event *ev, uint8_t **retired);

/* The views of earlier events are no longer used: the assembly buffer may be reused; buffers
 * larger than keep_bytes are freed (idle connections hold no large buffers). */
void pyws_session_release(pyws_session *s, size_t keep_bytes);

/* 1 if code may appear in a close frame on the wire (RFC 6455 §7.4), else 0. */
int pyws_close_code_valid(int code);

/* Bytes of heap the session holds. */
size_t pyws_session_memory(const pyws_session *s);

#endif
