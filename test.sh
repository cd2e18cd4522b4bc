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
# Both tiers run on TEST_WORKERS pytest-xdist workers, a test module at a time per worker (--dist loadfile),
# so a module's cluster stays in one worker (the modules that share one count as one: SHARED_CLUSTER_MODULES in
# tests/conftest.py); in the order tests/conftest.py gives them (run_order): long modules first, each followed by
# a unit module that mostly waits (xdist would order them by their number of tests). By default the everyday
# tier runs one worker more than the machine has cores (much of it waits on emulated service time and on
# Airflow's loops, not on a core), the full tier one per core (its soaks are the long poles; CI must not be the
# run that is starved).
# TEST_WORKERS=1 runs them in one process.
cores="$(nproc 2>/dev/null || echo 2)"
if [[ "$tier" == "everyday" ]]; then default_workers=$((cores + 1)); else default_workers="$cores"; fi
test_workers="${TEST_WORKERS:-$default_workers}"
workers=()
if [[ "$test_workers" -gt 1 ]]; then
  workers=(-n "$test_workers" --dist loadfile --no-loadscope-reorder)
fi
echo "==> pytest ($tier tier${workers[*]:+, ${workers[1]} workers})"
started=$SECONDS
status=0
# --durations: the slowest tests (a cluster module's first test carries its cluster's start), for the tiers' budgets.
python -m pytest ${workers[@]+"${workers[@]}"} --durations=15 ${pytest_args[@]+"${pytest_args[@]}"} || status=$?
echo "==> pytest took $((SECONDS - started)) s"
if [[ "$tier" == "all" && ${#pytest_args[@]} -eq 0 ]]; then
  echo "==> Airflow matrix (3.1, 3.2)"
  started=$SECONDS
  bash "$REPO_ROOT/scripts/matrix.sh" 3.1 3.2 || status=$((status ? status : 1))
  echo "==> matrix took $((SECONDS - started)) s"
fi
exit "$status"
