#!/usr/bin/env bash
# Red-team cases of the example programs: careless flags, outputs that
# cannot be written, runs that would destroy a trained checkpoint, empty or
# degenerate data, signals, misleading messages.  Each case states the
# outcome it requires: the exit code, a message naming the flag or file,
# the existing checkpoint unchanged (checksum before/after), and for the
# --batch clamp a bound on peak memory.  Tiny data and a tiny U-Net: a few
# seconds in all.  Prints "test_programs_hostile: N passed, N failed".
cd "$(dirname "$0")/.." || exit 1
BIN=${BUILD:-build}; OUT=$BIN/test_programs_hostile
rm -rf "$OUT"; mkdir -p "$OUT"
passed=0; failed=0
export PRG_NUM_THREADS=2
fail() { failed=$((failed + 1)); echo "FAIL test_programs_hostile: $*"; }
ok() { passed=$((passed + 1)); }
# expect NAME WANT PATTERN CMD...: runs CMD (output in $OUT/NAME.log); WANT is
# an exit code or "nz" (any failure that is not a crash: 1..125); PATTERN
# (grep -E) must appear in the output ("" = no check).
expect() {
    local name=$1 want=$2 pat=$3 rc
    shift 3
    "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    if [ "$want" = nz ]; then
        if [ $rc -lt 1 ] || [ $rc -gt 125 ]; then fail "$name: exit $rc, wanted a clean failure ($(tail -n 1 "$OUT/$name.log"))"; return; fi
    elif [ $rc -ne "$want" ]; then fail "$name: exit $rc, wanted $want ($(tail -n 1 "$OUT/$name.log"))"; return; fi
    if [ -n "$pat" ] && ! grep -qE -- "$pat" "$OUT/$name.log"; then fail "$name: no /$pat/ in: $(head -c 300 "$OUT/$name.log")"; return; fi
    ok
}
sum() { cksum < "$1" 2>/dev/null; }
same() { # NAME FILE CHECKSUM: the file is unchanged
    if [ "$(sum "$2")" = "$3" ]; then ok; else fail "$1: $2 was changed"; fi
}

"$BIN/make_tiny_dataset" cifar10 "$OUT" 16 16 > /dev/null || { echo "test_programs_hostile: cannot make data"; exit 1; }
mkdir -p "$OUT/empty"
"$BIN/make_tiny_dataset" imagenet64 "$OUT/empty" 0 0 32 > /dev/null
D=$OUT/data_batch_1.bin; T=$OUT/test_batch.bin; E=$OUT/empty/val_data.npz
NET="--model-channels 16 --groups 8 --res-blocks 1 --channel-mult 1,2 --attention-ds none --heads 1"
P="--data $D $NET --batch 8 --lr 1e-3 --quiet"
CK=$OUT/p.st
"$BIN/pretrain" $P --steps 4 --out "$CK" > /dev/null 2>&1 || fail "the reference pretraining run failed"
C0=$(sum "$CK")
F="--init $CK --data $D $NET --batch 8 --t-span 3 --lr 1e-3 --quiet"
"$BIN/finetune" $F --steps 4 --out "$OUT/f" > /dev/null 2>&1 || fail "the reference fine-tuning run failed"
FL=$OUT/f-last.safetensors; F0=$(sum "$FL")

