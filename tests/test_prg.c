/* The reverse-ODE encoder and the classifier: against PyTorch (the encoder
   output, the logits, and every gradient of the label-smoothing loss through
   the Euler steps, exact and adjoint), a finite-difference check, thread
   determinism, refused misuse, the memory budget's kept Euler steps and the
   lean (inference) forward, both bit-identical to the recomputing and
   training forwards. */
#define PRG_IMPLEMENTATION
#include "../prg.h"
#include "prg_test.h"
#include "unet_test_weights.h"
#include "fixtures/prg_ref.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Same tolerance as test_unet.c: PyTorch float32 itself stays within ~1e-6
   of the float64 reference here (tools/ref_prg.py prints it). */
#define TOL_REF 1e-4

static double max_rel(const float *a, const float *ref, size_t n) {
    double num = 0, den = 0;
    size_t i;
    for (i = 0; i < n; i++) {
        double d = fabs((double)a[i] - ref[i]);
        if (d > num || d != d) num = d;
        if (fabs(ref[i]) > den) den = fabs(ref[i]);
    }
    return num / (den > 0 ? den : 1e-30);
}

/* A gradient tensor against the fixture: its L2 norm and its sampled
   elements, as an error relative to max(the tensor's rms x 4, 1% of the
   largest rms of the set) (biases in front of a GroupNorm have an exactly
   zero gradient, so they are measured against the set). */
static double grad_err(const float *g, size_t count, const double *stats, const int *idx,
                       const double *vals, double rms_max) {
    double norm = 0, scale, err;
    size_t j;
    for (j = 0; j < count; j++) norm += (double)g[j] * g[j];
    norm = sqrt(norm);
    scale = 4.0 * stats[0] / sqrt((double)count);
    if (scale < 0.01 * rms_max) scale = 0.01 * rms_max;
    err = fabs(norm - stats[0]) / sqrt((double)count) / scale;
    for (j = 0; j < 16 && idx[j] >= 0; j++) {
        double e = fabs((double)g[idx[j]] - vals[j]) / scale;
        if (e > err || e != e) err = e;
    }
    return err;
}

static double set_rms_max(const double (*stats)[3], const size_t *counts, int n) {
    double m = 0;
    int i;
    for (i = 0; i < n; i++)
        if (stats[i][0] / sqrt((double)counts[i]) > m) m = stats[i][0] / sqrt((double)counts[i]);
    return m;
}

static void set_head_weights(prg_classifier *clf) {
    float *p = prg_classifier_head_params(clf, NULL);
    int i, ndim;
    for (i = 0; i < prg_classifier_num_head_tensors(clf); i++) {
        int64_t shape[4], j, count;
        size_t off;
        double d;
        prg_classifier_head_tensor_info(clf, i, NULL, &ndim, shape, &off);
        count = shape[0] * (ndim == 2 ? shape[1] : 1);
        d = (double)(i == 4 ? shape[1] : shape[0]);
        for (j = 0; j < count; j++) {
            double u = hash_u(2000 + (uint64_t)i, (uint64_t)j);
            p[off + j] = (float)(i == 0 ? 1.0 + 0.25 * (2 * u - 1) : i == 1 ? 0.25 * (2 * u - 1) : (2 * u - 1) / sqrt(d));
        }
    }
}

static prg_classifier *make_ref_classifier(void) {
    prg_unet_config cfg;
    prg_unet *net;
    prg_classifier *clf;
    prg_unet_config_preset(&cfg, "tiny32");
    if (prg_unet_create(&net, &cfg, 1) != PRG_OK) return NULL;
    set_test_weights(net);
    if (prg_classifier_create(&clf, net, PRG_REF_CLASSES, PRG_REF_T_SPAN, PRG_REF_T_CUTOFF, 1) != PRG_OK) return NULL;
    set_head_weights(clf);
    return clf;
}

/* Compares all U-Net and head gradients with one set of the fixture. */
static void check_grads(prg_classifier *clf, const char *what, const double (*ustats)[3],
                        const int (*uidx)[16], const double (*uval)[16], int check_head) {
    prg_unet *net = prg_classifier_unet(clf);
    int i, nt = prg_unet_num_tensors(net), ndim;
    size_t counts[512], off;
    int64_t shape[4];
    double rms_max, worst = 0;
    const char *worst_name = "";
    const float *g = prg_unet_grads(net);
    CHECK(nt == PRG_REF_NUNET && nt <= 512, "%s: %d U-Net tensors, fixture has %d", what, nt, PRG_REF_NUNET);
    if (nt != PRG_REF_NUNET) return;
    for (i = 0; i < nt; i++) {
        int d;
        prg_unet_tensor_info(net, i, NULL, &ndim, shape, &off);
        counts[i] = 1;
        for (d = 0; d < ndim; d++) counts[i] *= (size_t)shape[d];
    }
    rms_max = set_rms_max(ustats, counts, nt);
    for (i = 0; i < nt; i++) {
        const char *name;
        double e;
        prg_unet_tensor_info(net, i, &name, &ndim, shape, &off);
        e = grad_err(g + off, counts[i], ustats[i], uidx[i], uval[i], rms_max);
        if (e > worst || e != e) { worst = e; worst_name = name; }
        CHECK(strcmp(name, prg_ref_unet_names[i]) == 0, "tensor %d is %s, fixture %s", i, name, prg_ref_unet_names[i]);
    }
    printf("  %s: U-Net gradients, largest error %.2e (%s)\n", what, worst, worst_name);
    CHECK(worst <= TOL_REF, "%s: U-Net gradient error %.2e at %s", what, worst, worst_name);
    if (check_head) {
        const float *hg = prg_classifier_head_grads(clf, NULL);
        size_t hc[5];
        worst = 0;
        for (i = 0; i < 5; i++) {
            prg_classifier_head_tensor_info(clf, i, NULL, &ndim, shape, &off);
            hc[i] = (size_t)shape[0] * (ndim == 2 ? (size_t)shape[1] : 1);
        }
        rms_max = set_rms_max(prg_ref_exact_head_gstats, hc, 5);
        for (i = 0; i < 5; i++) {
            const char *name;
            double e;
            prg_classifier_head_tensor_info(clf, i, &name, &ndim, shape, &off);
            CHECK(strcmp(name, prg_ref_head_names[i]) == 0, "head tensor %d is %s", i, name);
            e = grad_err(hg + off, hc[i], prg_ref_exact_head_gstats[i], prg_ref_exact_head_gidx[i],
                         prg_ref_exact_head_gval[i], rms_max);
            if (e > worst || e != e) worst = e;
        }
        printf("  %s: head gradients, largest error %.2e\n", what, worst);
        CHECK(worst <= TOL_REF, "%s: head gradient error %.2e", what, worst);
    }
}

