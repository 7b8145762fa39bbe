/* evaluate: top-1 / top-5 of a classifier checkpoint on a test set, and the
   confusion matrix as CSV (rows = true class, columns = predicted class).

     evaluate --model finetune-best.safetensors --data t10k-images-idx3-ubyte.gz --csv confusion.csv */
#define PRG_IMPLEMENTATION
#include "prg.h"
#include "ex_common.h"
#include "ex_mpi.h" /* make mpi: each rank classifies its part of the test set */

/* ---- corruption robustness (--corruption) and OOD detection (--ood) ---- */
#define EV_HELP_ROBUST \
    "Corruption robustness (ImageNet-C / CIFAR-10-C, Hendrycks and Dietterich 2019; frost's overlay and\n" \
    "the motion blur are procedural equivalents of the benchmark's photographs and ImageMagick call):\n" \
    "  --corruption NAME  gaussian_noise shot_noise impulse_noise defocus_blur glass_blur motion_blur\n" \
    "                   zoom_blur snow frost fog brightness contrast elastic_transform pixelate\n" \
    "                   jpeg_compression, or \"all\" (every corruption and severity, the mean, -> --csv)\n" \
    "  --severity S     1..5 (default: all five)\n" \
    "  --baseline PATH  a second classifier: its errors on the same corrupted images give the mCE\n" \
    "  --seed N (0)     seed of the corruptions' random draws\n" \
    "OOD detection (the in-distribution set is --data):\n" \
    "  --ood PATH       out-of-distribution set (any dataset evaluate loads; resized and converted to\n" \
    "                   --data's size and channels); prints AUROC and FPR95 of each score: msp (max\n" \
    "                   softmax), energy (logsumexp of the logits), ode-norm (-|z|^2/D of the\n" \
    "                   reverse-ODE endpoint at t = 0) and fm-loss (minus the flow-matching loss\n" \
    "                   at t = 0.1, 0.3, ..., 0.9 with seeded noise); \"invert\" (255 - x of --data's\n" \
    "                   images) and \"noise\" (uniform bytes) are built in\n" \
    "  --unet PATH      U-Net for the generative scores (default: the classifier's own)\n" \
    "  --ood-steps N (10) Euler steps of the reverse ODE for ode-norm\n" \
    "  --chart PATH     with --corruption: a PNG of top-1 vs severity (0: clean; the mean over the\n" \
    "                   corruptions run, the model and the --baseline) and, for more than one\n" \
    "                   corruption, below it the mean top-1 per family (noise, blur, weather,\n" \
    "                   digital, as ImageNet-C groups them); with --ood: AUROC and FPR95 per score\n" \
    "                   as bars.  With --ood, --csv takes score,auroc,fpr95 rows.  One of\n" \
    "                   --corruption and --ood at a time with --csv or --chart\n"

typedef struct ev_robust {
    const char *corruption, *baseline, *ood, *unet, *data, *model, *chart;
    int severity, ood_steps;
    uint64_t seed;
} ev_robust;

/* A corruption's name, never NULL (gcc -O2 cannot see that c stays in range and warns on printf). */
static const char *ev_cname(int c) {
    const char *s = prg_corruption_name(c);
    return s ? s : "?";
}

/* The first n images of ds, corrupted (a fresh dataset). */
static void ev_corrupt_set(prg_dataset *out, const prg_dataset *ds, int n, int corruption, int severity, uint64_t seed) {
    size_t img = (size_t)ds->c * ds->h * ds->w;
    void *work = ex_alloc(prg_corrupt_workspace(ds->c, ds->h, ds->w));
    int i;
    ex_check(prg_dataset_alloc(out, n, ds->c, ds->h, ds->w, ds->num_classes), "dataset");
    memcpy(out->labels, ds->labels, (size_t)n * sizeof(int32_t));
    for (i = 0; i < n; i++) {
        prg_rng r;
        prg_data_rng(&r, seed, (uint64_t)(corruption * 5 + severity), i);
        ex_check(prg_corrupt(out->images + i * img, ds->images + i * img, ds->c, ds->h, ds->w, corruption, severity, &r, work),
                 prg_corruption_name(corruption));
    }
    prg_free(work);
}

/* A short name of a file for a chart's title: without the directory and ".safetensors", at most 16 characters. */
static void ev_short_name(char *out, size_t cap, const char *path) {
    const char *b = strrchr(path, '/');
    size_t n;
    b = b ? b + 1 : path;
    n = strlen(b);
    if (n > 12 && !strcmp(b + n - 12, ".safetensors")) n -= 12;
    snprintf(out, cap, "%.*s", (int)(n < 16 ? n : 16), b);
}

