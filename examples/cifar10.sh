#!/usr/bin/env bash
# PRG on CIFAR-10, the paper's recipe (docs/METHOD.md C.2, C.3, D):
#   pretrain: cifar32 U-Net (52.5M params), ICFM, Adam 1e-4, batch 128,
#             the reference augmentation (RandomCrop 4, flip, RandAugment m9,
#             ImageNet normalisation, random erasing 0.25)
#   finetune: t_span 32, no cutoff, label smoothing 0.1, AdamW wd 0.05,
#             lr 1.25e-4 * global_batch / 512, 5 warm-up epochs + cosine,
#             200 epochs, evaluation every 5 epochs
#   evaluate: top-1 / top-5 and the confusion matrix of the best checkpoint
#
#   examples/cifar10.sh [DATA_DIR]   DATA_DIR = cifar-10-batches-bin (the
#                                    official binary version)
#   examples/cifar10.sh --smoke      the same script on a tiny generated
#                                    dataset in the same format, tiny sizes
# Environment: BIN (build), OUT (build/cifar10), THREADS (0 = all),
#   PRE_EPOCHS (2000: the reference's loop bound; how long the paper trained
#   is unknown), GPUS (1: global batch = 128 * GPUS for the lr scaling),
#   LOSS (icfm | ot | gvp).
# Many machines: MPIRUN="mpirun -np P --hostfile hosts" (after make mpi) runs
#   pretrain, finetune and evaluate under it, P ranks (NP=P when the launcher
#   does not say -np / -n).  Each rank takes the reference's per-GPU batch:
#   global batches 128 * P (pretraining) and 128 * P (fine-tuning, whose lr
#   follows the global batch / 512 rule, GPUS = P); pretraining's Adam lr
#   1e-4 * sqrt(P) (PRE_LR overrides it).  --smoke keeps its global batches.
set -e
cd "$(dirname "$0")/.."
BIN=${BIN:-build}; THREADS=${THREADS:-0}; LOSS=${LOSS:-icfm}; GPUS=${GPUS:-1}
SMOKE=""; NP=${NP:-$(echo " $MPIRUN " | sed -n 's/.* -\(np\|n\) \([0-9][0-9]*\) .*/\2/p')}; NP=${NP:-1}
if [ "$1" = --smoke ]; then
    SMOKE=1
    OUT=${OUT:-build/cifar10-smoke}; DIR=$OUT/data
    mkdir -p "$DIR"
    "$BIN/make_tiny_dataset" cifar10 "$DIR" 320 100
    NET="--model-channels 16 --groups 8 --res-blocks 1 --channel-mult 1,2 --attention-ds none --heads 1"
    PRE_LEN="--steps 6"; PRE_BATCH=16; BATCH=16; FT_LEN="--steps 24 --warmup-steps 2"; T_SPAN=3; T_CUTOFF=0; LR="--lr 2e-3"; EVAL=""
else
    DIR=${1:-cifar-10-batches-bin}; OUT=${OUT:-build/cifar10}
    [ -f "$DIR/data_batch_1.bin" ] || { echo "cifar10.sh: no $DIR/data_batch_1.bin (get cifar-10-binary.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html)"; exit 1; }
    NET="--preset cifar32"
    PRE_LEN="--epochs ${PRE_EPOCHS:-2000}"; PRE_BATCH=128; BATCH=128; FT_LEN="--epochs 200 --warmup-epochs 5"; T_SPAN=32; T_CUTOFF=0
    if [ -n "$MPIRUN" ]; then GPUS=$NP; PRE_BATCH=$((128 * NP)); BATCH=$((128 * NP)); PRE_LR=${PRE_LR:-$(awk -v p=$NP 'BEGIN { printf "%.4g", 1e-4 * sqrt(p) }')}; fi
    LR="--global-batch $((128 * GPUS))"; EVAL="--eval-every 5"
fi
TRAIN=$(ls "$DIR"/data_batch_*.bin | paste -sd, -); TEST=$DIR/test_batch.bin
. examples/recipe_run.sh
