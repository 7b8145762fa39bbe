#!/usr/bin/env bash
# The MPI builds of the programs (make mpi: build/mpi/pretrain, finetune,
# evaluate) under `mpirun -np 2` give the weights of one process with the
# same global batch, on the bundled MNIST subset (16x16, a 2-level U-Net of
# width 32, 3 steps): pretrain with ICFM and OT-CFM pairs and the reference
# augmentation, finetune exact and --frozen with evaluation.  Also: P = 1
# under mpirun is the plain build bit for bit; --resume under MPI continues
# bit for bit; the overlapped reduction gives the bits of the one after the
# backward; SIGINT to one rank saves once and every rank exits non-zero; a
# missing data file on one rank ends the job with its message in seconds.
#
# Tolerance: max |w_2ranks - w_1proc| <= 0.2 * lr * steps.  The two runs see
# the same samples, augmentation and noise and differ only in the order of
# the float sums over the batch (inside backward vs. across ranks), so their
# gradients agree to float rounding.  Adam divides each gradient coordinate
# by its own running magnitude, so a coordinate whose gradient is near
# Adam's eps (1e-8) turns a rounding difference into an update difference of
# up to lr * |dg| / eps; measured: ~2e-6 (pretrain) and ~3.5e-5 (fine-tune,
# in a zero-initialised convolution's bias) at lr 1e-4.  A wrong
# shard, noise stream or loss scale moves coordinates by about lr every step
# (the negative control below, one process on half the batch, differs by
# ~2 * lr * steps), far above the bound.
cd "$(dirname "$0")/.." || exit 1
B=${BUILD:-build}
out=$B/test_mpi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
passed=0; failed=0
for x in mpi/pretrain mpi/finetune mpi/evaluate pretrain finetune evaluate ckpt_diff; do
    if ! command -v mpirun > /dev/null || [ ! -x "$B/$x" ]; then
        echo "test_mpi: mpirun or $B/$x missing (install openmpi-bin libopenmpi-dev; make mpi-test builds them)"
        echo "test_mpi: 0 passed, 1 failed"; exit 1
    fi
done
rm -rf "$out"; mkdir -p "$out"
lr=1e-4; steps=3
tol=$(awk -v lr=$lr -v s=$steps 'BEGIN { printf "%.3e", 0.2 * lr * s }')
M=data/mnist/train-images-idx3-ubyte.gz; MT=data/mnist/t10k-images-idx3-ubyte.gz
NET="--image-size 16 --model-channels 32 --groups 32 --res-blocks 1 --channel-mult 1,2 --attention-ds none --heads 1"
PRE="--data $M $NET --limit 64 --lr $lr --steps $steps --seed 7 --threads 1 --log-every 1 --no-flip"
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
maxdiff() { "$B/ckpt_diff" "$1" "$2" 2> /dev/null | sed -n 's/.*max |diff| \([^ ]*\) .*/\1/p'; }
# same A B WHAT: A and B hold the same weights to tol
same() {
    local d; d=$(maxdiff "$1" "$2")
    if [ -n "$d" ] && awk -v d="$d" -v t="$tol" 'BEGIN { exit !(d <= t) }'; then ok "$3: max |dw| $d <= $tol"
    else bad "$3: max |dw| '${d:-none}' > $tol"; fi
}
# bits A B WHAT: the same file, byte for byte
bits() { if cmp -s "$1" "$2"; then ok "$3: the same bits"; else bad "$3: $1 and $2 differ (max |dw| $(maxdiff "$1" "$2"))"; fi; }
# the loss of the last step printed by both logs (the global mean, %.4f) agrees
same_loss() {
    local a b; a=$(grep "^step $steps/" "$out/$1.log" | awk '{print $6}'); b=$(grep "^step $steps/" "$out/$2.log" | awk '{print $6}')
    if [ -n "$a" ] && awk -v a="$a" -v b="$b" 'BEGIN { d = a - b; exit !(d <= 2e-4 && d >= -2e-4) }'; then ok "$3: loss $a vs $b"
    else bad "$3: loss '$a' vs '$b'"; fi
}

