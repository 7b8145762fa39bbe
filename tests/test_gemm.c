/* prg_sgemm: every kernel this CPU can run, forced one at a time, against a
   double-precision reference, with an error bound that scales with K. */
#define PRG_IMPLEMENTATION
#include "../prg.h"
#include "prg_test.h"
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const int sizes[] = {1, 2, 3, 7, 16, 17, 63, 64, 65, 127, 257};
#define NSIZES ((int)(sizeof sizes / sizeof sizes[0]))

static void fill(float *x, size_t n, prg_rng *r) {
    size_t i;
    for (i = 0; i < n; i++) x[i] = 2.0f * prg_rng_uniform(r) - 1.0f;
}

/* Runs one product and checks every element against the double reference:
   |c - ref| <= 2 (k + 2) eps (|alpha| sum_p |a_ip b_pj| + |beta c_ij|). */
static int check_one(int ta, int tb, int m, int n, int k, float alpha, float beta, int pad,
                     int nan_c, prg_rng *r) {
    int lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
    size_t sa = (size_t)(ta ? k : m) * lda, sb = (size_t)(tb ? n : k) * ldb, sc = (size_t)m * ldc;
    float *a = (float *)malloc(sa * sizeof(float)), *b = (float *)malloc(sb * sizeof(float));
    float *c = (float *)malloc(sc * sizeof(float)), *c0 = (float *)malloc(sc * sizeof(float));
    int i, j, p, bad = 0;
    fill(a, sa, r);
    fill(b, sb, r);
    fill(c0, sc, r);
    if (nan_c)
        for (i = 0; i < (int)sc; i++) c0[i] = NAN;
    memcpy(c, c0, sc * sizeof(float));
    prg_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    for (i = 0; i < m && !bad; i++) {
        for (j = 0; j < ldc; j++) {
            double s = 0, sabs = 0, ref, bound, cold = c0[(size_t)i * ldc + j];
            if (j >= n) { /* padding columns of C must be untouched */
                float got = c[(size_t)i * ldc + j];
                if (memcmp(&got, &c0[(size_t)i * ldc + j], sizeof got) != 0) bad = 1;
                continue;
            }
            for (p = 0; p < k; p++) {
                double av = ta ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p];
                double bv = tb ? b[(size_t)j * ldb + p] : b[(size_t)p * ldb + j];
                s += av * bv;
                sabs += fabs(av * bv);
            }
            ref = alpha * s + (beta != 0.0f ? beta * cold : 0.0);
            bound = 2.0 * (k + 2) * FLT_EPSILON *
                    (fabs(alpha) * sabs + (beta != 0.0f ? fabs(beta * cold) : 0.0)) + 1e-30;
            if (!(fabs(c[(size_t)i * ldc + j] - ref) <= bound)) {
                printf("  m=%d n=%d k=%d ta=%d tb=%d alpha=%g beta=%g: c[%d][%d]=%.9g ref=%.9g\n",
                       m, n, k, ta, tb, alpha, beta, i, j, c[(size_t)i * ldc + j], ref);
                bad = 1;
                break;
            }
        }
    }
    free(a); free(b); free(c); free(c0);
    return !bad;
}

/* All transposes, alphas and betas for one shape; returns the failures. */
static int check_shape(const char *kern, int m, int n, int k, int pad, prg_rng *r) {
    static const float alphas[] = {1.0f, -0.5f}, betas[] = {0.0f, 1.0f, 0.3f};
    int ta, tb, ia, ib, fails = 0;
    for (ta = 0; ta < 2; ta++)
        for (tb = 0; tb < 2; tb++)
            for (ia = 0; ia < 2; ia++)
                for (ib = 0; ib < 3; ib++)
                    if (!check_one(ta, tb, m, n, k, alphas[ia], betas[ib], pad, 0, r)) fails++;
    CHECK(fails == 0, "%s: %d of 24 variants wrong at m=%d n=%d k=%d pad=%d", kern, fails, m, n, k,
          pad);
    return fails;
}

