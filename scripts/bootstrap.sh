#!/usr/bin/env bash
# Creates .venv/ from requirements.txt (a fully pinned lock) if it is missing or stale, with this project
# (the provider and the pipeline, pyproject.toml) and the emulator (its own distribution,
# include/pyproject.toml) installed editable on top, without dependencies: the lock has them all.
# Sourced by demo.sh and test.sh; safe to run again: it does nothing when none of the three has changed.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO_ROOT/.venv"
PYTHON_BIN="${PYTHON:-python3.11}"
command -v "$PYTHON_BIN" >/dev/null 2>&1 || PYTHON_BIN=python3

stamp="$VENV/.requirements.sha256"
# BOOTSTRAP_VERSION: bumped when how the venv is built changes (2: bytecode compiled at install), so an
# older .venv/ is brought up to date.
BOOTSTRAP_VERSION=2
want="$( (echo "$BOOTSTRAP_VERSION"; cat "$REPO_ROOT/requirements.txt" "$REPO_ROOT/pyproject.toml" \
  "$REPO_ROOT/include/pyproject.toml") | sha256sum | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/python" || ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "==> Setting up $VENV (first run takes a minute or two)" >&2
  [[ -x "$VENV/bin/python" ]] || "$PYTHON_BIN" -m venv "$VENV"
  # uv installs the ~300 pinned packages in seconds where pip takes minutes; both read the same lock.
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "uv==0.13.9"
  # Bytecode compiled at install (--compile-bytecode; uv, unlike pip, writes no .pyc by default), and where
  # PYTHONDONTWRITEBYTECODE is set no import writes one either: every process (each Airflow task's too) would
  # compile Airflow from source, about 0.4 CPU-s a task process (docs/benchmarks.md). Airflow's images ship
  # compiled bytecode.
  "$VENV/bin/uv" pip install --quiet --compile-bytecode --python "$VENV/bin/python" -r "$REPO_ROOT/requirements.txt"
  "$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" --no-deps -e "$REPO_ROOT" -e "$REPO_ROOT/include"
  echo "$want" > "$stamp"
fi

# This checkout's own code, compiled the same way (up-to-date files are skipped; one edited since is
# compiled in memory until the next run).
"$VENV/bin/python" -m compileall -q -j 0 "$REPO_ROOT/dags" "$REPO_ROOT/plugins" "$REPO_ROOT/include" \
  "$REPO_ROOT/tests" "$REPO_ROOT/benchmarks" >/dev/null || true

# One Airflow home per checkout, with this repo's dags/ and plugins/.
export AIRFLOW_HOME="${AIRFLOW_HOME:-$REPO_ROOT/.airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="$REPO_ROOT/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$REPO_ROOT/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export PATH="$VENV/bin:$PATH"
