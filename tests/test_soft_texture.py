"""The textured soft renderer: every (pixel, triangle) pair samples the texture at its own uv.
Against the dense reference, the untextured renderer, finite differences, thread counts and the
textured barycentric renderer; NaN uvs and input validation."""
import inspect
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import assert_close, same_bits_for_one_and_two_threads, separate_triangles, with_grads
from diffrender import barycentric, shapes, soft
from diffrender._ext import _C
from soft_reference import bilinear_reference, soft_rasterize_reference

SETTINGS = dict(sigma_val=1e-2, gamma_val=5e-2, near_clip=0.3, far_clip=5.0)
MODES = {
    "softmax-prod-euclidean": dict(),
    "hard-hard": dict(aggr_func_rgb="hard", aggr_func_alpha="hard"),
    "softmax-sum-barycentric-cull": dict(aggr_func_alpha="sum", dist_func="barycentric", cull_backfaces=True),
}


def textured_scene(batch=2, num_triangles=8, texture_batch=2, texture_size=(5, 7), seed=0, spread=0.4):
    """separate_triangles with per-vertex (u, v, scale[3], offset[3]), uvs beyond [0,1] (so both
    boundaries matter); a small random texture [texture_batch,Ht,Wt,3]; a background colour;
    float64."""
    gen = torch.Generator().manual_seed(seed)
    dtype = torch.float64
    clip, triangles = separate_triangles(gen, batch, num_triangles, dtype, spread)
    num_vertices = clip.shape[1]
    uvs = torch.rand(batch, num_vertices, 2, generator=gen, dtype=dtype) * 2.2 - 0.6
    scale = torch.rand(batch, num_vertices, 3, generator=gen, dtype=dtype) + 0.5
    offset = torch.rand(batch, num_vertices, 3, generator=gen, dtype=dtype) * 0.2
    attributes = torch.cat([uvs, scale, offset], dim=-1)
    texture = torch.rand(texture_batch, *texture_size, 3, generator=gen, dtype=dtype)
    background = torch.rand(3, generator=gen, dtype=dtype)
    return clip, triangles, attributes, texture, background


# --- the dense reference ---------------------------------------------------------------------

@pytest.mark.parametrize("boundary", ["wrap", "clamp"])
def test_bilinear_reference_is_grid_sample(boundary):
    # grid_sample has no wrap: sample the middle tile of a 3×3 tiling at the wrapped uv instead.
    gen = torch.Generator().manual_seed(0)
    texture = torch.rand(2, 5, 7, 3, generator=gen, dtype=torch.float64)
    uv = torch.rand(2, 40, 1, 2, generator=gen, dtype=torch.float64) * 3.0 - 1.0
    image = texture.permute(0, 3, 1, 2)
    if boundary == "wrap":
        image = image.repeat(1, 1, 3, 3)
        grid_uv = (uv - torch.floor(uv) + 1.0) / 3.0
    else:
        grid_uv = uv
    grid = torch.stack([2 * grid_uv[..., 0] - 1, 1 - 2 * grid_uv[..., 1]], dim=-1)
    expected = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
    assert_close(bilinear_reference(texture, uv, boundary), expected.permute(0, 2, 3, 1), rtol=1e-12)


@pytest.mark.parametrize("texture_batch", [1, 2])
@pytest.mark.parametrize("mode", MODES.values(), ids=MODES.keys())
@pytest.mark.parametrize("boundary", ["wrap", "clamp"])
def test_forward_and_gradients_match_reference(boundary, mode, texture_batch):
    clip, triangles, attributes, texture, background = textured_scene(texture_batch=texture_batch, seed=1)
    grad_out = torch.randn(2, 12, 16, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    results = {}
    for name, fn in (("kernel", soft.rasterize), ("reference", soft_rasterize_reference)):
        inputs = with_grads(clip, attributes, background, texture)
        image = fn(inputs[0], triangles, inputs[1], 16, 12, background_color=inputs[2], texture=inputs[3],
                   texture_boundary=boundary, **SETTINGS, **mode)
        grads = torch.autograd.grad((image * grad_out).sum(), inputs, allow_unused=True)
        results[name] = (image, [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, grads)])
    image, grads = results["kernel"]
    expected_image, expected_grads = results["reference"]
    assert image.shape == (2, 12, 16, 4)
    assert_close(image, expected_image, what="image")
    for what, got, want in zip(("clip_vertices", "attributes", "background", "texture"), grads, expected_grads):
        assert_close(got, want, what=what)
    # Every kind of gradient is really exercised: x, y, w, the uvs, scales, offsets and texels.
    assert (grads[0][..., [0, 1, 3]].abs().amax(dim=(0, 1)) > 0).all()
    assert (grads[1].abs().amax(dim=(0, 1)) > 0).all()
    assert (grads[3] != 0).float().mean() > 0.3


