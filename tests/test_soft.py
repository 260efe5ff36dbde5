"""The soft rasterizer (SoftRas) against a dense PyTorch reference, finite differences, its hard
limit (the barycentric z-buffer), the seed's tests, robustness, determinism and validation."""
import itertools

import pytest
import torch

from conftest import assert_close, same_bits_for_one_and_two_threads, separate_triangles, with_grads
from diffrender import barycentric, camera, shapes, soft
from diffrender._ext import _C
from soft_reference import soft_rasterize_reference

MODES = [
    dict(aggr_func_rgb=rgb, aggr_func_alpha=alpha, dist_func=dist, cull_backfaces=cull)
    for rgb, alpha, dist, cull in itertools.product(
        ("softmax", "hard"), ("prod", "sum", "hard"), ("euclidean", "barycentric"), (False, True))
]


def mode_id(mode):
    return "-".join(str(v) if not isinstance(v, bool) else ("cull" if v else "both") for v in mode.values())


def random_scene(batch=2, num_triangles=8, channels=3, dtype=torch.float64, seed=0):
    """separate_triangles with random per-vertex attributes and a background colour."""
    gen = torch.Generator().manual_seed(seed)
    clip, triangles = separate_triangles(gen, batch, num_triangles, dtype)
    attributes = torch.rand(batch, clip.shape[1], channels, generator=gen, dtype=dtype)
    background = torch.rand(channels, generator=gen, dtype=dtype)
    return clip, triangles, attributes, background


SETTINGS = dict(sigma_val=1e-2, gamma_val=5e-2, near_clip=0.3, far_clip=5.0)


# --- the dense reference ---------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES, ids=mode_id)
def test_forward_matches_reference(mode):
    clip, triangles, attributes, background = random_scene()
    for width, height in ((16, 12), (11, 14)):
        image = soft.rasterize(clip, triangles, attributes, width, height, background_color=background,
                               **SETTINGS, **mode)
        expected = soft_rasterize_reference(clip, triangles, attributes, width, height,
                                            background_color=background, **SETTINGS, **mode)
        assert image.shape == (2, height, width, 4)
        assert_close(image, expected, what=f"image {width}x{height}")
        alpha = image[..., -1]
        # The scene really exercises soft coverage, not only 0/1 pixels.
        if mode["aggr_func_alpha"] != "hard":
            assert ((alpha > 0.02) & (alpha < 0.98)).float().mean() > 0.05


