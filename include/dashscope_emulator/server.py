"""A local emulator of the DashScope video-synthesis API (``emo-v1``, ``emoji-v1``), over real HTTP.

It follows the reference pages in ``shared/reference`` (status names, JSON shapes, error codes and
messages verbatim) and adds what the pages describe but a unit test can't reach on the real service:

* **Simulated time.** ``sim_now = t0 + wall_elapsed * speed + advanced`` (:class:`~.clock.SimClock`).
  Times in responses are that clock in UTC+8. :meth:`EmulatorServer.advance` jumps forward.
* **Queue.** Per API key: FIFO, exactly one task RUNNING, the rest PENDING (the reference's
  "concurrent tasks: 1, excess tasks are queued"). A RUNNING task lasts ``8 + 2.5 * video_duration``
  simulated seconds (:func:`run_seconds`), or longer if rendering takes longer in wall time; a task
  whose media fail the checks ends :data:`FAIL_SECONDS` after it started.
* **Media checks at RUNNING.** The image and audio are downloaded (10 s timeout) and checked: image
  format by magic bytes, 400..7000 px sides, boxes inside the image, ``ext_bbox`` ratio; audio WAV/MP3,
  <= 15 MB, <= 60 s. The vision-model checks (``InvalidFile.Content``, ``.FacePose``...) can't be
  emulated, so they are triggered on request: ``?emulator_error=<code>`` on the image URL
  (:data:`EMULATOR_ERRORS`).
* **Results.** A real MP4 (:mod:`.media`), served at a signed URL
  ``/results/{task_id}.mp4?Expires=..&OSSAccessKeyId=emulator&Signature=..`` that expires 24 h
  (simulated) after success with OSS's XML ``AccessDenied``/``Request has expired.``; task ids answer
  ``UNKNOWN`` 24 h after submission. The URL's host is the ``Host`` the client queried with, so it
  works behind port mappings and container names (``http://dashscope-emulator:8000``).
* **Limits.** Per key, on the wall clock: more than 5 submits or 20 queries within any 1 s window get
  429 ``Throttling.RateQuota`` (throttled requests don't count).
* **Faults** (:mod:`.faults`), **billing** (one line per SUCCEEDED task), a **request log**.

Choices the reference leaves open: cancelling an unknown task (or another key's) answers the same 400
``UnsupportedOperation`` as cancelling a non-PENDING one; cancel is not rate limited. The geometry
failures (boxes outside the image, face not inside ``ext_bbox``, wrong ratio) are FAILED
``InvalidParameter`` with a message naming the box. The 503 fault's ``ServiceUnavailable`` message and
the emulator's own 404/405 answers are not from the reference.

Admin endpoints (emulator only, no API key needed, not part of DashScope): ``GET /_emulator/health``,
``GET /_emulator/billing``, ``GET /_emulator/requests``, ``GET /_emulator/tasks``,
``POST /_emulator/advance {"seconds": N}``, ``POST /_emulator/faults {"submit_5xx": p, ...}``,
``POST /_emulator/force {"fault": "drop_submit"}``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import queue
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from dashscope_emulator import media
from dashscope_emulator.clock import SimClock, format_time
from dashscope_emulator.faults import FaultInjector

log = logging.getLogger("dashscope_emulator")

SUBMIT_PATH = "/api/v1/services/aigc/image2video/video-synthesis"
TASKS_PREFIX = "/api/v1/tasks/"
RESULTS_PREFIX = "/results/"
ADMIN_PREFIX = "/_emulator/"

#: The key accepted when none is configured (constructor, ``--api-key``, env).
DEFAULT_API_KEY = "sk-emulator"
API_KEYS_ENV = "DASHSCOPE_EMULATOR_API_KEYS"

MODELS = ("emo-v1", "emoji-v1")
STYLE_LEVELS = ("normal", "calm", "active")
#: The template ids of the emoji-v1 reference's appendix.
EMOJI_TEMPLATES = (
    "mengwa_kaixin",
    "dagong_zhuakuang",
    "mengwa_dengyan",
    "dagong_wunai",
    "mengwa_gandong",
    "dagong_weixiao",
    "mengwa_renzhen_1",
    "dagong_ganji",
    "mengwa_jidong",
    "jingdian_tiaopi",
    "mengwa_kun_1",
    "jingdian_deyi_1",
    "mengwa_jiaoxie",
    "jingdian_qidai",
    "dagong_kaixin",
    "jingdian_landuo_1",
    "dagong_yangwang",
    "jingdian_xianqi",
    "dagong_kunhuo",
    "jingdian_lei",
)

#: task_id validity and video_url validity, simulated seconds (both 24 h in the reference).
TASK_TTL = 86_400.0
URL_TTL = 86_400.0
#: A task whose media fail the checks ends this many simulated seconds after it started RUNNING.
FAIL_SECONDS = 2.0
#: Wall-clock seconds for downloading an input file.
FETCH_TIMEOUT = 10.0
MAX_AUDIO_BYTES = 15 * 1024 * 1024
MAX_AUDIO_SECONDS = 60.0
#: emoji-v1's documented image limit; emo-v1 documents none, so the emulator caps downloads at 20 MB.
MAX_IMAGE_BYTES = {"emoji-v1": 10 * 1024 * 1024, "emo-v1": 20 * 1024 * 1024}
MIN_SIDE, MAX_SIDE = 400, 7000
#: ext_bbox aspect tolerance: integer boxes from a detector rarely hit 1:1 or 3:4 exactly.
RATIO_TOLERANCE = 0.02
EMOJI_RATIO_TOLERANCE = 0.10  # the emoji page only says "about 1:1"

MSG_NO_KEY = "No API-key provided."
MSG_BAD_KEY = "Invalid API-key provided."
MSG_THROTTLED = "Requests rate limit exceeded, please try again later."
MSG_SYNC = "current user api does not support synchronous calls"
MSG_FORMAT = (
    "The request is missing required parameters or in a wrong format, please check the parameters that you send.."
)
MSG_NO_MODEL = "Model not exist."
MSG_STYLE = "The style_level is invalid."
MSG_DRIVEN_ID = (
    "The driven_id is invalid, please use one of the template ids listed in the emoji-v1 reference "
    "(e.g. mengwa_kaixin)."
)
MSG_URL = "Required URL is missing or invalid, please check the request URL."
MSG_IMAGE_FORMAT = (
    "The request URL is invalid, please check the request URL is available and the request image format is "
    "one of the following types: JPEG, JPG, PNG, BMP, and WEBP."
)
MSG_DOWNLOAD = "Unable to download the media resource during the data inspection process."
MSG_RESOLUTION = (
    "The image resolution is invalid, please make sure that the largest length of image is smaller than "
    "7000, and the smallest length of image is larger than 400."
)
MSG_AUDIO_TYPE = "File type is not supported. Allowed types are: .wav, .mp3."
MSG_AUDIO_SIZE = "File size is larger than 15MB."
MSG_AUDIO_LONG = "The input audio is longer than 60s!"
MSG_CANCEL = "Failed to cancel the task, please confirm if the task is in PENDING status."
MSG_INTERNAL = "An internal error has occured, please try again later or contact service support."
MSG_UNAVAILABLE = "The service is temporarily unavailable, please try again later."

#: ``?emulator_error=<token>`` on the image URL -> the FAILED code and message (verbatim from the reference).
EMULATOR_ERRORS: dict[str, tuple[str, str]] = {
    "InvalidFile.Content": (
        "InvalidFile.Content",
        "The input image has no human body. Please upload other image with single person.",
    ),
    "InvalidFile.Content.multi": (
        "InvalidFile.Content",
        "The input image has multi human bodies. Please upload other image with single person.",
    ),
    "InvalidFile.BodyProportion": (
        "InvalidFile.BodyProportion",
        "The proportion of the detected person in the picture is too large or too small, please upload other image.",
    ),
    "InvalidFile.Value": (
        "InvalidFile.Value",
        "The value of the image is invalid, please upload other clearer image.",
    ),
    "InvalidFile.FrontBody": (
        "InvalidFile.FrontBody",
        "The pose of the detected person is invalid, please upload other image with the front view.",
    ),
    "InvalidFile.FullFace": (
        "InvalidFile.FullFace",
        "The pose of the detected face is invalid, please upload other image with whole face.",
    ),
    "InvalidFile.FacePose": (
        "InvalidFile.FacePose",
        "The pose of the detected face is invalid, please upload other image with the expected orientation.",
    ),
    "InvalidParameter.DataInspection": ("InvalidParameter.DataInspection", MSG_DOWNLOAD),
}

_OSS_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error>\n  <Code>{code}</Code>\n  <Message>{message}</Message>\n'
    "  <RequestId>{request_id}</RequestId>\n  <HostId>dashscope-result.emulator</HostId>\n{extra}</Error>\n"
)
_GATEWAY_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1>"
    b"</center>\r\n<hr><center>emulated gateway</center>\r\n</body>\r\n</html>\r\n"
)
_RESULT_PATH = re.compile(r"^/results/([0-9a-f-]{36})\.mp4$")
_CHUNK = 64 * 1024
_MAX_BODY = 1024 * 1024


def key_fingerprint(api_key: str) -> str:
    """``sha256(key)[:12]``: identifies a key in logs and billing without revealing it."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:12]


