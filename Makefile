# prg.h - build, test, benchmark.  `make test` runs the whole suite and ends
# with "N passed, N failed".
CC      ?= cc
CXX     ?= c++
OPT     ?= -O2
WARN    := -Wall -Wextra -Wpedantic -Werror
CFLAGS  ?= $(OPT) -std=c99 $(WARN)
LDLIBS  := -lm -pthread
BUILD   := build

TESTS    := $(patsubst tests/%.c,$(BUILD)/%,$(wildcard tests/test_*.c))
EXAMPLES := $(BUILD)/quickstart
TOOLS    := $(BUILD)/bench_gemm

.PHONY: all test asan bench clean aarch64-test
all: $(EXAMPLES) $(TOOLS)

$(BUILD):
	@mkdir -p $(BUILD)

$(BUILD)/test_%: tests/test_%.c prg.h tests/prg_test.h | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

$(BUILD)/quickstart: examples/quickstart.c prg.h | $(BUILD)
	$(CC) $(CFLAGS) -I. -o $@ $< $(LDLIBS)

# The benchmark links OpenBLAS when it is installed, to compare in one run.
HAVE_OPENBLAS := $(shell printf '#include <cblas.h>\nint main(void){return 0;}' | $(CC) -x c - -I/usr/include/x86_64-linux-gnu/openblas-pthread -o /dev/null -lopenblas 2>/dev/null && echo 1)
BLAS_FLAGS := $(if $(HAVE_OPENBLAS),-DPRG_BENCH_OPENBLAS -I/usr/include/x86_64-linux-gnu/openblas-pthread,)
BLAS_LIBS  := $(if $(HAVE_OPENBLAS),-lopenblas,)

$(BUILD)/bench_gemm: tools/bench_gemm.c prg.h | $(BUILD)
	$(CC) $(OPT) -std=c99 -Wall -Wextra -I. $(BLAS_FLAGS) -o $@ $< $(BLAS_LIBS) $(LDLIBS)
$(BUILD)/bench_gemm_native: tools/bench_gemm.c prg.h | $(BUILD)
	$(CC) $(OPT) -march=native -std=c99 -Wall -Wextra -I. $(BLAS_FLAGS) -o $@ $< $(BLAS_LIBS) $(LDLIBS)


test: $(TESTS) $(EXAMPLES) | $(BUILD)
	@BUILD=$(BUILD) tests/run.sh tests/check_build.sh $(TESTS)

asan:
	$(MAKE) BUILD=build-asan CFLAGS="-O1 -g -std=c99 $(WARN) -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" test

# aarch64: cross-compile the tests and run them under qemu-user.
AARCH64_CC ?= aarch64-linux-gnu-gcc
aarch64-test:
	@mkdir -p build-aarch64
	@for t in tests/test_*.c; do $(AARCH64_CC) -O2 -std=c99 $(WARN) -static -o build-aarch64/$$(basename $$t .c) $$t -lm -pthread || exit 1; done
	@PRG_TEST_WRAPPER=qemu-aarch64 tests/run.sh build-aarch64/test_*

# BENCH_ARGS passes options to both runs; the default compares with
# OpenBLAS's AVX-512 kernels (SkylakeX) where the CPU has AVX-512.
BENCH_ARGS ?= --blas-core best
bench: $(BUILD)/bench_gemm $(BUILD)/bench_gemm_native
	$(BUILD)/bench_gemm $(BENCH_ARGS)
	$(BUILD)/bench_gemm_native $(BENCH_ARGS)

clean:
	rm -rf build build-asan build-aarch64
