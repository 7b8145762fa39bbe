/* finetune: turn a pretrained flow-matching U-Net into a classifier (PRG,
   docs/METHOD.md C.2): the reverse ODE (data -> noise, t_span grid, t_cutoff)
   then the head, trained with label-smoothing cross-entropy, AdamW and a
   warm-up + cosine schedule stepped per iteration.

     finetune --init unet.safetensors --data train.gz --test test.gz --epochs 5 --out clf

   writes clf-last.safetensors (classifier + AdamW + RNG + step, resumable
   with --resume) and clf-best.safetensors (the best test top-1 so far);
   both load with prg_classifier_load.  --from-scratch starts the same
   network from a fresh init, --frozen trains only the head (its AdamW state
   then covers the head alone, kept in the same -last file). */
#define PRG_IMPLEMENTATION
#include "prg.h"
#include "ex_common.h"
#include "ex_mpi.h"

static void usage(void) {
    printf("usage: finetune --data TRAIN [--init UNET | --from-scratch] [options]\n"
           "PRG fine-tuning (docs/METHOD.md C.2): reverse ODE + head, label-smoothing CE, AdamW, cosine.\n"
           "  --data PATH            training set (IDX(.gz) images file, CIFAR .bin, .npz; a,b,c concatenates)\n"
           "  --test PATH            test set for evaluation (none: no evaluation)\n"
           "  --init PATH            pretrained U-Net (pretrain's checkpoint or a converted state dict;\n"
           "                         a file without a config takes it from the U-Net flags below)\n"
           "  --from-scratch         fresh U-Net of the same config (--init still gives the config if\n"
           "                         set; else the U-Net flags below)\n"
           EX_NET_HELP
           "  --frozen               only the head trains (U-Net is a fixed feature map)\n"
           "  --grad exact|adjoint   gradient through the ODE (exact: default; adjoint: the reference's)\n"
           "  --keep-mb N            MiB for keeping Euler steps' U-Net activations instead of recomputing\n"
           "                         them in backward (same bits; default 1/4 of RAM; 0: recompute all)\n"
           EX_PATH_HELP
           "  --t-span N             ODE grid points, 2..1024 (32, also when only --t-cutoff is given)\n"
           "  --t-cutoff N           grid points dropped at the noise end, 0..t_span-2 (0)\n"
           "  --label-smoothing X    in [0, 1] (0.1)\n"
           "  --beta X               weight of the flow-matching term added to the loss, in [0, 1000] (0)\n"
           "  --batch N              images per step, 1..65536 (128; at most the dataset's size)\n"
           "  --global-batch N       batch for the lr scaling (default --batch)\n"
           "  --lr X                 peak lr, in (0, 1] (default 1.25e-4 * global_batch / 512); warm-up lr\n"
           "                         and min lr are 1e-3 and 1e-2 times it, as in the reference\n"
           "  --wd X                 AdamW weight decay, in [0, 10] (0.05)\n"
           "  --epochs N             1..1e6 (200)   --warmup-epochs N (5)\n"
           "  --steps N              total steps instead of epochs, 1..1e9 (warm-up: --warmup-steps N, default 5%%)\n"
           "  --eval-every N         evaluate every N epochs (5) and at the end\n");
    printf(
           "  --eval-limit N         evaluate on the first N test images only\n"
           "  --augment MODE         none | light | full (full): full is the reference's recipe (crop, flip,\n"
           "                         RandAugment, random erasing), light only the crop and flip, none\n"
           "                         only pad/crop + normalise\n"
           "  --no-augment           the same as --augment none\n"
           "  --no-flip              augmentation without the horizontal flip (digits)\n"
           "  --limit N              use the first N training images only\n"
           "  --labels-per-class N   fine-tune on N labelled images of each class (after --limit), 1..1e6:\n"
           "                         a stratified subset drawn with --label-seed alone (not --seed), so\n"
           "                         every run of the same data picks the same images; their indices\n"
           "                         and labels go to PREFIX-labels.txt.  A class with fewer is refused\n"
           "  --label-seed N         seed of that draw, 64-bit (0)\n"
           "  --threads N  --seed N (64-bit)  --log-every N (10)  --quiet (no progress lines)\n"
           "  --out PREFIX           writes PREFIX-last.safetensors and PREFIX-best.safetensors (finetune),\n"
           "                         checked writable before training; a -last of more steps, or another\n"
           "                         file, is not replaced without --force; the training loss and test\n"
           "                         top-1 vs step go to PREFIX-curves.png (points in PREFIX-curves.csv)\n"
           "  --force                replace PREFIX-last/-best even when they hold a longer run\n"
           "  --stop-after N         stop after N steps of this run as Ctrl-C does (tests resuming)\n"
           "  --resume               continue PREFIX-last.safetensors bit for bit (refused when the\n"
           "                         hyper-parameters, the grid or the data differ from the checkpoint's)\n"
           "  --override             with --resume: continue with the changed values, listing them\n"
           "Ctrl-C / SIGTERM write PREFIX-last and exit with 130 / 143.\n" EX_MPI_HELP);
}

