"""Fixtures of the dual-mapper tests: a tiny analytic RigGenerator and a tiny random CLIP folder."""

from __future__ import annotations

import pytest
import torch

PSI_NAMES = ("mouthSmile_L", "mouthSmile_R", "eyeBlink_L", "eyeBlink_R", "browInnerUp", "browDown_L", "browDown_R",
             "jawOpen")

# 64 x 64 frame coordinates (x right, y down); the subject's left (_L) is the image's right
_BASE = [
    (16.0, 19.0), (26.0, 20.0), (38.0, 20.0), (48.0, 19.0),  # brows: image-left outer/inner, image-right inner/outer
    (21.0, 25.0), (21.0, 33.0), (43.0, 25.0), (43.0, 33.0),  # lids: image-left upper/lower, image-right upper/lower
    (24.0, 46.0), (40.0, 46.0), (32.0, 42.0), (32.0, 50.0),  # mouth: image-left/right corner, upper/lower lip
    (32.0, 37.0), (32.0, 55.0),  # nose, chin
]


def _motion() -> torch.Tensor:
    """(K, L, 2) landmark displacement in pixels per unit of each coefficient."""
    a = torch.zeros(len(PSI_NAMES), len(_BASE), 2)
    a[0, 9] = torch.tensor([3.0, -3.0])  # mouthSmile_L: image-right corner out and up
    a[1, 8] = torch.tensor([-3.0, -3.0])
    a[2, 6] = torch.tensor([0.0, 4.0])  # eyeBlink_L: image-right upper lid down
    a[2, 7] = torch.tensor([0.0, -1.0])
    a[3, 4] = torch.tensor([0.0, 4.0])
    a[3, 5] = torch.tensor([0.0, -1.0])
    a[4, 1] = a[4, 2] = torch.tensor([0.0, -3.0])  # browInnerUp
    a[4, 0] = a[4, 3] = torch.tensor([0.0, -1.0])
    a[5, 2] = torch.tensor([-1.5, 3.0])  # browDown_L: image-right brow down, inner end inwards
    a[5, 3] = torch.tensor([0.0, 3.0])
    a[6, 1] = torch.tensor([1.5, 3.0])
    a[6, 0] = torch.tensor([0.0, 3.0])
    a[7, 11] = torch.tensor([0.0, 4.0])  # jawOpen
    a[7, 13] = torch.tensor([0.0, 4.0])
    return a


class TinyRigGenerator:
    """64 x 64 analytic face: an ellipse whose colour comes from w token 0, dark Gaussian blobs (colour
    from w token 1) at ``landmarks(psi) = base + psi @ motion`` (exact, linear), a shading ramp from
    w token 1. ``psi_blind=True`` draws the blobs at the SOURCE expression whatever psi is (a
    generator whose render ignores psi, for the non-circularity test)."""

    def __init__(self, seed: int = 0, psi0: torch.Tensor | None = None, psi_blind: bool = False, size: int = 64):
        g = torch.Generator().manual_seed(seed)
        self.name = "tiny"
        self.w_shape = (2, 8)
        self.psi_names = PSI_NAMES
        self.image_size = (size, size)
        self.psi_blind = psi_blind
        self.s = size / 64
        self.base = torch.tensor(_BASE) * self.s
        self.motion = _motion() * self.s
        self.w0 = (torch.randn(1, 2, 8, generator=g) * 0.5)
        self.psi0 = psi0.clone() if psi0 is not None else torch.rand(1, len(PSI_NAMES), generator=g) * 0.2

    def initial(self):
        return self.w0.clone(), self.psi0.clone()

    def landmarks(self, psi):
        return self.base.to(psi) + torch.einsum("bk,kld->bld", psi, self.motion.to(psi))

    def render(self, w, psi):
        b = w.shape[0]
        h, wd = self.image_size
        ys = (torch.arange(h, dtype=w.dtype) + 0.5)[:, None].expand(h, wd)
        xs = (torch.arange(wd, dtype=w.dtype) + 0.5)[None, :].expand(h, wd)
        skin = torch.sigmoid(w[:, 0, :3] + 1.0)[:, :, None, None]
        bg = torch.sigmoid(w[:, 0, 3:6] - 1.0)[:, :, None, None]
        ink = torch.sigmoid(w[:, 1, :3] - 2.0)[:, :, None, None]
        ramp = 0.1 * torch.tanh(w[:, 1, 3])[:, None, None, None] * ((xs - wd / 2) / wd)[None, None]
        face = torch.sigmoid((1 - ((xs - 32 * self.s) / (22 * self.s)) ** 2 - ((ys - 36 * self.s) / (28 * self.s)) ** 2)
                             * 12)[None, None]
        img = bg + (skin + ramp - bg) * face
        p = self.landmarks(self.psi0.expand(b, -1).to(w) if self.psi_blind else psi)  # (B, L, 2)
        sig = 1.3 * self.s
        d2 = (xs[None, None] - p[..., 0, None, None]) ** 2 + (ys[None, None] - p[..., 1, None, None]) ** 2
        blob = torch.exp(-d2 / (2 * sig * sig)).sum(1).clamp(max=1.0)[:, None]  # (B, 1, H, W)
        img = img + (ink - img) * blob * 0.9
        return img.clamp(0, 1)

    def source_image(self):
        return self.render(self.w0, self.psi0).detach()

    def points5(self):
        pts = torch.tensor([[47.0, 29.0], [39.0, 29.0], [17.0, 29.0], [25.0, 29.0], [32.0, 39.0]]) * self.s - 0.5
        return pts[None]

    def to(self, device=None, dtype=None):
        for k in ("base", "motion", "w0", "psi0"):
            setattr(self, k, getattr(self, k).to(device=device, dtype=dtype))
        return self


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run 10-100x faster on one thread than on two busy cores (measured: mapper step
    0.58 s -> 0.008 s); restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def tiny_gen():
    return TinyRigGenerator(seed=0)


@pytest.fixture
def make_gen():
    """The TinyRigGenerator class (tests import no helpers from conftest: pytest's importlib mode)."""
    return TinyRigGenerator


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    """A tiny random transformers CLIPModel (hidden 32, 2 layers, 32 px images, patch 8) and a byte-level
    CLIP tokenizer without merges, saved to a folder (no downloads)."""
    pytest.importorskip("transformers")
    from facerig.engines.sd.base import write_tiny_clip

    return write_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))
