#!/usr/bin/env bash
# The header builds without a warning in every configuration we promise:
# C99 with gcc and clang, C++11, with and without -march=native, with
# PRG_NO_THREADS, and included in two translation units of one program.
# The quick start in prg.h's documentation is examples/quickstart.c, verbatim.
cd "$(dirname "$0")/.." || exit 1
out=${BUILD:-build}/check_build
mkdir -p "$out"
passed=0; failed=0
ok()  { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL check_build: $1"; sed -n 1,15p "$out/log" | sed "s/^/FAIL    /"; }
W="-Wall -Wextra -Wpedantic -Werror"

printf '#include "prg.h"\nvoid other_unit(void);\nvoid other_unit(void) { prg_set_num_threads(1); }\n' > "$out/unit2.c"
printf '#include "prg.h"\nvoid other_unit(void);\nint main(void) { other_unit(); return prg_get_num_threads() == 1 ? 0 : 1; }\n' > "$out/unit1_main.c"

try() { # name, compiler and flags...
    local name=$1; shift
    if "$@" > "$out/log" 2>&1; then ok; else bad "$name: $*"; fi
}
for cc in gcc clang; do
    command -v $cc > /dev/null || continue
    for arch in "" "-march=native"; do
        try "$cc c99 $arch" $cc -std=c99 -O2 $arch $W -I. -o "$out/qs" examples/quickstart.c -lm -pthread
        try "$cc c99 run $arch" "$out/qs"
    done
    try "$cc PRG_NO_THREADS" $cc -std=c99 -O2 $W -DPRG_NO_THREADS -I. -o "$out/qs_nt" examples/quickstart.c -lm
    try "$cc PRG_NO_THREADS run" "$out/qs_nt"
    try "$cc two units" $cc -std=c99 -O2 $W -I. -DPRG_IMPLEMENTATION -c -o "$out/u1.o" "$out/unit1_main.c"
    try "$cc two units (2)" $cc -std=c99 -O2 $W -I. -c -o "$out/u2.o" "$out/unit2.c"
    try "$cc two units link" $cc -o "$out/two" "$out/u1.o" "$out/u2.o" -lm -pthread
    try "$cc two units run" "$out/two"
done
for cxx in g++ clang++; do
    command -v $cxx > /dev/null || continue
    for arch in "" "-march=native"; do
        try "$cxx c++11 $arch" $cxx -x c++ -std=c++11 -O2 $arch $W -I. -o "$out/qs_cpp" examples/quickstart.c -lm -pthread
        try "$cxx c++11 run $arch" "$out/qs_cpp"
    done
done
# the quick start in the documentation is the example file, verbatim
awk '/QUICK START/{f=1;next} /CONFIGURATION \(define/{f=0} f' prg.h | sed -e 's/^         //' \
    | sed -e '1{/^$/d}' -e '${/^$/d}' > "$out/quickstart_doc.c"
if diff -u examples/quickstart.c "$out/quickstart_doc.c" > "$out/log"; then ok; else bad "quick start in prg.h differs from examples/quickstart.c"; fi
if "$out/qs" | grep -q ': 4 5 / 10 11$'; then ok; else "$out/qs" > "$out/log"; bad "quick start prints the wrong product"; fi
echo "check_build: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
