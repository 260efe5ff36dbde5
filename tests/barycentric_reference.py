"""A dense pure-PyTorch reference of the barycentric rasterizer, for checking the C++ kernel's
forward and (through autograd) its backward on small images. Memory is pixels × triangles, so it
is only for tests."""
import torch


def rasterize_triangles_reference(clip, triangles, width, height):
    """Same contract as diffrender.barycentric.rasterize_triangles (ids, barycentrics, z)."""
    batch = clip.shape[0]
    corners = clip[:, triangles]  # [B,F,3,4]
    m = torch.stack([corners[..., 0], corners[..., 1], corners[..., 3]], dim=-2)  # [B,F,3,3]
    det = torch.linalg.det(m)
    valid = det != 0
    safe = torch.where(valid[..., None, None], m, torch.eye(3, dtype=m.dtype).expand_as(m))
    inverse = torch.linalg.inv(safe)
    xs = 2 * (torch.arange(width, dtype=clip.dtype) + 0.5) / width - 1
    ys = 2 * (torch.arange(height, dtype=clip.dtype) + 0.5) / height - 1
    py, px = torch.meshgrid(ys, xs, indexing="ij")
    points = torch.stack([px, py, torch.ones_like(px)], dim=-1).reshape(-1, 3)  # [P,3]
    edges = torch.einsum("bfij,pj->bfpi", inverse, points)  # [B,F,P,3] = b_k / w_p
    sums = edges.sum(-1, keepdim=True)
    bary = edges / torch.where(sums == 0, torch.ones_like(sums), sums)
    # e = M⁻¹p is b/w_p: all-positive when in front of the eye, all-negative behind it.
    inside = (edges >= 0).all(-1) & (edges > 0).any(-1) & valid[..., None]
    clip_z = torch.einsum("bfpk,bfk->bfp", bary, corners[..., 2])
    clip_w = torch.einsum("bfpk,bfk->bfp", bary, corners[..., 3])
    depth = clip_z / clip_w
    visible = inside & (depth >= -1) & (depth <= 1)
    depth = torch.where(visible, depth, torch.full_like(depth, float("inf")))
    # argmin over the reversed triangle axis: equal depths go to the later triangle.
    num_triangles = triangles.shape[0]
    winner = num_triangles - 1 - torch.flip(depth.detach(), dims=[1]).argmin(dim=1)  # [B,P]
    covered = torch.gather(visible, 1, winner[:, None]).squeeze(1)
    ids = torch.where(covered, winner, torch.zeros_like(winner))
    chosen = torch.gather(bary, 1, winner[:, None, :, None].expand(batch, 1, -1, 3)).squeeze(1)
    chosen = torch.where(covered[..., None], chosen, torch.zeros_like(chosen))
    zbuf = torch.gather(depth, 1, winner[:, None]).squeeze(1)
    zbuf = torch.where(covered, zbuf, torch.ones_like(zbuf))
    shape = (batch, height, width)
    return ids.reshape(shape), chosen.reshape(*shape, 3), zbuf.reshape(shape)
