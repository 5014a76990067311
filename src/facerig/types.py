"""Dataclasses that cross stage boundaries (detect -> fit -> rig -> render -> engine).

Conventions (frames, units, ranges) are documented in ``docs/conventions.md``; the short version:

* image pixels: continuous coordinates, x right, y down, pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``;
* model / world space: x = subject's left (image right), y up, z towards the viewer;
* NDC of a crop: x, y in [-1, 1], y down (pixel = (ndc + 1) / 2 * size);
* images as tensors: float (B, C, H, W) in [0, 1]; as arrays: uint8 (H, W, 3) RGB.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch

from facerig.errors import InvalidInput

# --------------------------------------------------------------------------------------------
# crops


@dataclass(frozen=True)
class CropTransform:
    """Similarity transform from an image frame to a square crop.

    ``matrix`` (2x3, float64) maps frame pixel coordinates (x, y) to crop pixel coordinates;
    ``size`` is the crop side in pixels; ``frame_size`` is (height, width) of the frame.
    """

    matrix: np.ndarray
    size: int
    frame_size: tuple[int, int]
    kind: str = "custom"

    def __post_init__(self) -> None:
        m = np.asarray(self.matrix, dtype=np.float64)
        if m.shape != (2, 3):
            raise InvalidInput("CropTransform.matrix", "a 2x3 affine matrix", m.shape)
        object.__setattr__(self, "matrix", m)

    @property
    def scale(self) -> float:
        """Crop pixels per frame pixel."""
        return float(np.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))

    @property
    def inverse_matrix(self) -> np.ndarray:
        a = self.matrix[:, :2]
        ai = np.linalg.inv(a)
        return np.concatenate([ai, -ai @ self.matrix[:, 2:]], axis=1)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Frame pixel coordinates (..., 2 or 3) -> crop pixel coordinates; a z column is scaled."""
        p = np.asarray(points, dtype=np.float64)
        out = p.copy()
        out[..., :2] = p[..., :2] @ self.matrix[:, :2].T + self.matrix[:, 2]
        if p.shape[-1] > 2:
            out[..., 2:] = p[..., 2:] * self.scale
        return out

    def invert(self, points: np.ndarray) -> np.ndarray:
        """Crop pixel coordinates (..., 2 or 3) -> frame pixel coordinates."""
        p = np.asarray(points, dtype=np.float64)
        inv = self.inverse_matrix
        out = p.copy()
        out[..., :2] = p[..., :2] @ inv[:, :2].T + inv[:, 2]
        if p.shape[-1] > 2:
            out[..., 2:] = p[..., 2:] / self.scale
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "matrix": self.matrix.tolist(),
            "size": self.size,
            "frame_size": list(self.frame_size),
            "kind": self.kind,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CropTransform:
        return cls(np.asarray(d["matrix"]), int(d["size"]), tuple(d["frame_size"]), d.get("kind", "custom"))

    @classmethod
    def identity(cls, height: int, width: int) -> CropTransform:
        """The identity crop (only valid as a 'crop' when the frame is square)."""
        return cls(np.array([[1.0, 0, 0], [0, 1.0, 0]]), max(height, width), (height, width), "identity")


# --------------------------------------------------------------------------------------------
# detection


@dataclass
class FaceLandmarks:
    """One detected face in one frame.

    ``points``: (478, 3) float32 MediaPipe face-mesh landmarks (468 mesh + 10 iris) in frame pixels;
    x, y as image coordinates, z relative depth in the same pixel units (smaller = closer to the
    camera, MediaPipe's sign), centred near the face's centre of mass.
    ``box``: (x0, y0, x1, y1) tight landmark box in frame pixels. ``frame_size``: (height, width).
    """

    points: np.ndarray
    frame_size: tuple[int, int]
    box: tuple[float, float, float, float]
    score: float = 1.0
    frame_index: int = 0

    @property
    def xy(self) -> np.ndarray:
        return self.points[:, :2]

    @property
    def size(self) -> float:
        """Face size in pixels: the mean side of the landmark box."""
        x0, y0, x1, y1 = self.box
        return float(((x1 - x0) + (y1 - y0)) / 2)

    def to_dict(self) -> dict[str, Any]:
        return {
            "points": np.round(self.points, 3).tolist(),
            "frame_size": list(self.frame_size),
            "box": list(self.box),
            "score": self.score,
            "frame_index": self.frame_index,
        }


# --------------------------------------------------------------------------------------------
# face parameters

CAMERA_KINDS = ("weak_perspective", "perspective")


