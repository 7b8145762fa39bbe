/* Checkpoints: U-Net and classifier round trips (bit-exact), plain
   state_dict files loaded against a config (F32/F16/BF16), every broken-file
   case refused with a message naming the tensor, atomic saves, and resumed
   training that continues bit for bit; the pretraining loss and path
   (prg.loss / prg.path) through every writer, loader and restore. */
#define PRG_IMPLEMENTATION
#include "../prg.h"
#include "prg_test.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[256];
/* The path of a file in the test's directory (64 live results at most). */
static const char *tmp_path(const char *name) {
    static char buf[64][512];
    static int k = 0;
    k = (k + 1) & 63;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static void small_config(prg_unet_config *c) {
    memset(c, 0, sizeof *c);
    c->in_channels = c->out_channels = 1;
    c->model_channels = 32;
    c->num_res_blocks = 1;
    c->num_levels = 2;
    c->channel_mult[0] = 1;
    c->channel_mult[1] = 2;
    c->num_attention = 1;
    c->attention_ds[0] = 2;
    c->num_heads = 2;
    c->image_size = 16;
    c->groups = 32;
}

/* Writes the U-Net's tensors as a plain file (no metadata), in dtype, with
   optional damage: tensor `bad` gets a NaN (mode 1), a wrong shape (mode 2),
   is left out (mode 3), or an extra tensor is added (mode 4). */
static prg_result write_plain(prg_unet *net, const char *path, prg_dtype dt, int bad, int mode) {
    int n = prg_unet_num_tensors(net), i, k = 0;
    prg_st_tensor *t = (prg_st_tensor *)calloc((size_t)n + 1, sizeof *t);
    uint16_t *half = (uint16_t *)malloc(prg_unet_num_params(net) * sizeof(uint16_t));
    float *copy = (float *)malloc(prg_unet_num_params(net) * sizeof(float));
    float extra[3] = {1, 2, 3};
    size_t j;
    prg_result r;
    memcpy(copy, prg_unet_params(net), prg_unet_num_params(net) * sizeof(float));
    for (j = 0; j < prg_unet_num_params(net); j++) {
        uint32_t b;
        memcpy(&b, &copy[j], 4);
        half[j] = dt == PRG_DT_BF16 ? (uint16_t)(b >> 16) : 0;
    }
    for (i = 0; i < n; i++) {
        size_t off;
        if (mode == 3 && i == bad) continue;
        prg_unet_tensor_info(net, i, &t[k].name, &t[k].ndim, t[k].shape, &off);
        t[k].dtype = dt;
        t[k].data = dt == PRG_DT_F32 ? (const void *)(copy + off) : (const void *)(half + off);
        if (i == bad && mode == 1) copy[off] = NAN;
        if (i == bad && mode == 2) t[k].shape[0] += 1;
        k++;
    }
    if (mode == 4) {
        t[k].name = "input_blocks.99.0.weight";
        t[k].ndim = 1;
        t[k].shape[0] = 3;
        t[k].data = extra;
        k++;
    }
    r = prg_st_write(path, t, k, NULL, 0);
    free(t); free(half); free(copy);
    return r;
}

static int same_params(prg_unet *a, prg_unet *b) {
    return prg_unet_num_params(a) == prg_unet_num_params(b) &&
           memcmp(prg_unet_params(a), prg_unet_params(b), prg_unet_num_params(a) * sizeof(float)) == 0;
}

static void test_unet_files(void) {
    prg_unet_config cfg, other;
    prg_unet *net, *back = NULL;
    char s[512], p[512];
    FILE *f;
    long size;
    int cut;
    snprintf(p, sizeof p, "%s", tmp_path("net.safetensors"));
    small_config(&cfg);
    CHECK(prg_unet_create(&net, &cfg, 11) == PRG_OK, "create: %s", prg_last_error());
    /* config string round trip */
    prg_unet_config_format(&cfg, s, sizeof s);
    CHECK(prg_unet_config_parse(&other, s) == PRG_OK && memcmp(&other, &cfg, sizeof cfg) == 0, "config string %s", s);
    CHECK(prg_unet_config_parse(&other, "in_channels=3") == PRG_ERR_FORMAT && strstr(prg_last_error(), "missing"),
          "incomplete config string: %s", prg_last_error());
    CHECK(prg_unet_config_parse(&other, "in_channels=3,bogus=1") == PRG_ERR_FORMAT && strstr(prg_last_error(), "bogus"),
          "unknown key: %s", prg_last_error());

    /* save -> load round trip, config from the metadata */
    CHECK(prg_unet_save(net, p) == PRG_OK, "save: %s", prg_last_error());
    CHECK(prg_unet_load(&back, p, NULL) == PRG_OK, "load: %s", prg_last_error());
    if (back) {
        CHECK(same_params(net, back), "round trip is not bit-exact");
        prg_unet_config_format(prg_unet_config_get(back), s, sizeof s);
        CHECK(strstr(s, "image_size=16") != NULL, "config after load: %s", s);
        prg_unet_free(back);
    }
    /* a different config is refused, naming both */
    other = cfg;
    other.model_channels = 64;
    CHECK(prg_unet_load(&back, p, &other) == PRG_ERR_SHAPE && strstr(prg_last_error(), "model_channels=32"),
          "mismatching config: %s", prg_last_error());
    CHECK(back == NULL, "failed load left a net");

    /* a plain state_dict file: needs the config; F32, F16-free BF16 */
    CHECK(write_plain(net, tmp_path("plain.safetensors"), PRG_DT_F32, -1, 0) == PRG_OK, "write plain");
    CHECK(prg_unet_load(&back, tmp_path("plain.safetensors"), NULL) == PRG_ERR_FORMAT &&
          strstr(prg_last_error(), "config"), "plain file without config: %s", prg_last_error());
    CHECK(prg_unet_load(&back, tmp_path("plain.safetensors"), &cfg) == PRG_OK, "plain with config: %s", prg_last_error());
    if (back) { CHECK(same_params(net, back), "plain F32 load differs"); prg_unet_free(back); back = NULL; }
    CHECK(write_plain(net, tmp_path("bf16.safetensors"), PRG_DT_BF16, -1, 0) == PRG_OK, "write bf16");
    CHECK(prg_unet_load(&back, tmp_path("bf16.safetensors"), &cfg) == PRG_OK, "bf16 with config: %s", prg_last_error());
    if (back) {
        size_t j, bad = 0;
        for (j = 0; j < prg_unet_num_params(net); j++) {
            uint32_t b;
            float want;
            memcpy(&b, &prg_unet_params(net)[j], 4);
            b &= 0xFFFF0000u;
            memcpy(&want, &b, 4);
            bad += prg_unet_params(back)[j] != want;
        }
        CHECK(bad == 0, "bf16 load: %zu values are not the truncated originals", bad);
        prg_unet_free(back);
        back = NULL;
    }
    /* broken files, each refused with the tensor named */
    {
        static const char *const what[] = {"", "NaN", "shape", "missing", "extra"};
        int mode;
        const char *name;
        int nd;
        int64_t sh[4];
        size_t off;
        prg_unet_tensor_info(net, 5, &name, &nd, sh, &off);
        for (mode = 1; mode <= 4; mode++) {
            CHECK(write_plain(net, tmp_path("bad.safetensors"), PRG_DT_F32, 5, mode) == PRG_OK, "write bad %d", mode);
            CHECK(prg_unet_load(&back, tmp_path("bad.safetensors"), &cfg) != PRG_OK && back == NULL &&
                  strstr(prg_last_error(), mode == 4 ? "input_blocks.99.0.weight" : name),
                  "%s tensor: %s", what[mode], prg_last_error());
        }
    }
    /* truncated at many offsets */
    {
        size_t n;
        unsigned char *whole = prg_test_read_file(p, &n);
        CHECK(whole != NULL, "read back %s", p);
        size = (long)n;
        for (cut = 0; whole && cut < 40; cut++) {
            long at = cut < 20 ? cut : size * (cut - 19) / 21;
            FILE *g = fopen(tmp_path("trunc.safetensors"), "wb");
            fwrite(whole, 1, (size_t)at, g);
            fclose(g);
            CHECK(prg_unet_load(&back, tmp_path("trunc.safetensors"), NULL) != PRG_OK && back == NULL,
                  "truncated at %ld of %ld accepted", at, size);
        }
        free(whole);
    }
    /* an absurd header length */
    f = fopen(tmp_path("huge.safetensors"), "wb");
    {
        unsigned char h[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, '{', '}'};
        fwrite(h, 1, sizeof h, f);
    }
    fclose(f);
    CHECK(prg_unet_load(&back, tmp_path("huge.safetensors"), NULL) == PRG_ERR_FORMAT, "huge header: %s", prg_last_error());
    /* the temporary file has an unpredictable name: something planted at
       "<path>.tmp" neither blocks the save nor is touched by it (a failed
       save keeping the old file: tests/test_hostile.c) */
    {
        char tmpdir[600];
        struct stat sb;
        prg_unet *net2;
        snprintf(tmpdir, sizeof tmpdir, "%s.tmp", p);
        mkdir(tmpdir, 0700);
        prg_unet_create(&net2, &cfg, 99);
        CHECK(prg_unet_save(net2, p) == PRG_OK, "save next to a planted <path>.tmp: %s", prg_last_error());
        CHECK(stat(tmpdir, &sb) == 0 && S_ISDIR(sb.st_mode), "the planted <path>.tmp was touched");
        CHECK(prg_unet_load(&back, p, NULL) == PRG_OK && same_params(net2, back), "checkpoint saved next to a planted <path>.tmp");
        if (back) prg_unet_free(back);
        back = NULL;
        rmdir(tmpdir);
        prg_unet_save(net, p);
        prg_unet_free(net2);
    }
    prg_unet_free(net);
}

static void test_classifier_files(void) {
    prg_unet_config cfg;
    prg_unet *net;
    prg_classifier *clf, *back = NULL;
    float x[2 * 256], l1[2 * 7], l2[2 * 7];
    size_t i, nh;
    small_config(&cfg);
    prg_unet_create(&net, &cfg, 5);
    CHECK(prg_classifier_create(&clf, net, 7, 6, 2, 9) == PRG_OK, "classifier: %s", prg_last_error());
    for (i = 0; i < 512; i++) x[i] = (float)sin(0.37 * (double)i);
    /* make the zero-initialised convolutions non-zero so the U-Net matters */
    for (i = 0; i < prg_unet_num_params(net); i++) prg_unet_params(net)[i] += 0.01f * (float)cos((double)i);
    CHECK(prg_classifier_save(clf, tmp_path("clf.safetensors")) == PRG_OK, "save: %s", prg_last_error());
    CHECK(prg_classifier_load(&back, tmp_path("clf.safetensors"), NULL) == PRG_OK, "load: %s", prg_last_error());
    if (back) {
        float *h1 = prg_classifier_head_params(clf, &nh), *h2 = prg_classifier_head_params(back, NULL);
        CHECK(memcmp(h1, h2, nh * sizeof(float)) == 0, "head differs after round trip");
        CHECK(same_params(prg_classifier_unet(clf), prg_classifier_unet(back)), "U-Net differs after round trip");
        CHECK(prg_classifier_num_classes(back) == 7, "classes %d", prg_classifier_num_classes(back));
        prg_classifier_forward(clf, 2, x, l1);
        prg_classifier_forward(back, 2, x, l2);
        CHECK(memcmp(l1, l2, sizeof l1) == 0, "logits differ after round trip (grid not restored?)");
        prg_classifier_free(back);
    }
    /* the GVP path and its grid survive the round trip */
    CHECK(prg_classifier_set_path(clf, PRG_PATH_GVP) == PRG_OK && prg_classifier_set_grid(clf, 6, 6) == PRG_OK,
          "gvp grid: %s", prg_last_error());
    prg_classifier_save(clf, tmp_path("gvp.safetensors"));
    CHECK(prg_classifier_load(&back, tmp_path("gvp.safetensors"), NULL) == PRG_OK, "load gvp: %s", prg_last_error());
    if (back) {
        prg_classifier_forward(clf, 2, x, l1);
        prg_classifier_forward(back, 2, x, l2);
        CHECK(memcmp(l1, l2, sizeof l1) == 0, "GVP classifier logits differ after round trip");
        prg_classifier_free(back);
    }
    /* a U-Net checkpoint is not a classifier; a classifier file loads as a U-Net */
    {
        prg_unet *u = NULL;
        prg_unet_save(net, tmp_path("u.safetensors"));
        CHECK(prg_classifier_load(&back, tmp_path("u.safetensors"), NULL) == PRG_ERR_FORMAT &&
              strstr(prg_last_error(), "head"), "U-Net file as classifier: %s", prg_last_error());
        CHECK(prg_unet_load(&u, tmp_path("clf.safetensors"), NULL) == PRG_OK, "classifier file as U-Net: %s", prg_last_error());
        if (u) prg_unet_free(u);
    }
    prg_classifier_free(clf);
}

/* Class names: saved as metadata prg.classes, loaded back (JSON escapes
   and UTF-8 intact); a file without them has none; a damaged list is
   refused naming the key; a wrong count is refused. */
static void test_classifier_names(void) {
    static const char *const names[3] = {"Banana", "say \"hi\"\\ back\tslash", "caf\xc3\xa9 au lait"};
    prg_unet_config cfg;
    prg_unet *net;
    prg_classifier *clf, *back = NULL;
    unsigned char *buf;
    size_t len, i;
    FILE *f;
    int patched = 0;
    small_config(&cfg);
    prg_unet_create(&net, &cfg, 5);
    CHECK(prg_classifier_create(&clf, net, 3, 4, 0, 9) == PRG_OK, "classifier: %s", prg_last_error());
    CHECK(prg_classifier_class_name(clf, 0) == NULL, "a new classifier has no names");
    CHECK(prg_classifier_set_class_names(clf, names, 2) == PRG_ERR_ARG && strstr(prg_last_error(), "2 names") &&
              prg_classifier_class_name(clf, 0) == NULL, "2 names for 3 classes: %s", prg_last_error());
    CHECK(prg_classifier_set_class_names(clf, names, 3) == PRG_OK, "names: %s", prg_last_error());
    CHECK(prg_classifier_class_name(clf, 3) == NULL && prg_classifier_class_name(clf, -1) == NULL, "names out of range");
    prg_classifier_save(clf, tmp_path("named.safetensors"));
    CHECK(prg_classifier_load(&back, tmp_path("named.safetensors"), NULL) == PRG_OK, "load named: %s", prg_last_error());
    if (back) {
        for (i = 0; i < 3; i++)
            CHECK(prg_classifier_class_name(back, (int)i) && !strcmp(prg_classifier_class_name(back, (int)i), names[i]),
                  "name %d after the round trip: '%s'", (int)i, prg_classifier_class_name(back, (int)i) ? prg_classifier_class_name(back, (int)i) : "(null)");
        prg_classifier_free(back);
    }
    /* damage the list in place: the closing ']' of the array becomes a blank */
    buf = prg_test_read_file(tmp_path("named.safetensors"), &len);
    for (i = 0; buf && i + 4 < len && !patched; i++)
        if (!memcmp(buf + i, "lait\\\"]", 7)) { buf[i + 6] = ' '; patched = 1; }
    CHECK(patched, "no prg.classes array found in the file");
    f = fopen(tmp_path("damaged.safetensors"), "wb");
    if (f && buf) { fwrite(buf, 1, len, f); fclose(f); }
    free(buf);
    back = NULL;
    CHECK(prg_classifier_load(&back, tmp_path("damaged.safetensors"), NULL) == PRG_ERR_FORMAT && back == NULL &&
              strstr(prg_last_error(), "prg.classes") && strstr(prg_last_error(), "3 strings"),
          "damaged prg.classes: %s", prg_last_error());
    CHECK(prg_classifier_set_class_names(clf, NULL, 0) == PRG_OK && prg_classifier_class_name(clf, 0) == NULL, "names removed");
    prg_classifier_save(clf, tmp_path("unnamed.safetensors"));
    CHECK(prg_classifier_load(&back, tmp_path("unnamed.safetensors"), NULL) == PRG_OK && prg_classifier_class_name(back, 0) == NULL,
          "a file without prg.classes: %s", prg_last_error());
    prg_classifier_free(back);
    prg_classifier_free(clf);
}

/* A few ICFM pretraining steps: the data and the noise come from rng. */
static void pretrain_steps(prg_unet *net, prg_adam *opt, prg_rng *rng, int steps) {
    const prg_unet_config *c = prg_unet_config_get(net);
    int b, s, batch = 2, hw = c->image_size * c->image_size;
    size_t n = (size_t)batch * c->in_channels * hw, j;
    float *x1 = (float *)malloc(5 * n * sizeof(float)), *x0 = x1 + n, *xt = x0 + n, *v = xt + n, *dv = v + n, t[2];
    for (s = 0; s < steps; s++) {
        for (j = 0; j < n; j++) x1[j] = (float)sin(0.1 * (double)j) + 0.1f * prg_rng_normal(rng);
        for (b = 0; b < batch; b++) t[b] = prg_rng_uniform(rng);
        for (j = 0; j < n; j++) {
            float tb = t[j / (n / batch)];
            x0[j] = prg_rng_normal(rng);
            xt[j] = (1 - tb) * x0[j] + tb * x1[j];
            x1[j] -= x0[j]; /* target */
        }
        prg_unet_forward(net, batch, xt, t, v);
        prg_flow_loss_forward_backward(dv, v, x1, batch, c->out_channels, hw);
        prg_unet_zero_grad(net);
        prg_unet_backward(net, dv, NULL);
        prg_adam_step(opt, prg_unet_params(net), prg_unet_grads(net), 1e-3, NULL);
    }
    free(x1);
}

static void test_resume(void) {
    prg_unet_config cfg;
    prg_unet *a, *b;
    prg_adam *oa, *ob;
    prg_adam_config ac;
    prg_rng ra, rb;
    int64_t step = -1;
    small_config(&cfg);
    prg_adam_config_default(&ac);
    /* straight: 4 steps */
    prg_unet_create(&a, &cfg, 3);
    prg_adam_create(&oa, prg_unet_num_params(a), &ac);
    prg_rng_seed(&ra, 17, 0);
    pretrain_steps(a, oa, &ra, 4);
    /* interrupted: 2 steps, checkpoint, a fresh process's objects, restore, 2 steps */
    prg_unet_create(&b, &cfg, 3);
    prg_adam_create(&ob, prg_unet_num_params(b), &ac);
    prg_rng_seed(&rb, 17, 0);
    pretrain_steps(b, ob, &rb, 2);
    CHECK(prg_train_state_save(b, NULL, ob, &rb, 2, tmp_path("train.safetensors")) == PRG_OK, "save: %s", prg_last_error());
    prg_adam_free(ob);
    prg_unet_free(b);
    prg_unet_create(&b, &cfg, 12345); /* different init: everything must come from the file */
    prg_adam_create(&ob, prg_unet_num_params(b), &ac);
    prg_rng_seed(&rb, 999, 0);
    CHECK(prg_train_state_restore(b, NULL, ob, &rb, &step, tmp_path("train.safetensors")) == PRG_OK,
          "restore: %s", prg_last_error());
    CHECK(step == 2, "step %lld", (long long)step);
    pretrain_steps(b, ob, &rb, 2);
    CHECK(same_params(a, b), "resumed run differs from the straight run");
    CHECK(memcmp(prg_adam_exp_avg_sq(oa), prg_adam_exp_avg_sq(ob), prg_adam_num_params(oa) * sizeof(float)) == 0,
          "optimizer moments differ after resume");
    /* a weights-only file has no training state; a wrong config is refused; nothing changes */
    {
        float *before = (float *)malloc(prg_unet_num_params(b) * sizeof(float));
        prg_unet_config c2 = cfg;
        prg_unet *w;
        memcpy(before, prg_unet_params(b), prg_unet_num_params(b) * sizeof(float));
        prg_unet_save(a, tmp_path("weights.safetensors"));
        CHECK(prg_train_state_restore(b, NULL, ob, &rb, &step, tmp_path("weights.safetensors")) == PRG_ERR_FORMAT &&
              strstr(prg_last_error(), "training state"), "weights-only restore: %s", prg_last_error());
        c2.num_res_blocks = 2;
        prg_unet_create(&w, &c2, 1);
        prg_unet_save(w, tmp_path("other.safetensors"));
        CHECK(prg_train_state_restore(b, NULL, NULL, NULL, NULL, tmp_path("other.safetensors")) == PRG_ERR_SHAPE,
              "restore from another config: %s", prg_last_error());
        CHECK(memcmp(before, prg_unet_params(b), prg_unet_num_params(b) * sizeof(float)) == 0,
              "a refused restore changed the weights");
        prg_unet_free(w);
        free(before);
    }
    prg_adam_free(oa); prg_adam_free(ob);
    prg_unet_free(a); prg_unet_free(b);
}

/* 1 when metadata key of file path is want (want NULL: the key is absent). */
static int meta_is(const char *path, const char *key, const char *want) {
    prg_st *st;
    const char *v;
    int ok;
    if (prg_st_open(&st, path) != PRG_OK) return 0;
    v = prg_st_metadata(st, key);
    ok = want ? v && !strcmp(v, want) : v == NULL;
    prg_st_close(st);
    return ok;
}

/* The U-Net's tensors (F32) with the metadata pairs kv[0..2*n). */
static prg_result write_meta(prg_unet *net, const char *path, const char *const *kv, int n) {
    int nt = prg_unet_num_tensors(net), i;
    prg_st_tensor *t = (prg_st_tensor *)calloc((size_t)nt, sizeof *t);
    prg_result r;
    for (i = 0; i < nt; i++) {
        size_t off;
        prg_unet_tensor_info(net, i, &t[i].name, &t[i].ndim, t[i].shape, &off);
        t[i].data = prg_unet_params(net) + off;
    }
    r = prg_st_write(path, t, nt, kv, n);
    free(t);
    return r;
}

/* The pretraining loss and its path travel with every checkpoint. */
static void test_loss_path(void) {
    static const prg_loss losses[3] = {PRG_LOSS_ICFM, PRG_LOSS_OT, PRG_LOSS_GVP};
    static const char *const names[3] = {"icfm", "ot", "gvp"}, *const paths[3] = {"icfm", "icfm", "gvp"};
    prg_unet_config cfg;
    prg_unet *net, *back = NULL;
    prg_classifier *clf, *cb = NULL;
    prg_adam *opt;
    prg_adam_config ac;
    prg_rng rng;
    int i;
    prg_path p = PRG_PATH_NONE;
    prg_loss l = PRG_LOSS_NONE;
    small_config(&cfg);
    prg_adam_config_default(&ac);
    prg_rng_seed(&rng, 5, 5);
    for (i = 0; i < 3; i++) {
        const char *f = tmp_path("loss.safetensors"), *g = tmp_path("loss_train.safetensors");
        prg_unet_create(&net, &cfg, 1);
        prg_adam_create(&opt, prg_unet_num_params(net), &ac);
        CHECK(prg_unet_set_loss(net, losses[i]) == PRG_OK, "set_loss %s", names[i]);
        CHECK(prg_unet_save(net, f) == PRG_OK && meta_is(f, "prg.loss", names[i]) && meta_is(f, "prg.path", paths[i]),
              "prg_unet_save: no prg.loss %s / prg.path %s", names[i], paths[i]);
        CHECK(prg_unet_load(&back, f, NULL) == PRG_OK && prg_unet_loss(back) == losses[i] &&
              prg_unet_path(back) == (i == 2 ? PRG_PATH_GVP : PRG_PATH_ICFM), "%s: loss not read back", names[i]);
        prg_unet_free(back);
        CHECK(prg_train_state_save(net, NULL, opt, &rng, 3, g) == PRG_OK && meta_is(g, "prg.loss", names[i]) &&
              meta_is(g, "prg.path", paths[i]), "prg_train_state_save: no prg.loss %s", names[i]);
        prg_unet_create(&back, &cfg, 2); /* PRG_LOSS_NONE takes the file's */
        CHECK(prg_train_state_restore(back, NULL, opt, &rng, NULL, g) == PRG_OK && prg_unet_loss(back) == losses[i],
              "restore %s: loss %d", names[i], prg_unet_loss(back));
        prg_unet_free(back);
        CHECK(prg_loss_parse(&l, names[i]) == PRG_OK && l == losses[i] && prg_path_parse(&p, names[i]) == PRG_OK &&
              !strcmp(prg_path_name(p), paths[i]), "parse %s", names[i]);
        prg_adam_free(opt);
        prg_unet_free(net);
    }
    CHECK(prg_loss_parse(&l, "ddpm") == PRG_ERR_ARG && strstr(prg_last_error(), "icfm, ot or gvp"), "loss 'ddpm'");
    CHECK(prg_path_parse(&p, NULL) == PRG_ERR_ARG, "path NULL");

    /* no loss recorded: nothing written, PRG_LOSS_NONE read back (the ICFM path); a plain file too */
    prg_unet_create(&net, &cfg, 1);
    CHECK(prg_unet_set_loss(net, 7) == PRG_ERR_ARG && prg_unet_loss(net) == PRG_LOSS_NONE, "set_loss 7");
    prg_unet_save(net, tmp_path("none.safetensors"));
    CHECK(meta_is(tmp_path("none.safetensors"), "prg.loss", NULL) && meta_is(tmp_path("none.safetensors"), "prg.path", NULL),
          "a net without a loss wrote prg.loss / prg.path");
    CHECK(prg_unet_load(&back, tmp_path("none.safetensors"), NULL) == PRG_OK && prg_unet_loss(back) == PRG_LOSS_NONE &&
              prg_unet_path(back) == PRG_PATH_ICFM, "no-loss file: loss %d", back ? (int)prg_unet_loss(back) : -1);
    prg_unet_free(back);
    write_plain(net, tmp_path("plain_loss.safetensors"), PRG_DT_F32, -1, 0);
    CHECK(prg_unet_load(&back, tmp_path("plain_loss.safetensors"), &cfg) == PRG_OK && prg_unet_loss(back) == PRG_LOSS_NONE,
          "plain file: loss recorded?");
    prg_unet_free(back);

    /* metadata: prg.path alone gives its loss; unknown names and a disagreeing pair are refused */
    {
        char cs[512];
        const char *kv[6];
        prg_unet_config_format(&cfg, cs, sizeof cs);
        kv[0] = "prg.unet"; kv[1] = cs; kv[2] = "prg.path"; kv[3] = "gvp"; kv[4] = "prg.loss"; kv[5] = "gvp";
        write_meta(net, tmp_path("m.safetensors"), kv, 2);
        CHECK(prg_unet_load(&back, tmp_path("m.safetensors"), NULL) == PRG_OK && prg_unet_loss(back) == PRG_LOSS_GVP,
              "prg.path gvp alone: %s", prg_last_error());
        prg_unet_free(back);
        back = NULL;
        kv[3] = "icfm";
        write_meta(net, tmp_path("m.safetensors"), kv, 3);
        CHECK(prg_unet_load(&back, tmp_path("m.safetensors"), NULL) == PRG_ERR_FORMAT && !back &&
              strstr(prg_last_error(), "disagree"), "prg.loss gvp with prg.path icfm: %s", prg_last_error());
        kv[3] = "gvp"; kv[5] = "ddpm";
        write_meta(net, tmp_path("m.safetensors"), kv, 3);
        CHECK(prg_unet_load(&back, tmp_path("m.safetensors"), NULL) == PRG_ERR_FORMAT &&
              strstr(prg_last_error(), "prg.loss is 'ddpm'"), "prg.loss ddpm: %s", prg_last_error());
        kv[3] = "sde";
        write_meta(net, tmp_path("m.safetensors"), kv, 2);
        CHECK(prg_unet_load(&back, tmp_path("m.safetensors"), NULL) == PRG_ERR_FORMAT &&
              strstr(prg_last_error(), "prg.path is 'sde'"), "prg.path sde: %s", prg_last_error());
    }

    /* a classifier takes its net's path (with that path's grid rule) and records both */
    prg_unet_set_loss(net, PRG_LOSS_GVP);
    CHECK(prg_classifier_create(&clf, net, 4, 6, 1, 3) == PRG_ERR_ARG, "GVP net: t_cutoff 1 accepted");
    CHECK(prg_classifier_create(&clf, net, 4, 6, 6, 3) == PRG_OK && prg_classifier_path(clf) == PRG_PATH_GVP,
          "classifier on a GVP net: %s", prg_last_error());
    {
        int span = 0, cut = 0;
        CHECK(prg_classifier_grid(clf, &span, &cut) == 5 && span == 6 && cut == 6, "grid %d %d", span, cut);
    }
    prg_classifier_save(clf, tmp_path("c.safetensors"));
    CHECK(meta_is(tmp_path("c.safetensors"), "prg.path", "gvp") && meta_is(tmp_path("c.safetensors"), "prg.loss", "gvp"),
          "classifier file: prg.path / prg.loss");
    /* the path overridden: the file keeps both, each loader reads its own */
    CHECK(prg_classifier_set_grid(clf, 6, 0) == PRG_OK && prg_classifier_set_path(clf, PRG_PATH_ICFM) == PRG_OK,
          "override: %s", prg_last_error());
    prg_classifier_save(clf, tmp_path("c2.safetensors"));
    CHECK(meta_is(tmp_path("c2.safetensors"), "prg.path", "icfm") && meta_is(tmp_path("c2.safetensors"), "prg.loss", "gvp"),
          "overridden classifier file: prg.path / prg.loss");
    CHECK(prg_classifier_load(&cb, tmp_path("c2.safetensors"), NULL) == PRG_OK && prg_classifier_path(cb) == PRG_PATH_ICFM &&
              prg_unet_loss(prg_classifier_unet(cb)) == PRG_LOSS_GVP, "overridden classifier read back: %s", prg_last_error());
    prg_classifier_free(cb);
    CHECK(prg_unet_load(&back, tmp_path("c2.safetensors"), NULL) == PRG_OK && prg_unet_path(back) == PRG_PATH_GVP,
          "U-Net of an overridden classifier: %s", prg_last_error());
    prg_unet_free(back);

    /* restore refuses another loss or path and changes nothing */
    {
        prg_unet *u;
        float *before;
        size_t nh;
        prg_unet_create(&u, &cfg, 9);
        prg_unet_set_loss(u, PRG_LOSS_GVP);
        prg_adam_create(&opt, prg_unet_num_params(u), &ac);
        prg_train_state_save(u, NULL, opt, &rng, 4, tmp_path("t.safetensors"));
        prg_unet_set_loss(u, PRG_LOSS_OT);
        prg_unet_params(u)[0] += 1.0f; /* differs from the file */
        before = (float *)malloc(prg_unet_num_params(u) * sizeof(float));
        memcpy(before, prg_unet_params(u), prg_unet_num_params(u) * sizeof(float));
        CHECK(prg_train_state_restore(u, NULL, opt, &rng, NULL, tmp_path("t.safetensors")) == PRG_ERR_FORMAT &&
                  strstr(prg_last_error(), "gvp loss") && prg_unet_loss(u) == PRG_LOSS_OT &&
                  memcmp(before, prg_unet_params(u), prg_unet_num_params(u) * sizeof(float)) == 0,
              "restore with another loss: %s", prg_last_error());
        free(before);
        prg_adam_free(opt);
        prg_unet_free(u);
        prg_classifier_head_params(clf, &nh);
        prg_adam_create(&opt, prg_unet_num_params(net) + nh, &ac);
        CHECK(prg_train_state_save(NULL, clf, opt, &rng, 1, tmp_path("ct.safetensors")) == PRG_OK, "save: %s", prg_last_error());
        prg_classifier_set_path(clf, PRG_PATH_GVP);
        CHECK(prg_train_state_restore(NULL, clf, opt, &rng, NULL, tmp_path("ct.safetensors")) == PRG_ERR_FORMAT &&
                  strstr(prg_last_error(), "icfm path"), "classifier restore on another path: %s", prg_last_error());
        prg_adam_free(opt);
    }
    prg_classifier_free(clf); /* frees net */
}

/* A frozen U-Net's run: the optimizer covers the head alone and its moments
   go into the classifier checkpoint (one file); restore gives them back bit
   for bit and refuses to mix a head-only state with a whole-model one. */
static void test_head_optim(void) {
    prg_unet_config cfg;
    prg_unet *net, *net2;
    prg_classifier *clf, *clf2;
    prg_adam *oh, *oh2, *ofull;
    prg_adam_config ac;
    prg_rng r1, r2;
    size_t nh, i;
    int64_t step = -1;
    float *before;
    small_config(&cfg);
    prg_adam_config_default(&ac);
    prg_unet_create(&net, &cfg, 5);
    prg_classifier_create(&clf, net, 5, 4, 0, 9);
    prg_classifier_head_params(clf, &nh);
    prg_adam_create(&oh, nh, &ac);
    for (i = 0; i < nh; i++) {
        prg_adam_exp_avg(oh)[i] = (float)sin(0.1 * (double)i);
        prg_adam_exp_avg_sq(oh)[i] = (float)(1 + cos(0.2 * (double)i));
    }
    prg_adam_set_step_count(oh, 7);
    prg_rng_seed(&r1, 3, 1);
    CHECK(prg_train_state_save(NULL, clf, oh, &r1, 7, tmp_path("frozen.safetensors")) == PRG_OK, "head-optim save: %s",
          prg_last_error());
    prg_unet_create(&net2, &cfg, 77);
    prg_classifier_create(&clf2, net2, 5, 4, 0, 78);
    prg_adam_create(&oh2, nh, &ac);
    prg_adam_create(&ofull, prg_unet_num_params(net2) + nh, &ac);
    before = (float *)malloc(nh * sizeof(float));
    memcpy(before, prg_classifier_head_params(clf2, NULL), nh * sizeof(float));
    CHECK(prg_train_state_restore(NULL, clf2, ofull, &r2, &step, tmp_path("frozen.safetensors")) == PRG_ERR_SHAPE &&
              strstr(prg_last_error(), "head alone"), "whole-model optimizer from a head-only file: %s", prg_last_error());
    CHECK(memcmp(before, prg_classifier_head_params(clf2, NULL), nh * sizeof(float)) == 0, "a refused restore changed the head");
    CHECK(prg_train_state_restore(NULL, clf2, oh2, &r2, &step, tmp_path("frozen.safetensors")) == PRG_OK,
          "head-optim restore: %s", prg_last_error());
    CHECK(step == 7 && prg_adam_step_count(oh2) == 7, "step %lld, optim step %lld", (long long)step,
          (long long)prg_adam_step_count(oh2));
    CHECK(memcmp(prg_adam_exp_avg(oh), prg_adam_exp_avg(oh2), nh * sizeof(float)) == 0 &&
              memcmp(prg_adam_exp_avg_sq(oh), prg_adam_exp_avg_sq(oh2), nh * sizeof(float)) == 0,
          "head moments differ after restore");
    CHECK(memcmp(prg_classifier_head_params(clf, NULL), prg_classifier_head_params(clf2, NULL), nh * sizeof(float)) == 0 &&
              same_params(net, net2), "parameters differ after restore");
    /* a whole-model training checkpoint is refused for a head-only optimizer */
    CHECK(prg_train_state_save(NULL, clf, ofull, &r1, 7, tmp_path("full.safetensors")) == PRG_OK, "save: %s", prg_last_error());
    CHECK(prg_train_state_restore(NULL, clf2, oh2, &r2, &step, tmp_path("full.safetensors")) == PRG_ERR_SHAPE,
          "head-only optimizer from a whole-model file: %s", prg_last_error());
    /* the caller's metadata pairs (a program's hyper-parameters) are kept; reserved keys refused */
    {
        const char *kv[4] = {"run.batch", "8", "run.lr", "0.001"}, *bad[2] = {"prg.step", "1"};
        prg_st *st = NULL;
        CHECK(prg_train_state_save_meta(NULL, clf, oh, &r1, 7, tmp_path("meta.safetensors"), kv, 2) == PRG_OK, "save_meta: %s",
              prg_last_error());
        CHECK(prg_st_open(&st, tmp_path("meta.safetensors")) == PRG_OK, "open: %s", prg_last_error());
        if (st) {
            const char *b = prg_st_metadata(st, "run.batch"), *l = prg_st_metadata(st, "run.lr"), *s = prg_st_metadata(st, "prg.step");
            CHECK(b && !strcmp(b, "8") && l && !strcmp(l, "0.001") && s && !strcmp(s, "7"), "metadata %s %s %s", b ? b : "-",
                  l ? l : "-", s ? s : "-");
            prg_st_close(st);
        }
        CHECK(prg_train_state_save_meta(NULL, clf, oh, &r1, 7, tmp_path("reserved.safetensors"), bad, 1) == PRG_ERR_ARG &&
                  access(tmp_path("reserved.safetensors"), F_OK) != 0, "a reserved key was accepted: %s", prg_last_error());
    }
    free(before);
    prg_adam_free(oh); prg_adam_free(oh2); prg_adam_free(ofull);
    prg_classifier_free(clf); prg_classifier_free(clf2);
}

/* n fine-tuning steps over the classifier's parameter blocks (what
   finetune runs) on a batch drawn from rng. */
static void finetune_steps(prg_classifier *clf, prg_adam *opt, prg_rng *rng, int n) {
    enum { B = 2, K = 3 };
    float x[B * 256], logits[B * K], dl[B * K], *p[2];
    const float *g[2];
    size_t sz[2];
    int32_t y[B];
    int s, nb = prg_classifier_param_blocks(clf, p, g, sz, NULL), j;
    for (s = 0; s < n; s++) {
        for (j = 0; j < B * 256; j++) x[j] = prg_rng_normal(rng);
        for (j = 0; j < B; j++) y[j] = (int32_t)prg_rng_below(rng, K);
        prg_classifier_zero_grad(clf);
        CHECK(prg_classifier_forward(clf, B, x, logits) == PRG_OK, "forward: %s", prg_last_error());
        prg_cross_entropy_forward_backward(dl, logits, (const int *)y, B, K, 0.1f);
        CHECK(prg_classifier_backward(clf, dl) == PRG_OK, "backward: %s", prg_last_error());
        CHECK(prg_adam_step_blocks(opt, nb, p, g, sz, 1e-3, NULL) == PRG_OK, "step: %s", prg_last_error());
    }
}

/* A fine-tuning run (frozen: the head's optimizer alone; exact: the whole
   model's) stopped after 2 steps, saved, restored into objects of another
   init and continued for 2 steps ends bit for bit where the straight 4-step
   run does; the frozen run leaves the U-Net as it was. */
static void test_finetune_resume(int frozen) {
    const char *what = frozen ? "frozen" : "exact";
    prg_unet_config cfg;
    prg_unet *na, *nb, *n0;
    prg_classifier *a, *b;
    prg_adam *oa, *ob;
    prg_adam_config ac;
    prg_rng ra, rb;
    size_t ntrain, nh, sz[2];
    int64_t step = -1;
    int mode = frozen ? PRG_GRAD_FROZEN : PRG_GRAD_EXACT;
    small_config(&cfg);
    cfg.num_attention = 0;
    prg_adam_config_default(&ac);
    ac.decoupled = 1;
    ac.weight_decay = 0.05;
    prg_unet_create(&n0, &cfg, 21);
    prg_unet_create(&na, &cfg, 21);
    prg_classifier_create(&a, na, 3, 3, 0, 5);
    prg_classifier_set_grad_mode(a, mode);
    prg_classifier_head_params(a, &nh);
    CHECK(prg_classifier_param_blocks(a, NULL, NULL, sz, &ntrain) == (frozen ? 1 : 2) &&
              ntrain == (frozen ? nh : nh + prg_unet_num_params(na)),
          "%s: %zu trainable floats in the blocks", what, ntrain);
    prg_adam_create(&oa, ntrain, &ac);
    prg_rng_seed(&ra, 8, 0);
    finetune_steps(a, oa, &ra, 4);
    prg_unet_create(&nb, &cfg, 21);
    prg_classifier_create(&b, nb, 3, 3, 0, 5);
    prg_classifier_set_grad_mode(b, mode);
    prg_adam_create(&ob, ntrain, &ac);
    prg_rng_seed(&rb, 8, 0);
    finetune_steps(b, ob, &rb, 2);
    CHECK(prg_train_state_save(NULL, b, ob, &rb, 2, tmp_path("ft.safetensors")) == PRG_OK, "%s save: %s", what,
          prg_last_error());
    prg_adam_free(ob);
    prg_classifier_free(b);
    prg_unet_create(&nb, &cfg, 4321); /* another init: everything comes from the file */
    prg_classifier_create(&b, nb, 3, 3, 0, 4322);
    prg_classifier_set_grad_mode(b, mode);
    prg_adam_create(&ob, ntrain, &ac);
    prg_rng_seed(&rb, 1, 0);
    CHECK(prg_train_state_restore(NULL, b, ob, &rb, &step, tmp_path("ft.safetensors")) == PRG_OK && step == 2,
          "%s restore: %s", what, prg_last_error());
    finetune_steps(b, ob, &rb, 2);
    CHECK(same_params(na, nb) &&
              memcmp(prg_classifier_head_params(a, NULL), prg_classifier_head_params(b, NULL), nh * sizeof(float)) == 0,
          "%s: the resumed run's parameters differ from the straight run's", what);
    CHECK(prg_adam_step_count(ob) == 4 &&
              memcmp(prg_adam_exp_avg(oa), prg_adam_exp_avg(ob), ntrain * sizeof(float)) == 0 &&
              memcmp(prg_adam_exp_avg_sq(oa), prg_adam_exp_avg_sq(ob), ntrain * sizeof(float)) == 0,
          "%s: the resumed run's optimizer state differs", what);
    CHECK(same_params(na, n0) == frozen, "%s: the U-Net %s", what, frozen ? "changed" : "did not learn");
    prg_adam_free(oa); prg_adam_free(ob);
    prg_classifier_free(a); prg_classifier_free(b); prg_unet_free(n0);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/prg_test_ckpt_%d", (int)getpid());
    mkdir(dir, 0700);
    prg_set_num_threads(2);
    test_unet_files();
    test_classifier_files();
    test_classifier_names();
    test_resume();
    test_loss_path();
    test_head_optim();
    test_finetune_resume(1);
    test_finetune_resume(0);
    {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        if (system(cmd) != 0) printf("  could not remove %s\n", dir);
    }
    return prg_test_finish("test_checkpoint");
}
