/*
 * c_echo.c — the echo server of examples/echo_server.py written against pyws's C engine
 * directly (csrc/pyws.h: pyws_loop_new, pyws_listen, pyws_poll, pyws_ws_upgrade, pyws_send),
 * with no Python at all: the same event batch, framing, masking and UTF-8 validation (the same
 * SIMD kernels, picked at run time) that the Python layer drives through cffi. The echo
 * benchmark's "c-echo" server: the ceiling for what pyws's Python layer costs per message.
 *
 *     c_echo [--host 127.0.0.1] [--port 9001] [--max-size BYTES]
 *
 * Built by bench/harness.py (build_c_echo) with the flags build_ffi.py uses, into
 * build/bench/c_echo. The options are examples/echo_server.py's: messages up to 64 MiB by
 * default, write_limit max(4 x max-size, 64 MiB), the other limits pyws's defaults. A request
 * that is not a WebSocket upgrade gets a short text page. SIGTERM or SIGINT stops it.
 *
 * PYWS_C_ECHO_SPIN_NS=N in the environment makes it spin N ns before each echo: a stand-in for
 * the work a driver does between the poll and the send (docs/performance.md uses it to measure
 * what a microsecond there costs a ping-pong round trip).
 */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pyws.h"

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static const char *impl_name(int impl)
{
    switch (impl) {
    case PYWS_IMPL_SCALAR: return "scalar";
    case PYWS_IMPL_SSE2: return "sse2";
    case PYWS_IMPL_AVX2: return "avx2";
    case PYWS_IMPL_NEON: return "neon";
    case PYWS_IMPL_SSE4: return "sse4";
    case PYWS_IMPL_AVX512: return "avx512";
    default: return "?";
    }
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *end || s[0] == '-')
        return -1;
    *out = (uint64_t)v;
    return 0;
}

static void usage(const char *argv0)
{
    fprintf(stderr, "usage: %s [--host HOST] [--port PORT] [--max-size BYTES]\n", argv0);
    exit(2);
}

static long spin_ns; /* PYWS_C_ECHO_SPIN_NS */

static void spin(void)
{
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    do
        clock_gettime(CLOCK_MONOTONIC, &b);
    while ((b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec) < spin_ns);
}

/* One batch: upgrade WebSocket requests, echo messages, answer plain HTTP. */
static void handle(pyws_loop *loop, const pyws_event *evs, int n)
{
    static const char page[] = "pyws C echo server: connect with a WebSocket client\n";
    char head[160];
    for (int i = 0; i < n; i++) {
        const pyws_event *ev = &evs[i];
        switch (ev->type) {
        case PYWS_EV_WS_MSG:
            if (spin_ns > 0)
                spin();
            /* PYWS_ERR_CLOSED / PYWS_ERR_LIMIT: the core is closing it already */
            (void)pyws_send(loop, ev->id, ev->opcode, ev->data, ev->len, PYWS_SEND_FIN);
            break;
        case PYWS_EV_HTTP_MSG:
            if (ev->code) { /* a valid upgrade request */
                if (pyws_ws_upgrade(loop, ev->id, NULL, NULL) < 0)
                    fprintf(stderr, "c_echo: upgrade failed: %s\n", pyws_last_error(loop));
                break;
            }
            {
                int hn = snprintf(head, sizeof head,
                                  "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8"
                                  "\r\nContent-Length: %zu\r\n\r\n", sizeof page - 1);
                if (hn > 0 && (size_t)hn < sizeof head &&
                    pyws_send_raw(loop, ev->id, (const uint8_t *)head, (size_t)hn) == PYWS_OK)
                    (void)pyws_send_raw(loop, ev->id, (const uint8_t *)page, sizeof page - 1);
            }
            break;
        case PYWS_EV_ERROR:
            if (ev->len)
                fprintf(stderr, "c_echo: %.*s\n", (int)(ev->len > 300 ? 300 : ev->len),
                        (const char *)ev->data);
            break;
        default: /* accept, open, close, drain, timers: nothing to do */
            break;
        }
    }
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    uint64_t port = 9001, max_size = 64u << 20;
    const char *spin_env = getenv("PYWS_C_ECHO_SPIN_NS");
    if (spin_env)
        spin_ns = atol(spin_env);
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            usage(argv[0]);
        if (!strcmp(argv[i], "--host"))
            host = argv[++i];
        else if (!strcmp(argv[i], "--port")) {
            if (parse_u64(argv[++i], &port) < 0 || port > 65535)
                usage(argv[0]);
        } else if (!strcmp(argv[i], "--max-size")) {
            if (parse_u64(argv[++i], &max_size) < 0 || max_size == 0)
                usage(argv[0]);
        } else
            usage(argv[0]);
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    pyws_loop *loop = pyws_loop_new();
    if (!loop) {
        fprintf(stderr, "c_echo: cannot create the event loop\n");
        return 1;
    }
    pyws_opts opts;
    pyws_opts_default(&opts);
    opts.max_message_size = max_size;
    uint64_t limit = max_size > UINT64_MAX / 4 ? UINT64_MAX : 4 * max_size;
    opts.write_limit = limit > (64u << 20) ? limit : (64u << 20);
    uint64_t lid;
    if (pyws_listen(loop, host, (int)port, &opts, &lid) < 0) {
        fprintf(stderr, "c_echo: cannot listen on %s:%d: %s\n", host, (int)port,
                pyws_last_error(loop));
        pyws_loop_free(loop);
        return 1;
    }
    printf("echo server on ws://%s:%d/ (%s, C engine without Python, UTF-8 kernel %s", host,
           pyws_local_port(loop, lid), pyws_backend(), impl_name(pyws_impl_best()));
    if (spin_ns > 0)
        printf(", spinning %ld ns before each echo", spin_ns);
    printf(")\n");
    fflush(stdout);

    int rc = 0;
    while (!stop) {
        pyws_event *evs;
        int n = pyws_poll(loop, 200, &evs);
        if (n < 0) {
            if (stop) /* the signal interrupted the wait */
                break;
            fprintf(stderr, "c_echo: %s\n", pyws_last_error(loop));
            rc = 1;
            break;
        }
        handle(loop, evs, n);
    }
    pyws_loop_free(loop);
    return rc;
}
