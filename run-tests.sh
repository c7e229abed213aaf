#!/usr/bin/env bash
# Run the whole test suite. Creates .venv and installs requirements-dev.txt when needed,
# and the Node Socket.IO client for the cross-client test when node and npm are present.
set -euo pipefail
cd "$(dirname "$0")"
source ./scripts/venv.sh requirements-dev.txt
if command -v node >/dev/null && command -v npm >/dev/null; then
  if [ ! -d tests/node/node_modules/socket.io-client ]; then
    (cd tests/node && npm ci --no-audit --no-fund --loglevel=error) ||
      echo "run-tests: npm ci failed; the Node Socket.IO client test will be skipped"
  fi
else
  echo "run-tests: node/npm not found; the Node Socket.IO client test will be skipped"
fi
# Debian's chromium for the dashboard's browser tests (tests/test_dashboard.py skips without it).
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "run-tests: installing Debian's chromium for the dashboard browser tests"
  if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
      >/tmp/run-tests-chromium.log 2>&1; then
    echo "run-tests: could not install chromium (see /tmp/run-tests-chromium.log);" \
         "the dashboard browser tests will be skipped"
  fi
fi
exec .venv/bin/python -m pytest -n 4 --dist loadfile "$@"
