/*
 * loadgen.c — WebSocket load client for the pyws benchmarks: echo and broadcast fan-out.
 *
 * Plain C99 + Linux epoll, single-threaded; OpenSSL (libssl, libcrypto) for --tls only:
 *
 *     cc -O2 -o loadgen bench/loadgen.c -lssl -lcrypto
 *     cc -O2 -DLOADGEN_NO_TLS -o loadgen bench/loadgen.c      (no OpenSSL: --tls refused)
 *     ./loadgen --port 9001 [-c 64] [-k 16] [-s 64] [-d 3] [-w 0.5] [--text] [--pid SERVER_PID]
 *     ./loadgen --port 9001 --mixed ...      (text of mixed-script UTF-8 instead of ASCII)
 *     ./loadgen --port 9001 --tls [--ca CA.pem] [-c 64] [-k 16] [-s 64] ...    (wss://)
 *     ./loadgen --port 9001 --broadcast [-c 500] [-k 16] [-s 64] [-d 3] [-w 0.5] [--pid PID]
 *
 * Always connects to 127.0.0.1 (there is no host option). Connections are opened at most
 * --connect-window at a time (default 64: a listen backlog of 100, asyncio's default, is never
 * overrun); each does the opening handshake (checking the 101 status and Sec-WebSocket-Accept).
 *
 * Echo mode (default): keeps -k masked messages of -s bytes (binary, or text with --text) in
 * flight on each of -c connections: every echo received is checked (opcode, length, payload
 * bytes) and immediately replaced by a new message. Echoes come back in order on a
 * connection, so a ring of -k send timestamps per connection gives each message's round-trip
 * time (send -> echo received). Payloads: binary and --text are the ASCII letters a..z over
 * and over; --mixed (implies --text) is mixed-script UTF-8, the sentence in MIXED_TEXT below
 * (Latin, accented Latin, Greek, Cyrillic, CJK, emoji: 1- to 4-byte sequences) over and over,
 * cut at a character boundary and padded with ASCII spaces to exactly -s bytes, so a server
 * that validates UTF-8 sees every sequence length. -c 1 -k 1 is a ping-pong: one message in
 * flight on one connection, the latency of a round trip.
 *
 * Cheap at large sizes, so that the server is what is measured: frames of 16 KiB and more are
 * never copied per message (each connection counts the frames it owes and writes them
 * straight from the one pre-masked frame with sendmsg, or SSL_write; pongs and the close frame
 * go between whole frames), and an echo is checked as it arrives: the frame head once, then
 * each chunk read (up to 256 KiB) compared with the expected bytes while it is in cache and
 * dropped, the round trip taken when its last byte is in. The payloads repeat (the alphabet,
 * MIXED_TEXT), so the compare reads the expected bytes from the first period + one read of
 * the payload (in cache), not from all of it.
 *
 * Broadcast mode (--broadcast): -c subscriber connections that only listen, plus one publisher
 * connection. The server under test must send every text message starting with "B:" unchanged
 * to ALL its connected clients, the sender included. The publisher sends text messages of -s
 * bytes (at least 36)
 *
 *     "B:" <seq: 16 hex digits> ":" <send time, ns: 16 hex digits> ":" <filler>
 *
 * and keeps -k of them in flight: its own copy coming back is the ack that lets it send the
 * next one. Every subscriber checks each message (text, length, prefix, filler) and that the
 * sequence numbers arrive exactly once and in order (0, 1, 2, ...); a delivery's latency is
 * receive time minus the send time carried in the message (same clock: same process). After
 * the measurement the publisher stops and the client waits (at most --drain-timeout s) until
 * every subscriber has received every message published; a subscriber missing any fails the
 * run (exit 5). With --port2 P2 every second subscriber connects to 127.0.0.1:P2 instead (two
 * servers sharing their topics through a broker: the publisher's messages must reach the other
 * server's subscribers too).
 *
 * TLS (--tls, echo mode only): wss://127.0.0.1:P/. Each connection does a non-blocking
 * SSL_connect driven by epoll (want-read / want-write), then the same WebSocket handshake and
 * echo protocol over SSL_read / SSL_write. Everything queued on a connection is handed to
 * SSL_write in one call (a flush of 16 small messages is one TLS record; messages of 16 KiB and
 * more go from the frame itself, the rest of one frame per call); reads use OpenSSL's
 * read-ahead with a 128 KiB buffer (one read() for many records). Without --ca the
 * server's certificate is NOT verified (a load client on 127.0.0.1: verification is no part of
 * what is measured); with --ca FILE the chain is checked against FILE and the certificate must
 * be for IP 127.0.0.1. Either way it only costs at the handshake, before the measurement. The
 * JSON says which protocol and cipher were negotiated ("tls") and whether it was verified.
 *
 * Phases: connect + [TLS handshake] + handshake (all connections, at most --connect-timeout s) -> warm-up (-w s,
 * not counted) -> measurement (-d s) -> [broadcast: drain] -> close (a close frame on each
 * connection, at most 2 s for the answers). The whole run is bounded: a SIGALRM backstop ends
 * the process if the phases somehow overrun, and a run where nothing arrives for --stall s
 * fails.
 *
 * Prints one JSON object on stdout. Echo: messages/s, MB/s (echoed payload bytes per second,
 * 1 MB = 10^6 bytes), latency percentiles in microseconds. Broadcast: deliveries/s (messages
 * received by all subscribers together), published/s, MB/s delivered, delivery latency
 * percentiles (publish-send -> received by a subscriber) and the publisher's own round trip
 * (send -> its copy back). Both: the CPU used during the measurement by this client and (with
 * --pid) by the server, in % of one core.
 *
 * Exit status: 0 ok; 2 protocol error (bad handshake, bad frame, wrong echo, a broadcast
 * message lost, duplicated or out of order, server closed the connection); 3 connect/socket
 * error; 4 timeout or stall; 5 broadcast incomplete after the drain; 1 usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifndef LOADGEN_NO_TLS
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#endif

#define EXIT_USAGE 1
#define EXIT_PROTO 2
#define EXIT_CONN 3
#define EXIT_TIMEOUT 4
#define EXIT_INCOMPLETE 5

/* RFC 6455 §1.3's sample key and its accept value. */
static const char WS_KEY[] = "dGhlIHNhbXBsZSBub25jZQ==";
static const char WS_ACCEPT[] = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
static const uint8_t MASK_KEY[4] = {0x37, 0xfa, 0x21, 0x3d};

/* ------------------------------------------------------------------ utilities */

static void die(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(code);
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

typedef struct {
    uint8_t *p;
    size_t off;  /* first unconsumed byte */
    size_t len;  /* end of data */
    size_t cap;
} buf_t;

static void buf_reserve(buf_t *b, size_t extra) {
    if (b->off > 0 && (b->off == b->len || b->len + extra > b->cap)) {
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
    if (b->len + extra > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + extra) cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) die(EXIT_CONN, "out of memory");
        b->p = p;
        b->cap = cap;
    }
}

