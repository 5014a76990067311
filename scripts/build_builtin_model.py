#!/usr/bin/env python
"""Build facerig's builtin face model (MediaPipe topology) -> src/facerig/assets/builtin_face_model.npz.

Deterministic and re-runnable. Inputs (nothing else is read):

* the mediapipe wheel: ``FACEMESH_TESSELATION`` (triangles, see facerig.morphable.topology) and the
  face-mesh model itself, run on package-shipped photos (skimage ``lfw_subset`` faces upscaled 4x,
  ``astronaut``, matplotlib's ``grace_hopper.jpg``) to get the mean shape;
* ICT-FaceKit light (MIT) as converted npz (``--ict``, default ``shared/assets/ict-facekit``):
  the frame/units of the mean, the identity basis and the expression blendshapes, transferred by
  closest-point barycentric sampling.

Usage: python scripts/build_builtin_model.py [--ict PATH] [--out PATH] [--figure PATH] [--report]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from facerig.morphable import topology as topo  # noqa: E402
from facerig.morphable.transfer import (  # noqa: E402
    Similarity,
    closest_points_on_mesh,
    laplacian_smooth,
    similarity_fit,
)

MP_PAIRS = [1, 152, 33, 133, 362, 263, 61, 291]
ICT_MULTIPIE = [30, 8, 36, 39, 42, 45, 48, 54]
REGION_NAMES = ("skin", "brows", "eyes", "lips", "mouth_interior", "nose")
N_IDENTITY = 100

MERGE = {"browInnerUp": ("browInnerUp_L", "browInnerUp_R"), "cheekPuff": ("cheekPuff_L", "cheekPuff_R")}
ALIAS_BASES = [
    "mouthPress", "mouthSmile", "browDown", "eyeBlink", "mouthFrown", "mouthStretch", "eyeWide",
    "eyeSquint", "noseSneer", "browOuterUp", "cheekSquint", "mouthDimple", "mouthUpperUp",
    "mouthLowerDown", "eyeLookDown", "eyeLookUp", "eyeLookIn", "eyeLookOut",
]  # fmt: skip


def log(*a):
    print(*a, flush=True)


# ------------------------------------------------------------------------------------------------
# 2. mean shape from MediaPipe's output
# ------------------------------------------------------------------------------------------------
def photos():
    import cv2
    import matplotlib.cbook as cbook
    import matplotlib.image as mimage
    from skimage import data

    lfw = data.lfw_subset()[:100]  # the first 100 are faces, the rest are not
    for k, g in enumerate(lfw):
        im = (np.clip(g, 0, 1) * 255).astype(np.uint8)
        im = cv2.resize(im, (100, 100), interpolation=cv2.INTER_CUBIC)
        yield f"lfw_subset[{k}]", np.ascontiguousarray(np.stack([im] * 3, -1))
    yield "astronaut", np.ascontiguousarray(data.astronaut())
    yield (
        "grace_hopper",
        np.ascontiguousarray(np.asarray(mimage.imread(cbook.get_sample_data("grace_hopper.jpg")))[..., :3]),
    )


def detect_all() -> tuple[np.ndarray, list[str]]:
    import mediapipe as mp

    shapes, names = [], []
    with mp.solutions.face_mesh.FaceMesh(
        static_image_mode=True, refine_landmarks=True, max_num_faces=1, min_detection_confidence=0.5
    ) as fm:
        for name, im in photos():
            r = fm.process(im)
            if not r.multi_face_landmarks:
                continue
            h, w = im.shape[:2]
            p = np.array([(lm.x * w, lm.y * h, lm.z * w) for lm in r.multi_face_landmarks[0].landmark])
            # y up, z towards the viewer (MediaPipe: y down, smaller z = nearer the camera)
            shapes.append(p * np.array([1.0, -1.0, -1.0]))
            names.append(name)
    return np.array(shapes), names


def robust_mean_shape(shapes: np.ndarray, iters: int = 6) -> np.ndarray:
    """Generalised Procrustes (similarity) to a running reference, median over the aligned shapes."""
    ref = shapes[-1] - shapes[-1].mean(0)  # start from a large, frontal photo
    ref /= np.sqrt((ref**2).sum(1).mean())
    for _ in range(iters):
        aligned = np.stack([similarity_fit(s, ref).apply(s) for s in shapes])
        new = np.median(aligned, axis=0)
        new -= new.mean(0)
        new /= np.sqrt((new**2).sum(1).mean())
        # keep the reference frontal and upright: x from right to left features, y from chin to forehead
        ref = _canonical_frame(new)
    return ref


def _canonical_frame(m: np.ndarray) -> np.ndarray:
    left = m[[263, 362, 291]].mean(0)
    right = m[[33, 133, 61]].mean(0)
    x = left - right
    x /= np.linalg.norm(x)
    y = m[10] - m[152]
    y -= (y @ x) * x
    y /= np.linalg.norm(y)
    z = np.cross(x, y)
    r = np.stack([x, y, z])
    c = m.mean(0)
    return (m - c) @ r.T


def symmetrise(m: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """Average a shape with its mirror image (x -> -x, partners swapped), aligned to it first."""
    mir = (m * np.array([-1.0, 1.0, 1.0]))[perm]
    t = similarity_fit(mir, m)
    return 0.5 * (m + t.apply(mir))


def mirror_perm(m: np.ndarray) -> np.ndarray:
    perm = topo.mirror_correspondence(m)
    bad = perm[perm] != np.arange(len(perm))
    if bad.any():
        raise RuntimeError(f"mirror correspondence is not an involution at {np.nonzero(bad)[0][:10]}")
    return perm


# ------------------------------------------------------------------------------------------------
# ICT helpers
# ------------------------------------------------------------------------------------------------
def load_ict(path):
    d = np.load(path)
    ict = {k: d[k] for k in d.files}
    names = [str(n) for n in ict["region_names"]]
    ict["ranges"] = {
        n: (int(a), int(b))
        for n, a, b in zip(names, ict["region_vertex_first"], ict["region_vertex_last"], strict=True)
    }
    return ict


def faces_in_range(faces, lo, hi):
    keep = ((faces >= lo) & (faces <= hi)).all(1)
    return faces[keep]


def fit_to_ict(mean: np.ndarray, ict, fit_z: bool = True) -> tuple[Similarity, dict]:
    """Similarity (+ z scale) mapping the MediaPipe mean into ICT's frame: 8 landmark pairs, then
    trimmed point-to-surface ICP of the 468 mesh points on ICT's narrow face, anchored by the pairs."""
    nv = ict["neutral"].astype(np.float64)
    lm = nv[ict["landmarks_multipie68"][ICT_MULTIPIE]]
    src = mean[MP_PAIRS]
    t0 = similarity_fit(src, lm)
    res0 = np.linalg.norm(t0.apply(src) - lm, axis=1)
    lo, hi = ict["ranges"]["narrow_face"]
    tf = faces_in_range(ict["faces"], lo, hi)
    pts = mean[: topo.N_MESH]
    t = t0
    for _ in range(12):
        x = t.apply(pts)
        fid, bc, d = closest_points_on_mesh(x, nv, tf)
        y = (nv[tf[fid]] * bc[:, :, None]).sum(1)
        keep = d <= np.quantile(d, 0.85)
        s_pts = np.concatenate([pts[keep], src])
        d_pts = np.concatenate([y[keep], lm])
        w = np.concatenate([np.ones(keep.sum()), np.full(len(src), 5.0)])
        t = similarity_fit(s_pts, d_pts, w, fit_zscale=fit_z)
    _, _, d = closest_points_on_mesh(t.apply(pts), nv, tf)
    res = np.linalg.norm(t.apply(src) - lm, axis=1)
    info = {
        "pairs_residual_cm_similarity": [round(float(r), 3) for r in res0],
        "pairs_residual_cm_final": [round(float(r), 3) for r in res],
        "surface_distance_cm_median": round(float(np.median(d)), 3),
        "surface_distance_cm_p95": round(float(np.quantile(d, 0.95)), 3),
        "scale": float(t.scale),
        "zscale": float(t.zscale),
    }
    return t, info


