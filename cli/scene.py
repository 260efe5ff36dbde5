"""Options shared by `render`, `animate` and `fit`: parsing vectors, sizes and lights, and turning
them into the library's camera, lights and material."""
from __future__ import annotations

import dataclasses
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Annotated, List, Optional, Sequence, Tuple

import torch
import typer

from diffrender.camera import Camera
from diffrender.mesh import Mesh, load_mesh
from diffrender.shading import Material, PointLights

from .errors import bad_argument

MAX_SIDE = 16384
# Rough peak bytes per pixel of a forward render (rasterizer outputs, interpolated attributes,
# shading temporaries); used to refuse sizes that cannot fit in memory.
BYTES_PER_PIXEL = 600


def parse_floats(text: str, count: int, option: str) -> List[float]:
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise bad_argument(f"{option} must be {count} comma-separated numbers, got '{text}'") from None
    if len(values) != count:
        raise bad_argument(f"{option} must be {count} comma-separated numbers, got '{text}'")
    if not all(math.isfinite(v) for v in values):
        raise bad_argument(f"{option} must be finite numbers, got '{text}'")
    return values


def parse_color(text: str, option: str) -> List[float]:
    """'r,g,b' or a single grey value, each in [0,1]."""
    values = parse_floats(text, 1, option) * 3 if "," not in str(text) else parse_floats(text, 3, option)
    if any(v < 0 or v > 1 for v in values):
        raise bad_argument(f"{option} values must lie in [0,1], got '{text}'")
    return values


def parse_light(text: str) -> Tuple[List[float], List[float]]:
    """'X,Y,Z' or 'X,Y,Z:R,G,B' (intensity, default white)."""
    position, _, intensity = str(text).partition(":")
    xyz = parse_floats(position, 3, f"--light '{text}'")
    rgb = parse_floats(intensity, 3, f"--light '{text}' intensity") if intensity else [1.0, 1.0, 1.0]
    if any(v < 0 for v in rgb):
        raise bad_argument(f"--light intensity must be non-negative, got '{text}'")
    return xyz, rgb


def check_memory(height: int, width: int, batch: int = 1, option: str = "--size") -> None:
    needed = height * width * batch * BYTES_PER_PIXEL
    try:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        available = 16 << 30
    if needed > available // 2:
        raise bad_argument(f"image size {width}x{height} needs about {needed / 2**30:.1f} GiB, more than "
                           f"half of this machine's {available / 2**30:.0f} GiB; choose a smaller {option}")


def parse_size(text: str, batch: int = 1, option: str = "--size") -> Tuple[int, int]:
    """'WxH' or 'N' (square) as (height, width), refusing non-positive and absurd sizes."""
    parts = str(text).lower().split("x")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        raise bad_argument(f"{option} must look like 512x512 or 512, got '{text}'") from None
    if len(numbers) == 1:
        numbers *= 2
    if len(numbers) != 2:
        raise bad_argument(f"{option} must look like 512x512 or 512, got '{text}'")
    width, height = numbers
    if width <= 0 or height <= 0:
        raise bad_argument(f"{option} must be positive, got '{text}'")
    if width > MAX_SIDE or height > MAX_SIDE:
        raise bad_argument(f"{option} '{text}' exceeds the {MAX_SIDE}-pixel limit per side")
    check_memory(height, width, batch, option)
    return height, width


def resolve_device(name: str) -> torch.device:
    from diffrender._ext import cuda_unavailable_reason

    unavailable = cuda_unavailable_reason()
    if name == "auto":
        name = "cpu" if unavailable else "cuda"
    if name == "cuda" and unavailable:
        raise bad_argument(f"--device cuda: {unavailable}")
    if name not in ("cpu", "cuda"):
        raise bad_argument(f"--device must be auto, cpu or cuda, got '{name}'")
    return torch.device(name)


# Option declarations shared by the commands that take them (`name: SizeOption = "512x512"`), so
# that a flag is spelt, parsed and documented the same way everywhere.
SizeOption = Annotated[str, typer.Option(help="Image size WxH (or N for square).")]
RendererOption = Annotated[str, typer.Option(help="barycentric (tf_mesh_renderer, hard z-buffer) or soft (SoftRas).")]
FovOption = Annotated[float, typer.Option(help="Vertical field of view in degrees.")]
SigmaOption = Annotated[float, typer.Option(help="Soft renderer: coverage sharpness σ.")]
GammaOption = Annotated[float, typer.Option(help="Soft renderer: depth softmax temperature γ.")]
DeviceOption = Annotated[str, typer.Option(help="auto, cpu or cuda.")]
LightOption = Annotated[List[str], typer.Option(help="Point light X,Y,Z[:R,G,B]; repeatable. Default: a white light at the camera.")]
AmbientOption = Annotated[str, typer.Option(help="Ambient colour: grey value or R,G,B.")]
ColorOption = Annotated[Optional[str], typer.Option(help="Diffuse colour R,G,B (replaces a texture); default: the mesh's own texture or colours, or light grey.")]
NoTextureOption = Annotated[bool, typer.Option("--no-texture", help="Draw a textured mesh in its material colour instead.")]
TextureFilterOption = Annotated[Optional[str], typer.Option(help="Barycentric renderer: texture sampling, bilinear or trilinear (mip-mapped; the default).")]
BackgroundOption = Annotated[Optional[str], typer.Option(help="Background R,G,B behind the render (alpha stays coverage).")]
SpecularOption = Annotated[str, typer.Option(help="Specular colour: grey value or R,G,B (0 = none).")]
ShininessOption = Annotated[float, typer.Option(help="Phong exponent.")]


