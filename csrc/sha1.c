/*
 * sha1.c — SHA-1 (FIPS 180-4 §5.1.1, §5.3.1, §6.1), used for Sec-WebSocket-Accept only.
 * SHA-1 is broken for collision resistance; RFC 6455 uses it as a handshake checksum, not for
 * security, and nothing else in pyws should.
 */
#include "handshake.h"

#include <string.h>

static uint32_t rotl(uint32_t x, unsigned n)
{
    return (x << n) | (x >> (32u - n));
}

static uint32_t load_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) |
           (uint32_t)p[3];
}

static void store_be32(uint8_t *p, uint32_t x)
{
    p[0] = (uint8_t)(x >> 24);
    p[1] = (uint8_t)(x >> 16);
    p[2] = (uint8_t)(x >> 8);
    p[3] = (uint8_t)x;
}

/* §6.1.2: process one 512-bit block. The schedule W is kept as a 16-word ring. */
static void compress(uint32_t h[5], const uint8_t *block)
{
    uint32_t w[16];
    for (int t = 0; t < 16; t++)
        w[t] = load_be32(block + 4 * t);

    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int t = 0; t < 80; t++) {
        uint32_t wt;
        if (t < 16) {
            wt = w[t];
        } else {
            wt = rotl(w[(t - 3) & 15] ^ w[(t - 8) & 15] ^ w[(t - 14) & 15] ^ w[t & 15], 1);
            w[t & 15] = wt;
        }
        uint32_t f, k;
        if (t < 20) {
            f = (b & c) ^ (~b & d);              /* Ch */
            k = 0x5a827999u;
        } else if (t < 40) {
            f = b ^ c ^ d;                       /* Parity */
            k = 0x6ed9eba1u;
        } else if (t < 60) {
            f = (b & c) ^ (b & d) ^ (c & d);     /* Maj */
            k = 0x8f1bbcdcu;
        } else {
            f = b ^ c ^ d;                       /* Parity */
            k = 0xca62c1d6u;
        }
        uint32_t temp = rotl(a, 5) + f + e + k + wt;
        e = d;
        d = c;
        c = rotl(b, 30);
        b = a;
        a = temp;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

void pw_sha1_init(pyws_sha1_ctx *ctx)
{
    /* §5.3.1 */
    ctx->h[0] = 0x67452301u;
    ctx->h[1] = 0xefcdab89u;
    ctx->h[2] = 0x98badcfeu;
    ctx->h[3] = 0x10325476u;
    ctx->h[4] = 0xc3d2e1f0u;
    ctx->total = 0;
    ctx->used = 0;
}

void pw_sha1_update(pyws_sha1_ctx *ctx, const uint8_t *data, size_t len)
{
    ctx->total += len;
    if (ctx->used > 0) {
        size_t take = 64 - ctx->used;
        if (take > len)
            take = len;
        memcpy(ctx->block + ctx->used, data, take);
        ctx->used += take;
        data += take;
        len -= take;
        if (ctx->used < 64)
            return;
        compress(ctx->h, ctx->block);
        ctx->used = 0;
    }
    while (len >= 64) {
        compress(ctx->h, data);
        data += 64;
        len -= 64;
    }
    if (len > 0) {
        memcpy(ctx->block, data, len);
        ctx->used = len;
    }
}

void pw_sha1_final(pyws_sha1_ctx *ctx, uint8_t *digest)
{
    /* §5.1.1: a 1 bit, zeros up to 448 mod 512 bits, then the bit length as 64 bits BE. */
    uint64_t bits = ctx->total << 3;
    ctx->block[ctx->used++] = 0x80;
    if (ctx->used > 56) {
        memset(ctx->block + ctx->used, 0, 64 - ctx->used);
        compress(ctx->h, ctx->block);
        ctx->used = 0;
    }
    memset(ctx->block + ctx->used, 0, 56 - ctx->used);
    store_be32(ctx->block + 56, (uint32_t)(bits >> 32));
    store_be32(ctx->block + 60, (uint32_t)bits);
    compress(ctx->h, ctx->block);
    for (int i = 0; i < 5; i++)
        store_be32(digest + 4 * i, ctx->h[i]);
    ctx->used = 0;
}

void pyws_sha1(const uint8_t *data, size_t len, uint8_t *digest)
{
    pyws_sha1_ctx ctx;
    pw_sha1_init(&ctx);
    if (len > 0)
        pw_sha1_update(&ctx, data, len);
    pw_sha1_final(&ctx, digest);
}
