#!/usr/bin/env bash
# Installs every build and test dependency of am2z on Debian 12 (bookworm).
# Idempotent: when everything is present it does nothing and exits 0.
# Usage: deploy/install-deps.sh        (as root, or with sudo available)
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config
  libzmq3-dev libczmq-dev libmsgpack-dev liblmdb-dev libssl-dev
  libjansson-dev check
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=sudo
  else
    echo "install-deps: need root to install: ${missing[*]}" >&2
    exit 1
  fi
fi

echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done" >&2
