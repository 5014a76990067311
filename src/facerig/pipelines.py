"""End-to-end compositions used by the Python API and the CLI (fit, render; edit and reenact later)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facerig.errors import InvalidInput

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".gif"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
BUFFERS_TO_SAVE = ("normal", "normal_camera", "albedo", "shading", "render", "depth", "mask", "uv", "regions")


def load_model(name: str = "builtin", path: str | Path | None = None) -> Any:
    from facerig.morphable import load_face_model

    return load_face_model(name, str(path) if path else None)


def model_or_name(name: str = "builtin", path: str | Path | None = None) -> Any:
    """The model name itself (loaded later, by whoever needs it) or, with ``--model-path``, the
    loaded model."""
    return load_model(name, path) if path else name


def describe_choices() -> str:
    """`facerig edit --list-presets`: expression presets, light presets, engines, blendshape names."""
    from facerig.engines import available_engines
    from facerig.rig.light import LIGHT_PRESET_NAMES
    from facerig.rig.presets import DESCRIPTIONS, PRESET_NAMES

    lines = ["expression presets (--preset NAME, --intensity 0..2):"]
    width = max(len(n) for n in PRESET_NAMES)
    lines += [f"  {n:<{width}}  {DESCRIPTIONS.get(n, '')}" for n in PRESET_NAMES]
    from facerig.rig.controls import CONTROLS

    lines.append("controls (--control NAME=VALUE, added to the photo's own expression; --gaze X,Y):")
    width = max(len(n) for n in CONTROLS)
    lines += [f"  {n:<{width}}  {c.low:g}..{c.high:g}  {c.description}" for n, c in CONTROLS.items()]
    lines.append("light presets (--light NAME): " + ", ".join(LIGHT_PRESET_NAMES))
    lines.append("engines (--engine NAME):")
    from facerig.engines import _resolve

    for n, info in available_engines().items():
        weights = " (needs --weights)" if info.get("requires_weights") and "--weights" not in str(info.get("description")) else ""
        lines.append(f"  {n}{weights}: {info.get('description', '')}")
        try:
            rng = getattr(_resolve(n), "pose_range", None)
        except ImportError:
            rng = None
        if rng is not None:
            lines.append(f"    faithful pose range: {rng.describe()}")
    try:
        fm = load_model("builtin")
        lines.append("blendshapes of the builtin model (--expression NAME=VALUE): " + ", ".join(fm.expression_names))
    except Exception as e:  # the listing must not fail on a broken model install
        log.warning("could not load the builtin model: %s", e)
    return "\n".join(lines)


def run_fit(source: str | None, output: Path, *, model: str = "builtin", model_path: Path | None = None,
            camera_kind: str = "weak_perspective", size: int = 512, face: str = "largest", album: bool = False,
            texture_size: int = 256, max_frames: int | None = None, demo: str | None = None) -> dict[str, Any]:
    """`facerig fit`: detect + fit + render; writes params.json, report.json, buffers and a preview."""
    from facerig.fit.api import FitConfig, fit_album, fit_images, fit_video

    if camera_kind not in ("weak_perspective", "perspective"):
        raise InvalidInput("--camera", "weak_perspective or perspective", camera_kind)
    if not 32 <= size <= 4096:
        raise InvalidInput("--size", "a side between 32 and 4096 pixels", size)
    if demo:
        from facerig.io.samples import sample_path

        source = str(sample_path(demo))
    if not source:
        raise InvalidInput("SOURCE", "an image, a video or a folder (or --demo astronaut)", None)
    src = Path(source)
    if not src.exists():
        raise InvalidInput("SOURCE", "an existing file or folder", source)
    fm = load_model(model, model_path)
    cfg = FitConfig(camera_kind=camera_kind, texture_size=texture_size)
    output.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        files = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InvalidInput("SOURCE", "a folder with images (jpg/png/...)", source)
        fitter = fit_album if album else fit_images
        result = fitter([str(f) for f in files], fm, cfg)
        names = [f.stem for f in files]
        kind = "album" if album else "images"
    elif src.suffix.lower() in VIDEO_SUFFIXES:
        result = fit_video(str(src), fm, cfg, max_frames=max_frames)
        names = [f"frame{i:05d}" for i in range(result.params.batch_size)]
        kind = "video"
    else:
        from facerig.detect.mediapipe import parse_face_selector

        result = fit_images([str(src)], fm, cfg, select=parse_face_selector(face, "--face"))
        names = [src.stem]
        kind = "image"
    params = result.params
    params.meta.update(source=str(src), kind=kind, names=names)
    params.to_json(output / "params.json", include_albedo=True)
    if texture_size > 0:
        _save_textures(params, output, names)
    (output / "report.json").write_text(json.dumps(_jsonable(result.report), indent=1))
    export_buffers(fm, params, output, size=size, images=result.images, names=names, kind=kind)
    log.info("wrote %s", output)
    summary = result.report.get("landmark_error", {})
    print(f"fitted {params.batch_size} face(s) with the {fm.name} model: landmark error median "
          f"{summary.get('median_pct_iod', float('nan')):.2f}% of the inter-ocular distance; outputs in {output}/")
    return result.report


def _save_textures(params: Any, output: Path, names: list[str]) -> None:
    """The UV albedo textures of ``--texture``: ``texture/NAME_albedo.png`` (texels seen in the
    photo, shading divided out) and ``NAME_mask.png`` (which texels were seen)."""
    from facerig.io.image import save_image

    tex = getattr(params, "texture", None)
    if tex is None:
        log.warning("no texture was unwrapped (the fit returned none)")
        return
    mask = getattr(params, "texture_mask", None)
    tdir = output / "texture"
    tdir.mkdir(parents=True, exist_ok=True)
    for i in range(tex.shape[0]):
        stem = names[i] if i < len(names) else f"face{i}"
        rgb = (tex[i].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)
        save_image(tdir / f"{stem}_albedo.png", rgb)
        if mask is not None:
            m = (mask[i].detach().float().clamp(0, 1)[0].cpu().numpy() * 255 + 0.5).astype(np.uint8)
            save_image(tdir / f"{stem}_mask.png", m)


def run_render(params_path: Path, output: Path, *, size: int = 512, space: str = "crop",
               model_path: Path | None = None) -> None:
    """`facerig render`: buffers from a params.json (possibly edited by hand)."""
    from facerig.types import FaceParams

    if space not in ("crop", "frame"):
        raise InvalidInput("--space", "crop or frame", space)
    params = FaceParams.from_json(params_path)
    fm = load_model(params.model, model_path)
    _check_params_against_model(params, fm)
    output.mkdir(parents=True, exist_ok=True)
    names = params.meta.get("names") or [f"face{i}" for i in range(params.batch_size)]
    export_buffers(fm, params, output, size=size, images=None, names=names, kind="render", space=space)
    print(f"rendered {params.batch_size} face(s); buffers in {output}/")


def _check_params_against_model(params: Any, fm: Any) -> None:
    from facerig.errors import IncompatibleModel

    if params.identity.shape[1] > fm.n_identity or params.expression.shape[1] != fm.n_expression:
        raise IncompatibleModel(
            f"params: {params.identity.shape[1]} identity / {params.expression.shape[1]} expression coefficients "
            f"do not fit the {fm.name} model ({fm.n_identity} / {fm.n_expression})")
    if tuple(params.expression_names) != tuple(fm.expression_names):
        raise IncompatibleModel(f"params: expression names differ from the {fm.name} model's")


def export_buffers(fm: Any, params: Any, output: Path, *, size: int, images: list[np.ndarray] | None,
                   names: list[str], kind: str, space: str = "crop") -> None:
    """Write buffers as PNG + float arrays (buffers/NAME_*.png, NAME_buffers.npz) and preview.png."""
    from facerig.io.image import save_image
    from facerig.render.buffers import render_buffers
    from facerig.viz import buffer_to_rgb, hstack, label

    bdir = output / "buffers"
    bdir.mkdir(parents=True, exist_ok=True)
    n = params.batch_size
    many = n > 8
    previews = []
    for i in range(n):
        p = params[i]
        with torch.no_grad():
            buf = render_buffers(fm, p, size=size, space=space)
        stem = names[i] if i < len(names) else f"face{i}"
        if not many or i in (0, n // 2, n - 1):
            arrays = {}
            for name in BUFFERS_TO_SAVE:
                v = getattr(buf, name)[0]
                save_image(bdir / f"{stem}_{name}.png", buffer_to_rgb(name, v, buf.region_names))
                arrays[name] = v.float().cpu().numpy().astype(np.float32)
            arrays["region_names"] = np.array(buf.region_names)
            np.savez_compressed(bdir / f"{stem}_buffers.npz", **arrays)
        if i in (0, n // 2, n - 1) or not many:
            tiles = []
            if images is not None:
                tiles.append(label(_overlay(fm, p, images[i]), "fit"))
            for name in ("normal", "albedo", "shading", "render", "depth", "regions"):
                tiles.append(label(buffer_to_rgb(name, getattr(buf, name)[0], buf.region_names), name))
            previews.append(hstack(tiles, height=256))
    if previews:
        sheet = previews[0] if len(previews) == 1 else np.concatenate(
            [np.pad(pv, ((0, 4), (0, max(x.shape[1] for x in previews) - pv.shape[1]), (0, 0)), constant_values=255)
             for pv in previews], 0)
        save_image(output / "preview.png", sheet)
    if images is not None and kind == "video":
        _write_overlay_video(fm, params, images, output / "overlay.mp4", params.meta.get("fps", 25.0))


def _overlay(fm: Any, p: Any, image: np.ndarray) -> np.ndarray:
    """Mesh of one fitted face drawn over the crop of the photo it was fitted to."""
    from facerig.detect.crops import warp_to_crop
    from facerig.render.camera import ndc_to_pixels, pose_vertices, project
    from facerig.viz import draw_mesh

    crop = p.crop[0]
    crop_img = warp_to_crop(image, crop)
    with torch.no_grad():
        v = fm(p.identity, p.expression, p.jaw_pose)
        world = pose_vertices(v, p.rotation)
        scr = project(world, p.camera, p.camera_kind, p.focal)
        px = ndc_to_pixels(scr[0, :, :2], crop.size).numpy()
        tri = fm.faces.cpu().numpy()
        a, b, c = scr[0, tri[:, 0]], scr[0, tri[:, 1]], scr[0, tri[:, 2]]
        # front-facing triangles only (screen y is down: counter-clockwise in world = clockwise on screen)
        cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
        visible = (cross < 0).numpy()
    return draw_mesh(crop_img, px, tri, visible=visible)


def _write_overlay_video(fm: Any, params: Any, images: list[np.ndarray], path: Path, fps: float) -> None:
    from facerig.io.video import write_video

    frames = (_overlay(fm, params[i], images[i]) for i in range(params.batch_size))
    write_video(path, frames, fps=fps)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, torch.Tensor):
        return x.tolist()
    return x
