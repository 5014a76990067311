"""Next3D (Sun et al., CVPR 2023) as a RigGenerator, through the USER's installed code and weights.

Next3D is not on PyPI: the user clones its repository and downloads a generator pickle. This adapter
puts that folder on ``sys.path`` lazily (``repo=`` or ``FACERIG_NEXT3D_REPO``), loads the pickle with
the repository's own ``legacy.load_network_pkl`` (``network=`` or ``FACERIG_NEXT3D_PKL``) and drives
the generator the way the repository's scripts do: ``ws = G.mapping(z, c, truncation_psi,
truncation_cutoff)`` and ``G.synthesis(ws=ws, c=c, v=vertices, noise_mode="const")["image"]`` in
[-1, 1], with ``c`` = camera-to-world (16) + normalised intrinsics (9) and ``v`` the FLAME vertices
(5023, plus 3D landmarks appended when ``G.load_lms`` is set).

Trust: StyleGAN/EG3D-format pickles embed Python source and run it on load, so facerig's restricted
unpickler (:mod:`facerig.io.safe_pickle`) cannot load them. Loading needs ``trust_pickle=True``: the
user vouches for the file, as with running the repository's own scripts.

Source: a sample of the generator (``seed`` -> z -> w0), with the mesh of ``params``/``model`` (a
FLAME fit) at ``psi0`` = the fit's expression. w = ws (num_ws rows of w_dim; 28 x 512 for the
released FFHQ model). psi = the face model's expression coefficients (plus the 3 jaw angles for a
FLAME model with a jaw joint).

NOT verified here (no Next3D code or weights on this machine; the tests use a fake module): the
vertex frame Next3D expects (``vertex_scale`` / ``vertex_offset`` map facerig's head frame to it),
the default camera, and gradients to psi -- the released ``TriPlaneGenerator.rasterize`` detaches
the vertices (``v.detach()``) and the UV grid, so as released no gradient reaches psi through
``synthesis``; only w receives gradients unless the user's copy removes those detaches.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from facerig.errors import AssetMissing, InvalidInput

log = logging.getLogger(__name__)

__all__ = ["Next3DGenerator", "build_next3d", "load_next3d"]

INSTALL_HINT = ("clone https://github.com/MrTornado24/Next3D, download its generator pickle, and pass "
                "repo=FOLDER network=PKL trust_pickle=True (or set FACERIG_NEXT3D_REPO / FACERIG_NEXT3D_PKL)")

#: the FFHQ intrinsics of the Next3D/EG3D scripts (focal in units of the image side, centre 0.5)
FFHQ_FOCAL = 4.2647


def load_next3d(repo: str | os.PathLike | None = None, network: str | os.PathLike | None = None, *,
                trust_pickle: bool = False, device: str | torch.device = "cpu") -> Any:
    """The user's Next3D generator ``G_ema`` from ``network`` (a pickle), importing the repository at
    ``repo``. Raises AssetMissing with an install hint when either is absent, InvalidInput unless
    ``trust_pickle``."""
    repo = repo or os.environ.get("FACERIG_NEXT3D_REPO")
    network = network or os.environ.get("FACERIG_NEXT3D_PKL")
    if not repo:
        raise AssetMissing("Next3D code", "repo= / FACERIG_NEXT3D_REPO", INSTALL_HINT)
    if not Path(repo).is_dir():
        raise AssetMissing(f"Next3D code {repo}", str(repo), INSTALL_HINT)
    if not network:
        raise AssetMissing("Next3D generator pickle", "network= / FACERIG_NEXT3D_PKL", INSTALL_HINT)
    if not Path(network).is_file():
        raise AssetMissing(f"Next3D generator pickle {network}", str(Path(network).parent), INSTALL_HINT)
    if trust_pickle is not True:
        raise InvalidInput("trust_pickle", "True: Next3D pickles embed code that runs on load (facerig's "
                           "restricted unpickler cannot read them); pass it only for a file you trust", trust_pickle)
    root = str(Path(repo).resolve())
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        legacy = importlib.import_module("legacy")
    except ImportError as e:
        raise AssetMissing(f"Next3D's legacy module ({e})", root, INSTALL_HINT + "; install its requirements") from None
    with open(network, "rb") as f:
        data = legacy.load_network_pkl(f)
    g = data.get("G_ema") if isinstance(data, dict) else None
    if g is None:
        raise InvalidInput("network", "a Next3D network pickle holding 'G_ema'", str(network))
    return g.eval().requires_grad_(False).to(device)


def frontal_camera(g: Any, device: torch.device | str = "cpu") -> torch.Tensor:
    """c (1, 25) of the repository's scripts: ``camera_utils.LookAtPoseSampler.sample(pi/2, pi/2,
    avg_camera_pivot, radius=avg_camera_radius)`` and the FFHQ intrinsics."""
    try:
        cu = importlib.import_module("camera_utils")
    except ImportError as e:
        raise AssetMissing(f"Next3D's camera_utils ({e})", "the Next3D repository", "pass camera= (1, 25) or " + INSTALL_HINT) from None
    rk = getattr(g, "rendering_kwargs", {}) or {}
    pivot = torch.tensor(rk.get("avg_camera_pivot", [0.0, 0.0, 0.0]), dtype=torch.float32, device=device)
    pose = cu.LookAtPoseSampler.sample(math.pi / 2, math.pi / 2, pivot, radius=rk.get("avg_camera_radius", 2.7),
                                       device=device)
    k = torch.tensor([[FFHQ_FOCAL, 0, 0.5], [0, FFHQ_FOCAL, 0.5], [0, 0, 1]], dtype=torch.float32, device=device)
    return torch.cat([pose.reshape(-1, 16), k.reshape(-1, 9)], 1)


class Next3DGenerator:
    """RigGenerator over a loaded Next3D generator ``g`` (see the module docstring).

    ``model`` the face model of the mesh (FLAME for the released weights); ``params`` a batch-1 fit
    for the mesh's identity, jaw and ``psi0`` (None: mean identity, neutral). Options: ``camera``
    c (1, 25) (default: the scripts' frontal camera), ``seed`` of the sample's z (0),
    ``truncation_psi`` (0.7), ``truncation_cutoff`` (14), ``vertex_scale`` / ``vertex_offset`` head
    frame -> Next3D's vertex frame (1, 0), ``landmarks3d`` a callable (B, V, 3) -> (B, L, 3) appended
    to the vertices when ``g.load_lms`` (default: ``model.landmarks``).
    """

    name = "next3d"

    def __init__(self, g: Any, model: Any, params: Any = None, *, camera: torch.Tensor | None = None,
                 seed: int = 0, truncation_psi: float = 0.7, truncation_cutoff: int = 14,
                 vertex_scale: float = 1.0, vertex_offset: tuple[float, float, float] = (0.0, 0.0, 0.0),
                 landmarks3d: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 device: str | torch.device | None = None) -> None:
        for attr in ("mapping", "synthesis", "z_dim", "img_resolution"):
            if not hasattr(g, attr):
                raise InvalidInput("g", "a Next3D generator (G_ema with mapping, synthesis, z_dim, img_resolution)",
                                   f"{type(g).__name__} without {attr}")
        self.g = g
        self.model = model
        try:
            dev = torch.device(device) if device is not None else next(g.parameters()).device
        except (StopIteration, AttributeError, TypeError):
            dev = torch.device("cpu")
        self.device = dev
        self.jaw = bool(getattr(model, "has_jaw_joint", False))
        names = tuple(model.expression_names)
        self.psi_names = names + (("jaw_x", "jaw_y", "jaw_z") if self.jaw else ())
        k_exp = len(names)
        if params is not None:
            if params.batch_size != 1:
                raise InvalidInput("params", "the FaceParams of one face (batch 1)", params.batch_size)
            self._identity = params.identity.float().to(dev)
            expr = params.expression.float().to(dev)
            jaw = params.jaw_pose.float().to(dev) if params.jaw_pose is not None else torch.zeros(1, 3, device=dev)
        else:
            self._identity = torch.zeros(1, model.n_identity, device=dev)
            expr = torch.zeros(1, k_exp, device=dev)
            jaw = torch.zeros(1, 3, device=dev)
        self._psi0 = torch.cat([expr, jaw], 1) if self.jaw else expr
        self.vertex_scale = float(vertex_scale)
        self.vertex_offset = torch.tensor(vertex_offset, dtype=torch.float32, device=dev)
        self.landmarks3d = landmarks3d
        self.c = (camera if camera is not None else frontal_camera(g, dev)).to(dev).float()
        if tuple(self.c.shape) != (1, 25):
            raise InvalidInput("camera", "c of shape (1, 25): cam2world (16) + intrinsics (9)", tuple(self.c.shape))
        self.truncation_psi = float(truncation_psi)
        self.truncation_cutoff = int(truncation_cutoff)
        gen = torch.Generator().manual_seed(int(seed))
        z = torch.randn(1, int(g.z_dim), generator=gen).to(dev)
        with torch.no_grad():
            self._w0 = g.mapping(z, self.c, truncation_psi=self.truncation_psi,
                                 truncation_cutoff=self.truncation_cutoff).float()
        self.w_shape = (int(self._w0.shape[1]), int(self._w0.shape[2]))
        s = int(g.img_resolution)
        self.image_size = (s, s)
        with torch.no_grad():
            self._source = self.render(self._w0, self._psi0)

    # ---- mesh ------------------------------------------------------------------------------------
    def _check_psi(self, psi: torch.Tensor) -> torch.Tensor:
        if not isinstance(psi, torch.Tensor) or psi.ndim != 2 or psi.shape[1] != len(self.psi_names):
            raise InvalidInput("psi", f"a (B, {len(self.psi_names)}) tensor", tuple(psi.shape)
                               if isinstance(psi, torch.Tensor) else type(psi).__name__)
        return psi.to(self.device, torch.float32)

    def vertices(self, psi: torch.Tensor) -> torch.Tensor:
        """Next3D-frame vertices (B, V, 3) for ``psi``; differentiable."""
        psi = self._check_psi(psi)
        b = psi.shape[0]
        k = len(self.model.expression_names)
        jaw = psi[:, k:] if self.jaw else None
        v = self.model(self._identity.expand(b, -1), psi[:, :k], jaw)
        return v * self.vertex_scale + self.vertex_offset

    def _g_vertices(self, v: torch.Tensor) -> torch.Tensor:
        if not getattr(self.g, "load_lms", False):
            return v
        lm = self.landmarks3d(v) if self.landmarks3d is not None else self.model.landmarks(v)
        return torch.cat([v, lm], 1)

    # ---- protocol --------------------------------------------------------------------------------
    def initial(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._w0.detach().clone(), self._psi0.detach().clone()

    def source_image(self) -> torch.Tensor:
        return self._source.detach().clone()

    def render(self, w: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
        n, d = self.w_shape
        if not isinstance(w, torch.Tensor) or w.ndim != 3 or tuple(w.shape[1:]) != (n, d):
            raise InvalidInput("w", f"a (B, {n}, {d}) tensor of ws", tuple(w.shape) if isinstance(w, torch.Tensor)
                               else type(w).__name__)
        v = self.vertices(psi)
        b = max(w.shape[0], v.shape[0])
        w = w.to(self.device).expand(b, -1, -1)
        v = self._g_vertices(v).expand(b, -1, -1)
        out = self.g.synthesis(ws=w, c=self.c.expand(b, -1), v=v, noise_mode="const")["image"]
        return ((out.float() + 1) / 2).clamp(0, 1)

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """Next3D-frame points (B, L, 3) -> render pixels (B, L, 2) with the camera ``c`` (OpenCV
        camera axes, intrinsics in units of the image side, as EG3D's ray sampler)."""
        cam2world = self.c[:, :16].reshape(4, 4)
        k = self.c[:, 16:25].reshape(3, 3)
        world2cam = torch.linalg.inv(cam2world)
        p = points @ world2cam[:3, :3].T + world2cam[:3, 3]
        uv = p @ k.T
        uv = uv[..., :2] / uv[..., 2:3]
        return uv * torch.tensor(self.image_size[::-1], dtype=uv.dtype, device=uv.device)

    def landmarks(self, psi: torch.Tensor) -> torch.Tensor:
        """The face model's landmarks (B, L, 2) projected with ``c``; differentiable in psi (what
        Next3D draws follows the mesh only as far as the generator learnt to)."""
        return self.project(self.model.landmarks(self.vertices(psi)))

    def points5(self) -> torch.Tensor:
        from facerig.eval.identity import MEDIAPIPE_TO_DLIB5

        li = self.model.landmark_index.long().tolist()
        ids = list(MEDIAPIPE_TO_DLIB5)
        if not all(i in li for i in ids):
            raise InvalidInput("model", "a face model whose landmarks include MediaPipe's 5-point ids", self.model.name)
        lm = self.landmarks(self._psi0)[0].detach()
        return (lm[[li.index(i) for i in ids]] - 0.5)[None]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Next3DGenerator:
        dev = torch.device(device) if device is not None else self.device
        self.g = self.g.to(dev)
        self.model = self.model.to(dev)
        self.device = dev
        for k in ("_identity", "_psi0", "vertex_offset", "c", "_w0", "_source"):
            setattr(self, k, getattr(self, k).to(dev))
        return self


def build_next3d(image: Any, params: Any, model: Any, *, g: Any = None, repo: str | None = None,
                 network: str | None = None, trust_pickle: bool = False, device: str = "cpu",
                 **kw: Any) -> Next3DGenerator:
    """The registry's builder: ``g`` (a loaded generator) or ``repo`` + ``network`` (see
    :func:`load_next3d`). ``image`` is not used (the source is the generator's sample; GAN inversion
    of the photo is not implemented); ``params`` give the mesh's identity and psi0."""
    if g is None:
        g = load_next3d(repo, network, trust_pickle=trust_pickle, device=device)
    if image is not None:
        log.info("next3d generator: the source is the generator's sample (seed), not the photo "
                 "(no GAN inversion); the photo's fit gives the mesh")
    return Next3DGenerator(g, model, params, device=device, **kw)
