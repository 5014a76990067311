"""The engine protocol: what turns (source image, source params, target params) into a new image.

Every engine (the training-free ``warp`` engine here; diffusion engines later) implements
:class:`Engine`. The pipelines in :mod:`facerig.edit` only talk to this protocol:

* :meth:`Engine.prepare` does the per-source work once (crop, source buffers, segmentation, ...)
  and returns an opaque state object;
* :meth:`Engine.render_frame` turns that state and one face's target params into an output image of
  the source image's size (the per-frame hook of :meth:`reenact`);
* :meth:`Engine.edit` = ``prepare`` + ``render_frame`` for one image;
* :meth:`Engine.reenact` yields one output frame per target params of a sequence (default: one
  ``prepare``, then ``render_frame`` per frame, always from the SOURCE image, so there is no drift).
  Diffusion engines may override it to denoise temporal windows together.

Images are RGB ``uint8 (H, W, 3)`` arrays in the source image's frame; params are batch-1
:class:`~facerig.types.FaceParams` of the fitted source face (``params.crop`` set), the target params
come from :mod:`facerig.rig`. ``generator`` is a ``torch.Generator`` (or an int seed) for engines
that sample noise.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from facerig.errors import InvalidInput

__all__ = ["Engine", "PoseRange"]


@dataclass(frozen=True)
class PoseRange:
    """The head poses an engine renders faithfully (degrees, ``docs/conventions.md`` signs).

    ``yaw`` / ``pitch`` / ``roll``: the largest change of each angle *relative to the source's own
    pose* (a pose edit, an ``--absolute`` angle, a reference's pose, a reenactment frame).
    ``source_yaw`` / ``source_pitch``: the largest |angle| of the source's own pose for which the fit
    (and so every edit) is reliable; beyond it the source is refused (a profile photo).
    ``warn_source_yaw``: above this |yaw| the source is accepted with a warning (3/4 views: turning
    them further reveals the hidden cheek, which is filled, not seen).
    """

    yaw: float
    pitch: float
    roll: float
    source_yaw: float = 45.0
    source_pitch: float = 30.0
    warn_source_yaw: float = 30.0

    AXES: ClassVar[tuple[str, str, str]] = ("yaw", "pitch", "roll")

    def limit(self, axis: str) -> float:
        if axis not in self.AXES:
            raise InvalidInput("axis", "yaw, pitch or roll", axis)
        return float(getattr(self, axis))

    def describe(self) -> str:
        return (f"yaw +-{self.yaw:g}, pitch +-{self.pitch:g}, roll +-{self.roll:g} degrees relative to the "
                f"source; source pose within yaw +-{self.source_yaw:g}, pitch +-{self.source_pitch:g}")


class Engine(ABC):
    """Base class of all engines. Subclasses set ``name`` and ``requires_weights``."""

    name: ClassVar[str] = "base"
    requires_weights: ClassVar[bool] = False
    #: one line for ``facerig edit --help`` / the registry listing
    description: ClassVar[str] = ""
    #: point a pose edit keeps in place (facerig.rig.pose.anchor_point): "face" (eye-mouth centre,
    #: as DiffusionRig/RigFace, for engines that generate the whole head) or "head" (the head's
    #: centre, for engines that move the photo's own pixels and must keep hair/outline consistent)
    pose_anchor: ClassVar[str] = "face"
    #: the head poses the engine renders faithfully (relative to the source, plus limits on the
    #: source's own pose); facerig.edit refuses (or with clamp=True clamps) edits beyond it and
    #: reenactment clamps frames to it (facerig.rig.pose.clamp_to_range)
    pose_range: ClassVar[PoseRange] = PoseRange(yaw=30.0, pitch=20.0, roll=30.0)

    def __init__(self, weights: Any = None, device: str = "cpu", **options: Any) -> None:
        if self.requires_weights and weights is None:
            raise InvalidInput("--weights", f"a weights path for the {self.name} engine", None)
        self.weights = weights
        self.device = device
        self.options = dict(options)

    # ---- per-source / per-frame hooks ------------------------------------------------------
    @abstractmethod
    def prepare(self, source_image: np.ndarray, source_params: Any, model: Any, **kw: Any) -> Any:
        """Per-source precomputation, reused for every target (frames of a reenactment)."""

    @abstractmethod
    def render_frame(self, state: Any, target_params: Any, *, generator: Any = None, **kw: Any) -> np.ndarray:
        """One output image (source image size, uint8 RGB) for ``target_params`` (batch 1)."""

    # ---- the two entry points used by the pipelines ----------------------------------------
    def edit(self, source_image: np.ndarray, source_params: Any, target_params: Any, model: Any, *,
             generator: Any = None, **kw: Any) -> np.ndarray:
        """Edit one image: the source face re-rendered with ``target_params``."""
        _check_image(source_image)
        state = self.prepare(source_image, source_params, model, **kw)
        return self.render_frame(state, target_params, generator=generator, **kw)

    def reenact(self, source_image: np.ndarray, source_params: Any, target_sequence: Any, model: Any, *,
                generator: Any = None, progress: Callable[[int, int], None] | None = None,
                driving_frames: Sequence[np.ndarray] | None = None, driving_params: Any = None,
                **kw: Any) -> Iterator[np.ndarray]:
        """Yield one frame per item of ``target_sequence`` (a batched FaceParams or a sequence of
        batch-1 FaceParams), each rendered from the source image.

        ``driving_frames`` / ``driving_params`` (optional, same length as the sequence): the driving
        video's RGB frames and its fitted params (``crop`` set, the driving frame's own geometry).
        When given, frame ``i``'s are passed to :meth:`render_frame` as ``driving_image=`` and
        ``driving_params=`` so an engine can take appearance the source lacks (the mouth interior)
        from the driver; engines that do not use them ignore them."""
        _check_image(source_image)
        state = self.prepare(source_image, source_params, model, **kw)
        n = len(target_sequence)
        for name, seq in (("driving_frames", driving_frames), ("driving_params", driving_params)):
            if seq is not None and len(seq) != n:
                raise InvalidInput(name, f"{n} items (one per target frame)", len(seq))
        for i in range(n):
            item = target_sequence[i]
            per: dict[str, Any] = {}
            if driving_frames is not None:
                per["driving_image"] = driving_frames[i]
            if driving_params is not None:
                per["driving_params"] = driving_params[i]
            yield self.render_frame(state, item, generator=generator, **per, **kw)
            if progress is not None:
                progress(i + 1, n)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _check_image(image: Any) -> None:
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise InvalidInput("source_image", "an RGB uint8 (H, W, 3) array", f"{a.dtype} {a.shape}")


def as_sequence(params: Any) -> Sequence[Any]:
    """A batched FaceParams already indexes like a sequence; lists pass through."""
    return params
