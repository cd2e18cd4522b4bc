"""Request validation: headers, bodies, fields and media checks, producing the documented errors.

Two stages, as on the real service:

* at submission (:func:`validate_submission` and the header checks): shape, model, fields, URL schemes.
  A failure is an :class:`~.contract.ApiError` (a 4xx answer; no task is created). The face-detect
  body is checked the same way (:func:`validate_detection`);
* when a task runs (:func:`check_task_media`): the image and audio are downloaded and checked (format
  by magic bytes, 400..7000 px sides, boxes inside the image, ``ext_bbox`` ratio; audio WAV/MP3,
  <= 15 MB, <= 60 s). A failure is a :class:`MediaFailure` (the task ends FAILED with its code).

The vision-model checks (``InvalidFile.Content``, ``.FacePose``...) can't be emulated on arbitrary
pictures, so they are triggered on request: ``?emulator_error=<token>`` on the image URL
(:data:`~.contract.EMULATOR_ERRORS`).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

from dashscope_emulator import media
from dashscope_emulator.contract import (
    DETECT_MODELS,
    EMOJI_TEMPLATES,
    EMULATOR_ERRORS,
    FETCH_TIMEOUT,
    MAX_AUDIO_BYTES,
    MAX_AUDIO_SECONDS,
    MAX_IMAGE_BYTES,
    MAX_SIDE,
    MIN_SIDE,
    MODELS,
    MSG_ASYNC,
    MSG_AUDIO_LONG,
    MSG_AUDIO_SIZE,
    MSG_AUDIO_TYPE,
    MSG_DOWNLOAD,
    MSG_DRIVEN_ID,
    MSG_FORMAT,
    MSG_IMAGE_FORMAT,
    MSG_NO_KEY,
    MSG_NO_MODEL,
    MSG_RATIO,
    MSG_RESOLUTION,
    MSG_STYLE,
    MSG_SYNC,
    MSG_URL,
    STYLE_LEVELS,
    ApiError,
    emoji_template_seconds,
    ratio_of,
)


class MediaFailure(Exception):
    """A task's media failed a check: the task ends FAILED with ``code`` and ``message``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


# -- headers and body -------------------------------------------------------------------------------


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header.

    Raises the 401 "No API-key provided." when there is no key at all; returns None for another
    scheme, which the key check then refuses as an invalid key (as the real service does).
    """
    scheme, _, token = (header or "").strip().partition(" ")
    token = token.strip()
    if not header or not header.strip() or (scheme.lower() == "bearer" and not token):
        raise ApiError(401, "InvalidApiKey", MSG_NO_KEY)
    return token if scheme.lower() == "bearer" else None


def require_async(header: str | None) -> None:
    """Submissions must say ``X-DashScope-Async: enable``; HTTP calls are asynchronous only."""
    if (header or "").strip().lower() != "enable":
        raise ApiError(400, "InvalidParameter", MSG_SYNC)


def refuse_async(header: str | None) -> None:
    """A synchronous call (face-detect) must not ask for asynchronous processing."""
    if (header or "").strip().lower() == "enable":
        raise ApiError(403, "AccessDenied", MSG_ASYNC)


def parse_json_body(content_type: str | None, raw: bytes) -> Any:
    """The JSON value of an ``application/json`` body (a charset parameter is fine), else the 400."""
    if (content_type or "").split(";")[0].strip().lower() != "application/json":
        raise ApiError(400, "InvalidParameter", MSG_FORMAT)
    try:
        return json.loads(raw)
    except ValueError:
        raise ApiError(400, "InvalidParameter", MSG_FORMAT) from None


def is_http_url(value: str) -> bool:
    """An absolute http(s) URL with a host (the service fetches inputs itself: no local paths)."""
    parts = urlsplit(value.strip())
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def is_bbox(value: Any) -> bool:
    """Four integers (not floats, not booleans), as the pages' ``[x1, y1, x2, y2]``."""
    return (
        isinstance(value, list)
        and len(value) == 4
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    )


