"""`diffrender fit [TARGET ...] [--config FILE.toml] [-o DIR] ...`: fit a mesh to target images.

The command only turns flags into config overrides, the validated config into a
:class:`~diffrender.fit.FitProblem`, and shows progress; the optimisation lives in
:mod:`diffrender.fit` and the output files in :mod:`diffrender.fit_outputs`.
"""
from __future__ import annotations

import os
import statistics
import time
import warnings
from pathlib import Path
from typing import List, Optional, Tuple

import torch
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from diffrender.camera import Camera
from diffrender.fit import (FitError, FitProblem, FitSettings, LossWeights, Pose, StepReport, Template, Truth,
                            Views, render_targets, resize_image, run_fit, silhouette_target)
from diffrender.fit_outputs import FitRecorder
from diffrender.images import load_image
from diffrender.mesh import Mesh, load_mesh
from diffrender.shading import Material, PointLights
from diffrender.shapes import builtin_shape
from diffrender.video import VideoError

from .config import FitConfig, Override, load_config, parse_value
from .errors import CliError, bad_argument, one_line_errors, writing
from .scene import DeviceOption, parse_floats, parse_light, parse_size, resolve_device
from .wording import counted

# Targets whose aspect ratio differs from the fit's by more than this are an error, not resized.
ASPECT_TOLERANCE = 0.01

