/*
 * test_session.c — one WebSocket's protocol state (session.c) at every split point, in C.
 *
 * A table of byte streams and the events they must give — messages of every length encoding
 * (0, 125, 126, 65535, 65536), masked or not per role, fragmented text and binary messages with
 * pings and pongs between the fragments (UTF-8 characters cut across fragments), close frames
 * with and without a code and reason, and every error class with its close code (1002 frame
 * and close-payload errors, 1007 invalid UTF-8, 1009 too big or too many fragments), each after
 * some good events — is fed
 *
 *   - whole, from a copy that ends right before a PROT_NONE page (guard.h),
 *   - one byte at a time, and
 *   - cut into two pieces at every offset (for inputs over 700 bytes: at the first and last 24
 *     offsets, around every frame and payload boundary, and at 40 evenly spaced ones),
 *
 * each piece from a heap block of exactly its size. Every way must give the expected events:
 * MESSAGE (opcode and bytes), PING, PONG, CLOSE (code, reason), ERROR (code), nothing after a
 * CLOSE or an ERROR. Two ways of using the views are run: copy and release after each event, and
 * keep every MESSAGE view of a piece until the piece is done (so messages assembled while an
 * earlier one is held go to a fresh buffer and the held one comes back through *retired).
 *
 * Then large messages (single-frame, fragmented with pings between, invalid UTF-8 deep inside,
 * over max_message) are fed as the loop feeds them: the rest of a large frame's payload is read
 * straight into the assembly buffer (pyws_session_payload_room), in reads of fixed sizes (1 byte
 * to 4 MiB), of random sizes, or ending at every frame and payload boundary, with views
 * released after each read or held across reads, with and without a buffer pool that scribbles
 * over what it takes back; the events must be the same.
 *
 * Run under ASan+UBSan by `make test-c`, also with PYWS_FORCE_IMPL=scalar (the unmasking and
 * UTF-8 kernels). Prints "N passed, M failed"; exits 1 on any failure.
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
/* Driving the session                                                                          */
/* ------------------------------------------------------------------------------------------ */

enum { WHOLE_GUARD, BYTEWISE, SPLIT };
enum { RELEASE_EACH, HOLD_PIECE };

typedef struct limits {
    int role;
    uint64_t max_message;
    uint32_t max_fragments;
} limits;

static const char *contract_broken;

static void broken(const char *what)
{
    if (contract_broken == NULL)
        contract_broken = what;
}

/* A MESSAGE whose view is kept until the end of the piece (HOLD_PIECE). */
typedef struct held_view {
    size_t index;              /* its event in the trace */
    const uint8_t *data;
    size_t len;
} held_view;

#define MAX_HELD 64

typedef struct run_state {
    pyws_session s;
    int policy;
    int ended;                 /* a CLOSE or ERROR was reported */
    held_view held[MAX_HELD];
    size_t nheld;
    uint8_t *retired[MAX_HELD];
    size_t nretired;
} run_state;

static void record(trace *t, const pyws_sess_event *ev, int kind, run_state *r)
{
    tev *e = tr_add(t, kind);
    switch (kind) {
    case PYWS_SESS_MESSAGE:
        e->op = ev->opcode;
        if (ev->data == NULL && ev->len)
            broken("MESSAGE without data");
        if (r->policy == HOLD_PIECE && r->nheld < MAX_HELD) {
            r->held[r->nheld].index = t->n - 1;
            r->held[r->nheld].data = ev->data;
            r->held[r->nheld].len = ev->len;
            r->nheld++;
        } else if (ev->len) {
            tev_append(e, ev->data, ev->len);
        }
        break;
    case PYWS_SESS_PING:
    case PYWS_SESS_PONG:
        if (ev->len > 125 || (ev->len && ev->data == NULL))
            broken("control payload");
        else if (ev->len)
            tev_append(e, ev->data, ev->len);
        break;
    case PYWS_SESS_CLOSE:
        e->code = ev->code;
        if (ev->reason_len > 123 || (ev->reason_len && ev->reason == NULL))
            broken("close reason");
        else if (ev->reason_len)
            tev_append(e, (const uint8_t *)ev->reason, ev->reason_len);
        break;
    case PYWS_SESS_ERROR:
        e->code = ev->code;
        e->reason = ev->reason;
        if (ev->reason == NULL || ev->reason[0] == '\0' || strlen(ev->reason) != ev->reason_len)
            broken("ERROR reason");
        break;
    default:
        broken("unknown event kind");
    }
}

/* The piece is done: copy the held views, then release. */
static void end_of_piece(run_state *r, trace *t)
{
    for (size_t i = 0; i < r->nheld; i++) {
        if (r->held[i].len)
            tev_append(&t->ev[r->held[i].index], r->held[i].data, r->held[i].len);
    }
    r->nheld = 0;
    for (size_t i = 0; i < r->nretired; i++)
        free(r->retired[i]);
    r->nretired = 0;
    pyws_session_release(&r->s, 0);
}

