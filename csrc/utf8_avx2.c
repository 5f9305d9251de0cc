/*
 * utf8_avx2.c — the lookup-table UTF-8 validator (see utf8.h) with AVX2: 64 bytes a step as two
 * 32-byte vectors.
 *
 * vpshufb looks up within each 128-bit lane, so the three tables are repeated in both lanes, and
 * the bytes before a vector (prev1..prev3) are formed per lane with vpalignr from the vector and
 * a copy of it moved up one lane with the previous vector's high lane below (vperm2i128).
 */
#include "cpu.h"
#include "utf8.h"

#if PYWS_HAVE_X86_KERNELS

#include <immintrin.h>
#include <string.h>

#define TARGET __attribute__((target("avx2")))

/* Error bytes (nonzero = error) for the 32 bytes `cur`, whose 1st, 2nd and 3rd predecessors
 * are p1, p2, p3 (cur moved up by one, two, three bytes). */
static TARGET inline __m256i check3(__m256i cur, __m256i p1, __m256i p2, __m256i p3)
{
    const __m256i prev1_high = _mm256_setr_epi8(PW_UTF8_LUT_PREV1_HIGH, PW_UTF8_LUT_PREV1_HIGH);
    const __m256i prev1_low = _mm256_setr_epi8(PW_UTF8_LUT_PREV1_LOW, PW_UTF8_LUT_PREV1_LOW);
    const __m256i cur_high = _mm256_setr_epi8(PW_UTF8_LUT_CUR_HIGH, PW_UTF8_LUT_CUR_HIGH);
    const __m256i nib = _mm256_set1_epi8(0x0F);
    const __m256i t1 = _mm256_shuffle_epi8(prev1_high, _mm256_and_si256(_mm256_srli_epi16(p1, 4), nib));
    const __m256i t2 = _mm256_shuffle_epi8(prev1_low, _mm256_and_si256(p1, nib));
    const __m256i t3 = _mm256_shuffle_epi8(cur_high, _mm256_and_si256(_mm256_srli_epi16(cur, 4), nib));
    const __m256i special = _mm256_and_si256(_mm256_and_si256(t1, t2), t3);
    const __m256i must23 = _mm256_or_si256(_mm256_subs_epu8(p2, _mm256_set1_epi8(0x60)),
                                           _mm256_subs_epu8(p3, _mm256_set1_epi8(0x70)));
    return _mm256_xor_si256(special, _mm256_and_si256(must23, _mm256_set1_epi8((char)0x80)));
}

/* Error bytes for the 32 bytes `cur`, whose 32 predecessors are `prev`. */
static TARGET inline __m256i check(__m256i cur, __m256i prev)
{
    /* [prev's high lane, cur's low lane]: what comes before each lane of cur */
    const __m256i before = _mm256_permute2x128_si256(prev, cur, 0x21);
    return check3(cur, _mm256_alignr_epi8(cur, before, 15), _mm256_alignr_epi8(cur, before, 14),
                  _mm256_alignr_epi8(cur, before, 13));
}

/* check() of the 32 bytes at q, whose predecessors are in memory too: loaded (the load ports
 * are idle) instead of assembled with four shuffles on the port the table lookups need. */
static TARGET inline __m256i check_at(const uint8_t *q, __m256i cur)
{
    return check3(cur, _mm256_loadu_si256((const void *)(q - 1)),
                  _mm256_loadu_si256((const void *)(q - 2)),
                  _mm256_loadu_si256((const void *)(q - 3)));
}

/* Nonzero bytes where v's last bytes leave a code point unfinished (>= C0 last, >= E0 second to
 * last, >= F0 third to last). */
static TARGET inline __m256i incomplete(__m256i v)
{
    const __m256i max = _mm256_setr_epi8(-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                         -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                         -1, (char)0xEF, (char)0xDF, (char)0xBF);
    return _mm256_subs_epu8(v, max);
}

static TARGET inline uint64_t nonzero_bytes(__m256i a, __m256i b)
{
    const __m256i z = _mm256_setzero_si256();
    const uint32_t za = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(a, z));
    const uint32_t zb = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(b, z));
    return ~((uint64_t)za | (uint64_t)zb << 32);
}

/* Checks the 64 bytes at q after `*prev` (the 32 bytes before them). Returns 64 when they hold no
 * error, else the offset in q of the first error byte; *prev becomes their last 32 bytes. */
static TARGET inline size_t block(const uint8_t *q, __m256i *prev, int in_memory)
{
    const __m256i a = _mm256_loadu_si256((const void *)q);
    const __m256i b = _mm256_loadu_si256((const void *)(q + 32));
    const __m256i before = *prev;

    *prev = b;
    if (_mm256_movemask_epi8(_mm256_or_si256(a, b)) == 0) /* ASCII */
        return _mm256_testz_si256(incomplete(before), incomplete(before)) ? 64 : 0;
    /* in_memory: the 3 bytes before q are this run's too (not the first block, not the copy) */
    const __m256i ea = in_memory ? check_at(q, a) : check(a, before);
    const __m256i eb = in_memory ? check_at(q + 32, b) : check(b, a);
    const __m256i e = _mm256_or_si256(ea, eb);
    if (_mm256_testz_si256(e, e))
        return 64;
    return (size_t)__builtin_ctzll(nonzero_bytes(ea, eb));
}

TARGET
int pw_utf8_avx2(uint32_t *state, const uint8_t *p, size_t len, size_t *bad)
{
    int ret = PYWS_UTF8_OK;
    const size_t lo = pw_utf8_lookup_enter(state, p, len, bad, &ret);
    __m256i prev = _mm256_setzero_si256();
    uint8_t last[64];
    size_t i, e;

    if (lo == SIZE_MAX)
        return ret;
    for (i = lo; len - i >= 64; i += 64) {
        /* the bytes before lo are not this run's: the first block sees zeros there, from prev */
        e = block(p + i, &prev, i != lo);
        if (e < 64)
            return pw_utf8_lookup_resume(state, p, lo, i + e, len, bad);
    }
    /* the last 0..63 bytes, followed by zeros: an unfinished code point fails in the padding */
    memset(last, 0, sizeof last);
    if (len > i)
        memcpy(last, p + i, len - i);
    e = block(last, &prev, 0);
    if (e < 64)
        return pw_utf8_lookup_resume(state, p, lo, i + e, len, bad);
    *state = PYWS_UTF8_S_BOUNDARY;
    return PYWS_UTF8_OK;
}

#else

int pw_utf8_avx2(uint32_t *state, const uint8_t *p, size_t len, size_t *bad)
{
    (void)state;
    (void)p;
    (void)len;
    (void)bad;
    return PYWS_ERR_UNSUPPORTED;
}

#endif
