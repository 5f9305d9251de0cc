/*
 * core.h — internal structures of the event library, shared by loop.c, conn.c, upgrade.c and
 * ws.c. Not part of the public API (pyws.h is).
 */
#ifndef PYWS_CORE_H
#define PYWS_CORE_H

#include <netinet/in.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "deflate.h"
#include "poller.h"
#include "pyws.h"
#include "state.h"
#include "timer.h"
#include "transport.h"

/* ------------------------------------------------------------------ limits and sizes */
#define PYWS_ARENA_SIZE (2u << 20)     /* per-iteration receive arena */
#define PYWS_RECV_MAX (256u << 10)     /* one recv() reads at most this much */
#define PYWS_RECV_MIN (4u << 10)       /* below this much arena room, reading waits a turn */
#define PYWS_BLOB_SIZE (16u << 10)     /* write-queue block for small frames */
#define PYWS_BLOB_CACHE_MAX 1024       /* free blocks the loop may keep for reuse (16 MiB) */
#define PYWS_KEEP_MSG_BUF (64u << 10)  /* a message buffer above this leaves its idle session
                                          (for the cache of large buffers, or freed) */
#define PYWS_WRITE_NOW_MAX (16u << 10) /* pw_conn_write_now: a queue this small at most */
#define PYWS_DIRECT_MIN (64u << 10)    /* a frame payload with at least this much still to come
                                          is read straight into the message buffer */
#define PYWS_DIRECT_AFTER (256u << 10) /* after a message this large, the next read into the
                                          arena takes PYWS_RECV_MIN bytes at most (the next
                                          message's header; its payload then goes direct) */
#define PYWS_BIGBUF_CACHE_MAX 64       /* large buffers kept for reuse (pw_bigbuf_get/put): the
                                          sessions' message buffers over PYWS_KEEP_MSG_BUF and
                                          the write queue's blocks over PYWS_BLOB_SIZE ... */
#define PYWS_BIGBUF_CACHE_BYTES (64u << 20) /* ... up to this many bytes in all; each second a
                                          quarter of those unused through that second (at least
                                          one) is freed. Without it every large message was a
                                          malloc that glibc served with mmap, and page faults. */
#define PYWS_BIGBUF_TRIM_MS 1000
#define PYWS_ACCEPT_BATCH 64           /* accepts per listener per iteration */
#define PYWS_PONG_QUEUE_MAX (16u << 10) /* queued bytes past which a ping's pong waits (a newer
                                          ping replaces it): see pw_ws_send_pong */
#define PYWS_PONG_FRAME_MAX 131        /* a pong frame at most: 2 header + 4 mask + 125 payload */
#define PYWS_MAX_READY 256             /* poller events per wait */
#define PYWS_WAKE_ID UINT64_MAX        /* poller user data of the wakeup fd */

/* ------------------------------------------------------------------ write queue */
typedef struct pyws_blob {
    uint32_t refs;     /* segments (on any connection) that point into this block */
    uint32_t held;     /* ext is a message buffer the queue took over from a session
                          (pw_conn_queue_held): the batch's views may read it; never appended */
    size_t len;        /* bytes written (into ext when there is one, else into data) */
    size_t cap;        /* room: ext's size, or data's */
    uint8_t *ext;      /* NULL (a small block: the bytes are in data), or the bytes live here:
                          a large block's buffer from the loop's cache of large buffers, or a
                          held message buffer; given back to that cache with the block */
    uint8_t data[];
} pyws_blob;

/* Where a block's bytes are. */
static inline uint8_t *pw_blob_bytes(pyws_blob *b)
{
    return b->ext ? b->ext : b->data;
}

typedef struct pyws_wseg {
    pyws_blob *blob;
    size_t off;
    size_t len;
} pyws_wseg;

/* ------------------------------------------------------------------ connections */
enum {
    PYWS_KIND_FREE = 0,
    PYWS_KIND_LISTENER,
    PYWS_KIND_CONN,
};

