#!/bin/sh
# run_model_bench.sh: caravan's end-to-end tokens/s on tinyllama-1.1b-shaped random weights in
# Q4_0, Q4_K_M, Q8_0 and F16, prompt (pp128) and generation (tg64) at 1 and 2 threads, printed
# as a markdown table beside llama.cpp's figures (llama-bench, upstream llama.cpp Nov 2025, same
# shape, this kind of machine) and the ratio to them.
#
#   bench/run_model_bench.sh [BUILD_DIR]      (default: ./build; needs bin/caravan, bin/bench_model)
# Environment: SHAPE (tinyllama-1.1b), CARAVAN_BENCH_DIR (model files, created when absent; default /tmp/caravan-bench,
# never inside the repository), PP (128), TG (64), REPS (3), THREADS ("1 2"), TYPES.
# LLAMA_BENCH=/path/to/llama-bench (a llama.cpp build of your own, optional): also runs it on the
# same files right after each caravan run, and compares against those figures instead of the
# issue's (which came from another machine of this kind).
set -eu

BUILD=${1:-build}
BIN=$BUILD/bin
DIR=${CARAVAN_BENCH_DIR:-/tmp/caravan-bench}
PP=${PP:-128}
TG=${TG:-64}
REPS=${REPS:-3}
THREADS=${THREADS:-"1 2"}
TYPES=${TYPES:-"q4_0 q4_k_m q8_0 f16"}
SHAPE=${SHAPE:-tinyllama-1.1b}

for exe in "$BIN/caravan" "$BIN/bench_model"; do
    if [ ! -x "$exe" ]; then
        echo "error: $exe not found; build it: cmake --build $BUILD --target caravan bench_model" >&2
        exit 1
    fi
done
mkdir -p "$DIR"

# llama.cpp's figures from the issue: pp 1t, pp 2t, tg 1t, tg 2t, file MB
ref() {
    [ "$SHAPE" = tinyllama-1.1b ] || { echo "- - - - -"; return; }
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
LRESULTS=$(mktemp)
trap 'rm -f "$RESULTS" "$LRESULTS"' EXIT
for t in $TYPES; do
    f="$DIR/$SHAPE-$t.gguf"
    for th in $THREADS; do
        echo "bench_model --model $f --threads $th --pp $PP --tg $TG --reps $REPS" >&2
        "$BIN/bench_model" --model "$f" --threads "$th" --pp "$PP" --tg "$TG" --reps "$REPS" |
            tee /dev/stderr | awk -v t="$t" '$1 == "result" { print t, $0 }' >>"$RESULTS"
        if [ -n "${LLAMA_BENCH:-}" ]; then
            echo "$LLAMA_BENCH -m $f -p $PP -n $TG -t $th -r $REPS" >&2
            # csv: a header naming the columns, then one row per test (pp, then tg)
            "$LLAMA_BENCH" -m "$f" -p "$PP" -n "$TG" -t "$th" -r "$REPS" -o csv 2>/dev/null |
                tr -d '"' | awk -F, -v t="$t" -v th="$th" '
                NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
                $c["n_prompt"] > 0 { pp = $c["avg_ts"]; ppsd = $c["stddev_ts"] }
                $c["n_gen"] > 0 { tg = $c["avg_ts"]; tgsd = $c["stddev_ts"] }
                END { printf "%s x x %s x %.2f %.2f x %.2f %.2f x\n", t, th, pp, ppsd, tg, tgsd }' |
                tee /dev/stderr >>"$LRESULTS"
        fi
    done
done
echo "after:  $(uptime)"
echo

# one row per type: caravan's mean ± sd, then llama.cpp's figure and the ratio.
# Both result files have: type, -, -, threads, -, pp mean, pp sd, -, tg mean, tg sd, rss.
col() { # file type threads field(pp|tg) -> "mean ± sd"
    awk -v t="$2" -v th="$3" -v w="$4" '$1 == t && $4 == th {
        if (w == "pp") printf "%s ± %s", $6, $7; else printf "%s ± %s", $9, $10 }' "$1"
}
val() {
    awk -v t="$2" -v th="$3" -v w="$4" '$1 == t && $4 == th { print (w == "pp") ? $6 : $9 }' "$1"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == "-" || b == 0) print "-"; else printf "%.2fx", a / b }'; }

