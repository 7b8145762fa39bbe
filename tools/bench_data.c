/* Throughput of the data pipeline: images per second of prg_batch_build for
   the reference transforms, and how long a training loop waits in
   prg_loader_next when each step takes a given time.
   Usage: bench_data [threads]   (default: all online CPUs) */
#define PRG_IMPLEMENTATION
#include "prg.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static prg_dataset make_ds(int n, int s) {
    prg_dataset ds;
    size_t i, total = (size_t)n * 3 * s * s;
    prg_rng r;
    ds.n = n; ds.c = 3; ds.h = s; ds.w = s; ds.num_classes = 10;
    ds.images = (uint8_t *)malloc(total);
    ds.labels = (int32_t *)malloc((size_t)n * sizeof(int32_t));
    prg_rng_seed(&r, 1, 0);
    /* smooth content plus noise, like a photo */
    for (i = 0; i < total; i++) ds.images[i] = (uint8_t)(((i % (size_t)s) * 3 + (i / (size_t)s) % 97 + prg_rng_below(&r, 40)) & 255);
    for (i = 0; i < (size_t)n; i++) ds.labels[i] = (int32_t)(i % 10);
    return ds;
}

static void bench_build(const char *name, const prg_dataset *ds, const prg_transform *t, int batch) {
    float *x = (float *)malloc((size_t)batch * 3 * t->out_h * t->out_w * sizeof(float));
    int *idx = (int *)malloc((size_t)batch * sizeof(int));
    int i, reps = 0;
    double t0, dt;
    for (i = 0; i < batch; i++) idx[i] = i % ds->n;
    prg_batch_build(x, NULL, ds, t, idx, batch, 1, 0); /* warm up */
    t0 = now();
    do {
        if (prg_batch_build(x, NULL, ds, t, idx, batch, 1, (uint64_t)reps + 1) != PRG_OK) {
            printf("error: %s\n", prg_last_error());
            exit(1);
        }
        reps++;
        dt = now() - t0;
    } while (dt < 1.0);
    printf("%-34s batch %4d: %8.2f ms/batch  %9.0f images/s\n", name, batch, 1e3 * dt / reps,
           reps * batch / dt);
    free(x);
    free(idx);
}

/* a training loop whose steps take step_ms of CPU work on the calling thread */
static void bench_loader(const prg_dataset *ds, const prg_transform *t, int batch, double step_ms) {
    prg_loader_config cfg;
    prg_loader *ld;
    prg_batch b;
    double wait = 0, first, t0;
    int s, steps = 20;
    volatile double sink = 0;
    prg_loader_config_default(&cfg, batch, 3);
    if (prg_loader_create(&ld, ds, t, &cfg) != PRG_OK) {
        printf("error: %s\n", prg_last_error());
        exit(1);
    }
    t0 = now();
    prg_loader_next(ld, &b);
    first = now() - t0;
    for (s = 0; s < steps; s++) {
        double w0, end = now() + step_ms * 1e-3;
        while (now() < end) sink += 1.0; /* the "training step" */
        w0 = now();
        prg_loader_next(ld, &b);
        wait += now() - w0;
    }
    (void)sink;
    printf("loader, batch %d, %5.0f ms steps: first batch %.1f ms, then %.3f ms wait per step\n", batch,
           step_ms, 1e3 * first, 1e3 * wait / steps);
    prg_loader_free(ld);
}

int main(int argc, char **argv) {
    prg_dataset d32 = make_ds(512, 32), d64 = make_ds(256, 64);
    prg_transform t;
    prg_set_num_threads(argc > 1 ? atoi(argv[1]) : 0);
    printf("prg.h data pipeline, %d threads\n", prg_get_num_threads());
    prg_transform_init(&t, 1, 3, 32, 32);
    bench_build("train 32 (crop4 flip RA erase)", &d32, &t, 128);
    prg_transform_init(&t, 0, 3, 32, 32);
    bench_build("eval 32 (normalise)", &d32, &t, 128);
    prg_transform_init(&t, 1, 3, 64, 64);
    bench_build("train 64 (RRC flip RA erase)", &d64, &t, 128);
    prg_transform_init(&t, 0, 3, 64, 64);
    bench_build("eval 64 (resize 73, crop 64)", &d64, &t, 128);
    prg_transform_init(&t, 1, 3, 64, 64);
    bench_loader(&d64, &t, 128, 100.0);
    free(d32.images); free(d32.labels); free(d64.images); free(d64.labels);
    return 0;
}