/* Connection states: state.h (the enum and its groups) and state.c (the one table of allowed
 * transitions, and pw_conn_set_state, the only writer of c->state). */

/* connection flags */
#define CF_WANT_WRITE 0x0001u   /* poller watches for writability */
#define CF_DIRTY 0x0002u        /* in the loop's dirty list: flush at the next flush pass */
#define CF_PENDING 0x0004u      /* in the loop's pending list: deferred work at next poll */
#define CF_HELD 0x0008u         /* in the loop's held list: views to release at next poll */
#define CF_ABOVE_HW 0x0010u     /* write queue went above the high-water mark */
#define CF_CLOSE_TOLD 0x0040u   /* EV_CLOSE_HELD was pushed for the close held now */
#define CF_REQ_DONE 0x0080u     /* an HTTP request was delivered; its bytes drop next poll */
#define CF_CLOSE_HOLD 0x0100u   /* closes wait for the application (pyws_hold_closes): its
                                   replies to earlier messages go out first */
#define CF_EOF 0x0200u          /* the peer shut down its side (a socket fact: state.h) */
#define CF_CTL_EVENTS 0x0400u   /* deliver control frames as EV_WS_CTL */
#define CF_SEND_FRAG 0x0800u    /* an outgoing fragmented message is in progress */
#define CF_WAS_WS 0x1000u       /* the connection was upgraded at some point */
#define CF_NO_READ 0x2000u      /* poller does not watch for input (after EOF or a pause) */
#define CF_PAUSED 0x4000u       /* the application paused reading */
/* 0x8000, 0x10000, 0x20000: free (were the TLS flags, now the transport's tr_flags) */
#define CF_STARVED 0x40000u     /* skipped for want of arena room: read first at the next poll */
#define CF_HW_PAUSED 0x80000u   /* reading stopped: our queue to the peer is above high water */
#define CF_PONG_DUE 0x100000u   /* a ping waits for its pong (pong[]): see pw_ws_send_pong */
#define CF_OVER_LIMIT 0x200000u /* the queue passed write_limit: closed with 1008 next poll */
#define CF_STREAM 0x400000u     /* a byte stream (pyws_stream_connect): STREAM once connected */
#define CF_HS_COUNTED 0x0020u   /* the application's answer to this upgrade request was counted
                                   (stats.c: a refused upgrade counts once) */

/* Counters of one connection (stats.c reads them; pyws_conn_stats_get). Plain increments on
 * paths that touch the connection anyway: one thread owns the loop. wire_out is tx_sent. */
typedef struct pyws_counters {
    uint64_t msgs_in;         /* whole data messages delivered */
    uint64_t msgs_out;        /* data messages queued (the frame with FIN) */
    uint64_t bytes_in;        /* their payload bytes, after inflating */
    uint64_t bytes_out;       /* payload bytes of data frames queued, before compressing */
    uint64_t wire_in;         /* bytes read (HTTP, frame headers, control frames, payloads) */
    uint64_t zin_wire;        /* compressed messages received: payload bytes as they came */
    uint64_t zin_data;        /* ... and after inflating */
    uint64_t zout_data;       /* messages we compressed: payload bytes before */
    uint64_t zout_wire;       /* ... and after */
} pyws_counters;

