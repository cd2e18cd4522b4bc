"""Malformed input: rows and whole tables that must be refused before any spend, each with a reason.

The bulk goes through the library (``read_input_table``, ``plan_run``, ``validation``): a seeded mix of
well over 100 malformed rows (wrong types, huge numbers, unicode, empty strings, NaN, bad bboxes, unknown
models, missing audio, bad template ids, duplicate ids, non-http URLs, long and path-traversal ids)
with a few valid ones. One ``dag.test()`` run of a mixed table checks the same end to end: valid rows
succeed, every invalid row has exactly one ``failed`` outcome naming the row and the field, and the
emulator never sees an invalid row.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.harness.reliability import Media, count_leaks, row_of, run_dag, submits, write_table

SEED = 20261123
NAN = float("nan")
SQUARE = "[250, 220, 550, 560]", "[100, 100, 700, 700]"  # the square portrait's face/ext boxes (1:1)


@dataclass(frozen=True)
class Case:
    """One malformed row: the changes to a valid row of ``kind``, the field the rejection must name, and
    whether it survives a CSV round trip as the same mistake (text only)."""

    label: str
    kind: str
    changes: dict[str, Any]
    field: str
    csv: bool = True


def _catalogue() -> list[Case]:
    cases: list[Case] = []

    def add(label: str, changes: dict[str, Any], field: str, kind: str = "emo-square", csv: bool = True) -> None:
        cases.append(Case(label, kind, changes, field, csv))

    # row_id: empty, blank, missing, unsafe as a file name, too long, not ASCII, wrong types.
    for i, value in enumerate(
        [
            "",
            "   ",
            "../x",
            "../../etc/passwd",
            "a/b",
            "a\\b",
            "..",
            ".",
            ".hidden",
            "-x",
            "_x",
            "x" * 129,
            "y" * 5000,
            "名前",
            "row😀",
            "a b",
            "tab\tid",
            "x:y",
            "%2e%2e%2f",
            "~root",
            "$(rm -rf ~)",
            "x;y",
            "a*b",
            "\uff52\uff4f\uff57\uff11",
            "é",
            "row\u200bid",
            "/abs",
            "C:\\x",
            "-1",
        ]
    ):
        add(f"row_id#{i}", {"row_id": value}, "row_id")
    add("row_id-none", {"row_id": None}, "row_id", csv=False)
    add("row_id-nan", {"row_id": NAN}, "row_id", csv=False)
    add("row_id-list", {"row_id": ["a"]}, "row_id", csv=False)
    add("row_id-dict", {"row_id": {"a": 1}}, "row_id", csv=False)
    add("row_id-negative", {"row_id": -7}, "row_id", csv=False)
    add("row_id-nul", {"row_id": "nul\x00id"}, "row_id", csv=False)
    # model
    for i, value in enumerate(
        [
            "",
            "emo-v2",
            "EMO-V1",
            "emo-v1 ",
            " emoji-v1",
            "wanx-v1",
            "emo\u2010v1",
            "NaN",
            "null",
            "emo-v1;drop table",
            "42",
        ]
    ):
        add(f"model#{i}", {"model": value}, "model")
    for i, value in enumerate([None, NAN, 42, 3.14, ["emo-v1"], {"m": 1}, True]):
        add(f"model-type#{i}", {"model": value}, "model", csv=False)
    # image_url: missing, not http(s), not a URL.
    for i, value in enumerate(
        [
            "",
            "ftp://h/x.png",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "//h/x.png",
            "portrait.png",
            "http://",
            "http:// x",
            "s3://",
            "oss:///x.png",
            "s3://bucket-only",
            "data:image/png;base64,AAAA",
            "http:/h/x.png",
            "httpx://h",
            "\uff48\uff54\uff54\uff50://h/x.png",
            "12345",
            "mailto:a@b.c",
        ]
    ):
        add(f"image_url#{i}", {"image_url": value}, "image_url")
    add("image_url-int", {"image_url": 12345}, "image_url", csv=False)
    add("image_url-none", {"image_url": None}, "image_url", csv=False)
    # audio_url: required for emo-v1, http(s) only, not for emoji-v1.
    for i, value in enumerate(["", "ftp://h/a.wav", "file:///a.wav", "voice.wav"]):
        add(f"audio_url#{i}", {"audio_url": value}, "audio_url")
    add("audio_url-none", {"audio_url": None}, "audio_url", csv=False)
    add("audio_url-nan", {"audio_url": NAN}, "audio_url", csv=False)
    add("audio_url-int", {"audio_url": 7}, "audio_url", csv=False)
    add("audio_url-emoji", {"audio_url": "http://h/a.wav"}, "audio_url/style_level", kind="emoji")
    # face_bbox / ext_bbox: wrong length, not JSON, not integers, negative, inverted, empty, nested, NaN.
    bad_boxes = [
        "[1, 2, 3]",
        "[1, 2, 3, 4, 5]",
        "[]",
        "not json",
        "[1.5, 2, 3, 4]",
        "[-1, 220, 550, 560]",
        "[550, 560, 250, 220]",
        "[5, 5, 5, 5]",
        "[true, 0, 1, 1]",
        '["1", "2", "3", "4"]',
        '{"x": 1}',
        "[NaN, 0, 1, 1]",
        "[Infinity, 0, 10, 10]",
        "[1e400, 0, 10, 10]",
        "null",
        "[[1, 2], [3, 4]]",
        "NaN",
        "[0, 0, 10, 10",
        "[" + "9" * 5000 + ", 0, 1, 1]",
        "(1, 2, 3, 4)",
        "1,2,3,4",
    ]
    for i, value in enumerate(bad_boxes):
        add(f"face_bbox#{i}", {"face_bbox": value}, "face_bbox")
    for i, value in enumerate(bad_boxes[:8]):
        add(f"ext_bbox#{i}", {"ext_bbox": value}, "ext_bbox")
    add("face_bbox-none", {"face_bbox": None}, "face_bbox", csv=False)
    add("face_bbox-float", {"face_bbox": 4.0}, "face_bbox", csv=False)
    add("face_bbox-tuple5", {"face_bbox": (1, 2, 3, 4, 5)}, "face_bbox", csv=False)
    add("face_bbox-nan-list", {"face_bbox": [NAN, 1, 2, 3]}, "face_bbox", csv=False)
    add("face_bbox-bools", {"face_bbox": [True, False, True, True]}, "face_bbox", csv=False)
    add("face-outside-ext", {"face_bbox": "[0, 0, 50, 50]"}, "face_bbox")
    add("ext-ratio", {"ext_bbox": "[100, 100, 700, 600]"}, "ext_bbox")  # 6:5 is neither 1:1 nor 3:4
    add("ext-ratio-16:9", {"ext_bbox": "[0, 0, 1600, 900]", "face_bbox": "[10, 10, 20, 20]"}, "ext_bbox")
    # style_level
    for i, value in enumerate(["loud", "CALM", "normal ", "3"]):
        add(f"style_level#{i}", {"style_level": value}, "style_level")
    add("style_level-list", {"style_level": ["calm"]}, "style_level", csv=False)
    add("style_level-emoji", {"style_level": "calm"}, "audio_url/style_level", kind="emoji")
    # driven_id: required for emoji-v1, a known template, not for emo-v1.
    for i, value in enumerate(["", "unknown_tpl", "MENGWA_KAIXIN", "mengwa_kaixin ", "mengwa_kaixin;x", "7"]):
        add(f"driven_id#{i}", {"driven_id": value}, "driven_id", kind="emoji")
    add("driven_id-int", {"driven_id": 7}, "driven_id", kind="emoji", csv=False)
    add("driven_id-emo", {"driven_id": "mengwa_kaixin"}, "driven_id")
    return cases


def _random_cases(rnd: random.Random, count: int) -> list[Case]:
    """Seeded random malformed rows on top of the catalogue: ids with an unsafe character inside, boxes of
    random wrong lengths, negative or inverted boxes."""
    unsafe = "/\\ :;*?\"'<>|\t%~$&()[]{}!@#^=+,`名字😀é\u200b"
    safe = "abcXYZ019._-"
    cases = []
    for i in range(count):
        pick = rnd.randrange(3)
        if pick == 0:
            head = rnd.choice("abcXYZ019")
            body = "".join(rnd.choice(safe) for _ in range(rnd.randrange(0, 40)))
            text = head + body[: len(body) // 2] + rnd.choice(unsafe) + body[len(body) // 2 :] + rnd.choice("xyz")
            cases.append(Case(f"random-row_id#{i}", rnd.choice(["emo-square", "emoji"]), {"row_id": text}, "row_id"))
        elif pick == 1:
            length = rnd.choice([0, 1, 2, 3, 5, 6, 8])
            box = json.dumps([rnd.randrange(-(10**6), 10**6) for _ in range(length)])
            cases.append(Case(f"random-length#{i}", "emo-square", {"face_bbox": box}, "face_bbox"))
        else:
            x1, y1 = rnd.randrange(0, 5000), rnd.randrange(0, 5000)
            x2, y2 = x1 - rnd.randrange(0, 500), y1 + rnd.randrange(1, 500)  # inverted (or empty) in x
            if rnd.random() < 0.5:
                x1, x2, y1, y2 = -rnd.randrange(1, 10**9), x1 + 10, y1, y2  # negative
            cases.append(Case(f"random-box#{i}", "emoji", {"ext_bbox": json.dumps([x1, y1, x2, y2])}, "ext_bbox"))
    return cases


def _fuzz_rows(media: Media, cases: list[Case], valid: dict[str, str], seed: int) -> tuple[list[dict], list[Any]]:
    """Rows in a seeded shuffled order: each case once, the valid rows, and two pairs of duplicated ids.

    Returns the rows and, per row, its expected field (None for valid rows)."""
    rnd = random.Random(seed)
    items: list[tuple[dict[str, Any], Any]] = []
    for n, case in enumerate(cases):
        row = media.row(f"fz-{n:03d}", case.kind)
        row["image_url"] = f"{row['image_url'].split('?')[0]}?row=bad-{n:03d}"
        items.append(({**row, **case.changes}, case.field))
    for row_id, kind in valid.items():
        items.append((media.row(row_id, kind), None))
    for dup in ("dup-a", "dup-b"):
        for copy in range(2):
            row = media.row(dup, "emoji")
            row["image_url"] = f"{row['image_url'].split('?')[0]}?row=bad-{dup}-{copy}"
            items.append((row, "row_id"))
    rnd.shuffle(items)
    return [r for r, _ in items], [f for _, f in items]


def _missing(value: Any) -> bool:
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or (isinstance(value, str) and not value.strip())
    )


def _check_rejection(index: int, row_id: Any, field: str, outcome: dict[str, Any]) -> None:
    message = outcome.get("message") or ""
    assert outcome.get("status") == "failed", (index, row_id, outcome)
    assert outcome.get("code") == "InvalidInput", (index, row_id, outcome)
    if _missing(row_id):
        assert message.startswith(f"row {index}:"), message
    else:
        assert message.startswith(f"row {index} (row_id {str(row_id)[:64]!r})"), message
    assert f"field '{field}" in message, (field, message)


def _plan(frame: pd.DataFrame, tmp_path: Path) -> list[dict[str, Any]]:
    from talking_heads.row.ledger import RowLedger
    from talking_heads.table.plan import plan_run

    return plan_run(frame, RowLedger(str(tmp_path / "ledger")))


# -- the library, in bulk ---------------------------------------------------------------------------


def test_fuzzed_rows_are_each_refused_naming_row_and_field(media: Media, tmp_path: Path) -> None:
    started = time.monotonic()
    cases = _catalogue() + _random_cases(random.Random(SEED), 60)
    valid = {
        "ok-emo": "emo-square",
        "ok-34": "emo-halfbody",
        "ok-emoji": "emoji",
        "A" * 128: "emo-square",
        "007": "emoji",
        "NaN": "emo-square",
    }
    rows, fields = _fuzz_rows(media, cases, valid, SEED)
    invalid = sum(f is not None for f in fields)
    assert invalid >= 100

    # 1. As Python objects (wrong types included), straight into plan_run.
    entries = _plan(pd.DataFrame(rows), tmp_path)
    assert len(entries) == len(rows)
    for index, (row, field, entry) in enumerate(zip(rows, fields, entries, strict=True)):
        if field is None:
            assert entry.plan == "generate", (row, entry)
            assert entry.row_id == row["row_id"]
        else:
            assert entry.plan == "done", (row, entry)
            _check_rejection(index, row["row_id"], field, entry.outcome)
    assert not (tmp_path / "ledger").exists()  # planning writes nothing

    # 2. The text-only cases through a CSV file and read_input_table, as users hand them in.
    from talking_heads.table.plan import read_input_table

    text_rows, text_fields = _fuzz_rows(media, [c for c in cases if c.csv], valid, SEED + 1)
    table = write_table(tmp_path / "fuzz.csv", text_rows)
    entries_csv = _plan(read_input_table(str(table)), tmp_path)
    assert len(entries_csv) == len(text_rows)
    for index, (row, field, entry) in enumerate(zip(text_rows, text_fields, entries_csv, strict=True)):
        if field is None:
            assert entry.plan == "generate", (row, entry)
        else:
            _check_rejection(index, row["row_id"], field, entry.outcome)
    codes = Counter(str((e.outcome or {}).get("code", "generate")) for e in entries + entries_csv)
    malformed = invalid + sum(f is not None for f in text_fields)
    print(
        f"\nFUZZ-ROWS rows={len(rows) + len(text_rows)} malformed={malformed} "
        f"catalogue={len(_catalogue())} random={len(cases) - len(_catalogue())} valid={2 * len(valid)} "
        f"outcomes_recorded={len(entries) + len(entries_csv)} codes={dict(codes)} crashes=0 "
        f"wall={time.monotonic() - started:.1f}s"
    )


@pytest.mark.parametrize(
    ("face_bbox", "ext_bbox"),
    [
        pytest.param("[0, 0, 10, 10]", "[0, 0, 100000, 100000]", id="coordinates-beyond-any-image"),
        pytest.param("[0, 0, 10, 10]", "[0, 0, 1e300, 1e300]", id="float-1e300"),
        pytest.param("[0, 0, 1, 1]", f"[0, 0, {10**400}, 1]", id="int-too-large-for-float-crashes-plan"),
        pytest.param("[" * 100_000 + "]" * 100_000, SQUARE[1], id="deeply-nested-json-crashes-plan"),
    ],
)
def test_huge_or_absurd_bboxes_are_refused_per_row(face_bbox: str, ext_bbox: str) -> None:
    from talking_heads.table.validation import validate_records

    rows = [
        {
            "row_id": "bad",
            "model": "emo-v1",
            "image_url": "http://h/x.png",
            "audio_url": "http://h/a.wav",
            "face_bbox": face_bbox,
            "ext_bbox": ext_bbox,
        },
        {
            "row_id": "good",
            "model": "emo-v1",
            "image_url": "http://h/x.png",
            "audio_url": "http://h/a.wav",
            "face_bbox": SQUARE[0],
            "ext_bbox": SQUARE[1],
        },
    ]
    valid, rejected = validate_records(rows)
    assert [request.row_id for _, request in valid] == ["good"]
    assert len(rejected) == 1 and "field '" in rejected[0].message and "bbox" in rejected[0].message


# -- whole tables -------------------------------------------------------------------------------------


def _garbage(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _whole_table_cases(folder: Path) -> dict[str, Path]:
    good = pd.DataFrame({"row_id": ["a"], "model": ["emo-v1"], "image_url": ["http://h/x.png"]})
    parquet = folder / "good.parquet"
    good.to_parquet(parquet)
    files = {
        "empty-file.csv": b"",
        "binary-garbage.csv": _garbage(4096, SEED),
        "garbage-with-nul.csv": b"row_id,model\x00\x00\xff\xfe" + _garbage(512, SEED + 1),
        "corrupt.parquet": _garbage(4096, SEED + 2),
        "truncated.parquet": parquet.read_bytes()[: parquet.stat().st_size // 2],
        "csv-named.parquet": b"row_id,model\na,emo-v1\n",
        "unsupported.xlsx": b"PK\x03\x04",
    }
    paths = {}
    for name, data in files.items():
        (folder / name).write_bytes(data)
        paths[name] = folder / name
    (folder / "a-directory.csv").mkdir()
    paths["a-directory.csv"] = folder / "a-directory.csv"
    paths["does-not-exist.csv"] = folder / "does-not-exist.csv"
    paths["missing-dir/t.parquet"] = folder / "missing-dir" / "t.parquet"
    return paths


def test_unusable_tables_raise_input_table_error_naming_the_table(tmp_path: Path) -> None:
    from talking_heads.table.plan import InputTableError, read_input_table

    started = time.monotonic()
    paths = _whole_table_cases(tmp_path)
    for name, path in paths.items():
        with pytest.raises(InputTableError) as caught:
            _plan(read_input_table(str(path)), tmp_path)
        assert str(path) in str(caught.value), (name, str(caught.value))

    # Headers only: not an error, just nothing to do.
    header_only = tmp_path / "header-only.csv"
    header_only.write_text("row_id,model,image_url,audio_url,face_bbox,ext_bbox,style_level,driven_id\n")
    assert _plan(read_input_table(str(header_only)), tmp_path) == []
    # A UTF-8 byte-order mark (as spreadsheet exports write) does not hide the first column.
    bom = tmp_path / "bom.csv"
    bom.write_bytes(
        b"\xef\xbb\xbfrow_id,model,image_url,audio_url,face_bbox,ext_bbox\n"
        b'r1,emo-v1,http://h/x.png,http://h/a.wav,"[250, 220, 550, 560]","[100, 100, 700, 700]"\n'
    )
    assert [e.plan for e in _plan(read_input_table(str(bom)), tmp_path)] == ["generate"]
    print(
        f"\nFUZZ-TABLES tables={len(paths) + 2} refused={len(paths)} accepted=2 wall={time.monotonic() - started:.1f}s"
    )


@pytest.mark.parametrize("columns", [["a", "b"], ["row_id", "model", "audio_url", "face_bbox"], ["ROW_ID", "Model"]])
def test_missing_required_columns_raise_input_table_error(tmp_path: Path, columns: list[str]) -> None:
    from talking_heads.table.plan import InputTableError, read_input_table

    table = tmp_path / "table.csv"
    pd.DataFrame([dict.fromkeys(columns, "x")]).to_csv(table, index=False)
    with pytest.raises(InputTableError, match="required column"):
        _plan(read_input_table(str(table)), tmp_path)


def test_missing_required_columns_error_names_the_table(tmp_path: Path) -> None:
    from talking_heads.table.plan import InputTableError, read_input_table

    table = tmp_path / "inputs-2027-01-01.csv"
    pd.DataFrame([{"a": 1, "b": 2}]).to_csv(table, index=False)
    with pytest.raises(InputTableError) as caught:
        _plan(read_input_table(str(table)), tmp_path)
    assert str(table) in str(caught.value)


# -- one end-to-end run -------------------------------------------------------------------------------


def test_fuzzed_table_end_to_end(airflow_db: str, emulator: Any, media: Media, tmp_path: Path) -> None:
    started = time.monotonic()
    # One text case per kind of mistake (the catalogue's CSV-safe cases), plus the valid rows.
    cases = [c for c in _catalogue() if c.csv]
    valid = {
        "ok-emo": "emo-square",
        "ok-34": "emo-halfbody",
        "ok-emoji": "emoji",
        "B" * 128: "emoji",
        "007": "emoji",
        "NaN": "emo-square",
    }
    rows, fields = _fuzz_rows(media, cases, valid, SEED + 2)
    for row in rows:
        row["speaker"] = "Zoë 🎤 名前"  # an extra column, carried through untouched
    output_root = tmp_path / "out"
    table = write_table(tmp_path / "fuzz.csv", rows)

    _, outcomes = run_dag(table, output_root)
    assert len(outcomes) == len(rows)
    lines = outcomes.to_dict(orient="records")
    for index, (row, field, line) in enumerate(zip(rows, fields, lines, strict=True)):
        if field is None:
            assert line["row_id"] == row["row_id"]
            assert line["status"] == "succeeded", line
            assert (output_root / "videos" / f"{row['row_id']}.mp4").stat().st_size > 1000
        else:
            _check_rejection(index, row["row_id"], field, line)
        assert line["speaker"] == "Zoë 🎤 名前"

    sent = submits(emulator)
    assert {r["row"] for r in sent} == set(valid)  # no invalid row ever reached the service
    assert Counter(r["row"] for r in sent if r["task_id"]) == dict.fromkeys(valid, 1)
    assert not [t for t in task_rows(emulator) if t.startswith("bad-")]
    # Path-traversal ids wrote nothing outside output_root, and state/ holds exactly the valid rows.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fuzz.csv", "out"]
    state = output_root / "state"
    assert sorted(p.name for p in state.iterdir() if p.is_file()) == sorted(f"{r}.json" for r in valid)
    assert sorted(p.name for p in (state / "revisions").iterdir()) == sorted(valid)  # each row's revisions
    leaks = count_leaks(output_root)
    assert leaks == 0
    invalid = sum(f is not None for f in fields)
    print(
        f"\nFUZZ-DAG rows={len(rows)} malformed={invalid} valid={len(valid)} outcomes_recorded={len(outcomes)} "
        f"statuses={dict(Counter(outcomes['status']))} submits={len(sent)} invalid_submits=0 double_bills=0 "
        f"leaks={leaks} wall={time.monotonic() - started:.1f}s"
    )


def task_rows(emulator: Any) -> list[str]:
    """The ``row`` tags of every task the emulator created."""
    return [row_of(t["input"]["image_url"]) or "?" for t in emulator.tasks()]
