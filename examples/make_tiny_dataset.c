/* make_tiny_dataset: small synthetic datasets in the official file formats,
   for smoke runs of the recipes without downloading anything.

     make_tiny_dataset cifar10 DIR N_TRAIN N_TEST
         DIR/data_batch_1.bin and DIR/test_batch.bin (CIFAR-10 binary records)
     make_tiny_dataset imagenet64 DIR N_TRAIN N_TEST [SIDE]
         DIR/train_data_batch_1.npz and DIR/val_data.npz (downsampled-ImageNet
         layout: data u8 [N][3*S*S], labels 1..10 of 1000; SIDE = 64)
     make_tiny_dataset pgm DATASET INDEX OUT.pgm|OUT.ppm
         one image of any dataset prg_dataset_load reads, as PGM/PPM

   Counts are checked (0..1000000 images, SIDE 8..256); --quiet (anywhere)
   drops the pgm mode's line.  The synthetic classes are learnable: class k is a bright square at one of
   10 positions on a noisy background of a class-dependent colour. */
#define PRG_IMPLEMENTATION
#include "prg.h"
#include "ex_common.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void draw(uint8_t *img /* [3][s][s] */, int s, int k, prg_rng *r) {
    int c, y, x, q = s / 4, cy = (k / 5) * (s / 2) + s / 8 + (int)prg_rng_below(r, 3),
        cx = (k % 5) * (s / 5) + (int)prg_rng_below(r, 3);
    for (c = 0; c < 3; c++)
        for (y = 0; y < s; y++)
            for (x = 0; x < s; x++) {
                int v = 40 + 30 * ((k + c) % 3) + (int)prg_rng_below(r, 40);
                if (y >= cy && y < cy + q && x >= cx && x < cx + q) v = 200 + (int)prg_rng_below(r, 55);
                img[((size_t)c * s + y) * s + x] = (uint8_t)v;
            }
}

static int cifar(const char *path, int n, uint64_t seed) {
    FILE *f = fopen(path, "wb");
    uint8_t rec[1 + 3072];
    prg_rng r;
    int i;
    if (!f) { perror(path); return 1; }
    prg_rng_seed(&r, seed, 0);
    for (i = 0; i < n; i++) {
        rec[0] = (uint8_t)(i % 10);
        draw(rec + 1, 32, i % 10, &r);
        if (fwrite(rec, 1, sizeof(rec), f) != sizeof(rec)) { perror(path); fclose(f); return 1; }
    }
    return fclose(f) ? 1 : 0;
}

static int imagenet(const char *path, int n, int s, uint64_t seed) {
    const char *names[2] = {"data", "labels"};
    prg_array a[2];
    prg_rng r;
    int i;
    uint8_t *d;
    int64_t *l;
    memset(a, 0, sizeof(a));
    a[0].dtype = PRG_DT_U8; a[0].ndim = 2; a[0].shape[0] = n; a[0].shape[1] = 3 * s * s; a[0].count = (size_t)n * 3 * s * s;
    a[1].dtype = PRG_DT_I64; a[1].ndim = 1; a[1].shape[0] = n; a[1].count = (size_t)n;
    d = (uint8_t *)prg_alloc(a[0].count);
    l = (int64_t *)prg_alloc(a[1].count * sizeof(int64_t));
    if (!d || !l) return 1;
    a[0].data = d; a[1].data = l;
    prg_rng_seed(&r, seed, 0);
    for (i = 0; i < n; i++) {
        l[i] = 1 + i % 10; /* Imagenet64 labels are 1-based */
        draw(d + (size_t)i * 3 * s * s, s, i % 10, &r);
    }
    if (prg_npz_save(path, names, a, 2) != PRG_OK) { fprintf(stderr, "%s\n", prg_last_error()); return 1; }
    prg_free(d); prg_free(l);
    return 0;
}

int main(int argc, char **argv) {
    char p[1024];
    int k, m = 1;
    ex_prog = "make_tiny_dataset";
    for (k = 1; k < argc; k++) /* --quiet anywhere; the rest are positional */
        if (strcmp(argv[k], "--quiet")) argv[m++] = argv[k];
        else ex_quiet = 1;
    argc = m;
    if ((argc == 5 && !strcmp(argv[1], "cifar10")) || ((argc == 5 || argc == 6) && !strcmp(argv[1], "imagenet64"))) {
        int ntrain = (int)ex_parse_i64("N_TRAIN", argv[3], 0, 1000000), ntest = (int)ex_parse_i64("N_TEST", argv[4], 0, 1000000);
        int s = argc > 5 ? (int)ex_parse_i64("SIDE", argv[5], 8, 256) : 64, cif = !strcmp(argv[1], "cifar10");
        snprintf(p, sizeof(p), cif ? "%s/data_batch_1.bin" : "%s/train_data_batch_1.npz", argv[2]);
        ex_check_writable(p, "DIR");
        if (cif ? cifar(p, ntrain, 1) : imagenet(p, ntrain, s, 1)) return 1;
        snprintf(p, sizeof(p), cif ? "%s/test_batch.bin" : "%s/val_data.npz", argv[2]);
        return cif ? cifar(p, ntest, 2) : imagenet(p, ntest, s, 2);
    }
    if (argc == 5 && !strcmp(argv[1], "pgm")) {
        prg_dataset ds;
        int i = (int)ex_parse_i64("INDEX", argv[3], 0, INT_MAX), c, y, x;
        uint8_t *px;
        ex_check_input(argv[2], "DATASET");
        ex_check_writable(argv[4], "OUT");
        if (prg_dataset_load(&ds, argv[2]) != PRG_OK) { fprintf(stderr, "%s\n", prg_last_error()); return 1; }
        if (i < 0 || i >= ds.n || (ds.c != 1 && ds.c != 3)) { fprintf(stderr, "bad index or channel count\n"); return 1; }
        px = (uint8_t *)prg_alloc((size_t)ds.c * ds.h * ds.w);
        for (c = 0; c < ds.c; c++)
            for (y = 0; y < ds.h; y++)
                for (x = 0; x < ds.w; x++)
                    px[((size_t)y * ds.w + x) * ds.c + c] = ds.images[(((size_t)i * ds.c + c) * ds.h + y) * ds.w + x];
        if (prg_pnm_write(argv[4], px, ds.w, ds.h, ds.c) != PRG_OK) { fprintf(stderr, "%s\n", prg_last_error()); return 1; }
        if (!ex_quiet) printf("%s: image %d of %s, label %d\n", argv[4], i, argv[2], (int)ds.labels[i]);
        prg_free(px); prg_dataset_free(&ds);
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "--help")) fprintf(stderr, "make_tiny_dataset: bad arguments\n");
    printf("usage: make_tiny_dataset cifar10 DIR N_TRAIN N_TEST\n"
           "       make_tiny_dataset imagenet64 DIR N_TRAIN N_TEST [SIDE (64, 8..256)]\n"
           "       make_tiny_dataset pgm DATASET INDEX OUT.pgm|OUT.ppm\n"
           "       (N_TRAIN, N_TEST 0..1000000; --quiet: no line in pgm mode)\n");
    return argc > 1 && !strcmp(argv[1], "--help") ? 0 : 2;
}
