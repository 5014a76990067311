"""Generators the dual mappers can edit through (:class:`~facerig.engines.dualmapper.RigGenerator`).

``GENERATORS`` maps a name to a builder ``(image, params, model, **options) -> RigGenerator``;
:func:`build_generator` is the one entry point. Each adapter module is imported only when built
(the DiffusionRig adapter imports diffusers; Next3D is the user's own code):

* ``"warp"`` -- :class:`.warp.WarpRigGenerator`: the photo's pixels moved by the face model's
  expression (differentiable warp) plus a UV-texture appearance latent; no weights needed;
* ``"diffusionrig"`` -- :class:`.diffusionrig.DiffusionRigGenerator`: DiffusionRig weights
  (``weights=`` a pipeline folder or ``model_*.pt``, or ``pipeline=`` an in-memory
  :class:`~facerig.engines.diffusionrig.DiffusionRigPipeline`); w = the global code, psi = the face
  model's expression through the buffers, few-step DDIM with gradient checkpointing;
* ``"next3d"`` -- :class:`.next3d.Next3DGenerator`: the user's installed Next3D (``repo=`` and
  ``network=``, or the ``FACERIG_NEXT3D_REPO`` / ``FACERIG_NEXT3D_PKL`` environment variables).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from facerig.errors import InvalidInput

__all__ = ["GENERATORS", "build_generator"]


def _warp(image: Any, params: Any, model: Any, **kw: Any) -> Any:
    from .warp import WarpRigGenerator

    return WarpRigGenerator(image, params, model, **kw)


def _diffusionrig(image: Any, params: Any, model: Any, **kw: Any) -> Any:
    from .diffusionrig import build_diffusionrig

    return build_diffusionrig(image, params, model, **kw)


def _next3d(image: Any, params: Any, model: Any, **kw: Any) -> Any:
    from .next3d import build_next3d

    return build_next3d(image, params, model, **kw)


#: name -> builder ``(image (H, W, 3) uint8, params (batch-1 FaceParams), model, **options)``
GENERATORS: dict[str, Callable[..., Any]] = {"warp": _warp, "diffusionrig": _diffusionrig, "next3d": _next3d}


def build_generator(name: str, image: Any, params: Any, model: Any, **kw: Any) -> Any:
    """The RigGenerator ``name`` (one of :data:`GENERATORS`) around one source: ``image`` (H, W, 3)
    uint8, ``params`` its batch-1 fit (facerig's ``fit_image``), ``model`` the face model of the fit;
    ``kw`` the adapter's options. Raises InvalidInput for an unknown name or bad options and
    AssetMissing / MissingDependency when weights or optional code are absent."""
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in GENERATORS:
        raise InvalidInput("generator", f"one of {', '.join(sorted(GENERATORS))}", name)
    try:
        return GENERATORS[key](image, params, model, **kw)
    except TypeError as e:  # an unknown keyword option: name it, as the other typed errors do
        if "unexpected keyword argument" in str(e):
            raise InvalidInput(f"{key} generator options", "the adapter's documented options", str(e)) from None
        raise
