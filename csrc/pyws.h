/*
 * pyws.h — the whole public C API of the pyws engine.
 *
 * This header is read twice: by the C compiler, and by build_ffi.py, which hands the part between
 * the CDEF markers to cffi's cdef(). That part must therefore stay in the subset cffi parses:
 * plain typedefs, structs, prototypes and integer #defines (no expressions, no #if).
 *
 * Two halves:
 *   - Protocol (Sans-I/O), first: masking, UTF-8 validation, frame parsing/encoding, the session
 *     (message rules), HTTP head parsing, the opening handshake, the permessage-deflate
 *     negotiation. Functions over caller-owned buffers with no sockets and no clocks; the only
 *     memory they allocate is named where it happens (a session's message buffer, grown as
 *     bytes arrive; zlib's streams for a compressed session).
 *   - Event library, second: a loop that owns sockets, timers and connections, and hands back a
 *     batch of events per pyws_poll().
 *
 * Every public name starts with pyws_, every constant with PYWS_. The engine's internal
 * functions (core.h and the other internal headers) start with pw_ instead, and the built
 * extension exports none of them (-fvisibility=hidden): tests/test_symbols.py checks both.
 * One return convention: >= 0 is success (a count or a length where the function says so),
 * < 0 is a PYWS_ERR_* code (with pyws_last_error() for the loop functions).
 * Threading: a pyws_loop belongs to the thread that calls pyws_poll(); the only functions that
 * may be called from any other thread are the ones marked THREAD-SAFE below (pyws_wakeup and
 * the rest of the cross-thread queue).
 */
#ifndef PYWS_H
#define PYWS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* CDEF-BEGIN */

/* ---------------------------------------------------------------------------------------------
 * Result codes. Functions return >= 0 on success and one of these (< 0) on failure.
 * ------------------------------------------------------------------------------------------- */
#define PYWS_OK 0
#define PYWS_ERR_NOMEM -1       /* allocation failed */
#define PYWS_ERR_BADID -2       /* the id names no live connection (closed, or slot reused) */
#define PYWS_ERR_CLOSED -3      /* the connection is closing or closed: nothing more may be sent */
#define PYWS_ERR_STATE -4       /* the call does not fit the connection's state */
#define PYWS_ERR_ARG -5         /* an argument is out of range */
#define PYWS_ERR_SYS -6         /* a system call failed; errno-derived text in pyws_last_error() */
#define PYWS_ERR_HANDSHAKE -7   /* the request was not a valid WebSocket upgrade */
#define PYWS_ERR_LIMIT -8       /* a configured limit was exceeded (write buffer hard limit,
                                   a full wakeup queue) */
#define PYWS_ERR_PROTOCOL -9    /* the subprotocol named was not offered by the client */
#define PYWS_ERR_UNSUPPORTED -10 /* not built in (a SIMD kernel this CPU lacks) */
#define PYWS_ERR_TLS -11        /* TLS set-up or handshake failed; OpenSSL's reason in the text */
#define PYWS_ERR_REFUSED -12    /* the server refused the TCP connection (ECONNREFUSED) */
#define PYWS_ERR_TIMEOUT -13    /* a connect, TLS handshake or upgrade answer did not come in
                                   time (handshake_timeout / open_timeout; ETIMEDOUT) */
#define PYWS_ERR_DNS -14        /* the host name could not be resolved */

/* ---------------------------------------------------------------------------------------------
 * Opcodes (RFC 6455 §5.2) and close codes (§7.4).
 * ------------------------------------------------------------------------------------------- */
#define PYWS_OP_CONTINUATION 0
#define PYWS_OP_TEXT 1
#define PYWS_OP_BINARY 2
#define PYWS_OP_CLOSE 8
#define PYWS_OP_PING 9
#define PYWS_OP_PONG 10

#define PYWS_CLOSE_NORMAL 1000
#define PYWS_CLOSE_GOING_AWAY 1001
#define PYWS_CLOSE_PROTOCOL_ERROR 1002
#define PYWS_CLOSE_UNSUPPORTED_DATA 1003
#define PYWS_CLOSE_NO_STATUS 1005      /* never on the wire: the peer's close had no code */
#define PYWS_CLOSE_ABNORMAL 1006       /* never on the wire: TCP ended without a close frame */
#define PYWS_CLOSE_INVALID_DATA 1007
#define PYWS_CLOSE_POLICY 1008
#define PYWS_CLOSE_TOO_BIG 1009
#define PYWS_CLOSE_MANDATORY_EXT 1010
#define PYWS_CLOSE_INTERNAL_ERROR 1011
#define PYWS_CLOSE_TRY_AGAIN_LATER 1013
#define PYWS_CLOSE_TLS_HANDSHAKE 1015  /* never on the wire */

/* ---------------------------------------------------------------------------------------------
 * SIMD kernel selection. PYWS_IMPL_AUTO picks the best kernel this CPU supports (decided once,
 * at first use). Tests and benchmarks name a kernel explicitly to compare it with the scalar one.
 * ------------------------------------------------------------------------------------------- */
#define PYWS_IMPL_AUTO -1
#define PYWS_IMPL_SCALAR 0
#define PYWS_IMPL_SSE2 1
#define PYWS_IMPL_AVX2 2
#define PYWS_IMPL_NEON 3
#define PYWS_IMPL_SSE4 4    /* x86 SSSE3 + SSE4.1 (pshufb): UTF-8 lookup kernel; masking as SSE2 */
#define PYWS_IMPL_AVX512 5  /* x86 AVX-512 F+BW: UTF-8 lookup kernel; masking as AVX2 */

/* 1 when kernel `impl` is compiled in and this CPU runs it, else 0. AUTO and SCALAR are always 1. */
int pyws_impl_available(int impl);
/* The kernel AUTO resolves to on this CPU (one of PYWS_IMPL_SCALAR..AVX512). */
int pyws_impl_best(void);

/* ---------------------------------------------------------------------------------------------
 * Masking (mask.c + mask_<isa>.c)
 *
 * XOR buf[0..len) in place with the 4-byte key, starting at key phase `phase` (the payload offset
 * of buf[0], mod 4), so a payload unmasked in pieces gives the same bytes as unmasked at once.
 * Returns the phase after the last byte ((phase + len) & 3). Any alignment, any length; only
 * phase & 3 is used, and key may be NULL when len is 0.
 * ------------------------------------------------------------------------------------------- */
size_t pyws_mask(uint8_t *buf, size_t len, const uint8_t *key, size_t phase);
/* Same with an explicit kernel; returns PYWS_ERR_UNSUPPORTED (cast to size_t: check
 * pyws_impl_available first) when that kernel cannot run here. */
size_t pyws_mask_with(int impl, uint8_t *buf, size_t len, const uint8_t *key, size_t phase);

/* ---------------------------------------------------------------------------------------------
 * UTF-8 validation (utf8.c + utf8_<isa>.c), incremental.
 *
 * A validator carries the state of a code point split across calls (fragments). Feed it pieces;
 * it fails at the first byte that can never start or continue valid UTF-8 (overlongs,
 * surrogates U+D800..DFFF, code points above U+10FFFF, stray continuation bytes, bytes C0, C1,
 * F5..FF), so a message is rejected as soon as the invalid byte arrives, not at its end.
 * ------------------------------------------------------------------------------------------- */
typedef struct pyws_utf8 {
    uint32_t state;   /* 0 = at a code point boundary; opaque otherwise */
    uint32_t cp;      /* partial code point (diagnostics only) */
} pyws_utf8;

#define PYWS_UTF8_OK 0        /* everything so far is valid and ends on a code point boundary */
#define PYWS_UTF8_PARTIAL 1   /* valid so far, but ends inside a code point (needs more bytes) */
#define PYWS_UTF8_INVALID 2   /* invalid; *bad_offset = index of the first offending byte */

void pyws_utf8_init(pyws_utf8 *v);
/* Feed len bytes. Returns PYWS_UTF8_OK / _PARTIAL / _INVALID. On _INVALID, if bad_offset is not
 * NULL, *bad_offset is the offset in p of the first byte that made the input invalid, and the
 * validator stays invalid until pyws_utf8_init(). A message is complete-and-valid only if the
 * last feed returned PYWS_UTF8_OK. */
int pyws_utf8_feed(pyws_utf8 *v, const uint8_t *p, size_t len, size_t *bad_offset);
/* Same with an explicit kernel; PYWS_ERR_UNSUPPORTED for a kernel unknown or unavailable here.
 * Once a validator has failed, every later feed returns INVALID with *bad_offset = 0;
 * *bad_offset is written only on INVALID. `cp` holds, while a feed ends inside a character,
 * the lead byte's bits followed by 6 bits per continuation byte so far (0 otherwise). */
int pyws_utf8_feed_with(int impl, pyws_utf8 *v, const uint8_t *p, size_t len, size_t *bad_offset);
/* One-shot: 1 if p[0..len) is complete valid UTF-8, else 0. */
int pyws_utf8_valid(const uint8_t *p, size_t len);