static void test_against_pytorch(void) {
    prg_classifier *clf = make_ref_classifier();
    prg_unet *net;
    size_t n = (size_t)PRG_REF_BATCH * 3 * 32 * 32, i;
    float *x = (float *)malloc(n * sizeof(float)), *z = (float *)malloc(n * sizeof(float));
    float *traj = (float *)malloc(n * (PRG_REF_T_SPAN - PRG_REF_T_CUTOFF) * sizeof(float));
    float logits[PRG_REF_BATCH * PRG_REF_CLASSES], dlogits[PRG_REF_BATCH * PRG_REF_CLASSES];
    double e;
    float loss;
    int m = prg_ode_reverse_euler_steps(PRG_REF_T_SPAN, PRG_REF_T_CUTOFF);
    CHECK(clf != NULL, "classifier: %s", prg_last_error());
    if (!clf) return;
    net = prg_classifier_unet(clf);
    fill_formula(x, n, 1000);
    CHECK(m == PRG_REF_T_SPAN - 1 - PRG_REF_T_CUTOFF, "steps %d", m);

    /* the encoder */
    CHECK(prg_encode(net, PRG_REF_T_SPAN, PRG_REF_T_CUTOFF, PRG_REF_BATCH, x, z) == PRG_OK, "encode: %s", prg_last_error());
    e = max_rel(z, prg_ref_z, n);
    printf("  encode: z vs PyTorch, largest relative error %.2e\n", e);
    CHECK(e <= TOL_REF, "encode: z differs from PyTorch by %.2e", e);
    CHECK(prg_encode_trajectory(net, PRG_REF_T_SPAN, PRG_REF_T_CUTOFF, PRG_REF_BATCH, x, traj) == PRG_OK, "trajectory");
    CHECK(memcmp(traj, x, n * sizeof(float)) == 0, "trajectory state 0 is not x");
    CHECK(memcmp(traj + (size_t)m * n, z, n * sizeof(float)) == 0, "trajectory's last state is not encode's z");

    /* the classifier: logits, loss, exact gradients */
    prg_classifier_zero_grad(clf);
    CHECK(prg_classifier_forward(clf, PRG_REF_BATCH, x, logits) == PRG_OK, "forward: %s", prg_last_error());
    e = 0;
    for (i = 0; i < PRG_REF_BATCH * PRG_REF_CLASSES; i++) {
        double d = fabs(logits[i] - prg_ref_logits[i]);
        if (d > e) e = d;
    }
    printf("  classifier: logits vs PyTorch, largest error %.2e\n", e);
    CHECK(e <= TOL_REF * 10, "logits differ from PyTorch by %.2e", e);
    loss = prg_cross_entropy_forward_backward(dlogits, logits, prg_ref_labels, PRG_REF_BATCH, PRG_REF_CLASSES,
                                              PRG_REF_SMOOTHING);
    CHECK(fabs(loss - prg_ref_loss) <= TOL_REF * fabs(prg_ref_loss), "loss %.9g, PyTorch %.9g", loss, prg_ref_loss);
    CHECK(prg_classifier_backward(clf, dlogits) == PRG_OK, "backward: %s", prg_last_error());
    check_grads(clf, "exact", prg_ref_exact_unet_gstats, prg_ref_exact_unet_gidx, prg_ref_exact_unet_gval, 1);
    CHECK(prg_classifier_backward(clf, dlogits) == PRG_ERR_STATE, "a second backward must be refused");

    /* the reference's adjoint (right-end Jacobians) */
    CHECK(prg_classifier_set_grad_mode(clf, PRG_GRAD_ADJOINT) == PRG_OK, "adjoint mode");
    prg_classifier_zero_grad(clf);
    prg_classifier_forward(clf, PRG_REF_BATCH, x, logits);
    CHECK(prg_classifier_backward(clf, dlogits) == PRG_OK, "adjoint backward: %s", prg_last_error());
    check_grads(clf, "adjoint", prg_ref_adjoint_unet_gstats, prg_ref_adjoint_unet_gidx, prg_ref_adjoint_unet_gval, 1);

    /* frozen: the head learns, the U-Net gets nothing */
    CHECK(prg_classifier_set_grad_mode(clf, PRG_GRAD_FROZEN) == PRG_OK, "frozen mode");
    prg_classifier_zero_grad(clf);
    prg_classifier_forward(clf, PRG_REF_BATCH, x, logits);
    CHECK(prg_classifier_backward(clf, dlogits) == PRG_OK, "frozen backward");
    {
        const float *g = prg_unet_grads(net);
        size_t nz = 0;
        for (i = 0; i < prg_unet_num_params(net); i++) nz += g[i] != 0.0f;
        CHECK(nz == 0, "frozen: %zu U-Net gradients are non-zero", nz);
    }
    free(x); free(z); free(traj);
    prg_classifier_free(clf);
}

