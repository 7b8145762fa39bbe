/* train_mpi.c - data-parallel PRG training over MPI: flow-matching (ICFM)
   pretraining of the U-Net, and fine-tuning of the classifier (U-Net + head).

   Build: mpicc -O2 -std=c99 -I. -o build/train_mpi examples/train_mpi.c -lm -pthread
   Run:   mpirun -np 2 build/train_mpi --mode pretrain --steps 100 --batch 8
   See --help.

   Data parallelism, exactly:
   - Global batch G (--batch per rank times the number of ranks P, or
     --global-batch).  Step s of the run takes positions [k*G, (k+1)*G) of the
     epoch's seeded permutation of the dataset (k = s mod iters_per_epoch,
     drop-last).  Rank r takes the contiguous part [off_r, off_r + n_r) of it,
     n_r = G/P (+1 for the first G mod P ranks), so the union of the local
     batches in rank order IS the batch of a single process with batch G.
   - Augmentation draws come from prg_data_rng(seed, epoch, dataset index), and
     the ICFM noise and times of global position j at step s from the stream
     prg_rng_seed(seed ^ (s+1)*golden, j), one stream per sample: every sample
     sees the same random numbers whatever P is.
   - Each loss is a mean over the global batch.  The library's losses return
     the mean over the n_r local samples and SET d loss / d output for that
     mean, so the example multiplies that output gradient by n_r / G before
     backward (backward is linear in it; for equal shards n_r / G = 1/P, a power
     of two for P = 2, 4, ... and then exact in float).  The local parameter
     gradients are then the local terms of the global mean, and a SUM allreduce
     of the gradient blocks (U-Net block; for the classifier also the head
     block) gives the gradient of the global mean.
   - Every rank takes the same Adam step on the same summed gradient, so the
     weights stay identical; --check-every N verifies that with a CRC-32 of the
     parameters (MIN and MAX allreduced) every N steps.
   - Rank 0 logs and writes checkpoints (prg_checkpoint_save).
   The only difference from one process is the order of the floating-point
   sums over the batch (inside backward vs. across ranks in the allreduce). */
#define PRG_IMPLEMENTATION
#include "prg.h"
#include "ex_common.h"
#include <mpi.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct opts {
    int pretrain;                /* 1: ICFM pretraining, 0: classifier fine-tuning */
    const char *data, *init, *resume, *checkpoint, *compare_a, *compare_b;
    int steps, batch, global_batch, image_size, threads, check_every, log_every, save_every;
    int t_span, t_cutoff, grad_mode;
    double lr, smoothing, weight_decay;
    uint64_t seed;
    prg_unet_config cfg;
} opts;

static void usage(void) {
    printf(
        "usage: mpirun -np P train_mpi [options]      (or train_mpi alone: P = 1)\n"
        "Data-parallel PRG training: each rank builds its contiguous part of every global\n"
        "batch, gradients are summed with MPI_Allreduce, every rank takes the same Adam step.\n"
        "  --mode pretrain|finetune   ICFM flow matching of the U-Net, or the classifier (pretrain)\n"
        "  --data PATH                dataset (default data/mnist/train-images-idx3-ubyte.gz)\n"
        "  --steps N                  optimizer steps, 1..1e9 (10)\n"
        "  --batch B                  images per rank per step, 1..65536 (8); global batch G = B * P\n"
        "  --global-batch G           the global batch instead (shards differ by at most 1)\n"
        "  --image-size 32|16|...     32: 28x28 padded by 2; other sizes: bicubic resize (32)\n"
        "  --model-channels C         U-Net base width (32); --res-blocks R (1)\n"
        "  --channel-mult 1,2         width multipliers per level (1,2)\n"
        "  --attention-ds LIST        downsample rates with attention, 0 for none (2)\n"
        "  --heads H                  attention heads (1); --groups G GroupNorm groups (32)\n"
        "  --init PATH                finetune: start from this U-Net or training checkpoint (a plain\n"
        "                             state_dict file takes its config from the U-Net flags)\n"
        "  --resume PATH              continue a run from its training checkpoint (same options;\n"
        "                             batches and noise follow the step, so it continues exactly)\n"
        "  --t-span N --t-cutoff K    finetune: encoder grid (4, 0)\n"
        "  --grad exact|adjoint|frozen  finetune: how backward treats the ODE (exact)\n"
        "  --smoothing S              finetune: label smoothing (0.1)\n"
        "  --lr X                     constant learning rate in (0, 1]; default pretrain 1e-4 (Adam),\n"
        "                             finetune the reference warmup+cosine for G (AdamW)\n"
        "  --weight-decay W           finetune AdamW weight decay (0.05)\n"
        "  --seed S                   (0, 64-bit)\n"
        "  --threads T                pool threads per rank; default: online CPUs / ranks on the node\n"
        "  --checkpoint PATH          rank 0 writes a training checkpoint here at the end\n"
        "  --save-every N             ... and every N steps (0)\n"
        "  --check-every N            debug: check every N steps that all ranks hold the same weights (0)\n"
        "  --log-every N              (1)\n"
        "  --compare A B              print the largest |difference| of the model tensors of two\n"
        "                             checkpoints (optimizer moments excluded) and exit\n");
}

