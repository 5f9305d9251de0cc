/*
 * test_http.c — tests for http.c, handshake.c, sha1.c and base64.c. A plain C program: no
 * framework, no Python. Every test runs twice, once per placement of the parser inputs:
 *
 *   - heap: each input is copied to a heap block of exactly its size (and header arrays are
 *     exactly max_headers long), so under -fsanitize=address any read past the input or write
 *     past the array is reported at once;
 *   - guard: each input (and, in the split-point checks, each prefix of it) is copied so that
 *     it ends right before a PROT_NONE page (guard.h), so an over-read faults at once even
 *     without a sanitizer and whatever the width of the load.
 *
 *   gcc -std=c11 -O1 -g -Wall -Wextra -fsanitize=address,undefined -Icsrc csrc/http.c \
 *       csrc/handshake.c csrc/sha1.c csrc/base64.c csrc/tests/test_http.c -o /tmp/th && /tmp/th
 *
 * Prints "N passed, M failed" and exits non-zero when M > 0.
 */
#include "guard.h"      /* first: it sets the feature macros mmap needs */
#include "pyws.h"
#include "http.h"
#include "handshake.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed, failed;
enum { PLACE_HEAP = 0, PLACE_GUARD = 1 };
static int placement = PLACE_HEAP;    /* where copy_exact() puts parser inputs */
static const char *current = "";      /* name of the case being checked, for failure messages */

#define CHECK(cond) check_((cond) ? 1 : 0, #cond, __LINE__)

static int check_(int ok, const char *expr, int line)
{
    if (ok) {
        passed++;
    } else {
        failed++;
        fprintf(stderr, "test_http.c:%d: [%s, %s] FAIL: %s\n", line, current,
                placement == PLACE_GUARD ? "guard page" : "heap", expr);
    }
    return ok;
}

/* ------------------------------------------------------------------------------------------ */
/* Input placement: exact-size heap copies, or right before a guard page                        */
/* ------------------------------------------------------------------------------------------ */

/* A copy of s[0..n) that ends where readable memory ends: a heap block of exactly n bytes, or
 * (PLACE_GUARD) the end of the page before a PROT_NONE page. At most one copy is live at a time
 * (the guard mapping is reused); give it back with release_copy(). */
static char *copy_exact(const char *s, size_t n)
{
    if (placement == PLACE_GUARD)
        return (char *)guard_place(s, n);
    char *b = malloc(n);
    if (b == NULL && n > 0) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    if (n > 0)
        memcpy(b, s, n);
    return b;
}

static void release_copy(void *b)
{
    if (placement == PLACE_HEAP)
        free(b);
}