def test_float32_matches_float64_reference():
    clip, triangles, attributes, texture, background = textured_scene(seed=3)
    image = soft.rasterize(clip.float(), triangles, attributes.float(), 16, 12, background_color=background.float(),
                           texture=texture.float(), **SETTINGS)
    expected = soft_rasterize_reference(clip, triangles, attributes, 16, 12, background_color=background,
                                        texture=texture, **SETTINGS)
    assert image.dtype == torch.float32
    assert (image.double() - expected).abs().max() < 1e-4


def test_gradcheck_texture_and_uvs():
    # Two overlapping triangles at 8×8 with a smooth sigmoid; dist_eps is tiny so that the cut-off
    # jump is far below gradcheck's tolerance. The uvs span several texels and wrap.
    clip = torch.tensor([[[-0.7, -0.6, 0.0, 1.0], [0.6, -0.5, 0.0, 1.3], [-0.2, 0.7, 0.0, 0.9],
                          [-0.3, -0.2, 0.0, 1.6], [0.5, 0.1, 0.0, 1.1], [0.1, 0.8, 0.0, 1.5]]], dtype=torch.float64)
    triangles = torch.tensor([[0, 1, 2], [3, 4, 5]])
    gen = torch.Generator().manual_seed(0)
    uvs = (torch.rand(1, 6, 2, generator=gen, dtype=torch.float64) * 1.6 - 0.3).requires_grad_(True)
    scale_offset = torch.rand(1, 6, 4, generator=gen, dtype=torch.float64)
    texture = torch.rand(3, 4, 2, generator=gen, dtype=torch.float64, requires_grad=True)

    def fn(u, t):
        attributes = torch.cat([u, scale_offset], dim=-1)
        return soft.rasterize(clip, triangles, attributes, 8, 8, sigma_val=1e-2, gamma_val=0.05, dist_eps=1e-12,
                              near_clip=0.1, far_clip=4.0, texture=t)

    assert torch.autograd.gradcheck(fn, (uvs, texture), eps=1e-6, atol=1e-5, rtol=1e-4)


# --- the untextured renderer -----------------------------------------------------------------

def sphere_scene(dtype=torch.float64):
    vertices, faces = shapes.icosphere(2)
    vertices = vertices.to(dtype)[None] * torch.tensor([1.0, 0.8, 0.9], dtype=dtype)
    return vertices, faces


def spherical_uvs(vertices):
    """[...,2] longitude/latitude uvs of points around the origin."""
    x, y, z = vertices.unbind(-1)
    u = torch.atan2(z, x) / (2 * math.pi) + 0.5
    v = torch.asin((y / vertices.norm(dim=-1)).clamp(-1, 1)) / math.pi + 0.5
    return torch.stack([u, v], dim=-1)


def test_constant_texture_equals_the_untextured_render():
    vertices, faces = sphere_scene()
    dtype = vertices.dtype
    albedo = torch.tensor([0.8, 0.5, 0.3], dtype=dtype)
    eye = torch.tensor([[0.6, 0.9, 2.8]], dtype=dtype)
    lookat, up = torch.zeros(1, 3, dtype=dtype), torch.tensor([[0.0, 1.0, 0.0]], dtype=dtype)
    lights = torch.tensor([[[2.0, 2.0, 3.0], [-3.0, 1.0, 1.0]]], dtype=dtype)
    intensities = torch.tensor([[[0.9, 0.8, 0.7], [0.3, 0.4, 0.5]]], dtype=dtype)
    shading = dict(specular_colors=torch.full_like(vertices, 0.4), shininess=torch.tensor([8.0], dtype=dtype),
                   ambient_color=torch.tensor([[0.05, 0.1, 0.05]], dtype=dtype),
                   background_color=torch.tensor([0.2, 0.3, 0.4], dtype=dtype), sigma_val=1e-4, gamma_val=1e-3)
    images, grads = [], []
    for textured in (False, True):
        v, l = with_grads(vertices, lights)
        extra = (dict(uvs=spherical_uvs(vertices[0]), texture=albedo.expand(4, 6, 3)) if textured
                 else dict(diffuse_colors=albedo.expand_as(vertices)))
        image = soft.render(v, faces, extra.pop("diffuse_colors", None), eye, lookat, up, l, intensities, 40, 30,
                            **shading, **extra)
        (image * torch.linspace(-1, 1, image.numel(), dtype=dtype).view_as(image)).sum().backward()
        images.append(image)
        grads.append((v.grad, l.grad))
    assert 0.2 < (images[0][..., 3] > 0.5).float().mean() < 0.9
    assert_close(images[1], images[0], rtol=1e-12, what="image")
    for what, got, want in zip(("vertices", "lights"), grads[1], grads[0]):
        assert want.abs().max() > 0
        assert_close(got, want, rtol=1e-10, what=what)