/* ---------------------------------------------------------------------------------------------
 * Frames (frame.c): an incremental parser and a header encoder.
 *
 * The parser is a state machine fed arbitrary splits of the byte stream. Each call to
 * pyws_parser_feed() consumes some prefix of the input and reports at most one thing through
 * *out. Payload bytes are unmasked IN PLACE in the caller's buffer and handed back as a view
 * (out->data points into `buf`), valid while the caller keeps that buffer.
 *
 * Feeding one byte at a time yields the same frames and the same payload bytes (in more, smaller
 * PAYLOAD pieces) as feeding everything at once.
 *
 * The parser enforces the frame-level rules of RFC 6455 §5: mask bit per role, RSV bits not
 * claimed by an extension, reserved opcodes, control frames <= 125 bytes and FIN set, a 64-bit
 * length with its top bit clear, minimal length encodings are NOT required (RFC allows them),
 * continuation frames only inside a fragmented message and no new data frame inside one.
 * Message-level rules (UTF-8, size limits, close payloads) belong to the session.
 * ------------------------------------------------------------------------------------------- */
#define PYWS_FRAME_NEED_MORE 0   /* everything offered was consumed; feed more bytes */
#define PYWS_FRAME_HEADER 1      /* a frame header was parsed: out->fin/rsv/opcode/length */
#define PYWS_FRAME_PAYLOAD 2     /* out->data/out->len: the next unmasked piece of the payload */
#define PYWS_FRAME_END 3         /* the current frame's payload is complete */
#define PYWS_FRAME_ERROR 4       /* protocol violation: out->close_code, out->reason */

#define PYWS_ROLE_SERVER 0       /* we are the server: incoming frames must be masked */
#define PYWS_ROLE_CLIENT 1       /* we are the client: incoming frames must not be masked */

typedef struct pyws_parser {
    /* configuration (set by pyws_parser_init; rsv_allowed may be changed by extensions) */
    uint8_t role;
    uint8_t rsv_allowed;      /* bits 0x40/0x20/0x10 an extension has claimed (RSV1 = 0x40) */
    /* state: opaque to callers */
    uint8_t state;
    uint8_t hdr_have;
    uint8_t hdr_need;
    uint8_t in_message;       /* a fragmented data message is in progress */
    uint8_t hdr[14];
    uint8_t mask[4];
    uint64_t remaining;       /* payload bytes of the current frame not yet delivered */
    uint64_t offset;          /* payload bytes of the current frame already delivered */
    /* the current frame, valid from its HEADER report until the next HEADER */
    uint8_t fin;
    uint8_t rsv;
    uint8_t opcode;
    uint8_t masked;
    uint64_t length;
} pyws_parser;

typedef struct pyws_frame_event {
    int kind;                 /* PYWS_FRAME_* */
    uint8_t fin, rsv, opcode, masked;
    uint64_t length;          /* HEADER: payload length of this frame */
    const uint8_t *data;      /* PAYLOAD: view into the caller's buffer (already unmasked) */
    size_t len;               /* PAYLOAD: bytes in the view */
    int close_code;           /* ERROR: the close code to fail with (1002, ...) */
    const char *reason;       /* ERROR: static, human-readable reason (ASCII) */
} pyws_frame_event;

void pyws_parser_init(pyws_parser *p, int role);
/* Consume a prefix of buf[0..len) and report one thing in *out. Returns the number of bytes
 * consumed (which may be 0 only when it reports FRAME_END for an empty payload, or an ERROR).
 * After an ERROR the parser stays failed: every later call reports the same error. */
size_t pyws_parser_feed(pyws_parser *p, uint8_t *buf, size_t len, pyws_frame_event *out);

/* Encode a frame header into out (at least 14 bytes). mask_key is NULL for unmasked frames.
 * Returns the header length (2..14). Does not validate opcode/length rules. */
size_t pyws_frame_header(uint8_t *out, int fin, int rsv, int opcode, uint64_t length,
                         const uint8_t *mask_key);

/* ---------------------------------------------------------------------------------------------
 * Session (session.c): one WebSocket's protocol state, Sans-I/O. Bytes in, events out.
 *
 * Turns frames into whole messages and control events; enforces the message-level rules (UTF-8
 * of text messages checked as bytes arrive, so an invalid byte fails at once; the maximum
 * message size, checked at each frame header; the number of frames a message may take;
 * close payloads: length 1, codes per RFC 6455
 * §7.4, UTF-8 reason). It never touches a socket: its driver writes pongs and close frames.
 * With permessage-deflate agreed, the driver calls pyws_session_enable_deflate(): the session
 * then accepts RSV1 on the first frame of a data message only (1002 on a continuation or
 * control frame) and reports that message's compressed bytes (compressed = 1), which the
 * driver hands to pyws_session_inflate() with an output buffer of its choice; the session
 * decides the rest (size after inflating, UTF-8 of text, failing itself).
 * The driver writes no field of pyws_session: it reads events and calls the functions below.
 * ------------------------------------------------------------------------------------------- */
#define PYWS_SESS_NONE 0      /* input exhausted: feed more */
#define PYWS_SESS_MESSAGE 1   /* a whole data message: opcode, data/len */
#define PYWS_SESS_PING 2      /* data/len: ping payload (the driver answers with a pong) */
#define PYWS_SESS_PONG 3      /* data/len: pong payload */
#define PYWS_SESS_CLOSE 4     /* the peer's close: code (1005 if none), reason/reason_len */
#define PYWS_SESS_ERROR 5     /* fail the connection with code and reason (static string) */

typedef struct pyws_sess_event {
    int kind;
    int opcode;
    int compressed;           /* MESSAGE: it came with RSV1 (permessage-deflate): data/len are
                                 the compressed bytes, not yet inflated nor UTF-8 checked */
    const uint8_t *data;
    size_t len;
    int code;
    const char *reason;
    size_t reason_len;
} pyws_sess_event;

typedef struct pyws_session {
    pyws_parser parser;
    pyws_utf8 utf8;
    uint64_t max_message;     /* bytes; 0 = unlimited */
    uint32_t max_fragments;   /* frames one data message may take; 0 = unlimited (set with
                                 pyws_session_set_limits; more closes with 1009) */
    uint32_t msg_frames;      /* frames of the data message in progress */
    uint64_t msg_len;         /* bytes of the data message in progress */
    uint8_t msg_opcode;       /* TEXT/BINARY of the message in progress, 0 if none */
    uint8_t msg_compressed;   /* the message in progress had RSV1 on its first frame */
    uint8_t failed;           /* an ERROR was reported: all later input is ignored */
    uint8_t closed;           /* a CLOSE was reported: all later input is ignored */
    uint8_t held;             /* a MESSAGE view into buf is still in use */
    uint8_t ctl_len;
    uint8_t ctl[128];         /* control frame payload being assembled */
    /* message assembly buffer (`held`: a MESSAGE view into it is still in use) */
    uint8_t *buf;
    size_t buf_len;
    size_t buf_cap;
    const struct pyws_bufpool *pool; /* where fresh buffers come from (set_pool), or NULL */
} pyws_session;

/* A pool of assembly buffers (pyws_session_set_pool): get(ctx, need, want, &cap) may return a
 * buffer of cap >= need bytes (want: the message's size as far as its frame headers tell, a
 * hint), allocated with malloc, or NULL (the session then uses malloc); put(ctx, buf, cap)
 * takes a buffer pyws_session_release would have freed. The session owns what get returned,
 * and the pool what put was given. */
typedef uint8_t *pyws_bufpool_get(void *ctx, size_t need, size_t want, size_t *cap);
typedef void pyws_bufpool_put(void *ctx, uint8_t *buf, size_t cap);
typedef struct pyws_bufpool {
    pyws_bufpool_get *get;
    pyws_bufpool_put *put;
    void *ctx;
} pyws_bufpool;

void pyws_session_init(pyws_session *s, int role, uint64_t max_message);
/* Free the assembly buffer. */
void pyws_session_free(pyws_session *s);

/* Feed buf[0..len) (modified in place: unmasking). Consumes a prefix, stores *consumed and
 * returns one event (PYWS_SESS_NONE when everything was consumed without one). Views in *ev
 * point into buf or into the session's assembly buffer and stay valid until
 * pyws_session_release() — the driver calls that once the views are no longer used. A second
 * MESSAGE assembled while the first is held goes to a fresh buffer; the held one is handed to
 * *retired (caller frees it later with free()). */
int pyws_session_feed(pyws_session *s, uint8_t *buf, size_t len, size_t *consumed,
                      pyws_sess_event *ev, uint8_t **retired);

/* The views of earlier events are no longer used: the assembly buffer may be reused; buffers
 * larger than keep_bytes are freed (idle connections hold no large buffers). */
void pyws_session_release(pyws_session *s, size_t keep_bytes);

/* Reading a large frame's payload straight into the assembly buffer. When the session is
 * inside the payload of an uncompressed data frame with at least min_left bytes still to come,
 * returns where the next payload bytes go (inside the assembly buffer, grown for them
 * geometrically, never by more than what has arrived and min_left together) and stores in
 * *room how many may be written there (1..the frame's remaining bytes); otherwise (a header
 * next, a control frame, a compressed message, a failed or closed session, no memory) NULL.
 * A held buffer is handed to *retired first, as pyws_session_feed does. The driver writes n
 * received bytes (n <= *room, still masked) there and feeds exactly them with
 * pyws_session_feed(s, ptr, n, ...): they are unmasked, checked and kept in place, not
 * copied. */
uint8_t *pyws_session_payload_room(pyws_session *s, size_t min_left, size_t *room,
                                   uint8_t **retired);

