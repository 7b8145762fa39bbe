/* bench_classify: wall time and peak memory of the classify program on one
   image, the whole process (load the checkpoint, decode the image, encode
   through the t_span - 1 Euler steps with the lean forward, head, print).

     bench_classify [--preset cifar32] [--t-span 32] [--threads 2] [--runs 3]
                    [--classify build/classify] [--dir DIR]

   Writes a classifier checkpoint of the preset (10 classes, freshly
   initialised weights: the time does not depend on their values) and a
   random RGB PNG of the model's size into DIR (a new directory under /tmp
   by default, removed at the end), then runs `classify --model M --threads N
   --quiet IMAGE` --runs times, each in a process of its own, measured with
   wait4: ru_maxrss is that process's peak resident memory.
   Prints one line: preset t_span threads best_wall_s best_cpu_s
   max_peak_rss_MiB checkpoint_MiB (cpu: user + system time of the process,
   which on a loaded machine counts the pool's waits too). */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#define _DEFAULT_SOURCE         /* wait4 */
#define PRG_IMPLEMENTATION
#include "prg.h"
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

int main(int argc, char **argv) {
    const char *preset = "cifar32", *prog = "build/classify", *dir = NULL;
    int t_span = 32, threads = 2, runs = 3, i, rc = 0;
    char tmpl[] = "/tmp/prg_bench_classify.XXXXXX", model[4096], image[4096], nthr[16];
    prg_unet_config cfg;
    prg_unet *net;
    prg_classifier *clf;
    prg_rng rng;
    uint8_t *pix;
    size_t np, j;
    double best = 1e30, bcpu = 1e30, peak = 0;
    struct stat st;
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--preset") && i + 1 < argc) preset = argv[++i];
        else if (!strcmp(argv[i], "--t-span") && i + 1 < argc) t_span = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc) runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--classify") && i + 1 < argc) prog = argv[++i];
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc) dir = argv[++i];
        else {
            printf("usage: bench_classify [--preset NAME] [--t-span N] [--threads N] [--runs N] "
                   "[--classify PROGRAM] [--dir DIR]\n");
            return strcmp(argv[i], "--help") ? 2 : 0;
        }
    }
    if (runs < 1 || t_span < 2) {
        fprintf(stderr, "bench_classify: need --runs >= 1 and --t-span >= 2\n");
        return 2;
    }
    if (!dir && !(dir = mkdtemp(tmpl))) {
        perror("bench_classify: mkdtemp");
        return 1;
    }
    snprintf(model, sizeof model, "%s/%s.safetensors", dir, preset);
    snprintf(image, sizeof image, "%s/%s.png", dir, preset);
    snprintf(nthr, sizeof nthr, "%d", threads);
    if (prg_unet_config_preset(&cfg, preset) != PRG_OK || prg_unet_create(&net, &cfg, 1) != PRG_OK ||
        prg_classifier_create(&clf, net, 10, t_span, 0, 2) != PRG_OK || prg_classifier_save(clf, model) != PRG_OK) {
        fprintf(stderr, "bench_classify: %s\n", prg_last_error());
        return 1;
    }
    prg_classifier_free(clf);
    np = (size_t)cfg.image_size * cfg.image_size * 3;
    pix = (uint8_t *)malloc(np);
    if (!pix) return 1;
    prg_rng_seed(&rng, 7, 0);
    for (j = 0; j < np; j++) pix[j] = (uint8_t)prg_rng_below(&rng, 256);
    if (prg_png_write(image, pix, cfg.image_size, cfg.image_size, 3) != PRG_OK) {
        fprintf(stderr, "bench_classify: %s\n", prg_last_error());
        return 1;
    }
    free(pix);
    for (i = 0; i < runs && !rc; i++) {
        struct rusage ru;
        int status;
        double t0 = now();
        pid_t pid;
        fflush(stdout);
        pid = fork();
        if (pid < 0) {
            perror("bench_classify: fork");
            return 1;
        }
        if (pid == 0) {
            int fd = open("/dev/null", O_WRONLY);
            if (fd >= 0) dup2(fd, 1);
            execl(prog, prog, "--model", model, "--threads", nthr, "--quiet", image, (char *)NULL);
            perror("bench_classify: exec");
            _exit(127);
        }
        if (wait4(pid, &status, 0, &ru) != pid || !WIFEXITED(status) || WEXITSTATUS(status)) {
            fprintf(stderr, "bench_classify: %s failed on %s\n", prog, image);
            rc = 1;
        }
        if (now() - t0 < best) best = now() - t0;
        t0 = ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + 1e-6 * (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
        if (t0 < bcpu) bcpu = t0;
        if (ru.ru_maxrss / 1024.0 > peak) peak = ru.ru_maxrss / 1024.0;
    }
    if (!rc)
        printf("%s %d %d %.3f %.3f %.0f %.1f\n", preset, t_span, threads, best, bcpu, peak,
               stat(model, &st) == 0 ? st.st_size / (1024.0 * 1024.0) : 0.0);
    if (dir == tmpl) {
        remove(model);
        remove(image);
        rmdir(dir);
    }
    return rc;
}
