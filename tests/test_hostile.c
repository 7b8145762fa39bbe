/* Hostile files and careless hands: a red-team corpus for the library.
   Every case is a small file written here (or a call with bad arguments)
   with its required outcome: the error code, a message naming the file,
   field or limit, nothing changed or overwritten, and a bounded peak
   memory (getrusage ru_maxrss: each loader given a hostile file of at most
   a few MB stays under PEAK_MB more than the process's peak before it,
   while honouring what the file claims would take 100 MB to GBs). */
#define _POSIX_C_SOURCE 200809L
#define PRG_IMPLEMENTATION
#include "../prg.h"
#include "prg_test.h"
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define PEAK_MB 48 /* the bound on a hostile file's extra peak memory */

static char dir[256];

static const char *tp(const char *name) {
    static char buf[16][600];
    static int k = 0;
    k = (k + 1) & 15;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static long peak_kb(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_maxrss; /* KiB on Linux */
}

static int has(const char *s) { return strstr(prg_last_error(), s) != NULL; }

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (f) {
        if (n) fwrite(p, 1, n, f);
        fclose(f);
    }
}

/* ---- rewriting a checkpoint with one change -------------------------- */

typedef struct edit {
    const char *key, *value;  /* metadata key set to value (added when absent) */
    const char *tensor;       /* this tensor ... */
    int dtype;                /* ... stored as this dtype (zeros), or -1 */
    float fill;               /* ... or, dtype -1 and tensor given, filled with this value */
} edit;

static int rewrite(const char *src, const char *dst, edit e) {
    prg_st *st;
    prg_st_tensor *t;
    const char **meta;
    void **bufs;
    int n, nm, i, k = 0, found = 0;
    prg_result r;
    if (prg_st_open(&st, src) != PRG_OK) return 0;
    n = prg_st_num_tensors(st);
    nm = prg_st_num_metadata(st);
    t = (prg_st_tensor *)calloc((size_t)n, sizeof *t);
    bufs = (void **)calloc((size_t)n, sizeof *bufs);
    meta = (const char **)calloc((size_t)(2 * nm + 2), sizeof *meta);
    for (i = 0; i < n; i++) {
        const prg_st_info *in = prg_st_info_at(st, i);
        int d;
        t[i].name = in->name;
        t[i].ndim = in->ndim;
        for (d = 0; d < in->ndim; d++) t[i].shape[d] = in->shape[d];
        t[i].dtype = in->dtype;
        bufs[i] = malloc((size_t)in->nbytes + 8);
        prg_st_read_raw(st, in->name, bufs[i], (size_t)in->nbytes);
        if (e.tensor && !strcmp(e.tensor, in->name)) {
            if (e.dtype >= 0) {
                free(bufs[i]);
                bufs[i] = calloc(in->count + 1, prg_dtype_bytes((prg_dtype)e.dtype));
                t[i].dtype = (prg_dtype)e.dtype;
            } else {
                size_t j;
                for (j = 0; j < in->count; j++) ((float *)bufs[i])[j] = e.fill;
            }
        }
        t[i].data = bufs[i];
    }
    for (i = 0; i < nm; i++) {
        const char *key, *value;
        prg_st_metadata_at(st, i, &key, &value);
        meta[k++] = key;
        if (e.key && !strcmp(key, e.key)) {
            value = e.value;
            found = 1;
        }
        meta[k++] = value;
    }
    if (e.key && !found) {
        meta[k++] = e.key;
        meta[k++] = e.value;
    }
    r = prg_st_write(dst, t, n, meta, k / 2);
    for (i = 0; i < n; i++) free(bufs[i]);
    free(bufs);
    free(t);
    free(meta);
    prg_st_close(st);
    return r == PRG_OK;
}

static edit meta_edit(const char *key, const char *value) {
    edit e;
    memset(&e, 0, sizeof e);
    e.key = key;
    e.value = value;
    e.dtype = -1;
    return e;
}

static edit tensor_edit(const char *tensor, int dtype, float fill) {
    edit e;
    memset(&e, 0, sizeof e);
    e.tensor = tensor;
    e.dtype = dtype;
    e.fill = fill;
    return e;
}

/* ---- gzip members of zeros (a decompression bomb) -------------------- */

static void gz_member(FILE *f, const uint8_t *data, size_t n) {
    static const uint8_t h[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff};
    uint8_t *z = (uint8_t *)malloc(prg_deflate_bound(n)), tr[8];
    size_t zl = prg_deflate(z, data, n);
    uint32_t crc = prg_crc32(0, data, n), len = (uint32_t)n;
    int i;
    for (i = 0; i < 4; i++) {
        tr[i] = (uint8_t)(crc >> (8 * i));
        tr[4 + i] = (uint8_t)(len >> (8 * i));
    }
    fwrite(h, 1, 10, f);
    fwrite(z, 1, zl, f);
    fwrite(tr, 1, 8, f);
    free(z);
}

