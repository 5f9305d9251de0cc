/*
 * listen.c — listeners and accepting: listen sockets, the accept batch, the loop-wide
 * max_sockets cap (a connection past it is answered 503 and closed), and what happens when
 * accept() runs out of descriptors (EMFILE, ENFILE, ENOBUFS, ENOMEM): every listener is unwatched
 * for a pause that doubles from 10 ms to 1 s, and both conditions are reported at most once a
 * second with a count (pyws_limit_stats_get).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core.h"

/* Make fd (bound and listening) a listener of the loop; fd is the loop's from here on. */
static int adopt(pyws_loop *loop, int fd, const pyws_opts *opts, uint64_t *id)
{
    pyws_opts def;
    if (!opts) {
        pyws_opts_default(&def);
        opts = &def;
    }
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
    return adopt(loop, fd, opts, id);
}

int pyws_listen_fd(pyws_loop *loop, int fd, const pyws_opts *opts, uint64_t *id)
{
    int type = 0, listening = 0;
    socklen_t len = sizeof(type);
    if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM)
        return pw_set_error(loop, PYWS_ERR_ARG, "descriptor %d is not a stream socket", fd);
    len = sizeof(listening);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 || !listening)
        return pw_set_error(loop, PYWS_ERR_ARG, "socket %d is not listening (bind and listen "
                            "it first)", fd);
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return pw_set_error(loop, PYWS_ERR_SYS, "cannot make socket %d non-blocking: %s", fd,
                            strerror(errno));
    (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
    return adopt(loop, fd, opts, id);
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
uint64_t pw_limits_step(pyws_loop *loop)
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

void pw_accept_batch(pyws_loop *loop, pyws_conn *l)
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
        loop->accepted++;
        pyws_event *ev = pw_event_push(loop, PYWS_EV_ACCEPT, c->id);
        if (ev)
            ev->aux = lid;
    }
}

uint64_t pw_limits_next(const pyws_loop *loop)
{
    uint64_t until = UINT64_MAX;
    if (loop->accept_resume_at) {
        if (loop->nconns < loop->accept_pause_nconns)
            return 0; /* a descriptor came free: the pause ends at the next poll */
        until = loop->accept_resume_at;
    }
    if (loop->accept_log.count && loop->accept_log.reported_at + LIMIT_REPORT_EVERY < until)
        until = loop->accept_log.reported_at + LIMIT_REPORT_EVERY;
    if (loop->refuse_log.count && loop->refuse_log.reported_at + LIMIT_REPORT_EVERY < until)
        until = loop->refuse_log.reported_at + LIMIT_REPORT_EVERY;
    return until;
}
