/*
 * test_handshake_format.c — the two handshake heads handshake.c writes into a caller's buffer:
 * pyws_handshake_format_response (the server's 101) and pyws_handshake_format_request (the
 * client's GET).
 *
 *   - A table of inputs and the exact bytes each must give.
 *   - For each of them, every buffer size from 0 to the needed length minus one: the return is
 *     -(needed) and not one byte of the buffer changes; the needed length itself gives the
 *     bytes. Each output buffer ends right before a guard page (mmap + mprotect PROT_NONE), and
 *     each input string ends right before another one, so a write past cap or a read past a
 *     string's NUL faults at once.
 *   - A table of inputs that must be refused (PYWS_ERR_ARG), with nothing written.
 *   - The heads written are what the protocol half reads: the request passes
 *     pyws_handshake_check and the response pyws_handshake_check_response.
 *
 * Prints "N passed, M failed"; exits 1 on any failure.
 */
#define _DEFAULT_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "pyws.h"

#include "check.h"

/* ------------------------------------------------------------------ guarded memory */

typedef struct guarded {
    uint8_t *map;
    size_t map_len;
    uint8_t *p;   /* the n usable bytes, ending at the guard page */
} guarded;

static size_t page_size(void)
{
    return (size_t)sysconf(_SC_PAGESIZE);
}

