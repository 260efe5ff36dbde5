"""Pure-PyTorch versions of the GPU benchmark's work, the baselines diffrender's CUDA kernels are
timed against. They run on any device; tests/test_torch_baselines.py checks them against
diffrender on the CPU, so the comparison is between equal results.

- :func:`rasterize_fragments`: the barycentric rasterizer without a per-pixel loop over triangles:
  one fragment per (triangle, pixel centre in its box), a z-buffer by ``scatter_reduce``. Memory is
  O(fragments), so it scales to a 1M-triangle mesh. Triangles must lie in front of the camera.
- :func:`soft_silhouette`: SoftRas silhouettes (euclidean distance, alpha = 1 - Π(1 - D)) with
  every (pixel, triangle) pair, in chunks of pixels so that memory stays bounded.
"""
from __future__ import annotations

import torch
from torch import Tensor


def rasterize_fragments(clip: Tensor, triangles: Tensor, width: int, height: int):
    """(ids [B,H,W] int64, barycentrics [B,H,W,3]) with rasterize_triangles' rules: pixel centres,
    edges inclusive, near/far by the z test, equal depths to the later triangle."""
    batch, num_faces = clip.shape[0], triangles.shape[0]
    corners = clip[:, triangles]  # [B,F,3,4]
    x, y, z, w = corners.unbind(-1)
    # M's columns are the corners' (x, y, w); adj(M)'s rows, c1×c2, c2×c0, c0×c1, are the edge
    # functions (b_k / w_p) over the pixel's (x, y, 1).
    columns = torch.stack([x, y, w], dim=-1)  # [B,F,3,3]
    edges = torch.stack([torch.linalg.cross(columns[..., (k + 1) % 3, :], columns[..., (k + 2) % 3, :], dim=-1)
                         for k in range(3)], dim=-2)
    det = (columns[..., 0, :] * edges[..., 0, :]).sum(-1)
    edges = edges * torch.sign(det)[..., None, None]
    ndc_x, ndc_y = x / w, y / w
    margin = 0.01
    x0 = torch.ceil((ndc_x.amin(-1) + 1) * width / 2 - 0.5 - margin).clamp(0, width).long()
    x1 = torch.floor((ndc_x.amax(-1) + 1) * width / 2 - 0.5 + margin).clamp(-1, width - 1).long()
    y0 = torch.ceil((ndc_y.amin(-1) + 1) * height / 2 - 0.5 - margin).clamp(0, height).long()
    y1 = torch.floor((ndc_y.amax(-1) + 1) * height / 2 - 0.5 + margin).clamp(-1, height - 1).long()
    box_width = (x1 - x0 + 1).clamp_min(0)
    usable = (w > 0).all(-1) & (det != 0)
    counts = (box_width * (y1 - y0 + 1).clamp_min(0) * usable).flatten()  # [B*F]
    owner = torch.repeat_interleave(torch.arange(counts.numel(), device=clip.device), counts)
    local = torch.arange(owner.numel(), device=clip.device) - (torch.cumsum(counts, 0) - counts)[owner]
    px = x0.flatten()[owner] + local % box_width.flatten()[owner]
    py = y0.flatten()[owner] + local // box_width.flatten()[owner]
    point = torch.stack([2 * (px.to(clip.dtype) + 0.5) / width - 1, 2 * (py.to(clip.dtype) + 0.5) / height - 1,
                         torch.ones(px.shape, dtype=clip.dtype, device=clip.device)], -1)
    e = (edges.reshape(-1, 3, 3)[owner] * point[:, None, :]).sum(-1)  # [N,3]
    inside = (e >= 0).all(-1) & (e > 0).any(-1)
    bary = e / e.sum(-1, keepdim=True)
    depth = (bary * z.reshape(-1, 3)[owner]).sum(-1) / (bary * w.reshape(-1, 3)[owner]).sum(-1)
    keep = inside & (depth >= -1) & (depth <= 1)
    owner, px, py, bary, depth = owner[keep], px[keep], py[keep], bary[keep], depth[keep]
    image = owner // num_faces
    pixel = (image * height + py) * width + px
    pixels = batch * height * width
    nearest = torch.full((pixels,), float("inf"), dtype=depth.dtype, device=clip.device)
    nearest = nearest.scatter_reduce(0, pixel, depth, "amin")
    front = depth == nearest[pixel]
    # Among the nearest fragments of a pixel, the last triangle wins: the largest fragment index.
    order = torch.arange(owner.numel(), device=clip.device)
    winner = torch.full((pixels,), -1, dtype=torch.long, device=clip.device)
    winner = winner.scatter_reduce(0, pixel[front], order[front], "amax")
    covered = winner >= 0
    chosen = winner.clamp_min(0)
    ids = torch.where(covered, owner[chosen] % num_faces if owner.numel() else winner, 0)
    barycentrics = torch.where(covered[:, None], bary[chosen] if owner.numel() else 0.0, 0.0)
    return ids.view(batch, height, width), barycentrics.to(clip.dtype).view(batch, height, width, 3)


