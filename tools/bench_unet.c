/* bench_unet: time per image of a U-Net forward pass and of a flow-matching
   training step (forward + ICFM loss + backward + Adam), and peak memory.

     bench_unet [--preset tiny32] [--batch 32] [--threads 2] [--reps 5]

   Prints one line: preset batch threads fwd_ms_per_image step_ms_per_image
   peak_rss_MiB.  tools/bench_unet.sh runs it beside PyTorch. */
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

static void usage(void) {
    printf("usage: bench_unet [--preset tiny32|small32|cifar32|imagenet64] [--batch N] [--threads N] [--reps N]\n");
}

int main(int argc, char **argv) {
    const char *preset = "tiny32";
    int batch = 32, threads = 2, reps = 5, i, r, b;
    prg_unet_config cfg;
    prg_unet *net;
    prg_adam *opt;
    prg_adam_config acfg;
    prg_rng rng;
    float *x0, *x1, *xt, *target, *v, *dv, *t;
    size_t img, n, j;
    double best_fwd = 1e30, best_step = 1e30, t0;
    struct rusage ru;
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--preset") && i + 1 < argc) preset = argv[++i];
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else { usage(); return strcmp(argv[i], "--help") ? 2 : 0; }
    }
    prg_set_num_threads(threads);
    if (prg_unet_config_preset(&cfg, preset) != PRG_OK || prg_unet_create(&net, &cfg, 1) != PRG_OK) {
        fprintf(stderr, "bench_unet: %s\n", prg_last_error());
        return 1;
    }
    prg_adam_config_default(&acfg);
    if (prg_adam_create(&opt, prg_unet_num_params(net), &acfg) != PRG_OK) {
        fprintf(stderr, "bench_unet: %s\n", prg_last_error());
        return 1;
    }
    img = (size_t)cfg.in_channels * cfg.image_size * cfg.image_size;
    n = img * batch;
    x0 = (float *)prg_alloc(6 * n * sizeof(float) + batch * sizeof(float));
    x1 = x0 + n; xt = x1 + n; target = xt + n; v = target + n; dv = v + n; t = dv + n;
    prg_rng_seed(&rng, 1, 0);
    for (j = 0; j < n; j++) x1[j] = prg_rng_normal(&rng);
    for (r = 0; r < reps + 1; r++) {
        /* ICFM pairs: x_t = (1 - t) x0 + t x1, target x1 - x0 */
        for (b = 0; b < batch; b++) t[b] = prg_rng_uniform(&rng);
        for (j = 0; j < n; j++) {
            float tb = t[j / img];
            x0[j] = prg_rng_normal(&rng);
            xt[j] = (1.0f - tb) * x0[j] + tb * x1[j];
            target[j] = x1[j] - x0[j];
        }
        t0 = now();
        prg_unet_forward(net, batch, xt, t, v);
        if (r > 0 && now() - t0 < best_fwd) best_fwd = now() - t0;
        t0 = now();
        prg_unet_forward(net, batch, xt, t, v);
        prg_flow_loss_forward_backward(dv, v, target, batch, cfg.out_channels, cfg.image_size * cfg.image_size);
        prg_unet_zero_grad(net);
        prg_unet_backward(net, dv, NULL);
        if (prg_adam_step(opt, prg_unet_params(net), prg_unet_grads(net), 1e-4, NULL) != PRG_OK) {
            fprintf(stderr, "bench_unet: %s\n", prg_last_error());
            return 1;
        }
        if (r > 0 && now() - t0 < best_step) best_step = now() - t0;
    }
    getrusage(RUSAGE_SELF, &ru);
    printf("%s %d %d %.3f %.3f %.0f\n", preset, batch, threads, 1e3 * best_fwd / batch, 1e3 * best_step / batch,
           ru.ru_maxrss / 1024.0);
    prg_free(x0);
    prg_adam_free(opt);
    prg_unet_free(net);
    return 0;
}
