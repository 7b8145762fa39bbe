/* The U-Net: preset parameter counts, the parameter table against the
   PyTorch state_dict, initialisation, forward / backward against PyTorch
   (tests/fixtures/unet_ref.h, written by tools/ref_unet.py in float64), a
   random-direction finite-difference check, thread determinism, batch
   changes, config errors, and a PyTorch state_dict of no preset converted by
   tools/pt2safetensors.py (tests/fixtures/unet_custom.*, written by
   tools/ref_convert.py): loaded with the config it carries, forward = PyTorch. */
#define PRG_IMPLEMENTATION
#include "../prg.h"
#include "prg_test.h"
#include "unet_test_weights.h"
#include "fixtures/unet_ref.h"
#include "fixtures/unet_custom_ref.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Largest error accepted against the float64 PyTorch reference, for v, dx
   and every parameter gradient (see grad_err).  PyTorch itself in float32
   stays below 1.4e-5 on these fixtures (tools/ref_unet.py prints it). */
#define TOL_REF 1e-4

static void config_from(prg_unet_config *c, const int *f) {
    int i;
    memset(c, 0, sizeof *c);
    c->in_channels = f[0];
    c->out_channels = f[1];
    c->model_channels = f[2];
    c->num_res_blocks = f[3];
    c->num_heads = f[4];
    c->image_size = f[5];
    for (i = 0; i < 8 && f[6 + i]; i++) c->channel_mult[i] = f[6 + i];
    c->num_levels = i;
    c->num_attention = f[14];
    for (i = 0; i < 8; i++) c->attention_ds[i] = f[15 + i];
    c->groups = 32;
}

static const char *kind_of(const char *name) {
    if (strstr(name, "in_layers.0.") || strstr(name, "out_layers.0.") || strstr(name, ".norm.") ||
        strncmp(name, "out.0.", 6) == 0)
        return "groupnorm";
    if (strstr(name, "time_embed") || strstr(name, "emb_layers")) return "linear";
    if (strstr(name, ".qkv.") || strstr(name, "proj_out")) return "attention 1x1";
    return "conv";
}

static double max_rel(const float *a, const float *ref, size_t n) {
    double e = 0, m = 1e-30;
    size_t i;
    for (i = 0; i < n; i++) {
        double d = fabs((double)a[i] - ref[i]);
        if (!(d <= e)) e = d; /* NaN propagates as a failure */
        if (fabs(ref[i]) > m) m = fabs(ref[i]);
    }
    return e / m;
}

typedef struct fixture {
    const char *tag;
    const int *config;
    int batch;
    const float *v, *dx;
    int ntensors;
    const char *const *names;
    const int (*shapes)[5];
    const double (*gstats)[3];
    const int (*gidx)[16];
    const float (*gval)[16];
} fixture;

/* Runs the fixture's forward and backward; returns the net (for the thread
   test) with v, dx filled. */
static prg_unet *run_fixture(const fixture *fx, float *v, float *dx) {
    prg_unet_config cfg;
    prg_unet *net = NULL;
    int side, n_in, n_out;
    float t[2] = {0.3f, 0.85f}, *x, *r;
    config_from(&cfg, fx->config);
    side = cfg.image_size;
    n_in = fx->batch * cfg.in_channels * side * side;
    n_out = fx->batch * cfg.out_channels * side * side;
    if (prg_unet_create(&net, &cfg, 1) != PRG_OK) {
        CHECK(0, "%s: create failed: %s", fx->tag, prg_last_error());
        return NULL;
    }
    set_test_weights(net);
    x = (float *)malloc((size_t)n_in * sizeof(float));
    r = (float *)malloc((size_t)n_out * sizeof(float));
    fill_formula(x, (size_t)n_in, 1000);
    fill_formula(r, (size_t)n_out, 1001);
    CHECK(prg_unet_forward(net, fx->batch, x, t, v) == PRG_OK, "%s forward: %s", fx->tag, prg_last_error());
    CHECK(prg_unet_backward(net, r, dx) == PRG_OK, "%s backward: %s", fx->tag, prg_last_error());
    free(x);
    free(r);
    return net;
}

