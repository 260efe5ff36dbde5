"""tf_mesh_renderer's testThatCubeRotates with the barycentric renderer: recover a rotation from
a rendered target by gradient descent on the image.

    .venv/bin/python examples/cube_rotation.py
"""
import argparse

import torch

from diffrender import barycentric, camera, shapes

argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split())).parse_args()

vertices, faces = shapes.cube()
normals = vertices / vertices.norm(dim=-1, keepdim=True)  # tf's smooth cube normals
eye = torch.tensor([[0.0, 0.0, 6.0]])


def render(angles):
    rotation = camera.euler_matrices(angles)[:, :3, :3]
    return barycentric.render(vertices @ rotation.transpose(1, 2), faces, normals @ rotation.transpose(1, 2),
                              torch.ones(1, 8, 3), eye, torch.zeros(1, 3), torch.tensor([[0.0, 1.0, 0.0]]),
                              eye[:, None], torch.ones(1, 1, 3), 160, 120)


target = render(torch.tensor([[-20.0, 0.0, 60.0]]))
angles = torch.zeros(1, 3, requires_grad=True)
optimizer = torch.optim.SGD([angles], lr=0.7, momentum=0.1)
for step in range(40):
    optimizer.zero_grad()
    loss = (render(angles) - target).abs().mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_([angles], 1.0)
    optimizer.step()
    if step % 10 == 0:
        print(f"step {step:2d}  loss {loss.item():.4f}")
error = (render(angles.detach()) - target).abs().amax(-1)
print(f"pixels off by more than 0.04: {(error > 0.04).float().mean().item():.2%}")
