/* Image decoding and resizing: JPEG and PNG fixtures (tests/fixtures/images,
   made by tools/make_image_fixtures.py with cjpeg/ImageMagick/PIL) against the
   reference pixels of djpeg and PIL; every truncation of every fixture and
   random byte damage refused without a crash; resizing against PIL. */
#define PRG_IMPLEMENTATION
#include "../prg.h"
#include "prg_test.h"
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define FIX "tests/fixtures/images/"

/* Reads the PAM reference (P7, MAXVAL 255) written by the fixture script. */
static int read_pam(const char *path, prg_image *img) {
    size_t len, i = 0;
    uint8_t *b = prg_test_read_file(path, &len);
    char *hdr;
    int w = 0, h = 0, d = 0;
    if (!b) return 0;
    b[len] = 0;
    hdr = strstr((char *)b, "ENDHDR\n");
    if (!hdr || sscanf((char *)b, "P7\nWIDTH %d\nHEIGHT %d\nDEPTH %d", &w, &h, &d) != 3) { free(b); return 0; }
    i = (size_t)(hdr + 7 - (char *)b);
    if (len - i != (size_t)w * h * d || prg_image_alloc(img, h, w, d)) { free(b); return 0; }
    memcpy(img->data, b + i, len - i);
    free(b);
    return 1;
}

static int max_diff(const prg_image *a, const prg_image *b, double *mean) {
    size_t n = (size_t)a->w * a->h * a->c, i;
    int m = 0;
    double s = 0;
    for (i = 0; i < n; i++) {
        int d = abs(a->data[i] - b->data[i]);
        if (d > m) m = d;
        s += d;
    }
    if (mean) *mean = s / (double)n;
    return m;
}

/* Decodes name from the fixtures and compares with name.pam: at most bound;
   img.warnings must be warn exactly, and strict decoding refuses the file
   when warn is not 0 (accepts it when it is).  bound < 0: sizes only. */
static void check_file_warn(const char *base, const char *ext, int bound, unsigned warn) {
    char path[256], ref_path[256];
    size_t len;
    uint8_t *buf;
    prg_image img, ref;
    prg_result r;
    snprintf(path, sizeof path, FIX "%s.%s", base, ext);
    snprintf(ref_path, sizeof ref_path, FIX "%s.pam", base);
    buf = prg_test_read_file(path, &len);
    CHECK(buf != NULL, "cannot read %s", path);
    CHECK(read_pam(ref_path, &ref), "cannot read %s", ref_path);
    if (!buf || !ref.data) return;
    r = prg_image_decode(&img, buf, len, 0, path);
    CHECK(r == PRG_OK, "%s: %s", path, prg_last_error());
    if (r == PRG_OK) {
        char text[256];
        CHECK(img.warnings == warn, "%s: warnings 0x%x (%s), expected 0x%x", path, img.warnings,
              prg_image_warnings_format(img.warnings, text, sizeof text), warn);
        CHECK(img.w == ref.w && img.h == ref.h && img.c == ref.c, "%s: %dx%dx%d, reference %dx%dx%d", path, img.w, img.h,
              img.c, ref.w, ref.h, ref.c);
        if (img.w == ref.w && img.h == ref.h && img.c == ref.c) {
            double mean;
            int m = max_diff(&img, &ref, &mean);
            if (bound >= 0) CHECK(m <= bound, "%s: max abs diff %d > %d (mean %.4f)", path, m, bound, mean);
        }
        prg_image_free(&img);
    }
    r = prg_image_decode_flags(&img, buf, len, 0, PRG_DECODE_STRICT, path);
    if (warn)
        CHECK(r == PRG_ERR_FORMAT && strstr(prg_last_error(), "strict") && strstr(prg_last_error(), path),
              "%s: strict decoding does not refuse it (%d): %s", path, (int)r, prg_last_error());
    else
        CHECK(r == PRG_OK, "%s: strict decoding refuses a clean file: %s", path, prg_last_error());
    prg_image_free(&img);
    /* strict: every truncation is refused with PRG_ERR_FORMAT and names the
       file; lenient: refused so, or decoded with a warning that says so */
    {
        size_t cut, step = len > 1500 ? 3 : 1, bad = 0, unnamed = 0, lenient_bad = 0;
        for (cut = 0; cut < len; cut += step) {
            r = prg_image_decode_flags(&img, buf, cut, 0, PRG_DECODE_STRICT, path);
            if (r != PRG_ERR_FORMAT) bad++;
            else if (!strstr(prg_last_error(), path)) unnamed++;
            if (r == PRG_OK) prg_image_free(&img);
            r = prg_image_decode(&img, buf, cut, 0, path);
            if (r == PRG_OK) {
                if (!(img.warnings & (PRG_IMAGE_WARN_NO_END | PRG_IMAGE_WARN_SHORT_DATA))) lenient_bad++;
                prg_image_free(&img);
            } else if (r != PRG_ERR_FORMAT) {
                lenient_bad++;
            }
        }
        CHECK(bad == 0, "%s: %lu truncations not refused with PRG_ERR_FORMAT in strict mode", path, (unsigned long)bad);
        CHECK(unnamed == 0, "%s: %lu error messages do not name the file (e.g. '%s')", path, (unsigned long)unnamed, prg_last_error());
        CHECK(lenient_bad == 0, "%s: %lu truncations neither refused nor decoded with a truncation warning", path,
              (unsigned long)lenient_bad);
    }
    /* random damage: never a crash; a failure is FORMAT/UNSUPPORTED */
    {
        prg_rng rng;
        int t, odd = 0;
        uint8_t *cp = (uint8_t *)malloc(len);
        prg_rng_seed(&rng, 42, (uint64_t)len);
        for (t = 0; t < 300; t++) {
            int k, nflip = 1 + (int)prg_rng_below(&rng, 4);
            memcpy(cp, buf, len);
            for (k = 0; k < nflip; k++) cp[prg_rng_below(&rng, (uint32_t)len)] ^= (uint8_t)(1 + prg_rng_below(&rng, 255));
            r = prg_image_decode(&img, cp, len, 0, path);
            if (r == PRG_OK) prg_image_free(&img);
            else if (r != PRG_ERR_FORMAT && r != PRG_ERR_UNSUPPORTED) odd++;
        }
        CHECK(odd == 0, "%s: %d damaged copies failed with an unexpected code", path, odd);
        free(cp);
    }
    free(buf);
    prg_image_free(&ref);
}