/* A small 1-channel classifier (32 channels, 2 levels) on side x side images,
   attention at the second level or none, non-zero weights everywhere (also
   the zero-initialised convs); keep = 0: the net keeps no transformed
   weights. */
static prg_classifier *make_classifier(int side, int attention, int t_span, int t_cutoff, int keep) {
    prg_unet_config cfg;
    prg_unet *net;
    prg_classifier *clf;
    memset(&cfg, 0, sizeof cfg);
    cfg.in_channels = cfg.out_channels = 1;
    cfg.model_channels = 32;
    cfg.num_res_blocks = 1;
    cfg.num_levels = 2;
    cfg.channel_mult[0] = 1;
    cfg.channel_mult[1] = 2;
    cfg.num_attention = attention;
    cfg.attention_ds[0] = 2;
    cfg.num_heads = 2;
    cfg.image_size = side;
    cfg.groups = 32;
    if (prg_unet_create(&net, &cfg, 7) != PRG_OK) {
        printf("  small config: %s\n", prg_last_error());
        return NULL;
    }
    set_test_weights(net);
    if (!keep) net->keep_left = 0;
    if (prg_classifier_create(&clf, net, 5, t_span, t_cutoff, 3) != PRG_OK) return NULL;
    set_head_weights(clf);
    return clf;
}

/* The classifier of the finite-difference and thread checks. */
static prg_classifier *make_small(int t_span, int t_cutoff) { return make_classifier(8, 1, t_span, t_cutoff, 1); }

static double loss_of(prg_classifier *clf, const float *x, const int *labels, int batch, float *dlogits) {
    float logits[4 * 5];
    prg_classifier_forward(clf, batch, x, logits);
    return prg_cross_entropy_forward_backward(dlogits, logits, labels, batch, 5, 0.1f);
}

/* A random-direction finite-difference check of the whole classifier
   (U-Net through the Euler steps, and the head), on either encoder path. */
static void test_finite_difference(int path) {
    prg_classifier *clf = make_small(4, 0);
    prg_unet *net;
    static const int labels[3] = {1, 4, 0};
    float x[3 * 64], dlogits[3 * 5];
    float *pu, *ph, *gu, *gh, *dir_u, *dir_h, *save_u, *save_h;
    size_t nu, nh, i;
    double dot = 0, lp, lm, fd, eps = 1e-3;
    prg_rng r;
    CHECK(clf != NULL, "small classifier: %s", prg_last_error());
    if (!clf) return;
    CHECK(prg_classifier_set_path(clf, path) == PRG_OK, "set path %d: %s", path, prg_last_error());
    net = prg_classifier_unet(clf);
    fill_formula(x, 3 * 64, 77);
    nu = prg_unet_num_params(net);
    pu = prg_unet_params(net);
    gu = prg_unet_grads(net);
    ph = prg_classifier_head_params(clf, &nh);
    gh = prg_classifier_head_grads(clf, NULL);
    dir_u = (float *)malloc(nu * sizeof(float));
    dir_h = (float *)malloc(nh * sizeof(float));
    save_u = (float *)malloc(nu * sizeof(float));
    save_h = (float *)malloc(nh * sizeof(float));
    memcpy(save_u, pu, nu * sizeof(float));
    memcpy(save_h, ph, nh * sizeof(float));
    prg_rng_seed(&r, 5, 0);
    /* a random unit direction over all parameters, each scaled like its parameter */
    for (i = 0; i < nu; i++) dir_u[i] = prg_rng_normal(&r) * (0.05f + fabsf(pu[i]));
    for (i = 0; i < nh; i++) dir_h[i] = prg_rng_normal(&r) * (0.05f + fabsf(ph[i]));
    prg_classifier_zero_grad(clf);
    loss_of(clf, x, labels, 3, dlogits);
    prg_classifier_backward(clf, dlogits);
    for (i = 0; i < nu; i++) dot += (double)gu[i] * dir_u[i];
    for (i = 0; i < nh; i++) dot += (double)gh[i] * dir_h[i];
    for (i = 0; i < nu; i++) pu[i] = save_u[i] + (float)eps * dir_u[i];
    for (i = 0; i < nh; i++) ph[i] = save_h[i] + (float)eps * dir_h[i];
    lp = loss_of(clf, x, labels, 3, dlogits);
    for (i = 0; i < nu; i++) pu[i] = save_u[i] - (float)eps * dir_u[i];
    for (i = 0; i < nh; i++) ph[i] = save_h[i] - (float)eps * dir_h[i];
    lm = loss_of(clf, x, labels, 3, dlogits);
    fd = (lp - lm) / (2 * eps);
    printf("  finite difference (%s): directional derivative %.6g, backward %.6g\n", path ? "gvp" : "icfm", fd, dot);
    /* O(eps^2) truncation (1.4e-2 at eps 3e-3, 1.5e-3 at 1e-3: quadratic) and float rounding */
    CHECK(fabs(fd - dot) <= 5e-3 * fabs(dot) + 1e-5, "directional derivative %.6g vs backward %.6g", fd, dot);
    memcpy(pu, save_u, nu * sizeof(float));
    memcpy(ph, save_h, nh * sizeof(float));
    free(dir_u); free(dir_h); free(save_u); free(save_h);
    prg_classifier_free(clf);
}