def run_seconds(video_duration: float) -> float:
    """Simulated seconds a task stays RUNNING before it can succeed: ``8 + 2.5 * video_duration``."""
    return 8.0 + 2.5 * float(video_duration)


def emoji_template_seconds(driven_id: str) -> int:
    """The fixed, integer length (2..5 s) of an emoji-v1 template; deterministic across runs."""
    return 2 + int(hashlib.sha256(driven_id.encode()).hexdigest(), 16) % 4


def ratio_of(ext_bbox: Iterable[int], model: str) -> str | None:
    """The ``video_ratio`` of an ``ext_bbox``: ``1:1``/``3:4`` (emo-v1), ``standard`` (emoji-v1), or None."""
    x1, y1, x2, y2 = ext_bbox
    if x2 <= x1 or y2 <= y1:
        return None
    aspect = (x2 - x1) / (y2 - y1)
    if model == "emoji-v1":
        return "standard" if abs(aspect - 1.0) <= EMOJI_RATIO_TOLERANCE else None
    for name, target in (("1:1", 1.0), ("3:4", 0.75)):
        if abs(aspect - target) <= RATIO_TOLERANCE * target:
            return name
    return None


def _keys_from_env() -> list[str]:
    return [key.strip() for key in os.environ.get(API_KEYS_ENV, "").split(",") if key.strip()]


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value.strip())
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def _is_bbox(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 4
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    )


