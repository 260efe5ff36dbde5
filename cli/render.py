"""`diffrender render MESH -o out.png`: one RGBA image of a mesh file or built-in shape."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import torch
import typer

from diffrender.images import save_png
from diffrender.renderers import make_renderer
from diffrender.texture import FILTERS

from .errors import bad_argument, one_line_errors
from .scene import (AmbientOption, BackgroundOption, ColorOption, DeviceOption, FovOption, GammaOption, LightOption,
                    Look, NoTextureOption, RendererOption, ShininessOption, SigmaOption, SizeOption, SpecularOption,
                    TextureFilterOption, camera_for, load_mesh_reporting_warnings, parse_size, resolve_device)
from .wording import counted


def build_renderer(name: str, sigma: float, gamma: float, antialias: bool = False,
                   texture_filter: Optional[str] = None):
    """The renderer the options name; ``texture_filter`` None keeps the barycentric default."""
    if name not in ("barycentric", "soft"):
        raise bad_argument(f"--renderer must be barycentric or soft, got '{name}'")
    for option, value in (("--sigma", sigma), ("--gamma", gamma)):
        if not 0 < value < math.inf:
            raise bad_argument(f"{option} must be a positive finite number, got {value:g}")
    if antialias and name != "barycentric":
        raise bad_argument("--antialias applies to the barycentric renderer (soft edges are already smooth)")
    if texture_filter is not None and texture_filter not in FILTERS:
        raise bad_argument(f"--texture-filter must be {' or '.join(FILTERS)}, got '{texture_filter}'")
    if texture_filter is not None and name != "barycentric":
        raise bad_argument("--texture-filter applies to the barycentric renderer")
    if name == "barycentric":
        filtering = {} if texture_filter is None else {"texture_filter": texture_filter}
        return make_renderer(name, antialias=antialias, **filtering)
    return make_renderer(name, sigma=sigma, gamma=gamma)


@one_line_errors
def render(
    mesh: str = typer.Argument(..., help="A mesh file trimesh reads (OBJ, PLY, STL, OFF, GLB) or a built-in shape: sphere, cube, teapot."),
    output: Path = typer.Option(Path("render.png"), "-o", "--output", help="Output PNG (8-bit RGBA, alpha = coverage)."),
    size: SizeOption = "512x512",
    renderer: RendererOption = "barycentric",
    azimuth: float = typer.Option(30.0, help="Camera azimuth in degrees around +y (0 looks from +z)."),
    elevation: float = typer.Option(20.0, help="Camera elevation in degrees, in [-90, 90]; 90 looks straight down, as the orbit seen from --azimuth arrives there."),
    distance: Optional[float] = typer.Option(None, help="Camera distance; default frames the mesh to ~80% of the view."),
    eye: Optional[str] = typer.Option(None, help="Camera position X,Y,Z; renders the mesh in its own coordinates, no framing."),
    lookat: str = typer.Option("0,0,0", help="With --eye: the point looked at."),
    up: str = typer.Option("0,1,0", help="With --eye: the up direction."),
    fov: FovOption = 40.0,
    light: LightOption = [],
    ambient: AmbientOption = "0.1",
    color: ColorOption = None,
    background: BackgroundOption = None,
    specular: SpecularOption = "0",
    shininess: ShininessOption = 32.0,
    sigma: SigmaOption = 1e-4,
    gamma: GammaOption = 1e-4,
    device: DeviceOption = "auto",
    antialias: bool = typer.Option(False, "--antialias", help="Barycentric renderer: analytic antialiasing of silhouette edges."),
    no_texture: NoTextureOption = False,
    texture_filter: TextureFilterOption = None,
):
    """Render a mesh to an RGBA PNG."""
    if output.suffix.lower() != ".png":
        raise bad_argument(f"--output must name a .png file (render writes 8-bit RGBA PNG), got '{output}'")
    height, width = parse_size(size)
    chosen = build_renderer(renderer, sigma, gamma, antialias, texture_filter)
    target_device = resolve_device(device)
    look = Look(lights=light, ambient=ambient, color=color, background=background, specular=specular,
                shininess=shininess, texture=not no_texture)
    mesh_data = look.surface(load_mesh_reporting_warnings(mesh))
    cameras = camera_for(mesh_data, height, width, fov, azimuth, elevation, distance, eye, lookat, up)
    batched = (lambda t: None if t is None else t[None].to(target_device))
    with torch.no_grad():
        rgba = chosen(batched(mesh_data.vertices), mesh_data.faces.to(target_device),
                      batched(look.vertex_colors(mesh_data)), cameras.to(target_device),
                      look.point_lights(cameras).to(target_device), look.material(1).to(target_device),
                      (height, width), normals=batched(mesh_data.normals), uvs=batched(mesh_data.uvs),
                      texture=batched(mesh_data.texture))
    save_png(output, look.composite(rgba[0].cpu()))
    textured = ", textured" if mesh_data.texture is not None else ""
    typer.echo(f"wrote {output} ({width}x{height}, {counted(mesh_data.num_faces, 'triangle')}{textured}, {chosen.name})")
