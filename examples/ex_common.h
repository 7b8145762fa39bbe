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

/* EX_EXIT(code) ends the program on a bad flag or a failure (exit; the
   flag fuzzer of tools/fuzz_files.c defines it to return to its loop). */
#ifndef EX_EXIT
#define EX_EXIT(code) exit(code)
#endif
static const char *ex_prog = "example";
static int ex_quiet = 0; /* --quiet: no progress lines */
/* Data-parallel runs (ex_mpi.h sets these): this process's rank of ex_ranks;
   only rank 0 writes the run's files; ex_evaluate takes its contiguous part
   of the evaluation set and sums the counts with ex_sum_counts. */
static int ex_rank = 0, ex_ranks = 1;
static void (*ex_sum_counts)(int64_t *v, int n) = NULL;

/* what: the file or step that failed; it is printed only when the library's
   message does not already name it. */
PRG_UNUSED static void ex_die(const char *what) {
    const char *e = prg_last_error();
    if (what && *what && !strstr(e, what)) fprintf(stderr, "%s: %s: %s\n", ex_prog, what, e);
    else fprintf(stderr, "%s: %s\n", ex_prog, e);
    EX_EXIT(1);
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
    EX_EXIT(2);
}
/* The value of the current flag (argv[i+1]); exits when missing. */
PRG_UNUSED static const char *ex_val(void) {
    if (ex_argi + 1 >= ex_argc) {
        fprintf(stderr, "%s: %s needs a value (see --help)\n", ex_prog, ex_argv[ex_argi]);
        EX_EXIT(2);
    }
    return ex_argv[++ex_argi];
}
/* The checks without exiting (1: s is whole and in range, value in *v),
   under the flag parsers below. */
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
    /* decimal, or hex after 0x: a leading zero is not octal (--seed 010 is ten) */
    x = strtoull(s, &end, s[0] == '0' && (s[1] == 'x' || s[1] == 'X') ? 16 : 10);
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
    EX_EXIT(2);
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

/* ---- text lists: class names, label files ---------------------------- */
/* A list file (PREFIX_classes.txt, classify --labels, prepare's --classes,
   --val-labels, val_annotations.txt) read whole: lines end at '\n' (a '\r'
   before it is dropped; the last line needs no '\n'), each line its own
   string, however long.  Refused with a message in err: more than
   EX_LIST_MAX_BYTES, a NUL byte (the name would be cut short unseen), more
   than max_lines lines. */
