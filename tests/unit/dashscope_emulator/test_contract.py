"""The documented contract (:mod:`dashscope_emulator.contract`) against the reference pages' figures."""

from __future__ import annotations

from dashscope_emulator.contract import (
    DETECT_MODELS,
    DETECT_PATH,
    DETECT_QPS,
    EMULATOR_ERRORS,
    MAX_IMAGE_BYTES,
    QUERY_QPS,
    SUBMIT_QPS,
    emoji_template_seconds,
    key_fingerprint,
    ratio_of,
)


def test_face_detect_contract_as_detection_and_limits_md_states_it() -> None:
    assert DETECT_PATH == "/api/v1/services/aigc/image2video/face-detect"
    assert DETECT_MODELS == {"emo-detect-v1": ("1:1", "3:4"), "emoji-detect-v1": ("1:1",)}
    assert DETECT_QPS == {"emo-detect-v1": 5, "emoji-detect-v1": 1}
    # The rate-limit page: per account and model, emo-v1 5 and emoji-v1 1 submits per second; queries 20.
    assert (SUBMIT_QPS, QUERY_QPS) == ({"emo-v1": 5, "emoji-v1": 1}, 20)
    assert MAX_IMAGE_BYTES["emoji-detect-v1"] == 10 * 1024 * 1024


def test_ratio_of_ext_bbox_per_model() -> None:
    assert ratio_of([100, 100, 700, 700], "emo-v1") == "1:1"
    assert ratio_of([84, 60, 684, 860], "emo-v1") == "3:4"
    assert ratio_of([0, 0, 600, 500], "emo-v1") is None
    assert ratio_of([60, 60, 660, 660], "emoji-v1") == "standard"
    assert ratio_of([0, 0, 100, 0], "emo-v1") is None


def test_template_seconds_fingerprints_and_error_tokens() -> None:
    assert all(2 <= emoji_template_seconds(f"t{i}") <= 5 for i in range(50))
    assert key_fingerprint("sk-a") == key_fingerprint("sk-a") != key_fingerprint("sk-b")
    assert len(key_fingerprint("sk-a")) == 12
    assert all(code == token.removesuffix(".multi") for token, (code, _) in EMULATOR_ERRORS.items())
