/* Representation probes: the weighted kNN classifier and the linear probe
   against tools/ref_probe.py (numpy / torch on fixed features), the tie and
   zero-row rules on hand-computed cases, 100% on separable features, thread
   invariance, refused arguments; the pooled trajectory features against
   prg_encode / prg_ode_gvp_euler pooled by hand. */
#define PRG_IMPLEMENTATION
#include "../prg.h"
#include "prg_test.h"
#include "fixtures/probe_ref.h"
#include <math.h>
#include <string.h>

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

static int count_equal(const int32_t *a, const int32_t *b, int n) {
    int i, c = 0;
    for (i = 0; i < n; i++) c += a[i] == b[i];
    return c;
}

static void test_knn_reference(void) {
    int32_t pred[PR_M], pred2[PR_M];
    float votes[PR_M * PR_C], votes2[PR_M * PR_C];
    int i;
    for (i = 0; i < 2; i++) {
        double rel = 0;
        int j;
        prg_set_num_threads(1);
        CHECK(prg_knn_classify(pr_xtr, pr_ytr, PR_N, PR_D, PR_C, pr_xte, PR_M, pr_knn_k[i], pr_knn_t[i], pred, votes) ==
                  PRG_OK, "knn: %s", prg_last_error());
        CHECK(count_equal(pred, pr_knn_pred + i * PR_M, PR_M) == PR_M, "knn k %d T %g: %d of %d predictions as the reference",
              pr_knn_k[i], (double)pr_knn_t[i], count_equal(pred, pr_knn_pred + i * PR_M, PR_M), PR_M);
        /* votes relative to each query's largest (exp(s/T) amplifies the float rounding of s by
           1/T; measured 1e-6) */
        for (j = 0; j < PR_M; j++) {
            double r = max_rel(votes + j * PR_C, pr_knn_votes + (i * PR_M + j) * PR_C, PR_C);
            if (r > rel) rel = r;
        }
        CHECK(rel < 2e-5, "knn k %d T %g: votes off by %.3g relative", pr_knn_k[i], (double)pr_knn_t[i], rel);
        prg_set_num_threads(2);
        CHECK(prg_knn_classify(pr_xtr, pr_ytr, PR_N, PR_D, PR_C, pr_xte, PR_M, pr_knn_k[i], pr_knn_t[i], pred2, votes2) ==
                  PRG_OK, "knn 2 threads");
        CHECK(!memcmp(pred, pred2, sizeof pred) && !memcmp(votes, votes2, sizeof votes), "knn: 1 and 2 threads differ");
    }
    /* votes NULL gives the same classes; more queries than a block of 64 */
    {
        float q[150 * PR_D];
        int32_t p1[150], p2[150];
        for (i = 0; i < 150; i++) memcpy(q + i * PR_D, pr_xte + (i % PR_M) * PR_D, PR_D * sizeof(float));
        CHECK(prg_knn_classify(pr_xtr, pr_ytr, PR_N, PR_D, PR_C, q, 150, 20, 0.07f, p1, NULL) == PRG_OK, "knn 150");
        for (i = 0; i < 150; i++) p2[i] = pr_knn_pred[i % PR_M];
        CHECK(count_equal(p1, p2, 150) == 150, "knn over 3 blocks: %d of 150 as the reference", count_equal(p1, p2, 150));
    }
}

