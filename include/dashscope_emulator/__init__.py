"""A local emulator of Alibaba Cloud DashScope's talking-head video API (``emo-v1``, ``emoji-v1``) and its
face-detect call (``emo-detect-v1``, ``emoji-detect-v1``).

Use it where the real service can't be reached (tests, demos, CI)::

    from dashscope_emulator import EmulatorServer, make_samples, serve_directory

    with EmulatorServer(api_keys=["sk-test"], speed=1000) as emu:
        ...  # point a DashScope client at emu.base_url

    # Two keys of one Alibaba Cloud account: they share its rate limits and its one running task.
    EmulatorServer(accounts={"acct": ["sk-a", "sk-b"]})
    # A free-only account: 3 submits, then 429 Throttling.AllocationQuota "Free allocated quota exceeded."
    EmulatorServer(accounts={"acct": ["sk-a", "sk-b"]}, free_quota={"acct": 3})

See :mod:`dashscope_emulator.server` for what is emulated and which module does what, and
``python -m dashscope_emulator --help`` for the command line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dashscope_emulator.contract import DEFAULT_API_KEY, EMOJI_TEMPLATES, emoji_template_seconds, key_fingerprint
from dashscope_emulator.fileserver import serve_directory
from dashscope_emulator.server import EmulatorServer
from dashscope_emulator.tasks import run_seconds

if TYPE_CHECKING:
    from dashscope_emulator.samples import make_samples

__all__ = [
    "DEFAULT_API_KEY",
    "EMOJI_TEMPLATES",
    "EmulatorServer",
    "emoji_template_seconds",
    "key_fingerprint",
    "make_samples",
    "run_seconds",
    "serve_directory",
]


def __getattr__(name: str) -> Any:
    # Imported lazily: `python -m dashscope_emulator.samples` would otherwise import the module twice
    # (once through this package, once as __main__), and numpy is only needed for the samples.
    if name == "make_samples":
        from dashscope_emulator.samples import make_samples

        return make_samples
    raise AttributeError(f"module 'dashscope_emulator' has no attribute {name!r}")
