"""The life of one input row: its states, the moves between them, and what each step does in each state.

This is the one place to read "what happens to a row in state X". Every step records what it learnt as
soon as it knows it (write-ahead for submissions) in the row's ledger record, keyed by ``row_id``, so a
task retry, a rerun, a cleared task or a backfill finds the row's real state instead of guessing, and
no money is spent twice:

==============  ==============================================  ===================================================
state           meaning                                         plan / submit / wait / store do
==============  ==============================================  ===================================================
(none)          never submitted                                 plan: generate; submit: write ``submitting``, send
``submitting``  a submit is being sent (written *before*)       plan + submit: as ``uncertain`` (loss seen now)
``uncertain``   the submit answer was lost: a task may exist    submit: adopt it from the task list, else refuse
``submitted``   the service accepted it: ``task_id`` known      submit: return the task; wait: poll that task
``generated``   the task SUCCEEDED; video not stored yet        submit, wait: reuse; store: copy the video
``succeeded``   the video is stored under ``videos/``           plan: skip (``already generated``); all: reuse
``failed``      refused or failed; ``billed`` says if paid      plan: final if billed or ``UNKNOWN``, else retry
==============  ==============================================  ===================================================

A lost submission is looked for in the task list (:func:`reconcile_row`, by :mod:`talking_heads.reconcile`'s
rule) in the submit step that saw the loss and any later try or run within 24 h. The outcome each state
becomes is :func:`outcome_of`; every outcome code is an :class:`OutcomeCode`. :mod:`talking_heads.ledger`
only stores and loads the records.
"""

from __future__ import annotations

from talking_heads.lifecycle.outcome import outcome_of
from talking_heads.lifecycle.planning import plan_row
from talking_heads.lifecycle.states import (
    TRANSITIONS,
    OutcomeCode,
    RowState,
    RowStatus,
    RowTransitionError,
)
from talking_heads.lifecycle.store import store_row
from talking_heads.lifecycle.submit import reconcile_row, submit_row
from talking_heads.lifecycle.wait import finished_result, poll_until_done, record_task_end

__all__ = [
    "TRANSITIONS",
    "OutcomeCode",
    "RowState",
    "RowStatus",
    "RowTransitionError",
    "finished_result",
    "outcome_of",
    "plan_row",
    "poll_until_done",
    "reconcile_row",
    "record_task_end",
    "store_row",
    "submit_row",
]
