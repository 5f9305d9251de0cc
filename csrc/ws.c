/*
 * ws.c — the WebSocket phase of a connection: feeding the session and acting on what it reports
 * (messages to the batch, pongs, the close handshake), sending frames with fragmentation and
 * backpressure rules, heartbeat pings.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/random.h>
#endif

#include "core.h"

void pw_ws_start(pyws_loop *loop, pyws_conn *c, int role)
{
    c->sess = malloc(sizeof(*c->sess));
    if (!c->sess)
        return;
    pyws_session_init(c->sess, role, c->opts.max_message_size);
    pyws_session_set_limits(c->sess, c->opts.max_message_size, c->opts.max_fragments);
    pyws_session_set_pool(c->sess, &loop->bigbuf_pool);
    c->role = role;
    pw_conn_set_state(loop, c, PYWS_ST_WS_OPEN);
    c->flags |= CF_WAS_WS;
    loop->ws_opened++;
    if (c->opts.control_events)
        c->flags |= CF_CTL_EVENTS;
    c->deadline_hs = 0;
    if (c->opts.heartbeat) {
        c->hb_next = loop->now + c->opts.heartbeat;
        pw_conn_deadline(loop, c, c->hb_next);
    }
}

/* Random bytes from the OS (getrandom / arc4random), drawn 256 at a time. */
void pw_random(pyws_loop *loop, uint8_t *out, size_t n)
{
    while (n) {
        if (loop->rng_left == 0) {
            size_t got = 0;
#if defined(__linux__)
            while (got < sizeof(loop->rng)) {
                ssize_t r = getrandom(loop->rng + got, sizeof(loop->rng) - got, 0);
                if (r <= 0)
                    break;
                got += (size_t)r;
            }
#else
            arc4random_buf(loop->rng, sizeof(loop->rng));
            got = sizeof(loop->rng);
#endif
            if (got < sizeof(loop->rng))
                abort(); /* no OS randomness: refusing to send predictable masks and keys */
            loop->rng_left = sizeof(loop->rng);
        }
        size_t take = n < loop->rng_left ? n : loop->rng_left;
        loop->rng_left -= take;
        memcpy(out, loop->rng + loop->rng_left, take);
        out += take;
        n -= take;
    }
}

int pw_ws_queue_frame(pyws_loop *loop, pyws_conn *c, int fin, int opcode, const uint8_t *data,
                        size_t len)
{
    return pw_ws_queue_frame_rsv(loop, c, fin, 0, opcode, data, len);
}

int pw_ws_queue_frame_rsv(pyws_loop *loop, pyws_conn *c, int fin, int rsv, int opcode,
                            const uint8_t *data, size_t len)
{
    uint8_t hdr[14];
    uint8_t key[4];
    int client = c->role == PYWS_ROLE_CLIENT;
    if (client)
        pw_random(loop, key, 4);
    size_t hlen = pyws_frame_header(hdr, fin, rsv, opcode, len, client ? key : NULL);
    int rc = pw_conn_queue(loop, c, hdr, hlen, data, len);
    if (rc == 0 && client && len) {
        /* the payload is the last len bytes of the tail segment */
        pyws_wseg *t = &c->wq[(c->wq_head + c->wq_n - 1) % c->wq_cap];
        pyws_mask(pw_blob_bytes(t->blob) + t->off + t->len - len, len, key, 0);
    }
    return rc;
}

int pw_ws_enable_deflate(pyws_loop *loop, pyws_conn *c, const pyws_pmd_params *agreed)
{
    (void)loop;
    c->pmd = malloc(sizeof(*c->pmd));
    if (!c->pmd)
        return PYWS_ERR_NOMEM;
    pw_pmd_init(c->pmd, c->role, agreed, &c->opts);
    c->pmd_agreed = *agreed;
    pyws_session_enable_deflate(c->sess);
    return PYWS_OK;
}

/* Queue our close frame: WS_OPEN -> WS_CLOSE_SENT. From WS_CLOSE_RECEIVED (our echo) the
 * caller goes on to close_exchanged(), which picks the next state. */
