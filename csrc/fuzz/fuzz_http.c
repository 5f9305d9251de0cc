/* libFuzzer harness: arbitrary bytes into the HTTP request and response parsers and the
 * handshake check. Build and run: make fuzz (needs clang). */
#include <stdlib.h>
#include <string.h>

#include "pyws.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pyws_http_head head;
    pyws_header headers[32];
    char *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    int r = pyws_http_parse_request(copy, size, 4096, &head, headers, 32);
    if (r > 0) {
        pyws_handshake hs;
        pyws_handshake_check(&head, headers, &hs);
        uint64_t cl;
        (void)pyws_http_content_length(headers, head.num_headers, &cl);
        if (hs.status == 0)
            (void)pyws_protocol_offered(hs.protocols, "chat");
    }
    (void)pyws_http_parse_response(copy, size, 4096, &head, headers, 32);
    free(copy);
    return 0;
}
