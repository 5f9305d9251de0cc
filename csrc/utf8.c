/*
 * utf8.c — incremental UTF-8 validation (RFC 3629): the automaton, the portable kernel and the
 * dispatch.
 *
 * The automaton. Each byte falls in one of 12 classes:
 *
 *   class  bytes                  as a first byte             as a continuation
 *   0      00..7F                 ASCII, complete             -
 *   1      80..8F                 invalid                     yes
 *   2      90..9F                 invalid                     yes
 *   3      A0..BF                 invalid                     yes
 *   4      C2..DF                 2-byte lead                 -
 *   5      E0                     3-byte lead, next A0..BF    -   (80..9F: overlong)
 *   6      E1..EC, EE..EF         3-byte lead                 -
 *   7      ED                     3-byte lead, next 80..9F    -   (A0..BF: surrogates)
 *   8      F0                     4-byte lead, next 90..BF    -   (80..8F: overlong)
 *   9      F1..F3                 4-byte lead                 -
 *   10     F4                     4-byte lead, next 80..8F    -   (90..BF: > U+10FFFF)
 *   11     C0, C1, F5..FF         never valid (overlong 2-byte, or > U+10FFFF)
 *
 * and the automaton has nine states: at a boundary; needing 1, 2 or 3 more continuation bytes
 * of any value; the four "restricted second byte" states after E0, ED, F0 and F4; and BAD. A
 * byte is rejected the moment no valid text could contain the bytes so far, which is the
 * "first offending byte" of the public API: for E0 80 it is the 80, for C3 41 the 41.
 *
 * Speed. The table walk costs a dependent load per byte, so it only handles what is awkward:
 * sequences split across feeds or cut by the end of the buffer, and errors. At a boundary with
 * at least four bytes left, a complete valid sequence is recognised in one go with a few
 * compares (whole_sequence) and skipped; anything it does not accept is handed to the table,
 * so the two can never disagree. Runs of ASCII are skipped 16 bytes at a time here (two 64-bit
 * words), 64 at a time in utf8_sse2.c, which uses pw_utf8_advance() for everything that is not
 * ASCII. The lookup-table kernels (utf8_sse4.c, utf8_avx2.c, utf8_avx512.c, utf8_neon.c; see
 * utf8.h) check everything in vectors and call the automaton only at the edges, through
 * pw_utf8_lookup_enter() and pw_utf8_lookup_resume() below.
 */
#include "utf8.h"

#include <string.h>

#include "cpu.h"

/* States, pre-multiplied by 16 (the width of a table row). */
#define S_OK 0u     /* at a code point boundary (PYWS_UTF8_S_BOUNDARY) */
#define S_C1 16u    /* one more continuation byte, any value */
#define S_C2 32u    /* two more, any value */
#define S_C3 48u    /* three more, any value */
#define S_E0 64u    /* after E0: A0..BF, then one more */
#define S_ED 80u    /* after ED: 80..9F, then one more */
#define S_F0 96u    /* after F0: 90..BF, then two more */
#define S_F4 112u   /* after F4: 80..8F, then two more */
#define S_BAD 128u  /* PYWS_UTF8_S_BAD */

#if S_BAD != PYWS_UTF8_S_BAD || S_OK != PYWS_UTF8_S_BOUNDARY
#error "utf8.h and utf8.c disagree on the state numbering"
#endif

static const uint8_t utf8_class[256] = {
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 00..0F */
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 10..1F */
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 20..2F */
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 30..3F */
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 40..4F */
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 50..5F */
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 60..6F */
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 70..7F */
    1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  /* 80..8F */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 90..9F */
    3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  /* A0..AF */
    3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  /* B0..BF */
    11, 11, 4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  /* C0..CF */
    4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  /* D0..DF */
    5,  6,  6,  6,  6,  6,  6,  6,  6,  6,  6,  6,  6,  7,  6,  6,  /* E0..EF */
    8,  9,  9,  9,  10, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, /* F0..FF */
};

