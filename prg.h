/* prg.h - Pretrained Reversible Generation in one C header.            v0.1.0

   Train a flow-matching U-Net generator on unlabeled images, run its ODE
   backwards (data -> noise) to turn every image into features, and fine-tune
   that reversed generator with a small head into a classifier.  Plain C99,
   libc + libm, optional pthreads; also compiles as C++11.

   USE
     In exactly one .c file of your program:

         #define PRG_IMPLEMENTATION
         #include "prg.h"

     Everywhere else just #include "prg.h".  Link with -lm (and -pthread
     unless PRG_NO_THREADS is defined).

   QUICK START (this is examples/quickstart.c, compiled by `make test`)

         #define PRG_IMPLEMENTATION
         #include "prg.h"
         #include <stdio.h>

         int main(void) {
             float a[2 * 3] = {1, 2, 3, 4, 5, 6};          // 2 x 3
             float b[3 * 2] = {1, 0, 0, 1, 1, 1};          // 3 x 2
             float c[2 * 2];
             prg_set_num_threads(0);                       // all online CPUs
             prg_sgemm(0, 0, 2, 2, 3, 1.0f, a, 3, b, 2, 0.0f, c, 2);
             printf("%s kernel: %g %g / %g %g\n", prg_gemm_kernel_name(),
                    c[0], c[1], c[2], c[3]);               // 4 5 / 10 11
             return 0;
         }

   CONFIGURATION (define before including, in the implementation file)
     PRG_NO_THREADS        build without pthreads; everything runs serially
     PRG_MAX_THREADS       upper bound on the pool size (default 256)
     PRG_MALLOC(n)         allocator; PRG_FREE(p) must be defined together
     PRG_ASSERT(x)         programmer-error check (default: assert from <assert.h>)

   ERRORS
     Run-time failures return a prg_result (PRG_OK == 0, failures < 0);
     prg_last_error() returns a message for the calling thread that says what
     was wrong.  The library never prints and never exits.

   THREADS
     One persistent pool (workers sleep on a condition variable between jobs).
     prg_set_num_threads(n) sets its size, 0 = all online CPUs; the
     environment variable PRG_NUM_THREADS sets the initial size.  Work is
     split so that results are bit-identical for any thread count.

   SIMD
     prg_sgemm picks its micro-kernel at run time on x86-64 (AVX-512, AVX2+FMA
     or portable C) from cpuid, so a plain `cc -O2` build uses AVX-512 where
     the CPU has it.  aarch64 uses NEON.  prg_gemm_set_kernel() forces one.

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

/* Log callback for optional progress messages (the library itself never
   prints).  level: 0 info, 1 warning. */
typedef void (*prg_log_fn)(void *user, int level, const char *msg);
void prg_set_log(prg_log_fn fn, void *user);

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
   multiples of align (except n itself). */
void prg_split_range(size_t n, size_t align, int ith, int nth, size_t *lo, size_t *hi);

/* >>gemm ================================================================ */

/* C = alpha * op(A) * op(B) + beta * C, row-major, exactly
   cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, ...).
   op(A) is m x k, op(B) is k x n, C is m x n.  beta == 0 overwrites C
   without reading it. */
void prg_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha,
               const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);
/* The same product computed plainly with double accumulation (for tests). */
void prg_sgemm_ref(int trans_a, int trans_b, int m, int n, int k, float alpha,
                   const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);

/* Micro-kernel in use: "avx512", "avx2", "neon" or "scalar". */
const char *prg_gemm_kernel_name(void);
/* Forces a kernel by name ("auto" restores the run-time choice).  Returns
   PRG_ERR_UNSUPPORTED when this CPU or build lacks it. */
prg_result prg_gemm_set_kernel(const char *name);

/* >>layers ============================================================== */
/* Forward/backward pairs over float * (NCHW, float32).

   forward(outputs..., inputs..., params..., sizes..., workspace);
   backward(d_inputs..., d_params..., d_outputs, saved/inputs..., params...,
   sizes..., workspace).  Backward ACCUMULATES (+=) into every d_ pointer and
   any d_ pointer may be NULL to skip that gradient.  The kernels run on the
   pool and give the same bits for any thread count.  Every kernel has a
   `_ref` twin with the same signature: plain serial loops with double
   accumulation, for tests.  Workspaces are caller-owned scratch of the size
   the matching *_workspace() function returns; nothing here allocates. */

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
   dlogits (may be NULL) is SET (not accumulated) to d loss / d logits. */
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

/* The U-Net of METHOD.md B (improved-diffusion UNetModel as GenerativeRL's
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
/* Bytes of activations + backward scratch held for the largest batch so far. */
size_t     prg_unet_activation_bytes(const prg_unet *net);

/* >>flow ================================================================ */
/* Flow-matching losses (ICFM, OT-CFM, GVP) and samplers noise -> data. */

/* >>prg ================================================================= */
/* The reverse-ODE encoder and the classifier (U-Net + head). */

/* >>optim =============================================================== */
/* Adam, AdamW, warmup + cosine schedule, EMA. */

/* >>io ================================================================== */
/* Files: safetensors, .npy/.npz (with inflate), IDX, CIFAR binary, PNG, PPM. */

/* >>data ================================================================ */
/* In-memory datasets, augmentation, normalisation, a prefetching iterator. */


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
#endif
#ifndef PRG_ASSERT
#include <assert.h>
#define PRG_ASSERT(x) assert(x)
#endif
#ifndef PRG_MAX_THREADS
#define PRG_MAX_THREADS 256
#endif

#if defined(__cplusplus)
#define PRG_THREAD_LOCAL thread_local
#elif defined(_MSC_VER)
#define PRG_THREAD_LOCAL __declspec(thread)
#else
#define PRG_THREAD_LOCAL __thread
#endif

#if defined(__GNUC__) || defined(__clang__)
#define PRG_RESTRICT __restrict__
#define PRG_UNUSED __attribute__((unused))
#else
#define PRG_RESTRICT
#define PRG_UNUSED
#endif

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define PRG__X86 1
#include <immintrin.h>
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
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
   read `return prg__fail(PRG_ERR_IO, "cannot open %s", path);`. */
#if defined(__GNUC__) || defined(__clang__)
__attribute__((format(printf, 2, 3)))
#endif
static prg_result prg__fail(prg_result r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prg__error_msg, sizeof prg__error_msg, fmt, ap);
    va_end(ap);
    return r;
}

static prg_log_fn prg__log_fn = NULL;
static void *prg__log_user = NULL;

void prg_set_log(prg_log_fn fn, void *user) {
    prg__log_fn = fn;
    prg__log_user = user;
}

#if defined(__GNUC__) || defined(__clang__)
__attribute__((format(printf, 2, 3)))
#endif
static PRG_UNUSED void prg__log(int level, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    if (!prg__log_fn) return;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    prg__log_fn(prg__log_user, level, buf);
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

void *prg_alloc(size_t bytes) {
    /* Over-allocate and keep the raw pointer just below the aligned block. */
    unsigned char *raw, *p;
    if (bytes > SIZE_MAX - 64 - sizeof(void *)) return NULL;
    raw = (unsigned char *)PRG_MALLOC(bytes + 64 + sizeof(void *));
    if (!raw) return NULL;
    p = (unsigned char *)(((uintptr_t)(raw + sizeof(void *)) + 63) & ~(uintptr_t)63);
    memcpy(p - sizeof(void *), &raw, sizeof(void *));
    return p;
}

void prg_free(void *p) {
    void *raw;
    if (!p) return;
    memcpy(&raw, (unsigned char *)p - sizeof(void *), sizeof(void *));
    PRG_FREE(raw);
}

/* A per-thread scratch buffer that only grows (used by the GEMM packing). */
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
    int pending;               /* workers still inside the current job */
    int quit;
    prg_task_fn fn;
    void *ctx;
    int nth;
} prg__pool;

