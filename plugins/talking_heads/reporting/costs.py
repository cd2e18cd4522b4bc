"""Unit prices from the DashScope reference, and the cost of one generated video.

The reference prices emo-v1 per second of output video by aspect ratio (USD on the international
page, CNY and a free quota on the Chinese page). It gives no unit price for emoji-v1: such costs are
left unknown (``None``) rather than invented, unless the user supplies a price.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

#: (model, video_ratio) -> (USD per second, CNY per second), from reference pages 000 and 001; face
#: detection is priced per image, as (model, "image"): only emo-detect-v1's CNY price is published.
#: (model, ratio or "image") -> (USD, CNY) per unit; None where no price is known.
Prices = dict[tuple[str, str], tuple[float | None, float | None]]

REFERENCE_PRICES: Prices = {
    ("emo-v1", "1:1"): (0.011469, 0.08),
    ("emo-v1", "3:4"): (0.022937, 0.16),
    ("emo-detect-v1", "image"): (None, 0.004),
}

#: Free quota in seconds of output video, per model (reference page 001).
FREE_QUOTA_SECONDS: dict[str, float] = {"emo-v1": 1800.0}
#: Free quota in detected images, per detection model (detection-and-limits.md).
FREE_QUOTA_IMAGES: dict[str, int] = {"emo-detect-v1": 200, "emoji-detect-v1": 200}

#: Users may add or override prices, e.g. for emoji-v1, with a JSON object {"emoji-v1/standard": [usd, cny]}
#: given in this environment variable, or else in the Airflow Variable ``PRICE_VARIABLE``; either may
#: also hold the path or URL (any fsspec store) of a JSON file with that object.
PRICE_OVERRIDE_ENV = "DASHSCOPE_PRICES"
PRICE_VARIABLE = "dashscope_prices"


def user_prices() -> str | None:
    """The user's price overrides as JSON text (from the environment, else the Airflow Variable), or None."""
    raw = os.environ.get(PRICE_OVERRIDE_ENV)
    if not raw:
        from airflow.sdk import Variable

        raw = Variable.get(PRICE_VARIABLE, default=None)
    if not raw or not raw.strip():
        return None
    raw = raw.strip()
    if raw.startswith("{"):
        return raw
    from talking_heads.storage import as_storage_path

    return as_storage_path(raw).read_text()


@dataclass(frozen=True)
class Cost:
    """The cost of one video; ``None`` means no unit price is known for its model and ratio."""

    usd: float | None
    cny: float | None


def load_prices(overrides_json: str | None = None) -> Prices:
    """Reference prices, updated with user overrides (``"model/ratio": [usd, cny]``; see :func:`user_prices`)."""
    prices = dict(REFERENCE_PRICES)
    raw = overrides_json if overrides_json is not None else user_prices()
    if raw:
        for key, (usd, cny) in json.loads(raw).items():
            model, _, ratio = key.partition("/")
            prices[(model, ratio)] = (float(usd), float(cny))
    return prices


def cost_of(
    model: str,
    video_ratio: str | None,
    video_duration: float | None,
    prices: Prices | None = None,
) -> Cost:
    """Billed cost = ``usage.video_duration`` x the unit price of ``(model, usage.video_ratio)``."""
    table = REFERENCE_PRICES if prices is None else prices
    unit = table.get((model, video_ratio or ""))
    if unit is None or video_duration is None:
        return Cost(None, None)
    usd, cny = unit
    return Cost(
        None if usd is None else round(video_duration * usd, 6), None if cny is None else round(video_duration * cny, 6)
    )
