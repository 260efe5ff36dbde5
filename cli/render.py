"""`diffrender render MESH -o out.png`: one RGBA image of a mesh file or built-in shape."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import torch
import typer

from diffrender.images import save_png
from diffrender.mesh import load_mesh
from diffrender.renderers import make_renderer

from .errors import bad_argument, one_line_errors
from .scene import Look, camera_for, parse_size, resolve_device

RENDERER_HELP = "barycentric (tf_mesh_renderer, hard z-buffer) or soft (SoftRas)."


def build_renderer(name: str, sigma: float, gamma: float):
    if name not in ("barycentric", "soft"):
        raise bad_argument(f"--renderer must be barycentric or soft, got '{name}'")
    if sigma <= 0 or gamma <= 0:
        raise bad_argument("--sigma and --gamma must be positive")
    return make_renderer(name) if name == "barycentric" else make_renderer(name, sigma=sigma, gamma=gamma)


@one_line_errors
def render(
    mesh: str = typer.Argument(..., help="A mesh file trimesh reads (OBJ, PLY, STL, OFF, GLB) or a built-in shape: sphere, cube, teapot."),
    output: Path = typer.Option(Path("render.png"), "-o", "--output", help="Output PNG (8-bit RGBA, alpha = coverage)."),
    size: str = typer.Option("512x512", help="Image size WxH (or N for square)."),
    renderer: str = typer.Option("barycentric", help=RENDERER_HELP),
    azimuth: float = typer.Option(30.0, help="Camera azimuth in degrees around +y (0 looks from +z)."),
    elevation: float = typer.Option(20.0, help="Camera elevation in degrees."),
    distance: Optional[float] = typer.Option(None, help="Camera distance; default frames the mesh to ~80% of the view."),
    eye: Optional[str] = typer.Option(None, help="Camera position X,Y,Z; renders the mesh in its own coordinates, no framing."),
    lookat: str = typer.Option("0,0,0", help="With --eye: the point looked at."),
    up: str = typer.Option("0,1,0", help="With --eye: the up direction."),
    fov: float = typer.Option(40.0, help="Vertical field of view in degrees."),
    light: List[str] = typer.Option([], help="Point light X,Y,Z[:R,G,B]; repeatable. Default: a white light at the camera."),
    ambient: str = typer.Option("0.1", help="Ambient colour: grey value or R,G,B."),
    color: Optional[str] = typer.Option(None, help="Diffuse colour R,G,B; default: the mesh's own colours or light grey."),
    background: Optional[str] = typer.Option(None, help="Background R,G,B behind the render (alpha stays coverage)."),
    specular: str = typer.Option("0", help="Specular colour: grey value or R,G,B (0 = none)."),
    shininess: float = typer.Option(32.0, help="Phong exponent."),
    sigma: float = typer.Option(1e-4, help="Soft renderer: coverage sharpness σ."),
    gamma: float = typer.Option(1e-4, help="Soft renderer: depth softmax temperature γ."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
):
    """Render a mesh to an RGBA PNG."""
    height, width = parse_size(size)
    chosen = build_renderer(renderer, sigma, gamma)
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
