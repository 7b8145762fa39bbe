/* flow: ICFM / GVP / OT-CFM pair construction, exact OT assignment against
   brute force, the GEMM-form OT cost against the plain loop, samplers
   (orders of convergence; each path's direction against tools/ref_sample.py),
   the reverse Euler encoder of docs/METHOD.md A.2 and its exact discrete
   backward (A.3). */
#define PRG_IMPLEMENTATION
#include "../prg.h"
#include "prg_test.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "unet_test_weights.h"
#include "fixtures/sample_ref.h"

static float *falloc(size_t n) { return (float *)prg_alloc(n * sizeof(float)); }

static void fill_normal(float *x, size_t n, prg_rng *r) {
    size_t i;
    for (i = 0; i < n; i++) x[i] = prg_rng_normal(r);
}

/* ---- OT: brute force over all permutations ------------------------------ */
static double perm_cost(const double *c, const int *p, int n) {
    double s = 0.0;
    int i;
    for (i = 0; i < n; i++) s += c[i * n + p[i]];
    return s;
}

static double brute_min(const double *c, int n) {
    int p[8], i, k, l;
    double best;
    for (i = 0; i < n; i++) p[i] = i;
    best = perm_cost(c, p, n);
    for (;;) { /* next lexicographic permutation */
        for (k = n - 2; k >= 0 && p[k] > p[k + 1]; k--) {}
        if (k < 0) break;
        for (l = n - 1; p[l] < p[k]; l--) {}
        i = p[k]; p[k] = p[l]; p[l] = i;
        for (i = k + 1, l = n - 1; i < l; i++, l--) { int t = p[i]; p[i] = p[l]; p[l] = t; }
        if (perm_cost(c, p, n) < best) best = perm_cost(c, p, n);
    }
    return best;
}

static int is_perm(const int *p, int n) {
    char seen[256];
    int i;
    memset(seen, 0, sizeof seen);
    for (i = 0; i < n; i++) {
        if (p[i] < 0 || p[i] >= n || seen[p[i]]) return 0;
        seen[p[i]] = 1;
    }
    return 1;
}

static void test_ot_assign(void) {
    prg_rng r;
    double c[64];
    int p[8], n, trial, kind, bad_perm = 0, bad_cost = 0, trials = 0;
    double worst = 0.0;
    prg_rng_seed(&r, 11, 0);
    for (n = 1; n <= 8; n++) {
        int ntrial = n <= 6 ? 200 : 30;
        for (kind = 0; kind < 5; kind++)
            for (trial = 0; trial < ntrial; trial++) {
                int i;
                double want, got;
                if (kind == 3 && trial > 0) break; /* all-equal costs: one trial is enough */
                for (i = 0; i < n * n; i++) {
                    switch (kind) {
                    case 0: c[i] = prg_rng_uniform(&r); break;                           /* generic */
                    case 1: c[i] = (double)prg_rng_below(&r, 3); break;                  /* many ties */
                    case 2: c[i] = 1e6 * prg_rng_uniform(&r) - 5e5; break;               /* negative, large */
                    case 3: c[i] = 2.5; break;                                           /* degenerate */
                    default: c[i] = (i % n) + 10.0 * (i / n) + (double)prg_rng_below(&r, 2); /* near-sums */
                    }
                }
                if (kind == 4 && n <= 6) { /* squared distances of points, as OT-CFM uses */
                    float a[6 * 5], b[6 * 5];
                    fill_normal(a, (size_t)n * 5, &r);
                    fill_normal(b, (size_t)n * 5, &r);
                    prg_ot_cost(c, a, b, n, 5);
                }
                if (prg_ot_assign(p, c, n) != PRG_OK || !is_perm(p, n)) { bad_perm++; continue; }
                want = brute_min(c, n);
                got = perm_cost(c, p, n);
                if (fabs(got - want) > 1e-9 * (1.0 + fabs(want))) bad_cost++;
                if (fabs(got - want) > worst) worst = fabs(got - want);
                trials++;
            }
    }
    CHECK(bad_perm == 0, "%d assignments failed or were not permutations", bad_perm);
    CHECK(bad_cost == 0, "%d of %d assignments were not optimal (worst excess %g)", bad_cost, trials, worst);
    printf("OT assignment: %d random cases n = 1..8 equal brute force (largest difference %.3g)\n", trials, worst);

    {   /* larger: no pair swap improves the matching; 1 and 2 threads give the same costs */
        const int B = 96;
        const size_t D = 300;
        float *x0 = falloc((size_t)B * D), *x1 = falloc((size_t)B * D);
        double *cost = (double *)prg_alloc((size_t)B * B * sizeof(double));
        double *cost2 = (double *)prg_alloc((size_t)B * B * sizeof(double));
        int perm[96], i, j, improvable = 0, idx_ok = 1, id[96];
        fill_normal(x0, (size_t)B * D, &r);
        fill_normal(x1, (size_t)B * D, &r);
        prg_set_num_threads(1);
        prg_ot_cost(cost, x0, x1, B, D);
        prg_set_num_threads(2);
        prg_ot_cost(cost2, x0, x1, B, D);
        CHECK(memcmp(cost, cost2, (size_t)B * B * sizeof(double)) == 0, "cost matrix depends on threads");
        prg_ot_cost_ref(cost2, x0, x1, B, D); /* the plain loop: exact to double rounding */
        for (i = 0; i < B; i += 7) { /* row i = x0[i], column j = x1[j] */
            double s = 0.0;
            size_t k;
            j = (i * 5 + 3) % B;
            for (k = 0; k < D; k++) s += ((double)x0[i * D + k] - x1[j * D + k]) * ((double)x0[i * D + k] - x1[j * D + k]);
            if (fabs(s - cost2[i * B + j]) > 1e-9 * s) idx_ok = 0;
        }
        CHECK(idx_ok, "prg_ot_cost_ref: cost[i][j] is not ||x0_i - x1_j||^2");
        CHECK(prg_ot_assign(perm, cost, B) == PRG_OK && is_perm(perm, B), "assign B=%d", B);
        for (i = 0; i < B; i++)
            for (j = i + 1; j < B; j++)
                if (cost[i * B + perm[j]] + cost[j * B + perm[i]] < cost[i * B + perm[i]] + cost[j * B + perm[j]] - 1e-9)
                    improvable++;
        CHECK(improvable == 0, "%d pair swaps improve the B=%d assignment", improvable, B);
        for (i = 0; i < B; i++) id[i] = i;
        CHECK(perm_cost(cost, perm, B) <= perm_cost(cost, id, B), "worse than the identity");
        cost[5 * B + 7] = NAN;
        CHECK(prg_ot_assign(perm, cost, B) == PRG_ERR_NUMERIC, "NaN cost accepted");
        CHECK(prg_ot_assign(perm, cost, 0) == PRG_ERR_ARG, "n = 0 accepted");
        prg_free(x0); prg_free(x1); prg_free(cost); prg_free(cost2);
    }
}

