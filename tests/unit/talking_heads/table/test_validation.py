"""Row validation: every rule rejects with a message naming the row and the field."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from talking_heads.table.validation import validate_frame, validate_records, video_ratio_of

GOOD_EMO = {
    "row_id": "r1",
    "model": "emo-v1",
    "image_url": "http://media/p.png",
    "audio_url": "https://media/v.mp3",
    "face_bbox": "[302, 286, 610, 593]",
    "ext_bbox": "[71, 9, 840, 778]",
    "style_level": "normal",
}
GOOD_EMOJI = {
    "row_id": "r2",
    "model": "emoji-v1",
    "image_url": "http://media/p.png",
    "driven_id": "mengwa_kaixin",
    "face_bbox": [212, 194, 460, 441],
    "ext_bbox": [63, 30, 609, 575],
}


def test_reference_examples_are_valid() -> None:
    valid, rejected = validate_records([GOOD_EMO, GOOD_EMOJI])
    assert rejected == []
    assert [r.row_id for _, r in valid] == ["r1", "r2"]
    emo = valid[0][1]
    assert emo.api_input() == {
        "image_url": "http://media/p.png",
        "face_bbox": [302, 286, 610, 593],
        "ext_bbox": [71, 9, 840, 778],
        "audio_url": "https://media/v.mp3",
    }
    assert emo.api_parameters() == {"style_level": "normal"}
    assert valid[1][1].api_input()["driven_id"] == "mengwa_kaixin"
    assert valid[1][1].api_parameters() is None


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        ({"row_id": None}, "row_id", "is required"),
        ({"row_id": "a/b"}, "row_id", "letters, digits"),
        ({"model": "emo-v2"}, "model", "unknown model"),
        ({"image_url": "portrait.png"}, "image_url", "absolute local path"),
        ({"image_url": "//host/p.png"}, "image_url", "absolute local path"),
        ({"audio_url": "ftp://x/a.mp3"}, "audio_url", "cannot presign"),
        ({"face_bbox": None}, "face_bbox", "give both face_bbox and ext_bbox, or neither"),
        ({"ext_bbox": None}, "ext_bbox", "give both face_bbox and ext_bbox, or neither"),
        ({"ratio": "3:4"}, "ratio", "3:4 disagrees with ext_bbox, which is 1:1"),
        ({"ratio": "16:9"}, "ratio", "must be 1:1 or 3:4"),
        ({"audio_url": None}, "audio_url", "required for emo-v1"),
        ({"face_bbox": "[1, 2, 3]"}, "face_bbox", "four integers"),
        ({"face_bbox": "not json"}, "face_bbox", "JSON list"),
        ({"face_bbox": "[1.5, 2, 3, 4]"}, "face_bbox", "four integers"),
        ({"face_bbox": "[610, 286, 302, 593]"}, "face_bbox", "x1 < x2"),
        ({"ext_bbox": "[-1, 9, 840, 778]"}, "ext_bbox", "negative"),
        ({"face_bbox": "[0, 0, 100, 100]"}, "face_bbox", "inside ext_bbox"),
        ({"ext_bbox": "[71, 9, 840, 600]"}, "ext_bbox", "1:1 or 3:4"),
        ({"style_level": "wild"}, "style_level", "normal, calm, active"),
        ({"driven_id": "mengwa_kaixin"}, "driven_id", "only used by emoji-v1"),
    ],
)
def test_emo_rules(change: dict, field: str, fragment: str) -> None:
    valid, rejected = validate_records([{**GOOD_EMO, **change}])
    assert valid == []
    (rejection,) = rejected
    assert rejection.message.startswith("row 0")
    assert f"field '{field}'" in rejection.message
    assert fragment in rejection.message


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"driven_id": None}, "driven_id"),
        ({"driven_id": "no_such_template"}, "driven_id"),
        ({"audio_url": "http://media/v.mp3"}, "audio_url/style_level"),
    ],
)
def test_emoji_rules(change: dict, field: str) -> None:
    _, (rejection,) = validate_records([{**GOOD_EMOJI, **change}])
    assert f"field '{field}'" in rejection.message
    assert "row_id 'r2'" in rejection.message


def test_duplicate_ids_reject_every_copy_and_other_rows_go_on() -> None:
    rows = [{**GOOD_EMO, "row_id": "dup"}, {**GOOD_EMO, "row_id": "dup"}, GOOD_EMOJI]
    valid, rejected = validate_records(rows)
    assert [r.row_id for _, r in valid] == ["r2"]
    assert [r.index for r in rejected] == [0, 1]
    assert all("duplicated" in r.message for r in rejected)


def test_ratio_follows_ext_bbox() -> None:
    assert video_ratio_of([0, 0, 600, 600]) == "1:1"
    assert video_ratio_of([0, 0, 600, 800]) == "3:4"
    assert video_ratio_of([0, 0, 601, 800]) == "3:4"  # detector rounding
    assert video_ratio_of([0, 0, 800, 600]) is None


def test_frame_without_required_column_names_it() -> None:
    frame = pd.DataFrame([{k: v for k, v in GOOD_EMO.items() if k != "image_url"}])
    with pytest.raises(ValueError, match="image_url"):
        validate_frame(frame)


def test_rows_without_boxes_are_detected_at_their_ratio() -> None:
    no_boxes = {k: v for k, v in GOOD_EMO.items() if k not in ("face_bbox", "ext_bbox")}
    emoji = {k: v for k, v in GOOD_EMOJI.items() if k not in ("face_bbox", "ext_bbox")}
    valid, rejected = validate_records([no_boxes, {**no_boxes, "row_id": "half", "ratio": "3:4"}, emoji])
    assert rejected == []
    (_, square), (_, half), (_, face) = valid
    assert (square.needs_detection, square.detect_ratio, square.expected_ratio) == (True, "1:1", "1:1")
    assert (half.detect_ratio, half.expected_ratio) == ("3:4", "3:4")
    assert (face.detect_ratio, face.expected_ratio) == ("1:1", "standard")
    assert square.fingerprint() != half.fingerprint()  # another ratio is another detection and video
    _, (rejection,) = validate_records([{**emoji, "ratio": "3:4"}])
    assert "field 'ratio'" in rejection.message and "emoji-v1 takes 1:1" in rejection.message


def test_media_may_be_store_urls_or_absolute_local_paths() -> None:
    rows = [
        {**GOOD_EMO, "row_id": "s3", "image_url": "s3://bucket/portraits/p.png", "audio_url": "oss://b/v.wav"},
        {**GOOD_EMO, "row_id": "local", "image_url": "/data/portraits/p.png", "audio_url": "file:///data/v.wav"},
    ]
    valid, rejected = validate_records(rows)
    assert rejected == []
    assert valid[0][1].media == {"image_url": "s3://bucket/portraits/p.png", "audio_url": "oss://b/v.wav"}
    signed = {"image_url": "https://b.s3/p.png?X-Amz-Signature=x"}
    assert valid[0][1].api_input(urls=signed)["image_url"] == signed["image_url"]
    assert valid[0][1].api_input(urls=signed)["audio_url"] == "oss://b/v.wav"


def test_parquet_lists_and_numeric_ids_are_accepted() -> None:
    frame = pd.DataFrame(
        [
            {
                **GOOD_EMO,
                "row_id": 7,
                "face_bbox": json.loads(GOOD_EMO["face_bbox"]),
                "ext_bbox": json.loads(GOOD_EMO["ext_bbox"]),
            }
        ]
    )
    valid, rejected = validate_frame(frame)
    assert rejected == []
    assert valid[0][1].row_id == "7"
