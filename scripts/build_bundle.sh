#!/usr/bin/env bash
# Build the one-folder bundle dist/orthanc-transfers-gui with PyInstaller.
#
#   scripts/build_bundle.sh
#
# Environment:
#   VENV=<dir>     virtual environment to use (default: $ORTHANC_TRANSFERS_VENV
#                  as for scripts/run-tests.sh, else the active one, else .venv
#                  in the repository, created when missing)
#   PYTHON=<exe>   interpreter that creates .venv (default: python3)
#   FORCE_PIP=1    run pip even when every dependency is already installed
#   CLEAN=1        discard PyInstaller's cache first (slower, from scratch)
#
# Safe to run again: the previous bundle is replaced. Exits non-zero with a
# message saying which step failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SPEC="$ROOT/orthanc_transfers_gui.spec"
DIST="$ROOT/dist"
WORK="$ROOT/build/pyinstaller"
BUNDLE="$DIST/orthanc-transfers-gui"
SIZE_GOAL_MB=150

say() { printf '[build_bundle] %s\n' "$*"; }
fail() { printf '[build_bundle] FAILED: %s\n' "$*" >&2; exit 1; }

venv_python() {
    if [ -x "$1/bin/python" ]; then echo "$1/bin/python"
    elif [ -x "$1/Scripts/python.exe" ]; then echo "$1/Scripts/python.exe"
    fi
}

# 1. The virtual environment.
VENV="${VENV:-${ORTHANC_TRANSFERS_VENV:-${VIRTUAL_ENV:-$ROOT/.venv}}}"
PY="$(venv_python "$VENV")"
if [ -z "$PY" ]; then
    BASE_PYTHON="${PYTHON:-python3}"
    command -v "$BASE_PYTHON" >/dev/null || fail "no $BASE_PYTHON to create the virtual environment $VENV (set PYTHON=...)"
    say "creating virtual environment $VENV with $BASE_PYTHON"
    "$BASE_PYTHON" -m venv "$VENV" || fail "could not create the virtual environment $VENV"
    PY="$(venv_python "$VENV")"
    [ -n "$PY" ] || fail "the virtual environment $VENV has no python"
fi
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || fail "$PY is older than Python 3.11"
say "python: $PY ($("$PY" -c 'import sys; print(sys.version.split()[0])'))"

# 2. The project and its 'package' extra (PyInstaller). Skipped when all is
#    there already, so the build also works offline in a prepared venv.
DEPS_PRESENT='import PyInstaller, PySide6.QtWidgets, PySide6.QtSvg, qasync, httpx, pydicom, platformdirs, keyring'
if [ "${FORCE_PIP:-0}" != "1" ] && "$PY" -c "$DEPS_PRESENT" 2>/dev/null; then
    say "dependencies already installed in $VENV: skipping pip (FORCE_PIP=1 to run it)"
else
    say "installing the project with its 'package' extra into $VENV"
    "$PY" -m pip install --disable-pip-version-check --quiet --editable "$ROOT[package]" \
        || fail "pip could not install the project (see the messages above)"
    "$PY" -c "$DEPS_PRESENT" || fail "dependencies are still missing after pip install"
fi

# 3. Resources the spec takes must exist (a clear message beats PyInstaller's).
for required in resources/icons/orthanc-transfers.svg resources/server_plugin resources/style.qss \
                resources/orthanc-transfers-gui.desktop gui/frozen_main.py gui/app.py gui/cli.py; do
    [ -e "$ROOT/$required" ] || fail "$required is missing from the source tree"
done

# 4. PyInstaller.
EXTRA=()
if [ "${CLEAN:-0}" = "1" ]; then EXTRA+=(--clean); fi
say "running PyInstaller on $(basename "$SPEC") (a few minutes)"
START=$(date +%s)
(cd "$ROOT" && "$PY" -m PyInstaller --noconfirm --log-level WARN \
    --distpath "$DIST" --workpath "$WORK" ${EXTRA[@]+"${EXTRA[@]}"} "$SPEC") \
    || fail "PyInstaller did not build the bundle (see the messages above)"
say "PyInstaller finished in $(( $(date +%s) - START )) s"

# 5. What came out.
for program in orthanc-transfers-gui orthanc-transfers; do
    if [ -x "$BUNDLE/$program" ] || [ -x "$BUNDLE/$program.exe" ]; then
        say "executable: $BUNDLE/$program"
    else
        fail "the bundle has no executable $program"
    fi
done
SIZE_MB=$(du -sm "$BUNDLE" | cut -f1)
say "bundle: $BUNDLE"
say "bundle size: $(du -sh "$BUNDLE" | cut -f1) (${SIZE_MB} MB; goal under ${SIZE_GOAL_MB} MB)"
if [ "$SIZE_MB" -ge "$SIZE_GOAL_MB" ]; then
    say "WARNING: the bundle is over the ${SIZE_GOAL_MB} MB goal"
fi
say "OK"
