"""A local emulator of the DashScope video-synthesis API (``emo-v1``, ``emoji-v1``), over real HTTP.

It follows the reference pages in ``shared/reference`` (status names, JSON shapes, error codes and
messages verbatim) and adds what the pages describe but a unit test can't reach on the real service:

* simulated time (``speed`` times the wall clock, :meth:`EmulatorServer.advance` jumps forward);
  times in responses are that clock in UTC+8;
* API keys grouped into Alibaba Cloud accounts (``accounts=``; by default each key is its own);
* a FIFO queue per account with one task RUNNING for :func:`run_seconds` simulated seconds;
* media checks when a task runs (the vision checks on request: ``?emulator_error=<code>``);
* real MP4 results at signed URLs that expire 24 h (simulated) after success; task ids answer
  ``UNKNOWN`` 24 h after submission; a result URL's host is the ``Host`` the client queried with;
* the synchronous face-detect call (``emo-detect-v1``, ``emoji-detect-v1``), billed per answered image
  (:meth:`EmulatorServer.detections`);
* the rate-limit page's limits per account (all its keys together) and per model: submits emo-v1 5/s
  and emoji-v1 1/s, face-detects emo-detect-v1 5/s and emoji-detect-v1 1/s, queries 20/s (429
  ``Throttling.RateQuota``);
* a free-only account whose free quota runs out (off by default): ``free_quota={"acct": 3}`` (or
  :meth:`EmulatorServer.set_free_quota`, or ``POST /_emulator/free_quota {"account": "acct",
  "submits": 3}``, or ``--free-quota acct=3``) accepts 3 more submits of the account, then answers
  every submit 429 ``Throttling.AllocationQuota`` "Free allocated quota exceeded." (no task); a key
  of its own account is named by its :func:`key_fingerprint`;
* fault injection, billing (one line per SUCCEEDED task) and a request log, also over HTTP under
  ``/_emulator/``.

:class:`EmulatorServer` wires the parts together and runs them in background threads:

* :mod:`.contract`: endpoints, models, error codes and messages, limits, validity windows;
* :mod:`.validation`: request and media checks producing the documented errors;
* :mod:`.accounts`: keys, accounts, rate limits;
* :mod:`.service`: task store, queue, detections, billing (in-process, no HTTP); :mod:`.tasks`: tasks;
* :mod:`.detection`: where the face is in a picture, and the dynamic area around it;
* :mod:`.handler`: the HTTP layer (DashScope API and ``/_emulator/`` admin endpoints);
* :mod:`.fileserver`: HTTP plumbing and :func:`serve_directory` for sample media;
* :mod:`.media`, :mod:`.clock`, :mod:`.faults`, :mod:`.samples`: rendering, time, faults, test media.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dashscope_emulator import media
from dashscope_emulator.clock import SimClock
from dashscope_emulator.contract import (
    API_KEYS_ENV,
    DEFAULT_API_KEY,
    EMOJI_TEMPLATES,
    EMULATOR_ERRORS,
    QUERY_QPS,
    RENDER_CACHE_ENV,
    emoji_template_seconds,
    key_fingerprint,
)
from dashscope_emulator.faults import FaultInjector
from dashscope_emulator.fileserver import TrackingServer, serve_directory
from dashscope_emulator.handler import EmulatorHandler
from dashscope_emulator.service import EmulatorService
from dashscope_emulator.tasks import run_seconds

# Importable from here as before the split (the package's __init__ and callers that import this module).
__all__ = [
    "DEFAULT_API_KEY",
    "EMOJI_TEMPLATES",
    "EMULATOR_ERRORS",
    "EmulatorServer",
    "emoji_template_seconds",
    "key_fingerprint",
    "run_seconds",
    "serve_directory",
]

#: tests/reliability/conftest.py wraps ``server._EmulatorHandler._submit`` to tag submit log entries.
_EmulatorHandler = EmulatorHandler


def _keys_from_env() -> list[str]:
    return [key.strip() for key in os.environ.get(API_KEYS_ENV, "").split(",") if key.strip()]


class EmulatorServer:
    """The DashScope emulator: an HTTP server, a per-account queue in simulated time, and media workers.

    ``api_keys``: accepted keys, each an account of its own (default, when ``accounts`` is not given
    either: ``$DASHSCOPE_EMULATOR_API_KEYS``, comma-separated, else ``sk-emulator``). ``speed``:
    simulated seconds per wall second. ``seed``: for probabilistic faults. Keys are kept only as hashes
    and never logged; logs and billing name a key by :func:`key_fingerprint`.

    ``accounts`` (keyword): account name -> its keys, e.g. ``{"acct": ["sk-a", "sk-b"]}``; these keys are
    accepted too, and share the account's rate limits and its one RUNNING task, as the rate-limit page
    says of the keys of one Alibaba Cloud account. A key in two accounts is a ValueError.

    Keyword-only extras: ``log_requests`` (one ``METHOD path status`` line per request on the
    ``dashscope_emulator`` logger), ``submit_qps`` (the per-account submit limits: model -> per second,
    or one number for every model; default emo-v1 5, emoji-v1 1), ``query_qps`` (20), ``free_quota``
    (account -> submits its free quota allows, see :meth:`set_free_quota`), ``workers`` (threads that
    download and check media), ``render_parallel`` (concurrent ffmpeg runs, default min(2, CPUs)),
    ``cache_dir`` (where rendered videos are cached; kept after :meth:`stop`; default
    ``$DASHSCOPE_EMULATOR_RENDER_CACHE``, else a temporary folder that :meth:`stop` deletes).
    """

    def __init__(
        self,
        api_keys: Iterable[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        speed: float = 1.0,
        seed: int | None = None,
        *,
        accounts: Mapping[str, Iterable[str]] | None = None,
        log_requests: bool = False,
        submit_qps: int | Mapping[str, int] | None = None,
        query_qps: int = QUERY_QPS,
        free_quota: Mapping[str, int] | None = None,
        workers: int = 8,
        render_parallel: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        keys = [k for k in (api_keys or []) if k]
        if not keys and not accounts:
            keys = _keys_from_env() or [DEFAULT_API_KEY]
        self.service = EmulatorService(
            keys,
            speed,
            seed,
            accounts=accounts,
            log_requests=log_requests,
            submit_qps=submit_qps,
            query_qps=query_qps,
            free_quota=free_quota,
            workers=workers,
        )
        self.host, self._requested_port = host, port
        self._render_parallel = render_parallel or max(1, min(2, os.cpu_count() or 1))
        self._http_thread: threading.Thread | None = None
        self._httpd: TrackingServer | None = None
        self._workdir: Path | None = None
        # A given cache folder, else $DASHSCOPE_EMULATOR_RENDER_CACHE's, outlives the server (tests share renders
        # across servers); else a temporary one, which stop() deletes.
        cache_dir = cache_dir if cache_dir is not None else os.environ.get(RENDER_CACHE_ENV) or None
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None

    # -- the parts, as attributes callers use ----------------------------------------------------------

    @property
    def clock(self) -> SimClock:
        """The simulated clock."""
        return self.service.clock

    @property
    def faults(self) -> FaultInjector:
        """The fault injector (see :mod:`.faults`)."""
        return self.service.faults

    @property
    def renderer(self) -> media.Renderer | None:
        """The video renderer (``renders`` counts ffmpeg runs); None before :meth:`start`."""
        return self.service.renderer

    @property
    def key_count(self) -> int:
        """How many API keys are accepted."""
        return self.service.key_count

    @property
    def log_requests(self) -> bool:
        """Whether each request is logged on the ``dashscope_emulator`` logger."""
        return self.service.log_requests

    # -- life cycle --------------------------------------------------------------------------------

    def start(self) -> EmulatorServer:
        """Bind, then serve in background threads; returns self (``base_url`` is known from here on)."""
        if self._httpd is not None:
            return self
        if self._cache_dir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="dashscope-emulator-"))
        renderer = media.Renderer(self._cache_dir or self._workdir / "videos", self._render_parallel)
        handler = type("Handler", (EmulatorHandler,), {"service": self.service})
        self._httpd = TrackingServer((self.host, self._requested_port), handler)
        handler.base_url = self.base_url
        self._http_thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="emulator-http", daemon=True
        )
        self._http_thread.start()
        self.service.start(renderer)
        return self

    def stop(self) -> None:
        """Stop serving, close open connections, end the threads and delete the rendered videos."""
        if self._httpd is None:
            return
        deadline = time.monotonic() + 2.0  # for all threads together, not per thread
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()
        self.service.stop(deadline)
        if self._http_thread is not None:
            self._http_thread.join(timeout=max(0.0, deadline - time.monotonic()))
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
        """The bound port (known once started)."""
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
        return self.service.billing()

    def detections(self) -> list[dict[str, Any]]:
        """One line per answered (billed) face detection, passed or not: ``time``, ``model``,
        ``key_fingerprint``, ``account``, ``image_url``, ``image_sha256``, ``ratio``, ``passed``, ``code``."""
        return self.service.detections()

    def accounts(self) -> dict[str, list[str]]:
        """Account name -> fingerprints of its keys (a key of its own account is named by its fingerprint)."""
        return self.service.accounts()

    def request_log(self) -> list[dict[str, Any]]:
        """Every HTTP request: ``time`` (epoch), ``method``, ``path``, ``key_fingerprint``, ``status``
        (None when the connection was dropped), ``model``, ``task_id``, ``fault``."""
        return self.service.request_log()

    def tasks(self) -> list[dict[str, Any]]:
        """Every task ever submitted, with its status, model, input and key fingerprint."""
        return self.service.tasks()

    def advance(self, seconds: float) -> float:
        """Move simulated time forward (e.g. past the 24 h expiry); returns the new simulated time."""
        return self.service.advance(seconds)

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
    ) -> None:
        """Probabilistic faults per request (see :mod:`.faults`); all 0 turns them off."""
        self.service.set_faults(
            submit_5xx, query_5xx, drop_submit, seed, drop_query, detect_5xx=detect_5xx, drop_detect=drop_detect
        )

    def set_free_quota(self, account: str, submits: int | None) -> None:
        """Make ``account`` free-only: ``submits`` more submits are accepted, then every submit of the account
        gets 429 ``Throttling.AllocationQuota`` "Free allocated quota exceeded." (None: unlimited again).
        ``account``: an account's name, or the :func:`key_fingerprint` of a key of its own account."""
        self.service.set_free_quota(account, submits)

    def set_submit_answer_delay(self, seconds: float) -> None:
        """Hold each submit's answer ``seconds`` (wall clock) after its task is created (0: at once): a test
        can then kill its client while a task exists and its id is on the way (``POST
        /_emulator/submit_delay {"seconds": S}`` over HTTP). Not a behaviour of the real service."""
        self.service.set_submit_answer_delay(seconds)

    def force_next(self, fault: str) -> None:
        """A one-shot fault on the next matching request (see :mod:`.faults` for the names)."""
        self.service.force_next(fault)
