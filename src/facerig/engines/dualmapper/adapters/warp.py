"""A differentiable warp generator: the idea of facerig's warp engine (move the photo's own pixels with
the face mesh) rewritten in torch so that gradients reach the expression and an appearance latent.

Built once per source (a photo and its batch-1 fit), at a bounded resolution (``size``, 256 px by
default) on a square crop around the face:

* **geometry** (``psi``): the face model's expression coefficients (builtin: ARKit blendshapes in
  [0, 1]). ``psi`` -> head-frame vertices ``model(identity, psi)`` -> the source's pose and camera ->
  crop pixels: the TARGET mesh. The SOURCE mesh is the same at ``psi0``. For the builtin model, whose
  vertices are MediaPipe landmarks, both meshes are moved by the residual "detected landmarks minus
  fitted projection" (``use_detections``), so the source mesh sits exactly on the photo's lids, lips
  and brows and the model only supplies the motion.
* **warp**: the target mesh is rasterised (:func:`facerig.render.rasterize`: non-differentiable
  visibility, differentiable barycentrics); a covered pixel samples the photo at the barycentric
  interpolation of the SOURCE vertices of its triangle, so gradients reach ``psi`` through the
  barycentrics. Off the mesh, the displacement is extended by a normalised Gaussian average of the
  face's displacements, ``blur(M*D) / max(blur(M), 1/2)``, which matches the face edge and decays to
  the identity map about ``falloff`` face sizes away (the neck stretches when the jaw drops; hair
  follows the brows a little) -- no tear at the face edge. The photo is sampled with
  ``F.grid_sample`` (bilinear).
* **fills** (``fills=True``): pixels of the model's ``mouth_interior`` triangles sample the photo
  TRANSLATED with the upper inner lip (the photo's teeth move rigidly with it instead of stretching),
  and where that translated position leaves the photo's own mouth interior they get a dark colour
  measured on the photo's lips (a closed-mouth photo opens onto that colour); pixels of the ``eyes``
  triangles get the photo's lash-line colour with weight ``relu(1 - area_target / area_source)``
  (towards 1 as the lids close, so the seam of a closed eye is a lash line, not a squeezed sclera,
  softened by a 0.6 px blur). Both are the identity at ``psi0`` (exact reproduction) and
  differentiable in ``psi``.
* **appearance** (``w``): a low-resolution UV texture of the face (``texture_size``^2, the photo
  sampled into the model's UV layout through the source mesh), as tokens of ``patch`` x ``patch`` x 3
  texels (32 px, patch 8: N = 16 tokens of D = 192). ``render`` adds ``(w - w0)`` sampled at the
  target raster's UV coordinates, faded to 0 over the last pixels inside the face outline, so ``w0``
  reproduces the source exactly and an appearance edit stays on the face.

``render(w0, psi0)`` equals the source crop up to float rounding (the warp is the identity map).
Not modelled: teeth and tongue (the opened mouth is a flat dark colour), eyeball motion other than
what the mesh's iris vertices drag along, hair or shoulders moving with the head (the pose is the
source's; ``psi`` is expression only), occlusions that change with the expression.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from facerig.errors import InvalidInput

log = logging.getLogger(__name__)

__all__ = ["WarpRigGenerator", "extend_field", "gaussian_blur", "texture_to_tokens", "tokens_to_texture"]


# ------------------------------------------------------------------------------------------------
# small differentiable pieces (pure torch; gradcheck'ed in the tests)


def _gauss_kernel(sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    r = max(1, int(math.ceil(3.0 * sigma)))
    x = torch.arange(-r, r + 1, dtype=dtype, device=device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) with zero padding (so a mask's blur falls off at the
    image border like the mask itself). Differentiable."""
    if sigma <= 0:
        return x
    k = _gauss_kernel(sigma, x.dtype, x.device)
    c = x.shape[1]
    r = (k.numel() - 1) // 2
    y = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, r), groups=c)
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(r, 0), groups=c)


def _pyramid_blur(x: torch.Tensor, sigma: float, factor: int) -> torch.Tensor:
    """Gaussian blur of sigma ``sigma`` (pixels) computed at 1/``factor`` resolution (cheap for wide
    kernels), bilinearly upsampled back. Differentiable."""
    if factor <= 1:
        return gaussian_blur(x, sigma)
    h, w = x.shape[-2:]
    small = F.avg_pool2d(x, factor, ceil_mode=True)
    small = gaussian_blur(small, sigma / factor)
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


