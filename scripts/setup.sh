#!/usr/bin/env bash
# Creates .venv/ with torch and lrsweep (editable, with the dev tools). Safe to re-run.
# TORCH_SPEC picks the torch build: the default pins the release this project is tested with
# (on this project's machines pip serves it from a local mirror in about a minute).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  echo "setup: installing $TORCH_SPEC (a few GB, a few minutes)"
  # shellcheck disable=SC2086
  .venv/bin/pip install --quiet $TORCH_SPEC
fi
echo "setup: installing lrsweep[dev]"
.venv/bin/pip install --quiet -e '.[dev]'
echo "setup: done (.venv/bin/python)"