/* path.gz = head (n bytes) then `mb` MiB of zeros, in 16 MiB members. */
static long write_bomb(const char *path, const uint8_t *head, size_t n, int mb) {
    static uint8_t *zeros = NULL, *zz = NULL;
    static size_t zl = 0;
    const size_t chunk = (size_t)16 << 20;
    FILE *f = fopen(path, "wb");
    long size;
    int i;
    if (!f) return 0;
    gz_member(f, head, n);
    if (!zeros) { /* one compressed member of 16 MiB of zeros, reused */
        FILE *m = tmpfile();
        zeros = (uint8_t *)calloc(chunk, 1);
        gz_member(m, zeros, chunk);
        zl = (size_t)ftell(m);
        zz = (uint8_t *)malloc(zl);
        rewind(m);
        if (fread(zz, 1, zl, m) != zl) zl = 0;
        fclose(m);
        free(zeros);
        zeros = (uint8_t *)1; /* done */
    }
    for (i = 0; i < mb / 16; i++) fwrite(zz, 1, zl, f);
    size = ftell(f);
    fclose(f);
    return size;
}

/* ---- cases ----------------------------------------------------------- */

static prg_unet_config cfg;

static void test_checkpoint_metadata(void) {
    prg_unet *net, *back = NULL;
    prg_classifier *clf, *cback = NULL;
    prg_adam *opt;
    prg_adam_config ac;
    prg_rng rng;
    prg_unet_config big;
    char bigs[512];
    long p0;
    int64_t step = 0;
    float *before;
    size_t np;
    struct stat sb;

    prg_unet_create(&net, &cfg, 1);
    CHECK(prg_unet_save(net, tp("unet.safetensors")) == PRG_OK, "save: %s", prg_last_error());
    stat(tp("unet.safetensors"), &sb);

    /* a config that names a model 200x the file's (cifar32: 52M params, 420 MB) */
    prg_unet_config_preset(&big, "cifar32");
    big.in_channels = big.out_channels = 1;
    prg_unet_config_format(&big, bigs, sizeof bigs);
    rewrite(tp("unet.safetensors"), tp("bigcfg.safetensors"), meta_edit("prg.unet", bigs));
    p0 = peak_kb();
    CHECK(prg_unet_load(&back, tp("bigcfg.safetensors"), NULL) == PRG_ERR_SHAPE && has("bigcfg.safetensors") && has("tensor '") &&
              back == NULL,
          "config larger than the file: %s", prg_last_error());
    CHECK(peak_kb() - p0 < PEAK_MB * 1024, "config larger than the file (%lld bytes): peak grew by %ld KiB", (long long)sb.st_size,
          peak_kb() - p0);

    /* a valid 6-level U-Net of 13k parameters whose metadata declares image_size 4096: one image's forward
       would take 12 GB, refused by PRG_MAX_FORWARD_MB before anything is built; at 64 it loads */
    {
        prg_unet_config six;
        prg_unet *n6;
        prg_classifier *c6, *cl = NULL;
        char text[512];
        static const char *const base =
            "in_channels=1 out_channels=1 model_channels=4 num_res_blocks=1 channel_mult=1,1,1,1,1,1 attention_ds=none "
            "num_heads=1 image_size=%d groups=2";
        snprintf(text, sizeof text, base, 32);
        CHECK(prg_unet_config_parse(&six, text) == PRG_OK && prg_unet_create(&n6, &six, 3) == PRG_OK, "6-level U-Net: %s",
              prg_last_error());
        CHECK(prg_unet_save(n6, tp("six.safetensors")) == PRG_OK, "save: %s", prg_last_error());
        snprintf(text, sizeof text, base, 4096);
        rewrite(tp("six.safetensors"), tp("six4096.safetensors"), meta_edit("prg.unet", text));
        p0 = peak_kb();
        CHECK(prg_unet_load(&back, tp("six4096.safetensors"), NULL) == PRG_ERR_FORMAT && has("six4096.safetensors") &&
                  has("image_size=4096") && has("PRG_MAX_FORWARD_MB") && !back,
              "image_size 4096 in a 13k-parameter file: %s", prg_last_error());
        CHECK(peak_kb() - p0 < PEAK_MB * 1024, "image_size 4096: peak grew by %ld KiB", peak_kb() - p0);
        CHECK(prg_unet_config_parse(&big, text) == PRG_OK && prg_unet_load(&back, tp("six4096.safetensors"), &big) == PRG_OK,
              "the same file with the caller's config: %s", prg_last_error());
        prg_unet_free(back);
        back = NULL;
        snprintf(text, sizeof text, base, 64);
        rewrite(tp("six.safetensors"), tp("six64.safetensors"), meta_edit("prg.unet", text));
        CHECK(prg_unet_load(&back, tp("six64.safetensors"), NULL) == PRG_OK && prg_unet_config_get(back)->image_size == 64,
              "image_size 64: %s", prg_last_error());
        prg_unet_free(back);
        back = NULL;
        /* a classifier at 1024: its U-Net fits (853 MB) with t_span 32, not with 1000 (+ 3.9 GB of ODE states) */
        CHECK(prg_classifier_create(&c6, n6, 2, 32, 0, 5) == PRG_OK && prg_classifier_save(c6, tp("c6.safetensors")) == PRG_OK,
              "6-level classifier: %s", prg_last_error());
        prg_classifier_free(c6);
        snprintf(text, sizeof text, base, 1024);
        rewrite(tp("c6.safetensors"), tp("c6big.safetensors"), meta_edit("prg.unet", text));
        CHECK(prg_classifier_load(&cl, tp("c6big.safetensors"), NULL) == PRG_OK, "classifier at 1024, t_span 32: %s",
              prg_last_error());
        prg_classifier_free(cl);
        cl = NULL;
        rewrite(tp("c6big.safetensors"), tp("c6span.safetensors"), meta_edit("prg.t_span", "1000"));
        p0 = peak_kb();
        CHECK(prg_classifier_load(&cl, tp("c6span.safetensors"), NULL) == PRG_ERR_FORMAT && has("c6span.safetensors") &&
                  has("prg.t_span=1000") && has("image_size=1024") && has("PRG_MAX_FORWARD_MB") && !cl,
              "classifier at 1024 with t_span 1000: %s", prg_last_error());
        CHECK(peak_kb() - p0 < PEAK_MB * 1024, "classifier t_span 1000 at 1024: peak grew by %ld KiB", peak_kb() - p0);
    }

    /* weights in integer dtypes */
    {
        static const int dts[3] = {PRG_DT_U8, PRG_DT_I32, PRG_DT_BOOL};
        int i;
        for (i = 0; i < 3; i++) {
            rewrite(tp("unet.safetensors"), tp("intw.safetensors"), tensor_edit("out.2.weight", dts[i], 0));
            CHECK(prg_unet_load(&back, tp("intw.safetensors"), NULL) == PRG_ERR_FORMAT && has("out.2.weight") &&
                      has(prg_dtype_name((prg_dtype)dts[i])),
                  "weights stored as %s: %s", prg_dtype_name((prg_dtype)dts[i]), prg_last_error());
        }
    }

    /* classifier metadata */
    prg_unet_create(&back, &cfg, 2);
    CHECK(prg_classifier_create(&clf, back, 3, 4, 0, 7) == PRG_OK, "classifier: %s", prg_last_error());
    CHECK(prg_classifier_create(&cback, back, 3, 4, 0, 8) == PRG_ERR_ARG && has("already") && cback == NULL,
          "a second classifier on an owned net: %s", prg_last_error());
    back = NULL;
    CHECK(prg_classifier_save(clf, tp("clf.safetensors")) == PRG_OK, "classifier save: %s", prg_last_error());
    {
        static const char *const bad[][3] = {
            {"prg.t_span", "100000", "PRG_MAX_T_SPAN"},  {"prg.t_span", "1", "prg.t_span"},
            {"prg.t_span", "12abc", "prg.t_span"},       {"prg.t_cutoff", "-1", "prg.t_cutoff"},
            {"prg.t_cutoff", "4", "prg.t_cutoff"},       {"prg.num_classes", "1000000", "PRG_MAX_CLASSES"},
            {"prg.num_classes", "1000", "rows"},         {"prg.num_classes", "99999999999999999999", "prg.num_classes"},
            {"prg.path", "sde", "prg.path"},
        };
        size_t i;
        for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            rewrite(tp("clf.safetensors"), tp("badclf.safetensors"), meta_edit(bad[i][0], bad[i][1]));
            p0 = peak_kb();
            CHECK(prg_classifier_load(&cback, tp("badclf.safetensors"), NULL) != PRG_OK && has(bad[i][2]) && has("badclf") && !cback,
                  "classifier %s=%s: %s", bad[i][0], bad[i][1], prg_last_error());
            CHECK(peak_kb() - p0 < PEAK_MB * 1024, "classifier %s=%s: peak grew by %ld KiB", bad[i][0], bad[i][1], peak_kb() - p0);
        }
        rewrite(tp("clf.safetensors"), tp("badclf.safetensors"), tensor_edit("head.fc1.weight", PRG_DT_I32, 0));
        CHECK(prg_classifier_load(&cback, tp("badclf.safetensors"), NULL) == PRG_ERR_FORMAT && has("I32"), "head as I32: %s",
              prg_last_error());
    }

    /* a head of finite but huge weights overflows float: predict refuses the non-finite logits (they made NaN probabilities) */
    {
        size_t count, j;
        float *hp = prg_classifier_head_params(clf, &count), x[256], logits[3];
        for (j = count - 3 * 256; j < count; j++) hp[j] = (j & 1) ? 3e38f : -3e38f;
        for (j = 0; j < 256; j++) x[j] = (float)(j % 7) * 0.1f;
        CHECK(prg_classifier_predict(clf, 1, x, logits) == PRG_ERR_NUMERIC && has("logits"), "head overflowing to inf: %s",
              prg_last_error());
    }

    /* training state */
    prg_adam_config_default(&ac);
    np = prg_unet_num_params(net);
    prg_adam_create(&opt, np, &ac);
    prg_rng_seed(&rng, 5, 0);
    CHECK(prg_train_state_save(net, NULL, opt, &rng, 8, tp("train.safetensors")) == PRG_OK, "training save: %s", prg_last_error());
    before = (float *)malloc(np * sizeof(float));
    memcpy(before, prg_unet_params(net), np * sizeof(float));
    {
        static const char *const bad[][3] = {
            {"prg.step", "-3", "negative"},
            {"prg.step", "99999999999999999999", "prg.step"},
            {"optim.step", "-1", "negative"},
            {"prg.step", " 8", "prg.step"},
            {"prg.rng", "0000000000000000000000000000000000000000000000000000000000000000", "all zero"},
        };
        size_t i;
        for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            rewrite(tp("train.safetensors"), tp("badtrain.safetensors"), meta_edit(bad[i][0], bad[i][1]));
            CHECK(prg_train_state_restore(net, NULL, opt, &rng, &step, tp("badtrain.safetensors")) == PRG_ERR_FORMAT && has(bad[i][2]),
                  "restore with %s=%s: %s", bad[i][0], bad[i][1], prg_last_error());
        }
        rewrite(tp("train.safetensors"), tp("badtrain.safetensors"), tensor_edit("optim.exp_avg_sq.out.2.bias", -1, -1.0f));
        CHECK(prg_train_state_restore(net, NULL, opt, &rng, &step, tp("badtrain.safetensors")) == PRG_ERR_NUMERIC &&
                  has("exp_avg_sq") && has("negative"),
              "negative exp_avg_sq: %s", prg_last_error());
        rewrite(tp("train.safetensors"), tp("badtrain.safetensors"), tensor_edit("optim.exp_avg.out.2.bias", -1, NAN));
        CHECK(prg_train_state_restore(net, NULL, opt, &rng, &step, tp("badtrain.safetensors")) == PRG_ERR_NUMERIC,
              "NaN exp_avg: %s", prg_last_error());
        rewrite(tp("train.safetensors"), tp("badtrain.safetensors"), tensor_edit("optim.exp_avg.out.2.bias", PRG_DT_U8, 0));
        CHECK(prg_train_state_restore(net, NULL, opt, &rng, &step, tp("badtrain.safetensors")) == PRG_ERR_FORMAT && has("U8"),
              "exp_avg as U8: %s", prg_last_error());
        CHECK(memcmp(before, prg_unet_params(net), np * sizeof(float)) == 0 && step == 0, "a refused restore changed the model");
        CHECK(prg_train_state_restore(net, NULL, opt, &rng, &step, tp("train.safetensors")) == PRG_OK && step == 8,
              "the untouched checkpoint restores: %s", prg_last_error());
    }
    free(before);
    prg_adam_free(opt);
    prg_classifier_free(clf);
    prg_unet_free(net);
}

