/* libFuzzer harness: arbitrary bytes, in arbitrary splits, into a session, compressed messages
 * included. Build and run: make fuzz (needs clang).
 *
 * Byte 0 picks the split size. Byte 1: bit 0 the role; bit 1 permessage-deflate agreed (RSV1
 * legal on a message's first frame, and compressed messages go through pyws_session_inflate
 * as a driver would); bit 2 the peer resets its compressor after each message (the inflater
 * borrows the pool's shared stream); bit 3 no output room (everything inflates to the heap),
 * else 1000 bytes of room; bits 4-5 the peer's window (9, 11, 13, 15 bits); bit 6 a 1 KiB
 * message limit instead of 64 KiB. The rest is the byte stream from the peer.
 *
 * Whatever the input: no crash, no read out of bounds, no leak, and every MESSAGE delivered is
 * at most max_message bytes, readable to its last byte, and valid UTF-8 if it is TEXT. */
#include <stdlib.h>
#include <string.h>

#include "deflate.h"
#include "pyws.h"

#define ROOM 1000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t step = (size_t)data[0] % 17 + 1;
    uint8_t cfg = data[1];
    int role = cfg & 1;
    int deflate = (cfg >> 1) & 1;
    uint64_t max = (cfg & 0x40) ? 1024 : 1 << 16;
    data += 2;
    size -= 2;
    uint8_t *copy = malloc(size ? size : 1);
    uint8_t *room = malloc(ROOM);
    if (!copy || !room) {
        free(copy);
        free(room);
        return 0;
    }
    memcpy(copy, data, size);
    size_t room_len = (cfg & 8) ? 0 : ROOM;

    pyws_session s;
    pyws_session_init(&s, role, max);
    pyws_session_set_limits(&s, max, 64);
    pyws_pmd pmd;
    pyws_zpool *pool = NULL;
    if (deflate) {
        pyws_opts o;
        memset(&o, 0, sizeof(o));
        o.deflate_level = 6;
        o.deflate_mem_level = 5;
        o.deflate_window_bits = 12;
        pyws_pmd_params a;
        memset(&a, 0, sizeof(a));
        a.server_max_window_bits = a.client_max_window_bits = 9 + ((cfg >> 4) & 3) * 2;
        a.server_no_context_takeover = a.client_no_context_takeover = (cfg >> 2) & 1;
        pw_pmd_init(&pmd, role, &a, &o);
        pool = pw_zpool_new();
        pyws_session_enable_deflate(&s);
    }

    size_t pos = 0;
    while (pos < size) {
        size_t n = size - pos < step ? size - pos : step;
        size_t off = 0;
        while (off < n) {
            size_t used = 0;
            pyws_sess_event ev;
            uint8_t *retired = NULL;
            int k = pyws_session_feed(&s, copy + pos + off, n - off, &used, &ev, &retired);
            free(retired);
            off += used;
            uint8_t *heap = NULL;
            if (k == PYWS_SESS_MESSAGE && ev.compressed) {
                if (!deflate)
                    abort(); /* RSV1 got through without the extension */
                k = pyws_session_inflate(&s, &pmd, pool, &ev, room_len ? room : NULL, room_len,
                                         &heap);
                if (k == PYWS_SESS_ERROR && heap)
                    abort(); /* a failed inflate leaves nothing to free */
            }
            if (k == PYWS_SESS_MESSAGE) {
                if (ev.len > max)
                    abort();
                if (ev.len)
                    (void)ev.data[ev.len - 1]; /* the view must be readable */
                if (ev.opcode == PYWS_OP_TEXT && !pyws_utf8_valid(ev.data, ev.len))
                    abort();
            }
            free(heap);
            if (k == PYWS_SESS_NONE)
                break;
            pyws_session_release(&s, 4096);
        }
        pos += n;
    }
    pyws_session_free(&s);
    if (deflate) {
        pw_pmd_free(&pmd);
        pw_zpool_free(pool);
    }
    free(room);
    free(copy);
    return 0;
}
