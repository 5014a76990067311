"""Fitting drivers: one image, an album of one person, a video. Composes detect -> crop -> fit.

Every driver returns a :class:`FitResult` whose ``params`` is a batched :class:`FaceParams` in the
camera frame of a DECA-style crop (kept in ``params.crop`` so buffers can be rendered back into the
original frame) and whose ``report`` holds the measured landmark and photometric errors.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from facerig.errors import InvalidInput, NoFaceFound
from facerig.fit.landmark_fit import LandmarkFitConfig, fit_landmarks, refine_lbfgs
from facerig.morphable import as_face_model
from facerig.morphable.base import FaceModel
from facerig.render.camera import ndc_to_pixels, pose_vertices, project
from facerig.render.shading import NEUTRAL_DC
from facerig.types import CropTransform, FaceLandmarks, FaceParams

log = logging.getLogger(__name__)

OUTER_EYE_CORNERS = (33, 263)  # MediaPipe ids: subject's right / left outer eye corner


@dataclass
class FitConfig:
    """Settings of a fit. ``camera_kind`` perspective uses ``focal`` (NDC units; 12 ~ a 9.5 deg FOV)."""

    crop_size: int = 224
    crop_scale: float = 1.25
    camera_kind: str = "weak_perspective"
    focal: float = 12.0
    landmark: LandmarkFitConfig = field(default_factory=LandmarkFitConfig)
    refine: bool | None = None          # L-BFGS refinement; default: only where needed (flame/perspective)
    photometric: bool = True            # fit SH lighting + albedo against the image
    texture_size: int = 0               # >0: also unwrap a UV albedo texture of this size
    temporal_sigma: float = 1.0         # video: Gaussian smoothing of pose/expression, in frames
    keyframes: int = 24                 # video: frames used to estimate the shared identity
    dtype: torch.dtype = torch.float32


@dataclass
class FitResult:
    params: FaceParams
    landmarks: list[FaceLandmarks | None]
    report: dict[str, Any]
    images: list[np.ndarray] | None = None


# ------------------------------------------------------------------------------------------
# building blocks


def make_crops(landmarks: Sequence[FaceLandmarks], config: FitConfig) -> list[CropTransform]:
    from facerig.detect.crops import deca_crop

    return [deca_crop(lm, size=config.crop_size, scale=config.crop_scale) for lm in landmarks]


def landmark_targets(model: FaceModel, landmarks: Sequence[FaceLandmarks], crops: Sequence[CropTransform],
                     dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """NDC targets (B, L, 2) (y down) and relative depth (B, L) (larger = nearer) of the model's landmarks."""
    idx = model.landmark_index.cpu().numpy()
    tg, dp = [], []
    for lm, crop in zip(landmarks, crops, strict=True):
        p = crop.apply(lm.points[idx].astype(np.float64))
        ndc = p[:, :2] / crop.size * 2.0 - 1.0
        tg.append(ndc)
        dp.append(-p[:, 2] / crop.size * 2.0)  # MediaPipe z: smaller = nearer
    return torch.tensor(np.stack(tg), dtype=dtype), torch.tensor(np.stack(dp), dtype=dtype)


def project_landmarks_to_frame(model: FaceModel, params: FaceParams) -> np.ndarray:
    """Model landmarks of each face projected into its original frame: (B, L, 2) pixels."""
    with torch.no_grad():
        v = model(params.identity, params.expression, params.jaw_pose)
        world = pose_vertices(v, params.rotation)
        ndc = project(model.landmarks(world), params.camera, params.camera_kind, params.focal)[..., :2]
    out = []
    for i in range(params.batch_size):
        crop = params.crop[i] if params.crop is not None else None
        size = crop.size if crop is not None else 1
        px = ndc_to_pixels(ndc[i].double(), size).numpy()
        out.append(crop.invert(px) if crop is not None else px)
    return np.stack(out)