# ------------------------------------------------------------------------------------------------
# 4. transfer of identity / expression offsets
# ------------------------------------------------------------------------------------------------
def transfer(mean: np.ndarray, faces_tess: np.ndarray, ict) -> dict:
    nv = ict["neutral"].astype(np.float64)
    lo, hi = ict["ranges"]["face"]
    face_tris = faces_in_range(ict["faces"], lo, hi)
    jaw = ict["expression_basis"][list(ict["expression_names"]).index("jawOpen")].astype(np.float64)

    # lips: the upper lip must sample ICT's upper lip, the lower lip the lower one. ICT's lips touch
    # in the neutral, so closest points of MediaPipe's inner-lip points may land on the wrong lip.
    # Split ICT's face triangles by how far jawOpen moves them relative to the chin motion.
    jaw_mag = np.linalg.norm(jaw, axis=1)
    tri_jaw = jaw_mag[face_tris].mean(1)
    chin_move = jaw_mag[ict["landmarks_multipie68"][8]]
    upper_tris = face_tris[tri_jaw < 0.35 * chin_move]
    lower_tris = face_tris[tri_jaw >= 0.35 * chin_move]

    pts = mean[: topo.N_MESH]
    fid, bc, dist = closest_points_on_mesh(pts, nv, face_tris)
    tri_of = face_tris[fid]
    upper_lip = set(topo.INNER_LIP_UPPER[1:-1]) | set(topo.OUTER_LIP_UPPER[1:-1])
    lower_lip = set(topo.INNER_LIP_LOWER[1:-1]) | set(topo.OUTER_LIP_LOWER[1:-1])
    for group, tris in ((upper_lip, upper_tris), (lower_lip, lower_tris)):
        idx = np.array(sorted(group))
        f2, b2, d2 = closest_points_on_mesh(pts[idx], nv, tris)
        tri_of[idx] = tris[f2]
        bc[idx] = b2
        dist[idx] = d2

    # irises follow ICT's eyeballs (subject's left eye = +x = MediaPipe 473-477)
    iris_tri = np.zeros((10, 3), np.int64)
    iris_bc = np.zeros((10, 3))
    for ids, region in ((topo.RIGHT_IRIS, "eyeball_right"), (topo.LEFT_IRIS, "eyeball_left")):
        a, b = ict["ranges"][region]
        tris = faces_in_range(ict["faces"], a, b)
        f2, b2, _ = closest_points_on_mesh(mean[ids], nv, tris)
        iris_tri[np.array(ids) - 468] = tris[f2]
        iris_bc[np.array(ids) - 468] = b2

    all_tri = np.concatenate([tri_of, iris_tri])
    all_bc = np.concatenate([bc, iris_bc])

    def sample(basis):
        return (basis[:, all_tri, :].astype(np.float64) * all_bc[None, :, :, None]).sum(2)

    ident = sample(ict["identity_basis"][:N_IDENTITY])
    expr = sample(ict["expression_basis"])
    # light smoothing over the open tessellation (never across the mouth/eye openings or irises)
    ident[:, : topo.N_MESH] = laplacian_smooth(ident[:, : topo.N_MESH], faces_tess, iters=1, lam=0.3)
    expr[:, : topo.N_MESH] = laplacian_smooth(expr[:, : topo.N_MESH], faces_tess, iters=1, lam=0.3)
    return {
        "identity": ident,
        "expression": expr,
        "expression_names": [str(n) for n in ict["expression_names"]],
        "surface_distance": dist,
        "src_tri": all_tri,
        "src_bary": all_bc,
    }


