"""Signed result URLs, as OSS signs them: what the emulator hands out and checks on download."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets


class UrlSigner:
    """Signs result URLs like OSS does (``Expires``, ``OSSAccessKeyId``, ``Signature``), with a random secret."""

    def __init__(self) -> None:
        self._secret = secrets.token_bytes(32)

    def _signature(self, task_id: str, expires: str) -> str:
        digest = hmac.new(self._secret, f"{task_id}\n{expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def url(self, base_url: str, task_id: str, expires: int) -> str:
        """``{base_url}/results/{task_id}.mp4?Expires=..&OSSAccessKeyId=emulator&Signature=..``."""
        query = f"Expires={expires}&OSSAccessKeyId=emulator&Signature={self._signature(task_id, str(expires))}"
        return f"{base_url}/results/{task_id}.mp4?{query}"

    def verify(self, task_id: str, expires: str, signature: str | None) -> bool:
        """Whether ``signature`` is the one this signer made for ``task_id`` and ``expires``."""
        return bool(signature) and hmac.compare_digest(self._signature(task_id, expires), signature or "")
