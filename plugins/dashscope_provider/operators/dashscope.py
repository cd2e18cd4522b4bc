"""Operators for DashScope video synthesis: submit a task.

The result video is stored by
:class:`~dashscope_provider.transfers.dashscope_to_object_storage.DashScopeVideoToObjectStorageOperator`
(importable from here under its old name, ``DashScopeVideoDownloadOperator``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator, Context

from dashscope_provider.hooks.dashscope import DashScopeHook
from dashscope_provider.transfers.dashscope_to_object_storage import DashScopeVideoToObjectStorageOperator

#: The old name of the transfer operator, kept importable from here.
DashScopeVideoDownloadOperator = DashScopeVideoToObjectStorageOperator


class DashScopeVideoSynthesisOperator(BaseOperator):
    """Submit one DashScope video-synthesis task (``emo-v1`` or ``emoji-v1``); return its task id (XCom).

    It only submits: wait with :class:`~dashscope_provider.sensors.dashscope.DashScopeTaskSensor`, then
    store the result (its URL lives 24 h) with
    :class:`~dashscope_provider.transfers.dashscope_to_object_storage.DashScopeVideoToObjectStorageOperator`.

    Submitting is paid and not idempotent. The hook retries only failures that prove no task was
    created; when the answer is lost after the request was sent it raises
    :class:`~dashscope_provider.exceptions.DashScopeSubmissionUncertain`, an ``AirflowFailException``, so
    Airflow's retries do not submit (and bill) a second time either.

    :param model: ``emo-v1`` or ``emoji-v1`` (templated).
    :param input: the request's ``input`` (templated): ``image_url``, ``face_bbox``, ``ext_bbox``, and
        ``audio_url`` (emo-v1) or ``driven_id`` (emoji-v1).
    :param parameters: the request's ``parameters`` (templated), e.g. ``{"style_level": "active"}``.
    :param dashscope_conn_id: the DashScope connection (templated).
    """

    template_fields: Sequence[str] = ("model", "input", "parameters", "dashscope_conn_id")
    ui_color = "#ff6a00"

    def __init__(
        self,
        *,
        model: str,
        input: dict[str, Any],
        parameters: dict[str, Any] | None = None,
        dashscope_conn_id: str = DashScopeHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.input = input
        self.parameters = parameters
        self.dashscope_conn_id = dashscope_conn_id

    @cached_property
    def hook(self) -> DashScopeHook:
        """The DashScope hook of ``dashscope_conn_id`` (built on first use, after templates are rendered)."""
        return DashScopeHook(dashscope_conn_id=self.dashscope_conn_id)

    def execute(self, context: Context) -> str:
        submitted = self.hook.submit_task(self.model, self.input, self.parameters)
        self.log.info("Submitted DashScope %s task %s", self.model, submitted.task_id)
        return submitted.task_id


__all__ = ["DashScopeVideoDownloadOperator", "DashScopeVideoSynthesisOperator", "DashScopeVideoToObjectStorageOperator"]
