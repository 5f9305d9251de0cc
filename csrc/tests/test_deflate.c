/*
 * test_deflate.c — permessage-deflate's codec (deflate.c) and the session's RSV1 rules.
 *
 *   - Round trips through pw_pmd_compress / pw_pmd_inflate for windows 9..15, memLevels,
 *     levels, with context takeover kept and reset, checked against plain zlib as an
 *     independent peer (RFC 7692 §7.2: deflate, sync flush, drop 00 00 ff ff; inflate after
 *     appending it).
 *   - Fragmented sends split at every point: the frames' payloads concatenated inflate to the
 *     message.
 *   - Inflation bounded by max: exactly max passes, max + 1 is refused (1009), whatever the
 *     split between the caller's room and the heap; corrupt data gives 1007.
 *   - pyws_session_inflate: into the room or the heap, 1009 past max after inflating, 1007 for
 *     corrupt data or invalid UTF-8 in inflated text, the session failed after either; the
 *     session calls the event half uses instead of writing fields (limits, RSV1, fail, held).
 *   - The session at every split point of a stream mixing compressed fragments and pings:
 *     the same events; RSV1 on a continuation or control frame fails with 1002.
 *
 * Prints "N passed, M failed"; exits 1 on any failure.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "deflate.h"
#include "pyws.h"

#include "check.h"
#define RNG_SEED 0x2545F4914F6CDD1Dull
#include "rng.h"


/* A message of n bytes: kind 0 random, 1 repetitive text, 2 zeros, 3 JSON-like. */
static uint8_t *make_msg(size_t n, int kind)
{
    uint8_t *m = malloc(n ? n : 1);
    static const char words[] = "{\"user\":\"ada\",\"text\":\"hello world\",\"n\":12345},";
    for (size_t i = 0; i < n; i++) {
        switch (kind) {
        case 0: m[i] = (uint8_t)rnd(); break;
        case 1: m[i] = (uint8_t)('a' + (i % 7)); break;
        case 2: m[i] = 0; break;
        default: m[i] = (uint8_t)words[(i + (rnd() % 3 == 0)) % (sizeof words - 1)]; break;
        }
    }
    return m;
}

/* pyws_opts_default lives in the event half; the codec reads only these fields */
static void opts_default(pyws_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->compression = 1;
    o->deflate_level = 6;
    o->deflate_mem_level = 5;
    o->deflate_window_bits = 12;
    o->deflate_peer_window_bits = 12;
    o->deflate_threshold = 128;
}

static void params_for(pyws_pmd_params *a, int bits, int reset)
{
    memset(a, 0, sizeof(*a));
    a->server_max_window_bits = bits;
    a->client_max_window_bits = bits;
    a->server_no_context_takeover = reset;
    a->client_no_context_takeover = reset;
}

/* Inflate with plain zlib (the independent peer): data + tail. */
static int zlib_inflate(z_stream *z, const uint8_t *in, size_t len, uint8_t *out, size_t cap,
                        size_t *got)
{
    static const uint8_t tail[4] = {0, 0, 0xff, 0xff};
    uint8_t *buf = malloc(len + 4);
    memcpy(buf, in, len);
    memcpy(buf + len, tail, 4);
    z->next_in = buf;
    z->avail_in = (uInt)(len + 4);
    z->next_out = out;
    z->avail_out = (uInt)cap;
    int r = inflate(z, Z_SYNC_FLUSH);
    *got = cap - z->avail_out;
    int ok = (r == Z_OK || r == Z_BUF_ERROR) && z->avail_in == 0;
    free(buf);
    return ok;
}

