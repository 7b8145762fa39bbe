#!/usr/bin/env bash
# U-Net forward and training-step time per image, prg.h against PyTorch CPU
# (Debian's python3-torch, when installed) in the same run, 2 threads; and
# prg.h with 1 thread, for the 2-thread speed-up over 1 (`2thr/1thr`).
# Each side runs ROUNDS times (default 2), taking turns, and keeps its best
# (best of REPS, default 5, within each run): a slow phase of the machine
# then has to last through every round to skew a row.
#   tools/bench_unet.sh [build-dir]
set -e
bin=${1:-build}/bench_unet
here=$(dirname "$0")
have_torch=0
/usr/bin/python3 -c "import torch" 2> /dev/null && have_torch=1
printf '%-8s %5s | %12s %12s | %12s %12s | %9s %9s | %-15s | %s\n' preset batch "fwd ms/img" "torch fwd" \
    "step ms/img" "torch step" "prg MiB" "torch MiB" "vs torch f / s" "2thr/1thr f / s"
min() { awk -v a="$1" -v b="${2:-1e30}" 'BEGIN { print (a < b ? a : b) }'; }
for pb in "tiny32 32" "small32 16" "cifar32 8"; do
    set -- $pb
    f=; s=; f1=; s1=; tf=; ts=
    for ((r = 0; r < ${ROUNDS:-2}; r++)); do
        read -r _ _ _ a b m <<< "$("$bin" --preset "$1" --batch "$2" --threads 2 --reps ${REPS:-5})"
        f=$(min "$a" "$f"); s=$(min "$b" "$s")
        read -r _ _ _ a b _ <<< "$("$bin" --preset "$1" --batch "$2" --threads 1 --reps ${REPS:-5})"
        f1=$(min "$a" "$f1"); s1=$(min "$b" "$s1")
        if [ $have_torch = 1 ]; then
            read -r _ _ _ a b tm <<< "$(/usr/bin/python3 "$here/bench_unet.py" "$1" "$2" 2 ${REPS:-5})"
            tf=$(min "$a" "$tf"); ts=$(min "$b" "$ts")
        fi
    done
    if [ $have_torch = 1 ]; then
        ratio=$(awk -v a="$tf" -v b="$f" -v c="$ts" -v d="$s" 'BEGIN { printf "%.2fx / %.2fx", a / b, c / d }')
    else
        tf=-; ts=-; tm=-; ratio="(no torch)"
    fi
    sc=$(awk -v a="$f1" -v b="$f" -v c="$s1" -v d="$s" 'BEGIN { printf "%.2fx / %.2fx", a / b, c / d }')
    printf '%-8s %5s | %12s %12s | %12s %12s | %9s %9s | %-15s | %s\n' "$1" "$2" "$f" "$tf" "$s" "$ts" "$m" "$tm" \
        "$ratio" "$sc"
done
