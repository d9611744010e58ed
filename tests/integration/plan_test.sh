#!/usr/bin/env bash
# plan_test.sh CASE: the layer plan and kernel pinning with real coordinator and worker
# processes on 127.0.0.1 (--insecure: the security cases are cluster_test.sh's).
#
#   nofit        workers whose --max-memory cannot hold the model: the coordinator exits 1 as
#                soon as they have joined, with the numbers (needed vs offered, per worker),
#                and so do the workers
#   hand_nofit   a --plan that puts more on a worker than its --max-memory: the same
#   fit          a worker with a small --max-memory gets a range that fits (its loaded weights,
#                KV cache and buffers stay within the limit) and the cluster answers
#   same_tokens  greedy and seeded answers from clusters of 1, 2 and 3 workers (planned by
#                speed, and by hand) equal `caravan run` with the kernel variant the cluster
#                pinned (--kernels, and the default pick)
#   cluster_json GET /cluster shows the plan: ranges, planned bytes, memory limits, speeds,
#                the pinned kernels, the KV sizes, and that workers on this machine share its
#                clock; coordinator/API.md lists exactly the document's fields
#   bad_options  --workers, --plan and --kernels are checked at start, before any worker joins
#
# Needs CARAVAN_BIN and CARAVAN_SHARED (stories260K). Every process started here is killed on
# exit, and each daemon also has a --run-ms bound.
set -u
CASE=${1:?usage: plan_test.sh CASE}
BIN=${CARAVAN_BIN:?CARAVAN_BIN not set}
CARAVAN="$BIN/caravan"
MODEL="${CARAVAN_SHARED:-/nonexistent}/models/stories260K.gguf"
WORK=$(mktemp -d /tmp/caravan_plan.XXXXXX)
PIDS=()
FAILED=0
PROMPT="Once upon a time"