th1=$(echo "$THREADS" | awk '{print $1}')
th2=$(echo "$THREADS" | awk '{print $NF}')
# llama.cpp's figure for type, threads, pp|tg: measured here, else the issue's
lref() {
    if [ -s "$LRESULTS" ]; then
        val "$LRESULTS" "$1" "$2" "$3"
    else
        ref "$1" | awk -v th="$2" -v w="$3" -v th1="$th1" '{ o = (w == "pp") ? 0 : 2; print $(o + (th == th1 ? 1 : 2)) }'
    fi
}
if [ -s "$LRESULTS" ]; then
    src="llama.cpp measured here just after each caravan run ($LLAMA_BENCH)"
else
    src="llama.cpp's figures from the issue (another machine of this kind)"
fi

echo "caravan, $SHAPE random weights, tokens/s (mean ± sd of $REPS); in brackets $src:"
echo
echo "| weights | file | pp$PP, $th1 thread | pp$PP, $th2 threads | tg$TG, $th1 thread | tg$TG, $th2 threads |"
echo "|---|---|---|---|---|---|"
for t in $TYPES; do
    mb=$(awk -v s="$(stat -L -c %s "$DIR/$SHAPE-$t.gguf")" 'BEGIN { printf "%.0f MB", s / 1e6 }')
    echo "| $(label "$t") | $mb | $(col "$RESULTS" "$t" "$th1" pp) [$(lref "$t" "$th1" pp)] | $(col "$RESULTS" "$t" "$th2" pp) [$(lref "$t" "$th2" pp)] | $(col "$RESULTS" "$t" "$th1" tg) [$(lref "$t" "$th1" tg)] | $(col "$RESULTS" "$t" "$th2" tg) [$(lref "$t" "$th2" tg)] |"
done
if [ -s "$LRESULTS" ]; then
    echo
    echo "llama.cpp (llama-bench) on the same files:"
    echo
    echo "| weights | pp$PP, $th1 thread | pp$PP, $th2 threads | tg$TG, $th1 thread | tg$TG, $th2 threads |"
    echo "|---|---|---|---|---|"
    for t in $TYPES; do
        echo "| $(label "$t") | $(col "$LRESULTS" "$t" "$th1" pp) | $(col "$LRESULTS" "$t" "$th2" pp) | $(col "$LRESULTS" "$t" "$th1" tg) | $(col "$LRESULTS" "$t" "$th2" tg) |"
    done
fi
echo
echo "ratio caravan / llama.cpp (issue 9 targets: tg >= 1.0x, pp >= 0.9x):"
echo
echo "| weights | pp$PP, $th1 | pp$PP, $th2 | tg$TG, $th1 | tg$TG, $th2 |"
echo "|---|---|---|---|---|"
for t in $TYPES; do
    echo "| $(label "$t") | $(ratio "$(val "$RESULTS" "$t" "$th1" pp)" "$(lref "$t" "$th1" pp)") | $(ratio "$(val "$RESULTS" "$t" "$th2" pp)" "$(lref "$t" "$th2" pp)") | $(ratio "$(val "$RESULTS" "$t" "$th1" tg)" "$(lref "$t" "$th1" tg)") | $(ratio "$(val "$RESULTS" "$t" "$th2" tg)" "$(lref "$t" "$th2" tg)") |"
done
echo
echo "peak RSS MiB: $(awk '{ printf "%s/%st=%s ", $1, $4, $11 }' "$RESULTS")"
