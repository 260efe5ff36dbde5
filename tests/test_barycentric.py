"""The barycentric renderer against tf_mesh_renderer's goldens and criteria, a dense PyTorch
reference, and finite differences."""

import numpy as np
import pytest
import torch

from barycentric_reference import rasterize_triangles_reference
from conftest import reference_file, same_bits_for_one_and_two_threads, teapot_clip_with_bad_vertices
from diffrender import barycentric, camera, shapes
from diffrender._ext import _C
from tf_scenes import (GOLDEN_NAMES, TF_JACOBIAN_MAX_OUTLIERS, cube, fit_cube_rotation, load_png, outlier_fraction,
                       render_golden_scenes, simple_triangle, tf_jacobian_checks)


# --- golden images -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def golden_renders():
    return render_golden_scenes()


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_goldens(golden_renders, name):
    expected = load_png(reference_file("tf_mesh_renderer", f"{name}.png"))
    assert outlier_fraction(golden_renders[name], expected) <= 0.001


# --- geometric cases ---------------------------------------------------------------------------

def test_triangle_behind_the_eye_is_drawn_by_homogeneous_rasterization():
    # The third vertex is behind the eye (w < 0). Dividing by w would put it at NDC (0, 1) and
    # draw a triangle above y = -0.5; the true visible part lies below the front edge instead,
    # widening towards the bottom of the screen.
    clip = torch.tensor([[[-0.5, -0.5, 0.0, 1.0], [0.53, -0.5, 0.0, 1.0], [0.0, -1.0, -0.5, -1.0]]])
    triangles = torch.tensor([[0, 1, 2]])
    ids, bary, z = barycentric.rasterize_triangles(clip, triangles, 64, 64)
    ref_ids, ref_bary, _ = rasterize_triangles_reference(clip.double(), triangles, 64, 64)
    covered = bary.sum(-1) > 0.5
    assert covered.any() and torch.equal(covered, ref_bary.sum(-1) > 0.5)
    assert covered[0, 0].sum() > covered[0, 10].sum() > 0, "widens towards NDC y = -1 (row 0)"
    assert not covered[0, 32:].any(), "nothing above the front edge at y = -0.5"
    assert torch.allclose(bary.double(), ref_bary, atol=1e-5)


def test_camera_inside_a_box_sees_every_direction():
    vertices, triangles, _ = cube()
    batch = 6
    lookats = torch.tensor([[1.0, 0, 0], [-1, 0, 0], [0, 0, 1], [0, 0, -1], [0, 1, 0.01], [0, -1, 0.01]])
    eye = torch.zeros(batch, 3)
    up = torch.tensor([[0.0, 1.0, 0.0]]).expand(batch, 3)
    matrices = camera.perspective(1.0, 100.0, 0.01, 10.0) @ camera.look_at(eye, lookats, up)
    clip = camera.transform_homogeneous(matrices, vertices.expand(batch, 8, 3))
    _, bary, z = barycentric.rasterize_triangles(clip, triangles, 32, 32)
    assert bool((bary.sum(-1) > 0.5).all()), "the walls must cover every pixel from inside"
    assert bool((z.abs() < 1).all())


@pytest.mark.parametrize("winding", [[0, 1, 2], [0, 2, 1]])
def test_pixel_centre_on_an_edge_is_covered_once_for_either_winding(winding):
    # A 4x4 image has pixel centres at NDC ±0.25, ±0.75. The two triangles share the diagonal
    # through the centres (-0.75,-0.75) ... (0.75,0.75); each of those pixels is drawn by one.
    quad = torch.tensor([[[-1.0, -1.0, 0.0, 1.0], [1.0, -1.0, 0.0, 1.0], [1.0, 1.0, 0.0, 1.0],
                          [-1.0, 1.0, 0.0, 1.0]]])
    first = torch.tensor([winding])
    second = torch.tensor([[0, 2, 3]]) if winding == [0, 1, 2] else torch.tensor([[0, 3, 2]])
    for triangles in (first, second):
        _, bary, _ = barycentric.rasterize_triangles(quad, triangles, 4, 4)
        covered = bary.sum(-1)[0] > 0.5
        assert all(bool(covered[i, i]) for i in range(4)), "diagonal centres lie on the edge"
    _, bary, _ = barycentric.rasterize_triangles(quad, torch.cat([first, second]), 4, 4)
    assert bool((bary.sum(-1) > 0.5).all()), "the two halves leave no crack"


