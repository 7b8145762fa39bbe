#!/usr/bin/env bash
# Data-parallel training over MPI gives the weights of one process:
# `mpirun -np 2 train_mpi --batch 4` (each rank takes its contiguous half of
# every global batch, gradients summed with MPI_Allreduce) against one process
# with --batch 8, for ICFM pretraining and for classifier fine-tuning, 3 steps
# each, on the bundled MNIST subset (16x16, a 2-level U-Net of width 32).
#
# Tolerance: max |w_2ranks - w_1proc| <= 0.2 * lr * steps.  The two runs see
# the same samples and the same noise and differ only in the order of the
# float sums over the batch (inside backward vs. across ranks), so their
# gradients agree to float rounding.  Adam divides each gradient coordinate
# by its own running magnitude, so a coordinate whose gradient is near
# Adam's eps (1e-8) turns a rounding difference into an update difference of
# up to lr * |dg| / eps; measured: ~1e-6 (pretrain) and ~1e-5 (fine-tune) at
# lr 1e-4.  A wrong shard, noise stream or loss scale moves coordinates by
# about lr every step (the negative control below, a 1-process run on half
# the batch, differs by ~6e-4 = 2 * lr * steps), far above the bound.
# Needs mpicc and mpirun (built by `make mpi-test` only where they exist).
cd "$(dirname "$0")/.." || exit 1
B=${BUILD:-build}
exe=$B/train_mpi
out=$B/test_mpi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
passed=0; failed=0
if ! command -v mpirun > /dev/null || [ ! -x "$exe" ]; then
    echo "test_mpi: mpirun or $exe missing (install openmpi-bin libopenmpi-dev; make mpi-test builds it)"
    echo "test_mpi: 0 passed, 1 failed"; exit 1
fi
rm -rf "$out"; mkdir -p "$out"
lr=1e-4; steps=3
tol=$(awk -v lr=$lr -v s=$steps 'BEGIN { printf "%.3e", 0.2 * lr * s }')
NET="--image-size 16 --model-channels 32 --res-blocks 1 --channel-mult 1,2 --attention-ds 0 --lr $lr --steps $steps --seed 7"
MPIRUN="mpirun --oversubscribe -np 2"

ok() { passed=$((passed + 1)); echo "ok   $*"; }
bad() { failed=$((failed + 1)); echo "FAIL test_mpi: $*"; }
# run NAME CMD...: runs a training, keeps its log; fails the check if it fails
run() {
    local name=$1; shift
    local t0=$(date +%s.%N)
    if nice -n 10 "$@" > "$out/$name.log" 2>&1; then
        ok "$name ($(awk -v a=$t0 -v b=$(date +%s.%N) 'BEGIN{printf "%.1f", b-a}') s)"
    else
        bad "$name: $*"; sed 's/^/FAIL    /' "$out/$name.log" | tail -n 8
    fi
}
maxdiff() { "$exe" --compare "$1" "$2" 2> /dev/null | sed -n 's/.*max |diff| \([^ ]*\) .*/\1/p'; }
# same A B WHAT: A and B hold the same weights to tol
same() {
    local d; d=$(maxdiff "$1" "$2")
    if [ -n "$d" ] && awk -v d="$d" -v t="$tol" 'BEGIN { exit !(d <= t) }'; then ok "$3: max |dw| $d <= $tol"
    else bad "$3: max |dw| '${d:-none}' > $tol"; fi
}
# final global loss printed by both logs agrees
same_loss() {
    local a b; a=$(grep '^step '"$steps"' ' "$out/$1.log" | awk '{print $6}'); b=$(grep '^step '"$steps"' ' "$out/$2.log" | awk '{print $6}')
    if [ -n "$a" ] && awk -v a="$a" -v b="$b" 'BEGIN { d = a - b; exit !(d < 1e-5 && d > -1e-5) }'; then ok "$3: loss $a vs $b"
    else bad "$3: loss '$a' vs '$b'"; fi
}

