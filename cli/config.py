"""The TOML schema of `diffrender fit --config`: dataclasses, validation and command-line overrides.

Every key has a type and a check; unknown keys, wrong types, bad values and missing target files
raise :class:`ConfigError` with one line naming where the value came from (``FILE:LINE`` for the
file, the flag for command-line overrides) and the dotted key, e.g.
``fit.toml:12: optimize.lr: expected a number, got 'fast'``.

Overrides are applied to the parsed TOML before validation, so a flag is checked exactly like
the key it sets. ``views.N.KEY`` addresses the N-th ``[[views]]`` (N = the count appends one).

Beyond the keys of issue 4's schema, the dataclasses below also accept: ``background``,
``threshold`` and ``strict`` (targets without alpha, and resizing); ``threads``; ``init.euler``,
``init.translation``, ``init.color`` and ``init.normals`` (the starting pose and look);
``optimize.camera`` and ``optimize.pose`` (which parts of those to fit); ``optimize.texture_size``,
``optimize.texture_init``, ``texture_filter`` and ``loss.texture_tv`` (texture fits); ``optimize.lr_final``,
``optimize.anneal_start`` and ``soft.sigma_final`` (the end-of-fit anneal); and
``synthetic.translation``. ``image_size`` is ``[height, width]``.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: tomli is the same parser, before it joined the standard library
    import tomli as tomllib

from diffrender.fit import (CAMERA_PARTS, FIT_PARAMS, LOSS_TERMS, MAX_TEXTURE_SIZE, OPTIMIZERS, POSE_PARTS,
                            TEXTURE_INITS)
from diffrender.texture import FILTERS as TEXTURE_FILTERS
from diffrender.video import FPS_RANGE, MAX_FPS, MIN_FPS

from .errors import CliError
from .wording import counted

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# An icosphere template of 8 subdivisions has 1.3M triangles; each more is 4× that.
MAX_SUBDIVISIONS = 8


class ConfigError(CliError):
    """A bad configuration value; exits with code 2 like other bad arguments."""

    def __init__(self, message: str):
        super().__init__(message, code=2)


# --------------------------------------------------------------------------------------------
# Value checks: each takes the raw TOML value and returns the converted one, or raises
# ValueError with the reason (the caller adds where and which key).
# --------------------------------------------------------------------------------------------


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    return float(value)


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _numbers(count: int) -> Callable[[Any], Tuple[float, ...]]:
    def check(value: Any) -> Tuple[float, ...]:
        if not isinstance(value, list) or len(value) != count:
            raise ValueError(f"expected a list of {count} numbers, got {value!r}")
        return tuple(_number(v) for v in value)
    return check


def _positive(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def positive(value: Any):
        converted = check(value)
        if converted <= 0:
            raise ValueError(f"must be positive, got {value!r}")
        return converted
    return positive


def _non_negative(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def non_negative(value: Any):
        converted = check(value)
        if converted < 0:
            raise ValueError(f"must not be negative, got {value!r}")
        return converted
    return non_negative


def _choice(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
        return value
    return check


def _subset(choices: Tuple[str, ...]) -> Callable[[Any], Tuple[str, ...]]:
    def check(value: Any) -> Tuple[str, ...]:
        if not isinstance(value, list) or not value or any(v not in choices for v in value):
            raise ValueError(f"expected a non-empty list of {', '.join(choices)}, got {value!r}")
        return tuple(dict.fromkeys(value))
    return check


def _image_size(value: Any) -> Tuple[int, int]:
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError(f"expected [height, width], got {value!r}")
    height, width = (_positive(_integer)(v) for v in value)
    if height > 4096 or width > 4096:
        raise ValueError(f"at most 4096 pixels per side, got {value!r}")
    return height, width


def _texture_size(value: Any) -> int:
    size = _positive(_integer)(value)
    if size > MAX_TEXTURE_SIZE:
        raise ValueError(f"at most {MAX_TEXTURE_SIZE} texels per side, got {value!r}")
    return size


def _subdivisions(value: Any) -> int:
    count = _non_negative(_integer)(value)
    if count > MAX_SUBDIVISIONS:
        raise ValueError(f"at most {MAX_SUBDIVISIONS} ({20 * 4**MAX_SUBDIVISIONS:,} triangles), got {value!r}")
    return count


def _unit_rgb(value: Any) -> Vec3:
    rgb = _numbers(3)(value)
    if not all(0.0 <= c <= 1.0 for c in rgb):
        raise ValueError(f"expected [r, g, b] in [0, 1], got {list(rgb)}")
    return rgb


def _intensity(value: Any):
    if not isinstance(value, list):
        return _non_negative(_number)(value)
    rgb = _numbers(3)(value)
    if any(c < 0 for c in rgb):
        raise ValueError(f"must not be negative, got {value!r}")
    return rgb


def _fraction(value: Any) -> float:
    converted = _number(value)
    if not 0.0 <= converted <= 1.0:
        raise ValueError(f"must lie in [0, 1], got {value!r}")
    return converted


def _fov(value: Any) -> float:
    converted = _number(value)
    if not 0.0 < converted < 180.0:
        raise ValueError(f"must lie in (0, 180) degrees, got {value!r}")
    return converted


def _fps(value: Any) -> float:
    converted = _number(value)
    if not MIN_FPS <= converted <= MAX_FPS:
        raise ValueError(f"must lie in {FPS_RANGE}, got {value!r}")
    return converted


def _background(value: Any):
    if value == "auto":
        return value
    converted = _numbers(3)(value) if isinstance(value, list) else None
    if converted is None or any(not 0.0 <= v <= 1.0 for v in converted):
        raise ValueError(f'expected "auto" or [r, g, b] in [0, 1], got {value!r}')
    return converted


def key(default: Any, check: Callable[[Any], Any], help: str = ""):
    """A schema key: its default, its check, and a help line."""
    return field(default=default, metadata={"check": check, "help": help})


def table(cls, optional: bool = False):
    """A sub-table (``[name]``) of dataclass ``cls``; optional ones default to None (absent)."""
    if optional:
        return field(default=None, metadata={"table": cls})
    return field(default_factory=cls, metadata={"table": cls})


def tables(cls):
    """An array of tables (``[[name]]``) of dataclass ``cls``."""
    return field(default_factory=list, metadata={"tables": cls})


# --------------------------------------------------------------------------------------------
# The schema
# --------------------------------------------------------------------------------------------

Vec3 = Tuple[float, float, float]


@dataclass
class CameraConfig:
    fov: float = key(60.0, _fov, "vertical field of view in degrees")
    near: float = key(0.01, _positive(_number))
    far: float = key(10.0, _positive(_number))


@dataclass
class ViewConfig:
    target: Optional[str] = key(None, _string, "PNG or JPEG target (relative to the config file)")
    eye: Optional[Vec3] = key(None, _numbers(3))
    lookat: Vec3 = key((0.0, 0.0, 0.0), _numbers(3))
    up: Optional[Vec3] = key(None, _numbers(3), "default [0, 1, 0]; an orbit view's default is the orbit's "
                             "own up, +y tilted into the image, which holds at elevation ±90 too")
    azimuth: Optional[float] = key(None, _number, "degrees around +y; 0 looks from +z")
    elevation: Optional[float] = key(None, _number)
    distance: Optional[float] = key(None, _positive(_number))

    def camera_position(self) -> Vec3:
        """The eye, or the point on the orbit around lookat that azimuth/elevation/distance name."""
        if self.eye is not None:
            return self.eye
        az, el = math.radians(self.azimuth), math.radians(self.elevation)
        offset = (math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az))
        return tuple(c + self.distance * o for c, o in zip(self.lookat, offset))

    def camera_up(self) -> Vec3:
        """The up given, else +y for an eye, or the orbit's up (as :meth:`Camera.orbit`'s)."""
        if self.up is not None:
            return self.up
        if self.eye is not None:
            return (0.0, 1.0, 0.0)
        az, el = math.radians(self.azimuth), math.radians(self.elevation)
        return (-math.sin(el) * math.sin(az), math.cos(el), -math.sin(el) * math.cos(az))


def _rolls_freely(eye: Vec3, lookat: Vec3, up: Vec3) -> bool:
    """Whether up is zero or parallel to the view, leaving the camera's roll undefined."""
    view = [c - e for e, c in zip(eye, lookat)]
    cross = (view[1] * up[2] - view[2] * up[1], view[2] * up[0] - view[0] * up[2], view[0] * up[1] - view[1] * up[0])
    return math.hypot(*cross) <= 1e-6 * math.hypot(*view) * math.hypot(*up)


