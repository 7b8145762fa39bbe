/* The formula weights and inputs of tools/ref_unet.py (hash_u, test_weights,
   test_inputs), shared by the tests that compare with its fixtures. */
#ifndef UNET_TEST_WEIGHTS_H
#define UNET_TEST_WEIGHTS_H
#include <math.h>
#include <string.h>

static double hash_u(uint64_t i, uint64_t j) {
    const uint64_t m = 0xFFFFFFFFull;
    uint64_t h = ((((i + 1) * 0x9E3779B1ull) & m) + j * 0x85EBCA77ull) & m;
    h ^= h >> 15;
    h = (h * 0x2C1B3C6Dull) & m;
    h ^= h >> 12;
    h = (h * 0x297A2D39ull) & m;
    h ^= h >> 15;
    return (double)h / 4294967296.0;
}

static int ends_with(const char *s, const char *tail) {
    size_t a = strlen(s), b = strlen(tail);
    return a >= b && strcmp(s + a - b, tail) == 0;
}

static void set_test_weights(prg_unet *net) {
    float *p = prg_unet_params(net);
    int i, nt = prg_unet_num_tensors(net), prev_ndim = 0;
    int64_t prev_shape[4] = {1, 1, 1, 1};
    for (i = 0; i < nt; i++) {
        const char *name;
        int ndim, d;
        int64_t shape[4], count = 1, fan = 1, j;
        size_t off;
        prg_unet_tensor_info(net, i, &name, &ndim, shape, &off);
        for (d = 0; d < ndim; d++) count *= shape[d];
        if (ends_with(name, "weight"))
            for (d = 1; d < ndim; d++) fan *= shape[d];
        else
            for (d = 1; d < prev_ndim; d++) fan *= prev_shape[d];
        for (j = 0; j < count; j++) {
            double u = hash_u((uint64_t)i, (uint64_t)j), v;
            if (ends_with(name, "weight") && ndim == 1)
                v = 1.0 + 0.25 * (2.0 * u - 1.0);
            else if (ends_with(name, "bias") && prev_ndim == 1)
                v = 0.25 * (2.0 * u - 1.0);
            else
                v = (2.0 * u - 1.0) * (1.0 / sqrt((double)fan));
            p[off + j] = (float)v;
        }
        prev_ndim = ndim;
        memcpy(prev_shape, shape, sizeof shape);
    }
}

static void fill_formula(float *x, size_t n, uint64_t stream) {
    size_t j;
    for (j = 0; j < n; j++) x[j] = (float)(2.0 * hash_u(stream, j) - 1.0);
}
#endif
