"""The benchmarks' baselines compute what diffrender computes, so they compare equal work: the
GPU benchmark's pure-PyTorch versions (checked on the CPU here) and, where it is installed, the
optional llvmpipe reference."""
import pytest
import torch

from diffrender import barycentric, camera, shapes, soft
from diffrender.mesh import vertex_normals

from torch_baselines import interpolate, rasterize_fragments, soft_silhouette, soft_silhouette_backward


def teapot_clip(size=1.0):
    vertices, faces = shapes.teapot()
    cam = camera.frame_vertices(vertices, 30.0, 20.0)
    return camera.transform_homogeneous(cam.matrices(size), vertices[None]), vertices, faces


def test_fragment_rasterizer_matches_rasterize_triangles():
    clip, vertices, faces = teapot_clip()
    clip = torch.cat([clip, clip * torch.tensor([1.0, -1.0, 1.0, 1.0])]).double()  # batch 2
    ids, bary, _ = barycentric.rasterize_triangles(clip, faces, 96, 80)
    ref_ids, ref_bary = rasterize_fragments(clip, faces, 96, 80)
    assert (bary.sum(-1) > 0.5).sum() > 2000
    assert torch.equal(ids, ref_ids)
    assert torch.allclose(bary, ref_bary, atol=1e-9)
    normals = vertex_normals(vertices[None], faces).expand(2, -1, -1).double()
    assert torch.allclose(interpolate(normals, faces, ids, bary), barycentric.interpolate(normals, faces, ids, bary),
                          atol=1e-12)


def test_soft_silhouette_matches_the_soft_rasterizer():
    clip, _, faces = teapot_clip()
    clip = clip.double()
    sigma = 1e-3
    leaf = clip.clone().requires_grad_(True)
    alpha = soft.rasterize(leaf, faces, None, 48, 40, sigma_val=sigma, dist_eps=1e-12, near_clip=0.01,
                           far_clip=100.0)[..., -1]
    ours = soft_silhouette(clip, faces, 48, 40, sigma, pixels_per_chunk=500)
    assert alpha.max() > 0.99 and (alpha > 0.5).sum() > 200
    assert torch.allclose(ours, alpha.detach(), atol=1e-6)
    weights = torch.randn(alpha.shape, generator=torch.Generator().manual_seed(0), dtype=alpha.dtype)
    grad, = torch.autograd.grad((alpha * weights).sum(), leaf)
    ref = soft_silhouette_backward(clip, faces, 48, 40, sigma, weights, pixels_per_chunk=500)
    assert torch.allclose(ref, grad, rtol=1e-4, atol=1e-6 * grad.abs().max())


def test_llvmpipe_draws_the_same_triangles():
    """An independent rasterizer (Mesa's OpenGL), where moderngl and EGL are installed: the same
    covered pixels, and the same triangle on all but edge pixels (GL's fill rule differs there)."""
    pytest.importorskip("moderngl", reason="optional: pip install moderngl (and Mesa's EGL) for this cross-check")
    from llvmpipe import LlvmpipeRasterizer, available

    reason = available()
    if reason is not None:
        pytest.skip(f"no headless llvmpipe context: {reason}")
    clip, _, faces = teapot_clip()
    ids, _ = LlvmpipeRasterizer().prepare(clip[0], faces, 160, 128)()
    ours, bary, _ = barycentric.rasterize_triangles(clip, faces, 160, 128)
    covered = (bary[0].sum(-1) > 0.5).numpy()
    assert covered.sum() > 3000
    assert ((ids >= 0) == covered).all()
    assert (ids[covered] == ours[0].numpy()[covered]).mean() > 0.995
