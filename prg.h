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

static const prg__gemm_impl prg__gemm_impls[] = {
#ifdef PRG__X86
    {"avx512", PRG__AVX512_MR, PRG__AVX512_NR, 504, 256, 1, prg__kernel_avx512,
     prg__pack_a_avx512, prg__pack_b_avx512},
    {"avx2", PRG__AVX2_MR, PRG__AVX2_NR, 288, 256, 0, prg__kernel_avx2, prg__pack_a, prg__pack_b},
#endif
#ifdef PRG__NEON
    {"neon", PRG__NEON_MR, PRG__NEON_NR, 96, 256, 0, prg__kernel_neon, prg__pack_a, prg__pack_b},
#endif
    {"scalar", PRG__SCALAR_MR, PRG__SCALAR_NR, 64, 256, 0, prg__kernel_scalar, prg__pack_a,
     prg__pack_b},
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

/* Packing buffers: a shared set, each taken by one task of prg_sgemm and
   given back at its end.  (Thread-local buffers would be lost whenever the
   pool's workers exit, e.g. on prg_set_num_threads.)  Buffers only grow. */
typedef struct prg__gemm_buf { prg__scratch s; int busy; } prg__gemm_buf;
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
/* The serial blocked product on the block [m0,m1) x [n0,n1) of C.  For each
   MC x KC block of packed A, the NR-wide panels of B are packed one at a
   time (the KC x NR panel stays in L1 while every A panel of the block
   passes over it); the kernel calls on one panel prefetch the memory of the
   next one, so that reading B overlaps with arithmetic. */
static void prg__gemm_block(const prg__gemm_job *j, int m0, int m1, int n0, int n1) {
    const prg__gemm_impl *g = j->g;
    int MR = g->mr, NR = g->nr, MC = g->mc, KC = g->kc, ic, pc, jr, ir;
    float *pa, *pb;
    prg__gemm_pf pf, *pfp;
    /* A's block, then B's panel on a 64-byte boundary */
    size_t na = ((size_t)MC * KC + 15) / 16 * 16;
    prg__gemm_buf *buf = prg__gemm_buf_take(na + (size_t)KC * NR);
    if (!buf) { /* no memory for the packing buffers: unpacked loops */
        prg__gemm_small(j, m0, m1, n0, n1);
        return;
    }
    pa = buf->s.p;
    pb = pa + na;
    {   /* equal A blocks (in whole MR panels) rather than a thin last one */
        int nblk = (m1 - m0 + MC - 1) / MC;
        MC = ((m1 - m0 + nblk - 1) / nblk + MR - 1) / MR * MR;
    }
    for (ic = m0; ic < m1; ic += MC) {
        int mc = m1 - ic < MC ? m1 - ic : MC;
        for (pc = 0; pc < j->k; pc += KC) {
            int kc = j->k - pc < KC ? j->k - pc : KC;
            float beta = pc == 0 ? j->beta : 1.0f;
            g->pack_a(pa, j->a, j->lda, j->ta, m1, ic, mc, pc, kc, MR);
            for (jr = n0; jr < n1; jr += NR) {
                int nr = n1 - jr < NR ? n1 - jr : NR, lines = 0, t = 0;
                g->pack_b(pb, j->b, j->ldb, j->tb, n1, jr, nr, pc, kc, NR);
                if (g->prefetch && jr + 2 * NR <= n1) {
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
                    g->kernel(kc, pa + (size_t)ir * kc, pb,
                              j->c + (size_t)(ic + ir) * j->ldc + jr, j->ldc, mr, nr, j->alpha,
                              beta, pfp);
                }
            }
        }
    }
    prg__gemm_buf_give(buf);
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
