#!/usr/bin/env bash
# End-to-end checks of the example programs: the --smoke modes of the two
# paper recipes (tiny generated CIFAR-10 / Imagenet64 files), a reduced MNIST
# demo (pretrain, samples, fine-tune PRG and from scratch, evaluate),
# bit-exact resume of pretraining and fine-tuning, classify on one image, the
# probability path from pretrain through finetune and evaluate for each loss,
# and digit-like samples of a briefly trained GVP model.
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
png_ok "$OUT/demo/pretrain-curves.png" && png_ok "$OUT/demo/prg-curves.png"; check $? "demo: no -curves.png from pretrain / finetune"
grep -q '^[0-9]*,2,' "$OUT/demo/prg-curves.csv" && grep -q '^[0-9]*,0,' "$OUT/demo/pretrain-curves.csv"
check $? "demo: the curves' CSV lack the test top-1 (finetune) or the loss (pretrain)"

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

# 5. the probability path travels with the model: pretrain --loss L -> the
# checkpoint records it -> finetune takes that encoder -> evaluate reads it back
meta() { head -c 4096 "$1" | grep -a -q "\"$2\":\"$3\""; } # file key value: the checkpoint metadata says so
M=data/mnist/train-images-idx3-ubyte.gz; MT=data/mnist/t10k-images-idx3-ubyte.gz
for L in icfm ot gvp; do
    E=icfm; [ $L = gvp ] && E=gvp
    "$BIN/pretrain" --data $M $NET --loss $L --batch 8 --steps 2 --limit 32 --no-augment --out "$OUT/path_$L.st" \
        > "$OUT/path_$L.log" 2>&1
    check $? "pretrain --loss $L failed (see $OUT/path_$L.log)"
    meta "$OUT/path_$L.st" prg.loss $L && meta "$OUT/path_$L.st" prg.path $E
    check $? "pretrain --loss $L: the checkpoint does not record prg.loss $L / prg.path $E"
    "$BIN/finetune" --init "$OUT/path_$L.st" --data $M --batch 8 --steps 2 --t-span 3 --limit 32 --no-augment \
        --out "$OUT/pf_$L" > "$OUT/pf_$L.log" 2>&1
    check $? "finetune on the $L checkpoint failed (see $OUT/pf_$L.log)"
    grep -q "$E encoder, t_span 3, t_cutoff 0: 2 Euler steps.*(path from checkpoint)" "$OUT/pf_$L.log"
    check $? "finetune on the $L checkpoint: the log does not say the $E encoder from the checkpoint"
    meta "$OUT/pf_$L-last.safetensors" prg.path $E && meta "$OUT/pf_$L-last.safetensors" prg.loss $L
    check $? "finetune on the $L checkpoint: the classifier does not record prg.path $E / prg.loss $L"
    "$BIN/evaluate" --model "$OUT/pf_$L-last.safetensors" --data $MT --limit 16 > "$OUT/pe_$L.log" 2>&1 &&
    grep -q "$E encoder, t_span 3, t_cutoff 0: 2 Euler steps.*(path from checkpoint)" "$OUT/pe_$L.log"
    check $? "evaluate does not read the $E path back from the $L classifier (see $OUT/pe_$L.log)"
done
"$BIN/finetune" --init "$OUT/path_gvp.st" --path icfm --data $M --batch 8 --steps 1 --t-span 3 --limit 8 --no-augment \
    --out "$OUT/pf_over" > "$OUT/pf_over.log" 2> "$OUT/pf_over.err" &&
grep -q "warning: --path icfm overrides the gvp path" "$OUT/pf_over.err" &&
grep -q "icfm encoder.*(path from --path, overriding the checkpoint)" "$OUT/pf_over.log"
check $? "finetune --path icfm on a GVP checkpoint: no override with a warning"
cp "$OUT/path_gvp.st" "$OUT/path_res.st"
"$BIN/pretrain" --data $M $NET --loss icfm --batch 8 --steps 4 --limit 32 --no-augment --resume --out "$OUT/path_res.st" \
    > "$OUT/path_res.log" 2>&1
[ $? -ne 0 ] && grep -qE "trained with the gvp loss|loss: gvp in the checkpoint, icfm now" "$OUT/path_res.log" && cmp -s "$OUT/path_gvp.st" "$OUT/path_res.st"
check $? "pretrain --resume with another --loss was not refused (or changed the checkpoint)"

