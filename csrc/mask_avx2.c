/*
 * mask_avx2.c — masking with AVX2. Large buffers are first brought to a 32-byte boundary by the
 * scalar kernel (the key phase moves with it), then 128 bytes per loop turn in aligned 32-byte
 * vectors, then 32 at a time, then one 16-byte step; the last < 16 bytes go to the scalar
 * kernel.
 */
#include "cpu.h"
#include "mask.h"

#if PYWS_HAVE_X86_KERNELS

#include <immintrin.h>

/* Below this many bytes, aligning first costs more than it saves. */
#define ALIGN_FROM 256

__attribute__((target("avx2")))
size_t pw_mask_avx2(uint8_t *buf, size_t len, const uint8_t *key, size_t phase)
{
    const size_t end_phase = (phase + len) & 3;
    size_t i = 0;

    phase &= 3;
    if (len == 0)
        return phase; /* buf may be NULL: no pointer arithmetic on it */
    if (len >= ALIGN_FROM) {
        size_t head = (size_t)(-(uintptr_t)buf & 31);
        phase = pw_mask_scalar(buf, head, key, phase);
        buf += head;
        len -= head;
        const __m256i k = _mm256_set1_epi32((int)pyws_mask_key32(key, phase));
        for (; len - i >= 128; i += 128) {
            __m256i a = _mm256_load_si256((const void *)(buf + i));
            __m256i b = _mm256_load_si256((const void *)(buf + i + 32));
            __m256i c = _mm256_load_si256((const void *)(buf + i + 64));
            __m256i d = _mm256_load_si256((const void *)(buf + i + 96));
            _mm256_store_si256((void *)(buf + i), _mm256_xor_si256(a, k));
            _mm256_store_si256((void *)(buf + i + 32), _mm256_xor_si256(b, k));
            _mm256_store_si256((void *)(buf + i + 64), _mm256_xor_si256(c, k));
            _mm256_store_si256((void *)(buf + i + 96), _mm256_xor_si256(d, k));
        }
        for (; len - i >= 32; i += 32) {
            __m256i a = _mm256_load_si256((const void *)(buf + i));
            _mm256_store_si256((void *)(buf + i), _mm256_xor_si256(a, k));
        }
    } else if (len >= 32) {
        const __m256i k = _mm256_set1_epi32((int)pyws_mask_key32(key, phase));
        for (; len - i >= 64; i += 64) {
            __m256i a = _mm256_loadu_si256((const void *)(buf + i));
            __m256i b = _mm256_loadu_si256((const void *)(buf + i + 32));
            _mm256_storeu_si256((void *)(buf + i), _mm256_xor_si256(a, k));
            _mm256_storeu_si256((void *)(buf + i + 32), _mm256_xor_si256(b, k));
        }
        for (; len - i >= 32; i += 32) {
            __m256i a = _mm256_loadu_si256((const void *)(buf + i));
            _mm256_storeu_si256((void *)(buf + i), _mm256_xor_si256(a, k));
        }
    }
    if (len - i >= 16) {
        const __m128i k = _mm_set1_epi32((int)pyws_mask_key32(key, phase));
        __m128i a = _mm_loadu_si128((const void *)(buf + i));
        _mm_storeu_si128((void *)(buf + i), _mm_xor_si128(a, k));
        i += 16;
    }
    /* i is a multiple of 16, so the tail starts at the same key phase. */
    pw_mask_scalar(buf + i, len - i, key, phase);
    return end_phase;
}

#else

size_t pw_mask_avx2(uint8_t *buf, size_t len, const uint8_t *key, size_t phase)
{
    (void)buf;
    (void)len;
    (void)key;
    (void)phase;
    return (size_t)PYWS_ERR_UNSUPPORTED;
}

#endif