@dataclass
class LightConfig:
    position: Vec3 = key((0.0, 0.0, 3.0), _numbers(3))
    intensity: Any = key(1.0, _intensity, "a number or [r, g, b]")


@dataclass
class InitConfig:
    mesh: str = key("sphere", _string, "a built-in shape (sphere, cube, teapot) or a mesh file")
    subdivisions: int = key(3, _subdivisions, f"icosphere subdivisions for the sphere, at most {MAX_SUBDIVISIONS}")
    scale: float = key(1.0, _positive(_number))
    euler: Vec3 = key((0.0, 0.0, 0.0), _numbers(3), "initial pose, radians, R = Rz·Ry·Rx")
    translation: Vec3 = key((0.0, 0.0, 0.0), _numbers(3))
    color: Vec3 = key((1.0, 1.0, 1.0), _unit_rgb, "initial vertex colour")
    normals: str = key("auto", _choice("auto", "radial"),
                       "auto: area-weighted normals of the current shape; radial: normalize(vertex), fixed")


@dataclass
class OptimizeConfig:
    params: Tuple[str, ...] = key(("vertices",), _subset(FIT_PARAMS))
    camera: Tuple[str, ...] = key(("eye",), _subset(CAMERA_PARTS), "camera parts fitted with params = camera")
    pose: Tuple[str, ...] = key(POSE_PARTS, _subset(POSE_PARTS), "pose parts fitted with params = pose")
    steps: int = key(1000, _positive(_integer))
    optimizer: str = key("sgd", _choice(*OPTIMIZERS))
    lr: float = key(4.0, _positive(_number))
    lr_final: Optional[float] = key(None, _positive(_number), "anneal the learning rate geometrically to this value")
    anneal_start: float = key(0.8, _fraction, "fraction of the steps after which σ and lr anneal")
    momentum: float = key(0.1, _fraction)
    clip_grad_norm: float = key(1.0, _non_negative(_number), "0 disables clipping")
    views_per_step: int = key(0, _non_negative(_integer), "0 = all views every step")
    texture_size: int = key(512, _texture_size, "with params = texture: the learned texture is size × size texels")
    texture_init: str = key("grey", _choice(*TEXTURE_INITS),
                            "with params = texture: start from uniform grey, or from the mesh's own texture")


