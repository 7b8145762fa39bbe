/* optim: Adam/AdamW against torch.optim reference values, NaN handling,
   thread-count invariance, exact save/restore, the warm-up + cosine
   schedule, EMA. */
#define PRG_IMPLEMENTATION
#include "../prg.h"
#include "prg_test.h"
#include "fixtures/ref_optim.h"
#include <math.h>
#include <string.h>

/* Largest |a-b| relative to max(|b|, floor). */
static double max_rel(const float *a, const float *b, size_t n, double floor_) {
    double worst = 0.0;
    size_t i;
    for (i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]), s = fabs((double)b[i]);
        d /= s > floor_ ? s : floor_;
        if (!(d <= worst)) worst = d;
    }
    return worst;
}

static void torch_case(const char *name, int decoupled, double b1, double b2, double eps, double wd,
                       const float *ref_p, const float *ref_m, const float *ref_v) {
    prg_adam_config cfg;
    prg_adam *opt;
    float p[REF_N];
    int s;
    double worst = 0.0;
    prg_adam_config_default(&cfg);
    cfg.decoupled = decoupled;
    cfg.beta1 = b1;
    cfg.beta2 = b2;
    cfg.eps = eps;
    cfg.weight_decay = wd;
    CHECK(prg_adam_create(&opt, REF_N, &cfg) == PRG_OK, "%s: create: %s", name, prg_last_error());
    memcpy(p, ref_p0, sizeof p);
    for (s = 0; s < REF_STEPS; s++) {
        double r;
        CHECK(prg_adam_step(opt, p, ref_grads + s * REF_N, ref_lrs[s], NULL) == PRG_OK, "%s step %d", name, s);
        r = max_rel(p, ref_p + s * REF_N, REF_N, 1e-3);
        if (r > worst) worst = r;
    }
    /* same float32 roundings as ATen (its CPU add-with-alpha and addcmul are
       fused multiply-adds): the trajectories agree to the bit */
    CHECK(worst == 0.0, "%s: params differ from torch by %.3g (relative)", name, worst);
    CHECK(memcmp(prg_adam_exp_avg(opt), ref_m, sizeof p) == 0, "%s: exp_avg differs from torch by %.3g", name,
          max_rel(prg_adam_exp_avg(opt), ref_m, REF_N, 1e-6));
    CHECK(memcmp(prg_adam_exp_avg_sq(opt), ref_v, sizeof p) == 0, "%s: exp_avg_sq differs from torch by %.3g",
          name, max_rel(prg_adam_exp_avg_sq(opt), ref_v, REF_N, 1e-10));
    CHECK(prg_adam_step_count(opt) == REF_STEPS, "%s: step count", name);
    printf("%s vs torch: max relative difference of the parameters over %d steps %.3g\n", name,
           REF_STEPS, worst);
    prg_adam_free(opt);
}

static void fill(float *x, size_t n, prg_rng *r, float scale) {
    size_t i;
    for (i = 0; i < n; i++) x[i] = scale * prg_rng_normal(r);
}

/* Runs `steps` AdamW steps on n parameters split into three blocks. */
static void run_blocks(prg_adam *opt, float *p, float *g, size_t n, int steps, uint64_t seed,
                       double *norms) {
    prg_rng r;
    int s;
    size_t sizes[3];
    float *pp[3];
    const float *gg[3];
    sizes[0] = n / 3;
    sizes[1] = 0;
    sizes[2] = n - n / 3;
    pp[0] = p; pp[1] = p + sizes[0]; pp[2] = p + sizes[0];
    gg[0] = g; gg[1] = g + sizes[0]; gg[2] = g + sizes[0];
    prg_rng_seed(&r, seed, 7);
    for (s = 0; s < steps; s++) {
        fill(g, n, &r, 0.1f);
        CHECK(prg_adam_step_blocks(opt, 3, pp, gg, sizes, 1e-3 * (s + 1), &norms[s]) == PRG_OK,
              "block step %d: %s", s, prg_last_error());
    }
}

static prg_adam *make_adamw(size_t n) {
    prg_adam_config cfg;
    prg_adam *opt = NULL;
    prg_adam_config_default(&cfg);
    cfg.decoupled = 1;
    cfg.weight_decay = 0.05;
    CHECK(prg_adam_create(&opt, n, &cfg) == PRG_OK, "create %zu: %s", n, prg_last_error());
    return opt;
}