static void feed_piece(run_state *r, uint8_t *buf, size_t len, trace *t)
{
    size_t at = 0;
    for (int rounds = 0;; rounds++) {
        pyws_sess_event ev;
        size_t used = (size_t)-1;
        uint8_t *retired = NULL;
        int kind = pyws_session_feed(&r->s, buf + at, len - at, &used, &ev, &retired);
        if (retired != NULL) {
            if (r->policy == HOLD_PIECE && r->nretired < MAX_HELD)
                r->retired[r->nretired++] = retired;
            else
                free(retired);
        }
        if (used > len - at) {
            broken("consumed more than offered");
            break;
        }
        at += used;
        if (kind == PYWS_SESS_NONE) {
            if (at != len)
                broken("NONE without consuming everything");
            break;
        }
        if (r->ended)
            broken("an event after CLOSE or ERROR");
        if (rounds > 100000) {
            broken("no end of events");
            break;
        }
        record(t, &ev, kind, r);
        if (kind == PYWS_SESS_CLOSE || kind == PYWS_SESS_ERROR)
            r->ended = 1;
        if (r->policy == RELEASE_EACH)
            pyws_session_release(&r->s, 0);
    }
    end_of_piece(r, t);
}

static void run_session(const limits *lim, int policy, const uint8_t *in, size_t len, int how,
                        size_t cut, trace *t)
{
    static run_state r;
    memset(&r, 0, sizeof r);
    pyws_session_init(&r.s, lim->role, lim->max_message);
    r.s.max_fragments = lim->max_fragments;
    r.policy = policy;
    contract_broken = NULL;
    memset(t, 0, sizeof *t);
    if (how == WHOLE_GUARD) {
        feed_piece(&r, guard_place(in, len), len, t);
    } else {
        size_t at = 0;
        while (at < len) {
            size_t end = how == BYTEWISE ? at + 1 : at < cut ? cut : len;
            uint8_t *piece = xmalloc(end - at);
            memcpy(piece, in + at, end - at);
            feed_piece(&r, piece, end - at, t);
            free(piece);
            at = end;
        }
    }
    /* idle after a whole message: release(0) left no buffer */
    if (t->n && t->ev[t->n - 1].kind == PYWS_SESS_MESSAGE && pyws_session_memory(&r.s) != 0)
        broken("memory held after release(0)");
    pyws_session_free(&r.s);
}

/* ------------------------------------------------------------------------------------------ */
/* Cases                                                                                        */
/* ------------------------------------------------------------------------------------------ */

static void expect_message(trace *t, int op, const void *data, size_t n)
{
    tev *e = tr_add(t, PYWS_SESS_MESSAGE);
    e->op = op;
    if (n)
        tev_append(e, data, n);
}

static void expect_control(trace *t, int kind, const void *data, size_t n)
{
    tev *e = tr_add(t, kind);
    if (n)
        tev_append(e, data, n);
}

static void expect_close(trace *t, int code, const char *reason, size_t n)
{
    tev *e = tr_add(t, PYWS_SESS_CLOSE);
    e->code = code;
    if (n)
        tev_append(e, (const uint8_t *)reason, n);
}

static void expect_error(trace *t, int code)
{
    tr_add(t, PYWS_SESS_ERROR)->code = code;
}

/* A control frame and its event. */
static void control(wstream *w, trace *t, int op, const void *p, size_t n, int m)
{
    ws_frame(w, 1, 0, op, p, n, m);
    expect_control(t, op == PYWS_OP_PING ? PYWS_SESS_PING : PYWS_SESS_PONG, p, n);
}

static void run_case(const char *name, const limits *lim, wstream *w, trace *want)
{
    current = name;
    trace whole, got;
    size_t where;
    for (int policy = RELEASE_EACH; policy <= HOLD_PIECE; policy++) {
        const char *pol = policy == RELEASE_EACH ? "release each" : "hold per piece";
        run_session(lim, policy, w->b, w->len, WHOLE_GUARD, 0, &whole);
        CHECK(contract_broken == NULL, "whole, %s: %s", pol, contract_broken);
        CHECK(tr_same(&whole, want, &where),
              "whole, %s: %zu events, expected %zu; first difference at event %zu", pol, whole.n,
              want->n, where);

        run_session(lim, policy, w->b, w->len, BYTEWISE, 0, &got);
        CHECK(contract_broken == NULL, "byte by byte, %s: %s", pol, contract_broken);
        CHECK(tr_same(&got, want, &where), "byte by byte, %s: differs at event %zu", pol, where);
        tr_free(&got);

        size_t *cuts;
        size_t nc = cut_set(w, &cuts);
        for (size_t i = 0; i < nc; i++) {
            run_session(lim, policy, w->b, w->len, SPLIT, cuts[i], &got);
            CHECK(contract_broken == NULL, "split at %zu, %s: %s", cuts[i], pol, contract_broken);
            CHECK(tr_same(&got, want, &where), "split at %zu of %zu, %s: differs at event %zu",
                  cuts[i], w->len, pol, where);
            tr_free(&got);
        }
        free(cuts);
        tr_free(&whole);
    }
    tr_free(want);
    ws_free(w);
}

static const size_t lengths[] = {0, 1, 125, 126, 65535, 65536};
#define N_LENGTHS (sizeof lengths / sizeof lengths[0])