/* One parameter gradient against the reference: errors over the tensor's
   largest reference value, or over 1% of the network's largest gradient when
   the tensor's is smaller (some conv biases in front of a GroupNorm with one
   channel per group have an exactly zero gradient). */
static double grad_err(const fixture *fx, int i, const float *g, size_t count, double gmax) {
    double n2 = 0, sum = 0, e = 0, m = 0, floor_ = 0.01 * gmax;
    size_t j;
    int k;
    for (j = 0; j < count; j++) {
        n2 += (double)g[j] * g[j];
        sum += g[j];
    }
    for (k = 0; k < 16; k++) {
        if (fx->gidx[i][k] < 0) continue;
        if (fabs(fx->gval[i][k]) > m) m = fabs(fx->gval[i][k]);
    }
    for (k = 0; k < 16; k++) {
        double d;
        if (fx->gidx[i][k] < 0) continue;
        d = fabs((double)g[fx->gidx[i][k]] - fx->gval[i][k]) / (m > floor_ ? m : floor_);
        if (!(d <= e)) e = d;
    }
    n2 = fabs(sqrt(n2) - fx->gstats[i][0]) / (fx->gstats[i][0] > floor_ ? fx->gstats[i][0] : floor_);
    sum = fabs(sum - fx->gstats[i][1]) / (fx->gstats[i][2] > floor_ ? fx->gstats[i][2] : floor_);
    if (!(n2 <= e)) e = n2;
    if (!(sum <= e)) e = sum;
    return e;
}

static void test_fixture(const fixture *fx) {
    prg_unet_config cfg;
    prg_unet *net, *net1;
    size_t n_in, n_out;
    float *v, *dx, *v1, *dx1, *g;
    int i, nt, ok_names = 1, nclass = 0;
    const char *classes[8];
    double worst[8], gmax = 0, ev, edx;
    config_from(&cfg, fx->config);
    n_in = (size_t)fx->batch * cfg.in_channels * cfg.image_size * cfg.image_size;
    n_out = (size_t)fx->batch * cfg.out_channels * cfg.image_size * cfg.image_size;
    v = (float *)malloc(n_out * sizeof(float));
    dx = (float *)malloc(n_in * sizeof(float));
    v1 = (float *)malloc(n_out * sizeof(float));
    dx1 = (float *)malloc(n_in * sizeof(float));
    prg_set_num_threads(2);
    net = run_fixture(fx, v, dx);
    if (!net) return;
    g = prg_unet_grads(net);

    /* the parameter table is the PyTorch state_dict: names, shapes, order */
    nt = prg_unet_num_tensors(net);
    CHECK(nt == fx->ntensors, "%s: %d tensors, PyTorch has %d", fx->tag, nt, fx->ntensors);
    for (i = 0; i < nt && i < fx->ntensors; i++) {
        const char *name;
        int ndim, d, same;
        int64_t shape[4];
        size_t off;
        prg_unet_tensor_info(net, i, &name, &ndim, shape, &off);
        same = strcmp(name, fx->names[i]) == 0 && ndim == fx->shapes[i][0];
        for (d = 0; d < 4; d++) same &= shape[d] == fx->shapes[i][1 + d];
        if (!same && ok_names)
            printf("  %s tensor %d: %s (ndim %d) vs PyTorch %s (ndim %d)\n", fx->tag, i, name, ndim,
                   fx->names[i], fx->shapes[i][0]);
        ok_names &= same;
        CHECK(prg_unet_find_tensor(net, fx->names[i]) == i, "%s: find_tensor(%s)", fx->tag, fx->names[i]);
    }
    CHECK(ok_names, "%s: tensor names/shapes differ from the PyTorch state_dict", fx->tag);

    ev = max_rel(v, fx->v, n_out);
    edx = max_rel(dx, fx->dx, n_in);
    printf("%s vs PyTorch (float64): v %.2e, dx %.2e", fx->tag, ev, edx);
    CHECK(ev <= TOL_REF, "%s: v max relative error %.3e > %g", fx->tag, ev, TOL_REF);
    CHECK(edx <= TOL_REF, "%s: dx max relative error %.3e > %g", fx->tag, edx, TOL_REF);
    for (i = 0; i < fx->ntensors; i++)
        for (nt = 0; nt < 16; nt++)
            if (fx->gidx[i][nt] >= 0 && fabs(fx->gval[i][nt]) > gmax) gmax = fabs(fx->gval[i][nt]);
    for (i = 0; i < fx->ntensors && ok_names; i++) {
        size_t off, count = 1;
        int64_t shape[4];
        int d, c;
        /* a gradient that is zero in float64 is measured against the floor */
        const char *k = fx->gstats[i][0] < 0.01 * gmax * 1e-6 ? "exactly-zero biases" : kind_of(fx->names[i]);
        double e;
        prg_unet_tensor_info(net, i, NULL, NULL, shape, &off);
        for (d = 0; d < 4; d++) count *= (size_t)shape[d];
        e = grad_err(fx, i, g + off, count, gmax);
        CHECK(e <= TOL_REF, "%s: gradient of %s: error %.3e > %g", fx->tag, fx->names[i], e, TOL_REF);
        for (c = 0; c < nclass && strcmp(classes[c], k); c++) {
        }
        if (c == nclass) {
            classes[nclass] = k;
            worst[nclass++] = 0;
        }
        if (!(e <= worst[c])) worst[c] = e;
    }
    printf(", parameter gradients:");
    for (i = 0; i < nclass; i++) printf(" %s %.2e%s", classes[i], worst[i], i + 1 < nclass ? "," : "\n");

    /* one thread gives the same bits as two */
    prg_set_num_threads(1);
    net1 = run_fixture(fx, v1, dx1);
    prg_set_num_threads(2);
    if (net1) {
        CHECK(memcmp(v, v1, n_out * sizeof(float)) == 0, "%s: v differs between 1 and 2 threads", fx->tag);
        CHECK(memcmp(dx, dx1, n_in * sizeof(float)) == 0, "%s: dx differs between 1 and 2 threads", fx->tag);
        CHECK(memcmp(g, prg_unet_grads(net1), prg_unet_num_params(net) * sizeof(float)) == 0,
              "%s: parameter gradients differ between 1 and 2 threads", fx->tag);
        prg_unet_free(net1);
    }
    prg_unet_free(net);
    free(v);
    free(dx);
    free(v1);
    free(dx1);
}

