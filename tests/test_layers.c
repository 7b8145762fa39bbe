/* Layers: (a) every fast kernel against its _ref twin at awkward sizes,
   backward accumulation included; (b) central finite-difference checks of
   every gradient of every layer; (c) forward and backward values from
   PyTorch (tools/ref_layers.py -> tests/fixtures/layers_ref.h); (d) 1 and 2
   threads give the same bits; (e) exp's scalar twin, and the scalar SiLU
   and softmax with it, against the vector kernels, and exp's error. */
#define PRG_IMPLEMENTATION
#include "../prg.h"
#include "prg_test.h"
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fixtures/layers_ref.h"

static prg_rng rng;
static const char *kern = "auto"; /* GEMM / SIMD path under test */

static float *vec(size_t n) {
    float *p = (float *)malloc((n ? n : 1) * sizeof(float));
    if (!p) {
        printf("out of memory\n");
        exit(2);
    }
    return p;
}
static float *rnd(size_t n, float lo, float hi) {
    float *p = vec(n);
    size_t i;
    for (i = 0; i < n; i++) p[i] = lo + (hi - lo) * prg_rng_uniform(&rng);
    return p;
}
static float *copy_of(const float *a, size_t n) {
    float *p = vec(n);
    memcpy(p, a, n * sizeof(float));
    return p;
}

/* max |a - b| / max |b| (absolute when b is all zero) */
static double rel_err(const float *a, const float *b, size_t n) {
    double e = 0.0, m = 0.0;
    size_t i;
    for (i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= e)) e = d; /* NaN propagates */
        if (fabs(b[i]) > m) m = fabs(b[i]);
    }
    return m > 0.0 ? e / m : e;
}

/* ======================================================================
   One description for every layer, so that the finite-difference and
   thread checks can drive any of them. */
enum kind {
    K_CONV, K_LINEAR, K_GN, K_LN, K_SILU, K_TANH, K_SS, K_ATT, K_UP, K_POOL, K_CAT, K_CE, K_FLOW
};
static const char *kind_name[] = {"conv2d", "linear", "groupnorm", "layernorm", "silu", "tanh",
                                  "scale_shift", "attention", "upsample2x", "avgpool", "concat",
                                  "cross_entropy", "flow_loss"};

typedef struct layer {
    enum kind kind;
    int b, ci, h, w, co, k, s, p; /* conv; linear uses b = n, ci = in, co = out */
    int c, hw, g, t, heads, f, c2;
    float eps, smoothing;
    /* inputs (perturbed by the FD check) */
    float *in[4];
    size_t nin[4];
    const char *inname[4];
    int ninputs;
    int *labels;
    /* outputs and saved values */
    float *y, *mean, *rstd, *ws;
    size_t ny, nws;
    float loss;
} layer;

static void add_in(layer *L, const char *name, float *p, size_t n) {
    L->inname[L->ninputs] = name;
    L->in[L->ninputs] = p;
    L->nin[L->ninputs++] = n;
}

static void layer_alloc_out(layer *L) {
    L->y = vec(L->ny);
    L->ws = L->nws ? vec(L->nws) : NULL;
}

static layer make_conv(int b, int ci, int h, int w, int co, int k, int s, int p, int with_bias) {
    layer L;
    int ho = (h + 2 * p - k) / s + 1, wo = (w + 2 * p - k) / s + 1;
    memset(&L, 0, sizeof L);
    L.kind = K_CONV;
    L.b = b; L.ci = ci; L.h = h; L.w = w; L.co = co; L.k = k; L.s = s; L.p = p;
    add_in(&L, "x", rnd((size_t)b * ci * h * w, -1, 1), (size_t)b * ci * h * w);
    add_in(&L, "w", rnd((size_t)co * ci * k * k, -0.5f, 0.5f), (size_t)co * ci * k * k);
    if (with_bias) add_in(&L, "bias", rnd((size_t)co, -0.5f, 0.5f), (size_t)co);
    L.ny = (size_t)b * co * ho * wo;
    L.nws = prg_conv2d_workspace(b, ci, h, w, co, k, s, p);
    layer_alloc_out(&L);
    return L;
}

static layer make_linear(int n, int in, int out) {
    layer L;
    memset(&L, 0, sizeof L);
    L.kind = K_LINEAR;
    L.b = n; L.ci = in; L.co = out;
    add_in(&L, "x", rnd((size_t)n * in, -1, 1), (size_t)n * in);
    add_in(&L, "w", rnd((size_t)out * in, -0.5f, 0.5f), (size_t)out * in);
    add_in(&L, "bias", rnd((size_t)out, -0.5f, 0.5f), (size_t)out);
    L.ny = (size_t)n * out;
    layer_alloc_out(&L);
    return L;
}

/* GroupNorm (kind K_GN) or LayerNorm (K_LN: b = rows, c = d, hw = 1, g = 1) */
static layer make_norm(enum kind kind, int b, int c, int hw, int g) {
    layer L;
    size_t n = (size_t)b * c * hw;
    memset(&L, 0, sizeof L);
    L.kind = kind;
    L.b = b; L.c = c; L.hw = hw; L.g = g; L.eps = 1e-5f;
    add_in(&L, "x", rnd(n, -2, 2), n);
    add_in(&L, "gamma", rnd((size_t)c, 0.5f, 1.5f), (size_t)c);
    add_in(&L, "beta", rnd((size_t)c, -0.5f, 0.5f), (size_t)c);
    L.ny = n;
    layer_alloc_out(&L);
    L.mean = vec((size_t)b * g);
    L.rstd = vec((size_t)b * g);
    return L;
}

static layer make_elementwise(enum kind kind, size_t n) {
    layer L;
    memset(&L, 0, sizeof L);
    L.kind = kind;
    add_in(&L, "x", rnd(n, -4, 4), n);
    L.ny = n;
    layer_alloc_out(&L);
    return L;
}

static layer make_ss(int b, int c, int hw) {
    layer L;
    memset(&L, 0, sizeof L);
    L.kind = K_SS;
    L.b = b; L.c = c; L.hw = hw;
    add_in(&L, "x", rnd((size_t)b * c * hw, -1, 1), (size_t)b * c * hw);
    add_in(&L, "ss", rnd((size_t)b * 2 * c, -1, 1), (size_t)b * 2 * c);
    L.ny = (size_t)b * c * hw;
    layer_alloc_out(&L);
    return L;
}

static layer make_att(int b, int c, int t, int heads) {
    layer L;
    memset(&L, 0, sizeof L);
    L.kind = K_ATT;
    L.b = b; L.c = c; L.t = t; L.heads = heads;
    add_in(&L, "qkv", rnd((size_t)b * 3 * c * t, -1.5f, 1.5f), (size_t)b * 3 * c * t);
    L.ny = (size_t)b * c * t;
    L.nws = prg_attention_workspace(b, c, t, heads);
    layer_alloc_out(&L);
    L.mean = vec((size_t)b * heads * t * t); /* the saved softmax */
    return L;
}

static layer make_plane(enum kind kind, int n, int h, int w, int f) {
    layer L;
    memset(&L, 0, sizeof L);
    L.kind = kind;
    L.b = n; L.h = h; L.w = w; L.f = f;
    add_in(&L, "x", rnd((size_t)n * h * w, -1, 1), (size_t)n * h * w);
    L.ny = kind == K_UP ? (size_t)n * 4 * h * w : (size_t)n * (h / f) * (w / f);
    layer_alloc_out(&L);
    return L;
}

static layer make_cat(int b, int c1, int c2, int hw) {
    layer L;
    memset(&L, 0, sizeof L);
    L.kind = K_CAT;
    L.b = b; L.c = c1; L.c2 = c2; L.hw = hw;
    add_in(&L, "a", rnd((size_t)b * c1 * hw, -1, 1), (size_t)b * c1 * hw);
    add_in(&L, "c", rnd((size_t)b * c2 * hw, -1, 1), (size_t)b * c2 * hw);
    L.ny = (size_t)b * (c1 + c2) * hw;
    layer_alloc_out(&L);
    return L;
}

static layer make_ce(int n, int k, float smoothing) {
    layer L;
    int i;
    memset(&L, 0, sizeof L);
    L.kind = K_CE;
    L.b = n; L.c = k; L.smoothing = smoothing;
    add_in(&L, "logits", rnd((size_t)n * k, -3, 3), (size_t)n * k);
    L.labels = (int *)malloc((size_t)n * sizeof(int));
    for (i = 0; i < n; i++) L.labels[i] = (int)prg_rng_below(&rng, (uint32_t)k);
    L.ny = 1;
    layer_alloc_out(&L);
    return L;
}

static layer make_flow(int b, int c, int hw) {
    layer L;
    memset(&L, 0, sizeof L);
    L.kind = K_FLOW;
    L.b = b; L.c = c; L.hw = hw;
    add_in(&L, "v", rnd((size_t)b * c * hw, -2, 2), (size_t)b * c * hw);
    add_in(&L, "target", rnd((size_t)b * c * hw, -2, 2), (size_t)b * c * hw);
    L.ny = 1;
    layer_alloc_out(&L);
    return L;
}

static void layer_free(layer *L) {
    int i;
    for (i = 0; i < L->ninputs; i++) free(L->in[i]);
    free(L->y); free(L->ws); free(L->mean); free(L->rstd); free(L->labels);
}

/* Forward into L->y (losses: y[0] = loss).  ref selects the _ref twin. */
static void layer_forward(layer *L, int ref) {
    float **in = L->in;
    switch (L->kind) {
    case K_CONV:
        (ref ? prg_conv2d_forward_ref : prg_conv2d_forward)(
            L->y, in[0], in[1], L->ninputs > 2 ? in[2] : NULL, L->b, L->ci, L->h, L->w, L->co,
            L->k, L->s, L->p, L->ws);
        break;
    case K_LINEAR:
        (ref ? prg_linear_forward_ref : prg_linear_forward)(L->y, in[0], in[1], in[2], L->b, L->ci,
                                                            L->co);
        break;
    case K_GN:
        (ref ? prg_groupnorm_forward_ref : prg_groupnorm_forward)(
            L->y, L->mean, L->rstd, in[0], in[1], in[2], L->b, L->c, L->hw, L->g, L->eps);
        break;
    case K_LN:
        (ref ? prg_layernorm_forward_ref : prg_layernorm_forward)(L->y, L->mean, L->rstd, in[0],
                                                                  in[1], in[2], L->b, L->c, L->eps);
        break;
    case K_SILU: (ref ? prg_silu_forward_ref : prg_silu_forward)(L->y, in[0], L->ny); break;
    case K_TANH: (ref ? prg_tanh_forward_ref : prg_tanh_forward)(L->y, in[0], L->ny); break;
    case K_SS:
        (ref ? prg_scale_shift_forward_ref : prg_scale_shift_forward)(L->y, in[0], in[1], L->b,
                                                                      L->c, L->hw);
        break;
    case K_ATT:
        (ref ? prg_attention_forward_ref : prg_attention_forward)(L->y, L->mean, in[0], L->b, L->c,
                                                                  L->t, L->heads, L->ws);
        break;
    case K_UP:
        (ref ? prg_upsample2x_forward_ref : prg_upsample2x_forward)(L->y, in[0], L->b, L->h, L->w);
        break;
    case K_POOL:
        (ref ? prg_avgpool_forward_ref : prg_avgpool_forward)(L->y, in[0], L->b, L->h, L->w, L->f);
        break;
    case K_CAT:
        (ref ? prg_concat_forward_ref : prg_concat_forward)(L->y, in[0], in[1], L->b, L->c, L->c2,
                                                            L->hw);
        break;
    case K_CE:
        L->y[0] = prg_cross_entropy_forward_backward(NULL, in[0], L->labels, L->b, L->c,
                                                     L->smoothing);
        break;
    case K_FLOW:
        L->y[0] = prg_flow_loss_forward_backward(NULL, in[0], in[1], L->b, L->c, L->hw);
        break;
    }
}