static void test_round_trips(void)
{
    static const int bits_set[] = {9, 10, 12, 15};
    static const int mem_set[] = {1, 5, 9};
    static const int level_set[] = {0, 1, 6, 9};
    static const size_t sizes[] = {0, 1, 5, 127, 128, 1000, 4096, 70000};
    pyws_zpool *pool = pw_zpool_new();
    uint8_t *out = malloc(1 << 20);
    for (size_t bi = 0; bi < sizeof bits_set / sizeof *bits_set; bi++)
    for (size_t mi = 0; mi < sizeof mem_set / sizeof *mem_set; mi++)
    for (size_t li = 0; li < sizeof level_set / sizeof *level_set; li++)
    for (int reset = 0; reset < 2; reset++) {
        int bits = bits_set[bi];
        pyws_opts o;
        opts_default(&o);
        o.deflate_window_bits = 15;
        o.deflate_mem_level = mem_set[mi];
        o.deflate_level = level_set[li];
        o.deflate_threshold = 0;
        pyws_pmd_params a;
        params_for(&a, bits, reset);
        pyws_pmd tx, rx;
        pw_pmd_init(&tx, PYWS_ROLE_SERVER, &a, &o);
        pw_pmd_init(&rx, PYWS_ROLE_CLIENT, &a, &o);
        CHECK(tx.tx_bits == bits && rx.rx_bits == bits, "bits %d: tx %d rx %d", bits,
              tx.tx_bits, rx.rx_bits);
        z_stream peer;
        memset(&peer, 0, sizeof(peer));
        inflateInit2(&peer, -bits);
        for (int round = 0; round < 3; round++)
        for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++)
        for (int kind = 0; kind < 4; kind++) {
            size_t n = sizes[si];
            uint8_t *m = make_msg(n, kind);
            const uint8_t *z;
            size_t zlen;
            int rc = pw_pmd_compress(&tx, pool, m, n, 1, &z, &zlen);
            CHECK(rc == 0, "compress rc %d", rc);
            uint8_t *zcopy = malloc(zlen ? zlen : 1);
            memcpy(zcopy, z, zlen);
            CHECK(zlen >= 1, "a compressed message has at least one byte (n=%zu)", n);
            /* our inflater */
            const uint8_t *res;
            size_t rlen;
            uint8_t *heap;
            size_t room = (size_t)(rnd() % (n + 64));
            rc = pw_pmd_inflate(&rx, pool, zcopy, zlen, 0, out, room, &res, &rlen, &heap);
            CHECK(rc == 0 && rlen == n && (n == 0 || memcmp(res, m, n) == 0),
                  "inflate bits %d mem %d level %d reset %d n %zu kind %d: rc %d len %zu", bits,
                  mem_set[mi], level_set[li], reset, n, kind, rc, rlen);
            free(heap);
            /* plain zlib */
            size_t got = 0;
            int ok = zlib_inflate(&peer, zcopy, zlen, out + (1 << 19), 1 << 19, &got);
            CHECK(ok && got == n && (n == 0 || memcmp(out + (1 << 19), m, n) == 0),
                  "zlib peer bits %d reset %d n %zu kind %d: ok %d got %zu", bits, reset, n, kind,
                  ok, got);
            CHECK(!reset || (tx.tx == NULL && tx.mem == 0),
                  "no context takeover: no compressor kept between messages");
            CHECK(!reset || (rx.rx == NULL && rx.mem == 0),
                  "no context takeover: no inflater kept between messages");
            free(zcopy);
            free(m);
        }
        inflateEnd(&peer);
        pw_pmd_free(&tx);
        pw_pmd_free(&rx);
        CHECK(tx.mem == 0 && rx.mem == 0, "every zlib byte returned (%zu, %zu)", tx.mem, rx.mem);
    }
    free(out);
    pw_zpool_free(pool);
}

