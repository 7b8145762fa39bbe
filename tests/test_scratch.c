/* The engine's memory: every allocation goes through PRG_MALLOC / PRG_FREE,
   here a counting pair, and a program that has freed its nets holds nothing
   (the GEMM's packing buffers, the plans' kept Winograd weights, the
   workspaces); after prg_sgemm alone, prg_release_scratch frees the packing
   buffers.  Also the U-Net's plans: one per convolution, each the algorithm
   its shape gets from prg__conv_plan_set. */
#include <stdlib.h>
static long test_live = 0;   /* blocks allocated and not yet freed */
static long test_allocs = 0; /* blocks allocated so far */
static void *test_malloc(size_t n) {
    void *p = malloc(n);
    if (p) {
        test_live++;
        test_allocs++;
    }
    return p;
}
static void test_free(void *p) {
    if (p) test_live--;
    free(p);
}
#define PRG_MALLOC(n) test_malloc(n)
#define PRG_FREE(p) test_free(p)
#define PRG_IMPLEMENTATION
#include "../prg.h"
#include "prg_test.h"
#include <string.h>

/* a small net whose 16 x 16 and 8 x 8 convolutions take Winograd (and, with
   AVX-512, F(4x4,3x3) and the direct kernels) */
static prg_unet_config small_config(void) {
    prg_unet_config c;
    CHECK(prg_unet_config_preset(&c, "tiny32") == PRG_OK, "tiny32: %s", prg_last_error());
    c.image_size = 16;
    c.model_channels = 16;
    c.groups = 8;
    return c;
}

static void fill(float *x, size_t n, prg_rng *r) {
    size_t i;
    for (i = 0; i < n; i++) x[i] = 2.0f * prg_rng_uniform(r) - 1.0f;
}

/* forward, backward and an encode (which keeps its Winograd weights) */
static void run_net(prg_unet *net, int batch, prg_rng *r) {
    const prg_unet_config *c = prg_unet_config_get(net);
    size_t n = (size_t)batch * c->in_channels * c->image_size * c->image_size;
    float *x = (float *)malloc(n * sizeof(float)), *v = (float *)malloc(n * sizeof(float));
    float t[8];
    int b;
    fill(x, n, r);
    for (b = 0; b < batch; b++) t[b] = prg_rng_uniform(r);
    CHECK(prg_unet_forward(net, batch, x, t, v) == PRG_OK, "forward: %s", prg_last_error());
    CHECK(prg_unet_backward(net, v, NULL) == PRG_OK, "backward: %s", prg_last_error());
    CHECK(prg_encode(net, 4, 0, batch, x, v) == PRG_OK, "encode: %s", prg_last_error());
    free(x);
    free(v);
}

static void test_nets_release(void) {
    prg_unet_config c = small_config();
    prg_unet *a = NULL, *b = NULL;
    prg_rng r;
    long live0 = test_live, allocs0 = test_allocs;
    prg_rng_seed(&r, 7, 0);
    CHECK(prg_unet_create(&a, &c, 1) == PRG_OK, "create: %s", prg_last_error());
    CHECK(prg_unet_create(&b, &c, 2) == PRG_OK, "create: %s", prg_last_error());
    run_net(a, 4, &r);
    run_net(b, 2, &r);
    CHECK(test_allocs > allocs0 && test_live > live0, "the nets allocated nothing through PRG_MALLOC");
    prg_unet_free(a);
    run_net(b, 3, &r); /* a net still alive: its scratch is there for it */
    CHECK(test_live > live0, "freeing one of two nets freed the other's memory");
    prg_unet_free(b);
    CHECK(test_live == live0, "%ld blocks still allocated after the last net was freed", test_live - live0);
}

static void test_sgemm_release(void) {
    const int n = 300;
    float *a = (float *)malloc((size_t)n * n * sizeof(float)), *cm = (float *)malloc((size_t)n * n * sizeof(float));
    prg_rng r;
    long live0 = test_live;
    prg_rng_seed(&r, 8, 0);
    fill(a, (size_t)n * n, &r);
    prg_sgemm(0, 1, n, n, n, 1.0f, a, n, a, n, 0.0f, cm, n);
    CHECK(test_live > live0, "a %d^3 product kept no packing buffers", n);
    prg_release_scratch();
    CHECK(test_live == live0, "%ld blocks still allocated after prg_release_scratch", test_live - live0);
    prg_sgemm(0, 1, n, n, n, 1.0f, a, n, a, n, 0.0f, cm, n); /* they come back when needed */
    prg_release_scratch();
    CHECK(test_live == live0, "%ld blocks still allocated after the second release", test_live - live0);
    free(a);
    free(cm);
}

/* The net's plans are the plans of its convolutions' shapes, made for the
   batch of the last forward: the same choices as a one-shot plan */
static void test_net_plans(void) {
    prg_unet_config c = small_config();
    prg_unet *net = NULL;
    prg_rng r;
    int i, nconv = 0, same = 1, batch;
    prg_rng_seed(&r, 9, 0);
    CHECK(prg_unet_create(&net, &c, 3) == PRG_OK, "create: %s", prg_last_error());
    for (batch = 1; batch <= 4; batch += 3) {
        run_net(net, batch, &r);
        CHECK(net->plan_batch == batch, "plans for batch %d after a forward of %d", net->plan_batch, batch);
        for (i = 0; i < net->nmods; i++) {
            const prg__unet_mod *m = &net->mods[i];
            const prg__conv_plan *p;
            prg__conv_plan q;
            if (m->type != PRG__UM_CONV && m->type != PRG__UM_RES) continue;
            p = &net->plans[m->par + (m->type == PRG__UM_RES ? 2 : 0)];
            memset(&q, 0, sizeof q);
            prg__conv_plan_set(&q, batch, m->cin, m->h, m->w, m->cout, m->type == PRG__UM_RES ? 3 : m->k,
                               m->type == PRG__UM_RES ? 1 : m->stride, m->type == PRG__UM_RES ? 1 : m->pad);
            if (p->fwd != q.fwd || p->dx != q.dx || p->dw != q.dw || p->c.b != batch) same = 0;
            nconv++;
        }
    }
    CHECK(nconv > 10 && same, "the net's plans (%d looked at) differ from one-shot plans of their shapes", nconv);
    /* the first convolution, 3 -> 16 channels on 16 x 16: few channels in */
    {
        const prg__conv_plan *p = &net->plans[net->mods[0].par];
        prg__conv_algo want = prg__cpu_get()->vec.direct ? PRG__CONV_DIRECT : PRG__CONV_IMPLICIT;
        CHECK(net->mods[0].type == PRG__UM_CONV && p->fwd == want, "first conv: algorithm %d, want %d", (int)p->fwd,
              (int)want);
    }
    prg_unet_free(net);
}

int main(void) {
    prg_set_num_threads(2);
    test_nets_release();
    test_sgemm_release();
    test_net_plans();
    prg_gemm_set_kernel("scalar"); /* the scalar table's plans and memory too */
    test_nets_release();
    test_net_plans();
    prg_gemm_set_kernel("auto");
    return prg_test_finish("test_scratch");
}