@pytest.mark.parametrize("mode", MODES, ids=mode_id)
def test_gradients_match_reference(mode):
    clip, triangles, attributes, background = random_scene(seed=1)
    grad_out = torch.randn(2, 12, 16, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    grads = {}
    for name, fn in (("kernel", soft.rasterize), ("reference", soft_rasterize_reference)):
        inputs = with_grads(clip, attributes, background)
        image = fn(inputs[0], triangles, inputs[1], 16, 12, background_color=inputs[2], **SETTINGS, **mode)
        grads[name] = torch.autograd.grad((image * grad_out).sum(), inputs, allow_unused=True)
    for what, got, want in zip(("clip_vertices", "attributes", "background"), grads["kernel"], grads["reference"]):
        if want is None:
            want = torch.zeros_like(got)
        assert got.abs().max() > 0 or want.abs().max() == 0
        assert_close(got, want, what=what)
    # Gradients reach x, y and w, never the unused clip z.
    assert grads["kernel"][0][..., :2].abs().max() > 0 and grads["kernel"][0][..., 3].abs().max() > 0
    assert grads["kernel"][0][..., 2].abs().max() == 0


def test_float32_matches_float64_reference():
    clip, triangles, attributes, background = random_scene(seed=3)
    image = soft.rasterize(clip.float(), triangles, attributes.float(), 16, 12,
                           background_color=background.float(), **SETTINGS)
    expected = soft_rasterize_reference(clip, triangles, attributes, 16, 12, background_color=background, **SETTINGS)
    assert image.dtype == torch.float32
    assert (image.double() - expected).abs().max() < 1e-4


def test_silhouette_without_attributes():
    clip, triangles, attributes, _ = random_scene(seed=4)
    clip_a, clip_b = with_grads(clip, clip)
    silhouette = soft.rasterize(clip_a, triangles, None, 16, 12, **SETTINGS)
    empty = soft.rasterize(clip, triangles, attributes[..., :0], 16, 12, **SETTINGS)
    rgba = soft.rasterize(clip_b, triangles, attributes, 16, 12, **SETTINGS)
    assert silhouette.shape == (2, 12, 16, 1)
    assert torch.equal(silhouette, empty)
    assert torch.allclose(silhouette[..., 0], rgba[..., 3], rtol=0, atol=1e-12)
    silhouette.sum().backward()
    rgba[..., 3].sum().backward()
    assert torch.allclose(clip_a.grad, clip_b.grad, rtol=1e-10, atol=1e-12)
    assert clip_a.grad.abs().max() > 0


# --- finite differences ----------------------------------------------------------------------

@pytest.mark.parametrize("mode", [
    dict(),
    dict(aggr_func_alpha="sum", dist_func="barycentric"),
    dict(aggr_func_rgb="hard", aggr_func_alpha="prod", cull_backfaces=True),
], ids=["softmax-prod-euclidean", "softmax-sum-barycentric", "hard-prod-cull"])
def test_gradcheck(mode):
    # Two overlapping triangles at 8x8 with a smooth sigmoid; dist_eps is tiny so that the cut-off
    # jump (dist_eps) is far below gradcheck's tolerance.
    clip = torch.tensor([[[-0.7, -0.6, 0.0, 1.0], [0.6, -0.5, 0.0, 1.3], [-0.2, 0.7, 0.0, 0.9],
                          [-0.3, -0.2, 0.0, 1.6], [0.5, 0.1, 0.0, 1.1], [0.1, 0.8, 0.0, 1.5]]],
                        dtype=torch.float64, requires_grad=True)
    triangles = torch.tensor([[0, 1, 2], [3, 4, 5]])
    attributes = torch.rand(1, 6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0),
                            requires_grad=True)
    background = torch.tensor([0.2, 0.7], dtype=torch.float64, requires_grad=True)

    def fn(c, a, b):
        return soft.rasterize(c, triangles, a, 8, 8, sigma_val=1e-2, gamma_val=0.05, dist_eps=1e-12,
                              background_color=b, near_clip=0.1, far_clip=4.0, **mode)

    assert torch.autograd.gradcheck(fn, (clip, attributes, background), eps=1e-6, atol=1e-5, rtol=1e-4)


# --- the hard limit --------------------------------------------------------------------------

def sphere_scene(width=64, height=48, dtype=torch.float64):
    vertices, faces = shapes.icosphere(2)
    vertices = vertices.to(dtype)[None] * torch.tensor([1.0, 0.8, 0.9], dtype=dtype)
    colors = (vertices + 1) / 2
    eye = torch.tensor([[0.6, 0.9, 2.8]], dtype=dtype)
    cam = camera.Camera(eye, torch.zeros(1, 3, dtype=dtype), torch.tensor([[0.0, 1.0, 0.0]], dtype=dtype),
                        fov_y=40.0, near=0.1, far=10.0)
    matrices = cam.matrices(width / height)
    return vertices, faces, colors, matrices