static void send_close_frame(pyws_loop *loop, pyws_conn *c, int code, const char *reason,
                             size_t rlen)
{
    uint8_t payload[125];
    size_t n = 0;
    if (code && code != PYWS_CLOSE_NO_STATUS) {
        payload[0] = (uint8_t)(code >> 8);
        payload[1] = (uint8_t)code;
        if (rlen > 123)
            rlen = 123;
        if (rlen)
            memcpy(payload + 2, reason, rlen);
        n = 2 + rlen;
    }
    pw_ws_queue_frame(loop, c, 1, PYWS_OP_CLOSE, payload, n);
    if (c->state == PYWS_ST_WS_OPEN)
        pw_conn_set_state(loop, c, PYWS_ST_WS_CLOSE_SENT);
    if (c->flags & CF_PAUSED) { /* closing: read again, or the peer's close is never seen */
        c->flags &= ~CF_PAUSED;
        pw_conn_watch(loop, c);
        if (c->tr_flags & PYWS_TR_PENDING) /* the peer's close may wait inside the transport */
            pw_conn_mark(loop, c, CF_PENDING);
    }
}

static void set_reason(pyws_conn *c, const char *reason, size_t len)
{
    if (len > sizeof(c->close_reason))
        len = sizeof(c->close_reason);
    memcpy(c->close_reason, reason, len);
    c->close_reason_len = (uint8_t)len;
}

static void push_ctl(pyws_loop *loop, pyws_conn *c, int opcode, const uint8_t *data, size_t len)
{
    if (!(c->flags & CF_CTL_EVENTS))
        return;
    pyws_event *ev = pw_event_push(loop, PYWS_EV_WS_CTL, c->id);
    if (!ev)
        return;
    ev->opcode = opcode;
    uint8_t *copy = pw_scratch(loop, len ? len : 1);
    if (copy) {
        memcpy(copy, data, len);
        ev->data = copy;
        ev->len = len;
    }
}

/* Both close frames have been exchanged (from WS_CLOSE_SENT: the peer's arrived; from
 * WS_CLOSE_RECEIVED: our echo is queued): end the connection. The server closes TCP first
 * (RFC 6455 §7.1.1: WS_CLOSE_FLUSH, then DRAINING); a client waits for the server to
 * (WS_CLOSE_WAIT), unless it already did (EOF: FLUSHING). */
static void close_exchanged(pyws_loop *loop, pyws_conn *c)
{
    if (c->role == PYWS_ROLE_SERVER) {
        pw_conn_set_state(loop, c, PYWS_ST_WS_CLOSE_FLUSH);
        pw_conn_finish(loop, c);
        return;
    }
    if (c->flags & CF_EOF) {
        pw_conn_finish(loop, c);
        return;
    }
    pw_conn_set_state(loop, c, PYWS_ST_WS_CLOSE_WAIT);
    if (!c->deadline_close) {
        c->deadline_close = loop->now + c->opts.close_timeout;
        pw_conn_deadline(loop, c, c->deadline_close);
    }
}

/* Fail the connection with code: the close frame goes out at the next poll, after the replies
 * to messages delivered before the bad one. */
static void ws_fail(pyws_loop *loop, pyws_conn *c, int code, const char *reason)
{
    c->close_code = code;
    set_reason(c, reason, strlen(reason));
    if (pyws_st_may_send(c->state)) {
        c->pending_code = code;
        c->pending_reason = reason;
        pw_conn_mark(loop, c, CF_PENDING);
    } else {
        pw_conn_finish(loop, c);
    }
}

/* A heap block holding an event's view: freed at the next poll (copied to scratch outside
 * one). NULL if it cannot be kept. */
static const uint8_t *keep_block(pyws_loop *loop, uint8_t *block, size_t len)
{
    if (loop->in_poll && pw_retire(loop, block) == 0)
        return block;
    uint8_t *copy = pw_scratch(loop, len);
    if (copy)
        memcpy(copy, block, len);
    free(block);
    return copy;
}

/* A compressed message: the session inflates and checks it (pyws_session_inflate); this only
 * lends the output room, the arena's free tail, with a heap block past it. Returns the
 * session's kind: MESSAGE (ev views the message, kept until the next poll) or ERROR. */
