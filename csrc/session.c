/*
 * session.c — one WebSocket's protocol state: message assembly, UTF-8 checks, size limits,
 * control frames and close payload validation. Sans-I/O: see the Session section of pyws.h.
 */
#include <stdlib.h>
#include <string.h>

#include "deflate.h"
#include "pyws.h"

void pyws_session_init(pyws_session *s, int role, uint64_t max_message)
{
    memset(s, 0, sizeof(*s));
    pyws_parser_init(&s->parser, role);
    pyws_utf8_init(&s->utf8);
    s->max_message = max_message;
}

void pyws_session_free(pyws_session *s)
{
    free(s->buf);
    s->buf = NULL;
    s->buf_len = s->buf_cap = 0;
    s->held = 0;
}

int pyws_close_code_valid(int code)
{
    if (code >= 1000 && code <= 1003)
        return 1;
    if (code >= 1007 && code <= 1014)
        return 1;
    return code >= 3000 && code <= 4999;
}

static int fail(pyws_session *s, pyws_sess_event *ev, int code, const char *reason)
{
    s->failed = 1;
    ev->kind = PYWS_SESS_ERROR;
    ev->code = code;
    ev->reason = reason;
    ev->reason_len = strlen(reason);
    return ev->kind;
}

int pyws_session_fail(pyws_session *s, pyws_sess_event *ev, int code, const char *reason)
{
    memset(ev, 0, sizeof(*ev));
    return fail(s, ev, code, reason ? reason : "");
}

void pyws_session_set_limits(pyws_session *s, uint64_t max_message, uint32_t max_fragments)
{
    s->max_message = max_message;
    s->max_fragments = max_fragments;
}

void pyws_session_enable_deflate(pyws_session *s)
{
    s->parser.rsv_allowed = 0x40; /* RSV1: "this message is compressed" (RFC 7692 §6) */
}

uint8_t *pyws_session_take_held(pyws_session *s)
{
    if (!s->held || !s->buf)
        return NULL;
    uint8_t *b = s->buf;
    s->buf = NULL;
    s->buf_len = s->buf_cap = 0;
    s->held = 0;
    return b;
}

void pyws_session_set_pool(pyws_session *s, const pyws_bufpool *pool)
{
    s->pool = pool;
}

/* Make room for `extra` more bytes in the assembly buffer. It grows geometrically with the bytes
 * that have arrived, never by the length a frame header claims: a peer that announces a large
 * frame and stalls holds only what it sent (amortised, each byte is copied about twice). Only
 * a buffer the pool already holds may be taken at the size the headers announce (want): that
 * memory is spent already. */
static int reserve(pyws_session *s, size_t extra, uint64_t want, uint8_t **retired)
{
    if (s->held) {
        /* The buffer still backs a delivered message: start a fresh one. */
        *retired = s->buf;
        s->buf = NULL;
        s->buf_len = s->buf_cap = 0;
        s->held = 0;
    }
    if (extra > SIZE_MAX - s->buf_len)
        return -1;
    size_t need = s->buf_len + extra;
    if (need <= s->buf_cap)
        return 0;
    if (!s->buf && s->pool && s->pool->get) {
        size_t got = 0;
        uint8_t *pb = s->pool->get(s->pool->ctx, need, want > need && want <= SIZE_MAX
                                  ? (size_t)want : need, &got);
        if (pb && got >= need) {
            s->buf = pb;
            s->buf_cap = got;
            return 0;
        }
        free(pb); /* a pool that broke its word: never write past what it gave */
    }
    size_t cap = s->buf_cap ? s->buf_cap : 4096;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    uint8_t *nb = realloc(s->buf, cap);
    if (!nb)
        return -1;
    s->buf = nb;
    s->buf_cap = cap;
    return 0;
}

static int control_end(pyws_session *s, pyws_sess_event *ev)
{
    ev->data = s->ctl;
    ev->len = s->ctl_len;
    switch (s->parser.opcode) {
    case PYWS_OP_PING:
        ev->kind = PYWS_SESS_PING;
        return ev->kind;
    case PYWS_OP_PONG:
        ev->kind = PYWS_SESS_PONG;
        return ev->kind;
    default: /* CLOSE */
        break;
    }
    if (s->ctl_len == 0) {
        ev->code = PYWS_CLOSE_NO_STATUS;
        ev->reason = "";
        ev->reason_len = 0;
    } else if (s->ctl_len == 1) {
        return fail(s, ev, PYWS_CLOSE_PROTOCOL_ERROR, "close frame with a 1-byte payload");
    } else {
        int code = (s->ctl[0] << 8) | s->ctl[1];
        if (!pyws_close_code_valid(code))
            return fail(s, ev, PYWS_CLOSE_PROTOCOL_ERROR, "invalid close code");
        if (!pyws_utf8_valid(s->ctl + 2, s->ctl_len - 2u))
            return fail(s, ev, PYWS_CLOSE_INVALID_DATA, "close reason is not valid UTF-8");
        ev->code = code;
        ev->reason = (const char *)s->ctl + 2;
        ev->reason_len = s->ctl_len - 2u;
    }
    s->closed = 1;
    ev->kind = PYWS_SESS_CLOSE;
    return ev->kind;
}