/* Where assembly buffers come from and idle ones go (pyws_bufpool, above; NULL: malloc and
 * free). The pool must outlive the session. */
void pyws_session_set_pool(pyws_session *s, const pyws_bufpool *pool);

/* Set the limits after init: max_message bytes (0 = unlimited; the same as init's argument)
 * and max_fragments, the frames one data message may take (0 = unlimited; init sets 0). A
 * message already in progress is held to the new limits from its next frame header on. */
void pyws_session_set_limits(pyws_session *s, uint64_t max_message, uint32_t max_fragments);
/* permessage-deflate was agreed: RSV1 ("compressed") becomes legal on the first frame of a
 * data message. Call before the first feed after the handshake. */
void pyws_session_enable_deflate(pyws_session *s);

/* The permessage-deflate codec (deflate.c): a connection's streams and the shared pool of
 * streams and output buffer. The protocol half creates and frees them (deflate.h); here they
 * only pass through. */
typedef struct pyws_pmd pyws_pmd;
typedef struct pyws_zpool pyws_zpool;

/* Finish a MESSAGE event that came compressed (ev->compressed = 1; any other event is left as
 * it is and its kind returned). Inflates ev->data/len with pmd's receive stream (pool lends
 * shared streams) into room[0..room_len) while it fits, then into a heap block; checks the
 * inflated size against the session's max_message and, for TEXT, that it is valid UTF-8.
 *   - PYWS_SESS_MESSAGE: ev->data/len now view the message: inside room, or the heap block
 *     stored at *heap (the caller owns it and frees it with free() once the view is no longer
 *     used; *heap is NULL when everything fit in room). ev->compressed stays 1.
 *   - PYWS_SESS_ERROR: ev->kind, code and reason (static) say why: 1009 too big after
 *     inflating, 1007 invalid compressed data or invalid UTF-8, 1002 RSV1 when pmd is NULL
 *     (deflate not agreed), 1011 out of memory (also when pool is NULL). The session is then
 *     failed, as after an ERROR from pyws_session_feed; *heap is NULL (nothing to free).
 * room may be NULL with room_len 0 (everything goes to the heap). The compressed bytes the
 * event viewed are not needed afterwards: release the session as usual. */
int pyws_session_inflate(pyws_session *s, pyws_pmd *pmd, pyws_zpool *pool, pyws_sess_event *ev,
                         uint8_t *room, size_t room_len, uint8_t **heap);

/* The driver fails the connection for a reason of its own (say, no memory to keep a message
 * the session delivered): the session ignores all later input, as after an ERROR. Fills *ev
 * as an ERROR event with code and reason (static; NULL for none) and returns PYWS_SESS_ERROR. */
int pyws_session_fail(pyws_session *s, pyws_sess_event *ev, int code, const char *reason);

/* A driver about to free the session while a MESSAGE view into its assembly buffer may still
 * be read: returns that buffer and forgets it (the caller frees it with free() once the view
 * is dead), or NULL when no view is held. pyws_session_free() then frees the rest. */
uint8_t *pyws_session_take_held(pyws_session *s);

/* 1 if code may appear in a close frame on the wire (RFC 6455 §7.4), else 0. */
int pyws_close_code_valid(int code);

/* Bytes of heap the session holds. */
size_t pyws_session_memory(const pyws_session *s);

/* ---------------------------------------------------------------------------------------------
 * HTTP/1.1 head parsing (http.c). The caller owns the buffer; the parser never allocates and
 * hands out views into it, valid while the caller keeps the buffer unchanged.
 * ------------------------------------------------------------------------------------------- */
typedef struct pyws_str {
    const char *ptr;
    size_t len;
} pyws_str;

typedef struct pyws_header {
    pyws_str name;
    pyws_str value;           /* leading/trailing spaces and tabs trimmed */
} pyws_header;

typedef struct pyws_http_head {
    pyws_str method;          /* requests */
    pyws_str target;          /* requests: the request-target (path and query) */
    int version_minor;        /* HTTP/1.x: x (0..9) */
    int status;               /* responses: the status code */
    pyws_str reason;          /* responses: the reason phrase */
    size_t num_headers;
    size_t head_len;          /* bytes of the head including the final CRLFCRLF */
} pyws_http_head;

#define PYWS_HTTP_PARTIAL 0      /* no complete head yet (and within limits): read more */
#define PYWS_HTTP_BAD -400       /* malformed: answer 400 */
#define PYWS_HTTP_TOO_LARGE -431 /* head longer than max_bytes or more than max_headers: 431 */
#define PYWS_HTTP_VERSION -505   /* not HTTP/1.x: answer 505 */

/* Parse a request head from buf[0..len). headers[] has room for max_headers entries.
 * Returns head length (> 0) when complete, PYWS_HTTP_PARTIAL, or a negative PYWS_HTTP_* error.
 * len >= max_bytes with no complete head in the first max_bytes bytes gives
 * PYWS_HTTP_TOO_LARGE (max_bytes is capped at INT_MAX). head and headers are written only on
 * success; headers may be NULL (lines are then counted, not stored).
 * Accepts bare LF line endings as well as CRLF; rejects obsolete line folding, NULs and control
 * characters in the request line and header names, whitespace before the colon. */
int pyws_http_parse_request(const char *buf, size_t len, size_t max_bytes,
                            pyws_http_head *head, pyws_header *headers, size_t max_headers);
/* Same for a response head ("HTTP/1.1 101 Switching Protocols"). */
int pyws_http_parse_response(const char *buf, size_t len, size_t max_bytes,
                             pyws_http_head *head, pyws_header *headers, size_t max_headers);

/* Find header `name` (case-insensitive); returns its index or -1. Starts the search at `from`. */
int pyws_http_find(const pyws_header *headers, size_t n, const char *name, size_t from);
/* 1 if the comma-separated token list in `value` contains `token` (case-insensitive), else 0. */
int pyws_http_has_token(pyws_str value, const char *token);
/* Content-Length: returns 0 and *out on success, -1 if malformed or duplicated-inconsistent,
 * 1 if absent (out set to 0). */
int pyws_http_content_length(const pyws_header *headers, size_t n, uint64_t *out);

/* ---------------------------------------------------------------------------------------------
 * The opening handshake (handshake.c), RFC 6455 §4.2.1 / §4.2.2 / §4.1.
 * ------------------------------------------------------------------------------------------- */
#define PYWS_ACCEPT_LEN 28       /* base64 of a SHA-1 digest */

typedef struct pyws_handshake {
    int status;               /* 0 = a valid upgrade request; else the HTTP status to answer
                                 (400, or 426 for a Sec-WebSocket-Version missing or other
                                 than 13) */
    const char *error;        /* static reason when status != 0 */
    char accept[29];          /* Sec-WebSocket-Accept for the key, NUL-terminated */
    pyws_str protocols;       /* Sec-WebSocket-Protocol values as received (may be empty); when
                                 the header appears several times, the first occurrence only and
                                 protocols_multi = 1 */
    int protocols_multi;
    pyws_str extensions;      /* Sec-WebSocket-Extensions (first occurrence) */
    int requested;            /* 1 if the request asks for a WebSocket upgrade: some Upgrade
                                 header has the token "websocket" (any case). A server answers
                                 a request that asks and fails (status != 0) itself, with
                                 status; one that does not ask is plain HTTP */
} pyws_handshake;

/* Check a parsed request head against RFC 6455 §4.2.1: GET, HTTP/1.1 or later, Host,
 * Upgrade: websocket, Connection containing the token "upgrade", a Sec-WebSocket-Key that is
 * base64 of 16 bytes, Sec-WebSocket-Version: 13. Fills *hs (status 0 on success; requested
 * says whether the request asked for an upgrade at all). */
void pyws_handshake_check(const pyws_http_head *head, const pyws_header *headers,
                          pyws_handshake *hs);
/* Compute the Sec-WebSocket-Accept value for a key (as sent, without trimming) into out
 * (PYWS_ACCEPT_LEN chars + NUL). */
void pyws_accept_key(const char *key, size_t key_len, char *out);
/* 1 if `protocol` is one of the comma-separated tokens in `offered` (exact, case-sensitive
 * match, per RFC 6455 §4.2.2), else 0. */
int pyws_protocol_offered(pyws_str offered, const char *protocol);
/* The client's Sec-WebSocket-Key for 16 random bytes: 24 base64 chars + NUL into key_out. */
void pyws_client_key(const uint8_t *random16, char *key_out);
/* Check a server's response head to our upgrade request (RFC 6455 §4.1): 101, Upgrade:
 * websocket, Connection: upgrade, a single Sec-WebSocket-Accept matching `key`, at most one
 * Sec-WebSocket-Protocol and only one of
 * `offered_protocols` (comma list, NULL for none). NULL when valid (then *protocol views the
 * selected subprotocol, empty if none), else a static reason. Sec-WebSocket-Extensions is left
 * to pyws_pmd_check_response. */
const char *pyws_handshake_check_response(const pyws_http_head *head, const pyws_header *headers,
                                          const char *key, const char *offered_protocols,
                                          pyws_str *protocol);
/* The server's answer to a valid upgrade request, for pyws_handshake_format_response. Strings
 * are NUL-terminated; NULL and "" both mean "none". */
