/* Tests of the data section: each augmentation on tiny hand-checked images,
   PIL reference outputs (tests/fixtures/data_ref.h, written by tools/ref_data.py),
   invariants of the whole transform, the batch builder and the loader. */
#define PRG_IMPLEMENTATION
#include "../prg.h"
#include "prg_test.h"
#include "fixtures/data_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t fill3[3] = {124, 116, 104};

static int bytes_equal(const uint8_t *a, const unsigned char *b, size_t n, size_t *first) {
    size_t i;
    for (i = 0; i < n; i++)
        if (a[i] != b[i]) {
            *first = i;
            return 0;
        }
    return 1;
}

static void test_normalize(void) {
    uint8_t px[6] = {0, 255, 128, 51, 0, 255};
    float mean[2] = {0.5f, 0.25f}, std[2] = {0.5f, 0.25f}, out[6];
    int i;
    prg_planes_normalize(out, px, mean, std, 2, 1, 3);
    /* (0 - .5)/.5 = -1, (1 - .5)/.5 = 1, 51/255 = 0.2 -> (0.2 - .25)/.25 = -0.2, (1-.25)/.25 = 3 */
    CHECK(out[0] == -1.0f && out[1] == 1.0f, "normalize ends: %g %g", out[0], out[1]);
    CHECK(fabsf(out[3] - -0.2f) < 1e-6f && out[4] == -1.0f && out[5] == 3.0f,
          "normalize channel 1: %g %g %g", out[3], out[4], out[5]);
    for (i = 0; i < 6; i++) {
        /* the same three float roundings as ToTensor + Normalize */
        float v = (float)px[i] / 255.0f;
        v = v - mean[i / 3];
        v = v / std[i / 3];
        CHECK(out[i] == v, "normalize bits at %d", i);
    }
}

/* against PyTorch's ToTensor + Normalize, every byte value, all bits */
static void test_normalize_torch(void) {
#if REF_HAVE_NORM
    static uint8_t px[768];
    static float out[768];
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    int i, bad = 0;
    for (i = 0; i < 768; i++) px[i] = (uint8_t)(i % 256);
    prg_planes_normalize(out, px, mean, std, 3, 16, 16);
    for (i = 0; i < 768; i++) {
        uint32_t b;
        memcpy(&b, &out[i], 4);
        bad += b != ref_norm_bits[i];
    }
    CHECK(bad == 0, "normalise differs from torch in %d of 768 values", bad);
#endif
}

static void test_flip_crop(void) {
    uint8_t img[2 * 2 * 3] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, out[2 * 3 * 4];
    const uint8_t flipped[12] = {3, 2, 1, 6, 5, 4, 9, 8, 7, 12, 11, 10};
    int i, ok = 1;
    prg_planes_flip(img, 2, 2, 3);
    CHECK(memcmp(img, flipped, 12) == 0, "flip");
    prg_planes_flip(img, 2, 2, 3);
    /* window of 3x4 at (-1, 1): row -1 is zero, columns 1..2 then a zero column */
    prg_planes_crop(out, img, -1, 1, 3, 4, 2, 2, 3);
    {
        const uint8_t want[24] = {0, 0, 0, 0, 2, 3, 0, 0, 5, 6, 0, 0,
                                  0, 0, 0, 0, 8, 9, 0, 0, 11, 12, 0, 0};
        for (i = 0; i < 24; i++) ok &= out[i] == want[i];
        CHECK(ok, "crop with zero fill");
    }
}

/* bicubic resize: constants stay constant, linear ramps stay linear inside */
static void test_resize_shapes(void) {
    static uint8_t src[3 * 16 * 16], dst[3 * 40 * 40];
    const int sizes[][4] = {{16, 16, 7, 5}, {16, 16, 40, 33}, {9, 13, 13, 9}, {16, 3, 5, 16}};
    int s, i, y, x;
    for (s = 0; s < 4; s++) {
        int h = sizes[s][0], w = sizes[s][1], oh = sizes[s][2], ow = sizes[s][3], ok = 1;
        memset(src, 77, sizeof src);
        CHECK(prg_planes_resize(dst, oh, ow, src, 3, h, w, NULL) == PRG_OK, "resize rc");
        for (i = 0; i < 3 * oh * ow; i++) ok &= dst[i] == 77;
        CHECK(ok, "constant %dx%d -> %dx%d stays 77", h, w, oh, ow);
    }
    /* ramp v = 10 + 12 x along x; upscale 16 -> 40 and downscale 16 -> 8 */
    for (s = 0; s < 2; s++) {
        int ow = s == 0 ? 40 : 8, ok = 1;
        double scale = 16.0 / ow, support = 2.0 * (scale > 1 ? scale : 1);
        for (y = 0; y < 4; y++)
            for (x = 0; x < 16; x++) src[y * 16 + x] = (uint8_t)(10 + 12 * x);
        prg_planes_resize(dst, 4, ow, src, 1, 4, 16, NULL);
        for (x = 0; x < ow; x++) {
            double center = (x + 0.5) * scale; /* in source pixel-edge units */
            double want = 10 + 12 * (center - 0.5);
            if (center - support < 0 || center + support > 16) continue; /* kernel cut by the edge */
            for (y = 0; y < 4; y++) ok &= fabs(dst[y * ow + x] - want) <= 0.5 + 1e-3;
        }
        CHECK(ok, "linear ramp stays linear inside (16 -> %d)", ow);
    }
}