/* ---- presets, table, initialisation ---- */

static void test_presets(void) {
    static const char *names[4] = {"cifar32", "imagenet64", "small32", "tiny32"};
    static const size_t counts[4] = {52542979, 121060483, 7280707, 1192387}; /* docs/METHOD.md B.1 */
    prg_unet_config c;
    int i;
    for (i = 0; i < 4; i++) {
        size_t n;
        CHECK(prg_unet_config_preset(&c, names[i]) == PRG_OK, "preset %s: %s", names[i], prg_last_error());
        n = prg_unet_config_num_params(&c);
        CHECK(n == counts[i], "preset %s: %zu parameters, expected %zu", names[i], n, counts[i]);
    }
    CHECK(prg_unet_config_preset(&c, "cifar") == PRG_ERR_CONFIG && strstr(prg_last_error(), "tiny32"),
          "unknown preset name: %s", prg_last_error());
}

static void test_create(void) {
    prg_unet_config c;
    prg_unet *a = NULL, *b = NULL, *d = NULL;
    int i, nt, zero_ok = 1, gn_ok = 1, uni_ok = 1, contiguous = 1;
    size_t expect_off = 0, n;
    float *p;
    prg_unet_config_preset(&c, "tiny32");
    CHECK(prg_unet_create(&a, &c, 42) == PRG_OK, "create tiny32: %s", prg_last_error());
    CHECK(prg_unet_create(&b, &c, 42) == PRG_OK, "create tiny32: %s", prg_last_error());
    CHECK(prg_unet_create(&d, &c, 43) == PRG_OK, "create tiny32: %s", prg_last_error());
    if (!a || !b || !d) return;
    n = prg_unet_num_params(a);
    CHECK(n == 1192387, "tiny32 net has %zu params", n);
    CHECK(((uintptr_t)prg_unet_params(a) & 63) == 0 && ((uintptr_t)prg_unet_grads(a) & 63) == 0,
          "parameter and gradient blocks are 64-byte aligned");
    CHECK(memcmp(prg_unet_params(a), prg_unet_params(b), n * sizeof(float)) == 0, "same seed, same weights");
    CHECK(memcmp(prg_unet_params(a), prg_unet_params(d), n * sizeof(float)) != 0, "other seed, other weights");
    CHECK(prg_unet_config_get(a)->model_channels == 32, "config_get");
    p = prg_unet_params(a);
    nt = prg_unet_num_tensors(a);
    for (i = 0; i < nt; i++) {
        const char *name;
        int ndim, dd;
        int64_t shape[4];
        size_t off, count = 1, j;
        double bound, mx = 0;
        prg_unet_tensor_info(a, i, &name, &ndim, shape, &off);
        for (dd = 0; dd < 4; dd++) count *= (size_t)shape[dd];
        contiguous &= off == expect_off;
        expect_off = off + count;
        if (strstr(name, "out_layers.3.") || strstr(name, "proj_out.") || strncmp(name, "out.2.", 6) == 0) {
            for (j = 0; j < count; j++) zero_ok &= p[off + j] == 0.0f;
        } else if (strcmp(kind_of(name), "groupnorm") == 0) {
            float want = ends_with(name, "weight") ? 1.0f : 0.0f;
            for (j = 0; j < count; j++) gn_ok &= p[off + j] == want;
        } else {
            /* U(-1/sqrt(fan_in), 1/sqrt(fan_in)); fan_in of the layer's weight */
            int64_t fan = 1, s[4];
            if (ends_with(name, "weight"))
                for (dd = 1; dd < ndim; dd++) fan *= shape[dd];
            else {
                int pnd;
                prg_unet_tensor_info(a, i - 1, NULL, &pnd, s, NULL);
                for (dd = 1; dd < pnd; dd++) fan *= s[dd];
            }
            bound = 1.0 / sqrt((double)fan);
            for (j = 0; j < count; j++) mx = fabs(p[off + j]) > mx ? fabs(p[off + j]) : mx;
            /* every value within the bound; large tensors come close to it */
            if (!(mx <= bound * (1 + 1e-6)) || (count >= 256 && mx < 0.9 * bound)) {
                if (uni_ok) printf("  init of %s: max |w| %g, bound %g\n", name, mx, bound);
                uni_ok = 0;
            }
        }
    }
    CHECK(contiguous && expect_off == n, "tensors are contiguous and cover the block");
    CHECK(zero_ok, "out_layers.3, proj_out and out.2 start at zero");
    CHECK(gn_ok, "GroupNorm weights start at 1, biases at 0");
    CHECK(uni_ok, "conv/linear weights and biases follow U(-1/sqrt(fan_in), 1/sqrt(fan_in))");
    {
        int64_t shape[4];
        int ndim;
        i = prg_unet_find_tensor(a, "middle_block.1.qkv.weight");
        CHECK(i >= 0 && prg_unet_tensor_info(a, i, NULL, &ndim, shape, NULL) == PRG_OK && ndim == 3 &&
                  shape[0] == 192 && shape[1] == 64 && shape[2] == 1,
              "middle_block.1.qkv.weight is a Conv1d weight [192][64][1]");
        CHECK(prg_unet_find_tensor(a, "output_blocks.1.2.conv.weight") >= 0 &&
                  prg_unet_find_tensor(a, "output_blocks.3.1.conv.weight") >= 0, "upsample conv names");
        CHECK(prg_unet_find_tensor(a, "out.2.weight") == nt - 2, "out.2.weight is second to last");
        CHECK(prg_unet_tensor_info(a, nt, NULL, NULL, NULL, NULL) == PRG_ERR_ARG, "tensor index out of range");
    }
    prg_unet_free(a);
    prg_unet_free(b);
    prg_unet_free(d);
}

