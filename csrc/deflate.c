/*
 * deflate.c — permessage-deflate (RFC 7692 §7.2) over zlib: compressing outgoing messages and
 * inflating incoming ones, with context takeover kept or reset as negotiated. See deflate.h
 * for who owns which stream; extensions.c does the negotiation.
 */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "deflate.h"

#define POOL_TX_MAX 16            /* distinct (window, memLevel, level) compressors shared */
#define INFLATE_FIRST (64u << 10) /* first heap buffer when the caller's room is spent */

static const uint8_t TAIL[4] = {0x00, 0x00, 0xff, 0xff};

/* ------------------------------------------------------------------ counting allocator */

/* zlib's allocations carry their size in front, so each stream's owner knows what it holds. */
typedef union zhdr {
    size_t size;
    max_align_t align;
} zhdr;

static voidpf z_alloc(voidpf opaque, uInt items, uInt size)
{
    size_t n = (size_t)items * size;
    if (size && n / size != items)
        return Z_NULL;
    zhdr *h = malloc(sizeof(zhdr) + n);
    if (!h)
        return Z_NULL;
    h->size = n;
    *(size_t *)opaque += n + sizeof(zhdr);
    return h + 1;
}

static void z_free(voidpf opaque, voidpf p)
{
    if (!p)
        return;
    zhdr *h = (zhdr *)p - 1;
    *(size_t *)opaque -= h->size + sizeof(zhdr);
    free(h);
}

/* A compressor (deflating = 1) or an inflater for raw deflate data with a 2^bits window, its
 * memory counted in *counter. */
static z_stream *stream_new(size_t *counter, int deflating, int bits, int mem_level, int level)
{
    z_stream *z = calloc(1, sizeof(*z));
    if (!z)
        return NULL;
    z->zalloc = z_alloc;
    z->zfree = z_free;
    z->opaque = counter;
    int r = deflating ? deflateInit2(z, level, Z_DEFLATED, -bits, mem_level, Z_DEFAULT_STRATEGY)
                      : inflateInit2(z, -bits);
    if (r != Z_OK) {
        free(z);
        return NULL;
    }
    *counter += sizeof(*z);
    return z;
}

static void stream_free(void *p, int deflating)
{
    z_stream *z = p;
    if (!z)
        return;
    size_t *counter = z->opaque;
    if (deflating)
        deflateEnd(z);
    else
        inflateEnd(z);
    *counter -= sizeof(*z);
    free(z);
}

/* ------------------------------------------------------------------ the pool */

typedef struct shared_tx {
    z_stream *z;
    uint8_t bits, mem_level, level;
} shared_tx;

struct pyws_zpool {
    shared_tx tx[POOL_TX_MAX];
    int ntx;
    unsigned evict;           /* next slot to replace when all are taken */
    z_stream *rx;             /* window 15: inflates any peer's message with no takeover */
    uint8_t *out;             /* compressed output of the last call */
    size_t out_cap;
    size_t mem;               /* zlib's bytes for the shared streams */
    uint64_t ndeflate;        /* frames compressed (statistics) */
    uint64_t ninflate;        /* messages inflated */
};

pyws_zpool *pw_zpool_new(void)
{
    return calloc(1, sizeof(pyws_zpool));
}

void pw_zpool_free(pyws_zpool *pool)
{
    if (!pool)
        return;
    for (int i = 0; i < pool->ntx; i++)
        stream_free(pool->tx[i].z, 1);
    stream_free(pool->rx, 0);
    free(pool->out);
    free(pool);
}

void pw_zpool_stats(const pyws_zpool *pool, uint64_t *deflated, uint64_t *inflated)
{
    *deflated = pool ? pool->ndeflate : 0;
    *inflated = pool ? pool->ninflate : 0;
}

size_t pw_zpool_memory(const pyws_zpool *pool)
{
    return pool ? pool->mem + pool->out_cap + sizeof(*pool) : 0;
}

static z_stream *pool_tx(pyws_zpool *pool, int bits, int mem_level, int level)
{
    for (int i = 0; i < pool->ntx; i++) {
        shared_tx *s = &pool->tx[i];
        if (s->bits == bits && s->mem_level == mem_level && s->level == level)
            return s->z;
    }
    shared_tx *s;
    if (pool->ntx == POOL_TX_MAX) {
        /* more parameter sets than slots: replace one in turn (they hold no context) */
        s = &pool->tx[pool->evict++ % POOL_TX_MAX];
        stream_free(s->z, 1);
        s->z = NULL;
    } else {
        s = &pool->tx[pool->ntx++];
    }
    z_stream *z = stream_new(&pool->mem, 1, bits, mem_level, level);
    if (!z) {
        *s = pool->tx[--pool->ntx]; /* drop the empty slot */
        return NULL;
    }
    s->z = z;
    s->bits = (uint8_t)bits;
    s->mem_level = (uint8_t)mem_level;
    s->level = (uint8_t)level;
    return z;
}