static void test_resize_pil(void) {
    static uint8_t dst[3 * 32 * 32];
    size_t i, first = 0;
    for (i = 0; i < sizeof ref_resizes / sizeof ref_resizes[0]; i++) {
        const ref_resize *r = &ref_resizes[i];
        prg_planes_resize(dst, r->oh, r->ow, r->src, r->c, r->h, r->w, NULL);
        CHECK(bytes_equal(dst, r->out, (size_t)r->c * r->oh * r->ow, &first),
              "resize %dx%dx%d -> %dx%d differs from PIL at %zu: %d vs %d", r->c, r->h, r->w, r->oh,
              r->ow, first, dst[first], r->out[first]);
    }
}

static void test_ops_pil(void) {
    static uint8_t dst[3 * 32 * 32];
    size_t i, first = 0;
    for (i = 0; i < sizeof ref_ops / sizeof ref_ops[0]; i++) {
        const ref_op *r = &ref_ops[i];
        uint8_t fill[3] = {124, 116, 104};
        if (r->c == 1) fill[0] = 33;
        CHECK(strcmp(prg_randaug_op_name(r->op), r->name) == 0, "op %d is %s", r->op, r->name);
        prg_randaug_op_apply(dst, r->src, r->op, r->level, r->negate, fill, r->c, r->h, r->w);
        CHECK(bytes_equal(dst, r->out, (size_t)r->c * r->h * r->w, &first),
              "%s level %g negate %d (%d ch) differs from PIL at %zu: %d vs %d", r->name, r->level,
              r->negate, r->c, first, dst[first], r->out[first]);
    }
    for (i = 0; i < sizeof ref_rots / sizeof ref_rots[0]; i++) {
        prg_planes_rotate(dst, ref_square_src, ref_rots[i].degrees, fill3, 3, 6, 6);
        CHECK(bytes_equal(dst, ref_rots[i].out, 3 * 36, &first), "rotate %g differs from PIL at %zu",
              ref_rots[i].degrees, first);
    }
}

/* point ops, hand-computed */
static void test_point_ops(void) {
    uint8_t src[8] = {0, 15, 16, 100, 127, 128, 200, 255}, out[8];
    uint8_t f1[1] = {0};
    int i, ok;
    /* level 9: posterize keeps 4 - int(3.6) = 1 bit */
    prg_randaug_op_apply(out, src, PRG_RA_POSTERIZE, 9.0, 0, f1, 1, 1, 8);
    CHECK(out[0] == 0 && out[4] == 0 && out[5] == 128 && out[6] == 128 && out[7] == 128, "posterize 1 bit");
    /* level 5: 4 - int(2.0) = 2 bits: mask 0xC0 */
    prg_randaug_op_apply(out, src, PRG_RA_POSTERIZE, 5.0, 0, f1, 1, 1, 8);
    ok = 1;
    for (i = 0; i < 8; i++) ok &= out[i] == (src[i] & 0xC0);
    CHECK(ok, "posterize 2 bits");
    /* level 9: threshold 256 - int(230.4) = 26: below stays, others invert */
    prg_randaug_op_apply(out, src, PRG_RA_SOLARIZE, 9.0, 0, f1, 1, 1, 8);
    CHECK(out[0] == 0 && out[1] == 15 && out[2] == 16 && out[3] == 155 && out[7] == 0, "solarize 26");
    /* level 9: add int(99.0) = 99 below 128, saturating */
    prg_randaug_op_apply(out, src, PRG_RA_SOLARIZE_ADD, 9.0, 0, f1, 1, 1, 8);
    CHECK(out[0] == 99 && out[3] == 199 && out[4] == 226 && out[5] == 128 && out[7] == 255, "solarize add");
    prg_randaug_op_apply(out, src, PRG_RA_INVERT, 9.0, 0, f1, 1, 1, 8);
    ok = 1;
    for (i = 0; i < 8; i++) ok &= out[i] == 255 - src[i];
    CHECK(ok, "invert");
    {   /* autocontrast: lo 10, hi 30: scale 12.75 -> 0, int(127.5) = 127, 255 */
        uint8_t a[4] = {10, 20, 30, 20}, o[4];
        prg_randaug_op_apply(o, a, PRG_RA_AUTOCONTRAST, 9.0, 0, f1, 1, 2, 2);
        CHECK(o[0] == 0 && o[1] == 127 && o[2] == 255 && o[3] == 127, "autocontrast %d %d %d", o[0], o[1], o[2]);
        /* a flat channel is left alone */
        memset(a, 42, 4);
        prg_randaug_op_apply(o, a, PRG_RA_AUTOCONTRAST, 9.0, 0, f1, 1, 2, 2);
        CHECK(o[0] == 42 && o[3] == 42, "autocontrast flat");
    }
    {   /* equalize: 512 x 0, 256 x 100, 256 x 200: step (1024 - 256) / 255 = 3, lut = n / 3
           with n starting at 1: 0 -> 0, 100 -> 513 / 3 = 171, 200 -> 769 / 3 = 256 -> 255 */
        static uint8_t a[1024], o[1024];
        for (i = 0; i < 1024; i++) a[i] = (uint8_t)(i < 512 ? 0 : i < 768 ? 100 : 200);
        prg_randaug_op_apply(o, a, PRG_RA_EQUALIZE, 9.0, 0, f1, 1, 32, 32);
        CHECK(o[0] == 0 && o[600] == 171 && o[900] == 255, "equalize %d %d %d", o[0], o[600], o[900]);
    }
}