static void test_pairs(void) {
    enum { B = 64, D = 48 };
    float *x1 = falloc(B * D), *xt = falloc(B * D), *tg = falloc(B * D), *x0 = falloc(B * D);
    float *xt2 = falloc(B * D), *tg2 = falloc(B * D), t[B], t2[B];
    prg_rng r, r2;
    size_t i;
    int b, ok = 1, t_ok = 1;
    double mean = 0.0, var = 0.0, worst = 0.0;

    prg_rng_seed(&r, 5, 0);
    fill_normal(x1, B * D, &r);
    /* ICFM */
    prg_rng_seed(&r, 77, 1);
    prg_flow_icfm_pairs(xt, tg, t, x0, x1, B, D, &r);
    prg_rng_seed(&r, 77, 1);
    prg_flow_icfm_pairs(xt2, tg2, t2, NULL, x1, B, D, &r);
    CHECK(memcmp(xt, xt2, B * D * 4) == 0 && memcmp(tg, tg2, B * D * 4) == 0 && memcmp(t, t2, sizeof t) == 0,
          "ICFM pairs not reproducible from the seed (or x0 = NULL changes them)");
    prg_rng_seed(&r2, 77, 1); /* the stated draw order: B*D normals, then B uniforms */
    for (i = 0; i < B * D; i++) if (x0[i] != prg_rng_normal(&r2)) ok = 0;
    for (b = 0; b < B; b++) if (t[b] != prg_rng_uniform(&r2)) ok = 0;
    CHECK(ok, "ICFM draw order differs from the documentation");
    for (b = 0; b < B; b++) {
        if (!(t[b] >= 0.0f && t[b] < 1.0f)) t_ok = 0;
        for (i = 0; i < D; i++) {
            size_t k = b * D + i;
            double want = (1.0 - t[b]) * x0[k] + (double)t[b] * x1[k];
            double e = fabs(xt[k] - want) / (fabs(x0[k]) + fabs(x1[k]) + 1e-30);
            if (e > worst) worst = e;
            if (tg[k] != x1[k] - x0[k]) ok = 0;
            mean += x0[k];
            var += (double)x0[k] * x0[k];
        }
    }
    mean /= B * D;
    var = var / (B * D) - mean * mean;
    CHECK(t_ok, "t outside [0, 1)");
    CHECK(ok, "target != x1 - x0");
    CHECK(worst < 2e-7, "x_t off the line by %g", worst);
    CHECK(fabs(mean) < 5.0 / sqrt(B * D) && fabs(var - 1.0) < 0.1, "x0 not N(0,1): mean %g var %g", mean, var);

    /* GVP */
    prg_rng_seed(&r, 9, 2);
    prg_flow_gvp_pairs(xt, tg, t, x1, B, D, &r);
    prg_rng_seed(&r2, 9, 2);
    worst = 0.0;
    fill_normal(x0, B * D, &r2); /* eps */
    t_ok = 1;
    for (b = 0; b < B; b++) {
        const double hp = 1.5707963267948966, u = prg_rng_uniform(&r2);
        double tt = 1e-5 + (1.0 - 1e-5) * u;
        if (!(t[b] >= 1e-5f && t[b] < 1.0f) || fabs(t[b] - tt) > 1e-7) t_ok = 0;
        tt = t[b];
        for (i = 0; i < D; i++) {
            size_t k = b * D + i;
            double wx = cos(hp * tt) * x1[k] + sin(hp * tt) * x0[k];
            double wv = -hp * sin(hp * tt) * x1[k] + hp * cos(hp * tt) * x0[k];
            double s = fabs(x1[k]) + fabs(x0[k]);
            if (fabs(xt[k] - wx) / s > worst) worst = fabs(xt[k] - wx) / s;
            if (fabs(tg[k] - wv) / (hp * s) > worst) worst = fabs(tg[k] - wv) / (hp * s);
        }
    }
    CHECK(t_ok, "GVP t not U[1e-5, 1) as drawn");
    CHECK(worst < 3e-7, "GVP x_t / target off by %g", worst);

    {   /* OT pairs: when x1 is a permutation of x0 the matching must undo it */
        int i0[B], i1[B], sigma[B], cnt[B], k;
        double chi = 0.0;
        for (b = 0; b < B; b++) sigma[b] = (b * 29 + 11) % B; /* 29 is prime to 64 */
        for (b = 0; b < B; b++) memcpy(x0 + (size_t)sigma[b] * D, x1 + (size_t)b * D, D * 4); /* x0[sigma b] = x1[b] */
        ok = 1;
        memset(cnt, 0, sizeof cnt);
        for (k = 0; k < 40; k++) {
            CHECK(prg_ot_pairs(i0, i1, x0, x1, B, D, &r) == PRG_OK, "ot_pairs");
            for (b = 0; b < B; b++) {
                if (sigma[i1[b]] != i0[b]) ok = 0;
                cnt[i0[b]]++;
            }
        }
        CHECK(ok, "OT pairing does not recover a permutation of the same points");
        for (b = 0; b < B; b++) chi += (cnt[b] - 40.0) * (cnt[b] - 40.0) / 40.0;
        /* 63 degrees of freedom: mean 63, sd ~11; 130 is far in the tail */
        CHECK(chi < 130.0, "pair draws not uniform: chi^2 = %g", chi);
    }
    {   /* full OT-CFM pairs: every output pair is a matched pair of the drawn noise */
        int perm[B], k, found = 1, matched = 1;
        double *cost = (double *)prg_alloc(B * B * sizeof(double));
        float *noise = falloc(B * D);
        prg_rng_seed(&r, 31, 3);
        CHECK(prg_flow_ot_pairs(xt, tg, t, x0, x1, B, D, &r) == PRG_OK, "flow_ot_pairs");
        prg_rng_seed(&r2, 31, 3);
        fill_normal(noise, B * D, &r2);
        prg_ot_cost(cost, noise, x1, B, D);
        CHECK(prg_ot_assign(perm, cost, B) == PRG_OK, "assign");
        worst = 0.0;
        for (b = 0; b < B; b++) {
            int a = -1, c = -1;
            for (k = 0; k < B && a < 0; k++) if (!memcmp(x0 + b * D, noise + k * D, D * 4)) a = k;
            for (k = 0; k < B && c < 0; k++) {
                size_t q;
                int eq = 1;
                for (q = 0; q < D; q++) if (tg[b * D + q] != x1[k * D + q] - x0[b * D + q]) eq = 0;
                if (eq) c = k;
            }
            if (a < 0 || c < 0) { found = 0; continue; }
            if (perm[a] != c) matched = 0;
            for (k = 0; k < D; k++) {
                double want = (1.0 - t[b]) * x0[b * D + k] + (double)t[b] * x1[c * D + k];
                if (fabs(xt[b * D + k] - want) > worst) worst = fabs(xt[b * D + k] - want);
            }
        }
        CHECK(found, "an OT-CFM pair is not (noise row, data row)");
        CHECK(matched, "an OT-CFM pair is not an optimal-matching pair");
        CHECK(worst < 2e-6, "OT-CFM x_t off by %g", worst);
        prg_free(cost);
        prg_free(noise);
    }
    prg_free(x1); prg_free(xt); prg_free(tg); prg_free(x0); prg_free(xt2); prg_free(tg2);
}