def close_lids(mean: np.ndarray, expr: np.ndarray, names: list[str], faces_tess: np.ndarray) -> dict:
    """Make eyeBlink_* close the lid exactly: upper and lower contour points meet at blink = 1.

    Per contour pair (upper i, lower i) the meeting point is the mean of their blinked positions;
    the needed correction on the 14 contour points is spread harmonically to the lid vertices
    within 1.6 cm of the eye (Dirichlet 0 beyond) so the lids do not crease."""
    import scipy.sparse as sp
    import scipy.sparse.linalg as spl

    from facerig.morphable.transfer import vertex_adjacency

    info = {}
    n = topo.N_MESH
    adj = vertex_adjacency(faces_tess, n)
    lap = sp.diags(np.asarray(adj.sum(1)).ravel()) - adj
    for side, up, low in (
        ("L", topo.LEFT_EYE_UPPER, topo.LEFT_EYE_LOWER),
        ("R", topo.RIGHT_EYE_UPPER, topo.RIGHT_EYE_LOWER),
    ):
        k = names.index(f"eyeBlink_{side}")
        u = np.array(up[1:-1])
        lw = np.array(low[1:-1])
        pu = mean[u] + expr[k, u]
        pl = mean[lw] + expr[k, lw]
        gap_before = np.linalg.norm(pu - pl, axis=1)
        meet = 0.5 * (pu + pl)
        corr = np.zeros((n, 3))
        fixed = np.zeros(n, bool)
        corr[u] = meet - pu
        corr[lw] = meet - pl
        fixed[u] = fixed[lw] = True
        centre = mean[np.array(up + low)].mean(0)
        far = np.linalg.norm(mean[:n] - centre, axis=1) > 1.6
        fixed |= far
        fixed[[up[0], up[-1]]] = True  # corners keep their motion
        free = ~fixed
        a = lap[free][:, free].tocsc()
        rhs = -lap[free][:, fixed] @ corr[fixed]
        corr[free] = np.stack([spl.spsolve(a, rhs[:, c]) for c in range(3)], 1)
        expr[k, :n] += corr
        pu2 = mean[u] + expr[k, u]
        pl2 = mean[lw] + expr[k, lw]
        info[f"eyeBlink_{side}"] = {
            "gap_before_cm_max": round(float(gap_before.max()), 3),
            "gap_after_cm_max": round(float(np.linalg.norm(pu2 - pl2, axis=1).max()), 4),
            "max_correction_cm": round(float(np.linalg.norm(corr, axis=1).max()), 3),
        }
    return info