/* A message sent in fragments split at every point (and an empty fragment between). */
static void test_fragments(void)
{
    pyws_zpool *pool = pw_zpool_new();
    pyws_opts o;
    opts_default(&o);
    for (int reset = 0; reset < 2; reset++) {
        pyws_pmd_params a;
        params_for(&a, 12, reset);
        pyws_pmd tx, rx;
        pw_pmd_init(&tx, PYWS_ROLE_CLIENT, &a, &o);
        pw_pmd_init(&rx, PYWS_ROLE_SERVER, &a, &o);
        size_t n = 300;
        uint8_t *m = make_msg(n, 3);
        for (size_t k = 0; k <= n; k++) {
            for (int empty_mid = 0; empty_mid < 2; empty_mid++) {
                uint8_t joined[4096];
                size_t jl = 0;
                const uint8_t *z;
                size_t zl;
                int rc = pw_pmd_compress(&tx, pool, m, k, 0, &z, &zl);
                memcpy(joined + jl, z, zl);
                jl += zl;
                if (empty_mid) {
                    rc |= pw_pmd_compress(&tx, pool, m + k, 0, 0, &z, &zl);
                    memcpy(joined + jl, z, zl);
                    jl += zl;
                }
                CHECK(tx.tx_frag == 1, "a fragmented message is in progress");
                rc |= pw_pmd_compress(&tx, pool, m + k, n - k, 1, &z, &zl);
                memcpy(joined + jl, z, zl);
                jl += zl;
                CHECK(rc == 0 && tx.tx_frag == 0, "fragments compress (k=%zu)", k);
                const uint8_t *res;
                size_t rlen;
                uint8_t *heap;
                uint8_t room[512];
                rc = pw_pmd_inflate(&rx, pool, joined, jl, 0, room, sizeof room, &res, &rlen,
                                      &heap);
                CHECK(rc == 0 && rlen == n && memcmp(res, m, n) == 0,
                      "fragments split at %zu (empty middle %d, reset %d): rc %d len %zu", k,
                      empty_mid, reset, rc, rlen);
                free(heap);
                CHECK(!reset || tx.tx == NULL, "the fragment compressor goes with the message");
            }
        }
        /* an empty fragmented message right after a flush still inflates to nothing */
        const uint8_t *z;
        size_t zl;
        uint8_t joined[64];
        size_t jl = 0;
        pw_pmd_compress(&tx, pool, m, 0, 0, &z, &zl);
        memcpy(joined + jl, z, zl);
        jl += zl;
        pw_pmd_compress(&tx, pool, m, 0, 1, &z, &zl);
        memcpy(joined + jl, z, zl);
        jl += zl;
        const uint8_t *res;
        size_t rlen = 99;
        uint8_t *heap;
        uint8_t room[64];
        int rc = pw_pmd_inflate(&rx, pool, joined, jl, 0, room, sizeof room, &res, &rlen, &heap);
        CHECK(rc == 0 && rlen == 0, "empty fragmented message: rc %d len %zu", rc, rlen);
        /* and the context still works afterwards */
        pw_pmd_compress(&tx, pool, m, n, 1, &z, &zl);
        memcpy(joined, z, zl < sizeof joined ? zl : 0);
        uint8_t *zc = malloc(zl);
        memcpy(zc, z, zl);
        uint8_t big[512];
        rc = pw_pmd_inflate(&rx, pool, zc, zl, 0, big, sizeof big, &res, &rlen, &heap);
        CHECK(rc == 0 && rlen == n && memcmp(res, m, n) == 0, "context intact after empty one");
        free(zc);
        free(m);
        pw_pmd_free(&tx);
        pw_pmd_free(&rx);
    }
    pw_zpool_free(pool);
}

/* max bounds the inflated size whatever the room/heap split; corrupt input gives 1007. */
static void test_limits(void)
{
    pyws_zpool *pool = pw_zpool_new();
    pyws_opts o;
    opts_default(&o);
    pyws_pmd_params a;
    params_for(&a, 15, 1);
    pyws_pmd tx, rx;
    pw_pmd_init(&tx, PYWS_ROLE_SERVER, &a, &o);
    pw_pmd_init(&rx, PYWS_ROLE_CLIENT, &a, &o);
    static const size_t sizes[] = {1, 100, 4096, 65536, 65537, 200000, 3u << 20};
    static const size_t rooms[] = {0, 1, 99, 100, 101, 65536, 1u << 20};
    uint8_t *room = malloc(1u << 20);
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        size_t n = sizes[si];
        uint8_t *m = make_msg(n, 2); /* zeros: a bomb in miniature */
        const uint8_t *z;
        size_t zl;
        pw_pmd_compress(&tx, pool, m, n, 1, &z, &zl);
        uint8_t *zc = malloc(zl);
        memcpy(zc, z, zl);
        for (size_t ri = 0; ri < sizeof rooms / sizeof *rooms; ri++) {
            for (int delta = -1; delta <= 1; delta++) {
                uint64_t max = (uint64_t)n + (uint64_t)(int64_t)delta;
                if (max == 0)
                    continue;
                const uint8_t *res;
                size_t rlen;
                uint8_t *heap;
                int rc = pw_pmd_inflate(&rx, pool, zc, zl, max, room, rooms[ri], &res, &rlen,
                                          &heap);
                if (delta < 0)
                    CHECK(rc == PYWS_CLOSE_TOO_BIG && heap == NULL,
                          "n %zu max %llu room %zu: rc %d", n, (unsigned long long)max, rooms[ri],
                          rc);
                else
                    CHECK(rc == 0 && rlen == n && memcmp(res, m, n) == 0,
                          "n %zu max %llu room %zu: rc %d len %zu", n, (unsigned long long)max,
                          rooms[ri], rc, rlen);
                free(heap);
            }
        }
        free(zc);
        free(m);
    }
    /* corrupt: a reserved block type; a stored block whose NLEN is not ~LEN; garbage after a
     * final block */
    static const uint8_t bad1[] = {0x07, 0x00};
    static const uint8_t bad2[] = {0x00, 0x05, 0x00, 0x00, 0x00, 'h', 'e', 'l', 'l', 'o'};
    static const uint8_t bad3[] = {0x03, 0x00, 0x42}; /* empty final fixed block, then junk */
    const uint8_t *bads[] = {bad1, bad2, bad3};
    size_t blens[] = {sizeof bad1, sizeof bad2, sizeof bad3};
    for (int i = 0; i < 3; i++) {
        const uint8_t *res;
        size_t rlen;
        uint8_t *heap;
        int rc = pw_pmd_inflate(&rx, pool, bads[i], blens[i], 1000, room, 100, &res, &rlen,
                                  &heap);
        CHECK(rc == PYWS_CLOSE_INVALID_DATA, "corrupt %d: rc %d", i, rc);
        /* the (shared) inflater recovers for the next message */
        const uint8_t *z;
        size_t zl;
        pw_pmd_compress(&tx, pool, (const uint8_t *)"fine", 4, 1, &z, &zl);
        uint8_t zc[64];
        memcpy(zc, z, zl);
        rc = pw_pmd_inflate(&rx, pool, zc, zl, 1000, room, 100, &res, &rlen, &heap);
        CHECK(rc == 0 && rlen == 4 && memcmp(res, "fine", 4) == 0, "after corrupt %d", i);
    }
    free(room);
    pw_pmd_free(&tx);
    pw_pmd_free(&rx);
    pw_zpool_free(pool);
}

