/* prepare: a folder of images -> a .npz dataset the programs read.

   Layouts: torchvision ImageFolder (DIR/<class>/<images>), ImageNet
   (train/<wnid>/, val/) and Tiny-ImageNet.  ImageFolder gives 'data' uint8
   [N][C][S][S], 'labels' int64 0..K-1 and 'classes'; the ImageNet layouts
   give the downsampled-ImageNet .npz ('data' uint8 [N][3*S*S], R,G,B
   planes; 'labels' int64, 1-based) plus 'classes'.  prg_dataset_load_npz
   reads both, with the class count and names.

     cc -O2 -I. -o prepare examples/prepare.c -lm -pthread
     ./prepare --root ~/photos --size 32 --val-fraction 0.2 --out photos
     ./prepare --root ~/imagenet --split train --size 64 --out train64.npz
     ./prepare --root ~/tiny-imagenet-200 --split val --size 64 --out tiny_val.npz

   Run with --help for every option. */
#define _POSIX_C_SOURCE 200809L /* lstat: symlinked subdirectories are not walked */
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
        "usage: prepare --root DIR --out PREFIX [options]\n"
        "\n"
        "Decodes every image of a folder tree, resizes it to SxS and writes it as a\n"
        ".npz dataset, with the class names inside ('classes': uint8 [K][L], one\n"
        "NUL-padded UTF-8 name a row).  Files written:\n"
        "  PREFIX.npz           the images (with --per-file K: PREFIX_1.npz, PREFIX_2.npz, ...)\n"
        "  PREFIX-val.npz       the held-out images, with --val-fraction\n"
        "  PREFIX_classes.txt   the class names, one a line in label order\n"
        "  PREFIX_skipped.txt   only when files could not be read: '<file>\\t<reason>'\n"
        "(PREFIX may be given as PREFIX.npz.)\n"
        "\n"
        "Layouts (detected under --root; --layout forces one):\n"
        "  folder         torchvision ImageFolder: DIR/<class>/**/<image>, 2 or more classes,\n"
        "                 any file names; classes are the sorted directory names (label =\n"
        "                 index, 0-based, as torchvision), files in sorted order.  Writes\n"
        "                 'data' uint8 [N][C][S][S], 'labels' int64 0..K-1, 'classes'.\n"
        "  imagenet       train/<wnid>/*.JPEG; val/<wnid>/*.JPEG, or val/*.JPEG flat with\n"
        "                 --val-labels FILE\n"
        "  tiny           Tiny-ImageNet: train/<wnid>/images/*.JPEG; val/images/*.JPEG with\n"
        "                 val/val_annotations.txt\n"
        "  The ImageNet layouts write the downsampled-ImageNet layout: 'data' uint8\n"
        "  [N][3*S*S] (R, G, B planes), 'labels' int64 1..K, 'classes'; their classes are\n"
        "  the sorted directory names of train/ or the first word of each line of --classes.\n"
        "Images: .jpg .jpeg .png .ppm .pgm in any letter case (other files are ignored and\n"
        "counted); hidden files and directories are skipped.  JPEG, PNG, PPM and PGM are\n"
        "decoded whatever the extension; files that cannot be read are skipped, listed on\n"
        "stderr and in PREFIX_skipped.txt, and counted in the last line.\n");
    fprintf(f, /* two strings: C99 compilers need only take 4095 characters in one */
        "\n"
        "options:\n"
        "  --root DIR          the tree\n"
        "  --out PREFIX        output prefix (see above)\n"
        "  --size S            output side, 1..4096 (default 64); the classifier's head takes S under\n"
        "                      16 or a multiple of 16\n"
        "  --layout L          auto (default), folder, imagenet or tiny\n"
        "  --channels C        auto (default): 1 when every image is grey, else 3 (grey images\n"
        "                      repeated into R, G, B); 1: colour converted to grey; 3.  The\n"
        "                      ImageNet layouts are always 3; with --per-file auto means 3.\n"
        "  --val-fraction F    hold out round(F * n) images of each class of n (at least 1, at\n"
        "                      most n - 1), chosen by a shuffle seeded with --seed: the same\n"
        "                      files every run; written to PREFIX-val.npz (not with --per-file)\n"
        "  --seed N            seed of the held-out choice (default 0)\n"
        "  --split train|val   ImageNet layouts: which split (default train)\n"
        "  --resize MODE       crop:   shorter side -> S, then centre crop SxS (default)\n"
        "                      squash: whole image -> SxS, aspect not kept (the\n"
        "                              Chrabaszcz et al. 2017 Imagenet64x64 recipe,\n"
        "                              used with --filter box)\n"
        "                      eval:   shorter side -> int(S*256/224), centre crop SxS\n"
        "                              (the reference's evaluation transform)\n"
        "  --filter F          bicubic (default), bilinear or box; PIL's Image.resize\n"
        "                      with antialiasing when downscaling\n"
        "  --classes FILE      class order (and subset), one a line: the whole line for the\n"
        "                      folder layout (e.g. a PREFIX_classes.txt), the first word for\n"
        "                      the ImageNet layouts (e.g. map_clsloc.txt); each class once\n"
        "  --val-labels FILE   flat ImageNet val: lines '<file> <wnid>', or one wnid\n"
        "                      or 1-based label per line for the sorted files\n"
        "  --per-file K        at most K images per .npz (default: all in one)\n"
        "  --limit K           at most K images per class (quick subsets)\n"
        "  --threads N         decoding threads (default: all CPUs)\n"
        "  --quiet             only warnings, skipped files and errors\n"
        "  --strict            also skip files with defects that libjpeg and PIL\n"
        "                      decode through (by default decoded, with a note)\n"
        "Exit status 0 when the files are written (the last line gives the skipped count),\n"
        "1 on an error (or when no image could be read), 2 on a bad option.\n");
}

