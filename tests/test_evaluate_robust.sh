#!/usr/bin/env bash
# evaluate's robustness and OOD modes end to end on a tiny U-Net and a slice
# of the bundled MNIST: --corruption all prints every corruption at every
# severity, its CSV holds each (corruption, severity) once with means and CE
# that follow from its own rows, --chart writes the two stacked panels (one
# for a single corruption); --ood writes its CSV and chart; the refusals of
# --chart; a test set naming its classes mapped to the model's by name.  A few seconds.  Prints "test_evaluate_robust: N passed, N failed".
cd "$(dirname "$0")/.." || exit 1
BIN=${BUILD:-build}; OUT=$BIN/test_evaluate_robust
rm -rf "$OUT"; mkdir -p "$OUT"
passed=0; failed=0
check() { # condition-exit-status, message
    if [ "$1" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL test_evaluate_robust: $2"; fi
}
# png_size FILE: "WIDTHxHEIGHT" from the IHDR chunk, empty when the file is not a PNG
png_size() {
    [ "$(head -c 8 "$1" 2>/dev/null | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] || return
    od -An -tu1 -j16 -N8 "$1" | awk '{ printf "%dx%d", (($1*256+$2)*256+$3)*256+$4, (($5*256+$6)*256+$7)*256+$8 }'
}
export PRG_NUM_THREADS=2
D=data/mnist/train-images-idx3-ubyte.gz; T=data/mnist/t10k-images-idx3-ubyte.gz
NET="--model-channels 8 --groups 4 --res-blocks 1 --channel-mult 1,2 --attention-ds none --heads 1"
"$BIN/pretrain" --data $D $NET --batch 8 --steps 2 --limit 200 --quiet --out "$OUT/u.st" > "$OUT/pre.log" 2>&1
check $? "pretraining failed (see $OUT/pre.log)"
F="--data $D --batch 8 --steps 3 --t-span 2 --limit 200 --no-augment --quiet --eval-every 1000000"
"$BIN/finetune" $F --init "$OUT/u.st" --out "$OUT/prg" > "$OUT/ft1.log" 2>&1
check $? "fine-tuning failed (see $OUT/ft1.log)"
"$BIN/finetune" $F --init "$OUT/u.st" --from-scratch $NET --seed 1 --out "$OUT/scr" > "$OUT/ft2.log" 2>&1
check $? "fine-tuning from scratch failed (see $OUT/ft2.log)"
M=$OUT/prg-last.safetensors; B=$OUT/scr-last.safetensors
E="$BIN/evaluate --model $M --data $T --limit 6 --quiet"

# 1. every corruption and severity, CSV and chart
$E --corruption all --baseline "$B" --csv "$OUT/c.csv" --chart "$OUT/c.png" > "$OUT/all.log" 2>&1
check $? "evaluate --corruption all failed (see $OUT/all.log)"
[ "$(grep -cE '^[a-z_]+ severity [1-5]: top-1 [0-9.]+%  \(baseline top-1 [0-9.]+%\)$' "$OUT/all.log")" = 75 ]
check $? "not 75 corruption x severity lines (see $OUT/all.log)"
grep -qE '^mCE [0-9.]+% \(relative to ' "$OUT/all.log" || grep -q '^mCE undefined' "$OUT/all.log"
check $? "no mCE line"
[ "$(tail -n +2 "$OUT/c.csv" | grep -cE '^[a-z_]+,[1-5],')" = 75 ] &&
    [ -z "$(tail -n +2 "$OUT/c.csv" | grep -E '^[a-z_]+,[1-5],' | cut -d, -f1-2 | sort | uniq -d)" ]
check $? "the CSV does not hold each of the 75 (corruption, severity) once"
[ "$(tail -n +2 "$OUT/c.csv" | cut -d, -f1 | sort -u | grep -vc '^mean$')" = 15 ]
check $? "the CSV does not name the 15 corruptions"
# the means and CEs follow from the rows: per corruption the mean of its 5 top-1s and
# CE = sum of errors / sum of the baseline's; the last row the mean of the 15 means
awk -F, 'NR > 1 && $2 ~ /^[1-5]$/ { t[$1] += $3; e[$1] += $4; b[$1] += $5 }
         NR > 1 && $2 == "mean" { n++; m += $3; if ($3 - t[$1] / 5 > 0.01 || t[$1] / 5 - $3 > 0.01) bad = bad " mean:" $1
                                  if (b[$1] > 0 && ($6 == "" || $6 - 100 * e[$1] / b[$1] > 0.01 || 100 * e[$1] / b[$1] - $6 > 0.01)) bad = bad " ce:" $1 }
         $1 == "mean" && $2 == "all" { all = $3 }
         END { if (n != 15 || all - m / 15 > 0.01 || m / 15 - all > 0.01) bad = bad " all"; if (bad != "") { print bad; exit 1 } }' "$OUT/c.csv"
check $? "the CSV's means or CEs do not follow from its rows"
[ "$(png_size "$OUT/c.png")" = 800x900 ]; check $? "the --corruption all chart is $(png_size "$OUT/c.png"), not 800x900 (two panels)"
grep -q "^chart -> $OUT/c.png" "$OUT/all.log"; check $? "the chart is not named in the output"

# 2. one corruption at one severity: top-1 as evaluate prints it; one panel
$E --corruption fog --severity 3 --chart "$OUT/fog.png" > "$OUT/fog.log" 2>&1
check $? "evaluate --corruption fog failed (see $OUT/fog.log)"
grep -qE '^fog severity 3: top-1 [0-9.]+%$' "$OUT/fog.log"; check $? "no 'fog severity 3: top-1' line"
[ "$(png_size "$OUT/fog.png")" = 800x500 ]; check $? "the one-corruption chart is $(png_size "$OUT/fog.png"), not 800x500"

# 3. OOD: a line per score, the CSV and the chart
$E --ood invert --ood-steps 2 --csv "$OUT/o.csv" --chart "$OUT/o.png" > "$OUT/ood.log" 2>&1
check $? "evaluate --ood failed (see $OUT/ood.log)"
[ "$(grep -cE '^[a-z-]+ +AUROC [01]\.[0-9]{4}  FPR95 [01]\.[0-9]{4}$' "$OUT/ood.log")" = 4 ]
check $? "not four AUROC / FPR95 lines (see $OUT/ood.log)"
[ "$(head -n 1 "$OUT/o.csv")" = "score,auroc,fpr95" ] && [ "$(tail -n +2 "$OUT/o.csv" | cut -d, -f1 | tr '\n' ' ')" = "msp energy ode-norm fm-loss " ]
check $? "the OOD CSV is not score,auroc,fpr95 for the four scores"
# the CSV's numbers are the printed ones
awk -F, 'NR > 1 { printf "%s AUROC %.4f FPR95 %.4f\n", $1, $2, $3 }' "$OUT/o.csv" > "$OUT/o.want"
grep AUROC "$OUT/ood.log" | tr -s ' ' > "$OUT/o.got"
cmp -s "$OUT/o.want" "$OUT/o.got"; check $? "the OOD CSV differs from the printed scores"
[ "$(png_size "$OUT/o.png")" = 800x500 ]; check $? "the OOD chart is $(png_size "$OUT/o.png"), not 800x500"

# 4. refusals, before any work
$E --chart "$OUT/x.png" > "$OUT/r1.log" 2>&1
[ $? = 2 ] && grep -q -- "--chart goes with --corruption or --ood" "$OUT/r1.log"; check $? "--chart alone not refused"
$E --corruption fog --ood invert --csv "$OUT/x.csv" > "$OUT/r2.log" 2>&1
[ $? = 2 ] && grep -q -- "one of --corruption and --ood" "$OUT/r2.log"; check $? "--csv with --corruption and --ood not refused"
$E --corruption fog --csv "$OUT/x.csv" --chart "$OUT/x.csv" > "$OUT/r3.log" 2>&1
[ $? = 2 ] && grep -q -- "is the --csv file" "$OUT/r3.log"; check $? "--chart naming the --csv file not refused"
cp "$M" "$OUT/keep.st"
$E --corruption fog --chart "$M" > "$OUT/r4.log" 2>&1
[ $? = 2 ] && grep -q -- "is the --model file" "$OUT/r4.log" && cmp -s "$M" "$OUT/keep.st"
check $? "--chart naming the --model file not refused, or the model changed"
[ ! -e "$OUT/x.png" ] && [ ! -e "$OUT/x.csv" ]; check $? "a refused run wrote a file"

# 5. shifted test sets: a dataset that names its classes is mapped to the model's by name;
#    a subset in another index order scores as its images do under the model's own labels
"$BIN/make_tiny_dataset" folder "$OUT/abc" 4 a b c > /dev/null && "$BIN/make_tiny_dataset" folder "$OUT/bc" 4 b c > /dev/null &&
    "$BIN/make_tiny_dataset" folder "$OUT/bd" 4 b d > /dev/null
check $? "make_tiny_dataset folder failed"
for t in abc bc bd; do "$BIN/prepare" --root "$OUT/$t" --size 16 --quiet --out "$OUT/$t" > "$OUT/prep-$t.log" 2>&1 || break; done
check $? "prepare failed (see $OUT/prep-*.log)"
N16="--model-channels 8 --groups 4 --res-blocks 1 --channel-mult 1,2 --attention-ds none --heads 1"
"$BIN/finetune" --data "$OUT/abc.npz" --from-scratch $N16 --image-size 16 --batch 4 --steps 3 --t-span 2 --no-augment \
    --quiet --out "$OUT/abc" > "$OUT/ft3.log" 2>&1
check $? "fine-tuning on the 3-class tree failed (see $OUT/ft3.log)"
"$BIN/evaluate" --model "$OUT/abc-last.safetensors" --data "$OUT/bc.npz" --csv "$OUT/bc.csv" > "$OUT/map.log" 2>&1 &&
    grep -q "the 2 classes of $OUT/bc.npz mapped to .*'s 3 by name" "$OUT/map.log"
check $? "a 2-class subset was not mapped by name (see $OUT/map.log)"
# its confusion matrix: the rows of b and c hold the 8 images, a's row none
rows=$(awk -F, 'NR > 1 { s = 0; for (i = 2; i <= NF; i++) s += $i; printf "%s:%d ", $1, s }' "$OUT/bc.csv")
[ "$rows" = "a:0 b:4 c:4 " ]
check $? "the mapped labels are not the model's b and c: rows $rows (see $OUT/bc.csv)"
"$BIN/evaluate" --model "$OUT/abc-last.safetensors" --data "$OUT/bd.npz" > "$OUT/map2.log" 2>&1
[ $? = 1 ] && grep -q "'d', is not a class of" "$OUT/map2.log"; check $? "a class the model lacks was not refused by name"

echo "test_evaluate_robust: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
