"""Triangle meshes: the :class:`Mesh` container, loading, saving and normals.

Conventions: vertices are ``float32 [V, 3]``, faces are ``int64 [F, 3]`` indices into them,
wound counter-clockwise when seen from outside (the right-hand-rule normal points outward).
"""
import dataclasses
import os
import uuid
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
import trimesh
from torch import Tensor

from .shapes import BUILTIN_SHAPES, builtin_shape, normalize_unit
from .tensor_dataclass import TensorDataclass

__all__ = [
    "Mesh",
    "MeshError",
    "face_normals",
    "load_mesh",
    "normalize_unit",
    "save_obj",
    "vertex_normals",
]

# Guards the division when normalising zero-length normals (isolated or degenerate geometry).
_NORMAL_EPS = 1e-12


class MeshError(ValueError):
    """A mesh file is missing, unreadable or invalid. The message is one line naming the file."""


@dataclasses.dataclass
class Mesh(TensorDataclass):
    """A triangle mesh with optional per-vertex attributes.

    Attributes:
        vertices: float32 ``[V, 3]`` positions.
        faces: int64 ``[F, 3]`` vertex indices, counter-clockwise seen from outside.
        normals: optional float32 ``[V, 3]`` unit vertex normals supplied by the file.
        colors: optional float32 ``[V, 3]`` per-vertex RGB in [0, 1].
        uvs: optional float32 ``[V, 2]`` texture coordinates.
        texture: optional float32 ``[Ht, Wt, 3]`` RGB image in [0, 1], sampled through ``uvs``.
        name: a label (the file stem or the built-in shape name).
    """

    vertices: Tensor
    faces: Tensor
    normals: Optional[Tensor] = None
    colors: Optional[Tensor] = None
    uvs: Optional[Tensor] = None
    texture: Optional[Tensor] = None
    name: str = ""

    @property
    def num_vertices(self) -> int:
        """Number of vertices V."""
        return self.vertices.shape[0]

    @property
    def num_faces(self) -> int:
        """Number of triangles F."""
        return self.faces.shape[0]

    def vertex_normals(self) -> Tensor:
        """Unit vertex normals ``[V, 3]``: the file's own if it had them, else area-weighted ones."""
        if self.normals is not None:
            return self.normals
        return vertex_normals(self.vertices, self.faces)


# --------------------------------------------------------------------------------------------
# Normals
# --------------------------------------------------------------------------------------------


def _face_cross(vertices: Tensor, faces: Tensor) -> Tensor:
    """Unnormalised ``(v1 - v0) x (v2 - v0)`` per face: ``[..., V, 3]`` -> ``[..., F, 3]``.

    Its length is twice the triangle's area, which is what makes the vertex sum area-weighted.
    """
    v0, v1, v2 = (vertices[..., faces[:, k], :] for k in range(3))
    return torch.linalg.cross(v1 - v0, v2 - v0, dim=-1)


def face_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Unit face normals (right-hand rule).

    Args:
        vertices: float ``[..., V, 3]`` (leading dims are batched).
        faces: int64 ``[F, 3]``.

    Returns:
        ``[..., F, 3]`` in the dtype of ``vertices``; zero for degenerate faces. Differentiable.
    """
    return F.normalize(_face_cross(vertices, faces), dim=-1, eps=_NORMAL_EPS)


def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Area-weighted unit vertex normals.

    Each vertex sums the unnormalised cross products ``(v1 - v0) x (v2 - v0)`` of the faces
    around it, then the sum is normalised.

    Args:
        vertices: float ``[..., V, 3]`` (leading dims are batched).
        faces: int64 ``[F, 3]``.

    Returns:
        ``[..., V, 3]`` in the dtype of ``vertices``; zero for vertices in no (non-degenerate)
        face. Differentiable with respect to ``vertices``.
    """
    cross = _face_cross(vertices, faces)  # [..., F, 3]
    # Every face contributes its cross product to each of its three corners: scatter
    # [..., F*3, 3] rows into the vertex dimension in one index_add_.
    per_corner = cross.unsqueeze(-2).expand(*cross.shape[:-1], 3, 3).flatten(-3, -2)
    summed = torch.zeros_like(vertices).index_add_(-2, faces.reshape(-1), per_corner)
    return F.normalize(summed, dim=-1, eps=_NORMAL_EPS)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _short_reason(exc: BaseException) -> str:
    """First line of an exception's message, for a one-line MeshError."""
    if isinstance(exc, ImportError):
        # trimesh falls back to charset detection (an optional module) when binary data
        # reaches a text parser, so this means "garbage", not "install something".
        return "corrupt or unrecognised file contents"
    lines = str(exc).strip().splitlines()
    reason = lines[0] if lines else type(exc).__name__
    return reason[:200]