# pretraining, ICFM and OT-CFM, with the augmentation: one process with batch 8 against 2 ranks x 4
for L in icfm ot; do
    run pre_${L}_1 "$B/pretrain" $PRE --loss $L --batch 8 --out "$out/pre_${L}_1.st"
    run pre_${L}_2 $MPIRUN "$B/mpi/pretrain" $PRE --loss $L --batch 8 --bucket-mb 0.5 --out "$out/pre_${L}_2.st"
    same "$out/pre_${L}_1.st" "$out/pre_${L}_2.st" "pretrain --loss $L: 2 ranks x 4 == 1 process x 8"
    same_loss pre_${L}_1 pre_${L}_2 "pretrain --loss $L: global loss"
done
grep -q "^mpi: 2 ranks x 1 threads, $steps steps, [0-9]* gradient buckets.*overlap on" "$out/pre_icfm_2.log" &&
    ok "pretrain: the reduction summary" || bad "pretrain: no 'mpi: 2 ranks' summary in the log"
# uneven shards 4 + 3
run pre_7_1 "$B/pretrain" $PRE --batch 7 --out "$out/pre_7_1.st"
run pre_7_2 $MPIRUN "$B/mpi/pretrain" $PRE --batch 7 --out "$out/pre_7_2.st"
same "$out/pre_7_1.st" "$out/pre_7_2.st" "pretrain uneven shards 4+3 == 1 process x 7"
# negative control: rank 0's shard alone is not the global batch; the check must see that
run pre_half "$B/pretrain" $PRE --batch 4 --out "$out/pre_half.st"
d=$(maxdiff "$out/pre_half.st" "$out/pre_icfm_2.st")
if [ -n "$d" ] && awk -v d="$d" -v t="$tol" 'BEGIN { exit !(d > 4 * t) }'; then ok "negative control: half the batch differs by $d > 4 x $tol"
else bad "negative control: half the batch differs by only '${d:-none}'"; fi
# P = 1 under mpirun is the plain program
run pre_np1 mpirun -np 1 "$B/mpi/pretrain" $PRE --loss ot --batch 8 --out "$out/pre_np1.st"
bits "$out/pre_ot_1.st" "$out/pre_np1.st" "mpirun -np 1 pretrain == plain pretrain"
# the overlap changes nothing: the buckets summed after the backward give the same bits
run pre_noov $MPIRUN "$B/mpi/pretrain" $PRE --loss icfm --batch 8 --bucket-mb 0.5 --no-overlap --out "$out/pre_noov.st"
bits "$out/pre_icfm_2.st" "$out/pre_noov.st" "overlap on == off"
nb=$(sed -n 's/.* \([0-9]*\) gradient buckets.*/\1/p' "$out/pre_icfm_2.log")
[ "${nb:-0}" -gt 1 ] && ok "overlap: $nb buckets" || bad "overlap: '${nb}' buckets, want several"
# resume under MPI: 2 steps, stop, resume -> the straight run's bits
run pre_r1 $MPIRUN "$B/mpi/pretrain" $PRE --batch 8 --bucket-mb 0.5 --stop-after 2 --out "$out/pre_r.st"
run pre_r2 $MPIRUN "$B/mpi/pretrain" $PRE --batch 8 --bucket-mb 0.5 --resume --out "$out/pre_r.st"
bits "$out/pre_icfm_2.st" "$out/pre_r.st" "pretrain --resume under mpirun"

# fine-tuning from the pretrained U-Net, exact and frozen, evaluating on 40 test images
FT="--init $out/pre_icfm_1.st --data $M --test $MT --limit 64 --eval-limit 40 --t-span 3 --lr $lr --warmup-steps 0 --steps $steps --seed 3 --threads 1 --log-every 1 --no-flip"
for G in exact frozen; do
    F=$FT; [ $G = frozen ] && F="$FT --frozen"
    run ft_${G}_1 "$B/finetune" $F --batch 8 --out "$out/ft_${G}_1"
    run ft_${G}_2 $MPIRUN "$B/mpi/finetune" $F --batch 8 --bucket-mb 0.5 --out "$out/ft_${G}_2"
    same "$out/ft_${G}_1-last.safetensors" "$out/ft_${G}_2-last.safetensors" "finetune $G: 2 ranks x 4 == 1 process x 8 (U-Net + head)"
    same_loss ft_${G}_1 ft_${G}_2 "finetune $G: global loss"
    # the sharded evaluation: its top-1 is the plain evaluate's on the same weights
    a=$(sed -n "s/^eval step $steps .*top-1 \([0-9.]*\)%.*/\1/p" "$out/ft_${G}_2.log")
    b=$("$B/evaluate" --model "$out/ft_${G}_2-last.safetensors" --data $MT --limit 40 --threads 1 2> /dev/null | sed -n 's/.*top-1 \([0-9.]*\)%.*/\1/p')
    [ -n "$a" ] && [ "$a" = "$b" ] && ok "finetune $G: sharded evaluation top-1 $a% == evaluate's $b%" ||
        bad "finetune $G: sharded evaluation top-1 '$a' vs evaluate's '$b'"