/* ---- samplers ------------------------------------------------------------ */
/* Four independent scalar ODEs per sample, with known solutions at t = 1:
     y0' = 4 cos(4t) y0   -> y0(0) exp(sin 4)
     y1' = -y1^2          -> y1(0) / (1 + y1(0))
     y2' = 4 y2           -> y2(0) e^4
     y3' = (2t + 1) y3    -> y3(0) e^2
   (fast growth keeps the RK4 error far above float32 rounding). */
enum { OD = 4, OB = 3 };
typedef struct ode_ctx { int calls; float last_t[64]; int fail_after; } ode_ctx;

static prg_result ode_vel(void *ctx, int batch, const float *x, const float *t, float *v) {
    ode_ctx *c = (ode_ctx *)ctx;
    int b;
    if (c->fail_after >= 0 && c->calls >= c->fail_after) return prg__fail(PRG_ERR_NUMERIC, "test failure");
    if (c->calls < 64) c->last_t[c->calls] = t[0];
    c->calls++;
    for (b = 0; b < batch; b++) {
        const float *y = x + b * OD;
        float *w = v + b * OD;
        w[0] = (float)(4.0 * cos(4.0 * t[b]) * y[0]);
        w[1] = (float)(-(double)y[1] * y[1]);
        w[2] = (float)(4.0 * y[2]);
        w[3] = (float)((2.0 * t[b] + 1.0) * y[3]);
    }
    return PRG_OK;
}

/* Largest relative error at t = 1 over all samples and components. */
static double sample_error(int method, int steps, int *calls) {
    static const float init[OB * OD] = {1.0f, 0.5f, 1.0f, 1.0f, -0.7f, 1.0f, -0.5f, 0.3f, 0.3f, 2.0f, 0.2f, -2.0f};
    float x[OB * OD];
    ode_ctx c;
    double e = 0.0;
    int k;
    prg_result rc;
    memcpy(x, init, sizeof x);
    memset(&c, 0, sizeof c);
    c.fail_after = -1;
    rc = method == 0 ? prg_sample_euler(ode_vel, &c, steps, OB, OD, x)
       : method == 1 ? prg_sample_heun(ode_vel, &c, steps, OB, OD, x)
                     : prg_sample_rk4(ode_vel, &c, steps, OB, OD, x);
    CHECK(rc == PRG_OK, "sampler %d", method);
    for (k = 0; k < OB * OD; k++) {
        double y0 = init[k], want;
        switch (k % OD) {
        case 0: want = y0 * exp(sin(4.0)); break;
        case 1: want = y0 / (1.0 + y0); break;
        case 2: want = y0 * exp(4.0); break;
        default: want = y0 * exp(2.0);
        }
        if (fabs(x[k] - want) / fabs(want) > e) e = fabs(x[k] - want) / fabs(want);
    }
    if (calls) *calls = c.calls;
    return e;
}

static void test_samplers(void) {
    static const char *names[3] = {"Euler", "Heun", "RK4"};
    /* orders p = log2(e(n) / e(2n)), in the asymptotic range and with errors
       far above float32 rounding; RK4 is measured once, 16 -> 32 steps (at
       64 steps its error, ~5e-7, would be rounding) */
    static const int n0[3] = {128, 64, 16}, pairs[3] = {2, 2, 1};
    static const double lo[3] = {0.9, 1.85, 3.7}, hi[3] = {1.1, 2.15, 4.3};
    int m, calls, k;
    ode_ctx c;
    float x[OD] = {0};
    for (m = 0; m < 3; m++) {
        double e[3];
        for (k = 0; k <= pairs[m]; k++) e[k] = sample_error(m, n0[m] << k, k == 1 ? &calls : NULL);
        for (k = 0; k < pairs[m]; k++) {
            double p = log(e[k] / e[k + 1]) / log(2.0);
            printf("%s: relative error %.3g at %d steps, %.3g at %d: order %.3f\n", names[m], e[k], n0[m] << k,
                   e[k + 1], n0[m] << (k + 1), p);
            CHECK(p > lo[m] && p < hi[m], "%s order %.3f outside (%.2f, %.2f)", names[m], p, lo[m], hi[m]);
        }
        CHECK(calls == 2 * n0[m] * (m == 0 ? 1 : m == 1 ? 2 : 4), "%s: %d velocity calls", names[m], calls);
    }
    /* the grid: Euler evaluates at t_k = k/steps */
    memset(&c, 0, sizeof c);
    c.fail_after = -1;
    CHECK(prg_sample_euler(ode_vel, &c, 5, 1, OD, x) == PRG_OK, "euler 5");
    for (k = 0; k < 5; k++) CHECK(c.last_t[k] == (float)(k / 5.0), "Euler time %d: %g", k, c.last_t[k]);
    /* the GVP path runs the grid backwards: t_k = 1 - k/steps */
    memset(&c, 0, sizeof c);
    c.fail_after = -1;
    CHECK(prg_sample_path(PRG_PATH_GVP, PRG_SOLVER_EULER, ode_vel, &c, 5, 1, OD, x) == PRG_OK, "gvp euler 5");
    for (k = 0; k < 5; k++) CHECK(c.last_t[k] == (float)(1.0 - k / 5.0), "GVP Euler time %d: %g", k, c.last_t[k]);
    /* callback errors pass through */
    memset(&c, 0, sizeof c);
    c.fail_after = 3;
    CHECK(prg_sample_rk4(ode_vel, &c, 5, 1, OD, x) == PRG_ERR_NUMERIC, "callback error not returned");
    CHECK(prg_sample_heun(ode_vel, &c, 0, 1, OD, x) == PRG_ERR_ARG, "0 steps accepted");
}