/* Single-frame messages of every length encoding, then a second message right behind. */
static void test_lengths(void)
{
    static char name[128];
    for (int role = PYWS_ROLE_SERVER; role <= PYWS_ROLE_CLIENT; role++) {
        int m = role == PYWS_ROLE_SERVER;
        limits lim = {role, 0, 0};
        for (size_t i = 0; i < N_LENGTHS; i++) {
            for (int op = PYWS_OP_TEXT; op <= PYWS_OP_BINARY; op++) {
                size_t n = lengths[i];
                uint8_t *pl = op == PYWS_OP_TEXT ? text_payload(n) : binary_payload(n, (uint32_t)n);
                wstream w;
                trace want = {0};
                ws_init(&w);
                ws_frame(&w, 1, 0, op, pl, n, m);
                expect_message(&want, op, pl, n);
                ws_frame(&w, 1, 0, PYWS_OP_TEXT, "next", 4, m);
                expect_message(&want, PYWS_OP_TEXT, "next", 4);
                snprintf(name, sizeof name, "%s %s message of %zu bytes", m ? "masked" : "unmasked",
                         op == PYWS_OP_TEXT ? "text" : "binary", n);
                run_case(name, &lim, &w, &want);
                free(pl);
            }
        }
        /* exactly max_message passes */
        limits tight = {role, 1000, 0};
        uint8_t *pl = binary_payload(1000, 5);
        wstream w;
        trace want = {0};
        ws_init(&w);
        ws_frame(&w, 0, 0, PYWS_OP_BINARY, pl, 400, m);
        ws_frame(&w, 1, 0, PYWS_OP_CONTINUATION, pl + 400, 600, m);
        expect_message(&want, PYWS_OP_BINARY, pl, 1000);
        run_case("a message of exactly max_message bytes", &tight, &w, &want);
        free(pl);
    }
}

/* Fragmented messages with control frames between the fragments. */
static void test_fragments(void)
{
    for (int role = PYWS_ROLE_SERVER; role <= PYWS_ROLE_CLIENT; role++) {
        int m = role == PYWS_ROLE_SERVER;
        limits lim = {role, 0, 0};
        wstream w;
        trace want = {0};

        /* text whose fragments cut characters in the middle: "aé€😀Z..." cut at 2, 4, 9 */
        uint8_t *text = text_payload(60);
        ws_init(&w);
        control(&w, &want, PYWS_OP_PING, "first", 5, m);
        ws_frame(&w, 0, 0, PYWS_OP_TEXT, text, 2, m);
        control(&w, &want, PYWS_OP_PING, "", 0, m);
        ws_frame(&w, 0, 0, PYWS_OP_CONTINUATION, text + 2, 2, m);
        ws_frame(&w, 0, 0, PYWS_OP_CONTINUATION, text + 4, 0, m);
        control(&w, &want, PYWS_OP_PONG, "pong", 4, m);
        ws_frame(&w, 0, 0, PYWS_OP_CONTINUATION, text + 4, 5, m);
        ws_frame(&w, 1, 0, PYWS_OP_CONTINUATION, text + 9, 51, m);
        expect_message(&want, PYWS_OP_TEXT, text, 60);
        ws_frame(&w, 1, 0, PYWS_OP_BINARY, "tail", 4, m);
        expect_message(&want, PYWS_OP_BINARY, "tail", 4);
        run_case(m ? "masked text in 5 fragments cut inside characters, pings and a pong between"
                   : "unmasked text in 5 fragments cut inside characters, pings and a pong between",
                 &lim, &w, &want);

        /* every fragment empty */
        ws_init(&w);
        ws_frame(&w, 0, 0, PYWS_OP_TEXT, "", 0, m);
        ws_frame(&w, 0, 0, PYWS_OP_CONTINUATION, "", 0, m);
        ws_frame(&w, 1, 0, PYWS_OP_CONTINUATION, "", 0, m);
        expect_message(&want, PYWS_OP_TEXT, "", 0);
        run_case("empty text in three empty fragments", &lim, &w, &want);

        /* a long binary message, fragments in each length encoding, a 125-byte ping inside */
        size_t n = 126 + 65536 + 65535 + 7;
        uint8_t *bin = binary_payload(n, 42);
        ws_init(&w);
        ws_frame(&w, 0, 0, PYWS_OP_BINARY, bin, 126, m);
        ws_frame(&w, 0, 0, PYWS_OP_CONTINUATION, bin + 126, 65536, m);
        control(&w, &want, PYWS_OP_PING, bin, 125, m);
        ws_frame(&w, 0, 0, PYWS_OP_CONTINUATION, bin + 126 + 65536, 65535, m);
        ws_frame(&w, 1, 0, PYWS_OP_CONTINUATION, bin + n - 7, 7, m);
        expect_message(&want, PYWS_OP_BINARY, bin, n);
        ws_frame(&w, 1, 0, PYWS_OP_BINARY, bin, 3, m);
        expect_message(&want, PYWS_OP_BINARY, bin, 3);
        run_case(m ? "masked 131204-byte binary in 4 fragments around a 125-byte ping"
                   : "unmasked 131204-byte binary in 4 fragments around a 125-byte ping",
                 &lim, &w, &want);

        /* many small messages back to back: the held buffer is retired and refilled */
        ws_init(&w);
        for (int i = 0; i < 12; i++) {
            ws_frame(&w, 0, 0, PYWS_OP_BINARY, text + i, 3, m);
            ws_frame(&w, 1, 0, PYWS_OP_CONTINUATION, text + i + 3, (size_t)i, m);
            expect_message(&want, PYWS_OP_BINARY, text + i, 3 + (size_t)i);
        }
        run_case("12 two-fragment messages back to back", &lim, &w, &want);
        free(bin);
        free(text);
    }
}

