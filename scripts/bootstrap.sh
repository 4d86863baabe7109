#!/usr/bin/env bash
# Installs what Orthanc Transfers needs on Debian/Ubuntu, idempotently:
# the distribution's Orthanc (+ Python plugin), the system libraries Qt
# needs, and a virtual environment (.venv) with the project.
# Sourced by run-demo.sh and run-tests.sh; usage: bootstrap <pip extras>.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ORTHANC_TRANSFERS_VENV:-$ROOT/.venv}"

APT_PACKAGES=(
  orthanc orthanc-python                 # the servers the app, demo and tests talk to
  python3 python3-venv python3-pip       # the virtual environment
  libgl1 libegl1 libglib2.0-0 libfontconfig1 libfreetype6 libdbus-1-3
  libxkbcommon0 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1
  libxcb-shape0 libxcb-xinerama0 libxcb-randr0 libxcb-render-util0 libxcb-image0
  libwayland-cursor0 fonts-dejavu-core   # Qt's xcb/wayland/offscreen platforms
  openssl                                 # test certificates
)
# Only the test suite needs these: a headless browser that clicks the
# plugin's Orthanc Explorer button.
TEST_APT_PACKAGES=(chromium)

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else echo "error: need root or sudo to install: ${APT_PACKAGES[*]}" >&2; exit 1
  fi
}

install_system_packages() {
  local missing=() wanted=("${APT_PACKAGES[@]}")
  if [[ ",${1:-}," == *,test,* ]]; then wanted+=("${TEST_APT_PACKAGES[@]}"); fi
  for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "Installing system packages: ${missing[*]}"
    as_root apt-get update -qq
    # The package's own service is not needed: the app starts its own servers.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
  if [ -d /run/systemd/system ] && systemctl is-active --quiet orthanc 2>/dev/null; then
    : # a system-wide Orthanc may run on 8042; ours use free ports, so leave it alone
  fi
}

install_venv() {
  local extras="$1"
  if [ ! -x "$VENV/bin/python" ]; then
    echo "Creating virtual environment in $VENV"
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  echo "Installing the project into $VENV (extras: ${extras:-none})"
  "$VENV/bin/python" -m pip install -q -e "$ROOT${extras:+[$extras]}"
}

bootstrap() {
  install_system_packages "${1:-}"
  install_venv "${1:-}"
}
