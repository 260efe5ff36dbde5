"""The soft rasterizer: SoftRas (Liu et al. 2019, "Soft Rasterizer: A Differentiable Renderer for
Image-based 3D Reasoning") on compiled multi-threaded kernels with an analytic backward pass.

Every triangle influences every pixel near it through a sigmoid of its distance, and the colours
of the triangles at a pixel are blended by a softmax over their depths, so silhouettes and
occlusions have gradients.

Exact semantics, for pixel i and triangle j (all in "square NDC", where pixels are square and the
shorter image side spans [-1, 1]: x/w is scaled by W/min(W,H) and y/w by H/min(W,H)):

- ``d(i,j)``: distance from the pixel centre to the projected triangle; δ = +1 inside (on an edge
  counts as inside), -1 outside. With ``dist_func='barycentric'``, d = |min_k λ_k| where λ are the
  unclamped screen-space barycentrics of the pixel centre (same sign rule; degenerate triangles are
  skipped in that mode, and the cut-off radius below is then in barycentric units).
- Coverage ``D = sigmoid(δ d²/σ)``; inside terms with d²/σ ≥ 40 are exactly 1 (1 - D < 4.3e-18).
- Barycentrics λ for depth and attributes: the screen-space barycentrics of the pixel centre when
  inside, those of the nearest point of the triangle (on its nearest edge) when outside.
- Depth ``z = (1/w - 1/far) / (1/near - 1/far)`` (1 at near, 0 at far), 1/w interpolated with λ.
- A pair is skipped when the pixel is outside with ``d² ≥ σ log(1/dist_eps - 1)`` (so every kept
  outside term has D > dist_eps), or when z ∉ [0, 1]. Triangles with a vertex at w ≤ 0 (or too close
  to 0 to invert safely) are skipped: SoftRas does not clip.
- Colour (``aggr_func_rgb='softmax'``): ``I = Σ_j w_j C_j + w_b C_b`` with ``w_j ∝ D_j exp(z_j/γ)``
  and ``w_b ∝ exp(ε/γ)``; C_j is the perspective-correct interpolation of the per-vertex attributes.
  ``'hard'``: the colour of the nearest triangle covering the pixel centre, else the background.
- Textured (``texture`` given): every vertex carries (u, v, s, o) with s, o of the texture's C
  channels, and ``C_j = bilinear(texture, uv_j)·s_j + o_j`` with uv_j, s_j, o_j interpolated with
  the pair's perspective-correct λ. Bilinear filtering only (no mip-mapping): each pair samples
  the 2×2 texels around its own uv, in :mod:`diffrender.texture`'s UV convention and
  ``'wrap'``/``'clamp'`` boundary; a NaN or infinite uv samples 0 and passes no uv or texture
  gradient. The texture gradient is accumulated deterministically from one record per pair that
  samples the texture: memory O(pairs), i.e. O(pixels × depth complexity), in the backward.
- Alpha: ``'prod'`` 1 - Π(1 - D_j); ``'sum'`` min(Σ D_j, 1); ``'hard'`` 1 if a triangle covers
  the pixel centre.
- ``cull_backfaces=True`` skips triangles that are clockwise on screen (y up): CCW is the front.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import camera as camera_lib
from ._ext import _C
from .render_checks import check_image_size, check_per_vertex, check_triangles, check_vertices
from .shading import phong

__all__ = ["rasterize", "render", "AGGR_RGB", "AGGR_ALPHA", "DIST_FUNCS", "TEXTURE_BOUNDARIES"]

AGGR_RGB = ("softmax", "hard")
AGGR_ALPHA = ("prod", "sum", "hard")
DIST_FUNCS = ("euclidean", "barycentric")
TEXTURE_BOUNDARIES = ("wrap", "clamp")


class _SoftRasterize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, screen_vertices: Tensor, triangles: Tensor, attributes: Tensor, background: Tensor,
                texture: Optional[Tensor], texture_boundary: str, settings: tuple, width: int, height: int):
        inputs = (screen_vertices, triangles, attributes, background)
        if texture is None:
            image, aux, hard_ids = _C.soft_rasterize_forward(*inputs, *settings, width, height)
        else:
            image, aux, hard_ids = _C.soft_rasterize_textured_forward(*inputs, texture, texture_boundary, *settings,
                                                                      width, height)
        ctx.save_for_backward(*inputs, texture, image, aux, hard_ids)
        ctx.settings = settings
        ctx.texture_boundary = texture_boundary
        return image

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_image: Tensor):
        screen_vertices, triangles, attributes, background, texture, image, aux, hard_ids = ctx.saved_tensors
        inputs = (screen_vertices, triangles, attributes, background)
        saved = (image, aux, hard_ids, grad_image.contiguous())
        if texture is None:
            grads = _C.soft_rasterize_backward(*inputs, *saved, *ctx.settings)
            grad_texture = None
        else:
            *grads, grad_texture = _C.soft_rasterize_textured_backward(*inputs, texture, ctx.texture_boundary,
                                                                       *saved, *ctx.settings)
        grad_screen, grad_attributes, grad_background = grads
        return grad_screen, None, grad_attributes, grad_background, grad_texture, None, None, None, None


def _check_name(value, name: str, choices: tuple) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value


def _check_positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return value


def _to_screen(clip_vertices: Tensor) -> Tensor:
    """(x/w, y/w, 1/w) with finite values and gradients everywhere. Vertices with w at or below
    finfo.tiny**0.25 (~1e-9.5 in float32) get 1/w = -1, which makes the kernel skip their
    triangles, and no gradient."""
    x, y, w = clip_vertices[..., 0], clip_vertices[..., 1], clip_vertices[..., 3]
    valid = w > torch.finfo(w.dtype).tiny ** 0.25
    inv_w = 1.0 / torch.where(valid, w, torch.ones_like(w))
    return torch.stack([torch.where(valid, x * inv_w, torch.zeros_like(x)),
                        torch.where(valid, y * inv_w, torch.zeros_like(y)),
                        torch.where(valid, inv_w, -torch.ones_like(w))], dim=-1)


def rasterize(clip_vertices: Tensor, triangles: Tensor, attributes: Optional[Tensor], image_width: int,
              image_height: int, sigma_val: float = 1e-5, gamma_val: float = 1e-4, dist_eps: float = 1e-4,
              eps: float = 1e-3, aggr_func_rgb: str = "softmax", aggr_func_alpha: str = "prod",
              dist_func: str = "euclidean", cull_backfaces: bool = False,
              background_color: Optional[Tensor] = None, near_clip: float = 0.01,
              far_clip: float = 10.0, texture: Optional[Tensor] = None, texture_boundary: str = "wrap") -> Tensor:
    """Soft-rasterizes per-vertex attributes (SoftRas; see the module docstring for the semantics).

    Args:
        clip_vertices: [B,V,4] float32/float64 clip-space (x, y, z, w); z is not used (depth comes
            from w, compared between near_clip and far_clip).
        triangles: [F,3] int32/int64 vertex indices.
        attributes: [B,V,C] float per-vertex attributes (same dtype and device), C >= 0; None means
            C = 0 (a silhouette: only alpha). With a texture of C channels: [B,V,2+2C], per vertex
            (u, v, scale[C], offset[C]), and a pair's colour is texture(uv)·scale + offset.
        image_width, image_height: output size in pixels.
        sigma_val: σ > 0, the blur of the coverage sigmoid (square-NDC² units).
        gamma_val: γ > 0, the softmax temperature of the depth aggregation.
        dist_eps: in (0,1): outside terms whose coverage would fall below it are dropped; it sets
            the blur radius sqrt(σ log(1/dist_eps - 1)).
        eps: the background's depth in the softmax.
        aggr_func_rgb: 'softmax' or 'hard'.
        aggr_func_alpha: 'prod', 'sum' or 'hard'.
        dist_func: 'euclidean' or 'barycentric'.
        cull_backfaces: skip triangles that are clockwise on screen.
        background_color: [C] float background colour (zeros when None).
        near_clip, far_clip: the depth range mapped to z ∈ [1, 0].
        texture: None, or [B,Ht,Wt,C] / [Ht,Wt,C] float (same dtype and device; [Ht,Wt,C] and
            [1,Ht,Wt,C] are shared by the batch), row 0 the top of the image, sampled bilinearly at
            each pair's own interpolated uv (:mod:`diffrender.texture`'s convention).
        texture_boundary: 'wrap' (repeat) or 'clamp' (extend the edge texels).
    Returns:
        [B,H,W,C+1] float: C colour channels, then alpha. Row 0 is NDC y = -1 (the bottom).
        Differentiable with respect to clip_vertices (x, y, w), attributes, background_color and
        texture.
    Raises:
        IndexError: a triangle index outside [0, V) (checked by the compiled op, as the barycentric
            rasterizer does, once per call: on a GPU each check waits for the device).
    """
    if not isinstance(clip_vertices, Tensor):
        raise TypeError("clip_vertices must be a torch.Tensor")
    if clip_vertices.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"clip_vertices must be float32 or float64, got {clip_vertices.dtype}")
    if clip_vertices.dim() != 3 or clip_vertices.shape[-1] != 4:
        raise ValueError(f"clip_vertices must have shape [B,V,4], got {list(clip_vertices.shape)}")
    batch, num_vertices = clip_vertices.shape[:2]
    triangles = check_triangles(triangles)
    if triangles.device != clip_vertices.device:
        raise ValueError("triangles and clip_vertices must be on the same device")
    _check_name(texture_boundary, "texture_boundary", TEXTURE_BOUNDARIES)
    if texture is not None:
        texture = _check_texture(texture, clip_vertices)
        if attributes is None:
            raise ValueError("a texture needs attributes [B,V,2+2C] = (u, v, scale[C], offset[C])")
    if attributes is None:
        attributes = clip_vertices.new_zeros(batch, num_vertices, 0)
    if not isinstance(attributes, Tensor):
        raise TypeError("attributes must be a torch.Tensor or None")
    if attributes.dtype != clip_vertices.dtype:
        raise TypeError(f"attributes must have the dtype of clip_vertices ({clip_vertices.dtype}), "
                        f"got {attributes.dtype}")
    if attributes.dim() != 3 or tuple(attributes.shape[:2]) != (batch, num_vertices):
        raise ValueError(f"attributes must have shape [B,V,C] = [{batch},{num_vertices},C], "
                         f"got {list(attributes.shape)}")
    if attributes.device != clip_vertices.device:
        raise ValueError("attributes and clip_vertices must be on the same device")
    channels = attributes.shape[-1]
    if texture is not None:
        channels = texture.shape[-1]
        if attributes.shape[-1] != 2 + 2 * channels:
            raise ValueError(f"with a {channels}-channel texture, attributes must have 2 + 2·{channels} = "
                             f"{2 + 2 * channels} channels (u, v, scale[C], offset[C]), got {attributes.shape[-1]}")
    if background_color is None:
        background_color = attributes.new_zeros(channels)
    else:
        background_color = torch.as_tensor(background_color, dtype=attributes.dtype, device=attributes.device)
        if background_color.shape != (channels,):
            raise ValueError(f"background_color must have shape [C] = [{channels}], "
                             f"got {list(background_color.shape)}")
    width = check_image_size(image_width, "image_width")
    height = check_image_size(image_height, "image_height")
    sigma = _check_positive(sigma_val, "sigma_val")
    gamma = _check_positive(gamma_val, "gamma_val")
    dist_eps = _check_positive(dist_eps, "dist_eps")
    if dist_eps >= 1:
        raise ValueError(f"dist_eps must lie in (0, 1), got {dist_eps}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"eps must be a number, got {type(eps).__name__}")
    near = _check_positive(near_clip, "near_clip")
    far = _check_positive(far_clip, "far_clip")
    if near >= far:
        raise ValueError(f"near_clip ({near}) must be smaller than far_clip ({far})")
    settings = (sigma, gamma, dist_eps, float(eps), near, far,
                _check_name(aggr_func_rgb, "aggr_func_rgb", AGGR_RGB),
                _check_name(aggr_func_alpha, "aggr_func_alpha", AGGR_ALPHA),
                _check_name(dist_func, "dist_func", DIST_FUNCS), bool(cull_backfaces))
    screen = _to_screen(clip_vertices)
    return _SoftRasterize.apply(screen, triangles.contiguous(), attributes, background_color, texture,
                                texture_boundary, settings, width, height)


def _check_like_vertices(value, name: str, verb: str, vertices: Tensor) -> None:
    """``value`` is a tensor with the dtype and device of ``vertices`` ("{name} {verb} on ...")."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype != vertices.dtype:
        raise TypeError(f"{name} must have the dtype of the vertices ({vertices.dtype}), got {value.dtype}")
    if value.device != vertices.device:
        raise ValueError(f"{name} {verb} on {value.device} but the vertices on {vertices.device}")


