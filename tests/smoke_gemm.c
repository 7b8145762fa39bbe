// The smallest program: one 2x3 by 3x2 product through the run-time-chosen GEMM
// kernel.  tests/check_build.sh compiles it and checks the line it prints.
#define PRG_IMPLEMENTATION
#include "prg.h"
#include <stdio.h>

int main(void) {
    float a[2 * 3] = {1, 2, 3, 4, 5, 6};          // 2 x 3
    float b[3 * 2] = {1, 0, 0, 1, 1, 1};          // 3 x 2
    float c[2 * 2];
    prg_set_num_threads(0);                       // all online CPUs
    prg_sgemm(0, 0, 2, 2, 3, 1.0f, a, 3, b, 2, 0.0f, c, 2);
    printf("%s kernel: %g %g / %g %g\n", prg_gemm_kernel_name(),
           c[0], c[1], c[2], c[3]);               // 4 5 / 10 11
    return 0;
}
