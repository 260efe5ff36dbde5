"""CUDA against CPU parity for every op, forward and backward (skipped without a GPU), and the
CPU-only build's refusal paths."""
import json
from pathlib import Path

import pytest
import torch

from cli_helpers import assert_one_line_error, run_cli
from conftest import separate_triangles
from diffrender import barycentric, shading
from diffrender._ext import _C
from diffrender.mesh import load_mesh

HAS_CUDA = torch.cuda.is_available() and _C.with_cuda()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs an NVIDIA GPU and a CUDA build of diffrender "
                                                     "(DIFFRENDER_CUDA=1 pip install ...)")


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


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rasterize_parity(dtype):
    clip, triangles = random_clip(0)
    clip = clip.to(dtype)
    fn = lambda c, t: barycentric.rasterize_triangles(c, t, 97, 61)
    (cpu_ids, cpu_bary, cpu_z), (cpu_grad,) = grads_on("cpu", fn, clip, triangles)
    (gpu_ids, gpu_bary, gpu_z), (gpu_grad,) = grads_on("cuda", fn, clip, triangles)
    agree = cpu_ids == gpu_ids
    assert agree.float().mean() > 0.999
    assert torch.allclose(cpu_bary[agree], gpu_bary[agree], atol=1e-5)
    assert torch.allclose(cpu_z[agree], gpu_z[agree], atol=1e-5)
    assert torch.allclose(cpu_grad, gpu_grad, rtol=1e-3, atol=1e-3)


@pytest.mark.cuda
@needs_cuda
def test_cuda_backward_is_deterministic():
    clip, triangles = random_clip(1)
    fn = lambda c, t: barycentric.rasterize_triangles(c, t, 128, 128)[1]
    first = grads_on("cuda", fn, clip, triangles)[1][0]
    for _ in range(3):
        assert torch.equal(first, grads_on("cuda", fn, clip, triangles)[1][0])


@pytest.mark.cuda
@needs_cuda
def test_interpolate_and_phong_parity():
    clip, triangles = random_clip(2, batch=1, vertices=50, faces=60)
    clip = clip.double()
    ids, bary, _ = barycentric.rasterize_triangles(clip, triangles, 40, 30)
    attributes = torch.randn(1, 50, 5, dtype=torch.float64)
    fn = lambda a, b: barycentric.interpolate(a, triangles.to(a.device), ids.to(a.device), b)
    cpu_out, cpu_grads = grads_on("cpu", fn, attributes, bary)
    gpu_out, gpu_grads = grads_on("cuda", fn, attributes, bary)
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
    gpu_out, gpu_grads = grads_on("cuda", shading.phong, *inputs)
    assert torch.allclose(cpu_out[0], gpu_out[0], atol=1e-12)
    for c, g in zip(cpu_grads, gpu_grads):
        assert torch.allclose(c, g, atol=1e-10)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("per_pixel_diffuse", [False, True])
def test_shade_pixels_parity_and_determinism(per_pixel_diffuse):
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
    gpu_out, gpu_grads = grads_on("cuda", fn, *inputs)
    again_out, again_grads = grads_on("cuda", fn, *inputs)
    assert torch.allclose(cpu_out[0], gpu_out[0], atol=1e-12)
    for c, gpu, again in zip(cpu_grads, gpu_grads, again_grads):
        assert torch.allclose(c, gpu, atol=1e-10)
        assert torch.equal(gpu, again)


DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.toml"


@pytest.mark.skipif(HAS_CUDA, reason="checks the CPU-only build's refusal")
@pytest.mark.parametrize("command", [["render", "cube"], ["fit", "--config", str(DEMO), "--steps", "2"]])
def test_cpu_only_build_refuses_cuda_cleanly(tmp_path, command):
    assert _C.with_cuda() is False or not torch.cuda.is_available()
    result = run_cli(*command, "-o", tmp_path / "out", "--device", "cuda")
    assert_one_line_error(result, "--device cuda")
    assert not (tmp_path / "out").exists()


