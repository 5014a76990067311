"""RigFace's conditioning: the aligned source, the grey-painted background, the target render and
the expression vector (docs/rigface-conditions.md).

* :class:`RigFaceConditions` -- what the RigFace pipeline consumes, all at the aligned crop's side S
  (512 for SD 1.5).
* :class:`FacerigConditioner` -- from facerig's own fit (any face model; builtin by default):
  the render is facerig's lambertian render of the target params, the expression vector is the
  target's expression coefficients (for FLAME also the jaw axis-angle). For weights facerig trains.
* :class:`ReleasedConditioner` -- what the released RigFace weights were trained on: DECA codes of
  the DECA crop (scale 1.3), the user's FLAME rendered with source shape/texture/camera and target
  pose/expression/light, re-centred with ``align_ffhq`` on the source's eye-mouth centre, and the
  64-d Deep3DFaceRecon expression vector of the source or of a reference photo.

The aligned crop (:func:`rigface_crop`) is the release's ``utils/preprocess.py`` crop: an
axis-aligned square of side ``2 * 0.75 * box width`` around the face detector's box centre, mapped
onto [80, 432] of the 512 crop (pixels outside the frame black, as OpenCV's warpAffine default).
facerig has no insightface detector; the box is taken from the MediaPipe landmarks (x: the face
mesh's extent, cheek to cheek; y: forehead point 10 to chin point 152), widened by
``MP_BOX_WIDTH`` = 1.05 and raised by ``MP_BOX_RAISE`` = 0.077 of its width. Those two factors were
measured on the release's own aligned crops (``utils/test_images/id1|id2/{sor,tar}.png`` of the
authors' snapshot: re-cropping a crop must give the identity; factor 1.050 +- 0.008, raise
0.077 +- 0.024 over the 4 crops of 2 people): without them the face came out 5 % larger and about
20 px lower than in the release's crops. Only 2 identities: a detector box can differ more on
other faces (3/4 views, long hair).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facerig.errors import AssetMissing, IncompatibleModel, InvalidInput
from facerig.types import CropTransform, FaceParams

from .person import paint_background, person_mask

log = logging.getLogger(__name__)

__all__ = [
    "EXPRESSION_KINDS",
    "FacerigConditioner",
    "ReleasedConditioner",
    "ReleasedSource",
    "RigFaceConditions",
    "RigFaceSource",
    "estimate_target_region",
    "image_to_unit",
    "render_to_unit",
    "rigface_crop",
]

EXPRESSION_KINDS = ("deep3d", "facerig")
#: DECA crop scale used by RigFace (utils/data_utils.py)
DECA_SCALE = 1.3
#: edits whose head rotation differs by more than this (radians) count as pose edits
POSE_EPS = 1e-4
_TAKES = ("expression", "pose", "light")


# ------------------------------------------------------------------------------------------------
# the conditions


@dataclass
class RigFaceConditions:
    """One edit's conditions (all tensors float32 on CPU unless moved with :meth:`to`).

    * ``source`` (1, 3, S, S) in [-1, 1]: the aligned crop of the source photo.
    * ``background`` (1, 3, S, S) in [-1, 1]: ``source`` with the person region painted grey 127
      (= 127/127.5 - 1); for pose edits the union of the source's and the target's regions.
    * ``render`` (1, 3, S, S) in [-1, 1]: the target's lambertian render clamped to [0, 1] (as the
      release's PNGs), mapped to [-1, 1]; background (no face) = -1.
    * ``expression`` (1, D): "deep3d": the 64-d BFM expression; "facerig": the target's expression
      coefficients (D = the face model's expression size, + 3 jaw axis-angle values for FLAME).
    * ``expression_kind``: "deep3d" or "facerig".
    * ``crop``: the CropTransform source frame -> aligned crop (for paste_back).
    * ``mask`` (1, 1, S, S) float in {0, 1}: the region to paste back (the painted person region,
      which the model regenerates); the caller feathers it.
    """

    source: torch.Tensor
    background: torch.Tensor
    render: torch.Tensor
    expression: torch.Tensor
    expression_kind: str
    crop: CropTransform
    mask: torch.Tensor

    def __post_init__(self) -> None:
        if self.expression_kind not in EXPRESSION_KINDS:
            raise InvalidInput("expression_kind", f"one of {EXPRESSION_KINDS}", self.expression_kind)
        s = self.source.shape[-1]
        for name in ("source", "background", "render"):
            t = getattr(self, name)
            if t.ndim != 4 or t.shape[0] != 1 or t.shape[1] != 3 or tuple(t.shape[2:]) != (s, s):
                raise InvalidInput(name, f"a (1, 3, {s}, {s}) tensor in [-1, 1]", tuple(t.shape))
        if self.mask.ndim != 4 or tuple(self.mask.shape) != (1, 1, s, s):
            raise InvalidInput("mask", f"a (1, 1, {s}, {s}) tensor", tuple(self.mask.shape))
        if self.expression.ndim != 2 or self.expression.shape[0] != 1:
            raise InvalidInput("expression", "a (1, D) tensor", tuple(self.expression.shape))

    @property
    def size(self) -> int:
        return int(self.source.shape[-1])

    @property
    def expression_dim(self) -> int:
        return int(self.expression.shape[1])

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> RigFaceConditions:
        """The same conditions with every tensor on ``device`` (and floating ``dtype``)."""

        def mv(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype) if dtype is not None else t.to(device)

        return dataclasses.replace(self, source=mv(self.source), background=mv(self.background),
                                   render=mv(self.render), expression=mv(self.expression), mask=mv(self.mask))


# ------------------------------------------------------------------------------------------------
# helpers


def image_to_unit(image: np.ndarray) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> (1, 3, H, W) float32 in [-1, 1] (x / 127.5 - 1)."""
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise InvalidInput("image", "an RGB uint8 image (H, W, 3)", f"{a.dtype} {a.shape}")
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float() / 127.5 - 1.0


def render_to_unit(render: torch.Tensor) -> torch.Tensor:
    """A lambertian render (B, 3, H, W) (unclamped, as facerig's buffers) -> clamped to [0, 1] as the
    release's saved PNG, then mapped to [-1, 1]."""
    if render.ndim != 4 or render.shape[1] != 3:
        raise InvalidInput("render", "a (B, 3, H, W) render", tuple(render.shape))
    return render.float().clamp(0.0, 1.0) * 2.0 - 1.0


#: MediaPipe mesh box -> the release's detector box (measured on its 4 test crops, see the docstring)
MP_BOX_WIDTH = 1.05
MP_BOX_RAISE = 0.077


def _box_proxy(pts: np.ndarray) -> tuple[np.ndarray, float]:
    """(centre (2,), width) of a face-detector-like box from landmark points."""
    if pts.shape[0] in (468, 478):
        x0, x1 = pts[:468, 0].min(), pts[:468, 0].max()
        y0, y1 = pts[10, 1], pts[152, 1]
        # calibrated on the release's own aligned crops (module docstring): the detector's box is
        # MP_BOX_WIDTH times the mesh's cheek-to-cheek extent, its centre MP_BOX_RAISE widths higher
        w = (x1 - x0) * MP_BOX_WIDTH
        return np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0 - MP_BOX_RAISE * (x1 - x0)]), float(w)
    elif pts.shape[0] == 68:
        x0, x1 = pts[:17, 0].min(), pts[:17, 0].max()
        brow, chin = pts[17:27, 1].min(), pts[8, 1]
        y0, y1 = brow - 0.25 * (chin - brow), chin
    else:
        raise InvalidInput("landmarks", "(478|468|68, 2) points", pts.shape)
    return np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0]), float(x1 - x0)


