"""Face detection for the face-detect call: where the face is, and a dynamic area of the asked ratio.

The real service runs a vision model; the emulator decides deterministically from the image, so a test
knows the answer in advance. :func:`detect` goes through these steps, first match wins:

1. ``?emulator_error=<code>`` on the image URL: that failure (any of :data:`~.contract.DETECT_ERRORS`),
   as for tasks;
2. **a sample portrait** (:mod:`.samples` drew it): same size as one of ``PORTRAITS`` and the drawn
   skin colour on its forehead and the drawn background in its top-left corner (within a tolerance,
   so a JPEG or PNG re-encode still matches). The face is the box the head was drawn in; the dynamic
   area is the sample's own ``ext_bbox`` when that has the asked ratio, else one computed as in 4;
3. **any other image**, from its pixels scaled down to at most :data:`GRID` cells a side:
   mean luminance below :data:`DARK_LUMA` -> ``InvalidFile.Value`` (too dark); luminance spread below
   :data:`FLAT_SPREAD` (a blank or one-colour picture) -> ``InvalidFile.NoHuman``; otherwise the
   skin-toned cells (the classic RGB rule of :func:`is_skin`) are grouped into 4-connected regions:
   none of at least :data:`MIN_REGION` of the cells -> ``InvalidFile.NoHuman``; a second region at
   least half the size of the largest -> ``InvalidFile.MultiHuman``; the largest region covering more
   than :data:`MAX_REGION` of the picture -> ``InvalidFile.BodyProportion``. The face is the largest
   region's box (cut to at most 1.3x as tall as wide, from the top: the neck is skin too);
4. **the dynamic area** (:func:`dynamic_area`): the asked ratio, 1.8x the face's larger side (1:1) or
   3x its height (3:4), centred on the face (3:4: the face in the upper third), shrunk and shifted to
   fit inside the image. If even a box just around the face can't fit: ``InvalidFile.BodyProportion``
   (the person is too large in the picture). The other documented codes (``FrontBody``, ``FullFace``,
   ``FacePose``, ``FullBody``) come only from step 1: pose can't be told from pixels this simply.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dashscope_emulator.contract import DETECT_ERRORS

if TYPE_CHECKING:
    from PIL.Image import Image

Box = tuple[int, int, int, int]

#: The picture is scaled down to at most this many cells a side before it is measured.
GRID = 64
#: Mean luminance (0..255) below which a picture is too dark (``InvalidFile.Value``).
DARK_LUMA = 40.0
#: Standard deviation of luminance below which a picture is blank (``InvalidFile.NoHuman``).
FLAT_SPREAD = 6.0
#: Fractions of the grid's cells: the smallest skin region that counts as a person, the largest allowed.
MIN_REGION = 0.01
MAX_REGION = 0.6
#: How far a sample portrait's probed pixels may be from the drawn colours, per channel.
COLOUR_TOLERANCE = 24
#: The dynamic area's size relative to the face: 1:1 -> side = 1.8x the face's larger side; 3:4 ->
#: width >= 1.8x the face's width and height >= 3x the face's height (half body).
SCALE_SQUARE = 1.8
SCALE_HALF_BODY_HEIGHT = 3.0
#: The smallest dynamic area the emulator accepts: the face plus 5% on each side.
MIN_MARGIN = 1.1
_RATIOS = {"1:1": (1, 1), "3:4": (3, 4)}


@dataclass(frozen=True)
class Detection:
    """A detection's answer: ``face_bbox`` and ``ext_bbox`` when it passed, else ``code`` and ``message``."""

    face_bbox: Box | None = None
    ext_bbox: Box | None = None
    code: str | None = None
    message: str | None = None

    @property
    def passed(self) -> bool:
        return self.code is None

    @classmethod
    def failed(cls, code: str) -> Detection:
        """A failure with the documented message of ``code``."""
        return cls(code=code, message=DETECT_ERRORS[code])


def is_skin(red: int, green: int, blue: int) -> bool:
    """The classic RGB skin-tone rule (Peer et al.): reddish, not grey, not too dark."""
    return (
        red > 95
        and green > 40
        and blue > 20
        and red > green
        and red > blue
        and red - min(green, blue) > 15
        and abs(red - green) > 15
    )