static void test_enhance_ops(void) {
    uint8_t f1[1] = {0}, out[9];
    /* brightness level 5 -> factor 1.45: 100 * 1.45 = 145, 200 -> 290 -> 255; negate: 0.55 */
    uint8_t a[2] = {100, 200}, o[2];
    prg_randaug_op_apply(o, a, PRG_RA_BRIGHTNESS, 5.0, 0, f1, 1, 1, 2);
    CHECK(o[0] == 145 && o[1] == 255, "brightness up %d %d", o[0], o[1]);
    prg_randaug_op_apply(o, a, PRG_RA_BRIGHTNESS, 5.0, 1, f1, 1, 1, 2);
    CHECK(o[0] == 55 && o[1] == 110, "brightness down %d %d", o[0], o[1]);
    /* contrast level 10 negate -> factor max(0.1, 0.1) = 0.1 around the mean 150:
       150 + 0.1 (100 - 150) = 145, 150 + 0.1 * 50 = 155 */
    prg_randaug_op_apply(o, a, PRG_RA_CONTRAST, 10.0, 1, f1, 1, 1, 2);
    CHECK(o[0] == 145 && o[1] == 155, "contrast %d %d", o[0], o[1]);
    {   /* sharpness of an impulse: smooth = 0.5 + 130 * 5/13 = 50.5 -> 50; factor 1.9
           (level 10): 50 + 1.9 * 80 = 202; the border stays */
        uint8_t imp[9] = {0, 0, 0, 0, 130, 0, 0, 0, 0};
        prg_randaug_op_apply(out, imp, PRG_RA_SHARPNESS, 10.0, 0, f1, 1, 3, 3);
        CHECK(out[4] == 202 && out[0] == 0 && out[5] == 0, "sharpness impulse %d", out[4]);
    }
    {   /* color on a gray RGB image changes nothing */
        uint8_t g[12], go[12];
        int i, ok = 1;
        for (i = 0; i < 4; i++) g[i] = g[4 + i] = g[8 + i] = (uint8_t)(40 * i + 3);
        prg_randaug_op_apply(go, g, PRG_RA_COLOR, 9.0, 0, fill3, 3, 2, 2);
        for (i = 0; i < 12; i++) ok &= go[i] == g[i];
        CHECK(ok, "color of gray");
    }
}

static void test_geometry(void) {
    /* 2 x 4 image rotated by 90 degrees (not square: the general path). Output
       (x, y) samples source (2 - y, x - 1) exactly; columns 0 and 3 fall outside. */
    uint8_t src[8] = {1, 2, 3, 4, 5, 6, 7, 8}, out[8], f[1] = {99};
    prg_planes_rotate(out, src, 90.0, f, 1, 2, 4);
    CHECK(out[0] == 99 && out[3] == 99 && out[4] == 99 && out[7] == 99, "rotate 90 fill");
    CHECK(out[1] == src[0 * 4 + 2] && out[2] == src[1 * 4 + 2] && out[5] == src[0 * 4 + 1] &&
              out[6] == src[1 * 4 + 1],
          "rotate 90 samples: %d %d %d %d", out[1], out[2], out[5], out[6]);
    {   /* translate x by 0.25 * 8 = 2 pixels: out(x) = src(x + 2), the last two filled */
        uint8_t s8[8] = {10, 20, 30, 40, 50, 60, 70, 80}, o8[8];
        double m[6] = {1, 0, 2, 0, 1, 0};
        prg_planes_affine(o8, s8, m, f, 1, 1, 8);
        CHECK(o8[0] == 30 && o8[5] == 80 && o8[6] == 99 && o8[7] == 99, "translate by 2");
        /* the op: level 10/1.8 gives pct 0.45 * 10/18 = 0.25 */
        prg_randaug_op_apply(o8, s8, PRG_RA_TRANSLATE_X, 50.0 / 9.0, 1, f, 1, 1, 8);
        CHECK(o8[0] == 99 && o8[1] == 99 && o8[2] == 10 && o8[7] == 60, "translate op negative");
    }
}