# 1. flags: 64-bit, ranged, whole; the flag is named
expect batch_wrap nz "--batch" "$BIN/pretrain" $P --steps 1 --batch 4294967297 --out "$CK"
expect steps_neg nz "--steps" "$BIN/pretrain" $P --steps -1 --out "$CK"
expect steps_2g nz "--steps" "$BIN/pretrain" $P --steps 2147483648 --out "$CK"
expect lr_neg nz "--lr.*\(0, 1\]" "$BIN/pretrain" $P --steps 1 --lr -5 --out "$CK"
expect lr_nan nz "--lr" "$BIN/pretrain" $P --steps 1 --lr nan --out "$CK"
expect batch_garbage nz "--batch '8x'" "$BIN/pretrain" $P --steps 1 --batch 8x --out "$CK"
expect chan_list nz "--channel-mult '1,2,x'" "$BIN/pretrain" $P --steps 1 --channel-mult 1,2,x --out "$CK"
expect chan_empty nz "--channel-mult" "$BIN/pretrain" $P --steps 1 --channel-mult 1,,2 --out "$CK"
expect unknown nz "unknown argument '--bacth'" "$BIN/pretrain" $P --bacth 8 --out "$CK"
expect seed_neg nz "--seed" "$BIN/pretrain" $P --steps 1 --seed -1 --out "$CK"
expect seed_big nz "--seed" "$BIN/pretrain" $P --steps 1 --seed 18446744073709551616 --out "$CK"
same flags "$CK" "$C0"
expect smoothing nz "--label-smoothing.*\[0, 1\]" "$BIN/finetune" $F --steps 4 --label-smoothing -1 --out "$OUT/f"
expect epochs0 nz "--epochs" "$BIN/finetune" $F --epochs 0 --out "$OUT/f"
expect ft_steps nz "--steps" "$BIN/finetune" $F --steps 2147483648 --out "$OUT/f"
expect cutoff 2 "--t-cutoff 3 does not fit t_span 3 on the icfm path" "$BIN/finetune" $F --steps 4 --t-cutoff 3 --out "$OUT/f"
expect cutoff_default nz "--t-cutoff 40 needs --t-span.*the default" "$BIN/finetune" --init "$CK" --data "$D" --steps 1 --t-cutoff 40 --out "$OUT/f"
same finetune_flags "$FL" "$F0"
# a GVP checkpoint: its own rule (t_cutoff 0 or 2..t_span, K - 1 steps), not ICFM's
G=$OUT/gvp.st
"$BIN/pretrain" $P --steps 1 --loss gvp --out "$G" > /dev/null 2>&1 || fail "the GVP pretraining run failed"
GF="--init $G --data $D $NET --batch 8 --steps 1 --lr 1e-3 --quiet --force"
expect gvp_cut_span 0 "" "$BIN/finetune" $GF --t-span 3 --t-cutoff 3 --out "$OUT/g"
expect gvp_cut1 2 "--t-cutoff 1 does not fit t_span 3 on the gvp path" "$BIN/finetune" $GF --t-span 3 --t-cutoff 1 --out "$OUT/g1"
expect gvp_cut_past 2 "--t-cutoff 4 needs --t-span" "$BIN/finetune" $GF --t-span 3 --t-cutoff 4 --out "$OUT/g1"
[ ! -e "$OUT/g1-last.safetensors" ] && ok || fail "a refused GVP grid saved a classifier"
expect gvp_eval_cut 0 "gvp encoder, t_span 3, t_cutoff 2: 1 Euler steps" "$BIN/evaluate" --model "$OUT/g-last.safetensors" --data "$T" --t-cutoff 2
expect gvp_eval_cut1 2 "--t-cutoff 1 with the checkpoint's t_span 3.*GVP" "$BIN/evaluate" --model "$OUT/g-last.safetensors" --data "$T" --t-cutoff 1
expect gvp_eval_span 2 "--t-span 2 with the checkpoint's t_cutoff 3" "$BIN/evaluate" --model "$OUT/g-last.safetensors" --data "$T" --t-span 2
expect size nz "--size '64abc'" "$BIN/prepare" --root "$OUT" --out "$OUT/x.npz" --size 64abc
mkdir -p "$OUT/tree/train/a" "$OUT/tree/train/b"; printf 'a\nb\na\n' > "$OUT/classes.txt"
expect dup_class nz "class 'a' is listed twice" "$BIN/prepare" --root "$OUT/tree" --out "$OUT/x.npz" --classes "$OUT/classes.txt"
expect sample_n nz "--n" "$BIN/sample" --model "$CK" --n 4294967297 --out "$OUT/s.png"
expect sample_mean nz "--mean" "$BIN/sample" --model "$CK" --n 2 --mean 0.5,x --out "$OUT/s.png"
expect eval_batch nz "--batch" "$BIN/evaluate" --model "$FL" --data "$T" --batch 0
expect tiny_count nz "N_TRAIN '5x'" "$BIN/make_tiny_dataset" cifar10 "$OUT/empty" 5x 3
# seeds are full 64-bit: 2^32 is not seed 0
"$BIN/pretrain" $P --steps 1 --seed 0 --out "$OUT/s0.st" > /dev/null 2>&1 &&
"$BIN/pretrain" $P --steps 1 --seed 4294967296 --out "$OUT/s32.st" > /dev/null 2>&1 &&
! cmp -s "$OUT/s0.st" "$OUT/s32.st" && ok || fail "seed 4294967296 trains as seed 0 (or a run failed)"
# --t-cutoff alone in evaluate keeps the checkpoint's t_span (3) and is used
expect eval_cutoff 0 "t_span 3, t_cutoff 1" "$BIN/evaluate" --model "$FL" --data "$T" --t-cutoff 1
expect eval_cutoff_bad 2 "--t-cutoff 2 with the checkpoint's t_span 3" "$BIN/evaluate" --model "$FL" --data "$T" --t-cutoff 2

