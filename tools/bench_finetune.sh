#!/usr/bin/env bash
# One PRG fine-tuning step (batch 8) at 4, 8, 16 and 32 Euler steps: time and
# peak memory of prg.h, beside PyTorch (autograd through the Euler loop) when
# Debian's python3-torch is installed.  2 threads.  Each side runs ROUNDS
# times (default 2), the two sides taking turns, and keeps its best time: a
# slow phase of the machine then has to last through every round to skew a
# row.  REPS (default 1) timed steps per run, after an untimed one.
#   tools/bench_finetune.sh [build-dir] [presets...]
set -e
bin=${1:-build}/bench_finetune
shift || true
presets=${*:-tiny32 small32}
here=$(dirname "$0")
have_torch=0
/usr/bin/python3 -c "import torch" 2> /dev/null && have_torch=1
printf '%-8s %5s | %9s %9s | %8s %8s %9s | %9s %9s | %s\n' preset steps "prg ms" "torch ms" "prg MiB" "growth" \
    "states" "torch MiB" "growth" "speed-up"
for p in $presets; do
    base=""; tbase=""
    for m in 4 8 16 32; do
        ms=; tms=
        for ((r = 0; r < ${ROUNDS:-2}; r++)); do
            read -r _ _ _ a mib st <<< "$("$bin" --preset "$p" --batch 8 --steps "$m" --threads 2 --reps ${REPS:-1})"
            ms=$(awk -v a="$a" -v b="${ms:-1e30}" 'BEGIN { print (a < b ? a : b) }')
            if [ $have_torch = 1 ]; then
                read -r _ _ _ a tmib <<< "$(/usr/bin/python3 "$here/bench_finetune.py" "$p" 8 "$m" 2 ${REPS:-1})"
                tms=$(awk -v a="$a" -v b="${tms:-1e30}" 'BEGIN { print (a < b ? a : b) }')
            fi
        done
        [ -z "$base" ] && base=$mib
        if [ $have_torch = 1 ]; then
            [ -z "$tbase" ] && tbase=$tmib
            tgrow=$(awk -v a="$tmib" -v b="$tbase" 'BEGIN { printf "%+.0f", a - b }')
            ratio=$(awk -v a="$tms" -v b="$ms" 'BEGIN { printf "%.2fx", a / b }')
        else
            tms=-; tmib=-; tgrow=-; ratio="(python3-torch not installed)"
        fi
        grow=$(awk -v a="$mib" -v b="$base" 'BEGIN { printf "%+.0f", a - b }')
        printf '%-8s %5s | %9s %9s | %8s %8s %9s | %9s %9s | %s\n' "$p" "$m" "$ms" "$tms" "$mib" "$grow" "$st" "$tmib" \
            "$tgrow" "$ratio"
    done
done