@dataclass
class LossConfig:
    silhouette: float = key(1.0, _non_negative(_number), "MSE on alpha")
    iou: float = key(0.0, _non_negative(_number), "1 - soft IoU")
    rgb: float = key(0.0, _non_negative(_number), "MSE on RGB over covered pixels")
    edge: float = key(0.1, _non_negative(_number), "mean edge length")
    laplacian: float = key(0.1, _non_negative(_number), "uniform Laplacian")
    normal: float = key(0.0, _non_negative(_number), "normal consistency")
    flatten: float = key(0.0, _non_negative(_number), "SoftRas flatten loss")
    texture_tv: float = key(0.0, _non_negative(_number), "total variation of the fitted texture")


@dataclass
class SoftConfig:
    sigma: float = key(1e-4, _positive(_number))
    gamma: float = key(1e-4, _positive(_number))
    sigma_final: Optional[float] = key(None, _positive(_number), "anneal σ geometrically to this value")


@dataclass
class OutputConfig:
    dir: str = key("fit_out", _string)
    preview_every: int = key(100, _positive(_integer))
    frame_every: int = key(10, _positive(_integer))
    fps: float = key(20.0, _fps)


@dataclass
class SyntheticConfig:
    mesh: str = key("teapot", _string, "the ground truth: a built-in shape or a mesh file")
    euler: Vec3 = key((0.0, 0.0, 0.0), _numbers(3), "its true pose, radians")
    translation: Vec3 = key((0.0, 0.0, 0.0), _numbers(3))
    eye: Optional[Vec3] = key(None, _numbers(3), "the true camera for every view (else each view's own)")