/* ---------------------------------------------------------------- the session */

static size_t frame(uint8_t *out, int fin, int rsv1, int op, const uint8_t *p, size_t n)
{
    static const uint8_t key[4] = {0x11, 0x22, 0x33, 0x44};
    size_t h = pyws_frame_header(out, fin, rsv1 ? 0x40 : 0, op, n, key);
    for (size_t i = 0; i < n; i++)
        out[h + i] = p[i] ^ key[i & 3];
    return h + n;
}

typedef struct evrec {
    int kind, opcode, compressed, code;
    uint8_t data[1024];
    size_t len;
} evrec;

/* Feed stream[0..len) cut at `cut` (and then byte-wise for the rest if bytewise); collect
 * events (payloads concatenated per kind). */
static int run_session(const uint8_t *stream, size_t len, size_t cut, int allow, evrec *evs,
                       int max)
{
    pyws_session s;
    pyws_session_init(&s, PYWS_ROLE_SERVER, 1u << 20);
    if (allow)
        s.parser.rsv_allowed = 0x40;
    uint8_t *buf = malloc(len);
    memcpy(buf, stream, len);
    int n = 0;
    size_t pieces[2][2] = {{0, cut}, {cut, len}};
    for (int p = 0; p < 2; p++) {
        size_t at = pieces[p][0], end = pieces[p][1];
        while (at < end || (at == end && p == 1 && 0)) {
            size_t used;
            pyws_sess_event ev;
            uint8_t *retired = NULL;
            int k = pyws_session_feed(&s, buf + at, end - at, &used, &ev, &retired);
            free(retired);
            at += used;
            if (k == PYWS_SESS_NONE)
                break;
            if (n < max) {
                evs[n].kind = k;
                evs[n].opcode = ev.opcode;
                evs[n].compressed = ev.compressed;
                evs[n].code = ev.code;
                evs[n].len = ev.len < sizeof evs[n].data ? ev.len : sizeof evs[n].data;
                if (ev.data && evs[n].len)
                    memcpy(evs[n].data, ev.data, evs[n].len);
                n++;
            }
            pyws_session_release(&s, 0);
            if (k == PYWS_SESS_ERROR)
                break;
        }
    }
    pyws_session_free(&s);
    free(buf);
    return n;
}