int main(void) {
    prg_rng r;
    size_t i;

    /* 1. torch reference trajectories */
    torch_case("adam", 0, 0.9, 0.999, 1e-8, 0.0, ref_adam_p, ref_adam_m, ref_adam_v);
    torch_case("adam_l2", 0, 0.9, 0.999, 1e-8, 0.01, ref_adam_l2_p, ref_adam_l2_m, ref_adam_l2_v);
    torch_case("adamw", 1, 0.9, 0.999, 1e-8, 0.05, ref_adamw_p, ref_adamw_m, ref_adamw_v);
    torch_case("adamw_b", 1, 0.8, 0.99, 1e-6, 0.3, ref_adamw_b_p, ref_adamw_b_m, ref_adamw_b_v);

    {   /* 2. blocks == one block; the norm; threads; save/restore; NaN */
        const size_t n = 100003; /* several norm chunks, not a multiple of 16 */
        float *p1 = (float *)prg_alloc(n * 4), *p2 = (float *)prg_alloc(n * 4);
        float *g = (float *)prg_alloc(n * 4), *save_p = (float *)prg_alloc(n * 4);
        float *save_m = (float *)prg_alloc(n * 4), *save_v = (float *)prg_alloc(n * 4);
        double n1[6], n2[6], gn, want;
        prg_adam *a, *b;
        int s, same;

        prg_rng_seed(&r, 42, 1);
        fill(p1, n, &r, 1.0f);
        memcpy(p2, p1, n * 4);
        a = make_adamw(n);
        b = make_adamw(n);
        CHECK(((uintptr_t)prg_adam_exp_avg(a) & 63) == 0 && ((uintptr_t)prg_adam_exp_avg_sq(a) & 63) == 0,
              "moments are 64-byte aligned");
        prg_set_num_threads(1);
        run_blocks(a, p1, g, n, 3, 5, n1);
        prg_set_num_threads(2);
        {   /* same steps on one block, two threads */
            prg_rng_seed(&r, 5, 7);
            for (s = 0; s < 3; s++) {
                fill(g, n, &r, 0.1f);
                CHECK(prg_adam_step(b, p2, g, 1e-3 * (s + 1), &n2[s]) == PRG_OK, "step");
            }
        }
        CHECK(memcmp(p1, p2, n * 4) == 0, "1 thread + 3 blocks and 2 threads + 1 block give different weights");
        CHECK(memcmp(prg_adam_exp_avg(a), prg_adam_exp_avg(b), n * 4) == 0 &&
              memcmp(prg_adam_exp_avg_sq(a), prg_adam_exp_avg_sq(b), n * 4) == 0, "moments differ (threads)");
        CHECK(memcmp(n1, n2, 3 * sizeof(double)) == 0, "gradient norms differ (threads): %.17g %.17g", n1[2], n2[2]);
        want = 0.0;
        for (i = 0; i < n; i++) want += (double)g[i] * g[i];
        want = sqrt(want);
        CHECK(fabs(n2[2] - want) <= 1e-12 * want, "grad norm %.17g, want %.17g", n2[2], want);

        /* save the state mid-run, continue, restore into a fresh optimizer, continue the same way */
        memcpy(save_p, p1, n * 4);
        memcpy(save_m, prg_adam_exp_avg(a), n * 4);
        memcpy(save_v, prg_adam_exp_avg_sq(a), n * 4);
        {
            int64_t step = prg_adam_step_count(a);
            prg_adam *c = make_adamw(n), *d = make_adamw(n);
            CHECK(step == 3, "step count %lld", (long long)step);
            run_blocks(a, p1, g, n, 3, 9, n1);
            memcpy(prg_adam_exp_avg(c), save_m, n * 4);
            memcpy(prg_adam_exp_avg_sq(c), save_v, n * 4);
            prg_adam_set_step_count(c, step);
            memcpy(p2, save_p, n * 4);
            run_blocks(c, p2, g, n, 3, 9, n2);
            CHECK(memcmp(p1, p2, n * 4) == 0, "restored optimizer does not continue bit-identically");
            CHECK(memcmp(prg_adam_exp_avg_sq(a), prg_adam_exp_avg_sq(c), n * 4) == 0, "restored moments diverge");
            /* the step count is part of the state: without it the run differs */
            memcpy(prg_adam_exp_avg(d), save_m, n * 4);
            memcpy(prg_adam_exp_avg_sq(d), save_v, n * 4);
            memcpy(p2, save_p, n * 4);
            run_blocks(d, p2, g, n, 3, 9, n2);
            CHECK(memcmp(p1, p2, n * 4) != 0, "step count restore had no effect (test cannot fail)");
            prg_adam_free(c);
            prg_adam_free(d);
        }

        /* a non-finite gradient: error, nothing written */
        for (s = 0; s < 3; s++) {
            prg_result rc;
            int64_t step = prg_adam_step_count(a);
            float bad = s == 0 ? NAN : s == 1 ? INFINITY : -INFINITY;
            size_t at = s == 2 ? n - 1 : (size_t)(s * 40000 + 17);
            memcpy(save_p, p1, n * 4);
            memcpy(save_m, prg_adam_exp_avg(a), n * 4);
            memcpy(save_v, prg_adam_exp_avg_sq(a), n * 4);
            fill(g, n, &r, 0.1f);
            g[at] = bad;
            rc = prg_adam_step(a, p1, g, 1e-3, &gn);
            CHECK(rc == PRG_ERR_NUMERIC, "non-finite gradient %d: got %d", s, (int)rc);
            CHECK(strstr(prg_last_error(), "NaN") != NULL, "message: %s", prg_last_error());
            same = memcmp(save_p, p1, n * 4) == 0 && memcmp(save_m, prg_adam_exp_avg(a), n * 4) == 0 &&
                   memcmp(save_v, prg_adam_exp_avg_sq(a), n * 4) == 0;
            CHECK(same, "a failed step changed the weights or moments");
            CHECK(prg_adam_step_count(a) == step, "a failed step advanced the step count");
            CHECK(!isfinite(gn), "reported norm should be non-finite, got %g", gn);
        }
        {   /* a NaN in the second block of two: the first block is not touched either */
            size_t sz[2];
            float *pp[2];
            const float *gg[2];
            sz[0] = 1000; sz[1] = n - 1000;
            pp[0] = p1; pp[1] = p1 + 1000;
            gg[0] = g; gg[1] = g + 1000;
            fill(g, n, &r, 0.1f);
            g[5000] = NAN;
            memcpy(save_p, p1, n * 4);
            CHECK(prg_adam_step_blocks(a, 2, pp, gg, sz, 1e-3, NULL) == PRG_ERR_NUMERIC &&
                  memcmp(save_p, p1, n * 4) == 0, "NaN in block 2 of 2 was not rejected cleanly");
        }
        {   /* argument errors */
            size_t wrong = n - 1;
            float *pp = p1;
            const float *gg = g;
            prg_adam_config cfg;
            prg_adam *e = NULL;
            fill(g, n, &r, 0.1f);
            CHECK(prg_adam_step_blocks(a, 1, &pp, &gg, &wrong, 1e-3, NULL) == PRG_ERR_ARG, "wrong size accepted");
            CHECK(prg_adam_step(a, p1, g, -1.0, NULL) == PRG_ERR_ARG, "negative lr accepted");
            CHECK(prg_adam_step(a, p1, g, NAN, NULL) == PRG_ERR_ARG, "NaN lr accepted");
            prg_adam_config_default(&cfg);
            cfg.beta1 = 1.0;
            CHECK(prg_adam_create(&e, 10, &cfg) == PRG_ERR_CONFIG && e == NULL, "beta1 = 1 accepted");
            prg_adam_config_default(&cfg);
            CHECK(prg_adam_create(&e, 0, &cfg) == PRG_ERR_ARG, "n = 0 accepted");
        }
        prg_adam_free(a);
        prg_adam_free(b);
        prg_free(p1); prg_free(p2); prg_free(g); prg_free(save_p); prg_free(save_m); prg_free(save_v);
    }

    {   /* 3. schedule */
        prg_cosine_schedule s;
        int64_t u, W, T;
        double cur, worst = 0.0;
        int mono = 1, used_ok = 1;
        CHECK(prg_cosine_schedule_init(&s, 128, 390, 200, 5) == PRG_OK, "init");
        CHECK(fabs(s.base_lr - 3.125e-5) < 1e-18 && fabs(s.warmup_lr - 3.125e-8) < 1e-21 &&
              fabs(s.min_lr - 3.125e-7) < 1e-20, "scaled lrs %g %g %g", s.base_lr, s.warmup_lr, s.min_lr);
        CHECK(s.warmup_steps == 1950 && s.total_steps == 78000, "steps %lld %lld",
              (long long)s.warmup_steps, (long long)s.total_steps);
        CHECK(prg_cosine_schedule_init(&s, 128, 390, 5, 5) == PRG_ERR_CONFIG, "warmup >= epochs accepted");
        CHECK(prg_cosine_schedule_init(&s, 0, 390, 200, 5) == PRG_ERR_CONFIG, "batch 0 accepted");
        /* a small schedule, checked point by point against the formula */
        s.base_lr = 1e-3; s.warmup_lr = 1e-6; s.min_lr = 1e-5; s.warmup_steps = W = 10; s.total_steps = 110;
        T = 100;
        for (u = 0; u < 130; u++) {
            double want, got = prg_cosine_schedule_lr(&s, u);
            if (u < W) want = 1e-6 + (double)u * (1e-3 - 1e-6) / 10.0;
            else if (u - W < T) want = 1e-5 + 0.5 * (1e-3 - 1e-5) * (1.0 + cos(3.141592653589793 * (double)(u - W) / 100.0));
            else want = 1e-5;
            if (fabs(got - want) / want > worst) worst = fabs(got - want) / want;
            if (u > 0 && u <= W && !(got > prg_cosine_schedule_lr(&s, u - 1))) mono = 0;
            if (u > W && u <= W + T && !(got < prg_cosine_schedule_lr(&s, u - 1))) mono = 0;
        }
        CHECK(worst < 1e-14, "schedule differs from the formula by %g", worst);
        CHECK(mono, "schedule should rise during warm-up and fall during the cosine");
        CHECK(prg_cosine_schedule_lr(&s, 0) == 1e-6 && prg_cosine_schedule_lr(&s, W) == 1e-3,
              "ends of the warm-up");
        CHECK(fabs(prg_cosine_schedule_lr(&s, W + T / 2) - 0.5 * (1e-3 + 1e-5)) < 1e-15, "middle of the cosine");
        CHECK(prg_cosine_schedule_lr(&s, W + T) == 1e-5 && prg_cosine_schedule_lr(&s, 1000000) == 1e-5,
              "after the cosine: min_lr");
        /* timm's behaviour as the reference loop sees it: the constructor sets
           the lr to warmup_lr, step_update(u) runs after optimizer step u */
        cur = s.warmup_lr;
        for (u = 0; u < 130; u++) {
            if (prg_cosine_schedule_step_lr(&s, u) != cur) used_ok = 0;
            cur = prg_cosine_schedule_lr(&s, u); /* scheduler.step_update(u) */
        }
        CHECK(used_ok, "step_lr does not follow the reference loop");
        CHECK(prg_cosine_schedule_step_lr(&s, 0) == 1e-6 && prg_cosine_schedule_step_lr(&s, 1) == 1e-6 &&
              prg_cosine_schedule_step_lr(&s, 2) > 1e-6, "the first two steps use warmup_lr");
        s.warmup_steps = 0; /* no warm-up: timm leaves the optimizer at base lr */
        CHECK(prg_cosine_schedule_step_lr(&s, 0) == 1e-3 && prg_cosine_schedule_step_lr(&s, 1) == 1e-3 &&
              prg_cosine_schedule_step_lr(&s, 2) < 1e-3, "no warm-up: base lr, then the cosine");
    }

    {   /* 4. EMA */
        const size_t n = 50003; /* above the serial threshold */
        float *e1 = (float *)prg_alloc(n * 4), *e2 = (float *)prg_alloc(n * 4), *p = (float *)prg_alloc(n * 4);
        double worst = 0.0;
        prg_rng_seed(&r, 3, 0);
        fill(e1, n, &r, 1.0f);
        fill(p, n, &r, 1.0f);
        memcpy(e2, e1, n * 4);
        prg_set_num_threads(1);
        prg_ema_update(e1, p, n, 0.999);
        prg_set_num_threads(2);
        prg_ema_update(e2, p, n, 0.999);
        CHECK(memcmp(e1, e2, n * 4) == 0, "EMA depends on the thread count");
        prg_rng_seed(&r, 3, 0); /* e1 started as the first n normals of this stream */
        {
            float *e0 = (float *)prg_alloc(n * 4);
            fill(e0, n, &r, 1.0f);
            for (i = 0; i < n; i++) {
                double want = 0.999 * e0[i] + 0.001 * p[i];
                double d = fabs(e1[i] - want);
                if (d > worst) worst = d;
            }
            prg_free(e0);
        }
        CHECK(worst < 1e-6, "EMA off by %g", worst);
        prg_free(e1); prg_free(e2); prg_free(p);
    }
    return prg_test_finish("test_optim");
}