@dataclass
class Outcome:
    """What processing a RUNNING task produced: a video, or a failure code and message."""

    code: str | None = None
    message: str | None = None
    video_path: Path | None = None
    video_duration: float | int | None = None
    video_ratio: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.code is None

    def busy_seconds(self) -> float:
        return run_seconds(self.video_duration or 0) if self.succeeded else FAIL_SECONDS


@dataclass
class Task:
    """One submitted task. Times are simulated epoch seconds; ``owner`` is the key's fingerprint."""

    task_id: str
    owner: str
    model: str
    input: dict[str, Any]
    parameters: dict[str, Any]
    submit_time: float
    status: str = "PENDING"
    scheduled_time: float | None = None
    end_time: float | None = None
    outcome: Outcome | None = None
    expires: int | None = None

    def public(self) -> dict[str, Any]:
        """The task as the admin API shows it (no key, no file paths)."""
        outcome = self.outcome if self.status in ("SUCCEEDED", "FAILED") else None
        return {
            "task_id": self.task_id,
            "status": self.status,
            "model": self.model,
            "input": dict(self.input),
            "parameters": dict(self.parameters),
            "key_fingerprint": self.owner,
            "submit_time": format_time(self.submit_time),
            "scheduled_time": format_time(self.scheduled_time) if self.scheduled_time is not None else None,
            "end_time": format_time(self.end_time) if self.end_time is not None else None,
            "code": outcome.code if outcome else None,
            "message": outcome.message if outcome else None,
            "video_duration": outcome.video_duration if outcome else None,
            "video_ratio": outcome.video_ratio if outcome else None,
        }


@dataclass
class _Lane:
    """One API key's queue: FIFO of PENDING task ids and the one RUNNING task."""

    pending: deque[str] = field(default_factory=deque)
    running: str | None = None


class _ApiError(Exception):
    """A DashScope error answer: HTTP status, ``code``, ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class _TrackingServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that can close its keep-alive connections on shutdown and stays quiet.

    Without closing them, a client's pooled connection would keep talking to a stopped server's
    handler thread; and the stdlib prints a traceback for every client that hangs up mid-request.
    """

    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024  # the listen backlog: many pollers may connect at once

    def __init__(self, address: tuple[str, int], handler: Any) -> None:
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def track(self, sock: socket.socket, add: bool) -> None:
        with self._connections_lock:
            (self._connections.add if add else self._connections.discard)(sock)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("error while serving %s", client_address, exc_info=True)


def _parse_range(header: str, size: int) -> tuple[int, int] | bool | None:
    """Inclusive ``(start, end)`` of one ``bytes=`` range; None: ignore the header; False: unsatisfiable."""
    match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not match or (not match.group(1) and not match.group(2)):
        return None  # multi-range or malformed: RFC 9110 lets us answer with the whole file
    if not match.group(1):
        length = int(match.group(2))
        if length == 0:
            return False
        return max(0, size - length), size - 1
    start = int(match.group(1))
    end = int(match.group(2)) if match.group(2) else size - 1
    if start >= size or end < start:
        return False
    return start, min(end, size - 1)


def send_file(handler: BaseHTTPRequestHandler, path: Path, content_type: str, head: bool) -> int:
    """Answer with a file (200, or 206 for a ``Range``), streamed in chunks; returns the status sent."""
    size = path.stat().st_size
    wanted = _parse_range(handler.headers.get("Range", ""), size) if handler.headers.get("Range") else None
    if wanted is False:
        handler.send_response(416)
        handler.send_header("Content-Range", f"bytes */{size}")
        handler.send_header("Content-Length", "0")
        handler.end_headers()
        return 416
    start, end = wanted if isinstance(wanted, tuple) else (0, size - 1)
    status = 206 if isinstance(wanted, tuple) else 200
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(max(0, end - start + 1)))
    handler.send_header("Accept-Ranges", "bytes")
    handler.send_header("Last-Modified", handler.date_time_string(int(path.stat().st_mtime)))
    if status == 206:
        handler.send_header("Content-Range", f"bytes {start}-{end}/{size}")
    handler.end_headers()
    if head:
        return status
    with path.open("rb") as source:
        source.seek(start)
        remaining = end - start + 1
        while remaining > 0:
            chunk = source.read(min(_CHUNK, remaining))
            if not chunk:
                break
            handler.wfile.write(chunk)
            remaining -= len(chunk)
    return status


class _TrackedQuietHandler(BaseHTTPRequestHandler):
    """Registers its connection with the :class:`_TrackingServer` (so stop() can close it) and keeps
    no access log (the emulator logs one line per request itself, without client addresses)."""

    protocol_version = "HTTP/1.1"
    # Idle keep-alive connections are closed after this many seconds, so threads don't pile up.
    timeout = 120

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)  # type: ignore[attr-defined]

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # the stdlib's signature
        pass