done
# P = 1 under mpirun is the plain finetune, --beta's flow-matching term included
run ft_beta_1 "$B/finetune" $FT --beta 0.5 --batch 8 --out "$out/ft_beta_1"
run ft_beta_np1 mpirun -np 1 "$B/mpi/finetune" $FT --beta 0.5 --batch 8 --out "$out/ft_beta_np1"
bits "$out/ft_beta_1-last.safetensors" "$out/ft_beta_np1-last.safetensors" "mpirun -np 1 finetune --beta == plain finetune"
run ft_beta_2 $MPIRUN "$B/mpi/finetune" $FT --beta 0.5 --batch 8 --out "$out/ft_beta_2"
c=$($MPIRUN "$B/mpi/evaluate" --model "$out/ft_exact_2-last.safetensors" --data $MT --limit 40 --threads 1 2> /dev/null | sed -n 's/.*top-1 \([0-9.]*\)%.*/\1/p')
d=$("$B/evaluate" --model "$out/ft_exact_2-last.safetensors" --data $MT --limit 40 --threads 1 2> /dev/null | sed -n 's/.*top-1 \([0-9.]*\)%.*/\1/p')
[ -n "$c" ] && [ "$c" = "$d" ] && ok "mpirun -np 2 evaluate: top-1 $c% == one process" || bad "mpirun -np 2 evaluate: top-1 '$c' vs '$d'"

# SIGINT to rank 1 alone: every rank stops after the same step, rank 0 saves once, all exit non-zero
rm -f "$out"/pid.*
$MPIRUN sh -c 'echo $$ > '"$out"'/pid.$OMPI_COMM_WORLD_RANK; exec '"$B"'/mpi/pretrain '"${PRE/--steps $steps/--steps 100000}"' --batch 8 --out '"$out"'/sig.st' \
    > "$out/sig.log" 2>&1 &
job=$!
for i in $(seq 1 300); do grep -q '^step 2/' "$out/sig.log" 2> /dev/null && break; sleep 0.2; done
kill -INT "$(cat "$out/pid.1" 2> /dev/null)" 2> /dev/null
for i in $(seq 1 300); do kill -0 $job 2> /dev/null || break; sleep 0.2; done
if kill -0 $job 2> /dev/null; then kill -- $job; bad "SIGINT to rank 1: the job still runs after 60 s"; fi
wait $job; rc=$?
n=$(grep -c '^interrupted: saved' "$out/sig.log")
st=$(head -c 4096 "$out/sig.st" 2> /dev/null | grep -a -o '"prg.step":"[0-9]*"' | grep -o '[0-9][0-9]*')
[ $rc -ne 0 ] && [ "$n" = 1 ] && [ -n "$st" ] && [ "$st" -ge 2 ] && [ "$st" -lt 100000 ] &&
    ok "SIGINT to rank 1: exit $rc, saved once at step $st" || bad "SIGINT to rank 1: exit $rc, '$n' saves, step '$st'"

# a data file missing on rank 1: the job ends with rank 1's message, within seconds
t0=$(date +%s)
timeout 60 $MPIRUN sh -c 'd='"$M"'; [ $OMPI_COMM_WORLD_RANK = 1 ] && d='"$out"'/no_such_file.gz; exec '"$B"'/mpi/pretrain --data $d '"${PRE/--data $M/}"' --batch 8 --out '"$out"'/fault.st' \
    > "$out/fault.log" 2>&1
rc=$?; t=$(( $(date +%s) - t0 ))
[ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $t -lt 30 ] && grep -q 'rank 1.*no_such_file' "$out/fault.log" &&
    ok "missing file on rank 1: exit $rc after $t s with its message" ||
    { bad "missing file on rank 1: exit $rc after $t s"; tail -n 5 "$out/fault.log"; }

echo "test_mpi: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