GAZE_DEG = {"Up": 20.0, "Down": 20.0, "In": 25.0, "Out": 25.0}


def add_gaze(mean: np.ndarray, expr: np.ndarray, names: list[str], ict) -> dict:
    """ICT's eyeLook* shapes move only the lids (its eyeballs rotate as joints), so the iris
    points get a rigid rotation about ICT's eyeball centre added: GAZE_DEG at weight 1."""
    nv = ict["neutral"].astype(np.float64)
    out = {}
    for side, ids, region in (("L", topo.LEFT_IRIS, "eyeball_left"), ("R", topo.RIGHT_IRIS, "eyeball_right")):
        a, b = ict["ranges"][region]
        c = nv[a : b + 1].mean(0)
        p = mean[ids] - c
        nasal = -1.0 if side == "L" else 1.0  # direction of the nose along x
        for direction, deg in GAZE_DEG.items():
            th = np.deg2rad(deg)
            if direction in ("Up", "Down"):
                s = th if direction == "Up" else -th  # rotate about x: front (+z) goes to +y
                r = np.array([[1, 0, 0], [0, np.cos(s), np.sin(s)], [0, -np.sin(s), np.cos(s)]])
            else:
                sgn = nasal if direction == "In" else -nasal
                s = sgn * th  # rotate about y: front (+z) goes to sgn * x
                r = np.array([[np.cos(s), 0, np.sin(s)], [0, 1, 0], [-np.sin(s), 0, np.cos(s)]])
            k = names.index(f"eyeLook{direction}_{side}")
            expr[k, ids] = p @ r.T - p
        out[side] = {"eyeball_centre_cm": [round(float(x), 3) for x in c], "degrees": GAZE_DEG}
    return out


