"""Typer application: command definitions only; the work happens in ``facerig.pipelines``."""

from __future__ import annotations

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
