/*
 * loop.c — one poll iteration, the event batch, timers and the cross-thread wakeup.
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

static int wake_init(pyws_loop *loop);
static void wake_fini(pyws_loop *loop);

pyws_loop *pyws_loop_new(void)
{
    pyws_loop *loop = calloc(1, sizeof(*loop));
    if (!loop)
        return NULL;
    loop->wake_fd_r = loop->wake_fd_w = -1;
    loop->poller = pw_poller_new();
    loop->arena = malloc(PYWS_ARENA_SIZE);
    if (!loop->poller || !loop->arena)
        goto fail;
    if (pthread_mutex_init(&loop->wake_lock, NULL) != 0)
        goto fail;
    if (wake_init(loop) != 0) {
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
    wake_fini(loop);
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
    pw_timers_free(&loop->timers);
    pyws_wake_close(loop); /* no producer is left waiting on what is freed below */
    for (size_t i = 0; i < loop->wake_n; i++)
        free(loop->wake_q[(loop->wake_head + i) % loop->wake_cap].data);
    free(loop->wake_q);
    close(loop->wake_fd_r);
    if (loop->wake_fd_w != loop->wake_fd_r)
        close(loop->wake_fd_w);
    wake_fini(loop);
    pthread_mutex_destroy(&loop->wake_lock);
    pw_poller_free(loop->poller);
    free(loop->arena);
    pw_zpool_free(loop->zpool);
    free(loop);
}

/* ------------------------------------------------------------------ listeners */

int pyws_listen(pyws_loop *loop, const char *host, int port, const pyws_opts *opts, uint64_t *id)
{
    if (port < 0 || port > 65535)
        return pw_set_error(loop, PYWS_ERR_ARG, "port %d is out of range", port);
    pyws_opts def;
    if (!opts) {
        pyws_opts_default(&def);
        opts = &def;
    }
    int fd = pw_net_listen(host, port, opts->backlog, opts->reuse_port, loop->errbuf,
                             sizeof(loop->errbuf));
    if (fd < 0)
        return PYWS_ERR_SYS;
    pyws_conn *l = pw_conn_new(loop, PYWS_KIND_LISTENER, fd);
    if (!l) {
        close(fd);
        return pw_set_error(loop, PYWS_ERR_NOMEM, "out of memory");
    }
    l->opts = *opts;
    if (!l->opts.max_sockets)
        l->opts.max_sockets = pyws_auto_max_sockets();
    if (pw_poller_add(loop->poller, fd, l->id, PYWS_POLL_IN) < 0) {
        pw_set_error(loop, PYWS_ERR_SYS, "cannot watch the listener: %s", strerror(errno));
        pw_conn_free(loop, l);
        return PYWS_ERR_SYS;
    }
    *id = l->id;
    if (!loop->in_poll)
        pw_loop_touch(loop); /* a poll(2) host re-reads the watched set */
    return PYWS_OK;
}

/* ------------------------------------------------------------------ descriptor limits */

#define ACCEPT_PAUSE_FIRST 10u    /* ms: the first pause after accept() ran out of resources */
#define ACCEPT_PAUSE_MAX 1000u    /* ms: pauses double up to this */
#define LIMIT_REPORT_EVERY 1000u  /* ms: at most one EV_ERROR per condition this often */

/* The answer of a connection refused at max_sockets. */
#define REFUSE_BODY "server at capacity; retry later\n"
static const char refuse_answer[] = "HTTP/1.1 503 Service Unavailable\r\n"
                                    "Connection: close\r\n"
                                    "Retry-After: 1\r\n"
                                    "Content-Type: text/plain\r\n"
                                    "Content-Length: 32\r\n"
                                    "\r\n" REFUSE_BODY;
_Static_assert(sizeof(REFUSE_BODY) - 1 == 32, "Content-Length of the 503 answer");

void pyws_limit_stats_get(pyws_loop *loop, pyws_limit_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->refused = loop->refused;
    out->accept_failures = loop->accept_failures;
    out->accept_pauses = loop->accept_pauses;
    out->accept_paused = loop->accept_resume_at ? 1u : 0u;
    out->pause_ms = loop->accept_pause_ms;
    out->sockets = loop->nconns > 0 ? (uint32_t)loop->nconns : 0u;
}

