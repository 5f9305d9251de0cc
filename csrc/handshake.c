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
 * pyws_handshake_format_response() and pyws_handshake_format_request() write the two heads
 * of the handshake (the server's 101, the client's GET) into a caller's buffer: every input is
 * checked first (tokens, header values without CR/LF, whole "Name: value\r\n" lines), the
 * length is counted in a first pass, and the bytes are written in a second one only when they
 * fit, so a buffer too small is never written at all.
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
    pyws_str version = pw_http_trim(headers[i].value);
    if (version.len != 2 || memcmp(version.ptr, "13", 2) != 0)
        return fail(hs, 426, "unsupported Sec-WebSocket-Version (only 13 is supported)");

    i = find_single(headers, n, "sec-websocket-key");
    if (i == -1)
        return fail(hs, 400, "missing Sec-WebSocket-Key header");
    if (i == -2)
        return fail(hs, 400, "duplicated Sec-WebSocket-Key header");
    pyws_str key = pw_http_trim(headers[i].value);
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
    pw_sha1_init(&ctx);
    if (key_len > 0)
        pw_sha1_update(&ctx, (const uint8_t *)key, key_len);
    pw_sha1_update(&ctx, (const uint8_t *)PYWS_WS_GUID, sizeof PYWS_WS_GUID - 1);
    pw_sha1_final(&ctx, digest);
    pyws_base64_encode(digest, sizeof digest, out);
}

int pyws_protocol_offered(pyws_str offered, const char *protocol)
{
    return pw_http_list_has(offered, protocol, 0);
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

/* ---------------------------------------------------------------- formatting both heads */

/* Output of the two-pass formatters: the first pass (out NULL) only counts, the second writes.
 * `over` records a length that no longer fits in size_t (then nothing is written). */
typedef struct writer {
    char *out;
    size_t len;
    int over;
} writer;

static void put(writer *w, const char *p, size_t n)
{
    if (w->over || n > SIZE_MAX - w->len) {
        w->over = 1;
        return;
    }
    if (w->out && n)
        memcpy(w->out + w->len, p, n);
    w->len += n;
}

static void puts_(writer *w, const char *s)
{
    put(w, s, strlen(s));
}

/* "Name: value\r\n" */
static void header(writer *w, const char *name, const char *value)
{
    puts_(w, name);
    put(w, ": ", 2);
    puts_(w, value);
    put(w, "\r\n", 2);
}

static int present(const char *s)
{
    return s && *s;
}

/* RFC 9110 §5.6.2 tchar */
static int tchar(unsigned char ch)
{
    if ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z'))
        return 1;
    return ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

/* Length of the token at s (0 if none). */
static size_t token_len(const char *s)
{
    size_t n = 0;
    while (tchar((unsigned char)s[n]))
        n++;
    return n;
}

/* A header field value: HTAB, visible ASCII, space, obs-text; no CR, LF or other controls. */
static int value_ok(const char *s)
{
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch != '\t' && (ch < 0x20 || ch == 0x7f))
            return 0;
    }
    return 1;
}

/* A comma list of tokens ("chat, superchat"), spaces and tabs allowed around the commas. */
static int token_list_ok(const char *s)
{
    for (;;) {
        while (*s == ' ' || *s == '\t')
            s++;
        size_t n = token_len(s);
        if (n == 0)
            return 0;
        s += n;
        while (*s == ' ' || *s == '\t')
            s++;
        if (*s == 0)
            return 1;
        if (*s++ != ',')
            return 0;
    }
}

/* Header lines, each "name: value\r\n" with a token name and a field value; "" is none. */
static int lines_ok(const char *s)
{
    while (*s) {
        size_t n = token_len(s);
        if (n == 0 || s[n] != ':')
            return 0;
        s += n + 1;
        for (; *s != '\r'; s++) {
            unsigned char ch = (unsigned char)*s;
            if (ch == 0 || (ch != '\t' && (ch < 0x20 || ch == 0x7f)))
                return 0;
        }
        if (s[1] != '\n')
            return 0;
        s += 2;
    }
    return 1;
}

/* Visible characters (and obs-text), at least one: a request-target or a Host name. */
static int visible_ok(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch <= 0x20 || ch == 0x7f)
            return 0;
    }
    return 1;
}

/* strlen(s), but at most max + 1: enough to tell "longer than max" */
static size_t bounded_len(const char *s, size_t max)
{
    size_t n = 0;
    while (n <= max && s[n])
        n++;
    return n;
}

