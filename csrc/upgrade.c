/*
 * upgrade.c — the HTTP phase of a server connection: reading a request (head and
 * Content-Length body) within its limits, answering malformed ones, delivering EV_HTTP_MSG,
 * and the upgrade to WebSocket (pyws_ws_upgrade).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "http.h"

#define MAX_HEADERS_HARD 256

static const char *status_text(int status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 426: return "Upgrade Required";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
    }
}

/* Answer the request with status and close once written. The body, and the EV_ERROR text
 * (code PYWS_ERR_HANDSHAKE, opcode: status), say what was wrong: "400 Bad Request: why". */
static pyws_event *http_error(pyws_loop *loop, pyws_conn *c, int status, const char *why)
{
    char line[256];
    int ln = snprintf(line, sizeof(line), "%d %s: %s", status, status_text(status), why);
    if (ln < 0)
        ln = 0;
    if ((size_t)ln >= sizeof(line))
        ln = (int)sizeof(line) - 1;
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     "Content-Length: %d\r\n%sConnection: close\r\n\r\n",
                     status, status_text(status), ln + 1,
                     status == 426 ? "Sec-WebSocket-Version: 13\r\n" : "");
    if (n > 0 && (size_t)n < sizeof(head)) {
        pw_conn_queue(loop, c, (const uint8_t *)head, (size_t)n, (const uint8_t *)line,
                        (size_t)ln);
        pw_conn_queue(loop, c, (const uint8_t *)"\n", 1, NULL, 0);
    }
    /* a keep-alive connection whose next request never came (408, nothing of it read) did
     * not fail a handshake: it just went quiet */
    if (c->role == PYWS_ROLE_SERVER && (status != 408 || c->state == PYWS_ST_HTTP || c->rlen))
        pw_stats_hs_failed(loop, status);
    pyws_event *ev = pw_event_push(loop, PYWS_EV_ERROR, c->id);
    if (ev) {
        ev->code = PYWS_ERR_HANDSHAKE;
        ev->opcode = status;
        uint8_t *text = pw_scratch(loop, (size_t)ln);
        if (text) {
            memcpy(text, line, (size_t)ln);
            ev->data = text;
            ev->len = (size_t)ln;
        } else {
            ev->data = (const uint8_t *)why;
            ev->len = strlen(why);
        }
    }
    pw_conn_finish(loop, c);
    return ev;
}

void pw_http_error(pyws_loop *loop, pyws_conn *c, int status, const char *why)
{
    http_error(loop, c, status, why);
}

/* A request that asked for a WebSocket upgrade and broke RFC 6455 §4.2.1: answered here, never
 * handed to the application (which could only get it wrong, e.g. answer 200 to a client
 * waiting for 101). Its EV_ERROR carries aux = 1. */
static void bad_upgrade(pyws_loop *loop, pyws_conn *c, int status, const char *why)
{
    pyws_event *ev = http_error(loop, c, status, why); /* HTTP(_REQUEST) -> FLUSHING */
    if (ev)
        ev->aux = 1;
}

/* Keep what ws_upgrade() needs once the request bytes are gone: status, accept key and the
 * offered subprotocols (every Sec-WebSocket-Protocol header, joined with ", "). */
static void store_handshake(pyws_loop *loop, pyws_conn *c, const pyws_handshake *hs,
                            const pyws_header *headers, size_t n)
{
    c->hs_status = hs->status;
    c->flags &= ~CF_HS_COUNTED; /* a new request: its answer is not counted yet */
    memcpy(c->accept, hs->accept, sizeof(c->accept));
    free(c->protocols);
    c->protocols = NULL;
    if (hs->status == 0 && hs->protocols.len) {
        size_t total = 0;
        for (int i = pyws_http_find(headers, n, "sec-websocket-protocol", 0); i >= 0;
             i = pyws_http_find(headers, n, "sec-websocket-protocol", (size_t)i + 1))
            total += headers[i].value.len + 2;
        c->protocols = malloc(total + 1);
        if (c->protocols) {
            size_t at = 0;
            for (int i = pyws_http_find(headers, n, "sec-websocket-protocol", 0); i >= 0;
                 i = pyws_http_find(headers, n, "sec-websocket-protocol", (size_t)i + 1)) {
                if (at) {
                    memcpy(c->protocols + at, ", ", 2);
                    at += 2;
                }
                memcpy(c->protocols + at, headers[i].value.ptr, headers[i].value.len);
                at += headers[i].value.len;
            }
            c->protocols[at] = 0;
        }
    }
    /* permessage-deflate: choose now, while the request's headers are at hand */
    c->pmd_offered = 0;
    if (hs->status == 0 && c->opts.compression) {
        pyws_str values[16];
        size_t nv = pw_http_values(headers, n, "sec-websocket-extensions", values, 16);
        /* the answer's text is written at upgrade, from pmd_agreed */
        if (nv && pyws_pmd_negotiate(values, nv, &c->opts, &c->pmd_agreed, NULL, 0) == 1)
            c->pmd_offered = 1;
    }
    pw_conn_set_state(loop, c, PYWS_ST_HTTP_REQUEST); /* from HTTP, or staying there */
}