# Flags that set one config key each: (parameter name, dotted key, how to convert the text).
_LIST = (lambda text, flag: [part.strip() for part in text.split(",") if part.strip()])
_VEC3 = (lambda text, flag: parse_floats(text, 3, flag))
_SIZE = (lambda text, flag: list(parse_size(text, option=flag)))
_RGB = (lambda text, flag: text if text == "auto" else parse_floats(text, 3, flag))
_PLAIN = (lambda value, flag: value)
FLAG_KEYS = {
    "renderer": ("renderer", _PLAIN), "image_size": ("image_size", _SIZE), "seed": ("seed", _PLAIN),
    "background": ("background", _RGB), "threshold": ("threshold", _PLAIN), "strict": ("strict", _PLAIN),
    "antialias": ("antialias", _PLAIN), "texture_filter": ("texture_filter", _PLAIN),
    "threads": ("threads", _PLAIN),
    "fov": ("camera.fov", _PLAIN), "near": ("camera.near", _PLAIN), "far": ("camera.far", _PLAIN),
    "init": ("init.mesh", _PLAIN), "subdivisions": ("init.subdivisions", _PLAIN), "scale": ("init.scale", _PLAIN),
    "init_euler": ("init.euler", _VEC3), "init_translation": ("init.translation", _VEC3),
    "color": ("init.color", _VEC3), "normals": ("init.normals", _PLAIN),
    "params": ("optimize.params", _LIST), "camera_parts": ("optimize.camera", _LIST),
    "pose_parts": ("optimize.pose", _LIST),
    "steps": ("optimize.steps", _PLAIN), "optimizer": ("optimize.optimizer", _PLAIN), "lr": ("optimize.lr", _PLAIN),
    "momentum": ("optimize.momentum", _PLAIN), "clip_grad_norm": ("optimize.clip_grad_norm", _PLAIN),
    "views_per_step": ("optimize.views_per_step", _PLAIN),
    "texture_size": ("optimize.texture_size", _PLAIN), "texture_init": ("optimize.texture_init", _PLAIN),
    "w_silhouette": ("loss.silhouette", _PLAIN), "w_iou": ("loss.iou", _PLAIN), "w_rgb": ("loss.rgb", _PLAIN),
    "w_edge": ("loss.edge", _PLAIN), "w_laplacian": ("loss.laplacian", _PLAIN), "w_normal": ("loss.normal", _PLAIN),
    "w_flatten": ("loss.flatten", _PLAIN), "w_texture_tv": ("loss.texture_tv", _PLAIN),
    "sigma": ("soft.sigma", _PLAIN), "gamma": ("soft.gamma", _PLAIN), "sigma_final": ("soft.sigma_final", _PLAIN),
    "anneal_start": ("optimize.anneal_start", _PLAIN), "lr_final": ("optimize.lr_final", _PLAIN),
    "out": ("output.dir", _PLAIN), "preview_every": ("output.preview_every", _PLAIN),
    "frame_every": ("output.frame_every", _PLAIN), "fps": ("output.fps", _PLAIN),
    "synthetic": ("synthetic.mesh", _PLAIN), "synthetic_euler": ("synthetic.euler", _VEC3),
    "synthetic_translation": ("synthetic.translation", _VEC3), "synthetic_eye": ("synthetic.eye", _VEC3),
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def collect_overrides(values: dict, settings: List[str], lights: List[str]) -> List[Override]:
    """Config overrides from the flags that were given (not None), --light and --set KEY=VALUE."""
    overrides = []
    for name, (dotted, convert) in FLAG_KEYS.items():
        value = values.get(name)
        if value is not None:
            overrides.append(Override(dotted, convert(value, _flag(name)), _flag(name)))
    if lights:
        parsed = []
        for text in lights:
            position, intensity = parse_light(text)
            parsed.append({"position": position, "intensity": intensity})
        overrides.append(Override("lights", parsed, "--light"))
    for text in settings:
        dotted, equals, value = text.partition("=")
        if not equals or not dotted.strip():
            raise bad_argument(f"--set must look like KEY=VALUE (e.g. optimize.lr=2.0), got '{text}'")
        overrides.append(Override(dotted.strip(), parse_value(value.strip()), f"--set {dotted.strip()}"))
    return overrides


# --------------------------------------------------------------------------------------------
# Config → problem
# --------------------------------------------------------------------------------------------


def _load_shape(source: str, subdivisions: int, normals: str, color, scale: float = 1.0) -> Template:
    """A template from a built-in shape or a mesh file, scaled, with fixed radial normals when
    asked (tf's cube look), a uniform colour, and the file's UVs and texture if it has them."""
    if source == "sphere":
        vertices, faces = builtin_shape("sphere", subdivisions=subdivisions)
        mesh = Mesh(vertices, faces)
    else:
        mesh = load_mesh(source)
    vertices = mesh.vertices * scale
    fixed = torch.nn.functional.normalize(vertices, dim=-1) if normals == "radial" else None
    colors = torch.tensor(list(color), dtype=torch.float32).expand(vertices.shape[0], 3).contiguous()
    return Template(vertices=vertices.float(), faces=mesh.faces, colors=colors, normals=fixed, uvs=mesh.uvs,
                    texture=mesh.texture)


def _cameras(config: FitConfig) -> Camera:
    eyes, lookats, ups = [], [], []
    for view in config.views:
        eyes.append(torch.tensor(view.camera_position(), dtype=torch.float64))
        lookats.append(torch.tensor(view.lookat))
        ups.append(torch.tensor(view.camera_up()))
    return Camera(torch.stack(eyes).float(), torch.stack(lookats).float(), torch.stack(ups).float(),
                  fov_y=config.camera.fov, near=config.camera.near, far=config.camera.far)


def _lights(config: FitConfig, camera: Camera) -> PointLights:
    """The [[lights]] for every view, or one white light at each view's eye."""
    batch = camera.batch_size
    if not config.lights:
        return PointLights(camera.eye.unsqueeze(1).clone(), torch.ones(batch, 1, 3))
    positions = torch.tensor([list(light.position) for light in config.lights])
    intensities = torch.tensor([list(light.intensity) if isinstance(light.intensity, tuple) else [light.intensity] * 3
                                for light in config.lights])
    return PointLights(positions.expand(batch, -1, 3).contiguous(), intensities.expand(batch, -1, 3).contiguous())


def _load_targets(config: FitConfig) -> Tuple[Tuple[int, int], List[Optional[torch.Tensor]]]:
    """(image size, per-view target [H,W,4] or None); resizes with a warning, or refuses."""
    images = [None if view.target is None else load_image(view.target) for view in config.views]
    first = next((image for image in images if image is not None), None)
    if config.image_size is not None:
        size = config.image_size
    else:
        size = tuple(first[0].shape[:2]) if first is not None else (96, 96)
    targets = []
    for view, image in zip(config.views, images):
        if image is None:
            targets.append(None)
            continue
        rgba, has_alpha = image
        height, width = rgba.shape[:2]
        if (height, width) != tuple(size):
            described = f"target {view.target} is {width}x{height}, the fit is {size[1]}x{size[0]}"
            if config.strict:
                raise CliError(f"{described} (--strict)")
            if abs(width / height - size[1] / size[0]) > ASPECT_TOLERANCE * size[1] / size[0]:
                raise CliError(f"{described}: a different aspect ratio cannot be resized without distortion")
            warnings.warn(f"{described}: resized")
            rgba = resize_image(rgba, tuple(size))
        background = None if config.background == "auto" else config.background
        target = silhouette_target(rgba, has_alpha, background, config.threshold)
        _warn_if_silhouette_is_uniform(str(view.target), target[..., 3], has_alpha)
        targets.append(target)
    return tuple(size), targets


def _warn_if_silhouette_is_uniform(name: str, alpha: torch.Tensor, has_alpha: bool) -> None:
    """A silhouette that is the same in every pixel (empty, or covering the image) gives the fit no
    outline to match: most often a background or threshold that does not suit the image."""
    if float(alpha.amax()) > float(alpha.amin()):
        return
    what = "no object pixels" if float(alpha.amax()) == 0 else "the same coverage in every pixel"
    how = "its alpha channel" if has_alpha else "--background and --threshold"
    warnings.warn(f"target {name} has {what} (silhouette from {how}); the fit has no outline to match")


def settings_from(config: FitConfig) -> FitSettings:
    optimize, soft, output = config.optimize, config.soft, config.output
    return FitSettings(
        params=optimize.params, camera_parts=optimize.camera, pose_parts=optimize.pose, steps=optimize.steps,
        optimizer=optimize.optimizer, lr=optimize.lr, momentum=optimize.momentum,
        clip_grad_norm=optimize.clip_grad_norm, views_per_step=optimize.views_per_step, seed=config.seed,
        weights=LossWeights(**vars(config.loss)), renderer=config.renderer, sigma=soft.sigma, gamma=soft.gamma,
        sigma_final=soft.sigma_final, lr_final=optimize.lr_final, anneal_start=optimize.anneal_start,
        preview_every=output.preview_every, frame_every=output.frame_every, fps=output.fps,
        antialias=config.antialias, texture_size=optimize.texture_size, texture_init=optimize.texture_init,
        texture_filter=config.texture_filter)


def build_problem(config: FitConfig) -> FitProblem:
    """Loads meshes and targets and renders synthetic targets: everything before the first step."""
    init = config.init
    template = _load_shape(init.mesh, init.subdivisions, init.normals, init.color, init.scale)
    camera = _cameras(config)
    lights = _lights(config, camera)
    material = Material()
    size, targets = _load_targets(config)
    settings = settings_from(config)
    settings.check()
    settings.check_template(template)
    truth = None
    if config.synthetic is not None:
        synthetic = config.synthetic
        truth_mesh = _load_shape(synthetic.mesh, init.subdivisions, init.normals, init.color)
        truth_pose = Pose.from_euler(synthetic.euler, synthetic.translation)
        true_eye = camera.eye.clone() if synthetic.eye is None else \
            torch.tensor([list(synthetic.eye)]).expand(camera.batch_size, 3).contiguous()
        true_camera = Camera(true_eye, camera.lookat, camera.up, fov_y=camera.fov_y, near=camera.near, far=camera.far)
        rendered = render_targets(settings, truth_mesh, truth_pose, true_camera, lights, material, size)
        targets = [rendered[i] if target is None else target for i, target in enumerate(targets)]
        truth = Truth(truth_pose, true_eye)
    names = [view.target or f"synthetic:{index}" for index, view in enumerate(config.views)]
    return FitProblem(template=template, pose=Pose.from_euler(init.euler, init.translation),
                      views=Views(camera, torch.stack(targets), names), lights=lights, material=material,
                      image_size=size, settings=settings, truth=truth)


def choose_threads(requested: int) -> int:
    """CPU threads for the fit: ``requested``, or for 0 torch's default less the cores that other
    processes keep busy. A fit runs many small parallel regions per step, and OpenMP threads that
    wait on a descheduled peer at each one make an oversubscribed fit an order of magnitude slower
    than a single thread."""
    if requested > 0:
        return requested
    available = torch.get_num_threads()
    idle = int((os.cpu_count() or available) - cores_busy_elsewhere() + 0.5)
    return max(1, min(available, idle))


# Runnable threads are counted this many times, 2 ms apart, and the median taken: one look can
# catch a busy process between two bursts, or an idle one in the middle of one.
BUSY_SAMPLES = 5


def cores_busy_elsewhere() -> float:
    """The cores other processes keep busy now. On Linux, the runnable threads that are not this
    process's (the 1-minute load average lags by a minute: it would still count a build that has
    just finished, and a fit started after one would run on one thread). Elsewhere, that average."""
    try:
        samples = []
        for _ in range(BUSY_SAMPLES):
            samples.append(_runnable_threads_elsewhere())
            time.sleep(0.002)
        return float(statistics.median(samples))
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except OSError:
            return 0.0


def _runnable_threads_elsewhere() -> int:
    """Runnable threads on the machine (/proc/loadavg's fourth field) less this process's own."""
    with open("/proc/loadavg") as loadavg:
        runnable = int(loadavg.read().split()[3].split("/")[0])
    own = 0
    for stat in Path("/proc/self/task").glob("*/stat"):
        try:
            own += stat.read_text().rsplit(")", 1)[1].split()[0] == "R"
        except OSError:
            continue  # the thread has just ended
    return max(0, runnable - own)


def prepare_output(folder: Path) -> None:
    """Creates OUT and OUT/previews, or fails with one line before any work is done."""
    if folder.exists() and not folder.is_dir():
        raise CliError(f"output folder {folder} exists and is not a folder")
    try:
        (folder / "previews").mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CliError(f"cannot create output folder {folder}: {error.strerror or error}") from None
    if not os.access(folder, os.W_OK) or not os.access(folder / "previews", os.W_OK):
        raise CliError(f"output folder {folder} is not writable")


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


# Room the step counter, bar and ETA take on a progress line.
PROGRESS_FIXED_WIDTH = 52


def _describe(report: StepReport, width: int) -> str:
    """IoU, total and terms, cut to ``width`` characters (rich squeezes the step counter and
    ETA instead of wrapping when a line is too long)."""
    terms = " ".join(f"{name} {value:.3g}" for name, value in report.terms.items())
    text = f"IoU {report.iou:.3f} loss {report.total:.4g} ({terms})"
    return text if len(text) <= width else text[:max(width - 1, 0)] + "…"


def _run(problem: FitProblem, config: FitConfig, out: Path, console: Console):
    started = time.perf_counter()
    progress = Progress(TextColumn("fit step"), MofNCompleteColumn(), BarColumn(bar_width=20), TimeRemainingColumn(),
                        TextColumn("{task.fields[info]}"), console=console, transient=False)
    width = max(console.width - PROGRESS_FIXED_WIDTH, 10)
    with FitRecorder(out, problem) as recorder, progress:
        task = progress.add_task("fit", total=problem.settings.steps, info="")
        result = run_fit(problem, recorder, lambda report: progress.update(task, completed=report.step,
                                                                           info=_describe(report, width)))
    params = recorder.finish(result, config.as_dict(), wall_seconds=time.perf_counter() - started)
    return result, params


def _fit_and_report(config: FitConfig, device: torch.device) -> None:
    """Builds the problem, writes the output folder and prints the outcome (the command's body
    once its flags are a validated config)."""
    console = Console(stderr=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            problem = build_problem(config).to(device)
        except FitError as error:
            raise CliError(str(error)) from None
    for warning in caught:
        typer.echo(f"warning: {warning.message}", err=True)
    folder = Path(config.output.dir)
    prepare_output(folder)
    try:
        with writing(folder):
            result, params = _run(problem, config, folder, console)
    except (FitError, VideoError) as error:
        raise CliError(str(error)) from None
    ious = ", ".join(f"{value:.3f}" for value in params["iou"])
    summary = f"wrote {folder} ({counted(result.steps_completed, 'step')} in {result.seconds:.1f}s; hard IoU per view: {ious})"
    if result.stopped == "interrupted":
        typer.echo(f"interrupted: {summary}", err=True)
        raise typer.Exit(130)
    if result.stopped != "finished":
        raise CliError(f"{result.stopped}; {summary}")
    typer.echo(summary)


@one_line_errors
def fit(
    targets: List[Path] = typer.Argument(None, help="Target images (PNG/JPEG); they fill the config's \\[\\[views]] in order."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config (see configs/*.toml)."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Output folder (\\[output] dir; default fit_out)."),
    steps: Optional[int] = typer.Option(None, help="Optimiser steps."),
    renderer: Optional[str] = typer.Option(None, help="soft (SoftRas) or barycentric (tf_mesh_renderer)."),
    seed: Optional[int] = typer.Option(None, help="Random seed (view sampling)."),
    image_size: Optional[str] = typer.Option(None, help="Fit resolution WxH (or N); default: the first target's size."),
    background: Optional[str] = typer.Option(None, help="Targets without alpha: background R,G,B in [0,1], or auto (the border's median)."),
    threshold: Optional[float] = typer.Option(None, help="Targets without alpha: colour distance from the background that counts as object."),
    strict: Optional[bool] = typer.Option(None, "--strict/--no-strict", help="Targets of another size are an error instead of resized."),
    antialias: Optional[bool] = typer.Option(None, "--antialias/--no-antialias", help="Barycentric renderer: analytic silhouette antialiasing (default on)."),
    texture_filter: Optional[str] = typer.Option(None, help="Barycentric renderer: texture sampling, trilinear (mip-mapped, default) or bilinear."),
    threads: Optional[int] = typer.Option(None, help="CPU threads (0 = the cores other processes leave idle)."),
    fov: Optional[float] = typer.Option(None, help="Vertical field of view (degrees) of every view."),
    near: Optional[float] = typer.Option(None, help="Near clipping distance."),
    far: Optional[float] = typer.Option(None, help="Far clipping distance."),
    init: Optional[str] = typer.Option(None, help="Template: sphere, cube, teapot or a mesh file."),
    subdivisions: Optional[int] = typer.Option(None, help="Icosphere subdivisions of the sphere template."),
    scale: Optional[float] = typer.Option(None, help="Scale of the template."),
    init_euler: Optional[str] = typer.Option(None, help="Initial pose: Euler angles X,Y,Z in radians (R = Rz·Ry·Rx)."),
    init_translation: Optional[str] = typer.Option(None, help="Initial translation X,Y,Z."),
    color: Optional[str] = typer.Option(None, help="Initial vertex colour R,G,B."),
    normals: Optional[str] = typer.Option(None, help="auto (from the shape) or radial (normalize(vertex), tf's cube)."),
    params: Optional[str] = typer.Option(None, help="What to fit, comma-separated: vertices, pose, camera, colors, texture (needs a mesh with UVs and --rgb)."),
    camera_parts: Optional[str] = typer.Option(None, "--camera-parts", help="With params camera: eye, lookat, fov (comma-separated)."),
    pose_parts: Optional[str] = typer.Option(None, "--pose-parts", help="With params pose: rotation, translation (comma-separated)."),
    optimizer: Optional[str] = typer.Option(None, help="sgd or adam."),
    lr: Optional[float] = typer.Option(None, help="Learning rate."),
    momentum: Optional[float] = typer.Option(None, help="SGD momentum."),
    clip_grad_norm: Optional[float] = typer.Option(None, help="Clip the gradient's global norm (0 = off)."),
    views_per_step: Optional[int] = typer.Option(None, help="Views rendered per step (0 = all)."),
    texture_size: Optional[int] = typer.Option(None, help="With params texture: the learned texture's side in texels (default 512)."),
    texture_init: Optional[str] = typer.Option(None, help="With params texture: grey (default) or mesh (the template's own texture)."),
    w_silhouette: Optional[float] = typer.Option(None, "--silhouette", help="Weight of the alpha MSE."),
    w_iou: Optional[float] = typer.Option(None, "--iou", help="Weight of 1 - soft IoU."),
    w_rgb: Optional[float] = typer.Option(None, "--rgb", help="Weight of the RGB MSE."),
    w_edge: Optional[float] = typer.Option(None, "--edge", help="Weight of the mean edge length."),
    w_laplacian: Optional[float] = typer.Option(None, "--laplacian", help="Weight of the uniform Laplacian."),
    w_normal: Optional[float] = typer.Option(None, "--normal", help="Weight of the normal consistency."),
    w_flatten: Optional[float] = typer.Option(None, "--flatten", help="Weight of the SoftRas flatten loss."),
    w_texture_tv: Optional[float] = typer.Option(None, "--texture-tv", help="Weight of the fitted texture's total variation."),
    sigma: Optional[float] = typer.Option(None, help="Soft renderer σ (coverage sharpness)."),
    gamma: Optional[float] = typer.Option(None, help="Soft renderer γ (depth softmax temperature)."),
    sigma_final: Optional[float] = typer.Option(None, help="Anneal σ geometrically to this value towards the end."),
    lr_final: Optional[float] = typer.Option(None, help="Anneal the learning rate geometrically to this value towards the end."),
    anneal_start: Optional[float] = typer.Option(None, help="Fraction of the steps after which σ and the learning rate anneal."),
    preview_every: Optional[int] = typer.Option(None, help="Steps between preview PNGs."),
    frame_every: Optional[int] = typer.Option(None, help="Steps between video frames."),
    fps: Optional[float] = typer.Option(None, help="Frame rate of progress.mp4."),
    synthetic: Optional[str] = typer.Option(None, help="Render the targets from this ground-truth mesh."),
    synthetic_euler: Optional[str] = typer.Option(None, help="Ground-truth pose X,Y,Z (radians)."),
    synthetic_translation: Optional[str] = typer.Option(None, help="Ground-truth translation X,Y,Z."),
    synthetic_eye: Optional[str] = typer.Option(None, help="Ground-truth eye X,Y,Z for camera fits."),
    light: List[str] = typer.Option([], help="Point light X,Y,Z[:R,G,B]; repeatable; replaces \\[\\[lights]]."),
    set_: List[str] = typer.Option([], "--set", help="Any config key: --set optimize.lr=2.0, --set views.0.eye=[0,0,3]."),
    device: DeviceOption = "auto",
):
    """Fit a mesh's shape, pose, camera, colours or texture to target images."""
    values = dict(locals())  # every flag by parameter name; FLAG_KEYS maps them to config keys
    overrides = collect_overrides(values, set_, light)
    fit_config = load_config(config, overrides, [str(t) for t in targets or []])
    target_device = resolve_device(device)
    previous = torch.get_num_threads()
    torch.set_num_threads(choose_threads(fit_config.threads))
    try:
        _fit_and_report(fit_config, target_device)
    finally:
        torch.set_num_threads(previous)  # in-process callers (tests, notebooks) keep their own
