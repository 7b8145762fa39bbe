/* ex_common.h - helpers shared by the example programs (pretrain, sample,
   finetune, evaluate, classify): flag parsing, dataset + transform setup,
   U-Net configs from a preset plus overrides, a deterministic batch order,
   label-smoothing cross-entropy, evaluation and timing.  Included once by
   each example after prg.h (with PRG_IMPLEMENTATION). */
#ifndef EX_COMMON_H
#define EX_COMMON_H

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *ex_prog = "example";
static int ex_quiet = 0; /* --quiet: no progress lines */

/* what: the file or step that failed; it is printed only when the library's
   message does not already name it. */
PRG_UNUSED static void ex_die(const char *what) {
    const char *e = prg_last_error();
    if (what && *what && !strstr(e, what)) fprintf(stderr, "%s: %s: %s\n", ex_prog, what, e);
    else fprintf(stderr, "%s: %s\n", ex_prog, e);
    exit(1);
}
PRG_UNUSED static void ex_check(prg_result r, const char *what) {
    if (r != PRG_OK) ex_die(what);
}
PRG_UNUSED static void *ex_alloc(size_t bytes) {
    void *p = prg_alloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "%s: out of memory (%zu bytes)\n", ex_prog, bytes);
        exit(1);
    }
    memset(p, 0, bytes);
    return p;
}

/* ---- flags ----------------------------------------------------------- */
/* Every value is parsed whole (no trailing characters, no wrap-around):
   integers as 64-bit and checked against the flag's range, floats finite
   and in range.  A bad value exits with status 2 and names the flag. */
static int ex_argi, ex_argc;
static char **ex_argv;
#define EX_FLAG(name) (!strcmp(ex_argv[ex_argi], name))
PRG_UNUSED static void ex_usage_error(const char *name, const char *value, const char *want) {
    fprintf(stderr, "%s: %s '%s': %s (see --help)\n", ex_prog, name, value, want);
    exit(2);
}
/* The value of the current flag (argv[i+1]); exits when missing. */
PRG_UNUSED static const char *ex_val(void) {
    if (ex_argi + 1 >= ex_argc) {
        fprintf(stderr, "%s: %s needs a value (see --help)\n", ex_prog, ex_argv[ex_argi]);
        exit(2);
    }
    return ex_argv[++ex_argi];
}
/* The checks without exiting (1: s is whole and in range, value in *v),
   for programs that report errors their own way (train_mpi). */
PRG_UNUSED static int ex_is_i64(const char *s, int64_t lo, int64_t hi, int64_t *v) {
    char *end;
    long long x;
    errno = 0;
    x = strtoll(s, &end, 10);
    if (end == s || *end || isspace((unsigned char)*s) || errno == ERANGE || x < lo || x > hi) return 0;
    *v = (int64_t)x;
    return 1;
}
PRG_UNUSED static int ex_is_u64(const char *s, uint64_t *v) {
    char *end;
    unsigned long long x;
    errno = 0;
    x = strtoull(s, &end, 0);
    if (end == s || *end || *s == '-' || isspace((unsigned char)*s) || errno == ERANGE) return 0;
    *v = (uint64_t)x;
    return 1;
}
PRG_UNUSED static int ex_is_num(const char *s, double lo, double hi, int lo_open, double *v) {
    char *end;
    double x = strtod(s, &end);
    if (end == s || *end || isspace((unsigned char)*s) || !(x == x) || x < lo || x > hi || (lo_open && x == lo)) return 0;
    *v = x;
    return 1;
}
/* "1,2,2" -> v[] (each in lo..hi): the count, or -1 for an empty item, a
   stray character or more than cap items. */
