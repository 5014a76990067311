"""The generator-agnostic interface the dual mappers edit through (``RigGenerator``).

A rig generator is built around ONE source face (a photo and its fit, or a generator's own sample)
and renders, differentiably, an image from

* ``w``: the appearance latent, always laid out as tokens ``(B, N, D)`` (``w_shape = (N, D)``), and
* ``psi``: expression coefficients ``(B, K)`` named by ``psi_names`` (the face model's expression
  names for the warp adapter; FLAME expression PCA + jaw for FLAME-driven generators).

``initial()`` gives the source's own ``(w0, psi0)``; ``render(w0, psi0)`` reproduces the source as
well as the generator can. The mappers predict deltas ``dw, dpsi`` (never raw values) and the
objectives read only ``render``'s pixels plus the source-side facts below, so any generator that
implements this protocol can be edited and trained against.

Source-side facts (all in ``render``'s pixel frame: x right, y down, pixel centres at +0.5):

* ``source_image()`` (1, 3, H, W) in [0, 1]: the photo (or sample) the generator reproduces; the
  identity target and the reference of the offline expression probe;
* ``points5()`` (1, 5, 2): dlib-ordered 5-point landmarks of the source face in dlib pixel
  coordinates (the frame's coordinates minus 0.5, as :func:`facerig.eval.identity.mediapipe_to_dlib5`
  gives them), for the identity network's chip alignment (:class:`facerig.eval.identity.IdentityLoss`);
* ``landmarks(psi)`` (B, L, 2): the face model's 2D landmarks for expression ``psi`` at the
  source's identity and pose, differentiable in ``psi``. Objectives use it ONLY to linearise how
  landmarks respond to the expression (a Jacobian at ``psi0``) and where they sit on the source,
  never as a prediction of what ``render`` drew.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

__all__ = ["RigGenerator", "check_generator"]


@runtime_checkable
class RigGenerator(Protocol):
    name: str
    #: (N, D): tokens of the appearance latent
    w_shape: tuple[int, int]
    #: names of the K expression coefficients
    psi_names: tuple[str, ...]
    #: (H, W) of ``render``'s output
    image_size: tuple[int, int]

    def initial(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The source's ``w0`` (1, N, D) and ``psi0`` (1, K), detached."""
        ...

    def render(self, w: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1], differentiable in ``w`` and ``psi``."""
        ...

    def source_image(self) -> torch.Tensor:
        ...

    def points5(self) -> torch.Tensor:
        ...

    def landmarks(self, psi: torch.Tensor) -> torch.Tensor:
        ...

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> RigGenerator:
        ...


def check_generator(g: RigGenerator) -> None:
    """Validate a generator's declared shapes against what it returns (raises InvalidInput)."""
    from facerig.errors import InvalidInput

    if not isinstance(g, RigGenerator):
        raise InvalidInput("generator", "an object implementing facerig's RigGenerator protocol", type(g).__name__)
    n, d = g.w_shape
    w0, psi0 = g.initial()
    if tuple(w0.shape) != (1, n, d):
        raise InvalidInput("generator.initial()[0]", f"w0 of shape (1, {n}, {d})", tuple(w0.shape))
    if tuple(psi0.shape) != (1, len(g.psi_names)):
        raise InvalidInput("generator.initial()[1]", f"psi0 of shape (1, {len(g.psi_names)})", tuple(psi0.shape))
    h, w = g.image_size
    src = g.source_image()
    if tuple(src.shape) != (1, 3, h, w):
        raise InvalidInput("generator.source_image()", f"(1, 3, {h}, {w})", tuple(src.shape))
    p5 = g.points5()
    if tuple(p5.shape) != (1, 5, 2):
        raise InvalidInput("generator.points5()", "(1, 5, 2)", tuple(p5.shape))
