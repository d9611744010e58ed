#!/usr/bin/env bash
# Installs the Debian 12 packages caravan builds, tests and runs with, if any are missing.
# Needs root (or sudo) only when something is missing.
set -euo pipefail

packages=(
  build-essential cmake pkg-config clang clang-format libclang-rt-14-dev git
  libzmq3-dev libprotobuf-c-dev protobuf-c-compiler libopenblas-dev libsodium-dev
  libpcre2-dev libcjson-dev libmicrohttpd-dev
  tshark tcpdump iproute2 procps nodejs curl iptables
  libnetfilter-queue-dev iputils-ping openssh-client systemd
  chromium gnuplot-nox
  # (not openssh-server: it would start an ssh daemon on a developer machine; the hosts a
  # cluster runs on need it, and tests/integration/hosts_test.sh skips without it)
)
# npm (for tests/node): NodeSource's nodejs package carries its own npm and conflicts with
# Debian's, so ask for Debian's only when there is no npm at all.
command -v npm >/dev/null || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}" >&2
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
# tshark asks whether non-root users may capture; the default (no) is fine.
echo "wireshark-common wireshark-common/install-setuid boolean false" |
  "${sudo_cmd[@]}" debconf-set-selections
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