#define X S_BAD
/* utf8_next[state + class]: columns are the classes above; 12..15 are padding. */
static const uint8_t utf8_next[9 * 16] = {
    /*          ascii 80-8F 90-9F A0-BF C2-DF E0    E1-EF ED    F0    F1-F3 F4    never pad */
    /* S_OK  */ S_OK, X,    X,    X,    S_C1, S_E0, S_C2, S_ED, S_F0, S_C3, S_F4, X,    X, X, X, X,
    /* S_C1  */ X,    S_OK, S_OK, S_OK, X,    X,    X,    X,    X,    X,    X,    X,    X, X, X, X,
    /* S_C2  */ X,    S_C1, S_C1, S_C1, X,    X,    X,    X,    X,    X,    X,    X,    X, X, X, X,
    /* S_C3  */ X,    S_C2, S_C2, S_C2, X,    X,    X,    X,    X,    X,    X,    X,    X, X, X, X,
    /* S_E0  */ X,    X,    X,    S_C1, X,    X,    X,    X,    X,    X,    X,    X,    X, X, X, X,
    /* S_ED  */ X,    S_C1, S_C1, X,    X,    X,    X,    X,    X,    X,    X,    X,    X, X, X, X,
    /* S_F0  */ X,    X,    S_C2, S_C2, X,    X,    X,    X,    X,    X,    X,    X,    X, X, X, X,
    /* S_F4  */ X,    S_C2, X,    X,    X,    X,    X,    X,    X,    X,    X,    X,    X, X, X, X,
    /* S_BAD */ X,    X,    X,    X,    X,    X,    X,    X,    X,    X,    X,    X,    X, X, X, X,
};
#undef X

#define HIGH_BITS 0x8080808080808080ull

/* For a word read from memory with memcpy: FIRST_HIGH_BYTE(w) is the offset of the first byte
 * with its top bit set (w masked with HIGH_BITS, not 0); DROP_FIRST_BYTES(w, n) shifts the
 * first n bytes (1..7) out. Both depend on the byte order; without them, bytes go one by one. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define DROP_FIRST_BYTES(w, n) ((w) >> (8 * (n)))
#if defined(__GNUC__)
#define FIRST_HIGH_BYTE(w) ((size_t)__builtin_ctzll(w) >> 3)
#endif
#elif defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define DROP_FIRST_BYTES(w, n) ((w) << (8 * (n)))
#if defined(__GNUC__)
#define FIRST_HIGH_BYTE(w) ((size_t)__builtin_clzll(w) >> 3)
#endif
#endif

static inline int is_cont(unsigned b)
{
    return (b & 0xC0u) == 0x80u;
}

/*
 * q[0] is not ASCII and q[0..3] are readable. Returns the length (2..4) of the complete, valid
 * sequence starting at q[0], or 0 when there is none (then the automaton decides, byte by byte).
 */
static inline size_t whole_sequence(const uint8_t *q)
{
    const unsigned b0 = q[0], b1 = q[1];
    unsigned lo, hi;

    if (b0 < 0xE0u)
        return (b0 >= 0xC2u && is_cont(b1)) ? 2 : 0;
    if (b0 < 0xF0u) {
        lo = b0 == 0xE0u ? 0xA0u : 0x80u;
        hi = b0 == 0xEDu ? 0x9Fu : 0xBFu;
        return (b1 >= lo && b1 <= hi && is_cont(q[2])) ? 3 : 0;
    }
    if (b0 <= 0xF4u) {
        lo = b0 == 0xF0u ? 0x90u : 0x80u;
        hi = b0 == 0xF4u ? 0x8Fu : 0xBFu;
        return (b1 >= lo && b1 <= hi && is_cont(q[2]) && is_cont(q[3])) ? 4 : 0;
    }
    return 0;
}

#if defined(__GNUC__)
#define ALWAYS_INLINE __attribute__((always_inline)) inline
#else
#define ALWAYS_INLINE inline
#endif

