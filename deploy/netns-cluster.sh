#!/usr/bin/env bash
# A caravan cluster over real links on one machine: one network namespace per node (the
# coordinator and N workers), each joined to a bridge by a veth pair, with per-link delay,
# jitter, loss and rate. Needs root.
#
#   deploy/netns-cluster.sh --workers 3 --delay 5ms --jitter 1ms --loss 0.1% --rate 100mbit
#       starts the cluster, prints the API's URL (reachable from this, the host, namespace),
#       and serves until Ctrl-C; then removes everything it made.
#   deploy/netns-cluster.sh [options] -- COMMAND [ARGS...]
#       runs COMMAND on the host once the API serves (CARAVAN_URL and CARAVAN_NETNS_PREFIX in
#       its environment), then removes everything and exits with COMMAND's status.
#   deploy/netns-cluster.sh --no-cluster [options] -- COMMAND
#       only the namespaces and links (no caravan), e.g. to ping between them.
#   deploy/netns-cluster.sh --down      removes what a killed run left (every run does it first).
#
# Names: namespaces PREFIX-c (coordinator, SUBNET.2) and PREFIX-w1..N (SUBNET.3..), bridge
# PREFIX-br (SUBNET.1, in the host namespace), files in /tmp/PREFIX-run. The prefix is fixed
# (cvn) unless --prefix, so a re-run finds what a killed run left.
#
# Links: "delay D" means every packet crosses D (+- jitter, uniform) once between two nodes, so
# a message from one node to another crosses one delay, a ping round trip two. With a kernel
# that has netem, `tc netem` on every node's outgoing side does delay, jitter, loss and rate.
# Without it (CONFIG_NET_SCH_NETEM unset), build/bin/netdelay (deploy/netdelay/) holds every
# packet a node receives (iptables INPUT -> NFQUEUE), keeping each flow's order; iptables -m
# statistic drops --loss of what a node sends, and tbf limits its outgoing rate. netdelay holds
# packets on arrival, not on the sender's way out: a packet held below the sending socket
# still counts against TCP's small-queue budget (about a millisecond of data), so a bulk
# transfer over a 5 ms link crawled at ~1 MB/s; held at the receiver, it runs at the link's
# speed. (ping's round trips then need -U: its kernel receive timestamp is taken before the
# hold.)
set -euo pipefail

# A script started in the background by another script begins with SIGINT ignored, and bash
# cannot trap a signal ignored at entry: start again with the default, so Ctrl-C or
# `kill -INT` still removes everything.
if [ -z "${CARAVAN_NETNS_SIGNALS:-}" ] && env --default-signal=INT true 2>/dev/null; then
  CARAVAN_NETNS_SIGNALS=1 exec env --default-signal=INT bash "$0" "$@"
fi

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  cat <<'EOF'
options:
  --workers N        worker namespaces (default 2)
  --delay D          one-way delay every packet between two nodes crosses: 5ms, 500us, 0 (default 0)
  --jitter J         +- J uniform around the delay (default 0)
  --loss P%          drop P percent of every node's outgoing packets (default 0)
  --rate R           limit every node's outgoing rate: 100mbit, 1gbit, 30mbit (default: none)
  --model M          GGUF (default ../shared/models/stories260K.gguf or $CARAVAN_MODEL)
  --shared-file      workers map M themselves instead of receiving their slices over the links
                     (for measurements that are about tokens, not weight transfers)
  --port P           the API's port in the coordinator's namespace (default 8080)
  --threads T        compute threads per worker (default 1)
  --wire-dtype T     f32|f16 activations on the wire (default f32)
  --api-key KEY      require this key on the API (default: none, --no-api-key)
  --prefix NAME      name prefix, at most 8 characters (default cvn)
  --subnet A.B.C     the /24 the nodes live in (default 10.77.0)
  --bin DIR          where caravan and netdelay are (default $CARAVAN_BIN or build/bin)
  --force-netdelay   use netdelay even when the kernel has netem
  --no-cluster       only the namespaces and links
  --nice N           run the caravan processes at this nice value (e.g. -10: on a busy
                     machine, less scheduling delay in what a measurement sees; default 0)
  --trace DIR        each daemon writes Chrome trace-event JSON to DIR (coordinator.json,
                     wN.json); on exit they are merged into DIR/trace.json
  --ready-timeout S  seconds to wait for the API to serve (default 60)
  --down             only remove what an earlier run left