/* n bytes whose last one sits right before a PROT_NONE page. */
static guarded guard_alloc(size_t n)
{
    size_t pg = page_size();
    size_t body = (n + pg - 1) / pg * pg;
    if (body == 0)
        body = pg;
    guarded g;
    g.map_len = body + pg;
    g.map = mmap(NULL, g.map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g.map == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    if (mprotect(g.map + body, pg, PROT_NONE) != 0) {
        perror("mprotect");
        exit(2);
    }
    g.p = g.map + body - n;
    return g;
}

static void guard_free(guarded *g)
{
    munmap(g->map, g->map_len);
}

/* Up to 12 input strings per case, each copied to end (with its NUL) at a guard page. */
typedef struct inputs {
    guarded g[12];
    int n;
} inputs;

static const char *in_copy(inputs *in, const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    guarded *g = &in->g[in->n++];
    *g = guard_alloc(n);
    memcpy(g->p, s, n);
    return (const char *)g->p;
}

static void in_free(inputs *in)
{
    for (int i = 0; i < in->n; i++)
        guard_free(&in->g[i]);
    in->n = 0;
}

/* ------------------------------------------------------------------ the tables */

#define KEY "dGhlIHNhbXBsZSBub25jZQ=="          /* RFC 6455 §1.3's example */
#define ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="   /* ... and its accept value */

typedef struct resp_case {
    const char *name;
    pyws_handshake_reply r;
    const char *expect;          /* NULL: PYWS_ERR_ARG */
} resp_case;

#define HEAD101 "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"

static const resp_case resp_cases[] = {
    {"accept only", {ACCEPT, NULL, NULL, NULL},
     HEAD101 "Sec-WebSocket-Accept: " ACCEPT "\r\n\r\n"},
    {"empty strings are none", {ACCEPT, "", "", ""},
     HEAD101 "Sec-WebSocket-Accept: " ACCEPT "\r\n\r\n"},
    {"a subprotocol", {ACCEPT, "chat", NULL, NULL},
     HEAD101 "Sec-WebSocket-Accept: " ACCEPT "\r\nSec-WebSocket-Protocol: chat\r\n\r\n"},
    {"an extension answer", {ACCEPT, NULL, "permessage-deflate; server_max_window_bits=12", NULL},
     HEAD101 "Sec-WebSocket-Accept: " ACCEPT "\r\n"
     "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=12\r\n\r\n"},
    {"everything", {ACCEPT, "v2.json.example~x", "permessage-deflate",
                    "Set-Cookie: a=b; Path=/\r\nX-Empty:\r\nX-Tab: a\tb\r\n"},
     HEAD101 "Sec-WebSocket-Accept: " ACCEPT "\r\nSec-WebSocket-Protocol: v2.json.example~x\r\n"
     "Sec-WebSocket-Extensions: permessage-deflate\r\n"
     "Set-Cookie: a=b; Path=/\r\nX-Empty:\r\nX-Tab: a\tb\r\n\r\n"},
    {"obs-text in a header value", {ACCEPT, NULL, NULL, "X-Name: caf\xc3\xa9\r\n"},
     HEAD101 "Sec-WebSocket-Accept: " ACCEPT "\r\nX-Name: caf\xc3\xa9\r\n\r\n"},
    /* refused */
    {"no accept", {NULL, NULL, NULL, NULL}, NULL},
    {"accept too short", {"s3pPLMBiTxaQ9kYGzzhZRbK+xO=", NULL, NULL, NULL}, NULL},
    {"accept too long", {ACCEPT "A", NULL, NULL, NULL}, NULL},
    {"accept not base64", {"s3pPLMBiTxaQ9kYGzzhZRbK+x!o=", NULL, NULL, NULL}, NULL},
    {"two subprotocols", {ACCEPT, "chat, superchat", NULL, NULL}, NULL},
    {"subprotocol with a comma", {ACCEPT, "a,b", NULL, NULL}, NULL},
    {"subprotocol with a space", {ACCEPT, "a b", NULL, NULL}, NULL},
    {"subprotocol with CRLF", {ACCEPT, "a\r\nX: y", NULL, NULL}, NULL},
    {"extensions with CRLF", {ACCEPT, NULL, "permessage-deflate\r\nX: y", NULL}, NULL},
    {"extensions with LF", {ACCEPT, NULL, "permessage-deflate\nX: y", NULL}, NULL},
    {"extra header without CRLF", {ACCEPT, NULL, NULL, "X-A: 1"}, NULL},
    {"extra header ending in LF", {ACCEPT, NULL, NULL, "X-A: 1\n"}, NULL},
    {"extra header ending in CR", {ACCEPT, NULL, NULL, "X-A: 1\r"}, NULL},
    {"extra empty line (ends the head early)", {ACCEPT, NULL, NULL, "X-A: 1\r\n\r\nbody"}, NULL},
    {"extra header without a name", {ACCEPT, NULL, NULL, ": v\r\n"}, NULL},
    {"extra header without a colon", {ACCEPT, NULL, NULL, "X-A 1\r\n"}, NULL},
    {"extra header name with a space", {ACCEPT, NULL, NULL, "X A: 1\r\n"}, NULL},
    {"extra header with a bare CR inside", {ACCEPT, NULL, NULL, "X-A: 1\r2\r\n"}, NULL},
    {"extra header with a control character", {ACCEPT, NULL, NULL, "X-A: \x01\r\n"}, NULL},
    {"extra header with DEL", {ACCEPT, NULL, NULL, "X-A: \x7f\r\n"}, NULL},
};

typedef struct req_case {
    const char *name;
    pyws_handshake_request r;
    const char *expect;          /* NULL: PYWS_ERR_ARG */
} req_case;

#define UPG "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " KEY "\r\n" \
            "Sec-WebSocket-Version: 13\r\n"

static const req_case req_cases[] = {
    {"the least", {"/", "example.com", 0, KEY, NULL, NULL, NULL, NULL},
     "GET / HTTP/1.1\r\nHost: example.com\r\n" UPG "\r\n"},
    {"no path is /", {NULL, "example.com", 0, KEY, "", NULL, "", ""},
     "GET / HTTP/1.1\r\nHost: example.com\r\n" UPG "\r\n"},
    {"a port and a query", {"/chat?room=1&x=%20", "example.com", 8080, KEY, NULL, NULL, NULL, NULL},
     "GET /chat?room=1&x=%20 HTTP/1.1\r\nHost: example.com:8080\r\n" UPG "\r\n"},
    {"IPv6 literal gets brackets", {"/", "::1", 9000, KEY, NULL, NULL, NULL, NULL},
     "GET / HTTP/1.1\r\nHost: [::1]:9000\r\n" UPG "\r\n"},
    {"IPv6 without a port", {"/", "fe80::1", 0, KEY, NULL, NULL, NULL, NULL},
     "GET / HTTP/1.1\r\nHost: [fe80::1]\r\n" UPG "\r\n"},
    {"port 1 and 65535", {"/", "h", 1, KEY, NULL, NULL, NULL, NULL},
     "GET / HTTP/1.1\r\nHost: h:1\r\n" UPG "\r\n"},
    {"port 65535", {"/", "10.0.0.1", 65535, KEY, NULL, NULL, NULL, NULL},
     "GET / HTTP/1.1\r\nHost: 10.0.0.1:65535\r\n" UPG "\r\n"},
    {"everything", {"/ws", "example.com", 0, KEY, "chat, superchat", "http://example.com",
                    "permessage-deflate; client_max_window_bits",
                    "Cookie: a=b\r\nAuthorization: Bearer x.y\r\n"},
     "GET /ws HTTP/1.1\r\nHost: example.com\r\n" UPG "Sec-WebSocket-Protocol: chat, superchat\r\n"
     "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
     "Origin: http://example.com\r\nCookie: a=b\r\nAuthorization: Bearer x.y\r\n\r\n"},
    {"an empty origin is sent", {"/", "h", 0, KEY, NULL, "", NULL, NULL},
     "GET / HTTP/1.1\r\nHost: h\r\n" UPG "Origin: \r\n\r\n"},
    {"protocol list with tabs", {"/", "h", 0, KEY, "a\t,b ,  c", NULL, NULL, NULL},
     "GET / HTTP/1.1\r\nHost: h\r\n" UPG "Sec-WebSocket-Protocol: a\t,b ,  c\r\n\r\n"},
    /* refused */
    {"no host", {"/", NULL, 0, KEY, NULL, NULL, NULL, NULL}, NULL},
    {"empty host", {"/", "", 0, KEY, NULL, NULL, NULL, NULL}, NULL},
    {"host with a space", {"/", "a b", 0, KEY, NULL, NULL, NULL, NULL}, NULL},
    {"host with CRLF", {"/", "a\r\nX: y", 0, KEY, NULL, NULL, NULL, NULL}, NULL},
    {"host already bracketed", {"/", "[::1]", 0, KEY, NULL, NULL, NULL, NULL}, NULL},
    {"host with a path", {"/", "a/b", 0, KEY, NULL, NULL, NULL, NULL}, NULL},
    {"host with userinfo", {"/", "u@h", 0, KEY, NULL, NULL, NULL, NULL}, NULL},
    {"port -1", {"/", "h", -1, KEY, NULL, NULL, NULL, NULL}, NULL},
    {"port 65536", {"/", "h", 65536, KEY, NULL, NULL, NULL, NULL}, NULL},
    {"relative path", {"chat", "h", 0, KEY, NULL, NULL, NULL, NULL}, NULL},
    {"path with a space", {"/a b", "h", 0, KEY, NULL, NULL, NULL, NULL}, NULL},
    {"path with a fragment", {"/a#b", "h", 0, KEY, NULL, NULL, NULL, NULL}, NULL},
    {"path with CRLF", {"/a\r\nX: y", "h", 0, KEY, NULL, NULL, NULL, NULL}, NULL},
    {"no key", {"/", "h", 0, NULL, NULL, NULL, NULL, NULL}, NULL},
    {"key too short", {"/", "h", 0, "dGhlIHNhbXBsZSBub25jZQ=", NULL, NULL, NULL, NULL}, NULL},
    {"key too long", {"/", "h", 0, KEY "A", NULL, NULL, NULL, NULL}, NULL},
    {"key not canonical", {"/", "h", 0, "dGhlIHNhbXBsZSBub25jZR==", NULL, NULL, NULL, NULL}, NULL},
    {"key of 17 bytes", {"/", "h", 0, "dGhlIHNhbXBsZSBub25jZQE=", NULL, NULL, NULL, NULL}, NULL},
    {"empty protocol in the list", {"/", "h", 0, KEY, "a,,b", NULL, NULL, NULL}, NULL},
    {"trailing comma", {"/", "h", 0, KEY, "a,", NULL, NULL, NULL}, NULL},
    {"protocol with ;", {"/", "h", 0, KEY, "a;b", NULL, NULL, NULL}, NULL},
    {"protocols with CRLF", {"/", "h", 0, KEY, "a\r\nX: y", NULL, NULL, NULL}, NULL},
    {"origin with CRLF", {"/", "h", 0, KEY, NULL, "http://a\r\nX-Evil: 1", NULL, NULL}, NULL},
    {"extensions with LF", {"/", "h", 0, KEY, NULL, NULL, "permessage-deflate\nX: y", NULL}, NULL},
    {"extra header without CRLF", {"/", "h", 0, KEY, NULL, NULL, NULL, "X-A: 1"}, NULL},
    {"extra empty line", {"/", "h", 0, KEY, NULL, NULL, NULL, "\r\n"}, NULL},
    {"extra header without a name", {"/", "h", 0, KEY, NULL, NULL, NULL, ": 1\r\n"}, NULL},
};

/* ------------------------------------------------------------------ running them */

typedef int64_t (*format_fn)(const void *r, char *out, size_t cap);

static int64_t fmt_resp(const void *r, char *out, size_t cap)
{
    return pyws_handshake_format_response(r, out, cap);
}

static int64_t fmt_req(const void *r, char *out, size_t cap)
{
    return pyws_handshake_format_request(r, out, cap);
}

/* The whole contract for one input: exact bytes at cap = needed (and more), -(needed) and
 * nothing written below it, or PYWS_ERR_ARG and nothing written for a refused input. */
static void check_case(const char *name, format_fn fmt, const void *r, const char *expect)
{
    int64_t probe = fmt(r, NULL, 0);
    if (!expect) {
        CHECK(probe == PYWS_ERR_ARG, "%s: refused with PYWS_ERR_ARG, got %lld", name,
              (long long)probe);
        guarded g = guard_alloc(4096);
        memset(g.p, 0xAA, 4096);
        int64_t r2 = fmt(r, (char *)g.p, 4096);
        int untouched = 1;
        for (size_t i = 0; i < 4096; i++)
            untouched &= g.p[i] == 0xAA;
        CHECK(r2 == PYWS_ERR_ARG && untouched, "%s: refused even with room, nothing written",
              name);
        guard_free(&g);
        return;
    }
    size_t need = strlen(expect);
    CHECK(probe == -(int64_t)need, "%s: out NULL asks the size %zu, got %lld", name, need,
          (long long)probe);
    CHECK(need > 100, "%s: the needed size (%zu) can never look like a PYWS_ERR_*", name, need);
    /* every cap below the need: -(need), no byte written; the buffer ends at a guard page */
    int all_short = 1, all_untouched = 1;
    for (size_t cap = 0; cap < need; cap++) {
        guarded g = guard_alloc(cap);
        memset(g.p, 0xAA, cap);
        int64_t got = fmt(r, (char *)g.p, cap);
        if (got != -(int64_t)need)
            all_short = 0;
        for (size_t i = 0; i < cap; i++)
            if (g.p[i] != 0xAA)
                all_untouched = 0;
        guard_free(&g);
    }
    CHECK(all_short, "%s: every cap in 0..%zu returns -%zu", name, need - 1, need);
    CHECK(all_untouched, "%s: a buffer too small is not written", name);
    /* exactly the need, and a little more: the bytes, nothing beyond them */
    for (size_t extra = 0; extra <= 8; extra += 8) {
        guarded g = guard_alloc(need + extra);
        memset(g.p, 0xAA, need + extra);
        int64_t got = fmt(r, (char *)g.p, need + extra);
        int tail_ok = 1;
        for (size_t i = need; i < need + extra; i++)
            tail_ok &= g.p[i] == 0xAA;
        CHECK(got == (int64_t)need && memcmp(g.p, expect, need) == 0 && tail_ok,
              "%s (cap need+%zu): exact bytes%s", name, extra,
              got == (int64_t)need ? "" : " (wrong length)");
        if (got == (int64_t)need && memcmp(g.p, expect, need) != 0)
            printf("  got: %.*s\n", (int)need, (const char *)g.p);
        guard_free(&g);
    }
}

static void test_responses(void)
{
    for (size_t i = 0; i < sizeof resp_cases / sizeof *resp_cases; i++) {
        const resp_case *c = &resp_cases[i];
        inputs in = {0};
        pyws_handshake_reply r = {in_copy(&in, c->r.accept), in_copy(&in, c->r.protocol),
                                  in_copy(&in, c->r.extensions),
                                  in_copy(&in, c->r.extra_headers)};
        check_case(c->name, fmt_resp, &r, c->expect);
        in_free(&in);
    }
    CHECK(pyws_handshake_format_response(NULL, NULL, 0) == PYWS_ERR_ARG, "NULL reply refused");
}

static void test_requests(void)
{
    for (size_t i = 0; i < sizeof req_cases / sizeof *req_cases; i++) {
        const req_case *c = &req_cases[i];
        inputs in = {0};
        pyws_handshake_request r = {in_copy(&in, c->r.path), in_copy(&in, c->r.host), c->r.port,
                                    in_copy(&in, c->r.key), in_copy(&in, c->r.protocols),
                                    in_copy(&in, c->r.origin), in_copy(&in, c->r.extensions),
                                    in_copy(&in, c->r.extra_headers)};
        check_case(c->name, fmt_req, &r, c->expect);
        in_free(&in);
    }
    CHECK(pyws_handshake_format_request(NULL, NULL, 0) == PYWS_ERR_ARG, "NULL request refused");
}

/* Long inputs: lengths add up past a page, and the two passes agree. */
static void test_long(void)
{
    size_t n = 20000;
    char *extra = malloc(n + 1);
    size_t at = 0;
    while (at + 40 < n) {
        at += (size_t)sprintf(extra + at, "X-Filler-%05zu: %020zu\r\n", at, at);
    }
    extra[at] = 0;
    pyws_handshake_reply r = {ACCEPT, "chat", NULL, extra};
    int64_t need = pyws_handshake_format_response(&r, NULL, 0);
    CHECK(need < 0 && (size_t)-need == strlen(HEAD101 "Sec-WebSocket-Accept: " ACCEPT "\r\n"
                                                "Sec-WebSocket-Protocol: chat\r\n\r\n") + at,
          "long extra headers: needed size");
    guarded g = guard_alloc((size_t)-need);
    CHECK(pyws_handshake_format_response(&r, (char *)g.p, (size_t)-need) == -need &&
              memcmp(g.p + (size_t)-need - at - 2, extra, at) == 0,
          "long extra headers: written up to the guard page");
    guard_free(&g);
    free(extra);
}

/* What the formatters write, the protocol half's own checks accept. */
static void test_round_trip(void)
{
    uint8_t nonce[16];
    for (int i = 0; i < 16; i++)
        nonce[i] = (uint8_t)(i * 37 + 5);
    char key[25];
    pyws_client_key(nonce, key);
    pyws_handshake_request rq = {"/chat?x=1", "::1", 8443, key, "chat, superchat",
                                 "https://example.org", "permessage-deflate", "X-A: 1\r\n"};
    char buf[1024];
    int64_t n = pyws_handshake_format_request(&rq, buf, sizeof buf);
    CHECK(n > 0, "request formatted");
    pyws_http_head head;
    pyws_header headers[32];
    int r = pyws_http_parse_request(buf, (size_t)n, sizeof buf, &head, headers, 32);
    CHECK(r == (int)n, "the request parses as one whole head (%d of %lld)", r, (long long)n);
    pyws_handshake hs;
    pyws_handshake_check(&head, headers, &hs);
    CHECK(hs.status == 0 && hs.requested, "the request passes pyws_handshake_check (%s)",
          hs.error ? hs.error : "");
    char expect_accept[PYWS_ACCEPT_LEN + 1];
    pyws_accept_key(key, strlen(key), expect_accept);
    CHECK(strcmp(hs.accept, expect_accept) == 0, "accept computed from our key");

    pyws_handshake_reply rp = {hs.accept, "superchat", "permessage-deflate", "X-B: 2\r\n"};
    char out[1024];
    int64_t m = pyws_handshake_format_response(&rp, out, sizeof out);
    CHECK(m > 0, "response formatted");
    r = pyws_http_parse_response(out, (size_t)m, sizeof out, &head, headers, 32);
    CHECK(r == (int)m && head.status == 101, "the response parses as a 101 head");
    pyws_str proto;
    const char *why = pyws_handshake_check_response(&head, headers, key, "chat, superchat",
                                                    &proto);
    CHECK(why == NULL && proto.len == 9 && memcmp(proto.ptr, "superchat", 9) == 0,
          "the response passes pyws_handshake_check_response (%s)", why ? why : "ok");
}

int main(void)
{
    test_responses();
    test_requests();
    test_long();
    test_round_trip();
    printf("%lu passed, %lu failed\n", passed, failed);
    return failed ? 1 : 0;
}