static void test_rrc_box(void) {
    prg_transform t;
    prg_rng r;
    int top, left, ch, cw, i, ok = 1;
    prg_transform_init(&t, 1, 3, 64, 64);
    /* impossible scale: always the fallback, a centered crop clamped to ratio 4/3 */
    t.scale_min = 2.0f;
    t.scale_max = 3.0f;
    prg_rng_seed(&r, 1, 0);
    prg__rrc_box(&r, &t, 20, 100, &top, &left, &ch, &cw);
    CHECK(ch == 20 && cw == 27 && top == 0 && left == 36, "fallback %d %d %d %d", top, left, ch, cw);
    prg__rrc_box(&r, &t, 30, 30, &top, &left, &ch, &cw);
    CHECK(ch == 30 && cw == 30 && top == 0 && left == 0, "fallback square");
    t.scale_min = 0.08f;
    t.scale_max = 1.0f;
    for (i = 0; i < 2000; i++) {
        double frac, ar;
        prg__rrc_box(&r, &t, 64, 64, &top, &left, &ch, &cw);
        frac = (double)ch * cw / 4096.0;
        ar = (double)cw / ch;
        ok &= top >= 0 && left >= 0 && top + ch <= 64 && left + cw <= 64;
        ok &= (frac > 0.06 && frac <= 1.0) && ar > 0.7 && ar < 1.43;
    }
    CHECK(ok, "random resized crop boxes inside, area and ratio in range");
}

static void test_erase(void) {
    prg_transform t;
    prg_rng r;
    static float img[3 * 32 * 32];
    int i, n = 4000, erased = 0, boxes = 0;
    double area_sum = 0, zsum = 0, z2 = 0, zn = 0;
    prg_transform_init(&t, 1, 3, 32, 32);
    prg_rng_seed(&r, 5, 1);
    t.erase_prob = 1.0f;
    for (i = 0; i < n; i++) {
        int a, k;
        for (k = 0; k < 3 * 32 * 32; k++) img[k] = 100.0f;
        a = prg_planes_erase(img, &t, &r, 3, 32, 32);
        if (a > 0) {
            int cnt = 0;
            boxes++;
            area_sum += a / 1024.0;
            for (k = 0; k < 3 * 32 * 32; k++)
                if (img[k] != 100.0f) {
                    cnt++;
                    zsum += img[k];
                    z2 += (double)img[k] * img[k];
                    zn++;
                }
            CHECK(cnt == 3 * a, "erase fills exactly its box in all channels (%d vs %d)", cnt, 3 * a);
            CHECK(a / 1024.0 >= 0.01 && a / 1024.0 <= 0.34 + 0.07, "box area %d", a);
            if (cnt != 3 * a) break;
        }
    }
    /* an accepted box exists in almost every image (10 attempts); its area is
       uniform in [0.02, 1/3] thinned at the top by the fit test */
    CHECK(boxes > n * 0.97, "boxes %d of %d", boxes, n);
    CHECK(area_sum / boxes > 0.12 && area_sum / boxes < 0.18, "mean erased fraction %g", area_sum / boxes);
    CHECK(fabs(zsum / zn) < 0.02 && fabs(z2 / zn - 1.0) < 0.03, "fill ~ N(0,1): mean %g var %g",
          zsum / zn, z2 / zn);
    t.erase_prob = 0.25f;
    for (i = 0; i < n; i++) erased += prg_planes_erase(img, &t, &r, 3, 32, 32) > 0;
    /* binomial(4000, ~0.25): sd 27 */
    CHECK(erased > 850 && erased < 1110, "erasing probability 0.25: %d of %d", erased, n);
}

/* a dataset of distinct images */
static prg_dataset make_ds(int n, int c, int h, int w) {
    prg_dataset ds;
    size_t i, total = (size_t)n * c * h * w;
    ds.n = n; ds.c = c; ds.h = h; ds.w = w; ds.num_classes = 10;
    ds.images = (uint8_t *)malloc(total);
    ds.labels = (int32_t *)malloc((size_t)n * sizeof(int32_t));
    for (i = 0; i < total; i++) ds.images[i] = (uint8_t)((i * 2654435761u) >> 13);
    for (i = 0; i < (size_t)n; i++) ds.labels[i] = (int32_t)(i % 10);
    return ds;
}