/* Backward with dy into g[i] (accumulating; g[i] == NULL skips).  Needs the
   saved values of a forward on the same inputs.  Losses SET the gradient of
   their first input (dy ignored; their second input gets none). */
static void layer_backward(layer *L, int ref, const float *dy, float **g) {
    float **in = L->in;
    switch (L->kind) {
    case K_CONV:
        (ref ? prg_conv2d_backward_ref : prg_conv2d_backward)(
            g[0], g[1], L->ninputs > 2 ? g[2] : NULL, dy, in[0], in[1], L->b, L->ci, L->h, L->w,
            L->co, L->k, L->s, L->p, L->ws);
        break;
    case K_LINEAR:
        (ref ? prg_linear_backward_ref : prg_linear_backward)(g[0], g[1], g[2], dy, in[0], in[1],
                                                              L->b, L->ci, L->co);
        break;
    case K_GN:
        (ref ? prg_groupnorm_backward_ref : prg_groupnorm_backward)(
            g[0], g[1], g[2], dy, in[0], L->mean, L->rstd, in[1], L->b, L->c, L->hw, L->g);
        break;
    case K_LN:
        (ref ? prg_layernorm_backward_ref : prg_layernorm_backward)(
            g[0], g[1], g[2], dy, in[0], L->mean, L->rstd, in[1], L->b, L->c);
        break;
    case K_SILU: (ref ? prg_silu_backward_ref : prg_silu_backward)(g[0], dy, in[0], L->ny); break;
    case K_TANH: (ref ? prg_tanh_backward_ref : prg_tanh_backward)(g[0], dy, L->y, L->ny); break;
    case K_SS:
        (ref ? prg_scale_shift_backward_ref : prg_scale_shift_backward)(g[0], g[1], dy, in[0],
                                                                        in[1], L->b, L->c, L->hw);
        break;
    case K_ATT:
        (ref ? prg_attention_backward_ref : prg_attention_backward)(g[0], dy, in[0], L->mean, L->b,
                                                                    L->c, L->t, L->heads, L->ws);
        break;
    case K_UP:
        (ref ? prg_upsample2x_backward_ref : prg_upsample2x_backward)(g[0], dy, L->b, L->h, L->w);
        break;
    case K_POOL:
        (ref ? prg_avgpool_backward_ref : prg_avgpool_backward)(g[0], dy, L->b, L->h, L->w, L->f);
        break;
    case K_CAT:
        (ref ? prg_concat_backward_ref : prg_concat_backward)(g[0], g[1], dy, L->b, L->c, L->c2,
                                                              L->hw);
        break;
    case K_CE:
        (void)prg_cross_entropy_forward_backward(g[0], in[0], L->labels, L->b, L->c, L->smoothing);
        break;
    case K_FLOW:
        (void)prg_flow_loss_forward_backward(g[0], in[0], in[1], L->b, L->c, L->hw);
        break;
    }
}

static int is_loss(const layer *L) { return L->kind == K_CE || L->kind == K_FLOW; }

/* (a) fast against _ref: forward outputs, and backward from gradient
   buffers pre-filled with the same random values (so accumulation is
   checked too).  tol_f / tol_b: relative (max-norm) tolerances. */
static void check_vs_ref(layer *L, const char *what, double tol_f, double tol_b) {
    float *yref = vec(L->ny), *dy = rnd(L->ny, -1, 1);
    float *gf[4] = {NULL, NULL, NULL, NULL}, *gr[4] = {NULL, NULL, NULL, NULL};
    int i;
    double e;
    layer_forward(L, 1);
    memcpy(yref, L->y, L->ny * sizeof(float));
    layer_forward(L, 0);
    e = rel_err(L->y, yref, L->ny);
    CHECK(e <= tol_f, "[%s] %s %s: forward differs from _ref by %.3g (tol %.3g)", kern,
          kind_name[L->kind], what, e, tol_f);
    for (i = 0; i < L->ninputs; i++) {
        gf[i] = rnd(L->nin[i], -1, 1);
        gr[i] = copy_of(gf[i], L->nin[i]);
    }
    { /* NULL skips a gradient and changes none of the others */
        float *gs[4] = {NULL, NULL, NULL, NULL}, *none[4] = {NULL, NULL, NULL, NULL};
        int same = 1;
        for (i = 1; i < L->ninputs; i++) gs[i] = copy_of(gf[i], L->nin[i]);
        layer_backward(L, 0, dy, none);
        layer_backward(L, 0, dy, gs);
        layer_backward(L, 0, dy, gf);
        for (i = 1; i < L->ninputs; i++) {
            if (memcmp(gs[i], gf[i], L->nin[i] * sizeof(float)) != 0) same = 0;
            free(gs[i]);
        }
        CHECK(same, "[%s] %s %s: parameter gradients change when d%s is NULL", kern,
              kind_name[L->kind], what, L->inname[0]);
    }
    layer_backward(L, 1, dy, gr);
    for (i = 0; i < L->ninputs; i++) {
        e = rel_err(gf[i], gr[i], L->nin[i]);
        CHECK(e <= tol_b, "[%s] %s %s: d%s differs from _ref by %.3g (tol %.3g)", kern,
              kind_name[L->kind], what, L->inname[i], e, tol_b);
        free(gf[i]);
        free(gr[i]);
    }
    free(yref);
    free(dy);
}

/* (b) central finite differences of L = sum r . y (or the loss) on every
   element of every input, against the fast backward.  The forward is the
   _ref twin, which rounds each output once from double, so each evaluation
   of L carries at most about eps/2 * S rounding error, S = sum |r y|
   (a few eps for the kernels with a float intermediate: budget 4 eps S).
   The difference quotient then has rounding error <= 4 eps S / h, and its
   truncation error is O(h^2) = 1e-6 relative for these smooth functions:
   |fd - g| <= 4 eps S / h + 1e-4 max|g|. */
static void check_fd(layer *L, const char *what) {
    const float h = 1e-3f;
    float *r = rnd(L->ny, -1, 1);
    float *g[4] = {NULL, NULL, NULL, NULL};
    int i, fails = 0;
    size_t e, o;
    layer_forward(L, 1);
    for (i = 0; i < L->ninputs; i++) /* losses: no gradient for the target */
        g[i] = is_loss(L) && i > 0 ? NULL : (float *)calloc(L->nin[i], sizeof(float));
    layer_backward(L, 0, r, g);
    for (i = 0; i < L->ninputs; i++) {
        double gmax = 0.0, worst = 0.0, wfd = 0.0, wg = 0.0, wtol = 0.0;
        if (!g[i]) continue;
        for (e = 0; e < L->nin[i]; e++)
            if (fabs(g[i][e]) > gmax) gmax = fabs(g[i][e]);
        for (e = 0; e < L->nin[i]; e++) {
            float x0 = L->in[i][e], xp = x0 + h, xm = x0 - h;
            double lp = 0.0, lm = 0.0, s = 0.0, fd, tol;
            L->in[i][e] = xp;
            layer_forward(L, 1);
            for (o = 0; o < L->ny; o++) {
                double ro = is_loss(L) ? 1.0 : r[o];
                lp += ro * L->y[o];
                s += fabs(ro * L->y[o]);
            }
            L->in[i][e] = xm;
            layer_forward(L, 1);
            for (o = 0; o < L->ny; o++) {
                double ro = is_loss(L) ? 1.0 : r[o];
                lm += ro * L->y[o];
                s += fabs(ro * L->y[o]);
            }
            L->in[i][e] = x0;
            fd = (lp - lm) / ((double)xp - (double)xm);
            tol = 4.0 * FLT_EPSILON * (s / 2) / h + 1e-4 * gmax;
            if (fabs(fd - g[i][e]) > tol) fails++;
            if (fabs(fd - g[i][e]) / tol > worst) {
                worst = fabs(fd - g[i][e]) / tol;
                wfd = fd;
                wg = g[i][e];
                wtol = tol;
            }
        }
        CHECK(fails == 0, "[%s] %s %s: d%s: %d of %d elements off finite differences (worst fd "
              "%.7g backward %.7g tol %.3g)", kern, kind_name[L->kind], what, L->inname[i], fails,
              (int)L->nin[i], wfd, wg, wtol);
        fails = 0;
        free(g[i]);
    }
    layer_forward(L, 1); /* leave the saved values consistent */
    free(r);
}

/* (d) the fast forward and backward give the same bits on 1 and 2 threads. */
static void check_threads(layer *L, const char *what) {
    float *y1 = vec(L->ny), *dy = rnd(L->ny, -1, 1), *g1[4] = {0, 0, 0, 0}, *g2[4] = {0, 0, 0, 0};
    int i, same = 1;
    prg_set_num_threads(1);
    layer_forward(L, 0);
    memcpy(y1, L->y, L->ny * sizeof(float));
    for (i = 0; i < L->ninputs; i++) g1[i] = (float *)calloc(L->nin[i], sizeof(float));
    layer_backward(L, 0, dy, g1);
    prg_set_num_threads(2);
    layer_forward(L, 0);
    same = memcmp(y1, L->y, L->ny * sizeof(float)) == 0;
    for (i = 0; i < L->ninputs; i++) g2[i] = (float *)calloc(L->nin[i], sizeof(float));
    layer_backward(L, 0, dy, g2);
    for (i = 0; i < L->ninputs; i++) {
        if (memcmp(g1[i], g2[i], L->nin[i] * sizeof(float)) != 0) same = 0;
        free(g1[i]);
        free(g2[i]);
    }
    CHECK(same, "%s %s: 1 and 2 threads give different bits", kind_name[L->kind], what);
    free(y1);
    free(dy);
}

/* ====================================================================== */

/* conv shapes for the comparisons with the reference and the plan checks */
static const int convs[][9] = {
    /* b ci h w co k s p bias */
    {3, 5, 7, 9, 6, 3, 1, 1, 1},     {2, 3, 11, 6, 4, 3, 2, 1, 1},
    {7, 3, 20, 20, 5, 3, 1, 1, 1},   /* chunks of 6 samples + a remainder of 1 */
    {5, 4, 33, 31, 3, 3, 2, 1, 0},   /* odd sizes, stride 2 */
    {3, 17, 5, 7, 19, 1, 1, 0, 1},   /* 1x1 direct */
    {5, 17, 6, 7, 19, 1, 1, 0, 1},   /* 1x1 direct, a sample per task */
    {2, 6, 8, 8, 65, 1, 2, 0, 1},    /* 1x1 stride 2 (im2col) */
    {2, 3, 6, 5, 2, 2, 1, 0, 1},     /* even kernel, no padding */
    {1, 130, 34, 34, 20, 3, 1, 1, 1}, /* one sample of 1156 columns, big K */
    {3, 4, 9, 10, 5, 3, 1, 0, 1},    /* no padding: dx pads dy by 2 */
    {2, 3, 9, 8, 4, 5, 1, 2, 1},     /* 5x5 */
    {2, 3, 6, 7, 4, 3, 1, 3, 1},     /* pad > k-1: dx through the column matrix */
    {20, 6, 8, 8, 7, 3, 1, 1, 1},    /* 8x8 maps: chunks of 16 + 4 */
    /* few channels on one side (3x3 s1 p1, <= 4 in or out): direct */
    {3, 12, 9, 37, 3, 3, 1, 1, 1},   /* 3 outputs; rows of 32 + 5 pixels */
    {2, 2, 5, 17, 11, 3, 1, 1, 0},   /* 2 inputs; outputs in blocks of 8 + 3; no bias */
    {2, 3, 1, 1, 5, 3, 1, 1, 1},     /* 1x1 maps: every tap but the centre is padding */
    /* Winograd F(2x2,3x3) (3x3 s1 p1, >= 8 channels; forward and dx on maps >= 16x16, >= 8x8 with AVX-512) */
    {3, 9, 17, 19, 11, 3, 1, 1, 1},  /* odd sizes: tiles past the edge, Co not a multiple of MR */
    {2, 8, 16, 48, 64, 3, 1, 1, 1},  /* runs of 24 tiles across 32-tile panels; dW: 8 x 64 */
    {1, 300, 16, 16, 70, 3, 1, 1, 1},/* Ci over one GEMM depth block (256) */
    {2, 64, 16, 16, 72, 3, 1, 1, 0}, /* dW through Winograd (64 x 72 channels), no bias */
    {3, 70, 18, 20, 9, 3, 1, 1, 1},  /* dx Winograd with depth 9 */
    {1, 256, 8, 9, 260, 3, 1, 1, 1}, /* 8x9 maps: Winograd from 256 channels each way */
    {3, 9, 8, 8, 11, 3, 1, 1, 1},    /* 8x8 maps: whole-plane transforms (AVX-512) */
    {5, 70, 8, 8, 16, 3, 1, 1, 0},   /* ... blocks of several panels, half-panel planes */
    {3, 9, 12, 16, 11, 3, 1, 1, 1},  /* 16-wide maps: two tile rows per vector (AVX-512) */
    {2, 40, 16, 16, 20, 3, 1, 1, 0}, /* ... whole planes over several blocks, no bias */
    /* Winograd F(4x4,3x3) (forward and dx on 16-wide maps, h % 16 == 0, and 32-wide, h % 8 == 0) */
    {2, 12, 24, 32, 10, 3, 1, 1, 1}, /* 32 wide: three groups of 16 tiles a plane, top and bottom edges */
    {3, 20, 32, 16, 30, 3, 1, 1, 0}, /* 16 wide: two groups a plane, Co over two MR panels */
    {2, 9, 64, 32, 17, 3, 1, 1, 1},  /* groups inside the plane (no edge rows), several blocks */
    {32, 20, 8, 8, 18, 3, 1, 1, 1}   /* 8 x 8, batch 32: groups of four samples' planes */
};
#define NCONVS ((int)(sizeof convs / sizeof convs[0]))