static void buf_append(buf_t *b, const void *data, size_t n) {
    buf_reserve(b, n);
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

/* ------------------------------------------------------------------ latency histogram */
/* Log-linear buckets over nanoseconds: exact below 128 ns, then 64 sub-buckets per power of
 * two (relative error < 1.6%). */
#define SUB_BITS 6
#define SUB (1 << SUB_BITS)
#define NBUCKETS (2 * SUB + (64 - SUB_BITS - 1) * SUB)

typedef struct {
    uint64_t b[NBUCKETS];
    uint64_t count, sum_ns, max_ns;
} hist_t;

static hist_t g_hist;      /* echo round trips; broadcast: publish -> subscriber delivery */
static hist_t g_ack_hist;  /* broadcast: publisher send -> its own copy back */

static int hist_index(uint64_t v) {
    if (v < 2 * SUB) return (int)v;
    int b = 63 - __builtin_clzll(v);
    int shift = b - SUB_BITS;
    return (int)(2 * SUB + (uint64_t)(b - SUB_BITS - 1) * SUB + ((v >> shift) - SUB));
}

static double hist_value(int idx) {
    if (idx < 2 * SUB) return (double)idx;
    int k = idx - 2 * SUB;
    int b = k / SUB + SUB_BITS + 1;
    uint64_t m = (uint64_t)(k % SUB + SUB);
    int shift = b - SUB_BITS;
    double lo = (double)(m << shift), hi = (double)((m + 1) << shift);
    return (lo + hi) / 2.0;
}

static void hist_add(hist_t *h, uint64_t v) {
    h->b[hist_index(v)]++;
    h->count++;
    h->sum_ns += v;
    if (v > h->max_ns) h->max_ns = v;
}

static double hist_pct_us(const hist_t *h, double q) {
    if (h->count == 0) return 0.0;
    uint64_t target = (uint64_t)(q * (double)h->count + 0.999999);
    if (target < 1) target = 1;
    uint64_t cum = 0;
    for (int i = 0; i < NBUCKETS; i++) {
        cum += h->b[i];
        if (cum >= target) {
            double v = hist_value(i);  /* bucket midpoint, but never above the true max */
            return (v > (double)h->max_ns ? (double)h->max_ns : v) / 1000.0;
        }
    }
    return (double)h->max_ns / 1000.0;
}

static double hist_mean_us(const hist_t *h) {
    return h->count ? (double)h->sum_ns / (double)h->count / 1000.0 : 0.0;
}

/* ------------------------------------------------------------------ connections */

enum { ST_CONNECTING, ST_TLS, ST_HANDSHAKE, ST_OPEN, ST_CLOSING, ST_DONE };
enum { PH_CONNECT, PH_WARMUP, PH_MEASURE, PH_DRAIN, PH_CLOSE };
enum { ROLE_ECHO, ROLE_SUB, ROLE_PUB };

#ifdef LOADGEN_NO_TLS
typedef struct loadgen_no_ssl SSL;  /* never allocated: --tls is refused */
#endif

typedef struct {
    int fd;
    int state;
    int want_out;       /* EPOLLOUT registered */
    int read_wants_out; /* TLS: SSL_read asked for writability; retry the read on EPOLLOUT */
    SSL *ssl;           /* --tls: this connection's OpenSSL state */
    buf_t in, out;
    uint64_t *ring;     /* echo: send timestamps of the in-flight messages, oldest at head */
    unsigned head, count;  /* echo and publisher: messages in flight */
    int role;
    uint64_t next_seq;  /* broadcast: the sequence number expected next (publisher: next ack) */
    /* echo with large frames (g_direct): frames are written straight from g_frame, never
     * copied. `owed` whole frames are still to be written, the first of them from byte `foff`
     * on; c->out holds only control frames and the upgrade request, written between whole
     * data frames (an iovec: [rest of the current frame] [c->out] [owed frames]). */
    uint64_t owed;
    size_t foff;
    int tls_pend;       /* TLS: what the last SSL_write that wanted to write was given (SEG_) */
    /* echo, receiving: the payload of the current data frame is checked as it arrives
     * against g_payload[rx_pos..] and dropped; rx_left bytes of it are still to come */
    uint64_t rx_left;
    size_t rx_pos;
} conn_t;

enum { SEG_NONE, SEG_OUT, SEG_FRAME };

static int g_port, g_conns = 64, g_inflight = 16, g_opcode = 2, g_pid = 0;
static int g_bcast, g_nconn;          /* broadcast mode; connections in all (+1: publisher) */
static int g_window = 64;             /* connections connecting/handshaking at once */
static size_t g_size = 64;
static double g_duration = 3.0, g_warmup = 0.5, g_connect_timeout = 10.0, g_stall = 5.0;
static double g_drain_timeout = 5.0;
static int g_epfd, g_phase = PH_CONNECT;
static conn_t *g_c, *g_pub;
static uint8_t *g_frame, *g_payload;  /* the masked frame we send; the payload we expect back */
static int g_mixed;                     /* --mixed: mixed-script UTF-8 text payload */
/* --mixed's text, repeated: 1-byte (ASCII), 2-byte (é, Greek, Cyrillic), 3-byte (CJK, €) and
 * 4-byte (emoji) UTF-8 sequences */
static const char MIXED_TEXT[] =
    "Hello, caf\xc3\xa9 \xce\xba\xce\xb1\xce\xbb\xce\xb7\xce\xbc\xce\xad\xcf\x81\xce\xb1 "
    "\xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82 \xe4\xbd\xa0\xe5\xa5\xbd\xe4\xb8\x96"
    "\xe7\x95\x8c \xe2\x82\xac" "5 \xf0\x9f\x98\x80\xf0\x9f\x8c\x8d! ";

/* Fill p[0..n) with MIXED_TEXT repeated, never cutting a UTF-8 sequence: spaces pad the end. */
static void fill_mixed(uint8_t *p, size_t n) {
    const size_t tl = sizeof MIXED_TEXT - 1;
    size_t i = 0, t = 0;
    while (i < n) {
        uint8_t b = (uint8_t)MIXED_TEXT[t];
        size_t seq = b < 0x80 ? 1 : b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : 2;
        if (i + seq > n) break;
        memcpy(p + i, MIXED_TEXT + t, seq);
        i += seq;
        t = (t + seq) % tl;
    }
    while (i < n) p[i++] = ' ';
}
static size_t g_frame_len, g_hdr_len; /* g_hdr_len: frame header + mask key */
/* Echo frames of at least DIRECT_MIN bytes are written from g_frame (no copy); smaller ones
 * are copied into c->out, so that many of them go out in one send (one TLS record). */
#ifndef DIRECT_MIN
#define DIRECT_MIN 16384
#endif
static int g_direct;
/* ... and are read RECV_DIRECT bytes at a time (fewer recv calls, each chunk checked while it
 * is still in cache) */
#ifndef RECV_DIRECT
#define RECV_DIRECT 262144
#endif
/* g_payload repeats with period g_period (the alphabet, MIXED_TEXT) up to g_per_end (the end,
 * or --mixed's padding): an echo's bytes there are compared with the first g_period + (one
 * read) bytes of g_payload, which stay in cache, instead of with all of it. */
static size_t g_period = 1, g_per_end;

/* p[0..k) == g_payload[pos..pos+k)? (pos + k <= g_size) */
static int payload_matches(const uint8_t *p, size_t pos, size_t k) {
    if (pos < g_per_end) {
        size_t m = g_per_end - pos < k ? g_per_end - pos : k;
        /* g_payload[j] == g_payload[j % g_period] for every j < g_per_end, and
         * pos % g_period + m <= pos + m <= g_per_end: in bounds */
        if (memcmp(p, g_payload + pos % g_period, m) != 0) return 0;
        p += m;
        pos += m;
        k -= m;
    }
    return k == 0 || memcmp(p, g_payload + pos, k) == 0;
}
static uint64_t g_now, g_last_rx;
static uint64_t m_msgs, m_bytes;      /* counted during the measurement only */
static uint64_t g_published, m_published, m_acks, g_delivered; /* broadcast */
static int g_open, g_done, g_started;
static struct sockaddr_in g_sa, g_sa2;
static int g_port2;  /* broadcast: odd subscribers connect here (0: all to g_port) */

#define BC_HEAD 36  /* "B:" 16 hex ":" 16 hex ":" */

/* ------------------------------------------------------------------ TLS, part 1 */

static int g_tls;                  /* --tls: wss:// */
static const char *g_ca;           /* --ca FILE: verify the chain and IP 127.0.0.1; else none */
static char g_tls_info[128];       /* protocol + cipher negotiated (first connection) */

#ifndef LOADGEN_NO_TLS
static SSL_CTX *g_ssl_ctx;

/* OpenSSL's first queued error, as text (and the queue cleared). */
static const char *ssl_reason(void) {
    static char buf[256];
    unsigned long e = ERR_get_error();
    ERR_clear_error();
    if (!e) return "no OpenSSL error queued (TCP EOF or reset)";
    ERR_error_string_n(e, buf, sizeof buf);
    return buf;
}
#endif

static void ep_mod(conn_t *c, int out) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN | (out ? EPOLLOUT : 0);
    ev.data.ptr = c;
    if (epoll_ctl(g_epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) die(EXIT_CONN, "epoll_ctl: %s", strerror(errno));
    c->want_out = out;
}

static void conn_finish(conn_t *c) {
    if (c->state == ST_DONE) return;
#ifndef LOADGEN_NO_TLS
    if (c->ssl) {
        if (g_phase == PH_CLOSE) {  /* a clean end: close_notify, best effort, not waited for */
            ERR_clear_error();
            SSL_shutdown(c->ssl);
            ERR_clear_error();
        }
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
#endif
    epoll_ctl(g_epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->state = ST_DONE;
    g_done++;
}

static int has_output(const conn_t *c) { return c->out.off < c->out.len || c->owed > 0; }

/* n bytes of the iovec [rest of the current frame] [c->out] [owed frames] were written. */
static void consume_output(conn_t *c, size_t n) {
    if (c->foff > 0) {
        size_t k = g_frame_len - c->foff;
        if (n < k) { c->foff += n; return; }
        n -= k;
        c->foff = 0;
        c->owed--;
    }
    size_t k = c->out.len - c->out.off;
    if (n < k) { c->out.off += n; return; }
    n -= k;
    c->out.off = c->out.len = 0;
    if (n == 0) return;
    uint64_t whole = n / g_frame_len;
    if (whole > c->owed || (whole == c->owed && n % g_frame_len))
        die(EXIT_CONN, "internal: wrote more than was queued");
    c->owed -= whole;
    c->foff = n % g_frame_len;
}

/* Write what is queued; register for EPOLLOUT while something is left. With TLS, everything
 * queued in c->out goes to one SSL_write (OpenSSL cuts it into records of at most 16 KiB; with
 * SSL_MODE_ENABLE_PARTIAL_WRITE each call returns after a record, hence the loop); a direct
 * frame is given to SSL_write from g_frame, the rest of one frame per call. Without TLS, one
 * sendmsg takes c->out and the direct frames together. */
static void conn_flush(conn_t *c) {
    while (has_output(c)) {
#ifndef LOADGEN_NO_TLS
        if (c->ssl) {
            /* the segment: the rest of a frame begun, else c->out, else the next frame; a call
             * that wanted to write is repeated with the same bytes (OpenSSL's rule) */
            int seg = c->tls_pend ? c->tls_pend
                      : c->foff > 0 || c->out.off == c->out.len ? SEG_FRAME : SEG_OUT;
            const uint8_t *p = seg == SEG_OUT ? c->out.p + c->out.off : g_frame + c->foff;
            size_t left = seg == SEG_OUT ? c->out.len - c->out.off : g_frame_len - c->foff;
            ERR_clear_error();
            int r = SSL_write(c->ssl, p, left > (1u << 30) ? (1 << 30) : (int)left);
            if (r > 0) {
                c->tls_pend = SEG_NONE;
                if (seg == SEG_OUT) {
                    c->out.off += (size_t)r;
                    if (c->out.off == c->out.len) c->out.off = c->out.len = 0;
                } else if ((c->foff += (size_t)r) == g_frame_len) {
                    c->foff = 0;
                    c->owed--;
                }
                continue;
            }
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_WRITE) {
                c->tls_pend = seg;
                if (!c->want_out) ep_mod(c, 1);
                return;
            }
            if (e == SSL_ERROR_WANT_READ) {  /* the peer's bytes first: EPOLLIN retries */
                c->tls_pend = seg;
                if (c->want_out && !c->read_wants_out) ep_mod(c, 0);
                return;
            }
            if (g_phase == PH_CLOSE) { conn_finish(c); return; }
            die(EXIT_PROTO, "connection %ld: SSL_write failed: %s", (long)(c - g_c),
                ssl_reason());
        }
#endif
        ssize_t n;
        if (c->owed == 0) {
            n = send(c->fd, c->out.p + c->out.off, c->out.len - c->out.off, MSG_NOSIGNAL);
        } else {
            struct iovec iov[64];  /* [rest of the current frame] [c->out] [owed frames] */
            int k = 0;
            uint64_t whole = c->owed;
            if (c->foff > 0) {
                iov[k].iov_base = g_frame + c->foff;
                iov[k++].iov_len = g_frame_len - c->foff;
                whole--;
            }
            if (c->out.off < c->out.len) {
                iov[k].iov_base = c->out.p + c->out.off;
                iov[k++].iov_len = c->out.len - c->out.off;
            }
            for (; whole > 0 && k < 64; whole--) {
                iov[k].iov_base = g_frame;
                iov[k++].iov_len = g_frame_len;
            }
            struct msghdr mh;
            memset(&mh, 0, sizeof mh);
            mh.msg_iov = iov;
            mh.msg_iovlen = (size_t)k;
            n = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
        }
        if (n > 0) {
            consume_output(c, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->want_out) ep_mod(c, 1);
            return;
        }
        if (g_phase == PH_CLOSE) { conn_finish(c); return; }
        die(EXIT_PROTO, "connection %ld: send failed: %s", (long)(c - g_c),
            n < 0 ? strerror(errno) : "0 bytes");
    }
    c->out.off = c->out.len = 0;
    if (c->want_out && !c->read_wants_out) ep_mod(c, 0);
}

static void send_message(conn_t *c) {
    if (c->count >= (unsigned)g_inflight) die(EXIT_PROTO, "internal: ring overflow");
    c->ring[(c->head + c->count) % (unsigned)g_inflight] = g_now;
    c->count++;
    if (g_direct) c->owed++;  /* written from g_frame by conn_flush */
    else buf_append(&c->out, g_frame, g_frame_len);
}

/* The publisher's next "B:<seq>:<time>:<filler>" text message: the template frame with its
 * first BC_HEAD payload bytes replaced (and masked). */
static void send_publish(conn_t *c) {
    if (c->count >= (unsigned)g_inflight) die(EXIT_PROTO, "internal: publisher overflow");
    char head[BC_HEAD + 1];
    snprintf(head, sizeof head, "B:%016llx:%016llx:", (unsigned long long)g_published,
             (unsigned long long)g_now);
    buf_reserve(&c->out, g_frame_len);
    uint8_t *f = c->out.p + c->out.len;
    memcpy(f, g_frame, g_frame_len);
    for (int i = 0; i < BC_HEAD; i++) f[g_hdr_len + i] = (uint8_t)head[i] ^ MASK_KEY[i & 3];
    c->out.len += g_frame_len;
    c->count++;
    g_published++;
    if (g_phase == PH_MEASURE) m_published++;
}

static int hexval(uint8_t ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    return -1;
}

static uint64_t parse_hex16(const uint8_t *p, long idx) {
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        int d = hexval(p[i]);
        if (d < 0) die(EXIT_PROTO, "connection %ld: broadcast message with a bad header", idx);
        v = (v << 4) | (uint64_t)d;
    }
    return v;
}

/* A broadcast message received by subscriber or publisher c: check it, and that it is the next
 * one in sequence. Returns its send time. */
static uint64_t check_broadcast(conn_t *c, long idx, int op, int fin, const uint8_t *pl,
                                uint64_t len) {
    const char *who = c->role == ROLE_PUB ? "publisher" : "subscriber";
    if (!fin) die(EXIT_PROTO, "connection %ld (%s): fragmented message", idx, who);
    if (op != 1) die(EXIT_PROTO, "connection %ld (%s): opcode %d, expected text", idx, who, op);
    if (len != g_size || pl[0] != 'B' || pl[1] != ':' || pl[18] != ':' || pl[35] != ':' ||
        memcmp(pl + BC_HEAD, g_payload + BC_HEAD, g_size - BC_HEAD) != 0)
        die(EXIT_PROTO, "connection %ld (%s): message differs from the one published "
            "(%llu bytes, sent %zu)", idx, who, (unsigned long long)len, g_size);
    uint64_t seq = parse_hex16(pl + 2, idx), sent = parse_hex16(pl + 19, idx);
    if (seq != c->next_seq)
        die(EXIT_PROTO, "connection %ld (%s): received message #%llu, expected #%llu "
            "(lost, duplicated or out of order)", idx, who, (unsigned long long)seq,
            (unsigned long long)c->next_seq);
    if (seq >= g_published)
        die(EXIT_PROTO, "connection %ld (%s): message #%llu was never published", idx, who,
            (unsigned long long)seq);
    c->next_seq++;
    return sent;
}

/* A masked client frame with payload p[0..n). */
static void send_control(conn_t *c, int opcode, const uint8_t *p, size_t n) {
    uint8_t hdr[6 + 125];
    if (n > 125) n = 125;
    hdr[0] = (uint8_t)(0x80 | opcode);
    hdr[1] = (uint8_t)(0x80 | n);
    memcpy(hdr + 2, MASK_KEY, 4);
    for (size_t i = 0; i < n; i++) hdr[6 + i] = p[i] ^ MASK_KEY[i & 3];
    buf_append(&c->out, hdr, 6 + n);
}

static void start_conn(conn_t *c) {
    for (int i = 0; i < g_inflight; i++) {
        if (c->role == ROLE_PUB) send_publish(c);
        else send_message(c);
    }
    conn_flush(c);
}

/* Parse the 101 response once the whole head is in. Returns 1 when done, 0 for more. */
static int parse_handshake(conn_t *c) {
    uint8_t *p = c->in.p + c->in.off;
    size_t n = c->in.len - c->in.off;
    uint8_t *end = memmem(p, n, "\r\n\r\n", 4);
    if (!end) {
        if (n > 16384) die(EXIT_PROTO, "handshake response head too large");
        return 0;
    }
    size_t head_len = (size_t)(end - p) + 4;
    char *head = malloc(head_len + 1);
    if (!head) die(EXIT_CONN, "out of memory");
    memcpy(head, p, head_len);
    head[head_len] = 0;
    if (strncmp(head, "HTTP/1.1 101", 12) != 0) {
        char *eol = strstr(head, "\r\n");
        if (eol) *eol = 0;
        die(EXIT_PROTO, "handshake refused: %s", head);
    }
    int accept_ok = 0, upgrade_ok = 0;
    for (char *line = strstr(head, "\r\n"); line && line[2]; line = strstr(line + 2, "\r\n")) {
        char *l = line + 2;
        char *colon = strchr(l, ':');
        char *eol = strstr(l, "\r\n");
        if (!colon || !eol || colon > eol) continue;
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t') v++;
        size_t vlen = (size_t)(eol - v);
        while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t')) vlen--;
        size_t nlen = (size_t)(colon - l);
        if (nlen == 20 && strncasecmp(l, "Sec-WebSocket-Accept", 20) == 0)
            accept_ok = vlen == strlen(WS_ACCEPT) && memcmp(v, WS_ACCEPT, vlen) == 0;
        else if (nlen == 7 && strncasecmp(l, "Upgrade", 7) == 0)
            upgrade_ok = vlen == 9 && strncasecmp(v, "websocket", 9) == 0;
        else if (nlen == 24 && strncasecmp(l, "Sec-WebSocket-Extensions", 24) == 0 && vlen)
            die(EXIT_PROTO, "server negotiated an extension we did not offer");
    }
    free(head);
    if (!accept_ok) die(EXIT_PROTO, "handshake: missing or wrong Sec-WebSocket-Accept");
    if (!upgrade_ok) die(EXIT_PROTO, "handshake: missing Upgrade: websocket");
    c->in.off += head_len;
    c->state = ST_OPEN;
    g_open++;
    return 1;
}

/* An echo received whole (and checked): its round trip, and the next message. */
static void echo_done(conn_t *c) {
    uint64_t sent = c->ring[c->head];
    c->head = (c->head + 1) % (unsigned)g_inflight;
    c->count--;
    g_last_rx = g_now;
    if (g_phase == PH_MEASURE) {
        hist_add(&g_hist, g_now - sent);
        m_msgs++;
        m_bytes += g_size;
    }
    if (g_phase == PH_WARMUP || g_phase == PH_MEASURE) send_message(c);
}

/* Parse the frames in c->in: control and broadcast frames once complete; an echo's payload
 * piece by piece as it arrives (compared with g_payload while it is in cache, then dropped),
 * so that c->in never holds more than a frame head and one read. */
static void parse_frames(conn_t *c) {
    long idx = (long)(c - g_c);
    for (;;) {
        uint8_t *p = c->in.p + c->in.off;
        size_t n = c->in.len - c->in.off;
        if (c->rx_left > 0) {  /* inside an echo's payload */
            if (n == 0) break;
            size_t k = n < c->rx_left ? n : (size_t)c->rx_left;
            /* once closing, the echoes still in flight are dropped unchecked (their length was
             * then never compared with g_size either) */
            if (c->state != ST_CLOSING && !payload_matches(p, c->rx_pos, k)) {
                size_t at = c->rx_pos;
                while (p[at - c->rx_pos] == g_payload[at]) at++;
                die(EXIT_PROTO, "connection %ld: echo differs from the message sent "
                    "(%zu bytes, sent %zu; first difference at byte %zu)", idx, g_size, g_size,
                    at);
            }
            c->in.off += k;
            c->rx_pos += k;
            c->rx_left -= k;
            if (c->rx_left == 0 && c->state != ST_CLOSING) echo_done(c);
            continue;
        }
        if (n < 2) break;
        uint8_t b0 = p[0], b1 = p[1];
        if (b0 & 0x70) die(EXIT_PROTO, "connection %ld: RSV bits set (0x%02x)", idx, b0);
        if (b1 & 0x80) die(EXIT_PROTO, "connection %ld: server frame is masked", idx);
        int fin = b0 & 0x80, op = b0 & 0x0f;
        uint64_t len = b1 & 0x7f;
        size_t hl = 2;
        if (len == 126) {
            if (n < 4) break;
            len = ((uint64_t)p[2] << 8) | p[3];
            hl = 4;
        } else if (len == 127) {
            if (n < 10) break;
            len = 0;
            for (int i = 0; i < 8; i++) len = (len << 8) | p[2 + i];
            hl = 10;
            if (len >> 63) die(EXIT_PROTO, "connection %ld: 64-bit length with top bit set", idx);
        }
        if (len > (uint64_t)g_size + 1024 && len > 125)
            die(EXIT_PROTO, "connection %ld: frame of %llu bytes, expected %zu", idx,
                (unsigned long long)len, g_size);
        if ((op == 1 || op == 2) && c->role == ROLE_ECHO) {
            c->in.off += hl;
            if (c->state != ST_CLOSING) {  /* once closing: echoes still in flight, dropped */
                if (!fin) die(EXIT_PROTO, "connection %ld: fragmented echo (not supported)", idx);
                if (op != g_opcode)
                    die(EXIT_PROTO, "connection %ld: echo has opcode %d, sent %d", idx, op,
                        g_opcode);
                if (len != g_size)
                    die(EXIT_PROTO, "connection %ld: echo differs from the message sent "
                        "(%llu bytes, sent %zu)", idx, (unsigned long long)len, g_size);
                if (c->count == 0)
                    die(EXIT_PROTO, "connection %ld: echo with nothing in flight", idx);
            }
            c->rx_left = len;
            c->rx_pos = 0;
            if (len == 0 && c->state != ST_CLOSING) echo_done(c);
            continue;  /* the payload: above, as it arrives */
        }
        if (n < hl + len) {
            buf_reserve(&c->in, hl + (size_t)len);  /* room for the whole frame */
            break;
        }
        const uint8_t *pl = p + hl;
        c->in.off += hl + (size_t)len;
        if ((op == 1 || op == 2) && c->role != ROLE_ECHO) {
            if (c->state == ST_CLOSING) continue;
            uint64_t sent = check_broadcast(c, idx, op, fin, pl, len);
            g_last_rx = g_now;
            if (c->role == ROLE_SUB) {
                g_delivered++;
                if (g_phase == PH_MEASURE) {
                    hist_add(&g_hist, g_now - sent);
                    m_msgs++;
                    m_bytes += len;
                }
            } else {
                if (c->count == 0) die(EXIT_PROTO, "publisher: a copy with nothing in flight");
                c->count--;
                if (g_phase == PH_MEASURE) {
                    hist_add(&g_ack_hist, g_now - sent);
                    m_acks++;
                }
                if (g_phase == PH_WARMUP || g_phase == PH_MEASURE) send_publish(c);
            }
        } else if (op == 9) {
            if (len > 125 || !fin) die(EXIT_PROTO, "connection %ld: bad ping", idx);
            if (c->state == ST_OPEN) send_control(c, 10, pl, (size_t)len);
        } else if (op == 10) {
            /* unsolicited pong: ignore */
        } else if (op == 8) {
            if (c->state == ST_CLOSING) { conn_finish(c); return; }
            int code = len >= 2 ? (pl[0] << 8 | pl[1]) : 1005;
            die(EXIT_PROTO, "connection %ld: server closed the WebSocket (code %d)", idx, code);
        } else {
            die(EXIT_PROTO, "connection %ld: unexpected opcode %d", idx, op);
        }
    }
}

static void open_conn(int i);

/* Input appended to c->in: the 101 response, then frames. 0 when the connection is done. */
static int on_input(conn_t *c) {
    if (c->state == ST_HANDSHAKE) {
        if (!parse_handshake(c)) return 1;
        if (g_phase != PH_CONNECT) die(EXIT_PROTO, "internal: late handshake");
        if (g_started < g_nconn) open_conn(g_started++);  /* the connect window moves on */
    }
    parse_frames(c);
    return c->state != ST_DONE;
}

static void send_upgrade(conn_t *c) {
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\nUser-Agent: pyws-loadgen\r\n\r\n",
                     g_port, WS_KEY);
    c->state = ST_HANDSHAKE;
    buf_append(&c->out, req, (size_t)n);
    conn_flush(c);
}