static int out_reserve(pyws_zpool *pool, size_t need)
{
    if (need <= pool->out_cap)
        return 0;
    size_t cap = pool->out_cap ? pool->out_cap : 4096;
    while (cap < need)
        cap *= 2;
    uint8_t *nb = realloc(pool->out, cap);
    if (!nb)
        return -1;
    pool->out = nb;
    pool->out_cap = cap;
    return 0;
}

/* Deflate in[0..len) with a sync flush into the pool's buffer; strip the tail if fin. */
static int run_deflate(z_stream *z, pyws_zpool *pool, const uint8_t *in, size_t len, int fin,
                       const uint8_t **out, size_t *out_len)
{
    size_t have = 0;
    if (len > UINT32_MAX / 2)
        return PYWS_Z_NOMEM; /* zlib counts in 32 bits; no message is this large */
    /* deflateBound covers a finished stream; a sync flush adds at most a few bytes more */
    if (out_reserve(pool, deflateBound(z, (uLong)len) + 16) < 0)
        return PYWS_Z_NOMEM;
    pool->ndeflate++;
    z->next_in = (Bytef *)(uintptr_t)in;
    z->avail_in = (uInt)len;
    for (;;) {
        z->next_out = pool->out + have;
        z->avail_out = (uInt)(pool->out_cap - have);
        int r = deflate(z, Z_SYNC_FLUSH);
        have = pool->out_cap - z->avail_out;
        if (r != Z_OK && r != Z_BUF_ERROR)
            return PYWS_Z_NOMEM; /* Z_STREAM_ERROR: cannot happen with a sound stream */
        if (z->avail_out != 0 && z->avail_in == 0)
            break;
        if (out_reserve(pool, pool->out_cap * 2) < 0)
            return PYWS_Z_NOMEM;
    }
    if (fin) {
        if (have >= 4 && memcmp(pool->out + have - 4, TAIL, 4) == 0) {
            have -= 4;
        } else {
            /* nothing came out (an empty message right after a flush): send one empty stored
             * block's header byte, which with the receiver's tail is an empty block */
            pool->out[0] = 0;
            have = 1;
        }
    }
    *out = pool->out;
    *out_len = have;
    return PYWS_Z_OK;
}

int pw_zpool_compress_once(pyws_zpool *pool, int bits, int mem_level, int level,
                             const uint8_t *in, size_t len, const uint8_t **out, size_t *out_len)
{
    z_stream *z = pool_tx(pool, bits, mem_level, level);
    if (!z)
        return PYWS_Z_NOMEM;
    int rc = run_deflate(z, pool, in, len, 1, out, out_len);
    deflateReset(z);
    return rc;
}

/* ------------------------------------------------------------------ per connection */