static void test_knn_rules(void) {
    /* equal similarities: the lower training index ranks first */
    static const float tr[4 * 2] = {1, 0, 2, 0, 3, 0, 0.5f, 0};
    static const int32_t yl[4] = {1, 0, 0, 1};
    static const float q[2] = {4, 0};
    /* a zero row has similarity 0; labels 0, 1, 2 at similarities -1, 0, 1 */
    static const float tr2[3 * 2] = {0, -1, 0, 0, 0, 2};
    static const int32_t yl2[3] = {0, 1, 2};
    static const float q2[2] = {0, 1};
    int32_t p;
    float v[3];
    CHECK(prg_knn_classify(tr, yl, 4, 2, 2, q, 1, 1, 0.07f, &p, v) == PRG_OK && p == 1, "k=1 tie: row 0 (class 1), got %d", (int)p);
    CHECK(prg_knn_classify(tr, yl, 4, 2, 2, q, 1, 2, 0.07f, &p, v) == PRG_OK && p == 0 && v[0] == v[1],
          "k=2 tie: rows 0, 1 vote equally, the lower class wins: got %d (%g %g)", (int)p, (double)v[0], (double)v[1]);
    CHECK(prg_knn_classify(tr, yl, 4, 2, 2, q, 1, 3, 0.07f, &p, v) == PRG_OK && p == 0 &&
              fabs(v[0] - 2 * exp(1 / 0.07)) < 1e-6 * v[0] && fabs(v[1] - exp(1 / 0.07)) < 1e-6 * v[1],
          "k=3: class 0 twice, class 1 once: got %d (%g %g)", (int)p, (double)v[0], (double)v[1]);
    CHECK(prg_knn_classify(tr2, yl2, 3, 2, 3, q2, 1, 2, 0.5f, &p, v) == PRG_OK && p == 2 && v[0] == 0 && v[1] == 1.0f &&
              fabs(v[2] - exp(2.0)) < 1e-6 * exp(2.0),
          "zero row: votes %g %g %g (want 0, 1, e^2)", (double)v[0], (double)v[1], (double)v[2]);
    CHECK(prg_knn_classify(tr2, yl2, 3, 2, 3, q2, 1, 50, 0.5f, &p, v) == PRG_OK && v[0] > 0 && p == 2,
          "k > n is clamped to n");
    /* refused */
    CHECK(prg_knn_classify(NULL, yl, 4, 2, 2, q, 1, 1, 0.07f, &p, v) == PRG_ERR_ARG, "NULL train");
    CHECK(prg_knn_classify(tr, yl, 4, 2, 2, q, 1, 0, 0.07f, &p, v) == PRG_ERR_ARG, "k 0");
    CHECK(prg_knn_classify(tr, yl, 4, 2, 2, q, 1, 1, 0.0f, &p, v) == PRG_ERR_ARG, "temperature 0");
    CHECK(prg_knn_classify(tr, yl, 4, 2, 1, q, 1, 1, 0.07f, &p, v) == PRG_ERR_ARG && strstr(prg_last_error(), "label"),
          "label outside the classes: %s", prg_last_error());
    CHECK(prg_knn_classify(tr, yl, 4, 2, 2, q, 1, 1, 0.07f, NULL, v) == PRG_ERR_ARG, "NULL pred");
}

static void test_linear_reference(void) {
    prg_linear_probe_config cfg;
    float w[PR_C * PR_D], b[PR_C], w2[PR_C * PR_D], b2[PR_C];
    int32_t pred[PR_M];
    double loss = 0, loss2 = 0, rw, rb;
    prg_linear_probe_config_default(&cfg);
    CHECK(cfg.epochs == 100 && cfg.batch == 256 && cfg.lr == 1e-3 && cfg.standardize == 1, "defaults");
    cfg.epochs = PR_EPOCHS;
    cfg.batch = PR_N; /* the whole set per step, as the reference */
    cfg.lr = PR_LR;
    cfg.weight_decay = PR_WD;
    prg_set_num_threads(1);
    CHECK(prg_linear_probe_train(w, b, pr_xtr, pr_ytr, PR_N, PR_D, PR_C, &cfg, &loss) == PRG_OK, "train: %s", prg_last_error());
    rw = max_rel(w, pr_lin_w, PR_C * PR_D);
    rb = max_rel(b, pr_lin_b, PR_C);
    /* measured 1.5e-7 for W and b, 7e-8 for the loss */
    CHECK(rw < 1e-5 && rb < 1e-5, "linear probe vs torch: W off by %.3g, b by %.3g (relative to the largest)", rw, rb);
    CHECK(fabs(loss - pr_lin_loss) < 1e-6 * pr_lin_loss, "last loss %.9g, torch %.9g", loss, pr_lin_loss);
    CHECK(prg_linear_probe_predict(pred, NULL, w, b, pr_xte, PR_M, PR_D, PR_C) == PRG_OK, "predict");
    CHECK(count_equal(pred, pr_lin_pred, PR_M) == PR_M, "linear: %d of %d predictions as the reference",
          count_equal(pred, pr_lin_pred, PR_M), PR_M);
    /* mini-batches: the same bits with 1 and 2 threads, another seed another order */
    cfg.batch = 32;
    CHECK(prg_linear_probe_train(w, b, pr_xtr, pr_ytr, PR_N, PR_D, PR_C, &cfg, &loss) == PRG_OK, "train batch 32");
    prg_set_num_threads(2);
    CHECK(prg_linear_probe_train(w2, b2, pr_xtr, pr_ytr, PR_N, PR_D, PR_C, &cfg, &loss2) == PRG_OK, "train 2 threads");
    CHECK(!memcmp(w, w2, sizeof w) && !memcmp(b, b2, sizeof b) && loss == loss2, "mini-batch probe: 1 and 2 threads differ");
    cfg.seed = 5;
    CHECK(prg_linear_probe_train(w2, b2, pr_xtr, pr_ytr, PR_N, PR_D, PR_C, &cfg, &loss2) == PRG_OK && memcmp(w, w2, sizeof w),
          "another seed gives another batch order");
    /* refused */
    CHECK(prg_linear_probe_train(NULL, b, pr_xtr, pr_ytr, PR_N, PR_D, PR_C, &cfg, NULL) == PRG_ERR_ARG, "NULL weight");
    cfg.lr = 0;
    CHECK(prg_linear_probe_train(w, b, pr_xtr, pr_ytr, PR_N, PR_D, PR_C, &cfg, NULL) == PRG_ERR_ARG, "lr 0");
    cfg.lr = 1e-3;
    cfg.epochs = 0;
    CHECK(prg_linear_probe_train(w, b, pr_xtr, pr_ytr, PR_N, PR_D, PR_C, &cfg, NULL) == PRG_ERR_ARG, "0 epochs");
    cfg.epochs = 1;
    CHECK(prg_linear_probe_train(w, b, pr_xtr, pr_ytr, PR_N, PR_D, 3, &cfg, NULL) == PRG_ERR_ARG, "labels >= classes");
    CHECK(prg_linear_probe_predict(pred, NULL, NULL, b, pr_xte, PR_M, PR_D, PR_C) == PRG_ERR_ARG, "predict NULL weight");
}