static void test_transform_pipeline(void) {
    prg_dataset ds = make_ds(24, 3, 32, 32);
    prg_transform t;
    int idx[24], i, ok = 1;
    size_t per = 3 * 32 * 32;
    float *a = (float *)malloc(24 * per * sizeof(float)), *b = (float *)malloc(24 * per * sizeof(float));
    int32_t y[24];
    for (i = 0; i < 24; i++) idx[i] = 23 - i;
    CHECK(prg_transform_init(&t, 1, 3, 32, 32) == PRG_OK && t.crop == PRG_CROP_RANDOM && t.ra_ops == 2,
          "train preset for 32");
    prg_set_num_threads(1);
    CHECK(prg_batch_build(a, y, &ds, &t, idx, 24, 7, 3) == PRG_OK, "build: %s", prg_last_error());
    CHECK(y[0] == 3 && y[23] == 0, "labels follow the index");
    prg_set_num_threads(2);
    prg_batch_build(b, y, &ds, &t, idx, 24, 7, 3);
    CHECK(memcmp(a, b, 24 * per * sizeof(float)) == 0, "1 and 2 threads give the same bits");
    prg_batch_build(b, y, &ds, &t, idx, 24, 8, 3);
    CHECK(memcmp(a, b, 24 * per * sizeof(float)) != 0, "another seed differs");
    prg_batch_build(b, y, &ds, &t, idx, 24, 7, 4);
    CHECK(memcmp(a, b, 24 * per * sizeof(float)) != 0, "another epoch differs");
    /* values: normalised pixels or N(0,1) erasing noise, finite */
    for (i = 0; i < (int)(24 * per); i++) ok &= a[i] == a[i] && fabsf(a[i]) < 8.0f;
    CHECK(ok, "finite, in range");
    /* no augmentation at all = plain normalisation */
    {
        prg_transform e;
        prg_transform_init(&e, 0, 3, 32, 32);
        CHECK(e.crop == PRG_CROP_NONE && e.ra_ops == 0 && e.erase_prob == 0.0f, "eval preset for 32");
        prg_batch_build(b, NULL, &ds, &e, idx, 1, 7, 0);
        prg_planes_normalize(a, ds.images + (size_t)23 * per, e.mean, e.std, 3, 32, 32);
        CHECK(memcmp(a, b, per * sizeof(float)) == 0, "eval 32 = normalise");
    }
    {   /* eval at 64: resize 64 -> 73, center crop at round(4.5) = 4 */
        prg_dataset d64 = make_ds(2, 3, 64, 64);
        prg_transform e;
        static uint8_t r73[3 * 73 * 73], c64[3 * 64 * 64];
        float *o = (float *)malloc(3 * 64 * 64 * sizeof(float)), *w = (float *)malloc(3 * 64 * 64 * sizeof(float));
        int zero = 0;
        prg_transform_init(&e, 0, 3, 64, 64);
        CHECK(e.crop == PRG_CROP_CENTER && e.resize == 73, "eval preset for 64: resize %d", e.resize);
        prg_batch_build(o, NULL, &d64, &e, &zero, 1, 1, 0);
        prg_planes_resize(r73, 73, 73, d64.images, 3, 64, 64, NULL);
        prg_planes_crop(c64, r73, 4, 4, 64, 64, 3, 73, 73);
        prg_planes_normalize(w, c64, e.mean, e.std, 3, 64, 64);
        CHECK(memcmp(o, w, 3 * 64 * 64 * sizeof(float)) == 0, "eval 64 = resize 73 + crop 4 + normalise");
        /* training at 64 (resized crop, RandAugment, erasing) runs and is deterministic */
        prg_transform_init(&e, 1, 3, 64, 64);
        CHECK(e.crop == PRG_CROP_RESIZED, "train preset for 64");
        prg_batch_build(o, NULL, &d64, &e, &zero, 1, 1, 0);
        prg_batch_build(w, NULL, &d64, &e, &zero, 1, 1, 0);
        CHECK(memcmp(o, w, 3 * 64 * 64 * sizeof(float)) == 0, "deterministic at 64");
        free(o); free(w); free(d64.images); free(d64.labels);
    }
    free(a); free(b); free(ds.images); free(ds.labels);
}

/* the random crop + flip alone: every output is the source shifted by
   (dy, dx) in [-4, 4] (flipped or not) with zero fill */