/* Close frames: with and without a code, with a reason; nothing after them counts. */
static void test_close(void)
{
    for (int role = PYWS_ROLE_SERVER; role <= PYWS_ROLE_CLIENT; role++) {
        int m = role == PYWS_ROLE_SERVER;
        limits lim = {role, 0, 0};
        static const struct {
            const char *name, *payload;
            size_t n;
            int code;
        } cases[] = {
            {"close without a code: 1005", "", 0, PYWS_CLOSE_NO_STATUS},
            {"close 1000", "\x03\xe8", 2, 1000},
            {"close 1001 with a reason", "\x03\xe9" "going", 7, 1001},
            {"close 1003", "\x03\xeb", 2, 1003},
            {"close 1007", "\x03\xef", 2, 1007},
            {"close 1011", "\x03\xf3", 2, 1011},
            {"close 1014", "\x03\xf6", 2, 1014},
            {"close 3000 with a UTF-8 reason", "\x0b\xb8" "caf\xc3\xa9 \xe2\x9c\x93", 11, 3000},
            {"close 4999", "\x13\x87", 2, 4999},
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            wstream w;
            trace want = {0};
            ws_init(&w);
            ws_frame(&w, 1, 0, PYWS_OP_TEXT, "bye", 3, m);
            expect_message(&want, PYWS_OP_TEXT, "bye", 3);
            ws_frame(&w, 1, 0, PYWS_OP_CLOSE, cases[i].payload, cases[i].n, m);
            expect_close(&want, cases[i].code, cases[i].payload + (cases[i].n ? 2 : 0),
                         cases[i].n ? cases[i].n - 2 : 0);
            /* ignored: a message, a ping, and garbage that would be an error */
            ws_frame(&w, 1, 0, PYWS_OP_TEXT, "after", 5, m);
            ws_frame(&w, 1, 0, PYWS_OP_PING, "x", 1, m);
            ws_put(&w, "\xff\xff\xff", 3);
            run_case(cases[i].name, &lim, &w, &want);
        }
        /* a close between fragments ends the session there */
        wstream w;
        trace want = {0};
        uint8_t *reason = text_payload(123);
        uint8_t pl[125] = {0x0f, 0xa0};
        memcpy(pl + 2, reason, 123);
        ws_init(&w);
        ws_frame(&w, 0, 0, PYWS_OP_TEXT, "half", 4, m);
        ws_frame(&w, 1, 0, PYWS_OP_CLOSE, pl, 125, m);
        expect_close(&want, 4000, (const char *)reason, 123);
        ws_frame(&w, 1, 0, PYWS_OP_CONTINUATION, "never", 5, m);
        run_case("close with a 123-byte reason inside a fragmented message", &lim, &w, &want);
        free(reason);
    }
}

/* Each error class with its code, after a good message (delivered first); the bytes behind the
 * bad frame are never delivered. */
typedef struct err_case {
    const char *name;
    int code;
    int role;
    uint64_t max_message;
    uint32_t max_fragments;
    int open_message;          /* start a fragmented text message ("ab") before the bad frame */
    int fin, rsv, op;
    const char *payload;
    size_t n;
    int masked;                /* -1: as the role wants */
} err_case;

#define P(lit) lit, sizeof(lit) - 1

