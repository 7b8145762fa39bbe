#!/usr/bin/env bash
# End to end on a folder of one's own images: a torchvision ImageFolder tree
# of 3 classes written here (PNG and JPEG of odd sizes, upper-case
# extensions, a grey image, an unreadable file, a stray text file) ->
# prepare (--val-fraction) -> pretrain -> finetune -> evaluate -> classify.
# Checks that the class count and names come from the tree (the head, the
# checkpoint's metadata, classify's output), that the held-out split is
# stratified and the same bytes on a second run, that the unreadable file is
# listed, and that a label past the model's classes is an error naming the
# index.  JPEGs come from Debian's cjpeg (libjpeg-turbo-progs) when it is
# installed.  Prints "test_owndata: N passed, N failed".
cd "$(dirname "$0")/.." || exit 1
BIN=${BUILD:-build}; OUT=$BIN/test_owndata
rm -rf "$OUT"; mkdir -p "$OUT"
passed=0; failed=0
check() { # condition-exit-status, message
    if [ "$1" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL test_owndata: $2"; fi
}
export PRG_NUM_THREADS=2
T=$OUT/tree

# 1. the tree: 9 images a class; torchvision sorts the names by code point: Banana, apple, cherry pie
"$BIN/make_tiny_dataset" folder "$T" 9 apple Banana "cherry pie" > /dev/null
check $? "make_tiny_dataset folder failed"
if command -v cjpeg > /dev/null; then
    for f in "$T"/*/*.ppm "$T"/*/*.pgm; do cjpeg -quality 90 "$f" > "${f%.*}.JPG" && rm "$f"; done
    mv "$T/cherry pie/5.JPG" "$T/cherry pie/5.jpeg"
    [ "$(find "$T" \( -name '*.JPG' -o -name '*.jpeg' \) | wc -l)" -eq 9 ]; check $? "cjpeg did not write 9 JPEGs"
else
    echo "test_owndata: cjpeg not found (Debian libjpeg-turbo-progs): the tree keeps PPM/PGM in place of JPEG"
fi
printf 'not an image\n' > "$T/Banana/broken.jpg"
printf 'notes\n' > "$T/apple/README.txt"
readable="Banana 9
apple 9
cherry pie 9"

# 2. prepare, twice (another thread count): the same bytes
P="--size 16 --val-fraction 0.3 --seed 1 --quiet"
# (the first run without --quiet: its layout, channel and summary lines are checked)
"$BIN/prepare" --root "$T" ${P% --quiet} --out "$OUT/d" > "$OUT/prepare.log" 2>&1
check $? "prepare failed (see $OUT/prepare.log)"
grep -q "layout ImageFolder" "$OUT/prepare.log"; check $? "prepare did not say it detected the ImageFolder layout"
grep -q "skipped: .*Banana/broken.jpg" "$OUT/prepare.log"; check $? "prepare did not list the unreadable file on stderr"
grep -q "Banana/broken.jpg" "$OUT/d_skipped.txt" && [ "$(wc -l < "$OUT/d_skipped.txt")" -eq 1 ]
check $? "d_skipped.txt does not list exactly the unreadable file"
grep -q "; 1 skipped (unreadable)" "$OUT/prepare.log"; check $? "prepare's summary does not count 1 skipped file"
grep -q "ignored 1 file without an image extension" "$OUT/prepare.log"; check $? "the stray text file is not counted"
grep -q "channels 3 (auto: 26 colour, 1 grey image" "$OUT/prepare.log"; check $? "auto channels: not 3 from 26 colour and 1 grey image"
[ "$(cat "$OUT/d_classes.txt")" = "Banana
apple
cherry pie" ]; check $? "d_classes.txt is not the torchvision order Banana, apple, cherry pie"
"$BIN/prepare" --root "$T" $P --threads 1 --out "$OUT/e" > /dev/null 2>&1 &&
cmp -s "$OUT/d.npz" "$OUT/e.npz" && cmp -s "$OUT/d-val.npz" "$OUT/e-val.npz"
check $? "prepare: a second run (1 thread) wrote other bytes"
"$BIN/prepare" --root "$T" $P --seed 2 --out "$OUT/s2" > /dev/null 2>&1 && ! cmp -s "$OUT/d-val.npz" "$OUT/s2-val.npz"
check $? "prepare: --seed 2 held out the same images as --seed 1"

# 3. pretrain (the model's input size from the data: 16, not tiny32's 32), finetune, evaluate
NET="--model-channels 8 --groups 4 --res-blocks 1 --channel-mult 1,2 --attention-ds none --heads 1"
"$BIN/pretrain" --data "$OUT/d.npz" $NET --batch 8 --steps 3 --lr 1e-3 --no-augment --out "$OUT/p.st" > "$OUT/pretrain.log" 2>&1
check $? "pretrain failed (see $OUT/pretrain.log)"
grep -q "image_size=16" "$OUT/pretrain.log"; check $? "pretrain: the model's input size is not the data's 16"
"$BIN/finetune" --init "$OUT/p.st" --data "$OUT/d.npz" --test "$OUT/d-val.npz" --t-span 2 --batch 8 --steps 12 --lr 2e-3 \
    --no-augment --out "$OUT/f" > "$OUT/finetune.log" 2>&1
check $? "finetune failed (see $OUT/finetune.log)"
grep -q "3 classes from $OUT/d.npz: Banana, apple, cherry pie" "$OUT/finetune.log"; check $? "finetune: not the tree's 3 named classes"
"$BIN/prginfo" "$OUT/f-best.safetensors" > "$OUT/prginfo.log" 2>&1
check $? "prginfo failed on the classifier"
grep -qE '^ *head\.fc2\.weight +F32 +\[3, 768\]' "$OUT/prginfo.log"; check $? "the head is not [3, 768] (3 classes)"
grep -qE '^ *prg\.num_classes +3$' "$OUT/prginfo.log"; check $? "metadata prg.num_classes is not 3"
grep -qF 'prg.classes      ["Banana", "apple", "cherry pie"]' "$OUT/prginfo.log"; check $? "metadata prg.classes is not the tree's names"
"$BIN/evaluate" --model "$OUT/f-best.safetensors" --data "$OUT/d-val.npz" --csv "$OUT/val.csv" > "$OUT/evaluate.log" 2>&1 &&
"$BIN/evaluate" --model "$OUT/f-best.safetensors" --data "$OUT/d.npz" --csv "$OUT/train.csv" >> "$OUT/evaluate.log" 2>&1
check $? "evaluate failed (see $OUT/evaluate.log)"
[ "$(head -n 1 "$OUT/val.csv")" = 'true\pred,Banana,apple,cherry pie' ]; check $? "the confusion matrix is not headed by the class names"
# stratified: each class of n readable images holds out round(0.3 n) (all rows of the two matrices)
got=$(awk -F, 'FNR > 1 { s = 0; for (i = 2; i <= NF; i++) s += $i; if (NR == FNR) v[FNR] = s; else print $1 ": " v[FNR] " of " v[FNR] + s }' \
    "$OUT/val.csv" "$OUT/train.csv")
want=$(echo "$readable" | awk '{ n = $NF; sub(/ [0-9]+$/, ""); print $0 ": " int(0.3 * n + 0.5) " of " n }')
[ "$got" = "$want" ]; check $? "the held-out split is not round(0.3 n) of each class: got '$got', want '$want'"

# 4. a label past the model's classes: an error naming the index, not a larger head
"$BIN/make_tiny_dataset" folder "$OUT/tree4" 2 a b c d > /dev/null &&
"$BIN/prepare" --root "$OUT/tree4" --size 16 --quiet --out "$OUT/d4" > /dev/null 2>&1
check $? "prepare of a 4-class tree failed"
"$BIN/evaluate" --model "$OUT/f-best.safetensors" --data "$OUT/d4.npz" > "$OUT/evaluate4.log" 2>&1
[ $? -eq 1 ] && grep -q "d4.npz: label 3 at index 6 is past the 3 classes of" "$OUT/evaluate4.log"
check $? "evaluate on a 4-class set: no error naming label 3 at index 6 (see $OUT/evaluate4.log)"
"$BIN/finetune" --init "$OUT/p.st" --data "$OUT/d.npz" --test "$OUT/d4.npz" --t-span 2 --steps 1 --out "$OUT/f4" > "$OUT/finetune4.log" 2>&1
[ $? -eq 1 ] && grep -q "d4.npz: label 3 at index 6 is past the 3 classes of $OUT/d.npz" "$OUT/finetune4.log" && [ ! -f "$OUT/f4-last.safetensors" ]
check $? "finetune with a 4-class test set: no error naming label 3 at index 6, or a checkpoint written (see $OUT/finetune4.log)"

# 5. classify the tree: every readable image, top 3 with the tree's names; notes; CSV and JSON
"$BIN/classify" --model "$OUT/f-best.safetensors" --top 3 "$T" > "$OUT/classify.log" 2> "$OUT/classify.err"
[ $? -eq 1 ] && grep -q "broken.jpg" "$OUT/classify.err" && grep -q "1 of 28 images could not be read" "$OUT/classify.err"
check $? "classify: the unreadable file is not reported with exit status 1"
[ "$(grep -cE '^ +[0-9.]+% +[0-2]  (Banana|apple|cherry pie)$' "$OUT/classify.log")" -eq 81 ]
check $? "classify: not 3 named classes for each of the 27 readable images"
for n in Banana apple "cherry pie"; do grep -qE "%  [0-2]  $n\$" "$OUT/classify.log"; check $? "classify never printed '$n'"; done
grep -q "note: grey -> colour" "$OUT/classify.log"; check $? "classify: no note for the grey image"
{ printf 'P6\n100 70\n255\n'; head -c 21000 /dev/zero | tr '\0' '\200'; } > "$OUT/big.ppm"
"$BIN/classify" --model "$OUT/f-best.safetensors" --top 1 "$OUT/big.ppm" > "$OUT/big.log" 2>&1
check $? "classify of a 100x70 image failed"
grep -q "note: aspect ratio 1.43" "$OUT/big.log" && grep -q "note: 4x the model's side" "$OUT/big.log"
check $? "classify: no notes for the aspect ratio and the size of a 100x70 image"
"$BIN/classify" --model "$OUT/f-best.safetensors" --top 2 --csv "$T/apple" > "$OUT/classify.csv" 2>&1
check $? "classify --csv failed"
[ "$(head -n 1 "$OUT/classify.csv")" = "file,rank,class,name,probability,notes" ] &&
[ "$(grep -cE '^[^,]+/apple/[^,]+,[12],[0-2],(Banana|apple|cherry pie),[01]\.[0-9]{6},' "$OUT/classify.csv")" -eq 18 ]
check $? "classify --csv: not a header and 2 rows for each of the 9 images"
"$BIN/classify" --model "$OUT/f-best.safetensors" --top 1 --json "$T/cherry pie" > "$OUT/classify.json" 2>&1
check $? "classify --json failed"
[ "$(grep -c '"top": \[{"rank": 1, "class": [0-2], "name": "[A-Za-z ]*", "probability": [01]\.[0-9]*}\]}' "$OUT/classify.json")" -eq 9 ] &&
[ "$(head -c 1 "$OUT/classify.json")" = "[" ] && [ "$(tail -n 1 "$OUT/classify.json")" = "]" ]
check $? "classify --json: not an array of 9 objects with a named top class"

# 6. grey data: --channels 1 writes 1-channel images the programs take
"$BIN/prepare" --root "$T" --size 16 --channels 1 --quiet --out "$OUT/g" > /dev/null 2>&1 &&
"$BIN/pretrain" --data "$OUT/g.npz" $NET --batch 8 --steps 1 --no-augment --out "$OUT/g.st" > "$OUT/grey.log" 2>&1
check $? "prepare --channels 1 / pretrain on it failed"
grep -q "27 images 1x16x16" "$OUT/grey.log"; check $? "--channels 1: the data is not 27 images 1x16x16"

echo "test_owndata: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
