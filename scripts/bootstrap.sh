#!/usr/bin/env bash
# Installs, from Debian's packages, whatever drover needs to build, test and
# demo that is not on this machine yet. Non-interactive and idempotent: a
# second run installs nothing and takes well under a second.
#
#   scripts/bootstrap.sh          build + test dependencies
#   scripts/bootstrap.sh --docker also docker.io, busybox-static, docker-registry
set -euo pipefail

want=(
  build-essential pkg-config meson ninja-build
  libzmq3-dev cppzmq-dev libmsgpack-cxx-dev libleveldb-dev
  libtomlplusplus-dev libspdlog-dev libfmt-dev doctest-dev nlohmann-json3-dev
  libcli11-dev liblua5.4-dev libsodium-dev
  clang libclang-rt-14-dev
  python3 python3-zmq python3-msgpack
  systemd
  git curl
  iproute2 tcpdump
)
if [[ "${1:-}" == "--docker" ]]; then
  want+=(docker.io busybox-static docker-registry)
fi

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "bootstrap: installing ${missing[*]}" >&2
sudo=""
[[ $(id -u) -ne 0 ]] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
# An update is needed on a fresh machine whose package lists are empty or old.
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
