#!/usr/bin/env bash
# run_score_bench.sh: scoring a text (perplexity) through the cluster's API against llama.cpp's
# llama-perplexity, side by side in one run on this host.
#
#   1. the same perplexity: stories260K (a real trained model) over TEXT in chunks of 256, by
#      `caravan cluster` (2 workers, bench/score.mjs: echo with max_tokens 0) and by
#      llama-perplexity (f32 KV cache, flash attention off, as caravan computes);
#   2. tokens/s: MODEL (default a tinyllama-1.1b Q4_0 from caravan mkmodel) in CHUNKS chunks of
#      512, the cluster (2 workers x 1 thread, every chunk its own request, all at once) against
#      llama-perplexity -t 2 (one process, 4 chunks a batch), alternating REPS times; both
#      perplexities (random weights: they only say that both computed the same logits).
#
#   bench/run_score_bench.sh [BUILD_DIR]
# Environment: LLAMA_BIN (a directory holding llama-perplexity, built outside the repository;
# required), TEXT (default: README.md and coordinator/API.md joined, ~28k tokens), MODEL, CHUNKS
# (8), REPS (3), CARAVAN_BENCH_DIR (/tmp/caravan-bench). Prints markdown.
set -eu
BUILD=${1:-build}
BIN=$BUILD/bin
DIR=${CARAVAN_BENCH_DIR:-/tmp/caravan-bench}
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/.." && pwd)
LLAMA_BIN=${LLAMA_BIN:?set LLAMA_BIN to a directory with llama-perplexity}
CHUNKS=${CHUNKS:-8}
REPS=${REPS:-3}
STORIES=${STORIES:-$SRC/../shared/models/stories260K.gguf}
mkdir -p "$DIR"
MODEL=${MODEL:-$DIR/tinyllama-1.1b-q4_0.gguf}
if [ ! -f "$MODEL" ]; then
    echo "generating $MODEL" >&2
    "$BIN/caravan" mkmodel --shape tinyllama-1.1b --type q4_0 --out "$MODEL" >&2
fi
TEXT=${TEXT:-}
if [ -z "$TEXT" ]; then
    TEXT=$DIR/score_text.txt
    cat "$SRC/README.md" "$SRC/coordinator/API.md" >"$TEXT"
fi
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -n1)
fam=$(lscpu | sed -n 's/^CPU family: *//p' | head -n1)
mdl=$(lscpu | sed -n 's/^Model: *//p' | head -n1)
echo "# scoring benchmark: $cpu (family $fam model $mdl), $(nproc) CPUs, $(date -u '+%F %H:%M') UTC"
echo
median() { sort -g | awk '{a[NR]=$1} END{print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}'; }
words() { tr ' ' '\n' <<<"$1" | grep .; }
field() { node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s)[process.argv[1]]))' "$1"; }

CL_PID=""
stop_cluster() {
    if [ -n "$CL_PID" ]; then
        kill -INT "$CL_PID" 2>/dev/null || true
        wait "$CL_PID" 2>/dev/null || true
        CL_PID=""
    fi
}
trap stop_cluster EXIT
# start_cluster MODEL: 2 workers x 1 thread on loopback; sets URL
start_cluster() {
    rm -rf "$DIR/score-logs"
    "$BIN/caravan" cluster --model "$1" --workers 2 --threads 1 --shared-file --max-seqs 8 \
        --http 127.0.0.1:0 --log-dir "$DIR/score-logs" >"$DIR/score.out" 2>"$DIR/score.err" &
    CL_PID=$!
    for _ in $(seq 1200); do
        grep -q '^http://' "$DIR/score.out" && break
        kill -0 "$CL_PID" 2>/dev/null || { cat "$DIR/score.err" >&2; exit 1; }
        sleep 0.1
    done
    URL=$(grep -m1 '^http://' "$DIR/score.out")
}
# llama_ppl MODEL N_CTX CHUNKS THREADS: "PPL TOKENS/S" (its own prompt eval timing: every pass,
# not the loading)
llama_ppl() {
    "$LLAMA_BIN/llama-perplexity" -m "$1" -f "$TEXT" -c "$2" --chunks "$3" -t "$4" \
        -ctk f32 -ctv f32 -fa off >"$DIR/ppl.out" 2>&1
    echo "$(sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p' "$DIR/ppl.out") $(sed -n 's/.*prompt eval time .*, *\([0-9.]*\) tokens per second.*/\1/p' "$DIR/ppl.out")"
}

echo "## the same perplexity: stories260K, chunks of 256, $(basename "$TEXT")"
echo
if [ -f "$STORIES" ]; then
    start_cluster "$STORIES"
    c=$(node "$HERE/score.mjs" "$URL" "$TEXT" 256 "$CHUNKS")
    stop_cluster
    read -r lp _ <<<"$(llama_ppl "$STORIES" 256 "$CHUNKS" 2)"
    cp=$(field ppl <<<"$c")
    echo "| | perplexity | scored tokens |"
    echo "|---|---|---|"
    echo "| caravan cluster, 2 workers | $cp | $(field scored <<<"$c") |"
    echo "| llama-perplexity | $lp | |"
    echo
    echo "ratio $(awk -v a="$cp" -v b="$lp" 'BEGIN{printf "%.7f", a/b}')"
else
    echo "(no $STORIES: skipped)"
fi
echo

echo "## tokens/s: $(basename "$MODEL"), $CHUNKS chunks of 512 (alternating, $REPS rounds)"
echo
# llama-perplexity's own prompt-eval rate (its loading left out, as the cluster is up before
# score.mjs starts; score.mjs times the chunks' requests, HTTP and JSON included)
cs="" ls="" cppl="" lppl=""
start_cluster "$MODEL"
for _ in $(seq "$REPS"); do
    c=$(node "$HERE/score.mjs" "$URL" "$TEXT" 512 "$CHUNKS")
    cs="$cs $(field tokens_per_s <<<"$c")"
    cppl=$(field ppl <<<"$c")
    # llama.cpp runs while the cluster idles (its processes only wait on their sockets)
    read -r lppl lrate <<<"$(llama_ppl "$MODEL" 512 "$CHUNKS" 2)"
    ls="$ls $lrate"
done
stop_cluster
c=$(words "$cs" | median)
l=$(words "$ls" | median)
echo "| | tokens/s (median) | each round | perplexity |"
echo "|---|---|---|---|"
echo "| caravan cluster, 2 workers x 1 thread | $c | $cs | $cppl |"
echo "| llama-perplexity -t 2 | $l | $ls | $lppl |"
echo
echo "ratio of medians $(awk -v a="$c" -v b="$l" 'BEGIN{printf "%.2fx", a/b}')"