def dynamic_area(face: Box, width: int, height: int, ratio: str) -> Box | None:
    """An ``ext_bbox`` of exactly ``ratio`` that contains ``face`` and fits the image, or None if none can."""
    a, b = _RATIOS[ratio]
    x1, y1, x2, y2 = face
    fw, fh = x2 - x1, y2 - y1
    if ratio == "1:1":
        wanted = SCALE_SQUARE * max(fw, fh)
    else:
        wanted = max(SCALE_SQUARE * fw / a, SCALE_HALF_BODY_HEIGHT * fh / b)
    needed = math.ceil(max(MIN_MARGIN * fw / a, MIN_MARGIN * fh / b))
    unit = min(math.ceil(wanted), width // a, height // b)
    if unit < needed:
        return None
    w, h = a * unit, b * unit
    # Where the face should sit, then the nearest position that keeps both the face and the image around it.
    left = round((x1 + x2) / 2 - w / 2)
    top = round((y1 + y2) / 2 - h / 2) if ratio == "1:1" else round(y1 - (h / 3 - fh / 2))
    left = min(max(left, max(0, x2 - w)), min(x1, width - w))
    top = min(max(top, max(0, y2 - h)), min(y1, height - h))
    return left, top, left + w, top + h


def _sample_face(rgb: Image, width: int, height: int) -> tuple[Box, Box] | None:
    """``(face_bbox, ext_bbox)`` of the sample portrait this picture is, or None."""
    from dashscope_emulator.samples import PORTRAITS  # lazily: samples needs numpy

    for portrait in PORTRAITS:
        if portrait.size != (width, height):
            continue
        x1, y1, x2, y2 = portrait.face_bbox
        forehead = rgb.getpixel(((x1 + x2) // 2, round(y1 + 0.35 * (y2 - y1))))
        corner = rgb.getpixel((3, 3))
        if _near(forehead, portrait.skin) and _near(corner, portrait.background):
            return portrait.face_bbox, portrait.ext_bbox
    return None


def _near(pixel: object, colour: tuple[int, int, int]) -> bool:
    if not isinstance(pixel, tuple) or len(pixel) < 3:
        return False
    return all(abs(p - c) <= COLOUR_TOLERANCE for p, c in zip(pixel[:3], colour, strict=True))


def _regions(mask: list[list[bool]]) -> list[list[tuple[int, int]]]:
    """The 4-connected regions of True cells, largest first."""
    rows, cols = len(mask), len(mask[0])
    seen = [[False] * cols for _ in range(rows)]
    regions = []
    for r in range(rows):
        for c in range(cols):
            if not mask[r][c] or seen[r][c]:
                continue
            seen[r][c] = True
            stack, cells = [(r, c)], []
            while stack:
                y, x = stack.pop()
                cells.append((y, x))
                for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                    if 0 <= ny < rows and 0 <= nx < cols and mask[ny][nx] and not seen[ny][nx]:
                        seen[ny][nx] = True
                        stack.append((ny, nx))
            regions.append(cells)
    return sorted(regions, key=len, reverse=True)


def _measured_face(rgb: Image, width: int, height: int) -> Box | str:
    """The face of a picture the emulator did not draw (step 3 of the module docstring), or a failure code."""
    from PIL import Image as PILImage

    small = rgb.copy()
    small.thumbnail((GRID, GRID), PILImage.Resampling.BOX)
    cols, rows = small.size
    pixels = list(small.getdata())
    lumas = [0.299 * r + 0.587 * g + 0.114 * b for r, g, b in pixels]
    mean = sum(lumas) / len(lumas)
    spread = math.sqrt(sum((v - mean) ** 2 for v in lumas) / len(lumas))
    if mean < DARK_LUMA:
        return "InvalidFile.Value"
    if spread < FLAT_SPREAD:
        return "InvalidFile.NoHuman"
    mask = [[is_skin(*pixels[r * cols + c]) for c in range(cols)] for r in range(rows)]
    regions = [cells for cells in _regions(mask) if len(cells) >= MIN_REGION * rows * cols]
    if not regions:
        return "InvalidFile.NoHuman"
    if len(regions) > 1 and len(regions[1]) >= len(regions[0]) / 2:
        return "InvalidFile.MultiHuman"
    if len(regions[0]) > MAX_REGION * rows * cols:
        return "InvalidFile.BodyProportion"
    ys, xs = [y for y, _ in regions[0]], [x for _, x in regions[0]]
    sx, sy = width / cols, height / rows
    x1, x2 = math.floor(min(xs) * sx), min(width, math.ceil((max(xs) + 1) * sx))
    y1, y2 = math.floor(min(ys) * sy), min(height, math.ceil((max(ys) + 1) * sy))
    y2 = min(y2, y1 + round(1.3 * (x2 - x1)))
    return x1, y1, x2, y2


def detect(image: bytes, ratio: str, requested: str | None = None) -> Detection:
    """Detect the face in ``image`` (bytes of a checked image) for a dynamic area of ``ratio``.

    ``requested``: a failure code asked for with ``?emulator_error=`` (step 1), or None.
    """
    if requested is not None:
        return Detection.failed(requested)

    from PIL import Image as PILImage

    with PILImage.open(io.BytesIO(image)) as opened:
        rgb = opened.convert("RGB")
    width, height = rgb.size
    ext: Box | None
    sample = _sample_face(rgb, width, height)
    if sample is not None:
        face, ext = sample
        a, b = _RATIOS[ratio]
        if (ext[2] - ext[0]) * b != (ext[3] - ext[1]) * a:
            ext = dynamic_area(face, width, height, ratio)
    else:
        measured = _measured_face(rgb, width, height)
        if isinstance(measured, str):
            return Detection.failed(measured)
        face, ext = measured, dynamic_area(measured, width, height, ratio)
    if ext is None:
        return Detection.failed("InvalidFile.BodyProportion")
    return Detection(face_bbox=face, ext_bbox=ext)
