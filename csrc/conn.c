/*
 * conn.c — the connection table (generation-checked ids), write queues and their flushing,
 * reads, backpressure, the lingering close and per-connection deadlines. Bytes reach the socket
 * through the connection's transport (transport.h: plain TCP or TLS), whatever it is.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core.h"

/* ------------------------------------------------------------------ table and ids */

pyws_conn *pw_conn_get(pyws_loop *loop, uint64_t id)
{
    uint32_t slot = (uint32_t)id;
    if (slot >= loop->nslots)
        return NULL;
    pyws_conn *c = loop->conns[slot];
    if (!c || c->kind == PYWS_KIND_FREE || c->id != id)
        return NULL;
    return c;
}

pyws_conn *pw_conn_new(pyws_loop *loop, int kind, int fd)
{
    uint32_t slot;
    if (loop->nfree) {
        slot = loop->free_slots[--loop->nfree];
    } else {
        if (loop->nslots == UINT32_MAX)
            return NULL;
        if (loop->free_cap < loop->nslots + 1) {
            uint32_t fc = loop->free_cap ? loop->free_cap * 2 : 64;
            uint32_t *nf = realloc(loop->free_slots, fc * sizeof(*nf));
            if (!nf)
                return NULL;
            loop->free_slots = nf;
            loop->free_cap = fc;
        }
        pyws_conn **nc = realloc(loop->conns, (loop->nslots + 1) * sizeof(*nc));
        if (!nc)
            return NULL;
        loop->conns = nc;
        loop->conns[loop->nslots] = NULL;
        slot = loop->nslots++;
    }
    pyws_conn *c = loop->conns[slot];
    uint32_t gen = 0;
    if (!c) {
        c = malloc(sizeof(*c));
        if (!c) {
            loop->free_slots[loop->nfree++] = slot; /* capacity exists: it came from there */
            return NULL;
        }
        loop->conns[slot] = c;
    } else {
        gen = (uint32_t)(c->id >> 32);
    }
    memset(c, 0, sizeof(*c));
    gen++;
    if (gen == 0)
        gen = 1;
    c->id = ((uint64_t)gen << 32) | slot;
    c->kind = (uint8_t)kind;
    c->fd = fd;
    c->tr = &pw_transport_tcp;
    c->last_activity = loop->now;
    c->connected_at = loop->now;
    if (kind == PYWS_KIND_CONN)
        loop->nconns++;
    return c;
}

static void wq_clear(pyws_loop *loop, pyws_conn *c)
{
    for (uint32_t i = 0; i < c->wq_n; i++) {
        pyws_wseg *s = &c->wq[(c->wq_head + i) % c->wq_cap];
        pw_blob_put(loop, s->blob);
    }
    free(c->wq);
    c->wq = NULL;
    c->wq_head = c->wq_n = c->wq_cap = 0;
    c->wq_bytes = 0;
}

void pw_conn_free(pyws_loop *loop, pyws_conn *c)
{
    if (c->kind == PYWS_KIND_FREE)
        return;
    if (c->fd >= 0) {
        pw_poller_del(loop->poller, c->fd,
                        ((c->flags & CF_NO_READ) ? 0u : PYWS_POLL_IN) |
                        ((c->flags & CF_WANT_WRITE) ? PYWS_POLL_OUT : 0u));
        close(c->fd);
        c->fd = -1;
    }
    free(c->rbuf);
    c->rbuf = NULL;
    free(c->protocols);
    c->protocols = NULL;
    free(c->host);
    c->host = NULL;
    c->tr->free(c);
    pw_topics_drop_conn(loop, c);
    if (c->sess) {
        /* Views into the session buffer may still be in this batch: retire, don't free. */
        uint8_t *held = pyws_session_take_held(c->sess);
        if (held) /* if it cannot be recorded, leaking it beats freeing it under a live view */
            (void)pw_retire(loop, held);
        pyws_session_free(c->sess);
        free(c->sess);
        c->sess = NULL;
    }
    if (c->pmd) {
        pw_pmd_free(c->pmd);
        free(c->pmd);
        c->pmd = NULL;
    }
    c->pmd_offered = 0;
    wq_clear(loop, c);
    if (c->kind == PYWS_KIND_CONN) {
        pw_stats_conn_gone(loop, c);
        loop->nconns--;
        pw_conn_set_state(loop, c, PYWS_ST_CLOSED);
    }
    c->kind = PYWS_KIND_FREE;
    c->flags = 0;
    loop->free_slots[loop->nfree++] = (uint32_t)c->id;
}

void pw_conn_close(pyws_loop *loop, pyws_conn *c, int code)
{
    if (c->kind != PYWS_KIND_CONN)
        return;
    if (!c->close_code)
        c->close_code = code;
    pyws_event *ev = pw_event_push(loop, PYWS_EV_CLOSE, c->id);
    if (ev) {
        ev->code = c->close_code;
        ev->aux = (c->flags & CF_WAS_WS) ? 1 : 0;
        if (c->close_reason_len) {
            uint8_t *copy = pw_scratch(loop, c->close_reason_len);
            if (copy) {
                memcpy(copy, c->close_reason, c->close_reason_len);
                ev->data = copy;
                ev->len = c->close_reason_len;
            }
        }
    }
    pw_conn_free(loop, c);
}

/* ------------------------------------------------------------------ lists */

static int idlist_add(pyws_idlist *l, uint32_t slot)
{
    if (l->n == l->cap) {
        uint32_t nc = l->cap ? l->cap * 2 : 64;
        uint32_t *nv = realloc(l->v, nc * sizeof(*nv));
        if (!nv)
            return -1;
        l->v = nv;
        l->cap = nc;
    }
    l->v[l->n++] = slot;
    return 0;
}

