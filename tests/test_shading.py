"""The compiled Phong kernel against the float64 PyTorch reference and closed-form cases."""
import math

import pytest
import torch

from diffrender.shading import phong
from shading_reference import phong_reference


def random_inputs(seed, batch=2, points=40, lights=3, specular=True):
    g = torch.Generator().manual_seed(seed)
    d = dict(dtype=torch.float64)
    inputs = [torch.randn(batch, points, 3, generator=g, **d), torch.randn(batch, points, 3, generator=g, **d),
              torch.rand(batch, points, 3, generator=g, **d), torch.randn(batch, 3, generator=g, **d) * 3,
              torch.randn(batch, lights, 3, generator=g, **d) * 3, torch.rand(batch, lights, 3, generator=g, **d)]
    if specular:
        inputs += [torch.rand(batch, points, 3, generator=g, **d),
                   torch.rand(batch, points, generator=g, **d) * 20 + 0.5]
    else:
        inputs += [None, None]
    return inputs + [torch.rand(batch, 3, generator=g, **d)]


@pytest.mark.parametrize("specular", [True, False])
def test_forward_and_every_gradient_match_the_reference(specular):
    inputs = random_inputs(0, specular=specular)
    leaves = [x.clone().requires_grad_(True) if x is not None else None for x in inputs]
    ref_leaves = [x.clone().requires_grad_(True) if x is not None else None for x in inputs]
    out, ref = phong(*leaves), phong_reference(*ref_leaves)
    assert torch.allclose(out, ref, atol=1e-12)
    weights = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(1))
    present = [x for x in leaves if x is not None]
    grads = torch.autograd.grad((out * weights).sum(), present)
    ref_grads = torch.autograd.grad((ref * weights).sum(), [x for x in ref_leaves if x is not None],
                                    allow_unused=True)
    for g, r in zip(grads, ref_grads):
        # Without a highlight the eye position does not matter: the reference leaves it unused.
        r = torch.zeros_like(g) if r is None else r
        assert torch.allclose(g, r, atol=1e-11)
    assert all(g.abs().max() > 0 for g in grads[:3])


def test_gradcheck():
    inputs = [x.clone().requires_grad_(True) for x in random_inputs(2, batch=1, points=5, lights=2)]
    assert torch.autograd.gradcheck(phong, inputs)


def test_specular_highlight_is_the_textbook_value():
    # Light and eye mirrored about the normal: r·v = 1 at the mirror angle; off it, cos^s.
    angle = math.radians(30)
    point = torch.zeros(1, 1, 3, dtype=torch.float64)
    normal = torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64)
    light = torch.tensor([[[math.sin(angle), 0.0, math.cos(angle)]]], dtype=torch.float64) * 5
    for eye_angle, expected in ((-angle, 1.0), (-angle + 0.2, math.cos(0.2) ** 10)):
        eye = torch.tensor([[math.sin(eye_angle), 0.0, math.cos(eye_angle)]], dtype=torch.float64) * 5
        out = phong(point, normal, torch.zeros(1, 1, 3, dtype=torch.float64), eye, light,
                    torch.ones(1, 1, 3, dtype=torch.float64), torch.ones(1, 1, 3, dtype=torch.float64),
                    torch.full((1, 1), 10.0, dtype=torch.float64))
        assert torch.allclose(out, torch.full_like(out, expected), atol=1e-12)


def test_diffuse_is_lambert_and_back_faces_get_no_light():
    normal = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]]])
    light = torch.tensor([[[0.0, 3.0, 3.0]]])
    out = phong(torch.zeros(1, 2, 3), normal, torch.full((1, 2, 3), 0.5), torch.tensor([[0.0, 0.0, 5.0]]),
                light, torch.tensor([[[1.0, 0.5, 0.25]]]), ambient_color=torch.tensor([[0.1, 0.1, 0.1]]))
    expected_front = 0.5 * math.cos(math.radians(45)) * torch.tensor([1.0, 0.5, 0.25]) + 0.1
    assert torch.allclose(out[0, 0], expected_front, atol=1e-6)
    assert torch.allclose(out[0, 1], torch.full((3,), 0.1))


def test_scalar_light_intensities_broadcast_to_rgb():
    inputs = random_inputs(3, specular=False)
    scalar = inputs[5][..., 0]
    rgb = scalar.unsqueeze(-1).expand(-1, -1, 3)
    assert torch.equal(phong(*inputs[:5], scalar, *inputs[6:]), phong(*inputs[:5], rgb, *inputs[6:]))


def test_bad_shapes_raise():
    inputs = random_inputs(4)
    with pytest.raises(ValueError, match="normals"):
        phong(inputs[0], inputs[1][:, :3], *inputs[2:])
    with pytest.raises(ValueError, match="together"):
        phong(*inputs[:6], inputs[6], None, inputs[8])


def test_zero_normals_get_only_ambient_and_no_gradient():
    inputs = random_inputs(5)
    inputs[1][:, :10] = 0.0
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    out = phong(*leaves)
    assert torch.equal(out[:, :10], inputs[8][:, None].expand(-1, 10, -1))
    grads = torch.autograd.grad(out.sum(), leaves)
    for g in (grads[0], grads[1], grads[2], grads[6]):
        assert float(g[:, :10].abs().max()) == 0.0