static void check_file(const char *base, const char *ext, int bound) { check_file_warn(base, ext, bound, 0); }

/* Each defect that djpeg or PIL decode through (fixtures: byte edits of
   clean files by tools/make_image_fixtures.py): decoded with its warning and
   the reference's pixels (djpeg for JPEG, PIL for PNG), refused when strict. */
static void test_defects(void) {
    static const struct { const char *name, *ext; unsigned warn; } d[] = {
        {"jpeg_junk", "jpg", PRG_IMAGE_WARN_JUNK},
        {"jpeg_no_dht", "jpg", PRG_IMAGE_WARN_STD_HUFFMAN},
        {"jpeg_short", "jpg", PRG_IMAGE_WARN_SHORT_DATA | PRG_IMAGE_WARN_NO_END},
        {"jpeg_short_rst", "jpg", PRG_IMAGE_WARN_SHORT_DATA | PRG_IMAGE_WARN_NO_END},
        {"jpeg_no_eoi", "jpg", PRG_IMAGE_WARN_NO_END},
        {"jpeg_bad_data", "jpg", PRG_IMAGE_WARN_BAD_DATA},
        {"jpeg_app_len0", "jpg", PRG_IMAGE_WARN_BAD_LENGTH},
        {"png_no_iend", "png", PRG_IMAGE_WARN_NO_END},
        {"png_crc_idat", "png", PRG_IMAGE_WARN_CRC},
        {"png_crc_after", "png", PRG_IMAGE_WARN_CRC},
    };
    size_t i;
    char text[512];
    for (i = 0; i < sizeof d / sizeof *d; i++) check_file_warn(d[i].name, d[i].ext, 0, d[i].warn);
    /* a progressive file cut mid-scan: libjpeg also smooths the blocks whose low
       coefficients are incomplete (its block smoothing, which prg.h does not
       do), so only the warning, the size and strict refusal are checked */
    check_file_warn("jpeg_short_prog", "jpg", -1, PRG_IMAGE_WARN_SHORT_DATA | PRG_IMAGE_WARN_NO_END);
    /* the texts: one per bit, joined */
    prg_image_warnings_format(PRG_IMAGE_WARN_JUNK | PRG_IMAGE_WARN_CRC, text, sizeof text);
    CHECK(strstr(text, prg_image_warning_str(PRG_IMAGE_WARN_JUNK)) == text && strstr(text, "; ") &&
              strstr(text, prg_image_warning_str(PRG_IMAGE_WARN_CRC)),
          "warning text: '%s'", text);
    prg_image_warnings_format(~0u, text, 20);
    CHECK(strlen(text) == 19, "cut to the buffer: '%s'", text);
    CHECK(*prg_image_warning_str(0x40000000u) == 0 && *prg_image_warnings_format(0, text, sizeof text) == 0, "no warning, no text");
}

static void test_jpeg(void) {
    /* libjpeg-turbo's islow IDCT, colour conversion and fancy upsampling are
       reproduced in integer arithmetic: exact (bound 0) is expected; the
       bound 1 leaves room for a differently rounded libjpeg build. */
    static const char *files[] = {"jpeg_444", "jpeg_422", "jpeg_420", "jpeg_440", "jpeg_420_q50", "jpeg_prog420",
                                  "jpeg_prog444", "jpeg_rst420", "jpeg_rst_prog", "jpeg_gray", "jpeg_gray_prog",
                                  "jpeg_opt", "jpeg_cmyk", "jpeg_ycck"};
    size_t i;
    for (i = 0; i < sizeof files / sizeof *files; i++) check_file(files[i], "jpg", 1);
}

