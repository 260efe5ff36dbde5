"""Learn a texture from images: a UV sphere with a checker texture is rendered from six views,
and the fit engine recovers the texture from uniform grey.

Writes OUT/sphere.obj (+ .mtl and _texture.png, the ground truth) and the fit folder OUT/fit
(fit.obj + fit.mtl + fit_texture.png, previews, progress.mp4, losses.csv, states.pt, which
`diffrender animate OUT/fit -o replay.mp4` replays), then prints how close the learned texture is.

    .venv/bin/python examples/texture_fit.py [OUT] [STEPS]
"""
import argparse
import dataclasses
import math
from pathlib import Path

import torch

from diffrender.camera import Camera
from diffrender.fit import FitProblem, FitSettings, LossWeights, Pose, Template, Views, render_targets, run_fit
from diffrender.fit_outputs import FitRecorder
from diffrender.mesh import save_textured_obj
from diffrender.shading import Material, PointLights

TEXTURE_SIZE = 128
IMAGE_SIZE = (96, 96)


def uv_sphere(rows: int = 24, columns: int = 48):
    """A latitude-longitude unit sphere whose seam column and poles are repeated per UV.

    Returns:
        vertices float32 [V,3], faces int64 [F,3] (counter-clockwise seen from outside) and uvs
        float32 [V,2]: u = longitude / 2π, v = 1 at the north pole and 0 at the south pole.
    """
    theta = torch.linspace(0.0, math.pi, rows + 1)[:, None].expand(rows + 1, columns + 1)
    phi = torch.linspace(0.0, 2.0 * math.pi, columns + 1)[None, :].expand(rows + 1, columns + 1)
    vertices = torch.stack([theta.sin() * phi.sin(), theta.cos(), theta.sin() * phi.cos()], dim=-1).reshape(-1, 3)
    uvs = torch.stack([phi / (2.0 * math.pi), 1.0 - theta / math.pi], dim=-1).reshape(-1, 2)
    index = torch.arange((rows + 1) * (columns + 1)).reshape(rows + 1, columns + 1)
    top_left, top_right = index[:-1, :-1], index[:-1, 1:]
    bottom_left, bottom_right = index[1:, :-1], index[1:, 1:]
    # The first row's upper triangles and the last row's lower ones would have two corners on a pole.
    upper = torch.stack([top_left, bottom_left, bottom_right], dim=-1)[:-1]
    lower = torch.stack([top_left, bottom_right, top_right], dim=-1)[1:]
    return vertices, torch.cat([upper.reshape(-1, 3), lower.reshape(-1, 3)]), uvs


def checker(size: int, checks=(8, 4)) -> torch.Tensor:
    """float32 [size,size,3]: orange and teal squares, ``checks`` across u and down v (square
    on the sphere, whose longitude spans twice its latitude)."""
    column = (torch.arange(size) * checks[0] // size)[None, :]
    row = (torch.arange(size) * checks[1] // size)[:, None]
    odd = ((row + column) % 2).bool()[..., None]
    return torch.where(odd, torch.tensor([0.95, 0.55, 0.1]), torch.tensor([0.1, 0.55, 0.65]))


def orbit_cameras(count: int, distance: float = 3.2) -> Camera:
    """``count`` cameras around the sphere, alternately 30° above and below the equator."""
    azimuth = torch.arange(count) * (2.0 * math.pi / count)
    elevation = torch.tensor([math.radians(30.0), math.radians(-30.0)]).repeat((count + 1) // 2)[:count]
    eye = distance * torch.stack([elevation.cos() * azimuth.sin(), elevation.sin(), elevation.cos() * azimuth.cos()],
                                 dim=-1)
    return Camera(eye, torch.zeros(count, 3), torch.tensor([[0.0, 1.0, 0.0]]).expand(count, 3), fov_y=40.0)


def main(out: Path, steps: int) -> None:
    vertices, faces, uvs = uv_sphere()
    truth_texture = checker(TEXTURE_SIZE)
    out.mkdir(parents=True, exist_ok=True)
    save_textured_obj(out / "sphere.obj", vertices, faces, uvs, truth_texture)

    camera = orbit_cameras(6)
    lights = PointLights(camera.eye[:, None].clone(), torch.ones(6, 1, 3))
    material = Material(ambient=torch.full((6, 3), 0.2))
    settings = FitSettings(params=("texture",), steps=steps, optimizer="adam", lr=0.05, renderer="barycentric",
                           weights=LossWeights(silhouette=0.0, rgb=1.0, edge=0.0, laplacian=0.0, texture_tv=1e-3),
                           texture_size=TEXTURE_SIZE, preview_every=50)
    white = torch.ones(len(vertices), 3)
    # The sphere's normals are its positions; the seam's repeated vertices keep them smooth.
    truth = Template(vertices, faces, white, normals=vertices, uvs=uvs, texture=truth_texture)
    no_pose = Pose.from_euler((0.0, 0.0, 0.0))
    targets = render_targets(settings, truth, no_pose, camera, lights, material, IMAGE_SIZE)
    template = dataclasses.replace(truth, texture=None)
    views = Views(camera, targets, [f"synthetic:{view}" for view in range(6)])
    problem = FitProblem(template, no_pose, views, lights, material, IMAGE_SIZE, settings)

    folder = out / "fit"
    (folder / "previews").mkdir(parents=True, exist_ok=True)
    with FitRecorder(folder, problem) as recorder:
        result = run_fit(problem, recorder)
    recorder.finish(result, dataclasses.asdict(settings))

    # The views see the sphere between about 60° south and north; nearer the poles the texels
    # are seen at grazing angles or not at all.
    band = slice(TEXTURE_SIZE // 6, TEXTURE_SIZE - TEXTURE_SIZE // 6)
    error = (result.state.texture.detach() - truth_texture)[band].square().mean()
    print(f"wrote {out / 'sphere.obj'} and {folder}: {result.steps_completed} steps in {result.seconds:.1f}s")
    print(f"texture PSNR between latitudes ±60°: {10 * math.log10(1.0 / float(error)):.1f} dB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("out", nargs="?", type=Path, default=Path("texture_fit"), help="the output folder")
    parser.add_argument("steps", nargs="?", type=int, default=200, help="optimiser steps")
    arguments = parser.parse_args()
    main(arguments.out, arguments.steps)
