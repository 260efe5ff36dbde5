"""`diffrender render MESH -o out.png`: one RGBA image of a mesh file or built-in shape."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import typer

from diffrender.images import save_png
from diffrender.mesh import load_mesh
from diffrender.renderers import make_renderer

from .errors import bad_argument, one_line_errors
from .scene import (AmbientOption, BackgroundOption, ColorOption, DeviceOption, FovOption, GammaOption, LightOption,
                    Look, RendererOption, ShininessOption, SigmaOption, SizeOption, SpecularOption, camera_for,
                    parse_size, resolve_device)


def build_renderer(name: str, sigma: float, gamma: float, antialias: bool = False):
    if name not in ("barycentric", "soft"):
        raise bad_argument(f"--renderer must be barycentric or soft, got '{name}'")
    if sigma <= 0 or gamma <= 0:
        raise bad_argument("--sigma and --gamma must be positive")
    if antialias and name != "barycentric":
        raise bad_argument("--antialias applies to the barycentric renderer (soft edges are already smooth)")
    if name == "barycentric":
        return make_renderer(name, antialias=antialias)
    return make_renderer(name, sigma=sigma, gamma=gamma)


@one_line_errors
def render(
    mesh: str = typer.Argument(..., help="A mesh file trimesh reads (OBJ, PLY, STL, OFF, GLB) or a built-in shape: sphere, cube, teapot."),
    output: Path = typer.Option(Path("render.png"), "-o", "--output", help="Output PNG (8-bit RGBA, alpha = coverage)."),
    size: SizeOption = "512x512",
    renderer: RendererOption = "barycentric",
    azimuth: float = typer.Option(30.0, help="Camera azimuth in degrees around +y (0 looks from +z)."),
    elevation: float = typer.Option(20.0, help="Camera elevation in degrees."),
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
):
    """Render a mesh to an RGBA PNG."""
    height, width = parse_size(size)
    chosen = build_renderer(renderer, sigma, gamma, antialias)
    target_device = resolve_device(device)
    look = Look(lights=light, ambient=ambient, color=color, background=background, specular=specular,
                shininess=shininess)
    mesh_data = load_mesh(mesh)
    cameras = camera_for(mesh_data, height, width, fov, azimuth, elevation, distance, eye, lookat, up)
    with torch.no_grad():
        rgba = chosen(mesh_data.vertices[None].to(target_device), mesh_data.faces.to(target_device),
                      look.vertex_colors(mesh_data)[None].to(target_device), cameras.to(target_device),
                      look.point_lights(cameras).to(target_device), look.material(1).to(target_device),
                      (height, width),
                      normals=None if mesh_data.normals is None else mesh_data.normals[None].to(target_device))
    save_png(output, look.composite(rgba[0].cpu()))
    typer.echo(f"wrote {output} ({width}x{height}, {mesh_data.num_faces} triangles, {chosen.name})")