void pw_http_input(pyws_loop *loop, pyws_conn *c)
{
    if (c->flags & CF_REQ_DONE) {
        pw_conn_mark(loop, c, CF_PENDING); /* one request per turn; the rest next poll */
        return;
    }
    if (c->rlen == 0)
        return;
    pyws_header headers[MAX_HEADERS_HARD];
    pyws_http_head head;
    size_t maxh = c->opts.max_headers < MAX_HEADERS_HARD ? c->opts.max_headers : MAX_HEADERS_HARD;
    int r = pyws_http_parse_request((const char *)c->rbuf, c->rlen, c->opts.max_header_bytes,
                                    &head, headers, maxh);
    if (r == PYWS_HTTP_PARTIAL)
        return;
    if (r < 0) {
        int status = -r;
        pw_http_error(loop, c, status,
                        status == 431 ? "request head too large"
                        : status == 505 ? "only HTTP/1.x is served here"
                                        : "malformed HTTP request");
        return;
    }
    if (pyws_http_find(headers, head.num_headers, "transfer-encoding", 0) >= 0) {
        pw_http_error(loop, c, 501, "chunked request bodies are not supported; send Content-Length");
        return;
    }
    uint64_t body = 0;
    if (pyws_http_content_length(headers, head.num_headers, &body) < 0) {
        pw_http_error(loop, c, 400, "invalid Content-Length");
        return;
    }
    if (body > c->opts.max_body) {
        pw_http_error(loop, c, 413, "request body larger than the server's max_body");
        return;
    }
    if (c->rlen < head.head_len + body)
        return; /* body still arriving */

    pyws_handshake hs;
    pyws_handshake_check(&head, headers, &hs);
    if (hs.requested && hs.status) {
        bad_upgrade(loop, c, hs.status, hs.error);
        return;
    }
    store_handshake(loop, c, &hs, headers, head.num_headers);

    pyws_event *ev = pw_event_push(loop, PYWS_EV_HTTP_MSG, c->id);
    if (ev) {
        ev->data = c->rbuf;
        ev->len = head.head_len;
        ev->data2 = c->rbuf + head.head_len;
        ev->len2 = (size_t)body;
        ev->code = hs.status == 0;
        ev->opcode = hs.status;
    }
    c->rdone = head.head_len + (size_t)body;
    c->flags |= CF_REQ_DONE;
    c->deadline_hs = 0;
    pw_conn_mark(loop, c, CF_PENDING);
}

void pw_http_pending(pyws_loop *loop, pyws_conn *c)
{
    if (c->flags & CF_REQ_DONE) {
        size_t rest = c->rlen - c->rdone;
        if (rest)
            memmove(c->rbuf, c->rbuf + c->rdone, rest);
        c->rlen = rest;
        c->rdone = 0;
        c->flags &= ~CF_REQ_DONE;
    }
    if (pyws_st_http(c->state)) {
        if (c->rlen) {
            pw_http_input(loop, c);
        } else if (!c->deadline_hs && c->opts.handshake_timeout) {
            /* keep-alive: the next request has the same time to arrive */
            c->deadline_hs = loop->now + c->opts.handshake_timeout;
            pw_conn_deadline(loop, c, c->deadline_hs);
        }
        if (c->rlen == 0 && c->rcap > 4096) {
            free(c->rbuf);
            c->rbuf = NULL;
            c->rcap = 0;
        }
        return;
    }
    /* Upgraded: bytes that followed the request are WebSocket input. */
    if (c->rlen && c->sess && pyws_st_ws_input(c->state)) {
        uint8_t *dst = pw_scratch(loop, c->rlen);
        if (dst) {
            memcpy(dst, c->rbuf, c->rlen);
            size_t n = c->rlen;
            c->rlen = 0;
            pw_ws_input(loop, c, dst, n);
            c = pw_conn_get(loop, c->id);
            if (!c)
                return;
        }
    }
    free(c->rbuf);
    c->rbuf = NULL;
    c->rlen = c->rcap = 0;
}

