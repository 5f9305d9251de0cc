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
 * Every kernel gives exactly the same answers; the SIMD ones only skip ASCII faster. *state must
 * be a valid, non-BAD state (the dispatch in utf8.c checks). Kernels never read outside p[0..len).
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

#endif /* PYWS_UTF8_H */
