"""The in-process service behind the emulator's HTTP API: task store, queue, detections, billing, logs.

:class:`EmulatorService` is what the HTTP handler talks to, through public methods only
(:meth:`~EmulatorService.authenticate`, :meth:`~EmulatorService.admit`, :meth:`~EmulatorService.submit`,
:meth:`~EmulatorService.query`, :meth:`~EmulatorService.list_tasks`, :meth:`~EmulatorService.cancel`, ...).
It knows nothing of HTTP.

* **Simulated time** (:class:`~.clock.SimClock`): ``sim_now = t0 + wall_elapsed * speed + advanced``.
* **Accounts** (:mod:`.accounts`): keys grouped into Alibaba Cloud accounts; by default each key is
  an account of its own.
* **Queue.** Per account: FIFO, exactly one task RUNNING, the rest PENDING (the reference's "concurrent
  tasks: 1, excess tasks are queued"). A RUNNING task lasts :func:`run_seconds` simulated seconds, or
  longer if rendering takes longer in wall time; a task whose media fail the checks ends
  :data:`FAIL_SECONDS` after it started. Worker threads download, check and render (:mod:`.validation`,
  :mod:`.media`) while the task is RUNNING.
* **Task list** (:meth:`EmulatorService.list_tasks`): the account's tasks of a window of at most 24 h,
  by creation time (``gmt_create``, on the wall clock plus :meth:`~EmulatorService.advance`), paged;
  it counts as a query against the 20 per second.
* **Limits** (:mod:`.accounts`). Per account and model, on the wall clock: more submits (emo-v1 5, emoji-v1
  1), face-detects (emo-detect-v1 5, emoji-detect-v1 1) or queries and lists (20) within any 1 s window
  get 429 ``Throttling.RateQuota`` (throttled requests don't count); a used-up free quota, 429
  ``Throttling.AllocationQuota``.
* **Face detection** (:meth:`EmulatorService.detect`, :mod:`.detection`): synchronous; every answered
  detection, passed or not, is one billed image in :meth:`EmulatorService.detections`.
* **Results** are served at signed URLs (HMAC of task id and expiry) that expire 24 h (simulated) after
  success; task ids answer ``UNKNOWN`` 24 h after submission.
* **Billing**: one line per SUCCEEDED task, one per answered detection; a **request log** of every
  HTTP request; **faults** (:mod:`.faults`) that the handler draws per request.

Choices the reference leaves open: a task is visible (query, cancel) only to the key that submitted
it, as before accounts existed (the pages don't say whether other keys of the account see it);
cancelling an unknown task (or another key's) is refused like cancelling a non-PENDING one; cancel is
not rate limited.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dashscope_emulator import detection, media
from dashscope_emulator.accounts import Caller, FreeQuota, KeyStore, RateLimiter
from dashscope_emulator.clock import SimClock, format_time
from dashscope_emulator.contract import (
    DETECT_ERRORS,
    DETECT_QPS,
    MAX_IMAGE_BYTES,
    MSG_INTERNAL,
    QUERY_QPS,
    SUBMIT_QPS,
    TASK_TTL,
    URL_TTL,
    ApiError,
)
from dashscope_emulator.faults import FaultInjector
from dashscope_emulator.signing import UrlSigner
from dashscope_emulator.tasks import Lane, Outcome, Task, list_query
from dashscope_emulator.validation import (
    MediaFailure,
    check_task_media,
    fetch_image,
    requested_error,
    resolution_ok,
)

log = logging.getLogger("dashscope_emulator")


class EmulatorService:
    """Keys, limits, tasks, queue, billing and logs of one emulator; thread-safe.

    ``api_keys``: the accepted keys (kept only as hashes), each its own account. ``accounts``: account
    name -> its keys (see :mod:`.accounts`). ``speed``: simulated seconds per wall second. ``seed``: for
    probabilistic faults. ``submit_qps`` (model -> submits per second, or one number for every model;
    default :data:`~.contract.SUBMIT_QPS`) and ``query_qps``: the per-account limits. ``free_quota``:
    account -> submissions its free quota allows (see :class:`~.accounts.FreeQuota`). ``workers``:
    threads that download, check and render. :meth:`start` needs a :class:`~.media.Renderer`.
    """

    def __init__(
        self,
        api_keys: Iterable[str],
        speed: float = 1.0,
        seed: int | None = None,
        *,
        accounts: Mapping[str, Iterable[str]] | None = None,
        log_requests: bool = False,
        submit_qps: int | Mapping[str, int] | None = None,
        query_qps: int = QUERY_QPS,
        free_quota: Mapping[str, int] | None = None,
        workers: int = 8,
    ) -> None:
        self._keys = KeyStore(api_keys, accounts)
        self.key_count = self._keys.key_count
        self.clock = SimClock(speed)
        self.faults = FaultInjector(seed)
        self.log_requests = log_requests
        self.renderer: media.Renderer | None = None
        per_model = dict.fromkeys(SUBMIT_QPS, submit_qps) if isinstance(submit_qps, int) else submit_qps
        self._limiter = RateLimiter({**SUBMIT_QPS, **(per_model or {}), "query": query_qps, **DETECT_QPS})
        self.free_quota = FreeQuota(free_quota, self._keys.accounts())
        self._signer = UrlSigner()

        self._cond = threading.Condition()
        self._tasks: dict[str, Task] = {}
        self._lanes: dict[str, Lane] = {}
        self._billing: list[dict[str, Any]] = []
        self._detections: list[dict[str, Any]] = []
        self._requests: deque[dict[str, Any]] = deque(maxlen=200_000)  # bounded: long demos poll a lot
        self._stopping = False
        #: Wall seconds a submit's answer is held after its task was created (:meth:`set_submit_answer_delay`).
        self.submit_answer_delay = 0.0
        self._work: queue.Queue[str | None] = queue.Queue()
        self._n_workers = workers
        self._threads: list[threading.Thread] = []

    # -- life cycle --------------------------------------------------------------------------------

    def start(self, renderer: media.Renderer) -> None:
        """Start the scheduler and the worker threads; ``renderer`` makes the result videos."""
        self.renderer = renderer
        self._stopping = False
        self._threads = [threading.Thread(target=self._schedule_loop, name="emulator-scheduler", daemon=True)] + [
            threading.Thread(target=self._work_loop, name=f"emulator-worker-{i}", daemon=True)
            for i in range(self._n_workers)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, deadline: float) -> None:
        """End the threads, waiting until the ``time.monotonic()`` ``deadline`` at most.

        Workers may be in a download or an ffmpeg run; they are daemons, so they are not waited for
        past the deadline.
        """
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for _ in range(self._n_workers):
            self._work.put(None)
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    # -- the DashScope API -------------------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> Caller:
        """The caller of an ``Authorization`` header, or the 401 the service answers."""
        return self._keys.authenticate(authorization)

    def admit(self, caller: Caller, kind: str) -> None:
        """Count a request against the caller's account, or raise the 429. ``kind``: ``query``, or the model
        of a submit or a face-detect (each has its own limit); a submit past the free quota is refused first.
        """
        if kind in SUBMIT_QPS:
            self.free_quota.check(caller.account)
        self._limiter.admit(caller.account, kind)

    def submit(
        self,
        caller: Caller,
        model: str,
        task_input: dict[str, Any],
        parameters: dict[str, Any],
        request_id: str | None = None,
    ) -> str:
        """Create a PENDING task at the end of the caller's queue (the body is already valid); its id."""
        task = Task(
            str(uuid.uuid4()), caller.key_fingerprint, caller.account, model, task_input, parameters, self.clock.now()
        )
        task.gmt_create, task.request_id = self.clock.real_now(), request_id
        self.free_quota.use(caller.account)
        with self._cond:
            self._tasks[task.task_id] = task
            self._lanes.setdefault(task.account, Lane()).pending.append(task.task_id)
            self._cond.notify_all()
        return task.task_id

    def query(self, caller: Caller, task_id: str, base_url: str) -> dict[str, Any]:
        """The ``output`` (and ``usage``) of a query, shaped per model as the reference shows.

        ``base_url`` is where the client reached the emulator: result URLs use it, so they work behind
        port mappings and container names.
        """
        now = self.clock.now()
        with self._cond:
            task = self._visible(task_id, caller, now)
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
                url = self._signer.url(base_url, task.task_id, task.expires)
                if task.model == "emo-v1":
                    output["results"] = {"video_url": url}
                else:
                    output["video_url"] = url
                view["usage"] = {"video_duration": outcome.video_duration, "video_ratio": outcome.video_ratio}
            return view

    def list_tasks(self, caller: Caller, params: dict[str, str]) -> dict[str, Any]:
        """One page of the task list: the caller's *account's* tasks (every key of it) created in the window,
        of the model and status asked, oldest first (:func:`~.tasks.list_query` reads ``params``).

        The window and ``gmt_create`` are on :meth:`~.clock.SimClock.real_now`'s clock; a task past its
        24 h (simulated) is not listed, as its query answers ``UNKNOWN``.
        """
        asked = list_query(params, self.clock.real_now())
        now = self.clock.now()
        with self._cond:
            found = [
                task
                for task in self._tasks.values()
                if task.account == caller.account
                and now - task.submit_time <= TASK_TTL
                and asked.start <= task.gmt_create < asked.end + 1  # end_time names a whole second
                and asked.model in (None, task.model)
                and asked.status in (None, task.status)
            ]
            found.sort(key=lambda task: (task.gmt_create, task.task_id))
            first = (asked.page_no - 1) * asked.page_size
            data = [task.list_entry(self.clock.speed) for task in found[first : first + asked.page_size]]
        return {
            "total": len(found),
            "total_page": -(-len(found) // asked.page_size),
            "page_no": asked.page_no,
            "page_size": asked.page_size,
            "data": data,
        }

    def cancel(self, caller: Caller, task_id: str) -> bool:
        """Cancel one of the caller's PENDING tasks; False if there is no such task (or it isn't PENDING)."""
        now = self.clock.now()
        with self._cond:
            task = self._visible(task_id, caller, now)
            if task is None or task.status != "PENDING":
                return False
            self._lanes[task.account].pending.remove(task_id)
            task.status, task.end_time = "CANCELED", now
            return True

    def detect(self, caller: Caller, model: str, image_url: str, ratio: str) -> dict[str, Any]:
        """Run a face detection (the body is already valid); the answer's ``output`` and ``usage``.

        Downloads the image and checks it like a task's: a download, size or format problem is a failed
        request (:class:`~.contract.ApiError`, not billed); a resolution outside 400..7000 px is an
        answered ``InvalidFile.Resolution`` (billed), as are the failures :func:`.detection.detect`
        finds. Runs in the calling thread: the call is synchronous.
        """
        try:
            image, width, height = fetch_image(image_url, MAX_IMAGE_BYTES[model])
        except MediaFailure as failure:
            raise ApiError(400, failure.code, failure.message) from None
        requested = requested_error(image_url, {code: (code, message) for code, message in DETECT_ERRORS.items()})
        if requested is not None and requested[0] not in DETECT_ERRORS:
            raise ApiError(400, *requested)
        if not resolution_ok(width, height):
            found = detection.Detection.failed("InvalidFile.Resolution")
        else:
            found = detection.detect(image, ratio, requested[0] if requested else None)
        with self._cond:
            self._detections.append(
                {
                    "time": format_time(self.clock.now()),
                    "model": model,
                    "key_fingerprint": caller.key_fingerprint,
                    "account": caller.account,
                    "image_url": image_url,
                    "image_sha256": hashlib.sha256(image).hexdigest(),
                    "ratio": ratio,
                    "passed": found.passed,
                    "code": found.code,
                }
            )
        return {"output": _detect_output(model, found), "usage": {"image_count": 1}}

    def signature_ok(self, task_id: str, expires: str, signature: str | None) -> bool:
        """Whether a result URL's ``Signature`` is the one the emulator issued."""
        return self._signer.verify(task_id, expires, signature)

    def video_path(self, task_id: str) -> Path | None:
        """The rendered video of a SUCCEEDED task, or None."""
        with self._cond:
            task = self._tasks.get(task_id)
            return task.outcome.video_path if task and task.outcome and task.status == "SUCCEEDED" else None

    def _visible(self, task_id: str, caller: Caller, now: float) -> Task | None:
        task = self._tasks.get(task_id)
        if task is None or task.owner != caller.key_fingerprint or now - task.submit_time > TASK_TTL:
            return None
        return task

    # -- observation and control (the admin API) ---------------------------------------------------

    def log_request(self, record: dict[str, Any]) -> None:
        """Add one HTTP request to the request log (see :meth:`request_log`)."""
        with self._cond:
            self._requests.append(record)
        if self.log_requests:
            log.info("%s %s %s", record["method"], record["path"], record["status"] or "dropped")

    def billing(self) -> list[dict[str, Any]]:
        """One line per SUCCEEDED task (what the real service would charge for), in order of success."""
        with self._cond:
            return [dict(line) for line in self._billing]

    def detections(self) -> list[dict[str, Any]]:
        """One line per answered (so billed) face detection, passed or not, oldest first.

        Each: ``time`` (simulated, UTC+8), ``model``, ``key_fingerprint``, ``account``, ``image_url`` (as
        sent), ``image_sha256`` (of the downloaded bytes: the same image behind different presigned URLs
        has one hash), ``ratio``, ``passed``, ``code`` (None when passed).
        """
        with self._cond:
            return [dict(line) for line in self._detections]

    def accounts(self) -> dict[str, list[str]]:
        """Account name -> the fingerprints of its keys (a key of its own account is named by its fingerprint)."""
        return self._keys.accounts()

    def request_log(self) -> list[dict[str, Any]]:
        """Every HTTP request, oldest first (copies)."""
        with self._cond:
            return [dict(entry) for entry in self._requests]

    def tasks(self) -> list[dict[str, Any]]:
        """Every task ever submitted, with its status, model, input and key fingerprint."""
        with self._cond:
            return [task.public() for task in self._tasks.values()]

    def advance(self, seconds: float) -> float:
        """Move simulated time forward; returns the new simulated time."""
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
        *,
        detect_5xx: float = 0.0,
        drop_detect: float = 0.0,
    ) -> dict[str, Any]:
        """Probabilistic faults per request (see :mod:`.faults`); all 0 turns them off. Returns the settings."""
        self.faults.configure(
            submit_5xx, query_5xx, drop_submit, drop_query, seed, detect_5xx=detect_5xx, drop_detect=drop_detect
        )
        return self.faults.settings()

    def set_free_quota(self, account: str, submits: int | None) -> dict[str, dict[str, int]]:
        """Give ``account`` (a lone key's: its fingerprint) a free quota of ``submits`` more submissions
        (None: unlimited); returns every account's quota and use (:class:`~.accounts.FreeQuota`)."""
        self.free_quota.set(account, submits)
        return self.free_quota.settings()

    def set_submit_answer_delay(self, seconds: float) -> dict[str, float]:
        """Hold every submit's answer ``seconds`` (wall clock) after its task was created (0: answer at once).

        Not a behaviour of the real service: it widens the moment when a task exists and its id is still on
        the way, so a test can kill the client in it and lose the answer for sure. Returns the setting.
        """
        if not 0.0 <= float(seconds) <= 60.0:
            raise ValueError(f"submit answer delay must be in [0, 60] seconds, got {seconds}")
        self.submit_answer_delay = float(seconds)
        return {"seconds": self.submit_answer_delay}

    def force_next(self, fault: str) -> dict[str, Any]:
        """A one-shot fault on the next matching request (see :mod:`.faults`). Returns the settings."""
        self.faults.force_next(fault)
        return self.faults.settings()

    def health(self) -> dict[str, Any]:
        """``status``, ``speed`` and the simulated time."""
        return {"status": "ok", "speed": self.clock.speed, "sim_time": format_time(self.clock.now())}

    # -- the queue ---------------------------------------------------------------------------------

    def _schedule_loop(self) -> None:
        """Moves tasks along: starts the next PENDING task of idle queues, ends RUNNING tasks that are due."""
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
        try:
            job = check_task_media(task.model, task.input, task.parameters)
        except MediaFailure as failure:
            return Outcome(failure.code, failure.message)
        # emoji-v1 reports an integer duration (the template's), emo-v1 the audio's to 0.01 s.
        seconds: float | int = int(job.duration) if task.model == "emoji-v1" else job.duration
        assert self.renderer is not None
        path = self.renderer.render(job)
        return Outcome(video_path=path, video_duration=seconds, video_ratio=job.ratio)


def _detect_output(model: str, found: detection.Detection) -> dict[str, Any]:
    """The ``output`` of a detection, shaped per model as the pages show (emoji: other names, no check_pass)."""
    if model == "emoji-detect-v1":
        if found.passed:
            return {"bbox_face": list(found.face_bbox or ()), "ext_bbox_face": list(found.ext_bbox or ())}
        return {"code": found.code, "message": found.message}
    if found.passed:
        return {"check_pass": True, "face_bbox": list(found.face_bbox or ()), "ext_bbox": list(found.ext_bbox or ())}
    return {"check_pass": False, "code": found.code, "message": found.message}
