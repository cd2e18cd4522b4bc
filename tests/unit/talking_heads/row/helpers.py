"""What the row tests share: one row submitted through the whole submit protocol against the emulator."""

from __future__ import annotations

import logging
from typing import Any

from dashscope_provider.hooks.dashscope import DashScopeHook
from talking_heads.row.ledger import RowLedger
from talking_heads.row.media import MediaSigner
from talking_heads.row.payloads import Submission, WorkItem
from talking_heads.row.submit import submit_row
from talking_heads.table.validation import RowRequest

from tests.unit.conftest import CONN_ID, is_submit

LOG = logging.getLogger(__name__)


def submit(
    ledger: RowLedger,
    row_id: str,
    media: dict[str, Any],
    *,
    model: str = "emoji-v1",
    run_id: str = "run-1",
    resubmit: bool = False,
    owner: str | None = None,
) -> Submission:
    """:func:`submit_row` for one row of ``model`` with ``media`` (an ``input`` of the conftest), on the
    connection ``CONN_ID``, as the submit step calls it."""
    return submit_row(
        ledger,
        WorkItem(RowRequest(row_id=row_id, model=model, **media), CONN_ID),
        hook_for=lambda conn_id: DashScopeHook(dashscope_conn_id=conn_id),
        default_conn_id=CONN_ID,
        run_id=run_id,
        owner=owner,
        resubmit_uncertain=resubmit,
        signer=MediaSigner(ledger.layout),
        log=LOG,
    )


def submits(emulator: Any) -> list[dict[str, Any]]:
    """The submit requests in the emulator's request log."""
    return [r for r in emulator.request_log() if is_submit(r)]
