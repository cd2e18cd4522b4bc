"""The fault injector (:mod:`dashscope_emulator.faults`)."""

from __future__ import annotations

import pytest
from dashscope_emulator.faults import FaultInjector


def test_probabilistic_faults_are_reproducible_with_a_seed() -> None:
    def draws(seed: int) -> list[str | None]:
        injector = FaultInjector()
        injector.configure(submit_5xx=0.3, drop_submit=0.2, query_5xx=0.4, seed=seed)
        return [injector.draw("submit") for _ in range(50)] + [injector.draw("query") for _ in range(50)]

    first = draws(7)
    assert first == draws(7)
    assert {"submit_500", "submit_503", "drop_submit", None} <= set(first[:50])
    assert {"query_500", "query_503", None} <= set(first[50:])
    assert "drop_query" not in first
    with pytest.raises(ValueError, match="must be in"):
        FaultInjector().configure(submit_5xx=1.5)
    with pytest.raises(ValueError, match="unknown fault"):
        FaultInjector().force_next("submit_418")
