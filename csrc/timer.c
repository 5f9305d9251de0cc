/* timer.c — the deadline heap and user timer slots (see timer.h). */
#include <stdlib.h>

#include "timer.h"

void pw_timers_free(pyws_timers *t)
{
    free(t->heap);
    free(t->user);
    free(t->free_user);
    t->heap = NULL;
    t->user = NULL;
    t->free_user = NULL;
    t->n = t->cap = 0;
    t->nuser = t->nfree_user = 0;
}

static int earlier(const pyws_tentry *a, const pyws_tentry *b)
{
    return a->when < b->when;
}

int pw_timers_push(pyws_timers *t, uint64_t when, uint32_t kind, uint64_t id)
{
    if (t->n == t->cap) {
        size_t nc = t->cap ? t->cap * 2 : 64;
        pyws_tentry *nh = realloc(t->heap, nc * sizeof(*nh));
        if (!nh)
            return -1;
        t->heap = nh;
        t->cap = nc;
    }
    size_t i = t->n++;
    pyws_tentry e = {when, id, kind};
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!earlier(&e, &t->heap[parent]))
            break;
        t->heap[i] = t->heap[parent];
        i = parent;
    }
    t->heap[i] = e;
    return 0;
}

const pyws_tentry *pw_timers_peek(const pyws_timers *t)
{
    return t->n ? &t->heap[0] : NULL;
}

void pw_timers_pop(pyws_timers *t)
{
    if (t->n == 0)
        return;
    pyws_tentry last = t->heap[--t->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const pyws_tentry *best = &last;
        if (l < t->n && earlier(&t->heap[l], best)) {
            m = l;
            best = &t->heap[l];
        }
        if (r < t->n && earlier(&t->heap[r], best))
            m = r;
        if (m == i)
            break;
        t->heap[i] = t->heap[m];
        i = m;
    }
    if (t->n)
        t->heap[i] = last;
}

uint64_t pw_utimer_add(pyws_timers *t, uint64_t now, uint64_t ms, int repeat)
{
    uint32_t slot;
    if (t->nfree_user) {
        slot = t->free_user[--t->nfree_user];
    } else {
        pyws_utimer *nu = realloc(t->user, (t->nuser + 1) * sizeof(*nu));
        if (!nu)
            return 0;
        t->user = nu;
        uint32_t *nf = realloc(t->free_user, (t->nuser + 1) * sizeof(*nf));
        if (!nf)
            return 0;
        t->free_user = nf;
        slot = t->nuser++;
        t->user[slot].gen = 0;
    }
    pyws_utimer *u = &t->user[slot];
    u->gen++;
    u->active = 1;
    u->repeat = repeat ? 1 : 0;
    u->interval = ms;
    u->when = now + ms;
    uint64_t id = ((uint64_t)u->gen << 32) | slot;
    if (pw_timers_push(t, u->when, PYWS_TIMER_USER, id) < 0) {
        u->active = 0;
        t->free_user[t->nfree_user++] = slot;
        return 0;
    }
    return id;
}

static pyws_utimer *lookup(pyws_timers *t, uint64_t id)
{
    uint32_t slot = (uint32_t)id;
    if (slot >= t->nuser)
        return NULL;
    pyws_utimer *u = &t->user[slot];
    if (u->gen != (uint32_t)(id >> 32) || !u->active)
        return NULL;
    return u;
}

int pw_utimer_cancel(pyws_timers *t, uint64_t id)
{
    pyws_utimer *u = lookup(t, id);
    if (!u)
        return -1;
    u->active = 0;
    t->free_user[t->nfree_user++] = (uint32_t)id;
    return 0;
}

int pw_utimer_fire(pyws_timers *t, const pyws_tentry *e, uint64_t now)
{
    pyws_utimer *u = lookup(t, e->id);
    if (!u || u->when != e->when)
        return 0;
    if (u->repeat) {
        uint64_t interval = u->interval ? u->interval : 1;
        u->when += interval;
        /* fell behind (the loop was blocked for more than a period): fire once and go on
         * from now; the missed ticks are skipped, not made up in a burst */
        if (u->when <= now)
            u->when = now + interval;
        if (pw_timers_push(t, u->when, PYWS_TIMER_USER, e->id) < 0)
            u->active = 0;
    } else {
        u->active = 0;
        t->free_user[t->nfree_user++] = (uint32_t)e->id;
    }
    return 1;
}
