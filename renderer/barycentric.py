"""The barycentric renderer: a PyTorch port of Google's tf_mesh_renderer (Genova et al. 2018).

A z-buffer rasterizer with perspective-correct barycentrics on compiled kernels; gradients reach
the clip-space x, y and w of the vertices through the barycentrics. ``render`` shades the pixels
in one compiled deferred pass (interpolation and Phong together, see
:func:`diffrender.shading.shade_pixels`); the camera is differentiable torch code. A UV-textured
mesh is drawn by sampling its texture (:func:`diffrender.texture.sample`) at every pixel's
interpolated UV, with the UVs' exact screen-space derivatives (:func:`uv_screen_derivatives`)
choosing the mip level.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from . import antialias as _antialias_lib
from . import camera as camera_lib
from . import texture as texture_lib
from ._ext import _C
from .antialias import EdgeTopology, antialias, edge_topology  # noqa: F401  (public API)
from .render_checks import check_image_size, check_per_vertex, check_triangles, check_vertices
from .shading import shade_pixels


class _RasterizeTriangles(torch.autograd.Function):
    @staticmethod
    def forward(ctx, clip_vertices: Tensor, triangles: Tensor, width: int, height: int):
        ids, bary, zbuf = _C.rasterize_triangles_forward(clip_vertices, triangles, width, height)
        ctx.save_for_backward(clip_vertices, triangles, ids, bary)
        ctx.mark_non_differentiable(ids, zbuf)
        return ids, bary, zbuf

    @staticmethod
    def backward(ctx, _grad_ids, grad_bary, _grad_z):
        clip_vertices, triangles, ids, bary = ctx.saved_tensors
        grad = _C.rasterize_triangles_backward(clip_vertices, triangles, ids, bary, grad_bary.contiguous())
        return grad, None, None, None


def rasterize_triangles(clip_space_vertices: Tensor, triangles: Tensor, image_width: int,
                        image_height: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Rasterizes triangles with a z-buffer (tf_mesh_renderer's ``rasterize_triangles``).

    Args:
        clip_space_vertices: [B,V,4] float32/float64 clip-space (x, y, z, w).
        triangles: [F,3] int, vertex indices; both windings are drawn.
        image_width, image_height: output size in pixels.
    Returns:
        triangle_ids: [B,H,W] int64, the visible triangle (0 where nothing is).
        barycentric_coordinates: [B,H,W,3] float, perspective-correct; 0 where nothing is.
            Differentiable with respect to clip x, y and w.
        z_buffer: [B,H,W] float NDC depth (1 where nothing is); not differentiable.
        Row 0 is NDC y = -1 (the bottom of the image).
    """
    if not isinstance(clip_space_vertices, Tensor):
        raise TypeError("clip_space_vertices must be a torch.Tensor")
    if clip_space_vertices.dim() != 3 or clip_space_vertices.shape[-1] != 4:
        raise ValueError(f"clip_space_vertices must have shape [B,V,4], got {list(clip_space_vertices.shape)}")
    if clip_space_vertices.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"clip_space_vertices must be float32 or float64, got {clip_space_vertices.dtype}")
    triangles = check_triangles(triangles)
    if triangles.device != clip_space_vertices.device:
        raise ValueError("triangles and clip_space_vertices must be on the same device")
    return _RasterizeTriangles.apply(clip_space_vertices, triangles, check_image_size(image_width, "image_width"),
                                     check_image_size(image_height, "image_height"))


class _Interpolate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, attributes: Tensor, triangles: Tensor, triangle_ids: Tensor, barycentrics: Tensor):
        ctx.save_for_backward(attributes, triangles, triangle_ids, barycentrics)
        return _C.interpolate_forward(attributes, triangles, triangle_ids, barycentrics)

    @staticmethod
    def backward(ctx, grad_out):
        attributes, triangles, triangle_ids, barycentrics = ctx.saved_tensors
        grad_attributes, grad_barycentrics = _C.interpolate_backward(
            grad_out.contiguous(), attributes, triangles, triangle_ids, barycentrics)
        return grad_attributes, None, None, grad_barycentrics


