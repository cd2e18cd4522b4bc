"""A strict stand-in for DashScope's face-detect call, written from ``detection-and-limits.md`` alone.

Used until the emulator (``include/dashscope_emulator``) serves face-detect. Real HTTP on 127.0.0.1.

What it enforces, as the page says:

* ``POST /api/v1/services/aigc/image2video/face-detect`` only; ``Authorization: Bearer <key>``,
  ``Content-Type: application/json``; synchronous, so an ``X-DashScope-Async`` header is refused;
* body ``{"model", "input": {"image_url"}, "parameters": {"ratio"}}``: model ``emo-detect-v1`` (ratio
  ``1:1``/``3:4``) or ``emoji-detect-v1`` (``1:1`` only); the ratio is required; http(s) URLs only;
* answers in each model's own shape (``check_pass``/``face_bbox``/``ext_bbox`` or ``bbox_face``/
  ``ext_bbox_face``), ``usage.image_count`` 1 and a billing line for every answer, passed or not; failed
  requests get ``{"request_id", "code", "message"}`` and no usage (not billed);
* limits per Alibaba Cloud account, all its keys together, per model: emo-detect-v1 5, emoji-detect-v1 1
  request(s) in any one-second window (arrival times, with 20 ms of tolerance for scheduling jitter);
  more is 429 ``Throttling.RateQuota``.

The verdict comes from the image URL: a file name ``noface*`` fails ``InvalidFile.NoHuman``, a query
``?fail=<code>`` fails with that code, anything else passes with the page's example boxes.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

PATH = "/api/v1/services/aigc/image2video/face-detect"
RATIOS = {"emo-detect-v1": ("1:1", "3:4"), "emoji-detect-v1": ("1:1",)}
LIMITS = {"emo-detect-v1": 5, "emoji-detect-v1": 1}
JITTER = 0.02
EMO_BOXES = {"1:1": ([302, 286, 610, 593], [71, 9, 840, 778]), "3:4": ([302, 286, 610, 593], [156, 0, 756, 800])}
EMOJI_BOXES = ([212, 194, 460, 441], [63, 30, 609, 575])
FAILURES = {
    "InvalidFile.NoHuman": "No human face was detected in the picture, please upload other image.",
    "InvalidFile.FacePose": "The pose of the detected face is invalid, please upload other image.",
}
FAULTS = {
    "500": (500, "InternalError", "An internal error has occured, please try again later."),
    "503": (503, "ModelUnavailable", "Model is unavailable, please try again later."),
    "429": (429, "Throttling.RateQuota", "Requests rate limit exceeded, please try again later."),
    "free_quota": (429, "Throttling.AllocationQuota", "Free allocated quota exceeded."),
    "inspection": (400, "DataInspectionFailed", "Input data may contain inappropriate content."),
}


class FaceDetectStub:
    """The stub server. ``keys`` maps each accepted API key to its account.

    :ivar requests: one dict per request received (``time``, ``key``, ``account``, ``model``, ``body``,
        ``headers``, ``status``), in arrival order.
    :ivar billing: one dict per billed (answered) detection.
    """

    def __init__(self, keys: dict[str, str]) -> None:
        self.keys = keys
        self.requests: list[dict[str, Any]] = []
        self.billing: list[dict[str, Any]] = []
        self._faults: deque[str] = deque()
        self._windows: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # no ~40 ms delayed-ACK stall per keep-alive request

            def do_POST(self) -> None:
                stub._handle(self)

            def do_GET(self) -> None:
                stub._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FaceDetectStub:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def force_next(self, fault: str) -> None:
        """The next request gets ``fault``: an error body (``500``, ``503``, ``429``, ``free_quota``: 429
        ``Throttling.AllocationQuota``, ``inspection``: 400 ``DataInspectionFailed``), ``502_no_body``,
        ``drop`` (answered and billed, but the connection closes before the answer), ``garbage`` (200,
        billed, not JSON)."""
        self._faults.append(fault)

    # -- handling -----------------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        record: dict[str, Any] = {
            "time": time.monotonic(),
            "method": handler.command,
            "path": handler.path,
            "headers": dict(handler.headers),
            "key": None,
            "account": None,
            "model": None,
            "body": None,
            "status": None,
        }
        with self._lock:
            self.requests.append(record)
        status, payload, billed = self._answer(handler, raw, record)
        record["status"] = status
        if billed:
            with self._lock:
                self.billing.append({"request_id": payload.get("request_id"), "model": record["model"]})
        if payload.get("_drop"):
            handler.close_connection = True
            return
        body = payload["_raw"] if "_raw" in payload else json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "text/html" if "_raw" in payload else "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _answer(
        self, handler: BaseHTTPRequestHandler, raw: bytes, record: dict[str, Any]
    ) -> tuple[int, dict[str, Any], bool]:
        request_id = str(uuid.uuid4())

        def error(status: int, code: str, message: str) -> tuple[int, dict[str, Any], bool]:
            return status, {"request_id": request_id, "code": code, "message": message}, False

        if handler.command != "POST" or urlsplit(handler.path).path != PATH:
            return error(404, "NotFound", "Not found.")
        auth = handler.headers.get("Authorization") or ""
        key = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
        if key not in self.keys:
            return error(401, "InvalidApiKey", "Invalid API-key provided.")
        record["key"], record["account"] = key, self.keys[key]
        if handler.headers.get("X-DashScope-Async") is not None:
            return error(400, "InvalidParameter", "face-detect is synchronous: no X-DashScope-Async header.")
        if (handler.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
            return error(400, "InvalidParameter", "Content-Type must be application/json.")
        try:
            body = json.loads(raw)
        except ValueError:
            return error(400, "InvalidParameter", "The request body is not JSON.")
        record["body"] = body
        model = body.get("model") if isinstance(body, dict) else None
        record["model"] = model
        if model not in RATIOS:
            return error(400, "InvalidParameter", "Model not exist.")
        image_url = (body.get("input") or {}).get("image_url") if isinstance(body.get("input"), dict) else None
        ratio = (body.get("parameters") or {}).get("ratio") if isinstance(body.get("parameters"), dict) else None
        if not isinstance(image_url, str) or urlsplit(image_url).scheme not in ("http", "https"):
            return error(400, "InvalidURL", "Required URL is missing or invalid, please check the request URL.")
        if ratio not in RATIOS[model]:
            return error(400, "InvalidParameter", f"The ratio is invalid for {model}.")
        if not self._admit(self.keys[key], model, record["time"]):
            return error(429, "Throttling.RateQuota", "Requests rate limit exceeded, please try again later.")
        fault = self._faults.popleft() if self._faults else None
        if fault in FAULTS:
            return error(*FAULTS[fault])
        if fault == "502_no_body":
            return 502, {"_raw": b"<html>502 Bad Gateway</html>"}, False
        answer = self._verdict(model, ratio, image_url)
        answer.update({"usage": {"image_count": 1}, "request_id": request_id})
        if fault == "drop":
            answer["_drop"] = True
        if fault == "garbage":
            return 200, {"_raw": b"<html>ok</html>", "request_id": request_id}, True
        return 200, answer, True

    def _admit(self, account: str, model: str, now: float) -> bool:
        with self._lock:
            window = self._windows.setdefault((account, model), deque())
            while window and window[0] <= now - (1.0 - JITTER):
                window.popleft()
            if len(window) >= LIMITS[model]:
                return False
            window.append(now)
            return True

    @staticmethod
    def _verdict(model: str, ratio: str, image_url: str) -> dict[str, Any]:
        parts = urlsplit(image_url)
        code = (parse_qs(parts.query).get("fail") or [None])[0]
        if code is None and parts.path.rsplit("/", 1)[-1].startswith("noface"):
            code = "InvalidFile.NoHuman"
        if model == "emo-detect-v1":
            if code:
                message = FAILURES.get(code, "The picture can't be used.")
                return {"output": {"check_pass": False, "code": code, "message": message}}
            face, ext = EMO_BOXES[ratio]
            return {"output": {"check_pass": True, "face_bbox": face, "ext_bbox": ext}}
        if code:
            return {"output": {"code": code, "message": FAILURES.get(code, "The picture can't be used.")}}
        return {"output": {"bbox_face": EMOJI_BOXES[0], "ext_bbox_face": EMOJI_BOXES[1]}}
