"""The download step: a generated row's video is stored under ``videos/`` (:func:`store_row`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dashscope_provider.compat import AirflowFailException
from dashscope_provider.exceptions import DashScopeResultExpired

from talking_heads.row.payloads import WaitResult
from talking_heads.row.states import OutcomeCode, RowRecord, RowStatus

if TYPE_CHECKING:
    import logging

    from talking_heads.row.ledger import RowLedger


def store_row(
    ledger: RowLedger,
    result: WaitResult,
    *,
    run_id: str,
    transfer: Callable[[str, Any], dict[str, Any]],
    log: logging.Logger,
) -> dict[str, Any]:
    """Copy a generated row's video to ``videos/{row_id}.mp4`` (``transfer(video_url, destination)``).

    The video URL is read from the ledger, never from XCom: it is a signed URL. A failed copy leaves the
    row ``generated`` (a later try or rerun stores it without generating it again); an expired URL ends
    it ``failed`` with :attr:`OutcomeCode.RESULT_EXPIRED`.
    """
    row_id = result.row_id
    state = ledger.get(row_id)
    if state is not None and state.status == RowStatus.SUCCEEDED:
        log.info("Row %s already stored at %s", row_id, state.video_uri)
        return {"uri": state.video_uri, "size_bytes": state.video_bytes, "sha256": state.video_sha256}
    if state is None or state.status != RowStatus.GENERATED or not state.video_url or state.task_id != result.task_id:
        found = "no record" if state is None else f"{state.status}, task {state.task_id}"
        raise AirflowFailException(
            f"row {row_id}: no generated video of task {result.task_id} is recorded to store ({found})"
        )

    def still_generated(cur: RowRecord | None) -> bool:  # not stored by an overlapping run meanwhile
        return cur is not None and cur.status == RowStatus.GENERATED and cur.task_id == result.task_id

    try:
        stored = transfer(state.video_url, ledger.layout.video(row_id))
    except DashScopeResultExpired as error:
        expired = dict(code=OutcomeCode.RESULT_EXPIRED, message=str(error))
        ledger.update(row_id, lambda cur: cur.advance(RowStatus.FAILED, **expired) if still_generated(cur) else None)
        raise AirflowFailException(f"row {row_id}: {error}") from None
    except Exception as error:
        # Still "generated": said in the outcome if no try succeeds; nothing partial is left behind.
        not_stored = dict(code=OutcomeCode.STORE_FAILED, message=f"{type(error).__name__}: {error}")
        ledger.update(
            row_id, lambda cur: cur.advance(RowStatus.GENERATED, **not_stored) if still_generated(cur) else None
        )
        raise
    video = dict(video_uri=stored["uri"], video_bytes=stored["size_bytes"], video_sha256=stored["sha256"])
    done = dict(run_id=run_id, code=None, message=None, **video)
    ledger.update(row_id, lambda cur: cur.advance(RowStatus.SUCCEEDED, **done) if still_generated(cur) else None)
    return stored
