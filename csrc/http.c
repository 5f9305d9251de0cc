/*
 * http.c — HTTP/1.1 head parsing (RFC 9112 §2-§5), Sans-I/O.
 *
 * The caller owns the buffer. The parser never allocates, never writes into the buffer, never
 * reads at or past buf + len (nor past buf + max_bytes), and keeps no state between calls: the
 * caller appends bytes and calls again from the start. It returns the head length when the head
 * is complete, PYWS_HTTP_PARTIAL when every byte so far could still begin a valid head, or a
 * negative PYWS_HTTP_* error as soon as one is certain, so garbage (a TLS ClientHello, binary
 * junk) fails at its first impossible byte instead of waiting for max_bytes.
 *
 * Decisions (pyws.h leaves these open):
 *   - Any number of empty lines before a request line are skipped (RFC 9112 §2.2 asks for at
 *     least one); they count in head_len and against max_bytes. Responses get no such leniency.
 *   - Method: 1*tchar. Request-target: 1*(VCHAR), i.e. bytes 0x21..0x7E; raw bytes >= 0x80 are
 *     BAD (clients percent-encode). Exactly one SP between the three request-line parts.
 *   - Version: "HTTP/" DIGIT "." DIGIT, case-sensitive. Any major other than 1 is
 *     PYWS_HTTP_VERSION, reported as soon as that digit is read ("HTTP/2", "HTTP/0.9", the
 *     HTTP/2 preface "PRI * HTTP/2.0"); "HTTP/1.x" with any digit x is accepted with
 *     version_minor = x. Anything else there (a second digit, lower case, a trailing space) is
 *     BAD.
 *   - Status line: "HTTP/1.x" SP 3DIGIT [SP reason] EOL. The reason may be empty and the SP
 *     before it may be missing (both are seen in the wild); reason bytes are HTAB, SP, VCHAR and
 *     obs-text, not trimmed.
 *   - Header line: name (1*tchar) ":" OWS value OWS EOL. Whitespace before the colon, a line
 *     starting with SP/HTAB (obs-fold, or whitespace before the first header), NUL, DEL and every
 *     CTL except HTAB in a value are BAD. obs-text (>= 0x80) is allowed in values. The value
 *     view is trimmed of SP/HTAB on both sides and may be empty.
 *   - EOL is CRLF or a bare LF; a CR not followed by LF is BAD.
 *   - Limits: when len >= max_bytes and the first max_bytes bytes hold no complete head, no head
 *     can fit any more, so the answer is PYWS_HTTP_TOO_LARGE (unless the bytes inside the limit
 *     are already BAD/VERSION). A complete head of exactly max_bytes bytes is accepted; bytes
 *     after the head (a body, a pipelined request) are not looked at. max_bytes is clamped to
 *     INT_MAX so the head length always fits the int return. The (max_headers + 1)th header line
 *     gives PYWS_HTTP_TOO_LARGE as soon as its first byte is seen.
 *   - *head and headers[] are written only on success (head may be NULL; headers may be NULL, then
 *     header lines are counted and checked but not stored).
 */
#include "http.h"

#include <limits.h>
#include <string.h>

/* Internal step result: the step succeeded and the cursor moved on. Any other value is the final
 * return value of the parse (PYWS_HTTP_PARTIAL == 0, or a negative error). */
#define STEP_OK 1

typedef struct cursor {
    const unsigned char *p;      /* next byte to look at */
    const unsigned char *end;    /* buf + min(len, max_bytes): never read at or past this */
    int out_of_bytes;            /* what running into end means: PARTIAL or TOO_LARGE */
} cursor;

/* tchar (RFC 9110 §5.6.2): "!#$%&'*+-.^_`|~", DIGIT, ALPHA. */
static int is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
    case '-': case '.': case '^': case '_': case '`': case '|': case '~':
        return 1;
    default:
        return 0;
    }
}

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* A byte of a request-target: VCHAR. */
static int is_target_char(unsigned char c)
{
    return c > 0x20 && c < 0x7f;
}

