"""The emulator's HTTP layer: routes DashScope and admin requests to an :class:`~.service.EmulatorService`.

One :class:`EmulatorHandler` per keep-alive connection parses a request, calls the service's public
methods, and writes the answer (JSON bodies with ``request_id``; OSS-style XML errors for result URLs).
It draws per-request faults (:mod:`.faults`): 5xx answers, a gateway 502 with an HTML body, or a
dropped connection. Every request is added to the service's request log before the client can read
the answer, so a test that reads the log right after a response finds the request in it.

The DashScope API: ``POST`` submit, ``GET`` query, ``GET`` the account's task list, ``POST`` cancel,
``POST`` face-detect (synchronous), and ``GET``/``HEAD`` of result videos.

Emulator-only admin endpoints (no key needed): ``GET /_emulator/health``, ``/billing``,
``/detections``, ``/accounts``, ``/requests``, ``/tasks``, ``/free_quota``; ``POST /_emulator/advance
{"seconds": N}``, ``/faults {"submit_5xx": p, ...}``, ``/force {"fault": "drop_submit"}``,
``/free_quota {"account": NAME, "submits": N}`` (``null``: unlimited), ``/submit_delay {"seconds": S}``
(hold each submit's answer S wall seconds after its task is created, for tests that kill a client
mid-submit). The emulator's own 404/405 answers are not from the reference.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

from dashscope_emulator.accounts import Caller
from dashscope_emulator.clock import format_time
from dashscope_emulator.contract import (
    ADMIN_PREFIX,
    CODE_INSPECTION,
    DETECT_PATH,
    MSG_CANCEL,
    MSG_FORMAT,
    MSG_INSPECTION,
    MSG_INTERNAL,
    MSG_UNAVAILABLE,
    RESULTS_PREFIX,
    SUBMIT_PATH,
    TASK_LIST_PATH,
    TASKS_PREFIX,
    ApiError,
)
from dashscope_emulator.fileserver import TrackedQuietHandler, read_chunked, send_file
from dashscope_emulator.service import EmulatorService
from dashscope_emulator.validation import (
    parse_json_body,
    refuse_async,
    require_async,
    validate_detection,
    validate_submission,
)

log = logging.getLogger("dashscope_emulator")

_OSS_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error>\n  <Code>{code}</Code>\n  <Message>{message}</Message>\n'
    "  <RequestId>{request_id}</RequestId>\n  <HostId>dashscope-result.emulator</HostId>\n{extra}</Error>\n"
)
_GATEWAY_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1>"
    b"</center>\r\n<hr><center>emulated gateway</center>\r\n</body>\r\n</html>\r\n"
)
_RESULT_PATH = re.compile(r"^/results/([0-9a-f-]{36})\.mp4$")
_MAX_BODY = 1024 * 1024
_FAULT_SETTINGS = {"submit_5xx", "query_5xx", "drop_submit", "drop_query", "seed", "detect_5xx", "drop_detect"}


def admin(service: EmulatorService, method: str, name: str, body: dict[str, Any]) -> Any:
    """Answer an admin request ``METHOD /_emulator/{name}``; bad settings are a 400, unknown names a 404."""
    reads = {
        "billing": service.billing,
        "detections": service.detections,
        "accounts": service.accounts,
        "requests": service.request_log,
        "tasks": service.tasks,
        "health": service.health,
        "free_quota": service.free_quota.settings,
    }
    try:
        if method == "GET" and name in reads:
            return reads[name]()
        if method == "POST" and name == "advance":
            now = service.advance(float(body.get("seconds", 0)))
            return {"sim_time": format_time(now), "sim_epoch": now}
        if method == "POST" and name == "faults":
            unknown = set(body) - _FAULT_SETTINGS
            if unknown:
                raise ValueError(f"unknown fault settings {sorted(unknown)}; allowed: {sorted(_FAULT_SETTINGS)}")
            return service.set_faults(**body)
        if method == "POST" and name == "submit_delay":
            return service.set_submit_answer_delay(float(body.get("seconds", 0)))
        if method == "POST" and name == "force":
            return service.force_next(str(body.get("fault")))
        if method == "POST" and name == "free_quota":
            return service.set_free_quota(str(body.get("account")), body.get("submits"))
    except (TypeError, ValueError) as exc:
        raise ApiError(400, "InvalidParameter", str(exc)) from None
    raise ApiError(404, "NotFound", f"No emulator admin endpoint {method} /_emulator/{name}.")


def _iso(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(epoch))


class EmulatorHandler(TrackedQuietHandler):
    """Routes one HTTP/1.1 connection's requests to ``service``.

    Subclassed per server with the class attributes ``service`` (the :class:`EmulatorService`) and
    ``base_url`` (used for result URLs when a request has no ``Host`` header).
    """

    server_version = "DashScopeEmulator/1.0"
    service: EmulatorService
    base_url: str = ""

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
        # tests/reliability wraps _submit and adds keys to _record; keep both names.
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
        except ApiError as exc:
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
        if path == SUBMIT_PATH:
            self._only(method, "POST")
            self._submit()
        elif path == DETECT_PATH:
            self._only(method, "POST")
            self._detect()
        elif path in (TASK_LIST_PATH, TASK_LIST_PATH.rstrip("/")):
            self._only(method, "GET")
            self._list(query)
        elif path.startswith(TASKS_PREFIX):
            rest = path[len(TASKS_PREFIX) :]
            if rest.endswith("/cancel"):
                self._only(method, "POST")
                self._cancel(rest[: -len("/cancel")])
            elif rest and "/" not in rest:
                self._only(method, "GET")
                self._query(rest)
            else:
                raise ApiError(404, "NotFound", "Not Found.")
        elif path.startswith(RESULTS_PREFIX):
            self._only(method, "GET", "HEAD")
            self._result(path, query, head=method == "HEAD")
        elif path.startswith(ADMIN_PREFIX):
            self._send_json(200, admin(self.service, method, path[len(ADMIN_PREFIX) :], self._read_json_or_empty()))
        else:
            raise ApiError(404, "NotFound", "Not Found.")

    def _only(self, method: str, *allowed: str) -> None:
        if method not in allowed:
            self._read_body()
            raise ApiError(405, "MethodNotAllowed", f"Method {method} is not allowed here.")

    def _read_body(self) -> bytes:
        """The request body (Content-Length or chunked); always consumed so keep-alive stays in sync."""
        if self._body is not None:
            return self._body
        body = b""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = read_chunked(self.rfile)
        else:
            length = int(self.headers.get("Content-Length") or 0)
            if length > _MAX_BODY:
                self.close_connection = True
                raise ApiError(400, "InvalidParameter", MSG_FORMAT)
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
            raise ApiError(400, "InvalidParameter", "The body is not valid JSON.") from None
        if not isinstance(value, dict):
            raise ApiError(400, "InvalidParameter", "The body must be a JSON object.")
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
        """Add this request to the service's request log (once)."""
        if not self._committed:
            self._committed = True
            self.service.log_request(self._record)

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

    def _authenticate(self) -> Caller:
        caller = self.service.authenticate(self.headers.get("Authorization"))
        self._record["key_fingerprint"] = caller.key_fingerprint
        return caller

    def _client_base_url(self) -> str:
        # The Host the client used, so result URLs work behind port mappings and container names.
        host = self.headers.get("Host")
        return f"http://{host}" if host else self.base_url

    # -- the DashScope API ------------------------------------------------------------------------

    def _submit(self) -> None:
        # Validated before the limits: they are per model, so the model must be known first.
        service = self.service
        raw = self._read_body()
        caller = self._authenticate()
        require_async(self.headers.get("X-DashScope-Async"))
        payload = parse_json_body(self.headers.get("Content-Type"), raw)
        if isinstance(payload, dict) and isinstance(payload.get("model"), str):
            self._record["model"] = payload["model"]
        model, task_input, parameters = validate_submission(payload)
        service.admit(caller, model)

        fault = self._draw_fault("submit")
        task_id = service.submit(caller, model, task_input, parameters, self._request_id)
        self._record["task_id"] = task_id
        if service.submit_answer_delay:  # the task exists, its answer not yet sent (set_submit_answer_delay)
            time.sleep(service.submit_answer_delay)
        if fault == "drop_submit":
            self._drop(fault)
        elif fault == "submit_502_no_body":
            self._send_bytes(502, _GATEWAY_502, "text/html")
        else:
            self._send_json(
                200, {"output": {"task_id": task_id, "task_status": "PENDING"}, "request_id": self._request_id}
            )

    def _draw_fault(self, kind: str) -> str | None:
        """Draw this request's injected fault (recorded in the request log); 5xx faults are raised here."""
        fault = self.service.faults.draw(kind)
        self._record["fault"] = fault
        if fault == f"{kind}_500":
            raise ApiError(500, "InternalError", MSG_INTERNAL)
        if fault == f"{kind}_503":
            raise ApiError(503, "ServiceUnavailable", MSG_UNAVAILABLE)
        if fault == f"{kind}_inspection":
            raise ApiError(400, CODE_INSPECTION, MSG_INSPECTION)
        return fault

    def _detect(self) -> None:
        # Validated before the rate limit: the limit is per model, so the model must be known first.
        service = self.service
        raw = self._read_body()
        caller = self._authenticate()
        refuse_async(self.headers.get("X-DashScope-Async"))
        payload = parse_json_body(self.headers.get("Content-Type"), raw)
        if isinstance(payload, dict) and isinstance(payload.get("model"), str):
            self._record["model"] = payload["model"]
        model, image_url, ratio = validate_detection(payload)
        service.admit(caller, model)
        fault = self._draw_fault("detect")
        answer = service.detect(caller, model, image_url, ratio)
        if fault == "drop_detect":
            self._drop(fault)
            return
        self._send_json(200, {**answer, "request_id": self._request_id})

    def _query(self, task_id: str) -> None:
        service = self.service
        self._read_body()
        caller = self._authenticate()
        self._record["task_id"] = task_id
        service.admit(caller, "query")
        fault = self._draw_fault("query")
        if fault == "drop_query":
            self._drop(fault)
            return
        view = service.query(caller, task_id, self._client_base_url())
        self._send_json(200, {"request_id": self._request_id, **view})

    def _list(self, query: str) -> None:
        # The account's task list: counted against the account's 20 queries per second, no faults drawn.
        self._read_body()
        caller = self._authenticate()
        self.service.admit(caller, "query")
        params = {name: values[0] for name, values in parse_qs(query).items()}
        self._send_json(200, {"request_id": self._request_id, **self.service.list_tasks(caller, params)})

    def _cancel(self, task_id: str) -> None:
        self._read_body()
        caller = self._authenticate()
        self._record["task_id"] = task_id
        if not self.service.cancel(caller, task_id):
            raise ApiError(400, "UnsupportedOperation", MSG_CANCEL)
        self._send_json(200, {"request_id": self._request_id})

    def _result(self, path: str, query: str, head: bool) -> None:
        self._read_body()
        match = _RESULT_PATH.match(path)
        params = {name: values[0] for name, values in parse_qs(query).items()}
        task_id = match.group(1) if match else ""
        self._record["task_id"] = task_id or None
        expires = params.get("Expires", "")
        if not (match and expires.isdigit() and self.service.signature_ok(task_id, expires, params.get("Signature"))):
            self._oss_error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided. "
                "Check your key and signing method.",
            )
            return
        now = self.service.clock.now()
        if int(expires) < now:
            extra = f"  <Expires>{_iso(int(expires))}</Expires>\n  <ServerTime>{_iso(int(now))}</ServerTime>\n"
            self._oss_error(403, "AccessDenied", "Request has expired.", extra)
            return
        video = self.service.video_path(task_id)
        if video is None or not video.exists():
            self._oss_error(404, "NoSuchKey", "The specified key does not exist.")
            return
        self._record["status"] = send_file(self, video, "video/mp4", head)

    def _oss_error(self, status: int, code: str, message: str, extra: str = "") -> None:
        request_id = self._request_id.replace("-", "").upper()
        body = _OSS_XML.format(code=code, message=message, request_id=request_id, extra=extra)
        self._send_bytes(status, body.encode(), "application/xml")