/* v, a whole integer in lo..hi, into *dst: 1, else 0 */
static int int_in(const char *v, int lo, int hi, int *dst) {
    int64_t x = 0;
    if (!ex_is_i64(v, lo, hi, &x)) return 0;
    *dst = (int)x;
    return 1;
}

static int parse_args(opts *o, int argc, char **argv, int rank) {
    int i, ok = 1;
    memset(o, 0, sizeof *o);
    o->pretrain = 1;
    o->data = "data/mnist/train-images-idx3-ubyte.gz";
    o->steps = 10;
    o->batch = 8;
    o->image_size = 32;
    o->threads = -1;
    o->log_every = 1;
    o->t_span = 4;
    o->lr = -1.0;
    o->smoothing = 0.1;
    o->weight_decay = 0.05;
    o->grad_mode = PRG_GRAD_EXACT;
    if (prg_unet_config_preset(&o->cfg, "tiny32") != PRG_OK) return 0;
    o->cfg.in_channels = o->cfg.out_channels = 1;
    o->cfg.num_levels = 2;
    o->cfg.channel_mult[0] = 1;
    o->cfg.channel_mult[1] = 2;
    o->cfg.num_attention = 1;
    o->cfg.attention_ds[0] = 2;
    o->cfg.num_heads = 1;
    for (i = 1; i < argc && ok; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            if (rank == 0) usage();
            return -1;
        }
        if (!v) {
            if (rank == 0) fprintf(stderr, "train_mpi: option %s needs a value (see --help)\n", a);
            return 0;
        }
        i++;
        if (!strcmp(a, "--mode")) {
            if (!strcmp(v, "pretrain")) o->pretrain = 1;
            else if (!strcmp(v, "finetune")) o->pretrain = 0;
            else ok = 0;
        } else if (!strcmp(a, "--data")) o->data = v;
        else if (!strcmp(a, "--steps")) ok = int_in(v, 1, 1000000000, &o->steps);
        else if (!strcmp(a, "--batch")) ok = int_in(v, 1, 65536, &o->batch);
        else if (!strcmp(a, "--global-batch")) ok = int_in(v, 1, 1 << 24, &o->global_batch);
        else if (!strcmp(a, "--image-size")) ok = int_in(v, 4, 1024, &o->image_size);
        else if (!strcmp(a, "--model-channels")) ok = int_in(v, 1, 4096, &o->cfg.model_channels);
        else if (!strcmp(a, "--res-blocks")) ok = int_in(v, 1, 16, &o->cfg.num_res_blocks);
        else if (!strcmp(a, "--channel-mult")) ok = (o->cfg.num_levels = ex_is_int_list(v, o->cfg.channel_mult, PRG_UNET_MAX_LEVELS, 1, 64)) > 0;
        else if (!strcmp(a, "--attention-ds")) {
            o->cfg.num_attention = ex_is_int_list(v, o->cfg.attention_ds, PRG_UNET_MAX_LEVELS, 0, 1 << 20);
            ok = o->cfg.num_attention >= 0;
            if (ok && o->cfg.num_attention == 1 && o->cfg.attention_ds[0] == 0) o->cfg.num_attention = 0;
        } else if (!strcmp(a, "--heads")) ok = int_in(v, 1, 256, &o->cfg.num_heads);
        else if (!strcmp(a, "--groups")) ok = int_in(v, 1, 1024, &o->cfg.groups);
        else if (!strcmp(a, "--init")) o->init = v;
        else if (!strcmp(a, "--resume")) o->resume = v;
        else if (!strcmp(a, "--t-span")) ok = int_in(v, 2, 1024, &o->t_span);
        else if (!strcmp(a, "--t-cutoff")) ok = int_in(v, 0, 1022, &o->t_cutoff);
        else if (!strcmp(a, "--grad")) {
            if (!strcmp(v, "exact")) o->grad_mode = PRG_GRAD_EXACT;
            else if (!strcmp(v, "adjoint")) o->grad_mode = PRG_GRAD_ADJOINT;
            else if (!strcmp(v, "frozen")) o->grad_mode = PRG_GRAD_FROZEN;
            else ok = 0;
        } else if (!strcmp(a, "--smoothing")) ok = ex_is_num(v, 0, 1, 0, &o->smoothing);
        else if (!strcmp(a, "--lr")) ok = ex_is_num(v, 0, 1, 1, &o->lr);
        else if (!strcmp(a, "--weight-decay")) ok = ex_is_num(v, 0, 10, 0, &o->weight_decay);
        else if (!strcmp(a, "--seed")) ok = ex_is_u64(v, &o->seed);
        else if (!strcmp(a, "--threads")) ok = int_in(v, 0, 1024, &o->threads);
        else if (!strcmp(a, "--checkpoint")) o->checkpoint = v;
        else if (!strcmp(a, "--save-every")) ok = int_in(v, 0, 1000000000, &o->save_every);
        else if (!strcmp(a, "--check-every")) ok = int_in(v, 0, 1000000000, &o->check_every);
        else if (!strcmp(a, "--log-every")) ok = int_in(v, 1, 1000000000, &o->log_every);
        else if (!strcmp(a, "--compare")) {
            o->compare_a = v;
            o->compare_b = i + 1 < argc ? argv[++i] : NULL;
            ok = o->compare_b != NULL;
        } else ok = 0;
        if (!ok && rank == 0) fprintf(stderr, "train_mpi: %s '%s': unknown option or a value out of range (see --help)\n", a, v);
    }
    o->cfg.image_size = o->image_size;
    return ok;
}