def lift_irises(mean: np.ndarray, caps: dict) -> dict:
    """MediaPipe's iris points lie ~2 mm behind the plane of the eye-opening cap (they sit on the
    eyeball); move each iris (5 points, rigidly, along z) 0.3 mm in front of the cap so that the
    iris fan is visible when rendered with a depth test. Modifies ``mean`` in place."""
    out = {}
    for side, ids, cap in (
        ("R", topo.RIGHT_IRIS, caps["eye_right"]),
        ("L", topo.LEFT_IRIS, caps["eye_left"]),
    ):
        c = mean[ids[0]]
        tri = mean[cap]
        # cap height above the iris centre: barycentric interpolation in the xy plane
        best = None
        for a, b, cc in tri:
            m = np.array([[b[0] - a[0], cc[0] - a[0]], [b[1] - a[1], cc[1] - a[1]]])
            try:
                u, v = np.linalg.solve(m, c[:2] - a[:2])
            except np.linalg.LinAlgError:
                continue
            if u >= -1e-6 and v >= -1e-6 and u + v <= 1 + 1e-6:
                best = a[2] + u * (b[2] - a[2]) + v * (cc[2] - a[2])
                break
        if best is None:
            best = tri[..., 2].mean()
        dz = max(0.0, best + 0.03 - c[2])
        mean[ids, 2] += dz
        out[side] = round(float(dz), 3)
    return out


def merge_expressions(expr: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str]]:
    out, out_names, used = [], [], set()
    for n in names:
        if n in used:
            continue
        merged = next((m for m, parts in MERGE.items() if n in parts), None)
        if merged:
            parts = MERGE[merged]
            out.append(sum(expr[names.index(p)] for p in parts))
            out_names.append(merged)
            used.update(parts)
        else:
            out.append(expr[names.index(n)])
            out_names.append(n)
            used.add(n)
    return np.stack(out), out_names


def aliases_for(names: list[str]) -> dict[str, list[str]]:
    al = {}
    for b in ALIAS_BASES:
        if f"{b}_L" in names and f"{b}_R" in names:
            al[b] = [f"{b}_L", f"{b}_R"]
    for merged, parts in MERGE.items():  # the ICT-style halves select the merged shape
        for p in parts:
            al[p] = [merged]
    return al


# ------------------------------------------------------------------------------------------------
# 3. uv, 5. regions / landmarks / albedo
# ------------------------------------------------------------------------------------------------
def cylindrical_uv(mean: np.ndarray, radius: float = 9.0) -> tuple[np.ndarray, dict]:
    """Cylindrical unwrap about a vertical axis ``radius`` cm behind the frontal-most face point:
    u ~ radius * azimuth, v ~ height, both scaled by one factor into [0.02, 0.98] (aspect kept)."""
    centre_z = mean[:, 2].max() - radius
    theta = np.arctan2(mean[:, 0], mean[:, 2] - centre_z)
    a = np.stack([radius * theta, mean[:, 1]], 1)
    lo = a.min(0)
    span = (a.max(0) - lo).max()
    uv = 0.02 + 0.96 * (a - lo) / span
    uv += (1 - uv.max(0) - uv.min(0)) / 2  # centre the shorter axis
    return uv, {
        "axis_z_cm": round(float(centre_z), 3),
        "radius_cm": radius,
        "cm_per_uv": round(float(span / 0.96), 4),
    }


