"""moto's S3 server with S3's atomic conditional writes.

moto (5.x) answers a ``PUT`` with ``If-None-Match: *`` by looking the key up and then storing the object,
with nothing between the two: under load two racing conditional PUTs of one new key can both succeed, and
two racing PUTs of one key can even fail with a 500 (one closes the other's buffer). Real S3 and MinIO let
exactly one conditional PUT win. The ledger's ``create_exclusively`` and the account's submit lease rely on
that, so a test on plain moto could see two holders of one lease that S3 itself would never allow.

:func:`make_puts_atomic` serializes moto's PUT handler, which makes the check and the store one step. It is
applied to the in-process server (``tests.conftest.moto_s3``) and, run as a script (``python
moto_atomic.py -H 127.0.0.1 -p PORT``), to the separate-process server of the test clusters.
"""

from __future__ import annotations

import functools
import sys
import threading
from typing import Any

_PUT_LOCK = threading.Lock()


def make_puts_atomic() -> None:
    """Serialize moto's S3 object PUTs (idempotent: a second call leaves the one wrapper in place)."""
    from moto.s3.responses import S3Response

    put_object = S3Response.put_object
    if getattr(put_object, "atomic", False):
        return

    @functools.wraps(put_object)
    def atomic_put_object(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _PUT_LOCK:
            return put_object(self, *args, **kwargs)

    atomic_put_object.atomic = True  # type: ignore[attr-defined]
    S3Response.put_object = atomic_put_object  # type: ignore[method-assign]


if __name__ == "__main__":
    from moto.server import main

    make_puts_atomic()
    main(sys.argv[1:])
