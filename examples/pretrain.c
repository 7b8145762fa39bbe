/* pretrain: flow-matching pretraining of the U-Net generator (docs/METHOD.md D).

     pretrain --data data/mnist/train-images-idx3-ubyte.gz --preset tiny32 --steps 2000 --out unet.safetensors

   Loads any dataset prg_dataset_load understands (IDX(.gz), CIFAR binary,
   .npz), augments it with the reference pipeline (or --no-augment), and
   trains v(t, x) with ICFM / OT-CFM / GVP pairs and Adam (lr 1e-4).  --out
   receives the training checkpoint (U-Net + Adam + RNG + step, and the loss
   with its path as prg.loss / prg.path, which the other programs follow), which
   prg_unet_load reads as a plain U-Net too; --resume continues it bit for
   bit.  Ctrl-C writes the checkpoint and exits. */
#define PRG_IMPLEMENTATION
#include "prg.h"
#include "ex_common.h"
#include "ex_mpi.h"

static void usage(void) {
    printf("usage: pretrain --data PATH [options]\n"
           "Flow-matching pretraining of the PRG U-Net (docs/METHOD.md D).\n"
           "  --data PATH            dataset: IDX(.gz) images file, CIFAR-10/100 .bin, or .npz;\n"
           "                         a comma-separated list is concatenated\n"
           EX_NET_HELP
           "  --init PATH            start from this U-Net (a checkpoint or a converted state dict) and its\n"
           "                         config; a file without a config takes it from the U-Net flags\n"
           "  --loss icfm|ot|gvp     pairs: independent CFM (default), OT-CFM, GVP (diffusion)\n"
           "  --batch N              images per step, 1..65536 (128; at most the dataset's size)\n"
           "  --lr X                 Adam learning rate, in (0, 1] (1e-4)\n"
           "  --steps N | --epochs N training length, 1..1e9 steps or 1..1e6 epochs (default 1 epoch)\n"
           "  --threads N            pool size (0 = all CPUs, default)\n"
           "  --seed N               seed of init, data order, augmentation and noise, 64-bit (0)\n"
           "  --out PATH             checkpoint (pretrain.safetensors); checked writable before training;\n"
           "                         a checkpoint of more steps, or another file, is not replaced without --force;\n"
           "                         the loss vs step goes to OUT-curves.png and OUT-curves.csv (OUT: PATH\n"
           "                         without .safetensors)\n"
           "  --force                replace --out even when it holds a longer run\n"
           "  --ckpt-every N         also write the checkpoint every N steps (0 = only at the end)\n"
           "  --stop-after N         stop after N steps of this run as Ctrl-C does (tests resuming)\n"
           "  --resume               continue from --out bit for bit (refused when --loss, --batch, --lr,\n"
           "                         --seed, the data or the augmentation differ from the checkpoint's)\n"
           "  --override             with --resume: continue with the changed values, listing them\n"
           "  --quiet                no progress lines\n"
           "  --no-augment           only pad/crop + normalise (default: the reference's RandAugment pipeline)\n"
           "  --no-flip              augmentation without the horizontal flip (digits)\n"
           "  --limit N              use the first N images only\n"
           "  --log-every N          progress line every N steps (10)\n"
           "Ctrl-C / SIGTERM write the checkpoint and exit with 130 / 143.\n" EX_MPI_HELP);
}

