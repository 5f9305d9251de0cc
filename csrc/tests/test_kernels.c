/*
 * test_kernels.c — the masking and UTF-8 kernels, every available implementation, checked
 * against naive references written here from the definitions (not from the kernels).
 *
 * Build and run (from the repository root):
 *   gcc -std=c11 -O1 -g -Wall -Wextra -fsanitize=address,undefined -Icsrc \
 *       csrc/mask*.c csrc/utf8*.c csrc/cpu.c csrc/tests/test_kernels.c -o /tmp/tk && /tmp/tk
 *   PYWS_FORCE_IMPL=scalar /tmp/tk      # the AUTO entry points on the portable kernels
 *
 * Every input is copied into a heap block of exactly its size, so the sanitizer catches a
 * kernel reading one byte too far. Prints "N passed, M failed"; exits 1 on any failure.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pyws.h"

#include "check.h"
#define RNG_SEED 0x9E3779B97F4A7C15ull
#include "rng.h"

static const int all_impls[] = {PYWS_IMPL_SCALAR, PYWS_IMPL_SSE2,   PYWS_IMPL_SSE4, PYWS_IMPL_AVX2,
                                PYWS_IMPL_AVX512, PYWS_IMPL_NEON, PYWS_IMPL_AUTO};
#define N_ALL_IMPLS (sizeof all_impls / sizeof all_impls[0])

static int impls[N_ALL_IMPLS]; /* the available ones */
static size_t n_impls;

static const char *impl_name(int impl)
{
    switch (impl) {
    case PYWS_IMPL_AUTO: return "auto";
    case PYWS_IMPL_SCALAR: return "scalar";
    case PYWS_IMPL_SSE2: return "sse2";
    case PYWS_IMPL_SSE4: return "sse4";
    case PYWS_IMPL_AVX2: return "avx2";
    case PYWS_IMPL_AVX512: return "avx512";
    case PYWS_IMPL_NEON: return "neon";
    default: return "?";
    }
}


/* ------------------------------------------------------------------------------------------- */
/* Kernel selection                                                                            */
/* ------------------------------------------------------------------------------------------- */

static void test_selection(void)
{
    int best = pyws_impl_best();
    uint8_t b[4] = {1, 2, 3, 4}, key[4] = {9, 9, 9, 9};
    pyws_utf8 v;
    size_t bad = 77;

    CHECK(pyws_impl_available(PYWS_IMPL_AUTO) == 1, "AUTO always available");
    CHECK(pyws_impl_available(PYWS_IMPL_SCALAR) == 1, "SCALAR always available");
    CHECK(pyws_impl_available(-2) == 0 && pyws_impl_available(6) == 0 &&
              pyws_impl_available(1000) == 0,
          "unknown kernels are unavailable");
    CHECK(best >= PYWS_IMPL_SCALAR && best <= PYWS_IMPL_AVX512 && pyws_impl_available(best),
          "best %d is a concrete available kernel", best);
    CHECK(pyws_impl_best() == best, "best is stable");
    {
        const char *force = getenv("PYWS_FORCE_IMPL");
        if (force != NULL && strcmp(force, "scalar") == 0)
            CHECK(best == PYWS_IMPL_SCALAR, "PYWS_FORCE_IMPL=scalar caps AUTO (got %d)", best);
    }
#if defined(__x86_64__)
    CHECK(pyws_impl_available(PYWS_IMPL_SSE2) == 1, "SSE2 is baseline on x86-64");
    CHECK(pyws_impl_available(PYWS_IMPL_NEON) == 0, "no NEON on x86");
#endif
#if defined(__aarch64__)
    CHECK(pyws_impl_available(PYWS_IMPL_NEON) == 1, "NEON is baseline on arm64");
    CHECK(!pyws_impl_available(PYWS_IMPL_SSE2) && !pyws_impl_available(PYWS_IMPL_AVX2) &&
              !pyws_impl_available(PYWS_IMPL_SSE4) && !pyws_impl_available(PYWS_IMPL_AVX512),
          "no x86 kernels on arm64");
#endif

    for (size_t k = 0; k < N_ALL_IMPLS; k++) {
        int impl = all_impls[k];
        if (pyws_impl_available(impl))
            continue;
        CHECK(pyws_mask_with(impl, b, 4, key, 0) == (size_t)PYWS_ERR_UNSUPPORTED,
              "mask_with(%s) unsupported", impl_name(impl));
        CHECK(b[0] == 1 && b[3] == 4, "an unsupported mask_with leaves the buffer alone");
        pyws_utf8_init(&v);
        CHECK(pyws_utf8_feed_with(impl, &v, b, 4, &bad) == PYWS_ERR_UNSUPPORTED,
              "utf8_feed_with(%s) unsupported", impl_name(impl));
    }
    CHECK(pyws_mask_with(7, b, 4, key, 0) == (size_t)PYWS_ERR_UNSUPPORTED, "mask_with(7)");
    CHECK(pyws_mask_with(-3, b, 4, key, 0) == (size_t)PYWS_ERR_UNSUPPORTED, "mask_with(-3)");
    pyws_utf8_init(&v);
    CHECK(pyws_utf8_feed_with(7, &v, b, 4, &bad) == PYWS_ERR_UNSUPPORTED, "feed_with(7)");

    printf("kernels:");
    for (size_t k = 0; k < N_ALL_IMPLS; k++) {
        if (pyws_impl_available(all_impls[k])) {
            impls[n_impls++] = all_impls[k];
            printf(" %s", impl_name(all_impls[k]));
        }
    }
    printf(" (auto = %s)\n", impl_name(best));
}