def extend_field(disp: torch.Tensor, mask: torch.Tensor, sigma: float, factor: int = 4) -> torch.Tensor:
    """Displacements ``disp`` (B, 2, H, W) known where ``mask`` (B, 1, H, W) is 1 -> a field defined
    everywhere: ``disp`` on the mask, off it ``blur(M*D) / max(blur(M), 0.5)`` (the local average of
    the face's displacements at the face edge, decaying to 0 far away). Differentiable in ``disp``."""
    md = disp * mask
    num = _pyramid_blur(md, sigma, factor)
    den = _pyramid_blur(mask, sigma, factor).clamp_min(0.5)
    return md + (1 - mask) * num / den


def texture_to_tokens(tex: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, T, T) texture -> (B, (T/p)^2, C*p*p) tokens (row-major patches)."""
    b, c, t, _ = tex.shape
    n = t // patch
    x = tex.reshape(b, c, n, patch, n, patch).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, n * n, c * patch * patch)


def tokens_to_texture(tokens: torch.Tensor, patch: int, channels: int = 3) -> torch.Tensor:
    """Inverse of :func:`texture_to_tokens`."""
    b, nn_, _ = tokens.shape
    n = int(round(math.sqrt(nn_)))
    x = tokens.reshape(b, n, n, channels, patch, patch).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, channels, n * patch, n * patch)


def _pixel_grid(xy: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Continuous pixel coordinates (..., 2) (centres at +0.5) -> grid_sample's [-1, 1]
    (align_corners=False)."""
    scale = torch.tensor([2.0 / w, 2.0 / h], dtype=xy.dtype, device=xy.device)
    return xy * scale - 1.0


def _crop_image(image: np.ndarray, origin: tuple[float, float], k: float, size: int) -> np.ndarray:
    """The square crop [origin, origin + k*size) of a uint8 image at size x size, anti-aliased when
    shrinking (INTER_AREA, then a sub-pixel affine), border replicated. float32 in [0, 1]."""
    import cv2

    h, w = image.shape[:2]
    img = image
    sx = sy = 1.0
    if k > 1.0:
        ws, hs = max(1, int(round(w / k))), max(1, int(round(h / k)))
        img = cv2.resize(image, (ws, hs), interpolation=cv2.INTER_AREA)
        sx, sy = ws / w, hs / h
    # continuous coords: crop = (frame - origin) / k, frame = small / s  ->  crop = a * small + b
    ax, ay = 1.0 / (sx * k), 1.0 / (sy * k)
    bx, by = -origin[0] / k, -origin[1] / k
    # cv2 uses pixel centres at integers: c_i = a * f_i + (b + 0.5 a - 0.5)
    m = np.array([[ax, 0.0, bx + 0.5 * ax - 0.5], [0.0, ay, by + 0.5 * ay - 0.5]], np.float64)
    out = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out.astype(np.float32) / 255.0


def check_source(image: Any, params: Any) -> None:
    """The checks every adapter makes of (image, params)."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        got = tuple(image.shape) if isinstance(image, np.ndarray) else type(image).__name__
        raise InvalidInput("image", "an (H, W, 3) uint8 RGB array", got)
    if getattr(params, "batch_size", None) != 1:
        raise InvalidInput("params", "the FaceParams of one face (batch 1, from facerig's fit)",
                           getattr(params, "batch_size", type(params).__name__))
    if params.crop is None:
        raise InvalidInput("params.crop", "the crop transform of the fitted face (params from fit_image)", None)
    if tuple(params.crop[0].frame_size) != tuple(image.shape[:2]):
        raise InvalidInput("image", f"the image the params were fitted on ({params.crop[0].frame_size})",
                           tuple(image.shape[:2]))


def detected_landmarks(params: Any) -> np.ndarray | None:
    """The fit's detected MediaPipe landmarks (478, 2) in frame pixels (``meta["landmarks_px"]``)."""
    pts = params.meta.get("landmarks_px") if isinstance(params.meta, dict) else None
    if pts is None:
        return None
    a = np.asarray(pts, np.float64)
    if a.ndim != 2 or a.shape[0] < 468 or a.shape[1] < 2:
        return None
    return a[:, :2]


