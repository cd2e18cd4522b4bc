"""Who is calling and how often they may: API keys, the caller of a request, per-caller rate limits.

Keys are kept only as SHA-256 hashes; a caller is named by the key's fingerprint
(:func:`~.contract.key_fingerprint`), never by the key.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from dashscope_emulator.contract import MSG_BAD_KEY, MSG_THROTTLED, ApiError, key_fingerprint
from dashscope_emulator.validation import bearer_token


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: the key's fingerprint (the key itself is never kept)."""

    key_fingerprint: str


class KeyStore:
    """The accepted API keys (``api_keys``), as hashes; turns an ``Authorization`` header into a :class:`Caller`."""

    def __init__(self, api_keys: Iterable[str]) -> None:
        # Full-length hashes for the check (no prefix collisions); fingerprints for display.
        self._keys = {hashlib.sha256(k.encode()).hexdigest(): key_fingerprint(k) for k in api_keys}

    @property
    def key_count(self) -> int:
        return len(self._keys)

    def authenticate(self, authorization: str | None) -> Caller:
        """The caller of an ``Authorization`` header, or the 401 the service answers."""
        token = bearer_token(authorization)
        fingerprint = self._keys.get(hashlib.sha256(token.encode()).hexdigest()) if token is not None else None
        if fingerprint is None:
            raise ApiError(401, "InvalidApiKey", MSG_BAD_KEY)
        return Caller(fingerprint)


class RateLimiter:
    """Sliding 1 s windows on the wall clock, per ``(owner, kind)``; ``limits`` maps kind -> requests/s.

    Throttled requests are not counted, so a client that waits a second always gets through.
    """

    def __init__(self, limits: dict[str, int]) -> None:
        self._limits = dict(limits)
        self._windows: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def admit(self, owner: str, kind: str) -> None:
        """Count one request, or raise the 429 ``Throttling.RateQuota`` if the window is full."""
        now = time.monotonic()
        with self._lock:
            window = self._windows.setdefault((owner, kind), deque())
            while window and window[0] <= now - 1.0:
                window.popleft()
            if len(window) >= self._limits[kind]:
                raise ApiError(429, "Throttling.RateQuota", MSG_THROTTLED)
            window.append(now)