static int inflate_message(pyws_loop *loop, pyws_conn *c, pyws_sess_event *ev)
{
    size_t room;
    uint8_t *dst = pw_scratch_room(loop, &room);
    uint8_t *heap = NULL;
    /* inflated messages may take the arena's first half only: the rest stays for reading,
     * so one connection's burst of small compressed messages does not starve the others */
    room = room > PYWS_ARENA_SIZE / 2 ? room - PYWS_ARENA_SIZE / 2 : 0;
    int kind = pyws_session_inflate(c->sess, c->pmd, c->pmd ? pw_loop_zpool(loop) : NULL, ev,
                                    room ? dst : NULL, room, &heap);
    if (kind != PYWS_SESS_MESSAGE)
        return kind;
    if (heap) {
        ev->data = keep_block(loop, heap, ev->len);
        if (!ev->data) {
            /* the session has delivered it; the connection cannot keep it */
            return pyws_session_fail(c->sess, ev, PYWS_CLOSE_INTERNAL_ERROR,
                                     "out of memory while inflating");
        }
    } else if (ev->len) {
        (void)pw_scratch(loop, ev->len); /* claim what was written at the arena's tail */
    }
    return kind;
}

/* The payload of our heartbeat pings: the µs clock when sent, big-endian. */
static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (56 - 8 * i));
}

/* A pong of 8 bytes: if it answers our last heartbeat ping, its round trip. */
static void pong_rtt(pyws_conn *c, const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    if (v != c->hb_ping_us)
        return; /* an older ping's, or the application's own */
    uint64_t now = pw_now_us();
    c->ping_rtt_us = now > v ? now - v : 1;
    c->hb_ping_us = 0;
}

void pw_ws_input(pyws_loop *loop, pyws_conn *c, uint8_t *data, size_t len)
{
    while (len) {
        size_t used = 0;
        pyws_sess_event ev;
        uint8_t *retired = NULL;
        int kind = pyws_session_feed(c->sess, data, len, &used, &ev, &retired);
        if (retired)
            (void)pw_retire(loop, retired);
        data += used;
        len -= used;
        switch (kind) {
        case PYWS_SESS_NONE:
            return;
        case PYWS_SESS_MESSAGE: {
            if (ev.compressed) {
                c->cnt.zin_wire += ev.len;
                if (inflate_message(loop, c, &ev) != PYWS_SESS_MESSAGE) {
                    ws_fail(loop, c, ev.code, ev.reason); /* the session ignores later input */
                    return;
                }
                c->cnt.zin_data += ev.len;
            }
            c->cnt.msgs_in++;
            c->cnt.bytes_in += ev.len;
            pyws_event *e = pw_event_push(loop, PYWS_EV_WS_MSG, c->id);
            if (e) {
                e->opcode = ev.opcode;
                e->data = ev.data;
                e->len = ev.len;
                e->aux = (uint64_t)ev.compressed;
            }
            pw_conn_mark(loop, c, CF_HELD);
            break;
        }
        case PYWS_SESS_PING:
            if (pyws_st_may_send(c->state)) {
                if (c->flags & CF_PONG_DUE)
                    loop->pongs_replaced++; /* the pong waiting is dropped for this one */
                memcpy(c->pong, ev.data, ev.len); /* at most 125 bytes: the parser checked */
                c->pong_len = (uint8_t)ev.len;
                c->flags |= CF_PONG_DUE;
                pw_ws_send_pong(loop, c);
            }
            push_ctl(loop, c, PYWS_OP_PING, ev.data, ev.len);
            break;
        case PYWS_SESS_PONG:
            c->hb_deadline = 0;
            if (c->hb_ping_us && ev.len == 8)
                pong_rtt(c, ev.data);
            push_ctl(loop, c, PYWS_OP_PONG, ev.data, ev.len);
            break;
        case PYWS_SESS_CLOSE:
            push_ctl(loop, c, PYWS_OP_CLOSE, c->sess->ctl, c->sess->ctl_len);
            if (c->state == PYWS_ST_WS_OPEN || !c->close_code) {
                c->close_code = ev.code;
                set_reason(c, ev.reason, ev.reason_len);
            }
            if (c->state == PYWS_ST_WS_CLOSE_SENT) {
                close_exchanged(loop, c); /* the answer to ours */
            } else {
                /* Echo at the next poll, after the application's replies to earlier messages. */
                pw_conn_set_state(loop, c, PYWS_ST_WS_CLOSE_RECEIVED);
                c->pending_code = ev.code;
                c->pending_reason = NULL;
                pw_conn_mark(loop, c, CF_PENDING);
            }
            return;
        case PYWS_SESS_ERROR:
            ws_fail(loop, c, ev.code, ev.reason);
            return;
        }
    }
}