static void test_png(void) {
    static const char *files[] = {
        "png_gray1", "png_gray2", "png_gray4", "png_gray8", "png_gray16", "png_ga8", "png_ga16", "png_rgb8", "png_rgb16",
        "png_rgba8", "png_rgba16", "png_pal1", "png_pal2", "png_pal4", "png_pal8", "png_pal1_trns", "png_pal2_trns",
        "png_pal4_trns", "png_pal8_trns", "png_gray8_trns", "png_rgb8_trns", "png_rgb16_trns", "png_gray1_adam7",
        "png_gray16_adam7", "png_rgb8_adam7", "png_rgba16_adam7", "png_pal4_trns_adam7", "png_ga8_adam7", "png_pal2_adam7",
        "png_im_rgb_adam7", "png_im_rgb16", "png_pil_rgba", "png_pil_pal"};
    size_t i;
    for (i = 0; i < sizeof files / sizeof *files; i++) check_file(files[i], "png", 0); /* PNG is exact */
}

/* ---- examples/prepare on miniature ImageNet and Tiny-ImageNet trees ---- */

static const char *build_dir(void) { const char *b = getenv("BUILD"); return b && *b ? b : "build"; }

#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
static int sh(const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return system(cmd);
}

static void test_channels(void) {
    prg_image a, g, rgba, ga;
    prg_result r = prg_image_load(&a, FIX "png_rgb8.png", 3);
    CHECK(r == PRG_OK, "%s", prg_last_error());
    if (r) return;
    CHECK(prg_image_load(&g, FIX "png_rgb8.png", 1) == PRG_OK, "%s", prg_last_error());
    CHECK(prg_image_load(&rgba, FIX "png_rgb8.png", 4) == PRG_OK, "%s", prg_last_error());
    CHECK(prg_image_load(&ga, FIX "png_gray8_trns.png", 0) == PRG_OK && ga.c == 2, "gray + tRNS key gives 2 channels");
    if (g.data && rgba.data) {
        size_t i, n = (size_t)a.w * a.h, bad = 0;
        for (i = 0; i < n; i++) {
            const uint8_t *p = a.data + 3 * i;
            unsigned l = (p[0] * 19595u + p[1] * 38470u + p[2] * 7471u + 0x8000u) >> 16;
            if (g.data[i] != l || memcmp(rgba.data + 4 * i, p, 3) || rgba.data[4 * i + 3] != 255) bad++;
        }
        CHECK(g.c == 1 && rgba.c == 4 && bad == 0, "channel conversion: %lu bad pixels", (unsigned long)bad);
    }
    prg_image_free(&a); prg_image_free(&g); prg_image_free(&rgba); prg_image_free(&ga);
    /* JPEG YCbCr -> gray keeps Y: the same as djpeg -grayscale */
    {
        prg_image j1, ref;
        CHECK(prg_image_load(&j1, FIX "jpeg_420.jpg", 1) == PRG_OK && j1.c == 1, "%s", prg_last_error());
        CHECK(read_pam(FIX "jpeg_420_gray.pam", &ref), "cannot read jpeg_420_gray.pam");
        if (j1.data && ref.data)
            CHECK(j1.w == ref.w && j1.h == ref.h && max_diff(&j1, &ref, NULL) <= 1, "gray decode differs from djpeg -grayscale");
        prg_image_free(&j1); prg_image_free(&ref);
    }
    /* PPM through the loader (the io reader) */
    {
        prg_image p, q;
        char path[256];
        uint8_t px[2 * 3 * 3] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18};
        snprintf(path, sizeof path, "%s/test_images_tiny.ppm", build_dir());
        CHECK(sh("mkdir -p %s", build_dir()) == 0, "mkdir %s", build_dir());
        CHECK(prg_pnm_write(path, px, 2, 3, 3) == PRG_OK, "%s", prg_last_error());
        CHECK(prg_image_load(&q, path, 0) == PRG_OK && q.w == 3 && q.h == 2 && q.c == 3 && memcmp(q.data, px, 18) == 0,
              "PPM through prg_image_load: %s", prg_last_error());
        prg_image_free(&q);
        CHECK(prg_image_load(&q, path, 1) == PRG_OK && q.c == 1 && q.data[0] == (1 * 19595u + 2 * 38470u + 3 * 7471u + 0x8000u) >> 16,
              "PPM to gray");
        prg_image_free(&q);
        CHECK(prg_image_load(&p, FIX "missing.ppm", 0) == PRG_ERR_IO, "missing file gives PRG_ERR_IO");
        CHECK(prg_image_load(&p, FIX "src.pam", 0) == PRG_ERR_FORMAT, "PAM is not a supported loader format");
    }
}

