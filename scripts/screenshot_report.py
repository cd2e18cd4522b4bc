"""Renders a cost report page in headless Chromium (Debian's ``chromium``) and saves a PNG screenshot.

    .venv/bin/python scripts/screenshot_report.py demo-output/reports/cost_report.html docs/cost_report.png

Used for the README's picture and by the render test. ``--dump-dom`` prints the DOM Chromium built.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

# Flags for a closed network: no first-run, sync or background fetches that would hang or fail.
QUIET_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    raise FileNotFoundError("Chromium is not installed (scripts/system_deps.sh installs Debian's chromium)")


def run_chromium(page: Path, *action: str, width: int = 1100, height: int = 1500) -> str:
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [
                chromium(),
                *QUIET_FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                *action,
                page.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    return done.stdout


def screenshot(page: Path, png: Path, width: int = 1100, height: int = 1500) -> Path:
    png.parent.mkdir(parents=True, exist_ok=True)
    run_chromium(page, f"--screenshot={png.resolve()}", width=width, height=height)
    if not png.exists():
        raise RuntimeError(f"Chromium wrote no screenshot of {page}")
    return png


def dump_dom(page: Path) -> str:
    return run_chromium(page, "--dump-dom")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("png", type=Path, nargs="?")
    parser.add_argument("--width", type=int, default=1100)
    parser.add_argument("--height", type=int, default=1500)
    parser.add_argument("--dump-dom", action="store_true")
    args = parser.parse_args()
    if args.dump_dom:
        print(dump_dom(args.page))
    if args.png:
        print(screenshot(args.page, args.png, args.width, args.height))


if __name__ == "__main__":
    main()