int64_t pyws_listener_max_sockets(pyws_loop *loop, uint64_t listener)
{
    pyws_conn *l = pw_conn_get(loop, listener);
    if (!l || l->kind != PYWS_KIND_LISTENER)
        return PYWS_ERR_BADID;
    return (int64_t)l->opts.max_sockets;
}

/* Watch (on) or stop watching every listener of the loop; CF_NO_READ marks the unwatched.
 * Returns -1 if the poller refused to take one back (it stays unwatched), else 0. */
static int listeners_watch(pyws_loop *loop, int on)
{
    int rc = 0;
    for (uint32_t i = 0; i < loop->nslots; i++) {
        pyws_conn *l = loop->conns[i];
        if (!l || l->kind != PYWS_KIND_LISTENER)
            continue;
        if (on && (l->flags & CF_NO_READ)) {
            if (pw_poller_add(loop->poller, l->fd, l->id, PYWS_POLL_IN) == 0)
                l->flags &= ~CF_NO_READ;
            else
                rc = -1;
        } else if (!on && !(l->flags & CF_NO_READ)) {
            if (pw_poller_del(loop->poller, l->fd, PYWS_POLL_IN) == 0)
                l->flags |= CF_NO_READ;
        }
    }
    return rc;
}

static int ratelog_due(const pyws_ratelog *r, uint64_t now)
{
    return r->count && (!r->reported_at || now - r->reported_at >= LIMIT_REPORT_EVERY);
}

/* Count one occurrence; 1 when it is time to report. */
static int ratelog_note(pyws_ratelog *r, uint64_t now, uint64_t listener, long detail)
{
    if (r->count++ == 0)
        r->since = now;
    r->listener = listener;
    r->detail = detail;
    return ratelog_due(r, now);
}

/* Raise the EV_ERROR for what r counted: text, then " (N times in S s)" when more than once,
 * then tail. */
static void ratelog_report(pyws_loop *loop, pyws_ratelog *r, int code, const char *text,
                           const char *tail)
{
    char times[64] = "";
    char msg[256];
    if (r->count > 1) {
        uint64_t span = loop->now - r->since;
        snprintf(times, sizeof(times), " (%llu times in %llu.%llu s)",
                 (unsigned long long)r->count, (unsigned long long)(span / 1000),
                 (unsigned long long)(span % 1000 / 100));
    }
    snprintf(msg, sizeof(msg), "%s%s%s", text, times, tail);
    pw_event_error(loop, r->listener, code, msg);
    r->count = 0;
    r->reported_at = loop->now;
}

static void report_accept_failures(pyws_loop *loop)
{
    char text[128], tail[64];
    snprintf(text, sizeof(text), "accept failed: %s", strerror((int)loop->accept_log.detail));
    if (loop->accept_resume_at)
        snprintf(tail, sizeof(tail), "; pausing accepts for %u ms", loop->accept_pause_ms);
    else
        snprintf(tail, sizeof(tail), "; accepting again");
    ratelog_report(loop, &loop->accept_log, PYWS_ERR_SYS, text, tail);
}

static void report_refusals(pyws_loop *loop)
{
    char text[128];
    snprintf(text, sizeof(text),
             "refused a connection with 503: the loop has max_sockets (%ld) open sockets",
             loop->refuse_log.detail);
    ratelog_report(loop, &loop->refuse_log, PYWS_ERR_LIMIT, text, "");
}

/* accept() failed for want of descriptors or memory: the listener stays readable, so stop
 * watching every listener until the pause ends (pyws_poll resumes them). */
static void accept_exhausted(pyws_loop *loop, pyws_conn *l, int err)
{
    loop->accept_failures++;
    if (!loop->accept_resume_at) {
        uint32_t p = loop->accept_pause_ms;
        p = !p ? ACCEPT_PAUSE_FIRST : p >= ACCEPT_PAUSE_MAX / 2 ? ACCEPT_PAUSE_MAX : p * 2;
        loop->accept_pause_ms = p;
        loop->accept_resume_at = loop->now + p;
        loop->accept_pause_nconns = loop->nconns;
        loop->accept_pauses++;
    }
    listeners_watch(loop, 0); /* all of them, also one added during the pause */
    if (ratelog_note(&loop->accept_log, loop->now, l->id, err))
        report_accept_failures(loop);
}

