#!/usr/bin/env bash
# clock_test.sh: a worker whose clock runs 50 ms ahead of the coordinator's, as on another host.
# libfaketime moves its CLOCK_REALTIME; a boot id of its own, bind-mounted in a mount namespace,
# says it is another machine (Capabilities.clock). Real coordinator and worker processes on
# 127.0.0.1, stories260K, two requests over HTTP. Then:
#   - /cluster calls that worker's clock "estimated", its offset within 5 ms of +50 ms, and the
#     other worker's "same", offset 0;
#   - /metrics' network and wait times of each stage stay loopback-sized (under 10 ms a step;
#     one request at a time, so no stage is busy when a step comes), where hop times taken as
#     they are would read ~50 ms a step into the skewed worker, as network or as wait;
#   - the three --trace files, merged, put every step's spans in order (trace check), the near
#     worker at offset 0 and the far one 50 ms off.
# Needs root (the mount namespace), faketime and unshare; skipped (77) without them. Every
# process started here is killed on exit, and each daemon also has a --run-ms bound.
set -u
BIN=${CARAVAN_BIN:?CARAVAN_BIN not set}
CARAVAN="$BIN/caravan"
MODEL="${CARAVAN_SHARED:-/nonexistent}/models/stories260K.gguf"
[ -f "$MODEL" ] || { echo "no $MODEL: skipped"; exit 77; }
[ "$(id -u)" -eq 0 ] || { echo "not root (a mount namespace is needed): skipped"; exit 77; }
for c in faketime unshare curl node; do
    command -v "$c" >/dev/null || { echo "no $c: skipped"; exit 77; }
