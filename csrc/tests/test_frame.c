/*
 * test_frame.c — the incremental frame parser (frame.c) at every split point, in C.
 *
 * A table of frame streams — every length encoding (0, 125, 126, 65535, 65536, and non-minimal
 * ones), masked or unmasked per role, fragmented messages with control frames between the
 * fragments, close frames with and without a code, RSV1 claimed by an extension, and each
 * protocol error the parser knows (1002) after some valid frames — is fed
 *
 *   - whole, from a copy that ends right before a PROT_NONE page (guard.h),
 *   - one byte at a time, and
 *   - cut into two pieces at every offset (for inputs over 700 bytes: at the first and last 24
 *     offsets, around every frame and payload boundary, and at 40 evenly spaced ones),
 *
 * each piece from a heap block of exactly its size (so ASan reports any read past it). Every way
 * must give the same trace — frame headers, the payload bytes (unmasked, pieces joined), ends,
 * and the error with its code and reason — and the whole-input trace must be the one the table
 * expects. Along the way each call is checked against the contract in pyws.h (what it consumes,
 * where payload views point, that an error is sticky).
 *
 * Run under ASan+UBSan by `make test-c`, also with PYWS_FORCE_IMPL=scalar (the unmasking
 * kernel). Prints "N passed, M failed"; exits 1 on any failure.
 */
#include "guard.h"      /* first: it sets the feature macros mmap needs */
#include "wsbuild.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pyws.h"

#include "check.h"

/* ------------------------------------------------------------------------------------------ */
/* Driving the parser                                                                           */
/* ------------------------------------------------------------------------------------------ */

enum { WHOLE_GUARD, BYTEWISE, SPLIT };

static const char *contract_broken;    /* first broken promise of the current run, or NULL */

static void broken(const char *what)
{
    if (contract_broken == NULL)
        contract_broken = what;
}

/* Feed one piece. Returns 0 to go on with the next piece, 1 once an error was reported. */
static int feed_piece(pyws_parser *p, uint8_t *buf, size_t len, trace *t)
{
    size_t at = 0;
    int zero_in_a_row = 0;
    for (;;) {
        pyws_frame_event ev;
        memset(&ev, 0x5a, sizeof ev);
        size_t n = pyws_parser_feed(p, buf + at, len - at, &ev);
        if (n > len - at) {
            broken("consumed more than offered");
            return 1;
        }
        zero_in_a_row = n == 0 ? zero_in_a_row + 1 : 0;
        if (zero_in_a_row > 2 && ev.kind != PYWS_FRAME_NEED_MORE) {
            broken("no progress");
            return 1;
        }
        switch (ev.kind) {
        case PYWS_FRAME_NEED_MORE:
            if (at + n != len)
                broken("NEED_MORE without consuming everything");
            return 0;
        case PYWS_FRAME_HEADER: {
            if (n == 0)
                broken("HEADER consumed nothing");
            tev *e = tr_add(t, PYWS_FRAME_HEADER);
            e->fin = ev.fin;
            e->rsv = ev.rsv;
            e->op = ev.opcode;
            e->masked = ev.masked;
            e->length = ev.length;
            break;
        }
        case PYWS_FRAME_PAYLOAD: {
            if (n == 0 || ev.len != n || ev.data != buf + at)
                broken("PAYLOAD view is not the bytes consumed");
            tev *e = t->n && t->ev[t->n - 1].kind == PYWS_FRAME_PAYLOAD
                         ? &t->ev[t->n - 1]
                         : tr_add(t, PYWS_FRAME_PAYLOAD);
            if (ev.len <= len - at)
                tev_append(e, ev.data, ev.len);
            break;
        }
        case PYWS_FRAME_END:
            if (n != 0)
                broken("END consumed bytes");
            tr_add(t, PYWS_FRAME_END);
            break;
        case PYWS_FRAME_ERROR: {
            if (n != 0)
                broken("ERROR consumed bytes");
            tev *e = tr_add(t, PYWS_FRAME_ERROR);
            e->code = ev.close_code;
            e->reason = ev.reason;
            if (ev.reason == NULL || ev.reason[0] == '\0')
                broken("ERROR without a reason");
            /* sticky: the same error again, whatever comes next */
            pyws_frame_event again;
            uint8_t more[3] = {0x81, 0x80, 0};
            if (pyws_parser_feed(p, more, sizeof more, &again) != 0 ||
                again.kind != PYWS_FRAME_ERROR || again.close_code != ev.close_code ||
                again.reason != ev.reason)
                broken("the error is not sticky");
            return 1;
        }
        default:
            broken("unknown event kind");
            return 1;
        }
        at += n;
    }
}

