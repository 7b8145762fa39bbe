/* probe: how good the reversed generator's features are along the ODE
   trajectory, without fine-tuning.  For each t_cutoff the encoder's state
   (pooled as the classifier's head pools) feeds a weighted k-NN classifier
   (cosine, k = 20, votes exp(s / 0.07)) and a linear probe (AdamW +
   cross-entropy on standardised features); both print their top-1.

     probe --model unet.safetensors --data train-images-idx3-ubyte.gz --test t10k-images-idx3-ubyte.gz \
           --t-span 32 --t-cutoff 0,8,16,24,31

   All cutoffs come from one solve per batch (the deepest one's), and each
   cutoff's features are kept in memory for both probes. */
#define PRG_IMPLEMENTATION
#include "prg.h"
#include "ex_common.h"

#define MAX_CUTS 64

static void usage(void) {
    printf("usage: probe --model CKPT --data TRAIN --test TEST [options]\n"
           "kNN and linear-probe top-1 of the encoder's pooled features at each t_cutoff.\n"
           "  --model PATH           U-Net (pretrain's checkpoint) or classifier (finetune's) checkpoint\n"
           "  --data PATH            training set of the probes (IDX(.gz), CIFAR .bin, .npz; a,b,c concatenates)\n"
           "  --test PATH            test set\n"
           "  --t-span N             ODE grid points (default: the classifier's, else 32)\n"
           "  --t-cutoff K[,K...]    cutoffs to probe (default five: all, 3/4, 1/2, 1/4 and none of the\n"
           "                         Euler steps; on ICFM t_span-1 is the input itself, the pixel baseline)\n"
           "  --path icfm|gvp        the encoder's probability path (default: the classifier's, else icfm)\n"
           "  --k N                  neighbours (20)   --temperature T   vote weight exp(s/T) (0.07)\n"
           "  --epochs N             linear-probe epochs (100)   --lr X (1e-3, cosine to 0)   --wd X (0)\n"
           "  --probe-batch N        linear-probe mini-batch (256)\n"
           "  --batch N              images per encoder call (100)\n"
           "  --limit N              first N training images   --test-limit N   first N test images\n"
           "  --csv PATH             also write t_cutoff,steps,knn_top1,linear_top1 rows\n"
           "  --chart PATH           and draw both top-1 vs t_cutoff as a PNG line chart\n"
           "  --threads N (0 = all)  --seed N (0: the linear probe's batch order)\n"
           "  --quiet                no progress lines\n");
}

/* Fills feat[c][n][D] for every cutoff over the first n images of ds, with
   a progress line (count, rate, ETA) on stdout. */
static void encode_set(prg_unet *net, int path, int t_span, int ncut, const int *cuts, const prg_dataset *ds,
                       int n, const prg_transform *t, int batch, float *feat, const char *what) {
    const prg_unet_config *cfg = prg_unet_config_get(net);
    size_t img = (size_t)cfg->in_channels * cfg->image_size * cfg->image_size;
    int d = prg_feature_dim(net), i, b, c;
    float *x = (float *)ex_alloc(img * batch * sizeof(float));
    float *f = (float *)ex_alloc((size_t)ncut * batch * d * sizeof(float));
    int *index = (int *)ex_alloc(batch * sizeof(int));
    char label[64];
    ex_progress pr;
    snprintf(label, sizeof label, "%s features", what);
    ex_progress_start(&pr, label, n, "images");
    for (i = 0; i < n; i += batch) {
        int bs = n - i < batch ? n - i : batch;
        for (b = 0; b < bs; b++) index[b] = i + b;
        ex_check(prg_batch_build(x, NULL, ds, t, index, bs, 0, 0), "batch");
        ex_check(prg_encode_features(net, path, t_span, ncut, cuts, bs, x, f), "encoder");
        for (c = 0; c < ncut; c++)
            memcpy(feat + ((size_t)c * n + i) * d, f + (size_t)c * bs * d, (size_t)bs * d * sizeof(float));
        ex_progress_update(&pr, i + bs);
    }
    prg_free(x); prg_free(f); prg_free(index);
}