/* ---- reverse Euler (docs/METHOD.md A.2) ---------------------------------------- */
/* v(tau, x) = theta * tau * x, with a vjp; records the times it is called at. */
typedef struct lin_ctx {
    double theta, dtheta;
    int calls;
    float times[64];
    float saved_x[16], saved_t[16];
    int saved_batch, dim;
} lin_ctx;

static prg_result lin_vel(void *ctx, int batch, const float *x, const float *t, float *v) {
    lin_ctx *c = (lin_ctx *)ctx;
    int b, i;
    if (c->calls < 64) c->times[c->calls] = t[0];
    c->calls++;
    c->saved_batch = batch;
    for (b = 0; b < batch; b++) {
        c->saved_t[b] = t[b];
        for (i = 0; i < c->dim; i++) {
            c->saved_x[b * c->dim + i] = x[b * c->dim + i];
            v[b * c->dim + i] = (float)(c->theta * t[b] * x[b * c->dim + i]);
        }
    }
    return PRG_OK;
}

static prg_result lin_vjp(void *ctx, const float *dv, float *dx) {
    lin_ctx *c = (lin_ctx *)ctx;
    int b, i;
    for (b = 0; b < c->saved_batch; b++)
        for (i = 0; i < c->dim; i++) {
            int k = b * c->dim + i;
            dx[k] += (float)(c->theta * c->saved_t[b] * dv[k]);
            c->dtheta += (double)c->saved_t[b] * c->saved_x[k] * dv[k];
        }
    return PRG_OK;
}

static void test_reverse_euler(void) {
    lin_ctx c;
    float x[2] = {0.9f, -2.7f}, z[2], states[3 * 2];
    int k;
    memset(&c, 0, sizeof c);
    c.theta = 1.0;
    c.dim = 1;
    /* t_span 4, t_cutoff 1: h = 1/3, M = 2 steps at tau = 1, 2/3:
       z = x (1 - 1/3)(1 - 2/9) = 14/27 x */
    CHECK(prg_ode_reverse_euler_steps(4, 1) == 2, "steps(4, 1)");
    CHECK(prg_ode_reverse_euler(lin_vel, &c, 4, 1, 2, 1, x, z, states) == PRG_OK, "reverse");
    CHECK(c.calls == 2 && c.times[0] == 1.0f && c.times[1] == (float)(2.0 / 3.0), "times %g %g (%d calls)",
          c.times[0], c.times[1], c.calls);
    CHECK(fabs(z[0] - 0.9 * 14.0 / 27.0) < 1e-6 && fabs(z[1] + 2.7 * 14.0 / 27.0) < 1e-6, "z = %g %g, want %g %g",
          z[0], z[1], 0.9 * 14 / 27.0, -2.7 * 14 / 27.0);
    CHECK(states[0] == x[0] && states[1] == x[1] && fabs(states[2] - 0.6) < 1e-7 && states[4] == z[0] &&
          states[5] == z[1], "stored states");
    /* in place, no states: same result */
    {
        float y[2] = {0.9f, -2.7f};
        CHECK(prg_ode_reverse_euler(lin_vel, &c, 4, 1, 2, 1, y, y, NULL) == PRG_OK && y[0] == z[0] && y[1] == z[1],
              "in place");
    }
    /* the reference configs: Tiny-ImageNet (20, 15): tau = 1, 18/19, 17/19, 16/19 */
    c.calls = 0;
    CHECK(prg_ode_reverse_euler(lin_vel, &c, 20, 15, 2, 1, x, z, NULL) == PRG_OK && c.calls == 4, "tiny calls");
    for (k = 0; k < 4; k++) CHECK(c.times[k] == (float)(1.0 - k / 19.0), "tiny tau_%d = %g", k, c.times[k]);
    c.calls = 0;
    CHECK(prg_ode_reverse_euler(lin_vel, &c, 32, 0, 2, 1, x, z, NULL) == PRG_OK && c.calls == 31 &&
          c.times[30] == (float)(1.0 / 31.0), "CIFAR: 31 steps down to tau = 1/31");
    CHECK(prg_ode_reverse_euler_steps(32, 20) == 11, "ImageNet: 11 steps");
    CHECK(prg_ode_reverse_euler(lin_vel, &c, 4, 3, 2, 1, x, z, NULL) == PRG_ERR_ARG, "cutoff too large accepted");
    CHECK(prg_ode_reverse_euler(lin_vel, &c, 1, 0, 2, 1, x, z, NULL) == PRG_ERR_ARG, "t_span 1 accepted");

    {   /* GVP encoder (A.4): t_span 4: 3 steps at t = 0, 1/3, 2/3 with +v:
           z = x (1 + 0)(1 + 1/9)(1 + 2/9) = 110/81 x; t_cutoff 3: 2 steps, 10/9 x */
        float y[2], st[4 * 2];
        c.theta = 1.0;
        c.calls = 0;
        CHECK(prg_ode_gvp_euler_steps(4, 0) == 3 && prg_ode_gvp_euler_steps(4, 3) == 2 &&
              prg_ode_gvp_euler_steps(4, 1) == -1 && prg_ode_gvp_euler_steps(4, 5) == -1, "gvp steps");
        CHECK(prg_ode_gvp_euler(lin_vel, &c, 4, 0, 2, 1, x, y, st) == PRG_OK && c.calls == 3, "gvp");
        CHECK(c.times[0] == 0.0f && c.times[1] == (float)(1.0 / 3) && c.times[2] == (float)(2.0 / 3), "gvp times");
        CHECK(fabs(y[0] - 0.9 * 110 / 81.0) < 1e-6 && fabs(y[1] + 2.7 * 110 / 81.0) < 1e-6 && st[6] == y[0],
              "gvp z = %g, want %g", y[0], 0.9 * 110 / 81.0);
        CHECK(prg_ode_gvp_euler(lin_vel, &c, 4, 3, 2, 1, x, y, NULL) == PRG_OK &&
              fabs(y[0] - 0.9 * 10 / 9.0) < 1e-6, "gvp cutoff 3: z = %g", y[0]);
        CHECK(prg_ode_gvp_euler(lin_vel, &c, 4, 1, 2, 1, x, y, NULL) == PRG_ERR_ARG, "gvp cutoff 1 accepted");
    }
    {   /* right-end (torchdiffeq adjoint) gradient against docs/METHOD.md A.3, by hand:
           a_{k-1} = a_k (1 - h theta tau_k), g += -h tau_k x_k a_k, k = M..1 */
        const int N = 6, cut = 1, M = 4;
        const double h = 1.0 / 5;
        float st[5 * 2], dz[2] = {1.0f, 0.5f}, dx[2] = {0, 0};
        double a[2], g = 0.0;
        int b;
        c.theta = 0.8;
        c.dtheta = 0.0;
        CHECK(prg_ode_reverse_euler(lin_vel, &c, N, cut, 2, 1, x, z, st) == PRG_OK, "fwd");
        CHECK(prg_ode_reverse_euler_backward(lin_vel, lin_vjp, &c, N, cut, 2, 1, st, dz, dx, 1) == PRG_OK, "bwd");
        for (b = 0; b < 2; b++) {
            a[b] = dz[b];
            for (k = M; k >= 1; k--) {
                double tau = 1.0 - k * h;
                g += -h * tau * st[k * 2 + b] * a[b];
                a[b] *= 1.0 - h * 0.8 * tau;
            }
        }
        CHECK(fabs(c.dtheta - g) < 1e-6 && fabs(dx[0] - a[0]) < 1e-6 && fabs(dx[1] - a[1]) < 1e-6,
              "right-end gradient %g, want %g", c.dtheta, g);
    }
}