@dataclass
class FitConfig:
    renderer: str = key("soft", _choice("soft", "barycentric"))
    image_size: Optional[Tuple[int, int]] = key(None, _image_size, "[height, width]; default: the first target's")
    seed: int = key(0, _non_negative(_integer))
    background: Any = key("auto", _background, "targets without alpha: background colour")
    threshold: float = key(0.1, _fraction, "targets without alpha: colour distance that counts as object")
    strict: bool = key(False, _boolean, "targets of another size are an error instead of resized")
    antialias: bool = key(True, _boolean, "barycentric renderer: analytic antialiasing, which gives silhouettes gradients")
    texture_filter: str = key("trilinear", _choice(*TEXTURE_FILTERS), "barycentric renderer: texture sampling")
    threads: int = key(0, _non_negative(_integer), "CPU threads; 0 = the cores other processes leave idle")
    camera: CameraConfig = table(CameraConfig)
    views: List[ViewConfig] = tables(ViewConfig)
    lights: List[LightConfig] = tables(LightConfig)
    init: InitConfig = table(InitConfig)
    optimize: OptimizeConfig = table(OptimizeConfig)
    loss: LossConfig = table(LossConfig)
    soft: SoftConfig = table(SoftConfig)
    output: OutputConfig = table(OutputConfig)
    synthetic: Optional[SyntheticConfig] = table(SyntheticConfig, optional=True)

    def as_dict(self) -> Dict[str, Any]:
        """Plain JSON-ready values (tuples as lists), for params.json."""
        return json_ready(dataclasses.asdict(self))


def json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------
# Where values come from
# --------------------------------------------------------------------------------------------

_ARRAY_HEADER = re.compile(r"^\[\[\s*([A-Za-z0-9_.-]+)\s*\]\]")
_TABLE_HEADER = re.compile(r"^\[\s*([A-Za-z0-9_.-]+)\s*\]")
_ASSIGNMENT = re.compile(r"^([A-Za-z0-9_-]+)\s*=")


def key_lines(text: str) -> Dict[str, int]:
    """Line numbers of keys and table headers in TOML text, by dotted path (``views.0.eye``).

    A line scan rather than a parser (tomllib keeps no positions); it covers the plain
    ``[table]``, ``[[array]]`` and ``key = value`` lines configs are made of.
    """
    lines: Dict[str, int] = {}
    current = ""
    counts: Dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if match := _ARRAY_HEADER.match(stripped):
            counts[match[1]] = counts.get(match[1], -1) + 1
            current = f"{match[1]}.{counts[match[1]]}"
            lines.setdefault(current, number)
        elif match := _TABLE_HEADER.match(stripped):
            current = match[1]
            lines.setdefault(current, number)
        elif match := _ASSIGNMENT.match(stripped):
            lines.setdefault(f"{current}.{match[1]}" if current else match[1], number)
    return lines


@dataclass
class Origins:
    """Maps dotted keys to where their value was given, for error messages."""

    path: Optional[Path] = None
    lines: Dict[str, int] = field(default_factory=dict)
    flags: Dict[str, str] = field(default_factory=dict)

    def where(self, dotted: str) -> str:
        parts = dotted.split(".")
        for end in range(len(parts), 0, -1):  # a flag that set the key or a table around it replaced the file's
            flag = self.flags.get(".".join(parts[:end]))
            if flag is not None:
                return flag
        if self.path is None:
            return "defaults"
        for end in range(len(parts), 0, -1):  # the key's own line, else its table's
            line = self.lines.get(".".join(parts[:end]))
            if line is not None:
                return f"{self.path}:{line}"
        return str(self.path)

    def error(self, dotted: str, reason: str) -> ConfigError:
        return ConfigError(f"{self.where(dotted)}: {dotted}: {reason}" if dotted else f"{self.where(dotted)}: {reason}")