static void test_vs_ref(void) {
    layer L;
    /* conv: K = Ci*k*k terms per output; fast sums in float (GEMM) against a
       double reference: normwise error <= K eps max|y| is a loose bound. */
    /* rounds 4..9: each algorithm forced in turn, on the shapes where that
       changes the plan */
    static const prg__conv_algo forced[6] = {PRG__CONV_DIRECT, PRG__CONV_DW3, PRG__CONV_WINO2,
                                             PRG__CONV_WINO4, PRG__CONV_IMPLICIT, PRG__CONV_IM2COL};
    static const char *const forced_name[6] = {"direct", "direct dW", "F(2x2,3x3)", "F(4x4,3x3)", "implicit GEMM",
                                               "im2col"};
    static int calls = 0;
    int i, round, nround = calls++ ? 4 : 10; /* the forced rounds with the first table (the CPU's own) */
    for (round = 0; round < nround; round++)
    for (i = 0; i < NCONVS; i++) {
        const int *c = convs[i];
        char what[96];
        double tol = (double)c[1] * c[5] * c[5] * FLT_EPSILON;
        if (round >= 4) {
            prg__conv_plan p0, p1;
            memset(&p0, 0, sizeof p0);
            memset(&p1, 0, sizeof p1);
            prg__conv_plan_set(&p0, c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]);
            prg__hook.force = forced[round - 4];
            prg__conv_plan_set(&p1, c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]);
            prg__hook.force = 0;
            /* where the shape allows it, the plan takes it */
            if (forced[round - 4] == PRG__CONV_IM2COL && !p1.c.direct)
                CHECK(p1.fwd == PRG__CONV_IM2COL && p1.dx == PRG__CONV_IM2COL && p1.dw == PRG__CONV_IM2COL,
                      "[%s] im2col forced on conv %d: not taken", kern, i);
            if ((forced[round - 4] == PRG__CONV_WINO2 || forced[round - 4] == PRG__CONV_DIRECT) && c[5] == 3 &&
                c[6] == 1 && c[7] == 1)
                CHECK(p1.fwd == forced[round - 4] && p1.dx == forced[round - 4] && p1.dw == forced[round - 4],
                      "[%s] %s forced on conv %d: not taken", kern, forced_name[round - 4], i);
            if (p1.fwd == p0.fwd && p1.dx == p0.dx && p1.dw == p0.dw) continue;
        }
        sprintf(what, "b%d ci%d %dx%d co%d k%d s%d p%d%s%s", c[0], c[1], c[2], c[3], c[4], c[5], c[6],
                c[7], round == 1 ? " explicit columns" : round == 2 ? " no Winograd" : round == 3 ? " F(2x2,3x3)" :
                round >= 4 ? " forced " : "", round >= 4 ? forced_name[round - 4] : "");
        /* the first round: F(4x4,3x3) where it fits, with the scalar
           kernels where the vector ones are not run; the second: the packing
           buffers "cannot be had", so the convolutions fall back to their
           stored column matrix (Winograd too); the third: the implicit GEMM
           where Winograd would run; the fourth: F(2x2,3x3) everywhere */
        prg__hook.all_kernels = round == 0;
        prg__hook.no_wino4 = round == 3;
        prg__hook.no_packer = round == 1;
        prg__hook.no_wino = round == 2;
        prg__hook.force = round >= 4 ? forced[round - 4] : 0;
        L = make_conv(c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8]);
        /* backward: dx sums Co*k*k, dW sums B*Ho*Wo terms */
        check_vs_ref(&L, what, tol,
                     (double)(c[4] * c[5] * c[5] + c[0] * c[2] * c[3]) * FLT_EPSILON);
        layer_free(&L);
        prg__hook.no_packer = 0;
        prg__hook.no_wino = 0;
        prg__hook.all_kernels = 0;
        prg__hook.no_wino4 = 0;
        prg__hook.force = 0;
    }
    L = make_linear(13, 37, 29);
    check_vs_ref(&L, "13x37->29", 37 * FLT_EPSILON, 37 * FLT_EPSILON);
    layer_free(&L);
    /* norms: sums of up to a few hundred elements in float lanes */
    L = make_norm(K_GN, 3, 12, 37, 4);
    check_vs_ref(&L, "b3 c12 hw37 g4", 1e-5, 1e-5);
    layer_free(&L);
    L = make_norm(K_GN, 2, 64, 64, 32);
    check_vs_ref(&L, "b2 c64 hw64 g32", 1e-5, 1e-5);
    layer_free(&L);
    L = make_norm(K_LN, 5, 77, 1, 1);
    check_vs_ref(&L, "5x77", 1e-5, 1e-5);
    layer_free(&L);
    /* elementwise: a few float roundings per element */
    L = make_elementwise(K_SILU, 100003);
    check_vs_ref(&L, "n=100003", 4 * FLT_EPSILON, 8 * FLT_EPSILON);
    layer_free(&L);
    L = make_elementwise(K_TANH, 100003);
    check_vs_ref(&L, "n=100003", 4 * FLT_EPSILON, 8 * FLT_EPSILON);
    layer_free(&L);
    L = make_ss(3, 7, 41);
    check_vs_ref(&L, "b3 c7 hw41", 4 * FLT_EPSILON, 41 * FLT_EPSILON);
    layer_free(&L);
    /* attention: sums of d and T terms */
    L = make_att(2, 12, 17, 3);
    check_vs_ref(&L, "b2 c12 t17 h3", 64 * FLT_EPSILON, 64 * FLT_EPSILON);
    layer_free(&L);
    L = make_att(3, 64, 64, 4); /* 12 pairs, d 16 */
    check_vs_ref(&L, "b3 c64 t64 h4", 256 * FLT_EPSILON, 256 * FLT_EPSILON);
    layer_free(&L);
    L = make_att(33, 8, 5, 2); /* 66 pairs: two rounds of workspace slots */
    check_vs_ref(&L, "b33 c8 t5 h2", 16 * FLT_EPSILON, 16 * FLT_EPSILON);
    layer_free(&L);
    L = make_plane(K_UP, 5, 3, 7, 2);
    check_vs_ref(&L, "5x3x7", 0.0, 4 * FLT_EPSILON);
    layer_free(&L);
    L = make_plane(K_POOL, 5, 6, 9, 3);
    check_vs_ref(&L, "5x6x9 f3", 9 * FLT_EPSILON, 2 * FLT_EPSILON);
    layer_free(&L);
    L = make_cat(3, 5, 2, 13);
    check_vs_ref(&L, "b3 5+2 hw13", 0.0, 2 * FLT_EPSILON);
    layer_free(&L);
}

/* Each shape's plan: the algorithm of its forward, dx and dW (1: one GEMM
   per sample, D: direct few-channel, d: direct 3x3 dW, W: F(2x2,3x3), F:
   F(4x4,3x3), I: implicit GEMM, C: stored column matrix), as the rules of
   the >>conv section comment give them for the AVX-512 table and for the
   tables without its kernels (avx2, neon, scalar: their direct and
   vector-filling kernels are the scalar twins, left off). */
static void test_plans(void) {
    static const char *const want_avx512 =
        "IId ICC DDD ICC 111 111 ICC IIC WWW IId IIC ICd IId DDD DDD DDD WWW WWW FFF FFF "
        "WWW WWW WWW WWW IIW FFF FFF FFF FFF FFW ";
    static const char *const want_plain =
        "IIC ICC IIC ICC 111 111 ICC IIC WWW IIC IIC ICC IIC IIC ICC IIC WWW WWW WWW WWW "
        "WWW WWW IIW IIW IIW WWW WWW WWW WWW IIW ";
    const char letter[] = "-1DdWFIC";
    const char *want = strcmp(prg_gemm_kernel_name(), "avx512") == 0 ? want_avx512 : want_plain;
    char got[4 * NCONVS + 1];
    int i;
    for (i = 0; i < NCONVS; i++) {
        const int *c = convs[i];
        prg__conv_plan p;
        memset(&p, 0, sizeof p);
        prg__conv_plan_set(&p, c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]);
        got[4 * i] = letter[p.fwd];
        got[4 * i + 1] = letter[p.dx];
        got[4 * i + 2] = letter[p.dw];
        got[4 * i + 3] = ' ';
        CHECK(p.cpu == prg__cpu_get(), "[%s] conv %d planned with another CPU table", kern, i);
    }
    got[4 * NCONVS] = 0;
    CHECK(strcmp(got, want) == 0, "[%s] plans\n  got  %s\n  want %s", kern, got, want);
}

static void test_fd(void) {
    layer L;
    L = make_conv(2, 3, 5, 4, 2, 3, 1, 1, 1); check_fd(&L, "k3 s1 p1"); layer_free(&L);
    L = make_conv(2, 2, 5, 6, 3, 3, 2, 1, 1); check_fd(&L, "k3 s2 p1"); layer_free(&L);
    L = make_conv(2, 3, 3, 4, 2, 1, 1, 0, 1); check_fd(&L, "k1 direct"); layer_free(&L);
    L = make_conv(1, 2, 4, 5, 2, 2, 1, 0, 0); check_fd(&L, "k2 p0 no bias"); layer_free(&L);
    L = make_linear(3, 5, 4); check_fd(&L, "3x5->4"); layer_free(&L);
    L = make_norm(K_GN, 2, 6, 5, 3); check_fd(&L, "b2 c6 hw5 g3"); layer_free(&L);
    L = make_norm(K_LN, 3, 7, 1, 1); check_fd(&L, "3x7"); layer_free(&L);
    L = make_elementwise(K_SILU, 40); check_fd(&L, "n40"); layer_free(&L);
    L = make_elementwise(K_TANH, 40); check_fd(&L, "n40"); layer_free(&L);
    L = make_ss(2, 3, 5); check_fd(&L, "b2 c3 hw5"); layer_free(&L);
    L = make_att(2, 4, 5, 2); check_fd(&L, "b2 c4 t5 h2"); layer_free(&L);
    L = make_plane(K_UP, 2, 3, 2, 2); check_fd(&L, "2x3x2"); layer_free(&L);
    L = make_plane(K_POOL, 2, 4, 6, 2); check_fd(&L, "2x4x6 f2"); layer_free(&L);
    L = make_cat(2, 2, 3, 4); check_fd(&L, "b2 2+3 hw4"); layer_free(&L);
    L = make_ce(4, 5, 0.1f); check_fd(&L, "4x5 s0.1"); layer_free(&L);
    L = make_ce(3, 4, 0.0f); check_fd(&L, "3x4 s0"); layer_free(&L);
    L = make_flow(2, 3, 5); check_fd(&L, "b2 c3 hw5"); layer_free(&L);
}