/* Every ping gets its pong at once while little is queued to the peer, or while no pong of ours
 * waits unwritten in the queue (so a pong behind a long stream of data still goes out, in
 * order). Otherwise (a peer that pings faster than it reads) the pong waits until our last one
 * is written or the queue drains under PYWS_PONG_QUEUE_MAX, and a newer ping replaces the one
 * waiting: RFC 6455 §5.5.3 lets an endpoint that got several pings answer only the most recent.
 * So pongs never pile up: a ping flood costs at most PYWS_PONG_QUEUE_MAX of queued pongs plus
 * one waiting payload. */
int pw_ws_pong_may_queue(const pyws_conn *c)
{
    return c->tx_sent >= c->pong_mark ||
           c->wq_bytes + PYWS_PONG_FRAME_MAX <= PYWS_PONG_QUEUE_MAX;
}

int pw_ws_send_pong(pyws_loop *loop, pyws_conn *c)
{
    if (!(c->flags & CF_PONG_DUE) || !pw_ws_pong_may_queue(c))
        return 0;
    c->flags &= ~CF_PONG_DUE;
    if (!pyws_st_may_send(c->state))
        return 0;
    if (pw_ws_queue_frame(loop, c, 1, PYWS_OP_PONG, c->pong, c->pong_len) != PYWS_OK)
        return 0;
    c->pong_mark = c->tx_queued;
    return 1;
}

void pw_ws_overflow(pyws_loop *loop, pyws_conn *c)
{
    static const char why[] = "write buffer limit exceeded (slow consumer)";
    loop->closes[PYWS_WHY_WRITE_LIMIT]++;
    c->close_code = PYWS_CLOSE_POLICY;
    set_reason(c, why, sizeof(why) - 1);
    pw_conn_close(loop, c, PYWS_CLOSE_POLICY);
}

/* The application holds closes (pyws_hold_closes): tell it once, and bound the wait by
 * close_timeout. Returns 0 if held, -1 if the close must go out now (no room for the event). */
static int hold_close(pyws_loop *loop, pyws_conn *c)
{
    if (c->flags & CF_CLOSE_TOLD)
        return 0;
    pyws_event *e = pw_event_push(loop, PYWS_EV_CLOSE_HELD, c->id);
    if (!e)
        return -1;
    c->flags |= CF_CLOSE_TOLD;
    if (!c->deadline_close) { /* bounds the hold and the handshake after it together */
        c->deadline_close = loop->now + c->opts.close_timeout;
        pw_conn_deadline(loop, c, c->deadline_close);
    }
    return 0;
}

void pw_ws_pending(pyws_loop *loop, pyws_conn *c)
{
    int code = c->pending_code;
    if (!code)
        return;
    if ((c->flags & CF_CLOSE_HOLD) && pyws_st_may_send(c->state) && hold_close(loop, c) == 0)
        return;
    c->pending_code = 0;
    if (!pyws_st_may_send(c->state))
        return; /* ended some other way meanwhile (drain(): no close frame, as documented) */
    const char *r = c->pending_reason ? c->pending_reason : "";
    int echo = c->state == PYWS_ST_WS_CLOSE_RECEIVED;
    send_close_frame(loop, c, code, r, strlen(r));
    if (echo)
        close_exchanged(loop, c);
    else
        pw_conn_finish(loop, c); /* failing: do not wait for the peer */
}

int pyws_hold_closes(pyws_loop *loop, uint64_t id, int on)
{
    pyws_conn *c = pw_conn_get(loop, id);
    if (!c || c->kind != PYWS_KIND_CONN)
        return PYWS_ERR_BADID;
    if (on) {
        c->flags |= CF_CLOSE_HOLD;
        return PYWS_OK;
    }
    int held = (c->flags & CF_CLOSE_TOLD) != 0;
    c->flags &= ~(CF_CLOSE_HOLD | CF_CLOSE_TOLD);
    if (held && c->pending_code)
        pw_ws_pending(loop, c);
    return PYWS_OK;
}

/* close_timeout passed while a close was held: it goes out now, with close_timeout again for
 * the handshake after it. */
void pw_ws_hold_expired(pyws_loop *loop, pyws_conn *c)
{
    c->flags &= ~(CF_CLOSE_HOLD | CF_CLOSE_TOLD);
    c->deadline_close = loop->now + c->opts.close_timeout;
    pw_ws_pending(loop, c);
}

