"""Face detection (:mod:`dashscope_emulator.detection`) and the face-detect call that answers with it."""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from typing import Any

import pytest
import requests
from dashscope_emulator import EmulatorServer, key_fingerprint
from dashscope_emulator.contract import DETECT_ERRORS, ratio_of
from dashscope_emulator.detection import Detection, detect, dynamic_area, is_skin

from tests.unit.dashscope_emulator.helpers import PHOTO_OVAL, Client, detect_body

ASPECT = {"1:1": (1, 1), "3:4": (3, 4)}


def assert_fits(face: list[int], ext: list[int], size: tuple[int, int], ratio: str) -> None:
    """``ext`` has exactly ``ratio``, holds ``face`` and lies inside the picture."""
    a, b = ASPECT[ratio]
    width, height = size
    assert (ext[2] - ext[0]) * b == (ext[3] - ext[1]) * a, ext
    assert 0 <= ext[0] <= face[0] < face[2] <= ext[2] <= width, (face, ext)
    assert 0 <= ext[1] <= face[1] < face[3] <= ext[3] <= height, (face, ext)


# -- the call over HTTP: answers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "ratio"),
    [
        ("portrait_square.png", "1:1"),
        ("portrait_square.png", "3:4"),
        ("portrait_halfbody.jpg", "3:4"),
        ("portrait_halfbody.jpg", "1:1"),
        ("portrait_emoji.png", "1:1"),
    ],
)
def test_emo_detect_finds_the_face_where_the_sample_drew_it(
    emu: EmulatorServer, media: dict, key: str, image: str, ratio: str
) -> None:
    answer = Client(emu.base_url, key).detect(f"{media['url']}/{image}", ratio)
    assert set(answer) == {"output", "usage", "request_id"}
    assert answer["usage"] == {"image_count": 1}
    output = answer["output"]
    assert set(output) == {"check_pass", "face_bbox", "ext_bbox"}
    assert output["check_pass"] is True
    boxes = media["boxes"][image]
    assert output["face_bbox"] == boxes["face_bbox"]
    assert_fits(output["face_bbox"], output["ext_bbox"], (boxes["width"], boxes["height"]), ratio)
    if ratio_of(boxes["ext_bbox"], "emo-v1") == ratio:
        # The sample's own dynamic area: the bundled table's boxes, so its videos are the same.
        assert output["ext_bbox"] == boxes["ext_bbox"]


def test_emoji_detect_names_its_boxes_differently_and_its_answer_feeds_emoji_v1(
    emu: EmulatorServer, media: dict, key: str
) -> None:
    client = Client(emu.base_url, key)
    image_url = f"{media['url']}/portrait_emoji.png"
    answer = client.detect(image_url, "1:1", model="emoji-detect-v1")
    assert answer["usage"] == {"image_count": 1}
    output = answer["output"]
    assert set(output) == {"bbox_face", "ext_bbox_face"}  # no check_pass
    boxes = media["boxes"]["portrait_emoji.png"]
    assert output == {"bbox_face": boxes["face_bbox"], "ext_bbox_face": boxes["ext_bbox"]}
    # bbox_face goes into emoji-v1's face_bbox, ext_bbox_face into its ext_bbox.
    body = {
        "model": "emoji-v1",
        "input": {
            "image_url": image_url,
            "driven_id": "mengwa_kaixin",
            "face_bbox": output["bbox_face"],
            "ext_bbox": output["ext_bbox_face"],
        },
    }
    result = client.wait(client.submit(body))
    assert result["output"]["task_status"] == "SUCCEEDED", result


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("blank.png", "InvalidFile.NoHuman"),
        ("dark.png", "InvalidFile.Value"),
        ("two.png", "InvalidFile.MultiHuman"),
        ("close.png", "InvalidFile.BodyProportion"),
        ("tiny.png", "InvalidFile.Resolution"),
    ],
)
@pytest.mark.parametrize("model", ["emo-detect-v1", "emoji-detect-v1"])
def test_pictures_that_fail_the_check_are_answered_and_billed(
    emu: EmulatorServer, media: dict, pictures: dict, key: str, name: str, code: str, model: str
) -> None:
    image_url = pictures.get(name, f"{media['url']}/{name}")
    answer = Client(emu.base_url, key).detect(image_url, "1:1", model=model)
    expected: dict[str, Any] = {"code": code, "message": DETECT_ERRORS[code]}
    if model == "emo-detect-v1":
        expected = {"check_pass": False, **expected}
    assert answer["output"] == expected
    assert answer["usage"] == {"image_count": 1}  # billed although it did not pass
    [line] = [d for d in emu.detections() if d["key_fingerprint"] == key_fingerprint(key)]
    assert (line["model"], line["passed"], line["code"], line["image_url"]) == (model, False, code, image_url)


def test_a_picture_the_emulator_did_not_draw_passes_around_its_skin_toned_region(
    emu: EmulatorServer, pictures: dict, key: str
) -> None:
    client = Client(emu.base_url, key)
    for ratio in ("1:1", "3:4"):
        output = client.detect(pictures["photo.png"], ratio)["output"]
        assert output["check_pass"] is True, output
        # Found within one measuring cell (800 / 64 = 12.5 px) of the oval.
        assert output["face_bbox"] == pytest.approx(list(PHOTO_OVAL), abs=13)
        assert_fits(output["face_bbox"], output["ext_bbox"], (800, 600), ratio)
    again = client.detect(pictures["photo.png"], "1:1")["output"]
    assert again == client.detect(pictures["photo.png"], "1:1")["output"]  # deterministic


