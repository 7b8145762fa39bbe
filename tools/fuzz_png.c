/* libFuzzer target for prg_png_decode:
     clang -O1 -g -fsanitize=fuzzer,address,undefined -I. tools/fuzz_png.c -lm -pthread
   (or `make fuzz`).  A decode may fail, but must not crash, leak or read
   out of bounds, and a failure leaves the image empty. */
#define PRG_IMAGE_MAX_PIXELS (1u << 22)
#define PRG_IMPLEMENTATION
#include "prg.h"
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    prg_image img;
    prg_result r = prg_png_decode(&img, data, size, (int)(size % 5), "fuzz.png");
    if (r == PRG_OK) {
        if (!img.data || img.w <= 0 || img.h <= 0) abort();
        prg_image_free(&img);
    } else if (img.data) {
        abort();
    }
    return 0;
}
