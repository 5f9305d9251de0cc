/*
 * loop.c — one poll iteration, the event batch, timers, and the calls for running inside a host
 * loop. Listeners and accepting live in listen.c, the cross-thread queue in wake.c.
 *
 * An iteration (pyws_poll):
 *   0. release what the previous batch's views pointed at;
 *   1. deferred work: events raised between polls, requests pipelined behind a delivered one,
 *      close frames that wait for the application's replies to go out first;
 *   2. flush every connection with queued output (one writev each);
 *   3. wait for I/O, bounded by the next timer (not at all if the batch already has events);
 *   4. accept, read and process, write;
 *   5. expire timers;
 *   6. flush again (pongs, close frames, anything queued during 4-5).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/eventfd.h>
#endif

#include "core.h"

uint64_t pw_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t pw_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    return us ? us : 1;
}

int pw_set_error(pyws_loop *loop, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(loop->errbuf, sizeof(loop->errbuf), fmt, ap);
    va_end(ap);
    return code;
}

const char *pyws_last_error(pyws_loop *loop)
{
    return loop->errbuf;
}

const uint8_t *pyws_arena(pyws_loop *loop, size_t *size)
{
    *size = PYWS_ARENA_SIZE;
    return loop->arena;
}

int pyws_view_keep(pyws_loop *loop, uint64_t id, const void *data, size_t len, void **block)
{
    *block = NULL;
    if (loop->in_poll)
        return pw_set_error(loop, PYWS_ERR_STATE, "pyws_view_keep: called inside a poll");
    const uint8_t *p = data;
    uintptr_t a = (uintptr_t)p, base = (uintptr_t)loop->arena;
    if (a >= base && a - base <= PYWS_ARENA_SIZE && len <= PYWS_ARENA_SIZE - (a - base)) {
        uint8_t *fresh = malloc(PYWS_ARENA_SIZE);
        if (!fresh)
            return pw_set_error(loop, PYWS_ERR_NOMEM, "no memory for a fresh receive arena");
        *block = loop->arena;
        loop->arena = fresh;
        loop->arena_used = 0;
        return PYWS_OK;
    }
    for (size_t i = 0; i < loop->nretired; i++) {
        if (loop->retired[i] == data) { /* message views start where their block starts */
            *block = loop->retired[i];
            loop->retired[i] = loop->retired[--loop->nretired];
            return PYWS_OK;
        }
    }
    pyws_conn *c = pw_conn_get(loop, id);
    if (c && c->kind == PYWS_KIND_CONN) {
        /* a message buffer the write queue took over (an echo of the view: ws.c) */
        int rc = pw_wq_unshare(loop, c, p, len, block);
        if (rc == PYWS_ERR_NOMEM)
            return pw_set_error(loop, rc, "no memory to copy a queued frame's payload");
        if (rc == PYWS_OK)
            return PYWS_OK;
    }
    if (c && c->kind == PYWS_KIND_CONN && c->sess && c->sess->held && c->sess->buf &&
        a >= (uintptr_t)c->sess->buf && a - (uintptr_t)c->sess->buf <= c->sess->buf_len &&
        len <= c->sess->buf_len - (a - (uintptr_t)c->sess->buf)) {
        *block = pyws_session_take_held(c->sess);
        return PYWS_OK;
    }
    return pw_set_error(loop, PYWS_ERR_ARG, "pyws_view_keep: not a view of the last batch");
}

void pyws_block_free(void *block)
{
    free(block);
}

const char *pyws_backend(void)
{
    return pw_poller_name();
}

void pyws_opts_default(pyws_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->max_message_size = 4u << 20;
    o->max_header_bytes = 16384;
    o->max_headers = 64;
    o->max_body = 1u << 20;
    o->write_high_water = 1u << 20;
    o->write_limit = 16u << 20;
    o->close_timeout = 5000;
    o->max_fragments = 1u << 20;
    o->heartbeat = 20000;
    o->heartbeat_timeout = 20000;
    o->idle_timeout = 0;
    o->handshake_timeout = 10000;
    o->control_events = 0;
    o->reuse_port = 0;
    o->backlog = 1024;
    o->compression = 1;
    o->deflate_level = 6;
    o->deflate_mem_level = 5;
    o->deflate_window_bits = 12;
    o->deflate_peer_window_bits = 12;
    o->deflate_no_context_takeover = 0;
    o->deflate_peer_no_context_takeover = 0;
    o->deflate_threshold = 128;
}

/* ------------------------------------------------------------------ small lists */