def frame_vertices(model: Any, params: Any, expression: torch.Tensor) -> torch.Tensor:
    """Frame-pixel screen vertices (B, V, 3) of ``params`` (batch 1) with ``expression`` (B, K)
    swapped in: x, y in the photo's pixels, depth (larger = nearer). Differentiable in ``expression``."""
    from facerig.render.buffers import screen_vertices
    from facerig.render.camera import pose_vertices

    b = expression.shape[0]
    ident = params.identity.to(expression).expand(b, -1)
    jaw = None if params.jaw_pose is None else params.jaw_pose.to(expression).expand(b, -1)
    v = model(ident, expression, jaw)
    world = pose_vertices(v, params.rotation.to(v).expand(b, -1))
    scr, _ = screen_vertices(world, params, space="frame")
    return scr


# ------------------------------------------------------------------------------------------------


class WarpRigGenerator:
    """Differentiable warp of one photo by the face model's expression (see the module docstring).

    ``image`` (H, W, 3) uint8 and ``params`` its batch-1 fit (``crop`` set; ``meta["landmarks_px"]``
    used when present); ``model`` the face model of the fit. Options: ``size`` output side in pixels
    (256); ``crop_scale`` crop side / face size (1.8); ``texture_size`` and ``patch``: the UV texture
    of ``w`` and its token patches (32, 8 -> w_shape (16, 192)); ``falloff`` width of the off-face
    extension in face sizes (0.12); ``use_detections`` anchor the mesh on the detected landmarks
    (builtin model only; True); ``fills`` darken the opened mouth and the seam of closing eyes (True); ``backend`` the
    rasteriser's visibility backend ("auto"); ``device``, ``dtype``.
    """

    name = "warp"

    def __init__(
        self,
        image: np.ndarray,
        params: Any,
        model: Any,
        *,
        size: int = 256,
        crop_scale: float = 1.8,
        texture_size: int = 32,
        patch: int = 8,
        falloff: float = 0.12,
        use_detections: bool = True,
        fills: bool = True,
        backend: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        check_source(image, params)
        if not isinstance(size, int) or size < 16:
            raise InvalidInput("size", "an integer of at least 16 pixels", size)
        if not isinstance(patch, int) or patch < 1 or not isinstance(texture_size, int) or texture_size % patch:
            raise InvalidInput("texture_size", f"a multiple of patch ({patch})", texture_size)
        if not crop_scale > 1.0:
            raise InvalidInput("crop_scale", "a crop side larger than the face (> 1)", crop_scale)
        if not falloff > 0:
            raise InvalidInput("falloff", "a positive fraction of the face size", falloff)
        self.size = int(size)
        self.crop_scale = float(crop_scale)
        self.image_size = (self.size, self.size)
        self.texture_size = int(texture_size)
        self.patch = int(patch)
        self.falloff = float(falloff)
        self.fills = bool(fills)
        self.backend = backend
        self.model = model
        self.params = params.detach()
        self.psi_names = tuple(model.expression_names)
        rng = getattr(model, "expression_range", None)  # blendshape models: [0, 1]; FLAME: unbounded
        #: (lower K, upper K) of psi, or None: the mappers clamp their output to it (mapper_for)
        self.psi_bounds = None if rng is None else ([float(rng[0])] * len(self.psi_names),
                                                    [float(rng[1])] * len(self.psi_names))
        n = (self.texture_size // self.patch) ** 2
        self.w_shape = (n, 3 * self.patch * self.patch)
        self._faces = model.faces.long()
        self._setup(image, use_detections)
        if device is not None or dtype != torch.float32:
            self.to(device, dtype)

    # ---- set-up (no gradients) ---------------------------------------------------------------
    def _setup(self, image: np.ndarray, use_detections: bool) -> None:
        model, params = self.model, self.params
        with torch.no_grad():
            psi0 = params.expression.float().clone()
            scr = frame_vertices(model, params, psi0)[0].double()  # (V, 3)
        xy = scr[:, :2].numpy()
        lo, hi = xy.min(0), xy.max(0)
        face = float(np.mean(hi - lo))
        centre = (lo + hi) / 2 + np.array([0.0, -0.05 * face])
        side = self.crop_scale * face
        self.k = side / self.size  # frame pixels per crop pixel
        self.origin = (float(centre[0] - side / 2), float(centre[1] - side / 2))
        self.face_px = face / self.k
        src = _crop_image(image, self.origin, self.k, self.size)
        self._source = torch.from_numpy(src).permute(2, 0, 1)[None].contiguous()

        det = detected_landmarks(params)
        self._det_crop = None if det is None else self._to_crop_np(det)
        resid = torch.zeros(scr.shape[0], 2, dtype=torch.float64)
        gain = torch.ones(scr.shape[0], 1, dtype=torch.float64)
        if use_detections and self._det_crop is not None and self._vertices_are_landmarks(model):
            idx = model.landmark_index.long().numpy()
            if int(idx.max()) < self._det_crop.shape[0]:
                model_xy = self._crop_xy(scr[:, :2])
                resid[:] = torch.from_numpy(self._det_crop[idx]) - model_xy[idx]
                gain = self._lid_gains(self._det_crop[idx], model_xy.numpy())
        elif use_detections:
            log.info("warp generator: no detected landmarks usable as vertices; the mesh is the fit's projection")
        self._resid = resid.float()
        self._gain = gain.float()
        self._model_xy0 = self._crop_xy(scr[:, :2]).float()
        self._psi0 = psi0
        src_scr = self._target_screen(psi0)[0].detach()  # (V, 3) crop px, = detections where used
        self._src_xy = src_scr[:, :2].clone()

        faces = self._faces
        names = tuple(getattr(model, "region_names", ()) or ())
        reg = model.face_region.long()
        a = self._areas(self._src_xy[None])[0]
        self._src_area = a.abs()
        nf = faces.shape[0]
        # fills: triangles whose pixels blend towards a colour as the expression changes their area
        self._mouth_tris = reg == names.index("mouth_interior") if "mouth_interior" in names else torch.zeros(nf, dtype=torch.bool)
        self._eye_tris = reg == names.index("eyes") if "eyes" in names else torch.zeros(nf, dtype=torch.bool)
        self._interior = self._interior_colour(names, reg)
        landmarks = self._vertices_are_landmarks(model)
        lash = self._lash_colour(landmarks)
        self._int_mask = self._source_region_mask(self._mouth_tris)
        if landmarks:
            self._upper_lip = torch.tensor(self.UPPER_INNER_LIP)
        else:  # the mouth-interior triangles' vertices
            self._upper_lip = torch.unique(faces[self._mouth_tris].reshape(-1)) if bool(self._mouth_tris.any()) \
                else torch.arange(1)
        self._fill_rgb = torch.zeros(nf, 3)
        self._fill_rgb[self._mouth_tris] = self._interior
        self._fill_rgb[self._eye_tris] = lash
        self._w0 = self._source_texture(faces)

    def _to_crop_np(self, pts: np.ndarray) -> np.ndarray:
        out = np.empty_like(pts[:, :2])
        out[:, 0] = (pts[:, 0] - self.origin[0]) / self.k
        out[:, 1] = (pts[:, 1] - self.origin[1]) / self.k
        return out

    def _crop_xy(self, xy: torch.Tensor) -> torch.Tensor:
        o = torch.tensor(self.origin, dtype=xy.dtype, device=xy.device)
        return (xy - o) / self.k

    @staticmethod
    def _vertices_are_landmarks(model: Any) -> bool:
        """True when landmark i lies exactly on vertex landmark_index[i] for every vertex (builtin)."""
        try:
            bary = model.landmark_bary
            if not bool((bary.max(1).values == 1).all()):
                return False
            tri = model.faces[model.landmark_faces]
            on = tri[torch.arange(tri.shape[0]), bary.argmax(1)]
            return bool(torch.equal(on, torch.arange(model.n_vertices, device=on.device))) and on.numel() == model.n_vertices
        except (AttributeError, IndexError, RuntimeError):
            return False

    #: MediaPipe eye contours, upper lid and the lower-lid vertex below each (two eyes)
    LID_PAIRS = (
        ((246, 7), (161, 163), (160, 144), (159, 145), (158, 153), (157, 154), (173, 155)),
        ((466, 249), (388, 390), (387, 373), (386, 374), (385, 380), (384, 381), (398, 382)),
    )

    #: MediaPipe upper inner lip contour (the upper teeth move with it)
    UPPER_INNER_LIP = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)

    def _source_region_mask(self, tris: torch.Tensor) -> torch.Tensor:
        """(1, 1, S, S) 0/1 mask of the source mesh's triangles ``tris`` (F,) bool."""
        from facerig.render.raster import rasterize

        with torch.no_grad():
            scr = torch.cat([self._src_xy, torch.zeros(self._src_xy.shape[0], 1)], 1)[None]
            fi = rasterize(scr, self._faces, self.size, self.size, backend=self.backend).face_index[0]
            on = (fi >= 0) & tris[fi.clamp_min(0)]
        return on.float()[None, None]

    @classmethod
    def _lid_gains(cls, det: np.ndarray, model_xy: np.ndarray) -> torch.Tensor:
        """Per-vertex gain (V, 1) of the model's motion: on each eye contour pair, the photo's lid gap
        over the model's (0.3..3), so that a lid the model closes closes on the photo too (an additive
        anchor alone would leave the photo's extra opening); 1 elsewhere."""
        gain = np.ones((model_xy.shape[0], 1))
        for eye in cls.LID_PAIRS:
            for u, lo in eye:
                if max(u, lo) >= det.shape[0] or max(u, lo) >= model_xy.shape[0]:
                    continue
                gm = float(np.linalg.norm(model_xy[u] - model_xy[lo]))
                gd = float(np.linalg.norm(det[u] - det[lo]))
                r = float(np.clip(gd / gm, 0.3, 3.0)) if gm > 0.5 else 1.0
                gain[u] = gain[lo] = r
        return torch.from_numpy(gain)

    def _areas(self, xy: torch.Tensor) -> torch.Tensor:
        """Signed doubled areas (B, F) of the triangles of (B, V, 2) points."""
        f = self._faces
        a, b, c = xy[:, f[:, 0]], xy[:, f[:, 1]], xy[:, f[:, 2]]
        e1, e2 = b - a, c - a
        return e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]

    def _lash_colour(self, landmarks: bool) -> torch.Tensor:
        """The colour a closed eye's seam gets: the photo at the upper-lid contour (the lash line),
        median over both eyes, darkened a little (the mouth-interior colour when the model's vertices
        are not MediaPipe points)."""
        if not landmarks:
            return self._interior.clone()
        ids = [u for eye in self.LID_PAIRS for u, _ in eye[1:-1]]
        with torch.no_grad():
            grid = _pixel_grid(self._src_xy[ids], self.size, self.size).reshape(1, 1, -1, 2)
            cols = F.grid_sample(self._source, grid, mode="bilinear", padding_mode="border", align_corners=False)[0, :, 0]
        return (cols.median(1).values * 0.8).float()

    def _interior_colour(self, names: tuple[str, ...], reg: torch.Tensor) -> torch.Tensor:
        """A dark mouth-interior colour from the photo: the median of the darker quarter of the lip
        pixels of the source, times 0.45 (a fixed dark red when the model has no lip regions)."""
        fallback = torch.tensor([0.16, 0.06, 0.06])
        want = [names.index(n) for n in ("lips",) if n in names]
        if not want:
            return fallback
        from facerig.render.raster import rasterize

        with torch.no_grad():
            scr = torch.cat([self._src_xy, torch.zeros(self._src_xy.shape[0], 1)], 1)[None]
            fr = rasterize(scr, self._faces, self.size, self.size, backend=self.backend)
            fi = fr.face_index[0]
            sel = (fi >= 0) & torch.isin(reg[fi.clamp_min(0)], torch.tensor(want))
            if int(sel.sum()) < 10:
                return fallback
            px = self._source[0][:, sel]  # (3, n)
            lum = px.mean(0)
            dark = px[:, lum <= torch.quantile(lum, 0.25)]
            return (dark.median(1).values * 0.45).float()

    def _source_texture(self, faces: torch.Tensor) -> torch.Tensor:
        """w0: the photo sampled into the model's UV layout through the source mesh, as tokens."""
        from facerig.render.raster import interpolate_packed, rasterize, scatter_pixels

        t = self.texture_size
        uv = self.model.uv.float()
        with torch.no_grad():
            scr = torch.stack([uv[:, 0] * t, (1 - uv[:, 1]) * t, torch.zeros_like(uv[:, 0])], -1)[None]
            fr = rasterize(scr, faces, t, t, backend=self.backend)
            pos = interpolate_packed(self._src_xy, faces, fr)  # (2, P) crop px
            grid = _pixel_grid(pos.T, self.size, self.size).reshape(1, 1, -1, 2)
            cols = F.grid_sample(self._source, grid, mode="bilinear", padding_mode="border",
                                 align_corners=False)[0, :, 0]  # (3, P)
            p = fr.get_packed()
            tex = scatter_pixels(cols, p, 1, t, t)
            if cols.shape[1]:
                cov = fr.mask[:, None].float()
                tex = tex + (1 - cov) * cols.mean(1).view(1, 3, 1, 1)
        return texture_to_tokens(tex, self.patch).contiguous()

    # ---- protocol ------------------------------------------------------------------------------
    def initial(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._w0.detach().clone(), self._psi0.detach().clone()

    def source_image(self) -> torch.Tensor:
        return self._source.clone()

    def points5(self) -> torch.Tensor:
        """dlib-ordered 5 points (1, 5, 2) in dlib pixel coordinates of the crop (crop pixels - 0.5),
        from the fit's detected MediaPipe landmarks (else the model's landmarks at ``psi0``)."""
        from facerig.eval.identity import MEDIAPIPE_TO_DLIB5

        ids = list(MEDIAPIPE_TO_DLIB5)
        if self._det_crop is not None:
            pts = torch.from_numpy(self._det_crop[ids]).to(self._source.dtype)
        else:
            li = self.model.landmark_index.long().tolist()
            if not all(i in li for i in ids):
                raise InvalidInput("params.meta['landmarks_px']", "the fit's detected MediaPipe landmarks "
                                   "(this face model does not carry the 5 points)", None)
            lm = self.landmarks(self._psi0.to(self._source))[0].detach()
            pts = lm[[li.index(i) for i in ids]]
        return (pts - 0.5)[None].to(self._source.device)

    def _target_screen(self, psi: torch.Tensor) -> torch.Tensor:
        """Target mesh (B, V, 3) in crop pixels (x, y, depth) for expression ``psi`` (B, K)."""
        scr = frame_vertices(self.model, self.params, psi)
        m0 = self._model_xy0.to(scr)
        # = model + anchor residual, with the model's motion scaled on the lid contours
        xy = m0 + self._resid.to(scr) + self._gain.to(scr) * (self._crop_xy(scr[..., :2]) - m0)
        return torch.cat([xy, scr[..., 2:] / self.k], -1)

    def landmarks(self, psi: torch.Tensor) -> torch.Tensor:
        """The face model's landmarks (B, L, 2) in crop pixels (all L of ``model.landmark_index``:
        the 478 MediaPipe points for builtin), anchored like the mesh; differentiable in ``psi``."""
        psi = self._check_psi(psi)
        return self.model.landmarks(self._target_screen(psi))[..., :2]

    def _check_psi(self, psi: torch.Tensor) -> torch.Tensor:
        if not isinstance(psi, torch.Tensor) or psi.ndim != 2 or psi.shape[1] != len(self.psi_names):
            raise InvalidInput("psi", f"a (B, {len(self.psi_names)}) tensor of expression coefficients",
                               tuple(psi.shape) if isinstance(psi, torch.Tensor) else type(psi).__name__)
        return psi.to(self._source)

    def render(self, w: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
        from facerig.render.raster import interpolate_packed, rasterize, scatter_pixels

        psi = self._check_psi(psi)
        n, d = self.w_shape
        if not isinstance(w, torch.Tensor) or w.ndim != 3 or tuple(w.shape[1:]) != (n, d):
            raise InvalidInput("w", f"a (B, {n}, {d}) tensor of appearance tokens",
                               tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__)
        b = max(psi.shape[0], w.shape[0])
        if psi.shape[0] != b:
            psi = psi.expand(b, -1)
        w = w.to(self._source)
        if w.shape[0] != b:
            w = w.expand(b, -1, -1)
        s = self.size
        faces = self._faces
        tgt = self._target_screen(psi)  # (B, V, 3)
        fr = rasterize(tgt, faces, s, s, backend=self.backend)
        p = fr.get_packed()
        # per covered pixel: source position (barycentrics of the SOURCE mesh) and UV
        rows = interpolate_packed(torch.cat([self._src_xy, self.model.uv.to(self._src_xy)], 1), faces, fr)
        cx = (p.local % s).to(rows.dtype) + 0.5
        cy = torch.div(p.local, s, rounding_mode="floor").to(rows.dtype) + 0.5
        disp = rows[0:2] - torch.stack([cx, cy], 0)
        img = scatter_pixels(torch.cat([disp, rows[2:4]], 0), p, b, s, s)  # (B, 4, S, S)
        mask = fr.mask[:, None].to(rows.dtype)
        field = extend_field(img[:, 0:2], mask, self.falloff * self.face_px)
        ys, xs = torch.meshgrid(torch.arange(s, dtype=rows.dtype, device=rows.device) + 0.5,
                                torch.arange(s, dtype=rows.dtype, device=rows.device) + 0.5, indexing="ij")
        pos = torch.stack([xs, ys], 0)[None] + field  # (B, 2, S, S)
        grid = _pixel_grid(pos.permute(0, 2, 3, 1), s, s)
        out = F.grid_sample(self._source.expand(b, -1, -1, -1), grid, mode="bilinear",
                            padding_mode="border", align_corners=False)

        if self.fills:
            # closing eye: weight 1 - A_tgt/A_src on the eye opening (its last pixels become the lash
            # line, not the sclera's seam); 0 at psi0, softened by about a pixel
            area_t = self._areas(tgt[..., :2]).abs()  # (B, F)
            area_s = self._src_area.to(area_t)
            shrink = F.relu(1 - area_t / area_s.clamp_min(1e-6)) * self._eye_tris.to(area_t)
            wgt = shrink.reshape(-1).index_select(0, p.batch * faces.shape[0] + p.face)
            rgb = self._fill_rgb.to(wgt).index_select(0, p.face).T  # (3, P)
            fill = scatter_pixels(torch.cat([wgt[None], wgt[None] * rgb], 0), p, b, s, s)
            fill = gaussian_blur(fill, 0.6)
            out = out * (1 - fill[:, :1]) + fill[:, 1:]
            # mouth interior: the photo's own interior (teeth) moves rigidly with the upper inner lip,
            # not stretched; where that leaves the photo's interior, the dark interior colour
            inside = scatter_pixels(self._mouth_tris.to(rows).index_select(0, p.face)[None], p, b, s, s)
            shift = (tgt[:, self._upper_lip, :2] - self._src_xy[self._upper_lip].to(tgt)).mean(1)  # (B, 2)
            g2 = _pixel_grid((pos - field - shift[:, :, None, None]).permute(0, 2, 3, 1), s, s)
            im = self._int_mask.to(self._source)
            both = torch.cat([self._source * im, im], 1).expand(b, -1, -1, -1)  # premultiplied
            smp = F.grid_sample(both, g2, mode="bilinear", padding_mode="zeros", align_corners=False)
            m = smp[:, 3:4]
            mouth = smp[:, :3] + (1 - m) * self._interior.to(out).view(1, 3, 1, 1)
            out = out * (1 - inside) + inside * mouth

        dtex = tokens_to_texture(w - self._w0.to(w), self.patch)  # (B, 3, T, T)
        uvg = torch.stack([img[:, 2] * 2 - 1, 1 - img[:, 3] * 2], -1)  # (B, S, S, 2), v up
        delta = F.grid_sample(dtex, uvg, mode="bilinear", padding_mode="border", align_corners=False)
        soft = (2 * gaussian_blur(mask, max(1.0, 0.015 * self.face_px)) - 1).clamp(0, 1) * mask
        out = out + soft * delta
        return out.clamp(0, 1)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> WarpRigGenerator:
        dt = dtype or self._source.dtype
        dev = torch.device(device) if device is not None else self._source.device
        self.model = copy.deepcopy(self.model).to(device=dev, dtype=dt)
        self.params = self.params.to(device=dev, dtype=dt)
        self._faces = self._faces.to(dev)
        for k in ("_source", "_resid", "_gain", "_model_xy0", "_psi0", "_src_xy", "_src_area", "_interior", "_fill_rgb", "_int_mask", "_w0"):
            setattr(self, k, getattr(self, k).to(device=dev, dtype=dt))
        self._mouth_tris = self._mouth_tris.to(dev)
        self._eye_tris = self._eye_tris.to(dev)
        self._upper_lip = self._upper_lip.to(dev)
        return self
