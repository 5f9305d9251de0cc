/*
 * wsbuild.h — what test_frame.c and test_session.c share: a byte stream of RFC 6455 frames built
 * here from the RFC's layout (not with pyws_frame_header, which test_frame.c checks against it),
 * a trace of parser or session events to compare runs with, and the split points to feed at.
 *
 * Include guard.h before this file.
 */
#ifndef PYWS_TEST_WSBUILD_H
#define PYWS_TEST_WSBUILD_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ENC_MIN 0   /* the shortest length encoding */
#define ENC_7 7     /* force the 7-bit field (length <= 125) */
#define ENC_16 16   /* force the 16-bit extension */
#define ENC_64 64   /* force the 64-bit extension */

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

/* ------------------------------------------------------------------------------------------ */
/* A stream of frames, with marks at every frame start, payload start and frame end             */
/* ------------------------------------------------------------------------------------------ */

#define MAX_MARKS 256

typedef struct wstream {
    uint8_t *b;
    size_t len, cap;
    size_t marks[MAX_MARKS];
    size_t nmarks;
    unsigned nkeys;            /* masking keys handed out so far: each frame gets its own */
} wstream;

static void ws_init(wstream *w)
{
    memset(w, 0, sizeof *w);
}

static void ws_free(wstream *w)
{
    free(w->b);
    memset(w, 0, sizeof *w);
}

static void ws_mark(wstream *w)
{
    if (w->nmarks < MAX_MARKS)
        w->marks[w->nmarks++] = w->len;
}

static void ws_put(wstream *w, const void *p, size_t n)
{
    if (w->len + n > w->cap) {
        size_t cap = w->cap ? w->cap : 256;
        while (cap < w->len + n)
            cap *= 2;
        uint8_t *nb = realloc(w->b, cap);
        if (nb == NULL) {
            fprintf(stderr, "out of memory\n");
            exit(2);
        }
        w->b = nb;
        w->cap = cap;
    }
    if (n)
        memcpy(w->b + w->len, p, n);
    w->len += n;
}

/* The header of a frame: b0 = FIN | RSV | opcode, then the length in encoding `enc` (written as
 * given, even when it does not fit the rules), then the key when masked. */
static void ws_header(wstream *w, int fin, int rsv, int op, uint64_t length, int enc,
                      const uint8_t *key)
{
    uint8_t h[14];
    size_t n = 2;
    uint8_t mbit = key ? 0x80 : 0;
    if (enc == ENC_MIN)
        enc = length < 126 ? ENC_7 : length <= 0xFFFF ? ENC_16 : ENC_64;
    h[0] = (uint8_t)((fin ? 0x80 : 0) | (rsv & 0x70) | (op & 0x0F));
    if (enc == ENC_7) {
        h[1] = (uint8_t)(mbit | (length & 0x7F));
    } else if (enc == ENC_16) {
        h[1] = (uint8_t)(mbit | 126);
        h[2] = (uint8_t)(length >> 8);
        h[3] = (uint8_t)length;
        n = 4;
    } else {
        h[1] = (uint8_t)(mbit | 127);
        for (int i = 0; i < 8; i++)
            h[2 + i] = (uint8_t)(length >> (56 - 8 * i));
        n = 10;
    }
    if (key) {
        memcpy(h + n, key, 4);
        n += 4;
    }
    ws_mark(w);
    ws_put(w, h, n);
}

/* A fresh, never all-zero key for the next masked frame. */
static void ws_next_key(wstream *w, uint8_t key[4])
{
    unsigned k = ++w->nkeys;
    key[0] = (uint8_t)(0x37 + 13 * k);
    key[1] = (uint8_t)(0xfa ^ (k << 3));
    key[2] = (uint8_t)(0x21 + k * k);
    key[3] = (uint8_t)(0x3d ^ (k >> 2)) | 1;
}

/* A whole frame: masked (with a fresh key) when `masked`, payload p[0..n). */
static void ws_frame_enc(wstream *w, int fin, int rsv, int op, const void *payload, size_t n,
                         int masked, int enc)
{
    uint8_t key[4];
    const uint8_t *p = payload;
    if (masked)
        ws_next_key(w, key);
    ws_header(w, fin, rsv, op, n, enc, masked ? key : NULL);
    ws_mark(w);
    size_t at = w->len;
    ws_put(w, p, n);
    if (masked) {
        for (size_t i = 0; i < n; i++)
            w->b[at + i] ^= key[i & 3];
    }
    ws_mark(w);
}

static void ws_frame(wstream *w, int fin, int rsv, int op, const void *payload, size_t n,
                     int masked)
{
    ws_frame_enc(w, fin, rsv, op, payload, n, masked, ENC_MIN);
}

/* ------------------------------------------------------------------------------------------ */
/* Payloads                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* n bytes of valid UTF-8 mixing 1-, 2-, 3- and 4-byte characters (padded with ASCII). */
static uint8_t *text_payload(size_t n)
{
    static const char *const chars[] = {"a", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "Z",
                                        "\xed\x9f\xbf", "\xf4\x8f\xbf\xbf", " "};
    uint8_t *p = xmalloc(n);
    size_t at = 0;
    unsigned i = 0;
    while (at < n) {
        const char *c = chars[i++ % 8];
        size_t cl = strlen(c);
        if (cl > n - at)
            c = "x", cl = 1;
        memcpy(p + at, c, cl);
        at += cl;
    }
    return p;
}