typedef struct pyws_handshake_reply {
    const char *accept;        /* Sec-WebSocket-Accept: the PYWS_ACCEPT_LEN base64 characters
                                  of pyws_handshake.accept (required) */
    const char *protocol;      /* Sec-WebSocket-Protocol: the one subprotocol selected, a single
                                  token (RFC 6455 §4.2.2: exactly one or none) */
    const char *extensions;    /* Sec-WebSocket-Extensions value (pyws_pmd_format) */
    const char *extra_headers; /* headers the application adds: whole lines "Name: value\r\n",
                                  Name a token, value without CR, LF or other controls */
} pyws_handshake_reply;

/* The client's upgrade request, for pyws_handshake_format_request. Same string rules. */
typedef struct pyws_handshake_request {
    const char *path;          /* request-target, "/chat?room=1": starts with '/', no spaces,
                                  controls or '#'; NULL or "" is "/" */
    const char *host;          /* Host: a DNS name or IP literal (an IPv6 one without brackets:
                                  they are added) (required) */
    int port;                  /* written as Host's ":port" when 1..65535; 0 leaves it out
                                  (the scheme's default port, RFC 6455 §4.1) */
    const char *key;           /* Sec-WebSocket-Key: 24 base64 characters of 16 bytes
                                  (pyws_client_key) (required) */
    const char *protocols;     /* Sec-WebSocket-Protocol: subprotocols offered, a comma list of
                                  tokens ("chat, superchat") */
    const char *origin;        /* Origin (NULL: no Origin header; "" sends an empty one) */
    const char *extensions;    /* Sec-WebSocket-Extensions offer (pyws_pmd_offer) */
    const char *extra_headers; /* more request headers: whole lines, as in the reply */
} pyws_handshake_request;

/* Write the 101 response head for r into out[0..cap): the status line, Upgrade, Connection,
 * Sec-WebSocket-Accept, then Sec-WebSocket-Protocol and Sec-WebSocket-Extensions when given,
 * then extra_headers, then the empty line. Not NUL-terminated; nothing is allocated.
 * Returns the length written (> 0); or -(bytes needed) when cap is too small (out may be NULL
 * to ask), in which case nothing at all is written; the needed length is always more than 100
 * bytes, so these never look like a PYWS_ERR_* code; or PYWS_ERR_ARG when an input breaks the
 * rules above (missing or malformed accept, a protocol that is not one token, CR or LF in a
 * value, extra_headers that are not whole lines), with nothing written.
 * Example:
 *     char head[512];
 *     pyws_handshake_reply r = {hs.accept, "chat", NULL, NULL};
 *     int64_t n = pyws_handshake_format_response(&r, head, sizeof head);
 *     if (n < 0 && n != PYWS_ERR_ARG) ... retry with a buffer of -n bytes */
int64_t pyws_handshake_format_response(const pyws_handshake_reply *r, char *out, size_t cap);
/* Write the client's upgrade request for r into out[0..cap): "GET path HTTP/1.1", Host,
 * Upgrade, Connection, Sec-WebSocket-Key, Sec-WebSocket-Version: 13, then
 * Sec-WebSocket-Protocol, Sec-WebSocket-Extensions and Origin when given, then extra_headers,
 * then the empty line. Same buffer contract and returns as pyws_handshake_format_response
 * (PYWS_ERR_ARG: no host or one with spaces, brackets, '/', '?', '#' or '@'; port out of
 * 0..65535; a path not starting with '/'; a bad key; protocols not a token list; CR or LF in a
 * value; extra_headers that are not whole lines). */
int64_t pyws_handshake_format_request(const pyws_handshake_request *r, char *out, size_t cap);
/* SHA-1 and base64, exposed for tests: digest is 20 bytes; b64 out needs 4*ceil(n/3)+1 bytes. */
void pyws_sha1(const uint8_t *data, size_t len, uint8_t *digest);
size_t pyws_base64_encode(const uint8_t *data, size_t len, char *out);
/* Decode; returns decoded length or -1 when not canonical base64 (out may then be partly
 * written). out needs 3*len/4 bytes. */
long pyws_base64_decode(const char *in, size_t len, uint8_t *out);

/* ---------------------------------------------------------------------------------------------
 * Options (loop.c: pyws_opts_default): the limits and settings of listeners and connections,
 * shared by the protocol half's negotiation (compression fields) and the event library.
 * ------------------------------------------------------------------------------------------- */
/* Options for listeners and connections. Fill with pyws_opts_default() then change fields.
 * Sizes are bytes, times are milliseconds; 0 disables a timeout. */
typedef struct pyws_opts {
    uint64_t max_message_size;   /* default 4 MiB: a longer message closes with 1009 */
    uint32_t max_fragments;      /* default 1048576: a message in more frames closes with 1009;
                                    0 = no limit */
    uint32_t max_header_bytes;   /* default 16384: a longer HTTP head gets 431 */
    uint32_t max_headers;        /* default 64 header lines: more gets 431 */
    uint64_t max_body;           /* default 1 MiB: a longer HTTP body gets 413 */
    uint64_t write_high_water;   /* default 1 MiB: crossing back under it raises EV_DRAIN */
    uint64_t write_limit;        /* default 16 MiB: queued bytes past this close with 1008 */
    uint32_t close_timeout;      /* default 5000: the whole close handshake, then abort */
    uint32_t heartbeat;          /* default 20000: ping every N ms while open; 0 = off */
    uint32_t heartbeat_timeout;  /* default 20000: no pong this long after a ping: 1011 */
    uint32_t idle_timeout;       /* default 0 (off): no bytes either way this long: close 1001 */
    uint32_t handshake_timeout;  /* default 10000: HTTP head must complete within this */
    int control_events;          /* default 0: 1 delivers PING/PONG/CLOSE as EV_WS_CTL */
    int reuse_port;              /* default 0: SO_REUSEPORT on listeners */
    int backlog;                 /* default 1024 */
    /* permessage-deflate (RFC 7692). Windows are in bits (9..15: 2^bits bytes). */
    int compression;             /* default 1: clients offer it, servers accept an offer */
    int deflate_level;           /* default 6: zlib's compression level 0..9 */
    int deflate_mem_level;       /* default 5: zlib's memLevel 1..9 (its hash table size) */
    int deflate_window_bits;     /* default 12: the window we compress with */
    int deflate_peer_window_bits; /* default 12: the window we ask the peer to compress with
                                    (our inflater's memory); 0 = ask nothing */
    int deflate_no_context_takeover;      /* default 0: 1 resets our compressor after each
                                             message (and tells the peer) */
    int deflate_peer_no_context_takeover; /* default 0: 1 asks the peer to reset its own */
    uint32_t deflate_threshold;  /* default 128: shorter messages are sent uncompressed */
    /* Listeners: open TCP connections of the whole loop (accepted or dialled, listeners not
     * counted) past which a new connection is accepted, answered "503 Service Unavailable"
     * (Connection: close, Retry-After: 1; TLS listeners just close it) and closed, so that
     * descriptors stay free for files, listeners and the poller. Dialled connections count
     * but are never refused. Default 0 = auto, resolved by pyws_listen from the soft
     * RLIMIT_NOFILE: see pyws_auto_max_sockets(). */
    uint32_t max_sockets;
} pyws_opts;

void pyws_opts_default(pyws_opts *o);

/* ---------------------------------------------------------------------------------------------
 * Extensions (extensions.c): the permessage-deflate negotiation of RFC 7692 §7.1, both roles,
 * from the options' compression fields. `values` are the Sec-WebSocket-Extensions header values
 * (one per occurrence of the header).
 * ------------------------------------------------------------------------------------------- */
#define PYWS_PMD_MAX_LEN 160       /* room for any agreed permessage-deflate header value */

typedef struct pyws_pmd_params {
    int server_no_context_takeover;   /* 0/1 */
    int client_no_context_takeover;   /* 0/1 */
    int server_max_window_bits;       /* 0: absent, else 8..15 */
    int client_max_window_bits;       /* 0: absent, -1: present without a value, else 8..15 */
} pyws_pmd_params;

/* Server: accept the first permessage-deflate offer that is valid (known parameters, each at
 * most once, values where allowed and in range) and fill *agreed and response (the header
 * value to answer with; cap >= PYWS_PMD_MAX_LEN; NULL when only *agreed is wanted). 1 if one
 * was accepted, 0 if none (answer without the extension; also when opts->compression is 0). */
int pyws_pmd_negotiate(const pyws_str *values, size_t nvalues, const pyws_opts *opts,
                       pyws_pmd_params *agreed, char *response, size_t cap);
/* The header value for agreed parameters ("permessage-deflate; server_max_window_bits=12")
 * into out (cap >= PYWS_PMD_MAX_LEN, else PYWS_ERR_ARG); returns its length. */
int pyws_pmd_format(const pyws_pmd_params *agreed, char *out, size_t cap);
/* Client: the Sec-WebSocket-Extensions value to offer into out (cap >= 512); returns its
 * length (0 when compression is off). Asking for a smaller server window adds a second offer
 * without that request, for servers that cannot honour it. */
int pyws_pmd_offer(const pyws_opts *opts, char *out, size_t cap);
/* Client: check the server's answer against what pyws_pmd_offer offered. NULL if acceptable
 * (*accepted = 1 and *agreed filled if it accepted permessage-deflate, 0 if it answered without
 * extensions), else why the handshake fails. */
