/*
 * utf8_sse4.c — the lookup-table UTF-8 validator (see utf8.h) with SSSE3 (pshufb, palignr) and
 * SSE4.1 (ptest): 64 bytes a step as four 16-byte vectors.
 */
#include "cpu.h"
#include "utf8.h"

#if PYWS_HAVE_X86_KERNELS

#include <immintrin.h>
#include <string.h>

#define TARGET __attribute__((target("ssse3,sse4.1")))

/* Error bytes (nonzero = error) for the 16 bytes `cur`, whose 16 predecessors are `prev`. */
static TARGET inline __m128i check(__m128i cur, __m128i prev)
{
    const __m128i prev1_high = _mm_setr_epi8(PW_UTF8_LUT_PREV1_HIGH);
    const __m128i prev1_low = _mm_setr_epi8(PW_UTF8_LUT_PREV1_LOW);
    const __m128i cur_high = _mm_setr_epi8(PW_UTF8_LUT_CUR_HIGH);
    const __m128i nib = _mm_set1_epi8(0x0F);
    const __m128i p1 = _mm_alignr_epi8(cur, prev, 15);
    const __m128i p2 = _mm_alignr_epi8(cur, prev, 14);
    const __m128i p3 = _mm_alignr_epi8(cur, prev, 13);
    const __m128i t1 = _mm_shuffle_epi8(prev1_high, _mm_and_si128(_mm_srli_epi16(p1, 4), nib));
    const __m128i t2 = _mm_shuffle_epi8(prev1_low, _mm_and_si128(p1, nib));
    const __m128i t3 = _mm_shuffle_epi8(cur_high, _mm_and_si128(_mm_srli_epi16(cur, 4), nib));
    const __m128i special = _mm_and_si128(_mm_and_si128(t1, t2), t3);
    const __m128i must23 = _mm_or_si128(_mm_subs_epu8(p2, _mm_set1_epi8(0x60)),
                                        _mm_subs_epu8(p3, _mm_set1_epi8(0x70)));
    return _mm_xor_si128(special, _mm_and_si128(must23, _mm_set1_epi8((char)0x80)));
}

/* Nonzero bytes where v's last bytes leave a code point unfinished. */
static TARGET inline __m128i incomplete(__m128i v)
{
    const __m128i max = _mm_setr_epi8(-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                      (char)0xEF, (char)0xDF, (char)0xBF);
    return _mm_subs_epu8(v, max);
}

static TARGET inline uint64_t nonzero_bytes(__m128i v)
{
    return ~(uint64_t)_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_setzero_si128())) & 0xFFFFu;
}

/* Checks the 64 bytes at q after `*prev` (the 16 bytes before them). Returns 64 when they hold no
 * error, else the offset in q of the first error byte; *prev becomes their last 16 bytes. */
static TARGET inline size_t block(const uint8_t *q, __m128i *prev)
{
    const __m128i a = _mm_loadu_si128((const void *)q);
    const __m128i b = _mm_loadu_si128((const void *)(q + 16));
    const __m128i c = _mm_loadu_si128((const void *)(q + 32));
    const __m128i d = _mm_loadu_si128((const void *)(q + 48));
    const __m128i before = *prev;

    *prev = d;
    if (_mm_movemask_epi8(_mm_or_si128(_mm_or_si128(a, b), _mm_or_si128(c, d))) == 0) {
        const __m128i inc = incomplete(before);
        return _mm_testz_si128(inc, inc) ? 64 : 0;
    }
    const __m128i ea = check(a, before);
    const __m128i eb = check(b, a);
    const __m128i ec = check(c, b);
    const __m128i ed = check(d, c);
    const __m128i e = _mm_or_si128(_mm_or_si128(ea, eb), _mm_or_si128(ec, ed));
    if (_mm_testz_si128(e, e))
        return 64;
    return (size_t)__builtin_ctzll(nonzero_bytes(ea) | nonzero_bytes(eb) << 16 |
                                   nonzero_bytes(ec) << 32 | nonzero_bytes(ed) << 48);
}

TARGET
int pw_utf8_sse4(uint32_t *state, const uint8_t *p, size_t len, size_t *bad)
{
    int ret = PYWS_UTF8_OK;
    const size_t lo = pw_utf8_lookup_enter(state, p, len, bad, &ret);
    __m128i prev = _mm_setzero_si128();
    uint8_t last[64];
    size_t i, e;

    if (lo == SIZE_MAX)
        return ret;
    for (i = lo; len - i >= 64; i += 64) {
        e = block(p + i, &prev);
        if (e < 64)
            return pw_utf8_lookup_resume(state, p, lo, i + e, len, bad);
    }
    /* the last 0..63 bytes, followed by zeros: an unfinished code point fails in the padding */
    memset(last, 0, sizeof last);
    if (len > i)
        memcpy(last, p + i, len - i);
    e = block(last, &prev);
    if (e < 64)
        return pw_utf8_lookup_resume(state, p, lo, i + e, len, bad);
    *state = PYWS_UTF8_S_BOUNDARY;
    return PYWS_UTF8_OK;
}

#else

int pw_utf8_sse4(uint32_t *state, const uint8_t *p, size_t len, size_t *bad)
{
    (void)state;
    (void)p;
    (void)len;
    (void)bad;
    return PYWS_ERR_UNSUPPORTED;
}

#endif