/* Writes charts stacked top to bottom (same width) into one PNG; 0 on failure (said on stderr). */
static int ev_charts_write(const char *path, const prg_chart *ch, int n) {
    size_t off = 0;
    int k, h = 0, ok;
    uint8_t *rgb;
    for (k = 0; k < n; k++) h += ch[k].height;
    rgb = (uint8_t *)ex_alloc((size_t)ch[0].width * h * 3);
    for (k = 0, ok = 1; k < n && ok; k++) {
        ok = prg_chart_render(&ch[k], rgb + off) == PRG_OK;
        off += (size_t)ch[k].width * ch[k].height * 3;
    }
    ok = ok && prg_png_write(path, rgb, h, ch[0].width, 3) == PRG_OK;
    if (!ok) fprintf(stderr, "evaluate: --chart %s: %s\n", path, prg_last_error());
    else printf("chart -> %s\n", path);
    prg_free(rgb);
    return ok;
}

/* The ImageNet-C families: noise, blur, weather, digital (first corruption of each, and the end). */
static const int ev_family_start[5] = {PRG_CORRUPT_GAUSSIAN_NOISE, PRG_CORRUPT_DEFOCUS_BLUR, PRG_CORRUPT_SNOW,
                                       PRG_CORRUPT_CONTRAST, PRG_CORRUPT_COUNT};
static const char *const ev_family_name[4] = {"noise", "blur", "weather", "digital"};

/* --chart of --corruption: top-1 vs severity (0 = clean), the mean over
   corruptions c0..c1-1; below it, for more than one corruption, the mean
   top-1 per family (and over all).  acc[m][c * 5 + s - 1], clean[m]: top-1
   in [0, 1] of the model (m 0) and the baseline (m 1, when nm is 2). */
static int ev_corruption_chart(const ev_robust *o, int nm, const double *clean, double *const acc[2], int c0, int c1,
                               int s0, int s1, double mce) {
    double x[6], y[2][6], fy[2][5];
    const char *groups[5];
    static const char *const names[2] = {"model", "baseline"};
    char title[160];
    prg_chart_series line[2], bars[2];
    prg_chart ch[2];
    int m, c, s, f, ng = 0, np = 0;
    for (m = 0; m < nm; m++) {
        np = 0;
        x[np] = 0;
        y[m][np++] = 100 * clean[m];
        for (s = s0; s <= s1; s++) {
            double sum = 0;
            for (c = c0; c < c1; c++) sum += acc[m][c * 5 + s - 1];
            x[np] = s;
            y[m][np++] = 100 * sum / (c1 - c0);
        }
        line[m].name = names[m]; line[m].x = x; line[m].y = y[m]; line[m].n = np;
    }
    if (c1 - c0 > 1) snprintf(title, sizeof title, "top-1 vs severity (%d corruptions", c1 - c0);
    else snprintf(title, sizeof title, "top-1 vs severity (%s", ev_cname(c0));
    if (!isnan(mce)) snprintf(title + strlen(title), sizeof title - strlen(title), ", mCE %.1f%%)", 100 * mce);
    else snprintf(title + strlen(title), sizeof title - strlen(title), ")");
    prg_chart_init(&ch[0], PRG_CHART_LINE, title, line, nm);
    ch[0].x_label = "severity (0: clean)";
    ch[0].y_label = "top-1 %";
    if (c1 - c0 < 2) return ev_charts_write(o->chart, ch, 1);
    for (f = 0; f < 4; f++) { /* the families the corruptions run touch, then all */
        int a = ev_family_start[f] > c0 ? ev_family_start[f] : c0, b = ev_family_start[f + 1] < c1 ? ev_family_start[f + 1] : c1;
        if (a >= b) continue;
        for (m = 0; m < nm; m++) {
            double sum = 0;
            for (c = a; c < b; c++)
                for (s = s0; s <= s1; s++) sum += acc[m][c * 5 + s - 1];
            fy[m][ng] = 100 * sum / ((b - a) * (s1 - s0 + 1));
        }
        groups[ng++] = ev_family_name[f];
    }
    for (m = 0; m < nm; m++) {
        double sum = 0;
        for (c = c0; c < c1; c++)
            for (s = s0; s <= s1; s++) sum += acc[m][c * 5 + s - 1];
        fy[m][ng] = 100 * sum / ((c1 - c0) * (s1 - s0 + 1));
        bars[m].name = names[m]; bars[m].x = NULL; bars[m].y = fy[m]; bars[m].n = ng + 1;
    }
    groups[ng++] = "all";
    prg_chart_init(&ch[1], PRG_CHART_BARS, "mean top-1 per corruption family", bars, nm);
    ch[1].groups = groups;
    ch[1].ngroups = ng;
    ch[1].y_label = "top-1 %";
    ch[1].height = 400;
    ch[0].legend_chars = ch[1].legend_chars = (int)strlen(names[nm - 1]);
    return ev_charts_write(o->chart, ch, 2);
}

