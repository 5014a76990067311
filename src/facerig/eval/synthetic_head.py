"""Synthetic ground truth for pose estimation and pose edits: a whole ICT-FaceKit head (skull, ears,
neck, eyeballs, teeth) with painted features, rendered at a known 3D pose.

A real photo of a turned head has no known angle, and a re-fit of an edited photo measures the
engine and the re-estimator together. A rendered head turned in 3D has an exact angle, so

* the re-estimator's own error is the re-fit of a true turn against the angle that was rendered;
* an engine's turn of the frontal render can be compared with the true turn of the same head (the
  same estimator reads both).

The head is ICT-FaceKit's mesh (``FACERIG_ICT`` or the shared assets; see
:func:`facerig.morphable.ict.find_ict`) with per-vertex colours: skin, brows and lips painted from
the 68 Multi-PIE landmarks, eyeballs with a dark iris and pupil, dark lashes, teeth. It is lit by one
directional light fixed in the world (so shading changes as the head turns) plus ambient, rendered
with the weak-perspective camera of :mod:`facerig.render` on a smooth grey-blue background. No hair:
what a pose estimator reads from hair is not measured here.

Angles follow ``docs/conventions.md``: ``yaw > 0`` turns the face towards the image's right
(the subject's left), ``pitch > 0`` lifts the chin (looks up).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from facerig.errors import InvalidInput

__all__ = ["SyntheticHead", "load_synthetic_head", "render_head"]

_PARTS = ("face", "head_and_neck", "mouth_socket", "gums_and_tongue", "teeth", "eyeball_left", "eyeball_right",
          "eye_socket_left", "eye_socket_right", "eyelashes_left", "eyelashes_right")
SKIN = (0.80, 0.60, 0.50)
LIPS = (0.65, 0.32, 0.32)
BROWS = (0.25, 0.17, 0.12)


@dataclass
class SyntheticHead:
    vertices: np.ndarray   # (V, 3) head frame, centimetres, +y up, +z towards the viewer
    faces: np.ndarray      # (F, 3) int64, only the rendered parts
    colours: np.ndarray    # (V, 3) albedo in [0, 1]


def load_synthetic_head(identity: np.ndarray | None = None, path: str | os.PathLike | None = None,
                        seed: int | None = None, n_modes: int = 20) -> SyntheticHead:
    """ICT-FaceKit head with identity ``identity`` (ICT's N(0, 1) PCA weights) or, with ``seed``,
    ``n_modes`` random N(0, 1) weights (``None`` and no seed: the mean head)."""
    from facerig.morphable.ict import _npz, find_ict

    d = _npz(find_ict(path))
    basis = d["identity_basis"]
    if identity is None and seed is not None:
        rng = np.random.default_rng(seed)
        identity = rng.normal(0.0, 1.0, basis.shape[0]) * (np.arange(basis.shape[0]) < n_modes)
    v = d["neutral"].astype(np.float64)
    if identity is not None:
        w = np.asarray(identity, np.float64).reshape(-1)
        if w.shape[0] > basis.shape[0] or not np.isfinite(w).all():
            raise InvalidInput("identity", f"at most {basis.shape[0]} finite ICT identity weights", w.shape)
        v = v + np.tensordot(w, basis[: w.shape[0]].astype(np.float64), 1)
    names = [str(n) for n in d["region_names"]]
    first, last = d["region_vertex_first"], d["region_vertex_last"]
    region = np.full(v.shape[0], -1)
    for i, n in enumerate(names):
        if n != "narrow_face":
            region[first[i]:last[i] + 1] = i
    keep_ids = [names.index(n) for n in _PARTS]
    faces = d["faces"].astype(np.int64)
    faces = faces[np.all(np.isin(region[faces], keep_ids), 1)]
    return SyntheticHead(v, faces, _paint(v, d, names, region))


def _rng_of(d: dict, names: list[str], name: str) -> np.ndarray:
    i = names.index(name)
    return np.arange(int(d["region_vertex_first"][i]), int(d["region_vertex_last"][i]) + 1)


def _paint(v: np.ndarray, d: dict, names: list[str], region: np.ndarray) -> np.ndarray:
    col = np.tile(np.asarray(SKIN), (v.shape[0], 1))
    lm = d["landmarks_multipie68"]
    face = region == names.index("face")
    outer = v[lm[48:60], :2].astype(np.float32)
    near_front = v[:, 2] > v[lm[30], 2] - 4.0
    for i in np.nonzero(face & near_front)[0]:
        if cv2.pointPolygonTest(outer, (float(v[i, 0]), float(v[i, 1])), False) >= 0:
            col[i] = LIPS
    t = np.linspace(0.0, 1.0, 40)[:, None]
    for a, b in ((17, 22), (22, 27)):
        pts = v[lm[a:b], :2]
        dense = np.concatenate([pts[j] + (pts[j + 1] - pts[j]) * t for j in range(len(pts) - 1)])
        dist = np.min(np.linalg.norm(v[:, None, :2] - dense[None], axis=2), 1)
        col[face & (dist < 0.32) & (v[:, 1] > v[lm[37], 1])] = BROWS
    for side in ("left", "right"):
        ids = _rng_of(d, names, "eyeball_" + side)
        dirn = v[ids] - v[ids].mean(0)
        ang = np.degrees(np.arccos(np.clip(dirn[:, 2] / np.linalg.norm(dirn, axis=1), -1, 1)))
        col[ids] = np.where(ang[:, None] < 9, [0.05, 0.04, 0.04],
                            np.where(ang[:, None] < 22, [0.35, 0.22, 0.12], [0.92, 0.90, 0.88]))
        col[_rng_of(d, names, "eyelashes_" + side)] = [0.08, 0.06, 0.05]
        col[_rng_of(d, names, "eye_socket_" + side)] = [0.55, 0.35, 0.32]
    col[_rng_of(d, names, "teeth")] = [0.93, 0.92, 0.86]
    col[_rng_of(d, names, "gums_and_tongue")] = [0.60, 0.30, 0.30]
    col[_rng_of(d, names, "mouth_socket")] = [0.25, 0.10, 0.10]
    return col


def render_head(head: SyntheticHead, yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0, size: int = 512,
                light: tuple[float, float, float] = (0.35, 0.45, 1.0), ambient: float = 0.42,
                pivot: tuple[float, float, float] = (0.0, -2.0, -6.0), field_cm: float = 36.0) -> np.ndarray:
    """uint8 RGB (size, size, 3) of ``head`` turned by yaw/pitch/roll (degrees) about ``pivot`` (head
    frame, cm: behind the ears, near the top of the neck), ``field_cm`` across the image."""
    from facerig.render.raster import interpolate, rasterize, vertex_normals
    from facerig.rotations import ypr_to_matrix

    for n, x in (("yaw", yaw), ("pitch", pitch), ("roll", roll)):
        if not math.isfinite(float(x)):
            raise InvalidInput(n, "a finite angle in degrees", x)
    if int(size) < 64:
        raise InvalidInput("size", "at least 64 pixels", size)
    piv = np.asarray(pivot, np.float64)
    rot = ypr_to_matrix(torch.tensor([float(yaw), float(pitch), float(roll)], dtype=torch.float64)).numpy()
    w = (head.vertices - piv) @ rot.T + piv
    s = size / field_cm
    scr = np.stack([size / 2 + s * w[:, 0], size * 0.47 - s * w[:, 1], w[:, 2]], 1)
    faces = torch.from_numpy(head.faces)
    with torch.no_grad():
        frag = rasterize(torch.from_numpy(scr)[None], faces, size, size)
        nrm = vertex_normals(torch.from_numpy(w)[None], faces)[0].numpy()
        lv = np.asarray(light, np.float64)
        lv = lv / max(float(np.linalg.norm(lv)), 1e-12)
        shade = ambient + (1.0 - ambient + 0.04) * np.clip(nrm @ lv, 0.0, 1.0)
        attr = torch.from_numpy(np.clip(head.colours * shade[:, None], 0.0, 1.0))[None]
        img = interpolate(attr, faces, frag)[0].permute(1, 2, 0).numpy()
        mask = (frag.face_index[0] >= 0).numpy()
    yy = (np.arange(size) / size)[:, None, None]
    bg = (0.55 + 0.15 * yy) * np.array([0.75, 0.80, 0.85])
    out = np.where(mask[..., None], img, np.broadcast_to(bg, img.shape))
    return np.ascontiguousarray((np.clip(out, 0.0, 1.0) * 255).round().astype(np.uint8))
