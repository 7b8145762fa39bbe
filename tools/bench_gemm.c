/* bench_gemm - GFLOP/s of prg_sgemm on square products and on the U-Net
   convolutions written as GEMMs (forward, weight gradient, input gradient),
   with 1 and 2 threads; side by side with OpenBLAS's cblas_sgemm when the
   build found it (-DPRG_BENCH_OPENBLAS).  Each number is the best of several
   timed runs after a warm-up; prg and OpenBLAS alternate in rounds so that
   both see the same machine load.  Run with --help for the options. */
#define _POSIX_C_SOURCE 200809L
#define PRG_IMPLEMENTATION
#include "prg.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef PRG_BENCH_OPENBLAS
#include <cblas.h>
#endif

typedef struct shape {
    const char *name;
    int ta, tb, m, n, k;
} shape;

/* Squares, then for each U-Net level the forward convolution (W[Co][Ci*9] x
   cols[Ci*9][HW]), the weight gradient (dY[Co][HW] x cols^T) and the input
   gradient (W^T x dY). */
static const shape shapes[] = {
    {"square 256", 0, 0, 256, 256, 256},
    {"square 512", 0, 0, 512, 512, 512},
    {"square 1024", 0, 0, 1024, 1024, 1024},
    {"square 2048", 0, 0, 2048, 2048, 2048},
    {"conv1 fwd", 0, 0, 128, 8192, 1152},
    {"conv1 dW (tb)", 0, 1, 128, 1152, 8192},
    {"conv1 dX (ta)", 1, 0, 1152, 8192, 128},
    {"conv2 fwd", 0, 0, 256, 2048, 2304},
    {"conv2 dW (tb)", 0, 1, 256, 2304, 2048},
    {"conv2 dX (ta)", 1, 0, 2304, 2048, 256},
    {"conv3 fwd", 0, 0, 512, 512, 4608},
    {"conv3 dW (tb)", 0, 1, 512, 4608, 512},
    {"conv3 dX (ta)", 1, 0, 4608, 512, 512},
};
#define NSHAPES ((int)(sizeof shapes / sizeof shapes[0]))
#define NSQUARES 4

static int use_cpu_time = 0;

