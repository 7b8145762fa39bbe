/* ckpt_diff: the largest |difference| between the model tensors of two
   checkpoints (F32 tensors present in both; the optimiser's "optim." moments
   left out), for checks that two training runs agree within a tolerance.

     ckpt_diff A.safetensors B.safetensors
     -> compare: 62 tensors, max |diff| 1.234e-07 (in out.2.weight), max |weight| 4.1e-01

   Exit status 0 when at least one tensor was compared, 1 otherwise (a
   missing tensor or one of another size in B, or an unreadable file). */
#define PRG_IMPLEMENTATION
#include "prg.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    prg_st *a = NULL, *b = NULL;
    double maxd = 0.0, maxabs = 0.0;
    const char *worst = "";
    int i, n, rc = 1, compared = 0;
    float *xa = NULL, *xb = NULL;
    if (argc != 3) {
        fprintf(stderr, "usage: ckpt_diff A.safetensors B.safetensors\n");
        return 2;
    }
    if (prg_st_open(&a, argv[1]) != PRG_OK || prg_st_open(&b, argv[2]) != PRG_OK) {
        fprintf(stderr, "ckpt_diff: %s\n", prg_last_error());
        goto done;
    }
    n = prg_st_num_tensors(a);
    for (i = 0; i < n; i++) {
        const prg_st_info *ia = prg_st_info_at(a, i);
        prg_st_info ib;
        size_t k;
        if (!strncmp(ia->name, "optim.", 6) || ia->dtype != PRG_DT_F32) continue;
        if (prg_st_find(b, ia->name, &ib) != PRG_OK || ib.count != ia->count) {
            fprintf(stderr, "ckpt_diff: %s: tensor %s missing or of another size in %s\n", argv[1], ia->name, argv[2]);
            goto done;
        }
        xa = (float *)prg_alloc(ia->count * sizeof(float));
        xb = (float *)prg_alloc(ia->count * sizeof(float));
        if (!xa || !xb || prg_st_read_f32(a, ia->name, xa, ia->count, 0) != PRG_OK ||
            prg_st_read_f32(b, ia->name, xb, ia->count, 0) != PRG_OK) {
            fprintf(stderr, "ckpt_diff: %s\n", xa && xb ? prg_last_error() : "out of memory");
            goto done;
        }
        for (k = 0; k < ia->count; k++) {
            double d = fabs((double)xa[k] - xb[k]);
            if (d != d) d = INFINITY;
            if (d > maxd) { maxd = d; worst = ia->name; }
            if (fabs(xa[k]) > maxabs) maxabs = fabs(xa[k]);
        }
        prg_free(xa); prg_free(xb); xa = xb = NULL;
        compared++;
    }
    printf("compare: %d tensors, max |diff| %.3e (in %s), max |weight| %.3e\n", compared, maxd, worst, maxabs);
    rc = compared > 0 ? 0 : 1;
done:
    prg_free(xa); prg_free(xb);
    if (a) prg_st_close(a);
    if (b) prg_st_close(b);
    return rc;
}
