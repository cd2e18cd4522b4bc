"""Sensor that waits for a DashScope task to finish."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import Any

from airflow.providers.common.compat.sdk import conf
from airflow.sdk import BaseSensorOperator, Context, PokeReturnValue

from dashscope_provider.exceptions import DashScopeTaskFailed
from dashscope_provider.hooks.dashscope import DashScopeHook
from dashscope_provider.models import DashScopeTask, TaskStatus
from dashscope_provider.triggers.dashscope import DashScopeTaskTrigger, task_from_event


class DashScopeTaskSensor(BaseSensorOperator):
    """Wait until a DashScope task ends; return its final state (``DashScopeTask.to_dict()``) via XCom.

    With ``deferrable=True`` (the default when ``[operators] default_deferrable`` is set, as for Airflow's
    own deferrable operators), after one check the wait moves to the triggerer
    (:class:`~dashscope_provider.triggers.dashscope.DashScopeTaskTrigger`) and holds no worker slot.
    With ``deferrable=False`` it pokes from the worker like any sensor (``mode="poke"`` or
    ``"reschedule"``).

    A task that ends ``FAILED``, ``CANCELED`` or ``UNKNOWN`` raises
    :class:`~dashscope_provider.exceptions.DashScopeTaskFailed` when ``fail_on_task_failure``. That is an
    ``AirflowFailException``: the Airflow task fails without using its retries, because asking again
    about the same DashScope task gives the same answer. With ``fail_on_task_failure=False`` the sensor
    returns the task's dict whatever the outcome, and the caller decides.

    :param dashscope_task_id: the task to wait for (templated).
    :param dashscope_conn_id: the DashScope connection (templated).
    :param poll_interval: seconds between status queries, 15 by default as the reference suggests
        (templated; a rendered string such as ``"15"`` is accepted). It sets ``poke_interval``.
    :param deferrable: wait in the triggerer instead of the worker (default: the ``[operators]
        default_deferrable`` setting, False when unset).
    :param fail_on_task_failure: raise ``DashScopeTaskFailed`` when the task ends without a video.
    """

    template_fields: Sequence[str] = ("dashscope_task_id", "dashscope_conn_id", "poll_interval")
    ui_color = "#ff6a00"

    def __init__(
        self,
        *,
        dashscope_task_id: str,
        dashscope_conn_id: str = DashScopeHook.default_conn_name,
        poll_interval: float | str = 15.0,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        fail_on_task_failure: bool = True,
        **kwargs: Any,
    ) -> None:
        # A templated poll_interval is only a number after rendering; execute() sets poke_interval then.
        if isinstance(poll_interval, (int, float)) and not isinstance(poll_interval, bool):
            kwargs.setdefault("poke_interval", poll_interval)
        super().__init__(**kwargs)
        self.dashscope_task_id = dashscope_task_id
        self.dashscope_conn_id = dashscope_conn_id
        self.poll_interval = poll_interval
        self.deferrable = deferrable
        self.fail_on_task_failure = fail_on_task_failure

    @cached_property
    def hook(self) -> DashScopeHook:
        """The DashScope hook of ``dashscope_conn_id`` (built on first use, after templates are rendered)."""
        return DashScopeHook(dashscope_conn_id=self.dashscope_conn_id)

    def _apply_poll_interval(self) -> None:
        interval = float(self.poll_interval)
        if interval < 0:
            raise ValueError(f"poll_interval must be >= 0, got {self.poll_interval!r}")
        self.poke_interval = interval

    def poke(self, context: Context) -> bool | PokeReturnValue:
        """One status query; done when the task is terminal (raises on failure, see the class doc)."""
        task = self.hook.get_task(self.dashscope_task_id)
        if not task.is_terminal:
            self.log.info("DashScope task %s is %s", task.task_id, task.status)
            return False
        return PokeReturnValue(is_done=True, xcom_value=self._outcome(task))

    def execute(self, context: Context) -> Any:
        """Check once; if the task is still going, defer to the trigger (or poke, when not deferrable)."""
        self._apply_poll_interval()
        if not self.deferrable:
            return super().execute(context)
        task = self.hook.get_task(self.dashscope_task_id)
        # UNKNOWN is confirmed by the trigger over several polls before it is believed.
        if task.is_terminal and task.status != TaskStatus.UNKNOWN:
            return self._outcome(task)
        self.log.info(
            "DashScope task %s is %s; deferring (poll every %g s)", task.task_id, task.status, self.poke_interval
        )
        self.defer(
            trigger=DashScopeTaskTrigger(
                dashscope_task_id=self.dashscope_task_id,
                dashscope_conn_id=self.dashscope_conn_id,
                poll_interval=self.poke_interval,
            ),
            method_name="execute_complete",
            # The sensor's timeout bounds the deferral; Airflow turns its expiry into AirflowSensorTimeout.
            timeout=timedelta(seconds=self.timeout),
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after the trigger fired: return the task dict, or raise (see the class doc)."""
        return self._outcome(task_from_event(event, self.dashscope_task_id))

    def _outcome(self, task: DashScopeTask) -> dict[str, Any]:
        if task.succeeded:
            self.log.info(
                "DashScope task %s succeeded (%s s, ratio %s)", task.task_id, task.video_duration, task.video_ratio
            )
            return task.to_dict()
        if self.fail_on_task_failure:
            raise DashScopeTaskFailed(task.task_id, task.status, task.code, task.message)
        self.log.warning(
            "DashScope task %s ended %s: %s %s", task.task_id, task.status, task.code or "", task.message or ""
        )
        return task.to_dict()
