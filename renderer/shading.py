"""One Phong model for both renderers: diffuse, specular with shininess, ambient, and any number
of point lights with RGB intensities. It works on points of any layout ([B, ..., 3]): per pixel
for the barycentric renderer, per vertex for the soft renderer."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from ._ext import _C
from .tensor_dataclass import TensorDataclass


@dataclass
class PointLights(TensorDataclass):
    """Point lights.

    Attributes:
        positions: [B,L,3] float, world-space positions.
        intensities: [B,L,3] float RGB intensities (use :meth:`from_scalar` for [B,L]).
    """

    positions: Tensor
    intensities: Tensor

    def __post_init__(self):
        self.intensities = rgb_intensities(self.intensities)
        if self.positions.dim() != 3 or self.positions.shape[-1] != 3:
            raise ValueError(f"light positions must be [B,L,3], got {list(self.positions.shape)}")
        if self.intensities.shape != self.positions.shape:
            raise ValueError(f"light intensities {list(self.intensities.shape)} do not match "
                             f"light positions {list(self.positions.shape)}")


@dataclass
class Material(TensorDataclass):
    """Surface settings shared by every vertex.

    Attributes:
        ambient: [B,3] float RGB added to every covered pixel, or None.
        specular: [B,3] float RGB specular colour, or None for no highlight.
        shininess: float or [B] Phong exponent.
    """

    ambient: Optional[Tensor] = None
    specular: Optional[Tensor] = None
    shininess: float | Tensor = 32.0


def rgb_intensities(intensities: Tensor) -> Tensor:
    """[B,L] scalar or [B,L,3] RGB light intensities as [B,L,3]."""
    if intensities.dim() == 2:
        return intensities.unsqueeze(-1).expand(*intensities.shape, 3)
    if intensities.dim() == 3 and intensities.shape[-1] == 3:
        return intensities
    raise ValueError(f"light intensities must be [B,L] or [B,L,3], got {list(intensities.shape)}")


class _PhongShade(torch.autograd.Function):
    @staticmethod
    def forward(ctx, positions, normals, diffuse, specular, shininess, eye, light_positions,
                light_intensities, ambient):
        inputs = (positions, normals, diffuse, specular, shininess, eye, light_positions, light_intensities, ambient)
        ctx.save_for_backward(*inputs)
        return _C.phong_shade_forward(*inputs)

    @staticmethod
    def backward(ctx, grad_out):
        return tuple(_C.phong_shade_backward(grad_out.contiguous(), *ctx.saved_tensors))


def phong(positions: Tensor, normals: Tensor, diffuse_colors: Tensor, camera_position: Tensor,
          light_positions: Tensor, light_intensities: Tensor, specular_colors: Optional[Tensor] = None,
          shininess: Optional[Tensor] = None, ambient_color: Optional[Tensor] = None) -> Tensor:
    """Phong shading of a batch of surface points, on the compiled kernel.

    Args:
        positions: [B,N,3] float world-space points.
        normals: [B,N,3] float normals (normalised here).
        diffuse_colors: [B,N,3] float.
        camera_position: [B,3] float eye positions.
        light_positions: [B,L,3] float.
        light_intensities: [B,L,3] float RGB (or [B,L] scalars).
        specular_colors: [B,N,3] float, or None for no specular term.
        shininess: [B,N] float Phong exponents (needed with specular_colors).
        ambient_color: [B,3] float added to every point, or None.
    Returns:
        [B,N,3] float radiance: Σ_lights I·(kd·max(n·l,0) + ks·max(r·v,0)^shininess) + ambient,
        where r = 2(n·l)n − l is l mirrored about n; the highlight needs n·l > 0.
        Differentiable with respect to every input.
    """
    if (specular_colors is None) != (shininess is None):
        raise ValueError("phong: specular_colors and shininess go together")
    intensities = rgb_intensities(light_intensities)
    if ambient_color is None:
        ambient_color = positions.new_zeros(positions.shape[0], 3)
    return _PhongShade.apply(positions, normals, diffuse_colors, specular_colors, shininess, camera_position,
                             light_positions, intensities.contiguous(), ambient_color)


class _ShadePixels(torch.autograd.Function):
    @staticmethod
    def forward(ctx, vertex_attributes, pixel_diffuse, triangles, triangle_ids, barycentrics, eye,
                light_positions, light_intensities, ambient, with_specular):
        inputs = (vertex_attributes, pixel_diffuse, triangles, triangle_ids, barycentrics, eye, light_positions,
                  light_intensities, ambient)
        ctx.save_for_backward(*inputs)
        ctx.with_specular = with_specular
        return _C.shade_pixels_forward(*inputs, with_specular)

    @staticmethod
    def backward(ctx, grad_rgba):
        (grad_attributes, grad_pixel_diffuse, grad_barycentrics, grad_eye, grad_light_positions,
         grad_light_intensities, grad_ambient) = _C.shade_pixels_backward(
            grad_rgba, *ctx.saved_tensors, ctx.with_specular)
        return (grad_attributes, grad_pixel_diffuse, None, None, grad_barycentrics, grad_eye,
                grad_light_positions, grad_light_intensities, grad_ambient, None)


def shade_pixels(triangles: Tensor, triangle_ids: Tensor, barycentrics: Tensor, positions: Tensor,
                 normals: Tensor, diffuse_colors: Tensor, camera_position: Tensor, light_positions: Tensor,
                 light_intensities: Tensor, specular_colors: Optional[Tensor] = None,
                 shininess: Optional[Tensor] = None, ambient_color: Optional[Tensor] = None) -> Tensor:
    """Phong-shades every rasterized pixel from its triangle's interpolated vertex attributes.

    The same result as :func:`phong` on :func:`diffrender.barycentric.interpolate`'d attributes
    times the coverage mask, in one compiled pass that touches only covered pixels.

    Args:
        triangles: [F,3] int64.
        triangle_ids: [B,H,W] int64 and barycentrics: [B,H,W,3] float, from the rasterizer.
        positions, normals: [B,V,3] float per-vertex world positions and normals.
        diffuse_colors: [B,V,3] float per vertex, or [B,H,W,3] float per pixel (for example
            sampled from a texture).
        camera_position: [B,3] float.
        light_positions: [B,L,3] float; light_intensities: [B,L,3] RGB or [B,L] float.
        specular_colors: [B,V,3] float and shininess: [B,V] float, or both None.
        ambient_color: [B,3] float, or None.
    Returns:
        [B,H,W,4] float RGBA: the shaded colour and alpha 1 on covered pixels, 0 elsewhere.
        Differentiable with respect to every float input except the alpha channel's.
    """
    if (specular_colors is None) != (shininess is None):
        raise ValueError("shade_pixels: specular_colors and shininess go together")
    per_pixel_diffuse = diffuse_colors.dim() == 4
    packed = [positions, normals] + ([] if per_pixel_diffuse else [diffuse_colors])
    if specular_colors is not None:
        packed += [specular_colors, shininess.unsqueeze(-1)]
    batch = positions.shape[0]
    vertex_attributes = torch.cat([t.expand(batch, *t.shape[1:]) for t in packed], dim=-1)
    if ambient_color is None:
        ambient_color = positions.new_zeros(batch, 3)
    return _ShadePixels.apply(vertex_attributes, diffuse_colors if per_pixel_diffuse else None, triangles,
                              triangle_ids, barycentrics, camera_position, light_positions,
                              rgb_intensities(light_intensities).contiguous(), ambient_color,
                              specular_colors is not None)