def interpolate(attributes: Tensor, triangles: Tensor, triangle_ids: Tensor, barycentrics: Tensor) -> Tensor:
    """Per-pixel attributes Σ_k b_k · attr[triangle[k]], differentiable in attributes and barycentrics.

    Args:
        attributes: [B,V,A] float per-vertex attributes.
        triangles: [F,3] int64.
        triangle_ids: [B,H,W] int64 (from rasterize_triangles).
        barycentrics: [B,H,W,3] float (from rasterize_triangles).
    Returns:
        [B,H,W,A] float; 0 where the barycentrics are 0.
    """
    if attributes.dim() != 3:
        raise ValueError(f"attributes must have shape [B,V,A], got {list(attributes.shape)}")
    triangles = check_triangles(triangles)
    return _Interpolate.apply(attributes, triangles, triangle_ids, barycentrics.to(attributes.dtype))


def coverage(barycentrics: Tensor) -> Tensor:
    """[B,H,W,1] float mask: 1 where a triangle is visible."""
    return (barycentrics.sum(-1, keepdim=True) > 0.5).to(barycentrics.dtype)


def rasterize(world_space_vertices: Tensor, attributes: Tensor, triangles: Tensor,
              camera_matrices: Tensor, image_width: int, image_height: int,
              background_value: Tensor | list) -> Tensor:
    """Rasterizes per-vertex attributes (tf_mesh_renderer's ``rasterize``).

    Args:
        world_space_vertices: [B,V,3] float.
        attributes: [B,V,A] float.
        triangles: [F,3] int.
        camera_matrices: [B,4,4] float world-to-clip matrices.
        image_width, image_height: output size.
        background_value: [A] values for uncovered pixels.
    Returns:
        [B,H,W,A] float, row 0 at NDC y = -1.
    """
    triangles = check_triangles(triangles)
    clip = camera_lib.transform_homogeneous(camera_matrices, world_space_vertices)
    ids, bary, _ = rasterize_triangles(clip, triangles, image_width, image_height)
    values = interpolate(attributes, triangles, ids, bary)
    mask = coverage(bary)
    background = torch.as_tensor(background_value, dtype=values.dtype, device=values.device)
    return mask * values + (1.0 - mask) * background


def uv_screen_derivatives(clip_space_vertices: Tensor, triangles: Tensor, triangle_ids: Tensor,
                          barycentrics: Tensor, uvs: Tensor, pixel_uvs: Tensor) -> Tensor:
    """Exact per-pixel UV derivatives of the rasterized triangles, for trilinear texture filtering.

    In 2-D homogeneous rasterization a triangle's clip-space corners p_k = (x, y, w) are the
    columns of a 3×3 matrix M, and the unnormalised barycentrics of the NDC point
    p = (x/w, y/w, 1) are M⁻¹p, whose sum is 1/w. So the perspective-correct barycentrics
    b = w·M⁻¹p have the derivative db/dp = w·(M⁻¹ − b·1ᵀM⁻¹), and the UVs (uv = T·b, T the
    triangle's [2,3] corner UVs) have duv/dp = w·(T·M⁻¹ − uv·1ᵀM⁻¹). Row k of M⁻¹ is the edge
    function p_{k+1} × p_{k+2} over det M = p_0·(p_1 × p_2): a few cross products per triangle,
    a gather and a few products per pixel, and no finite differences across silhouettes or UV
    seams.

    Args:
        clip_space_vertices: [B,V,4] float, the clip coordinates the rasterizer was given.
        triangles: [F,3] int64.
        triangle_ids: [B,H,W] int64 and barycentrics: [B,H,W,3] float, from
            :func:`rasterize_triangles` on those coordinates.
        uvs: [B,V,2] float per-vertex UVs; pixel_uvs: [B,H,W,2] float, their interpolation.
    Returns:
        [B,H,W,4] float (du/dx, dv/dx, du/dy, dv/dy) per pixel step along a row (x) and from one
        row to the next (y, the rasterizer's row order); 0 where nothing is drawn, NaN on a
        triangle whose clip matrix is singular. Not differentiable.
    """
    with torch.no_grad():
        batch, height, width = triangle_ids.shape
        corners = clip_space_vertices[:, triangles][..., [0, 1, 3]]      # [B,F,3 corners,(x,y,w)]
        edges = torch.linalg.cross(corners.roll(-1, 2), corners.roll(-2, 2), dim=-1)
        determinant = (corners[..., 0, :] * edges[..., 0, :]).sum(-1)[..., None, None]
        inverse = torch.where(determinant != 0, edges / determinant, torch.nan)  # rows of M⁻¹: [B,F,3,3]
        # NDC spans 2 over the image's width and height: a pixel step is 2/W in x and 2/H in y.
        step = inverse.new_tensor([2.0 / width, 2.0 / height])
        uv_by_corner = uvs[:, triangles].transpose(-1, -2)                # [B,F,2,3]
        uv_gradient = (uv_by_corner @ inverse)[..., :2] * step            # T·M⁻¹ per pixel step: [B,F,(u,v),(x,y)]
        column_sums = (inverse.sum(-2)[..., :2] * step).repeat_interleave(2, dim=-1)  # 1ᵀM⁻¹: x, x, y, y
        per_triangle = torch.cat([uv_gradient.transpose(-1, -2).flatten(-2), column_sums,
                                  corners[..., 2]], dim=-1)               # [B,F,4+4+3]
        drawn = torch.nonzero(coverage(barycentrics)[..., 0] > 0, as_tuple=True)  # only these need the work
        uv_by_axis, sums, corner_w = per_triangle[drawn[0], triangle_ids[drawn]].split([4, 4, 3], dim=-1)
        w = (barycentrics[drawn].to(corner_w.dtype) * corner_w).sum(-1, keepdim=True)
        derivatives = pixel_uvs.new_zeros(batch, height, width, 4)
        derivatives[drawn] = (uv_by_axis - pixel_uvs[drawn].repeat(1, 2) * sums) * w
        return derivatives