static int ev_corruptions(prg_classifier *clf, prg_classifier *base, const prg_dataset *ds, const prg_transform *te,
                          int batch, int limit, const char *csv, const ev_robust *o) {
    int n = limit > 0 && limit < ds->n ? limit : ds->n, one = strcmp(o->corruption, "all") ? prg_corruption_find(o->corruption) : -1;
    int c0 = one >= 0 ? one : 0, c1 = one >= 0 ? one + 1 : PRG_CORRUPT_COUNT, s0 = o->severity ? o->severity : 1;
    int s1 = o->severity ? o->severity : 5, c, s;
    double err[PRG_CORRUPT_COUNT * 5], berr[PRG_CORRUPT_COUNT * 5], ce[PRG_CORRUPT_COUNT], cmean[PRG_CORRUPT_COUNT];
    double acc[2][PRG_CORRUPT_COUNT * 5], clean[2] = {0, 0}, *accp[2];
    double top1, top5, sum = 0, mce = NAN;
    FILE *f = NULL;
    if (one < 0 && strcmp(o->corruption, "all")) {
        fprintf(stderr, "evaluate: unknown corruption '%s' (see --help)\n", o->corruption);
        return 2;
    }
    if (o->severity < 0 || o->severity > 5) {
        fprintf(stderr, "evaluate: --severity %d is not in 1..5\n", o->severity);
        return 2;
    }
    if (csv) f = ex_text_open(); /* written whole at the end (prg_file_write) */
    if (f) fprintf(f, "corruption,severity,top1,error,baseline_error,ce\n");
    ex_evaluate(clf, ds, te, batch, &top1, &top5, NULL, n);
    printf("clean (%d images): top-1 %.2f%%", n, 100 * top1);
    clean[0] = top1;
    if (base) {
        double b1;
        ex_evaluate(base, ds, te, batch, &b1, &top5, NULL, n);
        printf("  (baseline top-1 %.2f%%)", 100 * b1);
        clean[1] = b1;
    }
    printf("\n");
    for (c = c0; c < c1; c++) {
        double csum = 0, bsum = 0;
        for (s = s0; s <= s1; s++) {
            prg_dataset cd;
            double b1 = 0;
            ev_corrupt_set(&cd, ds, n, c, s, o->seed);
            ex_evaluate(clf, &cd, te, batch, &top1, &top5, NULL, n);
            if (base) ex_evaluate(base, &cd, te, batch, &b1, &top5, NULL, n);
            prg_dataset_free(&cd);
            err[c * 5 + s - 1] = 1 - top1;
            berr[c * 5 + s - 1] = 1 - b1;
            acc[0][c * 5 + s - 1] = top1;
            acc[1][c * 5 + s - 1] = b1;
            csum += top1;
            bsum += 1 - b1;
            printf("%s severity %d: top-1 %.2f%%", ev_cname(c), s, 100 * top1);
            if (base) printf("  (baseline top-1 %.2f%%)", 100 * b1);
            printf("\n");
            if (f) {
                fprintf(f, "%s,%d,%.4f,%.4f", ev_cname(c), s, 100 * top1, 100 * (1 - top1));
                if (base) fprintf(f, ",%.4f,", 100 * (1 - b1));
                else fprintf(f, ",,");
                fprintf(f, "\n");
            }
            fflush(stdout);
        }
        cmean[c] = csum / (s1 - s0 + 1);
        sum += cmean[c];
        if (s1 > s0) printf("%s mean: top-1 %.2f%%\n", ev_cname(c), 100 * cmean[c]);
        (void)bsum;
    }
    if (c1 - c0 > 1) printf("mean over %d corruptions: top-1 %.2f%%\n", c1 - c0, 100 * sum / (c1 - c0));
    if (base && s0 == 1 && s1 == 5) {
        mce = prg_mce(ce + c0, err + c0 * 5, berr + c0 * 5, c1 - c0);
        for (c = c0; c < c1; c++)
            if (isnan(ce[c])) printf("%s CE undefined: the baseline makes no error on it\n", ev_cname(c));
            else printf("%s CE %.1f%%\n", ev_cname(c), 100 * ce[c]);
        if (!isnan(mce)) printf("mCE %.1f%% (relative to %s)\n", 100 * mce, o->baseline);
        else printf("mCE undefined (see above)\n");
    } else if (base)
        printf("mCE needs all five severities (leave out --severity)\n");
    if (f) {
        for (c = c0; c < c1 && s1 > s0; c++) {
            fprintf(f, "%s,mean,%.4f,%.4f,,", ev_cname(c), 100 * cmean[c], 100 * (1 - cmean[c]));
            if (base && s0 == 1 && s1 == 5 && !isnan(ce[c])) fprintf(f, "%.4f", 100 * ce[c]);
            fprintf(f, "\n");
        }
        fprintf(f, "mean,all,%.4f,%.4f,,", 100 * sum / (c1 - c0), 100 * (1 - sum / (c1 - c0)));
        if (!isnan(mce)) fprintf(f, "%.4f", 100 * mce);
        fprintf(f, "\n");
        if (!ex_text_commit(f, csv)) return 1;
        printf("per corruption and severity -> %s\n", csv);
    }
    accp[0] = acc[0];
    accp[1] = acc[1];
    if (o->chart && !ev_corruption_chart(o, base ? 2 : 1, clean, accp, c0, c1, s0, s1, mce)) return 1;
    return 0;
}