const char *pyws_pmd_check_response(const pyws_str *values, size_t nvalues, const pyws_opts *opts,
                                    pyws_pmd_params *agreed, int *accepted);

/* ---------------------------------------------------------------------------------------------
 * Event library: loop, connections, events.
 * ------------------------------------------------------------------------------------------- */
typedef struct pyws_loop pyws_loop;

/* Events handed back by pyws_poll(). Views (data/data2) stay valid until the next pyws_poll()
 * or pyws_loop_free() on the same loop. */
#define PYWS_EV_ERROR 0      /* code: PYWS_ERR_*; data: message text. A server connection
                                whose request was answered by the core with an HTTP error:
                                code PYWS_ERR_HANDSHAKE, opcode: the status, data: "400 Bad
                                Request: why"; aux: 1 when the request asked for a WebSocket
                                upgrade and failed RFC 6455 §4.2.1 (400, or 426 with
                                Sec-WebSocket-Version: 13); no EV_HTTP_MSG is delivered for it */
#define PYWS_EV_ACCEPT 1     /* a listener accepted id; aux: listener id */
#define PYWS_EV_CONNECT 2    /* an outgoing TCP connect finished (code 0) or failed (code < 0) */
#define PYWS_EV_HTTP_MSG 3   /* data: request head (request line + headers); data2: body;
                                code: 1 if the request is a valid WebSocket upgrade, else 0
                                (plain HTTP: a request asking for an upgrade but failing the
                                check is answered by the core and never delivered) */
#define PYWS_EV_WS_OPEN 4    /* the WebSocket handshake completed */
#define PYWS_EV_WS_MSG 5     /* opcode: TEXT/BINARY; data: the whole message (UTF-8 checked,
                                inflated); aux: 1 if it arrived compressed */
#define PYWS_EV_WS_CTL 6     /* opt-in: opcode PING/PONG/CLOSE; data: the control payload */
#define PYWS_EV_DRAIN 7      /* write buffer fell back under the high-water mark */
#define PYWS_EV_WAKEUP 8     /* pyws_wakeup(): id as passed (0 = none); data: bytes passed;
                                aux: pyws_wakeup_wait's tag (0 from pyws_wakeup) */
#define PYWS_EV_TIMER 9      /* aux: timer id */
#define PYWS_EV_CLOSE 10     /* connection gone; code: close code (1005 none, 1006 abnormal);
                                data: close reason (UTF-8); aux: 1 if it was a WebSocket */
#define PYWS_EV_HTTP_RESP 11 /* client: a non-101 HTTP response to our upgrade; data: head */
#define PYWS_EV_DATA 12      /* a stream (pyws_stream_connect): data: the bytes one read gave */
/* 13 is taken by Python (EV_BROKER) */
#define PYWS_EV_CLOSE_HELD 14 /* pyws_hold_closes: a close frame (our echo of the peer's, or a
                                 failure's) is ready and waits for pyws_hold_closes(id, 0) */

typedef struct pyws_event {
    int type;                 /* PYWS_EV_* */
    int opcode;
    int code;
    uint64_t id;              /* the connection (or listener) the event is about */
    const uint8_t *data;
    size_t len;
    const uint8_t *data2;
    size_t len2;
    uint64_t aux;
} pyws_event;

/* Create a loop (its poller backend is the one built in: see pyws_backend()). NULL on failure. */
pyws_loop *pyws_loop_new(void);
/* Close every socket at once (no close handshake) and free everything. */
void pyws_loop_free(pyws_loop *loop);
/* Name of the poller backend compiled in: "epoll", "kqueue" or "poll". */
const char *pyws_backend(void);
/* Text of the last error on this loop (valid until the next call on the loop). */
const char *pyws_last_error(pyws_loop *loop);

/* Listen on host:port (host "0.0.0.0", "::", "127.0.0.1", ...; port 0 picks one). The listener
 * id is stored in *id; its connections inherit *opts (copied). */
int pyws_listen(pyws_loop *loop, const char *host, int port, const pyws_opts *opts,
                uint64_t *id);
/* The same with a socket that is already bound and listening (inherited from a parent that
 * shares it among worker processes): the loop makes it non-blocking and owns it from here
 * (closes it with the listener). PYWS_ERR_ARG if fd is not a listening stream socket. */
int pyws_listen_fd(pyws_loop *loop, int fd, const pyws_opts *opts, uint64_t *id);
/* The local port a listener or connection is bound to, or < 0. */
int pyws_local_port(pyws_loop *loop, uint64_t id);
/* Peer address as "ip:port" or "[ip6]:port" into out (NUL-terminated); returns length or < 0. */
int pyws_remote_addr(pyws_loop *loop, uint64_t id, char *out, size_t cap);

/* Run one iteration: flush pending output, wait up to timeout_ms (-1 = until something happens,
 * 0 = do not wait) for I/O, timers or wakeups, do the I/O, and return the number of events
 * stored at *events (an array owned by the loop, valid until the next pyws_poll). < 0 on error.
 * Must be called from the loop's thread. */
int pyws_poll(pyws_loop *loop, int timeout_ms, pyws_event **events);

/* Open a client WebSocket: resolve host (a blocking getaddrinfo: DNS is not asynchronous),
 * start a non-blocking TCP connect to host:port, and once connected send the upgrade request
 * pyws_handshake_format_request makes of *request (its path, Host from request->host, or host
 * when NULL, and request->port (0: left out), protocols, origin, extra_headers), with the
 * core's own Sec-WebSocket-Key (16 bytes from the OS's random source) and extension offer
 * (pyws_pmd_offer of opts): request->key and request->extensions are ignored. The request is
 * checked before anything else: PYWS_ERR_ARG (nothing opened) when the formatter refuses it.
 * Events: EV_CONNECT when TCP is up; then EV_WS_OPEN (data: the 101
 * response head) once the response passed pyws_handshake_check_response; or EV_HTTP_RESP
 * (code: status, data: head, data2: body bytes received with it) for any other status; or
 * EV_ERROR (code PYWS_ERR_REFUSED, PYWS_ERR_TIMEOUT, PYWS_ERR_DNS or PYWS_ERR_SYS: the connect
 * failed; PYWS_ERR_TIMEOUT also: no answer in time; PYWS_ERR_HANDSHAKE: a bad answer);
 * each failure is followed by EV_CLOSE. opts->handshake_timeout bounds connect + response.
 * Frames the client sends are masked with fresh random keys. */
int pyws_ws_connect(pyws_loop *loop, const char *host, int port,
                    const pyws_handshake_request *request, const pyws_opts *opts, uint64_t *id);

/* Open a client byte stream (no HTTP, no WebSocket: a database or broker connection, say):
 * resolve host (blocking getaddrinfo, as pyws_ws_connect) and start a non-blocking TCP
 * connect. Bytes given to pyws_send_raw before it connects are queued and go out once it has
 * (after the TLS handshake when pyws_tls_init was called on it). Events: EV_CONNECT when TCP
 * is up; EV_DATA for each read (data: the bytes, valid until the next poll); EV_ERROR
 * (PYWS_ERR_REFUSED, _TIMEOUT: no connect within opts->handshake_timeout, _DNS, _SYS, _TLS)
 * then EV_CLOSE (code 1006) when it fails or ends. The write queue, write_limit (1008) and
 * pyws_close_after_flush / pyws_abort work as on any connection; reading can be paused with
 * pyws_set_reading. opts: NULL for the defaults. */
int pyws_stream_connect(pyws_loop *loop, const char *host, int port, const pyws_opts *opts,
                        uint64_t *id);

/* Upgrade the connection whose HTTP_MSG was a valid WebSocket request: queue the 101 response
 * that pyws_handshake_format_response makes (with protocol as Sec-WebSocket-Protocol if not
 * NULL, the agreed extensions, and extra_headers if not NULL: whole lines "Name: value\r\n")
 * and switch to WebSocket framing. PYWS_ERR_HANDSHAKE when the request was
 * not a valid upgrade, i.e. did not ask for one (a 400 answer is queued, EV_ERROR with aux 1
 * follows, and the connection closes after flushing);
 * PYWS_ERR_PROTOCOL when protocol was not offered (nothing is sent); PYWS_ERR_ARG when
 * extra_headers are not whole lines with a token name and no control characters (nothing is
 * sent; the connection stays as it was). */
int pyws_ws_upgrade(pyws_loop *loop, uint64_t id, const char *protocol,
                    const char *extra_headers);
/* The handshake's HTTP status had it failed (0 for a valid upgrade request). */
int pyws_handshake_status(pyws_loop *loop, uint64_t id);

#define PYWS_SEND_FIN 1          /* last fragment of the message */
#define PYWS_SEND_NO_COMPRESS 2  /* send this message uncompressed even if permessage-deflate
                                    is on (given on its first frame; ignored without it) */
#define PYWS_SEND_COMPRESS 4     /* compress it even if shorter than deflate_threshold */
#define PYWS_SEND_REPORT_HW 8    /* return 1 instead of PYWS_OK when the frame was queued and the
                                    queue is above write_high_water (pyws_above_high_water() == 1
                                    after the call): a sender that waits for EV_DRAIN learns it
                                    without a second call */

