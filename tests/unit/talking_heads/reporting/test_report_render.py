"""The cost report's HTML page rendered by a real browser: Debian's Chromium, headless.

Chromium must build the page's DOM with the totals in it, and paint the inline chart: the stacked bars'
colours must be on the screenshot (a page whose image does not decode shows none of them; the control
case checks exactly that, so the colour check can fail).
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from talking_heads.reporting.report import write_report

from tests.unit.talking_heads.reporting.test_report import _outcomes

REPO_ROOT = Path(__file__).resolve().parents[4]
SCRIPT = REPO_ROOT / "scripts" / "screenshot_report.py"
# matplotlib's first two cycle colours: the first two stacked series (emo-v1 1:1, emo-v1 3:4).
BAR_COLOURS = {"emo-v1 1:1": (31, 119, 180), "emo-v1 3:4": (255, 127, 14)}


def _render(page: Path, png: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(page), str(png), "--dump-dom"],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )


def _pixels_of(png: Path, colour: tuple[int, int, int]) -> int:
    image = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return int((np.abs(image - np.array(colour)).sum(axis=2) <= 12).sum())


@pytest.fixture(scope="module")
def report_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report")
    for day in (1, 2, 3):
        _outcomes(
            root,
            f"scheduled__2026-11-0{day}T00:00:00",
            [
                {
                    "row_id": f"sq{day}",
                    "model": "emo-v1",
                    "status": "succeeded",
                    "task_id": f"s{day}",
                    "video_duration": 10.0 * day,
                    "video_ratio": "1:1",
                },
                {
                    "row_id": f"hb{day}",
                    "model": "emo-v1",
                    "status": "succeeded",
                    "task_id": f"h{day}",
                    "video_duration": 8.0,
                    "video_ratio": "3:4",
                },
                {"row_id": f"bad{day}", "model": "emo-v1", "status": "failed", "code": "InvalidURL"},
            ],
        )
    write_report(str(root))
    return root / "reports" / "cost_report.html"


def test_report_renders_in_headless_chromium(report_page: Path, tmp_path: Path) -> None:
    png = tmp_path / "report.png"
    done = _render(report_page, png)
    dom = done.stdout
    # 6 videos; 60 s of 1:1 and 24 s of 3:4 billed.
    assert "6 videos · 84 s billed" in dom  # whole seconds reported: no forced decimals
    assert f"USD {60 * 0.011469 + 24 * 0.022937:,.4f}" in dom
    assert "InvalidURL" in dom and "Free quota" in dom
    assert re.search(r'<img alt="cost per day by ratio" src="data:image/png;base64,', dom)
    with Image.open(png) as image:
        assert image.size == (1100, 1500)
    for series, colour in BAR_COLOURS.items():
        assert _pixels_of(png, colour) > 2000, f"no {series} bars painted"


def test_a_chart_that_does_not_decode_paints_no_bars(report_page: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.html"
    page = report_page.read_text()
    start = page.index("base64,") + len("base64,")
    broken.write_text(page[:start] + base64.b64encode(b"not a png").decode() + page[page.index('"', start) :])
    png = tmp_path / "broken.png"
    _render(broken, png)
    assert all(_pixels_of(png, colour) < 50 for colour in BAR_COLOURS.values())
