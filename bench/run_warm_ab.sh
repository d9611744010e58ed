#!/usr/bin/env bash
# run_warm_ab.sh: single-stream generation of two clusters that serve at once on this host, in
# turn (bench/warm_ab.mjs: A B B A, one greedy streamed completion at a time, first to last
# token). run_cluster_bench.sh starts a new cluster for every run, so a pair there also holds
# the host's drift between two start-ups; here both clusters are up and warm (the idle one
# sleeps: a worker polls only while its turns come back within --spin-ms), which narrows a
# comparison such as 3 workers against 1 or one option against another.
#
#   bench/run_warm_ab.sh [BUILD_DIR]
# Environment: MODEL (default: the tinyllama-1.1b Q4_0 of run_cluster_bench.sh in
# CARAVAN_BENCH_DIR, default /tmp/caravan-bench), A ("--workers 1") and B ("--workers 2"): each
# cluster's options beyond --model --threads 1 --shared-file --http, PAIRS (16), TG (64),
# CARAVAN_A and CARAVAN_B (each cluster's caravan binary, default BUILD_DIR/bin/caravan: two
# builds side by side), ROUNDS (1): start both clusters afresh this many times and spread the
# PAIRS over them evenly; the row pools every pair (warm_ab.mjs --pool). Two instances of one
# cluster can differ here by more than pairing removes (bench/RESULTS.md, Zen 3, 2026-12-07),
# which rounds average over. PIN_A and PIN_B (unset: no pinning): once a cluster is up, its
# workers, in stage order, go on these CPUs, one `taskset` list a worker ("0 1": the first
# worker on CPU 0, the second on CPU 1; "0 0": both on CPU 0); the coordinator stays unpinned.
# On a host whose vCPUs differ in speed (bench/RESULTS.md, Zen 5, 2026-12-07) this sets, e.g.,
# one worker on each vCPU against two workers across them.
# Prints a markdown row; each cluster's logs go to $DIR/warm-a and $DIR/warm-b.
set -eu
BUILD=${1:-build}
BIN=$BUILD/bin
DIR=${CARAVAN_BENCH_DIR:-/tmp/caravan-bench}
HERE=$(cd "$(dirname "$0")" && pwd)
MODEL=${MODEL:-$DIR/tinyllama-1.1b-q4_0.gguf}
A=${A:---workers 1}
B=${B:---workers 2}
PAIRS=${PAIRS:-16}
TG=${TG:-64}
ROUNDS=${ROUNDS:-1}
case "$PAIRS$ROUNDS" in *[!0-9]*) echo "PAIRS and ROUNDS are counts" >&2; exit 2 ;; esac
if [ "$ROUNDS" -lt 1 ] || [ "$PAIRS" -lt "$ROUNDS" ]; then
    echo "ROUNDS must be 1 to PAIRS ($PAIRS)" >&2
    exit 2
fi
mkdir -p "$DIR"
if [ ! -f "$MODEL" ]; then
    echo "generating $MODEL" >&2
    "$BIN/caravan" mkmodel --shape tinyllama-1.1b --type q4_0 --out "$MODEL" >&2