/* The loop has max_sockets connections: answer a new one 503 (one non-blocking write, not
 * on TLS listeners, where it would not be TLS) and close it. */
static void refuse(pyws_loop *loop, pyws_conn *l, int fd)
{
#ifdef MSG_NOSIGNAL
    const int flags = MSG_NOSIGNAL | MSG_DONTWAIT;
#else
    const int flags = MSG_DONTWAIT; /* SO_NOSIGPIPE was set at accept */
#endif
    if (l->tr == &pw_transport_tcp) {
        ssize_t w;
        do {
            w = send(fd, refuse_answer, sizeof(refuse_answer) - 1, flags);
        } while (w < 0 && errno == EINTR);
    }
    shutdown(fd, SHUT_WR);
    /* read what the client sent already: closing with unread input resets the connection,
     * and the reset can destroy the answer before the client reads it */
    uint8_t sink[2048];
    for (int i = 0; i < 4 && recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0; i++) {
    }
    close(fd);
    loop->refused++;
    if (ratelog_note(&loop->refuse_log, loop->now, l->id, (long)l->opts.max_sockets))
        report_refusals(loop);
}

/* Before the wait: end a pause that is over (or, early, once a connection of the loop closed
 * since it began: a descriptor came free), raise the reports whose second has passed. Returns
 * when the wait must end at the latest (ms on the loop clock; UINT64_MAX: no bound). */
static uint64_t limits_step(pyws_loop *loop)
{
    if (loop->accept_resume_at &&
        (loop->now >= loop->accept_resume_at || loop->nconns < loop->accept_pause_nconns)) {
        loop->accept_resume_at = 0;
        if (listeners_watch(loop, 1) < 0) /* the poller refused one: try again after a pause */
            loop->accept_resume_at = loop->now + (loop->accept_pause_ms ? loop->accept_pause_ms
                                                                        : ACCEPT_PAUSE_FIRST);
    }
    if (ratelog_due(&loop->accept_log, loop->now))
        report_accept_failures(loop);
    if (ratelog_due(&loop->refuse_log, loop->now))
        report_refusals(loop);
    uint64_t until = UINT64_MAX;
    if (loop->accept_resume_at)
        until = loop->accept_resume_at;
    if (loop->accept_log.count && loop->accept_log.reported_at + LIMIT_REPORT_EVERY < until)
        until = loop->accept_log.reported_at + LIMIT_REPORT_EVERY;
    if (loop->refuse_log.count && loop->refuse_log.reported_at + LIMIT_REPORT_EVERY < until)
        until = loop->refuse_log.reported_at + LIMIT_REPORT_EVERY;
    return until;
}

