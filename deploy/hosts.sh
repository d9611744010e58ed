#!/usr/bin/env bash
# Starts (or stops, or shows) a caravan cluster on several machines over ssh, from a hosts file:
#
#   # role        ssh target       address the other nodes use
#   coordinator   root@10.0.0.1    10.0.0.1
#   worker        root@10.0.0.2    10.0.0.2
#   worker        admin@10.0.0.3   10.0.0.3
#
#   deploy/hosts.sh up HOSTS --model M.gguf    install, configure and start everything
#   deploy/hosts.sh status HOSTS               each node's state and the API's /health
#   deploy/hosts.sh down HOSTS                 stop every node (configs and keys stay)
#
# `up` does, on every host (as root, or through sudo -n):
#   1. copies this machine's caravan binary to /usr/local/bin/caravan (--binary; the hosts
#      need Debian 12's runtime libraries, which it apt-installs when `ldd` misses some) and,
#      with systemd, the units to /etc/systemd/system; creates the system user `caravan`;
#   2. makes the host's CURVE key pair in /etc/caravan/key with `caravan keygen` unless there is
#      one (private keys never leave their host) and collects every public key;
#   3. coordinator: writes /etc/caravan/allow (the workers' public keys), /etc/caravan/api-key
#      (a new random key unless there is one, or --api-key), copies the model to
#      /var/lib/caravan/model.gguf (unless the same file is there), writes coordinator.conf;
#      workers: write /etc/caravan/coordinator.pub and worker.conf;
#   4. starts the services: coordinator first, then the workers (systemctl enable + restart;
#      or, with --service direct for hosts without systemd, `caravan ... --config` in the
#      background as user caravan, its pid and log in /etc/caravan/);
# then waits until http://COORDINATOR:PORT/health answers and prints the URL and the API key.
# ssh options: CARAVAN_SSH_OPTS (e.g. "-i ~/.ssh/lab -o UserKnownHostsFile=/tmp/kh").
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

here=$(cd "$(dirname "$0")/.." && pwd)
action=${1:-}
hosts_file=${2:-}
[ -n "$action" ] && [ -n "$hosts_file" ] || { usage >&2; exit 2; }
shift 2
model="" binary=$here/build/bin/caravan service=systemd api_key="" port=8080 cport=7000
wport=7100 timeout=120 threads=0 wire=f32 cors=
[ -x "$binary" ] || binary=$(command -v caravan || true)
while [ $# -gt 0 ]; do
  case $1 in
    --model) model=$2; shift 2 ;;
    --binary) binary=$2; shift 2 ;;
    --service) service=$2; shift 2 ;;
    --api-key) api_key=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --control-port) cport=$2; shift 2 ;;
    --worker-port) wport=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --wire-dtype) wire=$2; shift 2 ;;
    --cors) cors=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "hosts.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
die() { echo "hosts.sh: $*" >&2; exit 1; }
[ "$service" = systemd ] || [ "$service" = direct ] || die "--service: systemd or direct"

