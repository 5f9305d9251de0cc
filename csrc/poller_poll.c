/* poller_poll.c — the portable poll(2) backend of poller.h. O(n) per wait: a fallback. */
#include "poller.h"

#ifdef PYWS_POLLER_POLL
#include <errno.h>
#include <poll.h>
#include <stdlib.h>

struct pyws_poller {
    struct pollfd *fds;       /* dense array of watched fds */
    uint64_t *udata;          /* parallel to fds */
    int n;
    int cap;
    int *index;               /* fd -> position in fds, or -1 */
    int index_cap;
    int rotate;               /* where the next scan starts, for fairness */
    uint64_t gen;             /* changes with every add/mod/del (pw_poller_list) */
};

pyws_poller *pw_poller_new(void)
{
    return calloc(1, sizeof(pyws_poller));
}

void pw_poller_free(pyws_poller *p)
{
    if (!p)
        return;
    free(p->fds);
    free(p->udata);
    free(p->index);
    free(p);
}

static short to_poll(uint32_t events)
{
    return (short)(((events & PYWS_POLL_IN) ? POLLIN : 0) | ((events & PYWS_POLL_OUT) ? POLLOUT : 0));
}

int pw_poller_add(pyws_poller *p, int fd, uint64_t udata, uint32_t events)
{
    if (fd < 0) {
        errno = EBADF;
        return -1;
    }
    if (fd >= p->index_cap) {
        int nc = p->index_cap ? p->index_cap : 64;
        while (nc <= fd)
            nc *= 2;
        int *ni = realloc(p->index, (size_t)nc * sizeof(int));
        if (!ni)
            return -1;
        for (int i = p->index_cap; i < nc; i++)
            ni[i] = -1;
        p->index = ni;
        p->index_cap = nc;
    }
    if (p->index[fd] >= 0) {
        errno = EEXIST;
        return -1;
    }
    if (p->n == p->cap) {
        int nc = p->cap ? p->cap * 2 : 64;
        struct pollfd *nf = realloc(p->fds, (size_t)nc * sizeof(*nf));
        if (!nf)
            return -1;
        p->fds = nf;
        uint64_t *nu = realloc(p->udata, (size_t)nc * sizeof(*nu));
        if (!nu)
            return -1;
        p->udata = nu;
        p->cap = nc;
    }
    p->fds[p->n].fd = fd;
    p->fds[p->n].events = to_poll(events);
    p->fds[p->n].revents = 0;
    p->udata[p->n] = udata;
    p->index[fd] = p->n++;
    p->gen++;
    return 0;
}

int pw_poller_mod(pyws_poller *p, int fd, uint64_t udata, uint32_t old, uint32_t events)
{
    (void)old;
    if (fd < 0 || fd >= p->index_cap || p->index[fd] < 0) {
        errno = ENOENT;
        return -1;
    }
    int i = p->index[fd];
    short ev = to_poll(events);
    if (p->fds[i].events != ev || p->udata[i] != udata)
        p->gen++;
    p->fds[i].events = ev;
    p->udata[i] = udata;
    return 0;
}

int pw_poller_del(pyws_poller *p, int fd, uint32_t old)
{
    (void)old;
    if (fd < 0 || fd >= p->index_cap || p->index[fd] < 0) {
        errno = ENOENT;
        return -1;
    }
    int i = p->index[fd];
    int last = --p->n;
    if (i != last) {
        p->fds[i] = p->fds[last];
        p->udata[i] = p->udata[last];
        p->index[p->fds[i].fd] = i;
    }
    p->index[fd] = -1;
    p->gen++;
    return 0;
}

int pw_poller_wait(pyws_poller *p, int timeout_ms, pyws_ready *out, int max)
{
    int r = poll(p->fds, (nfds_t)p->n, timeout_ms);
    if (r < 0)
        return errno == EINTR ? 0 : -1;
    int k = 0;
    if (r == 0 || p->n == 0)
        return 0;
    int start = p->rotate % p->n;
    for (int j = 0; j < p->n && k < max; j++) {
        int i = (start + j) % p->n;
        short re = p->fds[i].revents;
        if (!re)
            continue;
        out[k].udata = p->udata[i];
        out[k].events = ((re & POLLIN) ? PYWS_POLL_IN : 0u) | ((re & POLLOUT) ? PYWS_POLL_OUT : 0u) |
                        ((re & (POLLERR | POLLHUP | POLLNVAL)) ? PYWS_POLL_ERR : 0u);
        k++;
    }
    p->rotate = start + 1;
    return k;
}

int pw_poller_fd(pyws_poller *p)
{
    (void)p;
    return -1;
}

int pw_poller_list(pyws_poller *p, int *fds, uint32_t *events, uint64_t *udata, int cap,
                     uint64_t *gen)
{
    for (int i = 0; i < p->n && i < cap; i++) {
        fds[i] = p->fds[i].fd;
        events[i] = ((p->fds[i].events & POLLIN) ? PYWS_POLL_IN : 0u) |
                    ((p->fds[i].events & POLLOUT) ? PYWS_POLL_OUT : 0u);
        udata[i] = p->udata[i];
    }
    if (gen)
        *gen = p->gen;
    return p->n;
}

const char *pw_poller_name(void)
{
    return "poll";
}
#endif
