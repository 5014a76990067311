"""The flame tier: FLAME 2020/2023 from the user's own ``generic_model.pkl`` (or an npz of it).

FLAME is licensed (registration at https://flame.is.tue.mpg.de); facerig never ships it. Point
``FACERIG_FLAME`` (or ``load(path=...)``) at the file. The helper files (``head_template.obj``,
``FLAME_masks.pkl``, ``landmark_embedding.npy``, ``mediapipe_landmark_embedding.npz``) come with
DECA's/smirk's public repositories; they are looked for in ``aux_dir``, ``FACERIG_FLAME_AUX`` or the
shared ``assets/flame-aux`` folder. See docs/flame.md.

Geometry: ``v = T + B_S(identity) + B_E(expression) + B_P(pose)`` followed by linear blend skinning
over the 5 joints (root, neck, jaw, left eye, right eye) - :mod:`facerig.morphable.lbs`. Units are
metres, x = subject's left, y up, z towards the viewer (FLAME's own frame: no axis change).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facerig.errors import AssetMissing, InvalidInput
from facerig.io.safe_pickle import restricted_load, to_numpy
from facerig.morphable import lbs as _lbs
from facerig.morphable.base import FaceModel, _batch
from facerig.rotations import axis_angle_to_matrix

__all__ = ["FLAMEFaceModel", "read_flame_file", "read_obj_uv", "FLAME_REGION_NAMES", "DEFAULT_SKIN_ALBEDO"]

#: identity columns in FLAME's shapedirs; expression columns start here
N_SHAPE_TOTAL = 300
FLAME_JOINTS = ("root", "neck", "jaw", "left_eye", "right_eye")
FLAME_REGION_NAMES = (
    "skin", "brows", "eyes", "lips", "mouth_interior", "nose", "ears", "scalp", "neck",
)
DEFAULT_SKIN_ALBEDO = (0.7, 0.55, 0.45)
AUX_FILES = {
    "template": "head_template.obj",
    "masks": "FLAME_masks.pkl",
    "lmk68": "landmark_embedding.npy",
    "mediapipe": "mediapipe_landmark_embedding.npz",
}
_REQUIRED_FIELDS = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights")
_HOW_FLAME = (
    "FLAME is licensed: register at https://flame.is.tue.mpg.de, download FLAME 2020 or 2023 and set "
    "FACERIG_FLAME=/path/to/generic_model.pkl (or pass path=...)"
)


# ---- files -------------------------------------------------------------------------------------
def read_flame_file(path: str | os.PathLike) -> dict[str, Any]:
    """Fields of a FLAME model file as numpy arrays (``J_regressor`` dense (J, V)).

    ``.pkl``: the official chumpy pickle, read with :func:`facerig.io.safe_pickle.restricted_load`
    (chumpy is never imported). ``.npz``: the same field names as plain arrays.
    """
    path = Path(path)
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as z:
            raw: dict[str, Any] = {k: z[k] for k in z.files}
    else:
        raw = restricted_load(path)
        if not isinstance(raw, dict):
            raise InvalidInput(f"FLAME file {path}", "a pickled dict of model fields", type(raw).__name__)
    missing = [k for k in _REQUIRED_FIELDS if k not in raw]
    if missing:
        raise InvalidInput(f"FLAME file {path}", f"fields {', '.join(_REQUIRED_FIELDS)}",
                           f"missing {', '.join(missing)}")
    out: dict[str, Any] = {}
    for k, val in raw.items():
        if k in ("bs_style", "bs_type"):
            out[k] = str(np.asarray(val)) if not isinstance(val, str) else val
            continue
        try:
            out[k] = to_numpy(val)
        except (InvalidInput, TypeError, ValueError):
            if k in _REQUIRED_FIELDS or k in ("vt", "ft"):
                raise
    return out


def read_obj_uv(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(v (V,3), vt (T,2), f (F,3), ft (F,3))`` of a triangle OBJ with texture indices (0-based)."""
    v, vt, f, ft = [], [], [], []
    with open(path) as fh:
        for line in fh:
            if line.startswith("v "):
                v.append(line.split()[1:4])
            elif line.startswith("vt "):
                vt.append(line.split()[1:3])
            elif line.startswith("f "):
                corners = [c.split("/") for c in line.split()[1:]]
                if len(corners) != 3:
                    raise InvalidInput(f"OBJ {path}", "triangles only", f"a face with {len(corners)} corners")
                f.append([int(c[0]) - 1 for c in corners])
                ft.append([int(c[1]) - 1 if len(c) > 1 and c[1] else int(c[0]) - 1 for c in corners])
    return (np.asarray(v, np.float64), np.asarray(vt, np.float64).reshape(-1, 2),
            np.asarray(f, np.int64), np.asarray(ft, np.int64))


