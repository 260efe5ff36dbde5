"""CUDA against CPU parity for every op, forward and backward, on a real GPU (skipped without
one) and in the CUDA emulation (always); and the CPU-only build's refusal paths."""
import itertools
import json
from pathlib import Path

import pytest
import torch

from cli_helpers import assert_one_line_error, run_cli
from conftest import reference_file, separate_triangles, teapot_clip_with_bad_vertices
from diffrender import barycentric, shading, soft, texture
from diffrender._ext import _C
from diffrender.mesh import load_mesh
from gpu_backends import HAS_CUDA
from tf_scenes import (GOLDEN_NAMES, TF_JACOBIAN_MAX_OUTLIERS, fit_cube_rotation, load_png, outlier_fraction,
                       render_golden_scenes, tf_jacobian_checks)


def random_clip(seed, batch=2, vertices=200, faces=300):
    g = torch.Generator().manual_seed(seed)
    clip = torch.randn(batch, vertices, 4, generator=g) * 0.6
    clip[..., 2] *= 0.4
    clip[..., 3] = clip[..., 3].abs() + 0.6
    return clip, torch.randint(0, vertices, (faces, 3), generator=g)


def grads_on(device, function, *inputs):
    leaves = [x.to(device).clone().requires_grad_(x.is_floating_point()) for x in inputs]
    out = function(*leaves)
    outputs = out if isinstance(out, (tuple, list)) else (out,)
    weights = [torch.randn(o.shape, generator=torch.Generator().manual_seed(7), dtype=o.dtype).to(device)
               for o in outputs if o.is_floating_point()]
    loss = sum((o * w).sum() for o, w in zip([o for o in outputs if o.is_floating_point()], weights))
    floats = [x for x in leaves if x.requires_grad]
    return [o.detach().cpu() for o in outputs], [g.cpu() for g in torch.autograd.grad(loss, floats)]