typedef struct item { char *path; int cls; } item;
typedef struct list { item *v; int n, cap; } list;
typedef struct strs { char **v; int n, cap; } strs;

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
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
static void list_add(list *l, const char *path, int cls) {
    if (l->n == l->cap) { l->cap = l->cap ? 2 * l->cap : 1024; l->v = (item *)xrealloc(l->v, (size_t)l->cap * sizeof(item)); }
    l->v[l->n].path = xstrdup(path);
    l->v[l->n++].cls = cls;
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

/* files that are not images by their extension: a count and the first one */
static int n_other = 0;
static char other_example[4096];

/* Sorted entry names of dir: dirs_only = 1 subdirectories, 0 image files. */
static strs list_dir(const char *dir, int dirs_only) {
    strs s = {NULL, 0, 0};
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[4096];
    if (!d) return s;
    while ((e = readdir(d)) != NULL) {
        int sub;
        if (e->d_name[0] == '.') continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        sub = is_dir(p);
        if (!dirs_only && !sub && is_image_name(e->d_name)) {
            struct stat st; /* a fifo would block the decoder forever, a device feed it without end */
            if (stat(p, &st) != 0 || !S_ISREG(st.st_mode)) {
                fprintf(stderr, "prepare: ignored %s: %s\n", p, stat(p, &st) != 0 ? strerror(errno) : "not a regular file");
                continue;
            }
        }
        if (dirs_only ? sub : (!sub && is_image_name(e->d_name))) strs_add(&s, e->d_name);
        else if (!dirs_only && !sub && !n_other++) snprintf(other_example, sizeof other_example, "%s", p);
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

/* Adds the images of dir (sorted) with class cls, at most limit (0 = all). */
static void add_dir(list *l, const char *dir, int cls, int limit) {
    strs f = list_dir(dir, 0);
    int i;
    char p[4096];
    for (i = 0; i < f.n; i++) {
        if (!limit || i < limit) {
            snprintf(p, sizeof p, "%s/%s", dir, f.v[i]);
            list_add(l, p, cls);
        }
        free(f.v[i]);
    }
    free(f.v);
}

/* Every directory under dir (dir included), for the ImageFolder walk. */
static void walk_dirs(strs *out, const char *dir) {
    strs sub = list_dir(dir, 1);
    int i;
    char p[4096];
    strs_add(out, dir);
    for (i = 0; i < sub.n; i++) {
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", dir, sub.v[i]);
        /* as os.walk(followlinks=False) in torchvision: a symlinked subdirectory is not entered (a link to a
           parent would make the walk endless); a class directory that is a symlink is read */
        if (lstat(p, &st) == 0 && S_ISLNK(st.st_mode)) {
            fprintf(stderr, "prepare: not entered: %s (a symlinked subdirectory, as torchvision's ImageFolder)\n", p);
            continue;
        }
        walk_dirs(out, p);
    }
    strs_free(&sub);
}

/* The images of a class directory in torchvision's order (sorted(os.walk)
   then sorted file names): directories by their path, then files. */
static void add_tree(list *l, const char *dir, int cls, int limit) {
    strs dirs = {NULL, 0, 0};
    int i, before = l->n;
    walk_dirs(&dirs, dir);
    qsort(dirs.v, (size_t)dirs.n, sizeof(char *), cmp_str);
    for (i = 0; i < dirs.n && (!limit || l->n - before < limit); i++) add_dir(l, dirs.v[i], cls, limit ? limit - (l->n - before) : 0);
    strs_free(&dirs);
}

/* Reads "<name> <wnid> ..." lines into a name -> label map (parallel
   arrays; a line of one word maps it to ""); says why on stderr when the
   file cannot be read as a list (ex_lines_read). */
static int read_pairs(const char *path, strs *names, strs *wnids) {
    ex_lines l;
    char err[768];
    int i;
    if (!ex_lines_read(&l, path, INT_MAX, err, sizeof err)) { fprintf(stderr, "prepare: %s\n", err); return 0; }
    for (i = 0; i < l.n; i++) {
        char *a, *b;
        ex_words2(l.v[i], &a, &b);
        if (*a) { strs_add(names, a); strs_add(wnids, b); }
    }
    ex_lines_free(&l);
    return 1;
}

typedef struct job {
    const item *items;
    int n, size, resize, channels; /* channels: 0 = the file's own (alpha dropped), 1, 3 */
    prg_filter filter;
    ex_progress pr;     /* thread 0 reports */
    uint8_t *data;      /* [n][slot]: each image's planes at the start of its slot */
    size_t slot;        /* bytes a slot: (channels ? channels : 3) * size * size */
    unsigned char *chan; /* [n] channels decoded */
    char **errors;      /* [n], NULL = decoded */
    unsigned *warns;    /* [n], PRG_IMAGE_WARN_* of what was decoded */
    unsigned flags;     /* PRG_DECODE_STRICT or 0 */
    int done0;          /* items finished by thread 0 */
} job;

/* [h][w][c] with c = 2 or 4 -> without the alpha channel, in place. */
static void drop_alpha(prg_image *img) {
    size_t i, np = (size_t)img->w * img->h;
    int c = img->c, k;
    for (i = 0; i < np; i++)
        for (k = 0; k < c - 1; k++) img->data[i * (size_t)(c - 1) + (size_t)k] = img->data[i * (size_t)c + (size_t)k];
    img->c = c - 1;
}

static void work(void *ctx, int ith, int nth) {
    job *j = (job *)ctx;
    int i, S = j->size;
    for (i = ith; i < j->n; i += nth) { /* interleaved: each output slot has one owner */
        prg_image img, mid, out;
        prg_result r = prg_image_load_flags(&img, j->items[i].path, j->channels, j->flags);
        if (!r) {
            j->warns[i] = img.warnings;
            if (img.c == 2 || img.c == 4) drop_alpha(&img);
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
            j->chan[i] = 0;
        } else {
            prg_image_to_planar(j->data + (size_t)i * j->slot, &out);
            j->chan[i] = (unsigned char)out.c;
            prg_image_free(&out);
        }
        if (ith == 0) {
            long est = (long)++j->done0 * nth;
            ex_progress_update(&j->pr, est > j->n || i + nth >= j->n ? j->n : est);
        }
    }
}

/* Writes one .npz: data [n][c][S][S] (folder) or [n][c*S*S] (ImageNet
   layouts, c = 3), labels cls + base, classes. */
static void write_npz(const char *path, const uint8_t *data, const int64_t *labels, int n, int c, int S, int folder,
                      const prg_array *classes) {
    prg_array arr[3];
    const char *names[3] = {"data", "labels", "classes"};
    memset(arr, 0, sizeof arr);
    arr[0].dtype = PRG_DT_U8;
    arr[0].shape[0] = n;
    if (folder) {
        arr[0].ndim = 4; arr[0].shape[1] = c; arr[0].shape[2] = S; arr[0].shape[3] = S;
    } else {
        arr[0].ndim = 2; arr[0].shape[1] = (int64_t)c * S * S;
    }
    arr[0].count = (size_t)n * c * S * S;
    arr[0].data = (void *)data;
    arr[1].dtype = PRG_DT_I64; arr[1].ndim = 1; arr[1].shape[0] = n; arr[1].count = (size_t)n; arr[1].data = (void *)labels;
    arr[2] = *classes;
    if (prg_npz_write(path, names, arr, 3)) { fprintf(stderr, "prepare: %s\n", prg_last_error()); exit(1); }
}

/* An output file: writable, and not one of the lists read (--out x with
   --classes x_classes.txt would replace a map_clsloc.txt by bare wnids). */
static void check_out(const char *path, const char *classes_file, const char *val_labels) {
    ex_check_writable(path, "--out");
    ex_check_not_input(path, "--out", classes_file, "--classes");
    ex_check_not_input(path, "--out", val_labels, "--val-labels");
}

int main(int argc, char **argv) {
    const char *root = NULL, *split = NULL, *out = NULL, *classes_file = NULL, *val_labels = NULL, *layout_name = "auto";
    int size = 64, resize = 0, per_file = 0, limit = 0, threads = 0, strict = 0, i, layout = 0, nskip = 0, nfiles = 0;
    int channels = 0, base, folder;
    double val_fraction = 0;
    uint64_t seed = 0;
    prg_filter filter = PRG_FILTER_BICUBIC;
    strs classes = {NULL, 0, 0};
    list items = {NULL, 0, 0};
    prg_array carr;
    char p[4096], base_path[4000];
    FILE *cf, *sf = NULL;
    static const char *const layout_names[3] = {"ImageFolder (DIR/<class>/<images>)", "ImageNet (train/<wnid>/, val/)",
                                                "Tiny-ImageNet (train/<wnid>/images/, val/images/)"};
    ex_prog = "prepare";
    ex_argc = argc; ex_argv = argv;
    for (ex_argi = 1; ex_argi < argc; ex_argi++) {
        if (EX_FLAG("--help") || EX_FLAG("-h")) { usage(stdout); return 0; }
        else if (EX_FLAG("--quiet")) ex_quiet = 1;
        else if (EX_FLAG("--strict")) strict = 1;
        else if (EX_FLAG("--root")) root = ex_val();
        else if (EX_FLAG("--split")) split = ex_val();
        else if (EX_FLAG("--out")) out = ex_val();
        else if (EX_FLAG("--size")) size = ex_int_in(1, 4096);
        else if (EX_FLAG("--classes")) classes_file = ex_val();
        else if (EX_FLAG("--val-labels")) val_labels = ex_val();
        else if (EX_FLAG("--per-file")) per_file = ex_int_in(0, INT_MAX);
        else if (EX_FLAG("--limit")) limit = ex_int_in(0, INT_MAX);
        else if (EX_FLAG("--threads")) threads = ex_int_in(0, 1024);
        else if (EX_FLAG("--layout")) layout_name = ex_val();
        else if (EX_FLAG("--seed")) seed = ex_seed();
        else if (EX_FLAG("--val-fraction")) val_fraction = ex_num_in(0, 1, 0);
        else if (EX_FLAG("--channels")) {
            const char *v = ex_val();
            if (!strcmp(v, "auto")) channels = 0; else if (!strcmp(v, "1")) channels = 1; else if (!strcmp(v, "3")) channels = 3;
            else ex_usage_error("--channels", v, "wants auto, 1 or 3");
        } else if (EX_FLAG("--resize")) {
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
        fprintf(stderr, "prepare: needs --root DIR and --out PREFIX (see --help)\n");
        return 2;
    }
    if (split && strcmp(split, "train") && strcmp(split, "val")) ex_usage_error("--split", split, "wants train or val");
    if (val_fraction >= 1) ex_usage_error("--val-fraction", "1", "wants a number in [0, 1)");
    if (val_fraction > 0 && per_file > 0) {
        fprintf(stderr, "prepare: --val-fraction splits a dataset held in memory at once: not with --per-file\n");
        return 2;
    }
    if (!is_dir(root)) { fprintf(stderr, "prepare: --root %s: not a directory\n", root); return 1; }
    if (classes_file) ex_check_input(classes_file, "--classes");
    if (val_labels) ex_check_input(val_labels, "--val-labels");
    if (!*out || out[strlen(out) - 1] == '/') /* "" or "dir/" would write hidden ".npz" files */
        ex_usage_error("--out", out, "wants a file name prefix (e.g. data/flowers)");
    snprintf(base_path, sizeof base_path, "%s", out);
    if (strlen(base_path) > 4 && !strcmp(base_path + strlen(base_path) - 4, ".npz")) base_path[strlen(base_path) - 4] = 0;
    snprintf(p, sizeof p, per_file > 0 ? "%s_1.npz" : "%s.npz", base_path);
    check_out(p, classes_file, val_labels);
    snprintf(p, sizeof p, "%s_classes.txt", base_path);
    check_out(p, classes_file, val_labels);
    snprintf(p, sizeof p, "%s_skipped.txt", base_path);
    check_out(p, classes_file, val_labels);
    if (val_fraction > 0) {
        snprintf(p, sizeof p, "%s-val.npz", base_path);
        check_out(p, classes_file, val_labels);
    }

    /* the layout: train/<class>/ (ImageNet, Tiny-ImageNet when train/<class>/images/), else ImageFolder */
    snprintf(p, sizeof p, "%s/train", root);
    if (!strcmp(layout_name, "auto")) {
        strs sub = list_dir(p, 1);
        layout = 0;
        if (is_dir(p) && sub.n) {
            char q[4096];
            snprintf(q, sizeof q, "%s/train/%s/images", root, sub.v[0]);
            layout = is_dir(q) ? 2 : 1;
        }
        strs_free(&sub);
    } else if (!strcmp(layout_name, "folder")) layout = 0;
    else if (!strcmp(layout_name, "imagenet")) layout = 1;
    else if (!strcmp(layout_name, "tiny")) layout = 2;
    else { fprintf(stderr, "prepare: --layout auto, folder, imagenet or tiny\n"); return 2; }
    folder = layout == 0;
    base = folder ? 0 : 1;
    if (folder && split) {
        fprintf(stderr, "prepare: --split is for the ImageNet layouts; %s has the ImageFolder layout (hold out images with --val-fraction)\n", root);
        return 2;
    }
    if (!split) split = "train";
    if (!folder && channels == 1) {
        fprintf(stderr, "prepare: the %s layout writes 3-channel data; --channels 1 is for the ImageFolder layout\n",
                layout == 1 ? "ImageNet" : "Tiny-ImageNet");
        return 2;
    }
    if (!folder || per_file > 0) channels = channels ? channels : 3;

    /* classes */
    if (classes_file) { /* folder: whole lines (names may hold blanks); ImageNet: the first word */
        ex_lines cl;
        char err[768];
        if (!ex_lines_read(&cl, classes_file, INT_MAX, err, sizeof err) || !ex_class_list(&cl, !folder, classes_file, err, sizeof err)) {
            fprintf(stderr, "prepare: --classes %s\n", err);
            exit(1); /* not return: LeakSanitizer would count what main holds as leaked */
        }
        for (i = 0; i < cl.n; i++) strs_add(&classes, cl.v[i]);
        ex_lines_free(&cl);
    } else {
        classes = list_dir(folder ? root : p, 1);
    }
    for (i = 0; i < classes.n; i++)
        if (strpbrk(classes.v[i], "\r\n")) { /* PREFIX_classes.txt holds one name a line: it would read back as two */
            fprintf(stderr, "prepare: class directory name with a line break (\"%.*s...\"): rename it\n",
                    (int)strcspn(classes.v[i], "\r\n"), classes.v[i]);
            return 1;
        }
    if (folder && classes.n < 2) {
        fprintf(stderr, "prepare: %s: %d class director%s; the ImageFolder layout needs 2 or more (DIR/<class>/<images>)\n", root,
                classes.n, classes.n == 1 ? "y" : "ies");
        return 1;
    }
    if (!classes.n) { fprintf(stderr, "prepare: no class directories under %s (and no --classes)\n", p); return 1; }
    if (!ex_quiet) {
        if (folder) fprintf(stderr, "prepare: %s: layout %s, %d classes\n", root, layout_names[layout], classes.n);
        else fprintf(stderr, "prepare: %s: layout %s, %d classes, split %s\n", root, layout_names[layout], classes.n, split);
    }

    /* items */
    if (folder) {
        for (i = 0; i < classes.n; i++) {
            int before = items.n;
            snprintf(p, sizeof p, "%s/%s", root, classes.v[i]);
            if (!is_dir(p)) { fprintf(stderr, "prepare: class '%s' (from --classes) has no directory %s\n", classes.v[i], p); return 1; }
            add_tree(&items, p, i, limit);
            if (items.n == before) {
                fprintf(stderr, "prepare: class '%s' has no image file (%s: .jpg .jpeg .png .ppm .pgm, any case)\n", classes.v[i], p);
                return 1;
            }
        }
    } else if (!strcmp(split, "train")) {
        for (i = 0; i < classes.n; i++) {
            snprintf(p, sizeof p, layout == 2 ? "%s/train/%s/images" : "%s/train/%s", root, classes.v[i]);
            add_dir(&items, p, i, limit);
        }
    } else if (layout == 2) {
        strs names = {NULL, 0, 0}, wnids = {NULL, 0, 0};
        snprintf(p, sizeof p, "%s/val/val_annotations.txt", root);
        if (!read_pairs(p, &names, &wnids)) exit(1);
        for (i = 0; i < names.n; i++) {
            int c = class_index(&classes, wnids.v[i]);
            if (c < 0) { fprintf(stderr, "prepare: %s: unknown class '%s' for %s\n", p, wnids.v[i], names.v[i]); return 1; }
            if (strchr(names.v[i], '/')) { /* a file of val/images/, not a path out of it */
                fprintf(stderr, "prepare: %s: entry %d names '%.200s', not a file of %s/val/images\n", p, i + 1, names.v[i], root);
                exit(1);
            }
            snprintf(p, sizeof p, "%s/val/images/%s", root, names.v[i]);
            list_add(&items, p, c);
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
                add_dir(&items, p, c, limit);
            }
        } else { /* flat val/ with a labels file */
            strs files = list_dir(p, 0), names = {NULL, 0, 0}, vals = {NULL, 0, 0};
            if (!val_labels) { fprintf(stderr, "prepare: %s is flat: give --val-labels FILE\n", p); return 1; }
            if (!read_pairs(val_labels, &names, &vals)) exit(1);
            for (i = 0; i < files.n; i++) {
                int k, c = -1;
                const char *lab = NULL;
                if (names.n == files.n && vals.v[0][0] == 0) lab = names.v[i];     /* one label per line */
                else for (k = 0; k < names.n && !lab; k++) if (!strcmp(names.v[k], files.v[i])) lab = vals.v[k];
                if (lab) c = ex_val_label(lab, classes.v, classes.n); /* 1-based number, whole, or a class name */
                if (c < 0 || c >= classes.n) { fprintf(stderr, "prepare: no valid label for val/%s in %s\n", files.v[i], val_labels); return 1; }
                {
                    char q[4096];
                    snprintf(q, sizeof q, "%s/val/%s", root, files.v[i]);
                    list_add(&items, q, c);
                }
            }
            strs_free(&files);
            strs_free(&names);
            strs_free(&vals);
        }
        strs_free(&sub);
    }
    if (!items.n) { fprintf(stderr, "prepare: no images found for split %s under %s\n", split, root); return 1; }
    if (n_other) fprintf(stderr, "prepare: ignored %d file%s without an image extension (e.g. %s)\n", n_other, n_other > 1 ? "s" : "", other_example);

    /* the class names: PREFIX_classes.txt and the 'classes' array */
    {
        size_t len = 1;
        for (i = 0; i < classes.n; i++) if (strlen(classes.v[i]) > len) len = strlen(classes.v[i]);
        memset(&carr, 0, sizeof carr);
        carr.dtype = PRG_DT_U8; carr.ndim = 2; carr.shape[0] = classes.n; carr.shape[1] = (int64_t)len;
        carr.count = (size_t)classes.n * len;
        carr.data = calloc(carr.count, 1);
        if (!carr.data) { fprintf(stderr, "prepare: out of memory\n"); return 1; }
        for (i = 0; i < classes.n; i++) memcpy((char *)carr.data + (size_t)i * len, classes.v[i], strlen(classes.v[i]));
    }
    snprintf(p, sizeof p, "%s_classes.txt", base_path);
    cf = ex_text_open();
    for (i = 0; i < classes.n; i++) fprintf(cf, "%s\n", classes.v[i]);
    if (!ex_text_commit(cf, p)) return 1;
    snprintf(p, sizeof p, "%s_skipped.txt", base_path);
    remove(p); /* a list from an earlier run would mislead */

    prg_set_num_threads(threads);
    if (!ex_quiet) fprintf(stderr, "prepare: %d images -> %dx%d (%s, %s), %d threads\n", items.n, size, size,
            resize == 0 ? "shorter side + centre crop" : resize == 1 ? "squash" : "eval 256/224 + centre crop",
            filter == PRG_FILTER_BICUBIC ? "bicubic" : filter == PRG_FILTER_BILINEAR ? "bilinear" : "box", prg_get_num_threads());
    {
        int start, chunk = per_file > 0 ? per_file : items.n, nkept_total = 0;
        int *per_class = (int *)calloc((size_t)classes.n, sizeof(int));
        if (!per_class) { fprintf(stderr, "prepare: out of memory\n"); return 1; }
        for (start = 0; start < items.n; start += chunk) {
            int n = items.n - start < chunk ? items.n - start : chunk, k, kept = 0, c, ngrey = 0, ncolour = 0;
            size_t plane = (size_t)size * size;
            job j;
            int64_t *labels = (int64_t *)malloc((size_t)n * sizeof(int64_t));
            int *cls = (int *)malloc((size_t)n * sizeof(int));
            memset(&j, 0, sizeof j);
            j.items = items.v + start;
            j.n = n;
            j.size = size;
            j.resize = resize;
            j.filter = filter;
            ex_progress_start(&j.pr, "prepare", n, "images");
            j.channels = channels;
            j.slot = (size_t)(channels ? channels : 3) * plane;
            j.data = (uint8_t *)malloc((size_t)n * j.slot);
            j.chan = (unsigned char *)calloc((size_t)n, 1);
            j.errors = (char **)calloc((size_t)n, sizeof(char *));
            j.warns = (unsigned *)calloc((size_t)n, sizeof(unsigned));
            j.flags = strict ? PRG_DECODE_STRICT : 0;
            if (!j.data || !j.errors || !j.warns || !j.chan || !labels || !cls) { fprintf(stderr, "prepare: out of memory for %d images\n", n); return 1; }
            prg_parallel(work, &j);
            for (k = 0; k < n; k++) {
                if (j.chan[k] == 1) ngrey++;
                else if (j.chan[k] == 3) ncolour++;
            }
            /* auto channels: 1 when every image is grey, else 3 */
            c = channels ? channels : ncolour ? 3 : 1;
            if (!channels)
                if (!ex_quiet) fprintf(stderr, "prepare: channels %d (auto: %d colour, %d grey image%s%s)\n", c, ncolour, ngrey, ngrey == 1 ? "" : "s",
                        c == 3 && ngrey ? "; the grey ones repeated into R, G, B" : "");
            for (k = 0; k < n; k++) {
                uint8_t *src = j.data + (size_t)k * j.slot;
                if (j.errors[k]) {
                    if (!sf) {
                        snprintf(p, sizeof p, "%s_skipped.txt", base_path);
                        sf = fopen(p, "w");
                        if (!sf) { fprintf(stderr, "prepare: cannot write %s\n", p); return 1; }
                    }
                    if (strstr(j.errors[k], j.items[k].path)) fprintf(stderr, "prepare: skipped: %s\n", j.errors[k]);
                    else fprintf(stderr, "prepare: skipped %s: %s\n", j.items[k].path, j.errors[k]);
                    fprintf(sf, "%s\t%s\n", j.items[k].path, j.errors[k]);
                    free(j.errors[k]);
                    nskip++;
                    continue;
                }
                if (j.warns[k]) {
                    char text[512];
                    fprintf(stderr, "prepare: note: %s: decoded as libjpeg/PIL do despite: %s (--strict skips it)\n", j.items[k].path,
                            prg_image_warnings_format(j.warns[k], text, sizeof text));
                }
                if (c == 3 && j.chan[k] == 1) { /* grey -> R = G = B */
                    memcpy(src + plane, src, plane);
                    memcpy(src + 2 * plane, src, plane);
                }
                memmove(j.data + (size_t)kept * c * plane, src, (size_t)c * plane);
                cls[kept] = j.items[k].cls;
                labels[kept++] = j.items[k].cls + base;
                per_class[j.items[k].cls]++;
            }
            if (!kept) { /* nothing to write */
                free(j.data); free(j.errors); free(j.warns); free(j.chan); free(labels); free(cls);
                continue;
            }
            if (val_fraction > 0) {
                /* per class: round(F * n) of its n images, at least 1 and at most n - 1,
                   chosen by a shuffle that depends only on (seed, class) */
                unsigned char *is_val = (unsigned char *)calloc((size_t)kept + 1, 1);
                int *idx = (int *)malloc(((size_t)kept + 1) * sizeof(int)), ci, ntr = 0, nv = 0;
                uint8_t *vdata;
                int64_t *vlabels;
                if (!is_val || !idx) { fprintf(stderr, "prepare: out of memory\n"); return 1; }
                for (ci = 0; ci < classes.n; ci++) {
                    int m = 0, take, q;
                    prg_rng rng;
                    for (k = 0; k < kept; k++) if (cls[k] == ci) idx[m++] = k;
                    take = (int)(val_fraction * m + 0.5);
                    if (take < 1) take = 1;
                    if (take > m - 1) take = m - 1;
                    prg_rng_seed(&rng, seed, 0x76616cull + (uint64_t)ci); /* "val" */
                    for (q = m - 1; q > 0; q--) {
                        int r2 = (int)prg_rng_below(&rng, (uint32_t)(q + 1)), t = idx[q];
                        idx[q] = idx[r2];
                        idx[r2] = t;
                    }
                    for (q = 0; q < take; q++) is_val[idx[q]] = 1;
                }
                vdata = (uint8_t *)malloc(((size_t)kept + 1) * c * plane);
                vlabels = (int64_t *)malloc(((size_t)kept + 1) * sizeof(int64_t));
                if (!vdata || !vlabels) { fprintf(stderr, "prepare: out of memory\n"); return 1; }
                for (k = 0; k < kept; k++) {
                    if (is_val[k]) {
                        memcpy(vdata + (size_t)nv * c * plane, j.data + (size_t)k * c * plane, (size_t)c * plane);
                        vlabels[nv++] = labels[k];
                    } else {
                        memmove(j.data + (size_t)ntr * c * plane, j.data + (size_t)k * c * plane, (size_t)c * plane);
                        labels[ntr++] = labels[k];
                    }
                }
                snprintf(p, sizeof p, "%s-val.npz", base_path);
                write_npz(p, vdata, vlabels, nv, c, size, folder, &carr);
                if (!ex_quiet) fprintf(stderr, "prepare: wrote %s (%d held-out images; per class:", p, nv);
                for (ci = 0; !ex_quiet && ci < classes.n && ci < 20; ci++) {
                    int m = 0;
                    for (k = 0; k < nv; k++) m += vlabels[k] - base == ci;
                    fprintf(stderr, " %s %d", classes.v[ci], m);
                }
                if (!ex_quiet) fprintf(stderr, "%s)\n", classes.n > 20 ? " ..." : "");
                free(vdata); free(vlabels); free(is_val); free(idx);
                nkept_total += nv;
                nfiles++;
                kept = ntr;
            }
            if (per_file > 0) snprintf(p, sizeof p, "%s_%d.npz", base_path, start / chunk + 1);
            else snprintf(p, sizeof p, "%s.npz", base_path);
            write_npz(p, j.data, labels, kept, c, size, folder, &carr);
            if (!ex_quiet && folder)
                fprintf(stderr, "prepare: wrote %s (%d images: 'data' uint8 [%d][%d][%d][%d], 'labels' 0..%d, 'classes' [%d])\n", p, kept, kept, c, size, size, classes.n - 1, classes.n);
            else if (!ex_quiet)
                fprintf(stderr, "prepare: wrote %s (%d images: 'data' uint8 [%d][%d], 'labels' 1..%d, 'classes' [%d])\n", p, kept, kept, 3 * size * size, classes.n, classes.n);
            nkept_total += kept;
            nfiles++;
            free(j.data); free(j.errors); free(j.warns); free(j.chan); free(labels); free(cls);
        }
        for (i = 0; i < classes.n; i++)
            if (!per_class[i]) fprintf(stderr, "prepare: warning: class '%s' has no readable image\n", classes.v[i]);
        free(per_class);
        if (!ex_quiet || nskip) fprintf(stderr, "prepare: %d images in %d file(s), class names in %s_classes.txt; %d skipped%s%s%s\n", nkept_total, nfiles,
                base_path, nskip, nskip ? " (unreadable), listed in " : "", nskip ? base_path : "", nskip ? "_skipped.txt" : "");
        if (!nkept_total) {
            fprintf(stderr, "prepare: none of the %d images could be read\n", items.n);
            return 1;
        }
    }
    if (sf) fclose(sf);
    for (i = 0; i < items.n; i++) free(items.v[i].path);
    free(items.v);
    free(carr.data);
    strs_free(&classes);
    return 0;
}
