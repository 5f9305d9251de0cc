/*
 * utf8_avx512.c — the lookup-table UTF-8 validator (see utf8.h) with AVX-512 F+BW: 128 bytes a
 * step in two vectors.
 *
 * vpshufb and vpalignr work within 128-bit lanes, so the tables are repeated in all four lanes
 * and the bytes before each lane come from valignd, which moves the vector up one lane with the
 * previous vector's top lane below (this needs only AVX-512F; no VBMI byte permutes).
 */
#include "cpu.h"
#include "utf8.h"

#if PYWS_HAVE_X86_KERNELS

#include <immintrin.h>
#include <string.h>

#define TARGET __attribute__((target("avx512f,avx512bw")))

/* -1 everywhere but the last three bytes: EF, DF, BF (see incomplete()) */
static const uint8_t incomplete_max[64] = {
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xEF, 0xDF, 0xBF,
};

/* Mask of the error bytes of the 64 bytes `cur`, whose 1st, 2nd and 3rd predecessors are
 * p1, p2, p3 (cur moved up by one, two, three bytes). */
static TARGET inline __mmask64 check3(__m512i cur, __m512i p1, __m512i p2, __m512i p3)
{
    const __m512i prev1_high = _mm512_broadcast_i32x4(_mm_setr_epi8(PW_UTF8_LUT_PREV1_HIGH));
    const __m512i prev1_low = _mm512_broadcast_i32x4(_mm_setr_epi8(PW_UTF8_LUT_PREV1_LOW));
    const __m512i cur_high = _mm512_broadcast_i32x4(_mm_setr_epi8(PW_UTF8_LUT_CUR_HIGH));
    const __m512i nib = _mm512_set1_epi8(0x0F);
    const __m512i t1 = _mm512_shuffle_epi8(prev1_high, _mm512_and_si512(_mm512_srli_epi16(p1, 4), nib));
    const __m512i t2 = _mm512_shuffle_epi8(prev1_low, _mm512_and_si512(p1, nib));
    const __m512i t3 = _mm512_shuffle_epi8(cur_high, _mm512_and_si512(_mm512_srli_epi16(cur, 4), nib));
    /* t1 & t2 & t3 in one instruction: truth table 0x80 is "all three bits set" */
    const __m512i special = _mm512_ternarylogic_epi32(t1, t2, t3, 0x80);
    const __m512i third = _mm512_subs_epu8(p2, _mm512_set1_epi8(0x60));
    const __m512i fourth = _mm512_subs_epu8(p3, _mm512_set1_epi8(0x70));
    /* (third | fourth) & 0x80 in one instruction: truth table 0xA8 is "(A | B) & C" */
    const __m512i must23 =
        _mm512_ternarylogic_epi32(third, fourth, _mm512_set1_epi8((char)0x80), 0xA8);
    /* special ^ must23 is nonzero exactly where they differ */
    return _mm512_cmpneq_epi8_mask(special, must23);
}

/* Mask of the error bytes of the 64 bytes `cur`, whose 64 predecessors are `prev`. */
static TARGET inline __mmask64 check(__m512i cur, __m512i prev)
{
    /* [prev's top lane, cur's lanes 0..2]: what comes before each lane of cur */
    const __m512i before = _mm512_alignr_epi32(cur, prev, 12);
    return check3(cur, _mm512_alignr_epi8(cur, before, 15), _mm512_alignr_epi8(cur, before, 14),
                  _mm512_alignr_epi8(cur, before, 13));
}

/* check() of the 64 bytes at q, whose predecessors are in memory too: they are loaded (the load
 * ports are idle) instead of assembled with four shuffles on the one port the table lookups
 * need. About 15 % faster on mixed text. */
static TARGET inline __mmask64 check_at(const uint8_t *q, __m512i cur)
{
    return check3(cur, _mm512_loadu_si512((const void *)(q - 1)),
                  _mm512_loadu_si512((const void *)(q - 2)),
                  _mm512_loadu_si512((const void *)(q - 3)));
}

/* Nonzero when v's last bytes leave a code point unfinished. */
static TARGET inline __mmask64 incomplete(__m512i v)
{
    const __m512i inc = _mm512_subs_epu8(v, _mm512_loadu_si512((const void *)incomplete_max));
    return _mm512_test_epi8_mask(inc, inc);
}

