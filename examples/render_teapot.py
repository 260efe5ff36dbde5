"""Render the built-in teapot with the Python API, with both renderers, side by side.

    .venv/bin/python examples/render_teapot.py [out.png]
"""
import argparse

import torch

from diffrender import camera, shapes
from diffrender.images import save_png
from diffrender.renderers import make_renderer
from diffrender.shading import Material, PointLights

parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
parser.add_argument("output", nargs="?", default="teapot_renderers.png", help="the PNG to write")
output = parser.parse_args().output

vertices, faces = shapes.teapot()
cameras = camera.frame_vertices(vertices, azimuth_deg=[30.0], elevation_deg=20.0)
lights = PointLights(positions=cameras.eye[:, None, :] + torch.tensor([1.0, 2.0, 0.0]),
                     intensities=torch.tensor([[[1.0, 0.95, 0.9]]]))
material = Material(ambient=torch.full((1, 3), 0.1), specular=torch.full((1, 3), 0.4), shininess=24.0)
colors = torch.tensor([0.8, 0.5, 0.3]).expand(1, vertices.shape[0], 3)

images = []
for renderer in (make_renderer("barycentric"), make_renderer("soft", sigma=1e-5, gamma=1e-4)):
    with torch.no_grad():
        images.append(renderer(vertices[None], faces, colors, cameras, lights, material, (256, 256))[0])

save_png(output, torch.cat(images, dim=1))
print(f"wrote {output}: barycentric (left) and soft (right)")
