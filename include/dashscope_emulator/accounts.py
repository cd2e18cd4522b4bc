"""Who is calling and how often they may: API keys, Alibaba Cloud accounts, per-account rate limits and
free quotas.

The rate-limit page counts limits per *main account*: all its API keys together, and the one task
running at a time is the account's too. So the emulator groups keys into accounts: ``accounts`` maps an
account name to its keys; a key in no account is an account of its own (named by its fingerprint), so
with no accounts configured every key has its own limits and queue, as before accounts existed.

A *free quota* (:class:`FreeQuota`, off unless configured) makes an account free-only: after a given
number of accepted submissions, every further one is refused with 429 ``Throttling.AllocationQuota``
"Free allocated quota exceeded." (the rate-limit page's answer when a free-only account has used its
quota; waiting does not cure it). The real quota is in video seconds per model; the emulator counts
submissions of any model, which is enough to reach the answer.

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

from dashscope_emulator.contract import (
    CODE_FREE_QUOTA,
    MSG_BAD_KEY,
    MSG_FREE_QUOTA,
    MSG_THROTTLED,
    ApiError,
    key_fingerprint,
)
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


class FreeQuota:
    """Per account, how many submissions its free quota allows (no entry: unlimited); thread-safe.

    ``limits``: account name (a key of its own account: its fingerprint) -> submissions allowed.
    ``known``: the account names there are (a quota for another name is a ValueError: a typo would
    otherwise leave the quota silently unused).
    """

    def __init__(self, limits: Mapping[str, int] | None = None, known: Iterable[str] = ()) -> None:
        self._known = set(known)
        self._limits: dict[str, int] = {}
        self._used: dict[str, int] = {}
        self._lock = threading.Lock()
        for account, submits in (limits or {}).items():
            self.set(account, submits)

    def set(self, account: str, submits: int | None) -> None:
        """Allow ``account`` ``submits`` more submissions from now on (None: unlimited again)."""
        if submits is not None and (isinstance(submits, bool) or not isinstance(submits, int) or submits < 0):
            raise ValueError(f"a free quota is a number of submissions >= 0 (or null), got {submits!r}")
        if account not in self._known:
            raise ValueError(f"no account {account!r}: a free quota needs an account name or a key's fingerprint")
        with self._lock:
            self._used.pop(account, None)
            if submits is None:
                self._limits.pop(account, None)
            else:
                self._limits[account] = submits

    def check(self, account: str) -> None:
        """Raise the 429 ``Throttling.AllocationQuota`` if ``account`` has used its free quota."""
        with self._lock:
            limit = self._limits.get(account)
            if limit is not None and self._used.get(account, 0) >= limit:
                raise ApiError(429, CODE_FREE_QUOTA, MSG_FREE_QUOTA)

    def use(self, account: str) -> None:
        """Count one submission (a task created) against ``account``'s free quota."""
        with self._lock:
            self._used[account] = self._used.get(account, 0) + 1

    def settings(self) -> dict[str, dict[str, int]]:
        """Account -> ``{"submits": allowed, "used": used}``, for the accounts that have a free quota."""
        with self._lock:
            return {a: {"submits": n, "used": self._used.get(a, 0)} for a, n in self._limits.items()}
