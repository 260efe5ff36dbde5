"""CUDA against CPU parity for every op, forward and backward (skipped without a GPU), and the
CPU-only build's refusal paths."""
import pytest
import torch

from cli_helpers import assert_one_line_error, run_cli
from diffrender import barycentric, shading
from diffrender._ext import _C

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


@pytest.mark.skipif(HAS_CUDA, reason="checks the CPU-only build's refusal")
def test_cpu_only_build_refuses_cuda_cleanly(tmp_path):
    assert _C.with_cuda() is False or not torch.cuda.is_available()
    result = run_cli("render", "cube", "-o", tmp_path / "out.png", "--device", "cuda")
    assert_one_line_error(result, "--device cuda")
    assert not (tmp_path / "out.png").exists()
