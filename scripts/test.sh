#!/usr/bin/env bash
# The test suite: installs the environment if needed (idempotent), then runs pytest.
#   ./scripts/test.sh [pytest args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/install.sh"
source "$ROOT/scripts/env.sh"
cd "$ROOT"
exec "$PFO_PYTHON" -m pytest -q -p no:cacheprovider tests "$@"