/* other's images as ref's: channels converted (RGB -> grey as PIL's "L";
   grey copied to RGB), then resized (bicubic) to ref's size. */
static void ev_match_set(prg_dataset *out, const prg_dataset *other, const prg_dataset *ref, int n) {
    size_t hw = (size_t)other->h * other->w, img = (size_t)ref->c * ref->h * ref->w;
    uint8_t *tmp = (uint8_t *)ex_alloc(hw * ref->c);
    void *work = ex_alloc(prg_planes_resize_workspace(ref->c, other->h, other->w, ref->h, ref->w));
    int i, ch;
    size_t k;
    ex_check(prg_dataset_alloc(out, n, ref->c, ref->h, ref->w, ref->num_classes), "dataset");
    for (i = 0; i < n; i++) {
        const uint8_t *s = other->images + (size_t)i * other->c * hw;
        for (ch = 0; ch < ref->c; ch++)
            for (k = 0; k < hw; k++) {
                if (other->c == ref->c) tmp[ch * hw + k] = s[ch * hw + k];
                else if (other->c >= 3) tmp[ch * hw + k] = (uint8_t)((19595u * s[k] + 38470u * s[hw + k] + 7471u * s[2 * hw + k] + 32768u) >> 16);
                else tmp[ch * hw + k] = s[k];
            }
        if (other->h == ref->h && other->w == ref->w) memcpy(out->images + i * img, tmp, img);
        else ex_check(prg_planes_resize(out->images + i * img, ref->h, ref->w, tmp, ref->c, other->h, other->w, work), "resize");
        out->labels[i] = 0;
    }
    prg_free(tmp); prg_free(work);
}

enum { EV_MSP, EV_ENERGY, EV_ODE, EV_FM, EV_NSCORES };
/* Per image of ds (first n): the four scores, higher = more in-distribution. */
static void ev_scores(float *sc /* [EV_NSCORES][n] */, prg_classifier *clf, prg_unet *net, const prg_dataset *ds,
                      const prg_transform *te, int batch, int n, int steps, uint64_t seed) {
    static const float fm_t[5] = {0.1f, 0.3f, 0.5f, 0.7f, 0.9f};
    int k = prg_classifier_num_classes(clf), i, b, j, q;
    const prg_unet_config *cfg = prg_unet_config_get(net);
    size_t d = (size_t)cfg->in_channels * cfg->image_size * cfg->image_size, e;
    float *x = (float *)ex_alloc(d * batch * sizeof(float)), *z = (float *)ex_alloc(d * batch * sizeof(float));
    float *x0 = (float *)ex_alloc(d * batch * sizeof(float)), *tgt = (float *)ex_alloc(d * batch * sizeof(float));
    float *v = (float *)ex_alloc(d * batch * sizeof(float)), *tt = (float *)ex_alloc(batch * sizeof(float));
    float *logits = (float *)ex_alloc((size_t)batch * k * sizeof(float));
    int32_t *y = (int32_t *)ex_alloc(batch * sizeof(int32_t));
    int *index = (int *)ex_alloc(batch * sizeof(int));
    for (i = 0; i < n; i += batch) {
        int bs = n - i < batch ? n - i : batch;
        for (b = 0; b < bs; b++) index[b] = i + b;
        ex_check(prg_batch_build(x, y, ds, te, index, bs, 0, 0), "batch");
        ex_check(prg_classifier_predict(clf, bs, x, logits), "classifier");
        for (b = 0; b < bs; b++) {
            const float *l = logits + (size_t)b * k;
            double mx = l[0], se = 0;
            for (j = 1; j < k; j++) mx = l[j] > mx ? l[j] : mx;
            for (j = 0; j < k; j++) se += exp(l[j] - mx);
            sc[EV_MSP * n + i + b] = (float)(1.0 / se);
            sc[EV_ENERGY * n + i + b] = (float)(mx + log(se));
        }
        ex_check(prg_encode(net, steps + 1, 0, bs, x, z), "reverse ODE");
        for (b = 0; b < bs; b++) {
            double s2 = 0;
            for (e = 0; e < d; e++) s2 += (double)z[b * d + e] * z[b * d + e];
            sc[EV_ODE * n + i + b] = (float)(-s2 / d);
            sc[EV_FM * n + i + b] = 0;
        }
        for (b = 0; b < bs; b++) { /* fixed noise per image: the same draws for every run */
            prg_rng r;
            prg_data_rng(&r, seed, 77, i + b);
            for (e = 0; e < d; e++) x0[b * d + e] = prg_rng_normal(&r);
        }
        for (q = 0; q < 5; q++) {
            for (b = 0; b < bs; b++) tt[b] = fm_t[q];
            prg_flow_icfm_interp(z, tgt, x0, x, tt, bs, d);
            ex_check(prg_unet_forward(net, bs, z, tt, v), "U-Net forward");
            for (b = 0; b < bs; b++) {
                double s2 = 0;
                for (e = 0; e < d; e++) s2 += (double)(v[b * d + e] - tgt[b * d + e]) * (v[b * d + e] - tgt[b * d + e]);
                sc[EV_FM * n + i + b] -= (float)(s2 / d / 5);
            }
        }
    }
    prg_free(x); prg_free(z); prg_free(x0); prg_free(tgt); prg_free(v); prg_free(tt); prg_free(logits); prg_free(y); prg_free(index);
}