done
WORK=$(mktemp -d /tmp/caravan_clock.XXXXXX)
FAILED=0
cleanup() {
    # (faketime runs the far worker as its child and does not pass signals on)
    for pid in $(jobs -pr); do pkill -P "$pid" 2>/dev/null; kill "$pid" 2>/dev/null; done
    wait 2>/dev/null
    if [ "$FAILED" -ne 0 ]; then
        for f in "$WORK"/*.log "$WORK"/answer*.json "$WORK"/cluster.json "$WORK"/metrics \
            "$WORK"/check; do
            [ -f "$f" ] && { echo "==== $f"; tail -n 30 "$f"; }
        done
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; FAILED=1; exit 1; }
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" # wait_for, wait_exit

"$CARAVAN" coordinator --insecure --listen tcp://127.0.0.1:0 --run-ms 60000 --model "$MODEL" \
    --workers 2 --http 127.0.0.1:0 --status-file "$WORK/status" --trace "$WORK/coord.trace" \
    >/dev/null 2>"$WORK/coord.log" &
coord_pid=$!
wait_for "$WORK/coord.log" "listening on tcp://" 10 || fail "the coordinator did not start"
ep=$(grep -oE 'listening on tcp://[0-9.]+:[0-9]+' "$WORK/coord.log" | head -n1 | awk '{print $3}')
worker=(worker --insecure --coordinator "$ep" --run-ms 60000 --join-timeout-ms 8000 --threads 1
        --model "$MODEL")
"$CARAVAN" "${worker[@]}" --name near --trace "$WORK/near.trace" >/dev/null 2>"$WORK/near.log" &
near_pid=$!
wait_for "$WORK/coord.log" "worker 'near' joined" 15 || fail "near did not join"
# the far worker: another boot id (so another machine's clock key), and its clock +50 ms
echo "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9" >"$WORK/boot_id"
unshare -m bash -c 'mount --bind "$1" /proc/sys/kernel/random/boot_id && shift &&
                    exec faketime -f +0.05s "$@"' \
    _ "$WORK/boot_id" "$CARAVAN" "${worker[@]}" --name far --trace "$WORK/far.trace" \
    >/dev/null 2>"$WORK/far.log" &
far_pid=$!
wait_for "$WORK/coord.log" "worker 'far' joined" 15 || fail "far did not join"
wait_for "$WORK/status" "^serving" 30 || fail "the cluster did not start serving"
url=$(awk '$1 == "http" {print $2}' "$WORK/status")
[ -n "$url" ] || fail "no http line in the status file"
sleep 3 # heartbeats both ways (every 500 ms): offsets estimated from several round trips
for i in 1 2; do
    curl -sf "$url/v1/completions" -H 'Content-Type: application/json' \
        -d '{"prompt": "Once upon a time", "max_tokens": 24, "temperature": 0}' \
        >"$WORK/answer$i.json" || fail "request $i failed"
done
curl -sf "$url/cluster" >"$WORK/cluster.json" || fail "GET /cluster failed"
curl -sf "$url/metrics" >"$WORK/metrics" || fail "GET /metrics failed"
node -e '
const fs = require("fs");
const cl = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
const by = Object.fromEntries(cl.workers.map((w) => [w.name, w]));
const near = by.near, far = by.far;
console.log(`near: clock ${near.clock}, offset ${near.clock_offset_us} us; ` +
            `far: clock ${far.clock}, offset ${far.clock_offset_us} us, rtt ${far.link_rtt_us} us`);
const m = fs.readFileSync(process.argv[2], "utf8");
const val = (name, stage) => Number((m.match(new RegExp(
  `^caravan_stage_${name}\\{stage="${stage}"[^}]*\\} (\\S+)`, "m")) || [])[1]);
let ok = near.clock === "same" && near.clock_offset_us === 0 && far.clock === "estimated" &&
  Math.abs(far.clock_offset_us - 50000) <= 5000;
for (const s of [0, 1]) {
  const fw = val("forwards_total", s), net = val("network_seconds_total", s),
    wait = val("wait_seconds_total", s);
  const per = (net / fw) * 1000, waited = (wait / fw) * 1000;
  console.log(`stage ${s}: ${fw} steps, network ${per.toFixed(3)} ms, wait ${waited.toFixed(3)} ms a step`);
  ok = ok && fw > 0 && per >= 0 && per < 10 && waited >= 0 && waited < 10;
}
process.exit(ok ? 0 : 1);' "$WORK/cluster.json" "$WORK/metrics" ||
    fail "clocks or network times off (above)"

# The trace files, merged (caravan trace merge) as one would merge them from two hosts: the far
# worker's spans are moved 50 ms back onto the coordinator's clock, so that every step's spans
# are in order (trace check); the near worker's offset is exactly 0 (the same clock)
far_worker=$(pgrep -P "$far_pid")
[ -n "$far_worker" ] || fail "no far worker under faketime ($far_pid)"
kill -INT "$coord_pid" "$near_pid" "$far_worker"
for pid in "$coord_pid" "$near_pid" "$far_pid"; do # (faketime ends with its child)
    wait_exit "$pid" 10
    [ "$RC" != timeout ] || fail "process $pid did not stop on SIGINT (its trace unfinished)"
done
for f in coord near far; do [ -s "$WORK/$f.trace" ] || fail "no trace from $f"; done
"$CARAVAN" trace merge "$WORK/merged.json" "$WORK/coord.trace" "$WORK/near.trace" \
    "$WORK/far.trace" || fail "caravan trace merge failed"
"$CARAVAN" trace check "$WORK/merged.json" --workers 2 >"$WORK/check" 2>&1 ||
    fail "the merged trace's steps are out of order: $(tail -n 3 "$WORK/check")"
node -e '
const t = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
const c = t.otherData.clocks;
console.log("merged offsets: " + c.map((x) => `node ${x.node_id}: ${x.offset_us} us in [${x.min_us}, ${x.max_us}]`).join(", "));
const near = c.find((x) => Math.abs(x.offset_us) < 25000), far = c.find((x) => Math.abs(x.offset_us) >= 25000);
process.exit(c.length === 2 && near && far && near.offset_us === 0 &&
  Math.abs(Math.abs(far.offset_us) - 50000) <= 5000 &&
  far.min_us <= far.offset_us && far.offset_us <= far.max_us ? 0 : 1);' "$WORK/merged.json" ||
    fail "merged clock offsets: near should be 0 and far 50 ms off"
echo "ok"
