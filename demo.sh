#!/usr/bin/env bash
# Runs the main job: `talking_heads` on the bundled sample table (or --input-table URL).
# With no dashscope_default connection and no DASHSCOPE_API_KEY it starts the project's own DashScope
# emulator on 127.0.0.1 and uses it. Prints where the videos and the outcome table are, and a summary.
#
#   ./demo.sh [--input-table PATH_OR_URL] [--output-root PATH_OR_URL] [--fresh]
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$REPO_ROOT/scripts/bootstrap.sh"
exec python "$REPO_ROOT/scripts/demo.py" "$@"
