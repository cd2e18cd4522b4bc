"""The documented contract of DashScope's talking-head API, as the emulator implements it.

Everything here comes from the reference pages in ``shared/reference`` (endpoints, model names, error
codes and their messages verbatim, limits, validity windows), except where a comment says the pages
are silent and the emulator chose. Other modules import these names instead of spelling them again, so
the contract can be read (and compared with the pages) in one place.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

# -- endpoints ----------------------------------------------------------------------------------------

SUBMIT_PATH = "/api/v1/services/aigc/image2video/video-synthesis"
#: The synchronous face-detect call (detection-and-limits.md) that yields face_bbox / ext_bbox.
DETECT_PATH = "/api/v1/services/aigc/image2video/face-detect"
TASKS_PREFIX = "/api/v1/tasks/"
#: The account's task list (GET, ``start_time``/``end_time``/``model_name``/``status``/``page_no``/``page_size``).
TASK_LIST_PATH = "/api/v1/tasks/"
#: Where the emulator serves result videos (the real service uses OSS; the path is the emulator's).
RESULTS_PREFIX = "/results/"
#: Emulator-only admin endpoints; not part of DashScope.
ADMIN_PREFIX = "/_emulator/"

#: The key accepted when none is configured (constructor, ``--api-key``, env).
DEFAULT_API_KEY = "sk-emulator"
API_KEYS_ENV = "DASHSCOPE_EMULATOR_API_KEYS"
#: A folder where every emulator that is given no ``cache_dir`` caches its renders (they outlive it there).
RENDER_CACHE_ENV = "DASHSCOPE_EMULATOR_RENDER_CACHE"

# -- models and their parameters ------------------------------------------------------------------------

MODELS = ("emo-v1", "emoji-v1")
STYLE_LEVELS = ("normal", "calm", "active")
#: The template ids of the emoji-v1 reference's appendix.
EMOJI_TEMPLATES = (
    "mengwa_kaixin",
    "dagong_zhuakuang",
    "mengwa_dengyan",
    "dagong_wunai",
    "mengwa_gandong",
    "dagong_weixiao",
    "mengwa_renzhen_1",
    "dagong_ganji",
    "mengwa_jidong",
    "jingdian_tiaopi",
    "mengwa_kun_1",
    "jingdian_deyi_1",
    "mengwa_jiaoxie",
    "jingdian_qidai",
    "dagong_kaixin",
    "jingdian_landuo_1",
    "dagong_yangwang",
    "jingdian_xianqi",
    "dagong_kunhuo",
    "jingdian_lei",
)

#: Face-detect models -> the values their ``parameters.ratio`` takes (required; the ext_bbox's aspect).
DETECT_MODELS: dict[str, tuple[str, ...]] = {"emo-detect-v1": ("1:1", "3:4"), "emoji-detect-v1": ("1:1",)}

# -- limits and validity windows -------------------------------------------------------------------------

#: task_id validity and video_url validity, simulated seconds (both 24 h in the reference).
TASK_TTL = 86_400.0
URL_TTL = 86_400.0
#: Requests per second per Alibaba Cloud account (all its keys together), each model on its own:
#: submissions (emo-v1 5, emoji-v1 1: the rate-limit page) and task queries (20).
SUBMIT_QPS = {"emo-v1": 5, "emoji-v1": 1}
QUERY_QPS = 20
#: Face-detect calls per second per account, per model.
DETECT_QPS = {"emo-detect-v1": 5, "emoji-detect-v1": 1}
#: The task list: a window of at most 24 h (the default: the last 24 h); 10 per page by default.
#: The pages give no largest page size nor an order: the emulator takes 1..100 and lists oldest first.
LIST_MAX_WINDOW = 86_400.0
LIST_DEFAULT_PAGE_SIZE = 10
LIST_MAX_PAGE_SIZE = 100
#: The region the task list's entries name (the reference's pages are China (Beijing)'s).
REGION = "cn-beijing"
#: Wall-clock seconds for downloading an input file (the pages name a timeout, not its length).
FETCH_TIMEOUT = 10.0
MAX_AUDIO_BYTES = 15 * 1024 * 1024
MAX_AUDIO_SECONDS = 60.0
#: emoji-v1's documented image limit; emo-v1 documents none, so the emulator caps downloads at 20 MB.
MAX_IMAGE_BYTES = {
    "emoji-v1": 10 * 1024 * 1024,
    "emo-v1": 20 * 1024 * 1024,
    "emoji-detect-v1": 10 * 1024 * 1024,
    "emo-detect-v1": 20 * 1024 * 1024,
}
MIN_SIDE, MAX_SIDE = 400, 7000
#: ext_bbox aspect tolerance: integer boxes from a detector rarely hit 1:1 or 3:4 exactly.
RATIO_TOLERANCE = 0.02
EMOJI_RATIO_TOLERANCE = 0.10  # the emoji page only says "about 1:1"

# -- error messages (verbatim from the reference, unless marked) ----------------------------------------

MSG_NO_KEY = "No API-key provided."
MSG_BAD_KEY = "Invalid API-key provided."
MSG_THROTTLED = "Requests rate limit exceeded, please try again later."
#: A free-only account that has used its free quota (429; the rate-limit page gives the code and the
#: phrase, the emulator adds the full stop).
CODE_FREE_QUOTA = "Throttling.AllocationQuota"
MSG_FREE_QUOTA = "Free allocated quota exceeded."
MSG_SYNC = "current user api does not support synchronous calls"
#: The answer to ``X-DashScope-Async: enable`` on a synchronous call. Not in the reference pages: the
#: message (and the 403) as users report it for DashScope's synchronous models.
MSG_ASYNC = "current user api does not support asynchronous calls"
MSG_FORMAT = (
    "The request is missing required parameters or in a wrong format, please check the parameters that you send.."
)
MSG_NO_MODEL = "Model not exist."
MSG_STYLE = "The style_level is invalid."
#: The emulator's wording: the page says only that driven_id must be one of the appendix's ids.
MSG_DRIVEN_ID = (
    "The driven_id is invalid, please use one of the template ids listed in the emoji-v1 reference "
    "(e.g. mengwa_kaixin)."
)
MSG_URL = "Required URL is missing or invalid, please check the request URL."
MSG_IMAGE_FORMAT = (
    "The request URL is invalid, please check the request URL is available and the request image format is "
    "one of the following types: JPEG, JPG, PNG, BMP, and WEBP."
)
MSG_DOWNLOAD = "Unable to download the media resource during the data inspection process."
MSG_RESOLUTION = (
    "The image resolution is invalid, please make sure that the largest length of image is smaller than "
    "7000, and the smallest length of image is larger than 400."
)
MSG_AUDIO_TYPE = "File type is not supported. Allowed types are: .wav, .mp3."
MSG_AUDIO_SIZE = "File size is larger than 15MB."
MSG_AUDIO_LONG = "The input audio is longer than 60s!"
#: The emulator's wording: the pages list the ratios but not the message for another one.
MSG_RATIO = "The ratio is invalid: {model} accepts {ratios}."
MSG_CANCEL = "Failed to cancel the task, please confirm if the task is in PENDING status."
MSG_INTERNAL = "An internal error has occured, please try again later or contact service support."
#: Not from the reference: the pages list 503 but give no message for it.
MSG_UNAVAILABLE = "The service is temporarily unavailable, please try again later."
#: 400 ``DataInspectionFailed`` (content moderation; the rate-limit page names the code, not the message:
#: this is the message as users report it).
CODE_INSPECTION = "DataInspectionFailed"
MSG_INSPECTION = "Input data may contain inappropriate content."

#: ``?emulator_error=<token>`` on the image URL -> the FAILED code and message (verbatim from the reference).
EMULATOR_ERRORS: dict[str, tuple[str, str]] = {
    "InvalidFile.Content": (
        "InvalidFile.Content",
        "The input image has no human body. Please upload other image with single person.",
    ),
    "InvalidFile.Content.multi": (
        "InvalidFile.Content",
        "The input image has multi human bodies. Please upload other image with single person.",
    ),
    "InvalidFile.BodyProportion": (
        "InvalidFile.BodyProportion",
        "The proportion of the detected person in the picture is too large or too small, please upload other image.",
    ),
    "InvalidFile.Value": (
        "InvalidFile.Value",
        "The value of the image is invalid, please upload other clearer image.",
    ),
    "InvalidFile.FrontBody": (
        "InvalidFile.FrontBody",
        "The pose of the detected person is invalid, please upload other image with the front view.",
    ),
    "InvalidFile.FullFace": (
        "InvalidFile.FullFace",
        "The pose of the detected face is invalid, please upload other image with whole face.",
    ),
    "InvalidFile.FacePose": (
        "InvalidFile.FacePose",
        "The pose of the detected face is invalid, please upload other image with the expected orientation.",
    ),
    "InvalidParameter.DataInspection": ("InvalidParameter.DataInspection", MSG_DOWNLOAD),
}

#: The failure codes of face-detect (an answered, billed "not passed") and their messages. The pages list
#: the codes only: the messages of the codes shared with video synthesis are its messages; NoHuman and
#: MultiHuman take those of InvalidFile.Content (no / several people); FullBody's is the emulator's.
DETECT_ERRORS: dict[str, str] = {
    "InvalidFile.NoHuman": EMULATOR_ERRORS["InvalidFile.Content"][1],
    "InvalidFile.MultiHuman": EMULATOR_ERRORS["InvalidFile.Content.multi"][1],
    "InvalidFile.BodyProportion": EMULATOR_ERRORS["InvalidFile.BodyProportion"][1],
    "InvalidFile.Resolution": MSG_RESOLUTION,
    "InvalidFile.Value": EMULATOR_ERRORS["InvalidFile.Value"][1],
    "InvalidFile.FrontBody": EMULATOR_ERRORS["InvalidFile.FrontBody"][1],
    "InvalidFile.FullFace": EMULATOR_ERRORS["InvalidFile.FullFace"][1],
    "InvalidFile.FacePose": EMULATOR_ERRORS["InvalidFile.FacePose"][1],
    "InvalidFile.FullBody": "The detected person shows the full body, please upload other image or use the ratio 1:1.",
}


class ApiError(Exception):
    """A DashScope error answer: HTTP ``status``, ``code`` and ``message`` (the body adds ``request_id``)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def key_fingerprint(api_key: str) -> str:
    """``sha256(key)[:12]``: identifies a key in logs and billing without revealing it."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:12]


def emoji_template_seconds(driven_id: str) -> int:
    """The fixed, integer length (2..5 s) of an emoji-v1 template; deterministic across runs.

    The page says each template has a fixed integer length but not which; the emulator derives one.
    """
    return 2 + int(hashlib.sha256(driven_id.encode()).hexdigest(), 16) % 4


def ratio_of(ext_bbox: Iterable[int], model: str) -> str | None:
    """The ``video_ratio`` of an ``ext_bbox``: ``1:1``/``3:4`` (emo-v1), ``standard`` (emoji-v1), or None."""
    x1, y1, x2, y2 = ext_bbox
    if x2 <= x1 or y2 <= y1:
        return None
    aspect = (x2 - x1) / (y2 - y1)
    if model == "emoji-v1":
        return "standard" if abs(aspect - 1.0) <= EMOJI_RATIO_TOLERANCE else None
    for name, target in (("1:1", 1.0), ("3:4", 0.75)):
        if abs(aspect - target) <= RATIO_TOLERANCE * target:
            return name
    return None