def per_vertex_uv(n_vertices: int, f: np.ndarray, vt: np.ndarray, ft: np.ndarray) -> np.ndarray:
    """Average of the texture coordinates each vertex takes in its triangles (seams get a mean)."""
    acc = np.zeros((n_vertices, 2))
    cnt = np.zeros(n_vertices)
    np.add.at(acc, f.reshape(-1), vt[ft.reshape(-1)])
    np.add.at(cnt, f.reshape(-1), 1)
    uv = acc / np.maximum(cnt, 1)[:, None]
    uv[cnt == 0] = 0.5
    return uv


def _aux_dir(aux_dir: str | os.PathLike | None) -> tuple[Path | None, str]:
    if aux_dir is not None:
        return Path(aux_dir), str(aux_dir)
    env = os.environ.get("FACERIG_FLAME_AUX")
    if env:
        return Path(env), f"FACERIG_FLAME_AUX={env}"
    from facerig.io.assets import shared_path

    p = shared_path("assets", "flame-aux")
    return p, (str(p) if p else "aux_dir, FACERIG_FLAME_AUX and the shared assets/flame-aux folder")


def _aux_file(d: Path | None, looked: str, key: str) -> Path:
    name = AUX_FILES[key]
    p = d / name if d is not None else None
    if p is None or not p.is_file():
        raise AssetMissing(
            f"FLAME helper file {name}",
            looked,
            "it needs no registration: get it from DECA's or smirk's public repository "
            "(e.g. georgeretsi/smirk assets/) and set FACERIG_FLAME_AUX or pass aux_dir=",
        )
    return p