def test_small_sigma_gamma_approach_the_hard_rasterizer():
    width, height = 64, 48
    vertices, faces, colors, matrices = sphere_scene(width, height)
    clip = camera.transform_homogeneous(matrices, vertices)
    background = torch.tensor([0.3, 0.1, 0.9], dtype=torch.float64)
    image = soft.rasterize(clip, faces, colors, width, height, sigma_val=1e-7, gamma_val=1e-6,
                           background_color=background, near_clip=0.1, far_clip=10.0)
    hard = barycentric.rasterize(vertices, torch.cat([colors, torch.ones_like(colors[..., :1])], -1), faces,
                                 matrices, width, height, torch.cat([background, torch.zeros(1, dtype=torch.float64)]))
    covered = hard[..., 3] > 0.5
    assert 0.2 < covered.float().mean() < 0.8
    alpha_off = (image[..., 3] - hard[..., 3]).abs() > 0.01
    color_off = (image[..., :3] - hard[..., :3]).abs().amax(-1) > 0.01
    assert alpha_off.float().mean() < 0.01
    assert color_off.float().mean() < 0.01
    # Mismatches, if any, sit on the silhouette: next to a pixel of the other class.
    edge = torch.zeros_like(covered)
    edge[:, 1:] |= covered[:, 1:] != covered[:, :-1]
    edge[:, :-1] |= covered[:, 1:] != covered[:, :-1]
    edge[:, :, 1:] |= covered[:, :, 1:] != covered[:, :, :-1]
    edge[:, :, :-1] |= covered[:, :, 1:] != covered[:, :, :-1]
    assert not (alpha_off & ~edge).any()
    # And the 'hard' aggregation modes are the z-buffer exactly (up to rounding).
    hard_modes = soft.rasterize(clip, faces, colors, width, height, sigma_val=1e-7, aggr_func_rgb="hard",
                                aggr_func_alpha="hard", background_color=background, near_clip=0.1, far_clip=10.0)
    assert (hard_modes - hard).abs().max() < 1e-9


# --- the seed's soft tests -------------------------------------------------------------------

def test_single_triangle_alpha():
    # 10x10 pixel centres lie at ±0.1, ±0.3, ..., ±0.9. The legs x = -0.5, y = -0.5 and the
    # hypotenuse x + y = 0.2 all pass exactly through pixel centres.
    clip = torch.tensor([[[-0.5, -0.5, 0.0, 1.0], [0.7, -0.5, 0.0, 1.0], [-0.5, 0.7, 0.0, 1.0]]],
                        dtype=torch.float64)
    triangles = torch.tensor([[0, 1, 2]])
    alpha = soft.rasterize(clip, triangles, None, 10, 10, sigma_val=1e-4)[0, ..., 0]
    centres = (2 * (torch.arange(10, dtype=torch.float64) + 0.5) / 10 - 1)
    x, y = centres.view(1, 10), centres.view(10, 1)  # row iy is NDC y = centres[iy]
    margin = torch.minimum(torch.minimum(x + 0.5, y + 0.5), 0.2 - x - y)
    on_edge = margin.abs() < 1e-9
    assert on_edge.sum() >= 12
    assert torch.allclose(alpha[on_edge], torch.full_like(alpha[on_edge], 0.5), atol=1e-6)
    assert (alpha[margin > 1e-9] > 1 - 1e-6).all()
    assert (alpha[margin < -1e-9] < 1e-6).all()
    assert alpha[2, 2] == pytest.approx(0.5)      # a vertex
    assert alpha[5, 5] == pytest.approx(0.5)      # (0.1, 0.1), on the hypotenuse
    assert alpha[3, 3] == pytest.approx(1.0)      # inside
    assert alpha[9, 9] == 0.0                     # far outside: cut off
    # A softer sigmoid reaches further, but still decays to ~0 far outside.
    soft_alpha = soft.rasterize(clip, triangles, None, 10, 10, sigma_val=1e-2)[0, ..., 0]
    assert 0.01 < soft_alpha[1, 4] < 0.5 and soft_alpha[9, 9] < 1e-3  # 0.2 below an edge; far away


def test_optimisation_recovers_a_shift():
    size = 32
    base = torch.tensor([[[-0.6, -0.5, 0.0, 1.0], [0.4, -0.4, 0.0, 1.0], [-0.3, 0.6, 0.0, 1.0]]])
    triangles = torch.tensor([[0, 1, 2]])
    colors = torch.tensor([[[1.0, 0.2, 0.1], [0.1, 1.0, 0.3], [0.2, 0.3, 1.0]]])

    def render(shift):
        offset = torch.stack([shift, torch.zeros_like(shift), torch.zeros_like(shift), torch.zeros_like(shift)])
        return soft.rasterize(base + offset, triangles, colors, size, size, sigma_val=1e-3, gamma_val=1e-3)

    target = render(torch.tensor(0.25)).detach()
    shift = torch.tensor(0.0, requires_grad=True)
    optimizer = torch.optim.Adam([shift], lr=0.02)
    for _ in range(150):
        optimizer.zero_grad()
        loss = ((render(shift) - target) ** 2).mean()
        loss.backward()
        optimizer.step()
    half_pixel = 1.0 / size
    assert abs(shift.item() - 0.25) < half_pixel, shift.item()