def rigface_crop(landmarks: Any, size: int = 512, *, frame_size: tuple[int, int] | None = None) -> CropTransform:
    """RigFace's aligned crop (module docstring): the square of side ``1.5 * box width`` centred on the
    face box goes onto ``[80/512, 432/512] * size``; no rotation."""
    from facerig.detect.crops import _unpack

    if int(size) < 8:
        raise InvalidInput("size", "a crop side of at least 8 pixels", size)
    pts, fs = _unpack(landmarks, frame_size)
    centre, width = _box_proxy(pts)
    if width <= 1e-6:
        raise InvalidInput("landmarks", "a face of non-zero width", "degenerate landmarks")
    k = (352.0 / 512.0) * size / (1.5 * width)
    m = np.array([[k, 0.0, size / 2.0 - k * centre[0]], [0.0, k, size / 2.0 - k * centre[1]]])
    return CropTransform(m, int(size), fs, "rigface")


def _as_mask_tensor(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(mask.astype(np.float32)))[None, None]


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    import cv2

    if r <= 0:
        return mask
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.dilate(mask.astype(np.uint8), k).astype(bool)


def estimate_target_region(source_region: np.ndarray, source_points: np.ndarray,
                           target_points: np.ndarray, target_face: np.ndarray | None = None) -> np.ndarray:
    """The target's person region for a pose edit, bool (S, S): the head part of the source's region
    (the rows down to ``0.15`` face heights below the chin: face, hair, hat) moved by the
    least-squares similarity that takes the source face's projected landmarks to the target's (the
    in-plane part of the head motion, which head and hair follow), the body (below) kept where it
    is, united with the target's rendered face ``target_face``."""
    import cv2

    from facerig.detect.crops import _cv_matrix, umeyama_similarity

    src = np.asarray(source_region, bool)
    s = src.shape
    sp, tp = np.asarray(source_points, np.float64)[:, :2], np.asarray(target_points, np.float64)[:, :2]
    if sp.shape != tp.shape or len(sp) < 3:
        raise InvalidInput("target_points", f"{len(sp)} points like source_points", tp.shape)
    face_h = float(sp[:, 1].max() - sp[:, 1].min())
    cut = int(np.clip(np.ceil(sp[:, 1].max() + 0.15 * face_h), 0, s[0]))
    head = src.copy()
    head[cut:] = False
    m = _cv_matrix(umeyama_similarity(sp, tp))
    moved = cv2.warpAffine(head.astype(np.uint8), m, (s[1], s[0]), flags=cv2.INTER_NEAREST,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
    moved[cut:] |= src[cut:]
    if target_face is not None:
        moved |= np.asarray(target_face, bool)
    return moved


def _is_pose_edit(src: FaceParams, tgt: FaceParams) -> bool:
    d_rot = float((tgt.rotation.double() - src.rotation.double()).abs().max())
    d_cam = float((tgt.camera.double() - src.camera.double()).abs().max())
    return d_rot > POSE_EPS or d_cam > POSE_EPS


# ------------------------------------------------------------------------------------------------
# facerig's own conditioning


@dataclass
class RigFaceSource:
    """A prepared source (:meth:`FacerigConditioner.source_state`)."""

    frame: np.ndarray        # the source photo (H, W, 3) uint8
    crop: CropTransform      # frame -> aligned S x S crop
    aligned: np.ndarray      # (S, S, 3) uint8 aligned crop
    source: torch.Tensor     # (1, 3, S, S) in [-1, 1]
    person: np.ndarray       # (S, S) bool person region of the source
    points: np.ndarray       # (L, 2) the fitted model's landmarks in crop pixels
    params: FaceParams
    model: Any


class FacerigConditioner:
    """RigFace conditions from facerig's own fit (``model``: the face model the params belong to).

    ``source_state(image, params)``: the aligned crop (:func:`rigface_crop`) placed by the fitted
    model's own landmarks projected into the frame (no second detection); the person region of the
    crop (:func:`~.person.person_mask` with those landmarks, united with the rendered face).
    ``conditions(state, target_params)``: the target's render in the crop, the background (source
    region; for pose edits -- rotation or camera changed -- also the target's region,
    :func:`estimate_target_region`), the expression vector and the paste-back mask.
    """

    ALBEDOS = ("fit", "model")

    CROPS = ("rigface", "ffhq", "square")

    def __init__(self, model: Any, size: int = 512, *, albedo: str = "fit", crop: str = "rigface") -> None:
        if model is None or not hasattr(model, "landmark_index"):
            raise InvalidInput("model", "a facerig face model (facerig.morphable.load_face_model)", type(model).__name__)
        if int(size) < 8 or int(size) % 8:
            raise InvalidInput("size", "a crop side that is a multiple of 8 (512 for SD 1.5)", size)
        if albedo not in self.ALBEDOS:
            raise InvalidInput("albedo", f"one of {self.ALBEDOS}", albedo)
        if crop not in self.CROPS:
            raise InvalidInput("crop", f"one of {self.CROPS}", crop)
        self.model = model
        #: "rigface": the release's crop (:func:`rigface_crop`); "ffhq" / "square": the crops of
        #: ``facerig prepare`` (:func:`facerig.detect.crops.ffhq_crop` / ``square_crop``, reflect border),
        #: so weights trained on prepared shards see faces framed as in training
        self.crop = crop
        self.size = int(size)
        #: "fit": the render uses the params' own albedo/texture (for builtin the photo's texture);
        #: "model": the face model's default albedo (smooth, as the release's model-texture renders;
        #: no appearance of the target frame reaches the render when training on frame pairs)
        self.albedo = albedo

    def expression_dim(self, params: FaceParams | None = None) -> int:
        """D of the expression vector: the model's expression size (+ 3 jaw values for FLAME)."""
        n = int(params.expression.shape[1]) if params is not None else int(getattr(self.model, "n_expression", 0))
        return n + (3 if getattr(self.model, "has_jaw_joint", False) else 0)

    def _points(self, params: FaceParams) -> np.ndarray:
        from facerig.fit.api import project_landmarks_to_frame

        return np.asarray(project_landmarks_to_frame(self.model, params)[0], np.float64)

    def _crop_points(self, params: FaceParams, lm: np.ndarray) -> np.ndarray:
        """Points for :func:`rigface_crop`: all 478 MediaPipe points when the model explains them
        (builtin, ict), else DECA's 68 landmarks of models that have them (FLAME: its MediaPipe
        embedding covers only part of the mesh's points, not the forehead / contour the box needs)."""
        idx = self.model.landmark_index.cpu().numpy()
        if len(idx) >= 468 and {10, 152} <= set(idx.tolist()):
            pts = np.zeros((478, 2))
            pts[idx] = lm
            if len(idx) < 478:  # 468-point models: no irises; the box only reads 0..467
                pts[468:] = pts[:468].mean(0)
            return pts
        if hasattr(self.model, "landmarks68"):
            from facerig.render import camera as cam

            with torch.no_grad():
                v = self.model(params.identity, params.expression, params.jaw_pose)
                world = cam.pose_vertices(v, params.rotation)
                ndc = cam.project(self.model.landmarks68(world), params.camera, params.camera_kind,
                                  params.focal)[0, :, :2]
            assert params.crop is not None  # checked by the callers
            c = params.crop[0]
            return np.asarray(c.invert(cam.ndc_to_pixels(ndc.double().cpu(), c.size).numpy()))
        raise IncompatibleModel(
            f"face model {getattr(self.model, 'name', type(self.model).__name__)!r}: the RigFace crop needs its "
            "MediaPipe 478 landmarks or DECA's 68 landmarks"
        )

    def _render(self, params: FaceParams, crop: CropTransform) -> Any:
        from facerig.train.data import render_aligned

        if self.albedo == "model":
            params = params.replace(albedo=None, texture=None, texture_mask=None)
        with torch.no_grad():
            return render_aligned(self.model, params, self.size, crop)

    def source_state(self, image: np.ndarray, params: FaceParams) -> RigFaceSource:
        from facerig.detect.crops import warp_to_crop

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
        lm = self._points(params)
        cpts = self._crop_points(params, lm)
        if self.crop == "rigface":
            crop = rigface_crop(cpts, self.size, frame_size=(h, w))
        else:
            from facerig.detect.crops import ffhq_crop, square_crop

            crop = (ffhq_crop if self.crop == "ffhq" else square_crop)(cpts, self.size, frame_size=(h, w))
        aligned = warp_to_crop(img, crop, border="constant" if self.crop == "rigface" else "reflect",
                               interpolation="cubic")
        pts = crop.apply(lm)
        buf = self._render(params, crop)
        face = buf.mask[0, 0].numpy() > 0.5
        region = person_mask(aligned, face=pts) | _dilate(face, max(1, self.size // 128))
        return RigFaceSource(img, crop, aligned, image_to_unit(aligned), region, pts, params, self.model)

    def conditions(self, state: RigFaceSource, target_params: FaceParams) -> RigFaceConditions:
        if not isinstance(state, RigFaceSource):
            raise InvalidInput("state", "a RigFaceSource from FacerigConditioner.source_state", type(state).__name__)
        if not isinstance(target_params, FaceParams) or target_params.batch_size != 1:
            raise InvalidInput("target_params", "the FaceParams of one face (batch 1)",
                               getattr(target_params, "batch_size", target_params))
        if target_params.model != state.params.model:
            raise IncompatibleModel(f"target params of {target_params.model} for a source of {state.params.model}")
        if target_params.crop is None:
            target_params = target_params.replace(crop=state.params.crop)
        buf = self._render(target_params, state.crop)
        face = buf.mask[0, 0].numpy() > 0.5
        region = state.person | _dilate(face, max(1, self.size // 128))
        if _is_pose_edit(state.params, target_params):
            tp = state.crop.apply(self._points(target_params))
            region |= estimate_target_region(state.person, state.points, tp, face)
        bg = paint_background(state.aligned, region)
        exp = target_params.expression.detach().float().cpu()
        if getattr(self.model, "has_jaw_joint", False):
            assert target_params.jaw_pose is not None  # FaceParams fills zeros
            exp = torch.cat([exp, target_params.jaw_pose.detach().float().cpu()], 1)
        return RigFaceConditions(
            source=state.source.clone(), background=image_to_unit(bg), render=render_to_unit(buf.render.cpu()),
            expression=exp, expression_kind="facerig", crop=state.crop, mask=_as_mask_tensor(region),
        )


# ------------------------------------------------------------------------------------------------
# the release's conditioning (DECA / FLAME / Deep3D)


@dataclass
class ReleasedSource:
    """A prepared source (:meth:`ReleasedConditioner.source_state`)."""

    frame: np.ndarray
    crop: CropTransform            # frame -> aligned S x S crop
    aligned: np.ndarray            # (S, S, 3) uint8
    source: torch.Tensor           # (1, 3, S, S) in [-1, 1]
    person: np.ndarray             # (S, S) bool
    points: np.ndarray             # (478|68, 2) detected landmarks in crop pixels
    deca_crop: CropTransform       # aligned crop -> DECA 224 crop (scale 1.3)
    codes: dict[str, torch.Tensor]  # DECA codes: shape, tex, exp, pose, cam, light
    ffhq_centre: torch.Tensor      # (1, 3) eye-mouth centre of the source FLAME mesh (align_ffhq)
    expression: torch.Tensor       # (1, 64) Deep3D expression of the source
    render_points: np.ndarray | None = None  # (68, 2) the source FLAME's landmarks in crop pixels


def _path_or_none(p: Any) -> Path | None:
    return None if p is None else Path(os.fspath(p))


class ReleasedConditioner:
    """The conditioning the released RigFace weights were trained on.

    ``flame``: the user's FLAME ``generic_model.pkl`` (path; the flame-aux helper files must be
    found, see :class:`~facerig.morphable.flame.FLAMEFaceModel`) or a loaded FLAMEFaceModel.
    ``deca``: DECA's ``deca_model.tar`` (path) or a loaded :class:`~facerig.eval.deca.DecaEncoder`.
    ``deep3d``: Deep3DFaceRecon's ``epoch_20.pth`` or RigFace's ``d3dfr_res50_nofc.pth`` (path) or a
    loaded :class:`~.deep3d.Deep3DRecon`. ``texture``: optionally DECA's ``FLAME_texture.npz``
    (``mean`` / ``tex_dir``, the albedo space the release rendered with); without it the FLAME model's
    albedo (a uniform skin colour by default) is used and this is logged. ``detector``: a facerig
    FaceDetector (default: one is made on first use). Every missing file raises
    :class:`~facerig.errors.AssetMissing` naming it and where it was looked for.
    """

    def __init__(self, flame: Any = None, deca: Any = None, deep3d: Any = None, size: int = 512,
                 device: Any = "cpu", *, texture: Any = None, detector: Any = None) -> None:
        from facerig.eval.deca import DecaEncoder, load_deca_encoder
        from facerig.morphable.flame import FLAMEFaceModel

        from .deep3d import Deep3DRecon, load_deep3d

        if int(size) < 8 or int(size) % 8:
            raise InvalidInput("size", "a crop side that is a multiple of 8 (512 for SD 1.5)", size)
        self.size = int(size)
        self.device = torch.device(device)
        if flame is None:
            env = os.environ.get("FACERIG_FLAME")
            if not env:
                raise AssetMissing("FLAME model (generic_model.pkl)", "the flame argument and FACERIG_FLAME (unset)",
                                   "register at flame.is.tue.mpg.de, download FLAME 2020 and pass its path")
            flame = env
        self.flame = flame if isinstance(flame, FLAMEFaceModel) else FLAMEFaceModel.load(_path_or_none(flame))
        if getattr(self.flame, "lmk68_faces", None) is None:
            raise AssetMissing("FLAME helper file landmark_embedding.npy", "the aux files the FLAME model was loaded with",
                               "RigFace's align_ffhq needs DECA's 68 landmarks: provide the flame-aux folder")
        if deca is None:
            raise AssetMissing("DECA weights (deca_model.tar)", "the deca argument (None)",
                               "download DECA's released model yourself and pass its path")
        self.deca = deca if isinstance(deca, DecaEncoder) else load_deca_encoder(Path(os.fspath(deca)))
        if deep3d is None:
            raise AssetMissing("Deep3DFaceRecon weights (epoch_20.pth or d3dfr_res50_nofc.pth)", "the deep3d argument (None)",
                               "download Deep3DFaceRecon_pytorch's checkpoint yourself and pass its path")
        self.deep3d = deep3d if isinstance(deep3d, Deep3DRecon) else load_deep3d(Path(os.fspath(deep3d)))
        self.texture = None if texture is None else load_flame_texture(texture)
        if self.texture is None:
            log.info("ReleasedConditioner: no FLAME_texture.npz given; the render uses the FLAME model's albedo "
                     "(the release rendered DECA's FLAME texture space)")
        self.flame.to(self.device)
        self.deca.to(self.device)
        self.deep3d.to(self.device)
        self.detector = detector

    # ---- per image -----------------------------------------------------------------------------
    def _detect(self, image: np.ndarray, name: str) -> np.ndarray:
        from facerig.errors import NoFaceFound

        if self.detector is None:
            from facerig.detect import FaceDetector

            self.detector = FaceDetector()
        try:
            return np.asarray(self.detector.detect_one(image).points, np.float64)[:, :2]
        except NoFaceFound:
            raise NoFaceFound(name) from None

    def _prepare(self, image: Any, name: str) -> ReleasedSource:
        from facerig.detect.crops import deca_crop, warp_to_crop

        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise InvalidInput(name, "an RGB uint8 image (H, W, 3)", f"{img.dtype} {img.shape}")
        h, w = img.shape[:2]
        pts = self._detect(img, name)
        crop = rigface_crop(pts, self.size, frame_size=(h, w))
        aligned = warp_to_crop(img, crop, border="constant", interpolation="cubic")
        cpts = crop.apply(pts)
        dct = deca_crop(cpts, size=224, scale=DECA_SCALE, frame_size=(self.size, self.size))
        d_img = warp_to_crop(aligned, dct, interpolation="linear").astype(np.float32) / 255.0
        x = torch.from_numpy(d_img).permute(2, 0, 1)[None].to(self.device)
        from facerig.eval.deca import split_deca_code

        from .deep3d import deep3d_input

        with torch.no_grad():
            codes = {k: v.float() for k, v in split_deca_code(self.deca(x)).items()}
            centre = self._centre(codes)
            d3 = deep3d_input(aligned, cpts, self.deep3d.layout).to(self.device)
            exp64 = self.deep3d.expression(d3).float().cpu()
        person = person_mask(aligned, face=cpts)
        return ReleasedSource(img, crop, aligned, image_to_unit(aligned), person, cpts, dct, codes, centre, exp64)

    def source_state(self, image: Any) -> ReleasedSource:
        """Detect the face, cut the aligned crop, DECA-encode its DECA crop, Deep3D-encode it; the
        person region includes the source's own FLAME render (as the fitted face in
        :class:`FacerigConditioner`), so every edit's region contains the source's."""
        st = self._prepare(image, "image")
        _, face, lm = self.render(st, st.codes)
        return dataclasses.replace(st, person=st.person | _dilate(face, max(1, self.size // 128)), render_points=lm)

    # ---- FLAME ---------------------------------------------------------------------------------
    def _vertices(self, codes: dict[str, torch.Tensor]) -> torch.Tensor:
        pose = codes["pose"]
        return self.flame.pose(codes["shape"], codes["exp"], pose[:, 3:], global_pose=pose[:, :3])[0]

    def _centre(self, codes: dict[str, torch.Tensor], verts: torch.Tensor | None = None) -> torch.Tensor:
        v = self._vertices(codes) if verts is None else verts
        lm = self.flame.landmarks68(v)
        eye_avg = (lm[:, 36:42].mean(1) + lm[:, 42:48].mean(1)) * 0.5
        mouth_avg = (lm[:, 48] + lm[:, 54]) * 0.5
        return eye_avg + (mouth_avg - eye_avg) * 0.1

    def _params(self, codes: dict[str, torch.Tensor], crop: CropTransform) -> FaceParams:
        b = codes["shape"].shape[0]
        tex = None
        if self.texture is not None:
            tex = flame_albedo_texture(self.texture, codes["tex"])
        return FaceParams(
            model="flame", identity=codes["shape"], expression=codes["exp"],
            expression_names=tuple(f"exp{i}" for i in range(codes["exp"].shape[1])),
            rotation=torch.zeros(b, 3, device=codes["shape"].device), camera=codes["cam"], light=codes["light"],
            jaw_pose=codes["pose"][:, 3:], texture=tex, crop=[crop] * b,
        )

    def render(self, state: ReleasedSource, codes: dict[str, torch.Tensor]) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """(render (1, 3, S, S) unclamped, face mask (S, S) bool, 68 landmarks (68, 2) in crop pixels) of
        ``codes`` in the aligned crop, re-centred on the source's eye-mouth centre (align_ffhq)."""
        from facerig.render import camera as cam
        from facerig.render.buffers import render_buffers

        with torch.no_grad():
            verts = self._vertices(codes)
            verts = verts + (state.ffhq_centre - self._centre(codes, verts))[:, None, :]
            params = self._params(codes, state.deca_crop)
            buf = render_buffers(self.flame, params, space="frame", vertices=verts)
            lm = self.flame.landmarks68(verts)
            ndc = cam.project(lm, params.camera, params.camera_kind, params.focal)[0, :, :2]
            px = cam.ndc_to_pixels(ndc.double().cpu(), state.deca_crop.size).numpy()
        return buf.render.cpu(), buf.mask[0, 0].cpu().numpy() > 0.5, state.deca_crop.invert(px)

    def conditions(self, state: ReleasedSource, *, pose_delta: Any = None, light: Any = None,
                   reference_image: Any = None, take: Any = ("expression",), preset: Any = None,
                   **unknown: Any) -> RigFaceConditions:
        """Conditions of one edit of ``state``'s source.

        ``reference_image``: an RGB uint8 photo whose attributes named in ``take`` ("expression":
        DECA expression + jaw and the Deep3D vector; "pose": global head rotation; "light": SH light)
        replace the source's. ``pose_delta``: (yaw, pitch, roll) degrees added to the head's rotation.
        ``light``: (9, 3) SH coefficients (DECA's basis) for the target. Expression presets cannot be
        expressed as a Deep3D vector: ``preset`` raises InvalidInput.
        """
        from facerig.rotations import axis_angle_to_ypr, ypr_to_axis_angle

        if preset is not None or "expression_preset" in unknown:
            raise InvalidInput("preset", "no expression preset with the released RigFace weights",
                               preset if preset is not None else unknown["expression_preset"],
                               hint="their expression input is a Deep3DFaceRecon vector: use --reference PHOTO, "
                                    "or facerig-trained RigFace weights for presets")
        if unknown:
            raise InvalidInput("conditions options", "pose_delta, light, reference_image, take", sorted(unknown))
        if not isinstance(state, ReleasedSource):
            raise InvalidInput("state", "a ReleasedSource from ReleasedConditioner.source_state", type(state).__name__)
        takes = (take,) if isinstance(take, str) else tuple(take or ())
        bad = [t for t in takes if t not in _TAKES]
        if bad:
            raise InvalidInput("take", f"a subset of {_TAKES}", bad)
        codes = {k: v.clone() for k, v in state.codes.items()}
        exp64 = state.expression.clone()
        pose_edit = False
        if reference_image is not None:
            ref = self._prepare(reference_image, "reference_image")
            if "expression" in takes:
                codes["exp"] = ref.codes["exp"].clone()
                codes["pose"][:, 3:] = ref.codes["pose"][:, 3:]
                exp64 = ref.expression.clone()
            if "pose" in takes:
                codes["pose"][:, :3] = ref.codes["pose"][:, :3]
                pose_edit = True
            if "light" in takes:
                codes["light"] = ref.codes["light"].clone()
        if pose_delta is not None:
            d = torch.as_tensor(np.asarray(pose_delta, np.float64)).reshape(-1)
            if d.numel() != 3 or not torch.isfinite(d).all():
                raise InvalidInput("pose_delta", "(yaw, pitch, roll) in degrees", pose_delta)
            ypr = axis_angle_to_ypr(codes["pose"][:, :3].double().cpu()) + d[None]
            codes["pose"][:, :3] = ypr_to_axis_angle(ypr).to(codes["pose"])
            pose_edit = pose_edit or bool(d.abs().max() > 0)
        if light is not None:
            sh = torch.as_tensor(np.asarray(light, np.float32))
            if tuple(sh.shape) not in ((9, 3), (1, 9, 3)) or not torch.isfinite(sh).all():
                raise InvalidInput("light", "(9, 3) SH coefficients", tuple(sh.shape))
            codes["light"] = sh.reshape(1, 9, 3).to(codes["light"])
        render, face, lm = self.render(state, codes)
        region = state.person | _dilate(face, max(1, self.size // 128))
        if pose_edit:
            lm_src = state.render_points
            if lm_src is None:
                _, _, lm_src = self.render(state, state.codes)
            region |= estimate_target_region(state.person, lm_src, lm, face)
        bg = paint_background(state.aligned, region)
        return RigFaceConditions(
            source=state.source.clone(), background=image_to_unit(bg), render=render_to_unit(render),
            expression=exp64.float(), expression_kind="deep3d", crop=state.crop, mask=_as_mask_tensor(region),
        )


# ------------------------------------------------------------------------------------------------
# DECA's FLAME albedo space


def load_flame_texture(path: Any) -> dict[str, np.ndarray]:
    """DECA's ``FLAME_texture.npz``: ``mean`` (T*T*3) and ``tex_dir`` (T*T*3, K) in 0-255, BGR
    texel order (DECA flips to RGB after reshaping to (T, T, 3)). Loaded without pickle."""
    p = Path(os.fspath(path))
    if not p.is_file():
        raise AssetMissing("FLAME albedo space (FLAME_texture.npz)", str(p),
                           "it comes with FLAME (flame.is.tue.mpg.de, 'FLAME texture space'); pass its path")
    try:
        with np.load(p, allow_pickle=False) as z:
            mean, tex_dir = np.asarray(z["mean"], np.float32), np.asarray(z["tex_dir"], np.float32)
    except (KeyError, ValueError, OSError) as e:
        raise InvalidInput(str(p), "an npz with 'mean' and 'tex_dir' arrays", str(e)[:200]) from None
    n = mean.size
    t = int(round(np.sqrt(n / 3)))
    if t * t * 3 != n or tex_dir.reshape(n, -1).shape[0] != n:
        raise InvalidInput(f"{p}: mean/tex_dir", "a square T x T x 3 texture space", (mean.shape, tex_dir.shape))
    return {"mean": mean.reshape(1, n), "tex_dir": tex_dir.reshape(n, -1), "side": np.array(t)}


def flame_albedo_texture(space: dict[str, np.ndarray], tex: torch.Tensor, out_side: int = 256) -> torch.Tensor:
    """(B, 3, out_side, out_side) RGB albedo in [0, 1] of DECA's 50 texture codes (as DECA's FLAMETex:
    mean + basis @ code, reshaped (T, T, 3), resized to 256, BGR -> RGB, / 255)."""
    import torch.nn.functional as F

    basis = torch.from_numpy(space["tex_dir"]).to(tex)
    k = min(basis.shape[1], tex.shape[1])
    t = int(space["side"])
    flat = torch.from_numpy(space["mean"]).to(tex) + tex[:, :k] @ basis[:, :k].T
    img = flat.reshape(-1, t, t, 3).permute(0, 3, 1, 2)
    img = F.interpolate(img, size=(out_side, out_side), mode="nearest")  # DECA: F.interpolate default
    return (img[:, [2, 1, 0]] / 255.0).clamp(0, 1)