static void test_corrupt_headers(void) {
    prg_image img;
    uint8_t big[] = {0xFF, 0xD8, 0xFF, 0xC0, 0, 11, 8, 0xFF, 0xFF, 0xFF, 0xFF, 1, 1, 0x11, 0, 0xFF, 0xD9};
    uint8_t png[8 + 25];
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
    uint32_t crc;
    prg_result r = prg_jpeg_decode(&img, big, sizeof big, 0, "big.jpg");
    CHECK(r == PRG_ERR_FORMAT && strstr(prg_last_error(), "PRG_IMAGE_MAX_PIXELS"), "65535 x 65535 JPEG refused: %s", prg_last_error());
    memcpy(png, sig, 8);
    memcpy(png + 8, "\0\0\0\15IHDR\x7f\xff\xff\xff\x7f\xff\xff\xff\x08\x02\0\0\0", 21);
    crc = prg_crc32(0, png + 12, 17);
    png[29] = (uint8_t)(crc >> 24); png[30] = (uint8_t)(crc >> 16); png[31] = (uint8_t)(crc >> 8); png[32] = (uint8_t)crc;
    r = prg_png_decode(&img, png, sizeof png, 0, "big.png");
    CHECK(r == PRG_ERR_FORMAT && strstr(prg_last_error(), "PRG_IMAGE_MAX_PIXELS"), "2^31 x 2^31 PNG refused: %s", prg_last_error());
    png[20] = 0x09; /* CRC now wrong */
    r = prg_png_decode(&img, png, sizeof png, 0, "crc.png");
    CHECK(r == PRG_ERR_FORMAT && strstr(prg_last_error(), "CRC"), "CRC mismatch refused: %s", prg_last_error());
    r = prg_image_decode(&img, (const uint8_t *)"GIF89a", 6, 0, "x.gif");
    CHECK(r == PRG_ERR_FORMAT, "unknown magic refused");
}

static int count_of(const char *hay, const char *needle) {
    int n = 0;
    size_t k = strlen(needle);
    for (hay = strstr(hay, needle); hay; hay = strstr(hay + k, needle)) n++;
    return n;
}

/* Writes the CRC of the chunk at pos (length, type, data, CRC) again. */
static void png_recrc(uint8_t *b, size_t pos) {
    uint32_t n = ((uint32_t)b[pos] << 24) | ((uint32_t)b[pos + 1] << 16) | ((uint32_t)b[pos + 2] << 8) | b[pos + 3];
    uint32_t crc = prg_crc32(0, b + pos + 4, (size_t)n + 4);
    uint8_t *c = b + pos + 8 + n;
    c[0] = (uint8_t)(crc >> 24); c[1] = (uint8_t)(crc >> 16); c[2] = (uint8_t)(crc >> 8); c[3] = (uint8_t)crc;
}

/* A failure inside a nested call (the zlib stream of a PNG) comes out whole:
   the file named once, the PNG context once, the cause (the Adler-32) once;
   and prg__fail may take prg_last_error() as an argument. */
static void test_nested_error(void) {
    size_t len, pos = 8, last = 0;
    uint8_t *b = prg_test_read_file(FIX "png_rgb8.png", &len);
    prg_image img;
    prg_result r;
    const char *e;
    CHECK(b != NULL, "cannot read png_rgb8.png");
    if (!b) return;
    while (pos + 12 <= len) { /* the last IDAT ends with the zlib stream's Adler-32 */
        uint32_t n = ((uint32_t)b[pos] << 24) | ((uint32_t)b[pos + 1] << 16) | ((uint32_t)b[pos + 2] << 8) | b[pos + 3];
        if (memcmp(b + pos + 4, "IDAT", 4) == 0) last = pos;
        pos += 12 + n;
    }
    CHECK(last > 0, "png_rgb8.png has an IDAT");
    if (last) {
        uint32_t n = ((uint32_t)b[last] << 24) | ((uint32_t)b[last + 1] << 16) | ((uint32_t)b[last + 2] << 8) | b[last + 3];
        b[last + 8 + n - 1] ^= 0x5A;
        png_recrc(b, last);
        r = prg_png_decode(&img, b, len, 0, "dir/x.png");
        e = prg_last_error();
        CHECK(r == PRG_ERR_FORMAT, "corrupt zlib stream refused (%d)", (int)r);
        CHECK(count_of(e, "dir/x.png") == 1 && count_of(e, "corrupt PNG image data") == 1 && count_of(e, "Adler-32") == 1 &&
                  strncmp(e, "dir/x.png: corrupt PNG image data: ", 35) == 0,
              "nested message not whole or not said once: '%s'", e);
    }
    free(b);
    /* the helpers themselves */
    r = prg__fail(PRG_ERR_IO, "a.bin: cannot read 12 bytes at offset 40");
    r = prg__fail(r, "%s", prg_last_error());
    CHECK(r == PRG_ERR_IO && strcmp(prg_last_error(), "a.bin: cannot read 12 bytes at offset 40") == 0,
          "prg__fail with prg_last_error() as its argument: '%s'", prg_last_error());
    r = prg__fail_ctx(r, "a.bin: loading the weights");
    CHECK(strcmp(prg_last_error(), "a.bin: loading the weights: cannot read 12 bytes at offset 40") == 0,
          "context added, file name once: '%s'", prg_last_error());
    r = prg__fail_ctx(r, "a.bin: loading the weights");
    CHECK(strcmp(prg_last_error(), "a.bin: loading the weights: cannot read 12 bytes at offset 40") == 0,
          "the same context twice is said once: '%s'", prg_last_error());
    r = prg__fail_ctx(r, "model %d", 3);
    CHECK(strcmp(prg_last_error(), "model 3: a.bin: loading the weights: cannot read 12 bytes at offset 40") == 0,
          "outer context: '%s'", prg_last_error());
}