/* ------------------------------------------------------------------------------------------- */
/* Masking                                                                                     */
/* ------------------------------------------------------------------------------------------- */

static void naive_mask(uint8_t *buf, size_t len, const uint8_t *key, size_t phase)
{
    for (size_t i = 0; i < len; i++)
        buf[i] ^= key[(phase + i) & 3];
}

#define GUARD 40
#define GUARD_BYTE 0xA5

/*
 * Mask src[0..len) placed at `align` bytes past a 64-byte boundary, at once and in two pieces
 * split at `split` (the second piece starting at the returned phase), with `impl`; compare with
 * the naive loop and check the bytes around the buffer are untouched.
 */
static void mask_case(int impl, const uint8_t *src, size_t len, size_t align, size_t phase,
                      const uint8_t *key, size_t split, uint8_t *expect)
{
    const size_t total = (align + len + GUARD + 63) / 64 * 64;
    uint8_t *block = aligned_alloc(64, total);
    uint8_t *buf;
    size_t r, ok;

    if (block == NULL) {
        printf("out of memory\n");
        exit(2);
    }
    buf = block + align;
    memcpy(expect, src, len);
    naive_mask(expect, len, key, phase);

    for (int pass = 0; pass < 2; pass++) {
        memset(block, GUARD_BYTE, total);
        memcpy(buf, src, len);
        if (pass == 0) {
            r = pyws_mask_with(impl, buf, len, key, phase);
        } else {
            r = pyws_mask_with(impl, buf, split, key, phase);
            CHECK(r == ((phase + split) & 3), "%s split phase", impl_name(impl));
            r = pyws_mask_with(impl, buf + split, len - split, key, r);
        }
        CHECK(r == ((phase + len) & 3), "%s len %zu phase %zu: returned %zu", impl_name(impl), len,
              phase, r);
        ok = memcmp(buf, expect, len) == 0;
        for (size_t i = 0; i < align; i++)
            ok &= block[i] == GUARD_BYTE;
        for (size_t i = align + len; i < total; i++)
            ok &= block[i] == GUARD_BYTE;
        CHECK(ok, "%s len %zu align %zu phase %zu split %zu (pass %d): wrong bytes",
              impl_name(impl), len, align, phase, split, pass);
        if (len == 0)
            break;
    }
    free(block);
}

static void test_mask(void)
{
    const size_t big = (1u << 20) + 3;
    uint8_t *src = xmalloc(big), *expect = xmalloc(big);
    uint8_t key[4];

    for (size_t i = 0; i < big; i++)
        src[i] = (uint8_t)rnd();

    for (size_t k = 0; k < n_impls; k++) {
        const int impl = impls[k];
        for (size_t len = 0; len <= 300; len++) {
            for (size_t align = 0; align < 32; align++) {
                for (size_t phase = 0; phase < 4; phase++) {
                    uint64_t r = rnd();
                    memcpy(key, &r, 4);
                    size_t split;
                    if (len == 0)
                        split = 0;
                    else if (align < 2 && len <= 70)
                        split = (len * 7 + align + phase) % (len + 1); /* varies with the case */
                    else
                        split = rnd_below(len + 1);
                    mask_case(impl, src, len, align, phase, key, split, expect);
                }
            }
        }
        /* every split point of a few lengths around the vector sizes */
        for (size_t len = 60; len <= 140; len += 20) {
            for (size_t split = 0; split <= len; split++) {
                memcpy(key, "\x11\x22\x33\x44", 4);
                mask_case(impl, src, len, split % 32, split % 4, key, split, expect);
            }
        }
        /* large buffers */
        const size_t sizes[] = {4096, 4099, big};
        const size_t aligns[] = {0, 1, 3, 31};
        for (size_t s = 0; s < 3; s++) {
            for (size_t a = 0; a < 4; a++) {
                for (size_t phase = 0; phase < 4; phase++) {
                    memcpy(key, "\xde\xad\xbe\xef", 4);
                    mask_case(impl, src, sizes[s], aligns[a], phase, key,
                              phase == 0 ? sizes[s] / 2 + 1 : rnd_below(sizes[s] + 1), expect);
                }
            }
        }
        /* phase is taken mod 4; a zero-length call never touches the key */
        {
            uint8_t x[9], y[9];
            memcpy(key, "\x01\x02\x04\x08", 4);
            memcpy(x, src, 9);
            memcpy(y, src, 9);
            size_t r = pyws_mask_with(impl, x, 9, key, 6);
            naive_mask(y, 9, key, 2);
            CHECK(r == ((6 + 9) & 3) && memcmp(x, y, 9) == 0, "%s phase 6 == phase 2",
                  impl_name(impl));
            CHECK(pyws_mask_with(impl, NULL, 0, NULL, 3) == 3, "%s empty buffer",
                  impl_name(impl));
        }
    }
    /* the plain entry point */
    {
        uint8_t x[77], y[77];
        memcpy(key, "\x5a\xa5\x0f\xf0", 4);
        memcpy(x, src, 77);
        memcpy(y, src, 77);
        size_t r = pyws_mask(x, 77, key, 1);
        naive_mask(y, 77, key, 1);
        CHECK(r == 2 && memcmp(x, y, 77) == 0, "pyws_mask");
    }
    free(src);
    free(expect);
}

