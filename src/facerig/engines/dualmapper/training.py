"""Training one dual-mapper pair for one target expression, and editing with trained pairs.

:func:`train_mapper` optimises ONE :class:`~.mapper.DualMapper` over several sources: each step
draws ``batch`` sources (from a sequence of generators, uniformly with the given
``torch.Generator``, or from a factory called with it), predicts ``dw, dpsi`` from each source's own
``(w0, psi0)``, renders ``generator.render(*mapper.apply(w0, psi0))`` and minimises

``sum_objectives weight * term(render) + w_weight * l2_dw + psi_weight * l2_dpsi``

averaged over the batch, with Adam. Objectives are bound to each source of a sequence once (their
source-side targets are cached per generator object); a factory's sources are bound when drawn. The history records every term (unweighted, batch mean)
and the weighted ``total`` at every step.

Checkpoints (``save_dir``): ``final/`` (``save_pretrained``: config + safetensors) and
``history.json`` at the end; with ``save_every=K`` also ``checkpoint/`` every K steps: the mapper
folder plus ``state.pt`` (optimizer state, step, the torch.Generator state, the history so far;
read back with ``torch.load(weights_only=True)``); ``resume=True`` continues from it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import torch

from facerig.engines.dualmapper.generator import RigGenerator, check_generator
from facerig.engines.dualmapper.mapper import DualMapper, compose
from facerig.engines.dualmapper.objective import BoundObjective, DeltaPenalty, Objective
from facerig.errors import InvalidInput

__all__ = ["edit_with_mappers", "mapper_for", "train_mapper"]

log = logging.getLogger(__name__)

GeneratorSource = Sequence[RigGenerator] | Callable[[torch.Generator], RigGenerator]


def mapper_for(generator: RigGenerator, target: str, text: str = "", *, seed: int | None = None,
               **config: Any) -> DualMapper:
    """A fresh (identity) mapper laid out for ``generator`` (w_shape, psi_names, and its optional
    ``psi_bounds`` attribute ``(lower K, upper K)``); ``config`` overrides hidden/heads/layers/bounds.
    ``seed``: initialise under this seed without touching the global RNG (else the global RNG)."""
    n, d = generator.w_shape
    bounds = getattr(generator, "psi_bounds", None)
    cfg: dict[str, Any] = dict(w_tokens=int(n), w_dim=int(d), n_psi=len(generator.psi_names),
                               psi_names=list(generator.psi_names), target=target, text=text or target,
                               generator=str(getattr(generator, "name", "")))
    if bounds is not None:
        cfg["psi_lower"], cfg["psi_upper"] = [float(v) for v in bounds[0]], [float(v) for v in bounds[1]]
    cfg.update(config)
    if seed is None:
        return DualMapper(**cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return DualMapper(**cfg)


def _check_layout(mapper: DualMapper, generator: RigGenerator, name: str = "mapper") -> None:
    c = mapper.config
    n, d = generator.w_shape
    if (c.w_tokens, c.w_dim) != (n, d) or c.n_psi != len(generator.psi_names):  # type: ignore[attr-defined]
        raise InvalidInput(name, f"a mapper for w_shape {(n, d)} and {len(generator.psi_names)} psi coefficients",
                           f"w_shape {(c.w_tokens, c.w_dim)}, {c.n_psi} psi")  # type: ignore[attr-defined]
    if c.psi_names and tuple(c.psi_names) != tuple(generator.psi_names):  # type: ignore[attr-defined]
        raise InvalidInput(name, f"psi_names of generator {generator.name!r}", list(c.psi_names)[:4])  # type: ignore[attr-defined]


def _draw(source: GeneratorSource, batch: int, rng: torch.Generator) -> list[RigGenerator]:
    if callable(source) and not isinstance(source, Sequence):
        return [source(rng) for _ in range(batch)]
    idx = torch.randint(len(source), (batch,), generator=rng).tolist()
    return [source[i] for i in idx]


def train_mapper(generators: GeneratorSource, target: str, text: str, objectives: Objective | Sequence[Objective], *,
                 steps: int = 200, lr: float = 1e-3, batch: int = 1, generator: torch.Generator | None = None,
                 penalty: DeltaPenalty | None = None, mapper: DualMapper | None = None,
                 mapper_config: dict[str, Any] | None = None, progress: bool = True, log_every: int = 50,
                 save_dir: str | Path | None = None, save_every: int = 0, resume: bool = False,
                 grad_clip: float | None = 1.0) -> tuple[DualMapper, dict[str, list[float]]]:
    """Train one mapper pair for ``target`` (see the module docstring). Returns ``(mapper, history)``
    with ``history[term]`` one float per step (``"total"`` included) and ``history["step"]``.

    ``generators``: a non-empty sequence of :class:`RigGenerator` (one per source) or a factory
    ``f(torch.Generator) -> RigGenerator``; ``objectives``: one or several objects with ``name``,
    ``weight`` and ``bind(generator)`` (:mod:`.objective`); ``penalty`` default ``DeltaPenalty()``;
    ``mapper``: continue from this one (else a fresh :func:`mapper_for` with ``mapper_config``).
    """
    if not isinstance(steps, int) or steps < 0:
        raise InvalidInput("steps", "an integer >= 0", steps)
    if not isinstance(batch, int) or batch < 1:
        raise InvalidInput("batch", "a positive integer", batch)
    if not lr > 0:
        raise InvalidInput("lr", "a positive learning rate", lr)
    if isinstance(generators, Sequence) and len(generators) == 0:
        raise InvalidInput("generators", "at least one RigGenerator (or a factory)", 0)
    if not (isinstance(generators, Sequence) or callable(generators)):
        raise InvalidInput("generators", "a sequence of RigGenerators or a factory f(torch.Generator)",
                           type(generators).__name__)
    objs: list[Objective] = [cast(Objective, objectives)] if hasattr(objectives, "bind") \
        else list(cast(Sequence[Objective], objectives))
    if not objs:
        raise InvalidInput("objectives", "at least one objective", 0)
    for i, o in enumerate(objs):
        if not (hasattr(o, "bind") and hasattr(o, "weight") and hasattr(o, "name")):
            raise InvalidInput(f"objectives[{i}]", "an objective with name, weight and bind(generator)", type(o).__name__)
    penalty = penalty or DeltaPenalty()
    rng = generator if generator is not None else torch.Generator().manual_seed(0)
    first = generators[0] if isinstance(generators, Sequence) else generators(rng)
    check_generator(first)
    w_probe, _ = first.initial()
    if mapper is None:
        seed = int(torch.randint(2**31 - 1, (1,), generator=rng))  # the initialisation follows ``generator``
        mapper = mapper_for(first, target, text, seed=seed, **(mapper_config or {}))
    _check_layout(mapper, first)
    net: Any = mapper  # (diffusers' ModelMixin.to / __call__ wrappers confuse mypy)
    net.to(device=w_probe.device)
    if w_probe.dtype.is_floating_point and mapper.dtype != w_probe.dtype:
        net.to(dtype=w_probe.dtype)
    opt = torch.optim.Adam(mapper.parameters(), lr=lr)
    history: dict[str, list[float]] = {"step": []}
    start = 0
    out = Path(save_dir) if save_dir is not None else None
    ck = out / "checkpoint" if out is not None else None
    if resume and ck is not None and (ck / "state.pt").is_file():
        loaded = DualMapper.from_pretrained(str(ck))
        mapper.load_state_dict(loaded.state_dict())
        state = torch.load(ck / "state.pt", weights_only=True)
        opt.load_state_dict(state["optimizer"])
        rng.set_state(state["rng"])
        start = int(state["step"])
        history = json.loads(str(state["history"]))
        log.info("dual mapper %r: resumed at step %d from %s", target, start, ck)
    bound: dict[int, tuple[RigGenerator, list[BoundObjective]]] = {}

    cache = isinstance(generators, Sequence)  # a factory's sources are bound afresh (and not kept)

    def bind(g: RigGenerator) -> list[BoundObjective]:
        key = id(g)
        if key not in bound:
            _check_layout(net, g, "generators")
            fns = [o.bind(g) for o in objs]
            if not cache:
                return fns
            bound[key] = (g, fns)  # the generator is kept with its targets, so its id stays unique
        return bound[key][1]

    weights = {o.name: float(o.weight) for o in objs}
    it: Any = range(start, steps)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(it, desc=f"dual mapper {target}", initial=start, total=steps)
        it = bar
    log.info("dual mapper %r (%r): %d steps, batch %d, lr %g, objectives %s", target, text, steps, batch, lr,
             ", ".join(f"{o.name} x {o.weight:g} [{getattr(o, 'estimator', type(o).__name__)}]" for o in objs))
    mapper.train()
    for step in it:
        opt.zero_grad(set_to_none=True)
        sums: dict[str, torch.Tensor] = {}
        for g in _draw(generators, batch, rng):
            fns = bind(g)
            w0, psi0 = g.initial()
            dw, dpsi = net(w0, psi0)
            img = g.render(w0 + dw, net.clamp_psi(psi0 + dpsi))
            terms: dict[str, torch.Tensor] = {}
            for o, fn in zip(objs, fns, strict=True):
                for k, v in fn(img).items():
                    terms[k] = v
                    weights.setdefault(k, weights.get(o.name, 1.0))
            terms.update(penalty(dw, dpsi))
            for k, v in terms.items():
                sums[k] = sums.get(k, 0) + v / batch
        weights.update(penalty.weights)
        total = sum(weights[k] * v for k, v in sums.items())
        assert isinstance(total, torch.Tensor)
        total.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(mapper.parameters(), grad_clip)
        opt.step()
        history["step"].append(step)
        for k, v in {**sums, "total": total}.items():
            history.setdefault(k, []).append(float(v.detach()))
        if bar is not None:
            bar.set_postfix(total=f"{float(total.detach()):.4f}")
        if log_every and (step + 1) % log_every == 0:
            log.info("dual mapper %r step %d/%d: %s", target, step + 1, steps,
                     ", ".join(f"{k} {history[k][-1]:.4f}" for k in history if k != "step"))
        if ck is not None and save_every and (step + 1) % save_every == 0 and step + 1 < steps:
            _save_checkpoint(ck, mapper, opt, rng, step + 1, history)
    if bar is not None:
        bar.close()
    mapper.eval()
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        mapper.save_pretrained(str(out / "final"))
        (out / "history.json").write_text(json.dumps(history))
        if save_every:
            _save_checkpoint(ck, mapper, opt, rng, steps, history)  # type: ignore[arg-type]
        log.info("dual mapper %r saved to %s", target, out / "final")
    return mapper, history


def _save_checkpoint(ck: Path, mapper: DualMapper, opt: torch.optim.Optimizer, rng: torch.Generator, step: int,
                     history: dict[str, list[float]]) -> None:
    ck.mkdir(parents=True, exist_ok=True)
    mapper.save_pretrained(str(ck))
    torch.save({"optimizer": opt.state_dict(), "rng": rng.get_state(), "step": step, "history": json.dumps(history)},
               ck / "state.pt")


@torch.no_grad()
def edit_with_mappers(generator: RigGenerator, mappers: DualMapper | Sequence[DualMapper]) -> torch.Tensor:
    """The source edited by ``mappers`` applied in order (:func:`~.mapper.compose`): (1, 3, H, W)."""
    ms = [mappers] if isinstance(mappers, DualMapper) else list(mappers)
    for i, m in enumerate(ms):
        _check_layout(m, generator, f"mappers[{i}]")
    w0, psi0 = generator.initial()
    w, psi = compose(ms, w0, psi0)
    return generator.render(w, psi)
