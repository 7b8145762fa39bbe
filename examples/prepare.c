/* prepare: ImageNet / Tiny-ImageNet JPEG folders -> downsampled-ImageNet .npz
   ('data' uint8 [N][3*S*S], R,G,B planes; 'labels' int64 [N], 1-based), the
   layout of Imagenet64x64/Imagenet32x32 that prg_dataset_load_npz reads.

     cc -O2 -I. -o prepare examples/prepare.c -lm -pthread
     ./prepare --root ~/imagenet --split train --size 64 --out train64.npz
     ./prepare --root ~/tiny-imagenet-200 --split val --size 64 --out tiny_val.npz

   Run with --help for every option. */
#define PRG_IMPLEMENTATION
#include "prg.h"
#include "ex_common.h"
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

static void usage(FILE *f) {
    fprintf(f,
        "usage: prepare --root DIR --out FILE.npz [options]\n"
        "\n"
        "Decodes every image of one split of an ImageNet-style tree, resizes it to\n"
        "SxS and writes the downsampled-ImageNet .npz layout: 'data' uint8\n"
        "[N][3*S*S] (R, G, B planes), 'labels' int64 [N], 1-based class numbers,\n"
        "plus FILE_classes.txt (one line per class: '<label> <wnid>').\n"
        "\n"
        "Layouts (found automatically under --root):\n"
        "  ImageNet       train/<wnid>/*.JPEG; val/<wnid>/*.JPEG, or val/*.JPEG flat\n"
        "                 with --val-labels FILE\n"
        "  Tiny-ImageNet  train/<wnid>/images/*.JPEG; val/images/*.JPEG with\n"
        "                 val/val_annotations.txt\n"
        "Classes are the sorted directory names of train/ (torchvision ImageFolder\n"
        "order: label = index + 1), or the first word of each line of --classes.\n"
        "JPEG, PNG, PPM and PGM are read whatever the extension; files that cannot\n"
        "be read are skipped, listed on stderr and in FILE_skipped.txt.\n"
        "\n"
        "options:\n"
        "  --root DIR          dataset root (holds train/ and val/)\n"
        "  --split train|val   which split (default train)\n"
        "  --out FILE.npz      output (with --per-file: FILE_1.npz, FILE_2.npz, ...)\n"
        "  --size S            output side, 1..4096, e.g. 64 or 32 (default 64)\n"
        "  --resize MODE       crop:   shorter side -> S, then centre crop SxS (default)\n"
        "                      squash: whole image -> SxS, aspect not kept (the\n"
        "                              Chrabaszcz et al. 2017 Imagenet64x64 recipe,\n"
        "                              used with --filter box)\n"
        "                      eval:   shorter side -> int(S*256/224), centre crop SxS\n"
        "                              (the reference's evaluation transform)\n"
        "  --filter F          bicubic (default), bilinear or box; PIL's Image.resize\n"
        "                      with antialiasing when downscaling\n"
        "  --classes FILE      class order, one wnid per line (e.g. map_clsloc.txt; each once)\n"
        "  --val-labels FILE   flat ImageNet val: lines '<file> <wnid>', or one wnid\n"
        "                      or 1-based label per line for the sorted files\n"
        "  --per-file K        at most K images per .npz (default: all in one)\n"
        "  --limit K           at most K images per class (quick subsets)\n"
        "  --threads N         decoding threads (default: all CPUs)\n"
        "  --quiet             no progress line\n");
}

