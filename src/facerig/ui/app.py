"""The gradio layout of ``facerig serve``: an Edit tab (sliders that re-render as they move) and a
Reenact tab. All work is in :mod:`facerig.ui.core`; this module only wires widgets to it, and turns
every error into a message (the status line and a toast), never a traceback."""

from __future__ import annotations

import ipaddress
import logging
import os
from typing import Any

from facerig.ui.core import (
    ENGINE_CHOICES,
    EditValues,
    EngineChoice,
    Studio,
    engine_status,
    error_message,
    face_thumbnails,
    slider_specs,
)

log = logging.getLogger(__name__)

__all__ = ["build_app", "serve", "is_local_host"]

SAMPLES = ("astronaut", "grace_hopper")


def is_local_host(host: str) -> bool:
    """True for loopback addresses and "localhost"."""
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _payload_path(x: Any) -> str | None:
    """The server-side path of an upload that skipped gradio's preprocessing (which opens images with
    PIL before any size check, and fails without a message on a broken file)."""
    if x is None:
        return None
    if isinstance(x, str):
        return x or None
    if isinstance(x, dict):
        return x.get("path") or None
    return getattr(x, "path", None)


def _gradio() -> Any:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing leaves the machine
    try:
        import gradio as gr
    except ImportError as e:
        from facerig.errors import MissingDependency

        raise MissingDependency("gradio", "the web UI (facerig serve)", "ui") from e
    return gr