static void test_threads_and_errors(void) {
    prg_classifier *clf = make_small(5, 1);
    prg_unet *net;
    static const int labels[4] = {0, 1, 2, 3};
    float x[4 * 64], dlogits[4 * 5], *g1, *h1, logits[20];
    size_t nu, nh;
    if (!clf) return;
    net = prg_classifier_unet(clf);
    nu = prg_unet_num_params(net);
    fill_formula(x, 4 * 64, 78);
    prg_set_num_threads(1);
    prg_classifier_zero_grad(clf);
    loss_of(clf, x, labels, 4, dlogits);
    prg_classifier_backward(clf, dlogits);
    g1 = (float *)malloc(nu * sizeof(float));
    memcpy(g1, prg_unet_grads(net), nu * sizeof(float));
    h1 = prg_classifier_head_grads(clf, &nh);
    h1 = (float *)memcpy(malloc(nh * sizeof(float)), h1, nh * sizeof(float));
    prg_set_num_threads(2);
    prg_classifier_zero_grad(clf);
    loss_of(clf, x, labels, 4, dlogits);
    prg_classifier_backward(clf, dlogits);
    CHECK(memcmp(g1, prg_unet_grads(net), nu * sizeof(float)) == 0, "U-Net gradients differ for 1 and 2 threads");
    CHECK(memcmp(h1, prg_classifier_head_grads(clf, NULL), nh * sizeof(float)) == 0, "head gradients differ for 1 and 2 threads");
    free(g1); free(h1);

    /* misuse is refused with a message */
    CHECK(prg_ode_reverse_euler_steps(1, 0) < 0 && prg_ode_reverse_euler_steps(5, 4) < 0 && prg_ode_reverse_euler_steps(5, 3) == 1, "encode_steps");
    CHECK(prg_classifier_set_grid(clf, 4, 3) == PRG_ERR_ARG && strstr(prg_last_error(), "t_cutoff"), "bad grid: %s", prg_last_error());
    CHECK(prg_encode(net, 0, 0, 4, x, x) == PRG_ERR_ARG, "t_span 0 accepted");
    x[5] = NAN;
    CHECK(prg_classifier_forward(clf, 4, x, logits) == PRG_ERR_NUMERIC && strstr(prg_last_error(), "element 5"),
          "NaN input: %s", prg_last_error());
    CHECK(prg_classifier_backward(clf, dlogits) == PRG_ERR_STATE, "backward after a failed forward accepted");
    prg_classifier_free(clf);
    {
        prg_unet_config cfg;
        prg_unet *n2;
        prg_classifier *c2;
        prg_unet_config_preset(&cfg, "tiny32");
        cfg.image_size = 24;
        cfg.num_levels = 2;
        if (prg_unet_create(&n2, &cfg, 1) == PRG_OK) {
            CHECK(prg_classifier_create(&c2, n2, 10, 5, 0, 1) == PRG_ERR_CONFIG && strstr(prg_last_error(), "16"),
                  "24x24 images cannot be pooled to 16x16: %s", prg_last_error());
            prg_unet_free(n2);
        }
    }
}

/* The backward does not recompute the last Euler step's U-Net forward when
   the net still holds it (one forward fewer), and gives the same bits as when
   another forward in between makes it recompute that step; the adjoint
   (right-end) backward always recomputes. */
static void test_last_step_kept(void) {
    prg_classifier *clf = make_small(5, 1);
    prg_unet *net;
    static const int labels[4] = {4, 0, 2, 1};
    float x[4 * 64], other[4 * 64], t[4] = {0.1f, 0.4f, 0.6f, 0.9f}, v[4 * 64], dlogits[4 * 5], *g1;
    size_t nu;
    uint64_t s0;
    int steps, mode;
    if (!clf) return;
    prg_classifier_set_memory_budget(clf, 0); /* every step but the last recomputed */
    net = prg_classifier_unet(clf);
    nu = prg_unet_num_params(net);
    steps = prg_ode_reverse_euler_steps(5, 1);
    fill_formula(x, 4 * 64, 31);
    fill_formula(other, 4 * 64, 57);
    g1 = (float *)malloc(nu * sizeof(float));
    for (mode = 0; mode < 2; mode++) {
        CHECK(prg_classifier_set_grad_mode(clf, mode ? PRG_GRAD_ADJOINT : PRG_GRAD_EXACT) == PRG_OK, "grad mode");
        prg_classifier_zero_grad(clf);
        loss_of(clf, x, labels, 4, dlogits);
        s0 = net->fwd_serial;
        CHECK(prg_classifier_backward(clf, dlogits) == PRG_OK, "backward: %s", prg_last_error());
        CHECK(net->fwd_serial - s0 == (uint64_t)(mode ? steps : steps - 1),
              "%s backward ran %d U-Net forwards for %d steps", mode ? "adjoint" : "exact",
              (int)(net->fwd_serial - s0), steps);
        memcpy(g1, prg_unet_grads(net), nu * sizeof(float));
        prg_classifier_zero_grad(clf);
        loss_of(clf, x, labels, 4, dlogits);
        CHECK(prg_unet_forward(net, 4, other, t, v) == PRG_OK, "forward in between");
        s0 = net->fwd_serial;
        CHECK(prg_classifier_backward(clf, dlogits) == PRG_OK, "backward: %s", prg_last_error());
        CHECK(net->fwd_serial - s0 == (uint64_t)steps, "after another forward the backward ran %d forwards, not %d",
              (int)(net->fwd_serial - s0), steps);
        CHECK(memcmp(g1, prg_unet_grads(net), nu * sizeof(float)) == 0,
              "%s: gradients with the kept last step differ from the recomputed ones", mode ? "adjoint" : "exact");
    }
    free(g1);
    prg_classifier_free(clf);
}

