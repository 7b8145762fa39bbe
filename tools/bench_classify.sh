#!/usr/bin/env bash
# The classify program on one image (a model-sized PNG), the whole process:
# checkpoint load, decode, the encoder through t_span 32 (31 Euler steps,
# lean forward), head.  Best wall time and largest peak RSS (wait4
# ru_maxrss) over RUNS runs (default 3), 2 threads; the checkpoint's size
# beside.  Needs build/classify.
#   tools/bench_classify.sh [build-dir] [presets...]   (default: cifar32 imagenet64)
set -e
b=${1:-build}
shift || true
printf '%-10s %6s %7s | %8s %8s %9s %14s\n' preset t_span threads "wall s" "CPU s" "peak MiB" "checkpoint MiB"
for p in ${*:-cifar32 imagenet64}; do
    read -r _ ts th s cpu mib ck <<< "$("$b/bench_classify" --preset "$p" --threads 2 --runs ${RUNS:-3} --classify "$b/classify")"
    printf '%-10s %6s %7s | %8s %8s %9s %14s\n' "$p" "$ts" "$th" "$s" "$cpu" "$mib" "$ck"
done
