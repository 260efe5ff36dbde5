"""A dense pure-PyTorch reference of diffrender.soft.rasterize: every (pixel, triangle) pair at
once, with autograd for the gradients. Only for small images in tests: memory is O(B·H·W·F).

It follows the semantics in renderer/soft.py's docstring literally (segment distances to all
three edges, 1 - prod(1 - D), a max-shifted softmax) rather than the kernels' shortcuts (edge
prefilter, nearest edge among the outside ones, saturated terms, online softmax). Textured pairs
sample the texture with :func:`bilinear_reference`, gathers and weights in plain torch.
"""
import torch


def _pixel_centers(extent: int, scale: float, dtype) -> torch.Tensor:
    index = torch.arange(extent, dtype=dtype)
    return ((2.0 * (index + 0.5)) / extent - 1.0) * scale


def _cross(ax, ay, bx, by):
    return ax * by - ay * bx


def _texel_taps(t, size: int, boundary: str):
    """Neighbouring texel indices along one axis of `size` texels and the second one's weight."""
    if boundary == "wrap":
        x = (t - torch.floor(t)) * size - 0.5
        x0 = torch.floor(x)
        first = x0.long() % size
        return first, (first + 1) % size, x - x0
    x = (t * size - 0.5).clamp(-1.0, float(size))
    x0 = torch.floor(x)
    return x0.long().clamp(0, size - 1), (x0.long() + 1).clamp(0, size - 1), x - x0


def bilinear_reference(texture, uv, boundary="wrap"):
    """texture [Bt,Ht,Wt,C] (Bt = 1 or B) sampled bilinearly at uv [B,...,2] in diffrender.texture's
    convention (u = 0 left, v = 0 bottom, row 0 the top): [B,...,C]. Non-finite uvs give 0."""
    images, tex_height, tex_width, channels = texture.shape
    finite = torch.isfinite(uv).all(-1, keepdim=True)
    uv = torch.where(finite, uv, torch.zeros_like(uv))
    x0, x1, fx = _texel_taps(uv[..., 0], tex_width, boundary)
    y0, y1, fy = _texel_taps(1.0 - uv[..., 1], tex_height, boundary)
    # Texture image of each sample: its batch item, or 0 for a shared texture.
    image = torch.arange(uv.shape[0]).view(-1, *([1] * (uv.dim() - 2))) if images > 1 else torch.tensor(0)
    flat = texture.reshape(-1, channels)

    def texel(y, x):
        return flat[(image * tex_height + y) * tex_width + x]

    fx, fy = fx.unsqueeze(-1), fy.unsqueeze(-1)
    sample = ((1 - fy) * ((1 - fx) * texel(y0, x0) + fx * texel(y0, x1))
              + fy * ((1 - fx) * texel(y1, x0) + fx * texel(y1, x1)))
    return torch.where(finite, sample, torch.zeros_like(sample))


