"""The pure-PyTorch Phong model that the compiled kernel must match (forward and autograd)."""
from typing import Optional

import torch
from torch import Tensor

from diffrender.shading import rgb_intensities


def _normalize(v: Tensor, eps: float = 1e-12) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(eps)


def phong_reference(positions: Tensor, normals: Tensor, diffuse_colors: Tensor, camera_position: Tensor,
                    light_positions: Tensor, light_intensities: Tensor, specular_colors: Optional[Tensor] = None,
                    shininess: Optional[Tensor] = None, ambient_color: Optional[Tensor] = None) -> Tensor:
    """Same contract (arguments, shapes, result) as diffrender.shading.phong, in plain PyTorch ops."""
    intensities = rgb_intensities(light_intensities)
    n = _normalize(normals).unsqueeze(2)  # [B,N,1,3]
    to_light = _normalize(light_positions.unsqueeze(1) - positions.unsqueeze(2))  # [B,N,L,3]
    n_dot_l = (n * to_light).sum(-1, keepdim=True)  # [B,N,L,1]
    radiance = (n_dot_l.clamp_min(0.0) * intensities.unsqueeze(1)).sum(2) * diffuse_colors
    if specular_colors is not None:
        if shininess is None:
            raise ValueError("phong: specular_colors needs shininess")
        to_eye = _normalize(camera_position.unsqueeze(1) - positions).unsqueeze(2)  # [B,N,1,3]
        reflected = 2.0 * n_dot_l * n - to_light
        r_dot_v = (reflected * to_eye).sum(-1).clamp_min(0.0)  # [B,N,L]
        # Only lights in front of the surface highlight it. pow(0, s) has no finite gradient at
        # 0 for s < 1, so zero cosines are routed around pow.
        lit = (r_dot_v > 0) & (n_dot_l.squeeze(-1) > 0)
        safe = torch.where(lit, r_dot_v, torch.ones_like(r_dot_v))
        highlight = torch.where(lit, safe.pow(shininess.unsqueeze(-1)), torch.zeros_like(safe))
        radiance = radiance + (highlight.unsqueeze(-1) * intensities.unsqueeze(1)).sum(2) * specular_colors
    if ambient_color is not None:
        radiance = radiance + ambient_color.unsqueeze(1)
    return radiance
