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
TOOLS    := $(BUILD)/bench_gemm $(BUILD)/bench_unet $(BUILD)/bench_finetune $(BUILD)/bench_encode \
            $(BUILD)/bench_classify

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
$(BUILD)/bench_encode: tools/bench_encode.c prg.h | $(BUILD)
	$(CC) $(CFLAGS) -I. -o $@ $< $(LDLIBS)
$(BUILD)/bench_classify: tools/bench_classify.c prg.h | $(BUILD)
	$(CC) $(CFLAGS) -I. -o $@ $< $(LDLIBS)

# BENCH_ARGS passes options to both GEMM runs; the default compares with
# OpenBLAS's AVX-512 kernels (SkylakeX) where the CPU has AVX-512.
BENCH_ARGS ?= --blas-core best
bench: $(BUILD)/bench_gemm $(BUILD)/bench_gemm_native $(BUILD)/bench_unet $(BUILD)/bench_finetune \
       $(BUILD)/bench_encode $(BUILD)/bench_classify $(BUILD)/classify
	$(BUILD)/bench_gemm $(BENCH_ARGS)
	$(BUILD)/bench_gemm_native $(BENCH_ARGS)
	tools/bench_unet.sh $(BUILD)
	tools/bench_finetune.sh $(BUILD)
	tools/bench_encode.sh $(BUILD)
	tools/bench_memory.sh $(BUILD)
	tools/bench_classify.sh $(BUILD)

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
$(BUILD)/prginfo: tools/prginfo.c prg.h examples/ex_common.h | $(BUILD)
	$(CC) $(CFLAGS) -I. -o $@ $< $(LDLIBS)
# test_convert.sh: tools/pt2safetensors.py round trips (skipped without python3-torch).
TESTS += tests/test_convert.sh
TEST_DEPS += $(BUILD)/prginfo

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
# `make mpi` builds pretrain, finetune and evaluate with mpicc (-DEX_MPI,
# examples/ex_mpi.h) into $(BUILD)/mpi/, where mpicc exists; run them with
# `mpirun -np P build/mpi/pretrain ...`.  `make mpi-test` runs tests/test_mpi.sh
# (2 ranks against one process, resume, signals, faults, overlap).
MPICC    ?= mpicc
HAVE_MPI := $(shell command -v $(MPICC) > /dev/null 2>&1 && echo 1)
MPI_PROGS := $(BUILD)/mpi/pretrain $(BUILD)/mpi/finetune $(BUILD)/mpi/evaluate
.PHONY: mpi mpi-test
$(BUILD)/ckpt_diff: tools/ckpt_diff.c prg.h | $(BUILD)
	$(CC) $(CFLAGS) -I. -o $@ $< $(LDLIBS)
$(MPI_PROGS): $(BUILD)/mpi/%: examples/%.c examples/ex_common.h examples/ex_mpi.h prg.h
	@mkdir -p $(BUILD)/mpi
	$(MPICC) $(CFLAGS) -DEX_MPI -I. -o $@ $< $(LDLIBS)
ifeq ($(HAVE_MPI),1)
all: $(MPI_PROGS)
mpi: $(MPI_PROGS)
mpi-test: $(MPI_PROGS) $(BUILD)/pretrain $(BUILD)/finetune $(BUILD)/evaluate $(BUILD)/ckpt_diff
	@BUILD=$(BUILD) tests/run.sh tests/test_mpi.sh
else
mpi mpi-test:
	@echo "$@: $(MPICC) not found (apt-get install libopenmpi-dev openmpi-bin); skipped"
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

.PHONY: bench-images
bench: bench-images
bench-images: $(BUILD)/bench_images
	$(BUILD)/bench_images

