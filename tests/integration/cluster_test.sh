#!/usr/bin/env bash
# cluster_test.sh CASE: real coordinator and worker processes on 127.0.0.1 (ports chosen by
# the OS: daemons bind port 0 and log the endpoint), each case checking one security property.
#
#   unknown_key   a worker whose key is not in --allow is refused; both sides log it
#   join          listed workers join, get Assigns, and a request crosses the chain intact
#   inject        peers the coordinator did not assign (own key, another worker's key, a
#                 public key without its secret, plaintext) cannot inject activations;
#   inject_control the same probe with the assigned key gets through (the check can fail)
#   garbage       garbage, truncated, oversized, multi-frame and plaintext frames and raw TCP
#                 bytes on every listening port leave the daemons serving
#   version       a protocol version mismatch is refused with a message naming both versions
#   insecure      --insecure on every node works and warns; mixing it with CURVE is refused
#   generate      the real model split over three workers generates llama.cpp's tokens
#   fingerprint   a worker with a tampered model refuses it; shipped weights are verified
#   coordinator_lost  a worker exits 1 when its coordinator falls silent
#
# Needs CARAVAN_BIN (the bin/ directory with caravan and net_probe). Every process started
# here is killed on exit, and each daemon also has a --run-ms bound.
set -u
CASE=${1:?usage: cluster_test.sh CASE}
BIN=${CARAVAN_BIN:?CARAVAN_BIN not set}
CARAVAN="$BIN/caravan"
PROBE="$BIN/net_probe"
MODEL="${CARAVAN_SHARED:-/nonexistent}/models/stories260K.gguf"
WORK=$(mktemp -d /tmp/caravan_cluster.XXXXXX)
export XDG_CACHE_HOME="$WORK/xdg" # workers without --model cache their slices here
PIDS=()
FAILED=0

