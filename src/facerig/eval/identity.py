"""Identity metrics: dlib / face_recognition 128-d encodings, ID distance, re-ID accuracy, CSIM,
an identity loss built on the torch port of dlib's ResNet, and distribution distances on embeddings.

Conventions (see docs/metrics.md):

* **ID distance** (RigFace): L2 between dlib 128-d descriptors; < 0.6 = same person.
* **CSIM**: cosine similarity between embeddings of *any* network; the caller names the estimator
  (the papers use ArcFace, whose weights facerig does not ship).
* Faces the detector misses are **never skipped silently**: embedding rows are NaN, ``found`` is
  False, and every result dict carries ``num_failed``.
* Landmarks for dlib are in dlib pixel coordinates (pixel centres at integers); facerig/MediaPipe
  frame coordinates are converted with ``- 0.5``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from facerig.errors import AssetMissing, InvalidInput
from facerig.eval.dlib_port import (
    ESTIMATOR_PORT,
    DlibResNet,
    dlib_model_path,
    extract_face_chip,
    load_dlib_resnet,
)

__all__ = [
    "ESTIMATOR_DLIB",
    "ESTIMATOR_PORT",
    "SAME_PERSON_THRESHOLD",
    "EmbedResult",
    "dlib_landmarks5",
    "dlib_embed",
    "port_embed",
    "mediapipe_to_dlib5",
    "id_distance",
    "id_distance_images",
    "reid_accuracy",
    "csim",
    "IdentityLoss",
    "fid_dlib_embeddings",
    "kid_dlib_embeddings",
]

ESTIMATOR_DLIB = "dlib_resnet_v1 (dlib 20 face_recognition_model_v1, face_recognition_models 0.3.0)"
SAME_PERSON_THRESHOLD = 0.6

# dlib 5-point order <- MediaPipe ids: 0/1 outer/inner corner of the eye on the image's right (subject's
# left: 263, 362), 2/3 outer/inner corner of the other eye (33, 133), 4 nose base (164: below the
# columella; measured on astronaut 1 px from dlib's point).
MEDIAPIPE_TO_DLIB5 = (263, 362, 33, 133, 164)


@dataclass
class EmbedResult:
    """Embeddings of N images: ``embeddings`` (N, D) float64 (NaN rows where no face was found),
    ``found`` (N,) bool, ``landmarks5`` (N, 5, 2) dlib pixel coordinates (NaN where not found),
    ``estimator`` the network that produced them."""

    embeddings: np.ndarray
    found: np.ndarray
    landmarks5: np.ndarray
    estimator: str

    @property
    def num_failed(self) -> int:
        return int((~self.found).sum())

    def __len__(self) -> int:
        return len(self.found)


@lru_cache(maxsize=1)
def _dlib_models() -> tuple[Any, Any, Any]:
    try:
        import dlib
    except ImportError as e:  # pragma: no cover - dlib is an optional extra
        raise AssetMissing("dlib", "the Python environment", "pip install 'facerig[identity]' (dlib-bin)") from e
    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(dlib_model_path("shape_predictor_5_face_landmarks.dat")))
    fr = dlib.face_recognition_model_v1(str(dlib_model_path()))
    return det, sp, fr


def _as_uint8(image: Any) -> np.ndarray:
    from facerig.io.image import load_image

    arr = load_image(image, min_side=8)
    return np.ascontiguousarray(arr)


def dlib_landmarks5(image: Any, box: Sequence[float] | None = None, upsample: int = 1,
                    select: str = "largest") -> np.ndarray | None:
    """dlib's HOG detector (or the given ``box`` (x0, y0, x1, y1)) + the 5-point shape predictor.
    Returns (5, 2) float64 dlib pixel coordinates, or None when no face is found."""
    import dlib

    det, sp, _ = _dlib_models()
    img = _as_uint8(image)
    if box is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        rect = dlib.rectangle(x0, y0, x1, y1)
    else:
        rects = list(det(img, upsample))
        if not rects:
            return None
        if select == "largest":
            rect = max(rects, key=lambda r: r.area())
        elif select == "first":
            rect = rects[0]
        else:
            raise InvalidInput("select", "'largest' or 'first'", select)
    s = sp(img, rect)
    return np.array([[p.x, p.y] for p in s.parts()], dtype=np.float64)


def dlib_embed(images: Sequence[Any], boxes: Sequence[Sequence[float] | None] | None = None, *,
               landmarks5: Sequence[np.ndarray | None] | None = None, upsample: int = 1,
               backend: str = "dlib", select: str = "largest") -> EmbedResult:
    """128-d descriptors with dlib's own pipeline: HOG detection (or the given boxes, or given 5-point
    landmarks), ``shape_predictor_5_face_landmarks``, ``compute_face_descriptor`` on the aligned
    150x150 chip (padding 0.25, no jitter).

    ``backend="port"`` runs the same chips through the torch port (:mod:`facerig.eval.dlib_port`)
    instead of dlib's C++ network (same landmarks and chips; cosine to dlib > 0.9999).
    Images without a face get a NaN row and ``found=False`` (counted in ``num_failed``)."""
    import dlib

    if backend not in ("dlib", "port"):
        raise InvalidInput("backend", "'dlib' or 'port'", backend)
    n = len(images)
    if boxes is not None and len(boxes) != n:
        raise InvalidInput("boxes", f"{n} boxes (or None entries)", len(boxes))
    if landmarks5 is not None and len(landmarks5) != n:
        raise InvalidInput("landmarks5", f"{n} (5, 2) arrays (or None entries)", len(landmarks5))
    _, sp, fr = _dlib_models()
    emb = np.full((n, 128), np.nan)
    lms = np.full((n, 5, 2), np.nan)
    found = np.zeros(n, dtype=bool)
    chips: list[tuple[int, np.ndarray]] = []
    for i, im in enumerate(images):
        img = _as_uint8(im)
        if landmarks5 is not None and landmarks5[i] is not None:
            pts: np.ndarray | None = np.asarray(landmarks5[i], dtype=np.float64).reshape(5, 2)
        else:
            pts = dlib_landmarks5(img, boxes[i] if boxes is not None else None, upsample, select)
        if pts is None:
            continue
        parts = dlib.points([dlib.point(int(round(x)), int(round(y))) for x, y in pts])
        r = np.concatenate([pts.min(0), pts.max(0)]).round().astype(int)
        shape = dlib.full_object_detection(dlib.rectangle(*r.tolist()), parts)
        found[i] = True
        lms[i] = [[p.x, p.y] for p in parts]
        if backend == "dlib":
            emb[i] = np.asarray(fr.compute_face_descriptor(img, shape, 0, 0.25))
        else:
            chips.append((i, np.asarray(dlib.get_face_chip(img, shape, 150, 0.25))))
    if chips:
        net = load_dlib_resnet()
        x = torch.stack([torch.from_numpy(c.copy()).permute(2, 0, 1).float() / 255.0 for _, c in chips])
        with torch.no_grad():
            out = net(x).double().numpy()
        for (i, _), e in zip(chips, out, strict=True):
            emb[i] = e
    return EmbedResult(emb, found, lms, ESTIMATOR_DLIB if backend == "dlib" else ESTIMATOR_PORT)


def mediapipe_to_dlib5(landmarks: Any) -> np.ndarray | torch.Tensor:
    """dlib-ordered 5 points (dlib pixel coordinates) from MediaPipe 478 landmarks (a FaceLandmarks,
    or a (478, 2+) array / tensor in facerig frame coordinates). Close to, not identical with, dlib's
    own predictor (embeddings agree to cosine ~0.99; use dlib's predictor for reported metrics)."""
    pts = getattr(landmarks, "points", landmarks)
    if isinstance(pts, torch.Tensor):
        return pts[..., list(MEDIAPIPE_TO_DLIB5), :2] - 0.5
    p = np.asarray(pts, dtype=np.float64)
    if p.shape[-2] < 468:
        raise InvalidInput("landmarks", "MediaPipe (478, 2 or 3) landmarks", p.shape)
    return p[..., list(MEDIAPIPE_TO_DLIB5), :2] - 0.5


def port_embed(images: torch.Tensor, points5: torch.Tensor | np.ndarray, net: DlibResNet | None = None,
               *, antialias: bool = True, quantize: bool = False) -> torch.Tensor:
    """Differentiable dlib descriptors: images (B, 3, H, W) in [0, 1], points5 (B, 5, 2) dlib pixel
    coordinates -> (B, 128). Chips are cut exactly like ``dlib.get_face_chip`` (pyramid levels
    included); ``quantize=True`` also reproduces dlib's 8-bit rounding (straight-through gradients)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise InvalidInput("images", "a (B, 3, H, W) tensor in [0, 1]", tuple(images.shape))
    pts = torch.as_tensor(points5)
    if pts.shape != (images.shape[0], 5, 2):
        raise InvalidInput("points5", f"a ({images.shape[0]}, 5, 2) array", tuple(pts.shape))
    net = net or load_dlib_resnet(device=images.device)
    chips = torch.stack([extract_face_chip(images[i], pts[i], quantize=quantize, antialias=antialias)
                         for i in range(images.shape[0])])
    return net(chips.to(images.dtype))


# ------------------------------------------------------------------------------------------
# metrics


def _emb(x: Any, name: str) -> tuple[np.ndarray, str | None]:
    if isinstance(x, EmbedResult):
        return x.embeddings, x.estimator
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2:
        raise InvalidInput(name, "(N, D) embeddings", a.shape)
    return a, None


def _pair_check(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise InvalidInput("embeddings", f"two arrays of one shape, first {a.shape}", b.shape)


def id_distance(a: Any, b: Any, *, threshold: float = SAME_PERSON_THRESHOLD, estimator: str | None = None) -> dict[str, Any]:
    """RigFace's ID distance: per-pair L2 between dlib descriptors (EmbedResult or (N, 128) arrays).
    Pairs where either face was not found are excluded from the mean and counted in ``num_failed``.
    ``same_person_rate`` = fraction of valid pairs below ``threshold`` (0.6)."""
    ea, sa = _emb(a, "a")
    eb, sb = _emb(b, "b")
    _pair_check(ea, eb)
    d = np.linalg.norm(ea - eb, axis=1)
    ok = np.isfinite(d)
    return {
        "metric": "id_distance",
        "estimator": estimator or sa or sb or ESTIMATOR_DLIB,
        "value": float(d[ok].mean()) if ok.any() else float("nan"),
        "std": float(d[ok].std()) if ok.any() else float("nan"),
        "same_person_rate": float((d[ok] < threshold).mean()) if ok.any() else float("nan"),
        "threshold": threshold,
        "per_item": [float(v) if np.isfinite(v) else None for v in d],
        "num_pairs": int(len(d)),
        "num_failed": int((~ok).sum()),
    }


def id_distance_images(sources: Sequence[Any], outputs: Sequence[Any], *, backend: str = "dlib",
                       upsample: int = 1) -> dict[str, Any]:
    """ID distance between source and output images (embedded with :func:`dlib_embed`)."""
    if len(sources) != len(outputs):
        raise InvalidInput("outputs", f"{len(sources)} images (one per source)", len(outputs))
    ra = dlib_embed(sources, upsample=upsample, backend=backend)
    rb = dlib_embed(outputs, upsample=upsample, backend=backend)
    res = id_distance(ra, rb)
    res["num_failed_sources"] = ra.num_failed
    res["num_failed_outputs"] = rb.num_failed
    return res


def reid_accuracy(query: Any, gallery: Any, labels: Sequence[Any], gallery_labels: Sequence[Any] | None = None,
                  *, metric: str = "l2", estimator: str | None = None) -> dict[str, Any]:
    """Top-1 re-identification accuracy: each query embedding's nearest gallery embedding (L2, or
    ``metric="cosine"``) must carry the query's label. ``labels``: one per query; ``gallery_labels``
    one per gallery row (default: row index, so ``labels[i]`` is the gallery row of query i's identity).
    Queries without a face count as failures (wrong) and are reported in ``num_failed``."""
    q, sq = _emb(query, "query")
    g, sg = _emb(gallery, "gallery")
    if len(labels) != len(q):
        raise InvalidInput("labels", f"{len(q)} labels", len(labels))
    gl = np.asarray(list(gallery_labels) if gallery_labels is not None else np.arange(len(g)), dtype=object)
    if len(gl) != len(g):
        raise InvalidInput("gallery_labels", f"{len(g)} labels", len(gl))
    gok = np.isfinite(g).all(1)
    if not gok.any():
        raise InvalidInput("gallery", "at least one valid embedding", "none")
    g2, gl2 = g[gok], gl[gok]
    if metric == "l2":
        dist = np.linalg.norm(q[:, None, :] - g2[None], axis=2)
    elif metric == "cosine":
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        gn = g2 / np.linalg.norm(g2, axis=1, keepdims=True)
        dist = 1 - qn @ gn.T
    else:
        raise InvalidInput("metric", "'l2' or 'cosine'", metric)
    qok = np.isfinite(q).all(1)
    pred = np.full(len(q), None, dtype=object)
    pred[qok] = gl2[np.argmin(dist[qok], axis=1)]
    correct = np.array([bool(qok[i] and pred[i] == labels[i]) for i in range(len(q))])
    return {
        "metric": "reid_accuracy",
        "estimator": estimator or sq or sg or ESTIMATOR_DLIB,
        "distance": metric,
        "value": float(correct.mean()) if len(q) else float("nan"),
        "predicted": pred.tolist(),
        "num_queries": int(len(q)),
        "num_failed": int((~qok).sum()),
        "num_gallery_failed": int((~gok).sum()),
    }


def csim(emb_a: Any, emb_b: Any, *, estimator: str | None = None) -> dict[str, Any]:
    """CSIM: per-pair cosine similarity of embeddings from any identity network (the papers use
    ArcFace; name yours in ``estimator``). NaN rows (no face) are excluded and counted."""
    a, sa = _emb(emb_a, "emb_a")
    b, sb = _emb(emb_b, "emb_b")
    _pair_check(a, b)
    c = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    ok = np.isfinite(c)
    return {
        "metric": "csim",
        "estimator": estimator or sa or sb or "user-supplied embeddings (estimator not named)",
        "value": float(c[ok].mean()) if ok.any() else float("nan"),
        "per_item": [float(v) if np.isfinite(v) else None for v in c],
        "num_pairs": int(len(c)),
        "num_failed": int((~ok).sum()),
    }


def _finite_rows(x: Any, name: str) -> tuple[np.ndarray, int, str | None]:
    e, s = _emb(x, name)
    ok = np.isfinite(e).all(1)
    return e[ok], int((~ok).sum()), s


def fid_dlib_embeddings(a: Any, b: Any) -> dict[str, Any]:
    """Identity Fréchet distance: the Fréchet distance between Gaussians fitted to two sets of dlib
    128-d identity descriptors (NOT the Inception FID; values are in dlib descriptor units squared)."""
    from facerig.eval.image_quality import frechet_distance

    ea, fa, sa = _finite_rows(a, "a")
    eb, fb, sb = _finite_rows(b, "b")
    return {"metric": "fid_dlib_embeddings", "estimator": sa or sb or ESTIMATOR_DLIB,
            "value": frechet_distance(ea, eb), "n_a": len(ea), "n_b": len(eb), "num_failed": fa + fb}


def kid_dlib_embeddings(a: Any, b: Any, *, subsets: int = 50, subset_size: int = 100, seed: int = 0) -> dict[str, Any]:
    """Identity KID: the unbiased polynomial-kernel MMD^2 (KID's estimator) on dlib descriptors."""
    from facerig.eval.image_quality import kernel_distance

    ea, fa, sa = _finite_rows(a, "a")
    eb, fb, sb = _finite_rows(b, "b")
    m, s = kernel_distance(ea, eb, subsets=subsets, subset_size=subset_size, seed=seed)
    return {"metric": "kid_dlib_embeddings", "estimator": sa or sb or ESTIMATOR_DLIB, "value": m, "std": s,
            "n_a": len(ea), "n_b": len(eb), "num_failed": fa + fb}


# ------------------------------------------------------------------------------------------
# identity loss


class IdentityLoss(nn.Module):
    """Identity loss on the torch port of dlib's ResNet.

    ``forward(images, points5=None, target=None, *, chips=None, target_images=None, target_points5=None)``

    * ``images`` (B, 3, H, W) in [0, 1] with ``points5`` (B, 5, 2) dlib-ordered landmarks (dlib pixel
      coordinates; from :func:`dlib_landmarks5` or :func:`mediapipe_to_dlib5`); chips are cut like
      ``dlib.get_face_chip`` with torch sampling, so gradients reach the pixels; or
    * ``chips`` (B, 3, 150, 150) already-aligned dlib chips (e.g. the output of a crop step).
    * ``target``: (B, 128) or (1, 128) reference descriptors (detached), or give
      ``target_images``/``target_points5`` (embedded without gradients); or set them once with
      :meth:`set_target`.

    ``mode="cosine"`` returns mean(1 - cos); ``mode="l2"`` mean L2 distance (dlib units, 0.6 = threshold).
    """

    def __init__(self, mode: str = "cosine", net: DlibResNet | None = None, reduction: str = "mean"):
        super().__init__()
        if mode not in ("cosine", "l2"):
            raise InvalidInput("mode", "'cosine' or 'l2'", mode)
        if reduction not in ("mean", "none"):
            raise InvalidInput("reduction", "'mean' or 'none'", reduction)
        self.mode = mode
        self.reduction = reduction
        self.net = net or load_dlib_resnet()
        self.net.requires_grad_(False)
        self.register_buffer("target", None)
        self.estimator = ESTIMATOR_PORT

    def embed(self, images: torch.Tensor | None = None, points5: Any = None, chips: torch.Tensor | None = None) -> torch.Tensor:
        if chips is not None:
            if chips.ndim != 4 or tuple(chips.shape[1:]) != (3, 150, 150):
                raise InvalidInput("chips", "(B, 3, 150, 150) dlib-aligned chips in [0, 1]", tuple(chips.shape))
            return self.net(chips)
        if images is None or points5 is None:
            raise InvalidInput("images/points5", "images with 5-point landmarks, or chips", None)
        return port_embed(images, points5, self.net)

    @torch.no_grad()
    def set_target(self, images: torch.Tensor | None = None, points5: Any = None, *, chips: torch.Tensor | None = None,
                   embeddings: torch.Tensor | None = None) -> torch.Tensor:
        t = embeddings if embeddings is not None else self.embed(images, points5, chips)
        self.target = torch.as_tensor(t).detach().float()
        return self.target

    def forward(self, images: torch.Tensor | None = None, points5: Any = None, target: torch.Tensor | None = None,
                *, chips: torch.Tensor | None = None, target_images: torch.Tensor | None = None,
                target_points5: Any = None) -> torch.Tensor:
        e = self.embed(images, points5, chips)
        if target is None and target_images is not None:
            with torch.no_grad():
                target = self.embed(target_images, target_points5)
        if target is None:
            target = self.target
        if target is None:
            raise InvalidInput("target", "reference embeddings (target=, target_images= or set_target())", None)
        t = torch.as_tensor(target).to(e).detach()
        if t.ndim == 1:
            t = t[None]
        if self.mode == "cosine":
            loss = 1 - F.cosine_similarity(e, t.expand_as(e), dim=1)
        else:
            loss = torch.linalg.vector_norm(e - t, dim=1)
        return loss.mean() if self.reduction == "mean" else loss
