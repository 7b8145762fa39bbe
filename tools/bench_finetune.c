/* bench_finetune: one PRG fine-tuning step (classifier forward through M
   Euler steps, label-smoothing loss, exact backward, AdamW over the U-Net
   and head blocks): time and peak memory, in two modes, each in a process
   of its own (so each has its own peak RSS): every step's U-Net forward
   recomputed by backward (budget 0), then the steps' activations kept as
   the library's default budget allows (prg_classifier_set_memory_budget).

     bench_finetune [--preset tiny32] [--batch 8] [--steps 4] [--threads 2] [--reps 2] [--min-seconds 0]
                    [--keep-mb N] [--infer]

   Times reps steps after an untimed one, then more (at most 50) until the
   timed ones add up to --min-seconds, and keeps the best.

   Prints a line per mode: preset batch steps ms_per_step peak_rss_MiB
   states_MiB, and for a mode that keeps steps: kept=K/M.  --keep-mb N runs
   one mode with that budget (0: recompute).
   --infer: classification only, prg_classifier_forward (the training
   forward) then prg_classifier_predict (the lean one), each in its own
   process: preset batch steps train|lean ms peak_rss_MiB
   activation_KiB_per_image (prg_unet_activation_bytes / batch).
   tools/bench_finetune.sh runs it for 4, 8, 16 and 32 steps beside PyTorch. */
#define PRG_IMPLEMENTATION
#include "prg.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* Inference: the classifier's logits through the training forward or the
   lean one. */
static double min_seconds = 0.0;

/* another timed run after r of them (r counts the untimed first), timed seconds so far */
static int more(int r, int reps, double timed) { return r <= reps || (timed < min_seconds && r <= 50); }

static int run_infer(const char *preset, int batch, int steps, int threads, int reps, int lean) {
    prg_unet_config cfg;
    prg_unet *net;
    prg_classifier *clf;
    float *x, *logits;
    size_t n, j;
    prg_rng rng;
    double best = 1e30, t0, timed = 0.0;
    struct rusage ru;
    int r;
    prg_set_num_threads(threads);
    if (prg_unet_config_preset(&cfg, preset) != PRG_OK || prg_unet_create(&net, &cfg, 1) != PRG_OK ||
        prg_classifier_create(&clf, net, 10, steps + 1, 0, 2) != PRG_OK) {
        fprintf(stderr, "bench_finetune: %s\n", prg_last_error());
        return 1;
    }
    n = (size_t)batch * cfg.in_channels * cfg.image_size * cfg.image_size;
    x = (float *)malloc(n * sizeof(float));
    logits = (float *)malloc((size_t)batch * 10 * sizeof(float));
    prg_rng_seed(&rng, 3, 0);
    for (j = 0; j < n; j++) x[j] = prg_rng_normal(&rng);
    for (r = 0; more(r, reps, timed); r++) {
        t0 = now();
        if ((lean ? prg_classifier_predict : prg_classifier_forward)(clf, batch, x, logits) != PRG_OK) {
            fprintf(stderr, "bench_finetune: %s\n", prg_last_error());
            return 1;
        }
        if (r > 0) {
            double dt = now() - t0;
            timed += dt;
            if (dt < best) best = dt;
        }
    }
    getrusage(RUSAGE_SELF, &ru);
    printf("%s %d %d %s %.1f %.0f %.0f\n", preset, batch, steps, lean ? "lean" : "train", 1e3 * best,
           ru.ru_maxrss / 1024.0, prg_unet_activation_bytes(net) / 1024.0 / batch);
    fflush(stdout);
    free(x); free(logits);
    prg_classifier_free(clf);
    return 0;
}