def test_full_screen_quad_covers_the_corner_pixels():
    quad = torch.tensor([[[-1.0, -1.0, 0.0, 1.0], [1.0, -1.0, 0.0, 1.0], [1.0, 1.0, 0.0, 1.0],
                          [-1.0, 1.0, 0.0, 1.0]]])
    ids, bary, _ = barycentric.rasterize_triangles(quad, torch.tensor([[0, 1, 2], [0, 2, 3]]), 37, 23)
    covered = bary.sum(-1)[0] > 0.5
    assert bool(covered[0, 0] and covered[0, -1] and covered[-1, 0] and covered[-1, -1])
    assert bool(covered.all())


def test_degenerate_triangle_covers_nothing():
    clip = torch.tensor([[[-0.5, -0.5, 0.0, 1.0], [0.5, 0.5, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0],
                          [0.3, 0.3, 0.0, 1.0]]])
    for triangles in ([[0, 1, 2]], [[0, 0, 3]], [[3, 3, 3]]):
        ids, bary, z = barycentric.rasterize_triangles(clip, torch.tensor(triangles), 33, 33)
        assert float(bary.abs().sum()) == 0.0 and bool((z == 1).all())


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("coordinate", [0, 2, 3], ids=["x", "z", "w"])
def test_non_finite_clip_coordinates_cover_nothing(value, coordinate):
    # A vertex at infinity (a zero field of view puts every vertex there) made NaN pixel bounds,
    # which were cast to int and indexed memory far outside the image.
    clip, faces, degenerate, touching = teapot_clip_with_bad_vertices(value, coordinate)
    assert touching.sum() > 100
    got = barycentric.rasterize_triangles(clip, faces, 64, 64)
    expected = barycentric.rasterize_triangles(clip, degenerate, 64, 64)
    assert (expected[0] > 0).sum() > 500, "the finite triangles still draw the teapot"
    for a, b in zip(got, expected):
        assert torch.equal(a, b)


def test_a_zero_field_of_view_puts_every_vertex_at_infinity_and_draws_nothing():
    # A float fov_y of 0 is refused up front; a tensor one (a fitted camera's) is not read on the
    # host, so the rasterizer meets its NaN and infinite clip coordinates. They once crashed it.
    vertices, faces = shapes.teapot()
    eye = torch.tensor([[0.0, 1.0, 3.0]])
    image = barycentric.render(vertices[None], faces, torch.ones_like(vertices)[None], torch.ones_like(vertices)[None],
                               eye, torch.zeros(1, 3), torch.tensor([[0.0, 1.0, 0.0]]), eye[:, None],
                               torch.ones(1, 1, 3), 64, 64, fov_y=torch.tensor([0.0]))
    assert torch.equal(image, torch.zeros_like(image))


def test_near_and_far_planes_clip_by_depth():
    clip = torch.tensor([[[-1.0, -1.0, 0.0, 1.0], [3.0, -1.0, 0.0, 1.0], [-1.0, 3.0, 0.0, 1.0]]])
    for z_value, visible in ((0.5, True), (1.5, False), (-1.5, False)):
        clip[..., 2] = z_value
        _, bary, _ = barycentric.rasterize_triangles(clip, torch.tensor([[0, 1, 2]]), 8, 8)
        assert bool((bary.sum(-1) > 0.5).all()) == visible


def test_equal_depth_goes_to_the_later_triangle():
    quad = torch.tensor([[[-1.0, -1.0, 0.2, 1.0], [3.0, -1.0, 0.2, 1.0], [-1.0, 3.0, 0.2, 1.0]]])
    triangles = torch.tensor([[0, 1, 2]] * 5)
    ids, _, _ = barycentric.rasterize_triangles(quad, triangles, 16, 16)
    assert bool((ids == 4).all())


# --- against the dense reference ---------------------------------------------------------------

