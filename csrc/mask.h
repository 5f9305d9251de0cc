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

/* mask.c, mask_sse2.c, mask_avx2.c, mask_neon.c */
size_t pw_mask_scalar(uint8_t *buf, size_t len, const uint8_t *key, size_t phase);
size_t pw_mask_sse2(uint8_t *buf, size_t len, const uint8_t *key, size_t phase);
size_t pw_mask_avx2(uint8_t *buf, size_t len, const uint8_t *key, size_t phase);
size_t pw_mask_neon(uint8_t *buf, size_t len, const uint8_t *key, size_t phase);

/*
 * The key as a 32-bit word whose bytes, in memory order, are key[phase], key[phase + 1], ...
 * (mod 4): broadcast it to a vector of any width and XOR, as long as each block starts at the
 * same phase mod 4. One load and a rotate where the byte order is known, else byte by byte.
 */
static inline uint32_t pyws_mask_key32(const uint8_t *key, size_t phase)
{
    uint32_t w;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    const unsigned r = (unsigned)(phase & 3) * 8;
    memcpy(&w, key, 4);
    return (w >> r) | (w << ((32 - r) & 31));
#elif defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    const unsigned r = (unsigned)(phase & 3) * 8;
    memcpy(&w, key, 4);
    return (w << r) | (w >> ((32 - r) & 31));
#else
    uint8_t k[4];
    k[0] = key[phase & 3];
    k[1] = key[(phase + 1) & 3];
    k[2] = key[(phase + 2) & 3];
    k[3] = key[(phase + 3) & 3];
    memcpy(&w, k, 4);
    return w;
#endif
}

#endif /* PYWS_MASK_H */