/* n deterministic pseudo-random bytes. */
static uint8_t *binary_payload(size_t n, uint32_t seed)
{
    uint8_t *p = xmalloc(n);
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (uint8_t)x;
    }
    return p;
}

/* ------------------------------------------------------------------------------------------ */
/* Traces                                                                                       */
/* ------------------------------------------------------------------------------------------ */

typedef struct tev {
    int kind;                  /* PYWS_FRAME_* or PYWS_SESS_* */
    int fin, rsv, op, masked;  /* frame HEADER; op also for MESSAGE */
    uint64_t length;           /* frame HEADER */
    int code;                  /* ERROR, CLOSE */
    const char *reason;        /* ERROR: the static reason (NULL in expectations: not compared) */
    uint8_t *data;             /* PAYLOAD (pieces joined), MESSAGE, PING, PONG, CLOSE reason */
    size_t len, cap;
} tev;

typedef struct trace {
    tev *ev;
    size_t n, cap;
} trace;

static void tr_free(trace *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->ev[i].data);
    free(t->ev);
    memset(t, 0, sizeof *t);
}

static tev *tr_add(trace *t, int kind)
{
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 16;
        tev *ne = realloc(t->ev, t->cap * sizeof *ne);
        if (ne == NULL) {
            fprintf(stderr, "out of memory\n");
            exit(2);
        }
        t->ev = ne;
    }
    tev *e = &t->ev[t->n++];
    memset(e, 0, sizeof *e);
    e->kind = kind;
    return e;
}

/* Append bytes to an event's data (which grows geometrically: byte-by-byte runs join 70000
 * one-byte pieces). */
static void tev_append(tev *e, const uint8_t *p, size_t n)
{
    if (e->len + n > e->cap || e->data == NULL) {
        size_t cap = e->cap ? e->cap : 64;
        while (cap < e->len + n)
            cap *= 2;
        uint8_t *nd = realloc(e->data, cap);
        if (nd == NULL) {
            fprintf(stderr, "out of memory\n");
            exit(2);
        }
        e->data = nd;
        e->cap = cap;
    }
    if (n)
        memcpy(e->data + e->len, p, n);
    e->len += n;
}

/* Same events with the same fields and bytes. Reasons are compared only when both have one.
 * On a difference, *where is the index of the first differing event. */
static int tr_same(const trace *a, const trace *b, size_t *where)
{
    size_t n = a->n < b->n ? a->n : b->n;
    for (size_t i = 0; i < n; i++) {
        const tev *x = &a->ev[i], *y = &b->ev[i];
        int same = x->kind == y->kind && x->fin == y->fin && x->rsv == y->rsv && x->op == y->op &&
                   x->masked == y->masked && x->length == y->length && x->code == y->code &&
                   x->len == y->len && (x->len == 0 || memcmp(x->data, y->data, x->len) == 0);
        if (same && x->reason && y->reason)
            same = strcmp(x->reason, y->reason) == 0;
        if (!same) {
            *where = i;
            return 0;
        }
    }
    *where = n;
    return a->n == b->n;
}

/* ------------------------------------------------------------------------------------------ */
/* Split points                                                                                 */
/* ------------------------------------------------------------------------------------------ */

#define ALL_CUTS_UP_TO 700     /* inputs up to this long are cut at every offset */

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

/* The offsets to cut w's bytes at (into two pieces): every offset 0..len for short inputs; for
 * longer ones the first and last 24, 3 either side of every frame start, payload start and frame
 * end, and 40 evenly spaced. Returns the count; *out is malloc'ed. */
static size_t cut_set(const wstream *w, size_t **out)
{
    size_t len = w->len;
    size_t cap = len <= ALL_CUTS_UP_TO ? len + 1 : 2 * 25 + 7 * w->nmarks + 41;
    size_t *c = xmalloc(cap * sizeof *c);
    size_t n = 0;
    if (len <= ALL_CUTS_UP_TO) {
        for (size_t k = 0; k <= len; k++)
            c[n++] = k;
        *out = c;
        return n;
    }
    for (size_t k = 0; k <= 24; k++) {
        c[n++] = k;
        c[n++] = len - k;
    }
    for (size_t m = 0; m < w->nmarks; m++) {
        for (int d = -3; d <= 3; d++) {
            if ((d >= 0 || w->marks[m] >= (size_t)-d) && w->marks[m] + (size_t)(d > 0 ? d : 0) <= len)
                c[n++] = w->marks[m] + (size_t)d;
        }
    }
    for (size_t k = 0; k <= 40; k++)
        c[n++] = len * k / 40;
    qsort(c, n, sizeof *c, cmp_size);
    size_t u = 0;
    for (size_t i = 0; i < n; i++) {
        if (u == 0 || c[u - 1] != c[i])
            c[u++] = c[i];
    }
    *out = c;
    return u;
}

#endif
