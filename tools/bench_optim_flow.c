/* Timings for the optim and flow sections: one AdamW step over the cifar32
   U-Net's parameter count, OT-CFM re-pairing of a batch, and the sampler /
   reverse-ODE overhead with a trivial velocity field.  `make bench` runs it. */
#define PRG_IMPLEMENTATION
#include "prg.h"
#include <stdio.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static prg_result zero_vel(void *ctx, int batch, const float *x, const float *t, float *v) {
    size_t i, n = (size_t)batch * *(size_t *)ctx;
    (void)t;
    for (i = 0; i < n; i++) v[i] = 0.5f * x[i];
    return PRG_OK;
}

int main(void) {
    const size_t n = 52542979; /* cifar32 parameters */
    float *p = (float *)prg_alloc(n * 4), *g = (float *)prg_alloc(n * 4);
    prg_adam_config cfg;
    prg_adam *opt;
    prg_rng r;
    size_t i;
    int th, rep, bi;
    double norm;
    prg_rng_seed(&r, 1, 0);
    for (i = 0; i < n; i++) {
        p[i] = 0.01f * (float)(i % 1000);
        g[i] = 1e-3f * (float)((i * 7919) % 2001) - 1.0f;
    }
    prg_adam_config_default(&cfg);
    cfg.decoupled = 1;
    cfg.weight_decay = 0.05;
    if (prg_adam_create(&opt, n, &cfg) != PRG_OK) return 1;
    for (th = 1; th <= 2; th++) {
        double t0, best = 1e30;
        prg_set_num_threads(th);
        for (rep = 0; rep < 5; rep++) {
            t0 = now();
            prg_adam_step(opt, p, g, 1e-4, &norm);
            if (now() - t0 < best) best = now() - t0;
        }
        printf("AdamW step, %zu params, %d thread(s): %.1f ms (%.2f ns/param)\n", n, th, 1e3 * best, 1e9 * best / n);
    }
    prg_adam_free(opt);
    prg_free(p);
    prg_free(g);

    /* OT-CFM pairing = the cost matrix (a GEMM plus the squared norms) and the
       assignment; the best of 10 runs each, 1 and 2 threads, MNIST and CIFAR shapes.
       The cost's GFLOP/s (2 B^2 D flops) shows how near it is to the GEMM's rate. */
    for (bi = 0; bi < 8; bi++) {
        static const int bs[2] = {128, 180};
        static const size_t ds[2] = {1 * 28 * 28, 3 * 32 * 32};
        const int B = bs[(bi >> 1) & 1], threads = 1 + (bi & 1);
        const size_t D = ds[bi >> 2];
        float *x1 = (float *)prg_alloc((size_t)B * D * 4), *xt = (float *)prg_alloc((size_t)B * D * 4);
        float *tg = (float *)prg_alloc((size_t)B * D * 4), *x0 = (float *)prg_alloc((size_t)B * D * 4), t[256];
        double *cost = (double *)prg_alloc((size_t)B * B * 8), pairs = 1e9, tc = 1e9, ta = 1e9, t0;
        int perm[256], rep;
        for (i = 0; i < (size_t)B * D; i++) x1[i] = prg_rng_normal(&r);
        prg_set_num_threads(threads);
        for (rep = 0; rep < 10; rep++) {
            t0 = now();
            prg_flow_icfm_pairs(xt, tg, t, x0, x1, B, D, &r);
            pairs = fmin(pairs, now() - t0);
            t0 = now();
            prg_ot_cost(cost, x0, x1, B, D); /* the noise against the data, as OT-CFM pairs them */
            tc = fmin(tc, now() - t0);
            t0 = now();
            prg_ot_assign(perm, cost, B);
            ta = fmin(ta, now() - t0);
        }
        printf("OT pairing, batch %d x %s, %d thread%s: ICFM pairs %.2f ms; cost matrix %.2f ms (%.0f GFLOP/s), "
               "assignment %.2f ms: the cost is %.0f%% of the pairing\n", B, D == 784 ? "1x28x28" : "3x32x32", threads,
               threads > 1 ? "s" : "", 1e3 * pairs, 1e3 * tc, 2.0 * B * B * (double)D / tc * 1e-9, 1e3 * ta,
               100.0 * tc / (tc + ta));
        prg_free(x1); prg_free(xt); prg_free(tg); prg_free(x0); prg_free(cost);
    }
    {
        const int B = 128;
        size_t D = 3 * 32 * 32;
        float *x = (float *)prg_alloc((size_t)B * D * 4), *st = (float *)prg_alloc(32 * (size_t)B * D * 4);
        double t0, t1;
        for (i = 0; i < (size_t)B * D; i++) x[i] = prg_rng_normal(&r);
        t0 = now();
        prg_sample_rk4(zero_vel, &D, 31, B, D, x);
        t1 = now();
        printf("RK4, 31 steps, batch %d x 3x32x32, trivial field: %.1f ms\n", B, 1e3 * (t1 - t0));
        t0 = now();
        prg_ode_reverse_euler(zero_vel, &D, 32, 0, B, D, x, x, st);
        t1 = now();
        printf("reverse Euler (t_span 32), states kept, batch %d, trivial field: %.1f ms\n", B, 1e3 * (t1 - t0));
        prg_free(x); prg_free(st);
    }
    return 0;
}