void pw_ws_timeout(pyws_loop *loop, pyws_conn *c)
{
    uint64_t now = loop->now;
    if (!pyws_st_may_send(c->state))
        return;
    if (c->hb_deadline && now >= c->hb_deadline) {
        static const char why[] = "keepalive ping timeout";
        loop->closes[PYWS_WHY_HEARTBEAT]++;
        c->hb_deadline = 0;
        c->hb_next = 0;
        c->close_code = PYWS_CLOSE_INTERNAL_ERROR;
        set_reason(c, why, sizeof(why) - 1);
        int echo = c->state == PYWS_ST_WS_CLOSE_RECEIVED;
        send_close_frame(loop, c, PYWS_CLOSE_INTERNAL_ERROR, why, sizeof(why) - 1);
        if (echo) {
            c->pending_code = 0; /* this close frame is the answer to the peer's */
            close_exchanged(loop, c);
        } else {
            pw_conn_finish(loop, c);
        }
        return;
    }
    if (c->opts.heartbeat && c->hb_next && now >= c->hb_next) {
        uint8_t payload[8];
        uint64_t us = pw_now_us();
        put_be64(payload, us);
        if (pw_ws_queue_frame(loop, c, 1, PYWS_OP_PING, payload, sizeof(payload)) == PYWS_OK) {
            c->hb_ping_us = us; /* its pong times the round trip (pong_rtt) */
            c->pings_sent++;
        }
        if (!c->hb_deadline)
            c->hb_deadline = now + c->opts.heartbeat_timeout;
        c->hb_next = now + c->opts.heartbeat;
    }
}

/* ------------------------------------------------------------------ public calls */

static int ws_conn(pyws_loop *loop, uint64_t id, pyws_conn **out)
{
    pyws_conn *c = pw_conn_get(loop, id);
    if (!c || c->kind != PYWS_KIND_CONN)
        return PYWS_ERR_BADID;
    *out = c;
    if (pyws_st_may_send(c->state))
        return PYWS_OK;
    if (pyws_st_opening(c->state))
        return pw_set_error(loop, PYWS_ERR_STATE, c->role == PYWS_ROLE_CLIENT
                              ? "the WebSocket is not open yet (wait for EV_WS_OPEN)"
                              : "not a WebSocket: call ws_upgrade() first");
    return PYWS_ERR_CLOSED;
}

int pw_ws_send_frame(pyws_loop *loop, pyws_conn *c, int fin, int opcode, const uint8_t *data,
                       size_t len, int flags)
{
    flags &= PYWS_SEND_NO_COMPRESS | PYWS_SEND_COMPRESS;
    int rsv = 0;
    if (c->pmd && !(opcode & 8)) {
        int compress = opcode == PYWS_OP_CONTINUATION
                           ? c->pmd->tx_frag
                           : pw_pmd_wants(c->pmd, len, fin, flags);
        if (compress) {
            pyws_zpool *pool = pw_loop_zpool(loop);
            c->cnt.zout_data += len;
            if (!pool || pw_pmd_compress(c->pmd, pool, data, len, fin, &data, &len) != 0)
                return pw_set_error(loop, PYWS_ERR_NOMEM, "out of memory while compressing");
            c->cnt.zout_wire += len;
            if (opcode != PYWS_OP_CONTINUATION)
                rsv = 0x40; /* RSV1 on the first frame only */
        }
    }
    pyws_session *s = c->sess;
    if (len >= PYWS_DIRECT_MIN && c->role == PYWS_ROLE_SERVER && s && s->held && s->buf &&
        s->buf_cap > PYWS_KEEP_MSG_BUF) {
        /* the payload is (part of) the message this connection delivered last, in the buffer
         * its session holds until the next poll (an echo of a view): the queue takes the
         * buffer over instead of copying it. A server's frames are not masked, so the bytes
         * the application may still read through its view do not change. */
        uintptr_t a = (uintptr_t)data, b = (uintptr_t)s->buf;
        if (a >= b && a - b <= s->buf_len && len <= s->buf_len - (a - b)) {
            uint8_t hdr[14];
            size_t hlen = pyws_frame_header(hdr, fin, rsv, opcode, len, NULL);
            if (pw_conn_queue_held(loop, c, hdr, hlen, a - b, len) == PYWS_OK)
                return PYWS_OK;
        }
    }
    return pw_ws_queue_frame_rsv(loop, c, fin, rsv, opcode, data, len);
}

