"""Trigger that waits, in the triggerer, for a DashScope task to finish."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from dashscope_provider.compat import AirflowNotFoundException, AirflowSensorTimeout
from dashscope_provider.exceptions import DashScopeAPIError, DashScopeConfigError, DashScopeError
from dashscope_provider.models import DashScopeTask, TaskStatus
from dashscope_provider.triggers.task_watcher import (
    AUTH_FAILURES_BEFORE_ERROR,
    MAX_ERROR_BACKOFF,
    WatcherFailed,
    watcher_for,
)

if TYPE_CHECKING:
    from dashscope_provider.hooks.dashscope_async import DashScopeAsyncHook

#: The connection id the hooks default to (``DashScopeAsyncHook.default_conn_name``).
DEFAULT_CONN_ID = "dashscope_default"


class DashScopeTaskTrigger(BaseTrigger):
    """Poll a DashScope task until it ends; fire one event with its final state.

    The event is ``{"status", "task", "message"}``: ``status`` is ``success`` (the task SUCCEEDED),
    ``failed`` (FAILED, CANCELED or UNKNOWN), ``timeout`` (still running after ``timeout`` seconds) or
    ``error`` (the API key is refused, or the connection does not exist); ``task`` is
    :meth:`DashScopeTask.to_dict` of the last state seen (None if it was never read).

    With ``watch_account`` (the default) the trigger does not poll its task itself: it registers with the
    watcher of its account (:mod:`~dashscope_provider.triggers.task_watcher`), which lists the account's
    in-flight tasks for every wait of the account in this triggerer and reads a task once, when it has
    ended. A wait then costs the account about three queries, not one per ``poll_interval`` for as long as
    it pends, and waits of one account no longer add up against its 20 queries per second. Without it
    (or should the watcher fail) the trigger polls its task every ``poll_interval``.

    Transient failures (throttling, 5xx, network) only delay the next poll, with growing back-off: the
    task runs on the service whatever happens here, so the trigger just keeps waiting. Calls of all
    triggers sharing an account in one triggerer go through one rate limiter (see :class:`DashScopeAsyncHook`).

    :param dashscope_task_id: the task to wait for.
    :param dashscope_conn_id: the DashScope connection.
    :param poll_interval: seconds between polls (the reference suggests 15).
    :param timeout: seconds after which to give up waiting (None: wait until the task ends).
    :param unknown_confirmations: consecutive ``UNKNOWN`` answers needed before the task is taken to be
        unknown (expired) rather than not yet visible right after its submission.
    :param watch_account: wait through the account's watcher (default) rather than polling the task alone;
        ``poll_interval`` is then the shortest pause between the watcher's rounds.
    """

    def __init__(
        self,
        dashscope_task_id: str,
        dashscope_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 15.0,
        timeout: float | None = None,
        unknown_confirmations: int = 3,
        watch_account: bool = True,
    ) -> None:
        super().__init__()
        self.dashscope_task_id = dashscope_task_id
        self.dashscope_conn_id = dashscope_conn_id
        self.poll_interval = float(poll_interval)
        self.timeout = None if timeout is None else float(timeout)
        # UNKNOWN ends a wait for good (and a rerun may pay again), so a lagging task store right after
        # submission must not be taken for an expired task: believe it only when it repeats.
        self.unknown_confirmations = max(1, int(unknown_confirmations))
        self.watch_account = bool(watch_account)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The class path and the (credential-free) arguments that rebuild this trigger."""
        kwargs: dict[str, Any] = {
            "dashscope_task_id": self.dashscope_task_id,
            "dashscope_conn_id": self.dashscope_conn_id,
            "poll_interval": self.poll_interval,
            "unknown_confirmations": self.unknown_confirmations,
            "timeout": self.timeout,
        }
        if not self.watch_account:  # only when off: triggers stored before the watcher rebuild as they were
            kwargs["watch_account"] = False
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    def _hook(self) -> DashScopeAsyncHook:
        # Imported here: the operators that defer import this module in every task process (at DAG parse),
        # and the async hook pulls in aiohttp, which only the triggerer needs.
        from dashscope_provider.hooks.dashscope_async import DashScopeAsyncHook

        return DashScopeAsyncHook(dashscope_conn_id=self.dashscope_conn_id)

    def _event(self, status: str, task: DashScopeTask | None, message: str) -> TriggerEvent:
        return TriggerEvent({"status": status, "task": task.to_dict() if task else None, "message": message})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Wait until the task is terminal (or the timeout passes); yield exactly one event."""
        hook = self._hook()
        loop = asyncio.get_running_loop()
        deadline = None if self.timeout is None else loop.time() + self.timeout
        event = await self._wait_watched(hook, deadline) if self.watch_account else None
        if event is None:  # not watched, or the account's watcher failed: poll the task on its own
            event = await self._poll(hook, deadline)
        yield event

    async def _wait_watched(self, hook: DashScopeAsyncHook, deadline: float | None) -> TriggerEvent | None:
        """Wait through the account's watcher (:mod:`~dashscope_provider.triggers.task_watcher`); None when
        the watcher failed and this trigger should poll on its own."""
        try:
            key = await hook.account_key()
        except (DashScopeConfigError, AirflowNotFoundException) as exc:  # no key; the connection does not exist
            return self._event("error", None, f"{type(exc).__name__}: {exc}")
        watcher = watcher_for(key)
        loop = asyncio.get_running_loop()
        async with watcher.watch(self.dashscope_task_id, hook, self.poll_interval, self.unknown_confirmations) as watch:
            try:
                left = None if deadline is None else max(0.0, deadline - loop.time())
                outcome = await asyncio.wait_for(asyncio.shield(watch.outcome), left)
            except TimeoutError:
                return self._timeout_event(watch.last_seen)
            except WatcherFailed as exc:
                self.log.warning("Waiting for DashScope task %s: %s; polling it alone", self.dashscope_task_id, exc)
                return None
        if outcome.error is not None or outcome.task is None:
            return self._event("error", outcome.task, outcome.error or "no task")
        return self._terminal_event(outcome.task)

    async def _poll(self, hook: DashScopeAsyncHook, deadline: float | None) -> TriggerEvent:
        """Poll this task alone every ``poll_interval`` until it is terminal (the trigger without a watcher)."""
        loop = asyncio.get_running_loop()
        task: DashScopeTask | None = None
        errors = auth_failures = unknown_seen = 0
        while True:
            try:
                task = await hook.get_task(self.dashscope_task_id)
                errors = auth_failures = 0
            except DashScopeAPIError as exc:
                errors += 1
                auth_failures += exc.status_code == 401
                if auth_failures >= AUTH_FAILURES_BEFORE_ERROR:
                    return self._event("error", task, str(exc))
                self.log.warning("Polling DashScope task %s failed (%s); will try again", self.dashscope_task_id, exc)
            except DashScopeConfigError as exc:
                return self._event("error", task, str(exc))
            except DashScopeError as exc:
                # Transport failures that outlasted the hook's own retries.
                errors += 1
                self.log.warning("Polling DashScope task %s failed (%s); will try again", self.dashscope_task_id, exc)
            except AirflowNotFoundException as exc:  # the connection does not exist
                return self._event("error", task, f"{type(exc).__name__}: {exc}")
            else:
                unknown_seen = unknown_seen + 1 if task.status == TaskStatus.UNKNOWN else 0
                if task.is_terminal and (
                    task.status != TaskStatus.UNKNOWN or unknown_seen >= self.unknown_confirmations
                ):
                    return self._terminal_event(task)
                self.log.info("DashScope task %s is %s", task.task_id, task.status)
            pause = self.poll_interval
            if errors:
                base = self.poll_interval or 1.0  # never spin on errors, even with poll_interval=0
                pause = min(base * 2 ** (errors - 1), max(base, MAX_ERROR_BACKOFF))
            if deadline is not None:
                if deadline - loop.time() <= 0:
                    return self._timeout_event(task)
                pause = min(pause, deadline - loop.time())
            await asyncio.sleep(pause)

    def _timeout_event(self, task: DashScopeTask | None) -> TriggerEvent:
        status = task.status if task else "not read yet"
        return self._event(
            "timeout", task, f"DashScope task {self.dashscope_task_id} still {status} after {self.timeout:g} s"
        )

    async def on_kill(self) -> None:
        """The user killed the waiting task (mark failed, clear): cancel it if it is still queued.

        A ``PENDING`` task has cost nothing yet; one already running can't be canceled and is left to
        finish (and be billed), which the service decides, not this trigger.
        """
        await self._hook().cancel_task(self.dashscope_task_id)

    def _terminal_event(self, task: DashScopeTask) -> TriggerEvent:
        if task.succeeded:
            return self._event("success", task, f"DashScope task {task.task_id} succeeded")
        detail = ": ".join(part for part in (task.code, task.message) if part)
        message = f"DashScope task {task.task_id} ended {task.status}" + (f": {detail}" if detail else "")
        return self._event("failed", task, message)


def task_from_event(event: dict[str, Any], task_id: str) -> DashScopeTask:
    """The task a :class:`DashScopeTaskTrigger` event carries, for the operator that resumes from it.

    :raises AirflowSensorTimeout: the event says the wait timed out.
    :raises DashScopeError: the event says the wait failed (or carries no task).
    """
    message = event.get("message") or ""
    if event.get("status") == "timeout":
        raise AirflowSensorTimeout(message)
    if event.get("status") == "error" or not event.get("task"):
        raise DashScopeError(f"Waiting for DashScope task {task_id} failed: {message}")
    return DashScopeTask.from_dict(event["task"])