static void test_session(void)
{
    uint8_t stream[2048];
    size_t len = 0;
    /* compressed text in three fragments, a ping between, then an uncompressed binary */
    len += frame(stream + len, 0, 1, PYWS_OP_TEXT, (const uint8_t *)"\xf2\x48\xcd", 3);
    len += frame(stream + len, 1, 0, PYWS_OP_PING, (const uint8_t *)"hi", 2);
    len += frame(stream + len, 0, 0, PYWS_OP_CONTINUATION, (const uint8_t *)"\xc9\xc9", 2);
    len += frame(stream + len, 1, 0, PYWS_OP_CONTINUATION, (const uint8_t *)"\x07\x00", 2);
    len += frame(stream + len, 1, 0, PYWS_OP_BINARY, (const uint8_t *)"plain", 5);
    len += frame(stream + len, 1, 1, PYWS_OP_BINARY, (const uint8_t *)"\x02\x00", 2);
    evrec want[8], got[8];
    int nw = run_session(stream, len, len, 1, want, 8);
    CHECK(nw == 4, "4 events, got %d", nw);
    CHECK(want[0].kind == PYWS_SESS_PING, "ping first");
    CHECK(want[1].kind == PYWS_SESS_MESSAGE && want[1].compressed == 1 && want[1].len == 7 &&
              memcmp(want[1].data, "\xf2\x48\xcd\xc9\xc9\x07\x00", 7) == 0,
          "compressed text: the compressed bytes of all fragments");
    CHECK(want[2].kind == PYWS_SESS_MESSAGE && want[2].compressed == 0 && want[2].len == 5,
          "uncompressed binary");
    CHECK(want[3].kind == PYWS_SESS_MESSAGE && want[3].compressed == 1 && want[3].len == 2,
          "compressed binary in one frame");
    for (size_t cut = 0; cut <= len; cut++) {
        int ng = run_session(stream, len, cut, 1, got, 8);
        int same = ng == nw;
        for (int i = 0; same && i < ng; i++)
            same = got[i].kind == want[i].kind && got[i].compressed == want[i].compressed &&
                   got[i].len == want[i].len && memcmp(got[i].data, want[i].data, got[i].len) == 0;
        CHECK(same, "split at %zu gives the same events", cut);
    }
    /* RSV1 where it may not be */
    struct {
        const char *name;
        int allow, fin, rsv1, op, prefix_frag;
    } cases[] = {
        {"RSV1 without permessage-deflate", 0, 1, 1, PYWS_OP_TEXT, 0},
        {"RSV1 on a continuation", 1, 1, 1, PYWS_OP_CONTINUATION, 1},
        {"RSV1 on a ping", 1, 1, 1, PYWS_OP_PING, 0},
        {"RSV1 on a pong", 1, 1, 1, PYWS_OP_PONG, 0},
        {"RSV1 on a close", 1, 1, 1, PYWS_OP_CLOSE, 0},
        {"RSV1 on a ping inside a compressed message", 1, 1, 1, PYWS_OP_PING, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        len = 0;
        if (cases[i].prefix_frag)
            len += frame(stream + len, 0, 1, PYWS_OP_TEXT, (const uint8_t *)"\xf2", 1);
        const uint8_t *pl = (const uint8_t *)(cases[i].op == PYWS_OP_CLOSE ? "\x03\xe8" : "x");
        len += frame(stream + len, cases[i].fin, cases[i].rsv1, cases[i].op, pl, 2);
        for (size_t cut = 0; cut <= len; cut++) {
            int ng = run_session(stream, len, cut, cases[i].allow, got, 8);
            CHECK(ng >= 1 && got[ng - 1].kind == PYWS_SESS_ERROR &&
                      got[ng - 1].code == PYWS_CLOSE_PROTOCOL_ERROR,
                  "%s (split %zu): 1002", cases[i].name, cut);
        }
    }
    /* RSV2 and RSV3 stay reserved with permessage-deflate on */
    len = frame(stream, 1, 0, PYWS_OP_TEXT, (const uint8_t *)"x", 1);
    stream[0] |= 0x20;
    int ng = run_session(stream, len, len, 1, got, 8);
    CHECK(ng == 1 && got[0].kind == PYWS_SESS_ERROR && got[0].code == 1002, "RSV2: 1002");
    /* compressed bytes are not UTF-8 checked by the session (the inflated text is) */
    len = frame(stream, 1, 1, PYWS_OP_TEXT, (const uint8_t *)"\xff\xfe", 2);
    ng = run_session(stream, len, len, 1, got, 8);
    CHECK(ng == 1 && got[0].kind == PYWS_SESS_MESSAGE && got[0].compressed, "not UTF-8 checked");
}

/* Raw deflate of p[0..n) by plain zlib, sync-flushed, tail dropped (RFC 7692 §7.2.1) */
static size_t zlib_deflate(const uint8_t *p, size_t n, uint8_t *out, size_t cap)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
    z.next_in = (Bytef *)(uintptr_t)p;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    deflate(&z, Z_SYNC_FLUSH);
    size_t got = cap - z.avail_out;
    deflateEnd(&z);
    return got >= 4 ? got - 4 : 0;
}

