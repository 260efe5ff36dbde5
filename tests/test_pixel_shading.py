"""Deferred pixel shading (one compiled pass) against interpolate + the float64 Phong reference."""
import pytest
import torch

from conftest import same_bits_for_one_and_two_threads
from diffrender import barycentric, camera, shapes
from diffrender.shading import shade_pixels
from shading_reference import phong_reference

SIZE = 24


def rasterized_sphere(dtype=torch.float64):
    vertices, faces = shapes.icosphere(2)
    vertices = vertices.to(dtype)
    cam = camera.Camera(torch.tensor([[0.3, 0.4, 3.0]], dtype=dtype), torch.zeros(1, 3, dtype=dtype),
                        torch.tensor([[0.0, 1.0, 0.0]], dtype=dtype), fov_y=40.0)
    clip = camera.transform_homogeneous(cam.matrices(1.0), vertices[None])
    ids, bary, _ = barycentric.rasterize_triangles(clip, faces, SIZE, SIZE)
    return vertices[None], faces, ids, bary


def shading_inputs(seed, vertices, specular, per_pixel_diffuse, lights=2):
    g = torch.Generator().manual_seed(seed)
    d = dict(dtype=vertices.dtype)
    count = vertices.shape[1]
    diffuse_shape = (1, SIZE, SIZE, 3) if per_pixel_diffuse else (1, count, 3)
    return dict(
        positions=vertices.clone(),
        normals=vertices + 0.1 * torch.randn(1, count, 3, generator=g, **d),
        diffuse_colors=torch.rand(*diffuse_shape, generator=g, **d),
        camera_position=torch.tensor([[0.3, 0.4, 3.0]], **d),
        light_positions=torch.randn(1, lights, 3, generator=g, **d) * 3,
        light_intensities=torch.rand(1, lights, 3, generator=g, **d),
        specular_colors=torch.rand(1, count, 3, generator=g, **d) if specular else None,
        shininess=torch.rand(1, count, generator=g, **d) * 20 + 1 if specular else None,
        ambient_color=torch.rand(1, 3, generator=g, **d))


def composed_reference(faces, ids, bary, inputs):
    """interpolate() each attribute, shade with the float64 PyTorch Phong, mask by coverage."""
    def per_pixel(values):
        if values.dim() == 4:
            return values.reshape(1, -1, values.shape[-1])
        return barycentric.interpolate(values, faces, ids, bary).reshape(1, -1, values.shape[-1])

    specular = inputs["specular_colors"]
    rgb = phong_reference(
        per_pixel(inputs["positions"]), per_pixel(inputs["normals"]), per_pixel(inputs["diffuse_colors"]),
        inputs["camera_position"], inputs["light_positions"], inputs["light_intensities"],
        per_pixel(specular) if specular is not None else None,
        per_pixel(inputs["shininess"].unsqueeze(-1)).squeeze(-1) if specular is not None else None,
        inputs["ambient_color"])
    mask = barycentric.coverage(bary)
    return torch.cat([rgb.reshape(1, SIZE, SIZE, 3) * mask, mask], dim=-1)


@pytest.mark.parametrize("specular", [False, True])
@pytest.mark.parametrize("per_pixel_diffuse", [False, True])
def test_matches_interpolate_then_phong_forward_and_backward(specular, per_pixel_diffuse):
    vertices, faces, ids, bary = rasterized_sphere()
    inputs = shading_inputs(0, vertices, specular, per_pixel_diffuse)
    leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items() if v is not None}
    ref_leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items() if v is not None}
    bary_leaf, ref_bary = bary.clone().requires_grad_(True), bary.clone().requires_grad_(True)
    out = shade_pixels(faces, ids, bary_leaf, **leaves)
    ref = composed_reference(faces, ids, ref_bary, {**inputs, **ref_leaves})
    assert torch.allclose(out, ref, atol=1e-12)
    weights = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(1))
    names = list(leaves)
    grads = torch.autograd.grad((out * weights).sum(), [leaves[k] for k in names] + [bary_leaf])
    ref_grads = torch.autograd.grad((ref * weights).sum(), [ref_leaves[k] for k in names] + [ref_bary],
                                    allow_unused=True)
    for name, g, r in zip(names + ["barycentrics"], grads, ref_grads):
        # Without a highlight the eye position does not matter: the reference leaves it unused.
        assert torch.allclose(g, torch.zeros_like(g) if r is None else r, atol=1e-10), name
        assert g.abs().max() > 0 or (name == "camera_position" and not specular), name