/* Resizing against PIL's Image.resize on the source picture: the same
   fixed-point arithmetic, so exact. */
static void test_resize(void) {
    static const char *filters[] = {"box", "bilinear", "bicubic"};
    static const int sizes[][2] = {{16, 13}, {7, 30}, {64, 51}, {45, 20}};
    prg_image src, ref, out;
    int f, s;
    CHECK(read_pam(FIX "src.pam", &src), "cannot read src.pam");
    if (!src.data) return;
    for (f = 0; f < 3; f++)
        for (s = 0; s < 4; s++) {
            char path[256];
            prg_result r;
            snprintf(path, sizeof path, FIX "resize_%s_%dx%d.pam", filters[f], sizes[s][0], sizes[s][1]);
            CHECK(read_pam(path, &ref), "cannot read %s", path);
            if (!ref.data) continue;
            r = prg_image_resize(&out, &src, sizes[s][1], sizes[s][0], (prg_filter)f);
            CHECK(r == PRG_OK, "%s", prg_last_error());
            if (!r) {
                int m = max_diff(&out, &ref, NULL);
                CHECK(m == 0, "resize %s to %dx%d: max abs diff %d from PIL", filters[f], sizes[s][0], sizes[s][1], m);
                prg_image_free(&out);
            }
            prg_image_free(&ref);
        }
    /* eval transform: 45x37 -> shorter side 73 (88x73) -> centre 64x64 */
    {
        prg_image big, crop, ev;
        CHECK(prg_image_resize_short(&big, &src, 73, PRG_FILTER_BICUBIC) == PRG_OK && big.w == 88 && big.h == 73,
              "resize_short: %dx%d", big.w, big.h);
        CHECK(prg_image_center_crop(&crop, &big, 64, 64) == PRG_OK, "%s", prg_last_error());
        CHECK(prg_image_eval_transform(&ev, &src, 64) == PRG_OK && ev.w == 64 && ev.h == 64, "%s", prg_last_error());
        if (crop.data && ev.data && big.data) {
            /* torchvision: left = round(24 / 2) = 12, top = round(9 / 2) = 4 (half to even) */
            CHECK(memcmp(crop.data, big.data + (4 * 88 + 12) * 3, 64 * 3) == 0, "centre crop offset");
            CHECK(memcmp(crop.data, ev.data, 64 * 64 * 3) == 0, "eval transform = resize_short(73) + centre crop(64)");
            CHECK(read_pam(FIX "eval64.pam", &ref), "cannot read eval64.pam");
            if (ref.data) {
                CHECK(max_diff(&ev, &ref, NULL) == 0, "eval transform differs from torchvision Resize(73) + CenterCrop(64) on PIL");
                prg_image_free(&ref);
            }
        }
        prg_image_free(&big); prg_image_free(&crop); prg_image_free(&ev);
    }
    CHECK(prg_image_center_crop(&out, &src, 10, 46) == PRG_ERR_ARG, "crop larger than the image refused");
    prg_image_free(&src);
}

/* What prepare must have written for one file: crop mode, bicubic. */
static int expected_planar(const char *path, int S, int eval, uint8_t *dst) {
    prg_image img, mid, out;
    if (prg_image_load(&img, path, 3)) return 0;
    if (prg_image_resize_short(&mid, &img, eval ? S * 256 / 224 : S, PRG_FILTER_BICUBIC)) return 0;
    if (prg_image_center_crop(&out, &mid, S, S)) return 0;
    prg_image_to_planar(dst, &out);
    prg_image_free(&img); prg_image_free(&mid); prg_image_free(&out);
    return 1;
}

static void check_npz(const char *npz, const char *const *files, const int *labels, int n, int S, int eval) {
    prg_array d, l;
    prg_result r = prg_npz_read(&d, npz, "data");
    CHECK(r == PRG_OK, "%s", prg_last_error());
    if (r) return;
    r = prg_npz_read(&l, npz, "labels");
    CHECK(r == PRG_OK, "%s", prg_last_error());
    if (r) { prg_array_free(&d); return; }
    CHECK(d.dtype == PRG_DT_U8 && d.ndim == 2 && d.shape[0] == n && d.shape[1] == 3 * S * S, "%s: data shape [%d][%d]", npz,
          (int)d.shape[0], (int)d.shape[1]);
    CHECK(l.dtype == PRG_DT_I64 && l.ndim == 1 && l.shape[0] == n, "%s: labels shape", npz);
    if (d.shape[0] == n && d.shape[1] == 3 * S * S && l.shape[0] == n && l.dtype == PRG_DT_I64) {
        int i;
        uint8_t *e = (uint8_t *)malloc((size_t)3 * S * S);
        for (i = 0; i < n; i++) {
            CHECK(((int64_t *)l.data)[i] == labels[i], "%s: label %d is %d, expected %d", npz, i, (int)((int64_t *)l.data)[i], labels[i]);
            CHECK(expected_planar(files[i], S, eval, e) && memcmp(e, (uint8_t *)d.data + (size_t)i * 3 * S * S, (size_t)3 * S * S) == 0,
                  "%s: image %d (%s) differs from decode + resize + crop", npz, i, files[i]);
        }
        free(e);
    }
    prg_array_free(&d);
    prg_array_free(&l);
}

