#!/usr/bin/env bash
# Runs every test program given as an argument (optionally under a wrapper
# such as qemu-aarch64, via $PRG_TEST_WRAPPER), sums their counts and prints
# "N passed, N failed" as the last line.  A program that crashes or exits
# non-zero without reporting a failure counts as one failure, and so does one
# still running after $PRG_TEST_TIMEOUT seconds (default 1800: a hang fails
# the run instead of stalling it).
passed=0; failed=0
limit=${PRG_TEST_TIMEOUT:-1800}
tmo=""; command -v timeout > /dev/null && tmo="timeout $limit"
for t in "$@"; do
    out=$($tmo $PRG_TEST_WRAPPER "$t" 2>&1); rc=$?
    [ -n "$tmo" ] && [ "$rc" -eq 124 ] && out="$out
(timed out after $limit s)"
    printf '%s\n' "$out" | grep -E '^FAIL|passed, [0-9]+ failed$' | tail -n 40
    line=$(printf '%s\n' "$out" | grep -E '^[^ ]+: [0-9]+ passed, [0-9]+ failed$' | tail -n 1)
    if [ -n "$line" ]; then
        p=$(echo "$line" | sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed/\1/')
        f=$(echo "$line" | sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed/\2/')
    else
        p=0; f=0
    fi
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "FAIL $t exited with status $rc"; printf '%s\n' "$out" | tail -n 20; f=1
    fi
    passed=$((passed + p)); failed=$((failed + f))
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
