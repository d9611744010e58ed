#!/usr/bin/env bash
# bench/run.sh SCENARIO|all: caravan's latency study. Each scenario writes JSON results
# (bench/results/SCENARIO.json, one object per measurement plus the machine) and gnuplot PNGs
# (bench/SCENARIO*.png: labelled axes with units, a legend).
#
#   engine    engine tokens/s by weight type and threads (bench_model: prompt pp and generation
#             tg, whole model on this machine)
#   scaling   pipeline over 1..4 workers (caravan cluster on loopback), aggregate generated
#             tokens/s for 1, 2, 4 and 8 concurrent streams (bench/load.mjs)
#   latency   per-token latency of one stream and its breakdown (a --trace of every run: the
#             medians over decode steps of the round trip and of each kind of span)
#             with f32 and f16 activations, against link delay (0 1 5 20 50 ms) and
#             bandwidth (1gbit, 100mbit, 30mbit with Wi-Fi-like jitter), beside the hop model
#             compute + hops x (delay + bytes / bandwidth). Delay 0 on loopback runs everywhere;
#             the other links need deploy/netns-cluster.sh (namespaces with delay/rate) and are
#             skipped with a message when it is missing.
#   recovery  a worker killed under 4 streams, once per stage (bench/run_failover_bench.sh
#             part 1): detection, re-plan, weight load, re-processing, the longest pause, and
#             the streams' tokens/s around the kill (recovery.png)
#   all       every scenario above.
#
# Environment (defaults in brackets; keep runs short on a shared machine):
#   BUILD [build]  CARAVAN_BENCH_DIR [/tmp/caravan-bench: model files, made by caravan mkmodel]
#   SHAPE [tinyllama-1.1b]  TYPES [q4_0 q8_0 f16]  THREADS [1 2]  PP [64]  TG [32]  REPS [2]
#   MODEL [$CARAVAN_BENCH_DIR/$SHAPE-q4_0.gguf]: the model of scaling and latency
#   WORKERS [1 2 3 4]  STREAMS [1 2 4 8]  TOKENS [32]: generated tokens per stream
#   LAT_WORKERS [3]  DELAYS [0 1 5 20 50]  RATES [1gbit 100mbit 30mbit]  WIRES [f32 f16]
#   WORKER_THREADS [1]: compute threads per worker
#   NETNS [deploy/netns-cluster.sh]: called as NETNS --workers N --delay D --rate R [--jitter J
#     --loss L] --model M --wire-dtype W --threads T --shared-file --ready-timeout 300
#     --trace DIR -- bench/run.sh _netns_measure FILE
#     (its COMMAND mode: CARAVAN_URL set, everything removed afterwards). Every run is traced:
#     per token is the client's (stream time after the first token / tokens), the breakdown the
#     trace's medians over decode steps of the coordinator's round trip, as on loopback.
#   REC_REPS [3]: kills in the recovery scenario (the first, middle and last stage in turn)
#   PLOT_ONLY [0]: 1 = redraw every scenario's plots from bench/results/*, measure nothing
#   HOP_DELAY [1]: how many times the --delay one hop crosses (netns-cluster.sh holds every
#     packet a node receives, so a message from node to node crosses it once)
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
BUILD=${BUILD:-$root/build}
BIN=$BUILD/bin
DIR=${CARAVAN_BENCH_DIR:-/tmp/caravan-bench}
SHAPE=${SHAPE:-tinyllama-1.1b}
TYPES=${TYPES:-"q4_0 q8_0 f16"}
THREADS=${THREADS:-"1 2"}
PP=${PP:-64}
TG=${TG:-32}
REPS=${REPS:-2}
MODEL=${MODEL:-$DIR/$SHAPE-q4_0.gguf}
WORKERS=${WORKERS:-"1 2 3 4"}
STREAMS=${STREAMS:-"1 2 4 8"}
TOKENS=${TOKENS:-32}
LAT_WORKERS=${LAT_WORKERS:-3}
DELAYS=${DELAYS:-"0 1 5 20 50"}
RATES=${RATES:-"1gbit 100mbit 30mbit"}
WIRES=${WIRES:-"f32 f16"}
WORKER_THREADS=${WORKER_THREADS:-1}
NETNS=${NETNS:-$root/deploy/netns-cluster.sh}
HOP_DELAY=${HOP_DELAY:-1}
OUT=$here/results
mkdir -p "$OUT" "$DIR"

