/* base and pool: results, RNG streams, aligned allocation, the thread pool. */
#define PRG_IMPLEMENTATION
#include "../prg.h"
#include "prg_test.h"
#include <math.h>
#include <string.h>
#include <time.h>

typedef struct count_ctx { int calls[64]; int nth_seen[64]; } count_ctx;

static void count_task(void *ctx, int ith, int nth) {
    count_ctx *c = (count_ctx *)ctx;
    c->calls[ith]++;
    c->nth_seen[ith] = nth;
}

/* A reduction done the pool way: fixed chunks, each summed by whoever owns
   it, then combined in chunk order, so the thread count cannot change it. */
#define NCHUNK 64
typedef struct sum_ctx { const float *x; size_t n; double part[NCHUNK]; } sum_ctx;

static void sum_task(void *ctx, int ith, int nth) {
    sum_ctx *s = (sum_ctx *)ctx;
    size_t lo, hi, ch, i;
    prg_split_range(NCHUNK, 1, ith, nth, &lo, &hi);
    for (ch = lo; ch < hi; ch++) {
        size_t a = ch * s->n / NCHUNK, b = (ch + 1) * s->n / NCHUNK;
        float acc = 0.0f;
        for (i = a; i < b; i++) acc += s->x[i] * s->x[i];
        s->part[ch] = acc;
    }
}

static double pool_sum(const float *x, size_t n) {
    sum_ctx s;
    double t = 0;
    int ch;
    s.x = x;
    s.n = n;
    prg_parallel(sum_task, &s);
    for (ch = 0; ch < NCHUNK; ch++) t += s.part[ch];
    return t;
}

static void nested_task(void *ctx, int ith, int nth) {
    count_ctx inner;
    (void)nth;
    memset(&inner, 0, sizeof inner);
    prg_parallel(count_task, &inner); /* inside a task: must run serially */
    ((int *)ctx)[ith] = inner.calls[0] == 1 && inner.nth_seen[0] == 1;
}

/* Shared chunks: who took each chunk, in what order; thread `slow` starts
   late (it sleeps first), so the others should take most of its share. */
#define SHARE_N 40
typedef struct share_ctx {
    int owner[SHARE_N], taken[SHARE_N], order[8][SHARE_N], count[8];
    int slow;
} share_ctx;