void pw_conn_mark(pyws_loop *loop, pyws_conn *c, uint32_t flag)
{
    if (c->flags & flag)
        return;
    pyws_idlist *l = flag == CF_DIRTY ? &loop->dirty : flag == CF_PENDING ? &loop->pending
                                                                          : &loop->held;
    if (idlist_add(l, (uint32_t)c->id) == 0)
        c->flags |= flag;
    if (flag != CF_HELD && !loop->in_poll)
        pw_loop_touch(loop);
}

/* ------------------------------------------------------------------ write queue */

/* A block of at least need bytes. Small ones (PYWS_BLOB_SIZE, the bytes inline) come from the
 * loop's cache of small blocks; a large one is a header and a buffer from the loop's cache of
 * large buffers, the one message buffers use too (pw_bigbuf_get), or a fresh buffer in whole
 * pages, so that the next frame of about the size reuses it. */
pyws_blob *pw_blob_alloc(pyws_loop *loop, size_t need)
{
    pyws_blob *b;
    if (need <= PYWS_BLOB_SIZE) {
        if (loop->nblob_cache) {
            b = loop->blob_cache[--loop->nblob_cache];
            if (loop->nblob_cache < loop->blob_cache_low)
                loop->blob_cache_low = loop->nblob_cache;
        } else {
            b = malloc(sizeof(*b) + PYWS_BLOB_SIZE);
            if (!b)
                return NULL;
        }
        b->cap = PYWS_BLOB_SIZE;
        b->ext = NULL;
    } else {
        size_t cap = (need + 4095) & ~(size_t)4095;
        if (cap < need)
            return NULL; /* need near SIZE_MAX */
        b = malloc(sizeof(*b));
        if (!b)
            return NULL;
        b->ext = pw_bigbuf_get(loop, need, need, &b->cap);
        if (!b->ext) {
            b->ext = malloc(cap);
            b->cap = cap;
        }
        if (!b->ext) {
            free(b);
            return NULL;
        }
    }
    b->refs = 1;
    b->held = 0;
    b->len = 0;
    return b;
}

/* Blocks go back to a loop-wide cache instead of the allocator: under load the same blocks
 * cycle every iteration. pw_blob_trim() gives back a quarter of the blocks that sat unused
 * through a whole iteration, so the cache follows the load down when it eases. */
void pw_blob_trim(pyws_loop *loop)
{
    int idle = loop->blob_cache_low;
    int drop = idle > 16 ? idle / 4 : (loop->nblob_cache > 0 && idle == loop->nblob_cache ? 1 : 0);
    for (int i = 0; i < drop && loop->nblob_cache > 0; i++)
        free(loop->blob_cache[--loop->nblob_cache]);
    loop->blob_cache_low = loop->nblob_cache;
    /* large buffers: per second, not per poll (a poll that only writes would drop one a
     * message needs a moment later: a 1 MiB free and malloc, page faults, per message) */
    if (loop->now < loop->bigbuf_trim_at)
        return;
    loop->bigbuf_trim_at = loop->now + PYWS_BIGBUF_TRIM_MS;
    idle = loop->bigbuf_low;
    drop = idle > 4 ? idle / 4 : (loop->nbigbuf > 0 && idle > 0 ? 1 : 0);
    for (int i = 0; i < drop && loop->nbigbuf > 0; i++) {
        loop->nbigbuf--;
        loop->bigbuf_bytes -= loop->bigbuf_cache[loop->nbigbuf].cap;
        free(loop->bigbuf_cache[loop->nbigbuf].p);
    }
    loop->bigbuf_low = loop->nbigbuf;
}

/* ------------------------------------------------------------------ large-buffer cache */

/* A cached buffer for about `want` bytes (at least need): the smallest that holds want, not
 * more than four times it; NULL if none (the caller then uses malloc). The sessions' message
 * buffers and the write queue's large blocks both come from here and go back here. */
uint8_t *pw_bigbuf_get(void *ctx, size_t need, size_t want, size_t *cap)
{
    pyws_loop *loop = ctx;
    int best = -1;
    size_t lim = want > SIZE_MAX / 8 ? SIZE_MAX : want * 4 + 65536;
    for (int i = 0; i < loop->nbigbuf; i++) {
        size_t c = loop->bigbuf_cache[i].cap;
        if (c >= need && c >= want && c <= lim &&
            (best < 0 || c < loop->bigbuf_cache[best].cap))
            best = i;
    }
    if (best < 0)
        return NULL;
    uint8_t *p = loop->bigbuf_cache[best].p;
    *cap = loop->bigbuf_cache[best].cap;
    loop->bigbuf_bytes -= *cap;
    loop->bigbuf_cache[best] = loop->bigbuf_cache[--loop->nbigbuf];
    if (loop->nbigbuf < loop->bigbuf_low)
        loop->bigbuf_low = loop->nbigbuf;
    return p;
}

/* The caller guarantees nothing reads buf any more (a message buffer: only between a batch's
 * views and the next). */
void pw_bigbuf_put(void *ctx, uint8_t *buf, size_t cap)
{
    pyws_loop *loop = ctx;
    if (cap > PYWS_BLOB_SIZE && loop->nbigbuf < PYWS_BIGBUF_CACHE_MAX &&
        loop->bigbuf_bytes + cap <= PYWS_BIGBUF_CACHE_BYTES) {
        loop->bigbuf_cache[loop->nbigbuf].p = buf;
        loop->bigbuf_cache[loop->nbigbuf].cap = cap;
        loop->nbigbuf++;
        loop->bigbuf_bytes += cap;
        return;
    }
    free(buf);
}