static int ptr_push(void ***v, size_t *n, size_t *cap, void *p)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        void **nv = realloc(*v, nc * sizeof(void *));
        if (!nv)
            return -1;
        *v = nv;
        *cap = nc;
    }
    (*v)[(*n)++] = p;
    return 0;
}

int pw_retire(pyws_loop *loop, void *block)
{
    return ptr_push(&loop->retired, &loop->nretired, &loop->retired_cap, block);
}

static pyws_event *grow_push(pyws_event **arr, int *n, int *cap)
{
    if (*n == *cap) {
        int nc = *cap ? *cap * 2 : 256;
        pyws_event *na = realloc(*arr, (size_t)nc * sizeof(*na));
        if (!na)
            return NULL;
        *arr = na;
        *cap = nc;
    }
    pyws_event *ev = &(*arr)[(*n)++];
    memset(ev, 0, sizeof(*ev));
    return ev;
}

pyws_event *pw_event_push(pyws_loop *loop, int type, uint64_t id)
{
    if (!loop->in_poll)
        return pw_event_defer(loop, type, id);
    pyws_event *ev = grow_push(&loop->events, &loop->nevents, &loop->events_cap);
    if (ev) {
        ev->type = type;
        ev->id = id;
    }
    return ev;
}

pyws_event *pw_event_defer(pyws_loop *loop, int type, uint64_t id)
{
    pw_loop_touch(loop);
    pyws_event *ev = grow_push(&loop->deferred, &loop->ndeferred, &loop->deferred_cap);
    if (ev) {
        ev->type = type;
        ev->id = id;
    }
    return ev;
}

uint8_t *pw_scratch(pyws_loop *loop, size_t len)
{
    if (!loop->in_poll) {
        /* a view for a deferred event: lives until the poll after the one delivering it */
        uint8_t *p = malloc(len ? len : 1);
        if (p && ptr_push(&loop->deferred_blocks, &loop->ndeferred_blocks,
                          &loop->deferred_blocks_cap, p) < 0) {
            free(p);
            return NULL;
        }
        return p;
    }
    if (len <= PYWS_ARENA_SIZE - loop->arena_used) {
        uint8_t *p = loop->arena + loop->arena_used;
        loop->arena_used += len;
        return p;
    }
    uint8_t *p = malloc(len ? len : 1);
    if (p && pw_retire(loop, p) < 0) {
        free(p);
        return NULL;
    }
    return p;
}

uint8_t *pw_scratch_room(pyws_loop *loop, size_t *room)
{
    if (!loop->in_poll) {
        *room = 0;
        return NULL;
    }
    *room = PYWS_ARENA_SIZE - loop->arena_used;
    return loop->arena + loop->arena_used;
}

void pyws_deflate_stats(pyws_loop *loop, uint64_t *deflated, uint64_t *inflated,
                        uint64_t *pool_bytes)
{
    uint64_t d, i;
    pw_zpool_stats(loop->zpool, &d, &i);
    if (deflated)
        *deflated = d;
    if (inflated)
        *inflated = i;
    if (pool_bytes)
        *pool_bytes = pw_zpool_memory(loop->zpool);
}

pyws_zpool *pw_loop_zpool(pyws_loop *loop)
{
    if (!loop->zpool)
        loop->zpool = pw_zpool_new();
    return loop->zpool;
}

void pw_event_error(pyws_loop *loop, uint64_t id, int code, const char *text)
{
    pyws_event *ev = pw_event_push(loop, PYWS_EV_ERROR, id);
    if (!ev)
        return;
    ev->code = code;
    size_t n = strlen(text);
    uint8_t *copy = pw_scratch(loop, n);
    if (copy) {
        memcpy(copy, text, n);
        ev->data = copy;
        ev->len = n;
    }
}

/* ------------------------------------------------------------------ create / free */

pyws_loop *pyws_loop_new(void)
{
    pyws_loop *loop = calloc(1, sizeof(*loop));
    if (!loop)
        return NULL;
    loop->wake_fd_r = loop->wake_fd_w = -1;
    loop->bigbuf_pool.get = pw_bigbuf_get;
    loop->bigbuf_pool.put = pw_bigbuf_put;
    loop->bigbuf_pool.ctx = loop;
    loop->poller = pw_poller_new();
    loop->arena = malloc(PYWS_ARENA_SIZE);
    if (!loop->poller || !loop->arena)
        goto fail;
    if (pthread_mutex_init(&loop->wake_lock, NULL) != 0)
        goto fail;
    if (pw_wake_init(loop) != 0) {
        pthread_mutex_destroy(&loop->wake_lock);
        goto fail;
    }
#ifdef __linux__
    loop->wake_fd_r = loop->wake_fd_w = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (loop->wake_fd_r < 0)
        goto fail_mutex;
#else
    {
        int fds[2];
        if (pipe(fds) < 0)
            goto fail_mutex;
        for (int i = 0; i < 2; i++) {
            fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL, 0) | O_NONBLOCK);
            fcntl(fds[i], F_SETFD, FD_CLOEXEC);
        }
        loop->wake_fd_r = fds[0];
        loop->wake_fd_w = fds[1];
    }
