#!/usr/bin/env bash
# Installs the Debian packages the test suite needs beyond Python: Chromium, which renders the cost
# report's HTML headless (tests/unit/test_report_render.py). Sourced by test.sh; does nothing when
# Chromium is already there. Needs root (or passwordless sudo) and Debian's package registry.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""
  [[ "$(id -u)" == 0 ]] || SUDO="sudo -n"
  if command -v apt-get >/dev/null 2>&1; then
    echo "==> Installing Debian's chromium (headless rendering of the cost report in the tests)" >&2
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
  else
    echo "!! chromium is missing and apt-get is not available: install Chromium for the render test" >&2
  fi
fi