/* ---- exact backward against finite differences ------------------------- */
/* v(tau, x) = tanh(W x + tau u + c), D = 4; parameters W, u, c. */
enum { FD_D = 4, FD_B = 2, FD_NP = FD_D * FD_D + 2 * FD_D };
typedef struct tanh_ctx {
    double p[FD_NP], g[FD_NP]; /* W [D][D], u [D], c [D] */
    float sx[FD_B * FD_D], st[FD_B], sy[FD_B * FD_D];
    int batch;
} tanh_ctx;

static prg_result tanh_vel(void *ctx, int batch, const float *x, const float *t, float *v) {
    tanh_ctx *c = (tanh_ctx *)ctx;
    int b, i, j;
    c->batch = batch;
    for (b = 0; b < batch; b++) {
        c->st[b] = t[b];
        for (i = 0; i < FD_D; i++) {
            double s = c->p[FD_D * FD_D + i] * t[b] + c->p[FD_D * FD_D + FD_D + i];
            for (j = 0; j < FD_D; j++) s += c->p[i * FD_D + j] * x[b * FD_D + j];
            c->sx[b * FD_D + i] = x[b * FD_D + i];
            v[b * FD_D + i] = c->sy[b * FD_D + i] = (float)tanh(s);
        }
    }
    return PRG_OK;
}

static prg_result tanh_vjp(void *ctx, const float *dv, float *dx) {
    tanh_ctx *c = (tanh_ctx *)ctx;
    int b, i, j;
    for (b = 0; b < c->batch; b++)
        for (i = 0; i < FD_D; i++) {
            double y = c->sy[b * FD_D + i], gs = dv[b * FD_D + i] * (1.0 - y * y);
            for (j = 0; j < FD_D; j++) {
                dx[b * FD_D + j] += (float)(c->p[i * FD_D + j] * gs);
                c->g[i * FD_D + j] += gs * c->sx[b * FD_D + j];
            }
            c->g[FD_D * FD_D + i] += gs * c->st[b];
            c->g[FD_D * FD_D + FD_D + i] += gs;
        }
    return PRG_OK;
}

static double fd_loss(tanh_ctx *c, const float *x, const float *w, int N, int cut, int gvp) {
    float z[FD_B * FD_D];
    double s = 0.0;
    int i;
    if (gvp) prg_ode_gvp_euler(tanh_vel, c, N, cut, FD_B, FD_D, x, z, NULL);
    else prg_ode_reverse_euler(tanh_vel, c, N, cut, FD_B, FD_D, x, z, NULL);
    for (i = 0; i < FD_B * FD_D; i++) s += (double)w[i] * z[i];
    return s;
}

/* gvp = 0: reverse encoder, t_span 6, t_cutoff 1 (4 steps);
   gvp = 1: GVP encoder, t_span 6, t_cutoff 5 (4 steps). */