int pyws_session_feed(pyws_session *s, uint8_t *buf, size_t len, size_t *consumed,
                      pyws_sess_event *ev, uint8_t **retired)
{
    size_t pos = 0;
    memset(ev, 0, sizeof(*ev));
    if (s->failed || s->closed) {
        *consumed = len;
        return PYWS_SESS_NONE;
    }
    for (;;) {
        pyws_frame_event fe;
        size_t n = pyws_parser_feed(&s->parser, buf + pos, len - pos, &fe);
        pos += n;
        *consumed = pos;
        switch (fe.kind) {
        case PYWS_FRAME_NEED_MORE:
            return PYWS_SESS_NONE;

        case PYWS_FRAME_ERROR:
            return fail(s, ev, fe.close_code, fe.reason);

        case PYWS_FRAME_HEADER:
            /* the parser let through only RSV1, and only when permessage-deflate was agreed;
             * it marks a compressed message on its first frame and nowhere else (RFC 7692 §6) */
            if (fe.rsv && (fe.opcode & 8))
                return fail(s, ev, PYWS_CLOSE_PROTOCOL_ERROR, "RSV1 set on a control frame");
            if (fe.opcode & 8) {
                s->ctl_len = 0;
                break;
            }
            if (fe.opcode != PYWS_OP_CONTINUATION) {
                s->msg_opcode = fe.opcode;
                s->msg_frames = 0;
                s->msg_len = 0;
                s->msg_compressed = fe.rsv ? 1 : 0;
                pyws_utf8_init(&s->utf8);
            } else if (fe.rsv) {
                return fail(s, ev, PYWS_CLOSE_PROTOCOL_ERROR, "RSV1 set on a continuation frame");
            }
            /* endless (empty) continuation frames would never end the message */
            if (++s->msg_frames > s->max_fragments && s->max_fragments)
                return fail(s, ev, PYWS_CLOSE_TOO_BIG, "message has too many fragments");
            if (s->max_message) {
                /* compressed bytes are bounded too: deflate never grows data by more than a
                 * few bytes per block, so this slack only lets through what may inflate to
                 * max_message; the inflated size is checked while inflating */
                uint64_t limit = s->max_message;
                if (s->msg_compressed)
                    limit += (limit >> 10) + 64;
                if (fe.length > limit - s->msg_len)
                    return fail(s, ev, PYWS_CLOSE_TOO_BIG, "message too big");
            }
            break;

        case PYWS_FRAME_PAYLOAD:
            if (s->parser.opcode & 8) {
                /* at most 125 bytes in all: the parser checked the length */
                memcpy(s->ctl + s->ctl_len, fe.data, fe.len);
                s->ctl_len = (uint8_t)(s->ctl_len + fe.len);
                break;
            }
            if (s->msg_opcode == PYWS_OP_TEXT && !s->msg_compressed) {
                size_t bad;
                if (pyws_utf8_feed(&s->utf8, fe.data, fe.len, &bad) == PYWS_UTF8_INVALID)
                    return fail(s, ev, PYWS_CLOSE_INVALID_DATA, "invalid UTF-8 in a text message");
            }
            /* bytes the driver read straight into the buffer's free tail are kept there */
            int direct = s->buf && !s->held && s->buf_len < s->buf_cap &&
                         fe.data == s->buf + s->buf_len;
            if (!direct && s->parser.fin && s->parser.opcode != PYWS_OP_CONTINUATION &&
                fe.len == s->parser.length) {
                /* A whole single-frame message in one piece: deliver it in place. */
                s->msg_len = fe.len;
                ev->data = fe.data;
                ev->len = fe.len;
                break;
            }
            if (direct) { /* read into place by the driver (pyws_session_payload_room) */
                s->buf_len += fe.len;
                s->msg_len += fe.len;
                break;
            }
            if (reserve(s, fe.len, s->msg_len + fe.len + s->parser.remaining, retired) < 0)
                return fail(s, ev, PYWS_CLOSE_INTERNAL_ERROR, "out of memory");
            memcpy(s->buf + s->buf_len, fe.data, fe.len);
            s->buf_len += fe.len;
            s->msg_len += fe.len;
            break;

        case PYWS_FRAME_END:
            if (s->parser.opcode & 8)
                return control_end(s, ev);
            if (!s->parser.fin)
                break;
            if (s->msg_opcode == PYWS_OP_TEXT && !s->msg_compressed && s->utf8.state != 0)
                return fail(s, ev, PYWS_CLOSE_INVALID_DATA, "text message ends inside a UTF-8 sequence");
            ev->kind = PYWS_SESS_MESSAGE;
            ev->opcode = s->msg_opcode;
            ev->compressed = s->msg_compressed;
            if (ev->data == NULL) {
                /* assembled in the buffer (reserve() retired any held one first) */
                if (s->msg_len) {
                    ev->data = s->buf;
                    ev->len = s->buf_len;
                    s->held = 1;
                } else {
                    ev->data = (const uint8_t *)"";
                    ev->len = 0;
                }
            }
            s->msg_opcode = 0;
            return ev->kind;
        }
    }
}

