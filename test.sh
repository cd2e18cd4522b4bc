#!/usr/bin/env bash
# Runs the test suite (creating .venv/ first if needed): lint, then pytest. Extra args go to pytest.
#
#   ./test.sh         the everyday tier: every behaviour once, on real components (each soak one repetition)
#   ./test.sh --all   the full tier, what CI runs (.ci/run): every soak at its full count, the tests marked
#                     full_tier, then the Airflow matrix (scripts/matrix.sh 3.1 3.2: the default .venv is 3.3)
#
# docs/testing.md lists what each tier holds and how long it takes.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tier=everyday
pytest_args=()
for arg in "$@"; do
  if [[ "$arg" == "--all" ]]; then tier=all; else pytest_args+=("$arg"); fi
done
export TALKING_HEADS_TEST_TIER="$tier"
source "$REPO_ROOT/scripts/bootstrap.sh"
bash "$REPO_ROOT/scripts/system_deps.sh"
cd "$REPO_ROOT"
echo "==> ruff"
ruff check .
ruff format --check .
# The everyday tier runs on TEST_WORKERS pytest-xdist workers (default 2, one per core of the machine it was
# sized on), a test module at a time per worker (--dist loadfile), so a module's cluster stays in one
# worker; in the order tests/conftest.py gives them, long modules first (xdist would order them by their
# number of tests). The full tier runs on one: its soaks time real processes against each other (the kill
# mid-burst).
workers=()
if [[ "$tier" == "everyday" && "${TEST_WORKERS:-2}" -gt 1 ]]; then
  workers=(-n "${TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder)
fi
echo "==> pytest ($tier tier${workers[*]:+, ${workers[1]} workers})"
started=$SECONDS
status=0
python -m pytest ${workers[@]+"${workers[@]}"} ${pytest_args[@]+"${pytest_args[@]}"} || status=$?
echo "==> pytest took $((SECONDS - started)) s"
if [[ "$tier" == "all" && ${#pytest_args[@]} -eq 0 ]]; then
  echo "==> Airflow matrix (3.1, 3.2)"
  started=$SECONDS
  bash "$REPO_ROOT/scripts/matrix.sh" 3.1 3.2 || status=$((status ? status : 1))
  echo "==> matrix took $((SECONDS - started)) s"
fi
exit "$status"