typedef struct pyws_conn {
    uint64_t id;              /* generation << 32 | slot */
    uint8_t kind;
    uint8_t state;            /* PYWS_ST_* (state.h): written by pw_conn_set_state only */
    uint16_t reserved;
    uint32_t flags;
    int fd;
    int role;                 /* PYWS_ROLE_SERVER / _CLIENT */
    uint64_t listener;        /* the listener that accepted it */
    pyws_opts opts;

    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
    } peer;

    /* HTTP phase: request bytes (only while speaking HTTP) */
    uint8_t *rbuf;
    size_t rlen;
    size_t rcap;
    size_t rdone;             /* bytes of delivered requests, dropped at the next poll */

    /* handshake data of the last request (server), or of our request (client) */
    int hs_status;
    char accept[PYWS_ACCEPT_LEN + 1];
    char *protocols;          /* offered subprotocols (heap copy) or NULL */
    char key[25];             /* client: the Sec-WebSocket-Key we sent */
    char *host;               /* client: the host, to try its next address if one fails */
    int port;
    int addr_index;           /* client: which resolved address is being tried */

    /* transport (transport.h): how bytes reach the socket; listeners: what they accept with */
    const pyws_transport *tr; /* never NULL: &pw_transport_tcp unless TLS was started */
    void *tr_ctx;             /* the transport's own (connection state / listener config) */
    uint32_t tr_flags;        /* PYWS_TR_*: written by the transport, read by conn.c */

    /* permessage-deflate: the server's agreement from the last request, kept until upgrade */
    uint8_t pmd_offered;      /* the request had an offer we accept (pmd_agreed) */
    pyws_pmd_params pmd_agreed;

    /* WebSocket phase */
    pyws_session *sess;
    pyws_pmd *pmd;            /* permessage-deflate is on (NULL: off) */
    struct pyws_subref *subs; /* topics this connection is subscribed to */
    uint32_t nsubs;
    uint32_t subs_cap;

    /* write queue: a ring of segments */
    pyws_wseg *wq;
    uint32_t wq_head;
    uint32_t wq_n;
    uint32_t wq_cap;
    uint64_t wq_bytes;
    uint64_t tx_queued;       /* bytes ever queued / ever written: positions in the stream */
    uint64_t tx_sent;
    uint64_t pong_mark;       /* tx_queued just after our last pong: written once tx_sent >= */
    uint8_t pong_len;
    uint8_t pong[125];        /* payload of the latest unanswered ping */

    /* close bookkeeping */
    int close_code;           /* the code reported in EV_CLOSE */
    int pending_code;         /* a close frame to send at the next poll (0 = none) */
    const char *pending_reason;
    uint8_t close_reason_len;
    char close_reason[124];

    /* deadlines (ms on the loop clock, 0 = none) */
    uint64_t deadline_close;  /* whole close handshake / linger */
    uint64_t deadline_hs;     /* HTTP request must complete */
    uint64_t hb_next;         /* next heartbeat ping */
    uint64_t hb_deadline;     /* pong due */
    uint64_t last_activity;
    uint64_t timer_at;        /* earliest deadline queued in the timer heap */

    /* observability (stats.c) */
    pyws_counters cnt;
    uint64_t connected_at;    /* ms on the loop clock: accepted, or the client's connect began */
    uint64_t hb_ping_us;      /* µs (pw_now_us) in the payload of our last heartbeat ping that
                                 no pong answered yet; 0 = none */
    uint64_t ping_rtt_us;     /* round trip of the last heartbeat ping answered (>= 1), 0 = none */
    uint64_t pings_sent;      /* heartbeat pings sent */
} pyws_conn;

/* ------------------------------------------------------------------ the loop */
typedef struct pyws_wake_item {
    uint64_t id;
    size_t len;
    uint8_t *data;
    uint64_t tag;                    /* EV_WAKEUP's aux */
} pyws_wake_item;

/* Topics (topics.c) */
typedef struct pyws_topic {
    struct pyws_topic *next;         /* hash chain */
    uint64_t hash;
    uint64_t *subs;                  /* subscriber connection ids */
    uint32_t nsubs;
    uint32_t cap;
    size_t len;
    char name[];
} pyws_topic;

typedef struct pyws_subref {
    pyws_topic *topic;
    uint32_t index;                  /* position of this connection in topic->subs */
} pyws_subref;

typedef struct pyws_idlist {
    uint32_t *v;
    uint32_t n;
    uint32_t cap;
} pyws_idlist;

/* A condition reported as EV_ERROR at most once a second, with a count: what happened since the
 * last report waits in `count` (first at `since`) until a second has passed. */