/* ---- finite differences on a very small config ---- */

static double loss_of(prg_unet *net, int batch, const float *x, const float *t, const float *r, float *v,
                      size_t n_out) {
    double s = 0;
    size_t i;
    prg_unet_forward(net, batch, x, t, v);
    for (i = 0; i < n_out; i++) s += (double)v[i] * r[i];
    return s;
}

static void test_finite_differences(void) {
    prg_unet_config c;
    prg_unet *net = NULL;
    prg_rng rng;
    const int batch = 2;
    size_t n_in, n_out, np, i;
    float t[2] = {0.2f, 0.7f}, *x, *r, *v, *dx, *u, *p0, *p, *g, *xp;
    int dir;
    memset(&c, 0, sizeof c);
    c.in_channels = 2;
    c.out_channels = 2;
    c.model_channels = 8;
    c.num_res_blocks = 1;
    c.num_levels = 2;
    c.channel_mult[0] = 1;
    c.channel_mult[1] = 2;
    c.num_attention = 2;
    c.attention_ds[0] = 1;
    c.attention_ds[1] = 2;
    c.num_heads = 2;
    c.image_size = 8;
    c.groups = 4;
    if (prg_unet_create(&net, &c, 7) != PRG_OK) {
        CHECK(0, "create small FD net: %s", prg_last_error());
        return;
    }
    set_test_weights(net);
    np = prg_unet_num_params(net);
    n_in = (size_t)batch * 2 * 64;
    n_out = n_in;
    x = (float *)malloc(n_in * sizeof(float));
    xp = (float *)malloc(n_in * sizeof(float));
    dx = (float *)malloc(n_in * sizeof(float));
    r = (float *)malloc(n_out * sizeof(float));
    v = (float *)malloc(n_out * sizeof(float));
    u = (float *)malloc(np * sizeof(float));
    p0 = (float *)malloc(np * sizeof(float));
    fill_formula(x, n_in, 2000);
    fill_formula(r, n_out, 2001);
    p = prg_unet_params(net);
    g = prg_unet_grads(net);
    memcpy(p0, p, np * sizeof(float));
    loss_of(net, batch, x, t, r, v, n_out);
    prg_unet_backward(net, r, dx);
    prg_rng_seed(&rng, 99, 0);
    for (dir = 0; dir < 4; dir++) {
        /* direction scaled like each weight, so every tensor moves comparably */
        double analytic = 0, lp, lm, fd, eps = 1e-3, err;
        for (i = 0; i < np; i++) {
            u[i] = (2.0f * prg_rng_uniform(&rng) - 1.0f) * (fabsf(p0[i]) + 0.05f);
            analytic += (double)u[i] * g[i];
        }
        for (i = 0; i < np; i++) p[i] = (float)(p0[i] + eps * u[i]);
        lp = loss_of(net, batch, x, t, r, v, n_out);
        for (i = 0; i < np; i++) p[i] = (float)(p0[i] - eps * u[i]);
        lm = loss_of(net, batch, x, t, r, v, n_out);
        memcpy(p, p0, np * sizeof(float));
        fd = (lp - lm) / (2 * eps);
        err = fabs(fd - analytic) / fabs(analytic);
        printf("finite differences, parameter direction %d: analytic %.6f, central difference %.6f\n", dir,
               analytic, fd);
        CHECK(err < 2e-3, "parameter direction %d: analytic %.6g vs finite difference %.6g (rel %.2e)", dir,
              analytic, fd, err);
    }
    {
        double analytic = 0, lp, lm, fd, eps = 1e-3, err;
        for (i = 0; i < n_in; i++) {
            float d = 2.0f * prg_rng_uniform(&rng) - 1.0f;
            analytic += (double)d * dx[i];
            xp[i] = x[i] + (float)eps * d;
            u[i] = d;
        }
        lp = loss_of(net, batch, xp, t, r, v, n_out);
        for (i = 0; i < n_in; i++) xp[i] = x[i] - (float)eps * u[i];
        lm = loss_of(net, batch, xp, t, r, v, n_out);
        fd = (lp - lm) / (2 * eps);
        err = fabs(fd - analytic) / fabs(analytic);
        printf("finite differences, input direction: analytic %.6f, central difference %.6f\n", analytic, fd);
        CHECK(err < 2e-3, "input direction: analytic %.6g vs finite difference %.6g (rel %.2e)", analytic, fd,
              err);
    }
    free(x);
    free(xp);
    free(dx);
    free(r);
    free(v);
    free(u);
    free(p0);
    prg_unet_free(net);
}

