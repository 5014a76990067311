"""Evaluation protocols of ``facerig benchmark``: what is generated from a data folder and which
metrics make up each protocol's table (see docs/evaluation.md).

* ``edit`` — single-image editing, one row per edit type (expression / pose / light), after RigFace
  (Wei et al. 2025) Table I: ID distance, re-ID, CSIM, SSIM/PSNR (and LPIPS with weights) against the
  source on the whole image and on the background (edits have no ground truth: these measure what
  is preserved), APD / AED / ALD by re-fitting the output (+ RMSE).
* ``reenact`` — portrait animation, after MagicPortrait Table I: **self** reenactment (source = first
  frame of a clip, driver = the clip; the clip is the ground truth): L1 / PSNR / SSIM (/ LPIPS) per
  frame; **cross** reenactment (source from another clip): ID distance to the source, APD / AED
  between the driver's and the output's re-fitted pose / expression; FVD only with user features;
  video metrics (landmark jitter, temporal warping error, identity drift) for both.
* ``personalize`` — DiffusionRig's re-inference RMSE: an engine personalised on an album of one
  person edits held-out photos of that person; the outputs are re-fitted and compared with the
  requested pose / expression / light (RMSE). Engines whose weights are already personalised
  (``personal.json`` with them, e.g. a DiffusionRig stage-2 run) are used as they are; engines with
  ``supports_personalization`` are personalised in the run; the others are reported as "not
  supported" (the warp engine is training-free; DiffusionRig weights without ``personal.json``).
* ``text`` — text-driven expression edits: the text is turned into a preset by facerig's own text
  matcher, the output re-fitted; blendshape-derived AU accuracy (ARKit -> FACS table, not
  OpenFace), AED, ID distance, and the CLIP score when a CLIP model folder is given.

Everything here is data: the runners (:mod:`facerig.eval.runner`) read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from facerig.errors import InvalidInput

__all__ = ["EditCase", "Protocol", "PROTOCOLS", "get_protocol", "METRIC_INFO", "IMAGE_SUFFIXES",
           "VIDEO_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")


@dataclass(frozen=True)
class EditCase:
    """One edit applied to every source photo: ``spec`` goes to :func:`facerig.edit`."""

    name: str
    edit_type: str  # expression | pose | light | text
    spec: dict[str, Any]


@dataclass(frozen=True)
class Protocol:
    name: str
    title: str
    description: str
    reference: str
    inputs: str
    edit_types: tuple[str, ...]
    #: the table columns: metric keys of the per-group summary, in order
    columns: tuple[str, ...]
    cases: tuple[EditCase, ...] = ()
    needs: str = ""  # engine capability needed (e.g. "personalization")
    notes: tuple[str, ...] = field(default_factory=tuple)


_EXPR = (
    EditCase("smile@0.5", "expression", {"preset": "smile", "intensity": 0.5}),
    EditCase("smile@1.0", "expression", {"preset": "smile", "intensity": 1.0}),
    EditCase("surprised@1.0", "expression", {"preset": "surprised", "intensity": 1.0}),
    EditCase("open_mouth@1.0", "expression", {"preset": "open_mouth", "intensity": 1.0}),
)
_POSE = (
    EditCase("yaw+10", "pose", {"yaw": 10.0}),
    EditCase("yaw-20", "pose", {"yaw": -20.0}),
    EditCase("pitch+10", "pose", {"pitch": 10.0}),
)
_LIGHT = (
    EditCase("light=left", "light", {"light": "left"}),
    EditCase("light=right", "light", {"light": "right"}),
    EditCase("light=top", "light", {"light": "top"}),
)
_TEXT = (
    EditCase("text:smile", "text", {"text": "make the person smile"}),
    EditCase("text:surprised", "text", {"text": "look surprised"}),
    EditCase("text:sad", "text", {"text": "look sad"}),
    EditCase("text:open mouth", "text", {"text": "open the mouth"}),
    EditCase("text:close eyes", "text", {"text": "close the eyes"}),
)

PROTOCOLS: dict[str, Protocol] = {
    "edit": Protocol(
        name="edit",
        title="Single-image editing (expression / pose / light)",
        description="every source photo is edited with every case; metrics against the source photo "
                    "(identity, preservation) and against the requested parameters (re-fit)",
        reference="RigFace (Wei et al. 2025) Table I: ID distance, re-ID, SSIM/LPIPS, APD/AED/ALD",
        inputs="a folder of photos (sorted; one face each, the largest is used)",
        edit_types=("expression", "pose", "light"),
        columns=("n", "num_failed", "id_distance", "same_person_rate", "reid", "csim_dlib", "ssim", "psnr",
                 "ssim_bg", "psnr_bg", "lpips", "apd_deg", "aed", "ald", "pose_rmse_deg", "exp_rmse",
                 "light_rmse", "fid", "kid"),
        cases=_EXPR + _POSE + _LIGHT,
        notes=("There is no ground truth for an edited photo: SSIM/PSNR/LPIPS compare with the source "
               "and measure preservation (whole image and background = outside the dilated face hull).",
               "APD/AED/ALD: the output is re-fitted with the same fitter that fitted the source, and "
               "compared with the parameters the edit asked for; the fitter's own error is included.",
               "re-ID: nearest source identity (dlib descriptors, L2) among all sources of the run; "
               "trivial with few identities."),
    ),
    "reenact": Protocol(
        name="reenact",
        title="Reenactment (self / cross identity)",
        description="self: first frame of a clip animated by the clip itself (the clip is the ground truth); "
                    "cross: first frame of clip i animated by clip i+1",
        reference="MagicPortrait Table I: L1/SSIM/LPIPS/PSNR (self), ID/APD/AED (cross), FVD",
        inputs="a folder of talking-head videos (sorted)",
        edit_types=("self", "cross"),
        columns=("n", "num_failed", "l1", "psnr", "ssim", "lpips", "id_distance", "csim_dlib", "apd_deg", "aed",
                 "landmark_jitter", "warping_error", "identity_drift", "fvd"),
        notes=("Per-frame metrics are computed on every k-th frame (--frame-stride) to keep runs modest.",
               "FVD needs the user's I3D weights (--i3d: StyleGAN-V i3d_torchscript.pt or pytorch-i3d "
               "rgb_imagenet.pt); facerig ships none."),
    ),
    "personalize": Protocol(
        name="personalize",
        title="Personalised editing: re-inference RMSE",
        description="an engine personalised on an album of one person edits held-out photos of that person; "
                    "outputs are re-fitted and compared with the requested pose / expression / light",
        reference="DiffusionRig (Ding et al. 2023): DECA re-inference RMSE of pose / expression / light",
        inputs="a folder of person sub-folders (album photos + heldout/; without heldout/ the last 2 sorted "
               "photos are held out)",
        edit_types=("expression", "pose", "light"),
        columns=("n", "num_failed", "pose_rmse_deg", "exp_rmse", "light_rmse", "id_distance"),
        cases=_EXPR[1:2] + _POSE[:1] + _LIGHT[:1],
        needs="personalization",
        notes=("Re-inference uses facerig's fitter (model builtin), not DECA; DiffusionRig's numbers are "
               "DECA-code RMSE and are not directly comparable.",),
    ),
    "text": Protocol(
        name="text",
        title="Text-driven expression edits",
        description="texts are matched to expression presets by facerig.rig.text; outputs re-fitted",
        reference="text-driven editing (e.g. DiffusionRig/RigFace follow-ups): AU accuracy, CLIP score, ID",
        inputs="a folder of photos (sorted)",
        edit_types=("text",),
        columns=("n", "num_failed", "au_accuracy", "au_intensity_mae", "aed", "id_distance", "csim_dlib",
                 "clip_score"),
        cases=_TEXT,
        notes=("AUs are a blendshape-derived estimate (ARKit -> FACS table), not OpenFace.",
               "CLIP score only with --clip-model (a local Hugging Face CLIP folder)."),
    ),
}


#: metric key -> (label, direction: "lower"/"higher"/"", estimator id in ESTIMATORS)
METRIC_INFO: dict[str, tuple[str, str, str]] = {
    "n": ("N", "", ""),
    "num_failed": ("failed", "", ""),
    "id_distance": ("ID dist", "lower", "dlib"),
    "same_person_rate": ("same-person", "higher", "dlib"),
    "reid": ("re-ID", "higher", "dlib"),
    "csim_dlib": ("CSIM (dlib)", "higher", "dlib"),
    "ssim": ("SSIM", "higher", "ssim"),
    "psnr": ("PSNR dB", "higher", "psnr"),
    "ssim_bg": ("SSIM bg", "higher", "ssim"),
    "psnr_bg": ("PSNR bg dB", "higher", "psnr"),
    "ssim_face": ("SSIM face", "higher", "ssim"),
    "psnr_face": ("PSNR face dB", "higher", "psnr"),
    "l1": ("L1", "lower", "l1"),
    "lpips": ("LPIPS", "lower", "lpips"),
    "apd_deg": ("APD deg", "lower", "refit"),
    "aed": ("AED", "lower", "refit"),
    "ald": ("ALD", "lower", "refit"),
    "pose_rmse_deg": ("P-RMSE deg", "lower", "refit"),
    "exp_rmse": ("E-RMSE", "lower", "refit"),
    "light_rmse": ("L-RMSE", "lower", "refit"),
    "fid": ("FID", "lower", "inception"),
    "kid": ("KID", "lower", "inception"),
    "au_accuracy": ("AU acc", "higher", "au"),
    "au_intensity_mae": ("AU MAE", "lower", "au"),
    "clip_score": ("CLIP score", "higher", "clip"),
    "landmark_jitter": ("jitter", "lower", "jitter"),
    "warping_error": ("warp err", "lower", "warping"),
    "identity_drift": ("ID drift", "lower", "dlib"),
    "fvd": ("FVD", "lower", "i3d"),
}


def get_protocol(name: str) -> Protocol:
    key = str(name).strip().lower()
    if key not in PROTOCOLS:
        import difflib

        close = difflib.get_close_matches(key, list(PROTOCOLS), n=1)
        raise InvalidInput("PROTOCOL", f"one of {', '.join(PROTOCOLS)}", name,
                           hint=f"did you mean {close[0]!r}?" if close else None)
    return PROTOCOLS[key]