static const err_case err_cases[] = {
    /* frame rules: 1002 */
    {"unmasked frame to a server", 1002, PYWS_ROLE_SERVER, 0, 0, 0, 1, 0, PYWS_OP_TEXT, P("x"), 0},
    {"masked frame to a client", 1002, PYWS_ROLE_CLIENT, 0, 0, 0, 1, 0, PYWS_OP_TEXT, P("x"), 1},
    {"RSV1 without an extension", 1002, PYWS_ROLE_SERVER, 0, 0, 0, 1, 0x40, PYWS_OP_TEXT, P("x"),
     -1},
    {"RSV3", 1002, PYWS_ROLE_CLIENT, 0, 0, 0, 1, 0x10, PYWS_OP_BINARY, P("x"), -1},
    {"reserved opcode 5", 1002, PYWS_ROLE_SERVER, 0, 0, 0, 1, 0, 5, P("x"), -1},
    {"reserved opcode 0xC", 1002, PYWS_ROLE_CLIENT, 0, 0, 0, 1, 0, 0xC, P(""), -1},
    {"fragmented ping", 1002, PYWS_ROLE_SERVER, 0, 0, 0, 0, 0, PYWS_OP_PING, P("x"), -1},
    {"126-byte pong", 1002, PYWS_ROLE_SERVER, 0, 0, 0, 1, 0, PYWS_OP_PONG, NULL, 126, -1},
    {"continuation with no message", 1002, PYWS_ROLE_SERVER, 0, 0, 0, 1, 0, PYWS_OP_CONTINUATION,
     P("x"), -1},
    {"text inside a fragmented message", 1002, PYWS_ROLE_CLIENT, 0, 0, 1, 1, 0, PYWS_OP_TEXT,
     P("x"), -1},
    /* close payloads: 1002 or 1007 */
    {"close with a 1-byte payload", 1002, PYWS_ROLE_SERVER, 0, 0, 0, 1, 0, PYWS_OP_CLOSE, P("\x03"),
     -1},
    {"close code 999", 1002, PYWS_ROLE_SERVER, 0, 0, 0, 1, 0, PYWS_OP_CLOSE, P("\x03\xe7"), -1},
    {"close code 1004", 1002, PYWS_ROLE_CLIENT, 0, 0, 0, 1, 0, PYWS_OP_CLOSE, P("\x03\xec"), -1},
    {"close code 1005 on the wire", 1002, PYWS_ROLE_SERVER, 0, 0, 0, 1, 0, PYWS_OP_CLOSE,
     P("\x03\xed"), -1},
    {"close code 1006 on the wire", 1002, PYWS_ROLE_SERVER, 0, 0, 0, 1, 0, PYWS_OP_CLOSE,
     P("\x03\xee"), -1},
    {"close code 1015 on the wire", 1002, PYWS_ROLE_CLIENT, 0, 0, 0, 1, 0, PYWS_OP_CLOSE,
     P("\x03\xf7"), -1},
    {"close code 2999", 1002, PYWS_ROLE_SERVER, 0, 0, 0, 1, 0, PYWS_OP_CLOSE, P("\x0b\xb7"), -1},
    {"close code 5000", 1002, PYWS_ROLE_SERVER, 0, 0, 0, 1, 0, PYWS_OP_CLOSE, P("\x13\x88"), -1},
    {"close code 0", 1002, PYWS_ROLE_SERVER, 0, 0, 0, 1, 0, PYWS_OP_CLOSE, P("\x00\x00"), -1},
    {"close reason not UTF-8", 1007, PYWS_ROLE_SERVER, 0, 0, 0, 1, 0, PYWS_OP_CLOSE,
     P("\x03\xe8" "ok\xff"), -1},
    {"close reason cut inside a character", 1007, PYWS_ROLE_CLIENT, 0, 0, 0, 1, 0, PYWS_OP_CLOSE,
     P("\x03\xe8" "\xe2\x82"), -1},
    /* UTF-8 in text messages: 1007 */
    {"overlong encoding", 1007, PYWS_ROLE_SERVER, 0, 0, 0, 1, 0, PYWS_OP_TEXT, P("ok\xc0\xaf"), -1},
    {"surrogate", 1007, PYWS_ROLE_SERVER, 0, 0, 0, 1, 0, PYWS_OP_TEXT, P("\xed\xa0\x80"), -1},
    {"above U+10FFFF", 1007, PYWS_ROLE_CLIENT, 0, 0, 0, 1, 0, PYWS_OP_TEXT, P("\xf4\x90\x80\x80"),
     -1},
    {"stray continuation byte", 1007, PYWS_ROLE_SERVER, 0, 0, 0, 1, 0, PYWS_OP_TEXT, P("a\x80"), -1},
    {"byte 0xFF", 1007, PYWS_ROLE_SERVER, 0, 0, 0, 1, 0, PYWS_OP_TEXT, P("\xff"), -1},
    {"invalid byte in a later fragment", 1007, PYWS_ROLE_SERVER, 0, 0, 1, 0, 0,
     PYWS_OP_CONTINUATION, P("cd\xfe"), -1},
    {"text ends inside a character", 1007, PYWS_ROLE_SERVER, 0, 0, 0, 1, 0, PYWS_OP_TEXT,
     P("euro \xe2\x82"), -1},
    {"fragmented text ends inside a character", 1007, PYWS_ROLE_CLIENT, 0, 0, 1, 1, 0,
     PYWS_OP_CONTINUATION, P("\xf0\x9f"), -1},
    /* limits: 1009 */
    {"one frame over max_message", 1009, PYWS_ROLE_SERVER, 100, 0, 0, 1, 0, PYWS_OP_BINARY, NULL,
     101, -1},
    {"fragments over max_message", 1009, PYWS_ROLE_CLIENT, 100, 0, 1, 1, 0, PYWS_OP_CONTINUATION,
     NULL, 99, -1},
    {"one fragment over max_fragments", 1009, PYWS_ROLE_SERVER, 0, 1, 1, 1, 0,
     PYWS_OP_CONTINUATION, P("x"), -1},
};

