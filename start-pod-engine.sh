#!/usr/bin/env bash
# Start POD Engine (port 3000 unless PORT says otherwise).
# Creates .venv and installs requirements.txt the first time, or when it changed.
set -euo pipefail
cd "$(dirname "$0")"
source ./scripts/venv.sh requirements.txt
exec .venv/bin/python podengine.py "$@"