# Only children still running (bash's job table) are signalled: a PID that already exited may
# belong to another process by now (pid_max is 32768 and the machine is busy).
cleanup() {
    for pid in $(jobs -pr); do kill "$pid" 2>/dev/null; done
    wait 2>/dev/null
    if [ "$FAILED" -ne 0 ] || [ -n "${CARAVAN_TEST_VERBOSE:-}" ]; then
        for f in "$WORK"/*.log "$WORK"/*.out; do
            [ -f "$f" ] && { echo "==== $f"; tail -n 60 "$f"; }
        done
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

fail() { echo "FAIL ($CASE): $*"; FAILED=1; exit 1; }
note() { echo "-- $*"; }

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" # wait_for, wait_exit
expect_log() { grep -qE -- "$2" "$1" || fail "$1 lacks /$2/"; }
expect_no_log() { ! grep -qE -- "$2" "$1" || fail "$1 has /$2/: $(grep -E -- "$2" "$1" | head -n 2)"; }

keygen() { "$CARAVAN" keygen --out "$WORK/$1" >"$WORK/$1.pub.txt" || fail "keygen $1"; }

# start_coordinator NAME ARGS...: starts it; sets COORD_PID and COORD_EP.
start_coordinator() {
    local name=$1
    shift
    "$CARAVAN" coordinator --listen tcp://127.0.0.1:0 --run-ms 60000 "$@" \
        >"$WORK/$name.out" 2>"$WORK/$name.log" &
    COORD_PID=$!
    PIDS+=("$COORD_PID")
    wait_for "$WORK/$name.log" "listening on tcp://" 10 || fail "$name did not start"
    COORD_EP=$(grep -oE 'listening on tcp://[0-9.]+:[0-9]+' "$WORK/$name.log" | head -n1 |
        awk '{print $3}')
}
# start_worker NAME ARGS...: sets WORKER_PID; its activation endpoint is in its log.
start_worker() {
    local name=$1
    shift
    "$CARAVAN" worker --coordinator "$COORD_EP" --name "$name" --run-ms 60000 \
        --join-timeout-ms 8000 "$@" 2>"$WORK/$name.log" &
    WORKER_PID=$!
    PIDS+=("$WORKER_PID")
}
# start_workers_in_order N ARGS...: w1..wN, each after the previous joined, so wI is stage I-1.
start_workers_in_order() {
    local n=$1
    shift
    for i in $(seq 1 "$n"); do
        start_worker "w$i" --coordinator-key "$WORK/c" --key "$WORK/w$i" "$@"
        eval "W${i}PID=$WORKER_PID"
        wait_for "$WORK/coord.log" "worker 'w$i' (re-)?joined" 15 || fail "w$i did not join"
    done
}
# The worker started last must give up, exit status 1, within 15 s ($1: which case, for the message).
worker_gives_up() {
    wait_exit "$WORKER_PID" 15
    [ "$RC" = 1 ] || fail "$1: worker exit status $RC, want 1"
}
activation_ep() {
    grep -oE 'activation socket listening on tcp://[0-9.]+:[0-9]+' "$WORK/$1.log" | head -n1 |
        awk '{print $5}'
}
port_of() { echo "${1##*:}"; }

# secure_cluster N ARGS...: keys for c, w1..wN, allow-list of w1..wN; coordinator started.
secure_keys() {
    keygen c
    : >"$WORK/allow"
    for i in $(seq 1 "$1"); do
        keygen "w$i"
        echo "# worker w$i" >>"$WORK/allow"
        cat "$WORK/w$i.pub.txt" >>"$WORK/allow"
    done
}

case "$CASE" in
unknown_key)
    secure_keys 1
    keygen stranger
    start_coordinator coord --key "$WORK/c" --allow "$WORK/allow" --workers 1
    start_worker stranger --coordinator-key "$WORK/c" --key "$WORK/stranger"
    STRANGER=$WORKER_PID
    wait_exit "$STRANGER" 15; rc=$RC
    [ "$rc" = 1 ] || fail "stranger worker exit status $rc, want 1"
    expect_log "$WORK/stranger.log" "cannot join the coordinator.*refused our CURVE key"
    KEY=$(cat "$WORK/stranger.pub.txt")
    grep -qF -- "refused control connection from 127.0.0.1: CURVE key $KEY is not allowed" \
        "$WORK/coord.log" || fail "coordinator did not log the refusal of $KEY"
    expect_no_log "$WORK/coord.log" "joined as node"
    # The coordinator still admits a listed worker afterwards.
    start_worker w1 --coordinator-key "$WORK/c" --key "$WORK/w1"
    wait_for "$WORK/coord.log" "worker 'w1' joined as node 1" 15 || fail "w1 did not join"
    ;;

join)
    secure_keys 2
    start_coordinator coord --key "$WORK/c" --allow "$WORK/allow" --workers 2 \
        --prompt "the quick brown fox" --repeat 3 --exit-when-done
    start_worker w1 --coordinator-key "$WORK/c" --key "$WORK/w1"
    start_worker w2 --coordinator-key "$WORK/c/key.pub" --key "$WORK/w2"  # a key.pub works too
    wait_exit "$COORD_PID" 20; rc=$RC
    [ "$rc" = 0 ] || fail "coordinator exit status $rc, want 0"
    for w in w1 w2; do
        expect_log "$WORK/coord.log" "worker '$w' joined as node [12] from 127.0.0.1 \\(key $(cat "$WORK/$w.pub.txt" | sed 's/[][\\.*^$(){}?+|/]/\\&/g')\\)"
        expect_log "$WORK/$w.log" "joined as node [12]"
        expect_log "$WORK/$w.log" "assigned layers \\[[0-9]+, [0-9]+\\) of 8, epoch 1"
    done
    [ "$(grep -c 'payload intact (19 bytes, 2 hops)' "$WORK/coord.out")" = 3 ] ||
        fail "want 3 intact results"
    expect_no_log "$WORK/coord.log" "refused"
    ;;

inject)
    secure_keys 2
    keygen rogue
    start_coordinator coord --key "$WORK/c" --allow "$WORK/allow" --workers 2 \
        --prompt "legit" --repeat 1
    start_workers_in_order 2
    wait_for "$WORK/coord.out" "payload intact" 20 || fail "pipeline did not come up"
    W1=$(activation_ep w1)
    W2=$(activation_ep w2)
    note "w1 activations at $W1 (upstream: coordinator), w2 at $W2 (upstream: w1)"
    # A stranger with its own key pair, and a plaintext peer, at both workers.
    "$PROBE" inject "$W1" "$WORK/w1" "$WORK/rogue" 2 >>"$WORK/probe.out" 2>&1
    "$PROBE" inject "$W2" "$WORK/w2" "$WORK/rogue" 2 >>"$WORK/probe.out" 2>&1
    "$PROBE" null "$W1" push >>"$WORK/probe.out" 2>&1
    "$PROBE" null "$W2" push >>"$WORK/probe.out" 2>&1
    # Valid cluster members at the wrong place: w2 into w1, the coordinator into w2.
    "$PROBE" inject "$W1" "$WORK/w1" "$WORK/w2" 2 >>"$WORK/probe.out" 2>&1
    "$PROBE" inject "$W2" "$WORK/w2" "$WORK/c" 2 >>"$WORK/probe.out" 2>&1
    # Someone who knows w1's public key (w2's upstream) but not its secret.
    "$PROBE" inject "$W2" "$WORK/w2" "pub:$WORK/w1" 2 >>"$WORK/probe.out" 2>&1
    sleep 0.5
    refused() { grep -qF -- "refused activation connection from 127.0.0.1: CURVE key $(cat "$WORK/$2.pub.txt") is not allowed" "$WORK/$1.log"; }
    refused w1 rogue || fail "w1 did not log refusing the rogue key"
    refused w2 rogue || fail "w2 did not log refusing the rogue key"
    refused w1 w2 || fail "w1 did not refuse w2's key"
    refused w2 c || fail "w2 did not refuse the coordinator's key"
    # The plaintext peers and the key without its secret fail the handshake itself.
    expect_log "$WORK/w1.log" "activation socket .*(handshake failed|mechanism mismatch)"
    expect_log "$WORK/w2.log" "activation socket .*(handshake failed|mechanism mismatch)"
    # Nothing injected was computed: no Result of the rogue batch, and each worker computed
    # exactly the one legitimate request.
    expect_no_log "$WORK/coord.log" "batch 424242"
    kill "$W1PID" "$W2PID"
    wait_exit "$W1PID" 10
    wait_exit "$W2PID" 10
    expect_log "$WORK/w1.log" "exiting: .*\\(1 batches computed,"
    expect_log "$WORK/w2.log" "exiting: .*\\(1 batches computed,"
    ;;

inject_control)
    # The same probe with the assigned upstream's key does get through (so `inject` can
    # fail): the Forward is computed by both stages and its Result reaches the coordinator.
    secure_keys 2
    start_coordinator coord --key "$WORK/c" --allow "$WORK/allow" --workers 2
    start_workers_in_order 2
    wait_for "$WORK/coord.log" "pipeline ready" 20 || fail "pipeline did not come up"
    "$PROBE" inject "$(activation_ep w1)" "$WORK/w1" "$WORK/c" 1 >>"$WORK/probe.out" 2>&1
    wait_for "$WORK/coord.log" "Result for batch 424242" 10 ||
        fail "injection with the assigned upstream's key did not get through"
    ;;

garbage)
    MAX=1048576
    secure_keys 2
    start_coordinator coord --key "$WORK/c" --allow "$WORK/allow" --workers 2 \
        --prompt "still serving" --repeat 2 --interval-ms 4000 --exit-when-done \
        --max-message-bytes $MAX
    CPORT=$(port_of "$COORD_EP")
    # Before any worker joins: attack the control port.
    "$PROBE" garbage "$COORD_EP" "$WORK/c" "$WORK/w1" dealer $MAX >>"$WORK/probe.out" 2>&1 ||
        fail "probe garbage (control)"
    "$PROBE" null "$COORD_EP" dealer >>"$WORK/probe.out" 2>&1
    "$PROBE" garbage "$COORD_EP" "$WORK/c" random dealer $MAX >>"$WORK/probe.out" 2>&1
    # Raw TCP: random bytes, and a truncated ZMTP greeting.
    (exec 3<>"/dev/tcp/127.0.0.1/$CPORT" && head -c 4096 /dev/urandom >&3) 2>/dev/null
    (exec 3<>"/dev/tcp/127.0.0.1/$CPORT" && printf '\xff\x00\x00\x00\x00\x00\x00\x00\x01\x7f\x03' >&3) 2>/dev/null
    kill -0 "$COORD_PID" || fail "coordinator died"
    expect_log "$WORK/coord.log" "dropped a malformed message"
    expect_log "$WORK/coord.log" "refused a message from .*protocol version mismatch: peer speaks 4, this node speaks 3"
    expect_log "$WORK/coord.log" "control socket .*(handshake failed|mechanism mismatch)"
    start_workers_in_order 2 --max-message-bytes $MAX
    wait_for "$WORK/coord.out" "result 1/2 .*payload intact" 20 || fail "first request failed"
    W1=$(activation_ep w1)
    W2=$(activation_ep w2)
    # Now the activation ports, as their assigned upstream (past ZAP) and as strangers.
    "$PROBE" garbage "$W1" "$WORK/w1" "$WORK/c" push $MAX >>"$WORK/probe.out" 2>&1
    "$PROBE" garbage "$W2" "$WORK/w2" "$WORK/w1" push $MAX >>"$WORK/probe.out" 2>&1
    for ep in "$W1" "$W2"; do
        "$PROBE" null "$ep" push >>"$WORK/probe.out" 2>&1
        (exec 3<>"/dev/tcp/127.0.0.1/$(port_of "$ep")" && head -c 4096 /dev/urandom >&3) 2>/dev/null
    done
    expect_log "$WORK/w1.log" "dropped a malformed message on the activation socket"
    expect_log "$WORK/w2.log" "dropped a malformed message on the activation socket"
    # And a normal request still crosses the chain afterwards.
    wait_exit "$COORD_PID" 20; rc=$RC
    [ "$rc" = 0 ] || fail "coordinator exit status $rc, want 0"
    expect_log "$WORK/coord.out" "result 2/2 .*payload intact"
    for w in "$W1PID" "$W2PID"; do kill -0 "$w" || fail "a worker died"; done
    ;;

version)
    secure_keys 1
    start_coordinator coord --key "$WORK/c" --allow "$WORK/allow" --workers 1
    start_worker w1 --coordinator-key "$WORK/c" --key "$WORK/w1" --protocol-version-override 1
    worker_gives_up "protocol version 1"
    expect_log "$WORK/coord.log" "refused a message from 127.0.0.1 .*protocol version mismatch: peer speaks 1, this node speaks 3"
    expect_log "$WORK/w1.log" "error .*protocol version mismatch: peer speaks 1, this node speaks 3"
    expect_no_log "$WORK/coord.log" "joined as node"
    ;;

insecure)
    start_coordinator coord --insecure --workers 2 --prompt "plain" --exit-when-done
    start_worker w1 --insecure
    start_worker w2 --insecure
    wait_exit "$COORD_PID" 20; rc=$RC
    [ "$rc" = 0 ] || fail "insecure cluster: coordinator exit status $rc, want 0"
    expect_log "$WORK/coord.out" "payload intact"
    for f in coord w1 w2; do expect_log "$WORK/$f.log" "warn .*--insecure: CURVE is OFF"; done
    # A CURVE worker cannot join an insecure coordinator ...
    start_coordinator coord2 --insecure --workers 1
    keygen w3
    start_worker w3 --coordinator-key "$WORK/w3" --key "$WORK/w3"
    worker_gives_up "secure worker vs insecure coordinator"
    expect_log "$WORK/w3.log" "mechanism mismatch"
    expect_no_log "$WORK/coord2.log" "joined as node"
    # ... nor an insecure worker a CURVE coordinator.
    secure_keys 1
    start_coordinator coord3 --key "$WORK/c" --allow "$WORK/allow" --workers 1
    start_worker w4 --insecure
    worker_gives_up "insecure worker vs CURVE coordinator"
    expect_log "$WORK/w4.log" "mechanism mismatch"
    expect_log "$WORK/coord3.log" "control socket .*(handshake failed|mechanism mismatch)"
    expect_no_log "$WORK/coord3.log" "joined as node"
    # A CURVE worker given a key that is not the coordinator's: the coordinator closes every
    # handshake, and each closed handshake is logged with what causes it (the same line a worker
    # gets when it does not hear of a mechanism mismatch before the connection closes).
    start_worker w5 --coordinator-key "$WORK/w1" --key "$WORK/w1" --join-timeout-ms 3000
    worker_gives_up "worker with a wrong --coordinator-key"
    expect_log "$WORK/w5.log" "closed the connection during the security handshake: a security mechanism mismatch, .* or a CURVE key that is not the peer's"
    expect_log "$WORK/w5.log" "error .*no answer from the coordinator"
    expect_no_log "$WORK/coord3.log" "joined as node"
    ;;

generate)
    # The real forward pass split over three workers (layers [0,1) [1,3) [3,5) of
    # stories260K): greedy tokens must equal llama.cpp's reference (shared/models/REFERENCE.md).
    [ -f "$MODEL" ] || fail "$MODEL missing"
    secure_keys 3
    start_coordinator coord --key "$WORK/c" --allow "$WORK/allow" --workers 3 --model "$MODEL" \
        --plan 0,1-2,3-4 --prompt "Once upon a time" --generate 64 --repeat 2 --exit-when-done
    start_workers_in_order 3 --model "$MODEL" --threads 1
    wait_exit "$COORD_PID" 60; rc=$RC
    [ "$rc" = 0 ] || fail "coordinator exit status $rc, want 0"
    WANT="432 383 286 261 376 298 315 421 395 317 426 338 401 396 267 337 410 408 419 292 411 322"
    WANT="$WANT 265 282 295 433 426 385 328 432 358 394 261 370 432 352 266 268 388 426 338 391 266"
    WANT="$WANT 267 337 335 312 432 398 312 286 267 414 270 333 415 426 13 438 310 439 419 357 336"
    for i in 1 2; do
        grep -qF "generated $i/2: $WANT | text: , there was a little girl named Lily." \
            "$WORK/coord.out" || fail "generation $i differs from the reference"
    done
    expect_log "$WORK/w2.log" "loaded layers \\[1, 3\\)"
    ;;

fingerprint)
    # A worker whose model file differs by one byte of tensor data refuses its Assign, and
    # a worker that is shipped its slice verifies it before use.
    [ -f "$MODEL" ] || fail "$MODEL missing"
    secure_keys 2
    cp "$MODEL" "$WORK/tampered.gguf"
    size=$(stat -c %s "$WORK/tampered.gguf")
    printf '\x42' | dd of="$WORK/tampered.gguf" bs=1 seek=$((size - 1000)) conv=notrunc 2>/dev/null
    cmp -s "$MODEL" "$WORK/tampered.gguf" && fail "tampering did not change the file"
    start_coordinator coord --key "$WORK/c" --allow "$WORK/allow" --workers 2 --model "$MODEL" \
        --plan 0-1,2-4
    start_worker w1 --coordinator-key "$WORK/c" --key "$WORK/w1" --compute identity
    wait_for "$WORK/coord.log" "worker 'w1' joined" 15 || fail "w1 did not join"
    start_worker w2 --coordinator-key "$WORK/c" --key "$WORK/w2" --model "$WORK/tampered.gguf"
    wait_for "$WORK/coord.log" "node 2 failed its assignment: weights for layers \\[2, 5\\) differ" 20 ||
        fail "the tampered worker was not refused"
    expect_log "$WORK/coord.log" "node 2 reports error 5: weights for layers"
    expect_log "$WORK/w2.log" "error .*the local model file's fingerprint differs"
    expect_no_log "$WORK/w2.log" "ready for layers"
    expect_no_log "$WORK/coord.log" "pipeline ready"
    # w1 had no file: it was shipped [0, 2) and checked it.
    wait_for "$WORK/w1.log" "received [0-9]+ bytes of weights; fingerprint verified; cached as $WORK/xdg/caravan/[0-9a-f]{64}\\.gguf" 10 ||
        fail "w1 did not verify its shipped weights"
    ;;

coordinator_lost)
    # A worker whose coordinator dies (no Heartbeat for --coordinator-timeout-ms) keeps its
    # weights and re-joins with backoff; with --reconnect-max-ms it gives up and exits 1.
    secure_keys 1
    start_coordinator coord --key "$WORK/c" --allow "$WORK/allow" --workers 1
    start_workers_in_order 1 --coordinator-timeout-ms 2000 --reconnect-max-ms 3000
    wait_for "$WORK/coord.log" "pipeline ready" 15 || fail "pipeline did not come up"
    sleep 2.5 # heartbeats flow: the worker must not give up while the coordinator lives
    kill -0 "$W1PID" || fail "worker exited while the coordinator was alive"
    kill -9 "$COORD_PID"
    wait_exit "$W1PID" 15; rc=$RC
    [ "$rc" = 1 ] || fail "worker exit status $rc, want 1"
    expect_log "$WORK/w1.log" "coordinator at tcp://.* has been silent for 2000 ms; re-joining"
    expect_log "$WORK/w1.log" "re-joining the coordinator"
    expect_log "$WORK/w1.log" "error .*coordinator at tcp://.* has been silent for [0-9]+ ms \\(--reconnect-max-ms\\)"
    ;;

*)
    echo "unknown case $CASE"
    exit 2
    ;;
esac
echo "PASS ($CASE)"
exit 0