def grads_on_gpu(gpu, function, *inputs, schedule=0):
    """grads_on(gpu.device, ...) with the ops routed to gpu's kernels."""
    with gpu(schedule):
        return grads_on(gpu.device, function, *inputs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rasterize_parity(gpu, dtype):
    clip, triangles = random_clip(0)
    clip = clip.to(dtype)
    fn = lambda c, t: barycentric.rasterize_triangles(c, t, 97, 61)
    (cpu_ids, cpu_bary, cpu_z), (cpu_grad,) = grads_on("cpu", fn, clip, triangles)
    (gpu_ids, gpu_bary, gpu_z), (gpu_grad,) = grads_on_gpu(gpu, fn, clip, triangles)
    agree = cpu_ids == gpu_ids
    assert agree.float().mean() > 0.999
    assert torch.allclose(cpu_bary[agree], gpu_bary[agree], atol=1e-5)
    assert torch.allclose(cpu_z[agree], gpu_z[agree], atol=1e-5)
    assert torch.allclose(cpu_grad, gpu_grad, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("schedule", [0, 1, 7])
def test_rasterize_parity_with_crowded_tiles_and_depth_ties(gpu, schedule):
    # 600 large triangles put several shared-memory rounds into every tile, and each of the first
    # 100 is drawn again at the same depth, so the later copy must win (the CPU's z-test order),
    # whatever order the tile bins were filled in.
    clip, triangles = separate_triangles(torch.Generator().manual_seed(8), 2, 600, torch.float64, spread=0.8)
    triangles = torch.cat([triangles, triangles[:100]])
    fn = lambda c, t: barycentric.rasterize_triangles(c, t, 50, 40)
    (cpu_ids, cpu_bary, cpu_z), (cpu_grad,) = grads_on("cpu", fn, clip, triangles)
    (gpu_ids, gpu_bary, gpu_z), (gpu_grad,) = grads_on_gpu(gpu, fn, clip, triangles, schedule=schedule)
    assert (cpu_ids >= 600).any()
    assert torch.equal(cpu_ids, gpu_ids)
    assert torch.allclose(cpu_bary, gpu_bary, atol=1e-12)
    assert torch.allclose(cpu_z, gpu_z, atol=1e-12)
    assert torch.allclose(cpu_grad, gpu_grad, atol=1e-9)


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("coordinate", [0, 2, 3], ids=["x", "z", "w"])
def test_non_finite_clip_coordinates_cover_nothing_on_the_gpu_too(gpu, value, coordinate):
    # The GPU bins triangles by their pixel bounds, as the CPU does: NaN bounds must not index.
    clip, faces, degenerate, _ = teapot_clip_with_bad_vertices(value, coordinate)
    fn = lambda c, t: barycentric.rasterize_triangles(c, t, 64, 64)
    with gpu(0):
        got = fn(clip.to(gpu.device), faces.to(gpu.device))
        expected = fn(clip.to(gpu.device), degenerate.to(gpu.device))
    for a, b in zip(got, expected):
        assert torch.equal(a.cpu(), b.cpu())
    # And the finite triangles draw what the CPU draws, to the parity tests' tolerance.
    cpu_ids, cpu_bary, cpu_z = fn(clip, degenerate)
    agree = got[0].cpu() == cpu_ids
    assert agree.float().mean() > 0.999 and (cpu_ids > 0).sum() > 500
    assert torch.allclose(got[1].cpu()[agree], cpu_bary[agree], atol=1e-5)
    assert torch.allclose(got[2].cpu()[agree], cpu_z[agree], atol=1e-5)


def test_cuda_backward_is_deterministic(gpu):
    clip, triangles = random_clip(1)
    fn = lambda c, t: barycentric.rasterize_triangles(c, t, 128, 128)[1]
    first = grads_on_gpu(gpu, fn, clip, triangles)[1][0]
    for schedule in (1, 2, 3):
        assert torch.equal(first, grads_on_gpu(gpu, fn, clip, triangles, schedule=schedule)[1][0])


def screen_filling_quad():
    """Two triangles that cover the whole image, in a batch of two slightly different views."""
    clip = torch.tensor([[-1.3, -1.2, 0.2, 1.0], [1.2, -1.3, 0.3, 1.1], [1.3, 1.2, 0.4, 0.9], [-1.2, 1.3, 0.1, 1.0]],
                        dtype=torch.float64).repeat(2, 1, 1)
    clip[1, :, :2] *= 1.05
    return clip, torch.tensor([[0, 1, 2], [0, 2, 3]])


def test_screen_filling_triangles_sum_long_runs_exactly(gpu):
    # Each vertex collects ~10^4 pixel corners: the ordered scatter sums them through four levels
    # of fixed chunks, which must lose or repeat no slot.
    clip, triangles = screen_filling_quad()
    attributes = torch.randn(2, 4, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    def fn(c, t, a):
        ids, bary, _ = barycentric.rasterize_triangles(c, t, 160, 120)
        return barycentric.interpolate(a, t, ids, bary)

    _, cpu_grads = grads_on("cpu", fn, clip, triangles, attributes)
    _, gpu_grads = grads_on_gpu(gpu, fn, clip, triangles, attributes)
    for c, g in zip(cpu_grads, gpu_grads):
        assert torch.allclose(c, g, rtol=1e-9, atol=1e-9)
    assert all(torch.equal(g, r) for g, r in zip(gpu_grads, grads_on_gpu(gpu, fn, clip, triangles, attributes,
                                                                         schedule=5)[1]))


def test_tf_mesh_renderer_goldens_on_the_gpu(gpu):
    # The GPU kernels draw tf_mesh_renderer's golden scenes within tf's own criterion, and
    # (nearly) the same pixels as the CPU kernels.
    expected = {name: load_png(reference_file("tf_mesh_renderer", f"{name}.png")) for name in GOLDEN_NAMES}
    with gpu(0):
        renders = render_golden_scenes(gpu.device)
    cpu_renders = render_golden_scenes()
    for name in GOLDEN_NAMES:
        assert outlier_fraction(renders[name], expected[name]) <= 0.001, name
        assert outlier_fraction(renders[name], cpu_renders[name].numpy(), tolerance=1e-4) <= 1e-4, name


def test_tf_mesh_renderer_jacobians_on_the_gpu(gpu):
    with gpu(0):
        checks = tf_jacobian_checks(gpu.device)
    for name, (outliers, analytic_size) in checks.items():
        assert analytic_size > 0, name
        assert outliers <= TF_JACOBIAN_MAX_OUTLIERS[name], name


def test_tf_mesh_renderer_cube_rotates_on_the_gpu(gpu):
    target = load_png(reference_file("tf_mesh_renderer", "Gray_Cube_0.png"))
    with gpu(0):
        final = fit_cube_rotation(target, gpu.device)
    assert outlier_fraction(final, target, tolerance=0.04) <= 0.01


def test_interpolate_and_phong_parity(gpu):
    clip, triangles = random_clip(2, batch=1, vertices=50, faces=60)
    clip = clip.double()
    ids, bary, _ = barycentric.rasterize_triangles(clip, triangles, 40, 30)
    attributes = torch.randn(1, 50, 5, dtype=torch.float64)
    fn = lambda a, b: barycentric.interpolate(a, triangles.to(a.device), ids.to(a.device), b)
    cpu_out, cpu_grads = grads_on("cpu", fn, attributes, bary)
    gpu_out, gpu_grads = grads_on_gpu(gpu, fn, attributes, bary)
    assert torch.allclose(cpu_out[0], gpu_out[0], atol=1e-12)
    for c, g in zip(cpu_grads, gpu_grads):
        assert torch.allclose(c, g, atol=1e-10)
    g = torch.Generator().manual_seed(3)
    inputs = [torch.randn(2, 64, 3, generator=g, dtype=torch.float64) for _ in range(2)] + \
             [torch.rand(2, 64, 3, generator=g, dtype=torch.float64), torch.randn(2, 3, generator=g, dtype=torch.float64),
              torch.randn(2, 2, 3, generator=g, dtype=torch.float64) * 3, torch.rand(2, 2, 3, generator=g, dtype=torch.float64),
              torch.rand(2, 64, 3, generator=g, dtype=torch.float64), torch.rand(2, 64, generator=g, dtype=torch.float64) * 9 + 1,
              torch.rand(2, 3, generator=g, dtype=torch.float64)]
    cpu_out, cpu_grads = grads_on("cpu", shading.phong, *inputs)
    gpu_out, gpu_grads = grads_on_gpu(gpu, shading.phong, *inputs)
    assert torch.allclose(cpu_out[0], gpu_out[0], atol=1e-12)
    for c, g in zip(cpu_grads, gpu_grads):
        assert torch.allclose(c, g, atol=1e-10)


@pytest.mark.parametrize("per_pixel_diffuse", [False, True])
def test_shade_pixels_parity_and_determinism(gpu, per_pixel_diffuse):
    clip, triangles = random_clip(4, batch=2, vertices=50, faces=60)
    clip = clip.double()
    ids, bary, _ = barycentric.rasterize_triangles(clip, triangles, 40, 30)
    g = torch.Generator().manual_seed(5)
    d = dict(generator=g, dtype=torch.float64)
    diffuse = torch.rand(2, 30, 40, 3, **d) if per_pixel_diffuse else torch.rand(2, 50, 3, **d)
    inputs = [torch.randn(2, 50, 3, **d), torch.randn(2, 50, 3, **d), diffuse, torch.randn(2, 3, **d),
              torch.randn(2, 2, 3, **d) * 3, torch.rand(2, 2, 3, **d), torch.rand(2, 50, 3, **d),
              torch.rand(2, 50, **d) * 9 + 1, torch.rand(2, 3, **d), bary]

    def fn(positions, normals, diffuse_colors, eye, lights, intensities, specular, shininess, ambient, weights):
        device = positions.device
        return shading.shade_pixels(triangles.to(device), ids.to(device), weights, positions, normals,
                                    diffuse_colors, eye, lights, intensities, specular, shininess, ambient)

    cpu_out, cpu_grads = grads_on("cpu", fn, *inputs)
    gpu_out, gpu_grads = grads_on_gpu(gpu, fn, *inputs)
    again_out, again_grads = grads_on_gpu(gpu, fn, *inputs, schedule=2)
    assert torch.allclose(cpu_out[0], gpu_out[0], atol=1e-12)
    for c, on_gpu, again in zip(cpu_grads, gpu_grads, again_grads):
        assert torch.allclose(c, on_gpu, atol=1e-10)
        assert torch.equal(on_gpu, again)


# --- Empty and degenerate shapes: the GPU does what the CPU does ------------------------------

F64 = dict(dtype=torch.float64)


def edge_scene(batch, faces, channels, seed=1):
    """(clip [B,5,4], triangles [faces,3], attributes [B,5,channels]): float64, drawn once."""
    g = torch.Generator().manual_seed(seed)
    clip = torch.rand(batch, 5, 4, generator=g, **F64) * 1.6 - 0.8
    clip[..., 3] = 1.0
    return clip, torch.randint(0, 5, (faces, 3), generator=g), torch.rand(batch, 5, channels, generator=g, **F64)


def rasterize_case(batch, faces, width=8, height=6):
    clip, triangles, _ = edge_scene(batch, faces, 0)
    return lambda c, t: barycentric.rasterize_triangles(c, t, width, height), (clip, triangles)


def interpolate_case(batch, channels):
    clip, _, attributes = edge_scene(batch, 0, channels)
    triangles = torch.tensor([[0, 1, 2], [2, 3, 4]])
    ids, bary, _ = barycentric.rasterize_triangles(clip, triangles, 8, 6)
    return (lambda a, b: barycentric.interpolate(a, triangles.to(a.device), ids.to(a.device), b),
            (attributes, bary))


def soft_case(batch, faces, channels):
    return lambda c, t, a: soft.rasterize(c, t, a, 8, 6, sigma_val=1e-3), edge_scene(batch, faces, channels)


def phong_case(batch, points, lights):
    g = torch.Generator().manual_seed(4)
    shapes = [(batch, points, 3)] * 3 + [(batch, 3), (batch, lights, 3), (batch, lights, 3), (batch, points, 3),
                                          (batch, points), (batch, 3)]
    return shading.phong, [torch.rand(s, generator=g, **F64) + 0.5 for s in shapes]


def texture_case(batch, height, width):
    g = torch.Generator().manual_seed(5)
    inputs = (torch.rand(1, 4, 5, 3, generator=g, **F64), torch.rand(batch, height, width, 2, generator=g, **F64))
    return lambda tex, uv: texture.sample(tex, uv, "bilinear"), inputs


EDGE_CASES = {
    "rasterize-batch-0": rasterize_case(0, 3),
    "rasterize-no-triangles": rasterize_case(1, 0),
    "rasterize-1x1": rasterize_case(2, 3, 1, 1),
    "interpolate-batch-0": interpolate_case(0, 2),
    "interpolate-no-channels": interpolate_case(1, 0),
    "soft-batch-0": soft_case(0, 3, 3),
    "soft-no-triangles": soft_case(1, 0, 3),
    "soft-no-channels": soft_case(2, 3, 0),
    "phong-batch-0": phong_case(0, 4, 1),
    "phong-no-points": phong_case(2, 0, 1),
    "phong-no-lights": phong_case(2, 4, 0),
    "texture-batch-0": texture_case(0, 3, 3),
    "texture-empty-image": texture_case(1, 0, 3),
}


@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_empty_and_degenerate_shapes_match_the_cpu(gpu, case):
    function, inputs = EDGE_CASES[case]
    cpu_out, cpu_grads = grads_on("cpu", function, *inputs)
    gpu_out, gpu_grads = grads_on_gpu(gpu, function, *inputs)
    assert [x.shape for x in gpu_out + gpu_grads] == [x.shape for x in cpu_out + cpu_grads]
    for c, g in zip(cpu_out + cpu_grads, gpu_out + gpu_grads):
        assert torch.equal(c, g) if not c.is_floating_point() else torch.allclose(c, g, atol=1e-12)


def bad_id_calls(device):
    """Op calls whose triangle ids [1,4,4] point past the two triangles."""
    clip = torch.rand(1, 5, 4, **F64).to(device)
    triangles = torch.tensor([[0, 1, 2], [1, 2, 3]], device=device)
    ids = torch.full((1, 4, 4), 7, dtype=torch.long, device=device)
    bary = torch.full((1, 4, 4, 3), 1 / 3, **F64).to(device)
    attributes = torch.rand(1, 5, 2, **F64).to(device)
    grad = torch.rand(1, 4, 4, 2, **F64).to(device)
    return {"rasterize backward": lambda: _C.rasterize_triangles_backward(clip, triangles, ids, bary, bary),
            "interpolate": lambda: _C.interpolate_forward(attributes, triangles, ids, bary),
            "interpolate backward": lambda: _C.interpolate_backward(grad, attributes, triangles, ids, bary)}


@pytest.mark.parametrize("call", list(bad_id_calls("cpu")))
def test_out_of_range_ids_are_refused_before_any_kernel_reads_them(gpu, call):
    with pytest.raises(IndexError, match="triangle_ids"):
        bad_id_calls("cpu")[call]()
    with gpu(), pytest.raises(IndexError, match=r"triangle_ids must lie in \[0, 2\), got indices from"):
        bad_id_calls(gpu.device)[call]()


def huge_backward_calls(device):
    """Backward op calls on a 32768² image, expanded from one pixel so that nothing is allocated:
    more pixel corners than the CUDA backward passes number (in int32)."""
    size = 32768

    def image(*channels, dtype=torch.float64):
        return torch.zeros(1, 1, 1, *channels, dtype=dtype, device=device).expand(1, size, size, *channels)

    clip = torch.rand(1, 3, 4, **F64).to(device)
    triangles = torch.tensor([[0, 1, 2]], device=device)
    attributes = torch.rand(1, 3, 2, **F64).to(device)
    ids, bary, color = image(dtype=torch.long), image(3), image(3)
    no_neighbors = torch.full((1, 3), -1, device=device)
    points, eye, light = torch.rand(1, 3, 6, **F64).to(device), torch.zeros(1, 3, **F64).to(device), \
        torch.ones(1, 1, 3, **F64).to(device)
    levels = torch.rand(4 * 4 * 3, **F64).to(device)
    return {"rasterize backward": lambda: _C.rasterize_triangles_backward(clip, triangles, ids, bary, bary),
            "interpolate backward": lambda: _C.interpolate_backward(image(2), attributes, triangles, ids, bary),
            "antialias backward": lambda: _C.antialias_backward(color, color, ids, clip, triangles, no_neighbors,
                                                                image(2), image(2, dtype=torch.int32)),
            "shade_pixels backward": lambda: _C.shade_pixels_backward(image(4), points, color, triangles, ids, bary,
                                                                      eye, light, light, eye, False),
            "texture backward": lambda: _C.texture_sample_backward(image(3), levels, [4, 4], 1, 3, image(2), None,
                                                                   "bilinear", "wrap", True, False)}


@pytest.mark.parametrize("call", list(huge_backward_calls("cpu")))
def test_backward_passes_refuse_more_rows_than_they_number(gpu, call):
    with gpu(), pytest.raises(ValueError, match=r"backward on CUDA sums at most 2\^31 - 1 .*, got \d{10}: "
                                                r"back-propagate fewer or smaller images"):
        huge_backward_calls(gpu.device)[call]()


DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.toml"


@pytest.mark.skipif(HAS_CUDA, reason="checks the refusal where CUDA cannot run (a CPU-only build, or no GPU)")
@pytest.mark.parametrize("command", [["render", "cube"], ["fit", "--config", str(DEMO), "--steps", "2"]])
def test_device_cuda_is_refused_cleanly_where_cuda_cannot_run(tmp_path, command):
    output = tmp_path / ("out.png" if command[0] == "render" else "out")
    result = run_cli(*command, "-o", output, "--device", "cuda")
    assert_one_line_error(result, "--device cuda", "torch sees no CUDA GPU" if _C.with_cuda() else "built without CUDA")
    assert not output.exists()


def fit_on(device: str, folder: Path) -> dict:
    result = run_cli("fit", "--config", DEMO, "--steps", "30", "--frame-every", "10", "-o", folder, "--device", device)
    assert result.exit_code == 0, result.output
    return json.loads((folder / "params.json").read_text())


def test_fit_on_gpu_matches_the_cpu_fit(gpu, tmp_path):
    cpu = fit_on("cpu", tmp_path / "cpu")
    with gpu():
        on_gpu = fit_on(gpu.device, tmp_path / "gpu")
    assert on_gpu["iou_mean"] > 0.7  # 30 of the demo's 600 steps
    assert abs(on_gpu["iou_mean"] - cpu["iou_mean"]) < 0.02
    cpu_mesh, gpu_mesh = load_mesh(tmp_path / "cpu" / "fit.obj"), load_mesh(tmp_path / "gpu" / "fit.obj")
    assert (cpu_mesh.vertices - gpu_mesh.vertices).abs().max() < 0.05
    states = torch.load(tmp_path / "gpu" / "states.pt")  # written on the CPU, loadable anywhere
    assert all(value.device.type == "cpu" for value in states.values() if isinstance(value, torch.Tensor))


# --- Soft rasterizer (SoftRas) ------------------------------------------------------------------

SOFT_SETTINGS = dict(sigma_val=1e-3, gamma_val=5e-2, near_clip=0.3, far_clip=5.0)
SOFT_MODES = [(rgb, alpha, dist) for rgb in ("softmax", "hard") for alpha in ("prod", "sum", "hard")
              for dist in ("euclidean", "barycentric")]


def soft_scene(seed, batch=2, faces=40, channels=3, dtype=torch.float64, spread=0.5):
    """separate_triangles with attributes and a background; with faces in the hundreds every tile
    holds more triangles than one shared-memory round."""
    g = torch.Generator().manual_seed(seed)
    clip, triangles = separate_triangles(g, batch, faces, dtype, spread)
    attributes = torch.rand(batch, clip.shape[1], channels, generator=g, dtype=dtype)
    background = torch.rand(channels, generator=g, dtype=dtype)
    return clip, triangles, attributes, background


def soft_raw_settings(rgb="softmax", alpha="prod", dist="euclidean", cull=False):
    """SOFT_SETTINGS and these modes as the compiled soft ops take them (sigma ... cull_backfaces)."""
    s = SOFT_SETTINGS
    return s["sigma_val"], s["gamma_val"], 1e-4, 1e-3, s["near_clip"], s["far_clip"], rgb, alpha, dist, cull


def soft_raw_forward(device, clip, triangles, attributes, background, rgb, alpha, dist, cull, width, height):
    """image, aux and hard_ids straight from the op, on `device`, returned on the CPU."""
    screen = soft._to_screen(clip.to(device))
    out = _C.soft_rasterize_forward(screen, triangles.to(device), attributes.to(device), background.to(device),
                                    *soft_raw_settings(rgb, alpha, dist, cull), width, height)
    return [t.cpu() for t in out]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rgb,alpha,dist", SOFT_MODES)
@pytest.mark.parametrize("channels", [0, 3])
def test_soft_forward_parity(gpu, dtype, rgb, alpha, dist, channels):
    # Large overlapping triangles (several shared-memory rounds per tile), then small sparse ones.
    for (faces, spread), cull in itertools.product(((300, 0.5), (200, 0.08)), (False, True)):
        clip, triangles, attributes, background = soft_scene(0, faces=faces, channels=channels, dtype=dtype,
                                                             spread=spread)
        cpu = soft_raw_forward("cpu", clip, triangles, attributes, background, rgb, alpha, dist, cull, 97, 61)
        with gpu():
            on_gpu = soft_raw_forward(gpu.device, clip, triangles, attributes, background, rgb, alpha, dist, cull,
                                      97, 61)
        atol = 1e-4 if dtype == torch.float32 else 1e-9
        if rgb == "hard" and channels > 0:
            agree = cpu[2] == on_gpu[2]
            # float32 may break a near-tie differently; float64 must agree everywhere.
            assert agree.all() if dtype == torch.float64 else agree.double().mean() > 0.999
        else:
            agree = torch.ones(cpu[0].shape[:3], dtype=torch.bool)
            assert cpu[2].numel() == 0 and on_gpu[2].numel() == 0
        assert torch.allclose(cpu[0][agree], on_gpu[0][agree], rtol=atol, atol=atol)
        # Alpha and its aggregates do not depend on the hard winner.
        assert torch.allclose(cpu[0][..., -1], on_gpu[0][..., -1], rtol=atol, atol=atol)
        assert torch.allclose(cpu[1][..., 2:], on_gpu[1][..., 2:], rtol=atol, atol=atol)
        if rgb == "softmax" and channels > 0:
            assert torch.allclose(cpu[1][..., :2], on_gpu[1][..., :2], rtol=atol, atol=atol)


@pytest.mark.parametrize("rgb,alpha,dist", SOFT_MODES)
@pytest.mark.parametrize("channels", [0, 3])
def test_soft_backward_parity(gpu, rgb, alpha, dist, channels):
    clip, triangles, attributes, background = soft_scene(1, faces=60, channels=channels)

    def fn(c, t, a, bg):
        return soft.rasterize(c, t, a, 48, 40, aggr_func_rgb=rgb, aggr_func_alpha=alpha, dist_func=dist,
                              background_color=bg, **SOFT_SETTINGS)

    (cpu_image,), cpu_grads = grads_on("cpu", fn, clip, triangles, attributes, background)
    (gpu_image,), gpu_grads = grads_on_gpu(gpu, fn, clip, triangles, attributes, background)
    assert torch.allclose(cpu_image, gpu_image, atol=1e-9)
    assert len(cpu_grads) == len(gpu_grads) == 3
    for c, g in zip(cpu_grads, gpu_grads):
        assert torch.allclose(c, g, rtol=1e-6, atol=1e-8), (c - g).abs().max()


def test_soft_backward_parity_float32_big_mesh(gpu):
    clip, triangles, attributes, background = soft_scene(2, faces=400, dtype=torch.float32, spread=0.2)

    def fn(c, t, a, bg):
        return soft.rasterize(c, t, a, 64, 64, background_color=bg, **SOFT_SETTINGS)

    (cpu_image,), cpu_grads = grads_on("cpu", fn, clip, triangles, attributes, background)
    (gpu_image,), gpu_grads = grads_on_gpu(gpu, fn, clip, triangles, attributes, background)
    assert torch.allclose(cpu_image, gpu_image, atol=1e-4)
    for c, g in zip(cpu_grads, gpu_grads):
        scale = c.abs().max().clamp_min(1.0)
        assert torch.allclose(c, g, rtol=1e-3, atol=1e-3 * float(scale)), (c - g).abs().max()


@pytest.mark.parametrize("rgb", ["softmax", "hard"])
def test_soft_cuda_is_deterministic(gpu, rgb):
    clip, triangles, attributes, background = soft_scene(3, faces=300, dtype=torch.float32)

    def fn(c, t, a, bg):
        return soft.rasterize(c, t, a, 128, 96, aggr_func_rgb=rgb, background_color=bg, **SOFT_SETTINGS)

    (first_image,), first_grads = grads_on_gpu(gpu, fn, clip, triangles, attributes, background)
    for schedule in (1, 2, 3):
        (image,), grads = grads_on_gpu(gpu, fn, clip, triangles, attributes, background, schedule=schedule)
        assert torch.equal(first_image, image)
        for a, b in zip(first_grads, grads):
            assert torch.equal(a, b)


def soft_textured_scene(seed, faces, texture_batch, dtype=torch.float64):
    """soft_scene with per-vertex (u, v, scale[3], offset[3]), uvs beyond [0,1], and a texture."""
    clip, triangles, colours, background = soft_scene(seed, faces=faces, dtype=dtype)
    g = torch.Generator().manual_seed(seed + 100)
    uvs = torch.rand(*clip.shape[:2], 2, generator=g, dtype=dtype) * 2.2 - 0.6
    attributes = torch.cat([uvs, colours + 0.5, colours * 0.2], dim=-1)
    texture = torch.rand(texture_batch, 9, 13, 3, generator=g, dtype=dtype)
    return clip, triangles, attributes, background, texture


@pytest.mark.parametrize("boundary", ["wrap", "clamp"])
@pytest.mark.parametrize("texture_batch", [1, 2])
@pytest.mark.parametrize("rgb,alpha,dist", [("softmax", "prod", "euclidean"), ("softmax", "sum", "barycentric"),
                                            ("hard", "hard", "euclidean")])
def test_soft_textured_parity(gpu, boundary, texture_batch, rgb, alpha, dist):
    inputs = soft_textured_scene(4, 60, texture_batch)

    def fn(c, t, a, bg, tex):
        return soft.rasterize(c, t, a, 48, 40, aggr_func_rgb=rgb, aggr_func_alpha=alpha, dist_func=dist,
                              background_color=bg, texture=tex, texture_boundary=boundary, **SOFT_SETTINGS)

    (cpu_image,), cpu_grads = grads_on("cpu", fn, *inputs)
    (gpu_image,), gpu_grads = grads_on_gpu(gpu, fn, *inputs)
    assert torch.allclose(cpu_image, gpu_image, atol=1e-9)
    assert len(cpu_grads) == len(gpu_grads) == 4
    assert cpu_grads[3].abs().max() > 0
    for c, g in zip(cpu_grads, gpu_grads):
        assert torch.allclose(c, g, rtol=1e-6, atol=1e-8), (c - g).abs().max()


def test_soft_textured_cuda_is_deterministic(gpu):
    inputs = soft_textured_scene(5, 300, 2, dtype=torch.float32)

    def fn(c, t, a, bg, tex):
        return soft.rasterize(c, t, a, 128, 96, background_color=bg, texture=tex, **SOFT_SETTINGS)

    (first_image,), first_grads = grads_on_gpu(gpu, fn, *inputs)
    for schedule in (1, 2, 3):
        (image,), grads = grads_on_gpu(gpu, fn, *inputs, schedule=schedule)
        assert torch.equal(first_image, image)
        for a, b in zip(first_grads, grads):
            assert torch.equal(a, b)


def copies_of_a_view_filling_triangle(count, device):
    """screen [1,3,3] (x/w, y/w, 1/w) of one triangle around the whole view, and `count` copies of it."""
    screen = torch.tensor([[[-3.0, -3.0, 1.0], [9.0, -3.0, 1.0], [-3.0, 9.0, 1.0]]], device=device)
    return screen, torch.tensor([[0, 1, 2]], device=device).expand(count, 3).contiguous()


def test_soft_calls_beyond_the_kernels_32_bit_counts_say_so(gpu):
    # Each copy of the triangle is binned to every tile and walked row by row: one image just past
    # the forward's limit on binned pairs, and the backward's on walk chunks (a third of it: three
    # corner rows a chunk), cannot be sliced, so each call stops after counting and names what was
    # too large.
    limit = gpu.soft_max_binned_pairs
    tiles = (1024 // 16) ** 2
    screen, triangles = copies_of_a_view_filling_triangle(limit // tiles + 1, gpu.device)
    no_colors, no_background = torch.zeros(1, 3, 0, device=gpu.device), torch.zeros(0, device=gpu.device)
    with gpu(), pytest.raises(ValueError, match=rf"on CUDA bins at most {limit} \(triangle, 16x16 tile\) pairs an "
                                                rf"image, got {triangles.shape[0] * tiles}: render a smaller"):
        _C.soft_rasterize_forward(screen, triangles, no_colors, no_background, *soft_raw_settings(), 1024, 1024)

    rows = 256  # and as many pixels a row: one walk chunk a row
    screen, triangles = copies_of_a_view_filling_triangle(limit // 3 // rows + 1, gpu.device)
    image = torch.zeros(1, rows, rows, 1, device=gpu.device)
    aux = torch.zeros(1, rows, rows, 4, device=gpu.device)
    no_ids = torch.zeros(0, dtype=torch.long, device=gpu.device)
    with gpu(), pytest.raises(ValueError, match=rf"backward on CUDA walks at most {limit // 3} walk chunks .* an image, "
                                                rf"got {triangles.shape[0] * rows}: back-propagate a smaller"):
        _C.soft_rasterize_backward(screen, triangles, no_colors, no_background, image, aux, no_ids,
                                   torch.ones_like(image), *soft_raw_settings())


def view_filling_batch(seed, batch, count, texture_batch):
    """screen [B,3·count,3] of `count` triangles around the whole view per image, each with its own
    corners and depths; triangles [count,3]; attributes [B,3·count,A] (colours, or textured (u, v,
    scale[3], offset[3])); background [3]; texture [texture_batch,9,13,3] or None; float64."""
    g = torch.Generator().manual_seed(seed)
    corners = torch.tensor([[-3.0, -3.0], [9.0, -3.0], [-3.0, 9.0]], dtype=torch.float64).repeat(count, 1)
    xy = corners + torch.rand(batch, 3 * count, 2, generator=g, dtype=torch.float64)
    screen = torch.cat([xy, 0.4 + 0.6 * torch.rand(batch, 3 * count, 1, generator=g, dtype=torch.float64)], -1)
    colours = torch.rand(batch, 3 * count, 3, generator=g, dtype=torch.float64)
    background = torch.rand(3, generator=g, dtype=torch.float64)
    if texture_batch is None:
        return screen, torch.arange(3 * count).view(count, 3), colours, background, None
    uvs = torch.rand(batch, 3 * count, 2, generator=g, dtype=torch.float64) * 2.2 - 0.6
    attributes = torch.cat([uvs, colours + 0.5, colours * 0.2], dim=-1)
    texture = torch.rand(texture_batch, 9, 13, 3, generator=g, dtype=torch.float64)
    return screen, torch.arange(3 * count).view(count, 3), attributes, background, texture


def soft_raw_op(direction, screen, triangles, attributes, background, texture, *rest, settings):
    """_C's soft forward (rest: width, height) or backward (rest: image, aux, hard_ids, grad_image),
    textured when texture is not None."""
    textured = () if texture is None else (texture, "wrap")
    op = getattr(_C, f"soft_rasterize{'' if texture is None else '_textured'}_{direction}")
    if direction == "forward":
        return op(screen, triangles, attributes, background, *textured, *settings, *rest)
    return op(screen, triangles, attributes, background, *textured, *rest, *settings)


# Five images split into two and three, the three again into one and two: two images' counts fit
# in the kernels' limit, three do not. A texture per image, one shared, and none (hard ids).
SLICED_BATCH = 5
SLICED_BATCH_MODES = [("softmax", "prod", SLICED_BATCH), ("softmax", "sum", 1), ("hard", "hard", None)]


def sliced_batch_scene(limit, per_triangle, texture_batch):
    """view_filling_batch of SLICED_BATCH images with enough triangles, each counting per_triangle,
    that two images fit in limit and three do not; and image b's inputs."""
    if limit > 1 << 20:
        pytest.skip("passing the kernels' 2^31 - 1 limit takes some 10^9 triangles on a GPU; the emulation "
                    "lowers the limit to reach it")
    count = limit * 9 // 20 // per_triangle
    assert 2 * count * per_triangle <= limit < 3 * count * per_triangle
    scene = view_filling_batch(9, SLICED_BATCH, count, texture_batch)

    def image_inputs(b):
        screen, triangles, attributes, background, texture = scene
        if texture is not None and texture_batch > 1:
            texture = texture[b:b + 1]
        return screen[b:b + 1], triangles, attributes[b:b + 1], background, texture

    return scene, image_inputs


@pytest.mark.parametrize("rgb,alpha,texture_batch", SLICED_BATCH_MODES)
def test_soft_forward_renders_a_batch_beyond_its_32_bit_count_in_slices(gpu, rgb, alpha, texture_batch):
    size = 17  # each triangle is binned to all four tiles, most of whose threads are off the image
    scene, image_inputs = sliced_batch_scene(gpu.soft_max_binned_pairs, 4, texture_batch)
    settings = soft_raw_settings(rgb, alpha)
    forward = lambda *inputs: soft_raw_op("forward", *inputs, size, size, settings=settings)
    with gpu():
        outputs = forward(*scene)
        per_image = [forward(*image_inputs(b)) for b in range(SLICED_BATCH)]
    assert (rgb == "hard") == (outputs[2].numel() > 0)
    for batch_output, image_outputs, cpu_output in zip(outputs, zip(*per_image), forward(*scene)):
        if batch_output.numel():
            assert torch.equal(batch_output, torch.cat(image_outputs))
        assert torch.allclose(batch_output.double(), cpu_output.double(), atol=1e-9)


@pytest.mark.parametrize("rgb,alpha,texture_batch", SLICED_BATCH_MODES)
def test_soft_backward_takes_a_batch_beyond_its_32_bit_count_in_slices(gpu, rgb, alpha, texture_batch):
    size = 4  # each triangle's box is the image: one walk chunk of its 16 pixels
    scene, image_inputs = sliced_batch_scene(gpu.soft_max_binned_pairs // 3, 1, texture_batch)
    settings = soft_raw_settings(rgb, alpha)
    image, aux, hard_ids = soft_raw_op("forward", *scene, size, size, settings=settings)
    grad_image = torch.randn(image.shape, generator=torch.Generator().manual_seed(3), dtype=image.dtype)
    saved = lambda b: [t[b:b + 1] if t.numel() else t for t in (image, aux, hard_ids, grad_image)]
    backward = lambda inputs, saved: soft_raw_op("backward", *inputs, *saved, settings=settings)
    with gpu():
        grads = backward(scene, (image, aux, hard_ids, grad_image))
        per_image = [backward(image_inputs(b), saved(b)) for b in range(SLICED_BATCH)]
    cpu_grads = backward(scene, (image, aux, hard_ids, grad_image))
    assert len(grads) == (3 if texture_batch is None else 4)
    for index, (grad, image_grads, cpu_grad) in enumerate(zip(grads, zip(*per_image), cpu_grads)):
        background_hidden = index == 2 and rgb == "hard"  # under view-filling triangles
        assert background_hidden or cpu_grad.abs().max() > 0
        assert torch.allclose(grad, cpu_grad, rtol=1e-9, atol=1e-12), (index, (grad - cpu_grad).abs().max())
        summed_over_images = index == 2 or (index == 3 and texture_batch == 1)  # the background, a shared texture
        if summed_over_images:
            assert torch.allclose(grad, sum(image_grads), rtol=1e-12, atol=1e-14)
        else:
            assert torch.equal(grad, torch.cat(image_grads))


def test_soft_screen_filling_triangles_are_walked_in_chunks(gpu):
    # Each triangle's blurred box is wider than a walk chunk and 40 rows tall, so its backward walk
    # is split over 40 threads, whose corner sums and texture records must add up to the CPU's.
    clip, triangles = screen_filling_quad()
    g = torch.Generator().manual_seed(6)
    uvs = torch.rand(2, 4, 2, generator=g, dtype=torch.float64) * 2.2 - 0.6
    attributes = torch.cat([uvs, torch.rand(2, 4, 6, generator=g, dtype=torch.float64)], dim=-1)
    inputs = (clip, triangles, attributes, torch.rand(3, generator=g, dtype=torch.float64),
              torch.rand(1, 9, 13, 3, generator=g, dtype=torch.float64))

    def fn(c, t, a, bg, tex):
        return soft.rasterize(c, t, a, 300, 40, background_color=bg, texture=tex, **SOFT_SETTINGS)

    (cpu_image,), cpu_grads = grads_on("cpu", fn, *inputs)
    (gpu_image,), gpu_grads = grads_on_gpu(gpu, fn, *inputs)
    assert torch.allclose(cpu_image, gpu_image, atol=1e-9)
    assert all(c.abs().max() > 0 for c in cpu_grads)
    for c, g in zip(cpu_grads, gpu_grads):
        assert torch.allclose(c, g, rtol=1e-6, atol=1e-8), (c - g).abs().max()
    assert all(torch.equal(g, r) for g, r in zip(gpu_grads, grads_on_gpu(gpu, fn, *inputs, schedule=5)[1]))