/* Feed in[0..len) as `how` says (SPLIT: pieces [0, cut) and [cut, len)); the trace goes to *t. */
static void run_parser(int role, int rsv_allowed, const uint8_t *in, size_t len, int how,
                       size_t cut, trace *t)
{
    pyws_parser p;
    pyws_parser_init(&p, role);
    p.rsv_allowed = (uint8_t)rsv_allowed;
    contract_broken = NULL;
    memset(t, 0, sizeof *t);
    if (how == WHOLE_GUARD) {
        feed_piece(&p, guard_place(in, len), len, t);
        return;
    }
    size_t at = 0;
    while (at < len || (at == 0 && len == 0)) {
        size_t end = how == BYTEWISE ? at + 1 : at < cut ? cut : len;
        if (end > len)
            end = len;
        uint8_t *piece = xmalloc(end - at);
        memcpy(piece, in + at, end - at);
        int stop = feed_piece(&p, piece, end - at, t);
        free(piece);
        if (stop || len == 0)
            break;
        at = end;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Cases                                                                                        */
/* ------------------------------------------------------------------------------------------ */

/* What a well-formed frame gives: HEADER, its payload (if any), END. */
static void expect_frame(trace *t, int fin, int rsv, int op, const void *payload, size_t n,
                         int masked)
{
    tev *e = tr_add(t, PYWS_FRAME_HEADER);
    e->fin = fin;
    e->rsv = rsv;
    e->op = op;
    e->masked = masked;
    e->length = n;
    if (n) {
        e = tr_add(t, PYWS_FRAME_PAYLOAD);
        tev_append(e, payload, n);
    }
    tr_add(t, PYWS_FRAME_END);
}

/* Both the frame and what it gives. */
static void frame_and_expect(wstream *w, trace *t, int fin, int rsv, int op, const void *payload,
                             size_t n, int masked, int enc)
{
    ws_frame_enc(w, fin, rsv, op, payload, n, masked, enc);
    expect_frame(t, fin, rsv, op, payload, n, masked);
}

static void expect_error(trace *t)
{
    tev *e = tr_add(t, PYWS_FRAME_ERROR);
    e->code = PYWS_CLOSE_PROTOCOL_ERROR;
}

/* Feed w's bytes whole (at a guard page), byte by byte and at each split point; each must give
 * `want`. Frees w and want. */
static void run_case(const char *name, int role, int rsv_allowed, wstream *w, trace *want)
{
    current = name;
    trace whole, got;
    size_t where;
    run_parser(role, rsv_allowed, w->b, w->len, WHOLE_GUARD, 0, &whole);
    CHECK(contract_broken == NULL, "whole: %s", contract_broken);
    CHECK(tr_same(&whole, want, &where), "whole input: %zu events, expected %zu; first difference "
          "at event %zu", whole.n, want->n, where);

    run_parser(role, rsv_allowed, w->b, w->len, BYTEWISE, 0, &got);
    CHECK(contract_broken == NULL, "byte by byte: %s", contract_broken);
    CHECK(tr_same(&got, &whole, &where), "byte by byte differs at event %zu", where);
    tr_free(&got);

    size_t *cuts;
    size_t nc = cut_set(w, &cuts);
    for (size_t i = 0; i < nc; i++) {
        run_parser(role, rsv_allowed, w->b, w->len, SPLIT, cuts[i], &got);
        CHECK(contract_broken == NULL, "split at %zu: %s", cuts[i], contract_broken);
        CHECK(tr_same(&got, &whole, &where), "split at %zu of %zu differs at event %zu", cuts[i],
              w->len, where);
        tr_free(&got);
    }
    free(cuts);
    tr_free(&whole);
    tr_free(want);
    ws_free(w);
}

static const size_t lengths[] = {0, 1, 125, 126, 127, 65535, 65536, 70001};
#define N_LENGTHS (sizeof lengths / sizeof lengths[0])

/* One data frame of each length, each opcode, each role (masked exactly when it must be). */
static void test_lengths(void)
{
    static char name[128];
    for (int role = PYWS_ROLE_SERVER; role <= PYWS_ROLE_CLIENT; role++) {
        int masked = role == PYWS_ROLE_SERVER;
        for (size_t i = 0; i < N_LENGTHS; i++) {
            for (int op = PYWS_OP_TEXT; op <= PYWS_OP_BINARY; op++) {
                size_t n = lengths[i];
                uint8_t *pl = op == PYWS_OP_TEXT ? text_payload(n) : binary_payload(n, (uint32_t)n);
                wstream w;
                trace want = {0};
                ws_init(&w);
                frame_and_expect(&w, &want, 1, 0, op, pl, n, masked, ENC_MIN);
                /* and a second frame right behind it, so the end of one meets the next */
                frame_and_expect(&w, &want, 1, 0, PYWS_OP_BINARY, "next", 4, masked, ENC_MIN);
                snprintf(name, sizeof name, "%s %s frame of %zu bytes",
                         role == PYWS_ROLE_SERVER ? "masked" : "unmasked",
                         op == PYWS_OP_TEXT ? "text" : "binary", n);
                run_case(name, role, 0, &w, &want);
                free(pl);
            }
        }
    }
}

/* Lengths in a longer encoding than needed are allowed (RFC 6455 §5.2 asks senders only). */
static void test_non_minimal_lengths(void)
{
    static const struct { size_t n; int enc; const char *name; } cases[] = {
        {0, ENC_16, "0 bytes in the 16-bit field"},
        {5, ENC_16, "5 bytes in the 16-bit field"},
        {125, ENC_64, "125 bytes in the 64-bit field"},
        {126, ENC_64, "126 bytes in the 64-bit field"},
        {65535, ENC_64, "65535 bytes in the 64-bit field"},
        {0, ENC_64, "0 bytes in the 64-bit field"},
    };
    for (int role = PYWS_ROLE_SERVER; role <= PYWS_ROLE_CLIENT; role++) {
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            uint8_t *pl = binary_payload(cases[i].n, 7);
            wstream w;
            trace want = {0};
            ws_init(&w);
            int masked = role == PYWS_ROLE_SERVER;
            frame_and_expect(&w, &want, 1, 0, PYWS_OP_BINARY, pl, cases[i].n, masked,
                             cases[i].enc);
            frame_and_expect(&w, &want, 1, 0, PYWS_OP_PING, "p", 1, masked, ENC_MIN);
            run_case(cases[i].name, role, 0, &w, &want);
            free(pl);
        }
    }
}

/* Fragmented messages with control frames between (and before, and after) the fragments. */
static void test_fragments(void)
{
    for (int role = PYWS_ROLE_SERVER; role <= PYWS_ROLE_CLIENT; role++) {
        int m = role == PYWS_ROLE_SERVER;
        wstream w;
        trace want = {0};
        uint8_t *text = text_payload(40);

        ws_init(&w);
        frame_and_expect(&w, &want, 1, 0, PYWS_OP_PING, "before", 6, m, ENC_MIN);
        frame_and_expect(&w, &want, 0, 0, PYWS_OP_TEXT, text, 7, m, ENC_MIN);
        frame_and_expect(&w, &want, 1, 0, PYWS_OP_PING, "", 0, m, ENC_MIN);
        frame_and_expect(&w, &want, 0, 0, PYWS_OP_CONTINUATION, text + 7, 0, m, ENC_MIN);
        frame_and_expect(&w, &want, 1, 0, PYWS_OP_PONG, "pong!", 5, m, ENC_MIN);
        frame_and_expect(&w, &want, 0, 0, PYWS_OP_CONTINUATION, text + 7, 20, m, ENC_16);
        frame_and_expect(&w, &want, 1, 0, PYWS_OP_CLOSE, "\x03\xe8", 2, m, ENC_MIN);
        frame_and_expect(&w, &want, 1, 0, PYWS_OP_CONTINUATION, text + 27, 13, m, ENC_MIN);
        frame_and_expect(&w, &want, 1, 0, PYWS_OP_BINARY, "after", 5, m, ENC_MIN);
        run_case(m ? "masked text in 4 fragments, ping, pong and close between"
                   : "unmasked text in 4 fragments, ping, pong and close between",
                 role, 0, &w, &want);

        /* a long binary message: fragments in every length encoding, a ping in the middle */
        size_t n = 65536 + 300 + 126;
        uint8_t *bin = binary_payload(n, 99);
        ws_init(&w);
        frame_and_expect(&w, &want, 0, 0, PYWS_OP_BINARY, bin, 126, m, ENC_MIN);
        frame_and_expect(&w, &want, 0, 0, PYWS_OP_CONTINUATION, bin + 126, 65536, m, ENC_MIN);
        frame_and_expect(&w, &want, 1, 0, PYWS_OP_PING, bin, 125, m, ENC_MIN);
        frame_and_expect(&w, &want, 1, 0, PYWS_OP_CONTINUATION, bin + 126 + 65536, 300, m,
                         ENC_MIN);
        run_case(m ? "masked 65962-byte binary in 3 fragments around a ping"
                   : "unmasked 65962-byte binary in 3 fragments around a ping",
                 role, 0, &w, &want);
        free(bin);
        free(text);
    }
}

/* Close frames: the parser does not read their payload (the session does). */
static void test_close_frames(void)
{
    static const struct { const char *name; const char *payload; size_t n; } cases[] = {
        {"close without a code", "", 0},
        {"close with a code", "\x03\xe8", 2},
        {"close with a code and a reason", "\x0f\xa0" "bye \xe2\x9c\x93", 9},
        {"close with a 1-byte payload (the session's business)", "\x03", 1},
    };
    for (int role = PYWS_ROLE_SERVER; role <= PYWS_ROLE_CLIENT; role++) {
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            wstream w;
            trace want = {0};
            ws_init(&w);
            frame_and_expect(&w, &want, 1, 0, PYWS_OP_TEXT, "hi", 2, role == PYWS_ROLE_SERVER,
                             ENC_MIN);
            frame_and_expect(&w, &want, 1, 0, PYWS_OP_CLOSE, cases[i].payload, cases[i].n,
                             role == PYWS_ROLE_SERVER, ENC_MIN);
            run_case(cases[i].name, role, 0, &w, &want);
        }
        /* the longest control payload */
        uint8_t *pl = text_payload(125);
        for (int op = PYWS_OP_CLOSE; op <= PYWS_OP_PONG; op++) {
            wstream w;
            trace want = {0};
            ws_init(&w);
            frame_and_expect(&w, &want, 1, 0, op, pl, 125, role == PYWS_ROLE_SERVER, ENC_MIN);
            run_case("125-byte control frame", role, 0, &w, &want);
        }
        free(pl);
    }
}

