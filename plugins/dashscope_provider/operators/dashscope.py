"""Operators for DashScope video synthesis: submit a task, and store its result video."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context, ObjectStoragePath

from dashscope_provider.hooks.dashscope import DEFAULT_CHUNK_SIZE, DashScopeHook


class DashScopeVideoSynthesisOperator(BaseOperator):
    """Submit one DashScope video-synthesis task (``emo-v1`` or ``emoji-v1``); return its task id (XCom).

    It only submits: wait with :class:`~dashscope_provider.sensors.dashscope.DashScopeTaskSensor`, then
    store the result with :class:`DashScopeVideoDownloadOperator` (the video URL lives 24 h).

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

    def execute(self, context: Context) -> str:
        hook = DashScopeHook(dashscope_conn_id=self.dashscope_conn_id)
        submitted = hook.submit_task(self.model, self.input, self.parameters)
        self.log.info("Submitted DashScope %s task %s", self.model, submitted.task_id)
        return submitted.task_id


class DashScopeVideoDownloadOperator(BaseOperator):
    """Copy a result video from its pre-signed URL to any storage; return ``{"uri", "size_bytes", "sha256"}``.

    Streams (never holds the video in memory), checks the size against ``Content-Length``, and never
    leaves a partial file under ``destination`` (see :meth:`DashScopeHook.download_video`). Needs no
    DashScope connection: the URL is pre-signed. An expired URL (403/404) raises
    :class:`~dashscope_provider.exceptions.DashScopeResultExpired`.

    :param video_url: the task's ``video_url`` (templated).
    :param destination: where to write the video (templated): a local path or any fsspec URL
        (``file://``, ``s3://``, ``gs://``, ``oss://``...).
    :param conn_id: the Airflow connection of the destination store (templated), passed to
        :class:`~airflow.sdk.ObjectStoragePath`; None for local paths or ambient credentials.
    :param chunk_size: bytes per read while streaming.
    """

    template_fields: Sequence[str] = ("video_url", "destination", "conn_id")
    ui_color = "#ff6a00"

    def __init__(
        self,
        *,
        video_url: str,
        destination: str,
        conn_id: str | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.video_url = video_url
        self.destination = destination
        self.conn_id = conn_id
        self.chunk_size = chunk_size

    def execute(self, context: Context) -> dict[str, Any]:
        destination = ObjectStoragePath(str(self.destination), conn_id=self.conn_id or None)
        # The hook's DashScope connection is never read for a download, so the default id is harmless.
        stored = DashScopeHook().download_video(self.video_url, destination, chunk_size=self.chunk_size)
        return stored.to_dict()
