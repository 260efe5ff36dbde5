"""Shared test helpers: the reference data in ../shared/reference (skipped with a reason when
absent), the `gpu` fixture, gradient leaves, relative closeness, and the one-versus-two-threads
determinism check."""
import sys
from pathlib import Path
from typing import Callable, List, Sequence

import pytest
import torch

from diffrender import camera, shapes
from diffrender._ext import _C
from gpu_backends import GPU_PARAMS, backend

# The tests check the benchmarks' baselines, and both read the reference data from one place.
sys.path.insert(0, str(Path(__file__).resolve().parent / "benchmarks"))
from common import REFERENCE  # noqa: E402


@pytest.fixture(params=GPU_PARAMS)
def gpu(request):
    """Where the CUDA kernels run: a real GPU, or the CUDA emulation on the CPU (gpu_backends.py)."""
    return backend(request.param)


def reference_file(*parts: str) -> Path:
    """Path of a reference file; skips the calling test when the shared folder is missing."""
    path = REFERENCE.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference data not found at {path} (expected ../shared/reference beside the repo)")
    return path


def separate_triangles(generator: torch.Generator, batch: int, num_triangles: int, dtype: torch.dtype,
                       spread: float = 0.4):
    """(clip [B,3F,4], triangles [F,3]): triangles with separate vertices, of varied size, depth
    (perspective w in [0.5, 2.5]) and winding, overlapping each other and the image border."""
    num_vertices = 3 * num_triangles
    w = torch.rand(batch, num_vertices, 1, generator=generator, dtype=dtype) * 2.0 + 0.5
    centres = torch.rand(batch, num_triangles, 1, 2, generator=generator, dtype=dtype) * 2.2 - 1.1
    offsets = torch.randn(batch, num_triangles, 3, 2, generator=generator, dtype=dtype) * spread
    ndc = (centres + offsets).reshape(batch, num_vertices, 2)
    clip = torch.cat([ndc * w, torch.rand(batch, num_vertices, 1, generator=generator, dtype=dtype) * w, w], dim=-1)
    return clip, torch.arange(num_vertices).view(num_triangles, 3)


def with_grads(*tensors: torch.Tensor) -> List[torch.Tensor]:
    """Fresh leaf copies of the tensors that require gradients."""
    return [t.detach().clone().requires_grad_(True) for t in tensors]


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5, what: str = "") -> None:
    """|actual - expected| <= rtol · max|expected| (+ a tiny floor), element-wise."""
    scale = expected.abs().max().clamp_min(1e-12)
    err = (actual - expected).abs().max()
    assert err <= rtol * scale, f"{what}: max error {err:.3e} vs scale {scale:.3e}"


def same_bits_for_one_and_two_threads(run: Callable[[], Sequence[torch.Tensor]]) -> List[torch.Tensor]:
    """Calls run() with 1 and then 2 torch threads and asserts that every tensor it returns is
    bit-identical between the two; also that 2 OpenMP threads really ran (an extension built
    without -fopenmp silently runs on one). Returns the 1-thread results, detached."""
    previous = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            assert _C.num_threads_used(1000) == threads, "at::parallel_for did not run on that many threads"
            results.append([t.detach() for t in run()])
    finally:
        torch.set_num_threads(previous)
    for one, two in zip(*results):
        assert torch.equal(one, two)
    return results[0]


def teapot_clip_with_bad_vertices(value: float, coordinate: int):
    """The teapot's clip vertices with every 7th vertex's coordinate set to ``value``, its
    triangles, and those triangles with each one touching a bad vertex made degenerate."""
    vertices, faces = shapes.teapot()
    cam = camera.Camera(torch.tensor([[0.0, 1.0, 3.0]]), torch.zeros(1, 3), torch.tensor([[0.0, 1.0, 0.0]]))
    clip = camera.transform_homogeneous(cam.matrices(1.0), vertices[None]).contiguous()
    bad = torch.arange(0, vertices.shape[0], 7)
    clip[0, bad, coordinate] = value
    touching = torch.isin(faces, bad).any(dim=1)
    good_vertex = int(faces[~torch.isin(faces, bad)][0])
    degenerate = torch.where(touching[:, None], torch.full_like(faces, good_vertex), faces)
    return clip, faces, degenerate, touching
