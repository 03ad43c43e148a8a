#!/usr/bin/env bash
# Set up lanskap in ./.venv on a fresh machine.
#   scripts/setup.sh          runtime install
#   scripts/setup.sh --dev    also the test tools (and what --scale adds: the tests cover it)
#   scripts/setup.sh --scale  also Ray Serve and psycopg (lanskap serve --replicas, a PostgreSQL gallery)
# Every package is installed at the version constraints.txt pins (the set the tests passed on).
# LANSKAP_VENV picks another folder, LANSKAP_UNPINNED=1 takes the newest releases instead
# (scripts/upgrade-check.sh uses both).
# torch goes in first, as the right build: CUDA where nvidia-smi sees a GPU, the CPU
# build elsewhere (so no GB of CUDA packages land on CPU-only machines). Nothing here
# installs torchvision, which breaks transformers when its CUDA build can't load.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_VERSION=${LANSKAP_TORCH_VERSION:-2.13.0}
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"
[ "${1:-}" = "--scale" ] && extras="[scale]"

VENV=${LANSKAP_VENV:-.venv}
pins=(-c constraints.txt)

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
export PIP_DISABLE_PIP_VERSION_CHECK=1

if ! python -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    pip install -q "torch==${TORCH_VERSION}"
  else
    # +cpu builds outrank the plain (CUDA) one of the same version; a local wheel
    # mirror that holds the CPU build works too when the PyTorch index is unreachable.
    pip install -q --retries 0 --timeout 15 "torch==${TORCH_VERSION}" \
      --extra-index-url https://download.pytorch.org/whl/cpu 2>/dev/null \
      || pip install -q "torch==${TORCH_VERSION}"
  fi
fi
if [ "${LANSKAP_UNPINNED:-0}" = 1 ]; then
  # The newest of everything but torch, which stays the build installed above (CPU or CUDA).
  keep_torch=$(mktemp)
  python -c 'import torch; print("torch==" + torch.__version__.split("+")[0])' >"$keep_torch"
  pins=(--upgrade --upgrade-strategy eager -c "$keep_torch")
fi
pip install -q "${pins[@]}" -e ".${extras}"
if python -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('torchvision') is None)"; then
  echo "error: torchvision got installed; lanskap must not depend on it" >&2
  exit 1
fi
echo "lanskap ready in $VENV ($(python -c 'import torch; print("torch", torch.__version__)'))"
echo "put 'lanskap' on your PATH with:  . $VENV/bin/activate   (or call $VENV/bin/lanskap)"
