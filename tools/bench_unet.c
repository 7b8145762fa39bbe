/* U-Net speed: forward and forward+backward of a preset at a batch size,
   best of several runs, and the memory the activations take.
       build/bench_unet [preset=tiny32] [batch=32] [threads=0 (all)] [runs=5]
   Compare with PyTorch: /usr/bin/python3 tools/ref_unet.py bench 32 */
#define _POSIX_C_SOURCE 200112L /* clock_gettime */
#define PRG_IMPLEMENTATION
#include "prg.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    const char *preset = argc > 1 ? argv[1] : "tiny32";
    int batch = argc > 2 ? atoi(argv[2]) : 32, threads = argc > 3 ? atoi(argv[3]) : 0;
    int runs = argc > 4 ? atoi(argv[4]) : 5, i;
    prg_unet_config cfg;
    prg_unet *net;
    prg_rng rng;
    size_t n, j;
    float *x, *v, *t;
    double fwd = 1e30, both = 1e30, t0;
    if (batch < 1 || runs < 1 || prg_unet_config_preset(&cfg, preset) != PRG_OK ||
        prg_unet_create(&net, &cfg, 1) != PRG_OK) {
        fprintf(stderr, "bench_unet: %s\n", batch < 1 || runs < 1 ? "bad batch or runs" : prg_last_error());
        return 1;
    }
    prg_set_num_threads(threads);
    n = (size_t)batch * cfg.in_channels * cfg.image_size * cfg.image_size;
    x = (float *)malloc(n * sizeof(float));
    v = (float *)malloc(n * sizeof(float));
    t = (float *)malloc((size_t)batch * sizeof(float));
    prg_rng_seed(&rng, 1, 0);
    for (j = 0; j < n; j++) x[j] = prg_rng_normal(&rng);
    for (i = 0; i < batch; i++) t[i] = prg_rng_uniform(&rng);
    for (i = 0; i <= runs; i++) { /* run 0 warms up (allocates the activations) */
        t0 = now();
        if (prg_unet_forward(net, batch, x, t, v) != PRG_OK) {
            fprintf(stderr, "bench_unet: %s\n", prg_last_error());
            return 1;
        }
        if (i) fwd = now() - t0 < fwd ? now() - t0 : fwd;
        t0 = now();
        prg_unet_forward(net, batch, x, t, v);
        prg_unet_backward(net, v, NULL); /* loss 0.5 * sum(v^2) */
        if (i) both = now() - t0 < both ? now() - t0 : both;
    }
    printf("prg.h %s batch %d, %d threads, %s kernel: forward %.1f ms (%.2f ms/image), "
           "forward+backward %.1f ms (%.2f ms/image); activations %.1f MB, params %.2f M\n",
           preset, batch, prg_get_num_threads(), prg_gemm_kernel_name(), fwd * 1e3, fwd * 1e3 / batch,
           both * 1e3, both * 1e3 / batch, (double)prg_unet_activation_bytes(net) / 1e6,
           (double)prg_unet_num_params(net) / 1e6);
    prg_unet_free(net);
    free(x);
    free(v);
    free(t);
    return 0;
}
