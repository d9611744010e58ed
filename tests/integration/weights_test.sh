#!/usr/bin/env bash
# weights_test.sh: workers without the model file compute from shipped, cached slices.
# Real coordinator and worker processes on 127.0.0.1 (CURVE), stories260K split over two
# workers, each with its own --cache directory:
#   (a) both workers are shipped their slices, verify and cache them (<hex>.gguf, a GGUF that
#       `caravan inspect` reads), and the pipeline generates llama.cpp's greedy tokens, the
#       same as workers with --model (cluster_test.sh generate);
#   (b) restarted with the same caches they transfer nothing (the worker logs it, the Join
#       reports the cached slice, the coordinator ships nothing) and generate the same tokens;
#   (c) w2's transfer (throttled by --weight-rate-limit) is cut by kill -9 after its first
#       progress line; restarted, it resumes from the .part's size (> 0), completes, verifies
#       and the pipeline generates the same tokens;
#   (d) re-planned onto all five layers alone, w1 copies the tensors of layers 0-1 (and the
#       embeddings) from its cached [0, 2) slice and is shipped only the rest: the coordinator
#       ships fewer bytes than the slice holds, the slice verifies, the tokens are the same,
#       and the [0, 2) slice, inside the new one, is deleted from the cache.
# `weights_test.sh overlap` instead (heavy: a 637 MB `caravan mkmodel` tinyllama-1.1b Q4_0, so
# that the copy lasts while chunks arrive): two workers are shipped [0, 11) and [11, 22); then
# w1 alone gets [0, 22), copies [0, 11) from its cache while [11, 22) arrives (chunks written
# past the copy, > 0 bytes of them), verifies it, and generates the two-worker run's tokens.
# Needs CARAVAN_BIN and CARAVAN_SHARED. Every process started here is killed on exit, and each
# daemon also has a --run-ms bound.
set -u
BIN=${CARAVAN_BIN:?CARAVAN_BIN not set}
CARAVAN="$BIN/caravan"
MODEL="${CARAVAN_SHARED:-/nonexistent}/models/stories260K.gguf"
WORK=$(mktemp -d /tmp/caravan_weights.XXXXXX)
export XDG_CACHE_HOME="$WORK/xdg" # nothing goes to the real ~/.cache
FAILED=0
STEP=setup

# Signals go only to children still running (bash's job table): a PID that has exited may
# already belong to another process (pid_max is 32768 here and the machine is busy).
running() { jobs -pr | grep -qx -- "$1"; }
kill_job() { running "$2" && kill "$1" "$2" 2>/dev/null; }

