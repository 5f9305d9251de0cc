/*
 * test_utf8_simd.c — every vector UTF-8 kernel this CPU runs against the scalar automaton, fed
 * the same pieces: same return, same offset of the first bad byte, same state and partial code
 * point after every feed.
 *
 * The lookup-table kernels (sse4, avx2, avx512, neon) work in 64-byte blocks, carry the last
 * bytes of a block into the next, pad the last partial block with zeros and hand the edges to
 * the automaton, so what is tested is every place an error or an unfinished code point can sit
 * relative to those blocks and to the feed boundaries:
 *   - every class of invalid input (overlong 2/3/4-byte forms, surrogates, above U+10FFFF,
 *     stray continuations, 5- and 6-byte leads, C0, C1, F5..FF, sequences cut by an ASCII byte,
 *     by another lead, or by the end of the input) at every offset 0..191 of ASCII and of
 *     mixed-script text, followed by 0..67 more bytes, each fed whole and split around the error
 *     and around the 64-byte block edges;
 *   - random valid mixed-script text (Latin, Cyrillic, CJK, emoji) up to 3 KiB fed in random
 *     pieces, and the same with one byte changed.
 * Every piece sits in its own heap block of exactly its size, so ASan catches a read past it.
 *
 * `test_utf8_simd --impls` prints the PYWS_FORCE_IMPL names of the kernels this CPU runs (the
 * Makefile runs every C test once per name).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pyws.h"

#include "check.h"
#define RNG_SEED 0xD1B54A32D192ED03ull
#include "rng.h"

static const struct {
    int impl;
    const char *name;
} kernels[] = {
    {PYWS_IMPL_SCALAR, "scalar"}, {PYWS_IMPL_SSE2, "sse2"},     {PYWS_IMPL_SSE4, "sse4"},
    {PYWS_IMPL_AVX2, "avx2"},     {PYWS_IMPL_AVX512, "avx512"}, {PYWS_IMPL_NEON, "neon"},
};
#define N_KERNELS (sizeof kernels / sizeof kernels[0])

static int impls[N_KERNELS + 1]; /* the available ones but scalar, and AUTO (pyws_utf8_feed) */
static const char *impl_names[N_KERNELS + 1];
static size_t n_impls;


/* ------------------------------------------------------------------------------------------- */
/* Feeding the same pieces to a kernel and to the scalar one                                   */
/* ------------------------------------------------------------------------------------------- */

static unsigned long feeds, invalid_seen, partial_seen;

/* One feed of d[0..n) to both validators from a fresh heap block; compares everything. Returns
 * the scalar verdict. */
static int feed_both(size_t k, pyws_utf8 *v, pyws_utf8 *sv, const uint8_t *d, size_t n,
                     const char *what, size_t where)
{
    uint8_t *piece = xmalloc(n);
    size_t bad = 0xBAD, sbad = 0xBAD;
    int r, sr;

    memcpy(piece, d, n);
    sr = pyws_utf8_feed_with(PYWS_IMPL_SCALAR, sv, piece, n, &sbad);
    if (impls[k] == PYWS_IMPL_AUTO)
        r = pyws_utf8_feed(v, piece, n, &bad);
    else
        r = pyws_utf8_feed_with(impls[k], v, piece, n, &bad);
    free(piece);
    feeds++;
    CHECK(r == sr && v->state == sv->state && v->cp == sv->cp &&
              (r != PYWS_UTF8_INVALID || bad == sbad),
          "%s [%s] feed of %zu bytes at %zu: ret %d/%d bad %zu/%zu state %u/%u cp %#x/%#x "
          "(kernel/scalar)",
          impl_names[k], what, n, where, r, sr, r == PYWS_UTF8_INVALID ? bad : 0,
          sr == PYWS_UTF8_INVALID ? sbad : 0, (unsigned)v->state, (unsigned)sv->state,
          (unsigned)v->cp, (unsigned)sv->cp);
    return sr;
}