# Only children still running (bash's job table) are signalled: a PID that already exited may
# belong to another process by now (pid_max is 32768 and the machine is busy).
cleanup() {
    for pid in $(jobs -pr); do kill "$pid" 2>/dev/null; done
    wait 2>/dev/null
    if [ "$FAILED" -ne 0 ] || [ -n "${CARAVAN_TEST_VERBOSE:-}" ]; then
        for f in "$WORK"/*.log "$WORK"/*.out; do
            [ -f "$f" ] && { echo "==== $f"; tail -n 40 "$f"; }
        done
    fi
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

fail() { echo "FAIL ($CASE): $*"; FAILED=1; exit 1; }
note() { echo "-- $*"; }

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" # wait_for, wait_exit
expect_log() { grep -qE -- "$2" "$1" || fail "$1 lacks /$2/"; }
[ -f "$MODEL" ] || fail "$MODEL missing"

# start_coordinator NAME ARGS...: sets COORD_PID and COORD_EP.
start_coordinator() {
    local name=$1
    shift
    "$CARAVAN" coordinator --insecure --listen tcp://127.0.0.1:0 --run-ms 60000 --model "$MODEL" \
        "$@" >"$WORK/$name.out" 2>"$WORK/$name.log" &
    COORD_PID=$!
    PIDS+=("$COORD_PID")
    wait_for "$WORK/$name.log" "listening on tcp://" 10 || fail "$name did not start"
    COORD_EP=$(grep -oE 'listening on tcp://[0-9.]+:[0-9]+' "$WORK/$name.log" | head -n1 |
        awk '{print $3}')
}
# start_workers COORD_NAME PREFIX N ARGS...: PREFIX1..PREFIXN in join order (so stage order);
# ARGS apply to all; per-worker extra arguments come from the array WARGS_<i> when set.
start_workers() {
    local coord=$1 prefix=$2 n=$3
    shift 3
    WPIDS=()
    for i in $(seq 1 "$n"); do
        local extra_name="WARGS_${i}[@]" # the case's extra options for this worker, if any
        "$CARAVAN" worker --insecure --coordinator "$COORD_EP" --name "$prefix$i" --run-ms 60000 \
            --join-timeout-ms 8000 --threads 1 "$@" ${!extra_name+"${!extra_name}"} \
            >/dev/null 2>"$WORK/$prefix$i.log" &
        WPIDS+=($!)
        PIDS+=($!)
        wait_for "$WORK/$coord.log" "worker '$prefix$i' joined" 15 || fail "$prefix$i did not join"
    done
}

# cluster_answer NAME N COORD_ARGS... -- SAMPLING...: sets ANSWER to the text a cluster of N
# workers gives (not in a subshell: its processes stay this shell's to clean up).
cluster_answer() {
    local name=$1 n=$2
    shift 2
    local cargs=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do cargs+=("$1"); shift; done
    shift
    start_coordinator "$name" --workers "$n" --ask "$PROMPT" "$@" "${cargs[@]}"
    start_workers "$name" "$name-w" "$n" --model "$MODEL"
    wait_exit "$COORD_PID" 60
    [ "$RC" = 0 ] || fail "$name: coordinator exit status $RC"
    ANSWER=$(cat "$WORK/$name.out")
    for pid in "${WPIDS[@]}"; do kill "$pid" 2>/dev/null; done
}

case "$CASE" in
nofit)
    # stories260K with the default --ctx 2048 x --max-seqs 8 needs ~24 MiB over two workers.
    start_coordinator coord --workers 2
    WARGS_1=(--max-memory 3M)
    WARGS_2=(--max-memory 3M)
    start_workers coord w 2 --model "$MODEL"
    wait_exit "$COORD_PID" 10
    [ "$RC" = 1 ] || fail "coordinator exit status $RC, want 1"
    expect_log "$WORK/coord.log" "the cluster cannot hold the model: it needs [0-9.]+ MiB in all"
    expect_log "$WORK/coord.log" "KV cache [0-9.]+ MiB for n_ctx 2048 x n_seq 8"
    expect_log "$WORK/coord.log" "the 2 workers offer 6.0 MiB"
    expect_log "$WORK/coord.log" "w1 layers 0-[0-9]+ needs [0-9.]+ MiB .*offered 3.0 MiB \\(too little\\)"
    expect_log "$WORK/coord.log" "w2 layers [0-9]+-4 needs [0-9.]+ MiB .*offered 3.0 MiB \\(too little\\)"
    for i in 0 1; do
        wait_exit "${WPIDS[$i]}" 10
        [ "$RC" = 1 ] || fail "worker $((i + 1)) exit status $RC, want 1"
    done
    expect_log "$WORK/w1.log" "cannot hold the model"
    # The same cluster with room for the model plans and loads.
    start_coordinator coord2 --workers 2 --ask "$PROMPT" -n 8 --temp 0
    WARGS_1=(--max-memory 40M)
    WARGS_2=(--max-memory 40M)
    start_workers coord2 v 2 --model "$MODEL"
    wait_exit "$COORD_PID" 30
    [ "$RC" = 0 ] || fail "with 40M each: coordinator exit status $RC"
    ;;

hand_nofit)
    start_coordinator coord --workers 2 --plan 0-3,4
    WARGS_1=(--max-memory 10M)
    WARGS_2=()
    start_workers coord w 2 --model "$MODEL"
    wait_exit "$COORD_PID" 10
    [ "$RC" = 1 ] || fail "coordinator exit status $RC, want 1"
    expect_log "$WORK/coord.log" "the plan does not fit the workers' memory \\(n_ctx 2048 x n_seq 8\\)"
    expect_log "$WORK/coord.log" "w1 layers 0-3 needs [0-9.]+ MiB \\(weights [0-9.]+, KV 16.0, buffers [0-9.]+\\), offered 10.0 MiB \\(too little\\)"
    ;;

fit)
    # w2 may use 7 MiB: one layer (~0.3 MiB of weights with the head, 4 MiB of KV, ~1.2 MiB of
    # buffers) fits, two do not; w1 has no limit beyond the machine's.
    start_coordinator coord --workers 2 --ask "$PROMPT" -n 16 --temp 0
    # shellcheck disable=SC2034 # read by start_workers as WARGS_$i
    WARGS_1=()
    # shellcheck disable=SC2034
    WARGS_2=(--max-memory 7M)
    start_workers coord w 2 --model "$MODEL"
    wait_exit "$COORD_PID" 30
    [ "$RC" = 0 ] || fail "coordinator exit status $RC"
    expect_log "$WORK/coord.log" "w2 +layers +4-4 .* of 7.0 MiB"
    expect_log "$WORK/w2.log" "loaded layers \\[4, 5\\)"
    # What the worker really allocated stays within its limit.
    line=$(grep -E "loaded layers" "$WORK/w2.log" | head -n1)
    used=$(echo "$line" | sed -E 's/.*\(([0-9.]+) MiB of weights, ([0-9.]+) MiB of KV.*/\1 \2/' |
        awk '{print $1 + $2}')
    awk -v u="$used" 'BEGIN { exit !(u > 0 && u <= 7.0) }' || fail "w2 uses $used MiB of 7"
    note "w2 holds layer 4 in $used MiB of its 7 MiB"
    want=$("$CARAVAN" run -m "$MODEL" --prompt "$PROMPT" -n 16 --temp 0 2>/dev/null)
    [ "$(cat "$WORK/coord.out")" = "$want" ] || fail "answer differs from caravan run"
    ;;