#endif
    if (pw_poller_add(loop->poller, loop->wake_fd_r, PYWS_WAKE_ID, PYWS_POLL_IN) < 0)
        goto fail_fds;
    loop->now = pw_now_ms();
    return loop;

fail_fds:
    close(loop->wake_fd_r);
    if (loop->wake_fd_w != loop->wake_fd_r)
        close(loop->wake_fd_w);
fail_mutex:
    pw_wake_fini(loop);
    pthread_mutex_destroy(&loop->wake_lock);
fail:
    pw_poller_free(loop->poller);
    free(loop->arena);
    free(loop);
    return NULL;
}

static void free_blocks(void **v, size_t *n)
{
    for (size_t i = 0; i < *n; i++)
        free(v[i]);
    *n = 0;
}

void pyws_loop_free(pyws_loop *loop)
{
    if (!loop)
        return;
    for (uint32_t i = 0; i < loop->nslots; i++) {
        pyws_conn *c = loop->conns[i];
        if (c) {
            pw_conn_free(loop, c);
            free(c);
            loop->conns[i] = NULL; /* later connections' unsubscribes look slots up */
        }
    }
    free(loop->conns);
    free(loop->free_slots);
    pw_topics_free(loop);
    free_blocks(loop->retired, &loop->nretired);
    free(loop->retired);
    free_blocks(loop->deferred_blocks, &loop->ndeferred_blocks);
    free(loop->deferred_blocks);
    free(loop->events);
    free(loop->deferred);
    free(loop->dirty.v);
    free(loop->pending.v);
    free(loop->held.v);
    for (int i = 0; i < loop->nblob_cache; i++)
        free(loop->blob_cache[i]);
    free(loop->blob_cache);
    for (int i = 0; i < loop->nbigbuf; i++)
        free(loop->bigbuf_cache[i].p);
    pw_timers_free(&loop->timers);
    pyws_wake_close(loop); /* no producer is left waiting on what is freed below */
    for (size_t i = 0; i < loop->wake_n; i++)
        free(loop->wake_q[(loop->wake_head + i) % loop->wake_cap].data);
    free(loop->wake_q);
    close(loop->wake_fd_r);
    if (loop->wake_fd_w != loop->wake_fd_r)
        close(loop->wake_fd_w);
    pw_wake_fini(loop);
    pthread_mutex_destroy(&loop->wake_lock);
    pw_poller_free(loop->poller);
    free(loop->arena);
    pw_zpool_free(loop->zpool);
    free(loop);
}

/* ------------------------------------------------------------------ timers */

int pyws_timer_add(pyws_loop *loop, uint64_t ms, int repeat, uint64_t *timer_id)
{
    uint64_t id = pw_utimer_add(&loop->timers, pw_now_ms(), ms, repeat);
    if (!id)
        return pw_set_error(loop, PYWS_ERR_NOMEM, "out of memory");
    *timer_id = id;
    if (!loop->in_poll)
        pw_loop_touch(loop); /* the host's timer must be re-armed for it */
    return PYWS_OK;
}

int pyws_timer_cancel(pyws_loop *loop, uint64_t timer_id)
{
    return pw_utimer_cancel(&loop->timers, timer_id) == 0 ? PYWS_OK : PYWS_ERR_BADID;
}

static void run_timers(pyws_loop *loop)
{
    const pyws_tentry *top;
    while ((top = pw_timers_peek(&loop->timers)) && top->when <= loop->now) {
        pyws_tentry e = *top;
        pw_timers_pop(&loop->timers);
        if (e.kind == PYWS_TIMER_USER) {
            if (pw_utimer_fire(&loop->timers, &e, loop->now)) {
                pyws_event *ev = pw_event_push(loop, PYWS_EV_TIMER, 0);
                if (ev)
                    ev->aux = e.id;
            }
        } else {
            pyws_conn *c = pw_conn_get(loop, e.id);
            if (c && c->kind == PYWS_KIND_CONN && c->timer_at == e.when)
                pw_conn_timeout(loop, c);
        }
    }
}

/* ------------------------------------------------------------------ one iteration */

