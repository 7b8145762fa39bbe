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

bench: $(BUILD)/bench_gemm $(BUILD)/bench_gemm_native
	$(BUILD)/bench_gemm
	$(BUILD)/bench_gemm_native --squares-only

clean:
	rm -rf build build-asan build-aarch64

# --- images ---
# examples/prepare (ImageNet / Tiny-ImageNet folders -> .npz), the image
# benchmark, and libFuzzer targets for the JPEG and PNG decoders.
all: $(BUILD)/prepare $(BUILD)/bench_images
test: $(BUILD)/prepare

$(BUILD)/prepare: examples/prepare.c prg.h | $(BUILD)
	$(CC) $(CFLAGS) -I. -o $@ $< $(LDLIBS)

$(BUILD)/bench_images: tools/bench_images.c prg.h | $(BUILD)
	$(CC) $(OPT) -std=c99 -Wall -Wextra -I. -o $@ $< $(LDLIBS)

.PHONY: bench-images fuzz
bench: bench-images
bench-images: $(BUILD)/bench_images
	$(BUILD)/bench_images

# make fuzz FUZZ_SECONDS=30: each target runs that long from the fixtures.
FUZZ_SECONDS ?= 30
FUZZ_CC ?= clang
fuzz: | $(BUILD)
	@for t in jpeg png; do \
	  $(FUZZ_CC) -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I. \
	    -o $(BUILD)/fuzz_$$t tools/fuzz_$$t.c -lm -pthread || exit 1; \
	  rm -rf $(BUILD)/fuzz_$$t.corpus; mkdir -p $(BUILD)/fuzz_$$t.corpus; \
	  cp tests/fixtures/images/*.$$( [ $$t = jpeg ] && echo jpg || echo png ) $(BUILD)/fuzz_$$t.corpus/; \
	  echo "fuzz_$$t: $(FUZZ_SECONDS) s"; \
	  $(BUILD)/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 \
	    $(BUILD)/fuzz_$$t.corpus > $(BUILD)/fuzz_$$t.log 2>&1; rc=$$?; \
	  grep -E '^stat::(number_of_executed_units|new_units_added)|Done [0-9]+ runs' $(BUILD)/fuzz_$$t.log; \
	  [ $$rc -eq 0 ] || { tail -n 40 $(BUILD)/fuzz_$$t.log; echo "fuzz_$$t FAILED (crash input saved by libFuzzer in the current directory)"; exit 1; }; \
	done