/* Winograd F(4x4,3x3): the vector group transforms and weight packing
   against their scalar twins (where the vector ones run), and the
   convolution takes it where it fits */
static void test_wino4(void) {
    prg__wino_fns fn = prg__wino_select();
    const prg__gemm_impl *g = prg__gemm_select();
    int w, nxi, flip;
    for (w = 8; w <= 32 && fn.fast4; w *= 2) { /* 32 rows: groups at the top, inside and at the bottom; 8 x 8: four planes */
        const int h = w == 8 ? 8 : 32, tw = w / 4, groups = w == 8 ? 1 : h / 4 * tw / 16;
        const size_t ps = (size_t)h * w + 5, np = 4 * ps; /* planes ps floats apart */
        size_t vs = 48, n = (size_t)36 * vs;
        float *plane = rnd(np, -1, 1), *v1 = vec(n), *v2 = vec(n), *m = rnd(n, -1, 1);
        float *y1 = rnd(np, -1, 1), *y2 = copy_of(y1, np);
        int gi, acc, part;
        double e = 0, ey = 0, ed = 0, e1;
        for (gi = 0; gi < groups; gi++) {
            int ty0 = gi * 16 / tw;
            for (part = 0; part < 2; part++) { /* all six rows of the transform, and rows 1..3 */
                int k0 = part, k1 = part ? 4 : 6;
                fn.in4(v1, vs, plane, ps, h, w, ty0, k0, k1);
                prg__wino4_in_ref(v2, vs, plane, ps, h, w, ty0, k0, k1);
                for (nxi = 0; nxi < 6 * (k1 - k0); nxi++) {
                    e1 = rel_err(v1 + nxi * vs, v2 + nxi * vs, 16);
                    if (e1 > e) e = e1;
                }
                if (w == 8) continue; /* the weight gradient stays with F(2x2,3x3) on 8 x 8 maps */
                fn.dy4(v1, vs, plane, ps, w, ty0, k0, k1);
                prg__wino4_dy_ref(v2, vs, plane, ps, w, ty0, k0, k1);
                for (nxi = 0; nxi < 6 * (k1 - k0); nxi++) {
                    e1 = rel_err(v1 + nxi * vs, v2 + nxi * vs, 16);
                    if (e1 > ed) ed = e1;
                }
            }
            for (acc = 0; acc < 2; acc++) {
                fn.out4(y1, ps, w, ty0, m + acc * 16, vs, 0.25f, acc);
                prg__wino4_out_ref(y2, ps, w, ty0, m + acc * 16, vs, 0.25f, acc);
            }
        }
        ey = rel_err(y1, y2, np); /* the floats between the planes too: untouched */
        /* the same sums (36 terms at most, entries up to 25 and 8) up to contraction into FMAs */
        CHECK(e <= 64 * FLT_EPSILON, "[%s] F(4x4,3x3) input transform, %d wide: %.3g from its scalar twin", kern,
              w, e);
        CHECK(ey <= 64 * FLT_EPSILON, "[%s] F(4x4,3x3) output transform, %d wide: %.3g from its scalar twin", kern,
              w, ey);
        CHECK(ed <= 64 * FLT_EPSILON, "[%s] F(4x4,3x3) dy transform, %d wide: %.3g from its scalar twin", kern, w,
              ed);
        free(plane); free(v1); free(v2); free(m); free(y1); free(y2);
    }
    for (nxi = 16; nxi <= 36 && fn.fast4; nxi += 20)
        for (flip = 0; flip < 2; flip++) { /* Ci over one K chunk, Co not a multiple of MR */
            const int co = 2 * g->mr + 3, ci = g->kc + 9, copad = (co + g->mr - 1) / g->mr * g->mr;
            size_t nu = (size_t)nxi * copad * ci;
            float *wt = rnd((size_t)co * ci * 9, -1, 1), *u1 = vec(nu), *u2 = vec(nu);
            double e;
            fn.weights(u1, wt, (size_t)ci * 9, 9, flip, nxi, co, ci, copad, g->mr, g->kc, 0, copad / g->mr);
            prg__wino_weights(u2, wt, (size_t)ci * 9, 9, flip, nxi, co, ci, copad, g->mr, g->kc, 0, copad / g->mr);
            e = rel_err(u1, u2, nu);
            CHECK(e <= 8 * FLT_EPSILON, "[%s] Winograd weights (%d positions, flip %d): %.3g from the scalar twin",
                  kern, nxi, flip, e);
            free(wt); free(u1); free(u2);
        }
    if (fn.fast4) { /* the weight gradient's inverse transform, 21 input channels (a vector and a part) */
        const int cin = 21, co = 3;
        size_t su = (size_t)co * cin;
        float *u = rnd(36 * su, -1, 1), *d1 = rnd((size_t)co * cin * 9, -1, 1), *d2 = copy_of(d1, (size_t)co * cin * 9);
        int o;
        for (o = 0; o < co; o++) {
            fn.dw_inverse4(d1 + (size_t)o * cin * 9, u + (size_t)o * cin, su, cin);
            prg__wino4_dw_inverse(d2 + (size_t)o * cin * 9, u + (size_t)o * cin, su, cin);
        }
        CHECK(rel_err(d1, d2, (size_t)co * cin * 9) <= 8 * FLT_EPSILON,
              "[%s] F(4x4,3x3) weight-gradient inverse: %.3g from its scalar twin", kern,
              rel_err(d1, d2, (size_t)co * cin * 9));
        free(u); free(d1); free(d2);
    }
    { /* the convolution takes F(4x4,3x3) on a 32-wide map: other bits than F(2x2,3x3), both near the reference */
        const int b = 2, ci = 12, h = 16, w = 32, co = 10;
        size_t nx = (size_t)b * ci * h * w, ny = (size_t)b * co * h * w, nw = (size_t)co * ci * 9;
        float *x = rnd(nx, -1, 1), *wt = rnd(nw, -1, 1), *y4 = vec(ny), *y2 = vec(ny), *yr = vec(ny);
        float *ws = vec(prg_conv2d_workspace(b, ci, h, w, co, 3, 1, 1));
        prg__hook.all_kernels = 1; /* where the vector kernels are not run */
        prg_conv2d_forward(y4, x, wt, NULL, b, ci, h, w, co, 3, 1, 1, ws);
        prg__hook.no_wino4 = 1;
        prg_conv2d_forward(y2, x, wt, NULL, b, ci, h, w, co, 3, 1, 1, ws);
        prg__hook.no_wino4 = 0;
        prg__hook.all_kernels = 0;
        prg_conv2d_forward_ref(yr, x, wt, NULL, b, ci, h, w, co, 3, 1, 1, ws);
        if (g->nr % 16 == 0) CHECK(memcmp(y4, y2, ny * sizeof(float)) != 0, "[%s] F(4x4,3x3) not taken", kern);
        CHECK(rel_err(y4, yr, ny) <= ci * 9 * FLT_EPSILON && rel_err(y2, yr, ny) <= ci * 9 * FLT_EPSILON,
              "[%s] F(4x4,3x3) %.3g, F(2x2,3x3) %.3g from the reference", kern, rel_err(y4, yr, ny),
              rel_err(y2, yr, ny));
        free(x); free(wt); free(y4); free(y2); free(yr); free(ws);
    }
}

/* Every vector kernel of the CPU table in use against its scalar twin in the
   scalar table: the direct convolution kernels, the dot-product dW kernel
   and the vector-filling Winograd transforms give the same bits. */
static int same_bits(const float *a, const float *b, size_t n) { return memcmp(a, b, n * sizeof(float)) == 0; }

static void test_twins(void) {
    const prg__cpu *v = prg__cpu_get(), *sc = &prg__cpus[PRG__NCPUS - 1];
    int flip, acc, ob, i, k0;
    CHECK(strcmp(sc->name, "scalar") == 0, "the last CPU table is %s, not the scalar one", sc->name);
    if (v == sc) return;
    { /* dW taps over widened rows: 3 planes, a tail of 5 */
        const size_t n = 37, wp = 9, gs = 60, xs = 90;
        float *g = rnd(3 * gs + 8, -1, 1), *x = rnd(3 * xs + 40, -1, 1), o1[18], o2[18];
        for (i = 0; i < 18; i++) o1[i] = o2[i] = 0.25f * (float)i;
        v->vec.dw3(o1, g, g + 11, x, n, (int)wp, 3, gs, xs);
        sc->vec.dw3(o2, g, g + 11, x, n, (int)wp, 3, gs, xs);
        CHECK(same_bits(o1, o2, 18), "[%s] dw3: other bits than the scalar twin", v->name);
        for (i = 0; i < 18; i++) o1[i] = o2[i] = 0.0f;
        v->vec.dw3p(o1, g, g + 11, x, 5, 9, 2, gs, xs); /* 5 x 9 planes */
        sc->vec.dw3p(o2, g, g + 11, x, 5, 9, 2, gs, xs);
        CHECK(same_bits(o1, o2, 18), "[%s] dw3p: other bits than the scalar twin", v->name);
        v->vec.dw3p(o1, g, g + 7, x, 3, 19, 3, gs, xs); /* 19 wide: a vector and a part */
        sc->vec.dw3p(o2, g, g + 7, x, 3, 19, 3, gs, xs);
        CHECK(same_bits(o1, o2, 18), "[%s] dw3p 19 wide: other bits than the scalar twin", v->name);
        free(g); free(x);
    }
    for (ob = 3; ob <= 8; ob += 5) /* few-channel direct conv: 37 wide (32 + 5), 3 inputs */
        for (flip = 0; flip < 2; flip++)
            for (acc = 0; acc < 2; acc++) {
                const int ci = 3, h = 4, w = 37;
                size_t ny = (size_t)ob * h * w;
                float *x = rnd((size_t)ci * h * w, -1, 1), *wt = rnd((size_t)ob * ci * 9, -1, 1);
                float *bias = rnd((size_t)ob, -1, 1), *y1 = rnd(ny, -1, 1), *y2 = copy_of(y1, ny);
                v->vec.conv3(y1, x, wt, (size_t)ci * 9, 9, flip, flip ? NULL : bias, acc, ci, ob, h, w);
                sc->vec.conv3(y2, x, wt, (size_t)ci * 9, 9, flip, flip ? NULL : bias, acc, ci, ob, h, w);
                CHECK(same_bits(y1, y2, ny), "[%s] conv3 ob %d flip %d acc %d: other bits than the scalar twin",
                      v->name, ob, flip, acc);
                free(x); free(wt); free(bias); free(y1); free(y2);
            }
    { /* the weight gradient's dot products: 7 x 6 sums of 37 terms */
        const int m = 7, n = 6, k = 37;
        float *a = rnd((size_t)m * 40, -1, 1), *b = rnd((size_t)n * 41, -1, 1);
        float *c1 = rnd((size_t)m * 9, -1, 1), *c2 = copy_of(c1, (size_t)m * 9);
        v->wino.nt(m, n, k, a, 40, b, 41, c1, 9);
        sc->wino.nt(m, n, k, a, 40, b, 41, c2, 9);
        if (v->wino.dot_nt)
            CHECK(same_bits(c1, c2, (size_t)m * 9), "[%s] Winograd nt: other bits than the scalar twin", v->name);
        free(a); free(b); free(c1); free(c2);
    }
    for (k0 = 0; k0 < 2; k0++) { /* whole-plane 8 x 8 and two-row 16-wide transforms, all rows and rows 1..3 */
        const size_t vs = 21, n = 16 * vs;
        const int k1 = 4, nk = k1 - k0, h = 12;
        float *plane = rnd(16 * 16, -1, 1), *v1 = vec(n), *v2 = vec(n), *m = rnd(n, -1, 1);
        float *y1 = rnd(16 * 16, -1, 1), *y2 = copy_of(y1, 16 * 16);
        memset(v1, 0, n * sizeof(float)); memset(v2, 0, n * sizeof(float));
        v->wino.in_plane8(v1, vs, plane, k0, k1);
        sc->wino.in_plane8(v2, vs, plane, k0, k1);
        CHECK(same_bits(v1, v2, n), "[%s] in_plane8 rows %d..%d: other bits than the scalar twin", v->name, k0, k1);
        v->wino.dy_plane8(v1, vs, plane, k0, k1);
        sc->wino.dy_plane8(v2, vs, plane, k0, k1);
        CHECK(same_bits(v1, v2, n), "[%s] dy_plane8: other bits than the scalar twin", v->name);
        v->wino.in_rows16(v1, vs, plane, h, 2 * k0, k0, k1);
        sc->wino.in_rows16(v2, vs, plane, h, 2 * k0, k0, k1);
        CHECK(same_bits(v1, v2, n), "[%s] in_rows16: other bits than the scalar twin", v->name);
        v->wino.dy_rows16(v1, vs, plane, h, 2 * k0, k0, k1);
        sc->wino.dy_rows16(v2, vs, plane, h, 2 * k0, k0, k1);
        CHECK(same_bits(v1, v2, (size_t)4 * nk * vs), "[%s] dy_rows16: other bits than the scalar twin", v->name);
        for (acc = 0; acc < 2; acc++) {
            v->wino.out_plane8(y1, m, vs, 0.5f, acc);
            sc->wino.out_plane8(y2, m, vs, 0.5f, acc);
            v->wino.out_rows16(y1 + 64, 2, m, vs, 0.5f, acc);
            sc->wino.out_rows16(y2 + 64, 2, m, vs, 0.5f, acc);
        }
        CHECK(same_bits(y1, y2, 16 * 16), "[%s] out_plane8 / out_rows16: other bits than the scalar twins", v->name);
        free(plane); free(v1); free(v2); free(m); free(y1); free(y2);
    }
}

