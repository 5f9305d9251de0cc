/*
 * check.h — the C tests' one assertion: CHECK(cond, printf-style message) counts a pass or a
 * failure and prints the first 30 failures with their file, line and the case being checked
 * (`current`, which a test may point at its case's name). Each test's main() prints
 * "N passed, M failed" from the tallies and exits non-zero on any failure.
 */
#ifndef PYWS_TESTS_CHECK_H
#define PYWS_TESTS_CHECK_H

#include <stdio.h>

static unsigned long passed, failed;
static const char *current = "";

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (cond) {                                                                                \
            passed++;                                                                              \
        } else {                                                                                   \
            failed++;                                                                              \
            if (failed <= 30) {                                                                    \
                printf("FAIL %s:%d%s%s%s: ", __FILE__, __LINE__, *current ? " [" : "", current,   \
                       *current ? "]" : "");                                                       \
                printf(__VA_ARGS__);                                                               \
                printf("\n");                                                                      \
            }                                                                                      \
        }                                                                                          \
    } while (0)

#endif