PRG_UNUSED static int ex_is_int_list(const char *s, int *v, int cap, int lo, int hi) {
    int n = 0;
    const char *p = s;
    for (;;) {
        char *end;
        long x;
        errno = 0;
        x = strtol(p, &end, 10);
        if (end == p || isspace((unsigned char)*p) || errno == ERANGE || x < lo || x > hi || n >= cap ||
            (*end && *end != ','))
            return -1;
        v[n++] = (int)x;
        if (!*end) return n;
        p = end + 1;
    }
}
/* Strict integer s of `name` in [lo, hi]. */
PRG_UNUSED static int64_t ex_parse_i64(const char *name, const char *s, int64_t lo, int64_t hi) {
    char want[96];
    int64_t v = 0;
    snprintf(want, sizeof want, "wants an integer in %lld..%lld", (long long)lo, (long long)hi);
    if (!ex_is_i64(s, lo, hi, &v)) ex_usage_error(name, s, want);
    return v;
}
PRG_UNUSED static int64_t ex_i64(int64_t lo, int64_t hi) {
    const char *s = ex_val();
    return ex_parse_i64(ex_argv[ex_argi - 1], s, lo, hi);
}
PRG_UNUSED static int ex_int_in(int lo, int hi) { return (int)ex_i64(lo, hi); }
/* A non-negative int flag (prefer ex_int_in with the flag's own range). */
PRG_UNUSED static int ex_int(void) { return ex_int_in(0, INT_MAX); }
/* A seed: any 64-bit value, decimal or 0x hex. */
PRG_UNUSED static uint64_t ex_seed(void) {
    const char *s = ex_val();
    uint64_t v = 0;
    if (!ex_is_u64(s, &v)) ex_usage_error(ex_argv[ex_argi - 1], s, "wants an integer in 0..18446744073709551615");
    return v;
}
/* Strict finite number s of `name` in [lo, hi] (lo_open: lo itself excluded). */
PRG_UNUSED static double ex_parse_num(const char *name, const char *s, double lo, double hi, int lo_open) {
    char want[96];
    double v = 0;
    snprintf(want, sizeof want, "wants a number in %s%g, %g]", lo_open ? "(" : "[", lo, hi);
    if (!ex_is_num(s, lo, hi, lo_open, &v)) ex_usage_error(name, s, want);
    return v;
}
PRG_UNUSED static double ex_num_in(double lo, double hi, int lo_open) {
    const char *s = ex_val();
    return ex_parse_num(ex_argv[ex_argi - 1], s, lo, hi, lo_open);
}
/* Any finite number (prefer ex_num_in with the flag's own range). */
PRG_UNUSED static double ex_num(void) { return ex_num_in(-DBL_MAX, DBL_MAX, 0); }
PRG_UNUSED static void ex_bad_flag(void) {
    fprintf(stderr, "%s: unknown argument '%s' (see --help)\n", ex_prog, ex_argv[ex_argi]);
    exit(2);
}

/* "1,2,2" -> v[] (each in lo..hi), returns the count; exits naming the flag
   on an empty item, a stray character or too many items. */
PRG_UNUSED static int ex_int_list(const char *name, const char *s, int *v, int cap, int lo, int hi) {
    char want[96];
    int n = ex_is_int_list(s, v, cap, lo, hi);
    snprintf(want, sizeof want, "wants a comma-separated list of at most %d integers in %d..%d", cap, lo, hi);
    if (n < 0) ex_usage_error(name, s, want);
    return n;
}

/* ---- U-Net config overrides ----------------------------------------- */
typedef struct ex_net_flags {
    const char *preset;
    int image_size, model_channels, num_res_blocks, num_heads, groups;
    const char *channel_mult, *attention_ds;
} ex_net_flags;

PRG_UNUSED static void ex_net_flags_init(ex_net_flags *f, const char *preset) {
    memset(f, 0, sizeof(*f));
    f->preset = preset;
}
/* Consumes a U-Net flag at argv[ex_argi]; returns 1 when it was one. */
PRG_UNUSED static int ex_net_flag(ex_net_flags *f) {
    if (EX_FLAG("--preset")) f->preset = ex_val();
    else if (EX_FLAG("--image-size")) f->image_size = ex_int_in(4, 1024);
    else if (EX_FLAG("--model-channels")) f->model_channels = ex_int_in(1, 4096);
    else if (EX_FLAG("--res-blocks")) f->num_res_blocks = ex_int_in(1, 16);
    else if (EX_FLAG("--channel-mult")) { /* checked now, applied by ex_net_config */
        int v[PRG_UNET_MAX_LEVELS];
        f->channel_mult = ex_val();
        ex_int_list("--channel-mult", f->channel_mult, v, PRG_UNET_MAX_LEVELS, 1, 64);
    } else if (EX_FLAG("--attention-ds")) {
        int v[PRG_UNET_MAX_LEVELS];
        f->attention_ds = ex_val();
        if (strcmp(f->attention_ds, "none")) ex_int_list("--attention-ds", f->attention_ds, v, PRG_UNET_MAX_LEVELS, 0, 1 << 20);
    }
    else if (EX_FLAG("--heads")) f->num_heads = ex_int_in(1, 256);
    else if (EX_FLAG("--groups")) f->groups = ex_int_in(1, 1024);
    else return 0;
    return 1;
}
#define EX_NET_HELP \
    "  --preset NAME          tiny32 | small32 | cifar32 | imagenet64 (U-Net of METHOD.md B)\n" \
    "  --image-size N         model input size (default: the preset's; 28x28 data is padded to 32)\n" \
    "  --model-channels N     base width (every width divisible by --groups)\n" \
    "  --res-blocks N         ResBlocks per level\n" \
    "  --channel-mult L       e.g. 1,2,2\n" \
    "  --attention-ds L       downsample rates with attention, e.g. 4 (\"none\" = middle block only)\n" \
    "  --heads N              attention heads\n" \
    "  --groups N             GroupNorm groups (32 in the reference)\n"

