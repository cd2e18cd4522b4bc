"""Operator extra links from ``talking_heads``' steps to what they made (buttons on a task in the UI).

* the download step -> **Stored video**: the video under ``{output_root}/videos/``;
* the outcome step -> **Outcome table** (``outcomes/{run}.csv``) and **Cost report**
  (``reports/cost_report.html``, written by the ``dashscope_cost_report`` DAG that the outcome table's
  Asset event starts);
* the wait step -> **DashScope task**: :class:`dashscope_provider.links.DashScopeTaskLink`.

Each link reads what its step returned (its XCom ``return_value``: store URIs, never a secret). Airflow 3
builds links in the worker when the task ends and keeps the URL in XCom for the UI, so an object store's
link is presigned then, valid :data:`LINK_TTL_SECONDS`; a local file's link is its ``file://`` path.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink, ObjectStoragePath
from airflow.sdk.execution_time.xcom import XCom

from talking_heads.storage import as_storage_path

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

log = logging.getLogger(__name__)

#: How long a presigned link stays valid: 7 days, the most S3 (SigV4) allows.
LINK_TTL_SECONDS = 7 * 24 * 3600


def browsable_url(uri: str, conn_id: str | None = None, ttl: int = LINK_TTL_SECONDS) -> str:
    """A URL a person can open for a stored object: presigned https for an object store, ``file://`` for
    a local path; the plain URI when the store cannot presign."""
    path: ObjectStoragePath = as_storage_path(uri, conn_id)
    if path.protocol in ("file", "local", ""):
        return f"file://{path.path}"
    try:
        return str(path.fs.sign(path.path, expiration=ttl))
    except Exception as error:
        log.warning("Cannot presign %s (%s); linking the plain URI", uri, type(error).__name__)
        return uri


def _returned(ti_key: TaskInstanceKey, field: str) -> str | None:
    value: Any = XCom.get_value(ti_key=ti_key, key="return_value")
    return value.get(field) if isinstance(value, dict) and value.get(field) else None


class _ReturnedUriLink(BaseOperatorLink):
    """A link to the store URI the step returned under :attr:`field` (empty when it returned none)."""

    field: str = ""

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        uri = _returned(ti_key, self.field)
        return browsable_url(uri, getattr(operator, "storage_conn_id", None) or None) if uri else ""


class StoredVideoLink(_ReturnedUriLink):
    """The download step's video (its ``uri``)."""

    name = "Stored video"
    field = "uri"


class OutcomeTableLink(_ReturnedUriLink):
    """The outcome step's table (``outcomes/{run}.csv``)."""

    name = "Outcome table"
    field = "outcomes"


class CostReportLink(_ReturnedUriLink):
    """The cost report page of the run's ``output_root``."""

    name = "Cost report"
    field = "report"