typedef struct pyws_ratelog {
    uint64_t count;                  /* occurrences not reported yet */
    uint64_t since;                  /* ms: the first of them */
    uint64_t reported_at;            /* ms: the last report (0 = never) */
    uint64_t listener;               /* the listener the next report is about */
    long detail;                     /* accept failures: the last errno; refusals: max_sockets */
} pyws_ratelog;

struct pyws_loop {
    pyws_poller *poller;
    uint64_t now;                    /* ms, monotonic, updated once per phase */

    pyws_conn **conns;               /* slot -> connection (NULL when never used) */
    uint32_t nslots;
    uint32_t *free_slots;
    uint32_t nfree;
    uint32_t free_cap;
    int nconns;                      /* live connections, listeners excluded */

    pyws_event *events;              /* the batch handed back by pyws_poll */
    int nevents;
    int events_cap;
    pyws_event *deferred;            /* events raised between polls (WS_OPEN, CLOSE) */
    int ndeferred;
    int deferred_cap;

    uint8_t *arena;                  /* receive arena, reset every poll */
    size_t arena_used;
    void **retired;                  /* heap blocks whose views die at the next poll */
    size_t nretired;
    size_t retired_cap;

    pyws_idlist dirty;               /* connections with output to flush */
    pyws_idlist pending;             /* connections with deferred work */
    pyws_idlist held;                /* connections whose session views are in use */

    pyws_blob **blob_cache;          /* free write blocks, reused before malloc */
    int nblob_cache;
    int blob_cache_cap;
    int blob_cache_low;              /* fewest cached since the last trim: blocks not needed */
    struct {
        uint8_t *p;
        size_t cap;
    } bigbuf_cache[PYWS_BIGBUF_CACHE_MAX];  /* idle large buffers (malloc'd, raw): message
                                             buffers and large write blocks' bytes */
    pyws_bufpool bigbuf_pool;        /* the sessions' view of it: pw_bigbuf_get/put, the loop */
    int nbigbuf;
    int bigbuf_low;                  /* fewest cached since the last trim */
    size_t bigbuf_bytes;
    uint64_t bigbuf_trim_at;         /* ms on the loop clock: the next trim */

    pyws_timers timers;

    pyws_topic **topic_buckets;      /* hash table of topics (chained) */
    size_t ntopic_buckets;
    size_t ntopics;
    int topic_watch;                 /* pyws_topic_watch: log first-subscriber/last-left changes */
    uint8_t *topic_log;              /* the log since the last pyws_topic_changes */
    size_t topic_log_len;
    size_t topic_log_cap;
    uint64_t topic_log_lost;         /* changes not logged for want of memory */

    int wake_fd_r;                   /* eventfd, or a pipe's read end */
    int wake_fd_w;                   /* the same eventfd, or the pipe's write end */
    pthread_mutex_t wake_lock;
    pyws_wake_item *wake_q;          /* guarded by wake_lock */
    size_t wake_n;
    size_t wake_cap;
    int wake_signalled;              /* guarded by wake_lock */

    int in_poll;                     /* inside pyws_poll: events go to the batch */
    int write_now;                   /* the last poll returned one event: its handler's first
                                      * small send is written at once (pw_conn_write_now) */
    int self_wake;                   /* pyws_loop_self_wake: signal work queued between polls */
    int self_woken;                  /* signalled (or covered by the host's next check) */
    void **deferred_blocks;          /* heap copies behind deferred events' views */
    size_t ndeferred_blocks;
    size_t deferred_blocks_cap;
    pyws_zpool *zpool;               /* permessage-deflate: shared streams, made on first use */
    uint8_t rng[256];                /* OS randomness for client masks, used 4 bytes at a time */
    size_t rng_left;
    char errbuf[256];

