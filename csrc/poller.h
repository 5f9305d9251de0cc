/*
 * poller.h — the readiness-notification backend (internal). One implementation per file:
 * poller_epoll.c (Linux), poller_kqueue.c (BSD, macOS), poller_poll.c (portable poll(2)).
 * Exactly one is compiled in, chosen at build time: PYWS_POLLER_EPOLL / _KQUEUE / _POLL, or by
 * platform when none is defined. Each registered fd carries a 64-bit user value (a connection id)
 * that comes back with its readiness, so a stale id can be detected by the caller.
 */
#ifndef PYWS_POLLER_H
#define PYWS_POLLER_H

#include <stdint.h>

#if !defined(PYWS_POLLER_EPOLL) && !defined(PYWS_POLLER_KQUEUE) && !defined(PYWS_POLLER_POLL)
#if defined(__linux__)
#define PYWS_POLLER_EPOLL 1
#elif defined(__APPLE__) || defined(__FreeBSD__) || defined(__OpenBSD__) || defined(__NetBSD__)
#define PYWS_POLLER_KQUEUE 1
#else
#define PYWS_POLLER_POLL 1
#endif
#endif

#define PYWS_POLL_IN 1u
#define PYWS_POLL_OUT 2u
#define PYWS_POLL_ERR 4u   /* error or hang-up: the caller reads to find out which */

typedef struct pyws_poller pyws_poller;

typedef struct pyws_ready {
    uint64_t udata;
    uint32_t events;       /* PYWS_POLL_* */
} pyws_ready;

pyws_poller *pw_poller_new(void);
void pw_poller_free(pyws_poller *p);
/* Start watching fd for `events` (PYWS_POLL_IN|OUT). 0 or -1 (errno set). */
int pw_poller_add(pyws_poller *p, int fd, uint64_t udata, uint32_t events);
/* Change what fd is watched for; `old` is what it was watched for until now. */
int pw_poller_mod(pyws_poller *p, int fd, uint64_t udata, uint32_t old, uint32_t events);
/* Stop watching fd (call before close). */
int pw_poller_del(pyws_poller *p, int fd, uint32_t old);
/* Wait up to timeout_ms (-1 forever) and store at most max ready fds. Returns the count, 0 on
 * timeout or EINTR, -1 on error. */
int pw_poller_wait(pyws_poller *p, int timeout_ms, pyws_ready *out, int max);
/* The backend's own pollable descriptor (epoll, kqueue), or -1 (poll). */
int pw_poller_fd(pyws_poller *p);
/* poll backend: copy up to cap watched fds with their events (PYWS_POLL_IN|OUT) and user
 * values; *gen changes with every add/mod/del. Returns the count, or -1 for other backends. */
int pw_poller_list(pyws_poller *p, int *fds, uint32_t *events, uint64_t *udata, int cap,
                     uint64_t *gen);
/* "epoll", "kqueue" or "poll". */
const char *pw_poller_name(void);

#endif
