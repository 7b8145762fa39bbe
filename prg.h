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

/* >>prg ================================================================= */
/* The reverse-ODE encoder and the classifier (U-Net + head). */

/* >>optim =============================================================== */
/* Adam, AdamW, warmup + cosine schedule, EMA. */

/* >>io ================================================================== */
/* Files: safetensors, .npy/.npz (with inflate), IDX, CIFAR binary, PNG, PPM. */

/* >>data ================================================================ */
/* In-memory datasets, augmentation, normalisation, a prefetching iterator. */

/* The dataset is defined by the io section; this guarded copy lets the data
   section build on its own (the integrator keeps one definition). */
#ifndef PRG_DATASET_DEFINED
#define PRG_DATASET_DEFINED
typedef struct prg_dataset {
    int n, c, h, w, num_classes;
    uint8_t *images; /* [N][C][H][W] */
    int32_t *labels; /* [N] */
} prg_dataset;
#endif

/* Images here are uint8 planes [C][H][W].  The augmentations follow timm /
   torchvision on PIL images exactly (same arithmetic, same rounding), with
   prg_rng in place of Python's random. */

#define PRG_DATA_MAX_CHANNELS 4

enum {
    PRG_CROP_NONE = 0,    /* the image as it is (its size must be the output size) */
    PRG_CROP_RANDOM = 1,  /* RandomCrop(out, padding=crop_padding), zero fill */
    PRG_CROP_RESIZED = 2, /* RandomResizedCrop(out, scale, ratio), bicubic */
    PRG_CROP_CENTER = 3   /* Resize(shorter side = resize, bicubic) + CenterCrop(out) */
};

typedef struct prg_transform {
    int out_h, out_w;          /* output size */
    int border;                /* zero pixels added on each side of every source image
                                  first, in uint8 (2: MNIST 28x28 -> 32x32) */
    int crop;                  /* PRG_CROP_* */
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

/* Fills t with the reference pipeline (METHOD.md C.2) for images of `channels`
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
} prg_loader_config;
typedef struct prg_batch {
    const float *x;       /* [size][C][out_h][out_w], valid until the next call */
    const int32_t *y;     /* [size] labels */
    const int *index;     /* [size] dataset indices */
    int size;             /* images in this batch */
    int step;             /* batch number within the epoch */
    int last;             /* 1 on the last batch of the epoch */
    uint64_t epoch;
} prg_batch;
void prg_loader_config_init(prg_loader_config *cfg, int batch, uint64_t seed);
/* ds must stay valid and unchanged until prg_loader_free (*t is copied).
   The background thread builds serially (it never takes the pool from the
   training loop); with prefetch = 0 batches are built on the pool in next(). */
prg_result prg_loader_create(prg_loader **ld, const prg_dataset *ds, const prg_transform *t,
                             const prg_loader_config *cfg);
prg_result prg_loader_next(prg_loader *ld, prg_batch *b);
int        prg_loader_batches_per_epoch(const prg_loader *ld);
void       prg_loader_free(prg_loader *ld);   /* stops and joins the thread */

/* The single operations, PIL semantics (dst and src must not overlap). */
void prg_image_flip(uint8_t *img /* [C][H][W] */, int c, int h, int w); /* in place */
/* dst = the oh x ow window at (top, left) of src; outside src: 0 */
void prg_image_crop(uint8_t *dst /* [C][oh][ow] */, const uint8_t *src /* [C][H][W] */,
                    int top, int left, int oh, int ow, int c, int h, int w);
/* PIL Image.resize(BICUBIC): separable a = -0.5 cubic, support scaled when
   downscaling (antialias), 22-bit fixed point, horizontal pass first.
   work: prg_image_resize_workspace() bytes, or NULL to allocate here. */
size_t prg_image_resize_workspace(int c, int h, int w, int oh, int ow);
prg_result prg_image_resize(uint8_t *dst /* [C][oh][ow] */, int oh, int ow,
                            const uint8_t *src /* [C][H][W] */, int c, int h, int w, void *work);
/* PIL Image.transform(AFFINE, m, BICUBIC, fillcolor=fill): the source point of
   output pixel centre (x+.5, y+.5) is (m0 x + m1 y + m2, m3 x + m4 y + m5). */
void prg_image_affine(uint8_t *dst, const uint8_t *src, const double m[6],
                      const uint8_t *fill /* [C] */, int c, int h, int w);
