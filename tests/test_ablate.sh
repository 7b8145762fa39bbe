#!/usr/bin/env bash
# The ablation runner (examples/ablate.c) on a tiny slice of the bundled
# MNIST: a study stopped after two cells (--max-cells 2) and rerun has each
# cell once in its CSV, runs only the missing cells and pretrains once; a
# rerun of a finished study runs nothing; a line cut short by a kill is left
# out and the cell runs again; the charts decode; finetune
# --labels-per-class picks N images of each class, the same ones every run.
# Prints "test_ablate: N passed, N failed".
cd "$(dirname "$0")/.." || exit 1
BIN=${BUILD:-build}; OUT=$BIN/test_ablate
rm -rf "$OUT"; mkdir -p "$OUT"
passed=0; failed=0
check() { # condition-exit-status, message
    if [ "$1" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL test_ablate: $2"; fi
}
png_ok() { [ "$(head -c 8 "$1" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]; }
export PRG_NUM_THREADS=2
TRAIN=data/mnist/train-images-idx3-ubyte.gz; TEST=data/mnist/t10k-images-idx3-ubyte.gz
LABELS=data/mnist/train-labels-idx1-ubyte.gz
# 5 cells: baseline, t_span 3, scratch, 3 labels per class, scratch at 3 labels; t_cutoff 1 is
# skipped at the baseline t_span 2 (no Euler step)
A="--preset tiny --t-span 2,3 --t-cutoff 0,1 --init pretrained,scratch --labels all,3 --out $OUT/study"
rows() { tail -n +2 "$OUT/study/ablate.csv" | grep -c .; }

# 1. stopped after two cells
"$BIN/ablate" $A --max-cells 2 > "$OUT/run1.log" 2>&1
check $? "ablate --max-cells 2 failed (see $OUT/run1.log)"
[ "$(rows)" = 2 ]; check $? "after --max-cells 2 the CSV has $(rows) cells, not 2"
grep -q "ablate: 5 cells" "$OUT/run1.log"; check $? "the grid is not 5 cells (see $OUT/run1.log)"
grep -q -- "--max-cells 2 reached; 3 cells left" "$OUT/run1.log"; check $? "no note of the 3 cells left"

# 2. rerun: the missing cells only, each cell once, one pretraining in all
"$BIN/ablate" $A > "$OUT/run2.log" 2>&1
check $? "ablate rerun failed (see $OUT/run2.log)"
[ "$(rows)" = 5 ]; check $? "after the rerun the CSV has $(rows) cells, not 5"
[ -z "$(tail -n +2 "$OUT/study/ablate.csv" | cut -d, -f1-9 | sort | uniq -d)" ]; check $? "a cell is twice in the CSV"
grep -q "5 cells (axes grid, 1 seed), 2 already in" "$OUT/run2.log"; check $? "the rerun did not find the 2 finished cells"
[ "$(grep -c '^cell ' "$OUT/run2.log")" = 3 ]; check $? "the rerun did not run exactly the 3 missing cells"
[ "$(cat "$OUT/run1.log" "$OUT/run2.log" | grep -c '^pretrain icfm seed 0')" = 1 ]; check $? "the U-Net was not pretrained exactly once"
! grep -q ',1,exact,pretrained,icfm,0,none,all,0,' "$OUT/study/ablate.csv"; check $? "a cell without Euler steps ran"
grep -q "^1 .*no Euler step at t_span 2" "$OUT/run2.log"; check $? "the skipped t_cutoff cell is not named in the table"
# the table of the label budget: PRG and scratch at 3 per class
grep -A3 '^labels  *PRG  *scratch' "$OUT/run2.log" | grep -qE '^3 +[0-9.]+% +[0-9.]+%'
check $? "no PRG / scratch table per label budget"

# 3. a finished study: nothing runs, the CSV stays as it is
cp "$OUT/study/ablate.csv" "$OUT/before.csv"
"$BIN/ablate" $A > "$OUT/run3.log" 2>&1
check $? "ablate on a finished study failed"
cmp -s "$OUT/before.csv" "$OUT/study/ablate.csv" && ! grep -q '^cell ' "$OUT/run3.log"
check $? "a finished study ran cells again or changed its CSV"

# 4. a row cut short (killed while writing): reported, its cell runs again, the next row starts on a line of its own
head -n 5 "$OUT/before.csv" > "$OUT/study/ablate.csv"
tail -n 1 "$OUT/before.csv" | head -c 20 >> "$OUT/study/ablate.csv"
"$BIN/ablate" $A > "$OUT/run4.log" 2>&1
check $? "ablate after a cut row failed (see $OUT/run4.log)"
grep -q "line 6 is not a finished cell" "$OUT/run4.log"; check $? "the cut row was not reported"
[ "$(grep -c '^cell ' "$OUT/run4.log")" = 1 ]; check $? "not exactly the cut row's cell ran again"
[ "$(tail -n +2 "$OUT/study/ablate.csv" | grep -c ',[0-9.]*,[0-9.]*,[0-9.]*$')" = 5 ]
check $? "the CSV does not hold the 5 cells as whole rows after the repair"

# 4b. SIGTERM to ablate after its first cell: the running cell finishes, ablate exits 143, a rerun completes
K="--preset tiny --t-span 2,3,4 --out $OUT/kill"
"$BIN/ablate" $K > "$OUT/kill1.log" 2>&1 &
pid=$!
for i in $(seq 600); do
    [ "$(tail -n +2 "$OUT/kill/ablate.csv" 2> /dev/null | grep -c .)" -ge 1 ] && break
    sleep 0.1
done
kill -TERM "$pid"; wait "$pid"; rc=$?
n=$(tail -n +2 "$OUT/kill/ablate.csv" | grep -c .)
[ "$rc" = 143 ] && [ "$n" = 2 ]; check $? "SIGTERM after a cell: status $rc and $n cells (want 143 and 2)"
"$BIN/ablate" $K > "$OUT/kill2.log" 2>&1 && [ "$(tail -n +2 "$OUT/kill/ablate.csv" | grep -c .)" = 3 ] &&
    [ -z "$(tail -n +2 "$OUT/kill/ablate.csv" | cut -d, -f1-9 | sort | uniq -d)" ]
check $? "the rerun after SIGTERM did not end with the 3 cells once each"

# 5. the charts decode (ablate reads each back with prg_image_load; PIL too when it is there)
for c in t_span init labels methods; do
    png_ok "$OUT/study/ablate-$c.png" && grep -q "chart $OUT/study/ablate-$c.png (800x500)" "$OUT/run4.log"
    check $? "ablate-$c.png missing or not read back"
done
if /usr/bin/python3 -c 'import PIL' 2> /dev/null; then
    /usr/bin/python3 - "$OUT/study/ablate-methods.png" "$OUT/study/ablate-t_span.png" << 'EOF'
import sys
from PIL import Image
for p in sys.argv[1:]:
    im = Image.open(p).convert("RGB")
    assert im.size == (800, 500), (p, im.size)
    px = im.getdata()
    # series 0 (Tableau blue) and 1 (orange) are drawn
    assert sum(1 for q in px if q == (31, 119, 180)) > 50, p
    assert sum(1 for q in px if q == (255, 127, 14)) > 50, p
EOF
    check $? "PIL: a chart is not an 800x500 PNG with both series drawn"
fi

# 6. bad lists are refused with status 2
"$BIN/ablate" --preset tiny --grad exact,sideways --out "$OUT/bad" > "$OUT/bad.log" 2>&1
[ $? = 2 ] && grep -q "wants a comma-separated list of exact,adjoint,frozen" "$OUT/bad.log"; check $? "--grad sideways not refused"
"$BIN/ablate" --preset tiny --t-span 2,,3 --out "$OUT/bad" > "$OUT/bad.log" 2>&1
[ $? = 2 ]; check $? "--t-span 2,,3 not refused"

# 7. finetune --labels-per-class: N of each class, the same images for any --seed, others for another --label-seed
P=$OUT/study/pretrain-icfm-s0.safetensors
F="--init $P --data $TRAIN --limit 300 --test $TEST --eval-limit 10 --t-span 2 --batch 8 --steps 1 --threads 2 --quiet"
"$BIN/finetune" $F --labels-per-class 4 --seed 1 --out "$OUT/l1" > "$OUT/l1.log" 2>&1 &&
"$BIN/finetune" $F --labels-per-class 4 --seed 2 --out "$OUT/l2" > "$OUT/l2.log" 2>&1 &&
"$BIN/finetune" $F --labels-per-class 4 --label-seed 7 --out "$OUT/l3" > "$OUT/l3.log" 2>&1
check $? "finetune --labels-per-class failed (see $OUT/l1.log)"
grep -q "40 labelled images (4 per class of 10" "$OUT/l1.log"; check $? "finetune does not report 40 labelled images"
counts=$(grep -v '^#' "$OUT/l1-labels.txt" | awk '{ n[$2]++ } END { for (k = 0; k < 10; k++) printf "%d ", n[k] }')
[ "$counts" = "4 4 4 4 4 4 4 4 4 4 " ]; check $? "labels per class are '$counts', not 4 each"
# the listed labels are the dataset's (the IDX labels file: 8 header bytes, then one byte an image)
gzip -dc "$LABELS" | od -An -v -tu1 -j8 -N300 | tr -s ' ' '\n' | grep . > "$OUT/idx_labels.txt"
grep -v '^#' "$OUT/l1-labels.txt" | awk 'NR == FNR { l[NR - 1] = $1; next } { if (l[$1] != $2) bad = 1; if ($1 >= 300) bad = 1 } END { exit bad }' "$OUT/idx_labels.txt" -
check $? "a listed label differs from the IDX file's, or an index is past --limit"
cmp -s "$OUT/l1-labels.txt" "$OUT/l2-labels.txt"; check $? "another --seed picked other labelled images"
! cmp -s <(grep -v '^#' "$OUT/l1-labels.txt") <(grep -v '^#' "$OUT/l3-labels.txt"); check $? "--label-seed 7 picked the same images as 0"
"$BIN/finetune" $F --labels-per-class 100 --out "$OUT/l4" > "$OUT/l4.log" 2>&1
[ $? = 1 ] && grep -q "class [0-9] has only [0-9]* images" "$OUT/l4.log"; check $? "100 per class of 300 images not refused"

echo "test_ablate: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