def validate_submission(payload: Any) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Check a submit body; returns ``(model, input, parameters)`` or raises the documented 400.

    Order: shape (model, input) -> model exists -> model's required fields and types -> style_level /
    driven_id -> URL schemes. Geometry (boxes inside the image, ratio) needs the image, so it is
    checked when the task runs.
    """
    if not isinstance(payload, dict):
        raise ApiError(400, "InvalidParameter", MSG_FORMAT)
    model, task_input = payload.get("model"), payload.get("input")
    parameters = payload.get("parameters")
    if not isinstance(model, str) or not model or not isinstance(task_input, dict):
        raise ApiError(400, "InvalidParameter", MSG_FORMAT)
    if parameters is not None and not isinstance(parameters, dict):
        raise ApiError(400, "InvalidParameter", MSG_FORMAT)
    parameters = parameters or {}
    if model not in MODELS:
        raise ApiError(400, "InvalidParameter", MSG_NO_MODEL)
    strings = ("image_url", "audio_url") if model == "emo-v1" else ("image_url", "driven_id")
    for name in strings:
        if not isinstance(task_input.get(name), str):
            raise ApiError(400, "InvalidParameter", MSG_FORMAT)
    for name in ("face_bbox", "ext_bbox"):
        if not is_bbox(task_input.get(name)):
            raise ApiError(400, "InvalidParameter", MSG_FORMAT)
    if model == "emo-v1":
        if parameters.get("style_level", "normal") not in STYLE_LEVELS:
            raise ApiError(400, "InvalidParameter", MSG_STYLE)
    elif task_input["driven_id"] not in EMOJI_TEMPLATES:
        raise ApiError(400, "InvalidParameter", MSG_DRIVEN_ID)
    for name in ("image_url", "audio_url") if model == "emo-v1" else ("image_url",):
        if not is_http_url(task_input[name]):
            raise ApiError(400, "InvalidURL", MSG_URL)
    return model, task_input, parameters


def validate_detection(payload: Any) -> tuple[str, str, str]:
    """Check a face-detect body; returns ``(model, image_url, ratio)`` or raises the documented 400.

    Order: shape -> model exists -> ``input.image_url`` and ``parameters.ratio`` present as strings ->
    the model takes that ratio -> URL scheme. The pages call ``ratio`` required (while naming 1:1 the
    default), so the emulator refuses a body without it: a client that sends it works either way.
    """
    if not isinstance(payload, dict):
        raise ApiError(400, "InvalidParameter", MSG_FORMAT)
    model, detect_input, parameters = payload.get("model"), payload.get("input"), payload.get("parameters")
    if not isinstance(model, str) or not model or not isinstance(detect_input, dict):
        raise ApiError(400, "InvalidParameter", MSG_FORMAT)
    if model not in DETECT_MODELS:
        raise ApiError(400, "InvalidParameter", MSG_NO_MODEL)
    image_url = detect_input.get("image_url")
    ratio = parameters.get("ratio") if isinstance(parameters, dict) else None
    if not isinstance(image_url, str) or not isinstance(ratio, str):
        raise ApiError(400, "InvalidParameter", MSG_FORMAT)
    if ratio not in DETECT_MODELS[model]:
        raise ApiError(400, "InvalidParameter", MSG_RATIO.format(model=model, ratios=" or ".join(DETECT_MODELS[model])))
    if not is_http_url(image_url):
        raise ApiError(400, "InvalidURL", MSG_URL)
    return model, image_url, ratio


# -- media, when the task runs -------------------------------------------------------------------------


def check_geometry(model: str, face: list[int], ext: list[int], width: int, height: int) -> str | None:
    """Why the boxes don't fit the image or the model, or None.

    The pages don't say how the service words these; the emulator answers FAILED ``InvalidParameter``
    with a message naming the box.
    """
    for name, box in (("face_bbox", face), ("ext_bbox", ext)):
        x1, y1, x2, y2 = box
        if not (x1 < x2 and y1 < y2):
            return f"The {name} is invalid: expected [x1, y1, x2, y2] with x1 < x2 and y1 < y2, got {box}."
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            return f"The {name} {box} is outside the image ({width}x{height})."
    if not (ext[0] <= face[0] and ext[1] <= face[1] and face[2] <= ext[2] and face[3] <= ext[3]):
        return f"The face_bbox {face} is not inside the ext_bbox {ext}."
    if ratio_of(ext, model) is None:
        w, h = ext[2] - ext[0], ext[3] - ext[1]
        if model == "emoji-v1":
            return f"The size is not match: the ext_bbox of emoji-v1 must be about 1:1, got {w}x{h}."
        return f"The ext_bbox aspect ratio must be 1:1 or 3:4, got {w}x{h}."
    return None


def fetch_image(url: str, max_bytes: int) -> tuple[bytes, int, int]:
    """Download an input image and check its size and format; returns ``(bytes, width, height)``."""
    try:
        image = media.fetch(url, max_bytes, FETCH_TIMEOUT)
    except media.FetchError:
        raise MediaFailure("InvalidParameter.DataInspection", MSG_DOWNLOAD) from None
    except media.TooLarge:
        limit = max_bytes // (1024 * 1024)
        raise MediaFailure("InvalidParameter", f"The image file is larger than {limit}MB.") from None
    if media.sniff_image(image) is None:
        raise MediaFailure("InvalidURL", MSG_IMAGE_FORMAT)
    try:
        width, height = media.image_size(image)
    except media.MediaError:
        raise MediaFailure("InvalidURL", MSG_IMAGE_FORMAT) from None
    return image, width, height


def resolution_ok(width: int, height: int) -> bool:
    """Each side within 400..7000 px."""
    return min(width, height) >= MIN_SIDE and max(width, height) <= MAX_SIDE


def load_image(url: str, max_bytes: int) -> tuple[bytes, int, int]:
    """Download an input image and check format and resolution; returns ``(bytes, width, height)``."""
    image, width, height = fetch_image(url, max_bytes)
    if not resolution_ok(width, height):
        raise MediaFailure("InvalidFile.Resolution", MSG_RESOLUTION)
    return image, width, height


def requested_error(url: str, errors: dict[str, tuple[str, str]]) -> tuple[str, str] | None:
    """The failure asked for with ``?emulator_error=<token>`` on ``url`` (an unknown token is itself one)."""
    requested = parse_qs(urlsplit(url).query).get("emulator_error")
    if not requested:
        return None
    if requested[0] not in errors:
        return "InvalidParameter", f"emulator_error={requested[0]!r} is not one of {', '.join(errors)}."
    return errors[requested[0]]


def load_audio(url: str) -> tuple[bytes, str, float]:
    """Download an emo-v1 audio and check it; returns ``(bytes, kind, seconds)``."""
    try:
        audio = media.fetch(url, MAX_AUDIO_BYTES, FETCH_TIMEOUT)
    except media.FetchError:
        raise MediaFailure("InvalidParameter.DataInspection", MSG_DOWNLOAD) from None
    except media.TooLarge:
        raise MediaFailure("InvalidURL", MSG_AUDIO_SIZE) from None
    kind = media.sniff_audio(audio)
    if kind is None:
        raise MediaFailure("InvalidURL", MSG_AUDIO_TYPE)
    try:
        length = media.audio_duration(audio, kind)
    except media.MediaError:
        raise MediaFailure("InvalidURL", MSG_AUDIO_TYPE) from None
    if length > MAX_AUDIO_SECONDS:
        raise MediaFailure("InvalidURL", MSG_AUDIO_LONG)
    return audio, kind, length


def check_task_media(model: str, task_input: dict[str, Any], parameters: dict[str, Any]) -> media.RenderJob:
    """Download and check a task's media the way the service does; returns what to render.

    Order: image (download, size, format, resolution) -> geometry -> ``emulator_error`` -> audio
    (download, size, format, length). Raises :class:`MediaFailure` at the first problem.
    """
    image_url = task_input["image_url"]
    image, width, height = load_image(image_url, MAX_IMAGE_BYTES[model])
    face, ext = task_input["face_bbox"], task_input["ext_bbox"]
    problem = check_geometry(model, face, ext, width, height)
    if problem:
        raise MediaFailure("InvalidParameter", problem)
    failure = requested_error(image_url, EMULATOR_ERRORS)
    if failure:
        raise MediaFailure(*failure)
    ratio = ratio_of(ext, model)
    assert ratio is not None  # check_geometry saw to it
    if model == "emoji-v1":
        seconds = float(emoji_template_seconds(task_input["driven_id"]))
        return media.RenderJob(image, tuple(ext), ratio, seconds, motion=task_input["driven_id"])
    audio, kind, length = load_audio(task_input["audio_url"])
    style = parameters.get("style_level", "normal")
    return media.RenderJob(image, tuple(ext), ratio, round(length, 2), audio, kind, motion=style)