/* Queue one frame (opcode TEXT/BINARY/CONTINUATION/PING/PONG) carrying data[0..len). A message
 * in fragments is a TEXT/BINARY frame without PYWS_SEND_FIN followed by CONTINUATION frames,
 * the last with PYWS_SEND_FIN; control frames may be sent in between. Returns PYWS_OK (or 1,
 * see PYWS_SEND_REPORT_HW), PYWS_ERR_CLOSED, PYWS_ERR_STATE (bad fragment sequence, not a WebSocket, control > 125),
 * PYWS_ERR_LIMIT (queue passed write_limit: the connection is being closed with 1008). */
int pyws_send(pyws_loop *loop, uint64_t id, int opcode, const uint8_t *data, size_t len,
              int flags);
/* Queue raw bytes (an HTTP response, or a stream's output) on a connection. */
int pyws_send_raw(pyws_loop *loop, uint64_t id, const uint8_t *data, size_t len);
/* Start the close handshake with code (1000..4999, not 1005/1006/1015) and reason (<= 123
 * bytes, UTF-8). Code 0 sends a close frame without a payload. On a plain HTTP connection
 * this is the same as pyws_close_after_flush. */
int pyws_ws_close(pyws_loop *loop, uint64_t id, int code, const char *reason, size_t reason_len);
/* Close the TCP connection once everything queued has been written. */
int pyws_close_after_flush(pyws_loop *loop, uint64_t id);
/* Close the TCP connection now, dropping queued output (EV_CLOSE follows with 1006). */
int pyws_abort(pyws_loop *loop, uint64_t id);

/* The extensions agreed for this WebSocket, as in the handshake's Sec-WebSocket-Extensions
 * ("permessage-deflate; server_max_window_bits=12"), into out (NUL-terminated); returns the
 * length (0: none), or < 0. */
int pyws_ws_extensions(pyws_loop *loop, uint64_t id, char *out, size_t cap);

/* Bytes queued and not yet written, or < 0. */
int64_t pyws_write_buffer_size(pyws_loop *loop, uint64_t id);
/* 1 if the connection's queue went above its write_high_water and has not drained back under
 * it yet (an EV_DRAIN will follow), 0 if not, < 0 on error. */
int pyws_above_high_water(pyws_loop *loop, uint64_t id);
/* Deliver this WebSocket's control frames (PING/PONG/CLOSE) as EV_WS_CTL (on = 1) or not
 * (on = 0), whatever its control_events option said; pings are still answered by the core. */
int pyws_set_control_events(pyws_loop *loop, uint64_t id, int on);
/* Per-connection limits (after accept): max message size in bytes. */
int pyws_set_max_message_size(pyws_loop *loop, uint64_t id, uint64_t bytes);
/* 1 if id names a live connection, 0 if not. */
int pyws_is_alive(pyws_loop *loop, uint64_t id);
/* 1 if the connection speaks WebSocket (upgraded), 0 if not, < 0 on error. */
int pyws_is_websocket(pyws_loop *loop, uint64_t id);

/* ---------------------------------------------------------------------------------------------
 * Running inside another event loop (asyncio, uvloop, ...). The host loop watches one
 * descriptor and keeps one timer; it calls pyws_poll(loop, 0, ...) when the descriptor is
 * readable or the timer is due, and after each such poll asks pyws_next_timeout() when to
 * poll again. Nothing here waits.
 * ------------------------------------------------------------------------------------------- */
/* The poller's own pollable descriptor (epoll, kqueue): readable while any socket of the loop,
 * or its cross-thread wakeup, has something to report. -1 for the poll(2) backend, which has
 * none: watch the descriptors pyws_loop_watched() lists instead. Owned by the loop. */
int pyws_loop_fd(pyws_loop *loop);
/* Milliseconds until the loop needs pyws_poll again even if no descriptor becomes readable:
 * 0 = now (output queued to flush, work left over by the last poll's budget: input buffered
 * inside OpenSSL, a connection that had no arena room, wakeups past the batch size, events
 * raised between polls), > 0 = the next timer or deadline (heartbeats, timeouts, user timers;
 * capped at 2^31-1), -1 = none. With self-wake on, it also re-arms the self-wake. */
int64_t pyws_next_timeout(pyws_loop *loop);
/* Self-wake (on = 1; off by default): work queued on the loop between two polls (a send, a
 * close, a timer added, a deferred event, a change of what a socket is watched for) makes the
 * pollable descriptor readable (through the wakeup eventfd or pipe), once per gap between
 * polls, so that a host loop which only watches that descriptor polls again. After pyws_poll
 * returns it stays quiet until pyws_next_timeout() is called: the host asks that right after
 * handling the batch, and what the batch queued is covered by its answer (0). */
void pyws_loop_self_wake(pyws_loop *loop, int on);
/* The poll(2) backend's watched descriptors: up to cap of them into fds/events (PYWS_WATCH_IN
 * | PYWS_WATCH_OUT)/ids (the connection id, or another number that changes when a descriptor
 * number is reused for another socket); *generation (may be NULL) changes whenever the set
 * changes. Returns the number watched (more than cap: call again with more room), or
 * PYWS_ERR_UNSUPPORTED for a backend with a pollable descriptor (see pyws_loop_fd). */
#define PYWS_WATCH_IN 1
#define PYWS_WATCH_OUT 2
int pyws_loop_watched(pyws_loop *loop, int *fds, uint32_t *events, uint64_t *ids, int cap,
                      uint64_t *generation);

/* ---------------------------------------------------------------------------------------------
 * Connection state (state.c). Inside, a connection moves through a table of states (NEW, HTTP,
 * WS_OPEN, WS_CLOSE_SENT, FLUSHING, LINGER, ...; docs/architecture.md lists every allowed
 * transition); outside, it is one of the four below.
 * ------------------------------------------------------------------------------------------- */
#define PYWS_STATE_CONNECTING 0  /* the WebSocket is not open yet: a client connecting or
                                    waiting for the 101, a server connection speaking HTTP */
#define PYWS_STATE_OPEN 1        /* the WebSocket is open */
#define PYWS_STATE_CLOSING 2     /* a close frame went one way or the other, or the connection
                                    is flushing its last bytes before it ends */
#define PYWS_STATE_CLOSED 3      /* ended (EV_CLOSE delivered or queued) */

/* The public state (PYWS_STATE_*) of connection id. A freed or stale id, or a listener's,
 * is PYWS_STATE_CLOSED. Cheap: one table lookup; call it when you need it, not per event.
 * Example: if (pyws_conn_state(loop, id) == PYWS_STATE_OPEN) pyws_send(...); */
int pyws_conn_state(pyws_loop *loop, uint64_t id);
/* How many internal states there are; they are numbered 0 .. count - 1. */
int pyws_state_count(void);
/* The name of internal state s ("WS_OPEN"), or NULL if s is out of range. Static storage. */
const char *pyws_state_name(int s);
/* 1 if the state machine allows a change from internal state `from` to `to`, else 0 (also for
 * out-of-range numbers). For tests and documentation: the table every change is checked
 * against (an illegal one aborts in the sanitizer build and is reported as EV_ERROR with
 * PYWS_ERR_STATE otherwise). */
int pyws_state_allowed(int from, int to);
/* The public state (PYWS_STATE_*) internal state s maps to, or PYWS_ERR_ARG. */
int pyws_state_public(int s);

/* Timers: fire EV_TIMER after ms milliseconds (then every ms if repeat). Returns the timer id
 * (> 0) in *timer_id. */
int pyws_timer_add(pyws_loop *loop, uint64_t ms, int repeat, uint64_t *timer_id);
int pyws_timer_cancel(pyws_loop *loop, uint64_t timer_id);

/* Pause (on = 0) or resume (on = 1) reading from a connection: while paused nothing is read,
 * so TCP pushes back on the peer. Pongs are not answered while paused either. */
int pyws_set_reading(pyws_loop *loop, uint64_t id, int on);

/* Hold (on = 1) the connection's close frames until released (on = 0). For applications that
 * answer messages from other threads: a close that becomes due (the echo of the peer's close,
 * or the failure of a bad frame) would otherwise go out at the next poll, before the replies to
 * the messages that came ahead of it. While held, the loop reports EV_CLOSE_HELD once and
 * sends the close frame when released (at once, from inside this call) or close_timeout after
 * it became due, whichever is first. Releasing also stops holding later closes. */
int pyws_hold_closes(pyws_loop *loop, uint64_t id, int on);

/* ---------------------------------------------------------------------------------------------
 * Topics (topics.c): publish/subscribe with the fan-out in C. A publish frames the message once
 * and queues the same bytes on every subscriber (no copy per subscriber). A subscriber whose
 * queue would pass its write_limit is closed with 1008; it never stalls the others.
 * Subscriptions end with the connection. Topic names are byte strings (any bytes, <= 64 KiB).
 * ------------------------------------------------------------------------------------------- */
/* Returns 1 if newly subscribed, 0 if it already was, < 0 on error (not a WebSocket: STATE). */
int pyws_subscribe(pyws_loop *loop, uint64_t id, const char *topic, size_t topic_len);
/* Returns 1 if it was subscribed, 0 if not. */
int pyws_unsubscribe(pyws_loop *loop, uint64_t id, const char *topic, size_t topic_len);
/* 1 if id is subscribed to topic, else 0. */
int pyws_is_subscribed(pyws_loop *loop, uint64_t id, const char *topic, size_t topic_len);
/* Queue one message (opcode TEXT or BINARY) to every open WebSocket subscribed to topic except
 * `exclude` (0 = none). Returns the number of connections it was queued on. Connections in the
 * middle of sending a fragmented message cannot take it: they are counted in *skipped (may be
 * NULL). Subscribers closed for passing write_limit are counted in *dropped (may be NULL).
 * flags: 0, PYWS_SEND_NO_COMPRESS or PYWS_SEND_COMPRESS. With permessage-deflate, subscribers that reset their
 * compressor after each message share one compressed frame per set of parameters (compressed
 * once); subscribers that keep their context are compressed one by one. */