static int ev_ood(prg_classifier *clf, const prg_dataset *ds, const prg_transform *te, int batch, int limit, const char *csv,
                  const ev_robust *o) {
    static const char *names[EV_NSCORES] = {"msp", "energy", "ode-norm", "fm-loss"};
    double au[EV_NSCORES], fpr[EV_NSCORES];
    int ok = 1;
    prg_dataset other, matched;
    prg_unet *own = NULL, *net;
    int n_in = limit > 0 && limit < ds->n ? limit : ds->n, n_out, q;
    float *s_in, *s_out;
    if (!strcmp(o->ood, "invert") || !strcmp(o->ood, "noise")) { /* built from --data: 255 - x, or uniform bytes */
        size_t k, all;
        n_out = n_in;
        ex_check(prg_dataset_alloc(&matched, n_out, ds->c, ds->h, ds->w, ds->num_classes), "dataset");
        all = (size_t)n_out * ds->c * ds->h * ds->w;
        if (!strcmp(o->ood, "invert"))
            for (k = 0; k < all; k++) matched.images[k] = (uint8_t)(255 - ds->images[k]);
        else {
            prg_rng r;
            prg_rng_seed(&r, o->seed, 78);
            for (k = 0; k < all; k++) matched.images[k] = (uint8_t)prg_rng_below(&r, 256);
        }
    } else {
        ex_load_data_of(&other, o->ood, "--ood");
        n_out = limit > 0 && limit < other.n ? limit : other.n;
        ev_match_set(&matched, &other, ds, n_out);
        prg_dataset_free(&other);
    }
    if (o->unet) {
        ex_check(prg_unet_load(&own, o->unet, NULL), o->unet);
        if (memcmp(prg_unet_config_get(own), prg_unet_config_get(prg_classifier_unet(clf)), sizeof(prg_unet_config))) {
            fprintf(stderr, "evaluate: %s has another U-Net configuration than %s's\n", o->unet, "the classifier");
            return 1;
        }
    }
    net = own ? own : prg_classifier_unet(clf);
    s_in = (float *)ex_alloc((size_t)EV_NSCORES * n_in * sizeof(float));
    s_out = (float *)ex_alloc((size_t)EV_NSCORES * n_out * sizeof(float));
    ev_scores(s_in, clf, net, ds, te, batch, n_in, o->ood_steps, o->seed);
    ev_scores(s_out, clf, net, &matched, te, batch, n_out, o->ood_steps, o->seed);
    printf("OOD detection: %d in-distribution images (%s) vs %d out-of-distribution (%s)\n", n_in, o->data, n_out, o->ood);
    for (q = 0; q < EV_NSCORES; q++) {
        ex_check(prg_auroc(&au[q], s_in + (size_t)q * n_in, n_in, s_out + (size_t)q * n_out, n_out), names[q]);
        ex_check(prg_fpr_at_tpr(&fpr[q], s_in + (size_t)q * n_in, n_in, s_out + (size_t)q * n_out, n_out, 0.95), names[q]);
        printf("%-9s AUROC %.4f  FPR95 %.4f\n", names[q], au[q], fpr[q]);
    }
    if (csv) {
        FILE *f = ex_text_open();
        fprintf(f, "score,auroc,fpr95\n");
        for (q = 0; q < EV_NSCORES; q++) fprintf(f, "%s,%.6f,%.6f\n", names[q], au[q], fpr[q]);
        ok = ex_text_commit(f, csv);
        if (ok) printf("scores -> %s\n", csv);
    }
    if (ok && o->chart) {
        prg_chart_series se[2];
        prg_chart ch;
        char title[160], b[32];
        ev_short_name(b, sizeof b, o->ood);
        se[0].name = "AUROC"; se[0].x = NULL; se[0].y = au; se[0].n = EV_NSCORES;
        se[1].name = "FPR95"; se[1].x = NULL; se[1].y = fpr; se[1].n = EV_NSCORES;
        snprintf(title, sizeof title, "OOD detection vs %s (%d in, %d out)", b, n_in, n_out);
        prg_chart_init(&ch, PRG_CHART_BARS, title, se, 2);
        ch.groups = names;
        ch.ngroups = EV_NSCORES;
        ch.y_min = 0;
        ch.y_max = 1;
        ok = ev_charts_write(o->chart, &ch, 1);
    }
    prg_free(s_in); prg_free(s_out); prg_dataset_free(&matched);
    if (own) prg_unet_free(own);
    return ok ? 0 : 1;
}
/* Shifted test sets: another dataset of the model's classes.  When both name
   their classes, the data's labels are mapped to the model's by name (any
   order, a subset too: STL-10's classes on a CIFAR-10 model); a class the
   model does not have is refused, naming it. */
