/* libFuzzer targets for every entry a file reaches.  One binary holds them
   all; the environment variable FUZZ_TARGET picks one (`make fuzz` runs each
   in turn):
       clang -O1 -g -fsanitize=fuzzer,address,undefined -I. tools/fuzz_files.c -lm -pthread -o fuzz_files
       FUZZ_TARGET=ckpt ./fuzz_files -rss_limit_mb=2048 -max_len=1048576 corpus/
   (-DFUZZ_<TARGET> sets the default, as the older one-target builds did.)

     jpeg, png     prg_jpeg_decode / prg_png_decode from memory
     image         prg_image_load: JPEG, PNG, PGM/PPM, each raw or gzip-wrapped
     pnm           prg_pnm_read (raw or gzip-wrapped)
     safetensors   prg_st_open and every tensor read
     ckpt          prg_unet_load and prg_classifier_load (config from the
                   metadata; seeds are small valid checkpoints, so the
                   mutations reach the metadata, the tensor table and data)
     restore       prg_train_state_restore into a U-Net, Adam and RNG of the
                   seed's config (FUZZ_CONFIG below)
     npz, npy      prg_npz_read + prg_dataset_load_npz, prg_npy_read
     idx           prg_dataset_load_idx: <u16 little-endian n><n bytes images><labels>
     cifar         CIFAR-10 and CIFAR-100 (coarse and fine) binary
     detect        prg_dataset_load's format detection: byte 0 picks the file
                   name (IDX, .npz, CIFAR names, other), the rest is the file
     lists         the programs' list files (examples/ex_common.h): byte 0
                   picks the reader (PREFIX_classes.txt / classify --labels
                   lines, prepare's --classes as whole lines or first words,
                   --val-labels / val_annotations.txt pairs and labels), the
                   rest is the file, read from memory and from disk
     flags         the programs' flag parser (ex_common.h): the input is an
                   argv (NUL-separated) run through a flag loop with every
                   kind of value (ranged 64-bit integers, seeds, finite
                   numbers, integer lists, the U-Net flags and config); each
                   accepted value is checked against a parser of its own, in
                   range and whole, and each refusal must be one too

   The real limits are tested: nothing here lowers PRG_IMAGE_MAX_PIXELS or
   the other documented bounds, and `make fuzz` runs with
   -rss_limit_mb=2048 (also libFuzzer's malloc limit) and inputs up to
   1 MiB: a hostile input that makes any reader allocate or keep more than
   2 GiB is reported as a failure.  A read may fail but must not crash,
   leak, read out of bounds or trip UBSan, and a failure leaves its output
   empty.  The library is not changed by the harness (the pixel cap
   included).

   The checkpoint seeds in tests/fixtures/fuzz/ come from this file built
   with -DFUZZ_MAKE_SEEDS (a plain program, no libFuzzer):
       cc -DFUZZ_MAKE_SEEDS -I. tools/fuzz_files.c -lm -pthread -o s && ./s tests/fixtures/fuzz */
#define _POSIX_C_SOURCE 200809L
#define PRG_IMPLEMENTATION
#include "prg.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <setjmp.h>

#ifndef FUZZ_MAKE_SEEDS
/* The programs' helpers, their exits turned into a return to the flag loop
   and their messages sent to /dev/null (libFuzzer's own go to stderr). */
static jmp_buf fuzz_exit_jmp;
static FILE *fuzz_null;
#define EX_EXIT(code) longjmp(fuzz_exit_jmp, (code) + 1)
#undef stderr
#define stderr fuzz_null
#include "examples/ex_common.h"
#undef stderr
#define stderr stderr
#endif

/* The small U-Net of the checkpoint seeds (3,405 parameters, 4x4 images). */
#define FUZZ_CONFIG                                                                                      \
    "in_channels=1 out_channels=1 model_channels=4 num_res_blocks=1 channel_mult=1 attention_ds=1 " \
    "num_heads=1 image_size=4 groups=2"

