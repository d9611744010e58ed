#!/usr/bin/env bash
# run_failover_bench.sh: how long a stream pauses when a worker dies, and what a cluster that
# keeps losing workers still delivers (3 workers x 1 thread, loopback, CURVE; the survivors map
# the model file themselves, so no weights travel).
#
#   1. recovery: 4 streams generate; one worker gets SIGKILL; the coordinator's log gives
#      detection (loss -> declared lost: a closed connection at once, else last heard ->
#      silent too long), re-plan (plan made -> every survivor ready, less the slowest load),
#      weight load (the slowest survivor's load of its new slice) and re-processing
#      (ready -> every request in flight has its next token: the survivors recompute what the
#      lost layers held); the clients see the longest pause between two tokens. REPS kills,
#      medians.
#   2. churn: for DURATION seconds 4 clients keep streaming while a worker is killed every
#      PERIOD seconds (caravan cluster restarts it, which is another re-plan): tokens/s per
#      second, requests completed, requests failed.
#
#   bench/run_failover_bench.sh [BUILD_DIR]
# Environment: MODEL (default: tinyllama-1.1b Q4_0 made in CARAVAN_BENCH_DIR, default
# /tmp/caravan-bench), REPS (3), DURATION (120; 0 skips part 2), PERIOD (20), RECOVERY_OUT
# (a path prefix: part 1 also writes PREFIX.json, every kill's figures, and PREFIX.dat, the
# tokens/s of all streams in 100 ms bins around each kill, as "kill victim ms_from_kill
# tokens_per_s"; bench/run.sh recovery plots them).
set -eu
BUILD=${1:-build}
BIN=$BUILD/bin
DIR=${CARAVAN_BENCH_DIR:-/tmp/caravan-bench}
REPS=${REPS:-3}
DURATION=${DURATION:-120}
PERIOD=${PERIOD:-20}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$DIR"
MODEL=${MODEL:-$DIR/tinyllama-1.1b-q4_0.gguf}
[ -f "$MODEL" ] || "$BIN/caravan" mkmodel --shape tinyllama-1.1b --type q4_0 --out "$MODEL" >&2
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -n1)
LOGS=$DIR/failover-logs
echo "# fail-over benchmark: $(basename "$MODEL"), $cpu, $(nproc) CPUs, $(date -u +%F)"
echo

start_cluster() { # extra args
    rm -rf "$LOGS"
    rm -f "$DIR/fo.out"
    "$BIN/caravan" cluster --model "$MODEL" --workers 3 --threads 1 --shared-file \
        --http 127.0.0.1:0 --log-dir "$LOGS" "$@" >"$DIR/fo.out" 2>"$DIR/fo.err" &
    CL=$!
    for _ in $(seq 1200); do grep -q '^http://' "$DIR/fo.out" && break; sleep 0.1; done
    URL=$(grep -m1 '^http://' "$DIR/fo.out")
}
stop_cluster() { kill -INT "$CL" 2>/dev/null || true; wait "$CL" 2>/dev/null || true; }
trap stop_cluster EXIT
wpid() { pgrep -f "caravan worker .*--key $LOGS/$1 " | head -n1; }
ms_of() { date -d "$1" +%s%3N; } # HH:MM:SS.mmm today -> epoch ms
median() { sort -g | awk '{a[NR]=$1} END{print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}'; }

echo "## recovery after SIGKILL of one worker (4 streams, $REPS kills)"
echo
echo "| kill | detection ms | re-plan ms | weight load ms | re-processing ms | longest pause a stream saw ms | tokens delivered |"
echo "|---|---|---|---|---|---|---|"
dets="" plans="" loads="" reps="" gaps=""
BIN_MS=100
num() { case $1 in '' | *[!0-9.-]*) echo null ;; *) echo "$1" ;; esac; } # a JSON number or null
if [ -n "${RECOVERY_OUT:-}" ]; then
    : >"$RECOVERY_OUT.dat"
    printf '{"scenario":"recovery","model":"%s","workers":3,"streams":4,"tokens":160,"cpu":"%s","cpus":%d,"date":"%s","load":"%s","bin_ms":%d,"kills":[' \
        "$(basename "$MODEL")" "$cpu" "$(nproc)" "$(date -u +%Y-%m-%dT%H:%MZ)" \
        "$(cut -d' ' -f1-3 /proc/loadavg)" "$BIN_MS" >"$RECOVERY_OUT.json"