uint8_t *pyws_session_payload_room(pyws_session *s, size_t min_left, size_t *room,
                                   uint8_t **retired)
{
    *room = 0;
    /* remaining > 0 only inside a frame's payload (the parser zeroes it as a frame ends) */
    uint64_t left = s->parser.remaining;
    if (s->failed || s->closed || left == 0 || left < min_left || (s->parser.opcode & 8) ||
        s->msg_opcode == 0 || s->msg_compressed)
        return NULL;
    /* grow by what has arrived (at least min_left), as reserve() does */
    uint64_t extra = s->buf_len > min_left ? s->buf_len : min_left;
    if (extra > left)
        extra = left;
    if (extra > SIZE_MAX / 4)
        extra = SIZE_MAX / 4;
    if (reserve(s, (size_t)extra, s->msg_len + left, retired) < 0)
        return NULL; /* the ordinary path reports it */
    size_t r = s->buf_cap - s->buf_len;
    *room = (uint64_t)r > left ? (size_t)left : r;
    return s->buf + s->buf_len;
}

void pyws_session_release(pyws_session *s, size_t keep_bytes)
{
    if (s->held) {
        s->held = 0;
        s->buf_len = 0;
    }
    if (s->msg_opcode == 0 && s->buf_cap > keep_bytes) {
        if (s->pool && s->pool->put)
            s->pool->put(s->pool->ctx, s->buf, s->buf_cap);
        else
            free(s->buf);
        s->buf = NULL;
        s->buf_cap = 0;
        s->buf_len = 0;
    }
}

size_t pyws_session_memory(const pyws_session *s)
{
    return s->buf_cap;
}

int pyws_session_inflate(pyws_session *s, pyws_pmd *pmd, pyws_zpool *pool, pyws_sess_event *ev,
                         uint8_t *room, size_t room_len, uint8_t **heap)
{
    *heap = NULL;
    if (ev->kind != PYWS_SESS_MESSAGE || !ev->compressed)
        return ev->kind;
    if (!pmd)
        return fail(s, ev, PYWS_CLOSE_PROTOCOL_ERROR, "RSV1 without permessage-deflate");
    if (!pool)
        return fail(s, ev, PYWS_CLOSE_INTERNAL_ERROR, "out of memory while inflating");
    if (!room)
        room_len = 0;
    const uint8_t *out = NULL;
    size_t out_len = 0;
    uint8_t *block = NULL;
    int r = pw_pmd_inflate(pmd, pool, ev->data, ev->len, s->max_message, room, room_len, &out,
                             &out_len, &block);
    const char *why = NULL;
    int code = 0;
    if (r == PYWS_CLOSE_TOO_BIG) {
        code = r;
        why = "message too big (after inflating)";
    } else if (r == PYWS_CLOSE_INVALID_DATA) {
        code = r;
        why = "invalid compressed data";
    } else if (r != 0) {
        code = PYWS_CLOSE_INTERNAL_ERROR;
        why = "out of memory while inflating";
    } else if (s->max_message && out_len > s->max_message) {
        code = PYWS_CLOSE_TOO_BIG; /* pw_pmd_inflate refuses these; never trust one check */
        why = "message too big (after inflating)";
    } else if (ev->opcode == PYWS_OP_TEXT && out_len && !pyws_utf8_valid(out, out_len)) {
        code = PYWS_CLOSE_INVALID_DATA;
        why = "invalid UTF-8 in a text message";
    }
    if (code) {
        free(block);
        return fail(s, ev, code, why);
    }
    ev->data = out_len ? out : (const uint8_t *)"";
    ev->len = out_len;
    *heap = block;
    return ev->kind;
}
