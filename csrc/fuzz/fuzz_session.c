/* libFuzzer harness: arbitrary bytes, in arbitrary splits, into a session.
 * Build and run: make fuzz (needs clang). The first input byte picks the split size, the
 * second the role (bit 0) and whether permessage-deflate was agreed (bit 1). */
#include <stdlib.h>
#include <string.h>

#include "pyws.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t step = (size_t)data[0] % 17 + 1;
    int role = data[1] & 1;
    data += 2;
    size -= 2;
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    pyws_session s;
    pyws_session_init(&s, role, 1 << 16);
    if (data[-1] & 2)
        s.parser.rsv_allowed = 0x40; /* permessage-deflate agreed: RSV1 rules apply */
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
            if (k == PYWS_SESS_MESSAGE && ev.len)
                (void)ev.data[ev.len - 1]; /* the view must be readable */
            if (k == PYWS_SESS_NONE)
                break;
            pyws_session_release(&s, 4096);
        }
        pos += n;
    }
    pyws_session_free(&s);
    free(copy);
    return 0;
}