PRG_UNUSED static void ex_net_config(prg_unet_config *cfg, const ex_net_flags *f, int channels) {
    ex_check(prg_unet_config_preset(cfg, f->preset), "--preset");
    cfg->in_channels = cfg->out_channels = channels;
    if (f->image_size) cfg->image_size = f->image_size;
    if (f->model_channels) cfg->model_channels = f->model_channels;
    if (f->num_res_blocks) cfg->num_res_blocks = f->num_res_blocks;
    if (f->num_heads) cfg->num_heads = f->num_heads;
    if (f->groups) cfg->groups = f->groups;
    if (f->channel_mult)
        cfg->num_levels = ex_int_list("--channel-mult", f->channel_mult, cfg->channel_mult, PRG_UNET_MAX_LEVELS, 1, 64);
    if (f->attention_ds)
        cfg->num_attention = strcmp(f->attention_ds, "none")
                                 ? ex_int_list("--attention-ds", f->attention_ds, cfg->attention_ds, PRG_UNET_MAX_LEVELS, 0, 1 << 20) : 0;
    ex_check(prg_unet_config_check(cfg), "U-Net config");
}

/* ---- paths ----------------------------------------------------------- */
/* An input file of `flag`: exits with a plain message when it is missing,
   a directory or not a regular file (before any loader reads it). */
PRG_UNUSED static void ex_check_input(const char *path, const char *flag) {
    struct stat st;
    if (!path || !*path) { fprintf(stderr, "%s: %s: empty path\n", ex_prog, flag); exit(2); }
    if (stat(path, &st) != 0) {
        fprintf(stderr, "%s: %s %s: %s\n", ex_prog, flag, path, strerror(errno));
        exit(1);
    }
    if (S_ISDIR(st.st_mode)) { fprintf(stderr, "%s: %s %s: is a directory, not a file\n", ex_prog, flag, path); exit(1); }
    if (!S_ISREG(st.st_mode)) { fprintf(stderr, "%s: %s %s: not a regular file\n", ex_prog, flag, path); exit(1); }
}