def landmark_error_report(model: FaceModel, params: FaceParams,
                          landmarks: Sequence[FaceLandmarks | None]) -> dict[str, Any]:
    """Reprojection error of the fitted model landmarks against the detections, in % of the
    inter-ocular (outer eye corner) distance: per image median and 90th percentile."""
    idx = model.landmark_index.cpu().numpy()
    proj = project_landmarks_to_frame(model, params)
    per: list[dict[str, float] | None] = []
    for i, lm in enumerate(landmarks):
        if lm is None:
            per.append(None)
            continue
        det = lm.points[idx, :2]
        iod = float(np.linalg.norm(lm.points[OUTER_EYE_CORNERS[0], :2] - lm.points[OUTER_EYE_CORNERS[1], :2]))
        err = np.linalg.norm(proj[i] - det, axis=1) / max(iod, 1e-6) * 100
        per.append({"median_pct_iod": float(np.median(err)), "p90_pct_iod": float(np.percentile(err, 90)),
                    "mean_px": float(np.mean(err) * iod / 100), "iod_px": iod})
    valid = [p for p in per if p is not None]
    summary = {
        "median_pct_iod": float(np.median([p["median_pct_iod"] for p in valid])) if valid else math.nan,
        "p90_pct_iod": float(np.median([p["p90_pct_iod"] for p in valid])) if valid else math.nan,
    }
    return {"landmark_error": summary, "per_image": per}


def _assemble(model: FaceModel, fit: dict[str, torch.Tensor], crops: list[CropTransform], config: FitConfig,
              meta: dict[str, Any]) -> FaceParams:
    b = fit["rotation"].shape[0]
    light = torch.zeros(b, 9, 3, dtype=config.dtype)
    light[:, 0, :] = NEUTRAL_DC  # shading 1.0 (see conventions.md), replaced by the photometric fit
    camera = fit["camera"]
    if config.camera_kind == "perspective" and camera.shape[-1] == 3 and fit.get("camera_kind") != "perspective":
        camera = weak_to_perspective(camera, config.focal)
    return FaceParams(
        model=model.name,
        identity=fit["identity"].to(config.dtype),
        expression=fit["expression"].to(config.dtype),
        expression_names=model.expression_names,
        jaw_pose=fit["jaw_pose"].to(config.dtype),
        rotation=fit["rotation"].to(config.dtype),
        camera=camera.to(config.dtype),
        light=light,
        camera_kind=config.camera_kind,
        focal=config.focal,
        crop=list(crops),
        meta=dict(meta, model_fingerprint=model.fingerprint()),
    )


def weak_to_perspective(camera: torch.Tensor, focal: float) -> torch.Tensor:
    """Weak perspective (s, tx, ty) -> perspective translation (tx, ty, tz) with the same image
    of the head's origin and the same scale there (tz = -focal / s)."""
    s = camera[:, 0]
    return torch.stack([camera[:, 1], camera[:, 2], -focal / s], 1)


def _geometry_fit(model: FaceModel, landmarks: Sequence[FaceLandmarks], config: FitConfig,
                  share_identity: bool = False, fixed_identity: torch.Tensor | None = None
                  ) -> tuple[dict[str, torch.Tensor], list[CropTransform], torch.Tensor]:
    crops = make_crops(landmarks, config)
    m64 = float64_copy(model)
    target, depth = landmark_targets(model, landmarks, crops, dtype=torch.float64)
    dev = m64.mean.device
    target, depth = target.to(dev), depth.to(dev)
    res = fit_landmarks(m64, target, depth, config.landmark, share_identity=share_identity,
                        fixed_identity=None if fixed_identity is None else fixed_identity.double())
    out = {"identity": res.identity, "expression": res.expression, "jaw_pose": res.jaw_pose,
           "rotation": res.rotation, "camera": res.camera}
    refine = config.refine if config.refine is not None else (
        model.has_jaw_joint or config.camera_kind == "perspective")
    if refine:
        cam = res.camera if config.camera_kind == "weak_perspective" else weak_to_perspective(res.camera, config.focal)
        assert res.base_weights is not None  # fit_landmarks always sets it
        r = refine_lbfgs(m64, target, res.base_weights, res.identity, res.expression, res.jaw_pose, res.rotation, cam,
                         camera_kind=config.camera_kind, focal=config.focal,
                         identity_prior=config.landmark.identity_prior,
                         expression_prior=config.landmark.expression_prior,
                         fit_identity=fixed_identity is None and not share_identity)
        out.update(r)
        out["camera_kind"] = config.camera_kind  # type: ignore[assignment]
    return out, crops, res.weights


def float64_copy(model: FaceModel) -> FaceModel:
    """A float64 copy of the model for the solvers (cached on the model; the model is not changed)."""
    if next(iter(model.buffers())).dtype == torch.float64:
        return model
    cached = model.__dict__.get("_float64_copy")
    if cached is None:
        import copy

        cached = copy.deepcopy(model).double()
        cached.__dict__.pop("_lm_basis_cache", None)
        model.__dict__["_float64_copy"] = cached
    return cached


# ------------------------------------------------------------------------------------------
# public drivers


