"""Alignment and barycentric transfer between face meshes (numpy, float64).

* :func:`similarity_fit` - scale/rotation/translation (optionally with a separate z scale) that
  maps source points onto target points in the least-squares sense (Umeyama).
* :func:`closest_points_on_mesh` - for query points, the closest point on a triangle mesh as
  (triangle id, barycentric coordinates, distance).
* :func:`icp_refine` - iterate closest points + similarity fit.
* :func:`sample_barycentric` - evaluate per-vertex fields (offsets) at surface points.
* :func:`laplacian_smooth` - uniform-weight Laplacian smoothing of per-vertex fields.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Similarity:
    """``y = s * R @ (x * [1, 1, zscale]) + t``; ``zscale`` is 1 for a plain similarity."""

    scale: float
    rotation: np.ndarray
    translation: np.ndarray
    zscale: float = 1.0

    def apply(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64) * np.array([1.0, 1.0, self.zscale])
        return self.scale * x @ self.rotation.T + self.translation

    def apply_vectors(self, d: np.ndarray) -> np.ndarray:
        """Transform offsets (no translation)."""
        d = np.asarray(d, dtype=np.float64) * np.array([1.0, 1.0, self.zscale])
        return self.scale * d @ self.rotation.T

    def inverse(self) -> Similarity:
        if self.zscale != 1.0:
            raise ValueError("inverse of an anisotropic fit is not a Similarity")
        rt = self.rotation.T
        return Similarity(1.0 / self.scale, rt, -(rt @ self.translation) / self.scale)


def similarity_fit(
    src: np.ndarray,
    dst: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    fit_zscale: bool = False,
    allow_reflection: bool = False,
) -> Similarity:
    """Least-squares ``dst ~ s R src + t`` (Umeyama). With ``fit_zscale`` the source z axis gets
    its own factor, found by a 1-D search around the isotropic optimum."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
    if not fit_zscale:
        return _umeyama(src, dst, w, allow_reflection)
    from scipy.optimize import minimize_scalar

    def cost(log_k: float) -> float:
        s = src * np.array([1.0, 1.0, np.exp(log_k)])
        t = _umeyama(s, dst, w, allow_reflection)
        return float((w * ((t.apply(s) - dst) ** 2).sum(1)).sum())

    res = minimize_scalar(cost, bounds=(np.log(0.3), np.log(3.0)), method="bounded", options={"xatol": 1e-5})
    k = float(np.exp(res.x))
    t = _umeyama(src * np.array([1.0, 1.0, k]), dst, w, allow_reflection)
    return Similarity(t.scale, t.rotation, t.translation, k)


def _umeyama(src, dst, w, allow_reflection=False) -> Similarity:
    w = w / w.sum()
    mu_s = (w[:, None] * src).sum(0)
    mu_d = (w[:, None] * dst).sum(0)
    xs = src - mu_s
    xd = dst - mu_d
    cov = (w[:, None] * xd).T @ xs
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(3)
    if not allow_reflection and np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[2] = -1
    r = u @ np.diag(d) @ vt
    var_s = (w * (xs**2).sum(1)).sum()
    s = float((sig * d).sum() / var_s)
    t = mu_d - s * r @ mu_s
    return Similarity(s, r, t)