/* s is exactly `want` chars of canonical base64 for `decoded` bytes. */
static int base64_len_ok(const char *s, size_t want, size_t decoded)
{
    uint8_t raw[33];
    size_t n = bounded_len(s, want);
    return n == want && decoded <= sizeof raw && pyws_base64_decode(s, n, raw) == (long)decoded;
}

/* Run the pass that writes when the counting pass says it fits. */
static int64_t finish(writer *count, char *out, size_t cap,
                      void (*build)(const void *, writer *), const void *arg)
{
    if (count->over || count->len > (uint64_t)INT64_MAX)
        return PYWS_ERR_ARG;
    if (count->len > cap || !out)
        return -(int64_t)count->len;
    writer w = {out, 0, 0};
    build(arg, &w);
    return (int64_t)w.len;
}

static void build_response(const void *arg, writer *w)
{
    const pyws_handshake_reply *r = arg;
    puts_(w, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n");
    header(w, "Sec-WebSocket-Accept", r->accept);
    if (present(r->protocol))
        header(w, "Sec-WebSocket-Protocol", r->protocol);
    if (present(r->extensions))
        header(w, "Sec-WebSocket-Extensions", r->extensions);
    if (present(r->extra_headers))
        puts_(w, r->extra_headers);
    put(w, "\r\n", 2);
}

int64_t pyws_handshake_format_response(const pyws_handshake_reply *r, char *out, size_t cap)
{
    if (!r || !r->accept || !base64_len_ok(r->accept, PYWS_ACCEPT_LEN, 20))
        return PYWS_ERR_ARG;
    if (present(r->protocol) && r->protocol[token_len(r->protocol)] != 0)
        return PYWS_ERR_ARG; /* exactly one subprotocol: a single token */
    if (present(r->extensions) && !value_ok(r->extensions))
        return PYWS_ERR_ARG;
    if (present(r->extra_headers) && !lines_ok(r->extra_headers))
        return PYWS_ERR_ARG;
    writer count = {NULL, 0, 0};
    build_response(r, &count);
    return finish(&count, out, cap, build_response, r);
}

static void build_request(const void *arg, writer *w)
{
    const pyws_handshake_request *r = arg;
    put(w, "GET ", 4);
    puts_(w, present(r->path) ? r->path : "/");
    put(w, " HTTP/1.1\r\nHost: ", 17);
    int v6 = strchr(r->host, ':') != NULL;
    if (v6)
        put(w, "[", 1);
    puts_(w, r->host);
    if (v6)
        put(w, "]", 1);
    if (r->port) {
        char digits[8];
        size_t n = 0;
        char rev[8];
        for (unsigned p = (unsigned)r->port; p; p /= 10)
            rev[n++] = (char)('0' + p % 10);
        for (size_t i = 0; i < n; i++)
            digits[i] = rev[n - 1 - i];
        put(w, ":", 1);
        put(w, digits, n);
    }
    puts_(w, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n");
    header(w, "Sec-WebSocket-Key", r->key);
    puts_(w, "Sec-WebSocket-Version: 13\r\n");
    if (present(r->protocols))
        header(w, "Sec-WebSocket-Protocol", r->protocols);
    if (present(r->extensions))
        header(w, "Sec-WebSocket-Extensions", r->extensions);
    if (r->origin)
        header(w, "Origin", r->origin);
    if (present(r->extra_headers))
        puts_(w, r->extra_headers);
    put(w, "\r\n", 2);
}

int64_t pyws_handshake_format_request(const pyws_handshake_request *r, char *out, size_t cap)
{
    if (!r || !r->host || !visible_ok(r->host) || strpbrk(r->host, "[]/?#@") ||
        r->port < 0 || r->port > 65535)
        return PYWS_ERR_ARG;
    if (present(r->path) && (r->path[0] != '/' || !visible_ok(r->path) || strchr(r->path, '#')))
        return PYWS_ERR_ARG;
    if (!r->key || !base64_len_ok(r->key, 24, 16))
        return PYWS_ERR_ARG;
    if (present(r->protocols) && !token_list_ok(r->protocols))
        return PYWS_ERR_ARG;
    if (present(r->extensions) && !value_ok(r->extensions))
        return PYWS_ERR_ARG;
    if (r->origin && !value_ok(r->origin))
        return PYWS_ERR_ARG;
    if (present(r->extra_headers) && !lines_ok(r->extra_headers))
        return PYWS_ERR_ARG;
    writer count = {NULL, 0, 0};
    build_request(r, &count);
    return finish(&count, out, cap, build_request, r);
}