static void test_backward_fd(int gvp) {
    const int N = 6, cut = gvp ? 5 : 1;
    prg_result (*fwd)(prg_velocity_fn, void *, int, int, int, size_t, const float *, float *, float *) =
        gvp ? prg_ode_gvp_euler : prg_ode_reverse_euler;
    prg_result (*bwd)(prg_velocity_fn, prg_velocity_vjp_fn, void *, int, int, int, size_t, const float *,
                      const float *, float *, int) = gvp ? prg_ode_gvp_euler_backward : prg_ode_reverse_euler_backward;
    tanh_ctx c;
    prg_rng r;
    float x[FD_B * FD_D], w[FD_B * FD_D], dx[FD_B * FD_D], st[(4 + 1) * FD_B * FD_D], z[FD_B * FD_D];
    double gp[FD_NP], gr[FD_NP], err = 0.0, err_right = 0.0, scale = 0.0;
    const double eps = 1e-2;
    int i;
    memset(&c, 0, sizeof c);
    prg_rng_seed(&r, 123, 0);
    for (i = 0; i < FD_NP; i++) c.p[i] = 0.6 * prg_rng_normal(&r);
    fill_normal(x, FD_B * FD_D, &r);
    fill_normal(w, FD_B * FD_D, &r);
    memset(dx, 0, sizeof dx);
    CHECK(fwd(tanh_vel, &c, N, cut, FD_B, FD_D, x, z, st) == PRG_OK, "fwd");
    CHECK(bwd(tanh_vel, tanh_vjp, &c, N, cut, FD_B, FD_D, st, w, dx, 0) == PRG_OK, "bwd");
    memcpy(gp, c.g, sizeof gp);
    memset(c.g, 0, sizeof c.g);
    CHECK(bwd(tanh_vel, tanh_vjp, &c, N, cut, FD_B, FD_D, st, w, NULL, 1) == PRG_OK, "bwd r");
    memcpy(gr, c.g, sizeof gr);
    for (i = 0; i < FD_NP; i++) { /* parameters */
        double keep = c.p[i], lp, lm, fd;
        c.p[i] = keep + eps;
        lp = fd_loss(&c, x, w, N, cut, gvp);
        c.p[i] = keep - eps;
        lm = fd_loss(&c, x, w, N, cut, gvp);
        c.p[i] = keep;
        fd = (lp - lm) / (2 * eps);
        if (fabs(fd) > scale) scale = fabs(fd);
        if (fabs(gp[i] - fd) > err) err = fabs(gp[i] - fd);
        if (fabs(gr[i] - fd) > err_right) err_right = fabs(gr[i] - fd);
    }
    for (i = 0; i < FD_B * FD_D; i++) { /* input */
        float keep = x[i];
        double lp, lm, fd;
        x[i] = keep + (float)eps;
        lp = fd_loss(&c, x, w, N, cut, gvp);
        x[i] = keep - (float)eps;
        lm = fd_loss(&c, x, w, N, cut, gvp);
        x[i] = keep;
        fd = (lp - lm) / ((double)(keep + (float)eps) - (double)(keep - (float)eps));
        if (fabs(dx[i] - fd) > err) err = fabs(dx[i] - fd);
    }
    printf("%s Euler backward: max |grad - central FD| = %.3g (largest gradient %.3g); "
           "right-end (adjoint) variant: %.3g\n", gvp ? "GVP" : "reverse", err, scale, err_right);
    CHECK(err < 5e-4 * scale, "exact backward differs from finite differences by %g (scale %g)", err, scale);
    CHECK(err_right > 20 * err, "right-end variant should not match the discrete gradient (%g vs %g)", err_right, err);
}

/* ---- the pieces together: train a small field with ICFM / OT-CFM + Adam ---- */
/* 1-D data N(2, 0.5^2) from noise N(0, 1).  Field v(t, x) = a(t) x + b(t) with
   cubic a, b: the exact ICFM field is of this form up to a smooth a(t), and
   its flow maps N(0,1) onto N(2, 0.25) exactly. */
enum { TP = 8 };
static void features(double *f, double t, double x) {
    f[0] = x; f[1] = x * t; f[2] = x * t * t; f[3] = x * t * t * t;
    f[4] = 1; f[5] = t; f[6] = t * t; f[7] = t * t * t;
}
static prg_result cubic_vel(void *ctx, int batch, const float *x, const float *t, float *v) {
    const float *th = (const float *)ctx;
    int b, j;
    for (b = 0; b < batch; b++) {
        double f[TP], s = 0.0;
        features(f, t[b], x[b]);
        for (j = 0; j < TP; j++) s += th[j] * f[j];
        v[b] = (float)s;
    }
    return PRG_OK;
}

static void test_train_small_flow(int ot) {
    /* OT-CFM: a smaller batch, as the O(B^3) assignment runs every step */
    enum { BMAX = 256, NS = 4096 };
    const int B = ot ? 64 : BMAX, steps = ot ? 1500 : 3000;
    float th[TP], g[TP], x1[BMAX], xt[BMAX], tg[BMAX], t[BMAX], v[BMAX], *xs = falloc(NS);
    int fails = 0;
    prg_adam_config cfg;
    prg_adam *opt;
    prg_rng r;
    int step, b, j;
    double loss = 0.0, mean = 0.0, var = 0.0;
    memset(th, 0, sizeof th);
    prg_rng_seed(&r, 2024, (uint64_t)ot);
    prg_adam_config_default(&cfg);
    CHECK(prg_adam_create(&opt, TP, &cfg) == PRG_OK, "create");
    for (step = 0; step < steps; step++) {
        double gd[TP] = {0};
        for (b = 0; b < B; b++) x1[b] = 2.0f + 0.5f * prg_rng_normal(&r);
        if (ot)
            fails += prg_flow_ot_pairs(xt, tg, t, NULL, x1, B, 1, &r) != PRG_OK;
        else
            prg_flow_icfm_pairs(xt, tg, t, NULL, x1, B, 1, &r);
        cubic_vel(th, B, xt, t, v);
        loss = 0.0;
        for (b = 0; b < B; b++) { /* the reference's reduction: 0.5 sum_c, mean over the batch */
            double f[TP], d = (double)v[b] - tg[b];
            loss += 0.5 * d * d / B;
            features(f, t[b], xt[b]);
            for (j = 0; j < TP; j++) gd[j] += d * f[j] / B;
        }
        for (j = 0; j < TP; j++) g[j] = (float)gd[j];
        fails += prg_adam_step(opt, th, g, step < steps * 2 / 3 ? 1e-2 : 2e-3, NULL) != PRG_OK;
    }
    CHECK(fails == 0, "%d training steps failed", fails);
    for (b = 0; b < NS; b++) xs[b] = prg_rng_normal(&r);
    CHECK(prg_sample_rk4(cubic_vel, th, 20, NS, 1, xs) == PRG_OK, "sample");
    for (b = 0; b < NS; b++) mean += xs[b] / NS;
    for (b = 0; b < NS; b++) var += (xs[b] - mean) * (xs[b] - mean) / (NS - 1);
    printf("%s-trained cubic field, batch %d, %d Adam steps: last loss %.4f; RK4 samples: mean %.4f "
           "(want 2), std %.4f (want 0.5)\n", ot ? "OT-CFM" : "ICFM", B, steps, loss, mean, sqrt(var));
    /* sampling error of the mean with 4096 samples is ~0.008 */
    CHECK(fabs(mean - 2.0) < 0.05 && fabs(sqrt(var) - 0.5) < 0.05, "%s flow: samples have mean %g, std %g",
          ot ? "OT-CFM" : "ICFM", mean, sqrt(var));
    prg_adam_free(opt);
    prg_free(xs);
}

/* prg_ot_cost (norms in double + the float32 GEMM's cross terms) against
   the plain double loop: the largest error relative to the entry's scale
   ||x0_i||^2 + ||x1_j||^2, the optimal assignment of both matrices, and, on
   batches of 2..7 (large dim, so the GEMM form is the one used), the
   assignment from the GEMM costs against an exhaustive search on the exact
   costs. */