def fit_landmark_sets(model: FaceModel, landmarks: Sequence[FaceLandmarks], config: FitConfig | None = None,
                      share_identity: bool = False, fixed_identity: torch.Tensor | None = None) -> FaceParams:
    """Geometry-only fit from detections (no image needed)."""
    cfg = config or FitConfig()
    fit, crops, _ = _geometry_fit(model, landmarks, cfg, share_identity, fixed_identity)
    return _assemble(model, fit, crops, cfg, {"share_identity": share_identity})


def fit_images(
    images: Sequence[Any],
    model: FaceModel | str = "builtin",
    config: FitConfig | None = None,
    detector: Any = None,
    share_identity: bool = False,
    select: str | int = "largest",
    names: Sequence[str] | None = None,
) -> FitResult:
    """Detect and fit one face per image. ``share_identity``: the images show one person (album)."""
    from facerig.io.image import load_image

    cfg = config or FitConfig()
    model = as_face_model(model)
    det = detector or _default_detector()
    arrays, lms = [], []
    for i, img in enumerate(images):
        name = names[i] if names else (str(img) if isinstance(img, str) else f"image {i}")
        arr = load_image(img) if not isinstance(img, np.ndarray) else load_image(img)
        arrays.append(arr)
        lms.append(det.detect_one(arr, select=select, source=name))
    params = fit_landmark_sets(model, lms, cfg, share_identity=share_identity)
    report = landmark_error_report(model, params, lms)
    if cfg.photometric:
        from facerig.fit.photometric import fit_photometric

        params, photo = fit_photometric(model, params, arrays, texture_size=cfg.texture_size)
        report["photometric"] = photo
    params.meta["landmark_error"] = report["landmark_error"]
    if len(lms) == 1:
        keep_detections(params, lms[0])
    return FitResult(params, list(lms), report, arrays)


def keep_detections(params: FaceParams, lm: FaceLandmarks) -> FaceParams:
    """Store one face's detected 2D landmarks (frame pixels, JSON-friendly) in
    ``params.meta["landmarks_px"]``: engines use them where the fitted model is not close enough
    (the warp engine's lids)."""
    params.meta["landmarks_px"] = np.round(np.asarray(lm.points, np.float64)[:, :2], 2).tolist()
    return params


def fit_image(image: Any, model: FaceModel | str = "builtin", config: FitConfig | None = None,
              detector: Any = None, select: str | int = "largest") -> FitResult:
    return fit_images([image], model, config, detector, select=select)


def fit_album(images: Sequence[Any], model: FaceModel | str = "builtin", config: FitConfig | None = None,
              detector: Any = None) -> FitResult:
    """An album of one person: one identity shared by all images, per-image expression/pose/light."""
    if len(images) < 1:
        raise InvalidInput("images", "at least one image", 0)
    return fit_images(images, model, config, detector, share_identity=True)


