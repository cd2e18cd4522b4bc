"""The DashScope connections (API keys) a run submits with, and the one a row falls back to."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from talking_heads.row.payloads import Submission
from talking_heads.row.states import RowRecord

if TYPE_CHECKING:  # the hook's import (HttpHook, aiohttp) is paid where a call is made, not at DAG parse
    from dashscope_provider.hooks.dashscope import DashScopeHook


@dataclass(frozen=True)
class RunConnections:
    """A hook per connection id (``hook_for``) and the run's default connection.

    Only the key that created a task can query it, so a row's task is always followed with the
    connection recorded with it (:meth:`submission`).
    """

    hook_for: Callable[[str], DashScopeHook]
    default_conn_id: str

    def hook(self, conn_id: str | None = None) -> DashScopeHook:
        return self.hook_for(conn_id or self.default_conn_id)

    def submission(self, record: RowRecord | None) -> Submission | None:
        """The row's task to follow, with the key that made it; None when the row has no known task."""
        if record is None or not record.has_task or record.task_id is None:
            return None
        return Submission(record.row_id, record.task_id, record.conn_id or self.default_conn_id)