/* ------------------------------------------------------------------ TLS, part 2 */

#ifndef LOADGEN_NO_TLS
static void tls_setup(void) {
    static const unsigned char alpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    g_ssl_ctx = SSL_CTX_new(TLS_client_method());
    if (!g_ssl_ctx) die(EXIT_CONN, "SSL_CTX_new: %s", ssl_reason());
    SSL_CTX_set_min_proto_version(g_ssl_ctx, TLS1_2_VERSION);
    /* the out buffer grows (realloc, compaction) between the retries of a write */
    SSL_CTX_set_mode(g_ssl_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_alpn_protos(g_ssl_ctx, alpn, sizeof alpn);
    /* read-ahead: one read() fetches many records (without it: two per record, header and
     * body). Safe here: reading goes on until OpenSSL wants the socket again. */
    SSL_CTX_set_read_ahead(g_ssl_ctx, 1);
    SSL_CTX_set_default_read_buffer_len(g_ssl_ctx, 128 * 1024);
    if (g_ca) {
        if (SSL_CTX_load_verify_locations(g_ssl_ctx, g_ca, NULL) != 1)
            die(EXIT_USAGE, "--ca %s: %s", g_ca, ssl_reason());
        SSL_CTX_set_verify(g_ssl_ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(g_ssl_ctx, SSL_VERIFY_NONE, NULL);  /* 127.0.0.1 load client */
    }
}

/* One step of the TLS handshake; when it is done, the WebSocket upgrade request. */
static void tls_step(conn_t *c) {
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        if (!g_tls_info[0])
            snprintf(g_tls_info, sizeof g_tls_info, "%s %s", SSL_get_version(c->ssl),
                     SSL_get_cipher_name(c->ssl));
        if (c->want_out) ep_mod(c, 0);
        send_upgrade(c);
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        if (c->want_out) ep_mod(c, 0);
        return;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        if (!c->want_out) ep_mod(c, 1);
        return;
    }
    long vr = SSL_get_verify_result(c->ssl);
    if (g_ca && vr != X509_V_OK)
        die(EXIT_PROTO, "connection %ld: TLS handshake: certificate verify failed: %s",
            (long)(c - g_c), X509_verify_cert_error_string(vr));
    die(EXIT_PROTO, "connection %ld: TLS handshake failed: %s", (long)(c - g_c), ssl_reason());
}

static void tls_start(conn_t *c) {
    SSL *ssl = SSL_new(g_ssl_ctx);
    if (!ssl || SSL_set_fd(ssl, c->fd) != 1) die(EXIT_CONN, "SSL_new: %s", ssl_reason());
    SSL_set_connect_state(ssl);
    if (g_ca && X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), "127.0.0.1") != 1)
        die(EXIT_CONN, "X509_VERIFY_PARAM_set1_ip_asc: %s", ssl_reason());
    c->ssl = ssl;
    c->state = ST_TLS;
    tls_step(c);
}