static void share_task(void *ctx, int ith, int nth) {
    share_ctx *s = (share_ctx *)ctx;
    prg__share sh;
    size_t k;
    if (ith == s->slow) {
        struct timespec ts = {0, 30 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    prg__share_init(&sh, SHARE_N, ith, nth);
    while (prg__share_next(&sh, &k)) {
        struct timespec work = {0, 200 * 1000}; /* chunks long enough for the threads to overlap */
        nanosleep(&work, NULL);
        __atomic_fetch_add(&s->taken[k], 1, __ATOMIC_RELAXED);
        s->owner[k] = ith;
        s->order[ith][s->count[ith]++] = (int)k;
    }
}

/* Who ran each part of a job: the caller takes the parts no worker has
   started, so a part must run exactly once whoever runs it. */
typedef struct who_ctx { pthread_t caller; int runs[8]; int by_caller[8]; } who_ctx;

static void who_task(void *ctx, int ith, int nth) {
    who_ctx *w = (who_ctx *)ctx;
    (void)nth;
    w->runs[ith]++;
    if (pthread_equal(pthread_self(), w->caller)) w->by_caller[ith]++;
}

int main(void) {
    prg_rng r1, r2, r3;
    int i, same = 0, n;
    double mean = 0, var = 0;
    float *x;
    size_t lo, hi, total;

    /* results and errors */
    CHECK(strcmp(prg_result_str(PRG_OK), "ok") == 0, "PRG_OK string");
    CHECK(strcmp(prg_result_str(PRG_ERR_FORMAT), "bad file format") == 0, "format string");
    CHECK(prg_gemm_set_kernel("bogus") != PRG_OK && strlen(prg_last_error()) > 0,
          "a failure leaves a message");

    /* RNG: reproducible, streams differ, moments right */
    prg_rng_seed(&r1, 42, 0);
    prg_rng_seed(&r2, 42, 0);
    prg_rng_seed(&r3, 42, 1);
    for (i = 0; i < 100; i++) {
        uint64_t a = prg_rng_u64(&r1), b = prg_rng_u64(&r2), c = prg_rng_u64(&r3);
        CHECK(a == b, "same seed, same stream differ at %d", i);
        same += a == c;
    }
    CHECK(same == 0, "streams 0 and 1 of one seed overlap (%d equal draws)", same);
    for (i = 0; i < 200000; i++) {
        float z = prg_rng_normal(&r1), u = prg_rng_uniform(&r2);
        if (!(u >= 0.0f && u < 1.0f) || !isfinite(z)) { CHECK(0, "draw out of range u=%g z=%g", u, z); break; }
        mean += z;
        var += (double)z * z;
    }
    mean /= 200000;
    var = var / 200000 - mean * mean;
    CHECK(fabs(mean) < 0.01 && fabs(var - 1.0) < 0.02, "normal moments mean=%g var=%g", mean, var);
    {
        int hist[7] = {0};
        for (i = 0; i < 70000; i++) hist[prg_rng_below(&r1, 7)]++;
        for (i = 0; i < 7; i++) CHECK(abs(hist[i] - 10000) < 500, "below(7) bucket %d has %d", i, hist[i]);
    }

    /* aligned allocation */
    for (i = 1; i < 2000; i += 333) {
        void *p = prg_alloc((size_t)i);
        CHECK(p && ((uintptr_t)p & 63) == 0, "prg_alloc(%d) not 64-byte aligned", i);
        memset(p, 1, (size_t)i);
        prg_free(p);
    }
    CHECK(prg_alloc(SIZE_MAX - 8) == NULL, "absurd allocation did not fail");

    /* split_range: covers [0, n) exactly once, aligned boundaries */
    for (n = 1; n <= 5; n++) {
        total = 0;
        for (i = 0; i < n; i++) {
            prg_split_range(1000, 16, i, n, &lo, &hi);
            CHECK(lo % 16 == 0 && lo <= hi && (hi % 16 == 0 || hi == 1000), "split %d/%d: [%zu,%zu)", i, n, lo, hi);
            total += hi - lo;
        }
        CHECK(total == 1000, "split over %d threads covers %zu of 1000", n, total);
    }

    /* pool: each ith once, for several sizes; nested calls serial */
    for (n = 1; n <= 4; n++) {
        count_ctx c;
        int nested[64] = {0}, ok = 1;
        memset(&c, 0, sizeof c);
        prg_set_num_threads(n);
        CHECK(prg_get_num_threads() == n, "set %d threads, got %d", n, prg_get_num_threads());
        for (i = 0; i < 50; i++) prg_parallel(count_task, &c);
        for (i = 0; i < n; i++) ok &= c.calls[i] == 50 && c.nth_seen[i] == n;
        CHECK(ok && c.calls[n] == 0, "with %d threads each ith must run 50 times", n);
        prg_parallel(nested_task, nested);
        for (i = 0; i < n; i++) CHECK(nested[i] == 1, "nested call in thread %d of %d not serial", i, n);
    }

    /* parts no worker has started: after 20 ms idle the worker sleeps on its
       condition variable, and a job whose own part is empty is back in the
       caller long before the worker wakes up; the caller then runs the
       worker's part itself (it cannot wait for a worker the system does not
       schedule; under an emulator the worker's polling alone can last
       milliseconds, so the idle time is long).  Every part still runs
       exactly once. */
    {
        int rep, once = 1, stolen = 0;
        prg_set_num_threads(2);
        for (rep = 0; rep < 200 && (rep < 30 || stolen == 0); rep++) {
            struct timespec idle = {0, 20 * 1000 * 1000};
            who_ctx w;
            memset(&w, 0, sizeof w);
            w.caller = pthread_self();
            nanosleep(&idle, NULL);
            prg_parallel(who_task, &w);
            once &= w.runs[0] == 1 && w.runs[1] == 1 && w.by_caller[0] == 1;
            stolen += w.by_caller[1];
        }
        printf("pool: the caller ran a sleeping worker's part in %d of %d jobs\n", stolen, rep);
        CHECK(once, "every part of a job must run exactly once, part 0 on the caller");
        CHECK(stolen > 0, "the caller never took the part of a sleeping worker (%d jobs)", rep);
    }

    /* shared chunks: each taken once; a thread runs its own share first, in
       order; a late thread's share goes to the others */
    for (n = 1; n <= 3; n++) {
        share_ctx sc;
        int once = 1, own_first = 1, t, j;
        memset(&sc, 0, sizeof sc);
        sc.slow = n - 1;
        prg_set_num_threads(n);
        prg_parallel(share_task, &sc);
        for (i = 0; i < SHARE_N; i++) once &= sc.taken[i] == 1;
        CHECK(once, "with %d threads every chunk must be taken exactly once", n);
        for (t = 0; t < n; t++) { /* its own chunks rising, and all before any other's */
            size_t lo, hi;
            int prev = -1, stole = 0;
            prg_split_range(SHARE_N, 1, t, n, &lo, &hi);
            for (j = 0; j < sc.count[t]; j++) {
                int k = sc.order[t][j], own = k >= (int)lo && k < (int)hi;
                if (own) own_first &= !stole && k > prev;
                if (own) prev = k; else stole = 1;
            }
        }
        CHECK(own_first, "with %d threads a thread must take its own share first, in order", n);
        if (n > 1) {
            size_t lo, hi;
            prg_split_range(SHARE_N, 1, sc.slow, n, &lo, &hi);
            CHECK(sc.count[sc.slow] < (int)(hi - lo) / 2,
                  "with %d threads the late thread kept %d of its %d chunks", n, sc.count[sc.slow],
                  (int)(hi - lo));
        }
    }
    {   /* serial (one thread): the chunks in order */
        prg__share sh;
        size_t k, want = 0;
        int ok = 1;
        prg__share_init(&sh, 5, 0, 1);
        while (prg__share_next(&sh, &k)) ok &= k == want++;
        CHECK(ok && want == 5, "one thread must take chunks 0..4 in order (took %zu)", want);
    }

    /* the same reduction with 1..4 threads is bit-identical */
    x = (float *)prg_alloc(sizeof(float) * 100003);
    for (i = 0; i < 100003; i++) x[i] = prg_rng_normal(&r1);
    {
        double s1, sn;
        prg_set_num_threads(1);
        s1 = pool_sum(x, 100003);
        for (n = 2; n <= 4; n++) {
            prg_set_num_threads(n);
            sn = pool_sum(x, 100003);
            CHECK(memcmp(&s1, &sn, sizeof s1) == 0, "sum with %d threads %.17g != 1 thread %.17g", n, sn, s1);
        }
    }
    prg_free(x);
    prg_set_num_threads(0);
    return prg_test_finish("test_base");
}