static void test_bombs(void) {
    uint8_t head[64], *px = NULL;
    prg_dataset ds;
    prg_image img;
    long p0, size;
    int w, h, c, k;
    size_t i;

    /* IDX images: 10 images of 28x28 claimed, 256 MiB inflated */
    {
        static uint8_t idx[16 + 7840];
        uint8_t lab[8 + 10] = {0, 0, 8, 1, 0, 0, 0, 10};
        memset(idx, 0, sizeof idx);
        idx[2] = 8; idx[3] = 3; idx[7] = 10; idx[11] = 28; idx[15] = 28;
        size = write_bomb(tp("bomb-images-idx3-ubyte.gz"), idx, sizeof idx, 256);
        printf("  IDX bomb: %ld bytes of gzip, 256 MiB inflated\n", size);
        write_bytes(tp("bomb-labels-idx1-ubyte"), lab, sizeof lab);
        p0 = peak_kb();
        CHECK(prg_dataset_load_idx(&ds, tp("bomb-images-idx3-ubyte.gz"), tp("bomb-labels-idx1-ubyte")) == PRG_ERR_FORMAT &&
                  has("trailing") && has("bomb-images") && !ds.images,
              "IDX bomb: %s", prg_last_error());
        CHECK(peak_kb() - p0 < PEAK_MB * 1024, "IDX bomb (%ld bytes, 256 MiB inflated): peak grew by %ld KiB", size, peak_kb() - p0);
        p0 = peak_kb();
        CHECK(prg_dataset_load(&ds, tp("bomb-images-idx3-ubyte.gz")) == PRG_ERR_FORMAT && has("trailing"), "IDX bomb by detection: %s",
              prg_last_error());
        CHECK(peak_kb() - p0 < PEAK_MB * 1024, "IDX bomb by detection: peak grew by %ld KiB", peak_kb() - p0);
    }
    /* a gzipped 32768 x 32768 PGM: refused by its header */
    k = snprintf((char *)head, sizeof head, "P5\n32768 32768\n255\n");
    write_bomb(tp("huge.pgm.gz"), head, (size_t)k, 64);
    p0 = peak_kb();
    CHECK(prg_pnm_read(tp("huge.pgm.gz"), &px, &h, &w, &c) == PRG_ERR_FORMAT && has("PRG_IMAGE_MAX_PIXELS") && !px,
          "gzipped 32768^2 PGM: %s", prg_last_error());
    CHECK(prg_image_load(&img, tp("huge.pgm.gz"), 0) == PRG_ERR_FORMAT && has("PRG_IMAGE_MAX_PIXELS") && !img.data,
          "gzipped 32768^2 PGM as an image: %s", prg_last_error());
    CHECK(peak_kb() - p0 < PEAK_MB * 1024, "gzipped PGM: peak grew by %ld KiB", peak_kb() - p0);
    /* a gzipped 100 x 100 PGM followed by 256 MiB: the image, and no more read */
    {
        static uint8_t pgm[32 + 10000];
        k = snprintf((char *)pgm, 32, "P5\n100 100\n255\n");
        for (i = 0; i < 10000; i++) pgm[k + i] = (uint8_t)(i * 7);
        write_bomb(tp("small.pgm.gz"), pgm, (size_t)k + 10000, 256);
        p0 = peak_kb();
        CHECK(prg_image_load(&img, tp("small.pgm.gz"), 0) == PRG_OK && img.w == 100 && img.h == 100 && img.data[99] == (uint8_t)(99 * 7),
              "gzipped PGM with trailing data: %s", prg_last_error());
        prg_image_free(&img);
        CHECK(peak_kb() - p0 < PEAK_MB * 1024, "gzipped PGM + 256 MiB: peak grew by %ld KiB", peak_kb() - p0);
    }
    /* a gzipped PNG header (100 x 100) followed by 256 MiB: capped at 8 bytes a pixel + 16 MiB */
    {
        static const uint8_t png[33] = {0x89, 'P', 'N', 'G', 13, 10, 26, 10, 0, 0, 0, 13, 'I', 'H', 'D', 'R',
                                        0, 0, 0, 100, 0, 0, 0, 100, 8, 0, 0, 0, 0, 0, 0, 0, 0};
        write_bomb(tp("bomb.png.gz"), png, sizeof png, 256);
        p0 = peak_kb();
        CHECK(prg_image_load(&img, tp("bomb.png.gz"), 0) == PRG_ERR_FORMAT && has("longer than") && has("PRG_IMAGE_MAX_PIXELS"),
              "gzipped PNG bomb: %s", prg_last_error());
        CHECK(peak_kb() - p0 < PEAK_MB * 1024, "gzipped PNG bomb: peak grew by %ld KiB", peak_kb() - p0);
    }
    /* a gzipped "JPEG" whose header is zeros */
    {
        static const uint8_t jpg[4] = {0xFF, 0xD8, 0xFF, 0x00};
        write_bomb(tp("bomb.jpg.gz"), jpg, sizeof jpg, 256);
        p0 = peak_kb();
        CHECK(prg_image_load(&img, tp("bomb.jpg.gz"), 0) == PRG_ERR_FORMAT && !img.data, "gzipped broken JPEG: %s", prg_last_error());
        CHECK(peak_kb() - p0 < PEAK_MB * 1024, "gzipped broken JPEG: peak grew by %ld KiB", peak_kb() - p0);
    }
    /* prg_file_read_max */
    {
        uint8_t *d = NULL;
        size_t n = 0;
        p0 = peak_kb();
        CHECK(prg_file_read_max(tp("bomb.jpg.gz"), 1 << 20, &d, &n) == PRG_ERR_FORMAT && has("1048576") && !d && !n,
              "prg_file_read_max: %s", prg_last_error());
        CHECK(peak_kb() - p0 < PEAK_MB * 1024, "prg_file_read_max: peak grew by %ld KiB", peak_kb() - p0);
        CHECK(prg_file_read_max(tp("small.pgm.gz"), 1 << 20, &d, &n) == PRG_ERR_FORMAT, "PGM + 256 MiB read whole with a cap");
    }
}

