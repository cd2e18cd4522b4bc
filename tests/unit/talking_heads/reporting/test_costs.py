"""Unit prices from the reference, and the cost of one video."""

from __future__ import annotations

import pytest
from talking_heads.reporting.costs import cost_of, load_prices


def test_unknown_price_is_left_empty_not_invented() -> None:
    assert cost_of("emoji-v1", "standard", 3).usd is None
    prices = load_prices('{"emoji-v1/standard": [0.01, 0.07]}')
    assert cost_of("emoji-v1", "standard", 3, prices).usd == pytest.approx(0.03)