def random_scene(seed, batch=2, vertices=15, faces=12, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    clip = torch.randn(batch, vertices, 4, generator=generator, dtype=dtype) * 0.7
    clip[..., 2] *= 0.4
    clip[..., 3] = clip[..., 3].abs() + 0.6
    clip[:, :2, 3] *= -1  # some triangles cross w = 0
    triangles = torch.randint(0, vertices, (faces, 3), generator=generator)
    return clip, triangles


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forward_and_backward_match_the_dense_reference(seed):
    clip, triangles = random_scene(seed)
    ids, bary, z = barycentric.rasterize_triangles(clip, triangles, 19, 13)
    ref_ids, ref_bary, ref_z = rasterize_triangles_reference(clip, triangles, 19, 13)
    assert torch.equal(ids, ref_ids)
    assert torch.allclose(bary, ref_bary, atol=1e-12)
    assert torch.allclose(z, ref_z, atol=1e-12)
    weights = torch.randn(bary.shape, dtype=bary.dtype, generator=torch.Generator().manual_seed(seed))
    leaf = clip.clone().requires_grad_(True)
    grad, = torch.autograd.grad((barycentric.rasterize_triangles(leaf, triangles, 19, 13)[1] * weights).sum(), leaf)
    ref_grad, = torch.autograd.grad((rasterize_triangles_reference(leaf, triangles, 19, 13)[1] * weights).sum(), leaf)
    assert grad.abs().sum() > 0
    assert torch.allclose(grad, ref_grad, rtol=1e-9, atol=1e-9)
    assert float(grad[..., 2].abs().max()) == 0.0, "z gets no gradient"


def test_a_many_triangle_scene_matches_the_dense_reference():
    # Over 32k triangles: the rasterizer bins them in several parallel chunks, and each backward
    # band keeps hundreds of per-triangle records.
    clip, _ = random_scene(4, batch=1, vertices=2000)
    generator = torch.Generator().manual_seed(4)
    first = torch.randint(0, 2000, (40000,), generator=generator)
    offsets = torch.stack([torch.randint(1, 1000, (40000,), generator=generator),
                           torch.randint(1000, 2000, (40000,), generator=generator)], 1)
    triangles = torch.cat([first[:, None], (first[:, None] + offsets) % 2000], 1)  # three distinct corners
    ids, bary, z = barycentric.rasterize_triangles(clip, triangles, 9, 7)
    ref_ids, ref_bary, ref_z = rasterize_triangles_reference(clip, triangles, 9, 7)
    assert torch.equal(ids, ref_ids)
    assert torch.allclose(bary, ref_bary, atol=1e-12)
    weights = torch.randn(bary.shape, dtype=bary.dtype, generator=torch.Generator().manual_seed(4))
    leaf = clip.clone().requires_grad_(True)
    grad, = torch.autograd.grad((barycentric.rasterize_triangles(leaf, triangles, 9, 7)[1] * weights).sum(), leaf)
    ref_grad, = torch.autograd.grad((rasterize_triangles_reference(leaf, triangles, 9, 7)[1] * weights).sum(), leaf)
    assert grad.abs().sum() > 0
    assert torch.allclose(grad, ref_grad, rtol=1e-9, atol=1e-9)


def test_backward_of_an_image_with_nothing_covered():
    """No triangle wins a pixel (the mesh is behind the camera): every gradient is zero."""
    vertices, faces = shapes.icosphere(1)
    leaf = (vertices[None] + torch.tensor([0.0, 0.0, 5.0])).requires_grad_(True)
    colors = torch.full_like(leaf, 0.5).requires_grad_(True)
    eye, center, up = torch.tensor([[0.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, -1.0]]), torch.tensor([[0.0, 1.0, 0.0]])
    image = barycentric.render(leaf, faces, leaf.detach(), colors, eye, center, up, eye[:, None],
                               torch.ones(1, 1, 3), 16, 12)
    assert image.abs().max() == 0
    image.sum().backward()
    # interpolate on its own, with the rasterizer's marks of uncovered pixels: id 0, barycentrics 0.
    values = barycentric.interpolate(colors, faces, torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 4, 4, 3))
    values.sum().backward()
    assert leaf.grad.abs().max() == 0 and colors.grad.abs().max() == 0