def _t(x: Any, name: str, shape_tail: tuple[int, ...] | None = None) -> torch.Tensor:
    t = torch.as_tensor(x)
    if not torch.is_floating_point(t):
        t = t.float()
    if shape_tail is not None and (t.ndim != 1 + len(shape_tail) or tuple(t.shape[1:]) != shape_tail):
        raise InvalidInput(name, f"a tensor of shape (B, {', '.join(map(str, shape_tail))})", tuple(t.shape))
    return t


@dataclass
class FaceParams:
    """Fitted (or edited) face-model parameters for a batch of B faces.

    Fields (all torch tensors with leading batch dim B):

    * ``identity`` (B, K_id): identity coefficients of the face model (unitless, ~N(0, 1) priors).
    * ``expression`` (B, K_exp): expression coefficients; names in ``expression_names``; in [0, 1]
      for blendshape models (builtin, ict), unbounded PCA weights for flame.
    * ``jaw_pose`` (B, 3): jaw axis-angle in radians (flame; zeros for blendshape models, whose jaw
      is driven by the jawOpen/jawLeft/jawRight blendshapes).
    * ``rotation`` (B, 3): head rotation, axis-angle in radians, in the world frame (x right, y up,
      z to the viewer). ``angles`` gives yaw/pitch/roll in degrees.
    * ``camera`` (B, 3): weak perspective ``(s, tx, ty)`` exactly as DECA: ndc_xy = s * (xy + t),
      then y negated (model units -> NDC of the crop); or perspective ``(tx, ty, tz)`` translation
      in model units with the camera at the origin looking down -z and ``focal`` in NDC units.
    * ``light`` (B, 9, 3): SH lighting coefficients, DECA's basis and constants (conventions.md).
    * ``albedo`` (B, V, 3) per-vertex linear albedo in [0, 1], or None.
    * ``texture`` (B, 3, T, T) UV albedo texture in [0, 1] with ``texture_mask`` (B, 1, T, T) in {0,1}
      marking texels seen in the image, or None.
    * ``crop`` list of B CropTransform: frame -> crop; the camera projects into the crop.
    """

    model: str
    identity: torch.Tensor
    expression: torch.Tensor
    expression_names: tuple[str, ...]
    rotation: torch.Tensor
    camera: torch.Tensor
    light: torch.Tensor
    jaw_pose: torch.Tensor | None = None
    camera_kind: str = "weak_perspective"
    focal: float = 12.0
    albedo: torch.Tensor | None = None
    texture: torch.Tensor | None = None
    texture_mask: torch.Tensor | None = None
    crop: list[CropTransform] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.identity = _t(self.identity, "identity")
        self.expression = _t(self.expression, "expression")
        if self.identity.ndim != 2:
            raise InvalidInput("identity", "a (B, K_id) tensor", tuple(self.identity.shape))
        b = self.identity.shape[0]
        if self.expression.ndim != 2 or self.expression.shape[0] != b:
            raise InvalidInput("expression", f"a ({b}, K_exp) tensor", tuple(self.expression.shape))
        self.expression_names = tuple(self.expression_names)
        if len(self.expression_names) != self.expression.shape[1]:
            raise InvalidInput(
                "expression_names", f"{self.expression.shape[1]} names", len(self.expression_names)
            )
        self.rotation = _t(self.rotation, "rotation", (3,))
        self.camera = _t(self.camera, "camera", (3,))
        self.light = _t(self.light, "light", (9, 3))
        if self.jaw_pose is None:
            self.jaw_pose = torch.zeros(b, 3, dtype=self.identity.dtype, device=self.identity.device)
        self.jaw_pose = _t(self.jaw_pose, "jaw_pose", (3,))
        if self.camera_kind not in CAMERA_KINDS:
            raise InvalidInput("camera_kind", f"one of {CAMERA_KINDS}", self.camera_kind)
        for name in ("rotation", "camera", "light", "jaw_pose"):
            if getattr(self, name).shape[0] != b:
                raise InvalidInput(name, f"batch size {b}", getattr(self, name).shape[0])
        if self.crop is not None and len(self.crop) != b:
            raise InvalidInput("crop", f"{b} CropTransforms", len(self.crop))

    # ---- basic container behaviour -------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return int(self.identity.shape[0])

    def __len__(self) -> int:
        return self.batch_size

    _TENSORS = ("identity", "expression", "rotation", "camera", "light", "jaw_pose", "albedo", "texture",
                "texture_mask")

    def replace(self, **changes: Any) -> FaceParams:
        return dataclasses.replace(self, **changes)

    def map_tensors(self, fn: Any, **changes: Any) -> FaceParams:
        kw: dict[str, Any] = {n: (fn(getattr(self, n)) if getattr(self, n) is not None else None) for n in self._TENSORS}
        kw.update(changes)
        return dataclasses.replace(self, **kw)

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> FaceParams:
        def f(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype if (dtype and torch.is_floating_point(t)) else None)

        return self.map_tensors(f)

    def detach(self) -> FaceParams:
        return self.map_tensors(lambda t: t.detach())

    def clone(self) -> FaceParams:
        return self.map_tensors(lambda t: t.clone())

    def __getitem__(self, idx: int | slice | Sequence[int]) -> FaceParams:
        if isinstance(idx, int):
            idx = [idx]
        index = list(range(self.batch_size))[idx] if isinstance(idx, slice) else list(idx)
        it = torch.as_tensor(index, dtype=torch.long)
        crop = [self.crop[i] for i in index] if self.crop is not None else None
        return self.map_tensors(lambda t: t.index_select(0, it.to(t.device)), crop=crop, meta=dict(self.meta))

    @staticmethod
    def cat(items: Sequence[FaceParams]) -> FaceParams:
        if not items:
            raise InvalidInput("items", "at least one FaceParams", 0)
        first = items[0]
        for it in items[1:]:
            if it.model != first.model or it.expression_names != first.expression_names:
                raise InvalidInput("items", f"FaceParams of one model ({first.model})", it.model)
        kw: dict[str, Any] = {}
        for n in FaceParams._TENSORS:
            vals = [getattr(it, n) for it in items]
            kw[n] = None if any(v is None for v in vals) else torch.cat(vals, 0)
        crops = (None if any(it.crop is None for it in items)
                 else [c for it in items for c in cast(list[CropTransform], it.crop)])
        return dataclasses.replace(first, crop=crops, **kw)

    # ---- named access --------------------------------------------------------------------
    def expression_dict(self, index: int = 0) -> dict[str, float]:
        return {n: float(v) for n, v in zip(self.expression_names, self.expression[index].tolist(), strict=True)}

    # ---- serialisation (documented in docs/params-schema.md) -----------------------------
    SCHEMA = "facerig.FaceParams/1"

    def to_json_dict(self, include_albedo: bool = False) -> dict[str, Any]:
        from facerig.rotations import axis_angle_to_ypr

        faces = []
        assert self.jaw_pose is not None  # __post_init__ fills it
        ypr = axis_angle_to_ypr(self.rotation.detach().cpu().double())
        for i in range(self.batch_size):
            d: dict[str, Any] = {
                "identity": [round(v, 6) for v in self.identity[i].tolist()],
                "expression": {
                    n: round(v, 6)
                    for n, v in zip(self.expression_names, self.expression[i].tolist(), strict=True)
                },
                "jaw_pose": [round(v, 6) for v in self.jaw_pose[i].tolist()],
                "rotation": [round(v, 6) for v in self.rotation[i].tolist()],
                "yaw_pitch_roll_deg": [round(v, 4) for v in ypr[i].tolist()],
                "camera": [round(v, 6) for v in self.camera[i].tolist()],
                "light": [[round(v, 6) for v in row] for row in self.light[i].tolist()],
            }
            if self.crop is not None:
                d["crop"] = self.crop[i].to_dict()
            if include_albedo and self.albedo is not None:
                d["albedo"] = np.round(self.albedo[i].detach().cpu().numpy(), 4).tolist()
            faces.append(d)
        return {
            "schema": self.SCHEMA,
            "model": self.model,
            "camera_kind": self.camera_kind,
            "focal": self.focal,
            "expression_names": list(self.expression_names),
            "meta": self.meta,
            "faces": faces,
        }

    def to_json(self, path: Any = None, include_albedo: bool = False) -> str:
        text = json.dumps(self.to_json_dict(include_albedo), indent=1)
        if path is not None:
            from pathlib import Path

            Path(path).write_text(text)
        return text

    @classmethod
    def from_json_dict(cls, d: dict[str, Any]) -> FaceParams:
        if d.get("schema") != cls.SCHEMA:
            raise InvalidInput("params.schema", cls.SCHEMA, d.get("schema"))
        faces = d.get("faces") or []
        if not faces:
            raise InvalidInput("params.faces", "at least one face", 0)
        names = tuple(d["expression_names"])
        exp = []
        for i, f in enumerate(faces):
            e = f["expression"]
            unknown = set(e) - set(names)
            if unknown:
                raise InvalidInput(f"faces[{i}].expression", f"names among {len(names)} model names",
                                   sorted(unknown))
            exp.append([float(e.get(n, 0.0)) for n in names])
        albedo = None
        if all("albedo" in f for f in faces):
            albedo = torch.tensor([f["albedo"] for f in faces], dtype=torch.float32)
        crops = [CropTransform.from_dict(f["crop"]) for f in faces] if all("crop" in f for f in faces) else None
        return cls(
            model=d["model"],
            identity=torch.tensor([f["identity"] for f in faces], dtype=torch.float32),
            expression=torch.tensor(exp, dtype=torch.float32),
            expression_names=names,
            jaw_pose=torch.tensor([f.get("jaw_pose", [0, 0, 0]) for f in faces], dtype=torch.float32),
            rotation=torch.tensor([f["rotation"] for f in faces], dtype=torch.float32),
            camera=torch.tensor([f["camera"] for f in faces], dtype=torch.float32),
            light=torch.tensor([f["light"] for f in faces], dtype=torch.float32),
            camera_kind=d.get("camera_kind", "weak_perspective"),
            focal=float(d.get("focal", 12.0)),
            albedo=albedo,
            crop=crops,
            meta=d.get("meta", {}),
        )

    @classmethod
    def from_json(cls, path_or_text: Any) -> FaceParams:
        from pathlib import Path

        text = str(path_or_text)
        if not text.lstrip().startswith("{"):
            p = Path(text)
            if not p.is_file():
                raise InvalidInput("params", "a FaceParams JSON file", text)
            text = p.read_text()
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise InvalidInput("params", "valid JSON", str(e)) from None
        if not isinstance(d, dict):
            raise InvalidInput("params", "a JSON object", type(d).__name__)
        try:
            return cls.from_json_dict(d)
        except (KeyError, TypeError) as e:
            raise InvalidInput("params", f"the {cls.SCHEMA} schema", f"missing/invalid field {e}") from None