int pyws_publish(pyws_loop *loop, const char *topic, size_t topic_len, int opcode,
                 const uint8_t *data, size_t len, uint64_t exclude, int flags, uint32_t *skipped,
                 uint32_t *dropped);
/* The same to every open server-side WebSocket of the loop. */
int pyws_broadcast(pyws_loop *loop, int opcode, const uint8_t *data, size_t len,
                   uint64_t exclude, int flags, uint32_t *skipped, uint32_t *dropped);
/* Subscribers of a topic (0 if it has none). */
int pyws_topic_count(pyws_loop *loop, const char *topic, size_t topic_len);
/* Number of topics with at least one subscriber. */
int pyws_topic_total(pyws_loop *loop);
/* Log every topic that gains its first subscriber or loses its last (on = 1), for a broker
 * that follows the local interest (on = 0 stops and forgets the log). */
void pyws_topic_watch(pyws_loop *loop, int on);
/* The log since the last call, then emptied: *len bytes of records, each a uint32_t name
 * length (native byte order) and the name. A topic may appear more than once: compare with
 * pyws_topic_count to know where it ended. *lost: changes not logged for want of memory since
 * the last call (then the log is incomplete: check every topic). The bytes stay valid until the
 * next topic change or call. */
const uint8_t *pyws_topic_changes(pyws_loop *loop, size_t *len, uint64_t *lost);

/* ---------------------------------------------------------------------------------------------
 * TLS (tls.c), OpenSSL over the loop's non-blocking sockets. Secure defaults: TLS 1.2 or newer,
 * OpenSSL's default cipher list, no renegotiation, ALPN "http/1.1". The handshake runs inside
 * the loop (bounded by handshake_timeout); its failure gives EV_ERROR (code PYWS_ERR_TLS, data:
 * OpenSSL's reason) and EV_CLOSE for that connection only.
 * ------------------------------------------------------------------------------------------- */
typedef struct pyws_tls_opts {
    const char *cert_pem;     /* certificate (chain), PEM; a server needs one, a client only for
                                 mutual TLS */
    size_t cert_len;
    const char *key_pem;      /* its private key, PEM */
    size_t key_len;
    const char *ca_pem;       /* trusted CA certificates, PEM; NULL: the system's store (client)
                                 or none (server) */
    size_t ca_len;
    int verify_peer;          /* client: verify the server's chain and host name (1, the
                                 default); server: require and verify a client certificate */
} pyws_tls_opts;

typedef struct pyws_tls_ctx pyws_tls_ctx;

/* Make a TLS context for servers (is_server = 1) or clients. Reference counted: listeners and
 * connections keep their own reference, so the caller may free it at any time. */
int pyws_tls_ctx_new(pyws_loop *loop, int is_server, const pyws_tls_opts *opts,
                     pyws_tls_ctx **out);
void pyws_tls_ctx_free(pyws_tls_ctx *ctx);
/* Every connection this listener accepts speaks TLS with ctx. */
int pyws_listen_tls(pyws_loop *loop, uint64_t listener, pyws_tls_ctx *ctx);
/* Start TLS on a connection: an accepted one before any byte was read (mongoose's tls_init on
 * the accept event), or a client one from pyws_ws_connect before it is open; server_name (the
 * client's SNI and the name checked against the certificate) is NULL for servers. */
int pyws_tls_init(pyws_loop *loop, uint64_t id, pyws_tls_ctx *ctx, const char *server_name);
/* Protocol version and cipher of an established TLS connection into out ("TLSv1.3
 * TLS_AES_256_GCM_SHA384"); < 0 if the connection has no TLS. */
int pyws_tls_info(pyws_loop *loop, uint64_t id, char *out, size_t cap);

/* ---------------------------------------------------------------------------------------------
 * The cross-thread queue. Other threads hand the loop work as items (an id, a tag and a copy of
 * some bytes) that pyws_poll turns into EV_WAKEUP events on the loop's thread, first in, first
 * out. The queue is bounded: past max_items items or max_bytes bytes of payload a producer
 * waits for room (or fails at once with timeout 0), so a flood cannot grow memory without
 * bound. One pyws_poll turns at most `batch` items into events; when more are left, the next
 * pyws_poll does not wait for I/O but takes the next batch, so every poll stays short.
 * ------------------------------------------------------------------------------------------- */
#define PYWS_WAKE_MAX_ITEMS 65536      /* default bound: items queued */
#define PYWS_WAKE_MAX_BYTES 67108864   /* default bound: payload bytes queued (64 MiB) */
#define PYWS_WAKE_BATCH 1024           /* default: items one pyws_poll delivers at most */

/* THREAD-SAFE. Deliver EV_WAKEUP (id, a copy of data) on the loop's thread and wake the loop now
 * if it is waiting in pyws_poll. Never waits: the same as pyws_wakeup_wait(loop, id, 0, data,
 * len, 0). Returns PYWS_OK, PYWS_ERR_LIMIT (the queue is full), PYWS_ERR_ARG (len is more than
 * the whole byte bound), PYWS_ERR_CLOSED (pyws_wake_close was called) or PYWS_ERR_NOMEM. */
int pyws_wakeup(pyws_loop *loop, uint64_t id, const uint8_t *data, size_t len);
/* THREAD-SAFE. Queue EV_WAKEUP (id; data: a copy of data[0..len); aux: tag), waiting up to
 * timeout_ms milliseconds (-1 = as long as it takes, 0 = not at all) while the queue is full.
 * Called from the thread that runs pyws_poll, it never waits (that thread is the one that
 * would make room). Returns PYWS_OK; PYWS_ERR_LIMIT if the queue stayed full; PYWS_ERR_CLOSED
 * if pyws_wake_close was called before or while it waited; PYWS_ERR_ARG if len is more than
 * max_bytes (it could never fit) or data is NULL with len > 0; PYWS_ERR_NOMEM. */
int pyws_wakeup_wait(pyws_loop *loop, uint64_t id, uint64_t tag, const uint8_t *data,
                     size_t len, int timeout_ms);
/* THREAD-SAFE. Bound the queue: max_items items, max_bytes bytes of payload, and batch items
 * delivered per pyws_poll (defaults PYWS_WAKE_MAX_ITEMS, PYWS_WAKE_MAX_BYTES, PYWS_WAKE_BATCH;
 * 0 leaves that value as it is). Lowering a bound under what is queued drops nothing: producers
 * wait until the loop has taken enough. */
void pyws_wake_limits(pyws_loop *loop, size_t max_items, size_t max_bytes, uint32_t batch);
/* THREAD-SAFE. Items and payload bytes queued and not yet delivered (either may be NULL). */
void pyws_wake_pending(pyws_loop *loop, size_t *items, size_t *bytes);
/* THREAD-SAFE. Refuse every later wakeup with PYWS_ERR_CLOSED, wake the producers waiting for
 * room (they return PYWS_ERR_CLOSED), and return once none of them is still inside
 * pyws_wakeup_wait. Items already queued stay queued (pyws_poll still delivers them; the loop
 * frees the rest). pyws_loop_free calls it itself; a binding whose other threads may be
 * waiting calls it first, then makes sure none calls in again, then frees the loop. */
void pyws_wake_close(pyws_loop *loop);

/* The receive arena: EV_WS_MSG views of messages that arrived whole in one read point into
 * it. Its size never changes; its base changes only when pyws_view_keep hands the arena to the
 * caller, so a binding may map it once, slice payloads out of it rather than wrap each view,
 * and map it again after such a call. */
const uint8_t *pyws_arena(pyws_loop *loop, size_t *size);

/* Call between polls only. An EV_WS_MSG view (data[0..len) of connection id, delivered by the
 * last pyws_poll) is still in use after the binding's lifetime for it ended: hand the caller
 * the heap block holding it, so that the loop neither frees nor reuses that memory. The caller
 * owns *block from then on and frees it with pyws_block_free once no view into it is left.
 * The block is one of: the receive arena (the loop takes a fresh one; pyws_arena reports the
 * new base), a block retired for the next poll (an assembled, inflated or deferred message),
 * or the connection's held assembly buffer (the session starts a fresh one). Other views of
 * the same batch inside that block stay valid, now in the caller's block.
 * Returns PYWS_OK; PYWS_ERR_STATE inside a poll; PYWS_ERR_NOMEM (no fresh arena: nothing
 * changed, call again later); PYWS_ERR_ARG if data is in none of those blocks. */
int pyws_view_keep(pyws_loop *loop, uint64_t id, const void *data, size_t len, void **block);
/* Free a block handed over by pyws_view_keep. NULL is ignored. */
void pyws_block_free(void *block);

