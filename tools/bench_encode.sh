#!/usr/bin/env bash
# Encoder throughput (prg_encode, t_span 32: 31 Euler steps of the lean
# U-Net forward), images per second, prg.h with 2 threads and with 1,
# beside PyTorch CPU under torch.inference_mode() with 2 threads (Debian's
# python3-torch, when installed), in the same run.  Each side runs ROUNDS
# times (default 2), the three runs taking turns, and keeps its best; REPS
# (default 1) timed encodes per run after an untimed one-step encode.  Peak
# RSS is each process's ru_maxrss.
#   tools/bench_encode.sh [build-dir] [preset:batch ...]
#   (default: tiny32:8 small32:8 cifar32:4 imagenet64:2)
set -e
bin=${1:-build}/bench_encode
shift || true
cases=${*:-tiny32:8 small32:8 cifar32:4 imagenet64:2}
here=$(dirname "$0")
ts=${T_SPAN:-32}
have_torch=0
/usr/bin/python3 -c "import torch" 2> /dev/null && have_torch=1
best() { awk -v a="$1" -v b="${2:-0}" 'BEGIN { print (a > b ? a : b) }'; }
printf '%-10s %5s | %9s %9s %9s | %9s %9s | %8s %9s\n' preset batch "prg img/s" "torch" "prg 1thr" \
    "vs torch" "2thr/1thr" "prg MiB" "torch MiB"
for c in $cases; do
    p=${c%:*}; b=${c#*:}
    r2=; r1=; rt=; tm=-
    for ((r = 0; r < ${ROUNDS:-2}; r++)); do
        read -r _ _ _ _ a m <<< "$("$bin" --preset "$p" --batch "$b" --t-span "$ts" --threads 2 --reps ${REPS:-1})"
        r2=$(best "$a" "$r2")
        read -r _ _ _ _ a _ <<< "$("$bin" --preset "$p" --batch "$b" --t-span "$ts" --threads 1 --reps ${REPS:-1})"
        r1=$(best "$a" "$r1")
        if [ $have_torch = 1 ]; then
            read -r _ _ _ _ a tm <<< "$(/usr/bin/python3 "$here/bench_encode.py" "$p" "$b" 2 ${REPS:-1} "$ts")"
            rt=$(best "$a" "$rt")
        fi
    done
    if [ $have_torch = 1 ]; then
        vs=$(awk -v a="$r2" -v b="$rt" 'BEGIN { printf "%.2fx", a / b }')
    else
        rt=-; vs="(no torch)"
    fi
    sc=$(awk -v a="$r2" -v b="$r1" 'BEGIN { printf "%.2fx", a / b }')
    printf '%-10s %5s | %9s %9s %9s | %9s %9s | %8s %9s\n' "$p" "$b" "$r2" "$rt" "$r1" "$vs" "$sc" "$m" "$tm"
done
