/*
 * rng.h — the C tests' random inputs: xorshift64* from a fixed seed, so every run tests the same
 * inputs. A test defines RNG_SEED (its own sequence) before including this, and gets rnd(),
 * rnd_below(n) and xmalloc(n) (exits 2 when out of memory).
 */
#ifndef PYWS_TESTS_RNG_H
#define PYWS_TESTS_RNG_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef RNG_SEED
#error "define RNG_SEED before including rng.h"
#endif

static uint64_t rng_state = RNG_SEED;

static inline uint64_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}

static inline size_t rnd_below(size_t n)
{
    return n == 0 ? 0 : (size_t)(rnd() % n);
}

static inline void *xmalloc(size_t n)
{
    void *p = malloc(n == 0 ? 1 : n);
    if (p == NULL) {
        printf("out of memory\n");
        exit(2);
    }
    return p;
}

#endif