static void accept_batch(pyws_loop *loop, pyws_conn *l)
{
    if (l->flags & CF_NO_READ)
        return; /* paused earlier in this batch of readiness events */
    for (int i = 0; i < PYWS_ACCEPT_BATCH; i++) {
        pyws_conn tmp;
        socklen_t salen = sizeof(tmp.peer);
        int fd = pw_net_accept(l->fd, &tmp.peer.sa, &salen);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
                errno == ECONNABORTED)
                return;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                accept_exhausted(loop, l, errno);
                return;
            }
            snprintf(loop->errbuf, sizeof(loop->errbuf), "accept failed: %s", strerror(errno));
            pw_event_error(loop, l->id, PYWS_ERR_SYS, loop->errbuf);
            return;
        }
        loop->accept_pause_ms = 0; /* the next shortage starts with the shortest pause */
        if (l->opts.max_sockets && (int64_t)loop->nconns >= (int64_t)l->opts.max_sockets) {
            refuse(loop, l, fd);
            continue;
        }
        uint64_t lid = l->id;
        pyws_conn *c = pw_conn_new(loop, PYWS_KIND_CONN, fd);
        if (!c) {
            close(fd);
            return;
        }
        c->opts = l->opts;
        c->listener = lid;
        c->peer = tmp.peer;
        pw_conn_set_state(loop, c, PYWS_ST_HTTP);
        c->role = PYWS_ROLE_SERVER;
        if (pw_poller_add(loop->poller, fd, c->id, PYWS_POLL_IN) < 0 ||
            l->tr->accept(loop, c, l) != PYWS_OK) {
            pw_conn_free(loop, c);
            continue;
        }
        if (c->opts.handshake_timeout) {
            c->deadline_hs = loop->now + c->opts.handshake_timeout;
            pw_conn_deadline(loop, c, c->deadline_hs);
        }
        if (c->opts.idle_timeout)
            pw_conn_deadline(loop, c, loop->now + c->opts.idle_timeout);
        pyws_event *ev = pw_event_push(loop, PYWS_EV_ACCEPT, c->id);
        if (ev)
            ev->aux = lid;
    }
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
            if (pw_utimer_fire(&loop->timers, &e)) {
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

/* ------------------------------------------------------------------ wakeup */
/*
 * The cross-thread queue: a ring of items under wake_lock. Producers copy their payload before
 * taking the lock, wait on wake_room while the queue is full, and write the wake fd only when
 * the loop has not been signalled since it last emptied the queue. The loop takes at most
 * wake_batch items per poll; when it leaves some behind, wake_more makes the next poll skip its
 * wait (wake_signalled stays set, so producers need not write the fd again meanwhile).
 */

#ifdef __APPLE__
#define WAKE_CLOCK CLOCK_REALTIME        /* no pthread_condattr_setclock there */
#else
#define WAKE_CLOCK CLOCK_MONOTONIC
#endif
#define WAKE_RING_KEEP 1024              /* an emptied ring larger than this is freed */

static int wake_init(pyws_loop *loop)
{
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0)
        return -1;
    int rc = 0;
#ifndef __APPLE__
    rc = pthread_condattr_setclock(&attr, WAKE_CLOCK);
#endif
    if (rc == 0)
        rc = pthread_cond_init(&loop->wake_room, &attr);
    pthread_condattr_destroy(&attr);
    if (rc != 0)
        return -1;
    if (pthread_cond_init(&loop->wake_idle, NULL) != 0) {
        pthread_cond_destroy(&loop->wake_room);
        return -1;
    }
    loop->wake_max_items = PYWS_WAKE_MAX_ITEMS;
    loop->wake_max_bytes = PYWS_WAKE_MAX_BYTES;
    loop->wake_batch = PYWS_WAKE_BATCH;
    return 0;
}

static void wake_fini(pyws_loop *loop)
{
    pthread_cond_destroy(&loop->wake_room);
    pthread_cond_destroy(&loop->wake_idle);
}

/* Record the thread that polls, so that it never waits for room it alone could make. */
static void wake_note_thread(pyws_loop *loop)
{
    pthread_t self = pthread_self();
    if (loop->wake_owner_set && pthread_equal(loop->wake_owner, self))
        return; /* only polling threads write it, one at a time */
    pthread_mutex_lock(&loop->wake_lock);
    loop->wake_owner = self;
    loop->wake_owner_set = 1;
    pthread_mutex_unlock(&loop->wake_lock);
}

/* wake_lock held */
static int wake_has_room(const pyws_loop *loop, size_t len)
{
    return loop->wake_n < loop->wake_max_items && loop->wake_bytes <= loop->wake_max_bytes &&
           len <= loop->wake_max_bytes - loop->wake_bytes;
}