die() { echo "error: $*" >&2; exit 1; }
note() { echo "-- $*" >&2; }
[ -x "$BIN/caravan" ] || die "$BIN/caravan not found: cmake --preset release && cmake --build build"
command -v gnuplot >/dev/null || die "gnuplot is missing (deploy/install-deps.sh installs gnuplot-nox)"

cpu_model() { grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'; }
machine_json() {
    printf '{"cpu":"%s","cpus":%d,"kernel":"%s","date":"%s","load":"%s","commit":"%s"}' \
        "$(cpu_model)" "$(nproc)" "$(uname -r)" "$(date -u +%Y-%m-%dT%H:%MZ)" \
        "$(cut -d' ' -f1-3 /proc/loadavg)" "$(git -C "$root" rev-parse --short HEAD 2>/dev/null)"
}
# text for an enhanced gnuplot title: underscores stay underscores
gp_text() { echo "$1" | sed 's/_/\\\\_/g'; }
# the caption every plot carries: the machine, load and date its JSON FILE recorded when the
# measurement began (not the redraw's, with PLOT_ONLY=1)
caption() {
    local f=$1 cpu cpus load date
    cpu=$(grep -o '"cpu":"[^"]*"' "$f" | head -1 | cut -d'"' -f4)
    cpus=$(grep -o '"cpus":[0-9]*' "$f" | head -1 | cut -d: -f2)
    load=$(grep -o '"load":"[^"]*"' "$f" | head -1 | cut -d'"' -f4 | cut -d' ' -f1)
    date=$(grep -o '"date":"[^"]*"' "$f" | head -1 | cut -d'"' -f4 | tr T ' ' | tr -d Z)
    echo "$cpu, $cpus CPUs, ${load:+load $load at the start, }$date UTC"
}

model_file() { # TYPE -> a model file of SHAPE in TYPE, made when absent
    local f="$DIR/$SHAPE-$1.gguf"
    if [ ! -f "$f" ]; then
        note "generating $f"
        "$BIN/caravan" mkmodel --shape "$SHAPE" --type "$1" --out "$f" --quiet ||
            die "caravan mkmodel $SHAPE $1 failed"
    fi
    echo "$f"
}

# ---- a running cluster (loopback via caravan cluster, or netns) ----
CL_PID=""
CL_URL=""
CL_TMP=""
cluster_start() { # WORKERS WIRE: a loopback cluster with --trace; sets CL_URL; 1 when it does not serve
    local w=$1 wire=$2
    CL_TMP=$(mktemp -d /tmp/caravan-study.XXXXXX)
    "$BIN/caravan" cluster --model "$MODEL" --workers "$w" --threads "$WORKER_THREADS" \
        --shared-file --http 127.0.0.1:0 --max-seqs 8 --wire-dtype "$wire" \
        --log-dir "$CL_TMP/logs" --trace "$CL_TMP/trace" >"$CL_TMP/out" 2>"$CL_TMP/err" &
    CL_PID=$!
    for _ in $(seq 1200); do
        CL_URL=$(grep -m1 -o 'http://[^ ]*' "$CL_TMP/out" 2>/dev/null || true)
        [ -n "$CL_URL" ] && curl -sf "$CL_URL/health" >/dev/null 2>&1 && return 0
        kill -0 "$CL_PID" 2>/dev/null || break
        sleep 0.25
    done
    echo "error: the cluster did not serve:" >&2
    tail -n 5 "$CL_TMP/err" >&2
    cluster_stop
    return 1
}
cluster_stop() {
    if [ -n "$CL_PID" ]; then
        kill -INT "$CL_PID" 2>/dev/null
        wait "$CL_PID" 2>/dev/null
    fi
    CL_PID=""
    [ -n "$CL_TMP" ] && rm -rf "$CL_TMP"
    CL_TMP=""
}
trap cluster_stop EXIT
trap 'cluster_stop; exit 130' INT TERM

load() { # STREAMS TOKENS -> load.mjs's JSON line
    node "$here/load.mjs" "$CL_URL" "$1" "$2"
}

# ---- engine ----
scenario_engine() {
    local json="$OUT/engine.json" dat="$OUT/engine.dat"
    [ -x "$BIN/bench_model" ] || die "$BIN/bench_model missing: cmake --build $BUILD --target bench_model"
    [ "${PLOT_ONLY:-0}" = 1 ] || engine_measure "$json" "$dat"
    engine_plot "$dat"
}
engine_measure() {
    local json=$1 dat=$2
    : >"$dat"
    printf '{"scenario":"engine","shape":"%s","pp":%d,"tg":%d,"reps":%d,"machine":%s,"results":[' \
        "$SHAPE" "$PP" "$TG" "$REPS" "$(machine_json)" >"$json"
    local first=1
    for t in $TYPES; do
        local f
        f=$(model_file "$t")
        for th in $THREADS; do
            note "engine: $t, $th threads"
            local line
            line=$("$BIN/bench_model" --model "$f" --threads "$th" --pp "$PP" --tg "$TG" \
                --reps "$REPS" | grep '^result') || die "bench_model failed on $f"
            # result <file> <threads> <pp> <pp t/s> <pp sd> <tg> <tg t/s> <tg sd> <rss MiB>
            read -r _ _ _ _ pps ppsd _ tgs tgsd rss <<<"$line"
            echo "$t $th $pps $ppsd $tgs $tgsd" >>"$dat"
            [ $first = 1 ] || printf ',' >>"$json"
            first=0
            printf '{"type":"%s","threads":%d,"pp_tokens_per_s":%s,"pp_sd":%s,"tg_tokens_per_s":%s,"tg_sd":%s,"rss_mib":%s}' \
                "$t" "$th" "$pps" "$ppsd" "$tgs" "$tgsd" "$rss" >>"$json"
        done
    done
    echo ']}' >>"$json"
}
engine_plot() {
    local dat=$1 plots="" PP TG
    PP=$(grep -o '"pp":[0-9]*' "$OUT/engine.json" | cut -d: -f2) # as measured
    TG=$(grep -o '"tg":[0-9]*' "$OUT/engine.json" | cut -d: -f2)
    for t in $TYPES; do
        plots="$plots '$dat' using 2:(stringcolumn(1) eq '$t' ? \$5 : 1/0):6 with yerrorlines lw 2 title 'tg $t' noenhanced,"
        plots="$plots '$dat' using 2:(stringcolumn(1) eq '$t' ? \$3 : 1/0):4 with yerrorlines dt 2 title 'pp $t' noenhanced,"
    done
    gnuplot <<EOF
set terminal pngcairo size 900,560 font 'DejaVu Sans,11'
set output '$here/engine.png'
set title "caravan engine, $(gp_text "$SHAPE") shape (random weights): prompt (pp$PP) and generation (tg$TG)\n{/*0.8 $(caption "$OUT/engine.json")}"
set xlabel 'threads'
set ylabel 'tokens/s'
set logscale y
set xtics 1
set key outside right
set grid
plot ${plots%,}
EOF
    note "engine: $OUT/engine.json, $here/engine.png"
}

# ---- scaling ----
scenario_scaling() {
    local json="$OUT/scaling.json" dat="$OUT/scaling.dat"
    [ -f "$MODEL" ] || MODEL=$(model_file q4_0)
    [ "${PLOT_ONLY:-0}" = 1 ] || scaling_measure "$json" "$dat"
    scaling_plot "$dat"
}
scaling_measure() {
    local json=$1 dat=$2
    : >"$dat"
    printf '{"scenario":"scaling","model":"%s","tokens":%d,"worker_threads":%d,"machine":%s,"results":[' \
        "$(basename "$MODEL")" "$TOKENS" "$WORKER_THREADS" "$(machine_json)" >"$json"
    local first=1
    for w in $WORKERS; do
        note "scaling: $w workers"
        cluster_start "$w" f32 || continue
        load 1 4 >/dev/null || true # warm-up
        for s in $STREAMS; do
            local r
            r=$(load "$s" "$TOKENS") || { note "load failed ($w workers, $s streams)"; continue; }
            local tps ttft
            tps=$(echo "$r" | grep -o '"tokens_per_s":[0-9.]*' | cut -d: -f2)
            ttft=$(echo "$r" | grep -o '"ttft_ms_median":[0-9.]*' | cut -d: -f2)
            echo "$w $s $tps $ttft" >>"$dat"
            [ $first = 1 ] || printf ',' >>"$json"
            first=0
            printf '{"workers":%d,"streams":%d,"load":%s}' "$w" "$s" "$r" >>"$json"
            note "  $s streams: $tps tokens/s"
        done
        cluster_stop
    done
    echo ']}' >>"$json"
}
scaling_plot() {
    local dat=$1 plots="" MODEL TOKENS WORKER_THREADS
    MODEL=$(grep -o '"model":"[^"]*"' "$OUT/scaling.json" | cut -d'"' -f4) # as measured
    TOKENS=$(grep -o '"tokens":[0-9]*' "$OUT/scaling.json" | head -1 | cut -d: -f2)
    WORKER_THREADS=$(grep -o '"worker_threads":[0-9]*' "$OUT/scaling.json" | cut -d: -f2)
    for s in $STREAMS; do
        plots="$plots '< awk \"\\\$2 == $s\" $dat' using 1:3 with linespoints lw 2 pt 7 title '$s stream$([ "$s" = 1 ] || echo s)' noenhanced,"
    done
    gnuplot <<EOF
set terminal pngcairo size 900,560 font 'DejaVu Sans,11'
set output '$here/scaling.png'
set title "caravan cluster on loopback: $(gp_text "$(basename "$MODEL")"), $WORKER_THREADS thread(s) per worker, $TOKENS tokens per stream\n{/*0.8 $(caption "$OUT/scaling.json")}"
set xlabel 'workers (pipeline stages)'
set ylabel 'generated tokens/s (all streams)'
set xtics 1
set yrange [0:*]
set key outside right title 'concurrent streams'
set grid
plot ${plots%,}
EOF
    note "scaling: $OUT/scaling.json, $here/scaling.png"
}

# ---- latency ----
rate_bits() { # 1gbit / 100mbit / 30mbit -> bits/s
    local r=$1 n=${1//[!0-9.]/}
    case $r in
    *gbit) awk -v n="$n" 'BEGIN {print n * 1e9}' ;;
    *mbit) awk -v n="$n" 'BEGIN {print n * 1e6}' ;;
    *kbit) awk -v n="$n" 'BEGIN {print n * 1e3}' ;;
    *) echo 0 ;;
    esac
}