/* ------------------------------------------------------------------------------------------- */
/* UTF-8: a reference written from the definition                                              */
/* ------------------------------------------------------------------------------------------- */

/*
 * Could a sequence of `total` bytes whose first `have` bytes decode to the bits `bits` still be
 * valid? Its value lies in [bits << 6r, bits << 6r | (2^6r - 1)] with r bytes to go; it must
 * reach the smallest value that needs `total` bytes, stay <= U+10FFFF and not be only
 * surrogates.
 */
static int completable(uint32_t bits, int have, int total)
{
    static const uint32_t min_of_len[5] = {0, 0, 0x80, 0x800, 0x10000};
    const int r = total - have;
    uint32_t lo = bits << (6 * r), hi = lo | ((1u << (6 * r)) - 1);

    if (lo < min_of_len[total])
        lo = min_of_len[total];
    if (hi > 0x10FFFF)
        hi = 0x10FFFF;
    if (lo > hi)
        return 0;
    if (lo >= 0xD800 && hi <= 0xDFFF)
        return 0;
    return 1;
}

#define NO_BAD ((size_t)-1)

/*
 * Validate d[0..n). st[L] (L = 0..n) is the verdict for the prefix of length L; cps[L] the
 * partial code point bits when that verdict is PARTIAL. Returns the position of the first byte
 * that no valid text could have there, or NO_BAD.
 */
static size_t ref_utf8(const uint8_t *d, size_t n, uint8_t *st, uint32_t *cps)
{
    size_t i = 0, bad = NO_BAD;

    st[0] = PYWS_UTF8_OK;
    cps[0] = 0;
    while (i < n && bad == NO_BAD) {
        const unsigned b = d[i];
        int total;
        uint32_t bits;

        if (b < 0x80) {
            st[i + 1] = PYWS_UTF8_OK;
            cps[i + 1] = 0;
            i++;
            continue;
        }
        total = b >= 0xC0 && b < 0xE0   ? 2
                : b >= 0xE0 && b < 0xF0 ? 3
                : b >= 0xF0 && b < 0xF8 ? 4
                                        : 0;
        if (total == 0) {
            bad = i;
            break;
        }
        bits = b & (0x7Fu >> total);
        if (!completable(bits, 1, total)) {
            bad = i;
            break;
        }
        for (int k = 1; k < total; k++) {
            st[i + k] = PYWS_UTF8_PARTIAL;
            cps[i + k] = bits;
            if (i + k == n)
                return NO_BAD;
            const unsigned c = d[i + k];
            if ((c & 0xC0) != 0x80) {
                bad = i + k;
                break;
            }
            bits = bits << 6 | (c & 0x3F);
            if (!completable(bits, k + 1, total)) {
                bad = i + k;
                break;
            }
        }
        if (bad != NO_BAD)
            break;
        i += (size_t)total;
        st[i] = PYWS_UTF8_OK;
        cps[i] = 0;
    }
    if (bad != NO_BAD) {
        for (size_t l = bad + 1; l <= n; l++) {
            st[l] = PYWS_UTF8_INVALID;
            cps[l] = 0;
        }
    }
    return bad;
}

/* ------------------------------------------------------------------------------------------- */
/* UTF-8: feeding in pieces                                                                    */
/* ------------------------------------------------------------------------------------------- */

typedef struct outcome {
    int ret;          /* the last feed's return */
    size_t bad;       /* absolute position of the first bad byte, or NO_BAD */
    uint32_t state, cp;
} outcome;

/*
 * Feed d[0..n) to `impl` in the pieces ending at cuts[0..ncuts) (the last cut is n), each piece
 * in its own exact-size heap block. After every feed, check the return, bad offset and partial
 * code point against the reference, and the whole validator against the scalar kernel fed the
 * same pieces. Stops after the first INVALID (after checking that one more feed stays INVALID).
 */
