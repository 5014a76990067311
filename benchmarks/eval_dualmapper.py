"""Train dual mappers for the paper's six expressions on real portraits and evaluate them on others.

    python benchmarks/eval_dualmapper.py --train 8 --test 12 --steps 150 --out /tmp/dualmapper [--clip DIR] [--docs]

Portraits: the package photos, then ../shared/data/portraits (round robin over its folders, as
eval_edits.py); the first ``--train`` train the mappers (warp generator, ``facerig train
dualmapper``'s code), the next ``--test`` are held out. Without ``--clip`` the mappers are trained
with the OFFLINE objective (the expression re-estimated on the rendered pixels) and no CLIP score is
computed; that is said in the output.

Per held-out photo and target it measures, on the ENGINE's output (``--engine dualmapper``, the warp
engine rendering at the photo's resolution), re-fitted with facerig's MediaPipe fit:

* AU accuracy (``facerig.eval.edit_accuracy.au_accuracy``, blendshape -> AU table) of the re-fitted
  expression against the target (the source's expression with the preset recipe's coefficients set),
  and the same for the hand-made preset edit of the warp engine (``--preset``) as a baseline;
* the mean change of the target's recipe coefficients (re-fitted minus source);
* identity distance (dlib 128-d, 0.6 = same-person threshold) of the output to the source;
* with ``--clip``: the CLIP score of the output against the target prompt.

It prints a table and a JSON summary, writes ``sheet.jpg`` (rows: held-out photos; columns: photo,
then each target's edit) and the mappers' loss curves under ``--out``; ``--docs`` also writes
``docs/images/dualmapper_sheet.jpg`` (a downscaled copy) and ``docs/images/dualmapper_losses.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

TARGETS = ("smile", "angry", "sad", "close_eyes", "raise_brows", "frown_brows")
TEXTS = {
    "smile": "a person who is smiling",
    "angry": "a person who is angry",
    "sad": "a person who is sad",
    "close_eyes": "a person who closes the eyes",
    "raise_brows": "a person who is raising brow",
    "frown_brows": "a person who is frowning the brows",
}


def _crop(img: np.ndarray, params: Any, side: int = 220) -> np.ndarray:
    import cv2

    from facerig.fit.api import project_landmarks_to_frame
    from facerig.morphable import load_face_model

    pts = np.asarray(project_landmarks_to_frame(load_face_model(params.model), params)[0])[:, :2]
    lo, hi = pts.min(0), pts.max(0)
    c, s = (lo + hi) / 2, 1.25 * float((hi - lo).max())
    x0, y0 = int(max(0, c[0] - s / 2)), int(max(0, c[1] - s / 2))
    x1, y1 = int(min(img.shape[1], c[0] + s / 2)), int(min(img.shape[0], c[1] + s / 2))
    return cv2.resize(np.ascontiguousarray(img[y0:y1, x0:x1]), (side, side), interpolation=cv2.INTER_AREA)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=8)
    ap.add_argument("--test", type=int, default=12)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--out", type=Path, default=Path("/tmp/dualmapper"))
    ap.add_argument("--clip", default=None, help="local Hugging Face CLIP folder (objective and CLIP score)")
    ap.add_argument("--max-side", type=int, default=768)
    ap.add_argument("--reuse", action="store_true", help="reuse mappers already trained under --out")
    ap.add_argument("--docs", action="store_true")
    ap.add_argument("--objective-options", default="{}", help="JSON keyword arguments of the offline objective")
    a = ap.parse_args()

    import torch

    torch.set_num_threads(2)
    from eval_edits import load, photo_list, refit_same_face

    import facerig
    from facerig.edit import _fit_one
    from facerig.eval.edit_accuracy import au_accuracy, clip_score
    from facerig.eval.identity import dlib_embed
    from facerig.io.image import save_image
    from facerig.morphable import load_face_model
    from facerig.rig.presets import preset_recipe
    from facerig.train.dualmapper import train_dualmapper
    from facerig.viz import hstack, label

    targets = [t.strip() for t in a.targets.split(",") if t.strip()]
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "photos").mkdir(exist_ok=True)
    model = load_face_model("builtin")
    names = list(model.expression_names)
    photos = photo_list(a.train + a.test)
    paths: list[tuple[str, Path]] = []
    for name, src in photos:
        p = a.out / "photos" / (name.replace("/", "__").rsplit(".", 1)[0] + ".png")
        if not p.exists():
            save_image(p, load(src, a.max_side))
        paths.append((name, p))
    train, test = paths[:a.train], paths[a.train:]
    print(f"train on {len(train)} portraits, evaluate on {len(test)} held out; objective: "
          f"{'CLIP ' + a.clip if a.clip else 'OFFLINE (expression re-estimated on the render; no CLIP here)'}")

    runs: dict[str, Path] = {}
    timings: dict[str, float] = {}
    for t in targets:
        run = a.out / f"mapper_{t}"
        t0 = time.perf_counter()
        if not (a.reuse and (run / "config.json").is_file()):
            train_dualmapper([p for _, p in train], run, text=TEXTS.get(t, t), target=t, clip=a.clip,
                             steps=a.steps, progress=True, objective_options=json.loads(a.objective_options))
        timings[t] = time.perf_counter() - t0
        runs[t] = run
        print(f"{t}: trained in {timings[t]:.0f} s -> {run}")

    clip = None
    if a.clip:
        from facerig.eval.runner import _HFClip

        clip = _HFClip(a.clip)
    results = []
    sheet_rows: list[np.ndarray] = []
    pair_rows: list[np.ndarray] = []
    for name, p in test:
        from facerig.io.image import load_image

        img = load_image(p)
        try:
            params = _fit_one(img, model, "largest", name)
        except Exception as e:  # noqa: BLE001 - a held-out photo without a usable face is reported
            print(f"{name}: skipped ({e})")
            continue
        tiles = [label(_crop(img, params), name.split("/")[-1][:18])]
        pair_tiles = [tiles[0]]  # photo | preset | mapper per target (compare.png)
        outs, rows = [], []
        for t in targets:
            recipe = {k: v for k, v in preset_recipe(t).items() if k in names}
            want = params.expression[0].double().numpy().copy()
            for k, v in recipe.items():
                want[names.index(k)] = v
            idx = [names.index(k) for k in recipe]
            row: dict[str, Any] = {"photo": name, "target": t}
            for kind in ("preset", "mapper"):  # (compare.png: photo | preset | mapper per target)
                if kind == "mapper":
                    res = facerig.edit(img, engine="dualmapper", params=params, model=model,
                                       engine_options={"mapper": str(runs[t])})
                else:
                    res = facerig.edit(img, preset=t, engine="warp", params=params, model=model)
                out = res.image
                try:
                    refit = refit_same_face(out, model, params, name)
                    est = refit.expression[0].double().numpy()
                    row[f"{kind}_au_acc"] = au_accuracy(want[None], est[None], names=names)["value"]
                    row[f"{kind}_recipe_change"] = float((est[idx] - params.expression[0].double().numpy()[idx]).mean())
                except Exception:  # noqa: BLE001 - no face re-detected: counted
                    row[f"{kind}_au_acc"] = None
                    row[f"{kind}_refit_failed"] = True
                pair_tiles.append(label(_crop(out, params), f"{t[:10]} {kind}"))
                if kind == "mapper":
                    outs.append(out)
                    tiles.append(label(_crop(out, params), t))
                    if clip is not None:
                        x = torch.from_numpy(out).permute(2, 0, 1)[None].float() / 255
                        row["clip_score"] = clip_score(x, [f"a photo of {TEXTS.get(t, t)}"], clip)["value"]
            rows.append(row)
        emb = dlib_embed([img] + outs)
        for i, row in enumerate(rows):
            ok = emb.found[0] and emb.found[i + 1]
            row["id_distance"] = float(np.linalg.norm(emb.embeddings[0] - emb.embeddings[i + 1])) if ok else None
        results += rows
        sheet_rows.append(hstack(tiles, height=200))
        pair_rows.append(hstack(pair_tiles, height=160))
        print(name, " ".join(f"{r['target']}:{_f(r.get('mapper_au_acc'))}/{_f(r.get('preset_au_acc'))}"
                             for r in rows))

    summary: dict[str, Any] = {"objective": "clip" if a.clip else "offline", "train": [n for n, _ in train],
                               "test": [n for n, _ in test], "steps": a.steps, "train_seconds": timings,
                               "by_target": {}}
    print("\n| target | AU acc mapper | AU acc preset | recipe change mapper | recipe change preset | "
          "ID dist mapper |" + (" CLIP |" if clip else ""))
    print("|---|---|---|---|---|---|" + ("---|" if clip else ""))
    for t in targets:
        sel = [r for r in results if r["target"] == t]
        s = {k: _mean([r.get(k) for r in sel]) for k in ("mapper_au_acc", "preset_au_acc", "mapper_recipe_change",
                                                          "preset_recipe_change", "id_distance", "clip_score")}
        s["n"] = len(sel)
        summary["by_target"][t] = s
        print(f"| {t} | {_f(s['mapper_au_acc'])} | {_f(s['preset_au_acc'])} | {_f(s['mapper_recipe_change'])} | "
              f"{_f(s['preset_recipe_change'])} | {_f(s['id_distance'])} |" + (f" {_f(s['clip_score'], 1)} |" if clip else ""))
    (a.out / "summary.json").write_text(json.dumps({"summary": summary, "rows": results}, indent=1))
    if sheet_rows:
        wmax = max(r.shape[1] for r in sheet_rows)
        sheet = np.concatenate([np.pad(r, ((0, 3), (0, wmax - r.shape[1]), (0, 0))) for r in sheet_rows], 0)
        save_image(a.out / "sheet.jpg", sheet)
        print(f"sheet -> {a.out / 'sheet.jpg'}")
        wmax = max(r.shape[1] for r in pair_rows)
        save_image(a.out / "compare.png",
                   np.concatenate([np.pad(r, ((0, 3), (0, wmax - r.shape[1]), (0, 0))) for r in pair_rows], 0))
        print(f"photo | preset | mapper per target -> {a.out / 'compare.png'}")
    _loss_figure(runs, a.out / "losses.png")
    if a.docs and sheet_rows:
        import cv2

        figs = Path(__file__).resolve().parents[1] / "docs" / "images"
        figs.mkdir(parents=True, exist_ok=True)
        small = sheet_rows[: min(6, len(sheet_rows))]
        wmax = max(r.shape[1] for r in small)
        sh = np.concatenate([np.pad(r, ((0, 3), (0, wmax - r.shape[1]), (0, 0))) for r in small], 0)
        s = 1400 / sh.shape[1]
        sh = cv2.resize(sh, (1400, round(sh.shape[0] * s)), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(figs / "dualmapper_sheet.jpg"), sh[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 80])
        _loss_figure(runs, figs / "dualmapper_losses.png")
        print(f"docs figures -> {figs}")
    print(json.dumps(summary, indent=1))


def _loss_figure(runs: dict[str, Path], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), dpi=100)
    for t, run in runs.items():
        h = json.loads((run / "train_log.json").read_text())["history"]
        steps = h.get("step") or list(range(len(h["total"])))
        axes[0].plot(steps, h["total"], label=t)
        key = next((k for k in h if k not in ("step", "total") and not k.startswith("penalty")
                    and k not in ("identity",) and not k.startswith("l2")), None)
        if key:
            axes[1].plot(steps, h[key], label=f"{t} ({key})")
    axes[0].set_title("total loss", fontsize=9)
    axes[1].set_title("expression / CLIP term", fontsize=9)
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _mean(v: list[Any]) -> float:
    x = [float(a) for a in v if a is not None and math.isfinite(float(a))]
    return float(np.mean(x)) if x else math.nan


def _f(v: Any, nd: int = 2) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{float(v):.{nd}f}"


if __name__ == "__main__":
    main()