static double now(void) {
    struct timespec ts;
    clock_gettime(use_cpu_time ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void pause_ms(int ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

typedef struct operands {
    const shape *s;
    float *a, *b, *c;
    int lda, ldb, ldc;
} operands;

static void run_prg(const operands *o) {
    const shape *s = o->s;
    prg_sgemm(s->ta, s->tb, s->m, s->n, s->k, 1.0f, o->a, o->lda, o->b, o->ldb, 0.0f, o->c, o->ldc);
}

#ifdef PRG_BENCH_OPENBLAS
static void run_blas(const operands *o) {
    const shape *s = o->s;
    cblas_sgemm(CblasRowMajor, s->ta ? CblasTrans : CblasNoTrans, s->tb ? CblasTrans : CblasNoTrans,
                s->m, s->n, s->k, 1.0f, o->a, o->lda, o->b, o->ldb, 0.0f, o->c, o->ldc);
}
#endif

/* Best time of at least min_reps calls taking at least min_time seconds in
   all (after one untimed warm-up call). */
static double best_time(void (*fn)(const operands *), const operands *o, int min_reps,
                        double min_time) {
    double best = 1e30, start = now(), t0, t;
    int reps = 0;
    fn(o);
    while (reps < min_reps || now() - start < min_time) {
        t0 = now();
        fn(o);
        t = now() - t0;
        if (t < best) best = t;
        reps++;
    }
    return best;
}

static void usage(const char *argv0) {
    printf("usage: %s [--squares-only | --conv-only] [--threads N] [--rounds R]\n"
           "          [--reps N] [--time S] [--kernel NAME] [--help]\n"
           "  GFLOP/s of prg_sgemm (best of the timed runs) for squares 256..2048 and the\n"
           "  U-Net convolutions as GEMMs, with 1 and 2 threads, and the ratio to OpenBLAS\n"
           "  when the benchmark was built with it.\n"
           "  --squares-only, --conv-only  run only that group of shapes\n"
           "  --cpu-time    time by process CPU time instead of wall time: steadier on a\n"
           "                busy machine, but only meaningful with --threads 1\n"
           "  --pad P       add P floats to every leading dimension (default 0)\n"
           "  --only TEXT   only the shapes whose name contains TEXT (e.g. \"dW\")\n"
           "  --threads N   only N threads (default: 1 and 2)\n"
           "  --rounds R    alternate prg and OpenBLAS R times per case, keep the best (default 4)\n"
           "  --reps N      at least N timed calls per round (default 3)\n"
           "  --time S      and at least S seconds per round (default 0.1)\n"
           "  --kernel NAME force a prg micro-kernel (avx512, avx2, neon, scalar)\n"
           "  --blas-core C run OpenBLAS with OPENBLAS_CORETYPE=C (e.g. SkylakeX: its AVX-512\n"
           "                kernels; OpenBLAS 0.3.21 takes Zen 4/5 for Haswell, AVX2 only);\n"
           "                `best` = SkylakeX on a CPU with AVX-512, else the environment's\n",
           argv0);
}

int main(int argc, char **argv) {
    const char *only = NULL;
    int pad = 0;
    int first = 0, last = NSHAPES, rounds = 4, reps = 3, only_threads = 0, i, t, r;
    double min_time = 0.1;
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(argv[0]);
            return 0;
        } else if (!strcmp(argv[i], "--squares-only")) {
            last = NSQUARES;
        } else if (!strcmp(argv[i], "--cpu-time")) {
            use_cpu_time = 1;
        } else if (!strcmp(argv[i], "--conv-only")) {
            first = NSQUARES;
        } else if (i + 1 < argc && !strcmp(argv[i], "--threads")) {
            only_threads = atoi(argv[++i]);
        } else if (i + 1 < argc && !strcmp(argv[i], "--pad")) {
            pad = atoi(argv[++i]);
        } else if (i + 1 < argc && !strcmp(argv[i], "--only")) {
            only = argv[++i];
        } else if (i + 1 < argc && !strcmp(argv[i], "--rounds")) {
            rounds = atoi(argv[++i]);
        } else if (i + 1 < argc && !strcmp(argv[i], "--reps")) {
            reps = atoi(argv[++i]);
        } else if (i + 1 < argc && !strcmp(argv[i], "--time")) {
            min_time = atof(argv[++i]);
        } else if (i + 1 < argc && !strcmp(argv[i], "--blas-core")) {
            /* OpenBLAS reads its core type from the environment at load
               time: set it and start again. */
            const char *want = argv[++i], *have = getenv("OPENBLAS_CORETYPE");
            if (!strcmp(want, "best")) { /* its AVX-512 kernels where the CPU has them */
#if defined(__x86_64__) && defined(__GNUC__)
                if (!__builtin_cpu_supports("avx512f")) continue;
                want = "SkylakeX";
#else
                continue;
#endif
            }
            if (!have || strcmp(have, want) != 0) {
                setenv("OPENBLAS_CORETYPE", want, 1);
                execv("/proc/self/exe", argv);
                fprintf(stderr, "cannot restart with OPENBLAS_CORETYPE=%s\n", want);
                return 1;
            }
        } else if (i + 1 < argc && !strcmp(argv[i], "--kernel")) {
            if (prg_gemm_set_kernel(argv[++i]) != PRG_OK) {
                fprintf(stderr, "%s\n", prg_last_error());
                return 1;
            }
        } else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            usage(argv[0]);
            return 1;
        }
    }
    if (rounds < 1) rounds = 1;
    if (reps < 1) reps = 1;

    printf("prg_sgemm kernel: %s", prg_gemm_kernel_name());
#ifdef __AVX512F__
    printf(" (built with AVX-512 enabled)\n");
#else
    printf(" (built without -march: run-time dispatch)\n");
#endif
#ifdef PRG_BENCH_OPENBLAS
    printf("OpenBLAS: %s\n", openblas_get_config());
#else
    printf("OpenBLAS: not built in (no comparison)\n");
#endif
    {   /* other work on the machine skews the numbers: say how much there was */
        FILE *f = fopen("/proc/loadavg", "r");
        char line[128];
        if (f && fgets(line, sizeof line, f)) printf("load average: %s", line);
        if (f) fclose(f);
    }
    printf("%-15s %5s %5s %5s %3s %10s %10s %7s\n", "shape", "M", "N", "K", "thr", "prg GF/s",
           "BLAS GF/s", "ratio");

    for (i = first; i < last; i++) {
        const shape *s = &shapes[i];
        operands o;
        size_t sa, sb, sc, e;
        prg_rng rng;
        double flops = 2.0 * s->m * s->n * s->k;
        if (only && !strstr(s->name, only)) continue;
        o.s = s;
        o.lda = (s->ta ? s->m : s->k) + pad;
        o.ldb = (s->tb ? s->k : s->n) + pad;
        o.ldc = s->n + pad;
        sa = (size_t)(s->ta ? s->k : s->m) * o.lda;
        sb = (size_t)(s->tb ? s->n : s->k) * o.ldb;
        sc = (size_t)s->m * o.ldc;
        o.a = (float *)prg_alloc(sa * sizeof(float));
        o.b = (float *)prg_alloc(sb * sizeof(float));
        o.c = (float *)prg_alloc(sc * sizeof(float));
        if (!o.a || !o.b || !o.c) {
            fprintf(stderr, "out of memory for %s\n", s->name);
            return 1;
        }
        prg_rng_seed(&rng, 42, (uint64_t)i);
        for (e = 0; e < sa; e++) o.a[e] = prg_rng_uniform(&rng) - 0.5f;
        for (e = 0; e < sb; e++) o.b[e] = prg_rng_uniform(&rng) - 0.5f;
        for (e = 0; e < sc; e++) o.c[e] = 0.0f;
        for (t = 1; t <= 2; t++) {
            double tp = 1e30, tb = 1e30, x;
            if (only_threads && t != only_threads) continue;
            prg_set_num_threads(t);
#ifdef PRG_BENCH_OPENBLAS
            openblas_set_num_threads(t);
#endif
            for (r = 0; r < rounds; r++) {
                x = best_time(run_prg, &o, reps, min_time);
                if (x < tp) tp = x;
#ifdef PRG_BENCH_OPENBLAS
                x = best_time(run_blas, &o, reps, min_time);
                if (x < tb) tb = x;
                /* OpenBLAS's idle workers spin for a while after a call;
                   let them go to sleep before prg wants both cores. */
                if (t > 1) pause_ms(150);
#endif
            }
            printf("%-15s %5d %5d %5d %3d %10.1f", s->name, s->m, s->n, s->k, t, flops / tp * 1e-9);
#ifdef PRG_BENCH_OPENBLAS
            printf(" %10.1f %7.2f\n", flops / tb * 1e-9, tb / tp);
#else
            printf(" %10s %7s\n", "-", "-");
#endif
            fflush(stdout);
        }
        prg_free(o.a);
        prg_free(o.b);
        prg_free(o.c);
    }
    return 0;
}