static outcome feed_pieces(int impl, const uint8_t *d, size_t n, const size_t *cuts, size_t ncuts,
                           const uint8_t *st, const uint32_t *cps, size_t ref_bad, const char *what)
{
    pyws_utf8 v, sv;
    outcome o = {PYWS_UTF8_OK, NO_BAD, 0, 0};
    size_t start = 0;
    int failed_before = 0;

    if (ncuts > 0 && cuts[ncuts - 1] != n) {
        printf("test bug: the last cut must be n\n");
        exit(2);
    }
    pyws_utf8_init(&v);
    pyws_utf8_init(&sv);
    for (size_t c = 0; c < ncuts; c++) {
        const size_t end = cuts[c], plen = end - start;
        uint8_t *piece = xmalloc(plen);
        size_t bad = 12345, sbad = 54321;
        int r, sr;

        memcpy(piece, d + start, plen);
        r = pyws_utf8_feed_with(impl, &v, piece, plen, &bad);
        sr = pyws_utf8_feed_with(PYWS_IMPL_SCALAR, &sv, piece, plen, &sbad);
        free(piece);

        if (failed_before) {
            CHECK(r == PYWS_UTF8_INVALID && bad == 0 && v.state == sv.state,
                  "%s [%s]: a failed validator stays failed (ret %d, bad %zu)", impl_name(impl),
                  what, r, bad);
            break;
        }
        o.ret = r;
        o.state = v.state;
        o.cp = v.cp;
        if (ref_bad != NO_BAD && ref_bad < end) {
            CHECK(r == PYWS_UTF8_INVALID && bad == ref_bad - start,
                  "%s [%s] piece %zu..%zu: want INVALID at %zu, got ret %d bad %zu+%zu",
                  impl_name(impl), what, start, end, ref_bad, r, start,
                  r == PYWS_UTF8_INVALID ? bad : 0);
            o.bad = r == PYWS_UTF8_INVALID ? start + bad : NO_BAD;
            failed_before = 1;
        } else {
            CHECK(r == st[end], "%s [%s] piece %zu..%zu: want %d got %d", impl_name(impl), what,
                  start, end, st[end], r);
            CHECK(r != PYWS_UTF8_PARTIAL || v.cp == cps[end],
                  "%s [%s] piece %zu..%zu: partial cp %#x, want %#x", impl_name(impl), what,
                  start, end, (unsigned)v.cp, (unsigned)cps[end]);
            CHECK((v.state == 0) == (r == PYWS_UTF8_OK), "%s [%s]: state 0 iff OK",
                  impl_name(impl), what);
        }
        CHECK(r == sr && v.state == sv.state && v.cp == sv.cp &&
                  (r != PYWS_UTF8_INVALID || bad == sbad),
              "%s [%s] piece %zu..%zu: differs from scalar (ret %d/%d state %u/%u cp %#x/%#x)",
              impl_name(impl), what, start, end, r, sr, (unsigned)v.state, (unsigned)sv.state,
              (unsigned)v.cp, (unsigned)sv.cp);
        start = end;
        if (failed_before && c + 1 == ncuts) {
            /* no bytes left: feed an empty piece to check the failure is sticky */
            r = pyws_utf8_feed_with(impl, &v, NULL, 0, &bad);
            CHECK(r == PYWS_UTF8_INVALID && bad == 0, "%s [%s]: sticky INVALID on empty feed",
                  impl_name(impl), what);
        }
    }
    return o;
}

/* Every way to feed d[0..n) that the brief asks for, for every kernel. */
static void utf8_all_splits(const uint8_t *d, size_t n, int want_ret, size_t want_bad,
                            const char *what)
{
    uint8_t *st = xmalloc(n + 1);
    uint32_t *cps = xmalloc((n + 1) * sizeof *cps);
    size_t *cuts = xmalloc((n + 2) * sizeof *cuts);
    const size_t ref_bad = ref_utf8(d, n, st, cps);
    const int ref_ret = ref_bad != NO_BAD ? PYWS_UTF8_INVALID : st[n];

    /* the table's expectation, the reference and the kernels must all agree */
    CHECK(ref_ret == want_ret && ref_bad == want_bad,
          "reference [%s]: ret %d bad %zu, table says %d %zu", what, ref_ret, ref_bad, want_ret,
          want_bad);

    for (size_t k = 0; k < n_impls; k++) {
        const int impl = impls[k];
        outcome whole, o;

        cuts[0] = n;
        whole = feed_pieces(impl, d, n, cuts, 1, st, cps, ref_bad, what);
        CHECK(whole.ret == want_ret && whole.bad == want_bad,
              "%s [%s] at once: ret %d bad %zu, want %d %zu", impl_name(impl), what, whole.ret,
              whole.bad, want_ret, want_bad);
        for (size_t split = 0; split <= n; split++) {
            cuts[0] = split;
            cuts[1] = n;
            o = feed_pieces(impl, d, n, cuts, 2, st, cps, ref_bad, what);
            CHECK(o.ret == whole.ret && o.bad == whole.bad && o.state == whole.state &&
                      o.cp == whole.cp,
                  "%s [%s] split at %zu: differs from at once", impl_name(impl), what, split);
        }
        for (size_t i = 0; i < n; i++)
            cuts[i] = i + 1;
        o = feed_pieces(impl, d, n, cuts, n, st, cps, ref_bad, what);
        CHECK(n == 0 || (o.ret == whole.ret && o.bad == whole.bad && o.state == whole.state &&
                         o.cp == whole.cp),
              "%s [%s] byte by byte: differs from at once", impl_name(impl), what);
    }
    if (want_ret != PYWS_UTF8_INVALID) {
        uint8_t *copy = xmalloc(n);
        memcpy(copy, d, n);
        CHECK(pyws_utf8_valid(copy, n) == (want_ret == PYWS_UTF8_OK), "pyws_utf8_valid [%s]",
              what);
        free(copy);
    }
    free(st);
    free(cps);
    free(cuts);
}

