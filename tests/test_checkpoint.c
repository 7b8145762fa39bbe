/* Checkpoints: U-Net and classifier round trips (bit-exact), plain
   state_dict files loaded against a config (F32/F16/BF16), every broken-file
   case refused with a message naming the tensor, atomic saves, and resumed
   training that continues bit for bit. */
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
    r = prg_safetensors_write(path, t, k, NULL, 0);
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
    /* atomic save: when the write cannot finish, the old file survives */
    {
        char tmpdir[600];
        prg_unet *net2;
        snprintf(tmpdir, sizeof tmpdir, "%s.tmp", p);
        mkdir(tmpdir, 0700); /* blocks the temporary file */
        prg_unet_create(&net2, &cfg, 99);
        CHECK(prg_unet_save(net2, p) != PRG_OK, "save over a blocked temporary file succeeded");
        CHECK(prg_unet_load(&back, p, NULL) == PRG_OK && same_params(net, back), "old checkpoint damaged by a failed save");
        if (back) prg_unet_free(back);
        back = NULL;
        rmdir(tmpdir);
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
    CHECK(prg_checkpoint_save(tmp_path("train.safetensors"), b, NULL, ob, &rb, 2) == PRG_OK, "save: %s", prg_last_error());
    prg_adam_free(ob);
    prg_unet_free(b);
    prg_unet_create(&b, &cfg, 12345); /* different init: everything must come from the file */
    prg_adam_create(&ob, prg_unet_num_params(b), &ac);
    prg_rng_seed(&rb, 999, 0);
    CHECK(prg_checkpoint_restore(tmp_path("train.safetensors"), b, NULL, ob, &rb, &step) == PRG_OK,
          "restore: %s", prg_last_error());
    CHECK(step == 2, "step %lld", (long long)step);
    pretrain_steps(b, ob, &rb, 2);
    CHECK(same_params(a, b), "resumed run differs from the straight run");
    CHECK(memcmp(prg_adam_exp_avg_sq(oa), prg_adam_exp_avg_sq(ob), prg_adam_size(oa) * sizeof(float)) == 0,
          "optimizer moments differ after resume");
    /* a weights-only file has no training state; a wrong config is refused; nothing changes */
    {
        float *before = (float *)malloc(prg_unet_num_params(b) * sizeof(float));
        prg_unet_config c2 = cfg;
        prg_unet *w;
        memcpy(before, prg_unet_params(b), prg_unet_num_params(b) * sizeof(float));
        prg_unet_save(a, tmp_path("weights.safetensors"));
        CHECK(prg_checkpoint_restore(tmp_path("weights.safetensors"), b, NULL, ob, &rb, &step) == PRG_ERR_FORMAT &&
              strstr(prg_last_error(), "training state"), "weights-only restore: %s", prg_last_error());
        c2.num_res_blocks = 2;
        prg_unet_create(&w, &c2, 1);
        prg_unet_save(w, tmp_path("other.safetensors"));
        CHECK(prg_checkpoint_restore(tmp_path("other.safetensors"), b, NULL, NULL, NULL, NULL) == PRG_ERR_SHAPE,
              "restore from another config: %s", prg_last_error());
        CHECK(memcmp(before, prg_unet_params(b), prg_unet_num_params(b) * sizeof(float)) == 0,
              "a refused restore changed the weights");
        prg_unet_free(w);
        free(before);
    }
    prg_adam_free(oa); prg_adam_free(ob);
    prg_unet_free(a); prg_unet_free(b);
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
    CHECK(prg_checkpoint_save(tmp_path("frozen.safetensors"), NULL, clf, oh, &r1, 7) == PRG_OK, "head-optim save: %s",
          prg_last_error());
    prg_unet_create(&net2, &cfg, 77);
    prg_classifier_create(&clf2, net2, 5, 4, 0, 78);
    prg_adam_create(&oh2, nh, &ac);
    prg_adam_create(&ofull, prg_unet_num_params(net2) + nh, &ac);
    before = (float *)malloc(nh * sizeof(float));
    memcpy(before, prg_classifier_head_params(clf2, NULL), nh * sizeof(float));
    CHECK(prg_checkpoint_restore(tmp_path("frozen.safetensors"), NULL, clf2, ofull, &r2, &step) == PRG_ERR_SHAPE &&
              strstr(prg_last_error(), "head alone"), "whole-model optimizer from a head-only file: %s", prg_last_error());
    CHECK(memcmp(before, prg_classifier_head_params(clf2, NULL), nh * sizeof(float)) == 0, "a refused restore changed the head");
    CHECK(prg_checkpoint_restore(tmp_path("frozen.safetensors"), NULL, clf2, oh2, &r2, &step) == PRG_OK,
          "head-optim restore: %s", prg_last_error());
    CHECK(step == 7 && prg_adam_step_count(oh2) == 7, "step %lld, optim step %lld", (long long)step,
          (long long)prg_adam_step_count(oh2));
    CHECK(memcmp(prg_adam_exp_avg(oh), prg_adam_exp_avg(oh2), nh * sizeof(float)) == 0 &&
              memcmp(prg_adam_exp_avg_sq(oh), prg_adam_exp_avg_sq(oh2), nh * sizeof(float)) == 0,
          "head moments differ after restore");
    CHECK(memcmp(prg_classifier_head_params(clf, NULL), prg_classifier_head_params(clf2, NULL), nh * sizeof(float)) == 0 &&
              same_params(net, net2), "parameters differ after restore");
    /* a whole-model training checkpoint is refused for a head-only optimizer */
    CHECK(prg_checkpoint_save(tmp_path("full.safetensors"), NULL, clf, ofull, &r1, 7) == PRG_OK, "save: %s", prg_last_error());
    CHECK(prg_checkpoint_restore(tmp_path("full.safetensors"), NULL, clf2, oh2, &r2, &step) == PRG_ERR_SHAPE,
          "head-only optimizer from a whole-model file: %s", prg_last_error());
    /* the caller's metadata pairs (a program's hyper-parameters) are kept; reserved keys refused */
    {
        const char *kv[4] = {"run.batch", "8", "run.lr", "0.001"}, *bad[2] = {"prg.step", "1"};
        prg_st *st = NULL;
        CHECK(prg_checkpoint_save_meta(tmp_path("meta.safetensors"), NULL, clf, oh, &r1, 7, kv, 2) == PRG_OK, "save_meta: %s",
              prg_last_error());
        CHECK(prg_safetensors_open(&st, tmp_path("meta.safetensors")) == PRG_OK, "open: %s", prg_last_error());
        if (st) {
            const char *b = prg_st_metadata(st, "run.batch"), *l = prg_st_metadata(st, "run.lr"), *s = prg_st_metadata(st, "prg.step");
            CHECK(b && !strcmp(b, "8") && l && !strcmp(l, "0.001") && s && !strcmp(s, "7"), "metadata %s %s %s", b ? b : "-",
                  l ? l : "-", s ? s : "-");
            prg_st_close(st);
        }
        CHECK(prg_checkpoint_save_meta(tmp_path("reserved.safetensors"), NULL, clf, oh, &r1, 7, bad, 1) == PRG_ERR_ARG &&
                  access(tmp_path("reserved.safetensors"), F_OK) != 0, "a reserved key was accepted: %s", prg_last_error());
    }
    free(before);
    prg_adam_free(oh); prg_adam_free(oh2); prg_adam_free(ofull);
    prg_classifier_free(clf); prg_classifier_free(clf2);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/prg_test_ckpt_%d", (int)getpid());
    mkdir(dir, 0700);
    prg_set_num_threads(2);
    test_unet_files();
    test_classifier_files();
    test_resume();
    test_head_optim();
    {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        if (system(cmd) != 0) printf("  could not remove %s\n", dir);
    }
    return prg_test_finish("test_checkpoint");
}
