"""Who is calling and how often they may: API keys, Alibaba Cloud accounts, per-account rate limits.

The rate-limit page counts limits per *main account*: all its API keys together, and the one task
running at a time is the account's too. So the emulator groups keys into accounts: ``accounts`` maps an
account name to its keys; a key in no account is an account of its own (named by its fingerprint), so
with no accounts configured every key has its own limits and queue, as before accounts existed.

Keys are kept only as SHA-256 hashes; a caller is named by the key's fingerprint
(:func:`~.contract.key_fingerprint`) and its account's name, never by the key.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dashscope_emulator.contract import MSG_BAD_KEY, MSG_THROTTLED, ApiError, key_fingerprint
from dashscope_emulator.validation import bearer_token


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: the key's fingerprint and its account's name (the key itself is never kept)."""

    key_fingerprint: str
    account: str


class KeyStore:
    """The accepted API keys, as hashes, and their accounts; turns an ``Authorization`` header into a :class:`Caller`.

    ``api_keys``: keys of their own account each. ``accounts``: account name -> its keys (these keys
    are accepted too). Raises ValueError for a key in two accounts, an empty account name, or an
    account name that is another key's fingerprint (it would merge two accounts' limits).
    """

    def __init__(self, api_keys: Iterable[str], accounts: Mapping[str, Iterable[str]] | None = None) -> None:
        # Full-length hashes for the check (no prefix collisions); fingerprints and accounts for display.
        self._keys: dict[str, Caller] = {}
        for name, keys in (accounts or {}).items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"an account name must be a non-empty string, got {name!r}")
            for key in [keys] if isinstance(keys, str) else keys:
                digest = hashlib.sha256(key.encode()).hexdigest()
                other = self._keys.get(digest)
                if other is not None and other.account != name:
                    raise ValueError(f"key {key_fingerprint(key)} is in two accounts: {other.account!r} and {name!r}")
                self._keys[digest] = Caller(key_fingerprint(key), name)
        for key in api_keys:
            digest = hashlib.sha256(key.encode()).hexdigest()
            self._keys.setdefault(digest, Caller(key_fingerprint(key), key_fingerprint(key)))
        names = set(accounts or {})
        for caller in self._keys.values():
            if caller.account == caller.key_fingerprint and caller.account in names:
                raise ValueError(f"account name {caller.account!r} is the fingerprint of a key of its own")

    @property
    def key_count(self) -> int:
        return len(self._keys)

    def accounts(self) -> dict[str, list[str]]:
        """Account name -> the fingerprints of its keys."""
        grouped: dict[str, list[str]] = {}
        for caller in self._keys.values():
            grouped.setdefault(caller.account, []).append(caller.key_fingerprint)
        return grouped

    def authenticate(self, authorization: str | None) -> Caller:
        """The caller of an ``Authorization`` header, or the 401 the service answers."""
        token = bearer_token(authorization)
        caller = self._keys.get(hashlib.sha256(token.encode()).hexdigest()) if token is not None else None
        if caller is None:
            raise ApiError(401, "InvalidApiKey", MSG_BAD_KEY)
        return caller


class RateLimiter:
    """Sliding 1 s windows on the wall clock, per ``(account, kind)``; ``limits`` maps kind -> requests/s.

    Throttled requests are not counted, so a client that waits a second always gets through.
    """

    def __init__(self, limits: dict[str, int]) -> None:
        self._limits = dict(limits)
        self._windows: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def admit(self, account: str, kind: str) -> None:
        """Count one request, or raise the 429 ``Throttling.RateQuota`` if the window is full."""
        now = time.monotonic()
        with self._lock:
            window = self._windows.setdefault((account, kind), deque())
            while window and window[0] <= now - 1.0:
                window.popleft()
            if len(window) >= self._limits[kind]:
                raise ApiError(429, "Throttling.RateQuota", MSG_THROTTLED)
            window.append(now)
