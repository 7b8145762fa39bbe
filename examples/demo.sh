#!/usr/bin/env bash
# The whole PRG pipeline on the bundled MNIST subset (data/mnist: 10k train,
# 2k test, 28x28 padded to 32x32): pretrain a small flow-matching U-Net,
# draw a PNG grid of samples, fine-tune it into a classifier (PRG), train the
# same network from scratch with the same fine-tuning budget, evaluate both,
# classify one test digit written as $OUT/digit.png, and print the comparison.  `make demo` runs it; sized for < 10 minutes on
# 2 cores.  Every size can be changed from the environment:
#   BIN (build)  OUT (build/demo)  THREADS (0 = all)
#   PRE_STEPS PRE_BATCH PRE_LR   FT_STEPS FT_BATCH FT_LR  T_SPAN T_CUTOFF
#   EVAL_LIMIT (0 = all 2k)  FROZEN=1 also runs the frozen-U-Net baseline
set -e
cd "$(dirname "$0")/.."
BIN=${BIN:-build}; OUT=${OUT:-build/demo}; THREADS=${THREADS:-0}
PRE_STEPS=${PRE_STEPS:-250}; PRE_BATCH=${PRE_BATCH:-64}; PRE_LR=${PRE_LR:-1e-3}
FT_STEPS=${FT_STEPS:-400}; FT_BATCH=${FT_BATCH:-32}; FT_LR=${FT_LR:-2e-3}
T_SPAN=${T_SPAN:-2}; T_CUTOFF=${T_CUTOFF:-0}; EVAL_LIMIT=${EVAL_LIMIT:-0}
TRAIN=data/mnist/train-images-idx3-ubyte.gz; TEST=data/mnist/t10k-images-idx3-ubyte.gz
mkdir -p "$OUT"
# A small U-Net of the reference design: 16 channels (GroupNorm 8 groups),
# 1 ResBlock per level, widths 16/32/32 at 32/16/8, attention at 8x8.
NET="--model-channels 16 --groups 8 --res-blocks 1 --channel-mult 1,2,2 --attention-ds 4 --heads 1"
FT="--data $TRAIN --test $TEST --t-span $T_SPAN --t-cutoff $T_CUTOFF --batch $FT_BATCH --lr $FT_LR
    --steps $FT_STEPS --no-augment --eval-limit $EVAL_LIMIT --threads $THREADS --log-every 20"
stage() { echo; echo "== $1"; S=$(date +%s); }
took() { echo "   ($1: $(( $(date +%s) - S ))s)"; }
T0=$(date +%s)

stage "1. flow-matching pretraining ($PRE_STEPS steps x $PRE_BATCH images)"
"$BIN/pretrain" --data "$TRAIN" $NET --batch "$PRE_BATCH" --lr "$PRE_LR" --steps "$PRE_STEPS" \
    --no-augment --threads "$THREADS" --log-every 25 --out "$OUT/pretrain.safetensors"
took pretrain

stage "2. samples (Euler, 20 steps) -> $OUT/samples.png"
"$BIN/sample" --model "$OUT/pretrain.safetensors" --n 36 --steps 20 --threads "$THREADS" --out "$OUT/samples.png"
took sample

stage "3. PRG fine-tuning of the pretrained U-Net ($FT_STEPS steps x $FT_BATCH images)"
"$BIN/finetune" --init "$OUT/pretrain.safetensors" $FT --out "$OUT/prg" | tee "$OUT/prg.log"
took finetune

stage "4. the same network and budget from scratch"
"$BIN/finetune" --init "$OUT/pretrain.safetensors" --from-scratch $FT --out "$OUT/scratch" | tee "$OUT/scratch.log"
took from-scratch

if [ "${FROZEN:-0}" = 1 ]; then
    stage "4b. frozen pretrained U-Net, only the head trains"
    "$BIN/finetune" --init "$OUT/pretrain.safetensors" --frozen $FT --out "$OUT/frozen" | tee "$OUT/frozen.log"
    took frozen
fi

stage "5. evaluation of the last PRG checkpoint on the test set"
LIM=""; [ "$EVAL_LIMIT" != 0 ] && LIM="--limit $EVAL_LIMIT"
"$BIN/evaluate" --model "$OUT/prg-last.safetensors" --data "$TEST" $LIM --threads "$THREADS" --csv "$OUT/confusion.csv"
took evaluate

stage "6. one test digit as a PNG, classified: $OUT/digit.png"
"$BIN/make_tiny_dataset" image "$TEST" 0 "$OUT/digit.png"
"$BIN/classify" --model "$OUT/prg-best.safetensors" --top 3 "$OUT/digit.png"

acc() { grep '^eval ' "$1" | tail -n 1 | sed -E 's/.*top-1 ([0-9.]+)%.*/\1/'; }
echo
echo "== result (top-1 on the bundled test images after $FT_STEPS fine-tuning steps of $FT_BATCH)"
printf '   PRG (pretrained U-Net)   %s%%\n' "$(acc "$OUT/prg.log")"
printf '   same network, scratch    %s%%\n' "$(acc "$OUT/scratch.log")"
[ -f "$OUT/frozen.log" ] && [ "${FROZEN:-0}" = 1 ] && printf '   frozen U-Net, head only  %s%%\n' "$(acc "$OUT/frozen.log")"
echo "   samples: $OUT/samples.png   confusion matrix: $OUT/confusion.csv   total $(( $(date +%s) - T0 ))s"
echo "   classify images or folders: $BIN/classify --model $OUT/prg-best.safetensors $OUT/digit.png"