fi
PIDS=()
stop_all() {
    local p
    for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null; done
    wait 2>/dev/null
}
trap stop_all EXIT
# pin URL CPUS: the cluster's workers, in stage order, each on its entry of CPUS (all threads)
pin() {
    local url=$1 i cpus pids want got
    read -ra cpus <<<"$2"
    read -ra pids <<<"$(curl -sf "$url/cluster" | node -e '
        let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () =>
          console.log(JSON.parse(s).workers.filter((w) => w.stage !== null)
            .sort((a, b) => a.stage - b.stage).map((w) => w.pid).join(" ")));')"
    if [ ${#pids[@]} != ${#cpus[@]} ]; then
        echo "$url: ${#pids[@]} workers for ${#cpus[@]} pins ($2)" >&2
        exit 1
    fi
    for i in "${!pids[@]}"; do
        taskset -a -c -p "${cpus[$i]}" "${pids[$i]}" >/dev/null
        # what the kernel now allows each of its threads, as it says it
        want=$(cpu_list "${cpus[$i]}")
        got=$(for t in /proc/"${pids[$i]}"/task/*/status; do
            cpu_list "$(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' "$t")"
        done | sort -u)
        if [ "$got" != "$want" ]; then
            echo "$url: stage $i (pid ${pids[$i]}): its threads run on CPUs $(paste -sd ';' <<<"$got") after pinning to ${cpus[$i]}" >&2
            exit 1
        fi
        echo "$url: stage $i (pid ${pids[$i]}, every thread) on CPUs $got" >&2
    done
}
# cpu_list LIST: a taskset or kernel CPU list ("0-2,5") as its CPUs, space-separated
cpu_list() {
    local part parts c out=()
    IFS=, read -ra parts <<<"$1"
    for part in "${parts[@]}"; do
        for ((c = ${part%-*}; c <= ${part#*-}; c++)); do out+=("$c"); done
    done
    echo "${out[*]}"
}
# up NAME BINARY ARGS...: a cluster serving the API
up() {
    local name=$1 bin=$2
    shift 2
    rm -rf "$DIR/warm-$name"
    mkdir -p "$DIR/warm-$name"
    "$bin" cluster --model "$MODEL" --threads 1 --shared-file --http 127.0.0.1:0 \
        --log-dir "$DIR/warm-$name/logs" "$@" >"$DIR/warm-$name/out" 2>"$DIR/warm-$name/err" &
    PIDS+=($!)
    for _ in $(seq 6000); do
        grep -q '^http://' "$DIR/warm-$name/out" && break
        kill -0 "${PIDS[-1]}" 2>/dev/null || break
        sleep 0.1
    done
    if ! grep -q '^http://' "$DIR/warm-$name/out"; then
        echo "cluster $name ($*) did not come up; the end of $DIR/warm-$name/err:" >&2
        tail -n 20 "$DIR/warm-$name/err" >&2
        exit 1
    fi
}
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -n1)
echo "# warm clusters side by side: $(basename "$MODEL"), $cpu, $(nproc) CPUs, $(date -u '+%F %H:%M') UTC"
[ "$ROUNDS" = 1 ] || echo "# $ROUNDS rounds, each with both clusters started afresh"
echo
runs=()
for ((r = 1; r <= ROUNDS; r++)); do
    # shellcheck disable=SC2086 # A and B are lists of options: split into words here
    up a "${CARAVAN_A:-$BIN/caravan}" $A
    # shellcheck disable=SC2086
    up b "${CARAVAN_B:-$BIN/caravan}" $B
    URL_A=$(grep -m1 '^http://' "$DIR/warm-a/out")
    URL_B=$(grep -m1 '^http://' "$DIR/warm-b/out")
    [ -z "${PIN_A:-}" ] || pin "${URL_A%/}" "$PIN_A"
    [ -z "${PIN_B:-}" ] || pin "${URL_B%/}" "$PIN_B"
    n=$((PAIRS / ROUNDS + (r <= PAIRS % ROUNDS ? 1 : 0))) # the pairs spread evenly
    [ "$ROUNDS" = 1 ] || echo "round $r of $ROUNDS: $n pairs" >&2
    runs+=("$(node "$HERE/warm_ab.mjs" "$URL_A" "$URL_B" "$n" "$TG")")
    stop_all
    PIDS=()
done
# every round's pairs pooled: the same summary warm_ab.mjs prints for one run
res=$(printf '%s\n' "${runs[@]}" | node "$HERE/warm_ab.mjs" --pool)
field() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" <<<"$res"; }
echo "| A | B | pairs | B faster in | median of pair ratios B/A (min-max) | 95% interval of that median | medians A / B t/s |"
echo "|---|---|---|---|---|---|---|"
label_a="$A${CARAVAN_A:+ ($CARAVAN_A)}${PIN_A:+, workers on CPUs $PIN_A}"
label_b="$B${CARAVAN_B:+ ($CARAVAN_B)}${PIN_B:+, workers on CPUs $PIN_B}"
echo "| $label_a | $label_b | $PAIRS | $(field b_faster) | $(field ratio_median)x ($(field ratio_min)-$(field ratio_max)) | $(field ratio_ci95_low)-$(field ratio_ci95_high) | $(field a_median_tps) / $(field b_median_tps) |"
