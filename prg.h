/* prg.h - Pretrained Reversible Generation in one C header.            v0.1.0

   Train a flow-matching U-Net generator on unlabeled images, run its ODE
   backwards (data -> noise) to turn every image into features, and fine-tune
   that reversed generator with a small head into a classifier.  Plain C99,
   libc + libm, optional pthreads; also compiles as C++11.  docs/METHOD.md
   describes the method as implemented here, README.md is the manual.

   USE
     In exactly one .c file of your program:

         #define PRG_IMPLEMENTATION
         #include "prg.h"

     Everywhere else just #include "prg.h".  Link with -lm (and -pthread
     unless PRG_NO_THREADS is defined).

   QUICK START (examples/quickstart.c; `make test` compiles and runs it): the
   pipeline on synthetic images, in a few seconds

         #define PRG_IMPLEMENTATION
         #include "prg.h"
         #include <stdio.h>
         #define TRY(call) \
             do { if ((call) != PRG_OK) { fprintf(stderr, "%s\n", prg_last_error()); return 1; } } while (0)
         enum { B = 16, C = 3, S = 16, D = C * S * S };   // batches of 16 images 3x16x16, 2 classes

         static void make_batch(float *x, int *y, prg_rng *rng) {   // class 1: the left half is bright
             for (int i = 0; i < B * D; i++) {
                 y[i / D] = i / D % 2;
                 x[i] = 0.5f * prg_rng_normal(rng) + ((i % S < S / 2) == y[i / D] ? 1.0f : -1.0f);
             }
         }

         int main(int argc, char **argv) {
             static float x[B * D], xt[B * D], target[B * D], t[B], v[B * D], z[B * D];
             float logits[B * 2], dl[B * 2], loss = 0;
             int y[B], step, right = 0;
             prg_rng rng; prg_unet_config cfg; prg_adam_config ac;
             prg_unet *net; prg_classifier *clf; prg_adam *opt;
             prg_rng_seed(&rng, 1, 0); make_batch(x, y, &rng);
             TRY(prg_unet_config_preset(&cfg, "tiny32"));    // 1. pretrain a small U-Net by flow matching
             cfg.image_size = S; cfg.model_channels = 16; cfg.groups = 8;
             TRY(prg_unet_create(&net, &cfg, 42));
             prg_adam_config_default(&ac);
             TRY(prg_adam_create(&opt, prg_unet_num_params(net), &ac));
             for (step = 0; step < 40; step++) {
                 prg_flow_icfm_pairs(xt, target, t, NULL, x, B, D, &rng);   // noise-data pairs, velocity
                 prg_unet_zero_grad(net);
                 TRY(prg_unet_forward(net, B, xt, t, v));
                 loss = prg_flow_loss_forward_backward(v, v, target, B, C, S * S);   // v becomes dloss/dv
                 TRY(prg_unet_backward(net, v, NULL));
                 TRY(prg_adam_step(opt, prg_unet_params(net), prg_unet_grads(net), 2e-3, NULL));
             }
             TRY(prg_encode(net, 4, 0, B, x, z));             // 2. features: data -> noise, 3 Euler steps
             printf("pretrained: flow loss %.3f; encoded x[0] = %.3f as z[0] = %.3f\n", loss, x[0], z[0]);
             TRY(prg_classifier_create(&clf, net, 2, 4, 0, 7));  // 3. fine-tune U-Net + head
             float *p[2]; const float *g[2]; size_t n[2], all;   // what it trains: U-Net + head
             int nb = prg_classifier_param_blocks(clf, p, g, n, &all);
             prg_adam_free(opt); ac.decoupled = 1; ac.weight_decay = 0.05;
             TRY(prg_adam_create(&opt, all, &ac));
             for (step = 0; step < 20; step++) {
                 make_batch(x, y, &rng);
                 prg_classifier_zero_grad(clf);
                 TRY(prg_classifier_forward(clf, B, x, logits));
                 loss = prg_cross_entropy_forward_backward(dl, logits, y, B, 2, 0.1f);  // label smoothing
                 TRY(prg_classifier_backward(clf, dl));       // exact gradient through the Euler steps
                 TRY(prg_adam_step_blocks(opt, nb, p, g, n, 1e-3, NULL));
             }
             make_batch(x, y, &rng);                          // 4. classify images it has not seen
             TRY(prg_classifier_forward(clf, B, x, logits));
             for (int b = 0; b < B; b++) right += (logits[2 * b + 1] > logits[2 * b]) == y[b];
             printf("fine-tuned: cross-entropy %.3f; %d of %d new images right\n", loss, right, B);
             TRY(prg_classifier_save(clf, argc > 1 ? argv[1] : "quickstart.safetensors"));   // 5. save
             prg_classifier_free(clf); prg_adam_free(opt);
             return 0;
         }

   CONFIGURATION (define before including, in the implementation file)
     PRG_NO_THREADS        build without pthreads; everything runs serially
     PRG_MAX_THREADS       upper bound on the pool size (default 256)
     PRG_NO_SIMD           build without intrinsics: only the portable scalar
                           kernels (the "scalar" CPU table of prg_gemm_set_kernel)
     PRG_WINO_KEEP_MB      memory a U-Net may spend keeping its transformed
                           convolution weights between the U-Net evaluations
                           of one encode, sampling or fine-tuning call
                           (default 256; 0 turns keeping off)
     PRG_MAX_T_SPAN        largest ODE grid a classifier file may ask for in its
                           metadata (prg.t_span; default 1000: one encode then
                           costs at most 999 U-Net evaluations and 1000 states
                           per image); prg_classifier_load refuses more
     PRG_MAX_CLASSES       most classes a file may imply: a dataset's largest
                           label + 1, a classifier file's prg.num_classes
                           (default 32768, the head then 25M floats at most
                           for RGB)
     PRG_MAX_FORWARD_MB    most memory one image's forward may take by the
                           config a file carries (prg.unet, whose image_size
                           and widths size the activations, and a classifier's
                           prg.t_span, its ODE states): activations, scratch
                           and layer workspace of a forward that keeps what
                           backward needs, in MiB; default 4096 (cifar32
                           takes 65 at 32x32 and 2807 at 128x128, imagenet64
                           207 at 64x64 and 5058 at 256x256).
                           prg_unet_load / prg_classifier_load with cfg NULL
                           refuse a file over it, naming the field
     PRG_IMAGE_MAX_PIXELS  largest image any reader accepts (default 2^26)
     PRG_MALLOC(n)         allocator; PRG_FREE(p) must be defined together
     PRG_ASSERT(x)         programmer-error check (default: assert from <assert.h>)
     PRG_THREAD_LOCAL      the thread-local storage class (default: C11
                           _Thread_local, C++11 thread_local, __thread for gcc/
                           clang in C99, __declspec(thread) for MSVC).  Where
                           the compiler has none (tcc, unknown compilers) it
                           is empty and PRG_HAS_TLS is 0: the library still
                           works with threads, but prg_last_error() is one
                           buffer for the whole process, so read it before
                           another thread can fail (or build PRG_NO_THREADS).
                           Defining it empty yourself: define PRG_HAS_TLS 0.

   ERRORS
     Run-time failures return a prg_result (PRG_OK == 0, failures < 0);
     prg_last_error() returns a message for the calling thread that says what
     was wrong.  The library never prints and never exits.

   ARGUMENTS
     Functions that return a prg_result return PRG_ERR_ARG (with a message
     naming the argument) for a NULL object, output or buffer and for sizes
     out of range, and nothing that depends on data (labels, counts, file
     contents) is ever an assert.  Functions without a result say what they
     do with bad arguments: the free functions accept NULL; prg_sgemm
     returns without touching C; prg_cross_entropy_forward_backward returns
     NaN with prg_last_error() set; prg_split_range gives an empty part; the
     prg_st_* accessors return 0 / NULL for a NULL handle.  The layer
     kernels (forward/backward pairs over float *) and the plain accessors
     of an object (prg_unet_params, prg_classifier_unet, prg_adam_num_params, ...)
     take their pointers as given, unchecked: they sit in inner loops.
     What the file readers check before they allocate: the io section.

   THREADS
     One persistent pool (workers sleep on a condition variable between jobs,
     after polling about 160 us for the next one).
     prg_set_num_threads(n) sets its size, 0 = all online CPUs; the
     environment variable PRG_NUM_THREADS sets the initial size.  Work is
     split so that results are bit-identical for any thread count.  A part
     of a job that no worker has started by the time the caller finishes its
     own is run by the caller, so a loaded machine (a worker not scheduled)
     slows a job down to one thread's speed, not below it.

   SIMD
     prg_sgemm picks its micro-kernel at run time on x86-64 (AVX-512, AVX2+FMA
     or portable C) from cpuid, so a plain `cc -O2` build uses AVX-512 where
     the CPU has it.  aarch64 uses NEON.  prg_gemm_set_kernel() forces one.

   SECTIONS (search for ">>name"; the declarations and the implementation
   follow the same order)
     base, pool: errors, RNG, memory, the thread pool.  gemm, wino, conv: the
     engine (matrix products, Winograd transforms, planned convolutions).
     layers, unet, flow, classifier, optim: the method (forward/backward
     layers, the U-Net, flow matching and the ODE solvers, the reverse-ODE
     encoder and classifier, Adam).  io, checkpoint, images, data: files,
     model files, pictures, datasets and batches.  simd (implementation
     only): every intrinsic, reached through one CPU table.

   LICENSE: MIT, see the end of this file.
*/
#ifndef PRG_H
#define PRG_H

#define PRG_VERSION_MAJOR 0
#define PRG_VERSION_MINOR 1
#define PRG_VERSION_PATCH 0
#define PRG_VERSION_STRING "0.1.0"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* >>base ================================================================ */

typedef enum prg_result {
    PRG_OK = 0,
    /* general */
    PRG_ERR_NOMEM = -1,       /* an allocation failed */
    PRG_ERR_ARG = -2,         /* an argument is out of range */
    PRG_ERR_UNSUPPORTED = -3, /* not available in this build or on this CPU */
    PRG_ERR_STATE = -4,       /* call out of order (e.g. backward before forward) */
    /* files */
    PRG_ERR_IO = -10,         /* open/read/write/rename failed */
    PRG_ERR_FORMAT = -11,     /* corrupt or truncated file, wrong magic */
    PRG_ERR_SHAPE = -12,      /* a tensor or dataset has the wrong shape */
    /* models and training */
    PRG_ERR_CONFIG = -20,     /* invalid model or training configuration */
    PRG_ERR_NUMERIC = -30     /* non-finite loss, gradient or input */
} prg_result;

const char *prg_result_str(prg_result r);
const char *prg_last_error(void); /* detail of the last failure, this thread */

/* Seedable RNG (xoshiro256**).  prg_rng_seed(r, seed, stream) gives
   independent streams for the same seed (one per thread, per purpose). */
typedef struct prg_rng { uint64_t s[4]; } prg_rng;
void     prg_rng_seed(prg_rng *r, uint64_t seed, uint64_t stream);
uint64_t prg_rng_u64(prg_rng *r);
float    prg_rng_uniform(prg_rng *r);            /* [0, 1) */
float    prg_rng_normal(prg_rng *r);             /* N(0, 1) */
uint32_t prg_rng_below(prg_rng *r, uint32_t n);  /* uniform integer in [0, n), n > 0 */

/* 64-byte aligned allocation through PRG_MALLOC; NULL on failure. */
void *prg_alloc(size_t bytes);
void  prg_free(void *p);

/* >>pool ================================================================ */

/* fn(ctx, ith, nth) is called once for each ith in [0, nth). */
typedef void (*prg_task_fn)(void *ctx, int ith, int nth);

void prg_set_num_threads(int n);   /* 0 = all online CPUs */
int  prg_get_num_threads(void);
/* Runs fn on every thread of the pool (the caller is thread 0) and returns
   when all are done.  Called from inside a task, or while another thread
   uses the pool, it runs fn(ctx, 0, 1) on the caller. */
void prg_parallel(prg_task_fn fn, void *ctx);
/* The part [lo, hi) of [0, n) that thread ith of nth owns; boundaries are
   multiples of align (except n itself).  nth < 1 or ith outside [0, nth):
   the empty part [0, 0); lo or hi NULL: nothing is written. */
void prg_split_range(size_t n, size_t align, int ith, int nth, size_t *lo, size_t *hi);

/* >>gemm ================================================================ */

/* C = alpha * op(A) * op(B) + beta * C, row-major, exactly
   cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, ...).
   op(A) is m x k, op(B) is k x n, C is m x n.  beta == 0 overwrites C
   without reading it.  Its packing buffers (one per thread of the pool,
   more while several threads call at once) are kept for the next call
   until prg_release_scratch (or the last U-Net's prg_unet_free) frees them:
   about 0.5 MiB each and, for large products with the AVX-512 kernel, up
   to two more parts of at most 64 MiB each: a packed copy of B (B not
   transposed, over 504 rows a thread) and a block of 504 rows of C (ldc a
   multiple of 1024, k > 256; convolutions too).  It returns void, so
   arguments it cannot run with (C NULL or ldc < n; with k > 0 and
   alpha != 0, A or B NULL or lda/ldb shorter than a row of op(A)/op(B))
   make it return without touching C; m <= 0 or n <= 0 does nothing. */
void prg_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha,
               const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);
/* The same product computed plainly with double accumulation (for tests). */
void prg_sgemm_ref(int trans_a, int trans_b, int m, int n, int k, float alpha,
                   const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);

/* Frees the packing buffers that prg_sgemm and the convolutions keep between
   calls (those no call is using right now).  prg_unet_free does it when it
   frees the last U-Net, so a program that has freed its nets holds no
   scratch; after prg_sgemm alone, call this.  The next call allocates them
   again. */
void prg_release_scratch(void);

/* Micro-kernel in use: "avx512", "avx2", "neon" or "scalar". */
const char *prg_gemm_kernel_name(void);
/* Forces a kernel by name ("auto" restores the run-time choice).  Returns
   PRG_ERR_UNSUPPORTED when this CPU or build lacks it. */
prg_result prg_gemm_set_kernel(const char *name);

/* >>wino ================================================================ */
/* Winograd F(2x2,3x3) and F(4x4,3x3) for 3x3 stride-1 pad-1 convolutions:
   the transforms and their products on the GEMM's micro-kernel.  No API of
   its own: the convolutions (prg_conv2d_*, the U-Net) take it where their
   plan says so. */

/* >>conv ================================================================ */
/* The convolution engine: a plan per convolution shape picks its algorithm
   once (1x1 GEMM, direct few-channel kernels, Winograd, implicit GEMM,
   stored column matrix) from the CPU table; the direct kernels and the
   implicit GEMM.  Its public face is prg_conv2d_* in >>layers; the design
   notes are at the top of the >>conv implementation. */

/* >>layers ============================================================== */
/* Forward/backward pairs over float * (NCHW, float32).

   forward(outputs..., inputs..., params..., sizes..., workspace);
   backward(d_inputs..., d_params..., d_outputs, saved/inputs..., params...,
   sizes..., workspace).  Backward ACCUMULATES (+=) into every d_ pointer and
   any d_ pointer may be NULL to skip that gradient.  The kernels run on the
   pool and give the same bits for any thread count.  Every kernel has a
   `_ref` twin with the same signature: plain serial loops with double
   accumulation, for tests.  Workspaces are caller-owned scratch of the size
   the matching *_workspace() function returns.  The only other memory is
   the GEMM's packing buffers (see prg_sgemm), which prg_sgemm and the
   convolutions (their Winograd tiles and transformed weights) take from a
   shared set that only grows: allocated on first use, then reused; if they
   cannot be had, the convolutions take a path that needs only the
   workspace. */

/* conv2d: y = conv(x, wt) + bias, square kernel k, stride s (1 or 2), zero
   padding p.  Ho = (H + 2p - k)/s + 1, Wo likewise.  ws: at least
   prg_conv2d_workspace(...) floats (0 for a 1x1 stride-1 unpadded conv, where
   ws may be NULL); the same workspace serves forward and backward. */
size_t prg_conv2d_workspace(int batch, int cin, int h, int w, int cout, int k, int stride, int pad);
void prg_conv2d_forward(float *y /* [B][Co][Ho][Wo] */, const float *x /* [B][Ci][H][W] */,
                        const float *wt /* [Co][Ci][k][k] */, const float *bias /* [Co] or NULL */,
                        int batch, int cin, int h, int w, int cout, int k, int stride, int pad,
                        float *ws);
void prg_conv2d_backward(float *dx /* [B][Ci][H][W] or NULL */,
                         float *dwt /* [Co][Ci][k][k] or NULL */, float *dbias /* [Co] or NULL */,
                         const float *dy /* [B][Co][Ho][Wo] */, const float *x /* [B][Ci][H][W] */,
                         const float *wt /* [Co][Ci][k][k] */, int batch, int cin, int h, int w,
                         int cout, int k, int stride, int pad, float *ws);
void prg_conv2d_forward_ref(float *y, const float *x, const float *wt, const float *bias,
                            int batch, int cin, int h, int w, int cout, int k, int stride, int pad,
                            float *ws);
void prg_conv2d_backward_ref(float *dx, float *dwt, float *dbias, const float *dy, const float *x,
                             const float *wt, int batch, int cin, int h, int w, int cout, int k,
                             int stride, int pad, float *ws);

/* linear (PyTorch layout): y[n][o] = sum_i x[n][i] wt[o][i] + bias[o].
   A 1x1 conv / conv1d with kernel 1 over [B][C][T] is prg_conv2d_* with
   k = 1, h = T, w = 1 (no workspace needed). */
void prg_linear_forward(float *y /* [N][O] */, const float *x /* [N][I] */,
                        const float *wt /* [O][I] */, const float *bias /* [O] or NULL */, int n,
                        int in, int out);
void prg_linear_backward(float *dx /* [N][I] */, float *dwt /* [O][I] */, float *dbias /* [O] */,
                         const float *dy /* [N][O] */, const float *x /* [N][I] */,
                         const float *wt /* [O][I] */, int n, int in, int out);
void prg_linear_forward_ref(float *y, const float *x, const float *wt, const float *bias, int n,
                            int in, int out);
void prg_linear_backward_ref(float *dx, float *dwt, float *dbias, const float *dy, const float *x,
                             const float *wt, int n, int in, int out);

/* GroupNorm over [B][C][HW] with G groups (C % G == 0), eps inside the
   square root; mean and rstd = 1/sqrt(var + eps) per (b, g) are saved for
   backward.  Biased variance, as torch. */
void prg_groupnorm_forward(float *y /* [B][C][HW] */, float *mean /* [B][G] */,
                           float *rstd /* [B][G] */, const float *x /* [B][C][HW] */,
                           const float *gamma /* [C] */, const float *beta /* [C] */, int batch,
                           int c, int hw, int groups, float eps);
void prg_groupnorm_backward(float *dx /* [B][C][HW] */, float *dgamma /* [C] */,
                            float *dbeta /* [C] */, const float *dy /* [B][C][HW] */,
                            const float *x /* [B][C][HW] */, const float *mean /* [B][G] */,
                            const float *rstd /* [B][G] */, const float *gamma /* [C] */,
                            int batch, int c, int hw, int groups);
void prg_groupnorm_forward_ref(float *y, float *mean, float *rstd, const float *x,
                               const float *gamma, const float *beta, int batch, int c, int hw,
                               int groups, float eps);
void prg_groupnorm_backward_ref(float *dx, float *dgamma, float *dbeta, const float *dy,
                                const float *x, const float *mean, const float *rstd,
                                const float *gamma, int batch, int c, int hw, int groups);

/* LayerNorm over the last dimension d of [N][D]. */
void prg_layernorm_forward(float *y /* [N][D] */, float *mean /* [N] */, float *rstd /* [N] */,
                           const float *x /* [N][D] */, const float *gamma /* [D] */,
                           const float *beta /* [D] */, int n, int d, float eps);
void prg_layernorm_backward(float *dx /* [N][D] */, float *dgamma /* [D] */, float *dbeta /* [D] */,
                            const float *dy /* [N][D] */, const float *x /* [N][D] */,
                            const float *mean /* [N] */, const float *rstd /* [N] */,
                            const float *gamma /* [D] */, int n, int d);
void prg_layernorm_forward_ref(float *y, float *mean, float *rstd, const float *x,
                               const float *gamma, const float *beta, int n, int d, float eps);
void prg_layernorm_backward_ref(float *dx, float *dgamma, float *dbeta, const float *dy,
                                const float *x, const float *mean, const float *rstd,
                                const float *gamma, int n, int d);

/* Elementwise: SiLU y = x sigmoid(x); tanh (backward takes the output y). */
void prg_silu_forward(float *y /* [n] */, const float *x /* [n] */, size_t n);
void prg_silu_backward(float *dx /* [n] */, const float *dy /* [n] */, const float *x /* [n] */,
                       size_t n);
void prg_tanh_forward(float *y /* [n] */, const float *x /* [n] */, size_t n);
void prg_tanh_backward(float *dx /* [n] */, const float *dy /* [n] */,
                       const float *y /* [n] tanh output */, size_t n);
void prg_silu_forward_ref(float *y, const float *x, size_t n);
void prg_silu_backward_ref(float *dx, const float *dy, const float *x, size_t n);
void prg_tanh_forward_ref(float *y, const float *x, size_t n);
void prg_tanh_backward_ref(float *dx, const float *dy, const float *y, size_t n);

/* Scale-shift conditioning of a ResBlock: y = x (1 + scale[b][c]) + shift[b][c]
   with ss = [B][2C], scale = ss[:, :C], shift = ss[:, C:] (torch.chunk order). */
void prg_scale_shift_forward(float *y /* [B][C][HW] */, const float *x /* [B][C][HW] */,
                             const float *ss /* [B][2C] */, int batch, int c, int hw);
void prg_scale_shift_backward(float *dx /* [B][C][HW] */, float *dss /* [B][2C] */,
                              const float *dy /* [B][C][HW] */, const float *x /* [B][C][HW] */,
                              const float *ss /* [B][2C] */, int batch, int c, int hw);
void prg_scale_shift_forward_ref(float *y, const float *x, const float *ss, int batch, int c,
                                 int hw);
void prg_scale_shift_backward_ref(float *dx, float *dss, const float *dy, const float *x,
                                  const float *ss, int batch, int c, int hw);

/* Legacy-order multi-head attention core (improved-diffusion
   QKVAttentionLegacy): qkv [B][3C][T], head h owns channels [h*3d, (h+1)*3d),
   rows q|k|v of d each, d = C/heads.  W = softmax over keys of
   (d^-1/4 q)^T (d^-1/4 k); a = v W^T, written head-major to [B][C][T].
   wsave [B][heads][T][T]: the softmax weights, written by forward, read by
   backward.  ws: prg_attention_workspace(...) floats (forward needs none:
   it may be NULL there). */
size_t prg_attention_workspace(int batch, int c, int t, int heads);
void prg_attention_forward(float *a /* [B][C][T] */, float *wsave /* [B][heads][T][T] */,
                           const float *qkv /* [B][3C][T] */, int batch, int c, int t, int heads,
                           float *ws);
void prg_attention_backward(float *dqkv /* [B][3C][T] */, const float *da /* [B][C][T] */,
                            const float *qkv /* [B][3C][T] */,
                            const float *wsave /* [B][heads][T][T] */, int batch, int c, int t,
                            int heads, float *ws);
void prg_attention_forward_ref(float *a, float *wsave, const float *qkv, int batch, int c, int t,
                               int heads, float *ws);
void prg_attention_backward_ref(float *dqkv, const float *da, const float *qkv,
                                const float *wsave, int batch, int c, int t, int heads,
                                float *ws);

/* Nearest-neighbour x2 upsampling and integer-factor average pooling (H and
   W divisible by f) over [N][H][W] planes (N = B*C). */
void prg_upsample2x_forward(float *y /* [N][2H][2W] */, const float *x /* [N][H][W] */, int n,
                            int h, int w);
void prg_upsample2x_backward(float *dx /* [N][H][W] */, const float *dy /* [N][2H][2W] */, int n,
                             int h, int w);
void prg_avgpool_forward(float *y /* [N][H/f][W/f] */, const float *x /* [N][H][W] */, int n,
                         int h, int w, int f);
void prg_avgpool_backward(float *dx /* [N][H][W] */, const float *dy /* [N][H/f][W/f] */, int n,
                          int h, int w, int f);
void prg_upsample2x_forward_ref(float *y, const float *x, int n, int h, int w);
void prg_upsample2x_backward_ref(float *dx, const float *dy, int n, int h, int w);
void prg_avgpool_forward_ref(float *y, const float *x, int n, int h, int w, int f);
void prg_avgpool_backward_ref(float *dx, const float *dy, int n, int h, int w, int f);

/* Channel concat: y[b] = [a[b]; c[b]]. */
void prg_concat_forward(float *y /* [B][C1+C2][HW] */, const float *a /* [B][C1][HW] */,
                        const float *c /* [B][C2][HW] */, int batch, int c1, int c2, int hw);
void prg_concat_backward(float *da /* [B][C1][HW] */, float *dc /* [B][C2][HW] */,
                         const float *dy /* [B][C1+C2][HW] */, int batch, int c1, int c2, int hw);
void prg_concat_forward_ref(float *y, const float *a, const float *c, int batch, int c1, int c2,
                            int hw);
void prg_concat_backward_ref(float *da, float *dc, const float *dy, int batch, int c1, int c2,
                             int hw);

/* Sinusoidal timestep embedding of raw t: half = dim/2,
   freq_i = exp(-ln(max_period) i / half), emb = [cos(t freq), sin(t freq)]
   (cos first; a zero column last when dim is odd).  No backward. */
void prg_timestep_embedding(float *emb /* [B][dim] */, const float *t /* [B] */, int batch,
                            int dim, float max_period);

/* Label-smoothing cross-entropy (timm LabelSmoothingCrossEntropy): mean over
   the batch of (1-s)(-log p_y) + s mean_k(-log p_k).  Returns the loss;
   dlogits (may be NULL) is SET (not accumulated) to d loss / d logits.
   A label outside [0, k), NULL logits/labels or n, k < 1: returns NaN with
   prg_last_error() set, dlogits untouched. */
float prg_cross_entropy_forward_backward(float *dlogits /* [N][K] */,
                                         const float *logits /* [N][K] */,
                                         const int *labels /* [N] */, int n, int k,
                                         float smoothing);

/* Flow-matching loss with the reference's reduction: 0.5 * sum over channels
   of (v - target)^2, mean over (B, HW).  Returns the loss; dv (may be NULL)
   is SET to d loss / d v. */
float prg_flow_loss_forward_backward(float *dv /* [B][C][HW] */, const float *v /* [B][C][HW] */,
                                     const float *target /* [B][C][HW] */, int batch, int c,
                                     int hw);


/* >>unet ================================================================ */
/* The reference U-Net: config, presets, parameters, forward, backward. */

#define PRG_UNET_MAX_LEVELS 8

/* The U-Net of docs/METHOD.md B (improved-diffusion UNetModel as GenerativeRL's
   unet_2D: scale-shift ResBlocks, legacy-order attention, conv resampling,
   dropout 0, unconditional).  Start from a preset and change fields. */
typedef struct prg_unet_config {
    int in_channels;       /* channels of x (3 for RGB, 1 for MNIST) */
    int out_channels;      /* channels of v (normally = in_channels) */
    int model_channels;    /* base width; the time embedding has 4x this */
    int num_res_blocks;    /* ResBlocks per level on the way down (+1 on the way up) */
    int num_levels;        /* entries used in channel_mult */
    int channel_mult[PRG_UNET_MAX_LEVELS]; /* width of level i = model_channels * channel_mult[i]; [0] must be 1 */
    int num_attention;     /* entries used in attention_ds */
    int attention_ds[PRG_UNET_MAX_LEVELS]; /* downsample rates (1, 2, 4, ...) with attention, as the
                                              reference's attention_resolutions; the middle block always has it */
    int num_heads;         /* attention heads (legacy qkv order) */
    int image_size;        /* H = W; divisible by 2^(num_levels - 1) */
    int groups;            /* GroupNorm groups (32); every width must be divisible by it */
} prg_unet_config;

/* "cifar32" (52,542,979 params), "imagenet64" (121,060,483), "small32"
   (7,280,707), "tiny32" (1,192,387).  Unknown name: PRG_ERR_CONFIG. */
prg_result prg_unet_config_preset(prg_unet_config *cfg, const char *name);
/* PRG_OK or PRG_ERR_CONFIG with a message naming the bad field. */
prg_result prg_unet_config_check(const prg_unet_config *cfg);
/* Parameter count of a config without allocating it; 0 if the config is invalid. */
size_t     prg_unet_config_num_params(const prg_unet_config *cfg);
/* The config as one line of text, for checkpoint metadata:
   "in_channels=3 out_channels=3 model_channels=128 num_res_blocks=3
   channel_mult=1,2,2,2 attention_ds=2,4 num_heads=4 image_size=32 groups=32".
   format: PRG_ERR_ARG if buf (size bytes) is too small.  parse: every key
   once, in any order; PRG_ERR_FORMAT for anything else; then checked. */
prg_result prg_unet_config_format(const prg_unet_config *cfg, char *buf, size_t size);
prg_result prg_unet_config_parse(prg_unet_config *cfg, const char *text);

typedef struct prg_unet prg_unet;
/* Allocates the parameters (PyTorch default init from seed, with the three
   zero-initialised convolutions of the reference) and zeroed gradients.
   Activations are allocated by the first forward, for its batch size. */
prg_result prg_unet_create(prg_unet **net, const prg_unet_config *cfg, uint64_t seed);
void       prg_unet_free(prg_unet *net);
const prg_unet_config *prg_unet_config_get(const prg_unet *net);
size_t     prg_unet_num_params(const prg_unet *net);
float     *prg_unet_params(prg_unet *net);     /* one 64-byte aligned block, state-dict order */
float     *prg_unet_grads(prg_unet *net);      /* same layout */
void       prg_unet_zero_grad(prg_unet *net);

/* The parameter tensors in the reference's state_dict() order, with its names
   ("time_embed.0.weight", ..., "out.2.bias"); shape[] holds ndim entries
   (attention qkv/proj_out are Conv1d weights [Cout][Cin][1]); offset is in
   floats from prg_unet_params(). */
int        prg_unet_num_tensors(const prg_unet *net);
prg_result prg_unet_tensor_info(const prg_unet *net, int i, const char **name, int *ndim,
                                int64_t shape[4], size_t *offset);
int        prg_unet_find_tensor(const prg_unet *net, const char *name); /* index, or -1 */

/* v = U-Net(x, t).  x, v: [batch][C][H][W] float32 (C = in_channels and
   out_channels, H = W = image_size); t: [batch] model time in [0, 1], fed raw
   to the sinusoidal embedding.  Keeps what backward needs; the activation
   block grows when a larger batch than ever before is seen.  A net is used
   by one thread at a time (the work inside is spread over the pool). */
prg_result prg_unet_forward(prg_unet *net, int batch, const float *x, const float *t, float *v);
/* After forward on the same net and batch: ACCUMULATES d(loss)/d(params)
   into prg_unet_grads(); dx (may be NULL) is SET to d(loss)/dx.
   dv, dx: [batch][C][H][W]; dx may be dv itself (in place).  Backward does
   not change what forward kept: it may be called again. */
prg_result prg_unet_backward(prg_unet *net, const float *dv, float *dx);
/* Gradient-ready hook, for data-parallel training that sums gradients over
   processes while the backward still runs.  fn(ctx, block, begin) says that
   gradient block `block` (0: prg_unet_grads, 1: a classifier's head block)
   is final from float `begin` to its end: nothing later in this backward
   writes it.  prg_unet_backward calls it with block 0 after each module that
   has parameters, the output side first, so begin strictly decreases, and
   last with begin 0 (after the time embedding).  fn runs on the calling
   thread between modules; it must not touch the net.  NULL removes it. */
typedef void (*prg_grad_ready_fn)(void *ctx, int block, size_t begin);
void prg_unet_set_grad_hook(prg_unet *net, prg_grad_ready_fn fn, void *ctx);
/* The same v, bit for bit, keeping nothing for a backward (inference: the
   skip tensors the U-Net must hold, two other tensors and one module's
   intermediates at a time, instead of every module's output and saved
   intermediates).  A backward after it fails with PRG_ERR_STATE.  Encode,
   sampling and prg_classifier_predict run it. */
prg_result prg_unet_forward_lean(prg_unet *net, int batch, const float *x, const float *t, float *v);
/* Bytes of activations + scratch + workspace the net holds now (allocated by
   the largest forward so far; a lean forward alone allocates less). */
size_t     prg_unet_activation_bytes(const prg_unet *net);

/* >>flow ================================================================ */
/* Flow-matching losses (ICFM, OT-CFM, GVP) and samplers noise -> data. */

/* Time convention (docs/METHOD.md A.1): noise at t = 0, data at t = 1 (the paper's
   s = 1 - t).  Samples are rows of `dim` floats (dim = C*H*W for images).
   Random numbers come from the caller's prg_rng, so a seed reproduces a
   batch; the draw order is stated with each function.  Output arrays must
   not overlap the inputs.  Apart from prg_ot_cost (on the pool) these
   helpers run serially: their cost is small next to one U-Net evaluation. */

/* ICFM pairs (sigma = 0): x0 ~ N(0, I), then t ~ U[0, 1) per sample;
   xt = (1-t)*x0 + t*x1, target = x1 - x0.  Draws batch*dim normals (row by
   row), then batch uniforms.  x0 (may be NULL) receives the noise. */
void prg_flow_icfm_pairs(float *xt /* [B][dim] */, float *target /* [B][dim] */, float *t /* [B] */,
                         float *x0 /* [B][dim] or NULL */, const float *x1 /* [B][dim] */, int batch,
                         size_t dim, prg_rng *rng);
/* The same construction from given x0, x1 and t (no randomness). */
void prg_flow_icfm_interp(float *xt /* [B][dim] */, float *target /* [B][dim] */, const float *x0 /* [B][dim] */,
                          const float *x1 /* [B][dim] */, const float *t /* [B] */, int batch, size_t dim);
/* GVP pairs (docs/METHOD.md A.4, t = 0 data, t = 1 noise): eps ~ N(0, I), then
   t ~ U[1e-5, 1); xt = cos(pi t/2) x + sin(pi t/2) eps,
   target = -(pi/2) sin(pi t/2) x + (pi/2) cos(pi t/2) eps. */
void prg_flow_gvp_pairs(float *xt /* [B][dim] */, float *target /* [B][dim] */, float *t /* [B] */,
                        const float *x /* [B][dim] */, int batch, size_t dim, prg_rng *rng);

/* OT-CFM (docs/METHOD.md A.1).  cost[i][j] = ||x0_i - x1_j||^2, written as
   ||x0_i||^2 + ||x1_j||^2 - 2 x0_i . x1_j: the squared norms in double, the
   cross terms X0 X1^T through prg_sgemm (float32, on the pool, in parts of
   about 768 pixels each summed in double), combined in double; the same
   bits for any thread count.  An assignment's total cost is sum ||x0||^2 + sum ||x1||^2 - 2 sum
   of its cross terms, so the norms do not affect which assignment is
   optimal and only the cross terms' float32 rounding (relative ~1e-7 of
   ||x0_i|| ||x1_j||) separates it from the exact cost.  Problems with
   batch^2 dim < 65536, or when the GEMM's float32 scratch (batch^2 floats)
   cannot be allocated, take prg_ot_cost_ref. */
void prg_ot_cost(double *cost /* [B][B] */, const float *x0 /* [B][dim] */, const float *x1 /* [B][dim] */,
                 int batch, size_t dim);
/* The plain twin: sum_k (x0_ik - x1_jk)^2 in double, element by element. */
void prg_ot_cost_ref(double *cost /* [B][B] */, const float *x0 /* [B][dim] */, const float *x1 /* [B][dim] */,
                     int batch, size_t dim);
/* Exact minimum-cost assignment (Hungarian algorithm with potentials,
   O(n^3), double): row i goes to column perm[i].  Ties are broken by the
   algorithm, any optimum may come back.  PRG_ERR_NUMERIC for a non-finite
   cost, PRG_ERR_NOMEM when the O(n) workspace cannot be allocated. */
prg_result prg_ot_assign(int *perm /* [n] */, const double *cost /* [n][n] */, int n);
/* The OT re-pairing: the optimal matching k -> perm[k] of noise rows to data
   rows, then `batch` pairs drawn uniformly with replacement from the matched
   pairs (the normalised EMD plan is that permutation / B): pair j is
   (x0[i0[j]], x1[i1[j]]) with i1[j] = perm[i0[j]].  Draws batch
   prg_rng_below(batch). */
prg_result prg_ot_pairs(int *i0 /* [B] */, int *i1 /* [B] */, const float *x0 /* [B][dim] */,
                        const float *x1 /* [B][dim] */, int batch, size_t dim, prg_rng *rng);
/* OT-CFM training pairs: x0 ~ N(0, I) as in prg_flow_icfm_pairs, the OT
   re-pairing, then t ~ U[0, 1) and the ICFM interpolation of the re-paired
   (x0, x1).  x0 (may be NULL) receives the re-paired noise rows. */
prg_result prg_flow_ot_pairs(float *xt /* [B][dim] */, float *target /* [B][dim] */, float *t /* [B] */,
                             float *x0 /* [B][dim] or NULL */, const float *x1 /* [B][dim] */, int batch,
                             size_t dim, prg_rng *rng);

/* A velocity field v(t, x) evaluated on a batch: x, v [batch][dim], one time
   per sample.  A forward call keeps what its vector-Jacobian product needs,
   like the U-Net's forward.  The U-Net plugs in as prg_unet_velocity and
   prg_unet_velocity_vjp (ctx = the net, in the prg section); to sample a
   U-Net, call prg_unet_sample or prg_unet_sample_path directly. */
typedef prg_result (*prg_velocity_fn)(void *ctx, int batch, const float *x /* [B][dim] */,
                                      const float *t /* [B] */, float *v /* [B][dim] */);
/* The vector-Jacobian product of the LAST velocity call on ctx:
   dx = (dv/dx)^T dv (dx is zeroed by the caller before the call, so set or
   accumulate both work) and, for a learned field, parameter gradients
   += (dv/dtheta)^T dv.  prg_unet_backward(net, dv, dx) has this shape. */
typedef prg_result (*prg_velocity_vjp_fn)(void *ctx, const float *dv /* [B][dim] */, float *dx /* [B][dim] */);

/* Samplers noise -> data on the ICFM path (prg_sample_path below follows
   either path): integrate dx/dt = v(t, x) from t = 0 to t = 1 on
   the uniform grid t_k = k/steps, in place on x ([batch][dim], noise in,
   data out).  Euler: 1 evaluation per step, Heun (explicit trapezoid):
   2, RK4 (classic 1/6, 2/6, 2/6, 1/6; torchdiffeq's "rk4" is the 3/8-rule
   variant): 4.  prg_sample_euler with steps = N-1 is the reference's
   torchdiffeq Euler over t_span = linspace(0, 1, N).  Errors of the
   callback are passed through; PRG_ERR_NOMEM if the workspace (3 copies of
   x) cannot be allocated. */
prg_result prg_sample_euler(prg_velocity_fn vel, void *ctx, int steps, int batch, size_t dim,
                            float *x /* [B][dim] */);
prg_result prg_sample_heun(prg_velocity_fn vel, void *ctx, int steps, int batch, size_t dim,
                           float *x /* [B][dim] */);
prg_result prg_sample_rk4(prg_velocity_fn vel, void *ctx, int steps, int batch, size_t dim,
                          float *x /* [B][dim] */);

/* Probability paths and pretraining losses.  The path fixes which end of
   model time is data: PRG_PATH_ICFM (ICFM and OT-CFM: noise at t = 0, data
   at t = 1) or PRG_PATH_GVP (docs/METHOD.md A.4: data at t = 0, noise at t = 1).
   The loss is what pretraining minimised; OT-CFM differs from ICFM only in
   how the training pairs are drawn, so both have the ICFM path.
   PRG_PATH_NONE stands for "no path recorded" (a caller's variable); no
   function takes it as a path. */
typedef enum prg_path { PRG_PATH_NONE = -1, PRG_PATH_ICFM = 0, PRG_PATH_GVP = 1 } prg_path;
typedef enum prg_loss { PRG_LOSS_NONE = 0, PRG_LOSS_ICFM = 1, PRG_LOSS_OT = 2, PRG_LOSS_GVP = 3 } prg_loss;
const char *prg_path_name(prg_path path);   /* "icfm", "gvp" ("?" for anything else) */
const char *prg_loss_name(prg_loss loss);   /* "icfm", "ot", "gvp", "none" ("?") */
prg_path    prg_loss_path(prg_loss loss);   /* PRG_PATH_GVP for PRG_LOSS_GVP, else PRG_PATH_ICFM */
/* Names to constants; PRG_ERR_ARG with the choices in the message.  A path
   name may also be "ot" (the ICFM path). */
prg_result  prg_path_parse(prg_path *path, const char *name);   /* "icfm", "ot", "gvp" */
prg_result  prg_loss_parse(prg_loss *loss, const char *name);   /* "icfm", "ot", "gvp" */

/* A U-Net's pretraining loss, which gives its path.  Pretraining sets it;
   every checkpoint writer stores it as "prg.loss" and "prg.path", and every
   loader reads it back.  PRG_LOSS_NONE (a new net, or a file that does not
   record it, such as a converted PyTorch state dict) means the ICFM path,
   the reference's default; a program then takes the path from a flag. */
prg_loss   prg_unet_loss(const prg_unet *net);
prg_path   prg_unet_path(const prg_unet *net);
prg_result prg_unet_set_loss(prg_unet *net, prg_loss loss);   /* PRG_ERR_ARG for an unknown loss */

/* Sampling noise -> data in the path's own direction:
     PRG_PATH_ICFM  t from 0 to 1 on t_k = k/steps, as the samplers above;
     PRG_PATH_GVP   t from 1 to 0 on t_k = 1 - k/steps, each step -1/steps:
                    Euler x_{k+1} = x_k - h v(t_k, x_k), h = 1/steps, which
                    with steps = N-1 is the reference grid linspace(0, 1, N)
                    run from its noise end; Heun and RK4 on the same grid.
   solver: PRG_SOLVER_EULER, PRG_SOLVER_HEUN or PRG_SOLVER_RK4.  Errors as
   the samplers above; PRG_ERR_ARG for an unknown path or solver. */
typedef enum prg_solver { PRG_SOLVER_EULER = 0, PRG_SOLVER_HEUN = 1, PRG_SOLVER_RK4 = 2 } prg_solver;
prg_result prg_sample_path(prg_path path, prg_solver solver, prg_velocity_fn vel, void *ctx, int steps, int batch,
                           size_t dim, float *x /* [B][dim] */);
/* The same along the U-Net's own path (prg_unet_path); x: [batch][C][H][W],
   standard normal noise in, samples out (in the training normalisation). */
prg_result prg_unet_sample(prg_unet *net, prg_solver solver, int steps, int batch, float *x);
/* prg_unet_sample along a path the caller chooses (PRG_PATH_ICFM or
   PRG_PATH_GVP), e.g. a program's --path for a converted file that does not
   record its loss.  Both U-Net samplers run the lean forward and keep the
   transformed convolution weights across all the evaluations of the solve:
   a caller needs no velocity wrapper.  PRG_ERR_CONFIG unless out_channels
   == in_channels (the ODE's state is the image). */
prg_result prg_unet_sample_path(prg_unet *net, prg_path path, prg_solver solver, int steps, int batch, float *x);

/* The reverse ODE, data -> noise, exactly as the reference's encoder
   (docs/METHOD.md A.2): grid linspace(0, 1, t_span), first t_cutoff points
   dropped, one Euler step per interval.  With h = 1/(t_span-1) and
   M = t_span-1-t_cutoff steps:
       x_0 = x,  x_{k+1} = x_k - h v(tau_k, x_k),  tau_k = 1 - k h,  z = x_M.
   states (may be NULL) receives x_0 .. x_M for the backward pass; z may be
   x.  PRG_ERR_ARG unless t_span >= 2 and 0 <= t_cutoff <= t_span - 2.
   (torchdiffeq builds its grid in float32, so the reference's step sizes and
   times differ from h and tau_k in the last bits.) */
int prg_ode_reverse_euler_steps(int t_span, int t_cutoff); /* M, or -1 if invalid */
prg_result prg_ode_reverse_euler(prg_velocity_fn vel, void *ctx, int t_span, int t_cutoff, int batch,
                                 size_t dim, const float *x /* [B][dim] */, float *z /* [B][dim] */,
                                 float *states /* [M+1][B][dim] or NULL */);
/* Backward of prg_ode_reverse_euler from the stored states: given
   dz = dL/dz, accumulates the parameter gradients of the field (through
   vjp) and, if dx is not NULL, dx += dL/dx.  For k = M-1 .. 0 it re-runs
   vel at (tau_k, x_k) and then vjp with dv = -h a_{k+1}:
       a_k = a_{k+1} - h (dv/dx)(tau_k, x_k)^T a_{k+1},
       grads += -h (dv/dtheta)(tau_k, x_k)^T a_{k+1}      (a_M = dz)
   which is the exact gradient of the discrete solve (left end, docs/METHOD.md
   A.3).  right_end = 1 evaluates at (tau_{k+1}, x_{k+1}) instead, as
   torchdiffeq's adjoint in the released code does (an O(h) approximation). */
prg_result prg_ode_reverse_euler_backward(prg_velocity_fn vel, prg_velocity_vjp_fn vjp, void *ctx,
                                          int t_span, int t_cutoff, int batch, size_t dim,
                                          const float *states /* [M+1][B][dim] */,
                                          const float *dz /* [B][dim] */, float *dx /* [B][dim] or NULL */,
                                          int right_end);
/* The GVP ("Diff") encoder of docs/METHOD.md A.4: model time t = 0 is data, and
   the drift is +v over the grid linspace(0, 1, t_span), or its first
   t_cutoff points when t_cutoff > 0:
       x_{k+1} = x_k + h v(t_k, x_k),  t_k = k h,  k = 0 .. M-1,
   M = t_span-1 (t_cutoff = 0) or t_cutoff-1.  The backward is the same as
   above with dv = +h a_{k+1}.  PRG_ERR_ARG unless t_span >= 2 and t_cutoff
   is 0 or in [2, t_span]. */
int prg_ode_gvp_euler_steps(int t_span, int t_cutoff); /* M, or -1 if invalid */
prg_result prg_ode_gvp_euler(prg_velocity_fn vel, void *ctx, int t_span, int t_cutoff, int batch, size_t dim,
                             const float *x /* [B][dim] */, float *z /* [B][dim] */,
                             float *states /* [M+1][B][dim] or NULL */);
prg_result prg_ode_gvp_euler_backward(prg_velocity_fn vel, prg_velocity_vjp_fn vjp, void *ctx, int t_span,
                                      int t_cutoff, int batch, size_t dim,
                                      const float *states /* [M+1][B][dim] */, const float *dz /* [B][dim] */,
                                      float *dx /* [B][dim] or NULL */, int right_end);


/* >>classifier ========================================================== */
/* The reverse-ODE encoder and the classifier (U-Net + head). */

/* Time runs as in the reference code: noise at t = 0, data at t = 1 (the
   paper writes s = 1 - t).  The encoder is the flow section's reverse Euler
   ODE (prg_ode_reverse_euler) with the U-Net as the velocity field: data ->
   noise on the grid linspace(0, 1, t_span) with its first t_cutoff points
   dropped, M = t_span - 1 - t_cutoff steps (prg_ode_reverse_euler_steps),
       x_0 = x,   x_{k+1} = x_k - h v(tau_k, x_k),   tau_k = 1 - k h,
   z = x_M (model time t_cutoff * h).  t_cutoff = 0 runs to pure noise.
   A net whose path is PRG_PATH_GVP (prg_unet_path) is encoded by the GVP
   encoder instead (prg_ode_gvp_euler, its own t_cutoff rule). */

/* z = x_M.  x, z: [batch][C][H][W] (z may equal x). */
prg_result prg_encode(prg_unet *net, int t_span, int t_cutoff, int batch, const float *x, float *z);
/* Every state of the trajectory (the paper's feature hierarchy):
   states [M+1][batch][C][H][W], states[0] = x, states[M] = z. */
prg_result prg_encode_trajectory(prg_unet *net, int t_span, int t_cutoff, int batch,
                                 const float *x, float *states);
/* The U-Net as a prg_velocity_fn / prg_velocity_vjp_fn (ctx = the prg_unet),
   for the flow section's samplers and ODEs.  Through them each evaluation
   transforms the convolution weights anew; prg_encode, prg_unet_sample(_path)
   and the classifier keep them transformed for the whole solve instead. */
prg_result prg_unet_velocity(void *net, int batch, const float *x, const float *t, float *v);
prg_result prg_unet_velocity_vjp(void *net, const float *dv, float *dx);
/* prg_unet_velocity through prg_unet_forward_lean (no vjp after it). */
prg_result prg_unet_velocity_lean(void *net, int batch, const float *x, const float *t, float *v);

/* The classifier: the encoder, then the head of docs/METHOD.md C.1 on z:
   average pool to pool x pool per channel (exact, 16 by default), flatten to
   D = C*pool*pool, LayerNorm(D) -> Linear(D, D) -> tanh -> Linear(D, classes,
   no bias).  Head tensors, in this order in one block: head.norm.weight [D],
   head.norm.bias [D], head.fc1.weight [D][D], head.fc1.bias [D],
   head.fc2.weight [classes][D]. */
typedef struct prg_classifier prg_classifier;
prg_result prg_classifier_create(prg_classifier **clf, prg_unet *net, int num_classes,
                                 int t_span, int t_cutoff, uint64_t seed); /* takes ownership of net */
void       prg_classifier_free(prg_classifier *clf);
prg_unet  *prg_classifier_unet(prg_classifier *clf);
int        prg_classifier_num_classes(const prg_classifier *clf);
float     *prg_classifier_head_params(prg_classifier *clf, size_t *count);
float     *prg_classifier_head_grads(prg_classifier *clf, size_t *count);
/* The head tensors' names, shapes and offsets (floats from the head block). */
int        prg_classifier_num_head_tensors(const prg_classifier *clf);
prg_result prg_classifier_head_tensor_info(const prg_classifier *clf, int i, const char **name,
                                           int *ndim, int64_t shape[4], size_t *offset);
/* Zeroes the U-Net and head gradients. */
void       prg_classifier_zero_grad(prg_classifier *clf);
/* Class names, optional: exactly num_classes strings, copied (names NULL
   removes them).  prg_classifier_save stores them as the metadata
   "prg.classes" (a JSON array of strings); prg_classifier_load reads them.
   class_name: NULL when the classifier has none or i is out of range. */
prg_result prg_classifier_set_class_names(prg_classifier *clf, const char *const *names, int n);
const char *prg_classifier_class_name(const prg_classifier *clf, int i);

/* How backward treats the ODE:
   PRG_GRAD_EXACT    exact gradient of the discretised solve (left-end
                     Euler backprop, each step's U-Net forward recomputed);
   PRG_GRAD_ADJOINT  the reference's torchdiffeq adjoint (Jacobians at the
                     right end of each interval), for comparison with it;
   PRG_GRAD_FROZEN   only the head learns (the U-Net is a fixed feature map). */
typedef enum prg_grad_mode { PRG_GRAD_EXACT = 0, PRG_GRAD_ADJOINT = 1, PRG_GRAD_FROZEN = 2 } prg_grad_mode;
prg_result prg_classifier_set_grad_mode(prg_classifier *clf, prg_grad_mode mode);
/* What the optimizer trains, as the blocks of prg_adam_step_blocks: the
   U-Net's parameters and gradients, then the head's; with PRG_GRAD_FROZEN
   the head's alone (its AdamW state is then the head's, which the
   checkpoints keep as such).  params, grads, sizes: room for 2 (params or
   grads may be NULL); *total (may be NULL) = the floats of all blocks, the
   optimizer's size.  Returns the number of blocks, 1 or 2. */
int prg_classifier_param_blocks(prg_classifier *clf, float **params, const float **grads, size_t *sizes,
                                size_t *total);
/* Changes the ODE grid (evaluation with more steps, say); the head is kept. */
prg_result prg_classifier_set_grid(prg_classifier *clf, int t_span, int t_cutoff);
/* The probability path the U-Net was pretrained on (the flow section's
   PRG_PATH_*), which fixes the encoder: PRG_PATH_ICFM (ICFM and OT-CFM:
   prg_ode_reverse_euler) or PRG_PATH_GVP (docs/METHOD.md A.4: prg_ode_gvp_euler,
   t_cutoff 0 or in [2, t_span]).  prg_classifier_create takes the net's own
   path (prg_unet_path); set_path overrides it (PRG_ERR_ARG, nothing changed,
   when the grid does not fit the new path). */
prg_result prg_classifier_set_path(prg_classifier *clf, prg_path path);
prg_path   prg_classifier_path(const prg_classifier *clf);
/* The encoder's grid: *t_span, *t_cutoff (either may be NULL); returns the
   number of Euler steps M. */
int        prg_classifier_grid(const prg_classifier *clf, int *t_span, int *t_cutoff);

/* The optional flow-matching term of the fine-tuning loss, beta * L_FM on
   the same images x (docs/METHOD.md C.2; the released code runs beta = 0):
   draws flow pairs with rng (ICFM; GVP on the GVP path), runs the U-Net on
   them, ADDS beta * dL_FM/dtheta to the U-Net gradients and returns L_FM
   (unweighted) in *loss.  Call it after prg_classifier_backward, whose
   U-Net activations it replaces.  PRG_ERR_NUMERIC (gradients untouched) on
   a non-finite L_FM. */
prg_result prg_classifier_flow_loss(prg_classifier *clf, int batch, const float *x /* [batch][C][H][W] */,
                                    float beta, prg_rng *rng, float *loss);
/* logits [batch][classes] for x [batch][C][H][W].  Keeps the M+1 states and
   the head's intermediates for backward. */
prg_result prg_classifier_forward(prg_classifier *clf, int batch, const float *x, float *logits);
/* The same logits, bit for bit, for inference: the U-Net keeps nothing for
   a backward (prg_unet_forward_lean), nor does the classifier (a backward
   after it fails with PRG_ERR_STATE). */
prg_result prg_classifier_predict(prg_classifier *clf, int batch, const float *x, float *logits);
/* After forward: accumulates d(loss)/d(params) into the U-Net and head
   gradients, given dlogits = d(loss)/d(logits) [batch][classes].  Memory:
   the M+1 states, one U-Net activation set, and the kept steps' sets of
   prg_classifier_set_memory_budget. */
prg_result prg_classifier_backward(prg_classifier *clf, const float *dlogits);
/* The hook of prg_unet_set_grad_hook for the classifier's backward: block 1
   (the head, begin 0) once the head is done, then (unless PRG_GRAD_FROZEN)
   block 0 as prg_unet_backward calls it, during the U-Net backward of the
   first Euler step (the last one backward runs), when the U-Net gradients
   become final.  prg_classifier_flow_loss adds to block 0 after that: with
   it, reduce after the whole step instead. */
void prg_classifier_set_grad_hook(prg_classifier *clf, prg_grad_ready_fn fn, void *ctx);
/* The exact backward needs every Euler step's U-Net activations.  The last
   step's are always at hand; forward keeps those of as many earlier steps as
   `bytes` allow (prg_classifier_step_bytes each; the steps nearest x) and
   backward recomputes the forward of the rest (with PRG_GRAD_ADJOINT, whose
   Jacobians are at the right ends, up to M - 2 steps are kept).  0 = recompute every step:
   memory flat in M.  The gradients are the same bits in every mode.  The
   default is a quarter of physical memory (sysconf _SC_PHYS_PAGES, 0 where
   it is unknown), and applies once the classifier has run a backward, so a
   classifier used only for inference keeps nothing; setting a budget
   applies it from the next forward on.  Kept sets stay allocated for the
   next forward; a new budget releases them. */
void       prg_classifier_set_memory_budget(prg_classifier *clf, size_t bytes);
size_t     prg_classifier_memory_budget(const prg_classifier *clf);
/* Bytes one kept Euler step costs for a batch (one U-Net activation set). */
size_t     prg_classifier_step_bytes(const prg_classifier *clf, int batch);
/* Euler steps whose U-Net activations the last forward kept (0 .. M-1). */
int        prg_classifier_kept_steps(const prg_classifier *clf);

/* ---- representation probes ------------------------------------------- */
/* How good the encoder's features are at each point of the trajectory (the
   paper's feature hierarchy), without fine-tuning: features are the state
   of the reverse ODE at a grid point, pooled as the classifier's head pools
   (average pool to pool x pool per channel, pool = min(16, H); D =
   C*pool*pool), then a weighted k-NN classifier and a linear probe on them.

   One trajectory serves every cutoff: the Euler steps do not depend on
   t_cutoff (it only says how many are taken), so the state after M_K steps
   of the full solve is bit for bit prg_encode(t_span, K)'s z.  t_cutoff K
   runs M_K = t_span-1-K steps on the ICFM path (K = t_span-1: no step, the
   input itself, the pixel baseline) and, on the GVP path, K-1 steps (K in
   [1, t_span]) or t_span-1 (K = 0), as prg_ode_gvp_euler. */
int prg_feature_dim(const prg_unet *net);   /* D, or 0 when H is not a multiple of the pool */
/* feat [ncut][batch][D]: the pooled state for t_cutoffs[i] (any order,
   repeats allowed) of x [batch][C][H][W].  path PRG_PATH_ICFM or
   PRG_PATH_GVP.  Allocates the trajectory for the deepest cutoff,
   (M+1)*batch*C*H*W floats, for the call. */
prg_result prg_encode_features(prg_unet *net, int path, int t_span, int ncut, const int *t_cutoffs, int batch,
                               const float *x, float *feat);

/* Weighted k-nearest-neighbour classifier (InstDisc / DINO's kNN
   evaluation): for each query, the k training rows of highest cosine
   similarity s (rows L2-normalised; a zero row has similarity 0 to all;
   equal similarities rank the lower training index first) vote for their
   label with weight exp(s / temperature); the class with the largest sum
   wins (ties: the lower class).  k is clamped to n; the literature's
   values are k = 20, temperature = 0.07.  pred [m] gets the classes,
   votes (may be NULL) [m][classes] the sums.  Labels outside [0, classes)
   are PRG_ERR_ARG.  Similarities come in blocks of 64 queries through
   prg_sgemm; the selection runs on the pool. */
prg_result prg_knn_classify(const float *train /* [n][d] */, const int32_t *train_labels /* [n] */, int n,
                            int d, int classes, const float *query /* [m][d] */, int m, int k,
                            float temperature, int32_t *pred /* [m] */, float *votes /* [m][classes] or NULL */);

/* Linear probe: logits = W x + b on frozen features, trained with the
   library's AdamW and cross-entropy (no smoothing), from W = b = 0:
       standardize: x -> (x - mean) / sqrt(var + 1e-5), per feature, with
                    the mean and biased variance of the training set (a
                    BatchNorm without affine, as MAE's linear probe);
       epochs of mini-batches of `batch` rows in an order drawn from seed
       (batch >= n: the whole set in data order each step);
       step u of U = epochs * ceil(n / batch) at lr * (1 + cos(pi u / U)) / 2.
   The standardisation is folded into the returned W and b, which apply to
   raw features.  loss (may be NULL) receives the mean loss of the last
   epoch.  PRG_ERR_NUMERIC when the loss or a gradient stops being finite. */
typedef struct prg_linear_probe_config {
    int epochs;            /* 100 */
    int batch;             /* 256 */
    double lr;             /* 1e-3 (peak, cosine to 0) */
    double weight_decay;   /* 0 (decoupled, AdamW) */
    int standardize;       /* 1 */
    uint64_t seed;         /* 0 */
} prg_linear_probe_config;
void prg_linear_probe_config_default(prg_linear_probe_config *cfg);
prg_result prg_linear_probe_train(float *weight /* [classes][d] */, float *bias /* [classes] */,
                                  const float *feat /* [n][d] */, const int32_t *labels /* [n] */, int n, int d,
                                  int classes, const prg_linear_probe_config *cfg, double *loss);
/* pred [m] = argmax (ties: the lower class) of W x + b; logits (may be NULL)
   [m][classes]. */
prg_result prg_linear_probe_predict(int32_t *pred /* [m] */, float *logits /* [m][classes] or NULL */,
                                    const float *weight /* [classes][d] */, const float *bias /* [classes] */,
                                    const float *feat /* [m][d] */, int m, int d, int classes);

/* >>optim =============================================================== */
/* Adam, AdamW, warmup + cosine schedule, EMA. */

/* One optimizer serves a parameter block of n floats (the U-Net keeps its
   parameters and gradients contiguous); a model split over several blocks
   (U-Net + classifier head) uses prg_adam_step_blocks, which treats the
   blocks as one concatenated vector, so the gradient norm, the non-finite
   check and the moments cover all of them.

   The update is torch.optim.Adam / AdamW (torch 1.13, foreach=False) step
   for step, in float32 with the same scalar roundings:
       step += 1
       AdamW: p *= 1 - lr*wd                       (decoupled weight decay)
       Adam:  g += wd*p                            (L2 in the gradient)
       m = beta1*m + (1-beta1)*g,  v = beta2*v + (1-beta2)*g*g
       p -= lr/(1-beta1^step) * m / (sqrt(v)/sqrt(1-beta2^step) + eps)
   A gradient with a NaN or an infinity makes the step return
   PRG_ERR_NUMERIC before anything is written: parameters, moments and the
   step count stay as they were.  The work is split over the pool; every
   element is updated by one thread and the norm is reduced over fixed
   chunks in a fixed order, so any thread count gives the same bits. */
typedef struct prg_adam_config {
    double beta1, beta2;    /* 0.9, 0.999 */
    double eps;             /* 1e-8, added after sqrt(v_hat) */
    double weight_decay;    /* 0 */
    int decoupled;          /* 1 = AdamW, 0 = Adam (weight decay added to the gradient) */
} prg_adam_config;
/* torch.optim.Adam defaults: betas (0.9, 0.999), eps 1e-8, no weight decay.
   For the reference's fine-tuning AdamW set decoupled = 1 and
   weight_decay = 0.05 (torch.optim.AdamW's own default is 0.01). */
void prg_adam_config_default(prg_adam_config *cfg);

typedef struct prg_adam prg_adam;
prg_result prg_adam_create(prg_adam **opt, size_t n, const prg_adam_config *cfg);
void       prg_adam_free(prg_adam *opt);
/* One step at learning rate lr.  grad_norm (may be NULL) receives the L2
   norm of the raw gradient (before weight decay), also on failure. */
prg_result prg_adam_step(prg_adam *opt, float *params /* [n] */, const float *grads /* [n] */,
                         double lr, double *grad_norm);
prg_result prg_adam_step_blocks(prg_adam *opt, int nblocks, float *const *params /* [nblocks] */,
                                const float *const *grads /* [nblocks] */,
                                const size_t *sizes /* [nblocks], summing to n */, double lr,
                                double *grad_norm);
/* State for checkpoints: the step count (torch's state['step']) and the two
   moment vectors of n floats (torch's exp_avg, exp_avg_sq), in parameter
   order; both live in one 64-byte-aligned block.  Writing them back and
   setting the step count restores the optimizer exactly. */
size_t   prg_adam_num_params(const prg_adam *opt);
int64_t  prg_adam_step_count(const prg_adam *opt);
void     prg_adam_set_step_count(prg_adam *opt, int64_t step);
float   *prg_adam_exp_avg(prg_adam *opt);     /* [n] */
float   *prg_adam_exp_avg_sq(prg_adam *opt);  /* [n] */
const prg_adam_config *prg_adam_config_get(const prg_adam *opt);

/* Linear warm-up + cosine decay, timm CosineLRScheduler with
   warmup_prefix=True, cycle_limit=1, cycle_decay=1, k_decay=1, no noise,
   stepped per iteration (t_in_epochs=False), as the reference fine-tunes:
       t <  W:     lr(t) = warmup_lr + t*(base_lr - warmup_lr)/W
       t >= W:     u = t - W, T = total_steps - W
                   lr(t) = min_lr + 0.5*(base_lr - min_lr)*(1 + cos(pi*u/T))   for u < T
                   lr(t) = min_lr                                              for u >= T
   The reference calls scheduler.step_update(u) AFTER optimizer step u, and
   timm's constructor sets the lr to warmup_lr when W > 0; so optimizer step
   u (0-based) runs at warmup_lr for u = 0 and at lr(u-1) after: the first
   two steps both use warmup_lr.  prg_cosine_schedule_step_lr(s, u) returns
   exactly that lr; a training loop that reproduces the reference does
       prg_adam_step(opt, p, g, prg_cosine_schedule_step_lr(&s, u), &norm);
   prg_cosine_schedule_lr(s, t) is timm's _get_lr(t) itself. */
typedef struct prg_cosine_schedule {
    double base_lr, warmup_lr, min_lr;
    int64_t warmup_steps;   /* W (timm warmup_t) */
    int64_t total_steps;    /* W + T (timm t_initial = T) */
} prg_cosine_schedule;
/* The reference fine-tuning recipe (docs/METHOD.md C.2): base 1.25e-4,
   warm-up 1.25e-7, min 1.25e-6, each times global_batch/512; W =
   warmup_epochs*iters_per_epoch, total = epochs*iters_per_epoch.
   Returns PRG_ERR_CONFIG unless 0 <= warmup_epochs < epochs and
   iters_per_epoch, global_batch > 0. */
prg_result prg_cosine_schedule_init(prg_cosine_schedule *s, int global_batch,
                                    int64_t iters_per_epoch, int epochs, int warmup_epochs);
double prg_cosine_schedule_lr(const prg_cosine_schedule *s, int64_t t);
double prg_cosine_schedule_step_lr(const prg_cosine_schedule *s, int64_t step);

/* Exponential moving average of weights (optional; the reference uses none):
   ema = decay*ema + (1-decay)*params, element by element, on the pool. */
void prg_ema_update(float *ema /* [n] */, const float *params /* [n] */, size_t n, double decay);


/* >>io ================================================================== */
/* File formats: element types, checksums, inflate/deflate, atomic writes,
   .npy/.npz and safetensors.  Checkpoints, images and datasets build on them
   in the next sections. */
/* Every reader checks magic numbers, header sizes (overflow-checked against
   the file size), offsets, element counts and labels, and fails with
   PRG_ERR_IO (cannot open or read), PRG_ERR_FORMAT (corrupt, truncated,
   wrong magic, absurd size), PRG_ERR_SHAPE (sizes that disagree) or
   PRG_ERR_UNSUPPORTED (a valid file using a feature not implemented here);
   prg_last_error() then names the file and the byte offset.  On failure
   the output object is left zeroed and nothing is leaked.  Writers (every
   *_save and *_write, prg_image_grid) create a temporary file in the
   target's directory under an unpredictable name, exclusively (POSIX
   open(O_CREAT | O_EXCL): nothing planted there is followed or reused),
   fsync it, rename() it over <path> and fsync the directory, so an
   existing file is replaced only by a complete new one, even across a
   crash or a power cut.  <path> must be absent or a regular file (a
   directory is refused; a symlink at <path> is itself replaced, the file
   it points to is never written).  Numbers on disk are
   little-endian whatever the host (IDX: big-endian, as specified).

       prg_st *st;                        // a checkpoint, one tensor at a time
       if (prg_st_open(&st, "model.safetensors") == PRG_OK) {
           prg_st_info in;
           if (prg_st_find(st, "out.2.weight", &in) == PRG_OK)
               prg_st_read_f32(st, in.name, w, in.count, PRG_ST_FINITE);
           prg_st_close(st);
       }
*/

/* Element types (safetensors names; numpy '<f4' = PRG_DT_F32 and so on). */
typedef enum prg_dtype {
    PRG_DT_F32 = 0, PRG_DT_F16, PRG_DT_BF16, PRG_DT_F64,
    PRG_DT_U8, PRG_DT_I8, PRG_DT_U16, PRG_DT_I16, PRG_DT_U32, PRG_DT_I32,
    PRG_DT_U64, PRG_DT_I64, PRG_DT_BOOL
} prg_dtype;
#define PRG_DT_COUNT 13
#define PRG_MAX_DIMS 8
size_t      prg_dtype_bytes(prg_dtype t);  /* bytes per element */
const char *prg_dtype_name(prg_dtype t);  /* "F32", "BF16", "U8", ... */
/* Converts n elements of type t (host byte order) to float. */
void prg_convert_to_f32(float *dst /* [n] */, const void *src /* [n] of t */, prg_dtype t, size_t n);

/* Checksums: crc = prg_crc32(0, p, n) (gzip, zip, PNG); prg_adler32(1, p, n) (zlib). */
uint32_t prg_crc32(uint32_t crc, const void *data, size_t n);
uint32_t prg_adler32(uint32_t adler, const void *data, size_t n);

/* Raw deflate (RFC 1951: stored, fixed and dynamic Huffman blocks) into dst;
   *dst_len = bytes produced, *src_used (may be NULL) = bytes consumed.
   Output beyond dst_cap is an error, never a write. */
prg_result prg_inflate(const uint8_t *src, size_t src_len, uint8_t *dst, size_t dst_cap,
                       size_t *dst_len, size_t *src_used);
/* zlib stream (RFC 1950) with its Adler-32 checked. */
prg_result prg_zlib_decompress(const uint8_t *src, size_t src_len, uint8_t *dst, size_t dst_cap,
                               size_t *dst_len);
/* Deflate compressor (LZ77 + fixed Huffman, stored blocks when that is
   smaller): dst needs prg_deflate_bound(n) bytes; returns the bytes written. */
size_t prg_deflate_bound(size_t n);
size_t prg_deflate(uint8_t *dst, const uint8_t *src, size_t n);
/* Reads a whole file into *data (free with prg_free), gunzipping it (RFC
   1952, all members, CRC-32 and ISIZE checked) when it starts with the gzip
   magic. */
prg_result prg_file_read(const char *path, uint8_t **data, size_t *len);
/* The same with a cap on what comes back (after gunzip): PRG_ERR_FORMAT,
   naming the limit, when the content is longer than max_len, found after
   at most max_len + 1 bytes were decompressed, so a small .gz that inflates
   to gigabytes costs max_len.  The library's own readers use caps that
   their headers imply (IDX, PGM/PPM, images: PRG_IMAGE_MAX_PIXELS);
   prg_file_read has none: use it for trusted files only. */
prg_result prg_file_read_max(const char *path, size_t max_len, uint8_t **data, size_t *len);
/* Checks, before a long run, that a later save to path can succeed: path
   non-empty, absent or a regular file, and a file can be created in its
   directory (it is created and removed, exactly as a save would).
   PRG_ERR_ARG for an empty name, PRG_ERR_IO naming what is wrong (missing
   directory, read-only, permission, a directory at path). */
prg_result prg_check_writable(const char *path);
/* Writes len bytes of data to path as every writer of the library does
   (temporary file, fsync, rename: a symlink at path is replaced, never
   followed), for the programs' text outputs (CSV, class lists). */
prg_result prg_file_write(const char *path, const void *data, size_t len);

/* ---- safetensors ----------------------------------------------------- */
/* Layout: u64 header length N, N bytes of JSON, then the tensor data.  The
   reader keeps the file open and reads each tensor on request (fseek), so a
   checkpoint never needs twice its size in memory. */
typedef struct prg_st prg_st;
typedef struct prg_st_info {
    const char *name;                /* owned by the prg_st */
    prg_dtype   dtype;
    int         ndim;
    int64_t     shape[PRG_MAX_DIMS];
    size_t      count;               /* product of shape (1 for a scalar) */
    uint64_t    offset;              /* absolute byte offset of the data in the file */
    uint64_t    nbytes;
} prg_st_info;
/* A tensor to write: data holds count elements of dtype in host byte order
   (F16/BF16 as uint16 bit patterns).  Zero-initialised dtype = PRG_DT_F32. */
typedef struct prg_st_tensor {
    const char *name;
    int         ndim;
    int64_t     shape[PRG_MAX_DIMS];
    const void *data;
    prg_dtype   dtype;
} prg_st_tensor;
#define PRG_ST_FINITE 1  /* prg_st_read_f32 flag: refuse NaN/Inf (PRG_ERR_NUMERIC) */

prg_result prg_st_open(prg_st **st, const char *path);
void       prg_st_close(prg_st *st);
int        prg_st_num_tensors(const prg_st *st);
const prg_st_info *prg_st_info_at(const prg_st *st, int i);   /* file order of the header */
/* PRG_ERR_FORMAT with "no tensor 'name'" when absent; info may be NULL. */
prg_result prg_st_find(const prg_st *st, const char *name, prg_st_info *info);
/* Reads tensor name converted to float32 (from any dtype; F16/BF16 exact).
   count must equal the tensor's element count (else PRG_ERR_SHAPE). */
prg_result prg_st_read_f32(prg_st *st, const char *name, float *dst /* [count] */, size_t count, int flags);
/* The bytes as stored (little-endian); nbytes must equal the tensor's size. */
prg_result prg_st_read_raw(prg_st *st, const char *name, void *dst, size_t nbytes);
const char *prg_st_metadata(const prg_st *st, const char *key);  /* NULL when absent */
int         prg_st_num_metadata(const prg_st *st);
void        prg_st_metadata_at(const prg_st *st, int i, const char **key, const char **value);
/* Writes n tensors (names unique, not "__metadata__") in the given order and
   nmeta key/value string pairs meta_kv[2i], meta_kv[2i+1] as __metadata__. */
prg_result prg_st_write(const char *path, const prg_st_tensor *tensors, int n,
                                 const char *const *meta_kv, int nmeta);

/* ---- .npy / .npz ----------------------------------------------------- */
typedef struct prg_array {
    prg_dtype dtype;
    int       ndim;
    int64_t   shape[PRG_MAX_DIMS];
    size_t    count;      /* product of shape */
    void     *data;       /* count elements, C order, host byte order; prg_alloc'd */
} prg_array;
void       prg_array_free(prg_array *a);
prg_result prg_npy_read(prg_array *a, const char *path);
/* One array of an .npz (zip, stored or deflate, zip64 ok, CRC-32 checked);
   name with or without ".npy".  Both loaders return numpy's fixed-length
   strings as their elements with the length as one more last dimension:
   'S<n>' (bytes) as U8 [...][n], 'U<n>' (UCS-4) as U32 [...][n]. */
prg_result prg_npz_read(prg_array *a, const char *path, const char *name);
prg_result prg_npy_write(const char *path, const prg_array *a);
/* Writes an uncompressed .npz (np.load reads it) of n named arrays. */
prg_result prg_npz_write(const char *path, const char *const *names, const prg_array *arrays, int n);

/* >>checkpoint ========================================================== */
/* U-Net, classifier and training-state files. */

/* Checkpoints are safetensors files: the U-Net tensors under the reference's
   state_dict() names (F32), for a classifier also head.norm.weight ...
   head.fc2.weight, and in __metadata__ the config ("prg.unet", the text of
   prg_unet_config_format), "prg.kind" (unet or classifier), "prg.num_classes",
   "prg.t_span", "prg.t_cutoff", and the pretraining loss "prg.loss" (icfm, ot,
   gvp; absent when the net's is PRG_LOSS_NONE) with its path "prg.path" (icfm,
   gvp; a classifier's encoder path), and "prg.classes" when the classifier has
   class names (a JSON array of num_classes strings).  A training checkpoint adds the Adam moments
   as "optim.exp_avg.<name>" / "optim.exp_avg_sq.<name>", "optim.step", the
   RNG state ("prg.rng") and the iteration count ("prg.step"), so that a run
   resumed from it continues bit for bit.  Every write goes to a temporary
   file renamed into place; every read checks each name and shape and
   refuses NaN/Inf, naming the tensor, and changes nothing on failure. */
prg_result prg_unet_save(const prg_unet *net, const char *path);
/* cfg NULL: the config comes from the file's metadata (tools/pt2safetensors.py
   writes it when converting a PyTorch state_dict).  cfg given: a plain file
   must hold exactly the tensors of cfg; head.* and optim.* tensors are ignored. */
prg_result prg_unet_load(prg_unet **net, const char *path, const prg_unet_config *cfg);
prg_result prg_classifier_save(const prg_classifier *clf, const char *path);
/* The grid (t_span, t_cutoff), class count and class names come from the
   metadata; a file without them gets t_span 32, t_cutoff 0, the class count
   of head.fc2.weight and no names.  Before the net or the head is allocated,
   the metadata is checked against the documented limits (prg.t_span in [2,
   PRG_MAX_T_SPAN], prg.t_cutoff within the grid, prg.num_classes equal to
   the rows of head.fc2.weight) and the config against the tensor table
   (every tensor present, with its shape and a float dtype), so a small
   hostile file costs no more memory than its own tensors; with cfg NULL,
   the memory one image's forward takes by the file's config and t_span is
   at most PRG_MAX_FORWARD_MB (a small file cannot declare image_size 4096
   and have the first forward allocate gigabytes). */
prg_result prg_classifier_load(prg_classifier **clf, const char *path, const prg_unet_config *cfg);
/* Training checkpoints: exactly one of net / clf; opt and rng may be NULL.
   Restore reads into existing objects made with the same config (and, for
   opt, the same parameter count); what is NULL is not read.  With clf, opt
   may also cover the head alone (prg_adam_num_params == the head's parameter
   count: a run with a frozen U-Net): the file then keeps the head's moments
   only, marked "optim.scope" = "head", and restore refuses to mix the two
   kinds of optimizer state.  It refuses (PRG_ERR_FORMAT / PRG_ERR_NUMERIC,
   naming the field) negative or non-decimal step counts (optim.step,
   prg.step), an all-zero RNG state, non-float tensors, NaN/Inf anywhere and
   a negative exp_avg_sq, and then changes nothing. */
prg_result prg_train_state_save(const prg_unet *net, const prg_classifier *clf, const prg_adam *opt,
                               const prg_rng *rng, int64_t step, const char *path);
prg_result prg_train_state_restore(prg_unet *net, prg_classifier *clf, prg_adam *opt, prg_rng *rng,
                                  int64_t *step, const char *path);
/* prg_train_state_save plus nextra (at most 32) key/value string pairs of the
   caller's in __metadata__, extra_kv[2i], extra_kv[2i+1], e.g. a program's
   hyper-parameters to compare on resume (read back with prg_st_metadata);
   keys starting with "prg." or "optim." are refused. */
prg_result prg_train_state_save_meta(const prg_unet *net, const prg_classifier *clf, const prg_adam *opt,
                                    const prg_rng *rng, int64_t step, const char *path,
                                    const char *const *extra_kv, int nextra);

/* >>images ============================================================== */
/* Image files in and out: PNG/JPEG decoders and encoders, PGM/PPM, resizing
   and crops, sample grids and charts. */

/* ---- writers --------------------------------------------------------- */
/* 8-bit PNG, c = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA; filtered rows, deflate. */
prg_result prg_png_write(const char *path, const uint8_t *pixels /* [h][w][c] */, int h, int w, int c);
/* Binary PGM (c = 1, P5) / PPM (c = 3, P6). */
prg_result prg_pnm_write(const char *path, const uint8_t *pixels /* [h][w][c] */, int h, int w, int c);
/* Reads P5/P6 (maxval 1..65535, scaled to 0..255); *pixels from prg_alloc. */
prg_result prg_pnm_read(const char *path, uint8_t **pixels /* [h][w][c] */, int *h, int *w, int *c);
/* Tiles n images into one picture, cols per row (0 = ceil(sqrt(n))), with a
   2-pixel black border; pixel = 255 * (x * std[ch] + mean[ch]), clamped.
   mean/std NULL means images in [-1, 1] (mean = std = 0.5).  c = 1 or 3.
   Writes PNG, or PGM/PPM when path ends in ".pgm"/".ppm". */
prg_result prg_image_grid(const char *path, const float *images /* [n][c][h][w] */, int n, int c, int h,
                          int w, int cols, const float *mean /* [c] or NULL */, const float *std /* [c] or NULL */);

/* ---- charts ---------------------------------------------------------- */
/* Line charts and grouped bar charts drawn into an RGB buffer or a PNG, with
   axes, "nice" ticks (1, 2, 5 x 10^k) with numeric labels, light grid
   lines, a title, axis labels, a legend and a built-in 5x7 bitmap font
   with descenders (ASCII 32..126; other bytes draw as '?'), series in the
   colours of prg_chart_color.  Text is drawn in 6 x 9 pixel cells, doubled
   (12 x 18) when the chart is at least 360 pixels in both directions.

       double x[3] = {0, 8, 16}, knn[3] = {0.91, 0.93, 0.95}, lin[3] = {0.90, 0.94, 0.96};
       prg_chart_series s[2] = {{"kNN", x, knn, 3}, {"linear", x, lin, 3}};
       prg_chart c;
       prg_chart_init(&c, PRG_CHART_LINE, "top-1 vs t_cutoff", s, 2);
       c.x_label = "t_cutoff";
       prg_chart_write("probe.png", &c);

   Line charts join the points of each series in order (NaN y: a gap) and
   mark each with a square (when the points are not too dense for
   markers); x NULL means x = 0, 1, ..., n-1; the x axis
   spans the data exactly (ticks at whole numbers when every x is one),
   the y axis is widened to whole ticks.  Bar charts draw
   group g's bars for series 0..nseries-1 side by side, of height y[g] (x
   unused; every series has n = ngroups values; NaN: no bar), with the group
   names under them and the value axis including 0. */
typedef struct prg_chart_series {
    const char *name;      /* legend text (NULL: not in the legend) */
    const double *x;       /* [n] or NULL */
    const double *y;       /* [n] */
    int n;
} prg_chart_series;
typedef enum prg_chart_kind { PRG_CHART_LINE = 0, PRG_CHART_BARS = 1 } prg_chart_kind;
typedef struct prg_chart {
    prg_chart_kind kind;              /* PRG_CHART_LINE or PRG_CHART_BARS */
    int width, height;                /* pixels: 800 x 500 by default, each 120 .. 8192 */
    const char *title, *x_label, *y_label;      /* each may be NULL */
    const prg_chart_series *series;
    int nseries;                      /* 1 .. 16 */
    const char *const *groups;        /* bars: [ngroups] names (NULL: 1, 2, ...) */
    int ngroups;
    /* the axes' ranges; min == max (the default, 0 and 0) fits the data
       and widens it to whole ticks */
    double x_min, x_max, y_min, y_max;
    int legend_chars;                 /* legend width in characters (0: the longest name, at most 32);
                                         equal values align the plots of charts stacked together */
} prg_chart;
/* Zeroes *c and sets kind, title, the series and the default size. */
void prg_chart_init(prg_chart *c, prg_chart_kind kind, const char *title, const prg_chart_series *series, int nseries);
/* rgb [height][width][3]: the chart.  PRG_ERR_ARG for a bad chart (NULL
   arrays, counts, sizes, a series' n that does not fit, non-finite x or
   ranges). */
prg_result prg_chart_render(const prg_chart *c, uint8_t *rgb);
/* Renders and writes a PNG (prg_png_write). */
prg_result prg_chart_write(const char *path, const prg_chart *c);
/* Where the point (x, y) lands in the rendered chart, in pixels from the top
   left (line charts; for bars x is the group index, the centre of group x),
   and the plot rectangle [x0, x1] x [y0, y1] inside the axes (either may be
   NULL): the layout of prg_chart_render. */
prg_result prg_chart_map(const prg_chart *c, double x, double y, double *px, double *py, int rect[4]);
/* Colour i (mod 10) of the series palette (Tableau 10). */
void prg_chart_color(int i, uint8_t rgb[3]);

/* ---- resampling ------------------------------------------------------ */
/* The filters of PIL's resize, shared by prg_resize_u8 (interleaved images)
   and the data section's prg_planes_resize (planar, bicubic). */
typedef enum prg_filter { PRG_FILTER_BOX = 0, PRG_FILTER_BILINEAR = 1, PRG_FILTER_BICUBIC = 2 } prg_filter;

/* -- io: images (JPEG, PNG decoding, resizing) -- */
/* Image decoding and resizing, compiled out by PRG_NO_IMAGE.
   JPEG: baseline and progressive Huffman (SOF0/1/2), 8-bit, 1/3/4
   components, any integer sampling factors (4:4:4, 4:2:2, 4:2:0, 4:4:0 with
   libjpeg's default "fancy" triangle upsampling; other factors replicate),
   restart markers, Adobe APP14 (RGB, CMYK, YCCK; CMYK/YCCK converted to RGB
   as PIL does).  IDCT, colour conversion and upsampling follow libjpeg-turbo's
   defaults (islow), so pixels match djpeg/PIL within 1.  Arithmetic coding,
   lossless, 12-bit and DNL are PRG_ERR_UNSUPPORTED.
   PNG: every colour type and bit depth (1/2/4/8/16), palette + tRNS, Adam7,
   CRC-32 of every chunk and Adler-32 checked; 16-bit samples keep their high
   byte (as PIL does for RGB/RGBA); 1/2/4-bit gray is scaled to 0..255.
   Output is 8-bit interleaved [h][w][c]: c = 1 gray, 2 gray+alpha, 3 RGB,
   4 RGBA.  channels = 0 keeps the file's own (JPEG: 1 or 3; PNG: 1..4);
   1..4 converts (RGB->gray = (19595 R + 38470 G + 7471 B + 32768) >> 16 as
   PIL's convert("L"), except JPEG YCbCr->gray which keeps Y as libjpeg does;
   alpha is dropped, or added as 255).
   Defects that libjpeg (djpeg) or PIL decode through are decoded the same
   way and reported in img->warnings (PRG_IMAGE_WARN_* bits below); with
   PRG_DECODE_STRICT they are refused instead.  Other corrupt or truncated
   data (a wrong restart marker, a cut header or table, a bad CRC before the
   image data, PNG image data that does not inflate to the image) is refused with PRG_ERR_FORMAT and a message naming
   the file and byte offset or marker.
   Images of more than PRG_IMAGE_MAX_PIXELS pixels are refused. */
#ifndef PRG_IMAGE_MAX_PIXELS /* also the PGM/PPM reader's limit, with or without PRG_NO_IMAGE */
#define PRG_IMAGE_MAX_PIXELS (1u << 26) /* 67,108,864 = 8192 x 8192 */
#endif
#ifndef PRG_NO_IMAGE

typedef struct prg_image {
    int h, w, c;       /* rows, columns, channels (the (h, w) order of every size in the API) */
    uint8_t *data;     /* [h][w][c], prg_alloc'd; prg_image_free releases it */
    unsigned warnings; /* after a decode: PRG_IMAGE_WARN_* of what was tolerated, 0 = a clean file */
    int src_c;         /* after a decode: the file's own channel count (what channels = 0 gives) */
} prg_image;
void prg_image_free(prg_image *img);   /* frees data and zeroes the struct */
/* Allocates an image (data uninitialised, warnings 0); PRG_ERR_ARG on bad sizes. */
prg_result prg_image_alloc(prg_image *img, int h, int w, int c);
/* Converts img to channels (1..4) as the decoders convert (RGB -> gray by
   PIL's weights, gray repeated into R, G, B, alpha dropped or added as 255):
   in place when it has fewer channels, else into a new buffer.  The same
   pixels as decoding with those channels, except JPEG YCbCr -> gray (the
   decoder keeps Y).  Decoding at the file's own channels, cropping, then
   converting keeps the peak memory of a large image at its own size. */
prg_result prg_image_convert(prg_image *img, int channels);

/* What a lenient decode accepted (img->warnings), each as libjpeg-turbo's
   djpeg or PIL decodes it, so that the pixels are theirs. */
#define PRG_IMAGE_WARN_JUNK 0x01u        /* JPEG: extraneous bytes before a marker (skipped, as libjpeg) */
#define PRG_IMAGE_WARN_STD_HUFFMAN 0x02u /* JPEG without DHT (Motion-JPEG): the standard tables of the
                                            JPEG spec, Annex K, as libjpeg */
#define PRG_IMAGE_WARN_SHORT_DATA 0x04u  /* JPEG entropy data ends early: as libjpeg, the block where it
                                            ran out is read with zero bits, later blocks of the scan (or
                                            of the restart interval) stay zero (gray), missing scans add
                                            nothing.  (A progressive file cut so: libjpeg also smooths
                                            blocks whose low coefficients are incomplete, prg.h does not,
                                            so pixels differ from djpeg by a few levels) */
#define PRG_IMAGE_WARN_NO_END 0x08u      /* the file ends without EOI (JPEG, after a scan) or IEND (PNG,
                                            after complete image data) */
#define PRG_IMAGE_WARN_BAD_LENGTH 0x10u  /* JPEG APPn/COM segment with a length field below 2: read as
                                            empty, as libjpeg */
#define PRG_IMAGE_WARN_CRC 0x20u         /* PNG CRC mismatch in IDAT or after the image data (PIL checks
                                            only the chunks before the first IDAT) */
#define PRG_IMAGE_WARN_BAD_DATA 0x40u    /* corrupt JPEG entropy data decoded as libjpeg does: an invalid
                                            Huffman code drops 17 bits and reads as symbol 0; a coefficient
                                            past the end of its block or band is stored at that index (63
                                            past the block) */
/* Decode flags. */
#define PRG_DECODE_STRICT 0x01u /* refuse every PRG_IMAGE_WARN_* defect (PRG_ERR_FORMAT, saying which) */

/* The text of one PRG_IMAGE_WARN_* bit ("" for none or an unknown bit). */
const char *prg_image_warning_str(unsigned bit);
/* Writes the texts of all bits in warnings, joined by "; ", into buf
   (always terminated, cut to size); returns buf. */
char *prg_image_warnings_format(unsigned warnings, char *buf, size_t size);

/* Decoders: name is used only in error messages (NULL = "<memory>").
   On failure *img is zeroed and nothing is leaked.  These decode leniently
   (flags 0); img->warnings says what was tolerated. */
prg_result prg_jpeg_decode(prg_image *img, const uint8_t *buf, size_t len, int channels, const char *name);
prg_result prg_png_decode(prg_image *img, const uint8_t *buf, size_t len, int channels, const char *name);
/* Picks the decoder by magic, whatever the name: JPEG (FF D8 FF) or PNG. */
prg_result prg_image_decode(prg_image *img, const uint8_t *buf, size_t len, int channels, const char *name);
/* Reads a file (prg_file_read) and decodes it: JPEG, PNG, or binary PGM/PPM
   (P5/P6, through prg_pnm_read).  One ImageNet "JPEG" is really a PNG and a
   few are CMYK: both load. */
prg_result prg_image_load(prg_image *img, const char *path, int channels);
/* The same with flags (PRG_DECODE_STRICT). */
prg_result prg_image_decode_flags(prg_image *img, const uint8_t *buf, size_t len, int channels, unsigned flags,
                                  const char *name);
prg_result prg_image_load_flags(prg_image *img, const char *path, int channels, unsigned flags);

/* Baseline JPEG encoder (SOF0, Huffman coding with the standard tables of
   T.81 Annex K, JFIF APP0).  quality 1..100 scales the Annex K quantisation
   tables as libjpeg's jpeg_set_quality does (q < 50: 5000 / q percent, else
   200 - 2 q; entries rounded and clamped to 1..255).  c = 1 writes a grey
   one-component file; c = 3 converts RGB to YCbCr with libjpeg's fixed-point
   constants and keeps chroma at full resolution (PRG_JPEG_444) or averages it
   over 2x2 (PRG_JPEG_420, libjpeg's and PIL's default).  Edges are
   replicated to whole blocks; luminance blocks of a 4:2:0 MCU that lie
   wholly outside the image are libjpeg's dummy blocks (previous DC, no AC).  The forward DCT is libjpeg's default integer
   "islow" and quantisation rounds as libjpeg, so the entropy-coded data
   equals PIL's / cjpeg's for the same tables and subsampling (the headers
   differ: no JFIF density, no optimised tables). */
typedef enum prg_jpeg_subsample { PRG_JPEG_444 = 0, PRG_JPEG_420 = 1 } prg_jpeg_subsample;
/* The two quantisation tables (luminance, chrominance), natural order. */
void prg_jpeg_quant_tables(uint16_t q[2][64], int quality);
/* Bytes that always suffice for the file / the encoder's scratch. */
size_t prg_jpeg_encode_bound(int h, int w, int c);
size_t prg_jpeg_encode_workspace(int h, int w, int c);
/* Into a caller buffer of cap >= prg_jpeg_encode_bound() bytes; work:
   prg_jpeg_encode_workspace() bytes, or NULL to allocate here. */
prg_result prg_jpeg_encode_to(uint8_t *out, size_t cap, size_t *out_len, const uint8_t *pixels /* [h][w][c] */,
                              int h, int w, int c, int quality, prg_jpeg_subsample subsample, void *work);
/* *out from prg_alloc (the caller frees it with prg_free). */
prg_result prg_jpeg_encode(uint8_t **out, size_t *out_len, const uint8_t *pixels /* [h][w][c] */, int h, int w,
                           int c, int quality, prg_jpeg_subsample subsample);

/* Resizing with PIL's ImagingResample semantics (Image.resize without a box
   and reducing_gap=None): separable, horizontal pass first, each pass
   rounded to 8 bits, 22-bit fixed-point weights; when downscaling the filter
   support is widened by the scale factor (antialiasing).  BICUBIC uses
   a = -0.5; BOX averages the covered source pixels. */
prg_result prg_resize_u8(uint8_t *dst /* [dh][dw][c] */, int dh, int dw,
                         const uint8_t *src /* [sh][sw][c] */, int sh, int sw, int c, prg_filter filter);
/* dst is allocated (any previous content of *dst is not freed). */
prg_result prg_image_resize(prg_image *dst, const prg_image *src, int h, int w, prg_filter filter);
/* torchvision Resize(size) on a PIL image: shorter side -> size, longer side
   -> floor(size * long / short), computed in 64 bits: PRG_ERR_ARG when the
   result has more than PRG_IMAGE_MAX_PIXELS pixels. */
prg_result prg_image_resize_short(prg_image *dst, const prg_image *src, int size, prg_filter filter);
prg_result prg_image_crop(prg_image *dst, const prg_image *src, int y, int x, int h, int w);
/* torchvision CenterCrop: top = round((H - h) / 2), left = round((W - w) / 2),
   Python rounding (half to even); needs w <= W and h <= H. */
prg_result prg_image_center_crop(prg_image *dst, const prg_image *src, int h, int w);
/* The reference's evaluation transform: Resize(int(size * 256 / 224),
   bicubic) then CenterCrop(size); size 64 -> 73 -> 64. */
prg_result prg_image_eval_transform(prg_image *dst, const prg_image *src, int size);
/* [h][w][c] -> [c][h][w] (the layout of the .npz datasets and the model). */
void prg_image_to_planar(uint8_t *dst /* [c][h][w] */, const prg_image *src);
#endif /* PRG_NO_IMAGE */

/* >>data ================================================================ */
/* In-memory datasets, augmentation, normalisation, a prefetching iterator. */

/* ---- datasets -------------------------------------------------------- */
/* An in-memory uint8 image dataset:

       prg_dataset ds;                    // MNIST, CIFAR, downsampled ImageNet
       if (prg_dataset_load(&ds, "mnist/train-images-idx3-ubyte.gz") != PRG_OK)
           fprintf(stderr, "%s\n", prg_last_error());
       // ds.images [ds.n][ds.c][ds.h][ds.w] uint8, ds.labels [ds.n]
       prg_dataset_free(&ds);

   images and labels come from prg_alloc; prg_dataset_free releases them
   and zeroes the struct. */
typedef struct prg_dataset {
    int n, c, h, w, num_classes;
    uint8_t *images;   /* [n][c][h][w] */
    int32_t *labels;   /* [n], each in [0, num_classes) */
    char **class_names; /* [num_classes] names in label order, or NULL when the files name no
                           classes; one prg_alloc block (set with prg_dataset_set_class_names) */
} prg_dataset;
void       prg_dataset_free(prg_dataset *ds);
prg_result prg_dataset_alloc(prg_dataset *ds, int n, int c, int h, int w, int num_classes);
/* Copies n class names (label order) into ds and sets num_classes = n;
   PRG_ERR_ARG (nothing changed) when a name is NULL or a label is >= n
   (the message gives the first such index).  names NULL, n 0: removes them. */
prg_result prg_dataset_set_class_names(prg_dataset *ds, const char *const *names, int n);
/* MNIST / Fashion-MNIST IDX files (raw or .gz): images u8 [N][rows][cols]
   (magic 0x00000803), labels u8 [N] (0x00000801), 10 classes. */
prg_result prg_dataset_load_idx(prg_dataset *ds, const char *images_path, const char *labels_path);
/* CIFAR-10 binary: records <label><3072 pixels R,G,B planes>, 10 classes
   (class_names airplane, automobile, ..., truck); the files are
   concatenated in order (e.g. data_batch_1..5.bin). */
prg_result prg_dataset_load_cifar10(prg_dataset *ds, const char *const *paths, int npaths);
/* CIFAR-100 binary: records <coarse><fine><3072>; coarse != 0 picks the 20
   superclasses, else the 100 classes. */
prg_result prg_dataset_load_cifar100(prg_dataset *ds, const char *const *paths, int npaths, int coarse);
/* .npz with 'data' and 'labels' (any integer type).  Downsampled-ImageNet
   layout: data u8 [N][3*s*s] (R, G, B planes; s = 64, 32, 16 or 8) with
   labels 1..1000, stored 0-based, 1000 classes.  Or data u8 [N][C][H][W]
   with labels 0-based, num_classes = largest label + 1 (at most
   PRG_MAX_CLASSES: a larger label is refused, naming file and index).  An
   optional 'classes' (numpy strings [K], np.array(names), or u8 [K][L]: row
   k the UTF-8 name of class k, NUL-padded, as examples/prepare writes it)
   sets num_classes = K and class_names, and a label past K is
   PRG_ERR_FORMAT naming the index. */
prg_result prg_dataset_load_npz(prg_dataset *ds, const char *path);
/* A split from a dataset's usual directory: CIFAR-10 (data_batch_1..5.bin /
   test_batch.bin), CIFAR-100 (train.bin / test.bin, fine labels), MNIST and
   Fashion-MNIST ({train,t10k}-{images-idx3,labels-idx1}-ubyte, raw or .gz).
   train != 0 picks the training split. */
prg_result prg_dataset_load_dir(prg_dataset *ds, const char *dir, int train);
/* Picks the loader from the magic and the name: IDX (raw or .gz, the other
   file found by swapping images<->labels, idx3<->idx1 in the name), .npz,
   CIFAR-10/100 binary (by name: data_batch*, test_batch* / train.bin,
   test.bin under cifar-100*, else by record size). */
prg_result prg_dataset_load(prg_dataset *ds, const char *path);

/* ---- augmentation ---------------------------------------------------- */

/* Images here are uint8 planes [C][H][W].  The augmentations follow timm /
   torchvision on PIL images exactly (same arithmetic, same rounding), with
   prg_rng in place of Python's random. */

#define PRG_DATA_MAX_CHANNELS 4

typedef enum prg_crop {
    PRG_CROP_NONE = 0,    /* the image as it is (its size must be the output size) */
    PRG_CROP_RANDOM = 1,  /* RandomCrop(out, padding=crop_padding), zero fill */
    PRG_CROP_RESIZED = 2, /* RandomResizedCrop(out, scale, ratio), bicubic */
    PRG_CROP_CENTER = 3   /* Resize(shorter side = resize, bicubic) + CenterCrop(out) */
} prg_crop;

typedef struct prg_transform {
    int out_h, out_w;          /* output size */
    int border;                /* zero pixels added on each side of every source image
                                  first, in uint8 (2: MNIST 28x28 -> 32x32) */
    prg_crop crop;             /* PRG_CROP_* */
    int crop_padding;          /* PRG_CROP_RANDOM: 4 */
    float scale_min, scale_max;  /* PRG_CROP_RESIZED: area fraction, (0.08, 1) */
    float ratio_min, ratio_max;  /* PRG_CROP_RESIZED: aspect w/h, (3/4, 4/3) */
    int resize;                /* PRG_CROP_CENTER: shorter side first resized to this; 0 = no */
    float hflip;               /* probability of a left-right flip (0.5) */
    int ra_ops;                /* RandAugment ops per image (2); 0 = off */
    float ra_magnitude;        /* 9 (of 10) */
    float ra_magnitude_std;    /* 0.5: magnitude ~ N(9, 0.5) clipped to [0, 10] */
    float ra_prob;             /* each chosen op is applied with this probability (0.5) */
    float erase_prob;          /* random erasing ('pixel' mode) probability (0.25); 0 = off */
    float erase_min_area, erase_max_area; /* fraction of the image, (0.02, 1/3) */
    float erase_min_aspect;    /* 0.3; log-aspect uniform in [log a, log 1/a] */
    float mean[PRG_DATA_MAX_CHANNELS], std[PRG_DATA_MAX_CHANNELS]; /* (x/255 - mean)/std */
} prg_transform;

/* Fills t with the reference pipeline (docs/METHOD.md C.2) for images of `channels`
   channels and the given output size.  train = 1: crop (out <= 32: RandomCrop
   padding 4, else RandomResizedCrop), flip 0.5, RandAugment rand-m9-mstd0.5-inc1,
   normalise, random erasing 0.25 'pixel'.  train = 0: out >= 64: resize the
   shorter side to floor(out / 0.875) (73 for 64) + center crop; smaller: none.
   mean/std: ImageNet for 3 channels; for other channel counts they are left
   unset (NaN) and must be given (MNIST: 0.1307 / 0.3081). */
prg_result prg_transform_init(prg_transform *t, int train, int channels, int out_h, int out_w);
/* Checks t against source images of c x h x w; says what is wrong. */
prg_result prg_transform_check(const prg_transform *t, int c, int h, int w);
/* Bytes of workspace prg_transform_apply needs for c x h x w sources. */
size_t prg_transform_workspace(const prg_transform *t, int c, int h, int w);
/* One image: crop -> flip -> RandAugment (uint8) -> normalise -> erase (float).
   Deterministic given the rng state.  work: prg_transform_workspace() bytes. */
prg_result prg_transform_apply(float *dst /* [C][out_h][out_w] */, const prg_transform *t,
                               const uint8_t *src /* [C][H][W] */, int c, int h, int w,
                               prg_rng *rng, void *work);

/* A batch: image b is ds->images[index[b]] transformed with its own rng stream
   prg_data_rng(seed, epoch, index[b]); split over the pool by images, so the
   result is bit-identical for any thread count.  y may be NULL. */
prg_result prg_batch_build(float *x /* [B][C][out_h][out_w] */, int32_t *y /* [B] */,
                           const prg_dataset *ds, const prg_transform *t,
                           const int *index /* [B] */, int batch, uint64_t seed, uint64_t epoch);
void prg_data_rng(prg_rng *r, uint64_t seed, uint64_t epoch, int index);

/* Prefetching iterator: shuffled epochs, batches built one ahead on a thread of
   its own (double buffering) while the caller trains on the current one. */
typedef struct prg_loader prg_loader;
typedef struct prg_loader_config {
    int batch;            /* images per batch */
    int shuffle;          /* new seeded permutation every epoch (1) */
    int drop_last;        /* drop the last incomplete batch of an epoch (0) */
    int prefetch;         /* 1: build ahead on a background thread (1); 0 or
                             PRG_NO_THREADS: build inside prg_loader_next */
    uint64_t seed;
    uint64_t start_epoch; /* first epoch, to resume (0) */
    uint64_t start_step;  /* first batch, counted from the start of start_epoch (may pass
                             its end): resumes a run at a training step (0) */
    int part, parts;      /* data parallelism: build only part `part` of `parts` (0, 1; 0 parts = 1) of
                             every batch: its contiguous images [offset, offset + size),
                             size = total / parts, + 1 for the first total % parts parts */
} prg_loader_config;
typedef struct prg_batch {
    const float *x;       /* [size][C][out_h][out_w], valid until the next call */
    const int32_t *y;     /* [size] labels */
    const int *index;     /* [size] dataset indices */
    int size;             /* images in this batch (this part's) */
    int step;             /* batch number within the epoch */
    int last;             /* 1 on the last batch of the epoch */
    uint64_t epoch;
    int total, offset;    /* the whole batch's images, this part's first (parts = 1: size, 0) */
} prg_batch;
void prg_loader_config_default(prg_loader_config *cfg, int batch, uint64_t seed);
/* ds must stay valid and unchanged until prg_loader_free (*t is copied).
   The background thread builds serially (it never takes the pool from the
   training loop); with prefetch = 0 batches are built on the pool in next(). */
prg_result prg_loader_create(prg_loader **ld, const prg_dataset *ds, const prg_transform *t,
                             const prg_loader_config *cfg);
prg_result prg_loader_next(prg_loader *ld, prg_batch *b);
int        prg_loader_batches_per_epoch(const prg_loader *ld);
void       prg_loader_free(prg_loader *ld);   /* stops and joins the thread */

/* The single operations, PIL semantics (dst and src must not overlap). */
void prg_planes_flip(uint8_t *img /* [C][H][W] */, int c, int h, int w); /* in place */
/* dst = the oh x ow window at (top, left) of src; outside src: 0 */
void prg_planes_crop(uint8_t *dst /* [C][oh][ow] */, const uint8_t *src /* [C][H][W] */,
                    int top, int left, int oh, int ow, int c, int h, int w);
/* PIL Image.resize(BICUBIC): separable a = -0.5 cubic, support scaled when
   downscaling (antialias), 22-bit fixed point, horizontal pass first.
   work: prg_planes_resize_workspace() bytes, or NULL to allocate here.
   PRG_ERR_ARG when the source or the output has more than
   PRG_IMAGE_MAX_PIXELS pixels.  A caller fitting an image of any aspect
   ratio computes the output size in 64 bits and checks it against that
   limit before it sizes a buffer. */
size_t prg_planes_resize_workspace(int c, int h, int w, int oh, int ow);
prg_result prg_planes_resize(uint8_t *dst /* [C][oh][ow] */, int oh, int ow,
                            const uint8_t *src /* [C][H][W] */, int c, int h, int w, void *work);
/* PIL Image.transform(AFFINE, m, BICUBIC, fillcolor=fill): the source point of
   output pixel centre (x+.5, y+.5) is (m0 x + m1 y + m2, m3 x + m4 y + m5). */
void prg_planes_affine(uint8_t *dst, const uint8_t *src, const double m[6],
                      const uint8_t *fill /* [C] */, int c, int h, int w);
/* PIL Image.rotate(degrees counter-clockwise, BICUBIC, fillcolor=fill) */
void prg_planes_rotate(uint8_t *dst, const uint8_t *src, double degrees,
                      const uint8_t *fill /* [C] */, int c, int h, int w);

/* The 15 ops of timm's rand-*-inc1 RandAugment, in timm's order. */
enum {
    PRG_RA_AUTOCONTRAST, PRG_RA_EQUALIZE, PRG_RA_INVERT, PRG_RA_ROTATE, PRG_RA_POSTERIZE,
    PRG_RA_SOLARIZE, PRG_RA_SOLARIZE_ADD, PRG_RA_COLOR, PRG_RA_CONTRAST, PRG_RA_BRIGHTNESS,
    PRG_RA_SHARPNESS, PRG_RA_SHEAR_X, PRG_RA_SHEAR_Y, PRG_RA_TRANSLATE_X, PRG_RA_TRANSLATE_Y,
    PRG_RA_NUM_OPS
};
const char *prg_randaug_op_name(int op);   /* timm's name, e.g. "PosterizeIncreasing" */
/* One op at level in [0, 10] (timm's increasing mapping); negate = 1 takes the
   negative sign where timm draws one.  c must be 1 or 3. */
void prg_randaug_op_apply(uint8_t *dst, const uint8_t *src, int op, double level, int negate,
                          const uint8_t *fill /* [C] */, int c, int h, int w);
/* (x / 255 - mean) / std in float, as ToTensor + Normalize */
void prg_planes_normalize(float *dst /* [C][H][W] */, const uint8_t *src /* [C][H][W] */,
                         const float *mean /* [C] */, const float *std /* [C] */, int c, int h, int w);
/* timm RandomErasing(p, mode='pixel', 1 box, 10 attempts) on a normalised image;
   returns the erased area in pixels (0 when nothing was erased). */
int prg_planes_erase(float *img /* [C][H][W] */, const prg_transform *t, prg_rng *rng,
                    int c, int h, int w);

/* ---- corruptions (ImageNet-C / CIFAR-10-C) ---------------------------- */
/* The 15 corruptions of Hendrycks and Dietterich, "Benchmarking Neural
   Network Robustness to Common Corruptions and Perturbations" (ICLR 2019),
   at severities 1..5 with that paper's parameters: the CIFAR-10-C set for
   images of at most 32x32 (MNIST's 28x28 included), the ImageNet-C set for
   larger ones (its pixel-sized parameters as given for 224x224; those given
   relative to the image, elastic_transform's and fog's map, scale with it).
   Images are uint8 planes [C][H][W], C = 1 (grey) or 3 (RGB); every random
   draw comes from rng, so a (seed, stream) reproduces the corrupted set.
   Float results are truncated to uint8 as the benchmark's np.uint8() does.
   Written from the paper's formulas; where the original uses outside
   material the equivalents here are our own:
   - frost: the benchmark blends crops of six frost photographs; here the
     overlay is procedural (a rough plasma fractal plus randomly placed,
     slightly blurred ice needles, tinted blue-white), blended with the
     paper's weights;
   - motion_blur and snow's streaks: ImageMagick's motion blur (through Wand)
     is replaced by our equivalent, a one-sided Gaussian streak of
     2 ceil(radius) + 1 taps along the angle, edge pixels replicated,
     rounded to 8 bits;
   - cv2 / scipy / skimage operations (Gaussian filters, the disk kernel,
     zoom, affine warp, map_coordinates) are re-implemented with their
     border modes and coordinate conventions;
   - brightness works in HSV as skimage (V + c, hue and saturation kept);
     grey images add c to the value;
   - jpeg_compression encodes with prg_jpeg_encode (4:2:0 for colour, as
     PIL's save(quality = q)) and decodes with prg_jpeg_decode. */
enum {
    PRG_CORRUPT_GAUSSIAN_NOISE, PRG_CORRUPT_SHOT_NOISE, PRG_CORRUPT_IMPULSE_NOISE, PRG_CORRUPT_DEFOCUS_BLUR,
    PRG_CORRUPT_GLASS_BLUR, PRG_CORRUPT_MOTION_BLUR, PRG_CORRUPT_ZOOM_BLUR, PRG_CORRUPT_SNOW, PRG_CORRUPT_FROST,
    PRG_CORRUPT_FOG, PRG_CORRUPT_BRIGHTNESS, PRG_CORRUPT_CONTRAST, PRG_CORRUPT_ELASTIC_TRANSFORM,
    PRG_CORRUPT_PIXELATE, PRG_CORRUPT_JPEG_COMPRESSION, PRG_CORRUPT_COUNT
};
/* "gaussian_noise" ... "jpeg_compression" (the benchmark's names), "?" if out of range. */
const char *prg_corruption_name(int corruption);
int prg_corruption_find(const char *name);   /* PRG_CORRUPT_*, or -1 */
/* Bytes of workspace prg_corrupt needs for c x h x w images. */
size_t prg_corrupt_workspace(int c, int h, int w);
/* dst = corruption at severity 1..5 of src (dst and src must not overlap).
   work: prg_corrupt_workspace() bytes, or NULL to allocate here
   (jpeg_compression's decoder allocates its image either way).
   pixelate and jpeg_compression need the image code (PRG_ERR_UNSUPPORTED
   under PRG_NO_IMAGE). */
prg_result prg_corrupt(uint8_t *dst /* [C][H][W] */, const uint8_t *src /* [C][H][W] */, int c, int h, int w,
                       int corruption, int severity, prg_rng *rng, void *work);

/* ---- robustness and OOD metrics -------------------------------------- */
/* AUROC of a detector whose score is higher for in-distribution samples:
   P(s_in > s_out) + 0.5 P(s_in = s_out) over all pairs, exact (midranks of
   one sort, so ties count one half).  NaN scores are refused. */
prg_result prg_auroc(double *auroc, const float *s_in, int n_in, const float *s_out, int n_out);
/* False-positive rate at a true-positive rate (0.95 for "FPR95"): the
   threshold t is the highest score with #(s_in >= t) >= tpr n_in, and the
   result is #(s_out >= t) / n_out (ties at t count as detected). */
prg_result prg_fpr_at_tpr(double *fpr, const float *s_in, int n_in, const float *s_out, int n_out, double tpr);
/* Corruption error of the paper: CE_c = sum_s err[c][s] / sum_s base[c][s]
   over the 5 severities (errors as fractions); returns mCE = mean_c CE_c
   and fills ce[c] when not NULL; NaN when a baseline sum is 0. */
double prg_mce(double *ce /* [n] or NULL */, const double *err /* [n][5] */, const double *base /* [n][5] */, int n);


#ifdef __cplusplus
}
#endif
#endif /* PRG_H */

/* ======================================================================= */
/*                              IMPLEMENTATION                             */
/* ======================================================================= */
#ifdef PRG_IMPLEMENTATION
#ifndef PRG_IMPLEMENTATION_DONE
#define PRG_IMPLEMENTATION_DONE

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(PRG_MALLOC) != defined(PRG_FREE)
#error "define PRG_MALLOC and PRG_FREE together"
#endif
#ifndef PRG_MALLOC
#define PRG_MALLOC(n) malloc(n)
#define PRG_FREE(p) free(p)
#define PRG__CALLOC(n) calloc(1, n) /* only with the default allocator: large blocks come as untouched zero pages */
#endif
#ifndef PRG_ASSERT
#include <assert.h>
#define PRG_ASSERT(x) assert(x)
#endif
#ifndef PRG_WINO_KEEP_MB
#define PRG_WINO_KEEP_MB 256
#endif
#ifndef PRG_MAX_T_SPAN
#define PRG_MAX_T_SPAN 1000
#endif
#ifndef PRG_MAX_CLASSES
#define PRG_MAX_CLASSES 32768
#endif
#ifndef PRG_MAX_FORWARD_MB
#define PRG_MAX_FORWARD_MB 4096
#endif
#ifndef PRG_MAX_THREADS
#define PRG_MAX_THREADS 256
#endif

/* Thread-local storage (prg_last_error's message, the pool's "inside a task"
   flag): the language's keyword where there is one, else the compiler's.
   tcc has none (and says C11 with -std=c11 without _Thread_local); there and
   on unknown compilers PRG_THREAD_LOCAL is empty and PRG_HAS_TLS is 0: see
   CONFIGURATION at the top.  Define PRG_THREAD_LOCAL (empty or a keyword)
   before including to choose. */
#ifndef PRG_THREAD_LOCAL
#if defined(_MSC_VER)
#define PRG_THREAD_LOCAL __declspec(thread)
#elif defined(__cplusplus) && __cplusplus >= 201103L
#define PRG_THREAD_LOCAL thread_local
#elif defined(__TINYC__)
#define PRG_THREAD_LOCAL
#define PRG_HAS_TLS 0
#elif !defined(__cplusplus) && defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#define PRG_THREAD_LOCAL _Thread_local
#elif defined(__GNUC__) || defined(__clang__) || defined(__INTEL_COMPILER) || defined(__SUNPRO_C)
#define PRG_THREAD_LOCAL __thread
#else
#define PRG_THREAD_LOCAL
#define PRG_HAS_TLS 0
#endif
#endif
#ifndef PRG_HAS_TLS
#define PRG_HAS_TLS 1
#endif

#if defined(__GNUC__) || defined(__clang__)
#define PRG_RESTRICT __restrict__
#define PRG_UNUSED __attribute__((unused))
#else
#define PRG_RESTRICT
#define PRG_UNUSED
#endif
/* Short copy loops that gcc would otherwise turn into memcpy/memset calls
   (a call per run of a few floats costs more than the copy). */
#if defined(__GNUC__) && !defined(__clang__)
#define PRG_INLINE_COPIES __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define PRG_INLINE_COPIES
#endif

/* PRG_NO_SIMD: no intrinsics at all; the CPU table is the scalar one. */
#if !defined(PRG_NO_SIMD) && (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define PRG__X86 1
#include <immintrin.h>
#endif
#if !defined(PRG_NO_SIMD) && defined(__aarch64__) && defined(__ARM_NEON)
#define PRG__NEON 1
#include <arm_neon.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* >>base ================================================================ */

const char *prg_result_str(prg_result r) {
    switch (r) {
    case PRG_OK: return "ok";
    case PRG_ERR_NOMEM: return "out of memory";
    case PRG_ERR_ARG: return "invalid argument";
    case PRG_ERR_UNSUPPORTED: return "not supported";
    case PRG_ERR_STATE: return "call out of order";
    case PRG_ERR_IO: return "i/o error";
    case PRG_ERR_FORMAT: return "bad file format";
    case PRG_ERR_SHAPE: return "shape mismatch";
    case PRG_ERR_CONFIG: return "invalid configuration";
    case PRG_ERR_NUMERIC: return "non-finite value";
    }
    return "unknown error";
}

static PRG_THREAD_LOCAL char prg__error_msg[512];

const char *prg_last_error(void) { return prg__error_msg; }

/* Records a message for prg_last_error() and returns r, so that failures
   read `return prg__fail(PRG_ERR_IO, "cannot open %s", path);`.  The text is
   formatted into a local buffer first: an argument may be prg_last_error()
   itself (to add context to a nested failure, use prg__fail_ctx). */
#if defined(__GNUC__) || defined(__clang__)
__attribute__((format(printf, 2, 3)))
#endif
static prg_result prg__fail(prg_result r, const char *fmt, ...) {
    char msg[sizeof prg__error_msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    memcpy(prg__error_msg, msg, sizeof msg);
    return r;
}

/* Puts context in front of the current message (a nested call's failure):
   "<context>: <cause>", the cause said once.  When the cause already starts
   with the context it is kept as it is; when it starts with the context's
   first field (e.g. the same file name, "x.png: ..."), that field is not
   repeated.  Returns r. */
#if defined(__GNUC__) || defined(__clang__)
__attribute__((format(printf, 2, 3)))
#endif
static PRG_UNUSED prg_result prg__fail_ctx(prg_result r, const char *fmt, ...) {
    char ctx[sizeof prg__error_msg], cause[sizeof prg__error_msg];
    const char *c = cause, *colon;
    size_t n;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx, sizeof ctx, fmt, ap);
    va_end(ap);
    memcpy(cause, prg__error_msg, sizeof cause);
    cause[sizeof cause - 1] = 0;
    n = strlen(ctx);
    if (strncmp(cause, ctx, n) == 0) return r; /* already says it */
    colon = strstr(ctx, ": ");
    if (colon) {
        size_t h = (size_t)(colon - ctx) + 2; /* "x.png: " */
        if (strncmp(cause, ctx, h) == 0) c = cause + h;
    }
    {   /* ctx ": " cause, cut to the buffer (the cause's end is lost first) */
        size_t cap = sizeof prg__error_msg - 1, k = n < cap ? n : cap, m;
        memcpy(prg__error_msg, ctx, k);
        if (*c && k + 2 <= cap) {
            memcpy(prg__error_msg + k, ": ", 2);
            k += 2;
            m = strlen(c);
            if (m > cap - k) m = cap - k;
            memcpy(prg__error_msg + k, c, m);
            k += m;
        }
        prg__error_msg[k] = 0;
    }
    return r;
}

static uint64_t prg__splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void prg_rng_seed(prg_rng *r, uint64_t seed, uint64_t stream) {
    uint64_t x = seed ^ (stream * 0xD1B54A32D192ED03ull);
    int i;
    (void)prg__splitmix64(&x);
    x ^= stream;
    for (i = 0; i < 4; i++) r->s[i] = prg__splitmix64(&x);
}

static uint64_t prg__rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t prg_rng_u64(prg_rng *r) {
    uint64_t *s = r->s;
    uint64_t out = prg__rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = prg__rotl(s[3], 45);
    return out;
}

float prg_rng_uniform(prg_rng *r) { return (float)(prg_rng_u64(r) >> 40) * (1.0f / 16777216.0f); }

float prg_rng_normal(prg_rng *r) {
    /* Box-Muller on two fresh uniforms; u1 in (0, 1] so the log is finite. */
    double u1 = ((double)(prg_rng_u64(r) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)(prg_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

uint32_t prg_rng_below(prg_rng *r, uint32_t n) {
    /* Lemire's multiply-shift with rejection: exactly uniform. */
    uint64_t m = (uint64_t)(uint32_t)(prg_rng_u64(r) >> 32) * n;
    uint32_t lo = (uint32_t)m;
    if (lo < n) {
        uint32_t thresh = (uint32_t)(0u - n) % n;
        while (lo < thresh) {
            m = (uint64_t)(uint32_t)(prg_rng_u64(r) >> 32) * n;
            lo = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

/* The 64-byte aligned block inside raw (bytes + 64 + sizeof(void *) long),
   with the raw pointer kept just below it for prg_free. */
static void *prg__align_block(unsigned char *raw) {
    unsigned char *p;
    if (!raw) return NULL;
    p = (unsigned char *)(((uintptr_t)(raw + sizeof(void *)) + 63) & ~(uintptr_t)63);
    memcpy(p - sizeof(void *), &raw, sizeof(void *));
    return p;
}

void *prg_alloc(size_t bytes) {
    if (bytes > SIZE_MAX - 64 - sizeof(void *)) return NULL;
    return prg__align_block((unsigned char *)PRG_MALLOC(bytes + 64 + sizeof(void *)));
}

/* prg_alloc, zero-filled.  With the default allocator through calloc, whose
   large blocks are fresh zero pages: memory that is never written (a U-Net's
   gradient block in a program that only runs inference) is never resident. */
static void *prg__alloc_zero(size_t bytes) {
#ifdef PRG__CALLOC
    if (bytes > SIZE_MAX - 64 - sizeof(void *)) return NULL;
    return prg__align_block((unsigned char *)PRG__CALLOC(bytes + 64 + sizeof(void *)));
#else
    void *p = prg_alloc(bytes);
    if (p) memset(p, 0, bytes);
    return p;
#endif
}

void prg_free(void *p) {
    void *raw;
    if (!p) return;
    memcpy(&raw, (unsigned char *)p - sizeof(void *), sizeof(void *));
    PRG_FREE(raw);
}

/* A scratch buffer that only grows (the GEMM's packing buffers). */
typedef struct prg__scratch { float *p; size_t n; } prg__scratch;

static float *prg__scratch_get(prg__scratch *s, size_t n) {
    if (s->n < n) {
        prg_free(s->p);
        s->p = (float *)prg_alloc(n * sizeof(float));
        s->n = s->p ? n : 0;
    }
    return s->p;
}

/* >>pool ================================================================ */

void prg_split_range(size_t n, size_t align, int ith, int nth, size_t *lo, size_t *hi) {
    size_t blocks, per, extra, b0, b1;
    if (!lo || !hi) return;
    if (nth < 1 || ith < 0 || ith >= nth) { /* no such thread: an empty part */
        *lo = *hi = 0;
        return;
    }
    if (align == 0) align = 1;
    blocks = (n + align - 1) / align;
    per = blocks / (size_t)nth;
    extra = blocks % (size_t)nth;
    b0 = (size_t)ith * per + ((size_t)ith < extra ? (size_t)ith : extra);
    b1 = b0 + per + ((size_t)ith < extra ? 1 : 0);
    *lo = b0 * align < n ? b0 * align : n;
    *hi = b1 * align < n ? b1 * align : n;
}

#ifdef PRG_NO_THREADS

static int prg__threads_wanted = 1;
void prg_set_num_threads(int n) { (void)n; }
int prg_get_num_threads(void) { return prg__threads_wanted; }
static int prg__parallel_width(void) { return 1; }
void prg_parallel(prg_task_fn fn, void *ctx) { fn(ctx, 0, 1); }

#else

#include <pthread.h>
#include <unistd.h>

static int prg__online_cpus(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    if (n > PRG_MAX_THREADS) n = PRG_MAX_THREADS;
    return (int)n;
}

typedef struct prg__pool {
    pthread_mutex_t lock;      /* guards every field below */
    pthread_cond_t wake;       /* workers wait here for a new generation */
    pthread_cond_t done;       /* the caller waits here for pending == 0 */
    pthread_mutex_t use;       /* held by the thread that runs a job */
    pthread_t threads[PRG_MAX_THREADS];
    int nworkers;              /* workers running (the caller is not one) */
    int wanted;                /* pool size requested, caller included; 0 = unset */
    unsigned long generation;  /* bumped for each job */
    int pending;               /* parts of the current job not yet run by a worker */
    unsigned long claimed[PRG_MAX_THREADS]; /* the last generation whose part i was taken */
    int sleepers;              /* workers blocked on `wake` */
    int caller_waiting;        /* the caller is blocked on `done` */
    int quit;
    prg_task_fn fn;
    void *ctx;
    int nth;
} prg__pool;

static prg__pool prg__the_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                                  PTHREAD_COND_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
                                  {0}, 0, 0, 0, 0, {0}, 0, 0, 0, NULL, NULL, 0};
static PRG_THREAD_LOCAL int prg__in_task = 0;

/* A worker's index and the job generation current when it was started (it
   must not take that job, which was run before it existed). */
typedef struct prg__worker_arg { int ith; unsigned long generation; } prg__worker_arg;
static prg__worker_arg prg__worker_args[PRG_MAX_THREADS];

/* Hand-offs between jobs.  Every field is written under `lock`; a thread
   that has just finished its part first polls `generation` (a worker) or
   `pending` (the caller) for a short while, about 160 microseconds (8192
   pauses on Zen 5), before it sleeps on its condition variable: the layers
   of a network start jobs back to back, and a futex sleep and wake-up per job
   cost more than many small jobs themselves.  (Measured on a tiny32
   fine-tuning step at batch 8: 2048 pauses left ~120 worker and ~290 caller
   sleeps per step, 8192 about 45 and 5, and the step ran ~4% faster.)  Idle
   workers sleep.  (Compilers without the __atomic
   builtins go straight to the condition variables.) */
#if defined(__GNUC__) || defined(__clang__)
#define PRG__POOL_SPINS 8192
#define PRG__ALOAD(x) __atomic_load_n(&(x), __ATOMIC_ACQUIRE)
#define PRG__ASTORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELEASE)
#if defined(PRG__X86)
#define PRG__PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define PRG__PAUSE() __asm__ __volatile__("yield")
#else
#define PRG__PAUSE() ((void)0)
#endif
#else
#define PRG__POOL_SPINS 0
#define PRG__ALOAD(x) (x)
#define PRG__ASTORE(x, v) ((x) = (v))
#define PRG__PAUSE() ((void)0)
#endif

static void *prg__worker_main(void *arg) {
    prg__pool *p = &prg__the_pool;
    int ith = ((prg__worker_arg *)arg)->ith;
    unsigned long seen = ((prg__worker_arg *)arg)->generation;
    prg__in_task = 1;
    for (;;) {
        int spin;
        for (spin = 0; spin < PRG__POOL_SPINS; spin++) {
            if (PRG__ALOAD(p->generation) != seen || PRG__ALOAD(p->quit)) break;
            PRG__PAUSE();
        }
        pthread_mutex_lock(&p->lock);
        while (p->generation == seen && !p->quit) {
            p->sleepers++;
            pthread_cond_wait(&p->wake, &p->lock);
            p->sleepers--;
        }
        if (p->quit) break;
        seen = p->generation;
        if (ith < p->nth && p->claimed[ith] != seen) { /* else the caller ran this part */
            prg_task_fn fn = p->fn;
            void *ctx = p->ctx;
            int nth = p->nth;
            PRG__ASTORE(p->claimed[ith], seen);
            pthread_mutex_unlock(&p->lock);
            fn(ctx, ith, nth);
            pthread_mutex_lock(&p->lock);
            PRG__ASTORE(p->pending, p->pending - 1);
            if (p->pending == 0 && p->caller_waiting) pthread_cond_signal(&p->done);
        }
        pthread_mutex_unlock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* Stops and joins every worker; called with `use` held. */
static void prg__pool_stop(prg__pool *p) {
    int i, n;
    pthread_mutex_lock(&p->lock);
    PRG__ASTORE(p->quit, 1);
    n = p->nworkers;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (i = 0; i < n; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_lock(&p->lock);
    p->nworkers = 0;
    PRG__ASTORE(p->quit, 0);
    pthread_mutex_unlock(&p->lock);
}

/* The counters of prg__share: chunks taken from each thread's share of the
   current job (one cache line each). */
#if defined(__GNUC__) || defined(__clang__)
#define PRG__LINE_ALIGNED __attribute__((aligned(64)))
#else
#define PRG__LINE_ALIGNED
#endif
static struct prg__share_slot { size_t next; char pad[64 - sizeof(size_t)]; }
    prg__share_slots[PRG_MAX_THREADS] PRG__LINE_ALIGNED;

static int prg__pool_wanted(prg__pool *p) {
    if (p->wanted == 0) {
        const char *env = getenv("PRG_NUM_THREADS");
        int n = env ? atoi(env) : 0;
        p->wanted = n > 0 ? (n < PRG_MAX_THREADS ? n : PRG_MAX_THREADS) : prg__online_cpus();
    }
    return p->wanted;
}

void prg_set_num_threads(int n) {
    prg__pool *p = &prg__the_pool;
    if (n <= 0) n = prg__online_cpus();
    if (n > PRG_MAX_THREADS) n = PRG_MAX_THREADS;
    pthread_mutex_lock(&p->use);
    if (p->nworkers != n - 1 && p->nworkers > 0) prg__pool_stop(p);
    p->wanted = n;
    pthread_mutex_unlock(&p->use);
}

int prg_get_num_threads(void) {
    prg__pool *p = &prg__the_pool;
    int n;
    pthread_mutex_lock(&p->use);
    n = prg__pool_wanted(p);
    pthread_mutex_unlock(&p->use);
    return n;
}

/* How many threads a prg_parallel call made now would most likely use: 1
   inside a task or while another thread runs a job (the call would then
   run serially), else the pool size.  Never blocks. */
static int prg__parallel_width(void) {
    prg__pool *p = &prg__the_pool;
    int n;
    if (prg__in_task || pthread_mutex_trylock(&p->use) != 0) return 1;
    n = prg__pool_wanted(p);
    pthread_mutex_unlock(&p->use);
    return n;
}

void prg_parallel(prg_task_fn fn, void *ctx) {
    prg__pool *p = &prg__the_pool;
    int nth, i;
    if (prg__in_task || pthread_mutex_trylock(&p->use) != 0) {
        fn(ctx, 0, 1);
        return;
    }
    nth = prg__pool_wanted(p);
    if (nth > 1 && p->nworkers < nth - 1) {
        /* Start the missing workers (lazily, on the first parallel job). */
        for (i = p->nworkers; i < nth - 1; i++) {
            prg__worker_args[i].ith = i + 1;
            prg__worker_args[i].generation = p->generation;
            if (pthread_create(&p->threads[i], NULL, prg__worker_main, &prg__worker_args[i]) != 0)
                break;
            pthread_mutex_lock(&p->lock);
            p->nworkers = i + 1;
            pthread_mutex_unlock(&p->lock);
        }
    }
    if (nth > p->nworkers + 1) nth = p->nworkers + 1;
    if (nth <= 1) {
        pthread_mutex_unlock(&p->use);
        prg__in_task = 1;
        fn(ctx, 0, 1);
        prg__in_task = 0;
        return;
    }
    for (i = 0; i < nth; i++) prg__share_slots[i].next = 0;
    pthread_mutex_lock(&p->lock);
    p->fn = fn;
    p->ctx = ctx;
    p->nth = nth;
    PRG__ASTORE(p->pending, nth - 1);
    PRG__ASTORE(p->generation, p->generation + 1);
    if (p->sleepers > 0) pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);

    prg__in_task = 1;
    fn(ctx, 0, nth);
    {   /* The parts no worker has started yet (it sleeps, or the system runs
           something else on its core): the caller runs them itself rather
           than wait for the worker to be scheduled.  A part computes the
           same whichever thread runs it, so the bits stay those of the
           fixed split. */
        int mine[PRG_MAX_THREADS], nmine = 0, k;
        const unsigned long gen = p->generation; /* written only by this thread */
        for (i = 1; i < nth && PRG__ALOAD(p->claimed[i]) == gen; i++) {}
        if (i < nth) {
            pthread_mutex_lock(&p->lock);
            for (i = 1; i < nth; i++)
                if (p->claimed[i] != gen) {
                    PRG__ASTORE(p->claimed[i], gen);
                    mine[nmine++] = i;
                }
            pthread_mutex_unlock(&p->lock);
            for (k = 0; k < nmine; k++) fn(ctx, mine[k], nth);
            if (nmine > 0) {
                pthread_mutex_lock(&p->lock);
                PRG__ASTORE(p->pending, p->pending - nmine);
                pthread_mutex_unlock(&p->lock);
            }
        }
    }
    prg__in_task = 0;

    for (i = 0; i < PRG__POOL_SPINS && PRG__ALOAD(p->pending) > 0; i++) PRG__PAUSE();
    pthread_mutex_lock(&p->lock);
    while (p->pending > 0) {
        p->caller_waiting = 1;
        pthread_cond_wait(&p->done, &p->lock);
    }
    p->caller_waiting = 0;
    pthread_mutex_unlock(&p->lock);
    pthread_mutex_unlock(&p->use);
}

#endif /* PRG_NO_THREADS */

/* The chunks [0, n) of one job, shared out among its nth threads: thread
   ith first runs its own share (the chunks prg_split_range gives it, in
   order, so that it keeps touching the memory it touched in the previous
   job), then helps with the rest of the other threads' shares.  A thread
   that runs slower (a core busy with something else, a slower core type, a
   late wake-up) thus holds the others up for at most one chunk.  What a
   chunk computes never depends on which thread runs it, so the bits are
   those of one thread.  Each thread has its own prg__share; the counters
   of the shares are the pool's, reset by prg_parallel for every job.
   Without the __atomic builtins each thread runs its own share only. */
typedef struct prg__share {
    size_t n, own;  /* chunks in all, chunks taken from the own share (nth == 1) */
    int ith, nth, victim;
} prg__share;

#if !defined(PRG_NO_THREADS) && (defined(__GNUC__) || defined(__clang__))
#define PRG__SHARE_ATOMIC 1
#endif

static void prg__share_init(prg__share *sh, size_t n, int ith, int nth) {
    sh->n = n;
    sh->own = 0;
    sh->ith = ith;
    sh->nth = nth;
    sh->victim = ith;
}

/* The next chunk *k for the calling thread; 0 when none is left. */
static int prg__share_next(prg__share *sh, size_t *k) {
    size_t lo, hi;
    if (sh->nth == 1) {
        *k = sh->own++;
        return *k < sh->n;
    }
#ifdef PRG__SHARE_ATOMIC
    do {
        prg_split_range(sh->n, 1, sh->victim, sh->nth, &lo, &hi);
        *k = lo + __atomic_fetch_add(&prg__share_slots[sh->victim].next, 1, __ATOMIC_RELAXED);
        if (*k < hi) return 1;
        sh->victim = (sh->victim + 1) % sh->nth;
    } while (sh->victim != sh->ith);
    return 0;
#else
    prg_split_range(sh->n, 1, sh->ith, sh->nth, &lo, &hi);
    *k = lo + sh->own++;
    return *k < hi;
#endif
}

/* Parallel loops over [0, n): each index is handled by exactly one thread
   and the work per index never depends on the split, so the bits do not
   depend on the thread count.  Loops with little work (n * cost below about
   32k) run on the caller. */
typedef void (*prg__range_fn)(void *ctx, size_t lo, size_t hi);
typedef struct prg__range_job {
    prg__range_fn fn;
    void *ctx;
    size_t n, nchunks;
} prg__range_job;

/* Chunks of a parallel loop per thread: enough that a thread slowed down by
   a third leaves the other little waiting, few enough that each chunk
   stays long against the cost of taking it. */
#define PRG__RANGE_CHUNKS 4

static void prg__range_task(void *ctx, int ith, int nth) {
    const prg__range_job *j = (const prg__range_job *)ctx;
    size_t lo, hi, k;
    prg__share sh;
    prg__share_init(&sh, j->nchunks, ith, nth);
    while (prg__share_next(&sh, &k)) {
        prg_split_range(j->n, 1, (int)k, (int)j->nchunks, &lo, &hi);
        j->fn(j->ctx, lo, hi);
    }
}

static void prg__parallel_for(size_t n, double cost, prg__range_fn fn, void *ctx) {
    prg__range_job j;
    int width;
    if (n == 0) return;
    if ((double)n * cost < 32768.0 || (width = prg__parallel_width()) == 1) {
        fn(ctx, 0, n);
        return;
    }
    j.fn = fn;
    j.ctx = ctx;
    j.n = n;
    j.nchunks = (size_t)width * PRG__RANGE_CHUNKS < n ? (size_t)width * PRG__RANGE_CHUNKS : n;
    prg_parallel(prg__range_task, &j);
}

/* >>gemm ================================================================ */

/* Goto/BLIS structure.  op(B) is packed into a KC x NC block of NR-wide
   column panels, op(A) into an MC x KC block of MR-tall row panels; the
   micro-kernel multiplies one MR x KC panel of A with one KC x NR panel of B
   into an MR x NR tile of C.  Panels are zero-padded at the edges, so every
   element of C goes through the same arithmetic whatever its position: the
   result does not depend on how threads split C. */

/* Cache lines a kernel call prefetches (to L2) for the packing of the next
   B panel: line L in [first, first + count) is at
   base + (L & ((1 << shift) - 1)) * s1 + (L >> shift) * s2 (in floats);
   count <= kc, one line per k step.  Kernels may ignore it. */
typedef struct prg__gemm_pf {
    const float *base;
    size_t s1, s2;
    int shift, first, count;
} prg__gemm_pf;

typedef void (*prg__gemm_kernel)(int kc, const float *PRG_RESTRICT a, const float *PRG_RESTRICT b,
                                 float *PRG_RESTRICT c, int ldc, int mr, int nr, float alpha,
                                 float beta, const prg__gemm_pf *pf);

/* Packs an MC x KC block of op(A) (or a KC x NC block of op(B)) into panels;
   see prg__pack_a and prg__pack_b. */
typedef void (*prg__gemm_pack)(float *PRG_RESTRICT dst, const float *src, int ld, int trans,
                               int lim, int o0, int len, int p0, int kc, int r);

typedef struct prg__gemm_impl {
    const char *name;
    int mr, nr;          /* register tile */
    int mc, kc;          /* cache blocks: A is packed MC x KC (mc % mr == 0) */
    int prefetch;        /* the kernel prefetches for the next B panel (needs nr == 32) */
    prg__gemm_kernel kernel;
    prg__gemm_pack pack_a, pack_b;
} prg__gemm_impl;

static void prg__pack_a(float *PRG_RESTRICT dst, const float *a, int lda, int ta, int m, int i0,
                        int mc, int p0, int kc, int mr);
static void prg__pack_b(float *PRG_RESTRICT dst, const float *b, int ldb, int tb, int n, int j0,
                        int nc, int p0, int kc, int nr);

/* Stores the accumulated MR x NR tile t (row stride nrmax) into C. */
static void prg__gemm_store(const float *t, int nrmax, float *c, int ldc, int mr, int nr,
                            float alpha, float beta) {
    int i, j;
    for (i = 0; i < mr; i++) {
        float *ci = c + (size_t)i * ldc;
        const float *ti = t + (size_t)i * nrmax;
        if (beta == 0.0f)
            for (j = 0; j < nr; j++) ci[j] = alpha * ti[j];
        else
            for (j = 0; j < nr; j++) ci[j] = alpha * ti[j] + beta * ci[j];
    }
}

/* Portable kernel: 4 x 16, written so that compilers can vectorise it. */
#define PRG__SCALAR_MR 4
#define PRG__SCALAR_NR 16
static void prg__kernel_scalar(int kc, const float *PRG_RESTRICT a, const float *PRG_RESTRICT b,
                               float *PRG_RESTRICT c, int ldc, int mr, int nr, float alpha,
                               float beta, const prg__gemm_pf *pf) {
    float acc[PRG__SCALAR_MR * PRG__SCALAR_NR];
    int p, i, j;
    (void)pf;
    memset(acc, 0, sizeof acc);
    for (p = 0; p < kc; p++) {
        const float *bp = b + (size_t)p * PRG__SCALAR_NR;
        const float *ap = a + (size_t)p * PRG__SCALAR_MR;
        for (i = 0; i < PRG__SCALAR_MR; i++) {
            float ai = ap[i];
            for (j = 0; j < PRG__SCALAR_NR; j++) acc[i * PRG__SCALAR_NR + j] += ai * bp[j];
        }
    }
    prg__gemm_store(acc, PRG__SCALAR_NR, c, ldc, mr, nr, alpha, beta);
}



/* The micro-kernel, its packers and blocking come from the CPU table
   (prg__cpu, after the last kernel), decided once. */
static const prg__gemm_impl *prg__gemm_select(void);

/* Packs rows [i0, i0+mc) x cols [p0, p0+kc) of op(A) into MR-tall panels:
   dst[panel][p][r].  Rows past m are zero. */
static void prg__pack_a(float *PRG_RESTRICT dst, const float *a, int lda, int ta, int m, int i0,
                        int mc, int p0, int kc, int mr) {
    int ir, p, r;
    for (ir = 0; ir < mc; ir += mr) {
        int rows = m - (i0 + ir) < mr ? m - (i0 + ir) : mr;
        if (!ta) {
            const float *src = a + (size_t)(i0 + ir) * lda + p0;
            for (p = 0; p < kc; p++) {
                for (r = 0; r < rows; r++) dst[r] = src[(size_t)r * lda + p];
                for (; r < mr; r++) dst[r] = 0.0f;
                dst += mr;
            }
        } else {
            const float *src = a + (size_t)p0 * lda + i0 + ir;
            for (p = 0; p < kc; p++) {
                const float *s = src + (size_t)p * lda;
                for (r = 0; r < rows; r++) dst[r] = s[r];
                for (; r < mr; r++) dst[r] = 0.0f;
                dst += mr;
            }
        }
    }
}

/* Packs rows [p0, p0+kc) x cols [j0, j0+nc) of op(B) into NR-wide panels:
   dst[panel][p][c].  Columns past n are zero. */
static void prg__pack_b(float *PRG_RESTRICT dst, const float *b, int ldb, int tb, int n, int j0,
                        int nc, int p0, int kc, int nr) {
    int jr, p, c;
    for (jr = 0; jr < nc; jr += nr) {
        int cols = n - (j0 + jr) < nr ? n - (j0 + jr) : nr;
        if (!tb) {
            const float *src = b + (size_t)p0 * ldb + j0 + jr;
            for (p = 0; p < kc; p++) {
                const float *s = src + (size_t)p * ldb;
                for (c = 0; c < cols; c++) dst[c] = s[c];
                for (; c < nr; c++) dst[c] = 0.0f;
                dst += nr;
            }
        } else {
            const float *src = b + (size_t)(j0 + jr) * ldb + p0;
            for (p = 0; p < kc; p++) {
                for (c = 0; c < cols; c++) dst[c] = src[(size_t)c * ldb + p];
                for (; c < nr; c++) dst[c] = 0.0f;
                dst += nr;
            }
        }
    }
}

/* Writes one NR-wide panel of op(B) the way pack_b does: rows [p0, p0+kc),
   columns [j0, j0+cols) as dst[p][c], zero for c in [cols, nr). */
typedef void (*prg__gemm_b_packer)(const void *ctx, float *PRG_RESTRICT dst, int j0, int cols,
                                   int p0, int kc, int nr);

typedef struct prg__gemm_job {
    const prg__gemm_impl *g;
    int ta, tb, m, n, k;
    float alpha, beta;
    const float *a, *b;
    int lda, ldb, ldc;
    float *c;
    int split_m; /* threads split rows of C (else columns) */
    /* op(B) produced by the caller rather than read from b (prg__sgemm_packer) */
    prg__gemm_b_packer b_packer;
    const void *b_ctx;
    struct prg__gemm_buf **bufs; /* reserved packing buffers, one per thread */
    int nbufs;                   /* (threads past nbufs sit out) */
} prg__gemm_job;

/* Packing buffers: a shared set, each taken by one task of prg_sgemm and
   given back at its end.  (Thread-local buffers would be lost whenever the
   pool's workers exit, e.g. on prg_set_num_threads.)  Buffers only grow. */
typedef struct prg__gemm_buf {
    prg__scratch s;
    prg__scratch cs; /* C's rows between K blocks when ldc aliases (prg__gemm_block_in) */
    prg__scratch bs; /* B's packed panels, kept for the next blocks of A rows */
    int busy;
} prg__gemm_buf;
static prg__gemm_buf prg__gemm_bufs[PRG_MAX_THREADS + 8];
#ifndef PRG_NO_THREADS
static pthread_mutex_t prg__gemm_buf_lock = PTHREAD_MUTEX_INITIALIZER;
#define PRG__GEMM_BUF_LOCK() pthread_mutex_lock(&prg__gemm_buf_lock)
#define PRG__GEMM_BUF_UNLOCK() pthread_mutex_unlock(&prg__gemm_buf_lock)
#else
#define PRG__GEMM_BUF_LOCK() ((void)0)
#define PRG__GEMM_BUF_UNLOCK() ((void)0)
#endif

/* A free buffer of at least n floats (NULL when none or out of memory). */
static prg__gemm_buf *prg__gemm_buf_take(size_t n) {
    prg__gemm_buf *b = NULL;
    int i, nb = (int)(sizeof prg__gemm_bufs / sizeof prg__gemm_bufs[0]);
    PRG__GEMM_BUF_LOCK();
    for (i = 0; i < nb; i++) { /* a free one, big enough if there is one */
        prg__gemm_buf *x = &prg__gemm_bufs[i];
        if (x->busy) continue;
        if (!b || (x->s.n >= n && b->s.n < n)) b = x;
        if (b->s.n >= n) break;
    }
    if (b) b->busy = 1;
    PRG__GEMM_BUF_UNLOCK();
    if (b && !prg__scratch_get(&b->s, n)) {
        PRG__GEMM_BUF_LOCK();
        b->busy = 0;
        PRG__GEMM_BUF_UNLOCK();
        b = NULL;
    }
    return b;
}

static void prg__gemm_buf_give(prg__gemm_buf *b) {
    PRG__GEMM_BUF_LOCK();
    b->busy = 0;
    PRG__GEMM_BUF_UNLOCK();
}

static void prg__scratch_free(prg__scratch *s) {
    prg_free(s->p);
    s->p = NULL;
    s->n = 0;
}

void prg_release_scratch(void) {
    int i, nb = (int)(sizeof prg__gemm_bufs / sizeof prg__gemm_bufs[0]);
    PRG__GEMM_BUF_LOCK();
    for (i = 0; i < nb; i++) {
        prg__gemm_buf *x = &prg__gemm_bufs[i];
        if (x->busy) continue;
        prg__scratch_free(&x->s);
        prg__scratch_free(&x->cs);
        prg__scratch_free(&x->bs);
    }
    PRG__GEMM_BUF_UNLOCK();
}

/* The U-Nets alive (prg_unet_create + 1, prg_unet_free - 1): when the last
   one goes, the packing buffers go with it. */
static int prg__gemm_users = 0;

static void prg__gemm_users_add(int d) {
    int none;
    PRG__GEMM_BUF_LOCK();
    prg__gemm_users += d;
    none = prg__gemm_users == 0;
    PRG__GEMM_BUF_UNLOCK();
    if (none) prg_release_scratch();
}

/* The short path for small products: no packing, one row of C at a time
   accumulated in a local buffer (C is read only when beta != 0). */
static void prg__gemm_small(const prg__gemm_job *j, int m0, int m1, int n0, int n1) {
    float row[256];
    int i, jj, p, jb;
    for (i = m0; i < m1; i++) {
        float *ci = j->c + (size_t)i * j->ldc;
        for (jb = n0; jb < n1; jb += 256) {
            int nb = n1 - jb < 256 ? n1 - jb : 256;
            for (jj = 0; jj < nb; jj++) row[jj] = 0.0f;
            for (p = 0; p < j->k; p++) {
                float av = j->ta ? j->a[(size_t)p * j->lda + i] : j->a[(size_t)i * j->lda + p];
                if (!j->tb) {
                    const float *bp = j->b + (size_t)p * j->ldb + jb;
                    for (jj = 0; jj < nb; jj++) row[jj] += av * bp[jj];
                } else {
                    const float *bp = j->b + (size_t)jb * j->ldb + p;
                    for (jj = 0; jj < nb; jj++) row[jj] += av * bp[(size_t)jj * j->ldb];
                }
            }
            for (jj = 0; jj < nb; jj++)
                ci[jb + jj] = j->beta == 0.0f ? j->alpha * row[jj]
                                              : j->alpha * row[jj] + j->beta * ci[jb + jj];
        }
    }
}

/* Floats of one packing buffer: A's MC x KC block, then B's KC x NR panel
   on a 64-byte boundary. */
static size_t prg__gemm_buf_floats(const prg__gemm_impl *g, size_t *na) {
    *na = ((size_t)g->mc * g->kc + 15) / 16 * 16;
    return *na + (size_t)g->kc * g->nr;
}

static void prg__gemm_block_in(const prg__gemm_job *j, int m0, int m1, int n0, int n1,
                               prg__gemm_buf *buf);

/* The stride for rows (or positions) of n floats each that are touched
   together: one cache line more when n is a multiple of 1 KiB, so that
   they do not crowd into four or fewer sets of the L1 cache (one set at 4
   KiB, where e.g. a Winograd transform's 36 lines meet 12 ways), nor alias
   each other's addresses for the store-to-load checks.  Used by the GEMM's
   C buffer and the Winograd transform buffers. */
static size_t prg__spread_stride(size_t n) {
    return n % 256 == 0 ? n + 16 : n;
}

/* The most floats of either buffer that prg__gemm_block_in keeps for large
   products (64 MiB; past that it goes without). */
#define PRG__GEMM_KEEP_MAX (16.0 * 1024 * 1024)

/* dst = src on an mr x nr tile. */
static void prg__gemm_copy_tile(float *dst, int ldd, const float *src, int lds, int mr, int nr) {
    int i;
    for (i = 0; i < mr; i++)
        memcpy(dst + (size_t)i * ldd, src + (size_t)i * lds, (size_t)nr * sizeof(float));
}

static void prg__gemm_block(const prg__gemm_job *j, int m0, int m1, int n0, int n1) {
    size_t na;
    prg__gemm_buf *buf = prg__gemm_buf_take(prg__gemm_buf_floats(j->g, &na));
    if (!buf) { /* no memory for the packing buffers: unpacked loops */
        prg__gemm_small(j, m0, m1, n0, n1);
        return;
    }
    prg__gemm_block_in(j, m0, m1, n0, n1, buf);
    prg__gemm_buf_give(buf);
}

/* The serial blocked product on the block [m0,m1) x [n0,n1) of C.  For each
   MC x KC block of packed A, the NR-wide panels of B are packed one at a
   time (the KC x NR panel stays in L1 while every A panel of the block
   passes over it); the kernel calls on one panel prefetch the memory of the
   next one, so that reading B overlaps with arithmetic.  Two buffers of
   buf, when there is memory for them, serve large products: the packed
   panels of B kept from the first block of A rows for the others, and C's
   tiles between K blocks when C's rows alias in L1 (see below). */
static void prg__gemm_block_in(const prg__gemm_job *j, int m0, int m1, int n0, int n1,
                               prg__gemm_buf *buf) {
    const prg__gemm_impl *g = j->g;
    int MR = g->mr, NR = g->nr, MC = g->mc, KC = g->kc, ic, pc, jr, ir, ldcb = 0, npan;
    float *pa, *pb, *ct, *cb = NULL, *sb = NULL;
    prg__gemm_pf pf, *pfp;
    size_t na;
    prg__gemm_buf_floats(g, &na);
    pa = buf->s.p;
    pb = pa + na;
    {   /* equal A blocks (in whole MR panels) rather than a thin last one */
        int nblk = (m1 - m0 + MC - 1) / MC;
        MC = ((m1 - m0 + nblk - 1) / nblk + MR - 1) / MR * MR;
    }
    if (g->prefetch && j->k > KC && j->ldc % 1024 == 0) {
        /* Rows of C a multiple of 4 KiB apart all fall into one L1 set: a
           tile's 14 rows then evict each other (and lines of the B panel)
           on every K block.  The K blocks accumulate instead in a buffer
           whose stride spreads the rows over the sets, and each tile goes to
           C after its last K block (copied in first when beta != 0).  Same
           arithmetic: same bits.  Without memory for it, C directly. */
        ldcb = (int)prg__spread_stride((size_t)(n1 - n0 + 15) / 16 * 16);
        if ((double)MC * ldcb <= PRG__GEMM_KEEP_MAX)
            cb = prg__scratch_get(&buf->cs, (size_t)MC * ldcb);
    }
    npan = (n1 - n0 + NR - 1) / NR;
    if (g->prefetch && !j->b_packer && !j->tb && m1 - m0 > MC &&
        (double)npan * NR * j->k <= PRG__GEMM_KEEP_MAX) {
        /* Several blocks of A rows: each would pack B again, reading its
           rows with a stride that costs a TLB miss a row when B is wide
           (B^T's panels are 32 rows: packing them again costs less than
           reading kept panels from L2).
           The first block keeps the panels it packs (panel q of K block pc
           at (pc * npan + q * kc) * NR), the others read them. */
        sb = prg__scratch_get(&buf->bs, (size_t)npan * NR * j->k);
    }
    for (ic = m0; ic < m1; ic += MC) {
        int mc = m1 - ic < MC ? m1 - ic : MC;
        for (pc = 0; pc < j->k; pc += KC) {
            int kc = j->k - pc < KC ? j->k - pc : KC;
            float beta = pc == 0 ? j->beta : 1.0f;
            g->pack_a(pa, j->a, j->lda, j->ta, m1, ic, mc, pc, kc, MR);
            for (jr = n0; jr < n1; jr += NR) {
                int nr = n1 - jr < NR ? n1 - jr : NR, lines = 0, t = 0;
                if (sb) {
                    pb = sb + (size_t)pc * npan * NR + (size_t)((jr - n0) / NR) * kc * NR;
                    if (ic == m0) g->pack_b(pb, j->b, j->ldb, j->tb, n1, jr, nr, pc, kc, NR);
                } else if (j->b_packer)
                    j->b_packer(j->b_ctx, pb, jr, nr, pc, kc, NR);
                else
                    g->pack_b(pb, j->b, j->ldb, j->tb, n1, jr, nr, pc, kc, NR);
                if (sb && ic != m0) {
                    /* the next kept panel, 2 lines a row: right after this
                       one, also when it is the first of the next K block */
                    int next = jr + NR < n1 ? kc : j->k - (pc + kc); /* its rows */
                    if (next > KC) next = KC;
                    pf.base = pb + (size_t)kc * NR;
                    pf.shift = 0;
                    pf.s1 = 0;
                    pf.s2 = 16;
                    lines = 2 * next;
                } else if (g->prefetch && !j->b_packer && jr + 2 * NR <= n1) {
                    /* the next (full) panel: kc rows of 32 floats, or 32 rows of kc */
                    if (!j->tb) {
                        pf.base = j->b + (size_t)pc * j->ldb + jr + NR;
                        pf.shift = 1;
                        pf.s1 = 16;
                        pf.s2 = (size_t)j->ldb;
                        lines = 2 * kc;
                    } else {
                        pf.base = j->b + (size_t)(jr + NR) * j->ldb + pc;
                        pf.shift = 5;
                        pf.s1 = (size_t)j->ldb;
                        pf.s2 = 16;
                        lines = 32 * ((kc + 15) / 16);
                    }
                }
                for (ir = 0; ir < mc; ir += MR, t++) {
                    int mr = mc - ir < MR ? mc - ir : MR;
                    pf.first = t * kc;
                    pf.count = lines - pf.first < kc ? lines - pf.first : kc;
                    pfp = pf.count > 0 ? &pf : NULL;
                    ct = j->c + (size_t)(ic + ir) * j->ldc + jr;
                    if (cb) {
                        float *bt = cb + (size_t)ir * ldcb + (jr - n0);
                        if (pc == 0 && beta != 0.0f)
                            prg__gemm_copy_tile(bt, ldcb, ct, j->ldc, mr, nr);
                        g->kernel(kc, pa + (size_t)ir * kc, pb, bt, ldcb, mr, nr, j->alpha,
                                  beta, pfp);
                        if (pc + kc >= j->k) prg__gemm_copy_tile(ct, j->ldc, bt, ldcb, mr, nr);
                    } else {
                        g->kernel(kc, pa + (size_t)ir * kc, pb, ct, j->ldc, mr, nr, j->alpha,
                                  beta, pfp);
                    }
                }
            }
        }
    }
}

static void prg__gemm_task(void *ctx, int ith, int nth) {
    const prg__gemm_job *j = (const prg__gemm_job *)ctx;
    size_t lo, hi;
    int m0 = 0, m1 = j->m, n0 = 0, n1 = j->n;
    if (j->bufs && nth > j->nbufs) { /* the pool grew since the buffers were reserved */
        if (ith >= j->nbufs) return;
        nth = j->nbufs;
    }
    if (j->split_m) {
        prg_split_range((size_t)j->m, (size_t)j->g->mr, ith, nth, &lo, &hi);
        m0 = (int)lo;
        m1 = (int)hi;
    } else {
        prg_split_range((size_t)j->n, (size_t)j->g->nr, ith, nth, &lo, &hi);
        n0 = (int)lo;
        n1 = (int)hi;
    }
    if (lo >= hi) return;
    if (j->bufs)
        prg__gemm_block_in(j, m0, m1, n0, n1, j->bufs[ith]);
    else
        prg__gemm_block(j, m0, m1, n0, n1);
}

/* C = beta * C for the cases without a product (k == 0 or alpha == 0). */
static void prg__gemm_scale(int m, int n, float beta, float *c, int ldc) {
    int i, jj;
    for (i = 0; i < m; i++) {
        float *ci = c + (size_t)i * ldc;
        if (beta == 0.0f)
            for (jj = 0; jj < n; jj++) ci[jj] = 0.0f;
        else if (beta != 1.0f)
            for (jj = 0; jj < n; jj++) ci[jj] *= beta;
    }
}

/* The arguments prg_sgemm can run with (m, n > 0): C given with ldc >= n,
   and when the product is needed A and B given with their leading
   dimensions at least the row lengths. */
static int prg__gemm_args_ok(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda, const float *b, int ldb,
                             const float *c, int ldc) {
    if (!c || ldc < n) return 0;
    if (k <= 0 || alpha == 0.0f) return 1;
    return a && b && lda >= (ta ? m : k) && ldb >= (tb ? k : n);
}

void prg_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha,
               const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc) {
    prg__gemm_job j;
    if (m <= 0 || n <= 0) return;
    if (!prg__gemm_args_ok(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, c, ldc)) return;
    if (k <= 0 || alpha == 0.0f) {
        prg__gemm_scale(m, n, beta, c, ldc);
        return;
    }
    j.g = prg__gemm_select();
    j.ta = trans_a != 0;
    j.tb = trans_b != 0;
    j.m = m; j.n = n; j.k = k;
    j.alpha = alpha; j.beta = beta;
    j.a = a; j.b = b; j.c = c;
    j.lda = lda; j.ldb = ldb; j.ldc = ldc;
    j.b_packer = NULL;
    j.b_ctx = NULL;
    j.bufs = NULL;
    j.nbufs = 0;
    /* Split the larger side of C across threads; small products run on the
       caller alone (the pool's wake-up would cost more than it saves). */
    j.split_m = m / j.g->mr >= n / j.g->nr;
    if ((double)m * n * k <= 32768.0)
        prg__gemm_small(&j, 0, m, 0, n);
    else if ((double)m * n * k < 262144.0)
        prg__gemm_task(&j, 0, 1);
    else
        prg_parallel(prg__gemm_task, &j);
}

/* C = alpha * A * B + beta * C where the packer writes B's panels (an
   implicit operand such as a convolution's column matrix, never stored
   whole).  The same blocking and kernels as prg_sgemm, so the same bits for
   any thread count.  Returns 0, or -1 with C untouched when the packing
   buffers cannot be had (the caller then takes an explicit path). */
/* Test hooks: they steer the engine onto paths it would not take by itself,
   so that the tests run every path on every machine.  All zero in normal
   use; only tests write them (between calls, never during one). */
typedef struct prg__hooks {
    int no_packer;      /* the packing buffers "cannot be had" here (prg__sgemm_packer,
                           Winograd): the convolutions take their stored column matrix */
    int no_wino;        /* no Winograd: the other paths where it would run */
    int no_wino4;       /* F(2x2,3x3) wherever Winograd runs */
    int all_kernels;    /* take every path the CPU table has kernels for, also the ones
                           its flags leave off as slower there: the scalar twins of the
                           AVX-512-only paths then run whole convolutions */
    int wino_rows_only; /* the Winograd row transforms on 8x8 and 16-wide maps too */
    int wino_dw_plan;   /* plan the Winograd weight gradient for this many threads
                           (0: the pool's width) */
    int force;          /* a prg__conv_algo: the plans made while it is set take it for
                           every product the shape allows it for (0: their own choice) */
} prg__hooks;
static prg__hooks prg__hook;

static int prg__sgemm_packer(int m, int n, int k, float alpha, const float *a,
                             int lda, prg__gemm_b_packer packer, const void *ctx, float beta,
                             float *c, int ldc) {
    prg__gemm_job j;
    prg__gemm_buf *bufs[PRG_MAX_THREADS];
    size_t na, nf;
    int i, nbuf = prg__parallel_width(), ok = 1;
    if (prg__hook.no_packer) return -1;
    if (m <= 0 || n <= 0) return 0;
    if (k <= 0 || alpha == 0.0f) {
        prg__gemm_scale(m, n, beta, c, ldc);
        return 0;
    }
    memset(&j, 0, sizeof j);
    j.g = prg__gemm_select();
    j.m = m; j.n = n; j.k = k; /* A not transposed (memset: ta = 0) */
    j.alpha = alpha; j.beta = beta;
    j.a = a; j.c = c;
    j.lda = lda; j.ldc = ldc;
    j.b_packer = packer;
    j.b_ctx = ctx;
    j.split_m = m / j.g->mr >= n / j.g->nr;
    if ((double)m * n * k < 262144.0) nbuf = 1; /* runs on the caller alone */
    if (nbuf < 1) nbuf = 1;
    if (nbuf > PRG_MAX_THREADS) nbuf = PRG_MAX_THREADS;
    nf = prg__gemm_buf_floats(j.g, &na);
    for (i = 0; i < nbuf; i++) /* every buffer first: nothing is written unless all are here */
        if (!(bufs[i] = prg__gemm_buf_take(nf))) ok = 0;
    if (ok) {
        j.bufs = bufs;
        j.nbufs = nbuf;
        if (nbuf == 1)
            prg__gemm_task(&j, 0, 1);
        else
            prg_parallel(prg__gemm_task, &j);
    }
    for (i = 0; i < nbuf; i++)
        if (bufs[i]) prg__gemm_buf_give(bufs[i]);
    return ok ? 0 : -1;
}

void prg_sgemm_ref(int trans_a, int trans_b, int m, int n, int k, float alpha,
                   const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc) {
    int i, jj, p;
    for (i = 0; i < m; i++)
        for (jj = 0; jj < n; jj++) {
            double s = 0.0;
            for (p = 0; p < k; p++) {
                double av = trans_a ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p];
                double bv = trans_b ? b[(size_t)jj * ldb + p] : b[(size_t)p * ldb + jj];
                s += av * bv;
            }
            s *= alpha;
            if (beta != 0.0f) s += (double)beta * c[(size_t)i * ldc + jj];
            c[(size_t)i * ldc + jj] = (float)s;
        }
}

/* >>wino ================================================================ */

/* ---- Winograd F(2x2, 3x3) ------------------------------------------------
   A 3x3 stride-1 pad-1 convolution gives each 2x2 output tile from its 4x4
   input tile d (rows 2ty-1.., columns 2tx-1..) as
       Y = A^T [(G g G^T) . (B^T d B)] A
   with B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], G = [1 0 0; 1/2 1/2
   1/2; 1/2 -1/2 1/2; 0 0 1], A^T = [1 1 1 0; 0 1 -1 -1]: 16 products per
   tile and channel pair instead of 36.  With the tiles as GEMM columns, for
   each position xi of the 4x4 transform
       M[xi] (Co x tiles) = U[xi] (Co x Ci) V[xi] (Ci x tiles),
   U = G g G^T once per call (packed as the GEMM kernel's A panels), V =
   B^T d B per block of tiles (written as its B panels), then Y from M.
   Blocks of tiles are independent and each is done by one thread, so the
   bits do not depend on the thread count.  The weight gradient is the
   transpose: dU[xi] = sum over tiles of dM[xi] V[xi]^T with dM = A dY A^T,
   then dW = G^T dU G.  Odd sizes: tiles past the edge read zeros and their
   outputs outside the image are dropped (their dY counts as zero). */
#define PRG__WINO_MIN_C 8
#define PRG__WINO_L2 (512 * 1024)    /* bytes of V and M per block (measured) */
#define PRG__WINO_DW_L2 (512 * 1024) /* bytes of V and dM per block and row of the transform (dW) */

typedef void (*prg__wino_rows_fn)(float *PRG_RESTRICT v, size_t vs, const float *plane, int h, int w,
                                  int ty, int x0, int len, int k0, int k1);
typedef struct prg__wino_fns {
    prg__wino_rows_fn in_row, dy_row; /* transforms of x and of dy: prg__wino_in_row, _dy_row */
    void (*out_row)(float *plane, int h, int w, int ty, int x0, int len, const float *PRG_RESTRICT m,
                    size_t ms, float bias, int accumulate);
    /* the transformed weights, packed: prg__wino_weights */
    void (*weights)(float *u, const float *gw, size_t os, size_t is, int flip, int nxi, int co, int ci,
                    int copad, int mr, int kcb, int p0, int p1);
    /* c += a b^T with a [m][k], b [n][k] (the weight gradient's products) */
    void (*nt)(int m, int n, int k, const float *a, size_t lda, const float *b, size_t ldb, float *c, int ldc);
    /* 8 x 8 planes whole, 16 tiles in lane order: prg__wino_in_plane8 and
       its two companions */
    void (*in_plane8)(float *PRG_RESTRICT v, size_t vs, const float *plane, int k0, int k1);
    void (*dy_plane8)(float *PRG_RESTRICT v, size_t vs, const float *plane, int k0, int k1);
    void (*out_plane8)(float *plane, const float *PRG_RESTRICT m, size_t ms, float bias, int accumulate);
    /* 16-wide planes, two tile rows at a time: prg__wino_in_rows16 and its
       two companions */
    void (*in_rows16)(float *PRG_RESTRICT v, size_t vs, const float *plane, int h, int ty, int k0, int k1);
    void (*dy_rows16)(float *PRG_RESTRICT v, size_t vs, const float *plane, int h, int ty, int k0, int k1);
    void (*out_rows16)(float *plane, int ty, const float *PRG_RESTRICT m, size_t ms, float bias, int accumulate);
    /* F(4x4,3x3), a group of 16 tiles at a time: prg__wino4_in_ref, _out_ref */
    void (*in4)(float *PRG_RESTRICT v, size_t vs, const float *plane, size_t ps, int h, int w, int ty0, int k0,
                int k1);
    void (*dy4)(float *PRG_RESTRICT dm, size_t ms, const float *plane, size_t ps, int w, int ty0, int k0, int k1);
    void (*dw_inverse4)(float *d, const float *u, size_t s, int cin); /* prg__wino4_dw_inverse */
    void (*out4)(float *plane, size_t ps, int w, int ty0, const float *PRG_RESTRICT m, size_t ms, float bias,
                 int accumulate);
    /* which of the kernels above pay (the vector ones; the scalar twins run
       only when a test asks, prg__hook.all_kernels): */
    int plane8;  /* the whole-plane 8 x 8 transforms (else the row transforms) */
    int rows16;  /* the two-row 16-wide transforms (else the row transforms) */
    int fast4;   /* F(4x4,3x3) (else F(2x2,3x3)) */
    int dot_nt;  /* nt up to 64 x 64 channels (else the packed GEMM) */
} prg__wino_fns;
static prg__wino_fns prg__wino_select(void); /* from the CPU table (>>simd) */

typedef struct prg__wino {
    int b, ci, co, h, w, th, tw; /* GEMM depth ci, height co; tiles th x tw per image */
    int f4, nxi;                 /* F(4x4,3x3) (36 positions) or F(2x2,3x3) (16) */
    size_t ntiles;               /* b * th * tw */
    int tb, npan, copad;         /* tiles per block (whole NR panels), panels per block, Co in MR rows */
    size_t vs, ms;               /* floats from one position xi of V (of M) to the next (prg__spread_stride) */
    const prg__gemm_impl *g;
    prg__wino_fns fn;
    const float *x, *bias;       /* x [B][Ci][H][W] */
    float *y;                    /* [B][Co][H][W]: = (+ bias), or += when accumulate */
    int accumulate;
    float *u;                    /* [nxi][K chunks][Co panels][kc][MR] */
    prg__gemm_buf *bufs[PRG_MAX_THREADS];
    int nbufs;
} prg__wino;

/* The transformed values of the tiles [x0, x0+len) (len <= 64) of tile row
   ty of one plane, rows k0..k1-1 of the 4x4 transform: v[(xi - 4 k0)*vs + q]
   for tile x0+q. */
static void prg__wino_in_row(float *PRG_RESTRICT v, size_t vs, const float *plane, int h, int w,
                             int ty, int x0, int len, int k0, int k1) {
    float tmp[4 * 130], *r[4];
    int pw = 2 * len + 2, i, p, q, k;
    for (i = 0; i < 4; i++) {
        int iy = 2 * ty - 1 + i, c0 = 2 * x0 - 1;
        r[i] = tmp + (size_t)i * pw;
        if (iy < 0 || iy >= h) {
            memset(r[i], 0, (size_t)pw * sizeof(float));
        } else {
            const float *src = plane + (size_t)iy * w;
            int lo = c0 < 0 ? -c0 : 0, hi = c0 + pw > w ? w - c0 : pw;
            for (p = 0; p < lo; p++) r[i][p] = 0.0f;
            memcpy(r[i] + lo, src + c0 + lo, (size_t)(hi - lo) * sizeof(float));
            for (p = hi; p < pw; p++) r[i][p] = 0.0f;
        }
    }
    for (p = 0; p < pw; p++) { /* B^T d down the columns */
        float a = r[0][p], b = r[1][p], c = r[2][p], d = r[3][p];
        r[0][p] = a - c;
        r[1][p] = b + c;
        r[2][p] = c - b;
        r[3][p] = b - d;
    }
    for (k = k0; k < k1; k++) { /* ... B along the rows */
        const float *s = r[k];
        float *v0 = v + (size_t)(4 * (k - k0)) * vs, *v1 = v0 + vs, *v2 = v1 + vs, *v3 = v2 + vs;
        for (q = 0; q < len; q++) {
            float c0 = s[2 * q], c1 = s[2 * q + 1], c2 = s[2 * q + 2], c3 = s[2 * q + 3];
            v0[q] = c0 - c2;
            v1[q] = c1 + c2;
            v2[q] = c2 - c1;
            v3[q] = c1 - c3;
        }
    }
}

/* Output tiles [x0, x0+len) of tile row ty of one plane from m[xi*ms + q]:
   Y = A^T m A, stored (plus bias) or added inside the image. */
static void prg__wino_out_row(float *plane, int h, int w, int ty, int x0, int len,
                              const float *PRG_RESTRICT m, size_t ms, float bias, int accumulate) {
    int q, a;
    for (q = 0; q < len; q++) {
        float t[2][4], yv[2][2];
        int k, ox = 2 * (x0 + q);
        for (k = 0; k < 4; k++) { /* A^T m down the columns */
            float m0 = m[(size_t)k * ms + q], m1 = m[(size_t)(4 + k) * ms + q];
            float m2 = m[(size_t)(8 + k) * ms + q], m3 = m[(size_t)(12 + k) * ms + q];
            t[0][k] = m0 + m1 + m2;
            t[1][k] = m1 - m2 - m3;
        }
        for (a = 0; a < 2; a++) { /* ... A along the rows */
            yv[a][0] = t[a][0] + t[a][1] + t[a][2];
            yv[a][1] = t[a][1] - t[a][2] - t[a][3];
        }
        for (a = 0; a < 2; a++) {
            int oy = 2 * ty + a, e;
            float *row;
            if (oy >= h) break;
            row = plane + (size_t)oy * w;
            for (e = 0; e < 2 && ox + e < w; e++) {
                if (accumulate)
                    row[ox + e] += yv[a][e];
                else
                    row[ox + e] = yv[a][e] + bias;
            }
        }
    }
}

/* u16[xi] = (G g G^T)[xi] for the 3x3 kernel g[ki*ks + kj*js] */
static void prg__wino_weight(float *u16, const float *g, int ks, int js) {
    float t[4][3];
    int i, j;
    for (j = 0; j < 3; j++) { /* G g */
        float g0 = g[j * js], g1 = g[ks + j * js], g2 = g[2 * ks + j * js];
        t[0][j] = g0;
        t[1][j] = 0.5f * (g0 + g1 + g2);
        t[2][j] = 0.5f * (g0 - g1 + g2);
        t[3][j] = g2;
    }
    for (i = 0; i < 4; i++) { /* ... G^T */
        u16[4 * i] = t[i][0];
        u16[4 * i + 1] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
        u16[4 * i + 2] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
        u16[4 * i + 3] = t[i][2];
    }
}

/* dm[k*4*ms + m*ms + q] = (A e A^T)[k][m] for the dy tiles [x0, x0+len) of tile
   row ty, rows k in [k0, k1) (relative to 4*k0), A = [1 0; 1 1; 1 -1; 0 -1] */
static void prg__wino_dy_row(float *PRG_RESTRICT dm, size_t ms, const float *plane, int h, int w,
                             int ty, int x0, int len, int k0, int k1) {
    int q, k;
    for (q = 0; q < len; q++) {
        float e[2][2], r[4][2];
        int a, c, ox = 2 * (x0 + q);
        for (a = 0; a < 2; a++)
            for (c = 0; c < 2; c++)
                e[a][c] = 2 * ty + a < h && ox + c < w ? plane[(size_t)(2 * ty + a) * w + ox + c] : 0.0f;
        for (c = 0; c < 2; c++) {
            r[0][c] = e[0][c];
            r[1][c] = e[0][c] + e[1][c];
            r[2][c] = e[0][c] - e[1][c];
            r[3][c] = -e[1][c];
        }
        for (k = k0; k < k1; k++) {
            float *d = dm + (size_t)(4 * (k - k0)) * ms + q;
            d[0] = r[k][0];
            d[ms] = r[k][0] + r[k][1];
            d[2 * ms] = r[k][0] - r[k][1];
            d[3 * ms] = -r[k][1];
        }
    }
}

/* ---- Winograd F(4x4, 3x3) ------------------------------------------------
   The same convolution from 6x6 input tiles (rows 4ty-1.., columns 4tx-1..)
   giving 4x4 outputs: 36 products per tile and channel pair for 16 outputs
   instead of 16 for 4, with
       B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0;
              0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1],
       G = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6;
            1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1],
       A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1].
   Used where the tiles come in groups of 16 filling one vector, with the
   AVX-512 kernels (prg__wino4_fits): 16-wide maps (four tile rows, h a
   multiple of 16) and 32-wide ones (two tile rows, h a multiple of 8) for
   the forward, dx and the weight gradient (dU = sum over tiles of
   (A dY A^T) (B^T d B)^T, dW = G^T dU G, the 6 rows of the transform split
   among the threads); 8 x 8 maps (the four tiles of four samples' planes,
   ps floats apart; the batch a multiple of 4 and 32 or more) for the
   forward and dx.  A group's lane l is tile (ty0 + l / tw, l % tw) of its
   plane, tw = w / 4 (8 x 8: tile l % 4 of the plane l / 4 after the
   first); the GEMMs, blocks and threads are those of F(2x2,3x3) with 36
   positions.  The fp32 error grows with the larger transform entries (8,
   1/24): about 10-20x that of F(2x2,3x3) (5e-6 of the largest output on
   tiny32's layers), within 0.2 of the K eps bound the tests hold every
   convolution path to. */

/* o[k] = (B^T d)[k] for the 6 values d[0], d[s], ..., d[5 s] */
static void prg__wino4_bt(float *o, size_t os, const float *d, size_t s) {
    float d0 = d[0], d1 = d[s], d2 = d[2 * s], d3 = d[3 * s], d4 = d[4 * s], d5 = d[5 * s];
    float a = d4 - 4.0f * d2, b = d3 - 4.0f * d1, c = d4 - d2, e = 2.0f * (d3 - d1);
    o[0] = 4.0f * d0 + (d4 - 5.0f * d2);
    o[os] = a + b;
    o[2 * os] = a - b;
    o[3 * os] = c + e;
    o[4 * os] = c - e;
    o[5 * os] = 4.0f * d1 + (d5 - 5.0f * d3);
}

/* Lane l of a group from tile row ty0: tile (*ty, *tx) of plane *s */
static void prg__wino4_lane(int l, int w, int ty0, int *s, int *ty, int *tx) {
    if (w == 8) {
        *s = l / 4, *ty = l % 4 / 2, *tx = l % 2;
    } else {
        *s = 0, *ty = ty0 + l / (w / 4), *tx = l % (w / 4);
    }
}

/* The reference of the group transforms: v[(6 (k - k0) + j) vs + l] =
   (B^T d B)[k][j], k0 <= k < k1, of the 16 tiles of the group from tile row
   ty0 (zeros outside the plane) */
static void prg__wino4_in_ref(float *PRG_RESTRICT v, size_t vs, const float *plane, size_t ps, int h, int w,
                              int ty0, int k0, int k1) {
    int l, i, j, k, sp, ty, tx;
    for (l = 0; l < 16; l++) {
        float d[36], t[36], u[36];
        prg__wino4_lane(l, w, ty0, &sp, &ty, &tx);
        for (i = 0; i < 6; i++)
            for (j = 0; j < 6; j++) {
                int y = 4 * ty - 1 + i, x = 4 * tx - 1 + j;
                d[6 * i + j] = y >= 0 && y < h && x >= 0 && x < w ? plane[sp * ps + (size_t)y * w + x] : 0.0f;
            }
        for (j = 0; j < 6; j++) prg__wino4_bt(t + j, 6, d + j, 6); /* B^T d down the columns */
        for (k = 0; k < 6; k++) prg__wino4_bt(u + 6 * k, 1, t + 6 * k, 1); /* ... B along the rows */
        for (k = 6 * k0; k < 6 * k1; k++) v[(size_t)(k - 6 * k0) * vs + l] = u[k];
    }
}

/* y[a] = (A^T m)[a] for m[0], m[s], ..., m[5 s] */
static void prg__wino4_at(float *y, size_t ys, const float *m, size_t s) {
    float m0 = m[0], m1 = m[s], m2 = m[2 * s], m3 = m[3 * s], m4 = m[4 * s], m5 = m[5 * s];
    float p = m1 + m2, q = m1 - m2, r = m3 + m4, t = m3 - m4;
    y[0] = m0 + p + r;
    y[ys] = q + 2.0f * t;
    y[2 * ys] = p + 4.0f * r;
    y[3 * ys] = (q + m5) + 8.0f * t;
}

/* The group's outputs from m[xi ms + l]: Y = A^T m A, stored (plus bias)
   or added, every tile inside the plane */
static void prg__wino4_out_ref(float *plane, size_t ps, int w, int ty0, const float *PRG_RESTRICT m, size_t ms,
                               float bias, int accumulate) {
    int l, a, e, j, sp, ty, tx;
    for (l = 0; l < 16; l++) {
        float mm[36], t[24], y[16];
        prg__wino4_lane(l, w, ty0, &sp, &ty, &tx);
        for (j = 0; j < 36; j++) mm[j] = m[(size_t)j * ms + l];
        for (j = 0; j < 6; j++) prg__wino4_at(t + j, 6, mm + j, 6); /* A^T m down the columns */
        for (a = 0; a < 4; a++) prg__wino4_at(y + 4 * a, 1, t + 6 * a, 1); /* ... A along the rows */
        for (a = 0; a < 4; a++) {
            float *row = plane + sp * ps + (size_t)(4 * ty + a) * w + 4 * tx;
            for (e = 0; e < 4; e++) row[e] = accumulate ? row[e] + y[4 * a + e] : y[4 * a + e] + bias;
        }
    }
}

/* o[k] = (A e)[k] for the 4 values e[0], e[s], ..., e[3 s]: A = A^T's transpose */
static void prg__wino4_a(float *o, size_t os, const float *e, size_t s) {
    float e0 = e[0], e1 = e[s], e2 = e[2 * s], e3 = e[3 * s];
    float a = e0 + e2, b = e1 + e3, p = e0 + 4.0f * e2, q = e1 + 4.0f * e3;
    o[0] = e0;
    o[os] = a + b;
    o[2 * os] = a - b;
    o[3 * os] = p + 2.0f * q;
    o[4 * os] = p - 2.0f * q;
    o[5 * os] = e3;
}

/* o[r] = (G^T u)[r] for the 6 values u[0], u[s], ..., u[5 s] */
static void prg__wino4_gt(float *o, size_t os, const float *u, size_t s) {
    float u0 = u[0], a = u[s] + u[2 * s], b = u[s] - u[2 * s], c = u[3 * s] + u[4 * s], d = u[3 * s] - u[4 * s];
    o[0] = u0 * (1.0f / 4) - a * (1.0f / 6) + c * (1.0f / 24);
    o[os] = d * (1.0f / 12) - b * (1.0f / 6);
    o[2 * os] = (c - a) * (1.0f / 6) + u[5 * s];
}

/* d[9 i + 3 r + c] += (G^T dU G)[r][c] for i < cin, dU[xi] at u[xi * s + i]:
   the F(4x4,3x3) weight gradient of one output channel */
static void prg__wino4_dw_inverse(float *d, const float *u, size_t s, int cin) {
    int i, c, r;
    for (i = 0; i < cin; i++) {
        float t[3][6], g[3];
        for (c = 0; c < 6; c++) prg__wino4_gt(&t[0][c], 6, u + i + (size_t)c * s, 6 * s); /* G^T dU down the columns */
        for (r = 0; r < 3; r++) { /* ... G along the rows */
            prg__wino4_gt(g, 1, t[r], 1);
            for (c = 0; c < 3; c++) d[9 * i + 3 * r + c] += g[c];
        }
    }
}

/* The weight gradient's transform of dy: dm[(6 (k - k0) + j) ms + l] =
   (A e A^T)[k][j], k0 <= k < k1, for the 4x4 dy tiles e of the group from
   tile row ty0 (all inside the plane) */
static void prg__wino4_dy_ref(float *PRG_RESTRICT dm, size_t ms, const float *plane, size_t ps, int w, int ty0,
                              int k0, int k1) {
    int l, a, j, k, sp, ty, tx;
    for (l = 0; l < 16; l++) {
        float e[16], t[24], u[36];
        prg__wino4_lane(l, w, ty0, &sp, &ty, &tx);
        for (a = 0; a < 4; a++)
            for (j = 0; j < 4; j++) e[4 * a + j] = plane[sp * ps + (size_t)(4 * ty + a) * w + 4 * tx + j];
        for (j = 0; j < 4; j++) prg__wino4_a(t + j, 4, e + j, 4);      /* A e down the columns */
        for (k = 0; k < 6; k++) prg__wino4_a(u + 6 * k, 1, t + 4 * k, 1); /* ... A^T along the rows */
        for (k = 6 * k0; k < 6 * k1; k++) dm[(size_t)(k - 6 * k0) * ms + l] = u[k];
    }
}

/* u[6 i + j] = (G g G^T)[i][j] for the 3x3 kernel g[ki*ks + kj*js] */
static void prg__wino4_weight(float *u, const float *g, int ks, int js) {
    float t[6][3];
    int i, j;
    for (j = 0; j < 3; j++) { /* G g */
        float g0 = g[j * js], g1 = g[ks + j * js], g2 = g[2 * ks + j * js];
        t[0][j] = g0 * (1.0f / 4);
        t[1][j] = (g0 + g1 + g2) * (-1.0f / 6);
        t[2][j] = (g0 - g1 + g2) * (-1.0f / 6);
        t[3][j] = (g0 + 2.0f * g1 + 4.0f * g2) * (1.0f / 24);
        t[4][j] = (g0 - 2.0f * g1 + 4.0f * g2) * (1.0f / 24);
        t[5][j] = g2;
    }
    for (i = 0; i < 6; i++) { /* ... G^T */
        float g0 = t[i][0], g1 = t[i][1], g2 = t[i][2];
        u[6 * i] = g0 * (1.0f / 4);
        u[6 * i + 1] = (g0 + g1 + g2) * (-1.0f / 6);
        u[6 * i + 2] = (g0 - g1 + g2) * (-1.0f / 6);
        u[6 * i + 3] = (g0 + 2.0f * g1 + 4.0f * g2) * (1.0f / 24);
        u[6 * i + 4] = (g0 - 2.0f * g1 + 4.0f * g2) * (1.0f / 24);
        u[6 * i + 5] = g2;
    }
}

/* The transformed weights U[xi] (nxi = 16: F(2x2,3x3), 36: F(4x4,3x3)) of
   the output channels of A panels [p0, p1), packed as the GEMM kernel's A
   panels (prg__pack_a's layout, K chunks of kcb): (o, i) of U[xi] at
   u[(xi ci + pc) copad + (o - o % mr) kc + (i - pc) mr + o % mr], pc = i - i % kcb,
   kc = min(kcb, ci - pc); the rows past co zero.  The weights of output
   channel o and input channel i are g[o*os + i*is + ki*3 + kj] or, flipped,
   g[... + (2-ki)*3 + (2-kj)]. */
static void prg__wino_weights(float *u, const float *gw, size_t os, size_t is, int flip, int nxi, int co, int ci,
                              int copad, int mr, int kcb, int p0, int p1) {
    void (*tf)(float *, const float *, int, int) = nxi == 16 ? prg__wino_weight : prg__wino4_weight;
    int o, i, xi;
    for (o = p0 * mr; o < p1 * mr; o++)
        for (i = 0; i < ci; i++) {
            int pc = i - i % kcb, kc = ci - pc < kcb ? ci - pc : kcb;
            float t[36] = {0};
            float *dst = u + (size_t)pc * copad + (size_t)(o - o % mr) * kc + (size_t)(i - pc) * mr + o % mr;
            if (o < co) {
                const float *gp = gw + o * os + i * is;
                if (flip)
                    tf(t, gp + 8, -3, -1);
                else
                    tf(t, gp, 3, 1);
            }
            for (xi = 0; xi < nxi; xi++) dst[(size_t)xi * ci * copad] = t[xi];
        }
}

/* ---- the vector-filling transforms and the dW products, scalar ------------
   Twins of the AVX-512 kernels below with the same layouts: the whole-plane
   8 x 8 and the two-row 16-wide transforms are the row transforms over the
   tile rows they cover (the vector ones do the same operations in the same
   order: the same bits); prg__wino_nt_scalar runs the dot products of
   prg__wino_nt_avx512 in its 16 lanes and reduces them in its tree. */

/* v[(4 (k - k0) + j) vs + 4 ty + tx] = (B^T d B)[k][j] of the 16 tiles of an 8 x 8 plane */
static void prg__wino_in_plane8(float *PRG_RESTRICT v, size_t vs, const float *plane, int k0, int k1) {
    int ty;
    for (ty = 0; ty < 4; ty++) prg__wino_in_row(v + 4 * ty, vs, plane, 8, 8, ty, 0, 4, k0, k1);
}

static void prg__wino_dy_plane8(float *PRG_RESTRICT dm, size_t ms, const float *plane, int k0, int k1) {
    int ty;
    for (ty = 0; ty < 4; ty++) prg__wino_dy_row(dm + 4 * ty, ms, plane, 8, 8, ty, 0, 4, k0, k1);
}

static void prg__wino_out_plane8(float *plane, const float *PRG_RESTRICT m, size_t ms, float bias, int accumulate) {
    int ty;
    for (ty = 0; ty < 4; ty++) prg__wino_out_row(plane, 8, 8, ty, 0, 4, m + 4 * ty, ms, bias, accumulate);
}

/* lane 8 r + tx: tile (ty + r, tx) of a 16-wide plane (ty even, h a multiple of 4) */
static void prg__wino_in_rows16(float *PRG_RESTRICT v, size_t vs, const float *plane, int h, int ty, int k0,
                                int k1) {
    int r;
    for (r = 0; r < 2; r++) prg__wino_in_row(v + 8 * r, vs, plane, h, 16, ty + r, 0, 8, k0, k1);
}

static void prg__wino_dy_rows16(float *PRG_RESTRICT dm, size_t ms, const float *plane, int h, int ty, int k0,
                                int k1) {
    int r;
    for (r = 0; r < 2; r++) prg__wino_dy_row(dm + 8 * r, ms, plane, h, 16, ty + r, 0, 8, k0, k1);
}

static void prg__wino_out_rows16(float *plane, int ty, const float *PRG_RESTRICT m, size_t ms, float bias,
                                 int accumulate) {
    int r; /* both tile rows are inside the plane: its height is taken as 2 ty + 4 */
    for (r = 0; r < 2; r++)
        prg__wino_out_row(plane, 2 * ty + 4, 16, ty + r, 0, 8, m + 8 * r, ms, bias, accumulate);
}

/* c[i*ldc + j] += sum over p < k of a[i*lda + p] b[j*ldb + p], i < m, j < n:
   each sum in 16 lanes (lane l takes p = l mod 16), then the lanes reduced
   as ((L0+L2)+(L1+L3)) per quad and the quads as (Q0+Q1)+(Q2+Q3). */
static void prg__wino_nt_scalar(int m, int n, int k, const float *a, size_t lda, const float *b, size_t ldb,
                                float *c, int ldc) {
    int i, j, p, l, q;
    for (i = 0; i < m; i++)
        for (j = 0; j < n; j++) {
            const float *ar = a + (size_t)i * lda, *br = b + (size_t)j * ldb;
            float L[16], Q[4];
            memset(L, 0, sizeof L);
            for (p = 0; p < k; p += 16)
                for (l = 0; l < 16; l++) {
                    float av = p + l < k ? ar[p + l] : 0.0f, bv = p + l < k ? br[p + l] : 0.0f;
                    L[l] = fmaf(av, bv, L[l]);
                }
            for (q = 0; q < 4; q++) Q[q] = (L[4 * q] + L[4 * q + 2]) + (L[4 * q + 1] + L[4 * q + 3]);
            c[(size_t)i * ldc + j] += (Q[0] + Q[1]) + (Q[2] + Q[3]);
        }
}


static void prg__wino_nt_gemm(int m, int n, int k, const float *a, size_t lda, const float *b, size_t ldb,
                              float *c, int ldc) {
    prg_sgemm(0, 1, m, n, k, 1.0f, a, (int)lda, b, (int)ldb, 1.0f, c, ldc);
}

/* The tiles [t0, t1) cut into runs along tile rows that do not cross a
   multiple of cut (<= 64) tiles past t0: the statements (the macro's last
   arguments) run for each with b, ty, x0, len and l, the run's first tile
   less t0. */
#define PRG__WINO_RUNS(W, t0, t1, cut, ...)                                   \
    do {                                                                      \
        size_t t_ = (t0);                                                     \
        size_t per_ = (size_t)(W)->th * (W)->tw;                              \
        while (t_ < (t1)) {                                                   \
            int b = (int)(t_ / per_), ty = (int)(t_ % per_ / (W)->tw);        \
            int x0 = (int)(t_ % (W)->tw);                                     \
            int len = (W)->tw - x0;                                           \
            int l = (int)(t_ - (t0));                                         \
            if ((size_t)len > (t1) - t_) len = (int)((t1) - t_);              \
            if (len > (cut) - l % (cut)) len = (cut) - l % (cut);             \
            __VA_ARGS__                                                       \
            t_ += (size_t)len;                                                \
        }                                                                     \
    } while (0)

/* Asks for plane c of t [B][C][H][W] under the tiles [t0, t1) to be
   cached (rows 2ty and 2ty+1 of each run: the hardware prefetcher misses the
   start of each plane's short stretch). */
static void prg__wino_prefetch(const prg__wino *W, size_t t0, size_t t1, const float *t, int C, int c) {
#if defined(__GNUC__)
    size_t plane = (size_t)W->h * W->w;
    PRG__WINO_RUNS(W, t0, t1, 64, {
        int a, e;
        for (a = 0; a < 2 && 2 * ty + a < W->h; a++) {
            const char *s = (const char *)(t + ((size_t)b * C + c) * plane + (size_t)(2 * ty + a) * W->w + 2 * x0);
            int bytes = (int)sizeof(float) * (2 * len < W->w - 2 * x0 ? 2 * len : W->w - 2 * x0);
            for (e = 0; e < bytes; e += 64) __builtin_prefetch(s + e);
            __builtin_prefetch(s + bytes - 1);
        }
    });
#else
    (void)W; (void)t0; (void)t1; (void)t; (void)C; (void)c;
#endif
}

/* 8 x 8 maps with the whole-plane transforms: blocks start on whole planes
   (the forward's are whole panels, the weight gradient's multiples of 64
   tiles) */
static int prg__wino_planes8(const prg__wino *W) {
    return W->h == 8 && W->w == 8 && (W->fn.plane8 || prg__hook.all_kernels) && W->g->nr % 16 == 0 &&
           !prg__hook.wino_rows_only;
}

/* 16-wide maps, h a multiple of 4, with the two-row transforms: a plane's
   tiles come in whole vectors of 16 (two tile rows), blocks start on them */
static int prg__wino_rows16(const prg__wino *W) {
    return W->w == 16 && W->h % 4 == 0 && (W->fn.rows16 || prg__hook.all_kernels) && W->g->nr % 16 == 0 &&
           !prg__hook.wino_rows_only;
}

static size_t prg__wino_buf_floats(const prg__wino *W) {
    return (size_t)W->nxi * (W->vs + W->ms);
}

/* M[xi] = U[xi] V[xi] for the nt tiles of a block, every position xi */
static void prg__wino_products(const prg__wino *W, int nt, const float *V, float *M) {
    const prg__gemm_impl *g = W->g;
    int MR = g->mr, NR = g->nr, KC = g->kc, xi, jp, ip, pc, npan = (nt + NR - 1) / NR;
    for (xi = 0; xi < W->nxi; xi++)
        for (jp = 0; jp < npan; jp++) {
            int nr = nt - jp * NR < NR ? nt - jp * NR : NR;
            for (pc = 0; pc < W->ci; pc += KC) {
                int kc = W->ci - pc < KC ? W->ci - pc : KC;
                const float *bp = V + (size_t)xi * W->vs + ((size_t)jp * W->ci + pc) * NR;
                const float *ap = W->u + ((size_t)xi * W->ci + pc) * W->copad;
                for (ip = 0; ip < W->co; ip += MR) {
                    int mr = W->co - ip < MR ? W->co - ip : MR;
                    g->kernel(kc, ap + (size_t)ip * kc, bp,
                              M + (size_t)xi * W->ms + (size_t)ip * W->tb + (size_t)jp * NR, W->tb, mr, nr,
                              1.0f, pc ? 1.0f : 0.0f, NULL);
                }
            }
        }
}

/* One block of tiles [t0, t1): transform, 16 GEMMs, inverse transform. */
static void prg__wino_block(const prg__wino *W, size_t t0, size_t t1, float *buf) {
    int NR = W->g->nr, nt = (int)(t1 - t0), ci, co, xi;
    size_t plane_in = (size_t)W->h * W->w;
    float *V = buf, *M = V + (size_t)16 * W->vs;
    /* V in panels: V[xi*vs + (l/NR*Ci + ci)*NR + l%NR] (runs do not cross panels) */
    if (prg__wino_planes8(W)) { /* blocks hold whole planes of 16 tiles: NR is a multiple of 16 */
        size_t p;
        for (p = t0 / 16; p < t1 / 16; p++) {
            int l = (int)(p * 16 - t0);
            for (ci = 0; ci < W->ci; ci++)
                W->fn.in_plane8(V + ((size_t)(l / NR) * W->ci + ci) * NR + l % NR, W->vs,
                                W->x + (p * W->ci + ci) * 64, 0, 4);
        }
    } else if (prg__wino_rows16(W)) {
        size_t t, per = (size_t)W->th * 8;
        for (ci = 0; ci < W->ci; ci++)
            for (t = t0; t < t1; t += 16) {
                int l = (int)(t - t0);
                W->fn.in_rows16(V + ((size_t)(l / NR) * W->ci + ci) * NR + l % NR, W->vs,
                                W->x + (t / per * W->ci + ci) * plane_in, W->h, (int)(t % per / 8), 0, 4);
            }
    } else
    for (ci = 0; ci < W->ci; ci++) {
        if (ci + 1 < W->ci) prg__wino_prefetch(W, t0, t1, W->x, W->ci, ci + 1);
        PRG__WINO_RUNS(W, t0, t1, NR, {
            W->fn.in_row(V + ((size_t)(l / NR) * W->ci + ci) * NR + l % NR, W->vs,
                         W->x + ((size_t)b * W->ci + ci) * plane_in, W->h, W->w, ty, x0, len, 0, 4);
        });
        if (nt % NR) /* the last panel's unused lanes */
            for (xi = 0; xi < 16; xi++)
                memset(V + (size_t)xi * W->vs + ((size_t)(nt / NR) * W->ci + ci) * NR + nt % NR, 0,
                       (size_t)(NR - nt % NR) * sizeof(float));
    }
    prg__wino_products(W, nt, V, M);
    if (prg__wino_planes8(W)) {
        size_t p;
        for (p = t0 / 16; p < t1 / 16; p++)
            for (co = 0; co < W->co; co++)
                W->fn.out_plane8(W->y + (p * W->co + co) * 64, M + (size_t)co * W->tb + (p * 16 - t0),
                                 W->ms, W->bias ? W->bias[co] : 0.0f, W->accumulate);
    } else if (prg__wino_rows16(W)) {
        size_t t, per = (size_t)W->th * 8;
        for (co = 0; co < W->co; co++)
            for (t = t0; t < t1; t += 16)
                W->fn.out_rows16(W->y + (t / per * W->co + co) * plane_in, (int)(t % per / 8),
                                 M + (size_t)co * W->tb + (t - t0), W->ms,
                                 W->bias ? W->bias[co] : 0.0f, W->accumulate);
    } else
    for (co = 0; co < W->co; co++) {
        float bias = W->bias ? W->bias[co] : 0.0f;
        PRG__WINO_RUNS(W, t0, t1, 64, {
            W->fn.out_row(W->y + ((size_t)b * W->co + co) * plane_in, W->h, W->w, ty, x0, len,
                              M + (size_t)co * W->tb + l, W->ms, bias,
                              W->accumulate);
        });
    }
}

/* The same with F(4x4,3x3): the block holds whole groups of 16 tiles */
static void prg__wino4_block(const prg__wino *W, size_t t0, size_t t1, float *buf) {
    int NR = W->g->nr, nt = (int)(t1 - t0), c;
    size_t per = (size_t)W->th * W->tw, plane = (size_t)W->h * W->w, vs = W->vs, t;
    float *V = buf, *M = V + (size_t)36 * vs;
    for (c = 0; c < W->ci; c++)
        for (t = t0; t < t1; t += 16) {
            size_t l = t - t0;
            W->fn.in4(V + (l / NR * W->ci + c) * NR + l % NR, vs, W->x + (t / per * W->ci + c) * plane,
                      (size_t)W->ci * plane, W->h, W->w, (int)(t % per / W->tw), 0, 6);
        }
    prg__wino_products(W, nt, V, M);
    for (c = 0; c < W->co; c++)
        for (t = t0; t < t1; t += 16)
            W->fn.out4(W->y + (t / per * W->co + c) * plane, (size_t)W->co * plane, W->w, (int)(t % per / W->tw),
                       M + (size_t)c * W->tb + (t - t0), W->ms, W->bias ? W->bias[c] : 0.0f,
                       W->accumulate);
}

static void prg__wino_task(void *ctx, int ith, int nth) {
    const prg__wino *W = (const prg__wino *)ctx;
    size_t nblk = (W->ntiles + W->tb - 1) / W->tb, k;
    prg__share sh;
    if (nth > W->nbufs) { /* the pool grew since the buffers were reserved */
        if (ith >= W->nbufs) return;
        nth = W->nbufs;
    }
    prg__share_init(&sh, nblk, ith, nth);
    while (prg__share_next(&sh, &k)) {
        size_t t1 = (k + 1) * W->tb < W->ntiles ? (k + 1) * W->tb : W->ntiles;
        if (W->f4)
            prg__wino4_block(W, k * W->tb, t1, W->bufs[ith]->s.p);
        else
            prg__wino_block(W, k * W->tb, t1, W->bufs[ith]->s.p);
    }
}

/* F(4x4,3x3) for a forward or dx (dw = 0) or a weight gradient on h x w
   maps: 16- and 32-wide maps whose tiles fill groups of 16, and 8 x 8 maps
   of big batches (forward and dx), with the vector kernels.  Measured, 64 ->
   64 channels, 2 threads, against F(2x2,3x3): 8 x 8 forward and dx 14%
   faster at batch 32, even at 16, slower at 8 (32 tiles: one block, one
   thread); the 8 x 8 weight gradient 25-60% slower (dot products 32 tiles
   long per sample group) at every batch. */
#define PRG__WINO4_MIN_B8 32
static int prg__wino4_fits(const prg__wino_fns *fn, const prg__gemm_impl *g, int h, int w, int batch, int dw) {
    return !prg__hook.no_wino4 && (fn->fast4 || prg__hook.all_kernels) && g->nr % 16 == 0 &&
           ((w == 16 && h % 16 == 0) || (w == 32 && h % 8 == 0) ||
            (w == 8 && h == 8 && batch % 4 == 0 && batch >= PRG__WINO4_MIN_B8 && !dw));
}

/* The geometry and kernels shared by the forward and the weight gradient:
   F(4x4,3x3) when f4 (the plan's choice, prg__wino4_fits), else F(2x2,3x3) */
static void prg__wino_init(prg__wino *W, int batch, int cin, int h, int w, int cout, int f4) {
    int m;
    memset(W, 0, sizeof *W);
    W->g = prg__gemm_select();
    W->fn = prg__wino_select();
    W->b = batch; W->ci = cin; W->co = cout; W->h = h; W->w = w;
    W->f4 = f4;
    W->nxi = W->f4 ? 36 : 16;
    m = W->f4 ? 4 : 2;
    W->th = (h + m - 1) / m;
    W->tw = (w + m - 1) / m;
    W->ntiles = (size_t)batch * W->th * W->tw;
}

typedef struct prg__wino_wjob {
    prg__wino *W;
    const float *gw;
    size_t os, is;
    int flip;
} prg__wino_wjob;

/* U, packed, for the A panels [lo, hi) */
static void prg__wino_weights_range(void *ctx, size_t lo, size_t hi) {
    const prg__wino_wjob *j = (const prg__wino_wjob *)ctx;
    const prg__wino *W = j->W;
    W->fn.weights(W->u, j->gw, j->os, j->is, j->flip, W->nxi, W->co, W->ci, W->copad, W->g->mr, W->g->kc, (int)lo,
                  (int)hi);
}

/* Transformed, packed weights (U) kept from one call to the next while the
   owner vouches that the weights do not change (a U-Net inside one encode,
   sampling or fine-tuning call): made on the first call, reused after. */
typedef struct prg__wino_keep {
    float *u;                /* [nxi][K chunks][Co panels][kc][MR], cap floats */
    size_t cap;
    int valid;               /* u holds the weights of the key below */
    const float *gw;         /* key: weights, strides, flip, shape, transform, kernel */
    size_t os, is;
    int flip, ci, co, nxi;
    const prg__gemm_impl *g;
    size_t *left;            /* floats the owner may still allocate */
} prg__wino_keep;

static int prg__wino_keep_has(const prg__wino_keep *k, const float *gw, size_t os, size_t is, int flip,
                              const prg__wino *W) {
    return k && k->valid && k->gw == gw && k->os == os && k->is == is && k->flip == flip && k->ci == W->ci &&
           k->co == W->co && k->nxi == W->nxi && k->g == W->g;
}

/* Room for floats of U in k, within the owner's budget; 0 when not. */
static int prg__wino_keep_room(prg__wino_keep *k, size_t floats) {
    float *p;
    if (k->cap >= floats) return 1;
    if (*k->left + k->cap < floats) return 0;
    p = (float *)prg_alloc(floats * sizeof(float));
    if (!p) return 0;
    *k->left += k->cap;
    prg_free(k->u);
    k->u = p;
    k->cap = floats;
    *k->left -= floats;
    return 1;
}

/* y = conv(x, g) (+ bias), or y += conv(x, g) when accumulate; the weights of
   output channel o and input channel i are g[o*os + i*is + ki*3 + kj] or,
   flipped, g[... + (2-ki)*3 + (2-kj)].  With keep, the transformed weights
   are taken from it or left in it.  Returns -1 (y untouched) when the
   buffers cannot be had. */
static int prg__wino_conv(float *y, const float *x, const float *gw, size_t os, size_t is,
                          int flip, const float *bias, int accumulate, int batch, int cin, int h,
                          int w, int cout, int f4, prg__wino_keep *keep) {
    prg__wino W;
    prg__gemm_buf *ub;
    int i, ok = 1, nb, kept, into_keep = 0;
    size_t bytes_per_tile, ufloats;
    if (prg__hook.no_packer) return -1; /* tests: as if the buffers could not be had */
    prg__wino_init(&W, batch, cin, h, w, cout, f4);
    bytes_per_tile = (size_t)4 * W.nxi * (cin + cout);
    W.tb = (int)(PRG__WINO_L2 / bytes_per_tile) / W.g->nr * W.g->nr;
    if (W.tb < W.g->nr) W.tb = W.g->nr;
    if ((size_t)W.tb > W.ntiles) W.tb = (int)((W.ntiles + W.g->nr - 1) / W.g->nr * W.g->nr);
    W.npan = W.tb / W.g->nr;
    W.vs = prg__spread_stride((size_t)W.npan * W.ci * W.g->nr);
    W.ms = prg__spread_stride((size_t)W.co * W.tb);
    W.copad = (cout + W.g->mr - 1) / W.g->mr * W.g->mr;
    W.x = x; W.y = y; W.bias = bias; W.accumulate = accumulate;
    nb = prg__parallel_width();
    if ((size_t)nb > (W.ntiles + W.tb - 1) / W.tb) nb = (int)((W.ntiles + W.tb - 1) / W.tb);
    if (nb < 1) nb = 1;
    ufloats = (size_t)W.nxi * W.copad * cin;
    kept = prg__wino_keep_has(keep, gw, os, is, flip, &W);
    ub = kept ? NULL : prg__gemm_buf_take(ufloats);
    if (!kept && !ub) return -1;
    for (i = 0; i < nb && ok; i++) {
        W.bufs[i] = prg__gemm_buf_take(prg__wino_buf_floats(&W));
        if (W.bufs[i]) W.nbufs++; else ok = 0;
    }
    if (ok && kept) {
        W.u = keep->u;
    } else if (ok) {
        /* U: the transformed weights, packed (into keep when it has room) */
        prg__wino_wjob wj;
        wj.W = &W;
        wj.gw = gw; wj.os = os; wj.is = is; wj.flip = flip;
        W.u = ub->s.p;
        if (keep && prg__wino_keep_room(keep, ufloats)) {
            into_keep = 1;
            W.u = keep->u;
            keep->valid = 0;
            keep->gw = gw; keep->os = os; keep->is = is; keep->flip = flip;
            keep->ci = cin; keep->co = cout; keep->nxi = W.nxi; keep->g = W.g;
        }
        prg__parallel_for((size_t)(W.copad / W.g->mr), 2.0 * W.nxi * W.g->mr * cin, prg__wino_weights_range, &wj);
        if (into_keep) keep->valid = 1;
    }
    if (ok) prg_parallel(prg__wino_task, &W);
    for (i = 0; i < W.nbufs; i++) prg__gemm_buf_give(W.bufs[i]);
    if (ub) prg__gemm_buf_give(ub);
    return ok ? 0 : -1;
}

/* ---- weight gradient ---- */

typedef struct prg__wino_dw {
    prg__wino W;        /* geometry, x; y unused */
    const float *dy;    /* [B][Co][H][W] */
    float *du;          /* [nxi][Co][Ci], positions us apart */
    size_t us;          /* prg__spread_stride(Co Ci) */
    float *dwt;         /* [Co][Ci][3][3], added to */
    int nk;             /* rows of the transform: 4, or 6 (F(4x4,3x3)) */
    int nparts;         /* the nk rows of the transform split into nparts parts */
    int rows;           /* rows of the transform a thread's buffers hold */
} prg__wino_dw;

/* Rows [k0, k1) of the transform (positions nk k0 .. nk k1 - 1): for each
   block, its V and dM at those positions (in buf), then their GEMMs into dU
   (the same blocks, so the same sums, for any thread count). */
static void prg__wino_dw_rows(const prg__wino_dw *D, float *buf, int k0, int k1) {
    const prg__wino *W = &D->W;
    size_t t0, plane = (size_t)W->h * W->w;
    int nxi = D->nk * (k1 - k0), c, xi;
    float *V = buf, *dM = V + (size_t)nxi * W->vs;
    for (t0 = 0; t0 < W->ntiles; t0 += (size_t)W->tb) {
        size_t t1 = t0 + W->tb < W->ntiles ? t0 + W->tb : W->ntiles;
        int nt = (int)(t1 - t0);
        if (W->f4) { /* whole groups of 16 tiles */
            size_t t, per = (size_t)W->th * W->tw;
            for (c = 0; c < W->ci; c++)
                for (t = t0; t < t1; t += 16)
                    W->fn.in4(V + (size_t)c * W->tb + (t - t0), W->vs,
                              W->x + (t / per * W->ci + c) * plane, (size_t)W->ci * plane, W->h, W->w,
                              (int)(t % per / W->tw), k0, k1);
            for (c = 0; c < W->co; c++)
                for (t = t0; t < t1; t += 16)
                    W->fn.dy4(dM + (size_t)c * W->tb + (t - t0), W->ms,
                              D->dy + (t / per * W->co + c) * plane, (size_t)W->co * plane, W->w,
                              (int)(t % per / W->tw), k0, k1);
        } else if (prg__wino_planes8(W)) {
            size_t p;
            for (p = t0 / 16; p < t1 / 16; p++) {
                size_t l = p * 16 - t0;
                for (c = 0; c < W->ci; c++)
                    W->fn.in_plane8(V + (size_t)c * W->tb + l, W->vs, W->x + (p * W->ci + c) * 64,
                                    k0, k1);
                for (c = 0; c < W->co; c++)
                    W->fn.dy_plane8(dM + (size_t)c * W->tb + l, W->ms, D->dy + (p * W->co + c) * 64,
                                    k0, k1);
            }
        } else if (prg__wino_rows16(W)) {
            size_t t, per = (size_t)W->th * 8;
            for (c = 0; c < W->ci; c++)
                for (t = t0; t < t1; t += 16)
                    W->fn.in_rows16(V + (size_t)c * W->tb + (t - t0), W->vs,
                                    W->x + (t / per * W->ci + c) * plane, W->h, (int)(t % per / 8), k0, k1);
            for (c = 0; c < W->co; c++)
                for (t = t0; t < t1; t += 16)
                    W->fn.dy_rows16(dM + (size_t)c * W->tb + (t - t0), W->ms,
                                    D->dy + (t / per * W->co + c) * plane, W->h, (int)(t % per / 8), k0, k1);
        } else {
        for (c = 0; c < W->ci; c++) {
            if (c + 1 < W->ci) prg__wino_prefetch(W, t0, t1, W->x, W->ci, c + 1);
            PRG__WINO_RUNS(W, t0, t1, 64, {
                W->fn.in_row(V + (size_t)c * W->tb + l, W->vs,
                             W->x + ((size_t)b * W->ci + c) * plane, W->h, W->w, ty, x0, len, k0, k1);
            });
        }
        for (c = 0; c < W->co; c++) {
            if (c + 1 < W->co) prg__wino_prefetch(W, t0, t1, D->dy, W->co, c + 1);
            PRG__WINO_RUNS(W, t0, t1, 64, {
                W->fn.dy_row(dM + (size_t)c * W->tb + l, W->ms,
                             D->dy + ((size_t)b * W->co + c) * plane, W->h, W->w, ty, x0, len, k0, k1);
            });
        }
        }
        for (xi = 0; xi < nxi; xi++)
            W->fn.nt(W->co, W->ci, nt, dM + (size_t)xi * W->ms, (size_t)W->tb,
                     V + (size_t)xi * W->vs, (size_t)W->tb,
                     D->du + (size_t)(D->nk * k0 + xi) * D->us, W->ci);
    }
}

/* A thread's share of the nk rows, D->rows at a time (its buffer's size:
   more when the job runs on fewer threads than planned) */
static void prg__wino_dw_task(void *ctx, int ith, int nth) {
    const prg__wino_dw *D = (const prg__wino_dw *)ctx;
    size_t lo, hi;
    int k0;
    if (nth > D->nparts) {
        if (ith >= D->nparts) return;
        nth = D->nparts;
    }
    prg_split_range((size_t)D->nk, 1, ith, nth, &lo, &hi);
    for (k0 = (int)lo; k0 < (int)hi; k0 += D->rows)
        prg__wino_dw_rows(D, D->W.bufs[ith]->s.p, k0, k0 + D->rows < (int)hi ? k0 + D->rows : (int)hi);
}

/* dW += G^T dU G for output channels [lo, hi) */
static void prg__wino_dw_inverse_range(void *ctx, size_t lo, size_t hi) {
    const prg__wino_dw *D = (const prg__wino_dw *)ctx;
    const int cin = D->W.ci;
    const size_t s = D->us;
    size_t o;
    int i;
    if (D->nk == 6) {
        for (o = lo; o < hi; o++) D->W.fn.dw_inverse4(D->dwt + o * cin * 9, D->du + o * cin, s, cin);
        return;
    }
    for (o = lo; o < hi; o++)
        for (i = 0; i < cin; i++) {
            float t[3][4], *d = D->dwt + (o * cin + i) * 9;
            const float *u = D->du + o * cin + i;
            int c, r;
            for (c = 0; c < 4; c++) {
                float u0 = u[(size_t)c * s], u1 = u[(size_t)(4 + c) * s], u2 = u[(size_t)(8 + c) * s],
                      u3 = u[(size_t)(12 + c) * s];
                t[0][c] = u0 + 0.5f * (u1 + u2);
                t[1][c] = 0.5f * (u1 - u2);
                t[2][c] = 0.5f * (u1 + u2) + u3;
            }
            for (r = 0; r < 3; r++) {
                d[3 * r] += t[r][0] + 0.5f * (t[r][1] + t[r][2]);
                d[3 * r + 1] += 0.5f * (t[r][1] - t[r][2]);
                d[3 * r + 2] += 0.5f * (t[r][1] + t[r][2]) + t[r][3];
            }
        }
}

/* dW[o*os + i*is + ki*3 + kj] += (G^T dU G) for the 3x3 stride-1 pad-1
   convolution of x [B][Ci][H][W] with output gradient dy [B][Co][H][W];
   -1 (dW untouched) when the buffers cannot be had. */
static int prg__wino_dweights(float *dwt, const float *x, const float *dy, int batch, int cin, int h,
                              int w, int cout, int f4) {
    prg__wino_dw D;
    prg__wino *W = &D.W;
    prg__gemm_buf *ub;
    int i, ok = 1, nb;
    size_t per;
    if (prg__hook.no_packer) return -1; /* tests: as if the buffers could not be had */
    memset(&D, 0, sizeof D);
    prg__wino_init(W, batch, cin, h, w, cout, f4);
    /* the dot products up to 64 x 64 channels, the packed GEMM above (measured) */
    if (!(W->fn.dot_nt || prg__hook.all_kernels) || (double)cin * cout > 64.0 * 64.0) W->fn.nt = prg__wino_nt_gemm;
    W->x = x;
    D.dy = dy;
    D.nk = W->f4 ? 6 : 4;
    nb = prg__hook.wino_dw_plan ? prg__hook.wino_dw_plan : prg__parallel_width();
    if (nb > D.nk) nb = D.nk;
    D.nparts = nb;
    per = (size_t)4 * D.nk * (cin + cout); /* bytes of V and dM per tile and row of the transform */
    W->tb = (int)(PRG__WINO_DW_L2 / per) / 64 * 64;
    if (W->tb < 64) W->tb = 64;
    if ((size_t)W->tb > W->ntiles) W->tb = (int)W->ntiles;
    W->vs = prg__spread_stride((size_t)cin * W->tb);
    W->ms = prg__spread_stride((size_t)cout * W->tb);
    D.us = prg__spread_stride((size_t)cout * cin);
    ub = prg__gemm_buf_take((size_t)W->nxi * D.us);
    if (!ub) return -1;
    D.rows = (D.nk + nb - 1) / nb;
    for (i = 0; i < nb && ok; i++) {
        W->bufs[i] = prg__gemm_buf_take((size_t)D.rows * D.nk * (W->vs + W->ms));
        if (W->bufs[i]) W->nbufs++; else ok = 0;
    }
    if (ok) {
        D.du = ub->s.p;
        memset(D.du, 0, (size_t)W->nxi * D.us * sizeof(float));
        prg_parallel(prg__wino_dw_task, &D);
        D.dwt = dwt;
        prg__parallel_for((size_t)cout, 40.0 * cin, prg__wino_dw_inverse_range, &D);
    }
    for (i = 0; i < W->nbufs; i++) prg__gemm_buf_give(W->bufs[i]);
    prg__gemm_buf_give(ub);
    return ok ? 0 : -1;
}

/* >>conv ================================================================ */
/* The convolution engine.
   Nearly all of a U-Net's arithmetic is in its 3x3 stride-1 pad-1
   convolutions; the rest (1x1 skips, stride-2 downsampling, the first and
   last layers) is small.  Each convolution is a plan (prg__conv_plan, see
   "conv plans" below): made once for its shape and batch, it records which
   of these paths its forward, dx and dW take (prg__conv_algo), chosen from
   the shape and the flags of the CPU table (prg__cpu) in use:

   - Winograd, for 3x3 stride-1 pad-1 convolutions with at least 8 channels
     each way (prg__wino_use).  F(4x4,3x3) (36 products per 4x4 output tile
     and channel pair: 2.25 per output, against 9 computed directly) where
     the tiles fill whole vectors with the AVX-512 kernels (prg__wino4_fits):
     16- and 32-wide maps for the forward, dx and the weight gradient, and
     8 x 8 maps at batch 32 or more for the forward and dx.  F(2x2,3x3) (16
     products per 2x2 tile: 4 per output) elsewhere: the forward and dx on
     maps of 16 x 16 and up, on 8 x 8 maps with the whole-plane transforms,
     or on maps of 8 x 8 and up with 256 channels or more each way; the
     weight gradient on any map.
   - Direct, for 3x3 stride-1 pad-1 convolutions with at most 4 channels in
     or out (the first and the last layer) where the AVX-512 kernel exists:
     32 pixels x 8 output channels of accumulators over the unpadded planes,
     which a GEMM only a few rows high or deep could not fill.
   - One GEMM per sample on x itself for 1x1 stride-1 unpadded convolutions,
     the batch split across threads (each sample's task adds its bias).
   - Implicit GEMM for everything else: the forward GEMM packs its panels of
     the column matrix straight from a zero-padded copy of the input, so no
     im2col pass is made; dx of a stride-1 convolution (pad <= k-1, Co < 2 Ci)
     is the convolution of dy with the flipped weights, packed the same way
     (no col2im); other dx are W^T dy scattered back (col2im); 3x3 stride-1
     weight gradients (up to 64 x 128 channels) run a direct AVX-512 kernel
     of nine shifted dot products, other weight gradients a GEMM against the
     stored column matrix.  Without the GEMM's packing buffers the stored
     column matrix serves every product.

   Winograd, how it runs.  The tiles are cut into blocks whose transformed
   input and products stay in L2 (PRG__WINO_L2).  A block's input transform
   writes straight into the GEMM kernel's B panels; the 16 (or 36) products
   per tile position run on the GEMM micro-kernel against the transformed
   weights, which are written straight into its A panels (a panel's output
   channels in the vector lanes) as they are made; the inverse transform
   writes the output (plus bias) or adds to it.  Blocks are independent and
   each is done by one thread, so the bits do not depend on the thread count.
   dx is the same computation on dy with the flipped weights; the weight
   gradient is its transpose, dU = sum over tiles of (A dY A^T) (B^T d B)^T
   and dW = G^T dU G, with a packing-free 4x4 dot-product kernel up to 64 x 64
   channels and the packed GEMM above that.
   The transforms fill every vector lane.  F(2x2,3x3): 16 tiles of one tile
   row on maps 32 wide or more, two tile rows (one image row a register) on
   16-wide maps, a whole 8 x 8 plane (four registers) on 8 x 8 maps; all three
   give the bits of the plain row transforms.  F(4x4,3x3): 16 tiles a vector
   (four tile rows of a 16-wide map, two of a 32-wide one, on 8 x 8 maps the
   four tiles of four samples' planes), the image rows in registers and the
   tile columns gathered across them by permutes.
   The 16 or 36 positions of a tile sit in the transform buffers at a stride
   of prg__spread_stride: one cache line more than their data whenever that
   is a multiple of 1 KiB, so that a transform's 36 loads or stores of one
   group of tiles do not all fall into one L1 set.
   Accuracy: F(4x4,3x3)'s larger transform entries (up to 8 and 1/24) give
   about 5e-6 of the largest output against 3e-7 for F(2x2,3x3) on tiny32's
   layers (weight gradient 2-4e-6 against 2-5e-7), a small fraction of the
   K eps bound the tests hold every convolution path to.

   Kept weights.  Within one encode, sampling or classifier forward or
   backward the weights do not change, so the U-Net transforms and packs each
   convolution's Winograd weights once per call (forward and dx) instead of
   once per evaluation, within PRG_WINO_KEEP_MB (prg__wino_keep).

   Without AVX-512 the CPU tables leave the paths above that pay only with
   its kernels (direct, the direct dW, F(4x4,3x3), the whole-plane and
   two-row transforms) off and take the implicit GEMM; their scalar twins
   are in every table, and the tests run them (prg__hook.all_kernels,
   prg__hook.force).  prg_conv2d_forward_ref and prg_conv2d_backward_ref
   are the direct definitions the tests compare every path with. */

/* *sg = sum g, *sgx = sum g x */
static void prg__row_dots(const float *g, const float *x, size_t n, double *sg, double *sgx) {
    float a1[8] = {0, 0, 0, 0, 0, 0, 0, 0}, a2[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    double s1 = 0.0, s2 = 0.0;
    size_t i = 0;
    int l;
    for (; i + 8 <= n; i += 8)
        for (l = 0; l < 8; l++) {
            a1[l] += g[i + l];
            a2[l] += g[i + l] * x[i + l];
        }
    for (; i < n; i++) {
        s1 += g[i];
        s2 += (double)g[i] * x[i];
    }
    for (l = 0; l < 8; l++) {
        s1 += a1[l];
        s2 += a2[l];
    }
    *sg = s1;
    *sgx = s2;
}

/* ---- vector kernels ---------------------------------------------------------
   The softmax, SiLU forward/backward and the row sums of the norms,
   vectorised on x86 following the GEMM kernel in use.  Their exp is one
   polynomial everywhere (PRG__EXP_POLY below, Cephes-style; at most 1.01
   ulp, 8.5e-8 relative, from the exact exp over every float with a normal
   result): in the AVX-512 and AVX2 kernels (prg__exp16, prg__exp8 in
   >>simd) and in the scalar twins here (prg__exp_poly), which give the
   AVX-512 kernels' bits (and the AVX2 ones' where exp's argument is within
   [-87, 88]).  So on an AVX-512 machine prg_gemm_set_kernel("scalar")
   changes no bit of SiLU and at most the last bits of a softmax, whose sum
   it takes in another order.  Every element goes through the same
   instructions wherever it sits in the array (tails are masked or padded),
   so splitting work across threads never changes a bit. */
typedef struct prg__vec_ops {
    void (*softmax)(float *row, size_t n); /* row = softmax(row), n >= 1 */
    void (*silu_fwd)(float *y, const float *x, size_t n);
    void (*silu_bwd)(float *dx, const float *dy, const float *x, size_t n, int set); /* dx += (= when set) */
    void (*dots)(const float *g, const float *x, size_t n, double *sg, double *sgx);
    /* 3x3 weight gradient taps of two output channels:
       out[c*9 + ki*3 + kj] += sum_i sum_q g_c[i*gstride + q] x[i*xstride + q + ki*wp + kj]
       over q < n and i < count */
    void (*dw3)(float *out, const float *g0, const float *g1, const float *x, size_t n, int wp,
                int count, size_t gstride, size_t xstride);
    /* 3x3 pad-1 convolutions with few channels on one side: prg__conv3_scalar
       and prg__dw3p_scalar below */
    void (*conv3)(float *y, const float *x, const float *wt, size_t os, size_t is, int flip,
                  const float *bias, int accumulate, int ci, int ob, int h, int w);
    void (*dw3p)(float *out, const float *g0, const float *g1, const float *x, int h, int w, int count,
                 size_t gstride, size_t xstride);
    /* the three direct kernels above beat the GEMM paths (the vector ones; the
       scalar twins run only when a test asks, prg__hook.all_kernels) */
    int direct;
} prg__vec_ops;

/* The CPU table: every kernel the engine dispatches, one table per
   instruction set, decided once (the tables and the choosing are at the end
   of >>simd). */
typedef struct prg__cpu {
    const char *name;                 /* "avx512", "avx2", "neon", "scalar" */
    int need;                         /* PRG__NEED_*: what the CPU must have */
    prg__gemm_impl gemm;
    prg__gemm_b_packer implicit_pack; /* panels of the implicit column matrix */
    prg__vec_ops vec;
    prg__wino_fns wino;
} prg__cpu;
#define PRG__NEED_AVX512 1
#define PRG__NEED_AVX2 2
static const prg__cpu *prg__cpu_get(void);
static prg__vec_ops prg__vec_select(void);

/* exp(v) = 2^k p(r), k = round(v log2 e), r = v - k ln 2 with ln 2 in two
   parts (the first has 9 bits, so k times it is exact), p(r) of degree 6 by
   fused multiply-adds.  One definition for the vector kernels and the
   scalar twin, so the two cannot drift apart: FMADD(a, b, c) = a b + c
   rounded once, MUL, ADD, SET1(constant) of the instruction set (plain
   operations and fmaf in prg__exp_poly_range). */
#define PRG__EXP_LOG2E 1.44269504088896341f
#define PRG__EXP_LN2_HI 0.693359375f
#define PRG__EXP_LN2_LO (-2.12194440e-4f)
/* the argument ranges: [-104, 89] where 2^k is applied with gradual
   underflow (scalef, ldexpf), [-87, 88] where 2^k is a normal float (the
   AVX2 kernel builds it from exponent bits) */
#define PRG__EXP_MIN (-104.0f)
#define PRG__EXP_MAX 89.0f
#define PRG__EXP_FLUSH_MIN (-87.0f)
#define PRG__EXP_FLUSH_MAX 88.0f
#define PRG__EXP_POLY(P, FMADD, MUL, ADD, SET1, r)                                   \
    P = SET1(1.9875691500e-4f);                                                      \
    P = FMADD(P, r, SET1(1.3981999507e-3f));                                         \
    P = FMADD(P, r, SET1(8.3334519073e-3f));                                         \
    P = FMADD(P, r, SET1(4.1665795894e-2f));                                         \
    P = FMADD(P, r, SET1(1.6666665459e-1f));                                         \
    P = FMADD(P, r, SET1(5.0000001201e-1f));                                         \
    P = FMADD(P, MUL(r, r), r);                                                      \
    P = ADD(P, SET1(1.0f))

#define PRG__FMUL(a, b) ((a) * (b))
#define PRG__FADD(a, b) ((a) + (b))
#define PRG__FSET1(a) (a)
/* The scalar twin of the vector exp, the same bits as prg__exp16
   (flush = 0) or prg__exp8 (flush = 1), step for step: with flush = 0, v
   clamped to [-104, 89] and p scaled by 2^k in one rounding (ldexpf, as
   scalef), so that results below the normal range come out subnormal and
   -inf gives 0, +inf inf; with flush = 1, computed on [-87, 88], 0 below
   and inf above.  NaN is returned first, since converting k to int would
   be undefined for it. */
static float prg__exp_poly_range(float v, int flush) {
    float k, r, p;
    if (v != v) return v + v;
    if (flush && v < PRG__EXP_FLUSH_MIN) return 0.0f;
    if (flush && v > PRG__EXP_FLUSH_MAX) return HUGE_VALF;
    if (v < PRG__EXP_MIN) v = PRG__EXP_MIN;
    if (v > PRG__EXP_MAX) v = PRG__EXP_MAX;
    k = nearbyintf(v * PRG__EXP_LOG2E); /* to nearest, ties to even, as the vector rounding */
    r = fmaf(-k, PRG__EXP_LN2_HI, v);
    r = fmaf(-k, PRG__EXP_LN2_LO, r);
    PRG__EXP_POLY(p, fmaf, PRG__FMUL, PRG__FADD, PRG__FSET1, r);
    return flush ? p * ldexpf(1.0f, (int)k) : ldexpf(p, (int)k);
}
#undef PRG__FMUL
#undef PRG__FADD
#undef PRG__FSET1
/* exp as the AVX-512 kernels compute it: the scalar table's */
static float prg__exp_poly(float v) { return prg__exp_poly_range(v, 0); }

static void prg__exp_shift_scalar(float *y, const float *x, float shift, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) y[i] = prg__exp_poly(x[i] - shift);
}
/* softmax of a row with a given y = exp(x - shift) */
static void prg__softmax_with(float *row, size_t n, void (*exp_shift)(float *, const float *, float, size_t)) {
    float mx = row[0], inv;
    double sum = 0.0;
    size_t i;
    for (i = 1; i < n; i++) mx = row[i] > mx ? row[i] : mx;
    exp_shift(row, row, mx, n);
    for (i = 0; i < n; i++) sum += row[i];
    inv = (float)(1.0 / sum);
    for (i = 0; i < n; i++) row[i] *= inv;
}
static void prg__softmax_scalar(float *row, size_t n) { prg__softmax_with(row, n, prg__exp_shift_scalar); }
/* SiLU forward and backward in the operations of an AVX-512 lane
   (prg__silu_fwd_avx512, prg__silu_bwd_avx512), in their order, so the
   same bits; -x as 0 - x as there. */
static void prg__silu_fwd_scalar(float *y, const float *x, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) y[i] = x[i] / (1.0f + prg__exp_poly(0.0f - x[i]));
}
/* d silu = s (1 + x (1 - s)), s = sigmoid(x) = 1 / (1 + e), e = exp(-x);
   1 - s is taken as e s for x >= 0, where 1 - s would cancel.  x (1 - s)
   is an expression of its own so that the compiler does not fuse it with
   the add into one rounding where the vector code rounds twice (clang
   does with -march=native otherwise). */
static void prg__silu_bwd_scalar(float *dx, const float *dy, const float *x, size_t n, int set) {
    size_t i;
    for (i = 0; i < n; i++) {
        float e = prg__exp_poly(0.0f - x[i]), s = 1.0f / (1.0f + e);
        float oms = x[i] >= 0.0f ? e * s : 1.0f - s, xo = x[i] * oms, d = dy[i] * (s * (1.0f + xo));
        dx[i] = set ? d : dx[i] + d;
    }
}

/* ---- the direct convolution kernels, scalar ------------------------------
   The same algorithm as their AVX-512 twins below (prg__dw3_avx512,
   prg__conv3_avx512, prg__dw3p_avx512): 16 lanes (32 pixels for conv3) of
   accumulators, each the same fused multiply-adds in the same order, the
   lanes summed in lane order; so the same bits. */

/* the sum of 16 lanes in lane order (prg__hsum16) */
static float prg__lanes16_sum(const float *t) {
    float s = 0.0f;
    int l;
    for (l = 0; l < 16; l++) s += t[l];
    return s;
}

static void prg__dw3_scalar(float *out, const float *g0, const float *g1, const float *x, size_t n,
                            int wp, int count, size_t gstride, size_t xstride) {
    float a[18][16];
    size_t q, off[9];
    int i, t, l;
    for (t = 0; t < 9; t++) off[t] = (size_t)(t / 3) * wp + (size_t)(t % 3);
    memset(a, 0, sizeof a);
    for (i = 0; i < count; i++, g0 += gstride, g1 += gstride, x += xstride)
        for (q = 0; q < n; q += 16) {
            int nl = n - q < 16 ? (int)(n - q) : 16;
            for (l = 0; l < 16; l++) {
                float u0 = l < nl ? g0[q + l] : 0.0f, u1 = l < nl ? g1[q + l] : 0.0f;
                for (t = 0; t < 9; t++) {
                    float v = l < nl ? x[q + off[t] + l] : 0.0f;
                    a[t][l] = fmaf(u0, v, a[t][l]);
                    a[9 + t][l] = fmaf(u1, v, a[9 + t][l]);
                }
            }
        }
    for (t = 0; t < 18; t++) out[t] += prg__lanes16_sum(a[t]);
}

/* y[o*h*w + p] = bias[o] + sum over i < ci and the nine taps of
   wt[o*os + i*is + tap] (tap 8 - t when flip) x[i*h*w + p shifted], o < ob
   (<= 8); with accumulate, y += the sum.  32 pixels of a row at a time. */
static void prg__conv3_scalar(float *y, const float *x, const float *wt, size_t os, size_t is, int flip,
                              const float *bias, int accumulate, int ci, int ob, int h, int w) {
    size_t plane = (size_t)h * w;
    float acc[8][32];
    int oy, ox, i, ki, kj, o, l;
    for (oy = 0; oy < h; oy++)
        for (ox = 0; ox < w; ox += 32) {
            memset(acc, 0, sizeof acc);
            for (i = 0; i < ci; i++)
                for (ki = 0; ki < 3; ki++) {
                    int iy = oy + ki - 1;
                    const float *row;
                    if (iy < 0 || iy >= h) continue;
                    row = x + i * plane + (size_t)iy * w;
                    for (kj = 0; kj < 3; kj++) {
                        const float *wp = wt + i * is + (flip ? 8 - 3 * ki - kj : 3 * ki + kj);
                        float v[32];
                        for (l = 0; l < 32; l++) {
                            int c = ox + l + kj - 1;
                            v[l] = c >= 0 && c < w ? row[c] : 0.0f;
                        }
                        for (o = 0; o < ob; o++) {
                            float t = wp[o * os];
                            for (l = 0; l < 32; l++) acc[o][l] = fmaf(t, v[l], acc[o][l]);
                        }
                    }
                }
            for (o = 0; o < ob; o++) {
                float *d = y + o * plane + (size_t)oy * w + ox;
                for (l = 0; l < 32 && ox + l < w; l++)
                    d[l] = accumulate ? d[l] + acc[o][l] : bias ? acc[o][l] + bias[o] : acc[o][l];
            }
        }
}

/* The nine pad-1 taps of two output channels over unpadded h x w planes:
   out[c*9 + ki*3 + kj] += sum over planes i < count and pixels (oy, ox) of
   g_c[i*gstride + oy*w + ox] x[i*xstride + (oy+ki-1)*w + ox+kj-1] (zero
   outside the plane); 16 columns of a plane at a time, down its rows. */
static void prg__dw3p_scalar(float *out, const float *g0, const float *g1, const float *x, int h, int w,
                             int count, size_t gstride, size_t xstride) {
    float a[18][16];
    int i, oy, ox, ki, kj, l, t;
    memset(a, 0, sizeof a);
    for (i = 0; i < count; i++, g0 += gstride, g1 += gstride, x += xstride)
        for (ox = 0; ox < w; ox += 16)
            for (oy = 0; oy < h; oy++) {
                size_t q = (size_t)oy * w + ox;
                for (ki = 0; ki < 3; ki++) {
                    int iy = oy + ki - 1;
                    if (iy < 0 || iy >= h) continue;
                    for (kj = 0; kj < 3; kj++)
                        for (l = 0; l < 16; l++) {
                            int c = ox + l, xc = c + kj - 1, in = c < w && xc >= 0 && xc < w;
                            float u0 = c < w ? g0[q + l] : 0.0f, u1 = c < w ? g1[q + l] : 0.0f;
                            float v = in ? x[(size_t)iy * w + xc] : 0.0f;
                            a[3 * ki + kj][l] = fmaf(u0, v, a[3 * ki + kj][l]);
                            a[9 + 3 * ki + kj][l] = fmaf(u1, v, a[9 + 3 * ki + kj][l]);
                        }
                }
            }
    for (t = 0; t < 18; t++) out[t] += prg__lanes16_sum(a[t]);
}


/* Row kernels in blocks of 8 with a fixed trip count, which compilers
   vectorise even at -O2; the tail computes the same expression. */
static void prg__row_axpb(float *PRG_RESTRICT y, const float *PRG_RESTRICT x, float a, float b,
                          size_t n) { /* y = a x + b */
    size_t i = 0;
    int l;
    for (; i + 8 <= n; i += 8)
        for (l = 0; l < 8; l++) y[i + l] = x[i + l] * a + b;
    for (; i < n; i++) y[i] = x[i] * a + b;
}

/* sum x: 8 float lanes, then double */
static double prg__row_sum(const float *x, size_t n) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    double s = 0.0;
    size_t i = 0;
    int l;
    for (; i + 8 <= n; i += 8)
        for (l = 0; l < 8; l++) acc[l] += x[i + l];
    for (; i < n; i++) s += x[i];
    for (l = 0; l < 8; l++) s += acc[l];
    return s;
}

/* y = a g + b x + c (the same expression as prg__row_acc3's sum) */
static void prg__row_set3(float *PRG_RESTRICT y, const float *PRG_RESTRICT g, const float *PRG_RESTRICT x, float a,
                          float b, float c, size_t n) {
    size_t i = 0;
    int l;
    for (; i + 8 <= n; i += 8)
        for (l = 0; l < 8; l++) y[i + l] = a * g[i + l] + b * x[i + l] + c;
    for (; i < n; i++) y[i] = a * g[i] + b * x[i] + c;
}

static void prg__row_acc3(float *PRG_RESTRICT y, const float *PRG_RESTRICT g,
                          const float *PRG_RESTRICT x, float a, float b, float c,
                          size_t n) { /* y += a g + b x + c (x may be NULL when b == 0) */
    size_t i = 0;
    int l;
    if (!x) {
        for (; i + 8 <= n; i += 8)
            for (l = 0; l < 8; l++) y[i + l] += a * g[i + l] + c;
        for (; i < n; i++) y[i] += a * g[i] + c;
        return;
    }
    for (; i + 8 <= n; i += 8)
        for (l = 0; l < 8; l++) y[i + l] += a * g[i + l] + b * x[i + l] + c;
    for (; i < n; i++) y[i] += a * g[i] + b * x[i] + c;
}


/* ---- conv2d ---------------------------------------------------------------
   GEMMs over the column matrix ([Ci*k*k][nb*Ho*Wo]).  The batch is processed
   in chunks of nb samples whose columns sit side by side, so that small
   feature maps still give GEMMs with about PRG__CONV_COLS columns.
   - forward: y = W col, the GEMM packing col's panels straight from a
     zero-padded copy of the chunk (implicit column matrix, below);
   - dx: for stride 1 (pad <= k-1, Co < 2 Ci) the convolution of dy, padded
     by k-1-p, with the flipped weights, packed the same way; otherwise
     col' = W^T dy stored, then scattered back (col2im);
   - dW: for 3x3 stride 1 up to 64 x 128 channels with the AVX-512 kernel,
     nine shifted dot products (prg__conv_dw3); otherwise col dy^T with col
     stored (im2col).
   3x3 stride-1 pad-1 convolutions with 8 or more channels each way take
   Winograd instead (below; see prg__wino_use for the maps): F(4x4,3x3) on
   16- and 32-wide maps with AVX-512, F(2x2,3x3) elsewhere; and
   those with at most 4 channels in or out a direct kernel (AVX-512; below).
   When the GEMM's packing buffers cannot be had, the stored column matrix
   serves every product.  A 1x1 stride-1 unpadded conv needs no column
   matrix: it is one GEMM per sample on x itself. */
#define PRG__CONV_COLS 1024

typedef struct prg__conv {
    int b, ci, h, w, co, k, s, p, ho, wo;
    int nb;        /* samples per chunk */
    size_t hw_out; /* Ho*Wo */
    size_t kk;     /* Ci*k*k: rows of the column matrix */
    size_t ncols;  /* nb*Ho*Wo */
    int direct;    /* 1x1, stride 1, no padding */
    int dx_conv;   /* dx as a convolution of dy (stride 1, pad <= k-1, Co < 2 Ci) */
    /* workspace layout, in floats: [r0][r1][dwt_t: kk*Co][wf: kk*Co if dx_conv] */
    size_t r0;     /* the column matrix, or a padded chunk of x or dy */
    size_t r1;     /* a chunk's output (or dy, or dx) in [C][nb*HW] order (nb > 1) */
} prg__conv;

static prg__conv prg__conv_geom(int batch, int cin, int h, int w, int cout, int k, int stride,
                                int pad) {
    prg__conv c;
    PRG_ASSERT(batch > 0 && cin > 0 && h > 0 && w > 0 && cout > 0 && k > 0 && stride > 0 &&
               pad >= 0 && h + 2 * pad >= k && w + 2 * pad >= k);
    c.b = batch; c.ci = cin; c.h = h; c.w = w; c.co = cout; c.k = k; c.s = stride; c.p = pad;
    c.ho = (h + 2 * pad - k) / stride + 1;
    c.wo = (w + 2 * pad - k) / stride + 1;
    c.hw_out = (size_t)c.ho * c.wo;
    c.kk = (size_t)cin * k * k;
    c.nb = (int)((PRG__CONV_COLS + c.hw_out - 1) / c.hw_out);
    if (c.nb > batch) c.nb = batch;
    c.ncols = (size_t)c.nb * c.hw_out;
    c.direct = k == 1 && stride == 1 && pad == 0;
    /* the dx convolution packs Co*k*k rows per column for Ci output rows,
       the column matrix route sums Ci*k*k rows per column after a GEMM of
       depth Co: the first is faster unless Co is well above Ci (measured) */
    c.dx_conv = stride == 1 && pad <= k - 1 && cout < 2 * cin;
    c.r0 = c.kk * c.ncols;
    {
        size_t xp = (size_t)c.nb * cin * (h + 2 * pad) * (w + 2 * pad);
        size_t q = (size_t)(k - 1 - pad), dyp = (size_t)c.nb * cout * (c.ho + 2 * q) * (c.wo + 2 * q);
        if (xp > c.r0) c.r0 = xp;
        if (c.dx_conv && dyp > c.r0) c.r0 = dyp;
    }
    c.r1 = 0;
    if (c.nb > 1) {
        c.r1 = (size_t)cout * c.ncols;
        if (c.dx_conv && (size_t)cin * c.nb * h * w > c.r1) c.r1 = (size_t)cin * c.nb * h * w;
    }
    if (k == 3 && stride == 1) { /* dy with rows widened to the padded input's, for prg__conv_dw3 */
        size_t dyw = (size_t)c.nb * cout * c.ho * (w + 2 * pad);
        if (dyw > c.r1) c.r1 = dyw;
    }
    return c;
}

size_t prg_conv2d_workspace(int batch, int cin, int h, int w, int cout, int k, int stride, int pad) {
    prg__conv c = prg__conv_geom(batch, cin, h, w, cout, k, stride, pad);
    if (c.direct) return 0;
    /* the column matrix or a padded chunk, a chunk's output/gradient block
       in [C][nb*HW] order when a chunk holds several samples, dW transposed
       [Ci*k*k][Co], and the flipped weights of the dx convolution */
    return c.r0 + c.r1 + c.kk * c.co * (c.dx_conv ? 2 : 1);
}

/* ---- implicit column matrix -------------------------------------------
   The GEMMs of a convolution read their column matrix panel by panel from a
   zero-padded copy of the input: col[r][j] with r = (ci*k + ki)*k + kj and
   j = (bi*Ho + oy)*Wo + ox is xp[bi][ci][oy*s + ki][ox*s + kj].  Each panel
   is packed straight from xp, so the column matrix is never stored. */
typedef struct prg__implicit_cols {
    const float *xp; /* [nb][C][Hp][Wp] */
    int c, hp, wp, k, s, ho, wo;
} prg__implicit_cols;

/* xp[bi][ci] = the plane x[b0+bi][ci] inside a border of pad zeros, per plane */
typedef struct prg__pad_job {
    const float *x;
    float *xp;
    int h, w, pad;
} prg__pad_job;

static void prg__pad_range(void *ctx, size_t lo, size_t hi) {
    const prg__pad_job *j = (const prg__pad_job *)ctx;
    int hp = j->h + 2 * j->pad, wp = j->w + 2 * j->pad, y;
    size_t idx;
    for (idx = lo; idx < hi; idx++) {
        const float *src = j->x + idx * j->h * j->w;
        float *dst = j->xp + idx * hp * wp;
        memset(dst, 0, (size_t)j->pad * wp * sizeof(float));
        for (y = 0; y < j->h; y++) {
            float *d = dst + (size_t)(y + j->pad) * wp;
            memset(d, 0, (size_t)j->pad * sizeof(float));
            memcpy(d + j->pad, src + (size_t)y * j->w, (size_t)j->w * sizeof(float));
            memset(d + j->pad + j->w, 0, (size_t)j->pad * sizeof(float));
        }
        memset(dst + (size_t)(j->h + j->pad) * wp, 0, (size_t)j->pad * wp * sizeof(float));
    }
}

static void prg__pad_planes(float *xp, const float *x, size_t planes, int h, int w, int pad) {
    prg__pad_job j;
    j.x = x;
    j.xp = xp;
    j.h = h;
    j.w = w;
    j.pad = pad;
    prg__parallel_for(planes, (double)(h + 2 * pad) * (w + 2 * pad), prg__pad_range, &j);
}

/* The panel packer (prg__gemm_b_packer) over the implicit column matrix:
   the panel's columns are cut into runs along one output row, each a
   contiguous (stride 1) or strided piece of a padded input row. */
/* The panel's columns [j0, j0+cols) cut into runs along one output row:
   run g is columns [pos, pos+len) and starts at xp + off (channel 0, tap
   0).  Returns the number of runs (at most cols). */
static int prg__implicit_cols_runs(const prg__implicit_cols *ic, int j0, int cols, int *off,
                                   int *len, int *pos) {
    int nseg = 0, jj, hw = ic->ho * ic->wo;
    size_t plane = (size_t)ic->hp * ic->wp;
    for (jj = 0; jj < cols;) {
        int j = j0 + jj, bi = j / hw, oy = j % hw / ic->wo, ox = j % hw % ic->wo;
        int run = ic->wo - ox < cols - jj ? ic->wo - ox : cols - jj;
        off[nseg] = (int)((size_t)bi * ic->c * plane + (size_t)oy * ic->s * ic->wp + (size_t)ox * ic->s);
        len[nseg] = run;
        pos[nseg++] = jj;
        jj += run;
    }
    return nseg;
}

/* the offset of row p0 (channel, tap) in xp, and the step to the next row */
#define PRG__COLS_NEXT_ROW(ic, ci, ki, kj)                                    \
    do {                                                                      \
        if (++(kj) == (ic)->k) {                                              \
            (kj) = 0;                                                         \
            if (++(ki) == (ic)->k) {                                          \
                (ki) = 0;                                                     \
                (ci)++;                                                       \
            }                                                                 \
        }                                                                     \
    } while (0)

PRG_INLINE_COPIES
static void prg__implicit_cols_pack(const void *ctx, float *PRG_RESTRICT dst, int j0, int cols,
                                    int p0, int kc, int nr) {
    const prg__implicit_cols *ic = (const prg__implicit_cols *)ctx;
    int off[64], len[64], pos[64], nseg, p, t, g;
    int kk = ic->k * ic->k, ci, ki, kj;
    size_t plane = (size_t)ic->hp * ic->wp;
    PRG_ASSERT(nr <= 64);
    nseg = prg__implicit_cols_runs(ic, j0, cols, off, len, pos);
    ci = p0 / kk;
    ki = p0 % kk / ic->k;
    kj = p0 % ic->k;
    for (p = 0; p < kc; p++) {
        const float *base = ic->xp + (size_t)ci * plane + (size_t)ki * ic->wp + kj;
        float *d = dst + (size_t)p * nr;
        for (g = 0; g < nseg; g++) {
            const float *src = base + off[g];
            float *dd = d + pos[g];
            if (ic->s != 1) {
                for (t = 0; t < len[g]; t++) dd[t] = src[(size_t)t * ic->s];
            } else {
                int u;
                for (t = 0; t + 8 <= len[g]; t += 8) /* blocks of 8: vector moves */
                    for (u = 0; u < 8; u++) dd[t + u] = src[t + u];
                for (; t < len[g]; t++) dd[t] = src[t];
            }
        }
        for (t = cols; t < nr; t++) d[t] = 0.0f;
        PRG__COLS_NEXT_ROW(ic, ci, ki, kj);
    }
}


typedef struct prg__conv_job {
    const prg__conv *c;
    int b0, nb;             /* chunk: samples [b0, b0+nb) */
    const float *x, *wt, *bias, *dy;
    float *col, *y, *tmp, *dx, *dbias;
    int set;       /* 1x1 dx: = rather than += */
    int task_bias; /* 1x1 forward: each sample's task adds the bias */
} prg__conv_job;

/* col[r][(bi*Ho + oy)*Wo + ox] = x[b0+bi][ci][oy*s-p+ki][ox*s-p+kj], r = (ci*k+ki)*k+kj */
static void prg__im2col_range(void *ctx, size_t lo, size_t hi) {
    const prg__conv_job *j = (const prg__conv_job *)ctx;
    const prg__conv *c = j->c;
    size_t r;
    for (r = lo; r < hi; r++) {
        int kj = (int)(r % (size_t)c->k), ki = (int)(r / (size_t)c->k % (size_t)c->k);
        int ci = (int)(r / ((size_t)c->k * c->k)), bi, oy, ox;
        float *dst = j->col + r * (size_t)j->nb * c->hw_out;
        /* output columns [ox0, ox1) read inside the image */
        int ox0 = c->p - kj > 0 ? (c->p - kj + c->s - 1) / c->s : 0;
        int ox1 = (c->w - 1 + c->p - kj) >= 0 ? (c->w - 1 + c->p - kj) / c->s + 1 : 0;
        if (ox1 > c->wo) ox1 = c->wo;
        if (ox0 > ox1) ox0 = ox1;
        for (bi = 0; bi < j->nb; bi++) {
            const float *plane = j->x + ((size_t)(j->b0 + bi) * c->ci + ci) * c->h * c->w;
            for (oy = 0; oy < c->ho; oy++, dst += c->wo) {
                int iy = oy * c->s - c->p + ki;
                if (iy < 0 || iy >= c->h) {
                    memset(dst, 0, (size_t)c->wo * sizeof(float));
                    continue;
                }
                {
                    const float *src = plane + (size_t)iy * c->w - c->p + kj;
                    for (ox = 0; ox < ox0; ox++) dst[ox] = 0.0f;
                    if (c->s == 1)
                        memcpy(dst + ox0, src + ox0, (size_t)(ox1 - ox0) * sizeof(float));
                    else
                        for (ox = ox0; ox < ox1; ox++) dst[ox] = src[(size_t)ox * c->s];
                    for (ox = ox1; ox < c->wo; ox++) dst[ox] = 0.0f;
                }
            }
        }
    }
}

/* dx[b0+bi][ci] += the column-gradient entries that map to it, per plane
   (bi, ci) = index, in a fixed (ki, kj, oy, ox) order. */
static void prg__col2im_range(void *ctx, size_t lo, size_t hi) {
    const prg__conv_job *j = (const prg__conv_job *)ctx;
    const prg__conv *c = j->c;
    size_t idx;
    for (idx = lo; idx < hi; idx++) {
        int bi = (int)(idx / (size_t)c->ci), ci = (int)(idx % (size_t)c->ci), ki, kj, oy, ox;
        float *plane = j->dx + ((size_t)(j->b0 + bi) * c->ci + ci) * c->h * c->w;
        for (ki = 0; ki < c->k; ki++)
            for (kj = 0; kj < c->k; kj++) {
                size_t r = ((size_t)ci * c->k + ki) * c->k + kj;
                const float *src = j->col + r * j->nb * c->hw_out + (size_t)bi * c->hw_out;
                int ox0 = c->p - kj > 0 ? (c->p - kj + c->s - 1) / c->s : 0;
                int ox1 = (c->w - 1 + c->p - kj) >= 0 ? (c->w - 1 + c->p - kj) / c->s + 1 : 0;
                if (ox1 > c->wo) ox1 = c->wo;
                for (oy = 0; oy < c->ho; oy++, src += c->wo) {
                    int iy = oy * c->s - c->p + ki;
                    float *d;
                    if (iy < 0 || iy >= c->h) continue;
                    d = plane + (size_t)iy * c->w - c->p + kj;
                    if (c->s == 1)
                        for (ox = ox0; ox < ox1; ox++) d[ox] += src[ox];
                    else
                        for (ox = ox0; ox < ox1; ox++) d[(size_t)ox * c->s] += src[ox];
                }
            }
    }
}

/* y[b0+bi][co] = tmp[co][bi*HoWo ...] (+ bias), per (bi, co); with tmp == NULL
   only the bias is added in place. */
static void prg__conv_out_range(void *ctx, size_t lo, size_t hi) {
    const prg__conv_job *j = (const prg__conv_job *)ctx;
    const prg__conv *c = j->c;
    size_t idx, i, n = c->hw_out;
    for (idx = lo; idx < hi; idx++) {
        int bi = (int)(idx / (size_t)c->co), co = (int)(idx % (size_t)c->co);
        float *dst = j->y + ((size_t)(j->b0 + bi) * c->co + co) * n;
        float bv = j->bias ? j->bias[co] : 0.0f;
        if (j->tmp) {
            const float *src = j->tmp + (size_t)co * j->nb * n + (size_t)bi * n;
            prg__row_axpb(dst, src, 1.0f, bv, n);
        } else if (j->bias) {
            for (i = 0; i < n; i++) dst[i] += bv;
        }
    }
}

/* tmp[co][bi*HoWo + i] = dy[b0+bi][co][i], per row co */
static void prg__conv_gather_dy_range(void *ctx, size_t lo, size_t hi) {
    const prg__conv_job *j = (const prg__conv_job *)ctx;
    const prg__conv *c = j->c;
    size_t co, n = c->hw_out;
    int bi;
    for (co = lo; co < hi; co++)
        for (bi = 0; bi < j->nb; bi++)
            memcpy(j->tmp + co * j->nb * n + (size_t)bi * n,
                   j->dy + ((size_t)(j->b0 + bi) * c->co + co) * n, n * sizeof(float));
}

/* dwt[co][r] += dwt_t[r][co], per co */
static void prg__conv_dw_add_range(void *ctx, size_t lo, size_t hi) {
    const prg__conv_job *j = (const prg__conv_job *)ctx;
    const prg__conv *c = j->c;
    size_t co, r;
    for (co = lo; co < hi; co++)
        for (r = 0; r < c->kk; r++) j->dx[co * c->kk + r] += j->tmp[r * c->co + co];
}

/* dbias[co] += sum over the batch and pixels, batch-major, per co */
static void prg__conv_dbias_range(void *ctx, size_t lo, size_t hi) {
    const prg__conv_job *j = (const prg__conv_job *)ctx;
    const prg__conv *c = j->c;
    size_t co, n = c->hw_out;
    int b;
    for (co = lo; co < hi; co++) {
        double s = 0.0;
        for (b = 0; b < c->b; b++) s += prg__row_sum(j->dy + ((size_t)b * c->co + co) * n, n);
        j->dbias[co] += (float)s;
    }
}

/* Where Winograd is used (measured, AVX-512, against the implicit GEMM and
   the direct dW kernel): 3x3, stride 1, pad 1, at least 8 channels each way;
   the forward and dx on maps of 16 x 16 or more, on 8 x 8 maps where the
   whole-plane transforms exist (AVX-512: 64 -> 64 channels at batch 32
   forward, dx and dW 2.2x, 2.4x and 2.2x faster than the implicit GEMM and
   the row transforms), or on other maps of 8 x 8 or more with 256 channels
   or more each way (on smaller maps the row transforms fill few vector lanes
   and the weight transform is not paid back); the weight gradient on any
   map. */
static int prg__wino_use(const prg__conv *c, int dw) {
    return !prg__hook.no_wino && c->k == 3 && c->s == 1 && c->p == 1 && c->ci >= PRG__WINO_MIN_C &&
           c->co >= PRG__WINO_MIN_C &&
           (dw || (c->h >= 16 && c->w >= 16) || (c->h >= 8 && c->w >= 8 && c->ci >= 256 && c->co >= 256) ||
            (c->h == 8 && c->w == 8 && (prg__cpu_get()->wino.plane8 || prg__hook.all_kernels) &&
             prg__gemm_select()->nr % 16 == 0));
}

/* ---- few channels on one side: direct ----------------------------------
   3x3 stride-1 pad-1 convolutions with at most PRG__FEWC channels in or out
   (a U-Net's first and last layers), where the vector kernel exists
   (AVX-512): the GEMM would pack a column matrix for a product only a few
   rows high or a few rows deep.  The kernels read the unpadded planes.  A
   forward or dx task is a sample and a block of up to 8 output channels; a
   dW task is a pair of output channels and one input channel, summed over
   the whole batch in a fixed order; so the bits do not depend on the thread
   count. */
#define PRG__FEWC 4

static int prg__conv_few(const prg__conv *c, const prg__vec_ops *ops) {
    return (ops->direct || prg__hook.all_kernels) && c->k == 3 && c->s == 1 && c->p == 1 &&
           (c->ci <= PRG__FEWC || c->co <= PRG__FEWC);
}

typedef struct prg__few_job {
    const prg__vec_ops *ops;
    float *y;
    const float *x, *wt, *bias;
    size_t os, is;
    int flip, accumulate;
    int ci, co, h, w, nob; /* as the kernel sees them; nob blocks of 8 outputs per sample */
} prg__few_job;

static void prg__few_range(void *ctx, size_t lo, size_t hi) {
    const prg__few_job *j = (const prg__few_job *)ctx;
    size_t plane = (size_t)j->h * j->w, u;
    for (u = lo; u < hi; u++) {
        int b = (int)(u / (size_t)j->nob), o0 = (int)(u % (size_t)j->nob) * 8;
        int ob = j->co - o0 < 8 ? j->co - o0 : 8;
        j->ops->conv3(j->y + ((size_t)b * j->co + o0) * plane, j->x + (size_t)b * j->ci * plane,
                      j->wt + (size_t)o0 * j->os, j->os, j->is, j->flip, j->bias ? j->bias + o0 : NULL,
                      j->accumulate, j->ci, ob, j->h, j->w);
    }
}

/* y (=, + bias) or += the convolution of x [B][ci][H][W] into co channels
   with the weights of output o, input i at wt + o*os + i*is (taps flipped
   when flip) */
static void prg__conv_few_run(const prg__vec_ops *ops, float *y, const float *x, const float *wt, size_t os,
                              size_t is, int flip, const float *bias, int accumulate, int batch, int ci,
                              int h, int w, int co) {
    prg__few_job j;
    j.ops = ops;
    j.y = y; j.x = x; j.wt = wt; j.bias = bias;
    j.os = os; j.is = is; j.flip = flip; j.accumulate = accumulate;
    j.ci = ci; j.co = co; j.h = h; j.w = w;
    j.nob = (co + 7) / 8;
    prg__parallel_for((size_t)batch * j.nob, 18.0 * ci * h * w * (co < 8 ? co : 8), prg__few_range, &j);
}

typedef struct prg__few_dw_job {
    const prg__vec_ops *ops;
    const prg__conv *c;
    const float *x, *dy;
    float *dwt;
} prg__few_dw_job;

static void prg__few_dw_range(void *ctx, size_t lo, size_t hi) {
    const prg__few_dw_job *j = (const prg__few_dw_job *)ctx;
    const prg__conv *c = j->c;
    size_t plane = (size_t)c->h * c->w, u;
    for (u = lo; u < hi; u++) {
        int c0 = 2 * (int)(u / (size_t)c->ci), i = (int)(u % (size_t)c->ci), c1 = c0 + 1 < c->co ? c0 + 1 : c0, t;
        float acc[18];
        for (t = 0; t < 18; t++) acc[t] = 0.0f;
        j->ops->dw3p(acc, j->dy + (size_t)c0 * plane, j->dy + (size_t)c1 * plane, j->x + (size_t)i * plane, c->h,
                     c->w, c->b, (size_t)c->co * plane, (size_t)c->ci * plane);
        for (t = 0; t < 9; t++) j->dwt[((size_t)c0 * c->ci + i) * 9 + t] += acc[t];
        if (c1 != c0)
            for (t = 0; t < 9; t++) j->dwt[((size_t)c1 * c->ci + i) * 9 + t] += acc[9 + t];
    }
}

/* 1x1 stride-1 unpadded, samples [lo, hi): y[b] = W x[b], or with dy set
   (backward) dx[b] += W^T dy[b] (each GEMM gives the same bits run alone or
   split across threads) */
static void prg__conv_direct_range(void *ctx, size_t lo, size_t hi) {
    const prg__conv_job *j = (const prg__conv_job *)ctx;
    const prg__conv *c = j->c;
    int n = (int)c->hw_out;
    size_t b;
    for (b = lo; b < hi; b++)
        if (j->dy)
            prg_sgemm(1, 0, c->ci, n, c->co, 1.0f, j->wt, c->ci, j->dy + b * c->co * n, n, j->set ? 0.0f : 1.0f,
                      j->dx + b * c->ci * n, n);
        else {
            prg_sgemm(0, 0, c->co, n, c->ci, 1.0f, j->wt, c->ci, j->x + b * c->ci * n, n, 0.0f,
                      j->y + b * c->co * n, n);
            if (j->bias && j->task_bias) {
                prg__conv_job o = *j;
                o.b0 = (int)b;
                o.nb = 1;
                prg__conv_out_range(&o, 0, (size_t)c->co);
            }
        }
}

/* ---- conv plans ------------------------------------------------------------
   A convolution of one shape (batch, channels, map, kernel, stride, padding)
   planned once: its algorithm for the forward, dx and dW products, chosen
   from the shape and the CPU table (the flags of prg__cpu, the test hooks),
   and the Winograd weights it keeps between the evaluations of one call
   (forward and dx).  The U-Net holds one plan per convolution, planned for
   its batch; prg_conv2d_forward and prg_conv2d_backward make a one-shot
   plan per call.  When Winograd or the implicit GEMM cannot have their
   packing buffers, the run takes the stored column matrix instead (the
   plan's choice stays what it was). */
typedef enum prg__conv_algo {
    PRG__CONV_NONE = 0,
    PRG__CONV_1X1,      /* one GEMM per sample on x itself (1x1, stride 1, unpadded) */
    PRG__CONV_DIRECT,   /* few channels on one side: the direct kernels (prg__conv_few) */
    PRG__CONV_DW3,      /* dW only: the direct 3x3 kernel of nine shifted dot products */
    PRG__CONV_WINO2,    /* Winograd F(2x2,3x3) */
    PRG__CONV_WINO4,    /* Winograd F(4x4,3x3) */
    PRG__CONV_IMPLICIT, /* the GEMM packing its column panels from the padded input (dx: from dy) */
    PRG__CONV_IM2COL    /* the stored column matrix (dx: W^T dy, then col2im) */
} prg__conv_algo;

typedef struct prg__conv_plan {
    prg__conv c;               /* geometry, for the planned batch */
    const prg__cpu *cpu;       /* the table it was planned with */
    prg__conv_algo fwd, dx, dw;
    prg__conv_algo dx_gemm, dw_gemm; /* where Winograd cannot have its buffers */
    prg__wino_keep keep[2];    /* Winograd weights kept: forward, dx (U-Net plans) */
} prg__conv_plan;

/* Tests (prg__hook.force): algorithm a for every product of the planned
   shape that it can compute (not for the 1x1 ones, which have one way). */
static void prg__conv_plan_force(prg__conv_plan *p, prg__conv_algo a) {
    const prg__conv *c = &p->c;
    int k3 = c->k == 3 && c->s == 1 && c->p == 1, b8 = c->b % 4 == 0 && c->b >= PRG__WINO4_MIN_B8;
    int fits4 = p->cpu->gemm.nr % 16 == 0 && ((c->w == 16 && c->h % 16 == 0) || (c->w == 32 && c->h % 8 == 0));
    if (c->direct) return;
    switch (a) {
    case PRG__CONV_DIRECT:
    case PRG__CONV_WINO2:
        if (k3) p->fwd = p->dx = p->dw = a;
        break;
    case PRG__CONV_WINO4:
        if (k3 && (fits4 || (c->h == 8 && c->w == 8 && b8 && p->cpu->gemm.nr % 16 == 0))) p->fwd = p->dx = a;
        if (k3 && fits4) p->dw = a;
        break;
    case PRG__CONV_DW3:
        if (c->k == 3 && c->s == 1) p->dw = p->dw_gemm = a;
        break;
    case PRG__CONV_IMPLICIT:
        p->fwd = a;
        if (c->dx_conv) p->dx = p->dx_gemm = a;
        break;
    case PRG__CONV_IM2COL:
        p->fwd = p->dx = p->dx_gemm = p->dw = p->dw_gemm = a;
        break;
    default: break;
    }
}

/* Plans (or re-plans, keeping what keep holds) the convolution for batch. */
static void prg__conv_plan_set(prg__conv_plan *p, int batch, int cin, int h, int w, int cout, int k, int stride,
                               int pad) {
    const prg__cpu *t = prg__cpu_get();
    const prg__conv *c;
    p->c = prg__conv_geom(batch, cin, h, w, cout, k, stride, pad);
    p->cpu = t;
    c = &p->c;
    if (c->direct) {
        p->fwd = p->dx = p->dw = p->dx_gemm = p->dw_gemm = PRG__CONV_1X1;
        return;
    }
    /* the dx convolution packs Co*k*k rows per column for Ci output rows,
       the column matrix route sums Ci*k*k rows per column after a GEMM of
       depth Co: the first is faster unless Co is well above Ci (measured) */
    p->dx_gemm = c->dx_conv ? PRG__CONV_IMPLICIT : PRG__CONV_IM2COL;
    /* the direct 3x3 dW beats the GEMM up to about 64 x 128 channels (measured) */
    p->dw_gemm = k == 3 && stride == 1 && (t->vec.direct || prg__hook.all_kernels) &&
                         (double)cin * cout <= 64.0 * 128.0
                     ? PRG__CONV_DW3
                     : PRG__CONV_IM2COL;
    if (prg__wino_use(c, 0)) {
        /* dx is the forward's computation on dy: the same map, the same fit */
        p->fwd = p->dx = prg__wino4_fits(&t->wino, &t->gemm, h, w, batch, 0) ? PRG__CONV_WINO4 : PRG__CONV_WINO2;
    } else {
        p->fwd = PRG__CONV_IMPLICIT;
        p->dx = p->dx_gemm;
    }
    p->dw = prg__wino_use(c, 1)
                ? prg__wino4_fits(&t->wino, &t->gemm, h, w, batch, 1) ? PRG__CONV_WINO4 : PRG__CONV_WINO2
                : p->dw_gemm;
    if (prg__conv_few(c, &t->vec)) p->fwd = p->dx = p->dw = PRG__CONV_DIRECT;
    if (prg__hook.force) prg__conv_plan_force(p, (prg__conv_algo)prg__hook.force);
}

static void prg__conv_plan_free(prg__conv_plan *p) {
    prg_free(p->keep[0].u);
    prg_free(p->keep[1].u);
    p->keep[0].u = p->keep[1].u = NULL;
    p->keep[0].cap = p->keep[1].cap = 0;
    p->keep[0].valid = p->keep[1].valid = 0;
}

/* y = conv(x) (+ bias) as planned; keep: use the plan's kept weights */
static void prg__conv_plan_forward(prg__conv_plan *p, int keep, float *y, const float *x, const float *wt,
                                   const float *bias, float *ws) {
    const prg__conv *c = &p->c;
    const int batch = c->b, cin = c->ci, h = c->h, w = c->w, cout = c->co, pad = c->p;
    prg__conv_job j;
    int b0;
    memset(&j, 0, sizeof j);
    j.c = c;
    j.x = x;
    j.y = y;
    j.bias = bias;
    switch (p->fwd) {
    case PRG__CONV_1X1:
        j.wt = wt;
        if (batch >= 2 * prg__parallel_width()) { /* a sample per task: one wake-up, not one per sample */
            j.task_bias = 1;
            prg__parallel_for((size_t)batch, (double)cout * cin * c->hw_out, prg__conv_direct_range, &j);
        } else {
            j.nb = batch;
            prg__conv_direct_range(&j, 0, (size_t)batch);
            prg__parallel_for((size_t)batch * cout, (double)c->hw_out, prg__conv_out_range, &j);
        }
        return;
    case PRG__CONV_DIRECT: {
        prg__vec_ops ops = p->cpu->vec;
        prg__conv_few_run(&ops, y, x, wt, c->kk, 9, 0, bias, 0, batch, cin, h, w, cout);
        return;
    }
    case PRG__CONV_WINO2:
    case PRG__CONV_WINO4:
        if (prg__wino_conv(y, x, wt, c->kk, 9, 0, bias, 0, batch, cin, h, w, cout, p->fwd == PRG__CONV_WINO4,
                           keep ? &p->keep[0] : NULL) == 0)
            return;
        break; /* no buffers: the implicit GEMM, or its column matrix */
    default: break;
    }
    PRG_ASSERT(ws != NULL);
    j.col = ws;
    for (b0 = 0; b0 < batch; b0 += c->nb) {
        int nb = batch - b0 < c->nb ? batch - b0 : c->nb;
        size_t ncols = (size_t)nb * c->hw_out;
        float *dst = nb > 1 ? ws + c->r0 : y + (size_t)b0 * cout * c->hw_out;
        int stored = p->fwd == PRG__CONV_IM2COL;
        prg__implicit_cols ic;
        j.b0 = b0;
        j.nb = nb;
        j.tmp = nb > 1 ? dst : NULL;
        if (!stored) {
            prg__pad_planes(ws, x + (size_t)b0 * cin * h * w, (size_t)nb * cin, h, w, pad);
            ic.xp = ws;
            ic.c = cin; ic.hp = h + 2 * pad; ic.wp = w + 2 * pad;
            ic.k = c->k; ic.s = c->s; ic.ho = c->ho; ic.wo = c->wo;
            stored = prg__sgemm_packer(cout, (int)ncols, (int)c->kk, 1.0f, wt, (int)c->kk, p->cpu->implicit_pack,
                                       &ic, 0.0f, dst, (int)ncols) != 0;
        }
        if (stored) { /* the explicit column matrix */
            prg__parallel_for(c->kk, (double)ncols, prg__im2col_range, &j);
            prg_sgemm(0, 0, cout, (int)ncols, (int)c->kk, 1.0f, wt, (int)c->kk, ws, (int)ncols,
                      0.0f, dst, (int)ncols);
        }
        prg__parallel_for((size_t)nb * cout, (double)c->hw_out, prg__conv_out_range, &j);
    }
}

void prg_conv2d_forward(float *y, const float *x, const float *wt, const float *bias, int batch,
                        int cin, int h, int w, int cout, int k, int stride, int pad, float *ws) {
    prg__conv_plan p;
    memset(&p, 0, sizeof p);
    prg__conv_plan_set(&p, batch, cin, h, w, cout, k, stride, pad);
    prg__conv_plan_forward(&p, 0, y, x, wt, bias, ws);
}

/* wf[ci][co][ki][kj] = wt[co][ci][k-1-ki][k-1-kj]: the weights of dx as a
   convolution of dy, per ci */
static void prg__conv_flip_range(void *ctx, size_t lo, size_t hi) {
    const prg__conv_job *j = (const prg__conv_job *)ctx;
    const prg__conv *c = j->c;
    size_t ci;
    int co, q, kk = c->k * c->k;
    for (ci = lo; ci < hi; ci++)
        for (co = 0; co < c->co; co++)
            for (q = 0; q < kk; q++)
                j->tmp[(ci * c->co + co) * kk + q] = j->wt[((size_t)co * c->ci + ci) * kk + kk - 1 - q];
}

/* dx[b0+bi][ci] += tmp[ci][bi*H*W ...], per (bi, ci) */
static void prg__conv_dx_add_range(void *ctx, size_t lo, size_t hi) {
    const prg__conv_job *j = (const prg__conv_job *)ctx;
    const prg__conv *c = j->c;
    size_t idx, i, n = (size_t)c->h * c->w;
    for (idx = lo; idx < hi; idx++) {
        int bi = (int)(idx / (size_t)c->ci), ci = (int)(idx % (size_t)c->ci);
        float *d = j->dx + ((size_t)(j->b0 + bi) * c->ci + ci) * n;
        const float *src = j->tmp + (size_t)ci * j->nb * n + (size_t)bi * n;
        for (i = 0; i < n; i++) d[i] += src[i];
    }
}

/* ---- 3x3 stride-1 weight gradient, direct ------------------------------
   dW[co][ci][ki][kj] = sum over pixels of dy[co][oy][ox] xp[ci][oy+ki][ox+kj].
   With dy's rows widened to the padded input's width Wp (zeros past Wo),
   pixel q = oy*Wp + ox reads xp[ci][q + ki*Wp + kj]: nine shifted dot
   products over one flat range, which the vector kernel runs for two output
   channels at once.  Used where that kernel exists (AVX-512); elsewhere the
   column-matrix GEMM. */
typedef struct prg__dw3_job {
    const prg__conv *c;
    const prg__vec_ops *ops;
    const float *xp;  /* [nb][Ci][Hp][Wp] */
    const float *dyw; /* [nb][Co][Ho][Wp] */
    float *dwt;       /* [Co][Ci][3][3] += */
    int nb, wp;
} prg__dw3_job;

/* dyw[bi][co] = dy[b0+bi][co] with rows widened to wp, per plane */
typedef struct prg__widen_job { const float *dy; float *dyw; int ho, wo, wp; } prg__widen_job;

static void prg__widen_range(void *ctx, size_t lo, size_t hi) {
    const prg__widen_job *j = (const prg__widen_job *)ctx;
    size_t idx;
    int y;
    for (idx = lo; idx < hi; idx++)
        for (y = 0; y < j->ho; y++) {
            float *d = j->dyw + (idx * j->ho + y) * j->wp;
            memcpy(d, j->dy + (idx * j->ho + y) * j->wo, (size_t)j->wo * sizeof(float));
            memset(d + j->wo, 0, (size_t)(j->wp - j->wo) * sizeof(float));
        }
}

/* per pair of output channels: every input channel, the chunk's samples in order */
static void prg__dw3_range(void *ctx, size_t lo, size_t hi) {
    const prg__dw3_job *j = (const prg__dw3_job *)ctx;
    const prg__conv *c = j->c;
    size_t pair, plane_x = (size_t)(c->h + 2 * c->p) * j->wp, plane_g = (size_t)c->ho * j->wp;
    size_t n = (size_t)(c->ho - 1) * j->wp + c->wo; /* the last row's padding is never needed */
    for (pair = lo; pair < hi; pair++) {
        int c0 = (int)(2 * pair), c1 = c0 + 1 < c->co ? c0 + 1 : c0, ci, t;
        for (ci = 0; ci < c->ci; ci++) {
            float acc[18];
            for (t = 0; t < 18; t++) acc[t] = 0.0f;
            j->ops->dw3(acc, j->dyw + (size_t)c0 * plane_g, j->dyw + (size_t)c1 * plane_g,
                        j->xp + (size_t)ci * plane_x, n, j->wp, j->nb, (size_t)c->co * plane_g,
                        (size_t)c->ci * plane_x);
            for (t = 0; t < 9; t++) j->dwt[((size_t)c0 * c->ci + ci) * 9 + t] += acc[t];
            if (c1 != c0)
                for (t = 0; t < 9; t++) j->dwt[((size_t)c1 * c->ci + ci) * 9 + t] += acc[9 + t];
        }
    }
}

/* dW += the chunk's part; xp and dyw go to the workspace's first two regions */
static void prg__conv_dw3(const prg__conv *c, const prg__vec_ops *ops, int b0, int nb,
                          const float *x, const float *dy, float *dwt, float *ws) {
    prg__dw3_job j;
    prg__widen_job w;
    int wp = c->w + 2 * c->p;
    prg__pad_planes(ws, x + (size_t)b0 * c->ci * c->h * c->w, (size_t)nb * c->ci, c->h, c->w, c->p);
    w.dy = dy + (size_t)b0 * c->co * c->hw_out;
    w.dyw = ws + c->r0;
    w.ho = c->ho;
    w.wo = c->wo;
    w.wp = wp;
    prg__parallel_for((size_t)nb * c->co, (double)c->ho * wp, prg__widen_range, &w);
    j.c = c;
    j.ops = ops;
    j.xp = ws;
    j.dyw = w.dyw;
    j.dwt = dwt;
    j.nb = nb;
    j.wp = wp;
    prg__parallel_for((size_t)(c->co + 1) / 2, 18.0 * c->ci * nb * c->ho * wp, prg__dw3_range, &j);
}

/* dx of one chunk as the convolution of dy (padded by k-1-p) with the
   flipped weights wf; -1 when the packing buffers cannot be had. */
static int prg__conv_dx_implicit(prg__conv_job *j, const float *dy, const float *wf, prg__gemm_b_packer packer,
                                 float *ws) {
    const prg__conv *c = j->c;
    int q = c->k - 1 - c->p, n = j->nb * c->h * c->w;
    float *dst = j->nb > 1 ? ws + c->r0 : j->dx + (size_t)j->b0 * c->ci * c->h * c->w;
    prg__implicit_cols ic;
    prg__pad_planes(ws, dy + (size_t)j->b0 * c->co * c->hw_out, (size_t)j->nb * c->co, c->ho, c->wo, q);
    ic.xp = ws;
    ic.c = c->co; ic.hp = c->ho + 2 * q; ic.wp = c->wo + 2 * q;
    ic.k = c->k; ic.s = 1; ic.ho = c->h; ic.wo = c->w;
    if (prg__sgemm_packer(c->ci, n, c->k * c->k * c->co, 1.0f, wf, c->k * c->k * c->co,
                          packer, &ic, j->nb > 1 ? 0.0f : 1.0f, dst, n) != 0)
        return -1;
    if (j->nb > 1) {
        j->tmp = dst;
        prg__parallel_for((size_t)j->nb * c->ci, (double)c->h * c->w, prg__conv_dx_add_range, j);
    }
    return 0;
}

/* The backward as planned (prg_conv2d_backward); with dx_set, dx is written
   (=) rather than added to; keep: dx's Winograd weights from the plan's keep */
static void prg__conv_plan_backward(prg__conv_plan *p, int keep, float *dx, float *dwt, float *dbias,
                                    const float *dy, const float *x, const float *wt, float *ws, int dx_set) {
    const prg__conv c = p->c;
    const int batch = c.b, cin = c.ci, h = c.h, w = c.w, cout = c.co;
    prg__conv_job j;
    prg__vec_ops ops = p->cpu->vec;
    float *dwt_t, *wf;
    int b0, dw3 = p->dw_gemm == PRG__CONV_DW3, dx_conv = p->dx_gemm == PRG__CONV_IMPLICIT;
    memset(&j, 0, sizeof j);
    j.c = &c;
    j.x = x;
    j.dy = dy;
    j.dx = dx;
    j.dbias = dbias;
    if (dbias)
        prg__parallel_for((size_t)cout, (double)batch * c.hw_out, prg__conv_dbias_range, &j);
    if (!dx && !dwt) return;
    if (p->fwd == PRG__CONV_1X1) {
        int n = (int)c.hw_out;
        for (b0 = 0; dwt && b0 < batch; b0++) {
            const float *xb = x + (size_t)b0 * cin * c.hw_out;
            const float *gb = dy + (size_t)b0 * cout * c.hw_out;
            prg_sgemm(0, 1, cout, cin, n, 1.0f, gb, n, xb, n, 1.0f, dwt, cin);
        }
        if (dx) {
            j.wt = wt;
            j.set = dx_set;
            if (batch >= 2 * prg__parallel_width())
                prg__parallel_for((size_t)batch, (double)cout * cin * n, prg__conv_direct_range, &j);
            else
                prg__conv_direct_range(&j, 0, (size_t)batch);
        }
        return;
    }
    if (dwt && p->dw == PRG__CONV_DIRECT) {
        prg__few_dw_job d;
        d.ops = &ops;
        d.c = &c;
        d.x = x;
        d.dy = dy;
        d.dwt = dwt;
        prg__parallel_for((size_t)(cout + 1) / 2 * cin, 36.0 * batch * h * w, prg__few_dw_range, &d);
        dwt = NULL;
    }
    if (dx && p->dx == PRG__CONV_DIRECT) {
        prg__conv_few_run(&ops, dx, dy, wt, 9, c.kk, 1, NULL, !dx_set, batch, cout, h, w, cin);
        dx = NULL;
    }
    if (!dx && !dwt) return;
    /* Winograd as planned; either part may fall back below (no buffers) */
    if (dwt && (p->dw == PRG__CONV_WINO2 || p->dw == PRG__CONV_WINO4) &&
        prg__wino_dweights(dwt, x, dy, batch, cin, h, w, cout, p->dw == PRG__CONV_WINO4) == 0)
        dwt = NULL;
    if (dx && (p->dx == PRG__CONV_WINO2 || p->dx == PRG__CONV_WINO4) &&
        prg__wino_conv(dx, dy, wt, 9, c.kk, 1, NULL, !dx_set, batch, cout, h, w, cin, p->dx == PRG__CONV_WINO4,
                       keep ? &p->keep[1] : NULL) == 0)
        dx = NULL;
    if (dx && dx_set) memset(dx, 0, (size_t)batch * cin * h * w * sizeof(float)); /* the paths below add */
    j.dx = dx;
    if (!dx && !dwt) return;
    PRG_ASSERT(ws != NULL);
    j.col = ws;
    /* dW is summed over the chunks transposed, dwt_t = col dy^T: a GEMM
       whose transposed operand is the small dy rather than the column
       matrix, which the GEMM packs faster */
    dwt_t = ws + c.r0 + c.r1;
    wf = dwt_t + c.kk * cout;
    if (dx && dx_conv) {
        j.tmp = wf;
        j.wt = wt;
        prg__parallel_for((size_t)cin, (double)c.kk * cout / cin, prg__conv_flip_range, &j);
    }
    for (b0 = 0; b0 < batch; b0 += c.nb) {
        int nb = batch - b0 < c.nb ? batch - b0 : c.nb;
        int ncols = (int)((size_t)nb * c.hw_out), gathered = 0;
        const float *g = dy + (size_t)b0 * cout * c.hw_out;
        j.b0 = b0;
        j.nb = nb;
        if (dwt && dw3) {
            prg__conv_dw3(&c, &ops, b0, nb, x, dy, dwt, ws);
        } else if (dwt) {
            if (nb > 1) { /* dy of the chunk as [Co][nb*HoWo] */
                j.tmp = ws + c.r0;
                prg__parallel_for((size_t)cout, (double)ncols, prg__conv_gather_dy_range, &j);
                g = j.tmp;
                gathered = 1;
            }
            prg__parallel_for(c.kk, (double)ncols, prg__im2col_range, &j);
            prg_sgemm(0, 1, (int)c.kk, cout, ncols, 1.0f, ws, ncols, g, ncols, b0 ? 1.0f : 0.0f,
                      dwt_t, cout);
        }
        if (dx && (!dx_conv || prg__conv_dx_implicit(&j, dy, wf, p->cpu->implicit_pack, ws) != 0)) {
            if (nb > 1 && !gathered) {
                j.tmp = ws + c.r0;
                prg__parallel_for((size_t)cout, (double)ncols, prg__conv_gather_dy_range, &j);
                g = j.tmp;
            }
            prg_sgemm(1, 0, (int)c.kk, ncols, cout, 1.0f, wt, (int)c.kk, g, ncols, 0.0f, ws, ncols);
            prg__parallel_for((size_t)nb * cin, (double)c.k * c.k * c.hw_out, prg__col2im_range,
                              &j);
        }
    }
    if (dwt && !dw3) {
        j.dx = dwt;
        j.tmp = dwt_t;
        prg__parallel_for((size_t)cout, (double)c.kk, prg__conv_dw_add_range, &j);
    }
}

void prg_conv2d_backward(float *dx, float *dwt, float *dbias, const float *dy, const float *x,
                         const float *wt, int batch, int cin, int h, int w, int cout, int k,
                         int stride, int pad, float *ws) {
    prg__conv_plan p;
    memset(&p, 0, sizeof p);
    prg__conv_plan_set(&p, batch, cin, h, w, cout, k, stride, pad);
    prg__conv_plan_backward(&p, 0, dx, dwt, dbias, dy, x, wt, ws, 0);
}

void prg_conv2d_forward_ref(float *y, const float *x, const float *wt, const float *bias,
                            int batch, int cin, int h, int w, int cout, int k, int stride, int pad,
                            float *ws) {
    int ho = (h + 2 * pad - k) / stride + 1, wo = (w + 2 * pad - k) / stride + 1;
    int b, co, oy, ox, ci, ki, kj;
    (void)ws;
    for (b = 0; b < batch; b++)
        for (co = 0; co < cout; co++)
            for (oy = 0; oy < ho; oy++)
                for (ox = 0; ox < wo; ox++) {
                    double s = bias ? bias[co] : 0.0;
                    for (ci = 0; ci < cin; ci++)
                        for (ki = 0; ki < k; ki++)
                            for (kj = 0; kj < k; kj++) {
                                int iy = oy * stride - pad + ki, ix = ox * stride - pad + kj;
                                if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                                s += (double)x[(((size_t)b * cin + ci) * h + iy) * w + ix] *
                                     wt[(((size_t)co * cin + ci) * k + ki) * k + kj];
                            }
                    y[(((size_t)b * cout + co) * ho + oy) * wo + ox] = (float)s;
                }
}

void prg_conv2d_backward_ref(float *dx, float *dwt, float *dbias, const float *dy, const float *x,
                             const float *wt, int batch, int cin, int h, int w, int cout, int k,
                             int stride, int pad, float *ws) {
    int ho = (h + 2 * pad - k) / stride + 1, wo = (w + 2 * pad - k) / stride + 1;
    int b, co, oy, ox, ci, ki, kj, iy, ix;
    (void)ws;
#define PRG__DY(b, co, oy, ox) dy[(((size_t)(b) * cout + (co)) * ho + (oy)) * wo + (ox)]
    if (dbias)
        for (co = 0; co < cout; co++) {
            double s = 0.0;
            for (b = 0; b < batch; b++)
                for (oy = 0; oy < ho; oy++)
                    for (ox = 0; ox < wo; ox++) s += PRG__DY(b, co, oy, ox);
            dbias[co] += (float)s;
        }
    if (dwt)
        for (co = 0; co < cout; co++)
            for (ci = 0; ci < cin; ci++)
                for (ki = 0; ki < k; ki++)
                    for (kj = 0; kj < k; kj++) {
                        double s = 0.0;
                        for (b = 0; b < batch; b++)
                            for (oy = 0; oy < ho; oy++)
                                for (ox = 0; ox < wo; ox++) {
                                    iy = oy * stride - pad + ki;
                                    ix = ox * stride - pad + kj;
                                    if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                                    s += (double)PRG__DY(b, co, oy, ox) *
                                         x[(((size_t)b * cin + ci) * h + iy) * w + ix];
                                }
                        dwt[(((size_t)co * cin + ci) * k + ki) * k + kj] += (float)s;
                    }
    if (dx)
        for (b = 0; b < batch; b++)
            for (ci = 0; ci < cin; ci++)
                for (iy = 0; iy < h; iy++)
                    for (ix = 0; ix < w; ix++) {
                        double s = 0.0;
                        for (co = 0; co < cout; co++)
                            for (ki = 0; ki < k; ki++)
                                for (kj = 0; kj < k; kj++) {
                                    int ty = iy + pad - ki, tx = ix + pad - kj;
                                    if (ty < 0 || tx < 0 || ty % stride || tx % stride) continue;
                                    oy = ty / stride;
                                    ox = tx / stride;
                                    if (oy >= ho || ox >= wo) continue;
                                    s += (double)PRG__DY(b, co, oy, ox) *
                                         wt[(((size_t)co * cin + ci) * k + ki) * k + kj];
                                }
                        dx[(((size_t)b * cin + ci) * h + iy) * w + ix] += (float)s;
                    }
#undef PRG__DY
}

/* >>layers ============================================================== */

/* ---- linear ------------------------------------------------------------ */

typedef struct prg__bias_job { float *y; const float *bias, *dy; int n, out; } prg__bias_job;

static void prg__linear_bias_range(void *ctx, size_t lo, size_t hi) {
    const prg__bias_job *j = (const prg__bias_job *)ctx;
    size_t r;
    int o;
    for (r = lo; r < hi; r++)
        for (o = 0; o < j->out; o++) j->y[r * j->out + o] += j->bias[o];
}

/* dbias[o] += sum_n dy[n][o], n in order, per o */
static void prg__linear_dbias_range(void *ctx, size_t lo, size_t hi) {
    const prg__bias_job *j = (const prg__bias_job *)ctx;
    size_t o;
    int r;
    for (o = lo; o < hi; o++) {
        double s = 0.0;
        for (r = 0; r < j->n; r++) s += j->dy[(size_t)r * j->out + o];
        j->y[o] += (float)s;
    }
}

void prg_linear_forward(float *y, const float *x, const float *wt, const float *bias, int n,
                        int in, int out) {
    prg__bias_job j;
    prg_sgemm(0, 1, n, out, in, 1.0f, x, in, wt, in, 0.0f, y, out);
    if (!bias) return;
    j.y = y; j.bias = bias; j.dy = NULL; j.n = n; j.out = out;
    prg__parallel_for((size_t)n, (double)out, prg__linear_bias_range, &j);
}

void prg_linear_backward(float *dx, float *dwt, float *dbias, const float *dy, const float *x,
                         const float *wt, int n, int in, int out) {
    if (dx) prg_sgemm(0, 0, n, in, out, 1.0f, dy, out, wt, in, 1.0f, dx, in);
    if (dwt) prg_sgemm(1, 0, out, in, n, 1.0f, dy, out, x, in, 1.0f, dwt, in);
    if (dbias) {
        prg__bias_job j;
        j.y = dbias; j.bias = NULL; j.dy = dy; j.n = n; j.out = out;
        prg__parallel_for((size_t)out, (double)n, prg__linear_dbias_range, &j);
    }
}

void prg_linear_forward_ref(float *y, const float *x, const float *wt, const float *bias, int n,
                            int in, int out) {
    int r, o, i;
    for (r = 0; r < n; r++)
        for (o = 0; o < out; o++) {
            double s = bias ? bias[o] : 0.0;
            for (i = 0; i < in; i++) s += (double)x[(size_t)r * in + i] * wt[(size_t)o * in + i];
            y[(size_t)r * out + o] = (float)s;
        }
}

void prg_linear_backward_ref(float *dx, float *dwt, float *dbias, const float *dy, const float *x,
                             const float *wt, int n, int in, int out) {
    int r, o, i;
    if (dx)
        for (r = 0; r < n; r++)
            for (i = 0; i < in; i++) {
                double s = 0.0;
                for (o = 0; o < out; o++) s += (double)dy[(size_t)r * out + o] * wt[(size_t)o * in + i];
                dx[(size_t)r * in + i] += (float)s;
            }
    if (dwt)
        for (o = 0; o < out; o++)
            for (i = 0; i < in; i++) {
                double s = 0.0;
                for (r = 0; r < n; r++) s += (double)dy[(size_t)r * out + o] * x[(size_t)r * in + i];
                dwt[(size_t)o * in + i] += (float)s;
            }
    if (dbias)
        for (o = 0; o < out; o++) {
            double s = 0.0;
            for (r = 0; r < n; r++) s += dy[(size_t)r * out + o];
            dbias[o] += (float)s;
        }
}

/* ---- GroupNorm / LayerNorm --------------------------------------------------
   LayerNorm over [N][D] is GroupNorm with batch N, D channels of one pixel
   and one group, so both share this code.  Sums over a channel row run in
   8 float lanes (vectorisable) and are combined in double. */

/* sum (x - m)^2 */
static double prg__row_sqdev(const float *x, size_t n, float m) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    double s = 0.0;
    size_t i = 0;
    int l;
    for (; i + 8 <= n; i += 8)
        for (l = 0; l < 8; l++) acc[l] += (x[i + l] - m) * (x[i + l] - m);
    for (; i < n; i++) s += (double)(x[i] - m) * (x[i] - m);
    for (l = 0; l < 8; l++) s += acc[l];
    return s;
}

typedef struct prg__norm_job {
    float *y, *mean, *rstd, *dx, *dgamma, *dbeta;
    float *sso, *act; /* forward: then scale-shift by ss into sso, SiLU into act (when set);
                         with act, y and sso may be NULL (not kept) */
    const float *x, *gamma, *beta, *dy, *cmean, *crstd, *ss;
    float *t;              /* backward: SiLU's backward of sdy at sx, the gradient used for dy */
    const float *sdy, *sx;
    double *sums;          /* backward: each channel's sums kept for dgamma/dbeta (or NULL) */
    prg__vec_ops ops;
    int batch, c, groups, cg; /* cg = channels per group */
    int set;                  /* backward: dx = rather than += */
    int given;                /* forward: mean and rstd are given (kept from an earlier pass) */
    size_t hw;
    float eps;
} prg__norm_job;

#define PRG__GN_CHUNK 512
static void prg__gn_forward_range(void *ctx, size_t lo, size_t hi) {
    const prg__norm_job *j = (const prg__norm_job *)ctx;
    size_t bg, ng = (size_t)j->cg * j->hw;
    float gbuf[PRG__GN_CHUNK], sbuf[PRG__GN_CHUNK];
    for (bg = lo; bg < hi; bg++) {
        const float *x = j->x + bg * ng;
        int g = (int)(bg % (size_t)j->groups), cc;
        double s = 0.0, v = 0.0;
        float m, r;
        if (j->given) {
            m = j->mean[bg];
            r = j->rstd[bg];
        } else {
            for (cc = 0; cc < j->cg; cc++) s += prg__row_sum(x + (size_t)cc * j->hw, j->hw);
            m = (float)(s / (double)ng);
            for (cc = 0; cc < j->cg; cc++) v += prg__row_sqdev(x + (size_t)cc * j->hw, j->hw, m);
            r = (float)(1.0 / sqrt(v / (double)ng + (double)j->eps));
            j->mean[bg] = m;
            j->rstd[bg] = r;
        }
        for (cc = 0; cc < j->cg; cc++) {
            int ch = g * j->cg + cc;
            float a = r * (j->gamma ? j->gamma[ch] : 1.0f);
            float sh = (j->beta ? j->beta[ch] : 0.0f) - m * a;
            size_t b = bg / (size_t)j->groups, o = bg * ng + (size_t)cc * j->hw, p0;
            /* a chunk at a time, still in L1: normalise, scale-shift, SiLU;
               the outputs not kept go to the chunk buffers */
            for (p0 = 0; p0 < j->hw; p0 += PRG__GN_CHUNK) {
                size_t len = j->hw - p0 < PRG__GN_CHUNK ? j->hw - p0 : PRG__GN_CHUNK;
                float *yr = j->y ? j->y + o + p0 : gbuf;
                const float *in = yr;
                prg__row_axpb(yr, x + (size_t)cc * j->hw + p0, a, sh, len);
                if (j->ss) {
                    float *sr = j->sso ? j->sso + o + p0 : sbuf;
                    prg__row_axpb(sr, yr, 1.0f + j->ss[b * 2 * j->c + ch], j->ss[b * 2 * j->c + j->c + ch], len);
                    in = sr;
                }
                if (j->act) j->ops.silu_fwd(j->act + o + p0, in, len);
            }
        }
    }
}

/* dx for the groups [lo, hi) of all (b, g).  With t set, the gradient is
   SiLU's backward (t = SiLU'(sx) sdy, written a row at a time, then read
   while still in cache) rather than dy.  With sums set, each channel's two
   sums (of the gradient and of the gradient times x) are kept for dgamma and
   dbeta: sums[2 (b C + ch)], sums[2 (b C + ch) + 1]. */
static void prg__gn_dx_range(void *ctx, size_t lo, size_t hi) {
    const prg__norm_job *j = (const prg__norm_job *)ctx;
    size_t bg, ng = (size_t)j->cg * j->hw;
    for (bg = lo; bg < hi; bg++) {
        const float *x = j->x + bg * ng, *dy = j->t ? j->t + bg * ng : j->dy + bg * ng;
        int g = (int)(bg % (size_t)j->groups), cc;
        double m = j->cmean[bg], r = j->crstd[bg], s1 = 0.0, s2 = 0.0;
        float bcoef, ccoef;
        /* dx = r (gamma dy - s1/N) - (x - m) r^3 s2/N with
           s1 = sum gamma dy, s2 = sum gamma dy (x - m) */
        for (cc = 0; cc < j->cg; cc++) {
            double gm = j->gamma ? j->gamma[g * j->cg + cc] : 1.0, sg, sgx;
            size_t row = bg * ng + (size_t)cc * j->hw;
            if (j->t) j->ops.silu_bwd(j->t + row, j->sdy + row, j->sx + row, j->hw, 1);
            j->ops.dots(dy + (size_t)cc * j->hw, x + (size_t)cc * j->hw, j->hw, &sg, &sgx);
            if (j->sums) {
                size_t k = 2 * (bg / (size_t)j->groups * (size_t)j->c + (size_t)g * j->cg + (size_t)cc);
                j->sums[k] = sg;
                j->sums[k + 1] = sgx;
            }
            s1 += gm * sg;
            s2 += gm * (sgx - m * sg);
        }
        if (!j->dx) continue;
        bcoef = (float)(-r * r * r * s2 / (double)ng);
        ccoef = (float)(-r * s1 / (double)ng + m * r * r * r * s2 / (double)ng);
        for (cc = 0; cc < j->cg; cc++) {
            float a = (float)r * (j->gamma ? j->gamma[g * j->cg + cc] : 1.0f);
            const float *xr = x + (size_t)cc * j->hw, *gr = dy + (size_t)cc * j->hw;
            float *dr = j->dx + bg * ng + (size_t)cc * j->hw;
            if (j->set) prg__row_set3(dr, gr, xr, a, bcoef, ccoef, j->hw);
            else prg__row_acc3(dr, gr, xr, a, bcoef, ccoef, j->hw);
        }
    }
}

/* dgamma/dbeta of channel ch from its sums over the batch, in batch order:
   the kept ones, else taken again (the same sums, the same bits) */
static void prg__gn_dparam_channel(const prg__norm_job *j, size_t ch) {
    double sgm = 0.0, sbt = 0.0;
    size_t g = ch / (size_t)j->cg;
    int b;
    for (b = 0; b < j->batch; b++) {
        size_t bg = (size_t)b * j->groups + g, k = (size_t)b * j->c + ch, off = k * j->hw;
        double sg, sgx;
        if (j->sums) {
            sg = j->sums[2 * k];
            sgx = j->sums[2 * k + 1];
        } else {
            j->ops.dots(j->dy + off, j->x + off, j->hw, &sg, &sgx);
        }
        sgm += (double)j->crstd[bg] * (sgx - (double)j->cmean[bg] * sg);
        sbt += sg;
    }
    if (j->dgamma) j->dgamma[ch] += (float)sgm;
    if (j->dbeta) j->dbeta[ch] += (float)sbt;
}

/* dgamma/dbeta for the channels [lo, hi) */
static void prg__gn_dparam_range(void *ctx, size_t lo, size_t hi) {
    const prg__norm_job *j = (const prg__norm_job *)ctx;
    size_t ch;
    for (ch = lo; ch < hi; ch++) prg__gn_dparam_channel(j, ch);
}

static void prg__norm_setup(prg__norm_job *j, int batch, int c, size_t hw, int groups) {
    PRG_ASSERT(batch > 0 && c > 0 && groups > 0 && c % groups == 0);
    memset(j, 0, sizeof *j);
    j->batch = batch;
    j->c = c;
    j->hw = hw;
    j->groups = groups;
    j->cg = c / groups;
    j->ops = prg__vec_select();
}

void prg_groupnorm_forward(float *y, float *mean, float *rstd, const float *x, const float *gamma,
                           const float *beta, int batch, int c, int hw, int groups, float eps) {
    prg__norm_job j;
    prg__norm_setup(&j, batch, c, (size_t)hw, groups);
    j.y = y; j.mean = mean; j.rstd = rstd; j.x = x; j.gamma = gamma; j.beta = beta; j.eps = eps;
    prg__parallel_for((size_t)batch * groups, 3.0 * j.cg * j.hw, prg__gn_forward_range, &j);
}

/* gn = GroupNorm(x); then sso = gn (1 + scale) + shift when ss is set;
   act = SiLU(sso, or gn): the same bits as the three layers one after the
   other, in one pass over memory.  given: mean and rstd hold x's statistics
   already (a recomputation), which are then read, not taken again. */
static void prg__groupnorm_act_forward(float *gn, float *sso, float *act, float *mean, float *rstd, int given,
                                       const float *x, const float *gamma, const float *beta,
                                       const float *ss, int batch, int c, int hw, int groups, float eps) {
    prg__norm_job j;
    prg__norm_setup(&j, batch, c, (size_t)hw, groups);
    j.y = gn; j.mean = mean; j.rstd = rstd; j.x = x; j.gamma = gamma; j.beta = beta; j.eps = eps;
    j.ss = ss; j.sso = sso; j.act = act; j.given = given;
    prg__parallel_for((size_t)batch * groups, (given ? 4.0 : 6.0) * j.cg * j.hw, prg__gn_forward_range, &j);
}

/* GroupNorm's backward: dx (+= or, with set, =), dgamma and dbeta (+=).
   With t set, dy is first SiLU's backward, t = SiLU'(sx) sdy (written).
   One pass over the groups takes each channel's sums once for dx and keeps
   them for dgamma and dbeta; only when no buffer is to be had are they taken
   again per channel (the same sums, the same bits). */
static void prg__groupnorm_backward_x(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                                      const float *mean, const float *rstd, const float *gamma, int batch, int c,
                                      int hw, int groups, int set, float *t, const float *sdy, const float *sx) {
    prg__norm_job j;
    prg__gemm_buf *buf = NULL;
    size_t ch;
    prg__norm_setup(&j, batch, c, (size_t)hw, groups);
    j.dx = dx; j.dgamma = dgamma; j.dbeta = dbeta; j.dy = dy; j.x = x;
    j.cmean = mean; j.crstd = rstd; j.gamma = gamma; j.set = set;
    j.t = t; j.sdy = sdy; j.sx = sx;
    if (!dx && !t) {
        if (dgamma || dbeta) prg__parallel_for((size_t)c, 2.0 * batch * j.hw, prg__gn_dparam_range, &j);
        return;
    }
    if ((dgamma || dbeta) && (buf = prg__gemm_buf_take((size_t)4 * batch * c)) != NULL) j.sums = (double *)(void *)buf->s.p;
    prg__parallel_for((size_t)batch * groups, (t ? 8.0 : 4.0) * j.cg * j.hw, prg__gn_dx_range, &j);
    j.t = NULL; /* written: the gradient is now in t, read as dy */
    if (t) j.dy = t;
    if (buf) {
        for (ch = 0; ch < (size_t)c; ch++) prg__gn_dparam_channel(&j, ch);
        prg__gemm_buf_give(buf);
    } else if (dgamma || dbeta) {
        prg__parallel_for((size_t)c, 2.0 * batch * j.hw, prg__gn_dparam_range, &j);
    }
}

void prg_groupnorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy,
                            const float *x, const float *mean, const float *rstd,
                            const float *gamma, int batch, int c, int hw, int groups) {
    prg__groupnorm_backward_x(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, batch, c, hw, groups, 0, NULL, NULL, NULL);
}

void prg_groupnorm_forward_ref(float *y, float *mean, float *rstd, const float *x,
                               const float *gamma, const float *beta, int batch, int c, int hw,
                               int groups, float eps) {
    int cg = c / groups, b, g, ch;
    size_t i, n = (size_t)cg * hw;
    for (b = 0; b < batch; b++)
        for (g = 0; g < groups; g++) {
            const float *xg = x + ((size_t)b * c + (size_t)g * cg) * hw;
            float *yg = y + ((size_t)b * c + (size_t)g * cg) * hw;
            double m = 0.0, v = 0.0, r;
            for (i = 0; i < n; i++) m += xg[i];
            m /= (double)n;
            for (i = 0; i < n; i++) v += (xg[i] - m) * (xg[i] - m);
            r = 1.0 / sqrt(v / (double)n + eps);
            mean[b * groups + g] = (float)m;
            rstd[b * groups + g] = (float)r;
            for (i = 0; i < n; i++) {
                ch = g * cg + (int)(i / (size_t)hw);
                yg[i] = (float)((xg[i] - m) * r * gamma[ch] + beta[ch]);
            }
        }
}

void prg_groupnorm_backward_ref(float *dx, float *dgamma, float *dbeta, const float *dy,
                                const float *x, const float *mean, const float *rstd,
                                const float *gamma, int batch, int c, int hw, int groups) {
    int cg = c / groups, b, g, ch;
    size_t i, n = (size_t)cg * hw;
    for (ch = 0; ch < c; ch++) {
        double sgm = 0.0, sbt = 0.0;
        for (b = 0; b < batch; b++) {
            size_t off = ((size_t)b * c + ch) * hw;
            int bg = b * groups + ch / cg;
            for (i = 0; i < (size_t)hw; i++) {
                sgm += (double)dy[off + i] * ((x[off + i] - (double)mean[bg]) * rstd[bg]);
                sbt += dy[off + i];
            }
        }
        if (dgamma) dgamma[ch] += (float)sgm;
        if (dbeta) dbeta[ch] += (float)sbt;
    }
    for (b = 0; b < batch; b++)
        for (g = 0; g < groups; g++) {
            size_t off = ((size_t)b * c + (size_t)g * cg) * hw;
            double m = mean[b * groups + g], r = rstd[b * groups + g], s1 = 0.0, s2 = 0.0;
            for (i = 0; i < n; i++) {
                double xh = (x[off + i] - m) * r, gy = (double)dy[off + i];
                ch = g * cg + (int)(i / (size_t)hw);
                s1 += gy * gamma[ch];
                s2 += gy * gamma[ch] * xh;
            }
            if (dx)
                for (i = 0; i < n; i++) {
                    double xh = (x[off + i] - m) * r;
                    ch = g * cg + (int)(i / (size_t)hw);
                    dx[off + i] += (float)(r * (dy[off + i] * gamma[ch] - s1 / n - xh * s2 / n));
                }
        }
}

void prg_layernorm_forward(float *y, float *mean, float *rstd, const float *x, const float *gamma,
                           const float *beta, int n, int d, float eps) {
    prg_groupnorm_forward(y, mean, rstd, x, gamma, beta, n, d, 1, 1, eps);
}

void prg_layernorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy,
                            const float *x, const float *mean, const float *rstd,
                            const float *gamma, int n, int d) {
    prg_groupnorm_backward(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, n, d, 1, 1);
}

void prg_layernorm_forward_ref(float *y, float *mean, float *rstd, const float *x,
                               const float *gamma, const float *beta, int n, int d, float eps) {
    int r, i;
    for (r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * d;
        double m = 0.0, v = 0.0, s;
        for (i = 0; i < d; i++) m += xr[i];
        m /= d;
        for (i = 0; i < d; i++) v += (xr[i] - m) * (xr[i] - m);
        s = 1.0 / sqrt(v / d + eps);
        mean[r] = (float)m;
        rstd[r] = (float)s;
        for (i = 0; i < d; i++) y[(size_t)r * d + i] = (float)((xr[i] - m) * s * gamma[i] + beta[i]);
    }
}

void prg_layernorm_backward_ref(float *dx, float *dgamma, float *dbeta, const float *dy,
                                const float *x, const float *mean, const float *rstd,
                                const float *gamma, int n, int d) {
    int r, i;
    for (i = 0; i < d; i++) {
        double sgm = 0.0, sbt = 0.0;
        for (r = 0; r < n; r++) {
            size_t o = (size_t)r * d + i;
            sgm += (double)dy[o] * ((x[o] - (double)mean[r]) * rstd[r]);
            sbt += dy[o];
        }
        if (dgamma) dgamma[i] += (float)sgm;
        if (dbeta) dbeta[i] += (float)sbt;
    }
    for (r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * d, *gr = dy + (size_t)r * d;
        double m = mean[r], s = rstd[r], s1 = 0.0, s2 = 0.0;
        for (i = 0; i < d; i++) {
            double xh = (xr[i] - m) * s;
            s1 += (double)gr[i] * gamma[i];
            s2 += (double)gr[i] * gamma[i] * xh;
        }
        if (dx)
            for (i = 0; i < d; i++) {
                double xh = (xr[i] - m) * s;
                dx[(size_t)r * d + i] += (float)(s * (gr[i] * gamma[i] - s1 / d - xh * s2 / d));
            }
    }
}

/* ---- SiLU, tanh -----------------------------------------------------------
   (their vector kernels are in "vector kernels" above) */

typedef struct prg__ew_job { float *out; const float *a, *b; prg__vec_ops ops; int set; } prg__ew_job;

static void prg__silu_fwd_range(void *ctx, size_t lo, size_t hi) {
    const prg__ew_job *j = (const prg__ew_job *)ctx;
    j->ops.silu_fwd(j->out + lo, j->a + lo, hi - lo);
}

/* a = dy, b = x */
static void prg__silu_bwd_range(void *ctx, size_t lo, size_t hi) {
    const prg__ew_job *j = (const prg__ew_job *)ctx;
    j->ops.silu_bwd(j->out + lo, j->a + lo, j->b + lo, hi - lo, j->set);
}

static void prg__tanh_fwd_range(void *ctx, size_t lo, size_t hi) {
    const prg__ew_job *j = (const prg__ew_job *)ctx;
    size_t i;
    for (i = lo; i < hi; i++) j->out[i] = tanhf(j->a[i]);
}

static void prg__tanh_bwd_range(void *ctx, size_t lo, size_t hi) {
    const prg__ew_job *j = (const prg__ew_job *)ctx;
    size_t i;
    for (i = lo; i < hi; i++) j->out[i] += j->a[i] * (1.0f - j->b[i] * j->b[i]);
}

/* set (SiLU backward): write out instead of adding to it */
static void prg__ew(prg__range_fn fn, float *out, const float *a, const float *b, size_t n, int set) {
    prg__ew_job j;
    j.out = out;
    j.a = a;
    j.b = b;
    j.ops = prg__vec_select();
    j.set = set;
    prg__parallel_for(n, 8.0, fn, &j);
}

/* The backward passes below with set = 1 write (=) their dx instead of
   adding to it (the U-Net's scratch gradients, so they need no clearing). */
static void prg__silu_backward_x(float *dx, const float *dy, const float *x, size_t n, int set) {
    prg__ew(prg__silu_bwd_range, dx, dy, x, n, set);
}

void prg_silu_forward(float *y, const float *x, size_t n) { prg__ew(prg__silu_fwd_range, y, x, NULL, n, 0); }
void prg_silu_backward(float *dx, const float *dy, const float *x, size_t n) {
    if (!dx) return;
    prg__silu_backward_x(dx, dy, x, n, 0);
}
void prg_tanh_forward(float *y, const float *x, size_t n) { prg__ew(prg__tanh_fwd_range, y, x, NULL, n, 0); }
void prg_tanh_backward(float *dx, const float *dy, const float *y, size_t n) {
    if (!dx) return;
    prg__ew(prg__tanh_bwd_range, dx, dy, y, n, 0);
}

void prg_silu_forward_ref(float *y, const float *x, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) y[i] = (float)(x[i] / (1.0 + exp(-(double)x[i])));
}
void prg_silu_backward_ref(float *dx, const float *dy, const float *x, size_t n) {
    size_t i;
    if (!dx) return;
    for (i = 0; i < n; i++) {
        double s = 1.0 / (1.0 + exp(-(double)x[i]));
        dx[i] += (float)(dy[i] * s * (1.0 + x[i] * (1.0 - s)));
    }
}
void prg_tanh_forward_ref(float *y, const float *x, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) y[i] = (float)tanh((double)x[i]);
}
void prg_tanh_backward_ref(float *dx, const float *dy, const float *y, size_t n) {
    size_t i;
    if (!dx) return;
    for (i = 0; i < n; i++) dx[i] += (float)(dy[i] * (1.0 - (double)y[i] * y[i]));
}

/* ---- scale-shift ----------------------------------------------------------- */

typedef struct prg__ss_job {
    prg__vec_ops ops;
    float *y, *dx, *dss;
    const float *x, *ss, *dy;
    float *t;              /* backward: when set, the gradient (for dy), each row first written as */
    const float *sdy, *sx; /* SiLU's backward of sdy at sx */
    int c, set;
    size_t hw;
} prg__ss_job;

/* rows (b, c) in [lo, hi) */
static void prg__ss_fwd_range(void *ctx, size_t lo, size_t hi) {
    const prg__ss_job *j = (const prg__ss_job *)ctx;
    size_t r;
    for (r = lo; r < hi; r++) {
        size_t b = r / (size_t)j->c, ch = r % (size_t)j->c;
        float a = 1.0f + j->ss[b * 2 * j->c + ch], sh = j->ss[b * 2 * j->c + j->c + ch];
        const float *x = j->x + r * j->hw;
        float *y = j->y + r * j->hw;
        prg__row_axpb(y, x, a, sh, j->hw);
    }
}

static void prg__ss_bwd_range(void *ctx, size_t lo, size_t hi) {
    const prg__ss_job *j = (const prg__ss_job *)ctx;
    size_t r;
    for (r = lo; r < hi; r++) {
        size_t b = r / (size_t)j->c, ch = r % (size_t)j->c;
        const float *g = j->t ? j->t + r * j->hw : j->dy + r * j->hw;
        if (j->t) j->ops.silu_bwd(j->t + r * j->hw, j->sdy + r * j->hw, j->sx + r * j->hw, j->hw, 1);
        if (j->dx) {
            float a = 1.0f + j->ss[b * 2 * j->c + ch];
            float *dx = j->dx + r * j->hw;
            if (j->set)
                prg__row_axpb(dx, g, a, 0.0f, j->hw);
            else
                prg__row_acc3(dx, g, NULL, a, 0.0f, 0.0f, j->hw);
        }
        if (j->dss) {
            double sg, sgx;
            j->ops.dots(g, j->x + r * j->hw, j->hw, &sg, &sgx);
            j->dss[b * 2 * j->c + ch] += (float)sgx;
            j->dss[b * 2 * j->c + j->c + ch] += (float)sg;
        }
    }
}

void prg_scale_shift_forward(float *y, const float *x, const float *ss, int batch, int c, int hw) {
    prg__ss_job j;
    memset(&j, 0, sizeof j);
    j.y = y; j.x = x; j.ss = ss; j.c = c; j.hw = (size_t)hw;
    prg__parallel_for((size_t)batch * c, (double)hw, prg__ss_fwd_range, &j);
}

/* SiLU's backward then the scale-shift's, a row of each at a time (the
   SiLU gradient still in cache): t = SiLU'(sx) * sdy (written), then
   dx = (1 + scale) t (written), dss += the sums of t x and t. */
static void prg__silu_scale_shift_backward_x(float *dx, float *dss, float *t, const float *sdy, const float *sx,
                                             const float *x, const float *ss, int batch, int c, int hw) {
    prg__ss_job j;
    memset(&j, 0, sizeof j);
    j.dx = dx; j.dss = dss; j.t = t; j.x = x; j.ss = ss; j.c = c; j.hw = (size_t)hw; j.set = 1;
    j.sdy = sdy; j.sx = sx;
    j.ops = prg__vec_select();
    prg__parallel_for((size_t)batch * c, 10.0 * hw, prg__ss_bwd_range, &j);
}

void prg_scale_shift_backward(float *dx, float *dss, const float *dy, const float *x,
                              const float *ss, int batch, int c, int hw) {
    prg__ss_job j;
    memset(&j, 0, sizeof j);
    j.dx = dx; j.dss = dss; j.dy = dy; j.x = x; j.ss = ss; j.c = c; j.hw = (size_t)hw;
    j.ops = prg__vec_select();
    prg__parallel_for((size_t)batch * c, 2.0 * hw, prg__ss_bwd_range, &j);
}

void prg_scale_shift_forward_ref(float *y, const float *x, const float *ss, int batch, int c,
                                 int hw) {
    int b, ch, i;
    for (b = 0; b < batch; b++)
        for (ch = 0; ch < c; ch++)
            for (i = 0; i < hw; i++) {
                size_t o = ((size_t)b * c + ch) * hw + i;
                y[o] = (float)((double)x[o] * (1.0 + ss[(size_t)b * 2 * c + ch]) +
                               ss[(size_t)b * 2 * c + c + ch]);
            }
}

void prg_scale_shift_backward_ref(float *dx, float *dss, const float *dy, const float *x,
                                  const float *ss, int batch, int c, int hw) {
    int b, ch, i;
    for (b = 0; b < batch; b++)
        for (ch = 0; ch < c; ch++) {
            double s1 = 0.0, s2 = 0.0;
            for (i = 0; i < hw; i++) {
                size_t o = ((size_t)b * c + ch) * hw + i;
                if (dx) dx[o] += (float)(dy[o] * (1.0 + ss[(size_t)b * 2 * c + ch]));
                s1 += (double)dy[o] * x[o];
                s2 += dy[o];
            }
            if (dss) {
                dss[(size_t)b * 2 * c + ch] += (float)s1;
                dss[(size_t)b * 2 * c + c + ch] += (float)s2;
            }
        }
}

/* ---- attention ----------------------------------------------------------------
   One task per (batch, head) pair, each running its small GEMMs serially
   (prg_sgemm called inside a task stays on that thread).  Backward needs a
   T x T scratch per pair in flight: pairs go in rounds of at most
   PRG__ATT_SLOTS, pair i of a round using slot i, so the workspace does not
   depend on the thread count. */
#define PRG__ATT_SLOTS 64

size_t prg_attention_workspace(int batch, int c, int t, int heads) {
    size_t pairs = (size_t)batch * heads;
    (void)c;
    return (pairs < PRG__ATT_SLOTS ? pairs : PRG__ATT_SLOTS) * (size_t)t * t;
}

typedef struct prg__att_job {
    float *a, *wsave, *dqkv, *ws;
    const float *qkv, *da, *wcon;
    prg__vec_ops ops;
    int c, t, heads, d;
    size_t first; /* first pair of the round */
    float scale2; /* 1/sqrt(d) */
} prg__att_job;

/* softmax of each row of s [T][T] in place */
static void prg__softmax_rows(float *s, int t, const prg__vec_ops *ops) {
    int r;
    for (r = 0; r < t; r++) ops->softmax(s + (size_t)r * t, (size_t)t);
}

static void prg__att_fwd_range(void *ctx, size_t lo, size_t hi) {
    const prg__att_job *j = (const prg__att_job *)ctx;
    size_t p;
    int t = j->t, d = j->d;
    for (p = lo; p < hi; p++) {
        size_t b = p / (size_t)j->heads, h = p % (size_t)j->heads;
        const float *q = j->qkv + (b * 3 * j->c + h * 3 * d) * t, *k = q + (size_t)d * t,
                    *v = k + (size_t)d * t;
        float *w = j->wsave + p * t * t;
        prg_sgemm(1, 0, t, t, d, j->scale2, q, t, k, t, 0.0f, w, t);
        prg__softmax_rows(w, t, &j->ops);
        prg_sgemm(0, 1, d, t, t, 1.0f, v, t, w, t, 0.0f, j->a + (b * j->c + h * d) * t, t);
    }
}

static void prg__att_bwd_range(void *ctx, size_t lo, size_t hi) {
    const prg__att_job *j = (const prg__att_job *)ctx;
    size_t p;
    int t = j->t, d = j->d, r, i;
    for (p = j->first + lo; p < j->first + hi; p++) {
        size_t b = p / (size_t)j->heads, h = p % (size_t)j->heads;
        const float *q = j->qkv + (b * 3 * j->c + h * 3 * d) * t, *k = q + (size_t)d * t,
                    *v = k + (size_t)d * t;
        const float *w = j->wcon + p * t * t, *da = j->da + (b * j->c + h * d) * t;
        float *dq = j->dqkv + (b * 3 * j->c + h * 3 * d) * t, *dk = dq + (size_t)d * t,
              *dv = dk + (size_t)d * t;
        float *g = j->ws + (p - j->first) * t * t;
        prg_sgemm(0, 0, d, t, t, 1.0f, da, t, w, t, 1.0f, dv, t);
        prg_sgemm(1, 0, t, t, d, 1.0f, da, t, v, t, 0.0f, g, t); /* dW */
        for (r = 0; r < t; r++) { /* dS = W (dW - rowsum(W dW)) */
            const float *wr = w + (size_t)r * t;
            float *gr = g + (size_t)r * t, dot;
            double sw, s;
            j->ops.dots(wr, gr, (size_t)t, &sw, &s);
            dot = (float)s;
            for (i = 0; i < t; i++) gr[i] = wr[i] * (gr[i] - dot);
        }
        prg_sgemm(0, 1, d, t, t, j->scale2, k, t, g, t, 1.0f, dq, t);
        prg_sgemm(0, 0, d, t, t, j->scale2, q, t, g, t, 1.0f, dk, t);
    }
}

static void prg__att_setup(prg__att_job *j, int batch, int c, int t, int heads) {
    PRG_ASSERT(batch > 0 && c > 0 && t > 0 && heads > 0 && c % heads == 0);
    memset(j, 0, sizeof *j);
    j->c = c;
    j->t = t;
    j->heads = heads;
    j->d = c / heads;
    j->scale2 = (float)(1.0 / sqrt((double)j->d));
}

void prg_attention_forward(float *a, float *wsave, const float *qkv, int batch, int c, int t,
                           int heads, float *ws) {
    prg__att_job j;
    (void)ws;
    prg__att_setup(&j, batch, c, t, heads);
    j.a = a; j.wsave = wsave; j.qkv = qkv;
    j.ops = prg__vec_select();
    prg__parallel_for((size_t)batch * heads, 4.0 * t * t * j.d, prg__att_fwd_range, &j);
}

void prg_attention_backward(float *dqkv, const float *da, const float *qkv, const float *wsave,
                            int batch, int c, int t, int heads, float *ws) {
    prg__att_job j;
    size_t pairs = (size_t)batch * heads;
    if (!dqkv) return;
    PRG_ASSERT(ws != NULL);
    prg__att_setup(&j, batch, c, t, heads);
    j.dqkv = dqkv; j.da = da; j.qkv = qkv; j.wcon = wsave; j.ws = ws;
    j.ops = prg__vec_select();
    for (j.first = 0; j.first < pairs; j.first += PRG__ATT_SLOTS) {
        size_t n = pairs - j.first < PRG__ATT_SLOTS ? pairs - j.first : PRG__ATT_SLOTS;
        prg__parallel_for(n, 8.0 * t * t * j.d, prg__att_bwd_range, &j);
    }
}

void prg_attention_forward_ref(float *a, float *wsave, const float *qkv, int batch, int c, int t,
                               int heads, float *ws) {
    int d = c / heads, b, h, r, s, ch;
    double sc = 1.0 / sqrt(sqrt((double)d));
    (void)ws;
    for (b = 0; b < batch; b++)
        for (h = 0; h < heads; h++) {
            const float *q = qkv + ((size_t)b * 3 * c + (size_t)h * 3 * d) * t;
            const float *k = q + (size_t)d * t, *v = k + (size_t)d * t;
            float *w = wsave + ((size_t)b * heads + h) * t * t;
            for (r = 0; r < t; r++) {
                double mx = -HUGE_VAL, sum = 0.0;
                for (s = 0; s < t; s++) {
                    double e = 0.0;
                    for (ch = 0; ch < d; ch++)
                        e += (sc * q[(size_t)ch * t + r]) * (sc * k[(size_t)ch * t + s]);
                    w[(size_t)r * t + s] = (float)e;
                    if (e > mx) mx = e;
                }
                for (s = 0; s < t; s++) sum += exp(w[(size_t)r * t + s] - mx);
                for (s = 0; s < t; s++)
                    w[(size_t)r * t + s] = (float)(exp(w[(size_t)r * t + s] - mx) / sum);
            }
            for (ch = 0; ch < d; ch++)
                for (r = 0; r < t; r++) {
                    double acc = 0.0;
                    for (s = 0; s < t; s++)
                        acc += (double)w[(size_t)r * t + s] * v[(size_t)ch * t + s];
                    a[((size_t)b * c + (size_t)h * d + ch) * t + r] = (float)acc;
                }
        }
}

void prg_attention_backward_ref(float *dqkv, const float *da, const float *qkv,
                                const float *wsave, int batch, int c, int t, int heads,
                                float *ws) {
    int d = c / heads, b, h, r, s, ch;
    double sc2 = 1.0 / sqrt((double)d);
    if (!dqkv) return;
    for (b = 0; b < batch; b++)
        for (h = 0; h < heads; h++) {
            size_t base = ((size_t)b * 3 * c + (size_t)h * 3 * d) * t;
            const float *q = qkv + base, *k = q + (size_t)d * t, *v = k + (size_t)d * t;
            const float *w = wsave + ((size_t)b * heads + h) * t * t;
            const float *g = da + ((size_t)b * c + (size_t)h * d) * t;
            float *dq = dqkv + base, *dk = dq + (size_t)d * t, *dv = dk + (size_t)d * t;
            float *ds = ws; /* [T][T]: d loss / d (scaled scores), rounded once to float */
            /* dV[ch][s] = sum_r dA[ch][r] W[r][s] */
            for (ch = 0; ch < d; ch++)
                for (s = 0; s < t; s++) {
                    double acc = 0.0;
                    for (r = 0; r < t; r++) acc += (double)g[(size_t)ch * t + r] * w[(size_t)r * t + s];
                    dv[(size_t)ch * t + s] += (float)acc;
                }
            /* dW[r][s] = sum_ch dA[ch][r] V[ch][s]; dS = W (dW - sum_s W dW) */
            for (r = 0; r < t; r++) {
                double dot = 0.0;
                for (s = 0; s < t; s++) {
                    double dw = 0.0;
                    for (ch = 0; ch < d; ch++) dw += (double)g[(size_t)ch * t + r] * v[(size_t)ch * t + s];
                    ds[(size_t)r * t + s] = (float)dw;
                    dot += dw * w[(size_t)r * t + s];
                }
                for (s = 0; s < t; s++)
                    ds[(size_t)r * t + s] = (float)(w[(size_t)r * t + s] * (ds[(size_t)r * t + s] - dot));
            }
            /* scores = sc2 sum_ch q[ch][r] k[ch][s] */
            for (ch = 0; ch < d; ch++)
                for (r = 0; r < t; r++) {
                    double aq = 0.0, ak = 0.0;
                    for (s = 0; s < t; s++) {
                        aq += (double)ds[(size_t)r * t + s] * k[(size_t)ch * t + s];
                        ak += (double)ds[(size_t)s * t + r] * q[(size_t)ch * t + s];
                    }
                    dq[(size_t)ch * t + r] += (float)(sc2 * aq);
                    dk[(size_t)ch * t + r] += (float)(sc2 * ak);
                }
        }
}

/* ---- upsample, average pooling, concat ------------------------------------- */

typedef struct prg__plane_job {
    float *out;
    const float *in, *in2;
    int h, w, f;
    size_t n1, n2; /* concat: elements per sample of each part */
} prg__plane_job;

static void prg__up_fwd_range(void *ctx, size_t lo, size_t hi) {
    const prg__plane_job *j = (const prg__plane_job *)ctx;
    size_t p;
    int i, k, w2 = 2 * j->w;
    for (p = lo; p < hi; p++) {
        const float *x = j->in + p * j->h * j->w;
        float *y = j->out + p * 4 * j->h * j->w;
        for (i = 0; i < j->h; i++, x += j->w, y += 2 * w2) {
            for (k = 0; k < j->w; k++) y[2 * k] = y[2 * k + 1] = x[k];
            memcpy(y + w2, y, (size_t)w2 * sizeof(float));
        }
    }
}

static void prg__up_bwd_range(void *ctx, size_t lo, size_t hi) {
    const prg__plane_job *j = (const prg__plane_job *)ctx;
    size_t p;
    int i, k, w2 = 2 * j->w;
    for (p = lo; p < hi; p++) {
        const float *g = j->in + p * 4 * j->h * j->w;
        float *dx = j->out + p * j->h * j->w;
        for (i = 0; i < j->h; i++, dx += j->w, g += 2 * w2)
            for (k = 0; k < j->w; k++)
                dx[k] += (g[2 * k] + g[2 * k + 1]) + (g[w2 + 2 * k] + g[w2 + 2 * k + 1]);
    }
}

static void prg__pool_fwd_range(void *ctx, size_t lo, size_t hi) {
    const prg__plane_job *j = (const prg__plane_job *)ctx;
    int f = j->f, ho = j->h / f, wo = j->w / f, i, k, a, b;
    float inv = 1.0f / (float)(f * f);
    size_t p;
    for (p = lo; p < hi; p++) {
        const float *x = j->in + p * j->h * j->w;
        float *y = j->out + p * ho * wo;
        for (i = 0; i < ho; i++)
            for (k = 0; k < wo; k++) {
                float s = 0.0f;
                for (a = 0; a < f; a++)
                    for (b = 0; b < f; b++) s += x[(size_t)(i * f + a) * j->w + k * f + b];
                y[i * wo + k] = s * inv;
            }
    }
}

static void prg__pool_bwd_range(void *ctx, size_t lo, size_t hi) {
    const prg__plane_job *j = (const prg__plane_job *)ctx;
    int f = j->f, ho = j->h / f, wo = j->w / f, i, k;
    float inv = 1.0f / (float)(f * f);
    size_t p;
    for (p = lo; p < hi; p++) {
        const float *g = j->in + p * ho * wo;
        float *dx = j->out + p * j->h * j->w;
        for (i = 0; i < j->h; i++)
            for (k = 0; k < j->w; k++) dx[(size_t)i * j->w + k] += g[(i / f) * wo + k / f] * inv;
    }
}

static void prg__plane_run(prg__range_fn fn, float *out, const float *in, int n, int h, int w,
                           int f) {
    prg__plane_job j;
    memset(&j, 0, sizeof j);
    j.out = out; j.in = in; j.h = h; j.w = w; j.f = f;
    prg__parallel_for((size_t)n, 4.0 * h * w, fn, &j);
}

void prg_upsample2x_forward(float *y, const float *x, int n, int h, int w) {
    prg__plane_run(prg__up_fwd_range, y, x, n, h, w, 2);
}
void prg_upsample2x_backward(float *dx, const float *dy, int n, int h, int w) {
    if (!dx) return;
    prg__plane_run(prg__up_bwd_range, dx, dy, n, h, w, 2);
}
void prg_avgpool_forward(float *y, const float *x, int n, int h, int w, int f) {
    PRG_ASSERT(f > 0 && h % f == 0 && w % f == 0);
    prg__plane_run(prg__pool_fwd_range, y, x, n, h, w, f);
}
void prg_avgpool_backward(float *dx, const float *dy, int n, int h, int w, int f) {
    if (!dx) return;
    PRG_ASSERT(f > 0 && h % f == 0 && w % f == 0);
    prg__plane_run(prg__pool_bwd_range, dx, dy, n, h, w, f);
}

void prg_upsample2x_forward_ref(float *y, const float *x, int n, int h, int w) {
    int p, i, k;
    for (p = 0; p < n; p++)
        for (i = 0; i < 2 * h; i++)
            for (k = 0; k < 2 * w; k++)
                y[((size_t)p * 2 * h + i) * 2 * w + k] = x[((size_t)p * h + i / 2) * w + k / 2];
}
void prg_upsample2x_backward_ref(float *dx, const float *dy, int n, int h, int w) {
    int p, i, k;
    if (!dx) return;
    for (p = 0; p < n; p++)
        for (i = 0; i < h; i++)
            for (k = 0; k < w; k++) {
                const float *g = dy + ((size_t)p * 2 * h + 2 * i) * 2 * w + 2 * k;
                dx[((size_t)p * h + i) * w + k] +=
                    (float)((double)g[0] + g[1] + g[2 * w] + g[2 * w + 1]);
            }
}
void prg_avgpool_forward_ref(float *y, const float *x, int n, int h, int w, int f) {
    int p, i, k, a, b;
    for (p = 0; p < n; p++)
        for (i = 0; i < h / f; i++)
            for (k = 0; k < w / f; k++) {
                double s = 0.0;
                for (a = 0; a < f; a++)
                    for (b = 0; b < f; b++) s += x[((size_t)p * h + i * f + a) * w + k * f + b];
                y[((size_t)p * (h / f) + i) * (w / f) + k] = (float)(s / (f * f));
            }
}
void prg_avgpool_backward_ref(float *dx, const float *dy, int n, int h, int w, int f) {
    int p, i, k;
    if (!dx) return;
    for (p = 0; p < n; p++)
        for (i = 0; i < h; i++)
            for (k = 0; k < w; k++)
                dx[((size_t)p * h + i) * w + k] +=
                    (float)(dy[((size_t)p * (h / f) + i / f) * (w / f) + k / f] / (double)(f * f));
}

/* concat: one sample per index */
static void prg__cat_fwd_range(void *ctx, size_t lo, size_t hi) {
    const prg__plane_job *j = (const prg__plane_job *)ctx;
    size_t b;
    for (b = lo; b < hi; b++) {
        float *y = j->out + b * (j->n1 + j->n2);
        memcpy(y, j->in + b * j->n1, j->n1 * sizeof(float));
        memcpy(y + j->n1, j->in2 + b * j->n2, j->n2 * sizeof(float));
    }
}

typedef struct prg__cat_bwd_job { float *da, *dc; const float *dy; size_t n1, n2; } prg__cat_bwd_job;

static void prg__cat_bwd_range(void *ctx, size_t lo, size_t hi) {
    const prg__cat_bwd_job *j = (const prg__cat_bwd_job *)ctx;
    size_t b, i;
    for (b = lo; b < hi; b++) {
        const float *g = j->dy + b * (j->n1 + j->n2);
        if (j->da)
            for (i = 0; i < j->n1; i++) j->da[b * j->n1 + i] += g[i];
        if (j->dc)
            for (i = 0; i < j->n2; i++) j->dc[b * j->n2 + i] += g[j->n1 + i];
    }
}

void prg_concat_forward(float *y, const float *a, const float *c, int batch, int c1, int c2,
                        int hw) {
    prg__plane_job j;
    memset(&j, 0, sizeof j);
    j.out = y; j.in = a; j.in2 = c;
    j.n1 = (size_t)c1 * hw;
    j.n2 = (size_t)c2 * hw;
    prg__parallel_for((size_t)batch, (double)(j.n1 + j.n2), prg__cat_fwd_range, &j);
}

void prg_concat_backward(float *da, float *dc, const float *dy, int batch, int c1, int c2, int hw) {
    prg__cat_bwd_job j;
    j.da = da; j.dc = dc; j.dy = dy;
    j.n1 = (size_t)c1 * hw;
    j.n2 = (size_t)c2 * hw;
    prg__parallel_for((size_t)batch, (double)(j.n1 + j.n2), prg__cat_bwd_range, &j);
}

void prg_concat_forward_ref(float *y, const float *a, const float *c, int batch, int c1, int c2,
                            int hw) {
    int b, ch, i;
    for (b = 0; b < batch; b++)
        for (ch = 0; ch < c1 + c2; ch++)
            for (i = 0; i < hw; i++)
                y[((size_t)b * (c1 + c2) + ch) * hw + i] =
                    ch < c1 ? a[((size_t)b * c1 + ch) * hw + i]
                            : c[((size_t)b * c2 + ch - c1) * hw + i];
}

void prg_concat_backward_ref(float *da, float *dc, const float *dy, int batch, int c1, int c2,
                             int hw) {
    int b, ch, i;
    for (b = 0; b < batch; b++)
        for (ch = 0; ch < c1 + c2; ch++)
            for (i = 0; i < hw; i++) {
                float g = dy[((size_t)b * (c1 + c2) + ch) * hw + i];
                if (ch < c1) {
                    if (da) da[((size_t)b * c1 + ch) * hw + i] += g;
                } else if (dc) {
                    dc[((size_t)b * c2 + ch - c1) * hw + i] += g;
                }
            }
}

/* ---- timestep embedding, losses --------------------------------------------- */

void prg_timestep_embedding(float *emb, const float *t, int batch, int dim, float max_period) {
    int half = dim / 2, b, i;
    /* float32 throughout, in torch's order of operations */
    float nl = (float)(-log((double)max_period));
    for (b = 0; b < batch; b++) {
        float *e = emb + (size_t)b * dim;
        for (i = 0; i < half; i++) {
            float arg = t[b] * expf(nl * (float)i / (float)half);
            e[i] = cosf(arg);
            e[half + i] = sinf(arg);
        }
        if (dim % 2) e[dim - 1] = 0.0f;
    }
}

float prg_cross_entropy_forward_backward(float *dlogits, const float *logits, const int *labels,
                                         int n, int k, float smoothing) {
    double total = 0.0, conf = 1.0 - (double)smoothing;
    int r, i;
    if (!logits || !labels || n < 1 || k < 1) {
        prg__fail(PRG_ERR_ARG, "prg_cross_entropy_forward_backward: need logits, labels, n >= 1 and k >= 1 (n = %d, k = %d)", n, k);
        return (float)NAN;
    }
    for (r = 0; r < n; r++)
        if (labels[r] < 0 || labels[r] >= k) {
            prg__fail(PRG_ERR_ARG, "prg_cross_entropy_forward_backward: label %d of sample %d is outside [0, %d) (the class count)",
                      labels[r], r, k);
            return (float)NAN;
        }
    for (r = 0; r < n; r++) {
        const float *z = logits + (size_t)r * k;
        double mx = z[0], sum = 0.0, mean = 0.0, lse;
        int y = labels[r];
        for (i = 1; i < k; i++) mx = z[i] > mx ? z[i] : mx;
        for (i = 0; i < k; i++) {
            sum += exp(z[i] - mx);
            mean += z[i];
        }
        lse = mx + log(sum);
        mean /= k;
        /* -log p_y = lse - z_y; mean_k(-log p_k) = lse - mean_k z_k */
        total += conf * (lse - z[y]) + smoothing * (lse - mean);
        if (dlogits)
            for (i = 0; i < k; i++) {
                double g = exp(z[i] - lse) - smoothing / (double)k - (i == y ? conf : 0.0);
                dlogits[(size_t)r * k + i] = (float)(g / n);
            }
    }
    return (float)(total / n);
}

float prg_flow_loss_forward_backward(float *dv, const float *v, const float *target, int batch,
                                     int c, int hw) {
    size_t i, n = (size_t)batch * c * hw;
    double total = 0.0, inv = 1.0 / ((double)batch * hw);
    for (i = 0; i < n; i++) {
        double e = (double)v[i] - target[i];
        total += e * e;
        if (dv) dv[i] = (float)(e * inv);
    }
    return (float)(0.5 * total * inv);
}

/* >>unet ================================================================ */
/* Parameters: a table of tensors in state-dict order over one flat block.
   The network is a list of modules (conv, ResBlock, attention, upsample,
   concat, norm+SiLU) run in order.  Each keeps what is costly to redo (conv
   and attention outputs, softmax weights) at fixed per-image offsets of the
   activation block, so the layout for a batch B is the per-image layout
   times B (every activation is linear in B).  GroupNorm, SiLU, scale-shift,
   concat and upsample outputs are recomputed by backward with the same
   kernels (same bits), into a scratch block laid out the same way.  The
   activation set is switchable (prg__unet_use_act: a caller keeps several
   forwards for later backwards), and a lean forward runs the same modules
   over a smaller layout that keeps nothing for a backward. */

#define PRG__UNET_NAME 48
#define PRG__UNET_EPS 1e-5f
#define PRG__UNET_MAX_PERIOD 10000.0f

enum { PRG__UT_UNIFORM, PRG__UT_ONES, PRG__UT_ZEROS };
typedef struct prg__unet_tensor {
    char name[PRG__UNET_NAME];
    int ndim;
    int64_t shape[4];
    size_t offset, count;
    int init;     /* PRG__UT_*: PyTorch default U(-1/sqrt(fan_in), ..), GN ones, zeros */
    int fan_in;
} prg__unet_tensor;

enum { PRG__UM_CONV, PRG__UM_RES, PRG__UM_ATTN, PRG__UM_UP, PRG__UM_CAT, PRG__UM_NORMACT };
#define PRG__UNET_G_DX (-1) /* gradient buffer id: the caller's dx */
#define PRG__UNET_G_DV (-2) /* gradient buffer id: the caller's dv */

typedef struct prg__unet_mod {
    int type;
    int cin, cin2, cout; /* input channels (cin2: CAT's second input), output channels */
    int h, w;            /* input size */
    int k, stride, pad;  /* CONV */
    int par;             /* index of the module's first tensor */
    int has_skip;        /* RES: 1x1 conv on the residual path */
    int in_rc, out_rc;   /* input / output lives in the recompute buffer (CAT and UP outputs: cheap
                            to redo, so backward recomputes them instead of keeping them) */
    size_t in, in2, out; /* activations, offsets in floats per image */
    int gin, gin2, gout; /* gradient buffers: 0/1 ping-pong, >= 2 skip tensors, PRG__UNET_G_* */
    size_t t[3];         /* saved intermediates, floats per image */
    size_t st[2];        /* GroupNorm statistics, 2 G floats per image (means [B][G], then rstds
                            [B][G]): RES's two norms, ATTN's and NORMACT's in st[0]; kept by
                            forward so that backward's recomputation skips them; SIZE_MAX in
                            the lean layout (they go to scratch) */
} prg__unet_mod;

struct prg_unet {
    prg_unet_config cfg;
    prg__unet_tensor *tens;
    int ntens, tcap;
    prg__unet_mod *mods;
    int nmods, mcap;
    size_t nparams;
    float *params, *grads;
    /* per-image layout */
    size_t act_floats, scr_floats;
    size_t x_off, temb_off, e1_off, e1s_off, emb_off, semb_off;
    size_t t1_off, t2_off, dss_off, dsemb_off, de1_off, de2_off;
    size_t r_off[3], gm_off, gr_off; /* recomputed GroupNorm/SiLU outputs, GroupNorm statistics */
    size_t rc_off;                   /* the recompute buffer of CAT/UP outputs */
    size_t maxel;          /* largest C*H*W of any tensor the backward passes around */
    size_t *gbuf_off;      /* gradient buffers (ping-pong, then skips) in the scratch block */
    size_t *gbuf_len;
    int ngbuf, gcap;
    /* the skip stack while planning */
    int *stack;
    int nstack;
    /* current tensor while planning */
    size_t cur_off;
    int cur_c, cur_h, cur_g, cur_rc;
    /* storage for the largest batch seen */
    int cap_batch;
    int lean_batch;        /* largest batch the blocks hold for a lean forward (>= cap_batch) */
    float *act, *scr, *ws; /* act: the activation set forward writes and backward reads */
    size_t act_cap, scr_cap; /* floats allocated in act_own and scr */
    /* the lean forward (prg_unet_forward_lean): the modules over a layout that
       holds the skip tensors, two ping-pong tensors and one module's
       intermediates at a time; its scratch is the head of the full one */
    prg__unet_mod *lmods;
    size_t lean_floats, lean_scr_floats;
    float *act_own;        /* the net's own set; a caller may lend others (prg__unet_use_act) */
    size_t ws_floats;
    int fwd_batch;         /* batch of the last forward, 0 = none */
    uint64_t fwd_serial;   /* forwards run so far: names the activations held */
    /* the convolutions, planned: plans[i] is the one whose weight is tensor i
       (the other entries unused); planned for plan_batch on plan_cpu */
    prg__conv_plan *plans;
    int plan_batch;
    const prg__cpu *plan_cpu;
    size_t keep_left;      /* floats the plans may still spend keeping Winograd weights */
    int keeping;           /* > 0: the weights do not change, the plans keep theirs */
    prg_loss loss;         /* the pretraining loss (flow section) */
    int owned;             /* 1 once a classifier has taken it (prg_classifier_create) */
    prg_grad_ready_fn grad_hook; /* prg_unet_set_grad_hook */
    void *grad_hook_ctx;
};

static int prg__unet_has_attn(const prg_unet_config *c, int ds) {
    int i;
    for (i = 0; i < c->num_attention; i++)
        if (c->attention_ds[i] == ds) return 1;
    return 0;
}

prg_result prg_unet_config_check(const prg_unet_config *c) {
    int i, j, levels, mc;
    if (!c) return prg__fail(PRG_ERR_ARG, "prg_unet_config_check: cfg is NULL");
    if (c->in_channels < 1 || c->in_channels > 4096 || c->out_channels < 1 || c->out_channels > 4096)
        return prg__fail(PRG_ERR_CONFIG, "unet config: in_channels=%d, out_channels=%d must be in 1..4096",
                         c->in_channels, c->out_channels);
    mc = c->model_channels;
    if (mc < 2 || mc > 8192 || mc % 2)
        return prg__fail(PRG_ERR_CONFIG, "unet config: model_channels=%d must be even and in 2..8192", mc);
    if (c->num_res_blocks < 1 || c->num_res_blocks > 64)
        return prg__fail(PRG_ERR_CONFIG, "unet config: num_res_blocks=%d must be in 1..64", c->num_res_blocks);
    levels = c->num_levels;
    if (levels < 1 || levels > PRG_UNET_MAX_LEVELS)
        return prg__fail(PRG_ERR_CONFIG, "unet config: num_levels=%d must be in 1..%d", levels,
                         PRG_UNET_MAX_LEVELS);
    if (c->channel_mult[0] != 1)
        return prg__fail(PRG_ERR_CONFIG,
                         "unet config: channel_mult[0]=%d must be 1 (the output head maps model_channels "
                         "to out_channels, as in the reference)", c->channel_mult[0]);
    if (c->groups < 1 || c->groups > mc)
        return prg__fail(PRG_ERR_CONFIG, "unet config: groups=%d must be in 1..model_channels (%d)", c->groups,
                         mc);
    if (c->num_heads < 1)
        return prg__fail(PRG_ERR_CONFIG, "unet config: num_heads=%d must be >= 1", c->num_heads);
    for (i = 0; i < levels; i++) {
        int ch = mc * c->channel_mult[i];
        if (c->channel_mult[i] < 1 || c->channel_mult[i] > 64)
            return prg__fail(PRG_ERR_CONFIG, "unet config: channel_mult[%d]=%d must be in 1..64", i,
                             c->channel_mult[i]);
        if (ch % c->groups)
            return prg__fail(PRG_ERR_CONFIG,
                             "unet config: level %d has %d channels, not divisible by groups=%d "
                             "(choose model_channels a multiple of %d)", i, ch, c->groups, c->groups);
        if ((prg__unet_has_attn(c, 1 << i) || i == levels - 1) && ch % c->num_heads)
            return prg__fail(PRG_ERR_CONFIG,
                             "unet config: attention on %d channels (level %d) does not split into num_heads=%d",
                             ch, i, c->num_heads);
    }
    if (c->num_attention < 0 || c->num_attention > PRG_UNET_MAX_LEVELS)
        return prg__fail(PRG_ERR_CONFIG, "unet config: num_attention=%d must be in 0..%d", c->num_attention,
                         PRG_UNET_MAX_LEVELS);
    for (i = 0; i < c->num_attention; i++) {
        int ok = 0;
        for (j = 0; j < levels; j++) ok |= c->attention_ds[i] == (1 << j);
        if (!ok)
            return prg__fail(PRG_ERR_CONFIG,
                             "unet config: attention_ds[%d]=%d is not a downsample rate of this U-Net "
                             "(1, 2, ... %d for %d levels)", i, c->attention_ds[i], 1 << (levels - 1), levels);
    }
    if (c->image_size < 1 || c->image_size > 4096 || c->image_size % (1 << (levels - 1)))
        return prg__fail(PRG_ERR_CONFIG,
                         "unet config: image_size=%d must be in 1..4096 and divisible by 2^(num_levels-1) = %d",
                         c->image_size, 1 << (levels - 1));
    for (j = 0; j < levels; j++) {
        /* attention weights are [heads][T][T] per image: keep T*T*heads within int range */
        int64_t side = c->image_size >> j, tt = side * side;
        if ((prg__unet_has_attn(c, 1 << j) || j == levels - 1) && tt * tt * c->num_heads > ((int64_t)1 << 31) - 1)
            return prg__fail(PRG_ERR_CONFIG,
                             "unet config: attention at %dx%d with %d heads needs a %lldx%lld weight matrix per "
                             "head; attend at lower resolutions", (int)side, (int)side, c->num_heads,
                             (long long)tt, (long long)tt);
    }
    return PRG_OK;
}

prg_result prg_unet_config_preset(prg_unet_config *cfg, const char *name) {
    prg_unet_config c;
    if (!cfg || !name) return prg__fail(PRG_ERR_ARG, "prg_unet_config_preset: NULL argument");
    memset(&c, 0, sizeof c);
    c.in_channels = c.out_channels = 3;
    c.num_heads = 4;
    c.groups = 32;
    c.channel_mult[0] = 1;
    c.channel_mult[1] = 2;
    c.channel_mult[2] = 2;
    c.num_levels = 3;
    c.image_size = 32;
    if (strcmp(name, "cifar32") == 0) {
        c.model_channels = 128;
        c.num_res_blocks = 3;
        c.channel_mult[3] = 2;
        c.num_levels = 4;
        c.num_attention = 2;
        c.attention_ds[0] = 2;
        c.attention_ds[1] = 4;
    } else if (strcmp(name, "imagenet64") == 0) {
        c.model_channels = 128;
        c.num_res_blocks = 3;
        c.channel_mult[2] = 3;
        c.channel_mult[3] = 4;
        c.num_levels = 4;
        c.num_attention = 2;
        c.attention_ds[0] = 4;
        c.attention_ds[1] = 8;
        c.image_size = 64;
    } else if (strcmp(name, "small32") == 0) {
        c.model_channels = 64;
        c.num_res_blocks = 2;
        c.num_attention = 2;
        c.attention_ds[0] = 2;
        c.attention_ds[1] = 4;
    } else if (strcmp(name, "tiny32") == 0) {
        c.model_channels = 32;
        c.num_res_blocks = 1;
        c.num_attention = 1;
        c.attention_ds[0] = 4;
    } else {
        return prg__fail(PRG_ERR_CONFIG,
                         "unknown U-Net preset \"%s\" (use cifar32, imagenet64, small32 or tiny32)", name);
    }
    *cfg = c;
    return PRG_OK;
}

/* --- planning: tensors, modules, activation layout ------------------------ */

static size_t prg__unet_act(prg_unet *n, size_t count) {
    size_t off = n->act_floats;
    n->act_floats += (count + 15) & ~(size_t)15; /* 64-byte aligned for any batch */
    return off;
}

static size_t prg__unet_scr(prg_unet *n, size_t count) {
    size_t off = n->scr_floats;
    n->scr_floats += (count + 15) & ~(size_t)15;
    return off;
}

static void prg__unet_join(char *dst, size_t cap, const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    PRG_ASSERT(la + lb < cap);
    memcpy(dst, a, la);
    memcpy(dst + la, b, lb + 1);
}

static void prg__unet_tensor_add(prg_unet *n, const char *prefix, const char *suffix, int init, int fan_in,
                                 int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    prg__unet_tensor *t = &n->tens[n->ntens++];
    int i;
    PRG_ASSERT(n->ntens <= n->tcap);
    prg__unet_join(t->name, sizeof t->name, prefix, suffix);
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->shape[2] = d2;
    t->shape[3] = d3;
    t->count = 1;
    for (i = 0; i < ndim; i++) t->count *= (size_t)t->shape[i];
    t->offset = n->nparams;
    t->init = init;
    t->fan_in = fan_in;
    n->nparams += t->count;
}

/* A conv (k x k, or Conv1d k=1 when conv1d) or linear weight + bias. */
static void prg__unet_wb(prg_unet *n, const char *prefix, int cout, int cin, int k, int conv1d, int zero) {
    int init = zero ? PRG__UT_ZEROS : PRG__UT_UNIFORM, fan = cin * k * k;
    if (k == 0)
        prg__unet_tensor_add(n, prefix, "weight", init, cin, 2, cout, cin, 1, 1);
    else if (conv1d)
        prg__unet_tensor_add(n, prefix, "weight", init, fan, 3, cout, cin, 1, 1);
    else
        prg__unet_tensor_add(n, prefix, "weight", init, fan, 4, cout, cin, k, k);
    prg__unet_tensor_add(n, prefix, "bias", init, k == 0 ? cin : fan, 1, cout, 1, 1, 1);
}

static void prg__unet_gn(prg_unet *n, const char *prefix, int c) {
    prg__unet_tensor_add(n, prefix, "weight", PRG__UT_ONES, 0, 1, c, 1, 1, 1);
    prg__unet_tensor_add(n, prefix, "bias", PRG__UT_ZEROS, 0, 1, c, 1, 1, 1);
}

static void prg__unet_note(prg_unet *n, size_t el) {
    if (el > n->maxel) n->maxel = el;
}

/* Appends a module that reads the current tensor and makes a new one of
   cout channels at size hout; the new one becomes current. */
static prg__unet_mod *prg__unet_mod_new(prg_unet *n, int type, int cout, int hout) {
    prg__unet_mod *m = &n->mods[n->nmods++];
    PRG_ASSERT(n->nmods <= n->mcap);
    memset(m, 0, sizeof *m);
    m->type = type;
    m->cin = n->cur_c;
    m->h = m->w = n->cur_h;
    m->in = n->cur_off;
    m->gin = n->cur_g;
    m->in_rc = n->cur_rc;
    m->out_rc = type == PRG__UM_CAT || type == PRG__UM_UP;
    m->cout = cout;
    m->par = n->ntens;
    m->out = m->out_rc ? 0 : prg__unet_act(n, (size_t)cout * hout * hout);
    m->gout = n->cur_g == 0 ? 1 : 0;
    prg__unet_note(n, (size_t)m->cin * m->h * m->w);
    prg__unet_note(n, (size_t)cout * hout * hout);
    n->cur_off = m->out;
    n->cur_c = cout;
    n->cur_h = hout;
    n->cur_g = m->gout;
    n->cur_rc = m->out_rc;
    return m;
}

static void prg__unet_conv(prg_unet *n, const char *prefix, int cout, int stride, int zero) {
    int hout = stride == 2 ? n->cur_h / 2 : n->cur_h;
    prg__unet_mod *m = prg__unet_mod_new(n, PRG__UM_CONV, cout, hout);
    m->k = 3;
    m->stride = stride;
    m->pad = 1;
    prg__unet_wb(n, prefix, cout, m->cin, 3, 0, zero);
}

/* A module's tensors by name: slot j of module m is n->tens[m->par + j], in
   the order prg__unet_res / prg__unet_attn add them (state-dict order). */
enum {
    PRG__RES_NORM1_W, PRG__RES_NORM1_B, /* in_layers.0 */
    PRG__RES_CONV1_W, PRG__RES_CONV1_B, /* in_layers.2 */
    PRG__RES_EMB_W, PRG__RES_EMB_B,     /* emb_layers.1 */
    PRG__RES_NORM2_W, PRG__RES_NORM2_B, /* out_layers.0 */
    PRG__RES_CONV2_W, PRG__RES_CONV2_B, /* out_layers.3 */
    PRG__RES_SKIP_W, PRG__RES_SKIP_B    /* skip_connection (cin != cout) */
};
enum { PRG__ATTN_NORM_W, PRG__ATTN_NORM_B, PRG__ATTN_QKV_W, PRG__ATTN_QKV_B, PRG__ATTN_PROJ_W, PRG__ATTN_PROJ_B };

static void prg__unet_res(prg_unet *n, const char *prefix, int cout) {
    int cin = n->cur_c, hw = n->cur_h * n->cur_h, ed = 4 * n->cfg.model_channels;
    char p[PRG__UNET_NAME];
    prg__unet_mod *m = prg__unet_mod_new(n, PRG__UM_RES, cout, n->cur_h);
    m->has_skip = cin != cout;
    /* kept: conv1 output and scale|shift; the GroupNorm and SiLU outputs
       are recomputed by backward (cheap, and 2.5x less memory) */
    m->t[0] = prg__unet_act(n, (size_t)cout * hw);
    m->t[1] = prg__unet_act(n, (size_t)2 * cout);
    m->st[0] = prg__unet_act(n, (size_t)2 * n->cfg.groups);
    m->st[1] = prg__unet_act(n, (size_t)2 * n->cfg.groups);
    prg__unet_join(p, sizeof p, prefix, "in_layers.0.");
    prg__unet_gn(n, p, cin);
    prg__unet_join(p, sizeof p, prefix, "in_layers.2.");
    prg__unet_wb(n, p, cout, cin, 3, 0, 0);
    prg__unet_join(p, sizeof p, prefix, "emb_layers.1.");
    prg__unet_wb(n, p, 2 * cout, ed, 0, 0, 0);
    prg__unet_join(p, sizeof p, prefix, "out_layers.0.");
    prg__unet_gn(n, p, cout);
    prg__unet_join(p, sizeof p, prefix, "out_layers.3.");
    prg__unet_wb(n, p, cout, cout, 3, 0, 1);
    if (m->has_skip) {
        prg__unet_join(p, sizeof p, prefix, "skip_connection.");
        prg__unet_wb(n, p, cout, cin, 1, 0, 0);
    }
}

static void prg__unet_attn(prg_unet *n, const char *prefix) {
    int c = n->cur_c, hw = n->cur_h * n->cur_h, heads = n->cfg.num_heads;
    char p[PRG__UNET_NAME];
    prg__unet_mod *m = prg__unet_mod_new(n, PRG__UM_ATTN, c, n->cur_h);
    m->t[0] = prg__unet_act(n, (size_t)3 * c * hw);          /* qkv (its GN input is recomputed) */
    m->t[1] = prg__unet_act(n, (size_t)c * hw);              /* attention output */
    m->t[2] = prg__unet_act(n, (size_t)heads * hw * hw);     /* softmax weights */
    m->st[0] = prg__unet_act(n, (size_t)2 * n->cfg.groups);
    prg__unet_note(n, (size_t)3 * c * hw);
    prg__unet_join(p, sizeof p, prefix, "norm.");
    prg__unet_gn(n, p, c);
    prg__unet_join(p, sizeof p, prefix, "qkv.");
    prg__unet_wb(n, p, 3 * c, c, 1, 1, 0);
    prg__unet_join(p, sizeof p, prefix, "proj_out.");
    prg__unet_wb(n, p, c, c, 1, 1, 1);
}

/* The current tensor is an input block's output: it goes on the skip stack
   and gets its own gradient buffer (two consumers accumulate into it). */
static void prg__unet_push(prg_unet *n) {
    int id = n->ngbuf++;
    PRG_ASSERT(n->ngbuf <= n->gcap);
    n->gbuf_len[id] = (size_t)n->cur_c * n->cur_h * n->cur_h;
    n->mods[n->nmods - 1].gout = id;
    n->cur_g = id;
    n->stack[n->nstack++] = n->nmods - 1;
}

static void prg__unet_cat(prg_unet *n) {
    const prg__unet_mod *s = &n->mods[n->stack[--n->nstack]];
    int c2 = s->cout;
    prg__unet_mod *m = prg__unet_mod_new(n, PRG__UM_CAT, n->cur_c + c2, n->cur_h);
    m->cin2 = c2;
    m->in2 = s->out;
    m->gin2 = s->gout;
}

static void prg__unet_plan_free(prg_unet *n) {
    prg_free(n->tens);
    prg_free(n->mods);
    prg_free(n->gbuf_off);
    prg_free(n->gbuf_len);
    prg_free(n->stack);
    n->tens = NULL;
    n->mods = NULL;
    n->gbuf_off = n->gbuf_len = NULL;
    n->stack = NULL;
}

/* Builds the tensor table and the module list of n->cfg (already checked). */
static prg_result prg__unet_plan(prg_unet *n) {
    const prg_unet_config *c = &n->cfg;
    int mc = c->model_channels, ed = 4 * mc, L = c->num_levels, R = c->num_res_blocks;
    int nres = L * R + 2 + L * (R + 1), level, r, ds, blk, ch, i;
    char p[PRG__UNET_NAME];
    prg__unet_mod *m;
    n->tcap = 16 + 18 * nres + 8 * L;
    n->mcap = 16 + 3 * nres + 4 * L;
    n->gcap = 4 + L * (R + 1);
    n->tens = (prg__unet_tensor *)prg_alloc((size_t)n->tcap * sizeof *n->tens);
    n->mods = (prg__unet_mod *)prg_alloc((size_t)n->mcap * sizeof *n->mods);
    n->gbuf_off = (size_t *)prg_alloc((size_t)n->gcap * sizeof(size_t));
    n->gbuf_len = (size_t *)prg_alloc((size_t)n->gcap * sizeof(size_t));
    n->stack = (int *)prg_alloc((size_t)n->gcap * sizeof(int));
    if (!n->tens || !n->mods || !n->gbuf_off || !n->gbuf_len || !n->stack) {
        prg__unet_plan_free(n);
        return prg__fail(PRG_ERR_NOMEM, "prg_unet: out of memory for the layer tables");
    }
    n->ngbuf = 2;
    n->nstack = 0;

    prg__unet_wb(n, "time_embed.0.", ed, mc, 0, 0, 0);
    prg__unet_wb(n, "time_embed.2.", ed, ed, 0, 0, 0);
    n->x_off = prg__unet_act(n, (size_t)c->in_channels * c->image_size * c->image_size);
    n->temb_off = prg__unet_act(n, (size_t)mc);
    n->e1_off = prg__unet_act(n, (size_t)ed);
    n->e1s_off = prg__unet_act(n, (size_t)ed);
    n->emb_off = prg__unet_act(n, (size_t)ed);
    n->semb_off = prg__unet_act(n, (size_t)ed);
    n->cur_off = n->x_off;
    n->cur_c = c->in_channels;
    n->cur_h = c->image_size;
    n->cur_g = PRG__UNET_G_DX;

    prg__unet_conv(n, "input_blocks.0.0.", mc, 1, 0);
    prg__unet_push(n);
    ds = 1;
    blk = 1;
    for (level = 0; level < L; level++) {
        for (r = 0; r < R; r++, blk++) {
            snprintf(p, sizeof p, "input_blocks.%d.0.", blk);
            prg__unet_res(n, p, mc * c->channel_mult[level]);
            if (prg__unet_has_attn(c, ds)) {
                snprintf(p, sizeof p, "input_blocks.%d.1.", blk);
                prg__unet_attn(n, p);
            }
            prg__unet_push(n);
        }
        if (level != L - 1) {
            snprintf(p, sizeof p, "input_blocks.%d.0.op.", blk++);
            prg__unet_conv(n, p, n->cur_c, 2, 0);
            prg__unet_push(n);
            ds *= 2;
        }
    }
    ch = n->cur_c;
    prg__unet_res(n, "middle_block.0.", ch);
    prg__unet_attn(n, "middle_block.1.");
    prg__unet_res(n, "middle_block.2.", ch);
    blk = 0;
    for (level = L - 1; level >= 0; level--) {
        for (r = 0; r <= R; r++, blk++) {
            i = 1;
            prg__unet_cat(n);
            snprintf(p, sizeof p, "output_blocks.%d.0.", blk);
            prg__unet_res(n, p, mc * c->channel_mult[level]);
            if (prg__unet_has_attn(c, ds)) {
                snprintf(p, sizeof p, "output_blocks.%d.%d.", blk, i++);
                prg__unet_attn(n, p);
            }
            if (level && r == R) {
                prg__unet_mod_new(n, PRG__UM_UP, n->cur_c, 2 * n->cur_h);
                snprintf(p, sizeof p, "output_blocks.%d.%d.conv.", blk, i);
                prg__unet_conv(n, p, n->cur_c, 1, 0);
                ds /= 2;
            }
        }
    }
    m = prg__unet_mod_new(n, PRG__UM_NORMACT, n->cur_c, n->cur_h);
    m->st[0] = prg__unet_act(n, (size_t)2 * n->cfg.groups);
    prg__unet_gn(n, "out.0.", m->cin);
    prg__unet_conv(n, "out.2.", c->out_channels, 1, 1);
    n->mods[n->nmods - 1].gout = PRG__UNET_G_DV;
    PRG_ASSERT(n->nstack == 0);

    /* scratch, per image: first what forward uses too, then backward's */
    for (i = 0; i < 3; i++) n->r_off[i] = prg__unet_scr(n, n->maxel);
    n->gm_off = prg__unet_scr(n, (size_t)c->groups);
    n->gr_off = prg__unet_scr(n, (size_t)c->groups);
    n->rc_off = prg__unet_scr(n, n->maxel);
    n->lean_scr_floats = n->scr_floats;
    for (i = 0; i < 2; i++) n->gbuf_len[i] = n->maxel;
    for (i = 0; i < n->ngbuf; i++) n->gbuf_off[i] = prg__unet_scr(n, n->gbuf_len[i]);
    n->t1_off = prg__unet_scr(n, n->maxel);
    n->t2_off = prg__unet_scr(n, n->maxel);
    for (i = 0, ch = 1; i < L; i++)
        if (c->channel_mult[i] > ch) ch = c->channel_mult[i];
    n->dss_off = prg__unet_scr(n, (size_t)2 * mc * ch);
    n->dsemb_off = prg__unet_scr(n, (size_t)ed);
    n->de1_off = prg__unet_scr(n, (size_t)ed);
    n->de2_off = prg__unet_scr(n, (size_t)ed);
    return PRG_OK;
}

/* The lean forward's modules (n->lmods): the same modules over a layout
   that, after the input and the time embedding (as in the full layout),
   gives each skip tensor (an output a CAT reads later) its own place, every
   other output one of two ping-pong places (never the module's own input),
   and the intermediates t[] places shared by all modules.  Falls back to
   the full layout if that is not smaller. */
static prg_result prg__unet_plan_lean(prg_unet *n) {
    size_t base = n->semb_off + ((4 * (size_t)n->cfg.model_channels + 15) & ~(size_t)15), off, pp[2], t_sz[3];
    size_t tmax[3] = {0, 0, 0};
    int i, j, k, skip;
    n->lmods = (prg__unet_mod *)prg_alloc((size_t)n->nmods * sizeof *n->lmods);
    if (!n->lmods) return prg__fail(PRG_ERR_NOMEM, "prg_unet: out of memory for the layer tables");
    memcpy(n->lmods, n->mods, (size_t)n->nmods * sizeof *n->lmods);
    off = base;
    for (i = 0; i < n->nmods; i++) {
        const prg__unet_mod *m = &n->mods[i];
        int hw = m->h * m->w, co = m->cout, ci = m->cin;
        t_sz[0] = m->type == PRG__UM_RES ? (size_t)co * hw : m->type == PRG__UM_ATTN ? (size_t)3 * ci * hw : 0;
        t_sz[1] = m->type == PRG__UM_RES ? (size_t)2 * co : m->type == PRG__UM_ATTN ? (size_t)ci * hw : 0;
        t_sz[2] = m->type == PRG__UM_ATTN ? (size_t)n->cfg.num_heads * hw * hw : 0;
        for (k = 0; k < 3; k++)
            if (t_sz[k] > tmax[k]) tmax[k] = t_sz[k];
        for (skip = 0, j = i + 1; j < n->nmods && !m->out_rc; j++)
            skip |= n->mods[j].type == PRG__UM_CAT && n->mods[j].in2 == m->out;
        if (!m->out_rc) n->lmods[i].out = SIZE_MAX; /* a ping-pong place, chosen below */
        if (skip) {
            int ho = m->type == PRG__UM_CONV ? m->h / m->stride : m->h;
            n->lmods[i].out = off;
            off += ((size_t)co * ho * ho + 15) & ~(size_t)15;
            for (j = i + 1; j < n->nmods; j++)
                if (n->mods[j].type == PRG__UM_CAT && n->mods[j].in2 == m->out) n->lmods[j].in2 = n->lmods[i].out;
        }
    }
    pp[0] = off;
    pp[1] = pp[0] + ((n->maxel + 15) & ~(size_t)15);
    off = pp[1] + ((n->maxel + 15) & ~(size_t)15);
    for (k = 0; k < 3; k++) {
        size_t tk = off;
        off += (tmax[k] + 15) & ~(size_t)15;
        for (i = 0; i < n->nmods; i++)
            if (n->mods[i].type == PRG__UM_RES || n->mods[i].type == PRG__UM_ATTN) n->lmods[i].t[k] = tk;
    }
    for (i = 0; i < n->nmods; i++) n->lmods[i].st[0] = n->lmods[i].st[1] = SIZE_MAX;
    for (i = 0; i < n->nmods; i++) {
        prg__unet_mod *l = &n->lmods[i];
        if (i > 0 && !l->in_rc) l->in = n->lmods[i - 1].out; /* the previous module's output */
        if (l->out == SIZE_MAX) l->out = l->in == pp[0] && !l->in_rc ? pp[1] : pp[0];
    }
    if (off >= n->act_floats) { /* not smaller: the full layout */
        memcpy(n->lmods, n->mods, (size_t)n->nmods * sizeof *n->lmods);
        off = n->act_floats;
    }
    n->lean_floats = off;
    return PRG_OK;
}

size_t prg_unet_config_num_params(const prg_unet_config *cfg) {
    prg_unet n;
    size_t count;
    if (prg_unet_config_check(cfg) != PRG_OK) return 0;
    memset(&n, 0, sizeof n);
    n.cfg = *cfg;
    if (prg__unet_plan(&n) != PRG_OK) return 0;
    count = n.nparams;
    prg__unet_plan_free(&n);
    return count;
}

static int prg__unet_fmt_list(char *p, size_t room, const char *key, const int *v, int n) {
    int i, len = snprintf(p, room, " %s=", key), k;
    for (i = 0; i < n && len >= 0 && (size_t)len < room; i++) {
        k = snprintf(p + len, room - (size_t)len, i ? ",%d" : "%d", v[i]);
        len = k < 0 ? -1 : len + k;
    }
    if (n == 0 && len >= 0 && (size_t)len < room) {
        k = snprintf(p + len, room - (size_t)len, "none");
        len = k < 0 ? -1 : len + k;
    }
    return len;
}

prg_result prg_unet_config_format(const prg_unet_config *c, char *buf, size_t size) {
    int len, k;
    prg_result r;
    if (!c || !buf) return prg__fail(PRG_ERR_ARG, "prg_unet_config_format: NULL argument");
    if ((r = prg_unet_config_check(c)) != PRG_OK) return r;
    len = snprintf(buf, size, "in_channels=%d out_channels=%d model_channels=%d num_res_blocks=%d", c->in_channels,
                   c->out_channels, c->model_channels, c->num_res_blocks);
    if (len >= 0 && (size_t)len < size) {
        k = prg__unet_fmt_list(buf + len, size - (size_t)len, "channel_mult", c->channel_mult, c->num_levels);
        len = k < 0 ? -1 : len + k;
    }
    if (len >= 0 && (size_t)len < size) {
        k = prg__unet_fmt_list(buf + len, size - (size_t)len, "attention_ds", c->attention_ds, c->num_attention);
        len = k < 0 ? -1 : len + k;
    }
    if (len >= 0 && (size_t)len < size) {
        k = snprintf(buf + len, size - (size_t)len, " num_heads=%d image_size=%d groups=%d", c->num_heads,
                     c->image_size, c->groups);
        len = k < 0 ? -1 : len + k;
    }
    if (len < 0 || (size_t)len >= size)
        return prg__fail(PRG_ERR_ARG, "prg_unet_config_format: buffer of %zu bytes is too small (use 256)", size);
    return PRG_OK;
}

/* Reads a decimal int in [0, 1e6] at *s; advances *s. */
static int prg__unet_read_int(const char **s, int *out) {
    long v = 0;
    int digits = 0;
    while (**s >= '0' && **s <= '9' && digits < 8) {
        v = v * 10 + (**s - '0');
        (*s)++;
        digits++;
    }
    *out = (int)v;
    return digits > 0 && digits < 8;
}

prg_result prg_unet_config_parse(prg_unet_config *cfg, const char *text) {
    static const char *keys[9] = {"in_channels",  "out_channels", "model_channels",
                                  "num_res_blocks", "channel_mult", "attention_ds",
                                  "num_heads",    "image_size",   "groups"};
    prg_unet_config c;
    const char *s = text;
    int seen[9] = {0}, i;
    if (!cfg || !text) return prg__fail(PRG_ERR_ARG, "prg_unet_config_parse: NULL argument");
    memset(&c, 0, sizeof c);
    for (;;) {
        size_t klen;
        int k = -1, *one = NULL;
        while (*s == ' ') s++;
        if (!*s) break;
        for (i = 0; i < 9; i++) {
            klen = strlen(keys[i]);
            if (strncmp(s, keys[i], klen) == 0 && s[klen] == '=') {
                k = i;
                s += klen + 1;
                break;
            }
        }
        if (k < 0 || seen[k]++)
            return prg__fail(PRG_ERR_FORMAT, "U-Net config text: %s key at \"%.24s\"",
                             k < 0 ? "unknown" : "repeated", k < 0 ? s : keys[k]);
        switch (k) {
        case 0: one = &c.in_channels; break;
        case 1: one = &c.out_channels; break;
        case 2: one = &c.model_channels; break;
        case 3: one = &c.num_res_blocks; break;
        case 6: one = &c.num_heads; break;
        case 7: one = &c.image_size; break;
        case 8: one = &c.groups; break;
        default: break;
        }
        if (one) {
            if (!prg__unet_read_int(&s, one))
                return prg__fail(PRG_ERR_FORMAT, "U-Net config text: %s needs a number", keys[k]);
        } else {
            int *list = k == 4 ? c.channel_mult : c.attention_ds;
            int *count = k == 4 ? &c.num_levels : &c.num_attention;
            if (k == 5 && strncmp(s, "none", 4) == 0) {
                s += 4;
            } else {
                for (;;) {
                    if (*count == PRG_UNET_MAX_LEVELS || !prg__unet_read_int(&s, &list[*count]))
                        return prg__fail(PRG_ERR_FORMAT,
                                         "U-Net config text: %s needs 1..%d numbers separated by commas", keys[k],
                                         PRG_UNET_MAX_LEVELS);
                    (*count)++;
                    if (*s != ',') break;
                    s++;
                }
            }
        }
        if (*s != ' ' && *s != '\0')
            return prg__fail(PRG_ERR_FORMAT, "U-Net config text: unexpected \"%.16s\" after %s", s, keys[k]);
    }
    for (i = 0; i < 9; i++)
        if (!seen[i]) return prg__fail(PRG_ERR_FORMAT, "U-Net config text: %s is missing", keys[i]);
    if (prg_unet_config_check(&c) != PRG_OK) return PRG_ERR_CONFIG;
    *cfg = c;
    return PRG_OK;
}

/* --- object ---------------------------------------------------------------- */

/* the plan of the convolution whose weight is tensor j of module m */
#define PRG__UC(j) (&n->plans[m->par + (j)])
/* Plans every convolution of the net for batch (with the CPU table in use);
   what the plans keep stays theirs (a kept weight knows its own layout). */
static void prg__unet_plan_convs(prg_unet *n, int batch) {
    int i;
    for (i = 0; i < n->nmods; i++) {
        const prg__unet_mod *m = &n->mods[i];
        int h = m->h, w = m->w, hw = m->h * m->w, ci = m->cin, co = m->cout;
        switch (m->type) {
        case PRG__UM_CONV:
            prg__conv_plan_set(PRG__UC(0), batch, ci, h, w, co, m->k, m->stride, m->pad);
            break;
        case PRG__UM_RES:
            prg__conv_plan_set(PRG__UC(2), batch, ci, h, w, co, 3, 1, 1);
            prg__conv_plan_set(PRG__UC(8), batch, co, h, w, co, 3, 1, 1);
            if (m->has_skip) prg__conv_plan_set(PRG__UC(10), batch, ci, h, w, co, 1, 1, 0);
            break;
        case PRG__UM_ATTN: /* qkv and the projection: 1x1 over [C][HW] */
            prg__conv_plan_set(PRG__UC(2), batch, ci, hw, 1, 3 * ci, 1, 1, 0);
            prg__conv_plan_set(PRG__UC(4), batch, ci, hw, 1, ci, 1, 1, 0);
            break;
        default: break;
        }
    }
    n->plan_batch = batch;
    n->plan_cpu = prg__cpu_get();
}

/* The net with its plans and blocks, the parameters not yet written: a
   load fills every one of them from the file (prg__ckpt_read reads every
   tensor), so it skips prg__unet_init's draws. */
static prg_result prg__unet_new(prg_unet **out, const prg_unet_config *cfg) {
    prg_unet *n;
    prg_result r;
    int i;
    if (!out || !cfg) return prg__fail(PRG_ERR_ARG, "prg_unet_create: NULL argument");
    *out = NULL;
    if ((r = prg_unet_config_check(cfg)) != PRG_OK) return r;
    n = (prg_unet *)prg_alloc(sizeof *n);
    if (!n) return prg__fail(PRG_ERR_NOMEM, "prg_unet_create: out of memory");
    memset(n, 0, sizeof *n);
    n->cfg = *cfg;
    if ((r = prg__unet_plan(n)) != PRG_OK || (r = prg__unet_plan_lean(n)) != PRG_OK) {
        prg__unet_plan_free(n);
        prg_free(n);
        return r;
    }
    prg__gemm_users_add(1); /* prg_unet_free takes it back, also below */
    n->params = (float *)prg_alloc(n->nparams * sizeof(float));
    n->grads = (float *)prg__alloc_zero(n->nparams * sizeof(float)); /* resident once a backward writes it */
    n->plans = (prg__conv_plan *)prg_alloc((size_t)n->ntens * sizeof(prg__conv_plan));
    if (n->plans) {
        memset(n->plans, 0, (size_t)n->ntens * sizeof(prg__conv_plan));
        for (i = 0; i < n->ntens; i++) n->plans[i].keep[0].left = n->plans[i].keep[1].left = &n->keep_left;
        n->keep_left = (size_t)PRG_WINO_KEEP_MB * (1024 * 1024 / sizeof(float));
        prg__unet_plan_convs(n, 1);
    }
    if (!n->params || !n->grads || !n->plans) {
        size_t np = n->nparams;
        prg_unet_free(n);
        return prg__fail(PRG_ERR_NOMEM, "prg_unet_create: cannot allocate 2 x %zu parameters (%.1f MB)", np,
                         2.0 * (double)np * 4 / 1e6);
    }
    *out = n;
    return PRG_OK;
}

/* The initialisation of a fresh net, PyTorch's defaults for its modules. */
static void prg__unet_init(prg_unet *n, uint64_t seed) {
    int i;
    for (i = 0; i < n->ntens; i++) {
        const prg__unet_tensor *t = &n->tens[i];
        float *p = n->params + t->offset;
        size_t j;
        if (t->init == PRG__UT_UNIFORM) {
            /* kaiming_uniform(a = sqrt 5) and the bias rule both give U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
            prg_rng rng;
            float bound = (float)(1.0 / sqrt((double)t->fan_in));
            prg_rng_seed(&rng, seed, (uint64_t)i + 1);
            for (j = 0; j < t->count; j++) p[j] = (2.0f * prg_rng_uniform(&rng) - 1.0f) * bound;
        } else {
            float v = t->init == PRG__UT_ONES ? 1.0f : 0.0f;
            for (j = 0; j < t->count; j++) p[j] = v;
        }
    }
}

prg_result prg_unet_create(prg_unet **out, const prg_unet_config *cfg, uint64_t seed) {
    prg_result r = prg__unet_new(out, cfg);
    if (r == PRG_OK) prg__unet_init(*out, seed);
    return r;
}

void prg_unet_free(prg_unet *n) {
    int i;
    if (!n) return;
    for (i = 0; n->plans && i < n->ntens; i++) prg__conv_plan_free(&n->plans[i]);
    prg_free(n->plans);
    prg__unet_plan_free(n);
    prg_free(n->lmods);
    prg_free(n->params);
    prg_free(n->grads);
    prg_free(n->act_own);
    prg_free(n->scr);
    prg_free(n->ws);
    prg_free(n);
    prg__gemm_users_add(-1);
}

const prg_unet_config *prg_unet_config_get(const prg_unet *n) { return &n->cfg; }
size_t prg_unet_num_params(const prg_unet *n) { return n->nparams; }
float *prg_unet_params(prg_unet *n) { return n->params; }
float *prg_unet_grads(prg_unet *n) { return n->grads; }
void prg_unet_zero_grad(prg_unet *n) { memset(n->grads, 0, n->nparams * sizeof(float)); }
void prg_unet_set_grad_hook(prg_unet *n, prg_grad_ready_fn fn, void *ctx) {
    n->grad_hook = fn;
    n->grad_hook_ctx = ctx;
}
int prg_unet_num_tensors(const prg_unet *n) { return n->ntens; }

prg_result prg_unet_tensor_info(const prg_unet *n, int i, const char **name, int *ndim, int64_t shape[4],
                                size_t *offset) {
    const prg__unet_tensor *t;
    int d;
    if (!n || i < 0 || i >= n->ntens)
        return prg__fail(PRG_ERR_ARG, "prg_unet_tensor_info: index %d out of range 0..%d", i,
                         n ? n->ntens - 1 : -1);
    t = &n->tens[i];
    if (name) *name = t->name;
    if (ndim) *ndim = t->ndim;
    if (shape)
        for (d = 0; d < 4; d++) shape[d] = d < t->ndim ? t->shape[d] : 1;
    if (offset) *offset = t->offset;
    return PRG_OK;
}

int prg_unet_find_tensor(const prg_unet *n, const char *name) {
    int i;
    for (i = 0; n && name && i < n->ntens; i++)
        if (strcmp(n->tens[i].name, name) == 0) return i;
    return -1;
}

size_t prg_unet_activation_bytes(const prg_unet *n) {
    return (n->act_cap + n->scr_cap + n->ws_floats) * sizeof(float);
}

static size_t prg__unet_max(size_t a, size_t b) { return a > b ? a : b; }

/* Layer workspace for a batch: the largest any conv or attention asks for. */
static size_t prg__unet_ws_floats(const prg_unet *n, int b) {
    size_t need = 0;
    int i;
    for (i = 0; i < n->nmods; i++) {
        const prg__unet_mod *m = &n->mods[i];
        int hw = m->h * m->w, c = m->cin, co = m->cout;
        if (m->type == PRG__UM_CONV)
            need = prg__unet_max(need, prg_conv2d_workspace(b, c, m->h, m->w, co, m->k, m->stride, m->pad));
        if (m->type == PRG__UM_RES) {
            need = prg__unet_max(need, prg_conv2d_workspace(b, c, m->h, m->w, co, 3, 1, 1));
            need = prg__unet_max(need, prg_conv2d_workspace(b, co, m->h, m->w, co, 3, 1, 1));
            if (m->has_skip) need = prg__unet_max(need, prg_conv2d_workspace(b, c, m->h, m->w, co, 1, 1, 0));
        }
        if (m->type == PRG__UM_ATTN) {
            need = prg__unet_max(need, prg_conv2d_workspace(b, c, hw, 1, 3 * c, 1, 1, 0));
            need = prg__unet_max(need, prg_conv2d_workspace(b, c, hw, 1, c, 1, 1, 0));
            need = prg__unet_max(need, prg_attention_workspace(b, c, hw, n->cfg.num_heads));
        }
    }
    return need;
}

/* Grows the activation, scratch and workspace blocks to hold `batch`, for a
   forward that keeps what backward needs or (lean) for a lean forward. */
static prg_result prg__unet_reserve_mode(prg_unet *n, int batch, int lean) {
    size_t ws, a = lean ? n->lean_floats : n->act_floats, s = lean ? n->lean_scr_floats : n->scr_floats;
    if (batch <= (lean ? n->lean_batch : n->cap_batch)) return PRG_OK;
    if (a > SIZE_MAX / sizeof(float) / (size_t)batch || s > SIZE_MAX / sizeof(float) / (size_t)batch)
        return prg__fail(PRG_ERR_NOMEM, "prg_unet_forward: batch %d is too large for this U-Net", batch);
    ws = prg__unet_ws_floats(n, batch);
    prg_free(n->act_own);
    prg_free(n->scr);
    prg_free(n->ws);
    n->act = n->act_own = (float *)prg_alloc(a * (size_t)batch * sizeof(float));
    n->scr = (float *)prg_alloc(s * (size_t)batch * sizeof(float));
    n->ws = (float *)prg_alloc((ws ? ws : 1) * sizeof(float));
    n->fwd_batch = 0;
    if (!n->act || !n->scr || !n->ws) {
        double mb = ((double)(a + s) * batch + (double)ws) * 4 / 1e6;
        prg_free(n->act_own);
        prg_free(n->scr);
        prg_free(n->ws);
        n->act = n->act_own = n->scr = n->ws = NULL;
        n->cap_batch = n->lean_batch = 0;
        n->act_cap = n->scr_cap = n->ws_floats = 0;
        return prg__fail(PRG_ERR_NOMEM,
                         "prg_unet_forward: cannot allocate %.1f MB of activations for batch %d; use a "
                         "smaller batch", mb, batch);
    }
    n->act_cap = a * (size_t)batch;
    n->scr_cap = s * (size_t)batch;
    /* the lean layout fits in the full one (prg__unet_plan_lean) */
    n->cap_batch = lean ? 0 : batch;
    n->lean_batch = batch;
    n->ws_floats = ws;
    return PRG_OK;
}

static prg_result prg__unet_reserve(prg_unet *n, int batch) { return prg__unet_reserve_mode(n, batch, 0); }

/* Floats of one activation set for a batch: what forward writes into act
   and backward reads from it (the scratch and workspace blocks are shared). */
static size_t prg__unet_act_set_floats(const prg_unet *n, int batch) { return n->act_floats * (size_t)batch; }

/* Switches the activation set without copying: set (prg__unet_act_set_floats
   for the batch, owned by the caller; NULL = the net's own) becomes the one
   forward writes and backward reads.  held: the batch of the forward the
   caller knows set holds, so a backward may follow; 0 = none.  The caller
   has reserved the batch (prg__unet_reserve) and switches back to NULL
   before the net is used by anyone else. */
static void prg__unet_use_act(prg_unet *n, float *set, int held) {
    n->act = set ? set : n->act_own;
    n->fwd_batch = held;
}

typedef struct prg__unet_add_ctx { float *y; const float *x; size_t n; } prg__unet_add_ctx;

static void prg__unet_add_task(void *ctx, int ith, int nth) {
    prg__unet_add_ctx *a = (prg__unet_add_ctx *)ctx;
    size_t lo, hi, i;
    prg_split_range(a->n, 64, ith, nth, &lo, &hi);
    for (i = lo; i < hi; i++) a->y[i] += a->x[i];
}

/* y += x */
static void prg__unet_add(float *y, const float *x, size_t count) {
    prg__unet_add_ctx a;
    a.y = y;
    a.x = x;
    a.n = count;
    if (count < 4096)
        prg__unet_add_task(&a, 0, 1);
    else
        prg_parallel(prg__unet_add_task, &a);
}

/* --- forward ---------------------------------------------------------------- */

/* The two halves of a ResBlock around its convs, as forward runs them and
   backward recomputes them (same kernels, same bits):
   in:  gn = GN_in(x), act = SiLU(gn);
   out: gn = GN_out(h1), sso = gn (1 + scale) + shift, act = SiLU(sso);
   gn and sso may be NULL (the forward reads only act).
   gm, gr: the GroupNorm's [B][G] statistics, taken (given = 0) or read (given = 1). */
static void prg__unet_res_in(const prg_unet *n, const prg__unet_mod *m, int B, const float *x, float *gn,
                             float *act, float *gm, float *gr, int given) {
    const float *P = n->params;
    prg__groupnorm_act_forward(gn, NULL, act, gm, gr, given, x, P + n->tens[m->par + PRG__RES_NORM1_W].offset,
                               P + n->tens[m->par + PRG__RES_NORM1_B].offset, NULL, B, m->cin, m->h * m->w,
                               n->cfg.groups, PRG__UNET_EPS);
}

static void prg__unet_res_out(const prg_unet *n, const prg__unet_mod *m, int B, const float *h1, const float *ss,
                              float *gn, float *sso, float *act, float *gm, float *gr, int given) {
    const float *P = n->params;
    prg__groupnorm_act_forward(gn, sso, act, gm, gr, given, h1, P + n->tens[m->par + PRG__RES_NORM2_W].offset,
                               P + n->tens[m->par + PRG__RES_NORM2_B].offset, ss, B, m->cout, m->h * m->w, n->cfg.groups,
                               PRG__UNET_EPS);
}

/* Where module m keeps the statistics of its GroupNorm k (m->st[k]): the
   mean's [B][G] into *mean, the rstd's into *rstd; the scratch gm, gr when
   the layout keeps none (the lean forward's). */
static void prg__unet_stats(const prg_unet *n, const prg__unet_mod *m, int k, int B, float *gm, float *gr,
                            float **mean, float **rstd) {
    if (m->st[k] == SIZE_MAX) {
        *mean = gm;
        *rstd = gr;
    } else {
        *mean = n->act + m->st[k] * (size_t)B;
        *rstd = *mean + (size_t)B * n->cfg.groups;
    }
}

/* Between begin and end the caller vouches that the weights do not change
   (the U-Net evaluations of one encode, sampling or fine-tuning call): the
   convolutions keep their transformed weights from one evaluation to the
   next.  Begin forgets what was kept before. */
static void prg__unet_keep_begin(prg_unet *n) {
    int i;
    if (n->keeping++ == 0)
        for (i = 0; i < n->ntens; i++) n->plans[i].keep[0].valid = n->plans[i].keep[1].valid = 0;
}

static void prg__unet_keep_end(prg_unet *n) { n->keeping--; }

#define PRG__UA(off) (A + (size_t)(off) * B)
#define PRG__UP(j) (P + n->tens[m->par + (j)].offset)
/* Runs one module forward on the kept activations (scratch r[], gm, gr). */
static void prg__unet_mod_forward(prg_unet *n, const prg__unet_mod *m, int B) {
    const prg_unet_config *c = &n->cfg;
    int h = m->h, w = m->w, hw = m->h * m->w, ci = m->cin, co = m->cout, ed = 4 * c->model_channels;
    int G = c->groups, i;
    const float *P = n->params, *in;
    float *A = n->act, *S = n->scr, *ws = n->ws, *rc = S + n->rc_off * B, *r[3], *out;
    float *gm = S + n->gm_off * B, *gr = S + n->gr_off * B, *sm, *sr;
    for (i = 0; i < 3; i++) r[i] = S + n->r_off[i] * B;
    in = m->in_rc ? rc : PRG__UA(m->in);
    out = m->out_rc ? rc : PRG__UA(m->out);
    switch (m->type) {
    case PRG__UM_CONV:
        prg__conv_plan_forward(PRG__UC(0), n->keeping, out, in, PRG__UP(0), PRG__UP(1), ws);
        break;
    case PRG__UM_RES:
        prg__unet_stats(n, m, 0, B, gm, gr, &sm, &sr);
        prg__unet_res_in(n, m, B, in, NULL, r[1], sm, sr, 0); /* only SiLU's output is read here */
        prg__conv_plan_forward(PRG__UC(2), n->keeping, PRG__UA(m->t[0]), r[1], PRG__UP(PRG__RES_CONV1_W), PRG__UP(PRG__RES_CONV1_B), ws);
        prg_linear_forward(PRG__UA(m->t[1]), PRG__UA(n->semb_off), PRG__UP(PRG__RES_EMB_W), PRG__UP(PRG__RES_EMB_B), B, ed, 2 * co);
        prg__unet_stats(n, m, 1, B, gm, gr, &sm, &sr);
        prg__unet_res_out(n, m, B, PRG__UA(m->t[0]), PRG__UA(m->t[1]), NULL, NULL, r[2], sm, sr, 0);
        prg__conv_plan_forward(PRG__UC(8), n->keeping, out, r[2], PRG__UP(PRG__RES_CONV2_W), PRG__UP(PRG__RES_CONV2_B), ws);
        if (m->has_skip) {
            prg__conv_plan_forward(PRG__UC(10), 0, r[0], in, PRG__UP(PRG__RES_SKIP_W), PRG__UP(PRG__RES_SKIP_B), ws);
            prg__unet_add(out, r[0], (size_t)B * co * hw);
        } else {
            prg__unet_add(out, in, (size_t)B * co * hw);
        }
        break;
    case PRG__UM_ATTN:
        prg__unet_stats(n, m, 0, B, gm, gr, &sm, &sr);
        prg_groupnorm_forward(r[0], sm, sr, in, PRG__UP(PRG__ATTN_NORM_W), PRG__UP(PRG__ATTN_NORM_B), B, ci, hw, G, PRG__UNET_EPS);
        prg__conv_plan_forward(PRG__UC(2), 0, PRG__UA(m->t[0]), r[0], PRG__UP(PRG__ATTN_QKV_W), PRG__UP(PRG__ATTN_QKV_B), ws);
        prg_attention_forward(PRG__UA(m->t[1]), PRG__UA(m->t[2]), PRG__UA(m->t[0]), B, ci, hw,
                              c->num_heads, ws);
        prg__conv_plan_forward(PRG__UC(4), 0, out, PRG__UA(m->t[1]), PRG__UP(PRG__ATTN_PROJ_W), PRG__UP(PRG__ATTN_PROJ_B), ws);
        prg__unet_add(out, in, (size_t)B * ci * hw);
        break;
    case PRG__UM_UP:
        prg_upsample2x_forward(out, in, B * ci, h, w);
        break;
    case PRG__UM_CAT:
        prg_concat_forward(out, in, PRG__UA(m->in2), B, ci, m->cin2, hw);
        break;
    case PRG__UM_NORMACT:
        prg__unet_stats(n, m, 0, B, gm, gr, &sm, &sr);
        prg__groupnorm_act_forward(NULL, NULL, out, sm, sr, 0, in, PRG__UP(0), PRG__UP(1), NULL, B, ci, hw, G,
                                   PRG__UNET_EPS);
        break;
    }
}

static prg_result prg__unet_forward(prg_unet *n, int batch, const float *x, const float *t, float *v, int lean) {
    const prg_unet_config *c;
    const prg__unet_mod *mods;
    int B = batch, i, mc, ed;
    float *P, *A;
    prg_result res;
    if (!n || !x || !t || !v) return prg__fail(PRG_ERR_ARG, "prg_unet_forward: NULL argument");
    if (batch < 1) return prg__fail(PRG_ERR_ARG, "prg_unet_forward: batch=%d must be >= 1", batch);
    if ((res = lean ? prg__unet_reserve_mode(n, batch, 1) : prg__unet_reserve(n, batch)) != PRG_OK) return res;
    mods = lean ? n->lmods : n->mods;
    if (n->plan_batch != B || n->plan_cpu != prg__cpu_get()) prg__unet_plan_convs(n, B);
    c = &n->cfg;
    mc = c->model_channels;
    ed = 4 * mc;
    P = n->params;
    A = n->act;
    memcpy(PRG__UA(n->x_off), x, (size_t)B * c->in_channels * c->image_size * c->image_size * sizeof(float));
    prg_timestep_embedding(PRG__UA(n->temb_off), t, B, mc, PRG__UNET_MAX_PERIOD);
    prg_linear_forward(PRG__UA(n->e1_off), PRG__UA(n->temb_off), P + n->tens[0].offset, P + n->tens[1].offset,
                       B, mc, ed);
    prg_silu_forward(PRG__UA(n->e1s_off), PRG__UA(n->e1_off), (size_t)B * ed);
    prg_linear_forward(PRG__UA(n->emb_off), PRG__UA(n->e1s_off), P + n->tens[2].offset, P + n->tens[3].offset,
                       B, ed, ed);
    prg_silu_forward(PRG__UA(n->semb_off), PRG__UA(n->emb_off), (size_t)B * ed);
    for (i = 0; i < n->nmods; i++) prg__unet_mod_forward(n, &mods[i], B);
    memcpy(v, PRG__UA(mods[n->nmods - 1].out),
           (size_t)B * c->out_channels * c->image_size * c->image_size * sizeof(float));
    n->fwd_batch = lean ? 0 : B;
    n->fwd_serial++;
    return PRG_OK;
}

prg_result prg_unet_forward(prg_unet *n, int batch, const float *x, const float *t, float *v) {
    return prg__unet_forward(n, batch, x, t, v, 0);
}

prg_result prg_unet_forward_lean(prg_unet *n, int batch, const float *x, const float *t, float *v) {
    return prg__unet_forward(n, batch, x, t, v, 1);
}

/* --- backward --------------------------------------------------------------- */

prg_result prg_unet_backward(prg_unet *n, const float *dv, float *dx) {
    const prg_unet_config *c;
    int B, i, j, mc, ed, G;
    float *P, *D, *A, *S, *ws, *t1, *t2, *dss, *dsemb, *de1, *de2, *r[3], *gm, *gr, *rc, *sm, *sr;
    float *gb[4 + PRG_UNET_MAX_LEVELS * 65];
    if (!n || !dv) return prg__fail(PRG_ERR_ARG, "prg_unet_backward: NULL argument");
    if (n->fwd_batch < 1)
        return prg__fail(PRG_ERR_STATE, "prg_unet_backward: call prg_unet_forward first (on this net; "
                         "prg_unet_forward_lean keeps nothing for a backward)");
    c = &n->cfg;
    B = n->fwd_batch;
    mc = c->model_channels;
    ed = 4 * mc;
    G = c->groups;
    P = n->params;
    D = n->grads;
    A = n->act;
    S = n->scr;
    ws = n->ws;
    t1 = S + n->t1_off * B;
    t2 = S + n->t2_off * B;
    dss = S + n->dss_off * B;
    dsemb = S + n->dsemb_off * B;
    de1 = S + n->de1_off * B;
    de2 = S + n->de2_off * B;
    for (j = 0; j < 3; j++) r[j] = S + n->r_off[j] * B;
    gm = S + n->gm_off * B;
    gr = S + n->gr_off * B;
    rc = S + n->rc_off * B;
    PRG_ASSERT(n->ngbuf <= (int)(sizeof gb / sizeof gb[0]));
    for (j = 0; j < n->ngbuf; j++) gb[j] = S + n->gbuf_off[j] * B;
    for (j = 2; j < n->ngbuf; j++) memset(gb[j], 0, n->gbuf_len[j] * B * sizeof(float));
    memset(dsemb, 0, (size_t)B * ed * sizeof(float));
#define PRG__UG(id) ((id) == PRG__UNET_G_DX ? dx : (id) == PRG__UNET_G_DV ? (float *)dv : gb[id])
#define PRG__UD(j) (D + n->tens[m->par + (j)].offset)
#define PRG__UZ(p, count) memset((p), 0, (size_t)(count) * B * sizeof(float))
    for (i = n->nmods - 1; i >= 0; i--) {
        const prg__unet_mod *m = &n->mods[i];
        int h = m->h, w = m->w, hw = m->h * m->w, ci = m->cin, co = m->cout;
        const float *in = m->in_rc ? rc : PRG__UA(m->in), *dout = PRG__UG(m->gout);
        float *din = PRG__UG(m->gin);
        /* a ping-pong buffer has one producer: its first write sets it (or it is
           cleared first); skip buffers accumulate; dx is set only now (the
           first conv is the last module), so it may alias dv */
        int fresh = m->gin == 0 || m->gin == 1 || (m->gin == PRG__UNET_G_DX && dx);
        if (m->in_rc) prg__unet_mod_forward(n, m - 1, B); /* the CAT or UP output, into rc */
        if (fresh && m->type != PRG__UM_CONV && m->type != PRG__UM_RES && m->type != PRG__UM_ATTN &&
            m->type != PRG__UM_NORMACT)
            PRG__UZ(din, ci * hw);
        switch (m->type) {
        case PRG__UM_CONV:
            prg__conv_plan_backward(PRG__UC(0), n->keeping, din, PRG__UD(0), PRG__UD(1), dout, in, PRG__UP(0), ws,
                                    fresh);
            break;
        case PRG__UM_RES:
            if (m->has_skip)
                prg__conv_plan_backward(PRG__UC(10), 0, din, PRG__UD(PRG__RES_SKIP_W), PRG__UD(PRG__RES_SKIP_B), dout, in, PRG__UP(PRG__RES_SKIP_W), ws, fresh);
            else if (fresh)
                memcpy(din, dout, (size_t)B * co * hw * sizeof(float));
            else
                prg__unet_add(din, dout, (size_t)B * co * hw);
            prg__unet_stats(n, m, 1, B, gm, gr, &sm, &sr);
            prg__unet_res_out(n, m, B, PRG__UA(m->t[0]), PRG__UA(m->t[1]), r[0], r[1], r[2], sm, sr, sm != gm);
            prg__conv_plan_backward(PRG__UC(8), n->keeping, t1, PRG__UD(PRG__RES_CONV2_W), PRG__UD(PRG__RES_CONV2_B), dout, r[2], PRG__UP(PRG__RES_CONV2_W), ws, 1);
            PRG__UZ(dss, 2 * co);
            prg__silu_scale_shift_backward_x(t1, dss, t2, t1, r[1], r[0], PRG__UA(m->t[1]), B, co, hw);
            prg_linear_backward(dsemb, PRG__UD(PRG__RES_EMB_W), PRG__UD(PRG__RES_EMB_B), dss, PRG__UA(n->semb_off), PRG__UP(PRG__RES_EMB_W), B, ed,
                                2 * co);
            prg__groupnorm_backward_x(t2, PRG__UD(PRG__RES_NORM2_W), PRG__UD(PRG__RES_NORM2_B), t1, PRG__UA(m->t[0]), sm, sr, PRG__UP(PRG__RES_NORM2_W), B, co,
                                      hw, G, 1, NULL, NULL, NULL);
            prg__unet_stats(n, m, 0, B, gm, gr, &sm, &sr);
            prg__unet_res_in(n, m, B, in, r[0], r[1], sm, sr, sm != gm);
            prg__conv_plan_backward(PRG__UC(2), n->keeping, t1, PRG__UD(PRG__RES_CONV1_W), PRG__UD(PRG__RES_CONV1_B), t2, r[1], PRG__UP(PRG__RES_CONV1_W), ws, 1);
            prg__groupnorm_backward_x(din, PRG__UD(PRG__RES_NORM1_W), PRG__UD(PRG__RES_NORM1_B), NULL, in, sm, sr, PRG__UP(PRG__RES_NORM1_W), B, ci,
                                      hw, G, 0, t2, t1, r[0]);
            break;
        case PRG__UM_ATTN:
            if (fresh)
                memcpy(din, dout, (size_t)B * ci * hw * sizeof(float));
            else
                prg__unet_add(din, dout, (size_t)B * ci * hw);
            prg__conv_plan_backward(PRG__UC(4), 0, t1, PRG__UD(PRG__ATTN_PROJ_W), PRG__UD(PRG__ATTN_PROJ_B), dout, PRG__UA(m->t[1]), PRG__UP(PRG__ATTN_PROJ_W), ws, 1);
            PRG__UZ(t2, 3 * ci * hw);
            prg_attention_backward(t2, t1, PRG__UA(m->t[0]), PRG__UA(m->t[2]), B, ci, hw, c->num_heads, ws);
            prg__unet_stats(n, m, 0, B, gm, gr, &sm, &sr);
            prg__groupnorm_act_forward(r[0], NULL, NULL, sm, sr, sm != gm, in, PRG__UP(PRG__ATTN_NORM_W), PRG__UP(PRG__ATTN_NORM_B), NULL, B, ci,
                                       hw, G, PRG__UNET_EPS);
            prg__conv_plan_backward(PRG__UC(2), 0, t1, PRG__UD(PRG__ATTN_QKV_W), PRG__UD(PRG__ATTN_QKV_B), t2, r[0], PRG__UP(PRG__ATTN_QKV_W), ws, 1);
            prg_groupnorm_backward(din, PRG__UD(PRG__ATTN_NORM_W), PRG__UD(PRG__ATTN_NORM_B), t1, in, sm, sr, PRG__UP(PRG__ATTN_NORM_W), B, ci, hw, G);
            break;
        case PRG__UM_UP:
            prg_upsample2x_backward(din, dout, B * ci, h, w);
            break;
        case PRG__UM_CAT:
            prg_concat_backward(din, PRG__UG(m->gin2), dout, B, ci, m->cin2, hw);
            break;
        case PRG__UM_NORMACT:
            prg__unet_stats(n, m, 0, B, gm, gr, &sm, &sr);
            prg__groupnorm_act_forward(r[0], NULL, NULL, sm, sr, sm != gm, in, PRG__UP(0), PRG__UP(1), NULL, B, ci, hw, G,
                                       PRG__UNET_EPS);
            prg__groupnorm_backward_x(din, PRG__UD(0), PRG__UD(1), NULL, in, sm, sr, PRG__UP(0), B, ci, hw, G, fresh, t1,
                                      dout, r[0]);
            break;
        }
        if (n->grad_hook && m->type != PRG__UM_UP && m->type != PRG__UM_CAT)
            n->grad_hook(n->grad_hook_ctx, 0, n->tens[m->par].offset);
    }
    /* time embedding: emb -> SiLU feeds every ResBlock */
    prg__silu_backward_x(de1, dsemb, PRG__UA(n->emb_off), (size_t)B * ed, 1);
    PRG__UZ(de2, ed);
    prg_linear_backward(de2, D + n->tens[2].offset, D + n->tens[3].offset, de1, PRG__UA(n->e1s_off),
                        P + n->tens[2].offset, B, ed, ed);
    prg__silu_backward_x(de1, de2, PRG__UA(n->e1_off), (size_t)B * ed, 1);
    prg_linear_backward(NULL, D + n->tens[0].offset, D + n->tens[1].offset, de1, PRG__UA(n->temb_off),
                        P + n->tens[0].offset, B, mc, ed);
    if (n->grad_hook) n->grad_hook(n->grad_hook_ctx, 0, 0);
#undef PRG__UA
#undef PRG__UP
#undef PRG__UK
#undef PRG__UG
#undef PRG__UD
#undef PRG__UZ
    return PRG_OK;
}


/* >>flow ================================================================ */

/* Outputs of these functions must not overlap their inputs (except where a
   comment in the API says so). */

void prg_flow_icfm_interp(float *xt, float *target, const float *x0, const float *x1, const float *t,
                          int batch, size_t dim) {
    int b;
    size_t i;
    for (b = 0; b < batch; b++) {
        const float tb = t[b], sb = 1.0f - tb;
        const float *a = x0 + (size_t)b * dim, *c = x1 + (size_t)b * dim;
        float *y = xt + (size_t)b * dim, *g = target + (size_t)b * dim;
        for (i = 0; i < dim; i++) {
            float u = sb * a[i], w = tb * c[i];
            y[i] = u + w;
            g[i] = c[i] - a[i];
        }
    }
}

static void prg__fill_normal(float *x, size_t n, prg_rng *rng) {
    size_t i;
    for (i = 0; i < n; i++) x[i] = prg_rng_normal(rng);
}

void prg_flow_icfm_pairs(float *xt, float *target, float *t, float *x0, const float *x1, int batch,
                         size_t dim, prg_rng *rng) {
    size_t n = (size_t)batch * dim;
    int b;
    /* the noise goes to x0, or through target, which is rewritten in place */
    float *noise = x0 ? x0 : target;
    prg__fill_normal(noise, n, rng);
    for (b = 0; b < batch; b++) t[b] = prg_rng_uniform(rng);
    prg_flow_icfm_interp(xt, target, noise, x1, t, batch, dim);
}

void prg_flow_gvp_pairs(float *xt, float *target, float *t, const float *x, int batch, size_t dim,
                        prg_rng *rng) {
    const double half_pi = 1.5707963267948966;
    size_t n = (size_t)batch * dim, i;
    int b;
    prg__fill_normal(target, n, rng); /* eps, rewritten in place below */
    for (b = 0; b < batch; b++) t[b] = (float)(1e-5 + (1.0 - 1e-5) * (double)prg_rng_uniform(rng));
    for (b = 0; b < batch; b++) {
        const float c = (float)cos(half_pi * t[b]), s = (float)sin(half_pi * t[b]);
        const float dc = (float)(-half_pi * sin(half_pi * t[b])), ds = (float)(half_pi * cos(half_pi * t[b]));
        const float *xb = x + (size_t)b * dim;
        float *y = xt + (size_t)b * dim, *g = target + (size_t)b * dim;
        for (i = 0; i < dim; i++) {
            float e = g[i], p = c * xb[i], q = s * e, r = dc * xb[i], w = ds * e;
            y[i] = p + q;
            g[i] = r + w;
        }
    }
}

typedef struct prg__ot_cost_job { double *cost; const float *x0, *x1; int batch; size_t dim; } prg__ot_cost_job;

static void prg__ot_cost_task(void *ctx, int ith, int nth) {
    prg__ot_cost_job *j = (prg__ot_cost_job *)ctx;
    size_t lo, hi, r, k;
    int c;
    prg_split_range((size_t)j->batch, 1, ith, nth, &lo, &hi);
    for (r = lo; r < hi; r++) {
        const float *a = j->x0 + r * j->dim;
        for (c = 0; c < j->batch; c++) {
            const float *b = j->x1 + (size_t)c * j->dim;
            double s = 0.0;
            for (k = 0; k < j->dim; k++) {
                double d = (double)a[k] - (double)b[k];
                s += d * d;
            }
            j->cost[r * (size_t)j->batch + (size_t)c] = s;
        }
    }
}

void prg_ot_cost_ref(double *cost, const float *x0, const float *x1, int batch, size_t dim) {
    prg__ot_cost_job j;
    j.cost = cost;
    j.x0 = x0;
    j.x1 = x1;
    j.batch = batch;
    j.dim = dim;
    if ((double)batch * batch * (double)dim < 65536.0)
        prg__ot_cost_task(&j, 0, 1);
    else
        prg_parallel(prg__ot_cost_task, &j);
}

/* sum x_k^2 in double; four partial sums (a fixed order) so the loop is
   not bound by the latency of one chain of additions */
static double prg__sq_norm(const float *x, size_t n) {
    double s[4] = {0.0, 0.0, 0.0, 0.0};
    size_t k, i;
    for (k = 0; k + 4 <= n; k += 4)
        for (i = 0; i < 4; i++) s[i] += (double)x[k + i] * (double)x[k + i];
    for (; k < n; k++) s[0] += (double)x[k] * (double)x[k];
    return (s[0] + s[1]) + (s[2] + s[3]);
}

/* The cost matrix in parts along the pixel axis: part p holds the cross
   terms X0[:, k0:k1] X1[:, k0:k1]^T (one serial prg_sgemm) and the squared
   norms of both row sets over its columns, and the parts are summed in
   double in a fixed order.  The number of parts depends on dim only (a
   power of two, about 768 columns each, at most 8), so the bits do not
   depend on the thread count; the threads share the parts out, and each
   packs only its own columns of X0 and X1.  (One GEMM split by rows of C
   had every thread pack all of X1: at 128 x 3072 on two threads it ran at
   97 GFLOP/s where one thread reached 75.) */
typedef struct prg__ot_part_job {
    const float *x0, *x1;
    float *cross;  /* [parts][B][B] */
    double *norms; /* [parts][2][B]: x0's rows, then x1's */
    size_t b, dim;
    int parts;
} prg__ot_part_job;

static int prg__ot_parts(size_t dim) {
    int parts = 1;
    while (parts < 8 && (size_t)(2 * parts) * 768 <= dim) parts *= 2;
    return parts;
}

static size_t prg__ot_part_start(size_t dim, int parts, int p) {
    return p == 0 ? 0 : p == parts ? dim : (dim * (size_t)p / (size_t)parts) / 16 * 16;
}

static void prg__ot_part_task(void *ctx, int ith, int nth) {
    const prg__ot_part_job *j = (const prg__ot_part_job *)ctx;
    prg__share sh;
    size_t p, i;
    prg__share_init(&sh, (size_t)j->parts, ith, nth);
    while (prg__share_next(&sh, &p)) {
        const size_t k0 = prg__ot_part_start(j->dim, j->parts, (int)p);
        const size_t k1 = prg__ot_part_start(j->dim, j->parts, (int)p + 1);
        double *n = j->norms + p * 2 * j->b;
        prg_sgemm(0, 1, (int)j->b, (int)j->b, (int)(k1 - k0), 1.0f, j->x0 + k0, (int)j->dim, j->x1 + k0,
                  (int)j->dim, 0.0f, j->cross + p * j->b * j->b, (int)j->b);
        for (i = 0; i < j->b; i++) {
            n[i] = prg__sq_norm(j->x0 + i * j->dim + k0, k1 - k0);
            n[j->b + i] = prg__sq_norm(j->x1 + i * j->dim + k0, k1 - k0);
        }
    }
}

typedef struct prg__ot_sum_job { const prg__ot_part_job *pj; double *cost; } prg__ot_sum_job;

/* cost rows [lo, hi) from the cross terms of every part and the norms,
   which prg_ot_cost has summed over the parts into part 0's slots */
static void prg__ot_sum_range(void *ctx, size_t lo, size_t hi) {
    const prg__ot_sum_job *s = (const prg__ot_sum_job *)ctx;
    const prg__ot_part_job *j = s->pj;
    const size_t b = j->b, bb = b * b;
    const double *n0 = j->norms, *n1 = j->norms + b;
    size_t i, c;
    int p;
    for (i = lo; i < hi; i++)
        for (c = 0; c < b; c++) {
            double x = 0.0, v;
            for (p = 0; p < j->parts; p++) x += (double)j->cross[(size_t)p * bb + i * b + c];
            v = n0[i] + n1[c] - 2.0 * x;
            s->cost[i * b + c] = v > 0.0 ? v : 0.0; /* a squared distance; rounding may dip below 0 */
        }
}

void prg_ot_cost(double *cost, const float *x0, const float *x1, int batch, size_t dim) {
    const size_t b = (size_t)batch;
    prg__ot_part_job j;
    prg__ot_sum_job s;
    size_t i;
    int p;
    if (batch <= 0) return;
    j.parts = prg__ot_parts(dim);
    /* the GEMM's k is an int; tiny problems are cheap and exact in the loop */
    if ((double)batch * batch * (double)dim < 65536.0 || dim > (size_t)2147483647 ||
        !(j.norms = (double *)prg_alloc((size_t)j.parts * (2 * b * sizeof(double) + b * b * sizeof(float))))) {
        prg_ot_cost_ref(cost, x0, x1, batch, dim);
        return;
    }
    j.cross = (float *)(void *)(j.norms + (size_t)j.parts * 2 * b);
    j.x0 = x0;
    j.x1 = x1;
    j.b = b;
    j.dim = dim;
    if (j.parts == 1)
        prg__ot_part_task(&j, 0, 1); /* one GEMM, which the pool splits by rows */
    else
        prg_parallel(prg__ot_part_task, &j);
    for (i = 0; i < 2 * b; i++) /* the norms over all columns, in part order */
        for (p = 1; p < j.parts; p++) j.norms[i] += j.norms[(size_t)p * 2 * b + i];
    s.pj = &j;
    s.cost = cost;
    prg__parallel_for(b, 2.0 * (double)b * j.parts, prg__ot_sum_range, &s);
    prg_free(j.norms);
}

prg_result prg_ot_assign(int *perm, const double *cost, int n) {
    /* Hungarian algorithm with row/column potentials u, v (1-based; column 0
       is a virtual start).  Rows are added one at a time; each addition
       grows a shortest augmenting path (Dijkstra on reduced costs) and
       shifts the potentials, so the partial matching stays optimal. */
    double *u, *v, *minv;
    int *match, *way, i, j;
    char *used;
    size_t m, k;
    if (n <= 0) return prg__fail(PRG_ERR_ARG, "prg_ot_assign: n = %d, need n >= 1", n);
    for (k = 0; k < (size_t)n * (size_t)n; k++)
        if (!isfinite(cost[k]))
            return prg__fail(PRG_ERR_NUMERIC, "prg_ot_assign: cost[%zu][%zu] is not finite; check the "
                             "inputs for NaN or infinity", k / (size_t)n, k % (size_t)n);
    m = (size_t)n + 1;
    u = (double *)prg_alloc(m * (3 * sizeof(double) + 2 * sizeof(int) + 1));
    if (!u) return prg__fail(PRG_ERR_NOMEM, "prg_ot_assign: no memory for n = %d", n);
    v = u + m;
    minv = v + m;
    match = (int *)(minv + m); /* match[j]: row (1-based) on column j, 0 = free */
    way = match + m;
    used = (char *)(way + m);
    for (k = 0; k < m; k++) {
        u[k] = v[k] = 0.0;
        match[k] = way[k] = 0;
    }
    for (i = 1; i <= n; i++) {
        int j0 = 0;
        match[0] = i;
        for (k = 0; k < m; k++) {
            minv[k] = HUGE_VAL;
            used[k] = 0;
        }
        do {
            int i0 = match[j0], j1 = 0;
            double delta = HUGE_VAL;
            const double *row = cost + (size_t)(i0 - 1) * (size_t)n;
            used[j0] = 1;
            for (j = 1; j <= n; j++) {
                if (used[j]) continue;
                {
                    double cur = row[j - 1] - u[i0] - v[j];
                    if (cur < minv[j]) {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if (minv[j] < delta) {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            PRG_ASSERT(j1 > 0); /* finite costs: some free column is always reachable */
            for (j = 0; j <= n; j++) {
                if (used[j]) {
                    u[match[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
        } while (match[j0] != 0);
        do { /* flip the augmenting path */
            int j1 = way[j0];
            match[j0] = match[j1];
            j0 = j1;
        } while (j0);
    }
    for (j = 1; j <= n; j++) perm[match[j] - 1] = j - 1;
    prg_free(u);
    return PRG_OK;
}

prg_result prg_ot_pairs(int *i0, int *i1, const float *x0, const float *x1, int batch, size_t dim,
                        prg_rng *rng) {
    double *cost;
    int *perm, b;
    prg_result rc;
    if (batch <= 0 || batch > 46340)
        return prg__fail(PRG_ERR_ARG, "prg_ot_pairs: batch = %d, need 1 .. 46340", batch);
    cost = (double *)prg_alloc((size_t)batch * batch * sizeof(double) + (size_t)batch * sizeof(int));
    if (!cost) return prg__fail(PRG_ERR_NOMEM, "prg_ot_pairs: no memory for a %d x %d cost matrix", batch, batch);
    perm = (int *)(cost + (size_t)batch * batch);
    prg_ot_cost(cost, x0, x1, batch, dim);
    rc = prg_ot_assign(perm, cost, batch);
    if (rc == PRG_OK)
        for (b = 0; b < batch; b++) {
            int k = (int)prg_rng_below(rng, (uint32_t)batch);
            i0[b] = k;
            i1[b] = perm[k];
        }
    prg_free(cost);
    return rc;
}

prg_result prg_flow_ot_pairs(float *xt, float *target, float *t, float *x0, const float *x1, int batch,
                             size_t dim, prg_rng *rng) {
    size_t n = (size_t)batch * dim;
    float *noise;
    int *idx, b;
    prg_result rc;
    if (batch <= 0 || dim == 0 || n / dim != (size_t)batch || n > SIZE_MAX / 8)
        return prg__fail(PRG_ERR_ARG, "prg_flow_ot_pairs: bad size %d x %zu", batch, dim);
    noise = (float *)prg_alloc(n * sizeof(float) + 2 * (size_t)batch * sizeof(int));
    if (!noise) return prg__fail(PRG_ERR_NOMEM, "prg_flow_ot_pairs: no memory for %zu noise values", n);
    idx = (int *)(noise + n);
    prg__fill_normal(noise, n, rng);
    rc = prg_ot_pairs(idx, idx + batch, noise, x1, batch, dim, rng);
    if (rc == PRG_OK) {
        for (b = 0; b < batch; b++) t[b] = prg_rng_uniform(rng);
        for (b = 0; b < batch; b++) {
            const float *a = noise + (size_t)idx[b] * dim, *c = x1 + (size_t)idx[batch + b] * dim;
            prg_flow_icfm_interp(xt + (size_t)b * dim, target + (size_t)b * dim, a, c, t + b, 1, dim);
            if (x0) memcpy(x0 + (size_t)b * dim, a, dim * sizeof(float));
        }
    }
    prg_free(noise);
    return rc;
}

/* --- ODE integration ---------------------------------------------------- */

/* Checks sizes and allocates `copies` vectors of batch*dim floats plus one
   of batch times; *n receives batch*dim. */
static prg_result prg__ode_workspace(float **ws, size_t *n, int copies, int batch, size_t dim,
                                     const char *who) {
    *ws = NULL;
    *n = (size_t)batch * dim;
    if (batch <= 0 || dim == 0 || *n / dim != (size_t)batch ||
        *n > (SIZE_MAX / sizeof(float) - (size_t)batch) / (size_t)(copies + 1))
        return prg__fail(PRG_ERR_ARG, "%s: bad size batch = %d, dim = %zu", who, batch, dim);
    *ws = (float *)prg_alloc(((size_t)copies * *n + (size_t)batch) * sizeof(float));
    if (!*ws) return prg__fail(PRG_ERR_NOMEM, "%s: no memory for %d work vectors of %zu floats", who, copies, *n);
    return PRG_OK;
}

static void prg__fill_t(float *t, int batch, double value) {
    int b;
    for (b = 0; b < batch; b++) t[b] = (float)value;
}

/* y = x + a*v over n floats (y may be x). */
static void prg__axpy(float *y, const float *x, float a, const float *v, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) {
        float d = a * v[i];
        y[i] = x[i] + d;
    }
}

enum { PRG__EULER, PRG__HEUN, PRG__RK4 };

/* gvp: t runs 1 -> 0 (t_k = 1 - k/steps, step -1/steps), else 0 -> 1. */
static prg_result prg__sample(int method, int gvp, prg_velocity_fn vel, void *ctx, int steps, int batch,
                              size_t dim, float *x) {
    float *ws, *k, *xs, *acc, *tb;
    size_t n, i;
    int s;
    prg_result rc = PRG_OK;
    if (steps < 1) return prg__fail(PRG_ERR_ARG, "prg_sample: steps = %d, need >= 1", steps);
    if (!vel || !x) return prg__fail(PRG_ERR_ARG, "prg_sample: the velocity function and x must not be NULL");
    rc = prg__ode_workspace(&ws, &n, 3, batch, dim, "prg_sample");
    if (rc != PRG_OK) return rc;
    k = ws;
    xs = ws + n;
    acc = ws + 2 * n;
    tb = ws + 3 * n;
    for (s = 0; s < steps && rc == PRG_OK; s++) {
        double t0 = (double)s / steps, t1 = (double)(s + 1) / steps, tm = (2.0 * s + 1) / (2.0 * steps);
        const float h = (float)((gvp ? -1.0 : 1.0) / steps);
        if (gvp) {
            t0 = 1.0 - t0;
            t1 = 1.0 - t1;
            tm = 1.0 - tm;
        }
        prg__fill_t(tb, batch, t0);
        if ((rc = vel(ctx, batch, x, tb, k)) != PRG_OK) break;
        if (method == PRG__EULER) {
            prg__axpy(x, x, h, k, n);
        } else if (method == PRG__HEUN) {
            /* x += h/2 (k1 + k2), k2 = v(t1, x + h k1) */
            prg__axpy(xs, x, h, k, n);
            prg__fill_t(tb, batch, t1);
            if ((rc = vel(ctx, batch, xs, tb, acc)) != PRG_OK) break;
            for (i = 0; i < n; i++) {
                float sum = k[i] + acc[i];
                x[i] = x[i] + 0.5f * h * sum;
            }
        } else {
            /* acc = k1 + 2 k2 + 2 k3 + k4, x += h/6 acc */
            memcpy(acc, k, n * sizeof(float));
            prg__axpy(xs, x, 0.5f * h, k, n);
            prg__fill_t(tb, batch, tm);
            if ((rc = vel(ctx, batch, xs, tb, k)) != PRG_OK) break;
            prg__axpy(acc, acc, 2.0f, k, n);
            prg__axpy(xs, x, 0.5f * h, k, n);
            if ((rc = vel(ctx, batch, xs, tb, k)) != PRG_OK) break;
            prg__axpy(acc, acc, 2.0f, k, n);
            prg__axpy(xs, x, h, k, n);
            prg__fill_t(tb, batch, t1);
            if ((rc = vel(ctx, batch, xs, tb, k)) != PRG_OK) break;
            for (i = 0; i < n; i++) acc[i] += k[i];
            prg__axpy(x, x, h / 6.0f, acc, n);
        }
    }
    prg_free(ws);
    return rc;
}

prg_result prg_sample_euler(prg_velocity_fn vel, void *ctx, int steps, int batch, size_t dim, float *x) {
    return prg__sample(PRG__EULER, 0, vel, ctx, steps, batch, dim, x);
}
prg_result prg_sample_heun(prg_velocity_fn vel, void *ctx, int steps, int batch, size_t dim, float *x) {
    return prg__sample(PRG__HEUN, 0, vel, ctx, steps, batch, dim, x);
}
prg_result prg_sample_rk4(prg_velocity_fn vel, void *ctx, int steps, int batch, size_t dim, float *x) {
    return prg__sample(PRG__RK4, 0, vel, ctx, steps, batch, dim, x);
}

/* --- paths and losses --------------------------------------------------- */

const char *prg_path_name(prg_path path) {
    return path == PRG_PATH_ICFM ? "icfm" : path == PRG_PATH_GVP ? "gvp" : "?";
}

const char *prg_loss_name(prg_loss loss) {
    static const char *const names[4] = {"none", "icfm", "ot", "gvp"};
    return loss >= PRG_LOSS_NONE && loss <= PRG_LOSS_GVP ? names[loss] : "?";
}

prg_path prg_loss_path(prg_loss loss) { return loss == PRG_LOSS_GVP ? PRG_PATH_GVP : PRG_PATH_ICFM; }

prg_result prg_loss_parse(prg_loss *loss, const char *name) {
    int k;
    for (k = PRG_LOSS_ICFM; k <= PRG_LOSS_GVP; k++)
        if (name && !strcmp(name, prg_loss_name((prg_loss)k))) {
            *loss = (prg_loss)k;
            return PRG_OK;
        }
    return prg__fail(PRG_ERR_ARG, "unknown pretraining loss '%s': use icfm, ot or gvp", name ? name : "(null)");
}

prg_result prg_path_parse(prg_path *path, const char *name) {
    prg_loss loss;
    if (prg_loss_parse(&loss, name) != PRG_OK)
        return prg__fail(PRG_ERR_ARG, "unknown probability path '%s': use icfm (ICFM and OT-CFM models) or gvp",
                         name ? name : "(null)");
    *path = prg_loss_path(loss);
    return PRG_OK;
}

prg_loss prg_unet_loss(const prg_unet *net) { return net->loss; }
prg_path prg_unet_path(const prg_unet *net) { return prg_loss_path(net->loss); }

prg_result prg_unet_set_loss(prg_unet *net, prg_loss loss) {
    if (loss < PRG_LOSS_NONE || loss > PRG_LOSS_GVP)
        return prg__fail(PRG_ERR_ARG, "prg_unet_set_loss: unknown loss %d (PRG_LOSS_NONE .. PRG_LOSS_GVP)", loss);
    net->loss = loss;
    return PRG_OK;
}

prg_result prg_sample_path(prg_path path, prg_solver solver, prg_velocity_fn vel, void *ctx, int steps, int batch,
                           size_t dim, float *x) {
    if (path != PRG_PATH_ICFM && path != PRG_PATH_GVP)
        return prg__fail(PRG_ERR_ARG, "prg_sample_path: unknown path %d (PRG_PATH_ICFM or PRG_PATH_GVP)", path);
    if (solver != PRG_SOLVER_EULER && solver != PRG_SOLVER_HEUN && solver != PRG_SOLVER_RK4)
        return prg__fail(PRG_ERR_ARG, "prg_sample_path: unknown solver %d (PRG_SOLVER_EULER, _HEUN or _RK4)", solver);
    return prg__sample(solver == PRG_SOLVER_EULER ? PRG__EULER : solver == PRG_SOLVER_HEUN ? PRG__HEUN : PRG__RK4,
                       path == PRG_PATH_GVP, vel, ctx, steps, batch, dim, x);
}

prg_result prg_unet_sample_path(prg_unet *net, prg_path path, prg_solver solver, int steps, int batch, float *x) {
    const prg_unet_config *c;
    prg_result r;
    if (!net || !x) return prg__fail(PRG_ERR_ARG, "prg_unet_sample: need a net and x");
    c = prg_unet_config_get(net);
    if (c->in_channels != c->out_channels)
        return prg__fail(PRG_ERR_CONFIG, "prg_unet_sample: sampling needs out_channels (%d) == in_channels (%d)",
                         c->out_channels, c->in_channels);
    prg__unet_keep_begin(net); /* the weights do not change during the solve */
    r = prg_sample_path(path, solver, prg_unet_velocity_lean, net, steps, batch,
                        (size_t)c->in_channels * c->image_size * c->image_size, x);
    prg__unet_keep_end(net);
    return r;
}

prg_result prg_unet_sample(prg_unet *net, prg_solver solver, int steps, int batch, float *x) {
    if (!net) return prg__fail(PRG_ERR_ARG, "prg_unet_sample: need a net and x");
    return prg_unet_sample_path(net, prg_unet_path(net), solver, steps, batch, x);
}

/* One Euler step per grid interval: x_{k+1} = x_k + hs v(tau_k, x_k),
   tau_k = tau0 + k dtau, k = 0 .. steps-1. */
typedef struct prg__euler_grid { int steps, intervals; double tau0, sign; float hs; } prg__euler_grid;

static double prg__euler_tau(const prg__euler_grid *g, int k) {
    return g->tau0 + g->sign * ((double)k / g->intervals);
}

int prg_ode_reverse_euler_steps(int t_span, int t_cutoff) {
    if (t_span < 2 || t_cutoff < 0 || t_cutoff > t_span - 2) return -1;
    return t_span - 1 - t_cutoff;
}

int prg_ode_gvp_euler_steps(int t_span, int t_cutoff) {
    if (t_span < 2 || t_cutoff < 0 || t_cutoff == 1 || t_cutoff > t_span) return -1;
    return t_cutoff ? t_cutoff - 1 : t_span - 1;
}

static prg_result prg__euler_grid_make(prg__euler_grid *g, int gvp, int t_span, int t_cutoff, const char *who) {
    g->steps = gvp ? prg_ode_gvp_euler_steps(t_span, t_cutoff) : prg_ode_reverse_euler_steps(t_span, t_cutoff);
    if (g->steps < 0)
        return prg__fail(PRG_ERR_ARG, "%s: t_span = %d, t_cutoff = %d; need t_span >= 2 and %s", who, t_span,
                         t_cutoff, gvp ? "t_cutoff = 0 or 2 <= t_cutoff <= t_span" : "0 <= t_cutoff <= t_span - 2");
    g->intervals = t_span - 1;
    g->tau0 = gvp ? 0.0 : 1.0;
    g->sign = gvp ? 1.0 : -1.0;
    g->hs = (float)(g->sign / g->intervals);
    return PRG_OK;
}

static prg_result prg__euler_forward(const prg__euler_grid *g, prg_velocity_fn vel, void *ctx, int batch,
                                     size_t dim, const float *x, float *z, float *states, const char *who) {
    float *ws, *v, *tb, *cur;
    size_t n;
    int k;
    prg_result rc = prg__ode_workspace(&ws, &n, 1, batch, dim, who);
    if (rc != PRG_OK) return rc;
    v = ws;
    tb = ws + n;
    cur = states ? states : z;
    if (cur != x) memmove(cur, x, n * sizeof(float));
    for (k = 0; k < g->steps; k++) {
        float *next = states ? cur + n : cur;
        prg__fill_t(tb, batch, prg__euler_tau(g, k));
        if ((rc = vel(ctx, batch, cur, tb, v)) != PRG_OK) break;
        prg__axpy(next, cur, g->hs, v, n);
        cur = next;
    }
    if (rc == PRG_OK && cur != z) memcpy(z, cur, n * sizeof(float));
    prg_free(ws);
    return rc;
}

/* Back through the steps, each step's vel recomputed before its vjp; with
   last_live (and left-end Jacobians) the last step's is not: the caller
   knows vel's state still holds that evaluation, as autograd would keep it. */
static prg_result prg__euler_backward(const prg__euler_grid *g, prg_velocity_fn vel, prg_velocity_vjp_fn vjp,
                                      void *ctx, int batch, size_t dim, const float *states, const float *dz,
                                      float *dx, int right_end, int last_live, const char *who) {
    float *ws, *a, *v, *dv, *dxk, *tb;
    size_t n, i;
    int k;
    prg_result rc = prg__ode_workspace(&ws, &n, 4, batch, dim, who);
    if (rc != PRG_OK) return rc;
    a = ws;
    v = ws + n;
    dv = ws + 2 * n;
    dxk = ws + 3 * n;
    tb = ws + 4 * n;
    memcpy(a, dz, n * sizeof(float));
    for (k = g->steps - 1; k >= 0; k--) {
        const int e = right_end ? k + 1 : k; /* the state the Jacobians are taken at */
        prg__fill_t(tb, batch, prg__euler_tau(g, e));
        if (!(last_live && !right_end && k == g->steps - 1) &&
            (rc = vel(ctx, batch, states + (size_t)e * n, tb, v)) != PRG_OK)
            break;
        for (i = 0; i < n; i++) dv[i] = g->hs * a[i];
        memset(dxk, 0, n * sizeof(float));
        if ((rc = vjp(ctx, dv, dxk)) != PRG_OK) break;
        for (i = 0; i < n; i++) a[i] += dxk[i];
    }
    if (rc == PRG_OK && dx)
        for (i = 0; i < n; i++) dx[i] += a[i];
    prg_free(ws);
    return rc;
}

prg_result prg_ode_reverse_euler(prg_velocity_fn vel, void *ctx, int t_span, int t_cutoff, int batch,
                                 size_t dim, const float *x, float *z, float *states) {
    static const char who[] = "prg_ode_reverse_euler";
    prg__euler_grid g;
    prg_result rc = prg__euler_grid_make(&g, 0, t_span, t_cutoff, who);
    return rc != PRG_OK ? rc : prg__euler_forward(&g, vel, ctx, batch, dim, x, z, states, who);
}

prg_result prg_ode_reverse_euler_backward(prg_velocity_fn vel, prg_velocity_vjp_fn vjp, void *ctx,
                                          int t_span, int t_cutoff, int batch, size_t dim,
                                          const float *states, const float *dz, float *dx, int right_end) {
    static const char who[] = "prg_ode_reverse_euler_backward";
    prg__euler_grid g;
    prg_result rc = prg__euler_grid_make(&g, 0, t_span, t_cutoff, who);
    return rc != PRG_OK ? rc : prg__euler_backward(&g, vel, vjp, ctx, batch, dim, states, dz, dx, right_end, 0, who);
}

prg_result prg_ode_gvp_euler(prg_velocity_fn vel, void *ctx, int t_span, int t_cutoff, int batch, size_t dim,
                             const float *x, float *z, float *states) {
    static const char who[] = "prg_ode_gvp_euler";
    prg__euler_grid g;
    prg_result rc = prg__euler_grid_make(&g, 1, t_span, t_cutoff, who);
    return rc != PRG_OK ? rc : prg__euler_forward(&g, vel, ctx, batch, dim, x, z, states, who);
}

prg_result prg_ode_gvp_euler_backward(prg_velocity_fn vel, prg_velocity_vjp_fn vjp, void *ctx, int t_span,
                                      int t_cutoff, int batch, size_t dim, const float *states,
                                      const float *dz, float *dx, int right_end) {
    static const char who[] = "prg_ode_gvp_euler_backward";
    prg__euler_grid g;
    prg_result rc = prg__euler_grid_make(&g, 1, t_span, t_cutoff, who);
    return rc != PRG_OK ? rc : prg__euler_backward(&g, vel, vjp, ctx, batch, dim, states, dz, dx, right_end, 0, who);
}

/* >>classifier ========================================================== */

prg_result prg_unet_velocity(void *net, int batch, const float *x, const float *t, float *v) {
    return prg_unet_forward((prg_unet *)net, batch, x, t, v);
}

prg_result prg_unet_velocity_vjp(void *net, const float *dv, float *dx) {
    return prg_unet_backward((prg_unet *)net, dv, dx);
}

prg_result prg_unet_velocity_lean(void *net, int batch, const float *x, const float *t, float *v) {
    return prg_unet_forward_lean((prg_unet *)net, batch, x, t, v);
}

static prg_result prg__check_finite(const float *x, size_t n, const char *what) {
    size_t i;
    for (i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return prg__fail(PRG_ERR_NUMERIC, "%s: element %zu is %g", what, i, (double)x[i]);
    return PRG_OK;
}

static size_t prg__unet_image_floats(const prg_unet *net) {
    const prg_unet_config *c = prg_unet_config_get(net);
    return (size_t)c->in_channels * c->image_size * c->image_size;
}

static prg_result prg__check_ode_net(const prg_unet *net, const char *who) {
    const prg_unet_config *c = prg_unet_config_get(net);
    if (c->in_channels != c->out_channels)
        return prg__fail(PRG_ERR_CONFIG, "%s: the ODE needs out_channels (%d) == in_channels (%d)", who,
                         c->out_channels, c->in_channels);
    return PRG_OK;
}

static prg_result prg__encode(prg_unet *net, int t_span, int t_cutoff, int batch, const float *x, float *z,
                              float *states) {
    prg_result r;
    size_t n;
    if (!net || !x || batch < 1) return prg__fail(PRG_ERR_ARG, "prg_encode: need a net, x and batch >= 1");
    if ((r = prg__check_ode_net(net, "prg_encode")) != PRG_OK) return r;
    n = (size_t)batch * prg__unet_image_floats(net);
    if ((r = prg__check_finite(x, n, "prg_encode input x")) != PRG_OK) return r;
    prg__unet_keep_begin(net); /* the weights do not change during the solve */
    r = (prg_unet_path(net) == PRG_PATH_GVP ? prg_ode_gvp_euler : prg_ode_reverse_euler)(
        prg_unet_velocity_lean, net, t_span, t_cutoff, batch, prg__unet_image_floats(net), x, z, states);
    prg__unet_keep_end(net);
    if (r != PRG_OK) return r;
    return prg__check_finite(z, n, "encoder output (non-finite U-Net velocity)");
}

prg_result prg_encode(prg_unet *net, int t_span, int t_cutoff, int batch, const float *x, float *z) {
    return prg__encode(net, t_span, t_cutoff, batch, x, z, NULL);
}

prg_result prg_encode_trajectory(prg_unet *net, int t_span, int t_cutoff, int batch, const float *x,
                                 float *states) {
    int m = !net ? -1 : prg_unet_path(net) == PRG_PATH_GVP ? prg_ode_gvp_euler_steps(t_span, t_cutoff)
                                                            : prg_ode_reverse_euler_steps(t_span, t_cutoff);
    if (m < 0) return prg__encode(net, t_span, t_cutoff, batch, x, NULL, NULL); /* reports the error */
    return prg__encode(net, t_span, t_cutoff, batch, x,
                       states + (size_t)m * batch * prg__unet_image_floats(net), states);
}

#define PRG__HEAD_NT 5
struct prg_classifier {
    prg_unet *net;
    int classes, t_span, t_cutoff, steps;
    prg_grad_mode grad_mode;
    prg_path path;
    int c, hw, pool, d;       /* image channels, H (= W), pooled side, D = c*pool*pool */
    size_t img;               /* floats per image */
    float *head, *hgrad;      /* head parameters / gradients, PRG__HEAD_NT tensors */
    size_t nhead, hoff[PRG__HEAD_NT];
    /* activations for up to cap images and cap_steps steps, one block */
    int cap, cap_steps;
    float *act;
    float *states;            /* [steps+1][cap][img] */
    float *adj;               /* [cap][img]: dL/dz */
    float *fm_xt, *fm_target, *fm_v, *fm_t; /* the flow-matching term: [cap][img] x3, [cap] */
    float *feat, *ln, *h1, *h2, *g1, *g2; /* [cap][d] each */
    float *lnmean, *lnrstd;   /* [cap] each */
    int fwd_batch;            /* batch of the last forward, 0 = none */
    uint64_t net_serial;      /* net->fwd_serial after the forward's last Euler step */
    char **names;             /* [classes] class names or NULL (prg__names_copy) */
    /* kept Euler steps: step kfirst + j (j < kept) ran its U-Net forward in set j of kact */
    size_t budget;            /* bytes kact may take (prg_classifier_set_memory_budget) */
    int budget_on;            /* the budget applies (a backward ran, or it was set) */
    float *kact;              /* kact_floats: kept activation sets, set_floats each */
    size_t kact_floats, set_floats;
    int kept, kfirst;         /* steps kept by the last forward, the first of them */
    int kept_live;            /* backward: the kept sets hold this forward's steps */
    int lean;                 /* this forward keeps nothing for a backward (predict, frozen) */
    prg_grad_ready_fn grad_hook; /* prg_classifier_set_grad_hook */
    void *grad_hook_ctx;
    int vjp_left;             /* backward: U-Net backwards still to run (the hook goes on the last) */
};

/* names[0..n) copied into one prg_alloc block: the n pointers, then the
   text; NULL when out of memory or a name is NULL. */
static char **prg__names_copy(const char *const *names, int n) {
    size_t bytes = (size_t)n * sizeof(char *), len;
    char **out, *p;
    int i;
    for (i = 0; i < n; i++) {
        if (!names[i]) return NULL;
        bytes += strlen(names[i]) + 1;
    }
    if (!(out = (char **)prg_alloc(bytes ? bytes : 1))) return NULL;
    p = (char *)(out + n);
    for (i = 0; i < n; i++) {
        len = strlen(names[i]) + 1;
        memcpy(p, names[i], len);
        out[i] = p;
        p += len;
    }
    return out;
}


#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

/* A quarter of physical memory, 0 where it is unknown. */
static size_t prg__keep_default_bytes(void) {
#if (defined(__unix__) || defined(__APPLE__)) && defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    double b;
    if (pages <= 0 || page <= 0) return 0;
    b = (double)pages * (double)page / 4;
    return b >= (double)SIZE_MAX ? SIZE_MAX : (size_t)b;
#else
    return 0;
#endif
}

/* Euler steps of the classifier's encoder for its path, or -1 (with the
   error recorded) when the grid does not fit the path. */
static int prg__classifier_steps(int path, int t_span, int t_cutoff) {
    int m = path == PRG_PATH_GVP ? prg_ode_gvp_euler_steps(t_span, t_cutoff)
                                 : prg_ode_reverse_euler_steps(t_span, t_cutoff);
    if (m < 0)
        prg__fail(PRG_ERR_ARG, "ODE grid t_span=%d t_cutoff=%d does not fit the %s encoder: %s", t_span, t_cutoff,
                  path == PRG_PATH_GVP ? "GVP" : "ICFM", path == PRG_PATH_GVP
                  ? "need t_span >= 2 and t_cutoff 0 or in [2, t_span]"
                  : "need t_span >= 2 and 0 <= t_cutoff < t_span - 1 (at least one Euler step)");
    return m;
}

static const char *const prg__head_names[PRG__HEAD_NT] = {
    "head.norm.weight", "head.norm.bias", "head.fc1.weight", "head.fc1.bias", "head.fc2.weight"};

/* The head's pooled side for images of side hw: 16 as in the reference,
   smaller images keep their size. */
static int prg__head_pool(int hw) { return hw < 16 ? hw : 16; }

static void prg__head_shape(const prg_classifier *clf, int i, int *ndim, int64_t shape[4]) {
    shape[0] = shape[1] = shape[2] = shape[3] = 0;
    *ndim = (i == 2 || i == 4) ? 2 : 1;
    shape[0] = i == 4 ? clf->classes : clf->d;
    if (*ndim == 2) shape[1] = clf->d;
}

prg_result prg_classifier_create(prg_classifier **out, prg_unet *net, int num_classes,
                                 int t_span, int t_cutoff, uint64_t seed) {
    const prg_unet_config *c;
    prg_classifier *clf;
    prg_result r;
    prg_rng rng;
    size_t off = 0, i;
    int t, ndim;
    int64_t shape[4];
    float bound;
    if (!out) return prg__fail(PRG_ERR_ARG, "prg_classifier_create: out is NULL");
    *out = NULL;
    if (!net) return prg__fail(PRG_ERR_ARG, "prg_classifier_create: net is NULL");
    if (num_classes < 1) return prg__fail(PRG_ERR_ARG, "prg_classifier_create: num_classes=%d < 1", num_classes);
    if (prg__classifier_steps(prg_unet_path(net), t_span, t_cutoff) < 0) return PRG_ERR_ARG;
    if ((r = prg__check_ode_net(net, "prg_classifier_create")) != PRG_OK) return r;
    if (net->owned)
        return prg__fail(PRG_ERR_ARG, "prg_classifier_create: the net already belongs to a classifier (one net, one classifier: "
                         "create or load another net)");
    c = prg_unet_config_get(net);
    clf = (prg_classifier *)PRG_MALLOC(sizeof *clf);
    if (!clf) return prg__fail(PRG_ERR_NOMEM, "prg_classifier_create: out of memory");
    memset(clf, 0, sizeof *clf);
    clf->net = net;
    clf->classes = num_classes;
    clf->t_span = t_span;
    clf->t_cutoff = t_cutoff;
    clf->path = prg_unet_path(net);
    clf->steps = prg__classifier_steps(clf->path, t_span, t_cutoff);
    clf->c = c->in_channels;
    clf->hw = c->image_size;
    /* The reference pools to 16 x 16; smaller images keep their size. */
    clf->pool = prg__head_pool(clf->hw);
    if (clf->hw % clf->pool != 0) {
        PRG_FREE(clf);
        return prg__fail(PRG_ERR_CONFIG, "prg_classifier_create: image size %d is not a multiple of the "
                         "head's 16 x 16 pooling (pad 28x28 images to 32x32)", c->image_size);
    }
    clf->d = clf->c * clf->pool * clf->pool;
    clf->img = prg__unet_image_floats(net);
    clf->budget = prg__keep_default_bytes();
    for (t = 0; t < PRG__HEAD_NT; t++) {
        prg__head_shape(clf, t, &ndim, shape);
        clf->hoff[t] = off;
        off += (size_t)shape[0] * (ndim == 2 ? (size_t)shape[1] : 1);
    }
    clf->nhead = off;
    clf->head = (float *)prg_alloc(off * sizeof(float));
    clf->hgrad = (float *)prg_alloc(off * sizeof(float));
    if (!clf->head || !clf->hgrad) {
        prg_free(clf->head);
        prg_free(clf->hgrad);
        PRG_FREE(clf);
        return prg__fail(PRG_ERR_NOMEM, "prg_classifier_create: no memory for the head (%zu floats)", off);
    }
    /* PyTorch defaults: LayerNorm 1 / 0; Linear weight and bias
       U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = D. */
    prg_rng_seed(&rng, seed, 0x68656164ull /* "head" */);
    bound = 1.0f / sqrtf((float)clf->d);
    for (i = 0; i < (size_t)clf->d; i++) {
        clf->head[clf->hoff[0] + i] = 1.0f;
        clf->head[clf->hoff[1] + i] = 0.0f;
    }
    for (i = clf->hoff[2]; i < clf->nhead; i++) clf->head[i] = bound * (2.0f * prg_rng_uniform(&rng) - 1.0f);
    memset(clf->hgrad, 0, off * sizeof(float));
    net->owned = 1;
    *out = clf;
    return PRG_OK;
}

void prg_classifier_free(prg_classifier *clf) {
    if (!clf) return;
    prg_free(clf->names);
    prg_unet_free(clf->net);
    prg_free(clf->head);
    prg_free(clf->hgrad);
    prg_free(clf->act);
    prg_free(clf->kact);
    PRG_FREE(clf);
}

void prg_classifier_set_memory_budget(prg_classifier *clf, size_t bytes) {
    clf->budget = bytes;
    clf->budget_on = 1;
    prg_free(clf->kact);
    clf->kact = NULL;
    clf->kact_floats = 0;
    clf->kept = 0;
    clf->kept_live = 0;
}

size_t prg_classifier_memory_budget(const prg_classifier *clf) { return clf->budget; }
size_t prg_classifier_step_bytes(const prg_classifier *clf, int batch) {
    return batch < 1 ? 0 : prg__unet_act_set_floats(clf->net, batch) * sizeof(float);
}
int prg_classifier_kept_steps(const prg_classifier *clf) { return clf->kept; }

/* Steps to keep for a batch within the budget, their sets allocated (fewer
   when memory is short): from step 0 for the exact backward, from step 1 for
   the adjoint (its Jacobians are taken at states 1 .. M), up to M - 2: the
   last step's set is the net's own. */
static int prg__classifier_keep_reserve(prg_classifier *clf, int batch) {
    size_t set = prg__unet_act_set_floats(clf->net, batch), by = set * sizeof(float);
    size_t k = !clf->budget_on || clf->grad_mode == PRG_GRAD_FROZEN || !by ? 0 : clf->budget / by;
    clf->kfirst = clf->grad_mode == PRG_GRAD_ADJOINT;
    if (k > (size_t)(clf->steps - 1 - clf->kfirst)) k = (size_t)(clf->steps - 1 - clf->kfirst);
    clf->set_floats = set;
    for (; k > 0; k /= 2) {
        float *p;
        if (k * set <= clf->kact_floats) return (int)k;
        p = (float *)prg_alloc(k * set * sizeof(float));
        if (!p) continue;
        prg_free(clf->kact);
        clf->kact = p;
        clf->kact_floats = k * set;
        return (int)k;
    }
    return 0;
}

/* The U-Net as the encoder's velocity with the kept steps: the state x is
   row e of clf->states, which names the evaluation (forward step e, or
   backward's Jacobian at state e: the same U-Net input).  A kept step runs
   in its own set; in backward that set still holds it, and the forward is
   not run again (its v is not read there). */
static prg_result prg__classifier_vel(void *ctx, int batch, const float *x, const float *t, float *v) {
    prg_classifier *clf = (prg_classifier *)ctx;
    size_t e = (size_t)(x - clf->states) / (clf->img * (size_t)batch), j = e - (size_t)clf->kfirst;
    float *set = e >= (size_t)clf->kfirst && j < (size_t)clf->kept ? clf->kact + j * clf->set_floats : NULL;
    PRG_ASSERT(x >= clf->states && e <= (size_t)clf->steps);
    if (set && clf->kept_live) {
        prg__unet_use_act(clf->net, set, batch);
        return PRG_OK;
    }
    prg__unet_use_act(clf->net, set, 0);
    return clf->lean ? prg_unet_forward_lean(clf->net, batch, x, t, v) : prg_unet_forward(clf->net, batch, x, t, v);
}

static prg_result prg__classifier_vjp(void *ctx, const float *dv, float *dx) {
    prg_classifier *clf = (prg_classifier *)ctx;
    prg_result r;
    if (--clf->vjp_left > 0 || !clf->grad_hook) return prg_unet_backward(clf->net, dv, dx);
    prg_unet_set_grad_hook(clf->net, clf->grad_hook, clf->grad_hook_ctx); /* the last: the U-Net grads end here */
    r = prg_unet_backward(clf->net, dv, dx);
    prg_unet_set_grad_hook(clf->net, NULL, NULL);
    return r;
}

void prg_classifier_set_grad_hook(prg_classifier *clf, prg_grad_ready_fn fn, void *ctx) {
    clf->grad_hook = fn;
    clf->grad_hook_ctx = ctx;
}

prg_unet *prg_classifier_unet(prg_classifier *clf) { return clf->net; }
int prg_classifier_num_classes(const prg_classifier *clf) { return clf->classes; }

prg_result prg_classifier_set_class_names(prg_classifier *clf, const char *const *names, int n) {
    char **copy = NULL;
    int i;
    if (!clf) return prg__fail(PRG_ERR_ARG, "prg_classifier_set_class_names: clf is NULL");
    if (names) {
        if (n != clf->classes)
            return prg__fail(PRG_ERR_ARG, "prg_classifier_set_class_names: %d names for a classifier of %d classes", n, clf->classes);
        for (i = 0; i < n; i++)
            if (!names[i]) return prg__fail(PRG_ERR_ARG, "prg_classifier_set_class_names: name %d is NULL", i);
        if (!(copy = prg__names_copy(names, n))) return prg__fail(PRG_ERR_NOMEM, "prg_classifier_set_class_names: out of memory");
    }
    prg_free(clf->names);
    clf->names = copy;
    return PRG_OK;
}

const char *prg_classifier_class_name(const prg_classifier *clf, int i) {
    return clf && clf->names && i >= 0 && i < clf->classes ? clf->names[i] : NULL;
}

float *prg_classifier_head_params(prg_classifier *clf, size_t *count) {
    if (count) *count = clf->nhead;
    return clf->head;
}

float *prg_classifier_head_grads(prg_classifier *clf, size_t *count) {
    if (count) *count = clf->nhead;
    return clf->hgrad;
}

int prg_classifier_param_blocks(prg_classifier *clf, float **params, const float **grads, size_t *sizes,
                                size_t *total) {
    int k = 0;
    if (clf->grad_mode != PRG_GRAD_FROZEN) {
        if (params) params[k] = prg_unet_params(clf->net);
        if (grads) grads[k] = prg_unet_grads(clf->net);
        sizes[k++] = prg_unet_num_params(clf->net);
    }
    if (params) params[k] = clf->head;
    if (grads) grads[k] = clf->hgrad;
    sizes[k++] = clf->nhead;
    if (total) *total = sizes[0] + (k > 1 ? sizes[1] : 0);
    return k;
}

int prg_classifier_num_head_tensors(const prg_classifier *clf) {
    (void)clf;
    return PRG__HEAD_NT;
}

prg_result prg_classifier_head_tensor_info(const prg_classifier *clf, int i, const char **name,
                                           int *ndim, int64_t shape[4], size_t *offset) {
    if (i < 0 || i >= PRG__HEAD_NT)
        return prg__fail(PRG_ERR_ARG, "head tensor index %d out of range 0..%d", i, PRG__HEAD_NT - 1);
    if (name) *name = prg__head_names[i];
    prg__head_shape(clf, i, ndim, shape);
    if (offset) *offset = clf->hoff[i];
    return PRG_OK;
}

void prg_classifier_zero_grad(prg_classifier *clf) {
    prg_unet_zero_grad(clf->net);
    memset(clf->hgrad, 0, clf->nhead * sizeof(float));
}

prg_result prg_classifier_set_grad_mode(prg_classifier *clf, prg_grad_mode mode) {
    if (mode != PRG_GRAD_EXACT && mode != PRG_GRAD_ADJOINT && mode != PRG_GRAD_FROZEN)
        return prg__fail(PRG_ERR_ARG, "prg_classifier_set_grad_mode: unknown mode %d", mode);
    clf->grad_mode = mode;
    return PRG_OK;
}

prg_result prg_classifier_set_grid(prg_classifier *clf, int t_span, int t_cutoff) {
    int m = prg__classifier_steps(clf->path, t_span, t_cutoff);
    if (m < 0) return PRG_ERR_ARG;
    clf->t_span = t_span;
    clf->t_cutoff = t_cutoff;
    clf->steps = m;
    clf->fwd_batch = 0;
    return PRG_OK;
}

prg_result prg_classifier_set_path(prg_classifier *clf, prg_path path) {
    int m;
    if (path != PRG_PATH_ICFM && path != PRG_PATH_GVP)
        return prg__fail(PRG_ERR_ARG, "prg_classifier_set_path: unknown path %d", path);
    if ((m = prg__classifier_steps(path, clf->t_span, clf->t_cutoff)) < 0) return PRG_ERR_ARG;
    clf->path = path;
    clf->steps = m;
    clf->fwd_batch = 0;
    return PRG_OK;
}

prg_path prg_classifier_path(const prg_classifier *clf) { return clf->path; }

int prg_classifier_grid(const prg_classifier *clf, int *t_span, int *t_cutoff) {
    if (t_span) *t_span = clf->t_span;
    if (t_cutoff) *t_cutoff = clf->t_cutoff;
    return clf->steps;
}

/* Sizes the activation block for batch images and the current step count. */
static prg_result prg__classifier_reserve(prg_classifier *clf, int batch) {
    size_t img, d, total;
    float *p;
    if (batch <= clf->cap && clf->steps <= clf->cap_steps) return PRG_OK;
    if (batch < clf->cap) batch = clf->cap;
    img = clf->img * (size_t)batch;
    d = (size_t)clf->d * (size_t)batch;
    total = img * (size_t)(clf->steps + 2 + 3) + 6 * d + 3 * (size_t)batch + 64;
    p = (float *)prg_alloc(total * sizeof(float));
    if (!p) return prg__fail(PRG_ERR_NOMEM, "classifier: no memory for %zu floats of activations (batch %d, %d steps)",
                             total, batch, clf->steps);
    prg_free(clf->act);
    clf->act = p;
    clf->cap = batch;
    clf->cap_steps = clf->steps;
    clf->states = p; p += img * (size_t)(clf->steps + 1);
    clf->adj = p; p += img;
    clf->fm_xt = p; p += img;
    clf->fm_target = p; p += img;
    clf->fm_v = p; p += img;
    clf->fm_t = p; p += batch;
    clf->feat = p; p += d;
    clf->ln = p; p += d;
    clf->h1 = p; p += d;
    clf->h2 = p; p += d;
    clf->g1 = p; p += d;
    clf->g2 = p; p += d;
    clf->lnmean = p; p += batch;
    clf->lnrstd = p;
    return PRG_OK;
}

/* predict: the U-Net forwards keep nothing for a backward (nor in frozen
   mode, whose backward does not reach the U-Net). */
static prg_result prg__classifier_forward(prg_classifier *clf, int batch, const float *x, float *logits,
                                          int predict) {
    prg_result r;
    size_t n;
    const float *w;
    int f;
    if (!clf || !x || !logits || batch < 1) return prg__fail(PRG_ERR_ARG, "prg_classifier_forward: need clf, x, logits and batch >= 1");
    w = clf->head;
    f = clf->hw / clf->pool;
    clf->fwd_batch = 0;
    n = clf->img * (size_t)batch;
    if ((r = prg__check_finite(x, n, "classifier input x")) != PRG_OK) return r;
    if ((r = prg__classifier_reserve(clf, batch)) != PRG_OK) return r;
    clf->lean = predict || clf->grad_mode == PRG_GRAD_FROZEN;
    if ((r = prg__unet_reserve_mode(clf->net, batch, clf->lean)) != PRG_OK) return r;
    clf->kept_live = 0;
    clf->kept = clf->lean ? 0 : prg__classifier_keep_reserve(clf, batch);
    prg__unet_keep_begin(clf->net);
    r = (clf->path == PRG_PATH_GVP ? prg_ode_gvp_euler : prg_ode_reverse_euler)(
        prg__classifier_vel, clf, clf->t_span, clf->t_cutoff, batch, clf->img, x,
        clf->states + (size_t)clf->steps * n, clf->states);
    prg__unet_keep_end(clf->net);
    /* the last step ran in the net's own set (kept <= M - 1) */
    prg__unet_use_act(clf->net, NULL, r == PRG_OK && !clf->lean ? batch : 0);
    if (r != PRG_OK) return r;
    if ((r = prg__check_finite(clf->states + (size_t)clf->steps * n, n, "encoder output (non-finite U-Net velocity)")) != PRG_OK)
        return r;
    prg_avgpool_forward(clf->feat, clf->states + (size_t)clf->steps * n, batch * clf->c, clf->hw, clf->hw, f);
    prg_layernorm_forward(clf->ln, clf->lnmean, clf->lnrstd, clf->feat, w + clf->hoff[0], w + clf->hoff[1],
                          batch, clf->d, 1e-5f);
    prg_linear_forward(clf->h1, clf->ln, w + clf->hoff[2], w + clf->hoff[3], batch, clf->d, clf->d);
    prg_tanh_forward(clf->h2, clf->h1, (size_t)batch * clf->d);
    prg_linear_forward(logits, clf->h2, w + clf->hoff[4], NULL, batch, clf->d, clf->classes);
    /* finite weights can still overflow float (a file's head of 1e38s): no NaN probabilities downstream */
    if ((r = prg__check_finite(logits, (size_t)batch * clf->classes, "classifier logits (the head's weights overflow float32)")) !=
        PRG_OK)
        return r;
    clf->fwd_batch = predict ? 0 : batch;
    clf->net_serial = clf->net->fwd_serial;
    clf->kept_live = 1;
    return PRG_OK;
}

prg_result prg_classifier_forward(prg_classifier *clf, int batch, const float *x, float *logits) {
    return prg__classifier_forward(clf, batch, x, logits, 0);
}

prg_result prg_classifier_predict(prg_classifier *clf, int batch, const float *x, float *logits) {
    return prg__classifier_forward(clf, batch, x, logits, 1);
}

prg_result prg_classifier_backward(prg_classifier *clf, const float *dlogits) {
    int batch = clf->fwd_batch, f = clf->hw / clf->pool;
    size_t n, dn;
    const float *w = clf->head;
    float *g = clf->hgrad;
    prg__euler_grid grid;
    prg_result r;
    if (!batch) return prg__fail(PRG_ERR_STATE, "prg_classifier_backward: call prg_classifier_forward first");
    if (!dlogits) return prg__fail(PRG_ERR_ARG, "prg_classifier_backward: dlogits is NULL");
    if ((r = prg__check_finite(dlogits, (size_t)batch * clf->classes, "dlogits")) != PRG_OK) return r;
    clf->fwd_batch = 0; /* the U-Net's saved activations will no longer match */
    n = clf->img * (size_t)batch;
    dn = (size_t)clf->d * (size_t)batch;
    /* the head, back to a_M = dL/dz */
    memset(clf->g2, 0, dn * sizeof(float));
    prg_linear_backward(clf->g2, g + clf->hoff[4], NULL, dlogits, clf->h2, w + clf->hoff[4], batch, clf->d,
                        clf->classes);
    memset(clf->g1, 0, dn * sizeof(float));
    prg_tanh_backward(clf->g1, clf->g2, clf->h2, dn);
    memset(clf->g2, 0, dn * sizeof(float));
    prg_linear_backward(clf->g2, g + clf->hoff[2], g + clf->hoff[3], clf->g1, clf->ln, w + clf->hoff[2], batch,
                        clf->d, clf->d);
    if (clf->grad_mode == PRG_GRAD_FROZEN) {
        prg_layernorm_backward(NULL, g + clf->hoff[0], g + clf->hoff[1], clf->g2, clf->feat, clf->lnmean,
                               clf->lnrstd, w + clf->hoff[0], batch, clf->d);
        if (clf->grad_hook) clf->grad_hook(clf->grad_hook_ctx, 1, 0);
        return PRG_OK;
    }
    memset(clf->g1, 0, dn * sizeof(float));
    prg_layernorm_backward(clf->g1, g + clf->hoff[0], g + clf->hoff[1], clf->g2, clf->feat, clf->lnmean,
                           clf->lnrstd, w + clf->hoff[0], batch, clf->d);
    if (clf->grad_hook) clf->grad_hook(clf->grad_hook_ctx, 1, 0);
    memset(clf->adj, 0, n * sizeof(float));
    prg_avgpool_backward(clf->adj, clf->g1, batch * clf->c, clf->hw, clf->hw, f);
    /* Through the Euler steps from the stored states, each step's U-Net
       forward recomputed but the last one's when the net still holds it (no
       other forward ran since ours): exact left-end backprop, or the
       reference's right-end adjoint. */
    if ((r = prg__euler_grid_make(&grid, clf->path == PRG_PATH_GVP, clf->t_span, clf->t_cutoff,
                                  "prg_classifier_backward")) != PRG_OK)
        return r;
    /* the kept steps' sets are read where they are (prg__classifier_vel) */
    prg__unet_keep_begin(clf->net);
    clf->vjp_left = grid.steps;
    r = prg__euler_backward(&grid, prg__classifier_vel, prg__classifier_vjp, clf, batch, clf->img, clf->states,
                            clf->adj, NULL, clf->grad_mode == PRG_GRAD_ADJOINT,
                            clf->net->fwd_serial == clf->net_serial, "prg_classifier_backward");
    prg__unet_keep_end(clf->net);
    prg__unet_use_act(clf->net, NULL, r == PRG_OK ? batch : 0);
    clf->kept_live = 0;
    clf->budget_on = 1; /* from the next forward on: this classifier trains */
    return r;
}

prg_result prg_classifier_flow_loss(prg_classifier *clf, int batch, const float *x, float beta, prg_rng *rng,
                                    float *loss) {
    size_t n, i;
    float l;
    prg_result r;
    if (!clf || !x || !rng || batch < 1) return prg__fail(PRG_ERR_ARG, "prg_classifier_flow_loss: need clf, x, rng and batch >= 1");
    if ((r = prg__classifier_reserve(clf, batch)) != PRG_OK) return r;
    clf->fwd_batch = 0; /* the U-Net's activations are about to change */
    n = clf->img * (size_t)batch;
    if (clf->path == PRG_PATH_GVP)
        prg_flow_gvp_pairs(clf->fm_xt, clf->fm_target, clf->fm_t, x, batch, clf->img, rng);
    else
        prg_flow_icfm_pairs(clf->fm_xt, clf->fm_target, clf->fm_t, NULL, x, batch, clf->img, rng);
    if ((r = prg_unet_forward(clf->net, batch, clf->fm_xt, clf->fm_t, clf->fm_v)) != PRG_OK) return r;
    /* dv = beta * dL_FM/dv, written over the target (elementwise) */
    l = prg_flow_loss_forward_backward(clf->fm_xt, clf->fm_v, clf->fm_target, batch, clf->c, clf->hw * clf->hw);
    if (!isfinite(l)) return prg__fail(PRG_ERR_NUMERIC, "prg_classifier_flow_loss: the flow-matching loss is %g", (double)l);
    for (i = 0; i < n; i++) clf->fm_xt[i] *= beta;
    if ((r = prg_unet_backward(clf->net, clf->fm_xt, NULL)) != PRG_OK) return r;
    if (loss) *loss = l;
    return PRG_OK;
}

/* ---- representation probes ------------------------------------------- */

int prg_feature_dim(const prg_unet *net) {
    const prg_unet_config *c;
    int pool;
    if (!net) return 0;
    c = prg_unet_config_get(net);
    pool = prg__head_pool(c->image_size);
    if (pool < 1 || c->image_size % pool) return 0;
    return c->in_channels * pool * pool;
}

/* Euler steps to the state of t_cutoff k on path's trajectory, or -1. */
static int prg__probe_steps(int path, int t_span, int k) {
    if (t_span < 2) return -1;
    if (path == PRG_PATH_GVP) return k == 0 ? t_span - 1 : (k >= 1 && k <= t_span) ? k - 1 : -1;
    return k >= 0 && k <= t_span - 1 ? t_span - 1 - k : -1;
}

prg_result prg_encode_features(prg_unet *net, int path, int t_span, int ncut, const int *t_cutoffs, int batch,
                               const float *x, float *feat) {
    const prg_unet_config *c;
    int i, mmax = 0, d, f;
    size_t n, total;
    float *states;
    prg_result r = PRG_OK;
    if (!net || !t_cutoffs || !x || !feat || ncut < 1 || batch < 1)
        return prg__fail(PRG_ERR_ARG, "prg_encode_features: need net, t_cutoffs, x, feat, ncut >= 1 and batch >= 1");
    if (path != PRG_PATH_ICFM && path != PRG_PATH_GVP)
        return prg__fail(PRG_ERR_ARG, "prg_encode_features: unknown path %d", path);
    for (i = 0; i < ncut; i++) {
        int m = prg__probe_steps(path, t_span, t_cutoffs[i]);
        if (m < 0)
            return prg__fail(PRG_ERR_ARG, "prg_encode_features: t_cutoff %d does not fit t_span %d on the %s path "
                             "(need t_span >= 2 and %s)", t_cutoffs[i], t_span, path == PRG_PATH_GVP ? "GVP" : "ICFM",
                             path == PRG_PATH_GVP ? "0 <= t_cutoff <= t_span" : "0 <= t_cutoff <= t_span - 1");
        if (m > mmax) mmax = m;
    }
    if ((r = prg__check_ode_net(net, "prg_encode_features")) != PRG_OK) return r;
    c = prg_unet_config_get(net);
    if (!(d = prg_feature_dim(net)))
        return prg__fail(PRG_ERR_CONFIG, "prg_encode_features: image size %d is not a multiple of the head's pooling",
                         c->image_size);
    f = c->image_size / prg__head_pool(c->image_size);
    n = (size_t)batch * prg__unet_image_floats(net);
    if ((r = prg__check_finite(x, n, "prg_encode_features input x")) != PRG_OK) return r;
    if ((size_t)mmax + 1 > ((size_t)-1 / sizeof(float)) / n)
        return prg__fail(PRG_ERR_ARG, "prg_encode_features: a trajectory of %d states of %zu floats overflows", mmax + 1, n);
    total = ((size_t)mmax + 1) * n;
    states = (float *)prg_alloc(total * sizeof(float));
    if (!states)
        return prg__fail(PRG_ERR_NOMEM, "prg_encode_features: no memory for the trajectory (%zu floats: %d states of "
                         "batch %d; use a smaller batch)", total, mmax + 1, batch);
    prg__unet_keep_begin(net); /* the weights do not change during the solve */
    if (mmax == 0) memcpy(states, x, n * sizeof(float));
    else if (path == PRG_PATH_GVP)
        r = prg_ode_gvp_euler(prg_unet_velocity_lean, net, t_span, mmax + 1, batch, prg__unet_image_floats(net), x,
                              states + (size_t)mmax * n, states);
    else
        r = prg_ode_reverse_euler(prg_unet_velocity_lean, net, t_span, t_span - 1 - mmax, batch,
                                  prg__unet_image_floats(net), x, states + (size_t)mmax * n, states);
    prg__unet_keep_end(net);
    if (r == PRG_OK)
        r = prg__check_finite(states + (size_t)mmax * n, n, "encoder state (non-finite U-Net velocity)");
    for (i = 0; r == PRG_OK && i < ncut; i++)
        prg_avgpool_forward(feat + (size_t)i * batch * d,
                            states + (size_t)prg__probe_steps(path, t_span, t_cutoffs[i]) * n, batch * c->in_channels,
                            c->image_size, c->image_size, f);
    prg_free(states);
    return r;
}

static prg_result prg__check_labels(const int32_t *labels, int n, int classes, const char *who) {
    int i;
    for (i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= classes)
            return prg__fail(PRG_ERR_ARG, "%s: label %d of row %d is outside [0, %d)", who, (int)labels[i], i, classes);
    return PRG_OK;
}

/* 1/||row|| for each of n rows of d floats (0 for a zero row). */
static void prg__inv_norms(float *inv, const float *x, int n, int d) {
    int i, j;
    for (i = 0; i < n; i++) {
        double s = 0.0;
        const float *r = x + (size_t)i * d;
        for (j = 0; j < d; j++) s += (double)r[j] * r[j];
        inv[i] = s > 0.0 ? (float)(1.0 / sqrt(s)) : 0.0f;
    }
}

#define PRG__KNN_BLOCK 64
typedef struct prg__knn_job {
    const float *dots, *tinv, *qinv; /* [q][n], [n], [q] */
    const int32_t *labels;
    int n, q, k, classes, q0;
    float temperature;
    float *topv;                     /* [q][k] */
    int *topi;                       /* [q][k] */
    double *acc;                     /* [q][classes] */
    int32_t *pred;
    float *votes;
} prg__knn_job;

static void prg__knn_rows(void *ctx, int ith, int nth) {
    const prg__knn_job *j = (const prg__knn_job *)ctx;
    size_t lo, hi, r;
    prg_split_range((size_t)j->q, 1, ith, nth, &lo, &hi);
    for (r = lo; r < hi; r++) {
        const float *dot = j->dots + r * j->n;
        float *tv = j->topv + r * j->k, qi = j->qinv[r];
        int *ti = j->topi + r * j->k, cnt = 0, i, p, best = 0;
        double *acc = j->acc + r * j->classes;
        for (i = 0; i < j->n; i++) {
            float s = dot[i] * qi * j->tinv[i];
            if (cnt == j->k && !(s > tv[cnt - 1])) continue;
            /* insert after every entry >= s: equal similarities keep the lower index first */
            p = cnt < j->k ? cnt++ : cnt - 1;
            while (p > 0 && tv[p - 1] < s) {
                tv[p] = tv[p - 1];
                ti[p] = ti[p - 1];
                p--;
            }
            tv[p] = s;
            ti[p] = i;
        }
        for (i = 0; i < j->classes; i++) acc[i] = 0.0;
        for (i = 0; i < cnt; i++) acc[j->labels[ti[i]]] += exp((double)tv[i] / j->temperature);
        for (i = 1; i < j->classes; i++)
            if (acc[i] > acc[best]) best = i;
        j->pred[j->q0 + r] = best;
        if (j->votes)
            for (i = 0; i < j->classes; i++) j->votes[(size_t)(j->q0 + r) * j->classes + i] = (float)acc[i];
    }
}

prg_result prg_knn_classify(const float *train, const int32_t *train_labels, int n, int d, int classes,
                            const float *query, int m, int k, float temperature, int32_t *pred, float *votes) {
    static const char who[] = "prg_knn_classify";
    prg__knn_job j;
    float *dots, *tinv, *qinv;
    int q0;
    prg_result r;
    if (!train || !train_labels || !query || !pred || n < 1 || d < 1 || classes < 1 || m < 0 || k < 1 ||
        !(temperature > 0.0f) || !isfinite(temperature))
        return prg__fail(PRG_ERR_ARG, "%s: need train, labels, query, pred, n, d, classes, k >= 1 and a positive "
                         "temperature (n %d, d %d, classes %d, m %d, k %d, temperature %g)", who, n, d, classes, m, k,
                         (double)temperature);
    if ((r = prg__check_labels(train_labels, n, classes, who)) != PRG_OK) return r;
    if ((r = prg__check_finite(train, (size_t)n * d, "kNN training features")) != PRG_OK ||
        (r = prg__check_finite(query, (size_t)m * d, "kNN query features")) != PRG_OK)
        return r;
    if (k > n) k = n;
    if ((size_t)n > ((size_t)-1 / sizeof(float)) / PRG__KNN_BLOCK / 2)
        return prg__fail(PRG_ERR_ARG, "%s: %d training rows overflow the similarity block", who, n);
    dots = (float *)prg_alloc(((size_t)PRG__KNN_BLOCK * n + n + PRG__KNN_BLOCK + (size_t)PRG__KNN_BLOCK * k) *
                              sizeof(float));
    j.topi = (int *)prg_alloc((size_t)PRG__KNN_BLOCK * k * sizeof(int));
    j.acc = (double *)prg_alloc((size_t)PRG__KNN_BLOCK * classes * sizeof(double));
    if (!dots || !j.topi || !j.acc) {
        prg_free(dots);
        prg_free(j.topi);
        prg_free(j.acc);
        return prg__fail(PRG_ERR_NOMEM, "%s: no memory for a block of %d x %d similarities", who, PRG__KNN_BLOCK, n);
    }
    tinv = dots + (size_t)PRG__KNN_BLOCK * n;
    qinv = tinv + n;
    j.topv = qinv + PRG__KNN_BLOCK;
    prg__inv_norms(tinv, train, n, d);
    j.dots = dots;
    j.tinv = tinv;
    j.qinv = qinv;
    j.labels = train_labels;
    j.n = n;
    j.k = k;
    j.classes = classes;
    j.temperature = temperature;
    j.pred = pred;
    j.votes = votes;
    for (q0 = 0; q0 < m; q0 += PRG__KNN_BLOCK) {
        int q = m - q0 < PRG__KNN_BLOCK ? m - q0 : PRG__KNN_BLOCK;
        const float *qx = query + (size_t)q0 * d;
        prg__inv_norms(qinv, qx, q, d);
        prg_sgemm(0, 1, q, n, d, 1.0f, qx, d, train, d, 0.0f, dots, n);
        j.q = q;
        j.q0 = q0;
        prg_parallel(prg__knn_rows, &j);
    }
    prg_free(dots);
    prg_free(j.topi);
    prg_free(j.acc);
    return PRG_OK;
}

void prg_linear_probe_config_default(prg_linear_probe_config *cfg) {
    cfg->epochs = 100;
    cfg->batch = 256;
    cfg->lr = 1e-3;
    cfg->weight_decay = 0.0;
    cfg->standardize = 1;
    cfg->seed = 0;
}

prg_result prg_linear_probe_train(float *weight, float *bias, const float *feat, const int32_t *labels, int n, int d,
                                  int classes, const prg_linear_probe_config *cfg, double *loss) {
    static const char who[] = "prg_linear_probe_train";
    prg_adam_config acfg;
    prg_adam *opt = NULL;
    prg_cosine_schedule sched;
    prg_rng rng;
    size_t np, i;
    float *blk, *w, *g, *mean, *scale, *xb, *lg, *dl;
    int *perm, *yb, bs, spe, e, s, a, c;
    int64_t u = 0;
    double esum = 0.0;
    prg_result r = PRG_OK;
    if (!weight || !bias || !feat || !labels || !cfg || n < 1 || d < 1 || classes < 1)
        return prg__fail(PRG_ERR_ARG, "%s: need weight, bias, feat, labels, cfg, n, d and classes >= 1 (n %d, d %d, "
                         "classes %d)", who, n, d, classes);
    if (cfg->epochs < 1 || cfg->batch < 1 || !(cfg->lr > 0.0) || !isfinite(cfg->lr) || !(cfg->weight_decay >= 0.0) ||
        !isfinite(cfg->weight_decay))
        return prg__fail(PRG_ERR_ARG, "%s: need epochs >= 1, batch >= 1, lr > 0 and weight_decay >= 0 (epochs %d, "
                         "batch %d, lr %g, weight decay %g)", who, cfg->epochs, cfg->batch, cfg->lr, cfg->weight_decay);
    if ((r = prg__check_labels(labels, n, classes, who)) != PRG_OK) return r;
    if ((r = prg__check_finite(feat, (size_t)n * d, "linear probe features")) != PRG_OK) return r;
    bs = cfg->batch < n ? cfg->batch : n;
    spe = (n + bs - 1) / bs;
    np = (size_t)classes * d + classes;
    blk = (float *)prg_alloc((2 * np + 2 * (size_t)d + (size_t)bs * d + 2 * (size_t)bs * classes) * sizeof(float));
    perm = (int *)prg_alloc(((size_t)n + bs) * sizeof(int));
    prg_adam_config_default(&acfg);
    acfg.decoupled = 1;
    acfg.weight_decay = cfg->weight_decay;
    if (!blk || !perm || prg_adam_create(&opt, np, &acfg) != PRG_OK) {
        prg_free(blk);
        prg_free(perm);
        prg_adam_free(opt);
        return prg__fail(PRG_ERR_NOMEM, "%s: no memory for a %d x %d probe and a batch of %d", who, classes, d, bs);
    }
    w = blk;
    g = w + np;
    mean = g + np;
    scale = mean + d;
    xb = scale + d;
    lg = xb + (size_t)bs * d;
    dl = lg + (size_t)bs * classes;
    yb = perm + n;
    memset(w, 0, np * sizeof(float));
    for (c = 0; c < d; c++) {
        double m = 0.0, v = 0.0;
        if (cfg->standardize) {
            for (a = 0; a < n; a++) m += feat[(size_t)a * d + c];
            m /= n;
            for (a = 0; a < n; a++) {
                double t = feat[(size_t)a * d + c] - m;
                v += t * t;
            }
            v /= n;
        }
        mean[c] = (float)m;
        scale[c] = cfg->standardize ? (float)(1.0 / sqrt(v + 1e-5)) : 1.0f;
    }
    sched.base_lr = cfg->lr;
    sched.warmup_lr = sched.min_lr = 0.0;
    sched.warmup_steps = 0;
    sched.total_steps = (int64_t)cfg->epochs * spe;
    prg_rng_seed(&rng, cfg->seed, 0x70726f6265ull /* "probe" */);
    for (a = 0; a < n; a++) perm[a] = a;
    for (e = 0; e < cfg->epochs && r == PRG_OK; e++) {
        esum = 0.0;
        if (bs < n)
            for (a = n - 1; a > 0; a--) {
                int b = (int)prg_rng_below(&rng, (uint32_t)(a + 1)), t = perm[a];
                perm[a] = perm[b];
                perm[b] = t;
            }
        for (s = 0; s < spe; s++, u++) {
            int cnt = n - s * bs < bs ? n - s * bs : bs;
            float l;
            for (a = 0; a < cnt; a++) {
                const float *src = feat + (size_t)perm[s * bs + a] * d;
                float *dst = xb + (size_t)a * d;
                for (c = 0; c < d; c++) dst[c] = (src[c] - mean[c]) * scale[c];
                yb[a] = labels[perm[s * bs + a]];
            }
            prg_linear_forward(lg, xb, w, w + (size_t)classes * d, cnt, d, classes);
            l = prg_cross_entropy_forward_backward(dl, lg, yb, cnt, classes, 0.0f);
            if (!isfinite(l)) {
                r = prg__fail(PRG_ERR_NUMERIC, "%s: the loss is %g at epoch %d step %d (lower the lr)", who, (double)l,
                              e, s);
                break;
            }
            esum += (double)l * cnt;
            memset(g, 0, np * sizeof(float));
            prg_linear_backward(NULL, g, g + (size_t)classes * d, dl, xb, w, cnt, d, classes);
            if ((r = prg_adam_step(opt, w, g, prg_cosine_schedule_lr(&sched, u), NULL)) != PRG_OK) break;
        }
    }
    if (r == PRG_OK) {
        /* fold the standardisation: W' = W diag(scale), b' = b - W' mean */
        for (c = 0; c < classes; c++) {
            double bb = w[(size_t)classes * d + c];
            for (i = 0; i < (size_t)d; i++) {
                float wc = w[(size_t)c * d + i] * scale[i];
                weight[(size_t)c * d + i] = wc;
                bb -= (double)wc * mean[i];
            }
            bias[c] = (float)bb;
        }
        if (loss) *loss = esum / n;
    }
    prg_adam_free(opt);
    prg_free(blk);
    prg_free(perm);
    return r;
}

prg_result prg_linear_probe_predict(int32_t *pred, float *logits, const float *weight, const float *bias,
                                    const float *feat, int m, int d, int classes) {
    enum { ROWS = 256 };
    float *buf;
    int r0, i, c;
    if (!pred || !weight || !bias || !feat || m < 0 || d < 1 || classes < 1)
        return prg__fail(PRG_ERR_ARG, "prg_linear_probe_predict: need pred, weight, bias, feat, m >= 0, d and classes "
                         ">= 1 (m %d, d %d, classes %d)", m, d, classes);
    buf = logits ? NULL : (float *)prg_alloc((size_t)ROWS * classes * sizeof(float));
    if (!logits && !buf) return prg__fail(PRG_ERR_NOMEM, "prg_linear_probe_predict: out of memory");
    for (r0 = 0; r0 < m; r0 += ROWS) {
        int q = m - r0 < ROWS ? m - r0 : ROWS;
        float *lg = logits ? logits + (size_t)r0 * classes : buf;
        prg_linear_forward(lg, feat + (size_t)r0 * d, weight, bias, q, d, classes);
        for (i = 0; i < q; i++) {
            const float *l = lg + (size_t)i * classes;
            int best = 0;
            for (c = 1; c < classes; c++)
                if (l[c] > l[best]) best = c;
            pred[r0 + i] = best;
        }
    }
    prg_free(buf);
    return PRG_OK;
}

/* >>optim =============================================================== */

/* The gradient norm is reduced over chunks of this many elements, a size
   that does not depend on the thread count. */
#define PRG__ADAM_CHUNK 16384

struct prg_adam {
    prg_adam_config cfg;
    size_t n, npad;      /* npad: n rounded up to 16, so exp_avg_sq is aligned too */
    int64_t step;
    float *moments;      /* [2][npad]: exp_avg, exp_avg_sq */
    double *partial;     /* [nchunks] */
    size_t nchunks;
};

void prg_adam_config_default(prg_adam_config *cfg) {
    cfg->beta1 = 0.9;
    cfg->beta2 = 0.999;
    cfg->eps = 1e-8;
    cfg->weight_decay = 0.0;
    cfg->decoupled = 0;
}

prg_result prg_adam_create(prg_adam **opt, size_t n, const prg_adam_config *cfg) {
    prg_adam *o;
    if (!opt || !cfg) return prg__fail(PRG_ERR_ARG, "prg_adam_create: opt and cfg must not be NULL");
    *opt = NULL;
    if (n == 0) return prg__fail(PRG_ERR_ARG, "prg_adam_create: no parameters (n = 0)");
    if (!(cfg->beta1 >= 0.0 && cfg->beta1 < 1.0 && cfg->beta2 >= 0.0 && cfg->beta2 < 1.0))
        return prg__fail(PRG_ERR_CONFIG, "prg_adam_create: betas (%g, %g) must lie in [0, 1)",
                         cfg->beta1, cfg->beta2);
    if (!(cfg->eps >= 0.0) || !(cfg->weight_decay >= 0.0))
        return prg__fail(PRG_ERR_CONFIG, "prg_adam_create: eps (%g) and weight_decay (%g) must be >= 0",
                         cfg->eps, cfg->weight_decay);
    if (n > (SIZE_MAX / sizeof(float) - 32) / 2)
        return prg__fail(PRG_ERR_ARG, "prg_adam_create: n = %zu is too large", n);
    o = (prg_adam *)prg_alloc(sizeof *o);
    if (!o) return prg__fail(PRG_ERR_NOMEM, "prg_adam_create: out of memory");
    o->cfg = *cfg;
    o->n = n;
    o->npad = (n + 15) & ~(size_t)15;
    o->step = 0;
    o->nchunks = (n + PRG__ADAM_CHUNK - 1) / PRG__ADAM_CHUNK;
    o->moments = (float *)prg_alloc(2 * o->npad * sizeof(float));
    o->partial = (double *)prg_alloc(o->nchunks * sizeof(double));
    if (!o->moments || !o->partial) {
        prg_adam_free(o);
        return prg__fail(PRG_ERR_NOMEM, "prg_adam_create: cannot allocate moments for %zu parameters", n);
    }
    memset(o->moments, 0, 2 * o->npad * sizeof(float));
    *opt = o;
    return PRG_OK;
}

void prg_adam_free(prg_adam *opt) {
    if (!opt) return;
    prg_free(opt->moments);
    prg_free(opt->partial);
    prg_free(opt);
}

size_t prg_adam_num_params(const prg_adam *opt) { return opt->n; }
int64_t prg_adam_step_count(const prg_adam *opt) { return opt->step; }
void prg_adam_set_step_count(prg_adam *opt, int64_t step) { opt->step = step; }
float *prg_adam_exp_avg(prg_adam *opt) { return opt->moments; }
float *prg_adam_exp_avg_sq(prg_adam *opt) { return opt->moments + opt->npad; }
const prg_adam_config *prg_adam_config_get(const prg_adam *opt) { return &opt->cfg; }

typedef struct prg__adam_job {
    prg_adam *o;
    int nblocks;
    float *const *params;
    const float *const *grads;
    const size_t *sizes;
    /* float32 scalars, rounded from double where torch rounds them */
    float beta1, one_minus_beta1, beta2, one_minus_beta2, eps, decay_mul, l2, neg_step_size,
        bc2_sqrt;
} prg__adam_job;

/* Calls the element range [lo, hi) of the concatenated blocks piece by
   piece: fn(job, block, first element in block, count, global offset). */
typedef void (*prg__adam_piece_fn)(prg__adam_job *j, int b, size_t i0, size_t cnt, size_t g0);

static void prg__adam_pieces(prg__adam_job *j, size_t lo, size_t hi, prg__adam_piece_fn fn) {
    size_t off = 0;
    int b;
    for (b = 0; b < j->nblocks && off < hi; b++) {
        size_t end = off + j->sizes[b];
        size_t s = lo > off ? lo : off, e = hi < end ? hi : end;
        if (s < e) fn(j, b, s - off, e - s, s);
        off = end;
    }
}

static void prg__adam_sumsq_piece(prg__adam_job *j, int b, size_t i0, size_t cnt, size_t g0) {
    const float *g = j->grads[b] + i0;
    double s = j->o->partial[g0 / PRG__ADAM_CHUNK]; /* one running sum per chunk, across blocks */
    size_t i;
    for (i = 0; i < cnt; i++) s += (double)g[i] * g[i];
    j->o->partial[g0 / PRG__ADAM_CHUNK] = s;
}

static void prg__adam_norm_task(void *ctx, int ith, int nth) {
    prg__adam_job *j = (prg__adam_job *)ctx;
    size_t lo, hi, c;
    prg_split_range(j->o->nchunks, 1, ith, nth, &lo, &hi);
    for (c = lo; c < hi; c++) {
        size_t e = (c + 1) * PRG__ADAM_CHUNK;
        j->o->partial[c] = 0.0;
        prg__adam_pieces(j, c * PRG__ADAM_CHUNK, e < j->o->n ? e : j->o->n, prg__adam_sumsq_piece);
    }
}

/* One element of the update, with torch's roundings: its add-with-alpha and
   addcmul on CPU are fused multiply-adds (checked against torch 1.13). */
#define PRG__ADAM_ELEMENT(FMA)                                                \
    for (i = 0; i < cnt; i++) {                                               \
        float gi = g[i], pi = p[i], mi, vi, denom;                            \
        if (l2 != 0.0f) gi = FMA(pi, l2, gi);                                 \
        pi = pi * dm;                                                         \
        mi = FMA(gi, c1, m[i] * b1);                                          \
        vi = FMA(c2 * gi, gi, v[i] * b2);                                     \
        denom = sqrtf(vi) / bc;                                               \
        denom = denom + eps;                                                  \
        m[i] = mi;                                                            \
        v[i] = vi;                                                            \
        p[i] = pi + ns * mi / denom;                                          \
    }

#define PRG__ADAM_PIECE_ARGS                                                  \
    float *PRG_RESTRICT p = j->params[b] + i0;                                \
    const float *PRG_RESTRICT g = j->grads[b] + i0;                           \
    float *PRG_RESTRICT m = j->o->moments + g0;                               \
    float *PRG_RESTRICT v = j->o->moments + j->o->npad + g0;                  \
    const float b1 = j->beta1, c1 = j->one_minus_beta1, b2 = j->beta2;        \
    const float c2 = j->one_minus_beta2, eps = j->eps, dm = j->decay_mul;     \
    const float l2 = j->l2, ns = j->neg_step_size, bc = j->bc2_sqrt;          \
    size_t i;

static void prg__adam_update_piece(prg__adam_job *j, int b, size_t i0, size_t cnt, size_t g0) {
    PRG__ADAM_PIECE_ARGS
    PRG__ADAM_ELEMENT(fmaf)
}

#ifdef PRG__X86
/* The same with the FMA instruction inline (fmaf is a libm call otherwise). */
__attribute__((target("fma")))
static void prg__adam_update_piece_fma(prg__adam_job *j, int b, size_t i0, size_t cnt, size_t g0) {
    PRG__ADAM_PIECE_ARGS
    PRG__ADAM_ELEMENT(__builtin_fmaf)
}
#endif

static void prg__adam_update_task(void *ctx, int ith, int nth) {
    prg__adam_job *j = (prg__adam_job *)ctx;
    size_t lo, hi;
    prg__adam_piece_fn fn = prg__adam_update_piece;
#ifdef PRG__X86
    if (__builtin_cpu_supports("fma")) fn = prg__adam_update_piece_fma;
#endif
    prg_split_range(j->o->n, 16, ith, nth, &lo, &hi);
    if (lo < hi) prg__adam_pieces(j, lo, hi, fn);
}

prg_result prg_adam_step_blocks(prg_adam *opt, int nblocks, float *const *params,
                                const float *const *grads, const size_t *sizes, double lr,
                                double *grad_norm) {
    prg__adam_job j;
    const prg_adam_config *c = &opt->cfg;
    double sumsq = 0.0, step, bc1, bc2;
    size_t total = 0, k;
    int b;
    if (grad_norm) *grad_norm = 0.0;
    for (b = 0; b < nblocks; b++) total += sizes[b];
    if (nblocks < 1 || total != opt->n)
        return prg__fail(PRG_ERR_ARG, "prg_adam_step: %d blocks of %zu parameters in all, the optimizer "
                         "was created for %zu", nblocks, total, opt->n);
    if (!(lr >= 0.0) || lr > 1e30)
        return prg__fail(PRG_ERR_ARG, "prg_adam_step: learning rate %g is not a finite value >= 0", lr);
    j.o = opt;
    j.nblocks = nblocks;
    j.params = params;
    j.grads = grads;
    j.sizes = sizes;
    /* small blocks run on the caller: a pool wake-up would cost more */
    if (opt->n < PRG__ADAM_CHUNK) prg__adam_norm_task(&j, 0, 1);
    else prg_parallel(prg__adam_norm_task, &j);
    for (k = 0; k < opt->nchunks; k++) sumsq += opt->partial[k];
    if (grad_norm) *grad_norm = sqrt(sumsq);
    if (!isfinite(sumsq)) /* finite floats cannot overflow a double sum of squares */
        return prg__fail(PRG_ERR_NUMERIC, "prg_adam_step: the gradient holds NaN or infinity (step %lld "
                         "skipped, weights and moments unchanged); lower the learning rate or check "
                         "the loss", (long long)opt->step + 1);
    step = (double)(opt->step + 1);
    bc1 = 1.0 - pow(c->beta1, step);
    bc2 = 1.0 - pow(c->beta2, step);
    j.beta1 = (float)c->beta1;
    j.one_minus_beta1 = (float)(1.0 - c->beta1);
    j.beta2 = (float)c->beta2;
    j.one_minus_beta2 = (float)(1.0 - c->beta2);
    j.eps = (float)c->eps;
    j.decay_mul = c->decoupled ? (float)(1.0 - lr * c->weight_decay) : 1.0f;
    j.l2 = c->decoupled ? 0.0f : (float)c->weight_decay;
    j.neg_step_size = (float)(-(lr / bc1));
    j.bc2_sqrt = (float)sqrt(bc2);
    if (opt->n < PRG__ADAM_CHUNK) prg__adam_update_task(&j, 0, 1);
    else prg_parallel(prg__adam_update_task, &j);
    opt->step++;
    return PRG_OK;
}

prg_result prg_adam_step(prg_adam *opt, float *params, const float *grads, double lr,
                         double *grad_norm) {
    size_t n = opt->n;
    return prg_adam_step_blocks(opt, 1, &params, &grads, &n, lr, grad_norm);
}

prg_result prg_cosine_schedule_init(prg_cosine_schedule *s, int global_batch,
                                    int64_t iters_per_epoch, int epochs, int warmup_epochs) {
    double scale;
    if (global_batch <= 0 || iters_per_epoch <= 0 || warmup_epochs < 0 || warmup_epochs >= epochs)
        return prg__fail(PRG_ERR_CONFIG, "prg_cosine_schedule_init: need global_batch > 0 (got %d), "
                         "iters_per_epoch > 0 (got %lld) and 0 <= warmup_epochs (%d) < epochs (%d)",
                         global_batch, (long long)iters_per_epoch, warmup_epochs, epochs);
    scale = global_batch / 512.0;
    s->base_lr = 1.25e-4 * scale;
    s->warmup_lr = 1.25e-7 * scale;
    s->min_lr = 1.25e-6 * scale;
    s->warmup_steps = (int64_t)warmup_epochs * iters_per_epoch;
    s->total_steps = (int64_t)epochs * iters_per_epoch;
    return PRG_OK;
}

double prg_cosine_schedule_lr(const prg_cosine_schedule *s, int64_t t) {
    int64_t w = s->warmup_steps > 0 ? s->warmup_steps : 0, len = s->total_steps - w, u;
    if (t < w) return s->warmup_lr + (double)t * ((s->base_lr - s->warmup_lr) / (double)w);
    u = t - w;
    if (len <= 0 || u >= len) return s->min_lr;
    return s->min_lr + 0.5 * (s->base_lr - s->min_lr) *
                           (1.0 + cos(3.141592653589793 * (double)u / (double)len));
}

double prg_cosine_schedule_step_lr(const prg_cosine_schedule *s, int64_t step) {
    if (step <= 0) return s->warmup_steps > 0 ? s->warmup_lr : s->base_lr;
    return prg_cosine_schedule_lr(s, step - 1);
}

typedef struct prg__ema_job { float *ema; const float *p; size_t n; float d, c; } prg__ema_job;

static void prg__ema_task(void *ctx, int ith, int nth) {
    prg__ema_job *j = (prg__ema_job *)ctx;
    size_t lo, hi, i;
    prg_split_range(j->n, 16, ith, nth, &lo, &hi);
    for (i = lo; i < hi; i++) {
        float e = j->ema[i] * j->d;
        j->ema[i] = e + j->c * j->p[i];
    }
}

void prg_ema_update(float *ema, const float *params, size_t n, double decay) {
    prg__ema_job j;
    j.ema = ema;
    j.p = params;
    j.n = n;
    j.d = (float)decay;
    j.c = (float)(1.0 - decay);
    if (n < PRG__ADAM_CHUNK) prg__ema_task(&j, 0, 1);
    else prg_parallel(prg__ema_task, &j);
}

/* >>io ================================================================== */

#include <errno.h>
#include <limits.h>
#include <time.h>
/* POSIX files: exclusive creation, fsync and stat for the writers and readers */
#if defined(__unix__) || defined(__unix) || (defined(__APPLE__) && defined(__MACH__))
#define PRG__POSIX_IO 1
#include <sys/types.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>
#endif

/* ---- bytes, checksums, element types -------------------------------- */

static uint32_t prg__rd16le(const uint8_t *p) { return (uint32_t)p[0] | ((uint32_t)p[1] << 8); }
static uint32_t prg__rd32le(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t prg__rd64le(const uint8_t *p) { return prg__rd32le(p) | ((uint64_t)prg__rd32le(p + 4) << 32); }
static uint32_t prg__rd32be(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}
static void prg__wr16le(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void prg__wr32le(uint8_t *p, uint32_t v) { prg__wr16le(p, v); prg__wr16le(p + 2, v >> 16); }
static void prg__wr64le(uint8_t *p, uint64_t v) { prg__wr32le(p, (uint32_t)v); prg__wr32le(p + 4, (uint32_t)(v >> 32)); }
static void prg__wr32be(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static int prg__host_le(void) {
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}
static void prg__bswap(void *data, size_t elem, size_t n) {
    uint8_t *p = (uint8_t *)data, t;
    size_t i, k;
    if (elem < 2) return;
    for (i = 0; i < n; i++, p += elem)
        for (k = 0; k < elem / 2; k++) { t = p[k]; p[k] = p[elem - 1 - k]; p[elem - 1 - k] = t; }
}

uint32_t prg_crc32(uint32_t crc, const void *data, size_t n) {
    static const uint32_t t[16] = {0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u,
                                   0x4DB26158u, 0x5005713Cu, 0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu,
                                   0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu};
    const uint8_t *p = (const uint8_t *)data;
    size_t i;
    crc = ~crc;
    if (n >= 4096) { /* slicing-by-8 with tables built here (no shared state): ~10x faster */
        uint32_t s[8][256], a, b;
        int j, k;
        for (j = 0; j < 256; j++) {
            uint32_t c = (uint32_t)j;
            c = (c >> 4) ^ t[c & 15];
            s[0][j] = (c >> 4) ^ t[c & 15];
        }
        for (k = 1; k < 8; k++)
            for (j = 0; j < 256; j++) s[k][j] = (s[k - 1][j] >> 8) ^ s[0][s[k - 1][j] & 255];
        for (; n >= 8; n -= 8, p += 8) {
            a = crc ^ prg__rd32le(p);
            b = prg__rd32le(p + 4);
            crc = s[7][a & 255] ^ s[6][(a >> 8) & 255] ^ s[5][(a >> 16) & 255] ^ s[4][a >> 24] ^ s[3][b & 255] ^
                  s[2][(b >> 8) & 255] ^ s[1][(b >> 16) & 255] ^ s[0][b >> 24];
        }
    }
    for (i = 0; i < n; i++) {
        crc ^= p[i];
        crc = (crc >> 4) ^ t[crc & 15];
        crc = (crc >> 4) ^ t[crc & 15];
    }
    return ~crc;
}

uint32_t prg_adler32(uint32_t adler, const void *data, size_t n) {
    const uint8_t *p = (const uint8_t *)data;
    uint32_t a = adler & 0xffff, b = adler >> 16;
    while (n > 0) {
        size_t k = n < 5552 ? n : 5552; /* largest run without 32-bit overflow */
        n -= k;
        while (k--) { a += *p++; b += a; }
        a %= 65521u;
        b %= 65521u;
    }
    return (b << 16) | a;
}

static const uint8_t prg__dtype_sizes[PRG_DT_COUNT] = {4, 2, 2, 8, 1, 1, 2, 2, 4, 4, 8, 8, 1};
static const char *const prg__dtype_names[PRG_DT_COUNT] = {"F32", "F16", "BF16", "F64", "U8", "I8", "U16",
                                                           "I16", "U32", "I32", "U64", "I64", "BOOL"};

size_t prg_dtype_bytes(prg_dtype t) { return (unsigned)t < PRG_DT_COUNT ? prg__dtype_sizes[t] : 0; }
const char *prg_dtype_name(prg_dtype t) { return (unsigned)t < PRG_DT_COUNT ? prg__dtype_names[t] : "?"; }

static float prg__f16_to_f32(uint16_t h) {
    uint32_t s = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 31, m = h & 1023, bits;
    float f;
    if (e == 31) bits = s | 0x7f800000u | (m << 13);      /* inf / nan */
    else if (e) bits = s | ((e + 112) << 23) | (m << 13); /* normal */
    else if (!m) bits = s;                                 /* zero */
    else {                                                 /* subnormal: m * 2^-24 */
        f = (float)m * (1.0f / 16777216.0f);
        return s ? -f : f;
    }
    memcpy(&f, &bits, 4);
    return f;
}

/* Reads an integer element of an integer array as int64 (0 for float types). */
static int64_t prg__int_at(const void *data, prg_dtype t, size_t i) {
    const uint8_t *p = (const uint8_t *)data;
    uint16_t u16;
    uint32_t u32;
    uint64_t u64;
    int16_t i16;
    int32_t i32;
    int64_t i64;
    switch (t) {
    case PRG_DT_U8: case PRG_DT_BOOL: return p[i];
    case PRG_DT_I8: return (int8_t)p[i];
    case PRG_DT_U16: memcpy(&u16, p + 2 * i, 2); return u16;
    case PRG_DT_I16: memcpy(&i16, p + 2 * i, 2); return i16;
    case PRG_DT_U32: memcpy(&u32, p + 4 * i, 4); return u32;
    case PRG_DT_I32: memcpy(&i32, p + 4 * i, 4); return i32;
    case PRG_DT_U64: memcpy(&u64, p + 8 * i, 8); return u64 > (uint64_t)INT64_MAX ? -1 : (int64_t)u64;
    case PRG_DT_I64: memcpy(&i64, p + 8 * i, 8); return i64;
    default: return 0;
    }
}
void prg_convert_to_f32(float *dst, const void *src, prg_dtype t, size_t n) {
    const uint8_t *p = (const uint8_t *)src;
    size_t i;
    uint16_t u16;
    uint32_t u32;
    uint64_t u64;
    double d;
    for (i = 0; i < n; i++) {
        switch (t) {
        case PRG_DT_F32: memcpy(&dst[i], p + 4 * i, 4); break;
        case PRG_DT_F16: memcpy(&u16, p + 2 * i, 2); dst[i] = prg__f16_to_f32(u16); break;
        case PRG_DT_BF16:
            memcpy(&u16, p + 2 * i, 2);
            u32 = (uint32_t)u16 << 16;
            memcpy(&dst[i], &u32, 4);
            break;
        case PRG_DT_F64: memcpy(&d, p + 8 * i, 8); dst[i] = (float)d; break;
        case PRG_DT_U64: memcpy(&u64, p + 8 * i, 8); dst[i] = (float)u64; break;
        default: dst[i] = (float)prg__int_at(src, t, i); break;
        }
    }
}

static int prg__dtype_is_int(prg_dtype t) { return t >= PRG_DT_U8 && t <= PRG_DT_I64; }

/* Element count of a shape; 0 on overflow past limit (count 0 is reported
   through *zero so an empty tensor is not mistaken for an overflow). */
static int prg__shape_count(const int64_t *shape, int ndim, uint64_t limit, uint64_t *count) {
    uint64_t c = 1;
    int i;
    for (i = 0; i < ndim; i++) {
        if (shape[i] < 0) return -1;
        if (shape[i] == 0) c = 0;
    }
    if (c == 0) { *count = 0; return 0; }
    for (i = 0; i < ndim; i++) {
        if ((uint64_t)shape[i] > limit / c) return -1;
        c *= (uint64_t)shape[i];
    }
    *count = c;
    return 0;
}

static void prg__shape_str(char *buf, size_t cap, const int64_t *shape, int ndim) {
    size_t len;
    int i;
    snprintf(buf, cap, "[");
    for (i = 0; i < ndim; i++) {
        len = strlen(buf);
        snprintf(buf + len, cap - len, "%s%lld", i ? ", " : "", (long long)shape[i]);
    }
    len = strlen(buf);
    snprintf(buf + len, cap - len, "]");
}

/* ---- files ----------------------------------------------------------- */

static prg_result prg__fopen_read(FILE **f, const char *path, uint64_t *size) {
    long end;
    *f = NULL;
    if (!path) return prg__fail(PRG_ERR_ARG, "file name is NULL");
#ifdef PRG__POSIX_IO
    {
        struct stat st;
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
            return prg__fail(PRG_ERR_IO, "%s: is a directory, not a file", path);
    }
#endif
    *f = fopen(path, "rb");
    if (!*f) return prg__fail(PRG_ERR_IO, "%s: cannot open for reading (check the path and permissions)", path);
    if (fseek(*f, 0, SEEK_END) != 0 || (end = ftell(*f)) < 0 || fseek(*f, 0, SEEK_SET) != 0) {
        fclose(*f);
        *f = NULL;
        return prg__fail(PRG_ERR_IO, "%s: cannot determine the file size (not a regular file?)", path);
    }
    *size = (uint64_t)end;
    return PRG_OK;
}

static prg_result prg__fread_at(FILE *f, const char *path, uint64_t off, void *dst, size_t n) {
    if (off > (uint64_t)LONG_MAX) return prg__fail(PRG_ERR_UNSUPPORTED, "%s: offset %llu too large for fseek", path, (unsigned long long)off);
    if (fseek(f, (long)off, SEEK_SET) != 0) return prg__fail(PRG_ERR_IO, "%s: cannot seek to byte %llu", path, (unsigned long long)off);
    if (n && fread(dst, 1, n, f) != n)
        return prg__fail(ferror(f) ? PRG_ERR_IO : PRG_ERR_FORMAT, "%s: truncated: cannot read %zu bytes at byte %llu", path, n,
                         (unsigned long long)off);
    return PRG_OK;
}

/* Writing through a temporary file and rename().  The temporary file lives
   in the target's directory under an unpredictable name
   ".<name>.<16 hex digits>.tmp" and is created exclusively (POSIX:
   open(O_CREAT | O_EXCL), which neither follows nor reuses anything planted
   there), written, fsync'd, renamed over the target, and the directory is
   fsync'd, so a crash or a power cut leaves either the old file or the
   complete new one.  An existing target must be a regular file (a symlink
   there is itself replaced: the file it points to is never written).
   Without POSIX (PRG__POSIX_IO undefined) the same steps run through
   fopen, with a check that the random name is free, and no fsync. */

typedef struct prg__wfile {
#ifdef PRG__POSIX_IO
    int fd;
    size_t nbuf;
    uint8_t *buf;      /* PRG__WBUF bytes gathered before each write() */
#else
    FILE *f;
#endif
    char *tmp;
    const char *path;
    int err;
} prg__wfile;
#define PRG__WBUF 65536

/* The directory part of path ("." when there is none), in a new string. */
static char *prg__dir_of(const char *path) {
    const char *s = strrchr(path, '/');
    size_t n;
    char *d;
#ifdef _WIN32
    const char *b = strrchr(path, '\\');
    if (b && (!s || b > s)) s = b;
#endif
    n = s ? (size_t)(s - path) + (s == path) : 1;
    d = (char *)PRG_MALLOC(n + 1);
    if (!d) return NULL;
    if (s) memcpy(d, path, n);
    else d[0] = '.';
    d[n] = 0;
    return d;
}

/* 64 random bits for a temporary name: /dev/urandom where it can be read,
   mixed with the time, the clock, the address of a local and a counter. */
static uint64_t prg__tmp_random(void) {
    static uint64_t counter = 0;
    uint64_t x = 0, z;
    unsigned char b[8];
    FILE *f = fopen("/dev/urandom", "rb");
    int i;
    if (f) {
        if (fread(b, 1, 8, f) == 8)
            for (i = 0; i < 8; i++) x = (x << 8) | b[i];
        fclose(f);
    }
    z = x ^ ((uint64_t)time(NULL) << 20) ^ (uint64_t)clock() ^ (uint64_t)(uintptr_t)&x ^ (++counter * 0x9E3779B97F4A7C15ull);
#ifdef PRG__POSIX_IO
    z ^= (uint64_t)getpid() << 40;
#endif
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The target must be absent or a regular file (or a symlink, replaced). */
static prg_result prg__wtarget_check(const char *path) {
    if (!path || !*path) return prg__fail(PRG_ERR_ARG, "output file name is empty");
#ifdef PRG__POSIX_IO
    {
        struct stat st;
        if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
            return prg__fail(PRG_ERR_IO, "%s: %s: refusing to replace it", path,
                             S_ISDIR(st.st_mode) ? "is a directory (not a regular file)" : "exists and is not a regular file");
    }
#endif
    return PRG_OK;
}

/* Creates the temporary file next to path; on success w->tmp is its name. */
static prg_result prg__wcreate(prg__wfile *w, const char *path) {
    const char *base = path, *s;
    char *dir;
    size_t dn, bn, cap;
    int attempt;
    s = strrchr(path, '/');
    if (s) base = s + 1;
    if (!*base) return prg__fail(PRG_ERR_ARG, "%s: output file name ends in '/' (a directory, not a file)", path);
    dir = prg__dir_of(path);
    if (!dir) return prg__fail(PRG_ERR_NOMEM, "%s: out of memory", path);
    dn = strlen(dir);
    bn = strlen(base);
    cap = dn + bn + 32;
    w->tmp = (char *)PRG_MALLOC(cap);
    if (!w->tmp) {
        PRG_FREE(dir);
        return prg__fail(PRG_ERR_NOMEM, "%s: out of memory", path);
    }
    for (attempt = 0; attempt < 64; attempt++) {
        snprintf(w->tmp, cap, "%s/.%s.%016llx.tmp", dir, base, (unsigned long long)prg__tmp_random());
#ifdef PRG__POSIX_IO
        w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_EXCL, 0666);
        if (w->fd >= 0) break;
        if (errno == EEXIST) continue;
        {
            int e = errno;
            struct stat st;
            PRG_FREE(w->tmp);
            w->tmp = NULL;
            if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
                prg__fail(PRG_ERR_IO, "%s: the directory %s does not exist (create it first)", path, dir);
            } else {
                prg__fail(PRG_ERR_IO, "%s: cannot create a file in %s (%s): check that it is writable and not on a read-only mount",
                          path, dir, e == EROFS ? "read-only file system" : e == EACCES ? "permission denied" : "open failed");
            }
            PRG_FREE(dir);
            return PRG_ERR_IO;
        }
#else
        {
            FILE *probe = fopen(w->tmp, "rb");
            if (probe) { fclose(probe); continue; }
            w->f = fopen(w->tmp, "wb");
            if (w->f) break;
            PRG_FREE(w->tmp);
            w->tmp = NULL;
            prg__fail(PRG_ERR_IO, "%s: cannot create a temporary file in %s (does the directory exist and is it writable?)", path, dir);
            PRG_FREE(dir);
            return PRG_ERR_IO;
        }
#endif
    }
    PRG_FREE(dir);
    if (attempt == 64) {
        PRG_FREE(w->tmp);
        w->tmp = NULL;
        return prg__fail(PRG_ERR_IO, "%s: cannot find a free temporary file name in its directory", path);
    }
    return PRG_OK;
}

static prg_result prg__wopen(prg__wfile *w, const char *path) {
    prg_result r;
    memset(w, 0, sizeof *w);
#ifdef PRG__POSIX_IO
    w->fd = -1;
#endif
    if ((r = prg__wtarget_check(path)) != PRG_OK) return r;
    w->path = path;
#ifdef PRG__POSIX_IO
    w->buf = (uint8_t *)PRG_MALLOC(PRG__WBUF);
    if (!w->buf) return prg__fail(PRG_ERR_NOMEM, "%s: out of memory", path);
#endif
    if ((r = prg__wcreate(w, path)) != PRG_OK) {
#ifdef PRG__POSIX_IO
        PRG_FREE(w->buf);
#endif
        memset(w, 0, sizeof *w);
        return r;
    }
    return PRG_OK;
}

#ifdef PRG__POSIX_IO
static void prg__wflush(prg__wfile *w) {
    size_t off = 0;
    while (!w->err && off < w->nbuf) {
        ssize_t k = write(w->fd, w->buf + off, w->nbuf - off);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) w->err = 1;
        else off += (size_t)k;
    }
    w->nbuf = 0;
}
#endif

static void prg__wwrite(prg__wfile *w, const void *p, size_t n) {
#ifdef PRG__POSIX_IO
    const uint8_t *q = (const uint8_t *)p;
    while (!w->err && n) {
        size_t k = PRG__WBUF - w->nbuf < n ? PRG__WBUF - w->nbuf : n;
        memcpy(w->buf + w->nbuf, q, k);
        w->nbuf += k;
        q += k;
        n -= k;
        if (w->nbuf == PRG__WBUF) prg__wflush(w);
    }
#else
    if (!w->err && n && fwrite(p, 1, n, w->f) != n) w->err = 1;
#endif
}

static void prg__wabort(prg__wfile *w) {
#ifdef PRG__POSIX_IO
    if (w->fd >= 0) close(w->fd);
    PRG_FREE(w->buf);
#else
    if (w->f) fclose(w->f);
#endif
    if (w->tmp) {
        remove(w->tmp);
        PRG_FREE(w->tmp);
    }
    memset(w, 0, sizeof *w);
#ifdef PRG__POSIX_IO
    w->fd = -1;
#endif
}

static prg_result prg__wclose(prg__wfile *w) {
    const char *path = w->path;
    int bad = w->err;
    prg_result r;
#ifdef PRG__POSIX_IO
    prg__wflush(w);
    bad |= w->err;
    if (!bad && fsync(w->fd) != 0 && errno != EINVAL) bad = 1; /* EINVAL: a file system without fsync */
    if (close(w->fd) != 0) bad = 1;
    w->fd = -1;
#else
    if (fflush(w->f) != 0) bad = 1;
    if (fclose(w->f) != 0) bad = 1;
    w->f = NULL;
#endif
    if (bad) {
        prg__wabort(w);
        return prg__fail(PRG_ERR_IO, "%s: writing failed (disk full?); the previous file, if any, is unchanged", path);
    }
    /* a directory (or other non-file) made at path while we wrote */
    if ((r = prg__wtarget_check(path)) != PRG_OK) {
        prg__wabort(w);
        return r;
    }
#ifdef _WIN32
    remove(path); /* rename() does not replace on Windows */
#endif
    if (rename(w->tmp, path) != 0) {
        prg__wabort(w);
        return prg__fail(PRG_ERR_IO, "%s: cannot rename the temporary file into place", path);
    }
#ifdef PRG__POSIX_IO
    { /* make the rename itself durable */
        char *dir = prg__dir_of(path);
        int dfd = dir ? open(dir, O_RDONLY) : -1;
        if (dfd >= 0) {
            fsync(dfd); /* some file systems refuse a directory fsync: the data is already safe */
            close(dfd);
        }
        PRG_FREE(dir);
    }
    PRG_FREE(w->buf);
#endif
    PRG_FREE(w->tmp);
    memset(w, 0, sizeof *w);
    return PRG_OK;
}

prg_result prg_check_writable(const char *path) {
    prg__wfile w;
    prg_result r = prg__wopen(&w, path);
    if (r != PRG_OK) return r;
    prg__wabort(&w);
    return PRG_OK;
}

prg_result prg_file_write(const char *path, const void *data, size_t len) {
    prg__wfile w;
    prg_result r;
    if (!data && len) return prg__fail(PRG_ERR_ARG, "prg_file_write: NULL data");
    if ((r = prg__wopen(&w, path)) != PRG_OK) return r;
    prg__wwrite(&w, data, len);
    return prg__wclose(&w);
}

/* ---- inflate (RFC 1951) ---------------------------------------------- */

static const uint16_t prg__len_base[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                           31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
static const uint8_t prg__len_extra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
static const uint16_t prg__dist_base[30] = {1,   2,   3,   4,   5,   7,    9,    13,   17,   25,   33,   49,   65,    97,    129,
                                            193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
static const uint8_t prg__dist_extra[30] = {0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

typedef struct prg__bits { const uint8_t *p; size_t n, pos; uint64_t buf; int cnt; } prg__bits;

/* Past the end the reader feeds zeros; prg__bits_over() tells when those were used. */
static void prg__bits_fill(prg__bits *b) {
    if (b->cnt > 56) return;
    if (b->pos <= b->n && b->n - b->pos >= 8) {
        /* whole word: the bits above cnt may hold the next input bytes, which
           a later refill ORs in again at the same place (libdeflate's trick) */
        b->buf |= prg__rd64le(b->p + b->pos) << b->cnt;
        b->pos += (size_t)((63 - b->cnt) >> 3);
        b->cnt |= 56;
        return;
    }
    while (b->cnt <= 56) {
        uint64_t v = b->pos < b->n ? b->p[b->pos] : 0;
        b->pos++;
        b->buf |= v << b->cnt;
        b->cnt += 8;
    }
}
static uint32_t prg__bits_get(prg__bits *b, int k) {
    uint32_t v;
    prg__bits_fill(b);
    v = (uint32_t)(b->buf & ((1u << k) - 1u));
    b->buf >>= k;
    b->cnt -= k;
    return v;
}
static size_t prg__bits_used(const prg__bits *b) { return b->pos * 8 - (size_t)b->cnt; } /* in bits */
static int prg__bits_over(const prg__bits *b) { return prg__bits_used(b) > b->n * 8; }

#define PRG__FAST 10
typedef struct prg__huff {
    uint16_t fast[1 << PRG__FAST]; /* symbol << 4 | length for codes up to PRG__FAST bits, 0: longer */
    uint16_t count[16];            /* codes per length */
    uint16_t symbol[288];          /* symbols ordered by code */
} prg__huff;

/* Canonical Huffman code from lengths; -1 if over-subscribed or incomplete
   (an incomplete code is allowed only as a single 1-bit code, or none). */
static int prg__huff_build(prg__huff *h, const uint8_t *len, int n, int need_complete) {
    uint16_t offs[16], next[16];
    int i, j, left = 1, used = 0;
    unsigned code = 0;
    memset(h->count, 0, sizeof h->count);
    memset(h->fast, 0, sizeof h->fast);
    for (i = 0; i < n; i++) h->count[len[i]]++;
    for (i = 1; i < 16; i++) {
        left = (left << 1) - h->count[i];
        if (left < 0) return -1;
        used += h->count[i];
    }
    if (left > 0 && (need_complete || !(used == 0 || (used == 1 && h->count[1] == 1)))) return -1;
    offs[1] = 0;
    for (i = 1; i < 15; i++) offs[i + 1] = (uint16_t)(offs[i] + h->count[i]);
    for (i = 0; i < n; i++)
        if (len[i]) h->symbol[offs[len[i]]++] = (uint16_t)i;
    for (i = 1; i < 16; i++) {
        code = (code + (i > 1 ? h->count[i - 1] : 0)) << 1;
        next[i] = (uint16_t)code;
    }
    for (i = 0; i < n; i++) {
        int l = len[i];
        unsigned c, r = 0;
        if (!l) continue;
        c = next[l]++;
        if (l > PRG__FAST) continue;
        for (j = 0; j < l; j++) { r = (r << 1) | (c & 1); c >>= 1; }
        for (j = (int)r; j < (1 << PRG__FAST); j += 1 << l) h->fast[j] = (uint16_t)(i << 4 | l);
    }
    return 0;
}

static int prg__huff_decode(prg__bits *b, const prg__huff *h) {
    unsigned e;
    int len, code = 0, first = 0, index = 0, count;
    prg__bits_fill(b);
    e = h->fast[b->buf & ((1u << PRG__FAST) - 1u)];
    if (e) {
        b->buf >>= (e & 15);
        b->cnt -= (int)(e & 15);
        return (int)(e >> 4);
    }
    for (len = 1; len < 16; len++) { /* bit by bit, canonical order */
        code |= (int)(b->buf & 1);
        b->buf >>= 1;
        b->cnt--;
        count = h->count[len];
        if (code - count < first) return h->symbol[index + (code - first)];
        index += count;
        first = (first + count) << 1;
        code <<= 1;
    }
    return -1;
}

/* Output buffer: fixed (grow == 0) or growing up to max.  clip = 1: output
   past max is dropped and decoding stops there with full = 1 (a prefix
   read), instead of an error. */
typedef struct prg__obuf { uint8_t *p; size_t len, cap, max; int grow, clip, full; } prg__obuf;

static int prg__obuf_reserve(prg__obuf *o, size_t extra) {
    size_t need, ncap;
    uint8_t *np;
    if (o->cap - o->len >= extra) return 0;
    if (!o->grow || extra > o->max - o->len) return -1;
    need = o->len + extra;
    ncap = o->cap ? o->cap : 65536;
    while (ncap < need) ncap = ncap > o->max / 2 ? o->max : ncap * 2;
    if (ncap > o->max) ncap = o->max;
    np = (uint8_t *)prg_alloc(ncap);
    if (!np) return -2;
    if (o->len) memcpy(np, o->p, o->len);
    prg_free(o->p);
    o->p = np;
    o->cap = ncap;
    return 0;
}

/* Inflates one raw deflate stream from src[0..n) appending to o.  what and
   base name the source in messages (base = file offset of src[0]). */
static prg_result prg__inflate_raw(const uint8_t *src, size_t n, size_t *used, prg__obuf *o, const char *what, uint64_t base) {
    static const uint8_t order[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
    prg__bits b;
    prg__huff lit, dist;
    uint8_t lens[288 + 32];
    size_t start = o->len;
    int final, type, i, sym, rc;
    const char *err = NULL;
    b.p = src;
    b.n = n;
    b.pos = 0;
    b.buf = 0;
    b.cnt = 0;
    do {
        final = (int)prg__bits_get(&b, 1);
        type = (int)prg__bits_get(&b, 2);
        if (type == 0) {
            size_t p, len;
            b.buf >>= (b.cnt & 7); /* to a byte boundary, then give back the buffered bytes */
            b.cnt -= b.cnt & 7;
            p = b.pos - (size_t)(b.cnt / 8);
            b.buf = 0;
            b.cnt = 0;
            if (p > n || n - p < 4) { err = "truncated stored block header"; goto fail_at_end; }
            len = prg__rd16le(src + p);
            if (len != (~prg__rd16le(src + p + 2) & 0xffffu)) { b.pos = p; err = "stored block length check (NLEN) failed"; goto fail; }
            p += 4;
            if (len > n - p) { err = "truncated stored block"; goto fail_at_end; }
            rc = prg__obuf_reserve(o, len);
            if (rc == -1 && o->clip) {
                size_t room = o->max - o->len;
                if (room && prg__obuf_reserve(o, room) == 0) {
                    memcpy(o->p + o->len, src + p, room);
                    o->len += room;
                }
                goto clipped;
            }
            if (rc) goto fail_out;
            if (len) memcpy(o->p + o->len, src + p, len); /* o->p may still be NULL for an empty block */
            o->len += len;
            b.pos = p + len;
            continue;
        } else if (type == 1) {
            for (i = 0; i < 144; i++) lens[i] = 8;
            for (; i < 256; i++) lens[i] = 9;
            for (; i < 280; i++) lens[i] = 7;
            for (; i < 288; i++) lens[i] = 8;
            for (i = 0; i < 32; i++) lens[288 + i] = 5;
            prg__huff_build(&lit, lens, 288, 0);
            prg__huff_build(&dist, lens + 288, 32, 0);
        } else if (type == 2) {
            int hlit = (int)prg__bits_get(&b, 5) + 257, hdist = (int)prg__bits_get(&b, 5) + 1;
            int hclen = (int)prg__bits_get(&b, 4) + 4, total;
            if (hlit > 286 || hdist > 30) { err = "dynamic block with too many length or distance codes"; goto fail; }
            memset(lens, 0, 19);
            for (i = 0; i < hclen; i++) lens[order[i]] = (uint8_t)prg__bits_get(&b, 3);
            if (prg__bits_over(&b)) { err = "truncated block header"; goto fail_at_end; }
            if (prg__huff_build(&lit, lens, 19, 1)) { err = "invalid code-length code"; goto fail; }
            total = hlit + hdist;
            i = 0;
            while (i < total) {
                int rep, val = 0;
                sym = prg__huff_decode(&b, &lit);
                if (sym < 0) { err = "invalid code-length symbol"; goto fail; }
                if (sym < 16) { lens[i++] = (uint8_t)sym; continue; }
                if (sym == 16) {
                    if (i == 0) { err = "repeat of a code length with no previous length"; goto fail; }
                    val = lens[i - 1];
                    rep = 3 + (int)prg__bits_get(&b, 2);
                } else if (sym == 17) rep = 3 + (int)prg__bits_get(&b, 3);
                else rep = 11 + (int)prg__bits_get(&b, 7);
                if (rep > total - i) { err = "code lengths overflow the code count"; goto fail; }
                while (rep--) lens[i++] = (uint8_t)val;
            }
            if (prg__bits_over(&b)) { err = "truncated block header"; goto fail_at_end; }
            if (lens[256] == 0) { err = "no end-of-block code"; goto fail; }
            if (prg__huff_build(&lit, lens, hlit, 0)) { err = "invalid literal/length code lengths"; goto fail; }
            if (prg__huff_build(&dist, lens + hlit, hdist, 0)) { err = "invalid distance code lengths"; goto fail; }
        } else {
            err = "invalid block type 3";
            goto fail;
        }
        for (;;) {
            sym = prg__huff_decode(&b, &lit);
            if (prg__bits_over(&b)) { err = "truncated compressed data"; goto fail_at_end; }
            if (sym < 256) {
                if (sym < 0) { err = "invalid literal/length code"; goto fail; }
                if (o->len == o->cap && (rc = prg__obuf_reserve(o, 1)) != 0) {
                    if (rc == -1 && o->clip) goto clipped;
                    goto fail_out;
                }
                o->p[o->len++] = (uint8_t)sym;
            } else if (sym == 256) {
                break;
            } else {
                size_t len, d;
                uint8_t *q;
                sym -= 257;
                if (sym >= 29) { err = "invalid length symbol"; goto fail; }
                len = prg__len_base[sym] + prg__bits_get(&b, prg__len_extra[sym]);
                sym = prg__huff_decode(&b, &dist);
                if (sym < 0 || sym >= 30) { err = "invalid distance code"; goto fail; }
                d = prg__dist_base[sym] + prg__bits_get(&b, prg__dist_extra[sym]);
                if (prg__bits_over(&b)) { err = "truncated compressed data"; goto fail_at_end; }
                if (d > o->len - start) { err = "distance points before the start of the data"; goto fail; }
                if (o->cap - o->len < len && (rc = prg__obuf_reserve(o, len)) != 0) {
                    if (rc == -1 && o->clip) {
                        if (prg__obuf_reserve(o, o->max - o->len) == 0) {
                            len = o->max - o->len;
                            q = o->p + o->len;
                            o->len += len;
                            while (len--) { *q = *(q - d); q++; }
                        }
                        goto clipped;
                    }
                    goto fail_out;
                }
                q = o->p + o->len;
                o->len += len;
                while (len--) { *q = *(q - d); q++; }
            }
        }
    } while (!final);
    if (prg__bits_over(&b)) { err = "truncated compressed data"; goto fail_at_end; }
    if (used) *used = (prg__bits_used(&b) + 7) / 8;
    return PRG_OK;
clipped: /* a prefix read: the first max bytes are there, the rest is not decoded */
    o->full = 1;
    if (used) *used = n;
    return PRG_OK;
fail_at_end:
    return prg__fail(PRG_ERR_FORMAT, "%s: deflate data truncated at byte %llu (%s)", what, (unsigned long long)(base + n), err);
fail:
    return prg__fail(PRG_ERR_FORMAT, "%s: corrupt deflate data near byte %llu: %s", what,
                     (unsigned long long)(base + (prg__bits_used(&b) < n * 8 ? prg__bits_used(&b) / 8 : n)), err);
fail_out:
    if (rc == -2) return prg__fail(PRG_ERR_NOMEM, "%s: out of memory while decompressing (%zu bytes so far)", what, o->len);
    return prg__fail(PRG_ERR_FORMAT, "%s: decompressed data larger than the expected %zu bytes (near input byte %llu)", what,
                     o->grow ? o->max : o->cap, (unsigned long long)(base + prg__bits_used(&b) / 8));
}

prg_result prg_inflate(const uint8_t *src, size_t src_len, uint8_t *dst, size_t dst_cap, size_t *dst_len, size_t *src_used) {
    prg__obuf o;
    prg_result r;
    if ((!src && src_len) || (!dst && dst_cap)) return prg__fail(PRG_ERR_ARG, "prg_inflate: NULL buffer with a non-zero length");
    o.p = dst;
    o.len = 0;
    o.cap = dst_cap;
    o.max = dst_cap;
    o.grow = 0;
    o.clip = o.full = 0;
    r = prg__inflate_raw(src, src_len, src_used, &o, "inflate", 0);
    if (dst_len) *dst_len = o.len;
    return r;
}

static prg_result prg__zlib_check_header(const uint8_t *src, size_t n, const char *what) {
    if (n < 6) return prg__fail(PRG_ERR_FORMAT, "%s: zlib stream truncated (%zu bytes)", what, n);
    if ((src[0] & 15) != 8 || (src[0] >> 4) > 7 || ((uint32_t)src[0] * 256 + src[1]) % 31 != 0)
        return prg__fail(PRG_ERR_FORMAT, "%s: bad zlib header %02x %02x at byte 0", what, src[0], src[1]);
    if (src[1] & 0x20) return prg__fail(PRG_ERR_UNSUPPORTED, "%s: zlib preset dictionary is not supported", what);
    return PRG_OK;
}

prg_result prg_zlib_decompress(const uint8_t *src, size_t src_len, uint8_t *dst, size_t dst_cap, size_t *dst_len) {
    prg__obuf o;
    prg_result r;
    size_t used = 0;
    if (dst_len) *dst_len = 0;
    if ((r = prg__zlib_check_header(src, src_len, "zlib")) != PRG_OK) return r;
    o.p = dst;
    o.len = 0;
    o.cap = dst_cap;
    o.max = dst_cap;
    o.grow = 0;
    o.clip = o.full = 0;
    r = prg__inflate_raw(src + 2, src_len - 2, &used, &o, "zlib", 2);
    if (dst_len) *dst_len = o.len;
    if (r) return r;
    if (src_len - 2 - used < 4) return prg__fail(PRG_ERR_FORMAT, "zlib: truncated Adler-32 at byte %zu", src_len);
    if (prg__rd32be(src + 2 + used) != prg_adler32(1, dst, o.len))
        return prg__fail(PRG_ERR_FORMAT, "zlib: Adler-32 mismatch at byte %zu: the data is corrupt", 2 + used);
    return PRG_OK;
}

/* Gunzips src (all members) into a growing buffer. */
static prg_result prg__gunzip(const uint8_t *src, size_t n, prg__obuf *o, const char *path) {
    size_t pos = 0, used, start;
    prg_result r;
    int member = 0;
    while (pos < n) {
        size_t h = pos;
        int flg;
        if (n - pos < 2 || src[pos] != 0x1f || src[pos + 1] != 0x8b) {
            if (member) return prg__fail(PRG_ERR_FORMAT, "%s: unexpected data after gzip member %d at byte %zu", path, member, pos);
            return prg__fail(PRG_ERR_FORMAT, "%s: not a gzip file (magic 1f 8b expected at byte 0)", path);
        }
        if (n - pos < 18)
            return prg__fail(PRG_ERR_FORMAT, "%s: gzip member truncated at byte %zu (a member needs 18 bytes or more)", path, n);
        if (src[pos + 2] != 8) return prg__fail(PRG_ERR_FORMAT, "%s: gzip compression method %d at byte %zu is not deflate (8)", path, src[pos + 2], pos + 2);
        flg = src[pos + 3];
        if (flg & 0xe0) return prg__fail(PRG_ERR_FORMAT, "%s: reserved gzip flag bits set at byte %zu", path, pos + 3);
        pos += 10;
        if (flg & 4) { /* FEXTRA */
            size_t xlen;
            if (n - pos < 2) goto truncated;
            xlen = prg__rd16le(src + pos);
            if (n - pos - 2 < xlen) goto truncated;
            pos += 2 + xlen;
        }
        if (flg & 8) { /* FNAME */
            while (pos < n && src[pos]) pos++;
            if (pos++ >= n) goto truncated;
        }
        if (flg & 16) { /* FCOMMENT */
            while (pos < n && src[pos]) pos++;
            if (pos++ >= n) goto truncated;
        }
        if (flg & 2) { /* FHCRC: low 16 bits of the CRC-32 of the header */
            if (n - pos < 2) goto truncated;
            if (prg__rd16le(src + pos) != (prg_crc32(0, src + h, pos - h) & 0xffffu))
                return prg__fail(PRG_ERR_FORMAT, "%s: gzip header CRC mismatch at byte %zu", path, pos);
            pos += 2;
        }
        start = o->len;
        r = prg__inflate_raw(src + pos, n - pos, &used, o, path, pos);
        if (r) return r;
        if (o->full) return PRG_OK; /* a prefix read: trailer checks need the whole member */
        pos += used;
        if (n - pos < 8) return prg__fail(PRG_ERR_FORMAT, "%s: gzip trailer truncated at byte %zu", path, n);
        if (prg__rd32le(src + pos) != (o->len > start ? prg_crc32(0, o->p + start, o->len - start) : 0u))
            return prg__fail(PRG_ERR_FORMAT, "%s: gzip CRC-32 mismatch at byte %zu: the data is corrupt", path, pos);
        if (prg__rd32le(src + pos + 4) != (uint32_t)(o->len - start))
            return prg__fail(PRG_ERR_FORMAT, "%s: gzip ISIZE mismatch at byte %zu", path, pos + 4);
        pos += 8;
        member++;
    }
    return PRG_OK;
truncated:
    return prg__fail(PRG_ERR_FORMAT, "%s: gzip header truncated at byte %zu", path, n);
}

/* Reads the content of path, gunzipped when it starts with the gzip magic:
   decompression stops after max bytes (*len <= max, < max only when the
   content is shorter); a plain file is read whole (its size is real). */
static prg_result prg__file_read_part(const char *path, size_t max, uint8_t **data, size_t *len) {
    FILE *f;
    uint64_t size;
    uint8_t *raw;
    prg_result r;
    *data = NULL;
    *len = 0;
    if ((r = prg__fopen_read(&f, path, &size)) != PRG_OK) return r;
    if (size > (uint64_t)(SIZE_MAX / 2)) {
        fclose(f);
        return prg__fail(PRG_ERR_NOMEM, "%s: file of %llu bytes does not fit in memory", path, (unsigned long long)size);
    }
    raw = (uint8_t *)prg_alloc(size ? (size_t)size : 1);
    if (!raw) {
        fclose(f);
        return prg__fail(PRG_ERR_NOMEM, "%s: out of memory for %llu bytes", path, (unsigned long long)size);
    }
    r = prg__fread_at(f, path, 0, raw, (size_t)size);
    fclose(f);
    if (r) { prg_free(raw); return r; }
    if (size >= 2 && raw[0] == 0x1f && raw[1] == 0x8b) {
        prg__obuf o;
        size_t isize = size >= 18 ? prg__rd32le(raw + size - 4) : 0;
        memset(&o, 0, sizeof o);
        o.max = max;
        o.grow = 1;
        o.clip = 1;
        /* ISIZE (size mod 2^32 of the last member) as the first guess; deflate expands at most ~1032x */
        if (isize > max) isize = max;
        if (isize > 0 && isize / 1032 <= size) {
            o.p = (uint8_t *)prg_alloc(isize);
            o.cap = o.p ? isize : 0;
        }
        r = prg__gunzip(raw, (size_t)size, &o, path);
        prg_free(raw);
        if (r) { prg_free(o.p); return r; }
        if (!o.p) o.p = (uint8_t *)prg_alloc(1);
        if (!o.p) return prg__fail(PRG_ERR_NOMEM, "%s: out of memory", path);
        *data = o.p;
        *len = o.len;
        return PRG_OK;
    }
    *data = raw;
    *len = (size_t)size;
    return PRG_OK;
}

/* The whole content, refused (PRG_ERR_FORMAT, naming why) past max bytes. */
static prg_result prg__file_read_cap(const char *path, size_t max, const char *why, uint8_t **data, size_t *len) {
    prg_result r = prg__file_read_part(path, max < SIZE_MAX / 2 ? max + 1 : max, data, len);
    if (r == PRG_OK && *len > max) {
        prg_free(*data);
        *data = NULL;
        *len = 0;
        return prg__fail(PRG_ERR_FORMAT, "%s: the content is longer than %zu bytes (%s): refused before reading further", path, max, why);
    }
    return r;
}

prg_result prg_file_read(const char *path, uint8_t **data, size_t *len) {
    if (!data || !len) return prg__fail(PRG_ERR_ARG, "prg_file_read: NULL output pointer");
    return prg__file_read_part(path, SIZE_MAX / 2, data, len);
}

prg_result prg_file_read_max(const char *path, size_t max_len, uint8_t **data, size_t *len) {
    if (!data || !len) return prg__fail(PRG_ERR_ARG, "prg_file_read_max: NULL output pointer");
    return prg__file_read_cap(path, max_len, "the caller's limit", data, len);
}

/* ---- deflate (LZ77 + fixed Huffman) ----------------------------------- */

typedef struct prg__bitw { uint8_t *p; size_t len; uint64_t buf; int cnt; } prg__bitw;

static void prg__bitw_put(prg__bitw *w, uint32_t v, int k) {
    w->buf |= (uint64_t)v << w->cnt;
    w->cnt += k;
    while (w->cnt >= 8) {
        w->p[w->len++] = (uint8_t)w->buf;
        w->buf >>= 8;
        w->cnt -= 8;
    }
}
/* Huffman codes go out most significant bit first. */
static void prg__bitw_code(prg__bitw *w, uint32_t code, int k) {
    uint32_t r = 0;
    int i;
    for (i = 0; i < k; i++) { r = (r << 1) | (code & 1); code >>= 1; }
    prg__bitw_put(w, r, k);
}
static void prg__fixed_lit(prg__bitw *w, int sym) {
    if (sym < 144) prg__bitw_code(w, 0x30u + (uint32_t)sym, 8);
    else if (sym < 256) prg__bitw_code(w, 0x190u + (uint32_t)(sym - 144), 9);
    else if (sym < 280) prg__bitw_code(w, (uint32_t)(sym - 256), 7);
    else prg__bitw_code(w, 0xc0u + (uint32_t)(sym - 280), 8);
}

size_t prg_deflate_bound(size_t n) { return n + n / 8 + 5 * (n / 65535 + 1) + 64; }

static size_t prg__deflate_stored(uint8_t *dst, const uint8_t *src, size_t n) {
    size_t len = 0, k;
    do {
        k = n < 65535 ? n : 65535;
        n -= k;
        dst[len] = n == 0 ? 1 : 0;
        prg__wr16le(dst + len + 1, (uint32_t)k);
        prg__wr16le(dst + len + 3, (uint32_t)(~k & 0xffffu));
        memcpy(dst + len + 5, src, k);
        len += 5 + k;
        src += k;
    } while (n);
    return len;
}

size_t prg_deflate(uint8_t *dst, const uint8_t *src, size_t n) {
    enum { WBITS = 15, WSIZE = 1 << WBITS, HBITS = 15, CHAIN = 32 };
    int32_t *head, *prev;
    prg__bitw w;
    size_t i = 0, stored_len = n + 5 * (n / 65535 + 1);
    head = (int32_t *)prg_alloc(((size_t)1 << HBITS) * sizeof(int32_t));
    prev = (int32_t *)prg_alloc((size_t)WSIZE * sizeof(int32_t));
    if (!head || !prev || n < 16 || n > (size_t)INT32_MAX) {
        prg_free(head);
        prg_free(prev);
        return prg__deflate_stored(dst, src, n);
    }
    memset(head, 0xff, ((size_t)1 << HBITS) * sizeof(int32_t));
    w.p = dst;
    w.len = 0;
    w.buf = 0;
    w.cnt = 0;
    prg__bitw_put(&w, 1, 1); /* final */
    prg__bitw_put(&w, 1, 2); /* fixed Huffman */
    while (i < n) {
        size_t best = 0, bestd = 0;
        if (i + 3 <= n) {
            uint32_t hsh = (((uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8 | src[i + 2]) * 2654435761u) >> (32 - HBITS);
            int32_t cand = head[hsh];
            int chain = CHAIN;
            size_t maxl = n - i < 258 ? n - i : 258;
            while (cand >= 0 && i - (size_t)cand <= WSIZE && chain--) {
                const uint8_t *a = src + cand, *b = src + i;
                size_t l = 0;
                while (l < maxl && a[l] == b[l]) l++;
                if (l > best) { best = l; bestd = i - (size_t)cand; if (l == maxl) break; }
                cand = prev[cand & (WSIZE - 1)];
            }
            prev[i & (WSIZE - 1)] = head[hsh];
            head[hsh] = (int32_t)i;
        }
        if (best >= 3) {
            int s = 28, d = 29;
            size_t k;
            while (prg__len_base[s] > best) s--;
            while (prg__dist_base[d] > bestd) d--;
            prg__fixed_lit(&w, 257 + s);
            prg__bitw_put(&w, (uint32_t)(best - prg__len_base[s]), prg__len_extra[s]);
            prg__bitw_code(&w, (uint32_t)d, 5);
            prg__bitw_put(&w, (uint32_t)(bestd - prg__dist_base[d]), prg__dist_extra[d]);
            for (k = 1; k < best; k++) { /* enter the skipped positions into the hash chains */
                size_t j = i + k;
                if (j + 3 <= n) {
                    uint32_t hsh = (((uint32_t)src[j] << 16 | (uint32_t)src[j + 1] << 8 | src[j + 2]) * 2654435761u) >> (32 - HBITS);
                    prev[j & (WSIZE - 1)] = head[hsh];
                    head[hsh] = (int32_t)j;
                }
            }
            i += best;
        } else {
            prg__fixed_lit(&w, src[i]);
            i++;
        }
        if (w.len > stored_len) break; /* incompressible: stored is smaller */
    }
    prg_free(head);
    prg_free(prev);
    if (i < n || w.len + 3 > stored_len) return prg__deflate_stored(dst, src, n);
    prg__fixed_lit(&w, 256);
    if (w.cnt) prg__bitw_put(&w, 0, 8 - w.cnt);
    return w.len;
}

/* ---- a growing string ------------------------------------------------ */

typedef struct prg__sb { char *p; size_t len, cap; int oom; } prg__sb;

static void prg__sb_put(prg__sb *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->cap - b->len < n + 1) {
        size_t ncap = b->cap ? b->cap : 256;
        char *np;
        while (ncap - b->len < n + 1) {
            if (ncap > SIZE_MAX / 4) { b->oom = 1; return; }
            ncap *= 2;
        }
        np = (char *)PRG_MALLOC(ncap);
        if (!np) { b->oom = 1; return; }
        if (b->len) memcpy(np, b->p, b->len);
        if (b->p) PRG_FREE(b->p);
        b->p = np;
        b->cap = ncap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}
static void prg__sb_str(prg__sb *b, const char *s) { prg__sb_put(b, s, strlen(s)); }
static void prg__sb_u64(prg__sb *b, uint64_t v) {
    char t[32];
    snprintf(t, sizeof t, "%llu", (unsigned long long)v);
    prg__sb_str(b, t);
}
static void prg__sb_json(prg__sb *b, const char *s) {
    prg__sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char t[8];
        if (c == '"' || c == '\\') {
            t[0] = '\\';
            t[1] = (char)c;
            prg__sb_put(b, t, 2);
        } else if (c < 0x20) {
            snprintf(t, sizeof t, "\\u%04x", c);
            prg__sb_put(b, t, 6);
        } else prg__sb_put(b, s, 1);
    }
    prg__sb_put(b, "\"", 1);
}
static void prg__sb_free(prg__sb *b) {
    if (b->p) PRG_FREE(b->p);
    memset(b, 0, sizeof *b);
}

/* ---- .npy ------------------------------------------------------------ */

typedef struct prg__npyhdr {
    prg_dtype dtype;
    int swap, ndim;
    int64_t shape[PRG_MAX_DIMS];
    size_t count, nbytes, data_off;
} prg__npyhdr;

#define PRG__NPY_MAX_HEADER (1u << 20)

/* The fixed part: magic, version, header length.  p holds avail bytes. */
static prg_result prg__npy_prelude(const uint8_t *p, size_t avail, const char *what, size_t *hlen, size_t *hstart) {
    if (avail < 10 || memcmp(p, "\x93NUMPY", 6) != 0) {
        if (avail >= 6 && memcmp(p, "\x93NUMPY", 6) != 0)
            return prg__fail(PRG_ERR_FORMAT, "%s: not a .npy array (magic \\x93NUMPY expected at byte 0)", what);
        return prg__fail(PRG_ERR_FORMAT, "%s: .npy truncated at byte %zu (header prelude needs 10 bytes)", what, avail);
    }
    if (p[6] == 1) {
        *hlen = prg__rd16le(p + 8);
        *hstart = 10;
    } else if (p[6] == 2 || p[6] == 3) {
        if (avail < 12) return prg__fail(PRG_ERR_FORMAT, "%s: .npy truncated at byte %zu", what, avail);
        *hlen = prg__rd32le(p + 8);
        *hstart = 12;
    } else
        return prg__fail(PRG_ERR_UNSUPPORTED, "%s: .npy format version %d.%d at byte 6 is not supported (1, 2, 3 are)", what, p[6], p[7]);
    if (*hlen > PRG__NPY_MAX_HEADER)
        return prg__fail(PRG_ERR_FORMAT, "%s: absurd .npy header length %zu at byte 8 (limit %u)", what, *hlen, PRG__NPY_MAX_HEADER);
    return PRG_OK;
}

/* A '...' or "..." string of less than cap chars at s[*i]; -1 if not. */
static int prg__npy_quoted(const char *s, size_t n, size_t *i, char *out, size_t cap) {
    size_t len = 0;
    char q;
    if (*i >= n || (s[*i] != '\'' && s[*i] != '"')) return -1;
    q = s[(*i)++];
    while (*i < n && s[*i] != q && len < cap - 1) out[len++] = s[(*i)++];
    out[len] = 0;
    if (*i >= n || s[*i] != q) return -1;
    (*i)++;
    return 0;
}

/* The header dict: {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), } */
static prg_result prg__npy_dict(const char *s, size_t n, size_t base, const char *what, prg__npyhdr *h) {
    size_t i = 0;
    int seen = 0, fortran = 0, k;
    char key[16], descr[16];
    const char *err = "";
    uint64_t count;
#define PRG__NPY_WS() while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) i++
    memset(h, 0, sizeof *h);
    descr[0] = 0;
    PRG__NPY_WS();
    if (i >= n || s[i] != '{') { err = "expected '{'"; goto fail; }
    i++;
    for (;;) {
        PRG__NPY_WS();
        if (i < n && s[i] == '}') { i++; break; }
        if (prg__npy_quoted(s, n, &i, key, sizeof key)) { err = "expected a quoted key"; goto fail; }
        PRG__NPY_WS();
        if (i >= n || s[i] != ':') { err = "expected ':'"; goto fail; }
        i++;
        PRG__NPY_WS();
        if (strcmp(key, "descr") == 0 && !(seen & 1)) {
            seen |= 1;
            if (i < n && s[i] == '[') { err = "structured dtypes are not supported"; goto fail; }
            if (prg__npy_quoted(s, n, &i, descr, sizeof descr)) { err = "expected a short quoted descr"; goto fail; }
        } else if (strcmp(key, "fortran_order") == 0 && !(seen & 2)) {
            seen |= 2;
            if (n - i >= 4 && memcmp(s + i, "True", 4) == 0) { fortran = 1; i += 4; }
            else if (n - i >= 5 && memcmp(s + i, "False", 5) == 0) i += 5;
            else { err = "fortran_order must be True or False"; goto fail; }
        } else if (strcmp(key, "shape") == 0 && !(seen & 4)) {
            seen |= 4;
            if (i >= n || s[i] != '(') { err = "expected '(' for shape"; goto fail; }
            i++;
            for (;;) {
                uint64_t v = 0;
                PRG__NPY_WS();
                if (i < n && s[i] == ')') { i++; break; }
                if (i >= n || s[i] < '0' || s[i] > '9') { err = "expected a dimension"; goto fail; }
                while (i < n && s[i] >= '0' && s[i] <= '9') {
                    if (v > ((uint64_t)1 << 56)) { err = "absurd dimension"; goto fail; }
                    v = v * 10 + (uint64_t)(s[i++] - '0');
                }
                if (h->ndim >= PRG_MAX_DIMS) { err = "more than 8 dimensions"; goto fail; }
                h->shape[h->ndim++] = (int64_t)v;
                PRG__NPY_WS();
                if (i < n && s[i] == ',') { i++; continue; }
                if (i < n && s[i] == ')') { i++; break; }
                err = "expected ',' or ')' in shape";
                goto fail;
            }
        } else {
            err = "unknown or repeated key";
            goto fail;
        }
        PRG__NPY_WS();
        if (i < n && s[i] == ',') { i++; continue; }
        if (i < n && s[i] == '}') { i++; break; }
        err = "expected ',' or '}'";
        goto fail;
    }
    PRG__NPY_WS();
    if (i != n) { err = "unexpected characters after the dict"; goto fail; }
#undef PRG__NPY_WS
    if (seen != 7) { err = "descr, fortran_order or shape missing"; goto fail; }
    if (fortran) return prg__fail(PRG_ERR_UNSUPPORTED, "%s: fortran_order arrays are not supported (save with np.ascontiguousarray)", what);
    {
        static const char *const np_names[PRG_DT_COUNT] = {"f4", "f2", "", "f8", "u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "b1"};
        char bo = descr[0];
        int dt = -1;
        for (k = 0; k < PRG_DT_COUNT; k++)
            if (np_names[k][0] && bo && strcmp(descr + 1, np_names[k]) == 0) dt = k;
        /* fixed-length strings: S<n> bytes -> u8, U<n> UCS-4 -> u32, n as one more last dimension */
        if (dt < 0 && bo && (descr[1] == 'S' || descr[1] == 'U') && descr[2] >= '1' && descr[2] <= '9' && strlen(descr + 2) <= 7 &&
            strspn(descr + 2, "0123456789") == strlen(descr + 2)) {
            if (h->ndim >= PRG_MAX_DIMS) return prg__fail(PRG_ERR_FORMAT, "%s: a string array of 8 dimensions has no room for the length", what);
            dt = descr[1] == 'S' ? PRG_DT_U8 : PRG_DT_U32;
            h->shape[h->ndim++] = atoi(descr + 2);
        }
        if ((bo != '<' && bo != '>' && bo != '|' && bo != '=') || dt < 0)
            return prg__fail(PRG_ERR_UNSUPPORTED, "%s: .npy dtype '%s' is not supported (u1 i1 b1 u2 i2 u4 i4 u8 i8 f2 f4 f8 S<n> U<n>)", what, descr);
        h->dtype = (prg_dtype)dt;
        h->swap = prg_dtype_bytes(h->dtype) > 1 && ((bo == '>' && prg__host_le()) || (bo == '<' && !prg__host_le()));
    }
    if (prg__shape_count(h->shape, h->ndim, (uint64_t)(SIZE_MAX / 2) / prg_dtype_bytes(h->dtype), &count))
        return prg__fail(PRG_ERR_FORMAT, "%s: absurd .npy shape (the size overflows)", what);
    h->count = (size_t)count;
    h->nbytes = h->count * prg_dtype_bytes(h->dtype);
    return PRG_OK;
fail:
    return prg__fail(PRG_ERR_FORMAT, "%s: bad .npy header at byte %zu: %s", what, base + (i < n ? i : n), err);
}

static void prg__array_set(prg_array *a, const prg__npyhdr *h, void *data) {
    int k;
    memset(a, 0, sizeof *a);
    a->dtype = h->dtype;
    a->ndim = h->ndim;
    for (k = 0; k < h->ndim; k++) a->shape[k] = h->shape[k];
    a->count = h->count;
    a->data = data;
    if (h->swap) prg__bswap(data, prg_dtype_bytes(h->dtype), h->count);
}

void prg_array_free(prg_array *a) {
    if (!a) return;
    prg_free(a->data);
    memset(a, 0, sizeof *a);
}

/* Parses a whole .npy held in buf[0..len) (buf from prg_alloc) and moves
   the data to its start, so buf becomes the array's data. */
static prg_result prg__npy_from_buffer(prg_array *a, uint8_t *buf, size_t len, const char *what) {
    prg__npyhdr h;
    size_t hlen, hstart;
    prg_result r;
    if ((r = prg__npy_prelude(buf, len, what, &hlen, &hstart)) != PRG_OK) return r;
    if (hlen > len - hstart) return prg__fail(PRG_ERR_FORMAT, "%s: .npy header of %zu bytes at byte %zu runs past the end (%zu bytes)", what, hlen, hstart, len);
    if ((r = prg__npy_dict((const char *)buf + hstart, hlen, hstart, what, &h)) != PRG_OK) return r;
    h.data_off = hstart + hlen;
    if (h.nbytes != len - h.data_off)
        return prg__fail(PRG_ERR_FORMAT, "%s: .npy data at byte %zu should be %zu bytes (shape and dtype) but is %zu (%s)", what,
                         h.data_off, h.nbytes, len - h.data_off, h.nbytes > len - h.data_off ? "truncated" : "trailing bytes");
    memmove(buf, buf + h.data_off, h.nbytes);
    prg__array_set(a, &h, buf);
    return PRG_OK;
}

prg_result prg_npy_read(prg_array *a, const char *path) {
    FILE *f;
    uint64_t size;
    uint8_t pre[12];
    char *hdr = NULL;
    void *data = NULL;
    size_t hlen, hstart;
    prg__npyhdr h;
    prg_result r;
    if (!a) return prg__fail(PRG_ERR_ARG, "prg_npy_read: a is NULL");
    memset(a, 0, sizeof *a);
    if ((r = prg__fopen_read(&f, path, &size)) != PRG_OK) return r;
    r = prg__fread_at(f, path, 0, pre, size < 12 ? (size_t)size : 12);
    if (!r) r = prg__npy_prelude(pre, size < 12 ? (size_t)size : 12, path, &hlen, &hstart);
    if (!r && hlen > size - hstart)
        r = prg__fail(PRG_ERR_FORMAT, "%s: .npy header of %zu bytes at byte %zu runs past the end of the file (%llu bytes)", path, hlen, hstart,
                      (unsigned long long)size);
    if (!r && !(hdr = (char *)PRG_MALLOC(hlen + 1))) r = prg__fail(PRG_ERR_NOMEM, "%s: out of memory", path);
    if (!r) r = prg__fread_at(f, path, hstart, hdr, hlen);
    if (!r) r = prg__npy_dict(hdr, hlen, hstart, path, &h);
    if (!r) {
        h.data_off = hstart + hlen;
        if ((uint64_t)h.nbytes != size - h.data_off)
            r = prg__fail(PRG_ERR_FORMAT, "%s: .npy data at byte %zu should be %zu bytes (shape and dtype) but the file has %llu (%s)", path,
                          h.data_off, h.nbytes, (unsigned long long)(size - h.data_off),
                          (uint64_t)h.nbytes > size - h.data_off ? "truncated" : "trailing bytes");
    }
    if (!r && !(data = prg_alloc(h.nbytes ? h.nbytes : 1))) r = prg__fail(PRG_ERR_NOMEM, "%s: out of memory for %zu bytes", path, h.nbytes);
    if (!r) r = prg__fread_at(f, path, h.data_off, data, h.nbytes);
    fclose(f);
    if (hdr) PRG_FREE(hdr);
    if (r) {
        prg_free(data);
        return r;
    }
    prg__array_set(a, &h, data);
    return PRG_OK;
}

/* Where written bytes go: to a file (if w) and through the CRC-32 (if crc_on). */
typedef struct prg__sink { prg__wfile *w; uint32_t crc; uint64_t n; int crc_on; } prg__sink;
static void prg__sink_put(prg__sink *s, const void *p, size_t n) {
    if (s->crc_on) s->crc = prg_crc32(s->crc, p, n);
    s->n += n;
    if (s->w) prg__wwrite(s->w, p, n);
}
/* total bytes of esize-byte elements in host order, written little-endian */
static void prg__sink_put_le(prg__sink *s, const void *data, size_t esize, size_t total) {
    uint8_t tmp[4096];
    size_t i, k;
    if (prg__host_le() || esize == 1) {
        prg__sink_put(s, data, total);
        return;
    }
    for (i = 0; i < total; i += sizeof tmp) {
        k = total - i < sizeof tmp ? total - i : sizeof tmp;
        memcpy(tmp, (const uint8_t *)data + i, k);
        prg__bswap(tmp, esize, k / esize);
        prg__sink_put(s, tmp, k);
    }
}

static prg_result prg__npy_check(const prg_array *a, const char *path) {
    uint64_t count;
    if (!a || (unsigned)a->dtype >= PRG_DT_COUNT || a->dtype == PRG_DT_BF16 || a->ndim < 0 || a->ndim > PRG_MAX_DIMS)
        return prg__fail(PRG_ERR_ARG, "%s: invalid array (dtype BF16 has no numpy equivalent; ndim 0..8)", path);
    if (prg__shape_count(a->shape, a->ndim, (uint64_t)(SIZE_MAX / 8), &count) || count != a->count)
        return prg__fail(PRG_ERR_ARG, "%s: array count %zu does not match its shape", path, a->count);
    if (count && !a->data) return prg__fail(PRG_ERR_ARG, "%s: array data is NULL", path);
    return PRG_OK;
}

static void prg__npy_emit(prg__sink *s, const prg_array *a) {
    static const char *const descr[PRG_DT_COUNT] = {"<f4", "<f2", "", "<f8", "|u1", "|i1", "<u2", "<i2", "<u4", "<i4", "<u8", "<i8", "|b1"};
    prg__sb b;
    uint8_t pre[10];
    size_t esize = prg_dtype_bytes(a->dtype);
    int k;
    memset(&b, 0, sizeof b);
    prg__sb_str(&b, "{'descr': '");
    prg__sb_str(&b, descr[a->dtype]);
    prg__sb_str(&b, "', 'fortran_order': False, 'shape': (");
    for (k = 0; k < a->ndim; k++) {
        prg__sb_u64(&b, (uint64_t)a->shape[k]);
        prg__sb_str(&b, a->ndim == 1 ? "," : k + 1 < a->ndim ? ", " : "");
    }
    prg__sb_str(&b, "), }");
    while ((10 + b.len + 1) % 64) prg__sb_str(&b, " ");
    prg__sb_str(&b, "\n");
    if (b.oom || b.len > 65535) { /* cannot happen for 8 dims; keeps the sink consistent */
        if (s->w) s->w->err = 1;
        prg__sb_free(&b);
        return;
    }
    memcpy(pre, "\x93NUMPY\x01\x00", 8);
    prg__wr16le(pre + 8, (uint32_t)b.len);
    prg__sink_put(s, pre, 10);
    prg__sink_put(s, b.p, b.len);
    prg__sb_free(&b);
    prg__sink_put_le(s, a->data, esize, a->count * esize);
}

prg_result prg_npy_write(const char *path, const prg_array *a) {
    prg__wfile w;
    prg__sink s;
    prg_result r;
    if ((r = prg__npy_check(a, path ? path : "(null)")) != PRG_OK) return r;
    if ((r = prg__wopen(&w, path)) != PRG_OK) return r;
    memset(&s, 0, sizeof s);
    s.w = &w;
    prg__npy_emit(&s, a);
    return prg__wclose(&w);
}

/* ---- .npz (zip) ------------------------------------------------------ */

typedef struct prg__zipent { uint64_t data_off, csize, usize; uint32_t crc; int method; } prg__zipent;

static prg_result prg__zip_find(FILE *f, const char *path, uint64_t size, const char *name, prg__zipent *e) {
    uint8_t *tail = NULL, *cd = NULL, loc[56];
    size_t tn = size < 65557 ? (size_t)size : 65557, i, p, nlen = strlen(name);
    uint64_t eocd, entries, cd_size, cd_off, k;
    prg_result r;
    int found = 0;
    if (size < 22 || (r = prg__fread_at(f, path, 0, loc, 4)) != PRG_OK || prg__rd32le(loc) != 0x04034b50u)
        return prg__fail(PRG_ERR_FORMAT, "%s: not a zip/.npz file (magic PK\\3\\4 expected at byte 0)", path);
    if (!(tail = (uint8_t *)prg_alloc(tn))) return prg__fail(PRG_ERR_NOMEM, "%s: out of memory", path);
    if ((r = prg__fread_at(f, path, size - tn, tail, tn)) != PRG_OK) goto done;
    for (i = tn - 22 + 1; i-- > 0;)
        if (prg__rd32le(tail + i) == 0x06054b50u && prg__rd16le(tail + i + 20) == tn - i - 22) { found = 1; break; }
    if (!found) {
        r = prg__fail(PRG_ERR_FORMAT, "%s: zip end-of-central-directory record not found before byte %llu (truncated .npz?)", path,
                      (unsigned long long)size);
        goto done;
    }
    eocd = size - tn + i;
    entries = prg__rd16le(tail + i + 10);
    cd_size = prg__rd32le(tail + i + 12);
    cd_off = prg__rd32le(tail + i + 16);
    if (prg__rd16le(tail + i + 4) != 0 || prg__rd16le(tail + i + 6) != 0) {
        r = prg__fail(PRG_ERR_UNSUPPORTED, "%s: multi-disk zip archives are not supported", path);
        goto done;
    }
    if (entries == 0xffff || cd_size == 0xffffffffu || cd_off == 0xffffffffu) { /* zip64 */
        uint64_t z64;
        if (eocd < 20 || (r = prg__fread_at(f, path, eocd - 20, loc, 20)) != PRG_OK || prg__rd32le(loc) != 0x07064b50u) {
            r = prg__fail(PRG_ERR_FORMAT, "%s: zip64 locator missing before byte %llu", path, (unsigned long long)eocd);
            goto done;
        }
        z64 = prg__rd64le(loc + 8);
        if (z64 > eocd - 20 || eocd - 20 - z64 < 56 || (r = prg__fread_at(f, path, z64, loc, 56)) != PRG_OK || prg__rd32le(loc) != 0x06064b50u) {
            r = prg__fail(PRG_ERR_FORMAT, "%s: bad zip64 end-of-central-directory record at byte %llu", path, (unsigned long long)z64);
            goto done;
        }
        entries = prg__rd64le(loc + 32);
        cd_size = prg__rd64le(loc + 40);
        cd_off = prg__rd64le(loc + 48);
        eocd = z64;
    }
    if (cd_off > eocd || cd_size > eocd - cd_off || cd_size > ((uint64_t)1 << 28) || entries > cd_size / 46) {
        r = prg__fail(PRG_ERR_FORMAT, "%s: zip central directory (offset %llu, %llu bytes, %llu entries) does not fit before byte %llu", path,
                         (unsigned long long)cd_off, (unsigned long long)cd_size, (unsigned long long)entries, (unsigned long long)eocd);
        goto done;
    }
    cd = (uint8_t *)prg_alloc((size_t)cd_size + 1);
    if (!cd) {
        r = prg__fail(PRG_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    if ((r = prg__fread_at(f, path, cd_off, cd, (size_t)cd_size)) != PRG_OK) goto done;
    r = PRG_ERR_FORMAT;
    for (p = 0, k = 0; k < entries; k++) {
        size_t enlen, xlen, clen, x;
        uint64_t usize, csize, off;
        if (cd_size - p < 46 || prg__rd32le(cd + p) != 0x02014b50u) {
            r = prg__fail(PRG_ERR_FORMAT, "%s: bad zip central directory entry at byte %llu", path, (unsigned long long)(cd_off + p));
            goto done;
        }
        enlen = prg__rd16le(cd + p + 28);
        xlen = prg__rd16le(cd + p + 30);
        clen = prg__rd16le(cd + p + 32);
        if (cd_size - p - 46 < (uint64_t)enlen + xlen + clen) {
            r = prg__fail(PRG_ERR_FORMAT, "%s: zip central directory entry at byte %llu runs past its end", path, (unsigned long long)(cd_off + p));
            goto done;
        }
        if (!((enlen == nlen && memcmp(cd + p + 46, name, nlen) == 0) ||
              (enlen == nlen + 4 && memcmp(cd + p + 46, name, nlen) == 0 && memcmp(cd + p + 46 + nlen, ".npy", 4) == 0))) {
            p += 46 + enlen + xlen + clen;
            continue;
        }
        e->method = (int)prg__rd16le(cd + p + 10);
        e->crc = prg__rd32le(cd + p + 16);
        csize = prg__rd32le(cd + p + 20);
        usize = prg__rd32le(cd + p + 24);
        off = prg__rd32le(cd + p + 42);
        for (x = 0; x + 4 <= xlen;) { /* zip64 extra field */
            const uint8_t *q = cd + p + 46 + enlen + x;
            size_t id = prg__rd16le(q), sz = prg__rd16le(q + 2), j = 4;
            if (x + 4 + sz > xlen) break;
            if (id == 1) {
                if (usize == 0xffffffffu && j + 8 <= sz + 4) { usize = prg__rd64le(q + j); j += 8; }
                if (csize == 0xffffffffu && j + 8 <= sz + 4) { csize = prg__rd64le(q + j); j += 8; }
                if (off == 0xffffffffu && j + 8 <= sz + 4) { off = prg__rd64le(q + j); j += 8; }
            }
            x += 4 + sz;
        }
        if (prg__rd16le(cd + p + 8) & 1) {
            r = prg__fail(PRG_ERR_UNSUPPORTED, "%s: entry '%s' is encrypted", path, name);
            goto done;
        }
        if (e->method != 0 && e->method != 8) {
            r = prg__fail(PRG_ERR_UNSUPPORTED, "%s: entry '%s' uses zip method %d (only stored 0 and deflate 8 are supported)", path, name, e->method);
            goto done;
        }
        if (off > cd_off || cd_off - off < 30 || (r = prg__fread_at(f, path, off, loc, 30)) != PRG_OK || prg__rd32le(loc) != 0x04034b50u) {
            r = prg__fail(PRG_ERR_FORMAT, "%s: bad zip local header for '%s' at byte %llu", path, name, (unsigned long long)off);
            goto done;
        }
        e->data_off = off + 30 + prg__rd16le(loc + 26) + prg__rd16le(loc + 28);
        if (e->data_off > cd_off || csize > cd_off - e->data_off || (e->method == 0 && csize != usize)) {
            r = prg__fail(PRG_ERR_FORMAT, "%s: zip entry '%s' (%llu bytes at byte %llu) does not fit before the directory at byte %llu", path, name,
                          (unsigned long long)csize, (unsigned long long)e->data_off, (unsigned long long)cd_off);
            goto done;
        }
        e->csize = csize;
        e->usize = usize;
        r = PRG_OK;
        goto done;
    }
    r = prg__fail(PRG_ERR_FORMAT, "%s: no array '%s' in this .npz", path, name);
done:
    prg_free(tail);
    prg_free(cd);
    return r;
}

/* Before the entry's buffer is allocated: its .npy header, inflated from the
   first bytes alone, must need exactly the usize bytes the zip directory
   claims (a short stream cannot make the reader allocate a huge buffer). */
static prg_result prg__npz_check_size(const uint8_t *comp, size_t csize, uint64_t usize, uint64_t base, const char *what) {
    const size_t most = 12 + PRG__NPY_MAX_HEADER;
    prg__obuf o;
    prg__npyhdr h;
    size_t hlen, hstart, used;
    prg_result r;
    memset(&o, 0, sizeof o);
    o.cap = o.max = usize < most ? (size_t)usize : most;
    o.clip = 1;
    if (!(o.p = (uint8_t *)prg_alloc(o.cap + 1))) return prg__fail(PRG_ERR_NOMEM, "%s: out of memory", what);
    r = prg__inflate_raw(comp, csize, &used, &o, what, base);
    if (!r) r = prg__npy_prelude(o.p, o.len, what, &hlen, &hstart);
    if (!r && hlen > o.len - hstart)
        r = prg__fail(PRG_ERR_FORMAT, "%s: .npy header of %zu bytes at byte %zu runs past the entry", what, hlen, hstart);
    if (!r) r = prg__npy_dict((const char *)o.p + hstart, hlen, hstart, what, &h);
    if (!r && (uint64_t)(hstart + hlen) + h.nbytes != usize)
        r = prg__fail(PRG_ERR_FORMAT, "%s: the zip directory says %llu bytes, the .npy header needs %llu: refused before allocating", what,
                      (unsigned long long)usize, (unsigned long long)((uint64_t)(hstart + hlen) + h.nbytes));
    prg_free(o.p);
    return r;
}

prg_result prg_npz_read(prg_array *a, const char *path, const char *name) {
    FILE *f;
    uint64_t size;
    prg__zipent e;
    uint8_t *buf = NULL, *comp = NULL;
    char what[320];
    prg_result r;
    if (!a) return prg__fail(PRG_ERR_ARG, "prg_npz_read: a is NULL");
    memset(a, 0, sizeof *a);
    if (!name) return prg__fail(PRG_ERR_ARG, "prg_npz_read: name is NULL");
    if ((r = prg__fopen_read(&f, path, &size)) != PRG_OK) return r;
    snprintf(what, sizeof what, "%s[%s]", path, name);
    memset(&e, 0, sizeof e);
    r = prg__zip_find(f, path, size, name, &e);
    if (!r && (e.usize > (uint64_t)(SIZE_MAX / 2) || (e.method == 8 && e.usize / 1032 > e.csize + 1)))
        r = prg__fail(PRG_ERR_FORMAT, "%s: absurd uncompressed size %llu", what, (unsigned long long)e.usize);
    if (!r && e.method == 8) {
        if (!(comp = (uint8_t *)prg_alloc((size_t)e.csize + 1))) r = prg__fail(PRG_ERR_NOMEM, "%s: out of memory", what);
        if (!r) r = prg__fread_at(f, path, e.data_off, comp, (size_t)e.csize);
        if (!r) r = prg__npz_check_size(comp, (size_t)e.csize, e.usize, e.data_off, what);
    }
    if (!r && !(buf = (uint8_t *)prg_alloc((size_t)e.usize + 1))) r = prg__fail(PRG_ERR_NOMEM, "%s: out of memory for %llu bytes", what, (unsigned long long)e.usize);
    if (!r && e.method == 0) r = prg__fread_at(f, path, e.data_off, buf, (size_t)e.usize);
    if (!r && e.method == 8) {
        prg__obuf o;
        size_t used;
        o.p = buf;
        o.len = 0;
        o.cap = (size_t)e.usize;
        o.max = o.cap;
        o.grow = 0;
        o.clip = o.full = 0;
        if (!r) r = prg__inflate_raw(comp, (size_t)e.csize, &used, &o, what, e.data_off);
        if (!r && o.len != e.usize)
            r = prg__fail(PRG_ERR_FORMAT, "%s: entry decompressed to %zu bytes, the zip directory says %llu", what, o.len, (unsigned long long)e.usize);
    }
    prg_free(comp); /* also when a check above refused the entry */
    fclose(f);
    if (!r && prg_crc32(0, buf, (size_t)e.usize) != e.crc)
        r = prg__fail(PRG_ERR_FORMAT, "%s: CRC-32 mismatch for the data at byte %llu: the file is corrupt", what, (unsigned long long)e.data_off);
    if (!r) r = prg__npy_from_buffer(a, buf, (size_t)e.usize, what);
    if (r) prg_free(buf);
    return r;
}

prg_result prg_npz_write(const char *path, const char *const *names, const prg_array *arrays, int n) {
    prg__wfile w;
    prg_result r;
    uint8_t h[46];
    uint32_t *crc = NULL;
    uint64_t *off = NULL, *len = NULL, pos = 0, cd_start;
    int i, j;
    if (n < 0 || n > 65535 || (n && (!names || !arrays))) return prg__fail(PRG_ERR_ARG, "%s: bad array count %d", path ? path : "(null)", n);
    for (i = 0; i < n; i++) {
        if ((r = prg__npy_check(&arrays[i], path ? path : "(null)")) != PRG_OK) return r;
        if (!names[i] || !*names[i] || strlen(names[i]) > 1000) return prg__fail(PRG_ERR_ARG, "%s: array %d has no usable name", path, i);
        for (j = 0; j < i; j++)
            if (strcmp(names[i], names[j]) == 0) return prg__fail(PRG_ERR_ARG, "%s: name '%s' given twice", path, names[i]);
    }
    crc = (uint32_t *)PRG_MALLOC(sizeof(uint32_t) * (size_t)(n + 1));
    off = (uint64_t *)PRG_MALLOC(sizeof(uint64_t) * (size_t)(n + 1));
    len = (uint64_t *)PRG_MALLOC(sizeof(uint64_t) * (size_t)(n + 1));
    if (!crc || !off || !len) {
        r = prg__fail(PRG_ERR_NOMEM, "%s: out of memory", path);
        goto out;
    }
    if ((r = prg__wopen(&w, path)) != PRG_OK) goto out;
    for (i = 0; i < n; i++) {
        prg__sink s;
        size_t nl = strlen(names[i]);
        memset(&s, 0, sizeof s);
        s.crc_on = 1;
        prg__npy_emit(&s, &arrays[i]); /* first pass: size and CRC for the local header */
        if (s.n >= 0xffffffffu || pos + s.n + 30 + nl + 4 >= 0xffffffffu) {
            prg__wabort(&w);
            r = prg__fail(PRG_ERR_UNSUPPORTED, "%s: .npz over 4 GiB is not supported; save the arrays with prg_npy_write", path);
            goto out;
        }
        crc[i] = s.crc;
        len[i] = s.n;
        off[i] = pos;
        memset(h, 0, 30);
        prg__wr32le(h, 0x04034b50u);
        prg__wr16le(h + 4, 20);
        prg__wr16le(h + 12, 0x21); /* 1980-01-01 */
        prg__wr32le(h + 14, s.crc);
        prg__wr32le(h + 18, (uint32_t)s.n);
        prg__wr32le(h + 22, (uint32_t)s.n);
        prg__wr16le(h + 26, (uint32_t)(nl + 4));
        prg__wwrite(&w, h, 30);
        prg__wwrite(&w, names[i], nl);
        prg__wwrite(&w, ".npy", 4);
        s.w = &w;
        s.crc = 0;
        s.n = 0;
        prg__npy_emit(&s, &arrays[i]);
        pos += 30 + nl + 4 + s.n;
    }
    cd_start = pos;
    for (i = 0; i < n; i++) {
        size_t nl = strlen(names[i]);
        memset(h, 0, 46);
        prg__wr32le(h, 0x02014b50u);
        prg__wr16le(h + 4, 20);
        prg__wr16le(h + 6, 20);
        prg__wr16le(h + 14, 0x21);
        prg__wr32le(h + 16, crc[i]);
        prg__wr32le(h + 20, (uint32_t)len[i]);
        prg__wr32le(h + 24, (uint32_t)len[i]);
        prg__wr16le(h + 28, (uint32_t)(nl + 4));
        prg__wr32le(h + 42, (uint32_t)off[i]);
        prg__wwrite(&w, h, 46);
        prg__wwrite(&w, names[i], nl);
        prg__wwrite(&w, ".npy", 4);
        pos += 46 + nl + 4;
    }
    if (pos >= 0xffffffffu) {
        prg__wabort(&w);
        r = prg__fail(PRG_ERR_UNSUPPORTED, "%s: .npz over 4 GiB is not supported", path);
        goto out;
    }
    memset(h, 0, 22);
    prg__wr32le(h, 0x06054b50u);
    prg__wr16le(h + 8, (uint32_t)n);
    prg__wr16le(h + 10, (uint32_t)n);
    prg__wr32le(h + 12, (uint32_t)(pos - cd_start));
    prg__wr32le(h + 16, (uint32_t)cd_start);
    prg__wwrite(&w, h, 22);
    r = prg__wclose(&w);
out:
    if (crc) PRG_FREE(crc);
    if (off) PRG_FREE(off);
    if (len) PRG_FREE(len);
    return r;
}

/* ---- safetensors ----------------------------------------------------- */

#define PRG__ST_MAX_HEADER 100000000u /* the reference implementation's limit */

typedef struct prg__stmeta { const char *key, *value; } prg__stmeta;

struct prg_st {
    FILE *f;
    char *path;
    uint64_t data_start, data_size;
    int n, nmeta;
    prg_st_info *t;            /* header order */
    const prg_st_info **sorted; /* by name */
    prg__stmeta *meta;          /* by key */
    char *hdr, *arena;
};

/* A strict JSON reader for exactly the safetensors header. */
typedef struct prg__js { const char *s; size_t n, i; const char *path; char *arena; size_t alen; } prg__js;

static prg_result prg__js_fail(prg__js *j, const char *what, const char *name) {
    return prg__fail(PRG_ERR_FORMAT, "%s: bad safetensors header at byte %llu%s%s%s: %s", j->path, (unsigned long long)(8 + j->i),
                     name ? " (tensor '" : "", name ? name : "", name ? "')" : "", what);
}
static void prg__js_ws(prg__js *j) {
    while (j->i < j->n && (j->s[j->i] == ' ' || j->s[j->i] == '\t' || j->s[j->i] == '\n' || j->s[j->i] == '\r')) j->i++;
}
static int prg__js_peek(prg__js *j) { /* next non-blank char, -1 at the end */
    prg__js_ws(j);
    return j->i < j->n ? (unsigned char)j->s[j->i] : -1;
}
static prg_result prg__js_expect(prg__js *j, char c, const char *name) {
    char msg[24];
    if (prg__js_peek(j) != (unsigned char)c) {
        snprintf(msg, sizeof msg, "expected '%c'", c);
        return prg__js_fail(j, msg, name);
    }
    j->i++;
    return PRG_OK;
}
static int prg__js_hex4(prg__js *j, unsigned *v) {
    int k;
    *v = 0;
    if (j->n - j->i < 4) return -1;
    for (k = 0; k < 4; k++) {
        char c = j->s[j->i++];
        *v <<= 4;
        if (c >= '0' && c <= '9') *v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') *v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') *v |= (unsigned)(c - 'A' + 10);
        else return -1;
    }
    return 0;
}
/* The UTF-8 bytes of code point cp (<= 0x10ffff) at d; returns the end. */
static char *prg__utf8_put(char *d, uint32_t cp) {
    if (cp < 0x80) *d++ = (char)cp;
    else if (cp < 0x800) { *d++ = (char)(0xc0 | (cp >> 6)); *d++ = (char)(0x80 | (cp & 63)); }
    else if (cp < 0x10000) {
        *d++ = (char)(0xe0 | (cp >> 12)); *d++ = (char)(0x80 | ((cp >> 6) & 63)); *d++ = (char)(0x80 | (cp & 63));
    } else {
        *d++ = (char)(0xf0 | (cp >> 18)); *d++ = (char)(0x80 | ((cp >> 12) & 63));
        *d++ = (char)(0x80 | ((cp >> 6) & 63)); *d++ = (char)(0x80 | (cp & 63));
    }
    return d;
}

/* Decodes a string into the arena (never longer than its encoding). */
static prg_result prg__js_string(prg__js *j, const char **out, const char *name) {
    char *d;
    prg_result r;
    if ((r = prg__js_expect(j, '"', name)) != PRG_OK) return r;
    d = j->arena + j->alen;
    *out = d;
    for (;;) {
        unsigned char c;
        if (j->i >= j->n) return prg__js_fail(j, "unterminated string", name);
        c = (unsigned char)j->s[j->i++];
        if (c == '"') break;
        if (c < 0x20) { j->i--; return prg__js_fail(j, "control character in a string", name); }
        if (c != '\\') { *d++ = (char)c; continue; }
        if (j->i >= j->n) return prg__js_fail(j, "unterminated string", name);
        c = (unsigned char)j->s[j->i++];
        switch (c) {
        case '"': case '\\': case '/': *d++ = (char)c; break;
        case 'b': *d++ = '\b'; break;
        case 'f': *d++ = '\f'; break;
        case 'n': *d++ = '\n'; break;
        case 'r': *d++ = '\r'; break;
        case 't': *d++ = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (prg__js_hex4(j, &cp)) return prg__js_fail(j, "bad \\u escape", name);
            if (cp >= 0xdc00 && cp <= 0xdfff) return prg__js_fail(j, "lone low surrogate", name);
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (j->n - j->i < 6 || j->s[j->i] != '\\' || j->s[j->i + 1] != 'u') return prg__js_fail(j, "lone high surrogate", name);
                j->i += 2;
                if (prg__js_hex4(j, &lo) || lo < 0xdc00 || lo > 0xdfff) return prg__js_fail(j, "bad surrogate pair", name);
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            if (cp == 0) return prg__js_fail(j, "\\u0000 in a string", name);
            d = prg__utf8_put(d, cp);
            break;
        }
        default: j->i--; return prg__js_fail(j, "bad escape", name);
        }
    }
    *d++ = 0;
    j->alen = (size_t)(d - j->arena);
    return PRG_OK;
}
static prg_result prg__js_uint(prg__js *j, uint64_t *v, const char *name) {
    int c = prg__js_peek(j);
    *v = 0;
    if (c < '0' || c > '9') return prg__js_fail(j, "expected a non-negative integer", name);
    if (c == '0' && j->i + 1 < j->n && j->s[j->i + 1] >= '0' && j->s[j->i + 1] <= '9') return prg__js_fail(j, "leading zero", name);
    while (j->i < j->n && j->s[j->i] >= '0' && j->s[j->i] <= '9') {
        if (*v > ((uint64_t)1 << 53)) return prg__js_fail(j, "integer too large", name);
        *v = *v * 10 + (uint64_t)(j->s[j->i++] - '0');
    }
    if (*v > ((uint64_t)1 << 53)) return prg__js_fail(j, "integer too large", name);
    if (j->i < j->n && (j->s[j->i] == '.' || j->s[j->i] == 'e' || j->s[j->i] == 'E')) return prg__js_fail(j, "expected an integer", name);
    return PRG_OK;
}

static prg_result prg__st_tensor(prg__js *j, prg_st_info *t, uint64_t off[2]) {
    const char *key, *dt;
    int seen = 0, k;
    uint64_t v;
    prg_result r;
    if ((r = prg__js_expect(j, '{', t->name)) != PRG_OK) return r;
    if (prg__js_peek(j) == '}') return prg__js_fail(j, "empty tensor entry", t->name);
    for (;;) {
        size_t mark = j->alen;
        if ((r = prg__js_string(j, &key, t->name)) != PRG_OK) return r;
        if ((r = prg__js_expect(j, ':', t->name)) != PRG_OK) return r;
        if (strcmp(key, "dtype") == 0 && !(seen & 1)) {
            seen |= 1;
            if ((r = prg__js_string(j, &dt, t->name)) != PRG_OK) return r;
            for (k = 0; k < PRG_DT_COUNT && strcmp(dt, prg__dtype_names[k]) != 0; k++) {}
            if (k == PRG_DT_COUNT)
                return prg__fail(PRG_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype '%s', which is not supported (F32 F16 BF16 F64 U8..I64 BOOL)",
                                 j->path, t->name, dt);
            t->dtype = (prg_dtype)k;
        } else if (strcmp(key, "shape") == 0 && !(seen & 2)) {
            seen |= 2;
            if ((r = prg__js_expect(j, '[', t->name)) != PRG_OK) return r;
            if (prg__js_peek(j) == ']') j->i++;
            else
                for (;;) {
                    if ((r = prg__js_uint(j, &v, t->name)) != PRG_OK) return r;
                    if (t->ndim == PRG_MAX_DIMS) return prg__js_fail(j, "more than 8 dimensions", t->name);
                    t->shape[t->ndim++] = (int64_t)v;
                    if (prg__js_peek(j) == ']') { j->i++; break; }
                    if ((r = prg__js_expect(j, ',', t->name)) != PRG_OK) return r;
                }
        } else if (strcmp(key, "data_offsets") == 0 && !(seen & 4)) {
            seen |= 4;
            if ((r = prg__js_expect(j, '[', t->name)) != PRG_OK || (r = prg__js_uint(j, &off[0], t->name)) != PRG_OK ||
                (r = prg__js_expect(j, ',', t->name)) != PRG_OK || (r = prg__js_uint(j, &off[1], t->name)) != PRG_OK ||
                (r = prg__js_expect(j, ']', t->name)) != PRG_OK)
                return r;
        } else
            return prg__js_fail(j, "unknown or repeated field (dtype, shape, data_offsets expected)", t->name);
        j->alen = mark; /* the key is not kept */
        if (prg__js_peek(j) == '}') { j->i++; break; }
        if ((r = prg__js_expect(j, ',', t->name)) != PRG_OK) return r;
    }
    if (seen != 7) return prg__js_fail(j, "dtype, shape or data_offsets missing", t->name);
    return PRG_OK;
}

static int prg__st_cmp_name(const void *a, const void *b) {
    return strcmp((*(const prg_st_info *const *)a)->name, (*(const prg_st_info *const *)b)->name);
}
static int prg__st_cmp_meta(const void *a, const void *b) {
    return strcmp(((const prg__stmeta *)a)->key, ((const prg__stmeta *)b)->key);
}
static int prg__st_cmp_off(const void *a, const void *b) {
    const prg_st_info *x = *(const prg_st_info *const *)a, *y = *(const prg_st_info *const *)b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return 0;
}

static prg_result prg__st_parse(prg_st *st) {
    prg__js j;
    size_t i, nobj = 0, ncolon = 0, len = strlen(st->hdr);
    prg_result r;
    int seen_meta = 0, k;
    const prg_st_info **byoff = NULL;
    j.s = st->hdr;
    j.n = len;
    j.i = 0;
    j.path = st->path;
    j.arena = st->arena;
    j.alen = 0;
    for (i = 0; i < len; i++) {
        nobj += st->hdr[i] == '{';
        ncolon += st->hdr[i] == ':';
    }
    st->t = (prg_st_info *)PRG_MALLOC(sizeof(prg_st_info) * (nobj + 1));
    st->meta = (prg__stmeta *)PRG_MALLOC(sizeof(prg__stmeta) * (ncolon + 1));
    if (!st->t || !st->meta) return prg__fail(PRG_ERR_NOMEM, "%s: out of memory for the header", st->path);
    if ((r = prg__js_expect(&j, '{', NULL)) != PRG_OK) return r;
    if (prg__js_peek(&j) == '}') j.i++;
    else
        for (;;) {
            const char *key;
            if ((r = prg__js_string(&j, &key, NULL)) != PRG_OK) return r;
            if ((r = prg__js_expect(&j, ':', key)) != PRG_OK) return r;
            if (strcmp(key, "__metadata__") == 0) {
                if (seen_meta++) return prg__js_fail(&j, "__metadata__ given twice", NULL);
                if ((r = prg__js_expect(&j, '{', NULL)) != PRG_OK) return r;
                if (prg__js_peek(&j) == '}') j.i++;
                else
                    for (;;) {
                        prg__stmeta *m = &st->meta[st->nmeta];
                        if ((r = prg__js_string(&j, &m->key, NULL)) != PRG_OK) return r;
                        if ((r = prg__js_expect(&j, ':', NULL)) != PRG_OK) return r;
                        if (prg__js_peek(&j) != '"') return prg__js_fail(&j, "__metadata__ values must be strings", NULL);
                        if ((r = prg__js_string(&j, &m->value, NULL)) != PRG_OK) return r;
                        st->nmeta++;
                        if (prg__js_peek(&j) == '}') { j.i++; break; }
                        if ((r = prg__js_expect(&j, ',', NULL)) != PRG_OK) return r;
                    }
            } else {
                prg_st_info *t = &st->t[st->n];
                uint64_t off[2], count;
                char shp[160];
                memset(t, 0, sizeof *t);
                t->name = key;
                if (!*key) return prg__js_fail(&j, "empty tensor name", NULL);
                if ((r = prg__st_tensor(&j, t, off)) != PRG_OK) return r;
                if (off[0] > off[1] || off[1] > st->data_size)
                    return prg__fail(PRG_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] outside the %llu bytes of data after byte %llu",
                                     st->path, key, (unsigned long long)off[0], (unsigned long long)off[1],
                                     (unsigned long long)st->data_size, (unsigned long long)st->data_start);
                prg__shape_str(shp, sizeof shp, t->shape, t->ndim);
                if (prg__shape_count(t->shape, t->ndim, st->data_size / prg_dtype_bytes(t->dtype) + 1, &count) ||
                    count * prg_dtype_bytes(t->dtype) != off[1] - off[0])
                    return prg__fail(PRG_ERR_FORMAT, "%s: tensor '%s': shape %s of %s needs a different size than data_offsets [%llu, %llu] (%llu bytes)",
                                     st->path, key, shp, prg_dtype_name(t->dtype), (unsigned long long)off[0], (unsigned long long)off[1],
                                     (unsigned long long)(off[1] - off[0]));
                t->count = (size_t)count;
                t->offset = st->data_start + off[0];
                t->nbytes = off[1] - off[0];
                st->n++;
            }
            if (prg__js_peek(&j) == '}') { j.i++; break; }
            if ((r = prg__js_expect(&j, ',', NULL)) != PRG_OK) return r;
        }
    if (prg__js_peek(&j) != -1) return prg__js_fail(&j, "characters after the header object", NULL);
    /* names unique; data covered exactly, in some order, without overlap */
    st->sorted = (const prg_st_info **)PRG_MALLOC(sizeof(prg_st_info *) * (size_t)(st->n + 1));
    byoff = (const prg_st_info **)PRG_MALLOC(sizeof(prg_st_info *) * (size_t)(st->n + 1));
    if (!st->sorted || !byoff) {
        if (byoff) PRG_FREE((void *)byoff);
        return prg__fail(PRG_ERR_NOMEM, "%s: out of memory", st->path);
    }
    for (k = 0; k < st->n; k++) st->sorted[k] = byoff[k] = &st->t[k];
    qsort((void *)st->sorted, (size_t)st->n, sizeof *st->sorted, prg__st_cmp_name);
    qsort((void *)byoff, (size_t)st->n, sizeof *byoff, prg__st_cmp_off);
    qsort(st->meta, (size_t)st->nmeta, sizeof *st->meta, prg__st_cmp_meta);
    r = PRG_OK;
    for (k = 1; k < st->n && !r; k++)
        if (strcmp(st->sorted[k - 1]->name, st->sorted[k]->name) == 0)
            r = prg__fail(PRG_ERR_FORMAT, "%s: tensor '%s' appears twice in the header", st->path, st->sorted[k]->name);
    for (k = 1; k < st->nmeta && !r; k++)
        if (strcmp(st->meta[k - 1].key, st->meta[k].key) == 0)
            r = prg__fail(PRG_ERR_FORMAT, "%s: __metadata__ key '%s' appears twice", st->path, st->meta[k].key);
    for (k = 0; k < st->n && !r; k++) {
        uint64_t expect = k ? byoff[k - 1]->offset + byoff[k - 1]->nbytes : st->data_start;
        if (byoff[k]->offset < expect)
            r = prg__fail(PRG_ERR_FORMAT, "%s: tensor '%s' (bytes %llu..%llu) overlaps tensor '%s' (bytes %llu..%llu)", st->path, byoff[k]->name,
                          (unsigned long long)byoff[k]->offset, (unsigned long long)(byoff[k]->offset + byoff[k]->nbytes), byoff[k - 1]->name,
                          (unsigned long long)byoff[k - 1]->offset, (unsigned long long)(byoff[k - 1]->offset + byoff[k - 1]->nbytes));
        else if (byoff[k]->offset > expect)
            r = prg__fail(PRG_ERR_FORMAT, "%s: unused bytes %llu..%llu before tensor '%s'", st->path, (unsigned long long)expect,
                          (unsigned long long)byoff[k]->offset, byoff[k]->name);
    }
    if (!r) {
        uint64_t end = st->n ? byoff[st->n - 1]->offset + byoff[st->n - 1]->nbytes : st->data_start;
        if (end != st->data_start + st->data_size)
            r = prg__fail(PRG_ERR_FORMAT, "%s: %llu unused bytes at the end of the file (from byte %llu)", st->path,
                          (unsigned long long)(st->data_start + st->data_size - end), (unsigned long long)end);
    }
    PRG_FREE((void *)byoff);
    return r;
}

void prg_st_close(prg_st *st) {
    if (!st) return;
    if (st->f) fclose(st->f);
    if (st->path) PRG_FREE(st->path);
    if (st->t) PRG_FREE(st->t);
    if (st->sorted) PRG_FREE((void *)st->sorted);
    if (st->meta) PRG_FREE(st->meta);
    prg_free(st->hdr);
    prg_free(st->arena);
    PRG_FREE(st);
}

prg_result prg_st_open(prg_st **out, const char *path) {
    prg_st *st;
    uint64_t size, hlen;
    uint8_t b8[8];
    prg_result r;
    FILE *f;
    if (!out) return prg__fail(PRG_ERR_ARG, "prg_st_open: st is NULL");
    *out = NULL;
    if ((r = prg__fopen_read(&f, path, &size)) != PRG_OK) return r;
    st = (prg_st *)PRG_MALLOC(sizeof *st);
    if (!st) {
        fclose(f);
        return prg__fail(PRG_ERR_NOMEM, "%s: out of memory", path);
    }
    memset(st, 0, sizeof *st);
    st->f = f;
    st->path = (char *)PRG_MALLOC(strlen(path) + 1);
    if (!st->path) {
        prg_st_close(st);
        return prg__fail(PRG_ERR_NOMEM, "%s: out of memory", path);
    }
    strcpy(st->path, path);
    if (size < 8) r = prg__fail(PRG_ERR_FORMAT, "%s: truncated: %llu bytes, a safetensors file starts with an 8-byte header length", path, (unsigned long long)size);
    if (!r) r = prg__fread_at(f, path, 0, b8, 8);
    if (!r) {
        hlen = prg__rd64le(b8);
        if (hlen < 2 || hlen > PRG__ST_MAX_HEADER)
            r = prg__fail(PRG_ERR_FORMAT, "%s: absurd safetensors header length %llu at byte 0 (2..%u; is this a safetensors file?)", path,
                          (unsigned long long)hlen, PRG__ST_MAX_HEADER);
        else if (hlen > size - 8)
            r = prg__fail(PRG_ERR_FORMAT, "%s: truncated: the header of %llu bytes at byte 8 runs past the end of the file (%llu bytes)", path,
                          (unsigned long long)hlen, (unsigned long long)size);
    }
    if (!r) {
        st->data_start = 8 + hlen;
        st->data_size = size - st->data_start;
        st->hdr = (char *)prg_alloc((size_t)hlen + 1);
        st->arena = (char *)prg_alloc((size_t)hlen + 1);
        if (!st->hdr || !st->arena) r = prg__fail(PRG_ERR_NOMEM, "%s: out of memory for a %llu-byte header", path, (unsigned long long)hlen);
    }
    if (!r) r = prg__fread_at(f, path, 8, st->hdr, (size_t)hlen);
    if (!r) {
        st->hdr[hlen] = 0;
        if (strlen(st->hdr) != hlen) r = prg__fail(PRG_ERR_FORMAT, "%s: NUL byte in the header at byte %zu", path, 8 + strlen(st->hdr));
    }
    if (!r) r = prg__st_parse(st);
    if (r) {
        prg_st_close(st);
        return r;
    }
    *out = st;
    return PRG_OK;
}

int prg_st_num_tensors(const prg_st *st) { return st ? st->n : 0; }
const prg_st_info *prg_st_info_at(const prg_st *st, int i) { return st && i >= 0 && i < st->n ? &st->t[i] : NULL; }

static const prg_st_info *prg__st_lookup(const prg_st *st, const char *name) {
    prg_st_info key;
    const prg_st_info *kp = &key, **hit;
    if (!st || !name) return NULL;
    key.name = name;
    hit = (const prg_st_info **)bsearch(&kp, (const void *)st->sorted, (size_t)st->n, sizeof *st->sorted, prg__st_cmp_name);
    return hit ? *hit : NULL;
}

prg_result prg_st_find(const prg_st *st, const char *name, prg_st_info *info) {
    const prg_st_info *t = prg__st_lookup(st, name);
    if (!st) return prg__fail(PRG_ERR_ARG, "prg_st_find: st is NULL");
    if (!t) return prg__fail(PRG_ERR_FORMAT, "%s: no tensor '%s' in the file", st->path, name ? name : "(null)");
    if (info) *info = *t;
    return PRG_OK;
}

prg_result prg_st_read_raw(prg_st *st, const char *name, void *dst, size_t nbytes) {
    const prg_st_info *t = prg__st_lookup(st, name);
    if (!st || (!dst && nbytes)) return prg__fail(PRG_ERR_ARG, "prg_st_read_raw: st or dst is NULL");
    if (!t) return prg__fail(PRG_ERR_FORMAT, "%s: no tensor '%s' in the file", st->path, name ? name : "(null)");
    if (nbytes != t->nbytes)
        return prg__fail(PRG_ERR_SHAPE, "%s: tensor '%s' has %llu bytes, the caller expects %zu", st->path, name, (unsigned long long)t->nbytes, nbytes);
    return prg__fread_at(st->f, st->path, t->offset, dst, nbytes);
}

prg_result prg_st_read_f32(prg_st *st, const char *name, float *dst, size_t count, int flags) {
    const prg_st_info *t = prg__st_lookup(st, name);
    size_t esize, done = 0, i;
    prg_result r;
    uint8_t *tmp;
    char shp[160];
    if (!st || (!dst && count)) return prg__fail(PRG_ERR_ARG, "prg_st_read_f32: st or dst is NULL");
    if (!t) return prg__fail(PRG_ERR_FORMAT, "%s: no tensor '%s' in the file", st->path, name ? name : "(null)");
    if (count != t->count) {
        prg__shape_str(shp, sizeof shp, t->shape, t->ndim);
        return prg__fail(PRG_ERR_SHAPE, "%s: tensor '%s' has %zu elements (shape %s), the caller expects %zu", st->path, name, t->count, shp, count);
    }
    esize = prg_dtype_bytes(t->dtype);
    if (t->dtype == PRG_DT_F32 && prg__host_le()) {
        if ((r = prg__fread_at(st->f, st->path, t->offset, dst, t->nbytes)) != PRG_OK) return r;
    } else {
        size_t chunk = (1u << 20) / esize;
        tmp = (uint8_t *)prg_alloc(chunk * esize);
        if (!tmp) return prg__fail(PRG_ERR_NOMEM, "%s: out of memory", st->path);
        while (done < count) {
            size_t k = count - done < chunk ? count - done : chunk;
            if ((r = prg__fread_at(st->f, st->path, t->offset + done * esize, tmp, k * esize)) != PRG_OK) {
                prg_free(tmp);
                return r;
            }
            if (!prg__host_le()) prg__bswap(tmp, esize, k);
            prg_convert_to_f32(dst + done, tmp, t->dtype, k);
            done += k;
        }
        prg_free(tmp);
    }
    if (flags & PRG_ST_FINITE)
        for (i = 0; i < count; i++)
            if (!(dst[i] - dst[i] == 0.0f))
                return prg__fail(PRG_ERR_NUMERIC, "%s: tensor '%s' element %zu (byte %llu) is %s", st->path, name, i,
                                 (unsigned long long)(t->offset + i * esize), dst[i] != dst[i] ? "NaN" : "infinite");
    return PRG_OK;
}

static const prg__stmeta *prg__st_meta(const prg_st *st, const char *key) {
    prg__stmeta k;
    k.key = key;
    k.value = NULL;
    if (!st || !key) return NULL;
    return (const prg__stmeta *)bsearch(&k, st->meta, (size_t)st->nmeta, sizeof *st->meta, prg__st_cmp_meta);
}
const char *prg_st_metadata(const prg_st *st, const char *key) {
    const prg__stmeta *m = prg__st_meta(st, key);
    return m ? m->value : NULL;
}
int prg_st_num_metadata(const prg_st *st) { return st ? st->nmeta : 0; }
void prg_st_metadata_at(const prg_st *st, int i, const char **key, const char **value) {
    int ok = st && i >= 0 && i < st->nmeta;
    if (key) *key = ok ? st->meta[i].key : NULL;
    if (value) *value = ok ? st->meta[i].value : NULL;
}

static int prg__cstr_cmp(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

prg_result prg_st_write(const char *path, const prg_st_tensor *tensors, int n, const char *const *meta_kv, int nmeta) {
    prg__sb b;
    prg__wfile w;
    prg__sink s;
    prg_result r = PRG_OK;
    const char **names = NULL;
    uint64_t off = 0, count;
    uint8_t b8[8];
    int i, k;
    const char *p = path ? path : "(null)";
    if (n < 0 || nmeta < 0 || (n && !tensors) || (nmeta && !meta_kv)) return prg__fail(PRG_ERR_ARG, "%s: bad tensor or metadata count", p);
    for (i = 0; i < n; i++) {
        const prg_st_tensor *t = &tensors[i];
        if (!t->name || !*t->name || strcmp(t->name, "__metadata__") == 0)
            return prg__fail(PRG_ERR_ARG, "%s: tensor %d has no usable name", p, i);
        if ((unsigned)t->dtype >= PRG_DT_COUNT || t->ndim < 0 || t->ndim > PRG_MAX_DIMS ||
            prg__shape_count(t->shape, t->ndim, ((uint64_t)1 << 53) / 8, &count) || (count && !t->data))
            return prg__fail(PRG_ERR_ARG, "%s: tensor '%s' has a bad dtype, shape or NULL data", p, t->name);
    }
    for (i = 0; i < 2 * nmeta; i++)
        if (!meta_kv[i]) return prg__fail(PRG_ERR_ARG, "%s: metadata entry %d is NULL", p, i / 2);
    for (i = 0; i < nmeta; i++)
        for (k = 0; k < i; k++)
            if (strcmp(meta_kv[2 * i], meta_kv[2 * k]) == 0) return prg__fail(PRG_ERR_ARG, "%s: metadata key '%s' given twice", p, meta_kv[2 * i]);
    names = (const char **)PRG_MALLOC(sizeof(char *) * (size_t)(n + 1));
    if (!names) return prg__fail(PRG_ERR_NOMEM, "%s: out of memory", p);
    for (i = 0; i < n; i++) names[i] = tensors[i].name;
    qsort((void *)names, (size_t)n, sizeof *names, prg__cstr_cmp);
    for (i = 1; i < n; i++)
        if (strcmp(names[i - 1], names[i]) == 0) {
            r = prg__fail(PRG_ERR_ARG, "%s: tensor name '%s' given twice", p, names[i]);
            break;
        }
    PRG_FREE((void *)names);
    if (r) return r;
    memset(&b, 0, sizeof b);
    prg__sb_str(&b, "{");
    if (nmeta) {
        prg__sb_str(&b, "\"__metadata__\":{");
        for (i = 0; i < nmeta; i++) {
            if (i) prg__sb_str(&b, ",");
            prg__sb_json(&b, meta_kv[2 * i]);
            prg__sb_str(&b, ":");
            prg__sb_json(&b, meta_kv[2 * i + 1]);
        }
        prg__sb_str(&b, "}");
    }
    for (i = 0; i < n; i++) {
        const prg_st_tensor *t = &tensors[i];
        prg__shape_count(t->shape, t->ndim, ((uint64_t)1 << 53) / 8, &count);
        if (i || nmeta) prg__sb_str(&b, ",");
        prg__sb_json(&b, t->name);
        prg__sb_str(&b, ":{\"dtype\":\"");
        prg__sb_str(&b, prg_dtype_name(t->dtype));
        prg__sb_str(&b, "\",\"shape\":[");
        for (k = 0; k < t->ndim; k++) {
            if (k) prg__sb_str(&b, ",");
            prg__sb_u64(&b, (uint64_t)t->shape[k]);
        }
        prg__sb_str(&b, "],\"data_offsets\":[");
        prg__sb_u64(&b, off);
        prg__sb_str(&b, ",");
        off += count * prg_dtype_bytes(t->dtype);
        prg__sb_u64(&b, off);
        prg__sb_str(&b, "]}");
    }
    prg__sb_str(&b, "}");
    while (b.len % 8) prg__sb_str(&b, " "); /* the data starts 8-byte aligned */
    if (b.oom || b.len > PRG__ST_MAX_HEADER) {
        prg__sb_free(&b);
        return prg__fail(PRG_ERR_NOMEM, "%s: header too large or out of memory", p);
    }
    if ((r = prg__wopen(&w, path)) != PRG_OK) {
        prg__sb_free(&b);
        return r;
    }
    prg__wr64le(b8, b.len);
    prg__wwrite(&w, b8, 8);
    prg__wwrite(&w, b.p, b.len);
    prg__sb_free(&b);
    memset(&s, 0, sizeof s);
    s.w = &w;
    for (i = 0; i < n; i++) {
        prg__shape_count(tensors[i].shape, tensors[i].ndim, ((uint64_t)1 << 53) / 8, &count);
        prg__sink_put_le(&s, tensors[i].data, prg_dtype_bytes(tensors[i].dtype), (size_t)count * prg_dtype_bytes(tensors[i].dtype));
    }
    return prg__wclose(&w);
}

/* >>checkpoint ========================================================== */

static int prg__config_equal(const prg_unet_config *a, const prg_unet_config *b) {
    char sa[512], sb[512];
    if (prg_unet_config_format(a, sa, sizeof sa) != PRG_OK || prg_unet_config_format(b, sb, sizeof sb) != PRG_OK)
        return 0;
    return strcmp(sa, sb) == 0;
}

/* One tensor of a checkpoint: a U-Net or head parameter, with its offset in
   the optimizer's concatenated vector (U-Net block, then head block). */
typedef struct prg__ckpt_entry {
    const char *name;
    int ndim;
    int64_t shape[4];
    float *data;
    size_t count, opt_off;
} prg__ckpt_entry;

/* The entries of a U-Net (and its classifier's head); *n set; NULL on no memory. */
static prg__ckpt_entry *prg__ckpt_entries(prg_unet *net, prg_classifier *clf, int *n) {
    int nu = prg_unet_num_tensors(net), nh = clf ? prg_classifier_num_head_tensors(clf) : 0, i, d;
    prg__ckpt_entry *e = (prg__ckpt_entry *)PRG_MALLOC(sizeof(prg__ckpt_entry) * (size_t)(nu + nh));
    size_t nunet = prg_unet_num_params(net), off;
    if (!e) return NULL;
    for (i = 0; i < nu + nh; i++) {
        prg__ckpt_entry *t = &e[i];
        if (i < nu) {
            prg_unet_tensor_info(net, i, &t->name, &t->ndim, t->shape, &off);
            t->data = prg_unet_params(net) + off;
            t->opt_off = off;
        } else {
            prg_classifier_head_tensor_info(clf, i - nu, &t->name, &t->ndim, t->shape, &off);
            t->data = prg_classifier_head_params(clf, NULL) + off;
            t->opt_off = nunet + off;
        }
        t->count = 1;
        for (d = 0; d < t->ndim; d++) t->count *= (size_t)t->shape[d];
    }
    *n = nu + nh;
    return e;
}

static void prg__fmt_rng(char *buf, size_t cap, const prg_rng *r) {
    snprintf(buf, cap, "%016llx%016llx%016llx%016llx", (unsigned long long)r->s[0], (unsigned long long)r->s[1],
             (unsigned long long)r->s[2], (unsigned long long)r->s[3]);
}

static int prg__parse_rng(const char *s, prg_rng *r) {
    int i, k;
    if (!s || strlen(s) != 64) return 0;
    for (i = 0; i < 4; i++) {
        uint64_t v = 0;
        for (k = 0; k < 16; k++) {
            char ch = s[i * 16 + k];
            int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
            if (d < 0) return 0;
            v = (v << 4) | (uint64_t)d;
        }
        r->s[i] = v;
    }
    return 1;
}

/* A decimal integer, optional '-', nothing else; 0 when out of int64 range. */
static int prg__parse_i64(const char *s, int64_t *v) {
    char *end;
    long long x;
    const char *d = s && *s == '-' ? s + 1 : s;
    if (!d || *d < '0' || *d > '9') return 0;
    errno = 0;
    x = strtoll(s, &end, 10);
    if (*end || errno == ERANGE) return 0;
    *v = (int64_t)x;
    return 1;
}

static prg_result prg__ckpt_write(const char *path, prg_unet *net, prg_classifier *clf, const prg_adam *opt,
                                  const prg_rng *rng, int64_t step, const char *const *extra_kv, int nextra) {
    prg__ckpt_entry *e;
    prg_st_tensor *t = NULL;
    char *names = NULL, cfgs[512], classes[32], span[32], cut[32], rngs[80], steps[32], osteps[32];
    const char *meta[32 + 2 * 32]; /* 13 key/value pairs at most, room to spare, + 32 of the caller's */
    prg__sb cls;          /* prg.classes: the class names as a JSON array */
    int n, i, nt = 0, nmeta = 0, nopt, head_only;
    size_t name_bytes = 0, pos = 0;
    prg_result r;
    if (!path) return prg__fail(PRG_ERR_ARG, "checkpoint: path is NULL");
    if (nextra < 0 || nextra > 32 || (nextra && !extra_kv))
        return prg__fail(PRG_ERR_ARG, "checkpoint %s: %d extra metadata pairs (0..32, extra_kv not NULL)", path, nextra);
    for (i = 0; i < nextra; i++)
        if (!extra_kv[2 * i] || !extra_kv[2 * i + 1] || !strncmp(extra_kv[2 * i], "prg.", 4) ||
            !strncmp(extra_kv[2 * i], "optim.", 6))
            return prg__fail(PRG_ERR_ARG, "checkpoint %s: extra metadata key '%s' is NULL or reserved (prg.*, optim.*)",
                             path, extra_kv[2 * i] ? extra_kv[2 * i] : "(null)");
    memset(&cls, 0, sizeof cls);
    e = prg__ckpt_entries(net, clf, &n);
    if (!e) return prg__fail(PRG_ERR_NOMEM, "checkpoint %s: out of memory", path);
    nopt = opt ? 2 : 0;
    /* an optimizer over the head alone (a frozen U-Net) keeps only the head's moments */
    head_only = opt && clf && prg_adam_num_params(opt) == clf->nhead;
    if (opt && !head_only && prg_adam_num_params(opt) != prg_unet_num_params(net) + (clf ? clf->nhead : 0)) {
        PRG_FREE(e);
        return prg__fail(PRG_ERR_ARG, "checkpoint %s: the optimizer has %zu parameters, the model %zu%s", path,
                         prg_adam_num_params(opt), prg_unet_num_params(net) + (clf ? clf->nhead : 0),
                         clf ? " (or the head alone)" : "");
    }
    for (i = 0; i < n; i++) name_bytes += strlen(e[i].name) + 24;
    t = (prg_st_tensor *)PRG_MALLOC(sizeof(prg_st_tensor) * (size_t)n * (size_t)(1 + nopt));
    names = (char *)PRG_MALLOC(name_bytes * 2 + 1);
    if (!t || !names) {
        PRG_FREE(e); if (t) PRG_FREE(t); if (names) PRG_FREE(names);
        return prg__fail(PRG_ERR_NOMEM, "checkpoint %s: out of memory", path);
    }
    memset(t, 0, sizeof(prg_st_tensor) * (size_t)n * (size_t)(1 + nopt));
    for (i = 0; i < n * (1 + nopt); i++) {
        const prg__ckpt_entry *s = &e[i % n];
        prg_st_tensor *d = &t[nt++];
        int which = i / n; /* 0 params, 1 exp_avg, 2 exp_avg_sq */
        if (which > 0 && head_only && i % n < prg_unet_num_tensors(net)) { nt--; continue; }
        d->ndim = s->ndim;
        memcpy(d->shape, s->shape, sizeof(int64_t) * 4);
        d->dtype = PRG_DT_F32;
        if (which == 0) {
            d->name = s->name;
            d->data = s->data;
        } else {
            d->name = names + pos;
            pos += (size_t)sprintf(names + pos, "optim.%s.%s", which == 1 ? "exp_avg" : "exp_avg_sq", s->name) + 1;
            d->data = (which == 1 ? prg_adam_exp_avg((prg_adam *)opt) : prg_adam_exp_avg_sq((prg_adam *)opt)) + s->opt_off -
                      (head_only ? prg_unet_num_params(net) : 0);
        }
    }
    prg_unet_config_format(prg_unet_config_get(net), cfgs, sizeof cfgs);
    meta[nmeta++] = "prg.version"; meta[nmeta++] = PRG_VERSION_STRING;
    meta[nmeta++] = "prg.kind"; meta[nmeta++] = clf ? "classifier" : "unet";
    meta[nmeta++] = "prg.unet"; meta[nmeta++] = cfgs;
    if (clf) {
        snprintf(classes, sizeof classes, "%d", clf->classes);
        snprintf(span, sizeof span, "%d", clf->t_span);
        snprintf(cut, sizeof cut, "%d", clf->t_cutoff);
        meta[nmeta++] = "prg.num_classes"; meta[nmeta++] = classes;
        meta[nmeta++] = "prg.t_span"; meta[nmeta++] = span;
        meta[nmeta++] = "prg.t_cutoff"; meta[nmeta++] = cut;
        meta[nmeta++] = "prg.path"; meta[nmeta++] = prg_path_name(clf->path);
        if (clf->names) {
            prg__sb_str(&cls, "[");
            for (i = 0; i < clf->classes; i++) {
                if (i) prg__sb_str(&cls, ", ");
                prg__sb_json(&cls, clf->names[i]);
            }
            prg__sb_str(&cls, "]");
            if (cls.oom) {
                PRG_FREE(e); PRG_FREE(t); PRG_FREE(names); prg__sb_free(&cls);
                return prg__fail(PRG_ERR_NOMEM, "checkpoint %s: out of memory", path);
            }
            meta[nmeta++] = "prg.classes"; meta[nmeta++] = cls.p;
        }
    } else if (net->loss != PRG_LOSS_NONE) {
        meta[nmeta++] = "prg.path"; meta[nmeta++] = prg_path_name(prg_unet_path(net));
    }
    if (net->loss != PRG_LOSS_NONE) {
        meta[nmeta++] = "prg.loss"; meta[nmeta++] = prg_loss_name(net->loss);
    }
    if (opt) {
        snprintf(osteps, sizeof osteps, "%lld", (long long)prg_adam_step_count(opt));
        meta[nmeta++] = "optim.step"; meta[nmeta++] = osteps;
        if (head_only) { meta[nmeta++] = "optim.scope"; meta[nmeta++] = "head"; }
    }
    if (rng) {
        prg__fmt_rng(rngs, sizeof rngs, rng);
        meta[nmeta++] = "prg.rng"; meta[nmeta++] = rngs;
    }
    if (opt || rng) {
        snprintf(steps, sizeof steps, "%lld", (long long)step);
        meta[nmeta++] = "prg.step"; meta[nmeta++] = steps;
    }
    for (i = 0; i < 2 * nextra; i++) meta[nmeta++] = extra_kv[i];
    r = prg_st_write(path, t, nt, meta, nmeta / 2);
    PRG_FREE(e);
    PRG_FREE(t);
    PRG_FREE(names);
    prg__sb_free(&cls);
    return r;
}

/* The metadata "prg.classes" (a JSON array of exactly n strings) into the
   classifier's names. */
static prg_result prg__ckpt_class_names(prg_classifier *clf, const char *text, const char *path) {
    prg__js j;
    const char **v;
    int k = 0;
    prg_result r = PRG_OK;
    memset(&j, 0, sizeof j);
    j.s = text;
    j.n = strlen(text);
    j.path = path;
    j.arena = (char *)PRG_MALLOC(j.n + 1);
    v = (const char **)PRG_MALLOC(sizeof(char *) * (size_t)clf->classes);
    if (!j.arena || !v) r = prg__fail(PRG_ERR_NOMEM, "%s: out of memory for the class names", path);
    if (!r && prg__js_expect(&j, '[', NULL)) r = PRG_ERR_FORMAT;
    while (!r && prg__js_peek(&j) != ']') {
        if (k && prg__js_expect(&j, ',', NULL)) r = PRG_ERR_FORMAT;
        else if (k >= clf->classes || prg__js_string(&j, &v[k], NULL)) r = PRG_ERR_FORMAT;
        else k++;
    }
    if (!r) {
        j.i++;
        if (prg__js_peek(&j) != -1 || k != clf->classes) r = PRG_ERR_FORMAT;
    }
    if (r == PRG_ERR_FORMAT)
        prg__fail(r, "%s: metadata prg.classes is not a JSON array of %d strings (the class count; stopped at byte %zu of it)",
                  path, clf->classes, j.i);
    if (!r) r = prg_classifier_set_class_names(clf, v, k);
    if (j.arena) PRG_FREE(j.arena);
    if (v) PRG_FREE((void *)v);
    return r;
}

prg_result prg_unet_save(const prg_unet *net, const char *path) {
    if (!net) return prg__fail(PRG_ERR_ARG, "prg_unet_save: net is NULL");
    return prg__ckpt_write(path, (prg_unet *)net, NULL, NULL, NULL, 0, NULL, 0);
}

prg_result prg_classifier_save(const prg_classifier *clf, const char *path) {
    if (!clf) return prg__fail(PRG_ERR_ARG, "prg_classifier_save: clf is NULL");
    return prg__ckpt_write(path, clf->net, (prg_classifier *)clf, NULL, NULL, 0, NULL, 0);
}

prg_result prg_train_state_save(const prg_unet *net, const prg_classifier *clf, const prg_adam *opt,
                               const prg_rng *rng, int64_t step, const char *path) {
    if ((net != NULL) == (clf != NULL)) return prg__fail(PRG_ERR_ARG, "prg_train_state_save: give exactly one of net, clf");
    return prg__ckpt_write(path, clf ? clf->net : (prg_unet *)net, (prg_classifier *)clf, opt, rng, step, NULL, 0);
}

prg_result prg_train_state_save_meta(const prg_unet *net, const prg_classifier *clf, const prg_adam *opt,
                                    const prg_rng *rng, int64_t step, const char *path,
                                    const char *const *extra_kv, int nextra) {
    if ((net != NULL) == (clf != NULL))
        return prg__fail(PRG_ERR_ARG, "prg_train_state_save_meta: give exactly one of net, clf");
    return prg__ckpt_write(path, clf ? clf->net : (prg_unet *)net, (prg_classifier *)clf, opt, rng, step, extra_kv, nextra);
}

/* The U-Net config a file describes: its metadata, checked against cfg when
   both exist. */
static prg_result prg__ckpt_config(prg_st *st, const char *path, const prg_unet_config *cfg, prg_unet_config *out) {
    const char *s = prg_st_metadata(st, "prg.unet");
    prg_unet_config fc;
    prg_result r;
    if (!s) {
        if (!cfg)
            return prg__fail(PRG_ERR_FORMAT, "%s: no 'prg.unet' config in the metadata; pass the config "
                             "(e.g. a preset) to load a plain state_dict file", path);
        if ((r = prg_unet_config_check(cfg)) != PRG_OK) return r;
        *out = *cfg;
        return PRG_OK;
    }
    if ((r = prg_unet_config_parse(&fc, s)) != PRG_OK)
        return prg__fail_ctx(r, "%s: metadata 'prg.unet'", path);
    if (cfg && !prg__config_equal(cfg, &fc)) {
        char want[512] = "an invalid config";
        prg_unet_config_format(cfg, want, sizeof want);
        return prg__fail(PRG_ERR_SHAPE, "%s holds a U-Net with %s, not the requested %s", path, s, want);
    }
    *out = fc;
    return PRG_OK;
}

/* The memory one image's forward takes by the config c a file carries
   (cfg NULL to the loader): the U-Net forward that keeps what backward
   needs (activations, scratch, layer workspace) and, for a classifier
   (span > 0), its ODE states and buffers; refused over PRG_MAX_FORWARD_MB,
   so that a small file cannot make the first forward allocate gigabytes by
   its metadata alone.  Only tables are allocated here. */
static prg_result prg__ckpt_check_forward(const prg_unet_config *c, const char *path, int64_t span) {
    prg_unet n;
    prg_result r;
    double unet_mb, state_mb, total;
    memset(&n, 0, sizeof n);
    n.cfg = *c;
    if ((r = prg__unet_plan(&n)) != PRG_OK) return r;
    unet_mb = (double)(n.act_floats + n.scr_floats + prg__unet_ws_floats(&n, 1)) * sizeof(float) / 1048576.0;
    prg__unet_plan_free(&n);
    state_mb = span > 0 ? (double)c->in_channels * c->image_size * c->image_size * (double)(span + 5) * sizeof(float) / 1048576.0 : 0;
    total = unet_mb + state_mb;
    if (total <= (double)PRG_MAX_FORWARD_MB) return PRG_OK;
    if (span > 0)
        return prg__fail(PRG_ERR_FORMAT, "%s: metadata prg.unet image_size=%d (model_channels=%d) with prg.t_span=%lld: one image's "
                         "forward would take %.0f MB (U-Net %.0f MB, ODE states %.0f MB), more than PRG_MAX_FORWARD_MB (%d); pass the "
                         "config to the loader to accept the file, or build with a larger PRG_MAX_FORWARD_MB", path, c->image_size,
                         c->model_channels, (long long)span, total, unet_mb, state_mb, (int)PRG_MAX_FORWARD_MB);
    return prg__fail(PRG_ERR_FORMAT, "%s: metadata prg.unet image_size=%d (model_channels=%d): one image's forward would take "
                     "%.0f MB, more than PRG_MAX_FORWARD_MB (%d); pass the config to the loader to accept the file, or build with a "
                     "larger PRG_MAX_FORWARD_MB", path, c->image_size, c->model_channels, total, (int)PRG_MAX_FORWARD_MB);
}

static int prg__dtype_is_float(prg_dtype t) {
    return t == PRG_DT_F32 || t == PRG_DT_F16 || t == PRG_DT_BF16 || t == PRG_DT_F64;
}

/* Tensor name of the file has the model's shape and a float dtype. */
static prg_result prg__ckpt_check_one(prg_st *st, const char *path, const char *name, int ndim, const int64_t *shape,
                                      prg_st_info *info) {
    int k;
    memset(info, 0, sizeof *info);
    if (prg_st_find(st, name, info) != PRG_OK) return prg__fail(PRG_ERR_SHAPE, "%s: tensor '%s' is missing", path, name);
    if (!prg__dtype_is_float(info->dtype))
        return prg__fail(PRG_ERR_FORMAT, "%s: tensor '%s' is stored as %s: weights and training state must be F32, F16, BF16 or F64",
                         path, name, prg_dtype_name(info->dtype));
    for (k = 0; k < info->ndim && info->ndim == ndim; k++)
        if (info->shape[k] != shape[k]) break;
    if (info->ndim != ndim || k < ndim) {
        char got[96], want[96];
        prg__shape_str(got, sizeof got, info->shape, info->ndim);
        prg__shape_str(want, sizeof want, shape, ndim);
        return prg__fail(PRG_ERR_SHAPE, "%s: tensor '%s' has shape %s, the model needs %s", path, name, got, want);
    }
    return PRG_OK;
}

/* With strict, refuses model tensors the file has but the model (names[n])
   has not: optim.* always allowed, head.* too when strict == 1. */
static prg_result prg__ckpt_check_extra(prg_st *st, const char *path, const char *const *names, int n, int strict) {
    int i, k;
    for (i = 0; strict && i < prg_st_num_tensors(st); i++) {
        const prg_st_info *fi = prg_st_info_at(st, i);
        int found = 0;
        if (!strncmp(fi->name, "optim.", 6)) continue;
        if (!strncmp(fi->name, "head.", 5) && strict == 1) continue;
        for (k = 0; k < n && !found; k++) found = !strcmp(fi->name, names[k]);
        if (!found) return prg__fail(PRG_ERR_SHAPE, "%s: tensor '%s' is not part of this model's config", path, fi->name);
    }
    return PRG_OK;
}

/* Reads the entries (and, with opt, their moments) into dst: [n params][moments...]
   laid out as the entries' data / opt offsets say.  Checks every name, shape
   and dtype (float only); refuses NaN/Inf and a negative exp_avg_sq; with
   strict, refuses model tensors the file has but the model has not. */
static prg_result prg__ckpt_read(prg_st *st, const char *path, const prg__ckpt_entry *e, int n,
                                 float *params, size_t nparams, float *m, float *v, int strict) {
    int i, which;
    char name[256];
    const char **names;
    prg_result r;
    for (i = 0; i < n; i++) {
        for (which = 0; which < (m ? 3 : 1); which++) {
            prg_st_info info;
            float *dst = which == 0 ? params + e[i].opt_off : (which == 1 ? m : v) + e[i].opt_off;
            size_t j;
            if (which == 0) snprintf(name, sizeof name, "%s", e[i].name);
            else snprintf(name, sizeof name, "optim.%s.%s", which == 1 ? "exp_avg" : "exp_avg_sq", e[i].name);
            if ((r = prg__ckpt_check_one(st, path, name, e[i].ndim, e[i].shape, &info)) != PRG_OK) return r;
            if ((r = prg_st_read_f32(st, name, dst, e[i].count, PRG_ST_FINITE)) != PRG_OK) return r;
            for (j = 0; which == 2 && j < e[i].count; j++)
                if (dst[j] < 0.0f)
                    return prg__fail(PRG_ERR_NUMERIC, "%s: tensor '%s' element %zu is %g: a second moment cannot be negative", path,
                                     name, j, (double)dst[j]);
        }
    }
    (void)nparams;
    if (!strict) return PRG_OK;
    names = (const char **)PRG_MALLOC(sizeof(char *) * (n > 0 ? (size_t)n : 1));
    if (!names) return prg__fail(PRG_ERR_NOMEM, "%s: out of memory", path);
    for (i = 0; i < n; i++) names[i] = e[i].name;
    r = prg__ckpt_check_extra(st, path, names, n, strict);
    PRG_FREE((void *)names);
    return r;
}

/* Before anything is allocated for the model: every tensor config c needs is
   in the file with its shape and a float dtype (and, with strict, nothing
   else but head.* / optim.*), so that a config naming a larger model than
   the file holds costs only the tensor table.  The head of a classifier of
   `classes` classes (> 0) is checked too. */
static prg_result prg__ckpt_check_table(prg_st *st, const char *path, const prg_unet_config *c, int strict, int64_t classes) {
    prg_unet n;
    prg_st_info info;
    const char **names = NULL;
    prg_result r;
    int i;
    memset(&n, 0, sizeof n);
    n.cfg = *c;
    if ((r = prg__unet_plan(&n)) != PRG_OK) return r;
    for (i = 0; i < n.ntens; i++)
        if ((r = prg__ckpt_check_one(st, path, n.tens[i].name, n.tens[i].ndim, n.tens[i].shape, &info)) != PRG_OK) goto out;
    if (strict) {
        names = (const char **)PRG_MALLOC(sizeof(char *) * (n.ntens > 0 ? (size_t)n.ntens : 1));
        if (!names) {
            r = prg__fail(PRG_ERR_NOMEM, "%s: out of memory", path);
            goto out;
        }
        for (i = 0; i < n.ntens; i++) names[i] = n.tens[i].name;
        if ((r = prg__ckpt_check_extra(st, path, names, n.ntens, strict)) != PRG_OK) goto out;
    }
    if (classes > 0) {
        int pool = prg__head_pool(c->image_size);
        int64_t d = (int64_t)c->in_channels * pool * pool, shape[2];
        for (i = 0; i < PRG__HEAD_NT; i++) {
            shape[0] = i == 4 ? classes : d;
            shape[1] = d;
            if ((r = prg__ckpt_check_one(st, path, prg__head_names[i], (i == 2 || i == 4) ? 2 : 1, shape, &info)) != PRG_OK) goto out;
        }
    }
out:
    if (names) PRG_FREE((void *)names);
    prg__unet_plan_free(&n);
    return r;
}

/* The pretraining loss a file records: "prg.loss", else what "prg.path"
   implies (a classifier file written without prg.loss), else
   PRG_LOSS_NONE; *fpath: "prg.path", or -1 when absent.  In a U-Net file the
   two must agree (a classifier's prg.path is its encoder's, which may have
   been overridden). */
static prg_result prg__ckpt_loss(prg_st *st, const char *path, prg_loss *loss, int *fpath) {
    const char *ls = prg_st_metadata(st, "prg.loss"), *ps = prg_st_metadata(st, "prg.path");
    const char *kind = prg_st_metadata(st, "prg.kind");
    *loss = PRG_LOSS_NONE;
    *fpath = -1;
    if (ps && (strcmp(ps, "icfm") != 0 && strcmp(ps, "gvp") != 0))
        return prg__fail(PRG_ERR_FORMAT, "%s: metadata prg.path is '%s' (icfm or gvp)", path, ps);
    if (ps) *fpath = !strcmp(ps, "gvp") ? PRG_PATH_GVP : PRG_PATH_ICFM;
    if (ls && prg_loss_parse(loss, ls) != PRG_OK)
        return prg__fail(PRG_ERR_FORMAT, "%s: metadata prg.loss is '%s' (icfm, ot or gvp)", path, ls);
    if (ls && ps && !(kind && !strcmp(kind, "classifier")) && (int)prg_loss_path(*loss) != *fpath)
        return prg__fail(PRG_ERR_FORMAT, "%s: metadata prg.loss '%s' and prg.path '%s' disagree (the %s loss has "
                         "the %s path)", path, ls, ps, ls, prg_path_name(prg_loss_path(*loss)));
    if (!ls && ps) *loss = *fpath == PRG_PATH_GVP ? PRG_LOSS_GVP : PRG_LOSS_ICFM;
    return PRG_OK;
}

static prg_result prg__unet_load_st(prg_unet **out, prg_st *st, const char *path, const prg_unet_config *cfg) {
    prg_unet_config c;
    prg_unet *net;
    prg__ckpt_entry *e;
    prg_result r;
    int n, fpath;
    prg_loss loss;
    if ((r = prg__ckpt_config(st, path, cfg, &c)) != PRG_OK) return r;
    if ((r = prg__ckpt_loss(st, path, &loss, &fpath)) != PRG_OK) return r;
    if ((r = prg__ckpt_check_table(st, path, &c, 1, 0)) != PRG_OK) return r;
    if (!cfg && (r = prg__ckpt_check_forward(&c, path, 0)) != PRG_OK) return r;
    if ((r = prg__unet_new(&net, &c)) != PRG_OK) return r;
    net->loss = loss;
    e = prg__ckpt_entries(net, NULL, &n);
    if (!e) {
        prg_unet_free(net);
        return prg__fail(PRG_ERR_NOMEM, "%s: out of memory", path);
    }
    r = prg__ckpt_read(st, path, e, n, prg_unet_params(net), prg_unet_num_params(net), NULL, NULL, 1);
    PRG_FREE(e);
    if (r != PRG_OK) {
        prg_unet_free(net);
        return r;
    }
    *out = net;
    return PRG_OK;
}

prg_result prg_unet_load(prg_unet **net, const char *path, const prg_unet_config *cfg) {
    prg_st *st;
    prg_result r;
    if (!net) return prg__fail(PRG_ERR_ARG, "prg_unet_load: net is NULL");
    *net = NULL;
    if ((r = prg_st_open(&st, path)) != PRG_OK) return r;
    r = prg__unet_load_st(net, st, path, cfg);
    prg_st_close(st);
    return r;
}

/* An integer metadata field: absent (keeps *v), or within [lo, hi]. */
static prg_result prg__meta_int(prg_st *st, const char *path, const char *key, int64_t lo, int64_t hi, const char *limit,
                                int64_t *v) {
    const char *s = prg_st_metadata(st, key);
    if (!s) return PRG_OK;
    if (!prg__parse_i64(s, v) || *v < lo || *v > hi)
        return prg__fail(PRG_ERR_FORMAT, "%s: metadata %s=\"%.40s\" is not an integer in [%lld, %lld]%s", path, key, s, (long long)lo,
                         (long long)hi, limit);
    return PRG_OK;
}

prg_result prg_classifier_load(prg_classifier **out, const char *path, const prg_unet_config *cfg) {
    prg_st *st;
    prg_unet *net = NULL;
    prg_classifier *clf = NULL;
    prg_st_info fc2;
    prg__ckpt_entry *e = NULL;
    prg_unet_config c;
    prg_result r;
    int64_t classes = 0, span = 32, cut = 0;
    int n, nu;
    prg_path enc_path = PRG_PATH_ICFM;
    if (!out) return prg__fail(PRG_ERR_ARG, "prg_classifier_load: clf is NULL");
    *out = NULL;
    if ((r = prg_st_open(&st, path)) != PRG_OK) return r;
    /* everything the metadata says is checked against the tensor table and
       the documented limits before the net or the head is allocated */
    memset(&fc2, 0, sizeof fc2);
    if (prg_st_find(st, "head.fc2.weight", &fc2) != PRG_OK || fc2.ndim != 2) {
        r = prg__fail(PRG_ERR_FORMAT, "%s: no classifier head (tensor 'head.fc2.weight' [classes][D])", path);
        goto done;
    }
    classes = fc2.shape[0];
    if ((r = prg__meta_int(st, path, "prg.num_classes", 1, PRG_MAX_CLASSES, " (PRG_MAX_CLASSES)", &classes)) != PRG_OK ||
        (r = prg__meta_int(st, path, "prg.t_span", 2, PRG_MAX_T_SPAN, " (PRG_MAX_T_SPAN)", &span)) != PRG_OK ||
        (r = prg__meta_int(st, path, "prg.t_cutoff", 0, span, " (0 .. prg.t_span)", &cut)) != PRG_OK)
        goto done;
    if (classes != fc2.shape[0]) {
        r = prg__fail(PRG_ERR_SHAPE, "%s: metadata prg.num_classes=%lld but tensor 'head.fc2.weight' has %lld rows", path,
                      (long long)classes, (long long)fc2.shape[0]);
        goto done;
    }
    {
        /* the encoder's path: prg.path, else the one the net's loss gives */
        int fpath;
        prg_loss loss;
        if ((r = prg__ckpt_loss(st, path, &loss, &fpath)) != PRG_OK) goto done;
        enc_path = fpath >= 0 ? (prg_path)fpath : prg_loss_path(loss);
    }
    if (prg__classifier_steps(enc_path, (int)span, (int)cut) < 0) {
        r = prg__fail(PRG_ERR_FORMAT, "%s: metadata prg.t_span / prg.t_cutoff: %s", path, prg_last_error());
        goto done;
    }
    if ((r = prg__ckpt_config(st, path, cfg, &c)) != PRG_OK) goto done;
    if ((r = prg__ckpt_check_table(st, path, &c, 0, classes)) != PRG_OK) goto done;
    if (!cfg && (r = prg__ckpt_check_forward(&c, path, span)) != PRG_OK) goto done;
    if ((r = prg__unet_load_st(&net, st, path, cfg)) != PRG_OK) goto done;
    /* a grid may be invalid for one path: create on one valid for both, then set both */
    if ((r = prg_classifier_create(&clf, net, (int)classes, (int)span, 0, 0)) != PRG_OK) goto done;
    net = NULL; /* owned by clf */
    clf->path = enc_path;
    if ((r = prg_classifier_set_grid(clf, (int)span, (int)cut)) != PRG_OK) goto done;
    if (prg_st_metadata(st, "prg.classes") &&
        (r = prg__ckpt_class_names(clf, prg_st_metadata(st, "prg.classes"), path)) != PRG_OK)
        goto done;
    e = prg__ckpt_entries(clf->net, clf, &n);
    if (!e) {
        r = prg__fail(PRG_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    nu = prg_unet_num_tensors(clf->net);
    /* the head only: the U-Net is loaded; its tensors come first */
    {
        size_t nunet = prg_unet_num_params(clf->net);
        int i;
        for (i = nu; i < n; i++) e[i].opt_off -= nunet;
        r = prg__ckpt_read(st, path, e + nu, n - nu, clf->head, clf->nhead, NULL, NULL, 0);
    }
done:
    if (e) PRG_FREE(e);
    prg_st_close(st);
    if (r != PRG_OK) {
        prg_unet_free(net);
        prg_classifier_free(clf);
        return r;
    }
    *out = clf;
    return PRG_OK;
}

prg_result prg_train_state_restore(prg_unet *net, prg_classifier *clf, prg_adam *opt, prg_rng *rng,
                                  int64_t *step, const char *path) {
    prg_st *st;
    prg_unet_config c;
    prg__ckpt_entry *e = NULL;
    float *tmp = NULL;
    size_t np, nm;
    int n, head_only;
    int64_t ostep = 0, istep = 0;
    prg_rng rr;
    prg_result r;
    prg_loss floss = PRG_LOSS_NONE;
    int fpath = -1;
    const char *kind;
    if ((net != NULL) == (clf != NULL)) return prg__fail(PRG_ERR_ARG, "prg_train_state_restore: give exactly one of net, clf");
    if (clf) net = clf->net;
    np = prg_unet_num_params(net) + (clf ? clf->nhead : 0);
    head_only = opt && clf && prg_adam_num_params(opt) == clf->nhead;
    if (opt && !head_only && prg_adam_num_params(opt) != np)
        return prg__fail(PRG_ERR_ARG, "prg_train_state_restore: the optimizer has %zu parameters, the model %zu%s",
                         prg_adam_num_params(opt), np, clf ? " (or the head alone)" : "");
    nm = head_only ? clf->nhead : np;
    if ((r = prg_st_open(&st, path)) != PRG_OK) return r;
    if ((r = prg__ckpt_config(st, path, prg_unet_config_get(net), &c)) != PRG_OK) goto done;
    kind = prg_st_metadata(st, "prg.kind");
    if (kind && strcmp(kind, clf ? "classifier" : "unet") != 0) {
        r = prg__fail(PRG_ERR_FORMAT, "%s is a %s checkpoint, not a %s one", path, kind, clf ? "classifier" : "unet");
        goto done;
    }
    if ((r = prg__ckpt_loss(st, path, &floss, &fpath)) != PRG_OK) goto done;
    if (floss != PRG_LOSS_NONE && net->loss != PRG_LOSS_NONE && floss != net->loss) {
        r = prg__fail(PRG_ERR_FORMAT, "%s was trained with the %s loss, this model uses %s: resume with the "
                      "file's loss", path, prg_loss_name(floss), prg_loss_name(net->loss));
        goto done;
    }
    if (clf && fpath >= 0 && fpath != (int)clf->path) {
        r = prg__fail(PRG_ERR_FORMAT, "%s holds a classifier on the %s path, this one is on %s: resume with the "
                      "file's path", path, prg_path_name((prg_path)fpath), prg_path_name(clf->path));
        goto done;
    }
    if ((opt && !prg__parse_i64(prg_st_metadata(st, "optim.step"), &ostep)) ||
        (rng && !prg__parse_rng(prg_st_metadata(st, "prg.rng"), &rr)) ||
        (step && !prg__parse_i64(prg_st_metadata(st, "prg.step"), &istep))) {
        r = prg__fail(PRG_ERR_FORMAT, "%s: no training state (optim.step / prg.rng / prg.step metadata, decimal integers and "
                      "64 hex digits): it was not written by prg_train_state_save with an optimizer and an RNG", path);
        goto done;
    }
    if ((opt && ostep < 0) || (step && istep < 0)) {
        r = prg__fail(PRG_ERR_FORMAT, "%s: metadata %s=%lld is negative: a step count starts at 0", path,
                      opt && ostep < 0 ? "optim.step" : "prg.step", (long long)(opt && ostep < 0 ? ostep : istep));
        goto done;
    }
    if (rng && !(rr.s[0] | rr.s[1] | rr.s[2] | rr.s[3])) {
        r = prg__fail(PRG_ERR_FORMAT, "%s: metadata prg.rng is all zero, a state xoshiro256** never leaves (the noise would "
                      "be degenerate)", path);
        goto done;
    }
    if (opt) {
        const char *scope = prg_st_metadata(st, "optim.scope");
        int file_head = scope && !strcmp(scope, "head");
        if (file_head != head_only) {
            r = prg__fail(PRG_ERR_SHAPE, "%s: the optimizer state covers %s, the optimizer given covers %s", path,
                          file_head ? "the head alone (a frozen run)" : "the whole model",
                          head_only ? "the head alone" : "the whole model");
            goto done;
        }
    }
    e = prg__ckpt_entries(net, clf, &n);
    tmp = (float *)prg_alloc((np + (opt ? 2 * nm : 0)) * sizeof(float));
    if (!e || !tmp) {
        r = prg__fail(PRG_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    /* everything into a scratch copy first: a bad file changes nothing */
    if (head_only) { /* all parameters, then the head's moments (their offsets from the head's start) */
        int nu = prg_unet_num_tensors(net), i;
        size_t nunet = prg_unet_num_params(net);
        r = prg__ckpt_read(st, path, e, n, tmp, np, NULL, NULL, 2);
        for (i = nu; i < n; i++) e[i].opt_off -= nunet;
        if (r == PRG_OK) r = prg__ckpt_read(st, path, e + nu, n - nu, tmp + nunet, nm, tmp + np, tmp + np + nm, 0);
    } else {
        r = prg__ckpt_read(st, path, e, n, tmp, np, opt ? tmp + np : NULL, opt ? tmp + 2 * np : NULL, clf ? 2 : 1);
    }
    if (r != PRG_OK) goto done;
    memcpy(prg_unet_params(net), tmp, prg_unet_num_params(net) * sizeof(float));
    if (clf) memcpy(clf->head, tmp + prg_unet_num_params(net), clf->nhead * sizeof(float));
    if (opt) {
        memcpy(prg_adam_exp_avg(opt), tmp + np, nm * sizeof(float));
        memcpy(prg_adam_exp_avg_sq(opt), tmp + np + nm, nm * sizeof(float));
        prg_adam_set_step_count(opt, ostep);
    }
    if (rng) *rng = rr;
    if (step) *step = istep;
    if (clf) clf->fwd_batch = 0;
    if (net->loss == PRG_LOSS_NONE) net->loss = floss;
done:
    if (e) PRG_FREE(e);
    prg_free(tmp);
    prg_st_close(st);
    return r;
}

/* >>images ============================================================== */

/* ---- writers --------------------------------------------------------- */

static void prg__chunk(prg__wfile *w, const char *type, const uint8_t *data, size_t n) {
    uint8_t b[4];
    uint32_t crc;
    prg__wr32be(b, (uint32_t)n);
    prg__wwrite(w, b, 4);
    prg__wwrite(w, type, 4);
    prg__wwrite(w, data, n);
    crc = prg_crc32(prg_crc32(0, type, 4), data, n);
    prg__wr32be(b, crc);
    prg__wwrite(w, b, 4);
}

/* PNG filter predictor f (0 none, 1 sub, 2 up, 3 average, 4 Paeth) for byte x of row cur. */
static int prg__png_pred(int f, const uint8_t *cur, const uint8_t *up, size_t x, size_t bpp) {
    int a = x >= bpp ? cur[x - bpp] : 0, b = up ? up[x] : 0, c = (up && x >= bpp) ? up[x - bpp] : 0, p, pa, pb, pc;
    switch (f) {
    case 1: return a;
    case 2: return b;
    case 3: return (a + b) / 2;
    case 4:
        p = a + b - c;
        pa = abs(p - a);
        pb = abs(p - b);
        pc = abs(p - c);
        return (pa <= pb && pa <= pc) ? a : pb <= pc ? b : c;
    default: return 0;
    }
}

prg_result prg_png_write(const char *path, const uint8_t *pixels, int h, int w, int c) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    static const uint8_t ctype[5] = {0, 0, 4, 2, 6};
    size_t stride, raw_len, z_len, y, x, off;
    uint8_t *raw, *z, ihdr[13];
    prg__wfile wf;
    prg_result r;
    const char *p = path ? path : "(null)";
    if (!pixels || w < 1 || h < 1 || c < 1 || c > 4 || (size_t)w * (size_t)c > ((size_t)1 << 24) || h > (1 << 24))
        return prg__fail(PRG_ERR_ARG, "%s: bad PNG size %d x %d x %d", p, w, h, c);
    stride = (size_t)w * (size_t)c;
    raw_len = (stride + 1) * (size_t)h;
    if (raw_len / (size_t)h != stride + 1 || raw_len > (size_t)1 << 31) return prg__fail(PRG_ERR_ARG, "%s: PNG too large", p);
    raw = (uint8_t *)prg_alloc(raw_len);
    z = (uint8_t *)prg_alloc(prg_deflate_bound(raw_len) + 6);
    if (!raw || !z) {
        prg_free(raw);
        prg_free(z);
        return prg__fail(PRG_ERR_NOMEM, "%s: out of memory", p);
    }
    for (y = 0; y < (size_t)h; y++) { /* per row the filter (none, sub, up, avg, paeth) with the smallest sum of |residual| */
        const uint8_t *cur = pixels + y * stride, *up = y ? cur - stride : NULL;
        uint8_t *o = raw + y * (stride + 1);
        uint64_t best = UINT64_MAX;
        int f, bestf = 0;
        for (f = 0; f < 5; f++) {
            uint64_t s = 0;
            for (x = 0; x < stride; x++) {
                uint8_t v = (uint8_t)(cur[x] - prg__png_pred(f, cur, up, x, (size_t)c));
                o[1 + x] = v;
                s += v < 128 ? v : 256 - v;
            }
            if (s < best) { best = s; bestf = f; }
        }
        for (x = 0; x < stride; x++) o[1 + x] = (uint8_t)(cur[x] - prg__png_pred(bestf, cur, up, x, (size_t)c)); /* redo the winner */
        o[0] = (uint8_t)bestf;
    }
    z[0] = 0x78;
    z[1] = 0x01;
    z_len = 2 + prg_deflate(z + 2, raw, raw_len);
    prg__wr32be(z + z_len, prg_adler32(1, raw, raw_len));
    z_len += 4;
    prg_free(raw);
    prg__wr32be(ihdr, (uint32_t)w);
    prg__wr32be(ihdr + 4, (uint32_t)h);
    ihdr[8] = 8;
    ihdr[9] = ctype[c];
    ihdr[10] = ihdr[11] = ihdr[12] = 0;
    if ((r = prg__wopen(&wf, path)) != PRG_OK) {
        prg_free(z);
        return r;
    }
    prg__wwrite(&wf, sig, 8);
    prg__chunk(&wf, "IHDR", ihdr, 13);
    for (off = 0; off < z_len; off += (size_t)1 << 20) prg__chunk(&wf, "IDAT", z + off, z_len - off < ((size_t)1 << 20) ? z_len - off : (size_t)1 << 20);
    prg__chunk(&wf, "IEND", NULL, 0);
    prg_free(z);
    return prg__wclose(&wf);
}

prg_result prg_pnm_write(const char *path, const uint8_t *pixels, int h, int w, int c) {
    prg__wfile wf;
    char hdr[64];
    prg_result r;
    if (!pixels || w < 1 || h < 1 || (c != 1 && c != 3) || (size_t)w * (size_t)c > ((size_t)1 << 24) || h > (1 << 24))
        return prg__fail(PRG_ERR_ARG, "%s: bad PGM/PPM size %d x %d x %d (c must be 1 or 3)", path ? path : "(null)", w, h, c);
    if ((r = prg__wopen(&wf, path)) != PRG_OK) return r;
    snprintf(hdr, sizeof hdr, "P%c\n%d %d\n255\n", c == 1 ? '5' : '6', w, h);
    prg__wwrite(&wf, hdr, strlen(hdr));
    prg__wwrite(&wf, pixels, (size_t)w * (size_t)h * (size_t)c);
    return prg__wclose(&wf);
}

/* P5/P6 header: width, height, maxval ('#' comments to the end of the line)
   and the one whitespace byte; *pos = first pixel byte. */
static prg_result prg__pnm_header(const uint8_t *buf, size_t len, const char *path, long v[3], int *ch, size_t *pos_out) {
    size_t pos = 2;
    int k;
    if (len < 2 || buf[0] != 'P' || (buf[1] != '5' && buf[1] != '6'))
        return prg__fail(len >= 2 && buf[0] == 'P' && buf[1] >= '1' && buf[1] <= '7' ? PRG_ERR_UNSUPPORTED : PRG_ERR_FORMAT,
                         "%s: not a binary PGM/PPM (magic P5 or P6 expected at byte 0)", path);
    *ch = buf[1] == '5' ? 1 : 3;
    for (k = 0; k < 3; k++) {
        size_t start;
        for (;;) {
            while (pos < len && (buf[pos] == ' ' || buf[pos] == '\t' || buf[pos] == '\n' || buf[pos] == '\r')) pos++;
            if (pos < len && buf[pos] == '#') {
                while (pos < len && buf[pos] != '\n') pos++;
            } else break;
        }
        if (pos >= len || buf[pos] < '0' || buf[pos] > '9')
            return prg__fail(PRG_ERR_FORMAT, "%s: bad or truncated header at byte %zu (a number expected)", path, pos);
        v[k] = 0;
        start = pos;
        while (pos < len && buf[pos] >= '0' && buf[pos] <= '9') { /* every digit belongs to this number */
            if (v[k] <= 100000000L) v[k] = v[k] * 10 + (buf[pos] - '0');
            pos++;
        }
        if (v[k] < 1 || v[k] > (k < 2 ? 1L << 24 : 65535L))
            return prg__fail(PRG_ERR_FORMAT, "%s: absurd %s %.*s at byte %zu (limit %ld)", path, k == 0 ? "width" : k == 1 ? "height" : "maxval",
                             (int)(pos - start < 20 ? pos - start : 20), (const char *)buf + start, start, k < 2 ? 1L << 24 : 65535L);
    }
    if (pos >= len || (buf[pos] != ' ' && buf[pos] != '\t' && buf[pos] != '\n' && buf[pos] != '\r'))
        return prg__fail(PRG_ERR_FORMAT, "%s: truncated header at byte %zu", path, pos);
    *pos_out = pos + 1;
    return PRG_OK;
}

prg_result prg_pnm_read(const char *path, uint8_t **pixels, int *h, int *w, int *c) {
    uint8_t *buf, *out = NULL;
    size_t len, pos = 0, need, i, n;
    long v[3];
    int ch = 1, bps;
    prg_result r;
    if (!pixels || !w || !h || !c) return prg__fail(PRG_ERR_ARG, "prg_pnm_read: NULL output pointer");
    *pixels = NULL;
    *w = *h = *c = 0;
    /* the header from the first 64 KiB, then no more of the file than it needs */
    if ((r = prg__file_read_part(path, 65536, &buf, &len)) != PRG_OK) return r;
    r = prg__pnm_header(buf, len, path, v, &ch, &pos);
    prg_free(buf);
    if (r) return r;
    bps = v[2] > 255 ? 2 : 1;
    if ((uint64_t)v[0] * (uint64_t)v[1] > (uint64_t)PRG_IMAGE_MAX_PIXELS)
        return prg__fail(PRG_ERR_FORMAT, "%s: image of %ld x %ld pixels is larger than PRG_IMAGE_MAX_PIXELS (%llu)", path, v[0], v[1],
                         (unsigned long long)PRG_IMAGE_MAX_PIXELS);
    n = (size_t)v[0] * (size_t)v[1] * (size_t)ch;
    need = n * (size_t)bps;
    if ((r = prg__file_read_part(path, pos + need, &buf, &len)) != PRG_OK) return r;
    if (len < pos || need > len - pos)
        r = prg__fail(PRG_ERR_FORMAT, "%s: truncated: %zu bytes of pixels expected from byte %zu, the file has %zu", path, need, pos, len - pos);
    if (!r && !(out = (uint8_t *)prg_alloc(n))) r = prg__fail(PRG_ERR_NOMEM, "%s: out of memory", path);
    for (i = 0; !r && i < n; i++) {
        unsigned sv = bps == 2 ? (unsigned)buf[pos + 2 * i] << 8 | buf[pos + 2 * i + 1] : buf[pos + i];
        if (sv > (unsigned)v[2]) {
            r = prg__fail(PRG_ERR_FORMAT, "%s: sample %u at byte %zu exceeds maxval %ld", path, sv, pos + i * (size_t)bps, v[2]);
            break;
        }
        out[i] = (uint8_t)((sv * 255u + (unsigned)v[2] / 2) / (unsigned)v[2]);
    }
    prg_free(buf);
    if (r) {
        prg_free(out);
        return r;
    }
    *pixels = out;
    *w = (int)v[0];
    *h = (int)v[1];
    *c = ch;
    return PRG_OK;
}

prg_result prg_image_grid(const char *path, const float *images, int n, int c, int h, int w, int cols, const float *mean, const float *std) {
    const int pad = 2;
    int rows, gw, gh, i, ch, y, x;
    size_t len;
    uint8_t *g;
    prg_result r;
    const char *ext;
    if (!path || !images || n < 1 || (c != 1 && c != 3) || h < 1 || w < 1 || cols < 0 || h > 65535 || w > 65535 || n > (1 << 24))
        return prg__fail(PRG_ERR_ARG, "image grid %s: bad arguments (n %d, c %d, h %d, w %d, cols %d; c must be 1 or 3)", path ? path : "(null)", n, c, h, w, cols);
    if (cols == 0)
        while ((int64_t)cols * cols < n) cols++;
    if (cols > n) cols = n;
    rows = (n + cols - 1) / cols;
    if ((int64_t)cols * (w + pad) + pad > (1 << 20) || (int64_t)rows * (h + pad) + pad > (1 << 20))
        return prg__fail(PRG_ERR_ARG, "image grid %s: %d x %d tiles is too large", path, rows, cols);
    gw = cols * (w + pad) + pad;
    gh = rows * (h + pad) + pad;
    len = (size_t)gw * (size_t)gh * (size_t)c;
    g = (uint8_t *)prg_alloc(len);
    if (!g) return prg__fail(PRG_ERR_NOMEM, "image grid %s: out of memory", path);
    memset(g, 0, len);
    for (i = 0; i < n; i++) {
        int ox = pad + (i % cols) * (w + pad), oy = pad + (i / cols) * (h + pad);
        for (ch = 0; ch < c; ch++) {
            float m = mean ? mean[ch] : 0.5f, s = std ? std[ch] : 0.5f;
            const float *src = images + (((size_t)i * c + ch) * h) * w;
            for (y = 0; y < h; y++)
                for (x = 0; x < w; x++) {
                    float v = (src[(size_t)y * w + x] * s + m) * 255.0f;
                    v = v != v ? 0.0f : v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v;
                    g[((size_t)(oy + y) * gw + (size_t)(ox + x)) * c + ch] = (uint8_t)(v + 0.5f > 255.0f ? 255.0f : v + 0.5f);
                }
        }
    }
    ext = strrchr(path, '.');
    if (ext && (strcmp(ext, ".ppm") == 0 || strcmp(ext, ".pgm") == 0 || strcmp(ext, ".pnm") == 0)) r = prg_pnm_write(path, g, gh, gw, c);
    else r = prg_png_write(path, g, gh, gw, c);
    prg_free(g);
    return r;
}

/* ---- charts ---------------------------------------------------------- */

/* 5x7 glyphs of ASCII 32..126 (g j p q y and , ; reach into an eighth row),
   8 rows each, bit 4 = the leftmost column. */
static const char prg__font5x8[95 * 8 + 1] =
    "\x00\x00\x00\x00\x00\x00\x00\x00\x04\x04\x04\x04\x04\x00\x04\x00\x0a\x0a\x0a\x00\x00\x00\x00\x00\x0a\x0a\x1f\x0a\x1f\x0a\x0a\x00\x04\x0f\x14\x0e\x05\x1e\x04\x00"
    "\x18\x19\x02\x04\x08\x13\x03\x00\x0c\x12\x14\x08\x15\x12\x0d\x00\x04\x04\x04\x00\x00\x00\x00\x00\x02\x04\x08\x08\x08\x04\x02\x00\x08\x04\x02\x02\x02\x04\x08\x00"
    "\x00\x04\x15\x0e\x15\x04\x00\x00\x00\x04\x04\x1f\x04\x04\x00\x00\x00\x00\x00\x00\x00\x0c\x04\x08\x00\x00\x00\x1f\x00\x00\x00\x00\x00\x00\x00\x00\x00\x0c\x0c\x00"
    "\x00\x01\x02\x04\x08\x10\x00\x00\x0e\x11\x13\x15\x19\x11\x0e\x00\x04\x0c\x04\x04\x04\x04\x0e\x00\x0e\x11\x01\x02\x04\x08\x1f\x00\x1f\x02\x04\x02\x01\x11\x0e\x00"
    "\x02\x06\x0a\x12\x1f\x02\x02\x00\x1f\x10\x1e\x01\x01\x11\x0e\x00\x06\x08\x10\x1e\x11\x11\x0e\x00\x1f\x01\x02\x04\x08\x08\x08\x00\x0e\x11\x11\x0e\x11\x11\x0e\x00"
    "\x0e\x11\x11\x0f\x01\x02\x0c\x00\x00\x0c\x0c\x00\x0c\x0c\x00\x00\x00\x0c\x0c\x00\x0c\x04\x08\x00\x02\x04\x08\x10\x08\x04\x02\x00\x00\x00\x1f\x00\x1f\x00\x00\x00"
    "\x08\x04\x02\x01\x02\x04\x08\x00\x0e\x11\x01\x02\x04\x00\x04\x00\x0e\x11\x01\x0d\x15\x15\x0e\x00\x0e\x11\x11\x1f\x11\x11\x11\x00\x1e\x11\x11\x1e\x11\x11\x1e\x00"
    "\x0e\x11\x10\x10\x10\x11\x0e\x00\x1c\x12\x11\x11\x11\x12\x1c\x00\x1f\x10\x10\x1e\x10\x10\x1f\x00\x1f\x10\x10\x1e\x10\x10\x10\x00\x0e\x11\x10\x17\x11\x11\x0f\x00"
    "\x11\x11\x11\x1f\x11\x11\x11\x00\x0e\x04\x04\x04\x04\x04\x0e\x00\x07\x02\x02\x02\x02\x12\x0c\x00\x11\x12\x14\x18\x14\x12\x11\x00\x10\x10\x10\x10\x10\x10\x1f\x00"
    "\x11\x1b\x15\x15\x11\x11\x11\x00\x11\x11\x19\x15\x13\x11\x11\x00\x0e\x11\x11\x11\x11\x11\x0e\x00\x1e\x11\x11\x1e\x10\x10\x10\x00\x0e\x11\x11\x11\x15\x12\x0d\x00"
    "\x1e\x11\x11\x1e\x14\x12\x11\x00\x0f\x10\x10\x0e\x01\x01\x1e\x00\x1f\x04\x04\x04\x04\x04\x04\x00\x11\x11\x11\x11\x11\x11\x0e\x00\x11\x11\x11\x11\x11\x0a\x04\x00"
    "\x11\x11\x11\x15\x15\x15\x0a\x00\x11\x11\x0a\x04\x0a\x11\x11\x00\x11\x11\x0a\x04\x04\x04\x04\x00\x1f\x01\x02\x04\x08\x10\x1f\x00\x0e\x08\x08\x08\x08\x08\x0e\x00"
    "\x00\x10\x08\x04\x02\x01\x00\x00\x0e\x02\x02\x02\x02\x02\x0e\x00\x04\x0a\x11\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x1f\x00\x08\x04\x02\x00\x00\x00\x00\x00"
    "\x00\x00\x0e\x01\x0f\x11\x0f\x00\x10\x10\x16\x19\x11\x11\x1e\x00\x00\x00\x0e\x10\x10\x11\x0e\x00\x01\x01\x0d\x13\x11\x11\x0f\x00\x00\x00\x0e\x11\x1f\x10\x0e\x00"
    "\x06\x09\x08\x1c\x08\x08\x08\x00\x00\x00\x0f\x11\x11\x0f\x01\x0e\x10\x10\x16\x19\x11\x11\x11\x00\x04\x00\x0c\x04\x04\x04\x0e\x00\x02\x00\x06\x02\x02\x02\x12\x0c"
    "\x10\x10\x12\x14\x18\x14\x12\x00\x0c\x04\x04\x04\x04\x04\x0e\x00\x00\x00\x1a\x15\x15\x11\x11\x00\x00\x00\x16\x19\x11\x11\x11\x00\x00\x00\x0e\x11\x11\x11\x0e\x00"
    "\x00\x00\x1e\x11\x11\x1e\x10\x10\x00\x00\x0f\x11\x11\x0f\x01\x01\x00\x00\x16\x19\x10\x10\x10\x00\x00\x00\x0e\x10\x0e\x01\x1e\x00\x08\x08\x1c\x08\x08\x09\x06\x00"
    "\x00\x00\x11\x11\x11\x13\x0d\x00\x00\x00\x11\x11\x11\x0a\x04\x00\x00\x00\x11\x11\x15\x15\x0a\x00\x00\x00\x11\x0a\x04\x0a\x11\x00\x00\x00\x11\x11\x11\x0f\x01\x0e"
    "\x00\x00\x1f\x02\x04\x08\x1f\x00\x02\x04\x04\x08\x04\x04\x02\x00\x04\x04\x04\x04\x04\x04\x04\x00\x08\x04\x04\x02\x04\x04\x08\x00\x00\x00\x08\x15\x02\x00\x00\x00";
#define PRG__CHART_MAXS 16
#define PRG__CHART_MAXLABEL 32

void prg_chart_color(int i, uint8_t rgb[3]) {
    static const uint8_t pal[10][3] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44}, {214, 39, 40}, {148, 103, 189},
                                       {140, 86, 75}, {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207}};
    i %= 10;
    if (i < 0) i += 10;
    memcpy(rgb, pal[i], 3);
}

void prg_chart_init(prg_chart *c, prg_chart_kind kind, const char *title, const prg_chart_series *series, int nseries) {
    memset(c, 0, sizeof *c);
    c->kind = kind;
    c->width = 800;
    c->height = 500;
    c->title = title;
    c->series = series;
    c->nseries = nseries;
}

typedef struct prg__chart_layout {
    int s, w, h;                     /* text scale, image size */
    int x0, y0, x1, y1;              /* the plot rectangle (inclusive) */
    double xlo, xhi, ylo, yhi;       /* data ranges at the rectangle's edges */
    double xstep, ystep;             /* tick spacing (xstep 0: no numeric x ticks) */
    int xdec, ydec;                  /* decimals of the tick labels */
    int legend_x, legend_chars;
} prg__chart_layout;

/* The 1, 2, 5 x 10^k step nearest to range / target. */
static double prg__nice_step(double range, int target) {
    double raw = range / target, p = pow(10.0, floor(log10(raw))), f = raw / p;
    return (f <= 1.5 ? 1.0 : f <= 3.0 ? 2.0 : f <= 7.0 ? 5.0 : 10.0) * p;
}

static int prg__step_decimals(double step) {
    int d = 0;
    double v = step;
    while (d < 6 && fabs(v - floor(v + 0.5)) > 1e-6 * (v > 1 ? v : 1)) {
        v *= 10.0;
        d++;
    }
    return d;
}

/* The ticks k*step in [lo, hi]: *first = the first k; returns their count
   (at most 100; 0 when the step is too fine for the numbers' precision). */
static int prg__ticks(double lo, double hi, double step, double *first) {
    double a = ceil(lo / step - 1e-9), b = floor(hi / step + 1e-9);
    *first = a;
    if (!(b >= a) || b - a >= 100 || (a + 1.0) * step == a * step) return 0;
    return (int)(b - a) + 1;
}

static void prg__tick_label(char *buf, size_t cap, double v, int dec) {
    if (fabs(v) >= 1e6) snprintf(buf, cap, "%.3g", v);
    else snprintf(buf, cap, "%.*f", dec, fabs(v) < 1e-12 ? 0.0 : v);
}

/* Fits [lo, hi] to the data or takes the given range; then the tick step. */
static prg_result prg__chart_axis(double *lo, double *hi, double *step, int *dec, double dlo, double dhi, double gmin,
                                  double gmax, int fit, const char *which) {
    if (gmin != gmax) {
        if (!isfinite(gmin) || !isfinite(gmax) || gmin > gmax)
            return prg__fail(PRG_ERR_ARG, "chart: the %s range [%g, %g] is not a finite min < max", which, gmin, gmax);
        *lo = gmin;
        *hi = gmax;
    } else {
        if (!(dlo <= dhi)) dlo = 0.0, dhi = 1.0;  /* no data */
        if (dlo == dhi) {
            double d = dlo == 0.0 ? 1.0 : 0.1 * fabs(dlo);
            dlo -= d;
            dhi += d;
        }
        *lo = dlo;
        *hi = dhi;
    }
    *step = prg__nice_step(*hi - *lo, 5);
    if (gmin == gmax && fit) {
        *lo = floor(*lo / *step + 1e-9) * *step;
        *hi = ceil(*hi / *step - 1e-9) * *step;
    }
    *dec = prg__step_decimals(*step);
    return PRG_OK;
}

static int prg__chart_strlen(const char *t) {
    size_t n = t ? strlen(t) : 0;
    return n > PRG__CHART_MAXLABEL * 4 ? PRG__CHART_MAXLABEL * 4 : (int)n;
}

static prg_result prg__chart_layout_make(prg__chart_layout *L, const prg_chart *c) {
    double dxlo = INFINITY, dxhi = -INFINITY, dylo = INFINITY, dyhi = -INFINITY, v;
    int i, j, pad, cw, chh, ylw = 0, xlw = 0, names = 0, right, xint = 1;
    char buf[64];
    prg_result r;
    if (!c || !c->series || c->nseries < 1 || c->nseries > PRG__CHART_MAXS ||
        (c->kind != PRG_CHART_LINE && c->kind != PRG_CHART_BARS))
        return prg__fail(PRG_ERR_ARG, "chart: need a kind (line or bars) and 1..%d series", PRG__CHART_MAXS);
    if (c->width < 120 || c->height < 120 || c->width > 8192 || c->height > 8192)
        return prg__fail(PRG_ERR_ARG, "chart: size %d x %d is outside 120 .. 8192", c->width, c->height);
    if (c->kind == PRG_CHART_BARS && (c->ngroups < 1 || c->ngroups > 4096))
        return prg__fail(PRG_ERR_ARG, "chart: a bar chart needs 1 .. 4096 groups (got %d)", c->ngroups);
    for (i = 0; i < c->nseries; i++) {
        const prg_chart_series *s = c->series + i;
        if (!s->y || s->n < 0 || (c->kind == PRG_CHART_BARS && s->n != c->ngroups))
            return prg__fail(PRG_ERR_ARG, "chart: series %d needs y and %s (n %d)", i,
                             c->kind == PRG_CHART_BARS ? "n = ngroups" : "n >= 0", s->n);
        for (j = 0; j < s->n; j++) {
            double x = c->kind == PRG_CHART_BARS ? j : s->x ? s->x[j] : j;
            if (!isfinite(x)) return prg__fail(PRG_ERR_ARG, "chart: series %d point %d has x = %g", i, j, x);
            if (x != floor(x)) xint = 0;
            if (!isfinite(s->y[j])) continue;
            if (x < dxlo) dxlo = x;
            if (x > dxhi) dxhi = x;
            if (s->y[j] < dylo) dylo = s->y[j];
            if (s->y[j] > dyhi) dyhi = s->y[j];
        }
        if (s->name) names++;
    }
    memset(L, 0, sizeof *L);
    L->w = c->width;
    L->h = c->height;
    L->s = c->width >= 360 && c->height >= 360 ? 2 : 1;
    if (c->kind == PRG_CHART_BARS) {
        if (dylo > 0) dylo = 0;
        if (dyhi < 0) dyhi = 0;
        if (!(dylo <= dyhi)) dylo = dyhi = 0;
        L->xlo = -0.5;
        L->xhi = c->ngroups - 0.5;
    } else if ((r = prg__chart_axis(&L->xlo, &L->xhi, &L->xstep, &L->xdec, dxlo, dxhi, c->x_min, c->x_max, 0, "x")) !=
               PRG_OK)
        return r;
    else if (xint && L->xstep < 1.0 && c->x_min == c->x_max) { /* whole numbers (steps, cutoffs): whole ticks */
        L->xstep = 1.0;
        L->xdec = 0;
    }
    if ((r = prg__chart_axis(&L->ylo, &L->yhi, &L->ystep, &L->ydec, dylo, dyhi, c->y_min, c->y_max, 1, "y")) != PRG_OK)
        return r;
    cw = 6 * L->s;
    chh = 9 * L->s;
    pad = 3 * L->s + 2;
    for (i = 0, j = prg__ticks(L->ylo, L->yhi, L->ystep, &v); i < j; i++) {
        prg__tick_label(buf, sizeof buf, (v + i) * L->ystep, L->ydec);
        if ((int)strlen(buf) > ylw) ylw = (int)strlen(buf);
    }
    if (L->xstep > 0) {
        prg__tick_label(buf, sizeof buf, L->xhi, L->xdec);
        xlw = (int)strlen(buf);
    }
    L->y0 = pad + (c->title ? chh + pad : 0);
    L->x0 = pad + (c->y_label ? chh + pad : 0) + ylw * cw + 3 * L->s + 2;
    L->y1 = c->height - 1 - (3 * L->s + 2 + chh + (c->x_label ? pad + chh : 0) + pad);
    right = pad + xlw * cw / 2;
    if (names) {
        int nw = 0;
        for (i = 0; i < c->nseries; i++)
            if (c->series[i].name) {
                int l = prg__chart_strlen(c->series[i].name);
                if (l > PRG__CHART_MAXLABEL) l = PRG__CHART_MAXLABEL;
                if (l > nw) nw = l;
            }
        if (c->legend_chars > 0) nw = c->legend_chars < PRG__CHART_MAXLABEL ? c->legend_chars : PRG__CHART_MAXLABEL;
        right = 2 * pad + 3 * cw + nw * cw;
        L->legend_chars = nw;
    }
    L->x1 = c->width - 1 - right;
    L->legend_x = L->x1 + 2 * pad;
    if (L->x1 - L->x0 < 40 || L->y1 - L->y0 < 40)
        return prg__fail(PRG_ERR_ARG, "chart: %d x %d leaves no room for the plot next to its labels and legend "
                         "(make it larger or the names shorter)", c->width, c->height);
    return PRG_OK;
}

static double prg__chart_px(const prg__chart_layout *L, double x) {
    return L->x0 + (x - L->xlo) / (L->xhi - L->xlo) * (L->x1 - L->x0);
}
static double prg__chart_py(const prg__chart_layout *L, double y) {
    return L->y1 - (y - L->ylo) / (L->yhi - L->ylo) * (L->y1 - L->y0);
}

/* Fills [x0, x1] x [y0, y1] (inclusive) clipped to clip[4] = x0, y0, x1, y1. */
static void prg__chart_fill(uint8_t *img, int w, int x0, int y0, int x1, int y1, const uint8_t col[3], const int *clip) {
    int x, y;
    if (x0 < clip[0]) x0 = clip[0];
    if (y0 < clip[1]) y0 = clip[1];
    if (x1 > clip[2]) x1 = clip[2];
    if (y1 > clip[3]) y1 = clip[3];
    for (y = y0; y <= y1; y++)
        for (x = x0; x <= x1; x++) memcpy(img + ((size_t)y * w + x) * 3, col, 3);
}

/* Text with its top left at (x, y), scale s; vertical: rotated a quarter
   turn anticlockwise (read bottom to top), (x, y) its bottom left. */
static void prg__chart_text(uint8_t *img, const prg__chart_layout *L, int x, int y, const char *t, int vertical,
                            const uint8_t col[3]) {
    int full[4], i, r, b, n = prg__chart_strlen(t), s = L->s;
    full[0] = full[1] = 0;
    full[2] = L->w - 1;
    full[3] = L->h - 1;
    for (i = 0; i < n; i++) {
        int ch = (unsigned char)t[i];
        const char *g = prg__font5x8 + 8 * ((ch < 32 || ch > 126 ? '?' : ch) - 32);
        for (r = 0; r < 8; r++)
            for (b = 0; b < 5; b++) {
                int gx = i * 6 + b, gy = r;
                if (!((g[r] >> (4 - b)) & 1)) continue;
                if (vertical)
                    prg__chart_fill(img, L->w, x + gy * s, y - (gx + 1) * s + 1, x + gy * s + s - 1, y - gx * s, col, full);
                else
                    prg__chart_fill(img, L->w, x + gx * s, y + gy * s, x + gx * s + s - 1, y + gy * s + s - 1, col, full);
            }
    }
}

/* A thick segment: squares of half-width hw stamped along it. */
static void prg__chart_line(uint8_t *img, const prg__chart_layout *L, double ax, double ay, double bx, double by, int hw,
                            const uint8_t col[3], const int *clip) {
    double d = fabs(bx - ax) > fabs(by - ay) ? fabs(bx - ax) : fabs(by - ay);
    int k, steps = (int)ceil(d);
    if (steps > 4 * (L->w + L->h)) steps = 4 * (L->w + L->h);
    for (k = 0; k <= steps; k++) {
        double f = steps ? (double)k / steps : 0.0;
        int x = (int)floor(ax + f * (bx - ax) + 0.5), y = (int)floor(ay + f * (by - ay) + 0.5);
        prg__chart_fill(img, L->w, x - hw, y - hw, x + hw, y + hw, col, clip);
    }
}

prg_result prg_chart_map(const prg_chart *c, double x, double y, double *px, double *py, int rect[4]) {
    prg__chart_layout L;
    prg_result r = prg__chart_layout_make(&L, c);
    if (r != PRG_OK) return r;
    if (px) *px = prg__chart_px(&L, x);
    if (py) *py = prg__chart_py(&L, y);
    if (rect) {
        rect[0] = L.x0;
        rect[1] = L.y0;
        rect[2] = L.x1;
        rect[3] = L.y1;
    }
    return PRG_OK;
}

prg_result prg_chart_render(const prg_chart *c, uint8_t *rgb) {
    static const uint8_t black[3] = {0, 0, 0}, grid[3] = {225, 225, 225}, dark[3] = {60, 60, 60};
    prg__chart_layout L;
    int plot[4], full[4], data[4], i, j, s, cw, chh, ly, nt;
    double first;
    char buf[64];
    prg_result r;
    if (!rgb) return prg__fail(PRG_ERR_ARG, "prg_chart_render: rgb is NULL");
    if ((r = prg__chart_layout_make(&L, c)) != PRG_OK) return r;
    s = L.s;
    cw = 6 * s;
    chh = 9 * s;
    memset(rgb, 255, (size_t)L.w * L.h * 3);
    plot[0] = L.x0; plot[1] = L.y0; plot[2] = L.x1; plot[3] = L.y1;
    full[0] = full[1] = 0; full[2] = L.w - 1; full[3] = L.h - 1;
    /* the data may reach a marker's size past the plot, not into the labels */
    data[0] = L.x0; data[1] = L.y0 - s - 1; data[2] = L.x1 + s + 1; data[3] = L.y1;
    /* grid, ticks and their labels */
    for (i = 0, nt = prg__ticks(L.ylo, L.yhi, L.ystep, &first); i < nt; i++) {
        double v = (first + i) * L.ystep;
        int y = (int)floor(prg__chart_py(&L, v) + 0.5);
        prg__chart_fill(rgb, L.w, L.x0 + 1, y, L.x1, y, grid, plot);
        prg__chart_fill(rgb, L.w, L.x0 - 3 * s, y, L.x0 - 1, y, black, full);
        prg__tick_label(buf, sizeof buf, v, L.ydec);
        prg__chart_text(rgb, &L, L.x0 - 3 * s - 2 - (int)strlen(buf) * cw + s, y - 7 * s / 2, buf, 0, dark);
    }
    if (c->kind == PRG_CHART_LINE)
        for (i = 0, nt = prg__ticks(L.xlo, L.xhi, L.xstep, &first); i < nt; i++) {
            double v = (first + i) * L.xstep;
            int x = (int)floor(prg__chart_px(&L, v) + 0.5);
            prg__chart_fill(rgb, L.w, x, L.y0, x, L.y1 - 1, grid, plot);
            prg__chart_fill(rgb, L.w, x, L.y1 + 1, x, L.y1 + 3 * s, black, full);
            prg__tick_label(buf, sizeof buf, v, L.xdec);
            prg__chart_text(rgb, &L, x - ((int)strlen(buf) * cw - s) / 2, L.y1 + 3 * s + 2, buf, 0, dark);
        }
    else
        for (j = 0; j < c->ngroups; j++) {
            const char *name = c->groups && c->groups[j] ? c->groups[j] : NULL;
            int x = (int)floor(prg__chart_px(&L, j) + 0.5), gw = (L.x1 - L.x0) / c->ngroups, n;
            if (!name) {
                snprintf(buf, sizeof buf, "%d", j + 1);
                name = buf;
            }
            n = prg__chart_strlen(name);
            if (n * cw > gw && gw >= cw) n = gw / cw; /* cut to the group's width */
            memcpy(buf, name, (size_t)(n < (int)sizeof buf - 1 ? n : (int)sizeof buf - 1));
            buf[n < (int)sizeof buf - 1 ? n : (int)sizeof buf - 1] = 0;
            prg__chart_text(rgb, &L, x - ((int)strlen(buf) * cw - s) / 2, L.y1 + 3 * s + 2, buf, 0, dark);
        }
    /* the data */
    for (i = 0; i < c->nseries; i++) {
        const prg_chart_series *se = c->series + i;
        uint8_t col[3];
        prg_chart_color(i, col);
        if (c->kind == PRG_CHART_BARS) {
            double gw = (double)(L.x1 - L.x0) / c->ngroups, bw = 0.8 * gw / c->nseries;
            double base = prg__chart_py(&L, L.ylo > 0 ? L.ylo : L.yhi < 0 ? L.yhi : 0.0);
            for (j = 0; j < se->n; j++) {
                double left = L.x0 + j * gw + 0.1 * gw + i * bw, top = prg__chart_py(&L, se->y[j]);
                if (!isfinite(se->y[j])) continue;
                prg__chart_fill(rgb, L.w, (int)floor(left + 0.5), (int)floor((top < base ? top : base) + 0.5),
                                (int)floor(left + bw + 0.5) - 1, (int)floor((top < base ? base : top) + 0.5), col, plot);
            }
        } else {
            for (j = 0; j + 1 < se->n; j++) {
                double xa = se->x ? se->x[j] : j, xb = se->x ? se->x[j + 1] : j + 1;
                if (!isfinite(se->y[j]) || !isfinite(se->y[j + 1])) continue;
                prg__chart_line(rgb, &L, prg__chart_px(&L, xa), prg__chart_py(&L, se->y[j]), prg__chart_px(&L, xb),
                                prg__chart_py(&L, se->y[j + 1]), s / 2, col, data);
            }
            for (j = 0; se->n <= (L.x1 - L.x0) / (3 * s + 3) && j < se->n; j++) {
                int x, y;
                if (!isfinite(se->y[j])) continue;
                x = (int)floor(prg__chart_px(&L, se->x ? se->x[j] : j) + 0.5);
                y = (int)floor(prg__chart_py(&L, se->y[j]) + 0.5);
                prg__chart_fill(rgb, L.w, x - s - 1, y - s - 1, x + s + 1, y + s + 1, col, data);
            }
        }
    }
    /* axes, title, labels, legend */
    prg__chart_fill(rgb, L.w, L.x0, L.y0, L.x0, L.y1, black, full);
    prg__chart_fill(rgb, L.w, L.x0, L.y1, L.x1, L.y1, black, full);
    if (c->title)
        prg__chart_text(rgb, &L, (L.x0 + L.x1) / 2 - (prg__chart_strlen(c->title) * cw - s) / 2, 3 * s + 2, c->title,
                        0, black);
    if (c->x_label)
        prg__chart_text(rgb, &L, (L.x0 + L.x1) / 2 - (prg__chart_strlen(c->x_label) * cw - s) / 2,
                        L.y1 + 3 * s + 2 + chh + 3 * s + 2, c->x_label, 0, black);
    if (c->y_label)
        prg__chart_text(rgb, &L, 3 * s + 2, (L.y0 + L.y1) / 2 + (prg__chart_strlen(c->y_label) * cw - s) / 2, c->y_label,
                        1, black);
    ly = L.y0;
    for (i = 0; i < c->nseries; i++) {
        uint8_t col[3];
        int n;
        if (!c->series[i].name) continue;
        prg_chart_color(i, col);
        if (c->kind == PRG_CHART_BARS)
            prg__chart_fill(rgb, L.w, L.legend_x, ly + s, L.legend_x + 2 * cw, ly + 6 * s, col, full);
        else {
            prg__chart_fill(rgb, L.w, L.legend_x, ly + 3 * s, L.legend_x + 2 * cw, ly + 4 * s - 1 + (s > 1), col, full);
            prg__chart_fill(rgb, L.w, L.legend_x + cw - s - 1, ly + 7 * s / 2 - s - 1, L.legend_x + cw + s + 1,
                            ly + 7 * s / 2 + s + 1, col, full);
        }
        n = prg__chart_strlen(c->series[i].name);
        if (n > L.legend_chars) n = L.legend_chars;
        memcpy(buf, c->series[i].name, (size_t)n);
        buf[n] = 0;
        prg__chart_text(rgb, &L, L.legend_x + 3 * cw, ly, buf, 0, black);
        ly += chh + 2 * s;
    }
    return PRG_OK;
}

prg_result prg_chart_write(const char *path, const prg_chart *c) {
    uint8_t *rgb;
    prg_result r;
    if (!path || !c) return prg__fail(PRG_ERR_ARG, "prg_chart_write: path or chart is NULL");
    if (c->width < 120 || c->height < 120 || c->width > 8192 || c->height > 8192)
        return prg__fail(PRG_ERR_ARG, "chart %s: size %d x %d is outside 120 .. 8192", path, c->width, c->height);
    rgb = (uint8_t *)prg_alloc((size_t)c->width * c->height * 3);
    if (!rgb) return prg__fail(PRG_ERR_NOMEM, "chart %s: out of memory", path);
    r = prg_chart_render(c, rgb);
    if (r == PRG_OK) r = prg_png_write(path, rgb, c->height, c->width, 3);
    prg_free(rgb);
    return r;
}

/* ---- resampling (PIL's ImagingResample) ------------------------------- */
/* One resampler for prg_resize_u8 (interleaved [h][w][c]) and the data
   section's prg_planes_resize and crops (planar [c][h][w]): PIL's
   precompute_coeffs + normalize_coeffs_8bpc and its two passes, horizontal
   first, each rounded to 8 bits. */

/* a * b rounded to a double before it is added to anything: no FMA fusing
   (PIL's C and Python's arithmetic round every product).  The data section
   uses it too. */
static double prg__dmul(double a, double b) {
    volatile double p = a * b;
    return p;
}

static double prg__rs_filter(prg_filter f, double x) {
    const double a = -0.5; /* PIL's bicubic */
    if (f == PRG_FILTER_BOX) return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0;
    if (x < 0.0) x = -x;
    if (f == PRG_FILTER_BILINEAR) return x < 1.0 ? 1.0 - x : 0.0;
    if (x < 1.0) return prg__dmul(prg__dmul(prg__dmul(a + 2.0, x) - (a + 3.0), x), x) + 1;
    if (x < 2.0) return (prg__dmul(prg__dmul(x - 5, x) + 8, x) - 4) * a;
    return 0.0;
}

static double prg__rs_support(int in, int out, prg_filter f) {
    double scale = (double)in / out;
    return (f == PRG_FILTER_BOX ? 0.5 : f == PRG_FILTER_BILINEAR ? 1.0 : 2.0) * (scale < 1.0 ? 1.0 : scale);
}
static int prg__rs_ksize(int in, int out, prg_filter f) { return (int)ceil(prg__rs_support(in, out, f)) * 2 + 1; }

/* 22-bit fixed-point weights kk[out][ksize] over the source pixels
   bounds[2 i] .. bounds[2 i] + bounds[2 i + 1] - 1 of output pixel i. */
#define PRG__RS_BITS 22
static void prg__rs_coeffs(int in, int out, prg_filter f, int ksize, int *bounds, int32_t *kk) {
    double scale = (double)in / out, support = prg__rs_support(in, out, f);
    double ss = 1.0 / (scale < 1.0 ? 1.0 : scale);
    int xx, x;
    for (xx = 0; xx < out; xx++) {
        double center = (xx + 0.5) * scale, ww = 0.0;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        int32_t *k = kk + (size_t)xx * ksize;
        if (xmin < 0) xmin = 0;
        if (xmax > in) xmax = in;
        xmax -= xmin;
        for (x = 0; x < xmax; x++) ww += prg__rs_filter(f, (x + xmin - center + 0.5) * ss);
        for (x = 0; x < xmax; x++) {
            double v = prg__rs_filter(f, (x + xmin - center + 0.5) * ss);
            if (ww != 0.0) v /= ww;
            k[x] = v < 0 ? (int32_t)(-0.5 + v * (1 << PRG__RS_BITS)) : (int32_t)(0.5 + v * (1 << PRG__RS_BITS));
        }
        for (; x < ksize; x++) k[x] = 0;
        bounds[2 * xx] = xmin;
        bounds[2 * xx + 1] = xmax;
    }
}

static uint8_t prg__rs_clip(int32_t v) {
    if (v < 0) return 0;
    v >>= PRG__RS_BITS;
    return (uint8_t)(v > 255 ? 255 : v);
}

/* one output value: n source values `step` apart times the weights k
   (exact integer sums, so the order of the additions does not matter) */
static inline uint8_t prg__rs_dot(const uint8_t *p, size_t step, const int32_t *k, int n) {
    int32_t ss = 1 << (PRG__RS_BITS - 1);
    size_t o = 0;
    int i;
    for (i = 0; i + 2 <= n; i += 2, o += 2 * step) ss += p[o] * k[i] + p[o + step] * k[i + 1];
    if (i < n) ss += p[o] * k[i];
    return prg__rs_clip(ss);
}

/* Bytes of prg__resample's workspace; it grows with sh and sw, so a
   workspace for a picture also serves every window of it. */
static size_t prg__rs_workspace(int c, int sh, int sw, int dh, int dw, prg_filter f) {
    size_t kx = (size_t)prg__rs_ksize(sw, dw, f), ky = (size_t)prg__rs_ksize(sh, dh, f);
    return sizeof(int32_t) * ((size_t)dw * kx + (size_t)dh * ky) +
           sizeof(int) * 2 * ((size_t)dw + dh) + (size_t)c * sh * dw;
}

/* Resizes src (sh x sw pixels of c channels) to dst (dh x dw).  Channel ch
   of pixel (y, x) is at y * row + x * pix + ch * chan: pix = c and chan = 1
   for interleaved pixels, pix = 1 and chan = the plane's offset for planar
   ones (row may exceed the width: a window of a larger picture is resized as
   PIL resizes img.crop(window)).  work: prg__rs_workspace() bytes, int-aligned. */
static void prg__resample(uint8_t *dst, int dh, int dw, size_t drow, size_t dchan, const uint8_t *src,
                          int sh, int sw, size_t srow, size_t schan, int c, size_t pix, prg_filter f,
                          void *work) {
    int kx = prg__rs_ksize(sw, dw, f), ky = prg__rs_ksize(sh, dh, f);
    int32_t *kkx = (int32_t *)work, *kky = kkx + (size_t)dw * kx;
    int *bx = (int *)(kky + (size_t)dh * ky), *by = bx + 2 * dw;
    uint8_t *tmp = (uint8_t *)(by + 2 * dh);
    /* the vertical pass works on runs of contiguous bytes: a row of every
       plane, or a whole interleaved row */
    int runs = pix == 1 ? c : 1, y0 = 0, y1 = sh, y, x, i, r, ch;
    size_t len = pix == 1 ? (size_t)dw : (size_t)dw * c, j;
    const uint8_t *in; /* the vertical pass's input: row y0 of the picture, or of tmp */
    if (dh != sh) {
        prg__rs_coeffs(sh, dh, f, ky, by, kky);
        y0 = by[0];
        y1 = by[2 * dh - 2] + by[2 * dh - 1];
    }
    if (dw != sw) { /* horizontal pass over the rows the vertical pass reads: into tmp, or dst if none */
        uint8_t *out = dst;
        size_t orow = drow, ochan = dchan;
        prg__rs_coeffs(sw, dw, f, kx, bx, kkx);
        if (dh != sh) {
            out = tmp;
            orow = pix == 1 ? (size_t)dw : (size_t)dw * c;
            ochan = pix == 1 ? (size_t)(y1 - y0) * dw : 1;
        }
        for (y = y0; y < y1; y++)
            for (ch = 0; ch < c; ch++) {
                const uint8_t *s = src + (size_t)y * srow + (size_t)ch * schan;
                uint8_t *o = out + (size_t)(y - y0) * orow + (size_t)ch * ochan;
                if (pix == 1) /* the same loop, with a constant step */
                    for (x = 0; x < dw; x++) o[x] = prg__rs_dot(s + bx[2 * x], 1, kkx + (size_t)x * kx, bx[2 * x + 1]);
                else
                    for (x = 0; x < dw; x++)
                        o[(size_t)x * pix] = prg__rs_dot(s + (size_t)bx[2 * x] * pix, pix, kkx + (size_t)x * kx, bx[2 * x + 1]);
            }
        in = out;
        srow = orow;
        schan = ochan;
    } else {
        in = src + (size_t)y0 * srow;
    }
    if (dh != sh) { /* vertical pass, a run at a time */
        for (y = 0; y < dh; y++) {
            const int32_t *k = kky + (size_t)y * ky;
            int n = by[2 * y + 1];
            for (r = 0; r < runs; r++) {
                const uint8_t *p = in + (size_t)(by[2 * y] - y0) * srow + (size_t)r * schan;
                uint8_t *o = dst + (size_t)y * drow + (size_t)r * dchan;
                for (j = 0; j + 4 <= len; j += 4) { /* four sums at a time, in registers */
                    int32_t s0 = 1 << (PRG__RS_BITS - 1), s1 = s0, s2 = s0, s3 = s0;
                    size_t q = j;
                    for (i = 0; i < n; i++, q += srow) {
                        int32_t ki = k[i];
                        s0 += p[q] * ki;
                        s1 += p[q + 1] * ki;
                        s2 += p[q + 2] * ki;
                        s3 += p[q + 3] * ki;
                    }
                    o[j] = prg__rs_clip(s0);
                    o[j + 1] = prg__rs_clip(s1);
                    o[j + 2] = prg__rs_clip(s2);
                    o[j + 3] = prg__rs_clip(s3);
                }
                for (; j < len; j++) o[j] = prg__rs_dot(p + j, srow, k, n);
            }
        }
    } else if (dw == sw) {
        for (y = 0; y < sh; y++)
            for (r = 0; r < runs; r++)
                memcpy(dst + (size_t)y * drow + (size_t)r * dchan, src + (size_t)y * srow + (size_t)r * schan, len);
    }
}

/* -- io: images (JPEG, PNG decoding, resizing) -- */
#ifndef PRG_NO_IMAGE

void prg_image_free(prg_image *img) {
    if (!img) return;
    prg_free(img->data);
    img->data = NULL;
    img->w = img->h = img->c = img->src_c = 0;
    img->warnings = 0;
}

prg_result prg_image_alloc(prg_image *img, int h, int w, int c) {
    img->w = img->h = img->c = img->src_c = 0;
    img->data = NULL;
    img->warnings = 0;
    if (w <= 0 || h <= 0 || c < 1 || c > 4 || (uint64_t)w * (uint64_t)h > PRG_IMAGE_MAX_PIXELS)
        return prg__fail(PRG_ERR_ARG, "image size %d x %d x %d is out of range (1..4 channels, at most %lu pixels)",
                         w, h, c, (unsigned long)PRG_IMAGE_MAX_PIXELS);
    img->data = (uint8_t *)prg_alloc((size_t)w * (size_t)h * (size_t)c);
    if (!img->data) return prg__fail(PRG_ERR_NOMEM, "image %d x %d x %d: out of memory", w, h, c);
    img->w = w;
    img->h = h;
    img->c = img->src_c = c;
    return PRG_OK;
}

/* Channel conversion of an interleaved image: 1 gray, 2 gray+alpha, 3 RGB,
   4 RGBA.  Colour -> gray with PIL's L24 weights; alpha dropped or set 255. */
static void prg__image_convert(uint8_t *dst, int dc, const uint8_t *src, int sc, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) {
        const uint8_t *s = src + i * (size_t)sc;
        uint8_t *d = dst + i * (size_t)dc;
        uint8_t r, g, b, a = sc == 2 ? s[1] : sc == 4 ? s[3] : 255;
        if (sc <= 2) r = g = b = s[0];
        else { r = s[0]; g = s[1]; b = s[2]; }
        if (dc <= 2) {
            d[0] = sc <= 2 ? s[0] : (uint8_t)((r * 19595u + g * 38470u + b * 7471u + 0x8000u) >> 16);
            if (dc == 2) d[1] = a;
        } else {
            d[0] = r; d[1] = g; d[2] = b;
            if (dc == 4) d[3] = a;
        }
    }
}

/* Replaces img's pixels by `channels` channels (0 = keep); fewer channels
   in place (prg__image_convert reads a pixel whole before writing it, and
   pixel i's output never passes its input).  Records the decoded channel
   count in src_c.  On failure img is freed. */
static prg_result prg__image_set_channels(prg_image *img, int channels) {
    prg_image t;
    prg_result r;
    img->src_c = img->c;
    if (channels == 0 || channels == img->c) return PRG_OK;
    if (channels < img->c) {
        prg__image_convert(img->data, channels, img->data, img->c, (size_t)img->w * (size_t)img->h);
        img->c = channels;
        return PRG_OK;
    }
    r = prg_image_alloc(&t, img->h, img->w, channels);
    if (r) { prg_image_free(img); return r; }
    prg__image_convert(t.data, channels, img->data, img->c, (size_t)img->w * (size_t)img->h);
    t.warnings = img->warnings;
    t.src_c = img->src_c;
    prg_image_free(img);
    *img = t;
    return PRG_OK;
}

prg_result prg_image_convert(prg_image *img, int channels) {
    prg_result r;
    int src_c;
    if (!img || !img->data || img->w < 1 || img->h < 1 || img->c < 1 || img->c > 4)
        return prg__fail(PRG_ERR_ARG, "prg_image_convert: img is NULL or empty");
    if (channels < 1 || channels > 4) return prg__fail(PRG_ERR_ARG, "prg_image_convert: channels %d (1..4)", channels);
    src_c = img->src_c;
    r = prg__image_set_channels(img, channels);
    if (!r) img->src_c = src_c;
    return r;
}

/* ---- warnings -------------------------------------------------------- */

const char *prg_image_warning_str(unsigned bit) {
    switch (bit) {
    case PRG_IMAGE_WARN_JUNK: return "extraneous bytes before a JPEG marker (skipped)";
    case PRG_IMAGE_WARN_STD_HUFFMAN: return "JPEG without Huffman tables (the standard tables of Annex K used)";
    case PRG_IMAGE_WARN_SHORT_DATA: return "JPEG entropy data ends early (the missing blocks are gray)";
    case PRG_IMAGE_WARN_NO_END: return "the file ends without its end marker (EOI/IEND)";
    case PRG_IMAGE_WARN_BAD_LENGTH: return "JPEG APPn/COM segment with a length below 2 (read as empty)";
    case PRG_IMAGE_WARN_CRC: return "PNG CRC mismatch in the image data or a chunk after it";
    case PRG_IMAGE_WARN_BAD_DATA: return "corrupt JPEG entropy data (an invalid Huffman code or a coefficient past its block)";
    }
    return "";
}

char *prg_image_warnings_format(unsigned warnings, char *buf, size_t size) {
    unsigned bit;
    size_t n = 0;
    if (!size) return buf;
    buf[0] = 0;
    for (bit = 1; bit && n + 1 < size; bit <<= 1) {
        const char *t = (warnings & bit) ? prg_image_warning_str(bit) : "";
        size_t k;
        if (!*t) continue;
        if (n) {
            if (n + 2 >= size) break;
            memcpy(buf + n, "; ", 2);
            n += 2;
        }
        k = strlen(t);
        if (k > size - 1 - n) k = size - 1 - n;
        memcpy(buf + n, t, k);
        n += k;
        buf[n] = 0;
    }
    return buf;
}

/* A defect that djpeg or PIL decode through: recorded in *warn, or refused
   (PRG_ERR_FORMAT) when flags has PRG_DECODE_STRICT.  what says where. */
#if defined(__GNUC__) || defined(__clang__)
__attribute__((format(printf, 5, 6)))
#endif
static prg_result prg__image_tolerate(unsigned flags, unsigned *warn, unsigned bit, const char *name, const char *fmt, ...) {
    char what[256];
    va_list ap;
    if (!(flags & PRG_DECODE_STRICT)) {
        *warn |= bit;
        return PRG_OK;
    }
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return prg__fail(PRG_ERR_FORMAT, "%s: %s (refused in strict mode; libjpeg/PIL accept it)", name ? name : "<memory>", what);
}

/* ---- JPEG ------------------------------------------------------------ */

static const uint8_t prg__jpeg_zz[64] = {
    0,  1,  8,  16, 9,  2,  3,  10, 17, 24, 32, 25, 18, 11, 4,  5,
    12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6,  7,  14, 21, 28,
    35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
    58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63};

typedef struct prg__jhuff {
    uint16_t fast[512];  /* 9-bit lookahead: (length << 8) | symbol, 0 = longer code */
    int32_t maxcode[18]; /* largest code of each length, -1 when none */
    int32_t valoff[18];  /* symbol index = valoff[l] + code */
    uint8_t vals[256];
    int nvals, present;
} prg__jhuff;

typedef struct prg__jcomp {
    int id, h, v, tq, td, ta;
    int bw, bh;          /* blocks per row / column of the MCU-padded grid */
    int cw, ch;          /* samples: ceil(W * h / hmax), ceil(H * v / vmax) */
    unsigned dc_pred;    /* wraps as libjpeg's int does on corrupt data */
    int scanned;
    int16_t *coef;       /* [bh][bw][64], natural order */
    uint8_t *plane;      /* [bh * 8][bw * 8] after the IDCT */
} prg__jcomp;

typedef struct prg__jpeg {
    const uint8_t *buf, *p, *end;
    const char *name;
    uint16_t q[4][64];
    int qset[4];
    prg__jhuff dc[4], ac[4];
    prg__jcomp comp[4];
    int ncomp, w, h, hmax, vmax, mcux, mcuy, progressive, restart;
    int adobe, transform;
    /* the current scan */
    int ns, sc[4], ss, se, ah, al, eobrun;
    uint64_t acc;        /* entropy bits, MSB first */
    int nbits, pad;      /* valid bits in acc; of them, zero bits padded past the data */
    int scans;           /* scans read so far */
    unsigned flags, warn; /* PRG_DECODE_*; PRG_IMAGE_WARN_* so far */
} prg__jpeg;

#define PRG__JNAME(j) ((j)->name ? (j)->name : "<memory>")

static prg_result prg__jpeg_bad(prg__jpeg *j, const char *what) {
    return prg__fail(PRG_ERR_FORMAT, "%s: corrupt JPEG at byte %lu: %s", PRG__JNAME(j),
                     (unsigned long)(j->p - j->buf), what);
}

/* The example tables of the JPEG spec (ITU T.81 Annex K.3, Tables K.3 to
   K.6): codes per length 1..16, then the symbols, for luminance (table 0) and
   chrominance (table 1).  libjpeg uses them when a file defines no table, as
   Motion-JPEG frames do. */
static const uint8_t prg__jstd_dc_counts[2][16] = {{0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0},
                                                   {0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0}};
static const uint8_t prg__jstd_dc_vals[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}; /* both DC tables */
static const uint8_t prg__jstd_ac_counts[2][16] = {{0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d},
                                                   {0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77}};
static const uint8_t prg__jstd_ac_vals[2][162] = {
    {0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07, 0x22, 0x71, 0x14,
     0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0, 0x24, 0x33, 0x62, 0x72, 0x82, 0x09,
     0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a,
     0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65,
     0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88,
     0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9,
     0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca,
     0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea,
     0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa},
    {0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71, 0x13, 0x22, 0x32,
     0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0, 0x15, 0x62, 0x72, 0xd1, 0x0a, 0x16,
     0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39,
     0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64,
     0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x82, 0x83, 0x84, 0x85, 0x86,
     0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
     0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8,
     0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9,
     0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa}};

static prg_result prg__jhuff_build(prg__jpeg *j, prg__jhuff *t, const uint8_t *counts, const uint8_t *vals, int nvals);

/* Fills an undefined table 0 or 1 with the standard one (a warning);
   PRG_ERR_FORMAT for tables 2 and 3, which have none. */
static prg_result prg__jhuff_std(prg__jpeg *j, int ac, int th) {
    prg_result r;
    if (th > 1) return prg__jpeg_bad(j, "SOS uses a Huffman table that was not defined");
    r = prg__image_tolerate(j->flags, &j->warn, PRG_IMAGE_WARN_STD_HUFFMAN, j->name,
                            "SOS at byte %lu uses %s Huffman table %d, which no DHT defined",
                            (unsigned long)(j->p - j->buf), ac ? "AC" : "DC", th);
    if (r) return r;
    return ac ? prg__jhuff_build(j, &j->ac[th], prg__jstd_ac_counts[th], prg__jstd_ac_vals[th], 162)
              : prg__jhuff_build(j, &j->dc[th], prg__jstd_dc_counts[th], prg__jstd_dc_vals, 12);
}

static prg_result prg__jhuff_build(prg__jpeg *j, prg__jhuff *t, const uint8_t *counts, const uint8_t *vals, int nvals) {
    int l, i, k = 0;
    int32_t code = 0;
    memset(t, 0, sizeof *t);
    memcpy(t->vals, vals, (size_t)nvals);
    t->nvals = nvals;
    for (l = 1; l <= 16; l++) {
        t->valoff[l] = k - code;
        for (i = 0; i < counts[l - 1]; i++, k++, code++) {
            if (code >= (1 << l)) return prg__jpeg_bad(j, "Huffman table has too many codes of one length (DHT)");
            if (l <= 9) {
                int f, nfill = 1 << (9 - l);
                for (f = 0; f < nfill; f++) t->fast[(code << (9 - l)) | f] = (uint16_t)((l << 8) | vals[k]);
            }
        }
        t->maxcode[l] = counts[l - 1] ? code - 1 : -1;
        code <<= 1;
    }
    t->present = 1;
    return PRG_OK;
}

static void prg__jbits_fill(prg__jpeg *j) {
    while (j->nbits <= 56) {
        unsigned b = 0;
        if (j->p < j->end && !(j->p[0] == 0xFF && (j->p + 1 >= j->end || j->p[1] != 0x00))) {
            b = *j->p++;
            if (b == 0xFF) j->p++; /* stuffed zero */
        } else {
            j->pad += 8; /* at a marker or the end of the file: zeros */
        }
        j->acc |= (uint64_t)b << (56 - j->nbits);
        j->nbits += 8;
    }
}

static int prg__jbits_get(prg__jpeg *j, int n) { /* n in 1..16, nbits >= n */
    int v = (int)(j->acc >> (64 - n));
    j->acc <<= n;
    j->nbits -= n;
    return v;
}

static int prg__jextend(int v, int s) { return v < (1 << (s - 1)) ? v - (1 << s) + 1 : v; }

/* Decodes one Huffman symbol.  An invalid code: -1 in strict mode; else, as
   libjpeg, 17 bits are dropped and the symbol is 0 (a warning). */
static int prg__jhuff_decode(prg__jpeg *j, const prg__jhuff *t) {
    unsigned peek, f;
    int l;
    if (j->nbits < 32) prg__jbits_fill(j);
    peek = (unsigned)(j->acc >> 48);
    f = t->fast[peek >> 7];
    if (f) {
        j->acc <<= f >> 8;
        j->nbits -= (int)(f >> 8);
        return (int)(f & 255);
    }
    for (l = 10; l <= 16; l++) {
        int32_t c = (int32_t)(peek >> (16 - l));
        if (c <= t->maxcode[l]) {
            int32_t idx = t->valoff[l] + c;
            if (idx < 0 || idx >= t->nvals) return -1;
            j->acc <<= l;
            j->nbits -= l;
            return t->vals[idx];
        }
    }
    if (j->flags & PRG_DECODE_STRICT) return -1;
    if (j->pad <= j->nbits - 17) j->warn |= PRG_IMAGE_WARN_BAD_DATA; /* not in the zero bits past the data */
    j->acc <<= 17;
    j->nbits -= 17;
    return 0;
}

/* Skips to the next marker (0xFF followed by neither 0x00 nor 0xFF). */
static void prg__jpeg_seek_marker(prg__jpeg *j) {
    while (j->p + 1 < j->end && !(j->p[0] == 0xFF && j->p[1] != 0x00 && j->p[1] != 0xFF)) j->p++;
    if (j->p + 1 >= j->end) j->p = j->end;
}

static void prg__jbits_reset(prg__jpeg *j) {
    j->acc = 0;
    j->nbits = 0;
    j->pad = 0;
}

/* A coefficient index k past the last of its block or band (last): libjpeg
   stores it at that index, or at 63 beyond the block, and goes on (its
   zig-zag table has 16 spare entries of 63).  A warning, or in strict mode
   an error (returns nonzero); no warning in the zero bits past the data. */
static int prg__jpeg_overrun(prg__jpeg *j, int k, int last) {
    if (j->pad > j->nbits) return 0;
    return prg__image_tolerate(j->flags, &j->warn, PRG_IMAGE_WARN_BAD_DATA, j->name,
                               "corrupt JPEG at byte %lu: coefficient index %d past the end (%d) of its block or band",
                               (unsigned long)(j->p - j->buf), k, last) != PRG_OK;
}

/* libjpeg stores coefficients as (JCOEF) casts of int: modulo 2^16 on
   corrupt data, not clamped. */
static int16_t prg__jwrap16(unsigned v) {
    v &= 0xFFFFu;
    return (int16_t)(v >= 0x8000u ? (int)v - 0x10000 : (int)v);
}

static prg_result prg__jpeg_block(prg__jpeg *j, prg__jcomp *c, int16_t *blk) {
    int k, s, r, rs;
    if (j->nbits < 32) prg__jbits_fill(j);
    if (!j->progressive) {
        s = prg__jhuff_decode(j, &j->dc[c->td]);
        if (s < 0 || s > 15) return prg__jpeg_bad(j, "invalid DC Huffman code");
        if (j->nbits < 32) prg__jbits_fill(j);
        c->dc_pred += (unsigned)(s ? prg__jextend(prg__jbits_get(j, s), s) : 0);
        blk[0] = prg__jwrap16(c->dc_pred);
        for (k = 1; k < 64; k++) {
            rs = prg__jhuff_decode(j, &j->ac[c->ta]);
            if (rs < 0) return prg__jpeg_bad(j, "invalid AC Huffman code");
            r = rs >> 4;
            s = rs & 15;
            if (s == 0) {
                if (r != 15) break;
                k += 15;
                continue;
            }
            k += r;
            if (k > 63 && prg__jpeg_overrun(j, k, 63)) return PRG_ERR_FORMAT;
            if (j->nbits < 32) prg__jbits_fill(j);
            blk[prg__jpeg_zz[k > 63 ? 63 : k]] = (int16_t)prg__jextend(prg__jbits_get(j, s), s);
        }
        return PRG_OK;
    }
    if (j->ss == 0) { /* DC scan */
        if (j->ah == 0) {
            s = prg__jhuff_decode(j, &j->dc[c->td]);
            if (s < 0 || s > 15) return prg__jpeg_bad(j, "invalid DC Huffman code");
            if (j->nbits < 32) prg__jbits_fill(j);
            c->dc_pred += (unsigned)(s ? prg__jextend(prg__jbits_get(j, s), s) : 0);
            blk[0] = prg__jwrap16(c->dc_pred << j->al);
        } else if (prg__jbits_get(j, 1)) {
            blk[0] = (int16_t)(blk[0] | (1 << j->al));
        }
        return PRG_OK;
    }
    if (j->ah == 0) { /* AC first pass */
        if (j->eobrun > 0) { j->eobrun--; return PRG_OK; }
        for (k = j->ss; k <= j->se; k++) {
            rs = prg__jhuff_decode(j, &j->ac[c->ta]);
            if (rs < 0) return prg__jpeg_bad(j, "invalid AC Huffman code");
            r = rs >> 4;
            s = rs & 15;
            if (j->nbits < 32) prg__jbits_fill(j);
            if (s == 0) {
                if (r < 15) {
                    j->eobrun = (1 << r) - 1;
                    if (r) j->eobrun += prg__jbits_get(j, r);
                    break;
                }
                k += 15;
                continue;
            }
            k += r;
            if (k > j->se && prg__jpeg_overrun(j, k, j->se)) return PRG_ERR_FORMAT;
            blk[prg__jpeg_zz[k > 63 ? 63 : k]] = prg__jwrap16((unsigned)prg__jextend(prg__jbits_get(j, s), s) << j->al);
        }
        return PRG_OK;
    }
    { /* AC refinement */
        int p1 = 1 << j->al, m1 = -p1;
        k = j->ss;
        if (j->eobrun == 0) {
            for (; k <= j->se; k++) {
                int val = 0;
                rs = prg__jhuff_decode(j, &j->ac[c->ta]);
                if (rs < 0) return prg__jpeg_bad(j, "invalid AC Huffman code");
                r = rs >> 4;
                s = rs & 15;
                if (j->nbits < 32) prg__jbits_fill(j);
                if (s) {
                    if (s != 1) return prg__jpeg_bad(j, "refinement coefficient of size other than 1");
                    val = prg__jbits_get(j, 1) ? p1 : m1;
                } else if (r != 15) {
                    j->eobrun = 1 << r;
                    if (r) j->eobrun += prg__jbits_get(j, r);
                    break;
                }
                for (; k <= j->se; k++) {
                    int16_t *co = blk + prg__jpeg_zz[k];
                    if (j->nbits < 2) prg__jbits_fill(j);
                    if (*co != 0) {
                        if (prg__jbits_get(j, 1) && (*co & p1) == 0) *co = (int16_t)(*co + (*co >= 0 ? p1 : m1));
                    } else if (--r < 0) {
                        break;
                    }
                }
                if (val) {
                    if (k > j->se && prg__jpeg_overrun(j, k, j->se)) return PRG_ERR_FORMAT;
                    blk[prg__jpeg_zz[k > 63 ? 63 : k]] = (int16_t)val;
                }
                if (j->pad > j->nbits) return PRG_OK; /* reported by the caller */
            }
        }
        if (j->eobrun > 0) {
            for (; k <= j->se; k++) {
                int16_t *co = blk + prg__jpeg_zz[k];
                if (*co != 0) {
                    if (j->nbits < 2) prg__jbits_fill(j);
                    if (prg__jbits_get(j, 1) && (*co & p1) == 0) *co = (int16_t)(*co + (*co >= 0 ? p1 : m1));
                }
            }
            j->eobrun--;
        }
    }
    return PRG_OK;
}

/* Moves to the next marker at the end of a scan or restart interval.  Whole
   bytes left in the bit buffer and any bytes before the marker (fill 0xFF
   aside) are extraneous data, which libjpeg skips with a warning. */
static prg_result prg__jpeg_end_of_data(prg__jpeg *j) {
    const uint8_t *q = j->p;
    size_t junk = j->nbits > j->pad ? (size_t)(j->nbits - j->pad) / 8 : 0;
    prg__jpeg_seek_marker(j);
    for (; q < j->p; q++) junk += *q != 0xFF;
    if (!junk) return PRG_OK;
    return prg__image_tolerate(j->flags, &j->warn, PRG_IMAGE_WARN_JUNK, j->name,
                               "%lu extraneous bytes of entropy data before the marker at byte %lu", (unsigned long)junk,
                               (unsigned long)(j->p - j->buf));
}

/* Decodes one scan.  Entropy data that runs out (at a marker or the end of
   the file) is read as zero bits to the end of that MCU; the later MCUs of
   the scan, or of the restart interval when its RST marker follows, are left
   as they are, which is what libjpeg does (a warning here). */
static prg_result prg__jpeg_scan(prg__jpeg *j) {
    int mx, my, i, bx, by, nmx, nmy, todo = j->restart, rst = 0, empty = 0;
    prg_result r = PRG_OK;
    prg__jbits_reset(j);
    j->eobrun = 0;
    for (i = 0; i < j->ncomp; i++) j->comp[i].dc_pred = 0;
    if (j->ns == 1) { /* non-interleaved: one block per MCU, only the blocks the image covers */
        prg__jcomp *c = &j->comp[j->sc[0]];
        nmx = (c->cw + 7) / 8;
        nmy = (c->ch + 7) / 8;
    } else {
        nmx = j->mcux;
        nmy = j->mcuy;
    }
    for (my = 0; my < nmy; my++) {
        for (mx = 0; mx < nmx; mx++) {
            if (!empty) {
                if (j->ns == 1) {
                    prg__jcomp *c = &j->comp[j->sc[0]];
                    r = prg__jpeg_block(j, c, c->coef + ((size_t)my * (size_t)c->bw + (size_t)mx) * 64);
                } else {
                    for (i = 0; i < j->ns && !r; i++) {
                        prg__jcomp *c = &j->comp[j->sc[i]];
                        for (by = 0; by < c->v && !r; by++)
                            for (bx = 0; bx < c->h && !r; bx++) {
                                size_t row = (size_t)my * (size_t)c->v + (size_t)by, col = (size_t)mx * (size_t)c->h + (size_t)bx;
                                r = prg__jpeg_block(j, c, c->coef + (row * (size_t)c->bw + col) * 64);
                            }
                    }
                }
                if (r && j->pad <= j->nbits) return r; /* a bad code in real data; in the zero padding it means the data ran out */
                if (j->pad > j->nbits) {
                    r = prg__image_tolerate(j->flags, &j->warn, PRG_IMAGE_WARN_SHORT_DATA, j->name,
                                            "truncated or corrupt JPEG: entropy data ends early at byte %lu (MCU %d of %d)",
                                            (unsigned long)(j->p - j->buf), my * nmx + mx, nmx * nmy);
                    if (r) return r;
                    empty = 1;
                }
            }
            if (j->restart && --todo == 0 && !(my == nmy - 1 && mx == nmx - 1)) {
                if (empty) prg__jpeg_seek_marker(j);
                else if ((r = prg__jpeg_end_of_data(j)) != PRG_OK) return r;
                if (j->p + 1 < j->end && j->p[1] == 0xD0 + (rst & 7)) {
                    j->p += 2;
                    empty = 0;
                } else if (j->p + 1 >= j->end || j->p[1] < 0xD0 || j->p[1] > 0xD7) {
                    /* the end of the file or another marker: libjpeg reads the rest of the scan as empty */
                    if (!empty) {
                        r = prg__image_tolerate(j->flags, &j->warn, PRG_IMAGE_WARN_SHORT_DATA, j->name,
                                                "truncated or corrupt JPEG: expected restart marker RST%d at byte %lu, found %s",
                                                rst & 7, (unsigned long)(j->p - j->buf),
                                                j->p + 1 >= j->end ? "the end of the file" : "another marker");
                        if (r) return r;
                    }
                    empty = 1;
                } else {
                    return prg__fail(PRG_ERR_FORMAT, "%s: corrupt JPEG at byte %lu: expected restart marker RST%d, found RST%d",
                                     PRG__JNAME(j), (unsigned long)(j->p - j->buf), rst & 7, j->p[1] - 0xD0);
                }
                rst++;
                todo = j->restart;
                prg__jbits_reset(j);
                j->eobrun = 0;
                for (i = 0; i < j->ncomp; i++) j->comp[i].dc_pred = 0;
            }
        }
    }
    if (empty) {
        prg__jpeg_seek_marker(j);
        return PRG_OK;
    }
    return prg__jpeg_end_of_data(j);
}

/* One 1-D pass of libjpeg's accurate integer IDCT (jidctint.c, 13-bit
   constants) on x[0..7]; outputs v scaled by 2^13, not yet descaled.  64-bit
   arithmetic, so that no input overflows. */
static void prg__idct8(int64_t *v, const int64_t *x) {
    int64_t z1, z2, z3, z4, z5, t0, t1, t2, t3, t10, t11, t12, t13;
    z1 = (x[2] + x[6]) * 4433;
    t2 = z1 + x[6] * -15137;
    t3 = z1 + x[2] * 6270;
    t0 = (x[0] + x[4]) * 8192;
    t1 = (x[0] - x[4]) * 8192;
    t10 = t0 + t3; t13 = t0 - t3; t11 = t1 + t2; t12 = t1 - t2;
    t0 = x[7]; t1 = x[5]; t2 = x[3]; t3 = x[1];
    z1 = t0 + t3; z2 = t1 + t2; z3 = t0 + t2; z4 = t1 + t3;
    z5 = (z3 + z4) * 9633;
    t0 *= 2446; t1 *= 16819; t2 *= 25172; t3 *= 12299;
    z1 *= -7373; z2 *= -20995; z3 *= -16069; z4 *= -3196;
    z3 += z5; z4 += z5;
    t0 += z1 + z3; t1 += z2 + z4; t2 += z2 + z3; t3 += z1 + z4;
    v[0] = t10 + t3; v[7] = t10 - t3; v[1] = t11 + t2; v[6] = t11 - t2;
    v[2] = t12 + t1; v[5] = t12 - t1; v[3] = t13 + t0; v[4] = t13 - t0;
}

/* Dequantises and inverse-transforms one block: columns first (outputs
   kept with 2 extra bits), then rows, +128 and clamped, as libjpeg. */
static void prg__jpeg_idct(uint8_t *out, int stride, const int16_t *in, const uint16_t *q) {
    int64_t ws[64], x[8], v[8];
    int i, k;
    for (i = 0; i < 8; i++) {
        if (!in[8 + i] && !in[16 + i] && !in[24 + i] && !in[32 + i] && !in[40 + i] && !in[48 + i] && !in[56 + i]) {
            int64_t dc = (int64_t)in[i] * q[i] * 4;
            for (k = 0; k < 8; k++) ws[8 * k + i] = dc;
            continue;
        }
        for (k = 0; k < 8; k++) x[k] = (int64_t)in[8 * k + i] * q[8 * k + i];
        prg__idct8(v, x);
        for (k = 0; k < 8; k++) ws[8 * k + i] = (v[k] + 1024) >> 11;
    }
    for (i = 0; i < 8; i++) {
        uint8_t *o = out + (size_t)i * (size_t)stride;
        for (k = 0; k < 8; k++) x[k] = ws[8 * i + k];
        x[0] += 16; /* rounding of the final >> 18 */
        prg__idct8(v, x);
        for (k = 0; k < 8; k++) { /* clamped, as the SIMD IDCTs of libjpeg-turbo builds do (the C one wraps past +-512) */
            int64_t s = (v[k] >> 18) + 128;
            o[k] = (uint8_t)(s < 0 ? 0 : s > 255 ? 255 : s);
        }
    }
}

/* Row y of component plane p (cw x ch valid samples, row stride ps)
   upsampled by (fx, fy) to W samples, the way libjpeg-turbo does by default
   ("fancy" triangle filters for 2x1, 2x2 and 1x2; replication otherwise).
   t: cw ints of scratch. */
static void prg__jpeg_upsample_row(uint8_t *o, int W, int y, const uint8_t *p, int ps, int cw, int ch, int fx, int fy, int *t) {
    int x, sy = y / fy, last = cw - 1;
    const uint8_t *r0 = p + (size_t)sy * ps, *r1 = r0;
    if (fy == 2) { /* the nearer row weighs 3, the farther 1 (edge rows replicated) */
        int ny = (y & 1) ? sy + 1 : sy - 1;
        if (ny < 0) ny = 0;
        if (ny > ch - 1) ny = ch - 1;
        r1 = p + (size_t)ny * ps;
    }
    if (fx == 1 && fy == 1) {
        memcpy(o, r0, (size_t)W);
    } else if (fx == 2 && fy == 2 && cw > 2) {
        for (x = 0; x < cw; x++) t[x] = r0[x] * 3 + r1[x];
        o[0] = (uint8_t)((t[0] * 4 + 8) >> 4);
        o[1] = (uint8_t)((t[0] * 3 + t[1] + 7) >> 4);
        for (x = 1; x < last; x++) {
            o[2 * x] = (uint8_t)((t[x] * 3 + t[x - 1] + 8) >> 4);
            o[2 * x + 1] = (uint8_t)((t[x] * 3 + t[x + 1] + 7) >> 4);
        }
        o[2 * last] = (uint8_t)((t[last] * 3 + t[last - 1] + 8) >> 4);
        if (2 * last + 1 < W) o[2 * last + 1] = (uint8_t)((t[last] * 4 + 7) >> 4);
    } else if (fx == 2 && fy == 1 && cw > 2) {
        o[0] = r0[0];
        o[1] = (uint8_t)((r0[0] * 3 + r0[1] + 2) >> 2);
        for (x = 1; x < last; x++) {
            o[2 * x] = (uint8_t)((r0[x] * 3 + r0[x - 1] + 1) >> 2);
            o[2 * x + 1] = (uint8_t)((r0[x] * 3 + r0[x + 1] + 2) >> 2);
        }
        o[2 * last] = (uint8_t)((r0[last] * 3 + r0[last - 1] + 1) >> 2);
        if (2 * last + 1 < W) o[2 * last + 1] = r0[last];
    } else if (fx == 1 && fy == 2) {
        int bias = (y & 1) ? 2 : 1;
        for (x = 0; x < W; x++) o[x] = (uint8_t)((r0[x] * 3 + r1[x] + bias) >> 2);
    } else {
        for (x = 0; x < W; x++) o[x] = r0[x / fx];
    }
}

static uint8_t prg__clamp255(int v) { return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v); }

static prg_result prg__jpeg_sof(prg__jpeg *j, const uint8_t *s, int len, int marker) {
    int i;
    uint64_t total = 0;
    if (j->ncomp) return prg__jpeg_bad(j, "second SOF marker");
    if (len < 6) return prg__jpeg_bad(j, "SOF segment too short");
    if (s[0] != 8)
        return prg__fail(PRG_ERR_UNSUPPORTED, "%s: JPEG with %d-bit samples (SOF%d) is not supported; only 8-bit",
                         PRG__JNAME(j), s[0], marker - 0xC0);
    j->h = (s[1] << 8) | s[2];
    j->w = (s[3] << 8) | s[4];
    j->ncomp = s[5];
    j->progressive = marker == 0xC2;
    if (j->h == 0) return prg__fail(PRG_ERR_UNSUPPORTED, "%s: JPEG height 0 (DNL marker) is not supported", PRG__JNAME(j));
    if (j->w == 0) return prg__jpeg_bad(j, "image width 0 in SOF");
    if ((uint64_t)j->w * (uint64_t)j->h > PRG_IMAGE_MAX_PIXELS)
        return prg__fail(PRG_ERR_FORMAT, "%s: JPEG of %d x %d pixels exceeds PRG_IMAGE_MAX_PIXELS (%lu)", PRG__JNAME(j),
                         j->w, j->h, (unsigned long)PRG_IMAGE_MAX_PIXELS);
    if (j->ncomp != 1 && j->ncomp != 3 && j->ncomp != 4) {
        int n = j->ncomp;
        j->ncomp = 0;
        return prg__fail(PRG_ERR_UNSUPPORTED, "%s: JPEG with %d components is not supported (1, 3 or 4)", PRG__JNAME(j), n);
    }
    if (len < 6 + 3 * j->ncomp) { j->ncomp = 0; return prg__jpeg_bad(j, "SOF segment too short for its components"); }
    j->hmax = j->vmax = 1;
    for (i = 0; i < j->ncomp; i++) {
        prg__jcomp *c = &j->comp[i];
        c->id = s[6 + 3 * i];
        c->h = s[7 + 3 * i] >> 4;
        c->v = s[7 + 3 * i] & 15;
        c->tq = s[8 + 3 * i];
        if (c->h < 1 || c->h > 4 || c->v < 1 || c->v > 4 || c->tq > 3) { j->ncomp = 0; return prg__jpeg_bad(j, "bad sampling factor or table in SOF"); }
        if (c->h > j->hmax) j->hmax = c->h;
        if (c->v > j->vmax) j->vmax = c->v;
    }
    j->mcux = (j->w + 8 * j->hmax - 1) / (8 * j->hmax);
    j->mcuy = (j->h + 8 * j->vmax - 1) / (8 * j->vmax);
    for (i = 0; i < j->ncomp; i++) {
        prg__jcomp *c = &j->comp[i];
        if (j->hmax % c->h || j->vmax % c->v)
            return prg__fail(PRG_ERR_UNSUPPORTED, "%s: JPEG sampling factors %dx%d of %dx%d are not integer ratios",
                             PRG__JNAME(j), c->h, c->v, j->hmax, j->vmax);
        c->bw = j->mcux * c->h;
        c->bh = j->mcuy * c->v;
        c->cw = (j->w * c->h + j->hmax - 1) / j->hmax;
        c->ch = (j->h * c->v + j->vmax - 1) / j->vmax;
        total += (uint64_t)c->bw * (uint64_t)c->bh;
    }
    if (total * 64 > (uint64_t)PRG_IMAGE_MAX_PIXELS * 16)
        return prg__fail(PRG_ERR_FORMAT, "%s: JPEG block grid too large", PRG__JNAME(j));
    for (i = 0; i < j->ncomp; i++) {
        prg__jcomp *c = &j->comp[i];
        size_t n = (size_t)c->bw * (size_t)c->bh * 64;
        c->coef = (int16_t *)prg_alloc(n * sizeof(int16_t));
        if (!c->coef) return prg__fail(PRG_ERR_NOMEM, "%s: out of memory for a %d x %d JPEG", PRG__JNAME(j), j->w, j->h);
        memset(c->coef, 0, n * sizeof(int16_t));
    }
    return PRG_OK;
}

static prg_result prg__jpeg_sos(prg__jpeg *j, const uint8_t *s, int len) {
    int i, k;
    if (!j->ncomp) return prg__jpeg_bad(j, "SOS before SOF");
    if (len < 1) return prg__jpeg_bad(j, "SOS segment too short");
    j->ns = s[0];
    if (j->ns < 1 || j->ns > 4 || len != 4 + 2 * j->ns) return prg__jpeg_bad(j, "bad SOS segment length or component count");
    for (i = 0; i < j->ns; i++) {
        int id = s[1 + 2 * i], t = s[2 + 2 * i];
        for (k = 0; k < j->ncomp; k++)
            if (j->comp[k].id == id) break;
        if (k == j->ncomp) return prg__jpeg_bad(j, "SOS names a component that SOF does not have");
        j->sc[i] = k;
        j->comp[k].td = t >> 4;
        j->comp[k].ta = t & 15;
        if (j->comp[k].td > 3 || j->comp[k].ta > 3) return prg__jpeg_bad(j, "bad Huffman table number in SOS");
        j->comp[k].scanned = 1;
    }
    j->ss = s[1 + 2 * j->ns];
    j->se = s[2 + 2 * j->ns];
    j->ah = s[3 + 2 * j->ns] >> 4;
    j->al = s[3 + 2 * j->ns] & 15;
    if (j->progressive) {
        if (j->ss > j->se || j->se > 63 || (j->ss == 0 && j->se != 0) || (j->ss > 0 && j->ns != 1) || j->ah > 13 || j->al > 13)
            return prg__jpeg_bad(j, "bad progressive scan parameters in SOS");
    } else if (j->ss != 0 || j->se != 63 || j->ah != 0 || j->al != 0) {
        return prg__jpeg_bad(j, "bad spectral selection in a sequential SOS");
    }
    if (j->ns > 1) {
        int blocks = 0;
        for (i = 0; i < j->ns; i++) blocks += j->comp[j->sc[i]].h * j->comp[j->sc[i]].v;
        if (blocks > 10) return prg__jpeg_bad(j, "more than 10 blocks per MCU");
    }
    for (i = 0; i < j->ns; i++) {
        prg__jcomp *c = &j->comp[j->sc[i]];
        int need_dc = j->ss == 0 && !(j->progressive && j->ah), need_ac = j->se > 0;
        prg_result r;
        if (need_dc && !j->dc[c->td].present && (r = prg__jhuff_std(j, 0, c->td)) != PRG_OK) return r;
        if (need_ac && !j->ac[c->ta].present && (r = prg__jhuff_std(j, 1, c->ta)) != PRG_OK) return r;
        if (!j->qset[c->tq]) return prg__jpeg_bad(j, "SOS before the quantization table of its component");
    }
    j->scans++;
    return prg__jpeg_scan(j);
}

static prg_result prg__jpeg_finish(prg__jpeg *j, prg_image *img, int channels) {
    /* Adobe transform: 0 = none (RGB / CMYK), 1 = YCbCr, 2 = YCCK; without
       the marker 3 components are YCbCr unless their ids spell R, G, B */
    int i, y, nc = j->ncomp, W = j->w;
    int ycc = nc == 3 ? (j->adobe ? j->transform != 0 : !(j->comp[0].id == 'R' && j->comp[1].id == 'G' && j->comp[2].id == 'B'))
                      : (j->adobe && j->transform == 2);
    int only_y = nc == 1 || (channels == 1 && nc == 3 && ycc); /* YCbCr -> gray keeps Y, as libjpeg */
    uint8_t *rows = NULL, *row[4];
    int *t = NULL;
    prg_result r = PRG_OK;
    for (i = 0; i < nc; i++) {
        prg__jcomp *c = &j->comp[i];
        int bx, by, ps = c->bw * 8;
        if (!c->scanned && !(j->warn & (PRG_IMAGE_WARN_SHORT_DATA | PRG_IMAGE_WARN_NO_END))) /* a cut file: zero, as libjpeg */
            return prg__fail(PRG_ERR_FORMAT, "%s: corrupt JPEG: component %d has no scan", PRG__JNAME(j), c->id);
        c->plane = (uint8_t *)prg_alloc((size_t)ps * (size_t)c->bh * 8);
        if (!c->plane) return prg__fail(PRG_ERR_NOMEM, "%s: out of memory", PRG__JNAME(j));
        for (by = 0; by < (c->ch + 7) / 8; by++)
            for (bx = 0; bx < (c->cw + 7) / 8; bx++)
                prg__jpeg_idct(c->plane + (size_t)by * 8 * ps + (size_t)bx * 8, ps,
                               c->coef + ((size_t)by * c->bw + bx) * 64, j->q[c->tq]);
    }
    rows = (uint8_t *)prg_alloc((size_t)W * 4);
    t = (int *)prg_alloc((size_t)W * sizeof(int));
    if (!rows || !t) { r = prg__fail(PRG_ERR_NOMEM, "%s: out of memory", PRG__JNAME(j)); goto done; }
    r = prg_image_alloc(img, j->h, W, only_y ? 1 : 3);
    if (r) goto done;
    for (i = 0; i < 4; i++) row[i] = rows + (size_t)i * W;
    for (y = 0; y < j->h; y++) {
        uint8_t *o = img->data + (size_t)y * W * img->c;
        int x;
        for (i = 0; i < (only_y ? 1 : nc); i++) {
            prg__jcomp *c = &j->comp[i];
            prg__jpeg_upsample_row(only_y ? o : row[i], W, y, c->plane, c->bw * 8, c->cw, c->ch, j->hmax / c->h, j->vmax / c->v, t);
        }
        if (only_y) continue;
        if (nc == 3 && !ycc) {
            for (x = 0; x < W; x++) { o[3 * x] = row[0][x]; o[3 * x + 1] = row[1][x]; o[3 * x + 2] = row[2][x]; }
        } else if (ycc) { /* libjpeg's fixed-point YCbCr -> RGB (16 fraction bits) */
            for (x = 0; x < W; x++) {
                int yy = row[0][x], cb = row[1][x] - 128, cr = row[2][x] - 128;
                o[3 * x] = prg__clamp255(yy + ((91881 * cr + 32768) >> 16));
                o[3 * x + 1] = prg__clamp255(yy + ((-22554 * cb - 46802 * cr + 32768) >> 16));
                o[3 * x + 2] = prg__clamp255(yy + ((116130 * cb + 32768) >> 16));
            }
        }
        if (nc == 4) { /* CMYK (YCCK: 255 - the RGB above) -> RGB as PIL; Adobe files store inverted CMYK */
            for (x = 0; x < W; x++) {
                int kk = row[3][x], n;
                for (n = 0; n < 3; n++) {
                    int c = ycc ? 255 - o[3 * x + n] : row[n][x];
                    int cv = j->adobe ? 255 - c : c, nk = j->adobe ? kk : 255 - kk, tt = cv * nk + 128;
                    o[3 * x + n] = prg__clamp255(nk - (((tt >> 8) + tt) >> 8));
                }
            }
        }
    }
    r = prg__image_set_channels(img, channels);
    if (!r) img->src_c = nc == 1 ? 1 : 3; /* only Y decoded for 1 channel: the file's own is still colour */
done:
    prg_free(rows);
    prg_free(t);
    return r;
}

static prg_result prg__jpeg_decode(prg_image *img, const uint8_t *buf, size_t len, int channels, unsigned flags,
                                   const char *name) {
    prg__jpeg *j;
    prg_result r = PRG_OK;
    int i, done = 0;
    if (!img) return prg__fail(PRG_ERR_ARG, "prg_jpeg_decode: img is NULL");
    img->w = img->h = img->c = img->src_c = 0;
    img->data = NULL;
    img->warnings = 0;
    if (!buf) return prg__fail(PRG_ERR_ARG, "prg_jpeg_decode: buf is NULL");
    if (channels < 0 || channels > 4) return prg__fail(PRG_ERR_ARG, "prg_jpeg_decode: channels %d (0..4)", channels);
    if (len < 4 || buf[0] != 0xFF || buf[1] != 0xD8)
        return prg__fail(PRG_ERR_FORMAT, "%s: not a JPEG file (no SOI marker FF D8 at byte 0)", name ? name : "<memory>");
    j = (prg__jpeg *)prg_alloc(sizeof *j);
    if (!j) return prg__fail(PRG_ERR_NOMEM, "prg_jpeg_decode: out of memory");
    memset(j, 0, sizeof *j);
    j->buf = buf;
    j->p = buf + 2;
    j->end = buf + len;
    j->name = name;
    j->flags = flags;
    while (!done) {
        int m, seglen;
        const uint8_t *seg;
        if (j->p >= j->end) { /* after a scan libjpeg supplies the EOI (a warning) */
            if (j->scans)
                r = prg__image_tolerate(flags, &j->warn, PRG_IMAGE_WARN_NO_END, name,
                                        "truncated JPEG: file ends at byte %lu before the EOI marker", (unsigned long)len);
            else
                r = prg__fail(PRG_ERR_FORMAT, "%s: truncated JPEG: file ends at byte %lu before the EOI marker", PRG__JNAME(j), (unsigned long)len);
            break;
        }
        if (j->p[0] != 0xFF) { /* libjpeg skips to the next marker (a warning) */
            const uint8_t *q = j->p;
            unsigned long junk = 0;
            prg__jpeg_seek_marker(j);
            for (; q < j->p; q++) junk += *q != 0xFF;
            r = prg__image_tolerate(flags, &j->warn, PRG_IMAGE_WARN_JUNK, name, "corrupt JPEG: %lu extraneous bytes before %s at byte %lu",
                                    junk, j->p >= j->end ? "the end of the file" : "a marker", (unsigned long)(j->p - buf));
            if (r) break;
            continue;
        }
        while (j->p < j->end && j->p[0] == 0xFF) j->p++; /* fill bytes */
        if (j->p >= j->end) continue;
        m = *j->p++;
        if (m == 0xD9) { done = 1; break; }
        if (m >= 0xD0 && m <= 0xD7) { r = prg__jpeg_bad(j, "restart marker outside entropy data"); break; }
        if (m == 0x01 || m == 0xD8) { r = prg__jpeg_bad(j, "unexpected TEM or SOI marker"); break; }
        if (j->end - j->p < 2)
            { r = prg__fail(PRG_ERR_FORMAT, "%s: truncated JPEG: marker 0x%02X at byte %lu has no length", PRG__JNAME(j), m, (unsigned long)(j->p - 2 - buf)); break; }
        seglen = (j->p[0] << 8) | j->p[1];
        if (seglen < 2 && ((m >= 0xE0 && m <= 0xEF) || m == 0xFE)) { /* libjpeg reads it as empty */
            r = prg__image_tolerate(flags, &j->warn, PRG_IMAGE_WARN_BAD_LENGTH, name,
                                    "corrupt JPEG: segment of marker 0x%02X at byte %lu has length %d (at least 2)", m,
                                    (unsigned long)(j->p - 2 - buf), seglen);
            if (r) break;
            j->p += 2;
            continue;
        }
        if (seglen < 2 || seglen > j->end - j->p)
            { r = prg__fail(PRG_ERR_FORMAT, "%s: truncated or corrupt JPEG: segment of marker 0x%02X at byte %lu has length %d, %lu bytes left",
                            PRG__JNAME(j), m, (unsigned long)(j->p - 2 - buf), seglen, (unsigned long)(j->end - j->p)); break; }
        seg = j->p + 2;
        seglen -= 2;
        j->p += 2 + seglen;
        if (m == 0xC0 || m == 0xC1 || m == 0xC2) {
            r = prg__jpeg_sof(j, seg, seglen, m);
        } else if ((m >= 0xC3 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC)) {
            r = prg__fail(PRG_ERR_UNSUPPORTED, "%s: JPEG coding SOF%d (lossless, hierarchical or arithmetic) at byte %lu is not supported",
                          PRG__JNAME(j), m - 0xC0, (unsigned long)(seg - 4 - buf));
        } else if (m == 0xCC) {
            r = prg__fail(PRG_ERR_UNSUPPORTED, "%s: arithmetic-coded JPEG (DAC marker) is not supported", PRG__JNAME(j));
        } else if (m == 0xC4) { /* DHT */
            const uint8_t *s = seg, *e = seg + seglen;
            while (s < e && !r) {
                int tc, th, n = 0, k;
                if (e - s < 17) { r = prg__jpeg_bad(j, "DHT segment too short"); break; }
                tc = s[0] >> 4;
                th = s[0] & 15;
                for (k = 0; k < 16; k++) n += s[1 + k];
                if (tc > 1 || th > 3 || n > 256 || e - s < 17 + n) { r = prg__jpeg_bad(j, "bad DHT segment"); break; }
                r = prg__jhuff_build(j, tc ? &j->ac[th] : &j->dc[th], s + 1, s + 17, n);
                s += 17 + n;
            }
        } else if (m == 0xDB) { /* DQT */
            const uint8_t *s = seg, *e = seg + seglen;
            while (s < e) {
                int pq = s[0] >> 4, tq = s[0] & 15, k;
                if (pq > 1 || tq > 3 || e - s < 1 + 64 * (pq + 1)) { r = prg__jpeg_bad(j, "bad DQT segment"); break; }
                for (k = 0; k < 64; k++)
                    j->q[tq][prg__jpeg_zz[k]] = (uint16_t)(pq ? (s[1 + 2 * k] << 8) | s[2 + 2 * k] : s[1 + k]);
                j->qset[tq] = 1;
                s += 1 + 64 * (pq + 1);
            }
        } else if (m == 0xDD) { /* DRI */
            if (seglen != 2) r = prg__jpeg_bad(j, "bad DRI segment");
            else j->restart = (seg[0] << 8) | seg[1];
        } else if (m == 0xDA) {
            r = prg__jpeg_sos(j, seg, seglen);
        } else if (m == 0xEE) { /* APP14 Adobe */
            if (seglen >= 12 && memcmp(seg, "Adobe", 5) == 0) {
                j->adobe = 1;
                j->transform = seg[11];
            }
        } else if (m == 0xDC) {
            r = prg__fail(PRG_ERR_UNSUPPORTED, "%s: JPEG with a DNL marker is not supported", PRG__JNAME(j));
        } /* APPn, COM and others are skipped */
        if (r) break;
    }
    if (!r && !j->ncomp) r = prg__fail(PRG_ERR_FORMAT, "%s: corrupt JPEG: EOI before any SOF marker", PRG__JNAME(j));
    if (!r) r = prg__jpeg_finish(j, img, channels);
    if (!r) img->warnings = j->warn;
    for (i = 0; i < 4; i++) {
        prg_free(j->comp[i].coef);
        prg_free(j->comp[i].plane);
    }
    prg_free(j);
    if (r) prg_image_free(img);
    return r;
}

prg_result prg_jpeg_decode(prg_image *img, const uint8_t *buf, size_t len, int channels, const char *name) {
    return prg__jpeg_decode(img, buf, len, channels, 0, name);
}

/* ---- resizing -------------------------------------------------------- */

prg_result prg_resize_u8(uint8_t *dst, int dh, int dw, const uint8_t *src, int sh, int sw, int c, prg_filter filter) {
    void *work;
    if (dw <= 0 || dh <= 0 || sw <= 0 || sh <= 0 || c < 1 || c > 4 || (int)filter < 0 || (int)filter > 2 ||
        (uint64_t)dw * (uint64_t)dh > PRG_IMAGE_MAX_PIXELS)
        return prg__fail(PRG_ERR_ARG, "prg_resize_u8: %d x %d -> %d x %d, %d channels, filter %d out of range", sw, sh, dw, dh, c, (int)filter);
    if (dw == sw && dh == sh) {
        memcpy(dst, src, (size_t)sw * (size_t)sh * (size_t)c);
        return PRG_OK;
    }
    work = prg_alloc(prg__rs_workspace(c, sh, sw, dh, dw, filter));
    if (!work) return prg__fail(PRG_ERR_NOMEM, "prg_resize_u8: out of memory (%d x %d -> %d x %d)", sw, sh, dw, dh);
    prg__resample(dst, dh, dw, (size_t)dw * c, 1, src, sh, sw, (size_t)sw * c, 1, c, (size_t)c, filter, work);
    prg_free(work);
    return PRG_OK;
}

prg_result prg_image_resize(prg_image *dst, const prg_image *src, int h, int w, prg_filter filter) {
    prg_result r = prg_image_alloc(dst, h, w, src->c);
    if (r) return r;
    r = prg_resize_u8(dst->data, h, w, src->data, src->h, src->w, src->c, filter);
    if (r) prg_image_free(dst);
    return r;
}

prg_result prg_image_resize_short(prg_image *dst, const prg_image *src, int size, prg_filter filter) {
    int64_t w, h;
    if (!dst || !src || size <= 0 || src->w < 1 || src->h < 1)
        return prg__fail(PRG_ERR_ARG, "prg_image_resize_short: size %d, source %d x %d", size, src ? src->w : 0, src ? src->h : 0);
    if (src->w <= src->h) { w = size; h = (int64_t)size * src->h / src->w; }
    else { h = size; w = (int64_t)size * src->w / src->h; }
    if (w < 1) w = 1;
    if (h < 1) h = 1;
    /* the output size itself, in 64 bits, against the pixel limit: an
       extreme aspect ratio (2^26 x 1) must not wrap an int */
    if ((uint64_t)w * (uint64_t)h > PRG_IMAGE_MAX_PIXELS)
        return prg__fail(PRG_ERR_ARG, "prg_image_resize_short: %d x %d to shorter side %d gives %lld x %lld, more than PRG_IMAGE_MAX_PIXELS",
                         src->w, src->h, size, (long long)w, (long long)h);
    return prg_image_resize(dst, src, (int)h, (int)w, filter);
}

prg_result prg_image_crop(prg_image *dst, const prg_image *src, int y, int x, int h, int w) {
    prg_result r;
    int row;
    if (x < 0 || y < 0 || w <= 0 || h <= 0 || x > src->w - w || y > src->h - h)
        return prg__fail(PRG_ERR_ARG, "prg_image_crop: %d x %d at (%d, %d) does not fit in %d x %d", w, h, x, y, src->w, src->h);
    r = prg_image_alloc(dst, h, w, src->c);
    if (r) return r;
    for (row = 0; row < h; row++)
        memcpy(dst->data + (size_t)row * w * src->c, src->data + ((size_t)(y + row) * src->w + x) * src->c, (size_t)w * src->c);
    return PRG_OK;
}

/* Python's round(d / 2) for d >= 0: halves go to the even neighbour. */
static int prg__round_half(int d) {
    int q = d / 2;
    return (d & 1) && (q & 1) ? q + 1 : q;
}

prg_result prg_image_center_crop(prg_image *dst, const prg_image *src, int h, int w) {
    if (w > src->w || h > src->h || w <= 0 || h <= 0)
        return prg__fail(PRG_ERR_ARG, "prg_image_center_crop: %d x %d does not fit in %d x %d", w, h, src->w, src->h);
    return prg_image_crop(dst, src, prg__round_half(src->h - h), prg__round_half(src->w - w), h, w);
}

prg_result prg_image_eval_transform(prg_image *dst, const prg_image *src, int size) {
    prg_image t;
    prg_result r;
    if (size <= 0 || size > 65536) return prg__fail(PRG_ERR_ARG, "prg_image_eval_transform: size %d", size);
    r = prg_image_resize_short(&t, src, size * 256 / 224, PRG_FILTER_BICUBIC);
    if (r) return r;
    r = prg_image_center_crop(dst, &t, size, size);
    prg_image_free(&t);
    return r;
}

void prg_image_to_planar(uint8_t *dst, const prg_image *src) {
    size_t n = (size_t)src->w * src->h, i;
    int ch;
    for (ch = 0; ch < src->c; ch++)
        for (i = 0; i < n; i++) dst[(size_t)ch * n + i] = src->data[i * src->c + ch];
}

/* ---- PNG ------------------------------------------------------------- */

static uint32_t prg__be32(const uint8_t *p) { return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3]; }

static int prg__paeth(int a, int b, int c) {
    int p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
    return (pa <= pb && pa <= pc) ? a : pb <= pc ? b : c;
}

/* Undoes the filters of rows rows of rb bytes (each preceded by its filter
   type byte) in place; returns the 0-based row of a bad filter type or -1. */
static int prg__png_unfilter(uint8_t *d, size_t rb, int rows, int bpp) {
    int y;
    size_t i;
    for (y = 0; y < rows; y++) {
        uint8_t *row = d + (size_t)y * (rb + 1) + 1, *prev = y ? row - (rb + 1) : NULL;
        int ft = row[-1];
        switch (ft) {
        case 0: break;
        case 1: for (i = (size_t)bpp; i < rb; i++) row[i] = (uint8_t)(row[i] + row[i - bpp]); break;
        case 2: if (prev) for (i = 0; i < rb; i++) row[i] = (uint8_t)(row[i] + prev[i]); break;
        case 3:
            for (i = 0; i < rb; i++) {
                int a = i >= (size_t)bpp ? row[i - bpp] : 0, b = prev ? prev[i] : 0;
                row[i] = (uint8_t)(row[i] + ((a + b) >> 1));
            }
            break;
        case 4:
            for (i = 0; i < rb; i++) {
                int a = i >= (size_t)bpp ? row[i - bpp] : 0, b = prev ? prev[i] : 0;
                int c = (prev && i >= (size_t)bpp) ? prev[i - bpp] : 0;
                row[i] = (uint8_t)(row[i] + prg__paeth(a, b, c));
            }
            break;
        default: return y;
        }
    }
    return -1;
}

typedef struct prg__png {
    int w, h, depth, ctype, interlace, nch, outc, npal, ntrns;
    uint8_t pal[256][4];
    int trns_key[3], has_key;
} prg__png;

/* Writes pass pixels (pw x ph, unfiltered rows of rb bytes) to out at
   (x0 + x*dx, y0 + y*dy), converted to 8 bits and outc channels. */
static void prg__png_emit(const prg__png *P, uint8_t *out, const uint8_t *d, size_t rb, int pw, int ph,
                          int x0, int y0, int dx, int dy) {
    int x, y, k, mask = (1 << P->depth) - 1;
    for (y = 0; y < ph; y++) {
        const uint8_t *row = d + (size_t)y * (rb + 1) + 1;
        for (x = 0; x < pw; x++) {
            uint8_t *o = out + ((size_t)(y0 + y * dy) * P->w + (size_t)(x0 + x * dx)) * P->outc;
            int raw[4], v8[4], key = 1;
            for (k = 0; k < P->nch; k++) {
                size_t i = (size_t)x * P->nch + k;
                if (P->depth == 8) raw[k] = v8[k] = row[i];
                else if (P->depth == 16) { raw[k] = (row[2 * i] << 8) | row[2 * i + 1]; v8[k] = row[2 * i]; }
                else {
                    size_t bit = i * (size_t)P->depth;
                    raw[k] = (row[bit >> 3] >> (8 - P->depth - (int)(bit & 7))) & mask;
                    v8[k] = raw[k] * 255 / mask;
                }
            }
            if (P->ctype == 3) {
                const uint8_t *e = P->pal[raw[0]];
                o[0] = e[0]; o[1] = e[1]; o[2] = e[2];
                if (P->outc == 4) o[3] = e[3];
                continue;
            }
            if (P->has_key)
                for (k = 0; k < P->nch; k++) key &= raw[k] == P->trns_key[k];
            for (k = 0; k < P->nch; k++) o[k] = (uint8_t)v8[k];
            if (P->has_key) o[P->nch] = key ? 0 : 255;
        }
    }
}

#define PRG__PNAME (name ? name : "<memory>")

static prg_result prg__png_decode(prg_image *img, const uint8_t *buf, size_t len, int channels, unsigned flags,
                                  const char *name) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
    static const int a7[7][4] = {{0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8}, {2, 0, 4, 4}, {0, 2, 2, 4}, {1, 0, 2, 2}, {0, 1, 1, 2}};
    prg__png P;
    size_t pos = 8, idat_len = 0, idat_cap = 0, raw_len = 0, got = 0;
    uint8_t *idat = NULL, *raw = NULL;
    int seen_iend = 0, seen_ihdr = 0, pass, k;
    unsigned warn = 0;
    prg_result r = PRG_OK;
    if (!img) return prg__fail(PRG_ERR_ARG, "prg_png_decode: img is NULL");
    img->w = img->h = img->c = img->src_c = 0;
    img->data = NULL;
    img->warnings = 0;
    memset(&P, 0, sizeof P);
    if (!buf) return prg__fail(PRG_ERR_ARG, "prg_png_decode: buf is NULL");
    if (channels < 0 || channels > 4) return prg__fail(PRG_ERR_ARG, "prg_png_decode: channels %d (0..4)", channels);
    if (len < 8 || memcmp(buf, sig, 8) != 0)
        return prg__fail(PRG_ERR_FORMAT, "%s: not a PNG file (signature missing at byte 0)", PRG__PNAME);
    for (k = 0; k < 256; k++) P.pal[k][3] = 255;
    while (!seen_iend) {
        uint32_t clen;
        const uint8_t *type, *cd;
        if (len - pos < 12) {
            if (idat_len) { /* after image data PIL stops here (whether the data is complete is checked below) */
                r = prg__image_tolerate(flags, &warn, PRG_IMAGE_WARN_NO_END, name, "truncated PNG: no IEND chunk (the file ends at byte %lu)",
                                        (unsigned long)len);
                if (r) goto fail;
                break;
            }
            r = prg__fail(PRG_ERR_FORMAT, "%s: truncated PNG: chunk header at byte %lu cut off (no IEND)", PRG__PNAME, (unsigned long)pos);
            goto fail;
        }
        clen = prg__be32(buf + pos);
        type = buf + pos + 4;
        cd = buf + pos + 8;
        if (clen > 0x7FFFFFFFu || (size_t)clen > len - pos - 12)
            { r = prg__fail(PRG_ERR_FORMAT, "%s: truncated or corrupt PNG: chunk '%.4s' at byte %lu has length %lu, %lu bytes left",
                            PRG__PNAME, (const char *)type, (unsigned long)pos, (unsigned long)clen, (unsigned long)(len - pos - 12)); goto fail; }
        if (prg_crc32(0, type, (size_t)clen + 4) != prg__be32(cd + clen)) {
            if (idat_len || memcmp(type, "IDAT", 4) == 0) { /* PIL checks the CRCs of the chunks before the image data only */
                r = prg__image_tolerate(flags, &warn, PRG_IMAGE_WARN_CRC, name, "corrupt PNG: CRC mismatch in chunk '%.4s' at byte %lu",
                                        (const char *)type, (unsigned long)pos);
                if (r) goto fail;
            } else {
                r = prg__fail(PRG_ERR_FORMAT, "%s: corrupt PNG: CRC mismatch in chunk '%.4s' at byte %lu", PRG__PNAME, (const char *)type, (unsigned long)pos);
                goto fail;
            }
        }
        if (!seen_ihdr && memcmp(type, "IHDR", 4) != 0)
            { r = prg__fail(PRG_ERR_FORMAT, "%s: corrupt PNG: first chunk is '%.4s', not IHDR", PRG__PNAME, (const char *)type); goto fail; }
        if (memcmp(type, "IHDR", 4) == 0) {
            int ok;
            if (seen_ihdr || clen != 13) { r = prg__fail(PRG_ERR_FORMAT, "%s: corrupt PNG: bad or repeated IHDR at byte %lu", PRG__PNAME, (unsigned long)pos); goto fail; }
            seen_ihdr = 1;
            P.w = (int)(prg__be32(cd) & 0x7FFFFFFF);
            P.h = (int)(prg__be32(cd + 4) & 0x7FFFFFFF);
            P.depth = cd[8];
            P.ctype = cd[9];
            P.interlace = cd[12];
            ok = (P.ctype == 0 && (P.depth == 1 || P.depth == 2 || P.depth == 4 || P.depth == 8 || P.depth == 16)) ||
                 (P.ctype == 3 && (P.depth == 1 || P.depth == 2 || P.depth == 4 || P.depth == 8)) ||
                 ((P.ctype == 2 || P.ctype == 4 || P.ctype == 6) && (P.depth == 8 || P.depth == 16));
            if (!ok || cd[10] || cd[11] || P.interlace > 1 || prg__be32(cd) != (uint32_t)P.w || prg__be32(cd + 4) != (uint32_t)P.h)
                { r = prg__fail(PRG_ERR_FORMAT, "%s: corrupt PNG: invalid IHDR (colour type %d, depth %d, method %d/%d, interlace %d)",
                                PRG__PNAME, cd[9], cd[8], cd[10], cd[11], cd[12]); goto fail; }
            if (P.w == 0 || P.h == 0 || (uint64_t)P.w * (uint64_t)P.h > PRG_IMAGE_MAX_PIXELS)
                { r = prg__fail(PRG_ERR_FORMAT, "%s: PNG of %d x %d pixels is empty or exceeds PRG_IMAGE_MAX_PIXELS (%lu)",
                                PRG__PNAME, P.w, P.h, (unsigned long)PRG_IMAGE_MAX_PIXELS); goto fail; }
            P.nch = P.ctype == 2 ? 3 : P.ctype == 4 ? 2 : P.ctype == 6 ? 4 : 1;
        } else if (memcmp(type, "PLTE", 4) == 0) {
            if (clen % 3 || clen == 0 || clen > 768 || (P.ctype == 3 && (int)clen / 3 > (1 << P.depth)) || idat_len)
                { r = prg__fail(PRG_ERR_FORMAT, "%s: corrupt PNG: bad PLTE chunk at byte %lu", PRG__PNAME, (unsigned long)pos); goto fail; }
            P.npal = (int)clen / 3;
            for (k = 0; k < P.npal; k++) { P.pal[k][0] = cd[3 * k]; P.pal[k][1] = cd[3 * k + 1]; P.pal[k][2] = cd[3 * k + 2]; }
        } else if (memcmp(type, "tRNS", 4) == 0) {
            if (P.ctype == 3) {
                if ((int)clen > P.npal) { r = prg__fail(PRG_ERR_FORMAT, "%s: corrupt PNG: tRNS longer than PLTE at byte %lu", PRG__PNAME, (unsigned long)pos); goto fail; }
                for (k = 0; k < (int)clen; k++) P.pal[k][3] = cd[k];
                P.ntrns = (int)clen;
            } else if ((P.ctype == 0 && clen == 2) || (P.ctype == 2 && clen == 6)) {
                for (k = 0; k < P.nch; k++) P.trns_key[k] = (cd[2 * k] << 8) | cd[2 * k + 1];
                P.has_key = 1;
            } /* tRNS on alpha types or of the wrong size is ignored, as libpng warns and ignores */
        } else if (memcmp(type, "IDAT", 4) == 0) {
            if (P.ctype == 3 && !P.npal) { r = prg__fail(PRG_ERR_FORMAT, "%s: corrupt PNG: palette image without PLTE before IDAT", PRG__PNAME); goto fail; }
            if (idat_len + clen > idat_cap) {
                size_t cap = idat_cap ? idat_cap : 65536;
                uint8_t *nb;
                while (cap < idat_len + clen) cap *= 2;
                nb = (uint8_t *)prg_alloc(cap);
                if (!nb) { r = prg__fail(PRG_ERR_NOMEM, "%s: out of memory for PNG data", PRG__PNAME); goto fail; }
                if (idat_len) memcpy(nb, idat, idat_len);
                prg_free(idat);
                idat = nb;
                idat_cap = cap;
            }
            if (clen) memcpy(idat + idat_len, cd, clen); /* an empty IDAT: idat may still be NULL */
            idat_len += clen;
        } else if (memcmp(type, "IEND", 4) == 0) {
            seen_iend = 1;
        } else if (!(type[0] & 0x20)) {
            r = prg__fail(PRG_ERR_UNSUPPORTED, "%s: PNG with unknown critical chunk '%.4s' at byte %lu", PRG__PNAME, (const char *)type, (unsigned long)pos);
            goto fail;
        }
        pos += 12 + (size_t)clen;
    }
    if (!idat_len) { r = prg__fail(PRG_ERR_FORMAT, "%s: corrupt PNG: no IDAT chunk", PRG__PNAME); goto fail; }
    P.outc = P.ctype == 3 ? (P.ntrns ? 4 : 3) : P.nch + (P.has_key ? 1 : 0);
    for (pass = 0; pass < (P.interlace ? 7 : 1); pass++) {
        uint64_t pw = P.interlace ? (uint64_t)(P.w - a7[pass][0] + a7[pass][2] - 1) / a7[pass][2] : (uint64_t)P.w;
        uint64_t ph = P.interlace ? (uint64_t)(P.h - a7[pass][1] + a7[pass][3] - 1) / a7[pass][3] : (uint64_t)P.h;
        if (P.w <= a7[pass][0] && P.interlace) pw = 0;
        if (P.h <= a7[pass][1] && P.interlace) ph = 0;
        if (pw && ph) raw_len += (size_t)(ph * (1 + (pw * (uint64_t)P.nch * (uint64_t)P.depth + 7) / 8));
    }
    raw = (uint8_t *)prg_alloc(raw_len + 1);
    if (!raw) { r = prg__fail(PRG_ERR_NOMEM, "%s: out of memory for a %d x %d PNG", PRG__PNAME, P.w, P.h); goto fail; }
    r = prg_zlib_decompress(idat, idat_len, raw, raw_len + 1, &got);
    if (r) { r = prg__fail_ctx(r, "%s: corrupt PNG image data", PRG__PNAME); goto fail; }
    if (got != raw_len)
        { r = prg__fail(PRG_ERR_FORMAT, "%s: corrupt PNG: image data inflates to %lu bytes, %lu expected", PRG__PNAME, (unsigned long)got, (unsigned long)raw_len); goto fail; }
    if (!P.interlace && (P.depth == 8 || P.depth == 16) && P.ctype != 3 && !P.has_key) {
        /* the samples as they are (16-bit: the high byte): unfiltered and
           packed in place, so the decode takes the inflated data alone, not
           it and the image (a 2^26-pixel RGB file: 192 MB, not 384) */
        size_t rb = (size_t)P.w * P.nch * (P.depth / 8), o = 0, y, i;
        int bad = prg__png_unfilter(raw, rb, P.h, P.nch * P.depth / 8);
        if (bad >= 0) { r = prg__fail(PRG_ERR_FORMAT, "%s: corrupt PNG: invalid filter type %d in row %d of pass 1",
                                      PRG__PNAME, raw[(size_t)bad * (rb + 1)], bad); goto fail; }
        for (y = 0; y < (size_t)P.h; y++) {
            const uint8_t *row = raw + y * (rb + 1) + 1;
            if (P.depth == 8) { memmove(raw + o, row, rb); o += rb; }
            else for (i = 0; i < rb; i += 2) raw[o++] = row[i]; /* the write never passes the read */
        }
        img->w = P.w;
        img->h = P.h;
        img->c = P.outc;
        img->data = raw;
        raw = NULL;
    } else {
        r = prg_image_alloc(img, P.h, P.w, P.outc);
        if (r) goto fail;
        {
            size_t off = 0;
            int bpp = P.nch * P.depth / 8;
            if (bpp < 1) bpp = 1;
            for (pass = 0; pass < (P.interlace ? 7 : 1); pass++) {
                int x0 = P.interlace ? a7[pass][0] : 0, y0 = P.interlace ? a7[pass][1] : 0;
                int dx = P.interlace ? a7[pass][2] : 1, dy = P.interlace ? a7[pass][3] : 1;
                int pw = P.w > x0 ? (P.w - x0 + dx - 1) / dx : 0, ph = P.h > y0 ? (P.h - y0 + dy - 1) / dy : 0, bad;
                size_t rb = ((size_t)pw * P.nch * P.depth + 7) / 8;
                if (!pw || !ph) continue;
                bad = prg__png_unfilter(raw + off, rb, ph, bpp);
                if (bad >= 0) { r = prg__fail(PRG_ERR_FORMAT, "%s: corrupt PNG: invalid filter type %d in row %d of pass %d",
                                              PRG__PNAME, raw[off + (size_t)bad * (rb + 1)], bad, pass + 1); goto fail; }
                prg__png_emit(&P, img->data, raw + off, rb, pw, ph, x0, y0, dx, dy);
                off += (size_t)ph * (rb + 1);
            }
        }
    }
    prg_free(idat);
    prg_free(raw);
    r = prg__image_set_channels(img, channels);
    if (!r) img->warnings = warn;
    return r;
fail:
    prg_free(idat);
    prg_free(raw);
    prg_image_free(img);
    return r;
}

prg_result prg_png_decode(prg_image *img, const uint8_t *buf, size_t len, int channels, const char *name) {
    return prg__png_decode(img, buf, len, channels, 0, name);
}

/* ---- loading --------------------------------------------------------- */

prg_result prg_image_decode_flags(prg_image *img, const uint8_t *buf, size_t len, int channels, unsigned flags,
                                  const char *name) {
    if (!img) return prg__fail(PRG_ERR_ARG, "prg_image_decode: img is NULL");
    img->w = img->h = img->c = img->src_c = 0;
    img->data = NULL;
    img->warnings = 0;
    if (!buf) return prg__fail(PRG_ERR_ARG, "prg_image_decode: buf is NULL");
    if (len >= 3 && buf[0] == 0xFF && buf[1] == 0xD8 && buf[2] == 0xFF) return prg__jpeg_decode(img, buf, len, channels, flags, name);
    if (len >= 8 && buf[0] == 0x89 && buf[1] == 'P' && buf[2] == 'N' && buf[3] == 'G')
        return prg__png_decode(img, buf, len, channels, flags, name);
    return prg__fail(PRG_ERR_FORMAT, "%s: not a JPEG or PNG file (unknown magic at byte 0)", name ? name : "<memory>");
}

prg_result prg_image_decode(prg_image *img, const uint8_t *buf, size_t len, int channels, const char *name) {
    return prg_image_decode_flags(img, buf, len, channels, 0, name);
}

/* The pixel count a JPEG (its first SOF) or PNG (IHDR) header in buf
   declares; 0 when there is none, with *more = 1 only when a JPEG's
   segments run past buf (the frame header may come later). */
static uint64_t prg__image_head_pixels(const uint8_t *b, size_t n, int *more) {
    size_t i = 2;
    *more = 0;
    if (n >= 24 && b[0] == 0x89 && b[1] == 'P' && !memcmp(b + 12, "IHDR", 4)) return (uint64_t)prg__rd32be(b + 16) * prg__rd32be(b + 20);
    if (n < 3 || b[0] != 0xFF || b[1] != 0xD8) return 0;
    while (i + 4 <= n) {
        int m;
        if (b[i] != 0xFF) return 0;
        m = b[i + 1];
        if (m == 0xFF) { i++; continue; }
        if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) { i += 2; continue; }
        if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) {
            if (i + 9 <= n) return (uint64_t)(((uint32_t)b[i + 5] << 8) | b[i + 6]) * (((uint32_t)b[i + 7] << 8) | b[i + 8]);
            break;
        }
        if (m == 0xDA || m == 0xD9) return 0;
        i += 2 + (((size_t)b[i + 2] << 8) | b[i + 3]);
    }
    *more = 1;
    return 0;
}

prg_result prg_image_load(prg_image *img, const char *path, int channels) {
    return prg_image_load_flags(img, path, channels, 0);
}

prg_result prg_image_load_flags(prg_image *img, const char *path, int channels, unsigned flags) {
    uint8_t *buf = NULL;
    size_t len = 0;
    uint64_t px, cap;
    int more;
    prg_result r;
    if (!img) return prg__fail(PRG_ERR_ARG, "prg_image_load: img is NULL");
    img->w = img->h = img->c = img->src_c = 0;
    img->data = NULL;
    img->warnings = 0;
    /* the header from the first MiB: the pixel limit is checked before the
       rest is read, and no more is decompressed than such an image can take
       (8 bytes a pixel + 16 MiB of other chunks; 4 bytes a pixel at the
       limit when a JPEG's frame header is not in the first MiB; a file
       whose header is broken is decoded from the first MiB, to say where) */
    r = prg__file_read_part(path, (size_t)1 << 20, &buf, &len);
    if (r) return r;
    px = prg__image_head_pixels(buf, len, &more);
    if (px > PRG_IMAGE_MAX_PIXELS) {
        prg_free(buf);
        return prg__fail(PRG_ERR_FORMAT, "%s: the image header declares %llu pixels, more than PRG_IMAGE_MAX_PIXELS (%llu)", path,
                         (unsigned long long)px, (unsigned long long)PRG_IMAGE_MAX_PIXELS);
    }
    cap = (px ? px * 8 : (uint64_t)PRG_IMAGE_MAX_PIXELS * 4) + ((uint64_t)16 << 20);
    if (len == ((size_t)1 << 20) && !(len >= 2 && buf[0] == 'P') && (px || more)) { /* more to read */
        prg_free(buf);
        buf = NULL;
        r = prg__file_read_cap(path, cap > SIZE_MAX / 4 ? SIZE_MAX / 4 : (size_t)cap, "what an image within PRG_IMAGE_MAX_PIXELS can need",
                               &buf, &len);
        if (r) return r;
    }
    if (len >= 2 && buf[0] == 'P' && (buf[1] == '5' || buf[1] == '6')) { /* PGM / PPM: the io reader */
        uint8_t *px = NULL;
        int w, h, c;
        prg_free(buf);
        r = prg_pnm_read(path, &px, &h, &w, &c);
        if (r) return r;
        img->w = w; img->h = h; img->c = c; img->data = px;
        return prg__image_set_channels(img, channels);
    }
    r = prg_image_decode_flags(img, buf, len, channels, flags, path);
    prg_free(buf);
    return r;
}

/* ---- JPEG encoder ---------------------------------------------------- */
/* Baseline sequential JPEG (SOF0), written from ITU T.81: Annex K tables,
   libjpeg's quality scaling, its fixed-point RGB -> YCbCr and its 2x2
   chroma averaging (alternating bias 1, 2), edges replicated to whole MCUs.
   The forward DCT and the quantisation are libjpeg's defaults (islow integer
   DCT, rounding halves away from zero).  The zigzag order and the Annex K.3
   Huffman tables are the decoder's (prg__jpeg_zz, prg__jstd_*). */

static const uint8_t prg__jpeg_std_q[2][64] = { /* Annex K.1, natural order */
    {16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
     14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
     49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99},
    {17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
     47, 66, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
     99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99}};
void prg_jpeg_quant_tables(uint16_t q[2][64], int quality) {
    int t, i, s;
    if (quality < 1) quality = 1;
    if (quality > 100) quality = 100;
    s = quality < 50 ? 5000 / quality : 200 - 2 * quality;
    for (t = 0; t < 2; t++)
        for (i = 0; i < 64; i++) {
            long v = ((long)prg__jpeg_std_q[t][i] * s + 50) / 100;
            q[t][i] = (uint16_t)(v < 1 ? 1 : v > 255 ? 255 : v);
        }
}

size_t prg_jpeg_encode_bound(int h, int w, int c) {
    size_t bw = ((size_t)w + 15) / 16 * 2, bh = ((size_t)h + 15) / 16 * 2;
    /* per 8x8 block at most 22 + 63 * 26 bits (< 208 bytes), doubled for 0xFF stuffing */
    return 1024 + bw * bh * (size_t)(c == 3 ? 3 : 1) * 416;
}

typedef struct prg__jpeg_writer {
    uint8_t *p, *end;
    uint32_t acc;
    int n;
} prg__jpeg_writer;

static void prg__jw_byte(prg__jpeg_writer *jw, int v) {
    if (jw->p < jw->end) *jw->p++ = (uint8_t)v;
}
static void prg__jw_bits(prg__jpeg_writer *jw, uint32_t code, int len) {
    while (len > 0) {
        int take = len < 8 - jw->n % 8 ? len : 8 - jw->n % 8;
        jw->acc = (jw->acc << take) | ((code >> (len - take)) & ((1u << take) - 1));
        jw->n += take;
        len -= take;
        if (jw->n == 8) {
            prg__jw_byte(jw, (int)jw->acc);
            if (jw->acc == 0xFF) prg__jw_byte(jw, 0);
            jw->acc = 0;
            jw->n = 0;
        }
    }
}
static void prg__jw_marker(prg__jpeg_writer *jw, int marker, int len) {
    prg__jw_byte(jw, 0xFF); prg__jw_byte(jw, marker);
    if (len >= 0) { prg__jw_byte(jw, len >> 8); prg__jw_byte(jw, len & 255); }
}

/* Canonical codes from counts per length (T.81 Annex C). */
static void prg__jpeg_huff_codes(uint16_t code[256], uint8_t size[256], const uint8_t bits[16], const uint8_t *vals) {
    int l, i, k = 0;
    uint32_t c = 0;
    memset(size, 0, 256);
    for (l = 1; l <= 16; l++) {
        for (i = 0; i < bits[l - 1]; i++, k++) {
            code[vals[k]] = (uint16_t)c++;
            size[vals[k]] = (uint8_t)l;
        }
        c <<= 1;
    }
}

typedef struct prg__jpeg_huff {
    uint16_t dc_code[2][256], ac_code[2][256];
    uint8_t dc_size[2][256], ac_size[2][256];
} prg__jpeg_huff;

static int prg__jpeg_magnitude(int v) {
    int a = v < 0 ? -v : v, n = 0;
    while (a) { n++; a >>= 1; }
    return n;
}

/* libjpeg's "islow" forward DCT on one row or column (LL&M, 13-bit
   constants): the even part first, then the odd part; pass 1 keeps 2 extra
   bits (shift = 11, first outputs << 2), pass 2 removes them (shift = 15, 2). */
static void prg__jpeg_fdct8(int32_t *v, int step, int shift, int dc_shift, int pass1) {
    int32_t t0 = v[0] + v[7 * step], t7 = v[0] - v[7 * step], t1 = v[step] + v[6 * step], t6 = v[step] - v[6 * step];
    int32_t t2 = v[2 * step] + v[5 * step], t5 = v[2 * step] - v[5 * step], t3 = v[3 * step] + v[4 * step], t4 = v[3 * step] - v[4 * step];
    int32_t t10 = t0 + t3, t13 = t0 - t3, t11 = t1 + t2, t12 = t1 - t2, z1, z2, z3, z4, z5;
    int32_t r = (int32_t)1 << (shift - 1);
    if (pass1) { v[0] = (t10 + t11) * (1 << dc_shift); v[4 * step] = (t10 - t11) * (1 << dc_shift); }
    else { v[0] = (t10 + t11 + (1 << (dc_shift - 1))) >> dc_shift; v[4 * step] = (t10 - t11 + (1 << (dc_shift - 1))) >> dc_shift; }
    z1 = (t12 + t13) * 4433;
    v[2 * step] = (z1 + t13 * 6270 + r) >> shift;
    v[6 * step] = (z1 - t12 * 15137 + r) >> shift;
    z1 = t4 + t7; z2 = t5 + t6; z3 = t4 + t6; z4 = t5 + t7;
    z5 = (z3 + z4) * 9633;
    t4 *= 2446; t5 *= 16819; t6 *= 25172; t7 *= 12299;
    z1 *= -7373; z2 *= -20995; z3 *= -16069; z4 *= -3196;
    z3 += z5; z4 += z5;
    v[7 * step] = (t4 + z1 + z3 + r) >> shift;
    v[5 * step] = (t5 + z2 + z4 + r) >> shift;
    v[3 * step] = (t6 + z2 + z3 + r) >> shift;
    v[step] = (t7 + z1 + z4 + r) >> shift;
}

/* One 8x8 block of samples (stride bytes per row): FDCT (libjpeg's islow,
   outputs scaled by 8), quantise (divisor 8 q, halves away from zero as
   libjpeg), Huffman-code. */
static void prg__jpeg_code_block(prg__jpeg_writer *jw, const prg__jpeg_huff *hf, int t, const uint8_t *px, int stride,
                                 const uint16_t *q, int *pred) {
    int32_t ws[64];
    int coef[64], x, y, k, run, s, d;
    for (y = 0; y < 8; y++)
        for (x = 0; x < 8; x++) ws[y * 8 + x] = (int32_t)px[(size_t)y * stride + x] - 128;
    for (y = 0; y < 8; y++) prg__jpeg_fdct8(ws + y * 8, 1, 11, 2, 1);
    for (x = 0; x < 8; x++) prg__jpeg_fdct8(ws + x, 8, 15, 2, 0);
    for (k = 0; k < 64; k++) {
        int32_t dv = (int32_t)q[k] * 8, a = ws[k] < 0 ? -ws[k] : ws[k];
        a = (a + (dv >> 1)) / dv;
        coef[k] = ws[k] < 0 ? -a : a;
    }
    d = coef[0] - *pred;
    *pred = coef[0];
    s = prg__jpeg_magnitude(d);
    prg__jw_bits(jw, hf->dc_code[t][s], hf->dc_size[t][s]);
    if (s) prg__jw_bits(jw, (uint32_t)(d < 0 ? d - 1 : d) & ((1u << s) - 1), s);
    run = 0;
    for (k = 1; k < 64; k++) {
        int a = coef[prg__jpeg_zz[k]];
        if (!a) { run++; continue; }
        while (run > 15) { prg__jw_bits(jw, hf->ac_code[t][0xF0], hf->ac_size[t][0xF0]); run -= 16; }
        s = prg__jpeg_magnitude(a);
        prg__jw_bits(jw, hf->ac_code[t][(run << 4) | s], hf->ac_size[t][(run << 4) | s]);
        prg__jw_bits(jw, (uint32_t)(a < 0 ? a - 1 : a) & ((1u << s) - 1), s);
        run = 0;
    }
    if (run) prg__jw_bits(jw, hf->ac_code[t][0], hf->ac_size[t][0]);
}

prg_result prg_jpeg_encode_to(uint8_t *out, size_t cap, size_t *out_len, const uint8_t *pixels, int h, int w, int c,
                              int quality, prg_jpeg_subsample subsample, void *work) {
    prg__jpeg_writer jw;
    prg__jpeg_huff hf;
    uint16_t q[2][64];
    int sub = c == 3 && subsample == PRG_JPEG_420, mcu = sub ? 16 : 8, ncomp = c == 3 ? 3 : 1;
    int pw, ph, i, x, y, k, t, pred[3] = {0, 0, 0};
    uint8_t *plane[3], *own = NULL;
    size_t psz;
    *out_len = 0;
    if (!out || !pixels || w < 1 || h < 1 || w > 65535 || h > 65535 || (c != 1 && c != 3) || quality < 1 ||
        quality > 100 || (subsample != PRG_JPEG_444 && subsample != PRG_JPEG_420))
        return prg__fail(PRG_ERR_ARG, "prg_jpeg_encode: need pixels of 1..65535 x 1..65535 with 1 or 3 channels, quality 1..100 "
                         "and PRG_JPEG_444 or PRG_JPEG_420 (got %dx%d, %d channels, quality %d, subsample %d)",
                         w, h, c, quality, subsample);
    if (cap < prg_jpeg_encode_bound(h, w, c))
        return prg__fail(PRG_ERR_ARG, "prg_jpeg_encode: the output buffer has %zu bytes, prg_jpeg_encode_bound() wants %zu",
                         cap, prg_jpeg_encode_bound(h, w, c));
    pw = (w + mcu - 1) / mcu * mcu;
    ph = (h + mcu - 1) / mcu * mcu;
    psz = (size_t)pw * ph;
    if (!work) {
        own = (uint8_t *)prg_alloc(prg_jpeg_encode_workspace(h, w, c));
        if (!own) return prg__fail(PRG_ERR_NOMEM, "prg_jpeg_encode: out of memory for a %dx%d image", w, h);
        work = own;
    }
    for (k = 0; k < ncomp; k++) plane[k] = (uint8_t *)work + psz * k;
    /* colour conversion (libjpeg's jccolor.c constants), edges replicated */
    for (y = 0; y < ph; y++)
        for (x = 0; x < pw; x++) {
            const uint8_t *s = pixels + ((size_t)(y < h ? y : h - 1) * w + (x < w ? x : w - 1)) * c;
            size_t o = (size_t)y * pw + x;
            if (c == 1) { plane[0][o] = s[0]; continue; }
            plane[0][o] = (uint8_t)((19595 * s[0] + 38470 * s[1] + 7471 * s[2] + 32768) >> 16);
            plane[1][o] = (uint8_t)((-11059 * s[0] - 21709 * s[1] + 32768 * s[2] + (128 << 16) + 32767) >> 16);
            plane[2][o] = (uint8_t)((32768 * s[0] - 27439 * s[1] - 5329 * s[2] + (128 << 16) + 32767) >> 16);
        }
    if (sub) /* 2x2 means in place (libjpeg's h2v2_downsample), into the top-left pw/2 x ph/2 */
        for (k = 1; k < 3; k++)
            for (y = 0; y < ph / 2; y++)
                for (x = 0; x < pw / 2; x++) {
                    const uint8_t *s = plane[k] + (size_t)(2 * y) * pw + 2 * x;
                    plane[k][(size_t)y * (pw / 2) + x] = (uint8_t)((s[0] + s[1] + s[pw] + s[pw + 1] + 1 + (x & 1)) >> 2);
                }
    if (sub) /* chroma rows under the image repeat its last one, as libjpeg pads after downsampling */
        for (k = 1; k < 3; k++)
            for (y = (h + 1) / 2; y < ph / 2; y++)
                memcpy(plane[k] + (size_t)y * (pw / 2), plane[k] + (size_t)((h + 1) / 2 - 1) * (pw / 2), (size_t)pw / 2);
    prg_jpeg_quant_tables(q, quality);
    for (t = 0; t < 2; t++) {
        prg__jpeg_huff_codes(hf.dc_code[t], hf.dc_size[t], prg__jstd_dc_counts[t], prg__jstd_dc_vals);
        prg__jpeg_huff_codes(hf.ac_code[t], hf.ac_size[t], prg__jstd_ac_counts[t], prg__jstd_ac_vals[t]);
    }
    jw.p = out; jw.end = out + cap; jw.acc = 0; jw.n = 0;
    prg__jw_marker(&jw, 0xD8, -1);
    prg__jw_marker(&jw, 0xE0, 16); /* JFIF 1.01, aspect 1:1 */
    { static const uint8_t app0[14] = {'J', 'F', 'I', 'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0};
      for (i = 0; i < 14; i++) prg__jw_byte(&jw, app0[i]); }
    for (t = 0; t < (ncomp == 3 ? 2 : 1); t++) {
        prg__jw_marker(&jw, 0xDB, 67);
        prg__jw_byte(&jw, t);
        for (i = 0; i < 64; i++) prg__jw_byte(&jw, q[t][prg__jpeg_zz[i]]);
    }
    prg__jw_marker(&jw, 0xC0, 8 + 3 * ncomp);
    prg__jw_byte(&jw, 8);
    prg__jw_byte(&jw, h >> 8); prg__jw_byte(&jw, h & 255); prg__jw_byte(&jw, w >> 8); prg__jw_byte(&jw, w & 255);
    prg__jw_byte(&jw, ncomp);
    for (k = 0; k < ncomp; k++) {
        prg__jw_byte(&jw, k + 1);
        prg__jw_byte(&jw, k == 0 && sub ? 0x22 : 0x11);
        prg__jw_byte(&jw, k ? 1 : 0);
    }
    for (t = 0; t < (ncomp == 3 ? 2 : 1); t++) {
        int nv = 0;
        for (i = 0; i < 16; i++) nv += prg__jstd_ac_counts[t][i];
        prg__jw_marker(&jw, 0xC4, 2 + 17 + 12);
        prg__jw_byte(&jw, t);
        for (i = 0; i < 16; i++) prg__jw_byte(&jw, prg__jstd_dc_counts[t][i]);
        for (i = 0; i < 12; i++) prg__jw_byte(&jw, prg__jstd_dc_vals[i]);
        prg__jw_marker(&jw, 0xC4, 2 + 17 + nv);
        prg__jw_byte(&jw, 0x10 | t);
        for (i = 0; i < 16; i++) prg__jw_byte(&jw, prg__jstd_ac_counts[t][i]);
        for (i = 0; i < nv; i++) prg__jw_byte(&jw, prg__jstd_ac_vals[t][i]);
    }
    prg__jw_marker(&jw, 0xDA, 6 + 2 * ncomp);
    prg__jw_byte(&jw, ncomp);
    for (k = 0; k < ncomp; k++) { prg__jw_byte(&jw, k + 1); prg__jw_byte(&jw, k ? 0x11 : 0x00); }
    prg__jw_byte(&jw, 0); prg__jw_byte(&jw, 63); prg__jw_byte(&jw, 0);
    for (y = 0; y < ph; y += mcu)
        for (x = 0; x < pw; x += mcu) {
            int by, bx;
            for (by = 0; by < mcu; by += 8)
                for (bx = 0; bx < mcu; bx += 8) {
                    if (y + by >= h || x + bx >= w) { /* libjpeg's dummy block past the image: the previous DC, no AC */
                        prg__jw_bits(&jw, hf.dc_code[0][0], hf.dc_size[0][0]);
                        prg__jw_bits(&jw, hf.ac_code[0][0], hf.ac_size[0][0]);
                        continue;
                    }
                    prg__jpeg_code_block(&jw, &hf, 0, plane[0] + (size_t)(y + by) * pw + x + bx, pw, q[0], &pred[0]);
                }
            for (k = 1; k < ncomp; k++) {
                int cw = sub ? pw / 2 : pw;
                size_t o = sub ? (size_t)(y / 2) * cw + x / 2 : (size_t)y * cw + x;
                prg__jpeg_code_block(&jw, &hf, 1, plane[k] + o, cw, q[1], &pred[k]);
            }
        }
    if (jw.n) prg__jw_bits(&jw, (1u << (8 - jw.n)) - 1, 8 - jw.n); /* pad with 1-bits */
    prg__jw_marker(&jw, 0xD9, -1);
    prg_free(own);
    if (jw.p >= jw.end) return prg__fail(PRG_ERR_STATE, "prg_jpeg_encode: the %zu-byte bound was exceeded", cap);
    *out_len = (size_t)(jw.p - out);
    return PRG_OK;
}

size_t prg_jpeg_encode_workspace(int h, int w, int c) {
    return ((size_t)w + 15) / 16 * 16 * (((size_t)h + 15) / 16 * 16) * (size_t)(c == 3 ? 3 : 1);
}

prg_result prg_jpeg_encode(uint8_t **out, size_t *out_len, const uint8_t *pixels, int h, int w, int c, int quality,
                           prg_jpeg_subsample subsample) {
    size_t cap;
    prg_result r;
    *out = NULL;
    *out_len = 0;
    if (w < 1 || h < 1 || w > 65535 || h > 65535 || (c != 1 && c != 3))
        return prg__fail(PRG_ERR_ARG, "prg_jpeg_encode: need 1..65535 x 1..65535 pixels with 1 or 3 channels (got %dx%d, %d)", w, h, c);
    cap = prg_jpeg_encode_bound(h, w, c);
    *out = (uint8_t *)prg_alloc(cap);
    if (!*out) return prg__fail(PRG_ERR_NOMEM, "prg_jpeg_encode: out of memory (%zu bytes) for a %dx%d image", cap, w, h);
    r = prg_jpeg_encode_to(*out, cap, out_len, pixels, h, w, c, quality, subsample, NULL);
    if (r) { prg_free(*out); *out = NULL; }
    return r;
}
#endif /* PRG_NO_IMAGE */

/* >>data ================================================================ */

/* ---- datasets -------------------------------------------------------- */

void prg_dataset_free(prg_dataset *ds) {
    if (!ds) return;
    prg_free(ds->images);
    prg_free(ds->labels);
    prg_free(ds->class_names);
    memset(ds, 0, sizeof *ds);
}

prg_result prg_dataset_set_class_names(prg_dataset *ds, const char *const *names, int n) {
    char **copy;
    int i;
    if (!ds) return prg__fail(PRG_ERR_ARG, "prg_dataset_set_class_names: ds is NULL");
    if (!names && n == 0) {
        prg_free(ds->class_names);
        ds->class_names = NULL;
        return PRG_OK;
    }
    if (!names || n < 1 || n > 1000000) return prg__fail(PRG_ERR_ARG, "prg_dataset_set_class_names: %d names (1..1000000)", n);
    for (i = 0; i < n; i++)
        if (!names[i]) return prg__fail(PRG_ERR_ARG, "prg_dataset_set_class_names: name %d is NULL", i);
    for (i = 0; i < ds->n; i++)
        if (ds->labels[i] < 0 || ds->labels[i] >= n)
            return prg__fail(PRG_ERR_ARG, "prg_dataset_set_class_names: label %d of image %d is past the %d class names", (int)ds->labels[i], i, n);
    if (!(copy = prg__names_copy(names, n))) return prg__fail(PRG_ERR_NOMEM, "prg_dataset_set_class_names: out of memory");
    prg_free(ds->class_names);
    ds->class_names = copy;
    ds->num_classes = n;
    return PRG_OK;
}

prg_result prg_dataset_alloc(prg_dataset *ds, int n, int c, int h, int w, int num_classes) {
    size_t per;
    if (!ds) return prg__fail(PRG_ERR_ARG, "prg_dataset_alloc: ds is NULL");
    memset(ds, 0, sizeof *ds);
    if (n < 0 || c < 1 || h < 1 || w < 1 || num_classes < 1 || (size_t)c * (size_t)h > (size_t)INT32_MAX / (size_t)w)
        return prg__fail(PRG_ERR_ARG, "dataset %d x %d x %d x %d with %d classes: bad size", n, c, h, w, num_classes);
    per = (size_t)c * (size_t)h * (size_t)w;
    if (n && per > SIZE_MAX / 2 / (size_t)n) return prg__fail(PRG_ERR_NOMEM, "dataset of %d images of %zu bytes does not fit in memory", n, per);
    ds->images = (uint8_t *)prg_alloc(per * (size_t)n + 1);
    ds->labels = (int32_t *)prg_alloc(sizeof(int32_t) * (size_t)n + 1);
    if (!ds->images || !ds->labels) {
        prg_dataset_free(ds);
        return prg__fail(PRG_ERR_NOMEM, "out of memory for a dataset of %d images of %zu bytes", n, per);
    }
    ds->n = n;
    ds->c = c;
    ds->h = h;
    ds->w = w;
    ds->num_classes = num_classes;
    return PRG_OK;
}

/* IDX header: 0 0 type ndim, then ndim big-endian u32 sizes. */
static prg_result prg__idx_header(const uint8_t *p, size_t len, const char *path, int gz, int ndim, uint32_t *dims, size_t *data_off) {
    const char *z = gz ? " (decompressed)" : "";
    uint64_t count = 1;
    int k;
    if (len < 4) return prg__fail(PRG_ERR_FORMAT, "%s%s: truncated at byte %zu: IDX magic needs 4 bytes", path, z, len);
    if (p[0] != 0 || p[1] != 0 || p[3] != ndim)
        return prg__fail(PRG_ERR_FORMAT, "%s%s: wrong magic %02x %02x %02x %02x at byte 0: IDX %s file expected (00 00 08 %02x)", path, z, p[0], p[1],
                         p[2], p[3], ndim == 3 ? "images" : "labels", ndim);
    if (p[2] != 8)
        return prg__fail(PRG_ERR_UNSUPPORTED, "%s%s: IDX element type 0x%02x at byte 2 is not unsigned byte (0x08)", path, z, p[2]);
    if (len < 4 + 4 * (size_t)ndim) return prg__fail(PRG_ERR_FORMAT, "%s%s: truncated at byte %zu: IDX header needs %d bytes", path, z, len, 4 + 4 * ndim);
    for (k = 0; k < ndim; k++) {
        dims[k] = prg__rd32be(p + 4 + 4 * k);
        if (dims[k] > (k ? 65535u : (uint32_t)INT32_MAX) || (k && dims[k] == 0))
            return prg__fail(PRG_ERR_FORMAT, "%s%s: absurd IDX dimension %u at byte %d", path, z, dims[k], 4 + 4 * k);
        count *= dims[k];
    }
    *data_off = 4 + 4 * (size_t)ndim;
    if (count > (uint64_t)(len - *data_off))
        return prg__fail(PRG_ERR_FORMAT, "%s%s: truncated: the header asks for %llu bytes from byte %zu, the file has %zu", path, z,
                         (unsigned long long)count, *data_off, len - *data_off);
    if (count < (uint64_t)(len - *data_off))
        return prg__fail(PRG_ERR_FORMAT, "%s%s: %llu trailing bytes after the data (from byte %llu)", path, z,
                         (unsigned long long)(len - *data_off - count), (unsigned long long)(*data_off + count));
    return PRG_OK;
}

/* An IDX file, decompressed no further than its header says it needs (plus
   one byte, so that trailing data is still reported). */
static prg_result prg__idx_read(const char *path, int ndim, uint8_t **buf, size_t *len) {
    uint8_t *head;
    size_t hl;
    uint64_t hdr = 4 + 4 * (uint64_t)ndim, need = hdr, count = 1;
    int k, ok;
    prg_result r = prg__file_read_part(path, (size_t)hdr, &head, &hl);
    if (r) return r;
    /* the dimensions as prg__idx_header accepts them; anything else reads only the header */
    ok = hl == hdr && head[0] == 0 && head[1] == 0 && head[2] == 8 && head[3] == ndim;
    for (k = 0; ok && k < ndim; k++) {
        uint32_t d = prg__rd32be(head + 4 + 4 * k);
        if (d > (k ? 65535u : (uint32_t)INT32_MAX) || (k && d == 0)) ok = 0;
        else count *= d; /* at most 2^31 * 2^16 * 2^16 */
        if (count > ((uint64_t)1 << 62)) ok = 0;
    }
    if (ok) need = hdr + count;
    prg_free(head);
    if (need > (uint64_t)(SIZE_MAX / 2)) need = SIZE_MAX / 2;
    return prg__file_read_part(path, (size_t)need + 1, buf, len);
}

static int prg__is_gz(const char *path) {
    FILE *f = fopen(path, "rb");
    int a, b;
    if (!f) return 0;
    a = fgetc(f);
    b = fgetc(f);
    fclose(f);
    return a == 0x1f && b == 0x8b;
}

prg_result prg_dataset_load_idx(prg_dataset *ds, const char *images_path, const char *labels_path) {
    uint8_t *img = NULL, *lab = NULL;
    size_t ilen, llen, ioff, loff, i, per;
    uint32_t idim[3], ldim[1];
    prg_result r;
    if (!ds) return prg__fail(PRG_ERR_ARG, "prg_dataset_load_idx: ds is NULL");
    memset(ds, 0, sizeof *ds);
    if ((r = prg__idx_read(images_path, 3, &img, &ilen)) != PRG_OK) return r;
    r = prg__idx_header(img, ilen, images_path, prg__is_gz(images_path), 3, idim, &ioff);
    if (!r) r = prg__idx_read(labels_path, 1, &lab, &llen);
    if (!r) r = prg__idx_header(lab, llen, labels_path, prg__is_gz(labels_path), 1, ldim, &loff);
    if (!r && ldim[0] != idim[0])
        r = prg__fail(PRG_ERR_SHAPE, "%s has %u labels (count at byte 4) but %s has %u images (byte 4): not a matching pair", labels_path,
                      ldim[0], images_path, idim[0]);
    if (!r) {
        ds->labels = (int32_t *)prg_alloc(sizeof(int32_t) * idim[0] + 1);
        if (!ds->labels) r = prg__fail(PRG_ERR_NOMEM, "%s: out of memory", labels_path);
    }
    for (i = 0; !r && i < idim[0]; i++) {
        if (lab[loff + i] > 9) r = prg__fail(PRG_ERR_FORMAT, "%s: label %d at byte %zu is out of range 0..9", labels_path, lab[loff + i], loff + i);
        else ds->labels[i] = lab[loff + i];
    }
    prg_free(lab);
    if (r) {
        prg_free(img);
        prg_dataset_free(ds);
        return r;
    }
    per = (size_t)idim[1] * idim[2];
    memmove(img, img + ioff, per * idim[0]); /* the file buffer becomes the image array */
    ds->images = img;
    ds->n = (int)idim[0];
    ds->c = 1;
    ds->h = (int)idim[1];
    ds->w = (int)idim[2];
    ds->num_classes = 10;
    return PRG_OK;
}

static prg_result prg__cifar_load(prg_dataset *ds, const char *const *paths, int npaths, int label_bytes, int which, int num_classes) {
    enum { PIX = 3072 };
    size_t rec = (size_t)label_bytes + PIX, total = 0, at = 0, i;
    uint64_t size;
    uint8_t *buf = NULL;
    prg_result r;
    FILE *f;
    int k;
    if (!ds) return prg__fail(PRG_ERR_ARG, "prg_dataset_load_cifar: ds is NULL");
    memset(ds, 0, sizeof *ds);
    if (npaths > 0 && !paths) return prg__fail(PRG_ERR_ARG, "%s: paths is NULL", "prg_dataset_load_cifar");
    if (npaths < 1 || !paths) return prg__fail(PRG_ERR_ARG, "CIFAR: no files given");
    for (k = 0; k < npaths; k++) { /* sizes first: one allocation, nothing read from a bad set */
        if ((r = prg__fopen_read(&f, paths[k], &size)) != PRG_OK) return r;
        fclose(f);
        if (size == 0 || size % rec)
            return prg__fail(PRG_ERR_FORMAT, "%s: truncated or not CIFAR-%d: %llu bytes is not a whole number of %zu-byte records (the last record starts at byte %llu)",
                             paths[k], num_classes == 10 ? 10 : 100, (unsigned long long)size, rec,
                             (unsigned long long)(size / rec * rec));
        if (size / rec > (uint64_t)INT32_MAX - total) return prg__fail(PRG_ERR_FORMAT, "%s: absurd record count", paths[k]);
        total += (size_t)(size / rec);
    }
    if ((r = prg_dataset_alloc(ds, (int)total, 3, 32, 32, num_classes)) != PRG_OK) return r;
    buf = (uint8_t *)prg_alloc(rec * 256);
    if (!buf) {
        prg_dataset_free(ds);
        return prg__fail(PRG_ERR_NOMEM, "CIFAR: out of memory");
    }
    for (k = 0; k < npaths && !r; k++) {
        size_t nrec, done = 0;
        if ((r = prg__fopen_read(&f, paths[k], &size)) != PRG_OK) break;
        nrec = (size_t)(size / rec);
        while (!r && done < nrec) {
            size_t m = nrec - done < 256 ? nrec - done : 256;
            r = prg__fread_at(f, paths[k], (uint64_t)done * rec, buf, m * rec);
            for (i = 0; !r && i < m; i++) {
                int lab = buf[i * rec + (size_t)which];
                if (lab >= num_classes)
                    r = prg__fail(PRG_ERR_FORMAT, "%s: label %d of record %zu (byte %zu) is out of range 0..%d", paths[k], lab, done + i,
                                  (done + i) * rec + (size_t)which, num_classes - 1);
                ds->labels[at] = lab;
                memcpy(ds->images + at * PIX, buf + i * rec + label_bytes, PIX);
                at++;
            }
            done += m;
        }
        fclose(f);
    }
    prg_free(buf);
    if (!r && at != total) r = prg__fail(PRG_ERR_IO, "CIFAR: the files changed while reading");
    if (r) prg_dataset_free(ds);
    return r;
}

prg_result prg_dataset_load_cifar10(prg_dataset *ds, const char *const *paths, int npaths) {
    static const char *const names[10] = {"airplane", "automobile", "bird", "cat", "deer",
                                          "dog", "frog", "horse", "ship", "truck"};
    prg_result r = prg__cifar_load(ds, paths, npaths, 1, 0, 10);
    if (!r && (r = prg_dataset_set_class_names(ds, names, 10)) != PRG_OK) prg_dataset_free(ds);
    return r;
}
prg_result prg_dataset_load_cifar100(prg_dataset *ds, const char *const *paths, int npaths, int coarse) {
    return prg__cifar_load(ds, paths, npaths, 2, coarse ? 0 : 1, coarse ? 20 : 100);
}

/* The optional 'classes' array of a dataset .npz: u8 [K][L], row k the
   name of class k, NUL-padded.  base: 1 when the file's labels are 1-based
   (for the message). */
static prg_result prg__npz_class_names(prg_dataset *ds, const char *path, int base) {
    prg_array a;
    prg__zipent e;
    FILE *f;
    uint64_t size;
    const char **v = NULL;
    char *text = NULL;
    prg_result r;
    int64_t k, len;
    int i, found;
    /* absent is fine ('data' and 'labels' were read, so the directory is sound) */
    if ((r = prg__fopen_read(&f, path, &size)) != PRG_OK) return r;
    found = prg__zip_find(f, path, size, "classes", &e) == PRG_OK;
    fclose(f);
    if (!found) return PRG_OK;
    if ((r = prg_npz_read(&a, path, "classes")) != PRG_OK) return r;
    if ((a.dtype != PRG_DT_U8 && a.dtype != PRG_DT_U32) || a.ndim != 2 || a.shape[0] < 1 || a.shape[0] > 1000000 || a.shape[1] < 1 ||
        a.shape[1] > 4096) {
        r = prg__fail(PRG_ERR_SHAPE, "%s: 'classes' must be numpy strings [classes] (S or U) or uint8 [classes][max name length] "
                      "(one NUL-padded name a row, at most 4096 bytes), got %s with %d dims", path, prg_dtype_name(a.dtype), a.ndim);
        prg_array_free(&a);
        return r;
    }
    k = a.shape[0];
    len = a.shape[1];
    for (i = 0; i < ds->n; i++)
        if (ds->labels[i] >= k) {
            r = prg__fail(PRG_ERR_FORMAT, "%s: label %d at index %d is past the %lld classes of 'classes' (labels %s..%lld)", path,
                          (int)ds->labels[i] + base, i, (long long)k, base ? "1" : "0", (long long)(k - 1 + base));
            prg_array_free(&a);
            return r;
        }
    v = (const char **)PRG_MALLOC(sizeof(char *) * (size_t)k);
    text = (char *)PRG_MALLOC((size_t)(k * (4 * len + 1))); /* UTF-8: 4 bytes a code point at most */
    if (!v || !text) r = prg__fail(PRG_ERR_NOMEM, "%s: out of memory for the class names", path);
    for (i = 0; !r && i < k; i++) {
        char *d = text + (size_t)i * (size_t)(4 * len + 1);
        int64_t j;
        v[i] = d;
        if (a.dtype == PRG_DT_U8) {
            memcpy(d, (const uint8_t *)a.data + (size_t)i * (size_t)len, (size_t)len);
            d[len] = 0;
            continue;
        }
        for (j = 0; j < len; j++) { /* UCS-4 -> UTF-8 */
            uint32_t cp = ((const uint32_t *)a.data)[(size_t)i * (size_t)len + (size_t)j];
            if (!cp) break;
            if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
                r = prg__fail(PRG_ERR_FORMAT, "%s: 'classes' name %d has the invalid code point 0x%lx", path, i, (unsigned long)cp);
                break;
            }
            d = prg__utf8_put(d, cp);
        }
        *d = 0;
    }
    if (!r) r = prg_dataset_set_class_names(ds, v, (int)k);
    if (v) PRG_FREE((void *)v);
    if (text) PRG_FREE(text);
    prg_array_free(&a);
    return r;
}

prg_result prg_dataset_load_npz(prg_dataset *ds, const char *path) {
    prg_array data, labels;
    prg_result r;
    int64_t n, hi = 0, v;
    int c = 3, h = 0, w = 0, base = 0, imagenet;
    size_t i;
    if (!ds) return prg__fail(PRG_ERR_ARG, "prg_dataset_load_npz: ds is NULL");
    memset(ds, 0, sizeof *ds);
    memset(&labels, 0, sizeof labels);
    if ((r = prg_npz_read(&data, path, "data")) != PRG_OK) return r;
    r = prg_npz_read(&labels, path, "labels");
    imagenet = data.ndim == 2;
    n = data.ndim ? data.shape[0] : 0;
    if (!r && (data.dtype != PRG_DT_U8 || (data.ndim != 2 && data.ndim != 4)))
        r = prg__fail(PRG_ERR_SHAPE, "%s: 'data' must be uint8 [N][3*s*s] or [N][C][H][W], got %s with %d dims", path, prg_dtype_name(data.dtype), data.ndim);
    if (!r && imagenet) {
        for (h = 1; 3 * (int64_t)h * h < data.shape[1]; h++) {}
        w = h;
        base = 1;
        if (3 * (int64_t)h * h != data.shape[1])
            r = prg__fail(PRG_ERR_SHAPE, "%s: 'data' rows of %lld bytes are not 3 planes of s*s pixels", path, (long long)data.shape[1]);
    } else if (!r) {
        if (data.shape[1] > 4096 || data.shape[2] > 65535 || data.shape[3] > 65535 || data.shape[1] < 1 || data.shape[2] < 1 || data.shape[3] < 1)
            r = prg__fail(PRG_ERR_SHAPE, "%s: absurd 'data' shape", path);
        c = (int)data.shape[1];
        h = (int)data.shape[2];
        w = (int)data.shape[3];
    }
    if (!r && (n > INT32_MAX || !prg__dtype_is_int(labels.dtype) || labels.ndim != 1 || labels.shape[0] != n))
        r = prg__fail(PRG_ERR_SHAPE, "%s: 'labels' must be integers [%lld] like 'data', got %s with %d dims of %lld", path, (long long)n,
                      prg_dtype_name(labels.dtype), labels.ndim, (long long)(labels.ndim ? labels.shape[0] : 0));
    if (!r) {
        hi = INT64_MIN;
        for (i = 0; i < labels.count; i++) {
            v = prg__int_at(labels.data, labels.dtype, i);
            if (v > hi) hi = v;
            if (v < base || (imagenet && v > 1000) || v >= PRG_MAX_CLASSES) {
                if (imagenet)
                    r = prg__fail(PRG_ERR_FORMAT, "%s: label %lld at index %zu is out of range 1..1000 (downsampled-ImageNet "
                                  "labels are 1-based)", path, (long long)v, i);
                else
                    r = prg__fail(PRG_ERR_FORMAT, "%s: label %lld at index %zu is out of range 0..%d (PRG_MAX_CLASSES - 1; "
                                  "the class count is the largest label + 1)", path, (long long)v, i, PRG_MAX_CLASSES - 1);
                break;
            }
        }
    }
    if (!r) {
        ds->labels = (int32_t *)prg_alloc(sizeof(int32_t) * (size_t)n + 1);
        if (!ds->labels) r = prg__fail(PRG_ERR_NOMEM, "%s: out of memory", path);
    }
    if (r) {
        prg_array_free(&data);
        prg_array_free(&labels);
        prg_dataset_free(ds);
        return r;
    }
    for (i = 0; i < (size_t)n; i++) ds->labels[i] = (int32_t)(prg__int_at(labels.data, labels.dtype, i) - base);
    prg_array_free(&labels);
    ds->images = (uint8_t *)data.data; /* R, G, B planes per row: already [N][3][s][s] */
    ds->n = (int)n;
    ds->c = c;
    ds->h = h;
    ds->w = w;
    ds->num_classes = imagenet ? 1000 : (int)(n ? hi + 1 : 1);
    if ((r = prg__npz_class_names(ds, path, base)) != PRG_OK) prg_dataset_free(ds);
    return r;
}

/* The name with `from` (last occurrence in the base name) replaced by `to`;
   NULL when absent. */
static char *prg__name_swap(const char *path, const char *from, const char *to) {
    const char *base = path, *p, *hit = NULL;
    size_t fl = strlen(from), tl = strlen(to), n = strlen(path);
    char *out;
    for (p = path; *p; p++)
        if (*p == '/' || *p == '\\') base = p + 1;
    for (p = base; (p = strstr(p, from)) != NULL; p++) hit = p;
    if (!hit) return NULL;
    out = (char *)PRG_MALLOC(n - fl + tl + 1);
    if (!out) return NULL;
    memcpy(out, path, (size_t)(hit - path));
    memcpy(out + (hit - path), to, tl);
    strcpy(out + (hit - path) + tl, hit + fl);
    return out;
}

static char *prg__join(const char *dir, const char *name) {
    size_t dl = strlen(dir), nl = strlen(name);
    int sep = dl && dir[dl - 1] != '/' && dir[dl - 1] != '\\';
    char *p = (char *)PRG_MALLOC(dl + (size_t)sep + nl + 1);
    if (!p) return NULL;
    memcpy(p, dir, dl);
    if (sep) p[dl] = '/';
    memcpy(p + dl + sep, name, nl + 1);
    return p;
}

static int prg__exists(const char *path) {
    FILE *f = path ? fopen(path, "rb") : NULL;
    if (f) fclose(f);
    return f != NULL;
}

prg_result prg_dataset_load_dir(prg_dataset *ds, const char *dir, int train) {
    static const char *const c10[5] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"};
    char *p[5] = {NULL, NULL, NULL, NULL, NULL}, name[64];
    const char *split = train ? "train" : "t10k";
    prg_result r;
    int k, n = 0, kind = 0, gz;
    if (!ds) return prg__fail(PRG_ERR_ARG, "prg_dataset_load_dir: ds is NULL");
    memset(ds, 0, sizeof *ds);
    if (!dir) return prg__fail(PRG_ERR_ARG, "dataset directory is NULL");
    p[0] = prg__join(dir, "data_batch_1.bin");
    if (prg__exists(p[0])) {
        kind = 10;
        if (train)
            for (n = 1; n < 5; n++) p[n] = prg__join(dir, c10[n]);
        else {
            PRG_FREE(p[0]);
            p[0] = prg__join(dir, "test_batch.bin");
            n = 1;
        }
    } else {
        PRG_FREE(p[0]);
        p[0] = prg__join(dir, train ? "train.bin" : "test.bin");
        if (prg__exists(p[0])) {
            kind = 100;
            n = 1;
        } else {
            for (gz = 0; gz < 2 && !kind; gz++) {
                PRG_FREE(p[0]);
                snprintf(name, sizeof name, "%s-images-idx3-ubyte%s", split, gz ? ".gz" : "");
                p[0] = prg__join(dir, name);
                if (prg__exists(p[0])) {
                    kind = 1;
                    snprintf(name, sizeof name, "%s-labels-idx1-ubyte%s", split, gz ? ".gz" : "");
                    p[1] = prg__join(dir, name);
                    if (!prg__exists(p[1])) { /* labels may be gzipped when images are not, or the other way */
                        PRG_FREE(p[1]);
                        snprintf(name, sizeof name, "%s-labels-idx1-ubyte%s", split, gz ? "" : ".gz");
                        p[1] = prg__join(dir, name);
                    }
                    n = 2;
                }
            }
        }
    }
    for (k = 0; k < (n ? n : 1); k++)
        if (!p[k]) {
            r = prg__fail(PRG_ERR_NOMEM, "%s: out of memory", dir);
            goto out;
        }
    if (kind == 10) r = prg_dataset_load_cifar10(ds, (const char *const *)p, n);
    else if (kind == 100) r = prg_dataset_load_cifar100(ds, (const char *const *)p, 1, 0);
    else if (kind == 1) r = prg_dataset_load_idx(ds, p[0], p[1]);
    else
        r = prg__fail(PRG_ERR_IO, "%s: no known dataset layout here (looked for data_batch_1.bin, %s, %s-images-idx3-ubyte[.gz])", dir,
                      train ? "train.bin" : "test.bin", split);
out:
    for (k = 0; k < 5; k++)
        if (p[k]) PRG_FREE(p[k]);
    return r;
}

prg_result prg_dataset_load(prg_dataset *ds, const char *path) {
    uint8_t m[4] = {0, 0, 0, 0};
    uint64_t size;
    FILE *f;
    prg_result r;
    const char *base = path, *p;
    if (!ds) return prg__fail(PRG_ERR_ARG, "prg_dataset_load: ds is NULL");
    memset(ds, 0, sizeof *ds);
    if ((r = prg__fopen_read(&f, path, &size)) != PRG_OK) return r;
    if (size >= 4 && fread(m, 1, 4, f) != 4) m[0] = m[1] = 0xff;
    fclose(f);
    for (p = path; *p; p++)
        if (*p == '/' || *p == '\\') base = p + 1;
    if (m[0] == 'P' && m[1] == 'K') return prg_dataset_load_npz(ds, path);
    if ((m[0] == 0x1f && m[1] == 0x8b) || (m[0] == 0 && m[1] == 0 && m[2] == 8 && (m[3] == 3 || m[3] == 1))) {
        int is_labels = m[0] == 0 ? m[3] == 1 : strstr(base, "labels") != NULL; /* raw: the magic decides */
        char *other = is_labels ? prg__name_swap(path, "labels", "images") : prg__name_swap(path, "images", "labels"), *o2;
        if (!other)
            return prg__fail(PRG_ERR_ARG, "%s: an IDX file, but the name has no 'images'/'labels' to find its partner; use prg_dataset_load_idx", path);
        o2 = is_labels ? prg__name_swap(other, "idx1", "idx3") : prg__name_swap(other, "idx3", "idx1");
        if (o2) {
            PRG_FREE(other);
            other = o2;
        }
        r = is_labels ? prg_dataset_load_idx(ds, other, path) : prg_dataset_load_idx(ds, path, other);
        PRG_FREE(other);
        return r;
    }
    if (strstr(path, "cifar-100") || strstr(path, "cifar100") || strcmp(base, "train.bin") == 0 || strcmp(base, "test.bin") == 0)
        return prg_dataset_load_cifar100(ds, &path, 1, 0);
    if (strstr(base, "data_batch") || strstr(base, "test_batch") || (size && size % 3073 == 0 && size % 3074 != 0))
        return prg_dataset_load_cifar10(ds, &path, 1);
    if (size && size % 3074 == 0 && size % 3073 != 0) return prg_dataset_load_cifar100(ds, &path, 1, 0);
    return prg__fail(PRG_ERR_FORMAT, "%s: unknown dataset format (magic %02x %02x %02x %02x at byte 0; IDX, .npz, CIFAR-10/100 binary are known)",
                     path, m[0], m[1], m[2], m[3]);
}

/* ---- augmentation ---------------------------------------------------- */

/* Python's round() (half to even) for the default rounding mode. */
static double prg__round_even(double v) { return nearbyint(v); }

/* float a * b rounded once, as a float multiply, where the exact product fits
   a double (uint8 or small int times float): immune to FMA contraction, so the
   PIL arithmetic is reproduced whatever the compiler flags. */
static float prg__fmul(float a, float b) { return (float)((double)a * (double)b); }

/* random.random() with 53 bits, random.uniform, random.randint(a, b) */
static double prg__rng_double(prg_rng *r) {
    return (double)(prg_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
}
static double prg__rng_range(prg_rng *r, double a, double b) { return a + prg__dmul(b - a, prg__rng_double(r)); }
static int prg__rng_int(prg_rng *r, int a, int b) { return a + (int)prg_rng_below(r, (uint32_t)(b - a + 1)); }

static uint8_t prg__clip8i(int v) { return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v); }

void prg_data_rng(prg_rng *r, uint64_t seed, uint64_t epoch, int index) {
    prg_rng_seed(r, seed ^ 0x6461746161756735ull, (epoch << 32) ^ (uint64_t)(uint32_t)index);
}

/* ---- single operations ---- */

void prg_planes_flip(uint8_t *img, int c, int h, int w) {
    int ch, y, x;
    for (ch = 0; ch < c; ch++)
        for (y = 0; y < h; y++) {
            uint8_t *row = img + ((size_t)ch * h + y) * w;
            for (x = 0; x < w / 2; x++) {
                uint8_t t = row[x];
                row[x] = row[w - 1 - x];
                row[w - 1 - x] = t;
            }
        }
}

void prg_planes_crop(uint8_t *dst, const uint8_t *src, int top, int left, int oh, int ow, int c,
                    int h, int w) {
    int ch, y, x;
    for (ch = 0; ch < c; ch++)
        for (y = 0; y < oh; y++) {
            uint8_t *o = dst + ((size_t)ch * oh + y) * ow;
            int sy = top + y;
            if (sy < 0 || sy >= h) {
                memset(o, 0, (size_t)ow);
                continue;
            }
            for (x = 0; x < ow; x++) {
                int sx = left + x;
                o[x] = (sx >= 0 && sx < w) ? src[((size_t)ch * h + sy) * w + sx] : 0;
            }
        }
}

size_t prg_planes_resize_workspace(int c, int h, int w, int oh, int ow) {
    return prg__rs_workspace(c, h, w, oh, ow, PRG_FILTER_BICUBIC);
}

/* bicubic resize of a window of a planar picture: rows `pitch` apart,
   planes `plane` apart */
static void prg__resize(uint8_t *dst, int oh, int ow, const uint8_t *src, size_t pitch,
                        size_t plane, int c, int h, int w, void *work) {
    prg__resample(dst, oh, ow, (size_t)ow, (size_t)oh * ow, src, h, w, pitch, plane, c, 1, PRG_FILTER_BICUBIC,
                  work);
}

prg_result prg_planes_resize(uint8_t *dst, int oh, int ow, const uint8_t *src, int c, int h, int w,
                            void *work) {
    void *own = NULL;
    if (c < 1 || h < 1 || w < 1 || oh < 1 || ow < 1)
        return prg__fail(PRG_ERR_ARG, "prg_planes_resize: sizes must be positive (got %dx%dx%d -> %dx%d)",
                         c, h, w, oh, ow);
#ifdef PRG_IMAGE_MAX_PIXELS
    if ((uint64_t)oh * (uint64_t)ow > PRG_IMAGE_MAX_PIXELS || (uint64_t)h * (uint64_t)w > PRG_IMAGE_MAX_PIXELS)
        return prg__fail(PRG_ERR_ARG, "prg_planes_resize: %dx%d -> %dx%d exceeds PRG_IMAGE_MAX_PIXELS (%llu)", h, w, oh, ow,
                         (unsigned long long)PRG_IMAGE_MAX_PIXELS);
#endif
    if (!dst || !src) return prg__fail(PRG_ERR_ARG, "prg_planes_resize: dst or src is NULL");
    if (!work) {
        own = work = prg_alloc(prg_planes_resize_workspace(c, h, w, oh, ow));
        if (!work) return prg__fail(PRG_ERR_NOMEM, "prg_planes_resize: no memory for the workspace");
    }
    prg__resize(dst, oh, ow, src, (size_t)w, (size_t)h * w, c, h, w, work);
    prg_free(own);
    return PRG_OK;
}

/* PIL's transform-time bicubic (Geometry.c): a = -1 cubic, edge rows and
   columns repeated, result truncated to uint8. */
#define PRG__CUBIC1(v, v1, v2, v3, v4, d)                         \
    do {                                                          \
        double p1_ = (v2), p2_ = -(v1) + (v3);                    \
        double p3_ = 2 * ((v1) - (v2)) + (v3) - (v4);             \
        double p4_ = -(v1) + (v2) - (v3) + (v4);                  \
        (v) = p1_ + prg__dmul(d, p2_ + prg__dmul(d, p3_ + prg__dmul(d, p4_)));  \
    } while (0)

static int prg__floor_pil(double v) { return v < 0.0 ? (int)floor(v) : (int)v; }
static int prg__clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

void prg_planes_affine(uint8_t *dst, const uint8_t *src, const double m[6], const uint8_t *fill,
                      int c, int h, int w) {
    int x, y, ch;
    for (y = 0; y < h; y++)
        for (x = 0; x < w; x++) {
            double xi = x + 0.5, yi = y + 0.5;
            double xx = prg__dmul(m[0], xi) + prg__dmul(m[1], yi) + m[2];
            double yy = prg__dmul(m[3], xi) + prg__dmul(m[4], yi) + m[5];
            double dx, dy;
            int ix, iy, cx[4], k;
            if (xx < 0.0 || xx >= w || yy < 0.0 || yy >= h) {
                for (ch = 0; ch < c; ch++) dst[((size_t)ch * h + y) * w + x] = fill[ch];
                continue;
            }
            xx -= 0.5;
            yy -= 0.5;
            ix = prg__floor_pil(xx);
            iy = prg__floor_pil(yy);
            dx = xx - ix;
            dy = yy - iy;
            ix--;
            iy--;
            for (k = 0; k < 4; k++) cx[k] = prg__clampi(ix + k, 0, w - 1);
            for (ch = 0; ch < c; ch++) {
                const uint8_t *pl = src + (size_t)ch * h * w;
                double v[4], r;
                for (k = 0; k < 4; k++) {
                    int row = iy + k;
                    if (k == 0 || (row >= 0 && row < h)) {
                        const uint8_t *in = pl + (size_t)prg__clampi(row, 0, h - 1) * w;
                        PRG__CUBIC1(v[k], (double)in[cx[0]], (double)in[cx[1]], (double)in[cx[2]],
                                    (double)in[cx[3]], dx);
                    } else {
                        v[k] = v[k - 1];
                    }
                }
                PRG__CUBIC1(r, v[0], v[1], v[2], v[3], dy);
                dst[((size_t)ch * h + y) * w + x] = r <= 0.0 ? 0 : r >= 255.0 ? 255 : (uint8_t)r;
            }
        }
}

/* Python's round(v, 15) */
static double prg__round15(double v) { return prg__round_even(v * 1e15) / 1e15; }

void prg_planes_rotate(uint8_t *dst, const uint8_t *src, double degrees, const uint8_t *fill, int c,
                      int h, int w) {
    double angle = fmod(degrees, 360.0), th, m[6], cx = w / 2.0, cy = h / 2.0;
    int ch, x, y;
    if (angle < 0.0) angle += 360.0;
    /* PIL's exact fast paths */
    if (angle == 0.0 || angle == 180.0 || ((angle == 90.0 || angle == 270.0) && w == h)) {
        for (ch = 0; ch < c; ch++) {
            const uint8_t *in = src + (size_t)ch * h * w;
            uint8_t *out = dst + (size_t)ch * h * w;
            for (y = 0; y < h; y++)
                for (x = 0; x < w; x++) {
                    int sx = x, sy = y;
                    if (angle == 180.0) { sx = w - 1 - x; sy = h - 1 - y; }
                    else if (angle == 90.0) { sx = w - 1 - y; sy = x; }
                    else if (angle == 270.0) { sx = y; sy = h - 1 - x; }
                    out[(size_t)y * w + x] = in[(size_t)sy * w + sx];
                }
        }
        return;
    }
    th = -(angle * (3.141592653589793 / 180.0));
    m[0] = prg__round15(cos(th));
    m[1] = prg__round15(sin(th));
    m[3] = prg__round15(-sin(th));
    m[4] = prg__round15(cos(th));
    m[2] = prg__dmul(m[0], -cx) + prg__dmul(m[1], -cy) + 0.0 + cx;
    m[5] = prg__dmul(m[3], -cx) + prg__dmul(m[4], -cy) + 0.0 + cy;
    prg_planes_affine(dst, src, m, fill, c, h, w);
}

/* ---- point operations (per channel look-up tables, PIL ImageOps) ---- */

static void prg__lut_apply(uint8_t *dst, const uint8_t *src, const uint8_t *lut, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) dst[i] = lut[src[i]];
}

static void prg__autocontrast(uint8_t *dst, const uint8_t *src, int c, size_t n) {
    int ch, i, lo, hi;
    for (ch = 0; ch < c; ch++) {
        const uint8_t *p = src + (size_t)ch * n;
        size_t hist[256] = {0}, k;
        uint8_t lut[256];
        for (k = 0; k < n; k++) hist[p[k]]++;
        for (lo = 0; lo < 255 && !hist[lo]; lo++) {}
        for (hi = 255; hi > 0 && !hist[hi]; hi--) {}
        if (hi <= lo) {
            for (i = 0; i < 256; i++) lut[i] = (uint8_t)i;
        } else {
            double scale = 255.0 / (hi - lo), offset = -lo * scale;
            for (i = 0; i < 256; i++) lut[i] = prg__clip8i((int)(prg__dmul(i, scale) + offset));
        }
        prg__lut_apply(dst + (size_t)ch * n, p, lut, n);
    }
}

static void prg__equalize(uint8_t *dst, const uint8_t *src, int c, size_t n) {
    int ch, i;
    for (ch = 0; ch < c; ch++) {
        const uint8_t *p = src + (size_t)ch * n;
        size_t hist[256] = {0}, k, total = 0, last = 0, step, acc;
        int nonzero = 0;
        uint8_t lut[256];
        for (k = 0; k < n; k++) hist[p[k]]++;
        for (i = 0; i < 256; i++)
            if (hist[i]) {
                nonzero++;
                total += hist[i];
                last = hist[i];
            }
        step = nonzero > 1 ? (total - last) / 255 : 0;
        acc = step / 2;
        for (i = 0; i < 256; i++) {
            lut[i] = step ? (uint8_t)(acc / step > 255 ? 255 : acc / step) : (uint8_t)i;
            acc += hist[i];
        }
        prg__lut_apply(dst + (size_t)ch * n, p, lut, n);
    }
}

/* PIL ImagingBlend: out = in1 + alpha (in2 - in1) in float, truncated */
static uint8_t prg__blend(int in1, int in2, float alpha) {
    float t = (float)in1 + prg__fmul(alpha, (float)(in2 - in1));
    if (alpha >= 0.0f && alpha <= 1.0f) return (uint8_t)t;
    return t <= 0.0f ? 0 : t >= 255.0f ? 255 : (uint8_t)t;
}

/* PIL RGB -> L (ITU-R 601-2 in 16-bit fixed point) */
static int prg__luma(const uint8_t *src, size_t n, size_t i) {
    return (src[i] * 19595 + src[n + i] * 38470 + src[2 * n + i] * 7471 + 0x8000) >> 16;
}

/* ImageEnhance: blend(degenerate, image, factor); kind 0 color, 1 contrast,
   2 brightness, 3 sharpness */
static void prg__enhance(uint8_t *dst, const uint8_t *src, int kind, float f, int c, int h, int w) {
    size_t n = (size_t)h * w, i;
    int ch, x, y;
    if (kind == 0 || kind == 1) {
        int mean = 0;
        if (kind == 1) {
            uint64_t sum = 0;
            for (i = 0; i < n; i++) sum += (uint64_t)(c == 3 ? prg__luma(src, n, i) : src[i]);
            mean = (int)((double)sum / (double)n + 0.5);
        }
        for (i = 0; i < n; i++) {
            int deg = kind == 1 ? mean : (c == 3 ? prg__luma(src, n, i) : src[i]);
            for (ch = 0; ch < c; ch++) dst[ch * n + i] = prg__blend(deg, src[ch * n + i], f);
        }
    } else if (kind == 2) {
        for (i = 0; i < n * (size_t)c; i++) dst[i] = prg__blend(0, src[i], f);
    } else {
        /* degenerate = ImageFilter.SMOOTH (1 1 1 / 1 5 1 / 1 1 1) / 13, border kept */
        const float k1 = 1.0f / 13.0f, k5 = 5.0f / 13.0f;
        for (ch = 0; ch < c; ch++) {
            const uint8_t *p = src + (size_t)ch * n;
            uint8_t *o = dst + (size_t)ch * n;
            for (y = 0; y < h; y++)
                for (x = 0; x < w; x++) {
                    int deg = p[(size_t)y * w + x];
                    if (h >= 3 && w >= 3 && y > 0 && y < h - 1 && x > 0 && x < w - 1) {
                        const uint8_t *r0 = p + (size_t)(y + 1) * w + x, *r1 = r0 - w, *r2 = r1 - w;
                        float ss = 0.5f;
                        ss += prg__fmul(r0[-1], k1) + prg__fmul(r0[0], k1) + prg__fmul(r0[1], k1);
                        ss += prg__fmul(r1[-1], k1) + prg__fmul(r1[0], k5) + prg__fmul(r1[1], k1);
                        ss += prg__fmul(r2[-1], k1) + prg__fmul(r2[0], k1) + prg__fmul(r2[1], k1);
                        deg = ss <= 0.0f ? 0 : ss >= 255.0f ? 255 : (int)ss;
                    }
                    o[(size_t)y * w + x] = prg__blend(deg, p[(size_t)y * w + x], f);
                }
        }
    }
}

static const char *const prg__ra_names[PRG_RA_NUM_OPS] = {
    "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
    "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
    "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"};

const char *prg_randaug_op_name(int op) {
    return op >= 0 && op < PRG_RA_NUM_OPS ? prg__ra_names[op] : "unknown";
}

/* ops whose timm argument gets a random sign */
static int prg__ra_signed(int op) {
    return op == PRG_RA_ROTATE || (op >= PRG_RA_COLOR && op <= PRG_RA_TRANSLATE_Y);
}

void prg_randaug_op_apply(uint8_t *dst, const uint8_t *src, int op, double level, int negate,
                          const uint8_t *fill, int c, int h, int w) {
    size_t n = (size_t)h * w, i;
    double sign = negate ? -1.0 : 1.0;
    uint8_t lut[256];
    int k;
    PRG_ASSERT(c == 1 || c == 3);
    switch (op) {
    case PRG_RA_AUTOCONTRAST: prg__autocontrast(dst, src, c, n); return;
    case PRG_RA_EQUALIZE: prg__equalize(dst, src, c, n); return;
    case PRG_RA_INVERT:
        for (k = 0; k < 256; k++) lut[k] = (uint8_t)(255 - k);
        break;
    case PRG_RA_ROTATE: prg_planes_rotate(dst, src, sign * (level / 10.0 * 30.0), fill, c, h, w); return;
    case PRG_RA_POSTERIZE: {
        int bits = 4 - (int)(level / 10.0 * 4);
        int mask = ~((1 << (8 - bits)) - 1);
        for (k = 0; k < 256; k++) lut[k] = (uint8_t)(k & mask);
        break;
    }
    case PRG_RA_SOLARIZE: {
        int v = (int)(level / 10.0 * 256), thresh = 256 - (v < 256 ? v : 256);
        for (k = 0; k < 256; k++) lut[k] = (uint8_t)(k < thresh ? k : 255 - k);
        break;
    }
    case PRG_RA_SOLARIZE_ADD: {
        int add = (int)(level / 10.0 * 110);
        if (add > 128) add = 128;
        for (k = 0; k < 256; k++) lut[k] = (uint8_t)(k < 128 ? (k + add < 255 ? k + add : 255) : k);
        break;
    }
    case PRG_RA_COLOR: case PRG_RA_CONTRAST: case PRG_RA_BRIGHTNESS: case PRG_RA_SHARPNESS: {
        double f = 1.0 + sign * (level / 10.0 * 0.9);
        prg__enhance(dst, src, op - PRG_RA_COLOR, (float)(f > 0.1 ? f : 0.1), c, h, w);
        return;
    }
    default: {
        double m[6] = {1, 0, 0, 0, 1, 0};
        double shear = sign * (level / 10.0 * 0.3), pct = sign * (level / 10.0 * 0.45);
        if (op == PRG_RA_SHEAR_X) m[1] = shear;
        else if (op == PRG_RA_SHEAR_Y) m[3] = shear;
        else if (op == PRG_RA_TRANSLATE_X) m[2] = pct * w;
        else if (op == PRG_RA_TRANSLATE_Y) m[5] = pct * h;
        else PRG_ASSERT(!"prg_randaug_op_apply: unknown op");
        prg_planes_affine(dst, src, m, fill, c, h, w);
        return;
    }
    }
    for (i = 0; i < (size_t)c; i++) prg__lut_apply(dst + i * n, src + i * n, lut, n);
}

void prg_planes_normalize(float *dst, const uint8_t *src, const float *mean, const float *std, int c,
                         int h, int w) {
    size_t n = (size_t)h * w, i;
    int ch;
    for (ch = 0; ch < c; ch++)
        for (i = 0; i < n; i++) {
            float v = (float)src[(size_t)ch * n + i] / 255.0f;
            v = v - mean[ch];
            dst[(size_t)ch * n + i] = v / std[ch];
        }
}

int prg_planes_erase(float *img, const prg_transform *t, prg_rng *rng, int c, int h, int w) {
    double area = (double)h * w, la = log(t->erase_min_aspect), lb = log(1.0 / t->erase_min_aspect);
    int attempt, ch, y, x;
    if (t->erase_prob <= 0.0f || prg__rng_double(rng) > t->erase_prob) return 0;
    for (attempt = 0; attempt < 10; attempt++) {
        double target = prg__rng_range(rng, t->erase_min_area, t->erase_max_area) * area;
        double aspect = exp(prg__rng_range(rng, la, lb));
        int eh = (int)prg__round_even(sqrt(target * aspect));
        int ew = (int)prg__round_even(sqrt(target / aspect));
        if (ew < w && eh < h) {
            int top = prg__rng_int(rng, 0, h - eh), left = prg__rng_int(rng, 0, w - ew);
            for (ch = 0; ch < c; ch++)
                for (y = top; y < top + eh; y++)
                    for (x = left; x < left + ew; x++)
                        img[((size_t)ch * h + y) * w + x] = prg_rng_normal(rng);
            return eh * ew;
        }
    }
    return 0;
}

/* ---- corruptions (ImageNet-C / CIFAR-10-C) ---- */

static const char *const prg__corrupt_names[PRG_CORRUPT_COUNT] = {
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "snow",
    "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression"};

const char *prg_corruption_name(int corruption) {
    return corruption >= 0 && corruption < PRG_CORRUPT_COUNT ? prg__corrupt_names[corruption] : "?";
}
int prg_corruption_find(const char *name) {
    int k;
    for (k = 0; name && k < PRG_CORRUPT_COUNT; k++)
        if (!strcmp(name, prg__corrupt_names[k])) return k;
    return -1;
}

/* The benchmark's parameters, [0] CIFAR-10-C, [1] ImageNet-C, per severity. */
static const double prg__cx_gauss[2][5] = {{0.04, 0.06, 0.08, 0.09, 0.10}, {0.08, 0.12, 0.18, 0.26, 0.38}};
static const double prg__cx_shot[2][5] = {{500, 250, 100, 75, 50}, {60, 25, 12, 5, 3}};
static const double prg__cx_impulse[2][5] = {{0.01, 0.02, 0.03, 0.05, 0.07}, {0.03, 0.06, 0.09, 0.17, 0.27}};
static const double prg__cx_defocus[2][5][2] = {{{0.3, 0.4}, {0.4, 0.5}, {0.5, 0.6}, {1, 0.2}, {1.5, 0.1}},
                                                {{3, 0.1}, {4, 0.5}, {6, 0.5}, {8, 0.5}, {10, 0.5}}};
static const double prg__cx_glass[2][5][3] = {{{0.05, 1, 1}, {0.25, 1, 1}, {0.4, 1, 1}, {0.25, 1, 2}, {0.4, 1, 2}},
                                              {{0.7, 1, 2}, {0.9, 2, 1}, {1, 2, 3}, {1.1, 3, 2}, {1.5, 4, 2}}};
static const double prg__cx_motion[2][5][2] = {{{6, 1}, {6, 1.5}, {6, 2}, {8, 2}, {9, 2.5}},
                                               {{10, 3}, {15, 5}, {15, 8}, {15, 12}, {20, 15}}};
/* zoom factors 1 + k step, k < count: numpy's arange(1, stop, step) lengths */
static const double prg__cx_zoom_step[2][5] = {{0.01, 0.01, 0.01, 0.01, 0.01}, {0.01, 0.01, 0.02, 0.02, 0.03}};
static const int prg__cx_zoom_count[2][5] = {{7, 12, 16, 21, 26}, {12, 16, 11, 13, 11}};
static const double prg__cx_snow[2][5][7] = {
    {{0.1, 0.2, 1, 0.6, 8, 3, 0.95}, {0.1, 0.2, 1, 0.5, 10, 4, 0.9}, {0.15, 0.3, 1.75, 0.55, 10, 4, 0.9},
     {0.25, 0.3, 2.25, 0.6, 12, 6, 0.85}, {0.3, 0.3, 1.25, 0.65, 14, 12, 0.8}},
    {{0.1, 0.3, 3, 0.5, 10, 4, 0.8}, {0.2, 0.3, 2, 0.5, 12, 4, 0.7}, {0.55, 0.3, 4, 0.9, 12, 8, 0.7},
     {0.55, 0.3, 4.5, 0.85, 12, 8, 0.65}, {0.55, 0.3, 2.5, 0.85, 12, 12, 0.55}}};
static const double prg__cx_frost[2][5][2] = {{{1, 0.2}, {1, 0.3}, {0.9, 0.4}, {0.85, 0.4}, {0.75, 0.45}},
                                              {{1, 0.4}, {0.8, 0.6}, {0.7, 0.7}, {0.65, 0.7}, {0.6, 0.75}}};
static const double prg__cx_fog[2][5][2] = {{{0.2, 3}, {0.5, 3}, {0.75, 2.5}, {1, 2}, {1.5, 1.75}},
                                            {{1.5, 2}, {2, 2}, {2.5, 1.7}, {2.5, 1.5}, {3, 1.4}}};
static const double prg__cx_bright[2][5] = {{0.05, 0.1, 0.15, 0.2, 0.3}, {0.1, 0.2, 0.3, 0.4, 0.5}};
static const double prg__cx_contrast[2][5] = {{0.75, 0.5, 0.4, 0.3, 0.15}, {0.4, 0.3, 0.2, 0.1, 0.05}};
/* (alpha, sigma, affine) as fractions of the side (ImageNet-C's are of 244 for 224 images) */
static const double prg__cx_elastic[2][5][3] = {
    {{0, 0, 0.08}, {0.05, 0.2, 0.07}, {0.08, 0.06, 0.06}, {0.1, 0.04, 0.05}, {0.1, 0.03, 0.03}},
    {{2, 0.7, 0.1}, {2, 0.08, 0.2}, {0.05, 0.01, 0.02}, {0.07, 0.01, 0.02}, {0.12, 0.01, 0.02}}};
static const double prg__cx_pixelate[2][5] = {{0.95, 0.9, 0.85, 0.75, 0.65}, {0.6, 0.5, 0.4, 0.3, 0.25}};
static const int prg__cx_jpeg[2][5] = {{80, 65, 58, 50, 40}, {25, 18, 15, 10, 7}};

static int prg__cx_pow2(int n) {
    int m = 1;
    while (m < n) m *= 2;
    return m;
}
#define PRG__CX_DISK (2 * 21 * 21) /* defocus_blur's two kernels of at most 21 x 21 */
static int prg__cx_kernel_cap(int h, int w) { return 8 * (h > w ? h : w) + 64; }

size_t prg_corrupt_workspace(int c, int h, int w) {
    size_t n = (size_t)c * h * w, hw = (size_t)h * w, m = (size_t)prg__cx_pow2(h > w ? h : w);
    size_t dbl = 2 * n + 3 * hw + (size_t)(h + 3) * (w + 3) + PRG__CX_DISK + m * m + (size_t)prg__cx_kernel_cap(h, w) + 2 * (size_t)(h > w ? h : w) + 8;
    size_t bytes = dbl * sizeof(double) + 2 * n + 64;
#ifndef PRG_NO_IMAGE
    bytes += prg_jpeg_encode_bound(h, w, c) + prg_jpeg_encode_workspace(h, w, c);
#endif
    return bytes;
}

static double prg__cx_unif(prg_rng *r) { return (double)(prg_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0); }
static double prg__cx_normal(prg_rng *r) {
    double u1 = prg__cx_unif(r) + 1.0 / 9007199254740992.0, u2 = prg__cx_unif(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
/* Poisson(lambda): products of uniforms for small lambda; Hoermann's PTRS
   (transformed rejection with squeeze, 1993) from 10 up. */
static double prg__cx_poisson(prg_rng *r, double lam) {
    if (lam <= 0) return 0;
    if (lam < 10) {
        double l = exp(-lam), p = 1;
        int k = -1;
        do { k++; p *= prg__cx_unif(r); } while (p > l);
        return k;
    } else {
        double sl = sqrt(lam), ll = log(lam), b = 0.931 + 2.53 * sl, a = -0.059 + 0.02483 * b;
        double inva = 1.1239 + 1.1328 / (b - 3.4), vr = 0.9277 - 3.6224 / (b - 2);
        for (;;) {
            double u = prg__cx_unif(r) - 0.5, v = prg__cx_unif(r), us = 0.5 - fabs(u);
            double k = floor((2 * a / us + b) * u + lam + 0.43);
            if (us >= 0.07 && v <= vr) return k;
            if (k < 0 || (us < 0.013 && v > us)) continue;
            if (log(v) + log(inva) - log(a / (us * us) + b) <= -lam + k * ll - lgamma(k + 1)) return k;
        }
    }
}

/* Border modes: 0 nearest (clamp), 1 scipy 'reflect' (d c b a | a b c d),
   2 'mirror' = cv2 BORDER_REFLECT_101 (c b | a b c). */
static int prg__cx_idx(int i, int n, int mode) {
    if (i >= 0 && i < n) return i;
    if (n == 1 || mode == 0) return i < 0 ? 0 : n - 1;
    if (mode == 1) {
        int p = 2 * n;
        i %= p;
        if (i < 0) i += p;
        return i < n ? i : p - 1 - i;
    } else {
        int p = 2 * n - 2;
        i %= p;
        if (i < 0) i += p;
        return i < n ? i : p - i;
    }
}

/* scipy.ndimage.gaussian_filter on one plane (axis 0 then axis 1),
   radius = int(truncate sigma + 0.5).  tmp [h*w], kern [2 r + 1]. */
static void prg__cx_gauss_plane(double *p, int h, int w, double sigma, double truncate, int mode, double *tmp,
                                double *kern, int kcap) {
    int r = (int)(truncate * sigma + 0.5), i, j, k;
    double s = 0;
    if (sigma <= 0 || r == 0) return;
    if (2 * r + 1 > kcap) r = (kcap - 1) / 2;
    for (k = -r; k <= r; k++) s += kern[k + r] = exp(-0.5 * k * k / (sigma * sigma));
    for (k = 0; k <= 2 * r; k++) kern[k] /= s;
    for (i = 0; i < h; i++)
        for (j = 0; j < w; j++) {
            double a = 0;
            for (k = -r; k <= r; k++) a += kern[k + r] * p[(size_t)prg__cx_idx(i + k, h, mode) * w + j];
            tmp[(size_t)i * w + j] = a;
        }
    for (i = 0; i < h; i++)
        for (j = 0; j < w; j++) {
            double a = 0;
            for (k = -r; k <= r; k++) a += kern[k + r] * tmp[(size_t)i * w + prg__cx_idx(j + k, w, mode)];
            p[(size_t)i * w + j] = a;
        }
}

/* The benchmark's clipped_zoom on one plane (scipy zoom, order 1, of the
   central ceil(side / z) crop, then the central h x w of the result). */
static void prg__cx_zoom_plane(double *dst, const double *src, int h, int w, double z) {
    int chh = (int)ceil(h / z), chw = (int)ceil(w / z), top = (h - chh) / 2, left = (w - chw) / 2;
    int oh = (int)prg__round_even(chh * z), ow = (int)prg__round_even(chw * z), th = (oh - h) / 2, tw = (ow - w) / 2, i, j;
    double sy = oh > 1 ? (double)(chh - 1) / (oh - 1) : 0, sx = ow > 1 ? (double)(chw - 1) / (ow - 1) : 0;
    for (i = 0; i < h; i++) {
        double fy = (i + th) * sy;
        int y0 = (int)floor(fy), y1 = y0 + 1 < chh ? y0 + 1 : chh - 1;
        double wy = fy - y0;
        for (j = 0; j < w; j++) {
            double fx = (j + tw) * sx;
            int x0 = (int)floor(fx), x1 = x0 + 1 < chw ? x0 + 1 : chw - 1;
            double wx = fx - x0;
            const double *r0 = src + (size_t)(top + y0) * w + left, *r1 = src + (size_t)(top + y1) * w + left;
            dst[(size_t)i * w + j] = (1 - wy) * ((1 - wx) * r0[x0] + wx * r0[x1]) + wy * ((1 - wx) * r1[x0] + wx * r1[x1]);
        }
    }
}

/* The benchmark's plasma_fractal (diamond-square on a torus) of side m, in [0, 1]. */
static void prg__cx_plasma(double *p, int m, double decay, prg_rng *rng) {
    int s = m, i, j;
    double wib = 100;
    p[0] = 0;
    while (s >= 2) {
        int n = m / s, hs = s / 2;
        for (i = 0; i < n; i++)
            for (j = 0; j < n; j++) {
                int i1 = (i + 1) % n * s, j1 = (j + 1) % n * s;
                double a = p[(size_t)i * s * m + j * s] + p[(size_t)i1 * m + j * s] + p[(size_t)i * s * m + j1] + p[(size_t)i1 * m + j1];
                p[(size_t)(i * s + hs) * m + j * s + hs] = a / 4 + wib * (2 * prg__cx_unif(rng) - 1) * wib;
            }
        for (i = 0; i < n; i++)
            for (j = 0; j < n; j++) {
                int iu = (i + n - 1) % n, jl = (j + n - 1) % n;
                double ctr = p[(size_t)(i * s + hs) * m + j * s + hs];
                double a = ctr + p[(size_t)(iu * s + hs) * m + j * s + hs] + p[(size_t)i * s * m + j * s] + p[(size_t)i * s * m + (j + 1) % n * s];
                double b = ctr + p[(size_t)(i * s + hs) * m + jl * s + hs] + p[(size_t)i * s * m + j * s] + p[(size_t)((i + 1) % n) * s * m + j * s];
                p[(size_t)i * s * m + j * s + hs] = a / 4 + wib * (2 * prg__cx_unif(rng) - 1) * wib;
                p[(size_t)(i * s + hs) * m + j * s] = b / 4 + wib * (2 * prg__cx_unif(rng) - 1) * wib;
            }
        s /= 2;
        wib /= decay;
    }
    {
        double lo = p[0], hi;
        size_t k, mm = (size_t)m * m;
        for (k = 1; k < mm; k++) lo = p[k] < lo ? p[k] : lo;
        for (k = 0; k < mm; k++) p[k] -= lo;
        hi = p[0];
        for (k = 1; k < mm; k++) hi = p[k] > hi ? p[k] : hi;
        for (k = 0; k < mm; k++) p[k] = hi > 0 ? p[k] / hi : 0;
    }
}

/* Our motion blur on one plane of values 0..255: a one-sided Gaussian
   streak (2 ceil(radius) + 1 taps, weights exp(-i^2 / 2 sigma^2)) towards
   the angle (degrees, image y down), edges replicated, rounded. */
static void prg__cx_motion_plane(double *dst, const double *src, int h, int w, double radius, double sigma,
                                 double angle, double *kern, int kcap) {
    int width = 2 * (int)ceil(radius) + 1, i, x, y;
    double s = 0, ca = cos(angle * 3.14159265358979323846 / 180), sa = sin(angle * 3.14159265358979323846 / 180);
    if (width > kcap / 3) width = kcap / 3;
    for (i = 0; i < width; i++) s += kern[i] = exp(-(double)i * i / (2 * sigma * sigma));
    for (i = 0; i < width; i++) {
        kern[i] /= s;
        kern[width + i] = ceil(i * ca - 0.5);
        kern[2 * width + i] = ceil(i * sa - 0.5);
    }
    for (y = 0; y < h; y++)
        for (x = 0; x < w; x++) {
            double a = 0;
            for (i = 0; i < width; i++) {
                int xx = prg__cx_idx(x + (int)kern[width + i], w, 0), yy = prg__cx_idx(y + (int)kern[2 * width + i], h, 0);
                a += kern[i] * src[(size_t)yy * w + xx];
            }
            a = floor(a + 0.5);
            dst[(size_t)y * w + x] = a < 0 ? 0 : a > 255 ? 255 : a;
        }
}

/* Bilinear sample of a plane at (y, x) with a border mode. */
static double prg__cx_bilinear(const double *p, int h, int w, double y, double x, int mode) {
    int y0 = (int)floor(y), x0 = (int)floor(x);
    double wy = y - y0, wx = x - x0;
    int ya = prg__cx_idx(y0, h, mode), yb = prg__cx_idx(y0 + 1, h, mode), xa = prg__cx_idx(x0, w, mode), xb = prg__cx_idx(x0 + 1, w, mode);
    return (1 - wy) * ((1 - wx) * p[(size_t)ya * w + xa] + wx * p[(size_t)ya * w + xb]) +
           wy * ((1 - wx) * p[(size_t)yb * w + xa] + wx * p[(size_t)yb * w + xb]);
}

static void prg__cx_to_u8(uint8_t *dst, const double *x, size_t n, double scale) {
    size_t i;
    for (i = 0; i < n; i++) {
        double v = x[i] * scale;
        dst[i] = (uint8_t)(v <= 0 ? 0 : v >= 255 ? 255 : v); /* np.uint8(clip(.) * 255): truncation */
    }
}

/* The procedural frost overlay, values 0..255 per channel. */
static void prg__cx_frost_layer(double *out /* [c][h][w] */, int c, int h, int w, double *pl, int m, double *tmp,
                                double *kern, int kcap, prg_rng *rng) {
    static const double tint[3] = {0.84, 0.92, 1.0};
    double *nd = out + (size_t)(c - 1) * h * w; /* needles drawn into the last plane first */
    size_t hw = (size_t)h * w, k;
    int side = h < w ? h : w, nn = (int)(hw / 12) + 4, i, ch;
    prg__cx_plasma(pl, m, 1.6, rng);
    memset(nd, 0, hw * sizeof(double));
    for (i = 0; i < nn; i++) {
        double x = prg__cx_unif(rng) * w, y = prg__cx_unif(rng) * h, a = prg__cx_unif(rng) * 3.14159265358979323846;
        double len = 2 + prg__cx_unif(rng) * side / 4.0, v = 0.35 + 0.65 * prg__cx_unif(rng), t;
        for (t = 0; t < len; t += 0.5) {
            int xx = (int)floor(x + t * cos(a)), yy = (int)floor(y + t * sin(a));
            if (xx >= 0 && xx < w && yy >= 0 && yy < h && nd[(size_t)yy * w + xx] < v) nd[(size_t)yy * w + xx] = v;
        }
    }
    prg__cx_gauss_plane(nd, h, w, 0.6, 4.0, 0, tmp, kern, kcap);
    for (k = 0; k < hw; k++) {
        double v = 0.2 + 0.45 * pl[(k / w) * m + k % w] + 0.8 * nd[k];
        tmp[k] = 255 * (v > 1 ? 1 : v);
    }
    for (ch = 0; ch < c; ch++) {
        double tt = c == 3 ? tint[ch] : 0.92;
        for (k = 0; k < hw; k++) out[(size_t)ch * hw + k] = tt * tmp[k];
    }
}

prg_result prg_corrupt(uint8_t *dst, const uint8_t *src, int c, int h, int w, int corruption, int severity,
                       prg_rng *rng, void *work) {
    size_t n, hw, k;
    int set, s = severity - 1, m, kcap, ch, i, j;
    double *x, *y, *a, *b, *t, *zp, *pl, *kern;
    uint8_t *own = NULL, *u8, *u8b;
    prg_result res = PRG_OK;
    if (!dst || !src || !rng || (c != 1 && c != 3) || h < 1 || w < 1 || (size_t)h * w > ((size_t)1 << 28))
        return prg__fail(PRG_ERR_ARG, "prg_corrupt: need dst, src, rng and 1 or 3 planes of a positive size (got %d x %d x %d)", c, h, w);
    if (corruption < 0 || corruption >= PRG_CORRUPT_COUNT || severity < 1 || severity > 5)
        return prg__fail(PRG_ERR_ARG, "prg_corrupt: corruption %d (0..%d) at severity %d (1..5) does not exist",
                         corruption, PRG_CORRUPT_COUNT - 1, severity);
    n = (size_t)c * h * w;
    hw = (size_t)h * w;
    set = h <= 32 && w <= 32 ? 0 : 1;
    m = prg__cx_pow2(h > w ? h : w);
    kcap = prg__cx_kernel_cap(h, w);
    if (!work) {
        own = (uint8_t *)prg_alloc(prg_corrupt_workspace(c, h, w));
        if (!own) return prg__fail(PRG_ERR_NOMEM, "prg_corrupt: out of memory for the workspace of a %dx%dx%d image", c, h, w);
        work = own;
    }
    x = (double *)work; y = x + n; a = y + n; b = a + hw; t = b + hw; zp = t + hw;
    pl = zp + (size_t)(h + 3) * (w + 3) + PRG__CX_DISK; kern = pl + (size_t)m * m;
    u8 = (uint8_t *)(kern + kcap + 2 * (h > w ? h : w) + 8);
    u8b = u8 + n;
    for (k = 0; k < n; k++) x[k] = src[k] / 255.0;
    switch (corruption) {
    case PRG_CORRUPT_GAUSSIAN_NOISE:
        for (k = 0; k < n; k++) x[k] += prg__cx_gauss[set][s] * prg__cx_normal(rng);
        prg__cx_to_u8(dst, x, n, 255);
        break;
    case PRG_CORRUPT_SHOT_NOISE: {
        double lam = prg__cx_shot[set][s];
        for (k = 0; k < n; k++) x[k] = prg__cx_poisson(rng, x[k] * lam) / lam;
        prg__cx_to_u8(dst, x, n, 255);
        break;
    }
    case PRG_CORRUPT_IMPULSE_NOISE: /* skimage random_noise 's&p': each sample flipped with p = amount, salt or pepper 1:1 */
        for (k = 0; k < n; k++) {
            int flip = prg__cx_unif(rng) < prg__cx_impulse[set][s], salt = prg__cx_unif(rng) < 0.5;
            if (flip) x[k] = salt ? 1.0 : 0.0;
        }
        prg__cx_to_u8(dst, x, n, 255);
        break;
    case PRG_CORRUPT_DEFOCUS_BLUR: { /* disk(radius, alias) as the benchmark, then cv2.filter2D (reflect 101) */
        double radius = prg__cx_defocus[set][s][0], alias = prg__cx_defocus[set][s][1], g[5], gs = 0, ks = 0;
        int half = radius <= 8 ? 8 : (int)radius, ks1 = 2 * half + 1, gk = radius <= 8 ? 1 : 2;
        double *disk = zp, *d2 = zp + (size_t)ks1 * ks1; /* within zp's PRG__CX_DISK extra */
        for (i = -half; i <= half; i++)
            for (j = -half; j <= half; j++) ks += disk[(i + half) * ks1 + j + half] = (double)(float)(i * i + j * j) <= radius * radius ? 1 : 0;
        for (k = 0; k < (size_t)ks1 * ks1; k++) disk[k] /= ks;
        for (i = -gk; i <= gk; i++) gs += g[i + gk] = exp(-(double)i * i / (2 * alias * alias));
        for (i = 0; i <= 2 * gk; i++) g[i] /= gs;
        for (i = 0; i < ks1; i++) /* cv2.GaussianBlur of the kernel: rows, then columns, reflect 101 */
            for (j = 0; j < ks1; j++) {
                double v = 0;
                int q;
                for (q = -gk; q <= gk; q++) v += g[q + gk] * disk[i * ks1 + prg__cx_idx(j + q, ks1, 2)];
                d2[i * ks1 + j] = v;
            }
        for (i = 0; i < ks1; i++)
            for (j = 0; j < ks1; j++) {
                double v = 0;
                int q;
                for (q = -gk; q <= gk; q++) v += g[q + gk] * d2[prg__cx_idx(i + q, ks1, 2) * ks1 + j];
                disk[i * ks1 + j] = v;
            }
        for (ch = 0; ch < c; ch++) {
            const double *p = x + (size_t)ch * hw;
            for (i = 0; i < h; i++)
                for (j = 0; j < w; j++) {
                    double v = 0;
                    int p1, q1;
                    for (p1 = -half; p1 <= half; p1++) {
                        const double *row = p + (size_t)prg__cx_idx(i + p1, h, 2) * w;
                        for (q1 = -half; q1 <= half; q1++) v += disk[(p1 + half) * ks1 + q1 + half] * row[prg__cx_idx(j + q1, w, 2)];
                    }
                    y[(size_t)ch * hw + (size_t)i * w + j] = v;
                }
        }
        prg__cx_to_u8(dst, y, n, 255);
        break;
    }
    case PRG_CORRUPT_GLASS_BLUR: {
        double sg = prg__cx_glass[set][s][0];
        int d = (int)prg__cx_glass[set][s][1], it = (int)prg__cx_glass[set][s][2], r;
        for (ch = 0; ch < c; ch++) prg__cx_gauss_plane(x + (size_t)ch * hw, h, w, sg, 4.0, 0, t, kern, kcap);
        prg__cx_to_u8(u8, x, n, 255);
        for (r = 0; r < it; r++) /* the benchmark's local pixel shuffle, bottom-right to top-left */
            for (i = h - d; i > d; i--)
                for (j = w - d; j > d; j--) {
                    int dx = (int)prg_rng_below(rng, (uint32_t)(2 * d)) - d, dy = (int)prg_rng_below(rng, (uint32_t)(2 * d)) - d;
                    int i2 = i + dy, j2 = j + dx;
                    if (i2 >= h || j2 >= w) continue;
                    for (ch = 0; ch < c; ch++) {
                        uint8_t *p = u8 + (size_t)ch * hw, v = p[(size_t)i * w + j];
                        p[(size_t)i * w + j] = p[(size_t)i2 * w + j2];
                        p[(size_t)i2 * w + j2] = v;
                    }
                }
        for (k = 0; k < n; k++) x[k] = u8[k] / 255.0;
        for (ch = 0; ch < c; ch++) prg__cx_gauss_plane(x + (size_t)ch * hw, h, w, sg, 4.0, 0, t, kern, kcap);
        prg__cx_to_u8(dst, x, n, 255);
        break;
    }
    case PRG_CORRUPT_MOTION_BLUR: {
        double angle = -45 + 90 * prg__cx_unif(rng);
        for (k = 0; k < n; k++) x[k] = src[k];
        for (ch = 0; ch < c; ch++)
            prg__cx_motion_plane(y + (size_t)ch * hw, x + (size_t)ch * hw, h, w, prg__cx_motion[set][s][0],
                                 prg__cx_motion[set][s][1], angle, kern, kcap);
        prg__cx_to_u8(dst, y, n, 1);
        break;
    }
    case PRG_CORRUPT_ZOOM_BLUR: { /* float32 as the benchmark: mean of the image and its zooms */
        int cnt = prg__cx_zoom_count[set][s], z;
        double step = (1 + prg__cx_zoom_step[set][s]) - 1; /* numpy's arange steps by its second value minus its first */
        for (k = 0; k < n; k++) { x[k] = (float)x[k]; y[k] = 0; }
        for (z = 0; z < cnt; z++)
            for (ch = 0; ch < c; ch++) {
                prg__cx_zoom_plane(t, x + (size_t)ch * hw, h, w, 1 + z * step);
                for (k = 0; k < hw; k++) y[(size_t)ch * hw + k] = (float)(y[(size_t)ch * hw + k] + (float)t[k]);
            }
        for (k = 0; k < n; k++) x[k] = (float)((float)(x[k] + y[k]) / (float)(cnt + 1));
        prg__cx_to_u8(dst, x, n, 255);
        break;
    }
    case PRG_CORRUPT_SNOW: {
        const double *p = prg__cx_snow[set][s];
        double angle = -135 + 90 * prg__cx_unif(rng);
        for (k = 0; k < hw; k++) a[k] = p[0] + p[1] * prg__cx_normal(rng);
        prg__cx_zoom_plane(b, a, h, w, p[2]);
        for (k = 0; k < hw; k++) {
            double v = b[k] < p[3] ? 0 : b[k];
            a[k] = (double)(uint8_t)((v <= 0 ? 0 : v >= 1 ? 1 : v) * 255);
        }
        prg__cx_motion_plane(b, a, h, w, p[4], p[5], angle, kern, kcap);
        for (k = 0; k < hw; k++) {
            double g = c == 3 ? 0.299 * x[k] + 0.587 * x[hw + k] + 0.114 * x[2 * hw + k] : x[k];
            double sn = (b[k] + b[hw - 1 - k]) / 255.0;
            for (ch = 0; ch < c; ch++) {
                double v = x[(size_t)ch * hw + k], mx = g * 1.5 + 0.5;
                v = p[6] * v + (1 - p[6]) * (v > mx ? v : mx);
                y[(size_t)ch * hw + k] = v + sn;
            }
        }
        prg__cx_to_u8(dst, y, n, 255);
        break;
    }
    case PRG_CORRUPT_FROST: {
        prg__cx_frost_layer(y, c, h, w, pl, m, t, kern, kcap, rng);
        for (k = 0; k < n; k++) y[k] = prg__cx_frost[set][s][0] * src[k] + prg__cx_frost[set][s][1] * y[k];
        prg__cx_to_u8(dst, y, n, 1);
        break;
    }
    case PRG_CORRUPT_FOG: {
        double c0 = prg__cx_fog[set][s][0], mx = 0;
        prg__cx_plasma(pl, m, prg__cx_fog[set][s][1], rng);
        for (k = 0; k < n; k++) mx = x[k] > mx ? x[k] : mx;
        for (ch = 0; ch < c; ch++)
            for (i = 0; i < h; i++)
                for (j = 0; j < w; j++) {
                    size_t o = (size_t)ch * hw + (size_t)i * w + j;
                    x[o] = (x[o] + c0 * pl[(size_t)i * m + j]) * mx / (mx + c0);
                }
        prg__cx_to_u8(dst, x, n, 255);
        break;
    }
    case PRG_CORRUPT_BRIGHTNESS: { /* skimage's rgb2hsv, V + c clipped, hsv2rgb (same operations, same rounding) */
        double add = prg__cx_bright[set][s];
        for (k = 0; k < hw; k++) {
            double r = x[k], g, bl, v, dl, sat, hue, f, pp, qq, tt, nv;
            int hi;
            if (c == 1) {
                x[k] = r + add > 1 ? 1 : r + add;
                continue;
            }
            g = x[hw + k]; bl = x[2 * hw + k];
            v = r > g ? r : g;
            v = v > bl ? v : bl;
            dl = v - (r < g ? (r < bl ? r : bl) : (g < bl ? g : bl));
            sat = dl == 0 ? 0 : dl / v;
            hue = 0;
            if (dl != 0) { /* the last matching channel wins, as skimage assigns in R, G, B order */
                if (r == v) hue = (g - bl) / dl;
                if (g == v) hue = 2.0 + (bl - r) / dl;
                if (bl == v) hue = 4.0 + (r - g) / dl;
                hue = fmod(hue / 6.0, 1.0);
                if (hue < 0) hue += 1.0;
            }
            nv = v + add > 1 ? 1 : v + add;
            hi = (int)floor(hue * 6);
            f = hue * 6 - floor(hue * 6);
            pp = nv * (1 - sat); qq = nv * (1 - f * sat); tt = nv * (1 - (1 - f) * sat);
            switch (hi % 6) {
            case 0: x[k] = nv; x[hw + k] = tt; x[2 * hw + k] = pp; break;
            case 1: x[k] = qq; x[hw + k] = nv; x[2 * hw + k] = pp; break;
            case 2: x[k] = pp; x[hw + k] = nv; x[2 * hw + k] = tt; break;
            case 3: x[k] = pp; x[hw + k] = qq; x[2 * hw + k] = nv; break;
            case 4: x[k] = tt; x[hw + k] = pp; x[2 * hw + k] = nv; break;
            default: x[k] = nv; x[hw + k] = pp; x[2 * hw + k] = qq; break;
            }
        }
        prg__cx_to_u8(dst, x, n, 255);
        break;
    }
    case PRG_CORRUPT_CONTRAST:
        for (ch = 0; ch < c; ch++) {
            double mean = 0, f = prg__cx_contrast[set][s];
            double *p = x + (size_t)ch * hw;
            for (k = 0; k < hw; k++) mean += p[k];
            mean /= (double)hw;
            for (k = 0; k < hw; k++) p[k] = (p[k] - mean) * f + mean;
        }
        prg__cx_to_u8(dst, x, n, 255);
        break;
    case PRG_CORRUPT_ELASTIC_TRANSFORM: {
        double side = (h < w ? h : w) * (set ? 244.0 / 224.0 : 1.0);
        double alpha = prg__cx_elastic[set][s][0] * side, sigma = prg__cx_elastic[set][s][1] * side;
        double aff = prg__cx_elastic[set][s][2] * side, p1[3][2], p2[3][2], M[6], det, iv[6];
        int sq = (h < w ? h : w) / 3, cx0 = w / 2, cy0 = h / 2;
        p1[0][0] = cx0 + sq; p1[0][1] = cy0 + sq;
        p1[1][0] = cx0 + sq; p1[1][1] = cy0 - sq;
        p1[2][0] = cx0 - sq; p1[2][1] = cy0 - sq;
        for (i = 0; i < 3; i++)
            for (j = 0; j < 2; j++) p2[i][j] = p1[i][j] + (double)(float)(aff * (2 * prg__cx_unif(rng) - 1));
        /* M maps p1 -> p2 (cv2.getAffineTransform); warpAffine samples src at M^-1 (dst) */
        {
            double ax = p1[0][0] - p1[2][0], ay = p1[0][1] - p1[2][1], bx = p1[1][0] - p1[2][0], by = p1[1][1] - p1[2][1];
            double d0 = ax * by - ay * bx;
            double ux = p2[0][0] - p2[2][0], uy = p2[0][1] - p2[2][1], vx = p2[1][0] - p2[2][0], vy = p2[1][1] - p2[2][1];
            M[0] = (ux * by - vx * ay) / d0; M[1] = (vx * ax - ux * bx) / d0;
            M[3] = (uy * by - vy * ay) / d0; M[4] = (vy * ax - uy * bx) / d0;
            M[2] = p2[2][0] - M[0] * p1[2][0] - M[1] * p1[2][1];
            M[5] = p2[2][1] - M[3] * p1[2][0] - M[4] * p1[2][1];
        }
        det = M[0] * M[4] - M[1] * M[3];
        iv[0] = M[4] / det; iv[1] = -M[1] / det; iv[3] = -M[3] / det; iv[4] = M[0] / det;
        iv[2] = -(iv[0] * M[2] + iv[1] * M[5]); iv[5] = -(iv[3] * M[2] + iv[4] * M[5]);
        for (ch = 0; ch < c; ch++)
            for (i = 0; i < h; i++)
                for (j = 0; j < w; j++)
                    y[(size_t)ch * hw + (size_t)i * w + j] = prg__cx_bilinear(x + (size_t)ch * hw, h, w, iv[3] * j + iv[4] * i + iv[5],
                                                                              iv[0] * j + iv[1] * i + iv[2], 2);
        for (k = 0; k < hw; k++) a[k] = 2 * prg__cx_unif(rng) - 1;
        for (k = 0; k < hw; k++) b[k] = 2 * prg__cx_unif(rng) - 1;
        prg__cx_gauss_plane(a, h, w, sigma, 3.0, 1, t, kern, kcap);
        prg__cx_gauss_plane(b, h, w, sigma, 3.0, 1, t, kern, kcap);
        for (ch = 0; ch < c; ch++)
            for (i = 0; i < h; i++)
                for (j = 0; j < w; j++) {
                    size_t o = (size_t)i * w + j;
                    x[(size_t)ch * hw + o] = prg__cx_bilinear(y + (size_t)ch * hw, h, w, i + (float)(b[o] * alpha), j + (float)(a[o] * alpha), 1);
                }
        prg__cx_to_u8(dst, x, n, 255);
        break;
    }
#ifndef PRG_NO_IMAGE
    case PRG_CORRUPT_PIXELATE: { /* PIL resize BOX down to int(side * c), then BOX back */
        int sw = (int)(w * prg__cx_pixelate[set][s]), sh = (int)(h * prg__cx_pixelate[set][s]);
        if (sw < 1) sw = 1;
        if (sh < 1) sh = 1;
        for (ch = 0; ch < c && !res; ch++) {
            res = prg_resize_u8(u8, sh, sw, src + (size_t)ch * hw, h, w, 1, PRG_FILTER_BOX);
            if (!res) res = prg_resize_u8(dst + (size_t)ch * hw, h, w, u8, sh, sw, 1, PRG_FILTER_BOX);
        }
        break;
    }
    case PRG_CORRUPT_JPEG_COMPRESSION: { /* PIL's save(quality) defaults: 4:2:0 for colour */
        uint8_t *jpg = u8b + n;
        size_t cap = prg_jpeg_encode_bound(h, w, c), len = 0;
        prg_image im;
        for (k = 0; k < hw; k++)
            for (ch = 0; ch < c; ch++) u8[k * c + ch] = src[(size_t)ch * hw + k];
        res = prg_jpeg_encode_to(jpg, cap, &len, u8, h, w, c, prg__cx_jpeg[set][s], PRG_JPEG_420, jpg + cap);
        if (!res) res = prg_jpeg_decode(&im, jpg, len, c, "jpeg_compression");
        if (!res) {
            for (k = 0; k < hw; k++)
                for (ch = 0; ch < c; ch++) dst[(size_t)ch * hw + k] = im.data[k * c + ch];
            prg_image_free(&im);
        }
        break;
    }
#else
    case PRG_CORRUPT_PIXELATE:
    case PRG_CORRUPT_JPEG_COMPRESSION:
        res = prg__fail(PRG_ERR_UNSUPPORTED, "prg_corrupt: %s needs the image code (built with PRG_NO_IMAGE)", prg__corrupt_names[corruption]);
        break;
#endif
    default: break;
    }
    (void)u8b;
    prg_free(own);
    return res;
}

/* ---- robustness and OOD metrics ---- */

static int prg__cmp_float_asc(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}
typedef struct prg__scored { float s; int in; } prg__scored;
static int prg__cmp_scored(const void *a, const void *b) {
    return prg__cmp_float_asc(&((const prg__scored *)a)->s, &((const prg__scored *)b)->s);
}
static prg_result prg__scores_check(const char *fn, const float *s_in, int n_in, const float *s_out, int n_out) {
    int i;
    if (!s_in || !s_out || n_in < 1 || n_out < 1)
        return prg__fail(PRG_ERR_ARG, "%s: need at least one in- and one out-of-distribution score (got %d and %d)", fn, n_in, n_out);
    for (i = 0; i < n_in; i++)
        if (isnan(s_in[i])) return prg__fail(PRG_ERR_NUMERIC, "%s: in-distribution score %d is NaN", fn, i);
    for (i = 0; i < n_out; i++)
        if (isnan(s_out[i])) return prg__fail(PRG_ERR_NUMERIC, "%s: out-of-distribution score %d is NaN", fn, i);
    return PRG_OK;
}

prg_result prg_auroc(double *auroc, const float *s_in, int n_in, const float *s_out, int n_out) {
    prg__scored *v;
    double rank_in = 0;
    int n, i, j;
    prg_result r = prg__scores_check("prg_auroc", s_in, n_in, s_out, n_out);
    *auroc = NAN;
    if (r) return r;
    n = n_in + n_out;
    v = (prg__scored *)prg_alloc((size_t)n * sizeof *v);
    if (!v) return prg__fail(PRG_ERR_NOMEM, "prg_auroc: out of memory for %d scores", n);
    for (i = 0; i < n_in; i++) { v[i].s = s_in[i]; v[i].in = 1; }
    for (i = 0; i < n_out; i++) { v[n_in + i].s = s_out[i]; v[n_in + i].in = 0; }
    qsort(v, (size_t)n, sizeof *v, prg__cmp_scored);
    for (i = 0; i < n; i = j) { /* a run of equal scores shares the mean rank */
        double mid;
        int cnt = 0;
        for (j = i; j < n && v[j].s == v[i].s; j++) cnt += v[j].in;
        mid = 0.5 * ((double)(i + 1) + (double)j);
        rank_in += mid * cnt;
    }
    *auroc = (rank_in - 0.5 * (double)n_in * (n_in + 1)) / ((double)n_in * n_out);
    prg_free(v);
    return PRG_OK;
}

prg_result prg_fpr_at_tpr(double *fpr, const float *s_in, int n_in, const float *s_out, int n_out, double tpr) {
    float *v, t;
    int i, k, fp = 0;
    prg_result r = prg__scores_check("prg_fpr_at_tpr", s_in, n_in, s_out, n_out);
    *fpr = NAN;
    if (r) return r;
    if (!(tpr > 0 && tpr <= 1)) return prg__fail(PRG_ERR_ARG, "prg_fpr_at_tpr: tpr %g is not in (0, 1]", tpr);
    v = (float *)prg_alloc((size_t)n_in * sizeof *v);
    if (!v) return prg__fail(PRG_ERR_NOMEM, "prg_fpr_at_tpr: out of memory for %d scores", n_in);
    memcpy(v, s_in, (size_t)n_in * sizeof *v);
    qsort(v, (size_t)n_in, sizeof *v, prg__cmp_float_asc);
    k = (int)ceil(tpr * n_in - 1e-9); /* the k highest in-scores are detected */
    if (k < 1) k = 1;
    t = v[n_in - k];
    for (i = 0; i < n_out; i++) fp += s_out[i] >= t;
    *fpr = (double)fp / n_out;
    prg_free(v);
    return PRG_OK;
}

double prg_mce(double *ce, const double *err, const double *base, int n) {
    double sum = 0;
    int c, s;
    for (c = 0; c < n; c++) {
        double e = 0, b = 0;
        for (s = 0; s < 5; s++) { e += err[c * 5 + s]; b += base[c * 5 + s]; }
        if (ce) ce[c] = b > 0 ? e / b : NAN;
        sum += b > 0 ? e / b : NAN;
    }
    return n > 0 ? sum / n : NAN;
}

/* torchvision / timm RandomResizedCrop.get_params */
static void prg__rrc_box(prg_rng *r, const prg_transform *t, int h, int w, int *top, int *left,
                         int *ch, int *cw) {
    double area = (double)h * w, lr0 = log(t->ratio_min), lr1 = log(t->ratio_max);
    double in_ratio = (double)w / h;
    int attempt;
    for (attempt = 0; attempt < 10; attempt++) {
        double target = prg__rng_range(r, t->scale_min, t->scale_max) * area;
        double aspect = exp(prg__rng_range(r, lr0, lr1));
        int tw = (int)prg__round_even(sqrt(target * aspect));
        int th = (int)prg__round_even(sqrt(target / aspect));
        if (tw <= w && th <= h && tw >= 1 && th >= 1) {
            *top = prg__rng_int(r, 0, h - th);
            *left = prg__rng_int(r, 0, w - tw);
            *ch = th;
            *cw = tw;
            return;
        }
    }
    if (in_ratio < t->ratio_min) {
        *cw = w;
        *ch = (int)prg__round_even(w / (double)t->ratio_min);
    } else if (in_ratio > t->ratio_max) {
        *ch = h;
        *cw = (int)prg__round_even(h * (double)t->ratio_max);
    } else {
        *cw = w;
        *ch = h;
    }
    *top = (h - *ch) / 2;
    *left = (w - *cw) / 2;
}

/* ---- the transform ---- */

prg_result prg_transform_init(prg_transform *t, int train, int channels, int out_h, int out_w) {
    static const float im_mean[3] = {0.485f, 0.456f, 0.406f}, im_std[3] = {0.229f, 0.224f, 0.225f};
    int i;
    if (!t || channels < 1 || channels > PRG_DATA_MAX_CHANNELS || out_h < 1 || out_w < 1)
        return prg__fail(PRG_ERR_ARG, "prg_transform_init: need 1..%d channels and a positive size "
                         "(got %d channels, %dx%d)", PRG_DATA_MAX_CHANNELS, channels, out_h, out_w);
    memset(t, 0, sizeof *t);
    t->out_h = out_h;
    t->out_w = out_w;
    t->scale_min = 0.08f;
    t->scale_max = 1.0f;
    t->ratio_min = 3.0f / 4.0f;
    t->ratio_max = 4.0f / 3.0f;
    t->crop_padding = 4;
    t->ra_magnitude = 9.0f;
    t->ra_magnitude_std = 0.5f;
    t->ra_prob = 0.5f;
    t->erase_min_area = 0.02f;
    t->erase_max_area = 1.0f / 3.0f;
    t->erase_min_aspect = 0.3f;
    for (i = 0; i < PRG_DATA_MAX_CHANNELS; i++) {
        t->mean[i] = channels == 3 && i < 3 ? im_mean[i] : (float)NAN;
        t->std[i] = channels == 3 && i < 3 ? im_std[i] : (float)NAN;
    }
    if (train) {
        t->crop = out_h <= 32 && out_w <= 32 ? PRG_CROP_RANDOM : PRG_CROP_RESIZED;
        t->hflip = 0.5f;
        t->ra_ops = 2;
        t->erase_prob = 0.25f;
    } else if (out_h >= 64 || out_w >= 64) {
        t->crop = PRG_CROP_CENTER;
        t->resize = (int)floor((out_h < out_w ? out_h : out_w) / 0.875);
    }
    return PRG_OK;
}

/* Size of the image after PRG_CROP_CENTER's resize (torchvision Resize(int)). */
static void prg__resize_dims(const prg_transform *t, int h, int w, int *rh, int *rw) {
    *rh = h;
    *rw = w;
    if (t->crop != PRG_CROP_CENTER || t->resize <= 0) return;
    if ((w <= h && w == t->resize) || (h <= w && h == t->resize)) return;
    if (w < h) {
        *rw = t->resize;
        *rh = (int)((double)t->resize * h / w);
    } else {
        *rh = t->resize;
        *rw = (int)((double)t->resize * w / h);
    }
}

prg_result prg_transform_check(const prg_transform *t, int c, int h, int w) {
    int sh, sw, rh, rw, i;
    if (!t) return prg__fail(PRG_ERR_ARG, "transform: NULL");
    if (c < 1 || c > PRG_DATA_MAX_CHANNELS || h < 1 || w < 1)
        return prg__fail(PRG_ERR_SHAPE, "transform: images of %dx%dx%d: need 1..%d channels and a "
                         "positive size", c, h, w, PRG_DATA_MAX_CHANNELS);
    if (t->out_h < 1 || t->out_w < 1 || t->border < 0 || t->border > 4096)
        return prg__fail(PRG_ERR_ARG, "transform: out size %dx%d / border %d out of range",
                         t->out_h, t->out_w, t->border);
    for (i = 0; i < c; i++)
        if (!(t->std[i] > 0.0f && t->std[i] < 1e30f) || !(fabsf(t->mean[i]) < 1e30f))
            return prg__fail(PRG_ERR_ARG, "transform: mean/std of channel %d not set or std <= 0 "
                             "(set t.mean/t.std; MNIST: 0.1307 / 0.3081)", i);
    sh = h + 2 * t->border;
    sw = w + 2 * t->border;
    switch (t->crop) {
    case PRG_CROP_NONE:
        if (sh != t->out_h || sw != t->out_w)
            return prg__fail(PRG_ERR_SHAPE, "transform: images are %dx%d (with border) but the output "
                             "is %dx%d; use a crop mode or a border", sh, sw, t->out_h, t->out_w);
        break;
    case PRG_CROP_RANDOM:
        if (t->crop_padding < 0 || sh + 2 * t->crop_padding < t->out_h || sw + 2 * t->crop_padding < t->out_w)
            return prg__fail(PRG_ERR_SHAPE, "transform: random crop %dx%d does not fit %dx%d padded by %d",
                             t->out_h, t->out_w, sh, sw, t->crop_padding);
        break;
    case PRG_CROP_RESIZED:
        if (!(t->scale_min > 0.0f && t->scale_min <= t->scale_max) ||
            !(t->ratio_min > 0.0f && t->ratio_min <= t->ratio_max))
            return prg__fail(PRG_ERR_ARG, "transform: resized crop needs 0 < scale_min <= scale_max "
                             "and 0 < ratio_min <= ratio_max");
        break;
    case PRG_CROP_CENTER:
        prg__resize_dims(t, sh, sw, &rh, &rw);
        if (t->resize < 0 || rh < t->out_h || rw < t->out_w || rh > 65536 || rw > 65536)
            return prg__fail(PRG_ERR_SHAPE, "transform: center crop %dx%d of a %dx%d image (resize %d)",
                             t->out_h, t->out_w, rh, rw, t->resize);
        break;
    default: return prg__fail(PRG_ERR_ARG, "transform: unknown crop mode %d", t->crop);
    }
    if (t->ra_ops < 0 || t->ra_ops > 16)
        return prg__fail(PRG_ERR_ARG, "transform: ra_ops %d out of range 0..16", t->ra_ops);
    if (t->ra_ops > 0 && c != 1 && c != 3)
        return prg__fail(PRG_ERR_ARG, "transform: RandAugment needs 1 or 3 channels (got %d)", c);
    if (t->ra_ops > 0 && !(t->ra_magnitude_std >= 0.0f && t->ra_magnitude_std < 1e30f))
        return prg__fail(PRG_ERR_ARG, "transform: ra_magnitude_std must be finite and >= 0");
    if (t->erase_prob > 0.0f &&
        !(t->erase_min_area > 0.0f && t->erase_min_area <= t->erase_max_area &&
          t->erase_min_aspect > 0.0f))
        return prg__fail(PRG_ERR_ARG, "transform: erasing needs 0 < min_area <= max_area, min_aspect > 0");
    return PRG_OK;
}

/* Workspace layout: [bordered source][stage A][stage B][resize workspace] */
typedef struct prg__tlayout { size_t src, stage, rs; } prg__tlayout;

static prg__tlayout prg__transform_layout(const prg_transform *t, int c, int h, int w) {
    prg__tlayout L;
    int sh = h + 2 * t->border, sw = w + 2 * t->border, rh, rw;
    size_t out = (size_t)c * t->out_h * t->out_w;
    prg__resize_dims(t, sh, sw, &rh, &rw);
    L.src = t->border > 0 ? ((size_t)c * sh * sw + 63) & ~(size_t)63 : 0;
    L.stage = out;
    if ((size_t)c * rh * rw > L.stage) L.stage = (size_t)c * rh * rw;
    L.stage = (L.stage + 63) & ~(size_t)63;
    L.rs = 0;
    if (t->crop == PRG_CROP_RESIZED) L.rs = prg_planes_resize_workspace(c, sh, sw, t->out_h, t->out_w);
    if (t->crop == PRG_CROP_CENTER) L.rs = prg_planes_resize_workspace(c, sh, sw, rh, rw);
    L.rs = (L.rs + 63) & ~(size_t)63;
    return L;
}

size_t prg_transform_workspace(const prg_transform *t, int c, int h, int w) {
    prg__tlayout L = prg__transform_layout(t, c, h, w);
    return L.src + 2 * L.stage + L.rs + 64;
}

prg_result prg_transform_apply(float *dst, const prg_transform *t, const uint8_t *src, int c, int h,
                               int w, prg_rng *rng, void *work) {
    prg__tlayout L = prg__transform_layout(t, c, h, w);
    uint8_t *base = (uint8_t *)(((uintptr_t)work + 63) & ~(uintptr_t)63);
    uint8_t *a = base + L.src, *b = a + L.stage, *tmp;
    const uint8_t *cur = src;
    int oh = t->out_h, ow = t->out_w, sh = h + 2 * t->border, sw = w + 2 * t->border;
    prg_result rc = prg_transform_check(t, c, h, w);
    if (rc != PRG_OK) return rc;
    if (t->border > 0) {
        prg_planes_crop(base, src, -t->border, -t->border, sh, sw, c, h, w);
        cur = base;
    }
    switch (t->crop) {
    case PRG_CROP_NONE: memcpy(a, cur, (size_t)c * oh * ow); break;
    case PRG_CROP_RANDOM: {
        int p = t->crop_padding, top = 0, left = 0;
        if (sh + 2 * p != oh || sw + 2 * p != ow) {
            top = prg__rng_int(rng, 0, sh + 2 * p - oh);
            left = prg__rng_int(rng, 0, sw + 2 * p - ow);
        }
        prg_planes_crop(a, cur, top - p, left - p, oh, ow, c, sh, sw);
        break;
    }
    case PRG_CROP_RESIZED: {
        int top, left, ch, cw;
        prg__rrc_box(rng, t, sh, sw, &top, &left, &ch, &cw);
        prg__resize(a, oh, ow, cur + (size_t)top * sw + left, (size_t)sw, (size_t)sh * sw, c, ch, cw,
                    b + L.stage);
        break;
    }
    default: { /* PRG_CROP_CENTER */
        int rh, rw;
        prg__resize_dims(t, sh, sw, &rh, &rw);
        if (rh != sh || rw != sw) {
            prg__resize(b, rh, rw, cur, (size_t)sw, (size_t)sh * sw, c, sh, sw, b + L.stage);
            cur = b;
        }
        prg_planes_crop(a, cur, (int)prg__round_even((rh - oh) / 2.0), (int)prg__round_even((rw - ow) / 2.0),
                       oh, ow, c, rh, rw);
        break;
    }
    }
    if (t->hflip > 0.0f && prg_rng_uniform(rng) < t->hflip) prg_planes_flip(a, c, oh, ow);
    if (t->ra_ops > 0) {
        int ops[16], l, ch;
        uint8_t fill[PRG_DATA_MAX_CHANNELS];
        for (ch = 0; ch < c; ch++) {
            double f = prg__round_even(255.0 * t->mean[ch]);
            fill[ch] = (uint8_t)(f < 0 ? 0 : f > 255 ? 255 : f);
        }
        for (l = 0; l < t->ra_ops; l++) ops[l] = (int)prg_rng_below(rng, PRG_RA_NUM_OPS);
        for (l = 0; l < t->ra_ops; l++) {
            double level = t->ra_magnitude;
            int negate = 0;
            if (t->ra_prob < 1.0f && prg__rng_double(rng) > t->ra_prob) continue;
            if (t->ra_magnitude_std > 0.0f) level += (double)t->ra_magnitude_std * prg_rng_normal(rng);
            level = level < 0.0 ? 0.0 : level > 10.0 ? 10.0 : level;
            if (prg__ra_signed(ops[l])) negate = prg__rng_double(rng) > 0.5;
            prg_randaug_op_apply(b, a, ops[l], level, negate, fill, c, oh, ow);
            tmp = a;
            a = b;
            b = tmp;
        }
    }
    prg_planes_normalize(dst, a, t->mean, t->std, c, oh, ow);
    if (t->erase_prob > 0.0f) prg_planes_erase(dst, t, rng, c, oh, ow);
    return PRG_OK;
}

/* ---- batches ---- */

typedef struct prg__batch_job {
    float *x;
    int32_t *y;
    const prg_dataset *ds;
    const prg_transform *t;
    const int *index;
    int batch;
    uint64_t seed, epoch;
    void *work;           /* one workspace for a serial build; NULL: each thread allocates */
    int failed[PRG_MAX_THREADS];
} prg__batch_job;

static void prg__batch_task(void *ctx, int ith, int nth) {
    prg__batch_job *j = (prg__batch_job *)ctx;
    const prg_dataset *ds = j->ds;
    size_t lo, hi, b, img = (size_t)ds->c * ds->h * ds->w;
    size_t out = (size_t)ds->c * j->t->out_h * j->t->out_w;
    void *work = j->work;
    prg_split_range((size_t)j->batch, 1, ith, nth, &lo, &hi);
    if (lo >= hi) return;
    if (!work) work = prg_alloc(prg_transform_workspace(j->t, ds->c, ds->h, ds->w));
    if (!work) {
        j->failed[ith] = 1;
        return;
    }
    for (b = lo; b < hi; b++) {
        prg_rng r;
        int i = j->index[b];
        prg_data_rng(&r, j->seed, j->epoch, i);
        prg_transform_apply(j->x + b * out, j->t, ds->images + (size_t)i * img, ds->c, ds->h, ds->w, &r,
                            work);
        if (j->y) j->y[b] = ds->labels ? ds->labels[i] : -1;
    }
    if (work != j->work) prg_free(work);
}

static prg_result prg__batch_check(const prg_dataset *ds, const prg_transform *t, const int *index,
                                   int batch) {
    int b;
    if (!ds || !ds->images || ds->n < 0) return prg__fail(PRG_ERR_ARG, "batch: no dataset images");
    if (batch < 0 || (batch > 0 && !index)) return prg__fail(PRG_ERR_ARG, "batch: bad batch size %d", batch);
    for (b = 0; b < batch; b++)
        if (index[b] < 0 || index[b] >= ds->n)
            return prg__fail(PRG_ERR_ARG, "batch: index[%d] = %d outside the dataset of %d images", b,
                             index[b], ds->n);
    return prg_transform_check(t, ds->c, ds->h, ds->w);
}

prg_result prg_batch_build(float *x, int32_t *y, const prg_dataset *ds, const prg_transform *t,
                           const int *index, int batch, uint64_t seed, uint64_t epoch) {
    prg__batch_job *j;
    prg_result rc = prg__batch_check(ds, t, index, batch);
    int i;
    if (rc != PRG_OK) return rc;
    j = (prg__batch_job *)prg_alloc(sizeof *j);
    if (!j) return prg__fail(PRG_ERR_NOMEM, "batch: out of memory");
    memset(j, 0, sizeof *j);
    j->x = x; j->y = y; j->ds = ds; j->t = t; j->index = index; j->batch = batch;
    j->seed = seed; j->epoch = epoch;
    prg_parallel(prg__batch_task, j);
    for (i = 0; i < PRG_MAX_THREADS; i++)
        if (j->failed[i]) rc = prg__fail(PRG_ERR_NOMEM, "batch: no memory for the augmentation workspace");
    prg_free(j);
    return rc;
}

/* ---- the prefetching loader ---- */

typedef struct prg__slot {
    float *x;
    int32_t *y;
    int *index;
    int size, step, last, state; /* state: 0 free, 1 ready, 2 held by the caller */
    int total, offset;
    uint64_t epoch;
    prg_result err;
    char msg[sizeof prg__error_msg];
} prg__slot;

struct prg_loader {
    const prg_dataset *ds;
    prg_transform t;
    prg_loader_config cfg;
    int bpe;               /* batches per epoch */
    int *perm;             /* [N] order of the epoch being built */
    uint64_t perm_epoch;
    int perm_valid;
    prg__slot slot[2];
    uint64_t built, taken; /* batches built / handed out since the start */
    prg__batch_job *job;   /* the background builder's job, with its workspace */
    int threaded, quit, held;
#ifndef PRG_NO_THREADS
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
#endif
};

void prg_loader_config_default(prg_loader_config *cfg, int batch, uint64_t seed) {
    memset(cfg, 0, sizeof *cfg);
    cfg->batch = batch;
    cfg->shuffle = 1;
    cfg->prefetch = 1;
    cfg->seed = seed;
    cfg->parts = 1;
}

int prg_loader_batches_per_epoch(const prg_loader *ld) { return ld->bpe; }

/* Builds batch number k (counted from the start) into s; serial when work != NULL. */
static prg_result prg__loader_build(prg_loader *ld, prg__slot *s, uint64_t k, prg__batch_job *j) {
    uint64_t kk = k + ld->cfg.start_step, epoch = ld->cfg.start_epoch + kk / (uint64_t)ld->bpe;
    int step = (int)(kk % (uint64_t)ld->bpe), n = ld->ds->n, i, start = step * ld->cfg.batch, q, m;
    prg_result rc = PRG_OK;
    if (!ld->perm_valid || ld->perm_epoch != epoch) {
        for (i = 0; i < n; i++) ld->perm[i] = i;
        if (ld->cfg.shuffle) {
            prg_rng r;
            prg_rng_seed(&r, ld->cfg.seed ^ 0x73687566666c6521ull, epoch);
            for (i = n - 1; i > 0; i--) {
                int jx = (int)prg_rng_below(&r, (uint32_t)(i + 1)), tmp = ld->perm[i];
                ld->perm[i] = ld->perm[jx];
                ld->perm[jx] = tmp;
            }
        }
        ld->perm_epoch = epoch;
        ld->perm_valid = 1;
    }
    s->total = n - start < ld->cfg.batch ? n - start : ld->cfg.batch;
    q = s->total / ld->cfg.parts;
    m = s->total % ld->cfg.parts;
    s->size = q + (ld->cfg.part < m);
    s->offset = ld->cfg.part * q + (ld->cfg.part < m ? ld->cfg.part : m);
    start += s->offset;
    s->step = step;
    s->last = step == ld->bpe - 1;
    s->epoch = epoch;
    memcpy(s->index, ld->perm + start, (size_t)s->size * sizeof(int));
    if (j) {
        j->failed[0] = 0;
        j->x = s->x; j->y = s->y; j->ds = ld->ds; j->t = &ld->t; j->index = s->index;
        j->batch = s->size; j->seed = ld->cfg.seed; j->epoch = epoch;
        prg__batch_task(j, 0, 1);
        if (j->failed[0]) rc = prg__fail(PRG_ERR_NOMEM, "loader: no memory");
    } else {
        rc = prg_batch_build(s->x, s->y, ld->ds, &ld->t, s->index, s->size, ld->cfg.seed, epoch);
    }
    s->err = rc;
    if (rc != PRG_OK) memcpy(s->msg, prg__error_msg, sizeof s->msg);
    return rc;
}

#ifndef PRG_NO_THREADS
static void *prg__loader_main(void *arg) {
    prg_loader *ld = (prg_loader *)arg;
    pthread_mutex_lock(&ld->lock);
    for (;;) {
        prg__slot *s = &ld->slot[ld->built % 2];
        while (!ld->quit && s->state != 0) pthread_cond_wait(&ld->cond, &ld->lock);
        if (ld->quit) break;
        pthread_mutex_unlock(&ld->lock);
        prg__loader_build(ld, s, ld->built, ld->job);
        pthread_mutex_lock(&ld->lock);
        s->state = 1;
        ld->built++;
        pthread_cond_broadcast(&ld->cond);
    }
    pthread_mutex_unlock(&ld->lock);
    return NULL;
}
#endif

void prg_loader_free(prg_loader *ld) {
    int i;
    if (!ld) return;
#ifndef PRG_NO_THREADS
    if (ld->threaded) {
        pthread_mutex_lock(&ld->lock);
        ld->quit = 1;
        pthread_cond_broadcast(&ld->cond);
        pthread_mutex_unlock(&ld->lock);
        pthread_join(ld->thread, NULL);
        pthread_mutex_destroy(&ld->lock);
        pthread_cond_destroy(&ld->cond);
    }
#endif
    for (i = 0; i < 2; i++) {
        prg_free(ld->slot[i].x);
        prg_free(ld->slot[i].y);
        prg_free(ld->slot[i].index);
    }
    prg_free(ld->perm);
    if (ld->job) prg_free(ld->job->work);
    prg_free(ld->job);
    prg_free(ld);
}

prg_result prg_loader_create(prg_loader **out, const prg_dataset *ds, const prg_transform *t,
                             const prg_loader_config *cfg) {
    prg_loader *ld;
    size_t per;
    int i;
    prg_result rc;
    if (!out || !ds || !t || !cfg) return prg__fail(PRG_ERR_ARG, "loader: NULL argument");
    *out = NULL;
    if (cfg->batch < 1) return prg__fail(PRG_ERR_ARG, "loader: batch must be >= 1 (got %d)", cfg->batch);
    if (cfg->parts < 0 || cfg->part < 0 || cfg->part >= (cfg->parts ? cfg->parts : 1))
        return prg__fail(PRG_ERR_ARG, "loader: part %d of %d parts (want 0 <= part < parts)", cfg->part, cfg->parts);
    if (!ds->images || ds->n < 1) return prg__fail(PRG_ERR_ARG, "loader: the dataset is empty");
    if (cfg->drop_last && ds->n < cfg->batch)
        return prg__fail(PRG_ERR_ARG, "loader: drop_last with %d images and batch %d leaves no batch",
                         ds->n, cfg->batch);
    rc = prg_transform_check(t, ds->c, ds->h, ds->w);
    if (rc != PRG_OK) return rc;
    ld = (prg_loader *)prg_alloc(sizeof *ld);
    if (!ld) return prg__fail(PRG_ERR_NOMEM, "loader: out of memory");
    memset(ld, 0, sizeof *ld);
    ld->ds = ds;
    ld->t = *t;
    ld->cfg = *cfg;
    if (!ld->cfg.parts) ld->cfg.parts = 1; /* a config made without prg_loader_config_default */
    ld->held = -1;
    ld->bpe = cfg->drop_last ? ds->n / cfg->batch : (ds->n + cfg->batch - 1) / cfg->batch;
    per = (size_t)ds->c * t->out_h * t->out_w;
    ld->perm = (int *)prg_alloc((size_t)ds->n * sizeof(int));
    for (i = 0; i < 2; i++) {
        ld->slot[i].x = (float *)prg_alloc((size_t)cfg->batch * per * sizeof(float));
        ld->slot[i].y = (int32_t *)prg_alloc((size_t)cfg->batch * sizeof(int32_t));
        ld->slot[i].index = (int *)prg_alloc((size_t)cfg->batch * sizeof(int));
        if (!ld->slot[i].x || !ld->slot[i].y || !ld->slot[i].index) ld->perm_valid = -1;
    }
    if (!ld->perm || ld->perm_valid < 0) {
        prg_loader_free(ld);
        return prg__fail(PRG_ERR_NOMEM, "loader: no memory for two batches of %d images", cfg->batch);
    }
#ifndef PRG_NO_THREADS
    if (cfg->prefetch) {
        /* the background builder runs serially, with its own workspace: it
           never competes with the training loop for the pool */
        prg__batch_job *j = (prg__batch_job *)prg_alloc(sizeof *j);
        if (j) memset(j, 0, sizeof *j);
        ld->job = j;
        if (j) j->work = prg_alloc(prg_transform_workspace(t, ds->c, ds->h, ds->w));
        if (!j || !j->work) {
            prg_loader_free(ld);
            return prg__fail(PRG_ERR_NOMEM, "loader: no memory for the augmentation workspace");
        }
        pthread_mutex_init(&ld->lock, NULL);
        pthread_cond_init(&ld->cond, NULL);
        if (pthread_create(&ld->thread, NULL, prg__loader_main, ld) != 0) {
            pthread_mutex_destroy(&ld->lock);
            pthread_cond_destroy(&ld->cond);
            prg_loader_free(ld);
            return prg__fail(PRG_ERR_UNSUPPORTED, "loader: cannot start the prefetch thread; "
                             "set cfg.prefetch = 0");
        }
        ld->threaded = 1;
    }
#endif
    *out = ld;
    return PRG_OK;
}

prg_result prg_loader_next(prg_loader *ld, prg_batch *b) {
    prg__slot *s;
    if (!ld || !b) return prg__fail(PRG_ERR_ARG, "loader: NULL argument");
    if (!ld->threaded) {
        s = &ld->slot[0];
        if (prg__loader_build(ld, s, ld->taken, NULL) != PRG_OK) return s->err;
    } else {
#ifndef PRG_NO_THREADS
        pthread_mutex_lock(&ld->lock);
        if (ld->held >= 0) {
            ld->slot[ld->held].state = 0;
            pthread_cond_broadcast(&ld->cond);
        }
        s = &ld->slot[ld->taken % 2];
        while (s->state != 1) pthread_cond_wait(&ld->cond, &ld->lock);
        s->state = 2;
        ld->held = (int)(ld->taken % 2);
        pthread_mutex_unlock(&ld->lock);
        if (s->err != PRG_OK) {
            ld->taken++;
            return prg__fail(s->err, "%s", s->msg);
        }
#else
        return prg__fail(PRG_ERR_STATE, "loader: threaded without threads");
#endif
    }
    ld->taken++;
    b->x = s->x;
    b->y = s->y;
    b->index = s->index;
    b->size = s->size;
    b->step = s->step;
    b->last = s->last;
    b->epoch = s->epoch;
    b->total = s->total;
    b->offset = s->offset;
    return PRG_OK;
}

/* >>simd ================================================================ */
/* Every x86 and NEON intrinsic of the engine (the others: the Adam step's
   FMA variant in >>optim, the pool's spin pause), reached only through the
   CPU table at the end of this section.  Each kernel here has its scalar
   twin in the section of its algorithm (>>gemm, >>wino, >>conv). */

#ifdef PRG__X86
/* AVX-512: 14 x 32 tile, 28 accumulators + 2 B vectors + 1 broadcast.  The
   tile body is instantiated for every row count 1..14, so that a bottom
   edge tile (m % 14 rows) costs only its own rows. */
#define PRG__AVX512_MR 14
#define PRG__AVX512_NR 32
#define PRG__AVX512_TARGET __attribute__((target("avx512f,fma")))

/* Row i of C = alpha * (x0 x1) + beta * row i (masks m0, m1 for an edge). */
#define PRG__AVX512_STORE(i, x0, x1)                                                    \
    if (R > i) {                                                                        \
        float *ci = c + (size_t)(i) * ldc;                                              \
        __m512 r0 = _mm512_mul_ps(va, x0), r1 = _mm512_mul_ps(va, x1);                  \
        if (nr == PRG__AVX512_NR) {                                                     \
            if (beta != 0.0f) {                                                         \
                r0 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci), r0);                      \
                r1 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci + 16), r1);                 \
            }                                                                           \
            _mm512_storeu_ps(ci, r0);                                                   \
            _mm512_storeu_ps(ci + 16, r1);                                              \
        } else {                                                                        \
            if (beta != 0.0f) {                                                         \
                r0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, ci), r0);            \
                r1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, ci + 16), r1);       \
            }                                                                           \
            _mm512_mask_storeu_ps(ci, m0, r0);                                          \
            _mm512_mask_storeu_ps(ci + 16, m1, r1);                                     \
        }                                                                               \
    }
#define PRG__AVX512_FMA2(i, x0, x1)                    \
    if (R > i) {                                       \
        t = _mm512_set1_ps(a[i]);                      \
        x0 = _mm512_fmadd_ps(t, b0, x0);               \
        x1 = _mm512_fmadd_ps(t, b1, x1);               \
    }
#define PRG__AVX512_ROWS(X)                                                               \
    X(0, c00, c01) X(1, c10, c11) X(2, c20, c21) X(3, c30, c31) X(4, c40, c41)            \
    X(5, c50, c51) X(6, c60, c61) X(7, c70, c71) X(8, c80, c81) X(9, c90, c91)            \
    X(10, cA0, cA1) X(11, cB0, cB1) X(12, cC0, cC1) X(13, cD0, cD1)

/* The first R rows of the tile (R is a constant after inlining). */
static inline __attribute__((always_inline)) PRG__AVX512_TARGET void
prg__avx512_tile(const int R, int kc, const float *PRG_RESTRICT a, const float *PRG_RESTRICT b,
                 float *PRG_RESTRICT c, int ldc, int nr, float alpha, float beta,
                 const prg__gemm_pf *pf) {
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
           c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00,
           c61 = c00, c70 = c00, c71 = c00, c80 = c00, c81 = c00, c90 = c00, c91 = c00,
           cA0 = c00, cA1 = c00, cB0 = c00, cB1 = c00, cC0 = c00, cC1 = c00, cD0 = c00,
           cD1 = c00;
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    __mmask16 m0 = (__mmask16)(nr >= 16 ? 0xFFFF : (1u << nr) - 1);
    __mmask16 m1 = (__mmask16)(nr >= 32 ? 0xFFFF : nr > 16 ? (1u << (nr - 16)) - 1 : 0);
    int p = 0;
    if (beta != 0.0f) { /* the tile of C is read at the end: fetch it now */
        int mid = nr > 16 ? 16 : 0;
#define PRG__AVX512_PFC(i, x0, x1)                                             \
    if (R > i) {                                                               \
        _mm_prefetch((const char *)(c + (size_t)(i) * ldc), _MM_HINT_T0);      \
        _mm_prefetch((const char *)(c + (size_t)(i) * ldc + mid), _MM_HINT_T0); \
        _mm_prefetch((const char *)(c + (size_t)(i) * ldc + nr - 1), _MM_HINT_T0); \
    }
        PRG__AVX512_ROWS(PRG__AVX512_PFC)
#undef PRG__AVX512_PFC
    }
    if (pf && pf->count > 0) {
        const float *pb = pf->base;
        size_t s1 = pf->s1, s2 = pf->s2;
        unsigned sh = (unsigned)pf->shift, mask = (1u << sh) - 1u, l = (unsigned)pf->first;
        for (; p < pf->count; p++, l++) {
            __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16), t;
            _mm_prefetch((const char *)(pb + (l & mask) * s1 + (l >> sh) * s2), _MM_HINT_T1);
            PRG__AVX512_ROWS(PRG__AVX512_FMA2)
            a += PRG__AVX512_MR;
            b += PRG__AVX512_NR;
        }
    }
    for (; p < kc; p++) {
        __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16), t;
        PRG__AVX512_ROWS(PRG__AVX512_FMA2)
        a += PRG__AVX512_MR;
        b += PRG__AVX512_NR;
    }
    PRG__AVX512_ROWS(PRG__AVX512_STORE)
}
#undef PRG__AVX512_FMA2
#undef PRG__AVX512_STORE
#undef PRG__AVX512_ROWS

PRG__AVX512_TARGET
static void prg__kernel_avx512(int kc, const float *PRG_RESTRICT a, const float *PRG_RESTRICT b,
                               float *PRG_RESTRICT c, int ldc, int mr, int nr, float alpha,
                               float beta, const prg__gemm_pf *pf) {
    switch (mr) {
#define PRG__AVX512_CASE(R) \
    case R: prg__avx512_tile(R, kc, a, b, c, ldc, nr, alpha, beta, pf); break;
    PRG__AVX512_CASE(14) PRG__AVX512_CASE(13) PRG__AVX512_CASE(12) PRG__AVX512_CASE(11)
    PRG__AVX512_CASE(10) PRG__AVX512_CASE(9) PRG__AVX512_CASE(8) PRG__AVX512_CASE(7)
    PRG__AVX512_CASE(6) PRG__AVX512_CASE(5) PRG__AVX512_CASE(4) PRG__AVX512_CASE(3)
    PRG__AVX512_CASE(2) PRG__AVX512_CASE(1)
#undef PRG__AVX512_CASE
    default: break;
    }
}

/* Packing prefetches this many floats ahead along a row (measured best of
   0, 32, 64, 128 on the transposed conv shapes). */
#define PRG__AVX512_PFCOLS 32
/* In-register transpose of the 16 x 16 block r[0..15] (row i = r[i]). */
static inline __attribute__((always_inline)) PRG__AVX512_TARGET void
prg__avx512_transpose16(__m512 *r) {
    /* (the maskz forms keep g++ 12 from warning about the undefined
       pass-through operand of the plain ones) */
    const __mmask16 all = (__mmask16)0xFFFF;
    __m512 t[16], u[16];
    int i, j;
    for (i = 0; i < 8; i++) {
        t[2 * i] = _mm512_maskz_unpacklo_ps(all, r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_maskz_unpackhi_ps(all, r[2 * i], r[2 * i + 1]);
    }
    /* in each 128-bit lane L, u[4i+j] now holds column 4L+j of rows 4i..4i+3 */
    for (i = 0; i < 4; i++) {
        u[4 * i] = _mm512_maskz_shuffle_ps(all, t[4 * i], t[4 * i + 2], 0x44);
        u[4 * i + 1] = _mm512_maskz_shuffle_ps(all, t[4 * i], t[4 * i + 2], 0xEE);
        u[4 * i + 2] = _mm512_maskz_shuffle_ps(all, t[4 * i + 1], t[4 * i + 3], 0x44);
        u[4 * i + 3] = _mm512_maskz_shuffle_ps(all, t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (j = 0; j < 4; j++) {
        __m512 v0 = _mm512_maskz_shuffle_f32x4(all, u[j], u[4 + j], 0x88);
        __m512 v1 = _mm512_maskz_shuffle_f32x4(all, u[j], u[4 + j], 0xDD);
        __m512 w0 = _mm512_maskz_shuffle_f32x4(all, u[8 + j], u[12 + j], 0x88);
        __m512 w1 = _mm512_maskz_shuffle_f32x4(all, u[8 + j], u[12 + j], 0xDD);
        r[j] = _mm512_maskz_shuffle_f32x4(all, v0, w0, 0x88);
        r[8 + j] = _mm512_maskz_shuffle_f32x4(all, v0, w0, 0xDD);
        r[4 + j] = _mm512_maskz_shuffle_f32x4(all, v1, w1, 0x88);
        r[12 + j] = _mm512_maskz_shuffle_f32x4(all, v1, w1, 0xDD);
    }
}

/* Loads rows s + i*ld (i < rows) of the 16-wide column chunk with mask q
   and zeros for the other rows, transposes, and stores the first nq rows of
   the result (mask wm) at dst + j*dstride.  Prefetches each row `ahead`
   floats further on (0: none). */
static inline __attribute__((always_inline)) PRG__AVX512_TARGET void
prg__avx512_pack16(float *dst, int dstride, __mmask16 wm, const float *s, int ld, int rows,
                   __mmask16 q, int nq, int ahead) {
    __m512 r[16];
    int i;
    for (i = 0; i < 16; i++) {
        if (i < rows) {
            r[i] = _mm512_maskz_loadu_ps(q, s + (size_t)i * ld);
            if (ahead) _mm_prefetch((const char *)(s + (size_t)i * ld + ahead), _MM_HINT_T0);
        } else {
            r[i] = _mm512_setzero_ps();
        }
    }
    prg__avx512_transpose16(r);
    for (i = 0; i < nq; i++) _mm512_mask_storeu_ps(dst + (size_t)i * dstride, wm, r[i]);
}

/* prg__pack_a (below) for MR = 14, vectorised. */
PRG__AVX512_TARGET
static void prg__pack_a_avx512(float *PRG_RESTRICT dst, const float *a, int lda, int ta, int m,
                               int i0, int mc, int p0, int kc, int mr) {
    const __mmask16 w14 = (__mmask16)0x3FFF;
    int ir, p;
    (void)mr;
    for (ir = 0; ir < mc; ir += PRG__AVX512_MR) {
        int rows = m - (i0 + ir) < PRG__AVX512_MR ? m - (i0 + ir) : PRG__AVX512_MR;
        if (ta) {
            const float *src = a + (size_t)p0 * lda + i0 + ir;
            __mmask16 rm = (__mmask16)((1u << rows) - 1);
            for (p = 0; p < kc; p++)
                _mm512_mask_storeu_ps(dst + (size_t)p * PRG__AVX512_MR, w14,
                                      _mm512_maskz_loadu_ps(rm, src + (size_t)p * lda));
        } else {
            const float *src = a + (size_t)(i0 + ir) * lda + p0;
            for (p = 0; p < kc; p += 16) {
                int nq = kc - p < 16 ? kc - p : 16;
                prg__avx512_pack16(dst + (size_t)p * PRG__AVX512_MR, PRG__AVX512_MR, w14, src + p,
                                   lda, rows, (__mmask16)((1u << nq) - 1), nq,
                                   kc - p >= 16 + PRG__AVX512_PFCOLS ? PRG__AVX512_PFCOLS : 0);
            }
        }
        dst += (size_t)kc * PRG__AVX512_MR;
    }
}

/* prg__pack_b (below) for NR = 32, vectorised. */
/* ... and this many rows ahead down op(B) (1, 2, 4 measured alike, +~10%
   over none on conv1 fwd). */
#define PRG__AVX512_PFROWS 4
PRG__AVX512_TARGET
static void prg__pack_b_avx512(float *PRG_RESTRICT dst, const float *b, int ldb, int tb, int n,
                               int j0, int nc, int p0, int kc, int nr) {
    int jr, p, full = 0;
    (void)nr;
    if (!tb) {
        /* Full panels row by row: op(B)'s rows are read in order (friendly
           to the hardware prefetcher when B comes from memory). */
        full = (n - j0 < nc ? n - j0 : nc) / PRG__AVX512_NR * PRG__AVX512_NR;
        for (p = 0; p < kc; p++) {
            const float *s = b + (size_t)(p0 + p) * ldb + j0;
            float *d = dst + (size_t)p * PRG__AVX512_NR;
            int ahead = p + PRG__AVX512_PFROWS < kc;
            for (jr = 0; jr < full; jr += PRG__AVX512_NR) {
                if (ahead) {
                    const float *pf = s + (size_t)PRG__AVX512_PFROWS * ldb + jr;
                    _mm_prefetch((const char *)pf, _MM_HINT_T0);
                    _mm_prefetch((const char *)(pf + 16), _MM_HINT_T0);
                }
                _mm512_store_ps(d + (size_t)jr * kc, _mm512_loadu_ps(s + jr));
                _mm512_store_ps(d + (size_t)jr * kc + 16, _mm512_loadu_ps(s + jr + 16));
            }
        }
        dst += (size_t)kc * full;
    }
    for (jr = full; jr < nc; jr += PRG__AVX512_NR) {
        int cols = n - (j0 + jr) < PRG__AVX512_NR ? n - (j0 + jr) : PRG__AVX512_NR;
        if (!tb) {
            const float *src = b + (size_t)p0 * ldb + j0 + jr;
            __mmask16 m0 = (__mmask16)(cols >= 16 ? 0xFFFF : (1u << cols) - 1);
            __mmask16 m1 = (__mmask16)(cols > 16 ? (1u << (cols - 16)) - 1 : 0);
            for (p = 0; p < kc; p++) {
                const float *s = src + (size_t)p * ldb;
                _mm512_store_ps(dst + (size_t)p * 32, _mm512_maskz_loadu_ps(m0, s));
                _mm512_store_ps(dst + (size_t)p * 32 + 16, _mm512_maskz_loadu_ps(m1, s + 16));
            }
        } else {
            const float *src = b + (size_t)(j0 + jr) * ldb + p0;
            int h;
            for (p = 0; p < kc; p += 16) {
                int nq = kc - p < 16 ? kc - p : 16;
                for (h = 0; h < 2; h++) {
                    int rows = cols - 16 * h;
                    prg__avx512_pack16(dst + (size_t)p * 32 + 16 * h, 32, (__mmask16)0xFFFF,
                                       src + (size_t)(16 * h) * ldb + p, ldb,
                                       rows < 0 ? 0 : rows, (__mmask16)((1u << nq) - 1), nq,
                                       kc - p >= 16 + PRG__AVX512_PFCOLS ? PRG__AVX512_PFCOLS : 0);
                }
            }
        }
        dst += (size_t)kc * PRG__AVX512_NR;
    }
}

/* AVX2 + FMA: 6 x 16 tile, 12 accumulators. */
#define PRG__AVX2_MR 6
#define PRG__AVX2_NR 16
__attribute__((target("avx2,fma")))
static void prg__kernel_avx2(int kc, const float *PRG_RESTRICT a, const float *PRG_RESTRICT b,
                             float *PRG_RESTRICT c, int ldc, int mr, int nr, float alpha,
                             float beta, const prg__gemm_pf *pf) {
    __m256 acc[PRG__AVX2_MR][2];
    int p, i;
    (void)pf;
    for (i = 0; i < PRG__AVX2_MR; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (p = 0; p < kc; p++) {
        __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
        for (i = 0; i < PRG__AVX2_MR; i++) {
            __m256 t = _mm256_broadcast_ss(a + i);
            acc[i][0] = _mm256_fmadd_ps(t, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(t, b1, acc[i][1]);
        }
        a += PRG__AVX2_MR;
        b += PRG__AVX2_NR;
    }
    {
        __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
        if (mr == PRG__AVX2_MR && nr == PRG__AVX2_NR) {
            for (i = 0; i < PRG__AVX2_MR; i++) {
                float *ci = c + (size_t)i * ldc;
                __m256 r0 = _mm256_mul_ps(va, acc[i][0]), r1 = _mm256_mul_ps(va, acc[i][1]);
                if (beta != 0.0f) {
                    r0 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci), r0);
                    r1 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci + 8), r1);
                }
                _mm256_storeu_ps(ci, r0);
                _mm256_storeu_ps(ci + 8, r1);
            }
        } else {
            float t[PRG__AVX2_MR * PRG__AVX2_NR];
            for (i = 0; i < PRG__AVX2_MR; i++) {
                _mm256_storeu_ps(t + i * PRG__AVX2_NR, acc[i][0]);
                _mm256_storeu_ps(t + i * PRG__AVX2_NR + 8, acc[i][1]);
            }
            /* Same rounding as above: alpha*acc, then one fused beta*c add. */
            for (i = 0; i < mr; i++) {
                float *ci = c + (size_t)i * ldc;
                int j;
                for (j = 0; j < nr; j++) {
                    float r = alpha * t[i * PRG__AVX2_NR + j];
                    ci[j] = beta != 0.0f ? fmaf(beta, ci[j], r) : r;
                }
            }
        }
    }
}
#endif /* PRG__X86 */

#ifdef PRG__NEON
/* NEON: 8 x 12 tile, 24 accumulators. */
#define PRG__NEON_MR 8
#define PRG__NEON_NR 12
static void prg__kernel_neon(int kc, const float *PRG_RESTRICT a, const float *PRG_RESTRICT b,
                             float *PRG_RESTRICT c, int ldc, int mr, int nr, float alpha,
                             float beta, const prg__gemm_pf *pf) {
    float32x4_t acc[PRG__NEON_MR][3];
    int p, i;
    (void)pf;
    for (i = 0; i < PRG__NEON_MR; i++) acc[i][0] = acc[i][1] = acc[i][2] = vdupq_n_f32(0.0f);
    for (p = 0; p < kc; p++) {
        float32x4_t b0 = vld1q_f32(b), b1 = vld1q_f32(b + 4), b2 = vld1q_f32(b + 8);
        float32x4_t a0 = vld1q_f32(a), a1 = vld1q_f32(a + 4);
        acc[0][0] = vfmaq_laneq_f32(acc[0][0], b0, a0, 0);
        acc[0][1] = vfmaq_laneq_f32(acc[0][1], b1, a0, 0);
        acc[0][2] = vfmaq_laneq_f32(acc[0][2], b2, a0, 0);
        acc[1][0] = vfmaq_laneq_f32(acc[1][0], b0, a0, 1);
        acc[1][1] = vfmaq_laneq_f32(acc[1][1], b1, a0, 1);
        acc[1][2] = vfmaq_laneq_f32(acc[1][2], b2, a0, 1);
        acc[2][0] = vfmaq_laneq_f32(acc[2][0], b0, a0, 2);
        acc[2][1] = vfmaq_laneq_f32(acc[2][1], b1, a0, 2);
        acc[2][2] = vfmaq_laneq_f32(acc[2][2], b2, a0, 2);
        acc[3][0] = vfmaq_laneq_f32(acc[3][0], b0, a0, 3);
        acc[3][1] = vfmaq_laneq_f32(acc[3][1], b1, a0, 3);
        acc[3][2] = vfmaq_laneq_f32(acc[3][2], b2, a0, 3);
        acc[4][0] = vfmaq_laneq_f32(acc[4][0], b0, a1, 0);
        acc[4][1] = vfmaq_laneq_f32(acc[4][1], b1, a1, 0);
        acc[4][2] = vfmaq_laneq_f32(acc[4][2], b2, a1, 0);
        acc[5][0] = vfmaq_laneq_f32(acc[5][0], b0, a1, 1);
        acc[5][1] = vfmaq_laneq_f32(acc[5][1], b1, a1, 1);
        acc[5][2] = vfmaq_laneq_f32(acc[5][2], b2, a1, 1);
        acc[6][0] = vfmaq_laneq_f32(acc[6][0], b0, a1, 2);
        acc[6][1] = vfmaq_laneq_f32(acc[6][1], b1, a1, 2);
        acc[6][2] = vfmaq_laneq_f32(acc[6][2], b2, a1, 2);
        acc[7][0] = vfmaq_laneq_f32(acc[7][0], b0, a1, 3);
        acc[7][1] = vfmaq_laneq_f32(acc[7][1], b1, a1, 3);
        acc[7][2] = vfmaq_laneq_f32(acc[7][2], b2, a1, 3);
        a += PRG__NEON_MR;
        b += PRG__NEON_NR;
    }
    {
        float t[PRG__NEON_MR * PRG__NEON_NR];
        for (i = 0; i < PRG__NEON_MR; i++) {
            vst1q_f32(t + i * PRG__NEON_NR, acc[i][0]);
            vst1q_f32(t + i * PRG__NEON_NR + 4, acc[i][1]);
            vst1q_f32(t + i * PRG__NEON_NR + 8, acc[i][2]);
        }
        prg__gemm_store(t, PRG__NEON_NR, c, ldc, mr, nr, alpha, beta);
    }
}
#endif /* PRG__NEON */

#ifdef PRG__X86
/* exp(v) = 2^k p(r) in 16 and 8 lanes: PRG__EXP_POLY and its constants are
   shared with the scalar twin prg__exp_poly_range (>>conv). */
__attribute__((target("avx512f")))
static inline __m512 prg__exp16(__m512 v) {
    /* the masked forms (all lanes) avoid _mm512_undefined_ps, on which
       g++ 12 warns -Wmaybe-uninitialized */
    const __mmask16 all = (__mmask16)0xFFFF;
    __m512 k, r, p;
    /* clamp, keeping NaN (max/min return the second operand on NaN);
       scalef takes 2^k to 0 or inf correctly */
    v = _mm512_mask_max_ps(v, all, _mm512_set1_ps(PRG__EXP_MIN), v);
    v = _mm512_mask_min_ps(v, all, _mm512_set1_ps(PRG__EXP_MAX), v);
    k = _mm512_mask_roundscale_ps(v, all, _mm512_mul_ps(v, _mm512_set1_ps(PRG__EXP_LOG2E)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(PRG__EXP_LN2_HI), v);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(PRG__EXP_LN2_LO), r);
    PRG__EXP_POLY(p, _mm512_fmadd_ps, _mm512_mul_ps, _mm512_add_ps, _mm512_set1_ps, r);
    return _mm512_mask_scalef_ps(p, all, p, k);
}

static __mmask16 prg__mask16(size_t left) {
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
}

/* The sum (max = 0) or the maximum (max = 1) of the 16 lanes, in a tree
   (the maskz forms: see prg__avx512_transpose16) */
__attribute__((target("avx512f")))
static float prg__lanes16(__m512 v, int max) {
    const __mmask16 all = (__mmask16)0xFFFF;
    float out[16];
    __m512 u;
    u = _mm512_maskz_shuffle_f32x4(all, v, v, 0x4E); /* the other 256 bits */
    v = max ? _mm512_maskz_max_ps(all, v, u) : _mm512_maskz_add_ps(all, v, u);
    u = _mm512_maskz_shuffle_f32x4(all, v, v, 0xB1); /* the other 128 bits */
    v = max ? _mm512_maskz_max_ps(all, v, u) : _mm512_maskz_add_ps(all, v, u);
    u = _mm512_maskz_shuffle_ps(all, v, v, 0x4E);    /* the other 64 bits */
    v = max ? _mm512_maskz_max_ps(all, v, u) : _mm512_maskz_add_ps(all, v, u);
    u = _mm512_maskz_shuffle_ps(all, v, v, 0xB1);    /* the other float */
    v = max ? _mm512_maskz_max_ps(all, v, u) : _mm512_maskz_add_ps(all, v, u);
    _mm512_storeu_ps(out, v);
    return out[0];
}

/* The row's maximum and sum in 16 lanes, then across them */
__attribute__((target("avx512f")))
static void prg__softmax_avx512(float *row, size_t n) {
    __m512 vmx = _mm512_set1_ps(-HUGE_VALF), acc = _mm512_setzero_ps(), inv;
    float mx;
    size_t i;
    for (i = 0; i < n; i += 16)
        vmx = _mm512_maskz_max_ps((__mmask16)0xFFFF, vmx,
                                  _mm512_mask_loadu_ps(_mm512_set1_ps(-HUGE_VALF), prg__mask16(n - i), row + i));
    mx = prg__lanes16(vmx, 1);
    for (i = 0; i < n; i += 16) {
        __mmask16 m = prg__mask16(n - i);
        __m512 e = prg__exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, row + i), _mm512_set1_ps(mx)));
        acc = _mm512_add_ps(acc, _mm512_maskz_mov_ps(m, e));
        _mm512_mask_storeu_ps(row + i, m, e);
    }
    inv = _mm512_set1_ps((float)(1.0 / (double)prg__lanes16(acc, 0)));
    for (i = 0; i < n; i += 16) {
        __mmask16 m = prg__mask16(n - i);
        _mm512_mask_storeu_ps(row + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, row + i), inv));
    }
}

__attribute__((target("avx512f")))
static void prg__silu_fwd_avx512(float *y, const float *x, size_t n) {
    size_t i;
    for (i = 0; i < n; i += 16) {
        __mmask16 m = prg__mask16(n - i);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        __m512 e = prg__exp16(_mm512_sub_ps(_mm512_setzero_ps(), v));
        _mm512_mask_storeu_ps(y + i, m, _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0f), e)));
    }
}

__attribute__((target("avx512f")))
static void prg__silu_bwd_avx512(float *dx, const float *dy, const float *x, size_t n, int set) {
    const __m512 one = _mm512_set1_ps(1.0f);
    size_t i;
    for (i = 0; i < n; i += 16) {
        __mmask16 m = prg__mask16(n - i);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        __m512 e = prg__exp16(_mm512_sub_ps(_mm512_setzero_ps(), v));
        __m512 s = _mm512_div_ps(one, _mm512_add_ps(one, e));
        __m512 oms = _mm512_mask_mul_ps(_mm512_sub_ps(one, s),
                                        _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GE_OQ), e, s);
        __m512 d = _mm512_mul_ps(s, _mm512_add_ps(one, _mm512_mul_ps(v, oms)));
        d = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, dy + i), d);
        if (!set) d = _mm512_add_ps(_mm512_maskz_loadu_ps(m, dx + i), d);
        _mm512_mask_storeu_ps(dx + i, m, d);
    }
}

__attribute__((target("avx2,fma")))
static inline __m256 prg__exp8(__m256 x) {
    __m256 k, r, p, v;
    __m256i e;
    /* computed on [-87, 88], where 2^k is a normal float; below 0, above inf
       (exp(-87) is about the smallest normal float); NaN stays NaN */
    __m256 lo = _mm256_cmp_ps(x, _mm256_set1_ps(PRG__EXP_FLUSH_MIN), _CMP_LT_OQ);
    __m256 hi = _mm256_cmp_ps(x, _mm256_set1_ps(PRG__EXP_FLUSH_MAX), _CMP_GT_OQ);
    v = _mm256_min_ps(_mm256_set1_ps(PRG__EXP_FLUSH_MAX),
                      _mm256_max_ps(_mm256_set1_ps(PRG__EXP_FLUSH_MIN), x));
    k = _mm256_round_ps(_mm256_mul_ps(v, _mm256_set1_ps(PRG__EXP_LOG2E)),
                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(PRG__EXP_LN2_HI), v);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(PRG__EXP_LN2_LO), r);
    PRG__EXP_POLY(p, _mm256_fmadd_ps, _mm256_mul_ps, _mm256_add_ps, _mm256_set1_ps, r);
    e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    p = _mm256_andnot_ps(lo, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
    return _mm256_blendv_ps(p, _mm256_set1_ps(HUGE_VALF), hi);
}

/* AVX2: whole blocks of 8, then the tail through a zero-padded block (the
   same instructions). */
__attribute__((target("avx2,fma")))
static void prg__exp_shift_avx2(float *y, const float *x, float shift, size_t n) {
    float tx[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i, rest = n % 8, full = n - rest;
    for (i = 0; i < full; i += 8)
        _mm256_storeu_ps(y + i, prg__exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), _mm256_set1_ps(shift))));
    if (rest) {
        memcpy(tx, x + full, rest * sizeof(float));
        _mm256_storeu_ps(tx, prg__exp8(_mm256_sub_ps(_mm256_loadu_ps(tx), _mm256_set1_ps(shift))));
        memcpy(y + full, tx, rest * sizeof(float));
    }
}

__attribute__((target("avx2,fma")))
static __m256 prg__silu8(__m256 v) {
    __m256 e = prg__exp8(_mm256_sub_ps(_mm256_setzero_ps(), v));
    return _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

static void prg__softmax_avx2(float *row, size_t n) { prg__softmax_with(row, n, prg__exp_shift_avx2); }

__attribute__((target("avx2,fma")))
static void prg__silu_fwd_avx2(float *y, const float *x, size_t n) {
    float tx[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i, rest = n % 8, full = n - rest;
    for (i = 0; i < full; i += 8) _mm256_storeu_ps(y + i, prg__silu8(_mm256_loadu_ps(x + i)));
    if (rest) {
        memcpy(tx, x + full, rest * sizeof(float));
        _mm256_storeu_ps(tx, prg__silu8(_mm256_loadu_ps(tx)));
        memcpy(y + full, tx, rest * sizeof(float));
    }
}

__attribute__((target("avx2,fma")))
static __m256 prg__dsilu8(__m256 g, __m256 v) { /* dy * d silu(v) */
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 e = prg__exp8(_mm256_sub_ps(_mm256_setzero_ps(), v));
    __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, e));
    __m256 oms = _mm256_blendv_ps(_mm256_sub_ps(one, s), _mm256_mul_ps(e, s),
                                  _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GE_OQ));
    return _mm256_mul_ps(g, _mm256_mul_ps(s, _mm256_add_ps(one, _mm256_mul_ps(v, oms))));
}

__attribute__((target("avx2,fma")))
static void prg__silu_bwd_avx2(float *dx, const float *dy, const float *x, size_t n, int set) {
    float tx[8] = {0, 0, 0, 0, 0, 0, 0, 0}, tg[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i, rest = n % 8, full = n - rest;
    for (i = 0; i < full; i += 8) {
        __m256 d = prg__dsilu8(_mm256_loadu_ps(dy + i), _mm256_loadu_ps(x + i));
        _mm256_storeu_ps(dx + i, set ? d : _mm256_add_ps(_mm256_loadu_ps(dx + i), d));
    }
    if (rest) {
        memcpy(tx, x + full, rest * sizeof(float));
        memcpy(tg, dy + full, rest * sizeof(float));
        _mm256_storeu_ps(tg, prg__dsilu8(_mm256_loadu_ps(tg), _mm256_loadu_ps(tx)));
        for (i = 0; i < rest; i++) dx[full + i] = set ? tg[i] : dx[full + i] + tg[i];
    }
}

/* *sg = sum g, *sgx = sum g x in 16 (8) float lanes, combined in double */
__attribute__((target("avx512f")))
static void prg__dots_avx512(const float *g, const float *x, size_t n, double *sg, double *sgx) {
    __m512 a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps();
    float t1[16], t2[16];
    double s1 = 0.0, s2 = 0.0;
    size_t i;
    int l;
    for (i = 0; i < n; i += 16) {
        __mmask16 m = prg__mask16(n - i);
        __m512 gv = _mm512_maskz_loadu_ps(m, g + i);
        a1 = _mm512_add_ps(a1, gv);
        a2 = _mm512_fmadd_ps(gv, _mm512_maskz_loadu_ps(m, x + i), a2);
    }
    _mm512_storeu_ps(t1, a1);
    _mm512_storeu_ps(t2, a2);
    for (l = 0; l < 16; l++) {
        s1 += t1[l];
        s2 += t2[l];
    }
    *sg = s1;
    *sgx = s2;
}

/* Sum of the 16 lanes, in lane order (_mm512_reduce_add_ps makes g++ 12
   warn -Wuninitialized inside its header). */
__attribute__((target("avx512f")))
static float prg__hsum16(__m512 v) {
    float t[16], s = 0.0f;
    int l;
    _mm512_storeu_ps(t, v);
    for (l = 0; l < 16; l++) s += t[l];
    return s;
}

/* Nine taps of two channels: 18 accumulators (named, not an array, so
   that they stay in registers), each input vector loaded once for both. */
#define PRG__DW3_SUMS(out)                                                                      \
    do {                                                                                        \
        out[0] += prg__hsum16(a0); out[1] += prg__hsum16(a1); out[2] += prg__hsum16(a2);        \
        out[3] += prg__hsum16(a3); out[4] += prg__hsum16(a4); out[5] += prg__hsum16(a5);        \
        out[6] += prg__hsum16(a6); out[7] += prg__hsum16(a7); out[8] += prg__hsum16(a8);        \
        out[9] += prg__hsum16(b0); out[10] += prg__hsum16(b1); out[11] += prg__hsum16(b2);      \
        out[12] += prg__hsum16(b3); out[13] += prg__hsum16(b4); out[14] += prg__hsum16(b5);     \
        out[15] += prg__hsum16(b6); out[16] += prg__hsum16(b7); out[17] += prg__hsum16(b8);     \
    } while (0)
#define PRG__DW3_TAP(a, b, off)                                               \
    do {                                                                      \
        __m512 v_ = _mm512_maskz_loadu_ps(m, x + q + (off));                  \
        a = _mm512_fmadd_ps(g0v, v_, a);                                      \
        b = _mm512_fmadd_ps(g1v, v_, b);                                      \
    } while (0)
__attribute__((target("avx512f")))
static void prg__dw3_avx512(float *out, const float *g0, const float *g1, const float *x, size_t n,
                            int wp, int count, size_t gstride, size_t xstride) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0;
    __m512 a7 = a0, a8 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0, b4 = a0, b5 = a0, b6 = a0;
    __m512 b7 = a0, b8 = a0;
    size_t q, w1 = (size_t)wp, w2 = 2 * (size_t)wp;
    int i;
    for (i = 0; i < count; i++, g0 += gstride, g1 += gstride, x += xstride)
    for (q = 0; q < n; q += 16) {
        __mmask16 m = prg__mask16(n - q);
        __m512 g0v = _mm512_maskz_loadu_ps(m, g0 + q), g1v = _mm512_maskz_loadu_ps(m, g1 + q);
        PRG__DW3_TAP(a0, b0, 0);
        PRG__DW3_TAP(a1, b1, 1);
        PRG__DW3_TAP(a2, b2, 2);
        PRG__DW3_TAP(a3, b3, w1);
        PRG__DW3_TAP(a4, b4, w1 + 1);
        PRG__DW3_TAP(a5, b5, w1 + 2);
        PRG__DW3_TAP(a6, b6, w2);
        PRG__DW3_TAP(a7, b7, w2 + 1);
        PRG__DW3_TAP(a8, b8, w2 + 2);
    }
    PRG__DW3_SUMS(out);
}
#undef PRG__DW3_TAP

/* ---- 3x3 pad-1 stride-1 convolutions with few channels on one side ----
   Direct, on the unpadded planes (masked loads give the zero border). */

/* lanes l of a 16-float load at column c of a row of w floats that are inside it */
static inline __attribute__((always_inline)) __mmask16 prg__cols16(int c, int w) {
    unsigned lo = c >= 0 ? 0xFFFFu : c > -16 ? 0xFFFFu << -c : 0u;
    unsigned hi = w - c >= 16 ? 0xFFFFu : w - c > 0 ? (1u << (w - c)) - 1u : 0u;
    return (__mmask16)(lo & hi);
}

/* y[o*h*w + p] = bias[o] + sum over i < ci and the nine taps of
   wt[o*os + i*is + tap] (tap 8 - t when flip) x[i*h*w + p shifted], for
   o < OB (a constant after inlining, <= 8); with accumulate, y += the sum.
   32 pixels of a row at a time: 16 accumulators, each input vector loaded
   once for all OB outputs. */
#define PRG__C3_ROWS(X)                                                     \
    X(0, y00, y01) X(1, y10, y11) X(2, y20, y21) X(3, y30, y31)            \
    X(4, y40, y41) X(5, y50, y51) X(6, y60, y61) X(7, y70, y71)
static inline __attribute__((always_inline)) PRG__AVX512_TARGET void
prg__conv3_tile(const int OB, float *y, const float *x, const float *wt, size_t os, size_t is, int flip,
                const float *bias, int accumulate, int ci, int h, int w) {
    size_t plane = (size_t)h * w;
    int oy, ox, i, ki, kj;
    for (oy = 0; oy < h; oy++)
        for (ox = 0; ox < w; ox += 32) {
            __m512 y00 = _mm512_setzero_ps(), y01 = y00, y10 = y00, y11 = y00, y20 = y00, y21 = y00,
                   y30 = y00, y31 = y00, y40 = y00, y41 = y00, y50 = y00, y51 = y00, y60 = y00,
                   y61 = y00, y70 = y00, y71 = y00;
            __mmask16 m0[3], m1[3], s0 = prg__cols16(ox, w), s1 = prg__cols16(ox + 16, w);
            for (kj = 0; kj < 3; kj++) {
                m0[kj] = prg__cols16(ox + kj - 1, w);
                m1[kj] = prg__cols16(ox + 16 + kj - 1, w);
            }
            for (i = 0; i < ci; i++)
                for (ki = 0; ki < 3; ki++) {
                    int iy = oy + ki - 1;
                    const float *row;
                    if (iy < 0 || iy >= h) continue; /* before the address: (size_t)-1 * w wrapped the pointer */
                    row = x + i * plane + (size_t)iy * w + ox - 1;
                    for (kj = 0; kj < 3; kj++) {
                        const float *wp = wt + i * is + (flip ? 8 - 3 * ki - kj : 3 * ki + kj);
                        __m512 v0 = _mm512_maskz_loadu_ps(m0[kj], row + kj);
                        __m512 v1 = _mm512_maskz_loadu_ps(m1[kj], row + 16 + kj), t;
#define PRG__C3_FMA(o, a, b)                                     \
                        if (OB > o) {                            \
                            t = _mm512_set1_ps(wp[(o) * os]);    \
                            a = _mm512_fmadd_ps(t, v0, a);       \
                            b = _mm512_fmadd_ps(t, v1, b);       \
                        }
                        PRG__C3_ROWS(PRG__C3_FMA)
#undef PRG__C3_FMA
                    }
                }
#define PRG__C3_STORE(o, a, b)                                                        \
            if (OB > o) {                                                             \
                float *d = y + (o) * plane + (size_t)oy * w + ox;                     \
                if (accumulate) {                                                     \
                    a = _mm512_add_ps(_mm512_maskz_loadu_ps(s0, d), a);               \
                    b = _mm512_add_ps(_mm512_maskz_loadu_ps(s1, d + 16), b);          \
                } else if (bias) {                                                    \
                    a = _mm512_add_ps(a, _mm512_set1_ps(bias[o]));                    \
                    b = _mm512_add_ps(b, _mm512_set1_ps(bias[o]));                    \
                }                                                                     \
                _mm512_mask_storeu_ps(d, s0, a);                                      \
                _mm512_mask_storeu_ps(d + 16, s1, b);                                 \
            }
            PRG__C3_ROWS(PRG__C3_STORE)
#undef PRG__C3_STORE
        }
}
#undef PRG__C3_ROWS

PRG__AVX512_TARGET
static void prg__conv3_avx512(float *y, const float *x, const float *wt, size_t os, size_t is, int flip,
                              const float *bias, int accumulate, int ci, int ob, int h, int w) {
    switch (ob) {
#define PRG__C3_CASE(R) \
    case R: prg__conv3_tile(R, y, x, wt, os, is, flip, bias, accumulate, ci, h, w); break;
    PRG__C3_CASE(8) PRG__C3_CASE(7) PRG__C3_CASE(6) PRG__C3_CASE(5)
    PRG__C3_CASE(4) PRG__C3_CASE(3) PRG__C3_CASE(2) PRG__C3_CASE(1)
#undef PRG__C3_CASE
    default: break;
    }
}

/* The nine pad-1 taps of two output channels over unpadded h x w planes:
   out[c*9 + ki*3 + kj] += sum over planes i < count and pixels (oy, ox) of
   g_c[i*gstride + oy*w + ox] x[i*xstride + (oy+ki-1)*w + ox+kj-1] (zero
   outside the plane). */
#define PRG__DW3P_TAP(a, b, kj)                                                \
    do {                                                                       \
        __m512 v_ = _mm512_maskz_loadu_ps(mk[kj], row + (kj));                 \
        a = _mm512_fmadd_ps(g0v, v_, a);                                       \
        b = _mm512_fmadd_ps(g1v, v_, b);                                       \
    } while (0)
PRG__AVX512_TARGET
static void prg__dw3p_avx512(float *out, const float *g0, const float *g1, const float *x, int h, int w,
                             int count, size_t gstride, size_t xstride) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0;
    __m512 a7 = a0, a8 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0, b4 = a0, b5 = a0, b6 = a0;
    __m512 b7 = a0, b8 = a0;
    int i, oy, ox, kj;
    for (i = 0; i < count; i++, g0 += gstride, g1 += gstride, x += xstride)
        for (ox = 0; ox < w; ox += 16) {
            __mmask16 m = prg__cols16(ox, w), mk[3];
            for (kj = 0; kj < 3; kj++) mk[kj] = prg__cols16(ox + kj - 1, w) & m;
            for (oy = 0; oy < h; oy++) {
                size_t q = (size_t)oy * w + ox;
                __m512 g0v = _mm512_maskz_loadu_ps(m, g0 + q), g1v = _mm512_maskz_loadu_ps(m, g1 + q);
                const float *row = x + q - 1;
                if (oy > 0) {
                    row -= w;
                    PRG__DW3P_TAP(a0, b0, 0);
                    PRG__DW3P_TAP(a1, b1, 1);
                    PRG__DW3P_TAP(a2, b2, 2);
                    row += w;
                }
                PRG__DW3P_TAP(a3, b3, 0);
                PRG__DW3P_TAP(a4, b4, 1);
                PRG__DW3P_TAP(a5, b5, 2);
                if (oy + 1 < h) {
                    row += w;
                    PRG__DW3P_TAP(a6, b6, 0);
                    PRG__DW3P_TAP(a7, b7, 1);
                    PRG__DW3P_TAP(a8, b8, 2);
                }
            }
        }
    PRG__DW3_SUMS(out);
}
#undef PRG__DW3P_TAP
#undef PRG__DW3_SUMS

__attribute__((target("avx2,fma")))
static void prg__dots_avx2(const float *g, const float *x, size_t n, double *sg, double *sgx) {
    __m256 a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps();
    float t1[8], t2[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    double s1 = 0.0, s2 = 0.0;
    size_t i, rest = n % 8, full = n - rest;
    int l;
    for (i = 0; i < full; i += 8) {
        __m256 gv = _mm256_loadu_ps(g + i);
        a1 = _mm256_add_ps(a1, gv);
        a2 = _mm256_fmadd_ps(gv, _mm256_loadu_ps(x + i), a2);
    }
    if (rest) { /* zero-padded tail through the same instructions */
        memset(t1, 0, sizeof t1);
        memcpy(t1, g + full, rest * sizeof(float));
        memcpy(t2, x + full, rest * sizeof(float));
        a1 = _mm256_add_ps(a1, _mm256_loadu_ps(t1));
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(t1), _mm256_loadu_ps(t2), a2);
    }
    _mm256_storeu_ps(t1, a1);
    _mm256_storeu_ps(t2, a2);
    for (l = 0; l < 8; l++) {
        s1 += t1[l];
        s2 += t2[l];
    }
    *sg = s1;
    *sgx = s2;
}
#endif /* PRG__X86 */

#ifdef PRG__X86
/* The same for stride 1 or 2 and 32-wide panels (the AVX-512 GEMM's): each
   half of a panel row is one register filled by masked loads, one per run
   that overlaps it (for stride 2, two loads and a permute keeping the even
   elements), then stored whole (the zeros past cols included). */
__attribute__((target("avx512f")))
static void prg__implicit_cols_pack_avx512(const void *ctx, float *PRG_RESTRICT dst, int j0,
                                           int cols, int p0, int kc, int nr) {
    static const int even[16] = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
    const prg__implicit_cols *ic = (const prg__implicit_cols *)ctx;
    int off[64], len[64], pos[64], nseg, p, g, h, i, n[2] = {0, 0}, s = ic->s;
    ptrdiff_t rel[2][32];
    __mmask16 msk[2][32], ma[2][32], mb[2][32];
    int kk = ic->k * ic->k, ci, ki, kj;
    size_t plane = (size_t)ic->hp * ic->wp;
    __m512i ev;
    if ((s != 1 && s != 2) || nr != 32) {
        prg__implicit_cols_pack(ctx, dst, j0, cols, p0, kc, nr);
        return;
    }
    ev = _mm512_loadu_si512((const void *)even);
    nseg = prg__implicit_cols_runs(ic, j0, cols, off, len, pos);
    for (g = 0; g < nseg; g++)
        for (h = 0; h < 2; h++) {
            int lo = pos[g] > 16 * h ? pos[g] - 16 * h : 0;
            int hi = pos[g] + len[g] < 16 * h + 16 ? pos[g] + len[g] - 16 * h : 16;
            unsigned a = 0, b = 0;
            if (lo >= hi) continue;
            for (i = lo; i < hi; i++) { /* stride 2: lane i is element 2i of the 32 loaded */
                if (i < 8) a |= 1u << (2 * i);
                else b |= 1u << (2 * i - 16);
            }
            msk[h][n[h]] = (__mmask16)(((1u << hi) - 1u) & ~((1u << lo) - 1u));
            ma[h][n[h]] = (__mmask16)a;
            mb[h][n[h]] = (__mmask16)b;
            /* lane i reads base + rel + s i */
            rel[h][n[h]++] = (ptrdiff_t)off[g] - (ptrdiff_t)s * (pos[g] - 16 * h);
        }
    ci = p0 / kk;
    ki = p0 % kk / ic->k;
    kj = p0 % ic->k;
    for (p = 0; p < kc; p++) {
        const float *base = ic->xp + (size_t)ci * plane + (size_t)ki * ic->wp + kj;
        float *d = dst + (size_t)p * 32;
        for (h = 0; h < 2; h++) {
            __m512 v = _mm512_setzero_ps();
            if (s == 1)
                for (g = 0; g < n[h]; g++) v = _mm512_mask_loadu_ps(v, msk[h][g], base + rel[h][g]);
            else
                for (g = 0; g < n[h]; g++) {
                    const float *q = base + rel[h][g];
                    v = _mm512_mask_mov_ps(v, msk[h][g],
                                           _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(ma[h][g], q), ev,
                                                                  _mm512_maskz_loadu_ps(mb[h][g], q + 16)));
                }
            _mm512_storeu_ps(d + 16 * h, v);
        }
        PRG__COLS_NEXT_ROW(ic, ci, ki, kj);
    }
}
#endif

#ifdef PRG__X86
/* The three row transforms with AVX-512, 16 tiles per vector: the same
   operations in the same order as the scalar ones, so the same bits. */
static const int prg__wino_even[16] = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};

/* row k of the transform from row k of B^T d (columns c-1.. in sa, c+15.. in
   sb, c+1.. in sc, c+17.. in sd) */
static inline __attribute__((always_inline)) PRG__AVX512_TARGET void
prg__wino_in_store(float *v0, size_t vs, __mmask16 mq, __m512 sa, __m512 sb, __m512 sc, __m512 sd,
                   __m512i ev, __m512i od) {
    __m512 c0 = _mm512_permutex2var_ps(sa, ev, sb), c1 = _mm512_permutex2var_ps(sa, od, sb);
    __m512 c2 = _mm512_permutex2var_ps(sc, ev, sd), c3 = _mm512_permutex2var_ps(sc, od, sd);
    _mm512_mask_storeu_ps(v0, mq, _mm512_sub_ps(c0, c2));
    _mm512_mask_storeu_ps(v0 + vs, mq, _mm512_add_ps(c1, c2));
    _mm512_mask_storeu_ps(v0 + 2 * vs, mq, _mm512_sub_ps(c2, c1));
    _mm512_mask_storeu_ps(v0 + 3 * vs, mq, _mm512_sub_ps(c1, c3));
}

PRG__AVX512_TARGET
static void prg__wino_in_row_avx512(float *PRG_RESTRICT v, size_t vs, const float *plane, int h, int w,
                                    int ty, int x0, int len, int k0, int k1) {
    const __m512i ev = _mm512_loadu_si512((const void *)prg__wino_even);
    const __m512i od = _mm512_add_epi32(ev, _mm512_set1_epi32(1));
    const __m512 z = _mm512_setzero_ps();
    int q;
    for (q = 0; q < len; q += 16) {
        /* 34 columns from c - 1 of the four rows i: ai (c-1..), bi (c+15..),
           ci (c+1..), di (c+17..); zeros outside the image */
        __mmask16 mq = (__mmask16)(len - q >= 16 ? 0xFFFF : (1u << (len - q)) - 1u);
        int c = 2 * (x0 + q);
        __mmask16 ma = prg__cols16(c - 1, w), mb = prg__cols16(c + 15, w);
        __mmask16 mc = prg__cols16(c + 1, w), md = prg__cols16(c + 17, w);
        __m512 a0 = z, a1 = z, a2 = z, a3 = z, b0 = z, b1 = z, b2 = z, b3 = z;
        __m512 c0 = z, c1 = z, c2 = z, c3 = z, d0 = z, d1 = z, d2 = z, d3 = z;
        float *v0 = v + q;
#define PRG__WINO_LOAD(i, a, b, cc, d)                                  \
        if (2 * ty - 1 + (i) >= 0 && 2 * ty - 1 + (i) < h) {            \
            const float *s = plane + (size_t)(2 * ty - 1 + (i)) * w + c; \
            a = _mm512_maskz_loadu_ps(ma, s - 1);                       \
            b = _mm512_maskz_loadu_ps(mb, s + 15);                      \
            cc = _mm512_maskz_loadu_ps(mc, s + 1);                      \
            d = _mm512_maskz_loadu_ps(md, s + 17);                      \
        }
        PRG__WINO_LOAD(0, a0, b0, c0, d0)
        PRG__WINO_LOAD(1, a1, b1, c1, d1)
        PRG__WINO_LOAD(2, a2, b2, c2, d2)
        PRG__WINO_LOAD(3, a3, b3, c3, d3)
#undef PRG__WINO_LOAD
        /* B^T d: rows r0 - r2, r1 + r2, r2 - r1, r1 - r3 */
        if (k0 <= 0 && k1 > 0)
            prg__wino_in_store(v0, vs, mq, _mm512_sub_ps(a0, a2), _mm512_sub_ps(b0, b2),
                               _mm512_sub_ps(c0, c2), _mm512_sub_ps(d0, d2), ev, od);
        if (k0 <= 1 && k1 > 1)
            prg__wino_in_store(v0 + (size_t)(4 * (1 - k0)) * vs, vs, mq, _mm512_add_ps(a1, a2),
                               _mm512_add_ps(b1, b2), _mm512_add_ps(c1, c2), _mm512_add_ps(d1, d2), ev, od);
        if (k0 <= 2 && k1 > 2)
            prg__wino_in_store(v0 + (size_t)(4 * (2 - k0)) * vs, vs, mq, _mm512_sub_ps(a2, a1),
                               _mm512_sub_ps(b2, b1), _mm512_sub_ps(c2, c1), _mm512_sub_ps(d2, d1), ev, od);
        if (k1 > 3)
            prg__wino_in_store(v0 + (size_t)(4 * (3 - k0)) * vs, vs, mq, _mm512_sub_ps(a1, a3),
                               _mm512_sub_ps(b1, b3), _mm512_sub_ps(c1, c3), _mm512_sub_ps(d1, d3), ev, od);
    }
}

/* Pieces shared by the row transforms and the vector-filling ones below. */
/* row k of B^T d from the rows s[0..3] of d */
static inline __attribute__((always_inline)) PRG__AVX512_TARGET __m512
prg__wino_bt(int k, __m512 s0, __m512 s1, __m512 s2, __m512 s3) {
    return k == 0 ? _mm512_sub_ps(s0, s2) : k == 1 ? _mm512_add_ps(s1, s2) : k == 2 ? _mm512_sub_ps(s2, s1)
                                                                             : _mm512_sub_ps(s1, s3);
}

/* ... B along the rows: column j of each lane's tile from (t0, t1) by cols[j]
   (zero where the mask of j = 0 or 3 clears a lane), stored at v + j vs */
static inline __attribute__((always_inline)) PRG__AVX512_TARGET void
prg__wino_b_store(float *v0, size_t vs, __m512 t0, __m512 t1, const int cols[4][16], __mmask16 m0, __mmask16 m3) {
    __m512 c[4];
    int j;
    for (j = 0; j < 4; j++)
        c[j] = _mm512_maskz_permutex2var_ps((__mmask16)(j == 0 ? m0 : j == 3 ? m3 : 0xFFFF), t0,
                                            _mm512_loadu_si512((const void *)cols[j]), t1);
    _mm512_storeu_ps(v0, _mm512_sub_ps(c[0], c[2]));
    _mm512_storeu_ps(v0 + vs, _mm512_add_ps(c[1], c[2]));
    _mm512_storeu_ps(v0 + 2 * vs, _mm512_sub_ps(c[2], c[1]));
    _mm512_storeu_ps(v0 + 3 * vs, _mm512_sub_ps(c[1], c[3]));
}

/* y[a][e] = (A^T m A)[a][e] of 16 tiles, m[xi*ms + lane] (the lanes in mq) */
static inline __attribute__((always_inline)) PRG__AVX512_TARGET void
prg__wino_atma(__m512 y[2][2], const float *m, size_t ms, __mmask16 mq) {
    __m512 a[4], b[4];
    int k;
    for (k = 0; k < 4; k++) { /* A^T m down the columns */
        __m512 m0 = _mm512_maskz_loadu_ps(mq, m + (size_t)k * ms);
        __m512 m1 = _mm512_maskz_loadu_ps(mq, m + (size_t)(4 + k) * ms);
        __m512 m2 = _mm512_maskz_loadu_ps(mq, m + (size_t)(8 + k) * ms);
        __m512 m3 = _mm512_maskz_loadu_ps(mq, m + (size_t)(12 + k) * ms);
        a[k] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
        b[k] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
    }
    y[0][0] = _mm512_add_ps(_mm512_add_ps(a[0], a[1]), a[2]); /* ... A along the rows */
    y[0][1] = _mm512_sub_ps(_mm512_sub_ps(a[1], a[2]), a[3]);
    y[1][0] = _mm512_add_ps(_mm512_add_ps(b[0], b[1]), b[2]);
    y[1][1] = _mm512_sub_ps(_mm512_sub_ps(b[1], b[2]), b[3]);
}

/* dm[(4 (k - k0) + j) ms + lane] = (A e A^T)[k][j] from the dy tiles' e[a][c] (the lanes in mq) */
static inline __attribute__((always_inline)) PRG__AVX512_TARGET void
prg__wino_aea(float *dm, size_t ms, __m512 e[2][2], int k0, int k1, __mmask16 mq) {
    const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
    __m512 r[4][2];
    int c, k;
    for (c = 0; c < 2; c++) {
        r[0][c] = e[0][c];
        r[1][c] = _mm512_add_ps(e[0][c], e[1][c]);
        r[2][c] = _mm512_sub_ps(e[0][c], e[1][c]);
        r[3][c] = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(e[1][c]), sign));
    }
    for (k = k0; k < k1; k++) {
        float *d = dm + (size_t)(4 * (k - k0)) * ms;
        _mm512_mask_storeu_ps(d, mq, r[k][0]);
        _mm512_mask_storeu_ps(d + ms, mq, _mm512_add_ps(r[k][0], r[k][1]));
        _mm512_mask_storeu_ps(d + 2 * ms, mq, _mm512_sub_ps(r[k][0], r[k][1]));
        _mm512_mask_storeu_ps(d + 3 * ms, mq,
                              _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(r[k][1]), sign)));
    }
}

PRG__AVX512_TARGET
static void prg__wino_out_row_avx512(float *plane, int h, int w, int ty, int x0, int len,
                                     const float *PRG_RESTRICT m, size_t ms, float bias, int accumulate) {
    static const int lo_idx[16] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23};
    const __m512i il = _mm512_loadu_si512((const void *)lo_idx);
    const __m512i ih = _mm512_add_epi32(il, _mm512_set1_epi32(8));
    const __m512 vb = _mm512_set1_ps(bias);
    int q;
    for (q = 0; q < len; q += 16) {
        __mmask16 mq = (__mmask16)(len - q >= 16 ? 0xFFFF : (1u << (len - q)) - 1u);
        int ox = 2 * (x0 + q), nv = 2 * (len - q < 16 ? len - q : 16);
        __m512 y[2][2];
        __mmask16 ml, mh;
        if (nv > w - ox) nv = w - ox;
        ml = (__mmask16)(nv >= 16 ? 0xFFFF : (1u << nv) - 1u);
        mh = (__mmask16)(nv >= 32 ? 0xFFFF : nv > 16 ? (1u << (nv - 16)) - 1u : 0u);
        prg__wino_atma(y, m + q, ms, mq);
#define PRG__WINO_STORE(a, ya, yb)                                                      \
        if (2 * ty + (a) < h) {                                                         \
            float *row = plane + (size_t)(2 * ty + (a)) * w + ox;                       \
            __m512 lo = _mm512_permutex2var_ps(ya, il, yb);                             \
            __m512 hi = _mm512_permutex2var_ps(ya, ih, yb);                             \
            if (accumulate) {                                                           \
                lo = _mm512_add_ps(_mm512_maskz_loadu_ps(ml, row), lo);                 \
                hi = _mm512_add_ps(_mm512_maskz_loadu_ps(mh, row + 16), hi);            \
            } else {                                                                    \
                lo = _mm512_add_ps(lo, vb);                                             \
                hi = _mm512_add_ps(hi, vb);                                             \
            }                                                                           \
            _mm512_mask_storeu_ps(row, ml, lo);                                         \
            _mm512_mask_storeu_ps(row + 16, mh, hi);                                    \
        }
        PRG__WINO_STORE(0, y[0][0], y[0][1])
        PRG__WINO_STORE(1, y[1][0], y[1][1])
#undef PRG__WINO_STORE
    }
}

PRG__AVX512_TARGET
static void prg__wino_dy_row_avx512(float *PRG_RESTRICT dm, size_t ms, const float *plane, int h, int w,
                                    int ty, int x0, int len, int k0, int k1) {
    const __m512i ev = _mm512_loadu_si512((const void *)prg__wino_even);
    const __m512i od = _mm512_add_epi32(ev, _mm512_set1_epi32(1));
    int q, a;
    for (q = 0; q < len; q += 16) {
        __mmask16 mq = (__mmask16)(len - q >= 16 ? 0xFFFF : (1u << (len - q)) - 1u);
        int ox = 2 * (x0 + q), nv = w - ox < 32 ? w - ox : 32;
        __mmask16 ml = (__mmask16)(nv >= 16 ? 0xFFFF : (1u << nv) - 1u);
        __mmask16 mh = (__mmask16)(nv >= 32 ? 0xFFFF : nv > 16 ? (1u << (nv - 16)) - 1u : 0u);
        __m512 e[2][2];
        for (a = 0; a < 2; a++) {
            if (2 * ty + a < h) {
                const float *row = plane + (size_t)(2 * ty + a) * w + ox;
                __m512 lo = _mm512_maskz_loadu_ps(ml, row), hi = _mm512_maskz_loadu_ps(mh, row + 16);
                e[a][0] = _mm512_permutex2var_ps(lo, ev, hi);
                e[a][1] = _mm512_permutex2var_ps(lo, od, hi);
            } else {
                e[a][0] = e[a][1] = _mm512_setzero_ps();
            }
        }
        prg__wino_aea(dm + q, ms, e, k0, k1, mq);
    }
}

/* 8 x 8 planes (4 x 4 tiles: one vector of 16 tiles, lane 4 ty + tx, per
   plane) at once, the whole plane in four registers (rows 2k, 2k+1 in P[k]):
   the same operations in the same order as the row transforms, so the same
   bits, with every lane used (a run of an 8-wide plane fills 4). */
static const int prg__wino_p8_rows[16] = {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23};
/* lane 4 ty + tx <- column 2 tx - 1 + j (clamped) of the row of tile row ty in (a, b) holding tile
   rows 0, 1 | 2, 3 */
static const int prg__wino_p8_cols[4][16] = {
    {0, 1, 3, 5, 8, 9, 11, 13, 16, 17, 19, 21, 24, 25, 27, 29},
    {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30},
    {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31},
    {2, 4, 6, 7, 10, 12, 14, 15, 18, 20, 22, 23, 26, 28, 30, 31}};
/* lane 4 ty + tx <- row 2 ty + a, column 2 tx + c from (P[ty], P[ty + 1]) (ty even), index 2 a + c */
static const int prg__wino_p8_dy[4][16] = {
    {0, 2, 4, 6, 16, 18, 20, 22, 0, 2, 4, 6, 16, 18, 20, 22},
    {1, 3, 5, 7, 17, 19, 21, 23, 1, 3, 5, 7, 17, 19, 21, 23},
    {8, 10, 12, 14, 24, 26, 28, 30, 8, 10, 12, 14, 24, 26, 28, 30},
    {9, 11, 13, 15, 25, 27, 29, 31, 9, 11, 13, 15, 25, 27, 29, 31}};

/* v[(4 (k - k0) + j) vs + lane] = (B^T d B)[k][j] of the 16 tiles of the plane */
PRG__AVX512_TARGET
static void prg__wino_in_plane8_avx512(float *PRG_RESTRICT v, size_t vs, const float *plane, int k0, int k1) {
    const __m512i lo = _mm512_loadu_si512((const void *)prg__wino_p8_rows); /* the low halves of a, b */
    const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));          /* their high halves */
    __m512 p0 = _mm512_loadu_ps(plane), p1 = _mm512_loadu_ps(plane + 16), p2 = _mm512_loadu_ps(plane + 32);
    __m512 p3 = _mm512_loadu_ps(plane + 48), s[4][2], t[2];
    int k, l;
    /* s[i][h]: rows 2 ty - 1 + i for ty = 2h, 2h + 1 (8 columns each) */
    s[0][0] = _mm512_maskz_mov_ps((__mmask16)0xFF00, p0);
    s[0][1] = _mm512_permutex2var_ps(p1, hi, p2);
    s[1][0] = _mm512_permutex2var_ps(p0, lo, p1);
    s[1][1] = _mm512_permutex2var_ps(p2, lo, p3);
    s[2][0] = _mm512_permutex2var_ps(p0, hi, p1);
    s[2][1] = _mm512_permutex2var_ps(p2, hi, p3);
    s[3][0] = _mm512_permutex2var_ps(p1, lo, p2);
    s[3][1] = _mm512_maskz_mov_ps((__mmask16)0x00FF, p3);
    for (k = k0; k < k1; k++) {
        for (l = 0; l < 2; l++) t[l] = prg__wino_bt(k, s[0][l], s[1][l], s[2][l], s[3][l]);
        /* column 2 tx - 1 + j of tile (ty, tx); zero outside */
        prg__wino_b_store(v + (size_t)(4 * (k - k0)) * vs, vs, t[0], t[1], prg__wino_p8_cols, 0xEEEE, 0x7777);
    }
}

/* The plane from m[xi*ms + lane]: Y = A^T m A, stored (plus bias) or added */
PRG__AVX512_TARGET
static void prg__wino_out_plane8_avx512(float *plane, const float *PRG_RESTRICT m, size_t ms, float bias,
                                        int accumulate) {
    static const int inter[16] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23};
    const __m512i il = _mm512_loadu_si512((const void *)inter), ih = _mm512_add_epi32(il, _mm512_set1_epi32(8));
    const __m512i lo = _mm512_loadu_si512((const void *)prg__wino_p8_rows);
    const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
    __m512 y[2][2], e[2][2], p[4];
    int k, r;
    prg__wino_atma(y, m, ms, (__mmask16)0xFFFF);
    for (r = 0; r < 2; r++) { /* e[r][h]: rows 2 ty + r of tile rows ty = 2h, 2h + 1 */
        e[r][0] = _mm512_permutex2var_ps(y[r][0], il, y[r][1]);
        e[r][1] = _mm512_permutex2var_ps(y[r][0], ih, y[r][1]);
    }
    p[0] = _mm512_permutex2var_ps(e[0][0], lo, e[1][0]);
    p[1] = _mm512_permutex2var_ps(e[0][0], hi, e[1][0]);
    p[2] = _mm512_permutex2var_ps(e[0][1], lo, e[1][1]);
    p[3] = _mm512_permutex2var_ps(e[0][1], hi, e[1][1]);
    for (k = 0; k < 4; k++)
        _mm512_storeu_ps(plane + 16 * k, accumulate ? _mm512_add_ps(_mm512_loadu_ps(plane + 16 * k), p[k])
                                                    : _mm512_add_ps(p[k], _mm512_set1_ps(bias)));
}

/* dm[(4 (k - k0) + j) ms + lane] = (A e A^T)[k][j] for the dy tiles of the plane */
PRG__AVX512_TARGET
static void prg__wino_dy_plane8_avx512(float *PRG_RESTRICT dm, size_t ms, const float *plane, int k0, int k1) {
    __m512 p0 = _mm512_loadu_ps(plane), p1 = _mm512_loadu_ps(plane + 16), p2 = _mm512_loadu_ps(plane + 32);
    __m512 p3 = _mm512_loadu_ps(plane + 48), e[2][2];
    int a, c;
    for (a = 0; a < 2; a++)
        for (c = 0; c < 2; c++) {
            __m512i idx = _mm512_loadu_si512((const void *)prg__wino_p8_dy[2 * a + c]);
            e[a][c] = _mm512_mask_blend_ps((__mmask16)0xFF00, _mm512_permutex2var_ps(p0, idx, p1),
                                           _mm512_permutex2var_ps(p2, idx, p3));
        }
    prg__wino_aea(dm, ms, e, k0, k1, (__mmask16)0xFFFF);
}

/* 16-wide planes (8 tiles a row, h a multiple of 4), two tile rows ty, ty + 1
   (ty even) per vector, lane 8 r + tx for tile (ty + r, tx), each image row
   one register; the same operations as the row transforms, so the same bits. */
static const int prg__wino_r16_cols[4][16] = { /* lane 8 r + tx <- column 2 tx - 1 + j (clamped) of row r */
    {0, 1, 3, 5, 7, 9, 11, 13, 16, 17, 19, 21, 23, 25, 27, 29},
    {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30},
    {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31},
    {2, 4, 6, 8, 10, 12, 14, 15, 18, 20, 22, 24, 26, 28, 30, 31}};

static inline __attribute__((always_inline)) PRG__AVX512_TARGET __m512
prg__wino_row16(const float *plane, int h, int y) {
    return y >= 0 && y < h ? _mm512_loadu_ps(plane + (size_t)16 * y) : _mm512_setzero_ps();
}

/* v[(4 (k - k0) + j) vs + lane] = (B^T d B)[k][j] of the 16 tiles of tile rows ty, ty + 1 */
PRG__AVX512_TARGET
static void prg__wino_in_rows16_avx512(float *PRG_RESTRICT v, size_t vs, const float *plane, int h, int ty,
                                       int k0, int k1) {
    __m512 r[6], t[2];
    int i, k;
    for (i = 0; i < 6; i++) r[i] = prg__wino_row16(plane, h, 2 * ty - 1 + i); /* tile row ty + q: r[2q..] */
    for (k = k0; k < k1; k++) {
        for (i = 0; i < 2; i++) t[i] = prg__wino_bt(k, r[2 * i], r[2 * i + 1], r[2 * i + 2], r[2 * i + 3]);
        /* column 2 tx - 1 + j; zero outside */
        prg__wino_b_store(v + (size_t)(4 * (k - k0)) * vs, vs, t[0], t[1], prg__wino_r16_cols, 0xFEFE, 0x7F7F);
    }
}

/* Rows 2 ty .. 2 ty + 3 from m[xi*ms + lane]: Y = A^T m A, stored (plus bias) or added */
PRG__AVX512_TARGET
static void prg__wino_out_rows16_avx512(float *plane, int ty, const float *PRG_RESTRICT m, size_t ms, float bias,
                                        int accumulate) {
    static const int inter[16] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23};
    const __m512i il = _mm512_loadu_si512((const void *)inter), ih = _mm512_add_epi32(il, _mm512_set1_epi32(8));
    __m512 y[2][2];
    int r, q;
    prg__wino_atma(y, m, ms, (__mmask16)0xFFFF);
    for (q = 0; q < 2; q++)     /* tile row ty + q */
        for (r = 0; r < 2; r++) { /* image row 2 (ty + q) + r */
            float *row = plane + (size_t)16 * (2 * (ty + q) + r);
            __m512 e = _mm512_permutex2var_ps(y[r][0], q ? ih : il, y[r][1]);
            _mm512_storeu_ps(row, accumulate ? _mm512_add_ps(_mm512_loadu_ps(row), e)
                                             : _mm512_add_ps(e, _mm512_set1_ps(bias)));
        }
}

/* dm[(4 (k - k0) + j) ms + lane] = (A e A^T)[k][j] for the dy tiles of tile rows ty, ty + 1 */
PRG__AVX512_TARGET
static void prg__wino_dy_rows16_avx512(float *PRG_RESTRICT dm, size_t ms, const float *plane, int h, int ty,
                                       int k0, int k1) {
    const __m512i ev = _mm512_loadu_si512((const void *)prg__wino_even);
    const __m512i od = _mm512_add_epi32(ev, _mm512_set1_epi32(1));
    __m512 e[2][2];
    int a;
    (void)h; /* a multiple of 4: both tile rows are inside */
    for (a = 0; a < 2; a++) { /* lane 8 q + tx <- row 2 (ty + q) + a, column 2 tx + c */
        __m512 lo = _mm512_loadu_ps(plane + (size_t)16 * (2 * ty + a));
        __m512 hi = _mm512_loadu_ps(plane + (size_t)16 * (2 * ty + 2 + a));
        e[a][0] = _mm512_permutex2var_ps(lo, ev, hi);
        e[a][1] = _mm512_permutex2var_ps(lo, od, hi);
    }
    prg__wino_aea(dm, ms, e, k0, k1, (__mmask16)0xFFFF);
}

/* F(4x4,3x3) with AVX-512, one group of 16 tiles per vector (lane l: tile
   (ty0 + l / tw, l % tw)); the image rows are registers (w 16: one, w 32:
   two), the columns 4 tx - 1 + c gathered across them with permutes. */
static inline __attribute__((always_inline)) PRG__AVX512_TARGET __m512
prg__wino4_bt_k(int k, __m512 d0, __m512 d1, __m512 d2, __m512 d3, __m512 d4, __m512 d5) {
    const __m512 two = _mm512_set1_ps(2.0f), four = _mm512_set1_ps(4.0f), five = _mm512_set1_ps(5.0f);
    switch (k) {
    case 0: return _mm512_fmadd_ps(four, d0, _mm512_fnmadd_ps(five, d2, d4));
    case 1: return _mm512_add_ps(_mm512_fnmadd_ps(four, d2, d4), _mm512_fnmadd_ps(four, d1, d3));
    case 2: return _mm512_sub_ps(_mm512_fnmadd_ps(four, d2, d4), _mm512_fnmadd_ps(four, d1, d3));
    case 3: return _mm512_fmadd_ps(two, _mm512_sub_ps(d3, d1), _mm512_sub_ps(d4, d2));
    case 4: return _mm512_fnmadd_ps(two, _mm512_sub_ps(d3, d1), _mm512_sub_ps(d4, d2));
    default: return _mm512_fmadd_ps(four, d1, _mm512_fnmadd_ps(five, d3, d5));
    }
}

/* lane l <- column 4 (l % 8) - 1 + c of the register pair (a0, a1) for the
   low lanes, of (b0, b1) for the high ones (the index's low 5 bits count);
   zero where the mask is clear */
static inline __attribute__((always_inline)) PRG__AVX512_TARGET __m512
prg__wino4_col(int c, __mmask16 mask, __m512i ib, __m512 a0, __m512 a1, __m512 b0, __m512 b1) {
    __m512i ic = _mm512_add_epi32(ib, _mm512_set1_epi32(c));
    __m512 x = _mm512_maskz_permutex2var_ps((__mmask16)(mask & 0x00FF), a0, ic, a1);
    return _mm512_mask_mov_ps(x, (__mmask16)(mask & 0xFF00), _mm512_permutex2var_ps(b0, ic, b1));
}

/* ... B along the rows: the columns c of the registers' pairs (t0, t1) and
   (t2, t3) that lane l takes are at ib + c (prg__wino4_col) */
static inline __attribute__((always_inline)) PRG__AVX512_TARGET void
prg__wino4_in_row(float *PRG_RESTRICT vk, size_t vs, __m512 t0, __m512 t1, __m512 t2, __m512 t3, __mmask16 m0,
                  __mmask16 m5, __m512i ib) {
    const __m512 two = _mm512_set1_ps(2.0f), four = _mm512_set1_ps(4.0f);
    __m512 x0, x1, x2, x3, x4, x5, a, b, c, e;
    x0 = prg__wino4_col(0, m0, ib, t0, t1, t2, t3);
    x1 = prg__wino4_col(1, 0xFFFF, ib, t0, t1, t2, t3);
    x2 = prg__wino4_col(2, 0xFFFF, ib, t0, t1, t2, t3);
    x3 = prg__wino4_col(3, 0xFFFF, ib, t0, t1, t2, t3);
    x4 = prg__wino4_col(4, 0xFFFF, ib, t0, t1, t2, t3);
    x5 = prg__wino4_col(5, m5, ib, t0, t1, t2, t3);
    a = _mm512_fnmadd_ps(four, x2, x4);
    b = _mm512_fnmadd_ps(four, x1, x3);
    c = _mm512_sub_ps(x4, x2);
    e = _mm512_sub_ps(x3, x1);
    _mm512_storeu_ps(vk, prg__wino4_bt_k(0, x0, x1, x2, x3, x4, x5));
    _mm512_storeu_ps(vk + vs, _mm512_add_ps(a, b));
    _mm512_storeu_ps(vk + 2 * vs, _mm512_sub_ps(a, b));
    _mm512_storeu_ps(vk + 3 * vs, _mm512_fmadd_ps(two, e, c));
    _mm512_storeu_ps(vk + 4 * vs, _mm512_fnmadd_ps(two, e, c));
    _mm512_storeu_ps(vk + 5 * vs, prg__wino4_bt_k(5, x0, x1, x2, x3, x4, x5));
}

/* Row k of the group's transforms from its image rows d (H registers a row) */
static inline __attribute__((always_inline)) PRG__AVX512_TARGET void
prg__wino4_in_k(float *PRG_RESTRICT vk, size_t vs, int k, const __m512 *d, int H, __mmask16 m0, __mmask16 m5,
                __m512i ib) {
    __m512 t0, t1, t2, t3;
    if (H == 1) { /* B^T d down the columns: tile rows 0..3, one register each */
        t0 = prg__wino4_bt_k(k, d[0], d[1], d[2], d[3], d[4], d[5]);
        t1 = prg__wino4_bt_k(k, d[4], d[5], d[6], d[7], d[8], d[9]);
        t2 = prg__wino4_bt_k(k, d[8], d[9], d[10], d[11], d[12], d[13]);
        t3 = prg__wino4_bt_k(k, d[12], d[13], d[14], d[15], d[16], d[17]);
    } else { /* tile rows 0 and 1, two registers each */
        t0 = prg__wino4_bt_k(k, d[0], d[2], d[4], d[6], d[8], d[10]);
        t1 = prg__wino4_bt_k(k, d[1], d[3], d[5], d[7], d[9], d[11]);
        t2 = prg__wino4_bt_k(k, d[8], d[10], d[12], d[14], d[16], d[18]);
        t3 = prg__wino4_bt_k(k, d[9], d[11], d[13], d[15], d[17], d[19]);
    }
    prg__wino4_in_row(vk, vs, t0, t1, t2, t3, m0, m5, ib);
}

static inline __attribute__((always_inline)) PRG__AVX512_TARGET void
prg__wino4_in_w(float *PRG_RESTRICT v, size_t vs, const float *plane, int h, int ty0, int k0, int k1, const int w) {
    static const int base[16] = {-1, 3, 7, 11, 15, 19, 23, 27, -1, 3, 7, 11, 15, 19, 23, 27};
    const __m512i ib = _mm512_loadu_si512((const void *)base);
    const int H = w / 16, n = (4 * (64 / w) + 2) * H; /* registers a row; registers */
    const __mmask16 m0 = (__mmask16)(w == 16 ? 0xEEEE : 0xFEFE), m5 = (__mmask16)(w == 16 ? 0x7777 : 0x7F7F);
    const float *first = plane + ((ptrdiff_t)4 * ty0 - 1) * w;
    __m512 d[20];
    int i;
    if (ty0 > 0 && 4 * ty0 + 4 * (64 / w) < h) { /* every row inside */
        for (i = 0; i < n; i++) d[i] = _mm512_loadu_ps(first + 16 * i);
    } else {
        for (i = 0; i < n; i++) {
            int y = 4 * ty0 - 1 + i / H;
            d[i] = y >= 0 && y < h ? _mm512_loadu_ps(first + 16 * i) : _mm512_setzero_ps();
        }
    }
    v -= (ptrdiff_t)6 * k0 * (ptrdiff_t)vs; /* row k at v + 6 k vs */
    if (k0 <= 0 && 0 < k1) prg__wino4_in_k(v, vs, 0, d, H, m0, m5, ib);
    if (k0 <= 1 && 1 < k1) prg__wino4_in_k(v + 6 * vs, vs, 1, d, H, m0, m5, ib);
    if (k0 <= 2 && 2 < k1) prg__wino4_in_k(v + 12 * vs, vs, 2, d, H, m0, m5, ib);
    if (k0 <= 3 && 3 < k1) prg__wino4_in_k(v + 18 * vs, vs, 3, d, H, m0, m5, ib);
    if (k0 <= 4 && 4 < k1) prg__wino4_in_k(v + 24 * vs, vs, 4, d, H, m0, m5, ib);
    if (k0 <= 5 && 5 < k1) prg__wino4_in_k(v + 30 * vs, vs, 5, d, H, m0, m5, ib);
}

/* 8 x 8 maps: register (y, p) holds row y of planes 2 p (low lanes) and
   2 p + 1 (high); lane l <- tile (l % 4 / 2, l % 2) of plane l / 4 */
static const int prg__wino4_p8[16] = {-1, 3, 15, 19, 7, 11, 23, 27, -1, 3, 15, 19, 7, 11, 23, 27};

static inline __attribute__((always_inline)) PRG__AVX512_TARGET void
prg__wino4_rows8(__m512 r[8][2], const float *plane, size_t ps) {
    int y, p;
    for (y = 0; y < 8; y++)
        for (p = 0; p < 2; p++)
            r[y][p] = _mm512_mask_loadu_ps(_mm512_maskz_loadu_ps(0x00FF, plane + 2 * p * ps + 8 * y), 0xFF00,
                                           plane + (2 * p + 1) * ps + 8 * y - 8);
}

PRG__AVX512_TARGET
static void prg__wino4_in8(float *PRG_RESTRICT v, size_t vs, const float *plane, size_t ps, int k0, int k1) {
    const __m512i ib = _mm512_loadu_si512((const void *)prg__wino4_p8);
    const __m512 z = _mm512_setzero_ps();
    __m512 r[8][2];
    int k;
    prg__wino4_rows8(r, plane, ps);
    for (k = k0; k < k1; k++) { /* tile row 0: image rows -1..4, tile row 1: 3..8 */
        __m512 t[2][2];
        int p;
        for (p = 0; p < 2; p++) {
            t[0][p] = prg__wino4_bt_k(k, z, r[0][p], r[1][p], r[2][p], r[3][p], r[4][p]);
            t[1][p] = prg__wino4_bt_k(k, r[3][p], r[4][p], r[5][p], r[6][p], r[7][p], z);
        }
        prg__wino4_in_row(v + (size_t)(6 * (k - k0)) * vs, vs, t[0][0], t[1][0], t[0][1], t[1][1], 0xAAAA, 0x5555,
                          ib);
    }
}

PRG__AVX512_TARGET
static void prg__wino4_in_avx512(float *PRG_RESTRICT v, size_t vs, const float *plane, size_t ps, int h, int w,
                                 int ty0, int k0, int k1) {
    if (w == 8)
        prg__wino4_in8(v, vs, plane, ps, k0, k1);
    else if (w == 16)
        prg__wino4_in_w(v, vs, plane, h, ty0, k0, k1, 16);
    else
        prg__wino4_in_w(v, vs, plane, h, ty0, k0, k1, 32);
}

/* Row k of A (e0 .. e3) */
static inline __attribute__((always_inline)) PRG__AVX512_TARGET __m512
prg__wino4_a_k(int k, __m512 e0, __m512 e1, __m512 e2, __m512 e3) {
    const __m512 two = _mm512_set1_ps(2.0f), four = _mm512_set1_ps(4.0f);
    switch (k) {
    case 0: return e0;
    case 1: return _mm512_add_ps(_mm512_add_ps(e0, e2), _mm512_add_ps(e1, e3));
    case 2: return _mm512_sub_ps(_mm512_add_ps(e0, e2), _mm512_add_ps(e1, e3));
    case 3: return _mm512_fmadd_ps(two, _mm512_fmadd_ps(four, e3, e1), _mm512_fmadd_ps(four, e2, e0));
    case 4: return _mm512_fnmadd_ps(two, _mm512_fmadd_ps(four, e3, e1), _mm512_fmadd_ps(four, e2, e0));
    default: return e3;
    }
}

/* ... A^T along the rows of the column-transformed pairs (t0, t1), (t2, t3) */
static inline __attribute__((always_inline)) PRG__AVX512_TARGET void
prg__wino4_dy_row(float *PRG_RESTRICT dk, size_t ms, __m512 t0, __m512 t1, __m512 t2, __m512 t3, __m512i ib) {
    __m512 x0, x1, x2, x3;
    x0 = prg__wino4_col(1, 0xFFFF, ib, t0, t1, t2, t3); /* column 4 tx + c - 1 */
    x1 = prg__wino4_col(2, 0xFFFF, ib, t0, t1, t2, t3);
    x2 = prg__wino4_col(3, 0xFFFF, ib, t0, t1, t2, t3);
    x3 = prg__wino4_col(4, 0xFFFF, ib, t0, t1, t2, t3);
    _mm512_storeu_ps(dk, prg__wino4_a_k(0, x0, x1, x2, x3));
    _mm512_storeu_ps(dk + ms, prg__wino4_a_k(1, x0, x1, x2, x3));
    _mm512_storeu_ps(dk + 2 * ms, prg__wino4_a_k(2, x0, x1, x2, x3));
    _mm512_storeu_ps(dk + 3 * ms, prg__wino4_a_k(3, x0, x1, x2, x3));
    _mm512_storeu_ps(dk + 4 * ms, prg__wino4_a_k(4, x0, x1, x2, x3));
    _mm512_storeu_ps(dk + 5 * ms, prg__wino4_a_k(5, x0, x1, x2, x3));
}

/* Row k of the group's dy transform from its 16 image-row registers e */
static inline __attribute__((always_inline)) PRG__AVX512_TARGET void
prg__wino4_dy_k(float *PRG_RESTRICT dk, size_t ms, int k, const __m512 *e, int H, __m512i ib) {
    __m512 t[4];
    int q;
    for (q = 0; q < 4; q++) { /* A e down the columns: register q is tile row q / H, columns 16 (q % H) .. */
        const __m512 *r = e + (q / H) * 4 * H + q % H;
        t[q] = prg__wino4_a_k(k, r[0], r[H], r[2 * H], r[3 * H]);
    }
    prg__wino4_dy_row(dk, ms, t[0], t[1], t[2], t[3], ib);
}

/* prg__wino4_dy_ref with AVX-512, the image rows in registers */
PRG__AVX512_TARGET
static void prg__wino4_dy_avx512(float *PRG_RESTRICT dm, size_t ms, const float *plane, size_t ps, int w, int ty0,
                                 int k0, int k1) {
    static const int base[16] = {-1, 3, 7, 11, 15, 19, 23, 27, -1, 3, 7, 11, 15, 19, 23, 27};
    const __m512i ib = _mm512_loadu_si512((const void *)base);
    const float *first = plane + (size_t)4 * ty0 * w;
    __m512 e[16];
    int i;
    (void)ps; /* 16 and 32 wide only: the weight gradient keeps F(2x2,3x3) on 8 x 8 maps */
    for (i = 0; i < 16; i++) e[i] = _mm512_loadu_ps(first + 16 * i); /* 64 / w tile rows of 4 image rows */
    dm -= (ptrdiff_t)6 * k0 * (ptrdiff_t)ms;
#define PRG__WINO4_DY(k)                                                                           \
    if (k0 <= k && k < k1) {                                                                       \
        if (w == 16)                                                                               \
            prg__wino4_dy_k(dm + (size_t)(6 * k) * ms, ms, k, e, 1, ib);                           \
        else                                                                                       \
            prg__wino4_dy_k(dm + (size_t)(6 * k) * ms, ms, k, e, 2, ib);                           \
    }
    PRG__WINO4_DY(0) PRG__WINO4_DY(1) PRG__WINO4_DY(2) PRG__WINO4_DY(3) PRG__WINO4_DY(4) PRG__WINO4_DY(5)
#undef PRG__WINO4_DY
}

/* G^T (u0 .. u5), rows 0..2 */
static inline __attribute__((always_inline)) PRG__AVX512_TARGET void
prg__wino4_gt_v(__m512 *o, size_t os, const __m512 *u, size_t s) {
    const __m512 q4 = _mm512_set1_ps(1.0f / 4), s6 = _mm512_set1_ps(1.0f / 6);
    const __m512 q12 = _mm512_set1_ps(1.0f / 12), q24 = _mm512_set1_ps(1.0f / 24);
    __m512 a = _mm512_add_ps(u[s], u[2 * s]), b = _mm512_sub_ps(u[s], u[2 * s]);
    __m512 c = _mm512_add_ps(u[3 * s], u[4 * s]), d = _mm512_sub_ps(u[3 * s], u[4 * s]);
    o[0] = _mm512_add_ps(_mm512_sub_ps(_mm512_mul_ps(u[0], q4), _mm512_mul_ps(a, s6)), _mm512_mul_ps(c, q24));
    o[os] = _mm512_sub_ps(_mm512_mul_ps(d, q12), _mm512_mul_ps(b, s6));
    o[2 * os] = _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(c, a), s6), u[5 * s]);
}

/* prg__wino4_dw_inverse for 16 input channels at a time: the 9 results
   through a buffer into the 16 consecutive 3x3 kernels */
PRG__AVX512_TARGET
static void prg__wino4_dw_inverse_avx512(float *d, const float *u, size_t s, int cin) {
    int i, c, r, l;
    for (i = 0; i < cin; i += 16) {
        int n = cin - i < 16 ? cin - i : 16;
        __mmask16 mk = (__mmask16)((1u << n) - 1u);
        __m512 uu[36], t[3][6], g[3][3];
        float y[9][16], *di = d + (size_t)9 * i;
        for (c = 0; c < 36; c++) uu[c] = _mm512_maskz_loadu_ps(mk, u + i + (size_t)c * s);
        for (c = 0; c < 6; c++) prg__wino4_gt_v(&t[0][c], 6, uu + c, 6); /* G^T dU down the columns */
        for (r = 0; r < 3; r++) prg__wino4_gt_v(g[r], 1, t[r], 1);      /* ... G along the rows */
        for (r = 0; r < 3; r++)
            for (c = 0; c < 3; c++) _mm512_storeu_ps(y[3 * r + c], g[r][c]);
        for (l = 0; l < n; l++)
            for (c = 0; c < 9; c++) di[9 * l + c] += y[c][l];
    }
}

/* y[0..3] = A^T (m0 .. m5) */
static inline __attribute__((always_inline)) PRG__AVX512_TARGET void
prg__wino4_at_v(__m512 *y, __m512 m0, __m512 m1, __m512 m2, __m512 m3, __m512 m4, __m512 m5) {
    __m512 p = _mm512_add_ps(m1, m2), q = _mm512_sub_ps(m1, m2), r = _mm512_add_ps(m3, m4),
           t = _mm512_sub_ps(m3, m4);
    y[0] = _mm512_add_ps(_mm512_add_ps(m0, p), r);
    y[1] = _mm512_fmadd_ps(_mm512_set1_ps(2.0f), t, q);
    y[2] = _mm512_fmadd_ps(_mm512_set1_ps(4.0f), r, p);
    y[3] = _mm512_fmadd_ps(_mm512_set1_ps(8.0f), t, _mm512_add_ps(q, m5));
}

/* Output register o of a row (16 floats, 4 tiles) takes lanes 4 o .. 4 o + 3 */
PRG__AVX512_TARGET
static void prg__wino4_out_avx512(float *plane, size_t ps, int w, int ty0, const float *PRG_RESTRICT m, size_t ms,
                                  float bias, int accumulate) {
    /* 8 x 8: register (p, ty) of image row 4 ty + a holds planes 2 p, 2 p + 1 */
    static const int base8[16] = {0, 16, 0, 16, 1, 17, 1, 17, 4, 20, 4, 20, 5, 21, 5, 21};
    static const int base[16] = {0, 16, 0, 16, 1, 17, 1, 17, 2, 18, 2, 18, 3, 19, 3, 19};
    const __m512i ib = _mm512_loadu_si512((const void *)(w == 8 ? base8 : base));
    const __m512 bv = _mm512_set1_ps(bias);
    const int H = w / 16; /* 16 and 32 wide: registers a row */
    __m512 t[4][6], y[4];
    int j, a, o;
    for (j = 0; j < 6; j++) { /* A^T m down the columns */
        __m512 s[4];
        prg__wino4_at_v(s, _mm512_loadu_ps(m + (size_t)j * ms), _mm512_loadu_ps(m + (size_t)(6 + j) * ms),
                        _mm512_loadu_ps(m + (size_t)(12 + j) * ms), _mm512_loadu_ps(m + (size_t)(18 + j) * ms),
                        _mm512_loadu_ps(m + (size_t)(24 + j) * ms), _mm512_loadu_ps(m + (size_t)(30 + j) * ms));
        for (a = 0; a < 4; a++) t[a][j] = s[a];
    }
    for (a = 0; a < 4; a++) { /* ... A along the rows: image row 4 ty + a */
        prg__wino4_at_v(y, t[a][0], t[a][1], t[a][2], t[a][3], t[a][4], t[a][5]);
        for (o = 0; o < 4; o++) {
            /* 8 x 8: o = 2 p + ty; else tile row ty0 + o / H, columns 16 (o % H) .. */
            __m512i io = _mm512_add_epi32(ib, _mm512_set1_epi32(w == 8 ? 8 * (o / 2) + 2 * (o % 2) : 4 * o));
            __m512 e = _mm512_mask_blend_ps((__mmask16)0xCCCC, _mm512_permutex2var_ps(y[0], io, y[1]),
                                            _mm512_permutex2var_ps(y[2], io, y[3]));
            if (w == 8) { /* the low half to plane 2 p, the high half to plane 2 p + 1 */
                float *r0 = plane + (size_t)(o / 2) * 2 * ps + (size_t)8 * (4 * (o % 2) + a), *r1 = r0 + ps - 8;
                e = _mm512_add_ps(e, accumulate ? _mm512_mask_loadu_ps(_mm512_maskz_loadu_ps(0x00FF, r0), 0xFF00, r1)
                                                : bv);
                _mm512_mask_storeu_ps(r0, 0x00FF, e);
                _mm512_mask_storeu_ps(r1, 0xFF00, e);
            } else {
                float *row = plane + (size_t)(4 * (ty0 + o / H) + a) * w + 16 * (o % H);
                _mm512_storeu_ps(row, _mm512_add_ps(e, accumulate ? _mm512_loadu_ps(row) : bv));
            }
        }
    }
}

/* o[0], o[s], ... = G (g0, g1, g2): n = 4, F(2x2,3x3); n = 6, F(4x4,3x3) */
static inline __attribute__((always_inline)) PRG__AVX512_TARGET void
prg__wino_g_v(__m512 *o, size_t s, int n, __m512 g0, __m512 g1, __m512 g2) {
    if (n == 4) {
        const __m512 half = _mm512_set1_ps(0.5f);
        o[0] = g0;
        o[s] = _mm512_mul_ps(half, _mm512_add_ps(_mm512_add_ps(g0, g1), g2));
        o[2 * s] = _mm512_mul_ps(half, _mm512_add_ps(_mm512_sub_ps(g0, g1), g2));
        o[3 * s] = g2;
    } else {
        const __m512 two = _mm512_set1_ps(2.0f), g4 = _mm512_mul_ps(_mm512_set1_ps(4.0f), g2);
        const __m512 m6 = _mm512_set1_ps(-1.0f / 6), q24 = _mm512_set1_ps(1.0f / 24);
        o[0] = _mm512_mul_ps(g0, _mm512_set1_ps(1.0f / 4));
        o[s] = _mm512_mul_ps(_mm512_add_ps(_mm512_add_ps(g0, g1), g2), m6);
        o[2 * s] = _mm512_mul_ps(_mm512_add_ps(_mm512_sub_ps(g0, g1), g2), m6);
        o[3 * s] = _mm512_mul_ps(_mm512_add_ps(_mm512_fmadd_ps(two, g1, g0), g4), q24);
        o[4 * s] = _mm512_mul_ps(_mm512_add_ps(_mm512_fnmadd_ps(two, g1, g0), g4), q24);
        o[5 * s] = g2;
    }
}

/* prg__wino_weights with the mr <= 16 output channels of a panel in the
   lanes (gathered; os * mr < 2^31 here) */
PRG__AVX512_TARGET
static void prg__wino_weights_avx512(float *u, const float *gw, size_t os, size_t is, int flip, int nxi, int co,
                                     int ci, int copad, int mr, int kcb, int p0, int p1) {
    static const int lanes[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    const __m512 z = _mm512_setzero_ps();
    const int n = nxi == 16 ? 4 : 6;
    const __m512i idx = _mm512_mullo_epi32(_mm512_loadu_si512((const void *)lanes), _mm512_set1_epi32((int)os));
    __mmask16 all;
    int p, i, xi, r, c;
    if (mr > 16) {
        prg__wino_weights(u, gw, os, is, flip, nxi, co, ci, copad, mr, kcb, p0, p1);
        return;
    }
    all = (__mmask16)((1u << mr) - 1u);
    for (p = p0; p < p1; p++) {
        int o0 = p * mr, rows = co - o0 < mr ? co - o0 : mr;
        __mmask16 mk = (__mmask16)((1u << rows) - 1u);
        for (i = 0; i < ci; i++) {
            int pc = i - i % kcb, kc = ci - pc < kcb ? ci - pc : kcb;
            const float *gp = gw + o0 * os + i * is;
            float *dst = u + (size_t)pc * copad + (size_t)o0 * kc + (size_t)(i - pc) * mr;
            __m512 g[3][3], t[6][3], v[36];
            for (r = 0; r < 3; r++)
                for (c = 0; c < 3; c++)
                    g[r][c] = _mm512_mask_i32gather_ps(z, mk, idx, gp + (flip ? 8 - 3 * r - c : 3 * r + c), 4);
            for (c = 0; c < 3; c++) prg__wino_g_v(&t[0][c], 3, n, g[0][c], g[1][c], g[2][c]); /* G g */
            for (r = 0; r < n; r++) prg__wino_g_v(v + n * r, 1, n, t[r][0], t[r][1], t[r][2]);  /* ... G^T */
            for (xi = 0; xi < nxi; xi++) _mm512_mask_storeu_ps(dst + (size_t)xi * ci * copad, all, v[xi]);
        }
    }
}

/* c[i*ldc + j] += sum over p < k of a[i*lda + p] b[j*ldb + p], i < m, j < n:
   the weight gradient's products, whose operands are both long rows (the
   tiles); 4 x 4 dot products at a time along the rows, no packing, the 16
   sums reduced together at the end. */
PRG__AVX512_TARGET
static void prg__wino_nt_avx512(int m, int n, int k, const float *a, size_t lda, const float *b, size_t ldb,
                                float *c, int ldc) {
    const __mmask16 all = (__mmask16)0xFFFF;
    int i, j, p, r, s;
    float sum[16];
    for (i = 0; i < m; i += 4)
        for (j = 0; j < n; j += 4) {
            const float *a0p, *a1p, *a2p, *a3p, *b0p, *b1p, *b2p, *b3p;
            __m512 c00 = _mm512_setzero_ps(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00,
                   c12 = c00, c13 = c00, c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00,
                   c31 = c00, c32 = c00, c33 = c00, t[8], u[4], w0, w1;
            /* rows past the edge repeat the last one (their sums are dropped) */
#define PRG__WINO_ROW(x, base, ld, i0, lim, e) x = (base) + (size_t)((i0) + (e) < (lim) ? (i0) + (e) : (lim) - 1) * (ld)
            PRG__WINO_ROW(a0p, a, lda, i, m, 0); PRG__WINO_ROW(a1p, a, lda, i, m, 1);
            PRG__WINO_ROW(a2p, a, lda, i, m, 2); PRG__WINO_ROW(a3p, a, lda, i, m, 3);
            PRG__WINO_ROW(b0p, b, ldb, j, n, 0); PRG__WINO_ROW(b1p, b, ldb, j, n, 1);
            PRG__WINO_ROW(b2p, b, ldb, j, n, 2); PRG__WINO_ROW(b3p, b, ldb, j, n, 3);
#undef PRG__WINO_ROW
            for (p = 0; p < k; p += 16) {
                __mmask16 mk = (__mmask16)(k - p >= 16 ? 0xFFFF : (1u << (k - p)) - 1u);
                __m512 a0 = _mm512_maskz_loadu_ps(mk, a0p + p), a1 = _mm512_maskz_loadu_ps(mk, a1p + p);
                __m512 a2 = _mm512_maskz_loadu_ps(mk, a2p + p), a3 = _mm512_maskz_loadu_ps(mk, a3p + p);
                __m512 bv;
#define PRG__WINO_NT(bp, x0, x1, x2, x3)              \
                bv = _mm512_maskz_loadu_ps(mk, bp + p); \
                x0 = _mm512_fmadd_ps(a0, bv, x0);       \
                x1 = _mm512_fmadd_ps(a1, bv, x1);       \
                x2 = _mm512_fmadd_ps(a2, bv, x2);       \
                x3 = _mm512_fmadd_ps(a3, bv, x3);
                PRG__WINO_NT(b0p, c00, c10, c20, c30)
                PRG__WINO_NT(b1p, c01, c11, c21, c31)
                PRG__WINO_NT(b2p, c02, c12, c22, c32)
                PRG__WINO_NT(b3p, c03, c13, c23, c33)
#undef PRG__WINO_NT
            }
            /* sum[4r+s] = the lanes of crs: pairs, then quads within 128-bit lanes, then across
               (the maskz forms: see prg__avx512_transpose16) */
#define PRG__WINO_PAIR(x, y) \
    _mm512_add_ps(_mm512_maskz_unpacklo_ps(all, x, y), _mm512_maskz_unpackhi_ps(all, x, y))
            t[0] = PRG__WINO_PAIR(c00, c01); t[1] = PRG__WINO_PAIR(c02, c03);
            t[2] = PRG__WINO_PAIR(c10, c11); t[3] = PRG__WINO_PAIR(c12, c13);
            t[4] = PRG__WINO_PAIR(c20, c21); t[5] = PRG__WINO_PAIR(c22, c23);
            t[6] = PRG__WINO_PAIR(c30, c31); t[7] = PRG__WINO_PAIR(c32, c33);
#undef PRG__WINO_PAIR
            for (r = 0; r < 4; r++)
                u[r] = _mm512_add_ps(_mm512_maskz_shuffle_ps(all, t[2 * r], t[2 * r + 1], 0x44),
                                     _mm512_maskz_shuffle_ps(all, t[2 * r], t[2 * r + 1], 0xEE));
            w0 = _mm512_add_ps(_mm512_maskz_shuffle_f32x4(all, u[0], u[1], 0x88),
                               _mm512_maskz_shuffle_f32x4(all, u[0], u[1], 0xDD));
            w1 = _mm512_add_ps(_mm512_maskz_shuffle_f32x4(all, u[2], u[3], 0x88),
                               _mm512_maskz_shuffle_f32x4(all, u[2], u[3], 0xDD));
            _mm512_storeu_ps(sum, _mm512_add_ps(_mm512_maskz_shuffle_f32x4(all, w0, w1, 0x88),
                                                _mm512_maskz_shuffle_f32x4(all, w0, w1, 0xDD)));
            for (r = 0; r < 4 && i + r < m; r++)
                for (s = 0; s < 4 && j + s < n; s++) c[(size_t)(i + r) * ldc + j + s] += sum[4 * r + s];
        }
}
#endif

/* ==== The CPU table ========================================================
   Every kernel the engine dispatches on the CPU, in one table per
   instruction set: the GEMM micro-kernel with its packers and blocking, the
   implicit column packer, the vector helpers and direct convolution
   kernels, the Winograd transforms, and flags that say which of the
   algorithms they serve pay on it.  The table is decided once (cpuid) and
   prg_gemm_set_kernel swaps the whole of it.  Every vector kernel has a
   scalar twin of the same algorithm in the scalar table (the same bits for
   the direct and Winograd kernels and for SiLU, whose exp is the AVX-512
   kernels' polynomial there; the softmax sums its row in another order), so
   the tests run each path with the scalar kernels on any machine.
   PRG_NO_SIMD builds the scalar table alone. */

#define PRG__VEC_SCALAR_DIRECT prg__dw3_scalar, prg__conv3_scalar, prg__dw3p_scalar, 0
#define PRG__WINO_SCALAR                                                                                  \
    {prg__wino_in_row, prg__wino_dy_row, prg__wino_out_row, prg__wino_weights, prg__wino_nt_scalar,       \
     prg__wino_in_plane8, prg__wino_dy_plane8, prg__wino_out_plane8, prg__wino_in_rows16,                 \
     prg__wino_dy_rows16, prg__wino_out_rows16, prg__wino4_in_ref, prg__wino4_dy_ref,                    \
     prg__wino4_dw_inverse, prg__wino4_out_ref, 0, 0, 0, 0}

static const prg__cpu prg__cpus[] = {
#ifdef PRG__X86
    {"avx512", PRG__NEED_AVX512,
     {"avx512", PRG__AVX512_MR, PRG__AVX512_NR, 504, 256, 1, prg__kernel_avx512, prg__pack_a_avx512,
      prg__pack_b_avx512},
     prg__implicit_cols_pack_avx512,
     {prg__softmax_avx512, prg__silu_fwd_avx512, prg__silu_bwd_avx512, prg__dots_avx512, prg__dw3_avx512,
      prg__conv3_avx512, prg__dw3p_avx512, 1},
     {prg__wino_in_row_avx512, prg__wino_dy_row_avx512, prg__wino_out_row_avx512, prg__wino_weights_avx512,
      prg__wino_nt_avx512, prg__wino_in_plane8_avx512, prg__wino_dy_plane8_avx512, prg__wino_out_plane8_avx512,
      prg__wino_in_rows16_avx512, prg__wino_dy_rows16_avx512, prg__wino_out_rows16_avx512, prg__wino4_in_avx512,
      prg__wino4_dy_avx512, prg__wino4_dw_inverse_avx512, prg__wino4_out_avx512, 1, 1, 1, 1}},
    {"avx2", PRG__NEED_AVX2,
     {"avx2", PRG__AVX2_MR, PRG__AVX2_NR, 288, 256, 0, prg__kernel_avx2, prg__pack_a, prg__pack_b},
     prg__implicit_cols_pack,
     {prg__softmax_avx2, prg__silu_fwd_avx2, prg__silu_bwd_avx2, prg__dots_avx2, PRG__VEC_SCALAR_DIRECT},
     PRG__WINO_SCALAR},
#endif
#ifdef PRG__NEON
    {"neon", 0,
     {"neon", PRG__NEON_MR, PRG__NEON_NR, 96, 256, 0, prg__kernel_neon, prg__pack_a, prg__pack_b},
     prg__implicit_cols_pack,
     {prg__softmax_scalar, prg__silu_fwd_scalar, prg__silu_bwd_scalar, prg__row_dots, PRG__VEC_SCALAR_DIRECT},
     PRG__WINO_SCALAR},
#endif
    {"scalar", 0,
     {"scalar", PRG__SCALAR_MR, PRG__SCALAR_NR, 64, 256, 0, prg__kernel_scalar, prg__pack_a, prg__pack_b},
     prg__implicit_cols_pack,
     {prg__softmax_scalar, prg__silu_fwd_scalar, prg__silu_bwd_scalar, prg__row_dots, PRG__VEC_SCALAR_DIRECT},
     PRG__WINO_SCALAR},
};
#undef PRG__VEC_SCALAR_DIRECT
#undef PRG__WINO_SCALAR
#define PRG__NCPUS ((int)(sizeof prg__cpus / sizeof prg__cpus[0]))

static int prg__cpu_has(const prg__cpu *t) {
#ifdef PRG__X86
    if (t->need & PRG__NEED_AVX512) return __builtin_cpu_supports("avx512f");
    if (t->need & PRG__NEED_AVX2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    return t->need == 0;
}

static const prg__cpu *prg__cpu_chosen = NULL;

/* The table in use: the first this CPU can run, unless one was forced. */
static const prg__cpu *prg__cpu_get(void) {
    const prg__cpu *t = prg__cpu_chosen;
    int i;
    if (t) return t;
    for (i = 0; i < PRG__NCPUS - 1 && !prg__cpu_has(&prg__cpus[i]); i++) {}
    prg__cpu_chosen = &prg__cpus[i];
    return prg__cpu_chosen;
}

static const prg__gemm_impl *prg__gemm_select(void) { return &prg__cpu_get()->gemm; }
static prg__vec_ops prg__vec_select(void) { return prg__cpu_get()->vec; }
static prg__wino_fns prg__wino_select(void) { return prg__cpu_get()->wino; }

const char *prg_gemm_kernel_name(void) { return prg__cpu_get()->name; }

prg_result prg_gemm_set_kernel(const char *name) {
    int i;
    if (!name || !strcmp(name, "auto")) {
        prg__cpu_chosen = NULL;
        return PRG_OK;
    }
    for (i = 0; i < PRG__NCPUS; i++) {
        if (strcmp(prg__cpus[i].name, name) != 0) continue;
        if (!prg__cpu_has(&prg__cpus[i]))
            return prg__fail(PRG_ERR_UNSUPPORTED, "gemm kernel '%s': this CPU lacks it", name);
        prg__cpu_chosen = &prg__cpus[i];
        return PRG_OK;
    }
    return prg__fail(PRG_ERR_UNSUPPORTED, "gemm kernel '%s' is not in this build", name);
}

#ifdef __cplusplus
}
#endif

#endif /* PRG_IMPLEMENTATION_DONE */
#endif /* PRG_IMPLEMENTATION */

/*
MIT License

Copyright (c) 2026 the prg.h authors

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in
all copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
*/
