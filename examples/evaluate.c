/* evaluate: top-1 / top-5 of a classifier checkpoint on a test set, and the
   confusion matrix as CSV (rows = true class, columns = predicted class).

     evaluate --model finetune-best.safetensors --data t10k-images-idx3-ubyte.gz --csv confusion.csv */
#define PRG_IMPLEMENTATION
#include "prg.h"
#include "ex_common.h"

static void usage(void) {
    printf("usage: evaluate --model CLASSIFIER --data TEST [options]\n"
           "Top-1 / top-5 accuracy of a fine-tuned PRG classifier, and its confusion matrix.\n"
           "  --model PATH     classifier checkpoint (finetune's -best / -last file)\n"
           "  --data PATH      test set (IDX(.gz) images file, CIFAR .bin, .npz)\n"
           "  --csv PATH       write the confusion matrix (rows: true, columns: predicted;\n"
           "                   headed by the class names the checkpoint holds, else numbers);\n"
           "                   checked writable before evaluating\n"
           "  --t-span N --t-cutoff N   evaluate on another ODE grid (default: the checkpoint's; either\n"
           "                   alone keeps the checkpoint's other value)\n"
           "  --path NAME      encoder path icfm|ot|gvp (default: the checkpoint's; none recorded: icfm)\n"
           "  --batch N (100, 1..65536)  --limit N (first N images)  --threads N (0 = all)\n"
           "  --quiet          no progress lines\n"
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

    ex_prog = "evaluate";
    ex_net_flags_init(&nf, "tiny32");
    ex_argc = argc; ex_argv = argv;
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
        else ex_bad_flag();
    }
    if (!model || !data) { usage(); return 2; }
    ex_check_input(model, "--model");
    if (csv) {
        ex_check_writable(csv, "--csv");
        ex_check_not_input(csv, "--csv", model, "--model");
        ex_check_not_input(csv, "--csv", data, "--data");
    }
    prg_set_num_threads(threads);
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
        ex_check(prg_classifier_set_grid(clf, s, c), "--t-span / --t-cutoff");
    }
    ex_encoder_desc(enc, sizeof(enc), clf);
    printf("%s: %s (path from %s)\n", model, enc, path_src);
    ex_load_data(&ds, data);
    if (ds.n < 1) { fprintf(stderr, "evaluate: --data %s holds no images\n", data); return 1; }
    cfg = prg_unet_config_get(prg_classifier_unet(clf));
    k = prg_classifier_num_classes(clf);
    if (cfg->in_channels != ds.c) {
        fprintf(stderr, "evaluate: the model takes %d channels, the data has %d\n", cfg->in_channels, ds.c);
        return 1;
    }
    ex_labels_fit(&ds, k, data, model);
    {
        const char **mn = (const char **)ex_alloc((size_t)k * sizeof(char *));
        for (i = 0; i < k; i++) mn[i] = prg_classifier_class_name(clf, i);
        ex_print_classes(model, k, mn[0] ? (char *const *)mn : NULL);
        if (mn[0]) ex_same_classes((char *const *)mn, k, model, ds.class_names, ds.num_classes, data);
        prg_free((void *)mn);
    }
    ex_transform(&te, 0, 0, ds.c, ds.h, ds.w, cfg->image_size, -1);
    conf = (int64_t *)ex_alloc((size_t)k * k * sizeof(int64_t));
    t0 = ex_now(); c0 = ex_cpu();
    ex_evaluate(clf, &ds, &te, batch, &top1, &top5, conf, limit);
    printf("%s on %s (%d images): top-1 %.2f%%  top-5 %.2f%%  (%.1fs wall, %.1fs cpu)\n", model, data,
           limit > 0 && limit < ds.n ? limit : ds.n, 100 * top1, 100 * top5, ex_now() - t0, ex_cpu() - c0);
    if (csv) {
        FILE *f = fopen(csv, "w");
        if (!f) { fprintf(stderr, "evaluate: cannot write %s: %s\n", csv, strerror(errno)); return 1; }
        fprintf(f, "true\\pred");
        for (j = 0; j < k; j++) ex_csv_class(f, ",", j, prg_classifier_class_name(clf, j));
        fprintf(f, "\n");
        for (i = 0; i < k; i++) {
            ex_csv_class(f, "", i, prg_classifier_class_name(clf, i));
            for (j = 0; j < k; j++) fprintf(f, ",%lld", (long long)conf[(size_t)i * k + j]);
            fprintf(f, "\n");
        }
        if (fclose(f)) { fprintf(stderr, "evaluate: cannot write %s\n", csv); return 1; }
        printf("confusion matrix -> %s\n", csv);
    }
    prg_free(conf); prg_classifier_free(clf); prg_dataset_free(&ds);
    return 0;
}