void pw_blob_put(pyws_loop *loop, pyws_blob *b)
{
    if (--b->refs)
        return;
    if (b->ext) {
        /* a message buffer the queue took over: views of the batch that delivered it may
         * still read it until the next poll begins (pw_retire); inside a poll none can. A
         * large block's own buffer no view sees: back to the cache at once. */
        if (!b->held || loop->in_poll)
            pw_bigbuf_put(loop, b->ext, b->cap);
        else
            (void)pw_retire(loop, b->ext); /* if it cannot be recorded, leak, never free */
        free(b);
        return;
    }
    if (loop->nblob_cache < PYWS_BLOB_CACHE_MAX) {
        if (loop->nblob_cache == loop->blob_cache_cap) {
            int nc = loop->blob_cache_cap ? loop->blob_cache_cap * 2 : 64;
            pyws_blob **ncache = realloc(loop->blob_cache, (size_t)nc * sizeof(*ncache));
            if (!ncache) {
                free(b);
                return;
            }
            loop->blob_cache = ncache;
            loop->blob_cache_cap = nc;
        }
        loop->blob_cache[loop->nblob_cache++] = b;
        return;
    }
    free(b);
}

/* Room for `more` segments in the ring. */
static int wq_room(pyws_conn *c, uint32_t more)
{
    if (c->wq_n + more > c->wq_cap) {
        uint32_t nc = c->wq_cap ? c->wq_cap * 2 : 4;
        while (nc < c->wq_n + more)
            nc *= 2;
        pyws_wseg *nw = malloc(nc * sizeof(*nw));
        if (!nw)
            return -1;
        for (uint32_t i = 0; i < c->wq_n; i++)
            nw[i] = c->wq[(c->wq_head + i) % c->wq_cap];
        free(c->wq);
        c->wq = nw;
        c->wq_head = 0;
        c->wq_cap = nc;
    }
    return 0;
}

static int wq_push(pyws_conn *c, pyws_blob *b, size_t off, size_t len)
{
    if (wq_room(c, 1) < 0)
        return -1;
    pyws_wseg *s = &c->wq[(c->wq_head + c->wq_n) % c->wq_cap];
    s->blob = b;
    s->off = off;
    s->len = len;
    c->wq_n++;
    return 0;
}

/* Every byte queued on a WebSocket counts against its limits, control frames included: past
 * write_limit the connection is closed with 1008 at the next poll (not here: the caller may be
 * in the middle of a fan-out and still holds c). */
static void queued(pyws_loop *loop, pyws_conn *c, size_t total)
{
    c->wq_bytes += total;
    c->tx_queued += total;
    if (c->wq_bytes >= c->opts.write_high_water)
        c->flags |= CF_ABOVE_HW;
    if ((c->sess || (c->flags & CF_STREAM)) && c->opts.write_limit &&
        c->wq_bytes > c->opts.write_limit &&
        !(c->flags & CF_OVER_LIMIT)) {
        c->flags |= CF_OVER_LIMIT;
        pw_conn_mark(loop, c, CF_PENDING);
    }
    pw_conn_mark(loop, c, CF_DIRTY);
}

/* A server stops reading a WebSocket whose queue to the peer is above write_high_water, so TCP
 * pushes back on a peer that sends faster than it reads (our pongs, echoes, replies); reading
 * resumes once the queue drains under the mark. Clients do not: two peers that both stopped
 * reading while their queues are full would wait for each other forever. */
static int hw_paused(const pyws_conn *c)
{
    return c->role == PYWS_ROLE_SERVER && pyws_st_may_send(c->state) &&
           c->opts.write_high_water && c->wq_bytes >= c->opts.write_high_water;
}

/* Queue the first len bytes of a block that other connections share (a published frame). */
int pw_wq_push_shared(pyws_loop *loop, pyws_conn *c, pyws_blob *b, size_t len)
{
    if (wq_push(c, b, 0, len) < 0)
        return PYWS_ERR_NOMEM;
    b->refs++;
    queued(loop, c, len);
    return PYWS_OK;
}

int pw_conn_queue(pyws_loop *loop, pyws_conn *c, const uint8_t *a, size_t alen,
                    const uint8_t *b, size_t blen)
{
    size_t total = alen + blen;
    if (total == 0)
        return PYWS_OK;
    if (c->wq_n) {
        pyws_wseg *t = &c->wq[(c->wq_head + c->wq_n - 1) % c->wq_cap];
        pyws_blob *bl = t->blob;
        if (bl->refs == 1 && !bl->held && t->off + t->len == bl->len &&
            bl->cap - bl->len >= total) {
            uint8_t *at = pw_blob_bytes(bl) + bl->len;
            if (alen)
                memcpy(at, a, alen);
            if (blen)
                memcpy(at + alen, b, blen);
            bl->len += total;
            t->len += total;
            goto queued;
        }
    }
    pyws_blob *bl = pw_blob_alloc(loop, total);
    if (!bl)
        return PYWS_ERR_NOMEM;
    if (alen)
        memcpy(pw_blob_bytes(bl), a, alen);
    if (blen)
        memcpy(pw_blob_bytes(bl) + alen, b, blen);
    bl->len = total;
    if (wq_push(c, bl, 0, total) < 0) {
        pw_blob_put(loop, bl);
        return PYWS_ERR_NOMEM;
    }
queued:
    queued(loop, c, total);
    return PYWS_OK;
}