# One measurement: a single stream of TOKENS tokens through the cluster at CL_URL (after a
# warm-up); prints the client's per-token latency in ms (stream time after the first token /
# the tokens after it).
measure_latency() {
    load 1 4 >/dev/null || return 1 # warm-up: connections, caches
    local r
    r=$(load 1 "$TOKENS") || return 1
    local client
    client=$(echo "$r" | awk -F'[:,}]' '{for (i = 1; i < NF; i++) {
        if ($i ~ /"wall_s"/) w = $(i + 1); if ($i ~ /"ttft_ms_median"/) t = $(i + 1);
        if ($i ~ /"tokens"/) n = $(i + 1) }} END {printf "%.3f", (w * 1000 - t) / (n > 1 ? n - 1 : 1)}')
    echo "$client"
}
# After a cluster run with --trace TMP/trace stopped: `caravan trace summary`'s medians over
# decode steps of the coordinator's round trip and of compute, link, serialize, send, receive
# and queue summed over the stages, as "step compute link codec send other" (ms). TMP
trace_breakdown() {
    local sum
    sum=$("$BIN/caravan" trace summary "$1/trace/trace.json" 2>/dev/null) || {
        note "no trace from this cluster (does it pass --trace?)"
        return 1
    }
    echo "$sum" | awk -F'[:,}]' '{
        for (i = 1; i < NF; i++) v[$i] = $(i + 1)
        step = v["\"step_ms\""]; c = v["\"compute_ms\""]; l = v["\"link_ms\""]
        codec = v["\"serialize_ms\""] + v["\"receive_ms\""]; snd = v["\"send_ms\""]
        q = v["\"queue_ms\""]; other = step - c - l - codec - q
        printf "%.3f %.3f %.3f %.3f %.3f %.3f\n", step, c, l, codec, snd, other
    }'
}

