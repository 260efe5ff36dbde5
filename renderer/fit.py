"""Fitting shape, pose, camera, vertex colours and textures to target images by gradient descent.

The engine behind ``diffrender fit``. A :class:`FitProblem` holds the template mesh, the views
(cameras and ``[B,H,W,4]`` targets), lights and settings; :func:`run_fit` optimises it, renders
every view in one batched renderer call per step, and hands images and states to a
:class:`~diffrender.fit_outputs.FitRecorder`, which writes the output folder.

Parameterisation inside the optimiser:

- ``vertices``: the template's ``[V,3]`` positions, in the mesh's own frame (before the pose).
- ``pose``: an axis-angle vector ω (``[3]``, starting at 0) composed with the initial rotation,
  ``R = exp(ω)·R0``, and a translation t; vertices and normals are posed as ``v @ Rᵀ + t``.
  Euler angles (``R = Rz·Ry·Rx``, radians) appear only in inputs and reports.
- ``camera``: the ``[B,3]`` eyes, and optionally the ``[B,3]`` look-at points and ``[B]`` fields
  of view (degrees); the up vectors stay fixed.
- ``colors``: ``[V,3]`` RGB, projected back into [0,1] after every step.
- ``texture``: a ``[S,S,3]`` RGB texture (S = ``texture_size``) sampled through the template's
  UVs, replacing the vertex colours; uniform 0.5 grey at first, or the template's own texture
  resized (``texture_init = "mesh"``), and projected back into [0,1] after every step (like the
  colours: a clamp keeps the rendered colours linear in the texels, where a logit would slow the
  fit down near black and white). Its gradients come from the RGB loss; ``texture_tv`` adds a
  total-variation term that smooths it.

The soft renderer's σ, and the learning rate, can be annealed geometrically (to ``sigma_final``
and ``lr_final``) over the steps from ``anneal_start·steps`` on, so that a fit that needs soft
edges early on ends close to hard silhouettes without jitter. Silhouette IoU is always measured
on hard silhouettes: the barycentric rasterizer's binary coverage of the posed mesh against
target alpha > 0.5. Fits whose losses use alpha alone (soft renderer, no RGB term) skip shading.

A fit is deterministic: the only randomness (``views_per_step`` sampling) comes from a generator
seeded with ``seed``, and on the CPU every kernel reduces in a fixed order, so the same problem
gives bit-identical results.

``states.pt`` (for replays such as ``diffrender animate``) is a ``torch.save``'d dict with one
entry per video frame (the states at steps 0, frame_every, 2·frame_every, … and the final one):

- ``format``: 2; ``faces``: int64 ``[F,3]``;
- ``targets``: uint8 ``[B,H,W,3]``, the views' targets over white, as the previews show them;
- ``steps``: int64 ``[N]``, the number of completed optimiser steps of each frame;
- ``vertices``: float32 ``[N,V,3]`` in the mesh's own frame (before the pose);
- ``rotation``: float32 ``[N,3,3]`` and ``translation``: float32 ``[N,3]``, the pose;
- ``eye``, ``lookat``: float32 ``[N,B,3]``; ``fov``: float32 ``[N,B]``; ``up``: float32 ``[B,3]``;
- ``colors``: float32 ``[N,V,3]`` (``[1,V,3]`` when colours are not fitted);
- ``sigma``: float32 ``[N]``, the soft renderer's σ at that step;
- texture fits only (older readers ignore them): ``uvs``: float32 ``[V,2]`` and ``texture``:
  uint8 ``[N,S,S,3]``, the texture of each state (8 bits keep 101 states of a 512² texture at
  79 MB).

``params.json`` names the views' target files and initial cameras under ``"views"``.
"""
from __future__ import annotations

import dataclasses
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from . import barycentric, soft
from .camera import Camera, euler_matrices, transform_homogeneous
from .losses import (MeshTopology, edge_length, flatten_loss, hard_iou, normal_consistency,
                     rgb_mse, silhouette_mse, soft_iou_loss, total_variation, uniform_laplacian)
from .renderers import make_renderer
from .shading import Material, PointLights
from .tensor_dataclass import TensorDataclass
from .texture import FILTERS as TEXTURE_FILTERS

FIT_PARAMS = ("vertices", "pose", "camera", "colors", "texture")
CAMERA_PARTS = ("eye", "lookat", "fov")
POSE_PARTS = ("rotation", "translation")
LOSS_TERMS = ("silhouette", "iou", "rgb", "edge", "laplacian", "normal", "flatten", "texture_tv")
OPTIMIZERS = ("sgd", "adam")
TEXTURE_INITS = ("grey", "mesh")
# The grey a learned texture starts from (texture_init = "grey").
TEXTURE_GREY = 0.5
MAX_TEXTURE_SIZE = 4096