def interpolate(attributes: Tensor, triangles: Tensor, ids: Tensor, barycentrics: Tensor) -> Tensor:
    """[B,H,W,C]: Σ_k b_k · attributes[triangles[id, k]] (zero where nothing is covered)."""
    batch, channels = attributes.shape[0], attributes.shape[-1]
    corners = triangles[ids.flatten(1)]  # [B,P,3]
    values = torch.gather(attributes, 1, corners.flatten(1)[..., None].expand(-1, -1, channels))
    values = values.view(batch, -1, 3, channels)
    return (barycentrics.flatten(1, 2)[..., None] * values).sum(-2).view(*ids.shape, channels)


def soft_silhouette(clip: Tensor, triangles: Tensor, width: int, height: int, sigma: float,
                    pixels_per_chunk: int = 8192) -> Tensor:
    """[B,H,W] SoftRas alpha, 1 - Π_f (1 - sigmoid(±d²(p, f) / σ)), with d the distance to the
    triangle's nearest edge (+ inside). Row 0 is NDC y = -1. Differentiable in ``clip``;
    back-propagate a chunk at a time with :func:`soft_silhouette_backward` to bound memory."""
    chunks = _soft_chunks(clip, triangles, width, height, sigma, pixels_per_chunk)
    return torch.cat(list(chunks), dim=1).view(clip.shape[0], height, width)


def soft_silhouette_backward(clip: Tensor, triangles: Tensor, width: int, height: int, sigma: float,
                             grad_alpha: Tensor, pixels_per_chunk: int = 8192) -> Tensor:
    """d(Σ grad_alpha · alpha)/d(clip) [B,V,4], one chunk of pixels in memory at a time."""
    leaf = clip.detach().requires_grad_(True)
    flat = grad_alpha.reshape(clip.shape[0], -1)
    start = 0
    for chunk in _soft_chunks(leaf, triangles, width, height, sigma, pixels_per_chunk):
        # The per-triangle prelude is shared by every chunk: keep its graph until the last one.
        (chunk * flat[:, start:start + chunk.shape[1]]).sum().backward(retain_graph=True)
        start += chunk.shape[1]
    return leaf.grad


def _soft_chunks(clip, triangles, width, height, sigma, pixels_per_chunk):
    # As in diffrender.soft, distances are measured with the shorter image side spanning [-1, 1].
    scale_x, scale_y = width / min(width, height), height / min(width, height)
    corners = clip[:, triangles]  # [B,F,3,4]
    vx = (corners[..., 0] / corners[..., 3])[:, None] * scale_x
    vy = (corners[..., 1] / corners[..., 3])[:, None] * scale_y
    xs = (2 * (torch.arange(width, device=clip.device, dtype=clip.dtype) + 0.5) / width - 1) * scale_x
    ys = (2 * (torch.arange(height, device=clip.device, dtype=clip.dtype) + 0.5) / height - 1) * scale_y
    px_all, py_all = xs.repeat(height), ys.repeat_interleave(width)
    area = ((vx[..., 1] - vx[..., 0]) * (vy[..., 2] - vy[..., 0])
            - (vy[..., 1] - vy[..., 0]) * (vx[..., 2] - vx[..., 0]))
    orient = torch.where(area < 0, -1.0, 1.0).to(clip.dtype)[..., None]
    ex, ey = vx.roll(-1, -1) - vx, vy.roll(-1, -1) - vy  # edge k: corner k → k+1
    length2 = (ex * ex + ey * ey).clamp_min(1e-20)
    for start in range(0, px_all.numel(), pixels_per_chunk):
        px = px_all[start:start + pixels_per_chunk].view(1, -1, 1, 1)
        py = py_all[start:start + pixels_per_chunk].view(1, -1, 1, 1)
        ux, uy = px - vx, py - vy  # [B,P,F,3]
        inside = (orient * (ex * uy - ey * ux) >= 0).all(-1)
        t = ((ux * ex + uy * ey) / length2).clamp(0, 1)
        d2 = ((ux - t * ex) ** 2 + (uy - t * ey) ** 2).amin(-1)
        coverage = torch.sigmoid(torch.where(inside, d2, -d2) / sigma)
        yield 1 - torch.prod(1 - coverage, dim=-1)
