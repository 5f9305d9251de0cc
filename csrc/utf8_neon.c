/*
 * utf8_neon.c — the lookup-table UTF-8 validator (see utf8.h) with AArch64 NEON: 64 bytes a step
 * as four 16-byte vectors; tbl does the nibble lookups, ext forms prev1..prev3 and uqsub the
 * saturating subtracts.
 */
#include "cpu.h"
#include "utf8.h"

#if PYWS_HAVE_NEON_KERNELS

#include <arm_neon.h>
#include <string.h>

static const uint8_t lut_prev1_high[16] = {PW_UTF8_LUT_PREV1_HIGH};
static const uint8_t lut_prev1_low[16] = {PW_UTF8_LUT_PREV1_LOW};
static const uint8_t lut_cur_high[16] = {PW_UTF8_LUT_CUR_HIGH};
/* 0xFF everywhere but the last three bytes (see incomplete()) */
static const uint8_t incomplete_max[16] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                           0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xEF, 0xDF, 0xBF};

typedef struct tables {
    uint8x16_t prev1_high, prev1_low, cur_high;
} tables;

/* Error bytes (nonzero = error) for the 16 bytes `cur`, whose 16 predecessors are `prev`. */
static inline uint8x16_t check(const tables *t, uint8x16_t cur, uint8x16_t prev)
{
    const uint8x16_t p1 = vextq_u8(prev, cur, 15);
    const uint8x16_t p2 = vextq_u8(prev, cur, 14);
    const uint8x16_t p3 = vextq_u8(prev, cur, 13);
    const uint8x16_t t1 = vqtbl1q_u8(t->prev1_high, vshrq_n_u8(p1, 4));
    const uint8x16_t t2 = vqtbl1q_u8(t->prev1_low, vandq_u8(p1, vdupq_n_u8(0x0F)));
    const uint8x16_t t3 = vqtbl1q_u8(t->cur_high, vshrq_n_u8(cur, 4));
    const uint8x16_t special = vandq_u8(vandq_u8(t1, t2), t3);
    const uint8x16_t must23 =
        vorrq_u8(vqsubq_u8(p2, vdupq_n_u8(0x60)), vqsubq_u8(p3, vdupq_n_u8(0x70)));
    return veorq_u8(special, vandq_u8(must23, vdupq_n_u8(0x80)));
}

/* Offset of the first nonzero byte of v, or 16 if none. */
static inline size_t first_nonzero(uint8x16_t v)
{
    /* 0xFF where nonzero; narrowing each 16-bit pair by 4 leaves one nibble per byte */
    const uint8x16_t nz = vtstq_u8(v, v);
    const uint8x8_t nibbles = vshrn_n_u16(vreinterpretq_u16_u8(nz), 4);
    const uint64_t m = vget_lane_u64(vreinterpret_u64_u8(nibbles), 0);
    return m == 0 ? 16 : (size_t)__builtin_ctzll(m) >> 2;
}

/* Checks the 64 bytes at q after `*prev` (the 16 bytes before them). Returns 64 when they hold no
 * error, else the offset in q of the first error byte; *prev becomes their last 16 bytes. */
static inline size_t block(const tables *t, const uint8_t *q, uint8x16_t *prev)
{
    const uint8x16_t a = vld1q_u8(q);
    const uint8x16_t b = vld1q_u8(q + 16);
    const uint8x16_t c = vld1q_u8(q + 32);
    const uint8x16_t d = vld1q_u8(q + 48);
    const uint8x16_t before = *prev;
    size_t k;

    *prev = d;
    if (vmaxvq_u8(vorrq_u8(vorrq_u8(a, b), vorrq_u8(c, d))) < 0x80) /* ASCII */
        return vmaxvq_u8(vqsubq_u8(before, vld1q_u8(incomplete_max))) == 0 ? 64 : 0;
    const uint8x16_t ea = check(t, a, before);
    const uint8x16_t eb = check(t, b, a);
    const uint8x16_t ec = check(t, c, b);
    const uint8x16_t ed = check(t, d, c);
    if (vmaxvq_u8(vorrq_u8(vorrq_u8(ea, eb), vorrq_u8(ec, ed))) == 0)
        return 64;
    k = first_nonzero(ea);
    if (k == 16)
        k += first_nonzero(eb);
    if (k == 32)
        k += first_nonzero(ec);
    if (k == 48)
        k += first_nonzero(ed);
    return k;
}

int pw_utf8_neon(uint32_t *state, const uint8_t *p, size_t len, size_t *bad)
{
    int ret = PYWS_UTF8_OK;
    const size_t lo = pw_utf8_lookup_enter(state, p, len, bad, &ret);
    const tables t = {vld1q_u8(lut_prev1_high), vld1q_u8(lut_prev1_low), vld1q_u8(lut_cur_high)};
    uint8x16_t prev = vdupq_n_u8(0);
    uint8_t last[64];
    size_t i, e;

    if (lo == SIZE_MAX)
        return ret;
    for (i = lo; len - i >= 64; i += 64) {
        e = block(&t, p + i, &prev);
        if (e < 64)
            return pw_utf8_lookup_resume(state, p, lo, i + e, len, bad);
    }
    /* the last 0..63 bytes, followed by zeros: an unfinished code point fails in the padding */
    memset(last, 0, sizeof last);
    if (len > i)
        memcpy(last, p + i, len - i);
    e = block(&t, last, &prev);
    if (e < 64)
        return pw_utf8_lookup_resume(state, p, lo, i + e, len, bad);
    *state = PYWS_UTF8_S_BOUNDARY;
    return PYWS_UTF8_OK;
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