/* A byte inside a field value or reason phrase: HTAB, SP, VCHAR, obs-text. */
static int is_text_char(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static int is_ows(unsigned char c)
{
    return c == ' ' || c == '\t';
}

static unsigned char ascii_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* 1 if a[0..n) and b[0..n) are equal ignoring ASCII case. */
static int ieq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (ascii_lower((unsigned char)a[i]) != ascii_lower((unsigned char)b[i]))
            return 0;
    }
    return 1;
}

static pyws_str make_str(const unsigned char *start, const unsigned char *stop)
{
    pyws_str s;
    s.ptr = (const char *)start;
    s.len = (size_t)(stop - start);
    return s;
}

/* A non-empty run of bytes accepted by `ok`, ended by one SP (consumed); *out views the run. */
static int take_word(cursor *c, int (*ok)(unsigned char), pyws_str *out)
{
    const unsigned char *start = c->p;
    for (;;) {
        if (c->p == c->end)
            return c->out_of_bytes;
        if (*c->p == ' ')
            break;
        if (!ok(*c->p))
            return PYWS_HTTP_BAD;
        c->p++;
    }
    if (c->p == start)
        return PYWS_HTTP_BAD;
    *out = make_str(start, c->p);
    c->p++;
    return STEP_OK;
}

/* The end of a line: CRLF or LF. */
static int take_eol(cursor *c)
{
    if (c->p == c->end)
        return c->out_of_bytes;
    if (*c->p == '\n') {
        c->p++;
        return STEP_OK;
    }
    if (*c->p != '\r')
        return PYWS_HTTP_BAD;
    c->p++;
    if (c->p == c->end)
        return c->out_of_bytes;
    if (*c->p != '\n')
        return PYWS_HTTP_BAD;
    c->p++;
    return STEP_OK;
}

/* "HTTP/" DIGIT "." DIGIT. A major other than 1 is PYWS_HTTP_VERSION at once. */
static int take_version(cursor *c, int *minor)
{
    static const char name[] = "HTTP/";
    for (size_t i = 0; i < sizeof name - 1; i++) {
        if (c->p == c->end)
            return c->out_of_bytes;
        if (*c->p != (unsigned char)name[i])
            return PYWS_HTTP_BAD;
        c->p++;
    }
    if (c->p == c->end)
        return c->out_of_bytes;
    if (!is_digit(*c->p))
        return PYWS_HTTP_BAD;
    if (*c->p != '1')
        return PYWS_HTTP_VERSION;
    c->p++;
    if (c->p == c->end)
        return c->out_of_bytes;
    if (*c->p != '.')
        return PYWS_HTTP_BAD;
    c->p++;
    if (c->p == c->end)
        return c->out_of_bytes;
    if (!is_digit(*c->p))
        return PYWS_HTTP_BAD;
    *minor = *c->p - '0';
    c->p++;
    return STEP_OK;
}

/* Header lines up to and including the empty line that ends the head. */
static int take_headers(cursor *c, pyws_header *headers, size_t max_headers, size_t *count)
{
    size_t n = 0;
    for (;;) {
        if (c->p == c->end)
            return c->out_of_bytes;
        unsigned char first = *c->p;
        if (first == '\r' || first == '\n') {
            int r = take_eol(c);
            if (r != STEP_OK)
                return r;
            *count = n;
            return STEP_OK;
        }
        if (is_ows(first))
            return PYWS_HTTP_BAD;            /* obs-fold, or whitespace after the start line */
        if (n == max_headers)
            return PYWS_HTTP_TOO_LARGE;

        const unsigned char *name = c->p;
        for (;;) {
            if (c->p == c->end)
                return c->out_of_bytes;
            if (*c->p == ':')
                break;
            if (!is_tchar(*c->p))
                return PYWS_HTTP_BAD;        /* includes whitespace before the colon */
            c->p++;
        }
        if (c->p == name)
            return PYWS_HTTP_BAD;            /* empty field name */
        const unsigned char *name_end = c->p;
        c->p++;                              /* ':' */

        for (;;) {
            if (c->p == c->end)
                return c->out_of_bytes;
            if (!is_ows(*c->p))
                break;
            c->p++;
        }
        const unsigned char *value = c->p;
        const unsigned char *value_end = c->p;   /* just past the last non-OWS byte */
        for (;;) {
            if (c->p == c->end)
                return c->out_of_bytes;
            unsigned char ch = *c->p;
            if (ch == '\r' || ch == '\n')
                break;
            if (!is_text_char(ch))
                return PYWS_HTTP_BAD;
            c->p++;
            if (!is_ows(ch))
                value_end = c->p;
        }
        int r = take_eol(c);
        if (r != STEP_OK)
            return r;
        if (headers != NULL) {
            headers[n].name = make_str(name, name_end);
            headers[n].value = make_str(value, value_end);
        }
        n++;
    }
}