static void test_threads(void) {
    layer L;
    int i;
    L = make_conv(4, 16, 24, 24, 24, 3, 1, 1, 1); check_threads(&L, "3x3"); layer_free(&L);
    /* the Winograd weight gradient planned for 4 threads, run on 1 and 2:
       the rows of the transform a thread's buffers cannot hold at once are
       done in turns, with the same bits */
    prg__hook.wino_dw_plan = 4;
    L = make_conv(3, 16, 20, 18, 12, 3, 1, 1, 1); check_threads(&L, "3x3, dW planned for 4 threads");
    layer_free(&L);
    prg__hook.wino_dw_plan = 0;
    { /* ... and the same bits as the usual plan */
        const int b = 3, ci = 16, h = 20, w = 18, co = 12;
        size_t nx = (size_t)b * ci * h * w, ny = (size_t)b * co * h * w, nw = (size_t)co * ci * 9;
        float *x = rnd(nx, -1, 1), *dy = rnd(ny, -1, 1), *wt = rnd(nw, -1, 1);
        float *d1 = (float *)calloc(nw, sizeof(float)), *d2 = (float *)calloc(nw, sizeof(float));
        float *ws = vec(prg_conv2d_workspace(b, ci, h, w, co, 3, 1, 1));
        prg_conv2d_backward(NULL, d1, NULL, dy, x, wt, b, ci, h, w, co, 3, 1, 1, ws);
        prg__hook.wino_dw_plan = 4;
        prg_conv2d_backward(NULL, d2, NULL, dy, x, wt, b, ci, h, w, co, 3, 1, 1, ws);
        prg__hook.wino_dw_plan = 0;
        CHECK(memcmp(d1, d2, nw * sizeof(float)) == 0,
              "Winograd dW planned for 4 threads differs from the usual plan");
        free(x); free(dy); free(wt); free(d1); free(d2); free(ws);
    }
    for (i = 0; i < 2; i++) { /* 8x8 maps, 16-wide maps: the whole-plane and two-row transforms give
                                 the bits of the row transforms */
        const int b = i ? 3 : 5, ci = i ? 9 : 12, h = i ? 12 : 8, w = i ? 16 : 8, co = i ? 11 : 10;
        size_t nx = (size_t)b * ci * h * w, ny = (size_t)b * co * h * w, nw = (size_t)co * ci * 9, k;
        float *x = rnd(nx, -1, 1), *dy = rnd(ny, -1, 1), *wt = rnd(nw, -1, 1), *bias = rnd(co, -1, 1);
        float *out[2][3];
        float *ws = vec(prg_conv2d_workspace(b, ci, h, w, co, 3, 1, 1));
        int rows, same = 1;
        for (rows = 0; rows < 2; rows++) {
            prg__hook.wino_rows_only = rows;
            out[rows][0] = (float *)calloc(ny, sizeof(float));
            out[rows][1] = (float *)calloc(nx, sizeof(float));
            out[rows][2] = (float *)calloc(nw, sizeof(float));
            prg_conv2d_forward(out[rows][0], x, wt, bias, b, ci, h, w, co, 3, 1, 1, ws);
            prg_conv2d_backward(out[rows][1], out[rows][2], NULL, dy, x, wt, b, ci, h, w, co, 3, 1, 1, ws);
            prg__hook.wino_rows_only = 0;
        }
        for (k = 0; k < 3; k++) {
            size_t n = k == 0 ? ny : k == 1 ? nx : nw;
            if (memcmp(out[0][k], out[1][k], n * sizeof(float)) != 0) same = 0;
            free(out[0][k]);
            free(out[1][k]);
        }
        CHECK(same, "%dx%d Winograd: the vector-filling and the row transforms give different bits", h, w);
        free(x); free(dy); free(wt); free(bias); free(ws);
    }
    L = make_conv(3, 16, 16, 32, 20, 3, 1, 1, 1); check_threads(&L, "3x3 F(4x4,3x3)"); layer_free(&L);
    L = make_conv(6, 3, 20, 20, 16, 3, 1, 1, 1); check_threads(&L, "3 inputs (direct)"); layer_free(&L);
    L = make_conv(5, 16, 20, 20, 3, 3, 1, 1, 1); check_threads(&L, "3 outputs (direct)"); layer_free(&L);
    L = make_conv(9, 8, 16, 16, 8, 3, 2, 1, 1); check_threads(&L, "stride 2"); layer_free(&L);
    L = make_conv(4, 32, 16, 16, 48, 1, 1, 0, 1); check_threads(&L, "1x1"); layer_free(&L);
    L = make_linear(64, 128, 96); check_threads(&L, ""); layer_free(&L);
    L = make_norm(K_GN, 4, 64, 256, 32); check_threads(&L, ""); layer_free(&L);
    L = make_norm(K_LN, 64, 768, 1, 1); check_threads(&L, ""); layer_free(&L);
    L = make_elementwise(K_SILU, 200000); check_threads(&L, ""); layer_free(&L);
    L = make_elementwise(K_TANH, 200000); check_threads(&L, ""); layer_free(&L);
    L = make_ss(4, 64, 256); check_threads(&L, ""); layer_free(&L);
    L = make_att(3, 64, 64, 4); check_threads(&L, ""); layer_free(&L);
    L = make_plane(K_UP, 64, 16, 16, 2); check_threads(&L, ""); layer_free(&L);
    L = make_plane(K_POOL, 64, 32, 32, 2); check_threads(&L, ""); layer_free(&L);
    L = make_cat(8, 64, 32, 256); check_threads(&L, ""); layer_free(&L);
}

/* A convolution started from inside a parallel task (every thread runs the
   whole layer on its own outputs and workspace) runs serially there: it must
   neither block on the pool nor give other bits than a call from outside. */
typedef struct nested_conv {
    const float *x, *wt, *bias, *dy;
    float *y[2], *dx[2], *dw[2], *db[2], *ws[2];
    int b, ci, h, w, co;
} nested_conv;

static void nested_conv_task(void *ctx, int ith, int nth) {
    nested_conv *n = (nested_conv *)ctx;
    int i;
    for (i = ith; i < 2; i += nth) {
        prg_conv2d_forward(n->y[i], n->x, n->wt, n->bias, n->b, n->ci, n->h, n->w, n->co, 3, 1, 1,
                           n->ws[i]);
        prg_conv2d_backward(n->dx[i], n->dw[i], n->db[i], n->dy, n->x, n->wt, n->b, n->ci, n->h,
                            n->w, n->co, 3, 1, 1, n->ws[i]);
    }
}

static void test_nested_conv(void) {
    nested_conv n;
    const int b = 3, ci = 12, h = 16, w = 16, co = 10;
    size_t nx = (size_t)b * ci * h * w, ny = (size_t)b * co * h * w, nw = (size_t)co * ci * 9;
    size_t nws = prg_conv2d_workspace(b, ci, h, w, co, 3, 1, 1);
    float *x = rnd(nx, -1.0f, 1.0f), *wt = rnd(nw, -0.3f, 0.3f), *bias = rnd((size_t)co, -1.0f, 1.0f);
    float *dy = rnd(ny, -1.0f, 1.0f);
    float *y = vec(ny), *dx = vec(nx), *dw = vec(nw), *db = vec((size_t)co), *ws = vec(nws);
    int i;
    memset(dx, 0, nx * sizeof(float));
    memset(dw, 0, nw * sizeof(float));
    memset(db, 0, co * sizeof(float));
    prg_conv2d_forward(y, x, wt, bias, b, ci, h, w, co, 3, 1, 1, ws);
    prg_conv2d_backward(dx, dw, db, dy, x, wt, b, ci, h, w, co, 3, 1, 1, ws);
    n.x = x; n.wt = wt; n.bias = bias; n.dy = dy;
    n.b = b; n.ci = ci; n.h = h; n.w = w; n.co = co;
    for (i = 0; i < 2; i++) {
        n.y[i] = vec(ny);
        n.dx[i] = vec(nx);
        n.dw[i] = vec(nw);
        n.db[i] = vec((size_t)co);
        n.ws[i] = vec(nws);
        memset(n.dx[i], 0, nx * sizeof(float));
        memset(n.dw[i], 0, nw * sizeof(float));
        memset(n.db[i], 0, co * sizeof(float));
    }
    prg_parallel(nested_conv_task, &n);
    for (i = 0; i < 2; i++) {
        CHECK(!memcmp(n.y[i], y, ny * sizeof(float)) && !memcmp(n.dx[i], dx, nx * sizeof(float)) &&
                  !memcmp(n.dw[i], dw, nw * sizeof(float)) && !memcmp(n.db[i], db, co * sizeof(float)),
              "conv inside a parallel task, copy %d: not the bits of the direct call", i);
        free(n.y[i]); free(n.dx[i]); free(n.dw[i]); free(n.db[i]); free(n.ws[i]);
    }
    free(x); free(wt); free(bias); free(dy); free(y); free(dx); free(dw); free(db); free(ws);
}