static void test_readers(void) {
    prg_dataset ds;
    prg_image img;
    uint8_t *px = NULL;
    int w, h, c;
    /* a label far past the class count a 20-image dataset could need */
    {
        static uint8_t data[20 * 16];
        int32_t labels[20];
        prg_array a[2];
        const char *names[2] = {"data", "labels"};
        int i;
        for (i = 0; i < 20; i++) labels[i] = i % 3;
        labels[7] = 999999;
        memset(a, 0, sizeof a);
        a[0].dtype = PRG_DT_U8; a[0].ndim = 4; a[0].shape[0] = 20; a[0].shape[1] = 1; a[0].shape[2] = 4; a[0].shape[3] = 4;
        a[0].count = 320; a[0].data = data;
        a[1].dtype = PRG_DT_I32; a[1].ndim = 1; a[1].shape[0] = 20; a[1].count = 20; a[1].data = labels;
        prg_npz_write(tp("labels.npz"), names, a, 2);
        CHECK(prg_dataset_load_npz(&ds, tp("labels.npz")) == PRG_ERR_FORMAT && has("999999") && has("index 7") && has("labels.npz") &&
                  has("PRG_MAX_CLASSES") && !ds.labels,
              "label 999999 in a 20-image npz: %s", prg_last_error());
    }
    /* an npz deflate entry whose zip directory claims 300x its .npy (368
       compressed bytes said to inflate to 110,400): refused before the buffer */
    {
        size_t len, i;
        unsigned char *z = prg_test_read_file("tests/fixtures/io/imagenet8_deflate.npz", &len);
        prg_array arr;
        CHECK(z != NULL, "fixture imagenet8_deflate.npz");
        for (i = 0; z && i + 46 + 8 <= len; i++)
            if (!memcmp(z + i, "PK\1\2", 4) && !memcmp(z + i + 46, "data.npy", 8)) {
                uint32_t cs = (uint32_t)z[i + 20] | (uint32_t)z[i + 21] << 8 | (uint32_t)z[i + 22] << 16 | (uint32_t)z[i + 23] << 24;
                uint32_t us = cs * 300;
                z[i + 24] = (uint8_t)us; z[i + 25] = (uint8_t)(us >> 8); z[i + 26] = (uint8_t)(us >> 16); z[i + 27] = (uint8_t)(us >> 24);
            }
        if (z) write_bytes(tp("usize.npz"), z, len);
        free(z);
        CHECK(prg_npz_read(&arr, tp("usize.npz"), "data") == PRG_ERR_FORMAT && has("refused before allocating") && has("usize.npz") &&
                  !arr.data,
              "npz entry claiming 300x its size: %s", prg_last_error());
    }
    /* a PGM width of 9 digits is one (absurd) number */
    write_bytes(tp("wide.pgm"), "P5\n123456789 1\n255\n\0", 21);
    CHECK(prg_pnm_read(tp("wide.pgm"), &px, &h, &w, &c) == PRG_ERR_FORMAT && has("width 123456789"), "9-digit width: %s",
          prg_last_error());
    /* directories given as files */
    CHECK(prg_image_load(&img, dir, 0) == PRG_ERR_IO && has("directory"), "image from a directory: %s", prg_last_error());
    {
        prg_st *st = NULL;
        CHECK(prg_st_open(&st, dir) == PRG_ERR_IO && has("directory") && !st, "safetensors from a directory: %s",
              prg_last_error());
    }
    CHECK(prg_dataset_load(&ds, dir) != PRG_OK && !has("magic ff ff"), "dataset from a directory: %s", prg_last_error());
    /* an empty IDAT (with a bad CRC, tolerated there) before any image data:
       found by the png fuzzer, a NULL + 0 in the copy of the chunk */
    {
        static const uint8_t png[] = {
            0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d, 0x49, 0x48, 0x44, 0x52, 0, 0, 0, 0x0d, 0, 0, 0, 0x0b,
            0x02, 0, 0, 0, 0, 0xcb, 0x69, 0x40, 0x1c, 0, 0, 0, 0, 0x49, 0x44, 0x41, 0x54, 0x78, 0xda, 0x63, 0x79, 0xba, 0x43, 0xa2,
            0x9b, 0xc7, 0xbb, 0x97, 0xae, 0x26, 0xc3, 0xae, 0x37, 0x11, 0x07, 0xe6, 0x9a, 0xab, 0x25, 0x0c, 0x2c, 0xa2, 0xe8, 0x37,
            0x10, 0xa2, 0xb1, 0x00, 0x49, 0x45, 0x4e, 0xae, 0x44, 0x42, 0x60, 0x82};
        CHECK(prg_png_decode(&img, png, sizeof png, 0, "empty_idat.png") != PRG_OK && !img.data && has("empty_idat.png"),
              "PNG with an empty IDAT: %s", prg_last_error());
    }
}