/* Four clusters on the axes, far apart: both probes must be perfect. */
static void test_separable(void) {
    enum { N = 400, M = 100, D = 8, C = 4 };
    static float xtr[N * D], xte[M * D], w[C * D], b[C];
    static int32_t ytr[N], yte[M], pred[M];
    prg_linear_probe_config cfg;
    prg_rng r;
    int i, j;
    prg_rng_seed(&r, 42, 0);
    for (i = 0; i < N + M; i++) {
        int y = i % C;
        float *x = i < N ? xtr + i * D : xte + (i - N) * D;
        for (j = 0; j < D; j++) x[j] = 0.5f * prg_rng_normal(&r) + (j == y ? 6.0f : 0.0f) + 1.0f;
        if (i < N) ytr[i] = y; else yte[i - N] = y;
    }
    CHECK(prg_knn_classify(xtr, ytr, N, D, C, xte, M, 20, 0.07f, pred, NULL) == PRG_OK &&
              count_equal(pred, yte, M) == M, "separable kNN: %d of %d", count_equal(pred, yte, M), M);
    prg_linear_probe_config_default(&cfg);
    cfg.epochs = 10;
    cfg.batch = 64;
    cfg.lr = 1e-2;
    CHECK(prg_linear_probe_train(w, b, xtr, ytr, N, D, C, &cfg, NULL) == PRG_OK, "separable train");
    CHECK(prg_linear_probe_predict(pred, NULL, w, b, xte, M, D, C) == PRG_OK && count_equal(pred, yte, M) == M,
          "separable linear probe: %d of %d", count_equal(pred, yte, M), M);
    cfg.standardize = 0;
    CHECK(prg_linear_probe_train(w, b, xtr, ytr, N, D, C, &cfg, NULL) == PRG_OK &&
              prg_linear_probe_predict(pred, NULL, w, b, xte, M, D, C) == PRG_OK && count_equal(pred, yte, M) == M,
          "separable linear probe, not standardised: %d of %d", count_equal(pred, yte, M), M);
}

/* A small 1-channel U-Net on 32 x 32 (pool 16: 2 x 2 averages) with every
   weight perturbed, so that the velocity (zero at the reference init) moves
   the state. */
static prg_unet *small_net(void) {
    prg_unet_config cfg;
    prg_unet *net;
    prg_rng r;
    float *p;
    size_t i;
    memset(&cfg, 0, sizeof cfg);
    cfg.in_channels = cfg.out_channels = 1;
    cfg.model_channels = 32;
    cfg.num_res_blocks = 1;
    cfg.num_levels = 2;
    cfg.channel_mult[0] = 1;
    cfg.channel_mult[1] = 2;
    cfg.num_heads = 2;
    cfg.image_size = 32;
    cfg.groups = 32;
    if (prg_unet_create(&net, &cfg, 7) != PRG_OK) return NULL;
    p = prg_unet_params(net);
    prg_rng_seed(&r, 9, 1);
    for (i = 0; i < prg_unet_num_params(net); i++) p[i] += 0.05f * (2 * prg_rng_uniform(&r) - 1);
    return net;
}

