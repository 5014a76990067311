"""ICT-FaceKit light (MIT) as a facerig face model, and a converter from the official release.

The model file is the project's npz layout (see ``../shared/assets/README.md``): ``neutral``,
``faces``, ``uv`` + ``faces_uv``, ``identity_basis`` (100 modes, already scaled to one standard
deviation: ICT samples identities with N(0, 1) weights), ``expression_basis`` (53 ARKit-style
shapes), ``landmarks_multipie68``, ``region_names`` + ``region_vertex_first/last``.

Looked for in: the ``path`` argument, ``$FACERIG_ICT``, ``<user cache>/ict-facekit/ict_facekit_light.npz``,
``<shared>/assets/ict-facekit/ict_facekit_light.npz``. ``convert_ict_release`` makes that file from
the official release folder (``FaceXModel/``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from facerig.errors import AssetMissing, InvalidInput
from facerig.io.assets import shared_path, user_cache_dir
from facerig.morphable.base import FaceModel

ICT_FILE = "ict_facekit_light.npz"
MP_PAIRS = [1, 152, 33, 133, 362, 263, 61, 291]
ICT_MULTIPIE = [30, 8, 36, 39, 42, 45, 48, 54]
REGION_NAMES = ("skin", "brows", "eyes", "lips", "mouth_interior", "nose")
#: ICT regions kept by default; optional extras: see ``ICTFaceModel.load(parts=...)``
DEFAULT_PARTS = ("face", "head_and_neck")
OPTIONAL_PARTS = ("eyeball_left", "eyeball_right", "mouth_socket", "gums_and_tongue", "teeth")
_PART_REGION = {
    "face": "skin",
    "head_and_neck": "skin",
    "eyeball_left": "eyes",
    "eyeball_right": "eyes",
    "mouth_socket": "mouth_interior",
    "gums_and_tongue": "mouth_interior",
    "teeth": "mouth_interior",
}
ALIAS_BASES = (
    "mouthPress", "mouthSmile", "browDown", "eyeBlink", "mouthFrown", "mouthStretch", "eyeWide",
    "eyeSquint", "noseSneer", "browOuterUp", "cheekSquint", "mouthDimple", "mouthUpperUp",
    "mouthLowerDown", "eyeLookDown", "eyeLookUp", "eyeLookIn", "eyeLookOut", "browInnerUp", "cheekPuff",
)  # fmt: skip

_HOW = (
    "get ICT-FaceKit (MIT) from https://github.com/ICT-VGL/ICT-FaceKit and convert its FaceXModel "
    "folder with facerig.morphable.ict.convert_ict_release(SRC, OUT) (or `facerig assets install "
    "ict-facekit`), then pass the npz path or set FACERIG_ICT"
)


def find_ict(path: str | os.PathLike | None = None) -> Path:
    cands: list[Path] = []
    if path:
        cands.append(Path(path))
    if os.environ.get("FACERIG_ICT"):
        cands.append(Path(os.environ["FACERIG_ICT"]))
    cands.append(user_cache_dir() / "ict-facekit" / ICT_FILE)
    sp = shared_path("assets", "ict-facekit", ICT_FILE)
    if sp is not None:
        cands.append(sp)
    for c in cands:
        if c.is_file():
            return c
    raise AssetMissing("ICT-FaceKit model (ict_facekit_light.npz)", ", ".join(str(c) for c in cands), _HOW)


def _npz(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as d:
            return {k: d[k] for k in d.files}
    except Exception as e:
        raise InvalidInput(
            f"ICT model file {path}", "an npz in facerig's ICT layout", type(e).__name__
        ) from e


def builtin_correspondence(ict: dict, vertex_ids: np.ndarray, faces: np.ndarray) -> dict:
    """Where the 478 MediaPipe landmarks lie on ICT's surface.

    The builtin mean (already in ICT's frame) is aligned to ICT's neutral by a similarity on the 8
    landmark pairs; each landmark is then projected to the closest point of ICT's face region
    (irises: the eyeballs when present, else the face). Returns faces/bary indices into ``faces``."""
    from facerig.morphable.builtin import load_arrays
    from facerig.morphable.transfer import closest_points_on_mesh, similarity_fit

    b = load_arrays()
    mean = b["mean"].astype(np.float64)
    nv = ict["neutral"].astype(np.float64)
    lm = nv[ict["landmarks_multipie68"][ICT_MULTIPIE]]
    t = similarity_fit(mean[MP_PAIRS], lm)
    pts = t.apply(mean)
    first = {str(n): int(a) for n, a in zip(ict["region_names"], ict["region_vertex_first"], strict=True)}
    last = {str(n): int(a) for n, a in zip(ict["region_names"], ict["region_vertex_last"], strict=True)}
    # faces are in local (kept-vertex) numbering; map back to ICT's ids for region tests
    gf = vertex_ids[faces]

    def tris_of(region):
        return np.nonzero(((gf >= first[region]) & (gf <= last[region])).all(1))[0]

    face_t = tris_of("face")
    out_f = np.zeros(len(pts), np.int64)
    out_b = np.zeros((len(pts), 3))
    dist = np.zeros(len(pts))
    local_v = np.full(len(nv), -1)
    local_v[vertex_ids] = np.arange(len(vertex_ids))
    verts = nv[vertex_ids]
    groups = [(np.arange(468), face_t)]
    for ids, region in ((np.arange(468, 473), "eyeball_right"), (np.arange(473, 478), "eyeball_left")):
        et = tris_of(region)
        groups.append((ids, et if len(et) else face_t))
    for ids, tset in groups:
        f, bc, d = closest_points_on_mesh(pts[ids], verts, faces[tset])
        out_f[ids] = tset[f]
        out_b[ids] = bc
        dist[ids] = d
    return {"faces": out_f, "bary": out_b, "distance": dist}


class ICTFaceModel(FaceModel):
    """ICT-FaceKit light: by default the face + head-and-neck regions (9409 + 1839 vertices).

    ``expression_names`` are ICT's 53 names as-is (``_L`` = subject's left = +x); aliases set both
    sides (``mouthSmile`` -> ``mouthSmile_L``, ``mouthSmile_R``). Identity coefficients are in
    standard deviations. ``uv`` is ICT's per-vertex uv of the face UDIM tile (u in [0, 1]); vertices
    whose uv lies on another tile keep their wrapped ``u % 1`` (documented in docs/builtin-model.md).
    """

    name = "ict"
    units = "cm"
    expression_range = (0.0, 1.0)

    def __init__(self, ict: dict, parts=DEFAULT_PARTS, dtype=torch.float32, device=None, cache_key: str = ""):
        super().__init__()
        names = [str(n) for n in ict["region_names"]]
        first = dict(zip(names, ict["region_vertex_first"].tolist(), strict=True))
        last = dict(zip(names, ict["region_vertex_last"].tolist(), strict=True))
        if parts == "all":  # every vertex of the file (26,719 for ICT light)
            parts = tuple(n for n in names if n != "narrow_face")
        for p in parts:
            if p not in first:
                raise InvalidInput("ICT part", f"one of {', '.join(names)}", p)
        keep = np.zeros(len(ict["neutral"]), bool)
        for p in parts:
            keep[first[p] : last[p] + 1] = True
        vid = np.nonzero(keep)[0]
        local = np.full(len(keep), -1)
        local[vid] = np.arange(len(vid))
        fmask = keep[ict["faces"]].all(1)
        faces = local[ict["faces"][fmask]]

        # regions per triangle: from the part, refined on the face by the builtin correspondence later
        tri_region = np.zeros(len(faces), np.int64)
        gf = vid[faces]
        for p in parts:
            inside = ((gf >= first[p]) & (gf <= last[p])).all(1)
            tri_region[inside] = REGION_NAMES.index(_PART_REGION.get(p, "eyes" if "eye" in p else "skin"))

        # per-vertex uv (first uv seen for each vertex), face tile
        uv = np.zeros((len(ict["neutral"]), 2), np.float32)
        fuv = ict["faces_uv"]
        uv[ict["faces"].ravel()] = ict["uv"][fuv.ravel()]
        uv = uv[vid]
        uv[:, 0] = np.mod(uv[:, 0], 1.0)

        self.expression_names = tuple(str(n) for n in ict["expression_names"])
        self.expression_aliases = {
            b: (f"{b}_L", f"{b}_R")
            for b in ALIAS_BASES
            if f"{b}_L" in self.expression_names and f"{b}_R" in self.expression_names
        }
        self.region_names = REGION_NAMES
        self.parts = tuple(parts)
        self.vertex_ids = vid

        corr = self._correspondence(ict, vid, faces, cache_key)
        lm_w = np.ones(478, np.float32)
        from facerig.morphable.builtin import load_arrays

        lm_w[:] = load_arrays()["landmark_weight"]
        # label face triangles by the builtin model's regions at the nearest landmark-projected vertex
        tri_region = self._label_face_regions(ict, vid, faces, tri_region, first, last)

        def f(x):
            return torch.as_tensor(np.asarray(x, np.float32), dtype=dtype, device=device)

        def i(x):
            return torch.as_tensor(np.asarray(x, np.int64), device=device)

        self.register_buffer("mean", f(ict["neutral"][vid]))
        self.register_buffer("faces", i(faces))
        self.register_buffer("identity_basis", f(ict["identity_basis"][:, vid]))
        self.register_buffer("expression_basis", f(ict["expression_basis"][:, vid]))
        self.register_buffer("uv", f(uv))
        self.register_buffer("landmark_index", i(np.arange(478)))
        self.register_buffer("landmark_faces", i(corr["faces"]))
        self.register_buffer("landmark_bary", f(corr["bary"]))
        self.register_buffer("landmark_weight", f(lm_w))
        self.register_buffer("face_region", i(tri_region))
        alb = np.tile(np.array([0.80, 0.60, 0.50], np.float32), (len(vid), 1))
        for r, col in (
            ("lips", (0.72, 0.42, 0.42)),
            ("mouth_interior", (0.35, 0.15, 0.15)),
            ("eyes", (0.85, 0.82, 0.80)),
        ):
            alb[np.unique(faces[tri_region == REGION_NAMES.index(r)])] = col
        self.register_buffer("default_albedo", f(alb))

    @staticmethod
    def _label_face_regions(ict, vid, faces, tri_region, first, last):
        """Brows / lips / nose on ICT's face: transfer the builtin model's triangle regions by
        projecting each ICT face-triangle centroid to the frontal (x, y) plane of the builtin mean."""
        from matplotlib.path import Path as MPath

        from facerig.morphable.builtin import load_arrays

        b = load_arrays()
        bm = b["mean"].astype(np.float64)
        bf = b["faces"].astype(np.int64)[:852]
        br = b["face_region"].astype(np.int64)[:852]
        nv = ict["neutral"].astype(np.float64)[vid]
        cen = nv[faces].mean(1)
        gf = vid[faces]
        on_face = ((gf >= first["face"]) & (gf <= last["face"])).all(1) & (cen[:, 2] > 6.0)
        for rname in ("brows", "lips", "nose"):
            rid = REGION_NAMES.index(rname)
            tris = bm[bf[br == rid]][:, :, :2]
            hit = np.zeros(len(faces), bool)
            for tri in tris:
                hit |= MPath(tri).contains_points(cen[:, :2])
            tri_region[on_face & hit] = rid
        return tri_region

    def _correspondence(self, ict, vid, faces, cache_key):
        cache = (
            user_cache_dir()
            / "ict-facekit"
            / f"correspondence-{cache_key}-{hashlib.sha1('|'.join(self.parts).encode()).hexdigest()[:8]}.npz"
        )
        if cache_key and cache.is_file():
            try:
                with np.load(cache) as d:
                    return {"faces": d["faces"], "bary": d["bary"]}
            except Exception:
                pass
        corr = builtin_correspondence(ict, vid, faces)
        if cache_key:
            try:
                cache.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache.with_suffix(".tmp.npz")
                np.savez(tmp, faces=corr["faces"], bary=corr["bary"], distance=corr["distance"])
                os.replace(tmp, cache)
            except OSError:
                pass
        return corr

    @classmethod
    def load(cls, path=None, parts=DEFAULT_PARTS, dtype=torch.float32, device=None) -> ICTFaceModel:
        p = find_ict(path)
        st = p.stat()
        from facerig.morphable.builtin import load_arrays

        key = hashlib.sha1(
            f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}|{load_arrays()['mean'].tobytes().hex()[:64]}".encode()
        ).hexdigest()[:12]
        parts = parts if parts == "all" else tuple(parts)
        return cls(_npz(p), parts=parts, dtype=dtype, device=device, cache_key=key)


# ------------------------------------------------------------------------------------------------
# converter from the official release
# ------------------------------------------------------------------------------------------------
def _read_obj(path: Path):
    v, vt, faces, faces_uv = [], [], [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("v "):
                v.append([float(x) for x in line.split()[1:4]])
            elif line.startswith("vt "):
                vt.append([float(x) for x in line.split()[1:3]])
            elif line.startswith("f "):
                items = line.split()[1:]
                faces.append([int(it.split("/")[0]) for it in items])
                faces_uv.append(
                    [int(it.split("/")[1]) if it.count("/") >= 1 and it.split("/")[1] else 0 for it in items]
                )
    return np.array(v, np.float32), np.array(vt, np.float32).reshape(-1, 2), faces, faces_uv


def convert_ict_release(src_dir: str | os.PathLike, out_npz: str | os.PathLike) -> Path:
    """Convert the official ICT-FaceKit release (``FaceXModel/`` or its parent) to facerig's npz.

    Reads ``generic_neutral_mesh.obj`` (vertices, polygons split into triangle fans, uvs),
    ``identity000.obj`` ... (consecutive, until the first missing) and one OBJ per expression named
    by its ARKit name (the list in ``vertex_indices.json``'s ``expressions`` when present, else every
    other OBJ with a camelCase ARKit-style name). Offsets are stored relative to the neutral.
    Region ranges are taken from ``vertex_indices.json`` when it has them, else one ``face`` region.
    """
    src = Path(src_dir)
    if (src / "FaceXModel").is_dir():
        src = src / "FaceXModel"
    neutral_path = src / "generic_neutral_mesh.obj"
    if not neutral_path.is_file():
        raise AssetMissing("ICT-FaceKit generic_neutral_mesh.obj", str(src), _HOW)
    nv, vt, polys, polys_uv = _read_obj(neutral_path)
    tris, tris_uv, poly_of = [], [], []
    for k, (p, pu) in enumerate(zip(polys, polys_uv, strict=True)):
        for j in range(1, len(p) - 1):
            tris.append([p[0] - 1, p[j] - 1, p[j + 1] - 1])
            tris_uv.append([pu[0] - 1, pu[j] - 1, pu[j + 1] - 1])
            poly_of.append(k)
    config = {}
    if (src / "vertex_indices.json").is_file():
        config = json.loads((src / "vertex_indices.json").read_text())

    def offsets(path):
        v = _read_obj(path)[0]
        if v.shape != nv.shape:
            raise InvalidInput(str(path), f"{len(nv)} vertices like the neutral", len(v))
        return v - nv

    ident, id_names = [], []
    k = 0
    while (src / f"identity{k:03d}.obj").is_file():
        ident.append(offsets(src / f"identity{k:03d}.obj"))
        id_names.append(f"identity{k:03d}")
        k += 1
    ex_names = list(config.get("expressions", []))
    if not ex_names:
        skip = {"generic_neutral_mesh"}
        ex_names = sorted(
            p.stem for p in src.glob("*.obj") if p.stem not in skip and not p.stem.startswith("identity")
        )
    ex_names = [n for n in ex_names if (src / f"{n}.obj").is_file()]
    expr = [offsets(src / f"{n}.obj") for n in ex_names]

    regions = config.get("regions") if isinstance(config.get("regions"), dict) else None
    if regions:
        rnames = list(regions)
        rfirst = [int(regions[r][0]) for r in rnames]
        rlast = [int(regions[r][1]) for r in rnames]
    else:
        rnames, rfirst, rlast = ["face"], [0], [len(nv) - 1]
    lmk = np.array(config.get("landmarks_multipie68", []), np.int32)
    out = Path(out_npz)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        neutral=nv,
        faces=np.array(tris, np.int32).reshape(-1, 3),
        uv=vt,
        faces_uv=np.array(tris_uv, np.int32).reshape(-1, 3),
        faces_polygon=np.array(poly_of, np.int32),
        identity_basis=np.array(ident, np.float32).reshape(len(ident), len(nv), 3),
        identity_names=np.array(id_names),
        expression_basis=np.array(expr, np.float32).reshape(len(expr), len(nv), 3),
        expression_names=np.array(ex_names),
        landmarks_multipie68=lmk,
        region_names=np.array(rnames),
        region_vertex_first=np.array(rfirst, np.int32),
        region_vertex_last=np.array(rlast, np.int32),
    )
    return out


__all__ = ["ICTFaceModel", "builtin_correspondence", "convert_ict_release", "find_ict"]