/* One mode: keep_mb < 0 = the library's default budget, else that many MiB. */
static int run(const char *preset, int batch, int steps, int threads, int reps, double keep_mb) {
    int classes = 10, i, r;
    prg_unet_config cfg;
    prg_unet *net;
    prg_classifier *clf;
    prg_adam *opt;
    prg_adam_config ac;
    prg_rng rng;
    float *x, *logits, *dlogits, *params[2];
    const float *grads[2];
    size_t sizes[2], n, j, nh;
    int32_t *labels;
    double best = 1e30, t0, timed = 0.0;
    struct rusage ru;
    prg_set_num_threads(threads);
    if (prg_unet_config_preset(&cfg, preset) != PRG_OK || prg_unet_create(&net, &cfg, 1) != PRG_OK ||
        prg_classifier_create(&clf, net, classes, steps + 1, 0, 2) != PRG_OK) {
        fprintf(stderr, "bench_finetune: %s\n", prg_last_error());
        return 1;
    }
    /* the budget applies from the first forward (set explicitly) */
    prg_classifier_set_memory_budget(clf, keep_mb < 0 ? prg_classifier_memory_budget(clf)
                                                      : (size_t)(keep_mb * 1024 * 1024));
    prg_adam_config_default(&ac);
    ac.decoupled = 1;
    ac.weight_decay = 0.05;
    params[0] = prg_unet_params(net);
    sizes[0] = prg_unet_num_params(net);
    params[1] = prg_classifier_head_params(clf, &nh);
    sizes[1] = nh;
    grads[0] = prg_unet_grads(net);
    grads[1] = prg_classifier_head_grads(clf, NULL);
    if (prg_adam_create(&opt, sizes[0] + sizes[1], &ac) != PRG_OK) {
        fprintf(stderr, "bench_finetune: %s\n", prg_last_error());
        return 1;
    }
    n = (size_t)batch * cfg.in_channels * cfg.image_size * cfg.image_size;
    x = (float *)malloc(n * sizeof(float));
    logits = (float *)malloc((size_t)batch * classes * 2 * sizeof(float));
    dlogits = logits + (size_t)batch * classes;
    labels = (int32_t *)malloc((size_t)batch * sizeof(int32_t));
    prg_rng_seed(&rng, 3, 0);
    for (j = 0; j < n; j++) x[j] = prg_rng_normal(&rng);
    for (i = 0; i < batch; i++) labels[i] = (int32_t)prg_rng_below(&rng, (uint32_t)classes);
    for (r = 0; more(r, reps, timed); r++) {
        t0 = now();
        prg_classifier_zero_grad(clf);
        if (prg_classifier_forward(clf, batch, x, logits) != PRG_OK) {
            fprintf(stderr, "bench_finetune: %s\n", prg_last_error());
            return 1;
        }
        prg_cross_entropy_forward_backward(dlogits, logits, labels, batch, classes, 0.1f);
        if (prg_classifier_backward(clf, dlogits) != PRG_OK ||
            prg_adam_step_blocks(opt, 2, params, grads, sizes, 3e-5, NULL) != PRG_OK) {
            fprintf(stderr, "bench_finetune: %s\n", prg_last_error());
            return 1;
        }
        if (r > 0) {
            double dt = now() - t0;
            timed += dt;
            if (dt < best) best = dt;
        }
    }
    getrusage(RUSAGE_SELF, &ru);
    printf("%s %d %d %.1f %.0f %.1f", preset, batch, steps, 1e3 * best, ru.ru_maxrss / 1024.0,
           (double)(steps + 1) * n * sizeof(float) / (1024.0 * 1024.0));
    if (prg_classifier_kept_steps(clf) > 0) printf(" kept=%d/%d", prg_classifier_kept_steps(clf), steps);
    printf("\n");
    fflush(stdout);
    free(x); free(logits); free(labels);
    prg_adam_free(opt);
    prg_classifier_free(clf);
    return 0;
}

int main(int argc, char **argv) {
    const char *preset = "tiny32";
    int batch = 8, steps = 4, threads = 2, reps = 2, i, m, rc = 0, infer = 0;
    double keep_mb = -2; /* -2: both modes */
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--preset") && i + 1 < argc) preset = argv[++i];
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--min-seconds") && i + 1 < argc) min_seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--keep-mb") && i + 1 < argc && atof(argv[i + 1]) >= 0) keep_mb = atof(argv[++i]);
        else if (!strcmp(argv[i], "--infer")) infer = 1;
        else {
            printf("usage: bench_finetune [--preset NAME] [--batch N] [--steps M] [--threads N] [--reps N] "
                   "[--min-seconds S] [--keep-mb N] [--infer]\n");
            return strcmp(argv[i], "--help") ? 2 : 0;
        }
    }
    if (reps < 1) reps = 1; /* the first run warms up and is not timed */
    if (keep_mb >= 0 && !infer) return run(preset, batch, steps, threads, reps, keep_mb);
    for (m = 0; m < 2 && !rc; m++) {
        pid_t pid;
        int status;
        fflush(stdout);
        pid = fork();
        if (pid < 0) {
            perror("bench_finetune: fork");
            return 1;
        }
        if (pid == 0)
            _exit(infer ? run_infer(preset, batch, steps, threads, reps, m)
                        : run(preset, batch, steps, threads, reps, m ? -1 : 0));
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status)) rc = 1;
    }
    return rc;
}
