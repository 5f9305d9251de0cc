/*
 * utf8.h — internal: the UTF-8 validation kernels behind pyws_utf8_feed() / _feed_with().
 *
 * The validator is a deterministic automaton over byte classes (utf8.c). Its state is the
 * public pyws_utf8.state; the values below are opaque to callers except that 0 means "at a code
 * point boundary". States are stored pre-multiplied by 16 so that one step is
 * `state = next[state + class[byte]]`.
 *
 * A kernel runs the automaton from *state over p[0..len):
 *   - returns PYWS_UTF8_OK or PYWS_UTF8_PARTIAL with *state the state after the last byte, or
 *   - returns PYWS_UTF8_INVALID with *state = PYWS_UTF8_S_BAD and *bad the offset in p of the
 *     first byte the automaton rejected.
 * Every kernel gives exactly the same answers. *state must be a valid, non-BAD state (the
 * dispatch in utf8.c checks). Kernels never read outside p[0..len).
 *
 * Two families of SIMD kernel:
 *   - ASCII skippers (utf8_sse2.c): 64 bytes at a time while they are ASCII, the automaton
 *     (pw_utf8_advance) for everything else;
 *   - lookup-table validators (utf8_sse4.c, utf8_avx2.c, utf8_avx512.c, utf8_neon.c), after
 *     Keiser and Lemire, "Validating UTF-8 In Less Than One Instruction Per Byte" (Software:
 *     Practice and Experience, 2021), which check every byte in vectors and leave to the
 *     automaton only the few bytes around the first error and around an unfinished code point
 *     at either end of the input. See "The lookup-table validator" below.
 */
#ifndef PYWS_UTF8_H
#define PYWS_UTF8_H

#include <stddef.h>
#include <stdint.h>

#include "pyws.h"

#define PYWS_UTF8_S_BOUNDARY 0u /* between code points */
#define PYWS_UTF8_S_BAD 128u    /* rejected; sticky */

typedef int (*pyws_utf8_fn)(uint32_t *state, const uint8_t *p, size_t len, size_t *bad);

int pw_utf8_scalar(uint32_t *state, const uint8_t *p, size_t len, size_t *bad); /* utf8.c */
int pw_utf8_sse2(uint32_t *state, const uint8_t *p, size_t len, size_t *bad);   /* utf8_sse2.c */
int pw_utf8_avx2(uint32_t *state, const uint8_t *p, size_t len, size_t *bad);   /* utf8_avx2.c */
int pw_utf8_neon(uint32_t *state, const uint8_t *p, size_t len, size_t *bad);   /* utf8_neon.c */
int pw_utf8_sse4(uint32_t *state, const uint8_t *p, size_t len, size_t *bad);   /* utf8_sse4.c */
int pw_utf8_avx512(uint32_t *state, const uint8_t *p, size_t len, size_t *bad); /* utf8_avx512.c */

/*
 * The shared non-ASCII path for the SIMD kernels: run the automaton from *state starting at p[i],
 * and stop at the first code point boundary at or after `stop`, or at len (stop <= len).
 * Returns the position reached. If a byte is rejected, sets *state to PYWS_UTF8_S_BAD and
 * returns that byte's offset instead.
 */
size_t pw_utf8_advance(uint32_t *state, const uint8_t *p, size_t i, size_t stop, size_t len);

/* After a vector probe found its first non-ASCII byte `skip` bytes into the block at *i: move
 * there, adapt the scalar run length *near (NEAR_MIN after a long ASCII stretch, doubling up to
 * NEAR_MAX while non-ASCII stays dense), and run the automaton that far. Returns 0, or 1 when a
 * byte was rejected (then *i is its offset and *state is PYWS_UTF8_S_BAD). */
#define PYWS_UTF8_NEAR_MIN 16
#define PYWS_UTF8_NEAR_MAX 256
static inline int pyws_utf8_near_run(uint32_t *state, const uint8_t *p, size_t *i, size_t skip,
                                     size_t *near, size_t len)
{
    *i += skip;
    *near = skip >= PYWS_UTF8_NEAR_MIN ? PYWS_UTF8_NEAR_MIN
            : *near < PYWS_UTF8_NEAR_MAX ? 2 * *near : PYWS_UTF8_NEAR_MAX;
    *i = pw_utf8_advance(state, p, *i, len - *i > *near ? *i + *near : len, len);
    return *state == PYWS_UTF8_S_BAD;
}

/* The end of every vector kernel: bytes from i on (fewer than one block) go to the scalar
 * kernel; stores the state and returns the verdict for the whole input. */
int pw_utf8_finish(uint32_t *state, uint32_t s, const uint8_t *p, size_t i, size_t len,
                     size_t *bad);