same_tokens)
    # avx2 (pinned by hand): greedy and seeded, 1, 2 and 3 workers and a hand plan.
    for mode in greedy seeded; do
        if [ "$mode" = greedy ]; then samp=(-n 24 --temp 0); else
            samp=(-n 24 --temp 0.9 --seed 42 --top-k 40 --top-p 0.95); fi
        want=$("$CARAVAN" run -m "$MODEL" --prompt "$PROMPT" --kernels avx2 "${samp[@]}" \
            2>/dev/null) || fail "caravan run --kernels avx2"
        [ -n "$want" ] || fail "caravan run gave nothing"
        for n in 1 2 3; do
            cluster_answer "c$mode$n" "$n" --kernels avx2 -- "${samp[@]}"
            got=$ANSWER
            [ "$got" = "$want" ] || fail "$mode, $n workers: '$got' != caravan run '$want'"
            expect_log "$WORK/c$mode$n-w$n.log" "loaded layers .*kernels avx2"
        done
        cluster_answer "h$mode" 3 --kernels avx2 --plan 0-2,3,4 -- "${samp[@]}"
        got=$ANSWER
        [ "$got" = "$want" ] || fail "$mode, --plan 0-2,3,4: '$got' != caravan run '$want'"
        expect_log "$WORK/h$mode-w1.log" "loaded layers \\[0, 3\\)"
        note "$mode, kernels avx2: 1, 2, 3 workers and a hand plan give caravan run's text"
    done
    # The scalar reference kernels through two workers.
    want=$("$CARAVAN" run -m "$MODEL" --prompt "$PROMPT" --kernels ref -n 24 --temp 0 2>/dev/null)
    cluster_answer ref 2 --kernels ref -- -n 24 --temp 0
    got=$ANSWER
    [ "$got" = "$want" ] || fail "kernels ref, 2 workers: '$got' != caravan run '$want'"
    expect_log "$WORK/ref-w1.log" "loaded layers .*kernels ref"
    # Without --kernels the coordinator pins the best variant every worker has.
    cluster_answer pick 2 -- -n 24 --temp 0
    got=$ANSWER
    kern=$(grep -oE "kernels [a-z0-9]+:" "$WORK/pick.log" | head -n1 | awk '{print $2}' | tr -d :)
    [ -n "$kern" ] || fail "the coordinator logged no kernel pick"
    want=$("$CARAVAN" run -m "$MODEL" --prompt "$PROMPT" --kernels "$kern" -n 24 --temp 0 \
        2>/dev/null)
    [ "$got" = "$want" ] || fail "default pick $kern: differs from caravan run --kernels $kern"
    expect_log "$WORK/pick-w2.log" "loaded layers .*kernels $kern"
    note "default pick: $kern"
    ;;

