"""MagicPortrait's conditions: depth, normal and render maps of each target frame in the source's
aligned crop, the source crop itself and a paste-back mask (docs/magicportrait-conditions.md).

* :class:`MagicPortraitFrames` -- what the MagicPortrait pipeline consumes for one clip.
* :class:`FacerigMagicConditioner` -- from facerig's own fit (any face model; builtin by default):
  target params (already structurally aligned by :func:`facerig.rig.sequence.align_sequence`:
  source identity / camera / albedo / light, driver expression + jaw + pose) rendered in the source
  crop with the release's map conventions.

The release's conventions (read from the authors' ``render_and_transfer.py`` and DECA's
``SRenderY`` in ``decalib/utils/renderer.py`` of their snapshot; reproduced here):

* crop: ``crop_process.py`` is the same box geometry as RigFace's (detector box centre, square of
  side ``2 * 0.75 * box width`` onto [80, 432] of 512): :func:`~facerig.engines.rigface.conditions.rigface_crop`.
* depth (``render_depth``): the per-vertex camera depth coordinate of the posed mesh (larger =
  nearer), min-max normalised over ALL the mesh's vertices of the frame (back of the head = 0, the
  nearest vertex = 1), interpolated over the triangles; background 0. Near = bright. One channel,
  repeated to 3 here.
* normal (``normal_images``): the world-frame (x image right, y up, z towards the viewer) vertex
  normals of the posed mesh, interpolated and NOT re-normalised, times coverage; their PNG save
  (``torchvision.utils.save_image``) clamps to [0, 1]: the released map is ``clamp(n, 0, 1)`` --
  raw components, not ``(n + 1) / 2``: a camera-facing surface is (0, 0, 1) (blue), left-facing
  and down-facing components are lost. ``normals="signed"`` gives ``(n + 1) / 2`` on the face
  (background 0) for new training.
* render (``rendered_images``): albedo x SH shading (DECA's basis, unnormalised normal), black
  background, clamped to [0, 1] by the PNG save.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from facerig.errors import AssetMissing, IncompatibleModel, InvalidInput
from facerig.types import CropTransform, FaceParams

log = logging.getLogger(__name__)

__all__ = [
    "NORMAL_MODES",
    "FacerigMagicConditioner",
    "MagicPortraitFrames",
    "MagicSource",
    "ReleasedMagicConditioner",
    "ReleasedMagicSource",
    "release_maps",
    "transfer_codes",
]

NORMAL_MODES = ("clamp", "signed")
#: frames rendered per rasteriser batch (memory at 512: ~30 MB of buffers per frame)
RENDER_CHUNK = 8


@dataclass
class MagicPortraitFrames:
    """One clip's conditions, all float32 tensors at the crop side S.

    * ``reference`` (1, 3, S, S) in [0, 1]: the aligned source crop (RGB).
    * ``depth`` / ``normal`` / ``render`` (F, 3, S, S) in [0, 1] (depth repeated to 3 channels).
    * ``mask`` (F, 1, S, S) in {0, 1}: where the generated head is (for paste-back).
    * ``crop``: the source crop (source frame <-> S x S crop).
    """

    reference: torch.Tensor
    depth: torch.Tensor
    normal: torch.Tensor
    render: torch.Tensor
    mask: torch.Tensor
    crop: CropTransform

    def __post_init__(self) -> None:
        r = self.reference
        if r.ndim != 4 or r.shape[0] != 1 or r.shape[1] != 3 or r.shape[2] != r.shape[3]:
            raise InvalidInput("reference", "a (1, 3, S, S) tensor in [0, 1]", tuple(r.shape))
        s = int(r.shape[-1])
        f = int(self.depth.shape[0]) if self.depth.ndim == 4 else -1
        if f < 1:
            raise InvalidInput("depth", f"a (F, 3, {s}, {s}) tensor with F >= 1", tuple(self.depth.shape))
        for name in ("depth", "normal", "render"):
            t = getattr(self, name)
            if tuple(t.shape) != (f, 3, s, s):
                raise InvalidInput(name, f"a ({f}, 3, {s}, {s}) tensor in [0, 1]", tuple(t.shape))
        if tuple(self.mask.shape) != (f, 1, s, s):
            raise InvalidInput("mask", f"a ({f}, 1, {s}, {s}) tensor", tuple(self.mask.shape))
        if not isinstance(self.crop, CropTransform):
            raise InvalidInput("crop", "a CropTransform (source frame -> crop)", type(self.crop).__name__)

    @property
    def size(self) -> int:
        return int(self.reference.shape[-1])

    @property
    def num_frames(self) -> int:
        return int(self.depth.shape[0])

    def __len__(self) -> int:
        return self.num_frames

    def __getitem__(self, idx: Any) -> MagicPortraitFrames:
        """A slice (or index list) of the frames; same reference and crop."""
        if isinstance(idx, int):
            if not -self.num_frames <= idx < self.num_frames:
                raise InvalidInput("idx", f"a frame index in [0, {self.num_frames})", idx)
            idx = slice(idx % self.num_frames, idx % self.num_frames + 1)
        if isinstance(idx, slice):
            sel = list(range(self.num_frames))[idx]
        else:
            sel = [int(i) for i in idx]
        if not sel or any(not 0 <= i < self.num_frames for i in sel):
            raise InvalidInput("idx", f"a non-empty selection of frames in [0, {self.num_frames})", idx)
        it = torch.as_tensor(sel, dtype=torch.long)
        return dataclasses.replace(self, depth=self.depth.index_select(0, it), normal=self.normal.index_select(0, it),
                                   render=self.render.index_select(0, it), mask=self.mask.index_select(0, it))

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> MagicPortraitFrames:
        def mv(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype) if dtype is not None else t.to(device)

        return dataclasses.replace(self, reference=mv(self.reference), depth=mv(self.depth), normal=mv(self.normal),
                                   render=mv(self.render), mask=mv(self.mask))

    def maps(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(depth, normal, render) as (1, 3, F, S, S): the layout of ``MagicPortraitModel.guidance``."""
        return tuple(t.permute(1, 0, 2, 3)[None] for t in (self.depth, self.normal, self.render))  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------