/* One message frame through a fresh session with permessage-deflate and, when it comes out
 * compressed, through pyws_session_inflate; then a ping, to see whether the session still
 * takes input. Returns the message's kind; *ev, *heap, *after (kind fed after) as left. */
typedef struct inflate_run {
    int kind, code, after, in_room, on_heap;
    size_t len;
    uint8_t data[8192];
} inflate_run;

static void run_inflate(int op, const uint8_t *payload, size_t n, int rsv1, uint64_t max,
                        size_t room_len, int with_pmd, int with_pool, inflate_run *r)
{
    pyws_opts o;
    opts_default(&o);
    pyws_pmd_params a;
    params_for(&a, 15, 0);
    pyws_pmd pmd;
    pw_pmd_init(&pmd, PYWS_ROLE_SERVER, &a, &o);
    pyws_zpool *pool = pw_zpool_new();
    pyws_session s;
    pyws_session_init(&s, PYWS_ROLE_SERVER, max);
    pyws_session_enable_deflate(&s);
    uint8_t *stream = malloc(n + 64);
    size_t len = frame(stream, 1, rsv1, op, payload, n);
    size_t ping = frame(stream + len, 1, 0, PYWS_OP_PING, (const uint8_t *)"p", 1);
    uint8_t *room = room_len ? malloc(room_len) : NULL;
    size_t used;
    pyws_sess_event ev;
    uint8_t *retired = NULL, *heap = (uint8_t *)1;
    memset(r, 0, sizeof(*r));
    int k = pyws_session_feed(&s, stream, len, &used, &ev, &retired);
    if (k == PYWS_SESS_MESSAGE)
        k = pyws_session_inflate(&s, with_pmd ? &pmd : NULL, with_pool ? pool : NULL, &ev, room,
                                 room_len, &heap);
    r->kind = k;
    r->code = ev.code;
    if (k == PYWS_SESS_MESSAGE) {
        r->len = ev.len < sizeof r->data ? ev.len : sizeof r->data;
        memcpy(r->data, ev.data, r->len);
        r->in_room = room && ev.data >= room && ev.data + ev.len <= room + room_len;
        r->on_heap = heap != NULL && heap != (uint8_t *)1 && ev.data == heap;
    } else {
        r->on_heap = heap != NULL; /* must be NULL after an ERROR */
    }
    if (heap != (uint8_t *)1)
        free(heap);
    pyws_session_release(&s, 0);
    r->after = pyws_session_feed(&s, stream + len, ping, &used, &ev, &retired);
    free(retired);
    pyws_session_free(&s);
    pw_pmd_free(&pmd);
    pw_zpool_free(pool);
    free(room);
    free(stream);
}