/* ---- batch sizes, accumulation, call order ---- */

static void test_batches(void) {
    prg_unet_config c;
    prg_unet *net = NULL;
    const size_t per = 3 * 16 * 16; /* floats per image */
    float t[3] = {0.9f, 0.1f, 0.5f}, *x, *v1, *v3, *r, *g1;
    size_t np, i;
    double e, gm = 0;
    prg_unet_config_preset(&c, "tiny32");
    c.num_res_blocks = 1;
    c.image_size = 16;
    if (prg_unet_create(&net, &c, 3) != PRG_OK) {
        CHECK(0, "create: %s", prg_last_error());
        return;
    }
    set_test_weights(net);
    x = (float *)malloc(3 * per * sizeof(float));
    r = (float *)malloc(3 * per * sizeof(float));
    v1 = (float *)malloc(3 * per * sizeof(float));
    v3 = (float *)malloc(3 * per * sizeof(float));
    fill_formula(x, 3 * per, 3000);
    fill_formula(r, 3 * per, 3001);
    CHECK(prg_unet_backward(net, r, NULL) == PRG_ERR_STATE, "backward before forward is refused");
    CHECK(prg_unet_forward(net, 0, x, t, v1) == PRG_ERR_ARG, "batch 0 is refused");
    /* batch 1, then 3 (grows), then 1 again: each sample's output does not
       depend on the batch it is in */
    CHECK(prg_unet_forward(net, 1, x + per, t + 1, v1) == PRG_OK, "forward batch 1: %s", prg_last_error());
    CHECK(prg_unet_forward(net, 3, x, t, v3) == PRG_OK, "forward batch 3: %s", prg_last_error());
    e = max_rel(v1, v3 + per, per);
    CHECK(e < 1e-5, "sample 1 alone vs in a batch of 3: %.2e", e);
    CHECK(prg_unet_forward(net, 1, x + per, t + 1, v3) == PRG_OK, "forward batch 1 again");
    CHECK(memcmp(v1, v3, per * sizeof(float)) == 0, "batch 1 after batch 3 gives the same bits");
    /* backward accumulates: twice = 2 x once */
    np = prg_unet_num_params(net);
    g1 = (float *)malloc(np * sizeof(float));
    prg_unet_zero_grad(net);
    CHECK(prg_unet_backward(net, r, NULL) == PRG_OK, "backward with dx NULL: %s", prg_last_error());
    memcpy(g1, prg_unet_grads(net), np * sizeof(float));
    prg_unet_backward(net, r, NULL);
    e = 0;
    for (i = 0; i < np; i++) {
        double d = fabs(prg_unet_grads(net)[i] - 2.0 * g1[i]);
        if (d > e) e = d;
        if (fabs(g1[i]) > gm) gm = fabs(g1[i]);
    }
    CHECK(gm > 0 && e <= 1e-6 * gm, "second backward adds the same gradient again (err %.2e of %.2e)", e, gm);
    /* dx may be dv itself */
    memcpy(v1, r, per * sizeof(float));
    CHECK(prg_unet_backward(net, r, v3) == PRG_OK && prg_unet_backward(net, v1, v1) == PRG_OK &&
              memcmp(v1, v3, per * sizeof(float)) == 0,
          "backward in place (dx == dv) gives the same dx");
    prg_unet_zero_grad(net);
    for (i = 0, e = 0; i < np; i++) e += fabs(prg_unet_grads(net)[i]);
    CHECK(e == 0, "zero_grad clears the gradients");
    CHECK(prg_unet_activation_bytes(net) > 0, "activation bytes reported");
    free(x);
    free(r);
    free(v1);
    free(v3);
    free(g1);
    prg_unet_free(net);
}