static void test_errors(void)
{
    for (size_t i = 0; i < sizeof err_cases / sizeof err_cases[0]; i++) {
        const err_case *c = &err_cases[i];
        int m = c->role == PYWS_ROLE_SERVER;
        limits lim = {c->role, c->max_message, c->max_fragments};
        wstream w;
        trace want = {0};
        ws_init(&w);
        ws_frame(&w, 1, 0, PYWS_OP_TEXT, "good", 4, m);
        expect_message(&want, PYWS_OP_TEXT, "good", 4);
        if (c->open_message) {
            ws_frame(&w, 0, 0, PYWS_OP_TEXT, "ab", 2, m);
            ws_frame(&w, 1, 0, PYWS_OP_PING, "in", 2, m);
            expect_control(&want, PYWS_SESS_PING, "in", 2);
        }
        uint8_t *pl = c->payload ? NULL : binary_payload(c->n, 11);
        ws_frame(&w, c->fin, c->rsv, c->op, c->payload ? (const void *)c->payload : pl, c->n,
                 c->masked < 0 ? m : c->masked);
        expect_error(&want, c->code);
        ws_frame(&w, 1, 0, PYWS_OP_TEXT, "never delivered", 15, m);
        ws_frame(&w, 1, 0, PYWS_OP_CLOSE, "\x03\xe8", 2, m);
        run_case(c->name, &lim, &w, &want);
        free(pl);
    }

    /* a huge announced length fails at the header, before any payload arrives */
    for (int role = PYWS_ROLE_SERVER; role <= PYWS_ROLE_CLIENT; role++) {
        limits lim = {role, 1u << 20, 0};
        uint8_t key[4] = {9, 8, 7, 6};
        wstream w;
        trace want = {0};
        ws_init(&w);
        ws_header(&w, 1, 0, PYWS_OP_BINARY, UINT64_C(1) << 40, ENC_64,
                  role == PYWS_ROLE_SERVER ? key : NULL);
        expect_error(&want, 1009);
        ws_put(&w, "some payload", 12);
        run_case("2^40 bytes announced, max_message 1 MiB", &lim, &w, &want);

        ws_init(&w);
        ws_header(&w, 1, 0, PYWS_OP_BINARY, UINT64_C(1) << 63, ENC_64,
                  role == PYWS_ROLE_SERVER ? key : NULL);
        expect_error(&want, 1002);
        run_case("64-bit length with the top bit set", &lim, &w, &want);
    }

    /* the same 1009 for fragments whether or not a ping comes between them */
    limits few = {PYWS_ROLE_SERVER, 0, 3};
    wstream w;
    trace want = {0};
    ws_init(&w);
    ws_frame(&w, 0, 0, PYWS_OP_BINARY, "1", 1, 1);
    ws_frame(&w, 0, 0, PYWS_OP_CONTINUATION, "2", 1, 1);
    control(&w, &want, PYWS_OP_PING, "not a fragment", 14, 1);
    ws_frame(&w, 1, 0, PYWS_OP_CONTINUATION, "3", 1, 1);
    expect_message(&want, PYWS_OP_BINARY, "123", 3);
    ws_frame(&w, 0, 0, PYWS_OP_TEXT, "a", 1, 1);
    ws_frame(&w, 0, 0, PYWS_OP_CONTINUATION, "", 0, 1);
    ws_frame(&w, 0, 0, PYWS_OP_CONTINUATION, "", 0, 1);
    ws_frame(&w, 0, 0, PYWS_OP_CONTINUATION, "", 0, 1);
    expect_error(&want, 1009);
    run_case("max_fragments 3: three pass (pings do not count), four do not", &few, &w, &want);
}

/* ------------------------------------------------------------------------------------------ */
/* Reading straight into the assembly buffer (pyws_session_payload_room), as the loop does     */
/* ------------------------------------------------------------------------------------------ */

/* A pool of assembly buffers (pyws_session_set_pool), as the loop's cache: what it takes back
 * is scribbled over, so a view the session handed out and still used after it gave the buffer
 * back would read garbage (and a double hand-back is an ASan double free at the end). */
#define POOL_MAX 8
typedef struct test_pool {
    uint8_t *p[POOL_MAX];
    size_t cap[POOL_MAX];
    int n;
    unsigned gets, puts;
} test_pool;

static uint8_t *pool_get(void *ctx, size_t need, size_t want, size_t *cap)
{
    test_pool *tp = ctx;
    if (want < need)
        broken("pool asked for less than it needs");
    for (int i = 0; i < tp->n; i++) {
        if (tp->cap[i] >= need) {
            uint8_t *b = tp->p[i];
            *cap = tp->cap[i];
            tp->n--;
            tp->p[i] = tp->p[tp->n];
            tp->cap[i] = tp->cap[tp->n];
            tp->gets++;
            return b;
        }
    }
    return NULL;
}

static void pool_put(void *ctx, uint8_t *buf, size_t cap)
{
    test_pool *tp = ctx;
    memset(buf, 0xA5, cap);
    tp->puts++;
    if (tp->n < POOL_MAX) {
        tp->p[tp->n] = buf;
        tp->cap[tp->n] = cap;
        tp->n++;
        return;
    }
    free(buf);
}

static void pool_free(test_pool *tp)
{
    for (int i = 0; i < tp->n; i++)
        free(tp->p[i]);
    tp->n = 0;
}

enum { READ_FIXED, READ_RANDOM, READ_MARKS };

typedef struct direct_stats {
    size_t direct_bytes;       /* bytes that went straight into the assembly buffer */
    size_t direct_reads;
    size_t room_retired;       /* held buffers payload_room handed to *retired */
} direct_stats;

/* Feed the stream as the loop does: whenever the session offers room in its assembly buffer,
 * "read" there (copy the next bytes of the stream into it, still masked) and feed exactly
 * those; otherwise read into a heap block of its own ("the arena"). Reads are `size` bytes
 * (READ_FIXED), random sizes (READ_RANDOM), or end at every frame and payload boundary
 * (READ_MARKS: a header alone, then its whole payload straight into the buffer). Views are
 * released after every `hold` reads (1: at each, like a poll; 3: a view is still held when the
 * session is asked for room, so that buffer comes back through *retired). */