def test_emulator_error_gives_each_documented_failure_code(emu: EmulatorServer, media: dict, key: str) -> None:
    client = Client(emu.base_url, key)
    image_url = f"{media['url']}/portrait_square.png"
    for code, message in DETECT_ERRORS.items():
        answer = client.detect(f"{image_url}?emulator_error={code}")
        assert answer["output"] == {"check_pass": False, "code": code, "message": message}
        assert answer["usage"] == {"image_count": 1}
    emoji = client.detect(f"{image_url}?emulator_error=InvalidFile.FacePose", model="emoji-detect-v1")
    assert emoji["output"] == {"code": "InvalidFile.FacePose", "message": DETECT_ERRORS["InvalidFile.FacePose"]}
    # The doc's failure codes, exactly.
    assert set(DETECT_ERRORS) == {
        "InvalidFile.NoHuman",
        "InvalidFile.MultiHuman",
        "InvalidFile.BodyProportion",
        "InvalidFile.Resolution",
        "InvalidFile.Value",
        "InvalidFile.FrontBody",
        "InvalidFile.FullFace",
        "InvalidFile.FacePose",
        "InvalidFile.FullBody",
    }
    # A token the emulator doesn't know is the test's mistake: a failed request, not a billed detection.
    unknown = client.detect_raw(detect_body(f"{image_url}?emulator_error=InvalidFile.Nope"))
    assert unknown.status_code == 400 and "usage" not in unknown.json()
    mine = [d for d in emu.detections() if d["key_fingerprint"] == key_fingerprint(key)]
    assert len(mine) == len(DETECT_ERRORS) + 1


# -- billing ----------------------------------------------------------------------------------------------


def test_every_answered_detection_is_one_billed_image_counted_by_content_and_ratio(
    emu: EmulatorServer, media: dict, key: str
) -> None:
    client = Client(emu.base_url, key)
    square = f"{media['url']}/portrait_square.png"
    for url, ratio in [(square, "1:1"), (square + "?presigned=2", "1:1"), (square, "3:4")]:
        client.detect(url, ratio)
    client.detect(f"{media['url']}/portrait_emoji.png", model="emoji-detect-v1")
    mine = [d for d in emu.detections() if d["key_fingerprint"] == key_fingerprint(key)]
    assert set(mine[0]) == {
        "time",
        "model",
        "key_fingerprint",
        "account",
        "image_url",
        "image_sha256",
        "ratio",
        "passed",
        "code",
    }
    assert all(d["account"] == key_fingerprint(key) for d in mine)  # by default a key is its own account
    digest = hashlib.sha256((media["dir"] / "portrait_square.png").read_bytes()).hexdigest()
    # Two URLs of one picture have one content hash: a test can see that it was detected twice.
    per_image = Counter((d["image_sha256"], d["ratio"]) for d in mine)
    assert per_image[(digest, "1:1")] == 2 and per_image[(digest, "3:4")] == 1
    assert [d["model"] for d in mine] == ["emo-detect-v1"] * 3 + ["emoji-detect-v1"]
    assert all(d["passed"] and d["code"] is None for d in mine)
    assert key not in str(emu.detections())
    # The same lines over the admin API; detections are not video billing lines.
    over_http = requests.get(emu.base_url + "/_emulator/detections").json()
    assert [d for d in over_http if d["key_fingerprint"] == key_fingerprint(key)] == mine
    assert all(line["key_fingerprint"] != key_fingerprint(key) for line in emu.billing())


# -- the detection module on its own ----------------------------------------------------------------------


@pytest.mark.parametrize("ratio", ["1:1", "3:4"])
@pytest.mark.parametrize(
    ("face", "size"),
    [
        ((250, 220, 550, 560), (800, 800)),
        ((0, 0, 120, 140), (800, 800)),
        ((680, 660, 800, 800), (800, 800)),
        ((300, 100, 500, 300), (900, 450)),
        ((100, 700, 300, 900), (400, 1200)),
    ],
    ids=["centre", "top-left", "bottom-right", "wide", "tall"],
)
def test_dynamic_area_has_the_ratio_holds_the_face_and_fits(
    face: tuple[int, int, int, int], size: tuple[int, int], ratio: str
) -> None:
    ext = dynamic_area(face, *size, ratio)
    assert ext is not None
    assert_fits(list(face), list(ext), size, ratio)


def test_dynamic_area_is_none_when_the_face_is_too_large_for_the_picture() -> None:
    assert dynamic_area((0, 0, 600, 600), 600, 600, "1:1") is None
    assert dynamic_area((0, 100, 500, 400), 500, 800, "3:4") is None  # 3:4 around a 500 px wide face: 667 high


def test_a_re_encoded_sample_is_still_recognised_and_other_colours_are_not() -> None:
    from dashscope_emulator.samples import PORTRAITS, draw_portrait
    from PIL import Image

    square = PORTRAITS[0]
    jpeg = io.BytesIO()
    draw_portrait(square).save(jpeg, format="JPEG", quality=40)
    assert detect(jpeg.getvalue(), "1:1") == Detection(face_bbox=square.face_bbox, ext_bbox=square.ext_bbox)
    # Same size, nothing drawn: no sample, and no person.
    plain = io.BytesIO()
    Image.new("RGB", square.size, square.background).save(plain, format="PNG")
    assert detect(plain.getvalue(), "1:1").code == "InvalidFile.NoHuman"
    # A requested failure wins over everything.
    assert detect(jpeg.getvalue(), "1:1", "InvalidFile.FullFace") == Detection.failed("InvalidFile.FullFace")


def test_is_skin() -> None:
    assert is_skin(241, 194, 160) and is_skin(224, 172, 135) and is_skin(230, 180, 150)
    assert not is_skin(40, 90, 160)  # blue
    assert not is_skin(128, 128, 128)  # grey
    assert not is_skin(60, 30, 20)  # too dark