# --- robustness ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dist_func", ["euclidean", "barycentric"])
def test_no_nan_for_degenerate_and_extreme_inputs(dtype, dist_func):
    near = 0.1
    clip = torch.tensor([[
        [-0.5, -0.5, 0.0, 1.0], [0.5, -0.4, 0.0, 1.0], [0.0, 0.6, 0.0, 1.0],        # ordinary
        [0.1, 0.1, 0.0, 1.0], [0.1, 0.1, 0.0, 1.0], [0.1, 0.1, 0.0, 1.0],           # a point
        [-0.2, 0.0, 0.0, 1.0], [0.2, 0.0, 0.0, 1.0], [0.6, 0.0, 0.0, 1.0],          # collinear
        [-0.3, 0.3, 0.0, 1.0], [-0.3, 0.3, 0.0, 1.0], [0.4, -0.2, 0.0, 1.0],        # repeated vertex
        [-0.02, -0.02, 0.0, near], [0.5, 0.2, 0.0, 1.5], [0.1, 0.5, 0.0, 0.8],      # on the near plane
        [0.0, 0.0, 0.0, near * (1 - 1e-6)], [0.3, -0.6, 0.0, 1.0], [-0.4, -0.7, 0.0, 1.2],  # just before it
        [0.2, 0.1, 0.0, near * 1e-3], [0.6, 0.2, 0.0, 1.0], [0.3, 0.7, 0.0, 1.0],   # very close to w = 0
        [0.2, 0.1, 0.0, 0.0], [0.6, -0.2, 0.0, 1.0], [0.3, 0.3, 0.0, 1.0],          # w = 0
        [0.2, 0.1, 0.0, -1.0], [0.6, -0.2, 0.0, 1.0], [0.3, 0.3, 0.0, 1.0],         # behind the eye
    ]], dtype=dtype)
    triangles = torch.arange(clip.shape[1]).view(-1, 3)
    attributes = torch.rand(1, clip.shape[1], 3, dtype=dtype, generator=torch.Generator().manual_seed(0))
    for sigma, gamma in ((1e-7, 1e-6), (1e-4, 1e-4), (1e-2, 1.0)):
        for rgb, alpha in (("softmax", "prod"), ("softmax", "sum"), ("hard", "hard")):
            c, a = with_grads(clip, attributes)
            image = soft.rasterize(c, triangles, a, 24, 20, sigma_val=sigma, gamma_val=gamma, near_clip=near,
                                   far_clip=10.0, aggr_func_rgb=rgb, aggr_func_alpha=alpha, dist_func=dist_func)
            assert torch.isfinite(image).all()
            assert image[..., 3].max() > 0.5
            weights = torch.linspace(-1, 1, image.numel(), dtype=dtype).view_as(image)
            (image * weights).sum().backward()
            assert torch.isfinite(c.grad).all() and torch.isfinite(a.grad).all()
            assert c.grad.abs().max() > 0


def test_all_degenerate_scene_and_empty_mesh():
    clip = torch.tensor([[[0.1, 0.1, 0.0, 1.0], [0.1, 0.1, 0.0, 1.0], [0.3, 0.3, 0.0, 1.0]]], requires_grad=True)
    image = soft.rasterize(clip, torch.tensor([[0, 1, 2]]), None, 8, 8, sigma_val=1e-3)
    assert torch.isfinite(image).all() and image.max() <= 0.5  # never inside: D <= 1/2
    image.sum().backward()
    assert torch.isfinite(clip.grad).all()
    empty = soft.rasterize(clip, torch.zeros(0, 3, dtype=torch.long), torch.ones(1, 3, 2), 8, 8,
                           background_color=torch.tensor([0.5, 0.25]))
    assert torch.equal(empty[..., :2], torch.tensor([0.5, 0.25]).expand(1, 8, 8, 2))
    assert (empty[..., 2] == 0).all()