static void test_config_text(void) {
    static const char *names[4] = {"cifar32", "imagenet64", "small32", "tiny32"};
    static const char *bad[] = {
        "", /* everything missing */
        "in_channels=3 out_channels=3 model_channels=32 num_res_blocks=1 channel_mult=1,2,2 attention_ds=4 "
        "num_heads=4 image_size=32", /* groups missing */
        "in_channels=3 out_channels=3 model_channels=32 num_res_blocks=1 channel_mult=1,2,2 attention_ds=4 "
        "num_heads=4 image_size=32 groups=32 colour=red",
        "in_channels=3 in_channels=3 out_channels=3 model_channels=32 num_res_blocks=1 channel_mult=1,2,2 "
        "attention_ds=4 num_heads=4 image_size=32 groups=32",
        "in_channels=x out_channels=3 model_channels=32 num_res_blocks=1 channel_mult=1,2,2 attention_ds=4 "
        "num_heads=4 image_size=32 groups=32",
        "in_channels=3 out_channels=3 model_channels=32 num_res_blocks=1 channel_mult=1,2,2, attention_ds=4 "
        "num_heads=4 image_size=32 groups=32",
        "in_channels=3 out_channels=3 model_channels=32 num_res_blocks=1 channel_mult=1,1,1,1,1,1,1,1,1 "
        "attention_ds=4 num_heads=4 image_size=32 groups=32",
        "in_channels=3 out_channels=3 model_channels=48 num_res_blocks=1 channel_mult=1,2,2 attention_ds=4 "
        "num_heads=4 image_size=32 groups=32"};
    prg_unet_config c, d;
    char buf[256];
    int i;
    for (i = 0; i < 4; i++) {
        prg_unet_config_preset(&c, names[i]);
        memset(&d, 0x55, sizeof d);
        CHECK(prg_unet_config_format(&c, buf, sizeof buf) == PRG_OK && prg_unet_config_parse(&d, buf) == PRG_OK &&
                  memcmp(&c, &d, sizeof c) == 0,
              "%s: config text round trip (\"%s\": %s)", names[i], buf, prg_last_error());
    }
    prg_unet_config_preset(&c, "tiny32");
    prg_unet_config_format(&c, buf, sizeof buf);
    CHECK(strcmp(buf, "in_channels=3 out_channels=3 model_channels=32 num_res_blocks=1 channel_mult=1,2,2 "
                      "attention_ds=4 num_heads=4 image_size=32 groups=32") == 0, "tiny32 as text: %s", buf);
    c.num_attention = 0;
    CHECK(prg_unet_config_format(&c, buf, sizeof buf) == PRG_OK && strstr(buf, "attention_ds=none") &&
              prg_unet_config_parse(&d, buf) == PRG_OK && d.num_attention == 0,
          "no attention resolutions round trip: %s", buf);
    CHECK(prg_unet_config_format(&c, buf, 40) == PRG_ERR_ARG, "too small a buffer is refused");
    for (i = 0; i < (int)(sizeof bad / sizeof bad[0]); i++) {
        prg_result r = prg_unet_config_parse(&d, bad[i]);
        CHECK(r == (i == 7 ? PRG_ERR_CONFIG : PRG_ERR_FORMAT), "bad config text %d refused (%d: %s)", i, (int)r,
              prg_last_error());
    }
}