/* ---- (c) PyTorch reference values ---------------------------------------------
   The fixture holds inputs, outputs and gradients computed by torch 1.13
   (float32).  Both sides round differently (summation order, exp), so the
   comparison is normwise: max|c - torch| <= TOL_TORCH max|torch|.  The
   cases are small (no sum has more than 60 terms of mixed sign, each side
   errs by a few eps normwise), so 16 eps = 1.9e-6 bounds it; the largest
   error seen is 3.1e-7. */
#define TOL_TORCH (16 * FLT_EPSILON)

static void cmp_torch(const char *what, const float *got, const float *want, size_t n) {
    double e = rel_err(got, want, n);
    CHECK(e <= TOL_TORCH, "[%s] torch %s: relative error %.3g (tol %g)", kern, what, e, TOL_TORCH);
}

static float *zeros(size_t n) { return (float *)calloc(n ? n : 1, sizeof(float)); }

static void test_torch(void) {
    size_t i;
    /* conv2d cases */
    for (i = 0; i < sizeof ref_conv / sizeof ref_conv[0]; i++) {
        const struct ref_conv_case *c = &ref_conv[i];
        int ho = (c->h + 2 * c->p - c->k) / c->s + 1, wo = (c->w + 2 * c->p - c->k) / c->s + 1;
        size_t nx = (size_t)c->b * c->ci * c->h * c->w, nw = (size_t)c->co * c->ci * c->k * c->k;
        size_t ny = (size_t)c->b * c->co * ho * wo;
        float *y = vec(ny), *dx = zeros(nx), *dw = zeros(nw), *db = zeros((size_t)c->co);
        float *ws = vec(prg_conv2d_workspace(c->b, c->ci, c->h, c->w, c->co, c->k, c->s, c->p) + 1);
        char what[64];
        sprintf(what, "conv2d k%d s%d p%d", c->k, c->s, c->p);
        prg_conv2d_forward(y, c->x, c->wt, c->bias, c->b, c->ci, c->h, c->w, c->co, c->k, c->s,
                           c->p, ws);
        cmp_torch(what, y, c->y, ny);
        prg_conv2d_backward(dx, dw, db, c->dy, c->x, c->wt, c->b, c->ci, c->h, c->w, c->co, c->k,
                            c->s, c->p, ws);
        cmp_torch(what, dx, c->dx, nx);
        cmp_torch(what, dw, c->dw, nw);
        cmp_torch(what, db, c->db, (size_t)c->co);
        free(y); free(dx); free(dw); free(db); free(ws);
    }
    { /* linear */
        const int n = REF_LIN_N, in = REF_LIN_IN, out = REF_LIN_OUT;
        float *y = vec((size_t)n * out), *dx = zeros((size_t)n * in), *dw = zeros((size_t)out * in),
              *db = zeros((size_t)out);
        prg_linear_forward(y, ref_lin_x, ref_lin_w, ref_lin_b, n, in, out);
        cmp_torch("linear y", y, ref_lin_y, (size_t)n * out);
        prg_linear_backward(dx, dw, db, ref_lin_dy, ref_lin_x, ref_lin_w, n, in, out);
        cmp_torch("linear dx", dx, ref_lin_dx, (size_t)n * in);
        cmp_torch("linear dw", dw, ref_lin_dw, (size_t)out * in);
        cmp_torch("linear db", db, ref_lin_db, (size_t)out);
        free(y); free(dx); free(dw); free(db);
    }
    { /* GroupNorm */
        const int b = REF_GN_B, c = REF_GN_C, hw = REF_GN_HW, g = REF_GN_G;
        size_t n = (size_t)b * c * hw;
        float *y = vec(n), *mean = vec((size_t)b * g), *rstd = vec((size_t)b * g), *dx = zeros(n),
              *dg = zeros((size_t)c), *dbt = zeros((size_t)c);
        prg_groupnorm_forward(y, mean, rstd, ref_gn_x, ref_gn_gamma, ref_gn_beta, b, c, hw, g, 1e-5f);
        cmp_torch("groupnorm y", y, ref_gn_y, n);
        prg_groupnorm_backward(dx, dg, dbt, ref_gn_dy, ref_gn_x, mean, rstd, ref_gn_gamma, b, c, hw, g);
        cmp_torch("groupnorm dx", dx, ref_gn_dx, n);
        cmp_torch("groupnorm dgamma", dg, ref_gn_dgamma, (size_t)c);
        cmp_torch("groupnorm dbeta", dbt, ref_gn_dbeta, (size_t)c);
        free(y); free(mean); free(rstd); free(dx); free(dg); free(dbt);
    }
    { /* LayerNorm */
        const int n = REF_LN_N, d = REF_LN_D;
        size_t m = (size_t)n * d;
        float *y = vec(m), *mean = vec((size_t)n), *rstd = vec((size_t)n), *dx = zeros(m),
              *dg = zeros((size_t)d), *dbt = zeros((size_t)d);
        prg_layernorm_forward(y, mean, rstd, ref_ln_x, ref_ln_gamma, ref_ln_beta, n, d, 1e-5f);
        cmp_torch("layernorm y", y, ref_ln_y, m);
        prg_layernorm_backward(dx, dg, dbt, ref_ln_dy, ref_ln_x, mean, rstd, ref_ln_gamma, n, d);
        cmp_torch("layernorm dx", dx, ref_ln_dx, m);
        cmp_torch("layernorm dgamma", dg, ref_ln_dgamma, (size_t)d);
        cmp_torch("layernorm dbeta", dbt, ref_ln_dbeta, (size_t)d);
        free(y); free(mean); free(rstd); free(dx); free(dg); free(dbt);
    }
    { /* SiLU, tanh */
        const size_t n = REF_EW_N;
        float *y = vec(n), *dx = zeros(n);
        prg_silu_forward(y, ref_ew_x, n);
        cmp_torch("silu y", y, ref_silu_y, n);
        prg_silu_backward(dx, ref_ew_dy, ref_ew_x, n);
        cmp_torch("silu dx", dx, ref_silu_dx, n);
        memset(dx, 0, n * sizeof(float));
        prg_tanh_forward(y, ref_ew_x, n);
        cmp_torch("tanh y", y, ref_tanh_y, n);
        prg_tanh_backward(dx, ref_ew_dy, y, n);
        cmp_torch("tanh dx", dx, ref_tanh_dx, n);
        free(y); free(dx);
    }
    { /* scale-shift */
        const int b = REF_SS_B, c = REF_SS_C, hw = REF_SS_HW;
        size_t n = (size_t)b * c * hw;
        float *y = vec(n), *dx = zeros(n), *dss = zeros((size_t)b * 2 * c);
        prg_scale_shift_forward(y, ref_ss_x, ref_ss_ss, b, c, hw);
        cmp_torch("scale_shift y", y, ref_ss_y, n);
        prg_scale_shift_backward(dx, dss, ref_ss_dy, ref_ss_x, ref_ss_ss, b, c, hw);
        cmp_torch("scale_shift dx", dx, ref_ss_dx, n);
        cmp_torch("scale_shift dss", dss, ref_ss_dss, (size_t)b * 2 * c);
        free(y); free(dx); free(dss);
    }
    { /* attention */
        const int b = REF_ATT_B, c = REF_ATT_C, t = REF_ATT_T, heads = REF_ATT_HEADS;
        size_t nq = (size_t)b * 3 * c * t, na = (size_t)b * c * t;
        float *a = vec(na), *wsave = vec((size_t)b * heads * t * t), *dqkv = zeros(nq);
        float *ws = vec(prg_attention_workspace(b, c, t, heads));
        prg_attention_forward(a, wsave, ref_att_qkv, b, c, t, heads, ws);
        cmp_torch("attention a", a, ref_att_a, na);
        prg_attention_backward(dqkv, ref_att_da, ref_att_qkv, wsave, b, c, t, heads, ws);
        cmp_torch("attention dqkv", dqkv, ref_att_dqkv, nq);
        free(a); free(wsave); free(dqkv); free(ws);
    }
    { /* upsample, avgpool */
        const int n = REF_UP_N, h = REF_UP_H, w = REF_UP_W, f = REF_POOL_F;
        float *y = vec((size_t)n * 4 * h * w), *dx = zeros((size_t)n * h * w);
        float *py = vec((size_t)n * 4 * h * w / ((size_t)f * f)), *pdx = zeros((size_t)n * 4 * h * w);
        prg_upsample2x_forward(y, ref_up_x, n, h, w);
        cmp_torch("upsample y", y, ref_up_y, (size_t)n * 4 * h * w);
        prg_upsample2x_backward(dx, ref_up_dy, n, h, w);
        cmp_torch("upsample dx", dx, ref_up_dx, (size_t)n * h * w);
        /* pooling of the upsampled planes [n][2h][2w] by f */
        prg_avgpool_forward(py, ref_up_y, n, 2 * h, 2 * w, f);
        cmp_torch("avgpool y", py, ref_pool_y, (size_t)n * 4 * h * w / ((size_t)f * f));
        prg_avgpool_backward(pdx, ref_pool_dy, n, 2 * h, 2 * w, f);
        cmp_torch("avgpool dx", pdx, ref_pool_dx, (size_t)n * 4 * h * w);
        free(y); free(dx); free(py); free(pdx);
    }
    { /* timestep embedding */
        float *e = vec((size_t)REF_EMB_B * REF_EMB_DIM);
        prg_timestep_embedding(e, ref_emb_t, REF_EMB_B, REF_EMB_DIM, 10000.0f);
        cmp_torch("timestep embedding", e, ref_emb, (size_t)REF_EMB_B * REF_EMB_DIM);
        prg_timestep_embedding(e, ref_emb_t, REF_EMB_B, REF_EMB_DIM_ODD, 10000.0f);
        cmp_torch("timestep embedding (odd dim)", e, ref_emb_odd,
                  (size_t)REF_EMB_B * REF_EMB_DIM_ODD);
        free(e);
    }
    { /* label-smoothing cross-entropy */
        const int n = REF_CE_N, k = REF_CE_K;
        float *d = vec((size_t)n * k), loss;
        loss = prg_cross_entropy_forward_backward(d, ref_ce_logits, ref_ce_labels, n, k, 0.1f);
        cmp_torch("cross_entropy loss", &loss, &ref_ce_loss, 1);
        cmp_torch("cross_entropy dlogits", d, ref_ce_dlogits, (size_t)n * k);
        free(d);
    }
    { /* flow-matching loss */
        const int b = REF_FL_B, c = REF_FL_C, hw = REF_FL_HW;
        size_t n = (size_t)b * c * hw;
        float *d = vec(n), loss;
        loss = prg_flow_loss_forward_backward(d, ref_fl_v, ref_fl_target, b, c, hw);
        cmp_torch("flow loss", &loss, &ref_fl_loss, 1);
        cmp_torch("flow loss dv", d, ref_fl_dv, n);
        free(d);
    }
}

/* SiLU and softmax at the ends of exp's range, NaN included: the vector
   paths clamp their argument, which must not show in the results. */