int pw_conn_queue_held(pyws_loop *loop, pyws_conn *c, const uint8_t *hdr, size_t hlen,
                         size_t off, size_t len)
{
    pyws_session *sess = c->sess;
    if (!sess || !sess->held || !sess->buf || off > sess->buf_len || len > sess->buf_len - off)
        return PYWS_ERR_ARG;
    pyws_blob *w = malloc(sizeof(*w));
    if (!w || wq_room(c, 2) < 0) {
        free(w);
        return PYWS_ERR_NOMEM;
    }
    int rc = pw_conn_queue(loop, c, hdr, hlen, NULL, 0); /* uses at most one of the two */
    if (rc != PYWS_OK) {
        free(w);
        return rc;
    }
    w->refs = 1;
    w->held = 1;
    w->len = sess->buf_len;
    w->cap = sess->buf_cap;
    w->ext = pyws_session_take_held(sess); /* the session starts a fresh buffer */
    (void)wq_push(c, w, off, len); /* cannot fail: room was made above */
    queued(loop, c, len);
    return PYWS_OK;
}

int pw_wq_unshare(pyws_loop *loop, pyws_conn *c, const uint8_t *p, size_t len, void **block)
{
    uintptr_t a = (uintptr_t)p;
    pyws_blob *w = NULL;
    for (uint32_t i = 0; i < c->wq_n && !w; i++) {
        pyws_blob *b = c->wq[(c->wq_head + i) % c->wq_cap].blob;
        if (b->held && a >= (uintptr_t)b->ext && a - (uintptr_t)b->ext <= b->len &&
            len <= b->len - (a - (uintptr_t)b->ext))
            w = b;
    }
    if (!w)
        return 1;
    /* the queue's segments of it get a copy of their bytes; the buffer goes to the caller */
    for (uint32_t i = 0; i < c->wq_n; i++) {
        pyws_wseg *s = &c->wq[(c->wq_head + i) % c->wq_cap];
        if (s->blob != w)
            continue;
        pyws_blob *n = pw_blob_alloc(loop, s->len);
        if (!n)
            return PYWS_ERR_NOMEM; /* segments moved so far stay moved: all still valid */
        memcpy(pw_blob_bytes(n), w->ext + s->off, s->len);
        n->len = s->len;
        s->blob = n;
        s->off = 0;
        if (--w->refs == 0)
            break;
    }
    *block = w->ext;
    free(w);
    return PYWS_OK;
}

void pw_conn_watch(pyws_loop *loop, pyws_conn *c)
{
    if (c->fd < 0)
        return;
    /* after the peer's EOF there is nothing left to read: level-triggered read interest
     * would report the fd forever */
    int out = c->state == PYWS_ST_CONNECTING || (c->tr_flags & PYWS_TR_WANT_WRITE) ||
              (c->wq_n && !(c->tr_flags & PYWS_TR_HANDSHAKING));
    uint32_t want = ((c->flags & (CF_EOF | CF_PAUSED)) || hw_paused(c) ? 0u : PYWS_POLL_IN) |
                    (out ? PYWS_POLL_OUT : 0u);
    uint32_t have = ((c->flags & CF_NO_READ) ? 0u : PYWS_POLL_IN) |
                    ((c->flags & CF_WANT_WRITE) ? PYWS_POLL_OUT : 0u);
    if (want == have)
        return;
    if (pw_poller_mod(loop->poller, c->fd, c->id, have, want) == 0) {
        c->flags = (c->flags & ~(CF_WANT_WRITE | CF_NO_READ)) |
                   ((want & PYWS_POLL_OUT) ? CF_WANT_WRITE : 0u) |
                   ((want & PYWS_POLL_IN) ? 0u : CF_NO_READ);
        if (!loop->in_poll)
            pw_loop_touch(loop); /* a poll(2) host re-reads the watched set */
    }
}

/* Read and drop what the peer sent after its close frame. close() on a socket with unread
 * input sends an RST instead of a FIN, and an RST may discard bytes the kernel still holds
 * for the peer (our close frame among them); with the receive queue empty, close() leaves the
 * kernel to deliver them after the FIN. 1 when the queue is empty (or at EOF, or on an error:
 * nothing left to wait for), 0 if the peer is still sending after a bounded amount. */
static int linger_drain(pyws_loop *loop, pyws_conn *c)
{
    uint8_t sink[4096];
    for (int i = 0; i < 16; i++) {
        /* after shutdown() a transport's read only drains the socket */
        ssize_t n = c->tr->read(loop, c, sink, sizeof(sink));
        if (n > 0)
            continue;
        if (n == 0)
            c->flags |= CF_EOF;
        return 1; /* EOF, nothing more for now (AGAIN), or an error: nothing to wait for */
    }
    return 0;
}

/* The queue is written: send our FIN. FLUSHING -> LINGER (wait for the peer's EOF); a server
 * whose close handshake is over (WS_CLOSE_FLUSH) -> DRAINING: nothing more is owed in either
 * direction, so it closes TCP first (RFC 6455 §7.1.1) instead of waiting for the peer to
 * (websocket-client, for one, answers the close and keeps its socket open). */
static void linger_start(pyws_loop *loop, pyws_conn *c)
{
    int drain = c->state == PYWS_ST_WS_CLOSE_FLUSH;
    pw_conn_set_state(loop, c, drain ? PYWS_ST_DRAINING : PYWS_ST_LINGER);
    c->tr->shutdown(loop, c);
    /* the write queue is empty here: all we owe is with the kernel, behind our FIN */
    if ((c->flags & CF_EOF) || (drain && linger_drain(loop, c))) {
        pw_conn_close(loop, c, c->close_code ? c->close_code : PYWS_CLOSE_ABNORMAL);
        return;
    }
    if (!c->deadline_close)
        pw_conn_deadline(loop, c, c->deadline_close = loop->now + (c->opts.close_timeout
                                                                         ? c->opts.close_timeout
                                                                         : 5000));
}

