/* Times the hot layers of the U-Net at U-Net sizes: conv2d forward and
   backward (dx + dW + db), attention, GroupNorm, SiLU.  Prints one line per
   case: milliseconds (best of a few runs) and GFLOP/s for the convolutions.
   `python3 tools/ref_layers.py --bench` times the same cases in PyTorch.

       build/bench_layers [threads]      (default: all online CPUs)
       build/bench_layers 1 conv         (only the convolutions)
       build/bench_layers 1 tiny         (tiny32's 3x3 convolutions at batch 8) */
#define PRG_IMPLEMENTATION
#include "prg.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Wall time; with one thread the process CPU time instead, which is
   steadier on a shared machine. */
static int cpu_clock = 0;
static double now(void) {
    struct timespec ts;
    clock_gettime(cpu_clock ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static float *buf(size_t n, prg_rng *r) {
    float *p = (float *)prg_alloc((n ? n : 1) * sizeof(float));
    size_t i;
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (i = 0; i < n; i++) p[i] = prg_rng_uniform(r) - 0.5f;
    return p;
}

#define REPS 5
#define TIME_BEST(best, stmt)                                                    \
    do {                                                                         \
        int rep_;                                                                \
        best = 1e30;                                                             \
        for (rep_ = 0; rep_ < REPS; rep_++) {                                    \
            double t0_ = now();                                                  \
            stmt;                                                                \
            if (now() - t0_ < best) best = now() - t0_;                          \
        }                                                                        \
    } while (0)

static void bench_conv(int b, int ci, int h, int w, int co, int k, int s, int p, prg_rng *r) {
    int ho = (h + 2 * p - k) / s + 1, wo = (w + 2 * p - k) / s + 1;
    size_t nx = (size_t)b * ci * h * w, ny = (size_t)b * co * ho * wo;
    size_t nw = (size_t)co * ci * k * k, nws = prg_conv2d_workspace(b, ci, h, w, co, k, s, p);
    float *x = buf(nx, r), *wt = buf(nw, r), *bias = buf((size_t)co, r), *y = buf(ny, r);
    float *dy = buf(ny, r), *dx = buf(nx, r), *dw = buf(nw, r), *db = buf((size_t)co, r);
    float *ws = buf(nws, r);
    double flop = 2.0 * ny * ci * k * k, tf, tb;
    TIME_BEST(tf, prg_conv2d_forward(y, x, wt, bias, b, ci, h, w, co, k, s, p, ws));
    TIME_BEST(tb, prg_conv2d_backward(dx, dw, db, dy, x, wt, b, ci, h, w, co, k, s, p, ws));
    printf("conv2d B=%-3d %3d->%-3d %2dx%-2d k%d s%d  fwd %8.2f ms %6.1f GFLOP/s   "
           "bwd %8.2f ms %6.1f GFLOP/s  (ws %.1f MB)\n",
           b, ci, co, h, w, k, s, 1e3 * tf, flop / tf * 1e-9, 1e3 * tb, 2 * flop / tb * 1e-9,
           nws * 4e-6);
    prg_free(x); prg_free(wt); prg_free(bias); prg_free(y); prg_free(dy); prg_free(dx);
    prg_free(dw); prg_free(db); prg_free(ws);
}

static void bench_attention(int b, int c, int t, int heads, prg_rng *r) {
    size_t nq = (size_t)b * 3 * c * t, na = (size_t)b * c * t;
    float *qkv = buf(nq, r), *a = buf(na, r), *wsave = buf((size_t)b * heads * t * t, r);
    float *da = buf(na, r), *dqkv = buf(nq, r);
    float *ws = buf(prg_attention_workspace(b, c, t, heads), r);
    double tf, tb;
    TIME_BEST(tf, prg_attention_forward(a, wsave, qkv, b, c, t, heads, ws));
    TIME_BEST(tb, prg_attention_backward(dqkv, da, qkv, wsave, b, c, t, heads, ws));
    printf("attention B=%d C=%d T=%d heads=%d      fwd %8.2f ms   bwd %8.2f ms\n", b, c, t, heads,
           1e3 * tf, 1e3 * tb);
    prg_free(qkv); prg_free(a); prg_free(wsave); prg_free(da); prg_free(dqkv); prg_free(ws);
}

static void bench_norm_silu(int b, int c, int hw, prg_rng *r) {
    size_t n = (size_t)b * c * hw;
    float *x = buf(n, r), *y = buf(n, r), *dy = buf(n, r), *dx = buf(n, r);
    float *g = buf((size_t)c, r), *be = buf((size_t)c, r), *dg = buf((size_t)c, r);
    float *dbe = buf((size_t)c, r), *mean = buf((size_t)b * 32, r), *rstd = buf((size_t)b * 32, r);
    double t1, t2, t3, t4;
    TIME_BEST(t1, prg_groupnorm_forward(y, mean, rstd, x, g, be, b, c, hw, 32, 1e-5f));
    TIME_BEST(t2, prg_groupnorm_backward(dx, dg, dbe, dy, x, mean, rstd, g, b, c, hw, 32));
    TIME_BEST(t3, prg_silu_forward(y, x, n));
    TIME_BEST(t4, prg_silu_backward(dx, dy, x, n));
    printf("groupnorm B=%d C=%d HW=%d          fwd %8.2f ms   bwd %8.2f ms\n", b, c, hw, 1e3 * t1,
           1e3 * t2);
    printf("silu      n=%zu                  fwd %8.2f ms   bwd %8.2f ms\n", n, 1e3 * t3, 1e3 * t4);
    prg_free(x); prg_free(y); prg_free(dy); prg_free(dx); prg_free(g); prg_free(be);
    prg_free(dg); prg_free(dbe); prg_free(mean); prg_free(rstd);
}

int main(int argc, char **argv) {
    prg_rng r;
    prg_rng_seed(&r, 1, 0);
    prg_set_num_threads(argc > 1 ? atoi(argv[1]) : 0);
    cpu_clock = prg_get_num_threads() == 1;
    printf("prg.h layers, %d threads, gemm kernel %s, %s time\n", prg_get_num_threads(),
           prg_gemm_kernel_name(), cpu_clock ? "CPU" : "wall");
    if (argc > 2 && !strcmp(argv[2], "tiny")) {
        bench_conv(8, 32, 32, 32, 32, 3, 1, 1, &r);
        bench_conv(8, 64, 32, 32, 32, 3, 1, 1, &r);
        bench_conv(8, 64, 16, 16, 64, 3, 1, 1, &r);
        bench_conv(8, 128, 16, 16, 64, 3, 1, 1, &r);
        bench_conv(8, 64, 8, 8, 64, 3, 1, 1, &r);
        return 0;
    }
    bench_conv(8, 128, 32, 32, 128, 3, 1, 1, &r);
    bench_conv(8, 256, 16, 16, 256, 3, 1, 1, &r);
    bench_conv(8, 256, 8, 8, 256, 3, 1, 1, &r);
    bench_conv(8, 256, 4, 4, 256, 3, 1, 1, &r);
    bench_conv(8, 128, 32, 32, 128, 3, 2, 1, &r);
    bench_conv(8, 384, 32, 32, 256, 1, 1, 0, &r);
    bench_conv(8, 256, 16, 16, 768, 1, 1, 0, &r);
    if (argc > 2) return 0;
    bench_attention(8, 256, 256, 4, &r);
    bench_attention(8, 256, 64, 4, &r);
    bench_norm_silu(8, 128, 1024, &r);
    return 0;
}