typedef struct sample {
    const char *name;
    const char *bytes;
    size_t len;
    int ret;
    size_t bad;
} sample;

#define OK_(name, lit) {name, lit, sizeof(lit) - 1, PYWS_UTF8_OK, NO_BAD}
#define PARTIAL_(name, lit) {name, lit, sizeof(lit) - 1, PYWS_UTF8_PARTIAL, NO_BAD}
#define BAD_(name, lit, at) {name, lit, sizeof(lit) - 1, PYWS_UTF8_INVALID, at}

static const sample samples[] = {
    OK_("empty", ""),
    OK_("NUL", "\x00"),
    OK_("DEL", "\x7F"),
    OK_("ascii", "Hello, WebSocket!"),
    OK_("U+0080", "\xC2\x80"),
    OK_("U+07FF", "\xDF\xBF"),
    OK_("U+00E9", "\xC3\xA9"),
    OK_("U+0800", "\xE0\xA0\x80"),
    OK_("U+0FFF", "\xE0\xBF\xBF"),
    OK_("U+1000", "\xE1\x80\x80"),
    OK_("U+20AC", "\xE2\x82\xAC"),
    OK_("U+D7FF", "\xED\x9F\xBF"),
    OK_("U+E000", "\xEE\x80\x80"),
    OK_("U+FFFD", "\xEF\xBF\xBD"),
    OK_("U+FFFF", "\xEF\xBF\xBF"),
    OK_("U+10000", "\xF0\x90\x80\x80"),
    OK_("U+1F600", "\xF0\x9F\x98\x80"),
    OK_("U+40000", "\xF1\x80\x80\x80"),
    OK_("U+FFFFF", "\xF3\xBF\xBF\xBF"),
    OK_("U+100000", "\xF4\x80\x80\x80"),
    OK_("U+10FFFF", "\xF4\x8F\xBF\xBF"),
    OK_("mixed", "a\xC3\xA9" "b\xE2\x82\xAC" "c\xF0\x9F\x98\x80" "d\xF4\x8F\xBF\xBF"),
    OK_("greek", "\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5"),
    BAD_("overlong 2 C0 80", "\xC0\x80", 0),
    BAD_("overlong 2 C1 BF", "\xC1\xBF", 0),
    BAD_("lone C0", "\xC0", 0),
    BAD_("lone C1", "\xC1", 0),
    BAD_("overlong 3 E0 80 80", "\xE0\x80\x80", 1),
    BAD_("overlong 3 E0 9F BF", "\xE0\x9F\xBF", 1),
    BAD_("overlong 4 F0 80 80 80", "\xF0\x80\x80\x80", 1),
    BAD_("overlong 4 F0 8F BF BF", "\xF0\x8F\xBF\xBF", 1),
    BAD_("surrogate D800", "\xED\xA0\x80", 1),
    BAD_("surrogate DBFF", "\xED\xAF\xBF", 1),
    BAD_("surrogate DC00", "\xED\xB0\x80", 1),
    BAD_("surrogate DFFF", "\xED\xBF\xBF", 1),
    BAD_("surrogate pair", "\xED\xA0\xBD\xED\xB8\x80", 1),
    BAD_("U+110000 F4 90", "\xF4\x90\x80\x80", 1),
    BAD_("F4 BF", "\xF4\xBF\xBF\xBF", 1),
    BAD_("F5", "\xF5\x80\x80\x80", 0),
    BAD_("F7", "\xF7\xBF\xBF\xBF", 0),
    BAD_("F8 (5-byte)", "\xF8\x88\x80\x80\x80", 0),
    BAD_("FC (6-byte)", "\xFC\x84\x80\x80\x80\x80", 0),
    BAD_("FE", "\xFE", 0),
    BAD_("FF", "\xFF", 0),
    BAD_("lone 80", "\x80", 0),
    BAD_("lone BF", "\xBF", 0),
    BAD_("ascii then 80", "abc\x80", 3),
    BAD_("extra continuation", "\xC3\xA9\xA9", 2),
    BAD_("extra continuation 4", "\xF0\x9F\x98\x80\x80", 4),
    BAD_("2-byte then ascii", "\xC3" "A", 1),
    BAD_("3-byte cut after 1", "\xE2" "A", 1),
    BAD_("3-byte cut after 2", "\xE2\x82" "A", 2),
    BAD_("4-byte cut after 3", "\xF0\x9F\x98" "A", 3),
    BAD_("cut then lead", "\xC3\xC3\xA9", 1),
    BAD_("cut then invalid", "\xE0\xA0\xC0", 2),
    BAD_("valid then bad", "\xE2\x82\xAC\xED\xA0\x80", 4),
    PARTIAL_("cut 2 of 2", "\xC3"),
    PARTIAL_("cut 1 of 3", "\xE2"),
    PARTIAL_("cut 2 of 3", "\xE2\x82"),
    PARTIAL_("cut E0 A0", "\xE0\xA0"),
    PARTIAL_("cut ED 9F", "\xED\x9F"),
    PARTIAL_("cut 1 of 4", "\xF0"),
    PARTIAL_("cut 2 of 4", "\xF0\x9F"),
    PARTIAL_("cut 3 of 4", "\xF0\x9F\x98"),
    PARTIAL_("cut F4 8F BF", "\xF4\x8F\xBF"),
    PARTIAL_("ascii then cut", "abc\xE2\x82"),
};

