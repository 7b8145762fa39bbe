/* classify: images -> the top classes of a fine-tuned PRG classifier.

     classify --model finetune-best.safetensors digit.png
     classify --model photos-best.safetensors --top 3 --csv holiday/ > predictions.csv

   Reads JPEG, PNG or binary PGM/PPM (prg_image_load); a directory stands for
   every image file under it.  Each image is converted to the model's channel
   count (the conversion prepare makes), 28x28 images for a 32x32 model get
   MNIST's 2-pixel border, other sizes are resized (bicubic, shorter side)
   and centre-cropped as prepare does by default; then normalised as in training (0.1307/0.3081 for 1
   channel, ImageNet's for 3).  Every conversion is said in a note. */
#define _POSIX_C_SOURCE 200809L /* lstat: symlinked subdirectories are not walked */
#define PRG_IMPLEMENTATION
#include "prg.h"
#include "ex_common.h"
#include <dirent.h>
#include <stdarg.h>
#include <strings.h>
#include <sys/stat.h>

static void usage(void) {
    printf("usage: classify --model CLASSIFIER [options] IMAGE|DIR ...\n"
           "The top classes of each image (JPEG, PNG, PGM or PPM; a directory: every .jpg .jpeg\n"
           ".png .ppm .pgm file under it, any letter case, sorted) with their probabilities and\n"
           "class names.\n"
           "  --model PATH     classifier checkpoint (finetune's -best / -last file)\n"
           "  --top K          classes per image (5; at most the class count)\n"
           "  --csv            CSV on stdout, a header then one row per image and rank:\n"
           "                   file,rank,class,name,probability,notes\n"
           "  --json           JSON on stdout: an array with one object per image, {\"file\",\n"
           "                   \"width\", \"height\", \"channels\", \"notes\": [...], \"top\": [{\"rank\",\n"
           "                   \"class\", \"name\", \"probability\"}]}, or {\"file\", \"error\"}; bytes of\n"
           "                   names that are not UTF-8 are given as U+FFFD\n"
           "  --labels PATH    class names, one a line (default: the checkpoint's, else class\n"
           "                   numbers); \"cifar10\" uses the CIFAR-10 names\n"
           "  --batch N        images per forward pass (16, 1..4096)\n"
           "  --path NAME      encoder path icfm|ot|gvp (default: the checkpoint's; none recorded: icfm)\n"
           "  --strict         refuse an image with defects that libjpeg and PIL decode\n"
           "                   through (by default decoded, with a note)\n"
           "  --threads N      (0 = all)\n"
           "  --quiet          no line about the model (the classes only)\n"
           "Notes say how an image was fitted to the model: colour -> grey or grey -> colour\n"
           "(as prepare converts), alpha dropped, zero border, resized (shorter side, bicubic)\n"
           "and centre-cropped, an aspect ratio beyond 4:3 (the crop drops the sides), an image\n"
           "more than 4x the model's side.  Exit status 1 when an image could not be read (the\n"
           "others are still classified), 2 on a bad option.\n"
           "U-Net flags, for a file without a config (a plain state_dict):\n"
           EX_NET_HELP);
}

static const char *cifar10_names[10] = {"airplane", "automobile", "bird", "cat", "deer",
                                        "dog", "frog", "horse", "ship", "truck"};

/* ---- the files: arguments, directories expanded ----------------------- */
typedef struct paths { char **v; int n, cap; } paths;
static void paths_add(paths *p, const char *s) {
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 64;
        p->v = (char **)realloc(p->v, (size_t)p->cap * sizeof(char *));
        if (!p->v) { fprintf(stderr, "classify: out of memory\n"); exit(1); }
    }
    p->v[p->n] = (char *)malloc(strlen(s) + 1);
    if (!p->v[p->n]) { fprintf(stderr, "classify: out of memory\n"); exit(1); }
    strcpy(p->v[p->n++], s);
}
static int has_image_ext(const char *name) {
    static const char *const ext[5] = {".jpg", ".jpeg", ".png", ".ppm", ".pgm"};
    const char *e = strrchr(name, '.');
    int i;
    for (i = 0; e && i < 5; i++)
        if (!strcasecmp(e, ext[i])) return 1;
    return 0;
}
/* by directory, then by file name (the order prepare reads a tree in) */
static int cmp_path(const void *a, const void *b) {
    const char *x = *(char *const *)a, *y = *(char *const *)b, *sx = strrchr(x, '/'), *sy = strrchr(y, '/');
    size_t lx = (size_t)(sx - x), ly = (size_t)(sy - y);
    int c = strncmp(x, y, lx < ly ? lx : ly);
    if (c) return c;
    if (lx != ly) return lx < ly ? -1 : 1;
    return strcmp(sx, sy);
}
/* Symlinked subdirectories are not entered (as prepare and torchvision's
   ImageFolder: a link to a parent would make the walk endless), depth at
   most 32; only regular files are taken (a fifo would block the decoder
   forever). */
