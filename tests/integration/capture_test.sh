#!/usr/bin/env bash
# capture_test.sh: capture a small cluster's loopback traffic with tcpdump and check it.
#
# The cluster (a coordinator and two workers) carries a recognizable prompt through the
# activation chain, and ships the first worker its slice of stories260K.gguf as WeightChunks
# (that worker has no model file). Then, from the capture:
#   - every TCP connection opens with a ZMTP 3 greeting whose mechanism field is CURVE
#     (parsed from the reassembled first 64 bytes of each direction with tshark);
#   - neither the prompt text nor any of several 32-byte runs of the shipped weights appears
#     anywhere in the raw capture.
# The same run with --insecure must show mechanism NULL and the prompt and weight bytes in
# clear: proof that the checks can fail.
#
# Skips (exit 77) when not root or tcpdump/tshark is missing. Ports are picked free by the test
# so the capture filter can name them before anything connects.
set -u
BIN=${CARAVAN_BIN:?CARAVAN_BIN not set}
CARAVAN="$BIN/caravan"
PROBE="$BIN/net_probe"
MODEL="${CARAVAN_SHARED:-/nonexistent}/models/stories260K.gguf"
SKIP=77

[ "$(id -u)" = 0 ] || { echo "SKIP: capture needs root (tcpdump on lo)"; exit $SKIP; }
command -v tcpdump >/dev/null || { echo "SKIP: tcpdump not installed"; exit $SKIP; }
command -v tshark >/dev/null || { echo "SKIP: tshark not installed"; exit $SKIP; }
[ -f "$MODEL" ] || { echo "SKIP: $MODEL missing"; exit $SKIP; }

WORK=$(mktemp -d /tmp/caravan_capture.XXXXXX)
PIDS=()
FAILED=0
# Only children still running (bash's job table) are signalled: a PID that already exited may
# belong to another process by now (pid_max is 32768 and the machine is busy).
cleanup() {
    for pid in $(jobs -pr); do kill "$pid" 2>/dev/null; done
    wait 2>/dev/null
    if [ "$FAILED" -ne 0 ] || [ -n "${CARAVAN_TEST_VERBOSE:-}" ]; then
        for f in "$WORK"/*.log "$WORK"/*.out "$WORK"/*.txt; do
            [ -f "$f" ] && { echo "==== $f"; tail -n 40 "$f"; }
        done
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; FAILED=1; exit 1; }

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" # wait_for, wait_exit
# A port nobody listens on (bounded tries; a race with another process is harmless: the
# daemon would fail to bind and the test would fail loudly, not wrongly pass).
free_port() {
    for _ in $(seq 1 50); do
        local p=$((20000 + RANDOM % 12000)) # below the ephemeral range (32768+)
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
    done
    return 1
}
hex() { od -An -tx1 -v | tr -d ' \n'; }

PROMPT="CARAVAN-CAPTURE-PROMPT once upon a time a very secret story began"
PROMPT_HEX=$(printf '%s' "$PROMPT" | hex)
# Slice [0, 2) of 5 layers is w1's (2 workers); take needles spread over its blob.
NEEDLES=()
for off in 4096 100000 250000 400000 480000; do
    NEEDLES+=("$("$PROBE" slice-hex "$MODEL" 0 2 "$off" 32)") || fail "slice-hex"
done

# run_cluster MODE (secure|insecure): starts capture + cluster, waits for the answer.
run_cluster() {
    local mode=$1 dir="$WORK/$1"
    rm -rf "$dir" && mkdir -p "$dir"
    local cport wport1 wport2
    cport=$(free_port) && wport1=$(free_port) && wport2=$(free_port) || fail "no free ports"
    local sec_c=() sec_w1=() sec_w2=()
    if [ "$mode" = secure ]; then
        "$CARAVAN" keygen --out "$dir/c" >/dev/null || fail keygen
        "$CARAVAN" keygen --out "$dir/w1" >"$dir/allow" || fail keygen
        "$CARAVAN" keygen --out "$dir/w2" >>"$dir/allow" || fail keygen
        sec_c=(--key "$dir/c" --allow "$dir/allow")
        sec_w1=(--key "$dir/w1" --coordinator-key "$dir/c")
        sec_w2=(--key "$dir/w2" --coordinator-key "$dir/c")
    else
        sec_c=(--insecure)
        sec_w1=(--insecure)
        sec_w2=(--insecure)
    fi
    # A 64 MiB capture buffer: the weight transfer comes in a burst, and a dropped packet
    # would leave a stream whose greeting is missing (checked below).
    tcpdump -i lo --immediate-mode -U -B 65536 -s 0 -w "$dir/cap.pcap" \
        "tcp and (port $cport or port $wport1 or port $wport2)" 2>"$WORK/tcpdump_$mode.log" &
    local tcpdump_pid=$!
    PIDS+=("$tcpdump_pid")
    wait_for "$WORK/tcpdump_$mode.log" "listening on" 10 || fail "tcpdump did not start"
    "$CARAVAN" coordinator "${sec_c[@]}" --listen "tcp://127.0.0.1:$cport" --workers 2 \
        --model "$MODEL" --plan 0-1,2-4 --prompt "$PROMPT" --repeat 2 --exit-when-done --run-ms 60000 \
        >"$WORK/coord_$mode.out" 2>"$WORK/coord_$mode.log" &
    local coord=$!
    PIDS+=("$coord")
    wait_for "$WORK/coord_$mode.log" "listening on" 10 || fail "coordinator did not start"
    # w1 has no model file: it is shipped its slice. w2 reads its own copy.
    "$CARAVAN" worker "${sec_w1[@]}" --coordinator "tcp://127.0.0.1:$cport" --name w1 \
        --listen "tcp://127.0.0.1:$wport1" --cache "$dir/cache" --compute identity \
        --run-ms 60000 2>"$WORK/w1_$mode.log" &
    PIDS+=($!)
    wait_for "$WORK/coord_$mode.log" "worker 'w1' joined" 15 || fail "w1 did not join"
    "$CARAVAN" worker "${sec_w2[@]}" --coordinator "tcp://127.0.0.1:$cport" --name w2 \
        --listen "tcp://127.0.0.1:$wport2" --model "$MODEL" --compute identity --run-ms 60000 \
        2>"$WORK/w2_$mode.log" &
    PIDS+=($!)
    wait_exit "$coord" 30
    [ "$RC" = 0 ] || fail "$mode cluster: coordinator exit $RC"
    grep -q "result 2/2 .*payload intact" "$WORK/coord_$mode.out" || fail "$mode: no answer"
    grep -qE "received [0-9]+ bytes of weights; fingerprint verified" "$WORK/w1_$mode.log" ||
        fail "$mode: w1 was not shipped its weights"
    # Let tcpdump read what the kernel still holds before stopping it.
    sleep 1
    kill -INT "$tcpdump_pid"
    wait_exit "$tcpdump_pid" 10
    # A capture with drops cannot prove anything (a stream seen from its middle has no
    # greeting); the caller runs the cluster again.
    local dropped
    dropped=$(sed -n 's/^\([0-9]*\) packets dropped by kernel.*/\1/p' "$WORK/tcpdump_$mode.log")
    [ "${dropped:-0}" = 0 ] || { echo "$mode capture: $dropped packets dropped by the kernel; again"; return 1; }
}

