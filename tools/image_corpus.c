/* The decoding half of tools/image_corpus.py: reads file paths, one a line,
   on stdin and for each writes to stdout one line
       OK <w> <h> <c> <warnings> <strict 0|1>\n  then w*h*c pixel bytes
   (the file's own channels, lenient decode; strict 1 if PRG_DECODE_STRICT
   also accepts it), or
       ERR <message>\n
   Build: cc -O2 -I. -o build/image_corpus tools/image_corpus.c -lm -pthread */
#define PRG_IMPLEMENTATION
#include "../prg.h"
#include <stdio.h>
#include <string.h>

int main(void) {
    char path[4096];
    while (fgets(path, sizeof path, stdin)) {
        prg_image img, s;
        size_t n = strlen(path);
        int strict;
        while (n && (path[n - 1] == '\n' || path[n - 1] == '\r')) path[--n] = 0;
        if (!n) continue;
        if (prg_image_load(&img, path, 0) != PRG_OK) {
            const char *e = prg_last_error();
            printf("ERR ");
            for (; *e; e++) putchar(*e == '\n' ? ' ' : *e);
            putchar('\n');
            fflush(stdout);
            continue;
        }
        strict = prg_image_load_flags(&s, path, 0, PRG_DECODE_STRICT) == PRG_OK;
        prg_image_free(&s);
        printf("OK %d %d %d %u %d\n", img.w, img.h, img.c, img.warnings, strict);
        fwrite(img.data, 1, (size_t)img.w * img.h * img.c, stdout);
        fflush(stdout);
        prg_image_free(&img);
    }
    return 0;
}