    /* out of descriptors (loop.c accept_batch): after accept() fails with EMFILE, ENFILE,
     * ENOBUFS or ENOMEM every listener is unwatched for accept_pause_ms (10 ms doubling to
     * 1 s; back to 10 ms after an accept succeeds), so a readable listener cannot spin */
    uint64_t accept_resume_at;       /* ms on the loop clock; 0 = listeners are watched */
    uint32_t accept_pause_ms;        /* length of the current or last pause; 0 = none yet */
    int accept_pause_nconns;         /* nconns when the pause began: a close ends it early */
    uint64_t accept_failures;        /* such failures so far */
    uint64_t accept_pauses;          /* pauses so far */
    pyws_ratelog accept_log;
    uint64_t refused;                /* connections refused at max_sockets (503) so far */
    pyws_ratelog refuse_log;

    /* observability (stats.c): loop-wide counters; the message and byte totals of live
     * connections are summed at read time, those of closed ones are kept here */
    pyws_counters gone;              /* counters of connections already freed */
    uint64_t gone_wire_out;          /* their tx_sent */
    uint64_t accepted;               /* connections accepted (not refused) */
    uint64_t ws_opened;              /* WebSockets opened (either role) */
    uint64_t closes[PYWS_CLOSE_WHY_COUNT];    /* closes the engine decided, by PYWS_WHY_* */
    uint64_t hs_failed[PYWS_HS_WHY_COUNT];    /* handshake failures, by PYWS_HSF_* */
    uint64_t publish_skipped;        /* fan-out deliveries skipped (mid-fragment subscriber) */
    uint64_t pongs_replaced;         /* pongs never sent: a newer ping replaced their ping */
    /* the cross-thread queue (loop.c): wake_q is a ring of wake_cap slots, wake_n of them in
     * use from wake_head; everything below and wake_q/wake_n/wake_cap/wake_signalled are
     * guarded by wake_lock, except wake_more (the loop thread's own) */
    size_t wake_head;
    size_t wake_bytes;               /* payload bytes queued */
    size_t wake_max_items;           /* bounds: PYWS_WAKE_MAX_ITEMS, PYWS_WAKE_MAX_BYTES */
    size_t wake_max_bytes;
    uint32_t wake_batch;             /* items one poll delivers at most */
    uint32_t wake_waiters;           /* producers waiting for room (in wake_room) */
    pthread_cond_t wake_room;        /* signalled when the loop took items, or at close */
    pthread_cond_t wake_idle;        /* signalled when the last waiter left after close */
    int wake_closed;                 /* pyws_wake_close was called */
    int wake_more;                   /* the last batch left items behind: do not wait */
    int wake_owner_set;              /* wake_owner is the thread that polls */
    pthread_t wake_owner;
};

/* ------------------------------------------------------------------ shared helpers */
uint64_t pw_now_ms(void);
uint64_t pw_now_us(void);                                    /* monotonic µs, >= 1 */
int pw_set_error(pyws_loop *loop, int code, const char *fmt, ...);
/* Work was queued outside pyws_poll: in self-wake mode, make the pollable descriptor readable
 * (once until the host checks again). */
void pw_loop_touch(pyws_loop *loop);

/* conn.c */
pyws_conn *pw_conn_get(pyws_loop *loop, uint64_t id);        /* NULL if stale/free */
pyws_conn *pw_conn_new(pyws_loop *loop, int kind, int fd);
void pw_conn_free(pyws_loop *loop, pyws_conn *c);            /* close fd, release memory */
void pw_conn_close(pyws_loop *loop, pyws_conn *c, int code); /* close now + EV_CLOSE */
int pw_conn_queue(pyws_loop *loop, pyws_conn *c, const uint8_t *a, size_t alen,
                    const uint8_t *b, size_t blen);
int pw_conn_flush(pyws_loop *loop, pyws_conn *c);            /* < 0: the conn was closed */
void pw_conn_write_now(pyws_loop *loop, pyws_conn *c);
/* Queue a frame whose payload is buf[off..off+len) of the message buffer c's session holds
 * (a view the application got): the queue takes the buffer over instead of copying it (the
 * session starts a fresh one) and gives it back to the cache of large buffers once written, or,
 * outside a poll, to pw_retire. hdr is copied. PYWS_ERR_ARG if the session holds no such
 * buffer, PYWS_ERR_NOMEM: nothing was queued and the session still holds it. */
