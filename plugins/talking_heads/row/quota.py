"""A used-up free quota: once the service answers ``AllocationQuota.FreeTierOnly`` (or the like) for an
account, the run submits nothing more with it; every row of it would get the same answer, and nothing is
billed. The stop is recorded per run and account under ``runs/{run}/`` so every submit step sees it."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from dashscope_provider.compat import AirflowNotFoundException
from dashscope_provider.connection import account_from_connection

from talking_heads.row.ledger import RowLedger
from talking_heads.row.states import now_iso

if TYPE_CHECKING:  # the hook's import (HttpHook, aiohttp) is paid where a call is made, not at DAG parse
    from dashscope_provider.hooks.dashscope import DashScopeHook


def quota_stop(ledger: RowLedger, run_id: str, hook: DashScopeHook) -> str | None:
    """Why this run submits nothing more with the hook's account (its free quota ran out), or None."""
    try:
        record = json.loads(ledger.layout.quota_exhausted(run_id, _account(hook)).read_text())
    except (FileNotFoundError, AirflowNotFoundException):  # no connection: the call says so, naming it
        return None
    return f"not submitted: {record['reason']} (answered to row {record['row_id']} earlier in this run)"


def stop_submitting(ledger: RowLedger, run_id: str, hook: DashScopeHook, row_id: str, answer: str) -> str:
    """Record that the hook's account has no free quota left in this run; returns the row's reason."""
    reason = (
        f"the free quota of the DashScope account is used up ({answer}); this run submits nothing more with "
        "it, and nothing was billed. A later run submits these rows (after pay-as-you-go is enabled, or the "
        "quota is restored)"
    )
    path = ledger.layout.quota_exhausted(run_id, _account(hook))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"reason": reason, "row_id": row_id, "at": now_iso()}))
    return f"not submitted: {reason}"


def _account(hook: DashScopeHook) -> str:
    return account_from_connection(hook.dashscope_connection)