# --- determinism -----------------------------------------------------------------------------

@pytest.mark.parametrize("mode", [dict(), dict(aggr_func_rgb="hard", aggr_func_alpha="sum")], ids=["softmax", "hard"])
def test_bit_identical_for_any_thread_count(mode):
    vertices, faces = shapes.teapot()
    vertices = vertices[None]
    colors = (vertices + 1) / 2
    cam = camera.Camera(torch.tensor([[1.5, 1.0, 2.5]]), torch.zeros(1, 3), torch.tensor([[0.0, 1.0, 0.0]]))
    clip = camera.transform_homogeneous(cam.matrices(1.0), vertices)
    grad_out = torch.randn(1, 64, 64, 4, generator=torch.Generator().manual_seed(0))

    def run():
        c, a = with_grads(clip, colors)
        image = soft.rasterize(c, faces, a, 64, 64, sigma_val=1e-4, gamma_val=1e-3, **mode)
        return image, *torch.autograd.grad((image * grad_out).sum(), [c, a])

    assert same_bits_for_one_and_two_threads(run)[1].abs().max() > 0


# --- the shaded renderer ---------------------------------------------------------------------

def test_render_matches_manual_composition_and_is_differentiable():
    from diffrender.mesh import vertex_normals
    from diffrender.shading import phong

    vertices, faces, colors, _ = sphere_scene(dtype=torch.float32)
    vertices = vertices.clone().requires_grad_(True)
    eye = torch.tensor([[0.6, 0.9, 2.8]])
    lookat, up = torch.zeros(1, 3), torch.tensor([[0.0, 1.0, 0.0]])
    lights = torch.tensor([[[2.0, 2.0, 3.0]]], requires_grad=True)
    intensities = torch.tensor([[0.9]])
    image = soft.render(vertices, faces, colors, eye, lookat, up, lights, intensities, 40, 30,
                        sigma_val=1e-4, gamma_val=1e-3, ambient_color=torch.tensor([[0.05, 0.05, 0.05]]))
    assert image.shape == (1, 30, 40, 4)
    shaded = phong(vertices, vertex_normals(vertices, faces), colors, eye, lights, intensities,
                   ambient_color=torch.tensor([[0.05, 0.05, 0.05]]))
    cam = camera.Camera(eye, lookat, up)
    clip = camera.transform_homogeneous(cam.matrices(40 / 30), vertices)
    expected = soft.rasterize(clip, faces, shaded, 40, 30, sigma_val=1e-4, gamma_val=1e-3)
    assert torch.allclose(image, torch.flip(expected, dims=[1]))
    image.sum().backward()
    assert torch.isfinite(vertices.grad).all() and vertices.grad.abs().max() > 0
    assert torch.isfinite(lights.grad).all() and lights.grad.abs().max() > 0


def test_render_row_zero_is_the_top():
    vertices = torch.tensor([[[-0.5, 0.2, 0.0], [0.5, 0.2, 0.0], [0.0, 0.9, 0.0]]])
    faces = torch.tensor([[0, 1, 2]])
    eye = torch.tensor([[0.0, 0.0, 3.0]])
    image = soft.render(vertices, faces, torch.ones(1, 3, 3), eye, torch.zeros(1, 3),
                        torch.tensor([[0.0, 1.0, 0.0]]), eye[:, None], torch.ones(1, 1), 16, 16, sigma_val=1e-5)
    alpha = image[0, ..., 3]
    assert alpha[:8].sum() > 10 and alpha[8:].sum() == 0


# --- validation ------------------------------------------------------------------------------

