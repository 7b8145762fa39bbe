/* libFuzzer targets for every entry a file reaches.  One binary holds them
   all; the environment variable FUZZ_TARGET picks one (`make fuzz` runs each
   in turn):
       clang -O1 -g -fsanitize=fuzzer,address,undefined -I. tools/fuzz_files.c -lm -pthread -o fuzz_files
       FUZZ_TARGET=ckpt ./fuzz_files -rss_limit_mb=2048 -max_len=1048576 corpus/
   (-DFUZZ_<TARGET> sets the default, as the older one-target builds did.)

     jpeg, png     prg_jpeg_decode / prg_png_decode from memory
     image         prg_image_load: JPEG, PNG, PGM/PPM, each raw or gzip-wrapped
     pnm           prg_pnm_read (raw or gzip-wrapped)
     safetensors   prg_safetensors_open and every tensor read
     ckpt          prg_unet_load and prg_classifier_load (config from the
                   metadata; seeds are small valid checkpoints, so the
                   mutations reach the metadata, the tensor table and data)
     restore       prg_checkpoint_restore into a U-Net, Adam and RNG of the
                   seed's config (FUZZ_CONFIG below)
     npz, npy      prg_npz_load + prg_dataset_load_npz, prg_npy_load
     idx           prg_dataset_load_idx: <u16 little-endian n><n bytes images><labels>
     cifar         CIFAR-10 and CIFAR-100 (coarse and fine) binary
     detect        prg_dataset_load's format detection: byte 0 picks the file
                   name (IDX, .npz, CIFAR names, other), the rest is the file

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
    if (prg_checkpoint_save(p, net, NULL, opt, &rng, 5)) return 1;
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
    if (prg_pnm_write(p, rec, 5, 3, 1)) return 1;
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

enum { T_JPEG, T_PNG, T_IMAGE, T_PNM, T_SAFETENSORS, T_CKPT, T_RESTORE, T_NPZ, T_NPY, T_IDX, T_CIFAR, T_DETECT, T_COUNT };
static const char *const target_names[T_COUNT] = {"jpeg", "png", "image", "pnm", "safetensors", "ckpt",
                                                  "restore", "npz", "npy", "idx", "cifar", "detect"};
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
    prg_set_num_threads(1);
    return 0;
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
        if (prg_pnm_read(tmp_file("image.pnm", data, size), &px, &w, &h, &c) == PRG_OK) {
            if (!px || (uint64_t)w * (uint64_t)h > PRG_IMAGE_MAX_PIXELS) abort();
            prg_free(px);
        } else if (px) {
            abort();
        }
        break;
    }
    case T_SAFETENSORS: {
        prg_st *st = NULL;
        if (prg_safetensors_open(&st, tmp_file("t.safetensors", data, size)) == PRG_OK) {
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
        if (prg_checkpoint_restore(tmp_file("r.safetensors", data, size), r_net, NULL, r_opt, &rng, &step) == PRG_OK) {
            if (step < 0 || prg_adam_step_count(r_opt) < 0 || !(rng.s[0] | rng.s[1] | rng.s[2] | rng.s[3])) abort();
        } else if (step != -7) {
            abort(); /* a refused restore changes nothing */
        }
        break;
    }
    case T_NPZ:
        p = tmp_file("a.npz", data, size);
        if (prg_npz_load(&a, p, "data") == PRG_OK) prg_array_free(&a);
        else if (a.data) abort();
        check_dataset(prg_dataset_load_npz(&ds, p), &ds);
        break;
    case T_NPY:
        if (prg_npy_load(&a, tmp_file("a.npy", data, size)) == PRG_OK) prg_array_free(&a);
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
    default:
        abort();
    }
    return 0;
}
#endif