/* An output that would overwrite one of the run's inputs is refused. */
PRG_UNUSED static void ex_check_not_input(const char *out, const char *out_flag, const char *in, const char *in_flag) {
    struct stat a, b;
    if (out && in && stat(out, &a) == 0 && stat(in, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
        fprintf(stderr, "%s: %s %s is the %s file; give another name\n", ex_prog, out_flag, out, in_flag);
        exit(2);
    }
}

/* An integer of a checkpoint's metadata (dflt when absent); exits naming
   the file when it cannot be read or the value is not an integer. */
PRG_UNUSED static int64_t ex_meta_i64(const char *path, const char *key, int64_t dflt) {
    prg_st *st;
    const char *v;
    int64_t x = dflt;
    ex_check(prg_safetensors_open(&st, path), path);
    v = prg_st_metadata(st, key);
    if (v) {
        char *end;
        errno = 0;
        x = (int64_t)strtoll(v, &end, 10);
        if (!*v || *end || errno) {
            fprintf(stderr, "%s: %s: metadata %s = '%s' is not an integer\n", ex_prog, path, key, v);
            exit(1);
        }
    }
    prg_st_close(st);
    return x;
}

/* An output file of `flag`, checked before any work: the path is not empty,
   is not a directory or other non-regular file, and its directory exists
   and takes a new file (a unique name created with O_CREAT|O_EXCL, then
   removed).  Exits with a message naming the flag and the path. */
PRG_UNUSED static void ex_check_writable(const char *path, const char *flag) {
    struct stat st;
    char dir[4096], probe[4200];
    const char *slash;
    int fd, k;
    if (!path || !*path) { fprintf(stderr, "%s: %s: empty path\n", ex_prog, flag); exit(2); }
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        fprintf(stderr, "%s: %s %s: %s; give a file name\n", ex_prog, flag, path,
                S_ISDIR(st.st_mode) ? "is a directory" : "exists and is not a regular file");
        exit(2);
    }
    slash = strrchr(path, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == path) snprintf(dir, sizeof dir, "/");
    else snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "%s: %s %s: directory %s %s\n", ex_prog, flag, path, dir,
                stat(dir, &st) != 0 ? "does not exist" : "is not a directory");
        exit(2);
    }
    for (k = 0; k < 100; k++) {
        snprintf(probe, sizeof probe, "%s/.%s-probe-%ld-%d", dir, ex_prog, (long)getpid(), k);
        fd = open(probe, O_WRONLY | O_CREAT | O_EXCL, 0600);
        if (fd >= 0) { close(fd); unlink(probe); return; }
        if (errno != EEXIST) break;
    }
    fprintf(stderr, "%s: %s %s: cannot create files in %s: %s\n", ex_prog, flag, path, dir, strerror(errno));
    exit(2);
}

/* ---- data ------------------------------------------------------------ */
/* The normalisation of a dataset: MNIST-like 1-channel data gets
   0.1307/0.3081, 3 channels ImageNet's (the reference's default). */
PRG_UNUSED static void ex_norm(int c, float *mean, float *std) {
    static const float im[3] = {0.485f, 0.456f, 0.406f}, is[3] = {0.229f, 0.224f, 0.225f};
    int i;
    for (i = 0; i < c; i++) {
        mean[i] = c == 3 ? im[i] : 0.1307f;
        std[i] = c == 3 ? is[i] : 0.3081f;
    }
}

/* The transform for images c x h x w to a square `size` model input:
   smaller sources are zero-padded to it (28 -> 32: border 2) first.
   augment: the reference's training pipeline (METHOD.md C.2/D); 0: just
   pad/crop + normalise.  hflip < 0 keeps the pipeline's default. */
PRG_UNUSED static void ex_transform(prg_transform *t, int train, int augment, int c, int h, int w, int size, float hflip) {
    int border = (size > h && size - h == size - w && (size - h) % 2 == 0) ? (size - h) / 2 : 0;
    int eh = h + 2 * border;
    ex_check(prg_transform_init(t, train && augment, c, size, size), "transform");
    t->border = border;
    if (!(train && augment) && eh != size) {
        if (eh > size) {
            t->crop = PRG_CROP_CENTER;
            t->resize = size * 8 / 7;
            if (t->resize > eh) t->resize = size;
        } else {
            fprintf(stderr, "%s: images %dx%d cannot be fitted to %d\n", ex_prog, h, w, size);
            exit(1);
        }
    }
    if (train && augment && hflip >= 0) t->hflip = hflip;
    ex_norm(c, t->mean, t->std);
    ex_check(prg_transform_check(t, c, h, w), "transform");
}

/* A deterministic order: the permutation of epoch e depends only on (seed, e),
   so a run resumed at any step sees the same batches. */
PRG_UNUSED static void ex_epoch_perm(int *perm, int n, uint64_t seed, uint64_t epoch) {
    prg_rng r;
    int i;
    prg_rng_seed(&r, seed ^ 0x5045524Dull, 1000 + epoch);
    for (i = 0; i < n; i++) perm[i] = i;
    for (i = n - 1; i > 0; i--) {
        int j = (int)prg_rng_below(&r, (uint32_t)(i + 1)), k = perm[i];
        perm[i] = perm[j];
        perm[j] = k;
    }
}

/* prg_dataset_load over a comma-separated list of files (CIFAR-10's
   data_batch_1.bin,...,data_batch_5.bin; Imagenet64's 10 train npz), which
   are concatenated in order. */
