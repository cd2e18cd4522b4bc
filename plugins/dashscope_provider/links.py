"""An operator extra link from a task to the DashScope task it made or waited on.

The operator records which task (``task_id``) and which connection (whose base URL: the real service or an
emulator) under the XCom key :data:`XCOM_KEY` with :meth:`DashScopeTaskLink.persist`; the link is built
from that record and the connection's base URL, never from its key.

* the real service (``*.aliyuncs.com``): the Model Studio console of the endpoint's region. The console
  has no documented page per task, so the task id rides in the URL's fragment for a person to search;
* any other base URL (an emulator, a proxy): the task query, ``{base_url}/api/v1/tasks/{task_id}``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from airflow.sdk import BaseHook, BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom  # the configured XCom backend, as providers use it

from dashscope_provider.connection import base_url_from_connection

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator, Context
    from airflow.sdk.types import TaskInstanceKey

#: The XCom key of ``{"task_id": ..., "conn_id": ...}``: the DashScope task a step is about.
XCOM_KEY = "dashscope_task"

#: The consoles of the public endpoints (by host); the international endpoint has its own.
CONSOLES = {
    "dashscope.aliyuncs.com": "https://bailian.console.aliyun.com/",
    "dashscope-intl.aliyuncs.com": "https://modelstudio.console.alibabacloud.com/",
}


def task_link_url(base_url: str, task_id: str) -> str:
    """Where a person looks at a task: the console for the real service, else the task query URL."""
    host = (urlsplit(base_url).hostname or "").lower()
    tid = quote(task_id, safe="")
    if host in CONSOLES:
        return f"{CONSOLES[host]}#task_id={tid}"
    if host.endswith(".aliyuncs.com"):  # a workspace or regional endpoint of the real service
        intl = "intl" in host or host.startswith("ap-") or ".ap-" in host
        return f"{CONSOLES['dashscope-intl.aliyuncs.com' if intl else 'dashscope.aliyuncs.com']}#task_id={tid}"
    return f"{base_url.rstrip('/')}/api/v1/tasks/{tid}"


class DashScopeTaskLink(BaseOperatorLink):
    """The "DashScope task" link: the task the step recorded under :data:`XCOM_KEY` (empty until it has one)."""

    name = "DashScope task"

    @staticmethod
    def persist(context: Context, task_id: str, conn_id: str) -> None:
        """Record the step's DashScope task for the link (ids only: no URL, no key)."""
        if (ti := context.get("ti")) is not None and task_id:  # an operator run bare (tests) has no ti
            ti.xcom_push(key=XCOM_KEY, value={"task_id": task_id, "conn_id": conn_id})

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        recorded: Any = XCom.get_value(ti_key=ti_key, key=XCOM_KEY)
        if not isinstance(recorded, dict) or not recorded.get("task_id"):
            return ""
        connection = BaseHook.get_connection(recorded["conn_id"])
        return task_link_url(base_url_from_connection(connection), str(recorded["task_id"]))