int pyws_handshake_status(pyws_loop *loop, uint64_t id)
{
    pyws_conn *c = pw_conn_get(loop, id);
    if (!c)
        return PYWS_ERR_BADID;
    if (c->state != PYWS_ST_HTTP_REQUEST)
        return PYWS_ERR_STATE;
    return c->hs_status;
}

static int is_token(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch <= 32 || ch >= 127 || strchr("()<>@,;:\\\"/[]?={}", ch))
            return 0;
    }
    return 1;
}

int pyws_ws_upgrade(pyws_loop *loop, uint64_t id, const char *protocol, const char *extra_headers)
{
    pyws_conn *c = pw_conn_get(loop, id);
    if (!c || c->kind != PYWS_KIND_CONN)
        return PYWS_ERR_BADID;
    if (c->state != PYWS_ST_HTTP_REQUEST)
        return pw_set_error(loop, PYWS_ERR_STATE,
                              "ws_upgrade() needs a connection whose last HTTP request is unanswered");
    if (c->hs_status) {
        /* Only requests that did not ask for an upgrade get here (pw_http_input answers the
         * ones that asked and failed), so the status is 400: no Upgrade: websocket. */
        int status = c->hs_status;
        bad_upgrade(loop, c, status, "the request does not ask for a WebSocket upgrade "
                    "(no Upgrade: websocket header)");
        return pw_set_error(loop, PYWS_ERR_HANDSHAKE, "the request is not a valid WebSocket "
                              "upgrade (answered with HTTP %d)", status);
    }
    if (protocol && *protocol) {
        pyws_str offered = {c->protocols, c->protocols ? strlen(c->protocols) : 0};
        if (!is_token(protocol) || !c->protocols || !pyws_protocol_offered(offered, protocol))
            return pw_set_error(loop, PYWS_ERR_PROTOCOL, "subprotocol '%.64s' was not offered by "
                                  "the client (offered: %.128s)", protocol,
                                  c->protocols ? c->protocols : "none");
    }
    char ext[PYWS_PMD_MAX_LEN];
    ext[0] = 0;
    if (c->pmd_offered && pyws_pmd_format(&c->pmd_agreed, ext, sizeof(ext)) < 0)
        ext[0] = 0;
    pyws_handshake_reply reply = {c->accept, protocol, ext, extra_headers};
    char small[1024];
    char *head = small;
    int64_t n = pyws_handshake_format_response(&reply, small, sizeof(small));
    if (n < 0 && n != PYWS_ERR_ARG) {
        head = malloc((size_t)-n); /* long extra headers: this head only */
        if (!head)
            return pw_set_error(loop, PYWS_ERR_NOMEM, "out of memory");
        n = pyws_handshake_format_response(&reply, head, (size_t)-n);
    }
    if (n < 0) { /* PYWS_ERR_ARG: the accept key and protocol were checked above */
        if (head != small)
            free(head);
        return pw_set_error(loop, PYWS_ERR_ARG, "extra headers must be whole lines "
                              "'Name: value\\r\\n' without control characters");
    }
    int rc = pw_conn_queue(loop, c, (const uint8_t *)head, (size_t)n, NULL, 0);
    if (head != small)
        free(head);
    if (rc != 0)
        return rc;
    free(c->protocols);
    c->protocols = NULL;
    pw_ws_start(loop, c, PYWS_ROLE_SERVER);
    if (!c->sess || (c->pmd_offered && pw_ws_enable_deflate(loop, c, &c->pmd_agreed) < 0)) {
        pw_conn_close(loop, c, PYWS_CLOSE_INTERNAL_ERROR);
        return PYWS_ERR_NOMEM;
    }
    c->pmd_offered = 0;
    pw_event_push(loop, PYWS_EV_WS_OPEN, c->id);
    pw_conn_mark(loop, c, CF_PENDING);
    return PYWS_OK;
}
