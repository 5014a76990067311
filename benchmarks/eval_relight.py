"""Relighting measurements of the warp engine (issue 10): numbers, and optional contact sheets.

    python benchmarks/eval_relight.py [--photos 12] [--lights left,right,top,soft,...]
        [--sheets /tmp/light] [--refit] [--out /tmp/eval_relight.json]

Photos: a fixed varied list of shared portraits (dark and pale skin, grey hair, beards, glasses)
plus astronaut; missing ones are skipped. Fits are cached under ``--cache`` (keyed by path and
size) so repeated runs only render. Per photo and light preset:

* ``dhue``: hue-angle shift (deg, Lab) of the face's skin between source and result: the mean
  a*b* vector of the skin pixels (fitted mesh skin region, eroded), result minus source angle;
  ``dchroma``: ratio of the mean chroma C* (result / source); ``dL``: mean L* change;
* ``seam``: step of the relight across the mesh boundary: the log luminance ratio result/source,
  blurred, its mean |gradient| in a band of +-2 px around the mesh boundary inside the person mask
  (the segmenter's own, :func:`facerig.engines.warp.relight.relight_mask`; image edges such as a
  beard's outline count too, so values of 1-2 are normal),
  divided by the same over the band 4-12 % of the face inside the mesh (1 = no step);
* ``reach``: mean |log ratio| over hair/neck/ears (person mask, outside the mesh, within 0.25 face
  sizes of it) / the same over the mesh's outer band (1 = the hair is relit as much as the face's
  edge, 0 = only the face is relit);
* ``bg_changed``: pixels outside the person mask's dilation and the work region that changed
  (must be 0 far from the person);
* with ``--refit``: SH RMSE of the re-fitted light vs the requested one (both divided by their mean
  frontal shading, as in eval_edits.py) and the dlib identity distance source -> result.
Contact sheets (``--sheets DIR``, never inside the repository): one row per photo, the source then
each light, cropped around the head.
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np

PHOTOS = (
    "astronaut",
    "pexels-unsplash/yRpe13BHdKw.jpg",        # dark skin, curly hair
    "pexels-unsplash/pexels-daniel-xavier-1239291.jpg",  # glasses, brown skin
    "pexels-unsplash/i5R8hbZFDdc.jpg",
    "pexels-unsplash/ILip77SbmOE.jpg",        # beard
    "pexels-unsplash/081680.jpg",             # red hair, pale
    "deepface/img21.jpg",                     # bald, pale
    "deepface/img38.jpg",                     # grey hair
    "deepface/img61.jpg",                     # beard
    "mica/carell.jpg",                        # grey hair
    "deepface/img11.jpg",
    "deepface/img22.jpg",                     # blonde
    "pexels-unsplash/pexels-andrea-piacquadio-733872.jpg",
    "mica/connelly.jpg",
)
LIGHTS = ("left", "right", "top", "soft", "front", "bottom", "rim", "dim")


def _lab(rgb: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(rgb.astype(np.float32) / 255.0), cv2.COLOR_RGB2Lab)


def masks(model: Any, params: Any, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, float]:
    """(skin pixels of the fitted mesh, mesh coverage, face size px) in frame pixels."""
    import cv2

    from facerig.engines.warp.engine import WarpEngine

    verts, _ = WarpEngine._geometry(model, params, (0, 0, hw[1], hw[0]), 1.0)
    fi, _ = WarpEngine._raster(verts, model.faces.long(), hw)
    cov = fi >= 0
    names = list(getattr(model, "region_names", ()))
    reg = np.where(cov, model.face_region.cpu().numpy()[np.maximum(fi, 0)], -1)
    skin = reg == (names.index("skin") if "skin" in names else -2)
    face = float(np.mean(verts[:, :2].max(0) - verts[:, :2].min(0)))
    n = max(1, int(0.02 * face))
    skin = cv2.erode(skin.astype(np.uint8), np.ones((2 * n + 1, 2 * n + 1), np.uint8)) > 0
    return skin, cov, face


def hue_stats(src: np.ndarray, out: np.ndarray, skin: np.ndarray) -> dict[str, float]:
    a, b = _lab(src)[skin], _lab(out)[skin]
    ma, mb = a[:, 1:].mean(0), b[:, 1:].mean(0)
    ha, hb = math.degrees(math.atan2(ma[1], ma[0])), math.degrees(math.atan2(mb[1], mb[0]))
    return {"dhue": (hb - ha + 180) % 360 - 180, "dchroma": float(np.hypot(*mb) / max(np.hypot(*ma), 1e-6)),
            "dL": float(b[:, 0].mean() - a[:, 0].mean()), "da": float(mb[0] - ma[0]), "db": float(mb[1] - ma[1])}


def seam_reach(src: np.ndarray, out: np.ndarray, cov: np.ndarray, person: np.ndarray, face: float) -> dict[str, float]:
    import cv2

    from facerig.engines.warp.field import distance_outside

    ys, yo = src.astype(np.float32).mean(2), out.astype(np.float32).mean(2)
    lr = np.log((yo + 8.0) / (ys + 8.0))
    lr = cv2.GaussianBlur(lr, (0, 0), max(1.0, 0.006 * face))
    gy, gx = np.gradient(lr)
    g = np.hypot(gx, gy)
    d_out = distance_outside(cov)
    d_in = distance_outside(~cov)
    pers = person > 0.5
    band = (np.maximum(d_out, d_in) <= 2.0) & pers
    inner = (d_in >= 0.04 * face) & (d_in <= 0.12 * face)
    rim = (d_in > 0) & (d_in <= 0.06 * face)
    hair = (d_out > 0.02 * face) & (d_out <= 0.25 * face) & pers
    gi = float(g[inner].mean()) if inner.any() else math.nan
    seam = float(g[band].mean()) / max(gi, 1e-6) if band.any() else math.nan
    reach = float(np.abs(lr[hair]).mean()) / max(float(np.abs(lr[rim]).mean()), 1e-6) if hair.any() else math.nan
    return {"seam": seam, "reach": reach}


def _person(state: Any) -> np.ndarray:
    try:
        from facerig.engines.warp.relight import relight_mask
    except ImportError:  # an engine before the head relight (baseline runs): its own mask
        return np.asarray(state.person)
    return relight_mask(state)


def fit_cached(name: str, img: np.ndarray, model: Any, cache: Path) -> Any:
    from facerig.edit import _fit_landmarks
    from facerig.fit.api import _default_detector

    key = cache / (name.replace("/", "__") + f"_{img.shape[0]}x{img.shape[1]}.pkl")
    if key.exists():
        return pickle.loads(key.read_bytes())
    lm = _default_detector().detect_one(img, select="largest", source=name)
    params = _fit_landmarks(img, model, lm)
    params.meta["landmarks"] = np.asarray(lm.points)[:, :2]
    cache.mkdir(parents=True, exist_ok=True)
    key.write_bytes(pickle.dumps(params))
    return params


def crop_box(cov: np.ndarray, face: float, hw: tuple[int, int]) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(cov)
    cx, cy = xs.mean(), ys.mean() - 0.1 * face
    half = 0.95 * face
    return (int(max(0, cx - half)), int(max(0, cy - half)), int(min(hw[1], cx + half)), int(min(hw[0], cy + half)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=12)
    ap.add_argument("--lights", default=",".join(LIGHTS))
    ap.add_argument("--max-side", type=int, default=768)
    ap.add_argument("--sheets", default=None, help="folder for contact sheets (outside the repository)")
    ap.add_argument("--cache", default="/tmp/eval_relight_cache")
    ap.add_argument("--refit", action="store_true", help="also re-fit the light and measure identity (slow)")
    ap.add_argument("--out", default="/tmp/eval_relight.json")
    ap.add_argument("--engine-options", default="{}")
    args = ap.parse_args()
    import cv2
    import eval_edits as ee  # benchmarks/ (the script's own folder): loaders and the re-fit
    import torch

    from facerig.engines import get_engine
    from facerig.morphable import load_face_model
    from facerig.rig import EditSpec

    torch.set_grad_enabled(False)
    model = load_face_model("builtin")
    eng = get_engine("warp", **json.loads(args.engine_options))
    lights = tuple(args.lights.split(","))
    root = None
    try:
        from facerig.io.assets import shared_path

        root = Path(shared_path("data", "portraits"))
    except Exception:  # noqa: BLE001 - no shared data
        pass
    rows: list[dict[str, Any]] = []
    sheet_rows = []
    t0 = time.perf_counter()
    done = 0
    for name in PHOTOS:
        if done >= args.photos:
            break
        src_path: Path | str = name if "/" not in name else (root / name if root else Path("/nonexistent"))
        if isinstance(src_path, Path) and not src_path.exists():
            continue
        try:
            img = ee.load(src_path, args.max_side)
            params = fit_cached(name, img, model, Path(args.cache))
        except Exception as e:  # noqa: BLE001 - skip photos whose fit fails
            print(f"skip {name}: {type(e).__name__}: {e}"[:200], flush=True)
            continue
        done += 1
        state = eng.prepare(img, params, model)
        skin, cov, face = masks(model, params, img.shape[:2])
        x0, y0, x1, y1 = state.roi
        person = np.zeros(img.shape[:2], np.float32)  # the segmenter's own mask (no face prior)
        person[y0:y1, x0:x1] = cv2.resize(_person(state), (x1 - x0, y1 - y0))
        far = np.ones(img.shape[:2], bool)
        far[y0:y1, x0:x1] = False
        tiles = [img]
        for lt in lights:
            target = EditSpec(light=lt).apply(params, model)
            out = eng.render_frame(state, target)
            row: dict[str, Any] = {"photo": name, "light": lt}
            row.update(hue_stats(img, out, skin))
            row.update(seam_reach(img, out, cov, person, face))
            row["bg_changed"] = int((out[far] != img[far]).any(1).sum())
            if args.refit:
                try:
                    refit = ee.refit_same_face(out, model, params, f"{name} {lt}")
                    a, b = ee.norm_light(target.light), ee.norm_light(refit.light)
                    row["light_rmse"] = float(np.sqrt(((a - b) ** 2).mean()))
                except Exception as e:  # noqa: BLE001
                    row["refit_failed"] = type(e).__name__
                from facerig.eval.identity import dlib_embed, id_distance

                row["id_distance"] = id_distance(dlib_embed([img]), dlib_embed([out]))["value"]
            rows.append(row)
            tiles.append(out)
        print(name, " ".join(f"{r['light']}:h{r['dhue']:+.1f}/c{r['dchroma']:.2f}/s{r['seam']:.2f}/r{r['reach']:.2f}"
                             for r in rows[-len(lights):]), flush=True)
        if args.sheets:
            bx0, by0, bx1, by1 = crop_box(cov, face, img.shape[:2])
            side = 240
            sheet_rows.append(np.hstack([cv2.resize(t[by0:by1, bx0:bx1], (side, side), interpolation=cv2.INTER_AREA)
                                         for t in tiles]))
    summary: dict[str, Any] = {}
    for lt in lights:
        rs = [r for r in rows if r["light"] == lt]
        summary[lt] = {k: float(np.nanmean([r.get(k, math.nan) for r in rs])) for k in
                       ("dhue", "dchroma", "dL", "da", "db", "seam", "reach", "light_rmse", "id_distance")
                       if any(k in r for r in rs)}
        summary[lt]["abs_dhue"] = float(np.mean([abs(r["dhue"]) for r in rs])) if rs else math.nan
        summary[lt]["bg_changed_max"] = max((r["bg_changed"] for r in rs), default=0)
    meta = {"photos": done, "seconds": time.perf_counter() - t0, "lights": lights}
    Path(args.out).write_text(json.dumps({"meta": meta, "summary": summary, "rows": rows}, indent=1))
    print(json.dumps(summary, indent=1))
    if args.sheets and sheet_rows:
        d = Path(args.sheets)
        d.mkdir(parents=True, exist_ok=True)
        for i in range(0, len(sheet_rows), 6):
            cv2.imwrite(str(d / f"sheet_{i // 6}.png"), cv2.cvtColor(np.vstack(sheet_rows[i:i + 6]), cv2.COLOR_RGB2BGR))


if __name__ == "__main__":
    main()