/* d[0..n) in the pieces ending at cuts[0..ncuts) (sorted, <= n; n is added), to every kernel. */
static void feed_cuts(const uint8_t *d, size_t n, const size_t *cuts, size_t ncuts,
                      const char *what)
{
    for (size_t k = 0; k < n_impls; k++) {
        pyws_utf8 v, sv;
        size_t start = 0;
        int sr = PYWS_UTF8_OK;

        pyws_utf8_init(&v);
        pyws_utf8_init(&sv);
        for (size_t c = 0; c <= ncuts; c++) {
            const size_t end = c < ncuts ? cuts[c] : n;
            if (end < start || end > n || (c < ncuts && end == start && start != 0))
                continue;
            sr = feed_both(k, &v, &sv, d + start, end - start, what, start);
            start = end;
            if (sr == PYWS_UTF8_INVALID) {
                /* sticky: one more feed of the rest (or of nothing) stays INVALID at 0 */
                feed_both(k, &v, &sv, d + start, n - start, what, start);
                break;
            }
        }
        if (k == 0) {
            invalid_seen += sr == PYWS_UTF8_INVALID;
            partial_seen += sr == PYWS_UTF8_PARTIAL;
        }
    }
}

/* d fed whole, then in two pieces at every cut in [from, to] and at the 64-byte block edges
 * (+-3) of each feed, then in three pieces at random. */
static void feed_all_ways(const uint8_t *d, size_t n, size_t from, size_t to, const char *what)
{
    size_t cut[2];

    feed_cuts(d, n, NULL, 0, what);
    for (size_t s = from; s <= to && s <= n; s++) {
        cut[0] = s;
        feed_cuts(d, n, cut, 1, what);
    }
    for (size_t edge = 64; edge < n + 3; edge += 64) {
        for (size_t s = edge - 3; s <= edge + 3 && s <= n; s++) {
            if (s >= from && s <= to)
                continue;
            cut[0] = s;
            feed_cuts(d, n, cut, 1, what);
        }
    }
    cut[0] = rnd_below(n + 1);
    cut[1] = cut[0] + rnd_below(n - cut[0] + 1);
    feed_cuts(d, n, cut, 2, what);
}

/* ------------------------------------------------------------------------------------------- */
/* Text                                                                                        */
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

/* A code point of one script: 0 ASCII, 1 Latin-1 and Latin Extended (é, ß, ł), 2 Cyrillic,
 * 3 CJK, 4 emoji, 5 the edges of each length (U+80, U+7FF, U+800, U+D7FF, U+E000, U+FFFF,
 * U+10000, U+10FFFF). */
static uint32_t script_cp(int script)
{
    static const uint32_t edges[] = {0x80, 0x7FF, 0x800, 0xFFF, 0x1000, 0xD7FF, 0xE000, 0xFFFD,
                                     0xFFFF, 0x10000, 0x3FFFF, 0x40000, 0xFFFFF, 0x100000,
                                     0x10FFFF};
    switch (script) {
    case 0: return 0x20 + (uint32_t)rnd_below(0x5F);
    case 1: return 0xC0 + (uint32_t)rnd_below(0x17F - 0xC0);
    case 2: return 0x410 + (uint32_t)rnd_below(0x40);
    case 3: return 0x4E00 + (uint32_t)rnd_below(0x5000);
    case 4: return 0x1F300 + (uint32_t)rnd_below(0x300);
    default: return edges[rnd_below(sizeof edges / sizeof edges[0])];
    }
}

/* Valid text of about n bytes (ends on a code point boundary, may fall short by 3). `mix`
 * weights: mostly one script with others sprinkled in, like real messages. */
static size_t random_text(uint8_t *o, size_t n, int main_script)
{
    size_t len = 0;
    uint8_t tmp[4];

    while (len < n) {
        const int script = rnd_below(4) == 0 ? (int)rnd_below(6) : main_script;
        const size_t w = put_cp(tmp, script_cp(script));
        if (len + w > n)
            break;
        memcpy(o + len, tmp, w);
        len += w;
    }
    return len;
}

/* Exactly n bytes of valid background text of the given kind (0 ASCII, else mixed), ending on a
 * code point boundary (padded with ASCII). */
static void background(uint8_t *o, size_t n, int kind)
{
    size_t len = kind == 0 ? 0 : random_text(o, n, kind);
    for (; len < n; len++)
        o[len] = (uint8_t)('a' + len % 26);
}

/* ------------------------------------------------------------------------------------------- */
/* Invalid input at every offset                                                               */
/* ------------------------------------------------------------------------------------------- */

typedef struct bad_seq {
    const char *name;
    const char *bytes;
    size_t len;
} bad_seq;

#define SEQ(name, s) {name, s, sizeof s - 1}