static void test_features(void) {
    enum { B = 2, S = 6, IMG = 32 * 32, D = 256 };
    static float x[B * IMG], z[B * IMG], pooled[B * D], feat[4 * B * D];
    static const int cut[4] = {3, 0, S - 1, 3};
    static const int gcut[3] = {0, 1, 4};
    prg_unet *net = small_net();
    prg_rng r;
    int i, k;
    if (!net) {
        CHECK(0, "small net: %s", prg_last_error());
        return;
    }
    CHECK(prg_feature_dim(net) == D, "feature dim %d, want 1 x 16 x 16", prg_feature_dim(net));
    prg_rng_seed(&r, 3, 0);
    for (i = 0; i < B * IMG; i++) x[i] = prg_rng_normal(&r);
    CHECK(prg_encode_features(net, PRG_PATH_ICFM, S, 4, cut, B, x, feat) == PRG_OK, "features: %s", prg_last_error());
    for (k = 0; k < 4; k++) {
        if (cut[k] < S - 1) CHECK(prg_encode(net, S, cut[k], B, x, z) == PRG_OK, "encode");
        else memcpy(z, x, sizeof z);
        prg_avgpool_forward(pooled, z, B, 32, 32, 2);
        CHECK(!memcmp(feat + k * B * D, pooled, sizeof pooled), "t_cutoff %d: the pooled prg_encode output bit for bit "
              "(off %.3g)", cut[k], max_rel(feat + k * B * D, pooled, B * D));
        prg_avgpool_forward_ref(pooled, z, B, 32, 32, 2);
        CHECK(max_rel(feat + k * B * D, pooled, B * D) < 1e-6, "t_cutoff %d: 2 x 2 averages", cut[k]);
    }
    CHECK(max_rel(feat, feat + B * D, B * D) > 1e-3, "the trajectory moves (cutoff 3 vs 0)");
    CHECK(!memcmp(feat, feat + 3 * B * D, B * D * sizeof(float)), "a repeated cutoff gives the same features");
    CHECK(prg_encode_features(net, PRG_PATH_GVP, S, 3, gcut, B, x, feat) == PRG_OK, "GVP features: %s", prg_last_error());
    for (k = 0; k < 3; k++) {
        if (gcut[k] != 1) CHECK(prg_ode_gvp_euler(prg_unet_velocity, net, S, gcut[k], B, IMG, x, z, NULL) == PRG_OK, "gvp");
        else memcpy(z, x, sizeof z);
        prg_avgpool_forward(pooled, z, B, 32, 32, 2);
        CHECK(!memcmp(feat + k * B * D, pooled, sizeof pooled), "GVP t_cutoff %d: the pooled prg_ode_gvp_euler output",
              gcut[k]);
    }
    /* refused */
    k = S;
    CHECK(prg_encode_features(net, PRG_PATH_ICFM, S, 1, &k, B, x, feat) == PRG_ERR_ARG, "ICFM t_cutoff = t_span");
    k = -1;
    CHECK(prg_encode_features(net, PRG_PATH_GVP, S, 1, &k, B, x, feat) == PRG_ERR_ARG, "GVP t_cutoff -1");
    k = 0;
    CHECK(prg_encode_features(net, 7, S, 1, &k, B, x, feat) == PRG_ERR_ARG, "unknown path");
    CHECK(prg_encode_features(NULL, PRG_PATH_ICFM, S, 1, &k, B, x, feat) == PRG_ERR_ARG, "NULL net");
    CHECK(prg_encode_features(net, PRG_PATH_ICFM, S, 1, &k, B, x, NULL) == PRG_ERR_ARG, "NULL feat");
    CHECK(prg_encode_features(net, PRG_PATH_ICFM, 1, 1, &k, B, x, feat) == PRG_ERR_ARG, "t_span 1");
    x[5] = NAN;
    CHECK(prg_encode_features(net, PRG_PATH_ICFM, S, 1, &k, B, x, feat) == PRG_ERR_NUMERIC, "NaN input");
    CHECK(prg_feature_dim(NULL) == 0, "dim of NULL");
    prg_unet_free(net);
}

int main(void) {
    test_knn_reference();
    test_knn_rules();
    test_linear_reference();
    test_separable();
    test_features();
    return prg_test_finish("test_probe");
}