#ifdef FUZZ_MAKE_SEEDS
static int save_seeds(const char *dir) {
    prg_unet_config c;
    prg_unet *net;
    prg_classifier *clf;
    prg_adam *opt;
    prg_adam_config ac;
    prg_rng rng;
    char p[512];
    uint8_t rec[2 * 3074];
    int i;
    if (prg_unet_config_parse(&c, FUZZ_CONFIG) || prg_unet_create(&net, &c, 1)) return 1;
    snprintf(p, sizeof p, "%s/seed_unet.safetensors", dir);
    if (prg_unet_save(net, p)) return 1;
    prg_adam_config_default(&ac);
    if (prg_adam_create(&opt, prg_unet_num_params(net), &ac)) return 1;
    prg_rng_seed(&rng, 3, 0);
    snprintf(p, sizeof p, "%s/seed_train.safetensors", dir);
    if (prg_train_state_save(net, NULL, opt, &rng, 5, p)) return 1;
    prg_adam_free(opt);
    if (prg_classifier_create(&clf, net, 3, 4, 1, 2)) return 1;
    snprintf(p, sizeof p, "%s/seed_classifier.safetensors", dir);
    if (prg_classifier_save(clf, p)) return 1;
    prg_classifier_free(clf);
    /* two CIFAR-100 records (coarse, fine, 3072 pixels) and a 5x3 PGM / 2x2 PPM */
    for (i = 0; i < (int)sizeof rec; i++) rec[i] = (uint8_t)(i * 13);
    rec[0] = 3; rec[1] = 7; rec[3074] = 1; rec[3075] = 42;
    snprintf(p, sizeof p, "%s/seed_cifar100.bin", dir);
    {
        FILE *f = fopen(p, "wb");
        if (!f || fwrite(rec, 1, sizeof rec, f) != sizeof rec) return 1;
        fclose(f);
    }
    snprintf(p, sizeof p, "%s/seed.pgm", dir);
    if (prg_pnm_write(p, rec, 3, 5, 1)) return 1;
    snprintf(p, sizeof p, "%s/seed.ppm", dir);
    if (prg_pnm_write(p, rec, 2, 2, 3)) return 1;
    return 0;
}
int main(int argc, char **argv) {
    if (save_seeds(argc > 1 ? argv[1] : ".")) {
        fprintf(stderr, "%s\n", prg_last_error());
        return 1;
    }
    return 0;
}
#else

enum { T_JPEG, T_PNG, T_IMAGE, T_PNM, T_SAFETENSORS, T_CKPT, T_RESTORE, T_NPZ, T_NPY, T_IDX, T_CIFAR, T_DETECT, T_LISTS, T_FLAGS,
       T_COUNT };
static const char *const target_names[T_COUNT] = {"jpeg", "png", "image", "pnm", "safetensors", "ckpt", "restore",
                                                  "npz", "npy", "idx", "cifar", "detect", "lists", "flags"};
#if defined(FUZZ_JPEG)
static int target = T_JPEG;
#elif defined(FUZZ_PNG)
static int target = T_PNG;
#elif defined(FUZZ_SAFETENSORS)
static int target = T_SAFETENSORS;
#elif defined(FUZZ_NPZ)
static int target = T_NPZ;
#elif defined(FUZZ_IDX)
static int target = T_IDX;
#else
static int target = -1;
#endif

static char tmpdir[128];