static void test_prepare(void) {
    char root[256], tiny[256], prep[256], cmd[4096], p1[1024], p2[1024];
    const char *b = build_dir();
    static const char *train_files[] = {FIX "jpeg_420.jpg", FIX "png_rgb8.png", FIX "jpeg_prog420.jpg", FIX "jpeg_gray.jpg",
                                        FIX "jpeg_cmyk.jpg"};
    static const int train_labels[] = {1, 1, 2, 2, 2};
    static const char *val_files[] = {FIX "jpeg_444.jpg", FIX "jpeg_422.jpg"};
    static const int val_labels[] = {2, 1};
    FILE *f;
    snprintf(root, sizeof root, "%s/test_images_tree/imagenet", b);
    snprintf(tiny, sizeof tiny, "%s/test_images_tree/tiny", b);
    snprintf(prep, sizeof prep, "%s/prepare", b);
    f = fopen(prep, "rb");
    if (!f) { /* `make test` builds it first; a bare cross-compiled run (aarch64-test) has none */
        printf("SKIP test_prepare: %s not built (make %s)\n", prep, prep);
        return;
    }
    fclose(f);
    CHECK(sh("rm -rf %s %s && mkdir -p %s/train/n001 %s/train/n002 %s/val %s/out", root, tiny, root, root, root, root) == 0, "mkdir");
    CHECK(sh("mkdir -p %s/train/n001/images %s/train/n002/images %s/val/images", tiny, tiny, tiny) == 0, "mkdir");
    /* ImageNet: a.JPEG b.JPEG (a PNG, as one ImageNet file is) c.JPEG (cut in its headers) | d e f (progressive, gray, CMYK) */
    CHECK(sh("cp " FIX "jpeg_420.jpg %s/train/n001/a.JPEG && cp " FIX "png_rgb8.png %s/train/n001/b.JPEG", root, root) == 0, "cp");
    CHECK(sh("head -c 400 " FIX "jpeg_444.jpg > %s/train/n001/c.JPEG && cp " FIX "jpeg_prog420.jpg %s/train/n002/d.JPEG", root, root) == 0, "cp");
    CHECK(sh("cp " FIX "jpeg_gray.jpg %s/train/n002/e.JPEG && cp " FIX "jpeg_cmyk.jpg %s/train/n002/f.JPEG", root, root) == 0, "cp");
    CHECK(sh("cp " FIX "jpeg_444.jpg %s/val/v1.JPEG && cp " FIX "jpeg_422.jpg %s/val/v2.JPEG", root, root) == 0, "cp");
    snprintf(p1, sizeof p1, "%s/val_labels.txt", root);
    f = fopen(p1, "w");
    if (f) { fputs("v1.JPEG n002\nv2.JPEG n001\n", f); fclose(f); }
    /* the same pictures in Tiny-ImageNet's layout */
    CHECK(sh("cp %s/train/n001/* %s/train/n001/images/", root, tiny) == 0, "cp");
    CHECK(sh("cp %s/train/n002/* %s/train/n002/images/", root, tiny) == 0, "cp");
    CHECK(sh("cp %s/val/v1.JPEG %s/val/images/val_0.JPEG", root, tiny) == 0, "cp");
    CHECK(sh("cp %s/val/v2.JPEG %s/val/images/val_1.JPEG", root, tiny) == 0, "cp");
    snprintf(p2, sizeof p2, "%s/val/val_annotations.txt", tiny);
    f = fopen(p2, "w");
    if (f) { fputs("val_0.JPEG\tn002\t0\t0\t10\t10\nval_1.JPEG\tn001\t1\t2\t30\t20\n", f); fclose(f); }

    snprintf(cmd, sizeof cmd, "%s --help > /dev/null", prep);
    CHECK(system(cmd) == 0, "prepare --help");
    snprintf(cmd, sizeof cmd, "%s --root %s --split train --size 16 --threads 2 --out %s/out/train.npz 2> %s/log.txt", prep, root, root, root);
    CHECK(system(cmd) == 0, "prepare train failed: %s", cmd);
    check_npz(strcat(strcpy(p1, root), "/out/train.npz"), train_files, train_labels, 5, 16, 0);
    CHECK(sh("grep -q 'c.JPEG' %s/out/train_skipped.txt && grep -q 'skipped.*c.JPEG' %s/log.txt", root, root) == 0,
          "the truncated file is listed as skipped");
    CHECK(sh("printf 'n001\\nn002\\n' | cmp -s - %s/out/train_classes.txt", root) == 0, "class file: one name a line, in label order");
    /* 1 thread gives the same bytes */
    snprintf(cmd, sizeof cmd, "%s --root %s --split train --size 16 --threads 1 --quiet --out %s/out/train1.npz 2> /dev/null", prep, root, root);
    CHECK(system(cmd) == 0, "prepare 1 thread");
    CHECK(sh("cmp -s %s/out/train.npz %s/out/train1.npz", root, root) == 0, "1 and 2 threads give different files");
    /* flat val with a labels file, eval transform */
    snprintf(cmd, sizeof cmd, "%s --root %s --split val --val-labels %s/val_labels.txt --resize eval --size 16 --quiet --out %s/out/val.npz 2> /dev/null",
             prep, root, root, root);
    CHECK(system(cmd) == 0, "prepare val failed: %s", cmd);
    check_npz(strcat(strcpy(p1, root), "/out/val.npz"), val_files, val_labels, 2, 16, 1);
    /* Tiny-ImageNet: train (split into files of 3) and val from val_annotations.txt */
    snprintf(cmd, sizeof cmd, "%s --root %s --split train --size 16 --per-file 3 --quiet --out %s/train.npz 2> /dev/null", prep, tiny, tiny);
    CHECK(system(cmd) == 0, "prepare tiny train failed: %s", cmd);
    check_npz(strcat(strcpy(p1, tiny), "/train_1.npz"), train_files, train_labels, 2, 16, 0); /* a, b (c skipped) */
    check_npz(strcat(strcpy(p1, tiny), "/train_2.npz"), train_files + 2, train_labels + 2, 3, 16, 0);
    snprintf(cmd, sizeof cmd, "%s --root %s --split val --size 16 --quiet --out %s/val.npz 2> /dev/null", prep, tiny, tiny);
    CHECK(system(cmd) == 0, "prepare tiny val failed: %s", cmd);
    check_npz(strcat(strcpy(p1, tiny), "/val.npz"), val_files, val_labels, 2, 16, 0);
    snprintf(cmd, sizeof cmd, "%s --root %s/nonexistent --out x.npz 2> /dev/null", prep, tiny);
    CHECK(system(cmd) != 0, "a missing root fails");
    /* a file with a tolerated defect: decoded with a one-line note; --strict skips it */
    CHECK(sh("rm -rf %s/defect && mkdir -p %s/defect/train/n001 && cp " FIX "jpeg_junk.jpg %s/defect/train/n001/a.JPEG && cp " FIX
             "png_rgb8.png %s/defect/train/n001/b.JPEG", b, b, b, b) == 0, "defect tree");
    /* (not --quiet: the count line is checked; notes show under --quiet too, below) */
    snprintf(cmd, sizeof cmd, "%s --root %s/defect --size 16 --out %s/defect/all.npz 2> %s/defect/log.txt", prep, b, b, b);
    CHECK(system(cmd) == 0, "prepare on the defect tree: %s", cmd);
    CHECK(sh("grep -c 'note: .*a.JPEG.*extraneous bytes' %s/defect/log.txt | grep -qx 1 && grep -q '2 images' %s/defect/log.txt", b, b) == 0,
          "the defect is decoded with one note line");
    snprintf(cmd, sizeof cmd, "%s --root %s/defect --size 16 --strict --out %s/defect/strict.npz 2> %s/defect/log2.txt", prep, b, b, b);
    CHECK(system(cmd) == 0, "prepare --strict on the defect tree: %s", cmd);
    CHECK(sh("grep -q 'skipped.*a.JPEG.*strict' %s/defect/log2.txt && grep -q '1 images' %s/defect/log2.txt", b, b) == 0,
          "--strict skips the defect file");
    snprintf(cmd, sizeof cmd, "%s --root %s/defect --size 16 --quiet --out %s/defect/quiet.npz 2> %s/defect/log3.txt", prep, b, b, b);
    CHECK(system(cmd) == 0, "prepare --quiet on the defect tree: %s", cmd);
    CHECK(sh("grep -c 'note: .*a.JPEG.*extraneous bytes' %s/defect/log3.txt | grep -qx 1 && [ $(wc -l < %s/defect/log3.txt) -eq 1 ]", b, b) == 0,
          "--quiet keeps the note and nothing else");
}