int main(int argc, char **argv) {
    int stop_after = 0; /* testing: behave as if interrupted after this many steps of this run */
    int64_t run_steps = 0;
    const char *data = NULL, *out = "pretrain.safetensors", *loss_name = "icfm", *init = NULL;
    int batch = 128, threads = 0, ckpt_every = 0, resume = 0, augment = 1, epochs = 0, limit = 0, log_every = 10;
    int force = 0, override = 0, nkv;
    int64_t replace_from = -2; /* a save must reach this step to replace --out (-2: anything goes) */
    ex_params hp;
    float hflip = -1;
    int64_t steps = 0, step = 0;
    double lr = 1e-4;
    uint64_t seed = 0;
    ex_net_flags nf;
    prg_dataset ds;
    prg_transform tr;
    prg_unet_config cfg;
    prg_unet *net = NULL;
    prg_adam *opt = NULL;
    prg_adam_config acfg;
    prg_rng rng;
    int bpe, hw, loss_kind;
    prg_loader_config lc;
    prg_loader *ld = NULL;
    size_t img, dim;
    float *x1, *xt, *target, *t, *v, *dv;
    double t0, c0, ema = 0, seen = 0;
    ex_curves curves;

    ex_prog = "pretrain";
    ex_net_flags_init(&nf, "tiny32");
    ex_argc = argc; ex_argv = argv;
    for (ex_argi = 1; ex_argi < argc; ex_argi++) {
        if (EX_FLAG("--help") || EX_FLAG("-h")) { usage(); return 0; }
        else if (ex_net_flag(&nf)) {}
        else if (EX_FLAG("--data")) data = ex_val();
        else if (EX_FLAG("--init")) init = ex_val();
        else if (EX_FLAG("--loss")) loss_name = ex_val();
        else if (EX_FLAG("--batch")) batch = ex_int_in(1, 65536);
        else if (EX_FLAG("--lr")) lr = ex_num_in(0, 1, 1);
        else if (EX_FLAG("--steps")) steps = ex_i64(1, 1000000000);
        else if (EX_FLAG("--epochs")) epochs = ex_int_in(1, 1000000);
        else if (EX_FLAG("--threads")) threads = ex_int_in(0, 1024);
        else if (EX_FLAG("--seed")) seed = ex_seed();
        else if (EX_FLAG("--out")) out = ex_val();
        else if (EX_FLAG("--force")) force = 1;
        else if (EX_FLAG("--override")) override = 1;
        else if (EX_FLAG("--quiet")) ex_quiet = 1;
        else if (EX_FLAG("--ckpt-every")) ckpt_every = ex_int_in(0, 1000000000);
        else if (EX_FLAG("--resume")) resume = 1;
        else if (EX_FLAG("--stop-after")) stop_after = ex_int_in(0, 1000000000);
        else if (EX_FLAG("--no-augment")) augment = 0;
        else if (EX_FLAG("--no-flip")) hflip = 0;
        else if (EX_FLAG("--limit")) limit = ex_int_in(0, INT_MAX);
        else if (EX_FLAG("--log-every")) log_every = ex_int_in(1, 1000000000);
        else if (ex_mpi_flag()) {}
        else ex_bad_flag();
    }
    if (!data) { usage(); return 2; }
    ex_mpi_init();
    loss_kind = !strcmp(loss_name, "icfm") ? 0 : !strcmp(loss_name, "ot") ? 1 : !strcmp(loss_name, "gvp") ? 2 : -1;
    if (loss_kind < 0) { ex_usage_error("--loss", loss_name, "wants icfm, ot or gvp"); }
    if (steps && epochs) { fprintf(stderr, "pretrain: give --steps or --epochs, not both\n"); return 2; }
    if (override && !resume) { fprintf(stderr, "pretrain: --override goes with --resume\n"); return 2; }
    ex_check_writable(out, "--out");
    if (resume) ex_check_input(out, "--resume: --out");
    prg_set_num_threads(ex_mpi_threads(threads));
    ex_load_data(&ds, data);
    if (limit > 0 && limit < ds.n) ds.n = limit;
    if (ds.n < 1) { fprintf(stderr, "pretrain: --data %s holds no images\n", data); return 1; }
    batch = ex_clamp_batch(batch, ds.n, "--batch");
    if (init) {
        ex_check(prg_unet_load(&net, init, ex_file_config(&cfg, &nf, init)), init);
        cfg = *prg_unet_config_get(net);
        if (cfg.in_channels != ds.c || cfg.out_channels != ds.c) {
            fprintf(stderr, "pretrain: %s maps %d channels to %d, the data has %d\n", init, cfg.in_channels,
                    cfg.out_channels, ds.c);
            return 1;
        }
    } else {
        ex_net_config_data(&cfg, &nf, &ds);
    }
    ex_transform(&tr, 1, augment, ds.c, ds.h, ds.w, cfg.image_size, hflip);
    bpe = (ds.n + batch - 1) / batch;
    if (!steps) steps = (int64_t)(epochs > 0 ? epochs : 1) * bpe;
    if (!resume) replace_from = ex_replace_guard(out, "--out", steps, force);
    ex_mpi_bcast_i64(&replace_from); /* rank 0 writes: its files decide */
    memset(&hp, 0, sizeof hp);
    ex_param(&hp, "run.loss", loss_name);
    ex_param_i(&hp, "run.batch", batch);
    ex_param_f(&hp, "run.lr", lr);
    ex_param_u(&hp, "run.seed", seed);
    ex_param_i(&hp, "run.images", ds.n);
    ex_param_data(&hp, &ds);
    ex_param_i(&hp, "run.augment", augment);
    ex_param_f(&hp, "run.hflip", hflip);
    nkv = ex_params_kv(&hp);

    if (!net) ex_check(prg_unet_create(&net, &cfg, seed), "U-Net");
    /* the loss (and so the path) travels with the checkpoint; --resume refuses another one */
    ex_check(prg_unet_set_loss(net, loss_kind == 0 ? PRG_LOSS_ICFM : loss_kind == 1 ? PRG_LOSS_OT : PRG_LOSS_GVP), "--loss");
    prg_adam_config_default(&acfg);
    ex_check(prg_adam_create(&opt, prg_unet_num_params(net), &acfg), "Adam");
    prg_rng_seed(&rng, seed, 7);
    if (resume) {
        ex_resume_check(out, &hp, override);
        ex_check(prg_train_state_restore(net, NULL, opt, &rng, &step, out), out);
        if (step < 0 || step > steps) {
            fprintf(stderr, "pretrain: %s is at step %lld, outside 0..%lld (--steps): nothing to resume\n", out,
                    (long long)step, (long long)steps);
            return 1;
        }
        printf("resumed %s at step %lld\n", out, (long long)step);
    }
    ex_curves_init(&curves, out, "pretrain: flow-matching loss", resume, step);
    hw = cfg.image_size * cfg.image_size;
    img = (size_t)cfg.in_channels * hw;
    dim = img;
    /* the epochs' batches from the step on (MPI: this rank's part of each) */
    prg_loader_config_default(&lc, batch, seed);
    lc.start_step = (uint64_t)step;
    lc.part = ex_rank;
    lc.parts = ex_ranks;
    ex_check(prg_loader_create(&ld, &ds, &tr, &lc), "data loader");
    x1 = (float *)ex_alloc(img * batch * sizeof(float));
    xt = (float *)ex_alloc(img * batch * sizeof(float));
    target = (float *)ex_alloc(img * batch * sizeof(float));
    v = (float *)ex_alloc(img * batch * sizeof(float));
    dv = (float *)ex_alloc(img * batch * sizeof(float));
    t = (float *)ex_alloc(batch * sizeof(float));
    {
        char cs[512];
        prg_unet_config_format(&cfg, cs, sizeof(cs));
        if (!ex_quiet) printf("pretrain: %d images %dx%dx%d -> %d, %s loss (%s path), %zu params (%s), batch %d, lr %g, %lld steps, %d threads\n",
               ds.n, ds.c, ds.h, ds.w, cfg.image_size, loss_name, prg_path_name(prg_unet_path(net)),
               prg_unet_num_params(net), cs, batch, lr,
               (long long)steps, prg_get_num_threads());
    }
    ex_mpi_blocks(prg_unet_grads(net), prg_unet_params(net), prg_unet_num_params(net), NULL, NULL, 0);
    ex_mpi_hook_on(net, NULL, 1);
    ex_catch_signals();
    t0 = ex_now(); c0 = ex_cpu();
    while (step < steps && !EX_STOPPED) {
        prg_batch bt;
        uint64_t epoch;
        int bs, off, nl;
        double loss, gnorm;
        ex_check(prg_loader_next(ld, &bt), "batch");
        epoch = bt.epoch;
        bs = bt.total; /* MPI: this rank's images are nl from off; the pairs are drawn for all bs */
        off = bt.offset;
        nl = bt.size;
        memcpy(x1 + (size_t)off * dim, bt.x, (size_t)nl * dim * sizeof(float));
        ex_mpi_gather(x1, bs, dim);
        if (loss_kind == 0) prg_flow_icfm_pairs(xt, target, t, NULL, x1, bs, dim, &rng);
        else if (loss_kind == 1) ex_check(prg_flow_ot_pairs(xt, target, t, NULL, x1, bs, dim, &rng), "OT pairs");
        else prg_flow_gvp_pairs(xt, target, t, x1, bs, dim, &rng);
        prg_unet_zero_grad(net);
        ex_mpi_grads_begin();
        loss = 0;
        if (nl > 0) {
            ex_check(prg_unet_forward(net, nl, xt + off * dim, t + off, v), "forward");
            loss = prg_flow_loss_forward_backward(dv, v, target + off * dim, nl, cfg.in_channels, hw);
            if (!(loss == loss) || loss > 1e30) { fprintf(stderr, "%s: loss is not finite at step %lld\n", ex_prog, (long long)step); return 1; }
            ex_mpi_scale(dv, nl * dim, nl, bs);
            ex_check(prg_unet_backward(net, dv, NULL), "backward");
        }
        ex_mpi_grads_end();
        loss = ex_mpi_mean(loss, nl, bs);
        ex_check(prg_adam_step(opt, prg_unet_params(net), prg_unet_grads(net), lr, &gnorm), "Adam step");
        step++;
        seen += bs;
        if (stop_after > 0 && ++run_steps >= stop_after) ex_stop = 1;
        ex_mpi_sync_stop();
        ema = seen == bs ? loss : 0.95 * ema + 0.05 * loss;
        if (!ex_quiet && (step % log_every == 0 || step == steps)) {
            double el = ex_now() - t0, ips = seen / (el > 0 ? el : 1e-9);
            char eta[32];
            ex_fmt_time(eta, sizeof(eta), (double)(steps - step) * batch / ips);
            printf("step %lld/%lld  epoch %llu  loss %.4f (avg %.4f)  |g| %.3g  %.1f img/s  cpu %.0fs  eta %s\n",
                   (long long)step, (long long)steps, (unsigned long long)epoch, loss, ema, gnorm, ips,
                   ex_cpu() - c0, eta);
            fflush(stdout);
            ex_curves_add(&curves, EX_CURVE_LOSS, step, loss);
            ex_curves_add(&curves, EX_CURVE_AVG, step, ema);
            ex_curves_plot(&curves, 0);
        }
        if (ckpt_every > 0 && step % ckpt_every == 0 && step < steps && step >= replace_from && ex_mpi_save_here())
            ex_check(prg_train_state_save_meta(net, NULL, opt, &rng, step, out, hp.kv, nkv), out);
    }
    if (step >= replace_from) {
        if (ex_mpi_save_here()) ex_check(prg_train_state_save_meta(net, NULL, opt, &rng, step, out, hp.kv, nkv), out);
        printf("%s %s at step %lld (%.1fs wall, %.1fs cpu)\n", ex_stop ? "interrupted: saved" : "saved", out,
               (long long)step, ex_now() - t0, ex_cpu() - c0);
    } else {
        printf("%s at step %lld: not saved, %s holds a run of %lld steps (--force replaces it)\n",
               ex_stop > 1 ? "interrupted" : "stopped", (long long)step, out, (long long)replace_from);
    }
    ex_curves_plot(&curves, 1);
    ex_curves_free(&curves);
    prg_adam_free(opt); prg_unet_free(net); prg_dataset_free(&ds);
    prg_loader_free(ld);
    prg_free(x1); prg_free(xt); prg_free(target); prg_free(v); prg_free(dv); prg_free(t);
    ex_mpi_finalize();
    return ex_exit_status();
}
