"""Face detection of a row's image, paid once per image and ratio (see :func:`detect_image`).

The submit step (:func:`talking_heads.row.submit.submit_row`) calls it for a row without boxes, and
decides what the answer means for the row; this module only finds or makes the detection's record.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dashscope_provider.models import DETECT_MODELS

from talking_heads.row.media import MediaSigner, redact

if TYPE_CHECKING:
    import logging

    from dashscope_provider.hooks.dashscope import DashScopeHook
    from dashscope_provider.models import FaceDetection

    from talking_heads.row.ledger import RowLedger
    from talking_heads.row.states import RowRecord
    from talking_heads.table.validation import RowRequest

#: How long a row waits for another row's detection of the same image (a synchronous call, paced at 1/s
#: per account at worst) before it detects itself, taking the claim's owner for gone.
CLAIM_WAIT_SECONDS = 300.0


#: What a row's record keeps of the detection that gave it its boxes (who paid for it, and whether it passed).
SUMMARY_FIELDS = ("key", "model", "ratio", "passed", "run_id", "row_id")


@dataclass(frozen=True)
class DetectionRecord:
    """One answered face detection, as kept under ``state/detections/{key}.json`` (paid once, reused).

    :param key: model, ratio and image, hashed: the record's name.
    :param image: the image as given (signatures redacted), or a local file's content hash.
    :param row_id: the row that paid for it, in run ``run_id``.
    """

    key: str
    model: str
    ratio: str
    image: str
    passed: bool
    face_bbox: list[int] | None
    ext_bbox: list[int] | None
    code: str | None
    message: str | None
    request_id: str | None
    row_id: str
    run_id: str
    detected_at: str

    @classmethod
    def answered(
        cls, key: str, image: str, request: RowRequest, run_id: str, model: str, ratio: str, found: FaceDetection
    ) -> DetectionRecord:
        """The record of the service's answer ``found`` for ``request``'s image."""
        return cls(
            key=key,
            model=model,
            ratio=ratio,
            image=redact(image),
            passed=found.passed,
            face_bbox=None if found.face_bbox is None else list(found.face_bbox),
            ext_bbox=None if found.ext_bbox is None else list(found.ext_bbox),
            code=found.code,
            message=redact(found.message or "") or None,
            request_id=found.request_id,
            row_id=request.row_id,
            run_id=run_id,
            detected_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
        )

    def summary(self) -> dict[str, Any]:
        """What the row's ledger record keeps of it (:data:`SUMMARY_FIELDS`)."""
        return {name: getattr(self, name) for name in SUMMARY_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DetectionRecord:
        return cls(**{name: data.get(name) for name in cls.__dataclass_fields__})  # type: ignore[arg-type]


def _recorded(ledger: RowLedger, key: str) -> DetectionRecord | None:
    data = ledger.get_detection(key)
    return None if data is None else DetectionRecord.from_dict(data)


def _await_detection(ledger: RowLedger, key: str, timeout: float = CLAIM_WAIT_SECONDS) -> DetectionRecord | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (recorded := _recorded(ledger, key)) is not None:
            return recorded
        time.sleep(1.0)
    return None


def detect_image(
    ledger: RowLedger,
    request: RowRequest,
    *,
    hook: DashScopeHook,
    signer: MediaSigner,
    run_id: str,
    log: logging.Logger,
) -> DetectionRecord:
    """The face detection of the row's image at its ratio: recorded, or called once and recorded at once.

    An answered detection is billed whether or not it passes, so its record is keyed by model, ratio and
    image (the URL as given, or a local file's content), not by row: a retry, rerun, clear, backfill or
    another row with the same image and ratio reuses it instead of paying again.
    """
    model, ratio = DETECT_MODELS[request.model], request.detect_ratio
    image = signer.identity(request.image_url)
    key = hashlib.sha256(f"{model}|{ratio}|{image}".encode()).hexdigest()[:32]
    if (recorded := _recorded(ledger, key)) is not None:
        log.info("Row %s: %s at %s already detected (paid by row %s)", request.row_id, model, ratio, recorded.row_id)
        return recorded
    if not ledger.claim_detection(key, f"{run_id}/{request.row_id}"):
        # Another row with this image and ratio is detecting it now: its answer serves this row too.
        if (recorded := _await_detection(ledger, key)) is not None:
            log.info("Row %s: %s at %s detected by row %s", request.row_id, model, ratio, recorded.row_id)
            return recorded
        log.warning(
            "Row %s: the claim on %s at %s was not followed by an answer; detecting", request.row_id, model, ratio
        )
    try:
        detected = hook.detect_face(model, signer.url_for(request.image_url), ratio=ratio)
    except BaseException:
        ledger.release_detection(key)  # no answer, no bill: another row may detect it
        raise
    record = DetectionRecord.answered(key, image, request, run_id, model, ratio, detected)
    log.info("Row %s: %s at %s %s", request.row_id, model, ratio, "passed" if detected.passed else detected.code)
    ledger.put_detection(key, record.to_dict())
    return record


def detection_usage(state: RowRecord, run_id: str) -> dict[str, Any]:
    """The row's detection in the outcome: its model, and the image billed to this row in this run (0 when
    the detection was paid earlier, or by another row with the same image and ratio)."""
    if not state.detection:
        return {}
    paid_here = state.detection.get("run_id") == run_id and state.detection.get("row_id") == state.row_id
    return {"detection_model": state.detection.get("model"), "detection_images": int(paid_here)}