static prg__pool prg__the_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                                  PTHREAD_COND_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
                                  {0}, 0, 0, 0, 0, 0, NULL, NULL, 0};
static PRG_THREAD_LOCAL int prg__in_task = 0;

/* A worker's index and the job generation current when it was started (it
   must not take that job, which was run before it existed). */
typedef struct prg__worker_arg { int ith; unsigned long generation; } prg__worker_arg;
static prg__worker_arg prg__worker_args[PRG_MAX_THREADS];

static void *prg__worker_main(void *arg) {
    prg__pool *p = &prg__the_pool;
    int ith = ((prg__worker_arg *)arg)->ith;
    unsigned long seen = ((prg__worker_arg *)arg)->generation;
    prg__in_task = 1;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (p->generation == seen && !p->quit) pthread_cond_wait(&p->wake, &p->lock);
        if (p->quit) break;
        seen = p->generation;
        if (ith < p->nth) {
            prg_task_fn fn = p->fn;
            void *ctx = p->ctx;
            int nth = p->nth;
            pthread_mutex_unlock(&p->lock);
            fn(ctx, ith, nth);
            pthread_mutex_lock(&p->lock);
            if (--p->pending == 0) pthread_cond_signal(&p->done);
        }
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* Stops and joins every worker; called with `use` held. */
static void prg__pool_stop(prg__pool *p) {
    int i, n;
    pthread_mutex_lock(&p->lock);
    p->quit = 1;
    n = p->nworkers;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (i = 0; i < n; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_lock(&p->lock);
    p->nworkers = 0;
    p->quit = 0;
    pthread_mutex_unlock(&p->lock);
}

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
    pthread_mutex_lock(&p->lock);
    p->fn = fn;
    p->ctx = ctx;
    p->nth = nth;
    p->pending = nth - 1;
    p->generation++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);

    prg__in_task = 1;
    fn(ctx, 0, nth);
    prg__in_task = 0;

    pthread_mutex_lock(&p->lock);
    while (p->pending > 0) pthread_cond_wait(&p->done, &p->lock);
    pthread_mutex_unlock(&p->lock);
    pthread_mutex_unlock(&p->use);
}

#endif /* PRG_NO_THREADS */

/* >>gemm ================================================================ */

/* Goto/BLIS structure.  op(B) is packed into a KC x NC block of NR-wide
   column panels, op(A) into an MC x KC block of MR-tall row panels; the
   micro-kernel multiplies one MR x KC panel of A with one KC x NR panel of B
   into an MR x NR tile of C.  Panels are zero-padded at the edges, so every
   element of C goes through the same arithmetic whatever its position: the
   result does not depend on how threads split C. */

typedef void (*prg__gemm_kernel)(int kc, const float *PRG_RESTRICT a, const float *PRG_RESTRICT b,
                                 float *PRG_RESTRICT c, int ldc, int mr, int nr, float alpha,
                                 float beta);

typedef struct prg__gemm_impl {
    const char *name;
    int mr, nr;          /* register tile */
    int mc, kc, nc;      /* cache blocks; mc % mr == 0, nc % nr == 0 */
    prg__gemm_kernel kernel;
} prg__gemm_impl;

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
                               float beta) {
    float acc[PRG__SCALAR_MR * PRG__SCALAR_NR];
    int p, i, j;
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

#ifdef PRG__X86
/* AVX-512: 14 x 32 tile, 28 accumulators + 2 B vectors + 1 broadcast. */
#define PRG__AVX512_MR 14
#define PRG__AVX512_NR 32
__attribute__((target("avx512f,fma")))
static void prg__kernel_avx512(int kc, const float *PRG_RESTRICT a, const float *PRG_RESTRICT b,
                               float *PRG_RESTRICT c, int ldc, int mr, int nr, float alpha,
                               float beta) {
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
           c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00,
           c61 = c00, c70 = c00, c71 = c00, c80 = c00, c81 = c00, c90 = c00, c91 = c00,
           cA0 = c00, cA1 = c00, cB0 = c00, cB1 = c00, cC0 = c00, cC1 = c00, cD0 = c00,
           cD1 = c00;
    int p;
    for (p = 0; p < kc; p++) {
        __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16), t;
#define PRG__FMA2(r, x0, x1)                   \
    t = _mm512_set1_ps(a[r]);                  \
    x0 = _mm512_fmadd_ps(t, b0, x0);           \
    x1 = _mm512_fmadd_ps(t, b1, x1);
        PRG__FMA2(0, c00, c01) PRG__FMA2(1, c10, c11) PRG__FMA2(2, c20, c21)
        PRG__FMA2(3, c30, c31) PRG__FMA2(4, c40, c41) PRG__FMA2(5, c50, c51)
        PRG__FMA2(6, c60, c61) PRG__FMA2(7, c70, c71) PRG__FMA2(8, c80, c81)
        PRG__FMA2(9, c90, c91) PRG__FMA2(10, cA0, cA1) PRG__FMA2(11, cB0, cB1)
        PRG__FMA2(12, cC0, cC1) PRG__FMA2(13, cD0, cD1)
#undef PRG__FMA2
        a += PRG__AVX512_MR;
        b += PRG__AVX512_NR;
    }
    {
        __m512 acc[PRG__AVX512_MR][2];
        __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
        int i;
        acc[0][0] = c00; acc[0][1] = c01; acc[1][0] = c10; acc[1][1] = c11;
        acc[2][0] = c20; acc[2][1] = c21; acc[3][0] = c30; acc[3][1] = c31;
        acc[4][0] = c40; acc[4][1] = c41; acc[5][0] = c50; acc[5][1] = c51;
        acc[6][0] = c60; acc[6][1] = c61; acc[7][0] = c70; acc[7][1] = c71;
        acc[8][0] = c80; acc[8][1] = c81; acc[9][0] = c90; acc[9][1] = c91;
        acc[10][0] = cA0; acc[10][1] = cA1; acc[11][0] = cB0; acc[11][1] = cB1;
        acc[12][0] = cC0; acc[12][1] = cC1; acc[13][0] = cD0; acc[13][1] = cD1;
        if (mr == PRG__AVX512_MR && nr == PRG__AVX512_NR) {
            for (i = 0; i < PRG__AVX512_MR; i++) {
                float *ci = c + (size_t)i * ldc;
                __m512 r0 = _mm512_mul_ps(va, acc[i][0]), r1 = _mm512_mul_ps(va, acc[i][1]);
                if (beta != 0.0f) {
                    r0 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci), r0);
                    r1 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci + 16), r1);
                }
                _mm512_storeu_ps(ci, r0);
                _mm512_storeu_ps(ci + 16, r1);
            }
        } else {
            /* Edge tile: masked loads and stores, same arithmetic. */
            __mmask16 m0 = (__mmask16)(nr >= 16 ? 0xFFFF : (1u << nr) - 1);
            __mmask16 m1 = (__mmask16)(nr >= 32 ? 0xFFFF : nr > 16 ? (1u << (nr - 16)) - 1 : 0);
            for (i = 0; i < mr; i++) {
                float *ci = c + (size_t)i * ldc;
                __m512 r0 = _mm512_mul_ps(va, acc[i][0]), r1 = _mm512_mul_ps(va, acc[i][1]);
                if (beta != 0.0f) {
                    r0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, ci), r0);
                    r1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, ci + 16), r1);
                }
                _mm512_mask_storeu_ps(ci, m0, r0);
                _mm512_mask_storeu_ps(ci + 16, m1, r1);
            }
        }
    }
}