PRG_UNUSED static void ex_load_data_of(prg_dataset *ds, const char *spec, const char *flag) {
    char buf[4096], *p, *q;
    prg_dataset parts[64];
    int np = 0, i, n = 0, k = 0;
    size_t img, off = 0;
    if (!strchr(spec, ',')) { ex_check_input(spec, flag); ex_check(prg_dataset_load(ds, spec), spec); return; }
    memset(parts, 0, sizeof parts);
    snprintf(buf, sizeof(buf), "%s", spec);
    if (strlen(spec) >= sizeof buf) { fprintf(stderr, "%s: %s: the list is longer than %d characters\n", ex_prog, flag, (int)sizeof buf - 1); exit(2); }
    for (p = buf; p; p = q) {
        q = strchr(p, ',');
        if (q) *q++ = 0;
        if (np == 64) { fprintf(stderr, "%s: %s: more than 64 files\n", ex_prog, flag); exit(2); }
        ex_check_input(p, flag);
        ex_check(prg_dataset_load(&parts[np], p), p);
        if (np && (parts[np].c != parts[0].c || parts[np].h != parts[0].h || parts[np].w != parts[0].w)) {
            fprintf(stderr, "%s: %s has other image sizes than %s\n", ex_prog, p, buf);
            exit(1);
        }
        if (parts[np].n > INT_MAX - n) { fprintf(stderr, "%s: %s: more than %d images in all\n", ex_prog, flag, INT_MAX); exit(1); }
        n += parts[np].n;
        if (parts[np].num_classes > k) k = parts[np].num_classes;
        np++;
    }
    ex_check(prg_dataset_alloc(ds, n, parts[0].c, parts[0].h, parts[0].w, k), "dataset");
    img = (size_t)parts[0].c * parts[0].h * parts[0].w;
    for (i = 0; i < np; i++) {
        memcpy(ds->images + off * img, parts[i].images, (size_t)parts[i].n * img);
        memcpy(ds->labels + off, parts[i].labels, (size_t)parts[i].n * sizeof(int32_t));
        off += (size_t)parts[i].n;
        prg_dataset_free(&parts[i]);
    }
}
PRG_UNUSED static void ex_load_data(prg_dataset *ds, const char *spec) { ex_load_data_of(ds, spec, "--data"); }

/* ---- progress -------------------------------------------------------- */
/* One line on stdout every few seconds for long work (evaluation,
   encoding, sampling), like the training loops' step lines:
   "what: done/total unit  rate unit/s  eta T".  Silent with --quiet. */
typedef struct ex_progress {
    const char *what, *unit;
    int64_t total;
    double t0, last;
} ex_progress;
PRG_UNUSED static double ex_now(void);
PRG_UNUSED static void ex_fmt_time(char *buf, size_t cap, double s);
PRG_UNUSED static void ex_progress_start(ex_progress *p, const char *what, int64_t total, const char *unit) {
    p->what = what;
    p->unit = unit;
    p->total = total;
    p->t0 = p->last = ex_now();
}
PRG_UNUSED static void ex_progress_update(ex_progress *p, int64_t done) {
    double now = ex_now(), el = now - p->t0, rate;
    char eta[32];
    if (ex_quiet || (now - p->last < 5 && !(done == p->total && p->last > p->t0))) return;
    p->last = now;
    rate = done / (el > 0 ? el : 1e-9);
    ex_fmt_time(eta, sizeof eta, rate > 0 ? (double)(p->total - done) / rate : -1);
    printf("%s: %lld/%lld %s  %.1f %s/s  eta %s\n", p->what, (long long)done, (long long)p->total, p->unit, rate,
           p->unit, eta);
    fflush(stdout);
}

/* ---- loss ------------------------------------------------------------ */
/* ---- evaluation ------------------------------------------------------ */
/* Top-1 and top-5 (fractions) of clf on ds; conf (may be NULL) [k][k]
   counts rows = true label, columns = prediction. */
