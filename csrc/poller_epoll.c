/* poller_epoll.c — the Linux epoll backend of poller.h (level-triggered). */
#include "poller.h"

#ifdef PYWS_POLLER_EPOLL
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

struct pyws_poller {
    int epfd;
    struct epoll_event evs[256];
};

pyws_poller *pw_poller_new(void)
{
    pyws_poller *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (p->epfd < 0) {
        free(p);
        return NULL;
    }
    return p;
}

void pw_poller_free(pyws_poller *p)
{
    if (!p)
        return;
    close(p->epfd);
    free(p);
}

static uint32_t to_epoll(uint32_t events)
{
    return ((events & PYWS_POLL_IN) ? EPOLLIN | EPOLLRDHUP : 0u) |
           ((events & PYWS_POLL_OUT) ? EPOLLOUT : 0u);
}

static int ctl(pyws_poller *p, int op, int fd, uint64_t udata, uint32_t events)
{
    struct epoll_event ev;
    ev.events = to_epoll(events);
    ev.data.u64 = udata;
    return epoll_ctl(p->epfd, op, fd, &ev);
}

int pw_poller_add(pyws_poller *p, int fd, uint64_t udata, uint32_t events)
{
    return ctl(p, EPOLL_CTL_ADD, fd, udata, events);
}

int pw_poller_mod(pyws_poller *p, int fd, uint64_t udata, uint32_t old, uint32_t events)
{
    (void)old;
    return ctl(p, EPOLL_CTL_MOD, fd, udata, events);
}

int pw_poller_del(pyws_poller *p, int fd, uint32_t old)
{
    struct epoll_event ev = {0};
    (void)old;
    return epoll_ctl(p->epfd, EPOLL_CTL_DEL, fd, &ev);
}

int pw_poller_wait(pyws_poller *p, int timeout_ms, pyws_ready *out, int max)
{
    if (max > 256)
        max = 256;
    int n = epoll_wait(p->epfd, p->evs, max, timeout_ms);
    if (n < 0)
        return errno == EINTR ? 0 : -1;
    for (int i = 0; i < n; i++) {
        uint32_t e = p->evs[i].events;
        out[i].udata = p->evs[i].data.u64;
        out[i].events = ((e & (EPOLLIN | EPOLLRDHUP)) ? PYWS_POLL_IN : 0u) |
                        ((e & EPOLLOUT) ? PYWS_POLL_OUT : 0u) |
                        ((e & (EPOLLERR | EPOLLHUP)) ? PYWS_POLL_ERR : 0u);
    }
    return n;
}

int pw_poller_fd(pyws_poller *p)
{
    return p->epfd;
}

int pw_poller_list(pyws_poller *p, int *fds, uint32_t *events, uint64_t *udata, int cap,
                     uint64_t *gen)
{
    (void)p;
    (void)fds;
    (void)events;
    (void)udata;
    (void)cap;
    (void)gen;
    return -1;
}

const char *pw_poller_name(void)
{
    return "epoll";
}
#endif
