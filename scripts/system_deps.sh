#!/usr/bin/env bash
# Installs the Debian packages the test suite needs beyond Python, each only when it is missing:
#   chromium      renders the cost report's HTML headless (tests/unit/test_report_render.py)
#   postgresql    the metadata database of the distributed test (tests/integration/test_distributed.py)
#   redis-server  the Celery broker of the same test
# Run by test.sh. Needs root (or passwordless sudo) and Debian's package registry; the services are not
# started here: the test runs its own short-lived instances as processes.
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[[ ${#missing[@]} -eq 0 ]] && exit 0

SUDO=""
[[ "$(id -u)" == 0 ]] || SUDO="sudo -n"
if command -v apt-get >/dev/null 2>&1; then
  echo "==> Installing Debian's ${missing[*]} (report rendering; Postgres and Redis for the distributed test)" >&2
  $SUDO apt-get update -qq >/dev/null
  # Any service the packages start is not used: the test runs its own instances on free ports.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "!! missing ${missing[*]} and apt-get is not available: install them for the render and distributed tests" >&2
fi
