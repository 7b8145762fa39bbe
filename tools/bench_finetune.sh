#!/usr/bin/env bash
# One PRG fine-tuning step (batch 8) at 4, 8, 16 and 32 Euler steps: time and
# peak memory of prg.h in both modes (every step's U-Net forward recomputed
# by backward, and the steps' activations kept as the default memory budget
# allows), beside PyTorch (autograd through the Euler loop) when Debian's
# python3-torch is installed, 2 threads; and the recompute mode with 1
# thread, for the 2-thread speed-up over 1 (`2thr/1thr`).  Each side runs
# ROUNDS times (default 2), taking turns, and keeps its best time: a slow
# phase of the machine then has to last through every round to skew a row.
# REPS (default 1) timed steps per run, after an untimed one, then more until
# they add up to MIN_SECONDS (default 1.5; both sides alike).  MiB: peak RSS
# of the process that ran the mode.
#   tools/bench_finetune.sh [build-dir] [presets...]   (EULER="4 8 16 32": the step counts)
set -e
bin=${1:-build}/bench_finetune
shift || true
presets=${*:-tiny32 small32}
here=$(dirname "$0")
have_torch=0
/usr/bin/python3 -c "import torch" 2> /dev/null && have_torch=1
min() { awk -v a="$1" -v b="${2:-1e30}" 'BEGIN { print (a < b ? a : b) }'; }
printf '%-8s %5s | %9s %9s %9s %9s | %8s %8s %5s %9s | %-15s %11s %9s\n' preset steps "prg ms" "kept ms" "torch ms" \
    "1thr ms" "prg MiB" "kept MiB" kept "torch MiB" "vs torch r / k" "kept/recomp" "2thr/1thr"
for p in $presets; do
    for m in ${EULER:-4 8 16 32}; do
        ms=; kms=; tms=; ms1=
        for ((r = 0; r < ${ROUNDS:-2}; r++)); do
            out=$("$bin" --preset "$p" --batch 8 --steps "$m" --threads 2 --reps ${REPS:-1} --min-seconds ${MIN_SECONDS:-1.5})
            read -r _ _ _ a mib _ <<< "$(sed -n 1p <<< "$out")"
            read -r _ _ _ k kmib _ kept <<< "$(sed -n 2p <<< "$out")"
            ms=$(min "$a" "$ms"); kms=$(min "$k" "$kms")
            read -r _ _ _ a _ <<< "$("$bin" --preset "$p" --batch 8 --steps "$m" --threads 1 --reps ${REPS:-1} --min-seconds ${MIN_SECONDS:-1.5} --keep-mb 0)"
            ms1=$(min "$a" "$ms1")
            if [ $have_torch = 1 ]; then
                read -r _ _ _ a tmib <<< "$(/usr/bin/python3 "$here/bench_finetune.py" "$p" 8 "$m" 2 ${REPS:-1} ${MIN_SECONDS:-1.5})"
                tms=$(min "$a" "$tms")
            fi
        done
        if [ $have_torch = 1 ]; then
            ratio=$(awk -v a="$tms" -v b="$ms" -v c="$kms" 'BEGIN { printf "%.2fx / %.2fx", a / b, a / c }')
        else
            tms=-; tmib=-; ratio="(no torch)"
        fi
        kr=$(awk -v a="$ms" -v b="$kms" 'BEGIN { printf "%.2fx", a / b }')
        sc=$(awk -v a="$ms1" -v b="$ms" 'BEGIN { printf "%.2fx", a / b }')
        printf '%-8s %5s | %9s %9s %9s %9s | %8s %8s %5s %9s | %-15s %11s %9s\n' "$p" "$m" "$ms" "$kms" "$tms" "$ms1" \
            "$mib" "$kmib" "${kept#kept=}" "$tmib" "$ratio" "$kr" "$sc"
    done
done