static const bad_seq bad_seqs[] = {
    SEQ("overlong-2 C0 80", "\xC0\x80"),
    SEQ("overlong-2 C1 BF", "\xC1\xBF"),
    SEQ("overlong-3 E0 80 80", "\xE0\x80\x80"),
    SEQ("overlong-3 E0 9F BF", "\xE0\x9F\xBF"),
    SEQ("overlong-4 F0 80 80 80", "\xF0\x80\x80\x80"),
    SEQ("overlong-4 F0 8F BF BF", "\xF0\x8F\xBF\xBF"),
    SEQ("surrogate ED A0 80", "\xED\xA0\x80"),
    SEQ("surrogate ED BF BF", "\xED\xBF\xBF"),
    SEQ("surrogate pair", "\xED\xA0\xBD\xED\xB8\x80"),
    SEQ("too large F4 90 80 80", "\xF4\x90\x80\x80"),
    SEQ("too large F4 BF BF BF", "\xF4\xBF\xBF\xBF"),
    SEQ("too large F5 80 80 80", "\xF5\x80\x80\x80"),
    SEQ("too large F7 BF BF BF", "\xF7\xBF\xBF\xBF"),
    SEQ("5-byte lead F8", "\xF8\x88\x80\x80\x80"),
    SEQ("6-byte lead FC", "\xFC\x84\x80\x80\x80\x80"),
    SEQ("FE", "\xFE"),
    SEQ("FF", "\xFF"),
    SEQ("C0 alone", "\xC0"),
    SEQ("F5 alone", "\xF5"),
    SEQ("stray 80", "\x80"),
    SEQ("stray BF", "\xBF"),
    SEQ("stray after 2-byte", "\xC3\xA9\x80"),
    SEQ("stray after 3-byte", "\xE2\x82\xAC\xBF"),
    SEQ("stray after 4-byte", "\xF0\x9F\x98\x80\x80"),
    SEQ("2-byte cut by ASCII", "\xC3\x41"),
    SEQ("3-byte cut by ASCII", "\xE2\x82\x41"),
    SEQ("4-byte cut by ASCII", "\xF0\x9F\x98\x41"),
    SEQ("3-byte cut by a lead", "\xE2\xC3\xA9"),
    SEQ("4-byte cut by a lead", "\xF0\x9F\xE2\x82\xAC"),
    SEQ("F0 then ASCII", "\xF0\x41"),
    SEQ("E0 then ASCII", "\xE0\x41"),
    SEQ("ED then ASCII", "\xED\x41"),
    SEQ("F4 then ASCII", "\xF4\x41"),
};

/* Unfinished at the end of the input (PARTIAL; with a suffix they are "cut by ..." errors). */
static const bad_seq end_seqs[] = {
    SEQ("end C3", "\xC3"),       SEQ("end DF", "\xDF"),           SEQ("end E0", "\xE0"),
    SEQ("end E0 A0", "\xE0\xA0"), SEQ("end ED 9F", "\xED\x9F"),     SEQ("end EF BF", "\xEF\xBF"),
    SEQ("end F0", "\xF0"),       SEQ("end F0 90", "\xF0\x90"),     SEQ("end F0 9F 98", "\xF0\x9F\x98"),
    SEQ("end F4 8F BF", "\xF4\x8F\xBF"), SEQ("end C0", "\xC0"),    SEQ("end F5", "\xF5"),
    SEQ("end FF", "\xFF"),       SEQ("end E0 80", "\xE0\x80"),     SEQ("end F4 90", "\xF4\x90"),
};

#define MAX_OFFSET 192

/* seq at offset `off` of background text of `kind`, followed by `after` bytes of it. */
static void place(const bad_seq *b, size_t off, size_t after, int kind, const char *label)
{
    uint8_t d[MAX_OFFSET + 8 + 128];
    char what[96];
    const size_t n = off + b->len + after;

    background(d, off, kind);
    memcpy(d + off, b->bytes, b->len);
    background(d + off + b->len, after, kind);
    snprintf(what, sizeof what, "%s %s at %zu +%zu", label, b->name, off, after);
    feed_all_ways(d, n, off > 3 ? off - 3 : 0, off + b->len + 3, what);
}

static void test_invalid_at_every_offset(void)
{
    static const size_t afters[] = {0, 1, 2, 3, 5, 61, 64, 67};
    static const char *kind_name[] = {"ascii", "latin", "cyrillic", "cjk", "emoji"};

    for (int kind = 0; kind < 5; kind++) {
        for (size_t s = 0; s < sizeof bad_seqs / sizeof bad_seqs[0]; s++)
            for (size_t off = 0; off < MAX_OFFSET; off++)
                place(&bad_seqs[s], off, afters[rnd_below(sizeof afters / sizeof afters[0])],
                      kind, kind_name[kind]);
        for (size_t s = 0; s < sizeof end_seqs / sizeof end_seqs[0]; s++)
            for (size_t off = 0; off < MAX_OFFSET; off++)
                place(&end_seqs[s], off, off % 4 == 0 ? rnd_below(4) : 0, kind, kind_name[kind]);
    }
    printf("invalid at every offset: %lu feeds so far (%lu ended INVALID, %lu PARTIAL)\n", feeds,
           invalid_seen, partial_seen);
}