# the hosts file
roles=() targets=() addrs=()
while read -r role target addr _; do
  [ -z "$role" ] || [[ $role == \#* ]] && continue
  [ "$role" = coordinator ] || [ "$role" = worker ] || die "$hosts_file: unknown role '$role'"
  [ -n "$addr" ] || die "$hosts_file: '$role $target' needs an address"
  roles+=("$role") targets+=("$target") addrs+=("$addr")
done <"$hosts_file"
coord=-1 n_workers=0
for i in "${!roles[@]}"; do
  if [ "${roles[$i]}" = coordinator ]; then
    [ $coord -lt 0 ] || die "$hosts_file: more than one coordinator"
    coord=$i
  else
    n_workers=$((n_workers + 1))
  fi
done
[ $coord -ge 0 ] || die "$hosts_file: no coordinator"
[ $n_workers -ge 1 ] || die "$hosts_file: no worker"
c_addr=${addrs[$coord]}

# rsh TARGET: runs bash on TARGET, as root, reading the script from stdin
read -r -a ssh_opts <<<"${CARAVAN_SSH_OPTS:-}"
# one connection per host for the whole run (ControlMaster), not one per step
ssh_opts+=(-o BatchMode=yes -o ConnectTimeout=10 -o ControlMaster=auto
  -o "ControlPath=/tmp/caravan-ssh-%C" -o ControlPersist=10s)
rsh() {
  # shellcheck disable=SC2016
  ssh "${ssh_opts[@]}" "$1" 'if [ "$(id -u)" -eq 0 ]; then exec bash -s; else exec sudo -n bash -s; fi'
}
# put TARGET PATH MODE < data: writes PATH on TARGET atomically
put() {
  ssh "${ssh_opts[@]}" "$1" "s=''; [ \"\$(id -u)\" -eq 0 ] || s='sudo -n'; \$s sh -c 'cat > \"$2.new\" && chmod $3 \"$2.new\" && mv \"$2.new\" \"$2\"'"
}

start_cmd() { # ROLE -> the remote script that (re)starts it
  if [ "$service" = systemd ]; then
    echo "systemctl daemon-reload && systemctl enable --quiet caravan-$1 && systemctl restart caravan-$1"
  else
    cat <<EOF
set -e
f=/etc/caravan/caravan-$1.pid
if [ -f \$f ] && kill -0 \$(cat \$f) 2>/dev/null; then kill \$(cat \$f); sleep 1; fi
cd /
setsid setpriv --reuid=caravan --regid=caravan --init-groups /usr/local/bin/caravan $1 --config /etc/caravan/$1.conf \\
  >>/etc/caravan/caravan-$1.log 2>&1 </dev/null &
echo \$! >\$f
EOF
  fi
}
stop_cmd() {
  if [ "$service" = systemd ]; then
    echo "systemctl disable --now --quiet caravan-$1 || true"
  else
    echo "f=/etc/caravan/caravan-$1.pid; if [ -f \$f ]; then kill \$(cat \$f) 2>/dev/null || true; rm -f \$f; fi"
  fi
}

case $action in
down)
  for i in "${!roles[@]}"; do
    [ "${roles[$i]}" = worker ] || continue
    echo "${targets[$i]}: stopping the worker" >&2
    stop_cmd worker | rsh "${targets[$i]}"
  done
  echo "${targets[$coord]}: stopping the coordinator" >&2
  stop_cmd coordinator | rsh "${targets[$coord]}"
  exit 0
  ;;
status)
  for i in "${!roles[@]}"; do
    if [ "$service" = systemd ]; then
      s=$(echo "systemctl is-active caravan-${roles[$i]} || true" | rsh "${targets[$i]}")
    else
      s=$(echo "f=/etc/caravan/caravan-${roles[$i]}.pid; [ -f \$f ] && kill -0 \$(cat \$f) 2>/dev/null && echo active || echo inactive" | rsh "${targets[$i]}")
    fi
    printf '%-12s %-24s %s\n' "${roles[$i]}" "${targets[$i]}" "$s"
  done
  curl -fsS -m 5 "http://$c_addr:$port/health" && echo || echo "the API at http://$c_addr:$port does not serve"
  exit 0
  ;;
up) ;;
*) usage >&2; exit 2 ;;
esac

[ -n "$binary" ] && [ -x "$binary" ] || die "no caravan binary to copy (build it, or --binary PATH)"
[ -n "$model" ] || die "up needs --model M.gguf"
[ -r "$model" ] || die "cannot read $model"
model_sum=$(sha256sum "$model" | cut -d' ' -f1)

# 1. binary, runtime libraries, user, units
for i in "${!roles[@]}"; do
  t=${targets[$i]}
  echo "$t: installing caravan (${roles[$i]})" >&2
  put "$t" /usr/local/bin/caravan 755 <"$binary"
  rsh "$t" <<'EOF'
set -e
if ldd /usr/local/bin/caravan | grep -q "not found"; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends libzmq5 libprotobuf-c1 libopenblas0 \
    libsodium23 libpcre2-8-0 libcjson1 libmicrohttpd12 >/dev/null
fi
ldd /usr/local/bin/caravan | grep "not found" && { echo "libraries missing" >&2; exit 1; }
id caravan >/dev/null 2>&1 ||
  useradd --system --home-dir /var/lib/caravan --no-create-home --shell /usr/sbin/nologin caravan
