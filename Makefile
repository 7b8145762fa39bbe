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
TOOLS    := $(BUILD)/bench_gemm $(BUILD)/bench_unet

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

$(BUILD)/bench_unet: tools/bench_unet.c prg.h | $(BUILD)
	$(CC) $(CFLAGS) -I. -o $@ $< $(LDLIBS)

bench: $(BUILD)/bench_gemm $(BUILD)/bench_gemm_native $(BUILD)/bench_unet
	$(BUILD)/bench_gemm
	$(BUILD)/bench_gemm_native --squares-only
	tools/bench_unet.sh $(BUILD)

clean:
	rm -rf build build-asan build-aarch64

# --- data ---
all: $(BUILD)/bench_data
$(BUILD)/bench_data: tools/bench_data.c prg.h | $(BUILD)
	$(CC) $(CFLAGS) -I. -o $@ $< $(LDLIBS)

# --- optim / flow ---
$(BUILD)/bench_optim_flow: tools/bench_optim_flow.c prg.h | $(BUILD)
	$(CC) $(OPT) -std=c99 -Wall -Wextra -I. -o $@ $< $(LDLIBS)
all: $(BUILD)/bench_optim_flow
.PHONY: bench-optim-flow
bench-optim-flow: $(BUILD)/bench_optim_flow
	$(BUILD)/bench_optim_flow
bench: bench-optim-flow

# --- pipeline ---
# The end-to-end examples (each also builds alone: cc -O2 -I. examples/x.c -lm -pthread).
PIPELINE := $(BUILD)/pretrain $(BUILD)/sample $(BUILD)/finetune $(BUILD)/evaluate $(BUILD)/classify \
            $(BUILD)/make_tiny_dataset
all: $(PIPELINE)
$(PIPELINE): $(BUILD)/%: examples/%.c examples/ex_common.h prg.h | $(BUILD)
	$(CC) $(CFLAGS) -I. -o $@ $< $(LDLIBS)
# test_pipeline.sh runs the recipes' --smoke modes and a reduced demo.
TESTS += tests/test_pipeline.sh
test: $(PIPELINE)
.PHONY: demo
demo: $(PIPELINE)
	BIN=$(BUILD) OUT=$(BUILD)/demo examples/demo.sh