PRG_UNUSED static void ex_evaluate(prg_classifier *clf, const prg_dataset *ds, const prg_transform *t, int batch,
                        double *top1, double *top5, int64_t *conf, int limit) {
    int n = limit > 0 && limit < ds->n ? limit : ds->n, k = prg_classifier_num_classes(clf);
    int i, b, j, c1 = 0, c5 = 0;
    const prg_unet_config *cfg = prg_unet_config_get(prg_classifier_unet(clf));
    size_t img = (size_t)cfg->in_channels * cfg->image_size * cfg->image_size;
    float *x, *logits;
    int32_t *y;
    int *index;
    ex_progress pr;
    if (n < 1) { fprintf(stderr, "%s: the evaluation set holds no images\n", ex_prog); exit(1); }
    if (batch > n) batch = n;
    x = (float *)ex_alloc(img * batch * sizeof(float));
    logits = (float *)ex_alloc((size_t)batch * k * sizeof(float));
    y = (int32_t *)ex_alloc(batch * sizeof(int32_t));
    index = (int *)ex_alloc(batch * sizeof(int));
    if (conf) memset(conf, 0, (size_t)k * k * sizeof(int64_t));
    ex_progress_start(&pr, "evaluate", n, "images");
    for (i = 0; i < n; i += batch) {
        int bs = n - i < batch ? n - i : batch;
        for (b = 0; b < bs; b++) index[b] = i + b;
        ex_check(prg_batch_build(x, y, ds, t, index, bs, 0, 0), "batch");
        ex_check(prg_classifier_forward(clf, bs, x, logits), "classifier forward");
        for (b = 0; b < bs; b++) {
            const float *l = logits + (size_t)b * k;
            int rank = 0, best = 0;
            for (j = 0; j < k; j++) {
                if (l[j] > l[y[b]] || (l[j] == l[y[b]] && j < y[b])) rank++;
                if (l[j] > l[best]) best = j;
            }
            c1 += rank == 0;
            c5 += rank < 5;
            if (conf) conf[(size_t)y[b] * k + best]++;
        }
        ex_progress_update(&pr, i + bs);
    }
    *top1 = (double)c1 / n;
    *top5 = (double)c5 / n;
    prg_free(x); prg_free(logits); prg_free(y); prg_free(index);
}

/* ---- time ------------------------------------------------------------ */
PRG_UNUSED static double ex_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}
PRG_UNUSED static double ex_cpu(void) { return (double)clock() / CLOCKS_PER_SEC; }
PRG_UNUSED static void ex_fmt_time(char *buf, size_t cap, double s) {
    if (s < 0 || s > 1e7) snprintf(buf, cap, "?");
    else if (s < 90) snprintf(buf, cap, "%.0fs", s);
    else if (s < 5400) snprintf(buf, cap, "%.1fm", s / 60);
    else snprintf(buf, cap, "%.1fh", s / 3600);
}

/* SIGINT/SIGTERM: the training loops finish the current step, write a
   checkpoint and exit with 128 + the signal (130, 143), as shells report a
   killed process; a second signal ends the program at once (saves are
   atomic).  ex_stop = 1 is a requested stop (--stop-after), exit status 0. */
static volatile sig_atomic_t ex_stop = 0;
PRG_UNUSED static void ex_on_signal(int sig) {
    ex_stop = sig;
    signal(sig, SIG_DFL);
}
PRG_UNUSED static void ex_catch_signals(void) {
    signal(SIGINT, ex_on_signal);
    signal(SIGTERM, ex_on_signal);
}
PRG_UNUSED static int ex_exit_status(void) { return ex_stop > 1 ? 128 + (int)ex_stop : 0; }

/* ---- runs that cannot destroy anything -------------------------------- */
/* The step of the training checkpoint at path: -2 when there is no file,
   -1 when the file is not a training checkpoint (no readable prg.step). */
PRG_UNUSED static int64_t ex_ckpt_step(const char *path) {
    prg_st *st;
    const char *v;
    char *end;
    long long x = -1;
    if (access(path, F_OK) != 0) return -2;
    if (prg_safetensors_open(&st, path) != PRG_OK) return -1;
    v = prg_st_metadata(st, "prg.step");
    if (v && *v) {
        errno = 0;
        x = strtoll(v, &end, 10);
        if (*end || errno || x < 0) x = -1;
    }
    prg_st_close(st);
    return (int64_t)x;
}
/* A fresh run (not --resume) that will train `steps` steps into `path`:
   refused without --force when path holds something else than a training
   checkpoint or one of more steps.  Returns the step a save must reach to
   replace the file (-2: no file). */