fi
for r in $(seq "$REPS"); do
    start_cluster --no-restart
    t0=$(date +%s%3N)
    rm -f "$DIR/fo.tl"
    LOAD_TIMELINE=$DIR/fo.tl LOAD_T0=$((t0 / 1000)).$(printf %03d $((t0 % 1000))) LOAD_BIN_MS=$BIN_MS \
        node "$HERE/load.mjs" "$URL" 4 160 >"$DIR/fo.load" 2>&1 &
    LP=$!
    sleep 6
    victim=w$((r % 3 + 1))
    t_kill=$(date +%s%3N)
    kill -9 "$(wpid $victim)"
    wait $LP || true
    line=$(grep -m1 " lost: " "$LOGS/coordinator.log" || true)
    rec=$(grep -m1 "recovered" "$LOGS/coordinator.log" || true)
    det="?"
    [ -n "$line" ] && det=$(( $(ms_of "$(echo "$line" | cut -c1-12)") - t_kill ))
    both=$(echo "$rec" | sed -n 's/.*re-plan and load \([0-9]*\) ms.*/\1/p')
    load=$(echo "$rec" | sed -n "s/.*the slowest worker's load \([0-9]*\) ms.*/\1/p")
    plan="?"
    [ -n "$both" ] && [ -n "$load" ] && plan=$((both - load))
    rep=$(grep -m1 "resumed: every request" "$LOGS/coordinator.log" | sed -n 's/.* token \([0-9]*\) ms after.*/\1/p')
    gap=$(node -e 'let s=require("fs").readFileSync(process.argv[1],"utf8");try{console.log(JSON.parse(s.trim().split("\n").pop()).max_gap_ms)}catch(e){console.log("failed")}' "$DIR/fo.load")
    ok=$(grep -q '"tokens":640' "$DIR/fo.load" && echo "all 640" || echo "NO")
    echo "| $r ($victim) | $det | $plan | ${load:-?} | ${rep:-?} | $gap | $ok |"
    if [ -n "${RECOVERY_OUT:-}" ]; then
        [ "$r" = 1 ] || printf ',' >>"$RECOVERY_OUT.json"
        printf '{"kill":%d,"victim":"%s","detection_ms":%s,"replan_ms":%s,"weight_load_ms":%s,"reprocessing_ms":%s,"longest_pause_ms":%s,"all_tokens":%s}' \
            "$r" "$victim" "$(num "$det")" "$(num "$plan")" "$(num "${load:-}")" "$(num "${rep:-}")" \
            "$(num "$gap")" "$([ "$ok" = "all 640" ] && echo true || echo false)" >>"$RECOVERY_OUT.json"
        # every bin from the first token to the last, empty ones as 0, on the kill's time axis
        sort -n "$DIR/fo.tl" | awk -v r="$r" -v v="$victim" -v k=$((t_kill - t0)) -v b=$BIN_MS '
            { n[$1] += $2; if (NR == 1) lo = $1; hi = $1 }
            END { for (i = lo; i <= hi; i++) printf "%d %s %d %.1f\n", r, v, i * b - k, (n[i] + 0) * 1000 / b }' \
            >>"$RECOVERY_OUT.dat"
        printf '\n\n' >>"$RECOVERY_OUT.dat" # a gnuplot data block per kill
    fi
    dets="$dets $det" plans="$plans ${plan}" loads="$loads ${load:-0}" reps="$reps ${rep:-0}" gaps="$gaps $gap"
    stop_cluster
done
echo
echo "medians: detection $(echo $dets | tr ' ' '\n' | median) ms, re-plan $(echo $plans | tr ' ' '\n' | median) ms, weight load $(echo $loads | tr ' ' '\n' | median) ms, re-processing $(echo $reps | tr ' ' '\n' | median) ms, pause $(echo $gaps | tr ' ' '\n' | median) ms"
echo

[ -z "${RECOVERY_OUT:-}" ] || echo ']}' >>"$RECOVERY_OUT.json"
[ "$DURATION" -gt 0 ] || exit 0

echo "## churn: a worker killed every ${PERIOD} s for ${DURATION} s, 4 clients streaming"
echo
start_cluster
T0=$(date +%s)
TL=$DIR/fo.timeline
: >"$TL"
: >"$DIR/fo.churn"
for _ in 1 2 3 4; do
    ( while [ $(( $(date +%s) - T0 )) -lt "$DURATION" ]; do
          LOAD_TIMELINE=$TL LOAD_T0=$T0 node "$HERE/load.mjs" "$URL" 1 64 >>"$DIR/fo.churn" 2>&1 || echo FAILED >>"$DIR/fo.churn"
      done ) &
done
k=0
while [ $(( $(date +%s) - T0 )) -lt "$DURATION" ]; do
    sleep "$PERIOD"
    k=$((k + 1))
    p=$(wpid w$((k % 3 + 1)))
    [ -n "$p" ] && kill -9 "$p"
done
wait_clients() { for _ in $(seq 600); do [ "$(jobs -pr | wc -l)" -le 1 ] && return; sleep 0.5; done; }
wait_clients
done_n=$(grep -c '"tokens":64' "$DIR/fo.churn" || true)
fail_n=$(grep -c 'FAILED\|Error' "$DIR/fo.churn" || true)
epochs=$(curl -s "$URL/metrics" | sed -n 's/^caravan_epochs_total //p')
node -e '
const lines=require("fs").readFileSync(process.argv[1],"utf8").trim().split("\n").filter(Boolean);
const per=new Map();for(const l of lines){const [s,c]=l.split(" ").map(Number);per.set(s,(per.get(s)||0)+c);}
const d=+process.argv[2];const v=[];for(let s=0;s<d;s++)v.push(per.get(s)||0);
const avg=v.reduce((a,b)=>a+b,0)/d;const sorted=[...v].sort((a,b)=>a-b);
console.log(`tokens/s over ${d} s: mean ${avg.toFixed(1)}, median ${sorted[Math.floor(d/2)]}, seconds with no token ${v.filter(x=>x===0).length}`);
console.log("per 10 s: "+Array.from({length:Math.ceil(d/10)},(_,i)=>(v.slice(i*10,i*10+10).reduce((a,b)=>a+b,0)/10).toFixed(1)).join(" "));
' "$TL" "$DURATION"
echo "requests completed: $done_n, failed: $fail_n, kills: $k, plan epochs: $epochs"
stop_cluster
