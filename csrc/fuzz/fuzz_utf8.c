/* libFuzzer harness: every UTF-8 kernel this CPU runs against the scalar automaton on the same
 * bytes, fed whole and in up to four pieces whose cut points come from the input. Any difference
 * in return value, offset of the first bad byte, state or partial code point aborts. Build and
 * run: make fuzz (needs clang).
 *
 * Input: byte 0 = number of cuts (low 2 bits) and a flag (bit 2) to run the text through twice
 * (so the vector blocks also see it at another alignment); then 2 bytes per cut (little-endian,
 * taken modulo the text length); the rest is the text. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pyws.h"

static const int kernels[] = {PYWS_IMPL_SSE2, PYWS_IMPL_SSE4,   PYWS_IMPL_AVX2,
                              PYWS_IMPL_AVX512, PYWS_IMPL_NEON, PYWS_IMPL_AUTO};

static int cmp_size(const void *a, const void *b)
{
    const size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

/* Feeds t[0..n) in the pieces ending at cuts[] (then n) to `impl` and to scalar; aborts on the
 * first difference. */
static void compare(int impl, const uint8_t *t, size_t n, const size_t *cuts, size_t ncuts)
{
    pyws_utf8 v, sv;
    size_t start = 0;

    pyws_utf8_init(&v);
    pyws_utf8_init(&sv);
    for (size_t c = 0; c <= ncuts; c++) {
        const size_t end = c < ncuts ? cuts[c] : n;
        const size_t len = end - start;
        /* each piece in its own block of exactly its size, so ASan sees a read past it */
        uint8_t *piece = malloc(len ? len : 1);
        size_t bad = 0, sbad = 0;
        int r, sr;

        if (piece == NULL)
            return;
        memcpy(piece, t + start, len);
        sr = pyws_utf8_feed_with(PYWS_IMPL_SCALAR, &sv, piece, len, &sbad);
        r = impl == PYWS_IMPL_AUTO ? pyws_utf8_feed(&v, piece, len, &bad)
                                   : pyws_utf8_feed_with(impl, &v, piece, len, &bad);
        free(piece);
        if (r != sr || v.state != sv.state || v.cp != sv.cp ||
            (r == PYWS_UTF8_INVALID && bad != sbad)) {
            fprintf(stderr,
                    "kernel %d differs from scalar on piece %zu..%zu of %zu: ret %d/%d bad "
                    "%zu/%zu state %u/%u cp %#x/%#x\n",
                    impl, start, end, n, r, sr, bad, sbad, (unsigned)v.state, (unsigned)sv.state,
                    (unsigned)v.cp, (unsigned)sv.cp);
            abort();
        }
        start = end;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t cuts[4], ncuts, n;
    const uint8_t *t;
    uint8_t *twice = NULL;

    if (size < 1)
        return 0;
    ncuts = data[0] & 3u;
    if (size < 1 + 2 * ncuts)
        return 0;
    t = data + 1 + 2 * ncuts;
    n = size - 1 - 2 * ncuts;
    if (data[0] & 4u) {
        twice = malloc(2 * n + 1);
        if (twice == NULL)
            return 0;
        memcpy(twice, t, n);
        twice[n] = 'x';
        memcpy(twice + n + 1, t, n);
        t = twice;
        n = 2 * n + 1;
    }
    for (size_t c = 0; c < ncuts; c++)
        cuts[c] = ((size_t)data[1 + 2 * c] | (size_t)data[2 + 2 * c] << 8) % (n + 1);
    qsort(cuts, ncuts, sizeof cuts[0], cmp_size);

    for (size_t k = 0; k < sizeof kernels / sizeof kernels[0]; k++) {
        if (!pyws_impl_available(kernels[k]))
            continue;
        compare(kernels[k], t, n, NULL, 0);
        if (ncuts > 0)
            compare(kernels[k], t, n, cuts, ncuts);
    }
    {
        /* the one-shot entry point agrees with a whole feed */
        pyws_utf8 sv;
        size_t sbad;
        pyws_utf8_init(&sv);
        const int whole = pyws_utf8_feed_with(PYWS_IMPL_SCALAR, &sv, t, n, &sbad);
        if (pyws_utf8_valid(t, n) != (whole == PYWS_UTF8_OK)) {
            fprintf(stderr, "pyws_utf8_valid differs from a whole scalar feed\n");
            abort();
        }
    }
    free(twice);
    return 0;
}
