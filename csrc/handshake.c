/*
 * handshake.c — the server side of the opening handshake (RFC 6455 §4.2.1, §4.2.2): checking an
 * upgrade request, the Sec-WebSocket-Accept value, and subprotocol matching.
 *
 * pyws_handshake_check() checks, in this order, and stops at the first failure:
 *   1. method is exactly "GET" (case-sensitive)                        else 400
 *   2. HTTP/1.1 or later (version_minor >= 1)                          else 400
 *   3. exactly one Host header (its value may be empty)                else 400
 *   4. some Upgrade header has the token "websocket" (any case)        else 400
 *   5. some Connection header has the token "upgrade" (any case)       else 400
 *   6. Sec-WebSocket-Version: missing -> 426; more than once -> 400; trimmed value other than
 *      "13" -> 426. A missing version is 426 rather than 400 so that pre-RFC clients (hixie-76,
 *      which sends no version) learn which version we speak. The caller answering 426 must
 *      send "Sec-WebSocket-Version: 13" (§4.2.2).
 *   7. exactly one Sec-WebSocket-Key whose value, trimmed of SP/HTAB, is canonical base64 of
 *      exactly 16 bytes                                                else 400
 * Version is checked before the key so that a client speaking another version gets 426 even if
 * its key is missing or shaped differently.
 *
 * Whether the request asks for a WebSocket upgrade at all is a separate question, answered in
 * hs->requested: 1 when some Upgrade header has the token "websocket" (any case), whatever else
 * the request holds. Such a request is answered by the server itself when the check fails
 * (upgrade.c), never handed to the application as plain HTTP; a request without that token
 * (no Upgrade header, or "Upgrade: h2c") is plain HTTP, and its status (always 400: the check
 * fails at step 4 at the latest) only matters if the application tries to upgrade it anyway.
 *
 * Every field of *hs is written. protocols and extensions are views of the first occurrence of
 * their headers (empty when absent), filled even when the check fails. When
 * Sec-WebSocket-Protocol appears more than once, protocols_multi = 1 and protocols is still the
 * first value only; a caller that wants every offer walks the headers with pyws_http_find. accept
 * is set (NUL-terminated) only on success, and is "" otherwise.
 */
#include "handshake.h"

#include "http.h"

#include <string.h>

static pyws_str empty_str(void)
{
    pyws_str s;
    s.ptr = NULL;
    s.len = 0;
    return s;
}

static int fail(pyws_handshake *hs, int status, const char *why)
{
    hs->status = status;
    hs->error = why;
    return 0;
}

/* Index of the only header called name: -1 when absent, -2 when present more than once. */
static int find_single(const pyws_header *headers, size_t n, const char *name)
{
    int i = pyws_http_find(headers, n, name, 0);
    if (i < 0)
        return -1;
    if (pyws_http_find(headers, n, name, (size_t)i + 1) >= 0)
        return -2;
    return i;
}

/* 1 if any header called name has token in its comma list; *present says whether any exists. */
static int any_has_token(const pyws_header *headers, size_t n, const char *name,
                         const char *token, int *present)
{
    *present = 0;
    for (int i = pyws_http_find(headers, n, name, 0); i >= 0;
         i = pyws_http_find(headers, n, name, (size_t)i + 1)) {
        *present = 1;
        if (pyws_http_has_token(headers[i].value, token))
            return 1;
    }
    return 0;
}