/* AVX2 + FMA: 6 x 16 tile, 12 accumulators. */
#define PRG__AVX2_MR 6
#define PRG__AVX2_NR 16
__attribute__((target("avx2,fma")))
static void prg__kernel_avx2(int kc, const float *PRG_RESTRICT a, const float *PRG_RESTRICT b,
                             float *PRG_RESTRICT c, int ldc, int mr, int nr, float alpha,
                             float beta) {
    __m256 acc[PRG__AVX2_MR][2];
    int p, i;
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
                             float beta) {
    float32x4_t acc[PRG__NEON_MR][3];
    int p, i;
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

static const prg__gemm_impl prg__gemm_impls[] = {
#ifdef PRG__X86
    {"avx512", PRG__AVX512_MR, PRG__AVX512_NR, 112, 384, 2048, prg__kernel_avx512},
    {"avx2", PRG__AVX2_MR, PRG__AVX2_NR, 96, 256, 2048, prg__kernel_avx2},
#endif
#ifdef PRG__NEON
    {"neon", PRG__NEON_MR, PRG__NEON_NR, 96, 256, 1536, prg__kernel_neon},
#endif
    {"scalar", PRG__SCALAR_MR, PRG__SCALAR_NR, 64, 256, 1024, prg__kernel_scalar},
};
#define PRG__GEMM_NIMPL ((int)(sizeof prg__gemm_impls / sizeof prg__gemm_impls[0]))

static int prg__gemm_cpu_has(const char *name) {
#ifdef PRG__X86
    if (!strcmp(name, "avx512")) return __builtin_cpu_supports("avx512f");
    if (!strcmp(name, "avx2")) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    (void)name;
    return 1;
}

static const prg__gemm_impl *prg__gemm_chosen = NULL;

static const prg__gemm_impl *prg__gemm_select(void) {
    const prg__gemm_impl *g = prg__gemm_chosen;
    int i;
    if (g) return g;
    for (i = 0; i < PRG__GEMM_NIMPL; i++)
        if (prg__gemm_cpu_has(prg__gemm_impls[i].name)) break;
    prg__gemm_chosen = &prg__gemm_impls[i < PRG__GEMM_NIMPL ? i : PRG__GEMM_NIMPL - 1];
    return prg__gemm_chosen;
}

const char *prg_gemm_kernel_name(void) { return prg__gemm_select()->name; }

prg_result prg_gemm_set_kernel(const char *name) {
    int i;
    if (!name || !strcmp(name, "auto")) {
        prg__gemm_chosen = NULL;
        return PRG_OK;
    }
    for (i = 0; i < PRG__GEMM_NIMPL; i++) {
        if (strcmp(prg__gemm_impls[i].name, name) != 0) continue;
        if (!prg__gemm_cpu_has(name))
            return prg__fail(PRG_ERR_UNSUPPORTED, "gemm kernel '%s': this CPU lacks it", name);
        prg__gemm_chosen = &prg__gemm_impls[i];
        return PRG_OK;
    }
    return prg__fail(PRG_ERR_UNSUPPORTED, "gemm kernel '%s' is not in this build", name);
}

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

typedef struct prg__gemm_job {
    const prg__gemm_impl *g;
    int ta, tb, m, n, k;
    float alpha, beta;
    const float *a, *b;
    int lda, ldb, ldc;
    float *c;
    int split_m; /* threads split rows of C (else columns) */
} prg__gemm_job;

static PRG_THREAD_LOCAL prg__scratch prg__gemm_pack_a, prg__gemm_pack_b;

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

/* The serial blocked product on the block [m0,m1) x [n0,n1) of C. */
static void prg__gemm_block(const prg__gemm_job *j, int m0, int m1, int n0, int n1) {
    const prg__gemm_impl *g = j->g;
    int MR = g->mr, NR = g->nr, jc, pc, ic, jr, ir;
    float *pa = prg__scratch_get(&prg__gemm_pack_a, (size_t)g->mc * g->kc);
    float *pb = prg__scratch_get(&prg__gemm_pack_b, (size_t)g->kc * g->nc);
    if (!pa || !pb) { /* no memory for the packing buffers: unpacked loops */
        prg__gemm_small(j, m0, m1, n0, n1);
        return;
    }
    for (jc = n0; jc < n1; jc += g->nc) {
        int nc = n1 - jc < g->nc ? n1 - jc : g->nc;
        for (pc = 0; pc < j->k; pc += g->kc) {
            int kc = j->k - pc < g->kc ? j->k - pc : g->kc;
            float beta = pc == 0 ? j->beta : 1.0f;
            prg__pack_b(pb, j->b, j->ldb, j->tb, n1, jc, nc, pc, kc, NR);
            for (ic = m0; ic < m1; ic += g->mc) {
                int mc = m1 - ic < g->mc ? m1 - ic : g->mc;
                prg__pack_a(pa, j->a, j->lda, j->ta, m1, ic, mc, pc, kc, MR);
                for (jr = 0; jr < nc; jr += NR) {
                    int nr = nc - jr < NR ? nc - jr : NR;
                    const float *bp = pb + (size_t)jr * kc;
                    for (ir = 0; ir < mc; ir += MR) {
                        int mr = mc - ir < MR ? mc - ir : MR;
                        g->kernel(kc, pa + (size_t)ir * kc, bp,
                                  j->c + (size_t)(ic + ir) * j->ldc + jc + jr, j->ldc, mr, nr,
                                  j->alpha, beta);
                    }
                }
            }
        }
    }
}

static void prg__gemm_task(void *ctx, int ith, int nth) {
    const prg__gemm_job *j = (const prg__gemm_job *)ctx;
    size_t lo, hi;
    if (j->split_m) {
        prg_split_range((size_t)j->m, (size_t)j->g->mr, ith, nth, &lo, &hi);
        if (lo < hi) prg__gemm_block(j, (int)lo, (int)hi, 0, j->n);
    } else {
        prg_split_range((size_t)j->n, (size_t)j->g->nr, ith, nth, &lo, &hi);
        if (lo < hi) prg__gemm_block(j, 0, j->m, (int)lo, (int)hi);
    }
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

void prg_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha,
               const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc) {
    prg__gemm_job j;
    if (m <= 0 || n <= 0) return;
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

/* >>layers ============================================================== */
/* Parallel loops over [0, n): each index is handled by exactly one thread
   and the work per index never depends on the split, so the bits do not
   depend on the thread count.  Loops with little work (n * cost below about
   32k) run on the caller. */
typedef void (*prg__range_fn)(void *ctx, size_t lo, size_t hi);
typedef struct prg__range_job { prg__range_fn fn; void *ctx; size_t n; } prg__range_job;

static void prg__range_task(void *ctx, int ith, int nth) {
    const prg__range_job *j = (const prg__range_job *)ctx;
    size_t lo, hi;
    prg_split_range(j->n, 1, ith, nth, &lo, &hi);
    if (lo < hi) j->fn(j->ctx, lo, hi);
}

static void prg__parallel_for(size_t n, double cost, prg__range_fn fn, void *ctx) {
    prg__range_job j;
    if (n == 0) return;
    if ((double)n * cost < 32768.0) {
        fn(ctx, 0, n);
        return;
    }
    j.fn = fn;
    j.ctx = ctx;
    j.n = n;
    prg_parallel(prg__range_task, &j);
}

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
   exp(x - shift) for the softmax, SiLU forward/backward and the row sums
   of the norms, vectorised on
   x86 (Cephes-style polynomial, about 2 ulp) following the GEMM kernel in
   use: prg_gemm_set_kernel("scalar") gives libm's expf here too.  Every
   element goes through the same instructions wherever it sits in the array
   (tails are masked or padded), so splitting work across threads never
   changes a bit. */
typedef struct prg__vec_ops {
    void (*exp_shift)(float *y, const float *x, float shift, size_t n); /* y = exp(x - shift) */
    void (*silu_fwd)(float *y, const float *x, size_t n);
    void (*silu_bwd)(float *dx, const float *dy, const float *x, size_t n); /* dx += */
    void (*dots)(const float *g, const float *x, size_t n, double *sg, double *sgx);
} prg__vec_ops;

static void prg__exp_shift_scalar(float *y, const float *x, float shift, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) y[i] = expf(x[i] - shift);
}
static void prg__silu_fwd_scalar(float *y, const float *x, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) y[i] = x[i] / (1.0f + expf(-x[i]));
}
/* d silu = s (1 + x (1 - s)), s = sigmoid(x) = 1 / (1 + e), e = exp(-x);
   1 - s is taken as e s for x >= 0, where 1 - s would cancel. */
