#!/usr/bin/env bash
# PRG on downsampled ImageNet 64x64, the paper's recipe (docs/METHOD.md C.2, C.3, D):
#   pretrain: imagenet64 U-Net (121M params), ICFM, Adam 1e-4, batch 64,
#             the reference augmentation (RandomResizedCrop 64, flip,
#             RandAugment m9, ImageNet normalisation, random erasing 0.25)
#   finetune: t_span 32, t_cutoff 20 (11 Euler steps), label smoothing 0.1,
#             AdamW wd 0.05, lr 1.25e-4 * global_batch / 512 (global batch =
#             128 * GPUS), 5 warm-up epochs + cosine, 200 epochs, evaluation
#             every 10 epochs
#   evaluate: top-1 / top-5 and the confusion matrix of the best checkpoint
#
#   examples/imagenet64.sh [DATA_DIR]  DATA_DIR holds the official Imagenet64
#                                      npz files: train_data_batch_1..10.npz,
#                                      val_data.npz
#   examples/imagenet64.sh --smoke     the same script on a tiny generated
#                                      dataset in the same layout, tiny sizes
# Environment: BIN (build), OUT (build/imagenet64), THREADS (0 = all),
#   PRE_EPOCHS (2000: the reference's loop bound), GPUS (8), LOSS.
# Many machines: MPIRUN="mpirun -np P --hostfile hosts" (after make mpi) runs
#   pretrain, finetune and evaluate under it, P ranks (NP=P when the launcher
#   does not say -np / -n).  Each rank takes the reference's per-GPU batch:
#   global batches 64 * P (pretraining) and 128 * P (fine-tuning, whose lr
#   follows the global batch / 512 rule, GPUS = P); pretraining's Adam lr
#   1e-4 * sqrt(P) (PRE_LR overrides it).  --smoke keeps its global batches.
set -e
cd "$(dirname "$0")/.."
BIN=${BIN:-build}; THREADS=${THREADS:-0}; LOSS=${LOSS:-icfm}; GPUS=${GPUS:-8}
SMOKE=""; NP=${NP:-$(echo " $MPIRUN " | sed -n 's/.* -\(np\|n\) \([0-9][0-9]*\) .*/\2/p')}; NP=${NP:-1}
if [ "$1" = --smoke ]; then
    SMOKE=1
    OUT=${OUT:-build/imagenet64-smoke}; DIR=$OUT/data
    mkdir -p "$DIR"
    "$BIN/make_tiny_dataset" imagenet64 "$DIR" 160 100 64
    # 64x64 sources fitted to a 32x32 model (random resized crops; centre crop for evaluation)
    NET="--model-channels 16 --groups 8 --res-blocks 1 --channel-mult 1,2 --attention-ds none --heads 1 --image-size 32"
    PRE_LEN="--steps 4"; PRE_BATCH=16; BATCH=16; FT_LEN="--steps 16 --warmup-steps 2"
    T_SPAN=4; T_CUTOFF=1; LR="--lr 2e-3"; EVAL=""
else
    DIR=${1:-imagenet64}; OUT=${OUT:-build/imagenet64}
    [ -f "$DIR/train_data_batch_1.npz" ] || { echo "imagenet64.sh: no $DIR/train_data_batch_1.npz (Imagenet64x64 from https://image-net.org/download-images, npz version)"; exit 1; }
    NET="--preset imagenet64"
    PRE_LEN="--epochs ${PRE_EPOCHS:-2000}"; PRE_BATCH=64; BATCH=128; FT_LEN="--epochs 200 --warmup-epochs 5"
    if [ -n "$MPIRUN" ]; then GPUS=$NP; PRE_BATCH=$((64 * NP)); BATCH=$((128 * NP)); PRE_LR=${PRE_LR:-$(awk -v p=$NP 'BEGIN { printf "%.4g", 1e-4 * sqrt(p) }')}; fi
    T_SPAN=32; T_CUTOFF=20; LR="--global-batch $((128 * GPUS))"; EVAL="--eval-every 10"
fi
TRAIN=$(ls "$DIR"/train_data_batch_*.npz | paste -sd, -); TEST=$DIR/val_data.npz
. examples/recipe_run.sh