mkdir -p /etc/caravan /var/lib/caravan /var/cache/caravan
chown caravan:caravan /var/lib/caravan /var/cache/caravan
chmod 700 /var/lib/caravan /var/cache/caravan
[ -f /etc/caravan/key/key ] || /usr/local/bin/caravan keygen --out /etc/caravan/key >/dev/null
chown -R caravan:caravan /etc/caravan/key
chmod 700 /etc/caravan/key
EOF
  if [ "$service" = systemd ]; then
    for role in coordinator worker; do
      sed "s|@CARAVAN_BINDIR@|/usr/local/bin|; s|@CARAVAN_DOCDIR@|/usr/local/share/doc/caravan|" \
        "$here/deploy/systemd/caravan-$role.service.in" | put "$t" "/etc/systemd/system/caravan-$role.service" 644
    done
  fi
done

# 2. public keys
pubs=()
for i in "${!roles[@]}"; do
  pubs[i]=$(echo "cat /etc/caravan/key/key.pub" | rsh "${targets[$i]}" | tr -d '\n')
  [ ${#pubs[i]} -eq 40 ] || die "${targets[$i]}: no public key"
done

# 3. configuration
t=${targets[$coord]}
{
  echo "# workers allowed to join (written by deploy/hosts.sh)"
  for i in "${!roles[@]}"; do
    if [ "${roles[$i]}" = worker ]; then
      echo "# ${targets[$i]} ${addrs[$i]}"
      printf '%s\n' "${pubs[$i]}"
    fi
  done
} | put "$t" /etc/caravan/allow 644
if [ -n "$api_key" ]; then
  printf '%s\n' "$api_key" | put "$t" /etc/caravan/api-key 600
else
  api_key=$(echo '[ -s /etc/caravan/api-key ] && cat /etc/caravan/api-key || true' | rsh "$t")
  if [ -z "$api_key" ]; then
    api_key=$(head -c 24 /dev/urandom | base64 | tr '+/' '-_')
    printf '%s\n' "$api_key" | put "$t" /etc/caravan/api-key 600
  fi
fi
if [ "$(echo "sha256sum /var/lib/caravan/model.gguf 2>/dev/null | cut -d' ' -f1" | rsh "$t")" != "$model_sum" ]; then
  echo "$t: copying the model ($(du -h "$model" | cut -f1))" >&2
  put "$t" /var/lib/caravan/model.gguf 600 <"$model"
fi
cat <<EOF | put "$t" /etc/caravan/coordinator.conf 644
# written by deploy/hosts.sh; names: caravan coordinator --help
key = /etc/caravan/key
allow = /etc/caravan/allow
listen = tcp://0.0.0.0:$cport
model = /var/lib/caravan/model.gguf
workers = $n_workers
wire-dtype = $wire
http = 0.0.0.0:$port
api-key = /etc/caravan/api-key
${cors:+cors = $cors}
EOF
echo "chown caravan:caravan /etc/caravan/api-key /var/lib/caravan/model.gguf" | rsh "$t"
for i in "${!roles[@]}"; do
  [ "${roles[$i]}" = worker ] || continue
  t=${targets[$i]}
  echo "${pubs[$coord]}" | put "$t" /etc/caravan/coordinator.pub 644
  cat <<EOF | put "$t" /etc/caravan/worker.conf 644
# written by deploy/hosts.sh; names: caravan worker --help
coordinator = tcp://$c_addr:$cport
coordinator-key = /etc/caravan/coordinator.pub
key = /etc/caravan/key
listen = tcp://0.0.0.0:$wport
advertise = tcp://${addrs[$i]}:$wport
name = w$i
cache = /var/cache/caravan
threads = $threads
EOF
done

# 4. start: the coordinator, then the workers
echo "${targets[$coord]}: starting the coordinator" >&2
start_cmd coordinator | rsh "${targets[$coord]}"
for i in "${!roles[@]}"; do
  [ "${roles[$i]}" = worker ] || continue
  echo "${targets[$i]}: starting the worker" >&2
  start_cmd worker | rsh "${targets[$i]}"
done
url=http://$c_addr:$port
deadline=$((SECONDS + timeout))
until curl -fsS -m 3 "$url/health" >/dev/null 2>&1; do
  [ $SECONDS -lt $deadline ] || die "the API at $url did not serve within ${timeout}s (see: deploy/hosts.sh status $hosts_file; journalctl -u caravan-coordinator)"
  sleep 1
done
echo "serving at $url with $n_workers workers" >&2
echo "  curl $url/v1/completions -H 'Authorization: Bearer $api_key' -H 'Content-Type: application/json' -d '{\"prompt\":\"Once upon a time\",\"max_tokens\":32}'" >&2
echo "CARAVAN_URL=$url"
echo "CARAVAN_API_KEY=$api_key"
