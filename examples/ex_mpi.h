/* ex_mpi.h - data-parallel training for pretrain, finetune and evaluate.
   `make mpi` builds them with mpicc and -DEX_MPI into build/mpi/; without
   EX_MPI every function here is a no-op for one process (P = 1, rank 0), so
   the plain programs are the same code.  Included after ex_common.h.

   The data-parallel contract (what `mpirun -np P` computes, exactly):
   - The global batch G is the program's --batch (its last, shorter batch of
     an epoch included).  Every rank draws the same epoch order; rank r takes
     the contiguous part [off_r, off_r + n_r) of each global batch, n_r = G/P
     (+1 for the first G mod P ranks), so the local batches in rank order are
     the batch of one process.  Augmentation draws depend on (seed, epoch,
     image index) only, so each image is augmented as in one process.
   - pretrain: the augmented shards are gathered (MPI_Allgatherv, G images,
     small next to the gradients) and every rank draws the ICFM / OT-CFM / GVP
     pairs of the whole global batch from the same generator, as one process
     does, then runs the U-Net on its part.  OT's assignment is therefore over
     the global batch, bit for bit the one-process assignment.
   - Each loss is a mean over the global batch.  The library's losses set
     d loss / d output for the mean over the n_r local samples; the programs
     scale that by n_r / G (ex_mpi_scale) before backward, which is linear in
     it, so the local parameter gradients are the local terms of the global
     mean and their SUM over ranks is its gradient (for equal shards n_r / G
     = 1/P, exact in float for P a power of two).
   - The sum: the gradient blocks (U-Net; head; --frozen: the head alone) are
     cut into buckets of --bucket-mb from the end of each block down (the
     head first), the order the backward finishes them in.  The library's
     gradient-ready hook (prg_unet_set_grad_hook) starts an MPI_Iallreduce on
     each bucket as soon as the backward has finished it, while the backward
     goes on (--no-overlap: all after the backward, the same calls in the
     same order).  Each bucket's sum has the schedule MPI fixes for its size
     and P, so the result does not depend on timing and is the same with and
     without overlap.  The ranks wait for all buckets before the optimiser.
   - Every rank takes the same Adam / AdamW step on the same sum, so the
     weights stay identical (checked by a CRC of the parameters at every
     checkpoint: a difference stops the run).  Rank 0 alone prints and writes
     the checkpoints (atomically, as one process does) and the curves.
   - Evaluation (finetune --test, evaluate, evaluate --corruption): rank r
     classifies its contiguous part of the test set; the hit counts (and the
     confusion matrix) are summed.  evaluate --ood runs whole on every rank.
   - A stop (Ctrl-C or SIGTERM on any rank, --stop-after) is combined over
     the ranks after every step (the largest wins), so every rank stops after
     the same step, rank 0 saves once, and all exit with 130 / 143.
   - A rank that exits on an error (its message on its stderr) takes the job
     down with MPI_Abort from an atexit handler: no rank waits in a collective.
   - --resume: every rank reads the checkpoint (a shared file system, or the
     same file copied to every node); batches and noise follow the step, so a
     resumed run with the same P continues bit for bit.
   The only difference from one process with batch G is the order of the
   float sums over the batch (inside backward vs. across ranks). */
#ifndef EX_MPI_H
#define EX_MPI_H

#ifdef EX_MPI
#include <mpi.h>

#define EX_MPI_HELP \
    "MPI (mpirun -np P): --batch is the global batch, split over the ranks; --threads 0 shares each\n" \
    "node's CPUs among its ranks.\n" \
    "  --bucket-mb X          gradient buckets summed while the backward runs, in (0, 4096] MiB (4)\n" \
    "  --no-overlap           sum all gradients after the backward (the same result)\n"

#define EX_MPI_MAXB 4096 /* buckets per step */
typedef struct ex_mpi_bucket { int block; size_t start, count; } ex_mpi_bucket;
static struct {
    int on, no_overlap, nb, next, stop;
    double bucket_mb;         /* --bucket-mb (0: 4) */
    float *g[2];
    size_t n[2], ready[2];
    float *p[2];              /* the parameters, for the check at checkpoints */
    size_t pn[2];
    ex_mpi_bucket b[EX_MPI_MAXB];
    MPI_Request req[EX_MPI_MAXB];
    double t_wait, t_hook;
    int64_t steps;
} ex_mp;
static char ex_mpi_name[64];