/* Writes data to <tmpdir>/<name> and returns the path. */
static const char *tmp_file(const char *name, const uint8_t *data, size_t size) {
    static char path[4][300];
    static int k = 0;
    FILE *f;
    k = (k + 1) & 3;
    snprintf(path[k], sizeof path[k], "%s/%s", tmpdir, name);
    f = fopen(path[k], "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    fclose(f);
    return path[k];
}

static prg_unet *r_net;
static prg_adam *r_opt;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    const char *t = getenv("FUZZ_TARGET");
    int i;
    (void)argc;
    (void)argv;
    for (i = 0; t && i < T_COUNT; i++)
        if (!strcmp(t, target_names[i])) target = i;
    if (target < 0) {
        fprintf(stderr, "fuzz_files: set FUZZ_TARGET to one of:");
        for (i = 0; i < T_COUNT; i++) fprintf(stderr, " %s", target_names[i]);
        fprintf(stderr, "\n");
        exit(2);
    }
    snprintf(tmpdir, sizeof tmpdir, "/tmp/prg_fuzz_%d", (int)getpid());
    if (mkdir(tmpdir, 0700) != 0 && access(tmpdir, W_OK) != 0) abort();
    if (target == T_RESTORE) {
        prg_unet_config c;
        prg_adam_config ac;
        prg_adam_config_default(&ac);
        if (prg_unet_config_parse(&c, FUZZ_CONFIG) || prg_unet_create(&r_net, &c, 1) ||
            prg_adam_create(&r_opt, prg_unet_num_params(r_net), &ac))
            abort();
    }
    fuzz_null = fopen("/dev/null", "w");
    if (!fuzz_null) abort();
    prg_set_num_threads(1);
    return 0;
}

/* ---- lists ---------------------------------------------------------- */

static void check_lines(const ex_lines *l, const uint8_t *data, size_t size) {
    size_t nl = 0, i;
    int k;
    for (i = 0; i < size; i++) nl += data[i] == '\n';
    if (size && data[size - 1] != '\n') nl++;
    if ((size_t)l->n != nl) abort();
    for (k = 0; k < l->n; k++) { /* each line is its text up to the '\n' (without one '\r' before it) */
        size_t off = (size_t)(l->v[k] - l->text), len = strlen(l->v[k]);
        if (off + len > size || memchr(l->v[k], '\n', len) || memcmp(l->v[k], data + off, len)) abort();
        if (off + len < size && data[off + len] != '\n' &&
            !(data[off + len] == '\r' && (off + len + 1 == size || data[off + len + 1] == '\n')))
            abort(); /* a line ends at '\n', '\r\n' or (the last) at the end, one '\r' there dropped */
    }
}

static void fuzz_lists(const uint8_t *data, size_t size) {
    static char *const classes[3] = {"n01440764", "tench", "a b"};
    ex_lines l, f;
    char err[768];
    int mode, max_lines, k;
    if (size < 1) return;
    mode = data[0] & 3;
    max_lines = (data[0] & 0x80) ? (data[0] >> 2) & 31 : INT_MAX;
    data++;
    size--;
    if (!ex_lines_parse(&l, (const char *)data, size, max_lines, "fuzz", err, sizeof err)) {
        if (l.text || l.v || !err[0]) abort();
        if (!memchr(data, 0, size) && !strstr(err, "lines, more than")) abort();
        return;
    }
    check_lines(&l, data, size);
    if (mode == 0) { /* the same from a file */
        if (!ex_lines_read(&f, tmp_file("classes.txt", data, size), max_lines, err, sizeof err)) abort();
        if (f.n != l.n) abort();
        for (k = 0; k < l.n; k++)
            if (strcmp(f.v[k], l.v[k])) abort();
        ex_lines_free(&f);
    } else if (mode == 1 || mode == 2) { /* prepare --classes: whole lines (folder) or first words (ImageNet) */
        if (ex_class_list(&l, mode == 2, "fuzz", err, sizeof err)) {
            if (l.n > PRG_MAX_CLASSES) abort();
            for (k = 0; k < l.n; k++) {
                int j;
                if (!l.v[k][0]) abort();
                if (mode == 2 && strpbrk(l.v[k], " \t\r\v\f")) abort();
                if (mode == 1 && (strchr(l.v[k], '/') || !strcmp(l.v[k], ".") || !strcmp(l.v[k], ".."))) abort();
                for (j = 0; j < k && l.n <= 512; j++)
                    if (!strcmp(l.v[j], l.v[k])) abort(); /* accepted with a class twice */
            }
        }
    } else { /* val label pairs: '<file> <wnid or 1-based label>' */
        for (k = 0; k < l.n; k++) {
            char *a, *b;
            int c;
            ex_words2(l.v[k], &a, &b);
            if (strpbrk(a, " \t\r\v\f") || strpbrk(b, " \t\r\v\f") || (!*a && *b)) abort();
            c = ex_val_label(*b ? b : a, classes, 3);
            if (c < -1 || c > 2) abort();
        }
    }
    ex_lines_free(&l);
}

