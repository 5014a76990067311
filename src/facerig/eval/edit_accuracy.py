"""Edit accuracy by re-estimation: fit the output image again and compare with what was asked.

* **APD** (average pose distance): mean absolute difference of yaw, pitch, roll in degrees (plus the
  geodesic angle between the two head rotations, ``apd_geodesic_deg``);
* **AED** (average expression distance): mean absolute difference of expression coefficients, over
  the names both parameter sets share (blendshape models: named ARKit coefficients in [0, 1]);
* **ALD** (average lighting distance): mean absolute difference of the 9x3 SH coefficients (DECA's
  basis; note the albedo/light scale ambiguity of any re-fit);
* ``*_rmse``: the root-mean-square counterparts (P-RMSE, E-RMSE, L-RMSE).

The re-estimator is facerig's own fitter (:func:`facerig.fit.api.fit_image`); results name it. For
the papers' "DECA re-inference RMSE", :func:`deca_reinference_rmse` takes the path of the user's
DECA ``deca_model.tar`` (loaded by :mod:`facerig.eval.deca`; facerig does not ship it) or an
injected DECA-like callable.

Also here: a **blendshape-derived AU estimate** (ARKit coefficients -> FACS action units through a
fixed mapping table; NOT OpenFace) and **CLIP score** with an injected CLIP model.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from facerig.errors import FacerigError, InvalidInput
from facerig.rotations import axis_angle_to_matrix, axis_angle_to_ypr, rotation_angle_deg
from facerig.types import FaceParams

__all__ = [
    "compare_params",
    "edit_accuracy",
    "deca_reinference_rmse",
    "ARKIT_TO_AU",
    "blendshape_aus",
    "au_accuracy",
    "clip_score",
]


def _names_overlap(a: FaceParams, b: FaceParams, names: Sequence[str] | None) -> list[str]:
    common = [n for n in a.expression_names if n in set(b.expression_names)]
    if names is not None:
        missing = [n for n in names if n not in common]
        if missing:
            raise InvalidInput("names", "coefficient names present in both parameter sets", missing)
        common = list(names)
    return common


def compare_params(requested: FaceParams, estimated: FaceParams, *, names: Sequence[str] | None = None,
                   valid: Sequence[bool] | None = None, estimator: str = "given parameters") -> dict[str, Any]:
    """APD / AED / ALD and RMSE variants between two batches of FaceParams (same batch size).

    ``names`` restricts AED to these expression coefficients (default: all names the two share; a
    flame-vs-blendshape comparison shares none and reports NaN). ``valid`` marks usable rows (e.g.
    outputs where the re-fit found a face); the others are excluded and counted in ``num_failed``."""
    if requested.batch_size != estimated.batch_size:
        raise InvalidInput("estimated", f"{requested.batch_size} faces", estimated.batch_size)
    ok = np.ones(requested.batch_size, bool) if valid is None else np.asarray(valid, bool)
    idx = torch.as_tensor(np.nonzero(ok)[0], dtype=torch.long)
    r = requested.rotation.detach().double().cpu()[idx]
    e = estimated.rotation.detach().double().cpu()[idx]
    ypr_r, ypr_e = axis_angle_to_ypr(r), axis_angle_to_ypr(e)
    dang = (ypr_r - ypr_e).abs()
    geo = rotation_angle_deg(axis_angle_to_matrix(r), axis_angle_to_matrix(e))
    common = _names_overlap(requested, estimated, names)
    if common:
        ir = [requested.expression_names.index(n) for n in common]
        ie = [estimated.expression_names.index(n) for n in common]
        xr = requested.expression.detach().double().cpu()[idx][:, ir]
        xe = estimated.expression.detach().double().cpu()[idx][:, ie]
        dexp = (xr - xe).abs()
        per_name = dict(zip(common, dexp.mean(0).tolist(), strict=True)) if len(idx) else {}
    else:
        dexp = torch.full((len(idx), 1), math.nan, dtype=torch.float64)
        per_name = {}
    dl = (requested.light.detach().double().cpu()[idx] - estimated.light.detach().double().cpu()[idx]).abs()

    def mean(t: torch.Tensor) -> float:
        return float(t.mean()) if t.numel() else math.nan

    def rmse(t: torch.Tensor) -> float:
        return float(t.pow(2).mean().sqrt()) if t.numel() else math.nan

    return {
        "metric": "edit_accuracy",
        "estimator": estimator,
        "apd_deg": mean(dang),
        "apd_yaw_pitch_roll_deg": dang.mean(0).tolist() if len(idx) else [math.nan] * 3,
        "apd_geodesic_deg": mean(geo),
        "pose_rmse_deg": rmse(dang),
        "aed": mean(dexp),
        "exp_rmse": rmse(dexp),
        "aed_names": common,
        "aed_per_name": per_name,
        "ald": mean(dl),
        "light_rmse": rmse(dl),
        "per_item": {
            "apd_deg": dang.mean(1).tolist(),
            "apd_geodesic_deg": geo.tolist(),
            "aed": dexp.mean(1).tolist(),
            "ald": dl.mean((1, 2)).tolist(),
        },
        "num_items": int(requested.batch_size),
        "num_failed": int((~ok).sum()),
    }


def edit_accuracy(requested: FaceParams, outputs: Sequence[Any], *, model: Any = "builtin", fit_config: Any = None,
                  detector: Any = None, names: Sequence[str] | None = None,
                  fit_fn: Callable[[Any], FaceParams] | None = None) -> dict[str, Any]:
    """Re-fit each output image with :func:`facerig.fit.api.fit_image` (or ``fit_fn(image) ->
    FaceParams`` of one face) and compare with ``requested`` (one face per output). Outputs where
    no face is found are counted in ``num_failed`` and excluded from the means."""
    if len(outputs) != requested.batch_size:
        raise InvalidInput("outputs", f"{requested.batch_size} images (one per requested face)", len(outputs))
    if fit_fn is None:
        from facerig.fit.api import fit_image

        det = detector
        if det is None:
            from facerig.detect import FaceDetector

            det = FaceDetector()

        def fit_fn(img: Any) -> FaceParams:
            return fit_image(img, model=model, config=fit_config, detector=det).params

        estimator = f"facerig.fit.api.fit_image (model={getattr(model, 'name', model)}, MediaPipe landmarks + photometric)"
    else:
        estimator = getattr(fit_fn, "estimator", getattr(fit_fn, "__name__", "user fit_fn"))
    ests: list[FaceParams | None] = []
    for img in outputs:
        try:
            ests.append(fit_fn(img))
        except FacerigError:
            ests.append(None)
    valid = [p is not None for p in ests]
    template = next((p for p in ests if p is not None), None)
    if template is None:
        res = compare_params(requested, requested, names=names, valid=[False] * len(outputs), estimator=estimator)
        return res
    filled = [p if p is not None else template for p in ests]
    est = FaceParams.cat([p[0] if p.batch_size > 1 else p for p in filled])
    return compare_params(requested, est, names=names, valid=valid, estimator=estimator)


def deca_reinference_rmse(requested: dict[str, Any], outputs: Sequence[Any],
                          deca: Callable[[Any], dict[str, Any]] | str | os.PathLike[str] | torch.nn.Module, *,
                          keys: Sequence[str] = ("pose", "exp", "light"), estimator: str | None = None,
                          exp_dims: int | None = 50, detector: Any = None) -> dict[str, Any]:
    """DECA re-inference RMSE (DiffusionRig's protocol): run the user's DECA encoder on each output
    and compare with the DECA codes that drove the edit.

    ``requested``: {key: (N, ...) array} codes used for the edit (DECA ``pose`` (N, 6), ``exp``
    (N, 50; wider FLAME codes are cut to the first ``exp_dims``), ``light`` (N, 9, 3)...). ``deca``:
    the path of DECA's released ``deca_model.tar`` (or a loaded :class:`facerig.eval.deca.DecaEncoder`):
    each output is detected (MediaPipe), DECA-cropped and encoded by :class:`facerig.eval.deca.DecaEstimator`;
    or a callable ``deca(image) -> {key: array}`` of one output's codes, or None when it finds no face
    (counted). Returns ``{key}_rmse`` (and ``_mae``) per key over the valid outputs: the RMSE over all
    entries of that group (pose: 6 = global + jaw axis-angle; exp; light: 27 SH values)."""
    if isinstance(deca, (str, os.PathLike, torch.nn.Module)):
        from facerig.eval.deca import DecaEstimator

        deca_fn: Callable[[Any], dict[str, Any] | None] = DecaEstimator(deca, detector=detector)
    else:
        deca_fn = deca
    n = len(outputs)
    codes: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    valid = np.zeros(n, bool)
    for i, img in enumerate(outputs):
        out = deca_fn(img)
        if out is None:
            continue
        valid[i] = True
        for k in keys:
            codes[k].append(np.asarray(out[k], dtype=np.float64).reshape(-1))
    res: dict[str, Any] = {"metric": "deca_reinference_rmse",
                           "estimator": estimator or getattr(deca_fn, "estimator", "user-supplied DECA encoder"),
                           "num_items": n, "num_failed": int((~valid).sum())}
    for k in keys:
        req = np.asarray(requested[k], dtype=np.float64).reshape(n, -1)[valid]
        if not valid.any():
            res[f"{k}_rmse"] = math.nan
            continue
        est = np.stack(codes[k])
        if k == "exp" and exp_dims is not None:
            req, est = req[:, :exp_dims], est[:, :exp_dims]
        if est.shape != req.shape:
            raise InvalidInput(f"deca()[{k!r}]", f"codes of shape {req.shape[1:]}", est.shape[1:])
        res[f"{k}_rmse"] = float(np.sqrt(((est - req) ** 2).mean()))
        res[f"{k}_mae"] = float(np.abs(est - req).mean())
    return res


# ------------------------------------------------------------------------------------------
# action units from ARKit blendshapes

# FACS action unit -> ARKit blendshapes whose mean gives the AU's intensity estimate in [0, 1].
# Mapping after the ARKit blendshape documentation and ICT-FaceKit's FACS-based shape list.
ARKIT_TO_AU: dict[str, tuple[str, tuple[str, ...]]] = {
    "AU01": ("inner brow raiser", ("browInnerUp",)),
    "AU02": ("outer brow raiser", ("browOuterUp_L", "browOuterUp_R")),
    "AU04": ("brow lowerer", ("browDown_L", "browDown_R")),
    "AU05": ("upper lid raiser", ("eyeWide_L", "eyeWide_R")),
    "AU06": ("cheek raiser", ("cheekSquint_L", "cheekSquint_R")),
    "AU07": ("lid tightener", ("eyeSquint_L", "eyeSquint_R")),
    "AU09": ("nose wrinkler", ("noseSneer_L", "noseSneer_R")),
    "AU10": ("upper lip raiser", ("mouthUpperUp_L", "mouthUpperUp_R")),
    "AU12": ("lip corner puller", ("mouthSmile_L", "mouthSmile_R")),
    "AU14": ("dimpler", ("mouthDimple_L", "mouthDimple_R")),
    "AU15": ("lip corner depressor", ("mouthFrown_L", "mouthFrown_R")),
    "AU17": ("chin raiser", ("mouthShrugLower",)),
    "AU18": ("lip pucker", ("mouthPucker",)),
    "AU20": ("lip stretcher", ("mouthStretch_L", "mouthStretch_R")),
    "AU22": ("lip funneler", ("mouthFunnel",)),
    "AU23": ("lip tightener", ("mouthRollLower", "mouthRollUpper")),
    "AU24": ("lip pressor", ("mouthPress_L", "mouthPress_R")),
    "AU25": ("lips part", ("mouthLowerDown_L", "mouthLowerDown_R")),
    "AU26": ("jaw drop", ("jawOpen",)),
    "AU28": ("lip suck", ("mouthRollLower", "mouthRollUpper")),
    "AU45": ("blink", ("eyeBlink_L", "eyeBlink_R")),
}
AU_ESTIMATOR = "blendshape-derived AU estimate (ARKit -> FACS table), not OpenFace"


def blendshape_aus(params_or_coeffs: Any, names: Sequence[str] | None = None) -> dict[str, Any]:
    """AU intensities (N, n_AU) in [0, 1] from ARKit-named coefficients (a FaceParams of a blendshape
    model, or an (N, K) array with ``names``). AUs whose shapes the model lacks are NaN."""
    if isinstance(params_or_coeffs, FaceParams):
        coeffs = params_or_coeffs.expression.detach().cpu().double().numpy()
        names = params_or_coeffs.expression_names
    else:
        coeffs = np.asarray(params_or_coeffs, dtype=np.float64)
        if coeffs.ndim == 1:
            coeffs = coeffs[None]
        if names is None or len(names) != coeffs.shape[1]:
            raise InvalidInput("names", f"{coeffs.shape[1]} coefficient names", None if names is None else len(names))
    index = {n: i for i, n in enumerate(names)}
    aus = list(ARKIT_TO_AU)
    out = np.full((coeffs.shape[0], len(aus)), np.nan)
    for j, au in enumerate(aus):
        cols = [index[s] for s in ARKIT_TO_AU[au][1] if s in index]
        if cols:
            out[:, j] = np.clip(coeffs[:, cols], 0, 1).mean(1)
    return {"metric": "blendshape_aus", "estimator": AU_ESTIMATOR, "aus": aus, "intensity": out}


def au_accuracy(requested: Any, estimated: Any, *, threshold: float = 0.5, names: Sequence[str] | None = None) -> dict[str, Any]:
    """AU accuracy: activation (intensity >= ``threshold``) of each AU in the requested vs the re-fitted
    coefficients, over AUs both define; also the mean absolute intensity error."""
    a = blendshape_aus(requested, names)["intensity"]
    b = blendshape_aus(estimated, names)["intensity"]
    if a.shape != b.shape:
        raise InvalidInput("estimated", f"AU intensities of shape {a.shape}", b.shape)
    ok = np.isfinite(a) & np.isfinite(b)
    acc = ((a >= threshold) == (b >= threshold))[ok]
    return {"metric": "au_accuracy", "estimator": AU_ESTIMATOR, "value": float(acc.mean()) if acc.size else math.nan,
            "intensity_mae": float(np.abs(a - b)[ok].mean()) if ok.any() else math.nan, "threshold": threshold,
            "aus": list(ARKIT_TO_AU)}


# ------------------------------------------------------------------------------------------
# CLIP score


def clip_score(images: Any, texts: Sequence[str], model: Any, *, scale: float = 100.0) -> dict[str, Any]:
    """CLIP score = ``scale * max(cos(E_img, E_text), 0)`` per pair (Hessel et al. 2021), with an
    injected model exposing ``encode_image(images (B,3,H,W) in [0,1]) -> (B, D)`` and
    ``encode_text(list[str]) -> (B, D)`` (preprocessing is the model's job). Name it via
    ``model.estimator``/``model.name``."""
    from facerig.eval.image_quality import to_batch

    x = to_batch(images)
    if len(texts) != len(x):
        raise InvalidInput("texts", f"{len(x)} prompts", len(texts))
    with torch.no_grad():
        ei = torch.as_tensor(model.encode_image(x)).double()
        et = torch.as_tensor(model.encode_text(list(texts))).double()
    cos = torch.nn.functional.cosine_similarity(ei, et, dim=1)
    per = scale * cos.clamp_min(0)
    return {"metric": "clip_score", "estimator": getattr(model, "estimator", getattr(model, "name", "user CLIP model")),
            "value": float(per.mean()), "per_item": per.tolist(), "scale": scale}
