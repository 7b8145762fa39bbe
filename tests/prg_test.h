/* A small test harness: each tests/test_*.c is a program that counts its
   checks and ends with the line "<name>: N passed, N failed". */
#ifndef PRG_TEST_H
#define PRG_TEST_H
#include <stdio.h>

static int prg_test_passed = 0, prg_test_failed = 0;

/* CHECK(cond, printf-args...): counts one check; prints the message on failure. */
#define CHECK(cond, ...)                                               \
    do {                                                               \
        if (cond) {                                                    \
            prg_test_passed++;                                         \
        } else {                                                       \
            prg_test_failed++;                                         \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                \
            printf(__VA_ARGS__);                                       \
            printf("\n");                                              \
            fflush(stdout);                                            \
        }                                                              \
    } while (0)

static int prg_test_finish(const char *name) {
    printf("%s: %d passed, %d failed\n", name, prg_test_passed, prg_test_failed);
    return prg_test_failed ? 1 : 0;
}
#endif