static void expect_config_error(prg_unet_config c, const char *field, const char *what) {
    prg_unet *net = (prg_unet *)&c; /* must come back NULL */
    prg_result r = prg_unet_create(&net, &c, 1);
    CHECK(r == PRG_ERR_CONFIG && net == NULL && strstr(prg_last_error(), field) != NULL,
          "%s: got %d, \"%s\"", what, (int)r, prg_last_error());
    CHECK(prg_unet_config_num_params(&c) == 0, "%s: num_params of a bad config is 0", what);
}

static void test_bad_configs(void) {
    prg_unet_config c, b;
    prg_unet_config_preset(&c, "tiny32");
    CHECK(prg_unet_config_check(&c) == PRG_OK, "tiny32 is valid");
    b = c; b.model_channels = 48;
    expect_config_error(b, "groups", "48 channels with 32 groups");
    b = c; b.image_size = 30;
    expect_config_error(b, "image_size", "image 30 with 3 levels");
    b = c; b.channel_mult[0] = 2;
    expect_config_error(b, "channel_mult[0]", "channel_mult[0] = 2");
    b = c; b.attention_ds[0] = 8;
    expect_config_error(b, "attention_ds", "attention at rate 8 with 3 levels");
    b = c; b.num_heads = 3;
    expect_config_error(b, "num_heads", "64 channels in 3 heads");
    b = c; b.num_levels = 0;
    expect_config_error(b, "num_levels", "0 levels");
    b = c; b.num_levels = PRG_UNET_MAX_LEVELS + 1;
    expect_config_error(b, "num_levels", "too many levels");
    b = c; b.in_channels = 0;
    expect_config_error(b, "in_channels", "0 input channels");
    b = c; b.num_res_blocks = 0;
    expect_config_error(b, "num_res_blocks", "0 res blocks");
    b = c; b.groups = 0;
    expect_config_error(b, "groups", "0 groups");
}

