#!/usr/bin/env bash
# End-to-end checks of the example programs: the --smoke modes of the two
# paper recipes (tiny generated CIFAR-10 / Imagenet64 files), a reduced MNIST
# demo (pretrain, samples, fine-tune PRG and from scratch, evaluate),
# bit-exact resume of pretraining and fine-tuning, and classify on one image.
# Prints "test_pipeline: N passed, N failed".
cd "$(dirname "$0")/.." || exit 1
BIN=${BUILD:-build}; OUT=$BIN/test_pipeline
rm -rf "$OUT"; mkdir -p "$OUT"
passed=0; failed=0
check() { # condition-exit-status, message
    if [ "$1" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL test_pipeline: $2"; fi
}
# above LIMIT (percent): the top-1 in the last "top-1 X%" line of a log
acc_above() { awk -v lim="$2" '/top-1/ { for (i = 1; i <= NF; i++) if ($i == "top-1") a = $(i + 1) } END { sub("%", "", a); exit !(a + 0 > lim) }' "$1"; }
png_ok() { [ "$(head -c 8 "$1" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]; }
export PRG_NUM_THREADS=2

# 1. recipes, --smoke
for r in cifar10 imagenet64; do
    BIN=$BIN OUT=$OUT/$r THREADS=2 examples/$r.sh --smoke > "$OUT/$r.log" 2>&1
    check $? "$r.sh --smoke exited with an error (see $OUT/$r.log)"
    acc_above "$OUT/$r.log" 20; check $? "$r.sh --smoke: top-1 not above 20% (10 classes)"
    png_ok "$OUT/$r/samples.png"; check $? "$r.sh --smoke: no valid samples.png"
    [ "$(wc -l < "$OUT/$r/confusion.csv")" -ge 11 ]; check $? "$r.sh --smoke: confusion matrix too short"
done

# 2. reduced demo: a few hundred images per stage
BIN=$BIN OUT=$OUT/demo THREADS=2 PRE_STEPS=8 PRE_BATCH=32 FT_STEPS=10 FT_BATCH=24 EVAL_LIMIT=200 \
    examples/demo.sh > "$OUT/demo.log" 2>&1
check $? "demo.sh (reduced) exited with an error (see $OUT/demo.log)"
png_ok "$OUT/demo/samples.png"; check $? "demo: samples.png is not a PNG"
acc_above "$OUT/demo/prg.log" 20; check $? "demo: PRG top-1 not above 20% after 240 images"
grep -q "PRG (pretrained U-Net)" "$OUT/demo.log"; check $? "demo: no comparison printed"
[ "$(wc -l < "$OUT/demo/confusion.csv")" -eq 11 ]; check $? "demo: confusion matrix is not 10x10"
s=$(awk -F, 'NR > 1 { for (i = 2; i <= NF; i++) s += $i } END { print s }' "$OUT/demo/confusion.csv")
[ "$s" = 200 ]; check $? "demo: confusion matrix counts $s images, not 200"

# 3. bit-exact resume (pretraining and fine-tuning), on the tiny CIFAR files
D=$OUT/cifar10/data/data_batch_1.bin; T=$OUT/cifar10/data/test_batch.bin
NET="--model-channels 16 --groups 8 --res-blocks 1 --channel-mult 1,2 --attention-ds none --heads 1"
P="--data $D $NET --batch 8 --steps 4 --lr 1e-3 --limit 64"
"$BIN/pretrain" $P --out "$OUT/p_full.st" > /dev/null 2>&1 &&
"$BIN/pretrain" $P --stop-after 2 --out "$OUT/p_res.st" > /dev/null 2>&1 &&
"$BIN/pretrain" $P --resume --out "$OUT/p_res.st" > "$OUT/resume.log" 2>&1
check $? "pretrain --stop-after / --resume failed"
cmp -s "$OUT/p_full.st" "$OUT/p_res.st"; check $? "pretrain: resumed checkpoint differs from the straight run"
F="--init $OUT/p_full.st --data $D --batch 8 --steps 4 --t-span 3 --limit 64 --lr 1e-3 --beta 0.5"
"$BIN/finetune" $F --out "$OUT/f_full" > /dev/null 2>&1 &&
"$BIN/finetune" $F --stop-after 3 --out "$OUT/f_res" > /dev/null 2>&1 &&
"$BIN/finetune" $F --resume --out "$OUT/f_res" >> "$OUT/resume.log" 2>&1
check $? "finetune --stop-after / --resume failed"
cmp -s "$OUT/f_full-last.safetensors" "$OUT/f_res-last.safetensors"; check $? "finetune: resumed checkpoint differs"
F="--init $OUT/p_full.st --data $D --batch 8 --steps 4 --t-span 3 --limit 64 --lr 1e-3 --frozen"
"$BIN/finetune" $F --out "$OUT/z_full" > /dev/null 2>&1 &&
"$BIN/finetune" $F --stop-after 2 --out "$OUT/z_res" > /dev/null 2>&1 &&
"$BIN/finetune" $F --resume --out "$OUT/z_res" >> "$OUT/resume.log" 2>&1
check $? "finetune --frozen --stop-after / --resume failed"
cmp -s "$OUT/z_full-last.safetensors" "$OUT/z_res-last.safetensors"
check $? "finetune --frozen: resumed checkpoint (one file, the head's AdamW state inside) differs"
[ ! -e "$OUT/z_res-last.head-optim.safetensors" ]; check $? "finetune --frozen: wrote a second checkpoint file"
"$BIN/pretrain" $P --steps 5 --out "$OUT/p_full.st" > /dev/null 2>&1 &&
cmp -s "$OUT/p_full.st" "$OUT/p_res.st"; [ $? -ne 0 ]; check $? "pretrain: one more step left the checkpoint unchanged"

# 4. classify one MNIST test image with the demo's classifier
"$BIN/make_tiny_dataset" pgm data/mnist/t10k-images-idx3-ubyte.gz 0 "$OUT/digit.pgm" > /dev/null &&
"$BIN/classify" --model "$OUT/demo/prg-last.safetensors" "$OUT/digit.pgm" > "$OUT/classify.log" 2>&1
check $? "classify failed"
[ "$(grep -cE '^ +[0-9.]+% +[0-9]$' "$OUT/classify.log")" -eq 5 ]; check $? "classify: not 5 ranked classes"
awk '/%/ { s += $1 } END { exit !(s > 0 && s <= 100.01) }' "$OUT/classify.log"; check $? "classify: probabilities do not sum to <= 100%"
# a colour JPEG and a PNG are read too (converted to the model's one channel, resized)
for f in tests/fixtures/images/jpeg_420.jpg tests/fixtures/images/png_rgb8.png; do
    [ -f "$f" ] || f=$(ls tests/fixtures/images/*.png | head -n 1)
    "$BIN/classify" --model "$OUT/demo/prg-last.safetensors" "$f" > "$OUT/classify2.log" 2>&1
    check $? "classify $f failed"
    [ "$(grep -cE '^ +[0-9.]+% +[0-9]$' "$OUT/classify2.log")" -eq 5 ]; check $? "classify $f: not 5 ranked classes"
done

echo "test_pipeline: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