static void prg__silu_bwd_scalar(float *dx, const float *dy, const float *x, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) {
        float e = expf(-x[i]), s = 1.0f / (1.0f + e), oms = x[i] >= 0.0f ? e * s : 1.0f - s;
        dx[i] += dy[i] * (s * (1.0f + x[i] * oms));
    }
}

#ifdef PRG__X86
/* exp(v) = 2^k p(r), k = round(v log2 e), r = v - k ln 2 (in two parts) */
#define PRG__EXP_POLY(P, FMADD, MUL, ADD, SET1, r)                                   \
    P = SET1(1.9875691500e-4f);                                                      \
    P = FMADD(P, r, SET1(1.3981999507e-3f));                                         \
    P = FMADD(P, r, SET1(8.3334519073e-3f));                                         \
    P = FMADD(P, r, SET1(4.1665795894e-2f));                                         \
    P = FMADD(P, r, SET1(1.6666665459e-1f));                                         \
    P = FMADD(P, r, SET1(5.0000001201e-1f));                                         \
    P = FMADD(P, MUL(r, r), r);                                                      \
    P = ADD(P, SET1(1.0f))

__attribute__((target("avx512f")))
static inline __m512 prg__exp16(__m512 v) {
    /* the masked forms (all lanes) avoid _mm512_undefined_ps, on which
       g++ 12 warns -Wmaybe-uninitialized */
    const __mmask16 all = (__mmask16)0xFFFF;
    __m512 k, r, p;
    /* clamp, keeping NaN (max/min return the second operand on NaN);
       scalef takes 2^k to 0 or inf correctly */
    v = _mm512_mask_max_ps(v, all, _mm512_set1_ps(-104.0f), v);
    v = _mm512_mask_min_ps(v, all, _mm512_set1_ps(89.0f), v);
    k = _mm512_mask_roundscale_ps(v, all, _mm512_mul_ps(v, _mm512_set1_ps(1.44269504088896341f)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), v);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), r);
    PRG__EXP_POLY(p, _mm512_fmadd_ps, _mm512_mul_ps, _mm512_add_ps, _mm512_set1_ps, r);
    return _mm512_mask_scalef_ps(p, all, p, k);
}

static __mmask16 prg__mask16(size_t left) {
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
}

__attribute__((target("avx512f")))
static void prg__exp_shift_avx512(float *y, const float *x, float shift, size_t n) {
    size_t i;
    for (i = 0; i < n; i += 16) {
        __mmask16 m = prg__mask16(n - i);
        __m512 v = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), _mm512_set1_ps(shift));
        _mm512_mask_storeu_ps(y + i, m, prg__exp16(v));
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
static void prg__silu_bwd_avx512(float *dx, const float *dy, const float *x, size_t n) {
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
        d = _mm512_add_ps(_mm512_maskz_loadu_ps(m, dx + i), _mm512_mul_ps(_mm512_maskz_loadu_ps(m, dy + i), d));
        _mm512_mask_storeu_ps(dx + i, m, d);
    }
}