/* ---- flags ---------------------------------------------------------- */

/* Whole decimal integer, optional sign, in [lo, hi]: the parser's rule, written apart. */
static int ref_i64(const char *s, int64_t lo, int64_t hi, int64_t *out) {
    int neg = 0, big = 0;
    uint64_t m = 0;
    if (*s == '+' || *s == '-') neg = *s++ == '-';
    if (!*s) return 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return 0;
        if (m > (UINT64_MAX - 9) / 10) big = 1;
        else m = m * 10 + (uint64_t)(*s - '0');
    }
    if (big || m > (uint64_t)INT64_MAX + (uint64_t)neg) return 0;
    *out = neg ? (m == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)m) : (int64_t)m;
    return *out >= lo && *out <= hi;
}
static int ref_u64(const char *s, uint64_t *out) {
    int hex = s[0] == '0' && (s[1] == 'x' || s[1] == 'X');
    uint64_t m = 0, base = hex ? 16 : 10;
    if (hex) s += 2;
    else if (*s == '+') s++; /* a sign only before decimal digits; '-' is refused */
    if (!*s) return 0;
    for (; *s; s++) {
        int d = *s >= '0' && *s <= '9' ? *s - '0' : hex && *s >= 'a' && *s <= 'f' ? *s - 'a' + 10 : hex && *s >= 'A' && *s <= 'F' ? *s - 'A' + 10 : -1;
        if (d < 0) return 0;
        if (m > (UINT64_MAX - (uint64_t)d) / base) return 0;
        m = m * base + (uint64_t)d;
    }
    *out = m;
    return 1;
}

/* What the flag being parsed wants, for the refusal check. */
static int want_kind; /* 0 none, 1 integer, 2 seed, 3 number, 4 list */
static int64_t want_lo, want_hi;
static int want_open; /* a number flag whose lower bound is excluded */
static const char *want_str; /* its value (NULL: missing) */
static const char *want_val(void) { return ex_argi + 1 < ex_argc ? ex_argv[ex_argi + 1] : NULL; }

