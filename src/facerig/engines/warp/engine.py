"""The warp engine: training-free image editing by mesh-driven dense warping.

Algorithm (details and measured figures in docs/warp-engine.md):

1. **Work region**: an axis-aligned square around the face (``roi_scale`` x the face size,
   clipped to the frame) in the ORIGINAL frame; fields are computed on a work grid on which the face
   is at most ``face_res`` pixels and the region at most ``work_size`` per side (native resolution
   when smaller: the cost does not grow with the photo beyond the face), the final resampling runs
   on the full-resolution frame (over the part the edit reaches), and pixels outside the region are
   never touched.
2. **Dense correspondence** (backward warp): the target mesh is rasterised; every covered target
   pixel takes the source position given by its target barycentrics applied to the SOURCE mesh's
   projected vertices (exact surface correspondence).
3. **Extension**: outside the mesh the rim's motion is split into head pose and expression. The
   expression part (a dropped chin) carries on from the nearest rim point at full strength and
   fades within ``expression_reach``; the pose part is extended by push-pull interpolation, eases
   from the rim's own motion to ``outline_follow`` of it (a head turning about its centre keeps
   much of its outline) - at once where the face moves over its surroundings (occlusion), over a
   fold-free band where it moves away from them (no doubled face edge) - and both fade to zero with
   a raised-cosine falloff that is long inside the person mask (hair, ears and neck) and short on
   the background (which stays put).
4. **Visibility**: target pixels whose source point was hidden (z-test against the source depth),
   back-facing or extremely stretched are filled from the mirrored surface point (``mirror_index``)
   when that one is visible, else inpainted (Telea).
5. **Mouth**: where the target opens the mouth more than the source, the interior (bounded by the
   detected inner lips) comes from the driving frame of a reenactment (colour-matched), else from
   the photo's own open mouth (its teeth move with the lips), else it is synthesised (:mod:`.mouth`).
6. **Relighting**: ratio of target to source SH shading at the same surface point (clamped); for a
   new light, outside the mesh the ratio of a smooth head/neck proxy fitted to the person mask
   (hair, ears, neck; :mod:`.relight`), continuous with the rim's, applied in Lab keeping the skin's
   hue; for the same light the rim's ratio carried onto skin next to the face (``relight_skin``).
7. **Compositing**: all layers are blended in the work region; displacement and ratio are exactly 0
   and 1 far from the face, so the result is seamless with the untouched frame.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import cv2
import numpy as np
import torch

from facerig.engines.base import Engine, PoseRange, _check_image
from facerig.engines.warp.brows import unfold_raised_brows
from facerig.engines.warp.field import (
    apply_gain,
    border_taper,
    cos_falloff,
    distance_outside,
    kernels_enabled,
    nearest_extend,
    push_pull,
    resize,
    sample,
    use_kernels,
)
from facerig.engines.warp.fill import colour_sources, seamless_offset, source_face_mask, texture_fill
from facerig.engines.warp.glasses import detect_glasses, glasses_taper, splat_frame
from facerig.engines.warp.head import HeadProxy, affine_head_to_screen, ellipsoid_flow, fit_head
from facerig.engines.warp.mouth import (
    MouthSource,
    driving_interior,
    interior_alpha,
    measure_mouth,
    mouth_opening,
    mouth_width,
    synthesize_mouth,
    target_box,
    transfer_interior,
)
from facerig.engines.warp.relight import (
    apply_gain_lab,
    face_exposure,
    head_relight,
    skin_lightness,
)
from facerig.engines.warp.segment import skin_likelihood
from facerig.errors import IncompatibleModel, InvalidInput


@dataclass
class WarpOptions:
    """Tunable parameters of the warp engine (all have defaults that work on ordinary portraits)."""

    roi_scale: float = 2.4          # side of the work region / face size
    work_size: int = 768            # max side of the work grid (fields); the final warp is full-res
    face_res: int = 256             # max face size on the work grid, px: a larger face is worked on at this
                                    # size (cost bounded whatever the photo's resolution), the final
                                    # resampling stays full-res over the face's region (0: no bound)
    falloff_person: float = 0.65    # falloff radius inside the person mask (hair, neck), x face size
    falloff_background: float = 0.12  # falloff radius on the background, x face size
    relight_falloff: float = 0.5    # fade of the relight ratio outside the mesh, x face size
    relight_hair: float = 0.8       # fraction of the relight applied to hair/neck next to the face
    relight_head: bool = True       # a new light relights the whole head/neck via a proxy (relight.py)
    relight_blend: float = 0.15     # mesh ratio -> head proxy ratio over this distance outside the mesh, x face size
    relight_chroma: float = 0.5     # chroma follows the relit lightness to this power (Lab; 1 = plain product)
    relight_chroma_up: float = 0.2  # the same where the light brightens (lit dark brown skin turned orange at 0.5)
    relight_keep_dark: bool = True  # a brightening light lifts tones much darker than the skin (beard, brows) less
    relight_dark_down: float = 0.5  # (with relight_keep_dark) a darkening light darkens them this much at least
                                    # (share of the log gain; 1: in full, as before 2026-12-03)
    relight_beard: bool = True      # a bearded face's source shading re-fitted on its skin (relight.beard_source_shading)
    relight_exposure_lab: bool = True  # a new light keeps the face's mean L* as rendered (relight.face_exposure),
                                    # not the geometric mean of its ratios (bearded faces went 4-7 L* darker)
    brow_unfold: bool = True        # raised brows: the brow and its shadow rise rigidly, the lid skin unfolds (brows.py)
    ratio_clamp: tuple[float, float] = (0.25, 4.0)
    same_light_clamp: tuple[float, float] = (0.9, 1.1)  # ratio range when only geometry changes
    occlusion_tol: float = 0.015    # z-test tolerance, x face size
    max_stretch: float = 8.0        # target/source triangle area ratio treated as "not seen"
    segmentation: bool = True       # MediaPipe selfie segmentation (else an elliptical prior)
    synth_mouth: bool = True
    mirror_fill: bool = True
    head_proxy: bool = False        # experimental: hair/ears/forehead follow an ellipsoid head in 3D
    interpolation: str = "cubic"    # final full-resolution resampling: cubic | linear
    seed: int = 0                   # noise of synthesised regions
    extension: str = "nearest"      # continuation of the expression motion outside the mesh: nearest | membrane
    extension_smooth: float = 0.04  # smoothing of the nearest-point extension, x face size
    outline_follow: float = 0.5     # ("fraction") share of the rim's head-pose motion the outline/hair follows
    outline_model: str = "plane"    # "plane": away from the rim, pose motion becomes that of the plane
                                    # through the head's centre (a turning head's outline stays where it
                                    # is while the face moves across it); "fraction": outline_follow x
                                    # the rim's motion (the engine before 2026-11-23)
    outline_depth: float = 0.8      # that plane: this many face widths behind the nose tip
    occluding_band: float = 0.05    # ("plane") band where the face moves over its surroundings, x face size
    shadow_warmth: float = 0.0      # (0.25 before the Lab gain, relight_chroma) skin darkened by relighting: red darkens by gain**(1-w), blue by gain**(1+w)
    outline_band: float = 0.12      # band outside the mesh over which the pose motion eases from the
                                    # rim's own (continuity) to outline_follow, x face size
    band_factor: float = 2.0        # revealing-side band / the rim's pose motion (>= 1: no fold)
    expression_reach: float = 0.3   # how far expression motion carries on outside the mesh, x face size
    relight_skin: float = 0.6       # relight reach over skin-coloured pixels next to the face (forehead,
                                    # neck, ears), x face size (0: off)
    reveal_texture: bool = True     # a revealed cheek: the face's colours next to it (membrane) + the texture one
                                    # strip further in (fill.texture_fill), not a per-pixel mirror (bands on beards)
    glasses: bool = True            # detect glasses on the source; their frame then moves rigidly with the head
    reveal_stretch: tuple[float, float] = (1.3, 3.0)  # outer-ring triangles stretched beyond these (target/
                                    # source area) are "not seen" (filled from the face) where the photo shows
                                    # no face there (background, hair, ear) / anywhere


@dataclass
class WarpSource:
    """Per-source precomputation (reused across the frames of a reenactment)."""

    frame: np.ndarray              # full-res source image (uint8)
    roi: tuple[int, int, int, int]  # x0, y0, x1, y1 in frame pixels
    k: float                        # frame pixels per work pixel
    work_hw: tuple[int, int]
    image: np.ndarray               # work-grid source (float32 [0,1])
    verts: np.ndarray               # (V, 3) source screen vertices in work pixels (x, y, depth)
    shade: np.ndarray               # (V, 3) source SH shading per vertex
    front: np.ndarray               # (F,) source triangle front-facing
    area: np.ndarray                # (F,) source triangle screen area
    zbuf: np.ndarray                # (H, W) source depth (3x3 farthest; -inf on background)
    inner: np.ndarray               # (H, W) source coverage eroded (safe to borrow mirror colours)
    face_index: np.ndarray          # (H, W) source triangle per pixel (-1 background)
    person: np.ndarray              # (H, W) soft person mask
    face_px: float                  # face size in work pixels
    lip_rgb: np.ndarray
    skin_rgb: np.ndarray
    noise: float
    opening: float                  # source inner-lip opening (work px)
    teeth_rgb: np.ndarray | None    # colours seen in the source's open mouth (None: closed)
    cavity_rgb: np.ndarray | None
    model: Any
    params: Any
    faces: np.ndarray
    regions: dict[str, int]
    mirror: np.ndarray | None       # (V,) mirrored vertex per vertex (None: the model has no symmetry)
    head: HeadProxy | None = None  # ellipsoid head proxy (head frame) for pixels outside the mesh
    head_map: tuple[np.ndarray, np.ndarray] | None = None  # head frame -> work screen (A, b)
    rim_face: np.ndarray | None = None  # (F,) triangles at the mesh's outer boundary (2 rings)
    skin: np.ndarray | None = None  # (H, W) skin likelihood x person mask (source work grid)
    head_src: np.ndarray | None = None  # (V, 3) source head-frame vertices
    eye_open: np.ndarray | None = None  # (H, W) uint8: the source's detected eye openings (1 right, 2 left)
    lid_rgb: np.ndarray | None = None   # (2, 3) lid skin colour of each eye
    lid_delta: np.ndarray | None = None  # (V, 2) detected - fitted eye-contour positions (work px)
    eye_full: np.ndarray | None = None  # (H, W) uint8: the detected eye openings, not shrunk
    sclera_rgb: np.ndarray | None = None  # (2, 3) white of each eye
    mouth: MouthSource | None = None  # the source's mouth: detected inner lips, real interior, colours, blur
    timings: dict[str, float] = field(default_factory=dict)
    glasses: Any = None  # glasses.Glasses of the source (None: no detections to look for them)
    fill_cache: dict[Any, Any] = field(default_factory=dict)  # per-source maps of the hidden-pixel fill
    buffers: dict[str, np.ndarray] = field(default_factory=dict)  # per-frame scratch arrays, reused (_Buffers)
    # reduced work grid: the photo around the work region, RGBA, supersampled ``up_scale`` x (see
    # _supersample), and the frame pixel of its first pixel
    frame_up: np.ndarray | None = None
    up_scale: int = 1
    up_origin: tuple[int, int] = (0, 0)


class WarpEngine(Engine):
    """Training-free default engine: mesh-driven warp + relight + fill (see module docstring)."""

    name: ClassVar[str] = "warp"
    requires_weights: ClassVar[bool] = False
    description: ClassVar[str] = "training-free mesh-driven warp with relighting and mouth/occlusion fill (default)"
    # a real head turns about its centre, and the warp keeps the photo's hair and outline, so the
    # face moves within them. (With the fraction outline model the eye-mouth anchor re-fitted at
    # about half the turn; with the plane model both anchors re-fit alike on synthetic heads, yaw
    # +-20 -> -15.1/+15.3 face, -15.2/+15.8 head: benchmarks/pose_truth.py --anchor)
    pose_anchor: ClassVar[str] = "head"
    # what the warp renders faithfully: yaw +-20 re-fits at -15.4/+15.8 on true 3D heads with no tear
    # (docs/pose-truth.md; +-30 re-fits at 22 with 0 % within 2 degrees and a visible fold),
    # pitch +-10 re-fits at -7.1/+7.5 (docs/edit-accuracy.md), so +-12; roll is an in-plane rotation
    # of the photo's own pixels (no reveal), +-25. Sources beyond yaw +-45 (profile) fit unreliably.
    pose_range: ClassVar[PoseRange] = PoseRange(yaw=20.0, pitch=12.0, roll=25.0, source_yaw=45.0,
                                                source_pitch=30.0, warn_source_yaw=30.0)

    def __init__(self, weights: Any = None, device: str = "cpu", **options: Any) -> None:
        super().__init__(weights, device)
        known = set(WarpOptions.__dataclass_fields__)
        bad = sorted(set(options) - known)
        if bad:
            raise InvalidInput("warp engine options", f"names among {', '.join(sorted(known))}", bad)
        self.opts = WarpOptions(**options)
        if self.opts.extension not in ("nearest", "membrane"):
            raise InvalidInput("extension", "nearest or membrane", self.opts.extension)
        if self.opts.outline_model not in ("plane", "fraction"):
            raise InvalidInput("outline_model", "plane or fraction", self.opts.outline_model)
        if self.opts.interpolation not in ("cubic", "linear"):
            raise InvalidInput("interpolation", "cubic or linear", self.opts.interpolation)
        fr = self.opts.face_res
        if isinstance(fr, bool) or not isinstance(fr, (int, np.integer)) or not (fr == 0 or 64 <= fr <= 4096):
            raise InvalidInput("face_res", "the face's size on the work grid: an integer from 64 to 4096 px "
                               "(0: no bound)", fr, hint="the default 256 bounds the cost whatever the photo size")
        ws = self.opts.work_size
        if isinstance(ws, bool) or not isinstance(ws, (int, np.integer)) or not 64 <= ws <= 8192:
            raise InvalidInput("work_size", "the work grid's largest side: an integer from 64 to 8192 px", ws)
        self.last_timings: dict[str, float] = {}
        self._frames = 0  # frames rendered (the first one without the numba kernels)

    # ------------------------------------------------------------------------------------------
    # geometry
    @staticmethod
    def _geometry(model: Any, params: Any, roi: tuple[int, int, int, int], k: float, head: bool = False
                  ) -> tuple[np.ndarray, ...]:
        """Screen vertices (V, 3) in work pixels and per-vertex SH shading (V, 3) of a batch-1 face
        (and, with ``head=True``, the head-frame vertices (V, 3))."""
        from facerig.render.buffers import screen_vertices
        from facerig.render.camera import pose_vertices
        from facerig.render.raster import vertex_normals
        from facerig.render.shading import sh_basis

        if params.crop is None:
            raise InvalidInput("params.crop", "the crop transform of the fitted face (params from fit_image)", None)
        with torch.no_grad():
            v = model(params.identity, params.expression, params.jaw_pose)
            world = pose_vertices(v, params.rotation.to(v.dtype))
            scr, _ = screen_vertices(world, params, space="frame")
            nrm = vertex_normals(world, model.faces.long())
            shade = sh_basis(nrm) @ params.light.to(nrm.dtype)  # (1, V, 3)
        s = scr[0].double().numpy()
        out = np.empty_like(s)
        out[:, 0] = (s[:, 0] - roi[0]) / k
        out[:, 1] = (s[:, 1] - roi[1]) / k
        out[:, 2] = s[:, 2] / k
        if head:
            return out, shade[0].double().numpy(), v[0].double().numpy()
        return out, shade[0].double().numpy()

    def _pose_only(self, st: WarpSource, params: Any) -> np.ndarray:
        """The screen vertices of :meth:`_geometry` for ``params`` that carry the source's identity,
        expression and jaw (the target's pose with the source's expression): the model's vertices
        are the source's, evaluated once per source (same values as :meth:`_geometry`; no shading)."""
        from facerig.render.buffers import screen_vertices
        from facerig.render.camera import pose_vertices

        same = (params.identity.shape == st.params.identity.shape and torch.equal(params.identity, st.params.identity)
                and params.expression.dtype == st.params.expression.dtype)
        if not same:
            return self._geometry(st.model, params, st.roi, st.k)[0]
        if "model_verts" not in st.fill_cache:
            with torch.no_grad():
                st.fill_cache["model_verts"] = st.model(st.params.identity, st.params.expression, st.params.jaw_pose)
        v = st.fill_cache["model_verts"]
        with torch.no_grad():
            world = pose_vertices(v, params.rotation.to(v.dtype))
            scr, _ = screen_vertices(world, params, space="frame")
        sv = scr[0].double().numpy()
        out = np.empty_like(sv)
        out[:, 0] = (sv[:, 0] - st.roi[0]) / st.k
        out[:, 1] = (sv[:, 1] - st.roi[1]) / st.k
        out[:, 2] = sv[:, 2] / st.k
        return out

    @staticmethod
    def _raster(verts: np.ndarray, faces_t: torch.Tensor, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Face index (H, W) and screen-space barycentrics (H, W, 3) (zeros off the mesh); see
        :meth:`_raster_covered`."""
        fi, iy, ix, b = WarpEngine._raster_covered(verts, faces_t, hw)
        bary = np.zeros((*hw, 3), np.float64)
        bary[iy, ix] = b
        return fi, bary

    @staticmethod
    def _raster_covered(verts: np.ndarray, faces_t: torch.Tensor, hw: tuple[int, int]
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Face index (H, W), the covered pixels (iy, ix) and their barycentrics (N, 3).

        Visibility is the shared rasteriser's (numba z-buffer on CPU); the barycentrics are
        recomputed here for the covered pixels only (no autograd / torch dispatch: this runs once
        per frame and was the largest per-frame cost), in one numba pass
        (:func:`._kernels.barycentrics`, bit-identical to :meth:`_barycentrics_reference`)."""
        from facerig.engines.warp._kernels import barycentrics
        from facerig.render.raster import visibility

        with torch.no_grad():
            fi = visibility(torch.from_numpy(verts[None]).float(), faces_t, hw[0], hw[1])[0].numpy()
        iy, ix = np.nonzero(fi >= 0)
        if not kernels_enabled():
            return fi, iy, ix, WarpEngine._barycentrics_reference(verts, faces_t.numpy(), fi[iy, ix], iy, ix)
        b = np.empty((iy.size, 3), np.float64)
        if iy.size:
            xy = verts[:, :2].astype(np.float32).astype(np.float64)
            barycentrics(xy, faces_t.numpy().astype(np.int64, copy=False), fi[iy, ix], iy, ix, b)
        return fi, iy, ix, b

    @staticmethod
    def _barycentrics_reference(verts: np.ndarray, faces: np.ndarray, f: np.ndarray, iy: np.ndarray,
                                ix: np.ndarray) -> np.ndarray:
        """The barycentrics of :meth:`_raster_covered` in numpy (the reference of its kernel)."""
        tri = verts[faces[f], :2].astype(np.float32).astype(np.float64)
        (x0, y0), (x1, y1), (x2, y2) = tri[:, 0].T, tri[:, 1].T, tri[:, 2].T
        area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        area = np.where(area == 0, 1e-30, area)
        px, py = ix + 0.5, iy + 0.5
        w1 = ((y2 - y0) * (px - x0) - (x2 - x0) * (py - y0)) / area
        w2 = ((x1 - x0) * (py - y0) - (y1 - y0) * (px - x0)) / area
        return np.stack([1 - w1 - w2, w1, w2], 1)

    def _work_scale(self, roi_w: int, roi_h: int, face: float) -> float:
        """Frame pixels per work-grid pixel: at most ``work_size`` px per side and the face at most
        ``face_res`` px (never above native resolution), so the per-frame cost does not grow with the
        photo's resolution beyond the face's."""
        k = max(1.0, max(roi_w, roi_h) / float(self.opts.work_size))
        if self.opts.face_res > 0:
            k = max(k, face / float(self.opts.face_res))
        return k

    @staticmethod
    def _tri_area(xy: np.ndarray, faces: np.ndarray) -> np.ndarray:
        a, b, c = xy[faces[:, 0]], xy[faces[:, 1]], xy[faces[:, 2]]
        return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])

    # ------------------------------------------------------------------------------------------
    def prepare(self, source_image: np.ndarray, source_params: Any, model: Any, **kw: Any) -> WarpSource:
        with _few_threads(), use_kernels(False):  # (once per source: see field.use_kernels)
            return self._prepare(source_image, source_params, model)

    def _prepare(self, source_image: np.ndarray, source_params: Any, model: Any) -> WarpSource:
        t0 = time.perf_counter()
        _check_image(source_image)
        if source_params.batch_size != 1:
            raise InvalidInput("source_params", "the params of one face (batch 1)", source_params.batch_size)
        if getattr(model, "name", None) != source_params.model:
            raise IncompatibleModel(f"params of the {source_params.model} model given with the {model.name} model")
        crop = source_params.crop[0]
        frame = np.ascontiguousarray(source_image)
        H, W = frame.shape[:2]
        if tuple(crop.frame_size) != (H, W):
            raise InvalidInput("source_image", f"the image the params were fitted on ({crop.frame_size[1]}x"
                               f"{crop.frame_size[0]})", f"{W}x{H}")
        o = self.opts
        full, _ = self._geometry(model, source_params, (0, 0, W, H), 1.0)
        lo, hi = full[:, :2].min(0), full[:, :2].max(0)
        face = float(np.mean(hi - lo))
        centre = (lo + hi) / 2 + np.array([0.0, -0.05 * face])
        half = o.roi_scale * face / 2
        x0, y0 = int(np.floor(max(0, centre[0] - half))), int(np.floor(max(0, centre[1] - half)))
        x1, y1 = int(np.ceil(min(W, centre[0] + half))), int(np.ceil(min(H, centre[1] + half)))
        if x1 - x0 < 8 or y1 - y0 < 8:
            raise InvalidInput("source_params", "a face inside the image", f"face region {x0},{y0}-{x1},{y1}")
        k = self._work_scale(x1 - x0, y1 - y0, face)
        hw = (max(8, int(round((y1 - y0) / k))), max(8, int(round((x1 - x0) / k))))
        kx, ky = (x1 - x0) / hw[1], (y1 - y0) / hw[0]
        k = float((kx + ky) / 2)
        roi_img = frame[y0:y1, x0:x1]
        work = roi_img if hw == roi_img.shape[:2] else cv2.resize(roi_img, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)
        image = work.astype(np.float32) / 255.0
        verts, shade, vhead = self._geometry(model, source_params, (x0, y0, x1, y1), k, head=True)
        lid_delta = _lid_residual(source_params, (x0, y0), k, verts)
        if lid_delta is not None:  # the eye contours where the photo's lids are (see _lid_residual)
            verts[:, :2] += lid_delta
        faces = model.faces.long().cpu().numpy()
        fi, bary = self._raster(verts, model.faces.long(), hw)
        cov = fi >= 0
        zbuf = np.full(hw, -np.inf, np.float64)
        zbuf[cov] = np.einsum("nk,nk->n", bary[cov], verts[faces[fi[cov]], 2])
        # z-test reference: the farthest depth in a 3x3 neighbourhood, so steep slopes near the
        # silhouette do not hide their own pixels
        zbuf = cv2.erode(np.where(cov, zbuf, -1e9).astype(np.float32), np.ones((3, 3), np.uint8)).astype(np.float64)
        zbuf[zbuf < -1e8] = -np.inf
        area = self._tri_area(verts[:, :2], faces)
        front = area < 0  # clockwise on screen (y down) = front facing
        face_px = face / k
        regions = {n: i for i, n in enumerate(getattr(model, "region_names", ()))}
        reg_pix = np.where(cov, model.face_region.cpu().numpy()[np.maximum(fi, 0)], -1)
        person = self._person(work, verts, face_px)
        lips = reg_pix == regions.get("lips", -2)
        skin = reg_pix == regions.get("skin", -2)
        lip_rgb = image[lips].mean(0) if lips.sum() > 10 else np.array([0.6, 0.35, 0.35], np.float32)
        skin_rgb = image[skin].mean(0) if skin.sum() > 10 else np.array([0.6, 0.5, 0.45], np.float32)
        noise = 0.0
        if skin.sum() > 50:
            g = image.mean(2)
            hp = g - cv2.GaussianBlur(g, (0, 0), 1.0)
            noise = float(1.4826 * np.median(np.abs(hp[skin])) * 1.3)
        # the mouth on its detected inner lips: whether the photo shows its interior, its colours, blur
        mouth_src, xy_m = measure_mouth(image, verts[:, :2], _detected_px(source_params, (x0, y0), k), lip_rgb, skin_rgb)
        op_s = mouth_opening(xy_m) if verts.shape[0] > 400 else 0.0
        teeth_rgb = mouth_src.teeth if mouth_src is not None else None
        cavity_rgb = mouth_src.cavity if mouth_src is not None and mouth_src.real else None
        mirror = model.mirror_index.long().cpu().numpy() if hasattr(model, "mirror_index") else None
        skin_like = skin_likelihood(image, skin) * person if o.relight_skin > 0 else None
        st = WarpSource(
            frame=frame, roi=(x0, y0, x1, y1), k=k, work_hw=hw, image=image, verts=verts, shade=shade,
            front=front, area=np.abs(area), zbuf=zbuf,
            inner=cv2.erode(cov.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=max(1, int(0.02 * face / k))) > 0, face_index=fi, person=person, face_px=face_px,
            lip_rgb=lip_rgb.astype(np.float32), skin_rgb=skin_rgb.astype(np.float32), noise=noise,
            opening=op_s, teeth_rgb=teeth_rgb, cavity_rgb=cavity_rgb,
            model=model, params=source_params, faces=faces, regions=regions, mirror=mirror,
            head=fit_head(vhead) if (o.head_proxy and vhead.shape[0] > 152) else None,
            head_map=affine_head_to_screen(vhead, verts), rim_face=_boundary_faces(faces), skin=skin_like,
            head_src=vhead, lid_delta=lid_delta, mouth=mouth_src,
        )
        if hw != (y1 - y0, x1 - x0):  # reduced work grid: the source of the full-res resampling
            st.frame_up, st.up_scale, st.up_origin = self._supersample(frame, st.roi)
        st.eye_full = _eye_openings(source_params, (x0, y0), k, hw)
        if st.eye_full is not None:
            # shrunk by 1 % of the face: what lies deep inside the opening (iris, white), not its rim
            n = max(1, round(0.01 * face_px))
            core = cv2.erode((st.eye_full > 0).astype(np.uint8), np.ones((2 * n + 1, 2 * n + 1), np.uint8))
            st.eye_open = st.eye_full * core
            det = _detected_px(source_params, (x0, y0), k)
            st.glasses = detect_glasses(image, det) if (o.glasses and det is not None) else None
            frame_px = st.glasses.frame > 0.3 if (st.glasses is not None and st.glasses.present) else None
            st.lid_rgb = _lid_colours(image, st.eye_open, exclude=frame_px)
            st.sclera_rgb = _sclera_colours(image, st.eye_full)
            if st.lid_rgb is not None:
                # the eye white along the rim (outside the eroded core) is opening too: left out, a
                # closed lid kept a bright sliver of it along its edge
                st.eye_open = _with_bright_rim(image, st.eye_full, st.eye_open, st.lid_rgb, n)
        st.timings["prepare"] = time.perf_counter() - t0
        return st

    def _supersample(self, frame: np.ndarray, roi: tuple[int, int, int, int], scale: int | None = None
                     ) -> tuple[np.ndarray, int, tuple[int, int]]:
        """The photo around the work region (+10 % of its side, clipped to the frame) in RGBA,
        supersampled s x with Lanczos (pixel s*i = pixel i exactly), once per source: a bilinear
        lookup in it per output pixel is as sharp as a bicubic one in the photo (Laplacian variance
        of a warped 1024 px portrait 443 vs 439, PSNR to a Lanczos warp 53.8 vs 49.7 dB) at a third
        of the cost (cv2's 8-bit bicubic remap was 60 % of a frame). s = 3 up to 2.5 Mpx (36 MB for a
        1024 px region), 2 up to 6 Mpx, else 1 (plain bicubic lookups)."""
        x0, y0, x1, y1 = roi
        H, W = frame.shape[:2]
        m = int(np.ceil(0.1 * max(x1 - x0, y1 - y0)))
        px0, py0, px1, py1 = max(0, x0 - m), max(0, y0 - m), min(W, x1 + m), min(H, y1 + m)
        crop = cv2.cvtColor(np.ascontiguousarray(frame[py0:py1, px0:px1]), cv2.COLOR_RGB2RGBA)
        area = (px1 - px0) * (py1 - py0)
        s = 1 if self.opts.interpolation != "cubic" else 3 if area <= 2_500_000 else 2 if area <= 6_000_000 else 1
        if scale is not None:  # (tests)
            s = int(scale)
        if s > 1:
            aff = np.array([[1.0 / s, 0.0, 0.0], [0.0, 1.0 / s, 0.0]])
            crop = cv2.warpAffine(crop, aff, ((px1 - px0) * s, (py1 - py0) * s),
                                  flags=cv2.INTER_LANCZOS4 | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
        return crop, s, (px0, py0)

    def _person(self, work: np.ndarray, verts: np.ndarray, face_px: float) -> np.ndarray:
        from facerig.engines.warp.segment import person_mask

        lo, hi = verts[:, :2].min(0), verts[:, :2].max(0)
        return person_mask(work, (lo + hi) / 2, face_px, use_model=self.opts.segmentation)

    # ------------------------------------------------------------------------------------------
    def render_frame(self, state: WarpSource, target_params: Any, *, generator: Any = None,
                     return_layers: bool = False, driving_image: np.ndarray | None = None,
                     driving_params: Any = None, **kw: Any) -> np.ndarray:
        """One frame. ``driving_image`` (RGB uint8) / ``driving_params`` (its batch-1 fit, with
        ``.crop``): the driving frame of a reenactment; the mouth interior is then taken from it."""
        if (driving_image is None) != (driving_params is None):
            raise InvalidInput("driving_image", "given together with driving_params (or neither)",
                               type(driving_image).__name__, hint="Engine.reenact passes both")
        # the numba kernels from this engine's second frame on (field.use_kernels)
        fast = self._frames > 0
        self._frames += 1
        with _few_threads(), use_kernels(fast):
            return self._render_frame(state, target_params, generator=generator, return_layers=return_layers,
                                      driving=(driving_image, driving_params) if driving_image is not None else None)

    def _render_frame(self, state: WarpSource, target_params: Any, *, generator: Any = None,
                      return_layers: bool = False, driving: tuple[np.ndarray, Any] | None = None) -> np.ndarray:
        o = self.opts
        tm: dict[str, float] = {}
        t0 = time.perf_counter()
        if target_params.batch_size != 1:
            raise InvalidInput("target_params", "the params of one face (batch 1)", target_params.batch_size)
        st = state
        h, w = st.work_hw
        faces = st.faces
        F = st.face_px
        vt, shade_t, vhead_t = self._geometry(st.model, target_params, st.roi, st.k, head=True)
        vt = self._gaze_down_lids(st, target_params, vt, vhead_t)
        if st.lid_delta is not None:
            vt[:, :2] += _target_lid_delta(st.lid_delta, st.verts[:, :2] - st.lid_delta, vt[:, :2])
        fi, iy, ix, b = self._raster_covered(vt, st.model.faces.long(), (h, w))
        tm["raster"] = time.perf_counter() - t0
        cov = fi >= 0
        f = fi[iy, ix]
        tri = faces[f]
        # the source point and the source shading at each covered pixel, in one pass
        if "src_table" not in st.fill_cache:
            st.fill_cache["src_table"] = np.ascontiguousarray(np.concatenate([st.verts, st.shade], 1), np.float64)
        interp_s = _interpolate(b, tri, st.fill_cache["src_table"])
        src = interp_s[:, :3]
        pix = np.stack([ix + 0.5, iy + 0.5], 1)
        d = src[:, :2] - pix
        region_of = st.model.face_region.cpu().numpy()[f]
        r_mouth = st.regions.get("mouth_interior", -2)
        r_eyes = st.regions.get("eyes", -2)

        # ---- visibility of the source point
        sx = np.clip(src[:, 0].astype(np.int64), 0, w - 1)
        sy = np.clip(src[:, 1].astype(np.int64), 0, h - 1)
        tol = o.occlusion_tol * F
        hidden = st.zbuf[sy, sx] > src[:, 2] + tol
        hidden |= ~st.front[f]
        area_t = np.abs(self._tri_area(vt[:, :2], faces))
        stretch = area_t[f] / np.maximum(st.area[f], 1e-3)
        hidden |= (stretch > o.max_stretch) & (region_of != r_mouth) & (region_of != r_eyes)
        # a fitted mesh overlaps the background beyond a cheek that is nearly edge-on in the photo
        # (its outline vertices sit behind the visible silhouette): turned into view (its outer
        # triangles grow), those parts showed the background inside the face: not seen either
        # (the same for hair and ears the outline overlaps: stretched across the cheek that turns
        # into view they read as a smear); and the outer rings stretched several times are a
        # foreshortened strip of the photo drawn as a blocky smear: filled from the face instead
        if "face" not in st.fill_cache:
            st.fill_cache["face"] = source_face_mask(st.face_index, st.skin, F)
        face_src = st.fill_cache["face"]
        if st.rim_face is not None:
            opened = st.rim_face[f] & (stretch > o.reveal_stretch[0])
            if opened.any():
                # (a glasses frame on the source's outer ring is no background: a temple arm read
                # as "not face" there was filled over with cheek, a pale patch that cut the arm)
                gone = opened & ~face_src[sy, sx]
                if st.glasses is not None and st.glasses.present:
                    gi = np.nonzero(gone)[0]
                    gone[gi] = ~self._frame_px(st)[sy[gi], sx[gi]]
                hidden |= gone
            hidden |= st.rim_face[f] & (stretch > o.reveal_stretch[1])
        if hidden.any():  # drop specks: only blobs of some size are really "not seen"
            hm0 = np.zeros((h, w), np.uint8)
            hm0[iy[hidden], ix[hidden]] = 1
            hm = cv2.morphologyEx(hm0, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
            n, lab, stats, _ = cv2.connectedComponentsWithStats(hm, connectivity=8)
            small = stats[:, cv2.CC_STAT_AREA] < max(6.0, (0.03 * F) ** 2)
            small[0] = True
            hidden = ~small[lab[iy, ix]]

        # ---- an eye that closes: whatever the source's real eye opening (the detected lid contour,
        # which the fitted model's need not match) would put between the closed lids is not seen
        # (iris showing through the lid); it is filled from the lids around it
        gaps = self._lid_gap_ratios(st, vt)
        closing = [eye for eye, r in gaps.items() if r < 0.35]  # shut (or nearly)
        eye_hidden = np.zeros(src.shape[0], bool)
        eye_lab = np.zeros(src.shape[0], np.uint8)  # which source opening each covered pixel shows
        if closing and st.eye_open is not None:
            sx_i = np.clip(np.rint(src[:, 0] - 0.5).astype(np.int64), 0, w - 1)
            sy_i = np.clip(np.rint(src[:, 1] - 0.5).astype(np.int64), 0, h - 1)
            eye_lab = st.eye_open[sy_i, sx_i].astype(np.uint8)
            eye_hidden = np.isin(eye_lab, closing)
            hidden |= eye_hidden

        # ---- the rim motion split into head pose and expression: outside the mesh, expression
        # motion (a dropped chin) carries on unchanged, pose motion only partly - a head turning
        # about its centre keeps much of its outline (a sphere's silhouette does not move at all)
        d_pose = d
        if o.outline_follow < 1.0:
            tp = target_params
            same_expr = tp.expression.shape == st.params.expression.shape and torch.equal(tp.expression, st.params.expression)
            if tp.jaw_pose is not None and st.params.jaw_pose is not None:
                same_expr = same_expr and torch.equal(tp.jaw_pose, st.params.jaw_pose)
            if not same_expr:
                vpose = self._pose_only(st, tp.replace(expression=st.params.expression.to(tp.expression),
                                                       jaw_pose=st.params.jaw_pose))
                if st.lid_delta is not None:
                    vpose[:, :2] += st.lid_delta
                p_pose = _interpolate(b, tri, vpose[:, :2])
                d_pose = src[:, :2] - p_pose
        d_expr = d - d_pose

        # ---- relight ratio at the same surface point
        s_t = _interpolate(b, tri, shade_t)
        s_s = interp_s[:, 3:6]
        lo_c, hi_c = o.ratio_clamp
        # luminance ratio (geometry + light direction); per-channel ratios of a coloured fitted light
        # would tint the face
        # (the channel mean written out: numpy's reduction over a 3-long axis is slow; same sums)
        lum_t = (s_t[:, 0] + s_t[:, 1] + s_t[:, 2]) / 3
        lum_s = (s_s[:, 0] + s_s[:, 1] + s_s[:, 2]) / 3
        light_changed = not torch.allclose(target_params.light.double(), st.params.light.double(), atol=1e-5)
        if light_changed and o.relight_beard:  # a bearded face: the fit's shadow on the beard is albedo
            bs = self._beard_shading(st)
            if bs is not None:
                s_b = _interpolate(b, tri, bs[0][:, None])[:, 0]
                lum_s = (1.0 - bs[1]) * lum_s + bs[1] * s_b
        r_l = np.where(lum_s > 1e-3, lum_t / np.maximum(lum_s, 1e-3), 1.0)
        # (the fitted light's colour is not reliable - albedo/light colour are ambiguous from one
        # photo - so a light's colour change is NOT transferred; only its luminance)
        tint = np.ones(3)
        if not light_changed:  # same light: only mild shading changes from the moved geometry
            lo_c, hi_c = max(lo_c, o.same_light_clamp[0]), min(hi_c, o.same_light_clamp[1])
        k_exp = 1.0
        ga = _gain_lab_args(st, o)
        if o.relight_head and light_changed:  # the face's exposure changes as the lights' (relight.py)
            k_exp = face_exposure(r_l, ~hidden, st.params.light[0], target_params.light[0], (lo_c, hi_c),
                                  colours=st.image[sy, sx] if o.relight_exposure_lab else None,
                                  dark_ref=ga["dark_ref"], dark_floor_down=ga["dark_floor_down"])
            r_l = r_l * k_exp
        ratio = np.clip(r_l, lo_c, hi_c)[:, None]  # one (luminance) channel: the tint is neutral
        tm["correspond"] = time.perf_counter() - t0

        # ---- dense fields on a quarter grid: displacement (2) + log luminance ratio (1)
        q = 4 if min(h, w) >= 128 else 1
        hq, wq = (h + q - 1) // q, (w + q - 1) // q
        D = np.zeros((h, w, 5), np.float32)
        D[iy, ix] = np.concatenate([d, np.log(ratio), d_expr], 1)  # (one scatter, not three)
        known = np.zeros((h, w), np.float32)
        known[iy[~hidden], ix[~hidden]] = 1.0
        covf = cov.astype(np.float32)
        # the extension interpolates the values on the visible rim of the mesh (so it is continuous
        # there); interior values would pull it towards the face's mean displacement
        rim = known - cv2.erode(known, np.ones((3, 3), np.uint8), iterations=max(1, q // 2))
        if st.head is not None and st.rim_face is not None:
            # with the head proxy, only the mesh's real outer boundary is continued outwards; a
            # self-occlusion silhouette (the far cheek of a turned head) is a depth edge: the hair /
            # background behind it follows the proxy instead of stretching the cheek outwards
            bnd = np.zeros((h, w), np.float32)
            bnd[iy, ix] = st.rim_face[f]
            rim = rim * bnd
        # quarter-grid rim values: the area mean of the rim pixels in each cell (divided by the
        # rim's own coverage of the cell), trusted (weight 1) where the rim covers >= 1/q of it
        # (rim and crim are 0/1 masks of a thin band: D times them is D scattered onto the band)
        DEq = resize(_on_mask(D, [0, 1, 3, 4], rim), (hq, wq), cv2.INTER_AREA)
        Dq, Eq = DEq[..., :2], DEq[..., 2:]
        Kraw = resize(rim, (hq, wq), cv2.INTER_AREA)
        Kq = np.clip(Kraw * q, 0, 1) if q > 1 else Kraw
        crim = covf - cv2.erode(covf, np.ones((3, 3), np.uint8), iterations=max(1, q // 2))
        Rq = resize(_on_mask(D, [2], crim), (hq, wq), cv2.INTER_AREA)
        Craw = resize(crim, (hq, wq), cv2.INTER_AREA)
        Cq = np.clip(Craw * q, 0, 1) if q > 1 else Craw
        if Rq.ndim == 2:
            Rq = Rq[..., None]
        rim_e = Eq / np.maximum(Kraw, 1e-6)[..., None]
        rim_p = Dq / np.maximum(Kraw, 1e-6)[..., None] - rim_e
        if o.extension == "nearest":
            ext_e = nearest_extend(rim_e, Kq, max(0.5, o.extension_smooth * F / q))
        else:
            ext_e = push_pull(rim_e, Kq)
        ext_p = push_pull(rim_p, Kq)
        if o.relight_skin > 0:  # the rim's own ratio carried outwards (onto forehead, neck, ears)
            ext_r = nearest_extend(Rq / np.maximum(Craw, 1e-6)[..., None], Cq, max(0.5, 0.06 * F / q))
        else:
            ext_r = push_pull(Rq / np.maximum(Craw, 1e-6)[..., None], Cq)
        # falloff radii grow with the displacement so the field never folds
        dmax = _p98(np.sqrt(d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1]))  # (np.linalg.norm's sums, faster)
        dist = distance_outside(resize(covf, (hq, wq), cv2.INTER_AREA) > 0.5) * q
        pers_q = resize(st.person, (hq, wq), cv2.INTER_AREA)
        blur = max(0.03 * F, 1.2 * dmax) / q
        pers_q = cv2.GaussianBlur(pers_q, (0, 0), max(blur, 0.5))
        r_p = max(o.falloff_person * F, 4.0 * dmax)
        r_b = max(o.falloff_background * F, 3.0 * dmax)
        wt = pers_q * cos_falloff(dist / r_p) + (1 - pers_q) * cos_falloff(dist / r_b)
        # continuous at the mesh boundary (1), fading over the hair/neck, fast on the background
        wl = cos_falloff(dist / max(o.relight_falloff * F, 1.0)) * (
            pers_q * o.relight_hair + (1 - pers_q * o.relight_hair) * cos_falloff(dist / max(0.08 * F, 1.0)))
        if st.skin is not None:  # skin next to the face takes the relight fully, fading slowly
            sk = resize(st.skin, (hq, wq), cv2.INTER_AREA)
            wl = np.maximum(wl, sk * cos_falloff(dist / max(o.relight_skin * F, 1.0)))
        if o.relight_head and light_changed:  # a new light: the whole head and neck (relight.py)
            ext_r, wl = head_relight(st, target_params, vt, (hq, wq), q, Rq / np.maximum(Craw, 1e-6)[..., None],
                                     Cq, pers_q, dist, (lo_c, hi_c), o.relight_blend, o.segmentation, k_exp)
        # expression motion (a dropped chin) carries on at full strength next to the mesh and fades
        # within expression_reach (never faster than 3x its own size, so the field cannot fold)
        de = _p98(np.sqrt(d_expr[:, 0] * d_expr[:, 0] + d_expr[:, 1] * d_expr[:, 1]))
        wt_e = wt * cos_falloff(dist / max(o.expression_reach * F, 3.0 * de, 1.0))
        # pose motion: the rim's own motion at the rim (no tear), easing to outline_follow of it over
        # a band (hair next to the face is compressed / stretched there rather than torn); the band
        # is wide enough for the change of motion across it never to fold the field
        # (the motion that matters is the rim's: the nose moves more, but it is far from the band)
        dp = _p98(np.linalg.norm(rim_p, axis=2)[Kq > 0.5])
        # Where the rim moves outwards (the face turns towards that side) the face occludes what
        # lies next to it: the motion may drop at once (the hair there is behind the face: no
        # fold is visible, the face is drawn over it). Where the rim moves inwards (the side that
        # turns away, revealing), a drop would show the face's edge twice: there the motion eases
        # over a band wide enough not to fold.
        if o.outline_model == "plane":
            far_p = self._plane_flow(st, vhead_t, vt, (hq, wq), q)
            dp = _p98(np.linalg.norm(rim_p - far_p, axis=2)[Kq > 0.5])
            band_open = max(o.outline_band * F, o.band_factor * dp, 1.0)
        else:
            band_open = max(o.outline_band * F, o.band_factor * (1.0 - o.outline_follow) * dp, 1.0)
        band_occl = max((o.occluding_band if o.outline_model == "plane" else o.outline_band) * F, 1.0)
        gy, gx = np.gradient(dist)
        gn = np.sqrt(gx * gx + gy * gy) + 1e-6
        rel = ext_p - far_p if o.outline_model == "plane" else ext_p
        pm = np.linalg.norm(rel, axis=2) + 1e-6
        inward = -(rel[..., 0] * gx + rel[..., 1] * gy) / (gn * pm)  # +1: backward motion points at the face
        occl = np.clip(inward * 2.0, 0.0, 1.0)
        occl = cv2.GaussianBlur(occl.astype(np.float32), (0, 0), max(1.0, 0.05 * F / q))
        band = occl * band_occl + (1.0 - occl) * band_open
        if o.outline_model == "plane":
            c = cos_falloff(dist / band)[..., None]
            disp_q = (c * ext_p + (1.0 - c) * far_p) * wt[..., None] + ext_e * wt_e[..., None]
        else:
            g = o.outline_follow + (1.0 - o.outline_follow) * cos_falloff(dist / band)
            disp_q = ext_p * (g * wt)[..., None] + ext_e * wt_e[..., None]
        if st.head is not None:
            disp_q = disp_q + self._head_field(st, vhead_t, vt, (hq, wq), q, Kq, wt, pers_q, dist, r_p, r_b)
        field_q = np.concatenate([disp_q, ext_r * wl[..., None]], 2)
        taper = border_taper(hq, wq, max(2.0, 0.04 * max(hq, wq)))
        field_q *= taper[..., None]
        fld = resize(field_q, (h, w))
        # exact values inside the visible mesh; a thin blend band at the mesh boundary
        inner = cv2.erode(known, np.ones((3, 3), np.uint8), iterations=1)
        inner = cv2.GaussianBlur(inner, (0, 0), 1.0) * known
        cin = cv2.GaussianBlur(covf, (0, 0), 1.0) * covf
        # (both weights are 0 off the mesh: the blends run over its bounding box only)
        bx, by, bw, bh = cv2.boundingRect(cov.astype(np.uint8))
        mb = (slice(by, by + bh), slice(bx, bx + bw))
        if kernels_enabled() and fld.dtype == D.dtype == inner.dtype == cin.dtype == np.float32 and fld.flags.c_contiguous:
            from facerig.engines.warp._kernels import mesh_blend

            mesh_blend(fld, D, inner, cin, by, by + bh, bx, bx + bw)  # (the numpy below, in one pass)
        else:
            fb, Db, ib, cb = fld[mb], D[mb], inner[mb][..., None], cin[mb][..., None]
            fb[..., :2] = ib * Db[..., :2] + (1 - ib) * fb[..., :2]
            fb[..., 2:] = cb * Db[..., 2:3] + (1 - cb) * fb[..., 2:]
        sig = max(0.6, 0.012 * F)
        fld[..., 2] = cv2.GaussianBlur(np.ascontiguousarray(fld[..., 2]), (0, 0), sig)
        if o.brow_unfold:  # raised brows move as they are, the lid skin unfolds under them (brows.py)
            unfold_raised_brows(fld, st.verts, vt, st.image, _detected_px(st.params, st.roi[:2], st.k))
        frame_t, keep = self._rigid_glasses(st, target_params, D, covf, fld, vt)
        if frame_t is not None and keep is not None and closing and st.eye_open is not None:
            # next to a rigid frame the lid's motion tapers off (it may not reach behind the
            # frame): pixels that now show the photo's opening of a closing eye, or a lid strip
            # compressed hard (streaks), are lid too: the lid's own colour
            fs = np.stack([ix + 0.5, iy + 0.5], 1) + fld[iy, ix, :2]
            lab_f = st.eye_open[np.clip(np.floor(fs[:, 1]).astype(np.int64), 0, h - 1),
                                np.clip(np.floor(fs[:, 0]).astype(np.int64), 0, w - 1)]
            lab_f = np.where(np.isin(lab_f, closing), lab_f, 0)
            zone = self._lid_zone(st)
            if zone is not None and keep[iy, ix].min() < 0.75:
                ez, (c1, c2) = zone
                side = np.where(np.abs(ix - c1[0]) + np.abs(iy - c1[1]) <= np.abs(ix - c2[0]) + np.abs(iy - c2[1]), 1, 2)
                squeezed = ((keep[iy, ix] < 0.75) & (ez[iy, ix] > 0) & (frame_t[iy, ix] < 0.05)
                            & np.isin(side, closing) & (lab_f == 0))
                lab_f = np.where(squeezed, side, lab_f)
            extra = ~eye_hidden & (lab_f > 0) & (frame_t[iy, ix] < 0.5)
            eye_lab = np.where(extra, lab_f, eye_lab).astype(np.uint8)
            eye_hidden = eye_hidden | extra
        if (frame_t is None or keep is None) and closing and st.eye_open is not None:
            # what a pixel shows is decided by the smoothed field, not the mesh's own
            # correspondence: between shut lids pixels whose field still reaches into the photo's
            # opening showed its white as a light crescent under the lashes (yRpe13BHdKw)
            fs = np.stack([ix + 0.5, iy + 0.5], 1) + fld[iy, ix, :2]
            lab_f = st.eye_open[np.clip(np.floor(fs[:, 1]).astype(np.int64), 0, h - 1),
                                np.clip(np.floor(fs[:, 0]).astype(np.int64), 0, w - 1)]
            extra = ~eye_hidden & np.isin(lab_f, closing)
            if extra.any():
                eye_lab = np.where(extra, lab_f, eye_lab).astype(np.uint8)
                eye_hidden = eye_hidden | extra
        tm["fields"] = time.perf_counter() - t0

        # ---- fill layers (work grid): mirror / inpaint for hidden points, synthesised mouth
        gain_w = np.exp(fld[..., 2:])  # relight gain on the work grid
        fill = np.zeros((h, w, 3), np.float32)
        alpha = np.zeros((h, w), np.float32)
        rng = _rng(generator, o.seed)
        if eye_hidden.any() and st.lid_rgb is not None and st.eye_open is not None:
            # the closing lid over the source's real opening: the lid skin's own colour (its lighter
            # part: not lashes or crease), relit, with the photo's grain
            ey, ex = iy[eye_hidden], ix[eye_hidden]
            which = eye_lab[eye_hidden]
            lab_t = np.zeros((h, w), np.uint8)
            lab_t[ey, ex] = which
            sig = 0.7  # soften the mask's staircase only: the warped lash line next to it stays
            for eye in (1, 2):
                core = (lab_t == eye).astype(np.float32)
                if not core.any():
                    continue
                a_e = np.clip(cv2.GaussianBlur(core, (0, 0), sig) * 2.0, 0, 1)
                a_e = np.maximum(a_e, core)
                zone = a_e > 0.01
                grain = rng.normal(0.0, st.noise, (int(zone.sum()), 1)) if st.noise > 0 else 0.0
                col = (st.lid_rgb[eye - 1][None] + grain) * gain_w[zone]
                a_old = alpha[zone].clip(0, 1)
                a_new = a_e[zone]
                # over an existing fill (mouth, mirror): blend; elsewhere the layer holds the lid
                fill[zone] = np.where(a_old[:, None] > 0, fill[zone] * (1 - a_new[:, None]) + col * a_new[:, None], col)
                alpha[zone] = np.maximum(a_old, a_new)
            hidden = hidden & ~eye_hidden
        # opened wider: weight 0 at 1.08x the source's lid gap, 1 from 1.25x
        widening = [(eye, float(min((r - 1.08) / 0.17, 1.0))) for eye, r in gaps.items() if r > 1.08]
        if widening and st.eye_full is not None and st.sclera_rgb is not None:
            self._fill_wider_eyes(st, vt, widening, gain_w, fill, alpha)
        looking = _gaze_weights(self._gaze_shifts(st, vt), [e for e, _ in widening])
        if looking and st.eye_full is not None and st.sclera_rgb is not None:
            self._fill_gaze(st, vt, looking, gain_w, fill, alpha)
        revealed = hidden.copy()  # what the photo does not show and the fill below provides
        hidden_all = hidden | eye_hidden
        fill_src = np.full((src.shape[0], 2), np.nan, np.float32)  # where each fill's colour comes from
        # what the photo does not show is filled from the face's own visible side, never from the
        # background or hair: (1) the mirrored surface point (the model's left-right symmetry,
        # i.e. texture space) where the photo shows it as face, its shading divided out and the
        # target's put in; (2) else the visible face next to it, reflected across the edge of what
        # is seen (texture, not streaks); (3) else inpainted. The fill is then blended into the
        # warp seamlessly (fill.seamless_offset) after the inpaint below.
        if hidden.any():
            hy, hx = iy[hidden], ix[hidden]
            hid_idx = np.nonzero(hidden)[0]
            ok = np.zeros(hy.size, bool)
            if o.mirror_fill and st.mirror is not None:
                mtri = st.mirror[tri[hidden]]
                msrc = np.einsum("nk,nkc->nc", b[hidden], st.verts[mtri])
                mx = np.clip(msrc[:, 0].astype(np.int64), 0, w - 1)
                my = np.clip(msrc[:, 1].astype(np.int64), 0, h - 1)
                mfi = st.face_index[my, mx]
                ok = (mfi >= 0) & st.inner[my, mx] & (st.zbuf[my, mx] <= msrc[:, 2] + tol)
                ok &= st.front[np.maximum(mfi, 0)]
                if closing and st.eye_open is not None:  # not the other eye's iris either
                    ok &= st.eye_open[my, mx] == 0
                # only the face: the mirrored point of a cheek edge that turns into view is the
                # other cheek's edge, which in a photo often shows hair or background (drawn
                # there it reads as a second face edge)
                key = ("mirror", bool(closing and st.eye_open is not None))
                if key not in st.fill_cache:  # where a mirrored colour may come from, and the nearest such pixel
                    valid = st.inner & face_src
                    if st.skin is not None:
                        valid &= st.skin > 0.35
                    if key[1]:
                        valid &= st.eye_open == 0
                    near_v = None
                    if valid.any():
                        dist_v, lab_v = cv2.distanceTransformWithLabels((~valid).astype(np.uint8), cv2.DIST_L2, 5,
                                                                        labelType=cv2.DIST_LABEL_PIXEL)
                        vy, vx = np.nonzero(valid)
                        pos_v = np.zeros((int(lab_v.max()) + 1, 2), np.float64)
                        pos_v[lab_v[vy, vx]] = np.stack([vx + 0.5, vy + 0.5], 1)
                        near_v = (dist_v, pos_v[lab_v])
                    st.fill_cache[key] = (valid, near_v)
                valid, near_v = st.fill_cache[key]
                ok &= valid[my, mx]
                # a mirrored point just outside what the photo shows as face (the other cheek's
                # edge is at its silhouette, or hair covers it): the nearest face point next to it
                # on that side (within 8 % of the face), so the fill keeps the other cheek's texture
                near_ok = ~ok & (mfi >= 0) & st.front[np.maximum(mfi, 0)]
                if near_ok.any() and near_v is not None:
                    near_ok &= near_v[0][my, mx] < 0.08 * F
                    msrc[near_ok, :2] = near_v[1][my[near_ok], mx[near_ok]]
                    ok |= near_ok
                if ok.any():
                    col = sample(st.image, msrc[ok, :2])
                    s_m = np.einsum("nk,nkc->nc", b[hidden][ok], st.shade[mtri[ok]]).mean(1)
                    rm = np.clip(s_t[hidden][ok].mean(1) / np.maximum(s_m, 1e-3), lo_c, hi_c)[:, None] * tint
                    fill[hy[ok], hx[ok]] = col * rm
                    alpha[hy[ok], hx[ok]] = 1.0
                    fill_src[hid_idx[ok]] = msrc[ok, :2]
            if (~ok).any():
                got = self._reflect_fill(st, src, ratio, hidden, face_src, iy, ix, hy[~ok], hx[~ok], fill, alpha)
                fill_src[hid_idx[~ok][got >= 0]] = src[got[got >= 0], :2]
                left = got < 0
                if left.any():
                    alpha[hy[~ok][left], hx[~ok][left]] = 2.0  # marker: inpaint later
        mouth_w = 0.0
        mouth_kind = ""
        if o.synth_mouth and r_mouth >= 0:
            ms = st.mouth
            xy_t = vt[:, :2] + ms.delta if ms is not None and ms.delta is not None else vt[:, :2]
            op_t = mouth_opening(xy_t)
            mw = mouth_width(xy_t)
            box = target_box(xy_t, (h, w)) if ms is not None else (0, 0, 0, 0)
            inter = None
            if op_t > max(1.5, 0.03 * mw) and ms is not None and box[2] > box[0] and box[3] > box[1]:
                if driving is not None:  # reenactment: the driving frame's own interior
                    inter = self._driving_mouth(st, driving, xy_t, box)
                    mouth_kind = "driving" if inter is not None else ""
                    mouth_w = float(np.clip((op_t / mw - 0.03) / 0.03, 0, 1)) if inter is not None else 0.0
                if inter is None and ms.real:  # the photo's own teeth and cavity, moved with the lips
                    mouth_w = float(np.clip((op_t / max(st.opening, 1e-3) - 1.02) / 0.1, 0, 1))
                    if mouth_w > 0:
                        # (what opens between the teeth: a shaded cavity with a tongue when wide)
                        cav = synthesize_mouth(xy_t, box, st.lip_rgb, st.skin_rgb, st.noise, rng, blur=ms.blur,
                                               teeth=False, lip_dark=ms.lip_dark)
                        inter = transfer_interior(st.image, ms.xy, xy_t, box, 1.0, ms.cavity, cavity_img=cav)
                        mouth_kind = "source"
                if inter is None and not ms.real:  # last resort: procedural
                    mouth_w = 1.0 if st.opening < 1.0 else float(np.clip((op_t / st.opening - 1.15) / 0.35, 0, 1))
                    if mouth_w > 0:
                        inter = synthesize_mouth(xy_t, box, st.lip_rgb, st.skin_rgb, st.noise, rng,
                                                 teeth_rgb=st.teeth_rgb, cavity_rgb=st.cavity_rgb, blur=ms.blur,
                                                 lip_dark=ms.lip_dark)
                        mouth_kind = "synthetic"
            if inter is not None and mouth_w > 0 and ms is not None:
                bx0, by0, bx1, by1 = box
                a_m = (interior_alpha(xy_t, box, ms.blur) * mouth_w)[..., None]
                rl = gain_w[by0:by1, bx0:bx1]
                region = fill[by0:by1, bx0:bx1]
                a_old = alpha[by0:by1, bx0:bx1, None].clip(0, 1)
                # where nothing else fills, the layer holds the interior itself (its soft edge
                # is alpha's job; blending towards the empty layer would draw a black rim)
                fill[by0:by1, bx0:bx1] = np.where(a_old > 0, region * (1 - a_m) + inter * rl * a_m, inter * rl)
                alpha[by0:by1, bx0:bx1] = np.where(
                    a_m[..., 0] > 0, np.maximum(a_m[..., 0], a_old[..., 0] * (1 - a_m[..., 0])),
                    alpha[by0:by1, bx0:bx1])
            else:
                mouth_w = 0.0
        tm["fill"] = time.perf_counter() - t0

        # ---- inpaint what neither the source nor its mirror saw (work grid)
        need = alpha >= 1.5
        warped_w: np.ndarray = fill  # replaced below wherever it is read (alpha.any())
        warp_raw = None  # the work grid's own warp of the photo (also what _compose relights)
        if alpha.any():
            warp_raw = _warp_work(st, fld)
            warped_w = apply_gain(warp_raw, gain_w)
        if need.any():
            base = np.where(alpha[..., None] > 0, fill, warped_w)
            m8 = cv2.dilate(need.astype(np.uint8), np.ones((3, 3), np.uint8))
            u8 = np.clip(base * 255, 0, 255).astype(np.uint8)
            inp = cv2.inpaint(u8, m8, max(3.0, 0.02 * F), cv2.INPAINT_TELEA).astype(np.float32) / 255
            fill = np.where(need[..., None], inp, fill)
            alpha = np.where(need, 1.0, alpha)
        if revealed.any() and alpha.any():
            # the revealed fill meets the warp without a seam: its brightness and tint follow the
            # visible face around it (Poisson-like membrane correction); mouth and lids untouched
            reg = np.zeros((h, w), bool)
            reg[iy[revealed], ix[revealed]] = True
            if mouth_w > 0:
                sel_m = region_of == r_mouth
                reg[iy[sel_m], ix[sel_m]] = False
            reg &= alpha >= 1.0
            vis_face = np.zeros((h, w), bool)
            seen_face = ~hidden_all & face_src[sy, sx]
            vis_face[iy[seen_face], ix[seen_face]] = True
            sig_t = max(0.6, 0.012 * F)
            if frame_t is not None:  # not the glasses' frame (nor its blurred halo): its rim was
                # copied into a revealed cheek next to it (a doubled rim) and darkened the membrane
                r_f = int(np.ceil(2.0 * sig_t)) + 1
                gb = st.glasses.box if st.glasses is not None and st.glasses.box is not None else (0, h, 0, w)
                ya, yb, xa, xb = max(0, gb[0] - r_f), min(h, gb[1] + r_f), max(0, gb[2] - r_f), min(w, gb[3] + r_f)
                near_f = cv2.dilate((frame_t[ya:yb, xa:xb] > 0.3).astype(np.uint8), np.ones((2 * r_f + 1, 2 * r_f + 1), np.uint8))
                vis_face[ya:yb, xa:xb] &= near_f == 0
            fill = seamless_offset(fill, warped_w, reg, vis_face)
            if o.reveal_texture and reg.any():  # its colour from the face next to it, its texture too
                cen = (vt[:, :2].min(0) + vt[:, :2].max(0)) / 2
                ty_, tx_, col_t = texture_fill(warped_w, reg, vis_face, cen, sig_t)
                fill[ty_, tx_] = col_t
        if eye_hidden.any() and alpha.any() and st.lid_rgb is not None:
            # the shut lid's flat colour meets the lid skin warped round it without a step: its
            # brightness follows that skin (a membrane from the region's edge, at most 0.12 a
            # channel); the lid colour alone (the lighter halves of the skin above and below) read
            # as a flat band along shut lids (077559: grey-brown, pexels-andrea: lighter)
            reg_l = np.zeros((h, w), bool)
            reg_l[iy[eye_hidden], ix[eye_hidden]] = True
            reg_l &= alpha >= 1.0
            anc = np.zeros((h, w), bool)
            seen_l = ~hidden_all
            anc[iy[seen_l], ix[seen_l]] = True
            fill = seamless_offset(fill, warped_w, reg_l, anc & ~reg_l, max_step=0.12)
        if frame_t is not None and alpha.any():  # the glasses' frame stays on top of every fill
            alpha = np.where(alpha <= 1.0, alpha * (1.0 - frame_t), alpha)
        if alpha.any():
            # outside the fill regions the fill layer holds the plain warp, so softened edges blend
            # towards the right colours (not towards black)
            np.copyto(fill, warped_w, where=~(alpha[..., None] > 0))  # (in place: np.where's copy was 1-2 ms)
            # soft edges of the fill (hidden regions) without eating into synthesised mouths
            alpha = np.maximum(cv2.GaussianBlur(alpha, (0, 0), 0.8), alpha * (alpha < 1))
            alpha = np.clip(alpha, 0, 1)
        tm["inpaint"] = time.perf_counter() - t0

        out = self._compose(st, fld, fill, alpha, gain_w, warp_raw)
        tm["compose"] = time.perf_counter() - t0
        self.last_timings = tm
        if return_layers:
            rev_map = np.zeros((h, w), bool)
            rev_map[iy[revealed], ix[revealed]] = True
            src_map = np.full((h, w, 2), np.nan, np.float32)
            src_map[iy[revealed], ix[revealed]] = fill_src[revealed]
            self.last_layers = {"field": fld, "fill": fill, "alpha": alpha, "mouth_weight": mouth_w,
                                "mouth_kind": mouth_kind,
                                "hidden_fraction": float(hidden.mean()) if hidden.size else 0.0,
                                # the tearing measure (fill.tearing_fraction): revealed pixels, the
                                # work-grid position their colour came from, and the source face
                                "revealed": rev_map,
                                "colour_source": colour_sources(rev_map, src_map, fld[..., :2]),
                                "source_face": face_src}
        return out

    # ------------------------------------------------------------------------------------------
    @staticmethod
    def _beard_shading(st: WarpSource) -> tuple[np.ndarray, float] | None:
        """Per source (cached): the bearded face's re-fitted source luminance shading per vertex and
        its weight (:func:`.relight.beard_source_shading`), None for a face without a beard."""
        if "beard_shading" not in st.fill_cache:
            from facerig.engines.warp.relight import beard_source_shading
            from facerig.render.camera import pose_vertices
            from facerig.render.raster import vertex_normals
            from facerig.render.shading import sh_basis

            res = None
            skin_id = st.regions.get("skin", -2)
            if skin_id >= 0 and st.verts.shape[0] > 152:
                p = st.params
                with torch.no_grad():
                    v = st.model(p.identity, p.expression, p.jaw_pose)
                    world = pose_vertices(v, p.rotation.to(v.dtype))
                    basis = sh_basis(vertex_normals(world, st.model.faces.long()))[0].double().numpy()
                h, w = st.work_hw
                xi = np.clip(st.verts[:, 0].astype(np.int64), 0, w - 1)
                yi = np.clip(st.verts[:, 1].astype(np.int64), 0, h - 1)
                vis = st.zbuf[yi, xi] <= st.verts[:, 2] + 0.015 * st.face_px
                vreg = np.full(st.verts.shape[0], -1, np.int64)
                vreg[st.faces.ravel()] = np.repeat(st.model.face_region.cpu().numpy(), 3)
                lab_l = cv2.cvtColor(st.image, cv2.COLOR_RGB2Lab)[..., 0][yi, xi]
                lum = st.image.mean(2)[yi, xi].astype(np.float64)
                shade, wgt = beard_source_shading(basis, p.light[0].double().cpu().numpy(), lum, lab_l,
                                                  skin_lightness(st.skin_rgb), vis & (vreg == skin_id),
                                                  st.verts[:, 1] > st.verts[1, 1])
                res = (shade, wgt) if shade is not None else None
            st.fill_cache["beard_shading"] = res
        return st.fill_cache["beard_shading"]

    # ------------------------------------------------------------------------------------------
    @staticmethod
    def _lid_zone(st: WarpSource) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]] | None:
        """Per source (cached): the eyes' openings grown by 6 % of the face (the lids' reach behind
        glasses, uint8 mask) and the two openings' centres (x, y); None without both openings."""
        if "lid_zone" not in st.fill_cache:
            zone = None
            if st.eye_full is not None:
                cs = []
                for eye in (1, 2):
                    ey, ex = np.nonzero(st.eye_full == eye)
                    cs.append(np.array([ex.mean(), ey.mean()]) if ey.size else None)
                if cs[0] is not None and cs[1] is not None:
                    r = max(1, int(round(0.06 * st.face_px)))
                    ez = cv2.dilate((st.eye_full > 0).astype(np.uint8),
                                    cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
                    zone = (ez, (cs[0], cs[1]))
            st.fill_cache["lid_zone"] = zone
        return st.fill_cache["lid_zone"]

    # ------------------------------------------------------------------------------------------
    @staticmethod
    def _frame_px(st: WarpSource) -> np.ndarray:
        """(H, W) bool per source (cached): the glasses frame's pixels (all False without glasses)."""
        if "frame_px" not in st.fill_cache:
            g = st.glasses
            st.fill_cache["frame_px"] = (g.frame > 0.3 if g is not None and g.present
                                         else np.zeros(st.work_hw, bool))
        return st.fill_cache["frame_px"]

    @staticmethod
    def _rigid_glasses(st: WarpSource, target_params: Any, D: np.ndarray, covf: np.ndarray,
                       fld: np.ndarray, vt: np.ndarray | None = None) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Glasses move rigidly with the head: where an edit changes the expression, the frame's
        target pixels take the pose part of the motion only (``D[..., :2] - D[..., 3:5]``: the
        displacement minus its expression part, i.e. the rigid motion of the head in 3D), so a brow
        raise, closing lids or a smile do not bend the frame; a pose-only edit already moves it
        rigidly. Next to the frame the expression motion tapers off (``glasses_taper``): skin that
        moves away from the frame stretches rather than sample the frame a second time (what the
        frame hid is not in the photo). ``fld`` is changed in place; returns the frame's soft
        target mask (kept on top of every fill, pose-only edits included: a cheek revealed by a
        turn was filled over the temple arm) and the fraction of its expression motion each pixel
        kept (both None without glasses; the fraction None without an expression change)."""
        g = st.glasses
        if g is None or not g.present:
            return None, None
        tp = target_params
        same = tp.expression.shape == st.params.expression.shape and torch.equal(tp.expression, st.params.expression)
        if same and tp.jaw_pose is not None and st.params.jaw_pose is not None:
            same = torch.equal(tp.jaw_pose, st.params.jaw_pose)
        h, w = st.work_hw
        if g.box is None:  # per source: the frame's reach
            fy, fx = np.nonzero(g.frame > 1e-3)
            if fy.size == 0:
                return None, None
            pad = int(0.12 * st.face_px) + 2
            g.box = (max(0, int(fy.min()) - pad), min(h, int(fy.max()) + pad + 1),
                     max(0, int(fx.min()) - pad), min(w, int(fx.max()) + pad + 1))
        y0, y1, x0, x1 = g.box
        ys, xs = np.mgrid[y0:y1, x0:x1]
        p = np.stack([xs + 0.5, ys + 0.5], 2).astype(np.float32)
        cov = covf[y0:y1, x0:x1] > 0
        d_rigid = D[y0:y1, x0:x1, :2] - D[y0:y1, x0:x1, 3:5]
        sp = np.clip(np.floor(p + d_rigid).astype(np.int64), 0, [w - 1, h - 1])
        m_t = np.where(cov, g.frame[sp[..., 1], sp[..., 0]], 0.0).astype(np.float32)
        if not (m_t > 1e-3).any():
            return None, None
        m_t = (np.clip(cv2.GaussianBlur(cv2.dilate(m_t, np.ones((3, 3), np.uint8)), (0, 0), 0.7), 0, 1) * cov).astype(np.float32)
        if same:  # a pose-only edit moves the frame rigidly already: only where it lands (kept over the fills)
            if vt is not None:
                m_t = WarpEngine._frame_in_front(st, vt, fld, m_t)
            out = np.zeros((h, w), np.float32)
            out[y0:y1, x0:x1] = m_t
            return out, None
        sub = fld[y0:y1, x0:x1, :2]
        # the lids inside the lens keep nearly all their motion (closing lids reach the rim: their
        # skin is plain, a strong compression there does not show), the brows above the frame
        # stretch their skin twice (brow hair compressed harder reads as streaks)
        stretch: float | np.ndarray = 2.0
        zone = WarpEngine._lid_zone(st)
        if zone is not None:
            near = cv2.GaussianBlur(zone[0][sp[..., 1], sp[..., 0]].astype(np.float32), (0, 0),
                                    max(1.0, 0.03 * st.face_px))
            stretch = 2.0 - 0.85 * np.clip(near, 0.0, 1.0)
        lam = glasses_taper(m_t, sub - d_rigid, stretch=stretch)
        sub[:] = d_rigid + lam[..., None] * (sub - d_rigid)
        out = np.zeros((h, w), np.float32)
        out[y0:y1, x0:x1] = m_t
        keep = np.ones((h, w), np.float32)
        keep[y0:y1, x0:x1] = np.where(cov, lam, 1.0)
        return out, keep

    @staticmethod
    def _frame_in_front(st: WarpSource, vt: np.ndarray, fld: np.ndarray, m_t: np.ndarray) -> np.ndarray:
        """A head turn: the frame stays in front of the nose. Each source frame pixel on the mesh is
        carried with its surface point to the target (``vt``) and splatted there; where the warp
        shows the nose there, nearer (in the source) than the frame's own surface point by twice the
        occlusion tolerance, the splat's backward flow replaces the field (``fld``, in place) - the
        nose's side turning behind its ridge took the rim lying in front of it along, and the rim
        broke where the nose crossed it (pexels-daniel-xavier at yaw -20). Returns the frame's
        target mask on its box (``m_t``, raised to the splat where it was put)."""
        g = st.glasses
        y0, y1, x0, x1 = g.box
        if "frame_src" not in st.fill_cache:  # per source: the frame's pixels on the mesh, barycentrics
            fy, fx = np.nonzero((g.frame > 0.02) & (st.face_index >= 0))
            fi = st.face_index[fy, fx]
            tri = st.verts[st.faces[fi], :2]
            q = np.stack([fx + 0.5, fy + 0.5], 1).astype(np.float64)
            a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
            den = (b[:, 1] - c[:, 1]) * (a[:, 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (a[:, 1] - c[:, 1])
            den = np.where(np.abs(den) < 1e-9, 1e-9, den)
            l0 = ((b[:, 1] - c[:, 1]) * (q[:, 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (q[:, 1] - c[:, 1])) / den
            l1 = ((c[:, 1] - a[:, 1]) * (q[:, 0] - c[:, 0]) + (a[:, 0] - c[:, 0]) * (q[:, 1] - c[:, 1])) / den
            bary = np.stack([l0, l1, 1 - l0 - l1], 1)
            st.fill_cache["frame_src"] = (q, st.faces[fi], bary, g.frame[fy, fx])
        q, tri_v, bary, val = st.fill_cache["frame_src"]
        if q.shape[0] == 0:
            return m_t
        t = np.einsum("nk,nkc->nc", bary, vt[tri_v, :2])
        m2, fl2 = splat_frame(val, q, t, (y0, y1, x0, x1))
        sub = fld[y0:y1, x0:x1, :2]
        # only where the warp shows a part of the face in front of the frame's own surface point
        # there (the nose: nearer in the source by more than the occlusion tolerance); elsewhere the
        # warp already draws the frame, and the splat is sparse where a turn compresses or
        # stretches it (speckles)
        h, w = st.work_hw
        ys, xs = np.mgrid[y0:y1, x0:x1]
        def at(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return (np.clip(np.floor(ys + 0.5 + f[..., 1]).astype(np.int64), 0, h - 1),
                    np.clip(np.floor(xs + 0.5 + f[..., 0]).astype(np.int64), 0, w - 1))
        tol = 2.0 * WarpOptions.occlusion_tol * st.face_px
        sw, sf = at(sub), at(fl2)
        put = (m2 > m_t) & (st.zbuf[sw] > st.zbuf[sf] + tol)
        r_nose = st.regions.get("nose", -2)
        if r_nose >= 0:  # (the occluder is the nose: at a cheek's edge the splat is sparse, speckles)
            fi_w = st.face_index[sw]
            put &= (fi_w >= 0) & (st.model.face_region.cpu().numpy()[np.maximum(fi_w, 0)] == r_nose)
        if not put.any():
            return m_t
        put = cv2.dilate(put.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & (m2 > m_t)
        a2 = m2[put][:, None]
        sub[put] = a2 * fl2[put] + (1.0 - a2) * sub[put]
        return np.where(put, np.maximum(m_t, m2), m_t)

    # ------------------------------------------------------------------------------------------
    @staticmethod
    def _reflect_fill(st: WarpSource, src: np.ndarray, ratio: np.ndarray, hidden: np.ndarray,
                      face_src: np.ndarray, iy: np.ndarray, ix: np.ndarray, ty: np.ndarray, tx: np.ndarray,
                      fill: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """Fill target pixels (ty, tx) whose source point is not seen from the visible face next
        to them: the nearest covered target pixel that is seen and whose source point lies on the
        face (``face_src``: not background or hair), reflected across it (the pixel as far inside
        the seen face as the hidden one is outside it; the nearest one itself where that is not
        seen face), relit by that pixel's own ratio. A reflection keeps the skin's texture where a
        nearest-pixel copy drew streaks, and never reaches the background the mesh overlaps
        beyond a cheek that was edge-on in the photo. Returns, per pixel, the covered-pixel index
        its colour came from (-1: none within reach, left to the inpaint)."""
        h, w = st.work_hw
        F = st.face_px
        out = np.full(ty.size, -1, np.int64)
        if ty.size == 0:
            return out
        sx = np.clip(src[:, 0].astype(np.int64), 0, w - 1)
        sy = np.clip(src[:, 1].astype(np.int64), 0, h - 1)
        good = ~hidden & face_src[sy, sx]
        pad = int(0.15 * F) + 2
        by0, by1 = max(0, int(ty.min()) - pad), min(h, int(ty.max()) + pad + 1)
        bx0, bx1 = max(0, int(tx.min()) - pad), min(w, int(tx.max()) + pad + 1)
        inbox = good & (iy >= by0) & (iy < by1) & (ix >= bx0) & (ix < bx1)
        if not inbox.any():
            return out
        idx_box = np.full((by1 - by0, bx1 - bx0), -1, np.int64)
        idx_box[iy[inbox] - by0, ix[inbox] - bx0] = np.nonzero(inbox)[0]
        seen = (idx_box < 0).astype(np.uint8)
        _, lab = cv2.distanceTransformWithLabels(seen, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
        zy, zx = np.nonzero(seen == 0)
        near = np.full((int(lab.max()) + 1, 2), -1, np.int64)
        near[lab[zy, zx]] = np.stack([zy, zx], 1)
        q = near[lab[ty - by0, tx - bx0]]
        has = q[:, 0] >= 0
        # reflected across the nearest seen face pixel, a little further in (past its edge)
        ry = np.clip(2 * q[:, 0] - (ty - by0) + np.sign(q[:, 0] - (ty - by0)), 0, by1 - by0 - 1)
        rx = np.clip(2 * q[:, 1] - (tx - bx0) + np.sign(q[:, 1] - (tx - bx0)), 0, bx1 - bx0 - 1)
        j = np.where(has, idx_box[ry, rx], -1)
        j = np.where((j < 0) & has, idx_box[np.maximum(q[:, 0], 0), np.maximum(q[:, 1], 0)], j)
        ok = j >= 0
        if ok.any():
            fill[ty[ok], tx[ok]] = sample(st.image, src[j[ok], :2]) * ratio[j[ok]]
            alpha[ty[ok], tx[ok]] = 1.0
            out[ok] = j[ok]
        return out

    # ------------------------------------------------------------------------------------------
    @staticmethod
    def _lid_gap_ratios(st: WarpSource, vt: np.ndarray) -> dict[int, float]:
        """Target / source lid gap (MediaPipe vertices 159/145, 386/374) per eye (1 = subject's
        right, 2 = left); empty for a model not on MediaPipe's topology."""
        if vt.shape[0] < 478 or st.verts.shape[0] < 478:
            return {}
        out = {}
        for eye, (up, lo) in ((1, (159, 145)), (2, (386, 374))):
            g_s = float(np.linalg.norm(st.verts[up, :2] - st.verts[lo, :2]))
            if g_s > 1.0:
                out[eye] = float(np.linalg.norm(vt[up, :2] - vt[lo, :2])) / g_s
        return out

    @classmethod
    def _gaze_down_lids(cls, st: WarpSource, target_params: Any, vt: np.ndarray,
                        v_head: np.ndarray | None = None) -> np.ndarray:
        """A look down (or less of one): the iris moves with the model's ``eyeLookDown`` shapes, the
        rest of the eye (lids, corners, lid skin) by ``GAZE_DOWN_LIDS`` of their motion. The
        blendshape lowers the upper lid twice as far as the iris (its lid gap 38 % of the open one:
        half-closed eyes on every photo); a real upper lid follows the top of the iris (gap about
        70 %). The same for a fitted look down that an edit drops (a driver's or reference's
        expression without one; presets keep the photo's gaze since 2026-12-03): the lids rose by
        the shape's full lid motion (077559 under raise_brows: a band of white above the iris)."""
        names = tuple(getattr(target_params, "expression_names", ()))
        if vt.shape[0] < 478 or tuple(getattr(st.params, "expression_names", ())) != names:
            return vt
        idx = [names.index(n) for n in ("eyeLookDown_L", "eyeLookDown_R") if n in names]
        if not idx:
            return vt
        e_t = target_params.expression
        e_s = st.params.expression.to(e_t)
        diff = e_t[0, idx] - e_s[0, idx]
        if float(diff.abs().max()) < 1e-4:
            return vt
        basis = getattr(st.model, "expression_basis", None)
        if v_head is not None and isinstance(basis, torch.Tensor) and basis.shape[1] == vt.shape[0]:
            # the shapes are linear in the head frame and the screen is (nearly) an affine map of
            # it: the lids' share of the motion without a second pass through the model and camera
            # (the affine map fitted to this frame's vertices; exact for the weak-perspective camera)
            key = ("look_down_basis", tuple(idx))
            if key not in st.fill_cache:
                st.fill_cache[key] = basis[idx].double().cpu().numpy()
            dv = -(1.0 - GAZE_DOWN_LIDS) * np.einsum("k,kvc->vc", diff.double().cpu().numpy(), st.fill_cache[key])
            X = np.concatenate([v_head, np.ones((v_head.shape[0], 1))], 1)
            A = np.linalg.lstsq(X, vt[:, :3], rcond=None)[0]
            v_l = vt.copy()
            v_l[:, :3] += dv @ A[:3]
        else:
            e_l = e_t.clone()
            e_l[0, idx] = e_t[0, idx] - (1.0 - GAZE_DOWN_LIDS) * diff
            v_l = cls._geometry(st.model, target_params.replace(expression=e_l), st.roi, st.k)[0]
        v_l[468:478] = vt[468:478]
        return v_l

    @staticmethod
    def _gaze_shifts(st: WarpSource, vt: np.ndarray) -> dict[int, float]:
        """Per eye, how far the iris moves WITHIN its opening (the iris centre's motion minus the
        eye corners' mean motion, not the contour's: lids that open move that), in iris radii;
        only for models with iris points."""
        if vt.shape[0] < 478 or st.verts.shape[0] < 478:
            return {}
        model_src = st.verts[:, :2] - (st.lid_delta if st.lid_delta is not None else 0.0)
        out = {}
        for eye, iris in ((1, 468), (2, 473)):
            # (the corners' motion from the source's own corners: vt carries the detected lids'
            # offsets, which the fitted contour does not, and the contour's mean moves with lids
            # that open or close)
            cn = list(_EYE_CORNERS[eye])
            rel = (vt[iris, :2] - model_src[iris]) - (vt[cn, :2] - st.verts[cn, :2]).mean(0)
            r = float(np.linalg.norm(model_src[iris + 1:iris + 5] - model_src[iris], axis=1).mean())
            if r > 0.5:
                out[eye] = float(np.linalg.norm(rel)) / r
        return out

    @staticmethod
    def _fill_gaze(st: WarpSource, vt: np.ndarray, looking: list[tuple[int, float]], gain_w: np.ndarray,
                   fill: np.ndarray, alpha: np.ndarray) -> None:
        """A gaze edit: the photo's iris disc moves rigidly by the iris's own shift (the mesh
        alone drags its surroundings with it, so a full look to the side moved the iris 2-5 % of
        the eye distance), clipped to the photo's visible opening; where it leaves, the photo's eye
        with the iris inpainted from the white round it (:meth:`_bare_eye`)."""
        from facerig.detect.landmark_sets import LEFT_EYE, RIGHT_EYE

        assert st.eye_full is not None and st.sclera_rgb is not None
        h, w = st.work_hw
        model_src = st.verts[:, :2] - (st.lid_delta if st.lid_delta is not None else 0.0)
        for eye, wgt in looking:
            loop = list(RIGHT_EYE if eye == 1 else LEFT_EYE)
            iris = 468 if eye == 1 else 473
            c_s = model_src[iris]
            r = float(np.linalg.norm(model_src[iris + 1:iris + 5] - c_s, axis=1).mean())
            shift = vt[iris, :2] - c_s
            # how the eye as a whole moves: its corners (the contour's mean moves with lids that
            # open or close, and a look down lowers the upper lid most)
            cn = list(_EYE_CORNERS[eye])
            m_s = (vt[cn, :2] - st.verts[cn, :2]).mean(0)
            rel = shift - m_s
            n_rel = float(np.linalg.norm(rel))
            if r <= 1.0 or n_rel < 1e-3:
                continue
            m = np.zeros((h, w), np.uint8)
            cv2.fillPoly(m, [np.round(vt[loop, :2] * 4).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=2)
            ys, xs = np.nonzero(m)
            if ys.size < 4:
                continue
            p = np.stack([xs + 0.5, ys + 0.5], 1)
            # the new disc: the photo's iris moved rigidly
            src_i = p - shift
            in_new = np.linalg.norm(src_i - c_s, axis=1) < r
            pi = np.clip(np.floor(src_i).astype(np.int64), 0, [w - 1, h - 1])
            # the old disc as the eye's own motion carries it, where the new one does not cover it
            q = p - m_s
            qi = np.clip(np.floor(q).astype(np.int64), 0, [w - 1, h - 1])
            in_eye = st.eye_full[qi[:, 1], qi[:, 0]] == eye  # the photo's opening, carried along
            ok_i = in_new & in_eye & (st.eye_full[pi[:, 1], pi[:, 0]] == eye)
            vac = ~in_new & in_eye & (np.linalg.norm(q - c_s, axis=1) < 1.08 * r)
            sel = ok_i | vac
            if not sel.any():
                continue
            col = np.empty((int(sel.sum()), 3), np.float32)
            oi, ov = ok_i[sel], vac[sel]
            # what the disc leaves: the photo's eye with its iris inpainted from the white and lids
            # round it (carried with the eye), so the white there has the shading of the white next
            # to it; the white mirrored across the disc's trailing edge (or the white's one colour
            # where the mirror left the opening) painted flat pale patches over a 3/4 view's far
            # eye corner and a shadowed inner corner
            if ov.any():
                col[ov] = sample(WarpEngine._bare_eye(st, eye, c_s, r), q[sel][ov])
            if oi.any():
                col[oi] = sample(st.image, src_i[sel][oi])
            ys_s, xs_s = ys[sel], xs[sel]
            col = col * gain_w[ys_s, xs_s]
            lay = np.zeros((h, w), np.float32)
            lay[ys_s, xs_s] = 1.0
            a = (cv2.GaussianBlur(lay, (0, 0), 0.7)[ys_s, xs_s] * wgt).clip(0, 1)
            a_old = alpha[ys_s, xs_s].clip(0, 1)
            base = np.where(a_old[:, None] > 0, fill[ys_s, xs_s], col)
            fill[ys_s, xs_s] = base * (1 - a[:, None]) + col * a[:, None]
            alpha[ys_s, xs_s] = np.maximum(a_old, a)

    @staticmethod
    def _bare_eye(st: WarpSource, eye: int, c: np.ndarray, r: float) -> np.ndarray:
        """The work image with the eye's iris disc (1.15 radii, inside the detected opening)
        inpainted from what surrounds it: the eyeball's white as it would show without the iris
        (cached per source and eye)."""
        key = ("bare_eye", eye)
        if key not in st.fill_cache:
            assert st.eye_full is not None
            h, w = st.work_hw
            disc = np.zeros((h, w), np.uint8)
            cv2.circle(disc, (int(round(c[0] * 4)), int(round(c[1] * 4))), int(round(1.15 * r * 4)), 1, -1, shift=2)
            m = cv2.dilate(((disc > 0) & (st.eye_full == eye)).astype(np.uint8), np.ones((3, 3), np.uint8))
            out = st.image
            if m.any():
                rad = max(2.0, 0.5 * r)
                bx, by, bw, bh = cv2.boundingRect(m)
                pad = int(rad) + 2
                y0, y1, x0, x1 = max(0, by - pad), min(h, by + bh + pad), max(0, bx - pad), min(w, bx + bw + pad)
                u8 = np.clip(st.image[y0:y1, x0:x1] * 255 + 0.5, 0, 255).astype(np.uint8)
                mb = m[y0:y1, x0:x1]
                inp = cv2.inpaint(u8, mb, rad, cv2.INPAINT_TELEA)
                out = st.image.copy()
                out[y0:y1, x0:x1][mb > 0] = inp[mb > 0].astype(np.float32) / 255
            st.fill_cache[key] = out
        return st.fill_cache[key]

    @staticmethod
    def _fill_wider_eyes(st: WarpSource, vt: np.ndarray, widening: list[tuple[int, float]], gain_w: np.ndarray,
                         fill: np.ndarray, alpha: np.ndarray) -> None:
        """An eye opened wider: its iris keeps its shape (the mesh would stretch it with the lids).
        Inside the target's eye opening the photo's eye is moved rigidly with the iris; what that
        brings in from outside the photo's real opening (the lid skin above/below it) is the white
        of the eye, which the wider lids now show."""
        from facerig.detect.landmark_sets import LEFT_EYE, RIGHT_EYE

        assert st.eye_full is not None and st.sclera_rgb is not None
        h, w = st.work_hw
        model_src = st.verts[:, :2] - (st.lid_delta if st.lid_delta is not None else 0.0)
        for eye, wgt in widening:
            loop = RIGHT_EYE if eye == 1 else LEFT_EYE
            iris = 468 if eye == 1 else 473
            m = np.zeros((h, w), np.uint8)
            cv2.fillPoly(m, [np.round(vt[list(loop), :2] * 4).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=2)
            ys, xs = np.nonzero(m)
            if ys.size < 4:
                continue
            shift = vt[iris, :2] - model_src[iris]
            pos = np.stack([xs + 0.5, ys + 0.5], 1) - shift
            px = np.clip(np.floor(pos).astype(np.int64), 0, [w - 1, h - 1])
            inside = st.eye_full[px[:, 1], px[:, 0]] == eye
            # white only where the lids moved away: inside the target's contour but outside the
            # source's (carried with the eye); elsewhere the photo shows something else there (hair
            # over a far eye's corner, a contour that misses the photo's) and the warp is kept (a
            # lilac crescent was painted over hair and lower-lid skin)
            lp = list(loop)
            m_src = np.zeros((h, w), np.uint8)
            moved = model_src[lp] + (vt[lp, :2] - model_src[lp]).mean(0)
            cv2.fillPoly(m_src, [np.round(moved * 4).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=2)
            # Below the iris the lids move away from nothing (a look up raises the lower lid less
            # than the iris): there the photo's eye moved with the iris brought its lower lash line
            # up as a dark line under the iris, and the white between it and the lower lid drew a
            # thin pale line along it; the lower lid's own warp (the photo's lower white moved with
            # the lid) is kept there, the rigid move only for the iris disc itself
            upper = (ys + 0.5) < vt[iris, 1]
            if model_src.shape[0] >= 478:
                r_i = float(np.linalg.norm(model_src[iris + 1:iris + 5] - model_src[iris], axis=1).mean())
                inside &= upper | (np.linalg.norm(pos - model_src[iris], axis=1) < r_i)
            keep = inside | ((m_src[ys, xs] == 0) & upper)  # (and the iris the photo's lids covered, below)
            # the white in the lids' shadow: darker towards the contour
            dist = cv2.distanceTransform(m, cv2.DIST_L2, 3)[ys, xs]
            gap = float(np.linalg.norm(vt[159 if eye == 1 else 386, :2] - vt[145 if eye == 1 else 374, :2]))
            shade = 0.72 + 0.28 * np.clip(dist / max(1.0, 0.3 * gap), 0.0, 1.0)
            col = np.where(inside[:, None], sample(st.image, pos), st.sclera_rgb[eye - 1][None] * shade[:, None])
            if model_src.shape[0] >= 478:
                # the part of the iris the photo's lids covered is iris, not white (it painted a
                # white wedge over the iris): the iris mirrored about its centre where the photo
                # shows that, else the iris's own mean colour
                ring = list(range(iris + 1, iris + 5))
                c_s = model_src[iris]
                r = float(np.linalg.norm(model_src[ring] - c_s, axis=1).mean())
                in_iris = ~inside & (np.linalg.norm(pos - c_s, axis=1) < 0.95 * r)
                if r > 1.0 and in_iris.any():
                    mir = pos[in_iris].copy()
                    mir[:, 1] = 2 * c_s[1] - mir[:, 1]
                    mp = np.clip(np.floor(mir).astype(np.int64), 0, [w - 1, h - 1])
                    seen = st.eye_full[mp[:, 1], mp[:, 0]] == eye
                    ys_i, xs_i = np.mgrid[int(c_s[1] - r):int(c_s[1] + r) + 1, int(c_s[0] - r):int(c_s[0] + r) + 1]
                    ys_i, xs_i = np.clip(ys_i.ravel(), 0, h - 1), np.clip(xs_i.ravel(), 0, w - 1)
                    near_c = (np.hypot(xs_i + 0.5 - c_s[0], ys_i + 0.5 - c_s[1]) < 0.8 * r) & (st.eye_full[ys_i, xs_i] == eye)
                    mean_i = st.image[ys_i[near_c], xs_i[near_c]].mean(0) if near_c.sum() >= 4 else None
                    ic = col[in_iris]
                    if seen.any():
                        ic[seen] = sample(st.image, mir[seen])
                    if mean_i is not None:
                        ic[~seen] = mean_i
                    col[in_iris] = ic
                    keep = keep | in_iris
            col = col * gain_w[ys, xs]
            # soft inside the contour, so the lids' own edge (lashes) stays the warp's
            lay = np.zeros((h, w), np.float32)
            lay[ys[keep], xs[keep]] = 1.0
            a = cv2.GaussianBlur(lay, (0, 0), 0.8)[ys, xs] * keep * wgt
            a_old = alpha[ys, xs].clip(0, 1)
            base = np.where(a_old[:, None] > 0, fill[ys, xs], col)
            fill[ys, xs] = base * (1 - a[:, None]) + col * a[:, None]
            alpha[ys, xs] = np.maximum(a_old, a)

    # ------------------------------------------------------------------------------------------
    def _plane_flow(self, st: WarpSource, vhead_t: np.ndarray, vt: np.ndarray, hwq: tuple[int, int],
                    q: int) -> np.ndarray:
        """Backward flow (quarter grid, work pixels) of the head-frame plane z = z0 through the head's
        centre (``outline_depth`` face widths behind the nose tip): how the head's outline, ears and
        hair move under the pose change, as opposed to the face's front (a turning head's silhouette
        stays nearly where it is while the face moves across it)."""
        hq, wq = hwq
        vs = st.head_src
        if st.head_map is None or vs is None:
            return np.zeros((hq, wq, 2), np.float32)
        width = float(np.ptp(vs[:, 0]))
        z0 = float(vs[:, 2].max() - self.opts.outline_depth * width)
        A_s, b_s = st.head_map
        A_t, b_t = affine_head_to_screen(vhead_t, vt)
        ys, xs = np.mgrid[0:hq, 0:wq]
        p = np.stack([(xs.ravel() + 0.5) * q, (ys.ravel() + 0.5) * q], 1).astype(np.float64)
        m = A_t[:2, :2]
        rhs = p - b_t[:2] - A_t[:2, 2] * z0
        hxy = np.linalg.solve(m, rhs.T).T
        h = np.concatenate([hxy, np.full((hxy.shape[0], 1), z0)], 1)
        s = h @ A_s.T + b_s
        return (s[:, :2] - p).reshape(hq, wq, 2).astype(np.float32)

    @staticmethod
    def _head_field(st: WarpSource, vhead_t: np.ndarray, vt: np.ndarray, hwq: tuple[int, int], q: int,
                    Kq: np.ndarray, wt: np.ndarray, pers_q: np.ndarray, dist: np.ndarray, r_p: float,
                    r_b: float) -> np.ndarray:
        """Correction (quarter grid, work pixels) that makes hair, ears and the top of the head follow
        the ellipsoid head proxy in 3D (see :mod:`.head`), continuous with the mesh at its rim.

        Inside the proxy's silhouette (above the mouth line, faded to the chin) the displacement is
        the proxy's own backward flow ``de`` plus the mesh-rim residual ``ext_d - E`` (``E``: the
        proxy flow continued from the rim) faded by the usual falloff ``wt``; outside it (long hair,
        ears that stick out, the neck) the correction is continued smoothly and faded with the
        person / background radii. The caller adds it to ``ext_d * wt``."""
        hq, wq = hwq
        head = st.head
        if head is None or st.head_map is None:
            raise RuntimeError("the head field needs the head proxy (head_proxy=True)")
        A_t, b_t = affine_head_to_screen(vhead_t, vt)
        ys, xs = np.mgrid[0:hq, 0:wq]
        xy = np.stack([(xs.ravel() + 0.5) * q, (ys.ravel() + 0.5) * q], 1).astype(np.float64)
        de, we, hy = ellipsoid_flow(head, st.head_map, (A_t, b_t), xy, mirror=False)
        de = de.reshape(hq, wq, 2).astype(np.float32)
        t = np.clip((hy.reshape(hq, wq) - head.chin_y) / max(head.mouth_y - head.chin_y, 1e-6), 0, 1)
        h_w = (we.reshape(hq, wq) * t * t * (3 - 2 * t)).astype(np.float32)
        E = push_pull(de, Kq)
        G = de - wt[..., None] * E
        kn = (h_w > 0.5).astype(np.float32)
        if kn.sum() < 4:
            return np.zeros((hq, wq, 2), np.float32)
        G_ext = push_pull(G * kn[..., None], kn)
        G_ext = kn[..., None] * G + (1 - kn[..., None]) * G_ext
        dist_e = distance_outside(kn > 0.5) * q
        # person where the pixel is person now or where it comes from (the silhouette moves)
        mx = ((xy[:, 0] + de.reshape(-1, 2)[:, 0]) / q - 0.5).reshape(hq, wq).astype(np.float32)
        my = ((xy[:, 1] + de.reshape(-1, 2)[:, 1]) / q - 0.5).reshape(hq, wq).astype(np.float32)
        p_src = cv2.remap(pers_q, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        pmix = np.maximum(pers_q, p_src)
        fall_e = pmix * cos_falloff(dist_e / r_p) + (1 - pmix) * cos_falloff(dist_e / r_b)
        g = np.maximum(h_w, fall_e) * (pmix + (1 - pmix) * cos_falloff(dist / r_b))
        return (g[..., None] * G_ext).astype(np.float32)

    # ------------------------------------------------------------------------------------------
    def _driving_mouth(self, st: WarpSource, driving: tuple[np.ndarray, Any], xy_t: np.ndarray,
                       box: tuple[int, int, int, int]) -> np.ndarray | None:
        """The driving frame's interior on the target contour (see :func:`mouth.driving_interior`)."""
        image, params = driving
        _check_image(image)
        if getattr(params, "batch_size", 1) != 1:
            raise InvalidInput("driving_params", "the params of one driving face (batch 1)", params.batch_size)
        Hd, Wd = image.shape[:2]
        xy_d, _ = self._geometry(st.model, params, (0, 0, Wd, Hd), 1.0)
        assert st.mouth is not None
        return driving_interior(image, xy_d[:, :2], _detected_px(params, (0, 0), 1.0), xy_t, box, st.mouth)

    # ------------------------------------------------------------------------------------------
    def _compose(self, st: WarpSource, fld: np.ndarray, fill: np.ndarray, alpha: np.ndarray,
                 gain: np.ndarray | None = None, warp_w: np.ndarray | None = None) -> np.ndarray:
        """The output frame: the full-resolution photo resampled along the work-grid displacement,
        relit and blended with the fill layer, inside the part of the work region the edit reaches
        (outside it the photo's own pixels, bit-identical).

        At native resolution the relight gain is applied per output pixel (:func:`apply_gain`,
        :func:`_warm_shadows`). On a reduced work grid those run on the work grid's own warp, and
        what they do to it is carried to full resolution as one factor and one offset per pixel
        (``out = warp * M + A``: the gain with its roll-off and warmth, the fill's premultiplied
        colour), bilinearly upsampled with the displacement: the photo's detail stays that of
        the full-resolution warp, and the cost is a resampling and one multiply-add. ``gain``
        (``exp(fld[..., 2:])``) and ``warp_w`` (:func:`_warp_work`): already computed by the caller."""
        x0, y0, x1, y1 = st.roi
        H, W = y1 - y0, x1 - x0
        frame = st.frame
        h, w = fld.shape[:2]
        interp = cv2.INTER_CUBIC if self.opts.interpolation == "cubic" else cv2.INTER_LINEAR
        if (H, W) == (h, w):
            mx, my = _maps(fld[..., :2], x0, y0)
            warped = cv2.remap(frame, mx, my, interp, borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
            if gain is None:
                gain = np.exp(fld[..., 2:])
            res = apply_gain_lab(warped, gain, 255.0, self.opts.relight_chroma, **_gain_lab_args(st, self.opts))
            if self.opts.shadow_warmth > 0:
                res = _warm_shadows(res, gain, self.opts.shadow_warmth)
            if alpha.any():
                a = alpha[..., None]
                res = res * (1 - a) + fill * 255.0 * a
            out = frame.copy()
            out[y0:y1, x0:x1] = np.clip(np.rint(res), 0, 255).astype(np.uint8)
            return out
        # ---- reduced work grid: factor M and offset A per work pixel
        if st.frame_up is None:  # (a state not made by prepare)
            st.frame_up, st.up_scale, st.up_origin = self._supersample(frame, st.roi)
        if gain is None:
            gain = np.exp(fld[..., 2:])
        base: np.ndarray = (warp_w if warp_w is not None else _warp_work(st, fld)) * np.float32(255.0)
        res = apply_gain_lab(base, gain, 255.0, self.opts.relight_chroma, **_gain_lab_args(st, self.opts))
        if self.opts.shadow_warmth > 0:
            res = _warm_shadows(res, gain, self.opts.shadow_warmth)
        # the layers: (M, dx) and dy (displacement in supersampled source pixels); the photo has a
        # 4th channel (ignored). M: the gain as applied (dark pixels: the plain gain, a ratio of
        # small numbers is noise), times 1 - alpha
        su = st.up_scale
        kd = np.float32(st.k * su)
        filled = bool(alpha.any())
        lay_m, lay_y, reach = _gain_layers(res, base, gain, alpha, filled, fld, kd)
        box = _full_res_box(reach, (H, W))
        if box is None:
            return frame.copy()
        X0, Y0, X1, Y1 = box
        # the photo's own pixels outside the box (inside it everything is written below)
        out = np.empty_like(frame)
        by0, by1, bx0, bx1 = y0 + Y0, y0 + Y1, x0 + X0, x0 + X1
        out[:by0], out[by1:] = frame[:by0], frame[by1:]
        out[by0:by1, :bx0], out[by0:by1, bx1:] = frame[by0:by1, :bx0], frame[by0:by1, bx1:]
        bh, bw = Y1 - Y0, X1 - X0
        # full-resolution intermediates live in buffers kept on the source state (reused by every
        # frame: fresh ones of this size cost as much again in page faults as the passes themselves)
        buf = _Buffers(st, H * W)
        up_m = _upsample(lay_m, box, (H, W), dst=buf.get("up_m", (bh, bw, 4), np.float32))
        up_y = _upsample(lay_y, box, (H, W), dst=buf.get("up_y", (bh, bw), np.float32))
        ox, oy = st.up_origin
        ux = np.add((np.arange(x0 + X0 - ox, x0 + X1 - ox, dtype=np.float32) * su)[None, :], up_m[..., 3],
                    out=buf.get("ux", (bh, bw), np.float32))
        uy = np.add((np.arange(y0 + Y0 - oy, y0 + Y1 - oy, dtype=np.float32) * su)[:, None], up_y,
                    out=buf.get("uy", (bh, bw), np.float32))
        wp = cv2.remap(st.frame_up, ux, uy, cv2.INTER_LINEAR if su > 1 else interp,
                       dst=buf.get("wp", (bh, bw, 4), np.uint8), borderMode=cv2.BORDER_REPLICATE)
        # warp x M, rounded to nearest and saturated (as cv2.convertScaleAbs of the float product)
        q8 = cv2.multiply(wp, up_m, dst=buf.get("q8", (bh, bw, 4), np.uint8), dtype=cv2.CV_8U)
        fbox = _full_res_box((alpha > 0).astype(np.uint8), (H, W)) if filled else None
        if fbox is not None:  # the fill (premultiplied, A), where there is one
            fx0, fy0, fx1, fy1 = fbox
            # (work pixels beyond the fill's box + 2 are not read by its upsampling: only the box)
            wx0, wy0 = max(0, int(np.floor(fx0 * w / W)) - 2), max(0, int(np.floor(fy0 * h / H)) - 2)
            wx1, wy1 = min(w, int(np.ceil(fx1 * w / W)) + 3), min(h, int(np.ceil(fy1 * h / H)) + 3)
            lay_a = np.zeros((h, w, 4), np.float32)
            lay_a[wy0:wy1, wx0:wx1, :3] = fill[wy0:wy1, wx0:wx1] * (255.0 * alpha[wy0:wy1, wx0:wx1, None])
            up_a = _upsample(lay_a, fbox, (H, W), dst=buf.get("up_a", (fy1 - fy0, fx1 - fx0, 4), np.float32))
            fb = (slice(fy0 - Y0, fy1 - Y0), slice(fx0 - X0, fx1 - X0))
            res = cv2.multiply(np.ascontiguousarray(wp[fb]), np.ascontiguousarray(up_m[fb]),
                               dst=buf.get("res", up_a.shape, np.float32), dtype=cv2.CV_32F)
            res += up_a
            # (all values >= 0: the absolute value is a no-op; rounds to nearest and saturates)
            q8[fb] = cv2.convertScaleAbs(res)
        out[y0 + Y0:y0 + Y1, x0 + X0:x0 + X1] = cv2.cvtColor(q8, cv2.COLOR_RGBA2RGB,
                                                             dst=buf.get("rgb", (bh, bw, 3), np.uint8))
        return out


def _gain_lab_args(st: WarpSource, o: WarpOptions) -> dict[str, Any]:
    """:func:`apply_gain_lab`'s dark-tone and lit-chroma arguments for this source (relight.py)."""
    ref = skin_lightness(st.skin_rgb) if o.relight_keep_dark else None
    down = float(o.relight_dark_down) if (o.relight_keep_dark and o.relight_dark_down < 1.0) else None
    return {"dark_ref": ref, "chroma_follow_up": o.relight_chroma_up, "dark_floor_down": down}


def _on_mask(D: np.ndarray, chans: list[int], mask: np.ndarray) -> np.ndarray:
    """``D[..., chans] * mask[..., None]`` for a 0/1 ``mask`` that is mostly 0 (a thin band),
    scattered onto zeros instead of multiplied over the whole grid (equal up to the sign of
    zeros)."""
    out = np.zeros((*mask.shape, len(chans)), np.float32)
    my, mx = np.nonzero(mask)
    out[my, mx] = D[my, mx][:, chans] * mask[my, mx, None]
    return out


def _gain_layers(res: np.ndarray, base: np.ndarray, gain: np.ndarray, alpha: np.ndarray, filled: bool,
                 fld: np.ndarray, kd: np.float32, fast: bool | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reduced-grid compose's work-grid layers: (M, dx) (h, w, 4) - M the gain as applied (dark
    pixels: the plain gain, a ratio of small numbers is noise) times 1 - alpha, dx the displacement
    in supersampled source pixels -, dy (h, w), and the part the edit reaches (uint8: displacement,
    gain or fill not exactly neutral; M is 1 and A 0 exactly where the gain is 1 and alpha 0). One
    numba pass (:func:`._kernels.gain_layers`); ``fast=False`` (default: when
    :func:`.field.use_kernels` turned them off): the numpy reference."""
    h, w = fld.shape[:2]
    lay_m = np.empty((h, w, 4), np.float32)
    if fast is None:
        fast = kernels_enabled()
    if fast and res.dtype == base.dtype == gain.dtype == alpha.dtype == fld.dtype == np.float32:
        from facerig.engines.warp._kernels import gain_layers

        lay_y = np.empty((h, w), np.float32)
        reach = np.empty((h, w), np.uint8)
        gain_layers(np.ascontiguousarray(res), np.ascontiguousarray(base), np.ascontiguousarray(gain),
                    np.ascontiguousarray(alpha), filled, np.ascontiguousarray(fld), np.float32(kd), lay_m, lay_y, reach)
        return lay_m, lay_y, reach
    np.divide(res, np.maximum(base, np.float32(4.0)), out=lay_m[..., :3])
    np.copyto(lay_m[..., :3], gain, where=base <= 4.0)
    if filled:
        lay_m[..., :3] *= 1 - alpha[..., None]
    np.multiply(fld[..., 0], kd, out=lay_m[..., 3])
    lay_y = np.ascontiguousarray(fld[..., 1]) * kd
    # (per-channel comparisons: numpy's reductions over a 3-long last axis are slow)
    reach = (fld[..., 0] != 0) | (fld[..., 1] != 0) | (fld[..., 2] != 0) | (alpha > 0)
    return lay_m, lay_y, reach.astype(np.uint8)


def _interpolate(b: np.ndarray, tri: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``np.einsum("nk,nkc->nc", b, table[tri])`` (per-vertex attributes at the covered pixels) in
    one numba pass (:func:`._kernels.interpolate`; the einsum itself when the kernels are off)."""
    from facerig.engines.warp._kernels import interpolate

    if not kernels_enabled():
        return np.einsum("nk,nkc->nc", b, table[tri])
    out = np.empty((b.shape[0], table.shape[1]), np.float64)
    if b.shape[0]:
        interpolate(np.ascontiguousarray(b, np.float64), np.ascontiguousarray(tri, np.int64),
                    np.ascontiguousarray(table, np.float64), out)
    return out


def _warp_work(st: WarpSource, fld: np.ndarray) -> np.ndarray:
    """The work-grid photo resampled along the work-grid displacement (bilinear)."""
    return cv2.remap(st.image, *_maps(fld[..., :2], 0, 0), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _warm_shadows(res: np.ndarray, gain: np.ndarray, warmth: float) -> np.ndarray:
    """Where relighting darkens skin-coloured pixels, red darkens less and blue more (gain**(1 -
    warmth), gain**(1 + warmth) on R, B): skin in shadow is redder than a grey multiply makes it
    (light scattered under the skin), which read as grey, ashen shadows."""
    dark = gain[..., 0] < 0.999
    if not dark.any():
        return res
    px = res[dark]
    g = gain[dark]
    lum = px.mean(1, keepdims=True)
    # skin: warm chroma (R > G > B), fading out for grey / cool / very dark pixels
    skin = np.clip((px[:, :1] - px[:, 2:3]) / np.maximum(lum, 1.0) * 3.0, 0.0, 1.0) * (px[:, :1] >= px[:, 1:2])
    w = warmth * skin
    k = np.concatenate([1.0 - w, np.ones_like(w), 1.0 + w], 1)
    res = res.copy()
    res[dark] = px * g ** (k - 1.0)
    return res


def _gaze_weights(gaze: dict[int, float], skip: list[int]) -> list[tuple[int, float]]:
    """The eyes whose iris moves within the opening (a gaze edit), with a weight: 0 at 0.1 iris
    radii, 1 from 0.35; eyes opened wider (``skip``) already move rigidly with their iris."""
    return [(eye, float(min((g - 0.1) / 0.25, 1.0))) for eye, g in sorted(gaze.items())
            if g > 0.1 and eye not in skip]


def _eye_openings(params: Any, origin: tuple[int, int], k: float, hw: tuple[int, int]) -> np.ndarray | None:
    """The source's eye openings from its detected landmarks (``params.meta["landmarks_px"]``, frame
    pixels, MediaPipe's 478): (H, W) uint8 on the work grid, 1 = subject's right eye, 2 = left, 0
    elsewhere; None without detections."""
    from facerig.detect.landmark_sets import LEFT_EYE, RIGHT_EYE

    p = _detected_px(params, origin, k)
    if p is None:
        return None
    out = np.zeros(hw, np.uint8)
    for eye, loop in ((1, RIGHT_EYE), (2, LEFT_EYE)):
        m: np.ndarray = np.zeros(hw, np.uint8)
        cv2.fillPoly(m, [np.round(p[list(loop)] * 4).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=2)
        out[(m > 0) & (out == 0)] = eye
    return out


#: the share of the eyeLookDown shapes' motion the lids and lid skin keep (the iris keeps all of it):
#: the upper lid then moves as far as the iris (``WarpEngine._gaze_down_lids``)
GAZE_DOWN_LIDS = 0.5

#: MediaPipe's eye corners (outer, inner) per eye (1 = subject's right, 2 = left)
_EYE_CORNERS = {1: (33, 133), 2: (263, 362)}

#: MediaPipe's upper-lid vertex -> the lower-lid vertex below it (subject's right eye, then left)
_LID_PAIRS = ((246, 7), (161, 163), (160, 144), (159, 145), (158, 153), (157, 154), (173, 155),
              (466, 249), (388, 390), (387, 373), (386, 374), (385, 380), (384, 381), (398, 382))


def _detected_px(params: Any, origin: tuple[int, int], k: float) -> np.ndarray | None:
    """The source's detected landmarks (``params.meta["landmarks_px"]``) on the work grid, (L, 2)."""
    pts = params.meta.get("landmarks_px") if isinstance(params.meta, dict) else None
    if pts is None:
        return None
    p = np.asarray(pts, np.float64)
    if p.ndim != 2 or p.shape[0] < 468 or p.shape[1] < 2 or not np.isfinite(p[:468, :2]).all():
        return None
    return (p[:, :2] - np.asarray(origin, np.float64)) / k


def _lid_residual(params: Any, origin: tuple[int, int], k: float, verts: np.ndarray) -> np.ndarray | None:
    """(V, 2) work-pixel offsets that put the fitted mesh's eye contours (MediaPipe's 32 eye-contour
    vertices) where the photo's lids were detected; 0 elsewhere. The blendshape fit leaves the lids
    a few pixels off (a fitted opening smaller than the real one), which a warp then moves as skin:
    a closed eye kept a strip of iris and two lash lines. None without detections or for a model
    that is not on MediaPipe's topology."""
    from facerig.detect.landmark_sets import LEFT_EYE, RIGHT_EYE

    det = _detected_px(params, origin, k)
    if det is None or verts.shape[0] < 468:
        return None
    ids = list(RIGHT_EYE) + list(LEFT_EYE)
    delta = np.zeros((verts.shape[0], 2), np.float64)
    delta[ids] = det[ids] - verts[ids, :2]
    iod = float(np.linalg.norm(verts[33, :2] - verts[263, :2]))
    # a detection far from the fit is not a lid (occlusion, glasses glare): leave the fit alone
    bad = np.linalg.norm(delta, axis=1) > 0.12 * max(iod, 1.0)
    delta[bad] = 0.0
    return delta


def _target_lid_delta(delta: np.ndarray, src_model: np.ndarray, tgt_model: np.ndarray) -> np.ndarray:
    """The lid offsets for a target: each upper-lid vertex's offset moves towards its lower-lid
    partner's as the edit closes the eye (by the fitted lids' closure c, 0 = as open as the source,
    1 = shut), so shut lids meet on the photo's own lower lid, and from c = 0.6 to 0.9 the rest of
    the fitted gap closes too; everything else keeps its offset."""
    out = delta.copy()
    for up, lo in _LID_PAIRS:
        g_s = float(np.linalg.norm(src_model[up] - src_model[lo]))
        if g_s < 1e-3:
            continue
        c = float(np.clip(1.0 - np.linalg.norm(tgt_model[up] - tgt_model[lo]) / g_s, 0.0, 1.0))
        out[up] = (1.0 - c) * delta[up] + c * delta[lo]
        # a blink that leaves the fitted lids a little apart (identity offsets open the model's
        # shut lids by a few percent) is meant shut: close the rest of the gap from 60 % closure on
        t = float(np.clip((c - 0.6) / 0.3, 0.0, 1.0))
        out[up] += t * t * (3 - 2 * t) * (tgt_model[lo] - tgt_model[up])
    return out


def _sclera_colours(image: np.ndarray, eye_full: np.ndarray) -> np.ndarray | None:
    """(2, 3) the white of each eye: the 65th-92nd luminance percentiles of its detected opening
    (the iris, pupil, lashes and lid shadow are below, the catchlight above)."""
    out = np.zeros((2, 3), np.float32)
    for eye in (1, 2):
        px = image[eye_full == eye]
        if px.shape[0] < 8:
            return None
        lum = px.mean(1)
        sel = (lum >= np.percentile(lum, 65)) & (lum <= np.percentile(lum, 92))  # not the catchlight
        out[eye - 1] = px[sel].mean(0) if sel.any() else px.mean(0)
    return out


def _with_bright_rim(image: np.ndarray, eye_full: np.ndarray, core: np.ndarray, lid_rgb: np.ndarray,
                     n: int) -> np.ndarray:
    """``core`` (the eye openings' eroded interiors) plus the pixels of the rim (``eye_full`` grown
    and shrunk by ``n`` px: the detected contour runs a little inside the visible white) that are
    brighter than their eye's lid skin: the eye white reaching the lid line. Lashes and the lid's
    shadowed edge are darker and stay out."""
    lum = image.mean(2)
    out = core.copy()
    kern = np.ones((2 * n + 1, 2 * n + 1), np.uint8)
    for eye in (1, 2):
        grown = cv2.dilate((eye_full == eye).astype(np.uint8), kern) > 0
        rim = grown & (core == 0) & ((eye_full == 0) | (eye_full == eye))
        if rim.any():
            out[rim & (lum > 1.05 * float(lid_rgb[eye - 1].mean()))] = eye
    return out


def _lid_colours(image: np.ndarray, eye_open: np.ndarray | None, exclude: np.ndarray | None = None
                 ) -> np.ndarray | None:
    """(2, 3) lid skin colour per eye (1 = right, 2 = left): the mean of the lighter halves (lashes,
    crease and shadows are the darker ones) of two bands as high as the opening, right above and
    right below it."""
    if eye_open is None:
        return None
    out = np.zeros((2, 3), np.float32)
    for eye in (1, 2):
        m = (eye_open == eye).astype(np.uint8)
        ys, xs = np.nonzero(m)
        if ys.size < 4:
            return None
        hgt = max(2, int(ys.max() - ys.min() + 1))
        above = np.zeros_like(m)
        above[: m.shape[0] - hgt] = m[hgt:]
        below = np.zeros_like(m)
        below[hgt:] = m[: m.shape[0] - hgt]
        cols = []
        for band in ((above > 0) & (m == 0), (below > 0) & (m == 0)):
            if exclude is not None:  # not a glasses frame next to the eye
                band &= ~exclude
            if band.sum() >= 4:
                px = image[band]
                lum = px.mean(1)
                cols.append(px[lum >= np.median(lum)].mean(0))
        if not cols:
            return None
        out[eye - 1] = np.mean(cols, 0)
    return out


def _p98(magnitudes: np.ndarray) -> float:
    """98th percentile of displacement magnitudes (0 when there are none): the "largest" motion,
    robust to a few outliers."""
    return float(np.percentile(magnitudes, 98)) if magnitudes.size else 0.0


@contextmanager
def _few_threads() -> Iterator[None]:
    """Run the per-frame torch work (a 478-vertex model, small tables) on one intra-op thread.

    The tensors are tiny, so extra threads only add synchronisation; on a loaded 2-core machine
    torch's spinning workers made a 0.7 ms model evaluation take ~70 ms (measured). The previous
    thread count is restored afterwards (process-global setting: do not render from several
    threads at once)."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _boundary_faces(faces: np.ndarray, rings: int = 2) -> np.ndarray:
    """(F,) bool: triangles with an edge on the mesh boundary, grown by ``rings`` vertex rings."""
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), 1)
    uniq, inv, cnt = np.unique(e, axis=0, return_inverse=True, return_counts=True)
    on = (cnt[inv.reshape(-1)] == 1).reshape(3, -1).any(0)
    for _ in range(max(0, rings - 1)):
        vv = np.zeros(int(faces.max()) + 1, bool)
        vv[faces[on].ravel()] = True
        on = vv[faces].any(1)
    return on


def _full_res_box(mask: np.ndarray, HW: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """The frame-resolution box (X0, Y0, X1, Y1, relative to the work region of size ``HW``) of the
    non-zero work-grid pixels of ``mask`` + 2 work pixels of interpolation support; None if empty."""
    bx, by, bw, bh = cv2.boundingRect(mask)
    if bw == 0:
        return None
    H, W = HW
    kx, ky = W / mask.shape[1], H / mask.shape[0]
    return (max(0, int(np.floor((bx - 2) * kx))), max(0, int(np.floor((by - 2) * ky))),
            min(W, int(np.ceil((bx + bw + 2) * kx))), min(H, int(np.ceil((by + bh + 2) * ky))))


def _upsample(layer: np.ndarray, box: tuple[int, int, int, int], HW: tuple[int, int],
              dst: np.ndarray | None = None) -> np.ndarray:
    """Bilinear upsampling of a work-grid layer onto the frame pixels of ``box`` within a work region
    of size ``HW``, with cv2.resize's pixel-centre convention (work coordinate (X + 0.5) / kx - 0.5);
    into ``dst`` when given (its shape: the box's, the layer's channels)."""
    X0, Y0, X1, Y1 = box
    kx, ky = HW[1] / layer.shape[1], HW[0] / layer.shape[0]
    aff = np.array([[1 / kx, 0, (X0 + 0.5) / kx - 0.5], [0, 1 / ky, (Y0 + 0.5) / ky - 0.5]], np.float64)
    return cv2.warpAffine(layer, aff, (X1 - X0, Y1 - Y0), dst=dst, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


class _Buffers:
    """Scratch arrays kept on a source state between frames (``state.buffers``): ``get`` returns a
    C-contiguous array of the shape asked for, a view of the front of one flat buffer per name,
    allocated with 10 % headroom (the box a frame writes changes a little from frame to frame; at
    most the work region's ``capacity`` pixels) and grown if a later frame needs more. Contents
    are stale: every user overwrites the whole view (cv2's ``dst=`` / numpy's ``out=``). For a
    1024 px face-filling portrait they hold ~40 MB, what each frame used to allocate afresh."""

    def __init__(self, st: WarpSource, capacity: int) -> None:
        self.store = st.buffers
        self.capacity = capacity

    def get(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        n = int(np.prod(shape))
        flat = self.store.get(name)
        if flat is None or flat.dtype != np.dtype(dtype) or flat.size < n:
            chan = n // max(1, shape[0] * shape[1])
            flat = np.empty(max(n, min(int(1.1 * n) + 64, self.capacity * chan)), dtype)
            self.store[name] = flat
        return flat[:n].reshape(shape)


def _maps(disp: np.ndarray, x0: float, y0: float) -> tuple[np.ndarray, np.ndarray]:
    """cv2.remap maps (integer pixel centres) for a displacement field on a grid at offset x0, y0."""
    h, w = disp.shape[:2]
    xs = np.arange(w, dtype=np.float32)[None, :] + np.float32(x0)
    ys = np.arange(h, dtype=np.float32)[:, None] + np.float32(y0)
    return (xs + disp[..., 0]).astype(np.float32), (ys + disp[..., 1]).astype(np.float32)


def _rng(generator: Any, seed: int) -> np.random.Generator:
    if isinstance(generator, np.random.Generator):
        return generator
    if isinstance(generator, (int, np.integer)):
        return np.random.default_rng(int(generator))
    if isinstance(generator, torch.Generator):
        return np.random.default_rng(int(generator.initial_seed()))
    return np.random.default_rng(seed)