static void test_random_crop(void) {
    prg_dataset ds = make_ds(1, 1, 32, 32);
    prg_transform t;
    static float out[32 * 32];
    static uint8_t u[32 * 32], shifted[32 * 32];
    int trial, found_all = 1, zero = 0, seen_flip = 0, seen_plain = 0;
    prg_transform_init(&t, 1, 1, 32, 32);
    t.mean[0] = 0.0f;
    t.std[0] = 1.0f;
    t.ra_ops = 0;
    t.erase_prob = 0.0f;
    for (trial = 0; trial < 40; trial++) {
        int dy, dx, fl, found = 0, k;
        prg_batch_build(out, NULL, &ds, &t, &zero, 1, 100 + trial, 0);
        for (k = 0; k < 32 * 32; k++) u[k] = (uint8_t)lrintf(out[k] * 255.0f);
        for (fl = 0; fl < 2 && !found; fl++)
            for (dy = -4; dy <= 4 && !found; dy++)
                for (dx = -4; dx <= 4 && !found; dx++) {
                    prg_planes_crop(shifted, ds.images, dy, dx, 32, 32, 1, 32, 32);
                    if (fl) prg_planes_flip(shifted, 1, 32, 32);
                    if (memcmp(shifted, u, sizeof u) == 0) {
                        found = 1;
                        if (fl) seen_flip = 1; else seen_plain = 1;
                    }
                }
        found_all &= found;
    }
    CHECK(found_all && seen_flip && seen_plain, "pad-4 crop + flip: shifted copies (flip seen %d, plain %d)",
          seen_flip, seen_plain);
    {   /* MNIST-like: 28x28 with a border of 2 -> 32x32, no crop */
        prg_dataset m = make_ds(1, 1, 28, 28);
        prg_transform e;
        int ok = 1, y, x;
        prg_transform_init(&e, 0, 1, 32, 32);
        CHECK(prg_transform_check(&e, 1, 28, 28) != PRG_OK, "1-channel mean/std must be given");
        e.mean[0] = 0.1307f;
        e.std[0] = 0.3081f;
        CHECK(prg_transform_check(&e, 1, 28, 28) == PRG_ERR_SHAPE, "28 without border is not 32");
        e.border = 2;
        CHECK(prg_batch_build(out, NULL, &m, &e, &zero, 1, 0, 0) == PRG_OK, "border build");
        for (y = 0; y < 32; y++)
            for (x = 0; x < 32; x++) {
                int in = y >= 2 && y < 30 && x >= 2 && x < 30;
                float v = ((float)(in ? m.images[(y - 2) * 28 + x - 2] : 0) / 255.0f - 0.1307f) / 0.3081f;
                ok &= out[y * 32 + x] == v;
            }
        CHECK(ok, "border 2: zero-padded then normalised");
        free(m.images); free(m.labels);
    }
    free(ds.images); free(ds.labels);
}

/* the resized crop inside the transform = the box, cropped, then resized */
static void test_resized_crop(void) {
    prg_dataset ds = make_ds(3, 3, 40, 48);
    prg_transform t;
    static float out[3 * 32 * 32];
    static uint8_t crop[3 * 40 * 48], want[3 * 32 * 32];
    int trial, ok = 1, k;
    prg_transform_init(&t, 1, 3, 32, 32);
    t.crop = PRG_CROP_RESIZED;
    t.hflip = 0.0f;
    t.ra_ops = 0;
    t.erase_prob = 0.0f;
    for (k = 0; k < 3; k++) {
        t.mean[k] = 0.0f;
        t.std[k] = 1.0f;
    }
    for (trial = 0; trial < 30; trial++) {
        prg_rng r;
        int top, left, ch, cw, idx = trial % 3;
        prg_batch_build(out, NULL, &ds, &t, &idx, 1, 9, (uint64_t)trial);
        prg_data_rng(&r, 9, (uint64_t)trial, idx);
        prg__rrc_box(&r, &t, 40, 48, &top, &left, &ch, &cw);
        prg_planes_crop(crop, ds.images + (size_t)idx * 3 * 40 * 48, top, left, ch, cw, 3, 40, 48);
        prg_planes_resize(want, 32, 32, crop, 3, ch, cw, NULL);
        for (k = 0; k < 3 * 32 * 32; k++) ok &= lrintf(out[k] * 255.0f) == want[k];
    }
    CHECK(ok, "resized crop = crop + resize");
    free(ds.images); free(ds.labels);
}

/* RandAugment inside the transform: the ops drawn from the image's stream,
   applied with timm's probability, magnitude noise, sign and the mean fill */