static void run_direct(const limits *lim, const wstream *w, int how, size_t size,
                       size_t min_left, int hold, test_pool *tp, trace *t, direct_stats *st)
{
    static run_state r;
    static uint64_t seed = 0x9E3779B97F4A7C15ull;
    memset(&r, 0, sizeof r);
    memset(st, 0, sizeof *st);
    pyws_session_init(&r.s, lim->role, lim->max_message);
    r.s.max_fragments = lim->max_fragments;
    pyws_bufpool pool = {pool_get, pool_put, tp};
    if (tp)
        pyws_session_set_pool(&r.s, &pool);
    r.policy = HOLD_PIECE;
    contract_broken = NULL;
    memset(t, 0, sizeof *t);
    size_t at = 0, mark = 0;
    int reads = 0;
    uint8_t *pieces[4];
    int npieces = 0;
    while (at < w->len) {
        size_t n = size;
        if (how == READ_RANDOM) {
            seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
            n = 1 + (size_t)(seed % (seed & 1 ? 300000 : 5000));
        } else if (how == READ_MARKS) {
            while (mark < w->nmarks && w->marks[mark] <= at)
                mark++;
            n = mark < w->nmarks ? w->marks[mark] - at : w->len - at;
        }
        if (n > w->len - at)
            n = w->len - at;
        size_t room = 0;
        uint8_t *retired = NULL;
        uint8_t *dst = r.ended ? NULL : pyws_session_payload_room(&r.s, min_left, &room, &retired);
        if (retired != NULL) {
            st->room_retired++;
            if (r.nretired < MAX_HELD)
                r.retired[r.nretired++] = retired;
            else
                broken("too many retired buffers");
        }
        if (dst != NULL) {
            if (room == 0)
                broken("room offered with 0 bytes");
            if (r.s.msg_compressed || (r.s.parser.opcode & 8))
                broken("room offered for a compressed message or a control frame");
            if (n > room)
                n = room;
            memcpy(dst, w->b + at, n);
            st->direct_bytes += n;
            st->direct_reads++;
            size_t used = 0;
            pyws_sess_event ev;
            uint8_t *ret2 = NULL;
            int kind = pyws_session_feed(&r.s, dst, n, &used, &ev, &ret2);
            if (used != n)
                broken("a direct read not consumed whole");
            if (ret2 != NULL)
                broken("a direct read retired a buffer");
            if (kind != PYWS_SESS_NONE && kind != PYWS_SESS_MESSAGE && kind != PYWS_SESS_ERROR)
                broken("a direct read gave a control event");
            if (kind != PYWS_SESS_NONE) {
                if (kind == PYWS_SESS_MESSAGE && ev.data != r.s.buf)
                    broken("a message read in place is not the assembly buffer");
                record(t, &ev, kind, &r);
                if (kind == PYWS_SESS_ERROR)
                    r.ended = 1;
            }
        } else {
            /* the arena: a heap block of exactly the read's size */
            uint8_t *piece = xmalloc(n);
            memcpy(piece, w->b + at, n);
            size_t p = 0;
            for (int rounds = 0; rounds < 100000; rounds++) {
                pyws_sess_event ev;
                size_t used = 0;
                uint8_t *ret2 = NULL;
                int kind = pyws_session_feed(&r.s, piece + p, n - p, &used, &ev, &ret2);
                if (ret2 != NULL && r.nretired < MAX_HELD)
                    r.retired[r.nretired++] = ret2;
                p += used;
                if (kind == PYWS_SESS_NONE)
                    break;
                if (r.ended)
                    broken("an event after CLOSE or ERROR");
                record(t, &ev, kind, &r);
                if (kind == PYWS_SESS_CLOSE || kind == PYWS_SESS_ERROR)
                    r.ended = 1;
            }
            pieces[npieces++] = piece; /* views into it live until the release below */
        }
        at += n;
        if (++reads >= hold) {
            end_of_piece(&r, t);
            for (int i = 0; i < npieces; i++)
                free(pieces[i]);
            npieces = 0;
            reads = 0;
        }
    }
    end_of_piece(&r, t);
    for (int i = 0; i < npieces; i++)
        free(pieces[i]);
    pyws_session_free(&r.s);
}

static void run_direct_case(const char *name, const limits *lim, wstream *w, trace *want,
                            int expect_direct)
{
    static const size_t sizes[] = {1, 7, 4096, 65539, 262144, 4u << 20};
    static const size_t min_lefts[] = {1, 65536};
    current = name;
    trace got;
    size_t where;
    direct_stats st;
    size_t direct_total = 0, retired_total = 0;
    for (int how = READ_FIXED; how <= READ_MARKS; how++) {
        size_t nsizes = how == READ_FIXED ? sizeof sizes / sizeof sizes[0] : 1;
        for (size_t si = 0; si < nsizes; si++) {
            for (size_t mi = 0; mi < 2; mi++) {
                for (int hold = 1; hold <= 3; hold += 2) {
                    for (int pooled = 0; pooled <= 1; pooled++) {
                        test_pool tp = {0};
                        size_t sz = sizes[si];
                        run_direct(lim, w, how, sz, min_lefts[mi], hold, pooled ? &tp : NULL,
                                   &got, &st);
                        direct_total += st.direct_bytes;
                        retired_total += st.room_retired;
                        CHECK(contract_broken == NULL,
                              "reads %s%zu, min_left %zu, hold %d, pool %d: %s",
                              how == READ_FIXED ? "of " : how == READ_RANDOM ? "random" : "to marks",
                              how == READ_FIXED ? sz : 0, min_lefts[mi], hold, pooled,
                              contract_broken);
                        CHECK(tr_same(&got, want, &where),
                              "reads %s%zu, min_left %zu, hold %d, pool %d: %zu events, "
                              "expected %zu; first difference at event %zu",
                              how == READ_FIXED ? "of " : how == READ_RANDOM ? "random" : "to marks",
                              how == READ_FIXED ? sz : 0, min_lefts[mi], hold, pooled, got.n,
                              want->n, where);
                        tr_free(&got);
                        pool_free(&tp);
                    }
                }
            }
        }
    }
    if (expect_direct > 1)
        CHECK(retired_total > 0, "a held buffer was retired when room was asked for");
    if (expect_direct)
        CHECK(direct_total > 0, "some payload was read straight into the assembly buffer");
    else
        CHECK(direct_total == 0, "nothing was read straight into the assembly buffer");
    tr_free(want);
    ws_free(w);
}