class FitError(ValueError):
    """A fit cannot start (bad settings or inputs); the message is one line."""


# --------------------------------------------------------------------------------------------
# Rotations
# --------------------------------------------------------------------------------------------


def axis_angle_matrix(rotvec: Tensor) -> Tensor:
    """Rodrigues' formula: float ``[3]`` axis·angle (radians) → ``[3,3]`` rotation matrix.

    Near 0 the coefficients switch to their Taylor series, so the gradient at ω = 0 (where every
    pose fit starts) is finite and exact.
    """
    theta2 = (rotvec * rotvec).sum()
    small = theta2 < 1e-8
    safe2 = torch.where(small, torch.ones_like(theta2), theta2)
    theta = safe2.sqrt()
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / safe2)
    x, y, z = rotvec.unbind()
    zero = torch.zeros_like(x)
    skew = torch.stack([torch.stack([zero, -z, y]), torch.stack([z, zero, -x]), torch.stack([-y, x, zero])])
    return torch.eye(3, dtype=rotvec.dtype, device=rotvec.device) + a * skew + b * (skew @ skew)


def euler_from_matrix(rotation: Tensor) -> Tensor:
    """Euler angles (radians, ``R = Rz(a2)·Ry(a1)·Rx(a0)``) of a ``[3,3]`` rotation, as ``[3]``.

    a1 is in [-π/2, π/2]; at gimbal lock (|a1| = π/2) a0 is set to 0.
    """
    r = rotation.double()
    a1 = torch.asin((-r[2, 0]).clamp(-1.0, 1.0))
    if abs(float(r[2, 0])) < 1.0 - 1e-9:
        a0 = torch.atan2(r[2, 1], r[2, 2])
        a2 = torch.atan2(r[1, 0], r[0, 0])
    else:
        a0 = torch.zeros_like(a1)
        a2 = torch.atan2(-r[0, 1], r[1, 1])
    return (torch.stack([a0, a1, a2]) + 0.0).to(rotation.dtype)  # + 0.0 turns -0.0 into 0.0


def euler_rotation(euler: Sequence[float]) -> Tensor:
    """float32 ``[3,3]`` rotation of Euler angles in radians (``R = Rz·Ry·Rx``)."""
    return euler_matrices(torch.tensor([list(euler)], dtype=torch.float32))[0, :3, :3]


def camera_fovs(camera: Camera) -> Tensor:
    """The cameras' vertical fields of view (degrees) as float32 ``[B]``."""
    fov = camera.fov_y
    if isinstance(fov, Tensor):
        return fov.reshape(-1).expand(camera.batch_size).float().clone()
    return torch.full((camera.batch_size,), float(fov), device=camera.eye.device)


def rotation_angle_deg(first: Tensor, second: Tensor) -> float:
    """The angle (degrees) of the rotation taking ``[3,3]`` ``second`` to ``first``."""
    relative = first.double() @ second.double().T
    cos = ((torch.trace(relative) - 1.0) / 2.0).clamp(-1.0, 1.0)
    return math.degrees(float(torch.acos(cos)))


# --------------------------------------------------------------------------------------------
# Problem description
# --------------------------------------------------------------------------------------------


@dataclass
class Template(TensorDataclass):
    """The mesh being fitted.

    Attributes:
        vertices: float32 ``[V,3]``; faces: int64 ``[F,3]``.
        colors: float32 ``[V,3]`` initial diffuse colours.
        normals: float32 ``[V,3]`` fixed vertex normals (posed with the mesh), or None for
            area-weighted normals of the current shape.
        uvs: float32 ``[V,2]`` texture coordinates, or None; needed to fit a texture.
        texture: float32 ``[Ht,Wt,3]`` the mesh's own texture in [0,1], or None. Synthetic
            targets are drawn with it (replacing the colours); a fitted template starts from it
            with ``texture_init = "mesh"``, and otherwise is drawn in its colours.
    """

    vertices: Tensor
    faces: Tensor
    colors: Tensor
    normals: Optional[Tensor] = None
    uvs: Optional[Tensor] = None
    texture: Optional[Tensor] = None


@dataclass
class Pose(TensorDataclass):
    """A rigid transform ``v @ rotation.T + translation`` (float32 ``[3,3]`` and ``[3]``)."""

    rotation: Tensor
    translation: Tensor

    @staticmethod
    def from_euler(euler: Sequence[float], translation: Sequence[float] = (0.0, 0.0, 0.0)) -> "Pose":
        return Pose(euler_rotation(euler), torch.tensor(list(translation), dtype=torch.float32))

    def apply(self, points: Tensor) -> Tensor:
        """Poses float ``[..., 3]`` points."""
        return points @ self.rotation.T + self.translation


