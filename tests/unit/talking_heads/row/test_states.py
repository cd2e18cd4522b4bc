"""A row's states (talking_heads.row.states): every state's allowed moves, and a record's history through JSON."""

from __future__ import annotations

import pytest
from talking_heads.row.states import TRANSITIONS, RowRecord, RowStatus, RowTransitionError


def test_every_state_has_its_moves_and_a_succeeded_row_never_moves() -> None:
    assert set(TRANSITIONS) == set(RowStatus)
    assert TRANSITIONS[RowStatus.SUCCEEDED] == frozenset()
    done = RowRecord("r", RowStatus.SUCCEEDED, task_id="t")
    with pytest.raises(RowTransitionError, match="succeeded -> submitting"):
        done.advance(RowStatus.SUBMITTING)
    # A submitted task is never sent again from "submitted" without first recording the intent.
    with pytest.raises(RowTransitionError):
        RowRecord("r", RowStatus.SUBMITTED, task_id="t").advance(RowStatus.UNCERTAIN)


def test_advance_keeps_history_and_round_trips_through_json() -> None:
    state = RowRecord("r", "submitting").advance(RowStatus.SUBMITTED, task_id="t1")
    state = state.advance(RowStatus.GENERATED, billed=True, video_duration=3.5)
    assert [h.split(" ", 1)[1] for h in state.history] == ["submitting->submitted", "submitted->generated task=t1"]
    again = RowRecord.from_dict(state.to_dict() | {"unknown_field": 1})
    assert again == state and isinstance(again.status, RowStatus)