static void test_session_inflate(void)
{
    static uint8_t msg[6000], z[8192];
    inflate_run r;
    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (uint8_t)('a' + i % 23);
    size_t zn = zlib_deflate(msg, 3000, z, sizeof z);

    run_inflate(PYWS_OP_TEXT, z, zn, 1, 1u << 20, 4096, 1, 1, &r);
    CHECK(r.kind == PYWS_SESS_MESSAGE && r.len == 3000 && memcmp(r.data, msg, 3000) == 0 &&
              r.in_room && r.after == PYWS_SESS_PING,
          "compressed text inflates into the room");
    run_inflate(PYWS_OP_TEXT, z, zn, 1, 1u << 20, 100, 1, 1, &r);
    CHECK(r.kind == PYWS_SESS_MESSAGE && r.len == 3000 && memcmp(r.data, msg, 3000) == 0 &&
              r.on_heap,
          "past the room: the heap block, owned by the caller");
    run_inflate(PYWS_OP_BINARY, z, zn, 1, 1u << 20, 0, 1, 1, &r);
    CHECK(r.kind == PYWS_SESS_MESSAGE && r.len == 3000 && r.on_heap, "no room at all: heap");
    /* the size limit counts inflated bytes: exactly max passes, max - 1 is exceeded */
    run_inflate(PYWS_OP_BINARY, z, zn, 1, 3000, 4096, 1, 1, &r);
    CHECK(r.kind == PYWS_SESS_MESSAGE && r.len == 3000, "inflated to exactly max: delivered");
    run_inflate(PYWS_OP_BINARY, z, zn, 1, 2999, 4096, 1, 1, &r);
    CHECK(r.kind == PYWS_SESS_ERROR && r.code == PYWS_CLOSE_TOO_BIG && !r.on_heap &&
              r.after == PYWS_SESS_NONE,
          "inflated past max: 1009, session failed");
    run_inflate(PYWS_OP_BINARY, z, zn, 1, 2999, 0, 1, 1, &r);
    CHECK(r.kind == PYWS_SESS_ERROR && r.code == PYWS_CLOSE_TOO_BIG && !r.on_heap,
          "inflated past max on the heap: 1009, nothing left to free");
    /* UTF-8 of the inflated text, not of the compressed bytes */
    static const uint8_t bad[] = "valid until \xed\xa0\x80 (a surrogate)";
    zn = zlib_deflate(bad, sizeof bad - 1, z, sizeof z);
    run_inflate(PYWS_OP_TEXT, z, zn, 1, 1u << 20, 4096, 1, 1, &r);
    CHECK(r.kind == PYWS_SESS_ERROR && r.code == PYWS_CLOSE_INVALID_DATA &&
              r.after == PYWS_SESS_NONE,
          "invalid UTF-8 after inflating: 1007");
    run_inflate(PYWS_OP_TEXT, z, zn, 1, 1u << 20, 0, 1, 1, &r);
    CHECK(r.kind == PYWS_SESS_ERROR && r.code == PYWS_CLOSE_INVALID_DATA && !r.on_heap,
          "invalid UTF-8 inflated to the heap: 1007, heap freed");
    run_inflate(PYWS_OP_BINARY, z, zn, 1, 1u << 20, 4096, 1, 1, &r);
    CHECK(r.kind == PYWS_SESS_MESSAGE && r.len == sizeof bad - 1, "binary: no UTF-8 check");
    /* corrupt deflate data (a reserved block type) */
    run_inflate(PYWS_OP_BINARY, (const uint8_t *)"\xff\xff\xff", 3, 1, 1u << 20, 4096, 1, 1,
                &r);
    CHECK(r.kind == PYWS_SESS_ERROR && r.code == PYWS_CLOSE_INVALID_DATA, "corrupt: 1007");
    /* an empty compressed payload is an empty message */
    run_inflate(PYWS_OP_TEXT, z, 0, 1, 1u << 20, 0, 1, 1, &r);
    CHECK(r.kind == PYWS_SESS_MESSAGE && r.len == 0, "empty compressed payload: empty message");
    /* no codec, no pool */
    zn = zlib_deflate(msg, 10, z, sizeof z);
    run_inflate(PYWS_OP_BINARY, z, zn, 1, 1u << 20, 4096, 0, 1, &r);
    CHECK(r.kind == PYWS_SESS_ERROR && r.code == PYWS_CLOSE_PROTOCOL_ERROR,
          "compressed without a codec: 1002");
    run_inflate(PYWS_OP_BINARY, z, zn, 1, 1u << 20, 4096, 1, 0, &r);
    CHECK(r.kind == PYWS_SESS_ERROR && r.code == PYWS_CLOSE_INTERNAL_ERROR, "no pool: 1011");
    /* an uncompressed message passes through untouched */
    run_inflate(PYWS_OP_BINARY, msg, 10, 0, 1u << 20, 4096, 1, 1, &r);
    CHECK(r.kind == PYWS_SESS_MESSAGE && r.len == 10 && memcmp(r.data, msg, 10) == 0 &&
              !r.in_room,
          "uncompressed: left as it is");
}

