"""The assets of talking_heads (talking_heads.orchestration.assets): each has a name and URI of its own in the
``talking_heads`` group, and survives Airflow's serialization (what the scheduler stores and matches events
by). Which task reads or makes each one, and the cost report's schedule on the outcomes, are checked on the
parsed DAGs in ``tests/unit/dags/test_dags.py``."""

from __future__ import annotations

import pytest
from airflow.sdk import Asset
from airflow.serialization.serialized_objects import BaseSerialization
from talking_heads.orchestration.assets import INPUT_TABLE, OUTCOMES, VIDEOS

ASSETS = [INPUT_TABLE, OUTCOMES, VIDEOS]


def test_each_asset_has_a_name_and_uri_of_its_own_in_the_talking_heads_group() -> None:
    assert len({a.name for a in ASSETS}) == len(ASSETS) and len({a.uri for a in ASSETS}) == len(ASSETS)
    for asset in ASSETS:
        assert asset.group == "talking_heads"
        assert asset.name.startswith("talking_heads_")
        assert asset.uri == asset.name  # no URI given: the outputs' place is a run parameter, in each event's extra


@pytest.mark.parametrize("asset", ASSETS, ids=lambda a: a.name)
def test_an_asset_survives_serialization_unchanged(asset: Asset) -> None:
    again = BaseSerialization.deserialize(BaseSerialization.serialize(asset))
    assert (again.name, again.uri, again.group) == (asset.name, asset.uri, asset.group)
