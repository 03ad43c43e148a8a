#!/usr/bin/env bash
# Set up (scripts/setup.sh --dev) and run the default test set: fast tests plus the
# end-to-end path. Extra arguments go to pytest, e.g. scripts/test.sh -m slow
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
. .venv/bin/activate
if [ "$#" -eq 0 ]; then
  set -- -m "not slow or e2e"
fi
exec python -m pytest "$@"
