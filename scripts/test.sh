#!/usr/bin/env bash
# Set up (scripts/setup.sh --dev) and run the default test set: fast tests plus the
# end-to-end paths. Extra arguments go to pytest, e.g. scripts/test.sh -m slow, or
# scripts/test.sh -m scale (the Ray Serve server's tests: one shared server, one process).
# The web-app test drives Debian's chromium, the gallery's PostgreSQL tests start Debian's
# postgresql server; when one is missing and apt-get can be used (root), it is installed here.
# Without it those tests skip, unless LANSKAP_REQUIRE_BROWSER=1 / LANSKAP_REQUIRE_POSTGRES=1
# (CI) make it a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing Debian's chromium for the web-app test" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; the browser test will be skipped" >&2
fi
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
  && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing Debian's postgresql for the PostgreSQL gallery tests" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
    || echo "warning: could not install postgresql; the PostgreSQL tests will be skipped" >&2
fi
. .venv/bin/activate
if [ "$#" -eq 0 ]; then
  # Two workers even on two cores: many tests wait on a subprocess's imports, a server or the
  # browser, and torch's OpenMP threads wait passively (lanskap sets OMP_WAIT_POLICY), so the
  # workers overlap instead of fighting. worksteal keeps the long end-to-end tests from
  # queueing behind each other.
  workers="${LANSKAP_TEST_WORKERS:-2}"
  set -- -m "(not slow or e2e) and not scale" -n "$workers" --dist worksteal
  # The cores shared out among the workers: torch in each worker (and in the CLI processes its
  # tests start) gets its share, instead of every process spinning a thread on every core.
  # Measured on 2 cores, same tree: 8 min 39 s with one thread each, 8 min 57 s without.
  cores="$(nproc 2>/dev/null || echo 2)"
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( cores / workers > 0 ? cores / workers : 1 ))}"
fi
exec python -m pytest "$@"