# the release's map conventions (pure functions of a rendered mesh)


def release_maps(world: torch.Tensor, faces: torch.Tensor, vertex_depth: torch.Tensor, fragments: Any,
                 render: torch.Tensor, normals: str = "clamp") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Depth (B, 3, H, W), normal (B, 3, H, W) and render (B, 3, H, W) maps in [0, 1] as released.

    ``world`` (B, V, 3) posed world-frame vertices; ``vertex_depth`` (B, V) the camera depth
    coordinate of each vertex (larger = nearer); ``fragments`` the rasteriser fragments of that
    mesh at H x W; ``render`` the lambertian render (unclamped) at the same pixels. See the module
    docstring for the conventions."""
    from facerig.render.raster import interpolate_packed, scatter_pixels, vertex_normals

    if normals not in NORMAL_MODES:
        raise InvalidInput("normals", f"one of {NORMAL_MODES}", normals)
    b = world.shape[0]
    h, w = int(fragments.face_index.shape[-2]), int(fragments.face_index.shape[-1])
    zmin = vertex_depth.amin(1, keepdim=True)
    rng = (vertex_depth.amax(1, keepdim=True) - zmin).clamp_min(1e-12)
    zn = (vertex_depth - zmin) / rng                                   # (B, V): far = 0, near = 1
    n_v = vertex_normals(world, faces)                                 # unit per vertex, world frame
    rows = interpolate_packed(torch.cat([zn[..., None], n_v], -1), faces, fragments)  # (4, P)
    img = scatter_pixels(rows, fragments.get_packed(), b, h, w)
    depth = img[:, :1].clamp(0, 1).expand(-1, 3, -1, -1).contiguous()
    n = img[:, 1:4]
    if normals == "clamp":
        normal = n.clamp(0, 1)
    else:
        cover = (fragments.face_index >= 0).to(n.dtype)[:, None]
        normal = ((n + 1.0) * 0.5).clamp(0, 1) * cover
    return depth, normal, render.clamp(0, 1)


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    import cv2

    if r <= 0:
        return mask
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.dilate(mask.astype(np.uint8), k).astype(bool)


def _image_to_01(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0


# ------------------------------------------------------------------------------------------------
# facerig's own conditioning


@dataclass
class MagicSource:
    """A prepared source (:meth:`FacerigMagicConditioner.source_state`)."""

    frame: np.ndarray         # the source photo (H, W, 3) uint8
    crop: CropTransform       # frame -> aligned S x S crop
    aligned: np.ndarray       # (S, S, 3) uint8 aligned crop
    reference: torch.Tensor   # (1, 3, S, S) in [0, 1]
    params: FaceParams        # the source's fit (batch 1)
    face: np.ndarray          # (S, S) bool: the source's rendered face in the crop


class FacerigMagicConditioner:
    """MagicPortrait conditions from facerig's own fit (``model``: the face model of the params).

    ``source_state(image, params)``: the release's crop (:func:`rigface_crop`, as ``crop_process.py``)
    placed by the fitted model's own landmarks (no second detection). ``frames(state, targets)``:
    the maps of each target FaceParams (batch-1 items or one FaceParams of F frames) in the source
    crop. ``mask``: the target's rendered face dilated by ``mask_dilate`` * S pixels (the region
    the generated frame is pasted back into; the caller feathers it). ``normals``: "clamp" (as
    released) or "signed" (module docstring).
    """

    def __init__(self, model: Any, size: int = 512, *, normals: str = "clamp", mask_dilate: float = 1.0 / 32) -> None:
        from facerig.engines.rigface.conditions import FacerigConditioner

        if model is None or not hasattr(model, "landmark_index"):
            raise InvalidInput("model", "a facerig face model (facerig.morphable.load_face_model)", type(model).__name__)
        if isinstance(size, bool) or not isinstance(size, int) or size < 8 or size % 8:
            raise InvalidInput("size", "a crop side that is a multiple of 8 (512 for SD 1.5)", size)
        if normals not in NORMAL_MODES:
            raise InvalidInput("normals", f"one of {NORMAL_MODES}", normals)
        if not 0.0 <= float(mask_dilate) < 0.5:
            raise InvalidInput("mask_dilate", "a fraction of the crop side in [0, 0.5)", mask_dilate)
        self.model = model
        self.size = int(size)
        self.normals = normals
        self.mask_dilate = float(mask_dilate)
        # landmark placement of the release's crop: the RigFace conditioner's (same crop code)
        self._rig = FacerigConditioner(model, self.size, crop="rigface")

    def source_state(self, image: np.ndarray, params: FaceParams) -> MagicSource:
        from facerig.detect.crops import warp_to_crop
        from facerig.engines.rigface.conditions import rigface_crop

        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise InvalidInput("image", "an RGB uint8 image (H, W, 3)", f"{img.dtype} {img.shape}")
        if not isinstance(params, FaceParams) or params.batch_size != 1:
            raise InvalidInput("params", "the FaceParams of one face (batch 1)", getattr(params, "batch_size", params))
        if params.crop is None:
            raise InvalidInput("params.crop", "the crop transform of the fitted face", None)
        h, w = img.shape[:2]
        if tuple(params.crop[0].frame_size) != (h, w):
            raise InvalidInput("image", "the image the params were fitted on", f"{w}x{h}")
        lm = self._rig._points(params)
        crop = rigface_crop(self._rig._crop_points(params, lm), self.size, frame_size=(h, w))
        aligned = warp_to_crop(img, crop, border="constant", interpolation="cubic")
        _, _, _, _, cover = self._render(params, crop)
        return MagicSource(img, crop, aligned, _image_to_01(aligned), params, cover[0, 0].numpy() > 0.5)

    def _render(self, params: FaceParams, crop: CropTransform) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any, torch.Tensor]:
        from facerig.render import camera as cam
        from facerig.train.data import render_aligned

        frags: list[Any] = []
        with torch.no_grad():
            buf = render_aligned(self.model, params, self.size, crop, fragments_out=frags)
            verts = self.model(params.identity, params.expression, params.jaw_pose)
            world = cam.pose_vertices(verts.to(buf.render.dtype), params.rotation.to(verts.device, buf.render.dtype))
            zv = cam.project(world, params.camera.to(world), params.camera_kind, params.focal)[..., 2]
            faces = self.model.faces.to(device=world.device, dtype=torch.long)
            depth, normal, render = release_maps(world, faces, zv, frags[0], buf.render, self.normals)
        return depth.float().cpu(), normal.float().cpu(), render.float().cpu(), buf, buf.mask.float().cpu()

    def _targets(self, state: MagicSource, targets: Any) -> FaceParams:
        if isinstance(targets, FaceParams):
            items = [targets]
        elif isinstance(targets, Sequence) and not isinstance(targets, (str, bytes)) and len(targets) > 0:
            items = list(targets)
        else:
            raise InvalidInput("target_params_list", "a non-empty sequence of FaceParams (or one FaceParams of F frames)",
                               type(targets).__name__)
        for i, t in enumerate(items):
            if not isinstance(t, FaceParams):
                raise InvalidInput(f"target_params_list[{i}]", "FaceParams", type(t).__name__)
            if t.model != state.params.model:
                raise IncompatibleModel(f"target params {i} of {t.model} for a source of {state.params.model}")
        if any(t.crop is None for t in items):
            items = [t if t.crop is not None else t.replace(crop=[state.params.crop[0]] * t.batch_size)  # type: ignore[index]
                     for t in items]
        return FaceParams.cat(items) if len(items) > 1 else items[0]

    def frames(self, state: MagicSource, target_params_list: Any) -> MagicPortraitFrames:
        if not isinstance(state, MagicSource):
            raise InvalidInput("state", "a MagicSource from FacerigMagicConditioner.source_state", type(state).__name__)
        tp = self._targets(state, target_params_list)
        ds, ns, rs, ms = [], [], [], []
        r = max(0, int(round(self.mask_dilate * self.size)))
        for s0 in range(0, tp.batch_size, RENDER_CHUNK):
            chunk = tp[list(range(s0, min(tp.batch_size, s0 + RENDER_CHUNK)))]
            d, n, rd, _, cover = self._render(chunk, state.crop)
            ds.append(d)
            ns.append(n)
            rs.append(rd)
            m = np.stack([_dilate(c[0].numpy() > 0.5, r) for c in cover])
            ms.append(torch.from_numpy(m.astype(np.float32))[:, None])
        return MagicPortraitFrames(reference=state.reference.clone(), depth=torch.cat(ds), normal=torch.cat(ns),
                                   render=torch.cat(rs), mask=torch.cat(ms), crop=state.crop)


# ------------------------------------------------------------------------------------------------
# the release's conditioning (DECA / FLAME / SMIRK)


def transfer_codes(source: dict[str, torch.Tensor], driver: dict[str, torch.Tensor],
                   smirk_exp: torch.Tensor, smirk_jaw: torch.Tensor) -> dict[str, torch.Tensor]:
    """The release's transfer (``render_and_transfer.py`` + ``deca_with_smirk.decode(imgpath=...)``):
    the source's DECA shape, texture, camera and light, the driver's DECA global pose, and SMIRK's
    expression (50) and jaw (3) of the driver. ``source`` is a batch-1 DECA code dict, ``driver`` and
    the SMIRK outputs have F rows; returns F rows."""
    f = int(driver["pose"].shape[0])
    if tuple(smirk_exp.shape) != (f, 50) or tuple(smirk_jaw.shape) != (f, 3):
        raise InvalidInput("smirk outputs", f"expression ({f}, 50) and jaw ({f}, 3)",
                           (tuple(smirk_exp.shape), tuple(smirk_jaw.shape)))
    out = {k: v[:1].expand(f, *v.shape[1:]).clone() for k, v in source.items()}
    out["pose"][:, :3] = driver["pose"][:, :3]
    out["pose"][:, 3:] = smirk_jaw.to(out["pose"])
    out["exp"] = smirk_exp.to(out["exp"]).clone()
    return out


@dataclass
class ReleasedMagicSource:
    """A prepared source (:meth:`ReleasedMagicConditioner.source_state`)."""

    frame: np.ndarray
    crop: CropTransform                  # frame -> aligned S x S crop (crop_process.py)
    aligned: np.ndarray                  # (S, S, 3) uint8
    reference: torch.Tensor              # (1, 3, S, S) in [0, 1]
    points: np.ndarray                   # (478, 2) detected landmarks in crop pixels
    deca_crop: CropTransform             # aligned crop -> DECA 224 crop
    codes: dict[str, torch.Tensor]       # DECA codes of the source (batch 1)


class ReleasedMagicConditioner:
    """The conditioning the released MagicPortrait weights were trained on (module docstring).

    ``flame``: FLAME ``generic_model.pkl`` (path) or a loaded FLAMEFaceModel; ``deca``: DECA's
    ``deca_model.tar`` or a DecaEncoder; ``smirk``: ``SMIRK_em1.pt`` or a SmirkEncoder;
    ``texture``: optional DECA ``FLAME_texture.npz`` (without it the FLAME model's albedo, logged).
    ``source_state(image)``: MediaPipe landmarks -> the release's crop (crop_process.py geometry),
    DECA codes of its DECA crop (scale 1.3). ``frames(state, driving_images)``: per driving frame
    DECA's global pose and SMIRK's expression + jaw (:func:`transfer_codes`), rendered with the
    source's shape / texture / camera / light in the source crop, no re-centring (the release calls
    ``decode(..., align_ffhq=False)``). Missing files raise AssetMissing.
    """

    def __init__(self, flame: Any = None, deca: Any = None, smirk: Any = None, *, texture: Any = None,
                 size: int = 512, device: Any = "cpu", normals: str = "clamp", mask_dilate: float = 1.0 / 32,
                 detector: Any = None) -> None:
        from pathlib import Path

        from facerig.engines.rigface.conditions import load_flame_texture
        from facerig.eval.deca import DecaEncoder, load_deca_encoder
        from facerig.morphable.flame import FLAMEFaceModel

        from .smirk import SmirkEncoder, load_smirk

        if isinstance(size, bool) or not isinstance(size, int) or size < 8 or size % 8:
            raise InvalidInput("size", "a crop side that is a multiple of 8 (512 for SD 1.5)", size)
        if normals not in NORMAL_MODES:
            raise InvalidInput("normals", f"one of {NORMAL_MODES}", normals)
        self.size, self.normals, self.mask_dilate = int(size), normals, float(mask_dilate)
        self.device = torch.device(device)
        if flame is None:
            env = os.environ.get("FACERIG_FLAME")
            if not env:
                raise AssetMissing("FLAME model (generic_model.pkl)", "the flame argument and FACERIG_FLAME (unset)",
                                   "register at flame.is.tue.mpg.de, download FLAME 2020 and pass its path")
            flame = env
        self.flame = flame if isinstance(flame, FLAMEFaceModel) else FLAMEFaceModel.load(Path(os.fspath(flame)))
        if deca is None:
            raise AssetMissing("DECA weights (deca_model.tar)", "the deca argument (None)",
                               "download DECA's released model yourself and pass its path")
        self.deca = deca if isinstance(deca, DecaEncoder) else load_deca_encoder(Path(os.fspath(deca)))
        if smirk is None:
            raise AssetMissing("SMIRK weights (SMIRK_em1.pt)", "the smirk argument (None)",
                               "download SMIRK's pretrained model yourself and pass its path")
        self.smirk = smirk if isinstance(smirk, SmirkEncoder) else load_smirk(smirk)
        self.texture = None if texture is None else load_flame_texture(texture)
        if self.texture is None:
            log.info("ReleasedMagicConditioner: no FLAME_texture.npz given; the render uses the FLAME model's "
                     "albedo (the release rendered DECA's FLAME texture space)")
        self.flame.to(self.device)
        self.deca.to(self.device).eval()
        self.smirk.to(self.device).eval()
        self.detector = detector

    def _detect(self, image: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
        from facerig.errors import NoFaceFound

        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise InvalidInput(name, "an RGB uint8 image (H, W, 3)", f"{img.dtype} {img.shape}")
        if self.detector is None:
            from facerig.detect import FaceDetector

            self.detector = FaceDetector()
        try:
            return img, np.asarray(self.detector.detect_one(img).points, np.float64)[:, :2]
        except NoFaceFound:
            raise NoFaceFound(name) from None

    def _deca(self, crops: list[np.ndarray]) -> dict[str, torch.Tensor]:
        from facerig.eval.deca import split_deca_code

        x = torch.from_numpy(np.stack(crops).astype(np.float32) / 255.0).permute(0, 3, 1, 2).to(self.device)
        with torch.no_grad():
            return {k: v.float() for k, v in split_deca_code(self.deca(x)).items()}

    def source_state(self, image: Any) -> ReleasedMagicSource:
        from facerig.detect.crops import deca_crop, warp_to_crop
        from facerig.engines.rigface.conditions import DECA_SCALE, rigface_crop

        img, pts = self._detect(image, "image")
        h, w = img.shape[:2]
        crop = rigface_crop(pts, self.size, frame_size=(h, w))
        aligned = warp_to_crop(img, crop, border="constant", interpolation="cubic")
        cpts = crop.apply(pts)
        dct = deca_crop(cpts, size=224, scale=DECA_SCALE, frame_size=(self.size, self.size))
        codes = self._deca([warp_to_crop(aligned, dct, interpolation="linear")])
        return ReleasedMagicSource(img, crop, aligned, _image_to_01(aligned), cpts, dct, codes)

    def driver_codes(self, driving_images: Sequence[Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """(DECA codes (F rows), SMIRK expression (F, 50), SMIRK jaw (F, 3)) of the driving frames."""
        from facerig.detect.crops import deca_crop, warp_to_crop
        from facerig.engines.rigface.conditions import DECA_SCALE

        from .smirk import smirk_crop

        if isinstance(driving_images, np.ndarray) and driving_images.ndim == 3:
            driving_images = [driving_images]
        if not isinstance(driving_images, (Sequence, np.ndarray)) or len(driving_images) == 0:
            raise InvalidInput("driving_images", "a non-empty sequence of RGB uint8 frames", type(driving_images).__name__)
        d_crops, s_crops = [], []
        for i, im in enumerate(driving_images):
            img, pts = self._detect(im, f"driving_images[{i}]")
            fs = img.shape[:2]
            d_crops.append(warp_to_crop(img, deca_crop(pts, size=224, scale=DECA_SCALE, frame_size=fs),
                                        interpolation="linear"))
            s_crops.append(warp_to_crop(img, smirk_crop(pts, fs), border="constant", interpolation="linear"))
        codes = self._deca(d_crops)
        x = torch.from_numpy(np.stack(s_crops).astype(np.float32) / 255.0).permute(0, 3, 1, 2).to(self.device)
        with torch.no_grad():
            out = self.smirk.expression(x)
        return codes, out["expression_params"].float(), out["jaw_params"].float()

    def render_codes(self, state: ReleasedMagicSource, codes: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """(depth, normal, render, coverage) of F code rows in the source crop."""
        from facerig.engines.rigface.conditions import flame_albedo_texture
        from facerig.render import camera as cam
        from facerig.render.buffers import render_buffers

        f = int(codes["shape"].shape[0])
        with torch.no_grad():
            pose = codes["pose"]
            verts = self.flame.pose(codes["shape"], codes["exp"], pose[:, 3:], global_pose=pose[:, :3])[0]
            tex = None if self.texture is None else flame_albedo_texture(self.texture, codes["tex"])
            params = FaceParams(
                model="flame", identity=codes["shape"], expression=codes["exp"],
                expression_names=tuple(f"exp{i}" for i in range(codes["exp"].shape[1])),
                rotation=torch.zeros(f, 3, device=verts.device), camera=codes["cam"], light=codes["light"],
                jaw_pose=pose[:, 3:], texture=tex, crop=[state.deca_crop] * f)
            frags: list[Any] = []
            buf = render_buffers(self.flame, params, space="frame", vertices=verts, fragments_out=frags)
            zv = cam.project(verts, params.camera, params.camera_kind, params.focal)[..., 2]
            faces = self.flame.faces.to(device=verts.device, dtype=torch.long)
            d, n, r = release_maps(verts, faces, zv, frags[0], buf.render, self.normals)
        return d.float().cpu(), n.float().cpu(), r.float().cpu(), buf.mask.float().cpu()

    def frames(self, state: ReleasedMagicSource, driving_images: Sequence[Any]) -> MagicPortraitFrames:
        if not isinstance(state, ReleasedMagicSource):
            raise InvalidInput("state", "a ReleasedMagicSource from ReleasedMagicConditioner.source_state",
                               type(state).__name__)
        drv, exp, jaw = self.driver_codes(driving_images)
        codes = transfer_codes(state.codes, drv, exp, jaw)
        ds, ns, rs, ms = [], [], [], []
        r = max(0, int(round(self.mask_dilate * self.size)))
        n_f = int(codes["shape"].shape[0])
        for s0 in range(0, n_f, RENDER_CHUNK):
            chunk = {k: v[s0 : s0 + RENDER_CHUNK] for k, v in codes.items()}
            d, n, rd, cover = self.render_codes(state, chunk)
            ds.append(d)
            ns.append(n)
            rs.append(rd)
            m = np.stack([_dilate(c[0].numpy() > 0.5, r) for c in cover])
            ms.append(torch.from_numpy(m.astype(np.float32))[:, None])
        return MagicPortraitFrames(reference=state.reference.clone(), depth=torch.cat(ds), normal=torch.cat(ns),
                                   render=torch.cat(rs), mask=torch.cat(ms), crop=state.crop)