static double ot_cost_rel_err(const double *c, const double *ref, const float *x0, const float *x1, int B, size_t D) {
    double e = 0.0;
    int i, j;
    for (i = 0; i < B; i++)
        for (j = 0; j < B; j++) {
            double n = 0.0, d;
            size_t k;
            for (k = 0; k < D; k++) n += (double)x0[i * D + k] * x0[i * D + k] + (double)x1[j * D + k] * x1[j * D + k];
            d = fabs(c[i * B + j] - ref[i * B + j]) / n;
            if (d > e) e = d;
        }
    return e;
}

static void test_ot_cost_gemm(void) {
    /* (batch, dim, data kind): 0 noise vs noise, 1 noise vs images in [-1, 1]
       with a shared offset (like normalised data), the OT-CFM shape last */
    static const int shapes[4][3] = {{96, 300, 0}, {33, 777, 1}, {64, 2048, 0}, {128, 3072, 1}};
    prg_rng r;
    int s, n, trial, worse = 0, trials = 0;
    double worst_rel = 0.0;
    prg_rng_seed(&r, 21, 0);
    for (s = 0; s < 4; s++) {
        const int B = shapes[s][0];
        const size_t D = (size_t)shapes[s][1];
        float *x0 = falloc((size_t)B * D), *x1 = falloc((size_t)B * D);
        double *c = (double *)prg_alloc((size_t)B * B * sizeof(double));
        double *ref = (double *)prg_alloc((size_t)B * B * sizeof(double));
        int *p = (int *)prg_alloc((size_t)B * sizeof(int)), *q = (int *)prg_alloc((size_t)B * sizeof(int));
        size_t k;
        /* a D-term float32 dot product errs by ~ u sqrt(D) sum |x0_k x1_k| (u = 2^-24,
           random rounding), and 2 sum |x0_k x1_k| <= ||x0||^2 + ||x1||^2 */
        double e, bound = 5.96e-8 * sqrt((double)D);
        fill_normal(x0, (size_t)B * D, &r);
        for (k = 0; k < (size_t)B * D; k++)
            x1[k] = shapes[s][2] ? 0.4f + 1.2f * (2.0f * prg_rng_uniform(&r) - 1.0f) : prg_rng_normal(&r);
        prg_ot_cost(c, x0, x1, B, D);
        {   /* the parts along the pixel axis (4 at 3072) are shared out: the same
               bits for 1, 2 and 3 threads */
            int thr, threads = prg_get_num_threads();
            for (thr = 1; thr <= 3; thr++) {
                prg_set_num_threads(thr);
                prg_ot_cost(ref, x0, x1, B, D);
                CHECK(memcmp(c, ref, (size_t)B * B * sizeof(double)) == 0,
                      "OT cost %d x %zu: %d threads change the bits", B, D, thr);
            }
            prg_set_num_threads(threads);
        }
        prg_ot_cost_ref(ref, x0, x1, B, D);
        e = ot_cost_rel_err(c, ref, x0, x1, B, D);
        printf("OT cost %d x %zu: GEMM form vs loop, largest error / (|x0|^2 + |x1|^2) = %.3g (bound %.3g)\n", B, D, e,
               bound);
        CHECK(e < bound, "OT cost %d x %zu: GEMM form error %.3g above %.3g", B, D, e, bound);
        CHECK(e > 0.0, "OT cost %d x %zu: the GEMM form equals the loop bit for bit (not taken?)", B, D);
        CHECK(prg_ot_assign(p, c, B) == PRG_OK && prg_ot_assign(q, ref, B) == PRG_OK, "assign %d", B);
        CHECK(memcmp(p, q, (size_t)B * sizeof(int)) == 0, "OT %d x %zu: the GEMM costs change the assignment", B, D);
        prg_free(x0); prg_free(x1); prg_free(c); prg_free(ref); prg_free(p); prg_free(q);
    }
    for (n = 2; n <= 7; n++) {
        const size_t D = 20000; /* n^2 D >= 65536: the GEMM form */
        float *x0 = falloc((size_t)n * D), *x1 = falloc((size_t)n * D);
        for (trial = 0; trial < (n <= 5 ? 12 : 4); trial++) {
            double c[49], ref[49], e;
            int p[7];
            fill_normal(x0, (size_t)n * D, &r);
            fill_normal(x1, (size_t)n * D, &r);
            prg_ot_cost(c, x0, x1, n, D);
            prg_ot_cost_ref(ref, x0, x1, n, D);
            e = ot_cost_rel_err(c, ref, x0, x1, n, D);
            if (e > worst_rel) worst_rel = e;
            if (prg_ot_assign(p, c, n) != PRG_OK || !is_perm(p, n) ||
                perm_cost(ref, p, n) > brute_min(ref, n) * (1.0 + 1e-12))
                worse++;
            trials++;
        }
        prg_free(x0); prg_free(x1);
    }
    CHECK(worse == 0, "%d of %d GEMM-cost assignments (n = 2..7) are not optimal for the exact costs", worse, trials);
    CHECK(worst_rel > 0.0 && worst_rel < 5.96e-8 * sqrt(20000.0), "n = 2..7: GEMM form error %.3g", worst_rel);
    printf("OT cost: %d GEMM-cost assignments n = 2..7 (dim 20000) optimal by exhaustive search on the exact costs\n",
           trials);
}

/* In one dimension the squared-distance optimum pairs the sorted noise with
   the sorted data. */
static void test_ot_1d_sorted(void) {
    enum { B = 128 };
    float x0[B], x1[B];
    double cost[B * B];
    int perm[B], i, j, monotone = 1;
    prg_rng r;
    prg_rng_seed(&r, 8, 8);
    fill_normal(x0, B, &r);
    for (i = 0; i < B; i++) x1[i] = 3.0f * prg_rng_uniform(&r) - 1.0f;
    prg_ot_cost(cost, x0, x1, B, 1);
    CHECK(prg_ot_assign(perm, cost, B) == PRG_OK, "assign 1-D");
    for (i = 0; i < B; i++)
        for (j = 0; j < B; j++)
            if (x0[i] < x0[j] && !(x1[perm[i]] <= x1[perm[j]])) monotone = 0;
    CHECK(monotone, "1-D optimal assignment is not monotone");
}

/* ---- sampling along the model's path --------------------------------------- */
/* The velocity wrapper programs wrote before prg_unet_sample_path. */
static prg_result wrapper_vel(void *net, int b, const float *x, const float *t, float *v) {
    return prg_unet_forward((prg_unet *)net, b, x, t, v);
}