def fit_on(device: str, folder: Path) -> dict:
    result = run_cli("fit", "--config", DEMO, "--steps", "30", "--frame-every", "10", "-o", folder, "--device", device)
    assert result.exit_code == 0, result.output
    return json.loads((folder / "params.json").read_text())


@pytest.mark.cuda
@needs_cuda
def test_fit_on_cuda_matches_the_cpu_fit(tmp_path):
    cpu, gpu = fit_on("cpu", tmp_path / "cpu"), fit_on("cuda", tmp_path / "cuda")
    assert gpu["iou_mean"] > 0.8
    assert abs(gpu["iou_mean"] - cpu["iou_mean"]) < 0.02
    cpu_mesh, gpu_mesh = load_mesh(tmp_path / "cpu" / "fit.obj"), load_mesh(tmp_path / "cuda" / "fit.obj")
    assert (cpu_mesh.vertices - gpu_mesh.vertices).abs().max() < 0.05
    states = torch.load(tmp_path / "cuda" / "states.pt")  # written on the CPU, loadable anywhere
    assert all(value.device.type == "cpu" for value in states.values() if isinstance(value, torch.Tensor))


# --- Soft rasterizer (SoftRas) ------------------------------------------------------------------

import itertools  # noqa: E402

from diffrender import soft  # noqa: E402

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


def soft_raw_forward(device, clip, triangles, attributes, background, rgb, alpha, dist, cull, width, height):
    """image, aux and hard_ids straight from the op, on `device`, returned on the CPU."""
    s = SOFT_SETTINGS
    screen = soft._to_screen(clip.to(device))
    out = _C.soft_rasterize_forward(screen, triangles.to(device), attributes.to(device), background.to(device),
                                    s["sigma_val"], s["gamma_val"], 1e-4, 1e-3, s["near_clip"], s["far_clip"],
                                    rgb, alpha, dist, cull, width, height)
    return [t.cpu() for t in out]


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rgb,alpha,dist", SOFT_MODES)
@pytest.mark.parametrize("channels", [0, 3])
def test_soft_forward_parity(dtype, rgb, alpha, dist, channels):
    # Large overlapping triangles (several shared-memory rounds per tile), then small sparse ones.
    for (faces, spread), cull in itertools.product(((300, 0.5), (200, 0.08)), (False, True)):
        clip, triangles, attributes, background = soft_scene(0, faces=faces, channels=channels, dtype=dtype,
                                                             spread=spread)
        cpu = soft_raw_forward("cpu", clip, triangles, attributes, background, rgb, alpha, dist, cull, 97, 61)
        gpu = soft_raw_forward("cuda", clip, triangles, attributes, background, rgb, alpha, dist, cull, 97, 61)
        atol = 1e-4 if dtype == torch.float32 else 1e-9
        if rgb == "hard" and channels > 0:
            agree = cpu[2] == gpu[2]
            assert agree.float().mean() > (0.999 if dtype == torch.float32 else 1.0 - 1e-12)
        else:
            agree = torch.ones(cpu[0].shape[:3], dtype=torch.bool)
            assert cpu[2].numel() == 0 and gpu[2].numel() == 0
        assert torch.allclose(cpu[0][agree], gpu[0][agree], rtol=atol, atol=atol)
        # Alpha and its aggregates do not depend on the hard winner.
        assert torch.allclose(cpu[0][..., -1], gpu[0][..., -1], rtol=atol, atol=atol)
        assert torch.allclose(cpu[1][..., 2:], gpu[1][..., 2:], rtol=atol, atol=atol)
        if rgb == "softmax" and channels > 0:
            assert torch.allclose(cpu[1][..., :2], gpu[1][..., :2], rtol=atol, atol=atol)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("rgb,alpha,dist", SOFT_MODES)