/* --labels-per-class: keeps per_class images of each class of ds, drawn by
   a shuffle of 0..n-1 seeded with label_seed alone (the same subset for
   every run of the same data), in their dataset order; writes "index label"
   lines to PREFIX-labels.txt.  Exits naming a class that has fewer. */
static void label_subset(prg_dataset *ds, int per_class, uint64_t label_seed, const char *prefix) {
    int *order = (int *)ex_alloc((size_t)ds->n * sizeof(int));
    int *count = (int *)ex_alloc((size_t)ds->num_classes * sizeof(int));
    unsigned char *keep = (unsigned char *)ex_alloc((size_t)ds->n);
    size_t img = (size_t)ds->c * ds->h * ds->w;
    int i, m = 0;
    char path[1024];
    FILE *f;
    prg_rng rng;
    prg_rng_seed(&rng, label_seed, 0x1abe1);
    for (i = 0; i < ds->n; i++) { order[i] = i; keep[i] = 0; }
    for (i = ds->n - 1; i > 0; i--) {
        int j = (int)prg_rng_below(&rng, (uint32_t)i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (i = 0; i < ds->num_classes; i++) count[i] = 0;
    for (i = 0; i < ds->n; i++) {
        int l = ds->labels[order[i]];
        if (count[l] < per_class) { count[l]++; keep[order[i]] = 1; }
    }
    for (i = 0; i < ds->num_classes; i++)
        if (count[i] < per_class) {
            fprintf(stderr, "finetune: --labels-per-class %d: class %d has only %d images in --data%s\n", per_class, i,
                    count[i], " (with --limit: of the first images)");
            exit(1);
        }
    snprintf(path, sizeof path, "%s-labels.txt", prefix);
    f = fopen(ex_rank ? "/dev/null" : path, "w"); /* MPI: rank 0 writes it */
    if (!f) { fprintf(stderr, "finetune: cannot write %s: %s\n", path, strerror(errno)); exit(1); }
    fprintf(f, "# index label: --labels-per-class %d, --label-seed %llu, of %d images\n", per_class,
            (unsigned long long)label_seed, ds->n);
    for (i = 0; i < ds->n; i++)
        if (keep[i]) {
            fprintf(f, "%d %d\n", i, (int)ds->labels[i]);
            if (m != i) {
                memmove(ds->images + (size_t)m * img, ds->images + (size_t)i * img, img);
                ds->labels[m] = ds->labels[i];
            }
            m++;
        }
    if (fclose(f) != 0) { fprintf(stderr, "finetune: cannot write %s: %s\n", path, strerror(errno)); exit(1); }
    printf("finetune: %d labelled images (%d per class of %d, label seed %llu) of %d -> %s\n", m, per_class,
           ds->num_classes, (unsigned long long)label_seed, ds->n, path);
    ds->n = m;
    prg_free(order); prg_free(count); prg_free(keep);
}

typedef struct run_state {
    double best_top1;
    int64_t best_step;
} run_state;

static void write_best(const char *prefix, const run_state *s) {
    char path[1024];
    FILE *f;
    snprintf(path, sizeof(path), "%s-best.txt", prefix);
    f = ex_text_open();
    fprintf(f, "%.6f %lld\n", s->best_top1, (long long)s->best_step);
    if (!ex_text_commit(f, path)) fprintf(stderr, "finetune: warning: the best top-1 was not recorded in %s\n", path);
}

int main(int argc, char **argv) {
    int stop_after = 0; /* testing: behave as if interrupted after this many steps of this run */
    int64_t run_steps = 0;
    const char *data = NULL, *test = NULL, *init = NULL, *prefix = "finetune", *grad = "exact";
    const char *path_flag = NULL, *path_src;
    int path, init_path = -1; /* the path --init records, -1 for none */
    char enc[160];
    int batch = 128, global_batch = 0, threads = 0, from_scratch = 0, frozen = 0, t_span = 32, t_cutoff = 0;
    int epochs = 200, warmup_epochs = 5, eval_every = 5, eval_limit = 0, augment = 1, limit = 0, log_every = 10, resume = 0;
    int force = 0, override = 0, nkv, t_span_given = 0, epochs_given = 0;
    int64_t replace_from = -2; /* a save must reach this step to replace PREFIX-last/-best (-2: anything goes) */
    ex_params hp;
    int64_t steps = 0, warmup_steps = -1, step = 0, total;
    float hflip = -1;
    double lr = 0, wd = 0.05, smoothing = 0.1, beta = 0;
    double keep_mb = -1; /* --keep-mb; unset: the library's default budget */
    uint64_t seed = 0, label_seed = 0;
    int per_class = 0;
    ex_net_flags nf;
    prg_dataset ds, ts;
    prg_transform tr, te;
    prg_unet_config cfg;
    prg_unet *net = NULL;
    prg_classifier *clf = NULL;
    prg_adam *opt = NULL;
    prg_adam_config acfg;
    prg_cosine_schedule sched;
    prg_rng rng;
    run_state st;
    int bpe, k, nblocks;
    prg_loader_config lc;
    prg_loader *ld = NULL;
    size_t nhead, nunet, ntrain, bsz[2];
    float *logits, *dlogits, *bp[2];
    const float *bg[2];
    int flow_term;
    double t0, c0, seen = 0, ema = 0;
    char path_last[1024], path_best[1024];
    ex_curves curves;

    ex_prog = "finetune";
    ex_net_flags_init(&nf, "tiny32");
    memset(&ts, 0, sizeof(ts));
    ex_argc = argc; ex_argv = argv;
    for (ex_argi = 1; ex_argi < argc; ex_argi++) {
        if (EX_FLAG("--help") || EX_FLAG("-h")) { usage(); return 0; }
        else if (ex_net_flag(&nf)) {}
        else if (EX_FLAG("--data")) data = ex_val();
        else if (EX_FLAG("--test")) test = ex_val();
        else if (EX_FLAG("--init")) init = ex_val();
        else if (EX_FLAG("--from-scratch")) from_scratch = 1;
        else if (EX_FLAG("--frozen")) frozen = 1;
        else if (EX_FLAG("--grad")) grad = ex_val();
        else if (EX_FLAG("--keep-mb")) keep_mb = ex_num_in(0, 1e9, 0);
        else if (EX_FLAG("--path")) path_flag = ex_val();
        else if (EX_FLAG("--t-span")) { t_span = ex_int_in(2, 1024); t_span_given = 1; }
        else if (EX_FLAG("--t-cutoff")) t_cutoff = ex_int_in(0, 1022);
        else if (EX_FLAG("--label-smoothing")) smoothing = ex_num_in(0, 1, 0);
        else if (EX_FLAG("--beta")) beta = ex_num_in(0, 1000, 0);
        else if (EX_FLAG("--batch")) batch = ex_int_in(1, 65536);
        else if (EX_FLAG("--global-batch")) global_batch = ex_int_in(1, 1 << 24);
        else if (EX_FLAG("--lr")) lr = ex_num_in(0, 1, 1);
        else if (EX_FLAG("--wd")) wd = ex_num_in(0, 10, 0);
        else if (EX_FLAG("--epochs")) { epochs = ex_int_in(1, 1000000); epochs_given = 1; }
        else if (EX_FLAG("--warmup-epochs")) warmup_epochs = ex_int_in(0, 1000000);
        else if (EX_FLAG("--steps")) steps = ex_i64(1, 1000000000);
        else if (EX_FLAG("--warmup-steps")) warmup_steps = ex_i64(0, 1000000000);
        else if (EX_FLAG("--eval-every")) eval_every = ex_int_in(1, 1000000);
        else if (EX_FLAG("--eval-limit")) eval_limit = ex_int_in(0, INT_MAX);
        else if (EX_FLAG("--no-augment")) augment = 0;
        else if (EX_FLAG("--augment")) {
            const char *a = ex_val();
            if (!strcmp(a, "none")) augment = 0;
            else if (!strcmp(a, "full")) augment = 1;
            else if (!strcmp(a, "light")) augment = 2;
            else ex_usage_error("--augment", a, "wants none, light or full");
        }
        else if (EX_FLAG("--labels-per-class")) per_class = ex_int_in(1, 1000000);
        else if (EX_FLAG("--label-seed")) label_seed = ex_seed();
        else if (EX_FLAG("--no-flip")) hflip = 0;
        else if (EX_FLAG("--limit")) limit = ex_int_in(0, INT_MAX);
        else if (EX_FLAG("--threads")) threads = ex_int_in(0, 1024);
        else if (EX_FLAG("--seed")) seed = ex_seed();
        else if (EX_FLAG("--log-every")) log_every = ex_int_in(1, 1000000000);
        else if (EX_FLAG("--out")) prefix = ex_val();
        else if (EX_FLAG("--resume")) resume = 1;
        else if (EX_FLAG("--force")) force = 1;
        else if (EX_FLAG("--override")) override = 1;
        else if (EX_FLAG("--quiet")) ex_quiet = 1;
        else if (EX_FLAG("--stop-after")) stop_after = ex_int_in(0, 1000000000);
        else if (ex_mpi_flag()) {}
        else ex_bad_flag();
    }
    if (!data || (!init && !from_scratch)) { usage(); return 2; }
    ex_mpi_init();
    if (strcmp(grad, "exact") && strcmp(grad, "adjoint")) ex_usage_error("--grad", grad, "wants exact or adjoint");
    if (t_cutoff > t_span) { /* past the grid on either path (the path's own rule is checked once it is known) */
        fprintf(stderr, "finetune: --t-cutoff %d needs --t-span of at least %d (t_span %d%s leaves no Euler step)\n",
                t_cutoff, t_cutoff + 2, t_span, t_span_given ? "" : ", the default,");
        return 2;
    }
    if (steps && epochs_given) { fprintf(stderr, "finetune: give --steps or --epochs, not both\n"); return 2; }
    if (override && !resume) { fprintf(stderr, "finetune: --override goes with --resume\n"); return 2; }
    if (!*prefix || prefix[strlen(prefix) - 1] == '/') /* "" or "dir/" would write hidden "-last.safetensors" files */
        ex_usage_error("--out", prefix, "wants a file name prefix (e.g. runs/mnist)");
    snprintf(path_last, sizeof(path_last), "%s-last.safetensors", prefix);
    snprintf(path_best, sizeof(path_best), "%s-best.safetensors", prefix);
    ex_check_writable(path_last, "--out");
    ex_check_writable(path_best, "--out");
    if (resume) ex_check_input(path_last, "--resume: --out");
    if (init) ex_check_input(init, "--init");
    prg_set_num_threads(ex_mpi_threads(threads));

    ex_load_data(&ds, data);
    if (limit > 0 && limit < ds.n) ds.n = limit;
    if (ds.n < 1) { fprintf(stderr, "finetune: --data %s holds no images\n", data); exit(1); }
    if (per_class) label_subset(&ds, per_class, label_seed, prefix);
    batch = ex_clamp_batch(batch, ds.n, "--batch");
    if (!global_batch) global_batch = batch;
    if (lr <= 0) lr = 1.25e-4 * global_batch / 512.0;
    if (test) {
        ex_load_data_of(&ts, test, "--test");
        if (ts.n < 1) { fprintf(stderr, "finetune: --test %s holds no images\n", test); exit(1); }
        if (ts.c != ds.c || ts.h != ds.h || ts.w != ds.w) {
            fprintf(stderr, "finetune: test images %dx%dx%d differ from training images %dx%dx%d\n", ts.c, ts.h,
                    ts.w, ds.c, ds.h, ds.w);
            exit(1);
        }
    }
    /* the network: pretrained, or fresh with the pretrained (or flag) config */
    if (init) {
        ex_check(prg_unet_load(&net, init, ex_file_config(&cfg, &nf, init)), init);
        cfg = *prg_unet_config_get(net);
        if (prg_unet_loss(net) != PRG_LOSS_NONE) init_path = prg_unet_path(net); /* --from-scratch keeps it too */
        if (from_scratch) {
            prg_unet_free(net);
            ex_check(prg_unet_create(&net, &cfg, seed + 101), "U-Net");
        }
    } else {
        ex_net_config_data(&cfg, &nf, &ds);
        ex_check(prg_unet_create(&net, &cfg, seed + 101), "U-Net");
    }
    if (cfg.in_channels != ds.c) {
        fprintf(stderr, "finetune: the U-Net takes %d channels, the data has %d\n", cfg.in_channels, ds.c);
        exit(1);
    }
    /* the encoder follows the pretraining's path: the checkpoint's, or --path */
    path = ex_choose_path(init_path, path_flag, init, &path_src);
    if (path_flag && prg_unet_loss(net) == PRG_LOSS_NONE && init && !from_scratch) {
        prg_loss loss; /* a file without it: --path names the pretraining loss, saved with the classifier */
        ex_check(prg_loss_parse(&loss, path_flag), "--path");
        ex_check(prg_unet_set_loss(net, loss), "--path");
    }
    /* the grid's rule is the path's: ICFM t_cutoff <= t_span - 2, GVP t_cutoff 0 or 2..t_span */
    if (path == PRG_PATH_GVP ? (t_cutoff == 1 || t_cutoff > t_span) : t_cutoff > t_span - 2) {
        fprintf(stderr, "finetune: --t-cutoff %d does not fit t_span %d%s on the %s path (path from %s): %s\n", t_cutoff,
                t_span, t_span_given ? "" : " (the default)", prg_path_name(path), path_src,
                path == PRG_PATH_GVP ? "it takes 0 or 2..t_span (K - 1 Euler steps from model time 0)"
                                     : "it takes 0..t_span - 2 (t_span - 1 - K Euler steps), so --t-span of at least t_cutoff + 2");
        exit(2);
    }
    /* the head has the training set's classes; the test set must fit them */
    k = ds.num_classes;
    if (k < 2) { /* one class: every prediction is right, the run would report 100% */
        fprintf(stderr, "finetune: --data %s has %d class%s (labels all %d); a classifier needs 2 or more\n", data, k,
                k == 1 ? "" : "es", k - 1);
        exit(1);
    }
    if (test) {
        ex_labels_fit(&ts, k, test, data);
        ex_same_classes(ds.class_names, ds.num_classes, data, ts.class_names, ts.num_classes, test);
    }
    if (!ex_quiet) ex_print_classes(data, k, ds.class_names);
    /* t_cutoff 0 fits both paths; the grid is checked against the chosen one */
    ex_check(prg_classifier_create(&clf, net, k, t_span, 0, seed + 202), "classifier");
    ex_check(prg_classifier_set_path(clf, path), "--path");
    ex_check(prg_classifier_set_grid(clf, t_span, t_cutoff), "--t-span / --t-cutoff");
    if (ds.class_names) ex_check(prg_classifier_set_class_names(clf, (const char *const *)ds.class_names, k), "class names");
    ex_encoder_desc(enc, sizeof(enc), clf);
    ex_check(prg_classifier_set_grad_mode(clf, frozen ? PRG_GRAD_FROZEN : !strcmp(grad, "exact") ? PRG_GRAD_EXACT
                                                                                                   : PRG_GRAD_ADJOINT),
             "grad mode");
    if (keep_mb >= 0) prg_classifier_set_memory_budget(clf, (size_t)(keep_mb * 1048576.0));
    ex_transform(&tr, 1, augment, ds.c, ds.h, ds.w, cfg.image_size, hflip);
    if (augment == 2) { tr.ra_ops = 0; tr.erase_prob = 0; } /* light: crop and flip only */
    ex_transform(&te, 0, 0, ds.c, ds.h, ds.w, cfg.image_size, hflip);
    prg_classifier_head_params(clf, &nhead);
    nunet = prg_unet_num_params(net);

    prg_adam_config_default(&acfg);
    acfg.decoupled = 1;
    acfg.weight_decay = wd;
    /* frozen: the optimizer covers the head only, so weight decay leaves the U-Net alone
       (its state is then the head's alone in the checkpoint) */
    nblocks = prg_classifier_param_blocks(clf, bp, bg, bsz, &ntrain);
    ex_check(prg_adam_create(&opt, ntrain, &acfg), "AdamW");

    bpe = (ds.n + batch - 1) / batch;
    total = steps > 0 ? steps : (int64_t)epochs * bpe;
    if (warmup_steps < 0) warmup_steps = steps > 0 ? steps / 20 : (int64_t)warmup_epochs * bpe;
    if (warmup_steps >= total) warmup_steps = total > 1 ? total - 1 : 0;
    sched.base_lr = lr;
    sched.warmup_lr = lr * 1e-3;
    sched.min_lr = lr * 1e-2;
    sched.warmup_steps = warmup_steps;
    sched.total_steps = total;
    if (!resume) replace_from = ex_replace_guard(path_last, "--out", total, force);
    ex_mpi_bcast_i64(&replace_from); /* rank 0 writes: its files decide */
    memset(&hp, 0, sizeof hp);
    ex_param_i(&hp, "run.batch", batch);
    ex_param_i(&hp, "run.global_batch", global_batch);
    ex_param_f(&hp, "run.lr", lr);
    ex_param_f(&hp, "run.wd", wd);
    ex_param_f(&hp, "run.label_smoothing", smoothing);
    ex_param_f(&hp, "run.beta", beta);
    ex_param_u(&hp, "run.seed", seed);
    ex_param(&hp, "run.grad", frozen ? "frozen" : grad);
    ex_param_i(&hp, "run.steps", total);
    ex_param_i(&hp, "run.warmup_steps", warmup_steps);
    ex_param_i(&hp, "run.images", ds.n);
    ex_param_data(&hp, &ds);
    ex_param_i(&hp, "run.augment", augment);
    if (per_class) { /* recorded only when set, so that older checkpoints still resume */
        ex_param_i(&hp, "run.labels_per_class", per_class);
        ex_param_u(&hp, "run.label_seed", label_seed);
    }
    ex_param_f(&hp, "run.hflip", hflip);
    ex_param_i(&hp, "prg.t_span", t_span);
    ex_param_i(&hp, "prg.t_cutoff", t_cutoff);
    nkv = ex_params_kv(&hp);

    prg_rng_seed(&rng, seed, 11);
    st.best_top1 = -1;
    st.best_step = -1;
    if (resume) {
        char bp[1024];
        FILE *f;
        ex_resume_check(path_last, &hp, override);
        ex_check(prg_train_state_restore(NULL, clf, opt, &rng, &step, path_last), path_last);
        if (step < 0 || step > total) {
            fprintf(stderr, "finetune: %s is at step %lld, outside 0..%lld (the run's steps): nothing to resume\n",
                    path_last, (long long)step, (long long)total);
            exit(1);
        }
        snprintf(bp, sizeof(bp), "%s-best.txt", prefix);
        f = fopen(bp, "r");
        if (f) {
            long long bs;
            if (fscanf(f, "%lf %lld", &st.best_top1, &bs) == 2) st.best_step = bs;
            fclose(f);
        }
        printf("resumed %s at step %lld (best top-1 %.4f)\n", path_last, (long long)step, st.best_top1);
    }
    ex_curves_init(&curves, prefix, "finetune: loss and test top-1", resume, step);

    /* the epochs' batches from the step on (MPI: this rank's part of each) */
    prg_loader_config_default(&lc, batch, seed);
    lc.start_step = (uint64_t)step;
    lc.part = ex_rank;
    lc.parts = ex_ranks;
    ex_check(prg_loader_create(&ld, &ds, &tr, &lc), "data loader");
    logits = (float *)ex_alloc((size_t)batch * k * sizeof(float));
    dlogits = (float *)ex_alloc((size_t)batch * k * sizeof(float));
    flow_term = beta != 0 && !frozen;
    if (!ex_quiet) printf("finetune: %s U-Net (%zu params) + head (%zu), %d classes, %s (path from %s), "
           "grad %s, batch %d, lr %g (warm-up %lld steps), wd %g, smoothing %g, beta %g, %lld steps (%d/epoch), %d threads\n",
           init && !from_scratch ? "pretrained" : "fresh", nunet, nhead, k, enc, path_src,
           frozen ? "frozen" : grad, batch, lr, (long long)warmup_steps, wd,
           smoothing, beta, (long long)total, bpe, prg_get_num_threads());
    fflush(stdout);
    ex_mpi_blocks(frozen ? NULL : prg_unet_grads(net), prg_unet_params(net), nunet,
                  prg_classifier_head_grads(clf, NULL), prg_classifier_head_params(clf, NULL), nhead);
    ex_mpi_hook_on(net, clf, !flow_term); /* the flow term adds to the U-Net gradients after the backward */
    ex_catch_signals();
    t0 = ex_now(); c0 = ex_cpu();
    for (;;) {
        int end = step >= total || EX_STOPPED;
        /* evaluate every eval_every epochs (at epoch boundaries) and at the end */
        if (test && ((step > 0 && step % ((int64_t)eval_every * bpe) == 0) || (end && !EX_STOPPED))) {
            double top1, top5, e0 = ex_now();
            ex_evaluate(clf, &ts, &te, batch, &top1, &top5, NULL, eval_limit);
            if (!ex_quiet) printf("eval step %lld epoch %.2f: top-1 %.2f%%  top-5 %.2f%%  (%.1fs)\n", (long long)step,
                   (double)step / bpe, 100 * top1, 100 * top5, ex_now() - e0);
            fflush(stdout);
            ex_curves_add(&curves, EX_CURVE_TOP1, step, 100 * top1);
            ex_curves_plot(&curves, 1);
            if (top1 > st.best_top1 && step >= replace_from) {
                st.best_top1 = top1;
                st.best_step = step;
                if (ex_mpi_save_here()) {
                    ex_check(prg_classifier_save(clf, path_best), path_best);
                    write_best(prefix, &st);
                }
            }
        }
        if (end) break;
        {
            prg_batch bt;
            int bs, nl;
            const float *x;
            const int32_t *y;
            double loss = 0, gnorm, lr_now = prg_cosine_schedule_step_lr(&sched, step), fm = 0;
            prg_result r;
            ex_check(prg_loader_next(ld, &bt), "batch");
            bs = bt.total; /* MPI: this rank's part of the batch is nl images */
            nl = bt.size;
            x = bt.x;
            y = bt.y;
            prg_classifier_zero_grad(clf);
            ex_mpi_grads_begin();
            if (nl > 0) {
                ex_check(prg_classifier_forward(clf, nl, x, logits), "forward");
                loss = prg_cross_entropy_forward_backward(dlogits, logits, (const int *)y, nl, k, (float)smoothing);
                ex_mpi_scale(dlogits, (size_t)nl * k, nl, bs);
                ex_check(prg_classifier_backward(clf, dlogits), "backward");
            }
            if (flow_term) { /* + beta * flow-matching loss on the same batch */
                float fmf = 0;
                prg_rng own, *fr = ex_mpi_rank_rng(&rng, &own);
                if (nl > 0)
                    ex_check(prg_classifier_flow_loss(clf, nl, x, (float)(beta * nl / bs), fr, &fmf), "flow-matching term");
                fm = fmf;
                loss += beta * fm;
            }
            ex_mpi_grads_end();
            loss = ex_mpi_mean(loss, nl, bs);
            r = prg_adam_step_blocks(opt, nblocks, bp, bg, bsz, lr_now, &gnorm);
            ex_check(r, "AdamW step");
            step++;
            seen += bs;
            if (stop_after > 0 && ++run_steps >= stop_after) ex_stop = 1;
            ex_mpi_sync_stop();
            ema = seen == bs ? loss : 0.95 * ema + 0.05 * loss;
            if (!ex_quiet && (step % log_every == 0 || step == total)) {
                double el = ex_now() - t0, ips = seen / (el > 0 ? el : 1e-9);
                char eta[32];
                ex_fmt_time(eta, sizeof(eta), (double)(total - step) * batch / ips);
                printf("step %lld/%lld  epoch %.2f  loss %.4f (avg %.4f)%s  lr %.3g  |g| %.3g  %.1f img/s  cpu %.0fs  eta %s\n",
                       (long long)step, (long long)total, (double)step / bpe, loss, ema, flow_term ? " (incl. beta*fm)" : "",
                       lr_now, gnorm, ips, ex_cpu() - c0, eta);
                fflush(stdout);
                ex_curves_add(&curves, EX_CURVE_LOSS, step, loss);
                ex_curves_add(&curves, EX_CURVE_AVG, step, ema);
                ex_curves_plot(&curves, 0);
            }
            if ((step % bpe == 0 || step == total) && step >= replace_from && ex_mpi_save_here())
                ex_check(prg_train_state_save_meta(NULL, clf, opt, &rng, step, path_last, hp.kv, nkv), path_last);
        }
    }
    if (st.best_step >= 0)
        printf("best top-1 %.2f%% at step %lld -> %s\n", 100 * st.best_top1, (long long)st.best_step, path_best);
    if (step >= replace_from) {
        if (ex_mpi_save_here()) ex_check(prg_train_state_save_meta(NULL, clf, opt, &rng, step, path_last, hp.kv, nkv), path_last);
        printf("%s %s at step %lld (%.1fs wall, %.1fs cpu)\n", ex_stop ? "interrupted: saved" : "saved", path_last,
               (long long)step, ex_now() - t0, ex_cpu() - c0);
    } else {
        printf("%s at step %lld: not saved, %s holds a run of %lld steps (--force replaces it)\n",
               ex_stop > 1 ? "interrupted" : "stopped", (long long)step, path_last, (long long)replace_from);
    }
    ex_curves_plot(&curves, 1);
    ex_curves_free(&curves);
    prg_adam_free(opt); prg_classifier_free(clf); prg_dataset_free(&ds); prg_dataset_free(&ts);
    prg_loader_free(ld);
    prg_free(logits); prg_free(dlogits);
    ex_mpi_finalize();
    return ex_exit_status();
}
