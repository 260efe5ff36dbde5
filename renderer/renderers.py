"""The renderer interface shared by the CLI and users: one call signature, two implementations.

    renderer = make_renderer("soft", sigma=1e-4)
    rgba = renderer(vertices, faces, colors, camera, lights, material, image_size=(256, 256))
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, Tuple

from torch import Tensor

from . import barycentric, soft
from .camera import Camera
from .mesh import vertex_normals
from .shading import Material, PointLights


class Renderer(Protocol):
    """Renders a batch of meshes sharing one topology.

    Args:
        vertices: [B,V,3] float world-space positions.
        faces: [F,3] int64, counter-clockwise = front.
        colors: [B,V,3] float diffuse colours.
        camera: a batch of B cameras.
        lights: point lights ([B,L,3] positions and intensities).
        material: ambient / specular settings.
        image_size: (height, width) in pixels.
        normals: [B,V,3] float, or None for area-weighted vertex normals.
        uvs: [B,V,2] or [V,2] float per-vertex texture coordinates (v = 0 at the bottom of the
            image), given together with ``texture``.
        texture: [B,Ht,Wt,3] or [Ht,Wt,3] float RGB in [0,1], row 0 the top of the image. When
            given, the texture sampled at the surface's UVs is the diffuse colour, replacing
            ``colors``.
        clip_matrices: [B,4,4] float, ``camera.matrices(W/H)`` when the caller already has them.
    Returns:
        [B,H,W,4] float RGBA, row 0 at the top; alpha is coverage.
    """

    name: str

    def __call__(self, vertices: Tensor, faces: Tensor, colors: Tensor, camera: Camera,
                 lights: PointLights, material: Material, image_size: Tuple[int, int],
                 normals: Optional[Tensor] = None, uvs: Optional[Tensor] = None,
                 texture: Optional[Tensor] = None, clip_matrices: Optional[Tensor] = None) -> Tensor: ...


def _specular_inputs(material: Material, vertices: Tensor):
    """Per-vertex specular colours [B,V,3] and shininess [B,V] from a material (or Nones)."""
    if material.specular is None:
        return None, None
    batch, count = vertices.shape[:2]
    specular = material.specular.reshape(batch, 1, 3).expand(batch, count, 3)
    shininess = vertices.new_tensor(material.shininess) if not isinstance(material.shininess, Tensor) \
        else material.shininess
    return specular, shininess.reshape(-1, 1).expand(batch, count)


@dataclass
class BarycentricRenderer:
    """tf_mesh_renderer's hard z-buffer renderer with per-pixel Phong shading.

    Attributes:
        antialias: analytic antialiasing of silhouette edges (nvdiffrast-style), which also gives
            silhouettes and occlusion boundaries gradients with respect to the vertices.
        texture_filter: "trilinear" (mip-mapped) or "bilinear" sampling of textures.
    """

    name: str = "barycentric"
    antialias: bool = False
    texture_filter: str = "trilinear"

    def __call__(self, vertices, faces, colors, camera, lights, material, image_size, normals=None, uvs=None,
                 texture=None, clip_matrices=None):
        height, width = image_size
        normals = vertex_normals(vertices, faces) if normals is None else normals
        specular, shininess = _specular_inputs(material, vertices)
        return barycentric.render(
            vertices, faces, normals, colors, camera.eye, camera.lookat, camera.up, lights.positions,
            lights.intensities, width, height, specular_colors=specular,
            shininess_coefficients=shininess, ambient_color=material.ambient, fov_y=camera.fov_y,
            near_clip=camera.near, far_clip=camera.far, antialias=self.antialias, uvs=uvs, texture=texture,
            texture_filter=self.texture_filter, clip_matrices=clip_matrices)


@dataclass
class SoftRenderer:
    """SoftRas: sigmoid coverage of the distance to each triangle, softmax over depth.

    Attributes:
        sigma: coverage sharpness σ (NDC units squared); smaller is sharper.
        gamma: depth softmax temperature γ; smaller is closer to a z-buffer.
        aggr_func_rgb: 'softmax' or 'hard'. aggr_func_alpha: 'prod', 'sum' or 'hard'.
        dist_func: 'euclidean' or 'barycentric'. cull_backfaces: skip clockwise triangles.
    """

    sigma: float = 1e-4
    gamma: float = 1e-4
    aggr_func_rgb: str = "softmax"
    aggr_func_alpha: str = "prod"
    dist_func: str = "euclidean"
    cull_backfaces: bool = False
    name: str = "soft"

    def __call__(self, vertices, faces, colors, camera, lights, material, image_size, normals=None, uvs=None,
                 texture=None, clip_matrices=None):
        height, width = image_size
        specular, shininess = _specular_inputs(material, vertices)
        return soft.render(
            vertices, faces, colors, camera.eye, camera.lookat, camera.up, lights.positions,
            lights.intensities, width, height, sigma_val=self.sigma, gamma_val=self.gamma,
            fov_y=camera.fov_y, near_clip=camera.near, far_clip=camera.far, normals=normals,
            specular_colors=specular, shininess=shininess, ambient_color=material.ambient,
            aggr_func_rgb=self.aggr_func_rgb, aggr_func_alpha=self.aggr_func_alpha,
            dist_func=self.dist_func, cull_backfaces=self.cull_backfaces, uvs=uvs, texture=texture,
            clip_matrices=clip_matrices)


RENDERERS = {"barycentric": BarycentricRenderer, "soft": SoftRenderer}


def make_renderer(name: str, **settings) -> Renderer:
    """A renderer by name ('barycentric' or 'soft') with its settings."""
    if name not in RENDERERS:
        raise ValueError(f"unknown renderer '{name}'; choose one of: {', '.join(RENDERERS)}")
    return RENDERERS[name](**settings)
