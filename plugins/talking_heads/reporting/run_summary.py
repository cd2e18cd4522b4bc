"""What a finished ``talking_heads`` run tells a person: one line, as the run's note and (optionally) by mail.

**The note.** Airflow 3 gives a task no way to change its own run's note: tasks have no database access,
and the Execution API (the task SDK's) only reads ``dag_run.note`` (it sets a note only on a run it
*creates*, through ``TriggerDagRun``). The supported way is the public REST API the UI itself uses,
``PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}?update_mask=note``. Where it is, and who may call it:

* the connection :data:`AIRFLOW_API_CONN_ID` (``airflow_api``; any type): ``host`` = the api-server's
  base URL; ``login``/``password`` are exchanged for a token at ``POST {host}/auth/token`` (the simple
  auth manager's and FAB's token endpoint); or ``extra`` ``{"token": "..."}``; no login and no token:
  no ``Authorization`` header (a deployment whose API lets anyone in, e.g. ``simple_auth_manager_all_admins``);
* without that connection, ``[api] base_url`` with no credentials.

Neither configured (``dag.test()``, ``airflow dags test``): no note, said in the log; the summary is still
the outcome step's return value (XCom) and its log line. A failure to set the note never fails the run.

**The mail.** With the param ``notify_email`` set, the summary is sent through Airflow's notifier
interface: the SMTP provider's ``SmtpNotifier``, on the connection ``[email] email_conn_id``
(``smtp_default``).
"""

from __future__ import annotations

import html
import logging
import os
from typing import Any
from urllib.parse import quote

import requests
from airflow.configuration import conf
from airflow.sdk import BaseHook, Context
from dashscope_provider.compat import AirflowNotFoundException

log = logging.getLogger(__name__)

#: The connection naming the Airflow REST API (and credentials) the outcome step sets the note through.
AIRFLOW_API_CONN_ID = os.environ.get("TALKING_HEADS_AIRFLOW_API_CONN_ID", "airflow_api")


def _number(value: float, decimals: int) -> str:
    """``value`` with at most ``decimals`` decimals and no trailing zeros (5.3, not 5.3000)."""
    text = f"{value:,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def summary_line(summary: dict[str, Any]) -> str:
    """The run in one line: rows per status, seconds billed, cost, where the report is."""
    unknown = int(summary.get("cost_unknown_rows") or 0)
    cost = f"USD {summary.get('cost_usd') or 0:,.4f}"
    if unknown:
        cost += f" (+{unknown} row{'s' if unknown != 1 else ''} with no known price)"
    throttled = int(summary.get("throttled") or 0)
    waited = f" · {throttled} throttled (429) answers waited out" if throttled else ""
    return (
        f"{summary.get('succeeded', 0)} succeeded, {summary.get('failed', 0)} failed, "
        f"{summary.get('skipped', 0)} skipped of {summary.get('rows', 0)} rows · "
        f"{_number(float(summary.get('seconds') or 0), 3)} s billed · {cost}{waited} · report: {summary.get('report')}"
    )


def _api_target(conn_id: str) -> tuple[str, dict[str, str]] | None:
    """The REST API's base URL and the headers to call it with, or None when none is configured."""
    try:
        connection = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        base = conf.get("api", "base_url", fallback=None)
        return (base.rstrip("/"), {}) if base else None
    host = (connection.host or "").rstrip("/")
    if "://" not in host:
        host = f"{connection.schema or 'http'}://{host}" + (f":{connection.port}" if connection.port else "")
    extra = connection.extra_dejson if isinstance(connection.extra_dejson, dict) else {}
    token = extra.get("token")
    if not token and connection.login:
        response = requests.post(
            f"{host}/auth/token", json={"username": connection.login, "password": connection.password}, timeout=30
        )
        response.raise_for_status()
        token = response.json()["access_token"]
    return host, ({"Authorization": f"Bearer {token}"} if token else {})


def set_run_note(dag_id: str, run_id: str, note: str, conn_id: str = AIRFLOW_API_CONN_ID) -> bool:
    """Set the run's note through the REST API; False (logged, never raised) when it could not."""
    try:
        target = _api_target(conn_id)
        if target is None:
            log.info("No Airflow REST API configured (connection %r or [api] base_url): run note not set", conn_id)
            return False
        base, headers = target
        url = f"{base}/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}"
        response = requests.patch(url, params={"update_mask": "note"}, json={"note": note}, headers=headers, timeout=30)
        if not response.ok:
            log.warning("Run note not set: %s answered %s %s", url, response.status_code, response.text[:200])
            return False
    except Exception as error:  # the note is a courtesy: the outcomes are written
        log.warning("Run note not set: %s: %s", type(error).__name__, error)
        return False
    log.info("Run note set: %s", note)
    return True


def notify(context: Context, summary: dict[str, Any], to: str) -> bool:
    """Mail the summary to ``to`` (comma-separated) through ``SmtpNotifier``; False (logged) if it failed."""
    addresses = [a.strip() for a in to.replace(";", ",").split(",") if a.strip()]
    if not addresses:
        return False
    try:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier
    except ImportError:
        log.warning("notify_email is set but apache-airflow-providers-smtp is not installed: no mail sent")
        return False
    dag_id, run_id = context["dag"].dag_id, context["run_id"]
    line = summary_line(summary)
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in summary.items())
    notifier = SmtpNotifier(
        to=addresses,
        from_email=conf.get("email", "from_email", fallback=None) or None,
        subject=f"{dag_id} {run_id}: {summary.get('succeeded', 0)} succeeded, {summary.get('failed', 0)} failed",
        html_content=f"<p>{html.escape(line)}</p><table>{rows}</table>",
    )
    try:
        notifier.notify(context)
    except Exception as error:  # a mail server down must not fail a run whose outcomes are written
        log.warning("Summary mail to %s not sent: %s: %s", addresses, type(error).__name__, error)
        return False
    log.info("Summary mailed to %s", ", ".join(addresses))
    return True