/*
 * Each sample alone, after ASCII of several lengths (so the vector paths reach it at every
 * offset around a block), and followed by ASCII (which turns PARTIAL into INVALID at the first
 * ASCII byte).
 */
static void test_utf8_samples(void)
{
    static const size_t pre[] = {0, 1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 130};
    static const size_t post[] = {0, 1, 70};
    uint8_t buf[512];
    char what[128];

    for (size_t s = 0; s < sizeof samples / sizeof samples[0]; s++) {
        const sample *sm = &samples[s];
        for (size_t a = 0; a < sizeof pre / sizeof pre[0]; a++) {
            for (size_t b = 0; b < sizeof post / sizeof post[0]; b++) {
                const size_t n = pre[a] + sm->len + post[b];
                int ret = sm->ret;
                size_t bad = sm->bad == NO_BAD ? NO_BAD : pre[a] + sm->bad;

                for (size_t i = 0; i < pre[a]; i++)
                    buf[i] = (uint8_t)('a' + i % 26);
                memcpy(buf + pre[a], sm->bytes, sm->len);
                for (size_t i = 0; i < post[b]; i++)
                    buf[pre[a] + sm->len + i] = (uint8_t)('0' + i % 10);
                if (ret == PYWS_UTF8_PARTIAL && post[b] > 0) {
                    ret = PYWS_UTF8_INVALID;
                    bad = pre[a] + sm->len;
                }
                snprintf(what, sizeof what, "%s, %zu before, %zu after", sm->name, pre[a],
                         post[b]);
                utf8_all_splits(buf, n, ret, bad, what);
            }
        }
    }
}

/* Every pair of first two bytes, followed by one or two bytes of every class, against the
 * reference: 3 bytes at once, 4 bytes at once and as 2 + 2. */
static void test_utf8_exhaustive_short(void)
{
    uint8_t st[5];
    uint32_t cps[5];
    uint8_t d[4];

    for (size_t k = 0; k < n_impls; k++) {
        const int impl = impls[k];
        unsigned long mismatches = 0;
        /* every first and second byte, with a third byte from each class */
        static const uint8_t thirds[] = {0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF,
                                         0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xE1, 0xED, 0xEE, 0xF0,
                                         0xF1, 0xF4, 0xF5, 0xFF};
        for (uint32_t x = 0; x < (1u << 16) * sizeof thirds; x++) {
            d[0] = (uint8_t)(x >> 8);
            d[1] = (uint8_t)x;
            d[2] = thirds[x >> 16];
            const size_t rb = ref_utf8(d, 3, st, cps);
            pyws_utf8 v;
            size_t bad = 0;
            int r;
            pyws_utf8_init(&v);
            r = pyws_utf8_feed_with(impl, &v, d, 3, &bad);
            if (rb != NO_BAD ? (r != PYWS_UTF8_INVALID || bad != rb)
                             : (r != st[3] || (r == PYWS_UTF8_PARTIAL && v.cp != cps[3])))
                mismatches++;
        }
        CHECK(mismatches == 0, "%s: %lu of the 3-byte strings differ from the reference",
              impl_name(impl), mismatches);

        mismatches = 0;
        for (uint32_t x = 0; x < (1u << 16); x++) {
            /* every 4-byte string whose last two bytes are one of a few interesting values */
            static const uint8_t tails[][2] = {{0x80, 0x80}, {0xBF, 0xBF}, {0x41, 0x80},
                                               {0x80, 0x41}, {0x8F, 0xC2}};
            for (size_t t = 0; t < 5; t++) {
                d[0] = (uint8_t)(x >> 8);
                d[1] = (uint8_t)x;
                d[2] = tails[t][0];
                d[3] = tails[t][1];
                const size_t rb = ref_utf8(d, 4, st, cps);
                pyws_utf8 v;
                size_t bad = 0;
                int r;
                pyws_utf8_init(&v);
                r = pyws_utf8_feed_with(impl, &v, d, 4, &bad);
                if (rb != NO_BAD ? (r != PYWS_UTF8_INVALID || bad != rb) : r != st[4])
                    mismatches++;
                /* and in two pieces 2 + 2 */
                pyws_utf8_init(&v);
                r = pyws_utf8_feed_with(impl, &v, d, 2, &bad);
                if (r != PYWS_UTF8_INVALID)
                    r = pyws_utf8_feed_with(impl, &v, d + 2, 2, &bad), bad += 2;
                if (rb != NO_BAD ? (r != PYWS_UTF8_INVALID || bad != rb) : r != st[4])
                    mismatches++;
            }
        }
        CHECK(mismatches == 0, "%s: %lu of the 4-byte strings differ from the reference",
              impl_name(impl), mismatches);
    }
}

