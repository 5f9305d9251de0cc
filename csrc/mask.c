/*
 * mask.c — RFC 6455 §5.3 payload masking: the portable kernel and the dispatch.
 *
 * The scalar kernel works on 64-bit words (memcpy in and out, which compilers turn into plain
 * unaligned loads and stores where the CPU allows them), 32 bytes per loop turn, then a 4-byte
 * step and at most three single bytes. The SIMD kernels (mask_sse2.c, mask_avx2.c, mask_neon.c)
 * do the bulk in vectors and hand their tail (< one vector) back to this one.
 */
#include "mask.h"

#include <string.h>

#include "cpu.h"

size_t pw_mask_scalar(uint8_t *buf, size_t len, const uint8_t *key, size_t phase)
{
    uint32_t k32;
    uint64_t k64;
    size_t i = 0;

    phase &= 3;
    if (len == 0)
        return phase;
    k32 = pyws_mask_key32(key, phase);
    k64 = ((uint64_t)k32 << 32) | k32; /* both halves equal: correct on either endianness */

    for (; len - i >= 32; i += 32) {
        uint64_t a, b, c, d;
        memcpy(&a, buf + i, 8);
        memcpy(&b, buf + i + 8, 8);
        memcpy(&c, buf + i + 16, 8);
        memcpy(&d, buf + i + 24, 8);
        a ^= k64;
        b ^= k64;
        c ^= k64;
        d ^= k64;
        memcpy(buf + i, &a, 8);
        memcpy(buf + i + 8, &b, 8);
        memcpy(buf + i + 16, &c, 8);
        memcpy(buf + i + 24, &d, 8);
    }
    for (; len - i >= 8; i += 8) {
        uint64_t a;
        memcpy(&a, buf + i, 8);
        a ^= k64;
        memcpy(buf + i, &a, 8);
    }
    if (len - i >= 4) {
        uint32_t a;
        memcpy(&a, buf + i, 4);
        a ^= k32;
        memcpy(buf + i, &a, 4);
        i += 4;
    }
    for (; i < len; i++)
        buf[i] ^= key[(phase + i) & 3];
    return (phase + len) & 3;
}

static const pyws_mask_fn mask_kernels[PYWS_IMPL_COUNT] = {
    pw_mask_scalar, /* PYWS_IMPL_SCALAR */
    pw_mask_sse2,   /* PYWS_IMPL_SSE2 */
    pw_mask_avx2,   /* PYWS_IMPL_AVX2 */
    pw_mask_neon,   /* PYWS_IMPL_NEON */
    pw_mask_sse2,   /* PYWS_IMPL_SSE4: SSE4 adds nothing a XOR needs */
    pw_mask_avx2,   /* PYWS_IMPL_AVX512: the AVX2 kernel (AVX-512 masking not written yet) */
};

/* Below this many bytes the vector kernels would only pass the work on to the scalar one. */
#define SMALL 16

size_t pyws_mask(uint8_t *buf, size_t len, const uint8_t *key, size_t phase)
{
    if (len < SMALL)
        return pw_mask_scalar(buf, len, key, phase);
    return mask_kernels[pyws_impl_best()](buf, len, key, phase);
}

size_t pyws_mask_with(int impl, uint8_t *buf, size_t len, const uint8_t *key, size_t phase)
{
    if (impl == PYWS_IMPL_AUTO)
        return pyws_mask(buf, len, key, phase);
    if (impl < 0 || impl >= PYWS_IMPL_COUNT || !pyws_impl_available(impl))
        return (size_t)PYWS_ERR_UNSUPPORTED;
    return mask_kernels[impl](buf, len, key, phase);
}