static void test_arguments(void) {
    prg_st *st = NULL;
    prg_dataset ds;
    prg_image img;
    prg_adam *opt = NULL;
    prg_adam_config ac;
    size_t lo = 7, hi = 7, n;
    float c[4] = {1, 2, 3, 4}, logits[6] = {0}, loss;
    int labels[2] = {1, 3};
    uint8_t out[4];
    CHECK(prg_st_open(NULL, tp("unet.safetensors")) == PRG_ERR_ARG, "safetensors_open(NULL)");
    CHECK(prg_st_open(&st, NULL) == PRG_ERR_ARG && !st, "safetensors_open(path NULL)");
    CHECK(prg_st_num_tensors(NULL) == 0 && prg_st_info_at(NULL, 0) == NULL && prg_st_metadata(NULL, "x") == NULL, "prg_st_* on NULL");
    CHECK(prg_st_read_f32(NULL, "x", c, 1, 0) == PRG_ERR_ARG && prg_st_find(NULL, "x", NULL) == PRG_ERR_ARG, "st read on NULL");
    if (prg_st_open(&st, tp("unet.safetensors")) == PRG_OK) {
        CHECK(prg_st_read_f32(st, "out.2.bias", NULL, 1, 0) == PRG_ERR_ARG, "st_read_f32 into NULL");
        prg_st_close(st);
    }
    CHECK(prg_classifier_forward(NULL, 1, c, c) == PRG_ERR_ARG, "classifier_forward(NULL)");
    CHECK(prg_dataset_load(NULL, "x") == PRG_ERR_ARG && prg_dataset_load(&ds, NULL) == PRG_ERR_ARG, "dataset_load NULL");
    CHECK(prg_image_decode(NULL, out, 4, 0, NULL) == PRG_ERR_ARG && prg_image_decode(&img, NULL, 4, 0, NULL) == PRG_ERR_ARG,
          "image_decode NULL");
    CHECK(prg_inflate(NULL, 4, out, 4, &n, NULL) == PRG_ERR_ARG && prg_inflate(out, 4, NULL, 4, &n, NULL) == PRG_ERR_ARG,
          "inflate NULL");
    prg_adam_config_default(&ac);
    CHECK(prg_adam_create(NULL, 4, &ac) == PRG_ERR_ARG && prg_adam_create(&opt, 4, NULL) == PRG_ERR_ARG && !opt, "adam_create NULL");
    CHECK(prg_sample_euler(NULL, NULL, 2, 1, 4, c) == PRG_ERR_ARG, "sample_euler NULL");
    prg_sgemm(0, 0, 2, 2, 2, 1.0f, NULL, 2, NULL, 2, 0.0f, c, 2);
    CHECK(c[0] == 1 && c[3] == 4, "sgemm with NULL A, B left C alone");
    prg_sgemm(0, 0, 2, 2, 2, 1.0f, c, 2, c, 2, 0.0f, NULL, 2);
    prg_sgemm(0, 0, 2, 2, 2, 1.0f, c, 1, c, 2, 0.0f, c, 2);
    CHECK(c[0] == 1 && c[3] == 4, "sgemm with lda < k left C alone");
    prg_split_range(10, 1, 0, 0, &lo, &hi);
    CHECK(lo == 0 && hi == 0, "split_range with nth = 0 gives an empty part");
    prg_split_range(10, 1, 3, 2, &lo, &hi);
    CHECK(lo == 0 && hi == 0, "split_range with ith >= nth gives an empty part");
    loss = prg_cross_entropy_forward_backward(c, logits, labels, 2, 3, 0.0f);
    CHECK(isnan(loss) && has("label 3") && c[0] == 1, "cross entropy with a label past the class count: %s", prg_last_error());
    CHECK(prg_file_read(NULL, NULL, NULL) == PRG_ERR_ARG, "file_read NULL");
    CHECK(prg_npy_read(NULL, "x.npy") == PRG_ERR_ARG && prg_npz_read(NULL, "x.npz", "data") == PRG_ERR_ARG &&
              prg_dataset_load_idx(NULL, "a", "b") == PRG_ERR_ARG && prg_dataset_load_npz(NULL, "x") == PRG_ERR_ARG &&
              prg_dataset_load_cifar10(NULL, NULL, 1) == PRG_ERR_ARG && prg_dataset_load_cifar10(&ds, NULL, 1) == PRG_ERR_ARG &&
              prg_dataset_load_dir(NULL, "x", 1) == PRG_ERR_ARG && prg_dataset_alloc(NULL, 1, 1, 1, 1, 1) == PRG_ERR_ARG,
          "dataset and array loaders with NULL");
    CHECK(prg_pnm_read(tp("x.pgm"), NULL, NULL, NULL, NULL) == PRG_ERR_ARG && prg_image_load(NULL, "x", 0) == PRG_ERR_ARG,
          "pnm_read / image_load with NULL");
}