def region_labels(mean: np.ndarray, faces_tess: np.ndarray, caps: dict) -> tuple[np.ndarray, np.ndarray]:
    from matplotlib.path import Path as MPath
    from mediapipe.python.solutions import face_mesh_connections as fmc
    from scipy.spatial import ConvexHull

    xy = mean[:, :2]
    cen = xy[faces_tess].mean(1)
    lab = np.zeros(len(faces_tess), np.int64)
    rid = {n: i for i, n in enumerate(REGION_NAMES)}

    # nose: convex hull (frontal) of FACEMESH_NOSE points
    nose_pts = np.array(topo.loop_vertices(fmc.FACEMESH_NOSE))
    hull = ConvexHull(xy[nose_pts])
    lab[MPath(xy[nose_pts[hull.vertices]]).contains_points(cen)] = rid["nose"]
    # brows: polygon between the lower and upper brow lines
    brows = {
        "R": ([46, 53, 52, 65, 55], [70, 63, 105, 66, 107]),
        "L": ([276, 283, 282, 295, 285], [300, 293, 334, 296, 336]),
    }
    for low, up in brows.values():
        poly = xy[np.array(low + up[::-1])]
        lab[MPath(poly).contains_points(cen)] = rid["brows"]
    # lips: inside the outer lip loop
    outer = xy[np.array(topo.OUTER_LIP_UPPER + topo.OUTER_LIP_LOWER[::-1][1:-1])]
    lab[MPath(outer).contains_points(cen)] = rid["lips"]
    # sanity: verify expected sets exist
    cap_lab = np.concatenate(
        [
            np.full(len(caps["mouth"]), rid["mouth_interior"]),
            np.full(len(caps["eye_right"]) + len(caps["eye_left"]), rid["eyes"]),
            np.full(len(caps["iris_right"]) + len(caps["iris_left"]), rid["eyes"]),
        ]
    )
    return lab, cap_lab


def default_albedo(n: int, faces: np.ndarray, region: np.ndarray) -> np.ndarray:
    skin = np.array([0.80, 0.60, 0.50])
    alb = np.tile(skin, (n, 1))
    lips = np.unique(faces[region == REGION_NAMES.index("lips")])
    alb[lips] = [0.72, 0.42, 0.42]
    brows = np.unique(faces[region == REGION_NAMES.index("brows")])
    alb[brows] = [0.60, 0.45, 0.38]
    alb[topo.INNER_LIP_UPPER + topo.INNER_LIP_LOWER] = [0.35, 0.15, 0.15]
    eye = topo.RIGHT_EYE_UPPER + topo.RIGHT_EYE_LOWER + topo.LEFT_EYE_UPPER + topo.LEFT_EYE_LOWER
    alb[eye] = [0.85, 0.80, 0.78]
    alb[topo.RIGHT_IRIS[1:] + topo.LEFT_IRIS[1:]] = [0.30, 0.20, 0.15]
    alb[[topo.RIGHT_IRIS[0], topo.LEFT_IRIS[0]]] = [0.05, 0.04, 0.04]
    return alb