# --------------------------------------------------------------------------------------------
# Building and validating
# --------------------------------------------------------------------------------------------


def _build(cls, data: Any, prefix: str, origins: Origins):
    """Validates one table (a dict from tomllib) into dataclass ``cls``."""
    if not isinstance(data, dict):
        raise origins.error(prefix, f"expected a table, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in data:
        if name not in fields:
            dotted = f"{prefix}.{name}" if prefix else name
            raise origins.error(dotted, f"unknown key (known: {', '.join(fields)})")
    values = {}
    for name, spec in fields.items():
        if name not in data:
            continue
        dotted = f"{prefix}.{name}" if prefix else name
        value = data[name]
        if "table" in spec.metadata:
            values[name] = _build(spec.metadata["table"], value, dotted, origins)
        elif "tables" in spec.metadata:
            if not isinstance(value, list):
                raise origins.error(dotted, f"expected an array of tables ([[{dotted}]]), got {value!r}")
            values[name] = [_build(spec.metadata["tables"], item, f"{dotted}.{index}", origins)
                            for index, item in enumerate(value)]
        else:
            try:
                values[name] = spec.metadata["check"](value)
            except ValueError as error:
                raise origins.error(dotted, str(error)) from None
    return cls(**values)


def _check_views(config: FitConfig, origins: Origins, base: Path) -> None:
    """Cross-key rules for views: a camera each, target files that exist and decode as images
    by suffix, and targets wherever there is no [synthetic] section."""
    if not config.views:
        raise ConfigError("no views to fit: give TARGET images on the command line, or [[views]] in a config")
    for index, view in enumerate(config.views):
        prefix = f"views.{index}"
        orbit = (view.azimuth, view.elevation, view.distance)
        if view.eye is not None and any(v is not None for v in orbit):
            raise origins.error(prefix, "give either eye/lookat/up or azimuth/elevation/distance, not both")
        if view.eye is None and any(v is None for v in orbit):
            raise origins.error(prefix, "needs a camera: eye = [x, y, z], or azimuth, elevation and distance")
        if view.eye is not None and math.dist(view.eye, view.lookat) < 1e-9:
            raise origins.error(f"{prefix}.eye", "eye and lookat must differ")
        if _rolls_freely(view.camera_position(), view.lookat, view.camera_up()):
            where = "lookat - eye" if view.eye is not None else "the view from this azimuth and elevation"
            raise origins.error(f"{prefix}.up", f"must be non-zero and not parallel to {where}")
        true_eye = config.synthetic.eye if config.synthetic is not None else None
        if true_eye is not None and _rolls_freely(true_eye, view.lookat, view.camera_up()):
            raise origins.error("synthetic.eye", f"looks along {prefix}.up, which leaves the camera's roll undefined")
        if view.target is None:
            if config.synthetic is None:
                raise origins.error(prefix, "has no target image (add target = \"file.png\", or a [synthetic] section)")
            continue
        path = Path(view.target)
        if not path.is_absolute() and f"{prefix}.target" not in origins.flags:
            path = base / path
        if not path.is_file():
            raise origins.error(f"{prefix}.target", f"target file not found: {path}")
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise origins.error(f"{prefix}.target", f"target must be a PNG or JPEG, got {path.name}")
        view.target = str(path)


def _check(config: FitConfig, origins: Origins, base: Path) -> FitConfig:
    if config.camera.near >= config.camera.far:
        raise origins.error("camera.near", f"must be less than camera.far ({config.camera.far:g})")
    if config.soft.sigma_final is not None and config.renderer != "soft":
        raise origins.error("soft.sigma_final", "only applies to the soft renderer")
    # In a file these may serve a preset run with either renderer; a flag asks for this run.
    for dotted in ("antialias", "texture_filter"):
        if dotted in origins.flags and config.renderer != "barycentric":
            raise origins.error(dotted, "only applies to the barycentric renderer")
    if not any(getattr(config.loss, name) > 0 for name in LOSS_TERMS):
        raise origins.error("loss", "every weight is 0: enable at least one loss term")
    _check_views(config, origins, base)
    return config


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


@dataclass
class Override:
    """One command-line value: the dotted key it sets, the value, and the flag (for errors)."""

    key: str
    value: Any
    flag: str


def _set_dotted(data: Dict[str, Any], dotted: str, value: Any, flag: str, origins: Origins) -> None:
    """Sets ``data[dotted]``; every table it has to create is the flag's, in ``origins``."""
    parts = dotted.split(".")
    node: Any = data
    for position, part in enumerate(parts[:-1]):
        following = parts[position + 1]
        if isinstance(node, list):
            if not part.isdigit() or int(part) > len(node):
                raise ConfigError(f"{flag}: {dotted}: there is no [[...]] entry {part} (there are {len(node)})")
            if int(part) == len(node):
                node.append({})
                origins.flags.setdefault(".".join(parts[:position + 1]), flag)
            node = node[int(part)]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"{flag}: {dotted}: {'.'.join(parts[:position])} is not a table")
        if part not in node:
            node[part] = [] if following.isdigit() else {}
            origins.flags.setdefault(".".join(parts[:position + 1]), flag)
        node = node[part]
    if not isinstance(node, dict):
        raise ConfigError(f"{flag}: {dotted}: {'.'.join(parts[:-1])} is not a table")
    node[parts[-1]] = value