/* Set up the cursor over buf[0..min(len, max_bytes, INT_MAX)). len must be > 0. */
static void cursor_init(cursor *c, const char *buf, size_t len, size_t max_bytes)
{
    size_t limit = max_bytes < (size_t)INT_MAX ? max_bytes : (size_t)INT_MAX;
    size_t n = len < limit ? len : limit;
    c->p = (const unsigned char *)buf;
    c->end = c->p + n;
    c->out_of_bytes = len >= limit ? PYWS_HTTP_TOO_LARGE : PYWS_HTTP_PARTIAL;
}

static void head_clear(pyws_http_head *h)
{
    h->method.ptr = NULL;
    h->method.len = 0;
    h->target.ptr = NULL;
    h->target.len = 0;
    h->version_minor = 0;
    h->status = 0;
    h->reason.ptr = NULL;
    h->reason.len = 0;
    h->num_headers = 0;
    h->head_len = 0;
}

static int empty_input(size_t max_bytes)
{
    return max_bytes == 0 ? PYWS_HTTP_TOO_LARGE : PYWS_HTTP_PARTIAL;
}

int pyws_http_parse_request(const char *buf, size_t len, size_t max_bytes,
                            pyws_http_head *head, pyws_header *headers, size_t max_headers)
{
    if (len == 0)
        return empty_input(max_bytes);

    cursor c;
    cursor_init(&c, buf, len, max_bytes);
    pyws_http_head h;
    head_clear(&h);
    int r;

    /* Empty lines before the request line. */
    for (;;) {
        if (c.p == c.end)
            return c.out_of_bytes;
        if (*c.p != '\r' && *c.p != '\n')
            break;
        if ((r = take_eol(&c)) != STEP_OK)
            return r;
    }

    if ((r = take_word(&c, is_tchar, &h.method)) != STEP_OK)
        return r;
    if ((r = take_word(&c, is_target_char, &h.target)) != STEP_OK)
        return r;

    if ((r = take_version(&c, &h.version_minor)) != STEP_OK)
        return r;
    if ((r = take_eol(&c)) != STEP_OK)
        return r;
    if ((r = take_headers(&c, headers, max_headers, &h.num_headers)) != STEP_OK)
        return r;

    h.head_len = (size_t)(c.p - (const unsigned char *)buf);
    if (head != NULL)
        *head = h;
    return (int)h.head_len;
}

int pyws_http_parse_response(const char *buf, size_t len, size_t max_bytes,
                             pyws_http_head *head, pyws_header *headers, size_t max_headers)
{
    if (len == 0)
        return empty_input(max_bytes);

    cursor c;
    cursor_init(&c, buf, len, max_bytes);
    pyws_http_head h;
    head_clear(&h);
    int r;

    if ((r = take_version(&c, &h.version_minor)) != STEP_OK)
        return r;
    if (c.p == c.end)
        return c.out_of_bytes;
    if (*c.p != ' ')
        return PYWS_HTTP_BAD;
    c.p++;

    for (int i = 0; i < 3; i++) {
        if (c.p == c.end)
            return c.out_of_bytes;
        if (!is_digit(*c.p))
            return PYWS_HTTP_BAD;
        h.status = h.status * 10 + (*c.p - '0');
        c.p++;
    }

    if (c.p == c.end)
        return c.out_of_bytes;
    const unsigned char *reason = c.p;
    if (*c.p == ' ') {
        c.p++;
        reason = c.p;
        for (;;) {
            if (c.p == c.end)
                return c.out_of_bytes;
            if (*c.p == '\r' || *c.p == '\n')
                break;
            if (!is_text_char(*c.p))
                return PYWS_HTTP_BAD;
            c.p++;
        }
    } else if (*c.p != '\r' && *c.p != '\n') {
        return PYWS_HTTP_BAD;                /* a fourth digit, or anything else */
    }
    h.reason = make_str(reason, c.p);
    if ((r = take_eol(&c)) != STEP_OK)
        return r;
    if ((r = take_headers(&c, headers, max_headers, &h.num_headers)) != STEP_OK)
        return r;

    h.head_len = (size_t)(c.p - (const unsigned char *)buf);
    if (head != NULL)
        *head = h;
    return (int)h.head_len;
}