# the norm of the summed gradient at step 1 (same weights on both sides): float rounding only
same_gnorm() {
    local a b; a=$(grep '^step 1 ' "$out/$1.log" | awk '{print $8}'); b=$(grep '^step 1 ' "$out/$2.log" | awk '{print $8}')
    if [ -n "$a" ] && awk -v a="$a" -v b="$b" 'BEGIN { d = (a - b) / a; exit !(d < 1e-5 && d > -1e-5) }'; then ok "$3: step-1 gradient norm $a vs $b"
    else bad "$3: step-1 gradient norm '$a' vs '$b' (relative tolerance 1e-5)"; fi
}

# pretraining (ICFM): one process (MPI singleton) with G = 8, 2 ranks x 4, and 2 ranks on an uneven 7 = 4 + 3
run pre_1x8 "$exe" $NET --batch 8 --checkpoint "$out/pre_1x8.st"
run pre_2x4 $MPIRUN "$exe" $NET --batch 4 --check-every 1 --checkpoint "$out/pre_2x4.st"
grep -q "check: step $steps, weights identical on all 2 ranks" "$out/pre_2x4.log" && ok "pretrain: ranks hold identical weights (crc)" || bad "pretrain: no identical-weights check in the log"
same "$out/pre_1x8.st" "$out/pre_2x4.st" "pretrain 2 ranks x 4 == 1 process x 8"
same_loss pre_1x8 pre_2x4 "pretrain global loss"
same_gnorm pre_1x8 pre_2x4 "pretrain"
run pre_1x7 "$exe" $NET --global-batch 7 --checkpoint "$out/pre_1x7.st"
run pre_2x7 $MPIRUN "$exe" $NET --global-batch 7 --checkpoint "$out/pre_2x7.st"
same "$out/pre_1x7.st" "$out/pre_2x7.st" "pretrain uneven shards 4+3 == 1 process x 7"
# negative control: rank 0's shard alone is not the global batch; the check must see that
run pre_1x4 "$exe" $NET --batch 4 --checkpoint "$out/pre_1x4.st"
d=$(maxdiff "$out/pre_1x4.st" "$out/pre_2x4.st")
if [ -n "$d" ] && awk -v d="$d" -v t="$tol" 'BEGIN { exit !(d > 4 * t) }'; then ok "negative control: half the batch differs by $d > 4 x $tol"
else bad "negative control: half the batch differs by only '${d:-none}'"; fi

# resuming from a training checkpoint continues bit for bit (batches and noise follow the step)
run pre_1x8_s2 "$exe" ${NET/--steps $steps/--steps 2} --batch 8 --checkpoint "$out/pre_1x8_s2.st"
run pre_1x8_resumed "$exe" $NET --batch 8 --resume "$out/pre_1x8_s2.st" --checkpoint "$out/pre_1x8_resumed.st"
d=$(maxdiff "$out/pre_1x8.st" "$out/pre_1x8_resumed.st")
[ "$d" = "0.000e+00" ] && ok "resume after 2 of 3 steps: max |dw| $d" || bad "resume after 2 of 3 steps: max |dw| '${d:-none}', want 0"

# fine-tuning (classifier, exact ODE gradient) from the pretrained U-Net
FT="--mode finetune --init $out/pre_1x8.st --t-span 3"
run ft_1x8 "$exe" $NET $FT --batch 8 --checkpoint "$out/ft_1x8.st"
run ft_2x4 $MPIRUN "$exe" $NET $FT --batch 4 --check-every 1 --checkpoint "$out/ft_2x4.st"
grep -q "check: step $steps, weights identical on all 2 ranks" "$out/ft_2x4.log" && ok "finetune: ranks hold identical weights (crc)" || bad "finetune: no identical-weights check in the log"
same "$out/ft_1x8.st" "$out/ft_2x4.st" "finetune 2 ranks x 4 == 1 process x 8 (U-Net + head)"
same_loss ft_1x8 ft_2x4 "finetune global loss"
same_gnorm ft_1x8 ft_2x4 "finetune"

echo "test_mpi: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