/* Statistics for tests and benchmarks: bytes of heap held by a connection's buffers. */
int64_t pyws_conn_memory(pyws_loop *loop, uint64_t id);
/* Number of live connections (listeners excluded). */
int pyws_conn_count(pyws_loop *loop);
/* permessage-deflate work done by this loop so far: frames compressed (a publish to many
 * subscribers with no context takeover counts once), messages inflated; and the bytes its
 * shared zlib streams hold (*pool_bytes). Any pointer may be NULL. */
void pyws_deflate_stats(pyws_loop *loop, uint64_t *deflated, uint64_t *inflated,
                        uint64_t *pool_bytes);

/* ---------------------------------------------------------------------------------------------
 * Descriptor limits. When accept() fails for want of descriptors or memory (EMFILE, ENFILE,
 * ENOBUFS, ENOMEM), the loop stops watching all its listeners for a pause of 10 ms, doubled
 * at each failure in a row up to 1 s, and back to 10 ms once an accept succeeds; a connection
 * of the loop closing ends a pause early. Such failures, and connections refused at
 * max_sockets, are reported as EV_ERROR on the listener at most once a second, with a count.
 * ------------------------------------------------------------------------------------------- */
typedef struct pyws_limit_stats {
    uint64_t refused;          /* connections refused at max_sockets (503, then closed) */
    uint64_t accept_failures;  /* accept() failures for want of descriptors or memory */
    uint64_t accept_pauses;    /* times the listeners were unwatched after such a failure */
    uint32_t accept_paused;    /* 1 while the listeners are unwatched, else 0 */
    uint32_t pause_ms;         /* length of the current or last pause (0: none since the last
                                  successful accept) */
    uint32_t sockets;          /* open connections, listeners excluded (pyws_conn_count) */
} pyws_limit_stats;

/* Fill *out with this loop's counters above. */
void pyws_limit_stats_get(pyws_loop *loop, pyws_limit_stats *out);
/* The max_sockets a listener made now with max_sockets = 0 gets: with S the soft
 * RLIMIT_NOFILE, S - max(32, S / 16) descriptors (S / 16 kept spare for files, listeners, the
 * poller and dialled connections), at least 1; 2^31 - 1 when S is unlimited or larger. */
uint32_t pyws_auto_max_sockets(void);
/* The max_sockets in force on a listener (resolved at pyws_listen), or PYWS_ERR_BADID. */
int64_t pyws_listener_max_sockets(pyws_loop *loop, uint64_t listener);

/* ---------------------------------------------------------------------------------------------
 * Observability (stats.c). Counters are plain increments on the paths that already touch a
 * connection (one thread owns the loop: no atomics); reading them costs one call. Totals of
 * the loop add what live connections counted (summed when read) to what closed ones had.
 *
 * Bytes are counted twice, at two levels:
 *   - payload ("bytes_in/out"): the data messages' application bytes, after inflating what
 *     came compressed and before compressing what goes out; control frames and headers not
 *     counted. A message counts when it was delivered whole (in) or its last frame queued (out).
 *   - wire ("wire_in/out"): every byte read from and written to the connection: the HTTP
 *     upgrade, frame headers, control frames, compressed payloads. Under TLS: the plaintext
 *     handed to and taken from TLS (records add their own overhead on top).
 * permessage-deflate adds, for compressed messages only, their payload as it crossed the wire
 * (deflate_*_wire) and as the application sees it (deflate_*_data).
 * ------------------------------------------------------------------------------------------- */
typedef struct pyws_conn_stats {
    uint64_t msgs_in;            /* data messages received (delivered whole) */
    uint64_t msgs_out;           /* data messages queued (their frame with FIN) */
    uint64_t bytes_in;           /* payload bytes of those, after inflating */
    uint64_t bytes_out;          /* payload bytes of data frames queued, before compressing */
    uint64_t wire_in;            /* bytes read from the connection */
    uint64_t wire_out;           /* bytes written to it */
    uint64_t deflate_in_wire;    /* compressed messages received: payload bytes on the wire */
    uint64_t deflate_in_data;    /* ... the same messages after inflating */
    uint64_t deflate_out_data;   /* messages sent compressed: payload bytes before compressing */
    uint64_t deflate_out_wire;   /* ... and after, as they go on the wire */
    uint64_t connected_at;       /* ms on the loop clock: accepted, or the client's connect began */
    uint64_t last_activity;      /* ms on the loop clock: the last byte read or written */
    uint64_t now;                /* ms on the loop clock when this was filled */
    uint64_t ping_rtt_us;        /* round trip in µs of the last heartbeat ping the engine sent
                                    and got the matching pong for (pings from the peer are not
                                    timed); 0 = none yet */
    uint64_t pings_sent;         /* heartbeat pings sent */
    uint64_t write_buffer;       /* bytes queued and not yet written */
    int32_t state;               /* internal state (pyws_state_name, pyws_state_public) */
    uint32_t subscriptions;      /* topics it is subscribed to */
} pyws_conn_stats;

/* Fill *out with connection id's counters. PYWS_OK, or PYWS_ERR_BADID (no live connection:
 * closed ones are gone, their counts live on in the loop's totals). */
int pyws_conn_stats_get(pyws_loop *loop, uint64_t id, pyws_conn_stats *out);

/* Why the engine closed a connection on its own (pyws_loop_stats.closes[]). */
#define PYWS_WHY_WRITE_LIMIT 0     /* 1008: its queue passed write_limit (a slow consumer) */
#define PYWS_WHY_HEARTBEAT 1       /* 1011: no pong within heartbeat_timeout */
#define PYWS_WHY_IDLE 2            /* 1001 (or the HTTP connection dropped): idle_timeout */
#define PYWS_WHY_CLOSE_TIMEOUT 3   /* the close handshake or the lingering close outlasted
                                      close_timeout: TCP closed at once */
#define PYWS_CLOSE_WHY_COUNT 4

/* Why a server connection's handshake failed (pyws_loop_stats.hs_failed[]): the HTTP status
 * it was answered with (the engine's answers to bad requests, 408 when the request did not
 * come in handshake_timeout, the application's non-101 answers to valid upgrade requests), or
 * the TLS handshake's failure. pyws_stats_label(1, i) names them: "400", ..., "other", "tls". */
#define PYWS_HSF_OTHER 12          /* another 4xx/5xx status */
#define PYWS_HSF_TLS 13            /* the TLS handshake failed */
#define PYWS_HSF_TLS_TIMEOUT 14    /* the TLS handshake did not end in handshake_timeout */
#define PYWS_HS_WHY_COUNT 15

typedef struct pyws_loop_stats {
    uint64_t now;                /* ms on the loop clock */
    uint32_t states[15];         /* live connections by internal state (pyws_state_name(i)) */
    uint32_t listeners;
    uint64_t accepted;           /* connections accepted (refused ones not counted) */
    uint64_t ws_opened;          /* WebSockets opened, server and client */
    uint64_t msgs_in;            /* the pyws_conn_stats counters summed over every connection */
    uint64_t msgs_out;           /* the loop ever had, live and closed */
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t wire_in;
    uint64_t wire_out;
    uint64_t deflate_in_wire;
    uint64_t deflate_in_data;
    uint64_t deflate_out_data;
    uint64_t deflate_out_wire;
    uint64_t topics;             /* topics with at least one subscriber */
    uint64_t subscriptions;      /* (connection, topic) pairs */
    uint64_t closes[4];          /* by PYWS_WHY_* */
    uint64_t hs_failed[15];      /* by PYWS_HSF_* index (pyws_stats_label(1, i)) */
    uint64_t publish_skipped;    /* publish/broadcast deliveries skipped: the subscriber was in
                                    the middle of sending a fragmented message */
    uint64_t pongs_replaced;     /* pongs dropped unsent: a newer ping from the same peer came
                                    while its pong waited (RFC 6455 §5.5.3) */
    /* memory the loop keeps in its idle block caches for reuse (README, limits): [0] the
     * 16 KiB blocks of small frames, [1] large buffers (messages over 64 KiB, frames over
     * 16 KiB); a count and bytes each */
    uint64_t cached_blocks[2];
    uint64_t cached_bytes[2];
} pyws_loop_stats;

/* Fill *out (O(connections): call it when asked, not per event). Descriptor-limit counters
 * (refused, accept failures) are in pyws_limit_stats_get. */
void pyws_loop_stats_get(pyws_loop *loop, pyws_loop_stats *out);
/* The name of entry i of a table: 0 = closes ("write_limit", "heartbeat_timeout",
 * "idle_timeout", "close_timeout"), 1 = hs_failed ("400", "403", ..., "other", "tls",
 * "tls_timeout"). NULL past the end. Static storage. */
const char *pyws_stats_label(int table, int i);

/* Topics one at a time: *cursor starts at 0; each call that returns 1 fills *name (a view into
 * the loop's table: valid until a subscription changes) and *subscribers and moves *cursor on;
 * 0 once every topic was seen. Order: the table's, not sorted. */
int pyws_topic_next(pyws_loop *loop, uint64_t *cursor, pyws_str *name, uint32_t *subscribers);
/* The subscribers of topic: up to cap connection ids into out; returns how many there are
 * (more than cap: call again with more room; 0 for a topic nobody is subscribed to). */
int pyws_topic_members(pyws_loop *loop, const char *topic, size_t topic_len, uint64_t *out,
                       size_t cap);

/* CDEF-END */

#ifdef __cplusplus
}
#endif
#endif /* PYWS_H */