static void run_dirty(pyws_loop *loop)
{
    /* flushing can mark nothing dirty again, but an EV_DRAIN handler cannot run here, so the
     * list only shrinks: process it all */
    uint32_t n = loop->dirty.n;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t slot = loop->dirty.v[i];
        pyws_conn *c = slot < loop->nslots ? loop->conns[slot] : NULL;
        if (!c || c->kind != PYWS_KIND_CONN || !(c->flags & CF_DIRTY))
            continue;
        c->flags &= ~CF_DIRTY;
        pw_conn_flush(loop, c);
    }
    /* entries added while flushing (a linger close marks nothing, but be safe) */
    if (loop->dirty.n > n) {
        memmove(loop->dirty.v, loop->dirty.v + n, (loop->dirty.n - n) * sizeof(uint32_t));
        loop->dirty.n -= n;
    } else {
        loop->dirty.n = 0;
    }
}

static void run_pending(pyws_loop *loop)
{
    uint32_t n = loop->pending.n;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t slot = loop->pending.v[i];
        pyws_conn *c = slot < loop->nslots ? loop->conns[slot] : NULL;
        if (!c || c->kind != PYWS_KIND_CONN || !(c->flags & CF_PENDING))
            continue;
        c->flags &= ~CF_PENDING;
        if (c->flags & CF_OVER_LIMIT) {
            if (c->flags & CF_STREAM) { /* no close frame to send: report it and end it */
                pw_event_error(loop, c->id, PYWS_ERR_LIMIT,
                               "the stream's write queue passed write_limit (the peer does "
                               "not read)");
                pw_conn_close(loop, c, PYWS_CLOSE_POLICY);
            } else {
                pw_ws_overflow(loop, c);
            }
            continue;
        }
        uint64_t id = c->id;
        /* a close that the input below reports must wait for the application's replies to
         * the messages before it: only a close already pending is acted on now */
        int close_was_pending = c->pending_code != 0;
        if ((c->flags & CF_STARVED) || (c->tr_flags & PYWS_TR_PENDING)) {
            /* input the transport holds (OpenSSL's decrypted bytes: no socket event for
             * them), or a connection the last poll had no arena room for */
            c->flags &= ~CF_STARVED;
            pw_conn_read(loop, c);
            c = pw_conn_get(loop, id);
            if (!c)
                continue;
        }
        if (c->rbuf || (c->flags & CF_REQ_DONE))
            pw_http_pending(loop, c);
        c = pw_conn_get(loop, id);
        if (c && close_was_pending && c->pending_code)
            pw_ws_pending(loop, c);
    }
    /* work marked during this pass waits for the next poll */
    if (loop->pending.n > n)
        memmove(loop->pending.v, loop->pending.v + n, (loop->pending.n - n) * sizeof(uint32_t));
    loop->pending.n -= n;
}

static void release_views(pyws_loop *loop)
{
    free_blocks(loop->retired, &loop->nretired);
    for (uint32_t i = 0; i < loop->held.n; i++) {
        uint32_t slot = loop->held.v[i];
        pyws_conn *c = slot < loop->nslots ? loop->conns[slot] : NULL;
        if (!c || c->kind != PYWS_KIND_CONN || !(c->flags & CF_HELD))
            continue;
        c->flags &= ~CF_HELD;
        if (c->sess)
            pyws_session_release(c->sess, PYWS_KEEP_MSG_BUF);
    }
    loop->held.n = 0;
    loop->nevents = 0;
    loop->arena_used = 0;
    /* events raised between polls join this batch; their copies die at the next poll */
    for (int i = 0; i < loop->ndeferred; i++) {
        pyws_event *ev = grow_push(&loop->events, &loop->nevents, &loop->events_cap);
        if (ev)
            *ev = loop->deferred[i];
    }
    loop->ndeferred = 0;
    for (size_t i = 0; i < loop->ndeferred_blocks; i++) {
        if (pw_retire(loop, loop->deferred_blocks[i]) < 0)
            free(loop->deferred_blocks[i]);
    }
    loop->ndeferred_blocks = 0;
}