/* RSV1 is let through once an extension claimed it (the session decides where it may be). */
static void test_rsv_claimed(void)
{
    wstream w;
    trace want = {0};
    ws_init(&w);
    frame_and_expect(&w, &want, 0, 0x40, PYWS_OP_TEXT, "\xf2\x48", 2, 1, ENC_MIN);
    frame_and_expect(&w, &want, 1, 0, PYWS_OP_CONTINUATION, "\xcd\xc9", 2, 1, ENC_MIN);
    frame_and_expect(&w, &want, 1, 0x40, PYWS_OP_BINARY, "\x02\x00", 2, 1, ENC_MIN);
    run_case("RSV1 claimed by permessage-deflate", PYWS_ROLE_SERVER, 0x40, &w, &want);
}

/* Each error, after two good frames (whose events come out first), then more bytes that must
 * never be looked at. */
typedef struct err_case {
    const char *name;
    int role;
    int rsv_allowed;
    int in_message;            /* a fragmented message is open before the bad frame */
    int fin, rsv, op;
    size_t n;                  /* payload length (written in the header as given) */
    int enc;
    int masked;
} err_case;

static const err_case err_cases[] = {
    {"RSV1 without an extension", PYWS_ROLE_SERVER, 0, 0, 1, 0x40, PYWS_OP_TEXT, 3, ENC_MIN, 1},
    {"RSV2 without an extension", PYWS_ROLE_SERVER, 0, 0, 1, 0x20, PYWS_OP_BINARY, 3, ENC_MIN, 1},
    {"RSV3 without an extension", PYWS_ROLE_CLIENT, 0, 0, 1, 0x10, PYWS_OP_TEXT, 3, ENC_MIN, 0},
    {"RSV2 with RSV1 claimed", PYWS_ROLE_SERVER, 0x40, 0, 1, 0x60, PYWS_OP_TEXT, 3, ENC_MIN, 1},
    {"reserved opcode 3", PYWS_ROLE_SERVER, 0, 0, 1, 0, 3, 1, ENC_MIN, 1},
    {"reserved opcode 7", PYWS_ROLE_CLIENT, 0, 0, 1, 0, 7, 1, ENC_MIN, 0},
    {"reserved opcode 0xB", PYWS_ROLE_SERVER, 0, 0, 1, 0, 0xB, 1, ENC_MIN, 1},
    {"reserved opcode 0xF", PYWS_ROLE_SERVER, 0, 1, 1, 0, 0xF, 0, ENC_MIN, 1},
    {"fragmented ping", PYWS_ROLE_SERVER, 0, 0, 0, 0, PYWS_OP_PING, 2, ENC_MIN, 1},
    {"fragmented close", PYWS_ROLE_CLIENT, 0, 0, 0, 0, PYWS_OP_CLOSE, 2, ENC_MIN, 0},
    {"126-byte ping", PYWS_ROLE_SERVER, 0, 0, 1, 0, PYWS_OP_PING, 126, ENC_MIN, 1},
    {"5-byte pong in the 16-bit field", PYWS_ROLE_SERVER, 0, 0, 1, 0, PYWS_OP_PONG, 5, ENC_16, 1},
    {"close in the 64-bit field", PYWS_ROLE_CLIENT, 0, 0, 1, 0, PYWS_OP_CLOSE, 2, ENC_64, 0},
    {"unmasked frame to a server", PYWS_ROLE_SERVER, 0, 0, 1, 0, PYWS_OP_TEXT, 4, ENC_MIN, 0},
    {"unmasked ping to a server", PYWS_ROLE_SERVER, 0, 0, 1, 0, PYWS_OP_PING, 0, ENC_MIN, 0},
    {"masked frame to a client", PYWS_ROLE_CLIENT, 0, 0, 1, 0, PYWS_OP_BINARY, 4, ENC_MIN, 1},
    {"continuation with no message", PYWS_ROLE_SERVER, 0, 0, 1, 0, PYWS_OP_CONTINUATION, 2,
     ENC_MIN, 1},
    {"text inside a fragmented message", PYWS_ROLE_SERVER, 0, 1, 1, 0, PYWS_OP_TEXT, 2, ENC_MIN,
     1},
    {"binary inside a fragmented message", PYWS_ROLE_CLIENT, 0, 1, 0, 0, PYWS_OP_BINARY, 2,
     ENC_MIN, 0},
};

