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
TOOLS    := $(BUILD)/bench_gemm $(BUILD)/bench_unet $(BUILD)/bench_finetune

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


# TEST_DEPS: programs the test scripts run (the blocks below add theirs).
TEST_DEPS :=
test: | $(BUILD)
	@$(MAKE) --no-print-directory -j2 $(filter-out %.sh,$(TESTS)) $(EXAMPLES) $(TEST_DEPS)
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
$(BUILD)/bench_finetune: tools/bench_finetune.c prg.h | $(BUILD)
	$(CC) $(CFLAGS) -I. -o $@ $< $(LDLIBS)

# BENCH_ARGS passes options to both GEMM runs; the default compares with
# OpenBLAS's AVX-512 kernels (SkylakeX) where the CPU has AVX-512.
BENCH_ARGS ?= --blas-core best
bench: $(BUILD)/bench_gemm $(BUILD)/bench_gemm_native $(BUILD)/bench_unet $(BUILD)/bench_finetune
	$(BUILD)/bench_gemm $(BENCH_ARGS)
	$(BUILD)/bench_gemm_native $(BENCH_ARGS)
	tools/bench_unet.sh $(BUILD)
	tools/bench_finetune.sh $(BUILD)

clean:
	rm -rf build build-asan build-aarch64

# --- optim / flow ---
$(BUILD)/bench_optim_flow: tools/bench_optim_flow.c prg.h | $(BUILD)
	$(CC) $(OPT) -std=c99 -Wall -Wextra -I. -o $@ $< $(LDLIBS)
all: $(BUILD)/bench_optim_flow
.PHONY: bench-optim-flow
bench-optim-flow: $(BUILD)/bench_optim_flow
	$(BUILD)/bench_optim_flow
bench: bench-optim-flow

# --- data ---
all: $(BUILD)/bench_data
$(BUILD)/bench_data: tools/bench_data.c prg.h | $(BUILD)
	$(CC) $(CFLAGS) -I. -o $@ $< $(LDLIBS)

# --- layers ---
$(BUILD)/bench_layers: tools/bench_layers.c prg.h | $(BUILD)
	$(CC) $(OPT) -std=c99 -D_POSIX_C_SOURCE=199309L -Wall -Wextra -I. -o $@ $< $(LDLIBS)
all: $(BUILD)/bench_layers
bench: $(BUILD)/bench_layers
.PHONY: bench-layers
bench-layers: $(BUILD)/bench_layers
	$(BUILD)/bench_layers 1
	$(BUILD)/bench_layers

# --- checkpoints ---
all: $(BUILD)/prginfo
$(BUILD)/prginfo: tools/prginfo.c prg.h | $(BUILD)
	$(CC) $(CFLAGS) -I. -o $@ $< $(LDLIBS)

# --- io ---
# Big-endian check (the file formats are little-endian on disk whatever the
# host): cross-compile the tests for s390x and run them under qemu-user.
# Needs gcc-s390x-linux-gnu, libc6-dev-s390x-cross and qemu-user.  Only the
# io test by default (S390X_TESTS="tests/test_*.c" for all; gemm is slow there).
S390X_CC ?= s390x-linux-gnu-gcc
S390X_TESTS ?= tests/test_io.c
.PHONY: s390x-test
s390x-test:
	@mkdir -p $(BUILD)/s390x
	@for t in $(S390X_TESTS); do $(S390X_CC) -O2 -std=c99 $(WARN) -static -o $(BUILD)/s390x/$$(basename $$t .c) $$t -lm -pthread || exit 1; done
	@PRG_TEST_WRAPPER=qemu-s390x tests/run.sh $(patsubst tests/%.c,$(BUILD)/s390x/%,$(wildcard $(S390X_TESTS)))

# --- mpi ---
# examples/train_mpi (data-parallel training over MPI) is built only where
# mpicc exists; `make mpi-test` builds it and runs tests/test_mpi.sh.
MPICC    ?= mpicc
HAVE_MPI := $(shell command -v $(MPICC) > /dev/null 2>&1 && echo 1)
.PHONY: mpi-test
$(BUILD)/train_mpi: examples/train_mpi.c examples/ex_common.h prg.h | $(BUILD)
	$(MPICC) $(CFLAGS) -I. -o $@ $< $(LDLIBS)