/* Channels are resampled independently: for every filter and size, a 1-, 2-
   and 4-channel picture made of src.pam's channels resizes to the same
   channels of PIL's 3-channel result (the strides of c != 3 against PIL). */
static void test_resize_channels(void) {
    static const char *filters[] = {"box", "bilinear", "bicubic"};
    static const int sizes[][2] = {{16, 13}, {7, 30}, {64, 51}, {45, 20}};
    static const int pick[3][4] = {{2, 0, 0, 0}, {1, 2, 0, 0}, {0, 2, 1, 0}}; /* src channel of each */
    static const int nc[3] = {1, 2, 4};
    prg_image src, ref;
    int f, s, v;
    CHECK(read_pam(FIX "src.pam", &src) && src.c == 3, "cannot read src.pam");
    if (!src.data) return;
    for (f = 0; f < 3; f++)
        for (s = 0; s < 4; s++) {
            char path[256];
            int dw = sizes[s][0], dh = sizes[s][1];
            snprintf(path, sizeof path, FIX "resize_%s_%dx%d.pam", filters[f], dw, dh);
            if (!read_pam(path, &ref)) { CHECK(0, "cannot read %s", path); continue; }
            for (v = 0; v < 3; v++) {
                int c = nc[v], ch, bad = 0;
                size_t i, n = (size_t)src.w * src.h, m = (size_t)dw * dh;
                uint8_t *in = (uint8_t *)malloc(n * c), *out = (uint8_t *)malloc(m * c);
                for (i = 0; i < n; i++)
                    for (ch = 0; ch < c; ch++) in[i * c + ch] = src.data[i * 3 + pick[v][ch]];
                CHECK(prg_resize_u8(out, dh, dw, in, src.h, src.w, c, (prg_filter)f) == PRG_OK, "%s", prg_last_error());
                for (i = 0; i < m; i++)
                    for (ch = 0; ch < c; ch++) bad += out[i * c + ch] != ref.data[i * 3 + pick[v][ch]];
                CHECK(bad == 0, "resize %s to %dx%d with %d channels: %d values differ from PIL", filters[f], dw, dh, c, bad);
                free(in);
                free(out);
            }
            prg_image_free(&ref);
        }
    prg_image_free(&src);
}

