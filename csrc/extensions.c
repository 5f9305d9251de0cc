/*
 * extensions.c — Sec-WebSocket-Extensions (RFC 6455 §9.1) and the permessage-deflate
 * negotiation of RFC 7692 §7.1, for both roles. Pure functions over caller-owned strings; the
 * zlib side is deflate.c.
 *
 * Grammar (RFC 6455 §9.1): a comma-separated list of extensions, each a token followed by
 * ";"-separated parameters, each a token with an optional "=" value that is a token or a
 * quoted-string. Whitespace may surround every separator.
 */
#include <stdio.h>
#include <string.h>

#include "pyws.h"

#define MAX_PARAMS 16
#define MAX_VALUE 32

typedef struct ext_param {
    pyws_str name;
    int has_value;
    char value[MAX_VALUE];    /* unescaped; longer values are cut (and then never valid) */
    size_t value_len;
} ext_param;

typedef struct ext_elem {
    pyws_str name;
    ext_param params[MAX_PARAMS];
    size_t nparams;
    int too_many;             /* more than MAX_PARAMS parameters */
} ext_elem;

typedef struct cursor {
    const char *p;
    const char *end;
} cursor;

static int is_tchar(unsigned char ch)
{
    return ch > 32 && ch < 127 && !strchr("()<>@,;:\\\"/[]?={}", ch);
}

static void skip_ows(cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t'))
        c->p++;
}

static int read_token(cursor *c, pyws_str *out)
{
    const char *start = c->p;
    while (c->p < c->end && is_tchar((unsigned char)*c->p))
        c->p++;
    out->ptr = start;
    out->len = (size_t)(c->p - start);
    return out->len ? 0 : -1;
}

/* A token or a quoted-string (backslash escapes undone) into prm->value. */
static int read_value(cursor *c, ext_param *prm)
{
    prm->value_len = 0;
    if (c->p < c->end && *c->p == '"') {
        c->p++;
        for (;;) {
            if (c->p >= c->end)
                return -1; /* unterminated */
            char ch = *c->p++;
            if (ch == '"')
                break;
            if (ch == '\\') {
                if (c->p >= c->end)
                    return -1;
                ch = *c->p++;
            }
            if ((unsigned char)ch < 32 && ch != '\t')
                return -1;
            if (prm->value_len < MAX_VALUE)
                prm->value[prm->value_len] = ch;
            prm->value_len++;
        }
        return 0;
    }
    pyws_str tok;
    if (read_token(c, &tok) < 0)
        return -1;
    size_t n = tok.len < MAX_VALUE ? tok.len : MAX_VALUE;
    memcpy(prm->value, tok.ptr, n);
    prm->value_len = tok.len;
    return 0;
}

/* Parse the next element of the list. 1: *e filled; 0: list ended; -1: syntax error. Empty
 * list elements (", ,") are skipped, as the list rule allows. */
static int next_elem(cursor *c, ext_elem *e)
{
    for (;;) {
        skip_ows(c);
        if (c->p >= c->end)
            return 0;
        if (*c->p != ',')
            break;
        c->p++;
    }
    memset(e, 0, sizeof(*e));
    if (read_token(c, &e->name) < 0)
        return -1;
    for (;;) {
        skip_ows(c);
        if (c->p >= c->end)
            return 1;
        if (*c->p == ',') {
            c->p++;
            return 1;
        }
        if (*c->p != ';')
            return -1;
        c->p++;
        skip_ows(c);
        ext_param tmp;
        ext_param *prm = e->nparams < MAX_PARAMS ? &e->params[e->nparams] : &tmp;
        memset(prm, 0, sizeof(*prm));
        if (read_token(c, &prm->name) < 0)
            return -1;
        skip_ows(c);
        if (c->p < c->end && *c->p == '=') {
            c->p++;
            skip_ows(c);
            if (read_value(c, prm) < 0)
                return -1;
            prm->has_value = 1;
        }
        if (e->nparams < MAX_PARAMS)
            e->nparams++;
        else
            e->too_many = 1;
    }
}

static int name_is(pyws_str s, const char *lit)
{
    size_t n = strlen(lit);
    if (s.len != n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char a = s.ptr[i];
        if (a >= 'A' && a <= 'Z')
            a = (char)(a - 'A' + 'a');
        if (a != lit[i])
            return 0;
    }
    return 1;
}

