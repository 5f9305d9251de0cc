/*
 * mask_neon.c — masking with AArch64 NEON: 64 bytes per loop turn in four 16-byte vectors
 * (vld1q/vst1q have no alignment requirement), then 16 at a time; the last < 16 bytes go to the
 * scalar kernel.
 */
#include "cpu.h"
#include "mask.h"

#if PYWS_HAVE_NEON_KERNELS

#include <arm_neon.h>

size_t pw_mask_neon(uint8_t *buf, size_t len, const uint8_t *key, size_t phase)
{
    size_t i = 0;

    phase &= 3;
    if (len == 0)
        return phase; /* buf may be NULL: no pointer arithmetic on it */
    if (len >= 16) {
        const uint8x16_t k = vreinterpretq_u8_u32(vdupq_n_u32(pyws_mask_key32(key, phase)));
        for (; len - i >= 64; i += 64) {
            uint8x16_t a = vld1q_u8(buf + i);
            uint8x16_t b = vld1q_u8(buf + i + 16);
            uint8x16_t c = vld1q_u8(buf + i + 32);
            uint8x16_t d = vld1q_u8(buf + i + 48);
            vst1q_u8(buf + i, veorq_u8(a, k));
            vst1q_u8(buf + i + 16, veorq_u8(b, k));
            vst1q_u8(buf + i + 32, veorq_u8(c, k));
            vst1q_u8(buf + i + 48, veorq_u8(d, k));
        }
        for (; len - i >= 16; i += 16)
            vst1q_u8(buf + i, veorq_u8(vld1q_u8(buf + i), k));
    }
    /* i is a multiple of 16, so the tail starts at the same key phase. */
    pw_mask_scalar(buf + i, len - i, key, phase);
    return (phase + len) & 3;
}

#else

size_t pw_mask_neon(uint8_t *buf, size_t len, const uint8_t *key, size_t phase)
{
    (void)buf;
    (void)len;
    (void)key;
    (void)phase;
    return (size_t)PYWS_ERR_UNSUPPORTED;
}

#endif
