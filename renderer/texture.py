"""Differentiable texture sampling on the compiled CPU and CUDA kernels: bilinear, or trilinear
over a mip pyramid (as in nvdiffrast, Laine et al. 2020), with gradients for the texture and the
UVs.

UV convention (OBJ, trimesh): u = 0 is the left edge of the image and u = 1 the right; v = 0 is
the bottom and v = 1 the top; row 0 of a texture tensor is the top row of the image. Texel
(column i, row j) of a Wt×Ht texture is centred at uv ((i + ½)/Wt, 1 − (j + ½)/Ht). With
``boundary="clamp"`` and bilinear filtering, ``sample(texture, uv)`` equals::

    F.grid_sample(texture.permute(0, 3, 1, 2), torch.stack([2 * u - 1, 1 - 2 * v], -1),
                  mode="bilinear", padding_mode="border", align_corners=False).permute(0, 2, 3, 1)

The backward passes are deterministic: on the CPU the bits do not depend on the thread count,
on CUDA they are the same on every run.

    image = torch.rand(256, 256, 3)                                  # [Ht,Wt,C], shared by the batch
    uv = torch.rand(1, 64, 64, 2)                                    # [B,H,W,2] per-pixel UVs
    color = texture.sample(image, uv, filter="trilinear")            # [B,H,W,3]
"""
from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ._ext import _C

__all__ = ["sample", "mip_pyramid", "uv_derivatives"]

FILTERS = ("bilinear", "trilinear")
BOUNDARIES = ("wrap", "clamp")


class _Sample(torch.autograd.Function):
    @staticmethod
    def forward(ctx, levels: Tensor, uv: Tensor, uv_da: Optional[Tensor], level_sizes: List[int], texture_batch: int,
                channels: int, filter: str, boundary: str):
        ctx.settings = (level_sizes, texture_batch, channels)
        ctx.modes = (filter, boundary)
        ctx.save_for_backward(levels, uv, uv_da)
        return _C.texture_sample_forward(levels, level_sizes, texture_batch, channels, uv, uv_da, filter, boundary)

    @staticmethod
    def backward(ctx, grad_out):
        levels, uv, uv_da = ctx.saved_tensors
        grad_levels, grad_uv = _C.texture_sample_backward(grad_out.contiguous(), levels, *ctx.settings, uv, uv_da,
                                                          *ctx.modes, *ctx.needs_input_grad[:2])
        return grad_levels, grad_uv, None, None, None, None, None, None


def sample(texture: Tensor, uv: Tensor, filter: str = "bilinear", boundary: str = "wrap",
           uv_da: Optional[Tensor] = None, mask: Optional[Tensor] = None,
           max_mip_level: Optional[int] = None) -> Tensor:
    """Samples a texture at per-pixel UVs, differentiably.

    Args:
        texture: float32/float64 ``[B,Ht,Wt,C]`` (any C ≥ 1), or ``[Ht,Wt,C]`` (or
            ``[1,Ht,Wt,C]``) shared by the whole batch. Row 0 is the top of the image.
        uv: ``[B,H,W,2]`` (u, v) per pixel, same dtype and device as ``texture``. A pixel with a
            NaN or infinite u or v samples 0 and gets zero gradient (a way to mark background).
        filter: ``"bilinear"`` interpolates the four nearest texels of the texture;
            ``"trilinear"`` also blends the two nearest levels of its mip pyramid (see
            :func:`mip_pyramid`), which removes aliasing under minification.
        boundary: ``"wrap"`` repeats the texture (the bilinear neighbours of an edge texel
            include the opposite edge); ``"clamp"`` extends the edge texels outwards.
        uv_da: trilinear only: ``[B,H,W,4]`` float (du/dx, dv/dx, du/dy, dv/dy), the UV change
            per pixel step along a row (x) and down the rows (y), e.g. from the rasterizer. The
            level of detail is log2 of the longer of (du/dx·Wt, dv/dx·Ht) and (du/dy·Wt, dv/dy·Ht),
            clamped to the pyramid; NaN gives level 0, ∞ the smallest level. When None it is
            estimated with :func:`uv_derivatives`.
        mask: trilinear only, without ``uv_da``: ``[B,H,W]`` bool, the pixels whose UVs are
            meaningful (e.g. coverage); differences to pixels outside it are not used.
        max_mip_level: trilinear only: the highest (smallest) level used, 0 being the texture
            itself; None uses every level down to 1×1.
    Returns:
        ``[B,H,W,C]`` of the texture's dtype. Differentiable with respect to ``texture`` (through
        the mip pyramid, built with torch ops) and ``uv``. The level of detail is treated as
        constant: ``uv_da`` gets no gradient, and an estimated one does not pass gradient to
        ``uv``.
    """
    texture, texture_batch = _check_inputs(texture, uv, filter, boundary)
    channels = texture.shape[-1]
    if filter == "bilinear":
        if uv_da is not None or mask is not None or max_mip_level is not None:
            raise ValueError("texture.sample: uv_da, mask and max_mip_level are for filter='trilinear' only")
        levels = [texture]
    else:
        uv_da = _check_uv_da(uv_da, mask, uv)
        levels = mip_pyramid(texture, boundary, _check_max_mip_level(max_mip_level))
    flat = torch.cat([level.reshape(-1) for level in levels]) if len(levels) > 1 else texture.reshape(-1)
    level_sizes = [size for level in levels for size in level.shape[1:3]]
    return _Sample.apply(flat, uv, uv_da, level_sizes, texture_batch, channels, filter, boundary)