/* A failed validator stays failed; a state no kernel produces is treated as failed. */
static void test_utf8_misc(void)
{
    pyws_utf8 v;
    size_t bad = 99;
    const uint8_t ok[] = "fine", badb[] = "\xC0\x80";

    pyws_utf8_init(&v);
    CHECK(pyws_utf8_feed(&v, badb, 2, &bad) == PYWS_UTF8_INVALID && bad == 0, "C0 80");
    CHECK(pyws_utf8_feed(&v, ok, 4, &bad) == PYWS_UTF8_INVALID && bad == 0, "sticky");
    CHECK(pyws_utf8_feed(&v, ok, 4, NULL) == PYWS_UTF8_INVALID, "bad_offset may be NULL");
    pyws_utf8_init(&v);
    CHECK(pyws_utf8_feed(&v, ok, 4, &bad) == PYWS_UTF8_OK, "init resets");
    CHECK(pyws_utf8_feed(&v, NULL, 0, &bad) == PYWS_UTF8_OK, "empty feed");
    CHECK(pyws_utf8_feed(&v, (const uint8_t *)"\xE2", 1, NULL) == PYWS_UTF8_PARTIAL &&
              v.cp == 0x2,
          "partial cp after E2");
    CHECK(pyws_utf8_feed(&v, NULL, 0, &bad) == PYWS_UTF8_PARTIAL, "empty feed keeps PARTIAL");
    CHECK(pyws_utf8_feed(&v, (const uint8_t *)"\x82", 1, NULL) == PYWS_UTF8_PARTIAL &&
              v.cp == 0x82,
          "partial cp after E2 82 (%#x)", (unsigned)v.cp);
    CHECK(pyws_utf8_feed(&v, (const uint8_t *)"\xAC", 1, NULL) == PYWS_UTF8_OK && v.cp == 0 &&
              v.state == 0,
          "E2 82 AC completes");
    /* every state but 0 is inside a sequence (so ASCII is rejected), failed, or garbage */
    for (uint32_t s = 1; s < 300; s++) {
        pyws_utf8_init(&v);
        v.state = s;
        bad = 99;
        int r = pyws_utf8_feed(&v, ok, 4, &bad);
        CHECK(r == PYWS_UTF8_INVALID && bad == 0, "state %u: %d at %zu", (unsigned)s, r, bad);
    }
    v.state = 0xFFFFFFF0u;
    CHECK(pyws_utf8_feed(&v, ok, 4, &bad) == PYWS_UTF8_INVALID, "garbage state");
    CHECK(pyws_utf8_valid((const uint8_t *)"", 0) == 1, "valid(empty)");
    CHECK(pyws_utf8_valid(ok, 4) == 1, "valid(ascii)");
    CHECK(pyws_utf8_valid((const uint8_t *)"\xE2\x82", 2) == 0, "valid(partial) is 0");
    CHECK(pyws_utf8_valid(badb, 2) == 0, "valid(C0 80) is 0");
}

/* ------------------------------------------------------------------------------------------- */
/* UTF-8: random text                                                                          */
/* ------------------------------------------------------------------------------------------- */

