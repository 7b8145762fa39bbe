#!/usr/bin/env bash
# The header builds without a warning in every configuration we promise:
# C99 with gcc and clang (and tcc when installed), C++11, with and without -march=native, with
# PRG_NO_THREADS, with PRG_NO_IMAGE (the data section's resizing must not
# depend on the image block), and included in two translation units of one
# program.  Each build of examples/quickstart.c (the whole pipeline on
# synthetic images) must also run it and classify new images right, and
# tests/smoke_gemm.c (one small product) must print the right numbers.
# The quick starts in prg.h's documentation and in README.md are
# examples/quickstart.c, verbatim.
# Compiles run two at a time ($PRG_JOBS).
cd "$(dirname "$0")/.." || exit 1
out=${BUILD:-build}/check_build
rm -rf "$out"; mkdir -p "$out"
W="-Wall -Wextra -Wpedantic -Werror"

printf '#include "prg.h"\nvoid other_unit(void);\nvoid other_unit(void) { prg_set_num_threads(1); }\n' > "$out/unit2.c"
printf '#include "prg.h"\nvoid other_unit(void);\nint main(void) { other_unit(); return prg_get_num_threads() == 1 ? 0 : 1; }\n' > "$out/unit1_main.c"

# name|command, one per line; each compile writes $out/<name>.log and .ok
jobs=()
for cc in gcc clang; do
    command -v $cc > /dev/null || continue
    jobs+=("$cc-c99|$cc -std=c99 -O2 $W -I. -o $out/$cc-c99 examples/quickstart.c -lm -pthread")
    jobs+=("$cc-c99-native|$cc -std=c99 -O2 -march=native $W -I. -o $out/$cc-c99-native examples/quickstart.c -lm -pthread")
    jobs+=("$cc-nothreads|$cc -std=c99 -O2 $W -DPRG_NO_THREADS -I. -o $out/$cc-nothreads examples/quickstart.c -lm")
    jobs+=("$cc-noimage|$cc -std=c99 -O2 $W -DPRG_NO_IMAGE -I. -o $out/$cc-noimage examples/quickstart.c -lm -pthread")
    jobs+=("$cc-twounits|$cc -std=c99 -O2 $W -I. -DPRG_IMPLEMENTATION -c -o $out/$cc-u1.o $out/unit1_main.c && $cc -std=c99 -O2 $W -I. -c -o $out/$cc-u2.o $out/unit2.c && $cc -o $out/$cc-twounits $out/$cc-u1.o $out/$cc-u2.o -lm -pthread")
done
jobs+=("smoke-gemm|gcc -std=c99 -O2 $W -I. -o $out/smoke-gemm tests/smoke_gemm.c -lm -pthread")
# tcc (no intrinsics, no thread-local keyword): the portable path and the
# documented no-TLS fallback must build warning-free and run
if command -v tcc > /dev/null; then
    jobs+=("tcc-c99|tcc -Wall -Werror -I. -o $out/tcc-c99 examples/quickstart.c -lm -lpthread")
    jobs+=("tcc-nothreads|tcc -Wall -Werror -DPRG_NO_THREADS -I. -o $out/tcc-nothreads examples/quickstart.c -lm")
fi
for cxx in g++ clang++; do
    command -v $cxx > /dev/null || continue
    jobs+=("$cxx-cxx11|$cxx -x c++ -std=c++11 -O2 $W -I. -o $out/$cxx-cxx11 examples/quickstart.c -lm -pthread")
    jobs+=("$cxx-cxx11-native|$cxx -x c++ -std=c++11 -O2 -march=native $W -I. -o $out/$cxx-cxx11-native examples/quickstart.c -lm -pthread")
done
printf '%s\n' "${jobs[@]}" | xargs -P "${PRG_JOBS:-2}" -I{} bash -c '
    line="$1"; name=${line%%|*}; cmd=${line#*|}
    if bash -c "$cmd" > "'"$out"'/$name.log" 2>&1; then touch "'"$out"'/$name.ok"; fi' _ {}

passed=0; failed=0
for line in "${jobs[@]}"; do
    name=${line%%|*}
    if [ -f "$out/$name.ok" ]; then
        passed=$((passed + 1))
        # each program must also run: the two units return 0 only if both share the pool;
        # the GEMM smoke test prints 4 5 / 10 11; the quick start classifies at least 14 of
        # 16 new images right (chance: 8) and saves the classifier
        rm -f "$out/$name.safetensors"
        if "$out/$name" "$out/$name.safetensors" > "$out/$name.run" 2>&1 && case $name in
                *twounits) true ;;
                smoke-gemm) grep -q ': 4 5 / 10 11$' "$out/$name.run" ;;
                *) grep -Eq ' 1[4-6] of 16 new images right$' "$out/$name.run" && [ -s "$out/$name.safetensors" ] ;;
            esac; then
            passed=$((passed + 1))
        else
            failed=$((failed + 1)); echo "FAIL check_build: $name runs wrong:"; sed 's/^/FAIL    /' "$out/$name.run" | head -5
        fi
    else
        failed=$((failed + 1)); echo "FAIL check_build: $name: ${line#*|}"; sed -n 1,15p "$out/$name.log" | sed 's/^/FAIL    /'
    fi
done
# the quick starts in the documentation are the example file, verbatim: in prg.h the
# 9-space indented lines between QUICK START and CONFIGURATION, in README.md the ```c
# block after the line <!-- examples/quickstart.c -->
awk '/QUICK START/{f=1;next} /CONFIGURATION \(define/{f=0} f && (/^         / || /^$/)' prg.h \
    | sed -e 's/^         //' | awk '{l[NR] = $0} END {a = 1; b = NR; while (a <= b && l[a] == "") a++
        while (b >= a && l[b] == "") b--; for (i = a; i <= b; i++) print l[i]}' > "$out/quickstart_doc.c"
awk '/^<!-- examples\/quickstart.c -->/{f=1;next} f==1 && /^```c$/{f=2;next} f==2 && /^```$/{exit} f==2' README.md \
    > "$out/quickstart_readme.c"
for doc in prg.h:quickstart_doc README.md:quickstart_readme; do
    if diff -u examples/quickstart.c "$out/${doc#*:}.c" > "$out/${doc#*:}.log"; then passed=$((passed + 1)); else
        failed=$((failed + 1)); echo "FAIL check_build: quick start in ${doc%%:*} differs from examples/quickstart.c"
        sed 's/^/FAIL    /' "$out/${doc#*:}.log" | head; fi
done
echo "check_build: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