static void test_errors(void)
{
    for (size_t i = 0; i < sizeof err_cases / sizeof err_cases[0]; i++) {
        const err_case *c = &err_cases[i];
        int m = c->role == PYWS_ROLE_SERVER;
        wstream w;
        trace want = {0};
        ws_init(&w);
        frame_and_expect(&w, &want, 1, 0, PYWS_OP_TEXT, "ok", 2, m, ENC_MIN);
        if (c->in_message)
            frame_and_expect(&w, &want, 0, 0, PYWS_OP_BINARY, "open", 4, m, ENC_MIN);
        else
            frame_and_expect(&w, &want, 1, 0, PYWS_OP_PING, "", 0, m, ENC_MIN);
        uint8_t *pl = binary_payload(c->n, 3);
        ws_frame_enc(&w, c->fin, c->rsv, c->op, pl, c->n, c->masked, c->enc);
        expect_error(&want);
        ws_frame(&w, 1, 0, PYWS_OP_TEXT, "never looked at", 15, m);
        run_case(c->name, c->role, c->rsv_allowed, &w, &want);
        free(pl);
    }

    /* a 64-bit length with its top bit set, every way the other bits may be */
    static const uint64_t huge[] = {UINT64_C(1) << 63, UINT64_MAX, (UINT64_C(1) << 63) | 5};
    for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
        for (int role = PYWS_ROLE_SERVER; role <= PYWS_ROLE_CLIENT; role++) {
            wstream w;
            trace want = {0};
            uint8_t key[4] = {1, 2, 3, 4};
            ws_init(&w);
            frame_and_expect(&w, &want, 1, 0, PYWS_OP_BINARY, "ok", 2, role == PYWS_ROLE_SERVER,
                             ENC_MIN);
            ws_header(&w, 1, 0, PYWS_OP_BINARY, huge[i], ENC_64,
                      role == PYWS_ROLE_SERVER ? key : NULL);
            expect_error(&want);
            ws_put(&w, "payload bytes", 13);
            run_case("64-bit length with the top bit set", role, 0, &w, &want);
        }
    }

    /* the largest legal 64-bit length: a header, then as much payload as is there */
    wstream w;
    trace want = {0};
    ws_init(&w);
    ws_header(&w, 1, 0, PYWS_OP_BINARY, (UINT64_C(1) << 63) - 1, ENC_64, NULL);
    tev *e = tr_add(&want, PYWS_FRAME_HEADER);
    e->fin = 1;
    e->op = PYWS_OP_BINARY;
    e->length = (UINT64_C(1) << 63) - 1;
    ws_put(&w, "abc", 3);
    tev_append(tr_add(&want, PYWS_FRAME_PAYLOAD), (const uint8_t *)"abc", 3);
    run_case("2^63 - 1 bytes announced, 3 there", PYWS_ROLE_CLIENT, 0, &w, &want);

    /* every reserved opcode, both roles */
    for (int op = 0; op < 16; op++) {
        if (op <= 2 || (op >= 8 && op <= 10))
            continue;
        for (int role = PYWS_ROLE_SERVER; role <= PYWS_ROLE_CLIENT; role++) {
            ws_init(&w);
            memset(&want, 0, sizeof want);
            ws_frame(&w, 1, 0, op, "x", 1, role == PYWS_ROLE_SERVER);
            expect_error(&want);
            run_case("reserved opcode", role, 0, &w, &want);
        }
    }
}