# ---- the model ---------------------------------------------------------------------------------
class FLAMEFaceModel(FaceModel):
    """FLAME as a :class:`FaceModel`: bases from the user's file, skinning with jaw/neck/eye joints.

    Extra buffers: ``posedirs`` (36, V*3), ``J_regressor`` (5, V), ``parents`` (5,), ``lbs_weights``
    (V, 5), ``uv_coords`` (T, 2) and ``uv_faces`` (F, 3) (the OBJ's own texture layout, which has
    seams), ``lmk68_faces``/``lmk68_bary`` (DECA's 68 static landmarks), ``dyn_lmk_faces`` (79, 17)
    and ``dyn_lmk_bary`` (79, 17, 3) (DECA's yaw-dependent contour).
    """

    name = "flame"
    units = "m"
    expression_range = None
    region_names = FLAME_REGION_NAMES

    # extra buffers (registered in __init__)
    posedirs: torch.Tensor
    J_regressor: torch.Tensor
    parents: torch.Tensor
    lbs_weights: torch.Tensor

    def __init__(self, fields: dict[str, Any], n_shape: int = 100, n_exp: int = 50,
                 aux: dict[str, Any] | None = None, albedo: Any = None, source: str = "<arrays>"):
        super().__init__()
        v = np.asarray(fields["v_template"], np.float64)
        f = np.asarray(fields["f"]).astype(np.int64)
        sd = np.asarray(fields["shapedirs"], np.float64)
        n_v = v.shape[0]
        if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3 or f.max() >= n_v:
            raise InvalidInput(f"FLAME file {source}", "v_template (V,3) and f (F,3) indexing it",
                               f"{v.shape}, {f.shape}")
        if sd.shape[:2] != (n_v, 3):
            raise InvalidInput(f"FLAME file {source} shapedirs", f"({n_v}, 3, K)", sd.shape)
        n_exp_avail = sd.shape[2] - N_SHAPE_TOTAL
        if not (0 <= n_shape <= min(N_SHAPE_TOTAL, sd.shape[2])):
            raise InvalidInput("n_shape", f"0..{min(N_SHAPE_TOTAL, sd.shape[2])}", n_shape)
        if not (0 <= n_exp <= max(n_exp_avail, 0)):
            raise InvalidInput("n_exp", f"0..{max(n_exp_avail, 0)} (shapedirs has {sd.shape[2]} columns)", n_exp)
        pd = np.asarray(fields["posedirs"], np.float64)
        if pd.ndim == 3:  # pickle layout (V, 3, 36)
            pd = pd.reshape(-1, pd.shape[-1]).T
        jreg = np.asarray(fields["J_regressor"], np.float64)
        kin = np.asarray(fields["kintree_table"]).astype(np.int64)
        parents = kin[0].copy()
        parents[0] = -1
        weights = np.asarray(fields["weights"], np.float64)
        n_j = jreg.shape[0]
        if pd.shape != (9 * (n_j - 1), 3 * n_v) or weights.shape != (n_v, n_j) or jreg.shape[1] != n_v:
            raise InvalidInput(f"FLAME file {source}", "posedirs (V,3,9(J-1)), weights (V,J), J_regressor (J,V)",
                               f"{pd.shape}, {weights.shape}, {jreg.shape}")

        t = lambda a, dt=torch.float32: torch.as_tensor(np.ascontiguousarray(a), dtype=dt)  # noqa: E731
        self.register_buffer("mean", t(v))
        self.register_buffer("faces", t(f, torch.long))
        self.register_buffer("identity_basis", t(sd[:, :, :n_shape].transpose(2, 0, 1)))
        self.register_buffer(
            "expression_basis", t(sd[:, :, N_SHAPE_TOTAL:N_SHAPE_TOTAL + n_exp].transpose(2, 0, 1))
        )
        self.register_buffer("posedirs", t(pd))
        self.register_buffer("J_regressor", t(jreg))
        self.register_buffer("parents", t(parents, torch.long))
        self.register_buffer("lbs_weights", t(weights))
        self.expression_names = tuple(f"exp{i:03d}" for i in range(n_exp))
        self.source = source

        aux = aux or {}
        # UVs: per-vertex mean of the OBJ's (seamed) layout; the full layout is kept as uv_coords/uv_faces
        if "vt" in aux:
            vt, ft = aux["vt"], aux["ft"]
        elif "vt" in fields and "ft" in fields:
            vt, ft = np.asarray(fields["vt"], np.float64), np.asarray(fields["ft"]).astype(np.int64)
        else:
            vt, ft = np.zeros((0, 2)), np.zeros((0, 3), np.int64)
        if len(vt) and ft.shape == f.shape:
            uv = per_vertex_uv(n_v, f, vt, ft)
        else:
            uv = np.full((n_v, 2), 0.5)
        self.register_buffer("uv", t(uv))
        self.register_buffer("uv_coords", t(vt.reshape(-1, 2)))
        self.register_buffer("uv_faces", t(ft.reshape(-1, 3), torch.long))

        self.register_buffer("face_region", t(self._regions(aux.get("masks"), v, f), torch.long))

        mp = aux.get("mediapipe")
        if mp is not None:
            self.register_buffer("landmark_index", t(mp["landmark_indices"], torch.long))
            self.register_buffer("landmark_faces", t(mp["lmk_face_idx"].astype(np.int64), torch.long))
            self.register_buffer("landmark_bary", t(mp["lmk_b_coords"]))
        else:
            self.register_buffer("landmark_index", torch.zeros(0, dtype=torch.long))
            self.register_buffer("landmark_faces", torch.zeros(0, dtype=torch.long))
            self.register_buffer("landmark_bary", torch.zeros(0, 3))
        self.register_buffer("landmark_weight", torch.ones(self.landmark_index.shape[0]))

        lm = aux.get("lmk68")
        if lm is not None:
            self.register_buffer("lmk68_faces", t(to_numpy(lm["full_lmk_faces_idx"]).reshape(-1), torch.long))
            self.register_buffer("lmk68_bary", t(to_numpy(lm["full_lmk_bary_coords"]).reshape(-1, 3)))
            self.register_buffer("dyn_lmk_faces", t(to_numpy(lm["dynamic_lmk_faces_idx"]), torch.long))
            self.register_buffer("dyn_lmk_bary", t(to_numpy(lm["dynamic_lmk_bary_coords"])))
        else:
            self.lmk68_faces = None
            self.lmk68_bary = None
            self.dyn_lmk_faces = None
            self.dyn_lmk_bary = None
        for name in ("landmark_faces", "lmk68_faces", "dyn_lmk_faces"):
            idx = getattr(self, name)
            if idx is not None and idx.numel() and int(idx.max()) >= f.shape[0]:
                raise InvalidInput(f"FLAME helper {name}", f"triangle ids < {f.shape[0]} (a FLAME topology)",
                                   int(idx.max()), hint="the aux files belong to another mesh")

        self.register_buffer("default_albedo", t(self._albedo(albedo, uv, n_v)))

    # ---- construction helpers ----------------------------------------------------------------
    @staticmethod
    def _regions(masks: dict[str, np.ndarray] | None, v: np.ndarray, f: np.ndarray) -> np.ndarray:
        """Region id per triangle from FLAME_masks vertex lists (a triangle is in a mask when all its
        corners are). FLAME has no brow mask: ``brows`` = eye-region triangles above the eyeballs;
        no mouth cavity: ``mouth_interior`` stays empty. Everything else is ``skin``."""
        names = FLAME_REGION_NAMES
        region = np.zeros(f.shape[0], np.int64)
        if masks is None:
            return region
        n_v = v.shape[0]

        def tri_in(*keys: str) -> np.ndarray:
            m = np.zeros(n_v, bool)
            for k in keys:
                if k in masks:
                    ids = np.asarray(masks[k]).astype(np.int64)
                    m[ids[ids < n_v]] = True
            return m[f].all(1)

        centroid_y = v[f][:, :, 1].mean(1)
        eyeball = np.zeros(n_v, bool)
        for k in ("left_eyeball", "right_eyeball"):
            if k in masks:
                eyeball[np.asarray(masks[k]).astype(np.int64)] = True
        brow_line = v[eyeball, 1].max() if eyeball.any() else np.inf
        brows = tri_in("eye_region", "left_eye_region", "right_eye_region") & (centroid_y > brow_line)
        # later assignments win
        for name, sel in (
            ("neck", tri_in("neck")),
            ("scalp", tri_in("scalp")),
            ("ears", tri_in("left_ear", "right_ear")),
            ("nose", tri_in("nose")),
            ("brows", brows),
            ("lips", tri_in("lips")),
            ("eyes", tri_in("left_eyeball", "right_eyeball")),
        ):
            region[sel] = names.index(name)
        return region

    @staticmethod
    def _albedo(albedo: Any, uv: np.ndarray, n_v: int) -> np.ndarray:
        if albedo is None:
            return np.tile(np.asarray(DEFAULT_SKIN_ALBEDO, np.float64), (n_v, 1))
        a = to_numpy(albedo, np.float64)
        if a.shape == (n_v, 3):
            out = a
        elif a.ndim == 3 and a.shape[2] == 3:  # UV texture (H, W, 3), v up (row 0 = v = 1)
            h, w = a.shape[:2]
            col = np.clip(np.round(uv[:, 0] * (w - 1)), 0, w - 1).astype(int)
            row = np.clip(np.round((1 - uv[:, 1]) * (h - 1)), 0, h - 1).astype(int)
            out = a[row, col]
        else:
            raise InvalidInput("albedo", f"per-vertex colours ({n_v}, 3) or a UV texture (H, W, 3)", a.shape)
        if out.max() > 1.0 + 1e-6:
            out = out / 255.0
        return np.clip(out, 0, 1)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, n_shape: int = 100, n_exp: int = 50,
             aux_dir: str | os.PathLike | None = None, albedo: Any = None,
             require_aux: bool = True) -> FLAMEFaceModel:
        """Load FLAME from ``path`` (default ``FACERIG_FLAME``): ``generic_model.pkl`` or npz.

        ``n_shape`` identity and ``n_exp`` expression modes are kept (DECA: 100/50). Helper files
        come from ``aux_dir``, ``FACERIG_FLAME_AUX`` or the shared ``assets/flame-aux``; a missing one
        raises :class:`AssetMissing` naming it, unless ``require_aux=False`` (then uv is 0.5, every
        triangle is skin and there are no landmarks). ``albedo``: per-vertex (V, 3) or UV texture
        (H, W, 3) in [0, 1] (or 0-255); default a uniform skin colour.
        """
        if path is None:
            path = os.environ.get("FACERIG_FLAME") or None
        if path is None or not Path(path).is_file():
            looked = str(path) if path is not None else "the path argument and FACERIG_FLAME (unset)"
            raise AssetMissing("FLAME model (generic_model.pkl)", looked, _HOW_FLAME)
        fields = read_flame_file(path)
        aux = cls.load_aux(aux_dir, require=require_aux)
        return cls(fields, n_shape=n_shape, n_exp=n_exp, aux=aux, albedo=albedo, source=str(path))

    @staticmethod
    def load_aux(aux_dir: str | os.PathLike | None = None, require: bool = True) -> dict[str, Any]:
        """Read the helper files (see ``AUX_FILES``) into a dict; missing ones raise AssetMissing."""
        d, looked = _aux_dir(aux_dir)
        out: dict[str, Any] = {}
        for key in AUX_FILES:
            try:
                p = _aux_file(d, looked, key)
            except AssetMissing:
                if require:
                    raise
                continue
            if key == "template":
                _, vt, _, ft = read_obj_uv(p)
                out["vt"], out["ft"] = vt, ft
            elif key == "masks":
                out["masks"] = {k: to_numpy(val) for k, val in restricted_load(p).items()}
            elif key == "lmk68":
                emb = restricted_load(p, allow_torch=True)
                out["lmk68"] = emb.item() if isinstance(emb, np.ndarray) and emb.dtype == object else emb
            elif key == "mediapipe":
                with np.load(p, allow_pickle=False) as z:
                    out["mediapipe"] = {k: z[k] for k in z.files}
        return out

    # ---- geometry ----------------------------------------------------------------------------
    @property
    def has_jaw_joint(self) -> bool:
        return True

    def shaped(self, identity: torch.Tensor | None = None, expression: torch.Tensor | None = None,
               batch_size: int | None = None) -> torch.Tensor:
        """``T + B_S + B_E`` (B, V, 3): the unposed mesh."""
        return super().forward(identity, expression, None, batch_size)

    def pose(self, identity: torch.Tensor | None = None, expression: torch.Tensor | None = None,
             jaw_pose: torch.Tensor | None = None, batch_size: int | None = None,
             neck_pose: torch.Tensor | None = None, eye_pose: torch.Tensor | None = None,
             global_pose: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Full FLAME: ``(vertices (B, V, 3), joints (B, 5, 3))``. Poses are axis-angle (B, 3);
        ``eye_pose`` (B, 6) = left eye, right eye; ``global_pose`` rotates about the root joint."""
        b = _batch(identity, expression, jaw_pose, neck_pose, eye_pose, global_pose, batch_size)
        v_shaped = self.shaped(identity, expression, b)
        dt, dev = v_shaped.dtype, v_shaped.device

        def part(x: torch.Tensor | None, n: int) -> torch.Tensor:
            if x is None:
                return torch.zeros(b, n, dtype=dt, device=dev)
            x = x.to(dt)
            if x.shape[-1] != n:
                raise InvalidInput("pose", f"(B, {n}) axis-angle", tuple(x.shape))
            return x.expand(b, n) if x.shape[0] != b else x

        full_pose = torch.cat(
            [part(global_pose, 3), part(neck_pose, 3), part(jaw_pose, 3), part(eye_pose, 6)], 1
        )
        empty = torch.zeros(b, 0, dtype=dt, device=dev)
        return _lbs.lbs(empty, full_pose, v_shaped, v_shaped.new_zeros(v_shaped.shape[1], 3, 0),
                        self.posedirs.to(dt), self.J_regressor.to(dt), self.parents,
                        self.lbs_weights.to(dt))

    def forward(self, identity: torch.Tensor | None = None, expression: torch.Tensor | None = None,
                jaw_pose: torch.Tensor | None = None, batch_size: int | None = None,
                neck_pose: torch.Tensor | None = None, eye_pose: torch.Tensor | None = None) -> torch.Tensor:
        """Vertices (B, V, 3) in the head frame: skinned with jaw/neck/eye joints, global rotation zero
        (the renderer/fitter applies the head rotation about the origin)."""
        return self.pose(identity, expression, jaw_pose, batch_size, neck_pose, eye_pose)[0]

    def landmarks68(self, vertices: torch.Tensor, head_pose: torch.Tensor | None = None,
                    neck_pose: torch.Tensor | None = None) -> torch.Tensor:
        """DECA's 68 landmarks (B, 68, 3) (iBUG 68 order) on ``vertices``.

        Without ``head_pose``: the static embedding (``full_lmk_*``, DECA's ``landmarks3d``). With a
        head rotation (B, 3) axis-angle (and optionally ``neck_pose``), the 17 contour points come
        from DECA's yaw-dependent table, as in DECA's ``landmarks2d``.
        """
        if self.lmk68_faces is None:
            raise AssetMissing("FLAME helper file landmark_embedding.npy", "the aux files this model was loaded with",
                               "load the model with the flame-aux files present (aux_dir / FACERIG_FLAME_AUX)")
        lm = _lbs.vertices_to_landmarks(vertices, self.faces, self.lmk68_faces, self.lmk68_bary)
        if head_pose is None and neck_pose is None:
            return lm
        b = vertices.shape[0]
        dt = vertices.dtype
        rot = torch.eye(3, dtype=dt, device=vertices.device).expand(b, 3, 3)
        if neck_pose is not None:
            rot = axis_angle_to_matrix(neck_pose.to(dt)).expand(b, 3, 3)
        if head_pose is not None:
            rot = axis_angle_to_matrix(head_pose.to(dt)).expand(b, 3, 3) @ rot
        idx = _contour_table_index(rot)
        dyn = _lbs.vertices_to_landmarks(vertices, self.faces, self.dyn_lmk_faces[idx], self.dyn_lmk_bary[idx])
        return torch.cat([dyn, lm[:, 17:]], 1)


def _contour_table_index(rot: torch.Tensor) -> torch.Tensor:
    """Row of DECA's dynamic contour table for head rotations (B, 3, 3): rounded yaw in degrees,
    0..39 for yaw >= 0, 40..78 for negative yaw (as DECA's FLAME.landmarks2d)."""
    sy = torch.sqrt(rot[:, 0, 0] ** 2 + rot[:, 1, 0] ** 2)
    yaw = torch.rad2deg(torch.atan2(-rot[:, 2, 0], sy))
    a = torch.round(torch.clamp(yaw, max=39)).long()
    return torch.where(a < 0, torch.where(a < -39, torch.full_like(a, 78), 39 - a), a)