static void ev_map_classes(prg_dataset *ds, char *const *mn, int k, const char *model, const char *data) {
    int j, i, *map, moved = 0, nd = ds->num_classes;
    char *const *dn = ds->class_names;
    if (!mn || !dn) return;
    map = (int *)ex_alloc((size_t)ds->num_classes * sizeof(int));
    for (j = 0; j < ds->num_classes; j++) {
        for (i = 0; i < k && strcmp(mn[i], dn[j]); i++) {}
        if (i == k) {
            fprintf(stderr, "evaluate: class %d of %s, '%s', is not a class of %s (its %d:", j, data, dn[j], model, k);
            for (i = 0; i < k && i < 12; i++) fprintf(stderr, "%s %s", i ? "," : "", mn[i]);
            fprintf(stderr, "%s)\n", k > 12 ? ", ..." : "");
            exit(1);
        }
        map[j] = i;
        moved |= i != j;
    }
    if (moved || nd != k) {
        for (j = 0; j < ds->n; j++) ds->labels[j] = map[ds->labels[j]];
        ex_check(prg_dataset_set_class_names(ds, (const char *const *)mn, k), "class names");
        if (!ex_quiet) printf("evaluate: the %d classes of %s mapped to %s's %d by name\n", nd, data, model, k);
    }
    prg_free(map);
}
/* ---- end of corruption robustness and OOD detection ---- */

static void usage(void) {
    printf("usage: evaluate --model CLASSIFIER --data TEST [options]\n"
           "Top-1 / top-5 accuracy of a fine-tuned PRG classifier, and its confusion matrix.\n"
           "  --model PATH     classifier checkpoint (finetune's -best / -last file)\n"
           "  --data PATH      test set (IDX(.gz) images file, CIFAR .bin, .npz); when it and the model\n"
           "                   name their classes, its labels are mapped to the model's by name (another\n"
           "                   dataset of the same classes, in any order or a subset of them)\n"
           "  --csv PATH       write the confusion matrix (rows: true, columns: predicted;\n"
           "                   headed by the class names the checkpoint holds, else numbers);\n"
           "                   with --corruption the table per corruption and severity instead\n"
           "                   (with --ood: the scores' AUROC and FPR95);\n"
           "                   checked writable before evaluating\n"
           "  --t-span N --t-cutoff N   evaluate on another ODE grid (default: the checkpoint's; either\n"
           "                   alone keeps the checkpoint's other value)\n"
           "  --path NAME      encoder path icfm|ot|gvp (default: the checkpoint's; none recorded: icfm)\n"
           "  --batch N (100, 1..65536)  --limit N (first N images)  --threads N (0 = all)\n"
           "  --quiet          no progress lines\n" EV_HELP_ROBUST
           "U-Net flags, for a file without a config (a plain state_dict):\n"
           EX_NET_HELP);
}

