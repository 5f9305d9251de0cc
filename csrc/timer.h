/*
 * timer.h — a binary min-heap of deadlines (internal). Entries are never removed early: a
 * cancelled or moved deadline is left in place and recognised as stale when it comes up
 * (the owner compares it with what it currently expects).
 */
#ifndef PYWS_TIMER_H
#define PYWS_TIMER_H

#include <stddef.h>
#include <stdint.h>

enum {
    PYWS_TIMER_USER = 1,   /* a pyws_timer_add() timer: id is the timer id */
    PYWS_TIMER_CONN,       /* a connection deadline: id is the connection id */
};

typedef struct pyws_tentry {
    uint64_t when;         /* ms on the loop clock */
    uint64_t id;
    uint32_t kind;
} pyws_tentry;

typedef struct pyws_utimer {
    uint32_t gen;
    uint8_t active;
    uint8_t repeat;
    uint64_t interval;
    uint64_t when;
} pyws_utimer;

typedef struct pyws_timers {
    pyws_tentry *heap;
    size_t n;
    size_t cap;
    pyws_utimer *user;     /* user timer slots */
    uint32_t nuser;
    uint32_t *free_user;   /* free slots */
    uint32_t nfree_user;
} pyws_timers;

void pw_timers_free(pyws_timers *t);
int pw_timers_push(pyws_timers *t, uint64_t when, uint32_t kind, uint64_t id);
/* The earliest entry, or NULL if empty. */
const pyws_tentry *pw_timers_peek(const pyws_timers *t);
void pw_timers_pop(pyws_timers *t);
/* User timers: returns the id (> 0) or 0 on allocation failure. */
uint64_t pw_utimer_add(pyws_timers *t, uint64_t now, uint64_t ms, int repeat);
int pw_utimer_cancel(pyws_timers *t, uint64_t id);
/* Called when a USER entry comes up: 1 if it is live and due (and re-armed if repeating: one
 * period on, or one period after now when it fell behind, so missed ticks are skipped),
 * 0 if stale. */
int pw_utimer_fire(pyws_timers *t, const pyws_tentry *e, uint64_t now);

#endif