class _EmulatorHandler(_TrackedQuietHandler):
    """Routes one HTTP/1.1 connection's requests to the :class:`EmulatorServer` that owns the socket."""

    server_version = "DashScopeEmulator/1.0"
    emulator: EmulatorServer  # set on the subclass made per server

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- plumbing ---------------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        self._record: dict[str, Any] = {
            "time": time.time(),
            "method": method,
            "path": parts.path,
            "key_fingerprint": None,
            "status": None,
            "model": None,
            "task_id": None,
            "fault": None,
        }
        self._request_id = str(uuid.uuid4())
        self._body: bytes | None = None  # the handler object lives as long as the keep-alive connection
        self._committed = False
        try:
            self._route(method, parts.path, parts.query)
        except _ApiError as exc:
            self._send_error(exc.status, exc.code, exc.message)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception:
            log.exception("emulator error on %s %s", method, parts.path)
            with contextlib.suppress(Exception):
                self._send_error(500, "InternalError", MSG_INTERNAL)
            self.close_connection = True
        finally:
            self._commit()

    def _route(self, method: str, path: str, query: str) -> None:
        emulator = self.emulator
        if path == SUBMIT_PATH:
            self._only(method, "POST")
            self._submit()
        elif path.startswith(TASKS_PREFIX):
            rest = path[len(TASKS_PREFIX) :]
            if rest.endswith("/cancel"):
                self._only(method, "POST")
                self._cancel(rest[: -len("/cancel")])
            elif rest and "/" not in rest:
                self._only(method, "GET")
                self._query(rest)
            else:
                raise _ApiError(404, "NotFound", "Not Found.")
        elif path.startswith(RESULTS_PREFIX):
            self._only(method, "GET", "HEAD")
            self._result(path, query, head=method == "HEAD")
        elif path.startswith(ADMIN_PREFIX):
            self._send_json(200, emulator._admin(method, path[len(ADMIN_PREFIX) :], self._read_json_or_empty()))
        else:
            raise _ApiError(404, "NotFound", "Not Found.")

    def _only(self, method: str, *allowed: str) -> None:
        if method not in allowed:
            self._read_body()
            raise _ApiError(405, "MethodNotAllowed", f"Method {method} is not allowed here.")

    def _read_body(self) -> bytes:
        """The request body (Content-Length or chunked); always consumed so keep-alive stays in sync."""
        if self._body is not None:
            return self._body
        body = b""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            body = b"".join(chunks)
        else:
            length = int(self.headers.get("Content-Length") or 0)
            if length > _MAX_BODY:
                self.close_connection = True
                raise _ApiError(400, "InvalidParameter", MSG_FORMAT)
            body = self.rfile.read(length) if length > 0 else b""
        self._body = body
        return body

    def _read_json_or_empty(self) -> dict[str, Any]:
        body = self._read_body()
        if not body.strip():
            return {}
        try:
            value = json.loads(body)
        except ValueError:
            raise _ApiError(400, "InvalidParameter", "The body is not valid JSON.") from None
        if not isinstance(value, dict):
            raise _ApiError(400, "InvalidParameter", "The body must be a JSON object.")
        return value

    def _send_bytes(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        # Logged before the client can read the answer: a test that reads the log right after the
        # response must find this request in it.
        self._record["status"] = status
        self._commit()
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _commit(self) -> None:
        """Add this request to the emulator's request log (once)."""
        if not self._committed:
            self._committed = True
            self.emulator._add_record(self._record)

    def _send_json(self, status: int, payload: Any) -> None:
        self._send_bytes(status, json.dumps(payload, ensure_ascii=False).encode(), "application/json")

    def _send_error(self, status: int, code: str, message: str) -> None:
        self._send_json(status, {"request_id": self._request_id, "code": code, "message": message})

    def _drop(self, fault: str) -> None:
        """Close the connection without writing a byte: the client sees a connection error."""
        self._record["fault"] = fault
        self._commit()
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _authenticate(self) -> str:
        fingerprint = self.emulator._authenticate(self.headers.get("Authorization"))
        self._record["key_fingerprint"] = fingerprint
        return fingerprint

    # -- the DashScope API ------------------------------------------------------------------------

    def _submit(self) -> None:
        emulator = self.emulator
        raw = self._read_body()
        owner = self._authenticate()
        emulator._admit(owner, "submit")
        if self.headers.get("X-DashScope-Async", "").strip().lower() != "enable":
            raise _ApiError(400, "InvalidParameter", MSG_SYNC)
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise _ApiError(400, "InvalidParameter", MSG_FORMAT)
        try:
            payload = json.loads(raw)
        except ValueError:
            raise _ApiError(400, "InvalidParameter", MSG_FORMAT) from None
        if isinstance(payload, dict) and isinstance(payload.get("model"), str):
            self._record["model"] = payload["model"]
        model, task_input, parameters = validate_submission(payload)

        fault = emulator.faults.draw("submit")
        self._record["fault"] = fault
        if fault == "submit_500":
            raise _ApiError(500, "InternalError", MSG_INTERNAL)
        if fault == "submit_503":
            raise _ApiError(503, "ServiceUnavailable", MSG_UNAVAILABLE)
        task = emulator._create_task(owner, model, task_input, parameters)
        self._record["task_id"] = task.task_id
        if fault == "drop_submit":
            self._drop(fault)
        elif fault == "submit_502_no_body":
            self._send_bytes(502, _GATEWAY_502, "text/html")
        else:
            self._send_json(
                200,
                {
                    "output": {"task_id": task.task_id, "task_status": "PENDING"},
                    "request_id": self._request_id,
                },
            )

    def _query(self, task_id: str) -> None:
        emulator = self.emulator
        self._read_body()
        owner = self._authenticate()
        self._record["task_id"] = task_id
        emulator._admit(owner, "query")
        fault = emulator.faults.draw("query")
        self._record["fault"] = fault
        if fault == "drop_query":
            self._drop(fault)
            return
        if fault == "query_500":
            raise _ApiError(500, "InternalError", MSG_INTERNAL)
        if fault == "query_503":
            raise _ApiError(503, "ServiceUnavailable", MSG_UNAVAILABLE)
        host = self.headers.get("Host")
        base_url = f"http://{host}" if host else emulator.base_url
        self._send_json(200, {"request_id": self._request_id, **emulator._task_view(task_id, owner, base_url)})

    def _cancel(self, task_id: str) -> None:
        self._read_body()
        owner = self._authenticate()
        self._record["task_id"] = task_id
        if not self.emulator._cancel(task_id, owner):
            raise _ApiError(400, "UnsupportedOperation", MSG_CANCEL)
        self._send_json(200, {"request_id": self._request_id})

    def _result(self, path: str, query: str, head: bool) -> None:
        self._read_body()
        match = _RESULT_PATH.match(path)
        params = {name: values[0] for name, values in parse_qs(query).items()}
        task_id = match.group(1) if match else ""
        self._record["task_id"] = task_id or None
        expires = params.get("Expires", "")
        if not (match and expires.isdigit() and self.emulator._signature_ok(task_id, expires, params.get("Signature"))):
            self._oss_error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided. "
                "Check your key and signing method.",
            )
            return
        now = self.emulator.clock.now()
        if int(expires) < now:
            extra = f"  <Expires>{_iso(int(expires))}</Expires>\n  <ServerTime>{_iso(int(now))}</ServerTime>\n"
            self._oss_error(403, "AccessDenied", "Request has expired.", extra)
            return
        video = self.emulator._video_path(task_id)
        if video is None or not video.exists():
            self._oss_error(404, "NoSuchKey", "The specified key does not exist.")
            return
        self._record["status"] = send_file(self, video, "video/mp4", head)

    def _oss_error(self, status: int, code: str, message: str, extra: str = "") -> None:
        request_id = self._request_id.replace("-", "").upper()
        body = _OSS_XML.format(code=code, message=message, request_id=request_id, extra=extra)
        self._send_bytes(status, body.encode(), "application/xml")