__attribute__((target("avx2,fma")))
static inline __m256 prg__exp8(__m256 x) {
    __m256 k, r, p, v;
    __m256i e;
    /* computed on [-87, 88], where 2^k is a normal float; below 0, above inf
       (exp(-87) is about the smallest normal float); NaN stays NaN */
    __m256 lo = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_LT_OQ);
    __m256 hi = _mm256_cmp_ps(x, _mm256_set1_ps(88.0f), _CMP_GT_OQ);
    v = _mm256_min_ps(_mm256_set1_ps(88.0f), _mm256_max_ps(_mm256_set1_ps(-87.0f), x));
    k = _mm256_round_ps(_mm256_mul_ps(v, _mm256_set1_ps(1.44269504088896341f)),
                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), v);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
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
static void prg__silu_bwd_avx2(float *dx, const float *dy, const float *x, size_t n) {
    float tx[8] = {0, 0, 0, 0, 0, 0, 0, 0}, tg[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i, rest = n % 8, full = n - rest;
    for (i = 0; i < full; i += 8)
        _mm256_storeu_ps(dx + i, _mm256_add_ps(_mm256_loadu_ps(dx + i),
                                               prg__dsilu8(_mm256_loadu_ps(dy + i), _mm256_loadu_ps(x + i))));
    if (rest) {
        memcpy(tx, x + full, rest * sizeof(float));
        memcpy(tg, dy + full, rest * sizeof(float));
        _mm256_storeu_ps(tg, prg__dsilu8(_mm256_loadu_ps(tg), _mm256_loadu_ps(tx)));
        for (i = 0; i < rest; i++) dx[full + i] += tg[i];
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

static prg__vec_ops prg__vec_select(void) {
    static const prg__vec_ops scalar = {prg__exp_shift_scalar, prg__silu_fwd_scalar,
                                        prg__silu_bwd_scalar, prg__row_dots};
#ifdef PRG__X86
    static const prg__vec_ops avx512 = {prg__exp_shift_avx512, prg__silu_fwd_avx512,
                                        prg__silu_bwd_avx512, prg__dots_avx512};
    static const prg__vec_ops avx2 = {prg__exp_shift_avx2, prg__silu_fwd_avx2, prg__silu_bwd_avx2,
                                      prg__dots_avx2};
    const char *k = prg_gemm_kernel_name();
    if (!strcmp(k, "avx512")) return avx512;
    if (!strcmp(k, "avx2")) return avx2;
#endif
    return scalar;
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
   im2col + GEMM.  The batch is processed in chunks of nb samples whose
   columns sit side by side ([Ci*k*k][nb*Ho*Wo]), so that small feature maps
   still give GEMMs with about PRG__CONV_COLS columns.  A 1x1 stride-1
   unpadded conv needs no im2col: it is one GEMM per sample on x itself. */
#define PRG__CONV_COLS 1024

typedef struct prg__conv {
    int b, ci, h, w, co, k, s, p, ho, wo;
    int nb;        /* samples per chunk */
    size_t hw_out; /* Ho*Wo */
    size_t kk;     /* Ci*k*k: rows of the column matrix */
    size_t ncols;  /* nb*Ho*Wo */
    int direct;    /* 1x1, stride 1, no padding */
} prg__conv;

static prg__conv prg__conv_plan(int batch, int cin, int h, int w, int cout, int k, int stride,
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
    return c;
}

size_t prg_conv2d_workspace(int batch, int cin, int h, int w, int cout, int k, int stride, int pad) {
    prg__conv c = prg__conv_plan(batch, cin, h, w, cout, k, stride, pad);
    if (c.direct) return 0;
    /* the column matrix (reused for its gradient), the output/gradient
       block in [Co][nb*HoWo] order when a chunk holds several samples, and
       dW transposed [Ci*k*k][Co] */
    return c.kk * c.ncols + (c.nb > 1 ? (size_t)c.co * c.ncols : 0) + c.kk * c.co;
}

typedef struct prg__conv_job {
    const prg__conv *c;
    int b0, nb;             /* chunk: samples [b0, b0+nb) */
    const float *x, *bias, *dy;
    float *col, *y, *tmp, *dx, *dbias;
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
    size_t co, i, n = c->hw_out;
    int b;
    for (co = lo; co < hi; co++) {
        double s = 0.0;
        for (b = 0; b < c->b; b++) {
            const float *g = j->dy + ((size_t)b * c->co + co) * n;
            float part = 0.0f;
            for (i = 0; i < n; i++) part += g[i];
            s += part;
        }
        j->dbias[co] += (float)s;
    }
}

void prg_conv2d_forward(float *y, const float *x, const float *wt, const float *bias, int batch,
                        int cin, int h, int w, int cout, int k, int stride, int pad, float *ws) {
    prg__conv c = prg__conv_plan(batch, cin, h, w, cout, k, stride, pad);
    prg__conv_job j;
    int b0;
    memset(&j, 0, sizeof j);
    j.c = &c;
    j.x = x;
    j.y = y;
    j.bias = bias;
    if (c.direct) {
        for (b0 = 0; b0 < batch; b0++)
            prg_sgemm(0, 0, cout, (int)c.hw_out, cin, 1.0f, wt, cin,
                      x + (size_t)b0 * cin * c.hw_out, (int)c.hw_out, 0.0f,
                      y + (size_t)b0 * cout * c.hw_out, (int)c.hw_out);
        j.nb = batch;
        prg__parallel_for((size_t)batch * cout, (double)c.hw_out, prg__conv_out_range, &j);
        return;
    }
    PRG_ASSERT(ws != NULL);
    j.col = ws;
    for (b0 = 0; b0 < batch; b0 += c.nb) {
        int nb = batch - b0 < c.nb ? batch - b0 : c.nb;
        size_t ncols = (size_t)nb * c.hw_out;
        float *dst = nb > 1 ? ws + c.kk * c.ncols : y + (size_t)b0 * cout * c.hw_out;
        j.b0 = b0;
        j.nb = nb;
        j.tmp = nb > 1 ? dst : NULL;
        prg__parallel_for(c.kk, (double)ncols, prg__im2col_range, &j);
        prg_sgemm(0, 0, cout, (int)ncols, (int)c.kk, 1.0f, wt, (int)c.kk, ws, (int)ncols, 0.0f,
                  dst, (int)ncols);
        prg__parallel_for((size_t)nb * cout, (double)c.hw_out, prg__conv_out_range, &j);
    }
}

void prg_conv2d_backward(float *dx, float *dwt, float *dbias, const float *dy, const float *x,
                         const float *wt, int batch, int cin, int h, int w, int cout, int k,
                         int stride, int pad, float *ws) {
    prg__conv c = prg__conv_plan(batch, cin, h, w, cout, k, stride, pad);
    prg__conv_job j;
    float *dwt_t;
    int b0;
    memset(&j, 0, sizeof j);
    j.c = &c;
    j.x = x;
    j.dy = dy;
    j.dx = dx;
    j.dbias = dbias;
    if (dbias)
        prg__parallel_for((size_t)cout, (double)batch * c.hw_out, prg__conv_dbias_range, &j);
    if (!dx && !dwt) return;
    if (c.direct) {
        int n = (int)c.hw_out;
        for (b0 = 0; b0 < batch; b0++) {
            const float *xb = x + (size_t)b0 * cin * c.hw_out;
            const float *gb = dy + (size_t)b0 * cout * c.hw_out;
            if (dwt) prg_sgemm(0, 1, cout, cin, n, 1.0f, gb, n, xb, n, 1.0f, dwt, cin);
            if (dx)
                prg_sgemm(1, 0, cin, n, cout, 1.0f, wt, cin, gb, n, 1.0f,
                          dx + (size_t)b0 * cin * c.hw_out, n);
        }
        return;
    }
    PRG_ASSERT(ws != NULL);
    j.col = ws;
    /* dW is summed over the chunks transposed, dwt_t = col dy^T: a GEMM
       whose transposed operand is the small dy rather than the column
       matrix, which the GEMM packs faster */
    dwt_t = ws + c.kk * c.ncols + (c.nb > 1 ? (size_t)cout * c.ncols : 0);
    for (b0 = 0; b0 < batch; b0 += c.nb) {
        int nb = batch - b0 < c.nb ? batch - b0 : c.nb;
        int ncols = (int)((size_t)nb * c.hw_out);
        const float *g = dy + (size_t)b0 * cout * c.hw_out;
        j.b0 = b0;
        j.nb = nb;
        if (nb > 1) { /* dy of the chunk as [Co][nb*HoWo] */
            j.tmp = ws + c.kk * c.ncols;
            prg__parallel_for((size_t)cout, (double)ncols, prg__conv_gather_dy_range, &j);
            g = j.tmp;
        }
        if (dwt) {
            prg__parallel_for(c.kk, (double)ncols, prg__im2col_range, &j);
            prg_sgemm(0, 1, (int)c.kk, cout, ncols, 1.0f, ws, ncols, g, ncols, b0 ? 1.0f : 0.0f,
                      dwt_t, cout);
        }
        if (dx) {
            prg_sgemm(1, 0, (int)c.kk, ncols, cout, 1.0f, wt, (int)c.kk, g, ncols, 0.0f, ws, ncols);
            prg__parallel_for((size_t)nb * cin, (double)c.k * c.k * c.hw_out, prg__col2im_range,
                              &j);
        }
    }
    if (dwt) {
        j.dx = dwt;
        j.tmp = dwt_t;
        prg__parallel_for((size_t)cout, (double)c.kk, prg__conv_dw_add_range, &j);
    }
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
    const float *x, *gamma, *beta, *dy, *cmean, *crstd;
    prg__vec_ops ops;
    int batch, c, groups, cg; /* cg = channels per group */
    size_t hw;
    float eps;
} prg__norm_job;

static void prg__gn_forward_range(void *ctx, size_t lo, size_t hi) {
    const prg__norm_job *j = (const prg__norm_job *)ctx;
    size_t bg, ng = (size_t)j->cg * j->hw;
    for (bg = lo; bg < hi; bg++) {
        const float *x = j->x + bg * ng;
        float *y = j->y + bg * ng;
        int g = (int)(bg % (size_t)j->groups), cc;
        double s = 0.0, v = 0.0;
        float m, r;
        for (cc = 0; cc < j->cg; cc++) s += prg__row_sum(x + (size_t)cc * j->hw, j->hw);
        m = (float)(s / (double)ng);
        for (cc = 0; cc < j->cg; cc++) v += prg__row_sqdev(x + (size_t)cc * j->hw, j->hw, m);
        r = (float)(1.0 / sqrt(v / (double)ng + (double)j->eps));
        j->mean[bg] = m;
        j->rstd[bg] = r;
        for (cc = 0; cc < j->cg; cc++) {
            int ch = g * j->cg + cc;
            float a = r * (j->gamma ? j->gamma[ch] : 1.0f);
            float sh = (j->beta ? j->beta[ch] : 0.0f) - m * a;
            const float *xr = x + (size_t)cc * j->hw;
            float *yr = y + (size_t)cc * j->hw;
            prg__row_axpb(yr, xr, a, sh, j->hw);
        }
    }
}

/* dx for the groups [lo, hi) of all (b, g) */
static void prg__gn_dx_range(void *ctx, size_t lo, size_t hi) {
    const prg__norm_job *j = (const prg__norm_job *)ctx;
    size_t bg, ng = (size_t)j->cg * j->hw;
    for (bg = lo; bg < hi; bg++) {
        const float *x = j->x + bg * ng, *dy = j->dy + bg * ng;
        float *dx = j->dx + bg * ng;
        int g = (int)(bg % (size_t)j->groups), cc;
        double m = j->cmean[bg], r = j->crstd[bg], s1 = 0.0, s2 = 0.0;
        float bcoef, ccoef;
        /* dx = r (gamma dy - s1/N) - (x - m) r^3 s2/N with
           s1 = sum gamma dy, s2 = sum gamma dy (x - m) */
        for (cc = 0; cc < j->cg; cc++) {
            double gm = j->gamma ? j->gamma[g * j->cg + cc] : 1.0, sg, sgx;
            j->ops.dots(dy + (size_t)cc * j->hw, x + (size_t)cc * j->hw, j->hw, &sg, &sgx);
            s1 += gm * sg;
            s2 += gm * (sgx - m * sg);
        }
        bcoef = (float)(-r * r * r * s2 / (double)ng);
        ccoef = (float)(-r * s1 / (double)ng + m * r * r * r * s2 / (double)ng);
        for (cc = 0; cc < j->cg; cc++) {
            float a = (float)r * (j->gamma ? j->gamma[g * j->cg + cc] : 1.0f);
            const float *xr = x + (size_t)cc * j->hw, *gr = dy + (size_t)cc * j->hw;
            float *dr = dx + (size_t)cc * j->hw;
            prg__row_acc3(dr, gr, xr, a, bcoef, ccoef, j->hw);
        }
    }
}

/* dgamma/dbeta for the channels [lo, hi), summed over the batch in order */
static void prg__gn_dparam_range(void *ctx, size_t lo, size_t hi) {
    const prg__norm_job *j = (const prg__norm_job *)ctx;
    size_t ch;
    int b;
    for (ch = lo; ch < hi; ch++) {
        double sgm = 0.0, sbt = 0.0;
        size_t g = ch / (size_t)j->cg;
        for (b = 0; b < j->batch; b++) {
            size_t off = ((size_t)b * j->c + ch) * j->hw, bg = (size_t)b * j->groups + g;
            double sg, sgx;
            j->ops.dots(j->dy + off, j->x + off, j->hw, &sg, &sgx);
            sgm += (double)j->crstd[bg] * (sgx - (double)j->cmean[bg] * sg);
            sbt += sg;
        }
        if (j->dgamma) j->dgamma[ch] += (float)sgm;
        if (j->dbeta) j->dbeta[ch] += (float)sbt;
    }
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

void prg_groupnorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy,
                            const float *x, const float *mean, const float *rstd,
                            const float *gamma, int batch, int c, int hw, int groups) {
    prg__norm_job j;
    prg__norm_setup(&j, batch, c, (size_t)hw, groups);
    j.dx = dx; j.dgamma = dgamma; j.dbeta = dbeta; j.dy = dy; j.x = x;
    j.cmean = mean; j.crstd = rstd; j.gamma = gamma;
    if (dgamma || dbeta)
        prg__parallel_for((size_t)c, 2.0 * batch * j.hw, prg__gn_dparam_range, &j);
    if (dx) prg__parallel_for((size_t)batch * groups, 4.0 * j.cg * j.hw, prg__gn_dx_range, &j);
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

typedef struct prg__ew_job { float *out; const float *a, *b; prg__vec_ops ops; } prg__ew_job;

static void prg__silu_fwd_range(void *ctx, size_t lo, size_t hi) {
    const prg__ew_job *j = (const prg__ew_job *)ctx;
    j->ops.silu_fwd(j->out + lo, j->a + lo, hi - lo);
}

/* a = dy, b = x */
static void prg__silu_bwd_range(void *ctx, size_t lo, size_t hi) {
    const prg__ew_job *j = (const prg__ew_job *)ctx;
    j->ops.silu_bwd(j->out + lo, j->a + lo, j->b + lo, hi - lo);
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

static void prg__ew(prg__range_fn fn, float *out, const float *a, const float *b, size_t n) {
    prg__ew_job j;
    j.out = out;
    j.a = a;
    j.b = b;
    j.ops = prg__vec_select();
    prg__parallel_for(n, 8.0, fn, &j);
}

void prg_silu_forward(float *y, const float *x, size_t n) { prg__ew(prg__silu_fwd_range, y, x, NULL, n); }
void prg_silu_backward(float *dx, const float *dy, const float *x, size_t n) {
    if (!dx) return;
    prg__ew(prg__silu_bwd_range, dx, dy, x, n);
}
void prg_tanh_forward(float *y, const float *x, size_t n) { prg__ew(prg__tanh_fwd_range, y, x, NULL, n); }
void prg_tanh_backward(float *dx, const float *dy, const float *y, size_t n) {
    if (!dx) return;
    prg__ew(prg__tanh_bwd_range, dx, dy, y, n);
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
    int c;
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
        const float *g = j->dy + r * j->hw;
        if (j->dx) {
            float a = 1.0f + j->ss[b * 2 * j->c + ch];
            float *dx = j->dx + r * j->hw;
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
    int r, i;
    for (r = 0; r < t; r++) {
        float *row = s + (size_t)r * t, mx = row[0], inv;
        double sum = 0.0;
        for (i = 1; i < t; i++) mx = row[i] > mx ? row[i] : mx;
        ops->exp_shift(row, row, mx, (size_t)t);
        for (i = 0; i < t; i++) sum += row[i];
        inv = (float)(1.0 / sum);
        for (i = 0; i < t; i++) row[i] *= inv;
    }
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
            double s = 0.0;
            for (i = 0; i < t; i++) s += (double)wr[i] * gr[i];
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
    for (r = 0; r < n; r++) {
        const float *z = logits + (size_t)r * k;
        double mx = z[0], sum = 0.0, mean = 0.0, lse;
        int y = labels[r];
        PRG_ASSERT(y >= 0 && y < k);
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
   kernels (same bits), into a scratch block laid out the same way. */

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
    float *act, *scr, *ws;
    size_t ws_floats;
    int fwd_batch;         /* batch of the last forward, 0 = none */
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

static void prg__unet_res(prg_unet *n, const char *prefix, int cout) {
    int cin = n->cur_c, hw = n->cur_h * n->cur_h, ed = 4 * n->cfg.model_channels;
    char p[PRG__UNET_NAME];
    prg__unet_mod *m = prg__unet_mod_new(n, PRG__UM_RES, cout, n->cur_h);
    m->has_skip = cin != cout;
    /* kept: conv1 output and scale|shift; the GroupNorm and SiLU outputs
       are recomputed by backward (cheap, and 2.5x less memory) */
    m->t[0] = prg__unet_act(n, (size_t)cout * hw);
    m->t[1] = prg__unet_act(n, (size_t)2 * cout);
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
    prg__unet_gn(n, "out.0.", m->cin);
    prg__unet_conv(n, "out.2.", c->out_channels, 1, 1);
    n->mods[n->nmods - 1].gout = PRG__UNET_G_DV;
    PRG_ASSERT(n->nstack == 0);

    /* backward scratch, per image */
    for (i = 0; i < 2; i++) n->gbuf_len[i] = n->maxel;
    for (i = 0; i < n->ngbuf; i++) n->gbuf_off[i] = prg__unet_scr(n, n->gbuf_len[i]);
    n->t1_off = prg__unet_scr(n, n->maxel);
    n->t2_off = prg__unet_scr(n, n->maxel);
    for (i = 0; i < 3; i++) n->r_off[i] = prg__unet_scr(n, n->maxel);
    n->gm_off = prg__unet_scr(n, (size_t)c->groups);
    n->gr_off = prg__unet_scr(n, (size_t)c->groups);
    n->rc_off = prg__unet_scr(n, n->maxel);
    for (i = 0, ch = 1; i < L; i++)
        if (c->channel_mult[i] > ch) ch = c->channel_mult[i];
    n->dss_off = prg__unet_scr(n, (size_t)2 * mc * ch);
    n->dsemb_off = prg__unet_scr(n, (size_t)ed);
    n->de1_off = prg__unet_scr(n, (size_t)ed);
    n->de2_off = prg__unet_scr(n, (size_t)ed);
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

prg_result prg_unet_create(prg_unet **out, const prg_unet_config *cfg, uint64_t seed) {
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
    if ((r = prg__unet_plan(n)) != PRG_OK) {
        prg_free(n);
        return r;
    }
    n->params = (float *)prg_alloc(n->nparams * sizeof(float));
    n->grads = (float *)prg_alloc(n->nparams * sizeof(float));
    if (!n->params || !n->grads) {
        size_t np = n->nparams;
        prg_unet_free(n);
        return prg__fail(PRG_ERR_NOMEM, "prg_unet_create: cannot allocate 2 x %zu parameters (%.1f MB)", np,
                         2.0 * (double)np * 4 / 1e6);
    }
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
    memset(n->grads, 0, n->nparams * sizeof(float));
    *out = n;
    return PRG_OK;
}

void prg_unet_free(prg_unet *n) {
    if (!n) return;
    prg__unet_plan_free(n);
    prg_free(n->params);
    prg_free(n->grads);
    prg_free(n->act);
    prg_free(n->scr);
    prg_free(n->ws);
    prg_free(n);
}

const prg_unet_config *prg_unet_config_get(const prg_unet *n) { return &n->cfg; }
size_t prg_unet_num_params(const prg_unet *n) { return n->nparams; }
float *prg_unet_params(prg_unet *n) { return n->params; }
float *prg_unet_grads(prg_unet *n) { return n->grads; }
void prg_unet_zero_grad(prg_unet *n) { memset(n->grads, 0, n->nparams * sizeof(float)); }
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
    return ((n->act_floats + n->scr_floats) * (size_t)n->cap_batch + n->ws_floats) * sizeof(float);
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

/* Grows the activation, scratch and workspace blocks to hold `batch`. */
static prg_result prg__unet_reserve(prg_unet *n, int batch) {
    size_t ws;
    if (batch <= n->cap_batch) return PRG_OK;
    if (n->act_floats > SIZE_MAX / sizeof(float) / (size_t)batch ||
        n->scr_floats > SIZE_MAX / sizeof(float) / (size_t)batch)
        return prg__fail(PRG_ERR_NOMEM, "prg_unet_forward: batch %d is too large for this U-Net", batch);
    ws = prg__unet_ws_floats(n, batch);
    prg_free(n->act);
    prg_free(n->scr);
    prg_free(n->ws);
    n->act = (float *)prg_alloc(n->act_floats * (size_t)batch * sizeof(float));
    n->scr = (float *)prg_alloc(n->scr_floats * (size_t)batch * sizeof(float));
    n->ws = (float *)prg_alloc((ws ? ws : 1) * sizeof(float));
    n->fwd_batch = 0;
    if (!n->act || !n->scr || !n->ws) {
        double mb = ((double)(n->act_floats + n->scr_floats) * batch + (double)ws) * 4 / 1e6;
        prg_free(n->act);
        prg_free(n->scr);
        prg_free(n->ws);
        n->act = n->scr = n->ws = NULL;
        n->cap_batch = 0;
        n->ws_floats = 0;
        return prg__fail(PRG_ERR_NOMEM,
                         "prg_unet_forward: cannot allocate %.1f MB of activations for batch %d; use a "
                         "smaller batch", mb, batch);
    }
    n->cap_batch = batch;
    n->ws_floats = ws;
    return PRG_OK;
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
   out: gn = GN_out(h1), sso = gn (1 + scale) + shift, act = SiLU(sso).
   gm, gr: [B][G] statistics of the last GroupNorm. */
static void prg__unet_res_in(const prg_unet *n, const prg__unet_mod *m, int B, const float *x, float *gn,
                             float *act, float *gm, float *gr) {
    const float *P = n->params;
    size_t len = (size_t)B * m->cin * m->h * m->w;
    prg_groupnorm_forward(gn, gm, gr, x, P + n->tens[m->par].offset, P + n->tens[m->par + 1].offset, B, m->cin,
                          m->h * m->w, n->cfg.groups, PRG__UNET_EPS);
    prg_silu_forward(act, gn, len);
}

static void prg__unet_res_out(const prg_unet *n, const prg__unet_mod *m, int B, const float *h1, const float *ss,
                              float *gn, float *sso, float *act, float *gm, float *gr) {
    const float *P = n->params;
    int hw = m->h * m->w;
    prg_groupnorm_forward(gn, gm, gr, h1, P + n->tens[m->par + 6].offset, P + n->tens[m->par + 7].offset, B,
                          m->cout, hw, n->cfg.groups, PRG__UNET_EPS);
    prg_scale_shift_forward(sso, gn, ss, B, m->cout, hw);
    prg_silu_forward(act, sso, (size_t)B * m->cout * hw);
}

#define PRG__UA(off) (A + (size_t)(off) * B)
#define PRG__UP(j) (P + n->tens[m->par + (j)].offset)
/* Runs one module forward on the kept activations (scratch r[], gm, gr). */
static void prg__unet_mod_forward(prg_unet *n, const prg__unet_mod *m, int B) {
    const prg_unet_config *c = &n->cfg;
    int h = m->h, w = m->w, hw = m->h * m->w, ci = m->cin, co = m->cout, ed = 4 * c->model_channels;
    int G = c->groups, i;
    const float *P = n->params, *in;
    float *A = n->act, *S = n->scr, *ws = n->ws, *rc = S + n->rc_off * B, *r[3], *out;
    float *gm = S + n->gm_off * B, *gr = S + n->gr_off * B;
    for (i = 0; i < 3; i++) r[i] = S + n->r_off[i] * B;
    in = m->in_rc ? rc : PRG__UA(m->in);
    out = m->out_rc ? rc : PRG__UA(m->out);
    switch (m->type) {
    case PRG__UM_CONV:
        prg_conv2d_forward(out, in, PRG__UP(0), PRG__UP(1), B, ci, h, w, co, m->k, m->stride, m->pad, ws);
        break;
    case PRG__UM_RES:
        prg__unet_res_in(n, m, B, in, r[0], r[1], gm, gr);
        prg_conv2d_forward(PRG__UA(m->t[0]), r[1], PRG__UP(2), PRG__UP(3), B, ci, h, w, co, 3, 1, 1, ws);
        prg_linear_forward(PRG__UA(m->t[1]), PRG__UA(n->semb_off), PRG__UP(4), PRG__UP(5), B, ed, 2 * co);
        prg__unet_res_out(n, m, B, PRG__UA(m->t[0]), PRG__UA(m->t[1]), r[0], r[1], r[2], gm, gr);
        prg_conv2d_forward(out, r[2], PRG__UP(8), PRG__UP(9), B, co, h, w, co, 3, 1, 1, ws);
        if (m->has_skip) {
            prg_conv2d_forward(r[0], in, PRG__UP(10), PRG__UP(11), B, ci, h, w, co, 1, 1, 0, ws);
            prg__unet_add(out, r[0], (size_t)B * co * hw);
        } else {
            prg__unet_add(out, in, (size_t)B * co * hw);
        }
        break;
    case PRG__UM_ATTN:
        prg_groupnorm_forward(r[0], gm, gr, in, PRG__UP(0), PRG__UP(1), B, ci, hw, G, PRG__UNET_EPS);
        prg_conv2d_forward(PRG__UA(m->t[0]), r[0], PRG__UP(2), PRG__UP(3), B, ci, hw, 1, 3 * ci, 1, 1, 0, ws);
        prg_attention_forward(PRG__UA(m->t[1]), PRG__UA(m->t[2]), PRG__UA(m->t[0]), B, ci, hw,
                              c->num_heads, ws);
        prg_conv2d_forward(out, PRG__UA(m->t[1]), PRG__UP(4), PRG__UP(5), B, ci, hw, 1, ci, 1, 1, 0, ws);
        prg__unet_add(out, in, (size_t)B * ci * hw);
        break;
    case PRG__UM_UP:
        prg_upsample2x_forward(out, in, B * ci, h, w);
        break;
    case PRG__UM_CAT:
        prg_concat_forward(out, in, PRG__UA(m->in2), B, ci, m->cin2, hw);
        break;
    case PRG__UM_NORMACT:
        prg_groupnorm_forward(r[0], gm, gr, in, PRG__UP(0), PRG__UP(1), B, ci, hw, G, PRG__UNET_EPS);
        prg_silu_forward(out, r[0], (size_t)B * ci * hw);
        break;
    }
}

prg_result prg_unet_forward(prg_unet *n, int batch, const float *x, const float *t, float *v) {
    const prg_unet_config *c;
    int B = batch, i, mc, ed;
    float *P, *A;
    prg_result res;
    if (!n || !x || !t || !v) return prg__fail(PRG_ERR_ARG, "prg_unet_forward: NULL argument");
    if (batch < 1) return prg__fail(PRG_ERR_ARG, "prg_unet_forward: batch=%d must be >= 1", batch);
    if ((res = prg__unet_reserve(n, batch)) != PRG_OK) return res;
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
    for (i = 0; i < n->nmods; i++) prg__unet_mod_forward(n, &n->mods[i], B);
    memcpy(v, PRG__UA(n->mods[n->nmods - 1].out),
           (size_t)B * c->out_channels * c->image_size * c->image_size * sizeof(float));
    n->fwd_batch = B;
    return PRG_OK;
}

/* --- backward --------------------------------------------------------------- */

prg_result prg_unet_backward(prg_unet *n, const float *dv, float *dx) {
    const prg_unet_config *c;
    int B, i, j, mc, ed, G;
    float *P, *D, *A, *S, *ws, *t1, *t2, *dss, *dsemb, *de1, *de2, *r[3], *gm, *gr, *rc;
    float *gb[4 + PRG_UNET_MAX_LEVELS * 65];
    if (!n || !dv) return prg__fail(PRG_ERR_ARG, "prg_unet_backward: NULL argument");
    if (n->fwd_batch < 1)
        return prg__fail(PRG_ERR_STATE, "prg_unet_backward: call prg_unet_forward first (on this net)");
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
        if (m->in_rc) prg__unet_mod_forward(n, m - 1, B); /* the CAT or UP output, into rc */
        /* a ping-pong buffer has one producer: clear it; skip buffers accumulate; dx is
           cleared only now (the first conv is the last module), so it may alias dv */
        if (m->gin == 0 || m->gin == 1 || (m->gin == PRG__UNET_G_DX && dx)) PRG__UZ(din, ci * hw);
        switch (m->type) {
        case PRG__UM_CONV:
            prg_conv2d_backward(din, PRG__UD(0), PRG__UD(1), dout, in, PRG__UP(0), B, ci, h, w, co, m->k,
                                m->stride, m->pad, ws);
            break;
        case PRG__UM_RES:
            if (m->has_skip)
                prg_conv2d_backward(din, PRG__UD(10), PRG__UD(11), dout, in, PRG__UP(10), B, ci, h, w, co, 1, 1,
                                    0, ws);
            else
                prg__unet_add(din, dout, (size_t)B * co * hw);
            prg__unet_res_out(n, m, B, PRG__UA(m->t[0]), PRG__UA(m->t[1]), r[0], r[1], r[2], gm, gr);
            PRG__UZ(t1, co * hw);
            prg_conv2d_backward(t1, PRG__UD(8), PRG__UD(9), dout, r[2], PRG__UP(8), B, co, h, w, co, 3, 1, 1, ws);
            PRG__UZ(t2, co * hw);
            prg_silu_backward(t2, t1, r[1], (size_t)B * co * hw);
            PRG__UZ(t1, co * hw);
            PRG__UZ(dss, 2 * co);
            prg_scale_shift_backward(t1, dss, t2, r[0], PRG__UA(m->t[1]), B, co, hw);
            prg_linear_backward(dsemb, PRG__UD(4), PRG__UD(5), dss, PRG__UA(n->semb_off), PRG__UP(4), B, ed,
                                2 * co);
            PRG__UZ(t2, co * hw);
            prg_groupnorm_backward(t2, PRG__UD(6), PRG__UD(7), t1, PRG__UA(m->t[0]), gm, gr, PRG__UP(6), B, co, hw,
                                   G);
            prg__unet_res_in(n, m, B, in, r[0], r[1], gm, gr);
            PRG__UZ(t1, ci * hw);
            prg_conv2d_backward(t1, PRG__UD(2), PRG__UD(3), t2, r[1], PRG__UP(2), B, ci, h, w, co, 3, 1, 1, ws);
            PRG__UZ(t2, ci * hw);
            prg_silu_backward(t2, t1, r[0], (size_t)B * ci * hw);
            prg_groupnorm_backward(din, PRG__UD(0), PRG__UD(1), t2, in, gm, gr, PRG__UP(0), B, ci, hw, G);
            break;
        case PRG__UM_ATTN:
            prg__unet_add(din, dout, (size_t)B * ci * hw);
            PRG__UZ(t1, ci * hw);
            prg_conv2d_backward(t1, PRG__UD(4), PRG__UD(5), dout, PRG__UA(m->t[1]), PRG__UP(4), B, ci, hw, 1, ci,
                                1, 1, 0, ws);
            PRG__UZ(t2, 3 * ci * hw);
            prg_attention_backward(t2, t1, PRG__UA(m->t[0]), PRG__UA(m->t[2]), B, ci, hw, c->num_heads, ws);
            prg_groupnorm_forward(r[0], gm, gr, in, PRG__UP(0), PRG__UP(1), B, ci, hw, G, PRG__UNET_EPS);
            PRG__UZ(t1, ci * hw);
            prg_conv2d_backward(t1, PRG__UD(2), PRG__UD(3), t2, r[0], PRG__UP(2), B, ci, hw, 1, 3 * ci, 1, 1, 0,
                                ws);
            prg_groupnorm_backward(din, PRG__UD(0), PRG__UD(1), t1, in, gm, gr, PRG__UP(0), B, ci, hw, G);
            break;
        case PRG__UM_UP:
            prg_upsample2x_backward(din, dout, B * ci, h, w);
            break;
        case PRG__UM_CAT:
            prg_concat_backward(din, PRG__UG(m->gin2), dout, B, ci, m->cin2, hw);
            break;
        case PRG__UM_NORMACT:
            prg_groupnorm_forward(r[0], gm, gr, in, PRG__UP(0), PRG__UP(1), B, ci, hw, G, PRG__UNET_EPS);
            PRG__UZ(t1, ci * hw);
            prg_silu_backward(t1, dout, r[0], (size_t)B * ci * hw);
            prg_groupnorm_backward(din, PRG__UD(0), PRG__UD(1), t1, in, gm, gr, PRG__UP(0), B, ci, hw, G);
            break;
        }
    }
    /* time embedding: emb -> SiLU feeds every ResBlock */
    PRG__UZ(de1, ed);
    prg_silu_backward(de1, dsemb, PRG__UA(n->emb_off), (size_t)B * ed);
    PRG__UZ(de2, ed);
    prg_linear_backward(de2, D + n->tens[2].offset, D + n->tens[3].offset, de1, PRG__UA(n->e1s_off),
                        P + n->tens[2].offset, B, ed, ed);
    PRG__UZ(de1, ed);
    prg_silu_backward(de1, de2, PRG__UA(n->e1_off), (size_t)B * ed);
    prg_linear_backward(NULL, D + n->tens[0].offset, D + n->tens[1].offset, de1, PRG__UA(n->temb_off),
                        P + n->tens[0].offset, B, mc, ed);
#undef PRG__UA
#undef PRG__UP
#undef PRG__UG
#undef PRG__UD
#undef PRG__UZ
    return PRG_OK;
}


/* >>flow ================================================================ */

/* >>prg ================================================================= */

/* >>optim =============================================================== */

/* >>io ================================================================== */

/* >>data ================================================================ */

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