PRG_UNUSED static void ex_mpi_atexit(void) {
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Abort(MPI_COMM_WORLD, 1); /* an error exit: end every rank */
}
PRG_UNUSED static void ex_mpi_sum_counts(int64_t *v, int n) {
    MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
}

/* In the flag loop: the MPI flags (1 when argv[ex_argi] was one). */
PRG_UNUSED static int ex_mpi_flag(void) {
    if (EX_FLAG("--bucket-mb")) ex_mp.bucket_mb = ex_num_in(0, 4096, 1);
    else if (EX_FLAG("--no-overlap")) ex_mp.no_overlap = 1;
    else return 0;
    return 1;
}

/* After the flags: MPI_Init, the rank's name in messages, stdout of the
   other ranks muted (rank 0 prints the run). */
PRG_UNUSED static void ex_mpi_init(void) {
    MPI_Init(NULL, NULL);
    MPI_Comm_rank(MPI_COMM_WORLD, &ex_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &ex_ranks);
    atexit(ex_mpi_atexit);
    ex_mp.on = 1;
    ex_sum_counts = ex_mpi_sum_counts;
    if (ex_rank > 0) {
        snprintf(ex_mpi_name, sizeof ex_mpi_name, "%s[rank %d]", ex_prog, ex_rank);
        ex_prog = ex_mpi_name;
        ex_quiet = 1;
        if (!freopen("/dev/null", "w", stdout)) ex_quiet = 1; /* else at least no progress lines */
    }
}

/* --threads 0 (all CPUs): the node's CPUs shared among the ranks on it. */
PRG_UNUSED static int ex_mpi_threads(int threads) {
    MPI_Comm node;
    int local = 1;
    if (threads != 0) return threads;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
    MPI_Comm_size(node, &local);
    MPI_Comm_free(&node);
    prg_set_num_threads(0);
    threads = prg_get_num_threads() / local;
    return threads < 1 ? 1 : threads;
}

/* Allgatherv of the G images (dim floats each) of x: every rank has filled
   its part [off, off + n) and receives the others'. */
PRG_UNUSED static void ex_mpi_gather(float *x, int G, size_t dim) {
    int r, *cnt, *dsp;
    if (ex_ranks == 1) return;
    if (dim * (size_t)G > (size_t)INT_MAX) { fprintf(stderr, "%s: a global batch of %d images of %zu floats is too large for MPI\n", ex_prog, G, dim); exit(1); }
    cnt = (int *)ex_alloc(2 * (size_t)ex_ranks * sizeof(int));
    dsp = cnt + ex_ranks;
    for (r = 0; r < ex_ranks; r++) {
        int lo = (int)((int64_t)r * (G / ex_ranks) + (r < G % ex_ranks ? r : G % ex_ranks));
        cnt[r] = (int)(((size_t)(G / ex_ranks + (r < G % ex_ranks))) * dim);
        dsp[r] = (int)((size_t)lo * dim);
    }
    MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, x, cnt, dsp, MPI_FLOAT, MPI_COMM_WORLD);
    prg_free(cnt);
}

/* The blocks to sum (g[i], n[i] floats; p[i] the parameters they belong to):
   block 0 the U-Net (NULL: not trained), block 1 the head (NULL: none). */
PRG_UNUSED static void ex_mpi_blocks(float *g0, float *p0, size_t n0, float *g1, float *p1, size_t n1) {
    size_t bucket;
    int i;
    if (!ex_mp.on) return;
    ex_mp.g[0] = g0; ex_mp.p[0] = p0; ex_mp.n[0] = ex_mp.pn[0] = g0 ? n0 : 0;
    ex_mp.g[1] = g1; ex_mp.p[1] = p1; ex_mp.n[1] = ex_mp.pn[1] = g1 ? n1 : 0;
    if (ex_mp.bucket_mb <= 0) ex_mp.bucket_mb = 4;
    bucket = (size_t)(ex_mp.bucket_mb * 1048576.0 / sizeof(float));
    if (bucket < 1) bucket = 1;
    if (bucket > (size_t)INT_MAX / 2) bucket = (size_t)INT_MAX / 2;
    /* the head's buckets first, then the U-Net's, each from its end down */
    for ((ex_mp.nb = 0), i = 1; i >= 0; i--) {
        size_t end = ex_mp.n[i];
        while (end > 0) {
            size_t start = end > bucket ? end - bucket : 0;
            if (ex_mp.nb == EX_MPI_MAXB) { /* a few very large buckets rather than too many */
                ex_mp.bucket_mb *= 2;
                ex_mpi_blocks(g0, p0, n0, g1, p1, n1);
                return;
            }
            ex_mp.b[ex_mp.nb].block = i;
            ex_mp.b[ex_mp.nb].start = start;
            ex_mp.b[ex_mp.nb++].count = end - start;
            end = start;
        }
    }
}