static int clamp(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

void pw_pmd_init(pyws_pmd *d, int role, const pyws_pmd_params *a, const pyws_opts *opts)
{
    memset(d, 0, sizeof(*d));
    int server = role == PYWS_ROLE_SERVER;
    int tx_max = server ? a->server_max_window_bits : a->client_max_window_bits;
    int rx_max = server ? a->client_max_window_bits : a->server_max_window_bits;
    int tx = clamp(opts->deflate_window_bits, 9, 15);
    if (tx_max > 0 && tx_max < tx)
        tx = tx_max; /* 8: cannot be honoured by zlib's deflate, so we send uncompressed */
    d->tx_bits = (uint8_t)(tx >= 9 ? tx : 0);
    d->rx_bits = (uint8_t)(rx_max > 0 ? clamp(rx_max, 9, 15) : 15);
    d->tx_reset = (uint8_t)((server ? a->server_no_context_takeover
                                    : a->client_no_context_takeover) ||
                            opts->deflate_no_context_takeover);
    d->rx_reset = (uint8_t)(server ? a->client_no_context_takeover
                                   : a->server_no_context_takeover);
    d->level = (uint8_t)clamp(opts->deflate_level, 0, 9);
    d->mem_level = (uint8_t)clamp(opts->deflate_mem_level, 1, 9);
    d->threshold = opts->deflate_threshold;
}

void pw_pmd_free(pyws_pmd *d)
{
    stream_free(d->tx, 1);
    stream_free(d->rx, 0);
    d->tx = d->rx = NULL;
}

int pw_pmd_wants(const pyws_pmd *d, size_t len, int fin, int flags)
{
    if (!d->tx_bits || (flags & PYWS_SEND_NO_COMPRESS))
        return 0;
    return !fin || len >= d->threshold || (flags & PYWS_SEND_COMPRESS);
}

int pw_pmd_compress(pyws_pmd *d, pyws_zpool *pool, const uint8_t *in, size_t len, int fin,
                      const uint8_t **out, size_t *out_len)
{
    if (d->tx_reset && !d->tx_frag && fin && !d->tx)
        return pw_zpool_compress_once(pool, d->tx_bits, d->mem_level, d->level, in, len, out,
                                        out_len);
    if (!d->tx) {
        d->tx = stream_new(&d->mem, 1, d->tx_bits, d->mem_level, d->level);
        if (!d->tx)
            return PYWS_Z_NOMEM;
    }
    int rc = run_deflate(d->tx, pool, in, len, fin, out, out_len);
    d->tx_frag = !fin;
    if (fin && d->tx_reset) {
        stream_free(d->tx, 1); /* no state between messages */
        d->tx = NULL;
    }
    return rc;
}

/* Grow the heap output to hold more; the part in `room` is copied over the first time. */
static int grow(uint8_t **heap, size_t *cap, uint64_t limit, const uint8_t *room, size_t have)
{
    size_t want = *cap ? *cap * 2 : (have * 2 > INFLATE_FIRST ? have * 2 : INFLATE_FIRST);
    if (limit && want > limit)
        want = (size_t)limit;
    if (want <= *cap)
        return -1;
    uint8_t *nb = realloc(*heap, want);
    if (!nb)
        return -1;
    if (!*heap && have)
        memcpy(nb, room, have);
    *heap = nb;
    *cap = want;
    return 0;
}

int pw_pmd_inflate(pyws_pmd *d, pyws_zpool *pool, const uint8_t *in, size_t len, uint64_t max,
                     uint8_t *room, size_t room_len, const uint8_t **out, size_t *out_len,
                     uint8_t **heap)
{
    *heap = NULL;
    *out = room;
    *out_len = 0;
    if (len == 0)
        return 0; /* an empty compressed payload: an empty message; the stream is untouched */
    if (len > UINT32_MAX / 2)
        return PYWS_CLOSE_TOO_BIG; /* zlib counts in 32 bits */
    pool->ninflate++;
    z_stream *z = d->rx;
    int shared = 0;
    if (!z && d->rx_reset) {
        if (!pool->rx && !(pool->rx = stream_new(&pool->mem, 0, 15, 0, 0)))
            return PYWS_Z_NOMEM;
        z = pool->rx;
        shared = 1;
    } else if (!z) {
        if (!(z = d->rx = stream_new(&d->mem, 0, d->rx_bits, 0, 0)))
            return PYWS_Z_NOMEM;
    }
    /* output capacity: never more than max + 1 bytes (one more than allowed shows a bomb) */
    uint64_t limit = max ? max + 1 : 0;
    uint8_t *buf = room;
    size_t cap = room_len;
    if (limit && cap > limit)
        cap = (size_t)limit;
    size_t hcap = 0;
    size_t have = 0;
    int tail = 0;
    int rc = 0;
    z->next_in = (Bytef *)(uintptr_t)in;
    z->avail_in = (uInt)len;
    for (;;) {
        if (z->avail_in == 0 && !tail) {
            z->next_in = (Bytef *)(uintptr_t)TAIL;
            z->avail_in = 4;
            tail = 1;
        }
        if (have == cap) {
            if (limit && have >= limit) {
                rc = PYWS_CLOSE_TOO_BIG;
                break;
            }
            if (grow(heap, &hcap, limit, room, have) < 0) {
                rc = PYWS_Z_NOMEM;
                break;
            }
            buf = *heap;
            cap = hcap;
        }
        z->next_out = buf + have;
        z->avail_out = (uInt)(cap - have > UINT32_MAX ? UINT32_MAX : cap - have);
        uInt before = z->avail_out;
        int r = inflate(z, Z_SYNC_FLUSH);
        have += before - z->avail_out;
        if (r == Z_STREAM_END) {
            /* the peer ended its stream (BFINAL): only our tail may follow */
            if (!tail && z->avail_in) {
                rc = PYWS_CLOSE_INVALID_DATA;
                break;
            }
            inflateReset(z);
            break;
        }
        if (r == Z_MEM_ERROR) {
            rc = PYWS_Z_NOMEM;
            break;
        }
        if (r != Z_OK && r != Z_BUF_ERROR) {
            rc = PYWS_CLOSE_INVALID_DATA;
            break;
        }
        if (tail && z->avail_in == 0 && z->avail_out != 0) {
            /* everything in, and zlib had room to spare. The message is whole only if the
             * tail was read as the empty stored block that ends it, leaving the decoder at a
             * block boundary (data_type bit 128); a truncated stream ends mid-block, having
             * taken the tail for part of its data. */
            if (!(z->data_type & 128))
                rc = PYWS_CLOSE_INVALID_DATA;
            break;
        }
        if (r == Z_BUF_ERROR && z->avail_out != 0 && z->avail_in != 0) {
            rc = PYWS_CLOSE_INVALID_DATA; /* no progress with input and room: cannot happen */
            break;
        }
    }
    if (limit && have >= limit && rc == 0)
        rc = PYWS_CLOSE_TOO_BIG;
    if (rc == 0) {
        *out = buf;
        *out_len = have;
    } else {
        free(*heap);
        *heap = NULL;
    }
    if (shared || rc != 0) /* shared: only peers with no context takeover use it */
        inflateReset(z);
    return rc;
}
