/* poller_kqueue.c — the BSD/macOS kqueue backend of poller.h. Read and write interest are two
 * filters; `old` tells which filters exist so mod/del touch only those. */
#include "poller.h"

#ifdef PYWS_POLLER_KQUEUE
#include <errno.h>
#include <stdlib.h>
#include <sys/event.h>
#include <sys/time.h>
#include <sys/types.h>
#include <unistd.h>

struct pyws_poller {
    int kq;
    struct kevent evs[256];
};

pyws_poller *pw_poller_new(void)
{
    pyws_poller *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->kq = kqueue();
    if (p->kq < 0) {
        free(p);
        return NULL;
    }
    return p;
}

void pw_poller_free(pyws_poller *p)
{
    if (!p)
        return;
    close(p->kq);
    free(p);
}

static int apply(pyws_poller *p, int fd, uint64_t udata, uint32_t old, uint32_t events)
{
    struct kevent ch[2];
    int n = 0;
    if ((events & PYWS_POLL_IN) && !(old & PYWS_POLL_IN))
        EV_SET(&ch[n++], fd, EVFILT_READ, EV_ADD, 0, 0, (void *)(uintptr_t)udata);
    if (!(events & PYWS_POLL_IN) && (old & PYWS_POLL_IN))
        EV_SET(&ch[n++], fd, EVFILT_READ, EV_DELETE, 0, 0, NULL);
    if ((events & PYWS_POLL_OUT) && !(old & PYWS_POLL_OUT))
        EV_SET(&ch[n++], fd, EVFILT_WRITE, EV_ADD, 0, 0, (void *)(uintptr_t)udata);
    if (!(events & PYWS_POLL_OUT) && (old & PYWS_POLL_OUT))
        EV_SET(&ch[n++], fd, EVFILT_WRITE, EV_DELETE, 0, 0, NULL);
    if (n == 0)
        return 0;
    return kevent(p->kq, ch, n, NULL, 0, NULL) < 0 ? -1 : 0;
}

int pw_poller_add(pyws_poller *p, int fd, uint64_t udata, uint32_t events)
{
    return apply(p, fd, udata, 0, events);
}

int pw_poller_mod(pyws_poller *p, int fd, uint64_t udata, uint32_t old, uint32_t events)
{
    return apply(p, fd, udata, old, events);
}

int pw_poller_del(pyws_poller *p, int fd, uint32_t old)
{
    return apply(p, fd, 0, old, 0);
}

int pw_poller_wait(pyws_poller *p, int timeout_ms, pyws_ready *out, int max)
{
    struct timespec ts, *tp = NULL;
    if (timeout_ms >= 0) {
        ts.tv_sec = timeout_ms / 1000;
        ts.tv_nsec = (long)(timeout_ms % 1000) * 1000000L;
        tp = &ts;
    }
    if (max > 256)
        max = 256;
    int n = kevent(p->kq, NULL, 0, p->evs, max, tp);
    if (n < 0)
        return errno == EINTR ? 0 : -1;
    for (int i = 0; i < n; i++) {
        out[i].udata = (uint64_t)(uintptr_t)p->evs[i].udata;
        out[i].events = (p->evs[i].filter == EVFILT_READ ? PYWS_POLL_IN : PYWS_POLL_OUT) |
                        ((p->evs[i].flags & EV_ERROR) ? PYWS_POLL_ERR : 0u);
    }
    return n;
}

int pw_poller_fd(pyws_poller *p)
{
    return p->kq;
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
    return "kqueue";
}
#endif