# 2. outputs checked before any training (a run of 10^6 steps would not end)
L="$BIN/pretrain $P --steps 1000000"
expect out_nodir 2 "--out: $OUT/nodir/p.st: the directory .* does not exist" timeout 60 $L --out "$OUT/nodir/p.st"
expect out_dir 2 "is a directory" timeout 60 $L --out "$OUT"
expect out_empty 2 "--out: output file name is empty" timeout 60 $L --out ""
expect out_readonly 2 "cannot create a file in /proc" timeout 60 $L --out /proc/prg_hostile.st
expect ft_out_nodir 2 "directory .* does not exist" timeout 60 "$BIN/finetune" $F --steps 1000000 --out "$OUT/nodir/f"
expect sample_out 2 "--out" timeout 60 "$BIN/sample" --model "$CK" --n 2 --out "$OUT/nodir/s.png"
expect eval_csv 2 "--csv" timeout 60 "$BIN/evaluate" --model "$FL" --data "$T" --csv "$OUT/nodir/c.csv"
expect csv_is_model 2 "--csv .* is the --model file" "$BIN/evaluate" --model "$FL" --data "$T" --csv "$FL"
expect sample_is_model 2 "--out .* is the --model file" "$BIN/sample" --model "$CK" --n 2 --out "$CK"
expect out_is_data 2 "not a training checkpoint" "$BIN/pretrain" $P --steps 1 --out "$D"
same csv_is_model "$FL" "$F0"
cp "$FL" "$OUT/base.st"; B0=$(sum "$OUT/base.st")
expect csv_is_baseline 2 "--csv .* is the --baseline file" "$BIN/evaluate" --model "$FL" --data "$T" --corruption brightness --baseline "$OUT/base.st" --csv "$OUT/base.st"
same csv_is_baseline "$OUT/base.st" "$B0"
same sample_is_model "$CK" "$C0"

# 3. nothing trained is lost
expect fewer_steps 2 "holds a model trained 4 steps" "$BIN/pretrain" $P --steps 2 --out "$CK"
same fewer_steps "$CK" "$C0"
expect ft_fewer 2 "holds a model trained 4 steps" "$BIN/finetune" $F --steps 2 --out "$OUT/f"
same ft_fewer "$FL" "$F0"
printf 'my notes\n' > "$OUT/notes.txt"; N0=$(sum "$OUT/notes.txt")
expect not_ckpt 2 "not a training checkpoint" "$BIN/pretrain" $P --steps 1 --out "$OUT/notes.txt"
same not_ckpt "$OUT/notes.txt" "$N0"
expect resume_changed 2 "batch: 8 in the checkpoint, 16 now" "$BIN/pretrain" $P --batch 16 --steps 6 --resume --out "$CK"
expect resume_seed 2 "seed: 0 in the checkpoint, 5 now" "$BIN/pretrain" $P --seed 5 --steps 6 --resume --out "$CK"
same resume_changed "$CK" "$C0"
# another data set of the same size (the test batch): refused like a changed flag
"$BIN/pretrain" $P --steps 4 --out "$OUT/d4.st" > /dev/null 2>&1 || fail "the data run failed"
expect resume_data 2 "data: [0-9a-f]+ in the checkpoint, [0-9a-f]+ now" "$BIN/pretrain" --data "$T" $NET --batch 8 --lr 1e-3 --quiet --steps 6 --resume --out "$OUT/d4.st"
expect resume_same_data 0 "" "$BIN/pretrain" $P --steps 6 --resume --out "$OUT/d4.st"
expect ft_resume_span 2 "t_span: 3 in the checkpoint, 5 now" "$BIN/finetune" $F --steps 6 --t-span 5 --resume --out "$OUT/f"
expect ft_resume_lr 2 "lr: 0.001 in the checkpoint" "$BIN/finetune" $F --steps 4 --lr 2e-3 --resume --out "$OUT/f"
same ft_resume "$FL" "$F0"
cp "$CK" "$OUT/o.st"
expect override 0 "changes:" "$BIN/pretrain" $P --batch 16 --steps 6 --resume --override --out "$OUT/o.st"
cp "$CK" "$OUT/force.st"
expect force 0 "" "$BIN/pretrain" $P --steps 2 --force --out "$OUT/force.st"
# the checkpoint's training step, rewritten in its metadata (the header keeps its length rule)
setstep() { # IN OUT STEP
    /usr/bin/python3 - "$@" << 'EOF'
import json, struct, sys
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
h['__metadata__']['prg.step'] = sys.argv[3]
s = json.dumps(h).encode(); s += b' ' * (-len(s) % 8)
open(sys.argv[2], 'wb').write(struct.pack('<Q', len(s)) + s + b[8 + n:])
EOF
}
if [ -x /usr/bin/python3 ]; then
    setstep "$CK" "$OUT/neg.st" -5 && setstep "$CK" "$OUT/huge.st" 999999999999 &&
    setstep "$FL" "$OUT/fneg-last.safetensors" -3 || fail "cannot rewrite a checkpoint's metadata"
    # refused by the program (step outside the run) or by the loader (bad prg.step): never a crash
    expect resume_neg nz "step -5|prg.step" "$BIN/pretrain" $P --steps 6 --resume --out "$OUT/neg.st"
    expect resume_huge nz "step 999999999999|prg.step" "$BIN/pretrain" $P --steps 6 --resume --out "$OUT/huge.st"
    expect ft_resume_neg nz "step -3|prg.step" "$BIN/finetune" $F --steps 4 --resume --out "$OUT/fneg"