/* Starts the buckets, in their order, that the backward has finished. */
PRG_UNUSED static void ex_mpi_launch(void) {
    int flag;
    while (ex_mp.next < ex_mp.nb) {
        const ex_mpi_bucket *b = &ex_mp.b[ex_mp.next];
        if (b->start < ex_mp.ready[b->block]) break;
        MPI_Iallreduce(MPI_IN_PLACE, ex_mp.g[b->block] + b->start, (int)b->count, MPI_FLOAT, MPI_SUM,
                       MPI_COMM_WORLD, &ex_mp.req[ex_mp.next]);
        ex_mp.next++;
    }
    if (ex_mp.next > 0) MPI_Testall(ex_mp.next, ex_mp.req, &flag, MPI_STATUSES_IGNORE); /* progress */
}
PRG_UNUSED static void ex_mpi_hook(void *ctx, int block, size_t begin) {
    double t0 = MPI_Wtime();
    (void)ctx;
    if (begin < ex_mp.ready[block]) ex_mp.ready[block] = begin;
    ex_mpi_launch();
    ex_mp.t_hook += MPI_Wtime() - t0;
}

/* Installs the hook (unet, clf may be NULL; overlap 0: not this run, e.g.
   finetune's flow term adds to the U-Net gradients after the backward). */
PRG_UNUSED static void ex_mpi_hook_on(prg_unet *net, prg_classifier *clf, int overlap) {
    if (!ex_mp.on || ex_ranks == 1 || ex_mp.no_overlap || !overlap) return;
    if (clf) prg_classifier_set_grad_hook(clf, ex_mpi_hook, NULL);
    else prg_unet_set_grad_hook(net, ex_mpi_hook, NULL);
}

/* Before each backward: nothing is final yet. */
PRG_UNUSED static void ex_mpi_grads_begin(void) {
    ex_mp.ready[0] = ex_mp.n[0] + 1;
    ex_mp.ready[1] = ex_mp.n[1] + 1;
    ex_mp.next = 0;
}

/* After the backward: starts what is left and waits for every sum. */
PRG_UNUSED static void ex_mpi_grads_end(void) {
    double t0;
    if (!ex_mp.on || ex_ranks == 1) return;
    t0 = MPI_Wtime();
    ex_mp.ready[0] = ex_mp.ready[1] = 0;
    ex_mpi_launch();
    MPI_Waitall(ex_mp.next, ex_mp.req, MPI_STATUSES_IGNORE);
    ex_mp.t_wait += MPI_Wtime() - t0;
    ex_mp.steps++;
}

/* A local output gradient (of the mean over n local samples) becomes its
   share of the global mean over G. */
PRG_UNUSED static void ex_mpi_scale(float *d, size_t count, int n, int G) {
    size_t i;
    float s = (float)n / (float)G;
    if (ex_ranks == 1 || n == G) return;
    for (i = 0; i < count; i++) d[i] *= s;
}

/* The global mean of a local mean over n of G samples. */
PRG_UNUSED static double ex_mpi_mean(double local, int n, int G) {
    double v = local * n / G;
    if (ex_ranks == 1) return local;
    MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    return v;
}

/* After every step: a stop on any rank stops all (the largest signal).  The
   loops test EX_STOPPED, this agreed value, so a signal that comes between
   two of these calls cannot make one rank leave the loop alone. */