int pyws_poll(pyws_loop *loop, int timeout_ms, pyws_event **events)
{
    pyws_ready ready[PYWS_MAX_READY];
    pw_wake_note_thread(loop);
    loop->in_poll = 1;
    loop->write_now = 0;
    release_views(loop);
    pw_blob_trim(loop);
    loop->now = pw_now_ms();

    run_pending(loop);
    run_dirty(loop);

    uint64_t limits_until = pw_limits_step(loop); /* may raise EV_ERROR: before the check below */
    int wait = timeout_ms;
    int wake_due = loop->wake_more; /* wakeups the last batch left behind: no waiting */
    if (loop->nevents > 0 || loop->pending.n > 0 || wake_due)
        wait = 0;
    const pyws_tentry *t = pw_timers_peek(&loop->timers);
    if (t && wait != 0) {
        uint64_t due = t->when > loop->now ? t->when - loop->now : 0;
        if (wait < 0 || due < (uint64_t)wait)
            wait = (int)(due > 0x7fffffff ? 0x7fffffff : due);
    }
    if (limits_until != UINT64_MAX && wait != 0) {
        /* a paused listener resumes, or a report falls due, then: neither spin nor oversleep */
        uint64_t due = limits_until > loop->now ? limits_until - loop->now : 0;
        if (wait < 0 || due < (uint64_t)wait)
            wait = (int)(due > 0x7fffffff ? 0x7fffffff : due);
    }

    int n = pw_poller_wait(loop->poller, wait, ready, PYWS_MAX_READY);
    if (n < 0) {
        loop->in_poll = 0;
        *events = loop->events;
        return pw_set_error(loop, PYWS_ERR_SYS, "poll failed: %s", strerror(errno));
    }
    loop->now = pw_now_ms();
    for (int i = 0; i < n; i++) {
        if (ready[i].udata == PYWS_WAKE_ID) {
            pw_wake_drain(loop);
            wake_due = 0;
            continue;
        }
        /* re-checked per event: an earlier one may have closed (and reused) this slot */
        pyws_conn *c = pw_conn_get(loop, ready[i].udata);
        if (!c)
            continue;
        if (c->kind == PYWS_KIND_LISTENER) {
            pw_accept_batch(loop, c);
            continue;
        }
        uint64_t id = c->id;
        if (c->state == PYWS_ST_CONNECTING) {
            pw_client_connected(loop, c); /* writable, or an error: either way, it is over */
            continue;
        }
        if (ready[i].events & (PYWS_POLL_IN | PYWS_POLL_ERR))
            pw_conn_read(loop, c);
        if ((ready[i].events & PYWS_POLL_OUT) && (c = pw_conn_get(loop, id)) != NULL)
            pw_conn_flush(loop, c);
    }

    if (wake_due)
        pw_wake_drain(loop);
    run_timers(loop);
    run_dirty(loop);

    loop->self_woken = 1; /* the host asks pyws_next_timeout after the batch */
    loop->write_now = loop->nevents == 1;
    loop->in_poll = 0;
    *events = loop->events;
    return loop->nevents;
}

/* ------------------------------------------------------------------ inside a host loop */

int pyws_loop_fd(pyws_loop *loop)
{
    return pw_poller_fd(loop->poller);
}

void pyws_loop_self_wake(pyws_loop *loop, int on)
{
    loop->self_wake = on ? 1 : 0;
    loop->self_woken = 0;
}

void pw_loop_touch(pyws_loop *loop)
{
    if (!loop->self_wake || loop->self_woken || loop->in_poll)
        return;
    loop->self_woken = 1;
    /* the wakeup descriptor: the poll that reads it finds no item and just runs */
    uint64_t one = 1;
    ssize_t w;
    do {
        w = write(loop->wake_fd_w, &one, loop->wake_fd_w == loop->wake_fd_r ? 8 : 1);
    } while (w < 0 && errno == EINTR);
}

int64_t pyws_next_timeout(pyws_loop *loop)
{
    if (loop->self_wake)
        loop->self_woken = 0;
    if (loop->dirty.n || loop->pending.n || loop->ndeferred || loop->wake_more)
        return 0;
    uint64_t until = UINT64_MAX;
    const pyws_tentry *t = pw_timers_peek(&loop->timers);
    if (t)
        until = t->when;
    uint64_t limits = pw_limits_next(loop); /* listen.c's bookkeeping, read without acting */
    if (limits == 0)
        return 0;
    if (limits < until)
        until = limits;
    if (until == UINT64_MAX)
        return -1;
    uint64_t now = pw_now_ms();
    if (until <= now)
        return 0;
    uint64_t ms = until - now;
    return ms > 0x7fffffff ? 0x7fffffff : (int64_t)ms;
}

int pyws_loop_watched(pyws_loop *loop, int *fds, uint32_t *events, uint64_t *ids, int cap,
                      uint64_t *generation)
{
    int n = pw_poller_list(loop->poller, fds, events, ids, cap < 0 ? 0 : cap, generation);
    return n < 0 ? PYWS_ERR_UNSUPPORTED : n;
}
