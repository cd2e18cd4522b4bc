"""Pre-flight checks of a row's media (talking_heads.table.preflight) before anything is spent: images read up
to their header, voice clips whole, served over HTTP on 127.0.0.1 (with ranges) or read as local files; a
medium the service would refuse fails its row with a message naming the row, the field and the URL, and
good media pass with the clip's duration (what an emo-v1 video lasts, and costs)."""

from __future__ import annotations

import shutil
import wave
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from PIL import Image
from talking_heads.row.ledger import RowLedger
from talking_heads.row.media import MediaSigner
from talking_heads.storage import OutputLayout
from talking_heads.table.plan import plan_run
from talking_heads.table.preflight import (
    MediaCheck,
    audio_seconds,
    check_audio,
    check_image,
    check_media,
    media_problem,
)
from talking_heads.table.validation import RowRequest

from tests.unit.talking_heads.helpers import table_frame


def _silence(path: Path, seconds: float, rate: int = 8000) -> None:
    with wave.open(str(path), "wb") as clip:
        clip.setnchannels(1)
        clip.setsampwidth(1)
        clip.setframerate(rate)
        clip.writeframes(b"\x80" * int(seconds * rate))


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory, media_dir: Path) -> Path:
    """Good sample media, and media the service refuses: a too-small and a too-wide image, a clip over 60 s
    and one over 15 MB, a text file under an image's name."""
    folder = tmp_path_factory.mktemp("preflight")
    shutil.copy(media_dir / "portrait_square.png", folder / "good.png")
    shutil.copy(media_dir / "voice.wav", folder / "good.wav")
    Image.new("RGB", (300, 300), "white").save(folder / "small.png")
    Image.new("RGB", (7001, 400), "white").save(folder / "wide.png")
    _silence(folder / "long.wav", 61.0)
    _silence(folder / "heavy.wav", 59.0, rate=300_000)  # 17.7 MB, within 60 s
    (folder / "text.png").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def served(media: Path) -> Iterator[str]:
    from dashscope_emulator import serve_directory

    with serve_directory(media) as url:
        yield url


def _seconds_of(path: Path) -> float:
    with wave.open(str(path)) as clip:
        return clip.getnframes() / clip.getframerate()


def test_good_media_pass_and_the_clip_says_how_long_it_lasts(served: str, media: Path) -> None:
    with requests.Session() as session:
        assert check_image(session, f"{served}/good.png").problem is None
        audio = check_audio(session, f"{served}/good.wav")
    assert audio.problem is None and audio.seconds == pytest.approx(_seconds_of(media / "good.wav"))
    assert audio_seconds((media / "long.wav").read_bytes()) == pytest.approx(61.0)
    assert audio_seconds(b"not a clip") is None


@pytest.mark.parametrize(
    ("check", "name", "fragment"),
    [
        (check_image, "small.png", "is 300x300 px; each side must be 400..7000 px"),
        (check_image, "wide.png", "is 7001x400 px"),
        (check_image, "text.png", "is not a JPEG, PNG, BMP or WebP image"),
        (check_image, "missing.png", "cannot be fetched (HTTP 404)"),
        (check_audio, "long.wav", "lasts 61.0 s; the limit is 60 s"),
        (check_audio, "heavy.wav", "MB; the limit is 15 MB"),
        (check_audio, "small.png", "is not a WAV or MP3 clip"),
        (check_audio, "missing.wav", "cannot be fetched (HTTP 404)"),
    ],
)
def test_a_medium_the_service_refuses_is_caught(
    served: str, check: Callable[..., MediaCheck], name: str, fragment: str
) -> None:
    with requests.Session() as session:
        problem = check(session, f"{served}/{name}").problem
    assert problem is not None and fragment in problem


def test_each_row_failed_by_preflight_is_named_with_its_field(served: str, tmp_path: Path) -> None:
    frame = table_frame("good", "small-image", "long-audio")
    frame["image_url"] = [f"{served}/good.png", f"{served}/small.png", f"{served}/good.png"]
    frame["audio_url"] = [f"{served}/good.wav", f"{served}/good.wav", f"{served}/long.wav"]
    by_id = {e.row_id: e for e in plan_run(frame, RowLedger(str(tmp_path)), preflight=True)}
    assert by_id["good"].plan == "generate" and by_id["good"].estimated_cost_usd is not None
    small, long = by_id["small-image"].outcome, by_id["long-audio"].outcome
    assert small is not None and long is not None
    assert (small["status"], small["code"], long["code"]) == ("failed", "PreflightCheck", "PreflightCheck")
    assert small["message"].startswith(
        f"row 1 (row_id 'small-image'): field 'image_url': {served}/small.png is 300x300"
    )
    assert long["message"].startswith(f"row 2 (row_id 'long-audio'): field 'audio_url': {served}/long.wav lasts 61.0 s")
    # Without pre-flight the same rows are generated: the service would refuse them after queueing.
    assert all(e.plan == "generate" for e in plan_run(frame, RowLedger(str(tmp_path / "again"))))


def test_local_files_are_checked_through_the_runs_storage(media: Path, tmp_path: Path) -> None:
    def row(row_id: str, image: str, audio: str) -> RowRequest:
        return RowRequest(row_id=row_id, model="emo-v1", image_url=str(media / image), audio_url=str(media / audio))

    rows = [row("a", "good.png", "good.wav"), row("b", "small.png", "long.wav")]
    signer = MediaSigner(OutputLayout(str(tmp_path)))
    checks = check_media(rows, signer=signer)
    assert set(checks) == {str(media / n) for n in ("good.png", "good.wav", "small.png", "long.wav")}
    assert media_problem(rows[0], checks) is None
    assert media_problem(rows[1], checks) == f"field 'image_url': {media / 'small.png'} is 300x300 px; " + (
        "each side must be 400..7000 px"
    )
    audio_only = check_media(rows, images=False, signer=signer)
    long_clip = media / "long.wav"
    assert media_problem(rows[1], audio_only) == f"field 'audio_url': {long_clip} lasts 61.0 s; the limit is 60 s"
    unreadable = check_media(rows[:1], images=False)[str(media / "good.wav")].problem  # no storage settings
    assert unreadable is not None and "needs the run's storage settings" in unreadable
