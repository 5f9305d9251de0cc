/*
 * handshake.h — internal declarations for handshake.c and the digests it uses (sha1.c,
 * base64.c). Not part of the public API: pyws.h declares pyws_handshake_check, pyws_accept_key,
 * pyws_protocol_offered, pyws_sha1 and pyws_base64_*.
 */
#ifndef PYWS_HANDSHAKE_INTERNAL_H
#define PYWS_HANDSHAKE_INTERNAL_H

#include "pyws.h"

/* RFC 6455 §1.3: appended to Sec-WebSocket-Key before hashing. */
#define PYWS_WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* Streaming SHA-1 (FIPS 180-4 §6.1), sha1.c. init, then update any number of times with any
 * split of the message, then final, which writes the 20-byte digest. pyws_sha1() is the one-shot
 * form. The context holds no pointers and needs no cleanup. */
typedef struct pyws_sha1_ctx {
    uint32_t h[5];            /* intermediate hash value H(i) */
    uint64_t total;           /* message bytes hashed so far */
    uint8_t block[64];        /* the message block being filled */
    size_t used;              /* bytes of block[] filled (0..63 between calls) */
} pyws_sha1_ctx;

#define PYWS_SHA1_LEN 20

void pw_sha1_init(pyws_sha1_ctx *ctx);
void pw_sha1_update(pyws_sha1_ctx *ctx, const uint8_t *data, size_t len);
void pw_sha1_final(pyws_sha1_ctx *ctx, uint8_t *digest);

#endif /* PYWS_HANDSHAKE_INTERNAL_H */