/* ---- --compare: max |a - b| over the model tensors of two checkpoints ---- */
static int compare_checkpoints(const char *pa, const char *pb) {
    prg_st *a = NULL, *b = NULL;
    double maxd = 0.0, maxabs = 0.0;
    const char *worst = "";
    int i, n, rc = 1, compared = 0;
    float *xa = NULL, *xb = NULL;
    if (prg_safetensors_open(&a, pa) != PRG_OK || prg_safetensors_open(&b, pb) != PRG_OK) {
        fprintf(stderr, "train_mpi: %s\n", prg_last_error());
        goto done;
    }
    n = prg_st_count(a);
    for (i = 0; i < n; i++) {
        const prg_st_info *ia = prg_st_info_at(a, i);
        prg_st_info ib;
        size_t k;
        if (!strncmp(ia->name, "optim.", 6) || ia->dtype != PRG_DT_F32) continue;
        if (prg_st_find(b, ia->name, &ib) != PRG_OK || ib.count != ia->count) {
            fprintf(stderr, "train_mpi: %s: tensor %s missing or of another size in %s\n", pa, ia->name, pb);
            goto done;
        }
        xa = (float *)prg_alloc(ia->count * sizeof(float));
        xb = (float *)prg_alloc(ia->count * sizeof(float));
        if (!xa || !xb || prg_st_read_f32(a, ia->name, xa, ia->count, 0) != PRG_OK ||
            prg_st_read_f32(b, ia->name, xb, ia->count, 0) != PRG_OK) {
            fprintf(stderr, "train_mpi: %s\n", xa && xb ? prg_last_error() : "out of memory");
            goto done;
        }
        for (k = 0; k < ia->count; k++) {
            double d = fabs((double)xa[k] - xb[k]);
            if (d != d) d = INFINITY;
            if (d > maxd) { maxd = d; worst = ia->name; }
            if (fabs(xa[k]) > maxabs) maxabs = fabs(xa[k]);
        }
        prg_free(xa); prg_free(xb); xa = xb = NULL;
        compared++;
    }
    printf("compare: %d tensors, max |diff| %.3e (in %s), max |weight| %.3e\n", compared, maxd, worst, maxabs);
    rc = compared > 0 ? 0 : 1;
done:
    prg_free(xa); prg_free(xb);
    if (a) prg_st_close(a);
    if (b) prg_st_close(b);
    return rc;
}