int pw_conn_queue_held(pyws_loop *loop, pyws_conn *c, const uint8_t *hdr, size_t hlen,
                         size_t off, size_t len);
/* data[0..len) is in a message buffer c's write queue took over: hand the buffer to *block
 * (the caller frees it) and give the queue a copy of the bytes it still has to write. PYWS_OK;
 * 1 if no queued buffer holds it; PYWS_ERR_NOMEM (nothing the caller sees changed). */
int pw_wq_unshare(pyws_loop *loop, pyws_conn *c, const uint8_t *data, size_t len, void **block);
void pw_conn_mark(pyws_loop *loop, pyws_conn *c, uint32_t flag); /* dirty/pending/held */
void pw_conn_watch(pyws_loop *loop, pyws_conn *c);           /* sync poller interest */
void pw_conn_finish(pyws_loop *loop, pyws_conn *c);          /* flush then linger-close */
void pw_conn_deadline(pyws_loop *loop, pyws_conn *c, uint64_t when);
void pw_conn_read(pyws_loop *loop, pyws_conn *c);
void pw_conn_timeout(pyws_loop *loop, pyws_conn *c);
void pw_blob_put(pyws_loop *loop, pyws_blob *b);
/* The cache of large buffers: message buffers (a session's pool, pyws_session_set_pool) and
 * large write blocks; ctx is the loop. */
uint8_t *pw_bigbuf_get(void *loop, size_t need, size_t want, size_t *cap);
void pw_bigbuf_put(void *loop, uint8_t *buf, size_t cap);
void pw_blob_trim(pyws_loop *loop);

/* topics.c */
void pw_topics_drop_conn(pyws_loop *loop, pyws_conn *c);
void pw_topics_free(pyws_loop *loop);
int pw_wq_push_shared(pyws_loop *loop, pyws_conn *c, pyws_blob *b, size_t len);
pyws_blob *pw_blob_alloc(pyws_loop *loop, size_t need);

/* loop.c */
pyws_event *pw_event_push(pyws_loop *loop, int type, uint64_t id);
pyws_event *pw_event_defer(pyws_loop *loop, int type, uint64_t id);
uint8_t *pw_scratch(pyws_loop *loop, size_t len);            /* lives until next poll */
/* The free tail of this poll's arena (room bytes; NULL/0 outside a poll), to fill in place
 * and then claim with pw_scratch(loop, used). */
uint8_t *pw_scratch_room(pyws_loop *loop, size_t *room);
pyws_zpool *pw_loop_zpool(pyws_loop *loop);                 /* NULL if out of memory */
/* EV_ERROR for id with code and a copy of text (the batch owns the copy) */
void pw_event_error(pyws_loop *loop, uint64_t id, int code, const char *text);
int pw_retire(pyws_loop *loop, void *block);   /* free() it at the next poll; -1 if it can't */
void pw_random(pyws_loop *loop, uint8_t *out, size_t n);   /* the OS's random source */

/* listen.c: listeners, accepting, max_sockets and the pauses when descriptors run out */
/* Before the wait: end a pause that is over, raise the reports whose second has passed; when
 * the wait must end at the latest (ms on the loop clock; UINT64_MAX: no bound). */
uint64_t pw_limits_step(pyws_loop *loop);
/* The same deadline, read without acting on it (0: at once). */
uint64_t pw_limits_next(const pyws_loop *loop);
void pw_accept_batch(pyws_loop *loop, pyws_conn *l);    /* a listener is readable */

/* stats.c: counting what the loop does */
/* c is being freed: keep its counters in the loop's totals. */
void pw_stats_conn_gone(pyws_loop *loop, const pyws_conn *c);
/* A server connection failed its handshake: status (an HTTP answer: 400, 503, ...) or one of
 * PYWS_HSF_TLS / PYWS_HSF_TLS_TIMEOUT given as a negative -(index). */