int pyws_send(pyws_loop *loop, uint64_t id, int opcode, const uint8_t *data, size_t len, int flags)
{
    pyws_conn *c;
    int rc = ws_conn(loop, id, &c);
    if (rc)
        return rc;
    int fin = (flags & PYWS_SEND_FIN) != 0;
    switch (opcode) {
    case PYWS_OP_PING:
    case PYWS_OP_PONG:
        if (len > 125 || !fin)
            return pw_set_error(loop, PYWS_ERR_ARG, "control frames carry at most 125 bytes "
                                  "and cannot be fragmented");
        break;
    case PYWS_OP_TEXT:
    case PYWS_OP_BINARY:
        if (c->flags & CF_SEND_FRAG)
            return pw_set_error(loop, PYWS_ERR_STATE, "a fragmented message is in progress: "
                                  "send CONTINUATION frames until one with fin");
        break;
    case PYWS_OP_CONTINUATION:
        if (!(c->flags & CF_SEND_FRAG))
            return pw_set_error(loop, PYWS_ERR_STATE, "CONTINUATION without a fragmented "
                                  "message in progress");
        break;
    default:
        return pw_set_error(loop, PYWS_ERR_ARG, "opcode %d cannot be sent this way", opcode);
    }
    if (c->wq_bytes + len + 14 > c->opts.write_limit) {
        unsigned long long queued = (unsigned long long)(c->wq_bytes + len);
        pw_ws_overflow(loop, c);
        return pw_set_error(loop, PYWS_ERR_LIMIT, "write buffer limit exceeded (slow "
                              "consumer): %llu bytes queued", queued);
    }
    rc = pw_ws_send_frame(loop, c, fin, opcode, data, len, flags);
    if (rc)
        return rc;
    if (!(opcode & 8)) { /* data: TEXT, BINARY, CONTINUATION */
        c->cnt.bytes_out += len;
        c->cnt.msgs_out += (uint64_t)fin;
    }
    if (opcode == PYWS_OP_TEXT || opcode == PYWS_OP_BINARY) {
        if (!fin)
            c->flags |= CF_SEND_FRAG;
    } else if (opcode == PYWS_OP_CONTINUATION && fin) {
        c->flags &= ~CF_SEND_FRAG;
    }
    if (loop->write_now && !loop->in_poll) {
        loop->write_now = 0; /* the first send after a lone event only: later ones coalesce */
        pw_conn_write_now(loop, c);
    }
    return (flags & PYWS_SEND_REPORT_HW) && (c->flags & CF_ABOVE_HW) ? 1 : PYWS_OK;
}

int pyws_ws_close(pyws_loop *loop, uint64_t id, int code, const char *reason, size_t reason_len)
{
    pyws_conn *c = pw_conn_get(loop, id);
    if (!c || c->kind != PYWS_KIND_CONN)
        return PYWS_ERR_BADID;
    if (code != 0 && !pyws_close_code_valid(code))
        return pw_set_error(loop, PYWS_ERR_ARG, "close code %d may not be sent (use 1000-1003, "
                              "1007-1014 or 3000-4999)", code);
    if (reason_len > 123)
        return pw_set_error(loop, PYWS_ERR_ARG, "close reason is %zu bytes; at most 123 fit "
                              "in a close frame", reason_len);
    if (!c->sess) {
        pw_conn_finish(loop, c);
        return PYWS_OK;
    }
    if (!pyws_st_may_send(c->state))
        return PYWS_OK; /* our close frame went out already, or the connection is ending */
    int echo = c->state == PYWS_ST_WS_CLOSE_RECEIVED;
    send_close_frame(loop, c, code, reason, reason_len); /* WS_OPEN -> WS_CLOSE_SENT */
    if (echo) {
        c->pending_code = 0;
        close_exchanged(loop, c);
        return PYWS_OK;
    }
    if (c->pending_code) {
        /* we were about to fail it anyway */
        c->pending_code = 0;
        pw_conn_finish(loop, c);
        return PYWS_OK;
    }
    c->deadline_close = loop->now + c->opts.close_timeout;
    pw_conn_deadline(loop, c, c->deadline_close);
    return PYWS_OK;
}

int pyws_ws_extensions(pyws_loop *loop, uint64_t id, char *out, size_t cap)
{
    pyws_conn *c = pw_conn_get(loop, id);
    if (!c || c->kind != PYWS_KIND_CONN)
        return PYWS_ERR_BADID;
    if (cap == 0)
        return PYWS_ERR_ARG;
    out[0] = 0;
    if (!c->pmd)
        return 0;
    return pyws_pmd_format(&c->pmd_agreed, out, cap);
}