static int tree_skipped; /* counted as images that could not be read */
static void add_tree(paths *p, const char *dir, int depth) {
    DIR *d = opendir(dir);
    struct dirent *e;
    char q[4096];
    struct stat st;
    if (!d) { fprintf(stderr, "classify: cannot read directory %s: %s\n", dir, strerror(errno)); return; }
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        if ((size_t)snprintf(q, sizeof q, "%s/%s", dir, e->d_name) >= sizeof q) {
            fprintf(stderr, "classify: skipped %s/...: path longer than %d characters\n", dir, (int)sizeof q - 1);
            continue;
        }
        if (stat(q, &st) == 0 && S_ISDIR(st.st_mode)) {
            struct stat ls;
            if (lstat(q, &ls) == 0 && S_ISLNK(ls.st_mode))
                fprintf(stderr, "classify: not entered: %s (a symlinked directory; name it to classify it)\n", q);
            else if (depth < 32) add_tree(p, q, depth + 1);
            else fprintf(stderr, "classify: skipped %s: more than 32 directories deep (a symlink loop?)\n", q);
        } else if (has_image_ext(e->d_name)) {
            if (stat(q, &st) == 0 && S_ISREG(st.st_mode)) paths_add(p, q);
            else {
                fprintf(stderr, "classify: skipped %s: %s\n", q, stat(q, &st) != 0 ? strerror(errno) : "not a regular file");
                tree_skipped++;
            }
        }
    }
    closedir(d);
}

/* ---- output ------------------------------------------------------------ */
/* Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlong
   forms, no surrogates, at most U+10FFFF), 0 when the byte at s starts none. */
static int utf8_len(const unsigned char *s) {
    int n, k;
    unsigned cp;
    if (s[0] < 0x80) return 1;
    if (s[0] >= 0xC2 && s[0] <= 0xDF) n = 2, cp = s[0] & 0x1Fu;
    else if (s[0] >= 0xE0 && s[0] <= 0xEF) n = 3, cp = s[0] & 0x0Fu;
    else if (s[0] >= 0xF0 && s[0] <= 0xF4) n = 4, cp = s[0] & 0x07u;
    else return 0;
    for (k = 1; k < n; k++) {
        if ((s[k] & 0xC0) != 0x80) return 0; /* also stops at the terminating NUL */
        cp = cp << 6 | (s[k] & 0x3Fu);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF))) return 0;
    return n;
}
/* A JSON string: quotes, backslashes and control characters escaped; a byte
   that is not part of well-formed UTF-8 (a file name in another encoding)
   becomes one U+FFFD each, so the output is always valid JSON. */