/* The encoder writes the same header bytes as the builder here (which the tables rely on). */
static void test_encoder(void)
{
    current = "pyws_frame_header";
    static const uint64_t lens[] = {0, 1, 125, 126, 65535, 65536, UINT64_C(1) << 32,
                                    (UINT64_C(1) << 63) - 1};
    const uint8_t key[4] = {0xde, 0xad, 0xbe, 0xef};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        for (int masked = 0; masked <= 1; masked++) {
            for (int op = 0; op < 16; op += 5) {
                uint8_t out[14];
                wstream w;
                ws_init(&w);
                ws_header(&w, op & 1, op == 5 ? 0x40 : 0, op, lens[i], ENC_MIN,
                          masked ? key : NULL);
                size_t n = pyws_frame_header(out, op & 1, op == 5 ? 0x40 : 0, op, lens[i],
                                             masked ? key : NULL);
                CHECK(n == w.len && memcmp(out, w.b, n) == 0,
                      "length %llu masked %d opcode %d: %zu bytes, expected %zu",
                      (unsigned long long)lens[i], masked, op, n, w.len);
                ws_free(&w);
            }
        }
    }
}

int main(void)
{
    current = "the guard page faults";
    CHECK(guard_selftest(), "reading past a placed input did not fault");

    test_encoder();
    test_lengths();
    test_non_minimal_lengths();
    test_fragments();
    test_close_frames();
    test_rsv_claimed();
    test_errors();
    guard_free();

    printf("%lu passed, %lu failed\n", passed, failed);
    return failed ? 1 : 0;
}
