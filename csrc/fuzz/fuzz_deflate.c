/* libFuzzer harness: arbitrary bytes as permessage-deflate messages, and arbitrary extension
 * headers into both negotiations. Build and run: make fuzz (needs clang).
 *
 * Byte 0 picks the parameters (window, context takeover, the size limit, the room); the rest is
 * cut into messages at 0xFF 0xFE markers and inflated one after another on one connection, so
 * a stream left in a bad state by one message meets the next. Whatever the input: no crash,
 * no read out of bounds, never more than max bytes of output, and a compressed message made by
 * our own compressor from the inflated output inflates back to it. */
#include <stdlib.h>
#include <string.h>

#include "deflate.h"
#include "pyws.h"

static void negotiate(const uint8_t *data, size_t size)
{
    pyws_opts o;
    memset(&o, 0, sizeof(o));
    o.compression = 1;
    o.deflate_window_bits = 12;
    o.deflate_peer_window_bits = 12;
    pyws_str v = {(const char *)data, size};
    pyws_pmd_params a;
    char resp[160];
    if (pyws_pmd_negotiate(&v, 1, &o, &a, resp, sizeof(resp)) == 1) {
        /* what we answer must be what a client of ours accepts */
        pyws_str r = {resp, strlen(resp)};
        int accepted = 0;
        o.deflate_peer_no_context_takeover = 0;
        if (pyws_pmd_check_response(&r, 1, &o, &a, &accepted) != NULL || !accepted)
            abort();
    }
    int accepted;
    (void)pyws_pmd_check_response(&v, 1, &o, &a, &accepted);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    negotiate(data + 1, size - 1);
    uint8_t cfg = data[0];
    data++;
    size--;
    pyws_opts o;
    memset(&o, 0, sizeof(o));
    o.deflate_level = 6;
    o.deflate_mem_level = 5;
    o.deflate_window_bits = 9 + (cfg & 3) * 2;
    pyws_pmd_params a;
    memset(&a, 0, sizeof(a));
    a.client_max_window_bits = o.deflate_window_bits;
    a.client_no_context_takeover = (cfg >> 2) & 1;
    pyws_pmd rx, tx, back;
    pw_pmd_init(&rx, PYWS_ROLE_SERVER, &a, &o);
    pw_pmd_init(&tx, PYWS_ROLE_SERVER, &a, &o);
    pw_pmd_init(&back, PYWS_ROLE_CLIENT, &a, &o);
    pyws_zpool *pool = pw_zpool_new();
    uint64_t max = (cfg & 0x80) ? 4096 : 65536;
    size_t room_len = (cfg & 0x40) ? 0 : 1000;
    uint8_t *room = malloc(room_len ? room_len : 1);
    size_t start = 0;
    for (size_t i = 0; i <= size; i++) {
        if (i < size && !(i + 1 < size && data[i] == 0xFF && data[i + 1] == 0xFE))
            continue;
        size_t n = i - start;
        uint8_t *msg = malloc(n ? n : 1); /* exact size: ASan sees a read past the end */
        memcpy(msg, data + start, n);
        const uint8_t *out;
        size_t out_len;
        uint8_t *heap;
        int rc = pw_pmd_inflate(&rx, pool, msg, n, max, room, room_len, &out, &out_len, &heap);
        if (rc == 0) {
            if (out_len > max)
                abort();
            /* our compressor and inflater agree on whatever came out */
            const uint8_t *z;
            size_t zl;
            if (pw_pmd_compress(&tx, pool, out, out_len, 1, &z, &zl) == 0) {
                uint8_t *zc = malloc(zl ? zl : 1);
                memcpy(zc, z, zl);
                const uint8_t *o2;
                size_t l2;
                uint8_t *h2;
                if (pw_pmd_inflate(&back, pool, zc, zl, 0, NULL, 0, &o2, &l2, &h2) != 0 ||
                    l2 != out_len || (l2 && memcmp(o2, out, l2) != 0))
                    abort();
                free(h2);
                free(zc);
            }
        }
        free(heap);
        free(msg);
        start = i + 2;
        i++;
    }
    free(room);
    pw_pmd_free(&rx);
    pw_pmd_free(&tx);
    pw_pmd_free(&back);
    pw_zpool_free(pool);
    return 0;
}