/* The MONO16 U-Net of tools/ref_unet.py with its formula weights as a fixed
   velocity field: prg_unet_sample on a GVP net (t = 1 -> 0) and an ICFM net
   (t = 0 -> 1) against tools/ref_sample.py's float64 integrations. */
static double max_rel(const float *a, const float *ref, size_t n) {
    double d = 0.0, m = 0.0;
    size_t i;
    for (i = 0; i < n; i++) {
        if (fabs((double)a[i] - ref[i]) > d) d = fabs((double)a[i] - ref[i]);
        if (fabs((double)ref[i]) > m) m = fabs((double)ref[i]);
    }
    return d / m;
}

static void test_sample_path_ref(void) {
    static const struct { const char *name; int loss, solver, steps; const float *ref; } runs[4] = {
        {"GVP Euler", PRG_LOSS_GVP, PRG_SOLVER_EULER, SAMPLE_REF_GVP_EULER_STEPS, sample_ref_gvp_euler},
        {"GVP Heun", PRG_LOSS_GVP, PRG_SOLVER_HEUN, SAMPLE_REF_GVP_HEUN_STEPS, sample_ref_gvp_heun},
        {"GVP RK4", PRG_LOSS_GVP, PRG_SOLVER_RK4, SAMPLE_REF_GVP_RK4_STEPS, sample_ref_gvp_rk4},
        {"ICFM Euler", PRG_LOSS_ICFM, PRG_SOLVER_EULER, SAMPLE_REF_ICFM_EULER_STEPS, sample_ref_icfm_euler}};
    enum { B = SAMPLE_REF_BATCH, N = SAMPLE_REF_BATCH * 256 };
    prg_unet_config cfg;
    prg_unet *net;
    float x0[N], x[N], y[N], z[N], z2[N];
    size_t j;
    int r;
    (void)fill_formula; /* of unet_test_weights.h, not needed here */
    CHECK(prg_unet_config_parse(&cfg, "in_channels=1 out_channels=1 model_channels=32 num_res_blocks=2 "
                                "channel_mult=1,2 attention_ds=1,2 num_heads=2 image_size=16 groups=32") == PRG_OK &&
          prg_unet_create(&net, &cfg, 0) == PRG_OK, "mono16: %s", prg_last_error());
    set_test_weights(net);
    for (j = 0; j < N; j++) /* the script's noise: Box-Muller of hash streams 3000, 3001 */
        x0[j] = (float)(sqrt(-2.0 * log(1.0 - hash_u(3000, j))) * cos(2.0 * 3.14159265358979323846 * hash_u(3001, j)));
    for (r = 0; r < 4; r++) {
        double e;
        prg_unet_set_loss(net, runs[r].loss);
        memcpy(x, x0, sizeof x);
        CHECK(prg_unet_sample(net, runs[r].solver, runs[r].steps, B, x) == PRG_OK, "%s: %s", runs[r].name, prg_last_error());
        e = max_rel(x, runs[r].ref, N);
        printf("%s, %d steps, MONO16 U-Net: prg_unet_sample vs tools/ref_sample.py, max |diff| / max |x| = %.3g\n",
               runs[r].name, runs[r].steps, e);
        CHECK(e < 2e-6, "%s samples differ from the reference by %.3g", runs[r].name, e);
        /* the same through prg_sample_path with the net's path */
        memcpy(y, x0, sizeof y);
        CHECK(prg_sample_path(prg_unet_path(net), runs[r].solver, prg_unet_velocity, net, runs[r].steps, B, 256, y) == PRG_OK &&
              memcmp(x, y, sizeof x) == 0, "%s: prg_sample_path differs from prg_unet_sample", runs[r].name);
    }
    /* a path chosen by the caller (a GVP net sampled on the ICFM path and back):
       bit for bit the old wrapper's solve, for every solver */
    for (r = 0; r < 6; r++) {
        int path = r < 3 ? PRG_PATH_ICFM : PRG_PATH_GVP, solver = r % 3;
        prg_unet_set_loss(net, path == PRG_PATH_ICFM ? PRG_LOSS_GVP : PRG_LOSS_ICFM);
        memcpy(x, x0, sizeof x);
        memcpy(y, x0, sizeof y);
        CHECK(prg_unet_sample_path(net, path, solver, 3, B, x) == PRG_OK &&
              prg_sample_path(path, solver, wrapper_vel, net, 3, B, 256, y) == PRG_OK, "%s path, solver %d: %s",
              prg_path_name(path), solver, prg_last_error());
        CHECK(memcmp(x, y, sizeof x) == 0, "%s path, solver %d: prg_unet_sample_path differs from the wrapper's solve",
              prg_path_name(path), solver);
    }
    CHECK(prg_unet_sample_path(net, 2, 0, 3, B, x) == PRG_ERR_ARG, "unknown path accepted");
    /* the two directions give different samples: the path matters */
    CHECK(max_rel(sample_ref_gvp_euler, sample_ref_icfm_euler, N) > 0.1, "GVP and ICFM references agree");
    /* prg_encode follows the net's path too */
    prg_unet_set_loss(net, PRG_LOSS_GVP);
    CHECK(prg_encode(net, 4, 0, B, x0, z) == PRG_OK &&
          prg_ode_gvp_euler(prg_unet_velocity, net, 4, 0, B, 256, x0, z2, NULL) == PRG_OK && memcmp(z, z2, sizeof z) == 0,
          "prg_encode of a GVP net is not the GVP encoder");
    CHECK(prg_ode_reverse_euler(prg_unet_velocity, net, 4, 0, B, 256, x0, z2, NULL) == PRG_OK && memcmp(z, z2, sizeof z) != 0,
          "GVP and ICFM encoders agree");
    CHECK(prg_unet_sample(net, 3, 4, B, x) == PRG_ERR_ARG && prg_sample_path(2, 0, prg_unet_velocity, net, 4, B, 256, x) == PRG_ERR_ARG,
          "unknown solver / path accepted");
    prg_unet_free(net);
}

int main(void) {
    prg_set_num_threads(2);
    test_ot_assign();
    test_pairs();
    test_samplers();
    test_reverse_euler();
    test_backward_fd(0);
    test_backward_fd(1);
    test_ot_1d_sorted();
    test_ot_cost_gemm();
    test_sample_path_ref();
    test_train_small_flow(0);
    test_train_small_flow(1);
    return prg_test_finish("test_flow");
}