def build_app(studio: Studio | None = None) -> Any:
    """The gradio Blocks of the web UI (not launched)."""
    gr = _gradio()
    from facerig.engines.warp import WarpEngine
    from facerig.rig.light import LIGHT_PRESET_NAMES
    from facerig.rig.presets import PRESET_NAMES

    studio = studio or Studio()
    prange = WarpEngine.pose_range
    sliders = slider_specs()
    n_ctl = len(sliders)

    def _warn(msg: str) -> str:
        gr.Warning(msg)
        return f"**error:** {msg}"

    # ---- callbacks (inputs in the order of `edit_inputs`) ------------------------------------
    def values_from(args: tuple[Any, ...]) -> EditValues:
        ctl = {name: float(v or 0.0) for (name, *_), v in zip(sliders, args[:n_ctl], strict=True)}
        (preset, intensity, text, yaw, pitch, roll, light, az, el, ref, take) = args[n_ctl:]
        return EditValues(controls=ctl, preset=preset or "none", intensity=float(intensity or 0.0), text=text or "",
                          yaw=float(yaw or 0), pitch=float(pitch or 0), roll=float(roll or 0), light=light or "photo",
                          light_azimuth=float(az or 0), light_elevation=float(el or 0), reference=ref,
                          take=tuple(take or ()))

    def face_index(face: Any) -> int:
        if not face:
            return 0
        try:
            return max(0, int(str(face).split()[-1]) - 1)
        except ValueError:
            return 0

    def do_render(key: Any, face: Any, engine: str, weights: str, base: str, steps: Any, buffers_on: bool,
                  *args: Any):
        if not key:
            # no photo yet (or its upload failed: keep that message on the status line)
            return gr.update(), gr.update(), gr.update(), None
        try:
            choice = EngineChoice(engine or "warp", weights or "", base or "", int(steps or 0))
            r = studio.render(str(key), values_from(args), face=face_index(face), engine=choice,
                              buffers=bool(buffers_on))
        except Exception as e:  # every error becomes a message
            return gr.update(), gr.update(), _warn(error_message(e)), None
        gallery = [(im, lab) for im, lab in r.buffers] if buffers_on else gr.update()
        return r.after, gallery, r.message, r

    def do_finish(r: Any):
        """After the face view is shown: the before|after sheet, the whole edited photo and its PNG for
        the download button (kept off the slider's path: one image per update reaches the page first)."""
        if r is None:
            return gr.update(), gr.update(), gr.update()
        try:
            from facerig.viz import hstack, label

            pair = hstack([label(r.before, "before"), label(r.after, "after")], height=360)
            return pair, r.image, str(studio.save(r))
        except Exception as e:
            gr.Warning(error_message(e))
            return gr.update(), gr.update(), gr.update()

    def do_upload(payload: Any):
        path = _payload_path(payload)
        if not path:
            return None, gr.update(choices=[], value=None), gr.update(value=[], visible=False), "upload a photo (or pick a sample)"
        try:
            photo = studio.load(path, payload.get("orig_name") if isinstance(payload, dict) else None)
        except Exception as e:
            return None, gr.update(choices=[], value=None), gr.update(value=[], visible=False), _warn(error_message(e))
        names = [f"face {i + 1}" for i in range(len(photo.faces))]
        thumbs = [(t, n) for t, n in zip(face_thumbnails(photo.image, photo.faces), names, strict=True)]
        h, w = photo.image.shape[:2]
        msg = f"{w}x{h} photo, {len(names)} face{'s' if len(names) != 1 else ''} found (largest first)"
        many = len(names) > 1
        return (photo.key, gr.update(choices=names, value=names[0], visible=many),
                gr.update(value=thumbs, visible=many), msg)

    def do_engine(engine: str, weights: str, base: str, steps: Any = 0):
        ok, reason = engine_status(EngineChoice(engine or "warp", weights or "", base or "", int(steps or 0)))
        return ("" if ok else "**disabled:** ") + reason, gr.update(value=engine == "warp" and ok)

    def do_reenact(portrait_in: Any, video_in: Any, motion: str, ref_frame: Any, max_frames: Any, engine: str,
                   weights: str, base: str, steps: Any, progress: Any = gr.Progress()):
        portrait, video = _payload_path(portrait_in), _payload_path(video_in)
        if not portrait or not video:
            return None, _warn("give a portrait and a driving video")
        try:
            def cb(i: int, n: int) -> None:
                progress((i, n), desc="reenacting", unit="frames")

            rf = None if ref_frame in (None, "", -1) or (motion == "absolute") else int(ref_frame)
            mf = None if not max_frames else int(max_frames)
            res = studio.reenact(portrait, video, motion=motion, ref_frame=rf, max_frames=mf, progress=cb,
                                 engine=EngineChoice(engine or "warp", weights or "", base or "", int(steps or 0)))
        except Exception as e:
            return None, _warn(error_message(e))
        audio = "with the driver's audio" if res.has_audio else "no audio (the driving video has none)"
        return str(res.path), f"{res.frames} frames at {float(res.fps):.3g} fps, {audio}; motion {res.motion}"

    # ---- layout -------------------------------------------------------------------------------
    with gr.Blocks(title="facerig", analytics_enabled=False) as demo:
        gr.Markdown("## facerig: edit expression, head pose and light; reenact a portrait")
        key = gr.State(None)
        last = gr.State(None)
        ref_path = gr.State(None)
        with gr.Tab("Edit"):
            with gr.Row():
                with gr.Column(scale=1, min_width=280):
                    photo = gr.Image(type="filepath", label="Photo", sources=["upload", "clipboard"], elem_id="photo",
                                     height=300)
                    with gr.Row():
                        sample = gr.Dropdown(list(SAMPLES), value=SAMPLES[0], label="Sample", scale=2)
                        use_sample = gr.Button("Use sample", elem_id="use-sample", scale=1)
                    face = gr.Radio([], label="Face", elem_id="face", visible=False)
                    thumbs = gr.Gallery(label="Faces found (largest first)", columns=4, height=130, elem_id="faces",
                                        allow_preview=False, visible=False)
                    with gr.Accordion("Engine", open=False):
                        engine = gr.Dropdown(list(ENGINE_CHOICES), value="warp", label="Engine", elem_id="engine")
                        weights = gr.Textbox(label="Weights path (neural engines; dualmapper: mapper folders, comma-separated)", elem_id="weights")
                        base = gr.Textbox(label="Stable Diffusion 1.5 base (rigface, magicportrait, instaface)", elem_id="base")
                        steps = gr.Number(0, precision=0, label="Sampling steps (0: the engine's default)",
                                          elem_id="steps")
                        engine_msg = gr.Markdown(engine_status(EngineChoice())[1], elem_id="engine-status")
                    live = gr.Checkbox(True, label="Update as the sliders move", elem_id="live")
                    buffers_on = gr.Checkbox(False, label="Show the buffers (slower)", elem_id="buffers-on")
                    render_btn = gr.Button("Render", variant="primary", elem_id="render")
                with gr.Column(scale=2):
                    out = gr.Image(label="Result (the face; the whole photo below)", type="numpy", interactive=False,
                                   elem_id="result", height=480, format="jpeg")
                    status = gr.Markdown("upload a photo (or pick a sample)", elem_id="status")
                    download = gr.DownloadButton("Download the edited photo (PNG)", elem_id="download")
                    with gr.Tab("Before | after"):
                        compare = gr.Image(label="before | after", type="numpy", interactive=False, elem_id="compare",
                                           height=360)
                    with gr.Tab("Whole photo"):
                        whole = gr.Image(label="edited photo", type="numpy", interactive=False, elem_id="whole",
                                         height=480)
                    with gr.Tab("Buffers"):
                        gallery = gr.Gallery(label="buffers before / after", columns=4, height=360,
                                             elem_id="buffers")
            with gr.Row():
                with gr.Column():
                    gr.Markdown("**Expression** (0 = as in the photo)")
                    ctl = [gr.Slider(lo, hi, value=0.0, step=0.05, label=name.replace("_", " "), info=desc,
                                     elem_id=f"ctl-{name}") for name, lo, hi, desc in sliders]
                with gr.Column():
                    gr.Markdown("**Preset or text**")
                    preset = gr.Dropdown(["none", *PRESET_NAMES], value="none", label="Preset", elem_id="preset")
                    intensity = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="Preset intensity",
                                          elem_id="intensity")
                    text = gr.Textbox(label="Describe the expression (Enter)", placeholder="make her smile a lot",
                                      elem_id="text")
                    gr.Markdown(f"**Head pose** (degrees, relative to the photo; the warp engine's faithful "
                                f"range: {prange.describe()})")
                    yaw = gr.Slider(-prange.yaw, prange.yaw, value=0, step=1, label="yaw (> 0: nose to image right)",
                                    elem_id="yaw")
                    pitch = gr.Slider(-prange.pitch, prange.pitch, value=0, step=1, label="pitch (> 0: up)",
                                      elem_id="pitch")
                    roll = gr.Slider(-prange.roll, prange.roll, value=0, step=1, label="roll", elem_id="roll")
                    gr.Markdown("**Light**")
                    light = gr.Radio(["photo", *LIGHT_PRESET_NAMES, "custom"], value="photo", label="Light",
                                     elem_id="light")
                    az = gr.Slider(-180, 180, value=0, step=5, label="azimuth (custom; > 0 from image right)",
                                   elem_id="azimuth")
                    el = gr.Slider(-90, 90, value=15, step=5, label="elevation (custom; > 0 from above)",
                                   elem_id="elevation")
                    gr.Markdown("**Reference photo**")
                    ref = gr.Image(type="filepath", label="Reference", sources=["upload"], height=160,
                                   elem_id="reference")
                    take = gr.CheckboxGroup(["expression", "pose", "light"], label="Take from the reference",
                                            elem_id="take")
        with gr.Tab("Reenact"):
            with gr.Row():
                with gr.Column():
                    portrait = gr.Image(type="filepath", label="Portrait", sources=["upload"], height=260,
                                        elem_id="portrait")
                    video = gr.Video(label="Driving video", sources=["upload"], elem_id="driving")
                    motion = gr.Radio(["relative", "absolute"], value="relative", label="Motion",
                                      info="relative: the driver's motion against its most neutral frame, on the "
                                           "portrait's own pose; absolute: the driver's expression and pose",
                                      elem_id="motion")
                    ref_frame = gr.Number(-1, precision=0, label="Reference driving frame (-1: the most neutral)",
                                          elem_id="ref-frame")
                    max_frames = gr.Number(0, precision=0, label="At most this many frames (0: all)",
                                           elem_id="max-frames")
                    go = gr.Button("Reenact", variant="primary", elem_id="reenact")
                with gr.Column():
                    result_video = gr.Video(label="Result", interactive=False, elem_id="reenacted")
                    re_status = gr.Markdown(elem_id="reenact-status")

        # ---- events ---------------------------------------------------------------------------
        edit_inputs = [key, face, engine, weights, base, steps, buffers_on, *ctl, preset, intensity, text, yaw, pitch,
                       roll, light, az, el, ref_path, take]
        edit_outputs = [out, gallery, status, last]
        finish = [compare, whole, download]

        def live_render(live_on: bool, *args: Any):
            if not live_on:
                return tuple(gr.update() for _ in edit_outputs)
            return do_render(*args)

        for comp in [*ctl, intensity, yaw, pitch, roll, az, el]:
            # queue=False: a slider update is a plain HTTP call (no queue round trips)
            comp.change(live_render, [live, *edit_inputs], edit_outputs, show_progress="hidden", queue=False,
                        trigger_mode="always_last").then(do_finish, last, finish, show_progress="hidden")
        for comp in (preset, light, take, face, buffers_on):
            comp.change(live_render, [live, *edit_inputs], edit_outputs, show_progress="hidden",
                        trigger_mode="always_last").then(do_finish, last, finish, show_progress="hidden")
        text.submit(do_render, edit_inputs, edit_outputs).then(do_finish, last, finish, show_progress="hidden")
        ref.change(_payload_path, ref, ref_path, preprocess=False).then(
            live_render, [live, *edit_inputs], edit_outputs).then(do_finish, last, finish, show_progress="hidden")
        render_btn.click(do_render, edit_inputs, edit_outputs).then(do_finish, last, finish,
                                                                     show_progress="hidden")
        photo.change(do_upload, photo, [key, face, thumbs, status], preprocess=False).then(
            do_render, edit_inputs, edit_outputs).then(do_finish, last, finish, show_progress="hidden")

        def pick_sample(name: str):
            import shutil

            from facerig.io.samples import sample_path

            src = sample_path(name or SAMPLES[0])
            dst = studio.work_dir / f"sample-{src.name}"  # gradio serves files from its allowed folders only
            if not dst.exists():
                shutil.copyfile(src, dst)
            return str(dst)

        use_sample.click(pick_sample, sample, photo)

        def pick_face(evt: Any):  # a click on a thumbnail chooses that face
            return gr.update(value=f"face {int(evt.index) + 1}")

        pick_face.__annotations__ = {"evt": gr.SelectData}  # gradio passes event data by this annotation

        thumbs.select(pick_face, None, face)
        for comp in (engine, weights, base):
            comp.change(do_engine, [engine, weights, base], [engine_msg, live])
        go.click(do_reenact, [portrait, video, motion, ref_frame, max_frames, engine, weights, base, steps],
                 [result_video, re_status], preprocess=False)
    demo.queue(default_concurrency_limit=2)
    return demo