def _check_obj_indices(path: Path) -> None:
    """Raise MeshError if an OBJ's ``f`` lines reference vertices that do not exist.

    trimesh fails on these with a bare IndexError, so the raw lines are checked first.
    Positive indices are 1-based into all ``v`` lines; negative ones count back from the
    last vertex defined before the face.
    """
    num_vertices = 0
    max_index = 0
    bad_relative: Optional[int] = None
    with open(path, "r", encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if line.startswith("v "):
                num_vertices += 1
            elif line.startswith("f "):
                for index in _obj_face_indices(path, line):
                    if index > 0:
                        max_index = max(max_index, index)
                    elif index == 0 or -index > num_vertices:
                        bad_relative = index
    if max_index > num_vertices:
        detail = f"max index {max_index}, but only {num_vertices} vertices"
    elif bad_relative is not None:
        detail = f"index {bad_relative} refers to no vertex"
    else:
        return
    raise MeshError(f"mesh {path} has face indices out of range ({detail})")


def _obj_face_indices(path: Path, line: str) -> List[int]:
    """Vertex indices of one OBJ ``f v/vt/vn ...`` line, or MeshError if one is not an integer."""
    tokens = line.split()[1:]
    try:
        return [int(token.split("/")[0]) for token in tokens]
    except ValueError:
        raise MeshError(f"cannot read mesh {path}: malformed face line {line.strip()[:60]!r}") from None


def _trimesh_parts(scene: trimesh.Scene) -> List[trimesh.Trimesh]:
    """The scene's triangle meshes in world coordinates.

    Geometry under an identity transform is used as is: copies without their cache would lose
    file-provided vertex normals, which trimesh keeps only in that cache.
    """
    parts = []
    for node in scene.graph.nodes_geometry:
        transform, geometry_name = scene.graph[node]
        geometry = scene.geometry[geometry_name]
        if not isinstance(geometry, trimesh.Trimesh):
            continue
        if not np.allclose(transform, np.eye(4)):
            geometry = geometry.copy(include_cache=True)
            geometry.apply_transform(transform)
        parts.append(geometry)
    return parts


def _read_trimesh(path: Path) -> trimesh.Trimesh:
    """Load any format trimesh reads as a single unprocessed Trimesh, or raise MeshError."""
    if path.suffix.lower() == ".obj":
        _check_obj_indices(path)
    try:
        scene = trimesh.load_scene(str(path), process=False)
        parts = _trimesh_parts(scene)
    except Exception as exc:  # trimesh raises many types (ValueError, IndexError, KeyError, ...)
        raise MeshError(f"cannot read mesh {path}: {_short_reason(exc)}") from exc
    if not parts:
        raise MeshError(f"mesh {path} has no faces")
    return parts[0] if len(parts) == 1 else trimesh.util.concatenate(parts)


def _validate(path: Path, vertices: np.ndarray, faces: np.ndarray) -> None:
    """Raise MeshError for an empty mesh, non-finite coordinates or out-of-range indices."""
    if len(faces) == 0:
        raise MeshError(f"mesh {path} has no faces")
    if not np.isfinite(vertices).all():
        raise MeshError(f"mesh {path} has non-finite (NaN or inf) vertex coordinates")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise MeshError(
            f"mesh {path} has face indices out of range "
            f"(max index {faces.max()}, but only {len(vertices)} vertices)"
        )


def _float_tensor(array: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _material_attributes(
    visual: "trimesh.visual.TextureVisuals", num_vertices: int
) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """(colors ``[V,3]``, uvs ``[V,2]``, texture ``[Ht,Wt,3]``) from a material, each optional.

    The diffuse colour (SimpleMaterial) or base colour factor (PBR) is broadcast to all
    vertices; the texture needs both UVs and an image.
    """
    material = visual.material
    if isinstance(material, trimesh.visual.material.PBRMaterial):
        diffuse, image = material.baseColorFactor, material.baseColorTexture
    elif hash(material) == hash(trimesh.visual.material.empty_material()):
        # trimesh's placeholder grey material for UV-only meshes: nothing from the file.
        diffuse, image = None, None
    else:
        diffuse, image = material.diffuse, material.image

    colors = uvs = texture = None
    if diffuse is not None:
        rgb = np.asarray(diffuse, dtype=np.float32)[:3] / 255.0
        colors = _float_tensor(np.broadcast_to(rgb, (num_vertices, 3)))
    if image is not None and visual.uv is not None:
        uvs = _float_tensor(np.asarray(visual.uv)[:, :2])
        texture = _float_tensor(np.asarray(image.convert("RGB")) / 255.0)
    return colors, uvs, texture


def _visual_attributes(mesh: trimesh.Trimesh) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """(colors ``[V,3]``, uvs ``[V,2]``, texture ``[Ht,Wt,3]``) from a trimesh visual, each optional."""
    visual = mesh.visual
    if visual.kind == "vertex":
        return _float_tensor(np.asarray(visual.vertex_colors)[:, :3] / 255.0), None, None
    if visual.kind == "texture":
        return _material_attributes(visual, len(mesh.vertices))
    return None, None, None


def _file_normals(mesh: trimesh.Trimesh) -> Optional[Tensor]:
    """The vertex normals the file provided, or None.

    trimesh computes ``vertex_normals`` lazily on first access, so the cache holds them before
    that only when the loader supplied them (trimesh's own OBJ exporter uses the same test).
    """
    if "vertex_normals" not in mesh._cache:
        return None
    return _float_tensor(mesh.vertex_normals)


def load_mesh(source: Union[str, Path]) -> Mesh:
    """Load a mesh file (any format trimesh reads: OBJ+MTL, PLY, STL, OFF, GLB, ...) or a built-in shape.

    Args:
        source: a file path, or a built-in shape name (``"cube"``, ``"sphere"``, ``"teapot"``)
            when no file of that name exists.

    Returns:
        A :class:`Mesh` (float32 ``[V,3]`` vertices, int64 ``[F,3]`` faces; polygons are
        triangulated). ``normals`` is set only when the file has vertex normals; ``colors`` from
        vertex colours or the material's diffuse colour; ``uvs``/``texture`` from a textured
        material.

    Raises:
        MeshError: missing file, unreadable or corrupt file, no faces, non-finite vertices or
            out-of-range face indices (one-line message naming the file).
    """
    path = Path(source)
    if isinstance(source, str) and source in BUILTIN_SHAPES and not path.is_file():
        vertices, faces = builtin_shape(source)
        return Mesh(vertices=vertices, faces=faces, name=source)
    if not path.exists():
        raise MeshError(f"mesh file not found: {path}")
    if not path.is_file():
        raise MeshError(f"cannot read mesh {path}: not a regular file")

    mesh = _read_trimesh(path)
    vertices = np.asarray(mesh.vertices)
    faces = np.asarray(mesh.faces, dtype=np.int64).reshape(-1, 3)
    _validate(path, vertices, faces)
    colors, uvs, texture = _visual_attributes(mesh)
    return Mesh(
        vertices=_float_tensor(vertices),
        faces=torch.from_numpy(np.ascontiguousarray(faces)),
        normals=_file_normals(mesh),
        colors=colors,
        uvs=uvs,
        texture=texture,
        name=path.stem,
    )


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------


def save_obj(path: Union[str, Path], vertices: Tensor, faces: Tensor, colors: Optional[Tensor] = None) -> None:
    """Write a Wavefront OBJ atomically (temporary file in the same folder, then rename).

    Args:
        path: destination file; its folder must exist and be writable.
        vertices: float ``[V, 3]``.
        faces: integer ``[F, 3]``, 0-based (written 1-based).
        colors: optional float ``[V, 3]`` RGB in [0, 1], written as ``v x y z r g b``.

    Raises:
        MeshError: the folder is missing or not writable, or the write fails.
        ValueError: tensors of the wrong shape.
    """
    path = Path(path)
    vertices = vertices.detach().cpu().double().numpy()
    faces = faces.detach().cpu().long().numpy()
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"expected vertices [V,3] and faces [F,3], got {vertices.shape} and {faces.shape}")
    rows = vertices
    if colors is not None:
        colors = colors.detach().cpu().double().numpy()
        if colors.shape != vertices.shape:
            raise ValueError(f"expected colors {vertices.shape}, got {colors.shape}")
        rows = np.concatenate([vertices, colors], axis=1)

    folder = path.parent
    if not folder.is_dir():
        raise MeshError(f"cannot save mesh {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise MeshError(f"cannot save mesh {path}: folder {folder} is not writable")

    try:
        _write_obj_atomically(path, rows, faces)
    except OSError as exc:
        raise MeshError(f"cannot save mesh {path}: {_short_reason(exc)}") from exc


def _write_obj_atomically(path: Path, rows: np.ndarray, faces: np.ndarray) -> None:
    """Write ``v`` rows (float ``[V, 3 or 6]``) and 0-based faces (int ``[F, 3]``) to ``path``.

    Readers never see a half-written file: the text goes to a temporary file in the same
    folder (same file system, so ``os.replace`` is atomic), which is removed on any failure.
    """
    tmp_name = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    # os.open rather than tempfile.mkstemp: the final file gets the usual umask-based mode,
    # not mkstemp's private 0600.
    fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w") as out:
            np.savetxt(out, rows, fmt="v" + " %.9g" * rows.shape[1])
            np.savetxt(out, faces + 1, fmt="f %d %d %d")
        os.replace(tmp_name, path)
    except BaseException:
        os.unlink(tmp_name)
        raise