# Inside netns-cluster.sh's COMMAND mode (CARAVAN_URL set): one stream; writes the client's
# per-token latency (ms) to FILE. The breakdown comes from the run's trace (netns-cluster.sh
# --trace merges it when the cluster stops), as on loopback.
netns_measure() {
    CL_URL=${CARAVAN_URL:?not run by netns-cluster.sh}
    measure_latency >"$1"
}

scenario_latency() {
    local json="$OUT/latency.json" dat="$OUT/latency.dat"
    [ "${PLOT_ONLY:-0}" = 1 ] || latency_measure "$json" "$dat"
    latency_plot "$json" "$dat"
}
latency_measure() {
    local json=$1 dat=$2
    [ -f "$MODEL" ] || MODEL=$(model_file q4_0)
    local n_embd
    n_embd=$("$BIN/caravan" inspect "$MODEL" | awk '/embedding_length/ {print $2; exit}')
    [ -n "$n_embd" ] || die "cannot read embedding_length of $MODEL"
    local w=$LAT_WORKERS
    : >"$dat"
    printf '{"scenario":"latency","model":"%s","n_embd":%d,"workers":%d,"tokens":%d,"hop_delay":%s,"machine":%s,"model_formula":"per_token = compute + other + hops_hidden x (delay x hop_delay + bytes x 8 / rate) + 2 x delay x hop_delay (token ids in, token out)","results":[' \
        "$(basename "$MODEL")" "$n_embd" "$w" "$TOKENS" "$HOP_DELAY" "$(machine_json)" >"$json"
    local first=1 have_netns=0
    [ -x "$NETNS" ] && have_netns=1
    [ $have_netns = 1 ] || note "latency: $NETNS does not exist (yet): only delay 0 on loopback is measured; the delay and bandwidth links are skipped"
    declare -A base_compute base_other
    for wire in $WIRES; do
        local bytes=$((n_embd * 4))
        [ "$wire" = f16 ] && bytes=$((n_embd * 2))
        for rate in loopback $RATES; do
            for d in $DELAYS; do
                local args=() label="$rate" rbits=0
                if [ "$rate" = loopback ]; then
                    [ "$d" = 0 ] || continue
                else
                    [ $have_netns = 1 ] || continue
                    args=(--delay "${d}ms" --rate "$rate")
                    [ "$d" = 0 ] && args=(--delay 0 --rate "$rate")
                    [ "$rate" = 30mbit ] && args+=(--jitter 3ms --loss 0.1%) && label="30mbit+jitter"
                    rbits=$(rate_bits "$rate")
                fi
                note "latency: $wire, $label, delay $d ms, $w workers"
                local m per tmp
                if [ "$rate" = loopback ]; then
                    cluster_start "$w" "$wire" || continue
                    per=$(measure_latency) || { note "measurement failed"; cluster_stop; continue; }
                    tmp=$CL_TMP
                    CL_TMP="" # keep the folder: the trace is merged when the cluster stops
                    cluster_stop
                    m=$(trace_breakdown "$tmp") || { rm -rf "$tmp"; continue; }
                    rm -rf "$tmp"
                else
                    tmp=$(mktemp -d /tmp/caravan-study.XXXXXX)
                    "$NETNS" --workers "$w" "${args[@]}" --model "$MODEL" --wire-dtype "$wire" \
                        --threads "$WORKER_THREADS" --shared-file --ready-timeout 300 \
                        --trace "$tmp/trace" -- "$here/run.sh" _netns_measure "$tmp/client" \
                        >/dev/null 2>"$tmp/err" || {
                        note "netns run failed: $(tail -n 3 "$tmp/err")"
                        rm -rf "$tmp"
                        continue
                    }
                    per=$(cat "$tmp/client")
                    m=$(trace_breakdown "$tmp") || { rm -rf "$tmp"; continue; }
                    rm -rf "$tmp"
                fi
                # per token: what the client sees (stream time after the first token / tokens);
                # the breakdown is of a decode step's round trip at the coordinator (step), which can
                # be longer when the first stage computed ahead (it then overlaps the
                # coordinator's hop with its compute)
                read -r step comp link codec snd other <<<"$m"
                if [ "$rate" = loopback ]; then
                    base_compute[$wire]=$comp
                    base_other[$wire]=$(awk -v p="$per" -v c="$comp" 'BEGIN {printf "%.3f", p - c}')
                fi
                # the hop model: loopback's compute and overhead, plus each hop's delay and
                # serialization time at the link rate (hidden states between workers: w-1 hops;
                # token ids in and the sampled token out: 2 small hops)
                local pred="null"
                if [ -n "${base_compute[$wire]:-}" ]; then
                    pred=$(awk -v c="${base_compute[$wire]}" -v o="${base_other[$wire]}" \
                        -v d="$d" -v k="$HOP_DELAY" -v w="$w" -v b="$bytes" -v r="$rbits" \
                        'BEGIN { bw = r > 0 ? b * 8 / r * 1000 : 0
                                 printf "%.3f", c + o + (w - 1) * (d * k + bw) + 2 * d * k }')
                fi
                echo "$wire $label $d $per $comp $link $codec $other $pred $step" >>"$dat"
                [ $first = 1 ] || printf ',' >>"$json"
                first=0
                printf '{"wire":"%s","link":"%s","delay_ms":%s,"bytes_per_hop":%d,"per_token_ms":%s,"compute_ms":%s,"link_ms":%s,"codec_ms":%s,"send_ms":%s,"other_ms":%s,"predicted_ms":%s,"step_ms":%s}' \
                    "$wire" "$label" "$d" "$bytes" "$per" "$comp" "$link" "$codec" "$snd" "$other" "$pred" "$step" >>"$json"
                note "  per token $per ms (model $pred); a step's round trip $step ms: compute $comp, links $link, codec $codec, other $other"
            done
        done
    done
    echo ']}' >>"$json"
    # the hop model for every link and delay, from loopback's compute and overhead
    local mdat="$OUT/latency_model.dat"
    : >"$mdat"
    for wire in $WIRES; do
        [ -n "${base_compute[$wire]:-}" ] || continue
        local bytes=$((n_embd * 4))
        [ "$wire" = f16 ] && bytes=$((n_embd * 2))
        for rate in $RATES; do
            local label=$rate
            [ "$rate" = 30mbit ] && label="30mbit+jitter"
            for d in $DELAYS; do
                awk -v c="${base_compute[$wire]}" -v o="${base_other[$wire]}" -v d="$d" \
                    -v k="$HOP_DELAY" -v w="$w" -v b="$bytes" -v r="$(rate_bits "$rate")" \
                    -v wire="$wire" -v label="$label" \
                    'BEGIN { bw = r > 0 ? b * 8 / r * 1000 : 0
                             printf "%s %s %s %.3f\n", wire, label, d,
                                    c + o + (w - 1) * (d * k + bw) + 2 * d * k }' >>"$mdat"
            done
        done
    done
}
latency_plot() {
    local json=$1 dat=$2 mdat="$OUT/latency_model.dat" w MODEL have_netns=0
    w=$(grep -o '"workers":[0-9]*' "$json" | head -1 | cut -d: -f2) # as measured
    MODEL=$(grep -o '"model":"[^"]*"' "$json" | cut -d'"' -f4)
    awk '$2 != "loopback" {found = 1} END {exit !found}' "$dat" && have_netns=1
    # per-token latency against delay: measured (points), the hop model (lines)
    local plots="" i=1
    for wire in $WIRES; do
        plots="$plots '$dat' using 3:(stringcolumn(1) eq '$wire' && stringcolumn(2) eq 'loopback' ? \$4 : 1/0) with points pt 5 ps 1.5 lc $i title '$wire loopback measured' noenhanced,"
        i=$((i + 1))
        for label in $RATES; do
            [ "$label" = 30mbit ] && label="30mbit+jitter"
            grep -q "^$wire $label " "$dat" &&
                plots="$plots '$dat' using 3:(stringcolumn(1) eq '$wire' && stringcolumn(2) eq '$label' ? \$4 : 1/0) with points pt 7 ps 1.3 lc $i title '$wire $label measured' noenhanced,"
            grep -q "^$wire $label " "$mdat" &&
                plots="$plots '$mdat' using 3:(stringcolumn(1) eq '$wire' && stringcolumn(2) eq '$label' ? \$4 : 1/0) with lines lw 2 lc $i dt 2 title '$wire $label hop model' noenhanced,"
            i=$((i + 1))
        done
    done
    local sub="dashed: hop model = compute + hops x (delay + bytes / bandwidth)"
    [ $have_netns = 1 ] || sub="$sub\\n{/*0.8 only loopback (delay 0) measured: no deploy/netns-cluster.sh run}"
    gnuplot <<EOF
set terminal pngcairo size 960,580 font 'DejaVu Sans,11'
set output '$here/latency.png'
set title "Per-token latency, one stream, $w workers, $(gp_text "$(basename "$MODEL")")\n{/*0.8 $sub}\n{/*0.8 $(caption "$json")}"
set xlabel 'link delay per hop (ms)'
set ylabel 'per-token latency (ms)'
set yrange [0:*]
set key outside right
set grid
plot ${plots%,}
EOF
    gnuplot <<EOF
set terminal pngcairo size 1200,640 font 'DejaVu Sans,11'
set output '$here/latency_breakdown.png'
set title "Where a decode step's time goes, one stream, $w workers, $(gp_text "$(basename "$MODEL")")\n{/*0.8 the step's round trip at the coordinator: medians over decode steps of a --trace run}\n{/*0.8 $(caption "$json")}"
set style data histograms
set style histogram rowstacked
set style fill solid 0.8 border -1
set boxwidth 0.7
set ylabel 'ms per decode step'
set xlabel 'activations on the wire, link, delay (ms)'
set xtics rotate by -60 font ',9'
set yrange [0:*]
set key inside top left opaque box
set grid y
plot '$dat' using 5:xtic(sprintf('%s %s %s', stringcolumn(1), stringcolumn(2), stringcolumn(3))) title 'compute (all stages)', \
     '' using 6 title 'links (send returned to receive, all hops)', \
     '' using 7 title 'serialize + receive/decode', \
     '' using (\$8 > 0 ? \$8 : 0) title 'other (send calls, coordinator loop)'
EOF
    note "latency: $json, $here/latency.png, $here/latency_breakdown.png"
}

