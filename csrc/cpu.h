/*
 * cpu.h — internal: which SIMD kernels were compiled in and which this CPU can run.
 *
 * The public side (pyws_impl_available, pyws_impl_best) is declared in pyws.h; this header adds
 * the compile-time switches the kernel files share.
 *
 * Every SIMD kernel is compiled into every build. Files for another architecture compile to a
 * stub that returns PYWS_ERR_UNSUPPORTED, so the dispatch tables in mask.c and utf8.c never need
 * an #if. The x86 kernels use __attribute__((target(...))) rather than -mavx2 on the command
 * line, because the whole engine is built with one set of flags; the CPU is asked at run time
 * before an AVX2 function is ever called.
 */
#ifndef PYWS_CPU_H
#define PYWS_CPU_H

#include "pyws.h"

/* x86 kernels need GCC-style target attributes and <immintrin.h>. */
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define PYWS_HAVE_X86_KERNELS 1
#else
#define PYWS_HAVE_X86_KERNELS 0
#endif

/* NEON is part of the AArch64 base ISA; 32-bit ARM is left to the scalar kernels. */
#if defined(__aarch64__) && defined(__ARM_NEON)
#define PYWS_HAVE_NEON_KERNELS 1
#else
#define PYWS_HAVE_NEON_KERNELS 0
#endif

/* Number of PYWS_IMPL_* kernels (SCALAR..AVX512): the size of the dispatch tables. */
#define PYWS_IMPL_COUNT 6

#endif /* PYWS_CPU_H */