/* pw_utf8_advance(), inlined into the scalar kernel. */
static ALWAYS_INLINE size_t advance(uint32_t *state, const uint8_t *p, size_t i, size_t stop,
                                    size_t len)
{
    uint32_t s = *state;

    while (i < len) {
        if (s == S_OK) {
            if (i >= stop)
                break;
            if (p[i] < 0x80u) {
                /* A run of ASCII: whole words while they last (16 bytes a turn, until `stop`),
                 * then one word, or the buffer's last word, to reach the next non-ASCII byte or
                 * the end; at the very least this byte. */
                const size_t i0 = i;
                uint64_t a, b;
                while (len - i >= 16 && i < stop) {
                    memcpy(&a, p + i, 8);
                    memcpy(&b, p + i + 8, 8);
                    if ((a | b) & HIGH_BITS)
                        break;
                    i += 16;
                }
                if (len - i >= 8) {
                    memcpy(&a, p + i, 8);
                    a &= HIGH_BITS;
                    if (a == 0)
                        i += 8;
#ifdef FIRST_HIGH_BYTE
                    else
                        i += FIRST_HIGH_BYTE(a);
#endif
                }
#ifdef DROP_FIRST_BYTES
                else if (len >= 8 && i < len) {
                    /* fewer than 8 bytes left: the last word, without the bytes before i */
                    memcpy(&a, p + len - 8, 8);
                    if (DROP_FIRST_BYTES(a & HIGH_BITS, 8 - (len - i)) == 0)
                        i = len;
                }
#endif
                if (i == i0)
                    i++;
                continue;
            }
            if (len - i >= 4) {
                size_t n = whole_sequence(p + i);
                if (n != 0) {
                    i += n;
                    continue;
                }
            }
        }
        s = utf8_next[s + utf8_class[p[i]]];
        if (s == S_BAD)
            break;
        i++;
    }
    *state = s;
    return i;
}

size_t pw_utf8_advance(uint32_t *state, const uint8_t *p, size_t i, size_t stop, size_t len)
{
    return advance(state, p, i, stop, len);
}

int pw_utf8_scalar(uint32_t *state, const uint8_t *p, size_t len, size_t *bad)
{
    uint32_t s = *state;
    const size_t i = advance(&s, p, 0, len, len);

    *state = s;
    if (s == S_BAD) {
        *bad = i;
        return PYWS_UTF8_INVALID;
    }
    return s == S_OK ? PYWS_UTF8_OK : PYWS_UTF8_PARTIAL;
}

static const pyws_utf8_fn utf8_kernels[PYWS_IMPL_COUNT] = {
    pw_utf8_scalar, /* PYWS_IMPL_SCALAR */
    pw_utf8_sse2,   /* PYWS_IMPL_SSE2 */
    pw_utf8_avx2,   /* PYWS_IMPL_AVX2 */
    pw_utf8_neon,   /* PYWS_IMPL_NEON */
    pw_utf8_sse4,   /* PYWS_IMPL_SSE4 */
    pw_utf8_avx512, /* PYWS_IMPL_AVX512 */
};

/*
 * The partial code point after a feed of p[0..len) that ended inside a sequence: the payload
 * bits of its lead byte followed by 6 bits per continuation byte seen so far. The sequence is
 * at the end of p; when p holds only continuation bytes of it, its lead came in an earlier feed
 * and `cp` (the value after that feed) is carried on.
 */
static uint32_t partial_cp(uint32_t cp, const uint8_t *p, size_t len)
{
    size_t k = 0, i;

    while (k < len && k < 3 && is_cont(p[len - 1 - k]))
        k++;
    if (k < len) {
        const unsigned lead = p[len - 1 - k];
        cp = lead >= 0xF0u ? (lead & 0x07u) : lead >= 0xE0u ? (lead & 0x0Fu) : (lead & 0x1Fu);
    }
    for (i = len - k; i < len; i++)
        cp = (cp << 6) | (p[i] & 0x3Fu);
    return cp;
}

void pyws_utf8_init(pyws_utf8 *v)
{
    v->state = S_OK;
    v->cp = 0;
}

static inline int feed(pyws_utf8_fn kernel, pyws_utf8 *v, const uint8_t *p, size_t len,
                size_t *bad_offset)
{
    uint32_t s = v->state;
    size_t bad = 0;
    int r;

    /* Already failed (or a state no kernel could have produced): stay failed, and blame the
     * first byte of this feed. */
    if (s >= S_BAD || (s & 15u) != 0) {
        v->state = S_BAD;
        v->cp = 0;
        if (bad_offset != NULL)
            *bad_offset = 0;
        return PYWS_UTF8_INVALID;
    }
    if (len == 0)
        return s == S_OK ? PYWS_UTF8_OK : PYWS_UTF8_PARTIAL;

    r = kernel(&s, p, len, &bad);
    v->state = s;
    if (r == PYWS_UTF8_PARTIAL) {
        v->cp = partial_cp(v->cp, p, len);
    } else {
        v->cp = 0;
        if (r == PYWS_UTF8_INVALID && bad_offset != NULL)
            *bad_offset = bad;
    }
    return r;
}