/* n bytes of the queue were written: drop them from the head. */
static void wq_consume(pyws_loop *loop, pyws_conn *c, size_t n)
{
    c->wq_bytes -= n;
    c->tx_sent += n;
    while (n) {
        pyws_wseg *s = &c->wq[c->wq_head];
        if (n < s->len) {
            s->off += n;
            s->len -= n;
            return;
        }
        n -= s->len;
        pw_blob_put(loop, s->blob);
        c->wq_head = (c->wq_head + 1) % c->wq_cap;
        c->wq_n--;
    }
}

/* the head of the write queue as it is, at most PYWS_TR_IOV_MAX segments */
static int wq_iov(const pyws_conn *c, struct iovec *iov)
{
    int cnt = 0;
    for (uint32_t i = 0; i < c->wq_n && cnt < PYWS_TR_IOV_MAX; i++, cnt++) {
        const pyws_wseg *s = &c->wq[(c->wq_head + i) % c->wq_cap];
        iov[cnt].iov_base = pw_blob_bytes(s->blob) + s->off;
        iov[cnt].iov_len = s->len;
    }
    return cnt;
}

int pw_conn_flush(pyws_loop *loop, pyws_conn *c)
{
    if (c->state == PYWS_ST_CONNECTING)
        return 0; /* the request waits for the connect (pw_client_connected flushes it) */
    if (c->tr_flags & PYWS_TR_HANDSHAKING) {
        int r = c->tr->handshake(loop, c);
        if (r < 0) {
            if (c->role == PYWS_ROLE_SERVER)
                pw_stats_hs_failed(loop, -PYWS_HSF_TLS);
            pw_conn_close(loop, c, PYWS_CLOSE_ABNORMAL);
            return -1;
        }
        pw_conn_watch(loop, c);
        if (r == 0)
            return 0;
    }
    int pong_passes = 0;
again:
    if (c->flags & CF_PONG_DUE)
        pw_ws_send_pong(loop, c);
    while (c->wq_n) {
        /* the head of the queue, as it is: the transport takes what it can (tls.c: one record,
         * small frames coalesced) and leaves the rest for the next round or the next poll */
        struct iovec iov[PYWS_TR_IOV_MAX];
        ssize_t n = c->tr->writev(loop, c, iov, wq_iov(c, iov));
        if (n == PYWS_TR_AGAIN)
            break; /* the socket (or, under TLS, the peer) must move first */
        if (n < 0) {
            pw_conn_close(loop, c, PYWS_CLOSE_ABNORMAL);
            return -1;
        }
        c->last_activity = loop->now;
        wq_consume(loop, c, (size_t)n);
    }
    /* our last pong went out, or the queue drained under the pong budget: the latest ping's
     * pong may go now */
    if ((c->flags & CF_PONG_DUE) && pw_ws_pong_may_queue(c) && pong_passes++ == 0)
        goto again;
    if ((c->flags & CF_HW_PAUSED) && !hw_paused(c)) {
        c->flags &= ~CF_HW_PAUSED;
        /* input the socket will not report again */
        if ((c->flags & CF_STARVED) || (c->tr_flags & PYWS_TR_PENDING))
            pw_conn_mark(loop, c, CF_PENDING);
    }
    if ((c->flags & CF_ABOVE_HW) && c->wq_bytes < c->opts.write_high_water) {
        c->flags &= ~CF_ABOVE_HW;
        pw_event_push(loop, PYWS_EV_DRAIN, c->id);
    }
    if (c->wq_n == 0 && c->wq_cap > 16) {
        free(c->wq);
        c->wq = NULL;
        c->wq_cap = 0;
        c->wq_head = 0;
    }
    pw_conn_watch(loop, c);
    if (c->wq_n == 0 && (c->state == PYWS_ST_FLUSHING || c->state == PYWS_ST_WS_CLOSE_FLUSH))
        linger_start(loop, c);
    return 0;
}

/* Between polls, after a poll that returned a lone event: write the reply its handler just
 * queued, instead of at the next poll. A request-reply round trip (one connection, one message
 * in flight) then does not wait for the Python that runs after the handler and the start of the
 * next poll. Only the socket write happens here: an error, a partial write or EAGAIN is left for
 * the next poll's flush (the connection stays CF_DIRTY), which also does the bookkeeping (the
 * watch, EV_DRAIN, linger); nothing is closed or freed outside a poll on this path. */
void pw_conn_write_now(pyws_loop *loop, pyws_conn *c)
{
    if (!c->wq_n || c->wq_bytes > PYWS_WRITE_NOW_MAX || c->state == PYWS_ST_CONNECTING ||
        (c->tr_flags & PYWS_TR_HANDSHAKING) || (c->flags & CF_PONG_DUE))
        return;
    struct iovec iov[PYWS_TR_IOV_MAX];
    ssize_t n = c->tr->writev(loop, c, iov, wq_iov(c, iov));
    if (n > 0) {
        c->last_activity = loop->now;
        wq_consume(loop, c, (size_t)n);
    }
}

/* Write what is queued, then end TCP: FLUSHING (then LINGER), or, for a server whose close
 * handshake is over (close_exchanged put it in WS_CLOSE_FLUSH), on to DRAINING. */