def _iso(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(epoch))


def validate_submission(payload: Any) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Check a submit body; returns ``(model, input, parameters)`` or raises the documented 400.

    Order: shape (model, input) -> model exists -> model's required fields and types -> style_level /
    driven_id -> URL schemes. Geometry (boxes inside the image, ratio) needs the image, so it is
    checked when the task runs.
    """
    if not isinstance(payload, dict):
        raise _ApiError(400, "InvalidParameter", MSG_FORMAT)
    model, task_input = payload.get("model"), payload.get("input")
    parameters = payload.get("parameters")
    if not isinstance(model, str) or not model or not isinstance(task_input, dict):
        raise _ApiError(400, "InvalidParameter", MSG_FORMAT)
    if parameters is not None and not isinstance(parameters, dict):
        raise _ApiError(400, "InvalidParameter", MSG_FORMAT)
    parameters = parameters or {}
    if model not in MODELS:
        raise _ApiError(400, "InvalidParameter", MSG_NO_MODEL)
    strings = ("image_url", "audio_url") if model == "emo-v1" else ("image_url", "driven_id")
    for name in strings:
        if not isinstance(task_input.get(name), str):
            raise _ApiError(400, "InvalidParameter", MSG_FORMAT)
    for name in ("face_bbox", "ext_bbox"):
        if not _is_bbox(task_input.get(name)):
            raise _ApiError(400, "InvalidParameter", MSG_FORMAT)
    if model == "emo-v1":
        if parameters.get("style_level", "normal") not in STYLE_LEVELS:
            raise _ApiError(400, "InvalidParameter", MSG_STYLE)
    elif task_input["driven_id"] not in EMOJI_TEMPLATES:
        raise _ApiError(400, "InvalidParameter", MSG_DRIVEN_ID)
    for name in ("image_url", "audio_url") if model == "emo-v1" else ("image_url",):
        if not _is_http_url(task_input[name]):
            raise _ApiError(400, "InvalidURL", MSG_URL)
    return model, task_input, parameters


def _check_geometry(model: str, face: list[int], ext: list[int], width: int, height: int) -> str | None:
    """Why the boxes don't fit the image or the model, or None."""
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


