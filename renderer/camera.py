"""Camera matrices with tf_mesh_renderer's conventions (OpenGL: the camera looks down -z, clip
space is [-1,1]³), plus a batched :class:`Camera` for the renderers.

Every function is batched and differentiable with respect to every float input.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Union

import torch
from torch import Tensor

from .tensor_dataclass import TensorDataclass

FloatOrTensor = Union[float, Tensor]


def _batched(value: FloatOrTensor, batch: int, like: Tensor | None = None) -> Tensor:
    """A float or a [B] tensor as a [B] tensor (broadcasting a scalar over the batch)."""
    if isinstance(value, Tensor):
        value = value.reshape(-1)
        return value.expand(batch) if value.numel() == 1 else value
    dtype = like.dtype if like is not None else torch.get_default_dtype()
    device = like.device if like is not None else None
    return torch.full((batch,), float(value), dtype=dtype, device=device)


NORMALIZE_EPS = 1e-12


def _normalize(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(NORMALIZE_EPS)


def _side_axis(forward: Tensor, world_up: Tensor) -> Tensor:
    """[B,3] unit image-right axes: perpendicular to ``forward`` and ``world_up``.

    Where the two are parallel (a camera looking straight along its up, as an orbit at elevation
    ±90° or a fitted eye that drifts there) that cross product vanishes, and normalising it would
    collapse the scene onto one point; there the axis is taken perpendicular to the world axis
    least aligned with ``forward`` instead. Only those views change: "vanishes" is the bound
    below which :func:`_normalize` cannot scale a vector up. No branch reads the tensors on the
    host, so a batch on a GPU is not synchronised.
    """
    side = torch.cross(forward, world_up, dim=-1)
    axes = torch.eye(3, dtype=forward.dtype, device=forward.device)
    fallback = torch.cross(forward, axes[forward.detach().abs().argmin(dim=-1)], dim=-1)
    vanishes = side.detach().norm(dim=-1, keepdim=True) < NORMALIZE_EPS
    return _normalize(torch.where(vanishes, fallback, side))


def look_at(eye: Tensor, center: Tensor, world_up: Tensor) -> Tensor:
    """World-to-eye matrices.

    Args:
        eye, center, world_up: [B,3] float; the camera position, the point it looks at and the
            world's up direction. Where ``world_up`` is parallel to the view direction (or zero),
            the image's up is taken from the world axis least aligned with the view instead.
    Returns:
        [B,4,4] float: maps world points to eye space, where the camera sits at the origin looking
        down -z with +y up.
    """
    for name, t in (("eye", eye), ("center", center), ("world_up", world_up)):
        if t.dim() != 2 or t.shape[-1] != 3:
            raise ValueError(f"look_at: {name} must have shape [B,3], got {list(t.shape)}")
        if t.dtype != eye.dtype or t.device != eye.device:
            raise TypeError(f"look_at: eye is {eye.dtype} on {eye.device} but {name} {t.dtype} on {t.device}: "
                            "give the camera's tensors one dtype and device")
    forward = _normalize(center - eye)
    side = _side_axis(forward, world_up)
    up = torch.cross(side, forward, dim=-1)
    rotation = torch.stack([side, up, -forward], dim=1)  # [B,3,3]
    translation = -(rotation @ eye.unsqueeze(-1))  # [B,3,1]
    top = torch.cat([rotation, translation], dim=2)
    bottom = torch.zeros_like(top[:, :1, :])
    bottom = torch.cat([bottom[..., :3], torch.ones_like(bottom[..., 3:])], dim=2)
    return torch.cat([top, bottom], dim=1)


def _check_projection_floats(aspect_ratio: FloatOrTensor, fov_y: FloatOrTensor, near_clip: FloatOrTensor,
                             far_clip: FloatOrTensor) -> None:
    """The ranges in which a perspective projection is finite, for the arguments given as floats."""
    def given(value):
        return not isinstance(value, Tensor)

    if given(aspect_ratio) and not 0 < aspect_ratio < math.inf:
        raise ValueError(f"perspective: aspect_ratio must be a positive finite number, got {aspect_ratio}")
    if given(fov_y) and not 0 < fov_y < 180:
        raise ValueError(f"perspective: fov_y must lie in (0, 180) degrees, got {fov_y}")
    if given(near_clip) and not 0 < near_clip < math.inf:
        raise ValueError(f"perspective: near_clip must be a positive finite number, got {near_clip}")
    if given(far_clip) and not (far_clip < math.inf and (not given(near_clip) or near_clip < far_clip)):
        raise ValueError(f"perspective: far_clip must be finite and beyond near_clip, got near {near_clip}, "
                         f"far {far_clip}")


def perspective(aspect_ratio: FloatOrTensor, fov_y: FloatOrTensor, near_clip: FloatOrTensor,
                far_clip: FloatOrTensor) -> Tensor:
    """OpenGL perspective projections.

    Args:
        aspect_ratio: width / height, a float or [B].
        fov_y: vertical field of view in degrees, a float or [B].
        near_clip, far_clip: distances to the clipping planes, floats or [B].
    Returns:
        [B,4,4] float (B = 1 when every argument is a float).
    Raises:
        ValueError: a float argument out of its range. Tensor arguments are not read on the host,
            so a batch on a GPU is not synchronised.
    """
    _check_projection_floats(aspect_ratio, fov_y, near_clip, far_clip)
    args = [aspect_ratio, fov_y, near_clip, far_clip]
    tensors = [a for a in args if isinstance(a, Tensor)]
    batch = max([t.numel() for t in tensors], default=1)
    like = tensors[0] if tensors else None
    aspect, fov, near, far = (_batched(a, batch, like) for a in args)
    focal = 1.0 / torch.tan(fov * (math.pi / 360.0))
    zero = torch.zeros_like(focal)
    depth_range = near - far
    rows = [
        [focal / aspect, zero, zero, zero],
        [zero, focal, zero, zero],
        [zero, zero, (near + far) / depth_range, 2.0 * near * far / depth_range],
        [zero, zero, -torch.ones_like(focal), zero],
    ]
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=1)


def transform_homogeneous(matrices: Tensor, vertices: Tensor) -> Tensor:
    """Applies [B,4,4] matrices to [B,V,3] points, returning homogeneous [B,V,4] points."""
    if matrices.dim() != 3 or matrices.shape[1:] != (4, 4):
        raise ValueError(f"transform_homogeneous: matrices must be [B,4,4], got {list(matrices.shape)}")
    if vertices.dim() != 3 or vertices.shape[-1] != 3:
        raise ValueError(f"transform_homogeneous: vertices must be [B,V,3], got {list(vertices.shape)}")
    if vertices.dtype != matrices.dtype or vertices.device != matrices.device:
        raise TypeError(f"transform_homogeneous: the vertices are {vertices.dtype} on {vertices.device} but the "
                        f"camera matrices {matrices.dtype} on {matrices.device}: give the vertices and the "
                        "cameras one float dtype and device")
    homogeneous = torch.cat([vertices, torch.ones_like(vertices[..., :1])], dim=-1)
    return homogeneous @ matrices.transpose(1, 2)


def euler_matrices(angles: Tensor) -> Tensor:
    """Rotation matrices R = Rz(a2)·Ry(a1)·Rx(a0) from [B,3] angles in radians, as [B,4,4]."""
    if angles.dim() != 2 or angles.shape[-1] != 3:
        raise ValueError(f"euler_matrices: angles must be [B,3], got {list(angles.shape)}")
    s, c = torch.sin(angles), torch.cos(angles)
    s0, s1, s2 = s.unbind(-1)
    c0, c1, c2 = c.unbind(-1)
    zero, one = torch.zeros_like(s0), torch.ones_like(s0)
    rows = [
        [c2 * c1, c2 * s1 * s0 - c0 * s2, s2 * s0 + c2 * c0 * s1, zero],
        [c1 * s2, c2 * c0 + s2 * s1 * s0, c0 * s2 * s1 - c2 * s0, zero],
        [-s1, c1 * s0, c1 * c0, zero],
        [zero, zero, zero, one],
    ]
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=1)


@dataclass
class Camera(TensorDataclass):
    """A batch of pinhole cameras.

    Attributes:
        eye: [B,3] float, camera positions in world space.
        lookat: [B,3] float, the points the cameras look at.
        up: [B,3] float, world up directions.
        fov_y: vertical field of view in degrees; float or [B].
        near, far: clipping distances (floats).
    """

    eye: Tensor
    lookat: Tensor
    up: Tensor
    fov_y: FloatOrTensor = 40.0
    near: float = 0.01
    far: float = 10.0

    @property
    def batch_size(self) -> int:
        return self.eye.shape[0]

    def view_matrices(self) -> Tensor:
        """[B,4,4] world-to-eye matrices."""
        return look_at(self.eye, self.lookat, self.up)

    def matrices(self, aspect_ratio: float) -> Tensor:
        """[B,4,4] world-to-clip matrices (projection · view)."""
        _check_projection_floats(aspect_ratio, self.fov_y, self.near, self.far)
        projection = perspective(aspect_ratio, _batched(self.fov_y, self.batch_size, self.eye),
                                 self.near, self.far)
        return projection @ self.view_matrices()

    def matrices_or_given(self, aspect_ratio: float, given: Tensor | None) -> Tensor:
        """``given``, these cameras' world-to-clip matrices (float [B,4,4]) that a caller
        computed once for many renders, after checking its shape; else :meth:`matrices`."""
        if given is None:
            return self.matrices(aspect_ratio)
        if not isinstance(given, Tensor) or given.shape != (self.batch_size, 4, 4):
            got = list(given.shape) if isinstance(given, Tensor) else type(given).__name__
            raise ValueError(f"clip_matrices must have shape [{self.batch_size}, 4, 4], got {got}")
        return given

    @staticmethod
    def orbit(azimuth_deg: Tensor, elevation_deg: Tensor, distance: Tensor, lookat: Tensor,
              **settings) -> "Camera":
        """Cameras on a sphere around ``lookat`` ([B] angles in degrees and distances, lookat
        [B,3]). Azimuth 0 and elevation 0 look from +z towards -z, with +y up.

        Each camera's up is the orbit's own direction of rising elevation, which is +y tilted
        into the image plane: below the poles it gives the frame that +y gives, and at
        elevation ±90° (where +y is the view axis) the limit of that frame, so a camera that
        rises over a pole turns continuously instead of losing its roll.
        """
        az, el = torch.deg2rad(azimuth_deg), torch.deg2rad(elevation_deg)
        sin_az, cos_az, sin_el, cos_el = torch.sin(az), torch.cos(az), torch.sin(el), torch.cos(el)
        offset = torch.stack([cos_el * sin_az, sin_el, cos_el * cos_az], dim=-1)
        eye = lookat + distance.unsqueeze(-1) * offset
        up = torch.stack([-sin_el * sin_az, cos_el, -sin_el * cos_az], dim=-1)
        return Camera(eye=eye, lookat=lookat, up=up.expand_as(eye).contiguous(), **settings)


def frame_vertices(vertices: Tensor, azimuth_deg: float | Sequence[float], elevation_deg: float,
                   fov_y: float = 40.0, aspect_ratio: float = 1.0, fill: float = 0.8,
                   distance: float | None = None) -> Camera:
    """Cameras that frame a mesh without moving it.

    They look at the centre of the [V,3] vertices' bounding box from each azimuth (degrees) at
    the given elevation. Unless ``distance`` is given, they stand just far enough that the
    projected mesh spans ``fill`` of the tighter image side in every view (one distance for all
    views, so a turntable does not zoom). Returns a :class:`Camera` with one entry per azimuth.
    """
    points = vertices.detach().reshape(-1, 3)
    center = (points.min(0).values + points.max(0).values) / 2
    azimuths = torch.as_tensor(azimuth_deg, dtype=points.dtype, device=points.device).reshape(-1)
    batch = azimuths.shape[0]
    elevations = torch.full_like(azimuths, float(elevation_deg))
    unit = Camera.orbit(azimuths, elevations, torch.ones_like(azimuths), center.expand(batch, 3))
    radius = float((points - center).norm(dim=-1).max().clamp_min(1e-6))
    if distance is None:
        # In eye space at distance d, a point (u, v, -(d - t)) projects to u / ((d - t) tan(fov/2)):
        # requiring |projection| <= fill for every point gives d >= t + max(|u|/tx, |v|/ty) / fill.
        rotation = unit.view_matrices()[:, :3, :3]
        relative = (points - center) @ rotation.transpose(1, 2)  # [B,V,3] in eye axes
        tan_y = math.tan(math.radians(fov_y) / 2)
        extent = torch.maximum(relative[..., 0].abs() / (tan_y * aspect_ratio), relative[..., 1].abs() / tan_y)
        distance = float((relative[..., 2] + extent / fill).max().clamp_min(radius * 1e-3))
    near = max(distance - 2.0 * radius, distance * 1e-3)
    far = distance + 2.0 * radius
    return Camera.orbit(azimuths, elevations, torch.full_like(azimuths, distance), center.expand(batch, 3),
                        fov_y=fov_y, near=near, far=far)