static void test_randaug_pipeline(void) {
    prg_dataset ds = make_ds(4, 3, 16, 16);
    prg_transform t;
    static float out[3 * 16 * 16], want[3 * 16 * 16];
    static uint8_t a[3 * 16 * 16], b[3 * 16 * 16];
    const uint8_t fill[3] = {124, 116, 104}; /* round(255 * ImageNet mean) */
    int trial, ok = 1, applied = 0, geometric = 0;
    prg_transform_init(&t, 1, 3, 16, 16);
    t.crop = PRG_CROP_NONE;
    t.hflip = 0.0f;
    t.erase_prob = 0.0f;
    for (trial = 0; trial < 200; trial++) {
        prg_rng r;
        int idx = trial % 4, ops[2], l;
        prg_batch_build(out, NULL, &ds, &t, &idx, 1, 11, (uint64_t)trial);
        prg_data_rng(&r, 11, (uint64_t)trial, idx);
        memcpy(a, ds.images + (size_t)idx * 3 * 16 * 16, sizeof a);
        for (l = 0; l < 2; l++) ops[l] = (int)prg_rng_below(&r, PRG_RA_NUM_OPS);
        for (l = 0; l < 2; l++) {
            double level;
            int negate = 0;
            if (prg__rng_double(&r) > 0.5) continue;
            level = 9.0 + 0.5 * prg_rng_normal(&r);
            if (level > 10.0) level = 10.0;
            if (prg__ra_signed(ops[l])) negate = prg__rng_double(&r) > 0.5;
            prg_randaug_op_apply(b, a, ops[l], level, negate, fill, 3, 16, 16);
            memcpy(a, b, sizeof a);
            applied++;
            geometric += ops[l] == PRG_RA_ROTATE || ops[l] >= PRG_RA_SHEAR_X;
        }
        prg_planes_normalize(want, a, t.mean, t.std, 3, 16, 16);
        ok &= memcmp(out, want, sizeof out) == 0;
    }
    CHECK(ok, "RandAugment in the pipeline = the drawn ops applied in turn");
    /* 400 draws at p 0.5: about 200 applied; 6 of 15 ops are geometric */
    CHECK(applied > 150 && applied < 250 && geometric > 40 && geometric < 120, "applied %d, geometric %d",
          applied, geometric);
    free(ds.images); free(ds.labels);
}

