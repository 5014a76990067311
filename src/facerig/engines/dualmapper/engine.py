"""``--engine dualmapper``: edit a photo with trained dual mappers (``facerig train dualmapper``).

The engine loads one or more mapper pairs (``mapper=PATH`` or a list; each a folder written by
:meth:`DualMapper.save_pretrained`), builds the generator they were trained on around the photo
(the name in their config; ``warp`` unless said otherwise), and applies them one after another
(:func:`~facerig.engines.dualmapper.mapper.compose`) to the source's ``(w0, psi)``, where ``psi`` is
the TARGET's expression (the source's own, plus any expression edit given with the mappers).

Rendering the result:

* ``warp`` generator: the edited expression is rendered at the photo's own resolution by the warp
  engine (the differentiable adapter works on a bounded crop for training; the warp engine is the
  same idea without that bound, with its eye, mouth and glasses handling), and the appearance edit
  ``render(w', psi') - render(w0, psi')`` of the adapter (its crop, low-frequency: a 32 px UV
  texture) is resampled into the frame and added. Pose and light edits given with the mappers go
  through the warp engine as usual, within its faithful range.
* other generators: the photo plus the resampled difference ``render(w', psi') - render(w0, psi0)``
  of the generator's crop (so the photo keeps its resolution where nothing changes); pose and light
  edits are refused (the adapters edit the expression only).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from facerig.engines.base import Engine, PoseRange
from facerig.engines.warp.engine import WarpEngine
from facerig.errors import InvalidInput

log = logging.getLogger(__name__)

__all__ = ["DualMapperEngine", "load_mappers", "paste_offset"]


def load_mappers(paths: Any) -> list[Any]:
    """DualMapper pairs from a path, a list of paths (``--mapper`` repeated), each possibly a
    comma-separated string of paths (the UI's weights field)."""
    from facerig.engines.dualmapper.mapper import DualMapper

    given = [paths] if isinstance(paths, (str, Path)) else list(paths or [])
    items = [p for it in given for p in str(it).split(",") if p.strip()]
    if not items:
        raise InvalidInput("--mapper", "a mapper folder written by `facerig train dualmapper` (repeatable)", None)
    out = []
    for p in items:
        path = Path(p.strip()).expanduser()
        if not (path / "config.json").is_file():
            raise InvalidInput("--mapper", "a mapper folder (config.json + safetensors weights) written by "
                               "`facerig train dualmapper`", str(path))
        m = DualMapper.from_pretrained(str(path))
        m.requires_grad_(False).eval()
        out.append(m)
    first = out[0]
    for i, m in enumerate(out[1:], 1):
        if (m.config.generator, tuple(m.psi_names), m.config.w_tokens, m.config.w_dim) != (
                first.config.generator, tuple(first.psi_names), first.config.w_tokens, first.config.w_dim):
            raise InvalidInput(f"--mapper #{i + 1}", f"a mapper of the same generator layout as the first "
                               f"({first.config.generator}, w {first.config.w_tokens}x{first.config.w_dim}, "
                               f"{first.config.n_psi} psi)", f"{m.config.generator}, w {m.config.w_tokens}x"
                               f"{m.config.w_dim}, {m.config.n_psi} psi")
    return out


def paste_offset(frame: np.ndarray, offset: np.ndarray, origin: tuple[float, float], k: float) -> np.ndarray:
    """``frame`` (H, W, 3) uint8 plus ``offset`` (S, S, 3) float in [-1, 1] units of a crop whose pixel
    (0, 0) starts at frame point ``origin`` with ``k`` frame pixels per crop pixel (resampled
    bilinearly; zero outside the crop)."""
    import cv2

    h, w = frame.shape[:2]
    ox, oy = origin
    # crop pixel centre c + 0.5 lies at frame point k (c + 0.5) + o, frame pixel centre f + 0.5
    m = np.array([[k, 0.0, ox + 0.5 * k - 0.5], [0.0, k, oy + 0.5 * k - 0.5]], np.float64)
    off = cv2.warpAffine(offset.astype(np.float32), m, (w, h), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=(0.0, 0.0, 0.0))
    return np.clip(frame.astype(np.float32) + 255.0 * off, 0, 255).round().astype(np.uint8)


@dataclasses.dataclass
class _State:
    generator: Any
    w0: torch.Tensor
    psi0: torch.Tensor
    source_image: np.ndarray
    source_params: Any
    model: Any
    warp_state: Any = None


class DualMapperEngine(Engine):
    """Dual-mapper edits (see the module docstring). Options: ``mapper`` (path(s), required),
    ``generator_options`` (dict for the generator's builder; e.g. ``size``), ``warp_options`` (dict
    for the warp engine that renders the warp generator's result), ``device``."""

    name: ClassVar[str] = "dualmapper"
    requires_weights: ClassVar[bool] = False
    description: ClassVar[str] = ("text-trained dual mappers over a rig generator (`facerig train dualmapper`; "
                                  "--mapper PATH, repeatable)")
    pose_anchor: ClassVar[str] = "head"
    #: the warp generator's results are rendered by the warp engine, so pose edits within its range
    #: go with the mappers (other generators refuse pose edits in render_frame)
    pose_range: ClassVar[PoseRange] = WarpEngine.pose_range
    #: the mappers are the edit: an edit with nothing else given is not empty
    edits_itself: ClassVar[bool] = True

    def __init__(self, weights: Any = None, device: str = "cpu", mapper: Any = None,
                 generator_options: dict[str, Any] | None = None, warp_options: dict[str, Any] | None = None,
                 **options: Any) -> None:
        if mapper is None and weights is not None:  # --weights PATH as the mapper too
            mapper = weights
        super().__init__(weights=None, device=device, **options)
        self.mappers = load_mappers(mapper)
        self.generator_name = str(self.mappers[0].config.generator or "warp")
        self.generator_options = dict(generator_options or {})
        if device in (None, "auto"):
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        for m in self.mappers:
            m.to(self.device)
        self._warp = None
        if self.generator_name == "warp":
            self._warp = WarpEngine(**dict(warp_options or {}))

    def describe(self) -> list[dict[str, Any]]:
        return [m.describe() for m in self.mappers]

    def prepare(self, source_image: np.ndarray, source_params: Any, model: Any, **kw: Any) -> _State:
        from facerig.engines.dualmapper.adapters import build_generator
        from facerig.engines.dualmapper.generator import check_generator

        gen = build_generator(self.generator_name, source_image, source_params, model, **self.generator_options)
        if str(self.device) != "cpu":
            gen = gen.to(self.device)
        check_generator(gen)
        m = self.mappers[0]
        if tuple(gen.psi_names) != tuple(m.psi_names) or tuple(gen.w_shape) != (m.config.w_tokens, m.config.w_dim):
            raise InvalidInput("--mapper", f"a mapper trained on this generator's layout ({self.generator_name}: w "
                               f"{gen.w_shape[0]}x{gen.w_shape[1]}, {len(gen.psi_names)} expression coefficients of "
                               f"{model.name})", f"w {m.config.w_tokens}x{m.config.w_dim}, {m.config.n_psi} psi",
                               hint="train it with the same --generator, face model and generator options")
        w0, psi0 = gen.initial()
        st = _State(gen, w0.detach(), psi0.detach(), source_image, source_params, model)
        if self._warp is not None:
            st.warp_state = self._warp.prepare(source_image, source_params, model)
        return st

    @torch.no_grad()
    def edited(self, state: _State, target_params: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(w', psi', psi_t)``: the mappers applied to the source's w0 and the target's expression."""
        from facerig.engines.dualmapper.mapper import compose

        psi_t = target_params.expression.to(state.psi0)
        if psi_t.shape != state.psi0.shape:
            raise InvalidInput("target_params.expression", f"{tuple(state.psi0.shape)} coefficients",
                               tuple(psi_t.shape))
        w1, psi1 = compose(self.mappers, state.w0, psi_t)
        rng = getattr(state.model, "expression_range", None)
        if rng is not None:  # a mapper saved without bounds must not drive a blendshape negative
            psi1 = psi1.clamp(float(rng[0]), float(rng[1]))
        return w1, psi1, psi_t

    def render_frame(self, state: _State, target_params: Any, *, generator: Any = None, **kw: Any) -> np.ndarray:
        w1, psi1, psi_t = self.edited(state, target_params)
        g = state.generator
        origin, k = getattr(g, "origin", None), getattr(g, "k", None)
        with torch.no_grad():
            if state.warp_state is not None:
                assert self._warp is not None
                tgt = dataclasses.replace(target_params, expression=psi1.to(target_params.expression))
                out = self._warp.render_frame(state.warp_state, tgt)
                if torch.equal(w1, state.w0):  # no appearance change: no adapter renders
                    return out
                off = g.render(w1, psi1) - g.render(state.w0, psi1)
            else:
                sp, tp = state.source_params, target_params
                changed = [n for n in ("rotation", "light", "camera")
                           if not torch.allclose(getattr(sp, n).double(), getattr(tp, n).double(), atol=1e-6)]
                if changed:
                    raise InvalidInput(", ".join(changed), f"no {'/'.join(changed)} edit with the "
                                       f"{self.generator_name} generator (its adapter edits the expression only)",
                                       "an edit of it")
                out = state.source_image
                off = g.render(w1, psi1) - g.render(state.w0, state.psi0)
        if origin is None or k is None:
            raise InvalidInput("generator", "an adapter that says where its crop lies (origin, k)",
                               type(g).__name__)
        return paste_offset(out, off[0].permute(1, 2, 0).float().cpu().numpy(), origin, float(k))