static int count_kept(const prg_unet *net) {
    int i, k = 0;
    for (i = 0; i < net->ntens; i++) k += net->plans[i].keep[0].valid + net->plans[i].keep[1].valid;
    return k;
}

/* Weights kept transformed between the U-Net evaluations of one call (encode,
   sampling, fine-tuning): the same bits as a net that keeps nothing, and a
   weight changed between two calls is seen by the second. */
static void test_kept_weights(void) {
    /* Winograd on the 16 x 16 maps with every kernel */
    prg_classifier *ca = make_classifier(16, 0, 4, 0, 1), *cb = make_classifier(16, 0, 4, 0, 0);
    prg_unet *na, *nb;
    static const int labels[4] = {1, 3, 0, 2};
    float x[4 * 256], za[4 * 256], zb[4 * 256], dlogits[4 * 5], logits[4 * 5];
    size_t nu, j;
    int round;
    if (!ca || !cb) return;
    prg_classifier_set_memory_budget(ca, 0); /* the backward's recomputed forwards use kept weights too */
    prg_classifier_set_memory_budget(cb, 0);
    na = prg_classifier_unet(ca);
    nb = prg_classifier_unet(cb);
    nu = prg_unet_num_params(na);
    fill_formula(x, 4 * 256, 44);
    for (round = 0; round < 2; round++) {
        CHECK(prg_encode(na, 6, 1, 4, x, za) == PRG_OK && prg_encode(nb, 6, 1, 4, x, zb) == PRG_OK, "encode: %s",
              prg_last_error());
        CHECK(memcmp(za, zb, sizeof za) == 0, "round %d: encode with kept weights differs from without", round);
        CHECK(count_kept(na) >= 4 && count_kept(nb) == 0, "round %d: %d and %d weight tensors kept (want >= 4, 0)",
              round, count_kept(na), count_kept(nb));
        prg_classifier_zero_grad(ca);
        prg_classifier_zero_grad(cb);
        CHECK(prg_classifier_forward(ca, 4, x, logits) == PRG_OK, "forward");
        prg_cross_entropy_forward_backward(dlogits, logits, labels, 4, 5, 0.1f);
        CHECK(prg_classifier_backward(ca, dlogits) == PRG_OK, "backward");
        CHECK(prg_classifier_forward(cb, 4, x, logits) == PRG_OK, "forward");
        prg_cross_entropy_forward_backward(dlogits, logits, labels, 4, 5, 0.1f);
        CHECK(prg_classifier_backward(cb, dlogits) == PRG_OK, "backward");
        CHECK(memcmp(prg_unet_grads(na), prg_unet_grads(nb), nu * sizeof(float)) == 0,
              "round %d: fine-tuning gradients with kept weights differ from without", round);
        /* change every weight (as an optimizer step would) before the next round */
        for (j = 0; j < nu; j++) {
            prg_unet_params(na)[j] *= 0.97f;
            prg_unet_params(nb)[j] *= 0.97f;
        }
    }
    prg_classifier_free(ca);
    prg_classifier_free(cb);
}

/* Fine-tuning under a memory budget: the Euler steps whose U-Net
   activations forward keeps are not run again by backward (counted), and the
   U-Net and head gradients are the same bits with budget 0, one that keeps
   some steps and one that keeps all, on both paths (exact; adjoint on ICFM),
   1 and 2 threads; also after a foreign forward on the net, a second step
   (sets reused) and a grid change (sets grown).  A classifier that never ran a
   backward keeps nothing under the default budget. */