/* Checks the 128 bytes a, b after `*prev`. Returns 128 when they hold no error, else the offset
 * of the first error byte; *prev becomes b. (Two vectors a step give the core two independent
 * chains of table lookups to overlap.) */
static TARGET inline size_t block2(__m512i a, __m512i b, __m512i *prev)
{
    const __m512i before = *prev;
    __mmask64 ea, eb;

    *prev = b;
    if (_mm512_movepi8_mask(_mm512_or_si512(a, b)) == 0) /* ASCII */
        return incomplete(before) == 0 ? 128 : 0;
    ea = check(a, before);
    eb = check(b, a);
    if ((ea | eb) == 0)
        return 128;
    return ea != 0 ? (size_t)__builtin_ctzll(ea) : 64 + (size_t)__builtin_ctzll(eb);
}

/* block2() of the 128 bytes at q, which follow at least 3 bytes of the same input (checked
 * already, from a code point boundary on) */
static TARGET inline size_t block2_at(const uint8_t *q, __m512i *prev)
{
    const __m512i before = *prev;
    const __m512i a = _mm512_loadu_si512((const void *)q);
    const __m512i b = _mm512_loadu_si512((const void *)(q + 64));
    __mmask64 ea, eb;

    *prev = b;
    if (_mm512_movepi8_mask(_mm512_or_si512(a, b)) == 0) /* ASCII */
        return incomplete(before) == 0 ? 128 : 0;
    ea = check_at(q, a);
    eb = check_at(q + 64, b);
    if ((ea | eb) == 0)
        return 128;
    return ea != 0 ? (size_t)__builtin_ctzll(ea) : 64 + (size_t)__builtin_ctzll(eb);
}

/* Checks the 64 bytes `cur` after `*prev`. Returns 64 when they hold no error, else the offset
 * of the first error byte; *prev becomes cur. */
static TARGET inline size_t block(__m512i cur, __m512i *prev)
{
    const __m512i before = *prev;
    __mmask64 e;

    *prev = cur;
    if (_mm512_movepi8_mask(cur) == 0) /* ASCII */
        return incomplete(before) == 0 ? 64 : 0;
    e = check(cur, before);
    return e == 0 ? 64 : (size_t)__builtin_ctzll(e);
}

TARGET
int pw_utf8_avx512(uint32_t *state, const uint8_t *p, size_t len, size_t *bad)
{
    int ret = PYWS_UTF8_OK;
    const size_t lo = pw_utf8_lookup_enter(state, p, len, bad, &ret);
    __m512i prev = _mm512_setzero_si512();
    size_t i, e;

    if (lo == SIZE_MAX)
        return ret;
    i = lo;
    if (len - i >= 128) {
        /* the bytes before lo are not this run's (a code point the automaton finished, or
         * none): the first block sees zeros there, from prev */
        e = block2(_mm512_loadu_si512((const void *)(p + i)),
                   _mm512_loadu_si512((const void *)(p + i + 64)), &prev);
        if (e < 128)
            return pw_utf8_lookup_resume(state, p, lo, i + e, len, bad);
        i += 128;
    }
    for (; len - i >= 128; i += 128) {
        e = block2_at(p + i, &prev);
        if (e < 128)
            return pw_utf8_lookup_resume(state, p, lo, i + e, len, bad);
    }
    if (len - i >= 64) {
        e = block(_mm512_loadu_si512((const void *)(p + i)), &prev);
        if (e < 64)
            return pw_utf8_lookup_resume(state, p, lo, i + e, len, bad);
        i += 64;
    }
    /* the last 0..63 bytes, followed by zeros (a masked load reads only the bytes it keeps): an
     * unfinished code point fails in the padding */
    e = block(len == i ? _mm512_setzero_si512()
                       : _mm512_maskz_loadu_epi8(~0ull >> (64 - (len - i)), p + i),
              &prev);
    if (e < 64)
        return pw_utf8_lookup_resume(state, p, lo, i + e, len, bad);
    *state = PYWS_UTF8_S_BOUNDARY;
    return PYWS_UTF8_OK;
}

#else

int pw_utf8_avx512(uint32_t *state, const uint8_t *p, size_t len, size_t *bad)
{
    (void)state;
    (void)p;
    (void)len;
    (void)bad;
    return PYWS_ERR_UNSUPPORTED;
}

#endif
