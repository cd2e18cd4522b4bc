#!/usr/bin/env bash
# Runs the whole test suite (creating .venv/ first if needed): lint, then pytest. Extra args go to pytest.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$REPO_ROOT/scripts/bootstrap.sh"
bash "$REPO_ROOT/scripts/system_deps.sh"
cd "$REPO_ROOT"
echo "==> ruff"
ruff check .
ruff format --check .
echo "==> pytest"
exec python -m pytest "$@"