void pw_conn_finish(pyws_loop *loop, pyws_conn *c)
{
    if (c->state == PYWS_ST_FLUSHING || c->state == PYWS_ST_LINGER ||
        c->state == PYWS_ST_DRAINING)
        return;
    pw_conn_set_state(loop, c, c->state == PYWS_ST_WS_CLOSE_FLUSH ? PYWS_ST_WS_CLOSE_FLUSH
                                                                    : PYWS_ST_FLUSHING);
    c->flags &= ~CF_PAUSED; /* closing: read again, to see the peer's EOF */
    pw_conn_watch(loop, c);
    if (!c->deadline_close) {
        c->deadline_close = loop->now + (c->opts.close_timeout ? c->opts.close_timeout : 5000);
        pw_conn_deadline(loop, c, c->deadline_close);
    }
    pw_conn_mark(loop, c, CF_DIRTY);
}

/* ------------------------------------------------------------------ reading */

static int rbuf_room(pyws_conn *c, size_t limit)
{
    if (c->rcap - c->rlen >= PYWS_RECV_MIN || c->rcap >= limit)
        return 0;
    size_t nc = c->rcap ? c->rcap * 2 : 4096;
    while (nc - c->rlen < PYWS_RECV_MIN)
        nc *= 2;
    if (nc > limit)
        nc = limit;
    uint8_t *nb = realloc(c->rbuf, nc);
    if (!nb)
        return -1;
    c->rbuf = nb;
    c->rcap = nc;
    return 0;
}

static void on_eof(pyws_loop *loop, pyws_conn *c)
{
    c->flags |= CF_EOF;
    pw_conn_watch(loop, c);
    switch (c->state) {
    case PYWS_ST_FLUSHING:
    case PYWS_ST_WS_CLOSE_FLUSH:
        /* keep flushing what we have; the peer may still read */
        return;
    case PYWS_ST_WS_CLOSE_RECEIVED:
        /* the close frame already arrived: our echo still goes out */
        return;
    case PYWS_ST_WS_CLOSE_SENT:
    case PYWS_ST_WS_CLOSE_WAIT:
    case PYWS_ST_LINGER:
    case PYWS_ST_DRAINING:
        pw_conn_close(loop, c, c->close_code ? c->close_code : PYWS_CLOSE_ABNORMAL);
        return;
    case PYWS_ST_CLIENT_HS:
        pw_client_fail(loop, c, PYWS_ERR_HANDSHAKE,
                         "the server closed the connection before answering the upgrade");
        return;
    case PYWS_ST_WS_OPEN:
        if (c->pending_code) {
            /* we are failing it: our close frame still goes out */
            return;
        }
        pw_conn_close(loop, c, PYWS_CLOSE_ABNORMAL);
        return;
    default:
        pw_conn_close(loop, c, PYWS_CLOSE_ABNORMAL);
        return;
    }
}

void pw_conn_read(pyws_loop *loop, pyws_conn *c)
{
    uint8_t *dst;
    size_t room;
    int arena = 0;
    int http = pyws_st_http(c->state) || c->state == PYWS_ST_CLIENT_HS;
    if (c->flags & (CF_EOF | CF_PAUSED))
        return;
    if (c->state == PYWS_ST_DRAINING) {
        /* a peer that kept sending after its close frame: drop it until it stops, then close */
        if (linger_drain(loop, c))
            pw_conn_close(loop, c, c->close_code ? c->close_code : PYWS_CLOSE_ABNORMAL);
        return;
    }
    if (http && (c->flags & CF_REQ_DONE))
        return; /* views of the delivered request must not move until the next poll */
    if (http) {
        size_t limit = (size_t)c->opts.max_header_bytes + (size_t)c->opts.max_body + 8192;
        if (rbuf_room(c, limit) < 0) {
            pw_conn_close(loop, c, PYWS_CLOSE_ABNORMAL);
            return;
        }
        room = c->rcap - c->rlen;
        if (room == 0)
            return; /* full: the request in it is processed at the next poll */
        dst = c->rbuf + c->rlen;
    } else {
        if (hw_paused(c)) {
            c->flags |= CF_HW_PAUSED;
            pw_conn_watch(loop, c);
            return;
        }
        if (c->sess && pyws_st_ws_input(c->state) && !(c->tr_flags & PYWS_TR_HANDSHAKING)) {
            /* the rest of a large frame: straight into the message buffer, no copy after */
            uint8_t *retired = NULL;
            dst = pyws_session_payload_room(c->sess, PYWS_DIRECT_MIN, &room, &retired);
            if (retired) /* if it cannot be recorded, leaking it beats freeing it under a view */
                (void)pw_retire(loop, retired);
            if (dst)
                goto read;
        }
        room = PYWS_ARENA_SIZE - loop->arena_used;
        if (room < PYWS_RECV_MIN) {
            /* the arena is spent for this turn: this connection is read first at the next
             * poll, before the poller's report (whose order would favour the same ones
             * again), and bytes OpenSSL already holds are not lost */
            c->flags |= CF_STARVED;
            pw_conn_mark(loop, c, CF_PENDING);
            return;
        }
        dst = loop->arena + loop->arena_used;
        arena = 1;
        /* after a large message a large one is likely next: read its header with little of
         * its payload here, so that the rest goes straight into its buffer (above), not
         * through the arena and a copy */
        if (c->sess && c->sess->msg_opcode == 0 && c->sess->msg_len >= PYWS_DIRECT_AFTER &&
            room > PYWS_RECV_MIN)
            room = PYWS_RECV_MIN;
    }
    if (room > PYWS_RECV_MAX)
        room = PYWS_RECV_MAX;
read:
    if (c->tr_flags & PYWS_TR_HANDSHAKING) {
        uint64_t id = c->id;
        int r = c->tr->handshake(loop, c);
        if (r < 0) {
            if (c->role == PYWS_ROLE_SERVER)
                pw_stats_hs_failed(loop, -PYWS_HSF_TLS);
            pw_conn_close(loop, c, PYWS_CLOSE_ABNORMAL); /* keeps the code it reported */
            return;
        }
        pw_conn_watch(loop, c);
        if (r == 0)
            return; /* more round trips */
        if (c->wq_n) /* a client's upgrade request waited for the handshake */
            pw_conn_flush(loop, c);
        if (!pw_conn_get(loop, id))
            return;
    }
    uint32_t tr_before = c->tr_flags;
    ssize_t n = c->tr->read(loop, c, dst, room);
    if ((c->tr_flags ^ tr_before) & PYWS_TR_WANT_WRITE)
        pw_conn_watch(loop, c);
    if (n == PYWS_TR_AGAIN)
        return;
    if (n < 0) {
        pw_conn_close(loop, c, PYWS_CLOSE_ABNORMAL);
        return;
    }
    if (n == 0) {
        on_eof(loop, c);
        return;
    }
    if (c->tr_flags & PYWS_TR_PENDING) /* read it at the next poll: no socket event will */
        pw_conn_mark(loop, c, CF_PENDING);
    c->last_activity = loop->now;
    c->cnt.wire_in += (uint64_t)n;
    if (http) {
        c->rlen += (size_t)n;
        if (c->state == PYWS_ST_CLIENT_HS)
            pw_client_input(loop, c);
        else
            pw_http_input(loop, c);
        return;
    }
    if (arena)
        loop->arena_used += (size_t)n;
    if (pyws_st_ws_input(c->state)) {
        pw_ws_input(loop, c, dst, (size_t)n);
    } else if (c->state == PYWS_ST_STREAM) {
        pyws_event *e = pw_event_push(loop, PYWS_EV_DATA, c->id);
        if (!e) { /* the bytes cannot be handed over: end the stream rather than lose them */
            pw_event_error(loop, c->id, PYWS_ERR_NOMEM, "out of memory for a stream's input");
            pw_conn_close(loop, c, PYWS_CLOSE_ABNORMAL);
            return;
        }
        e->data = dst;
        e->len = (size_t)n;
    }
    /* FLUSHING, LINGER, WS_CLOSE_FLUSH: input is discarded */
}

