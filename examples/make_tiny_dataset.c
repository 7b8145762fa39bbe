/* make_tiny_dataset: small synthetic datasets in the official file formats,
   for smoke runs of the recipes without downloading anything.

     make_tiny_dataset cifar10 DIR N_TRAIN N_TEST
         DIR/data_batch_1.bin and DIR/test_batch.bin (CIFAR-10 binary records)
     make_tiny_dataset imagenet64 DIR N_TRAIN N_TEST [SIDE]
         DIR/train_data_batch_1.npz and DIR/val_data.npz (downsampled-ImageNet
         layout: data u8 [N][3*S*S], labels 1..10 of 1000; SIDE = 64)
     make_tiny_dataset image DATASET INDEX OUT.png|OUT.pgm|OUT.ppm
         one image of any dataset prg_dataset_load reads, as PNG (by the
         name) or PGM/PPM ("pgm" is the same mode)
     make_tiny_dataset folder DIR N_PER_CLASS NAME...
         an ImageFolder tree DIR/NAME/ of N images per class, of odd sizes
         (19..31 pixels), as a folder of one's own photos might be: image i
         is i.png, i.PNG or i.ppm (i mod 3), and image 2 of the first class
         is grey, i.pgm

   Counts are checked (0..1000000 images, SIDE 8..256); --quiet (anywhere)
   drops the image mode's line.  The synthetic classes are learnable: class k
   is a bright square at one of 10 positions on a noisy background of a
   class-dependent colour; in the folder trees, class k has stripes of one
   of 3 directions. */
#define PRG_IMPLEMENTATION
#include "prg.h"
#include "ex_common.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/stat.h>

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
    if (prg_npz_write(path, names, a, 2) != PRG_OK) { fprintf(stderr, "%s\n", prg_last_error()); return 1; }
    prg_free(d); prg_free(l);
    return 0;
}

/* Image i of class k of a folder tree: [h][w][c], c = 1 or 3. */
static void draw_stripes(uint8_t *px, int w, int h, int c, int k, prg_rng *r) {
    int x, y, ch;
    for (y = 0; y < h; y++)
        for (x = 0; x < w; x++) {
            int t = k % 3 == 0 ? y : k % 3 == 1 ? x : x + y, on = (t / 3) % 2;
            for (ch = 0; ch < c; ch++)
                px[((size_t)y * w + x) * c + ch] = (uint8_t)((on ? 170 : 40) + 25 * ((k + ch) % 3) + (int)prg_rng_below(r, 30));
        }
}

static int folder(const char *dir, int n, int nclasses, char **names) {
    char p[2048];
    int k, i;
    prg_rng r;
    uint8_t *px = (uint8_t *)prg_alloc(31 * 31 * 3);
    if (!px) return 1;
    prg_rng_seed(&r, 3, 0);
    for (k = 0; k < nclasses; k++) {
        snprintf(p, sizeof(p), "%s/%s", dir, names[k]);
        if (mkdir(p, 0777) && errno != EEXIST) { perror(p); return 1; }
        for (i = 0; i < n; i++) {
            int w = 21 + 4 * (i % 3) + k, h = 19 + 6 * ((i + k) % 3), grey = k == 0 && i == 2;
            const char *ext = grey ? "pgm" : i % 3 == 0 ? "png" : i % 3 == 1 ? "PNG" : "ppm";
            prg_result res;
            draw_stripes(px, w, h, grey ? 1 : 3, k, &r);
            snprintf(p, sizeof(p), "%s/%s/%d.%s", dir, names[k], i, ext);
            res = (ext[1] == 'n' || ext[1] == 'N') ? prg_png_write(p, px, h, w, 3) : prg_pnm_write(p, px, h, w, grey ? 1 : 3);
            if (res != PRG_OK) { fprintf(stderr, "%s\n", prg_last_error()); return 1; }
        }
    }
    prg_free(px);
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
    if (argc >= 6 && !strcmp(argv[1], "folder")) {
        if (mkdir(argv[2], 0777) && errno != EEXIST) { perror(argv[2]); return 1; }
        return folder(argv[2], (int)ex_parse_i64("N_PER_CLASS", argv[3], 1, 100000), argc - 4, argv + 4);
    }
    if (argc == 5 && (!strcmp(argv[1], "pgm") || !strcmp(argv[1], "image"))) {
        size_t len = strlen(argv[4]);
        int png = len > 4 && !strcmp(argv[4] + len - 4, ".png");
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
        if ((png ? prg_png_write(argv[4], px, ds.h, ds.w, ds.c) : prg_pnm_write(argv[4], px, ds.h, ds.w, ds.c)) != PRG_OK) {
            fprintf(stderr, "%s\n", prg_last_error());
            return 1;
        }
        if (!ex_quiet) printf("%s: image %d of %s, label %d\n", argv[4], i, argv[2], (int)ds.labels[i]);
        prg_free(px); prg_dataset_free(&ds);
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "--help")) fprintf(stderr, "make_tiny_dataset: bad arguments\n");
    printf("usage: make_tiny_dataset cifar10 DIR N_TRAIN N_TEST\n"
           "       make_tiny_dataset imagenet64 DIR N_TRAIN N_TEST [SIDE (64, 8..256)]\n"
           "       make_tiny_dataset image DATASET INDEX OUT.png|OUT.pgm|OUT.ppm\n"
           "       make_tiny_dataset folder DIR N_PER_CLASS NAME NAME...\n"
           "       (N_TRAIN, N_TEST 0..1000000; --quiet: no line in image mode)\n");
    return argc > 1 && !strcmp(argv[1], "--help") ? 0 : 2;
}