def soft_rasterize_reference(clip_vertices, triangles, attributes, width, height, sigma_val=1e-5,
                             gamma_val=1e-4, dist_eps=1e-4, eps=1e-3, aggr_func_rgb="softmax",
                             aggr_func_alpha="prod", dist_func="euclidean", cull_backfaces=False,
                             background_color=None, near_clip=0.01, far_clip=10.0, texture=None,
                             texture_boundary="wrap"):
    """Same arguments and result as diffrender.soft.rasterize ([B,H,W,C+1], row 0 = NDC y = -1)."""
    dtype = clip_vertices.dtype
    batch, _, _ = clip_vertices.shape
    if attributes is None:
        attributes = clip_vertices.new_zeros(batch, clip_vertices.shape[1], 0)
    if texture is not None and texture.dim() == 3:
        texture = texture.unsqueeze(0)
    channels = attributes.shape[-1] if texture is None else texture.shape[-1]
    if background_color is None:
        background_color = attributes.new_zeros(channels)
    triangles = triangles.long()
    shorter = min(width, height)
    sx, sy = width / shorter, height / shorter

    w = clip_vertices[..., 3]
    valid_w = w > torch.finfo(dtype).tiny ** 0.25
    w_safe = torch.where(valid_w, w, torch.ones_like(w))
    inv_w = torch.where(valid_w, 1.0 / w_safe, -torch.ones_like(w))
    x = torch.where(valid_w, clip_vertices[..., 0] / w_safe, torch.zeros_like(w)) * sx
    y = torch.where(valid_w, clip_vertices[..., 1] / w_safe, torch.zeros_like(w)) * sy

    # Corners [B,1,F,3] against pixels [1,P,1,1].
    vx = x[:, triangles].unsqueeze(1)
    vy = y[:, triangles].unsqueeze(1)
    viw = inv_w[:, triangles].unsqueeze(1)
    px = _pixel_centers(width, sx, dtype).repeat(height).view(1, -1, 1, 1)
    py = _pixel_centers(height, sy, dtype).repeat_interleave(width).view(1, -1, 1, 1)

    valid_tri = (viw > 0).all(-1)  # [B,1,F]
    area = _cross(vx[..., 1] - vx[..., 0], vy[..., 1] - vy[..., 0],
                  vx[..., 2] - vx[..., 0], vy[..., 2] - vy[..., 0])  # [B,1,F]
    if cull_backfaces:
        valid_tri = valid_tri & (area >= 0)
    degenerate = area == 0
    if dist_func == "barycentric":
        valid_tri = valid_tri & ~degenerate
    orient = torch.where(area < 0, -torch.ones_like(area), torch.ones_like(area)).unsqueeze(-1)

    k1, k2 = [1, 2, 0], [2, 0, 1]
    ax, ay = vx[..., k1] - px, vy[..., k1] - py  # P_k1 - p, [B,P,F,3]
    bx, by = vx[..., k2] - px, vy[..., k2] - py
    E = orient * _cross(ax, ay, bx, by)
    esum = E.sum(-1)
    inside = (E >= 0).all(-1) & (esum > 0) & ~degenerate
    esum_safe = torch.where(esum != 0, esum, torch.ones_like(esum))
    lam_inside = E / esum_safe.unsqueeze(-1)

    # Nearest point of each edge segment.
    ex, ey = vx[..., k2] - vx[..., k1], vy[..., k2] - vy[..., k1]
    len2 = ex * ex + ey * ey
    inv_len2 = torch.where(len2 > 0, 1.0 / torch.where(len2 > 0, len2, torch.ones_like(len2)), torch.zeros_like(len2))
    ux, uy = -ax, -ay  # p - P_k1
    t = ((ux * ex + uy * ey) * inv_len2).clamp(0.0, 1.0)
    rx, ry = ux - t * ex, uy - t * ey
    seg_d2 = rx * rx + ry * ry  # [B,P,F,3]
    nearest_d2, k0 = seg_d2.min(-1)
    t0 = t.gather(-1, k0.unsqueeze(-1)).squeeze(-1)
    one_hot = torch.nn.functional.one_hot(k0, 3).to(dtype)
    lam_outside = (torch.nn.functional.one_hot((k0 + 1) % 3, 3).to(dtype) * (1.0 - t0).unsqueeze(-1)
                   + torch.nn.functional.one_hot((k0 + 2) % 3, 3).to(dtype) * t0.unsqueeze(-1))
    del one_hot
    lam = torch.where(inside.unsqueeze(-1), lam_inside, lam_outside)

    if dist_func == "barycentric":
        d2 = lam_inside.min(-1).values ** 2
    else:
        d2 = nearest_d2

    iw = (lam * viw).sum(-1)
    z = (iw - 1.0 / far_clip) / (1.0 / near_clip - 1.0 / far_clip)
    d2_cut = sigma_val * torch.log(torch.tensor(1.0 / dist_eps - 1.0, dtype=dtype))
    keep = valid_tri & (inside | (d2 < d2_cut)) & (z >= 0) & (z <= 1)  # [B,P,F]

    sign = torch.where(inside, torch.ones_like(d2), -torch.ones_like(d2))
    D = torch.sigmoid(sign * d2 / sigma_val)

    if aggr_func_alpha == "prod":
        alpha = 1.0 - torch.where(keep, 1.0 - D, torch.ones_like(D)).prod(-1)
    elif aggr_func_alpha == "sum":
        alpha = torch.where(keep, D, torch.zeros_like(D)).sum(-1).clamp(max=1.0)
    else:
        alpha = (keep & inside).any(-1).to(dtype)

    if channels > 0:
        iw_safe = torch.where(keep, iw, torch.ones_like(iw))
        beta = lam * viw / iw_safe.unsqueeze(-1)  # [B,P,F,3]
        corner_attr = attributes[:, triangles].unsqueeze(1)  # [B,1,F,3,C]
        color = (beta.unsqueeze(-1) * corner_attr).sum(-2)  # [B,P,F,C] (textured: [B,P,F,2+2C])
        if texture is not None:
            uv, scale, offset = color.split([2, channels, channels], dim=-1)
            color = bilinear_reference(texture, uv, texture_boundary) * scale + offset
        if aggr_func_rgb == "softmax":
            logits = torch.where(keep, z / gamma_val, torch.full_like(z, -float("inf")))
            eps_logit = torch.tensor(eps / gamma_val, dtype=dtype)
            m = torch.maximum(logits.max(-1).values, eps_logit).detach()
            u = torch.where(keep, D * torch.exp(logits - m.unsqueeze(-1)), torch.zeros_like(D))
            ub = torch.exp(eps_logit - m)
            denom = u.sum(-1) + ub
            rgb = ((u.unsqueeze(-1) * color).sum(-2) + ub.unsqueeze(-1) * background_color) / denom.unsqueeze(-1)
        else:
            covered = keep & inside
            score = torch.where(covered, z, torch.full_like(z, -float("inf")))
            num_tri = score.shape[-1]
            last = num_tri - 1 - torch.flip(score, dims=[-1]).argmax(-1)  # ties: later triangle
            chosen = color.gather(2, last.view(*last.shape, 1, 1).expand(*last.shape, 1, channels)).squeeze(2)
            any_cover = covered.any(-1, keepdim=True)
            rgb = torch.where(any_cover, chosen, background_color.expand_as(chosen))
        out = torch.cat([rgb, alpha.unsqueeze(-1)], dim=-1)
    else:
        out = alpha.unsqueeze(-1)
    return out.view(batch, height, width, channels + 1)