# capture MODE: run_cluster until a capture without drops (3 tries).
capture() {
    for _ in 1 2 3; do run_cluster "$1" && return 0; done
    fail "$1 capture: the kernel dropped packets in 3 runs"
}

# greetings PCAP: one line per TCP connection direction: "stream src_port mechanism".
# The ZMTP 3 greeting: 0xff, 8 padding bytes, 0x7f, version 3.x, then a 20-byte mechanism
# name (NUL-padded). libzmq sends it in pieces, so payloads are joined in sequence order.
greetings() {
    tshark -r "$1" -o tcp.relative_sequence_numbers:TRUE -Y "tcp.len > 0" \
        -T fields -e tcp.stream -e tcp.srcport -e tcp.seq -e tcp.payload 2>/dev/null |
        sort -k1,1n -k2,2n -k3,3n |
        awk -v H=0123456789abcdef '{ key = $1 " " $2; if (length(buf[key]) < 128) buf[key] = buf[key] $4 }
             END { for (k in buf) {
                     g = buf[k]; mech = "NOT-ZMTP"
                     # a connection cut during its greeting (a process exiting as it
                     # connected): the ZMTP signature and nothing after the version
                     if (substr(g, 1, 2) == "ff" && length(g) < 64 &&
                         (length(g) < 20 || substr(g, 19, 2) == "7f")) mech = "PARTIAL"
                     if (substr(g, 1, 2) == "ff" && substr(g, 19, 2) == "7f" &&
                         substr(g, 21, 2) == "03" && length(g) >= 64) {
                       mech = ""
                       for (i = 25; i < 65; i += 2) {
                         c = substr(g, i, 2); if (c == "00") break
                         v = (index(H, substr(c, 1, 1)) - 1) * 16 + index(H, substr(c, 2, 1)) - 1
                         mech = mech sprintf("%c", v)
                       }
                     }
                     print k, mech } }' | sort -n
}

check_secure() {
    local cap="$WORK/secure/cap.pcap"
    greetings "$cap" >"$WORK/greetings_secure.txt"
    local n
    n=$(wc -l <"$WORK/greetings_secure.txt")
    # control w1, control w2, coordinator -> w1, w1 -> w2: 4 connections, 2 directions each.
    [ "$n" -ge 8 ] || fail "secure capture: only $n connection directions seen"
    grep -vE " (CURVE|PARTIAL)$" "$WORK/greetings_secure.txt" &&
        fail "secure capture: a connection without the CURVE mechanism (above)"
    [ "$("$PROBE" count "$cap" "$PROMPT_HEX")" = 0 ] || fail "secure capture: prompt in clear"
    for nd in "${NEEDLES[@]}"; do
        [ "$("$PROBE" count "$cap" "$nd")" = 0 ] || fail "secure capture: weight bytes $nd in clear"
    done
    echo "secure: $n connection directions, all CURVE; prompt and ${#NEEDLES[@]} weight samples absent"
}

check_insecure() {
    local cap="$WORK/insecure/cap.pcap"
    greetings "$cap" >"$WORK/greetings_insecure.txt"
    grep -q " NULL$" "$WORK/greetings_insecure.txt" || fail "insecure capture: no NULL greeting"
    grep -q " CURVE$" "$WORK/greetings_insecure.txt" && fail "insecure capture: CURVE seen?"
    [ "$("$PROBE" count "$cap" "$PROMPT_HEX")" -gt 0 ] ||
        fail "insecure capture: the prompt is not visible, so the secure check proves nothing"
    local seen=0
    for nd in "${NEEDLES[@]}"; do
        [ "$("$PROBE" count "$cap" "$nd")" -gt 0 ] && seen=$((seen + 1))
    done
    [ "$seen" -ge 3 ] || fail "insecure capture: only $seen/${#NEEDLES[@]} weight samples visible"
    echo "insecure: mechanism NULL; prompt visible; $seen/${#NEEDLES[@]} weight samples visible"
}

capture secure
check_secure
capture insecure
check_insecure
echo "PASS (capture)"
exit 0