static void test_loader(void) {
    prg_dataset ds = make_ds(23, 3, 32, 32);
    prg_transform t;
    prg_loader_config cfg;
    prg_loader *ld = NULL, *ld2 = NULL;
    prg_batch b, b2;
    int seen[23], e, s, i, ok = 1, same = 1, sizes_ok = 1;
    size_t per = 3 * 32 * 32;
    float *ref = (float *)malloc(5 * per * sizeof(float));
    prg_transform_init(&t, 1, 3, 32, 32);
    prg_loader_config_default(&cfg, 5, 42);
    CHECK(prg_loader_create(&ld, &ds, &t, &cfg) == PRG_OK, "loader: %s", prg_last_error());
    cfg.prefetch = 0;
    CHECK(prg_loader_create(&ld2, &ds, &t, &cfg) == PRG_OK, "sync loader");
    CHECK(prg_loader_batches_per_epoch(ld) == 5, "5 batches of <= 5 for 23 images");
    for (e = 0; e < 3; e++) {
        int order_differs = 0;
        memset(seen, 0, sizeof seen);
        for (s = 0; s < 5; s++) {
            CHECK(prg_loader_next(ld, &b) == PRG_OK && prg_loader_next(ld2, &b2) == PRG_OK, "next");
            sizes_ok &= b.size == (s < 4 ? 5 : 3) && b.step == s && b.epoch == (uint64_t)e && b.last == (s == 4);
            for (i = 0; i < b.size; i++) {
                seen[b.index[i]]++;
                ok &= b.y[i] == ds.labels[b.index[i]];
                order_differs |= b.index[i] != s * 5 + i;
            }
            /* background and synchronous builds agree with the batch builder */
            same &= b2.size == b.size && memcmp(b.index, b2.index, (size_t)b.size * sizeof(int)) == 0 &&
                    memcmp(b.x, b2.x, (size_t)b.size * per * sizeof(float)) == 0;
            prg_batch_build(ref, NULL, &ds, &t, b.index, b.size, 42, b.epoch);
            same &= memcmp(ref, b.x, (size_t)b.size * per * sizeof(float)) == 0;
        }
        for (i = 0; i < 23; i++) ok &= seen[i] == 1;
        CHECK(order_differs, "epoch %d is shuffled", e);
    }
    CHECK(ok, "every index exactly once per epoch, labels match");
    CHECK(sizes_ok, "batch sizes, steps, epochs, last flags");
    CHECK(same, "prefetched = synchronous = prg_batch_build");
    prg_loader_free(ld);   /* mid-stream: the thread is building ahead */
    prg_loader_free(ld2);
    /* drop_last, resume from epoch 2 */
    prg_loader_config_default(&cfg, 5, 42);
    cfg.drop_last = 1;
    cfg.start_epoch = 2;
    CHECK(prg_loader_create(&ld, &ds, &t, &cfg) == PRG_OK, "drop_last loader");
    CHECK(prg_loader_batches_per_epoch(ld) == 4, "drop_last: 4 batches");
    for (s = 0; s < 5; s++) prg_loader_next(ld, &b);
    CHECK(b.epoch == 3 && b.step == 0 && b.size == 5, "drop_last wraps to the next epoch");
    prg_loader_free(ld);
    /* resume mid-epoch: start_step 7 continues at epoch 1, step 2; parts: the
       three parts of each batch, in part order, are the whole batch */
    {
        prg_loader *whole, *at, *pt[3];
        int p, k, mid_ok = 1, part_ok = 1;
        prg_loader_config_default(&cfg, 5, 9);
        cfg.prefetch = 0;
        prg_loader_create(&whole, &ds, &t, &cfg);
        cfg.start_step = 7;
        prg_loader_create(&at, &ds, &t, &cfg);
        cfg.start_step = 3;
        for (p = 0; p < 3; p++) {
            cfg.part = p;
            cfg.parts = 3;
            cfg.prefetch = p != 1; /* a background part too */
            CHECK(prg_loader_create(&pt[p], &ds, &t, &cfg) == PRG_OK, "part %d: %s", p, prg_last_error());
        }
        for (k = 0; k < 12; k++) {
            CHECK(prg_loader_next(whole, &b) == PRG_OK, "next");
            if (k >= 7) {
                prg_loader_next(at, &b2);
                mid_ok &= b2.epoch == b.epoch && b2.step == b.step && b2.size == b.size && b2.total == b.size &&
                          b2.offset == 0 && !memcmp(b2.index, b.index, (size_t)b.size * sizeof(int)) &&
                          !memcmp(b2.x, b.x, (size_t)b.size * per * sizeof(float));
            }
            if (k >= 3) {
                int off = 0;
                for (p = 0; p < 3; p++) {
                    prg_loader_next(pt[p], &b2);
                    part_ok &= b2.total == b.size && b2.offset == off && b2.epoch == b.epoch &&
                               b2.size == b.size / 3 + (p < b.size % 3) &&
                               !memcmp(b2.index, b.index + off, (size_t)b2.size * sizeof(int)) &&
                               !memcmp(b2.x, b.x + (size_t)off * per, (size_t)b2.size * per * sizeof(float)) &&
                               !memcmp(b2.y, b.y + off, (size_t)b2.size * sizeof(int32_t));
                    off += b2.size;
                }
            }
        }
        CHECK(b.epoch == 2 && b.step == 1, "12 batches of 5 of 23 images end at epoch 2, step 1 (%d, %d)",
              (int)b.epoch, b.step);
        CHECK(mid_ok, "start_step 7: the batches of a run from step 0, from its 8th on");
        CHECK(part_ok, "3 parts of every batch, concatenated, are the whole batch");
        prg_loader_free(whole);
        prg_loader_free(at);
        for (p = 0; p < 3; p++) prg_loader_free(pt[p]);
        prg_loader_config_default(&cfg, 5, 9);
        cfg.part = 2;
        cfg.parts = 2;
        CHECK(prg_loader_create(&ld, &ds, &t, &cfg) == PRG_ERR_ARG && strstr(prg_last_error(), "part"),
              "part 2 of 2 refused");
    }
    /* errors */
    prg_loader_config_default(&cfg, 0, 1);
    CHECK(prg_loader_create(&ld, &ds, &t, &cfg) == PRG_ERR_ARG && strstr(prg_last_error(), "batch"),
          "batch 0 rejected: %s", prg_last_error());
    prg_loader_config_default(&cfg, 4, 1);
    t.out_h = 64;
    CHECK(prg_loader_create(&ld, &ds, &t, &cfg) == PRG_ERR_SHAPE, "crop larger than padded image rejected");
    {
        int bad = 99;
        prg_transform_init(&t, 1, 3, 32, 32);
        CHECK(prg_batch_build(ref, NULL, &ds, &t, &bad, 1, 0, 0) == PRG_ERR_ARG, "index out of range rejected");
    }
    free(ref); free(ds.images); free(ds.labels);
}

int main(void) {
    test_normalize();
    test_normalize_torch();
    test_flip_crop();
    test_resize_shapes();
    test_resize_pil();
    test_point_ops();
    test_enhance_ops();
    test_geometry();
    test_ops_pil();
    test_rrc_box();
    test_erase();
    test_transform_pipeline();
    test_random_crop();
    test_resized_crop();
    test_randaug_pipeline();
    test_loader();
    return prg_test_finish("test_data");
}