#define EX_LIST_MAX_BYTES ((size_t)64 << 20)
typedef struct ex_lines { char *text; char **v; int n; } ex_lines;
PRG_UNUSED static void ex_lines_free(ex_lines *l) {
    free(l->text);
    free(l->v);
    l->text = NULL;
    l->v = NULL;
    l->n = 0;
}
PRG_UNUSED static int ex_lines_parse(ex_lines *l, const char *data, size_t n, int max_lines, const char *what, char *err,
                                     size_t errsize) {
    size_t i, lines = 0, k = 0, start = 0;
    l->text = NULL;
    l->v = NULL;
    l->n = 0;
    for (i = 0; i < n; i++) {
        if (!data[i]) {
            snprintf(err, errsize, "%s: a NUL byte at byte %zu (line %zu): not a text file of names", what, i, lines + 1);
            return 0;
        }
        lines += data[i] == '\n';
    }
    if (n && data[n - 1] != '\n') lines++;
    if (lines > (size_t)max_lines) {
        snprintf(err, errsize, "%s: %zu lines, more than the %d it may have", what, lines, max_lines);
        return 0;
    }
    l->text = (char *)malloc(n + 1);
    l->v = (char **)malloc((lines ? lines : 1) * sizeof(char *));
    if (!l->text || !l->v) {
        ex_lines_free(l);
        snprintf(err, errsize, "%s: out of memory", what);
        return 0;
    }
    if (n) memcpy(l->text, data, n);
    l->text[n] = 0;
    for (i = 0; i <= n; i++)
        if (i == n ? i > start : l->text[i] == '\n') {
            size_t e = i;
            if (e > start && l->text[e - 1] == '\r') e--;
            l->text[e] = 0;
            l->v[k++] = l->text + start;
            start = i + 1;
        }
    l->n = (int)k;
    return 1;
}
PRG_UNUSED static int ex_lines_read(ex_lines *l, const char *path, int max_lines, char *err, size_t errsize) {
    FILE *f = fopen(path, "rb");
    char *buf;
    size_t n = 0, cap = 65536;
    int ok;
    l->text = NULL;
    l->v = NULL;
    l->n = 0;
    if (!f) { snprintf(err, errsize, "%s: %s", path, strerror(errno)); return 0; }
    buf = (char *)malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap) break;
        if (cap > EX_LIST_MAX_BYTES) { fclose(f); free(buf); snprintf(err, errsize, "%s: larger than %zu MiB: not a list of names", path, EX_LIST_MAX_BYTES >> 20); return 0; }
        {
            char *nb = (char *)realloc(buf, cap * 2);
            if (!nb) { free(buf); buf = NULL; break; }
            buf = nb;
            cap *= 2;
        }
    }
    if (!buf) { fclose(f); snprintf(err, errsize, "%s: out of memory", path); return 0; }
    if (ferror(f)) { fclose(f); free(buf); snprintf(err, errsize, "%s: read error", path); return 0; }
    fclose(f);
    ok = ex_lines_parse(l, buf, n, max_lines, path, err, errsize);
    free(buf);
    return ok;
}
/* The first and second blank-separated words of line (cut in place; "" when absent). */
PRG_UNUSED static void ex_words2(char *line, char **a, char **b) {
    char *p = line;
    *a = *b = p + strlen(p);
    while (*p && isspace((unsigned char)*p)) p++;
    if (!*p) return;
    *a = p;
    while (*p && !isspace((unsigned char)*p)) p++;
    if (!*p) return;
    *p++ = 0;
    while (*p && isspace((unsigned char)*p)) p++;
    if (!*p) return;
    *b = p;
    while (*p && !isspace((unsigned char)*p)) p++;
    *p = 0;
}
typedef struct ex__name_idx { const char *name; int index; } ex__name_idx;
static int ex__cmp_name_idx(const void *x, const void *y) {
    const ex__name_idx *a = (const ex__name_idx *)x, *b = (const ex__name_idx *)y;
    int c = strcmp(a->name, b->name);
    return c ? c : (a->index > b->index) - (a->index < b->index);
}
/* A list of class names (prepare's --classes; every folder layout name):
   words = 0 takes whole lines (the ImageFolder layout: names may hold
   blanks), 1 the first word of each line (the ImageNet layouts, e.g.
   map_clsloc.txt); blank lines are skipped.  At most PRG_MAX_CLASSES names,
   each once; with words = 0 each is one directory under the root (no '/',
   not "." or ".."), which prepare reads as DIR/<name>.  On success the
   names point into l (l->v[0..l->n) replaced by them). */
PRG_UNUSED static int ex_class_list(ex_lines *l, int words, const char *what, char *err, size_t errsize) {
    int i, k = 0;
    ex__name_idx *idx;
    for (i = 0; i < l->n; i++) {
        char *a = l->v[i], *b;
        if (words) ex_words2(l->v[i], &a, &b);
        if (!*a) continue;
        if (!words && (strchr(a, '/') || !strcmp(a, ".") || !strcmp(a, ".."))) {
            snprintf(err, errsize, "%s: line %d, '%.200s', is not a directory name (a class is one directory under the root)", what,
                     i + 1, a);
            return 0;
        }
        l->v[k++] = a;
    }
    l->n = k;
    if (k > PRG_MAX_CLASSES) {
        snprintf(err, errsize, "%s: %d classes, more than PRG_MAX_CLASSES (%d)", what, k, (int)PRG_MAX_CLASSES);
        return 0;
    }
    /* each class once: a class twice would write its images twice (sorted: n log n, not n^2) */
    idx = (ex__name_idx *)malloc((size_t)(k ? k : 1) * sizeof *idx);
    if (!idx) { snprintf(err, errsize, "%s: out of memory", what); return 0; }
    for (i = 0; i < k; i++) { idx[i].name = l->v[i]; idx[i].index = i; }
    if (k > 1) qsort(idx, (size_t)k, sizeof *idx, ex__cmp_name_idx);
    for (i = 1; i < k; i++)
        if (!strcmp(idx[i - 1].name, idx[i].name)) {
            snprintf(err, errsize, "%s: class '%.200s' is listed twice (entries %d and %d)", what, idx[i].name, idx[i - 1].index + 1,
                     idx[i].index + 1);
            free(idx);
            return 0;
        }
    free(idx);
    return 1;
}
/* A label of a val label list: a 1-based class number (decimal, whole) or
   a class name of classes[0..n); -1 when it is neither. */
