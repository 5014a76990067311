"""Evaluation: identity (dlib descriptors, torch port, identity loss), image quality (PSNR, SSIM,
LPIPS, FID/KID), edit accuracy by re-fitting (APD/AED/ALD), video metrics, blendshape-derived AUs,
CLIP score. Every metric returns a dict naming ``metric`` and ``estimator``; see docs/metrics.md.

Submodules are imported lazily so ``import facerig.eval`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "identity": ("dlib_embed", "dlib_landmarks5", "port_embed", "mediapipe_to_dlib5", "id_distance",
                 "id_distance_images", "reid_accuracy", "csim", "IdentityLoss", "fid_dlib_embeddings",
                 "kid_dlib_embeddings", "EmbedResult"),
    "dlib_port": ("DlibResNet", "load_dlib_resnet", "parse_dlib_net", "extract_face_chip", "face_chip_geometry"),
    "image_quality": ("psnr", "ssim", "ssim_map", "frechet_distance", "kernel_distance", "LPIPS", "lpips",
                      "InceptionV3FID", "fid", "kid", "fid_from_features", "kid_from_features", "fid_features"),
    "edit_accuracy": ("compare_params", "edit_accuracy", "deca_reinference_rmse", "blendshape_aus", "au_accuracy",
                      "clip_score", "ARKIT_TO_AU"),
    "video": ("landmark_jitter", "temporal_warping_error", "identity_drift", "fvd", "fvd_from_features"),
}
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'facerig.eval' has no attribute {name!r}")
    return getattr(importlib.import_module(f"facerig.eval.{mod}"), name)