static void fuzz_flags(const uint8_t *data, size_t size) {
    static char buf[4097];
    char *argv[34];
    volatile int argc = 1;
    int code;
    size_t i, start = 0;
    ex_net_flags nf;
    prg_unet_config cfg;
    if (size > 4096) size = 4096;
    memcpy(buf, data, size);
    buf[size] = 0;
    argv[0] = (char *)"fuzz";
    for (i = 0; i <= size && argc < 33; i++)
        if (!buf[i]) {
            argv[argc++] = buf + start;
            start = i + 1;
        }
    argv[argc] = NULL;
    ex_net_flags_init(&nf, "tiny32");
    ex_argc = argc;
    ex_argv = argv;
    ex_argi = 1;
    want_kind = 0;
    if ((code = setjmp(fuzz_exit_jmp)) != 0) {
        /* refused: a bad value of the flag being read (never one the reference takes), a missing value, an unknown flag, a bad config */
        const char *v = want_kind ? want_str : NULL;
        int64_t x;
        uint64_t u;
        double d;
        char *end;
        if (code - 1 != 2 && code - 1 != 1) abort();
        if (want_kind == 1 && v && ref_i64(v, want_lo, want_hi, &x)) abort();
        if (want_kind == 2 && v && ref_u64(v, &u)) abort();
        if (want_kind == 3 && v && (d = strtod(v, &end), end != v && !*end && !isspace((unsigned char)*v) && d >= (double)want_lo && d <= (double)want_hi && d == d &&
                                 !(want_open && d == (double)want_lo)))
            abort();
        return;
    }
    for (; ex_argi < ex_argc; ex_argi++) {
        int64_t x, r;
        uint64_t u;
        double d;
        int list[PRG_UNET_MAX_LEVELS], n, k;
        const char *v = want_val();
        want_kind = 0;
        want_str = v;
        if (ex_net_flag(&nf)) continue;
        if (EX_FLAG("--steps") || EX_FLAG("--batch") || EX_FLAG("--top") || EX_FLAG("--t-span")) {
            static const int64_t lo[4] = {0, 1, 1, 2}, hi[4] = {INT_MAX, 4096, 1000000, 1000};
            int f = EX_FLAG("--steps") ? 0 : EX_FLAG("--batch") ? 1 : EX_FLAG("--top") ? 2 : 3;
            want_kind = 1; want_lo = lo[f]; want_hi = hi[f];
            x = ex_i64(lo[f], hi[f]);
            if (!ref_i64(v, lo[f], hi[f], &r) || r != x) abort();
        } else if (EX_FLAG("--limit")) {
            want_kind = 1; want_lo = INT64_MIN; want_hi = INT64_MAX;
            x = ex_i64(INT64_MIN, INT64_MAX);
            if (!ref_i64(v, INT64_MIN, INT64_MAX, &r) || r != x) abort();
        } else if (EX_FLAG("--seed")) {
            want_kind = 2;
            u = ex_seed();
            {
                uint64_t ru;
                if (!ref_u64(v, &ru) || ru != u) abort();
            }
        } else if (EX_FLAG("--lr") || EX_FLAG("--val-fraction")) {
            int lr = EX_FLAG("--lr");
            want_kind = 3; want_lo = 0; want_hi = 1; want_open = lr;
            d = ex_num_in(0, 1, lr);
            if (!(d >= 0 && d <= 1) || (lr && d == 0)) abort();
        } else if (EX_FLAG("--mean")) {
            want_kind = 4;
            n = ex_int_list("--mean", ex_val(), list, PRG_UNET_MAX_LEVELS, -5, 5);
            if (n < 1 || n > PRG_UNET_MAX_LEVELS) abort();
            for (k = 0; k < n; k++)
                if (list[k] < -5 || list[k] > 5) abort();
        } else if (EX_FLAG("--out")) {
            (void)ex_val();
        } else if (EX_FLAG("--quiet")) {
            continue;
        } else {
            ex_bad_flag();
        }
    }
    /* the U-Net flags make a config that checks, or exit naming the flag */
    want_kind = 0;
    ex_net_config(&cfg, &nf, 3);
    if (prg_unet_config_check(&cfg) != PRG_OK) abort();
    if (nf.image_size && cfg.image_size != nf.image_size) abort();
}

static void check_image(prg_result r, prg_image *img) {
    if (r == PRG_OK) {
        if (!img->data || img->w <= 0 || img->h <= 0 || (uint64_t)img->w * (uint64_t)img->h > PRG_IMAGE_MAX_PIXELS) abort();
        prg_image_free(img);
    } else if (img->data) {
        abort();
    }
}

