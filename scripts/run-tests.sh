#!/usr/bin/env bash
# Install what the tests need, then run the whole suite against real Orthanc servers.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
bootstrap "test"
cd "$ROOT"
export QT_QPA_PLATFORM=offscreen
exec "$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
