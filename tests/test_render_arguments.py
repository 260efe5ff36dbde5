"""Both renderers' ``render`` refuse bad arguments with one error naming the argument, before any
op runs (render_checks.py, camera.py)."""
import pytest
import torch

from diffrender import barycentric, shapes, soft

VERTICES, FACES = shapes.cube()


def render_with(renderer, **changes):
    vertices = VERTICES[None]
    eye = torch.tensor([[0.0, 1.0, 4.0]])
    arguments = dict(vertices=vertices, triangles=FACES, diffuse_colors=torch.full_like(vertices, 0.8),
                     camera_position=eye, camera_lookat=torch.zeros(1, 3), camera_up=torch.tensor([[0.0, 1.0, 0.0]]),
                     light_positions=eye[:, None], image_width=16, image_height=16)
    if renderer == "barycentric":
        arguments.update(normals=torch.nn.functional.normalize(vertices, dim=-1), light_intensities=torch.ones(1, 1, 3))
        arguments.update(changes)
        return barycentric.render(**arguments)
    arguments.update(light_intensities=torch.ones(1, 1))
    arguments.update(changes)
    return soft.render(**arguments)


CASES = {
    "vertices without a batch": (ValueError, r"vertices must be a \[B,V,3\] tensor, got \[8, 3\]",
                                 dict(vertices=VERTICES)),
    "integer vertices": (TypeError, "vertices must be float32 or float64, got torch.int64",
                         dict(vertices=VERTICES[None].long())),
    "float triangles": (TypeError, r"triangles must be an integer \(int32 or int64\) tensor of shape \[F,3\]",
                        dict(triangles=FACES.float())),
    "triangles without corners": (ValueError, r"triangles must have shape \[F,3\], got \[36\]",
                                  dict(triangles=FACES.reshape(-1))),
    "colours of other vertices": (ValueError, r"diffuse_colors must have shape \[1, 8, 3\] \(or give uvs and a "
                                              r"texture\), got \[1, 5, 3\]", dict(diffuse_colors=torch.ones(1, 5, 3))),
    "normals of other vertices": (ValueError, r"normals must have shape \[1, 8, 3\], got \[1, 8, 2\]",
                                  dict(normals=torch.ones(1, 8, 2))),
    "a float image size": (TypeError, "image_width must be an int, got float", dict(image_width=16.0)),
    "zero field of view": (ValueError, r"fov_y must lie in \(0, 180\) degrees, got 0.0", dict(fov_y=0.0)),
    "near plane behind the eye": (ValueError, "near_clip must be a positive finite number, got -1.0",
                                  dict(near_clip=-1.0)),
    "float64 vertices, float32 camera": (TypeError, "the vertices are torch.float64 on cpu but the camera matrices "
                                                    "torch.float32", dict(vertices=VERTICES[None].double())),
    "a camera of mixed dtypes": (TypeError, "look_at: eye is torch.float32 on cpu but center torch.float64",
                                 dict(camera_lookat=torch.zeros(1, 3, dtype=torch.float64))),
}


@pytest.mark.parametrize("renderer", ["barycentric", "soft"])
@pytest.mark.parametrize("case", list(CASES))
def test_bad_arguments_are_one_error_naming_the_argument(renderer, case):
    error, message, changes = CASES[case]
    with pytest.raises(error, match=message):
        render_with(renderer, **changes)


@pytest.mark.parametrize("renderer", ["barycentric", "soft"])
def test_the_arguments_above_render_when_nothing_is_changed(renderer):
    image = render_with(renderer)
    assert image.shape == (1, 16, 16, 4) and image[..., 3].sum() > 10
