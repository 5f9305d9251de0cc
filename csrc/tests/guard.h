/*
 * guard.h — place a test input so that its last byte is the last readable byte before a
 * PROT_NONE page. A parser that reads even one byte past the input faults at once (SIGSEGV),
 * with or without a sanitizer, and whatever the size of the read (a 16- or 32-byte SIMD load
 * that straddles the end faults as surely as a 1-byte one).
 *
 *   const uint8_t *p = guard_place(input, n);   // p[0..n) == input[0..n), p + n is unmapped
 *
 * One mapping is reused for every input (it grows when an input does not fit): placing is a
 * memcpy, so a test can put every prefix of every input at the guard. A pointer stays valid until
 * the next guard_place(); guard_free() unmaps (call it at exit so LeakSanitizer stays quiet).
 * The bytes before the input are left over from earlier inputs: the guard catches reads past
 * the end, not before the start (the heap-exact copies under ASan catch both).
 *
 * Include it before any other header: under -std=c11 mmap's MAP_ANONYMOUS needs the feature
 * macro set here.
 */
#ifndef PYWS_TEST_GUARD_H
#define PYWS_TEST_GUARD_H

#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE 1
#endif

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static uint8_t *guard_base;      /* start of the mapping */
static size_t guard_room;        /* readable bytes before the guard page */
static size_t guard_page;

static void guard_free(void)
{
    if (guard_base != NULL)
        munmap(guard_base, guard_room + guard_page);
    guard_base = NULL;
    guard_room = 0;
}

/* Copy src[0..n) so that it ends exactly where the guard page starts; returns the copy. */
static uint8_t *guard_place(const void *src, size_t n)
{
    if (guard_page == 0)
        guard_page = (size_t)sysconf(_SC_PAGESIZE);
    if (n > guard_room) {
        guard_free();
        size_t room = (n + guard_page - 1) / guard_page * guard_page;
        if (room < 16 * guard_page)
            room = 16 * guard_page;
        void *m = mmap(NULL, room + guard_page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                       -1, 0);
        if (m == MAP_FAILED) {
            perror("guard.h: mmap");
            exit(2);
        }
        if (mprotect((uint8_t *)m + room, guard_page, PROT_NONE) != 0) {
            perror("guard.h: mprotect");
            exit(2);
        }
        guard_base = m;
        guard_room = room;
    }
    uint8_t *p = guard_base + guard_room - n;
    if (n > 0)
        memcpy(p, src, n);
    return p;
}

/* 1 if reading the byte right after a placed input kills the reader (checked in a child
 * process, whose fault report goes to /dev/null), else 0. */
static int guard_selftest(void)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return 0;
    if (pid == 0) {
        if (freopen("/dev/null", "w", stderr) == NULL)
            _exit(3);
        const volatile uint8_t *p = guard_place("abc", 3);
        uint8_t past = p[3];           /* must fault */
        _exit(past == 0 ? 0 : 0);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid)
        return 0;
    /* killed by SIGSEGV, or (under ASan, which catches the fault) exited with its error code */
    if (WIFSIGNALED(status))
        return 1;
    return WIFEXITED(status) && WEXITSTATUS(status) != 0 && WEXITSTATUS(status) != 3;
}

#endif
