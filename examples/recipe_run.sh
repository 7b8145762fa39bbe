# The stages shared by cifar10.sh and imagenet64.sh (sourced; not run alone):
# pretrain (resumed when its checkpoint exists, except in --smoke mode),
# samples, fine-tuning, evaluation of the best checkpoint.  Uses BIN OUT
# THREADS LOSS TRAIN TEST NET PRE_BATCH PRE_LEN BATCH LR FT_LEN EVAL T_SPAN
# T_CUTOFF and SMOKE; with MPIRUN (the launcher, e.g. "mpirun -np 16
# --hostfile hosts") pretrain, finetune and evaluate are make mpi's
# $BIN/mpi/ programs under it.
mkdir -p "$OUT"
RUN=""; PBIN=$BIN
if [ -n "$MPIRUN" ]; then RUN=$MPIRUN; PBIN=$BIN/mpi; fi
echo "== pretrain ($LOSS)"
RESUME=""; [ -f "$OUT/pretrain.safetensors" ] && [ -z "$SMOKE" ] && RESUME=--resume
$RUN "$PBIN/pretrain" --data "$TRAIN" $NET --loss "$LOSS" --batch "$PRE_BATCH" --lr "${PRE_LR:-1e-4}" $PRE_LEN --threads "$THREADS" \
    --ckpt-every 1000 $RESUME --out "$OUT/pretrain.safetensors"
"$BIN/sample" --model "$OUT/pretrain.safetensors" --n 16 --steps 20 --threads "$THREADS" --out "$OUT/samples.png"
echo "== finetune (t_span $T_SPAN, t_cutoff $T_CUTOFF)"
$RUN "$PBIN/finetune" --init "$OUT/pretrain.safetensors" --data "$TRAIN" --test "$TEST" --t-span "$T_SPAN" \
    --t-cutoff "$T_CUTOFF" --batch "$BATCH" $LR $FT_LEN $EVAL --threads "$THREADS" --out "$OUT/prg"
echo "== evaluate"
$RUN "$PBIN/evaluate" --model "$OUT/prg-best.safetensors" --data "$TEST" --threads "$THREADS" --csv "$OUT/confusion.csv"