/* wake_lock held: wait (as timeout_ms allows) until an item of len bytes fits */
static int wake_wait_room(pyws_loop *loop, size_t len, int timeout_ms)
{
    if (loop->wake_closed)
        return PYWS_ERR_CLOSED;
    if (len > loop->wake_max_bytes)
        return PYWS_ERR_ARG;
    if (wake_has_room(loop, len))
        return PYWS_OK;
    if (timeout_ms == 0 ||
        (loop->wake_owner_set && pthread_equal(loop->wake_owner, pthread_self())))
        return PYWS_ERR_LIMIT;
    struct timespec deadline = {0, 0};
    if (timeout_ms > 0) {
        clock_gettime(WAKE_CLOCK, &deadline);
        deadline.tv_sec += timeout_ms / 1000;
        deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
    }
    int rc = PYWS_ERR_LIMIT;
    loop->wake_waiters++;
    for (;;) {
        int e = timeout_ms > 0
                    ? pthread_cond_timedwait(&loop->wake_room, &loop->wake_lock, &deadline)
                    : pthread_cond_wait(&loop->wake_room, &loop->wake_lock);
        if (loop->wake_closed) {
            rc = PYWS_ERR_CLOSED;
            break;
        }
        if (len > loop->wake_max_bytes) { /* the bound was lowered meanwhile */
            rc = PYWS_ERR_ARG;
            break;
        }
        if (wake_has_room(loop, len)) {
            rc = PYWS_OK;
            break;
        }
        if (e != 0) /* ETIMEDOUT (or a broken wait: do not spin) */
            break;
    }
    loop->wake_waiters--;
    if (loop->wake_closed && loop->wake_waiters == 0)
        pthread_cond_broadcast(&loop->wake_idle);
    return rc;
}

/* wake_lock held, room checked: append one item (owning data) */
static int wake_push(pyws_loop *loop, uint64_t id, uint64_t tag, uint8_t *data, size_t len)
{
    if (loop->wake_n == loop->wake_cap) {
        size_t nc = loop->wake_cap ? loop->wake_cap * 2 : 16;
        if (nc > loop->wake_max_items && loop->wake_max_items > loop->wake_n)
            nc = loop->wake_max_items;
        if (nc <= loop->wake_n || nc > SIZE_MAX / sizeof(pyws_wake_item))
            return PYWS_ERR_NOMEM;
        pyws_wake_item *nq = malloc(nc * sizeof(*nq));
        if (!nq)
            return PYWS_ERR_NOMEM;
        for (size_t i = 0; i < loop->wake_n; i++)
            nq[i] = loop->wake_q[(loop->wake_head + i) % loop->wake_cap];
        free(loop->wake_q);
        loop->wake_q = nq;
        loop->wake_cap = nc;
        loop->wake_head = 0;
    }
    pyws_wake_item *it = &loop->wake_q[(loop->wake_head + loop->wake_n) % loop->wake_cap];
    it->id = id;
    it->tag = tag;
    it->data = data;
    it->len = len;
    loop->wake_n++;
    loop->wake_bytes += len;
    return PYWS_OK;
}

int pyws_wakeup_wait(pyws_loop *loop, uint64_t id, uint64_t tag, const uint8_t *data,
                     size_t len, int timeout_ms)
{
    if (len && !data)
        return PYWS_ERR_ARG;
    uint8_t *copy = NULL;
    if (len) {
        copy = malloc(len); /* outside the lock: producers copy in parallel */
        if (!copy)
            return PYWS_ERR_NOMEM;
        memcpy(copy, data, len);
    }
    pthread_mutex_lock(&loop->wake_lock);
    int rc = wake_wait_room(loop, len, timeout_ms);
    if (rc == PYWS_OK)
        rc = wake_push(loop, id, tag, copy, len);
    if (rc == PYWS_OK && !loop->wake_signalled) {
        /* under the lock: once pyws_wake_close holds it, no producer touches the fd again */
        loop->wake_signalled = 1;
        uint64_t one = 1;
        ssize_t w;
        do {
            w = write(loop->wake_fd_w, &one, loop->wake_fd_w == loop->wake_fd_r ? 8 : 1);
        } while (w < 0 && errno == EINTR);
    }
    pthread_mutex_unlock(&loop->wake_lock);
    if (rc != PYWS_OK)
        free(copy);
    return rc;
}

int pyws_wakeup(pyws_loop *loop, uint64_t id, const uint8_t *data, size_t len)
{
    return pyws_wakeup_wait(loop, id, 0, data, len, 0);
}

void pyws_wake_limits(pyws_loop *loop, size_t max_items, size_t max_bytes, uint32_t batch)
{
    pthread_mutex_lock(&loop->wake_lock);
    if (max_items)
        loop->wake_max_items = max_items;
    if (max_bytes)
        loop->wake_max_bytes = max_bytes;
    if (batch)
        loop->wake_batch = batch;
    if (loop->wake_waiters)
        pthread_cond_broadcast(&loop->wake_room); /* a raised bound may have made room */
    pthread_mutex_unlock(&loop->wake_lock);
}