/* Below this many bytes the scalar kernel is as fast or faster: the SSE2 kernel would only pass
 * the work on to it, and the SSE4/AVX2/NEON lookup kernels copy a short input into a padded
 * block first (12-13 ns, where scalar ASCII takes 8-10). The AVX-512 kernel reads a short input
 * with one masked load and beats the scalar one from the first byte (8-9 ns at 16..63 bytes,
 * ASCII or not), so it takes every length. */
#define SMALL 64

static inline pyws_utf8_fn kernel_for(size_t len)
{
    const int best = pyws_impl_best();
    return len < SMALL && best != PYWS_IMPL_AVX512 ? pw_utf8_scalar : utf8_kernels[best];
}

int pyws_utf8_feed(pyws_utf8 *v, const uint8_t *p, size_t len, size_t *bad_offset)
{
    return feed(kernel_for(len), v, p, len, bad_offset);
}

int pyws_utf8_feed_with(int impl, pyws_utf8 *v, const uint8_t *p, size_t len, size_t *bad_offset)
{
    if (impl == PYWS_IMPL_AUTO)
        impl = pyws_impl_best();
    else if (impl < 0 || impl >= PYWS_IMPL_COUNT || !pyws_impl_available(impl))
        return PYWS_ERR_UNSUPPORTED;
    return feed(utf8_kernels[impl], v, p, len, bad_offset);
}

int pyws_utf8_valid(const uint8_t *p, size_t len)
{
    uint32_t s = S_OK;
    size_t bad;

    if (len == 0)
        return 1;
    return kernel_for(len)(&s, p, len, &bad) == PYWS_UTF8_OK;
}

int pw_utf8_finish(uint32_t *state, uint32_t s, const uint8_t *p, size_t i, size_t len,
                     size_t *bad)
{
    if (s == PYWS_UTF8_S_BAD) {
        *state = s;
        *bad = i;
        return PYWS_UTF8_INVALID;
    }
    if (i < len) {
        size_t tail_bad = 0;
        int r = pw_utf8_scalar(&s, p + i, len - i, &tail_bad);
        *state = s;
        if (r == PYWS_UTF8_INVALID)
            *bad = i + tail_bad;
        return r;
    }
    *state = s;
    return s == PYWS_UTF8_S_BOUNDARY ? PYWS_UTF8_OK : PYWS_UTF8_PARTIAL;
}

size_t pw_utf8_lookup_enter(uint32_t *state, const uint8_t *p, size_t len, size_t *bad, int *ret)
{
    uint32_t s = *state;
    size_t i;

    if (s == S_OK)
        return 0;
    /* stop = 0: run until the first boundary */
    i = advance(&s, p, 0, 0, len);
    if (s == S_OK)
        return i;
    *state = s;
    if (s == S_BAD) {
        *bad = i;
        *ret = PYWS_UTF8_INVALID;
    } else {
        *ret = PYWS_UTF8_PARTIAL; /* i == len: the input ended inside the code point */
    }
    return SIZE_MAX;
}

int pw_utf8_lookup_resume(uint32_t *state, const uint8_t *p, size_t lo, size_t f, size_t len,
                          size_t *bad)
{
    size_t k = f < len ? f : len, conts = 0;

    /* The code point around f - 1: up to three continuation bytes back, then its lead. */
    while (k > lo && conts < 3 && is_cont(p[k - 1])) {
        k--;
        conts++;
    }
    if (k > lo && p[k - 1] >= 0xC0u)
        k--;
    else if (conts > 0 && k > lo)
        k = lo; /* no lead where one must be: the tables missed an error; redo it all */
    return pw_utf8_finish(state, S_OK, p, k, len, bad);
}