def test_equal_depths_go_to_the_last_of_many_triangles():
    copies = 20000  # 40,000 triangles, binned in several chunks
    quad = torch.tensor([[-1.0, -1.0, 0.5, 1.0], [1.0, -1.0, 0.5, 1.0], [1.0, 1.0, 0.5, 1.0], [-1.0, 1.0, 0.5, 1.0]])
    clip = quad.repeat(copies, 1)[None]
    corners = torch.arange(copies)[:, None, None] * 4 + torch.tensor([[0, 1, 2], [0, 2, 3]])
    ids, bary, _ = barycentric.rasterize_triangles(clip, corners.reshape(-1, 3), 16, 12)
    assert bary.sum(-1).min() > 0.99
    assert set(ids.unique().tolist()) <= {2 * copies - 2, 2 * copies - 1}


def test_float32_matches_float64():
    clip, triangles = random_scene(3)
    ids64, bary64, _ = barycentric.rasterize_triangles(clip, triangles, 31, 29)
    ids32, bary32, _ = barycentric.rasterize_triangles(clip.float(), triangles, 31, 29)
    agree = ids64 == ids32
    assert agree.float().mean() > 0.995
    assert torch.allclose(bary32.double()[agree], bary64[agree], atol=1e-4)


def test_gradcheck_float64():
    clip, triangles = random_scene(4, batch=1, vertices=6, faces=4)
    leaf = clip.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda c: barycentric.rasterize_triangles(c, triangles, 7, 6)[1], (leaf,), eps=1e-7, atol=1e-5)


# --- tf_mesh_renderer's gradient tests ---------------------------------------------------------

def test_tf_jacobians_have_few_outliers():
    for name, (outliers, analytic_size) in tf_jacobian_checks().items():
        assert analytic_size > 0, name
        assert outliers <= TF_JACOBIAN_MAX_OUTLIERS[name], name


# --- full render gradients ---------------------------------------------------------------------

def test_render_gradients_match_finite_differences():
    vertices, triangles, normals = cube(torch.float64)
    rotation = camera.euler_matrices(torch.tensor([[0.3, 0.5, 0.1]], dtype=torch.float64))[:, :3, :3]
    inputs = {
        "vertices": (vertices @ rotation.transpose(1, 2)) * 0.9,
        "colors": torch.rand(1, 8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)),
        "eye": torch.tensor([[0.4, 0.7, 6.0]], dtype=torch.float64),
        "light": torch.tensor([[[1.0, 2.0, 5.0], [-3.0, 0.5, 4.0]]], dtype=torch.float64),
        "intensity": torch.tensor([[[0.9, 0.8, 0.7], [0.3, 0.4, 0.5]]], dtype=torch.float64),
        "specular": torch.full((1, 8, 3), 0.5, dtype=torch.float64),
    }
    weights = torch.rand(1, 24, 32, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    n = normals @ rotation.transpose(1, 2)

    def loss(values):
        image = barycentric.render(
            values["vertices"], triangles, n, values["colors"], values["eye"],
            torch.zeros(1, 3, dtype=torch.float64), torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64),
            values["light"], values["intensity"], 32, 24, specular_colors=values["specular"],
            shininess_coefficients=torch.full((1,), 8.0, dtype=torch.float64),
            ambient_color=torch.full((1, 3), 0.1, dtype=torch.float64))
        return (image * weights).sum()

    leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    grads = dict(zip(leaves, torch.autograd.grad(loss(leaves), list(leaves.values()))))
    step = 1e-6
    for name, value in inputs.items():
        flat = value.reshape(-1)
        numeric = torch.empty_like(flat)
        for i in range(flat.numel()):
            plus, minus = flat.clone(), flat.clone()
            plus[i] += step
            minus[i] -= step
            numeric[i] = (loss({**inputs, name: plus.view_as(value)}) -
                          loss({**inputs, name: minus.view_as(value)})) / (2 * step)
        analytic = grads[name].reshape(-1)
        assert analytic.abs().max() > 0, name
        assert torch.allclose(analytic, numeric, rtol=1e-4, atol=1e-6), name


# --- optimisation: tf's testThatCubeRotates ----------------------------------------------------

def test_that_cube_rotates():
    target = load_png(reference_file("tf_mesh_renderer", "Gray_Cube_0.png"))
    assert outlier_fraction(fit_cube_rotation(target), target, tolerance=0.04) <= 0.01


# --- threads -----------------------------------------------------------------------------------

def test_parallel_for_really_uses_two_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert _C.num_threads_used(1000) == 2, "the extension was built without OpenMP"
    finally:
        torch.set_num_threads(previous)