def test_gradcheck_with_specular_and_per_pixel_diffuse():
    vertices, faces, ids, bary = rasterized_sphere()
    inputs = shading_inputs(3, vertices, specular=True, per_pixel_diffuse=True, lights=1)
    names = ["positions", "normals", "diffuse_colors", "light_positions", "specular_colors", "ambient_color"]
    leaves = [inputs[k].clone().requires_grad_(True) for k in names]

    def shade(*tensors):
        return shade_pixels(faces, ids, bary, **{**inputs, **dict(zip(names, tensors))})

    assert torch.autograd.gradcheck(shade, leaves)


@pytest.mark.parametrize("layout", ["broadcast scalar", "broadcast per batch", "transposed", "channels last step"])
def test_strided_output_gradients_match_contiguous_ones(layout):
    """image.sum() hands the backward one value broadcast over the image, read in place; other
    layouts are copied out. Either way the gradients equal those from a contiguous tensor."""
    vertices, faces, ids, bary = rasterized_sphere()
    batch2 = [torch.cat([t, t]) for t in (vertices, ids, bary)]
    vertices, ids, bary = batch2
    inputs = {k: (torch.cat([v, v]) if v is not None else None)
              for k, v in shading_inputs(2, vertices[:1], True, False).items()}
    g = torch.Generator().manual_seed(4)
    strided = {
        "broadcast scalar": torch.tensor(0.7, dtype=torch.float64).expand(2, SIZE, SIZE, 4),
        "broadcast per batch": torch.rand(2, 1, 1, 1, generator=g, dtype=torch.float64).expand(2, SIZE, SIZE, 4),
        "transposed": torch.rand(2, SIZE, SIZE, 4, generator=g, dtype=torch.float64).transpose(1, 2),
        "channels last step": torch.rand(2, SIZE, SIZE, 8, generator=g, dtype=torch.float64)[..., ::2],
    }[layout]
    names = ["positions", "normals", "diffuse_colors", "light_positions", "specular_colors"]

    def gradients(grad_output):
        leaves = {k: inputs[k].clone().requires_grad_(True) for k in names}
        bary_leaf = bary.clone().requires_grad_(True)
        out = shade_pixels(faces, ids, bary_leaf, **{**inputs, **leaves})
        return torch.autograd.grad(out, [*leaves.values(), bary_leaf], grad_output)

    for name, got, expected in zip(names + ["barycentrics"], gradients(strided), gradients(strided.contiguous())):
        assert expected.abs().max() > 0, name
        assert torch.equal(got, expected), name


def test_bit_identical_for_one_and_two_threads():
    vertices, faces, ids, bary = rasterized_sphere(torch.float32)
    inputs = shading_inputs(5, vertices, specular=True, per_pixel_diffuse=False)

    def run():
        leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
        out = shade_pixels(faces, ids, bary, **leaves)
        return out, *torch.autograd.grad(out.square().sum(), list(leaves.values()))

    same_bits_for_one_and_two_threads(run)


def test_bad_inputs_raise_clear_errors():
    vertices, faces, ids, bary = rasterized_sphere()
    inputs = shading_inputs(0, vertices, specular=False, per_pixel_diffuse=False)
    with pytest.raises(IndexError, match="triangle_ids must lie in"):
        shade_pixels(faces, ids + faces.shape[0], bary, **inputs)
    with pytest.raises(ValueError, match="barycentrics must be"):
        shade_pixels(faces, ids, bary[:, :-1], **inputs)
    with pytest.raises(ValueError, match="go together"):
        shade_pixels(faces, ids, bary, **{**inputs, "shininess": torch.ones(1, vertices.shape[1])})
    with pytest.raises(TypeError, match="same dtype"):
        shade_pixels(faces, ids, bary.float(), **inputs)