/* ------------------------------------------------------------------ deadlines */

void pw_conn_deadline(pyws_loop *loop, pyws_conn *c, uint64_t when)
{
    if (!when)
        return;
    if (c->timer_at && c->timer_at <= when)
        return;
    if (pw_timers_push(&loop->timers, when, PYWS_TIMER_CONN, c->id) == 0)
        c->timer_at = when;
}

static uint64_t earliest(uint64_t a, uint64_t b)
{
    if (!a)
        return b;
    if (!b)
        return a;
    return a < b ? a : b;
}

void pw_conn_timeout(pyws_loop *loop, pyws_conn *c)
{
    uint64_t now = loop->now;
    c->timer_at = 0;
    if ((c->flags & CF_CLOSE_TOLD) && c->pending_code && c->deadline_close &&
        now >= c->deadline_close) {
        uint64_t id = c->id;
        pw_ws_hold_expired(loop, c); /* the application did not release it in time */
        c = pw_conn_get(loop, id);
        if (c && c->deadline_close)
            pw_conn_deadline(loop, c, c->deadline_close);
        return;
    }
    if (c->deadline_close && now >= c->deadline_close) {
        loop->closes[PYWS_WHY_CLOSE_TIMEOUT]++;
        pw_conn_close(loop, c, c->close_code ? c->close_code : PYWS_CLOSE_ABNORMAL);
        return;
    }
    if (c->deadline_hs && now >= c->deadline_hs) {
        c->deadline_hs = 0;
        if ((pyws_st_http(c->state) || c->state == PYWS_ST_CLIENT_HS ||
             c->state == PYWS_ST_STREAM) && (c->tr_flags & PYWS_TR_HANDSHAKING)) {
            /* the transport's handshake is what is late: it says why */
            if (c->role == PYWS_ROLE_SERVER)
                pw_stats_hs_failed(loop, -PYWS_HSF_TLS_TIMEOUT);
            pw_conn_close(loop, c, c->tr->expired(loop, c));
            return;
        }
        if (pyws_st_http(c->state)) {
            pw_http_error(loop, c, 408, "the request did not arrive in time");
            return;
        }
        if (c->state == PYWS_ST_CONNECTING || c->state == PYWS_ST_CLIENT_HS) {
            pw_client_fail(loop, c, PYWS_ERR_TIMEOUT, c->state == PYWS_ST_CONNECTING
                             ? "the connect did not complete in time (open_timeout)"
                             : "the server did not answer the upgrade in time (open_timeout)");
            return;
        }
    }
    /* idle applies while open only: once closing, deadline_close bounds the connection (an
     * idle deadline in the past here would re-arm at once and spin run_timers forever) */
    if (c->opts.idle_timeout && now >= c->last_activity + c->opts.idle_timeout &&
        (pyws_st_http(c->state) || pyws_st_may_send(c->state))) {
        loop->closes[PYWS_WHY_IDLE]++;
        if (pyws_st_http(c->state))
            pw_conn_close(loop, c, PYWS_CLOSE_GOING_AWAY);
        else
            pyws_ws_close(loop, c->id, PYWS_CLOSE_GOING_AWAY, "idle timeout", 12);
        if (!pw_conn_get(loop, c->id))
            return;
    }
    if (c->sess)
        pw_ws_timeout(loop, c);
    if (!pw_conn_get(loop, c->id))
        return;
    int handshaking = pyws_st_opening(c->state);
    uint64_t next = earliest(c->deadline_close, handshaking ? c->deadline_hs : 0);
    if (c->opts.idle_timeout && (pyws_st_http(c->state) || pyws_st_may_send(c->state)))
        next = earliest(next, c->last_activity + c->opts.idle_timeout);
    if (c->sess && pyws_st_may_send(c->state))
        next = earliest(next, earliest(c->hb_next, c->hb_deadline));
    pw_conn_deadline(loop, c, next);
}

