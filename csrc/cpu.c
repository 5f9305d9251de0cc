/*
 * cpu.c — run-time CPU feature detection and the choice behind PYWS_IMPL_AUTO.
 *
 * AUTO resolves once, on first use, to the fastest kernel this CPU runs:
 *   x86:    AVX-512 (F+BW) if the CPU and the OS (saved ZMM state) support it, else AVX2 (with
 *           saved YMM state), else SSE4 (SSSE3 + SSE4.1), else SSE2, else scalar;
 *   arm64:  NEON (baseline);
 *   other:  scalar.
 * On x86 the kernels form a ladder, SSE2 < SSE4 < AVX2 < AVX512: for masking SSE4 is the SSE2
 * kernel and AVX512 the AVX2 one; for UTF-8 SSE4, AVX2 and AVX512 are the lookup-table
 * validator (utf8_lookup.h) and SSE2 only skips ASCII.
 *
 * The environment variable PYWS_FORCE_IMPL (read once, at that first use) caps the choice, so
 * tests and benchmarks can run the slower paths through the ordinary entry points:
 *   scalar  always the portable kernel;
 *   sse2, sse4, avx2, avx512
 *           that rung of the x86 ladder if available, else the best available one below it,
 *           else scalar (avx512 is therefore no cap on x86);
 *   neon    NEON if available, else scalar;
 *   auto, empty or anything else: no cap.
 * It never enables a kernel the CPU lacks. pyws_impl_available() ignores it.
 *
 * Both answers are computed once and cached. Threads: two threads computing at once get the same
 * value and store it with relaxed atomics, so the race is harmless and free of undefined
 * behaviour.
 */
#include "cpu.h"

#include <stdlib.h>
#include <string.h>

#if !defined(__STDC_NO_ATOMICS__)
#include <stdatomic.h>
/* 0 = not resolved yet, else the chosen PYWS_IMPL_* plus one. */
static atomic_int best_plus_one;
/* 0 = not probed yet, else AVAIL_PROBED | (1 << impl) for every kernel this CPU runs. */
static atomic_uint avail_bits;
#define LOAD(var) atomic_load_explicit(&(var), memory_order_relaxed)
#define STORE(var, v) atomic_store_explicit(&(var), (v), memory_order_relaxed)
#else
static volatile int best_plus_one;
static volatile unsigned avail_bits;
#define LOAD(var) (var)
#define STORE(var, v) ((var) = (v))
#endif

#define AVAIL_PROBED 0x100u

static int cpu_has(int impl)
{
    switch (impl) {
    case PYWS_IMPL_SCALAR:
        return 1;
#if PYWS_HAVE_X86_KERNELS
    case PYWS_IMPL_SSE2:
#if defined(__x86_64__) || defined(__SSE2__)
        return 1;
#else
        __builtin_cpu_init();
        return __builtin_cpu_supports("sse2") ? 1 : 0;
#endif
    case PYWS_IMPL_SSE4:
        __builtin_cpu_init();
        return __builtin_cpu_supports("ssse3") && __builtin_cpu_supports("sse4.1") ? 1 : 0;
    case PYWS_IMPL_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") ? 1 : 0;
    case PYWS_IMPL_AVX512:
        /* GCC's and clang's probes report AVX-512 only when XCR0 shows the OS saves ZMM state */
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") ? 1 : 0;
#endif
#if PYWS_HAVE_NEON_KERNELS
    case PYWS_IMPL_NEON:
        return 1;
#endif
    default:
        return 0;
    }
}

int pyws_impl_available(int impl)
{
    unsigned bits;

    if (impl == PYWS_IMPL_AUTO)
        return 1;
    if (impl < 0 || impl >= PYWS_IMPL_COUNT)
        return 0;
    bits = LOAD(avail_bits);
    if (bits == 0) {
        bits = AVAIL_PROBED;
        for (int k = 0; k < PYWS_IMPL_COUNT; k++)
            if (cpu_has(k))
                bits |= 1u << k;
        STORE(avail_bits, bits);
    }
    return (int)((bits >> impl) & 1u);
}

/* The cap named by PYWS_FORCE_IMPL, or PYWS_IMPL_AUTO for none. */
static int forced_impl(void)
{
    const char *s = getenv("PYWS_FORCE_IMPL");
    if (s == NULL)
        return PYWS_IMPL_AUTO;
    if (strcmp(s, "scalar") == 0)
        return PYWS_IMPL_SCALAR;
    if (strcmp(s, "sse2") == 0)
        return PYWS_IMPL_SSE2;
    if (strcmp(s, "sse4") == 0)
        return PYWS_IMPL_SSE4;
    if (strcmp(s, "avx2") == 0)
        return PYWS_IMPL_AVX2;
    if (strcmp(s, "avx512") == 0)
        return PYWS_IMPL_AVX512;
    if (strcmp(s, "neon") == 0)
        return PYWS_IMPL_NEON;
    return PYWS_IMPL_AUTO;
}

/* The x86 kernels, best first. */
static const int x86_ladder[] = {PYWS_IMPL_AVX512, PYWS_IMPL_AVX2, PYWS_IMPL_SSE4, PYWS_IMPL_SSE2};

static int resolve(void)
{
    int cap = forced_impl();
    int below_cap = cap == PYWS_IMPL_AUTO;

    if (cap == PYWS_IMPL_SCALAR)
        return PYWS_IMPL_SCALAR;
    if (cap == PYWS_IMPL_NEON || cap == PYWS_IMPL_AUTO) {
        if (pyws_impl_available(PYWS_IMPL_NEON))
            return PYWS_IMPL_NEON;
        if (cap == PYWS_IMPL_NEON)
            return PYWS_IMPL_SCALAR;
    }
    for (size_t k = 0; k < sizeof x86_ladder / sizeof x86_ladder[0]; k++) {
        if (x86_ladder[k] == cap)
            below_cap = 1;
        if (below_cap && pyws_impl_available(x86_ladder[k]))
            return x86_ladder[k];
    }
    return PYWS_IMPL_SCALAR;
}

int pyws_impl_best(void)
{
    int b = LOAD(best_plus_one);
    if (b == 0) {
        b = resolve() + 1;
        STORE(best_plus_one, b);
    }
    return b - 1;
}