void pyws_wake_pending(pyws_loop *loop, size_t *items, size_t *bytes)
{
    pthread_mutex_lock(&loop->wake_lock);
    if (items)
        *items = loop->wake_n;
    if (bytes)
        *bytes = loop->wake_bytes;
    pthread_mutex_unlock(&loop->wake_lock);
}

void pyws_wake_close(pyws_loop *loop)
{
    pthread_mutex_lock(&loop->wake_lock);
    loop->wake_closed = 1;
    pthread_cond_broadcast(&loop->wake_room);
    while (loop->wake_waiters > 0)
        pthread_cond_wait(&loop->wake_idle, &loop->wake_lock);
    pthread_mutex_unlock(&loop->wake_lock);
}

/* Loop thread: turn the next batch of items into EV_WAKEUP events. */
static void drain_wakeups(pyws_loop *loop)
{
    uint8_t sink[64];
    while (read(loop->wake_fd_r, sink, sizeof(sink)) > 0) {
    }
    pthread_mutex_lock(&loop->wake_lock);
    size_t take = loop->wake_n < loop->wake_batch ? loop->wake_n : loop->wake_batch;
    for (size_t i = 0; i < take; i++) {
        pyws_wake_item *it = &loop->wake_q[(loop->wake_head + i) % loop->wake_cap];
        loop->wake_bytes -= it->len;
        /* the batch's views die at the next poll; an item whose copy cannot be recorded
         * for that (out of memory) is dropped rather than handed out dangling */
        if (it->data && pw_retire(loop, it->data) < 0) {
            free(it->data);
            continue;
        }
        pyws_event *ev = pw_event_push(loop, PYWS_EV_WAKEUP, it->id);
        if (ev) {
            ev->data = it->data;
            ev->len = it->len;
            ev->aux = it->tag;
        }
    }
    loop->wake_n -= take;
    loop->wake_head = loop->wake_n ? (loop->wake_head + take) % loop->wake_cap : 0;
    if (loop->wake_n == 0) {
        loop->wake_signalled = 0; /* the next producer writes the fd */
        loop->wake_more = 0;
        if (loop->wake_cap > WAKE_RING_KEEP) { /* an idle queue holds no large ring */
            free(loop->wake_q);
            loop->wake_q = NULL;
            loop->wake_cap = 0;
        }
    } else {
        loop->wake_more = 1;
    }
    if (take && loop->wake_waiters)
        pthread_cond_broadcast(&loop->wake_room);
    pthread_mutex_unlock(&loop->wake_lock);
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
            pw_ws_overflow(loop, c);
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
    wake_note_thread(loop);
    loop->in_poll = 1;
    release_views(loop);
    pw_blob_trim(loop);
    loop->now = pw_now_ms();

    run_pending(loop);
    run_dirty(loop);

    uint64_t limits_until = limits_step(loop); /* may raise EV_ERROR: before the check below */
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
            drain_wakeups(loop);
            wake_due = 0;
            continue;
        }
        /* re-checked per event: an earlier one may have closed (and reused) this slot */
        pyws_conn *c = pw_conn_get(loop, ready[i].udata);
        if (!c)
            continue;
        if (c->kind == PYWS_KIND_LISTENER) {
            accept_batch(loop, c);
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
        drain_wakeups(loop);
    run_timers(loop);
    run_dirty(loop);

    loop->self_woken = 1; /* the host asks pyws_next_timeout after the batch */
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
    /* the descriptor-limit bookkeeping of limits_step, read without acting on it */
    if (loop->accept_resume_at && loop->accept_resume_at < until)
        until = loop->accept_resume_at;
    if (loop->accept_resume_at && loop->nconns < loop->accept_pause_nconns)
        return 0;
    if (loop->accept_log.count && loop->accept_log.reported_at + LIMIT_REPORT_EVERY < until)
        until = loop->accept_log.reported_at + LIMIT_REPORT_EVERY;
    if (loop->refuse_log.count && loop->refuse_log.reported_at + LIMIT_REPORT_EVERY < until)
        until = loop->refuse_log.reported_at + LIMIT_REPORT_EVERY;
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