static double accuracy(const int32_t *pred, const int32_t *y, int n) {
    int i, c = 0;
    for (i = 0; i < n; i++) c += pred[i] == y[i];
    return (double)c / n;
}

int main(int argc, char **argv) {
    const char *model = NULL, *data = NULL, *test = NULL, *cut_list = NULL, *path_name = NULL, *csv = NULL;
    const char *chart = NULL;
    double cx[MAX_CUTS], cy[2][MAX_CUTS];
    int t_span = 0, batch = 100, limit = 0, test_limit = 0, threads = 0, k = 20, ncut = 0, i, c, d, n, m, path, classes;
    int cuts[MAX_CUTS];
    double temperature = 0.07, t0;
    prg_linear_probe_config pc;
    prg_dataset ds, ts;
    prg_transform te;
    prg_unet *net = NULL;
    const prg_unet_config *cfg;
    prg_st *st;
    float *ftr, *fte, *w, *bias;
    int32_t *pred;
    FILE *out = NULL;

    ex_prog = "probe";
    prg_linear_probe_config_default(&pc);
    ex_argc = argc; ex_argv = argv;
    for (ex_argi = 1; ex_argi < argc; ex_argi++) {
        if (EX_FLAG("--help") || EX_FLAG("-h")) { usage(); return 0; }
        else if (EX_FLAG("--model")) model = ex_val();
        else if (EX_FLAG("--data")) data = ex_val();
        else if (EX_FLAG("--test")) test = ex_val();
        else if (EX_FLAG("--t-span")) t_span = ex_int_in(2, 1024);
        else if (EX_FLAG("--t-cutoff")) cut_list = ex_val();
        else if (EX_FLAG("--path")) path_name = ex_val();
        else if (EX_FLAG("--k")) k = ex_int_in(1, 100000);
        else if (EX_FLAG("--temperature")) temperature = ex_num_in(0, 100, 1);
        else if (EX_FLAG("--epochs")) pc.epochs = ex_int_in(1, 100000);
        else if (EX_FLAG("--lr")) pc.lr = ex_num_in(0, 10, 1);
        else if (EX_FLAG("--wd")) pc.weight_decay = ex_num_in(0, 10, 0);
        else if (EX_FLAG("--probe-batch")) pc.batch = ex_int_in(1, 1 << 20);
        else if (EX_FLAG("--batch")) batch = ex_int_in(1, 65536);
        else if (EX_FLAG("--limit")) limit = ex_int_in(0, INT_MAX);
        else if (EX_FLAG("--test-limit")) test_limit = ex_int_in(0, INT_MAX);
        else if (EX_FLAG("--quiet")) ex_quiet = 1;
        else if (EX_FLAG("--csv")) csv = ex_val();
        else if (EX_FLAG("--chart")) chart = ex_val();
        else if (EX_FLAG("--threads")) threads = ex_int_in(0, 1024);
        else if (EX_FLAG("--seed")) pc.seed = ex_seed();
        else ex_bad_flag();
    }
    if (!model || !data || !test) { usage(); return 2; }
    if (batch < 1 || k < 1 || !(temperature > 0) || pc.epochs < 1 || pc.batch < 1 || !(pc.lr > 0)) {
        fprintf(stderr, "probe: --batch, --k, --temperature, --epochs, --probe-batch and --lr must be positive\n");
        return 2;
    }
    ex_check_input(model, "--model");
    { /* outputs checked before the work, and never one of the inputs */
        const char *outs[2] = {csv, chart}, *oflag[2] = {"--csv", "--chart"};
        for (i = 0; i < 2; i++)
            if (outs[i]) {
                ex_check_writable(outs[i], oflag[i]);
                ex_check_not_input(outs[i], oflag[i], model, "--model");
                ex_check_not_input(outs[i], oflag[i], data, "--data");
                ex_check_not_input(outs[i], oflag[i], test, "--test");
            }
        if (csv && chart) ex_check_not_input(csv, "--csv", chart, "--chart");
    }
    prg_set_num_threads(threads);

    /* the grid and path: flags, else the classifier's metadata, else 32 / icfm */
    ex_check(prg_st_open(&st, model), model);
    if (!t_span && prg_st_metadata(st, "prg.t_span")) {
        int64_t v = ex_meta_i64(model, "prg.t_span", 32);
        if (v < 2 || v > 1024) { /* the --t-span range: a hostile value would run for hours */
            fprintf(stderr, "probe: %s: metadata prg.t_span = %lld is outside 2..1024 (give --t-span)\n", model, (long long)v);
            return 1;
        }
        t_span = (int)v;
    }
    if (!path_name) path_name = prg_st_metadata(st, "prg.path") ? prg_st_metadata(st, "prg.path") : "icfm";
    path = !strcmp(path_name, "icfm") ? PRG_PATH_ICFM : !strcmp(path_name, "gvp") ? PRG_PATH_GVP : -1;
    if (path < 0) {
        fprintf(stderr, "probe: %s must be icfm or gvp, got '%s'\n",
                path_name == prg_st_metadata(st, "prg.path") ? "the model's prg.path" : "--path", path_name);
        prg_st_close(st);
        return 2;
    }
    path_name = path == PRG_PATH_GVP ? "gvp" : "icfm"; /* not the metadata's bytes: they go with st */
    prg_st_close(st);
    if (t_span < 2) t_span = 32;
    if (cut_list) ncut = ex_int_list("--t-cutoff", cut_list, cuts, MAX_CUTS, 0, 1024);
    else /* 4/4, 3/4, 1/2, 1/4 and none of the Euler steps */
        for (i = 4; i >= 0; i--) {
            int s = (t_span - 1) * i / 4, kk = path == PRG_PATH_GVP ? (s == t_span - 1 ? 0 : s + 1) : t_span - 1 - s;
            if (!ncut || cuts[ncut - 1] != kk) cuts[ncut++] = kk;
        }
    for (i = 0; i < ncut; i++)
        if (cuts[i] < 0 || cuts[i] > (path == PRG_PATH_GVP ? t_span : t_span - 1)) {
            fprintf(stderr, "probe: --t-cutoff %d is outside 0..%d for t_span %d on the %s path\n", cuts[i],
                    path == PRG_PATH_GVP ? t_span : t_span - 1, t_span, path_name);
            return 2;
        }

    ex_check(prg_unet_load(&net, model, NULL), model);
    cfg = prg_unet_config_get(net);
    d = prg_feature_dim(net);
    ex_load_data(&ds, data);
    ex_load_data(&ts, test);
    if (ds.c != cfg->in_channels || ts.c != ds.c || ts.h != ds.h || ts.w != ds.w) {
        fprintf(stderr, "probe: the model takes %d channels; training images are %dx%dx%d, test images %dx%dx%d\n",
                cfg->in_channels, ds.c, ds.h, ds.w, ts.c, ts.h, ts.w);
        return 1;
    }
    n = limit > 0 && limit < ds.n ? limit : ds.n;
    m = test_limit > 0 && test_limit < ts.n ? test_limit : ts.n;
    classes = ds.num_classes > ts.num_classes ? ds.num_classes : ts.num_classes;
    ex_transform(&te, 0, 0, ds.c, ds.h, ds.w, cfg->image_size, -1);
    printf("probe: %s, %s path, t_span %d, %d cutoffs, features %d (%dx%dx%d pooled to %dx%d), %d train / %d test "
           "images, cache %.1f MB, %d threads\n", model, path == PRG_PATH_GVP ? "GVP" : "ICFM", t_span, ncut, d,
           cfg->in_channels, cfg->image_size, cfg->image_size, cfg->image_size < 16 ? cfg->image_size : 16,
           cfg->image_size < 16 ? cfg->image_size : 16, n, m,
           (double)ncut * ((double)n + m) * d * sizeof(float) / 1e6, prg_get_num_threads());
    fflush(stdout);
    ftr = (float *)ex_alloc((size_t)ncut * n * d * sizeof(float));
    fte = (float *)ex_alloc((size_t)ncut * m * d * sizeof(float));
    w = (float *)ex_alloc((size_t)classes * d * sizeof(float));
    bias = (float *)ex_alloc((size_t)classes * sizeof(float));
    pred = (int32_t *)ex_alloc((size_t)m * sizeof(int32_t));
    t0 = ex_now();
    encode_set(net, path, t_span, ncut, cuts, &ds, n, &te, batch, ftr, "train");
    encode_set(net, path, t_span, ncut, cuts, &ts, m, &te, batch, fte, "test");
    printf("features in %.1fs\n", ex_now() - t0);
    if (csv) {
        out = ex_text_open(); /* written whole at the end (prg_file_write) */
        fprintf(out, "t_cutoff,steps,knn_top1,linear_top1\n");
    }
    for (c = 0; c < ncut; c++) {
        const float *a = ftr + (size_t)c * n * d, *b = fte + (size_t)c * m * d;
        int steps = path == PRG_PATH_GVP ? (cuts[c] ? cuts[c] - 1 : t_span - 1) : t_span - 1 - cuts[c];
        double knn, lin, loss, p0 = ex_now();
        ex_check(prg_knn_classify(a, ds.labels, n, d, classes, b, m, k, (float)temperature, pred, NULL), "kNN");
        knn = accuracy(pred, ts.labels, m);
        printf("t_cutoff %d (%d Euler steps): knn top-1 %.2f%%  (k %d, T %g, %.1fs)\n", cuts[c], steps, 100 * knn, k,
               temperature, ex_now() - p0);
        fflush(stdout);
        p0 = ex_now();
        ex_check(prg_linear_probe_train(w, bias, a, ds.labels, n, d, classes, &pc, &loss), "linear probe");
        ex_check(prg_linear_probe_predict(pred, NULL, w, bias, b, m, d, classes), "linear probe");
        lin = accuracy(pred, ts.labels, m);
        printf("t_cutoff %d (%d Euler steps): linear top-1 %.2f%%  (%d epochs, lr %g, train loss %.4f, %.1fs)\n", cuts[c],
               steps, 100 * lin, pc.epochs, pc.lr, loss, ex_now() - p0);
        fflush(stdout);
        if (out) fprintf(out, "%d,%d,%.6f,%.6f\n", cuts[c], steps, knn, lin);
        cx[c] = cuts[c];
        cy[0][c] = 100 * knn;
        cy[1][c] = 100 * lin;
    }
    if (chart) {
        prg_chart_series se[2];
        prg_chart ch;
        char kname[32];
        snprintf(kname, sizeof kname, "kNN (k %d)", k);
        se[0].name = kname;
        se[1].name = "linear probe";
        for (i = 1; i < ncut; i++) /* by t_cutoff, so the lines run left to right */
            for (c = i; c > 0 && cx[c - 1] > cx[c]; c--) {
                double t = cx[c]; cx[c] = cx[c - 1]; cx[c - 1] = t;
                t = cy[0][c]; cy[0][c] = cy[0][c - 1]; cy[0][c - 1] = t;
                t = cy[1][c]; cy[1][c] = cy[1][c - 1]; cy[1][c - 1] = t;
            }
        for (i = 0; i < 2; i++) {
            se[i].x = cx;
            se[i].y = cy[i];
            se[i].n = ncut;
        }
        prg_chart_init(&ch, PRG_CHART_LINE, "Probe top-1 along the trajectory", se, 2);
        ch.x_label = path == PRG_PATH_GVP ? "t_cutoff (GVP: steps + 1)" : "t_cutoff (t_span - 1: the input)";
        ch.y_label = "top-1 %";
        ex_check(prg_chart_write(chart, &ch), chart);
        printf("chart -> %s\n", chart);
    }
    if (out && !ex_text_commit(out, csv)) return 1;
    if (out) printf("results -> %s\n", csv);
    prg_free(ftr); prg_free(fte); prg_free(w); prg_free(bias); prg_free(pred);
    prg_unet_free(net); prg_dataset_free(&ds); prg_dataset_free(&ts);
    return 0;
}