fi

# a plain state_dict whose last convolution maps 3 channels to 1: no sampling
# (the grid would be drawn from a velocity of the wrong shape)
if [ -x /usr/bin/python3 ] && /usr/bin/python3 - "$CK" "$OUT/in3out1.st" << 'EOF'
import json, struct, sys
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n]); d = b[8 + n:]
out, blob = {}, bytearray()
for k, v in sorted(h.items(), key=lambda kv: kv[1]['data_offsets'][0] if kv[0] != '__metadata__' else -1):
    if k == '__metadata__' or k.startswith('optim.'): continue
    s, e = v['data_offsets']; t = d[s:e]
    if k in ('out.2.weight', 'out.2.bias'): v['shape'][0] = 1; t = t[:len(t) // 3]
    v['data_offsets'] = [len(blob), len(blob) + len(t)]; blob += t; out[k] = v
s = json.dumps(out).encode(); s += b' ' * (-len(s) % 8)
open(sys.argv[2], 'wb').write(struct.pack('<Q', len(s)) + s + bytes(blob))
EOF
then
    expect sample_in_out 1 "maps 3 channels to 1" "$BIN/sample" --model "$OUT/in3out1.st" $NET --n 2 --steps 1 --out "$OUT/s31.png"
    [ ! -e "$OUT/s31.png" ] && ok || fail "sample drew a grid from a 3 -> 1 channel U-Net"
fi

# probe: its outputs are checked first and are never an input; the grid of a hostile file is bounded
PB="--data $D --test $T --t-span 3 --quiet"
expect probe_csv_model 2 "--csv .* is the --model file" "$BIN/probe" --model "$CK" $PB --csv "$CK"
expect probe_chart_data 2 "--chart .* is the --data file" "$BIN/probe" --model "$CK" $PB --chart "$D"
expect probe_csv_nodir 2 "--csv: $OUT/nodir/p.csv: the directory .* does not exist" "$BIN/probe" --model "$CK" $PB --csv "$OUT/nodir/p.csv"
same probe_csv_model "$CK" "$C0"
if [ -x /usr/bin/python3 ]; then
    /usr/bin/python3 - "$FL" "$OUT/span-last.safetensors" << 'EOF'
import json, struct, sys
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
h['__metadata__']['prg.t_span'] = '100000'
s = json.dumps(h).encode(); s += b' ' * (-len(s) % 8)
open(sys.argv[2], 'wb').write(struct.pack('<Q', len(s)) + s + b[8 + n:])
EOF
    expect probe_span_meta 1 "prg.t_span = 100000 is outside 2..1024" timeout 60 "$BIN/probe" --model "$OUT/span-last.safetensors" --data "$D" --test "$T" --quiet
fi

# 4. signals: the checkpoint is written, the exit code is the shell's (130, 143)
for sig in INT TERM; do
    "$BIN/pretrain" --data "$D" $NET --batch 8 --log-every 1 --steps 1000000 --out "$OUT/sig$sig.st" > "$OUT/sig$sig.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 200); do grep -q "^step 1/" "$OUT/sig$sig.log" 2>/dev/null && break; sleep 0.05; done
    kill -s $sig $pid; wait $pid; rc=$?
    want=$([ $sig = INT ] && echo 130 || echo 143)
    [ $rc -eq $want ] && ok || fail "SIG$sig: exit $rc, wanted $want"
    grep -q "interrupted: saved" "$OUT/sig$sig.log" && [ -s "$OUT/sig$sig.st" ] && ok || fail "SIG$sig: no checkpoint saved"
done
# a fresh run of more steps may replace a shorter checkpoint, but stopped
# before it has trained as many steps (--stop-after stops as Ctrl-C does) it does not
cp "$CK" "$OUT/long.st"
expect stopped_short 0 "stopped at step 2: not saved, .*long.st holds a run of 4 steps" "$BIN/pretrain" $P --steps 100 --stop-after 2 --out "$OUT/long.st"
same stopped_short "$OUT/long.st" "$C0"

# 5. empty and degenerate data
expect ft_empty 1 "holds no images" "$BIN/finetune" --init "$CK" --data "$E" --steps 2 --out "$OUT/fe"
expect ft_empty_test 1 "holds no images" "$BIN/finetune" $F --steps 2 --test "$E" --out "$OUT/fe"
expect pre_empty 1 "holds no images" "$BIN/pretrain" --data "$E" $NET --steps 2 --out "$OUT/pe.st"
expect eval_empty 1 "holds no images" "$BIN/evaluate" --model "$FL" --data "$E"
[ ! -e "$OUT/fe-last.safetensors" ] && ok || fail "finetune on an empty set saved a classifier"
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c "
import numpy as np
np.savez('$OUT/onecls.npz', data=np.zeros((4, 3, 32, 32), np.uint8), labels=np.zeros(4, np.int64))
np.savez('$OUT/biglabel.npz', data=np.zeros((4, 3, 32, 32), np.uint8), labels=np.array([0, 1, 999999, 0], np.int64))" 2> /dev/null; then
    expect ft_one_class 1 "has 1 class .*needs 2 or more" "$BIN/finetune" $F --data "$OUT/onecls.npz" --steps 1 --out "$OUT/f1c"
    expect label_limit 1 "label 999999 at index 2 is out of range 0..32767" "$BIN/finetune" $F --data "$OUT/biglabel.npz" --steps 1 --out "$OUT/f1c"
    [ ! -e "$OUT/f1c-last.safetensors" ] && ok || fail "a one-class or bad-label set saved a classifier"
fi
# --batch 50000 on 16 images: clamped, and the buffers say so in memory too
if [ -x /usr/bin/time ]; then
    /usr/bin/time -f "maxrss %M" "$BIN/pretrain" --data "$D" $NET --batch 50000 --steps 1 --out "$OUT/big.st" > "$OUT/big.log" 2>&1
    rc=$?; kb=$(awk '/^maxrss/ { print $2 }' "$OUT/big.log")
    [ $rc -eq 0 ] && grep -q "clamped to the dataset's 16 images" "$OUT/big.log" && ok || fail "--batch 50000: not clamped (exit $rc)"
    [ -n "$kb" ] && [ "$kb" -lt 400000 ] && ok || fail "--batch 50000 on 16 images: peak RSS ${kb:-?} KB (bound 400000)"
else
    (ulimit -v 1500000; "$BIN/pretrain" --data "$D" $NET --batch 50000 --steps 1 --out "$OUT/big.st") > "$OUT/big.log" 2>&1
    grep -q "clamped to the dataset's 16 images" "$OUT/big.log" && ok || fail "--batch 50000: not clamped within 1.5 GB of address space"
fi

# 6. messages say what is wrong, and name a path once
mkdir -p "$OUT/noimages"; : > "$OUT/noimages/readme.txt"
expect classify_dir 2 "no image files under $OUT/noimages" "$BIN/classify" --model "$FL" "$OUT/noimages"
expect data_dir 1 "--data $OUT: is a directory" "$BIN/pretrain" --data "$OUT" $NET --steps 1 --out "$OUT/d.st"
expect ood_dir 1 "--ood $OUT: is a directory" "$BIN/evaluate" --model "$FL" --data "$T" --ood "$OUT"
expect data_missing 1 "No such file" "$BIN/evaluate" --model "$FL" --data "$OUT/none.bin"
printf 'this is not a checkpoint, only text\n' > "$OUT/garbage.st"
expect garbage 1 "garbage.st" "$BIN/finetune" --init "$OUT/garbage.st" --data "$D" --steps 1 --out "$OUT/g"
[ "$(grep -o "garbage.st" "$OUT/garbage.log" | wc -l)" -eq 1 ] && ok || fail "the path is printed $(grep -o "garbage.st" "$OUT/garbage.log" | wc -l) times: $(cat "$OUT/garbage.log")"
# a 1000000x2 image: classify's buffers follow the model's size, not the aspect ratio
# (resizing the shorter side to 32 first would take 512 MB)
if [ -x /usr/bin/time ] && /usr/bin/python3 -c "from PIL import Image; Image.new('RGB', (1000000, 2), (90, 20, 200)).save('$OUT/wide.png')" 2> /dev/null; then
    /usr/bin/time -f "maxrss %M" "$BIN/classify" --model "$FL" "$OUT/wide.png" > "$OUT/wide.log" 2>&1
    rc=$?; kb=$(awk '/^maxrss/ { print $2 }' "$OUT/wide.log")
    [ $rc -eq 0 ] && [ -n "$kb" ] && [ "$kb" -lt 150000 ] && ok || fail "classify 1000000x2: exit $rc, peak RSS ${kb:-?} KB (bound 150000)"
fi
# text outputs replace a symlink planted at their path, never the file it points to
printf 'precious\n' > "$OUT/victim.txt"; V0=$(sum "$OUT/victim.txt")
ln -sf victim.txt "$OUT/ev.csv"
expect csv_symlink 0 "confusion matrix" "$BIN/evaluate" --model "$FL" --data "$T" --csv "$OUT/ev.csv" --quiet
same csv_symlink "$OUT/victim.txt" "$V0"
[ -f "$OUT/ev.csv" ] && [ ! -L "$OUT/ev.csv" ] && grep -q "true.pred" "$OUT/ev.csv" && ok || fail "evaluate --csv over a symlink"
mkdir -p "$OUT/ptree/a" "$OUT/ptree/b"
cp "$OUT/wide.png" "$OUT/ptree/a/1.png" 2> /dev/null || "$BIN/sample" --model "$CK" --n 1 --steps 1 --out "$OUT/ptree/a/1.png" > /dev/null 2>&1
cp "$OUT/ptree/a/1.png" "$OUT/ptree/b/1.png"; printf 'not an image' > "$OUT/ptree/b/2.png"
ln -sf victim.txt "$OUT/pp_classes.txt"
expect prep_symlink 0 "1 skipped" "$BIN/prepare" --root "$OUT/ptree" --out "$OUT/pp" --size 8
same prep_symlink "$OUT/victim.txt" "$V0"
[ ! -L "$OUT/pp_classes.txt" ] && [ "$(cat "$OUT/pp_classes.txt")" = "$(printf 'a\nb')" ] && ok || fail "prepare's class list over a symlink"
# --quiet: only what went wrong (the skipped file and the summary naming it)
expect prep_quiet 0 "skipped" "$BIN/prepare" --root "$OUT/ptree" --out "$OUT/pq" --size 8 --quiet --strict --val-fraction 0.5
[ "$(wc -l < "$OUT/prep_quiet.log")" -eq 2 ] && ok || fail "prepare --quiet printed $(wc -l < "$OUT/prep_quiet.log") lines"
[ -s "$OUT/pq.npz" ] && [ -s "$OUT/pq-val.npz" ] && ok || fail "prepare --strict --val-fraction wrote no train/val pair"
expect prep_out_empty 2 "--out '': wants a file name prefix" "$BIN/prepare" --root "$OUT/ptree" --out ""
expect prep_out_slash 2 "wants a file name prefix" "$BIN/prepare" --root "$OUT/ptree" --out "$OUT/"
expect ft_out_empty 2 "--out '': wants a file name prefix" "$BIN/finetune" $F --steps 1 --out ""
[ ! -e "$OUT/.npz" ] && [ ! -e "-last.safetensors" ] && ok || fail "an empty --out prefix wrote hidden files"
mkdir -p "$OUT/pv-val.npz"
expect prep_val_dir 2 "pv-val.npz: is a directory" "$BIN/prepare" --root "$OUT/ptree" --out "$OUT/pv" --val-fraction 0.5
# a tree with a fifo, a device, a dangling link and symlinks to a parent: no hang, no endless walk
mkdir -p "$OUT/loop/a" "$OUT/loop/b"; cp "$OUT/ptree/a/1.png" "$OUT/loop/a/"; cp "$OUT/ptree/a/1.png" "$OUT/loop/b/"
mkfifo "$OUT/loop/a/fifo.png"; ln -s /dev/zero "$OUT/loop/b/zero.png"; ln -s none.png "$OUT/loop/b/gone.png"
ln -s .. "$OUT/loop/a/up"; ln -s ../b "$OUT/loop/b/self"
expect prep_loop 0 "ignored .*fifo.png: not a regular file" timeout 30 "$BIN/prepare" --root "$OUT/loop" --out "$OUT/lp" --size 8
grep -q "not entered: .*loop/a/up" "$OUT/prep_loop.log" && grep -q "wrote .*lp.npz (2 images" "$OUT/prep_loop.log" && ok ||
    fail "prepare walked a symlink loop or lost the two images: $(tail -n 2 "$OUT/prep_loop.log")"
expect classify_loop 1 "skipped .*zero.png: not a regular file" timeout 30 "$BIN/classify" --model "$FL" --quiet --top 1 "$OUT/loop"
[ "$(grep -c "^$OUT/loop/.*1.png" "$OUT/classify_loop.log")" -eq 2 ] && ok || fail "classify of a looping tree: $(grep -c png "$OUT/classify_loop.log") lines"
# --labels: a line past the reader's buffer stays one name (the next classes keep theirs); a short list is said
{ head -c 1500 /dev/zero | tr '\0' a; echo; for i in 1 2 3 4 5 6 7 8 9; do echo "c$i"; done; } > "$OUT/labels_long.txt"
expect labels_long 0 "" "$BIN/classify" --model "$FL" --quiet --top 10 --csv --labels "$OUT/labels_long.txt" "$OUT/loop/a/1.png"
grep -qE ',[0-9]+,9,c9,' "$OUT/labels_long.log" && grep -qE ',[0-9]+,1,c1,' "$OUT/labels_long.log" && ok || fail "a long --labels line shifted the class names"
printf 'x\ny\n' > "$OUT/labels_few.txt"
expect labels_few 0 "has fewer names than the model's 10 classes" "$BIN/classify" --model "$FL" --quiet --labels "$OUT/labels_few.txt" "$OUT/loop/a/1.png"
mkdir -p "$OUT/nltree/a" "$OUT/nltree/b
c"; cp "$OUT/loop/a/1.png" "$OUT/nltree/a/"; cp "$OUT/loop/a/1.png" "$OUT/nltree/b
c/"
expect prep_newline 1 "class directory name with a line break" "$BIN/prepare" --root "$OUT/nltree" --out "$OUT/nl" --size 8
# list files are read whole: a NUL byte is refused, not a name cut short; class names are directories under the root
printf 'x\ny\0z\n' > "$OUT/labels_nul.txt"
expect labels_nul 1 "labels_nul.txt: a NUL byte at byte 3 \\(line 2\\)" "$BIN/classify" --model "$FL" --quiet --labels "$OUT/labels_nul.txt" "$OUT/loop/a/1.png"
printf 'a\n../loop\n' > "$OUT/classes_up.txt"
expect prep_class_up 1 "line 2, '../loop', is not a directory name" "$BIN/prepare" --root "$OUT/ptree" --out "$OUT/cu" --size 8 --classes "$OUT/classes_up.txt"
printf 'a\n.\n' > "$OUT/classes_dot.txt"
expect prep_class_dot 1 "line 2, '.', is not a directory name" "$BIN/prepare" --root "$OUT/ptree" --out "$OUT/cu" --size 8 --classes "$OUT/classes_dot.txt"
printf 'a # the first\nb\n' > "$OUT/cm_classes.txt"; M0=$(sum "$OUT/cm_classes.txt")
expect prep_out_is_list 2 "--out .*cm_classes.txt is the --classes file" "$BIN/prepare" --root "$OUT/ptree" --out "$OUT/cm" --size 8 --classes "$OUT/cm_classes.txt"
same prep_out_is_list "$OUT/cm_classes.txt" "$M0"
# a flat ImageNet val/ whose label list says '1x': a whole number or a class name, not atoi's 1
mkdir -p "$OUT/inet/train/n01" "$OUT/inet/train/n02" "$OUT/inet/val"
for d in train/n01 train/n02 val; do cp "$OUT/loop/a/1.png" "$OUT/inet/$d/1.png"; done; cp "$OUT/loop/a/1.png" "$OUT/inet/val/2.png"
printf '1.png 1x\n2.png n02\n' > "$OUT/vl_bad.txt"; printf '1.png 1\n2.png n02\n' > "$OUT/vl_ok.txt"
expect prep_val_label 1 "no valid label for val/1.png" "$BIN/prepare" --root "$OUT/inet" --split val --out "$OUT/iv" --size 8 --val-labels "$OUT/vl_bad.txt"
expect prep_val_ok 0 "wrote .*iv.npz \\(2 images" "$BIN/prepare" --root "$OUT/inet" --split val --out "$OUT/iv" --size 8 --val-labels "$OUT/vl_ok.txt"
# --json is valid JSON whatever the bytes of a file or class name (invalid UTF-8 given as U+FFFD)
if [ -x /usr/bin/python3 ]; then
    bad=$(printf "$OUT/bad\377\300name.png"); cp "$OUT/loop/a/1.png" "$bad"
    printf 'caf\303\251\n\377\376\nq"uo\\te\n' > "$OUT/labels_utf8.txt"
    "$BIN/classify" --model "$FL" --json --top 10 --labels "$OUT/labels_utf8.txt" "$bad" "$OUT/loop/a/1.png" > "$OUT/json.out" 2> /dev/null
    /usr/bin/python3 -c "
import json, sys
d = json.loads(open(sys.argv[1], 'rb').read().decode('utf-8'))   # strict: invalid UTF-8 or JSON raises
assert d[0]['file'].endswith('bad\ufffd\ufffdname.png'), d[0]['file']
names = {t['name'] for t in d[0]['top']}
assert {'caf\u00e9', '\ufffd\ufffd', 'q\"uo\\\\te'} <= names, names
" "$OUT/json.out" && ok || fail "classify --json with non-UTF-8 names: $(head -c 300 "$OUT/json.out")"
    # a head whose finite weights overflow the logits: predict refuses them, and --json still closes its array
    /usr/bin/python3 -c "
import json, struct, sys
b = bytearray(open(sys.argv[1], 'rb').read()); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
lo, hi = h['head.fc2.weight']['data_offsets']
for i, o in enumerate(range(8 + n + lo, 8 + n + hi, 4)): b[o:o + 4] = struct.pack('<f', 3e38 if i & 1 else -3e38)
open(sys.argv[2], 'wb').write(b)" "$FL" "$OUT/hugehead.st"
    "$BIN/classify" --model "$OUT/hugehead.st" --json "$OUT/loop/a/1.png" > "$OUT/hugehead.out" 2> "$OUT/hugehead.err"
    rc=$?
    [ $rc -eq 1 ] && grep -q "classifier logits" "$OUT/hugehead.err" && /usr/bin/python3 -c "
import json, sys; assert json.load(open(sys.argv[1])) == []" "$OUT/hugehead.out" && ok ||
        fail "classify --json on a model of overflowing logits: exit $rc, $(head -c 200 "$OUT/hugehead.err"), stdout $(head -c 100 "$OUT/hugehead.out")"
fi
# decoding + fitting one image costs the decoded image, not its conversions: an 8192x8192 and a 2^26 x 1 grey PNG
# for a 3-channel model (each 64 MB decoded: 75 MB peak, 103 MB under ASan; converting to RGB first took 271 MB)
if [ -x /usr/bin/time ] && /usr/bin/python3 -c "
from PIL import Image
Image.new('L', (8192, 8192), 90).save('$OUT/sq.png'); Image.new('L', (1 << 26, 1), 90).save('$OUT/line.png')" 2> /dev/null; then
    for im in sq line; do
        /usr/bin/time -f "maxrss %M" "$BIN/classify" --model "$FL" --quiet --top 1 "$OUT/$im.png" > "$OUT/$im.log" 2>&1
        rc=$?; kb=$(awk '/^maxrss/ { print $2 }' "$OUT/$im.log")
        [ $rc -eq 0 ] && [ -n "$kb" ] && [ "$kb" -lt 140000 ] && ok || fail "classify $im.png: exit $rc, peak RSS ${kb:-?} KB (bound 140000)"
    done
    rm -f "$OUT/sq.png" "$OUT/line.png"
fi
expect quiet 0 "" "$BIN/evaluate" --model "$FL" --data "$T" --quiet
[ "$(wc -l < "$OUT/quiet.log")" -eq 1 ] && ok || fail "evaluate --quiet printed $(wc -l < "$OUT/quiet.log") lines"

echo "test_programs_hostile: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