void pw_stats_hs_failed(pyws_loop *loop, int status);
/* The application queued raw bytes on a connection: an answer other than 101 to a valid
 * upgrade request counts as a refused handshake (once per request). */
void pw_stats_raw_answer(pyws_loop *loop, pyws_conn *c, const uint8_t *data, size_t len);

/* wake.c: the cross-thread queue */
int pw_wake_init(pyws_loop *loop);                       /* 0, or -1 (the loop is unusable) */
void pw_wake_fini(pyws_loop *loop);
void pw_wake_note_thread(pyws_loop *loop);               /* the thread that polls owns the loop */
void pw_wake_drain(pyws_loop *loop);                     /* queued items to the batch */

/* upgrade.c: the HTTP phase of a server connection */
void pw_http_input(pyws_loop *loop, pyws_conn *c);
void pw_http_error(pyws_loop *loop, pyws_conn *c, int status, const char *why);
void pw_http_pending(pyws_loop *loop, pyws_conn *c);

/* ws.c: the WebSocket phase */
void pw_ws_start(pyws_loop *loop, pyws_conn *c, int role);
void pw_ws_input(pyws_loop *loop, pyws_conn *c, uint8_t *data, size_t len);
void pw_ws_pending(pyws_loop *loop, pyws_conn *c);
void pw_ws_hold_expired(pyws_loop *loop, pyws_conn *c);
void pw_ws_timeout(pyws_loop *loop, pyws_conn *c);
/* Queue the pong a ping is owed, if pw_ws_pong_may_queue (1: queued). */
int pw_ws_send_pong(pyws_loop *loop, pyws_conn *c);
/* May a pong be queued now: our last one is written, or the queue is under the pong budget. */
int pw_ws_pong_may_queue(const pyws_conn *c);
/* The write queue passed write_limit: close with 1008 now (EV_CLOSE follows). */
void pw_ws_overflow(pyws_loop *loop, pyws_conn *c);
int pw_ws_queue_frame(pyws_loop *loop, pyws_conn *c, int fin, int opcode,
                        const uint8_t *data, size_t len);
int pw_ws_queue_frame_rsv(pyws_loop *loop, pyws_conn *c, int fin, int rsv, int opcode,
                            const uint8_t *data, size_t len);
/* Queue a data frame, compressed when permessage-deflate is on and wants it (flags:
 * PYWS_SEND_NO_COMPRESS); no fragment-sequence or limit checks (pyws_send does those). */
int pw_ws_send_frame(pyws_loop *loop, pyws_conn *c, int fin, int opcode, const uint8_t *data,
                       size_t len, int flags);
/* Turn permessage-deflate on for a connection that just became a WebSocket; < 0: no memory */
int pw_ws_enable_deflate(pyws_loop *loop, pyws_conn *c, const pyws_pmd_params *agreed);

/* client.c: the client's side of a connection before it speaks WebSocket */
void pw_client_connected(pyws_loop *loop, pyws_conn *c);
void pw_client_input(pyws_loop *loop, pyws_conn *c);
void pw_client_fail(pyws_loop *loop, pyws_conn *c, int code, const char *why);

/* net.c */
int pw_net_listen(const char *host, int port, int backlog, int reuse_port, char *err,
                    size_t errlen);
int pw_net_accept(int lfd, struct sockaddr *sa, socklen_t *salen);
/* Start a non-blocking connect to the first address of host:port after the first `skip`
 * (getaddrinfo order); *used is the index of the one started. fd, or with err filled
 * PYWS_ERR_DNS (no address), or pw_net_error_code() of the last connect's errno. */
int pw_net_connect(const char *host, int port, int skip, int *used, struct sockaddr *sa,
                     socklen_t *salen, char *err, size_t errlen);
/* The PYWS_ERR_* kind of a failed connect's errno: REFUSED, TIMEOUT, else SYS. */
int pw_net_error_code(int err);
int pw_net_local_port(int fd);
int pw_net_format_addr(const struct sockaddr *sa, char *out, size_t cap);

#endif
