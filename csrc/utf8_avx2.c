/*
 * utf8_avx2.c — UTF-8 validation with an AVX2 ASCII fast path.
 *
 * At a code point boundary, 64 bytes are tested at once (two 32-byte vectors OR-ed, one
 * movemask): all ASCII means all valid, skip them. Otherwise jump to the first non-ASCII byte and
 * let the shared scalar path (pw_utf8_advance) validate from there for NEAR_MIN..NEAR_MAX
 * bytes, up to the next boundary, then try 64 at a time again. The last < 64 bytes go to the
 * scalar kernel, so every answer is the scalar automaton's.
 */
#include "cpu.h"
#include "utf8.h"

#if PYWS_HAVE_X86_KERNELS

#include <immintrin.h>

/* How far the scalar path runs past a non-ASCII byte before the vectors are tried again: from
 * NEAR_MIN, doubling up to NEAR_MAX while the text stays dense with non-ASCII (the next one is
 * within NEAR_MIN bytes when the vectors look), back to NEAR_MIN after an all-ASCII stretch. */
#define NEAR_MIN PYWS_UTF8_NEAR_MIN

__attribute__((target("avx2")))
int pw_utf8_avx2(uint32_t *state, const uint8_t *p, size_t len, size_t *bad)
{
    uint32_t s = *state;
    size_t i = 0, near = NEAR_MIN, skip;

    while (i < len) {
        if (s == PYWS_UTF8_S_BOUNDARY) {
            unsigned ma, mb;
            if (len - i < 64)
                break;
            const __m256i a = _mm256_loadu_si256((const void *)(p + i));
            const __m256i b = _mm256_loadu_si256((const void *)(p + i + 32));
            if (_mm256_movemask_epi8(_mm256_or_si256(a, b)) == 0) {
                i += 64;
                near = NEAR_MIN;
                continue;
            }
            ma = (unsigned)_mm256_movemask_epi8(a);
            mb = (unsigned)_mm256_movemask_epi8(b);
            skip = (size_t)__builtin_ctzll((uint64_t)ma | (uint64_t)mb << 32);
            if (pyws_utf8_near_run(&s, p, &i, skip, &near, len))
                break;
            continue;
        }
        /* mid-character: let the automaton reach the next boundary */
        i = pw_utf8_advance(&s, p, i, len - i > near ? i + near : len, len);
        if (s == PYWS_UTF8_S_BAD)
            break;
    }
    return pw_utf8_finish(state, s, p, i, len, bad);
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