PRG_UNUSED static int64_t ex_replace_guard(const char *path, const char *flag, int64_t steps, int force) {
    int64_t have = ex_ckpt_step(path);
    if (force || have == -2) return force ? -2 : have;
    if (have == -1) {
        fprintf(stderr, "%s: %s %s exists and is not a training checkpoint; not replaced (--force replaces it)\n", ex_prog,
                flag, path);
        exit(2);
    }
    if (have > steps) {
        fprintf(stderr, "%s: %s %s holds a model trained %lld steps; this run of %lld steps would replace it "
                "(--resume continues it, --force replaces it)\n", ex_prog, flag, path, (long long)have, (long long)steps);
        exit(2);
    }
    return have;
}

/* The hyper-parameters a resumed run must share with its checkpoint: kept
   as "run.<name>" metadata (keys of the library's own metadata, such as
   "prg.t_span", are compared but written by the library). */
typedef struct ex_params { int n; char key[32][40], val[32][80]; const char *kv[64]; } ex_params;
PRG_UNUSED static void ex_param(ex_params *p, const char *key, const char *val) {
    if (p->n >= 32) return;
    snprintf(p->key[p->n], sizeof p->key[0], "%s", key);
    snprintf(p->val[p->n], sizeof p->val[0], "%s", val);
    p->n++;
}
PRG_UNUSED static void ex_param_i(ex_params *p, const char *key, int64_t v) {
    char b[32];
    snprintf(b, sizeof b, "%lld", (long long)v);
    ex_param(p, key, b);
}
PRG_UNUSED static void ex_param_u(ex_params *p, const char *key, uint64_t v) {
    char b[32];
    snprintf(b, sizeof b, "%llu", (unsigned long long)v);
    ex_param(p, key, b);
}
PRG_UNUSED static void ex_param_f(ex_params *p, const char *key, double v) {
    char b[40];
    snprintf(b, sizeof b, "%.17g", v);
    ex_param(p, key, b);
}
/* The "run.*" pairs for prg_checkpoint_save_meta; returns their count. */
PRG_UNUSED static int ex_params_kv(ex_params *p) {
    int i, n = 0;
    for (i = 0; i < p->n; i++)
        if (!strncmp(p->key[i], "run.", 4)) { p->kv[2 * n] = p->key[i]; p->kv[2 * n + 1] = p->val[i]; n++; }
    return n;
}
/* --resume: every parameter the checkpoint records must be the same now;
   else the run is refused, listing each difference, unless override, which
   lists what the run keeps and what it changes.  Exits on refusal. */
PRG_UNUSED static void ex_resume_check(const char *path, const ex_params *p, int override) {
    prg_st *st;
    int i, nd = 0, unknown = 0;
    char diff[2048];
    size_t at = 0;
    diff[0] = 0;
    ex_check(prg_safetensors_open(&st, path), path);
    for (i = 0; i < p->n; i++) {
        const char *v = prg_st_metadata(st, p->key[i]), *name = strchr(p->key[i], '.') + 1;
        if (!v) { unknown++; continue; }
        if (strcmp(v, p->val[i]) != 0 && at < sizeof diff - 200) {
            at += (size_t)snprintf(diff + at, sizeof diff - at, "%s  %s: %s in the checkpoint, %s now", nd ? "\n" : "",
                                   name, v, p->val[i]);
            nd++;
        }
    }
    prg_st_close(st);
    if (nd && !override) {
        fprintf(stderr, "%s: --resume %s with other hyper-parameters than it was trained with:\n%s\n"
                "  (run with the same flags, or add --override to continue with the new values)\n", ex_prog, path, diff);
        exit(2);
    }
    if (nd)
        printf("--override: keeps the weights, optimizer state, RNG and step of %s; changes:\n%s\n", path, diff);
    if (unknown && !ex_quiet)
        printf("note: %s records %d of this run's hyper-parameters only; the others were not checked\n", path,
               p->n - unknown);
}

/* Batch buffers are sized for min(--batch, images). */
PRG_UNUSED static int ex_clamp_batch(int batch, int n, const char *flag) {
    if (batch <= n) return batch;
    if (!ex_quiet) printf("%s %d clamped to the dataset's %d images\n", flag, batch, n);
    return n;
}

PRG_UNUSED static int ex_file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

/* The U-Net velocity for the flow section's samplers. */
PRG_UNUSED static prg_result ex_unet_vel(void *net, int b, const float *x, const float *t, float *v) {
    return prg_unet_forward((prg_unet *)net, b, x, t, v);
}

#endif