static void test_direct(void)
{
    static char name[160];
    for (int role = PYWS_ROLE_SERVER; role <= PYWS_ROLE_CLIENT; role++) {
        int m = role == PYWS_ROLE_SERVER;
        const char *who = m ? "masked" : "unmasked";
        limits lim = {role, 0, 0};
        uint8_t *big = binary_payload(300001, 77);
        uint8_t *txt = text_payload(200003);
        wstream w;
        trace want = {0};

        /* single-frame messages, one right behind the other, then a small one */
        ws_init(&w);
        ws_frame(&w, 1, 0, PYWS_OP_BINARY, big, 300001, m);
        expect_message(&want, PYWS_OP_BINARY, big, 300001);
        ws_frame(&w, 1, 0, PYWS_OP_TEXT, txt, 200003, m);
        expect_message(&want, PYWS_OP_TEXT, txt, 200003);
        ws_frame(&w, 1, 0, PYWS_OP_BINARY, big + 7, 70000, m);
        expect_message(&want, PYWS_OP_BINARY, big + 7, 70000);
        ws_frame(&w, 1, 0, PYWS_OP_TEXT, "small", 5, m);
        expect_message(&want, PYWS_OP_TEXT, "small", 5);
        snprintf(name, sizeof name, "direct: %s large messages back to back", who);
        run_direct_case(name, &lim, &w, &want, 2);

        /* a fragmented text message (characters cut across frames) with control frames
         * between the fragments, then a fragmented binary one */
        ws_init(&w);
        ws_frame(&w, 0, 0, PYWS_OP_TEXT, txt, 100001, m);
        control(&w, &want, PYWS_OP_PING, "between", 7, m);
        ws_frame(&w, 0, 0, PYWS_OP_CONTINUATION, txt + 100001, 2, m);
        ws_frame(&w, 0, 0, PYWS_OP_CONTINUATION, txt + 100003, 0, m);
        control(&w, &want, PYWS_OP_PONG, "", 0, m);
        ws_frame(&w, 1, 0, PYWS_OP_CONTINUATION, txt + 100003, 100000, m);
        expect_message(&want, PYWS_OP_TEXT, txt, 200003);
        ws_frame(&w, 0, 0, PYWS_OP_BINARY, big, 5, m);
        ws_frame(&w, 0, 0, PYWS_OP_CONTINUATION, big + 5, 200000, m);
        ws_frame(&w, 1, 0, PYWS_OP_CONTINUATION, big + 200005, 99996, m);
        expect_message(&want, PYWS_OP_BINARY, big, 300001);
        snprintf(name, sizeof name, "direct: %s fragmented large messages, pings between", who);
        run_direct_case(name, &lim, &w, &want, 1);

        /* invalid UTF-8 deep inside a large text frame: 1007, whichever way it arrives */
        uint8_t *bad = text_payload(150000);
        bad[140000] = 0xFF;
        ws_init(&w);
        ws_frame(&w, 1, 0, PYWS_OP_BINARY, big, 100000, m);
        expect_message(&want, PYWS_OP_BINARY, big, 100000);
        ws_frame(&w, 1, 0, PYWS_OP_TEXT, bad, 150000, m);
        expect_error(&want, 1007);
        snprintf(name, sizeof name, "direct: %s invalid UTF-8 in a large text frame", who);
        run_direct_case(name, &lim, &w, &want, 1);
        free(bad);

        /* too big: refused at the header, before any room is offered */
        limits tight = {role, 100000, 0};
        ws_init(&w);
        ws_frame(&w, 1, 0, PYWS_OP_BINARY, big, 100000, m);
        expect_message(&want, PYWS_OP_BINARY, big, 100000);
        ws_frame(&w, 1, 0, PYWS_OP_BINARY, big, 100001, m);
        expect_error(&want, 1009);
        snprintf(name, sizeof name, "direct: %s message over max_message", who);
        run_direct_case(name, &tight, &w, &want, 1);

        /* a large control-sized stream (pings only) never gets room */
        ws_init(&w);
        for (int i = 0; i < 40; i++)
            control(&w, &want, PYWS_OP_PING, big + i, 125, m);
        snprintf(name, sizeof name, "direct: %s control frames only", who);
        run_direct_case(name, &lim, &w, &want, 0);
        free(big);
        free(txt);
    }
}

int main(void)
{
    current = "the guard page faults";
    CHECK(guard_selftest(), "reading past a placed input did not fault");

    current = "close codes";
    for (int code = 0; code < 70000; code++) {
        int want = (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
                   (code >= 3000 && code <= 4999);
        if (pyws_close_code_valid(code) != want) {
            CHECK(0, "pyws_close_code_valid(%d) != %d", code, want);
            break;
        }
    }
    CHECK(1, "every code 0..69999 classified");

    test_lengths();
    test_fragments();
    test_close();
    test_errors();
    test_direct();
    guard_free();

    printf("%lu passed, %lu failed\n", passed, failed);
    return failed ? 1 : 0;
}