static int count_dir_entries(void) {
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    if (!d) return -1;
    while ((e = readdir(d)) != NULL) n += strstr(e->d_name, ".tmp") != NULL;
    closedir(d);
    return n;
}

static void test_saves(void) {
    prg_unet *net, *back = NULL;
    struct stat sb;
    char sub[600], link_target[600];
    size_t len1, len2;
    unsigned char *keep, *now;
    prg_unet_create(&net, &cfg, 3);
    /* refused targets, with their reasons */
    snprintf(sub, sizeof sub, "%s/adir", dir);
    mkdir(sub, 0700);
    CHECK(prg_unet_save(net, sub) == PRG_ERR_IO && has("not a regular file"), "save onto a directory: %s", prg_last_error());
    CHECK(prg_check_writable(sub) == PRG_ERR_IO, "check_writable(directory)");
    CHECK(stat(sub, &sb) == 0 && S_ISDIR(sb.st_mode), "the directory survived");
    CHECK(prg_unet_save(net, "") == PRG_ERR_ARG && has("empty"), "save to the empty name: %s", prg_last_error());
    CHECK(prg_check_writable("") == PRG_ERR_ARG && prg_check_writable(NULL) == PRG_ERR_ARG, "check_writable(empty)");
    CHECK(prg_unet_save(net, tp("missing/model.safetensors")) == PRG_ERR_IO && has("does not exist"), "save into a missing directory: %s",
          prg_last_error());
    CHECK(prg_check_writable(tp("missing/model.safetensors")) == PRG_ERR_IO && has("does not exist"), "check_writable(missing dir)");
    CHECK(prg_check_writable(tp("fresh.safetensors")) == PRG_OK && stat(tp("fresh.safetensors"), &sb) != 0 && count_dir_entries() == 0,
          "check_writable leaves nothing behind: %s", prg_last_error());
    CHECK(prg_unet_save(net, tp("adir/")) != PRG_OK, "save to a name ending in '/'");
    /* a symlink planted at the old temporary name is neither followed nor replaced */
    snprintf(link_target, sizeof link_target, "%s/victim", dir);
    write_bytes(link_target, "precious", 8);
    symlink(link_target, tp("model.safetensors.tmp"));
    CHECK(prg_unet_save(net, tp("model.safetensors")) == PRG_OK, "save next to a planted symlink: %s", prg_last_error());
    keep = prg_test_read_file(link_target, &len1);
    CHECK(keep && len1 == 8 && !memcmp(keep, "precious", 8), "the planted symlink's target was overwritten");
    free(keep);
    /* a symlink at the target itself is replaced, its target untouched */
    unlink(tp("model.safetensors"));
    symlink(link_target, tp("model.safetensors"));
    CHECK(prg_unet_save(net, tp("model.safetensors")) == PRG_OK, "save over a symlink: %s", prg_last_error());
    keep = prg_test_read_file(link_target, &len1);
    CHECK(keep && len1 == 8 && !memcmp(keep, "precious", 8) && lstat(tp("model.safetensors"), &sb) == 0 && S_ISREG(sb.st_mode),
          "save over a symlink wrote through it");
    free(keep);
    /* prg_file_write (the programs' CSV and class lists) replaces a symlink the same way */
    unlink(tp("list.txt"));
    symlink(link_target, tp("list.txt"));
    CHECK(prg_file_write(tp("list.txt"), "a\nb\n", 4) == PRG_OK, "file_write over a symlink: %s", prg_last_error());
    keep = prg_test_read_file(link_target, &len1);
    now = prg_test_read_file(tp("list.txt"), &len2);
    CHECK(keep && len1 == 8 && !memcmp(keep, "precious", 8) && lstat(tp("list.txt"), &sb) == 0 && S_ISREG(sb.st_mode) && now &&
              len2 == 4 && !memcmp(now, "a\nb\n", 4),
          "file_write over a symlink wrote through it");
    free(keep);
    free(now);
    CHECK(prg_file_write(sub, "x", 1) == PRG_ERR_IO && stat(sub, &sb) == 0 && S_ISDIR(sb.st_mode), "file_write onto a directory");
    CHECK(prg_file_write(tp("list.txt"), NULL, 3) == PRG_ERR_ARG && prg_file_write("", "x", 1) == PRG_ERR_ARG,
          "file_write(NULL data / empty name)");
    CHECK(prg_file_write(tp("empty.txt"), NULL, 0) == PRG_OK && stat(tp("empty.txt"), &sb) == 0 && sb.st_size == 0,
          "file_write of nothing: %s", prg_last_error());
    unlink(tp("list.txt"));
    unlink(tp("empty.txt"));
    /* a save that cannot finish (file size limit = disk full) keeps the old file and leaves no temporary */
    {
        struct rlimit old, lim;
        prg_unet *net2;
        prg_result r;
        keep = prg_test_read_file(tp("model.safetensors"), &len1);
        prg_unet_create(&net2, &cfg, 4);
        signal(SIGXFSZ, SIG_IGN);
        getrlimit(RLIMIT_FSIZE, &old);
        lim = old;
        lim.rlim_cur = 65536;
        setrlimit(RLIMIT_FSIZE, &lim);
        r = prg_unet_save(net2, tp("model.safetensors"));
        setrlimit(RLIMIT_FSIZE, &old);
        signal(SIGXFSZ, SIG_DFL);
        now = prg_test_read_file(tp("model.safetensors"), &len2);
        CHECK(r == PRG_ERR_IO && has("unchanged"), "save past the file size limit: %d %s", (int)r, prg_last_error());
        CHECK(keep && now && len1 == len2 && !memcmp(keep, now, len1), "a failed save changed the old file");
        CHECK(count_dir_entries() == 0 || (count_dir_entries() == 1 && lstat(tp("model.safetensors.tmp"), &sb) == 0),
              "a failed save left a temporary file");
        CHECK(prg_unet_load(&back, tp("model.safetensors"), NULL) == PRG_OK, "the old file still loads: %s", prg_last_error());
        prg_unet_free(back);
        free(keep);
        free(now);
        prg_unet_free(net2);
    }
    prg_unet_free(net);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/prg_test_hostile_%d", (int)getpid());
    mkdir(dir, 0700);
    prg_set_num_threads(1);
    /* a 1-channel 16x16 U-Net of 32 channels (1.3 MB of weights) */
    if (prg_unet_config_parse(&cfg, "in_channels=1 out_channels=1 model_channels=32 num_res_blocks=1 channel_mult=1,2 "
                                    "attention_ds=2 num_heads=2 image_size=16 groups=32") != PRG_OK) {
        printf("config: %s\n", prg_last_error());
        return 1;
    }
    test_bombs();
    test_checkpoint_metadata();
    test_readers();
    test_arguments();
    test_saves();
    {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        if (system(cmd) != 0) printf("  could not remove %s\n", dir);
    }
    printf("peak memory of the whole test: %ld KiB\n", peak_kb());
    return prg_test_finish("test_hostile");
}