ifeq ($(HAVE_MPI),1)
all: $(BUILD)/train_mpi
mpi-test: $(BUILD)/train_mpi
	@BUILD=$(BUILD) tests/run.sh tests/test_mpi.sh
else
mpi-test:
	@echo "mpi-test: $(MPICC) not found (apt-get install libopenmpi-dev openmpi-bin); skipped"
endif

# --- images ---
# examples/prepare (ImageNet / Tiny-ImageNet folders -> .npz), the image
# benchmark, and libFuzzer targets for the JPEG and PNG decoders.
all: $(BUILD)/prepare $(BUILD)/bench_images
TEST_DEPS += $(BUILD)/prepare

$(BUILD)/prepare: examples/prepare.c examples/ex_common.h prg.h | $(BUILD)
	$(CC) $(CFLAGS) -I. -o $@ $< $(LDLIBS)

$(BUILD)/bench_images: tools/bench_images.c prg.h | $(BUILD)
	$(CC) $(OPT) -std=c99 -Wall -Wextra -I. -o $@ $< $(LDLIBS)

.PHONY: bench-images fuzz
bench: bench-images
bench-images: $(BUILD)/bench_images
	$(BUILD)/bench_images

# make fuzz FUZZ_SECONDS=30: each target (JPEG, PNG, safetensors, npz, IDX)
# runs that long from the fixtures.  FUZZ_SEED fixes libFuzzer's random
# seed, so that a run (CI's) is reproducible; FUZZ_SEED=0 draws a new one
# each time, for longer exploratory runs.
FUZZ_SECONDS ?= 30
FUZZ_SEED ?= 1
FUZZ_CC ?= clang
fuzz: | $(BUILD)
	@for t in jpeg:images/*.jpg png:images/*.png safetensors:fuzz/*.safetensors npz:io/*.npz idx:fuzz/*.idxpair; do \
	  n=$${t%%:*}; seeds=$${t#*:}; N=$$(echo $$n | tr a-z A-Z); \
	  $(FUZZ_CC) -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -DFUZZ_$$N -I. \
	    -o $(BUILD)/fuzz_$$n tools/fuzz_files.c -lm -pthread || exit 1; \
	  rm -rf $(BUILD)/fuzz_$$n.corpus; mkdir -p $(BUILD)/fuzz_$$n.corpus; cp tests/fixtures/$$seeds $(BUILD)/fuzz_$$n.corpus/; \
	  echo "fuzz_$$n: $(FUZZ_SECONDS) s"; \
	  $(BUILD)/fuzz_$$n -seed=$(FUZZ_SEED) -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 \
	    $(BUILD)/fuzz_$$n.corpus > $(BUILD)/fuzz_$$n.log 2>&1; rc=$$?; \
	  grep -E 'Done [0-9]+ runs' $(BUILD)/fuzz_$$n.log; \
	  [ $$rc -eq 0 ] || { tail -n 40 $(BUILD)/fuzz_$$n.log; echo "fuzz_$$n FAILED (crash input saved in the current directory)"; exit 1; }; \
	done

# --- pipeline ---
# The end-to-end examples (each also builds alone: cc -O2 -I. examples/x.c -lm -pthread).
PIPELINE := $(BUILD)/pretrain $(BUILD)/sample $(BUILD)/finetune $(BUILD)/evaluate $(BUILD)/classify \
            $(BUILD)/make_tiny_dataset
all: $(PIPELINE)
$(PIPELINE): $(BUILD)/%: examples/%.c examples/ex_common.h prg.h | $(BUILD)
	$(CC) $(CFLAGS) -I. -o $@ $< $(LDLIBS)
# test_pipeline.sh runs the recipes' --smoke modes and a reduced demo.
TESTS += tests/test_pipeline.sh
# test_programs_hostile.sh: careless flags, unwritable outputs, runs that would
# destroy a checkpoint, empty data, signals (seconds, tiny data).
TESTS += tests/test_programs_hostile.sh
TEST_DEPS += $(PIPELINE)
.PHONY: demo
demo: $(PIPELINE)
	BIN=$(BUILD) OUT=$(BUILD)/demo examples/demo.sh