@dataclass
class Look:
    """Lighting and colour options shared by render and animate."""

    lights: Sequence[str] = field(default_factory=list)
    ambient: str = "0.1"
    color: Optional[str] = None
    background: Optional[str] = None
    specular: str = "0"
    shininess: float = 32.0
    texture: bool = True

    def material(self, batch: int) -> Material:
        ambient = torch.tensor(parse_color(self.ambient, "--ambient")).expand(batch, 3)
        specular = torch.tensor(parse_color(self.specular, "--specular"))
        if not 0 < self.shininess < math.inf:
            raise bad_argument(f"--shininess must be a positive finite number, got {self.shininess:g}")
        return Material(ambient=ambient, specular=specular.expand(batch, 3) if specular.any() else None,
                        shininess=self.shininess)

    def point_lights(self, cameras: Camera) -> PointLights:
        """The --light options, or one white light at each camera."""
        batch = cameras.batch_size
        if not self.lights:
            return PointLights(cameras.eye[:, None, :], torch.ones(batch, 1, 3))
        parsed = [parse_light(text) for text in self.lights]
        positions = torch.tensor([p for p, _ in parsed]).expand(batch, -1, 3)
        intensities = torch.tensor([i for _, i in parsed]).expand(batch, -1, 3)
        return PointLights(positions, intensities)

    def vertex_colors(self, mesh: Mesh) -> torch.Tensor:
        """[V,3]: --color, else the mesh's own colours, else a light grey."""
        if self.color is not None:
            return torch.tensor(parse_color(self.color, "--color")).expand(mesh.num_vertices, 3)
        if mesh.colors is not None:
            return mesh.colors
        return torch.full((mesh.num_vertices, 3), 0.8)

    def surface(self, mesh: Mesh) -> Mesh:
        """The mesh as drawn: without its texture under --no-texture, or --color (which replaces it)."""
        if mesh.texture is None or (self.texture and self.color is None):
            return mesh
        return dataclasses.replace(mesh, uvs=None, texture=None)

    def composite(self, rgba: torch.Tensor) -> torch.Tensor:
        """Puts --background behind the render's RGB; alpha stays the coverage."""
        if self.background is None:
            return rgba
        background = torch.tensor(parse_color(self.background, "--background"), dtype=rgba.dtype)
        alpha = rgba[..., 3:]
        return torch.cat([rgba[..., :3] + (1 - alpha) * background, alpha], dim=-1)


def load_mesh_reporting_warnings(source: str) -> Mesh:
    """:func:`load_mesh`, printing each warning (a texture that failed to load, say) as one
    ``warning: ...`` line on stderr instead of Python's two-line form with a source line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mesh = load_mesh(source)
    for warning in caught:
        typer.echo(f"warning: {warning.message}", err=True)
    return mesh


def check_fov(fov: float) -> None:
    if not 0 < fov < 180:
        raise bad_argument(f"--fov must lie in (0, 180) degrees, got {fov:g}")


def check_orbit(azimuth: float, elevation: float, distance: Optional[float]) -> None:
    """Refuses --azimuth/--elevation/--distance that would frame nothing (a non-finite angle or
    distance) or that name no orbit of the turntable kind (an elevation past a pole)."""
    if not math.isfinite(azimuth):
        raise bad_argument(f"--azimuth must be finite, got {azimuth:g}")
    if not -90.0 <= elevation <= 90.0:
        raise bad_argument(f"--elevation must lie in [-90, 90] degrees, got {elevation:g}")
    if distance is not None and not 0 < distance < math.inf:
        raise bad_argument(f"--distance must be a positive finite number, got {distance:g}")


def camera_for(mesh: Mesh, height: int, width: int, fov: float, azimuth: float, elevation: float,
               distance: Optional[float], eye: Optional[str], lookat: str, up: str) -> Camera:
    """--eye/--lookat/--up places the camera exactly (API defaults for near/far); otherwise the
    mesh is framed from --azimuth/--elevation/--distance."""
    from diffrender.camera import frame_vertices

    check_fov(fov)
    if eye is not None:
        eye_t = torch.tensor([parse_floats(eye, 3, "--eye")])
        lookat_t = torch.tensor([parse_floats(lookat, 3, "--lookat")])
        up_t = torch.tensor([parse_floats(up, 3, "--up")])
        if torch.allclose(eye_t, lookat_t):
            raise bad_argument("--eye and --lookat must differ")
        view = torch.nn.functional.normalize(lookat_t - eye_t, dim=-1)
        if torch.linalg.cross(view, up_t).norm() <= 1e-6 * up_t.norm():
            raise bad_argument(f"--up must be non-zero and not parallel to --lookat minus --eye, got '{up}'")
        return Camera(eye_t, lookat_t, up_t, fov_y=fov)
    check_orbit(azimuth, elevation, distance)
    return frame_vertices(mesh.vertices, azimuth, elevation, fov_y=fov, aspect_ratio=width / height,
                          distance=distance)