# --------------------------------------------------------------------------------------------
# meshes and buffers


@dataclass
class Mesh:
    """Posed vertices in world space (B, V, 3) plus the model's triangles (F, 3, long)."""

    vertices: torch.Tensor
    faces: torch.Tensor

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> Mesh:
        return Mesh(self.vertices.to(device=device, dtype=dtype), self.faces.to(device=device))


BUFFER_NAMES = (
    "normal",          # (B,3,H,W) world-space unit normals (x right, y up, z to viewer), bg 0
    "normal_camera",   # (B,3,H,W) camera-frame normals (OpenCV: x right, y down, z away), bg 0
    "albedo",          # (B,3,H,W) linear albedo in [0,1], bg 0
    "shading",         # (B,3,H,W) SH irradiance (unclamped), bg 0
    "render",          # (B,3,H,W) lambertian render = albedo * shading (unclamped), bg 0
    "depth",           # (B,1,H,W) normalised depth in [0,1], 1 = nearest, bg 0
    "mask",            # (B,1,H,W) coverage in {0,1}
    "uv",              # (B,2,H,W) model UV in [0,1], bg 0
    "regions",         # (B,R,H,W) region masks, names in region_names
)


@dataclass
class RenderBuffers:
    """Pixel-aligned physical buffers for a batch, channels-first float tensors.

    ``space`` is "crop" (the crop the camera projects into) or "frame" (the original image).
    ``face_index`` (B,H,W) long: triangle covering the pixel or -1; ``bary`` (B,H,W,3).
    """

    normal: torch.Tensor
    albedo: torch.Tensor
    shading: torch.Tensor
    render: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor
    uv: torch.Tensor
    regions: torch.Tensor
    region_names: tuple[str, ...]
    normal_camera: torch.Tensor
    face_index: torch.Tensor
    bary: torch.Tensor
    space: str = "crop"
    depth_raw: torch.Tensor | None = None

    def to(self, device: Any = None) -> RenderBuffers:
        kw = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for k, v in kw.items():
            if isinstance(v, torch.Tensor):
                kw[k] = v.to(device)
        return RenderBuffers(**kw)

    def region(self, name: str) -> torch.Tensor:
        if name not in self.region_names:
            raise InvalidInput("region", f"one of {self.region_names}", name)
        i = self.region_names.index(name)
        return self.regions[:, i : i + 1]

    def as_dict(self) -> dict[str, torch.Tensor]:
        out = {n: getattr(self, n) for n in BUFFER_NAMES}
        return out
