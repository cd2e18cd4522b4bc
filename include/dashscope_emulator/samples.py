"""Demo and test media, made locally (no downloads): cartoon portraits, a speech-like voice clip, bad media.

``make_samples(out_dir)`` writes:

========================  ======================================================================
``portrait_square.png``   800x800 head-and-shoulders cartoon (emo-v1, ext_bbox 1:1)
``portrait_halfbody.jpg`` 768x1024 half-body cartoon (emo-v1, ext_bbox exactly 3:4)
``portrait_emoji.png``    720x720 cartoon face (emoji-v1)
``voice.wav``             ~4.7 s speech-like clip, 16 kHz mono 16-bit (formant synthesis)
``voice.mp3``             the same clip as MP3 (ffmpeg from imageio-ffmpeg)
``tiny.png``              300x300 portrait: below the 400 px minimum (``InvalidFile.Resolution``)
``not_audio.ogg``         the voice as Ogg Vorbis: real audio, but not WAV/MP3 (``InvalidURL``)
``long.wav``              61 s of 8 kHz 8-bit silence: over the 60 s limit (``InvalidURL``)
``samples.json``          per image: ``width``, ``height``, ``face_bbox``, ``ext_bbox``
========================  ======================================================================

The boxes are the ones the bundled sample table (``include/sample/talking_heads_sample.csv``) uses.
Output is deterministic. CLI: ``python -m dashscope_emulator.samples --out DIR``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dashscope_emulator.media import ffmpeg_exe

VOICE_RATE = 16_000


@dataclass(frozen=True)
class Portrait:
    """One sample portrait: canvas, where the face goes, the dynamic area, and its colours."""

    name: str
    size: tuple[int, int]
    face_bbox: tuple[int, int, int, int]
    ext_bbox: tuple[int, int, int, int]
    background: tuple[int, int, int]
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    shirt: tuple[int, int, int]


PORTRAITS = (
    Portrait(
        "portrait_square.png",
        (800, 800),
        (250, 220, 550, 560),
        (100, 100, 700, 700),
        (120, 170, 215),
        (241, 194, 160),
        (70, 45, 30),
        (200, 70, 70),
    ),
    Portrait(
        "portrait_halfbody.jpg",
        (768, 1024),
        (259, 150, 509, 420),
        (84, 60, 684, 860),
        (160, 200, 150),
        (224, 172, 135),
        (30, 30, 35),
        (60, 90, 160),
    ),
    Portrait(
        "portrait_emoji.png",
        (720, 720),
        (210, 180, 510, 500),
        (60, 60, 660, 660),
        (250, 215, 120),
        (250, 210, 180),
        (150, 80, 40),
        (90, 160, 110),
    ),
    Portrait(
        "tiny.png",
        (300, 300),
        (95, 70, 205, 195),
        (40, 40, 260, 260),
        (200, 200, 200),
        (241, 194, 160),
        (70, 45, 30),
        (120, 120, 120),
    ),
)


def _shade(color: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return tuple(max(0, min(255, round(c * factor))) for c in color)  # type: ignore[return-value]


def draw_portrait(portrait: Portrait):  # -> PIL.Image.Image
    """A flat cartoon person whose head fills ``face_bbox``: torso, neck, hair, eyes, brows, nose, mouth."""
    from PIL import Image, ImageDraw

    width, height = portrait.size
    image = Image.new("RGB", portrait.size, portrait.background)
    draw = ImageDraw.Draw(image)
    x1, y1, x2, y2 = portrait.face_bbox
    fw, fh = x2 - x1, y2 - y1
    cx = (x1 + x2) / 2

    # A soft vignette stripe so the background is not a single flat colour.
    for i in range(0, height, 8):
        draw.rectangle((0, i, width, i + 4), fill=_shade(portrait.background, 0.97))

    # Torso and neck first: the head overlaps them.
    shoulder_y = y2 + fh * 0.18
    draw.rounded_rectangle(
        (cx - fw * 1.25, shoulder_y, cx + fw * 1.25, height + fh), radius=int(fw * 0.45), fill=portrait.shirt
    )
    draw.rectangle((cx - fw * 0.17, y2 - fh * 0.15, cx + fw * 0.17, shoulder_y + fh * 0.05), fill=portrait.skin)
    draw.polygon(
        [(cx - fw * 0.25, shoulder_y), (cx, shoulder_y + fh * 0.22), (cx + fw * 0.25, shoulder_y)],
        fill=_shade(portrait.skin, 0.92),
    )

    # Hair behind the head, ears, head.
    draw.ellipse((x1 - fw * 0.08, y1 - fh * 0.06, x2 + fw * 0.08, y1 + fh * 0.75), fill=portrait.hair)
    for side in (-1, 1):
        ex = cx + side * fw * 0.5
        draw.ellipse((ex - fw * 0.07, y1 + fh * 0.42, ex + fw * 0.07, y1 + fh * 0.6), fill=_shade(portrait.skin, 0.95))
    draw.ellipse((x1 + fw * 0.02, y1 + fh * 0.08, x2 - fw * 0.02, y2), fill=portrait.skin)
    # Fringe.
    draw.chord((x1, y1 - fh * 0.02, x2, y1 + fh * 0.5), start=180, end=360, fill=portrait.hair)

    # Eyes, pupils, brows.
    eye_y = y1 + fh * 0.5
    for side in (-1, 1):
        ex = cx + side * fw * 0.19
        draw.ellipse((ex - fw * 0.09, eye_y - fh * 0.05, ex + fw * 0.09, eye_y + fh * 0.05), fill=(255, 255, 255))
        draw.ellipse((ex - fw * 0.04, eye_y - fh * 0.04, ex + fw * 0.04, eye_y + fh * 0.04), fill=(40, 30, 25))
        draw.ellipse((ex - fw * 0.01, eye_y - fh * 0.03, ex + fw * 0.015, eye_y - fh * 0.005), fill=(255, 255, 255))
        brow_y = eye_y - fh * 0.11
        tilt = fh * 0.012  # outer ends a little lower: a friendly look
        draw.line(
            (ex - fw * 0.09, brow_y - side * tilt, ex + fw * 0.09, brow_y + side * tilt),
            fill=_shade(portrait.hair, 0.8),
            width=max(2, round(fw * 0.025)),
        )

    # Nose, cheeks, mouth.
    nose_y = y1 + fh * 0.66
    draw.line(
        (cx, eye_y + fh * 0.04, cx - fw * 0.03, nose_y, cx + fw * 0.02, nose_y),
        fill=_shade(portrait.skin, 0.75),
        width=max(2, round(fw * 0.015)),
    )
    for side in (-1, 1):
        kx = cx + side * fw * 0.28
        draw.ellipse((kx - fw * 0.06, nose_y - fh * 0.03, kx + fw * 0.06, nose_y + fh * 0.03), fill=(240, 150, 150))
    mouth_y = y1 + fh * 0.78
    draw.chord(
        (cx - fw * 0.15, mouth_y - fh * 0.05, cx + fw * 0.15, mouth_y + fh * 0.07), start=0, end=180, fill=(170, 50, 60)
    )
    draw.chord(
        (cx - fw * 0.1, mouth_y + fh * 0.0, cx + fw * 0.1, mouth_y + fh * 0.065), start=0, end=180, fill=(230, 110, 120)
    )
    return image


# Vowel formants (F1, F2, F3 in Hz) of a, e, i, o, u: enough to sound like a voice, not like a tone.
_VOWELS = ((730, 1090, 2440), (530, 1840, 2480), (270, 2290, 3010), (570, 840, 2410), (300, 870, 2240))
_BANDWIDTHS = (90, 110, 170)


def _formant_filter(signal: np.ndarray, formants: tuple[int, int, int], rate: int) -> np.ndarray:
    """Shape a glottal source with three resonances (a vowel), in the frequency domain."""
    spectrum = np.fft.rfft(signal)
    freqs = np.fft.rfftfreq(len(signal), 1.0 / rate)
    envelope = np.full_like(freqs, 0.02)
    for formant, bandwidth, gain in zip(formants, _BANDWIDTHS, (1.0, 0.6, 0.3), strict=True):
        envelope += gain / (1.0 + ((freqs - formant) / (bandwidth / 2.0)) ** 2)
    return np.fft.irfft(spectrum * envelope, n=len(signal))


def _band_noise(rng: np.random.Generator, samples: int, low: float, high: float, rate: int) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(samples))
    freqs = np.fft.rfftfreq(samples, 1.0 / rate)
    spectrum[(freqs < low) | (freqs > high)] = 0
    return np.fft.irfft(spectrum, n=samples)


def _envelope(samples: int, rate: int, attack: float = 0.02, release: float = 0.05) -> np.ndarray:
    env = np.ones(samples)
    a, r = min(samples, int(attack * rate)), min(samples, int(release * rate))
    if a:
        env[:a] = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, a))
    if r:
        env[-r:] *= 0.5 + 0.5 * np.cos(np.linspace(0, np.pi, r))
    return env


def synthesize_voice(rate: int = VOICE_RATE, seed: int = 7) -> np.ndarray:
    """~4.7 s of speech-like sound: syllables (consonant + vowel) with a falling pitch contour and pauses.

    Each phrase's pitch declines from ~210 Hz to ~150 Hz with a little accent per syllable, the way
    spoken sentences do, so the clip has the rhythm of speech without any recorded voice.
    """
    rng = np.random.default_rng(seed)
    phrases = ((2, 3, 1), (3, 2), (1, 2))  # syllables per word, words per phrase
    pieces: list[np.ndarray] = [np.zeros(int(0.15 * rate))]
    for phrase in phrases:
        n_syllables = sum(phrase)
        index = 0
        for word in phrase:
            for _ in range(word):
                progress = index / max(1, n_syllables - 1)
                index += 1
                # Consonant: a fricative hiss or a short plosive burst.
                if rng.random() < 0.6:
                    length = int(rng.uniform(0.04, 0.08) * rate)
                    low, high = (3500, 7000) if rng.random() < 0.5 else (1800, 4000)
                    burst = _band_noise(rng, length, low, high, rate) * 0.08
                    pieces.append(burst * _envelope(length, rate, 0.01, 0.02))
                # Vowel: a glottal pulse train at the contour's pitch, through the vowel's formants.
                length = int(rng.uniform(0.16, 0.26) * rate)
                start_f0 = 210 - 60 * progress + rng.uniform(-8, 12)
                f0 = np.linspace(start_f0, start_f0 - rng.uniform(5, 20), length)
                f0 *= 1 + 0.01 * np.sin(2 * np.pi * 5.5 * np.arange(length) / rate)  # vibrato-ish jitter
                phase = np.cumsum(f0 / rate)
                source = (1.0 - (phase % 1.0)) ** 3 - 0.25  # a skewed pulse: rich in harmonics
                vowel = _formant_filter(source, _VOWELS[int(rng.integers(len(_VOWELS)))], rate)
                vowel /= np.max(np.abs(vowel)) + 1e-9
                pieces.append(vowel * _envelope(length, rate) * rng.uniform(0.7, 1.0))
            pieces.append(np.zeros(int(rng.uniform(0.06, 0.12) * rate)))  # gap between words
        pieces.append(np.zeros(int(0.35 * rate)))  # breath between phrases
    audio = np.concatenate(pieces)
    audio += rng.standard_normal(len(audio)) * 0.002  # a faint room noise floor
    return audio / np.max(np.abs(audio)) * 0.7


def write_wav(path: Path, audio: np.ndarray, rate: int, sample_width: int = 2) -> None:
    """Mono PCM WAV; ``sample_width`` 2 = 16-bit signed, 1 = 8-bit unsigned."""
    if sample_width == 2:
        frames = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    else:
        frames = (np.clip(audio, -1, 1) * 127 + 128).astype(np.uint8).tobytes()
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(sample_width)
        out.setframerate(rate)
        out.writeframes(frames)


def _ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True, timeout=120)


def make_samples(out_dir: str | Path) -> dict[str, Path]:
    """Write the sample media into ``out_dir`` (created if needed); returns file name -> path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    boxes: dict[str, dict] = {}
    for portrait in PORTRAITS:
        image = draw_portrait(portrait)
        path = out / portrait.name
        if path.suffix == ".jpg":
            image.save(path, quality=90)
        else:
            image.save(path, optimize=True)
        written[portrait.name] = path
        boxes[portrait.name] = {
            "width": portrait.size[0],
            "height": portrait.size[1],
            "face_bbox": list(portrait.face_bbox),
            "ext_bbox": list(portrait.ext_bbox),
        }

    voice = out / "voice.wav"
    write_wav(voice, synthesize_voice(), VOICE_RATE)
    written["voice.wav"] = voice
    written["voice.mp3"] = out / "voice.mp3"
    _ffmpeg("-i", str(voice), "-codec:a", "libmp3lame", "-b:a", "64k", str(written["voice.mp3"]))
    written["not_audio.ogg"] = out / "not_audio.ogg"
    _ffmpeg("-i", str(voice), "-codec:a", "libvorbis", "-q:a", "2", str(written["not_audio.ogg"]))
    written["long.wav"] = out / "long.wav"
    write_wav(written["long.wav"], np.zeros(61 * 8000), 8000, sample_width=1)

    written["samples.json"] = out / "samples.json"
    written["samples.json"].write_text(json.dumps(boxes, indent=2) + "\n")
    return written


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m dashscope_emulator.samples --out DIR``."""
    parser = argparse.ArgumentParser(description="Write the emulator's demo/test media into a folder.")
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    args = parser.parse_args(argv)
    for name, path in make_samples(args.out).items():
        print(f"{name}\t{path}")


if __name__ == "__main__":
    main()