static void check_dataset(prg_result r, prg_dataset *ds) {
    int i;
    if (r == PRG_OK) {
        for (i = 0; i < ds->n; i++)
            if (ds->labels[i] < 0 || ds->labels[i] >= ds->num_classes) abort();
        prg_dataset_free(ds);
    } else if (ds->images || ds->labels) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    prg_image img;
    prg_dataset ds;
    prg_array a;
    const char *p;
    switch (target) {
    case T_JPEG:
        check_image(prg_jpeg_decode(&img, data, size, (int)(size % 5), "fuzz.jpg"), &img);
        break;
    case T_PNG:
        check_image(prg_png_decode(&img, data, size, (int)(size % 5), "fuzz.png"), &img);
        break;
    case T_IMAGE:
        check_image(prg_image_load(&img, tmp_file("image", data, size), (int)(size % 5)), &img);
        break;
    case T_PNM: {
        uint8_t *px = NULL;
        int w, h, c;
        if (prg_pnm_read(tmp_file("image.pnm", data, size), &px, &h, &w, &c) == PRG_OK) {
            if (!px || (uint64_t)w * (uint64_t)h > PRG_IMAGE_MAX_PIXELS) abort();
            prg_free(px);
        } else if (px) {
            abort();
        }
        break;
    }
    case T_SAFETENSORS: {
        prg_st *st = NULL;
        if (prg_st_open(&st, tmp_file("t.safetensors", data, size)) == PRG_OK) {
            int i;
            for (i = 0; i < prg_st_num_tensors(st); i++) {
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
        break;
    }
    case T_CKPT: {
        prg_unet *net = NULL;
        prg_classifier *clf = NULL;
        p = tmp_file("c.safetensors", data, size);
        if (prg_unet_load(&net, p, NULL) == PRG_OK) prg_unet_free(net);
        else if (net) abort();
        if (prg_classifier_load(&clf, p, NULL) == PRG_OK) {
            if (prg_classifier_num_classes(clf) < 1 || prg_classifier_num_classes(clf) > PRG_MAX_CLASSES) abort();
            prg_classifier_free(clf);
        } else if (clf) {
            abort();
        }
        break;
    }
    case T_RESTORE: {
        prg_rng rng;
        int64_t step = -7;
        if (prg_train_state_restore(r_net, NULL, r_opt, &rng, &step, tmp_file("r.safetensors", data, size)) == PRG_OK) {
            if (step < 0 || prg_adam_step_count(r_opt) < 0 || !(rng.s[0] | rng.s[1] | rng.s[2] | rng.s[3])) abort();
        } else if (step != -7) {
            abort(); /* a refused restore changes nothing */
        }
        break;
    }
    case T_NPZ:
        p = tmp_file("a.npz", data, size);
        if (prg_npz_read(&a, p, "data") == PRG_OK) prg_array_free(&a);
        else if (a.data) abort();
        check_dataset(prg_dataset_load_npz(&ds, p), &ds);
        break;
    case T_NPY:
        if (prg_npy_read(&a, tmp_file("a.npy", data, size)) == PRG_OK) prg_array_free(&a);
        else if (a.data) abort();
        break;
    case T_IDX: {
        size_t n;
        const char *pi, *pl;
        if (size < 2) return 0;
        n = (size_t)data[0] | ((size_t)data[1] << 8);
        if (n > size - 2) n = size - 2;
        pi = tmp_file("images", data + 2, n);
        pl = tmp_file("labels", data + 2 + n, size - 2 - n);
        check_dataset(prg_dataset_load_idx(&ds, pi, pl), &ds);
        break;
    }
    case T_CIFAR:
        p = tmp_file("data_batch_1.bin", data, size);
        check_dataset(prg_dataset_load_cifar10(&ds, &p, 1), &ds);
        check_dataset(prg_dataset_load_cifar100(&ds, &p, 1, 1), &ds);
        check_dataset(prg_dataset_load_cifar100(&ds, &p, 1, 0), &ds);
        break;
    case T_DETECT: {
        static const char *const names[8] = {"train-images-idx3-ubyte", "t10k-labels-idx1-ubyte.gz", "d.npz", "data_batch_1.bin",
                                             "test_batch.bin", "cifar-100-binary/train.bin", "test.bin", "data.bin"};
        char sub[300];
        if (size < 1) return 0;
        snprintf(sub, sizeof sub, "%s/cifar-100-binary", tmpdir);
        mkdir(sub, 0700);
        check_dataset(prg_dataset_load(&ds, tmp_file(names[data[0] & 7], data + 1, size - 1)), &ds);
        break;
    }
    case T_LISTS:
        fuzz_lists(data, size);
        break;
    case T_FLAGS:
        fuzz_flags(data, size);
        break;
    default:
        abort();
    }
    return 0;
}
#endif
