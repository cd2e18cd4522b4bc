"""Row validation against the DashScope reference, before any money is spent.

Each input row becomes either a :class:`RowRequest` (valid, ready to submit) or a rejection message
that names the row and the field. Invalid rows never reach the service; the valid rows go on.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

# The model facts are the provider's: the detection ratios by video model (emo-detect-v1 takes both, which
# set emo-v1's output size and price; emoji only 1:1) and the emoji-v1 template ids of the reference.
from dashscope_provider.models import EMOJI_DRIVEN_IDS, MODELS, STYLE_LEVELS
from dashscope_provider.models import MODEL_DETECT_RATIOS as DETECT_RATIOS
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

#: Columns the pipeline reads; any other column is carried through to the outcome table untouched.
KNOWN_COLUMNS = (
    "row_id",
    "model",
    "image_url",
    "audio_url",
    "face_bbox",
    "ext_bbox",
    "ratio",
    "style_level",
    "driven_id",
)
#: ``row_id`` names files (``videos/{row_id}.mp4``), so it must be a safe file name.
ROW_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: Integer bboxes rarely hit an aspect ratio exactly; the service accepts detector output.
RATIO_TOLERANCE = 0.02
#: No box can reach past the largest image the service takes (7000 px a side).
MAX_COORDINATE = 7000
#: Columns every table must have (a table without one is refused as a whole).
REQUIRED_COLUMNS = ("row_id", "model", "image_url")

if TYPE_CHECKING:
    import pandas as pd


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def media_location_problem(text: str) -> str | None:
    """Why ``text`` cannot locate a row's media, or None: an http(s) URL, a store URL whose filesystem can
    sign URLs (``s3://``, ``oss://``, ``gs://``, ...), or an absolute local path (``/...``, ``file://``)."""
    if re.match(r"^https?://[^\s/]+", text, re.IGNORECASE):
        return None
    if re.match(r"^(/[^/]|file:///[^/])", text):
        return None
    scheme = re.match(r"^([a-z][a-z0-9+.-]*)://[^\s/]+/\S", text)
    if scheme is None:
        return (
            f"must be an http(s) URL, a store URL (s3://, oss://, gs://, ...) or an absolute local path, "
            f"got {text[:80]!r}"
        )
    return signing_problem(scheme.group(1))


def signing_problem(protocol: str) -> str | None:
    """Why URLs of the store ``protocol`` cannot be presigned for the service, or None."""
    import fsspec
    from fsspec import AbstractFileSystem

    if protocol in ("http", "https", "file", "local"):
        return None
    try:
        implementation = fsspec.get_filesystem_class(protocol)
    except (ValueError, ImportError) as error:
        return f"the {protocol}:// store is not available here ({error})"
    if implementation.sign is AbstractFileSystem.sign:
        return f"the {protocol}:// store cannot presign URLs, which the service needs to fetch the file"
    return None


def video_ratio_of(ext_bbox: list[int]) -> str | None:
    """The emo-v1 output ratio that ``ext_bbox`` selects (``1:1`` or ``3:4``), or None."""
    x1, y1, x2, y2 = ext_bbox
    aspect = (x2 - x1) / (y2 - y1)
    for name, target in (("1:1", 1.0), ("3:4", 0.75)):
        if abs(aspect - target) <= RATIO_TOLERANCE * target:
            return name
    return None


class RowRequest(BaseModel):
    """One valid input row, normalised: what is sent to the service for it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    row_id: str
    model: Literal["emo-v1", "emoji-v1"]
    image_url: str
    face_bbox: list[int] | None = Field(default=None, min_length=4, max_length=4)
    ext_bbox: list[int] | None = Field(default=None, min_length=4, max_length=4)
    ratio: Literal["1:1", "3:4"] | None = None
    audio_url: str | None = None
    style_level: Literal["normal", "calm", "active"] | None = None
    driven_id: str | None = None

    @field_validator("row_id", mode="before")
    @classmethod
    def _row_id(cls, value: Any) -> str:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        text = str(value).strip()
        if not ROW_ID_PATTERN.match(text):
            raise ValueError(
                "must be 1-128 characters of letters, digits, '.', '_' or '-', starting with a letter "
                "or digit (it names the video file)"
            )
        return text

    @field_validator("model", mode="before")
    @classmethod
    def _model(cls, value: Any) -> Any:
        if value not in MODELS:
            raise ValueError(f"unknown model {value!r}; expected one of {', '.join(MODELS)}")
        return value

    @field_validator("image_url", "audio_url", mode="before")
    @classmethod
    def _url(cls, value: Any) -> Any:
        if value is None:
            return None
        text = str(value).strip()
        problem = media_location_problem(text)
        if problem:
            raise ValueError(problem)
        return text

    @field_validator("face_bbox", "ext_bbox", mode="before")
    @classmethod
    def _bbox(cls, value: Any) -> list[int] | None:
        if value is None:
            return None
        if isinstance(value, str):
            # Four coordinates never need more text; a bound also keeps hostile input out of the parser.
            if len(value) > 100:
                raise ValueError(f"must be a JSON list [x1, y1, x2, y2], got {len(value)} characters")
            try:
                value = json.loads(value)
            except (json.JSONDecodeError, RecursionError):
                raise ValueError(f"must be a JSON list [x1, y1, x2, y2], got {value[:80]!r}") from None
        if hasattr(value, "tolist"):
            value = value.tolist()
        if not isinstance(value, list | tuple) or len(value) != 4:
            raise ValueError("must be four integers [x1, y1, x2, y2]")
        coords = []
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int | float):
                raise ValueError(f"must be four integers [x1, y1, x2, y2], got {list(value)!r}"[:160])
            if abs(item) > MAX_COORDINATE:
                raise ValueError(f"coordinates must be at most {MAX_COORDINATE} (the largest image side)")
            if not float(item).is_integer():
                raise ValueError(f"must be four integers [x1, y1, x2, y2], got {list(value)!r}"[:160])
            coords.append(int(item))
        x1, y1, x2, y2 = coords
        if min(coords) < 0:
            raise ValueError(f"coordinates must not be negative, got {coords}")
        if not (x1 < x2 and y1 < y2):
            raise ValueError(f"needs x1 < x2 and y1 < y2, got {coords}")
        return coords

    @field_validator("ratio", mode="before")
    @classmethod
    def _ratio(cls, value: Any) -> Any:
        if value is not None and value not in ("1:1", "3:4"):
            raise ValueError(f"must be 1:1 or 3:4, got {str(value)[:20]!r}")
        return value

    @field_validator("style_level", mode="before")
    @classmethod
    def _style(cls, value: Any) -> Any:
        if value is not None and value not in STYLE_LEVELS:
            raise ValueError(f"must be one of {', '.join(STYLE_LEVELS)}, got {value!r}")
        return value

    @model_validator(mode="after")
    def _per_model(self) -> RowRequest:
        if (self.face_bbox is None) != (self.ext_bbox is None):
            missing = "face_bbox" if self.face_bbox is None else "ext_bbox"
            raise ValueError(f"{missing}: give both face_bbox and ext_bbox, or neither (then the image is detected)")
        if self.ratio is not None and self.ratio not in DETECT_RATIOS[self.model]:
            raise ValueError(f"ratio: {self.model} takes {' or '.join(DETECT_RATIOS[self.model])}")
        if self.face_bbox is not None and self.ext_bbox is not None:
            fx1, fy1, fx2, fy2 = self.face_bbox
            ex1, ey1, ex2, ey2 = self.ext_bbox
            if not (ex1 <= fx1 and ey1 <= fy1 and fx2 <= ex2 and fy2 <= ey2):
                raise ValueError("face_bbox: the face box must lie inside ext_bbox (the dynamic area)")
            if self.model == "emo-v1" and video_ratio_of(self.ext_bbox) is None:
                raise ValueError(
                    "ext_bbox: its aspect ratio must be 1:1 or 3:4 for emo-v1 (it decides the output "
                    f"size and the price), got {ex2 - ex1}x{ey2 - ey1}"
                )
            if self.model == "emo-v1" and self.ratio is not None and video_ratio_of(self.ext_bbox) != self.ratio:
                raise ValueError(
                    f"ratio: {self.ratio} disagrees with ext_bbox, which is {video_ratio_of(self.ext_bbox)}"
                )
        if self.model == "emo-v1":
            if self.audio_url is None:
                raise ValueError("audio_url: required for emo-v1 (a WAV/MP3 voice clip URL)")
            if self.driven_id is not None:
                raise ValueError("driven_id: only used by emoji-v1; leave it empty for emo-v1")
        else:
            if self.driven_id is None:
                raise ValueError("driven_id: required for emoji-v1 (a template id from the reference)")
            if self.driven_id not in EMOJI_DRIVEN_IDS:
                raise ValueError(f"driven_id: unknown emoji-v1 template {self.driven_id!r}")
            if self.audio_url is not None or self.style_level is not None:
                raise ValueError("audio_url/style_level: only used by emo-v1; leave them empty for emoji-v1")
        return self

    @property
    def needs_detection(self) -> bool:
        """No boxes were given: the image is detected (billed once per image and ratio) before submitting."""
        return self.ext_bbox is None

    @property
    def detect_ratio(self) -> str:
        """The ratio to detect (and so, for emo-v1, the output ratio): the row's ``ratio``, else 1:1."""
        return self.ratio or "1:1"

    @property
    def expected_ratio(self) -> str | None:
        if self.model != "emo-v1":
            return "standard"
        return video_ratio_of(self.ext_bbox) if self.ext_bbox is not None else self.detect_ratio

    @property
    def media(self) -> dict[str, str]:
        """The row's media by field (``image_url``, and ``audio_url`` for emo-v1), as given in the table."""
        return {k: v for k, v in (("image_url", self.image_url), ("audio_url", self.audio_url)) if v}

    def api_input(
        self,
        *,
        boxes: tuple[list[int], list[int]] | None = None,
        urls: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """The ``input`` object of the submit body.

        :param boxes: ``(face_bbox, ext_bbox)`` from detection, for a row that gave none.
        :param urls: the media URLs to send (presigned, for store URLs and local files), by field.
        """
        face_bbox, ext_bbox = boxes or (self.face_bbox, self.ext_bbox)
        urls = urls or {}
        body: dict[str, Any] = {
            "image_url": urls.get("image_url", self.image_url),
            "face_bbox": face_bbox,
            "ext_bbox": ext_bbox,
        }
        if self.model == "emo-v1":
            body["audio_url"] = urls.get("audio_url", self.audio_url)
        else:
            body["driven_id"] = self.driven_id
        return body

    def api_parameters(self) -> dict[str, Any] | None:
        """The ``parameters`` object of the submit body, if any."""
        if self.model == "emo-v1" and self.style_level:
            return {"style_level": self.style_level}
        return None

    def fingerprint(self) -> str:
        """A stable hash of what would be sent, to notice a row whose content changed under its id."""
        body = {
            "model": self.model,
            "input": self.api_input(),
            "parameters": self.api_parameters() or {},
            "ratio": self.detect_ratio if self.needs_detection else None,
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Rejection:
    """An input row that failed validation: its position, id (if readable) and what is wrong."""

    index: int
    row_id: str | None
    message: str


def _describe(index: int, row_id: Any) -> str:
    shown = "" if _is_missing(row_id) else f" (row_id {str(row_id)[:64]!r})"
    return f"row {index}{shown}"


def _format_errors(index: int, row_id: Any, error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"] if not isinstance(p, int))
        msg = item["msg"].removeprefix("Value error, ")
        if not field and ":" in msg:
            field, _, msg = msg.partition(": ")
        if item["type"] == "missing":
            msg = "is required"
        elif item["type"] == "literal_error" and field == "model":
            msg = f"unknown model; expected one of {', '.join(MODELS)}"
        parts.append(f"field '{field}': {msg}" if field else msg)
    return f"{_describe(index, row_id)}: " + "; ".join(parts)


def validate_records(records: Iterable[dict[str, Any]]) -> tuple[list[tuple[int, RowRequest]], list[Rejection]]:
    """Split rows (as dicts, in table order) into valid requests and rejections.

    ``row_id`` must also be unique in the table: every copy of a duplicated id is rejected, since
    which one the user meant cannot be known.
    """
    rows = list(records)
    counts = Counter(str(r.get("row_id")).strip() for r in rows if not _is_missing(r.get("row_id")))
    valid: list[tuple[int, RowRequest]] = []
    rejected: list[Rejection] = []
    for index, record in enumerate(rows):
        row_id = record.get("row_id")
        fields = {k: record.get(k) for k in KNOWN_COLUMNS if not _is_missing(record.get(k))}
        if "row_id" not in fields:
            rejected.append(Rejection(index, None, f"{_describe(index, None)}: field 'row_id': is required"))
            continue
        if counts[str(row_id).strip()] > 1:
            rejected.append(
                Rejection(
                    index,
                    str(row_id).strip(),
                    f"{_describe(index, row_id)}: field 'row_id': duplicated in the table "
                    f"({counts[str(row_id).strip()]} rows); row ids must be unique",
                )
            )
            continue
        try:
            valid.append((index, RowRequest(**fields)))
        except ValidationError as error:
            rejected.append(Rejection(index, str(row_id).strip(), _format_errors(index, row_id, error)))
    return valid, rejected


def validate_frame(frame: pd.DataFrame) -> tuple[list[tuple[int, RowRequest]], list[Rejection]]:
    """Validate a whole input table; see :func:`validate_records`."""
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"input table: required column(s) missing: {', '.join(missing)}")
    return validate_records(frame.to_dict(orient="records"))