def mip_pyramid(texture: Tensor, boundary: str = "wrap", max_mip_level: Optional[int] = None) -> List[Tensor]:
    """The mip levels of a texture, differentiable (torch ops only).

    Args:
        texture: float ``[B,Ht,Wt,C]``.
        boundary: ``"wrap"`` or ``"clamp"``: an odd side is first made even by repeating its
            first row/column at the end (wrap, so the pyramid stays periodic) or its last one
            (clamp).
        max_mip_level: the last level to build; None builds down to 1×1.
    Returns:
        ``[level 0 = texture, level 1, ...]``, each ``[B,ceil(H/2),ceil(W/2),C]`` of the one
        before, every texel the mean of 2×2 texels of the previous level.
    """
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
    levels = [texture]
    while levels[-1].shape[1:3] != (1, 1) and (max_mip_level is None or len(levels) <= max_mip_level):
        level = levels[-1]
        for dim in (1, 2):
            if level.shape[dim] % 2:
                edge = 0 if boundary == "wrap" else level.shape[dim] - 1
                level = torch.cat([level, level.narrow(dim, edge, 1)], dim)
        batch, height, width, channels = level.shape
        # Row pairs, then column pairs, split by unbind: far faster than a 6-d mean, and its
        # backward writes each gradient once (indexing's zero-fills a full-size buffer per index).
        top, bottom = level.reshape(batch, height // 2, 2, width, channels).unbind(2)
        left, right = (top + bottom).reshape(batch, height // 2, width // 2, 2, channels).unbind(3)
        levels.append((left + right) * 0.25)
    return levels


def uv_derivatives(uv: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """Per-pixel UV derivatives estimated by finite differences, for trilinear filtering.

    Along each image axis, the mean of the differences to the previous and the next pixel;
    one-sided where only one neighbour counts, zero where none does. A neighbour counts when both
    it and the pixel have finite UVs and lie inside ``mask``. A seam (a jump in uv between
    neighbouring pixels) reads as a large footprint and blurs that line.

    Args:
        uv: float ``[B,H,W,2]``.
        mask: bool ``[B,H,W]`` or None (every pixel counts).
    Returns:
        ``[B,H,W,4]`` (du/dx, dv/dx, du/dy, dv/dy), x along a row, y down the rows; no gradient.
    """
    with torch.no_grad():
        valid = torch.isfinite(uv).all(dim=-1)
        if mask is not None:
            valid = valid & mask
        return torch.cat([_axis_derivative(uv, valid, 2), _axis_derivative(uv, valid, 1)], dim=-1)


def _axis_derivative(uv: Tensor, valid: Tensor, dim: int) -> Tensor:
    count = uv.shape[dim]
    if count < 2:
        return torch.zeros_like(uv)
    step = uv.narrow(dim, 1, count - 1) - uv.narrow(dim, 0, count - 1)
    step_valid = (valid.narrow(dim, 1, count - 1) & valid.narrow(dim, 0, count - 1)).unsqueeze(-1)
    step = torch.where(step_valid, step, torch.zeros_like(step))
    step_valid = step_valid.to(uv.dtype)
    # F.pad lists the last dimension first: (channel, W, H) pairs of (before, after).
    before = (0, 0, 1, 0) if dim == 2 else (0, 0, 0, 0, 1, 0)
    after = (0, 0, 0, 1) if dim == 2 else (0, 0, 0, 0, 0, 1)
    total = F.pad(step, before) + F.pad(step, after)
    used = F.pad(step_valid, before) + F.pad(step_valid, after)
    return total / used.clamp(min=1)


def _check_inputs(texture: Tensor, uv: Tensor, filter: str, boundary: str):
    """The texture as [Bt,Ht,Wt,C] and Bt, after checking every argument of :func:`sample`."""
    for name, t in (("texture", texture), ("uv", uv)):
        if not isinstance(t, Tensor):
            raise TypeError(f"texture.sample: {name} must be a torch.Tensor, got {type(t).__name__}")
    if texture.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"texture.sample: texture must be float32 or float64, got {texture.dtype}")
    if uv.dtype != texture.dtype:
        raise TypeError(f"texture.sample: uv must have the texture's dtype {texture.dtype}, got {uv.dtype}")
    if uv.device != texture.device:
        raise ValueError(f"texture.sample: uv is on {uv.device} but texture on {texture.device}")
    if filter not in FILTERS:
        raise ValueError(f"texture.sample: filter must be one of {FILTERS}, got {filter!r}")
    if boundary not in BOUNDARIES:
        raise ValueError(f"texture.sample: boundary must be one of {BOUNDARIES}, got {boundary!r}")
    if uv.dim() != 4 or uv.shape[-1] != 2:
        raise ValueError(f"texture.sample: uv must have shape [B,H,W,2], got {list(uv.shape)}")
    if texture.dim() == 3:
        texture = texture.unsqueeze(0)
    if texture.dim() != 4 or min(texture.shape[1:]) < 1:
        raise ValueError(f"texture.sample: texture must have shape [B,Ht,Wt,C] or [Ht,Wt,C] with Ht, Wt, C ≥ 1, "
                         f"got {list(texture.shape)}")
    if texture.shape[0] not in (1, uv.shape[0]):
        raise ValueError(f"texture.sample: texture batch {texture.shape[0]} must be 1 or the uv batch "
                         f"{uv.shape[0]}")
    return texture, texture.shape[0]


def _check_uv_da(uv_da: Optional[Tensor], mask: Optional[Tensor], uv: Tensor) -> Tensor:
    """The given uv_da, detached, or one estimated from uv."""
    per_pixel = list(uv.shape[:3])
    if uv_da is None:
        if mask is not None:
            if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
                raise TypeError("texture.sample: mask must be a bool tensor [B,H,W]")
            if list(mask.shape) != per_pixel or mask.device != uv.device:
                raise ValueError(f"texture.sample: mask must be [B,H,W] = {per_pixel} on {uv.device}, got "
                                 f"{list(mask.shape)} on {mask.device}")
        return uv_derivatives(uv, mask)
    if mask is not None:
        raise ValueError("texture.sample: mask only guides the estimate of uv_da; pass one or the other")
    if not isinstance(uv_da, Tensor) or uv_da.dtype != uv.dtype:
        raise TypeError(f"texture.sample: uv_da must be a {uv.dtype} tensor [B,H,W,4]")
    if list(uv_da.shape) != per_pixel + [4] or uv_da.device != uv.device:
        raise ValueError(f"texture.sample: uv_da must be [B,H,W,4] = {per_pixel + [4]} on {uv.device}, got "
                         f"{list(uv_da.shape)} on {uv_da.device}")
    return uv_da.detach()


def _check_max_mip_level(max_mip_level: Optional[int]) -> Optional[int]:
    if max_mip_level is None:
        return None
    if isinstance(max_mip_level, bool) or not isinstance(max_mip_level, int):
        raise TypeError(f"texture.sample: max_mip_level must be an int or None, got {type(max_mip_level).__name__}")
    if max_mip_level < 0:
        raise ValueError(f"texture.sample: max_mip_level must be ≥ 0, got {max_mip_level}")
    return max_mip_level