static int check(const pyws_http_head *head, const pyws_header *headers, pyws_handshake *hs)
{
    size_t n = head->num_headers;
    int i, present;

    i = pyws_http_find(headers, n, "sec-websocket-protocol", 0);
    if (i >= 0) {
        hs->protocols = headers[i].value;
        if (pyws_http_find(headers, n, "sec-websocket-protocol", (size_t)i + 1) >= 0)
            hs->protocols_multi = 1;
    }
    i = pyws_http_find(headers, n, "sec-websocket-extensions", 0);
    if (i >= 0)
        hs->extensions = headers[i].value;

    if (head->method.len != 3 || memcmp(head->method.ptr, "GET", 3) != 0)
        return fail(hs, 400, "the method of a WebSocket upgrade must be GET");
    if (head->version_minor < 1)
        return fail(hs, 400, "a WebSocket upgrade needs HTTP/1.1 or later");

    i = find_single(headers, n, "host");
    if (i == -1)
        return fail(hs, 400, "missing Host header");
    if (i == -2)
        return fail(hs, 400, "duplicated Host header");

    if (!any_has_token(headers, n, "upgrade", "websocket", &present))
        return fail(hs, 400, present ? "Upgrade header does not name websocket"
                                     : "missing Upgrade header");
    if (!any_has_token(headers, n, "connection", "upgrade", &present))
        return fail(hs, 400, present ? "Connection header lacks the upgrade token"
                                     : "missing Connection: Upgrade header");

    i = find_single(headers, n, "sec-websocket-version");
    if (i == -1)
        return fail(hs, 426, "missing Sec-WebSocket-Version header (only 13 is supported)");
    if (i == -2)
        return fail(hs, 400, "duplicated Sec-WebSocket-Version header");
    pyws_str version = pyws_http_trim(headers[i].value);
    if (version.len != 2 || memcmp(version.ptr, "13", 2) != 0)
        return fail(hs, 426, "unsupported Sec-WebSocket-Version (only 13 is supported)");

    i = find_single(headers, n, "sec-websocket-key");
    if (i == -1)
        return fail(hs, 400, "missing Sec-WebSocket-Key header");
    if (i == -2)
        return fail(hs, 400, "duplicated Sec-WebSocket-Key header");
    pyws_str key = pyws_http_trim(headers[i].value);
    uint8_t nonce[18];                       /* 3 * 24 / 4 */
    if (key.len != 24 || pyws_base64_decode(key.ptr, key.len, nonce) != 16)
        return fail(hs, 400, "Sec-WebSocket-Key must be 16 bytes in base64");

    pyws_accept_key(key.ptr, key.len, hs->accept);
    return 1;
}

void pyws_handshake_check(const pyws_http_head *head, const pyws_header *headers,
                          pyws_handshake *hs)
{
    hs->status = 0;
    hs->error = NULL;
    hs->accept[0] = '\0';
    hs->protocols = empty_str();
    hs->protocols_multi = 0;
    hs->extensions = empty_str();
    hs->requested = 0;
    if (head == NULL) {
        fail(hs, 400, "no request");
        return;
    }
    int present;
    hs->requested = any_has_token(headers, head->num_headers, "upgrade", "websocket", &present);
    check(head, headers, hs);
}

void pyws_accept_key(const char *key, size_t key_len, char *out)
{
    pyws_sha1_ctx ctx;
    uint8_t digest[PYWS_SHA1_LEN];
    pyws_sha1_init(&ctx);
    if (key_len > 0)
        pyws_sha1_update(&ctx, (const uint8_t *)key, key_len);
    pyws_sha1_update(&ctx, (const uint8_t *)PYWS_WS_GUID, sizeof PYWS_WS_GUID - 1);
    pyws_sha1_final(&ctx, digest);
    pyws_base64_encode(digest, sizeof digest, out);
}

int pyws_protocol_offered(pyws_str offered, const char *protocol)
{
    return pyws_http_list_has(offered, protocol, 0);
}

/* ---------------------------------------------------------------- the client's side (§4.1) */

void pyws_client_key(const uint8_t *random16, char *key_out)
{
    pyws_base64_encode(random16, 16, key_out);
}

const char *pyws_handshake_check_response(const pyws_http_head *head, const pyws_header *headers,
                                          const char *key, const char *offered_protocols,
                                          pyws_str *protocol)
{
    size_t n = head->num_headers;
    int i, present;
    *protocol = empty_str();
    if (head->status != 101)
        return "the server did not answer 101 Switching Protocols";
    if (!any_has_token(headers, n, "upgrade", "websocket", &present))
        return "the 101 response lacks Upgrade: websocket";
    if (!any_has_token(headers, n, "connection", "upgrade", &present))
        return "the 101 response lacks Connection: Upgrade";
    i = find_single(headers, n, "sec-websocket-accept");
    if (i < 0)
        return "the 101 response has no single Sec-WebSocket-Accept";
    char expect[PYWS_ACCEPT_LEN + 1];
    pyws_accept_key(key, strlen(key), expect);
    pyws_str acc = headers[i].value;
    if (acc.len != PYWS_ACCEPT_LEN || memcmp(acc.ptr, expect, PYWS_ACCEPT_LEN) != 0)
        return "Sec-WebSocket-Accept does not match the key we sent";
    i = find_single(headers, n, "sec-websocket-protocol");
    if (i == -2)
        return "the server selected more than one subprotocol";
    if (i >= 0) {
        pyws_str chosen = headers[i].value;
        pyws_str offered = {offered_protocols, offered_protocols ? strlen(offered_protocols) : 0};
        char name[256];
        if (chosen.len == 0 || chosen.len >= sizeof(name) || !offered_protocols)
            return "the server selected a subprotocol we did not offer";
        memcpy(name, chosen.ptr, chosen.len);
        name[chosen.len] = 0;
        if (strchr(name, ',') || !pyws_protocol_offered(offered, name))
            return "the server selected a subprotocol we did not offer";
        *protocol = chosen;
    }
    return NULL;
}
