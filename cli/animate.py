"""`diffrender animate MESH -o turntable.mp4` and `diffrender animate FIT_DIR -o replay.mp4`: a
turntable of a mesh, or a replay of a fit next to its targets, as MP4, GIF or PNG frames."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import typer
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.text import Text

from diffrender import video
from diffrender.animation import (WHITE, FitFolderError, load_fit, replay_frames, turntable_azimuths,
                                  turntable_cameras, turntable_frames)
from diffrender.video import VideoError, VideoWriter

from .errors import CliError, bad_argument, one_line_errors, writing
from .render import build_renderer
from .scene import (AmbientOption, BackgroundOption, ColorOption, DeviceOption, FovOption, GammaOption, LightOption,
                    Look, NoTextureOption, RendererOption, ShininessOption, SigmaOption, SizeOption, SpecularOption,
                    TextureFilterOption, check_fov, check_orbit, load_mesh_reporting_warnings, parse_color,
                    parse_light, parse_size, resolve_device)
from .wording import counted

HELP = ("Animate a mesh on a turntable, or replay a fit next to its targets, as MP4, GIF or PNG frames.\n\n"
        "Frame k of a turntable looks from azimuth + degrees·k/frames. A fit folder replays one frame per saved "
        "state, rendered from the fit's own cameras at the fit's image size next to its targets (the soft renderer "
        "uses the fit's σ of each state; --size, --frames and the camera options are for turntables); with "
        "--turntable, its final mesh spins instead.")
NO_FFMPEG = ("no ffmpeg found for MP4 or GIF output: imageio-ffmpeg ships one, so reinstall it "
             "(pip install --force-reinstall imageio-ffmpeg), or write frames/%04d.png")


class _FrameRate(ProgressColumn):
    """Frames per second so far, encoding included."""

    def render(self, task) -> Text:
        elapsed = task.elapsed or 0.0
        return Text(f"{task.completed / elapsed:5.1f} fps" if elapsed > 0 else "  ... fps", style="progress.data.speed")


def _check_output(output: Path, fps: float) -> str:
    """The writer kind of ``output``, refusing bad suffixes and frame rates before any work."""
    try:
        kind = video.video_kind(output)
    except VideoError as error:
        raise bad_argument(str(error)) from None
    try:
        video.check_fps(fps)
    except VideoError as error:
        raise bad_argument(f"--{error}") from None
    if kind in ("mp4", "gif") and not video.ffmpeg_available():
        raise CliError(NO_FFMPEG)
    return kind


def _write(output: Path, fps: float, batches: Iterator[np.ndarray], total: int) -> float:
    """Streams the frame batches to ``output`` with a progress bar; returns the frames per second
    achieved. Nothing is left at ``output`` unless every frame was written."""
    columns = (TextColumn("animate"), BarColumn(), MofNCompleteColumn(), TextColumn("frames"), _FrameRate(),
               TimeElapsedColumn(), TimeRemainingColumn())
    started = time.perf_counter()
    try:
        with writing(output), VideoWriter(output, fps) as writer, \
                Progress(*columns, console=Console(stderr=True)) as progress:
            task = progress.add_task("animate", total=total)
            for batch in batches:
                for frame in batch:
                    writer.append(frame)
                progress.advance(task, len(batch))
    except VideoError as error:
        raise CliError(str(error)) from None
    return total / (time.perf_counter() - started)


@one_line_errors
def animate(
    mesh: str = typer.Argument(..., metavar="MESH|FIT_DIR",
                               help="A mesh file trimesh reads, a built-in shape (sphere, cube, teapot), or a "
                                    "`diffrender fit` output folder to replay."),
    output: Path = typer.Option(Path("animation.mp4"), "-o", "--output",
                                help="Output: .mp4 (H.264, yuv420p, faststart), .gif, or a PNG pattern like "
                                     "frames/%04d.png (RGBA, in an existing folder)."),
    frames: int = typer.Option(120, help="Turntable: number of frames."),
    fps: float = typer.Option(30.0, help="Frames per second."),
    size: SizeOption = "512x512",
    renderer: RendererOption = "barycentric",
    azimuth: float = typer.Option(30.0, help="Turntable: azimuth of the first frame, degrees around +y (0 looks from +z)."),
    elevation: float = typer.Option(20.0, help="Turntable: camera elevation in degrees, in [-90, 90]."),
    distance: Optional[float] = typer.Option(None, help="Turntable: camera distance; default frames the mesh in every "
                                                        "frame with one distance for the whole turn."),
    degrees: float = typer.Option(360.0, help="Turntable: degrees turned over the animation (negative: clockwise)."),
    fov: FovOption = 40.0,
    turntable: bool = typer.Option(False, "--turntable", help="With a fit folder: spin the fit's final mesh instead of replaying the fit."),
    light: LightOption = [],
    ambient: AmbientOption = "0.1",
    color: ColorOption = None,
    background: BackgroundOption = None,
    specular: SpecularOption = "0",
    shininess: ShininessOption = 32.0,
    sigma: SigmaOption = 1e-4,
    gamma: GammaOption = 1e-4,
    device: DeviceOption = "auto",
    no_texture: NoTextureOption = False,
    texture_filter: TextureFilterOption = None,
):
    """The `animate` command; its help text is :data:`HELP`."""
    kind = _check_output(output, fps)
    if frames < 1:
        raise bad_argument(f"--frames must be at least 1, got {frames}")
    if not math.isfinite(degrees):
        raise bad_argument(f"--degrees must be finite, got {degrees:g}")
    check_orbit(azimuth, elevation, distance)
    check_fov(fov)
    chosen = build_renderer(renderer, sigma, gamma, texture_filter=texture_filter)
    target_device = resolve_device(device)
    look = Look(lights=light, ambient=ambient, color=color, background=background, specular=specular,
                shininess=shininess, texture=not no_texture)
    # Parse the look now, so that a bad value fails before any frame (and the progress bar) appears.
    backdrop = parse_color(background, "--background") if background is not None else None
    look.material(1)
    for text in light:
        parse_light(text)

    source = Path(mesh)
    replay = None
    if source.is_dir():
        try:
            replay = load_fit(source)
        except FitFolderError as error:
            raise CliError(str(error)) from None
    if replay is not None and not turntable:
        height, width = replay.num_views * replay.image_size[0], 2 * replay.image_size[1]
        count = replay.num_states
        override = look.vertex_colors(replay.final_mesh()) if color is not None else None
        shown_replay = replay if look.texture else replay.without_texture()
        batches = replay_frames(shown_replay, chosen, look, backdrop or WHITE, override, target_device)
        shown = f"{counted(replay.num_states, 'fit state')} × {counted(replay.num_views, 'view')}"
    else:
        height, width = parse_size(size)
        subject = look.surface(replay.final_mesh() if replay is not None else load_mesh_reporting_warnings(mesh))
        cameras = turntable_cameras(subject.vertices, turntable_azimuths(frames, degrees, azimuth), elevation,
                                    (height, width), fov, distance)
        count = frames
        # PNG frames keep the coverage as alpha, like `render`; a video has no alpha, so it shows
        # the background (white by default).
        batches = turntable_frames(chosen, subject, look.vertex_colors(subject), cameras, look, (height, width),
                                   background=backdrop if kind == "png-sequence" else backdrop or WHITE,
                                   alpha=kind == "png-sequence", device=target_device)
        shown = counted(subject.num_faces, "triangle")
    rate = _write(output, fps, batches, count)
    padded = f" padded to {width + width % 2}x{height + height % 2}" if kind == "mp4" and (width % 2 or height % 2) else ""
    typer.echo(f"wrote {output} ({counted(count, 'frame')} of {width}x{height}{padded} at {fps:g} fps; {shown}, {chosen.name}; "
               f"{rate:.1f} frames/s)")