def closest_points_on_mesh(
    points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, chunk: int = 64
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closest surface point of every query point: (face id (N,), barycentrics (N, 3), distance (N,))."""
    p = np.asarray(points, np.float64)
    a = vertices[faces[:, 0]].astype(np.float64)
    b = vertices[faces[:, 1]].astype(np.float64)
    c = vertices[faces[:, 2]].astype(np.float64)
    # candidate triangles: prune by distance to triangle centroid bound
    cen = (a + b + c) / 3
    rad = np.sqrt(
        np.maximum.reduce([((a - cen) ** 2).sum(1), ((b - cen) ** 2).sum(1), ((c - cen) ** 2).sum(1)])
    )
    fid = np.empty(len(p), np.int64)
    bary = np.empty((len(p), 3))
    dist = np.empty(len(p))
    from scipy.spatial import cKDTree

    tree = cKDTree(vertices)
    dv, _ = tree.query(p)  # distance to the nearest vertex: an upper bound
    for s in range(0, len(p), chunk):
        q = p[s : s + chunk]
        dc = np.linalg.norm(q[:, None, :] - cen[None], axis=2)
        ok = dc - rad[None] <= dv[s : s + chunk, None] + 1e-9
        for k in range(len(q)):
            idx = np.nonzero(ok[k])[0]
            bc, d2 = _point_triangle(q[k], a[idx], b[idx], c[idx])
            j = int(np.argmin(d2))
            fid[s + k] = idx[j]
            bary[s + k] = bc[j]
            dist[s + k] = np.sqrt(d2[j])
    return fid, bary, dist


def _point_triangle(p, a, b, c):
    """Closest point of p on triangles (a, b, c) (arrays (M, 3)): barycentrics (M, 3), squared distance."""
    ab = b - a
    ac = c - a
    ap = p - a
    d1 = (ab * ap).sum(1)
    d2 = (ac * ap).sum(1)
    bp = p - b
    d3 = (ab * bp).sum(1)
    d4 = (ac * bp).sum(1)
    cp = p - c
    d5 = (ab * cp).sum(1)
    d6 = (ac * cp).sum(1)
    m = len(a)
    bc = np.zeros((m, 3))
    done = np.zeros(m, bool)

    def put(mask, u, v, w):
        nonlocal done
        mask = mask & ~done
        bc[mask, 0] = u[mask] if np.ndim(u) else u
        bc[mask, 1] = v[mask] if np.ndim(v) else v
        bc[mask, 2] = w[mask] if np.ndim(w) else w
        done |= mask

    zeros = np.zeros(m)
    ones = np.ones(m)
    put((d1 <= 0) & (d2 <= 0), ones, zeros, zeros)
    put((d3 >= 0) & (d4 <= d3), zeros, ones, zeros)
    vc = d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):
        v = d1 / (d1 - d3)
        put((vc <= 0) & (d1 >= 0) & (d3 <= 0), 1 - v, v, zeros)
        put((d6 >= 0) & (d5 <= d6), zeros, zeros, ones)
        vb = d5 * d2 - d1 * d6
        w = d2 / (d2 - d6)
        put((vb <= 0) & (d2 >= 0) & (d6 <= 0), 1 - w, zeros, w)
        va = d3 * d6 - d5 * d4
        w2 = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        put((va <= 0) & ((d4 - d3) >= 0) & ((d5 - d6) >= 0), zeros, 1 - w2, w2)
        denom = 1.0 / (va + vb + vc)
        vv = vb * denom
        ww = vc * denom
        put(np.ones(m, bool), 1 - vv - ww, vv, ww)
    bc = np.nan_to_num(bc)
    q = bc[:, :1] * a + bc[:, 1:2] * b + bc[:, 2:] * c
    return bc, ((q - p) ** 2).sum(1)


def sample_barycentric(field: np.ndarray, faces: np.ndarray, fid: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """Per-vertex ``field`` (..., V, C) evaluated at surface points -> (..., N, C)."""
    tri = faces[fid]  # (N, 3)
    return (field[..., tri, :] * bary[:, :, None]).sum(-2)


def icp_refine(
    src: np.ndarray,
    tgt_vertices: np.ndarray,
    tgt_faces: np.ndarray,
    init: Similarity,
    iters: int = 10,
    weights: np.ndarray | None = None,
    trim: float = 0.9,
    anchors: tuple[np.ndarray, np.ndarray, float] | None = None,
) -> tuple[Similarity, np.ndarray]:
    """Refine ``init`` (src -> target frame) by point-to-surface ICP with trimming.

    ``anchors`` = (src points, target points, weight) keeps landmark pairs in the fit.
    Returns the refined transform and the final distances of the src points."""
    t = init
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
    for _ in range(iters):
        x = t.apply(src)
        fid, bc, d = closest_points_on_mesh(x, tgt_vertices, tgt_faces)
        y = (tgt_vertices[tgt_faces[fid]] * bc[:, :, None]).sum(1)
        keep = d <= np.quantile(d, trim)
        s_pts, d_pts, ww = src[keep], y[keep], w[keep]
        if anchors is not None:
            s_pts = np.concatenate([s_pts, anchors[0]])
            d_pts = np.concatenate([d_pts, anchors[1]])
            ww = np.concatenate([ww, np.full(len(anchors[0]), anchors[2])])
        t = similarity_fit(s_pts, d_pts, ww)
    _, _, d = closest_points_on_mesh(t.apply(src), tgt_vertices, tgt_faces)
    return t, d


def vertex_adjacency(faces: np.ndarray, n: int):
    import scipy.sparse as sp

    i = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2], faces[:, 1], faces[:, 2], faces[:, 0]])
    j = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0], faces[:, 0], faces[:, 1], faces[:, 2]])
    a = sp.coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)).tocsr()
    a.data[:] = 1.0
    return a


def laplacian_smooth(
    field: np.ndarray, faces: np.ndarray, iters: int = 2, lam: float = 0.5, fixed: np.ndarray | None = None
) -> np.ndarray:
    """Uniform Laplacian smoothing of a per-vertex field (..., V, C); ``fixed`` vertices keep their values."""
    n = field.shape[-2]
    a = vertex_adjacency(faces, n)
    deg = np.asarray(a.sum(1)).ravel()
    deg[deg == 0] = 1
    out = np.array(field, np.float64)
    lead = out.shape[:-2]
    flat = np.moveaxis(out.reshape(-1, n, out.shape[-1]), 1, 0).reshape(n, -1)
    for _ in range(iters):
        avg = (a @ flat) / deg[:, None]
        new = flat + lam * (avg - flat)
        if fixed is not None:
            new[fixed] = flat[fixed]
        flat = new
    return np.moveaxis(flat.reshape(n, -1, out.shape[-1]), 0, 1).reshape(*lead, n, out.shape[-1])


__all__ = [
    "Similarity",
    "closest_points_on_mesh",
    "icp_refine",
    "laplacian_smooth",
    "sample_barycentric",
    "similarity_fit",
    "vertex_adjacency",
]