# ------------------------------------------------------------------------------------------------
def build(ict_path: Path, out: Path, report_path: Path | None = None) -> dict:
    report: dict = {}
    log("1. triangles from FACEMESH_TESSELATION")
    tess = topo.tessellation_triangles()
    report["tessellation_triangles"] = len(tess)

    log("2. MediaPipe on package photos")
    shapes, names = detect_all()
    report["photos_detected"] = len(names)
    log(f"   {len(names)} faces")
    m = robust_mean_shape(shapes)
    perm = mirror_perm(m)
    for _ in range(3):
        m = _canonical_frame(symmetrise(m, perm))
        perm = mirror_perm(m)
    report["mirror_self_pairs"] = int((perm == np.arange(len(perm))).sum())

    ict = load_ict(ict_path)
    t, info = fit_to_ict(m, ict, fit_z=True)
    t_iso, info_iso = fit_to_ict(m, ict, fit_z=False)
    report["ict_alignment"] = info
    report["ict_alignment_isotropic"] = info_iso
    mean = t.apply(m)
    # exact symmetry about x = 0 in ICT's frame (ICT is symmetric about x = 0)
    mean = 0.5 * (mean + (mean * np.array([-1.0, 1.0, 1.0]))[perm])
    log(f"   ICT fit: zscale {t.zscale:.3f}, median surface distance {info['surface_distance_cm_median']} cm")

    log("1b. orientation and caps")
    tess = topo.orient_consistently(tess, mean)
    caps = topo.cap_triangles(mean)
    report["iris_lift_cm"] = lift_irises(mean, caps)
    faces = np.concatenate(
        [tess, caps["mouth"], caps["eye_right"], caps["eye_left"], caps["iris_right"], caps["iris_left"]]
    )
    # caps must agree with the tessellation's orientation along shared edges
    assert topo.is_consistently_oriented(
        np.concatenate([tess, caps["mouth"], caps["eye_right"], caps["eye_left"]])
    )
    report["faces_total"] = len(faces)

    log("3. uv")
    uv, uv_info = cylindrical_uv(mean)
    report["uv"] = uv_info

    log("4. transfer from ICT")
    tr = transfer(mean, tess, ict)
    d = tr["surface_distance"]
    report["transfer_surface_distance_cm"] = {
        "median": round(float(np.median(d)), 3),
        "p95": round(float(np.quantile(d, 0.95)), 3),
        "max": round(float(d.max()), 3),
    }
    expr = tr["expression"]
    lid = close_lids(mean, expr, tr["expression_names"], tess)
    # irises hide behind the closed lid: at eyeBlink = 1 they sink 3.5 mm (back onto the eyeball)
    for side, ids in (("L", topo.LEFT_IRIS), ("R", topo.RIGHT_IRIS)):
        expr[tr["expression_names"].index(f"eyeBlink_{side}"), ids, 2] -= 0.35
    report["eyelid_correction"] = lid
    report["eye_gaze"] = add_gaze(mean, expr, tr["expression_names"], ict)
    expr, enames = merge_expressions(expr, tr["expression_names"])
    ident = tr["identity"]

    log("5. regions, landmarks, albedo")
    lab_tess, lab_caps = region_labels(mean, tess, caps)
    region = np.concatenate([lab_tess, lab_caps])
    n = len(mean)
    lm_faces = np.zeros(n, np.int64)
    lm_bary = np.zeros((n, 3))
    for fi in range(len(faces) - 1, -1, -1):  # prefer the tessellation's triangles
        for c in range(3):
            lm_faces[faces[fi, c]] = fi
    for v in range(n):
        lm_bary[v, list(faces[lm_faces[v]]).index(v)] = 1.0
    from mediapipe.python.solutions import face_mesh_connections as fmc

    lm_w = np.ones(n)
    lm_w[topo.loop_vertices(fmc.FACEMESH_FACE_OVAL)] = 0.3
    lm_w[468:] = 0.3
    alb = default_albedo(n, faces, region)

    aliases = aliases_for(enames)
    np.savez_compressed(
        out,
        mean=mean.astype(np.float32),
        faces=faces.astype(np.int16),
        uv=uv.astype(np.float32),
        identity_basis=ident.astype(np.float16),
        expression_basis=expr.astype(np.float16),
        expression_names=np.array(enames),
        expression_aliases_json=np.array(json.dumps(aliases)),
        landmark_index=np.arange(n, dtype=np.int16),
        landmark_faces=lm_faces.astype(np.int16),
        landmark_bary=lm_bary.astype(np.float32),
        landmark_weight=lm_w.astype(np.float32),
        face_region=region.astype(np.int8),
        region_names=np.array(REGION_NAMES),
        default_albedo=alb.astype(np.float16),
        mirror=perm.astype(np.int16),
        ict_zscale=np.float32(t.zscale),
        build_report_json=np.array(json.dumps(report, sort_keys=True)),
    )
    report["file_bytes"] = out.stat().st_size
    log(json.dumps(report, indent=1))
    if report_path:
        report_path.write_text(json.dumps(report, indent=1, sort_keys=True))
    return report