typedef struct item { char *path; int label; } item;
typedef struct list { item *v; int n, cap; } list;
typedef struct strs { char **v; int n, cap; } strs;

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n);
    if (!q) { fprintf(stderr, "prepare: out of memory\n"); exit(1); }
    return q;
}
static char *xstrdup(const char *s) {
    char *d = (char *)xrealloc(NULL, strlen(s) + 1);
    strcpy(d, s);
    return d;
}
static void strs_add(strs *s, const char *x) {
    if (s->n == s->cap) { s->cap = s->cap ? 2 * s->cap : 64; s->v = (char **)xrealloc(s->v, (size_t)s->cap * sizeof(char *)); }
    s->v[s->n++] = xstrdup(x);
}
static void list_add(list *l, const char *path, int label) {
    if (l->n == l->cap) { l->cap = l->cap ? 2 * l->cap : 1024; l->v = (item *)xrealloc(l->v, (size_t)l->cap * sizeof(item)); }
    l->v[l->n].path = xstrdup(path);
    l->v[l->n++].label = label;
}
static void strs_free(strs *s) {
    int i;
    for (i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
    s->v = NULL;
    s->n = s->cap = 0;
}
static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int is_dir(const char *p) { struct stat st; return stat(p, &st) == 0 && S_ISDIR(st.st_mode); }

static int is_image_name(const char *n) {
    const char *e = strrchr(n, '.');
    return e && (!strcasecmp(e, ".jpeg") || !strcasecmp(e, ".jpg") || !strcasecmp(e, ".png") ||
                 !strcasecmp(e, ".ppm") || !strcasecmp(e, ".pgm"));
}

/* Sorted entry names of dir: dirs_only = 1 subdirectories, 0 image files. */
static strs list_dir(const char *dir, int dirs_only) {
    strs s = {NULL, 0, 0};
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[4096];
    if (!d) return s;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (dirs_only ? is_dir(p) : (!is_dir(p) && is_image_name(e->d_name))) strs_add(&s, e->d_name);
    }
    closedir(d);
    if (s.n) qsort(s.v, (size_t)s.n, sizeof(char *), cmp_str);
    return s;
}

static int class_index(const strs *classes, const char *wnid) {
    int i;
    for (i = 0; i < classes->n; i++)
        if (!strcmp(classes->v[i], wnid)) return i;
    return -1;
}

/* Adds the images of dir (sorted) with label, at most limit (0 = all). */
static void add_dir(list *l, const char *dir, int label, int limit) {
    strs f = list_dir(dir, 0);
    int i;
    char p[4096];
    for (i = 0; i < f.n; i++) {
        if (!limit || i < limit) {
            snprintf(p, sizeof p, "%s/%s", dir, f.v[i]);
            list_add(l, p, label);
        }
        free(f.v[i]);
    }
    free(f.v);
}

/* Reads "<name> <wnid> ..." lines into a name -> label map (parallel arrays). */
static int read_pairs(const char *path, strs *names, strs *wnids) {
    FILE *f = fopen(path, "r");
    char line[4096], a[1024], b[1024];
    if (!f) return 0;
    while (fgets(line, sizeof line, f)) {
        int k = sscanf(line, "%1023s %1023s", a, b);
        if (k >= 1) { strs_add(names, a); strs_add(wnids, k == 2 ? b : ""); }
    }
    fclose(f);
    return 1;
}

typedef struct job {
    const item *items;
    int n, size, resize;
    prg_filter filter;
    ex_progress pr;     /* thread 0 reports */
    uint8_t *data;      /* [n][3][size][size] */
    char **errors;      /* [n], NULL = decoded */
    int done0;          /* items finished by thread 0 */
} job;

static void work(void *ctx, int ith, int nth) {
    job *j = (job *)ctx;
    int i, S = j->size;
    size_t plane = (size_t)3 * S * S;
    for (i = ith; i < j->n; i += nth) { /* interleaved: each output slot has one owner */
        prg_image img, mid, out;
        prg_result r = prg_image_load(&img, j->items[i].path, 3);
        if (!r) {
            if (j->resize == 1) {
                r = prg_image_resize(&out, &img, S, S, j->filter);
            } else {
                r = prg_image_resize_short(&mid, &img, j->resize == 2 ? S * 256 / 224 : S, j->filter);
                if (!r) { r = prg_image_center_crop(&out, &mid, S, S); prg_image_free(&mid); }
            }
            prg_image_free(&img);
        }
        if (r) {
            j->errors[i] = xstrdup(prg_last_error());
            memset(j->data + (size_t)i * plane, 0, plane);
        } else {
            prg_image_to_planar(j->data + (size_t)i * plane, &out);
            prg_image_free(&out);
        }
        if (ith == 0) {
            long est = (long)++j->done0 * nth;
            ex_progress_update(&j->pr, est > j->n || i + nth >= j->n ? j->n : est);
        }
    }
}