int main(void) {
    static const char *kernels[] = {"avx512", "avx2", "neon", "scalar"};
    prg_rng r;
    int ki, threads, i, s1, s2;
    prg_rng_seed(&r, 1234, 0);
    for (ki = 0; ki < 4; ki++) {
        const char *kern = kernels[ki];
        if (prg_gemm_set_kernel(kern) != PRG_OK) {
            printf("  kernel %s: not on this CPU/build (%s)\n", kern, prg_last_error());
            continue;
        }
        CHECK(strcmp(prg_gemm_kernel_name(), kern) == 0, "forced %s, got %s", kern,
              prg_gemm_kernel_name());
        for (threads = 1; threads <= 2; threads++) {
            prg_set_num_threads(threads);
            /* each size in each dimension, the other two small and odd */
            for (i = 0; i < NSIZES; i++) {
                check_shape(kern, sizes[i], 17, 7, 0, &r);
                check_shape(kern, 17, sizes[i], 7, 0, &r);
                check_shape(kern, 7, 17, sizes[i], 0, &r);
                check_shape(kern, sizes[i], 65, 63, 3, &r);
                check_shape(kern, 65, sizes[i], 63, 3, &r);
                check_shape(kern, 63, 65, sizes[i], 3, &r);
            }
            /* large enough to be blocked in K, M and N and split across threads */
            check_shape(kern, 257, 257, 257, 1, &r);
            check_shape(kern, 127, 513, 421, 0, &r);
            check_shape(kern, 300, 64, 1100, 2, &r);
            check_shape(kern, 1100, 33, 70, 1, &r); /* several blocks of A rows */
            /* rows of C 4 KiB apart (ldc = 1024) and several K blocks: the
               path that accumulates in a buffer of another stride */
            check_shape(kern, 30, 1000, 300, 24, &r);
            /* several blocks of A rows, K blocks and B panels: the path that
               keeps B's packed panels for the later blocks of rows */
            for (s1 = 0; s1 < 4; s1++)
                CHECK(check_one(s1 & 1, s1 >> 1, 600, 70, 300, -0.5f, 0.3f, 2, 0, &r),
                      "%s: m=600 n=70 k=300 ta=%d tb=%d wrong", kern, s1 & 1, s1 >> 1);
            /* NaN in C with beta = 0 must not leak */
            for (s1 = 0; s1 < NSIZES; s1 += 3)
                CHECK(check_one(s1 & 1, (s1 >> 1) & 1, sizes[s1], 65, 127, 1.0f, 0.0f, 1, 1, &r),
                      "%s: NaN in C leaked with beta=0 at m=%d", kern, sizes[s1]);
        }
        /* 1 and 2 threads give bit-identical results */
        for (s2 = 0; s2 < 3; s2++) {
            int m = s2 == 0 ? 300 : 64, n = s2 == 1 ? 700 : 96, k = 300;
            float *a = (float *)malloc(sizeof(float) * m * k), *b = (float *)malloc(sizeof(float) * k * n);
            float *c1 = (float *)malloc(sizeof(float) * m * n), *c2 = (float *)malloc(sizeof(float) * m * n);
            fill(a, (size_t)m * k, &r);
            fill(b, (size_t)k * n, &r);
            prg_set_num_threads(1);
            prg_sgemm(0, s2 == 2, m, n, k, 1.0f, a, k, b, s2 == 2 ? k : n, 0.0f, c1, n);
            prg_set_num_threads(2);
            prg_sgemm(0, s2 == 2, m, n, k, 1.0f, a, k, b, s2 == 2 ? k : n, 0.0f, c2, n);
            CHECK(memcmp(c1, c2, sizeof(float) * m * n) == 0,
                  "%s: 1 and 2 threads differ at m=%d n=%d k=%d", kern, m, n, k);
            free(a); free(b); free(c1); free(c2);
        }
        /* the same bits for a tall product (B's panels kept for the later
           blocks of A rows) as for its rows taken in slices (each slice one
           block of A rows: B packed for it alone) */
        prg_set_num_threads(1);
        {
            int m = 1100, n = 200, k = 300, bad;
            float *a = (float *)malloc(sizeof(float) * m * k), *b = (float *)malloc(sizeof(float) * k * n);
            float *c1 = (float *)malloc(sizeof(float) * m * n), *c2 = (float *)malloc(sizeof(float) * m * n);
            fill(a, (size_t)m * k, &r);
            fill(b, (size_t)k * n, &r);
            prg_sgemm(0, 0, m, n, k, 1.0f, a, k, b, n, 0.0f, c1, n);
            for (i = 0; i < m; i += 100)
                prg_sgemm(0, 0, 100, n, k, 1.0f, a + (size_t)i * k, k, b, n, 0.0f,
                          c2 + (size_t)i * n, n);
            bad = memcmp(c1, c2, sizeof(float) * m * n) != 0;
            CHECK(!bad, "%s: m=1100 differs from its slices of 100 rows", kern);
            free(a); free(b); free(c1); free(c2);
        }
        /* both large-product paths at once (several blocks of A rows, C's
           rows 4 KiB apart): the same bits with 1 and 2 threads as the plain
           path (slices of 100 rows, ldc 1040), for beta 0 (C full of NaN)
           and 0.3 */
        for (s2 = 0; s2 < 2; s2++) {
            int m = 1100, n = 1000, k = 300, t, bad = 0;
            float beta = s2 ? 0.3f : 0.0f;
            float *a = (float *)malloc(sizeof(float) * m * k), *b = (float *)malloc(sizeof(float) * k * n);
            float *c0 = (float *)malloc(sizeof(float) * m * 1024), *c1 = (float *)malloc(sizeof(float) * m * 1024);
            float *c2 = (float *)malloc(sizeof(float) * m * 1040);
            fill(a, (size_t)m * k, &r);
            fill(b, (size_t)k * n, &r);
            fill(c0, (size_t)m * 1024, &r);
            if (!s2)
                for (i = 0; i < m * 1024; i++) c0[i] = NAN;
            prg_set_num_threads(1);
            for (i = 0; i < m; i++) memcpy(c2 + (size_t)i * 1040, c0 + (size_t)i * 1024, sizeof(float) * n);
            for (i = 0; i < m; i += 100)
                prg_sgemm(0, 0, 100, n, k, 1.0f, a + (size_t)i * k, k, b, n, beta,
                          c2 + (size_t)i * 1040, 1040);
            for (t = 1; t <= 2; t++) {
                prg_set_num_threads(t);
                memcpy(c1, c0, sizeof(float) * m * 1024);
                prg_sgemm(0, 0, m, n, k, 1.0f, a, k, b, n, beta, c1, 1024);
                for (i = 0, bad = 0; i < m; i++)
                    if (memcmp(c1 + (size_t)i * 1024, c2 + (size_t)i * 1040, sizeof(float) * n)) bad++;
                CHECK(bad == 0, "%s, beta %g, %d threads: %d rows differ from the plain path", kern,
                      beta, t, bad);
            }
            free(a); free(b); free(c0); free(c1); free(c2);
        }
        /* the same bits whatever the stride of C (4 KiB apart or not) */
        for (threads = 1; threads <= 2; threads++) {
            int m = 45, n = 1000, k = 700, ld;
            float *a = (float *)malloc(sizeof(float) * m * k), *b = (float *)malloc(sizeof(float) * k * n);
            float *c1 = (float *)malloc(sizeof(float) * m * 2048), *c2 = (float *)malloc(sizeof(float) * m * 1040);
            fill(a, (size_t)m * k, &r);
            fill(b, (size_t)k * n, &r);
            fill(c1, (size_t)m * 2048, &r);
            for (i = 0; i < m; i++) memcpy(c2 + (size_t)i * 1040, c1 + (size_t)i * 2048, sizeof(float) * n);
            prg_set_num_threads(threads);
            prg_sgemm(0, 0, m, n, k, -0.5f, a, k, b, n, 0.3f, c1, 2048);
            prg_sgemm(0, 0, m, n, k, -0.5f, a, k, b, n, 0.3f, c2, 1040);
            for (i = 0, ld = 0; i < m; i++)
                if (memcmp(c1 + (size_t)i * 2048, c2 + (size_t)i * 1040, sizeof(float) * n)) ld++;
            CHECK(ld == 0, "%s, %d threads: %d rows differ between ldc 2048 and 1040", kern, threads, ld);
            free(a); free(b); free(c1); free(c2);
        }
    }
    CHECK(prg_gemm_set_kernel("no-such-kernel") == PRG_ERR_UNSUPPORTED, "unknown kernel accepted");
    CHECK(strstr(prg_last_error(), "no-such-kernel") != NULL, "error does not name the kernel: %s",
          prg_last_error());
    CHECK(prg_gemm_set_kernel("auto") == PRG_OK, "auto refused");
    return prg_test_finish("test_gemm");
}