PRG_UNUSED static void ex_mpi_sync_stop(void) {
    int s = (int)ex_stop;
    if (ex_ranks > 1) MPI_Allreduce(MPI_IN_PLACE, &s, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    ex_mp.stop = s;
    if (s > (int)ex_stop) ex_stop = s; /* the exit status follows */
}
#define EX_STOPPED (ex_mp.stop)

/* Rank 0's value for all (what it read from its files). */
PRG_UNUSED static void ex_mpi_bcast_i64(int64_t *v) {
    if (ex_ranks > 1) MPI_Bcast(v, 1, MPI_INT64_T, 0, MPI_COMM_WORLD);
}

/* Before a checkpoint (every rank calls it at the same step): the weights
   must be the same bits on every rank; 1 on rank 0, which writes. */
PRG_UNUSED static int ex_mpi_save_here(void) {
    unsigned int crc = 0, lo, hi;
    int i;
    if (ex_ranks == 1) return 1;
    for (i = 0; i < 2; i++)
        if (ex_mp.p[i]) crc = prg_crc32(crc, ex_mp.p[i], ex_mp.pn[i] * sizeof(float));
    MPI_Allreduce(&crc, &lo, 1, MPI_UNSIGNED, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(&crc, &hi, 1, MPI_UNSIGNED, MPI_MAX, MPI_COMM_WORLD);
    if (lo != hi) {
        fprintf(stderr, "%s: the weights differ between ranks (crc %08x, min %08x, max %08x): not saved\n", ex_prog,
                crc, lo, hi);
        exit(3);
    }
    return ex_rank == 0;
}

/* finetune --beta: the flow-matching term's noise.  With P > 1 each rank
   draws from its own stream, seeded per step from the run's generator (one
   draw of it), so a run is the same for the same P (and resumes exactly);
   the draws are not one process's. */
PRG_UNUSED static prg_rng *ex_mpi_rank_rng(prg_rng *shared, prg_rng *own) {
    if (ex_ranks == 1) return shared;
    prg_rng_seed(own, prg_rng_u64(shared), 0x6d7069ull + (uint64_t)ex_rank);
    return own;
}

/* The end: the communication summary (rank 0), then MPI_Finalize. */
PRG_UNUSED static void ex_mpi_finalize(void) {
    double w = ex_mp.t_wait, h = ex_mp.t_hook;
    if (!ex_mp.on) return;
    if (ex_ranks > 1) {
        MPI_Allreduce(MPI_IN_PLACE, &w, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        MPI_Allreduce(MPI_IN_PLACE, &h, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        if (ex_rank == 0 && ex_mp.steps > 0)
            printf("mpi: %d ranks x %d threads, %lld steps, %d gradient buckets of <= %g MiB, overlap %s: "
                   "waiting for the sums %.3f s (%.1f ms/step), in the backward's hook %.3f s (largest over ranks)\n",
                   ex_ranks, prg_get_num_threads(), (long long)ex_mp.steps, ex_mp.nb, ex_mp.bucket_mb,
                   ex_mp.no_overlap ? "off" : "on", w, 1e3 * w / ex_mp.steps, h);
    }
    fflush(stdout);
    MPI_Finalize();
}
#define ex_mpi_root() (ex_rank == 0)

#else /* one process: the same calls do nothing */
#define EX_MPI_HELP ""
#define ex_mpi_flag() 0
#define ex_mpi_init() ((void)0)
#define ex_mpi_threads(t) (t)
#define ex_mpi_gather(x, G, dim) ((void)0)
#define ex_mpi_blocks(g0, p0, n0, g1, p1, n1) ((void)0)
#define ex_mpi_hook_on(net, clf, overlap) ((void)0)
#define ex_mpi_grads_begin() ((void)0)
#define ex_mpi_grads_end() ((void)0)
#define ex_mpi_scale(d, count, n, G) ((void)0)
#define ex_mpi_mean(local, n, G) (local)
#define ex_mpi_sync_stop() ((void)0)
#define EX_STOPPED ex_stop
#define ex_mpi_bcast_i64(v) ((void)0)
#define ex_mpi_rank_rng(shared, own) ((void)(own), (shared))
#define ex_mpi_save_here() 1
#define ex_mpi_finalize() ((void)0)
#define ex_mpi_root() 1
#endif

#endif