/* tests/fixtures/unet_custom.safetensors: the converter's output from a
   PyTorch state_dict, config read off the shapes (+ heads, groups, size). */
static void test_converted(void) {
    const char *path = "tests/fixtures/unet_custom.safetensors";
    prg_unet_config want, tiny;
    prg_unet *net = NULL;
    float v[sizeof fx_custom_v / sizeof fx_custom_v[0]];
    char got[256];
    FILE *f = fopen(path, "rb");
    if (!f) path = "../tests/fixtures/unet_custom.safetensors";
    else fclose(f);
    CHECK(prg_unet_config_parse(&want, fx_custom_config_text) == PRG_OK, "fixture config: %s", prg_last_error());
    CHECK(prg_unet_load(&net, path, NULL) == PRG_OK, "%s: %s", path, prg_last_error());
    if (!net) return;
    prg_unet_config_format(prg_unet_config_get(net), got, sizeof got);
    CHECK(strcmp(got, fx_custom_config_text) == 0, "converted U-Net carries %s, PyTorch's is %s", got,
          fx_custom_config_text);
    CHECK(sizeof fx_custom_x / sizeof fx_custom_x[0] ==
              (size_t)FX_CUSTOM_BATCH * want.in_channels * want.image_size * want.image_size &&
              sizeof v / sizeof v[0] == (size_t)FX_CUSTOM_BATCH * want.out_channels * want.image_size * want.image_size,
          "fixture sizes");
    if (prg_unet_forward(net, FX_CUSTOM_BATCH, fx_custom_x, fx_custom_t, v) == PRG_OK) {
        double e = max_rel(v, fx_custom_v, sizeof v / sizeof v[0]);
        printf("converted %s vs PyTorch (float64): v %.2e\n", got, e);
        CHECK(e <= TOL_REF, "converted U-Net: v max relative error %.3e > %g", e, TOL_REF);
    } else {
        CHECK(0, "forward: %s", prg_last_error());
    }
    prg_unet_free(net);
    /* the same file with a config it does not have: refused */
    prg_unet_config_preset(&tiny, "tiny32");
    net = NULL;
    CHECK(prg_unet_load(&net, path, &tiny) != PRG_OK && net == NULL && strstr(prg_last_error(), "model_channels=4"),
          "loading against tiny32 is refused naming the file's config (%s)", prg_last_error());
}

int main(void) {
    fixture tiny = {"tiny32", fx_tiny32_config, FX_TINY32_BATCH, fx_tiny32_v, fx_tiny32_dx, FX_TINY32_NTENSORS,
                    fx_tiny32_names, fx_tiny32_shapes, fx_tiny32_gstats, fx_tiny32_gidx, fx_tiny32_gval};
    fixture mono = {"mono16", fx_mono16_config, FX_MONO16_BATCH, fx_mono16_v, fx_mono16_dx, FX_MONO16_NTENSORS,
                    fx_mono16_names, fx_mono16_shapes, fx_mono16_gstats, fx_mono16_gidx, fx_mono16_gval};
    test_presets();
    test_create();
    test_bad_configs();
    test_config_text();
    test_fixture(&tiny);
    test_fixture(&mono);
    test_finite_differences();
    test_batches();
    test_converted();
    return prg_test_finish("test_unet");
}