int main(int argc, char **argv) {
    const char *root = NULL, *split = "train", *out = NULL, *classes_file = NULL, *val_labels = NULL;
    int size = 64, resize = 0, per_file = 0, limit = 0, threads = 0, i, tiny = 0, nskip = 0, nfiles = 0;
    prg_filter filter = PRG_FILTER_BICUBIC;
    strs classes = {NULL, 0, 0};
    list items = {NULL, 0, 0};
    char p[4096], base[4000];
    FILE *cf, *sf = NULL;
    ex_prog = "prepare";
    ex_argc = argc; ex_argv = argv;
    for (ex_argi = 1; ex_argi < argc; ex_argi++) {
        if (EX_FLAG("--help") || EX_FLAG("-h")) { usage(stdout); return 0; }
        else if (EX_FLAG("--quiet")) ex_quiet = 1;
        else if (EX_FLAG("--root")) root = ex_val();
        else if (EX_FLAG("--split")) split = ex_val();
        else if (EX_FLAG("--out")) out = ex_val();
        else if (EX_FLAG("--size")) size = ex_int_in(1, 4096);
        else if (EX_FLAG("--classes")) classes_file = ex_val();
        else if (EX_FLAG("--val-labels")) val_labels = ex_val();
        else if (EX_FLAG("--per-file")) per_file = ex_int_in(0, INT_MAX);
        else if (EX_FLAG("--limit")) limit = ex_int_in(0, INT_MAX);
        else if (EX_FLAG("--threads")) threads = ex_int_in(0, 1024);
        else if (EX_FLAG("--resize")) {
            const char *v = ex_val();
            if (!strcmp(v, "crop")) resize = 0; else if (!strcmp(v, "squash")) resize = 1; else if (!strcmp(v, "eval")) resize = 2;
            else ex_usage_error("--resize", v, "wants crop, squash or eval");
        } else if (EX_FLAG("--filter")) {
            const char *v = ex_val();
            if (!strcmp(v, "bicubic")) filter = PRG_FILTER_BICUBIC; else if (!strcmp(v, "bilinear")) filter = PRG_FILTER_BILINEAR;
            else if (!strcmp(v, "box")) filter = PRG_FILTER_BOX;
            else ex_usage_error("--filter", v, "wants bicubic, bilinear or box");
        } else ex_bad_flag();
    }
    if (!root || !out) {
        fprintf(stderr, "prepare: needs --root DIR and --out FILE.npz (see --help)\n");
        return 2;
    }
    if (strcmp(split, "train") && strcmp(split, "val")) ex_usage_error("--split", split, "wants train or val");
    if (!is_dir(root)) { fprintf(stderr, "prepare: --root %s: not a directory\n", root); return 1; }
    if (classes_file) ex_check_input(classes_file, "--classes");
    if (val_labels) ex_check_input(val_labels, "--val-labels");
    snprintf(base, sizeof base, "%s", out);
    if (strlen(base) > 4 && !strcmp(base + strlen(base) - 4, ".npz")) base[strlen(base) - 4] = 0;
    snprintf(p, sizeof p, per_file > 0 ? "%s_1.npz" : "%s.npz", base);
    ex_check_writable(p, "--out");
    snprintf(p, sizeof p, "%s_classes.txt", base);
    ex_check_writable(p, "--out");

    /* classes */
    snprintf(p, sizeof p, "%s/train", root);
    if (classes_file) {
        strs dummy = {NULL, 0, 0};
        if (!read_pairs(classes_file, &classes, &dummy)) { fprintf(stderr, "prepare: cannot read %s\n", classes_file); return 1; }
        strs_free(&dummy);
        for (i = 0; i < classes.n; i++) { /* one label per class: a class twice would write its images twice */
            int k = class_index(&classes, classes.v[i]);
            if (k != i) {
                fprintf(stderr, "prepare: --classes %s: class '%s' is listed twice (entries %d and %d)\n", classes_file,
                        classes.v[i], k + 1, i + 1);
                return 1;
            }
        }
    } else {
        classes = list_dir(p, 1);
    }
    if (!classes.n) { fprintf(stderr, "prepare: no class directories under %s (and no --classes)\n", p); return 1; }
    {
        char q[4096];
        snprintf(q, sizeof q, "%s/train/%s/images", root, classes.v[0]);
        tiny = is_dir(q);
    }
    fprintf(stderr, "prepare: %s layout, %d classes, split %s\n", tiny ? "Tiny-ImageNet" : "ImageNet", classes.n, split);

    /* items */
    if (!strcmp(split, "train")) {
        for (i = 0; i < classes.n; i++) {
            snprintf(p, sizeof p, tiny ? "%s/train/%s/images" : "%s/train/%s", root, classes.v[i]);
            add_dir(&items, p, i + 1, limit);
        }
    } else if (tiny) {
        strs names = {NULL, 0, 0}, wnids = {NULL, 0, 0};
        snprintf(p, sizeof p, "%s/val/val_annotations.txt", root);
        if (!read_pairs(p, &names, &wnids)) { fprintf(stderr, "prepare: cannot read %s\n", p); return 1; }
        for (i = 0; i < names.n; i++) {
            int c = class_index(&classes, wnids.v[i]);
            if (c < 0) { fprintf(stderr, "prepare: %s: unknown class '%s' for %s\n", p, wnids.v[i], names.v[i]); return 1; }
            snprintf(p, sizeof p, "%s/val/images/%s", root, names.v[i]);
            list_add(&items, p, c + 1);
            snprintf(p, sizeof p, "%s/val/val_annotations.txt", root);
        }
        strs_free(&names);
        strs_free(&wnids);
    } else {
        strs sub;
        snprintf(p, sizeof p, "%s/val", root);
        sub = list_dir(p, 1);
        if (sub.n) { /* val/<wnid>/ */
            for (i = 0; i < sub.n; i++) {
                int c = class_index(&classes, sub.v[i]);
                if (c < 0) { fprintf(stderr, "prepare: val/%s is not a train class\n", sub.v[i]); return 1; }
                snprintf(p, sizeof p, "%s/val/%s", root, sub.v[i]);
                add_dir(&items, p, c + 1, limit);
            }
        } else { /* flat val/ with a labels file */
            strs files = list_dir(p, 0), names = {NULL, 0, 0}, vals = {NULL, 0, 0};
            if (!val_labels) { fprintf(stderr, "prepare: %s is flat: give --val-labels FILE\n", p); return 1; }
            if (!read_pairs(val_labels, &names, &vals)) { fprintf(stderr, "prepare: cannot read %s\n", val_labels); return 1; }
            for (i = 0; i < files.n; i++) {
                int k, c = -1;
                const char *lab = NULL;
                if (names.n == files.n && vals.v[0][0] == 0) lab = names.v[i];     /* one label per line */
                else for (k = 0; k < names.n && !lab; k++) if (!strcmp(names.v[k], files.v[i])) lab = vals.v[k];
                if (lab) c = (lab[0] >= '0' && lab[0] <= '9') ? atoi(lab) - 1 : class_index(&classes, lab);
                if (c < 0 || c >= classes.n) { fprintf(stderr, "prepare: no valid label for val/%s in %s\n", files.v[i], val_labels); return 1; }
                {
                    char q[4096];
                    snprintf(q, sizeof q, "%s/val/%s", root, files.v[i]);
                    list_add(&items, q, c + 1);
                }
            }
            strs_free(&files);
            strs_free(&names);
            strs_free(&vals);
        }
        strs_free(&sub);
    }
    if (!items.n) { fprintf(stderr, "prepare: no images found for split %s under %s\n", split, root); return 1; }

    /* class index file */
    snprintf(p, sizeof p, "%s_classes.txt", base);
    cf = fopen(p, "w");
    if (!cf) { fprintf(stderr, "prepare: cannot write %s\n", p); return 1; }
    for (i = 0; i < classes.n; i++) fprintf(cf, "%d %s\n", i + 1, classes.v[i]);
    fclose(cf);

    prg_set_num_threads(threads);
    fprintf(stderr, "prepare: %d images -> %dx%d (%s, %s), %d threads\n", items.n, size, size,
            resize == 0 ? "shorter side + centre crop" : resize == 1 ? "squash" : "eval 256/224 + centre crop",
            filter == PRG_FILTER_BICUBIC ? "bicubic" : filter == PRG_FILTER_BILINEAR ? "bilinear" : "box", prg_get_num_threads());
    {
        int start, chunk = per_file > 0 ? per_file : items.n, nkept_total = 0;
        for (start = 0; start < items.n; start += chunk) {
            int n = items.n - start < chunk ? items.n - start : chunk, k, kept = 0;
            size_t plane = (size_t)3 * size * size;
            job j;
            prg_array arr[2];
            const char *names[2] = {"data", "labels"};
            int64_t *labels = (int64_t *)malloc((size_t)n * sizeof(int64_t));
            prg_result r;
            memset(&j, 0, sizeof j);
            j.items = items.v + start;
            j.n = n;
            j.size = size;
            j.resize = resize;
            j.filter = filter;
            ex_progress_start(&j.pr, "prepare", n, "images");
            j.data = (uint8_t *)malloc((size_t)n * plane);
            j.errors = (char **)calloc((size_t)n, sizeof(char *));
            if (!j.data || !j.errors || !labels) { fprintf(stderr, "prepare: out of memory for %d images\n", n); return 1; }
            prg_parallel(work, &j);
            for (k = 0; k < n; k++) {
                if (j.errors[k]) {
                    if (!sf) {
                        snprintf(p, sizeof p, "%s_skipped.txt", base);
                        sf = fopen(p, "w");
                    }
                    if (strstr(j.errors[k], j.items[k].path)) fprintf(stderr, "prepare: skipped: %s\n", j.errors[k]);
                    else fprintf(stderr, "prepare: skipped %s: %s\n", j.items[k].path, j.errors[k]);
                    if (sf) fprintf(sf, "%s\t%s\n", j.items[k].path, j.errors[k]);
                    free(j.errors[k]);
                    nskip++;
                    continue;
                }
                if (kept != k) memmove(j.data + (size_t)kept * plane, j.data + (size_t)k * plane, plane);
                labels[kept++] = j.items[k].label;
            }
            memset(arr, 0, sizeof arr);
            arr[0].dtype = PRG_DT_U8; arr[0].ndim = 2; arr[0].shape[0] = kept; arr[0].shape[1] = (int64_t)plane;
            arr[0].count = (size_t)kept * plane; arr[0].data = j.data;
            arr[1].dtype = PRG_DT_I64; arr[1].ndim = 1; arr[1].shape[0] = kept; arr[1].count = (size_t)kept; arr[1].data = labels;
            if (per_file > 0) snprintf(p, sizeof p, "%s_%d.npz", base, start / chunk + 1);
            else snprintf(p, sizeof p, "%s.npz", base);
            r = prg_npz_save(p, names, arr, 2);
            if (r) { fprintf(stderr, "prepare: %s\n", prg_last_error()); return 1; }
            fprintf(stderr, "prepare: wrote %s (%d images)\n", p, kept);
            nkept_total += kept;
            nfiles++;
            free(j.data); free(j.errors); free(labels);
        }
        fprintf(stderr, "prepare: %d images in %d file(s), %d skipped%s%s%s\n", nkept_total, nfiles, nskip,
                nskip ? ", listed in " : "", nskip ? base : "", nskip ? "_skipped.txt" : "");
    }
    if (sf) fclose(sf);
    for (i = 0; i < items.n; i++) free(items.v[i].path);
    free(items.v);
    strs_free(&classes);
    return 0;
}