def fit_video(
    video: Any,
    model: FaceModel | str = "builtin",
    config: FitConfig | None = None,
    detector: Any = None,
    max_frames: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> FitResult:
    """Fit every frame of a video (path or sequence of frames): identity shared (estimated on
    keyframes), pose and expression per frame, temporally smoothed; frames with no face get
    parameters interpolated from their neighbours and are listed in ``report['missing_frames']``."""
    cfg = config or FitConfig()
    model = as_face_model(model)
    frames: np.ndarray | list[np.ndarray]
    if isinstance(video, (str, bytes)) or hasattr(video, "__fspath__"):
        from facerig.io.video import read_video

        frames, info = read_video(video, max_frames=max_frames)
        fps = float(info.fps)
    else:
        frames = list(video)[: max_frames or None]
        fps = 25.0
    if len(frames) == 0:
        raise InvalidInput("video", "at least one frame", 0)
    det = detector or _default_detector()
    lms: list[FaceLandmarks | None] = det.detect_video(frames)
    found = [i for i, lm in enumerate(lms) if lm is not None]
    if not found:
        raise NoFaceFound("the video", f"no face in any of its {len(frames)} frames")
    # shared identity from evenly spaced keyframes
    keys = [found[int(round(k))] for k in np.linspace(0, len(found) - 1, min(cfg.keyframes, len(found)))]
    key_params = fit_landmark_sets(model, [lms[k] for k in keys], cfg, share_identity=True)  # type: ignore[misc]
    ident = key_params.identity[:1]
    geo = fit_landmark_sets(model, [lms[i] for i in found], cfg, fixed_identity=ident)  # type: ignore[misc]
    params = _fill_and_smooth(geo, found, len(frames), cfg.temporal_sigma)
    report = landmark_error_report(model, params, lms)
    if cfg.photometric:
        from facerig.fit.photometric import fit_photometric

        params, photo = fit_photometric(model, params, frames, texture_size=cfg.texture_size, share_albedo=True)
        report["photometric"] = photo
    report["missing_frames"] = [i for i, lm in enumerate(lms) if lm is None]
    report["fps"] = fps
    params.meta.update(fps=fps, n_frames=len(frames), missing_frames=report["missing_frames"],
                       landmark_error=report["landmark_error"])
    return FitResult(params, lms, report, list(frames))


def _fill_and_smooth(p: FaceParams, found: list[int], n: int, sigma: float) -> FaceParams:
    """Interpolate parameters over frames without a face, then zero-phase Gaussian smoothing."""
    t_found = np.asarray(found, dtype=np.float64)
    t_all = np.arange(n, dtype=np.float64)

    def interp(x: torch.Tensor) -> torch.Tensor:
        a = x.detach().cpu().double().numpy().reshape(len(found), -1)
        out = np.stack([np.interp(t_all, t_found, a[:, j]) for j in range(a.shape[1])], 1)
        if sigma > 0 and n > 1:
            from scipy.ndimage import gaussian_filter1d

            out = gaussian_filter1d(out, sigma, axis=0, mode="nearest")
        return torch.tensor(out, dtype=x.dtype).reshape(n, *x.shape[1:])

    assert p.jaw_pose is not None  # FaceParams.__post_init__ fills it
    crops: list[CropTransform | None] = []
    for i in range(n):
        j = int(np.argmin(np.abs(t_found - i)))
        crops.append(p.crop[j] if p.crop else None)
    # crops differ per frame: smooth in a common frame by re-expressing camera relative to each crop
    # (the DECA crop follows the face, so nearby frames have nearly equal crops); we keep each
    # frame's own crop where detected and the nearest detected one elsewhere.
    out = p.replace(
        identity=p.identity[:1].expand(n, -1).clone(),
        expression=interp(p.expression),
        jaw_pose=interp(p.jaw_pose),
        rotation=interp(p.rotation),
        camera=_smooth_camera_in_frame(p, found, n, sigma, crops),
        light=p.light[:1].expand(n, -1, -1).clone(),
        albedo=None,
        crop=crops,
    )
    return out


def _smooth_camera_in_frame(p: FaceParams, found: list[int], n: int, sigma: float,
                            crops: list[CropTransform | None]) -> torch.Tensor:
    """Smooth the camera in frame pixels (crop-independent): head origin position and scale in the
    frame are interpolated/smoothed, then expressed again in each frame's crop."""
    from scipy.ndimage import gaussian_filter1d

    cam = p.camera.detach().double().numpy()
    assert p.crop is not None  # p comes from fit_landmark_sets, which sets the crops
    pts = []
    for k in range(len(found)):
        crop = p.crop[k]
        s, tx, ty = cam[k] if p.camera_kind == "weak_perspective" else (1.0, 0.0, 0.0)
        # head origin in crop NDC: (s*tx, -s*ty); in pixels, then in the frame
        o = crop.invert(np.array([[(s * tx + 1) * crop.size / 2, (-s * ty + 1) * crop.size / 2]]))[0]
        pts.append([o[0], o[1], s * crop.size / 2 / crop.scale])  # frame pixels per model unit
    pts_a = np.asarray(pts)
    t_found = np.asarray(found, dtype=np.float64)
    t_all = np.arange(n, dtype=np.float64)
    full = np.stack([np.interp(t_all, t_found, pts_a[:, j]) for j in range(3)], 1)
    if sigma > 0 and n > 1:
        full = gaussian_filter1d(full, sigma, axis=0, mode="nearest")
    if p.camera_kind != "weak_perspective":
        return torch.tensor(np.stack([np.interp(t_all, t_found, cam[:, j]) for j in range(3)], 1), dtype=p.camera.dtype)
    out = []
    for i in range(n):
        crop_i = crops[i]
        assert crop_i is not None  # built from p.crop, which is set (see above)
        o = crop_i.apply(full[i : i + 1, :2])[0]
        s = full[i, 2] * crop_i.scale * 2 / crop_i.size
        ndc = o / crop_i.size * 2 - 1
        out.append([s, ndc[0] / s, -ndc[1] / s])
    return torch.tensor(out, dtype=p.camera.dtype)


_DETECTOR = None


def _default_detector() -> Any:
    global _DETECTOR
    if _DETECTOR is None:
        from facerig.detect.mediapipe import FaceDetector

        _DETECTOR = FaceDetector()
    return _DETECTOR
