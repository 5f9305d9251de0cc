/*
 * copycount.c — an LD_PRELOAD shim that counts the large memcpy/memmove calls of a process:
 * scripts/count_copies builds it and runs an echo server under it. Calls of at least
 * COPYCOUNT_MIN bytes (default 4096) are counted, with their bytes; SIGUSR1 zeroes the counts,
 * SIGUSR2 appends "calls bytes" to the file named by COPYCOUNT_OUT. Copies made inside libc
 * itself (realloc moving a block, say) do not go through the dynamic symbol and are not seen;
 * neither are the kernel's (recv, send).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void *(*copy_fn)(void *, const void *, size_t);

static copy_fn real_memcpy, real_memmove;
static size_t min_bytes = 4096;
static atomic_ulong n_calls, n_bytes;

/* byte copies until dlsym has answered (it may copy while resolving) */
static void *slow_move(void *d, const void *s, size_t n)
{
    unsigned char *dp = d;
    const unsigned char *sp = s;
    if (dp < sp) {
        for (size_t i = 0; i < n; i++)
            dp[i] = sp[i];
    } else {
        for (size_t i = n; i-- > 0;)
            dp[i] = sp[i];
    }
    return d;
}

static void count(size_t n)
{
    if (n >= min_bytes) {
        atomic_fetch_add(&n_calls, 1);
        atomic_fetch_add(&n_bytes, n);
    }
}

void *memcpy(void *d, const void *s, size_t n)
{
    count(n);
    return real_memcpy ? real_memcpy(d, s, n) : slow_move(d, s, n);
}

void *memmove(void *d, const void *s, size_t n)
{
    count(n);
    return real_memmove ? real_memmove(d, s, n) : slow_move(d, s, n);
}

static void on_reset(int sig)
{
    (void)sig;
    atomic_store(&n_calls, 0);
    atomic_store(&n_bytes, 0);
}

static void on_dump(int sig)
{
    (void)sig;
    const char *path = getenv("COPYCOUNT_OUT");
    FILE *f = path ? fopen(path, "a") : NULL;
    if (!f)
        return;
    fprintf(f, "%lu %lu\n", (unsigned long)atomic_load(&n_calls),
            (unsigned long)atomic_load(&n_bytes));
    fclose(f);
}

__attribute__((constructor)) static void init(void)
{
    real_memcpy = (copy_fn)dlsym(RTLD_NEXT, "memcpy");
    real_memmove = (copy_fn)dlsym(RTLD_NEXT, "memmove");
    const char *m = getenv("COPYCOUNT_MIN");
    if (m)
        min_bytes = (size_t)strtoul(m, NULL, 10);
    signal(SIGUSR1, on_reset);
    signal(SIGUSR2, on_dump);
}