def test_bad_arguments_raise_clear_errors():
    clip, triangles, attributes, background = random_scene(batch=1, num_triangles=2)

    def call(**overrides):
        args = dict(clip_vertices=clip, triangles=triangles, attributes=attributes, image_width=8, image_height=8)
        args.update(overrides)
        return soft.rasterize(**args)

    cases = [
        (ValueError, "clip_vertices must have shape", dict(clip_vertices=clip[..., :3])),
        (TypeError, "float32 or float64", dict(clip_vertices=clip.long())),
        (TypeError, "clip_vertices must be a torch.Tensor", dict(clip_vertices=clip.tolist())),
        (TypeError, "triangles must be", dict(triangles=triangles.float())),
        (ValueError, "triangles must have shape", dict(triangles=triangles.view(-1))),
        (IndexError, r"triangle indices must lie in \[0, 6\), got indices from 100", dict(triangles=triangles + 100)),
        (IndexError, "triangle indices must lie in .* from -1", dict(triangles=triangles - 1)),
        (TypeError, "attributes must have the dtype", dict(attributes=attributes.float())),
        (ValueError, "attributes must have shape", dict(attributes=attributes[:, :2])),
        (ValueError, "background_color must have shape", dict(background_color=torch.zeros(2))),
        (ValueError, "sigma_val must be a positive", dict(sigma_val=0.0)),
        (ValueError, "gamma_val must be a positive", dict(gamma_val=-1e-4)),
        (TypeError, "sigma_val must be a number", dict(sigma_val="1e-4")),
        (ValueError, "dist_eps must lie in", dict(dist_eps=1.0)),
        (ValueError, "aggr_func_rgb must be one of", dict(aggr_func_rgb="max")),
        (ValueError, "aggr_func_alpha must be one of", dict(aggr_func_alpha="softmax")),
        (ValueError, "dist_func must be one of", dict(dist_func="manhattan")),
        (ValueError, "image_width must be positive", dict(image_width=0)),
        (TypeError, "image_height must be an int", dict(image_height=8.0)),
        (ValueError, "near_clip .* must be smaller than far_clip", dict(near_clip=5.0, far_clip=1.0)),
    ]
    for error, message, overrides in cases:
        with pytest.raises(error, match=message):
            call(**overrides)

    # The compiled op validates on its own, before touching memory.
    screen = clip[..., [0, 1, 3]]
    settings = (1e-4, 1e-4, 1e-4, 1e-3, 0.01, 10.0, "softmax", "prod", "euclidean", False)
    with pytest.raises(IndexError, match="triangle indices must lie in"):
        _C.soft_rasterize_forward(screen, triangles + 1000, attributes, background, *settings, 8, 8)
    with pytest.raises(ValueError, match="aggr_func_rgb must be one of"):
        _C.soft_rasterize_forward(screen, triangles, attributes, background, *settings[:6], "nope",
                                  *settings[7:], 8, 8)
    with pytest.raises(ValueError, match="sigma must be a positive"):
        _C.soft_rasterize_forward(screen, triangles, attributes, background, 0.0, *settings[1:], 8, 8)
    with pytest.raises(ValueError, match="background must have shape"):
        _C.soft_rasterize_forward(screen, triangles, attributes, background[:1], *settings, 8, 8)
    with pytest.raises(TypeError, match="same dtype"):
        _C.soft_rasterize_forward(screen, triangles, attributes.float(), background, *settings, 8, 8)
    # The hard colour's saved winners are -1 (no triangle) or a triangle index.
    hard = settings[:6] + ("hard",) + settings[7:]
    image, aux, hard_ids = _C.soft_rasterize_forward(screen, triangles, attributes, background, *hard, 8, 8)
    for bad, lowest in ((torch.full_like(hard_ids, 2), 2), (torch.full_like(hard_ids, -2), -2)):
        with pytest.raises(IndexError, match=rf"hard_ids must lie in \[-1, 2\), got indices from {lowest}"):
            _C.soft_rasterize_backward(screen, triangles, attributes, background, image, aux, bad,
                                       torch.ones_like(image), *hard)


@pytest.mark.parametrize("offset", [-1, 1000], ids=["negative", "past the end"])
def test_render_refuses_bad_triangles_before_computing_their_normals(offset):
    vertices, faces = shapes.cube()
    eye = torch.tensor([[0.0, 1.0, 4.0]])
    with pytest.raises(IndexError, match=r"face indices must lie in \[0, 8\)"):
        soft.render(vertices[None], faces + offset, torch.ones(1, 8, 3), eye, torch.zeros(1, 3),
                    torch.tensor([[0.0, 1.0, 0.0]]), eye[:, None], torch.ones(1, 1), 8, 8)