int pyws_http_find(const pyws_header *headers, size_t n, const char *name, size_t from)
{
    if (headers == NULL || name == NULL)
        return -1;
    size_t name_len = strlen(name);
    if (n > (size_t)INT_MAX)
        n = (size_t)INT_MAX;
    for (size_t i = from; i < n; i++) {
        if (headers[i].name.len == name_len && ieq(headers[i].name.ptr, name, name_len))
            return (int)i;
    }
    return -1;
}

size_t pw_http_values(const pyws_header *headers, size_t n, const char *name, pyws_str *out,
                        size_t max)
{
    size_t got = 0;
    for (int i = pyws_http_find(headers, n, name, 0); i >= 0 && got < max;
         i = pyws_http_find(headers, n, name, (size_t)i + 1))
        out[got++] = headers[i].value;
    return got;
}

pyws_str pw_http_trim(pyws_str s)
{
    while (s.len > 0 && is_ows((unsigned char)s.ptr[0])) {
        s.ptr++;
        s.len--;
    }
    while (s.len > 0 && is_ows((unsigned char)s.ptr[s.len - 1]))
        s.len--;
    return s;
}

int pw_http_list_has(pyws_str list, const char *item, int nocase)
{
    if (item == NULL || item[0] == '\0' || list.len == 0)
        return 0;
    size_t item_len = strlen(item);
    size_t i = 0;
    while (i <= list.len) {
        size_t j = i;
        while (j < list.len && list.ptr[j] != ',')
            j++;
        pyws_str elem;
        elem.ptr = list.ptr + i;
        elem.len = j - i;
        elem = pw_http_trim(elem);
        if (elem.len == item_len) {
            if (nocase ? ieq(elem.ptr, item, item_len) : memcmp(elem.ptr, item, item_len) == 0)
                return 1;
        }
        i = j + 1;                           /* past the comma (or past the end: stop) */
    }
    return 0;
}

int pyws_http_has_token(pyws_str value, const char *token)
{
    return pw_http_list_has(value, token, 1);
}

/* One Content-Length value: a list of 1*DIGIT separated by commas (RFC 9110 §8.6 lets a
 * recipient accept a list of identical values). Folds each number into *seen / *have. */
static int content_length_value(pyws_str v, uint64_t *seen, int *have)
{
    size_t i = 0;
    for (;;) {
        size_t j = i;
        while (j < v.len && v.ptr[j] != ',')
            j++;
        pyws_str elem;
        elem.ptr = v.ptr + i;
        elem.len = j - i;
        elem = pw_http_trim(elem);
        if (elem.len == 0)
            return -1;
        uint64_t x = 0;
        for (size_t k = 0; k < elem.len; k++) {
            unsigned char ch = (unsigned char)elem.ptr[k];
            if (!is_digit(ch))
                return -1;
            unsigned d = (unsigned)(ch - '0');
            if (x > (UINT64_MAX - d) / 10)
                return -1;
            x = x * 10 + d;
        }
        if (*have && x != *seen)
            return -1;
        *seen = x;
        *have = 1;
        if (j == v.len)
            return 0;
        i = j + 1;
    }
}

int pyws_http_content_length(const pyws_header *headers, size_t n, uint64_t *out)
{
    uint64_t value = 0;
    int have = 0;
    for (int i = pyws_http_find(headers, n, "content-length", 0); i >= 0;
         i = pyws_http_find(headers, n, "content-length", (size_t)i + 1)) {
        if (content_length_value(pw_http_trim(headers[i].value), &value, &have) != 0) {
            if (out != NULL)
                *out = 0;
            return -1;
        }
    }
    if (out != NULL)
        *out = value;
    return have ? 0 : 1;
}