class EmulatorServer:
    """The DashScope emulator: an HTTP server, a per-key queue in simulated time, and media workers.

    ``api_keys``: accepted keys (default: ``$DASHSCOPE_EMULATOR_API_KEYS``, comma-separated, else
    ``sk-emulator``). ``speed``: simulated seconds per wall second. ``seed``: for probabilistic faults.
    Keys are kept only as hashes and never logged; logs and billing name a key by
    :func:`key_fingerprint`.

    Keyword-only extras: ``log_requests`` (one ``METHOD path status`` line per request on the
    ``dashscope_emulator`` logger), ``submit_qps``/``query_qps`` (the per-key limits, 5 and 20),
    ``workers`` (threads that download and check media), ``render_parallel`` (concurrent ffmpeg runs,
    default min(2, CPUs)), ``cache_dir`` (where rendered videos are cached; kept after :meth:`stop`;
    default a temporary folder that :meth:`stop` deletes).
    """

    def __init__(
        self,
        api_keys: Iterable[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        speed: float = 1.0,
        seed: int | None = None,
        *,
        log_requests: bool = False,
        submit_qps: int = 5,
        query_qps: int = 20,
        workers: int = 8,
        render_parallel: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        keys = [k for k in (api_keys or []) if k] or _keys_from_env() or [DEFAULT_API_KEY]
        # Full-length hashes for the check (no prefix collisions); fingerprints for display.
        self._keys = {hashlib.sha256(k.encode()).hexdigest(): key_fingerprint(k) for k in keys}
        self.key_count = len(self._keys)
        self.host, self._requested_port = host, port
        self.clock = SimClock(speed)
        self.faults = FaultInjector(seed)
        self.log_requests = log_requests
        self._limits = {"submit": submit_qps, "query": query_qps}
        self._windows: dict[tuple[str, str], deque[float]] = {}
        self._secret = secrets.token_bytes(32)

        self._cond = threading.Condition()
        self._tasks: dict[str, Task] = {}
        self._lanes: dict[str, _Lane] = {}
        self._billing: list[dict[str, Any]] = []
        self._requests: deque[dict[str, Any]] = deque(maxlen=200_000)  # bounded: long demos poll a lot
        self._stopping = False
        self._work: queue.Queue[str | None] = queue.Queue()
        self._n_workers = workers
        self._render_parallel = render_parallel or max(1, min(2, os.cpu_count() or 1))
        self._threads: list[threading.Thread] = []
        self._httpd: _TrackingServer | None = None
        self._workdir: Path | None = None
        # A given cache folder outlives the server (tests share renders across servers); else a temp one.
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.renderer: media.Renderer | None = None

    # -- life cycle --------------------------------------------------------------------------------

    def start(self) -> EmulatorServer:
        """Bind, then serve in background threads; returns self (``base_url`` is known from here on)."""
        if self._httpd is not None:
            return self
        if self._cache_dir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="dashscope-emulator-"))
        self.renderer = media.Renderer(self._cache_dir or self._workdir / "videos", self._render_parallel)
        handler = type("Handler", (_EmulatorHandler,), {"emulator": self})
        self._httpd = _TrackingServer((self.host, self._requested_port), handler)
        self._threads = [
            threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="emulator-http", daemon=True
            ),
            threading.Thread(target=self._schedule_loop, name="emulator-scheduler", daemon=True),
        ] + [
            threading.Thread(target=self._work_loop, name=f"emulator-worker-{i}", daemon=True)
            for i in range(self._n_workers)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open connections, end the threads and delete the rendered videos."""
        if self._httpd is None:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()
        for _ in range(self._n_workers):
            self._work.put(None)
        # Workers may be in a download or an ffmpeg run; they are daemons: wait 2 s in all, not per thread.
        deadline = time.monotonic() + 2.0
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self._httpd = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the emulator is not started")
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running server."""
        return f"http://{self.host}:{self.port}"

    # -- the admin API (also over HTTP under /_emulator/) ----------------------------------------

    def billing(self) -> list[dict[str, Any]]:
        """One line per SUCCEEDED task (what the real service would charge for), in order of success."""
        with self._cond:
            return [dict(line) for line in self._billing]

    def request_log(self) -> list[dict[str, Any]]:
        """Every HTTP request: ``time`` (epoch), ``method``, ``path``, ``key_fingerprint``, ``status``
        (None when the connection was dropped), ``model``, ``task_id``, ``fault``."""
        with self._cond:
            return [dict(entry) for entry in self._requests]

    def tasks(self) -> list[dict[str, Any]]:
        """Every task ever submitted, with its status, model, input and key fingerprint."""
        with self._cond:
            return [task.public() for task in self._tasks.values()]

    def advance(self, seconds: float) -> float:
        """Move simulated time forward (e.g. past the 24 h expiry); returns the new simulated time."""
        now = self.clock.advance(seconds)
        with self._cond:
            self._cond.notify_all()
        return now

    def set_faults(
        self,
        submit_5xx: float = 0.0,
        query_5xx: float = 0.0,
        drop_submit: float = 0.0,
        seed: int | None = None,
        drop_query: float = 0.0,
    ) -> None:
        """Probabilistic faults per request (see :mod:`.faults`); all 0 turns them off."""
        self.faults.configure(submit_5xx, query_5xx, drop_submit, drop_query, seed)

    def force_next(self, fault: str) -> None:
        """A one-shot fault on the next matching request (see :mod:`.faults` for the names)."""
        self.faults.force_next(fault)

    def _admin(self, method: str, name: str, body: dict[str, Any]) -> Any:
        reads = {
            "billing": self.billing,
            "requests": self.request_log,
            "tasks": self.tasks,
            "health": lambda: {"status": "ok", "speed": self.clock.speed, "sim_time": format_time(self.clock.now())},
        }
        try:
            if method == "GET" and name in reads:
                return reads[name]()
            if method == "POST" and name == "advance":
                now = self.advance(float(body.get("seconds", 0)))
                return {"sim_time": format_time(now), "sim_epoch": now}
            if method == "POST" and name == "faults":
                allowed = {"submit_5xx", "query_5xx", "drop_submit", "drop_query", "seed"}
                unknown = set(body) - allowed
                if unknown:
                    raise ValueError(f"unknown fault settings {sorted(unknown)}; allowed: {sorted(allowed)}")
                self.set_faults(**body)
                return self.faults.settings()
            if method == "POST" and name == "force":
                self.force_next(str(body.get("fault")))
                return self.faults.settings()
        except (TypeError, ValueError) as exc:
            raise _ApiError(400, "InvalidParameter", str(exc)) from None
        raise _ApiError(404, "NotFound", f"No emulator admin endpoint {method} /_emulator/{name}.")

    # -- request handling helpers ------------------------------------------------------------------

    def _add_record(self, record: dict[str, Any]) -> None:
        with self._cond:
            self._requests.append(record)
        if self.log_requests:
            log.info("%s %s %s", record["method"], record["path"], record["status"] or "dropped")

    def _authenticate(self, header: str | None) -> str:
        scheme, _, token = (header or "").strip().partition(" ")
        token = token.strip()
        if not header or not header.strip() or (scheme.lower() == "bearer" and not token):
            raise _ApiError(401, "InvalidApiKey", MSG_NO_KEY)
        fingerprint = self._keys.get(hashlib.sha256(token.encode()).hexdigest()) if scheme.lower() == "bearer" else None
        if fingerprint is None:
            raise _ApiError(401, "InvalidApiKey", MSG_BAD_KEY)
        return fingerprint

    def _admit(self, owner: str, kind: str) -> None:
        """Sliding 1 s window per key and kind, on the wall clock; throttled requests aren't counted."""
        now = time.monotonic()
        with self._cond:
            window = self._windows.setdefault((owner, kind), deque())
            while window and window[0] <= now - 1.0:
                window.popleft()
            if len(window) >= self._limits[kind]:
                raise _ApiError(429, "Throttling.RateQuota", MSG_THROTTLED)
            window.append(now)

    def _create_task(self, owner: str, model: str, task_input: dict, parameters: dict) -> Task:
        task = Task(str(uuid.uuid4()), owner, model, task_input, parameters, self.clock.now())
        with self._cond:
            self._tasks[task.task_id] = task
            self._lanes.setdefault(owner, _Lane()).pending.append(task.task_id)
            self._cond.notify_all()
        return task

    def _visible(self, task_id: str, owner: str, now: float) -> Task | None:
        task = self._tasks.get(task_id)
        if task is None or task.owner != owner or now - task.submit_time > TASK_TTL:
            return None
        return task

    def _task_view(self, task_id: str, owner: str, base_url: str) -> dict[str, Any]:
        """The ``output`` (and ``usage``) of a query, shaped per model as the reference shows."""
        now = self.clock.now()
        with self._cond:
            task = self._visible(task_id, owner, now)
            if task is None:
                return {"output": {"task_id": task_id, "task_status": "UNKNOWN"}}
            output: dict[str, Any] = {
                "task_id": task.task_id,
                "task_status": task.status,
                "submit_time": format_time(task.submit_time),
            }
            if task.scheduled_time is not None:
                output["scheduled_time"] = format_time(task.scheduled_time)
            if task.end_time is not None:
                output["end_time"] = format_time(task.end_time)
            view: dict[str, Any] = {"output": output}
            outcome = task.outcome
            if task.status == "FAILED" and outcome is not None:
                output["code"], output["message"] = outcome.code, outcome.message
            elif task.status == "SUCCEEDED" and outcome is not None and task.expires is not None:
                url = self._signed_url(base_url, task.task_id, task.expires)
                if task.model == "emo-v1":
                    output["results"] = {"video_url": url}
                else:
                    output["video_url"] = url
                view["usage"] = {"video_duration": outcome.video_duration, "video_ratio": outcome.video_ratio}
            return view

    def _cancel(self, task_id: str, owner: str) -> bool:
        now = self.clock.now()
        with self._cond:
            task = self._visible(task_id, owner, now)
            if task is None or task.status != "PENDING":
                return False
            self._lanes[owner].pending.remove(task_id)
            task.status, task.end_time = "CANCELED", now
            return True

    def _signature(self, task_id: str, expires: str) -> str:
        digest = hmac.new(self._secret, f"{task_id}\n{expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def _signed_url(self, base_url: str, task_id: str, expires: int) -> str:
        signature = self._signature(task_id, str(expires))
        query = f"Expires={expires}&OSSAccessKeyId=emulator&Signature={signature}"
        return f"{base_url}/results/{task_id}.mp4?{query}"

    def _signature_ok(self, task_id: str, expires: str, signature: str | None) -> bool:
        return bool(signature) and hmac.compare_digest(self._signature(task_id, expires), signature or "")

    def _video_path(self, task_id: str) -> Path | None:
        with self._cond:
            task = self._tasks.get(task_id)
            return task.outcome.video_path if task and task.outcome and task.status == "SUCCEEDED" else None

    # -- the queue ---------------------------------------------------------------------------------

    def _schedule_loop(self) -> None:
        """Moves tasks along: starts the next PENDING task of idle keys, ends RUNNING tasks that are due."""
        with self._cond:
            while not self._stopping:
                now = self.clock.now()
                next_due = self._step(now)
                # Sleep until the next task is due (in wall time), or until a submit/outcome/advance
                # notifies; wake at least every second anyway.
                timeout = 1.0 if next_due is None else min(1.0, self.clock.wall_seconds(next_due - now))
                self._cond.wait(timeout=max(timeout, 0.001))

    def _step(self, now: float) -> float | None:
        next_due: float | None = None
        for lane in self._lanes.values():
            if lane.running is not None:
                task = self._tasks[lane.running]
                if task.outcome is None:
                    continue  # still being processed by a worker
                due = (task.scheduled_time or now) + task.outcome.busy_seconds()
                if now < due:
                    next_due = due if next_due is None else min(next_due, due)
                    continue
                self._finish(task, now)
                lane.running = None
            if lane.pending:
                task = self._tasks[lane.pending.popleft()]
                task.status, task.scheduled_time = "RUNNING", now
                lane.running = task.task_id
                self._work.put(task.task_id)
        return next_due

    def _finish(self, task: Task, now: float) -> None:
        outcome = task.outcome
        assert outcome is not None
        task.end_time = now
        if not outcome.succeeded:
            task.status = "FAILED"
            return
        task.status = "SUCCEEDED"
        task.expires = int(now + URL_TTL)
        self._billing.append(
            {
                "task_id": task.task_id,
                "model": task.model,
                "key_fingerprint": task.owner,
                "video_duration": outcome.video_duration,
                "video_ratio": outcome.video_ratio,
                "submit_time": format_time(task.submit_time),
                "end_time": format_time(now),
            }
        )

    def _work_loop(self) -> None:
        while True:
            task_id = self._work.get()
            if task_id is None:
                return
            with self._cond:
                task = self._tasks[task_id]
            try:
                outcome = self._process(task)
            except Exception:
                log.exception("emulator failed to process task %s", task_id)
                outcome = Outcome("InternalError", MSG_INTERNAL)
            with self._cond:
                task.outcome = outcome
                self._cond.notify_all()

    def _process(self, task: Task) -> Outcome:
        """Download and check the media the way the service does, then render the video."""
        image_url = task.input["image_url"]
        try:
            image = media.fetch(image_url, MAX_IMAGE_BYTES[task.model], FETCH_TIMEOUT)
        except media.FetchError:
            return Outcome("InvalidParameter.DataInspection", MSG_DOWNLOAD)
        except media.TooLarge:
            limit = MAX_IMAGE_BYTES[task.model] // (1024 * 1024)
            return Outcome("InvalidParameter", f"The image file is larger than {limit}MB.")
        if media.sniff_image(image) is None:
            return Outcome("InvalidURL", MSG_IMAGE_FORMAT)
        try:
            width, height = media.image_size(image)
        except media.MediaError:
            return Outcome("InvalidURL", MSG_IMAGE_FORMAT)
        if min(width, height) < MIN_SIDE or max(width, height) > MAX_SIDE:
            return Outcome("InvalidFile.Resolution", MSG_RESOLUTION)
        face, ext = task.input["face_bbox"], task.input["ext_bbox"]
        problem = _check_geometry(task.model, face, ext, width, height)
        if problem:
            return Outcome("InvalidParameter", problem)
        requested = parse_qs(urlsplit(image_url).query).get("emulator_error")
        if requested:
            if requested[0] not in EMULATOR_ERRORS:
                return Outcome(
                    "InvalidParameter", f"emulator_error={requested[0]!r} is not one of {', '.join(EMULATOR_ERRORS)}."
                )
            return Outcome(*EMULATOR_ERRORS[requested[0]])
        ratio = ratio_of(ext, task.model)
        assert ratio is not None  # _check_geometry saw to it

        if task.model == "emoji-v1":
            seconds: float | int = emoji_template_seconds(task.input["driven_id"])
            job = media.RenderJob(image, tuple(ext), ratio, float(seconds), motion=task.input["driven_id"])
        else:
            try:
                audio = media.fetch(task.input["audio_url"], MAX_AUDIO_BYTES, FETCH_TIMEOUT)
            except media.FetchError:
                return Outcome("InvalidParameter.DataInspection", MSG_DOWNLOAD)
            except media.TooLarge:
                return Outcome("InvalidURL", MSG_AUDIO_SIZE)
            kind = media.sniff_audio(audio)
            if kind is None:
                return Outcome("InvalidURL", MSG_AUDIO_TYPE)
            try:
                length = media.audio_duration(audio, kind)
            except media.MediaError:
                return Outcome("InvalidURL", MSG_AUDIO_TYPE)
            if length > MAX_AUDIO_SECONDS:
                return Outcome("InvalidURL", MSG_AUDIO_LONG)
            seconds = round(length, 2)
            style = task.parameters.get("style_level", "normal")
            job = media.RenderJob(image, tuple(ext), ratio, seconds, audio, kind, motion=style)
        assert self.renderer is not None
        path = self.renderer.render(job)
        return Outcome(video_path=path, video_duration=seconds, video_ratio=ratio)


class _QuietStaticHandler(_TrackedQuietHandler, SimpleHTTPRequestHandler):
    """Static files over HTTP/1.1 keep-alive, with single ``Range`` requests, and no access log."""

    def do_GET(self) -> None:
        if self.headers.get("Range"):
            path = self.translate_path(self.path)
            if os.path.isfile(path):
                send_file(self, Path(path), self.guess_type(path), head=False)
                return
        super().do_GET()


@contextlib.contextmanager
def serve_directory(directory: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``directory`` over HTTP in a background thread; yields its base URL (``http://host:port``)."""
    handler = partial(_QuietStaticHandler, directory=str(directory))
    httpd = _TrackingServer((host, port), handler)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="emulator-static", daemon=True
    )
    thread.start()
    try:
        yield f"http://{host}:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        thread.join(timeout=2.0)