cleanup() {
    for pid in $(jobs -pr); do kill -9 "$pid" 2>/dev/null; done
    wait 2>/dev/null
    if [ "$FAILED" -ne 0 ] || [ -n "${CARAVAN_TEST_VERBOSE:-}" ]; then
        for f in "$WORK"/*.log "$WORK"/*.out; do
            [ -f "$f" ] && { echo "==== $f"; tail -n 40 "$f"; }
        done
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

fail() { echo "FAIL ($STEP): $*"; FAILED=1; exit 1; }
note() { echo "-- $*"; }
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" # wait_for, wait_exit
expect_log() { grep -qE -- "$2" "$1" || fail "$1 lacks /$2/"; }
expect_no_log() { ! grep -qE -- "$2" "$1" || fail "$1 has /$2/: $(grep -E -- "$2" "$1" | head -n 2)"; }

[ -f "$MODEL" ] || fail "$MODEL missing"
for k in c w1 w2; do "$CARAVAN" keygen --out "$WORK/$k" >"$WORK/$k.pub.txt" || fail "keygen $k"; done
cat "$WORK/w1.pub.txt" "$WORK/w2.pub.txt" >"$WORK/allow"
if [ "${1:-}" = overlap ]; then
    STEP=mkmodel
    timeout 120 "$CARAVAN" mkmodel --shape tinyllama-1.1b --type q4_0 --out "$WORK/tl.gguf" \
        >"$WORK/mkmodel.log" 2>&1 || fail "mkmodel failed"
    MODEL="$WORK/tl.gguf"
fi

# llama.cpp's greedy continuation of "Once upon a time" (shared/models/REFERENCE.md), 24 tokens.
WANT="432 383 286 261 376 298 315 421 395 317 426 338 401 396 267 337 410 408 419 292 411 322 265 282"

# start_coordinator RUN [WORKERS PLAN]: a coordinator that generates WANT's length once, then
# exits. The plan is fixed by hand (0-1,2-4 on two workers unless given): the planner splits by
# measured speed, which may differ from run to run, and a different range is a different slice.
start_coordinator() {
    "$CARAVAN" coordinator --listen tcp://127.0.0.1:0 --key "$WORK/c" --allow "$WORK/allow" \
        --workers "${2:-2}" --plan "${3:-0-1,2-4}" --model "$MODEL" --prompt "Once upon a time" --generate 24 \
        --exit-when-done --run-ms 60000 >"$WORK/coord_$1.out" 2>"$WORK/coord_$1.log" &
    COORD_PID=$!
    wait_for "$WORK/coord_$1.log" "listening on tcp://" 10 || fail "coordinator did not start"
    COORD_EP=$(grep -oE 'listening on tcp://[0-9.]+:[0-9]+' "$WORK/coord_$1.log" | head -n1 |
        awk '{print $3}')
}
# start_worker NAME RUN ARGS...: no --model; joins in order (w1 is stage 0). Sets WORKER_PID.
start_worker() {
    local name=$1 run=$2
    shift 2
    "$CARAVAN" worker --coordinator "$COORD_EP" --coordinator-key "$WORK/c" --key "$WORK/$name" \
        --name "$name" --threads 1 --run-ms 60000 --join-timeout-ms 8000 "$@" \
        2>"$WORK/${name}_$run.log" &
    WORKER_PID=$!
    wait_for "$WORK/coord_$run.log" "worker '$name' (re-)?joined" 15 || fail "$name did not join"
}
# expect_tokens RUN: the coordinator exited 0 after generating WANT.
expect_tokens() {
    wait_exit "$COORD_PID" 60
    [ "$RC" = 0 ] || fail "coordinator exit status $RC, want 0"
    grep -qF "generated 1/1: $WANT |" "$WORK/coord_$1.out" ||
        fail "tokens differ from the reference: $(head -c 300 "$WORK/coord_$1.out")"
}
stop_workers() {
    for pid in "$@"; do kill_job -TERM "$pid"; done
    for pid in "$@"; do wait_exit "$pid" 10; done
}

# tokens RUN: the coordinator exited 0 after generating; the tokens it printed.
tokens() {
    wait_exit "$COORD_PID" 90
    [ "$RC" = 0 ] || fail "coordinator exit status $RC, want 0"
    grep -oE "generated 1/1: [0-9 ]+ \|" "$WORK/coord_$1.out" | head -n1
}

if [ "${1:-}" = overlap ]; then
    STEP=overlap
    start_coordinator o1 2 0-10,11-21
    start_worker w1 o1 --cache "$WORK/cache1"
    W1=$WORKER_PID
    start_worker w2 o1 --cache "$WORK/cache2"
    W2=$WORKER_PID
    two=$(tokens o1)
    [ -n "$two" ] || fail "no tokens from two workers: $(head -c 300 "$WORK/coord_o1.out")"
    stop_workers "$W1" "$W2"
    start_coordinator o2 1 0-21
    start_worker w1 o2 --cache "$WORK/cache1"
    W1=$WORKER_PID
    one=$(tokens o2)
    [ "$one" = "$two" ] || fail "tokens differ: one worker '$one', two '$two'"
    line=$(grep -oE "[0-9]+ bytes copied from cached slices, [0-9]+ transferred \([0-9]+ of them while the copy ran\)" \
        "$WORK/w1_o2.log" | head -n1)
    [ -n "$line" ] || fail "w1 did not copy from its cache: $(grep -E "cached|copied" "$WORK/w1_o2.log" | head -n 3)"
    read -r copied _ _ _ _ _ sent _ during _ <<<"$line"
    during=${during#(}
    [ "$copied" -gt 100000000 ] && [ "$during" -gt 0 ] && [ "$during" -le "$sent" ] ||
        fail "copied $copied, shipped $sent, $during of them while the copy ran"
    expect_log "$WORK/w1_o2.log" "received [0-9]+ bytes of weights; fingerprint verified"
    [ -z "$(ls "$WORK"/cache1/*.part* 2>/dev/null)" ] || fail "a part is left: $(ls "$WORK/cache1")"
    stop_workers "$W1"
    note "overlap: $copied bytes copied while $sent arrived ($during of them during the copy); tokens match"
    echo "PASS (weights overlap)"
    exit 0
fi

# ---- (a) shipped, verified, cached ----------------------------------------------------------
STEP=a
start_coordinator a
start_worker w1 a --cache "$WORK/cache1"
W1=$WORKER_PID
start_worker w2 a --cache "$WORK/cache2"
W2=$WORKER_PID
expect_tokens a
for i in 1 2; do
    w="w$i"
    expect_log "$WORK/${w}_a.log" "received [0-9]+ bytes of weights; fingerprint verified; cached as $WORK/cache$i/[0-9a-f]{64}\\.gguf"
    expect_log "$WORK/${w}_a.log" "loaded layers .* of $WORK/cache$i/[0-9a-f]{64}\\.gguf"
    # The file is named by the fingerprint the coordinator assigned, and it hashes to it.
    fp=$(grep -oE "stage $((i - 1)): node [0-9]+ \\($w\\) layers \\[[0-9]+, [0-9]+\\) slice [0-9a-f]{64}" \
        "$WORK/coord_a.log" | awk '{print $NF}')
    [ -n "$fp" ] || fail "the coordinator did not log $w's slice fingerprint"
    [ -f "$WORK/cache$i/$fp.gguf" ] || fail "$w's cache has no $fp.gguf: $(ls "$WORK/cache$i")"
    [ "$(stat -c %a "$WORK/cache$i")" = 700 ] || fail "cache$i is not mode 700"
    "$CARAVAN" inspect --kv "$WORK/cache$i/$fp.gguf" >"$WORK/inspect$i.out" 2>&1 ||
        fail "caravan inspect cannot read $w's cached slice"
done
expect_log "$WORK/inspect1.out" "slice: +layers \\[0, 2\\) of 5, of model [0-9a-f]{64}"
expect_log "$WORK/inspect2.out" "caravan.slice.layer_end +u32 +5"
expect_log "$WORK/inspect2.out" "tokenizer.ggml.tokens"
expect_log "$WORK/coord_a.log" "shipping weights to node 1 \\(a slice of [0-9]+ bytes\\)"
expect_log "$WORK/coord_a.log" "shipping weights to node 2 \\(a slice of [0-9]+ bytes\\)"
stop_workers "$W1" "$W2"
note "(a) shipped, verified, cached; tokens match"

# ---- (b) restarted: nothing transferred ------------------------------------------------------
STEP=b
start_coordinator b
start_worker w1 b --cache "$WORK/cache1"
W1=$WORKER_PID
start_worker w2 b --cache "$WORK/cache2"
W2=$WORKER_PID
expect_tokens b
for w in w1 w2; do
    expect_log "$WORK/${w}_b.log" "joining \\(activation endpoint .*, 1 cached slice\\)"
    expect_log "$WORK/${w}_b.log" "found in the cache .* and verified; nothing to transfer"
    expect_no_log "$WORK/${w}_b.log" "receiving slice|weights [0-9.]+/"
done
expect_no_log "$WORK/coord_b.log" "shipping weights"
stop_workers "$W1" "$W2"
note "(b) restarted with the caches: nothing transferred; tokens match"

# ---- (c) a transfer cut in the middle resumes -------------------------------------------------
STEP=c
start_coordinator c1
start_worker w1 c1 --cache "$WORK/cache1"
W1=$WORKER_PID
start_worker w2 c1 --cache "$WORK/cache3" --weight-rate-limit 50000
W2=$WORKER_PID
# below half way, so the transfer cannot finish between the line and the kill on a busy machine
# (a progress line at 9x% once let it complete first: no .part was left)
wait_for "$WORK/w2_c1.log" "weights [0-9.]+/[0-9.]+ MB \\(([0-9]|[1-4][0-9])%\\)" 20 || fail "no progress line below 50%"
kill_job -9 "$W2" || fail "w2 ended before it was cut"
wait_exit "$W2" 10 2>/dev/null # (no "Killed" job notice in the test output)
part=$(ls "$WORK"/cache3/*.gguf.part 2>/dev/null | head -n1)
[ -n "$part" ] || fail "no .part left behind: $(ls -la "$WORK/cache3")"
cut=$(stat -c %s "$part")
total=$(grep -oE "receiving slice [0-9a-f]+ of layers \\[[0-9]+, [0-9]+\\), [0-9]+ bytes" \
    "$WORK/w2_c1.log" | awk '{print $(NF-1)}')
[ "$cut" -gt 0 ] && [ "$cut" -lt "$total" ] || fail "part holds $cut of $total bytes"
kill_job -TERM "$COORD_PID"
kill_job -TERM "$W1"
wait_exit "$COORD_PID" 10
wait_exit "$W1" 10
note "(c) cut at $cut of $total bytes"
start_coordinator c2
start_worker w1 c2 --cache "$WORK/cache1"
W1=$WORKER_PID
start_worker w2 c2 --cache "$WORK/cache3"
W2=$WORKER_PID
expect_tokens c2
expect_log "$WORK/w2_c2.log" "resuming the transfer of slice [0-9a-f]+ at offset $cut of $total bytes"
expect_log "$WORK/w2_c2.log" "received $total bytes of weights; fingerprint verified"
expect_no_log "$WORK/coord_c2.log" "shipping weights to node 2 \\(a slice of [0-9]+ bytes\\)" # no offset 0
[ -z "$(ls "$WORK"/cache3/*.part 2>/dev/null)" ] || fail "the .part is still there"
stop_workers "$W1" "$W2"
note "(c) resumed from offset $cut; verified; tokens match"

# ---- (d) a wider range: what the cache holds is copied, the rest shipped ----------------------
STEP=d
start_coordinator d 1 0-4
start_worker w1 d --cache "$WORK/cache1"
W1=$WORKER_PID
expect_tokens d
expect_log "$WORK/w1_d.log" "are in slices already cached; copying them"
expect_log "$WORK/w1_d.log" "[0-9]+ bytes copied from cached slices, [0-9]+ transferred"
expect_log "$WORK/w1_d.log" "received [0-9]+ bytes of weights; fingerprint verified"
line=$(grep -oE "shipped [0-9]+ bytes of weights to node [0-9]+ \\(of a slice of [0-9]+\\)" \
    "$WORK/coord_d.log" | head -n1)
[ -n "$line" ] || fail "the coordinator did not log what it shipped"
sent=$(echo "$line" | awk '{print $2}')
whole=$(echo "$line" | grep -oE '[0-9]+\)$' | tr -d ')')
copied=$(grep -oE "[0-9]+ bytes copied from cached slices" "$WORK/w1_d.log" | awk '{print $1}')
[ "$sent" -lt "$whole" ] && [ $((sent + copied)) -eq "$whole" ] ||
    fail "shipped $sent + copied $copied bytes, the slice holds $whole"
# the [0, 2) slice is inside [0, 5): deleted, only the new slice stays
expect_log "$WORK/w1_d.log" "cache: removed $WORK/cache1/[0-9a-f]{64}\\.gguf \\(layers \\[0, 2\\)"
n=$(ls "$WORK"/cache1/*.gguf | wc -l)
[ "$n" = 1 ] || fail "cache1 holds $n slices, want 1: $(ls "$WORK/cache1")"
stop_workers "$W1"
note "(d) layers [0, 5): $copied bytes copied from the cached [0, 2), $sent of $whole shipped; [0, 2) deleted"
echo "PASS (weights)"
exit 0
