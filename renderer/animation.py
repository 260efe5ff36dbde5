"""Animations as batches of frames: turntables of a mesh and replays of a fit.

Each generator renders up to :func:`frames_per_batch` frames in one renderer call and yields them
as one uint8 array, so the Python work per frame is only handing it to a writer, and memory stays
bounded by the batch whatever the frame count. :class:`~diffrender.video.VideoWriter` streams the
frames to a file::

    cameras = turntable_cameras(mesh.vertices, turntable_azimuths(120), 20.0, image_size=(512, 512))
    with VideoWriter("turntable.mp4", 30) as video:
        for batch in turntable_frames(renderer, mesh, colors, cameras, shading, (512, 512)):
            for frame in batch:
                video.append(frame)
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Protocol, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from .camera import Camera, frame_vertices
from .mesh import Mesh, vertex_normals
from .renderers import Renderer, SoftRenderer
from .shading import Material, PointLights

# At most this many frames per renderer call, and fewer for large images: about 4 Mpx in flight
# keeps the barycentric renderer's temporaries near 350 MB, while batches of 16 at 512² already
# amortise the per-call overhead.
MAX_BATCH = 16
PIXELS_PER_BATCH = 16 * 512 * 512
# (view, vertex) pairs per pass when framing a turntable: about 50 MB of float32 temporaries.
FRAMING_PAIRS = 1 << 22
STATES_FORMAT = 2
STATE_KEYS = ("steps", "faces", "targets", "vertices", "rotation", "translation", "eye", "lookat", "fov", "up", "colors",
              "sigma")
# Present only in the states of texture fits (older files have neither).
TEXTURE_STATE_KEYS = ("uvs", "texture")
WHITE = (1.0, 1.0, 1.0)


class FitFolderError(ValueError):
    """A folder that cannot be replayed as a fit output; the message is one line."""


class Shading(Protocol):
    """Lights and material for a batch of cameras (the CLI's ``Look`` is one)."""

    def point_lights(self, cameras: Camera) -> PointLights: ...

    def material(self, batch: int) -> Material: ...


def frames_per_batch(image_size: Tuple[int, int]) -> int:
    """How many (height, width) frames one renderer call draws: 1 to :data:`MAX_BATCH`."""
    height, width = image_size
    return max(1, min(MAX_BATCH, PIXELS_PER_BATCH // (height * width)))


def frames_to_uint8(rgba: Tensor, background: Optional[Sequence[float]] = None, alpha: bool = False) -> np.ndarray:
    """Renders as 8-bit frames.

    Args:
        rgba: float ``[B,H,W,4]`` as the renderers return it (RGB premultiplied by coverage).
        background: RGB in [0,1] composited behind the RGB, or None to leave it as rendered.
        alpha: keep the coverage as a fourth channel.
    Returns:
        uint8 ``[B,H,W,3]``, or ``[B,H,W,4]`` with ``alpha``; rounded like
        :func:`diffrender.images.to_uint8`, so without a background the frames match
        ``diffrender render``'s PNGs exactly.
    """
    rgb = rgba[..., :3]
    if background is not None:
        # One fused pass instead of a multiply and an add over every pixel: this conversion is a
        # sizeable share of a turntable's time per frame.
        rgb = torch.addcmul(rgb, 1.0 - rgba[..., 3:], rgba.new_tensor(list(background)))
    channels = torch.cat([rgb, rgba[..., 3:]], dim=-1) if alpha else rgb
    return channels.mul(255.0).round_().clamp_(0.0, 255.0).to(torch.uint8).cpu().numpy()


# --------------------------------------------------------------------------------------------
# Turntables
# --------------------------------------------------------------------------------------------


def turntable_azimuths(frames: int, degrees: float = 360.0, start: float = 0.0) -> Tensor:
    """float32 ``[frames]`` azimuths in degrees, ``start + degrees·k/frames``: over a full turn,
    frame ``frames`` (not rendered) would repeat frame 0, so the video loops without a stutter."""
    index = torch.arange(frames, dtype=torch.float64)
    return (start + degrees * index / frames).float()


def turntable_cameras(vertices: Tensor, azimuths: Tensor, elevation: float, image_size: Tuple[int, int],
                      fov_y: float = 40.0, distance: Optional[float] = None) -> Camera:
    """One camera per azimuth, orbiting the centre of the ``[V,3]`` vertices' bounding box.

    Without ``distance`` they stand at the one distance that frames the mesh in every view (see
    :func:`~diffrender.camera.frame_vertices`), so the turntable does not zoom. That distance is
    found a chunk of views at a time, keeping memory bounded for any number of frames.

    Returns:
        A :class:`Camera` batch of ``[N]`` (the azimuths' count).
    """
    aspect_ratio = image_size[1] / image_size[0]
    if distance is None:
        distance = 0.0
        for chunk in azimuths.split(max(1, FRAMING_PAIRS // vertices.shape[0])):
            framed = frame_vertices(vertices, chunk, elevation, fov_y=fov_y, aspect_ratio=aspect_ratio)
            distance = max(distance, float((framed.eye - framed.lookat).norm(dim=-1).max()))
    return frame_vertices(vertices, azimuths, elevation, fov_y=fov_y, aspect_ratio=aspect_ratio, distance=distance)


def _cameras_slice(camera: Camera, start: int, stop: int) -> Camera:
    fov = camera.fov_y[start:stop] if isinstance(camera.fov_y, Tensor) else camera.fov_y
    return dataclasses.replace(camera, eye=camera.eye[start:stop], lookat=camera.lookat[start:stop],
                               up=camera.up[start:stop], fov_y=fov)


def turntable_frames(renderer: Renderer, mesh: Mesh, colors: Tensor, cameras: Camera, shading: Shading,
                     image_size: Tuple[int, int], background: Optional[Sequence[float]] = WHITE,
                     alpha: bool = False, device: torch.device | str = "cpu") -> Iterator[np.ndarray]:
    """Renders ``mesh`` from each camera, a batch per renderer call.

    Args:
        mesh: the mesh (its own normals if it has them, else area-weighted ones); its texture, if
            it has one, replaces ``colors``.
        colors: float ``[V,3]`` diffuse colours.
        cameras: ``[N]`` cameras (e.g. :func:`turntable_cameras`), one per frame.
        shading: lights and material per batch of cameras.
        background, alpha: see :func:`frames_to_uint8`.
    Yields:
        uint8 ``[b,H,W,3|4]`` frames in camera order, b ≤ :func:`frames_per_batch`.
    """
    vertices = mesh.vertices.to(device)[None]
    faces = mesh.faces.to(device)
    # Every frame draws the same shape: its normals are computed once, not once per frame.
    normals = mesh.normals.to(device)[None] if mesh.normals is not None else vertex_normals(vertices, faces)
    colors = colors.to(device)[None]
    uvs = None if mesh.uvs is None else mesh.uvs.to(device)
    texture = None if mesh.texture is None else mesh.texture.to(device)
    batch = frames_per_batch(image_size)
    for start in range(0, cameras.batch_size, batch):
        views = _cameras_slice(cameras, start, min(start + batch, cameras.batch_size))
        count = views.batch_size
        with torch.no_grad():
            rgba = renderer(vertices.expand(count, -1, -1), faces, colors.expand(count, -1, -1), views.to(device),
                            shading.point_lights(views).to(device), shading.material(count).to(device),
                            image_size, normals=normals.expand(count, -1, -1), uvs=uvs, texture=texture)
        yield frames_to_uint8(rgba, background, alpha)


# --------------------------------------------------------------------------------------------
# Fit replays
# --------------------------------------------------------------------------------------------


@dataclass
class FitReplay:
    """The saved states of a ``diffrender fit`` output folder (format in :mod:`diffrender.fit`).

    Attributes:
        vertices: float32 ``[N,V,3]`` world-space (posed) vertices of each state.
        faces: int64 ``[F,3]``.
        colors: float32 ``[N,V,3]``, or ``[1,V,3]`` when the fit kept its colours.
        eye, lookat: float32 ``[N,B,3]``; fov: float32 ``[N,B]`` (degrees); up: float32 ``[B,3]``.
        sigma: float32 ``[N]`` the soft renderer's σ at each state.
        targets: uint8 ``[B,H,W,3]`` the views' targets over white, as the fit showed them.
        uvs: float32 ``[V,2]`` and textures: uint8 ``[N,Ht,Wt,3]`` (each state's texture), when
            the fit learned a texture; else None.
    """

    vertices: Tensor
    faces: Tensor
    colors: Tensor
    eye: Tensor
    lookat: Tensor
    fov: Tensor
    up: Tensor
    sigma: Tensor
    targets: np.ndarray
    uvs: Optional[Tensor] = None
    textures: Optional[Tensor] = None

    @property
    def num_states(self) -> int:
        return self.vertices.shape[0]

    @property
    def num_views(self) -> int:
        return self.eye.shape[1]

    @property
    def image_size(self) -> Tuple[int, int]:
        return self.targets.shape[1], self.targets.shape[2]

    def final_mesh(self) -> Mesh:
        """The last state as a world-space :class:`Mesh` with its colours (and texture)."""
        texture = None if self.textures is None else self.textures[-1].float() / 255.0
        return Mesh(vertices=self.vertices[-1], faces=self.faces, colors=self.colors[-1], uvs=self.uvs,
                    texture=texture, name="fit")

    def without_texture(self) -> "FitReplay":
        """The same states drawn in their colours."""
        return dataclasses.replace(self, uvs=None, textures=None)


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _read_params(folder: Path) -> dict:
    path = folder / "params.json"
    try:
        params = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FitFolderError(f"cannot read {path}: {_one_line(error)}") from None
    if not isinstance(params, dict) or not isinstance(params.get("image_size"), list) \
            or len(params["image_size"]) != 2 or not all(isinstance(v, int) and v > 0 for v in params["image_size"]):
        raise FitFolderError(f"{path} has no valid image_size: not written by diffrender fit")
    return params


def _read_states(folder: Path) -> dict:
    path = folder / "states.pt"
    try:
        states = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises anything from pickle, zip and tensor errors
        raise FitFolderError(f"cannot read {path}: {_one_line(error)}") from None
    if not isinstance(states, dict) or states.get("format") != STATES_FORMAT:
        found = states.get("format") if isinstance(states, dict) else None
        raise FitFolderError(f"{path}: unsupported format {found!r} (this diffrender reads format {STATES_FORMAT})")
    missing = [key for key in STATE_KEYS if not isinstance(states.get(key), Tensor)]
    if missing:
        raise FitFolderError(f"{path} lacks {', '.join(missing)}")
    count, views = states["eye"].shape[:2] if states["eye"].dim() == 3 else (0, 0)
    vertices = states["vertices"]
    expected = {"steps": (count,), "rotation": (count, 3, 3), "translation": (count, 3), "lookat": (count, views, 3),
                "fov": (count, views), "up": (views, 3), "sigma": (count,)}
    wrong = [key for key, shape in expected.items() if tuple(states[key].shape) != shape]
    if count == 0 or wrong or vertices.dim() != 3 or vertices.shape[0] != count \
            or states["colors"].shape[0] not in (1, count) or states["colors"].shape[1:] != vertices.shape[1:]:
        raise FitFolderError(f"{path}: inconsistent state shapes ({', '.join(wrong) or 'vertices, colors or eye'})")
    faces = states["faces"]
    if faces.dim() != 2 or faces.shape[1] != 3 or faces.numel() == 0 or faces.min() < 0 \
            or faces.max() >= vertices.shape[1]:
        raise FitFolderError(f"{path}: faces are not [F,3] indices into the {vertices.shape[1]} vertices")
    _check_texture_states(path, states, count, vertices.shape[1])
    return states


def _check_texture_states(path: Path, states: dict, count: int, num_vertices: int) -> None:
    """FitFolderError unless a texture fit's uvs and textures are both there, well shaped."""
    if not any(key in states for key in TEXTURE_STATE_KEYS):
        return
    uvs, textures = states.get("uvs"), states.get("texture")
    if not (isinstance(uvs, Tensor) and isinstance(textures, Tensor)) or tuple(uvs.shape) != (num_vertices, 2) \
            or textures.dtype != torch.uint8 or textures.dim() != 4 or tuple(textures.shape[::3]) != (count, 3):
        raise FitFolderError(f"{path}: texture states are not uvs [{num_vertices},2] with uint8 texture "
                             f"[{count},Ht,Wt,3]")


def load_fit(folder: str | Path) -> FitReplay:
    """Reads a fit output folder: ``params.json`` and ``states.pt``.

    Raises:
        FitFolderError: not a fit output folder, or unreadable or inconsistent files.
    """
    folder = Path(folder)
    for name in ("params.json", "states.pt"):
        if not (folder / name).is_file():
            raise FitFolderError(f"{folder} is not a fit output folder: it has no {name} (diffrender fit writes one)")
    params = _read_params(folder)
    states = _read_states(folder)
    rotation, translation = states["rotation"].float(), states["translation"].float()
    posed = states["vertices"].float() @ rotation.transpose(1, 2) + translation[:, None, :]
    views = states["eye"].shape[1]
    targets = states["targets"]
    if targets.dtype != torch.uint8 or tuple(targets.shape) != (views, *params["image_size"], 3):
        raise FitFolderError(f"{folder / 'states.pt'}: targets are not uint8 [{views},{','.join(map(str, params['image_size']))},3]")
    uvs = states["uvs"].float() if "uvs" in states else None
    return FitReplay(vertices=posed, faces=states["faces"].long(), colors=states["colors"].float(),
                     eye=states["eye"].float(), lookat=states["lookat"].float(), fov=states["fov"].float(),
                     up=states["up"].float(), sigma=states["sigma"].float(), targets=targets.numpy(), uvs=uvs,
                     textures=states.get("texture"))


def side_by_side_frames(renders: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Renders next to targets, the layout of the fit's own progress video.

    Args:
        renders: uint8 ``[S,B,H,W,3]``, S states seen from B views.
        targets: uint8 ``[B,H,W,3]``.
    Returns:
        uint8 ``[S, B·H, 2W, 3]``: per state, one row per view, the render on the left.
    """
    states, views, height, width, _ = renders.shape
    pairs = np.concatenate([renders, np.broadcast_to(targets, renders.shape)], axis=3)
    return pairs.reshape(states, views * height, 2 * width, 3)


def _clip_planes(vertices: Tensor, eyes: Tensor) -> Tuple[float, float]:
    """Near and far planes enclosing every ``[S,V,3]`` state seen from its ``[S,B,3]`` eyes.

    states.pt keeps no clip planes, so they are chosen like :func:`frame_vertices` does: 2× the
    bounding radius around the mesh, never clipping it."""
    low, high = vertices.min(dim=1).values, vertices.max(dim=1).values
    centers = (low + high) / 2
    radius = float((vertices - centers[:, None]).norm(dim=-1).max().clamp_min(1e-6))
    distances = (eyes - centers[:, None]).norm(dim=-1)
    near = max(float(distances.min()) - 2.0 * radius, float(distances.max()) * 1e-3)
    return near, float(distances.max()) + 2.0 * radius


def _runs(replay: FitReplay, renderer: Renderer, states_per_batch: int) -> Iterator[Tuple[int, int, Renderer]]:
    """(start, stop, renderer) state ranges of at most ``states_per_batch``. The soft renderer
    replays each state with the fit's σ of that step, so a range also ends where σ changes."""
    for start in range(0, replay.num_states, states_per_batch):
        stop = min(start + states_per_batch, replay.num_states)
        if not isinstance(renderer, SoftRenderer):
            yield start, stop, renderer
            continue
        values, counts = torch.unique_consecutive(replay.sigma[start:stop], return_counts=True)
        ends = (start + counts.cumsum(0)).tolist()
        for sigma, begin, end in zip(values.tolist(), [start] + ends[:-1], ends):
            yield begin, end, dataclasses.replace(renderer, sigma=sigma)


def replay_frames(replay: FitReplay, renderer: Renderer, shading: Shading,
                  background: Sequence[float] = WHITE, colors: Optional[Tensor] = None,
                  device: torch.device | str = "cpu") -> Iterator[np.ndarray]:
    """Renders every saved state from the fit's own (per-state) cameras next to the targets.

    Args:
        replay: from :func:`load_fit`.
        renderer: barycentric, or soft (then at each state's σ).
        shading: lights and material per batch of cameras.
        background: RGB in [0,1] behind the renders.
        colors: float ``[V,3]`` to draw every state in, or None for the fit's colours (or, after a
            texture fit, each state's texture).
    Yields:
        uint8 ``[s, B·H, 2W, 3]`` frames (see :func:`side_by_side_frames`) in state order; all
        B views of s states are drawn in one renderer call.
    """
    views, image_size = replay.num_views, replay.image_size
    faces = replay.faces.to(device)
    uvs = None if replay.uvs is None else replay.uvs.to(device)
    per_view = (lambda t: t.repeat_interleave(views, dim=0).to(device))
    for start, stop, chosen in _runs(replay, renderer, max(1, frames_per_batch(image_size) // views)):
        states = stop - start
        vertices = replay.vertices[start:stop]
        if colors is not None:
            state_colors = colors[None].expand(states, -1, -1)
        elif replay.colors.shape[0] == 1:
            state_colors = replay.colors.expand(states, -1, -1)
        else:
            state_colors = replay.colors[start:stop]
        textured = {}
        if replay.textures is not None and colors is None:
            textured = {"uvs": uvs, "texture": per_view(replay.textures[start:stop]).float() / 255.0}
        near, far = _clip_planes(vertices, replay.eye[start:stop])
        cameras = Camera(eye=replay.eye[start:stop].reshape(-1, 3), lookat=replay.lookat[start:stop].reshape(-1, 3),
                         up=replay.up.repeat(states, 1), fov_y=replay.fov[start:stop].reshape(-1), near=near, far=far)
        with torch.no_grad():
            rgba = chosen(per_view(vertices), faces, per_view(state_colors), cameras.to(device),
                          shading.point_lights(cameras).to(device), shading.material(states * views).to(device),
                          image_size, **textured)
        renders = frames_to_uint8(rgba, background).reshape(states, views, *image_size, 3)
        yield side_by_side_frames(renders, replay.targets)
