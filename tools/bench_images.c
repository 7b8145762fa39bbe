/* Image decoding throughput: JPEG decode, and decode + the evaluation
   transform (shorter side -> 73 bicubic, centre crop 64), in images/s, for the
   45x37 fixture and a 500x375 JPEG (ImageNet's typical size, made with cjpeg
   -quality 90, 4:2:0, from a synthetic picture), side by side with PIL
   (Image.open + load, + resize + crop) and djpeg (one process per image) when
   they are installed.  Run from the repository root: build/bench_images */
#define _POSIX_C_SOURCE 200809L
#define PRG_IMPLEMENTATION
#include "prg.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Single-thread rates use process CPU time, so that other load on the
   machine does not count; two-thread rates use wall time. */
static int use_cpu_time = 1;
static double now(void) {
    struct timespec t;
    clock_gettime(use_cpu_time ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

typedef struct bjob { const uint8_t *buf; size_t len; int iters, resize, failed; } bjob;

static void bench_task(void *ctx, int ith, int nth) {
    bjob *j = (bjob *)ctx;
    int i;
    for (i = ith; i < j->iters; i += nth) {
        prg_image img, ev;
        if (prg_jpeg_decode(&img, j->buf, j->len, 3, "bench")) { j->failed = 1; return; }
        if (j->resize) {
            if (prg_image_eval_transform(&ev, &img, 64)) j->failed = 1;
            prg_image_free(&ev);
        }
        prg_image_free(&img);
    }
}

/* images/s of decode (+ eval transform) on the pool's threads */
static double rate(const uint8_t *buf, size_t len, int resize) {
    bjob j;
    double t0, t;
    j.buf = buf; j.len = len; j.resize = resize; j.failed = 0; j.iters = 8;
    for (;;) {
        t0 = now();
        prg_parallel(bench_task, &j);
        t = now() - t0;
        if (j.failed) { fprintf(stderr, "decode failed: %s\n", prg_last_error()); exit(1); }
        if (t > 0.5) return j.iters / t;
        j.iters *= 2;
    }
}

static void make_picture(const char *ppm, int w, int h) {
    uint8_t *px = (uint8_t *)malloc((size_t)w * h * 3);
    prg_rng r;
    int x, y;
    prg_rng_seed(&r, 7, 0);
    for (y = 0; y < h; y++)
        for (x = 0; x < w; x++) {
            uint8_t *p = px + ((size_t)y * w + x) * 3;
            double fx = x / (double)w, fy = y / (double)h;
            double v = 0.5 + 0.25 * sin(fx * 17 + fy * 5) + 0.15 * sin(fx * fy * 60);
            int n = (int)prg_rng_below(&r, 21) - 10, c;
            for (c = 0; c < 3; c++) {
                double s = 255 * (v * (0.6 + 0.2 * c) + 0.2 * (c == 0 ? fx : c == 1 ? fy : 1 - fx)) + n;
                p[c] = (uint8_t)(s < 0 ? 0 : s > 255 ? 255 : s);
            }
        }
    prg_pnm_write(ppm, px, h, w, 3);
    free(px);
}

static void one(const char *label, const char *path) {
    uint8_t *buf;
    size_t len;
    char cmd[1024];
    FILE *p;
    prg_image img;
    if (prg_file_read(path, &buf, &len)) { printf("%-12s %s\n", label, prg_last_error()); return; }
    if (prg_jpeg_decode(&img, buf, len, 3, path)) { printf("%s\n", prg_last_error()); prg_free(buf); return; }
    printf("%s: %s, %d x %d, %lu bytes\n", label, path, img.w, img.h, (unsigned long)len);
    prg_image_free(&img);
    prg_set_num_threads(1);
    use_cpu_time = 1;
    printf("  prg.h  1 thread  (per CPU-second): decode %8.0f images/s   decode + resize 73 + crop 64 %8.0f images/s\n", rate(buf, len, 0), rate(buf, len, 1));
    prg_set_num_threads(2);
    use_cpu_time = 0;
    printf("  prg.h  2 threads (wall clock)   : decode %8.0f images/s   decode + resize 73 + crop 64 %8.0f images/s\n", rate(buf, len, 0), rate(buf, len, 1));
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c \"\n"
             "import time\nfrom PIL import Image\n"
             "def go(rs):\n"
             "  n, t0 = 0, time.process_time()\n"
             "  while time.process_time() - t0 < 1.0:\n"
             "    im = Image.open('%s'); im = im.convert('RGB')\n"
             "    if rs:\n"
             "      w, h = im.size; s = 73\n"
             "      im = im.resize((s, int(s * h / w)) if w <= h else (int(s * w / h), s), Image.BICUBIC)\n"
             "      w, h = im.size; l, t = int(round((w - 64) / 2.0)), int(round((h - 64) / 2.0)); im = im.crop((l, t, l + 64, t + 64)); im.load()\n"
             "    n += 1\n"
             "  return n / (time.process_time() - t0)\n"
             "print('  PIL    1 thread  (per CPU-second): decode %%8.0f images/s   decode + resize 73 + crop 64 %%8.0f images/s' %% (go(0), go(1)))\n"
             "\" 2>/dev/null",
             path);
    p = popen(cmd, "r");
    if (p) {
        char line[512];
        int got = 0;
        while (fgets(line, sizeof line, p)) { fputs(line, stdout); got = 1; }
        pclose(p);
        if (!got) printf("  PIL: not installed\n");
    }
    snprintf(cmd, sizeof cmd, "command -v djpeg > /dev/null && bash -c 'TIMEFORMAT=\"%%3U %%3S\"; time (for i in $(seq 200); do djpeg -outfile /dev/null \"%s\"; done)' 2>&1", path);
    p = popen(cmd, "r");
    if (p) {
        double u, s;
        if (fscanf(p, "%lf %lf", &u, &s) == 2 && u + s > 0)
            printf("  djpeg  one process per image    : %8.0f images per CPU-second (user + sys, process start included)\n", 200 / (u + s));
        else
            printf("  djpeg: not installed\n");
        pclose(p);
    }
    prg_free(buf);
}

int main(void) {
    const char *big = "build/bench_500x375.jpg";
    one("fixture", "tests/fixtures/images/jpeg_420.jpg");
    make_picture("build/bench_500x375.ppm", 500, 375);
    if (system("cjpeg -quality 90 -sample 2x2 -outfile build/bench_500x375.jpg build/bench_500x375.ppm 2> /dev/null") == 0)
        one("500x375", big);
    else
        printf("500x375: cjpeg not installed, no JPEG to time\n");
    return 0;
}