static void json_str(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    putchar('"');
    while (p && *p) {
        int n = utf8_len(p);
        if (!n) { printf("\\ufffd"); p++; continue; }
        if (*p == '"' || *p == '\\') printf("\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f) printf("\\u%04x", *p);
        else fwrite(p, 1, (size_t)n, stdout);
        p += n;
    }
    putchar('"');
}

typedef struct result {
    const char *file;
    int w, h, c, ok;
    char notes[4][160];
    int nnotes;
    char error[1024];
} result;

static void note(result *r, const char *fmt, ...) {
    va_list ap;
    if (r->nnotes >= 4) return;
    va_start(ap, fmt);
    vsnprintf(r->notes[r->nnotes++], sizeof r->notes[0], fmt, ap);
    va_end(ap);
}

static unsigned decode_flags; /* PRG_DECODE_STRICT with --strict */

/* img (any channels) converted to mc channels -> planes [mc][h][w]. */
static void to_planes(uint8_t *dst, prg_image *img, int mc, const char *file) {
    if (img->c != mc) ex_check(prg_image_convert(img, mc), file);
    prg_image_to_planar(dst, img);
}

/* Loads, converts and fits one image into planes [mc][size][size].  The
   file is decoded once: at 1 channel for a grey model (as prepare
   converts: a JPEG keeps its Y), else at its own channels, which are
   converted to 3 (grey repeated, alpha dropped) only once the image is
   fitted to the model: the resize treats channels alike, so the pixels are
   prepare's, and the peak memory is the decoded image's own size (an
   8192x8192 or 2^26 x 1 grey PNG: 64 MB, not the 256 MB of converting it
   whole). */
static int load_fit(result *res, uint8_t *fitted, int mc, int size) {
    prg_image img;
    uint8_t *planes;
    int w, h, c;
    double ratio;
    if (prg_image_load_flags(&img, res->file, mc == 1 ? 1 : 0, decode_flags) != PRG_OK) {
        snprintf(res->error, sizeof res->error, "%s", prg_last_error());
        return 0;
    }
    if (img.warnings) {
        char text[512];
        note(res, "decoded as libjpeg/PIL do despite: %s (--strict refuses it)",
             prg_image_warnings_format(img.warnings, text, sizeof text));
    }
    c = img.src_c;
    if (c == 2 || c == 4) note(res, "alpha dropped");
    if ((c == 1 || c == 2) != (mc == 1)) {
        note(res, mc == 1 ? "colour -> grey (the model takes 1 channel)" : "grey -> colour, R = G = B (the model takes 3 channels)");
    }
    res->w = w = img.w;
    res->h = h = img.h;
    res->c = c == 2 || c == 4 ? c - 1 : c;
    ratio = w > h ? (double)w / h : (double)h / w;
    if (ratio > 16) { /* only the centre is kept: cut to 16:1 first, so the resize stays small */
        int sh = w < h ? w : h, keep = 16 * sh;
        prg_image cut;
        ex_check(prg_image_crop(&cut, &img, h > w ? (h - keep) / 2 : 0, w > h ? (w - keep) / 2 : 0, h > w ? keep : h,
                                w > h ? keep : w), res->file);
        prg_image_free(&img);
        img = cut;
    }
    if (h == w && h < size && (size - h) % 2 == 0 && size - h <= 4) {
        planes = (uint8_t *)ex_alloc((size_t)mc * h * w);
        to_planes(planes, &img, mc, res->file);
        note(res, "zero border of %d to the model's %dx%d (as MNIST's 28x28 in training)", (size - h) / 2, size, size);
        prg_planes_crop(fitted, planes, -(size - h) / 2, -(size - w) / 2, size, size, mc, h, w);
        prg_free(planes);
    } else if (h == size && w == size) {
        to_planes(fitted, &img, mc, res->file);
    } else { /* prepare's default fit: shorter side -> size (PIL bicubic), centre crop */
        prg_image mid, out;
        ex_check(prg_image_resize_short(&mid, &img, size, PRG_FILTER_BICUBIC), res->file);
        note(res, "resized %dx%d -> %dx%d (bicubic), centre crop %dx%d", w, h, mid.w, mid.h, size, size);
        ex_check(prg_image_center_crop(&out, &mid, size, size), res->file);
        to_planes(fitted, &out, mc, res->file);
        prg_image_free(&mid);
        prg_image_free(&out);
    }
    prg_image_free(&img);
    if (ratio > 4.0 / 3 + 1e-9) note(res, "aspect ratio %.2f: the centre crop keeps %.0f%% of the image", ratio, 100 / ratio);
    if ((w < h ? w : h) > 4 * size) note(res, "%.0fx the model's side: fine detail is lost in the downscaling", (double)(w < h ? w : h) / size);
    return 1;
}

int main(int argc, char **argv) {
    const char *model = NULL, *labels = NULL, *path_flag = NULL, *path_src;
    char enc[160];
    prg_unet_config fcfg;
    ex_net_flags nf;
    int threads = 0, top = 5, csv = 0, json = 0, batch = 16, mc, size, i, j, k, b, failed = 0, first_json = 1;
    paths files = {NULL, 0, 0};
    prg_classifier *clf;
    const prg_unet_config *cfg;
    float *x, *logits, mean[4], std[4];
    uint8_t *fitted;
    int *order;
    result *res;
    const char **names;
    ex_lines label_lines = {NULL, NULL, 0};
    size_t img;

    ex_prog = "classify";
    ex_net_flags_init(&nf, "tiny32");
    ex_argc = argc; ex_argv = argv;
    for (ex_argi = 1; ex_argi < argc; ex_argi++) {
        if (EX_FLAG("--help") || EX_FLAG("-h")) { usage(); return 0; }
        else if (ex_net_flag(&nf)) {}
        else if (EX_FLAG("--model")) model = ex_val();
        else if (EX_FLAG("--path")) path_flag = ex_val();
        else if (EX_FLAG("--strict")) decode_flags = PRG_DECODE_STRICT;
        else if (EX_FLAG("--labels")) labels = ex_val();
        else if (EX_FLAG("--top")) top = ex_int_in(1, 1000000);
        else if (EX_FLAG("--csv")) csv = 1;
        else if (EX_FLAG("--json")) json = 1;
        else if (EX_FLAG("--batch")) batch = ex_int_in(1, 4096);
        else if (EX_FLAG("--threads")) threads = ex_int_in(0, 1024);
        else if (EX_FLAG("--quiet")) ex_quiet = 1;
        else if (argv[ex_argi][0] != '-') {
            struct stat st;
            if (stat(argv[ex_argi], &st) == 0 && S_ISDIR(st.st_mode)) {
                int before = files.n;
                add_tree(&files, argv[ex_argi], 0);
                if (files.n > before + 1) qsort(files.v + before, (size_t)(files.n - before), sizeof(char *), cmp_path);
                if (files.n == before) fprintf(stderr, "classify: no image files under %s\n", argv[ex_argi]);
            } else {
                ex_check_input(argv[ex_argi], "IMAGE");
                paths_add(&files, argv[ex_argi]);
            }
        } else ex_bad_flag();
    }
    if (!model || !files.n || top < 1 || batch < 1 || (csv && json)) {
        if (csv && json) fprintf(stderr, "classify: --csv or --json, not both\n");
        usage();
        return 2;
    }
    ex_check_input(model, "--model");
    if (labels && strcmp(labels, "cifar10")) ex_check_input(labels, "--labels");
    prg_set_num_threads(threads);
    ex_check(prg_classifier_load(&clf, model, ex_file_config(&fcfg, &nf, model)), model);
    ex_check(prg_classifier_set_path(clf, ex_choose_path(ex_classifier_recorded_path(clf), path_flag, model, &path_src)),
             "--path");
    ex_encoder_desc(enc, sizeof(enc), clf);
    /* not with --csv / --json, whose output is for scripts */
    if (!ex_quiet && !csv && !json) printf("%s: %s (path from %s)\n", model, enc, path_src);
    cfg = prg_unet_config_get(prg_classifier_unet(clf));
    mc = cfg->in_channels;
    size = cfg->image_size;
    k = prg_classifier_num_classes(clf);
    if (top > k) top = k;
    if (mc != 1 && mc != 3) { fprintf(stderr, "classify: models of 1 or 3 channels only (this one: %d)\n", mc); return 1; }

    /* class names: --labels, else the checkpoint's, else none (numbers) */
    names = (const char **)ex_alloc((size_t)k * sizeof(char *));
    for (i = 0; i < k; i++) names[i] = prg_classifier_class_name(clf, i);
    if (labels && !strcmp(labels, "cifar10")) {
        for (i = 0; i < k; i++) names[i] = k == 10 ? cifar10_names[i] : NULL;
    } else if (labels) { /* one name a line, however long; a NUL byte or a huge file is refused */
        char err[768];
        if (!ex_lines_read(&label_lines, labels, INT_MAX, err, sizeof err)) { fprintf(stderr, "classify: --labels %s\n", err); exit(1); }
        for (i = 0; i < k; i++) names[i] = i < label_lines.n ? label_lines.v[i] : NULL;
        if (label_lines.n != k)
            fprintf(stderr, "classify: warning: --labels %s has %s names than the model's %d classes%s\n", labels,
                    label_lines.n < k ? "fewer" : "more", k, label_lines.n < k ? " (the others are shown as numbers)" : " (the rest are not used)");
    }

    if (batch > files.n) batch = files.n; /* the buffers below follow the images there are, not --batch */
    img = (size_t)mc * size * size;
    fitted = (uint8_t *)ex_alloc(img);
    x = (float *)ex_alloc((size_t)batch * img * sizeof(float));
    logits = (float *)ex_alloc((size_t)batch * k * sizeof(float));
    order = (int *)ex_alloc((size_t)k * sizeof(int));
    res = (result *)ex_alloc((size_t)batch * sizeof(result));
    ex_norm(mc, mean, std);
    if (csv) printf("file,rank,class,name,probability,notes\n");
    if (json) printf("[");
    for (i = 0; i < files.n; i += batch) {
        int n = files.n - i < batch ? files.n - i : batch, nok = 0;
        for (b = 0; b < n; b++) {
            memset(&res[b], 0, sizeof res[b]);
            res[b].file = files.v[i + b];
            res[b].ok = load_fit(&res[b], fitted, mc, size);
            if (res[b].ok) prg_planes_normalize(x + (size_t)nok++ * img, fitted, mean, std, mc, size, size);
        }
        if (nok) {
            prg_result pr = prg_classifier_predict(clf, nok, x, logits);
            if (pr != PRG_OK && json) { /* the array printed so far is closed: stdout stays one JSON document */
                printf("%s]\n", first_json ? "" : "\n");
                fflush(stdout);
            }
            ex_check(pr, model);
        }
        for (b = 0, nok = 0; b < n; b++) {
            result *r = &res[b];
            const float *l = logits + (size_t)nok * k;
            double mx, sum = 0;
            int t;
            if (!r->ok) {
                failed++;
                fprintf(stderr, "classify: %s\n", r->error);
                if (json) {
                    printf("%s\n  {\"file\": ", first_json ? "" : ",");
                    json_str(r->file);
                    printf(", \"error\": ");
                    json_str(r->error);
                    printf("}");
                    first_json = 0;
                }
                continue;
            }
            nok++;
            /* softmax and the top classes */
            mx = l[0];
            for (j = 1; j < k; j++) if (l[j] > mx) mx = l[j];
            for (j = 0; j < k; j++) { sum += exp(l[j] - mx); order[j] = j; }
            for (t = 0; t < top; t++)
                for (j = t + 1; j < k; j++)
                    if (l[order[j]] > l[order[t]]) { int s = order[t]; order[t] = order[j]; order[j] = s; }
            if (json) {
                printf("%s\n  {\"file\": ", first_json ? "" : ",");
                json_str(r->file);
                printf(", \"width\": %d, \"height\": %d, \"channels\": %d, \"notes\": [", r->w, r->h, r->c);
                for (j = 0; j < r->nnotes; j++) { printf("%s", j ? ", " : ""); json_str(r->notes[j]); }
                printf("], \"top\": [");
                for (t = 0; t < top; t++) {
                    printf("%s{\"rank\": %d, \"class\": %d, \"name\": ", t ? ", " : "", t + 1, order[t]);
                    if (names[order[t]]) json_str(names[order[t]]);
                    else printf("null");
                    printf(", \"probability\": %.6f}", exp(l[order[t]] - mx) / sum);
                }
                printf("]}");
                first_json = 0;
            } else if (csv) {
                char notes[700] = "";
                for (j = 0; j < r->nnotes; j++) {
                    strcat(notes, j ? "; " : "");
                    strcat(notes, r->notes[j]);
                }
                for (t = 0; t < top; t++) {
                    ex_csv_field(stdout, r->file);
                    printf(",%d,%d,", t + 1, order[t]);
                    if (names[order[t]]) ex_csv_field(stdout, names[order[t]]);
                    printf(",%.6f,", exp(l[order[t]] - mx) / sum);
                    ex_csv_field(stdout, notes);
                    printf("\n");
                }
            } else {
                printf("%s (%dx%d, %d channel%s):\n", r->file, r->w, r->h, r->c, r->c > 1 ? "s" : "");
                for (j = 0; j < r->nnotes; j++) printf("  note: %s\n", r->notes[j]);
                for (t = 0; t < top; t++) {
                    int c = order[t];
                    printf("  %6.2f%%  %d%s%s\n", 100 * exp(l[c] - mx) / sum, c, names[c] ? "  " : "", names[c] ? names[c] : "");
                }
            }
        }
        fflush(stdout);
    }
    if (json) printf("\n]\n");
    if (failed) fprintf(stderr, "classify: %d of %d image%s could not be read\n", failed, files.n, files.n > 1 ? "s" : "");
    ex_lines_free(&label_lines);
    prg_free(fitted); prg_free(x); prg_free(logits); prg_free(order); prg_free(res); prg_free((void *)names);
    for (i = 0; i < files.n; i++) free(files.v[i]);
    free(files.v);
    prg_classifier_free(clf);
    return failed || tree_skipped ? 1 : 0;
}