static void test_memory_budget(int path) {
    prg_classifier *clf = make_small(5, 0), *fresh = make_small(5, 0);
    prg_unet *net;
    static const int labels[3] = {2, 0, 4};
    float x[3 * 64], other[3 * 64], t[3] = {0.2f, 0.5f, 0.8f}, v[3 * 64], dlogits[3 * 5], logits[3 * 5];
    float *gref = NULL, *href = NULL;
    size_t nu, nh, step;
    int steps, b, th, mode, rep;
    uint64_t s0;
    if (!clf || !fresh) return;
    CHECK(prg_classifier_set_path(clf, path) == PRG_OK && prg_classifier_set_path(fresh, path) == PRG_OK, "path");
    net = prg_classifier_unet(clf);
    nu = prg_unet_num_params(net);
    prg_classifier_head_grads(clf, &nh);
    steps = prg_classifier_grid(clf, NULL, NULL);
    step = prg_classifier_step_bytes(clf, 3);
    CHECK(steps == 4 && step > 0 && prg_classifier_memory_budget(clf) == prg_classifier_memory_budget(fresh),
          "%d steps, %zu bytes a step", steps, step);
    CHECK(prg_classifier_forward(fresh, 3, x, logits) == PRG_OK && prg_classifier_kept_steps(fresh) == 0,
          "a classifier that never ran a backward kept %d steps", prg_classifier_kept_steps(fresh));
    fill_formula(x, 3 * 64, 12);
    fill_formula(other, 3 * 64, 13);
    gref = (float *)malloc(nu * sizeof(float));
    href = (float *)malloc(nh * sizeof(float));
    for (mode = 0; mode < (path == PRG_PATH_ICFM ? 2 : 1); mode++) /* the adjoint on one path */
        for (b = 0; b < 3; b++)
            for (th = 1; th <= 2; th++)
                for (rep = 0; rep < th; rep++) {
                    /* budgets: none, two of the three steps that can be kept, all */
                    int want = b == 0 ? 0 : b == 1 ? 2 : steps - 1 - mode, ran;
                    prg_set_num_threads(th);
                    CHECK(prg_classifier_set_grad_mode(clf, mode ? PRG_GRAD_ADJOINT : PRG_GRAD_EXACT) == PRG_OK, "mode");
                    if (rep == 0) prg_classifier_set_memory_budget(clf, b == 0 ? 0 : b == 1 ? 2 * step + step / 2 : (size_t)-1);
                    prg_classifier_zero_grad(clf);
                    CHECK(prg_classifier_forward(clf, 3, x, logits) == PRG_OK, "forward: %s", prg_last_error());
                    CHECK(prg_classifier_kept_steps(clf) == want, "budget %d: kept %d steps, want %d", b,
                          prg_classifier_kept_steps(clf), want);
                    prg_cross_entropy_forward_backward(dlogits, logits, labels, 3, 5, 0.1f);
                    if (rep == 1) CHECK(prg_unet_forward(net, 3, other, t, v) == PRG_OK, "forward in between");
                    s0 = net->fwd_serial;
                    CHECK(prg_classifier_backward(clf, dlogits) == PRG_OK, "backward: %s", prg_last_error());
                    ran = (int)(net->fwd_serial - s0);
                    /* exact: the last step is live unless a forward came between; adjoint: the Jacobian
                       at the last state (never a forward step's) always runs */
                    CHECK(ran == steps - want - (mode == 0 && rep == 0), "%s, budget %d, rep %d: backward ran %d "
                          "U-Net forwards", mode ? "adjoint" : "exact", b, rep, ran);
                    if (b == 0 && th == 1 && rep == 0) {
                        memcpy(gref, prg_unet_grads(net), nu * sizeof(float));
                        memcpy(href, prg_classifier_head_grads(clf, NULL), nh * sizeof(float));
                    }
                    CHECK(memcmp(gref, prg_unet_grads(net), nu * sizeof(float)) == 0 &&
                          memcmp(href, prg_classifier_head_grads(clf, NULL), nh * sizeof(float)) == 0,
                          "%s %s, budget %d, %d threads, rep %d: gradients differ from recomputing every step",
                          path ? "gvp" : "icfm", mode ? "adjoint" : "exact", b, th, rep);
                }
    /* more steps than the sets were made for: they grow (the budget keeps all) */
    CHECK(prg_classifier_set_grad_mode(clf, PRG_GRAD_EXACT) == PRG_OK && prg_classifier_set_grid(clf, 7, 0) == PRG_OK,
          "grid");
    CHECK(prg_classifier_forward(clf, 3, x, logits) == PRG_OK && prg_classifier_kept_steps(clf) == 5 &&
          prg_classifier_backward(clf, dlogits) == PRG_OK, "kept %d of 6 steps: %s", prg_classifier_kept_steps(clf),
          prg_last_error());
    prg_set_num_threads(2);
    free(gref); free(href);
    prg_classifier_free(clf);
    prg_classifier_free(fresh);
}

/* The lean forward (inference): the same v as the training forward, bit
   for bit, at 1 and 2 threads, in less memory, and no backward after it;
   encode and sampling (which run it) equal their solvers over the training
   forward; prg_classifier_predict and a frozen classifier's forward give the
   training forward's logits (and the frozen head gradients the exact
   mode's). */
static void test_lean(void) {
    prg_classifier *clf = make_classifier(16, 1, 4, 0, 1), *c2 = make_classifier(16, 1, 4, 0, 1);
    prg_unet *net, *n2;
    static const int labels[3] = {1, 0, 3};
    float x[3 * 256], t[3] = {0.1f, 0.55f, 0.9f}, v1[3 * 256], v2[3 * 256], z1[3 * 256], z2[3 * 256];
    float l1[3 * 5], l2[3 * 5], dlogits[3 * 5], *h1;
    size_t nh, full, lean;
    int th;
    if (!clf || !c2) return;
    net = prg_classifier_unet(clf);
    n2 = prg_classifier_unet(c2);
    fill_formula(x, 3 * 256, 21);
    /* a fresh net's lean forward allocates less than a training forward */
    CHECK(prg_unet_forward_lean(n2, 3, x, t, v2) == PRG_OK, "lean forward: %s", prg_last_error());
    lean = prg_unet_activation_bytes(n2);
    CHECK(prg_unet_forward(net, 3, x, t, v1) == PRG_OK, "forward: %s", prg_last_error());
    full = prg_unet_activation_bytes(net);
    printf("  lean forward: %zu bytes of activations for 3 images, the training forward %zu\n", lean, full);
    CHECK(lean < full, "lean forward holds %zu bytes, the training forward %zu", lean, full);
    CHECK(memcmp(v1, v2, sizeof v1) == 0, "lean forward on fresh blocks differs from the training forward");
    CHECK(prg_unet_backward(n2, v2, NULL) == PRG_ERR_STATE, "backward after a lean forward accepted");
    for (th = 1; th <= 2; th++) {
        prg_set_num_threads(th);
        CHECK(prg_unet_forward(n2, 3, x, t, v2) == PRG_OK && memcmp(v1, v2, sizeof v1) == 0,
              "%d threads: training forward after a lean one differs", th);
        CHECK(prg_unet_forward_lean(n2, 3, x, t, v2) == PRG_OK && memcmp(v1, v2, sizeof v1) == 0,
              "%d threads: lean forward differs from the training forward", th);
    }
    /* encode and sampling run the lean forward */
    CHECK(prg_encode(net, 5, 1, 3, x, z1) == PRG_OK &&
          prg_ode_reverse_euler(prg_unet_velocity, net, 5, 1, 3, 256, x, z2, NULL) == PRG_OK &&
          memcmp(z1, z2, sizeof z1) == 0, "prg_encode differs from the Euler solve over prg_unet_forward");
    memcpy(z1, x, sizeof x);
    memcpy(z2, x, sizeof x);
    CHECK(prg_unet_sample(net, PRG_SOLVER_HEUN, 2, 3, z1) == PRG_OK &&
          prg_sample_path(prg_unet_path(net), PRG_SOLVER_HEUN, prg_unet_velocity, net, 2, 3, 256, z2) == PRG_OK &&
          memcmp(z1, z2, sizeof z1) == 0, "prg_unet_sample differs from the solver over prg_unet_forward");
    /* the classifier */
    CHECK(prg_classifier_forward(clf, 3, x, l1) == PRG_OK && prg_classifier_predict(c2, 3, x, l2) == PRG_OK &&
          memcmp(l1, l2, sizeof l1) == 0, "predict's logits differ from forward's");
    CHECK(prg_classifier_backward(c2, dlogits) == PRG_ERR_STATE, "backward after predict accepted");
    prg_classifier_zero_grad(clf);
    prg_cross_entropy_forward_backward(dlogits, l1, labels, 3, 5, 0.1f);
    CHECK(prg_classifier_backward(clf, dlogits) == PRG_OK, "backward: %s", prg_last_error());
    h1 = prg_classifier_head_grads(clf, &nh);
    h1 = (float *)memcpy(malloc(nh * sizeof(float)), h1, nh * sizeof(float));
    CHECK(prg_classifier_set_grad_mode(c2, PRG_GRAD_FROZEN) == PRG_OK, "frozen");
    prg_classifier_zero_grad(c2);
    CHECK(prg_classifier_forward(c2, 3, x, l2) == PRG_OK && memcmp(l1, l2, sizeof l1) == 0,
          "frozen forward's logits differ");
    CHECK(prg_classifier_backward(c2, dlogits) == PRG_OK &&
          memcmp(h1, prg_classifier_head_grads(c2, NULL), nh * sizeof(float)) == 0,
          "frozen head gradients differ from the exact mode's");
    CHECK(prg_unet_backward(n2, v2, NULL) == PRG_ERR_STATE, "a frozen forward left the U-Net claiming a forward");
    free(h1);
    prg_set_num_threads(2);
    prg_classifier_free(clf);
    prg_classifier_free(c2);
}

