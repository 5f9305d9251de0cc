/*
 * mask_sse2.c — masking with SSE2: 64 bytes per loop turn in four unaligned 16-byte vectors,
 * then 16 at a time; the last < 16 bytes go to the scalar kernel. SSE2 is baseline on x86-64.
 */
#include "cpu.h"
#include "mask.h"

#if PYWS_HAVE_X86_KERNELS

#include <immintrin.h>

__attribute__((target("sse2")))
size_t pw_mask_sse2(uint8_t *buf, size_t len, const uint8_t *key, size_t phase)
{
    size_t i = 0;

    phase &= 3;
    if (len == 0)
        return phase; /* buf may be NULL: no pointer arithmetic on it */
    if (len >= 16) {
        const __m128i k = _mm_set1_epi32((int)pyws_mask_key32(key, phase));
        for (; len - i >= 64; i += 64) {
            __m128i a = _mm_loadu_si128((const void *)(buf + i));
            __m128i b = _mm_loadu_si128((const void *)(buf + i + 16));
            __m128i c = _mm_loadu_si128((const void *)(buf + i + 32));
            __m128i d = _mm_loadu_si128((const void *)(buf + i + 48));
            _mm_storeu_si128((void *)(buf + i), _mm_xor_si128(a, k));
            _mm_storeu_si128((void *)(buf + i + 16), _mm_xor_si128(b, k));
            _mm_storeu_si128((void *)(buf + i + 32), _mm_xor_si128(c, k));
            _mm_storeu_si128((void *)(buf + i + 48), _mm_xor_si128(d, k));
        }
        for (; len - i >= 16; i += 16) {
            __m128i a = _mm_loadu_si128((const void *)(buf + i));
            _mm_storeu_si128((void *)(buf + i), _mm_xor_si128(a, k));
        }
    }
    /* i is a multiple of 16, so the tail starts at the same key phase. */
    pw_mask_scalar(buf + i, len - i, key, phase);
    return (phase + len) & 3;
}

#else

size_t pw_mask_sse2(uint8_t *buf, size_t len, const uint8_t *key, size_t phase)
{
    (void)buf;
    (void)len;
    (void)key;
    (void)phase;
    return (size_t)PYWS_ERR_UNSUPPORTED;
}

#endif
