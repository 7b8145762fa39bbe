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
/* Forward/backward pairs over float * (NCHW, float32). */

/* >>unet ================================================================ */
/* The reference U-Net: config, presets, parameters, forward, backward. */

/* >>flow ================================================================ */
/* Flow-matching losses (ICFM, OT-CFM, GVP) and samplers noise -> data. */

/* Time convention (METHOD.md A.1): noise at t = 0, data at t = 1 (the paper's
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
/* GVP pairs (METHOD.md A.4, t = 0 data, t = 1 noise): eps ~ N(0, I), then
   t ~ U[1e-5, 1); xt = cos(pi t/2) x + sin(pi t/2) eps,
   target = -(pi/2) sin(pi t/2) x + (pi/2) cos(pi t/2) eps. */
void prg_flow_gvp_pairs(float *xt /* [B][dim] */, float *target /* [B][dim] */, float *t /* [B] */,
                        const float *x /* [B][dim] */, int batch, size_t dim, prg_rng *rng);

/* OT-CFM (METHOD.md A.1).  cost[i][j] = ||x0_i - x1_j||^2, in double. */
void prg_ot_cost(double *cost /* [B][B] */, const float *x0 /* [B][dim] */, const float *x1 /* [B][dim] */,
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
   like the U-Net's forward.  The U-Net plugs in through two wrappers:
       static prg_result unet_vel(void *net, int b, const float *x, const float *t, float *v)
       { return prg_unet_forward((prg_unet *)net, b, x, t, v); }
       static prg_result unet_vjp(void *net, const float *dv, float *dx)
       { return prg_unet_backward((prg_unet *)net, dv, dx); } */
typedef prg_result (*prg_velocity_fn)(void *ctx, int batch, const float *x /* [B][dim] */,
                                      const float *t /* [B] */, float *v /* [B][dim] */);
/* The vector-Jacobian product of the LAST velocity call on ctx:
   dx = (dv/dx)^T dv (dx is zeroed by the caller before the call, so set or
   accumulate both work) and, for a learned field, parameter gradients
   += (dv/dtheta)^T dv.  prg_unet_backward(net, dv, dx) has this shape. */
typedef prg_result (*prg_velocity_vjp_fn)(void *ctx, const float *dv /* [B][dim] */, float *dx /* [B][dim] */);

/* Samplers noise -> data: integrate dx/dt = v(t, x) from t = 0 to t = 1 on
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

/* The reverse ODE, data -> noise, exactly as the reference's encoder
   (METHOD.md A.2): grid linspace(0, 1, t_span), first t_cutoff points
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
   which is the exact gradient of the discrete solve (left end, METHOD.md
   A.3).  right_end = 1 evaluates at (tau_{k+1}, x_{k+1}) instead, as
   torchdiffeq's adjoint in the released code does (an O(h) approximation). */
prg_result prg_ode_reverse_euler_backward(prg_velocity_fn vel, prg_velocity_vjp_fn vjp, void *ctx,
                                          int t_span, int t_cutoff, int batch, size_t dim,
                                          const float *states /* [M+1][B][dim] */,
                                          const float *dz /* [B][dim] */, float *dx /* [B][dim] or NULL */,
                                          int right_end);
/* The GVP ("Diff") encoder of METHOD.md A.4: model time t = 0 is data, and
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


/* >>prg ================================================================= */
/* The reverse-ODE encoder and the classifier (U-Net + head). */

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
size_t   prg_adam_size(const prg_adam *opt);
int64_t  prg_adam_step_count(const prg_adam *opt);
void     prg_adam_set_step_count(prg_adam *opt, int64_t step);
float   *prg_adam_exp_avg(prg_adam *opt);     /* [n] */
float   *prg_adam_exp_avg_sq(prg_adam *opt);  /* [n] */
const prg_adam_config *prg_adam_get_config(const prg_adam *opt);

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
/* The reference fine-tuning recipe (METHOD.md C.2): base 1.25e-4,
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

/* >>unet ================================================================ */

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

void prg_ot_cost(double *cost, const float *x0, const float *x1, int batch, size_t dim) {
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

static prg_result prg__sample(int method, prg_velocity_fn vel, void *ctx, int steps, int batch, size_t dim,
                              float *x) {
    float *ws, *k, *xs, *acc, *tb;
    size_t n, i;
    int s;
    prg_result rc = PRG_OK;
    if (steps < 1) return prg__fail(PRG_ERR_ARG, "prg_sample: steps = %d, need >= 1", steps);
    rc = prg__ode_workspace(&ws, &n, 3, batch, dim, "prg_sample");
    if (rc != PRG_OK) return rc;
    k = ws;
    xs = ws + n;
    acc = ws + 2 * n;
    tb = ws + 3 * n;
    for (s = 0; s < steps && rc == PRG_OK; s++) {
        const double t0 = (double)s / steps, t1 = (double)(s + 1) / steps, tm = (2.0 * s + 1) / (2.0 * steps);
        const float h = (float)(1.0 / steps);
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
    return prg__sample(PRG__EULER, vel, ctx, steps, batch, dim, x);
}
prg_result prg_sample_heun(prg_velocity_fn vel, void *ctx, int steps, int batch, size_t dim, float *x) {
    return prg__sample(PRG__HEUN, vel, ctx, steps, batch, dim, x);
}
prg_result prg_sample_rk4(prg_velocity_fn vel, void *ctx, int steps, int batch, size_t dim, float *x) {
    return prg__sample(PRG__RK4, vel, ctx, steps, batch, dim, x);
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

static prg_result prg__euler_backward(const prg__euler_grid *g, prg_velocity_fn vel, prg_velocity_vjp_fn vjp,
                                      void *ctx, int batch, size_t dim, const float *states, const float *dz,
                                      float *dx, int right_end, const char *who) {
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
        if ((rc = vel(ctx, batch, states + (size_t)e * n, tb, v)) != PRG_OK) break;
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
    return rc != PRG_OK ? rc : prg__euler_backward(&g, vel, vjp, ctx, batch, dim, states, dz, dx, right_end, who);
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
    return rc != PRG_OK ? rc : prg__euler_backward(&g, vel, vjp, ctx, batch, dim, states, dz, dx, right_end, who);
}

/* >>prg ================================================================= */

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

size_t prg_adam_size(const prg_adam *opt) { return opt->n; }
int64_t prg_adam_step_count(const prg_adam *opt) { return opt->step; }
void prg_adam_set_step_count(prg_adam *opt, int64_t step) { opt->step = step; }
float *prg_adam_exp_avg(prg_adam *opt) { return opt->moments; }
float *prg_adam_exp_avg_sq(prg_adam *opt) { return opt->moments + opt->npad; }
const prg_adam_config *prg_adam_get_config(const prg_adam *opt) { return &opt->cfg; }

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