# ---- recovery ----
# bench/run_failover_bench.sh's part 1 measures (one kill of each stage with REC_REPS 3: 4
# streams, 3 workers, SIGKILL, the coordinator's log split into detection, re-plan, weight
# load and re-processing); here its figures go to recovery.json and the streams' tokens/s
# around each kill is drawn.
scenario_recovery() {
    local prefix="$OUT/recovery"
    [ -f "$MODEL" ] || MODEL=$(model_file q4_0)
    if [ "${PLOT_ONLY:-0}" != 1 ]; then
        note "recovery: ${REC_REPS:-3} kills, 4 streams through 3 workers"
        REPS=${REC_REPS:-3} DURATION=0 RECOVERY_OUT=$prefix MODEL=$MODEL \
            CARAVAN_BENCH_DIR=$DIR bash "$here/run_failover_bench.sh" "$BUILD" >"$prefix.md" ||
            die "run_failover_bench.sh failed: $(tail -n 3 "$prefix.md")"
        cat "$prefix.md" >&2
    fi
    local plots="" i=0 blocks stage
    blocks=$(awk 'NF == 4 && $1 != k {k = $1; printf "%s:%s ", $1, $2}' "$prefix.dat")
    for kb in $blocks; do
        case ${kb#*:} in w1) stage="first stage" ;; w3) stage="last stage" ;; *) stage="middle stage" ;; esac
        plots="$plots '$prefix.dat' index $i using 3:4 with steps lw 2 title 'kill ${kb%%:*}: ${kb#*:} ($stage)' noenhanced,"
        i=$((i + 1))
    done
    [ -n "$plots" ] || die "no timeline in $prefix.dat"
    local model
    model=$(grep -o '"model":"[^"]*"' "$prefix.json" | cut -d'"' -f4)
    gnuplot <<EOF
set terminal pngcairo size 960,560 font 'DejaVu Sans,11'
set output '$here/recovery.png'
set title "A worker killed (SIGKILL) under 4 streams, 3 workers, $(gp_text "$model")\n{/*0.8 tokens/s of all streams in 100 ms bins; $(caption "$prefix.json")}"
set xlabel 'time from the kill (ms)'
set xrange [-3000:*]
set ylabel 'generated tokens/s (all streams)'
set yrange [0:*]
set arrow from 0, graph 0 to 0, graph 1 nohead dt 2 lw 2
set key outside right
set grid
plot ${plots%,}
EOF
    note "recovery: $prefix.json, $here/recovery.png"
}

case "${1:-}" in
engine | scaling | latency | recovery) "scenario_$1" ;;
_netns_measure) netns_measure "$2" ;;
all)
    scenario_engine
    scenario_scaling
    scenario_latency
    scenario_recovery
    ;;
*)
    sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