def _per_batch(t: Tensor, batch: int, dims: int) -> Tensor:
    """Adds the batch dimension to an unbatched tensor (e.g. [3] -> [B,3])."""
    return t.expand(batch, *t.shape) if t.dim() == dims - 1 else t


def render(vertices: Tensor, triangles: Tensor, normals: Tensor, diffuse_colors: Tensor,
           camera_position: Tensor, camera_lookat: Tensor, camera_up: Tensor,
           light_positions: Tensor, light_intensities: Tensor, image_width: int, image_height: int,
           specular_colors: Optional[Tensor] = None, shininess_coefficients: Optional[Tensor] = None,
           ambient_color: Optional[Tensor] = None, fov_y: float | Tensor = 40.0,
           near_clip: float = 0.01, far_clip: float = 10.0, antialias: bool = False,
           uvs: Optional[Tensor] = None, texture: Optional[Tensor] = None,
           texture_filter: str = "trilinear", clip_matrices: Optional[Tensor] = None) -> Tensor:
    """Phong-shaded render (tf_mesh_renderer's ``mesh_renderer``), optionally UV-textured.

    Args:
        vertices: [B,V,3] float world-space positions.
        triangles: [F,3] int, counter-clockwise = front (both sides are drawn).
        normals: [B,V,3] float vertex normals.
        diffuse_colors: [B,V,3] float; ignored (may be None) when ``texture`` is given.
        camera_position, camera_lookat, camera_up: [B,3] (or [3]) float.
        light_positions: [B,L,3] float; light_intensities: [B,L,3] RGB or [B,L] float.
        image_width, image_height: output size.
        specular_colors: [B,V,3] float or None; shininess_coefficients: [B,V] or [B] float.
        ambient_color: [B,3] float or None.
        fov_y: degrees, float or [B]; near_clip, far_clip: floats.
        antialias: apply :func:`diffrender.antialias.antialias` to the RGBA, which smooths
            silhouette edges and gives them gradients with respect to the vertices.
        uvs: [B,V,2] or [V,2] float per-vertex texture coordinates (v = 0 at the bottom of the
            image), with ``texture``.
        texture: [B,Ht,Wt,3] or [Ht,Wt,3] float RGB, row 0 the top of the image. Each pixel's
            diffuse colour is the texture sampled (repeating, ``boundary="wrap"``) at its
            perspective-correct interpolated UV; it replaces ``diffuse_colors``.
        texture_filter: "bilinear", or "trilinear" (mip-mapped, its level of detail from
            :func:`uv_screen_derivatives`), which keeps minified textures from aliasing.
        clip_matrices: [B,4,4] float world-to-clip matrices of these cameras at this aspect
            ratio, when the caller already has them (a fit's fixed cameras); None computes them.
    Returns:
        [B,H,W,4] float RGBA with row 0 at the top; alpha is the coverage mask (fractional along
        silhouettes when antialiased). Differentiable with respect to the texture and, through the
        barycentrics of the sampled UVs, the vertices.

    Raises:
        ValueError, TypeError: an argument of the wrong shape, dtype or range, named in the message.
        IndexError: a triangle index outside [0, V).
    """
    check_vertices(vertices)
    check_per_vertex(normals, "normals", vertices)
    if texture is None:
        check_per_vertex(diffuse_colors, "diffuse_colors", vertices, " (or give uvs and a texture)")
    batch = vertices.shape[0]
    if (uvs is None) != (texture is None):
        raise ValueError("render: uvs and texture go together")
    eye = _per_batch(camera_position, batch, 2)
    lookat = _per_batch(camera_lookat, batch, 2)
    up = _per_batch(camera_up, batch, 2)
    if specular_colors is not None and shininess_coefficients is None:
        raise ValueError("render: specular_colors needs shininess_coefficients")
    cam = camera_lib.Camera(eye, lookat, up, fov_y=fov_y, near=near_clip, far=far_clip)
    triangles = check_triangles(triangles)
    clip = camera_lib.transform_homogeneous(cam.matrices_or_given(image_width / image_height, clip_matrices),
                                            vertices)
    # Mirroring clip y renders row 0 at the top directly: the edge functions only change sign
    # exactly, so this is bit-identical to rasterizing and then flipping the image.
    clip = clip * clip.new_tensor([1.0, -1.0, 1.0, 1.0])
    ids, bary, z_buffer = rasterize_triangles(clip, triangles, image_width, image_height)

    shininess = shininess_coefficients if specular_colors is not None else None
    if shininess is not None and shininess.dim() == 1:
        shininess = shininess.view(batch, 1).expand(batch, vertices.shape[1])
    if texture is not None:
        diffuse_colors = _textured_diffuse(clip, triangles, ids, bary, _per_batch(uvs, batch, 3), texture,
                                           texture_filter)
    rgba = shade_pixels(triangles, ids, bary, vertices, normals, diffuse_colors, eye, light_positions,
                        light_intensities, specular_colors, shininess, ambient_color)
    if antialias:
        # The mirrored clip vertices are the ones the rasterizer saw.
        rgba = _antialias_lib.antialias(rgba, ids, clip, triangles, barycentrics=bary, z_buffer=z_buffer)
    return rgba