@pytest.mark.parametrize("channels", [0, 3])
def test_soft_backward_parity(rgb, alpha, dist, channels):
    clip, triangles, attributes, background = soft_scene(1, faces=60, channels=channels)

    def fn(c, t, a, bg):
        return soft.rasterize(c, t, a, 48, 40, aggr_func_rgb=rgb, aggr_func_alpha=alpha, dist_func=dist,
                              background_color=bg, **SOFT_SETTINGS)

    (cpu_image,), cpu_grads = grads_on("cpu", fn, clip, triangles, attributes, background)
    (gpu_image,), gpu_grads = grads_on("cuda", fn, clip, triangles, attributes, background)
    assert torch.allclose(cpu_image, gpu_image, atol=1e-9)
    assert len(cpu_grads) == len(gpu_grads) == 3
    for c, g in zip(cpu_grads, gpu_grads):
        assert torch.allclose(c, g, rtol=1e-6, atol=1e-8), (c - g).abs().max()


@pytest.mark.cuda
@needs_cuda
def test_soft_backward_parity_float32_big_mesh():
    clip, triangles, attributes, background = soft_scene(2, faces=400, dtype=torch.float32, spread=0.2)

    def fn(c, t, a, bg):
        return soft.rasterize(c, t, a, 64, 64, background_color=bg, **SOFT_SETTINGS)

    (cpu_image,), cpu_grads = grads_on("cpu", fn, clip, triangles, attributes, background)
    (gpu_image,), gpu_grads = grads_on("cuda", fn, clip, triangles, attributes, background)
    assert torch.allclose(cpu_image, gpu_image, atol=1e-4)
    for c, g in zip(cpu_grads, gpu_grads):
        scale = c.abs().max().clamp_min(1.0)
        assert torch.allclose(c, g, rtol=1e-3, atol=1e-3 * float(scale)), (c - g).abs().max()


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("rgb", ["softmax", "hard"])
def test_soft_cuda_is_deterministic(rgb):
    clip, triangles, attributes, background = soft_scene(3, faces=300, dtype=torch.float32)

    def fn(c, t, a, bg):
        return soft.rasterize(c, t, a, 128, 96, aggr_func_rgb=rgb, background_color=bg, **SOFT_SETTINGS)

    (first_image,), first_grads = grads_on("cuda", fn, clip, triangles, attributes, background)
    for _ in range(3):
        (image,), grads = grads_on("cuda", fn, clip, triangles, attributes, background)
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


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("boundary", ["wrap", "clamp"])
@pytest.mark.parametrize("texture_batch", [1, 2])
@pytest.mark.parametrize("rgb,alpha,dist", [("softmax", "prod", "euclidean"), ("softmax", "sum", "barycentric"),
                                            ("hard", "hard", "euclidean")])
def test_soft_textured_parity(boundary, texture_batch, rgb, alpha, dist):
    inputs = soft_textured_scene(4, 60, texture_batch)

    def fn(c, t, a, bg, tex):
        return soft.rasterize(c, t, a, 48, 40, aggr_func_rgb=rgb, aggr_func_alpha=alpha, dist_func=dist,
                              background_color=bg, texture=tex, texture_boundary=boundary, **SOFT_SETTINGS)

    (cpu_image,), cpu_grads = grads_on("cpu", fn, *inputs)
    (gpu_image,), gpu_grads = grads_on("cuda", fn, *inputs)
    assert torch.allclose(cpu_image, gpu_image, atol=1e-9)
    assert len(cpu_grads) == len(gpu_grads) == 4
    assert cpu_grads[3].abs().max() > 0
    for c, g in zip(cpu_grads, gpu_grads):
        assert torch.allclose(c, g, rtol=1e-6, atol=1e-8), (c - g).abs().max()


@pytest.mark.cuda
@needs_cuda
def test_soft_textured_cuda_is_deterministic():
    inputs = soft_textured_scene(5, 300, 2, dtype=torch.float32)

    def fn(c, t, a, bg, tex):
        return soft.rasterize(c, t, a, 128, 96, background_color=bg, texture=tex, **SOFT_SETTINGS)

    (first_image,), first_grads = grads_on("cuda", fn, *inputs)
    for _ in range(3):
        (image,), grads = grads_on("cuda", fn, *inputs)
        assert torch.equal(first_image, image)
        for a, b in zip(first_grads, grads):
            assert torch.equal(a, b)
