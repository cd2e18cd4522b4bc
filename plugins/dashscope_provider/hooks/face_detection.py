"""Face detection's request and answer (``emo-detect-v1``, ``emoji-detect-v1``), for
:meth:`DashScopeHook.detect_face <dashscope_provider.hooks.dashscope.DashScopeHook.detect_face>`.

Detection is synchronous and billed per *answered* image, so it differs from a query in one way: a 200 whose
body can't be read is an error that is not retried (the image may already be billed), while a refusal
(4xx, 429, 5xx) is not billed and is retried like a query.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import requests

from dashscope_provider.exceptions import DashScopeAPIError
from dashscope_provider.models import DETECT_RATIOS, FaceDetection, api_error, parse_detection

__all__ = ["describe_detection", "detection_reader", "detection_request"]


def detection_request(model: str, image_url: str, ratio: str | None = None) -> tuple[dict[str, Any], str]:
    """The request body for ``model`` and the ratio it asks for (``None``: the model's first, ``1:1``).

    :raises ValueError: a ratio the model does not take (so nothing is sent).
    """
    allowed = DETECT_RATIOS.get(model)
    ratio = ratio or (allowed[0] if allowed else "1:1")
    if allowed is not None and ratio not in allowed:
        raise ValueError(f"{model} takes ratio {' or '.join(allowed)}, not {ratio!r}")
    return {"model": model, "input": {"image_url": image_url}, "parameters": {"ratio": ratio}}, ratio


def detection_reader(model: str, ratio: str) -> Callable[[requests.Response, str], FaceDetection]:
    """An answer handler for the hook's idempotent call: a 200 parsed into :class:`FaceDetection`, else the
    service's refusal as :class:`DashScopeAPIError` (which the hook retries when it is transient)."""

    def read(response: requests.Response, text: str) -> FaceDetection:
        if response.status_code != 200:
            raise api_error(response.status_code, text, response.headers.get("Content-Type"), "detect")
        try:
            return parse_detection(json.loads(text), model, ratio)
        except ValueError as exc:
            # Answered, so maybe billed: not retried (unlike an unreadable query answer).
            raise DashScopeAPIError(200, None, f"unreadable detection answer ({exc})", None, "detect") from None

    return read


def describe_detection(detection: FaceDetection) -> str:
    """One log phrase: passed, or why not."""
    return "passed" if detection.passed else f"not passed: {detection.code} {detection.message or ''}"