def _textured_diffuse(clip: Tensor, triangles: Tensor, triangle_ids: Tensor, barycentrics: Tensor, uvs: Tensor,
                      texture: Tensor, texture_filter: str) -> Tensor:
    """[B,H,W,3] per-pixel diffuse colours: ``texture`` sampled at the interpolated ``uvs``."""
    if uvs.dim() != 3 or uvs.shape[-1] != 2 or uvs.shape[:2] != clip.shape[:2]:
        raise ValueError(f"render: uvs must have shape [B,V,2] or [V,2] for {clip.shape[1]} vertices, "
                         f"got {list(uvs.shape)}")
    uvs = uvs.to(clip.dtype).contiguous()
    pixel_uvs = interpolate(uvs, triangles, triangle_ids, barycentrics)
    uv_da = None
    if texture_filter == "trilinear":
        uv_da = uv_screen_derivatives(clip, triangles, triangle_ids, barycentrics, uvs, pixel_uvs)
    # NaN marks the background, which the sampler skips (value 0, no gradient).
    pixel_uvs = torch.where(coverage(barycentrics) > 0, pixel_uvs, torch.nan)
    return texture_lib.sample(texture.to(clip.dtype), pixel_uvs, filter=texture_filter, boundary="wrap",
                              uv_da=uv_da)


def tone_mapper(image: Tensor, gamma: float) -> Tensor:
    """Gamma tone mapping of [B,H,W,C] RGB(A) images: clamp to [0,1], then x^(1/gamma) on RGB."""
    rgb = image[..., :3].clamp(0.0, 1.0).pow(1.0 / gamma)
    return torch.cat([rgb, image[..., 3:]], dim=-1)