EOF
}

here=$(cd "$(dirname "$0")/.." && pwd)
workers=2 delay=0 jitter=0 loss=0 rate="" port=8080 threads=1 wire=f32 api_key=""
prefix=cvn subnet=10.77.0 bin=${CARAVAN_BIN:-$here/build/bin} force_netdelay=0 no_cluster=0
ready_timeout=60 down_only=0 nice_value=0 trace="" shared_file=0
model=${CARAVAN_MODEL:-$here/../shared/models/stories260K.gguf}
cmd=()
while [ $# -gt 0 ]; do
  case $1 in
    --workers) workers=$2; shift 2 ;;
    --delay) delay=$2; shift 2 ;;
    --jitter) jitter=$2; shift 2 ;;
    --loss) loss=${2%\%}; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --shared-file) shared_file=1; shift ;;
    --port) port=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --wire-dtype) wire=$2; shift 2 ;;
    --api-key) api_key=$2; shift 2 ;;
    --prefix) prefix=$2; shift 2 ;;
    --subnet) subnet=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --force-netdelay) force_netdelay=1; shift ;;
    --no-cluster) no_cluster=1; shift ;;
    --ready-timeout) ready_timeout=$2; shift 2 ;;
    --nice) nice_value=$2; shift 2 ;;
    --trace) trace=$2; shift 2 ;;
    --down) down_only=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; cmd=("$@"); break ;;
    *) echo "netns-cluster: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "netns-cluster: $*" >&2; exit 1; }
[[ $workers =~ ^[0-9]+$ ]] && [ "$workers" -ge 1 ] && [ "$workers" -le 60 ] ||
  die "--workers must be 1..60"
[[ $prefix =~ ^[a-z][a-z0-9]{0,7}$ ]] || die "--prefix: 1-8 lower-case letters/digits"
[[ $subnet =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "--subnet: three numbers, e.g. 10.77.0"
[[ $loss =~ ^[0-9]*\.?[0-9]+$ ]] || die "--loss: a percentage, e.g. 0.1%"
dur_re='^([0-9]*\.?[0-9]+(s|ms|us)|0)$'
[[ $delay =~ $dur_re ]] || die "--delay: e.g. 5ms, 500us, 0"
[[ $jitter =~ $dur_re ]] || die "--jitter: e.g. 1ms, 0"
[ -z "$rate" ] || [[ $rate =~ ^[0-9]+(bit|kbit|mbit|gbit)$ ]] || die "--rate: e.g. 100mbit, 1gbit"
[[ $nice_value =~ ^-?[0-9]+$ ]] || die "--nice: a number, -20..19"
[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces)"

run_dir=/tmp/$prefix-run
br=$prefix-br
nodes=("$prefix-c")
for i in $(seq 1 "$workers"); do nodes+=("$prefix-w$i"); done

# Removes every namespace, link and file of this prefix, whatever run made them: the processes
# inside our namespaces first (they are ours: nothing else runs in them), then the namespaces
# (their veth ends go with them), then the bridge.
cleanup() {
  local ns pids
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$prefix-(c|w[0-9]+)$" || true); do
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [ -z "$pids" ] || kill $pids 2>/dev/null || true
  done
  for _ in $(seq 1 50); do
    local left=""
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$prefix-(c|w[0-9]+)$" || true); do
      left+=$(ip netns pids "$ns" 2>/dev/null || true)
    done
    [ -z "$left" ] && break
    sleep 0.1
  done
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$prefix-(c|w[0-9]+)$" || true); do
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  ip link del "$br" 2>/dev/null || true
  local l
  for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' |
    grep -E "^$prefix-(c|w[0-9]+)-h$" || true); do
    ip link del "$l" 2>/dev/null || true
  done
}

cleanup
if [ $down_only -eq 1 ]; then
  rm -rf "$run_dir"
  exit 0
fi

on_exit() {
  local rc=$?
  trap - EXIT INT TERM HUP
  cleanup
  if [ -n "$trace" ] && [ -f "$trace/coordinator.json" ]; then
    local ins=("$trace/coordinator.json")
    for i in $(seq 1 "$workers"); do ins+=("$trace/w$i.json"); done
    "$bin/caravan" trace merge "$trace/trace.json" "${ins[@]}" >&2 &&
      echo "netns-cluster: trace in $trace/trace.json (open it in ui.perfetto.dev)" >&2
  fi
  exit $rc
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

rm -rf "$run_dir"
mkdir -p "$run_dir"
chmod 700 "$run_dir"

# netem if the kernel has it (asked in a scratch namespace), else netdelay + iptables + tbf
use_netem=0
if [ $force_netdelay -eq 0 ]; then
  ip netns add "$prefix-c"
  if ip netns exec "$prefix-c" tc qdisc add dev lo root netem delay 1ms 2>/dev/null; then
    use_netem=1
  fi
  ip netns del "$prefix-c"
fi
needs_delay=0
if [ "$delay" != 0 ] || [ "$jitter" != 0 ]; then needs_delay=1; fi
if [ $use_netem -eq 0 ] && [ $needs_delay -eq 1 ]; then
  [ -x "$bin/netdelay" ] ||
    die "this kernel has no netem and $bin/netdelay is missing (install libnetfilter-queue-dev: deploy/install-deps.sh, then rebuild)"
fi

# rate -> bytes per second (for tbf's burst: 1 ms of traffic, at least 16 KiB)
rate_bytes() {
  local n=${1%%[a-z]*} u=${1##*[0-9]}
  case $u in bit) echo $((n / 8)) ;; kbit) echo $((n * 125)) ;; mbit) echo $((n * 125000)) ;;
    gbit) echo $((n * 125000000)) ;; esac
}