static void test_extremes(void) {
    static const float xs[] = {-1000.0f, -104.5f, -100.0f, -88.5f, -87.2f, -30.0f, -1e-30f, 0.0f,
                               3e-8f, 15.0f, 87.5f, 88.9f, 95.0f, 1000.0f, 1e30f, -1e30f};
    const int n = (int)(sizeof xs / sizeof xs[0]);
    float y[16], yr[16], dx[16], dxr[16], ones[16], q[3 * 2 * 4], a[2 * 4], w[16];
    int i, bad = 0;
    for (i = 0; i < n; i++) {
        ones[i] = 1.0f;
        dx[i] = dxr[i] = 0.0f;
    }
    prg_silu_forward(y, xs, (size_t)n);
    prg_silu_forward_ref(yr, xs, (size_t)n);
    prg_silu_backward(dx, ones, xs, (size_t)n);
    prg_silu_backward_ref(dxr, ones, xs, (size_t)n);
    for (i = 0; i < n; i++) /* 4 eps relative, or tiny absolute where silu underflows */
        if (!(fabs(y[i] - yr[i]) <= 4 * FLT_EPSILON * fabs(yr[i]) + 1e-30) ||
            !(fabs(dx[i] - dxr[i]) <= 4 * FLT_EPSILON * fabs(dxr[i]) + 1e-30)) {
            printf("  silu(%g) = %g (ref %g), silu'= %g (ref %g)\n", xs[i], y[i], yr[i], dx[i], dxr[i]);
            bad = 1;
        }
    CHECK(!bad, "[%s] silu at extreme arguments", kern);
    y[0] = NAN;
    prg_silu_forward(y + 1, y, 1);
    CHECK(y[1] != y[1], "[%s] silu(NaN) is not NaN: %g", kern, y[1]);
    /* one head, d = 2, T = 4, with scores far apart: softmax = one-hot */
    for (i = 0; i < 24; i++) q[i] = 0.0f;
    q[0] = 1.0f;                       /* q[0][0] */
    q[2 * 4 + 1] = 300.0f;             /* k[0][1]: key 1 wins for query 0 by 300/sqrt(2) */
    for (i = 0; i < 4; i++) q[4 * 4 + i] = (float)(i + 1); /* v[0][:] = 1 2 3 4 */
    prg_attention_forward(a, w, q, 1, 2, 4, 1, NULL);
    CHECK(w[1] == 1.0f && w[0] == 0.0f && w[2] == 0.0f && w[3] == 0.0f && a[0] == 2.0f,
          "[%s] attention with a dominant key: w = %g %g %g %g, a = %g", kern, w[0], w[1], w[2],
          w[3], a[0]);
    CHECK(fabs(w[4] - 0.25) <= FLT_EPSILON, "[%s] attention with equal scores: w = %g", kern, w[4]);
}

/* The U-Net's fused GroupNorm -> scale-shift -> SiLU pass gives the bits of
   the three layers one after the other, with and without the scale-shift. */
static void test_gn_act_fused(void) {
    const int b = 3, c = 64, hw = 77, g = 32;
    size_t n = (size_t)b * c * hw;
    float *x = rnd(n, -2.0f, 2.0f), *gm = rnd((size_t)c, -1.0f, 1.0f), *bt = rnd((size_t)c, -1.0f, 1.0f);
    float *ss = rnd((size_t)b * 2 * c, -0.5f, 0.5f);
    float *y1 = (float *)malloc(n * sizeof(float)), *s1 = (float *)malloc(n * sizeof(float));
    float *a1 = (float *)malloc(n * sizeof(float)), *y2 = (float *)malloc(n * sizeof(float));
    float *s2 = (float *)malloc(n * sizeof(float)), *a2 = (float *)malloc(n * sizeof(float));
    float m1[3 * 32], r1[3 * 32], m2[3 * 32], r2[3 * 32];
    int with_ss;
    for (with_ss = 0; with_ss < 2; with_ss++) {
        prg_groupnorm_forward(y1, m1, r1, x, gm, bt, b, c, hw, g, 1e-5f);
        if (with_ss) prg_scale_shift_forward(s1, y1, ss, b, c, hw);
        prg_silu_forward(a1, with_ss ? s1 : y1, n);
        prg__groupnorm_act_forward(y2, with_ss ? s2 : NULL, a2, m2, r2, 0, x, gm, bt, with_ss ? ss : NULL, b, c, hw,
                                   g, 1e-5f);
        CHECK(memcmp(y1, y2, n * sizeof(float)) == 0 && memcmp(a1, a2, n * sizeof(float)) == 0 &&
                  memcmp(m1, m2, sizeof m1) == 0 && memcmp(r1, r2, sizeof r1) == 0 &&
                  (!with_ss || memcmp(s1, s2, n * sizeof(float)) == 0),
              "[%s] fused GroupNorm%s + SiLU differs from the layers in turn", kern,
              with_ss ? " + scale-shift" : "");
        /* the statistics given (a recomputation) read, not taken: the same outputs */
        memset(y2, 0, n * sizeof(float));
        memset(a2, 0, n * sizeof(float));
        memset(s2, 0, n * sizeof(float));
        memcpy(m2, m1, sizeof m1);
        memcpy(r2, r1, sizeof r1);
        prg__groupnorm_act_forward(y2, with_ss ? s2 : NULL, a2, m2, r2, 1, x, gm, bt, with_ss ? ss : NULL, b, c, hw,
                                   g, 1e-5f);
        CHECK(memcmp(y1, y2, n * sizeof(float)) == 0 && memcmp(a1, a2, n * sizeof(float)) == 0 &&
                  (!with_ss || memcmp(s1, s2, n * sizeof(float)) == 0),
              "[%s] GroupNorm%s + SiLU with the statistics given differs", kern, with_ss ? " + scale-shift" : "");
        /* given statistics are what is used: other ones give other outputs */
        r2[5] *= 2.0f;
        prg__groupnorm_act_forward(y2, NULL, a2, m2, r2, 1, x, gm, bt, NULL, b, c, hw, g, 1e-5f);
        CHECK(memcmp(y1, y2, n * sizeof(float)) != 0, "[%s] GroupNorm with given statistics ignored them", kern);
    }
    free(x); free(gm); free(bt); free(ss); free(y1); free(s1); free(a1); free(y2); free(s2); free(a2);
}

/* GroupNorm's backward with SiLU's backward before it (t = SiLU'(sx) sdy),
   in one pass, against the two layers in turn: the same bits for dx (= and
   +=), dgamma, dbeta and t; and with every shared buffer busy (the sums for
   dgamma/dbeta taken again instead of kept) the same bits again. */
static void test_gn_bwd_fused(void) {
    static const int shapes[][4] = {{3, 64, 77, 32}, {2, 12, 5, 3}, {5, 8, 1, 1}, {1, 6, 1030, 2}};
    int si;
    for (si = 0; si < 4; si++) {
        int b = shapes[si][0], c = shapes[si][1], hw = shapes[si][2], g = shapes[si][3], set, busy, i;
        size_t n = (size_t)b * c * hw, nb = sizeof prg__gemm_bufs / sizeof prg__gemm_bufs[0];
        float *x = rnd(n, -2.0f, 2.0f), *gm = rnd((size_t)c, -1.0f, 1.0f), *bt = rnd((size_t)c, -1.0f, 1.0f);
        float *sx = rnd(n, -3.0f, 3.0f), *sdy = rnd(n, -1.0f, 1.0f), *dx0 = rnd(n, -1.0f, 1.0f);
        float *y = (float *)malloc(n * sizeof(float)), *t1 = (float *)malloc(n * sizeof(float));
        float *t2 = (float *)malloc(n * sizeof(float)), *dx1 = (float *)malloc(n * sizeof(float));
        float *dx2 = (float *)malloc(n * sizeof(float)), *mean = (float *)malloc((size_t)b * g * sizeof(float));
        float *rstd = (float *)malloc((size_t)b * g * sizeof(float));
        float *dg1 = (float *)calloc((size_t)c, sizeof(float)), *db1 = (float *)calloc((size_t)c, sizeof(float));
        float *dg2 = (float *)calloc((size_t)c, sizeof(float)), *db2 = (float *)calloc((size_t)c, sizeof(float));
        prg_groupnorm_forward(y, mean, rstd, x, gm, bt, b, c, hw, g, 1e-5f);
        for (set = 0; set < 2; set++)
            for (busy = 0; busy < 2; busy++) {
                int saved[sizeof prg__gemm_bufs / sizeof prg__gemm_bufs[0]];
                memcpy(dx1, dx0, n * sizeof(float));
                memcpy(dx2, dx0, n * sizeof(float));
                memset(dg1, 0, (size_t)c * sizeof(float)); memset(db1, 0, (size_t)c * sizeof(float));
                memset(dg2, 0, (size_t)c * sizeof(float)); memset(db2, 0, (size_t)c * sizeof(float));
                memset(t1, 0, n * sizeof(float));
                prg_silu_backward(t1, sdy, sx, n);
                if (set) memset(dx1, 0, n * sizeof(float));
                prg_groupnorm_backward(dx1, dg1, db1, t1, x, mean, rstd, gm, b, c, hw, g);
                for (i = 0; busy && i < (int)nb; i++) {
                    saved[i] = prg__gemm_bufs[i].busy;
                    prg__gemm_bufs[i].busy = 1;
                }
                prg__groupnorm_backward_x(dx2, dg2, db2, NULL, x, mean, rstd, gm, b, c, hw, g, set, t2, sdy, sx);
                for (i = 0; busy && i < (int)nb; i++) prg__gemm_bufs[i].busy = saved[i];
                CHECK(same_bits(t1, t2, n) && same_bits(dx1, dx2, n) && same_bits(dg1, dg2, (size_t)c) &&
                          same_bits(db1, db2, (size_t)c),
                      "[%s] GroupNorm backward after SiLU's in one pass differs (%dx%dx%d, %d groups, %s%s)", kern, b, c,
                      hw, g, set ? "=" : "+=", busy ? ", no buffer" : "");
            }
        free(x); free(gm); free(bt); free(sx); free(sdy); free(dx0); free(y); free(t1); free(t2); free(dx1);
        free(dx2); free(mean); free(rstd); free(dg1); free(db1); free(dg2); free(db2);
    }
}

/* ======================================================================
   exp's scalar twin (prg__exp_poly_range) against the vector kernels: the
   same bits as prg__exp16 (flush = 0) and prg__exp8 (flush = 1) on a fine
   grid over [-110, 95], every float around the clamp and underflow edges,
   the special values and random floats; the scalar SiLU and softmax
   against the AVX-512 table; and the polynomial's error against double
   exp. */