static pyws_header *headers_exact(size_t n)
{
    if (n == 0)
        return NULL;
    pyws_header *h = malloc(n * sizeof *h);
    if (h == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return h;
}

enum { REQ = 0, RESP = 1 };

/* One parse of s[0..n) from an exact-size heap copy. Results go to *r; the views in it are
 * translated to offsets (the copy is freed) so that parses of different copies compare. */
typedef struct parsed {
    int ret;
    pyws_http_head head;
    size_t method_off, target_off, reason_off;
    size_t num;
    struct { size_t name_off, name_len, value_off, value_len; } h[200];
} parsed;

static size_t off(const char *base, const char *p)
{
    return p == NULL ? (size_t)-1 : (size_t)(p - base);
}

static int views_inside(const char *base, size_t len, const char *p, size_t n)
{
    if (n == 0)
        return 1;
    return p != NULL && p >= base && (size_t)(p - base) <= len && n <= len - (size_t)(p - base);
}

static void parse_exact(int kind, const char *s, size_t n, size_t max_bytes, size_t max_headers,
                        parsed *r)
{
    char *b = copy_exact(s, n);
    pyws_header *hs = headers_exact(max_headers);
    memset(r, 0, sizeof *r);
    if (kind == REQ)
        r->ret = pyws_http_parse_request(b, n, max_bytes, &r->head, hs, max_headers);
    else
        r->ret = pyws_http_parse_response(b, n, max_bytes, &r->head, hs, max_headers);
    if (r->ret > 0) {
        /* every view must lie inside the head */
        size_t hl = r->head.head_len;
        int inside = (size_t)r->ret == hl && hl <= n && r->head.num_headers <= max_headers &&
                     views_inside(b, hl, r->head.method.ptr, r->head.method.len) &&
                     views_inside(b, hl, r->head.target.ptr, r->head.target.len) &&
                     views_inside(b, hl, r->head.reason.ptr, r->head.reason.len);
        r->method_off = off(b, r->head.method.ptr);
        r->target_off = off(b, r->head.target.ptr);
        r->reason_off = off(b, r->head.reason.ptr);
        r->num = r->head.num_headers;
        for (size_t i = 0; i < r->num && i < 200; i++) {
            inside = inside && views_inside(b, hl, hs[i].name.ptr, hs[i].name.len) &&
                     views_inside(b, hl, hs[i].value.ptr, hs[i].value.len);
            r->h[i].name_off = off(b, hs[i].name.ptr);
            r->h[i].name_len = hs[i].name.len;
            r->h[i].value_off = off(b, hs[i].value.ptr);
            r->h[i].value_len = hs[i].value.len;
        }
        CHECK(inside);
        /* forget pointers into the freed copy */
        r->head.method.ptr = r->head.target.ptr = r->head.reason.ptr = NULL;
    }
    free(hs);
    release_copy(b);
}

static int same_parse(const parsed *a, const parsed *b)
{
    if (a->ret != b->ret)
        return 0;
    if (a->ret <= 0)
        return 1;
    if (a->head.head_len != b->head.head_len || a->head.method.len != b->head.method.len ||
        a->head.target.len != b->head.target.len || a->head.reason.len != b->head.reason.len ||
        a->head.version_minor != b->head.version_minor || a->head.status != b->head.status ||
        a->method_off != b->method_off || a->target_off != b->target_off ||
        a->reason_off != b->reason_off || a->num != b->num)
        return 0;
    for (size_t i = 0; i < a->num && i < 200; i++) {
        if (memcmp(&a->h[i], &b->h[i], sizeof a->h[i]) != 0)
            return 0;
    }
    return 1;
}

/* The property every input must have: a prefix either gives PARTIAL, or gives exactly what the
 * whole input gives; and once a prefix stops being PARTIAL, every longer prefix agrees with it
 * (a complete head stays complete with the same views; an error stays the same error).
 * Returns 1 if it holds for every prefix length 0..n. */
static int prefixes_consistent(int kind, const char *s, size_t n, size_t max_bytes,
                               size_t max_headers, const parsed *whole)
{
    static parsed r;
    int decided = 0;
    for (size_t k = 0; k <= n; k++) {
        parse_exact(kind, s, k, max_bytes, max_headers, &r);
        if (r.ret == PYWS_HTTP_PARTIAL) {
            if (decided)
                return 0;
            continue;
        }
        if (!same_parse(&r, whole))
            return 0;
        decided = 1;
    }
    return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* Tables of heads                                                                              */
/* ------------------------------------------------------------------------------------------ */

#define S(lit) lit, sizeof(lit) - 1
#define COMPLETE 1          /* expect: the whole input is one complete head */
#define BIG ((size_t)16384)

typedef struct head_case {
    const char *name;
    const char *in;
    size_t len;
    size_t max_bytes;
    size_t max_headers;
    int expect;             /* COMPLETE, PYWS_HTTP_PARTIAL or a PYWS_HTTP_* error */
} head_case;

static const head_case request_cases[] = {
    /* valid */
    {"minimal", S("GET / HTTP/1.1\r\n\r\n"), BIG, 64, COMPLETE},
    {"websocket upgrade",
     S("GET /chat?room=1 HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n"
       "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
       "Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n"
       "Sec-WebSocket-Version: 13\r\n\r\n"),
     BIG, 64, COMPLETE},
    {"LF only",
     S("GET /chat HTTP/1.1\nHost: a\nUpgrade: websocket\nConnection: Upgrade\n\n"), BIG, 64,
     COMPLETE},
    {"mixed CRLF and LF", S("GET / HTTP/1.1\nHost: a\r\nX: y\n\r\n"), BIG, 64, COMPLETE},
    {"body headers",
     S("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
       "Transfer-Encoding: chunked\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"),
     BIG, 64, COMPLETE},
    {"empty values", S("GET / HTTP/1.1\r\nX-Empty:\r\nX-Blank:  \t \r\nHost: a\r\n\r\n"), BIG,
     64, COMPLETE},
    {"obs-text in value", S("GET / HTTP/1.1\r\nX-Name: caf\xc3\xa9 \xff\r\n\r\n"), BIG, 64,
     COMPLETE},
    {"tabs and spaces in value", S("GET / HTTP/1.1\r\nX:\t a \t b\t \r\n\r\n"), BIG, 64,
     COMPLETE},
    {"HTTP/1.0", S("GET / HTTP/1.0\r\n\r\n"), BIG, 64, COMPLETE},
    {"HTTP/1.9", S("GET / HTTP/1.9\r\n\r\n"), BIG, 64, COMPLETE},
    {"leading empty lines", S("\r\n\nGET / HTTP/1.1\r\n\r\n"), BIG, 64, COMPLETE},
    {"absolute-form", S("GET http://example.com:80/x?y=1&z=%20 HTTP/1.1\r\nHost: e\r\n\r\n"),
     BIG, 64, COMPLETE},
    {"asterisk-form", S("OPTIONS * HTTP/1.1\r\nHost: e\r\n\r\n"), BIG, 64, COMPLETE},
    {"tchar method", S("X!#$%&'*+-.^_`|~9 / HTTP/1.1\r\n\r\n"), BIG, 64, COMPLETE},
    {"tchar header name", S("GET / HTTP/1.1\r\nX!#$%&'*+-.^_`|~9: v\r\n\r\n"), BIG, 64,
     COMPLETE},
    {"colon in value", S("GET / HTTP/1.1\r\nHost: a:80\r\nX: ::\r\n\r\n"), BIG, 64, COMPLETE},
    {"max_bytes exactly", S("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), 27, 64, COMPLETE},
    {"max_headers exactly", S("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"), BIG, 3,
     COMPLETE},
    {"no header room, no headers", S("GET / HTTP/1.1\r\n\r\n"), BIG, 0, COMPLETE},

    /* incomplete */
    {"empty", S(""), BIG, 64, PYWS_HTTP_PARTIAL},
    {"only empty lines", S("\r\n\r\n\n"), BIG, 64, PYWS_HTTP_PARTIAL},
    {"no final empty line", S("GET / HTTP/1.1\r\nHost: a\r\n"), BIG, 64, PYWS_HTTP_PARTIAL},
    {"ends in CR", S("GET / HTTP/1.1\r\nHost: a\r\n\r"), BIG, 64, PYWS_HTTP_PARTIAL},

    /* request line */
    {"bad method char", S("G@T / HTTP/1.1\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"method with slash", S("GE/T / HTTP/1.1\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"tab after method", S("GET\t/ HTTP/1.1\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"leading space", S(" GET / HTTP/1.1\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"empty target", S("GET  / HTTP/1.1\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"CTL in target", S("GET /\x01 HTTP/1.1\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"DEL in target", S("GET /\x7f HTTP/1.1\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"raw UTF-8 in target", S("GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"NUL in target", S("GET /\0 HTTP/1.1\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"missing version", S("GET /\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"missing version after SP", S("GET / \r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"no target", S("GET\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"lower-case HTTP", S("GET / http/1.1\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"two-digit minor", S("GET / HTTP/1.10\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"letter minor", S("GET / HTTP/1.x\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"no dot", S("GET / HTTP/11\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"space after version", S("GET / HTTP/1.1 \r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"extra request-line part", S("GET / HTTP/1.1 x\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"bare CR in request line", S("GET / HTTP/1.1\rHost: a\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"bare CR before request", S("\rGET / HTTP/1.1\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"letter major", S("GET / HTTP/x.1\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"HTTP/2.0", S("GET / HTTP/2.0\r\n\r\n"), BIG, 64, PYWS_HTTP_VERSION},
    {"HTTP/0.9", S("GET / HTTP/0.9\r\n\r\n"), BIG, 64, PYWS_HTTP_VERSION},
    {"HTTP/3", S("GET / HTTP/3\r\n\r\n"), BIG, 64, PYWS_HTTP_VERSION},
    {"HTTP/2 preface", S("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), BIG, 64, PYWS_HTTP_VERSION},

    /* header lines */
    {"space before colon", S("GET / HTTP/1.1\r\nHost : a\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"tab before colon", S("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"space in name", S("GET / HTTP/1.1\r\nHo st: a\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"empty name", S("GET / HTTP/1.1\r\n: a\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"no colon", S("GET / HTTP/1.1\r\nHost\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"obs-fold SP", S("GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"obs-fold HTAB", S("GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"whitespace before first header", S("GET / HTTP/1.1\r\n Host: a\r\n\r\n"), BIG, 64,
     PYWS_HTTP_BAD},
    {"NUL in value", S("GET / HTTP/1.1\r\nX: a\0b\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"NUL in name", S("GET / HTTP/1.1\r\nX\0: a\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"CTL in value", S("GET / HTTP/1.1\r\nX: a\x01\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"ESC in value", S("GET / HTTP/1.1\r\nX: \x1b[31m\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"DEL in value", S("GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"bare CR in value", S("GET / HTTP/1.1\r\nX: a\rb\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"CR CR at end", S("GET / HTTP/1.1\r\nX: a\r\n\r\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"non-token name byte", S("GET / HTTP/1.1\r\nX(y): a\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"UTF-8 in name", S("GET / HTTP/1.1\r\nX\xc3\xa9: a\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},

    /* garbage */
    {"TLS ClientHello",
     S("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x8a\x1b\x00\x00\x20\xc0\x2b\xc0\x2f"),
     BIG, 64, PYWS_HTTP_BAD},
    {"TLS first byte", S("\x16"), BIG, 64, PYWS_HTTP_BAD},
    {"binary junk", S("\x00\xff\xfe\x10GET / HTTP/1.1\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"binary after method", S("GET\x80\x81\x82"), BIG, 64, PYWS_HTTP_BAD},
    {"SSH banner", S("SSH-2.0-OpenSSH_9.6\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"HTTP response sent as request", S("HTTP/1.1 200 OK\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"websocket frame", S("\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"), BIG, 64,
     PYWS_HTTP_BAD},

    /* limits */
    {"max_bytes one short", S("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), 26, 64,
     PYWS_HTTP_TOO_LARGE},
    {"request line over max_bytes", S("GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), 20,
     64, PYWS_HTTP_TOO_LARGE},
    {"partial at exactly max_bytes", S("GET /aaaaaaaaaaaaaaa"), 20, 64, PYWS_HTTP_TOO_LARGE},
    {"partial under max_bytes", S("GET /aaaaaaaaaaaaaa"), 20, 64, PYWS_HTTP_PARTIAL},
    {"header over max_bytes", S("GET / HTTP/1.1\r\nX: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n"),
     30, 64, PYWS_HTTP_TOO_LARGE},
    {"bad inside max_bytes wins", S("G@T /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), 20, 64,
     PYWS_HTTP_BAD},
    {"max_bytes 0", S("GET / HTTP/1.1\r\n\r\n"), 0, 64, PYWS_HTTP_TOO_LARGE},
    {"one header over", S("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n"), BIG, 3,
     PYWS_HTTP_TOO_LARGE},
    {"header with no room", S("GET / HTTP/1.1\r\nA: 1\r\n\r\n"), BIG, 0, PYWS_HTTP_TOO_LARGE},
};

static const head_case response_cases[] = {
    {"101",
     S("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
       "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"),
     BIG, 64, COMPLETE},
    {"empty reason with SP", S("HTTP/1.1 200 \r\n\r\n"), BIG, 64, COMPLETE},
    {"empty reason without SP", S("HTTP/1.1 200\r\n\r\n"), BIG, 64, COMPLETE},
    {"HTTP/1.0 LF only", S("HTTP/1.0 404 Not Found\nContent-Length: 0\n\n"), BIG, 64,
     COMPLETE},
    {"reason with obs-text and tab", S("HTTP/1.1 403 Verboten\t\xe2\x9c\x8b\r\n\r\n"), BIG, 64,
     COMPLETE},
    {"no final empty line", S("HTTP/1.1 101 Switching Protocols\r\n"), BIG, 64,
     PYWS_HTTP_PARTIAL},
    {"two-digit status", S("HTTP/1.1 20 OK\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"four-digit status", S("HTTP/1.1 2000 OK\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"letters for status", S("HTTP/1.1 abc OK\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"two spaces", S("HTTP/1.1  200 OK\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"CTL in reason", S("HTTP/1.1 200 O\x01K\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"lower-case http", S("http/1.1 200 OK\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"no status", S("HTTP/1.1\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"leading empty line", S("\r\nHTTP/1.1 200 OK\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"obs-fold", S("HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n"), BIG, 64, PYWS_HTTP_BAD},
    {"TLS alert", S("\x15\x03\x03\x00\x02\x02\x28"), BIG, 64, PYWS_HTTP_BAD},
    {"HTTP/2.0", S("HTTP/2.0 200 OK\r\n\r\n"), BIG, 64, PYWS_HTTP_VERSION},
    {"HTTP/2", S("HTTP/2 200\r\n\r\n"), BIG, 64, PYWS_HTTP_VERSION},
    {"over max_bytes", S("HTTP/1.1 101 Switching Protocols\r\n\r\n"), 10, 64,
     PYWS_HTTP_TOO_LARGE},
    {"one header over", S("HTTP/1.1 101 OK\r\nA: 1\r\nB: 2\r\n\r\n"), BIG, 1,
     PYWS_HTTP_TOO_LARGE},
};

static void run_head_table(int kind, const head_case *cases, size_t count)
{
    static parsed whole, with_body;
    for (size_t i = 0; i < count; i++) {
        const head_case *c = &cases[i];
        current = c->name;
        parse_exact(kind, c->in, c->len, c->max_bytes, c->max_headers, &whole);
        if (c->expect == COMPLETE) {
            CHECK(whole.ret == (int)c->len);
            CHECK(whole.head.head_len == c->len);
        } else {
            CHECK(whole.ret == c->expect);
        }
        /* every split point: PARTIAL until decided, then the same answer */
        CHECK(prefixes_consistent(kind, c->in, c->len, c->max_bytes, c->max_headers, &whole));

        /* bytes after a complete head (a body) change nothing */
        if (c->expect == COMPLETE && c->len + 7 <= c->max_bytes) {
            char *b = malloc(c->len + 7);
            memcpy(b, c->in, c->len);
            memcpy(b + c->len, "BODY\r\n\n", 7);
            parse_exact(kind, b, c->len + 7, c->max_bytes, c->max_headers, &with_body);
            CHECK(same_parse(&with_body, &whole));
            CHECK(prefixes_consistent(kind, b, c->len + 7, c->max_bytes, c->max_headers,
                                      &whole));
            free(b);
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Field-level checks of particular heads                                                       */
/* ------------------------------------------------------------------------------------------ */

static int str_is(pyws_str s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && (n == 0 || memcmp(s.ptr, lit, n) == 0);
}

static void test_request_fields(void)
{
    current = "request fields";
    static const char in[] =
        "GET /chat?x=1 HTTP/1.1\r\nHost:  server.example.com \r\nX-Empty:\r\n"
        "X-Tabs:\t a \t b\t \r\nupgrade: websocket\r\n\r\nbody";
    size_t n = sizeof in - 1;
    char *b = copy_exact(in, n);
    pyws_header *h = headers_exact(4);
    pyws_http_head head;
    int r = pyws_http_parse_request(b, n, BIG, &head, h, 4);
    CHECK(r == (int)(n - 4));
    CHECK(head.head_len == n - 4);
    CHECK(str_is(head.method, "GET"));
    CHECK(str_is(head.target, "/chat?x=1"));
    CHECK(head.version_minor == 1);
    CHECK(head.num_headers == 4);
    CHECK(str_is(h[0].name, "Host"));
    CHECK(str_is(h[0].value, "server.example.com"));
    CHECK(str_is(h[1].name, "X-Empty"));
    CHECK(h[1].value.len == 0);
    CHECK(str_is(h[2].name, "X-Tabs"));
    CHECK(str_is(h[2].value, "a \t b"));
    CHECK(str_is(h[3].name, "upgrade"));
    CHECK(str_is(h[3].value, "websocket"));
    CHECK(pyws_http_find(h, 4, "UPGRADE", 0) == 3);
    CHECK(pyws_http_find(h, 4, "host", 0) == 0);
    CHECK(pyws_http_find(h, 4, "host", 1) == -1);
    CHECK(pyws_http_find(h, 4, "hos", 0) == -1);
    CHECK(pyws_http_find(h, 4, "x-empty", 0) == 1);
    CHECK(pyws_http_find(h, 4, "nope", 0) == -1);
    CHECK(pyws_http_find(h, 4, "host", 9) == -1);

    /* a NULL head / NULL headers still parses (headers counted, not stored) */
    CHECK(pyws_http_parse_request(b, n, BIG, NULL, NULL, 4) == (int)(n - 4));
    CHECK(pyws_http_parse_request(b, n, BIG, NULL, NULL, 3) == PYWS_HTTP_TOO_LARGE);
    free(h);
    release_copy(b);

    current = "HTTP/1.0 fields";
    static const char in10[] = "HEAD /x HTTP/1.0\n\n";
    b = copy_exact(in10, sizeof in10 - 1);
    r = pyws_http_parse_request(b, sizeof in10 - 1, BIG, &head, NULL, 0);
    CHECK(r == (int)(sizeof in10 - 1));
    CHECK(str_is(head.method, "HEAD"));
    CHECK(head.version_minor == 0);
    CHECK(head.num_headers == 0);
    release_copy(b);
}

static void test_response_fields(void)
{
    current = "response fields";
    static const char in[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x00";
    size_t n = sizeof in - 1;
    char *b = copy_exact(in, n);
    pyws_header *h = headers_exact(2);
    pyws_http_head head;
    int r = pyws_http_parse_response(b, n, BIG, &head, h, 2);
    CHECK(r == (int)(n - 2));
    CHECK(head.status == 101);
    CHECK(head.version_minor == 1);
    CHECK(str_is(head.reason, "Switching Protocols"));
    CHECK(head.method.len == 0 && head.target.len == 0);
    CHECK(head.num_headers == 2);
    CHECK(str_is(h[1].value, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    free(h);
    release_copy(b);

    static const char in2[] = "HTTP/1.0 404\n\n";
    b = copy_exact(in2, sizeof in2 - 1);
    r = pyws_http_parse_response(b, sizeof in2 - 1, BIG, &head, NULL, 0);
    CHECK(r == (int)(sizeof in2 - 1));
    CHECK(head.status == 404);
    CHECK(head.version_minor == 0);
    CHECK(head.reason.len == 0);
    release_copy(b);
}

/* max_headers: 64 header lines fit exactly in 64 slots; 65 do not. */
static void test_many_headers(void)
{
    static char buf[8192];
    static parsed p;
    size_t n = 0;
    n += (size_t)sprintf(buf + n, "GET /many HTTP/1.1\r\n");
    for (int i = 0; i < 64; i++)
        n += (size_t)sprintf(buf + n, "X-Header-%02d: value %d\r\n", i, i);
    size_t without_last = n;
    n += (size_t)sprintf(buf + n, "\r\n");

    current = "64 headers, max 64";
    parse_exact(REQ, buf, n, BIG, 64, &p);
    CHECK(p.ret == (int)n);
    CHECK(p.num == 64);
    CHECK(p.h[63].value_len == strlen("value 63"));
    CHECK(prefixes_consistent(REQ, buf, n, BIG, 64, &p));

    current = "64 headers, max 63";
    parse_exact(REQ, buf, n, BIG, 63, &p);
    CHECK(p.ret == PYWS_HTTP_TOO_LARGE);
    CHECK(prefixes_consistent(REQ, buf, n, BIG, 63, &p));

    current = "65 headers, max 64";
    n = without_last;
    n += (size_t)sprintf(buf + n, "X-One-More: x\r\n\r\n");
    parse_exact(REQ, buf, n, BIG, 64, &p);
    CHECK(p.ret == PYWS_HTTP_TOO_LARGE);
    CHECK(prefixes_consistent(REQ, buf, n, BIG, 64, &p));

    current = "65 headers, max 65";
    parse_exact(REQ, buf, n, BIG, 65, &p);
    CHECK(p.ret == (int)n);
    CHECK(p.num == 65);
}

/* ------------------------------------------------------------------------------------------ */
/* Garbage: random bytes and mutations of valid heads                                           */
/* ------------------------------------------------------------------------------------------ */

static uint32_t rng_state = 0x9e3779b9u;

static uint32_t rng(void)
{
    uint32_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    rng_state = x;
    return x;
}

static void test_random_garbage(void)
{
    current = "random binary garbage";
    static char junk[256];
    static parsed p;
    int all_bad = 1, all_consistent = 1;
    for (int round = 0; round < 300; round++) {
        for (size_t i = 0; i < sizeof junk; i++)
            junk[i] = (char)(rng() & 0xff);
        parse_exact(REQ, junk, sizeof junk, BIG, 64, &p);
        all_bad = all_bad && p.ret == PYWS_HTTP_BAD;
        if (round < 40)
            all_consistent =
                all_consistent && prefixes_consistent(REQ, junk, sizeof junk, BIG, 64, &p);
        parse_exact(RESP, junk, sizeof junk, BIG, 64, &p);
        all_bad = all_bad && p.ret == PYWS_HTTP_BAD;
    }
    CHECK(all_bad);
    CHECK(all_consistent);

    /* junk after a plausible start is still caught within a few bytes */
    current = "garbage after a method";
    static const char start[] = "GET /";
    int caught_early = 1;
    for (int round = 0; round < 200; round++) {
        char b[64];
        memcpy(b, start, 5);
        for (size_t i = 5; i < sizeof b; i++)
            b[i] = (char)(0x80 | (rng() & 0x7f));   /* never a VCHAR */
        parse_exact(REQ, b, 6, BIG, 64, &p);
        caught_early = caught_early && p.ret == PYWS_HTTP_BAD;
    }
    CHECK(caught_early);
}

/* Replace each byte of valid heads by each interesting byte: never crash or over-read, and the
 * prefix property holds for every mutant. */
static void test_mutations(void)
{
    static const unsigned char subst[] = {0x00, '\t', '\n', '\r', ' ', ':', ',', 0x7f, 0x80,
                                          0xff, 'A', '/', '1', '2'};
    static parsed p;
    static const head_case *valid[] = {&request_cases[1], &request_cases[2],
                                       &request_cases[4]};
    for (size_t v = 0; v < sizeof valid / sizeof valid[0]; v++) {
        current = valid[v]->name;
        size_t n = valid[v]->len;
        char *m = malloc(n);
        int ok = 1;
        for (size_t pos = 0; pos < n; pos++) {
            for (size_t s = 0; s < sizeof subst; s++) {
                memcpy(m, valid[v]->in, n);
                m[pos] = (char)subst[s];
                parse_exact(REQ, m, n, BIG, 64, &p);
                ok = ok && prefixes_consistent(REQ, m, n, BIG, 64, &p);
            }
        }
        CHECK(ok);
        free(m);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Token lists and Content-Length                                                               */
/* ------------------------------------------------------------------------------------------ */

static pyws_str view(const char *s)
{
    pyws_str v;
    v.ptr = s;
    v.len = strlen(s);
    return v;
}

/* Call f on an exact-size heap copy of list (no NUL after it). */
static int list_call(int (*f)(pyws_str, const char *), const char *list, const char *item)
{
    size_t n = strlen(list);
    char *b = copy_exact(list, n);
    pyws_str v;
    v.ptr = b;
    v.len = n;
    int r = f(v, item);
    release_copy(b);
    return r;
}

static void test_token_lists(void)
{
    static const struct {
        const char *list, *token;
        int has, offered;       /* pyws_http_has_token, pyws_protocol_offered */
    } cases[] = {
        {"keep-alive, Upgrade", "upgrade", 1, 0},
        {"keep-alive, Upgrade", "Upgrade", 1, 1},
        {"Upgrade", "UPGRADE", 1, 0},
        {"upgrades", "upgrade", 0, 0},
        {"upgrade", "upgrades", 0, 0},
        {"xupgrade,upgradex", "upgrade", 0, 0},
        {"", "upgrade", 0, 0},
        {" , ,upgrade , ", "upgrade", 1, 1},
        {"\tUpgrade\t", "Upgrade", 1, 1},
        {"up grade", "upgrade", 0, 0},
        {"keep-alive", "upgrade", 0, 0},
        {"a,b,c", "c", 1, 1},
        {"a,b,c", "a", 1, 1},
        {"a,b,c", "", 0, 0},
        {",", "a", 0, 0},
        {"chat, superchat", "chat", 1, 1},
        {"chat, superchat", "superchat", 1, 1},
        {"chat, superchat", "Chat", 1, 0},
        {"chat,superchat", "super", 0, 0},
        {"chat, superchat", "chat, superchat", 0, 0},
        {"v1.chat.example.com", "v1.chat.example.com", 1, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        current = cases[i].list;
        CHECK(list_call(pyws_http_has_token, cases[i].list, cases[i].token) == cases[i].has);
        CHECK(list_call(pyws_protocol_offered, cases[i].list, cases[i].token) ==
              cases[i].offered);
    }
    current = "NULL item";
    CHECK(pyws_http_has_token(view("a"), NULL) == 0);
    CHECK(pyws_protocol_offered(view("a"), NULL) == 0);
    pyws_str none = {NULL, 0};
    CHECK(pyws_http_has_token(none, "a") == 0);
}

static void test_content_length(void)
{
    static const struct {
        const char *v1, *v2;    /* v2 NULL: one header; v1 NULL: none */
        int ret;
        uint64_t value;
    } cases[] = {
        {NULL, NULL, 1, 0},
        {"0", NULL, 0, 0},
        {"123", NULL, 0, 123},
        {"007", NULL, 0, 7},
        {"18446744073709551615", NULL, 0, UINT64_MAX},
        {"18446744073709551616", NULL, -1, 0},
        {"99999999999999999999999", NULL, -1, 0},
        {"12a", NULL, -1, 0},
        {"", NULL, -1, 0},
        {"-1", NULL, -1, 0},
        {"+1", NULL, -1, 0},
        {"1 2", NULL, -1, 0},
        {"0x10", NULL, -1, 0},
        {" 42 ", NULL, 0, 42},
        {"5", "5", 0, 5},
        {"007", "7", 0, 7},
        {"5", "6", -1, 0},
        {"5", "x", -1, 0},
        {"5, 5", NULL, 0, 5},
        {"5,5 , 5", "5", 0, 5},
        {"5, 6", NULL, -1, 0},
        {"5,", NULL, -1, 0},
        {",5", NULL, -1, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        current = cases[i].v1 ? cases[i].v1 : "(absent)";
        pyws_header h[3];
        size_t n = 0;
        h[n].name = view("Host");
        h[n++].value = view("a");
        if (cases[i].v1) {
            h[n].name = view("Content-Length");
            h[n++].value = view(cases[i].v1);
        }
        if (cases[i].v2) {
            h[n].name = view("content-length");
            h[n++].value = view(cases[i].v2);
        }
        uint64_t out = 12345;
        int r = pyws_http_content_length(h, n, &out);
        CHECK(r == cases[i].ret);
        if (r >= 0)
            CHECK(out == cases[i].value);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* The opening handshake                                                                        */
/* ------------------------------------------------------------------------------------------ */

#define RFC_KEY "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
#define RFC_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
#define HOST "Host: server.example.com\r\n"
#define UPG "Upgrade: websocket\r\n"
#define CONN "Connection: Upgrade\r\n"
#define VER "Sec-WebSocket-Version: 13\r\n"

typedef struct hs_case {
    const char *name;
    const char *in;
    int status;
} hs_case;

static const hs_case hs_cases[] = {
    {"RFC 6455 sample", "GET /chat HTTP/1.1\r\n" HOST UPG CONN RFC_KEY
     "Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n" VER "\r\n", 0},
    {"lower-case names, mixed-case values",
     "GET / HTTP/1.1\r\nhost: a\r\nupgrade: WebSocket\r\nconnection: keep-alive, Upgrade\r\n"
     "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n", 0},
    {"upper-case names and tokens",
     "GET / HTTP/1.1\r\nHOST: a\r\nUPGRADE: WEBSOCKET\r\nCONNECTION: UPGRADE\r\n"
     "SEC-WEBSOCKET-KEY: dGhlIHNhbXBsZSBub25jZQ==\r\nSEC-WEBSOCKET-VERSION: 13\r\n\r\n", 0},
    {"upgrade token in a list", "GET / HTTP/1.1\r\n" HOST "Upgrade: h2c, websocket\r\n" CONN
     RFC_KEY VER "\r\n", 0},
    {"tokens over several headers", "GET / HTTP/1.1\r\n" HOST "Upgrade: h2c\r\nUpgrade: "
     "websocket\r\nConnection: keep-alive\r\nConnection: upgrade\r\n" RFC_KEY VER "\r\n", 0},
    {"HTTP/1.9", "GET / HTTP/1.9\r\n" HOST UPG CONN RFC_KEY VER "\r\n", 0},
    {"empty Host", "GET / HTTP/1.1\r\nHost:\r\n" UPG CONN RFC_KEY VER "\r\n", 0},
    {"LF only", "GET / HTTP/1.1\nHost: a\nUpgrade: websocket\nConnection: Upgrade\n"
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Version: 13\n\n", 0},

    {"POST", "POST / HTTP/1.1\r\n" HOST UPG CONN RFC_KEY VER "\r\n", 400},
    {"lower-case get", "get / HTTP/1.1\r\n" HOST UPG CONN RFC_KEY VER "\r\n", 400},
    {"HTTP/1.0", "GET / HTTP/1.0\r\n" HOST UPG CONN RFC_KEY VER "\r\n", 400},
    {"missing Host", "GET / HTTP/1.1\r\n" UPG CONN RFC_KEY VER "\r\n", 400},
    {"duplicated Host", "GET / HTTP/1.1\r\n" HOST HOST UPG CONN RFC_KEY VER "\r\n", 400},
    {"missing Upgrade", "GET / HTTP/1.1\r\n" HOST CONN RFC_KEY VER "\r\n", 400},
    {"Upgrade h2c", "GET / HTTP/1.1\r\n" HOST "Upgrade: h2c\r\n" CONN RFC_KEY VER "\r\n", 400},
    {"Upgrade websockets", "GET / HTTP/1.1\r\n" HOST "Upgrade: websockets\r\n" CONN RFC_KEY VER
     "\r\n", 400},
    {"empty Upgrade", "GET / HTTP/1.1\r\n" HOST "Upgrade:\r\n" CONN RFC_KEY VER "\r\n", 400},
    {"missing Connection", "GET / HTTP/1.1\r\n" HOST UPG RFC_KEY VER "\r\n", 400},
    {"Connection keep-alive", "GET / HTTP/1.1\r\n" HOST UPG "Connection: keep-alive\r\n"
     RFC_KEY VER "\r\n", 400},
    {"Connection upgraded", "GET / HTTP/1.1\r\n" HOST UPG "Connection: upgraded\r\n" RFC_KEY
     VER "\r\n", 400},
    {"missing key", "GET / HTTP/1.1\r\n" HOST UPG CONN VER "\r\n", 400},
    {"empty key", "GET / HTTP/1.1\r\n" HOST UPG CONN "Sec-WebSocket-Key:\r\n" VER "\r\n", 400},
    {"key without padding", "GET / HTTP/1.1\r\n" HOST UPG CONN
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ\r\n" VER "\r\n", 400},
    {"key of 15 bytes", "GET / HTTP/1.1\r\n" HOST UPG CONN
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j\r\n" VER "\r\n", 400},
    {"key of 17 bytes", "GET / HTTP/1.1\r\n" HOST UPG CONN
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZXg=\r\n" VER "\r\n", 400},
    {"key of 18 bytes", "GET / HTTP/1.1\r\n" HOST UPG CONN
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZXh4\r\n" VER "\r\n", 400},
    {"key with bad char", "GET / HTTP/1.1\r\n" HOST UPG CONN
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j*Q==\r\n" VER "\r\n", 400},
    {"key url-safe alphabet", "GET / HTTP/1.1\r\n" HOST UPG CONN
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j-Q==\r\n" VER "\r\n", 400},
    {"key not canonical", "GET / HTTP/1.1\r\n" HOST UPG CONN
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZR==\r\n" VER "\r\n", 400},
    {"key with inner space", "GET / HTTP/1.1\r\n" HOST UPG CONN
     "Sec-WebSocket-Key: dGhlIHNhbXBs ZSBub25jZQ==\r\n" VER "\r\n", 400},
    {"duplicated key", "GET / HTTP/1.1\r\n" HOST UPG CONN RFC_KEY RFC_KEY VER "\r\n", 400},
    {"missing version", "GET / HTTP/1.1\r\n" HOST UPG CONN RFC_KEY "\r\n", 426},
    {"version 8", "GET / HTTP/1.1\r\n" HOST UPG CONN RFC_KEY "Sec-WebSocket-Version: 8\r\n\r\n",
     426},
    {"version 13, 8", "GET / HTTP/1.1\r\n" HOST UPG CONN RFC_KEY
     "Sec-WebSocket-Version: 13, 8\r\n\r\n", 426},
    {"version 130", "GET / HTTP/1.1\r\n" HOST UPG CONN RFC_KEY
     "Sec-WebSocket-Version: 130\r\n\r\n", 426},
    {"version empty", "GET / HTTP/1.1\r\n" HOST UPG CONN RFC_KEY
     "Sec-WebSocket-Version:\r\n\r\n", 426},
    {"version before key: 426 wins", "GET / HTTP/1.1\r\n" HOST UPG CONN
     "Sec-WebSocket-Version: 8\r\n\r\n", 426},
    {"duplicated version", "GET / HTTP/1.1\r\n" HOST UPG CONN RFC_KEY VER VER "\r\n", 400},
};

/* Parse s as a request (exact-size copy) and run the handshake check. */
static int handshake_of(const char *s, pyws_handshake *hs, char **keep, pyws_header **keep_h)
{
    size_t n = strlen(s);
    char *b = copy_exact(s, n);
    pyws_header *h = headers_exact(32);
    pyws_http_head head;
    int r = pyws_http_parse_request(b, n, BIG, &head, h, 32);
    if (r > 0)
        pyws_handshake_check(&head, h, hs);
    *keep = b;
    *keep_h = h;
    return r;
}

static void test_handshake_table(void)
{
    for (size_t i = 0; i < sizeof hs_cases / sizeof hs_cases[0]; i++) {
        const hs_case *c = &hs_cases[i];
        current = c->name;
        pyws_handshake hs;
        char *b;
        pyws_header *h;
        int r = handshake_of(c->in, &hs, &b, &h);
        if (CHECK(r == (int)strlen(c->in))) {
            CHECK(hs.status == c->status);
            if (c->status == 0) {
                CHECK(hs.error == NULL);
                CHECK(strcmp(hs.accept, RFC_ACCEPT) == 0);
            } else {
                CHECK(hs.error != NULL && hs.error[0] != '\0');
                CHECK(hs.accept[0] == '\0');
            }
        }
        free(h);
        release_copy(b);
    }
}

/* hs.requested: does the request ask for a WebSocket upgrade at all (an Upgrade header with the
 * token "websocket", any case)? Servers answer failing requests that ask themselves and hand
 * the rest to the application as plain HTTP, so this must not depend on anything else. */
typedef struct req_case {
    const char *name;
    const char *in;
    int requested;
    int status;
} req_case;

static const req_case req_cases[] = {
    {"valid", "GET / HTTP/1.1\r\n" HOST UPG CONN RFC_KEY VER "\r\n", 1, 0},
    {"plain GET", "GET / HTTP/1.1\r\n" HOST "\r\n", 0, 400},
    {"plain POST", "POST /form HTTP/1.1\r\n" HOST "Content-Length: 0\r\n\r\n", 0, 400},
    {"key and version, no Upgrade", "GET / HTTP/1.1\r\n" HOST CONN RFC_KEY VER "\r\n", 0, 400},
    {"Upgrade h2c", "GET / HTTP/1.1\r\n" HOST "Upgrade: h2c\r\n" CONN "\r\n", 0, 400},
    {"Upgrade websockets", "GET / HTTP/1.1\r\n" HOST "Upgrade: websockets\r\n" CONN RFC_KEY VER
     "\r\n", 0, 400},
    {"POST", "POST / HTTP/1.1\r\n" HOST UPG CONN RFC_KEY VER "\r\n", 1, 400},
    {"HTTP/1.0", "GET / HTTP/1.0\r\n" HOST UPG CONN RFC_KEY VER "\r\n", 1, 400},
    {"WEBSOCKET in a list", "GET / HTTP/1.1\r\n" HOST "Upgrade: h2c, WEBSOCKET\r\n" RFC_KEY VER
     "\r\n", 1, 400},
    {"second Upgrade header", "GET / HTTP/1.1\r\n" HOST "Upgrade: h2c\r\nUpgrade: WebSocket\r\n"
     CONN RFC_KEY "Sec-WebSocket-Version: 8\r\n\r\n", 1, 426},
    {"no Connection", "GET / HTTP/1.1\r\n" HOST UPG RFC_KEY VER "\r\n", 1, 400},
    {"missing key", "GET / HTTP/1.1\r\n" HOST UPG CONN VER "\r\n", 1, 400},
    {"missing version", "GET / HTTP/1.1\r\n" HOST UPG CONN RFC_KEY "\r\n", 1, 426},
};

static void test_handshake_requested(void)
{
    for (size_t i = 0; i < sizeof req_cases / sizeof req_cases[0]; i++) {
        const req_case *c = &req_cases[i];
        current = c->name;
        pyws_handshake hs;
        char *b;
        pyws_header *h;
        int r = handshake_of(c->in, &hs, &b, &h);
        if (CHECK(r == (int)strlen(c->in))) {
            CHECK(hs.requested == c->requested);
            CHECK(hs.status == c->status);
        }
        free(h);
        release_copy(b);
    }
    current = "no request";
    pyws_handshake hs;
    hs.requested = 7;
    pyws_handshake_check(NULL, NULL, &hs);
    CHECK(hs.requested == 0);
}

static void test_handshake_fields(void)
{
    pyws_handshake hs;
    char *b;
    pyws_header *h;

    current = "protocols and extensions";
    handshake_of(hs_cases[0].in, &hs, &b, &h);
    CHECK(hs.status == 0);
    CHECK(str_is(hs.protocols, "chat, superchat"));
    CHECK(hs.protocols_multi == 0);
    CHECK(hs.extensions.len == 0);
    CHECK(pyws_protocol_offered(hs.protocols, "superchat") == 1);
    CHECK(pyws_protocol_offered(hs.protocols, "SuperChat") == 0);
    free(h);
    release_copy(b);

    current = "protocol header twice";
    handshake_of("GET / HTTP/1.1\r\n" HOST UPG CONN RFC_KEY VER
                 "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Extensions: "
                 "permessage-deflate; client_max_window_bits\r\n"
                 "Sec-WebSocket-Protocol: superchat\r\n\r\n",
                 &hs, &b, &h);
    CHECK(hs.status == 0);
    CHECK(str_is(hs.protocols, "chat"));
    CHECK(hs.protocols_multi == 1);
    CHECK(str_is(hs.extensions, "permessage-deflate; client_max_window_bits"));
    free(h);
    release_copy(b);

    current = "views filled on failure";
    handshake_of("POST / HTTP/1.1\r\nSec-WebSocket-Protocol: chat\r\n\r\n", &hs, &b, &h);
    CHECK(hs.status == 400);
    CHECK(str_is(hs.protocols, "chat"));
    free(h);
    release_copy(b);

    current = "key with surrounding whitespace (hand-built headers)";
    pyws_http_head head;
    memset(&head, 0, sizeof head);
    head.method = view("GET");
    head.target = view("/");
    head.version_minor = 1;
    pyws_header hh[5];
    hh[0].name = view("Host");
    hh[0].value = view("a");
    hh[1].name = view("Upgrade");
    hh[1].value = view("websocket");
    hh[2].name = view("Connection");
    hh[2].value = view("Upgrade");
    hh[3].name = view("Sec-WebSocket-Key");
    hh[3].value = view(" \tdGhlIHNhbXBsZSBub25jZQ== ");
    hh[4].name = view("Sec-WebSocket-Version");
    hh[4].value = view(" 13\t");
    head.num_headers = 5;
    pyws_handshake_check(&head, hh, &hs);
    CHECK(hs.status == 0);
    CHECK(strcmp(hs.accept, RFC_ACCEPT) == 0);

    current = "no request";
    pyws_handshake_check(NULL, NULL, &hs);
    CHECK(hs.status == 400);

    current = "pyws_accept_key";
    char out[PYWS_ACCEPT_LEN + 1];
    memset(out, 'x', sizeof out);
    char *k = copy_exact("dGhlIHNhbXBsZSBub25jZQ==", 24);
    pyws_accept_key(k, 24, out);
    CHECK(strcmp(out, RFC_ACCEPT) == 0);
    CHECK(strlen(out) == PYWS_ACCEPT_LEN);
    release_copy(k);
    /* accept of the empty key is base64(SHA-1(GUID)) */
    pyws_accept_key(NULL, 0, out);
    uint8_t d[20];
    char expect[29];
    pyws_sha1((const uint8_t *)PYWS_WS_GUID, strlen(PYWS_WS_GUID), d);
    pyws_base64_encode(d, 20, expect);
    CHECK(strcmp(out, expect) == 0);
}

/* ------------------------------------------------------------------------------------------ */
/* SHA-1 and base64                                                                             */
/* ------------------------------------------------------------------------------------------ */

static void hex(const uint8_t *d, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    out[2 * n] = '\0';
}

static int sha1_is(const char *msg, size_t n, const char *expect_hex)
{
    uint8_t *b = (uint8_t *)copy_exact(msg, n);
    uint8_t d[20];
    char h[41];
    pyws_sha1(b, n, d);
    hex(d, 20, h);
    release_copy(b);
    return strcmp(h, expect_hex) == 0;
}

static void test_sha1(void)
{
    current = "SHA-1 vectors";
    CHECK(sha1_is("abc", 3, "a9993e364706816aba3e25717850c26c9cd0d89d"));
    CHECK(sha1_is("", 0, "da39a3ee5e6b4b0d3255bfef95601890afd80709"));
    CHECK(sha1_is("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56,
                  "84983e441c3bd26ebaae4aa1f95129e5e54670f1"));
    CHECK(sha1_is("The quick brown fox jumps over the lazy dog", 43,
                  "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12"));
    CHECK(sha1_is("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopq"
                  "klmnopqrlmnopqrsmnopqrstnopqrstu", 112,
                  "a49b2446a02c645bf419f995b67091253a04a259"));

    current = "SHA-1 one million a";
    char *a = malloc(1000000);
    memset(a, 'a', 1000000);
    CHECK(sha1_is(a, 1000000, "34aa973cd4c4daa4f61eeb2bdbad27316534016f"));
    /* same through the streaming interface in uneven pieces */
    pyws_sha1_ctx ctx;
    pw_sha1_init(&ctx);
    size_t done = 0, step = 1;
    while (done < 1000000) {
        size_t take = 1000000 - done < step ? 1000000 - done : step;
        pw_sha1_update(&ctx, (const uint8_t *)a + done, take);
        done += take;
        step = step * 7 % 193 + 1;
    }
    uint8_t d[20];
    char h[41];
    pw_sha1_final(&ctx, d);
    hex(d, 20, h);
    CHECK(strcmp(h, "34aa973cd4c4daa4f61eeb2bdbad27316534016f") == 0);
    free(a);

    /* every length around the padding boundaries: one-shot == byte-at-a-time */
    current = "SHA-1 streaming == one-shot";
    uint8_t msg[200];
    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (uint8_t)(i * 31 + 7);
    int same = 1;
    for (size_t n = 0; n <= sizeof msg; n++) {
        uint8_t d1[20], d2[20];
        pyws_sha1(msg, n, d1);
        pw_sha1_init(&ctx);
        for (size_t i = 0; i < n; i++)
            pw_sha1_update(&ctx, msg + i, 1);
        pw_sha1_final(&ctx, d2);
        same = same && memcmp(d1, d2, 20) == 0;
    }
    CHECK(same);
}

static void test_base64(void)
{
    static const struct { const char *plain, *coded; } vectors[] = {
        {"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"},
    };
    for (size_t i = 0; i < sizeof vectors / sizeof vectors[0]; i++) {
        current = vectors[i].coded;
        size_t n = strlen(vectors[i].plain), m = strlen(vectors[i].coded);
        char out[16];
        uint8_t back[16];
        CHECK(pyws_base64_encode((const uint8_t *)vectors[i].plain, n, out) == m);
        CHECK(strcmp(out, vectors[i].coded) == 0);
        char *in = copy_exact(vectors[i].coded, m);
        CHECK(pyws_base64_decode(in, m, back) == (long)n);
        CHECK(memcmp(back, vectors[i].plain, n) == 0);
        release_copy(in);
    }

    current = "base64 round trips 0..64";
    int ok = 1;
    for (size_t n = 0; n <= 64; n++) {
        uint8_t *data = malloc(n + 1);
        for (size_t i = 0; i < n; i++)
            data[i] = (uint8_t)(rng() & 0xff);
        size_t enc_len = 4 * ((n + 2) / 3);
        char *enc = malloc(enc_len + 1);               /* exactly what the header asks */
        size_t got = pyws_base64_encode(data, n, enc);
        ok = ok && got == enc_len && enc[enc_len] == '\0';
        char *in = copy_exact(enc, enc_len);
        size_t cap = 3 * enc_len / 4;
        uint8_t *dec = malloc(cap ? cap : 1);
        ok = ok && pyws_base64_decode(in, enc_len, dec) == (long)n;
        ok = ok && (n == 0 || memcmp(dec, data, n) == 0);
        free(dec);
        release_copy(in);
        free(enc);
        free(data);
    }
    CHECK(ok);

    static const char *bad[] = {
        "Zg=",          /* length not a multiple of 4 */
        "Zg",           /* no padding */
        "Z",
        "Zh==",         /* unused bits set */
        "Zm9=",         /* unused bits set */
        "Z===",         /* too much padding */
        "====",
        "=Zg=",         /* padding first */
        "Zg==Zg==",     /* padding in the middle */
        "Zm=v",         /* '=' then data */
        "Zm9v\n",
        "Zm9 ",
        "Zm-v",         /* URL-safe alphabet */
        "Zm_v",
        "Zm9v\r\n",
        "Zg=\0",
    };
    static const size_t bad_len[] = {3, 2, 1, 4, 4, 4, 4, 4, 8, 4, 5, 4, 4, 4, 6, 4};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        current = bad[i];
        char *in = copy_exact(bad[i], bad_len[i]);
        uint8_t out[8];
        CHECK(pyws_base64_decode(in, bad_len[i], out) == -1);
        release_copy(in);
    }

    current = "base64 every non-alphabet byte";
    int all_rejected = 1;
    for (int c = 0; c < 256; c++) {
        int in_alphabet = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                          (c >= '0' && c <= '9') || c == '+' || c == '/';
        char q[4] = {'Q', 'U', 'J', 'D'};     /* "ABC" */
        q[1] = (char)c;
        uint8_t out[3];
        long r = pyws_base64_decode(q, 4, out);
        if (!in_alphabet)
            all_rejected = all_rejected && r == -1;
        else
            all_rejected = all_rejected && r == 3;
    }
    CHECK(all_rejected);
}

static void run_all(void)
{
    run_head_table(REQ, request_cases, sizeof request_cases / sizeof request_cases[0]);
    run_head_table(RESP, response_cases, sizeof response_cases / sizeof response_cases[0]);
    test_request_fields();
    test_response_fields();
    test_many_headers();
    test_random_garbage();
    test_mutations();
    test_token_lists();
    test_content_length();
    test_handshake_table();
    test_handshake_fields();
    test_handshake_requested();
    test_sha1();
    test_base64();
}

int main(void)
{
    current = "the guard page faults";
    CHECK(guard_selftest());

    placement = PLACE_HEAP;
    run_all();
    placement = PLACE_GUARD;
    run_all();
    guard_free();

    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