def _draw(ax, v, faces, albedo, yaw_deg=18.0, title=""):
    from matplotlib.collections import PolyCollection

    th = np.deg2rad(yaw_deg)
    r = np.array([[np.cos(th), 0, np.sin(th)], [0, 1, 0], [-np.sin(th), 0, np.cos(th)]])
    p = v @ r.T
    tri = p[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
    light = np.array([0.3, 0.4, 1.0])
    light /= np.linalg.norm(light)
    shade = 0.25 + 0.75 * np.clip(n @ light, 0, 1)
    col = np.clip(albedo[faces].mean(1) * shade[:, None], 0, 1)
    order = np.argsort(tri[:, :, 2].mean(1))  # painter's algorithm: far first
    keep = order[n[order, 2] > -0.05]  # back-face culling
    ax.add_collection(
        PolyCollection(tri[keep, :, :2], facecolors=col[keep], edgecolors="none", antialiased=False)
    )
    ax.set_xlim(-8.5, 8.5)
    ax.set_ylim(-10.5, 7.5)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=6, pad=1)


def contact_sheet(npz: Path, out_png: Path) -> None:
    """Mean, every expression at 1.0, and identity modes 1-3 at -3/+3 sd, shaded (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = np.load(npz)
    mean = d["mean"].astype(np.float64)
    faces = d["faces"].astype(np.int64)
    alb = d["default_albedo"].astype(np.float64)
    ex = d["expression_basis"].astype(np.float64)
    idb = d["identity_basis"].astype(np.float64)
    names = [str(n) for n in d["expression_names"]]
    panels = [("mean", mean)]
    panels += [(n, mean + ex[k]) for k, n in enumerate(names)]
    for k in range(3):
        for s in (-3, 3):
            panels.append((f"identity {k + 1} {s:+d} sd", mean + s * idb[k]))
    cols = 10
    rows = int(np.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.25, rows * 1.45))
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (title, v) in zip(axes.ravel(), panels, strict=False):
        _draw(ax, v, faces, alb, title=title)
    fig.subplots_adjust(left=0.005, right=0.995, top=0.97, bottom=0.005, wspace=0.02, hspace=0.12)
    fig.savefig(out_png, dpi=80)
    plt.close(fig)
    try:  # shrink: palette PNG
        from PIL import Image

        Image.open(out_png).convert("RGB").quantize(colors=128).save(out_png, optimize=True)
    except Exception:
        pass


def main(argv=None):
    from facerig.io.assets import shared_path

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_ict = shared_path("assets", "ict-facekit", "ict_facekit_light.npz")
    ap.add_argument("--ict", type=Path, default=default_ict, help="ICT-FaceKit light npz")
    ap.add_argument("--out", type=Path, default=ROOT / "src/facerig/assets/builtin_face_model.npz")
    ap.add_argument("--report", type=Path, default=None, help="write the build figures as JSON here")
    ap.add_argument("--figure", type=Path, default=ROOT / "docs/images/builtin_expressions.png")
    ap.add_argument("--figure-only", action="store_true", help="only redraw the contact sheet from --out")
    a = ap.parse_args(argv)
    if a.figure_only:
        a.figure.parent.mkdir(parents=True, exist_ok=True)
        contact_sheet(a.out, a.figure)
        return
    if a.ict is None or not Path(a.ict).exists():
        raise SystemExit("ICT-FaceKit npz not found: pass --ict PATH (see docs/builtin-model.md)")
    build(Path(a.ict), a.out, a.report)
    if a.figure:
        a.figure.parent.mkdir(parents=True, exist_ok=True)
        contact_sheet(a.out, a.figure)


if __name__ == "__main__":
    main()
