#!/usr/bin/env bash
# Install everything, then open the app on two local demo Orthanc servers.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
bootstrap ""
exec "$VENV/bin/orthanc-transfers-gui" --demo "$@"