PRG_UNUSED static int ex_val_label(const char *lab, char *const *classes, int n) {
    int64_t v;
    int i;
    if (lab[0] >= '0' && lab[0] <= '9') return ex_is_i64(lab, 1, n, &v) ? (int)v - 1 : -1;
    for (i = 0; i < n; i++)
        if (!strcmp(classes[i], lab)) return i;
    return -1;
}

/* ---- U-Net config overrides ----------------------------------------- */
typedef struct ex_net_flags {
    const char *preset;
    int image_size, model_channels, num_res_blocks, num_heads, groups;
    const char *channel_mult, *attention_ds;
    int given; /* a U-Net flag was on the command line */
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
    f->given = 1;
    return 1;
}
#define EX_NET_HELP \
    "  --preset NAME          tiny32 | small32 | cifar32 | imagenet64 (U-Net of docs/METHOD.md B)\n" \
    "  --image-size N         model input size (default: the data's side when the U-Net and the\n" \
    "                         head's 16x16 pooling take it, else the preset's: 28x28 is padded to 32)\n" \
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

/* The config to load the U-Net or classifier file at path with: NULL when
   the file carries its own ('prg.unet' metadata), else the U-Net flags'
   config with the file's channels (input_blocks.0.0.weight [mc][in][3][3],
   out.2.weight [out][mc][3][3]).  A file without a config and no U-Net flag
   on the command line: exits naming the flags. */
PRG_UNUSED static const prg_unet_config *ex_file_config(prg_unet_config *cfg, const ex_net_flags *f, const char *path) {
    prg_st *st;
    prg_st_info in, out;
    int cin = 3, cout = 3;
    ex_check(prg_st_open(&st, path), path);
    if (prg_st_metadata(st, "prg.unet")) {
        if (f->given)
            fprintf(stderr, "%s: %s carries its U-Net config (%s); the U-Net flags are not used\n", ex_prog, path,
                    prg_st_metadata(st, "prg.unet"));
        prg_st_close(st);
        return NULL;
    }
    if (!f->given) {
        fprintf(stderr, "%s: %s has no U-Net config in its metadata (a plain state_dict): give it with the U-Net "
                "flags (--preset NAME and --model-channels N --res-blocks N --channel-mult L --attention-ds L "
                "--heads N --groups N --image-size N where it differs; see --help), or convert the .pt with "
                "tools/pt2safetensors.py, which reads the config off the tensor shapes\n", ex_prog, path);
        exit(1);
    }
    if (prg_st_find(st, "input_blocks.0.0.weight", &in) == PRG_OK && in.ndim == 4) cin = (int)in.shape[1];
    if (prg_st_find(st, "out.2.weight", &out) == PRG_OK && out.ndim == 4) cout = (int)out.shape[0];
    prg_st_close(st);
    ex_net_config(cfg, f, cin);
    cfg->out_channels = cout;
    ex_check(prg_unet_config_check(cfg), "U-Net config");
    return cfg;
}

/* The config for a dataset: ex_net_config with its channels, and without
   --image-size the data's side when it suits (square, divisible by
   2^(levels-1), under 16 or a multiple of the head's 16x16 pooling), else
   the preset's (28x28 MNIST -> 32, zero-padded as in the reference). */
