#!/usr/bin/env bash
# Peak memory, prg.h beside PyTorch CPU (Debian's python3-torch, when
# installed), 2 threads: a flow-matching training step at batch B
# (bench_unet), a PRG fine-tuning step at batch B through M Euler steps in
# both modes, recompute and kept (bench_finetune), and inference of one
# image (the encoder through T_SPAN grid points, bench_encode; PyTorch under
# torch.inference_mode()).  Every number is the peak resident set (getrusage
# ru_maxrss, MiB) of a process that did only that, after two iterations
# (PyTorch's grads and Adam state are then allocated); `torch base` is the
# RSS of a process that imported torch and built the model, nothing more.
#   tools/bench_memory.sh [build-dir] [preset:batch ...]
#   (default: tiny32:8 small32:8 cifar32:4; M = STEPS, default 8; T_SPAN 8)
set -e
b=${1:-build}
shift || true
cases=${*:-tiny32:8 small32:8 cifar32:4}
here=$(dirname "$0")
m=${STEPS:-8}
ts=${T_SPAN:-8}
have_torch=0
/usr/bin/python3 -c "import torch" 2> /dev/null && have_torch=1
printf '%-10s %5s | %10s %10s | %13s %10s %10s | %10s %10s | %10s\n' preset batch "train prg" "torch" \
    "ft recompute" "ft kept" "torch" "infer prg" "torch" "torch base"
for c in $cases; do
    p=${c%:*}; n=${c#*:}
    read -r _ _ _ _ _ tr <<< "$("$b/bench_unet" --preset "$p" --batch "$n" --threads 2 --reps 1)"
    read -r _ _ _ _ fr _ <<< "$("$b/bench_finetune" --preset "$p" --batch "$n" --steps "$m" --threads 2 --reps 1 --keep-mb 0)"
    read -r _ _ _ _ fk _ kept <<< "$("$b/bench_finetune" --preset "$p" --batch "$n" --steps "$m" --threads 2 --reps 1 \
        | sed -n 2p)"
    read -r _ _ _ _ _ ir <<< "$("$b/bench_encode" --preset "$p" --batch 1 --t-span "$ts" --threads 2 --reps 1)"
    if [ $have_torch = 1 ]; then
        read -r _ _ _ _ ttr <<< "$(/usr/bin/python3 "$here/bench_unet.py" "$p" "$n" 2 1 | awk '{ print $1, $2, $3, $4, $6 }')"
        read -r _ _ _ _ tfr <<< "$(/usr/bin/python3 "$here/bench_finetune.py" "$p" "$n" "$m" 2 1)"
        read -r _ _ _ _ _ tir <<< "$(/usr/bin/python3 "$here/bench_encode.py" "$p" 1 2 1 "$ts")"
        base=$(/usr/bin/python3 -c "
import os, resource, sys; sys.path.insert(0, '$here'); import ref_unet
ref_unet.UNet(**ref_unet.PRESETS['$p'])
print('%.0f' % (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0))")
    else
        ttr=-; tfr=-; tir=-; base=-
    fi
    printf '%-10s %5s | %10s %10s | %13s %10s %10s | %10s %10s | %10s\n' "$p" "$n" "$tr" "$ttr" "$fr" \
        "$fk (${kept#kept=})" "$tfr" "$ir" "$tir" "$base"
done