def serve(host: str = "127.0.0.1", port: int = 7860, *, max_upload_mb: float | None = None,
          max_upload_pixels: int | None = None, open_browser: bool = False, block: bool = True) -> Any:
    """Start the web UI; returns the launched Blocks (``block=False``: the server runs in a thread)."""
    from facerig.errors import InvalidInput

    if not 0 < int(port) < 65536:
        raise InvalidInput("--port", "a TCP port 1..65535", port)
    _gradio()  # a missing [ui] extra is reported before anything is loaded
    if not is_local_host(host):
        log.warning("serving on %s: anyone who can reach this address can upload photos and use this "
                    "machine's CPU; use 127.0.0.1 to keep the UI local", host)
    studio = Studio(max_upload_mb=max_upload_mb, max_upload_pixels=max_upload_pixels)
    demo = build_app(studio)
    _warm_up()
    max_file = f"{studio.max_upload_bytes * 20 // (1024 * 1024)}mb"  # driving videos; photos are checked by Studio
    demo.launch(server_name=host, server_port=int(port), inbrowser=open_browser, prevent_thread_lock=not block,
                show_error=False, max_file_size=max_file, ssr_mode=False, quiet=True,
                allowed_paths=[str(studio.work_dir)])
    return demo


def _warm_up() -> None:
    """Load the detector and the text model in the background so the first upload and the first text
    do not wait for them."""
    import threading

    def work() -> None:
        try:
            from facerig.fit.api import _default_detector

            _default_detector()
            from facerig.rig.text import get_text_mapper

            get_text_mapper()._ensure_bank()
        except Exception as e:  # a warm-up must never break the server
            log.debug("warm-up failed: %s", e)

    threading.Thread(target=work, daemon=True, name="facerig-ui-warmup").start()