/* Every single byte value at every offset of a 128-byte window of mixed text: any byte, in any
 * context, at any position relative to the blocks. */
static void test_every_byte_everywhere(void)
{
    uint8_t d[160];
    size_t cut[1];

    for (int kind = 1; kind < 5; kind += 2) {
        background(d, sizeof d, kind);
        for (size_t off = 0; off < 128; off++) {
            const uint8_t keep = d[off];
            for (unsigned b = 0x80; b < 0x100; b++) {
                d[off] = (uint8_t)b;
                feed_cuts(d, sizeof d, NULL, 0, "byte swap");
                cut[0] = off + 1 - rnd_below(off < 2 ? off + 1 : 3);
                feed_cuts(d, sizeof d, cut, 1, "byte swap, split");
            }
            d[off] = keep;
        }
    }
}

/* ------------------------------------------------------------------------------------------- */
/* Random valid text, random pieces                                                            */
/* ------------------------------------------------------------------------------------------- */

static int cmp_size(const void *a, const void *b)
{
    const size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

static void test_random_text(void)
{
    enum { CAP = 3072 };
    uint8_t *d = xmalloc(CAP);
    size_t cuts[6];
    unsigned long invalid0 = invalid_seen;

    for (int round = 0; round < 1500; round++) {
        const size_t want = rnd_below(4) == 0 ? rnd_below(200) : rnd_below(CAP + 1);
        const size_t n = random_text(d, want, (int)rnd_below(6));
        const size_t ncuts = rnd_below(6);

        for (size_t c = 0; c < ncuts; c++)
            cuts[c] = rnd_below(n + 1);
        qsort(cuts, ncuts, sizeof cuts[0], cmp_size);
        feed_cuts(d, n, cuts, ncuts, "random text");
        if (n > 0) {
            /* one byte changed: usually invalid somewhere in the middle */
            const size_t at = rnd_below(n);
            const uint8_t keep = d[at];
            d[at] = (uint8_t)rnd();
            feed_cuts(d, n, cuts, ncuts, "random text, one byte changed");
            d[at] = keep;
        }
    }
    CHECK(invalid_seen - invalid0 > 500, "the changed bytes made invalid text (%lu)",
          invalid_seen - invalid0);
    free(d);
}

/* ------------------------------------------------------------------------------------------- */

static void test_forced(void)
{
    const char *force = getenv("PYWS_FORCE_IMPL");

    if (force == NULL)
        return;
    for (size_t k = 0; k < N_KERNELS; k++) {
        if (strcmp(force, kernels[k].name) == 0 && pyws_impl_available(kernels[k].impl)) {
            CHECK(pyws_impl_best() == kernels[k].impl, "PYWS_FORCE_IMPL=%s gives %d", force,
                  pyws_impl_best());
        }
    }
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--impls") == 0) {
        for (size_t k = 0; k < N_KERNELS; k++)
            if (pyws_impl_available(kernels[k].impl))
                printf("%s\n", kernels[k].name);
        return 0;
    }
    /* Under PYWS_FORCE_IMPL only the AUTO entry point (now that kernel) is compared: the run
     * without it already compares every kernel by name. */
    printf("kernels compared with scalar:");
    for (size_t k = 0; k < N_KERNELS && getenv("PYWS_FORCE_IMPL") == NULL; k++) {
        if (kernels[k].impl != PYWS_IMPL_SCALAR && pyws_impl_available(kernels[k].impl)) {
            impls[n_impls] = kernels[k].impl;
            impl_names[n_impls++] = kernels[k].name;
            printf(" %s", kernels[k].name);
        }
    }
    impls[n_impls] = PYWS_IMPL_AUTO;
    impl_names[n_impls++] = "auto";
    printf(" auto (= %d)\n", pyws_impl_best());

    test_forced();
    test_invalid_at_every_offset();
    test_every_byte_everywhere();
    test_random_text();
    printf("%lu feeds compared\n", feeds);
    printf("%lu passed, %lu failed\n", passed, failed);
    return failed ? 1 : 0;
}
