#!/usr/bin/env bash
# The Airflow matrix: for each supported Airflow line (default: all of them), a venv of its own,
# .venv-airflow-X.Y/, installed from constraints/airflow-X.Y.txt, then for that line:
#   unit       tests/unit, without the two that need what is not a Python package:
#              tests/unit/talking_heads/reporting/test_report_render.py (Debian's Chromium) and nothing else needs a
#              system service (test_compose.py only reads docker-compose.yaml and the Dockerfile);
#   dag_test   one real-Airflow dag.test() of talking_heads against the emulator (both models: stored videos
#              and one outcome line per row, a rerun that pays nothing);
#   packaging  tests/packaging (the wheels; every constraints file satisfies the wheel's Requires-Dist).
# One summary line per line, e.g.
#   MATRIX airflow=3.1.8 unit=passed dag_test=passed packaging=passed seconds=312 (unit=... dag_test=... ...)
# and a non-zero exit if any step of any line failed. Logs: test-artifacts/matrix/airflow-X.Y-<step>.log.
#
#   scripts/matrix.sh            # 3.1, 3.2 and 3.3
#   scripts/matrix.sh 3.1 3.2    # only those lines
#
# A line's venv is reused while its stamp (the constraints file and both pyproject.toml) matches, as
# scripts/bootstrap.sh does for .venv/; delete .venv-airflow-X.Y/ to start it over.
set -uo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON_BIN="${PYTHON:-python3.11}"
command -v "$PYTHON_BIN" >/dev/null 2>&1 || PYTHON_BIN=python3
LINES=("$@")
[[ ${#LINES[@]} -gt 0 ]] || LINES=(3.1 3.2 3.3)
ARTIFACTS="$REPO_ROOT/test-artifacts/matrix"
mkdir -p "$ARTIFACTS"

# The dag.test() run of the matrix: both models, videos and outcome lines, a rerun that pays nothing.
DAG_TEST="tests/integration/test_talking_heads_dag.py::test_dag_generates_both_models_and_never_pays_twice"
# Unit tests left out of the matrix, and why: the report's render test drives Debian's Chromium (a system
# package; ./test.sh runs it on the default line).
UNIT_DESELECT=(--deselect tests/unit/talking_heads/reporting/test_report_render.py)

setup_venv() {  # $1: the line (3.1); creates or reuses .venv-airflow-$1, returns non-zero on failure
  local line="$1" venv="$REPO_ROOT/.venv-airflow-$1" lock="$REPO_ROOT/constraints/airflow-$1.txt"
  [[ -f "$lock" ]] || { echo "no constraints file $lock" >&2; return 1; }
  local stamp="$venv/.constraints.sha256" want
  want="$(cat "$lock" "$REPO_ROOT/pyproject.toml" "$REPO_ROOT/include/pyproject.toml" | sha256sum | cut -d' ' -f1)"
  if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  echo "==> Setting up $venv from constraints/airflow-$line.txt" >&2
  rm -rf "$venv"
  "$PYTHON_BIN" -m venv "$venv" || return 1
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "uv==0.13.9" || return 1
  # The whole lock (test tools included), then the project and the emulator the way the README tells users
  # to: editable, resolved within the constraints, so a pyproject range the lock does not satisfy fails here.
  # Bytecode compiled at install, as scripts/bootstrap.sh does, so no process compiles Airflow from source.
  "$venv/bin/uv" pip install --quiet --compile-bytecode --python "$venv/bin/python" -r "$lock" || return 1
  "$venv/bin/uv" pip install --quiet --python "$venv/bin/python" -c "$lock" \
    -e "$REPO_ROOT[tests,celery]" -e "$REPO_ROOT/include" || return 1
  echo "$want" > "$stamp"
}

run_step() {  # $1: line, $2: step name, rest: pytest arguments; prints passed/failed, logs to ARTIFACTS
  local line="$1" step="$2"; shift 2
  local log="$ARTIFACTS/airflow-$line-$step.log"
  echo "==> airflow $line: $step (log: ${log#"$REPO_ROOT"/})" >&2
  # The line's venv first on PATH: Airflow subprocesses (task runners) use its interpreter.
  if (cd "$REPO_ROOT" && PATH="$REPO_ROOT/.venv-airflow-$line/bin:$PATH" \
      "$REPO_ROOT/.venv-airflow-$line/bin/python" -m pytest -q -p no:cacheprovider "$@") >"$log" 2>&1; then
    tail -n 1 "$log" >&2
    echo passed
  else
    tail -n 30 "$log" >&2
    echo failed
  fi
}

status=0
summaries=()
for line in "${LINES[@]}"; do
  start=$SECONDS
  if ! setup_venv "$line"; then
    summaries+=("MATRIX airflow=$line setup=failed")
    status=1
    continue
  fi
  version="$("$REPO_ROOT/.venv-airflow-$line/bin/python" -c 'import airflow; print(airflow.__version__)')"
  setup_s=$((SECONDS - start))
  # The unit tests on TEST_WORKERS pytest-xdist workers (default: one per core), as ./test.sh --all runs its
  # tests: a module per worker.
  t=$SECONDS
  unit="$(run_step "$line" unit -n "${TEST_WORKERS:-$(nproc)}" --dist loadfile tests/unit "${UNIT_DESELECT[@]}")"
  unit_s=$((SECONDS - t))
  t=$SECONDS; dag="$(run_step "$line" dag_test "$DAG_TEST")"; dag_s=$((SECONDS - t))
  t=$SECONDS; pkg="$(run_step "$line" packaging tests/packaging)"; pkg_s=$((SECONDS - t))
  [[ "$unit/$dag/$pkg" == passed/passed/passed ]] || status=1
  summaries+=("MATRIX airflow=$version unit=$unit dag_test=$dag packaging=$pkg seconds=$((SECONDS - start)) \
(setup=$setup_s unit=$unit_s dag_test=$dag_s packaging=$pkg_s)")
  echo "${summaries[-1]}"
done
echo "==> Airflow matrix"
printf '%s\n' "${summaries[@]}"
exit "$status"