/*
 * The lookup-table validator.
 *
 * Every byte `cur` is checked against the byte before it (`prev1`) with three 16-entry tables
 * indexed by a nibble: LUT_PREV1_HIGH[prev1 >> 4] & LUT_PREV1_LOW[prev1 & 15] &
 * LUT_CUR_HIGH[cur >> 4]. Each bit of the result is one kind of error, and each kind is a
 * product of a set of prev1 high nibbles, a set of prev1 low nibbles and a set of cur high
 * nibbles, so the AND of the three lookups has the bit set exactly for the pairs of that kind:
 *
 *   bit   kind            prev1           cur          (the pair the bit flags)
 *   0x01  TOO_SHORT       C0..FF          00..7F, C0..FF  a lead not followed by a continuation
 *   0x02  TOO_LONG        00..7F          80..BF       a continuation after ASCII
 *   0x04  OVERLONG_3      E0              80..9F       3-byte form of a code point < U+0800
 *   0x08  TOO_LARGE       F4..FF          90..BF       above U+10FFFF (or a 5/6-byte lead)
 *   0x10  SURROGATE       ED              A0..BF       U+D800..U+DFFF
 *   0x20  OVERLONG_2      C0, C1          80..BF       2-byte form of a code point < U+0080
 *   0x40  OVERLONG_4      F0              80..8F       4-byte form of a code point < U+10000
 *         TOO_LARGE_1000  F5..FF          80..8F       (shares the bit: F0 and F5..FF differ in
 *                                                      prev1's low nibble only)
 *   0x80  TWO_CONTS       80..BF          80..BF       a continuation after a continuation
 *
 * TWO_CONTS is an error unless cur is the 2nd or 3rd continuation of a 3- or 4-byte sequence,
 * i.e. unless prev2 >= E0 or prev3 >= F0; those bytes are found with a saturating subtract
 * (prev2 -sat 0x60 and prev3 -sat 0x70 have their top bit set exactly then), and the result,
 * masked to 0x80, is XOR-ed into the table result: it cancels an expected TWO_CONTS and flags a
 * missing continuation (cur not 80..BF where one was due). Any nonzero byte is an error.
 *
 * prev1..prev3 of the first bytes of a vector come from the end of the previous one, so a block
 * (64 bytes) is checked against the last bytes before it. A block of ASCII needs no tables: it is
 * only an error when the block before it ended inside a code point (its last byte >= C0, the
 * one before >= E0 or the one before that >= F0), which the kernels keep as `incomplete`.
 *
 * The kernels start at a code point boundary (after finishing with the automaton a code point
 * split from the previous feed), with "previous bytes" of zeros, i.e. ASCII. The last partial
 * block is copied into 64 zeroed bytes, so a code point unfinished at the end of the input shows
 * as an error in the padding. The first error byte the tables flag is the automaton's first
 * rejected byte or the one after it (C0, C1 and F5..FF are rejected by the automaton at once but
 * flagged on the byte that follows; everything else is flagged where the automaton rejects it),
 * and no byte before it is rejected. pw_utf8_lookup_resume() therefore backs up from there to
 * the start of the code point around it (at most 4 bytes) and lets the automaton run from that
 * boundary: its answer, state and offset are the scalar kernel's by construction.
 */
#define PW_UTF8_LUT_PREV1_HIGH                                                                   \
    0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, /* 0..7: TOO_LONG */                         \
        0x80, 0x80, 0x80, 0x80,                     /* 8..B: TWO_CONTS */                        \
        0x21,                                       /* C: TOO_SHORT OVERLONG_2 */                \
        0x01,                                       /* D: TOO_SHORT */                           \
        0x15,                                       /* E: TOO_SHORT OVERLONG_3 SURROGATE */      \
        0x49                                        /* F: TOO_SHORT TOO_LARGE OVERLONG_4/1000 */
#define PW_UTF8_LUT_PREV1_LOW                                                                    \
    0xE7,                                           /* 0: any-nibble bits + OVERLONG_2/3/4 */    \
        0xA3,                                       /* 1: + OVERLONG_2 */                        \
        0x83, 0x83,                                 /* 2, 3: TOO_SHORT TOO_LONG TWO_CONTS */     \
        0x8B,                                       /* 4: + TOO_LARGE */                         \
        0xCB, 0xCB, 0xCB, 0xCB, 0xCB, 0xCB, 0xCB, 0xCB, /* 5..C: + TOO_LARGE(_1000) */           \
        0xDB,                                       /* D: + SURROGATE */                         \
        0xCB, 0xCB                                  /* E, F */
#define PW_UTF8_LUT_CUR_HIGH                                                                     \
    0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, /* 0..7: TOO_SHORT */                        \
        0xE6,                                       /* 8: not TOO_LARGE, SURROGATE */            \
        0xAE,                                       /* 9: not SURROGATE, OVERLONG_4 */           \
        0xBA, 0xBA,                                 /* A, B: not OVERLONG_3, OVERLONG_4 */       \
        0x01, 0x01, 0x01, 0x01                      /* C..F: TOO_SHORT */

/* The tables' error in the 64-byte block at p[i] (or the padding after the input, f >= len)
 * starts at f: back up to the code point around f - 1 (not before lo, the boundary where the
 * vectors started) and finish with the automaton from there. Returns the kernel's verdict. */
int pw_utf8_lookup_resume(uint32_t *state, const uint8_t *p, size_t lo, size_t f, size_t len,
                          size_t *bad);

/* The start of a lookup kernel: a code point left unfinished by the previous feed is finished
 * with the automaton. Returns the offset of the first boundary (the vectors start there), or
 * SIZE_MAX when the verdict is already known (stored in *ret, with *state and *bad). */
size_t pw_utf8_lookup_enter(uint32_t *state, const uint8_t *p, size_t len, size_t *bad, int *ret);

#endif /* PYWS_UTF8_H */