ip link add "$br" type bridge
ip addr add "$subnet.1/24" dev "$br"
ip link set "$br" up
idx=2
declare -A addr_of
for ns in "${nodes[@]}"; do
  ip netns add "$ns"
  ip link add "$ns-h" type veth peer name eth0 netns "$ns"
  ip link set "$ns-h" master "$br" up
  ip netns exec "$ns" ip addr add "$subnet.$idx/24" dev eth0
  ip netns exec "$ns" ip link set eth0 up
  ip netns exec "$ns" ip link set lo up
  addr_of[$ns]=$subnet.$idx
  idx=$((idx + 1))

  if [ $use_netem -eq 1 ]; then
    args=()
    if [ $needs_delay -eq 1 ]; then args+=(delay "$delay" "$jitter"); fi
    if [ "$loss" != 0 ]; then args+=(loss "$loss%"); fi
    if [ -n "$rate" ]; then args+=(rate "$rate"); fi
    if [ ${#args[@]} -gt 0 ]; then
      ip netns exec "$ns" tc qdisc add dev eth0 root netem "${args[@]}"
    fi
  else
    if [ -n "$rate" ]; then
      burst=$(($(rate_bytes "$rate") / 1000))
      [ $burst -ge 16384 ] || burst=16384
      ip netns exec "$ns" tc qdisc add dev eth0 root tbf rate "$rate" burst "$burst" latency 1s
    fi
    if [ "$loss" != 0 ]; then
      p=$(awk -v l="$loss" 'BEGIN { printf "%.6f", l / 100 }')
      ip netns exec "$ns" iptables -A OUTPUT -o eth0 -m statistic --mode random \
        --probability "$p" -j DROP
    fi
    if [ $needs_delay -eq 1 ]; then
      # real-time priority: netem runs in the kernel; on a busy machine a normal-priority
      # delayer would add scheduling delay to every packet
      ip netns exec "$ns" chrt -f 20 "$bin/netdelay" --queue 0 --delay "$delay" --jitter "$jitter" \
        2>"$run_dir/$ns.netdelay.log" &
      for _ in $(seq 1 50); do
        grep -q "^netdelay: queue" "$run_dir/$ns.netdelay.log" 2>/dev/null && break
        kill -0 $! 2>/dev/null || die "netdelay failed in $ns: $(cat "$run_dir/$ns.netdelay.log")"
        sleep 0.1
      done
      ip netns exec "$ns" iptables -A INPUT -i eth0 -j NFQUEUE --queue-num 0 # on arrival: see above
    fi
  fi
done
how=netem
[ $use_netem -eq 1 ] || how="netdelay+iptables+tbf"
echo "netns-cluster: ${#nodes[@]} namespaces on $br ($subnet.0/24): delay $delay jitter $jitter loss $loss% rate ${rate:-unlimited} per node ($how)" >&2

export CARAVAN_NETNS_PREFIX=$prefix CARAVAN_NETNS_SUBNET=$subnet
if [ $no_cluster -eq 1 ]; then
  if [ ${#cmd[@]} -gt 0 ]; then
    set +e
    "${cmd[@]}"
    exit $?
  fi
  echo "netns-cluster: namespaces ${nodes[*]}; Ctrl-C removes them" >&2
  while true; do sleep 1; done
fi

# caravan: keys, allow-list, coordinator, workers
caravan=$bin/caravan
[ -x "$caravan" ] || die "$caravan is missing (cmake --build build)"
[ -r "$model" ] || die "cannot read the model $model"
"$caravan" keygen --out "$run_dir/coordinator" >/dev/null
: >"$run_dir/allow"
for i in $(seq 1 "$workers"); do
  "$caravan" keygen --out "$run_dir/w$i" >/dev/null
  cat "$run_dir/w$i/key.pub" >>"$run_dir/allow"
  echo >>"$run_dir/allow"
done
c_addr=${addr_of[$prefix-c]}
c_trace=()
if [ -n "$trace" ]; then
  mkdir -p "$trace"
  trace=$(cd "$trace" && pwd)
  c_trace=(--trace "$trace/coordinator.json")
fi
api=(--no-api-key)
[ -z "$api_key" ] || api=(--api-key "$api_key")
ip netns exec "$prefix-c" nice -n "$nice_value" "$caravan" coordinator --key "$run_dir/coordinator" \
  --allow "$run_dir/allow" --listen "tcp://$c_addr:7000" --model "$model" \
  --workers "$workers" --wire-dtype "$wire" --http "$c_addr:$port" "${api[@]}" "${c_trace[@]}" \
  --status-file "$run_dir/coordinator.status" 2>"$run_dir/coordinator.log" &
# the workers start together but share this machine's cores: --probe-lock has their speed
# probes (for the plan) run one after the other
for i in $(seq 1 "$workers"); do
  ns=$prefix-w$i
  w_trace=()
  [ -z "$trace" ] || w_trace=(--trace "$trace/w$i.json")
  weights=(--cache "$run_dir/w$i-cache")
  [ "$shared_file" = 0 ] || weights=(--model "$model")
  ip netns exec "$ns" nice -n "$nice_value" "$caravan" worker --coordinator "tcp://$c_addr:7000" \
    --coordinator-key "$run_dir/coordinator/key.pub" --key "$run_dir/w$i" --name "w$i" \
    --listen "tcp://${addr_of[$ns]}:7100" "${weights[@]}" --threads "$threads" "${w_trace[@]}" \
    --probe-lock "$run_dir/probe.lock" 2>"$run_dir/w$i.log" &
done

url=http://$c_addr:$port
deadline=$((SECONDS + ready_timeout))
until curl -fsS -m 2 "$url/health" >/dev/null 2>&1; do
  if [ $SECONDS -ge $deadline ]; then
    echo "netns-cluster: the API did not serve within ${ready_timeout}s; logs in $run_dir:" >&2
    tail -n 5 "$run_dir"/*.log >&2 || true
    exit 1
  fi
  for ns in "${nodes[@]}"; do
    [ -n "$(ip netns pids "$ns")" ] || {
      tail -n 20 "$run_dir"/*.log >&2
      die "every process in $ns exited"
    }
  done
  sleep 0.2
done
export CARAVAN_URL=$url
echo "netns-cluster: serving at $url (logs in $run_dir)" >&2
if [ ${#cmd[@]} -gt 0 ]; then
  set +e
  "${cmd[@]}"
  exit $?
fi
echo "$url" # on stdout: the one line a calling script reads
echo "  curl $url/v1/completions -H 'Content-Type: application/json' -d '{\"prompt\":\"Once upon a time\",\"max_tokens\":32}'" >&2
echo "netns-cluster: Ctrl-C stops the cluster and removes the namespaces" >&2
while true; do
  for ns in "${nodes[@]}"; do
    [ -n "$(ip netns pids "$ns")" ] || die "every process in $ns exited (logs in $run_dir)"
  done
  sleep 1
done