/* "8".."15" exactly (no sign, no leading zero); else -1. */
static int window_value(const ext_param *prm)
{
    if (prm->value_len == 1 && prm->value[0] >= '8' && prm->value[0] <= '9')
        return prm->value[0] - '0';
    if (prm->value_len == 2 && prm->value[0] == '1' && prm->value[1] >= '0' && prm->value[1] <= '5')
        return 10 + prm->value[1] - '0';
    return -1;
}

/* Why an element's parameters are not acceptable (0: they are). */
enum { PMD_OK = 0, PMD_UNKNOWN, PMD_REPEATED, PMD_BAD_VALUE };

/* The parameters of one permessage-deflate element, checked per RFC 7692 §7.1: known names
 * only, each at most once, values where (and only where) allowed and in range. */
static int pmd_params(const ext_elem *e, pyws_pmd_params *out)
{
    int seen[4] = {0, 0, 0, 0};
    memset(out, 0, sizeof(*out));
    if (e->too_many)
        return PMD_BAD_VALUE; /* only four names exist: some are unknown or repeated */
    for (size_t i = 0; i < e->nparams; i++) {
        const ext_param *prm = &e->params[i];
        int which;
        if (name_is(prm->name, "server_no_context_takeover"))
            which = 0;
        else if (name_is(prm->name, "client_no_context_takeover"))
            which = 1;
        else if (name_is(prm->name, "server_max_window_bits"))
            which = 2;
        else if (name_is(prm->name, "client_max_window_bits"))
            which = 3;
        else
            return PMD_UNKNOWN;
        if (seen[which]++)
            return PMD_REPEATED;
        switch (which) {
        case 0:
        case 1:
            if (prm->has_value)
                return PMD_BAD_VALUE; /* no_context_takeover takes no value */
            if (which == 0)
                out->server_no_context_takeover = 1;
            else
                out->client_no_context_takeover = 1;
            break;
        case 2: /* needs a value from 8 to 15 */
            if (!prm->has_value || (out->server_max_window_bits = window_value(prm)) < 0)
                return PMD_BAD_VALUE;
            break;
        default: /* no value, or one from 8 to 15 */
            if (!prm->has_value)
                out->client_max_window_bits = -1;
            else if ((out->client_max_window_bits = window_value(prm)) < 0)
                return PMD_BAD_VALUE;
            break;
        }
    }
    return PMD_OK;
}

static int clamp_bits(int bits)
{
    if (bits < 9)
        return 9;
    return bits > 15 ? 15 : bits;
}

/* Append "; name" or "; name=value" to the response being built. */
static void add(char *out, size_t cap, size_t *at, const char *name, int value)
{
    int n = value ? snprintf(out + *at, cap - *at, "; %s=%d", name, value)
                  : snprintf(out + *at, cap - *at, "; %s", name);
    if (n > 0 && (size_t)n < cap - *at)
        *at += (size_t)n;
    else
        out[*at] = 0; /* does not fit: leave the value as it was, never half a parameter */
}

int pyws_pmd_format(const pyws_pmd_params *a, char *out, size_t cap)
{
    if (cap < PYWS_PMD_MAX_LEN)
        return PYWS_ERR_ARG;
    size_t at = (size_t)snprintf(out, cap, "permessage-deflate");
    if (a->server_no_context_takeover)
        add(out, cap, &at, "server_no_context_takeover", 0);
    if (a->client_no_context_takeover)
        add(out, cap, &at, "client_no_context_takeover", 0);
    if (a->server_max_window_bits)
        add(out, cap, &at, "server_max_window_bits", a->server_max_window_bits);
    if (a->client_max_window_bits > 0)
        add(out, cap, &at, "client_max_window_bits", a->client_max_window_bits);
    else if (a->client_max_window_bits < 0)
        add(out, cap, &at, "client_max_window_bits", 0);
    return (int)at;
}

