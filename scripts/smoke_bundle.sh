#!/usr/bin/env bash
# Smoke tests of the built bundle dist/orthanc-transfers-gui (build it first
# with scripts/build_bundle.sh).
#
#   scripts/smoke_bundle.sh
#
# Checks, in order:
#   1. both executables answer --version without any display;
#   2. the resources and only the wanted Qt parts are in the bundle, numpy is
#      not (and, on Linux, every bundled Qt plugin finds its libraries);
#   3. the desktop app starts offscreen, opens its window and exits 0 with
#      --self-test, also with --demo (generated studies, Orthanc servers loading the
#      bundled server plugin);
#   4. the frozen `orthanc-transfers send ... --json` moves a study between two
#      test Orthanc servers and reports "state": "Success" (stock servers, and
#      servers with the accelerator plugin when orthanc-python is installed).
#
# Environment: VENV=<dir> (the Python that runs the test servers; default as
# in build_bundle.sh: $ORTHANC_TRANSFERS_VENV, the active one, or .venv), BUNDLE=<dir> (default dist/orthanc-transfers-gui),
# SMOKE_MODES=stock,accelerator (which send runs to do).
# Exits non-zero, naming the check, on the first failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUNDLE="${BUNDLE:-$ROOT/dist/orthanc-transfers-gui}"
TIMEOUT_S=120

say() { printf '[smoke_bundle] %s\n' "$*"; }
fail() { printf '[smoke_bundle] FAILED: %s\n' "$*" >&2; exit 1; }

[ -d "$BUNDLE" ] || fail "no bundle at $BUNDLE: run scripts/build_bundle.sh first"

program() {
    if [ -x "$BUNDLE/$1" ]; then echo "$BUNDLE/$1"
    elif [ -x "$BUNDLE/$1.exe" ]; then echo "$BUNDLE/$1.exe"
    else fail "the bundle has no executable $1"
    fi
}
GUI_EXE="$(program orthanc-transfers-gui)"
CLI_EXE="$(program orthanc-transfers)"
INTERNAL="$BUNDLE/_internal"
[ -d "$INTERNAL" ] || INTERNAL="$BUNDLE"

VENV="${VENV:-${ORTHANC_TRANSFERS_VENV:-${VIRTUAL_ENV:-$ROOT/.venv}}}"
if [ -x "$VENV/bin/python" ]; then PY="$VENV/bin/python"
elif [ -x "$VENV/Scripts/python.exe" ]; then PY="$VENV/Scripts/python.exe"
else fail "no virtual environment at $VENV (set VENV=...; it runs the test servers)"
fi

EXPECTED_VERSION="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$ROOT/gui/__init__.py")"
[ -n "$EXPECTED_VERSION" ] || fail "could not read __version__ from gui/__init__.py"

# Every run gets its own settings and no keyring, like the test suite.
SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/smoke-bundle-XXXXXX")"
trap 'rm -rf "$SCRATCH"' EXIT
export ORTHANC_TRANSFERS_CONFIG="$SCRATCH/config/config.json"
export ORTHANC_TRANSFERS_DATA="$SCRATCH/data"
export ORTHANC_TRANSFERS_KEYRING=0

# A hung program must fail the check, not the CI job's clock.
TIMEOUT=()
if command -v timeout >/dev/null; then TIMEOUT=(timeout "$TIMEOUT_S"); fi

# --- 1. --version without a display ------------------------------------------
check_version() {
    local label="$1"; shift
    local out
    out="$(env -u DISPLAY -u WAYLAND_DISPLAY -u QT_QPA_PLATFORM ${TIMEOUT[@]+"${TIMEOUT[@]}"} "$@" 2>&1)" \
        || fail "$label: '$*' exited with status $? and said: $out"
    case "$out" in
        *"$EXPECTED_VERSION"*) say "ok: $label prints its version without a display: $out" ;;
        *) fail "$label: expected version $EXPECTED_VERSION in: $out" ;;
    esac
}
check_version "orthanc-transfers-gui --version" "$GUI_EXE" --version
check_version "orthanc-transfers --version" "$CLI_EXE" --version
check_version "orthanc-transfers-gui cli --version" "$GUI_EXE" cli --version

# --- 2. contents -------------------------------------------------------------
# Every non-code file the app loads lives under resources/, which the bundle
# carries as the package gui/resources/ (found by gui.resource_paths), so the
# bundle must hold each of them there.
while IFS= read -r resource; do
    [ -f "$INTERNAL/gui/$resource" ] || fail "the bundle lacks gui/$resource"
done < <(cd "$ROOT" && find resources/style.qss resources/orthanc-transfers-gui.desktop resources/icons \
           -type f \( -name '*.qss' -o -name '*.desktop' -o -name '*.svg' -o -name '*.png' -o -name '*.ico' -o -name '*.icns' \))
