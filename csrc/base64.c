/*
 * base64.c — base64 with the standard alphabet and '=' padding (RFC 4648 §4). Encoding always
 * pads. Decoding accepts only the canonical form (RFC 4648 §3.5): length a multiple of 4, no
 * whitespace or line breaks, '=' only as the last one or two characters, and the unused low bits
 * of the last data character zero. So each byte string has exactly one accepted encoding.
 */
#include "handshake.h"

#include <limits.h>

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* The 6-bit value of a base64 character, or -1. */
static int sextet(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

size_t pyws_base64_encode(const uint8_t *data, size_t len, char *out)
{
    size_t o = 0, i = 0;
    for (; len - i >= 3; i += 3) {
        uint32_t v = ((uint32_t)data[i] << 16) | ((uint32_t)data[i + 1] << 8) | data[i + 2];
        out[o++] = alphabet[(v >> 18) & 63];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = alphabet[(v >> 6) & 63];
        out[o++] = alphabet[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)data[i] << 16;
        out[o++] = alphabet[(v >> 18) & 63];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (len - i == 2) {
        uint32_t v = ((uint32_t)data[i] << 16) | ((uint32_t)data[i + 1] << 8);
        out[o++] = alphabet[(v >> 18) & 63];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = alphabet[(v >> 6) & 63];
        out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

/* On failure, out[] may have been partly written. */
long pyws_base64_decode(const char *in, size_t len, uint8_t *out)
{
    if (len % 4 != 0 || len / 4 > (size_t)(LONG_MAX / 3))
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        int last = (i + 4 == len);
        const unsigned char *q = (const unsigned char *)in + i;
        int a = sextet(q[0]), b = sextet(q[1]);
        if (a < 0 || b < 0)
            return -1;
        if (last && q[2] == '=') {
            if (q[3] != '=' || (b & 0x0f) != 0)
                return -1;
            out[o++] = (uint8_t)((a << 2) | (b >> 4));
            break;
        }
        int c = sextet(q[2]);
        if (c < 0)
            return -1;
        if (last && q[3] == '=') {
            if ((c & 0x03) != 0)
                return -1;
            out[o++] = (uint8_t)((a << 2) | (b >> 4));
            out[o++] = (uint8_t)(((b & 0x0f) << 4) | (c >> 2));
            break;
        }
        int d = sextet(q[3]);
        if (d < 0)
            return -1;
        out[o++] = (uint8_t)((a << 2) | (b >> 4));
        out[o++] = (uint8_t)(((b & 0x0f) << 4) | (c >> 2));
        out[o++] = (uint8_t)(((c & 0x03) << 6) | d);
    }
    return (long)o;
}
