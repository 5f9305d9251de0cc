/*
 * mask.h — internal: the XOR masking kernels behind pyws_mask() / pyws_mask_with().
 *
 * Every kernel has the contract of pyws_mask(): XOR buf[0..len) in place with key[(phase + i) & 3]
 * for i in 0..len, any alignment and length, and return (phase + len) & 3. `phase` may be any
 * value; only phase & 3 is used. key is read only when len > 0.
 *
 * A SIMD kernel compiled for another architecture is a stub returning
 * (size_t)PYWS_ERR_UNSUPPORTED; a kernel must not be called unless pyws_impl_available() said yes.
 */
#ifndef PYWS_MASK_H
#define PYWS_MASK_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "pyws.h"

typedef size_t (*pyws_mask_fn)(uint8_t *buf, size_t len, const uint8_t *key, size_t phase);

size_t pyws_mask_scalar(uint8_t *buf, size_t len, const uint8_t *key, size_t phase); /* mask.c */
size_t pyws_mask_sse2(uint8_t *buf, size_t len, const uint8_t *key, size_t phase);   /* mask_sse2.c */
size_t pyws_mask_avx2(uint8_t *buf, size_t len, const uint8_t *key, size_t phase);   /* mask_avx2.c */
size_t pyws_mask_neon(uint8_t *buf, size_t len, const uint8_t *key, size_t phase);   /* mask_neon.c */

/* The key as a 32-bit word whose bytes, in memory order, are key[phase], key[phase+1], ... (mod 4):
 * broadcast it to a vector of any width and XOR, as long as each block starts at a phase that is
 * the same mod 4. Endian-neutral. */
static inline uint32_t pyws_mask_key32(const uint8_t *key, size_t phase)
{
    uint8_t k[4];
    uint32_t w;
    k[0] = key[phase & 3];
    k[1] = key[(phase + 1) & 3];
    k[2] = key[(phase + 2) & 3];
    k[3] = key[(phase + 3) & 3];
    memcpy(&w, k, 4);
    return w;
}

#endif /* PYWS_MASK_H */
