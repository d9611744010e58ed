#!/usr/bin/env bash
# Installs the Debian 12 packages caravan builds, tests and runs with, if any are missing.
# Needs root (or sudo) only when something is missing.
set -euo pipefail

packages=(
  build-essential cmake pkg-config clang clang-format libclang-rt-14-dev git shellcheck
  libzmq3-dev libprotobuf-c-dev protobuf-c-compiler libopenblas-dev libsodium-dev
  libpcre2-dev libcjson-dev libmicrohttpd-dev
  tshark tcpdump iproute2 procps nodejs curl iptables
  libnetfilter-queue-dev iputils-ping openssh-client systemd
  chromium gnuplot-nox faketime
  # (openssh-server only with --tests, below: the hosts a cluster runs on need it, and
  # tests/integration/hosts_test.sh runs its own sshd in network namespaces)
)
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
# --tests (tests/run.sh): also openssh-server for hosts_test.sh, installed with its daemon
# neither started nor enabled, so the test suite does not leave an ssh server listening.
case "${1:-}" in
  "") with_sshd=0 ;;
  --tests) with_sshd=1 ;;
  *) echo "usage: $0 [--tests]" >&2; exit 2 ;;
esac
if [ $with_sshd -eq 1 ] && installed openssh-server; then with_sshd=0; fi
# npm (for tests/node): NodeSource's nodejs package carries its own npm and conflicts with
# Debian's, so ask for Debian's only when there is no npm at all.
command -v npm >/dev/null || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
  installed "$p" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && [ $with_sshd -eq 0 ] && exit 0

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  # tshark asks whether non-root users may capture; the default (no) is fine.
  echo "wireshark-common wireshark-common/install-setuid boolean false" |
    "${sudo_cmd[@]}" debconf-set-selections
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ $with_sshd -eq 1 ]; then
  echo "installing: openssh-server (for tests/integration/hosts_test.sh; its daemon left off)" >&2
  # policy-rc.d answering 101 keeps the package's scripts from starting the daemon; one that
  # is there already is left as it is, ours is removed however this script ends
  policy=/usr/sbin/policy-rc.d
  if [ ! -e $policy ]; then
    trap '"${sudo_cmd[@]}" rm -f $policy' EXIT
    printf '#!/bin/sh\nexit 101\n' | "${sudo_cmd[@]}" tee $policy >/dev/null
    "${sudo_cmd[@]}" chmod 755 $policy
  fi
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends openssh-server >/dev/null
  if command -v systemctl >/dev/null; then
    "${sudo_cmd[@]}" systemctl disable ssh.service >/dev/null 2>&1 || true
  fi
fi