@dataclass
class Views:
    """The B views to fit.

    Attributes:
        camera: a :class:`Camera` batch of B (fov_y a float or ``[B]``).
        targets: float32 ``[B,H,W,4]`` RGBA in [0,1], RGB premultiplied by alpha, alpha the
            silhouette.
        names: B labels (the target files, or ``synthetic:i``).
    """

    camera: Camera
    targets: Tensor
    names: List[str]


@dataclass
class LossWeights:
    """The weight of each loss term (0 disables it); see :mod:`diffrender.losses`."""

    silhouette: float = 1.0
    iou: float = 0.0
    rgb: float = 0.0
    edge: float = 0.1
    laplacian: float = 0.1
    normal: float = 0.0
    flatten: float = 0.0
    texture_tv: float = 0.0

    def enabled(self) -> Dict[str, float]:
        return {name: getattr(self, name) for name in LOSS_TERMS if getattr(self, name) != 0.0}


@dataclass
class FitSettings:
    """How to optimise and what to write.

    ``views_per_step`` 0 renders every view each step; otherwise that many views are drawn at
    random (seeded) per step. ``sigma_final`` None keeps σ fixed. ``clip_grad_norm`` 0 disables
    clipping. ``texture_size``, ``texture_init`` (``"grey"`` or ``"mesh"``) and
    ``texture_filter`` (how the barycentric renderer samples it) shape a fitted texture.
    """

    params: Tuple[str, ...] = ("vertices",)
    camera_parts: Tuple[str, ...] = ("eye",)
    pose_parts: Tuple[str, ...] = POSE_PARTS
    steps: int = 1000
    optimizer: str = "sgd"
    lr: float = 4.0
    momentum: float = 0.1
    clip_grad_norm: float = 1.0
    views_per_step: int = 0
    seed: int = 0
    weights: LossWeights = field(default_factory=LossWeights)
    renderer: str = "soft"
    sigma: float = 1e-4
    gamma: float = 1e-4
    sigma_final: Optional[float] = None
    lr_final: Optional[float] = None
    anneal_start: float = 0.8
    preview_every: int = 100
    frame_every: int = 10
    fps: float = 20.0
    antialias: bool = True
    texture_size: int = 512
    texture_init: str = "grey"
    texture_filter: str = "trilinear"

    def check(self) -> None:
        """Raises FitError naming the first bad setting."""
        unknown = [p for p in self.params if p not in FIT_PARAMS]
        if unknown or not self.params:
            raise FitError(f"params must be a non-empty list of {', '.join(FIT_PARAMS)}; got {list(self.params)}")
        self._check_texture()
        for name, parts, allowed in (("camera", self.camera_parts, CAMERA_PARTS),
                                     ("pose", self.pose_parts, POSE_PARTS)):
            if not parts or any(part not in allowed for part in parts):
                raise FitError(f"{name} parts must be a non-empty list of {', '.join(allowed)}; got {list(parts)}")
        if self.optimizer not in OPTIMIZERS:
            raise FitError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got '{self.optimizer}'")
        if self.renderer not in ("soft", "barycentric"):
            raise FitError(f"renderer must be soft or barycentric, got '{self.renderer}'")
        if not self.weights.enabled():
            raise FitError("every loss weight is 0: enable at least one loss term")
        for name in ("steps", "lr", "sigma", "gamma", "preview_every", "frame_every", "fps", "sigma_final", "lr_final"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise FitError(f"{name} must be positive, got {value}")
        if not 0.0 <= self.anneal_start <= 1.0:
            raise FitError(f"anneal_start must lie in [0, 1], got {self.anneal_start}")

    def _check_texture(self) -> None:
        fitted = "texture" in self.params
        if fitted and "colors" in self.params:
            raise FitError('params "colors" and "texture" exclude each other: the texture replaces the vertex colours')
        if fitted and self.weights.rgb <= 0:
            raise FitError('params "texture" needs the RGB loss (loss.rgb > 0): only colours reach the texture')
        if self.weights.texture_tv > 0 and not fitted:
            raise FitError('loss.texture_tv applies to params "texture" only')
        if not 1 <= self.texture_size <= MAX_TEXTURE_SIZE:
            raise FitError(f"texture_size must lie in [1, {MAX_TEXTURE_SIZE}], got {self.texture_size}")
        if self.texture_init not in TEXTURE_INITS:
            raise FitError(f"texture_init must be one of {', '.join(TEXTURE_INITS)}, got '{self.texture_init}'")
        if self.texture_filter not in TEXTURE_FILTERS:
            raise FitError(f"texture_filter must be one of {', '.join(TEXTURE_FILTERS)}, got '{self.texture_filter}'")

    def check_template(self, template: "Template") -> None:
        """Raises FitError when the template lacks what the fitted parameters need."""
        if "texture" not in self.params:
            return
        if template.uvs is None:
            raise FitError('params "texture" needs a mesh with UV coordinates')
        if self.texture_init == "mesh" and template.texture is None:
            raise FitError('texture_init "mesh" needs a mesh with a texture')


@dataclass
class Truth:
    """The ground truth of a synthetic fit: its pose and the ``[B,3]`` true eyes."""

    pose: Pose
    eye: Tensor


@dataclass
class FitProblem:
    """Everything a fit needs. ``lights`` and ``material`` hold one entry per view (B)."""

    template: Template
    pose: Pose
    views: Views
    lights: PointLights
    material: Material
    image_size: Tuple[int, int]
    settings: FitSettings
    truth: Optional[Truth] = None

    def to(self, device: Union[str, torch.device]) -> "FitProblem":
        """A copy with every tensor on ``device`` (the fit then runs there)."""
        views = dataclasses.replace(self.views, camera=self.views.camera.to(device),
                                    targets=self.views.targets.to(device))
        truth = None if self.truth is None else Truth(self.truth.pose.to(device), self.truth.eye.to(device))
        return dataclasses.replace(self, template=self.template.to(device), pose=self.pose.to(device), views=views,
                                   lights=self.lights.to(device), material=self.material.to(device), truth=truth)


@dataclass
class StepReport:
    """What the progress display gets after each step (losses are unweighted term values)."""

    step: int
    steps: int
    total: float
    terms: Dict[str, float]
    iou: float
    sigma: float


@dataclass
class FitResult:
    """The outcome of :func:`run_fit`.

    Attributes:
        steps_completed: optimiser steps whose update the final state includes.
        stopped: 'finished', 'interrupted' or a message about a non-finite loss.
        iou: float32 ``[B]`` hard-silhouette IoU of the final state per view.
        state: the final :class:`FitState`.
        seconds: wall time of the optimisation loop.
    """

    steps_completed: int
    stopped: str
    iou: Tensor
    state: "FitState"
    seconds: float


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------


class FitState:
    """The optimised quantities (see the module docstring for their parameterisation)."""

    def __init__(self, problem: FitProblem):
        settings, camera = problem.settings, problem.views.camera
        self.faces = problem.template.faces
        self.normals = problem.template.normals
        self.base_rotation = problem.pose.rotation.clone()
        self.vertices = problem.template.vertices.clone()
        self.rotvec = torch.zeros(3, device=self.vertices.device)
        self.translation = problem.pose.translation.clone()
        self.colors = problem.template.colors.clone()
        self.uvs = problem.template.uvs
        self.texture = initial_texture(problem.template, settings) if "texture" in settings.params else None
        self.eye = camera.eye.clone()
        self.lookat = camera.lookat.clone()
        self.up = camera.up.clone()
        self.fov = camera_fovs(camera)
        self.near, self.far = camera.near, camera.far
        self.parameters: List[Tensor] = []
        pose = {"rotation": self.rotvec, "translation": self.translation}
        chosen = {"vertices": [self.vertices], "pose": [pose[part] for part in settings.pose_parts],
                  "colors": [self.colors], "texture": [self.texture],
                  "camera": [getattr(self, part) for part in settings.camera_parts]}
        for name in settings.params:
            for tensor in chosen[name]:
                tensor.requires_grad_(True)
                self.parameters.append(tensor)

    def surface(self) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        """The ``[V,2]`` UVs and ``[S,S,3]`` texture to draw with, or (None, None) for the colours."""
        return (None, None) if self.texture is None else (self.uvs, self.texture)

    def rotation(self) -> Tensor:
        """float32 ``[3,3]``: exp(ω)·R0, which is R0 while ω is not optimised (it stays 0)."""
        if not self.rotvec.requires_grad:
            return self.base_rotation
        return axis_angle_matrix(self.rotvec) @ self.base_rotation

    def pose(self) -> Pose:
        return Pose(self.rotation().detach(), self.translation.detach().clone())

    def posed(self) -> Tuple[Tensor, Optional[Tensor]]:
        """World-space vertices ``[V,3]`` and posed fixed normals ``[V,3]`` (or None)."""
        rotation = self.rotation()
        vertices = self.vertices @ rotation.T + self.translation
        normals = None if self.normals is None else self.normals @ rotation.T
        return vertices, normals

    def cameras(self, index: Optional[Tensor] = None) -> Camera:
        """The current cameras, all of them or those at ``index`` (int64 ``[b]``)."""
        pick = (lambda t: t) if index is None else (lambda t: t[index])
        return Camera(pick(self.eye), pick(self.lookat), pick(self.up), fov_y=pick(self.fov),
                      near=self.near, far=self.far)

    def snapshot(self) -> List[Tensor]:
        """Detached copies of the optimised tensors, for :meth:`restore`."""
        return [tensor.detach().clone() for tensor in self.parameters]

    def restore(self, snapshot: List[Tensor]) -> None:
        with torch.no_grad():
            for tensor, saved in zip(self.parameters, snapshot):
                tensor.copy_(saved)

    def is_finite(self) -> bool:
        return all(bool(torch.isfinite(tensor).all()) for tensor in self.parameters)


def initial_texture(template: Template, settings: FitSettings) -> Tensor:
    """float32 ``[S,S,3]``, S = ``texture_size``: grey, or the template's texture resized."""
    size = (settings.texture_size, settings.texture_size)
    if settings.texture_init == "mesh":
        return resize_image(template.texture.float(), size)
    return torch.full((*size, 3), TEXTURE_GREY, device=template.vertices.device)


# --------------------------------------------------------------------------------------------
# Rendering and losses
# --------------------------------------------------------------------------------------------


def _pick_scene(lights: PointLights, material: Material, index: Optional[Tensor]):
    """The lights and material of the views at ``index`` (all when None)."""
    if index is None:
        return lights, material
    pick = (lambda t: t[index] if isinstance(t, Tensor) and t.dim() > 0 else t)
    return (PointLights(lights.positions[index], lights.intensities[index]),
            Material(ambient=pick(material.ambient), specular=pick(material.specular),
                     shininess=pick(material.shininess)))


def render_views(renderer_name: str, sigma: float, gamma: float, vertices: Tensor, faces: Tensor,
                 colors: Tensor, camera: Camera, lights: PointLights, material: Material,
                 image_size: Tuple[int, int], normals: Optional[Tensor] = None, antialias: bool = True,
                 uvs: Optional[Tensor] = None, texture: Optional[Tensor] = None,
                 texture_filter: str = "trilinear", clip_matrices: Optional[Tensor] = None) -> Tensor:
    """One mesh seen by B cameras in a single renderer call.

    Args:
        antialias: with the barycentric renderer, analytic silhouette antialiasing (the only
            source of gradients where silhouettes move).
        vertices: float ``[V,3]`` world positions; colors: ``[V,3]``; normals: ``[V,3]`` or None.
        camera, lights, material: B views.
        uvs: float ``[V,2]`` and texture: float ``[Ht,Wt,3]``, which replaces the colours; or None.
        texture_filter: how the barycentric renderer samples the texture.
        clip_matrices: float ``[B,4,4]``, ``camera.matrices(W/H)`` when the caller already has them.
    Returns:
        float ``[B,H,W,4]`` RGBA, row 0 at the top.
    """
    settings = {"sigma": sigma, "gamma": gamma} if renderer_name == "soft" else \
        {"antialias": antialias, "texture_filter": texture_filter}
    renderer = make_renderer(renderer_name, **settings)
    batch = camera.batch_size
    expand = (lambda t: None if t is None else t.unsqueeze(0).expand(batch, *t.shape))
    return renderer(expand(vertices), faces, expand(colors), camera, lights, material, image_size,
                    normals=expand(normals), uvs=uvs, texture=texture, clip_matrices=clip_matrices)


def _clip_space(vertices: Tensor, camera: Camera, image_size: Tuple[int, int],
                clip_matrices: Optional[Tensor]) -> Tensor:
    """float ``[B,V,4]``: the ``[V,3]`` vertices in the clip space of each of the B views, through
    ``clip_matrices`` (``[B,4,4]``) when the caller already has them, else the camera's."""
    height, width = image_size
    return transform_homogeneous(camera.matrices_or_given(width / height, clip_matrices),
                                 vertices.unsqueeze(0).expand(camera.batch_size, -1, -1))


def soft_silhouettes(sigma: float, gamma: float, vertices: Tensor, faces: Tensor, camera: Camera,
                     image_size: Tuple[int, int], clip_matrices: Optional[Tensor] = None) -> Tensor:
    """The soft renderer's alpha alone, without shading: what silhouette-only fits need, at about
    half the cost of a shaded render.

    Args:
        vertices: float ``[V,3]`` world positions; faces: int64 ``[F,3]``; camera: B views.
        clip_matrices: float ``[B,4,4]``, ``camera.matrices(W/H)`` when the caller already has them.
    Returns:
        float ``[B,H,W,4]``: RGB 0, alpha equal to the shaded soft render's; row 0 at the top.
    """
    height, width = image_size
    clip = _clip_space(vertices, camera, image_size, clip_matrices)
    alpha = soft.rasterize(clip, faces, None, width, height, sigma_val=sigma, gamma_val=gamma,
                           near_clip=camera.near, far_clip=camera.far).flip(1)
    return torch.cat([torch.zeros_like(alpha).expand(-1, -1, -1, 3), alpha], dim=-1)


def render_targets(settings: FitSettings, mesh: Template, pose: Pose, camera: Camera, lights: PointLights,
                   material: Material, image_size: Tuple[int, int]) -> Tensor:
    """Synthetic targets: ``mesh`` posed by ``pose`` seen by ``camera`` with the fit's renderer
    settings (σ at its starting value), as float32 ``[B,H,W,4]`` premultiplied RGBA; a textured
    mesh is drawn with its texture."""
    with torch.no_grad():
        normals = None if mesh.normals is None else mesh.normals @ pose.rotation.T
        return render_views(settings.renderer, settings.sigma, settings.gamma, pose.apply(mesh.vertices),
                            mesh.faces, mesh.colors, camera, lights, material, image_size, normals,
                            settings.antialias, mesh.uvs, mesh.texture, settings.texture_filter).float()


def resize_image(image: Tensor, image_size: Tuple[int, int]) -> Tensor:
    """Antialiased bilinear resize of a float ``[H,W,C]`` image to ``(height, width)``."""
    resized = torch.nn.functional.interpolate(image.permute(2, 0, 1).unsqueeze(0), size=image_size,
                                              mode="bilinear", align_corners=False, antialias=True)
    return resized[0].permute(1, 2, 0).clamp(0.0, 1.0).contiguous()


def silhouette_target(rgba: Tensor, has_alpha: bool, background: Optional[Sequence[float]] = None,
                      threshold: float = 0.1) -> Tensor:
    """A fit target from an image: premultiplied RGBA whose alpha is the silhouette.

    Args:
        rgba: float32 ``[H,W,4]`` in [0,1] (straight alpha, as :func:`diffrender.images.load_image`
            returns it).
        has_alpha: use the image's alpha as the silhouette; otherwise a pixel belongs to the
            object when some channel differs from ``background`` by more than ``threshold``.
        background: RGB in [0,1], or None for the median colour of the image border.
    Returns:
        float32 ``[H,W,4]``.
    """
    if has_alpha:
        alpha = rgba[..., 3]
    else:
        rgb = rgba[..., :3]
        if background is None:
            border = torch.cat([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
            colour = border.median(dim=0).values
        else:
            colour = torch.tensor(list(background), dtype=rgb.dtype)
        alpha = ((rgb - colour).abs().amax(-1) > threshold).to(rgb.dtype)
    return torch.cat([rgba[..., :3] * alpha.unsqueeze(-1), alpha.unsqueeze(-1)], dim=-1)


def hard_silhouettes(vertices: Tensor, faces: Tensor, camera: Camera, image_size: Tuple[int, int],
                     clip_matrices: Optional[Tensor] = None) -> Tensor:
    """Binary coverage of the barycentric rasterizer, bool ``[B,H,W]`` with row 0 at the top.

    Args:
        vertices: float ``[V,3]`` world positions; faces: int64 ``[F,3]``.
        clip_matrices: float ``[B,4,4]``, ``camera.matrices(W/H)`` when the caller already has them.
    """
    height, width = image_size
    with torch.no_grad():
        clip = _clip_space(vertices, camera, image_size, clip_matrices)
        _, bary, _ = barycentric.rasterize_triangles(clip.contiguous(), faces, width, height)
        return torch.flip(barycentric.coverage(bary)[..., 0] > 0.5, dims=[1])


def loss_terms(rgba: Tensor, targets: Tensor, vertices: Tensor, faces: Tensor, topology: MeshTopology,
               weights: LossWeights, texture: Optional[Tensor] = None) -> Dict[str, Tensor]:
    """The enabled loss terms (unweighted), by name.

    Args:
        rgba, targets: float ``[b,H,W,4]``; vertices: float ``[V,3]`` (mesh frame); faces ``[F,3]``;
        texture: float ``[S,S,3]``, the fitted texture (needed by ``texture_tv``).
    """
    compute = {
        "silhouette": lambda: silhouette_mse(rgba[..., 3], targets[..., 3]),
        "iou": lambda: soft_iou_loss(rgba[..., 3], targets[..., 3]),
        "rgb": lambda: rgb_mse(rgba, targets),
        "edge": lambda: edge_length(vertices, topology),
        "laplacian": lambda: uniform_laplacian(vertices, topology),
        "normal": lambda: normal_consistency(vertices, faces, topology),
        "flatten": lambda: flatten_loss(vertices, topology),
        "texture_tv": lambda: total_variation(texture),
    }
    return {name: compute[name]() for name in weights.enabled()}


def annealed(settings: FitSettings, step: int, start_value: float, final_value: Optional[float]) -> float:
    """A value constant until ``anneal_start·steps``, then geometric to ``final_value`` at the
    last step (constant when ``final_value`` is None)."""
    start = int(settings.anneal_start * settings.steps)
    if final_value is None or step <= start:
        return start_value
    fraction = min(1.0, (step - start) / max(settings.steps - 1 - start, 1))
    return start_value * (final_value / start_value) ** fraction


def sigma_at(settings: FitSettings, step: int) -> float:
    """The soft renderer's σ at a step (see :func:`annealed`)."""
    return annealed(settings, step, settings.sigma, settings.sigma_final)


def _make_optimizer(settings: FitSettings, parameters: List[Tensor]) -> torch.optim.Optimizer:
    # foreach=False: the per-tensor loop is deterministic and there are only a few tensors.
    if settings.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=settings.lr, foreach=False)
    return torch.optim.SGD(parameters, lr=settings.lr, momentum=settings.momentum, foreach=False)


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


class _Fitter:
    """One fit: the state, the optimiser and the per-step work of :func:`run_fit`."""

    def __init__(self, problem: FitProblem, recorder):
        problem.settings.check()
        problem.settings.check_template(problem.template)
        self.problem = problem
        self.settings = problem.settings
        self.recorder = recorder
        self.state = FitState(problem)
        self.topology = MeshTopology.from_faces(problem.template.faces, problem.template.vertices.shape[0])
        self.target_masks = problem.views.targets[..., 3] > 0.5
        self.optimizer = _make_optimizer(self.settings, self.state.parameters)
        self.generator = torch.Generator().manual_seed(self.settings.seed)
        self.batch = problem.views.camera.batch_size
        # Only RGB losses and the barycentric renderer (whose alpha has no gradient) need shading.
        self.shaded = self.settings.renderer == "barycentric" or self.settings.weights.rgb > 0
        height, width = problem.image_size
        self.aspect_ratio = width / height
        # Fixed cameras are projected once, not at every step (which on a GPU costs more in
        # kernel launches than a small fit's rendering).
        self.fixed_clip = None if "camera" in self.settings.params else \
            self.state.cameras().matrices(self.aspect_ratio)

    def view_index(self) -> Optional[Tensor]:
        """The views of this step: None for all, else a seeded random subset (int64 ``[b]``)."""
        count = self.settings.views_per_step
        if count <= 0 or count >= self.batch:
            return None
        # Drawn on the CPU, so a seed picks the same views on every device.
        chosen = torch.randperm(self.batch, generator=self.generator, device="cpu")[:count].sort().values
        return chosen.to(self.problem.views.targets.device)

    def clip_matrices(self, index: Optional[Tensor]) -> Tensor:
        """float ``[b,4,4]`` world-to-clip matrices of the views at ``index`` (all when None)."""
        if self.fixed_clip is None:
            return self.state.cameras(index).matrices(self.aspect_ratio)
        return self.fixed_clip if index is None else self.fixed_clip[index]

    def render(self, posed: Tuple[Tensor, Optional[Tensor]], index: Optional[Tensor], sigma: float,
               shaded: bool = True) -> Tensor:
        """The state posed as ``posed`` (what :meth:`FitState.posed` returns) seen by the views at
        ``index`` (all when None): ``[b,H,W,4]``; with ``shaded`` False, soft silhouettes only
        (RGB 0)."""
        vertices, normals = posed
        if not shaded:
            return soft_silhouettes(sigma, self.settings.gamma, vertices, self.problem.template.faces,
                                    self.state.cameras(index), self.problem.image_size, self.clip_matrices(index))
        lights, material = _pick_scene(self.problem.lights, self.problem.material, index)
        return render_views(self.settings.renderer, sigma, self.settings.gamma, vertices, self.problem.template.faces,
                            self.state.colors, self.state.cameras(index), lights, material,
                            self.problem.image_size, normals, self.settings.antialias, *self.state.surface(),
                            self.settings.texture_filter, self.clip_matrices(index))

    def iou(self, vertices: Optional[Tensor] = None) -> Tensor:
        """float32 ``[B]`` hard-silhouette IoU of the state posed as ``vertices`` (``[V,3]``; the
        current state when None)."""
        if vertices is None:
            vertices, _ = self.state.posed()
        masks = hard_silhouettes(vertices.detach(), self.problem.template.faces, self.state.cameras(),
                                 self.problem.image_size, self.clip_matrices(None))
        return hard_iou(masks, self.target_masks)

    def record(self, step: int, sigma: float, posed: Tuple[Tensor, Optional[Tensor]], rgba: Optional[Tensor],
               final: bool = False) -> None:
        """Hands the state after ``step`` steps to the recorder when a frame or preview is due
        (always for the ``final`` state); ``posed`` is that state posed (:meth:`FitState.posed`),
        and ``rgba`` its render of every view, if the step already made one."""
        frame = final or step % self.settings.frame_every == 0
        preview = final or step % self.settings.preview_every == 0
        if not (frame or preview):
            return
        if rgba is None:
            with torch.no_grad():
                rgba = self.render(posed, None, sigma)
        self.recorder.snapshot(step, self.state, rgba.detach(), posed[0].detach(), sigma, frame=frame,
                               preview=preview)

    def step(self, step: int) -> Optional[str]:
        """One optimiser step; returns a stop message when the loss or state went non-finite."""
        sigma = sigma_at(self.settings, step)
        index = self.view_index()
        # Posed once for the step's render, IoU and record (and Rodrigues' formula with them).
        posed = self.state.posed()
        rgba = self.render(posed, index, sigma, self.shaded)
        targets = self.problem.views.targets if index is None else self.problem.views.targets[index]
        weights = self.settings.weights.enabled()
        terms = loss_terms(rgba, targets, self.state.vertices, self.problem.template.faces, self.topology,
                           self.settings.weights, self.state.texture)
        total = sum(weights[name] * value for name, value in terms.items())
        iou = self.iou(posed[0])
        # One read from the device per step for everything logged: on a GPU, each read waits for
        # all the work queued before it.
        total_value, *readings = torch.cat([total.detach().reshape(1), iou,
                                            *(value.detach().reshape(1) for value in terms.values())]).tolist()
        if not math.isfinite(total_value):
            return f"non-finite loss at step {step}; kept the state after {step} steps"
        ious, values = readings[:len(iou)], dict(zip(terms, readings[len(iou):]))
        self.record(step, sigma, posed, rgba if index is None and self.shaded else None)
        self.recorder.log(step, total_value, values, ious, sigma)
        for group in self.optimizer.param_groups:
            group["lr"] = annealed(self.settings, step, self.settings.lr, self.settings.lr_final)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.settings.clip_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.state.parameters, self.settings.clip_grad_norm)
        self.optimizer.step()
        with torch.no_grad():
            for name in ("colors", "texture"):
                if name in self.settings.params:
                    getattr(self.state, name).clamp_(0.0, 1.0)
        if not self.state.is_finite():
            return f"non-finite parameters after step {step}; kept the state after {step} steps"
        self.report = StepReport(step + 1, self.settings.steps, total_value, values, sum(ious) / len(ious), sigma)
        return None


class _StopOnCtrlC:
    """Turns the first Ctrl-C (SIGINT) into a request the loop honours between steps.

    A KeyboardInterrupt can strike anywhere, in the middle of a frame sent to the video encoder
    or of a file write; a flag checked between steps never does. A second Ctrl-C interrupts at
    once, as usual. Outside the main thread, where Python cannot install handlers, Ctrl-C stays a
    KeyboardInterrupt.
    """

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self) -> "_StopOnCtrlC":
        # An ignored SIGINT (a background job, nohup) stays ignored.
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            self._previous = signal.signal(signal.SIGINT, self._request)
        return self

    def _request(self, _signum, _frame) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)

    def __exit__(self, *_exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def run_fit(problem: FitProblem, recorder, on_progress: Optional[Callable[[StepReport], None]] = None) -> FitResult:
    """Optimises ``problem`` for ``settings.steps`` steps, reporting to ``recorder``.

    ``recorder`` gets ``log(step, total, terms, ious, sigma)`` for every step and
    ``snapshot(step, state, rgba, vertices, sigma, frame=, preview=)`` for frames and previews
    (see :class:`~diffrender.fit_outputs.FitRecorder`). Ctrl-C and a non-finite loss stop the
    loop early: Ctrl-C after the step in progress, a second Ctrl-C (KeyboardInterrupt) at once.
    The state then returns to the last one whose loss was finite and whose update completed,
    and is recorded as the final one.

    Returns:
        A :class:`FitResult`; the recorder has been given the final state as a frame and a
        preview.
    """
    torch.manual_seed(problem.settings.seed)
    fitter = _Fitter(problem, recorder)
    stopped = "finished"
    completed = 0
    started = time.perf_counter()
    with _StopOnCtrlC() as ctrl_c:
        for step in range(problem.settings.steps):
            saved = fitter.state.snapshot()
            try:
                message = fitter.step(step)
            except KeyboardInterrupt:
                fitter.state.restore(saved)  # the update may be half applied
                stopped = "interrupted"
                break
            if message is not None:
                fitter.state.restore(saved)
                stopped = message
                break
            completed = step + 1
            try:
                if on_progress is not None:
                    on_progress(fitter.report)
            except KeyboardInterrupt:
                stopped = "interrupted"
                break
            if ctrl_c.requested:
                stopped = "interrupted"
                break
        seconds = time.perf_counter() - started
        final_sigma = sigma_at(problem.settings, max(completed - 1, 0))
        with torch.no_grad():
            fitter.record(completed, final_sigma, fitter.state.posed(), None, final=True)
    return FitResult(steps_completed=completed, stopped=stopped, iou=fitter.iou(), state=fitter.state, seconds=seconds)