cluster_json)
    start_coordinator coord --workers 2 --http 127.0.0.1:0 --status-file "$WORK/status" \
        --kernels avx2 --max-seqs 4 --ctx 512
    # shellcheck disable=SC2034 # read by start_workers as WARGS_$i
    WARGS_1=()
    # shellcheck disable=SC2034
    WARGS_2=(--max-memory 7M)
    start_workers coord w 2 --model "$MODEL"
    wait_for "$WORK/status" "^serving" 20 || fail "the cluster did not start serving"
    url=$(awk '$1 == "http" {print $2}' "$WORK/status")
    [ -n "$url" ] || fail "no http line in the status file"
    curl -sf "$url/cluster" >"$WORK/cluster.json" || fail "GET /cluster failed"
    api_md="$(cd "$(dirname "$0")/../.." && pwd)/coordinator/API.md"
    python3 - "$WORK/cluster.json" "$api_md" <<'PY' || fail "/cluster: $(head -c 600 "$WORK/cluster.json")"
import json, re, sys
c = json.load(open(sys.argv[1]))
# API.md's lists name every field of the document and of a worker, and no other
text = open(sys.argv[2]).read().split("## The cluster document (`GET /cluster`)")[1]
text = text.split("\n## ")[0]
top, each = text.split("Each worker:")
def named(part):
    return {n for line in part.splitlines() if line.startswith("- `")
            for n in re.findall(r"`([a-z_]+)`", line[2:].split(": ")[0])}
assert named(top) == set(c), ("top level, API.md / document", named(top) ^ set(c))
for x in c["workers"]:
    assert named(each) == set(x), ("a worker, API.md / document", named(each) ^ set(x))
assert c["kernels"] == "avx2" and c["n_ctx"] == 512 and c["n_seq"] == 4, c
w = c["workers"]
assert len(w) == 2 and w[0]["layer_first"] == 0 and w[-1]["layer_end"] == 5, w
assert w[0]["layer_end"] == w[1]["layer_first"], w
assert w[1]["mem_limit_bytes"] == 7 << 20, w[1]
for x in w:
    assert 0 < x["planned_bytes"] and x["speed"] > 0, x
    assert x["mem_limit_bytes"] == 0 or x["planned_bytes"] <= x["mem_limit_bytes"], x
    # one machine, one clock: hop times need no estimated offset
    assert x["clock"] == "same" and x["clock_offset_us"] == 0, x
PY
    ;;

bad_options)
    "$CARAVAN" coordinator --insecure --listen tcp://127.0.0.1:0 --model "$MODEL" --workers 2 \
        --plan 0-3 --run-ms 5000 >"$WORK/p.out" 2>"$WORK/p.log"
    [ $? = 2 ] || fail "--plan with one range for 2 workers was accepted"
    expect_log "$WORK/p.log" "--plan: plan '0-3': 1 range for 2 workers"
    "$CARAVAN" coordinator --insecure --listen tcp://127.0.0.1:0 --model "$MODEL" --workers 2 \
        --plan 0-1,3-4 --run-ms 5000 >"$WORK/p.out" 2>"$WORK/p.log"
    [ $? = 2 ] || fail "--plan with a gap was accepted"
    expect_log "$WORK/p.log" "a gap"
    "$CARAVAN" coordinator --insecure --listen tcp://127.0.0.1:0 --model "$MODEL" --workers 6 \
        --run-ms 5000 >"$WORK/w.out" 2>"$WORK/w.log"
    [ $? = 2 ] || fail "--workers 6 for a 5-layer model was accepted"
    expect_log "$WORK/w.log" "the model has 5 layers, so at most 5 workers"
    "$CARAVAN" cluster --model "$MODEL" --workers 6 --prompt x -n 1 --log-dir "$WORK/cl" \
        >"$WORK/cl.out" 2>"$WORK/cl.log"
    [ $? = 1 ] || fail "caravan cluster --workers 6 for a 5-layer model did not fail"
    expect_log "$WORK/cl.log" "at most 5 workers"
    "$CARAVAN" coordinator --insecure --listen tcp://127.0.0.1:0 --model "$MODEL" --workers 1 \
        --kernels avx9 --run-ms 5000 >"$WORK/k.out" 2>"$WORK/k.log"
    [ $? = 2 ] || fail "--kernels avx9 was accepted"
    expect_log "$WORK/k.log" "no such kernel variant"
    "$CARAVAN" run -m "$MODEL" --prompt x -n 1 --kernels avx9 >/dev/null 2>"$WORK/r.log"
    [ $? = 2 ] || fail "caravan run --kernels avx9 was accepted"
    ;;

*) fail "unknown case" ;;
esac
echo "PASS ($CASE)"