/* Read until OpenSSL wants more bytes from the socket: with level-triggered epoll nothing may
 * stay decrypted (or undecrypted) inside OpenSSL. It ends: the server only echoes what was
 * sent, and nothing is sent here until it is read. */
static void on_readable_tls(conn_t *c) {
    long idx = (long)(c - g_c);
    for (;;) {
        buf_reserve(&c->in, 16384 + 64);  /* a whole record */
        size_t room = c->in.cap - c->in.len;
        ERR_clear_error();
        int r = SSL_read(c->ssl, c->in.p + c->in.len, room > (1u << 30) ? (1 << 30) : (int)room);
        if (r > 0) {
            c->in.len += (size_t)r;
            if (!on_input(c)) return;
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ) break;
        if (e == SSL_ERROR_WANT_WRITE) {
            c->read_wants_out = 1;
            if (!c->want_out) ep_mod(c, 1);
            break;
        }
        if (c->state == ST_CLOSING) { conn_finish(c); return; }
        if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0))
            die(EXIT_PROTO, "connection %ld: server closed the TLS connection", idx);
        die(EXIT_PROTO, "connection %ld: SSL_read: %s", idx, ssl_reason());
    }
    if (c->state != ST_DONE && has_output(c)) conn_flush(c);
}
#else
static void tls_setup(void) {
    die(EXIT_USAGE, "--tls: this loadgen was built without OpenSSL (-DLOADGEN_NO_TLS)");
}
static void tls_step(conn_t *c) { (void)c; }
static void tls_start(conn_t *c) { (void)c; }
static void on_readable_tls(conn_t *c) { (void)c; }
#endif