/* The optional beta * flow-matching term: the same as doing it by hand with
   the flow and layers sections, scaled by beta; a NaN refused untouched. */
static void test_flow_term(void) {
    prg_classifier *clf = make_small(4, 0);
    prg_unet *net;
    float x[2 * 64], xt[2 * 64], target[2 * 64], v[2 * 64], dv[2 * 64], t[2], loss = 0, l2, *g1;
    size_t nu, i, bad = 0;
    prg_rng r;
    if (!clf) return;
    net = prg_classifier_unet(clf);
    nu = prg_unet_num_params(net);
    fill_formula(x, 2 * 64, 91);
    prg_classifier_zero_grad(clf);
    prg_rng_seed(&r, 4, 0);
    CHECK(prg_classifier_flow_loss(clf, 2, x, 0.5f, &r, &loss) == PRG_OK, "flow term: %s", prg_last_error());
    g1 = (float *)malloc(nu * sizeof(float));
    memcpy(g1, prg_unet_grads(net), nu * sizeof(float));
    prg_unet_zero_grad(net);
    prg_rng_seed(&r, 4, 0);
    prg_flow_icfm_pairs(xt, target, t, NULL, x, 2, 64, &r);
    prg_unet_forward(net, 2, xt, t, v);
    l2 = prg_flow_loss_forward_backward(dv, v, target, 2, 1, 64);
    for (i = 0; i < 2 * 64; i++) dv[i] *= 0.5f;
    prg_unet_backward(net, dv, NULL);
    for (i = 0; i < nu; i++) bad += g1[i] != prg_unet_grads(net)[i];
    CHECK(loss == l2 && loss > 0, "flow term loss %g, by hand %g", loss, l2);
    CHECK(bad == 0, "flow term: %zu U-Net gradients differ from the hand-made beta * dL_FM", bad);
    memcpy(g1, prg_unet_grads(net), nu * sizeof(float));
    x[3] = NAN;
    CHECK(prg_classifier_flow_loss(clf, 2, x, 0.5f, &r, &loss) == PRG_ERR_NUMERIC, "NaN flow term accepted");
    CHECK(memcmp(g1, prg_unet_grads(net), nu * sizeof(float)) == 0, "a refused flow term changed the gradients");
    free(g1);
    prg_classifier_free(clf);
}

/* The gradient-ready hook: each call's range is final (its CRC at the call
   equals the CRC after backward), begins strictly decrease to 0, the head
   comes first, and the classifier calls block 0 only in its last U-Net
   backward (as many calls as one prg_unet_backward). */
