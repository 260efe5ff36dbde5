"""The `diffrender` command: render, fit and animate triangle meshes with differentiable renderers."""
from __future__ import annotations

from typing import Optional

import typer

import diffrender

from .animate import HELP as ANIMATE_HELP, animate
from .fit import fit
from .render import render

app = typer.Typer(
    name="diffrender",
    help="Differentiable triangle-mesh rendering (tf_mesh_renderer barycentric and SoftRas soft "
         "renderers) and fitting meshes to images.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"diffrender {diffrender.__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True,
                                                 help="Print the version and exit.")):
    """Differentiable triangle-mesh rendering and fitting meshes to images."""


app.command(help="Render a mesh (a file trimesh reads, or sphere/cube/teapot) to an RGBA PNG.")(render)
app.command(help="Fit a mesh's shape, pose, camera, colours or texture to target images (PNG/JPEG or synthetic).")(fit)
app.command(help=ANIMATE_HELP)(animate)


def main() -> None:
    app()
