#!/usr/bin/env bash
# trace_test.sh: `caravan cluster --trace DIR` (3 workers, stories260K) serves one request;
# the merged DIR/trace.json must have, for a step, every stage's spans in order (coordinator
# serialize and send; each worker's receive, queue, compute, serialize, send; the coordinator's
# receive), a clock offset for every worker from heartbeat round trips, narrowed by the steps'
# own messages to within 1 ms of the truth (0 on one host) even from misleading heartbeats, and
# within 2 ms over links slowed by 5 ms, and parse as JSON.
# `caravan trace check` is the checker (cJSON). Needs CARAVAN_BIN and curl.
set -u
BIN=${CARAVAN_BIN:?CARAVAN_BIN not set}
MODEL="${CARAVAN_SHARED:-/nonexistent}/models/stories260K.gguf"
[ -f "$MODEL" ] || { echo "no $MODEL: skipped"; exit 77; }
command -v curl >/dev/null || { echo "no curl: skipped"; exit 77; }
WORK=$(mktemp -d /tmp/caravan_trace.XXXXXX)
pid=""
cleanup() {
    [ -n "$pid" ] && { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; }
    rm -rf "$WORK"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*"
    for f in "$WORK"/err "$WORK"/logs/*.log; do [ -f "$f" ] && { echo "==== $f"; tail -n 20 "$f"; }; done
    exit 1
}

"$BIN/caravan" cluster --model "$MODEL" --workers 3 --threads 1 --http 127.0.0.1:0 \
    --shared-file --log-dir "$WORK/logs" --trace "$WORK/trace" >"$WORK/out" 2>"$WORK/err" &
pid=$!
for _ in $(seq 600); do
    grep -q '^http://' "$WORK/out" && break
    kill -0 "$pid" 2>/dev/null || fail "caravan cluster exited"
    sleep 0.1
done
url=$(grep -m1 '^http://' "$WORK/out") || fail "caravan cluster did not serve"
# two heartbeat round trips (1 s each) give every worker a clock offset
sleep 2.5
curl -sf "$url/v1/completions" -H 'Content-Type: application/json' \
    -d '{"prompt": "Once upon a time", "max_tokens": 16, "temperature": 0}' >"$WORK/answer" ||
    fail "the request failed"
grep -q '"text"' "$WORK/answer" || fail "no completion: $(cat "$WORK/answer")"
kill -INT "$pid"
wait "$pid" || fail "caravan cluster exited with status $?"
pid=""
for f in coordinator w1 w2 w3 trace; do
    [ -s "$WORK/trace/$f.json" ] || fail "no $f.json"
done
grep -q "no clock offset" "$WORK/err" && fail "a worker has no clock offset: $(cat "$WORK/err")"
"$BIN/caravan" trace check "$WORK/trace/trace.json" --workers 3 >"$WORK/check" 2>&1 ||
    fail "trace check: $(cat "$WORK/check")"
cat "$WORK/check"
# merge by hand gives the same check (the command a user runs)
"$BIN/caravan" trace merge "$WORK/m.json" "$WORK/trace/coordinator.json" "$WORK"/trace/w?.json ||
    fail "caravan trace merge failed"
"$BIN/caravan" trace check "$WORK/m.json" --workers 3 >/dev/null || fail "merged by hand: check failed"
# Clock offsets: on one host every daemon reads the same CLOCK_REALTIME, so each worker's merged
# offset must be within a millisecond of 0; also when the heartbeats mislead, as when a worker
# read the coordinator's heartbeat only after a long computation (a 1-worker tinyllama run's
# only round trip gave 6.4 ms off, 13 ms round trip): the steps' own messages bound it.
# near_zero FILE US WIDEN: every worker's offset within US microseconds of 0, or (WIDEN 1) of the
# width of its bounds from the steps' messages when those are wider (a loaded host's slow
# transits: once 1.37 ms in CI); the bounds must exist and hold both 0, the truth, and the offset
near_zero() {
    node -e '
    const c = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).otherData.clocks;
    const tol = Number(process.argv[2]), widen = process.argv[3] === "1";
    const bad = c.filter((x) => !(x.min_us <= 0 && 0 <= x.max_us) ||
      !(x.min_us <= x.offset_us && x.offset_us <= x.max_us) ||
      Math.abs(x.offset_us) > (widen ? Math.max(tol, x.max_us - x.min_us) : tol));
    console.log(c.map((x) => `node ${x.node_id}: ${x.offset_us} us in [${x.min_us}, ${x.max_us}]`)
      .join(", ") + ` (within ${tol} us${widen ? " or the width of the bounds" : ""})`);
    process.exit(c.length === 3 && bad.length === 0 ? 0 : 1);' "$1" "$2" "$3"
}
near_zero "$WORK/m.json" 1000 1 || fail "clock offsets off by more than 1 ms on one host"
node -e '
const fs = require("fs"), t = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
for (const c of t.otherData.clocks) { c.offset_us = 6400; c.rtt_us = 13000; }
fs.writeFileSync(process.argv[2], JSON.stringify(t));' "$WORK/trace/coordinator.json" "$WORK/late.json" ||
    fail "cannot write the misleading coordinator file"
"$BIN/caravan" trace merge "$WORK/m3.json" "$WORK/late.json" "$WORK"/trace/w?.json ||
    fail "merge with misleading heartbeats failed"
near_zero "$WORK/m3.json" 1000 1 || fail "misleading heartbeats were not corrected by the steps' messages"
# Slow links (as on a loaded host or a real network): every message arrives 5 ms later and the
# heartbeats say nothing (a round trip of 1 s). The third worker is three hops from the
# coordinator and one back, so the middle of its bounds would be off by a whole hop's time
# (5 ms and more); giving every hop the same time finds each offset again, to within how much
# the real hops differ (under AddressSanitizer on a loaded host 1.3 ms once: 2 ms allowed).
node -e '
const fs = require("fs");
const [coord, out, ...workers] = process.argv.slice(1);
const slow = (t) => { for (const e of t.traceEvents) if (e.name === "receive") e.ts += 5000; return t; };
const c = slow(JSON.parse(fs.readFileSync(coord, "utf8")));
for (const k of c.otherData.clocks) { k.offset_us = 0; k.rtt_us = 1000000; }
fs.writeFileSync(`${out}/slow-c.json`, JSON.stringify(c));
workers.forEach((w, i) => fs.writeFileSync(`${out}/slow-w${i + 1}.json`,
    JSON.stringify(slow(JSON.parse(fs.readFileSync(w, "utf8"))))));' \
    "$WORK/trace/coordinator.json" "$WORK" "$WORK"/trace/w?.json || fail "cannot write the slow-link files"
"$BIN/caravan" trace merge "$WORK/m4.json" "$WORK/slow-c.json" "$WORK"/slow-w?.json ||
    fail "merge with slow links failed"
near_zero "$WORK/m4.json" 2000 0 || fail "slow links: the offsets lean by the hops' transit time"
# summary: medians over the decode steps, with the link into each of the 4 nodes; the steps it
# counts as computed ahead are the ones the first worker says it used (how many there are is a
# race between the last worker's step ahead and the coordinator's round trip: on a busy host,
# none of them may win, or, rarely, all; a step's links are checked when one went round)
"$BIN/caravan" trace summary "$WORK/m.json" >"$WORK/summary" || fail "trace summary failed"
used=$(sed -n 's/.*batches computed, \([0-9]*\) of them ahead.*/\1/p' "$WORK/logs/w1.log")
[ -n "$used" ] || fail "w1 did not say how many steps it computed ahead"
node -e '
const s = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
const used = Number(process.argv[2]);
const hops = Object.keys(s.link_in_ms).sort().join(",");
console.log(`summary: ${s.decode_steps} steps (and ${s.ahead_steps} computed ahead, w1 used ${used}), step ${s.step_ms} ms, ${s.token_ms} ms between tokens, links into ${hops}`);
const steps = s.decode_steps > 0 && s.step_ms > 0 && hops === "0,1,2,3";
process.exit(s.ahead_steps === used && s.decode_steps + s.ahead_steps >= 8 && s.token_ms > 0 &&
             s.token_own_ms < s.token_ms && (steps || s.decode_steps === 0) ? 0 : 1);' \
    "$WORK/summary" "$used" ||
    fail "summary: $(cat "$WORK/summary")"
# a trace with a worker missing fails the check (the checker can fail)
"$BIN/caravan" trace merge "$WORK/m2.json" "$WORK/trace/coordinator.json" "$WORK/trace/w1.json" \
    "$WORK/trace/w2.json" 2>/dev/null || fail "merge of a partial run failed"
"$BIN/caravan" trace check "$WORK/m2.json" --workers 3 >/dev/null &&
    fail "check passed with a worker's file missing"
echo "ok"
