/* bench_encode: throughput of the reverse-ODE encoder (prg_encode: data ->
   noise through t_span - 1 Euler steps of the lean U-Net forward) and peak
   memory.

     bench_encode [--preset tiny32] [--batch 8] [--t-span 32] [--threads 2] [--reps 2]

   An untimed encode with t_span 2 (one Euler step: every buffer allocated,
   the kernels warm), then --reps timed encodes of the full grid, best kept.
   Prints one line: preset batch threads t_span images_per_s peak_rss_MiB
   (getrusage ru_maxrss of this process: parameters, activations, the batch
   and its code).  tools/bench_encode.sh runs it beside PyTorch. */
#define PRG_IMPLEMENTATION
#include "prg.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

int main(int argc, char **argv) {
    const char *preset = "tiny32";
    int batch = 8, t_span = 32, threads = 2, reps = 2, i, r;
    prg_unet_config cfg;
    prg_unet *net;
    prg_rng rng;
    float *x, *z;
    size_t n, j;
    double best = 1e30, t0;
    struct rusage ru;
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--preset") && i + 1 < argc) preset = argv[++i];
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--t-span") && i + 1 < argc) t_span = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else {
            printf("usage: bench_encode [--preset tiny32|small32|cifar32|imagenet64] [--batch N] [--t-span N] "
                   "[--threads N] [--reps N]\n");
            return strcmp(argv[i], "--help") ? 2 : 0;
        }
    }
    if (batch < 1 || t_span < 2 || reps < 1) {
        fprintf(stderr, "bench_encode: need --batch >= 1, --t-span >= 2, --reps >= 1\n");
        return 2;
    }
    prg_set_num_threads(threads);
    if (prg_unet_config_preset(&cfg, preset) != PRG_OK || prg_unet_create(&net, &cfg, 1) != PRG_OK) {
        fprintf(stderr, "bench_encode: %s\n", prg_last_error());
        return 1;
    }
    n = (size_t)batch * cfg.in_channels * cfg.image_size * cfg.image_size;
    x = (float *)malloc(2 * n * sizeof(float));
    if (!x) {
        fprintf(stderr, "bench_encode: out of memory\n");
        return 1;
    }
    z = x + n;
    prg_rng_seed(&rng, 5, 0);
    for (j = 0; j < n; j++) x[j] = prg_rng_normal(&rng);
    for (r = 0; r <= reps; r++) {
        t0 = now();
        if (prg_encode(net, r ? t_span : 2, 0, batch, x, z) != PRG_OK) {
            fprintf(stderr, "bench_encode: %s\n", prg_last_error());
            return 1;
        }
        if (r > 0 && now() - t0 < best) best = now() - t0;
    }
    getrusage(RUSAGE_SELF, &ru);
    printf("%s %d %d %d %.2f %.0f\n", preset, batch, threads, t_span, batch / best, ru.ru_maxrss / 1024.0);
    free(x);
    prg_unet_free(net);
    return 0;
}