def parse_value(text: str) -> Any:
    """A --set value: TOML syntax (``3``, ``[0, 1, 0]``, ``"x"``, ``true``), else a bare string."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


# The view `diffrender fit target.png` uses without a config: looking at the origin from +z.
DEFAULT_VIEW = {"eye": [0.0, 0.0, 3.0], "lookat": [0.0, 0.0, 0.0], "up": [0.0, 1.0, 0.0]}


def _apply_targets(data: Dict[str, Any], targets: List[str], origins: Origins, from_file: bool) -> None:
    """Command-line targets fill the views in order, replacing their target keys."""
    views = data.setdefault("views", [])
    if not isinstance(views, list):
        return  # _build reports the wrong type
    if not views and not from_file and len(targets) == 1:
        views.append(dict(DEFAULT_VIEW))
    if len(targets) > len(views):
        raise ConfigError(
            f"{counted(len(targets), 'target')} but {len(views)} [[views]]: each target needs a camera; give a config "
            "with one [[views]] per target (eye = [x, y, z] or azimuth/elevation/distance), "
            "see configs/four_views.toml")
    for index, target in enumerate(targets):
        if not isinstance(views[index], dict):
            return
        views[index]["target"] = target
        origins.flags[f"views.{index}.target"] = f"TARGET {target}"


def load_config(path: Optional[Path], overrides: List[Override] = (), targets: List[str] = ()) -> FitConfig:
    """Reads and validates a fit configuration.

    Args:
        path: a TOML file, or None for the defaults.
        overrides: command-line values, applied over the file's.
        targets: command-line target images; they fill the views in order. Without a config, a
            single target gets a front view (:data:`DEFAULT_VIEW`).
    Raises:
        ConfigError: unreadable TOML, unknown keys, wrong types or values, missing targets.
    """
    data: Dict[str, Any] = {}
    origins = Origins()
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            text = path.read_text(encoding="utf-8")
            data = tomllib.loads(text)
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a text file") from None
        except tomllib.TOMLDecodeError as error:
            line = re.search(r"line (\d+)", str(error))
            raise ConfigError(f"{path}:{line[1] if line else '?'}: invalid TOML: {error}") from None
        origins = Origins(path=path, lines=key_lines(text))
    for override in overrides:
        _set_dotted(data, override.key, override.value, override.flag, origins)
        origins.flags[override.key] = override.flag
    if targets:
        _apply_targets(data, list(targets), origins, from_file=path is not None)
    base = path.parent if path is not None else Path(".")
    return _check(_build(FitConfig, data, "", origins), origins, base)