/* PIL Image.rotate(degrees counter-clockwise, BICUBIC, fillcolor=fill) */
void prg_image_rotate(uint8_t *dst, const uint8_t *src, double degrees,
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
void prg_image_normalize(float *dst /* [C][H][W] */, const uint8_t *src /* [C][H][W] */,
                         const float *mean /* [C] */, const float *std /* [C] */, int c, int h, int w);
/* timm RandomErasing(p, mode='pixel', 1 box, 10 attempts) on a normalised image;
   returns the erased area in pixels (0 when nothing was erased). */
int prg_image_erase(float *img /* [C][H][W] */, const prg_transform *t, prg_rng *rng,
                    int c, int h, int w);


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

/* >>prg ================================================================= */

/* >>optim =============================================================== */

/* >>io ================================================================== */

/* >>data ================================================================ */

/* Python's round() (half to even) for the default rounding mode. */
static double prg__round_even(double v) { return nearbyint(v); }

/* float a * b rounded once, as a float multiply, where the exact product fits
   a double (uint8 or small int times float): immune to FMA contraction, so the
   PIL arithmetic is reproduced whatever the compiler flags. */
static float prg__fmul(float a, float b) { return (float)((double)a * (double)b); }
/* a * b rounded to a double before it is added to anything: no FMA fusing
   (PIL's C and Python's arithmetic round every product). */
static double prg__dmul(double a, double b) {
    volatile double p = a * b;
    return p;
}

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

void prg_image_flip(uint8_t *img, int c, int h, int w) {
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

void prg_image_crop(uint8_t *dst, const uint8_t *src, int top, int left, int oh, int ow, int c,
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

/* PIL's BICUBIC resampling filter (a = -0.5) */
static double prg__cubic_filter(double x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return prg__dmul(prg__dmul(prg__dmul(a + 2.0, x) - (a + 3.0), x), x) + 1;
    if (x < 2.0) return (prg__dmul(prg__dmul(x - 5, x) + 8, x) - 4) * a;
    return 0.0;
}

static int prg__resize_ksize(int in, int out) {
    double scale = (double)in / out;
    return (int)ceil(2.0 * (scale < 1.0 ? 1.0 : scale)) * 2 + 1;
}

/* PIL precompute_coeffs + normalize_coeffs_8bpc: 22-bit fixed-point weights
   kk[out][ksize] over source positions bounds[out] = (first, count). */
#define PRG__RS_BITS 22
static void prg__resize_coeffs(int in, int out, int ksize, int *bounds, int32_t *kk) {
    double scale = (double)in / out, filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 2.0 * filterscale, ss = 1.0 / filterscale;
    int xx, x;
    for (xx = 0; xx < out; xx++) {
        double center = (xx + 0.5) * scale, ww = 0.0;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        int32_t *k = kk + (size_t)xx * ksize;
        if (xmin < 0) xmin = 0;
        if (xmax > in) xmax = in;
        xmax -= xmin;
        for (x = 0; x < xmax; x++) ww += prg__cubic_filter((x + xmin - center + 0.5) * ss);
        for (x = 0; x < xmax; x++) {
            double v = prg__cubic_filter((x + xmin - center + 0.5) * ss);
            if (ww != 0.0) v /= ww;
            k[x] = v < 0 ? (int32_t)(-0.5 + v * (1 << PRG__RS_BITS))
                         : (int32_t)(0.5 + v * (1 << PRG__RS_BITS));
        }
        for (; x < ksize; x++) k[x] = 0;
        bounds[2 * xx] = xmin;
        bounds[2 * xx + 1] = xmax;
    }
}

static uint8_t prg__rs_clip(int32_t ss) {
    if (ss < 0) return 0;
    ss >>= PRG__RS_BITS;
    return (uint8_t)(ss > 255 ? 255 : ss);
}

size_t prg_image_resize_workspace(int c, int h, int w, int oh, int ow) {
    size_t kx = (size_t)prg__resize_ksize(w, ow), ky = (size_t)prg__resize_ksize(h, oh);
    return (size_t)c * h * ow + 16 + sizeof(int32_t) * ((size_t)ow * (kx + 3) + (size_t)oh * (ky + 2));
}

/* src rows have stride `pitch` and planes stride `plane` (a window of a larger
   image is resized as PIL resizes img.crop(...): the window is the image). */
static void prg__resize(uint8_t *dst, int oh, int ow, const uint8_t *src, size_t pitch,
                        size_t plane, int c, int h, int w, void *work) {
    int kx = prg__resize_ksize(w, ow), ky = prg__resize_ksize(h, oh);
    int32_t *kkx = (int32_t *)work, *kky = kkx + (size_t)ow * kx;
    int *bx = (int *)(kky + (size_t)oh * ky), *by = bx + 2 * ow;
    int32_t *acc = (int32_t *)(by + 2 * oh);
    uint8_t *tmp = (uint8_t *)(acc + ow);
    int ch, y, x, i;
    if (ow != w) prg__resize_coeffs(w, ow, kx, bx, kkx);
    if (oh != h) prg__resize_coeffs(h, oh, ky, by, kky);
    for (ch = 0; ch < c; ch++) {
        const uint8_t *in = src + (size_t)ch * plane;
        size_t in_pitch = pitch;
        uint8_t *out = dst + (size_t)ch * oh * ow;
        if (ow != w) { /* horizontal pass into tmp [h][ow] (into dst when no vertical pass) */
            uint8_t *t = oh != h ? tmp : out;
            for (y = 0; y < h; y++) {
                const uint8_t *row = in + (size_t)y * pitch;
                for (x = 0; x < ow; x++) {
                    const int32_t *k = kkx + (size_t)x * kx;
                    const uint8_t *p = row + bx[2 * x];
                    int32_t ss = 1 << (PRG__RS_BITS - 1);
                    for (i = 0; i < bx[2 * x + 1]; i++) ss += p[i] * k[i];
                    t[(size_t)y * ow + x] = prg__rs_clip(ss);
                }
            }
            in = t;
            in_pitch = (size_t)ow;
        }
        if (oh != h) { /* vertical pass, a row at a time (the same integer sums) */
            for (y = 0; y < oh; y++) {
                const int32_t *k = kky + (size_t)y * ky;
                const uint8_t *p = in + (size_t)by[2 * y] * in_pitch;
                for (x = 0; x < ow; x++) acc[x] = 1 << (PRG__RS_BITS - 1);
                for (i = 0; i < by[2 * y + 1]; i++) {
                    const uint8_t *row = p + (size_t)i * in_pitch;
                    int32_t ki = k[i];
                    for (x = 0; x < ow; x++) acc[x] += row[x] * ki;
                }
                for (x = 0; x < ow; x++) out[(size_t)y * ow + x] = prg__rs_clip(acc[x]);
            }
        } else if (ow == w) {
            for (y = 0; y < h; y++) memcpy(out + (size_t)y * ow, in + (size_t)y * pitch, (size_t)w);
        }
    }
}

prg_result prg_image_resize(uint8_t *dst, int oh, int ow, const uint8_t *src, int c, int h, int w,
                            void *work) {
    void *own = NULL;
    if (c < 1 || h < 1 || w < 1 || oh < 1 || ow < 1)
        return prg__fail(PRG_ERR_ARG, "prg_image_resize: sizes must be positive (got %dx%dx%d -> %dx%d)",
                         c, h, w, oh, ow);
    if (!work) {
        own = work = prg_alloc(prg_image_resize_workspace(c, h, w, oh, ow));
        if (!work) return prg__fail(PRG_ERR_NOMEM, "prg_image_resize: no memory for the workspace");
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

void prg_image_affine(uint8_t *dst, const uint8_t *src, const double m[6], const uint8_t *fill,
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

void prg_image_rotate(uint8_t *dst, const uint8_t *src, double degrees, const uint8_t *fill, int c,
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
    prg_image_affine(dst, src, m, fill, c, h, w);
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
    case PRG_RA_ROTATE: prg_image_rotate(dst, src, sign * (level / 10.0 * 30.0), fill, c, h, w); return;
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
        prg_image_affine(dst, src, m, fill, c, h, w);
        return;
    }
    }
    for (i = 0; i < (size_t)c; i++) prg__lut_apply(dst + i * n, src + i * n, lut, n);
}

void prg_image_normalize(float *dst, const uint8_t *src, const float *mean, const float *std, int c,
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

int prg_image_erase(float *img, const prg_transform *t, prg_rng *rng, int c, int h, int w) {
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
    if (t->crop == PRG_CROP_RESIZED) L.rs = prg_image_resize_workspace(c, sh, sw, t->out_h, t->out_w);
    if (t->crop == PRG_CROP_CENTER) L.rs = prg_image_resize_workspace(c, sh, sw, rh, rw);
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
        prg_image_crop(base, src, -t->border, -t->border, sh, sw, c, h, w);
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
        prg_image_crop(a, cur, top - p, left - p, oh, ow, c, sh, sw);
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
        prg_image_crop(a, cur, (int)prg__round_even((rh - oh) / 2.0), (int)prg__round_even((rw - ow) / 2.0),
                       oh, ow, c, rh, rw);
        break;
    }
    }
    if (t->hflip > 0.0f && prg_rng_uniform(rng) < t->hflip) prg_image_flip(a, c, oh, ow);
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
    prg_image_normalize(dst, a, t->mean, t->std, c, oh, ow);
    if (t->erase_prob > 0.0f) prg_image_erase(dst, t, rng, c, oh, ow);
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

void prg_loader_config_init(prg_loader_config *cfg, int batch, uint64_t seed) {
    memset(cfg, 0, sizeof *cfg);
    cfg->batch = batch;
    cfg->shuffle = 1;
    cfg->prefetch = 1;
    cfg->seed = seed;
}

int prg_loader_batches_per_epoch(const prg_loader *ld) { return ld->bpe; }

/* Builds batch number k (counted from the start) into s; serial when work != NULL. */
static prg_result prg__loader_build(prg_loader *ld, prg__slot *s, uint64_t k, prg__batch_job *j) {
    uint64_t epoch = ld->cfg.start_epoch + k / (uint64_t)ld->bpe;
    int step = (int)(k % (uint64_t)ld->bpe), n = ld->ds->n, i, start = step * ld->cfg.batch;
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
    s->size = n - start < ld->cfg.batch ? n - start : ld->cfg.batch;
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
    return PRG_OK;
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
