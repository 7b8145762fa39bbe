/* libFuzzer targets for the file readers: build with
     clang -O1 -g -fsanitize=fuzzer,address,undefined -DFUZZ_JPEG -I. tools/fuzz_files.c -lm -pthread
   (or -DFUZZ_PNG, -DFUZZ_SAFETENSORS, -DFUZZ_NPZ, -DFUZZ_IDX; `make fuzz`
   runs all).  The image decoders read the input from memory; the other
   readers take a path, so the input is written to a temporary file first.
   A read may fail but must not crash, leak or read out of bounds, and a
   failure leaves its output empty.  FUZZ_IDX inputs are
   <u16 little-endian n><n bytes images file><labels file>. */
#define PRG_IMAGE_MAX_PIXELS (1u << 22)
#define PRG_IMPLEMENTATION
#include "prg.h"
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static PRG_UNUSED const char *tmp_file(int which, const uint8_t *data, size_t size) {
    static char path[2][64];
    FILE *f;
    snprintf(path[which], sizeof path[which], "/tmp/prg_fuzz_%d_%d", (int)getpid(), which);
    f = fopen(path[which], "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    fclose(f);
    return path[which];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
#if defined(FUZZ_JPEG) || defined(FUZZ_PNG)
    prg_image img;
#if defined(FUZZ_JPEG)
    prg_result r = prg_jpeg_decode(&img, data, size, (int)(size % 5), "fuzz.jpg");
#else
    prg_result r = prg_png_decode(&img, data, size, (int)(size % 5), "fuzz.png");
#endif
    if (r == PRG_OK) {
        if (!img.data || img.w <= 0 || img.h <= 0) abort();
        prg_image_free(&img);
    } else if (img.data) {
        abort();
    }
#elif defined(FUZZ_SAFETENSORS)
    prg_st *st = NULL;
    if (prg_safetensors_open(&st, tmp_file(0, data, size)) == PRG_OK) {
        int i;
        for (i = 0; i < prg_st_count(st); i++) {
            const prg_st_info *t = prg_st_info_at(st, i);
            if (t->count <= (1u << 20)) {
                float *buf = (float *)malloc(t->count * sizeof(float) + 1);
                prg_st_read_f32(st, t->name, buf, t->count, PRG_ST_FINITE);
                free(buf);
            }
        }
        prg_st_close(st);
    } else if (st) {
        abort();
    }
#elif defined(FUZZ_NPZ)
    prg_array a;
    prg_dataset ds;
    const char *p = tmp_file(0, data, size);
    if (prg_npz_load(&a, p, "data") == PRG_OK) prg_array_free(&a);
    else if (a.data) abort();
    if (prg_dataset_load_npz(&ds, p) == PRG_OK) prg_dataset_free(&ds);
    else if (ds.images || ds.labels) abort();
#elif defined(FUZZ_IDX)
    prg_dataset ds;
    size_t n;
    const char *pi, *pl;
    if (size < 2) return 0;
    n = (size_t)data[0] | ((size_t)data[1] << 8);
    if (n > size - 2) n = size - 2;
    pi = tmp_file(0, data + 2, n);
    pl = tmp_file(1, data + 2 + n, size - 2 - n);
    if (prg_dataset_load_idx(&ds, pi, pl) == PRG_OK) prg_dataset_free(&ds);
    else if (ds.images || ds.labels) abort();
#else
#error "define FUZZ_JPEG, FUZZ_PNG, FUZZ_SAFETENSORS, FUZZ_NPZ or FUZZ_IDX"
#endif
    return 0;
}