static uint32_t float_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}
static float bits_float(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
/* the distance in floats between a and b (0 for +0 and -0) */
static int64_t ulps_apart(float a, float b) {
    uint32_t ua = float_bits(a), ub = float_bits(b);
    int64_t ia = ua >> 31 ? -(int64_t)(ua & 0x7FFFFFFFu) : (int64_t)ua;
    int64_t ib = ub >> 31 ? -(int64_t)(ub & 0x7FFFFFFFu) : (int64_t)ub;
    return ia > ib ? ia - ib : ib - ia;
}

#ifdef PRG__X86
/* y = prg__exp16(x) (prg__exp8(x)) over an array, the tail masked (padded) */
__attribute__((target("avx512f")))
static void exp16_array(float *y, const float *x, size_t n) {
    size_t i;
    for (i = 0; i < n; i += 16) {
        __mmask16 m = prg__mask16(n - i);
        _mm512_mask_storeu_ps(y + i, m, prg__exp16(_mm512_maskz_loadu_ps(m, x + i)));
    }
}
__attribute__((target("avx2,fma")))
static void exp8_array(float *y, const float *x, size_t n) {
    float t[8];
    size_t i, j;
    for (i = 0; i < n; i += 8) {
        for (j = 0; j < 8; j++) t[j] = i + j < n ? x[i + j] : 0.0f;
        _mm256_storeu_ps(t, prg__exp8(_mm256_loadu_ps(t)));
        for (j = 0; j < 8 && i + j < n; j++) y[i + j] = t[j];
    }
}

/* the number of elements of a and b that differ in their bits; prints the first few */
static size_t count_other_bits(const char *what, const float *x, const float *a, const float *b, size_t n) {
    size_t i, bad = 0;
    for (i = 0; i < n; i++)
        if (float_bits(a[i]) != float_bits(b[i]) && bad++ < 5)
            printf("  %s(%.9g = 0x%08x): 0x%08x, scalar twin 0x%08x\n", what, x[i], (unsigned)float_bits(x[i]),
                   (unsigned)float_bits(a[i]), (unsigned)float_bits(b[i]));
    return bad;
}
#endif

/* The inputs of the sweep (count in *n) */
static float *exp_sweep_inputs(prg_rng *r, size_t *n) {
    static const float edges[] = {-110.0f, -104.0f, -103.972f, -103.279f, -100.0f, -89.0f, -87.3365f,
                                  -87.0f, -1.0f, 0.0f, 1.0f, 87.0f, 88.0f, 88.7228f, 89.0f, 95.0f};
    const size_t grid = (size_t)205 * 4096, around = 2048, nrand = (size_t)1 << 20;
    const size_t cap = grid + 1 + 16 + sizeof edges / sizeof edges[0] * (2 * around + 1) + 260 * 17 + 2 * nrand;
    float *x = vec(cap);
    size_t m = 0, i, e;
    int h;
    for (i = 0; i <= grid; i++) x[m++] = (float)(-110.0 + (double)i / 4096.0); /* exact: a step of 2^-12 */
    x[m++] = NAN;
    x[m++] = -NAN;
    x[m++] = HUGE_VALF;
    x[m++] = -HUGE_VALF;
    x[m++] = 0.0f;
    x[m++] = -0.0f;
    x[m++] = FLT_MIN;
    x[m++] = -FLT_MIN;
    x[m++] = bits_float(1);          /* the smallest subnormal */
    x[m++] = bits_float(0x80000001u);
    x[m++] = FLT_MAX;
    x[m++] = -FLT_MAX;
    x[m++] = FLT_EPSILON;
    x[m++] = -FLT_EPSILON;
    x[m++] = bits_float(0x7F800001u); /* a signalling NaN */
    x[m++] = bits_float(0xFFC00001u);
    for (e = 0; e < sizeof edges / sizeof edges[0]; e++) { /* every float within 2048 of each edge */
        float v = edges[e];
        for (i = 0; i < around; i++) v = nextafterf(v, -HUGE_VALF);
        for (i = 0; i <= 2 * around; i++, v = nextafterf(v, HUGE_VALF)) x[m++] = v;
    }
    for (h = -160; h < 100; h++) { /* the 17 floats nearest (h + 1/2) / log2 e: v log2 e a tie for some */
        float v = (float)((h + 0.5) / 1.4426950408889634);
        for (i = 0; i < 8; i++) v = nextafterf(v, -HUGE_VALF);
        for (i = 0; i < 17; i++, v = nextafterf(v, HUGE_VALF)) x[m++] = v;
    }
    for (i = 0; i < nrand; i++) x[m++] = bits_float((uint32_t)(prg_rng_u64(r) >> 32)); /* any float */
    for (i = 0; i < nrand; i++) x[m++] = -110.0f + 205.0f * prg_rng_uniform(r);
    *n = m;
    return x;
}

static void test_exp_twin(void) {
    prg_rng r;
    size_t n, i, wrong = 0;
    float *x, *ys, *yv;
    double max_rel = 0.0, max_ulp = 0.0, max_sub = 0.0, at_rel = 0.0;
    prg_rng_seed(&r, 20260418, 7);
    x = exp_sweep_inputs(&r, &n);
    ys = vec(n);
    yv = vec(n);
    for (i = 0; i < n; i++) ys[i] = prg__exp_poly(x[i]);
    /* (c) the error against double exp: relative where the result is a
       normal float, in units of the smallest subnormal below */
    for (i = 0; i < n; i++) {
        double e = exp((double)x[i]), d = fabs((double)ys[i] - e);
        if (x[i] != x[i]) {
            wrong += ys[i] == ys[i]; /* not NaN */
        } else if (e >= FLT_MIN && e <= FLT_MAX) {
            int ex;
            frexp(e, &ex);
            if (d / e > max_rel) {
                max_rel = d / e;
                at_rel = x[i];
            }
            if (ldexp(d, 24 - ex) > max_ulp) max_ulp = ldexp(d, 24 - ex); /* the float ulp at e: 2^(ex-24) */
        } else if (e < FLT_MIN) {
            if (ldexp(d, 149) > max_sub) max_sub = ldexp(d, 149);
        } else {
            wrong += ys[i] != HUGE_VALF;
        }
    }
    CHECK(wrong == 0, "prg__exp_poly: %zu inputs not NaN for NaN or not inf beyond FLT_MAX", wrong);
    printf("  exp polynomial against double exp: max relative error %.3g (at %.9g, %.2f ulp) on the normal range, "
           "%.2f units of 2^-149 below it\n",
           max_rel, at_rel, max_ulp, max_sub);
    /* over every float with a normal result: 8.5e-8 (1.01 ulp); below
       that, 0.75 x 2^-149 (the rounding to a subnormal and a little) */
    CHECK(max_rel < FLT_EPSILON, "exp polynomial: relative error %.3g on the normal range", max_rel);
    CHECK(max_sub <= 1.0, "exp polynomial: error %.3g x 2^-149 in the subnormal range", max_sub);
    CHECK(prg__exp_poly(-HUGE_VALF) == 0.0f && prg__exp_poly(HUGE_VALF) == HUGE_VALF &&
              prg__exp_poly(0.0f) == 1.0f && prg__exp_poly(-0.0f) == 1.0f,
          "prg__exp_poly: exp(-inf) %g, exp(inf) %g, exp(0) %g, exp(-0) %g", prg__exp_poly(-HUGE_VALF),
          prg__exp_poly(HUGE_VALF), prg__exp_poly(0.0f), prg__exp_poly(-0.0f));
#ifdef PRG__X86
    /* (a) the same bits as the vector kernels on every input */
    if (__builtin_cpu_supports("avx512f")) {
        size_t bad;
        exp16_array(yv, x, n);
        bad = count_other_bits("exp16", x, yv, ys, n);
        CHECK(bad == 0, "prg__exp_poly: %zu of %zu inputs give other bits than prg__exp16", bad, n);
    } else {
        printf("  (no AVX-512 here: prg__exp_poly not compared with prg__exp16)\n");
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        size_t bad;
        for (i = 0; i < n; i++) ys[i] = prg__exp_poly_range(x[i], 1);
        exp8_array(yv, x, n);
        bad = count_other_bits("exp8", x, yv, ys, n);
        CHECK(bad == 0, "prg__exp_poly_range(flush): %zu of %zu inputs give other bits than prg__exp8", bad, n);
    } else {
        printf("  (no AVX2 here: prg__exp_poly_range(flush) not compared with prg__exp8)\n");
    }
#else
    printf("  (no x86 SIMD in this build: the exp twins not compared with the vector kernels)\n");
#endif
    free(x);
    free(ys);
    free(yv);
}

/* (b) the scalar table's SiLU forward, backward (= and +=) and softmax
   against the AVX-512 table's on random rows of 1..100, extreme and
   special arguments mixed in; SiLU against the AVX2 table's too where
   exp's argument stays in [-87, 88], where prg__exp8 gives the same bits */
static void test_exp_kernels(void) {
    const float special[] = {-1000.0f, -104.5f, -103.9f, -100.0f, -95.0f, -88.5f, -87.2f, 0.0f, -0.0f,
                             87.5f, 88.9f, 95.0f, 110.0f, 1e30f, -1e30f, HUGE_VALF, -HUGE_VALF, NAN};
    const prg__cpu *sc = &prg__cpus[PRG__NCPUS - 1], *av = NULL, *a2 = NULL;
    prg_rng r;
    float x[100], dy[100], y1[100], y2[100], d1[100], d2[100], s1[100], s2[100];
    int n, set, rep, bad_fwd = 0, bad_bwd = 0, bad_sm = 0, exact_sm = 0, rows_sm = 0;
    int64_t worst = 0;
    for (n = 0; n < PRG__NCPUS; n++) {
        if (strcmp(prg__cpus[n].name, "avx512") == 0 && prg__cpu_has(&prg__cpus[n])) av = &prg__cpus[n];
        if (strcmp(prg__cpus[n].name, "avx2") == 0 && prg__cpu_has(&prg__cpus[n])) a2 = &prg__cpus[n];
    }
    if (!av) printf("  (no AVX-512 here: the scalar SiLU and softmax not compared with its kernels)\n");
    if (!a2) printf("  (no AVX2 here: the scalar SiLU not compared with its kernels)\n");
    prg_rng_seed(&r, 20260418, 8);
    for (rep = 0; rep < 3; rep++)
        for (n = 1; n <= 100; n++) {
            const float spread = rep == 0 ? 4.0f : rep == 1 ? 20.0f : 120.0f;
            int i, j;
            for (i = 0; i < n; i++) {
                x[i] = spread * (2.0f * prg_rng_uniform(&r) - 1.0f);
                dy[i] = 2.0f * prg_rng_uniform(&r) - 1.0f;
                if (rep == 2 && prg_rng_below(&r, 4) == 0)
                    x[i] = special[prg_rng_below(&r, (uint32_t)(sizeof special / sizeof special[0]))];
            }
            for (j = 0; j < 2; j++) { /* AVX2 on the first two spreads only */
                const prg__cpu *v = j == 0 ? av : rep < 2 ? a2 : NULL;
                if (!v) continue;
                v->vec.silu_fwd(y1, x, (size_t)n);
                sc->vec.silu_fwd(y2, x, (size_t)n);
                if (!same_bits(y1, y2, (size_t)n) && bad_fwd++ < 3)
                    printf("  [%s] silu forward, n = %d: other bits\n", v->name, n);
                for (set = 0; set < 2; set++) {
                    for (i = 0; i < n; i++) d1[i] = d2[i] = 0.5f - prg_rng_uniform(&r);
                    v->vec.silu_bwd(d1, dy, x, (size_t)n, set);
                    sc->vec.silu_bwd(d2, dy, x, (size_t)n, set);
                    if (!same_bits(d1, d2, (size_t)n) && bad_bwd++ < 3)
                        printf("  [%s] silu backward, n = %d, set %d: other bits\n", v->name, n, set);
                }
            }
            if (!av) continue;
            /* softmax on finite rows: the AVX-512 kernel sums the exps in 16
               float lanes and then across them in a tree, the scalar one in
               double in row order, so 1 / sum and with it every output may
               differ in its last bits; the exps themselves are the same */
            for (i = 0; i < n; i++) s1[i] = s2[i] = x[i] != x[i] || fabs(x[i]) > 1e3 ? spread : x[i];
            av->vec.softmax(s1, (size_t)n);
            sc->vec.softmax(s2, (size_t)n);
            rows_sm++;
            exact_sm += same_bits(s1, s2, (size_t)n);
            for (i = 0; i < n; i++) {
                int64_t u = ulps_apart(s1[i], s2[i]);
                if (u > worst) worst = u;
                if (u > 4) bad_sm++;
            }
        }
    if (av)
        printf("  scalar softmax against AVX-512: %d of %d rows the same bits, at most %lld ulp apart\n", exact_sm,
               rows_sm, (long long)worst);
    CHECK(bad_fwd == 0, "scalar SiLU forward: %d rows give other bits than a vector kernel", bad_fwd);
    CHECK(bad_bwd == 0, "scalar SiLU backward: %d rows give other bits than a vector kernel", bad_bwd);
    CHECK(bad_sm == 0, "scalar softmax: %d outputs more than 4 ulp from the AVX-512 kernel", bad_sm);
}

int main(void) {
    static const char *paths[] = {"avx512", "avx2", "neon", "scalar"};
    int i;
    prg_rng_seed(&rng, 20261126, 0);
    prg_set_num_threads(2);
    test_exp_twin();
    test_exp_kernels();
    for (i = 0; i < 4; i++) { /* every SIMD path this CPU can run */
        if (prg_gemm_set_kernel(paths[i]) != PRG_OK) continue;
        kern = paths[i];
        test_vs_ref();
        test_fd();
        test_torch();
        test_extremes();
        test_gn_act_fused();
        test_gn_bwd_fused();
        test_wino4();
        test_twins();
        test_plans();
    }
    prg_gemm_set_kernel("auto");
    kern = "auto";
    test_threads();
    test_nested_conv();
    return prg_test_finish("test_layers");
}
