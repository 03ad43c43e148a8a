#!/usr/bin/env bash
# Try the newest releases on purpose: a fresh .venv-latest without constraints.txt, then the tests.
#   scripts/upgrade-check.sh                         newest releases pyproject.toml allows, default tests
#   scripts/upgrade-check.sh -m slow                 extra arguments go to pytest
#   LANSKAP_TRY="transformers==5.24.0" scripts/upgrade-check.sh
#                                                    also force these past pyproject.toml's caps
# It prints which versions differ from constraints.txt. When the tests pass, pin that set with
#   .venv-latest/bin/pip freeze | grep -viE '^(-e |#|lanskap|torch==)' > constraints.txt  (keep the header)
set -euo pipefail
cd "$(dirname "$0")/.."
export LANSKAP_VENV=.venv-latest LANSKAP_UNPINNED=1
scripts/setup.sh --dev
# shellcheck disable=SC1091
. .venv-latest/bin/activate
if [ -n "${LANSKAP_TRY:-}" ]; then
  # shellcheck disable=SC2086
  pip install -q --upgrade $LANSKAP_TRY
fi
echo "versions that differ from constraints.txt:"
pip freeze 2>/dev/null | grep -viE '^(-e |#|lanskap|torch==)' | sort >/tmp/lanskap-latest.txt
grep -vE '^#' constraints.txt | sort | comm -13 - /tmp/lanskap-latest.txt | sed 's/^/  /'
if [ "$#" -eq 0 ]; then
  set -- -m "not slow or e2e"
fi
exec python -m pytest "$@"
