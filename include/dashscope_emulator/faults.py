"""Fault injection: the transient failures a client of the real service must survive.

Two ways to get a fault:

* probabilistic (:meth:`FaultInjector.configure`): every eligible request draws from a seeded RNG;
* deterministic (:meth:`FaultInjector.force_next`): a one-shot fault for the next matching request.
  Forced faults queue up in the order they were forced.

Which request is eligible: a *submit* fault hits the next submission that passed authentication, the
rate limit and validation (so it is one that would have created a task); a *query* fault hits the next
``GET /api/v1/tasks/{id}`` that passed authentication and the rate limit; a *detect* fault hits the
next face-detect call that passed authentication, validation and the rate limit.

Fault names and what the client sees:

=====================  =========================================================================
``submit_500``         500 ``InternalError``, no task is created
``submit_503``         503 ``ServiceUnavailable``, no task is created
``submit_502_no_body`` the task IS created, then a gateway-style 502 with an HTML body
``drop_submit``        the task IS created, then the connection is closed without any answer
``submit_inspection``  400 ``DataInspectionFailed`` (content moderation refused the input), no task;
                       forced only (:meth:`FaultInjector.force_next`), never drawn at random
``query_500``          500 ``InternalError`` instead of the task
``query_503``          503 ``ServiceUnavailable`` instead of the task
``drop_query``         the connection is closed without any answer
``detect_500``         500 ``InternalError``, no detection (not billed)
``detect_503``         503 ``ServiceUnavailable``, no detection (not billed)
``drop_detect``        the detection IS made and billed, then the connection is closed unanswered
=====================  =========================================================================

Not a fault but an account setting: a used-up free quota (429 ``Throttling.AllocationQuota``), see
:class:`~.accounts.FreeQuota`.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from typing import Any, Literal

SUBMIT_FAULTS = ("submit_500", "submit_503", "submit_502_no_body", "drop_submit", "submit_inspection")
QUERY_FAULTS = ("query_500", "query_503", "drop_query")
DETECT_FAULTS = ("detect_500", "detect_503", "drop_detect")
FAULTS = SUBMIT_FAULTS + QUERY_FAULTS + DETECT_FAULTS

Kind = Literal["submit", "query", "detect"]
_KINDS: dict[str, tuple[str, ...]] = {"submit": SUBMIT_FAULTS, "query": QUERY_FAULTS, "detect": DETECT_FAULTS}


def _probability(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {number}")
    return number


class FaultInjector:
    """Decides, per request, whether it fails and how. Thread-safe; reproducible with a seed."""

    def __init__(self, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self.submit_5xx = 0.0
        self.query_5xx = 0.0
        self.drop_submit = 0.0
        self.drop_query = 0.0
        self.detect_5xx = 0.0
        self.drop_detect = 0.0
        self._forced: dict[str, deque[str]] = {kind: deque() for kind in _KINDS}

    def configure(
        self,
        submit_5xx: float = 0.0,
        query_5xx: float = 0.0,
        drop_submit: float = 0.0,
        drop_query: float = 0.0,
        seed: int | None = None,
        *,
        detect_5xx: float = 0.0,
        drop_detect: float = 0.0,
    ) -> None:
        """Set the per-request probabilities (each in [0, 1]); a seed restarts the RNG."""
        values = {
            "submit_5xx": _probability("submit_5xx", submit_5xx),
            "query_5xx": _probability("query_5xx", query_5xx),
            "drop_submit": _probability("drop_submit", drop_submit),
            "drop_query": _probability("drop_query", drop_query),
            "detect_5xx": _probability("detect_5xx", detect_5xx),
            "drop_detect": _probability("drop_detect", drop_detect),
        }
        for kind in _KINDS:
            if values[f"{kind}_5xx"] + values[f"drop_{kind}"] > 1.0:
                raise ValueError(f"{kind}_5xx + drop_{kind} must not exceed 1")
        with self._lock:
            for name, value in values.items():
                setattr(self, name, value)
            if seed is not None:
                self._rng = random.Random(seed)

    def force_next(self, fault: str) -> None:
        """Queue a one-shot fault for the next matching request (see the module docstring)."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; expected one of {', '.join(FAULTS)}")
        kind = next(kind for kind, names in _KINDS.items() if fault in names)
        with self._lock:
            self._forced[kind].append(fault)

    def draw(self, kind: Kind) -> str | None:
        """The fault for this request, or None. Forced faults come first, then the dice."""
        with self._lock:
            if self._forced[kind]:
                return self._forced[kind].popleft()
            five_xx, drop = getattr(self, f"{kind}_5xx"), getattr(self, f"drop_{kind}")
            if five_xx == 0.0 and drop == 0.0:
                return None  # don't consume random numbers when faults are off: keeps seeded runs aligned
            roll = self._rng.random()
            if roll < five_xx:
                code = "500" if self._rng.random() < 0.5 else "503"
                return f"{kind}_{code}"
            if roll < five_xx + drop:
                return f"drop_{kind}"
            return None

    def settings(self) -> dict[str, Any]:
        """The current probabilities and the forced faults still queued."""
        with self._lock:
            return {
                "submit_5xx": self.submit_5xx,
                "query_5xx": self.query_5xx,
                "drop_submit": self.drop_submit,
                "drop_query": self.drop_query,
                "detect_5xx": self.detect_5xx,
                "drop_detect": self.drop_detect,
                "forced": [fault for kind in _KINDS for fault in self._forced[kind]],
            }