static void on_readable(conn_t *c) {
    if (c->ssl) {
        on_readable_tls(c);
        return;
    }
    buf_reserve(&c->in, g_direct ? RECV_DIRECT : 65536);
    ssize_t n = recv(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
        if (c->state == ST_CLOSING) { conn_finish(c); return; }
        die(EXIT_PROTO, "connection %ld: recv: %s", (long)(c - g_c), strerror(errno));
    }
    if (n == 0) {
        if (c->state == ST_CLOSING) { conn_finish(c); return; }
        die(EXIT_PROTO, "connection %ld: server closed the TCP connection", (long)(c - g_c));
    }
    c->in.len += (size_t)n;
    if (!on_input(c)) return;
    if (has_output(c)) conn_flush(c);
}

static void on_connected(conn_t *c) {
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0) err = errno;
    if (err) die(EXIT_CONN, "connect to 127.0.0.1:%d: %s", g_port, strerror(err));
    if (g_tls) tls_start(c);
    else send_upgrade(c);
}

/* ------------------------------------------------------------------ CPU accounting */

static double self_cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* utime + stime of process `pid` in seconds, or -1. */
static double proc_cpu_s(int pid) {
    if (pid <= 0) return -1;
    char path[64], line[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = 0;
    char *p = strrchr(line, ')');
    if (!p) return -1;
    unsigned long long ut = 0, st = 0;
    /* fields after the command: 3 state ... 14 utime 15 stime */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* ------------------------------------------------------------------ main */

static void open_conn(int i) {
    conn_t *c = &g_c[i];
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) die(EXIT_CONN, "socket: %s", strerror(errno));
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->state = ST_CONNECTING;
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN | EPOLLOUT;
    ev.data.ptr = c;
    c->want_out = 1;
    if (epoll_ctl(g_epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        die(EXIT_CONN, "epoll_ctl: %s", strerror(errno));
    int second = g_port2 && c->role == ROLE_SUB && (i & 1);
    const struct sockaddr_in *sa = second ? &g_sa2 : &g_sa;
    if (connect(c->fd, (const struct sockaddr *)sa, sizeof *sa) < 0 && errno != EINPROGRESS)
        die(EXIT_CONN, "connect to 127.0.0.1:%d: %s", second ? g_port2 : g_port,
            strerror(errno));
}

static void begin_close(void) {
    g_phase = PH_CLOSE;
    static const uint8_t close_payload[2] = {0x03, 0xe8}; /* 1000 */
    for (int i = 0; i < g_nconn; i++) {
        conn_t *c = &g_c[i];
        if (c->state != ST_OPEN) continue;
        /* the close frame follows the frame being written; frames not begun are dropped */
        c->owed = c->foff > 0 || c->tls_pend == SEG_FRAME ? (c->owed > 0) : 0;
        send_control(c, 8, close_payload, 2);
        c->state = ST_CLOSING;
        conn_flush(c);
    }
}

/* After the drain timed out: which subscribers miss what. */
static void die_incomplete(void) {
    int short_subs = 0;
    long first = -1;
    uint64_t first_got = 0, min_got = UINT64_MAX;
    for (int i = 0; i < g_conns; i++) {
        if (g_c[i].next_seq != g_published) {
            if (first < 0) { first = i; first_got = g_c[i].next_seq; }
            short_subs++;
        }
        if (g_c[i].next_seq < min_got) min_got = g_c[i].next_seq;
    }
    die(EXIT_INCOMPLETE, "broadcast incomplete after %.1f s of drain: %llu published, "
        "%d of %d subscriber(s) short (e.g. #%ld got %llu; the fewest: %llu), publisher "
        "waits for %u own copies", g_drain_timeout, (unsigned long long)g_published,
        short_subs, g_conns, first, (unsigned long long)first_got,
        (unsigned long long)min_got, g_pub->count);
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen --port P [-c CONNS] [-k INFLIGHT] [-s SIZE] [-d SECONDS] "
            "[-w SECONDS] [--text | --mixed] [--pid SERVER_PID] [--connect-timeout S] [--stall S] "
            "[--connect-window N] [--tls [--ca CA.pem]]\n"
            "       loadgen --port P --broadcast [-c SUBSCRIBERS] [-k INFLIGHT] [-s SIZE>=36] "
            "[-d S] [-w S] [--drain-timeout S] [--pid SERVER_PID] [--port2 P2] ...\n"
            "Connects to ws://127.0.0.1:P/ (--tls: wss://127.0.0.1:P/, certificate not "
            "verified unless --ca) only.\n");
    exit(EXIT_USAGE);
}

int main(int argc, char **argv) {
    static const struct option opts[] = {
        {"port", required_argument, 0, 'p'},      {"conns", required_argument, 0, 'c'},
        {"inflight", required_argument, 0, 'k'},  {"size", required_argument, 0, 's'},
        {"duration", required_argument, 0, 'd'},  {"warmup", required_argument, 0, 'w'},
        {"text", no_argument, 0, 't'},            {"pid", required_argument, 0, 'P'},
        {"mixed", no_argument, 0, 'M'},
        {"connect-timeout", required_argument, 0, 'C'}, {"stall", required_argument, 0, 'S'},
        {"broadcast", no_argument, 0, 'B'},       {"drain-timeout", required_argument, 0, 'D'},
        {"connect-window", required_argument, 0, 'W'},
        {"tls", no_argument, 0, 'T'},             {"ca", required_argument, 0, 'A'},
        {"port2", required_argument, 0, '2'},
        {"help", no_argument, 0, 'h'},            {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "p:c:k:s:d:w:th", opts, NULL)) != -1) {
        switch (ch) {
        case 'p': g_port = atoi(optarg); break;
        case 'c': g_conns = atoi(optarg); break;
        case 'k': g_inflight = atoi(optarg); break;
        case 's': g_size = (size_t)strtoull(optarg, NULL, 10); break;
        case 'd': g_duration = atof(optarg); break;
        case 'w': g_warmup = atof(optarg); break;
        case 't': g_opcode = 1; break;
        case 'M': g_opcode = 1; g_mixed = 1; break;
        case 'P': g_pid = atoi(optarg); break;
        case 'C': g_connect_timeout = atof(optarg); break;
        case 'S': g_stall = atof(optarg); break;
        case 'B': g_bcast = 1; break;
        case '2': g_port2 = atoi(optarg); break;
        case 'D': g_drain_timeout = atof(optarg); break;
        case 'W': g_window = atoi(optarg); break;
        case 'T': g_tls = 1; break;
        case 'A': g_ca = optarg; g_tls = 1; break;
        default: usage();
        }
    }
#ifdef LOADGEN_NO_TLS
    if (g_tls) tls_setup();  /* refuses, before anything else is checked */
#endif
    if (g_port <= 0 || g_port > 65535) usage();
    if (g_port2 < 0 || g_port2 > 65535 || (g_port2 && !g_bcast)) usage();
    if (g_conns < 1 || g_conns > 10000) die(EXIT_USAGE, "-c must be 1..10000");
    if (g_inflight < 1 || g_inflight > 100000) die(EXIT_USAGE, "-k must be 1..100000");
    if (g_size > (64u << 20)) die(EXIT_USAGE, "-s must be at most 64 MiB");
    if (!(g_duration >= 0.1 && g_duration <= 600)) die(EXIT_USAGE, "-d must be 0.1..600 s");
    if (!(g_warmup >= 0 && g_warmup <= 60)) die(EXIT_USAGE, "-w must be 0..60 s");
    if (!(g_connect_timeout > 0 && g_connect_timeout <= 60)) die(EXIT_USAGE, "bad --connect-timeout");
    if (!(g_stall > 0 && g_stall <= 60)) die(EXIT_USAGE, "bad --stall");
    if (!(g_drain_timeout > 0 && g_drain_timeout <= 60)) die(EXIT_USAGE, "bad --drain-timeout");
    if (g_window < 1 || g_window > 10000) die(EXIT_USAGE, "--connect-window must be 1..10000");
    if (g_bcast) {
        if (g_size < BC_HEAD || g_size > 65535)
            die(EXIT_USAGE, "--broadcast: -s must be %d..65535", BC_HEAD);
        g_opcode = 1;  /* "B:..." text messages */
    }
    if (g_tls && g_bcast) die(EXIT_USAGE, "--tls is for the echo mode only");
    g_nconn = g_conns + (g_bcast ? 1 : 0);
    if (g_tls) tls_setup();

    /* Backstop: whatever happens, the process ends. */
    signal(SIGPIPE, SIG_IGN);
    alarm((unsigned)(g_connect_timeout + g_warmup + g_duration + (g_bcast ? g_drain_timeout : 0) +
                     2.0 + 10.0));

    /* The frame we send (masked) and the payload we expect back. */
    g_payload = malloc(g_size ? g_size : 1);
    size_t hl = g_size < 126 ? 2 : g_size < 65536 ? 4 : 10;
    g_hdr_len = hl + 4;
    g_frame_len = hl + 4 + g_size;
    g_frame = malloc(g_frame_len);
    if (!g_payload || !g_frame) die(EXIT_CONN, "out of memory");
    if (g_mixed && !g_bcast)
        fill_mixed(g_payload, g_size);
    else
        for (size_t i = 0; i < g_size; i++) g_payload[i] = (uint8_t)('a' + i % 26);
    g_period = g_mixed && !g_bcast ? sizeof MIXED_TEXT - 1 : 26;
    g_per_end = g_size < g_period ? g_size : g_period;  /* then checked, not assumed: */
    while (g_per_end < g_size && g_payload[g_per_end] == g_payload[g_per_end - g_period])
        g_per_end++;
    g_frame[0] = (uint8_t)(0x80 | g_opcode);
    if (hl == 2) {
        g_frame[1] = (uint8_t)(0x80 | g_size);
    } else if (hl == 4) {
        g_frame[1] = 0x80 | 126;
        g_frame[2] = (uint8_t)(g_size >> 8);
        g_frame[3] = (uint8_t)g_size;
    } else {
        g_frame[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++) g_frame[2 + i] = (uint8_t)((uint64_t)g_size >> (56 - 8 * i));
    }
    memcpy(g_frame + hl, MASK_KEY, 4);
    g_direct = !g_bcast && g_frame_len >= DIRECT_MIN;
    for (size_t i = 0; i < g_size; i++) g_frame[hl + 4 + i] = g_payload[i] ^ MASK_KEY[i & 3];

    g_epfd = epoll_create1(EPOLL_CLOEXEC);
    if (g_epfd < 0) die(EXIT_CONN, "epoll_create1: %s", strerror(errno));
    g_c = calloc((size_t)g_nconn, sizeof *g_c);
    if (!g_c) die(EXIT_CONN, "out of memory");

    memset(&g_sa, 0, sizeof g_sa);
    g_sa.sin_family = AF_INET;
    g_sa.sin_port = htons((uint16_t)g_port);
    g_sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);  /* 127.0.0.1, always */
    g_sa2 = g_sa;
    g_sa2.sin_port = htons((uint16_t)g_port2);

    for (int i = 0; i < g_nconn; i++) {
        g_c[i].ring = calloc((size_t)g_inflight, sizeof *g_c[i].ring);
        if (!g_c[i].ring) die(EXIT_CONN, "out of memory");
        g_c[i].role = !g_bcast ? ROLE_ECHO : i < g_conns ? ROLE_SUB : ROLE_PUB;
    }
    if (g_bcast) g_pub = &g_c[g_conns];  /* opened last, after every subscriber */
    while (g_started < g_nconn && g_started < g_window) open_conn(g_started++);

    uint64_t t0 = now_ns();
    uint64_t deadline = t0 + (uint64_t)(g_connect_timeout * 1e9);
    uint64_t t_measure = 0, t_end = 0, t_measure_real = 0, t_end_real = 0, t_drained = 0;
    double cpu_self0 = 0, cpu_self1 = 0, cpu_srv0 = -1, cpu_srv1 = -1;
    int unclean = 0;
    struct epoll_event evs[256];

    for (;;) {
        g_now = now_ns();
        /* phase transitions */
        if (g_phase == PH_CONNECT) {
            if (g_open == g_nconn) {
                g_phase = PH_WARMUP;
                t_measure = g_now + (uint64_t)(g_warmup * 1e9);
                t_end = t_measure + (uint64_t)(g_duration * 1e9);
                g_last_rx = g_now;
                if (g_bcast) start_conn(g_pub);  /* subscribers only listen */
                else for (int i = 0; i < g_nconn; i++) start_conn(&g_c[i]);
            } else if (g_now >= deadline) {
                die(EXIT_TIMEOUT, "only %d of %d connections opened within %.1f s", g_open,
                    g_nconn, g_connect_timeout);
            }
        }
        if (g_phase == PH_WARMUP && g_now >= t_measure) {
            g_phase = PH_MEASURE;
            t_measure_real = g_now;
            cpu_self0 = self_cpu_s();
            cpu_srv0 = proc_cpu_s(g_pid);
        }
        if (g_phase == PH_MEASURE && g_now >= t_end) {
            t_end_real = g_now;
            cpu_self1 = self_cpu_s();
            cpu_srv1 = proc_cpu_s(g_pid);
            if (g_bcast) {
                g_phase = PH_DRAIN;  /* the publisher stops; wait for every copy to arrive */
                deadline = g_now + (uint64_t)(g_drain_timeout * 1e9);
            } else {
                begin_close();
                deadline = g_now + 2000000000ull;
            }
        }
        if (g_phase == PH_DRAIN) {
            if (g_pub->count == 0 && g_delivered == g_published * (uint64_t)g_conns) {
                /* each subscriber's sequence check makes "the total is right" mean "each one
                 * got every message, once, in order" */
                t_drained = g_now;
                begin_close();
                deadline = g_now + 2000000000ull;
            } else if (g_now >= deadline) {
                die_incomplete();
            }
        }
        if ((g_phase == PH_WARMUP || g_phase == PH_MEASURE) &&
            g_now - g_last_rx > (uint64_t)(g_stall * 1e9))
            die(EXIT_TIMEOUT, "stalled: nothing received for %.1f s", g_stall);
        if (g_phase == PH_CLOSE && (g_done == g_nconn || g_now >= deadline)) {
            for (int i = 0; i < g_nconn; i++)
                if (g_c[i].state != ST_DONE) { unclean++; conn_finish(&g_c[i]); }
            break;
        }

        int timeout_ms = 50;
        int n = epoll_wait(g_epfd, evs, 256, timeout_ms);
        if (n < 0) {
            if (errno == EINTR) continue;
            die(EXIT_CONN, "epoll_wait: %s", strerror(errno));
        }
        g_now = now_ns();
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (c->state == ST_DONE) continue;
            uint32_t e = evs[i].events;
            if (c->state == ST_CONNECTING) {
                if (e & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_connected(c);
                continue;
            }
            if (c->state == ST_TLS) {
                tls_step(c);
                continue;
            }
            if (e & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c);
            if (c->state != ST_DONE && (e & EPOLLOUT) && c->read_wants_out) {
                c->read_wants_out = 0;
                on_readable(c);
            }
            if (c->state != ST_DONE && (e & EPOLLOUT)) conn_flush(c);
        }
    }

    double secs = (double)(t_end_real - t_measure_real) / 1e9;
    if (secs <= 0) secs = 1e-9;
    double srv_cpu = (cpu_srv0 >= 0 && cpu_srv1 >= 0) ? 100.0 * (cpu_srv1 - cpu_srv0) / secs : -1;
    double cli_cpu = 100.0 * (cpu_self1 - cpu_self0) / secs;
    if (g_bcast) {
        printf("{\"mode\": \"broadcast\", \"subscribers\": %d, \"inflight\": %d, \"size\": %zu, "
               "\"opcode\": \"text\", \"duration_s\": %.3f, \"published\": %llu, "
               "\"published_per_s\": %.1f, \"deliveries\": %llu, \"deliveries_per_s\": %.1f, "
               "\"mb_per_s\": %.3f, \"lat_mean_us\": %.1f, \"p50_us\": %.1f, \"p90_us\": %.1f, "
               "\"p99_us\": %.1f, \"p999_us\": %.1f, \"max_us\": %.1f, \"ack_p50_us\": %.1f, "
               "\"ack_p99_us\": %.1f, \"total_published\": %llu, \"total_deliveries\": %llu, "
               "\"complete\": true, \"drain_ms\": %.1f, \"client_cpu_pct\": %.1f, "
               "\"server_cpu_pct\": %.1f, \"unclean_close\": %d}\n",
               g_conns, g_inflight, g_size, secs, (unsigned long long)m_published,
               (double)m_published / secs, (unsigned long long)m_msgs, (double)m_msgs / secs,
               (double)m_bytes / secs / 1e6, hist_mean_us(&g_hist), hist_pct_us(&g_hist, 0.50),
               hist_pct_us(&g_hist, 0.90), hist_pct_us(&g_hist, 0.99),
               hist_pct_us(&g_hist, 0.999), (double)g_hist.max_ns / 1000.0,
               hist_pct_us(&g_ack_hist, 0.50), hist_pct_us(&g_ack_hist, 0.99),
               (unsigned long long)g_published, (unsigned long long)g_delivered,
               (double)(t_drained - t_end_real) / 1e6, cli_cpu, srv_cpu, unclean);
        if (m_msgs == 0) die(EXIT_TIMEOUT, "no delivery during the measurement");
        return 0;
    }
    printf("{\"conns\": %d, \"inflight\": %d, \"size\": %zu, \"opcode\": \"%s\", "
           "\"payload\": \"%s\", \"duration_s\": %.3f, \"messages\": %llu, \"msgs_per_s\": %.1f, \"mb_per_s\": %.3f, "
           "\"lat_mean_us\": %.1f, \"p50_us\": %.1f, \"p90_us\": %.1f, \"p99_us\": %.1f, "
           "\"p999_us\": %.1f, \"max_us\": %.1f, \"client_cpu_pct\": %.1f, "
           "\"server_cpu_pct\": %.1f, \"unclean_close\": %d, \"tls\": %s%s%s, "
           "\"tls_verified\": %s}\n",
           g_conns, g_inflight, g_size, g_opcode == 1 ? "text" : "binary",
           g_mixed ? "mixed" : g_opcode == 1 ? "ascii" : "binary", secs,
           (unsigned long long)m_msgs, (double)m_msgs / secs, (double)m_bytes / secs / 1e6,
           hist_mean_us(&g_hist), hist_pct_us(&g_hist, 0.50), hist_pct_us(&g_hist, 0.90),
           hist_pct_us(&g_hist, 0.99), hist_pct_us(&g_hist, 0.999),
           (double)g_hist.max_ns / 1000.0, cli_cpu, srv_cpu, unclean,
           g_tls ? "\"" : "", g_tls ? g_tls_info : "null", g_tls ? "\"" : "",
           g_tls && g_ca ? "true" : "false");
    if (m_msgs == 0) die(EXIT_TIMEOUT, "no echo during the measurement");
    return 0;
}