int pyws_pmd_negotiate(const pyws_str *values, size_t nvalues, const pyws_opts *opts,
                       pyws_pmd_params *agreed, char *response, size_t cap)
{
    if (!opts->compression || (response && cap < PYWS_PMD_MAX_LEN))
        return 0;
    for (size_t v = 0; v < nvalues; v++) {
        cursor c = {values[v].ptr, values[v].ptr + values[v].len};
        ext_elem e;
        int r;
        while ((r = next_elem(&c, &e)) == 1) {
            pyws_pmd_params offer;
            if (!name_is(e.name, "permessage-deflate") || pmd_params(&e, &offer) != PMD_OK)
                continue; /* another extension, or an offer we must decline: try the next */
            pyws_pmd_params a;
            memset(&a, 0, sizeof(a));
            a.server_no_context_takeover =
                offer.server_no_context_takeover || opts->deflate_no_context_takeover;
            /* the client's no-context-takeover is only a hint unless the response names it */
            a.client_no_context_takeover =
                offer.client_no_context_takeover || opts->deflate_peer_no_context_takeover;
            /* our window: ours, or less if the client asked (8 means: we never compress) */
            int ours = clamp_bits(opts->deflate_window_bits);
            if (offer.server_max_window_bits && offer.server_max_window_bits < ours)
                ours = offer.server_max_window_bits;
            if (offer.server_max_window_bits || ours < 15)
                a.server_max_window_bits = ours;
            /* the client's window: we may bound it only if the client said it can be bound */
            if (offer.client_max_window_bits) {
                int theirs = offer.client_max_window_bits > 0 ? offer.client_max_window_bits : 15;
                int want = opts->deflate_peer_window_bits;
                if (want > 0 && clamp_bits(want) < theirs)
                    theirs = clamp_bits(want);
                if (offer.client_max_window_bits > 0 || theirs < 15)
                    a.client_max_window_bits = theirs;
            }
            if (response)
                pyws_pmd_format(&a, response, cap);
            *agreed = a;
            return 1;
        }
        if (r < 0)
            continue; /* the rest of a malformed header value is not read */
    }
    return 0;
}

/* One offer: permessage-deflate with our parameters, with or without server_max_window_bits. */
static size_t one_offer(const pyws_opts *opts, int ask_window, char *out, size_t cap)
{
    size_t at = (size_t)snprintf(out, cap, "permessage-deflate");
    if (opts->deflate_no_context_takeover)
        add(out, cap, &at, "client_no_context_takeover", 0);
    if (opts->deflate_peer_no_context_takeover)
        add(out, cap, &at, "server_no_context_takeover", 0);
    if (ask_window)
        add(out, cap, &at, "server_max_window_bits", clamp_bits(opts->deflate_peer_window_bits));
    int ours = clamp_bits(opts->deflate_window_bits);
    add(out, cap, &at, "client_max_window_bits", ours < 15 ? ours : 0);
    return at;
}

int pyws_pmd_offer(const pyws_opts *opts, char *out, size_t cap)
{
    if (cap < 512)
        return PYWS_ERR_ARG;
    out[0] = 0;
    if (!opts->compression)
        return 0;
    int p = opts->deflate_peer_window_bits;
    size_t at;
    if (p > 0 && clamp_bits(p) < 15) {
        /* ask for a smaller server window, and offer the same without that as a fallback for
         * servers that cannot honour it: they pick the first offer they accept */
        at = one_offer(opts, 1, out, cap);
        at += (size_t)snprintf(out + at, cap - at, ", ");
        at += one_offer(opts, 0, out + at, cap - at);
    } else {
        at = one_offer(opts, 0, out, cap);
    }
    return (int)at;
}

const char *pyws_pmd_check_response(const pyws_str *values, size_t nvalues, const pyws_opts *opts,
                                    pyws_pmd_params *agreed, int *accepted)
{
    *accepted = 0;
    memset(agreed, 0, sizeof(*agreed));
    int found = 0;
    for (size_t v = 0; v < nvalues; v++) {
        cursor c = {values[v].ptr, values[v].ptr + values[v].len};
        ext_elem e;
        int r;
        while ((r = next_elem(&c, &e)) == 1) {
            if (!opts->compression || !name_is(e.name, "permessage-deflate"))
                return "the server selected an extension we did not offer";
            if (found++)
                return "the server selected permessage-deflate twice";
            pyws_pmd_params a;
            static const char *const why[] = {
                [PMD_UNKNOWN] = "the server's permessage-deflate has an unknown parameter",
                [PMD_REPEATED] = "the server's permessage-deflate repeats a parameter",
                [PMD_BAD_VALUE] = "the server's permessage-deflate has an invalid parameter value",
            };
            int bad = pmd_params(&e, &a);
            if (bad)
                return why[bad];
            if (a.client_max_window_bits < 0)
                return "the server's client_max_window_bits has no value";
            if (opts->deflate_peer_no_context_takeover && !a.server_no_context_takeover)
                return "the server did not accept server_no_context_takeover, which we asked for";
            *agreed = a;
        }
        if (r < 0)
            return "the server's Sec-WebSocket-Extensions header is malformed";
    }
    *accepted = found;
    return NULL;
}