# make fuzz FUZZ_SECONDS=20: one fuzzer binary (tools/fuzz_files.c), each of
# its 14 targets (jpeg png image pnm safetensors ckpt restore npz npy idx
# cifar detect lists flags) run that long from its seeds: CI's 20 s make 5 minutes.
# Real limits, inputs up to 1 MiB, and -rss_limit_mb=2048 (libFuzzer's
# malloc limit too): a hostile input that makes a reader take 2 GiB fails.
# FUZZ_SEED fixes libFuzzer's random seed, so that a run (CI's) is
# reproducible; FUZZ_SEED=0 draws a new one each time.  make fuzz-long runs
# every target for an hour (FUZZ_LONG_SECONDS), new seeds, keeping the
# corpora in $(BUILD)/fuzz_<target>.corpus between runs.
FUZZ_SECONDS ?= 30
FUZZ_SEED ?= 1
FUZZ_CC ?= clang
FUZZ_LONG_SECONDS ?= 3600
FUZZ_TARGETS = jpeg:images/*.jpg png:images/*.png image:fuzz/seed.p?m* image:fuzz/seed.*.gz image:images/png_gray1.png \
  pnm:fuzz/seed.p?m* safetensors:fuzz/*.safetensors ckpt:fuzz/seed_*.safetensors restore:fuzz/seed_train.safetensors \
  npz:io/*.npz npy:io/*.npy idx:fuzz/*.idxpair cifar:fuzz/seed_cifar100.bin \
  detect:fuzz/seed_cifar100.bin detect:io/imagenet8_stored.npz lists:fuzz/seed_*.list flags:fuzz/seed_*.argv
FUZZ_RUN = -max_len=1048576 -rss_limit_mb=2048 -print_final_stats=1
.PHONY: fuzz fuzz-long
$(BUILD)/fuzz_files: tools/fuzz_files.c prg.h | $(BUILD)
	$(FUZZ_CC) -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I. -o $@ tools/fuzz_files.c -lm -pthread
# seeds: <target>:<fixture glob> pairs; the detect target's first byte picks the file name
$(BUILD)/fuzz_seeds.stamp: $(BUILD)/fuzz_files
	@for t in $(FUZZ_TARGETS); do n=$${t%%:*}; mkdir -p $(BUILD)/fuzz_$$n.corpus; \
	  for f in tests/fixtures/$${t#*:}; do \
	    if [ $$n = detect ]; then for k in 2 3 5; do { printf "\\00$$k"; cat $$f; } > $(BUILD)/fuzz_$$n.corpus/$$k-$$(basename $$f); done; \
	    else cp $$f $(BUILD)/fuzz_$$n.corpus/; fi; done; done; touch $@
fuzz: $(BUILD)/fuzz_files
	@rm -rf $(BUILD)/fuzz_*.corpus $(BUILD)/fuzz_seeds.stamp; $(MAKE) --no-print-directory $(BUILD)/fuzz_seeds.stamp
	@for n in jpeg png image pnm safetensors ckpt restore npz npy idx cifar detect lists flags; do \
	  echo "fuzz $$n: $(FUZZ_SECONDS) s"; \
	  FUZZ_TARGET=$$n $(BUILD)/fuzz_files -seed=$(FUZZ_SEED) -max_total_time=$(FUZZ_SECONDS) $(FUZZ_RUN) \
	    $(BUILD)/fuzz_$$n.corpus > $(BUILD)/fuzz_$$n.log 2>&1; rc=$$?; \
	  grep -E 'Done [0-9]+ runs' $(BUILD)/fuzz_$$n.log; \
	  [ $$rc -eq 0 ] || { tail -n 40 $(BUILD)/fuzz_$$n.log; echo "fuzz $$n FAILED (crash input saved in the current directory)"; exit 1; }; \
	done
fuzz-long: $(BUILD)/fuzz_files $(BUILD)/fuzz_seeds.stamp
	@for n in jpeg png image pnm safetensors ckpt restore npz npy idx cifar detect lists flags; do \
	  echo "fuzz $$n: $(FUZZ_LONG_SECONDS) s"; \
	  FUZZ_TARGET=$$n $(BUILD)/fuzz_files -seed=0 -max_total_time=$(FUZZ_LONG_SECONDS) $(FUZZ_RUN) \
	    $(BUILD)/fuzz_$$n.corpus > $(BUILD)/fuzz_$$n.log 2>&1 || { tail -n 40 $(BUILD)/fuzz_$$n.log; echo "fuzz $$n FAILED"; exit 1; }; \
	  grep -E 'Done [0-9]+ runs' $(BUILD)/fuzz_$$n.log; \
	done

# --- pipeline ---
# The end-to-end examples (each also builds alone: cc -O2 -I. examples/x.c -lm -pthread).
PIPELINE := $(BUILD)/pretrain $(BUILD)/sample $(BUILD)/finetune $(BUILD)/evaluate $(BUILD)/classify \
            $(BUILD)/make_tiny_dataset $(BUILD)/probe
all: $(PIPELINE)
$(PIPELINE): $(BUILD)/%: examples/%.c examples/ex_common.h examples/ex_mpi.h prg.h | $(BUILD)
	$(CC) $(CFLAGS) -I. -o $@ $< $(LDLIBS)
# test_pipeline.sh runs the recipes' --smoke modes and a reduced demo.
TESTS += tests/test_pipeline.sh
# test_programs_hostile.sh: careless flags, unwritable outputs, runs that would
# destroy a checkpoint, empty data, signals (seconds, tiny data).
TESTS += tests/test_programs_hostile.sh
TEST_DEPS += $(PIPELINE)
# test_owndata.sh: an ImageFolder tree of its own -> prepare -> ... -> classify.
TESTS += tests/test_owndata.sh
TEST_DEPS += $(BUILD)/prepare $(BUILD)/prginfo
.PHONY: demo
demo: $(PIPELINE)
	BIN=$(BUILD) OUT=$(BUILD)/demo examples/demo.sh

# --- ablations ---
# examples/ablate runs pretrain and finetune over a grid (CSV, tables, charts);
# make ablate-demo: the demo study on the bundled MNIST (77 minutes measured on 2 shared cores).
all: $(BUILD)/ablate
$(BUILD)/ablate: examples/ablate.c examples/ex_common.h prg.h | $(BUILD)
	$(CC) $(CFLAGS) -I. -o $@ $< $(LDLIBS)
TESTS += tests/test_ablate.sh
TEST_DEPS += $(BUILD)/ablate $(BUILD)/pretrain $(BUILD)/finetune
# test_evaluate_robust.sh: evaluate --corruption all / --ood with --csv and --chart (seconds)
TESTS += tests/test_evaluate_robust.sh
TEST_DEPS += $(BUILD)/evaluate
.PHONY: ablate-demo
ablate-demo: $(BUILD)/ablate $(BUILD)/pretrain $(BUILD)/finetune
	$(BUILD)/ablate --preset demo --out $(BUILD)/ablate-demo
