"""Face detection (MediaPipe face mesh, 478 landmarks), named landmark sets and invertible crops.

Importing this package is cheap: mediapipe is imported only when a :class:`FaceDetector` first runs.

* :class:`FaceDetector` (``detect``, ``detect_one``, ``detect_batch``, ``detect_video``)
* crops: :func:`ffhq_crop`, :func:`deca_crop`, :func:`insightface_crop`, :func:`square_crop`,
  :func:`warp_to_crop`, :func:`paste_back`, :func:`crop_landmarks`
* :mod:`facerig.detect.landmark_sets`: named MediaPipe index loops, single points, iBUG-68 mapping
"""

from __future__ import annotations

from facerig.detect import landmark_sets
from facerig.detect.crops import (
    crop_landmarks,
    deca_crop,
    ffhq_crop,
    insightface_crop,
    paste_back,
    square_crop,
    warp_to_crop,
)
from facerig.detect.mediapipe import FaceDetector
from facerig.io.lazy_imports import install as _lazy_install  # noqa: E402

_lazy_install()  # MediaPipe's drawing helpers (matplotlib) load only if used

__all__ = [
    "FaceDetector",
    "crop_landmarks",
    "deca_crop",
    "ffhq_crop",
    "insightface_crop",
    "landmark_sets",
    "paste_back",
    "square_crop",
    "warp_to_crop",
]
