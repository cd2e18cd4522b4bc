#!/usr/bin/env bash
# Runs every benchmark and prints its figures; creates .venv/ if needed. Run on a quiet machine: the
# figures are wall times and rates. About 15 minutes on 2 cores, plus about 25 for bench_batch's pace table
# (100 rows at speeds 16 and 4, 30 at speed 1) and about 70 for its scaling table (rows 200/1000/3000,
# accounts 1/2/4 at speed 16); `benchmarks/run.sh --quick` leaves both tables out.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO_ROOT/scripts/bootstrap.sh"
cd "$REPO_ROOT"
# Benchmark-only extras (the dashscope SDK for bench_sdk's baseline), within the lock's pins.
.venv/bin/uv pip install --quiet --python .venv/bin/python -r benchmarks/requirements.txt -c requirements.txt
for bench in bench_dag_parse bench_plan bench_report bench_download bench_waits bench_lease bench_batch bench_sdk; do
  echo "==> benchmarks/$bench.py"
  python "benchmarks/$bench.py" 2>&1 | grep -E '^(plan:|report:|dag_parse:|DOWNLOAD|WAITS|LEASE|BATCH|SDK)' || { echo "!! $bench failed"; exit 1; }
done
if [[ "${1:-}" != "--quick" ]]; then
  echo "==> benchmarks/bench_batch.py --side-by-side --rows 100 --slow-rows 30"
  python benchmarks/bench_batch.py --side-by-side --rows 100 --slow-rows 30 2>&1 | grep -E '^(BATCH|PACES)' \
    || { echo "!! pace table failed"; exit 1; }
  echo "==> benchmarks/bench_batch.py --scaling --speed 16"
  python benchmarks/bench_batch.py --scaling --speed 16 2>&1 | grep -E '^(BATCH|SCALING)' || { echo "!! scaling failed"; exit 1; }
fi