static size_t put_cp(uint8_t *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (uint8_t)(0xC0 | cp >> 6);
        o[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (uint8_t)(0xE0 | cp >> 12);
        o[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (uint8_t)(0xF0 | cp >> 18);
    o[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
    o[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

static uint32_t random_scalar_value(void)
{
    static const uint32_t edges[] = {0x80, 0x7FF, 0x800, 0xFFF, 0x1000, 0xD7FF, 0xE000, 0xFFFD,
                                     0xFFFF, 0x10000, 0x3FFFF, 0x40000, 0xFFFFF, 0x100000,
                                     0x10FFFF};
    uint32_t cp;
    switch (rnd_below(5)) {
    case 0: return edges[rnd_below(sizeof edges / sizeof edges[0])];
    case 1: return 0x80 + (uint32_t)rnd_below(0x800 - 0x80);
    case 2: return 0x10000 + (uint32_t)rnd_below(0x110000 - 0x10000);
    default:
        do
            cp = 0x800 + (uint32_t)rnd_below(0x10000 - 0x800);
        while (cp >= 0xD800 && cp <= 0xDFFF);
        return cp;
    }
}

/* Something invalid: a stray byte, an overlong form, a surrogate, > U+10FFFF, a cut sequence. */
static size_t put_invalid(uint8_t *o)
{
    uint32_t cp;
    size_t n;
    switch (rnd_below(7)) {
    case 0: /* any byte that cannot start a character */
        o[0] = (uint8_t)(0x80 + rnd_below(0x80));
        return 1;
    case 1: /* overlong */
        cp = (uint32_t)rnd_below(0x800);
        if (cp < 0x80) {
            o[0] = (uint8_t)(0xC0 | cp >> 6);
            o[1] = (uint8_t)(0x80 | (cp & 0x3F));
            return 2;
        }
        o[0] = 0xE0;
        o[1] = (uint8_t)(0x80 | cp >> 6);
        o[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    case 2: /* overlong 4-byte */
        cp = (uint32_t)rnd_below(0x10000);
        o[0] = 0xF0;
        o[1] = (uint8_t)(0x80 | cp >> 12);
        o[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
        o[3] = (uint8_t)(0x80 | (cp & 0x3F));
        return 4;
    case 3: /* surrogate */
        cp = 0xD800 + (uint32_t)rnd_below(0x800);
        o[0] = 0xED;
        o[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    case 4: /* above U+10FFFF */
        cp = 0x110000 + (uint32_t)rnd_below(0x1FFFFF - 0x110000);
        o[0] = (uint8_t)(0xF0 | cp >> 18);
        o[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F));
        o[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
        o[3] = (uint8_t)(0x80 | (cp & 0x3F));
        return 4;
    default: /* a valid multi-byte character with its end cut off */
        n = put_cp(o, random_scalar_value());
        return 1 + rnd_below(n - 1);
    }
}

static size_t random_text(uint8_t *o, size_t cap)
{
    static const unsigned bad_per_mille[] = {0, 0, 0, 1, 5, 50, 300};
    static const unsigned multi_percent[] = {0, 1, 5, 30, 90, 100};
    const unsigned bad_rate = bad_per_mille[rnd_below(7)];
    const unsigned multi = multi_percent[rnd_below(6)];
    const size_t target = rnd_below(cap - 8);
    size_t n = 0;

    while (n < target) {
        if (rnd_below(1000) < bad_rate) {
            n += put_invalid(o + n);
        } else if (rnd_below(100) < multi) {
            n += put_cp(o + n, random_scalar_value());
        } else {
            /* a run of ASCII, sometimes long enough for several vector blocks */
            size_t run = rnd_below(4) == 0 ? rnd_below(200) : rnd_below(12);
            if (run > cap - 8 - n)
                run = cap - 8 - n;
            for (size_t i = 0; i < run; i++)
                o[n + i] = (uint8_t)(rnd_below(0x80));
            n += run;
        }
    }
    return n;
}

static int cmp_size(const void *a, const void *b)
{
    const size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

static void test_utf8_random(void)
{
    enum { CAP = 2000 + 8, ROUNDS = 4000 };
    uint8_t *d = xmalloc(CAP);
    uint8_t *st = xmalloc(CAP + 1);
    uint32_t *cps = xmalloc((CAP + 1) * sizeof *cps);
    size_t *cuts = xmalloc((CAP + 1) * sizeof *cuts);
    char what[64];

    for (unsigned round = 0; round < ROUNDS; round++) {
        const size_t n = random_text(d, CAP);
        const size_t ref_bad = ref_utf8(d, n, st, cps);
        const int ref_ret = ref_bad != NO_BAD ? PYWS_UTF8_INVALID : st[n];
        size_t ncuts;

        /* 1 to 6 pieces at random points, or byte by byte now and then */
        if (n > 0 && n < 300 && rnd_below(10) == 0) {
            for (size_t i = 0; i < n; i++)
                cuts[i] = i + 1;
            ncuts = n;
        } else {
            ncuts = 1 + rnd_below(6);
            for (size_t c = 0; c + 1 < ncuts; c++)
                cuts[c] = rnd_below(n + 1);
            cuts[ncuts - 1] = n;
            qsort(cuts, ncuts, sizeof cuts[0], cmp_size);
        }
        snprintf(what, sizeof what, "random #%u, %zu bytes, %zu pieces", round, n, ncuts);
        for (size_t k = 0; k < n_impls; k++) {
            outcome o = feed_pieces(impls[k], d, n, cuts, ncuts, st, cps, ref_bad, what);
            CHECK(o.ret == ref_ret && o.bad == ref_bad, "%s [%s]: ret %d bad %zu, want %d %zu",
                  impl_name(impls[k]), what, o.ret, o.bad, ref_ret, ref_bad);
        }
    }
    free(d);
    free(st);
    free(cps);
    free(cuts);
}

int main(void)
{
    test_selection();
    test_mask();
    test_utf8_samples();
    test_utf8_exhaustive_short();
    test_utf8_misc();
    test_utf8_random();
    printf("%lu passed, %lu failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