def _check_texture(texture, clip_vertices: Tensor) -> Tensor:
    """The texture as [Bt,Ht,Wt,C] (Bt = 1 or B), after checking it against clip_vertices."""
    _check_like_vertices(texture, "texture", "is", clip_vertices)
    if texture.dim() == 3:
        texture = texture.unsqueeze(0)
    batch = clip_vertices.shape[0]
    if texture.dim() != 4 or min(texture.shape[1:]) < 1 or texture.shape[0] not in (1, batch):
        raise ValueError(f"texture must have shape [B,Ht,Wt,C] (B = {batch} or 1) or [Ht,Wt,C] with Ht, Wt, C ≥ 1, "
                         f"got {list(texture.shape)}")
    return texture


def _per_batch(t: Tensor, batch: int, dims: int) -> Tensor:
    """Adds the batch dimension to an unbatched tensor (e.g. [3] -> [B,3])."""
    return t.expand(batch, *t.shape) if t.dim() == dims - 1 else t


def _vertex_normals(vertices: Tensor, triangles: Tensor) -> Tensor:
    from .mesh import vertex_normals

    return vertex_normals(vertices, triangles)


def render(vertices: Tensor, triangles: Tensor, diffuse_colors: Optional[Tensor], camera_position: Tensor,
           camera_lookat: Tensor, camera_up: Tensor, light_positions: Tensor, light_intensities: Tensor,
           image_width: int, image_height: int, sigma_val: float = 1e-5, gamma_val: float = 1e-4,
           fov_y: float | Tensor = 40.0, near_clip: float = 0.01, far_clip: float = 10.0,
           normals: Optional[Tensor] = None, specular_colors: Optional[Tensor] = None,
           shininess: Optional[Tensor] = None, ambient_color: Optional[Tensor] = None,
           uvs: Optional[Tensor] = None, texture: Optional[Tensor] = None, texture_boundary: str = "wrap",
           clip_matrices: Optional[Tensor] = None, **options) -> Tensor:
    """Phong-shaded soft render: the vertices are shaded with :func:`diffrender.shading.phong`, and
    the shaded colours are soft-rasterized (Gouraud-style, perspective-correct).

    With a texture, the sampled texture is the diffuse colour: Phong is linear in the diffuse
    colour, so each vertex gets its diffuse light L (Phong with a white diffuse colour, no specular
    or ambient term) and the rest S (specular and ambient), and each (pixel, triangle) pair is
    coloured ``bilinear(texture, uv)·L + S`` at its own interpolated uv, L and S (see
    :func:`rasterize`). For a constant texture this equals the untextured render with that
    diffuse colour.

    Args:
        vertices: [B,V,3] float world-space positions.
        triangles: [F,3] int, counter-clockwise = front.
        diffuse_colors: [B,V,3] float; ignored (may be None) when ``texture`` is given.
        camera_position, camera_lookat, camera_up: [B,3] (or [3]) float.
        light_positions: [B,L,3] float; light_intensities: [B,L] or [B,L,3] float.
        image_width, image_height: output size.
        sigma_val, gamma_val: SoftRas σ and γ.
        fov_y: degrees (float or [B]); near_clip, far_clip: floats.
        normals: [B,V,3] vertex normals, or None for area-weighted normals of the mesh.
        specular_colors: [B,V,3] or None; shininess: [B,V] or [B] (needed with specular_colors).
        ambient_color: [B,3] or None.
        uvs: [B,V,2] or [V,2] float per-vertex texture coordinates (v = 0 at the bottom of the
            image), with ``texture``.
        texture: [B,Ht,Wt,3] or [Ht,Wt,3] float RGB (the vertices' dtype), row 0 the top of the
            image; bilinear filtering, no mip-mapping.
        texture_boundary: 'wrap' (repeat) or 'clamp' (extend the edge texels).
        clip_matrices: [B,4,4] float world-to-clip matrices of these cameras at this aspect
            ratio, when the caller already has them (a fit's fixed cameras); None computes them.
        **options: passed to :func:`rasterize` (dist_eps, eps, aggr_func_rgb, aggr_func_alpha,
            dist_func, cull_backfaces, background_color ([3])).
    Returns:
        [B,H,W,4] float RGBA with row 0 at the top. Differentiable with respect to the vertices,
        colours, lights, camera, uvs and texture.

    Raises:
        ValueError, TypeError: an argument of the wrong shape, dtype or range, named in the message.
        IndexError: a triangle index outside [0, V).
    """
    check_vertices(vertices)
    triangles = check_triangles(triangles)
    batch = vertices.shape[0]
    if (uvs is None) != (texture is None):
        raise ValueError("render: uvs and texture go together")
    if texture is None:
        check_per_vertex(diffuse_colors, "diffuse_colors", vertices, " (or give uvs and a texture)")
    if normals is not None:
        check_per_vertex(normals, "normals", vertices)
    eye = _per_batch(camera_position, batch, 2)
    lookat = _per_batch(camera_lookat, batch, 2)
    up = _per_batch(camera_up, batch, 2)
    if specular_colors is not None and shininess is None:
        raise ValueError("render: specular_colors needs shininess")
    if normals is None:
        normals = _vertex_normals(vertices, triangles)
    if shininess is not None and shininess.dim() == 1:
        shininess = shininess.view(batch, 1).expand(batch, vertices.shape[1])
    cam = camera_lib.Camera(eye, lookat, up, fov_y=fov_y, near=near_clip, far=far_clip)
    clip = camera_lib.transform_homogeneous(cam.matrices_or_given(image_width / image_height, clip_matrices),
                                            vertices)
    if texture is None:
        attributes = phong(vertices, normals, diffuse_colors, eye, light_positions, light_intensities,
                           specular_colors, shininess, ambient_color)
    else:
        uvs = _check_uvs(uvs, vertices)
        texture = _check_texture(texture, vertices)
        if texture.shape[-1] != 3:
            raise ValueError(f"render: texture must have 3 (RGB) channels, got {list(texture.shape)}")
        diffuse_light = phong(vertices, normals, torch.ones_like(vertices), eye, light_positions, light_intensities)
        rest = (phong(vertices, normals, torch.zeros_like(vertices), eye, light_positions, light_intensities,
                      specular_colors, shininess, ambient_color)
                if specular_colors is not None or ambient_color is not None else torch.zeros_like(vertices))
        attributes = torch.cat([uvs, diffuse_light, rest], dim=-1)
    image = rasterize(clip, triangles, attributes, image_width, image_height, sigma_val=sigma_val,
                      gamma_val=gamma_val, near_clip=near_clip, far_clip=far_clip, texture=texture,
                      texture_boundary=texture_boundary, **options)
    return torch.flip(image, dims=[1])


def _check_uvs(uvs, vertices: Tensor) -> Tensor:
    """uvs as [B,V,2], after checking them against vertices [B,V,3]."""
    _check_like_vertices(uvs, "render: uvs", "are", vertices)
    batch, num_vertices = vertices.shape[:2]
    uvs = _per_batch(uvs, batch, 3)
    if uvs.dim() != 3 or tuple(uvs.shape) != (batch, num_vertices, 2):
        raise ValueError(f"render: uvs must have shape [B,V,2] = [{batch},{num_vertices},2] or [V,2], "
                         f"got {list(uvs.shape)}")
    return uvs
