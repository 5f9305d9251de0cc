/*
 * deflate.h — permessage-deflate's compression side (deflate.c): zlib streams per connection
 * and a per-loop pool of shared ones. Internal to the engine (pyws.h has the negotiation).
 *
 * Memory rule: a connection keeps a zlib stream only for a direction that keeps its context
 * between messages. A direction with no context takeover borrows a stream from the pool for
 * the length of one message (the pool has one per set of parameters, reset after each use), so
 * such a connection holds no zlib state between messages. The one exception is an outgoing
 * message sent in fragments: its compressor lives on the connection until the last fragment.
 */
#ifndef PYWS_DEFLATE_H
#define PYWS_DEFLATE_H

#include <stddef.h>
#include <stdint.h>

#include "pyws.h"

/* pyws.h declares the pyws_zpool and pyws_pmd typedefs (pyws_session_inflate takes them). */

struct pyws_pmd {
    uint8_t tx_bits;          /* our compressor's window, 9..15; 0: we never compress (the
                                 peer allowed only 8, which zlib cannot produce) */
    uint8_t rx_bits;          /* the window we inflate with, 9..15 */
    uint8_t tx_reset;         /* no context takeover for what we send */
    uint8_t rx_reset;         /* ... for what we receive */
    uint8_t level;            /* zlib level 0..9 */
    uint8_t mem_level;        /* zlib memLevel 1..9 */
    uint8_t tx_frag;          /* a compressed message is being sent in fragments */
    uint32_t threshold;       /* messages shorter than this go uncompressed */
    void *tx;                 /* z_stream *, kept on the connection (see above), or NULL */
    void *rx;                 /* z_stream *, or NULL */
    size_t mem;               /* bytes zlib allocated for this connection's streams */
};

#define PYWS_Z_OK 0
#define PYWS_Z_NOMEM -1

pyws_zpool *pw_zpool_new(void);
void pw_zpool_free(pyws_zpool *pool);
void pw_zpool_stats(const pyws_zpool *pool, uint64_t *deflated, uint64_t *inflated);
/* Bytes the pool holds (shared streams and the output buffer). */
size_t pw_zpool_memory(const pyws_zpool *pool);

/* Set d up for `role` from the agreed parameters and our options. */
void pw_pmd_init(pyws_pmd *d, int role, const pyws_pmd_params *agreed, const pyws_opts *opts);
void pw_pmd_free(pyws_pmd *d);

/* 1 if a message (or first fragment) of len bytes should be compressed, given the send flags
 * (PYWS_SEND_NO_COMPRESS, PYWS_SEND_COMPRESS). */
int pw_pmd_wants(const pyws_pmd *d, size_t len, int fin, int flags);

/* Compress one frame's worth of a message. The first call of a message decides: fin = 1 is a
 * whole message; fin = 0 starts one sent in fragments, continued by more calls until one with
 * fin = 1. *out views the pool's buffer until the next call on the pool. The last frame of a
 * message has the trailing 00 00 ff ff removed (RFC 7692 §7.2.1). PYWS_Z_OK or PYWS_Z_NOMEM. */
int pw_pmd_compress(pyws_pmd *d, pyws_zpool *pool, const uint8_t *in, size_t len, int fin,
                      const uint8_t **out, size_t *out_len);

/* Inflate a whole message's payload (the compressed bytes of all its frames, without the tail,
 * which this appends). Output goes to room[0..room_len) while it fits, then to a heap buffer
 * (*heap, which the caller frees) that grows to at most max + 1 bytes, so a small compressed
 * bomb costs at most max bytes before it is refused. max = 0: no limit.
 * Returns 0 (*out, *out_len: the message), PYWS_CLOSE_TOO_BIG, PYWS_CLOSE_INVALID_DATA (not
 * valid DEFLATE data) or PYWS_Z_NOMEM. */
int pw_pmd_inflate(pyws_pmd *d, pyws_zpool *pool, const uint8_t *in, size_t len, uint64_t max,
                     uint8_t *room, size_t room_len, const uint8_t **out, size_t *out_len,
                     uint8_t **heap);

/* The compressed frame of a whole message for every connection with no context takeover on
 * its sending side and these parameters (publish compresses once for all of them): same as
 * pw_pmd_compress on a fresh stream. */
int pw_zpool_compress_once(pyws_zpool *pool, int bits, int mem_level, int level,
                             const uint8_t *in, size_t len, const uint8_t **out, size_t *out_len);

#endif
