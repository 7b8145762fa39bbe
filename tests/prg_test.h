/* A small test harness: each tests/test_*.c is a program that counts its
   checks and ends with the line "<name>: N passed, N failed". */
#ifndef PRG_TEST_H
#define PRG_TEST_H
#include <stdio.h>
#include <stdlib.h>

/* The raw bytes of a file (malloc'd, one spare byte), or NULL with *len = 0
   when it is missing or cannot be read whole. */
PRG_UNUSED static unsigned char *prg_test_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    unsigned char *b;
    long n;
    *len = 0;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    b = n < 0 ? NULL : (unsigned char *)malloc((size_t)n + 1);
    if (b && n && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) *len = (size_t)n;
    return b;
}

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
