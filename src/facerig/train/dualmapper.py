"""``facerig train dualmapper``: fit a set of portraits, build a rig generator around each, and train
one dual-mapper pair for a text-described expression (:mod:`facerig.engines.dualmapper`).

Objective: with ``clip=`` (a local Hugging Face CLIP folder) the paper's CLIP similarity to the
subspace-projected target embedding; without it the OFFLINE objective (the expression re-estimated
on the rendered pixels against the preset the text maps to), said so in the log and in
``train_log.json``. Both add the identity loss of facerig's differentiable identity network and an
L2 penalty on the deltas.

The run folder gets the mapper (``config.json`` + safetensors, loadable with
``facerig edit --engine dualmapper --mapper OUT``), ``train_log.json`` (settings, photos, every loss
term per step), ``losses.png`` (the curves) and ``preview.png`` (each training photo before | after,
rendered by the generator).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facerig.errors import FacerigError, InvalidInput

log = logging.getLogger(__name__)

__all__ = ["ANTAGONISTS", "OFFLINE_TEXTURE_WEIGHT", "free_coefficients", "list_photos", "target_for_text", "train_dualmapper"]

#: L2 weight on dw with the offline objective (a close-eyes mapper under 1.0 smeared the lids with
#: its texture offset, rms 0.013, moving the NCC peaks instead of the lids)
OFFLINE_TEXTURE_WEIGHT = 30.0

_IMAGE_EXT = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


def list_photos(data: str | Path | Sequence[str | Path], limit: int | None = None) -> list[Path]:
    """Photos of a folder (sorted, recursive), one photo, or a list of photos."""
    items = [data] if isinstance(data, (str, Path)) else list(data)
    out: list[Path] = []
    for it in items:
        p = Path(it).expanduser()
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.suffix.lower() in _IMAGE_EXT and q.is_file())
        elif p.is_file():
            out.append(p)
        else:
            raise InvalidInput("--data", "a folder of portraits, a photo, or a list of photos", str(p))
    if not out:
        raise InvalidInput("--data", "at least one photo (.jpg/.png/...)", str(data))
    return out[:limit] if limit else out


def target_for_text(text: str, target: str | None = None) -> tuple[str, dict[str, Any]]:
    """The target expression name (one of the six of the paper, or any preset) for ``text``."""
    from facerig.rig.presets import canonical_preset_name
    from facerig.rig.text import match_text

    if target:
        try:
            return canonical_preset_name(target), {"source": "--target"}
        except FacerigError as e:
            raise InvalidInput("--target", "an expression preset name (smile, angry, sad, close_eyes, raise_brows, "
                               "frown_brows, ...)", target) from e
    if not text or not text.strip():
        raise InvalidInput("--text", "a description of the expression, e.g. \"a person who is raising brow\"", text)
    m = match_text(text)
    return m.preset, {"source": "text", "backend": m.backend, "intensity": m.intensity}


#: coefficient families whose motions oppose each other (the free set of a preset includes the
#: antagonists of what it names: closing the eyes also lowers eyeWide, a frown lowers browInnerUp)
ANTAGONISTS = {"eyeBlink": ("eyeWide",), "eyeWide": ("eyeBlink", "eyeSquint"), "eyeSquint": ("eyeWide",),
               "browDown": ("browInnerUp", "browOuterUp"), "browInnerUp": ("browDown",),
               "browOuterUp": ("browDown",), "mouthSmile": ("mouthFrown",), "mouthFrown": ("mouthSmile",)}


def free_coefficients(target: str, names: Sequence[str]) -> tuple[set[str], set[str]]:
    """``(named, antagonists)`` among ``names`` for preset ``target``: the coefficients its recipe (and
    its strong shapes) name, and those of the families that oppose them (:data:`ANTAGONISTS`), which a
    mapper may lower but not raise."""
    from facerig.rig.presets import preset_recipe, strong_recipe

    def fam(n: str) -> str:
        return n[:-2] if n.endswith(("_L", "_R")) else n

    named = {n for n in names if n in set(preset_recipe(target)) | set(strong_recipe(target))}
    opp = {a for n in named for a in ANTAGONISTS.get(fam(n), ())}
    return named, {n for n in names if fam(n) in opp and n not in named}


def _fit_all(paths: Sequence[Path], model: Any, progress: bool) -> list[tuple[Path, np.ndarray, Any]]:
    from facerig.edit import _fit_one
    from facerig.io.image import load_image

    out = []
    it: Any = paths
    if progress and len(paths) > 1:
        from tqdm.auto import tqdm

        it = tqdm(paths, desc="fit photos", unit="photo")
    for p in it:
        try:
            img = load_image(p)
            img = img[..., :3] if img.ndim == 3 and img.shape[2] == 4 else img
            params = _fit_one(img, model, "largest", str(p), cache=True, key_source=p)
        except FacerigError as e:  # a photo without a usable face: skipped, said so
            log.warning("skipping %s: %s", p, e)
            continue
        out.append((p, img, params))
    return out


def train_dualmapper(data: str | Path | Sequence[str | Path], output: str | Path, *, text: str,
                     target: str | None = None, generator: str = "warp", clip: str | Path | None = None,
                     steps: int = 200, lr: float = 1e-3, batch: int = 1, identity_weight: float = 0.5,
                     seed: int = 0, model: Any = "builtin", max_photos: int | None = None,
                     generator_options: dict[str, Any] | None = None, mapper_config: dict[str, Any] | None = None,
                     hold_others: float = 30.0, texture_weight: float | None = None,
                     objective_options: dict[str, Any] | None = None, symmetric: bool = True,
                     resume: bool = False, progress: bool = True) -> Path:
    """Train one mapper pair for ``text`` on the portraits of ``data``; returns the run folder.

    ``hold_others``: offline objective only, the L2 factor on the deltas of the coefficients the
    preset does not name (:func:`free_coefficients`; their antagonists only on increases).
    ``texture_weight``: the L2 weight on the texture mapper's ``dw`` (default :data:`OFFLINE_TEXTURE_WEIGHT`
    with the offline objective, whose landmark probe gives ``dw`` no honest signal -- a texture edit
    can only shift the tracker's peaks -- and 1.0 with CLIP).
    ``objective_options``: keyword arguments of :class:`OfflineExpressionObjective` (offline only; e.g.
    ``{"work_size": 256}``).
    ``symmetric``: tie the deltas of left/right coefficient pairs (``X_L`` / ``X_R``) to their mean."""
    from facerig.engines.dualmapper.adapters import build_generator
    from facerig.engines.dualmapper.objective import (
        ClipObjective,
        DeltaPenalty,
        HFClipEncoder,
        IdentityObjective,
        OfflineExpressionObjective,
    )
    from facerig.engines.dualmapper.training import train_mapper
    from facerig.morphable import load_face_model

    t0 = time.perf_counter()
    out = Path(output).expanduser()
    if out.exists() and not out.is_dir():
        raise InvalidInput("-o/--output", "a run folder", str(out))
    name, how = target_for_text(text, target)
    fm = load_face_model(model) if isinstance(model, str) else model
    photos = list_photos(data, max_photos)
    # the objectives and weights before the fits: a bad option is reported before minutes of fitting
    objectives: list[Any] = []
    if clip is not None:
        objectives.append(ClipObjective(HFClipEncoder(str(clip)), name, text=text))
        objective_name = f"CLIP subspace projection ({Path(str(clip)).name}) + identity"
    else:
        log.warning("no --clip: training with the OFFLINE objective (the expression re-estimated on the "
                    "rendered pixels against preset %r), not the paper's CLIP objective", name)
        objectives.append(OfflineExpressionObjective(text or name, **dict(objective_options or {})))
        objective_name = f"offline: expression re-estimated on the render vs preset {name!r} + identity"
    if identity_weight > 0:
        objectives.append(IdentityObjective(weight=identity_weight))
    tw = float(texture_weight) if texture_weight is not None else (1.0 if clip is not None else OFFLINE_TEXTURE_WEIGHT)
    if not tw >= 0:
        raise InvalidInput("texture_weight", "a weight >= 0", texture_weight)
    fitted = _fit_all(photos, fm, progress)
    if not fitted:
        raise InvalidInput("--data", "photos with a detectable face", f"{len(photos)} photos, none usable")
    gens = [build_generator(generator, img, params, fm, **dict(generator_options or {})) for _, img, params in fitted]
    penalty = DeltaPenalty(w_weight=tw)
    if clip is None and hold_others > 0:
        # the landmark probe confuses motions (a raise-brows mapper opened the jaw, a sad one smiled):
        # in offline mode the coefficients the target's preset names move freely, their direct
        # antagonists may only decrease (closing eyes lowers eyeWide), the others are held by a
        # stronger L2
        named, anta = free_coefficients(name, gens[0].psi_names)
        hold = float(hold_others)
        penalty = DeltaPenalty(w_weight=tw, psi_scale=[1.0 if n in named else hold for n in gens[0].psi_names],
                               psi_scale_down=[1.0 if n in named or n in anta else hold for n in gens[0].psi_names])
    cfg = dict(mapper_config or {})  # (mapper_for records the generator's name and psi bounds)
    if symmetric and "mirror_pairs" not in cfg:
        from facerig.engines.dualmapper.mapper import mirror_pairs

        # the six targets are symmetric expressions: tie each left/right pair's delta (untied, the
        # probe's weaker view of one side closed one eye of two, a wink)
        cfg["mirror_pairs"] = mirror_pairs(gens[0].psi_names)
    out.mkdir(parents=True, exist_ok=True)
    mapper, history = train_mapper(gens, name, text or name, objectives, steps=steps, lr=lr, batch=batch,
                                   generator=torch.Generator().manual_seed(int(seed)), mapper_config=cfg, penalty=penalty,
                                   progress=progress, save_dir=out / "checkpoints", resume=resume)
    mapper.save_pretrained(str(out))
    summary = {
        "target": name, "text": text, "target_from": how, "generator": generator,
        "generator_options": dict(generator_options or {}), "objective": objective_name,
        "clip": str(clip) if clip else None, "identity_weight": identity_weight,
        "hold_others": hold_others if clip is None else None, "texture_weight": tw,
        "objective_options": dict(objective_options or {}) if clip is None else None, "symmetric": symmetric, "steps": steps, "lr": lr,
        "batch": batch, "seed": seed, "model": fm.name,
        "photos": [str(p) for p, _, _ in fitted], "skipped": len(photos) - len(fitted),
        "wall_seconds": round(time.perf_counter() - t0, 1), "history": history,
    }
    (out / "train_log.json").write_text(json.dumps(summary, indent=1))
    _plot_losses(history, out / "losses.png", f"{name}: {objective_name}")
    _preview(gens, mapper, [p.name for p, _, _ in fitted], out / "preview.png")
    log.info("dual mapper %r -> %s (%d photos, %d steps, %.0f s)", name, out, len(fitted), steps,
             summary["wall_seconds"])
    return out


def _plot_losses(history: dict[str, list[float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = history.get("step") or list(range(len(history.get("total", []))))
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for k, v in history.items():
        if k != "step" and v:
            ax.plot(steps[:len(v)], v, label=k, lw=1.5 if k == "total" else 1.0)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@torch.no_grad()
def _preview(gens: Sequence[Any], mapper: Any, names: Sequence[str], path: Path, limit: int = 8) -> None:
    from facerig.io.image import save_image
    from facerig.viz import hstack, label

    rows = []
    for g, n in list(zip(gens, names, strict=True))[:limit]:
        w0, psi0 = g.initial()
        w1, psi1 = mapper.apply(w0, psi0)
        a = (g.render(w0, psi0)[0].permute(1, 2, 0).clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
        b = (g.render(w1, psi1)[0].permute(1, 2, 0).clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
        rows.append(hstack([label(a, n[:24]), label(b, mapper.target)], height=192))
    if rows:
        wmax = max(r.shape[1] for r in rows)
        save_image(path, np.concatenate([np.pad(r, ((0, 2), (0, wmax - r.shape[1]), (0, 0))) for r in rows], 0))