typedef struct hook_log {
    prg_unet *net;
    prg_classifier *clf;
    int n, order_bad, block[512];
    size_t begin[512];
    uint32_t crc[512];
} hook_log;
static void hook_record(void *ctx, int block, size_t begin) {
    hook_log *h = (hook_log *)ctx;
    size_t n;
    const float *g = block ? prg_classifier_head_grads(h->clf, &n) : prg_unet_grads(h->net);
    if (!block) n = prg_unet_num_params(h->net);
    if (h->n >= 512) return;
    if (h->n > 0 && h->block[h->n - 1] == block && begin >= h->begin[h->n - 1]) h->order_bad++;
    if (h->n > 0 && h->block[h->n - 1] == 0 && block == 1) h->order_bad++;
    h->block[h->n] = block;
    h->begin[h->n] = begin;
    h->crc[h->n++] = prg_crc32(0, g + begin, (n - begin) * sizeof(float));
}
static int hook_changed(const hook_log *h) {
    int i, bad = 0;
    for (i = 0; i < h->n; i++) {
        size_t n;
        const float *g = h->block[i] ? prg_classifier_head_grads(h->clf, &n) : prg_unet_grads(h->net);
        if (!h->block[i]) n = prg_unet_num_params(h->net);
        bad += prg_crc32(0, g + h->begin[i], (n - h->begin[i]) * sizeof(float)) != h->crc[i];
    }
    return bad;
}
static void test_grad_hook(void) {
    prg_classifier *clf = make_small(4, 0);
    static const int labels[3] = {1, 4, 0};
    float x[3 * 64], t[3] = {0.2f, 0.5f, 0.9f}, v[3 * 64], dlogits[3 * 5], *g0;
    hook_log h;
    int unet_calls, i, grad_mode;
    size_t nu;
    if (!clf) return;
    memset(&h, 0, sizeof h);
    h.clf = clf;
    h.net = prg_classifier_unet(clf);
    nu = prg_unet_num_params(h.net);
    fill_formula(x, 3 * 64, 5);
    prg_unet_set_grad_hook(h.net, hook_record, &h);
    prg_unet_zero_grad(h.net);
    prg_unet_forward(h.net, 3, x, t, v);
    prg_unet_backward(h.net, x, NULL);
    prg_unet_set_grad_hook(h.net, NULL, NULL);
    CHECK(h.n > 3 && h.order_bad == 0 && h.begin[h.n - 1] == 0, "U-Net hook: %d calls, %d out of order, last begin %zu",
          h.n, h.order_bad, h.n ? h.begin[h.n - 1] : (size_t)-1);
    CHECK(hook_changed(&h) == 0, "U-Net hook: %d ranges changed after their call", hook_changed(&h));
    unet_calls = h.n;
    g0 = (float *)malloc(nu * sizeof(float));
    for (grad_mode = 0; grad_mode < 2; grad_mode++) {
        int head = 0, body = 0;
        prg_classifier_set_grad_mode(clf, grad_mode ? PRG_GRAD_FROZEN : PRG_GRAD_EXACT);
        /* the same gradients without the hook */
        prg_classifier_zero_grad(clf);
        loss_of(clf, x, labels, 3, dlogits);
        prg_classifier_backward(clf, dlogits);
        memcpy(g0, prg_unet_grads(h.net), nu * sizeof(float));
        h.n = h.order_bad = 0;
        prg_classifier_set_grad_hook(clf, hook_record, &h);
        prg_classifier_zero_grad(clf);
        loss_of(clf, x, labels, 3, dlogits);
        prg_classifier_backward(clf, dlogits);
        prg_classifier_set_grad_hook(clf, NULL, NULL);
        for (i = 0; i < h.n; i++) head += h.block[i] == 1, body += h.block[i] == 0;
        CHECK(head == 1 && h.block[0] == 1 && body == (grad_mode ? 0 : unet_calls) && h.order_bad == 0,
              "classifier hook (%s): head %d, U-Net %d calls (want %d), %d out of order", grad_mode ? "frozen" : "exact",
              head, body, grad_mode ? 0 : unet_calls, h.order_bad);
        CHECK(hook_changed(&h) == 0, "classifier hook: %d ranges changed after their call", hook_changed(&h));
        CHECK(memcmp(g0, prg_unet_grads(h.net), nu * sizeof(float)) == 0, "the hook changed the U-Net gradients");
    }
    free(g0);
    prg_classifier_free(clf);
}

/* The parameter blocks an optimizer trains: U-Net then head, or the head
   alone with a frozen U-Net, following the grad mode. */
static void test_param_blocks(void) {
    prg_classifier *clf = make_small(5, 1);
    prg_unet *net;
    float *p[2];
    const float *g[2];
    size_t sz[2], total = 0, nh;
    int nb;
    if (!clf) return;
    net = prg_classifier_unet(clf);
    prg_classifier_head_params(clf, &nh);
    nb = prg_classifier_param_blocks(clf, p, g, sz, &total);
    CHECK(nb == 2 && p[0] == prg_unet_params(net) && g[0] == prg_unet_grads(net) && sz[0] == prg_unet_num_params(net) &&
              p[1] == prg_classifier_head_params(clf, NULL) && g[1] == prg_classifier_head_grads(clf, NULL) &&
              sz[1] == nh && total == sz[0] + nh,
          "exact mode: %d blocks, sizes %zu %zu, total %zu", nb, sz[0], sz[1], total);
    CHECK(prg_classifier_set_grad_mode(clf, PRG_GRAD_FROZEN) == PRG_OK, "frozen: %s", prg_last_error());
    nb = prg_classifier_param_blocks(clf, p, g, sz, &total);
    CHECK(nb == 1 && p[0] == prg_classifier_head_params(clf, NULL) && g[0] == prg_classifier_head_grads(clf, NULL) &&
              sz[0] == nh && total == nh,
          "frozen mode: %d blocks, size %zu, total %zu", nb, sz[0], total);
    prg_classifier_set_grad_mode(clf, PRG_GRAD_ADJOINT);
    CHECK(prg_classifier_param_blocks(clf, NULL, NULL, sz, NULL) == 2, "adjoint mode: not 2 blocks");
    prg_classifier_free(clf);
}

int main(void) {
    prg_set_num_threads(2);
    test_param_blocks();
    test_against_pytorch();
    test_finite_difference(PRG_PATH_ICFM);
    test_finite_difference(PRG_PATH_GVP);
    test_threads_and_errors();
    test_last_step_kept();
    test_kept_weights();
    test_memory_budget(PRG_PATH_ICFM);
    test_memory_budget(PRG_PATH_GVP);
    test_lean();
    test_flow_term();
    test_grad_hook();
    return prg_test_finish("test_prg");
}