int main(int argc, char **argv) {
    const char *model = NULL, *data = NULL, *csv = NULL, *path_flag = NULL, *path_src;
    char enc[160];
    int batch = 100, limit = 0, threads = 0, t_span = 0, t_cutoff = -1, k, i, j;
    prg_dataset ds;
    prg_transform te;
    prg_classifier *clf;
    const prg_unet_config *cfg;
    prg_unet_config fcfg;
    ex_net_flags nf;
    int64_t *conf;
    double top1, top5, t0, c0;
    ev_robust rob;

    ex_prog = "evaluate";
    ex_net_flags_init(&nf, "tiny32");
    ex_argc = argc; ex_argv = argv;
    memset(&rob, 0, sizeof rob);
    rob.ood_steps = 10;
    for (ex_argi = 1; ex_argi < argc; ex_argi++) {
        if (EX_FLAG("--help") || EX_FLAG("-h")) { usage(); return 0; }
        else if (ex_net_flag(&nf)) {}
        else if (EX_FLAG("--model")) model = ex_val();
        else if (EX_FLAG("--data")) data = ex_val();
        else if (EX_FLAG("--csv")) csv = ex_val();
        else if (EX_FLAG("--batch")) batch = ex_int_in(1, 65536);
        else if (EX_FLAG("--limit")) limit = ex_int_in(0, INT_MAX);
        else if (EX_FLAG("--threads")) threads = ex_int_in(0, 1024);
        else if (EX_FLAG("--t-span")) t_span = ex_int_in(2, 1024);
        else if (EX_FLAG("--t-cutoff")) t_cutoff = ex_int_in(0, 1022);
        else if (EX_FLAG("--quiet")) ex_quiet = 1;
        else if (EX_FLAG("--path")) path_flag = ex_val();
        else if (EX_FLAG("--corruption")) rob.corruption = ex_val();
        else if (EX_FLAG("--severity")) rob.severity = ex_int_in(1, 5);
        else if (EX_FLAG("--baseline")) rob.baseline = ex_val();
        else if (EX_FLAG("--seed")) rob.seed = ex_seed();
        else if (EX_FLAG("--ood")) rob.ood = ex_val();
        else if (EX_FLAG("--unet")) rob.unet = ex_val();
        else if (EX_FLAG("--ood-steps")) rob.ood_steps = ex_int_in(1, 1024);
        else if (EX_FLAG("--chart")) rob.chart = ex_val();
        else ex_bad_flag();
    }
    if (!model || !data) { usage(); return 2; }
    ex_mpi_init();
    ex_check_input(model, "--model");
    if (csv) {
        ex_check_writable(csv, "--csv");
        ex_check_not_input(csv, "--csv", model, "--model");
        ex_check_not_input(csv, "--csv", data, "--data");
        ex_check_not_input(csv, "--csv", rob.baseline, "--baseline");
        ex_check_not_input(csv, "--csv", rob.unet, "--unet");
        ex_check_not_input(csv, "--csv", rob.ood, "--ood");
    }
    if (rob.chart) {
        const char *in[5] = {model, data, rob.baseline, rob.unet, rob.ood}, *fl[5] = {"--model", "--data", "--baseline", "--unet", "--ood"};
        if (!rob.corruption && !rob.ood) {
            fprintf(stderr, "evaluate: --chart goes with --corruption or --ood (see --help)\n");
            return 2;
        }
        ex_check_writable(rob.chart, "--chart");
        for (i = 0; i < 5; i++) ex_check_not_input(rob.chart, "--chart", in[i], fl[i]);
        if (csv && !strcmp(csv, rob.chart)) {
            fprintf(stderr, "evaluate: --chart %s is the --csv file; give another name\n", rob.chart);
            return 2;
        }
        if (csv) ex_check_not_input(rob.chart, "--chart", csv, "--csv");
    }
    if ((csv || rob.chart) && rob.corruption && rob.ood) {
        fprintf(stderr, "evaluate: --csv and --chart take one of --corruption and --ood; run them one at a time\n");
        return 2;
    }
    rob.data = data;
    rob.model = model;
    if ((rob.severity || rob.baseline) && !rob.corruption) {
        fprintf(stderr, "evaluate: --severity and --baseline go with --corruption (see --help)\n");
        return 2;
    }
    if (rob.baseline) ex_check_input(rob.baseline, "--baseline");
    if (rob.unet) ex_check_input(rob.unet, "--unet");
    if (rob.unet && !rob.ood) {
        fprintf(stderr, "evaluate: --unet goes with --ood (see --help)\n");
        return 2;
    }
    prg_set_num_threads(ex_mpi_threads(threads));
    ex_check(prg_classifier_load(&clf, model, ex_file_config(&fcfg, &nf, model)), model);
    {
        /* the grid: a flag not given keeps the checkpoint's value; the path: the checkpoint's, or --path
           (set on t_cutoff 0, which fits both paths; the grid is then checked against the path) */
        int s = 0, c = 0;
        prg_classifier_grid(clf, &s, &c);
        if (t_span > 0) s = t_span;
        if (t_cutoff >= 0) c = t_cutoff;
        ex_check(prg_classifier_set_grid(clf, s, 0), "--t-span");
        ex_check(prg_classifier_set_path(clf, ex_choose_path(ex_classifier_recorded_path(clf), path_flag, model, &path_src)),
                 "--path");
        if (prg_classifier_set_grid(clf, s, c) != PRG_OK) {
            char what[160];
            if (t_span > 0 && t_cutoff >= 0) snprintf(what, sizeof what, "--t-span %d --t-cutoff %d", s, c);
            else if (t_span > 0) snprintf(what, sizeof what, "--t-span %d with the checkpoint's t_cutoff %d", s, c);
            else snprintf(what, sizeof what, "--t-cutoff %d with the checkpoint's t_span %d (give --t-span too)", c, s);
            fprintf(stderr, "evaluate: %s: %s\n", what, prg_last_error());
            exit(2);
        }
    }
    ex_encoder_desc(enc, sizeof(enc), clf);
    if (!ex_quiet) printf("%s: %s (path from %s)\n", model, enc, path_src);
    ex_load_data(&ds, data);
    if (ds.n < 1) { fprintf(stderr, "evaluate: --data %s holds no images\n", data); exit(1); }
    cfg = prg_unet_config_get(prg_classifier_unet(clf));
    k = prg_classifier_num_classes(clf);
    if (cfg->in_channels != ds.c) {
        fprintf(stderr, "evaluate: the model takes %d channels, the data has %d\n", cfg->in_channels, ds.c);
        exit(1);
    }
    ex_labels_fit(&ds, k, data, model);
    {
        const char **mn = (const char **)ex_alloc((size_t)k * sizeof(char *));
        for (i = 0; i < k; i++) mn[i] = prg_classifier_class_name(clf, i);
        if (!ex_quiet) ex_print_classes(model, k, mn[0] ? (char *const *)mn : NULL);
        if (mn[0]) ev_map_classes(&ds, (char *const *)mn, k, model, data);
        prg_free((void *)mn);
    }
    ex_transform(&te, 0, 0, ds.c, ds.h, ds.w, cfg->image_size, -1);
    if (rob.corruption || rob.ood) {
        int rc = 0;
        prg_classifier *base = NULL;
        if (rob.ood_steps < 1) { fprintf(stderr, "evaluate: --ood-steps must be >= 1\n"); exit(2); }
        if (rob.baseline) {
            ex_check(prg_classifier_load(&base, rob.baseline, NULL), rob.baseline);
            if (memcmp(prg_unet_config_get(prg_classifier_unet(base)), cfg, sizeof *cfg) &&
                (prg_unet_config_get(prg_classifier_unet(base))->in_channels != ds.c ||
                 prg_unet_config_get(prg_classifier_unet(base))->image_size != cfg->image_size)) {
                fprintf(stderr, "evaluate: the baseline %s takes other inputs than %s\n", rob.baseline, model);
                exit(1);
            }
        }
        if (rob.corruption) rc = ev_corruptions(clf, base, &ds, &te, batch, limit, csv, &rob);
        if (!rc && rob.ood) rc = ev_ood(clf, &ds, &te, batch, limit, csv, &rob);
        if (base) prg_classifier_free(base);
        prg_classifier_free(clf); prg_dataset_free(&ds);
        ex_mpi_finalize();
        return rc;
    }
    conf = (int64_t *)ex_alloc((size_t)k * k * sizeof(int64_t));
    t0 = ex_now(); c0 = ex_cpu();
    ex_evaluate(clf, &ds, &te, batch, &top1, &top5, conf, limit);
    printf("%s on %s (%d images): top-1 %.2f%%  top-5 %.2f%%  (%.1fs wall, %.1fs cpu)\n", model, data,
           limit > 0 && limit < ds.n ? limit : ds.n, 100 * top1, 100 * top5, ex_now() - t0, ex_cpu() - c0);
    if (csv && ex_mpi_root()) {
        FILE *f = ex_text_open();
        fprintf(f, "true\\pred");
        for (j = 0; j < k; j++) ex_csv_class(f, ",", j, prg_classifier_class_name(clf, j));
        fprintf(f, "\n");
        for (i = 0; i < k; i++) {
            ex_csv_class(f, "", i, prg_classifier_class_name(clf, i));
            for (j = 0; j < k; j++) fprintf(f, ",%lld", (long long)conf[(size_t)i * k + j]);
            fprintf(f, "\n");
        }
        if (!ex_text_commit(f, csv)) exit(1);
        printf("confusion matrix -> %s\n", csv);
    }
    prg_free(conf); prg_classifier_free(clf); prg_dataset_free(&ds);
    ex_mpi_finalize();
    return 0;
}
