#!/bin/sh
# run_model_bench.sh: caravan's end-to-end tokens/s on tinyllama-1.1b-shaped random weights in
# Q4_0, Q4_K_M, Q8_0 and F16, prompt (pp128) and generation (tg64) at 1 and 2 threads, printed
# as a markdown table beside llama.cpp's figures (llama-bench, upstream llama.cpp Nov 2025, same
# shape, this kind of machine) and the ratio to them.
#
#   bench/run_model_bench.sh [BUILD_DIR]      (default: ./build; needs bin/caravan, bin/bench_model)
# Environment: CARAVAN_BENCH_DIR (model files, created when absent; default /tmp/caravan-bench,
# never inside the repository), PP (128), TG (64), REPS (3), THREADS ("1 2"), TYPES.
set -eu

BUILD=${1:-build}
BIN=$BUILD/bin
DIR=${CARAVAN_BENCH_DIR:-/tmp/caravan-bench}
PP=${PP:-128}
TG=${TG:-64}
REPS=${REPS:-3}
THREADS=${THREADS:-"1 2"}
TYPES=${TYPES:-"q4_0 q4_k_m q8_0 f16"}
SHAPE=tinyllama-1.1b

for exe in "$BIN/caravan" "$BIN/bench_model"; do
    if [ ! -x "$exe" ]; then
        echo "error: $exe not found; build it: cmake --build $BUILD --target caravan bench_model" >&2
        exit 1
    fi
done
mkdir -p "$DIR"

# llama.cpp's figures from the issue: pp 1t, pp 2t, tg 1t, tg 2t, file MB
ref() {
    case $1 in
    q4_0) echo "30.2 55.2 12.4 21.3 637" ;;
    q4_k_m) echo "32.3 44.7 11.5 18.2 668" ;;
    q8_0) echo "24.5 45.7 7.6 12.3 1170" ;;
    f16) echo "33.0 41.5 4.6 6.9 2201" ;;
    *) echo "- - - - -" ;;
    esac
}

label() { echo "$1" | tr 'a-z' 'A-Z'; }

for t in $TYPES; do
    f="$DIR/$SHAPE-$t.gguf"
    if [ ! -f "$f" ]; then
        echo "generating $f" >&2
        "$BIN/caravan" mkmodel --shape "$SHAPE" --type "$t" --out "$f" --quiet
    fi
done

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "before: $(uptime)"
RESULTS=$(mktemp)
trap 'rm -f "$RESULTS"' EXIT
for t in $TYPES; do
    f="$DIR/$SHAPE-$t.gguf"
    for th in $THREADS; do
        echo "bench_model --model $f --threads $th --pp $PP --tg $TG --reps $REPS" >&2
        "$BIN/bench_model" --model "$f" --threads "$th" --pp "$PP" --tg "$TG" --reps "$REPS" |
            tee /dev/stderr | awk -v t="$t" '$1 == "result" { print t, $0 }' >>"$RESULTS"
    done
done
echo "after:  $(uptime)"
echo

# one row per type: caravan's mean ± sd, then llama.cpp's figure and the ratio
col() { # type threads field(pp|tg) -> "mean ± sd"
    awk -v t="$1" -v th="$2" -v w="$3" '$1 == t && $4 == th {
        if (w == "pp") printf "%s ± %s", $6, $7; else printf "%s ± %s", $9, $10 }' "$RESULTS"
}
val() {
    awk -v t="$1" -v th="$2" -v w="$3" '$1 == t && $4 == th { print (w == "pp") ? $6 : $9 }' "$RESULTS"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "-" || b == 0) print "-"; else printf "%.2fx", a / b }'; }

th1=$(echo "$THREADS" | awk '{print $1}')
th2=$(echo "$THREADS" | awk '{print $NF}')
echo "caravan, $SHAPE random weights, tokens/s (mean ± sd of $REPS), llama.cpp in brackets:"
echo
echo "| weights | file | pp$PP, $th1 thread | pp$PP, $th2 threads | tg$TG, $th1 thread | tg$TG, $th2 threads |"
echo "|---|---|---|---|---|---|"
for t in $TYPES; do
    set -- $(ref "$t")
    mb=$(awk -v s="$(stat -c %s "$DIR/$SHAPE-$t.gguf")" 'BEGIN { printf "%.0f MB", s / 1e6 }')
    echo "| $(label "$t") | $mb | $(col "$t" "$th1" pp) [$1] | $(col "$t" "$th2" pp) [$2] | $(col "$t" "$th1" tg) [$3] | $(col "$t" "$th2" tg) [$4] |"
done
echo
echo "ratio caravan / llama.cpp (target: tg >= 0.9x, pp >= 0.7x):"
echo
echo "| weights | pp$PP, $th1 | pp$PP, $th2 | tg$TG, $th1 | tg$TG, $th2 |"
echo "|---|---|---|---|---|"
for t in $TYPES; do
    set -- $(ref "$t")
    echo "| $(label "$t") | $(ratio "$(val "$t" "$th1" pp)" "$1") | $(ratio "$(val "$t" "$th2" pp)" "$2") | $(ratio "$(val "$t" "$th1" tg)" "$3") | $(ratio "$(val "$t" "$th2" tg)" "$4") |"
done
echo
echo "peak RSS MiB: $(awk '{ printf "%s/%st=%s ", $1, $4, $11 }' "$RESULTS")"