def test_outputs_are_bit_identical_for_one_and_two_threads():
    clip, triangles = random_scene(5, batch=2, vertices=300, faces=500, dtype=torch.float32)
    weights = torch.randn(2, 96, 128, 3)

    def run():
        leaf = clip.clone().requires_grad_(True)
        ids, bary, z = barycentric.rasterize_triangles(leaf, triangles, 128, 96)
        return ids, bary, z, *torch.autograd.grad((bary * weights).sum(), leaf)

    same_bits_for_one_and_two_threads(run)


# --- input validation --------------------------------------------------------------------------

def test_bad_arguments_raise_clear_errors():
    clip, triangles = simple_triangle()
    with pytest.raises(IndexError, match="triangle indices"):
        barycentric.rasterize_triangles(clip, torch.tensor([[0, 1, 3]]), 8, 8)
    with pytest.raises(IndexError, match="triangle indices"):
        barycentric.rasterize_triangles(clip, torch.tensor([[0, -1, 2]]), 8, 8)
    with pytest.raises(ValueError, match=r"\[B,V,4\]"):
        barycentric.rasterize_triangles(clip[..., :3], triangles, 8, 8)
    with pytest.raises(TypeError, match="float32 or float64"):
        barycentric.rasterize_triangles(clip.half(), triangles, 8, 8)
    with pytest.raises(TypeError, match="integer"):
        barycentric.rasterize_triangles(clip, triangles.float(), 8, 8)
    with pytest.raises(ValueError, match="image_width must be positive, got 0"):
        barycentric.rasterize_triangles(clip, triangles, 0, 8)
    # A float size was truncated without a word; any integer type still passes.
    with pytest.raises(TypeError, match="image_height must be an int, got float"):
        barycentric.rasterize_triangles(clip, triangles, 8, 8.5)
    assert barycentric.rasterize_triangles(clip, triangles, np.int64(8), torch.tensor(6))[0].shape == (1, 6, 8)
    with pytest.raises(ValueError, match="image size 40000x8 exceeds the 32768 pixel limit"):
        _C.rasterize_triangles_forward(clip, triangles, 40000, 8)


# --- interpolation -----------------------------------------------------------------------------

def test_interpolate_matches_gather_reference_and_gradcheck():
    clip, triangles = random_scene(6, batch=2, vertices=10, faces=8)
    ids, bary, _ = barycentric.rasterize_triangles(clip, triangles, 11, 9)
    attributes = torch.randn(2, 10, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    corners = torch.stack([attributes[b][triangles[ids[b]]] for b in range(2)])  # [B,H,W,3,A]
    expected = (bary.unsqueeze(-1) * corners).sum(-2)
    assert torch.allclose(barycentric.interpolate(attributes, triangles, ids, bary), expected, atol=1e-14)
    leaf_attr, leaf_bary = attributes.clone().requires_grad_(True), bary.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: barycentric.interpolate(a, triangles, ids, b),
                                    (leaf_attr, leaf_bary))


def test_tone_mapper_gamma_corrects_clamped_rgb_and_leaves_alpha_alone():
    rgba = torch.tensor([[[[-0.5, 0.25, 1.5, 0.7], [0.0, 1.0, 0.0625, 1.0]]]])
    expected = torch.tensor([[[[0.0, 0.5, 1.0, 0.7], [0.0, 1.0, 0.25, 1.0]]]])
    assert torch.equal(barycentric.tone_mapper(rgba, 2.0), expected)
    assert torch.equal(barycentric.tone_mapper(rgba[..., :3], 2.0), expected[..., :3])


def test_backward_refuses_out_of_range_ids_of_covered_pixels():
    clip, triangles = simple_triangle()
    ids, bary, _ = barycentric.rasterize_triangles(clip, triangles, 16, 16)
    grad = torch.ones_like(bary)
    for bad in (ids + 1, ids - 1):
        with pytest.raises(IndexError, match="triangle_ids must lie in"):
            _C.rasterize_triangles_backward(clip, triangles, bad, bary, grad)
    # Uncovered pixels' ids are never read, so they may hold anything.
    garbage = torch.where(bary.sum(-1) > 0.5, ids, torch.full_like(ids, 10**9))
    assert torch.equal(_C.rasterize_triangles_backward(clip, triangles, garbage, bary, grad),
                       _C.rasterize_triangles_backward(clip, triangles, ids, bary, grad))
