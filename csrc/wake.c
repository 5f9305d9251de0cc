/*
 * wake.c — the cross-thread queue: the one way other threads hand the loop work
 * (pyws_wakeup, pyws_wakeup_wait), bounded in items and bytes, delivered as EV_WAKEUP events
 * on the loop's thread, at most wake_batch per poll.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/eventfd.h>
#endif

#include "core.h"

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

int pw_wake_init(pyws_loop *loop)
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

void pw_wake_fini(pyws_loop *loop)
{
    pthread_cond_destroy(&loop->wake_room);
    pthread_cond_destroy(&loop->wake_idle);
}

/* Record the thread that polls, so that it never waits for room it alone could make. */
void pw_wake_note_thread(pyws_loop *loop)
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
void pw_wake_drain(pyws_loop *loop)
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