def test_render_is_differentiable_in_texture_and_uvs():
    vertices, faces = sphere_scene(torch.float32)
    eye = torch.tensor([[0.6, 0.9, 2.8]])
    texture = torch.rand(8, 16, 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
    uvs = spherical_uvs(vertices[0]).requires_grad_(True)
    image = soft.render(vertices, faces, None, eye, torch.zeros(1, 3), torch.tensor([[0.0, 1.0, 0.0]]),
                        eye[:, None], torch.ones(1, 1), 32, 32, sigma_val=1e-4, uvs=uvs, texture=texture,
                        texture_boundary="clamp")
    image[..., :3].sum().backward()
    assert texture.grad.shape == texture.shape and (texture.grad > 0).float().mean() > 0.3
    assert torch.isfinite(uvs.grad).all() and uvs.grad.abs().max() > 0


def test_nan_uvs_sample_zero_and_pass_no_gradient():
    clip, triangles, attributes, texture, background = textured_scene(batch=1, num_triangles=4, texture_batch=1)
    nan_uvs = attributes.clone()
    nan_uvs[:, 3:6, 0] = float("nan")   # the second triangle: NaN u
    nan_uvs[:, 6:9, 1] = float("inf")   # the third: infinite v
    untextured_colour = nan_uvs.clone()
    untextured_colour[:, 3:9, 2:5] = 0.0  # their colour is then the offset alone
    untextured_colour[:, 3:9, :2] = 0.5
    results = []
    for attrs in (nan_uvs, untextured_colour):
        c, a, t = with_grads(clip, attrs, texture)
        image = soft.rasterize(c, triangles, a, 16, 12, background_color=background, texture=t, **SETTINGS)
        image.sum().backward()
        results.append((image, c.grad, a.grad, t.grad))
    assert torch.isfinite(results[0][0]).all()
    assert_close(results[0][0], results[1][0], rtol=1e-12, what="image")
    assert_close(results[0][1], results[1][1], rtol=1e-10, what="clip_vertices")
    assert_close(results[0][3], results[1][3], rtol=1e-10, what="texture")
    grad_attributes = results[0][2]
    assert torch.isfinite(grad_attributes).all()
    assert (grad_attributes[:, 3:9, :2] == 0).all()
    assert grad_attributes[:, :3, :2].abs().max() > 0


@pytest.mark.parametrize("textured", [False, True], ids=["untextured", "textured"])
def test_large_triangles_are_walked_in_chunks(textured):
    # Triangles several times wider than a walk chunk (256 pixels) is tall: the backward pass cuts
    # each blurred box into chunks of a few rows, walked by different threads, whose corner sums
    # and texture records must add up to the reference's, with the same bits for any thread count.
    clip, triangles, attributes, texture, background = textured_scene(num_triangles=4, seed=3, spread=1.2)
    if not textured:
        attributes, texture = attributes[..., 2:5], None
    width, height = 120, 90
    ndc = clip[..., :2] / clip[..., 3:]
    spans = ndc.view(2, 4, 3, 2).amax(dim=2) - ndc.view(2, 4, 3, 2).amin(dim=2)
    assert (spans[..., 0] * width / 2 > 128).any() and (spans[..., 1] * height / 2 > 45).any()
    grad_out = torch.randn(2, height, width, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    def grads_of(fn):
        inputs = with_grads(clip, attributes, background) + ([] if texture is None else with_grads(texture))
        image = fn(inputs[0], triangles, inputs[1], width, height, background_color=inputs[2],
                   texture=inputs[3] if textured else None, **SETTINGS)
        return image, *torch.autograd.grad((image * grad_out).sum(), inputs)

    got = same_bits_for_one_and_two_threads(lambda: grads_of(soft.rasterize))
    expected = grads_of(soft_rasterize_reference)
    for what, g, e in zip(("image", "clip_vertices", "attributes", "background", "texture"), got, expected):
        assert g.abs().max() > 0
        assert_close(g, e, what=what)


# --- determinism -----------------------------------------------------------------------------

@pytest.mark.parametrize("texture_batch", [1, 2])
def test_bit_identical_for_any_thread_count(texture_batch):
    vertices, faces = shapes.teapot()
    vertices = vertices[None].expand(2, -1, -1).contiguous()
    eye = torch.tensor([[1.5, 1.0, 2.5], [-2.0, 1.5, 1.5]])
    uvs = spherical_uvs(vertices[0])
    texture = torch.rand(texture_batch, 32, 48, 3, generator=torch.Generator().manual_seed(1))
    grad_out = torch.randn(2, 64, 64, 4, generator=torch.Generator().manual_seed(0))

    def run():
        v, u, t = with_grads(vertices, uvs, texture)
        image = soft.render(v, faces, None, eye, torch.zeros(3), torch.tensor([0.0, 1.0, 0.0]), eye[:, None],
                            torch.ones(2, 1), 64, 64, sigma_val=1e-4, gamma_val=1e-3, uvs=u, texture=t)
        return image, *torch.autograd.grad((image * grad_out).sum(), [v, u, t])

    assert same_bits_for_one_and_two_threads(run)[3].abs().max() > 0


# --- the hard limit --------------------------------------------------------------------------

def test_small_sigma_gamma_approach_the_textured_barycentric_render():
    if "texture_filter" not in inspect.signature(barycentric.render).parameters:
        pytest.skip("barycentric.render has no bilinear texturing yet")
    # A tilted, finely tessellated plane (perspective-correct uvs matter) lit from far along its
    # normal, so that the per-vertex (soft) and per-pixel (barycentric) diffuse light agree.
    dtype = torch.float64
    n = 6
    grid = torch.stack(torch.meshgrid(torch.linspace(0, 1, n + 1, dtype=dtype),
                                      torch.linspace(0, 1, n + 1, dtype=dtype), indexing="xy"), dim=-1).reshape(-1, 2)
    tilt = math.radians(50)
    vertices = torch.stack([grid[:, 0] * 1.6 - 0.8, (grid[:, 1] * 1.6 - 0.8) * math.cos(tilt),
                            -(grid[:, 1] * 1.6 - 0.8) * math.sin(tilt)], dim=-1)[None]
    index = torch.arange((n + 1) ** 2).view(n + 1, n + 1)
    quads = torch.stack([index[:-1, :-1], index[:-1, 1:], index[1:, 1:], index[1:, :-1]], dim=-1).reshape(-1, 4)
    faces = torch.cat([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    normal = torch.tensor([0.0, math.sin(tilt), math.cos(tilt)], dtype=dtype)
    normals = normal.expand_as(vertices).contiguous()
    uvs = grid * 2.0 - 0.3  # wraps
    texture = torch.rand(16, 12, 3, generator=torch.Generator().manual_seed(0), dtype=dtype)
    eye, lookat, up = (torch.tensor([[0.0, 0.2, 3.0]], dtype=dtype), torch.zeros(1, 3, dtype=dtype),
                       torch.tensor([[0.0, 1.0, 0.0]], dtype=dtype))
    lights, intensities = (normal * 1e4)[None, None], torch.ones(1, 1, dtype=dtype)
    width, height = 64, 48
    hard = barycentric.render(vertices, faces, normals, None, eye, lookat, up, lights, intensities, width, height,
                              near_clip=0.1, far_clip=10.0, uvs=uvs, texture=texture, texture_filter="bilinear")
    image = soft.render(vertices, faces, None, eye, lookat, up, lights, intensities, width, height, sigma_val=1e-7,
                        gamma_val=1e-6, near_clip=0.1, far_clip=10.0, normals=normals, uvs=uvs, texture=texture)
    covered = hard[..., 3] > 0.5
    assert 0.2 < covered.float().mean() < 0.8
    # Away from the silhouette the colours agree; within σ of a triangle edge the blur mixes in the
    # neighbour's colour at its nearest edge point, a small fraction of a texel away.
    inner = covered.clone()
    inner[:, 1:] &= covered[:, :-1]
    inner[:, :-1] &= covered[:, 1:]
    inner[:, :, 1:] &= covered[:, :, :-1]
    inner[:, :, :-1] &= covered[:, :, 1:]
    colour_error = (image[..., :3] - hard[..., :3]).abs().amax(-1)[inner]
    assert colour_error.median() < 1e-6 and colour_error.max() < 0.02


# --- validation ------------------------------------------------------------------------------

def test_bad_arguments_raise_clear_errors():
    vertices, faces = sphere_scene(torch.float32)
    eye = torch.tensor([[0.6, 0.9, 2.8]])
    uvs = spherical_uvs(vertices[0])
    texture = torch.rand(4, 4, 3)

    def render(**overrides):
        args = dict(uvs=uvs, texture=texture)
        args.update(overrides)
        colors = args.pop("diffuse_colors", None)
        return soft.render(vertices, faces, colors, eye, torch.zeros(1, 3), torch.tensor([[0.0, 1.0, 0.0]]),
                           eye[:, None], torch.ones(1, 1), 8, 8, **args)

    cases = [
        (ValueError, "uvs and texture go together", dict(uvs=None)),
        (ValueError, "uvs and texture go together", dict(texture=None, diffuse_colors=torch.ones_like(vertices))),
        (ValueError, "uvs must have shape", dict(uvs=torch.zeros(vertices.shape[1], 3))),
        (ValueError, "uvs must have shape", dict(uvs=uvs[:-1])),
        (TypeError, "uvs must have the dtype", dict(uvs=uvs.double())),
        (TypeError, "uvs must be a torch.Tensor", dict(uvs=uvs.tolist())),
        (TypeError, "texture must have the dtype", dict(texture=texture.double())),
        (TypeError, "texture must be a torch.Tensor", dict(texture=texture.tolist())),
        (ValueError, "texture must have shape", dict(texture=texture[0])),
        (ValueError, "texture must have shape", dict(texture=texture.expand(3, 4, 4, 3))),
        (ValueError, "3 \\(RGB\\) channels", dict(texture=torch.rand(4, 4, 4))),
        (ValueError, "texture_boundary must be one of", dict(texture_boundary="mirror")),
        (ValueError, "diffuse_colors must have shape", dict(uvs=None, texture=None)),
    ]
    for error, message, overrides in cases:
        with pytest.raises(error, match=message):
            render(**overrides)

    clip, triangles, attributes, texture64, background = textured_scene(batch=1, texture_batch=1)
    with pytest.raises(ValueError, match="attributes must have 2 \\+ 2·3 = 8 channels"):
        soft.rasterize(clip, triangles, attributes[..., :7], 8, 8, texture=texture64)
    with pytest.raises(ValueError, match="a texture needs attributes"):
        soft.rasterize(clip, triangles, None, 8, 8, texture=texture64)
    with pytest.raises(ValueError, match="background_color must have shape"):
        soft.rasterize(clip, triangles, attributes, 8, 8, texture=texture64, background_color=torch.zeros(8))

    # The compiled op validates on its own, before touching memory.
    screen = clip[..., [0, 1, 3]]
    settings = (1e-4, 1e-4, 1e-4, 1e-3, 0.01, 10.0, "softmax", "prod", "euclidean", False, 8, 8)
    op = _C.soft_rasterize_textured_forward
    with pytest.raises(TypeError, match="same dtype"):
        op(screen, triangles, attributes, background, texture64.float(), "wrap", *settings)
    with pytest.raises(ValueError, match="texture_boundary must be one of"):
        op(screen, triangles, attributes, background, texture64, "mirror", *settings)
    with pytest.raises(ValueError, match="needs attributes \\[B,V,2\\+2C\\]"):
        op(screen, triangles, attributes[..., :6], background, texture64, "wrap", *settings)
    with pytest.raises(ValueError, match="Bt = 1 or B"):
        op(screen, triangles, attributes, background, texture64.expand(2, -1, -1, -1), "wrap", *settings)
    with pytest.raises(ValueError, match="texture must have 4 dimensions"):
        op(screen, triangles, attributes, background, texture64[0], "wrap", *settings)
    with pytest.raises(ValueError, match="background must have shape"):
        op(screen, triangles, attributes, background[:2], texture64, "wrap", *settings)
