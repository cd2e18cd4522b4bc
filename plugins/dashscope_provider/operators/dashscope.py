"""Operators for DashScope video synthesis: submit a task; detect the face boxes a task needs.

The result video is stored by
:class:`~dashscope_provider.transfers.dashscope_to_object_storage.DashScopeVideoToObjectStorageOperator`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator, Context

from dashscope_provider.exceptions import DashScopeDetectionFailed
from dashscope_provider.hooks.dashscope import DashScopeHook


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


class DashScopeFaceDetectOperator(BaseOperator):
    """Detect the face and its dynamic area in one image; return the boxes as a dict (XCom).

    The returned dict is :meth:`~dashscope_provider.models.FaceDetection.to_dict`: ``passed``,
    ``face_bbox`` and ``ext_bbox`` (``[x1, y1, x2, y2]``; they go to the video task's ``input`` as they
    are), ``model``, ``ratio``, ``request_id``, ``code``/``message`` when it did not pass, and
    ``image_count`` (billed images). Usable on its own, or ahead of :class:`DashScopeVideoSynthesisOperator`,
    whose ``input`` takes the two boxes as they are (e.g. ``detect.output["face_bbox"]``).

    Every answered detection is billed one image, passed or not. An image that does not pass raises
    :class:`~dashscope_provider.exceptions.DashScopeDetectionFailed` (an ``AirflowFailException``: a retry
    would get, and pay for, the same verdict) unless ``fail_on_no_pass`` is False. Calls are paced per
    Alibaba Cloud account (the connection's ``account`` extra), see
    :meth:`~dashscope_provider.hooks.dashscope.DashScopeHook.detect_face`.

    :param model: ``emo-detect-v1`` or ``emoji-detect-v1`` (templated).
    :param image_url: the image's http(s) URL (templated).
    :param ratio: ``1:1`` (default) or ``3:4`` (emo-detect-v1 only; half body) (templated).
    :param dashscope_conn_id: the DashScope connection (templated).
    :param fail_on_no_pass: raise when the image does not pass, instead of returning the dict.
    """

    template_fields: Sequence[str] = ("model", "image_url", "ratio", "dashscope_conn_id")
    ui_color = "#ff6a00"

    def __init__(
        self,
        *,
        model: str,
        image_url: str,
        ratio: str | None = None,
        dashscope_conn_id: str = DashScopeHook.default_conn_name,
        fail_on_no_pass: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.image_url = image_url
        self.ratio = ratio
        self.dashscope_conn_id = dashscope_conn_id
        self.fail_on_no_pass = fail_on_no_pass

    @cached_property
    def hook(self) -> DashScopeHook:
        """The DashScope hook of ``dashscope_conn_id`` (built on first use, after templates are rendered)."""
        return DashScopeHook(dashscope_conn_id=self.dashscope_conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        detection = self.hook.detect_face(self.model, self.image_url, self.ratio or None)
        if not detection.passed and self.fail_on_no_pass:
            raise DashScopeDetectionFailed(detection.model, detection.code, detection.message, detection.request_id)
        return detection.to_dict()


__all__ = ["DashScopeFaceDetectOperator", "DashScopeVideoSynthesisOperator"]