# 6. a GVP model sampled in its own direction (t = 1 -> 0) draws digits: most
# pixels background, some bright; integrated the ICFM way it does not
grid_stats() { # sample grid .pgm (32x32 tiles, 2-pixel borders): "near-black bright" fractions inside the tiles
    local w hdr
    w=$(sed -n 2p "$1" | cut -d' ' -f1); hdr=$(head -n 3 "$1" | wc -c)
    tail -c +$((hdr + 1)) "$1" | od -An -tu1 -v | awk -v w="$w" '{ for (i = 1; i <= NF; i++) { x = n % w; y = int(n / w); n++;
        if (x % 34 >= 2 && y % 34 >= 2) { t++; if ($i < 26) b++; if ($i > 128) h++ } } } END { printf "%.4f %.4f\n", b / t, h / t }'
}
"$BIN/pretrain" --data $M $NET --loss gvp --batch 16 --steps 40 --lr 3e-3 --limit 2000 --no-augment --no-flip \
    --out "$OUT/digits.st" > "$OUT/digits.log" 2>&1 &&
"$BIN/sample" --model "$OUT/digits.st" --n 16 --steps 10 --out "$OUT/digits.pgm" >> "$OUT/digits.log" 2>&1 &&
"$BIN/sample" --model "$OUT/digits.st" --n 16 --steps 10 --path icfm --out "$OUT/digits_icfm.pgm" >> "$OUT/digits.log" 2>&1
check $? "GVP pretrain / sample failed (see $OUT/digits.log)"
grep -q "gvp path from checkpoint: t 1 -> 0" "$OUT/digits.log"; check $? "sample: no GVP direction in the log"
read -r dark bright < <(grid_stats "$OUT/digits.pgm")
read -r dark2 _ < <(grid_stats "$OUT/digits_icfm.pgm")
echo "GVP samples: near-black $dark, bright $bright; integrated t = 0 -> 1: near-black $dark2" >> "$OUT/digits.log"
awk -v d="$dark" -v b="$bright" 'BEGIN { exit !(d > 0.65 && b > 0.02 && b < 0.4) }'
check $? "GVP samples are not digit-like: near-black fraction $dark (want > 0.65), bright $bright (want 0.02..0.4)"
awk -v d="$dark2" 'BEGIN { exit !(d < 0.6) }'
check $? "GVP model integrated t = 0 -> 1 looks digit-like too ($dark2): the statistic cannot tell"

# 7. representation probes on the demo's U-Net: two cutoffs, both probes each
"$BIN/probe" --model "$OUT/demo/pretrain.safetensors" --data data/mnist/train-images-idx3-ubyte.gz \
    --test data/mnist/t10k-images-idx3-ubyte.gz --t-span 4 --t-cutoff 0,3 --limit 100 --test-limit 50 \
    --epochs 20 --csv "$OUT/probe.csv" --chart "$OUT/probe.png" > "$OUT/probe.log" 2>&1
check $? "probe failed (see $OUT/probe.log)"
png_ok "$OUT/probe.png"; check $? "probe: --chart wrote no PNG"
[ "$(grep -c 'knn top-1 [0-9.]*%' "$OUT/probe.log")" -eq 2 ] && [ "$(grep -c 'linear top-1 [0-9.]*%' "$OUT/probe.log")" -eq 2 ]
check $? "probe: not one knn and one linear top-1 line per cutoff"
[ "$(wc -l < "$OUT/probe.csv")" -eq 3 ]; check $? "probe: the CSV does not have a row per cutoff"
# the input itself (t_cutoff 3 = t_span - 1) with 100 MNIST images: far above chance
awk -F, '$1 == 3 { exit !($3 > 0.4 && $4 > 0.4) }' "$OUT/probe.csv"; check $? "probe: pixel kNN / linear top-1 not above 40%"
"$BIN/probe" --model "$OUT/demo/pretrain.safetensors" --data data/mnist/train-images-idx3-ubyte.gz \
    --test data/mnist/t10k-images-idx3-ubyte.gz --t-span 4 --t-cutoff 4 > /dev/null 2>&1
[ $? -eq 2 ]; check $? "probe: --t-cutoff outside the grid not refused"

echo "test_pipeline: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