/* ---- training ---------------------------------------------------------------- */

/* Sums a float block over all ranks, in place, in pieces that fit an int count. */
static void allreduce_sum(float *x, size_t n) {
    while (n > 0) {
        int k = n > (size_t)(INT_MAX / 2) ? INT_MAX / 2 : (int)n;
        MPI_Allreduce(MPI_IN_PLACE, x, k, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        x += k;
        n -= (size_t)k;
    }
}

static void epoch_permutation(int *perm, int n, uint64_t seed, uint64_t epoch) {
    prg_rng r;
    int i;
    prg_rng_seed(&r, seed, 0x5045524d00000000ull + epoch); /* "PERM" + epoch */
    for (i = 0; i < n; i++) perm[i] = i;
    for (i = n - 1; i > 0; i--) {
        int j = (int)prg_rng_below(&r, (uint32_t)i + 1), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

static int fail(int rank, const char *what) {
    fprintf(stderr, "train_mpi[%d]: %s: %s\n", rank, what, prg_last_error());
    MPI_Abort(MPI_COMM_WORLD, 1);
    return 1;
}

int main(int argc, char **argv) {
    opts o;
    int rank, nranks, local_ranks, a, nloc, off, G, ipe, K = 0, ok;
    prg_dataset ds;
    prg_transform tf;
    prg_unet *net = NULL;
    prg_classifier *clf = NULL;
    prg_adam *opt = NULL;
    prg_adam_config acfg;
    prg_cosine_schedule sched;
    float *x = NULL, *xt = NULL, *tg = NULL, *tt = NULL, *v = NULL, *dv = NULL, *logits = NULL, *dlog = NULL;
    int32_t *y = NULL;
    int *labels = NULL, *perm = NULL, *index = NULL;
    float *pblk[2], *gblk[2];
    size_t sz[2], dim;
    int nblocks, step, first, rc = 0;
    double t_start, t_comp = 0.0, t_comm = 0.0;
    MPI_Comm node;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    ok = parse_args(&o, argc, argv, rank);
    if (ok <= 0) {
        MPI_Finalize();
        return ok < 0 ? 0 : 2;
    }
    if (o.compare_a) {
        if (rank == 0) rc = compare_checkpoints(o.compare_a, o.compare_b);
        MPI_Finalize();
        return rc;
    }

    /* threads: the node's CPUs shared among the ranks on the node */
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
    MPI_Comm_size(node, &local_ranks);
    MPI_Comm_free(&node);
    if (o.threads < 0) {
        prg_set_num_threads(0);
        o.threads = prg_get_num_threads() / local_ranks;
        if (o.threads < 1) o.threads = 1;
    }
    prg_set_num_threads(o.threads);

    G = o.global_batch > 0 ? o.global_batch : o.batch * nranks;
    if (G < nranks || o.steps < 0) {
        if (rank == 0) fprintf(stderr, "train_mpi: the global batch (%d) must be at least the number of ranks (%d)\n", G, nranks);
        MPI_Finalize();
        return 2;
    }
    nloc = G / nranks + (rank < G % nranks);
    off = rank * (G / nranks) + (rank < G % nranks ? rank : G % nranks);

    /* every rank loads the (small) dataset file; it builds only its shard */
    if (prg_dataset_load(&ds, o.data) != PRG_OK) return fail(rank, o.data);
    if (ds.c != 1 && ds.c != 3) { fprintf(stderr, "train_mpi: %d channels?\n", ds.c); MPI_Abort(MPI_COMM_WORLD, 1); }
    o.cfg.in_channels = o.cfg.out_channels = ds.c;
    if (prg_transform_init(&tf, !o.pretrain, ds.c, o.image_size, o.image_size) != PRG_OK) return fail(rank, "transform");
    if (ds.h + 4 == o.image_size && ds.w + 4 == o.image_size) tf.border = 2;   /* MNIST 28 -> 32 */
    else if (ds.h != o.image_size || ds.w != o.image_size) {   /* e.g. 16x16: bicubic resize */
        tf.crop = PRG_CROP_CENTER;
        tf.resize = o.image_size;
    }
    for (a = 0; a < ds.c; a++) {
        if (o.pretrain) { tf.mean[a] = 0.5f; tf.std[a] = 0.5f; }       /* data in [-1, 1] */
        else if (ds.c == 1) { tf.mean[a] = 0.1307f; tf.std[a] = 0.3081f; }
    }
    if (prg_transform_check(&tf, ds.c, ds.h, ds.w) != PRG_OK) return fail(rank, "transform");
    ipe = ds.n / G;
    if (ipe < 1) {
        if (rank == 0) fprintf(stderr, "train_mpi: global batch %d exceeds the %d images\n", G, ds.n);
        MPI_Finalize();
        return 2;
    }

    /* model: the same seed on every rank gives the same initial weights */
    if (o.init) {
        /* a plain state_dict (no 'prg.unet' metadata) is read with the U-Net flags' config */
        const prg_unet_config *ic = NULL;
        prg_st *st;
        if (prg_safetensors_open(&st, o.init) == PRG_OK) {
            if (!prg_st_metadata(st, "prg.unet")) {
                o.cfg.in_channels = o.cfg.out_channels = ds.c;
                ic = &o.cfg;
            }
            prg_st_close(st);
        }
        if (prg_unet_load(&net, o.init, ic) != PRG_OK) return fail(rank, o.init);
    } else if (prg_unet_create(&net, &o.cfg, o.seed) != PRG_OK) return fail(rank, "U-Net");
    o.cfg = *prg_unet_config_get(net);
    if (o.cfg.image_size != o.image_size || o.cfg.in_channels != ds.c) {
        if (rank == 0) fprintf(stderr, "train_mpi: the U-Net takes %dx%dx%d images, the data gives %dx%dx%d (--image-size)\n",
                               o.cfg.in_channels, o.cfg.image_size, o.cfg.image_size, ds.c, o.image_size, o.image_size);
        MPI_Finalize();
        return 2;
    }
    dim = (size_t)o.cfg.in_channels * o.cfg.image_size * o.cfg.image_size;
    sz[0] = prg_unet_num_params(net);
    pblk[0] = prg_unet_params(net);
    gblk[0] = prg_unet_grads(net);
    nblocks = 1;
    prg_adam_config_default(&acfg);
    if (!o.pretrain) {
        K = ds.num_classes;
        if (prg_classifier_create(&clf, net, K, o.t_span, o.t_cutoff, o.seed + 1) != PRG_OK ||
            prg_classifier_set_grad_mode(clf, o.grad_mode) != PRG_OK ||
            (ds.class_names && prg_classifier_set_class_names(clf, (const char *const *)ds.class_names, K) != PRG_OK))
            return fail(rank, "classifier");
        pblk[1] = prg_classifier_head_params(clf, &sz[1]);
        gblk[1] = prg_classifier_head_grads(clf, &sz[1]);
        nblocks = 2;
        acfg.decoupled = 1;
        acfg.weight_decay = o.weight_decay;
        if (o.lr < 0 && prg_cosine_schedule_init(&sched, G, ipe, 100, 5) != PRG_OK) return fail(rank, "schedule");
    } else if (o.lr < 0) o.lr = 1e-4;
    if (prg_adam_create(&opt, sz[0] + (nblocks > 1 ? sz[1] : 0), &acfg) != PRG_OK) return fail(rank, "Adam");
    first = 0;
    if (o.resume) { /* every rank reads the same file: identical weights and moments */
        int64_t s64 = 0;
        if (prg_checkpoint_restore(o.resume, o.pretrain ? net : NULL, clf, opt, NULL, &s64) != PRG_OK)
            return fail(rank, o.resume);
        first = (int)s64;
    }

    x = (float *)prg_alloc((size_t)nloc * dim * sizeof(float));
    xt = (float *)prg_alloc((size_t)nloc * dim * sizeof(float));
    tg = (float *)prg_alloc((size_t)nloc * dim * sizeof(float));
    v = (float *)prg_alloc((size_t)nloc * dim * sizeof(float));
    dv = (float *)prg_alloc((size_t)nloc * dim * sizeof(float));
    tt = (float *)prg_alloc((size_t)nloc * sizeof(float));
    y = (int32_t *)prg_alloc((size_t)nloc * sizeof(int32_t));
    labels = (int *)prg_alloc((size_t)nloc * sizeof(int));
    logits = (float *)prg_alloc((size_t)nloc * (K > 0 ? K : 1) * sizeof(float));
    dlog = (float *)prg_alloc((size_t)nloc * (K > 0 ? K : 1) * sizeof(float));
    perm = (int *)prg_alloc((size_t)ds.n * sizeof(int));
    index = (int *)prg_alloc((size_t)nloc * sizeof(int));
    if (!x || !xt || !tg || !v || !dv || !tt || !y || !labels || !logits || !dlog || !perm || !index) {
        fprintf(stderr, "train_mpi[%d]: out of memory\n", rank);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    if (rank == 0)
        printf("train_mpi: %s, %d rank(s) x %d thread(s), global batch %d (rank 0: %d), %zu U-Net params%s, "
               "%d image(s) %dx%dx%d, %d steps/epoch\n",
               o.pretrain ? "pretrain (ICFM)" : "finetune (classifier)", nranks, o.threads, G, nloc, sz[0],
               nblocks > 1 ? " + head" : "", ds.n, ds.c, o.image_size, o.image_size, ipe);

    t_start = MPI_Wtime();
    for (step = first; step < o.steps; step++) {
        uint64_t epoch = (uint64_t)(step / ipe);
        int pos = (step % ipe) * G, j;
        double loss_part, loss, gnorm, lr, t0 = MPI_Wtime(), t1;
        float scale = (float)nloc / (float)G;
        prg_result r;
        if (step % ipe == 0 || step == first) epoch_permutation(perm, ds.n, o.seed, epoch);
        for (j = 0; j < nloc; j++) index[j] = perm[pos + off + j];
        if (prg_batch_build(x, y, &ds, &tf, index, nloc, o.seed, epoch) != PRG_OK) return fail(rank, "batch");
        if (o.pretrain) {
            int hw = o.cfg.image_size * o.cfg.image_size;
            prg_unet_zero_grad(net);
            for (j = 0; j < nloc; j++) { /* one stream per (seed, step, global position) */
                prg_rng rs;
                prg_rng_seed(&rs, o.seed ^ ((uint64_t)(step + 1) * 0x9E3779B97F4A7C15ull), (uint64_t)(off + j));
                prg_flow_icfm_pairs(xt + (size_t)j * dim, tg + (size_t)j * dim, tt + j, NULL, x + (size_t)j * dim,
                                    1, dim, &rs);
            }
            if (prg_unet_forward(net, nloc, xt, tt, v) != PRG_OK) return fail(rank, "forward");
            loss_part = prg_flow_loss_forward_backward(dv, v, tg, nloc, o.cfg.in_channels, hw);
            for (j = 0; j < nloc * (int)dim; j++) dv[j] *= scale;  /* local mean -> its share of the global mean */
            if (prg_unet_backward(net, dv, NULL) != PRG_OK) return fail(rank, "backward");
        } else {
            prg_classifier_zero_grad(clf);
            for (j = 0; j < nloc; j++) labels[j] = (int)y[j];
            if (prg_classifier_forward(clf, nloc, x, logits) != PRG_OK) return fail(rank, "forward");
            loss_part = prg_cross_entropy_forward_backward(dlog, logits, labels, nloc, K, (float)o.smoothing);
            for (j = 0; j < nloc * K; j++) dlog[j] *= scale;
            if (prg_classifier_backward(clf, dlog) != PRG_OK) return fail(rank, "backward");
        }
        t1 = MPI_Wtime();
        for (j = 0; j < nblocks; j++) allreduce_sum(gblk[j], sz[j]);
        loss_part *= (double)nloc / G;
        MPI_Allreduce(&loss_part, &loss, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        t_comm += MPI_Wtime() - t1;
        lr = o.lr >= 0 ? o.lr : prg_cosine_schedule_step_lr(&sched, step);
        r = prg_adam_step_blocks(opt, nblocks, pblk, (const float *const *)gblk, sz, lr, &gnorm);
        if (r != PRG_OK) return fail(rank, "Adam step");
        t_comp += t1 - t0;
        if (rank == 0 && o.log_every > 0 && ((step + 1) % o.log_every == 0 || step + 1 == o.steps))
            printf("step %d  epoch %llu  loss %.6f  grad-norm %.7e  lr %.3e  %.3f s\n", step + 1,
                   (unsigned long long)epoch, loss, gnorm, lr, MPI_Wtime() - t0);
        if (o.check_every > 0 && (step + 1) % o.check_every == 0) {
            unsigned int crc = 0, lo, hi;
            for (j = 0; j < nblocks; j++) crc = prg_crc32(crc, pblk[j], sz[j] * sizeof(float));
            MPI_Allreduce(&crc, &lo, 1, MPI_UNSIGNED, MPI_MIN, MPI_COMM_WORLD);
            MPI_Allreduce(&crc, &hi, 1, MPI_UNSIGNED, MPI_MAX, MPI_COMM_WORLD);
            if (lo != hi) {
                fprintf(stderr, "train_mpi[%d]: step %d: weights differ between ranks (crc %08x, min %08x, max %08x)\n",
                        rank, step + 1, crc, lo, hi);
                MPI_Abort(MPI_COMM_WORLD, 3);
            }
            if (rank == 0) printf("check: step %d, weights identical on all %d ranks (crc %08x)\n", step + 1, nranks, crc);
        }
        if (rank == 0 && o.checkpoint && o.save_every > 0 && (step + 1) % o.save_every == 0 && step + 1 < o.steps &&
            prg_checkpoint_save(o.checkpoint, o.pretrain ? net : NULL, clf, opt, NULL, step + 1) != PRG_OK)
            return fail(rank, o.checkpoint);
    }
    if (rank == 0) {
        double total = MPI_Wtime() - t_start;
        printf("done: %d steps in %.3f s (%.3f s/step; rank 0: compute %.3f s, allreduce %.3f s)\n", o.steps - first,
               total, o.steps > first ? total / (o.steps - first) : 0.0, t_comp, t_comm);
        if (o.checkpoint) {
            if (prg_checkpoint_save(o.checkpoint, o.pretrain ? net : NULL, clf, opt, NULL, o.steps) != PRG_OK)
                return fail(rank, o.checkpoint);
            printf("saved %s\n", o.checkpoint);
        }
    }
    prg_free(x); prg_free(xt); prg_free(tg); prg_free(v); prg_free(dv); prg_free(tt); prg_free(y); prg_free(labels);
    prg_free(logits); prg_free(dlog); prg_free(perm); prg_free(index);
    prg_adam_free(opt);
    if (clf) prg_classifier_free(clf);
    else prg_unet_free(net);
    prg_dataset_free(&ds);
    MPI_Finalize();
    return 0;
}