/* prg_resize_u8 (interleaved, bicubic) and the data section's
   prg_planes_resize (planar) give the same bytes on random pictures, windows
   (crops), channel counts and sizes, including sizes that skip a pass. */
static void test_resize_agree(void) {
    prg_rng rng;
    int t, fails = 0;
    prg_rng_seed(&rng, 2024, 0);
    for (t = 0; t < 300; t++) {
        int c = 1 + (int)prg_rng_below(&rng, 4), w = 1 + (int)prg_rng_below(&rng, 60), h = 1 + (int)prg_rng_below(&rng, 60);
        int cw = 1 + (int)prg_rng_below(&rng, (uint32_t)w), chh = 1 + (int)prg_rng_below(&rng, (uint32_t)h);
        int x0 = (int)prg_rng_below(&rng, (uint32_t)(w - cw + 1)), y0 = (int)prg_rng_below(&rng, (uint32_t)(h - chh + 1));
        int dw = 1 + (int)prg_rng_below(&rng, 80), dh = 1 + (int)prg_rng_below(&rng, 80), ch;
        uint32_t same = prg_rng_below(&rng, 4);
        prg_image pic, win;
        uint8_t *planes, *crop, *a, *b, *work;
        size_t i, m;
        if (same == 1) dw = cw; /* vertical pass only */
        if (same == 2) dh = chh; /* horizontal pass only */
        if (same == 3 && t % 8 == 3) { dw = cw; dh = chh; } /* a copy */
        m = (size_t)c * dw * dh;
        if (prg_image_alloc(&pic, h, w, c)) { CHECK(0, "%s", prg_last_error()); return; }
        for (i = 0; i < (size_t)w * h * c; i++) pic.data[i] = (uint8_t)prg_rng_below(&rng, 256);
        for (i = 0; i < (size_t)w * h * c; i += 1 + prg_rng_below(&rng, 9)) pic.data[i] = i % 2 ? 255 : 0; /* clipping */
        planes = (uint8_t *)malloc((size_t)c * w * h);
        crop = (uint8_t *)malloc((size_t)c * cw * chh);
        a = (uint8_t *)malloc(m);
        b = (uint8_t *)malloc(m);
        work = (uint8_t *)malloc(prg_planes_resize_workspace(c, chh, cw, dh, dw));
        prg_image_to_planar(planes, &pic);
        prg_planes_crop(crop, planes, y0, x0, chh, cw, c, h, w);
        CHECK(prg_image_crop(&win, &pic, y0, x0, chh, cw) == PRG_OK, "%s", prg_last_error());
        CHECK(prg_resize_u8(a, dh, dw, win.data, chh, cw, c, PRG_FILTER_BICUBIC) == PRG_OK, "%s", prg_last_error());
        /* half the calls in a workspace of exactly the size asked for, half allocating */
        CHECK(prg_planes_resize(b, dh, dw, crop, c, chh, cw, t % 2 ? work : NULL) == PRG_OK, "%s", prg_last_error());
        for (ch = 0; ch < c; ch++)
            for (i = 0; i < (size_t)dw * dh; i++)
                if (a[i * c + ch] != b[(size_t)ch * dw * dh + i]) {
                    if (fails++ < 5)
                        CHECK(0, "case %d: %dx%dx%d window %dx%d at (%d,%d) -> %dx%d: channel %d pixel %zu: interleaved %d, planar %d",
                              t, w, h, c, cw, chh, x0, y0, dw, dh, ch, i, a[i * c + ch], b[(size_t)ch * dw * dh + i]);
                    i = (size_t)dw * dh; /* one report per channel */
                }
        free(planes); free(crop); free(a); free(b); free(work);
        prg_image_free(&win);
        prg_image_free(&pic);
    }
    CHECK(fails == 0, "interleaved and planar resizes differ in %d channels of 300 cases", fails);
}

int main(void) {
    test_jpeg();
    test_png();
    test_defects();
    test_channels();
    test_corrupt_headers();
    test_nested_error();
    test_resize();
    test_resize_channels();
    test_resize_agree();
    test_prepare();
    return prg_test_finish("test_images");
}