for resource in resources/__init__.py resources/style.qss resources/icons/orthanc-transfers.svg \
                resources/server_plugin/transfers_accelerator.py \
                resources/server_plugin/transfers_wire.py; do
    [ -f "$INTERNAL/gui/$resource" ] || fail "the bundle lacks gui/$resource"
done
# Development tools (benchmark, fault injector, WAN emulator) stay out.
DEVTOOLS="$(find "$BUNDLE" \( -path '*tests/devtools*' -o -name 'wan_proxy*' -o -name 'faults' \) -print)"
[ -z "$DEVTOOLS" ] || fail "development tools are in the bundle:
$DEVTOOLS"
# numpy left the project (pydicom only uses it when present): a numpy in the
# build environment must not come along.
NUMPY="$(find "$INTERNAL" -maxdepth 1 \( -iname 'numpy*' -o -iname '*openblas*' \) -print)"
[ -z "$NUMPY" ] || fail "numpy is in the bundle (the spec excludes it):
$NUMPY"
say "ok: icons, stylesheet, desktop entry and server plugin (with transfers_wire.py) are in the bundle; numpy and the development tools are not"

UNWANTED="$(find "$BUNDLE" \( -iname '*Qt6Quick*' -o -iname '*Qt6Qml*' -o -iname '*WebEngine*' \
    -o -iname '*Qt63D*' -o -iname '*Multimedia*' -o -iname '*Qt6Pdf*' -o -iname '*VirtualKeyboard*' \) -print)"
[ -z "$UNWANTED" ] || fail "Qt parts the app does not use are in the bundle:
$UNWANTED"
say "ok: no QtQuick/QML, WebEngine, 3D, Multimedia, Pdf or virtual keyboard in the bundle"

if [ "$(uname -s)" = "Linux" ] && command -v ldd >/dev/null; then
    MISSING=""
    while IFS= read -r plugin; do
        broken="$(ldd "$plugin" 2>/dev/null | grep -i 'libQt6.*not found' || true)"
        [ -z "$broken" ] || MISSING="$MISSING
$plugin:
$broken"
    done < <(find "$INTERNAL" -path '*plugins*' -name '*.so' -type f)
    [ -z "$MISSING" ] || fail "bundled Qt plugins miss Qt libraries:$MISSING"
    say "ok: every bundled Qt plugin finds its Qt libraries"
fi

# --- 3. the window, offscreen ----------------------------------------------------
# A stylesheet or icon the frozen app cannot find stops it with the file's name.
OUT="$(QT_QPA_PLATFORM=offscreen ${TIMEOUT[@]+"${TIMEOUT[@]}"} "$GUI_EXE" --verbose --self-test 2>&1)" \
    || fail "orthanc-transfers-gui --self-test exited with status $?:
$OUT"
case "$OUT" in
    *"self-test ok"*) say "ok: the desktop app loaded its stylesheet, opened its window offscreen and exited (self-test ok)" ;;
    *) fail "orthanc-transfers-gui --self-test did not print 'self-test ok':
$OUT" ;;
esac

# The demo: generated images, and its Orthanc servers load the server
# plugin from inside the bundle (with the bundled transfers_wire.py).
if [ -x "${ORTHANC_BINARY:-/usr/sbin/Orthanc}" ] || command -v Orthanc >/dev/null; then
    OUT="$(QT_QPA_PLATFORM=offscreen ${TIMEOUT[@]+"${TIMEOUT[@]}"} "$GUI_EXE" --demo --self-test \
        --demo-studies 1 --demo-slices 2 2>&1)" \
        || fail "orthanc-transfers-gui --demo --self-test exited with status $?:
$OUT"
    case "$OUT" in
        *"self-test ok"*"both with the transfers accelerator"*|*"both with the transfers accelerator"*"self-test ok"*)
            say "ok: the desktop app ran its demo (two accelerated Orthanc servers, generated studies) and exited" ;;
        *) fail "orthanc-transfers-gui --demo --self-test did not print 'self-test ok' with both servers accelerated:
$OUT" ;;
    esac
else
    fail "Orthanc is not installed: the demo and transfer checks need it"
fi

# --- 4. a real transfer with the frozen command line -----------------------------
say "sending a study between test Orthanc servers with the frozen command line"
(cd "$ROOT" && "$PY" "$ROOT/scripts/smoke_send.py" --cli "$CLI_EXE" \
    --modes "${SMOKE_MODES:-stock,accelerator}") \
    || fail "the frozen orthanc-transfers send did not move the study (see above)"

say "all smoke tests passed for $BUNDLE ($(du -sh "$BUNDLE" | cut -f1))"