/* ------------------------------------------------------------------ public per-connection calls */

int64_t pyws_write_buffer_size(pyws_loop *loop, uint64_t id)
{
    pyws_conn *c = pw_conn_get(loop, id);
    return c ? (int64_t)c->wq_bytes : PYWS_ERR_BADID;
}

int pyws_above_high_water(pyws_loop *loop, uint64_t id)
{
    pyws_conn *c = pw_conn_get(loop, id);
    if (!c)
        return PYWS_ERR_BADID;
    return (c->flags & CF_ABOVE_HW) ? 1 : 0;
}

int pyws_is_alive(pyws_loop *loop, uint64_t id)
{
    pyws_conn *c = pw_conn_get(loop, id);
    return c != NULL && c->kind == PYWS_KIND_CONN;
}

int pyws_is_websocket(pyws_loop *loop, uint64_t id)
{
    pyws_conn *c = pw_conn_get(loop, id);
    if (!c)
        return PYWS_ERR_BADID;
    return (c->flags & CF_WAS_WS) ? 1 : 0;
}

int pyws_set_reading(pyws_loop *loop, uint64_t id, int on)
{
    pyws_conn *c = pw_conn_get(loop, id);
    if (!c || c->kind != PYWS_KIND_CONN)
        return PYWS_ERR_BADID;
    if (on) {
        c->flags &= ~CF_PAUSED;
        if (c->tr_flags & PYWS_TR_PENDING) /* input waits inside the transport: no socket event */
            pw_conn_mark(loop, c, CF_PENDING);
    } else
        c->flags |= CF_PAUSED;
    pw_conn_watch(loop, c);
    return PYWS_OK;
}

int pyws_close_after_flush(pyws_loop *loop, uint64_t id)
{
    pyws_conn *c = pw_conn_get(loop, id);
    if (!c || c->kind != PYWS_KIND_CONN)
        return PYWS_ERR_BADID;
    pw_conn_finish(loop, c);
    return PYWS_OK;
}

int pyws_abort(pyws_loop *loop, uint64_t id)
{
    pyws_conn *c = pw_conn_get(loop, id);
    if (!c)
        return PYWS_ERR_BADID;
    if (c->kind == PYWS_KIND_LISTENER) {
        pw_conn_free(loop, c);
        return PYWS_OK;
    }
    pw_conn_close(loop, c, PYWS_CLOSE_ABNORMAL);
    return PYWS_OK;
}

int pyws_send_raw(pyws_loop *loop, uint64_t id, const uint8_t *data, size_t len)
{
    pyws_conn *c = pw_conn_get(loop, id);
    if (!c || c->kind != PYWS_KIND_CONN)
        return PYWS_ERR_BADID;
    if (pyws_st_ending(c->state))
        return PYWS_ERR_CLOSED;
    pw_stats_raw_answer(loop, c, data, len);
    return pw_conn_queue(loop, c, data, len, NULL, 0);
}

int pyws_set_control_events(pyws_loop *loop, uint64_t id, int on)
{
    pyws_conn *c = pw_conn_get(loop, id);
    if (!c || c->kind != PYWS_KIND_CONN)
        return PYWS_ERR_BADID;
    c->opts.control_events = on ? 1 : 0;
    if (on)
        c->flags |= CF_CTL_EVENTS;
    else
        c->flags &= ~CF_CTL_EVENTS;
    return PYWS_OK;
}

int pyws_set_max_message_size(pyws_loop *loop, uint64_t id, uint64_t bytes)
{
    pyws_conn *c = pw_conn_get(loop, id);
    if (!c)
        return PYWS_ERR_BADID;
    c->opts.max_message_size = bytes;
    if (c->sess)
        pyws_session_set_limits(c->sess, bytes, c->opts.max_fragments);
    return PYWS_OK;
}

int pyws_remote_addr(pyws_loop *loop, uint64_t id, char *out, size_t cap)
{
    pyws_conn *c = pw_conn_get(loop, id);
    if (!c)
        return PYWS_ERR_BADID;
    int n = pw_net_format_addr(&c->peer.sa, out, cap);
    return n < 0 ? PYWS_ERR_ARG : n;
}

int pyws_local_port(pyws_loop *loop, uint64_t id)
{
    pyws_conn *c = pw_conn_get(loop, id);
    if (!c)
        return PYWS_ERR_BADID;
    return pw_net_local_port(c->fd);
}

int64_t pyws_conn_memory(pyws_loop *loop, uint64_t id)
{
    pyws_conn *c = pw_conn_get(loop, id);
    if (!c)
        return PYWS_ERR_BADID;
    int64_t n = (int64_t)sizeof(*c) + (int64_t)c->rcap + (int64_t)c->wq_cap * (int64_t)sizeof(pyws_wseg);
    if (c->sess)
        n += (int64_t)sizeof(*c->sess) + (int64_t)pyws_session_memory(c->sess);
    for (uint32_t i = 0; i < c->wq_n; i++)
        n += (int64_t)c->wq[(c->wq_head + i) % c->wq_cap].blob->cap;
    if (c->protocols)
        n += (int64_t)strlen(c->protocols) + 1;
    if (c->pmd)
        n += (int64_t)sizeof(*c->pmd) + (int64_t)c->pmd->mem;
    return n;
}

int pyws_conn_count(pyws_loop *loop)
{
    return loop->nconns;
}
