/*
 * utf8_neon.c — UTF-8 validation with an AArch64 NEON ASCII fast path.
 *
 * At a code point boundary, 64 bytes are tested at once (four 16-byte vectors OR-ed, one
 * horizontal max): all ASCII means all valid, skip them. Otherwise jump to the first non-ASCII
 * byte and let the shared scalar path (pw_utf8_advance) validate from there for
 * NEAR_MIN..NEAR_MAX bytes, up to the next boundary, then try 64 at a time again. The last < 64
 * bytes go to the scalar kernel, so every answer is the scalar automaton's.
 */
#include "cpu.h"
#include "utf8.h"

#if PYWS_HAVE_NEON_KERNELS

#include <arm_neon.h>

/* How far the scalar path runs past a non-ASCII byte before the vectors are tried again: from
 * NEAR_MIN, doubling up to NEAR_MAX while the text stays dense with non-ASCII (the next one is
 * within NEAR_MIN bytes when the vectors look), back to NEAR_MIN after an all-ASCII stretch. */
#define NEAR_MIN PYWS_UTF8_NEAR_MIN

/* Index of the first byte >= 0x80 in v, or 16 if none. */
static inline size_t first_high(uint8x16_t v)
{
    /* 0xFF where the top bit is set; narrowing each 16-bit pair by 4 leaves one nibble per byte. */
    const uint8x16_t hi = vreinterpretq_u8_s8(vshrq_n_s8(vreinterpretq_s8_u8(v), 7));
    const uint8x8_t nibbles = vshrn_n_u16(vreinterpretq_u16_u8(hi), 4);
    const uint64_t m = vget_lane_u64(vreinterpret_u64_u8(nibbles), 0);
    return m == 0 ? 16 : (size_t)__builtin_ctzll(m) >> 2;
}

int pw_utf8_neon(uint32_t *state, const uint8_t *p, size_t len, size_t *bad)
{
    uint32_t s = *state;
    size_t i = 0, near = NEAR_MIN, skip;

    while (i < len) {
        if (s == PYWS_UTF8_S_BOUNDARY) {
            if (len - i < 64)
                break;
            const uint8x16_t a = vld1q_u8(p + i);
            const uint8x16_t b = vld1q_u8(p + i + 16);
            const uint8x16_t c = vld1q_u8(p + i + 32);
            const uint8x16_t d = vld1q_u8(p + i + 48);
            if (vmaxvq_u8(vorrq_u8(vorrq_u8(a, b), vorrq_u8(c, d))) < 0x80) {
                i += 64;
                near = NEAR_MIN;
                continue;
            }
            skip = first_high(a);
            if (skip == 16)
                skip += first_high(b);
            if (skip == 32)
                skip += first_high(c);
            if (skip == 48)
                skip += first_high(d);
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

int pw_utf8_neon(uint32_t *state, const uint8_t *p, size_t len, size_t *bad)
{
    (void)state;
    (void)p;
    (void)len;
    (void)bad;
    return PYWS_ERR_UNSUPPORTED;
}

#endif
