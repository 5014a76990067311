"""A 3D proxy for the head outside the face mesh: an ellipsoid in the head frame.

The MediaPipe-topology face mesh stops at the upper forehead, the cheeks and the chin; hair, ears,
the top and the sides of the head have no geometry. The warp engine gives those pixels depths by
intersecting their camera rays with an ellipsoid fitted to the face mesh (:func:`fit_head`), so a
head-pose edit moves them under the same 3D rotation as the mesh (:func:`ellipsoid_flow`).

Geometry, in the head frame of the face model (x: the subject's left, y: up, z: towards the
camera): x centre and width from the mesh; bottom at the chin, top ``top_extra`` mesh heights above
the mesh's top (the skull continues above the MediaPipe forehead); depth centre and radius fitted by
least squares so the ellipsoid passes through the mesh's outer contour above the mouth (temples and
forehead), i.e. it continues the mesh's silhouette; the back of the head lies behind it.

The head frame -> work-grid screen map of a face is the affine least-squares fit of its screen
vertices on its head-frame vertices (exact for the weak-perspective camera, close for perspective).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class HeadProxy:
    centre: np.ndarray   # (3,) head frame
    radii: np.ndarray    # (3,)
    chin_y: float        # head-frame y of the chin (neck fade)
    mouth_y: float       # head-frame y of the mouth centre


def fit_head(v: np.ndarray, width_frac: float = 0.56, top_extra: float = 0.3) -> HeadProxy:
    """Ellipsoid head proxy from head-frame vertices ``v`` (V, 3) of the MediaPipe-topology mesh."""
    lo, hi = v.min(0), v.max(0)
    width = float(hi[0] - lo[0])
    chin_y = float(v[152, 1]) if v.shape[0] > 152 else float(lo[1])
    mouth_y = float(v[[13, 14], 1].mean()) if v.shape[0] > 14 else float(lo[1] + 0.3 * (hi[1] - lo[1]))
    top_y = float(hi[1] + top_extra * (hi[1] - chin_y))
    cx = float((lo[0] + hi[0]) / 2)
    cy = (chin_y + top_y) / 2
    rx = width_frac * width
    ry = (top_y - chin_y) / 2
    hull_idx = np.unique(np.asarray(cv2.convexHull(v[:, :2].astype(np.float32), returnPoints=False)).reshape(-1))
    pts = v[hull_idx]
    pts = pts[pts[:, 1] > mouth_y]
    u2 = ((pts[:, 0] - cx) / rx) ** 2 + ((pts[:, 1] - cy) / ry) ** 2
    qz = np.sqrt(np.clip(1 - u2, 0.02, 1))
    rz_lo, rz_hi = 0.5 * width, 0.8 * width
    if pts.shape[0] >= 4:
        X = np.stack([np.ones_like(qz), qz], 1)
        (cz, rz), *_ = np.linalg.lstsq(X, pts[:, 2], rcond=None)
        rz = float(np.clip(rz, rz_lo, rz_hi))
        cz = float(np.median(pts[:, 2] - rz * qz))
    else:  # pragma: no cover - degenerate mesh
        rz = 0.7 * width
        cz = float(hi[2] - rz)
    return HeadProxy(np.array([cx, cy, cz]), np.array([rx, ry, rz]), chin_y, mouth_y)


def affine_head_to_screen(v_head: np.ndarray, screen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(A, b) with ``screen ~ v_head @ A.T + b`` (least squares over all vertices)."""
    X = np.concatenate([v_head, np.ones((v_head.shape[0], 1))], 1)
    M, *_ = np.linalg.lstsq(X, screen, rcond=None)
    return M[:3].T.copy(), M[3].copy()


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def ellipsoid_flow(head: HeadProxy, src_map: tuple[np.ndarray, np.ndarray], tgt_map: tuple[np.ndarray, np.ndarray],
                   xy: np.ndarray, mirror: bool = True, edge: float = 0.12) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward flow of the head proxy at target pixel positions ``xy`` (N, 2) (work pixels).

    Each target ray is intersected with the ellipsoid (posed by ``tgt_map``), the nearest hit is
    carried to the source pose (``src_map``) and projected. Hits that face away from the camera in
    the source (revealed by the rotation) take the mirrored point (x -> -x about the head's
    mid-plane) when that one was visible. Returns ``(disp (N, 2), weight (N,), head_y (N,))``:
    displacement source - target, a weight that is 1 well inside the ellipsoid's silhouette and
    fades to 0 at it (``edge``, normalised radius), and the hit's head-frame height."""
    A_s, b_s = src_map
    A_t, b_t = tgt_map
    Ai = np.linalg.inv(A_t)
    c, r = head.centre, head.radii
    n = xy.shape[0]
    p0 = np.concatenate([xy, np.zeros((n, 1))], 1) - b_t
    h0 = p0 @ Ai.T                     # head-frame point of the ray at screen depth 0
    u = Ai[:, 2]                        # head-frame direction per unit screen depth
    e0 = (h0 - c) / r
    w = u / r
    a = float(w @ w)
    bb = e0 @ w
    c0 = np.einsum("ij,ij->i", e0, e0) - 1.0
    disc = bb * bb - a * c0
    m = np.clip(1.0 - disc / a, 0.0, None)         # min |e|^2 along the ray; hit iff < 1
    weight = _smoothstep((1.0 - np.sqrt(m)) / edge)
    z = (-bb + np.sqrt(np.clip(disc, 0.0, None))) / a  # nearer root (larger screen depth = nearer)
    h = h0 + z[:, None] * u[None, :]
    s = h @ A_s.T + b_s
    if mirror:
        Ais = np.linalg.inv(A_s)
        grad = ((h - c) / (r * r)) @ Ais                # A_s^-T n as rows
        hidden = grad[:, 2] <= 0.0
        if hidden.any():
            hm = h[hidden].copy()
            hm[:, 0] = 2 * c[0] - hm[:, 0]
            gm = ((hm - c) / (r * r)) @ Ais
            ok = gm[:, 2] > 0.0
            sm = hm @ A_s.T + b_s
            idx = np.nonzero(hidden)[0][ok]
            s[idx] = sm[ok]
    return s[:, :2] - xy, weight, h[:, 1]