PRG_UNUSED static void ex_net_config_data(prg_unet_config *cfg, const ex_net_flags *f, const prg_dataset *ds) {
    ex_net_config(cfg, f, ds->c);
    if (!f->image_size && ds->h == ds->w) {
        int s = ds->h;
        if (s <= 4096 && s % (1 << (cfg->num_levels - 1)) == 0 && (s < 16 || s % 16 == 0)) cfg->image_size = s;
    }
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
    ex_check(prg_st_open(&st, path), path);
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

/* An output file of `flag`, checked before any work with prg_check_writable,
   which makes and removes the temporary file the save itself will make:
   the path is not empty, not a directory or other non-regular file, and its
   directory exists and takes a new file.  Exits with a message naming the
   flag. */
PRG_UNUSED static void ex_check_writable(const char *path, const char *flag) {
    if (ex_rank) return; /* MPI: rank 0 alone writes */
    if (prg_check_writable(path) != PRG_OK) {
        fprintf(stderr, "%s: %s: %s\n", ex_prog, flag, prg_last_error());
        exit(2);
    }
}

/* Text outputs (CSV, class lists) are gathered in a scratch stream and
   written with prg_file_write, so that, like the checkpoints, they replace
   the file atomically and never write through a symlink planted at the
   path.  ex_text_open exits when no scratch file can be made;
   ex_text_commit returns 0 (and says why on stderr) when the write failed. */
PRG_UNUSED static FILE *ex_text_open(void) {
    FILE *f = tmpfile();
    if (!f) { fprintf(stderr, "%s: cannot create a temporary file: %s\n", ex_prog, strerror(errno)); exit(1); }
    return f;
}
PRG_UNUSED static int ex_text_commit(FILE *f, const char *path) {
    long n;
    char *buf;
    int ok = 0;
    if (fflush(f) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
        buf = (char *)ex_alloc((size_t)n);
        if (fread(buf, 1, (size_t)n, f) == (size_t)n) {
            ok = prg_file_write(path, buf, (size_t)n) == PRG_OK;
            if (!ok) fprintf(stderr, "%s: %s\n", ex_prog, prg_last_error());
        } else fprintf(stderr, "%s: cannot write %s: the temporary file could not be read back\n", ex_prog, path);
        prg_free(buf);
    } else fprintf(stderr, "%s: cannot write %s: %s\n", ex_prog, path, strerror(errno));
    fclose(f);
    return ok;
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
   augment: the reference's training pipeline (docs/METHOD.md C.2/D); 0: just
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
    /* the fitting, in one line (none when the images have the model's size) */
    if (!ex_quiet && (border || h != size || w != size)) {
        printf("%s: %s images %dx%d -> model input %dx%d: ", ex_prog, train ? "training" : "evaluation", w, h, size, size);
        if (border) printf("zero border of %d%s\n", border, train && augment ? ", then the augmentation" : "");
        else if (train && augment) printf("random resized crops (the augmentation)\n");
        else printf("shorter side resized to %d (bicubic), centre crop\n", t->resize ? t->resize : size);
    }
}

/* Exits naming the file and index of the first label past k classes. */
PRG_UNUSED static void ex_labels_fit(const prg_dataset *ds, int k, const char *path, const char *whose) {
    int i;
    for (i = 0; i < ds->n; i++)
        if (ds->labels[i] >= k) {
            fprintf(stderr, "%s: %s: label %d at index %d is past the %d classes of %s (labels 0..%d)\n", ex_prog, path,
                    (int)ds->labels[i], i, k, whose, k - 1);
            exit(1);
        }
}

/* Exits when both name their classes and the names differ. */
PRG_UNUSED static void ex_same_classes(char *const *a, int na, const char *wa, char *const *b, int nb, const char *wb) {
    int i;
    if (!a || !b) return;
    for (i = 0; i < na || i < nb; i++)
        if (i >= na || i >= nb || strcmp(a[i], b[i])) {
            fprintf(stderr, "%s: the classes of %s and %s differ: class %d is '%s' in %s and '%s' in %s\n", ex_prog, wa, wb, i,
                    i < na ? a[i] : "(none)", wa, i < nb ? b[i] : "(none)", wb);
            exit(1);
        }
}

/* A CSV field (RFC 4180: quoted when it holds a comma, quote or line break). */
PRG_UNUSED static void ex_csv_field(FILE *f, const char *s) {
    if (!strpbrk(s, ",\"\r\n")) { fputs(s, f); return; }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}
/* sep, then the class's name when it has one, else its number. */
PRG_UNUSED static void ex_csv_class(FILE *f, const char *sep, int i, const char *name) {
    fputs(sep, f);
    if (name) ex_csv_field(f, name);
    else fprintf(f, "%d", i);
}

/* "K classes: a, b, c" (the first 12 names) on stdout, or just the count. */
PRG_UNUSED static void ex_print_classes(const char *from, int k, char *const *names) {
    int i;
    if (ex_quiet) return;
    printf("%s: %d classes from %s", ex_prog, k, from);
    for (i = 0; names && i < k && i < 12; i++) printf("%s%s", i ? ", " : ": ", names[i]);
    printf("%s\n", names && k > 12 ? ", ..." : names ? "" : " (unnamed: class numbers)");
}

/* prg_dataset_load over a comma-separated list of files (CIFAR-10's
   data_batch_1.bin,...,data_batch_5.bin; Imagenet64's 10 train npz), which
   are concatenated in order. */
PRG_UNUSED static void ex_load_data_of(prg_dataset *ds, const char *spec, const char *flag) {
    char buf[4096], *p, *q;
    prg_dataset parts[64];
    int np = 0, i, n = 0, k = 0;
    size_t img, off = 0;
    char *const *names = NULL;
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
        if (np && (!parts[np].class_names) != (!parts[0].class_names)) {
            fprintf(stderr, "%s: %s names its classes and %s does not\n", ex_prog, parts[np].class_names ? p : buf, parts[np].class_names ? buf : p);
            exit(1);
        }
        ex_same_classes(parts[0].class_names, parts[0].num_classes, buf, parts[np].class_names, parts[np].num_classes, p);
        np++;
    }
    ex_check(prg_dataset_alloc(ds, n, parts[0].c, parts[0].h, parts[0].w, k), "dataset");
    names = parts[0].class_names;
    img = (size_t)parts[0].c * parts[0].h * parts[0].w;
    for (i = 0; i < np; i++) {
        memcpy(ds->images + off * img, parts[i].images, (size_t)parts[i].n * img);
        memcpy(ds->labels + off, parts[i].labels, (size_t)parts[i].n * sizeof(int32_t));
        off += (size_t)parts[i].n;
    }
    if (names) ex_check(prg_dataset_set_class_names(ds, (const char *const *)names, k), "class names");
    for (i = 0; i < np; i++) prg_dataset_free(&parts[i]);
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
    int i, b, j, lo, hi;
    int64_t c[2] = {0, 0}; /* top-1, top-5 hits */
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
    lo = (int)((int64_t)n * ex_rank / ex_ranks); /* this rank's part */
    hi = (int)((int64_t)n * (ex_rank + 1) / ex_ranks);
    ex_progress_start(&pr, "evaluate", hi - lo, "images");
    for (i = lo; i < hi; i += batch) {
        int bs = hi - i < batch ? hi - i : batch;
        for (b = 0; b < bs; b++) index[b] = i + b;
        ex_check(prg_batch_build(x, y, ds, t, index, bs, 0, 0), "batch");
        ex_check(prg_classifier_predict(clf, bs, x, logits), "classifier");
        for (b = 0; b < bs; b++) {
            const float *l = logits + (size_t)b * k;
            int rank = 0, best = 0;
            for (j = 0; j < k; j++) {
                if (l[j] > l[y[b]] || (l[j] == l[y[b]] && j < y[b])) rank++;
                if (l[j] > l[best]) best = j;
            }
            c[0] += rank == 0;
            c[1] += rank < 5;
            if (conf) conf[(size_t)y[b] * k + best]++;
        }
        ex_progress_update(&pr, i + bs - lo);
    }
    if (ex_sum_counts) {
        ex_sum_counts(c, 2);
        if (conf) ex_sum_counts(conf, k * k);
    }
    *top1 = (double)c[0] / n;
    *top5 = (double)c[1] / n;
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
    if (prg_st_open(&st, path) != PRG_OK) return -1;
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
/* "run.data": a fingerprint of the training set (FNV-1a over the sizes,
   every label and up to 1024 evenly spaced whole images), so that --resume
   on another data set of the same size is refused like a changed flag. */
PRG_UNUSED static void ex_param_data(ex_params *p, const prg_dataset *ds) {
    uint64_t h = 1469598103934665603ull;
    size_t img = (size_t)ds->c * ds->h * ds->w, j;
    int i, step = ds->n > 1024 ? ds->n / 1024 : 1;
    const int32_t dims[4] = {ds->n, ds->c, ds->h, ds->w};
    const uint8_t *q = (const uint8_t *)dims;
    char b[40];
    for (j = 0; j < sizeof dims; j++) h = (h ^ q[j]) * 1099511628211ull;
    for (i = 0; i < ds->n; i++) {
        int32_t l = ds->labels[i];
        q = (const uint8_t *)&l;
        for (j = 0; j < sizeof l; j++) h = (h ^ q[j]) * 1099511628211ull;
    }
    for (i = 0; i < ds->n; i += step)
        for (j = 0, q = ds->images + (size_t)i * img; j < img; j++) h = (h ^ q[j]) * 1099511628211ull;
    snprintf(b, sizeof b, "%016llx", (unsigned long long)h);
    ex_param(p, "run.data", b);
}

/* The "run.*" pairs for prg_train_state_save_meta; returns their count. */
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
    ex_check(prg_st_open(&st, path), path);
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

/* ---- probability path ----------------------------------------------- */
#define EX_PATH_HELP \
    "  --path icfm|ot|gvp     probability path of the pretraining (default: the checkpoint's;\n" \
    "                         a file that records none, e.g. a converted state dict: icfm)\n"
/* The path a model runs on: the one its checkpoint records (recorded, or
   -1 when the file records none: its U-Net's prg_unet_loss is
   PRG_LOSS_NONE), else --path, else ICFM as in the reference.  A --path
   that disagrees with the checkpoint wins, with a warning.  *source (may be
   NULL) says where the path came from. */
PRG_UNUSED static int ex_choose_path(int recorded, const char *flag, const char *file, const char **source) {
    prg_path p = PRG_PATH_ICFM;
    const char *src = "default";
    if (flag) ex_check(prg_path_parse(&p, flag), "--path");
    if (recorded >= 0 && flag && p != recorded) {
        fprintf(stderr, "%s: warning: --path %s overrides the %s path recorded in %s\n", ex_prog, flag,
                prg_path_name(recorded), file ? file : "the checkpoint");
        src = "--path, overriding the checkpoint";
    } else if (recorded >= 0) {
        p = recorded;
        src = "checkpoint";
    } else if (flag) {
        src = "--path";
    }
    if (source) *source = src;
    return p;
}
/* The path a loaded classifier's file records, or -1. */
PRG_UNUSED static int ex_classifier_recorded_path(prg_classifier *clf) {
    return prg_unet_loss(prg_classifier_unet(clf)) != PRG_LOSS_NONE ? prg_classifier_path(clf) : -1;
}
/* "gvp encoder, t_span 32, t_cutoff 0: 31 Euler steps, model time 0 -> 1" */
PRG_UNUSED static void ex_encoder_desc(char *buf, size_t cap, const prg_classifier *clf) {
    int span, cut, m = prg_classifier_grid(clf, &span, &cut), gvp = prg_classifier_path(clf) == PRG_PATH_GVP;
    double h = 1.0 / (span - 1);
    snprintf(buf, cap, "%s encoder, t_span %d, t_cutoff %d: %d Euler steps, model time %g -> %g",
             prg_path_name(prg_classifier_path(clf)), span, cut, m, gvp ? 0.0 : 1.0, gvp ? m * h : 1.0 - m * h);
}

/* ---- training curves ------------------------------------------------ */
/* Points (step, value) of the training loss, its running average and the
   test top-1, kept in memory and appended to PREFIX-curves.csv
   (step,series,value), drawn into PREFIX-curves.png: the losses on top, the
   top-1 (when there is one) in a panel below.  A resumed run reads the CSV
   back up to its step, so the picture covers the whole run. */
enum { EX_CURVE_LOSS = 0, EX_CURVE_AVG = 1, EX_CURVE_TOP1 = 2, EX_CURVES = 3 };
typedef struct ex_curves {
    char csv[1040], png[1040];
    const char *title;
    int n[EX_CURVES], cap[EX_CURVES];
    double *x[EX_CURVES], *y[EX_CURVES];
    double drawn;              /* ex_now() of the last picture */
} ex_curves;

PRG_UNUSED static void ex_curves_keep(ex_curves *c, int k, int64_t step, double v) {
    if (c->n[k] == c->cap[k]) {
        int cap = c->cap[k] ? 2 * c->cap[k] : 256;
        double *x = (double *)ex_alloc((size_t)cap * sizeof(double)), *y = (double *)ex_alloc((size_t)cap * sizeof(double));
        if (c->n[k]) {
            memcpy(x, c->x[k], (size_t)c->n[k] * sizeof(double));
            memcpy(y, c->y[k], (size_t)c->n[k] * sizeof(double));
        }
        prg_free(c->x[k]);
        prg_free(c->y[k]);
        c->x[k] = x;
        c->y[k] = y;
        c->cap[k] = cap;
    }
    c->x[k][c->n[k]] = (double)step;
    c->y[k][c->n[k]++] = v;
}

/* Writes the CSV header and the n kept points of each series (mode "w"),
   or appends the last point of series `only` (mode "a"). */
PRG_UNUSED static void ex_curves_csv(ex_curves *c, const char *mode, int only) {
    FILE *f;
    int k, i;
    if (ex_rank) return;
    f = fopen(c->csv, mode);
    if (f) {
        if (only < 0) fprintf(f, "step,series,value\n");
        for (k = 0; k < EX_CURVES; k++)
            for (i = only < 0 ? 0 : k == only ? c->n[k] - 1 : c->n[k]; i < c->n[k]; i++)
                fprintf(f, "%lld,%d,%.6g\n", (long long)c->x[k][i], k, c->y[k][i]);
    }
    if (!f || fclose(f)) fprintf(stderr, "%s: warning: cannot write %s\n", ex_prog, c->csv);
}

/* prefix: the files' common start (a trailing ".safetensors" is dropped:
   pretrain's --out unet.safetensors gives unet-curves.png); resume: keep
   the CSV's points up to step. */
PRG_UNUSED static void ex_curves_init(ex_curves *c, const char *prefix, const char *title, int resume, int64_t step) {
    FILE *f;
    size_t n = strlen(prefix);
    int keep = n > 12 && !strcmp(prefix + n - 12, ".safetensors") ? (int)(n - 12) : (int)n;
    memset(c, 0, sizeof *c);
    snprintf(c->csv, sizeof c->csv, "%.*s-curves.csv", keep, prefix);
    snprintf(c->png, sizeof c->png, "%.*s-curves.png", keep, prefix);
    c->title = title;
    if (resume && (f = fopen(c->csv, "r")) != NULL) {
        char line[256];
        while (fgets(line, sizeof line, f)) {
            long long st;
            int k;
            double v;
            if (sscanf(line, "%lld,%d,%lf", &st, &k, &v) == 3 && k >= 0 && k < EX_CURVES && st <= step)
                ex_curves_keep(c, k, st, v);
        }
        fclose(f);
    }
    ex_curves_csv(c, "w", -1);
}

PRG_UNUSED static void ex_curves_add(ex_curves *c, int series, int64_t step, double v) {
    ex_curves_keep(c, series, step, v);
    ex_curves_csv(c, "a", series);
}

/* Redraws PREFIX-curves.png, at most every 5 s unless forced (a warning on
   failure: the run goes on). */
PRG_UNUSED static void ex_curves_plot(ex_curves *c, int force) {
    static const char *const names[EX_CURVES] = {"loss", "loss (running average)", "test top-1 %"};
    prg_chart_series loss[2], top1[1];
    prg_chart ch[2];
    int k, panels, h = 0, nl = 0;
    uint8_t *rgb;
    if (ex_rank || (!force && ex_now() - c->drawn < 5.0)) return;
    c->drawn = ex_now();
    for (k = 0; k < 2; k++)
        if (c->n[k]) {
            loss[nl].name = names[k];
            loss[nl].x = c->x[k];
            loss[nl].y = c->y[k];
            loss[nl++].n = c->n[k];
        }
    if (!nl) return;
    top1[0].name = names[EX_CURVE_TOP1];
    top1[0].x = c->x[EX_CURVE_TOP1];
    top1[0].y = c->y[EX_CURVE_TOP1];
    top1[0].n = c->n[EX_CURVE_TOP1];
    panels = top1[0].n ? 2 : 1;
    prg_chart_init(&ch[0], PRG_CHART_LINE, c->title, loss, nl);
    ch[0].x_label = "step";
    ch[0].y_label = "loss";
    prg_chart_init(&ch[1], PRG_CHART_LINE, NULL, top1, 1);
    ch[1].x_label = "step";
    ch[1].y_label = "top-1 %";
    ch[1].height = 380;
    ch[0].legend_chars = ch[1].legend_chars = (int)strlen(names[EX_CURVE_AVG]); /* the plots line up */
    for (k = 0; k < panels; k++) h += ch[k].height;
    rgb = (uint8_t *)ex_alloc((size_t)ch[0].width * h * 3);
    /* panels stacked: the second's rows follow the first's */
    if (prg_chart_render(&ch[0], rgb) != PRG_OK ||
        (panels > 1 && prg_chart_render(&ch[1], rgb + (size_t)ch[0].width * ch[0].height * 3) != PRG_OK) ||
        prg_png_write(c->png, rgb, h, ch[0].width, 3) != PRG_OK)
        fprintf(stderr, "%s: warning: %s: %s\n", ex_prog, c->png, prg_last_error());
    prg_free(rgb);
}

PRG_UNUSED static void ex_curves_free(ex_curves *c) {
    int k;
    for (k = 0; k < EX_CURVES; k++) {
        prg_free(c->x[k]);
        prg_free(c->y[k]);
    }
}

#endif