/* The calls that replaced the event half's writes into the session. */
static void test_session_calls(void)
{
    uint8_t stream[256];
    size_t len = 0, used;
    pyws_sess_event ev;
    uint8_t *retired = NULL;
    pyws_session s;
    /* max_fragments: a third frame of a two-frame limit is 1009 */
    pyws_session_init(&s, PYWS_ROLE_SERVER, 0);
    pyws_session_set_limits(&s, 0, 2);
    len += frame(stream + len, 0, 0, PYWS_OP_BINARY, (const uint8_t *)"a", 1);
    len += frame(stream + len, 0, 0, PYWS_OP_CONTINUATION, (const uint8_t *)"b", 1);
    len += frame(stream + len, 1, 0, PYWS_OP_CONTINUATION, (const uint8_t *)"c", 1);
    int k = pyws_session_feed(&s, stream, len, &used, &ev, &retired);
    CHECK(k == PYWS_SESS_ERROR && ev.code == PYWS_CLOSE_TOO_BIG, "max_fragments 2: 1009");
    pyws_session_free(&s);
    /* max_message lowered after init */
    pyws_session_init(&s, PYWS_ROLE_SERVER, 1000);
    pyws_session_set_limits(&s, 2, 0);
    len = frame(stream, 1, 0, PYWS_OP_BINARY, (const uint8_t *)"abc", 3);
    k = pyws_session_feed(&s, stream, len, &used, &ev, &retired);
    CHECK(k == PYWS_SESS_ERROR && ev.code == PYWS_CLOSE_TOO_BIG, "max_message 2: 1009");
    pyws_session_free(&s);
    /* RSV1 refused until enabled */
    pyws_session_init(&s, PYWS_ROLE_SERVER, 0);
    len = frame(stream, 1, 1, PYWS_OP_BINARY, (const uint8_t *)"\x02\x00", 2);
    k = pyws_session_feed(&s, stream, len, &used, &ev, &retired);
    CHECK(k == PYWS_SESS_ERROR && ev.code == PYWS_CLOSE_PROTOCOL_ERROR, "RSV1 off: 1002");
    pyws_session_free(&s);
    pyws_session_init(&s, PYWS_ROLE_SERVER, 0);
    pyws_session_enable_deflate(&s);
    len = frame(stream, 1, 1, PYWS_OP_BINARY, (const uint8_t *)"\x02\x00", 2);
    k = pyws_session_feed(&s, stream, len, &used, &ev, &retired);
    CHECK(k == PYWS_SESS_MESSAGE && ev.compressed, "RSV1 enabled: a compressed message");
    /* the driver fails it: later input is ignored */
    k = pyws_session_fail(&s, &ev, PYWS_CLOSE_INTERNAL_ERROR, "driver's reason");
    CHECK(k == PYWS_SESS_ERROR && ev.kind == k && ev.code == 1011 &&
              strcmp(ev.reason, "driver's reason") == 0 && ev.reason_len == 15,
          "pyws_session_fail fills an ERROR");
    len = frame(stream, 1, 0, PYWS_OP_PING, (const uint8_t *)"x", 1);
    k = pyws_session_feed(&s, stream, len, &used, &ev, &retired);
    CHECK(k == PYWS_SESS_NONE && used == len, "after pyws_session_fail input is ignored");
    pyws_session_free(&s);
    /* take_held: a held assembly buffer changes hands; nothing when none is held */
    pyws_session_init(&s, PYWS_ROLE_SERVER, 0);
    CHECK(pyws_session_take_held(&s) == NULL, "nothing held at first");
    len = frame(stream, 0, 0, PYWS_OP_BINARY, (const uint8_t *)"ab", 2);
    len += frame(stream + len, 1, 0, PYWS_OP_CONTINUATION, (const uint8_t *)"cd", 2);
    k = pyws_session_feed(&s, stream, len, &used, &ev, &retired);
    CHECK(k == PYWS_SESS_MESSAGE && ev.len == 4, "assembled message");
    uint8_t *held = pyws_session_take_held(&s);
    CHECK(held != NULL && ev.data == held && memcmp(held, "abcd", 4) == 0 &&
              pyws_session_memory(&s) == 0 && pyws_session_take_held(&s) == NULL,
          "take_held hands over the buffer the view points into");
    pyws_session_free(&s);
    CHECK(memcmp(ev.data, "abcd", 4) == 0, "the view outlives pyws_session_free");
    free(held);
}

int main(void)
{
    test_round_trips();
    test_fragments();
    test_limits();
    test_session();
    test_session_inflate();
    test_session_calls();
    printf("%lu passed, %lu failed\n", passed, failed);
    return failed ? 1 : 0;
}
