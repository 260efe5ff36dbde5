"""Triangle meshes: the :class:`Mesh` container, loading, saving and normals.

Conventions: vertices are ``float32 [V, 3]``, faces are ``int64 [F, 3]`` indices into them,
wound counter-clockwise when seen from outside (the right-hand-rule normal points outward).
"""
import dataclasses
import os
import warnings
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
import trimesh
from PIL import Image
from torch import Tensor

from .images import atomic_output, save_png
from .mesh_assets import ConfinedResolver, checked_material_libraries
from .mesh_errors import MeshError, TextureWarning
from .shapes import BUILTIN_SHAPES, builtin_shape, normalize_unit
from .tensor_dataclass import TensorDataclass

__all__ = [
    "Mesh",
    "MeshError",
    "TextureWarning",
    "face_normals",
    "load_mesh",
    "normalize_unit",
    "save_obj",
    "save_textured_obj",
    "vertex_normals",
]

# Guards the division when normalising zero-length normals (isolated or degenerate geometry).
_NORMAL_EPS = 1e-12


@dataclasses.dataclass
class Mesh(TensorDataclass):
    """A triangle mesh with optional per-vertex attributes.

    Attributes:
        vertices: float32 ``[V, 3]`` positions.
        faces: int64 ``[F, 3]`` vertex indices, counter-clockwise seen from outside.
        normals: optional float32 ``[V, 3]`` unit vertex normals supplied by the file.
        colors: optional float32 ``[V, 3]`` per-vertex RGB in [0, 1]: the file's vertex colours,
            or its material's diffuse colour (Kd, baseColorFactor) on every vertex.
        uvs: optional float32 ``[V, 2]`` texture coordinates (v = 0 at the bottom of the image);
            set exactly when ``texture`` is.
        texture: optional float32 ``[Ht, Wt, 3]`` RGB image in [0, 1], row 0 the top, sampled
            through ``uvs``. A loaded texture is already multiplied by the material's diffuse
            colour, so it is the surface colour as is.
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


def _check_face_indices(faces: Tensor, num_vertices: int) -> None:
    """Raises IndexError unless every index lies in [0, num_vertices): indexing would wrap a
    negative one onto another vertex without a word."""
    if faces.numel() == 0:
        return
    low, high = torch.stack(torch.aminmax(faces)).tolist()  # one read from the device, not two
    if low < 0 or high >= num_vertices:
        raise IndexError(f"face indices must lie in [0, {num_vertices}), got indices from {low} to {high}")


def _face_cross(vertices: Tensor, faces: Tensor) -> Tensor:
    """Unnormalised ``(v1 - v0) x (v2 - v0)`` per face: ``[..., V, 3]`` -> ``[..., F, 3]``.

    Its length is twice the triangle's area, which is what makes the vertex sum area-weighted.
    """
    _check_face_indices(faces, vertices.shape[-2])
    v0, v1, v2 = (vertices[..., faces[:, k], :] for k in range(3))
    return torch.linalg.cross(v1 - v0, v2 - v0, dim=-1)


def face_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Unit face normals (right-hand rule).

    Args:
        vertices: float ``[..., V, 3]`` (leading dims are batched).
        faces: int64 ``[F, 3]``.

    Returns:
        ``[..., F, 3]`` in the dtype of ``vertices``; zero for degenerate faces. Differentiable.

    Raises:
        IndexError: a face index outside [0, V).
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

    Raises:
        IndexError: a face index outside [0, V).
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
    """Load any format trimesh reads as a single unprocessed Trimesh, or raise MeshError.

    Files the mesh refers to are read from its own folder only (see mesh_assets).
    """
    libraries = {}
    if path.suffix.lower() == ".obj":
        _check_obj_indices(path)
        libraries = checked_material_libraries(path)
    resolver = ConfinedResolver(path, libraries)
    try:
        scene = trimesh.load_scene(str(path), process=False, resolver=resolver)
        parts = _trimesh_parts(scene)
    except Exception as exc:  # trimesh raises many types (ValueError, IndexError, KeyError, ...)
        if resolver.refusal is not None:
            raise resolver.refusal from None
        raise MeshError(f"cannot read mesh {path}: {_short_reason(exc)}") from exc
    if resolver.refusal is not None:
        raise resolver.refusal
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
    path: Path, visual: "trimesh.visual.TextureVisuals", num_vertices: int
) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """(colors ``[V,3]``, uvs ``[V,2]``, texture ``[Ht,Wt,3]``) from a material, each optional.

    The diffuse colour (Kd) or base colour factor (PBR) multiplies the texture and is
    broadcast to all vertices; without one the texture is used as is (colours white). The
    texture needs both UVs and a readable image.
    """
    material = visual.material
    diffuse: Optional[np.ndarray] = None
    if isinstance(material, trimesh.visual.material.PBRMaterial):
        image = material.baseColorTexture
        if material.baseColorFactor is not None:  # trimesh keeps it as 8-bit RGBA
            diffuse = np.asarray(material.baseColorFactor, dtype=np.float32)[:3] / 255.0
    else:
        image = material.image
        # trimesh rounds Kd to 8 bits and fills in a grey one when the MTL has none; the
        # file's own value is kept, unrounded, under "kd" (one value means grey).
        kd = material.kwargs.get("kd")
        if kd is not None:
            diffuse = np.clip(np.resize(np.asarray(kd, dtype=np.float32), 3), 0.0, 1.0)
    # Decoded before the placeholder test below, which decodes the image too but unguarded.
    texture = _texture_rgb(path, image) if image is not None and visual.uv is not None else None
    if texture is not None and hash(material) == hash(trimesh.visual.material.empty_material()):
        # trimesh's stand-in (a grey image) for UVs without a usable material: not from the file.
        texture = None

    uvs = None
    if texture is not None:
        diffuse = np.ones(3, dtype=np.float32) if diffuse is None else diffuse
        texture = _float_tensor(texture * diffuse)
        uvs = _float_tensor(np.asarray(visual.uv)[:, :2])
    colors = None if diffuse is None else _float_tensor(np.broadcast_to(diffuse, (num_vertices, 3)))
    return colors, uvs, texture


def _texture_rgb(path: Path, image: Image.Image) -> Optional[np.ndarray]:
    """float32 ``[Ht, Wt, 3]`` in [0, 1] from a texture image, or None (warned) if it will not decode.

    trimesh opens images lazily, so a truncated one named by a PLY first fails here. (OBJ
    textures were checked before loading; trimesh drops corrupt glTF images itself.)
    """
    try:
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except Exception:  # PIL raises many types for corrupt data
        warnings.warn(f"texture of mesh {path} is not a readable image; using the material colour", TextureWarning)
        return None


def _visual_attributes(
    path: Path, mesh: trimesh.Trimesh
) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """(colors ``[V,3]``, uvs ``[V,2]``, texture ``[Ht,Wt,3]``) from a trimesh visual, each optional."""
    visual = mesh.visual
    if visual.kind == "vertex":
        return _float_tensor(np.asarray(visual.vertex_colors)[:, :3] / 255.0), None, None
    if visual.kind == "texture":
        return _material_attributes(path, visual, len(mesh.vertices))
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
        material, the texture multiplied by the diffuse colour. Vertices are split where the
        UVs have seams (as trimesh does), so each vertex has one UV.

    Raises:
        MeshError: missing file, unreadable or corrupt file, no faces, non-finite vertices,
            out-of-range face indices, or a reference to a file outside the mesh's folder
            (an absolute or escaping ``mtllib``/``map_*`` name, or a symlink leading out).
            The message is one line naming the file.

    Warns:
        TextureWarning: the texture file is missing or not an image; the mesh loads with its
            material colour instead.
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
    colors, uvs, texture = _visual_attributes(path, mesh)
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

# The name of the one material save_textured_obj writes.
_SAVED_MATERIAL = "textured"


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
    rows, faces = _obj_arrays(vertices, faces)
    if colors is not None:
        colors = colors.detach().cpu().double().numpy()
        if colors.shape != rows.shape:
            raise ValueError(f"expected colors {rows.shape}, got {colors.shape}")
        rows = np.concatenate([rows, colors], axis=1)
    _check_output_folder(path)
    try:
        _write_obj(path, rows, faces)
    except OSError as exc:
        raise MeshError(f"cannot save mesh {path}: {_short_reason(exc)}") from exc


def save_textured_obj(path: Union[str, Path], vertices: Tensor, faces: Tensor, uvs: Tensor, texture: Tensor) -> None:
    """Write a textured mesh as ``<stem>.obj``, ``<stem>.mtl`` and ``<stem>_texture.png``.

    The OBJ names the MTL, whose one material has ``Kd 1 1 1`` and the PNG as ``map_Kd``.
    Each file is written atomically, the OBJ last, so an OBJ is never there without its
    material and texture. :func:`load_mesh` (and trimesh) read the result back with the same
    UVs and, exactly, the same 8-bit texture.

    Args:
        path: the OBJ's destination; the MTL and PNG go beside it. Its folder must exist.
        vertices: float ``[V, 3]``.
        faces: integer ``[F, 3]``, 0-based.
        uvs: float ``[V, 2]``, one texture coordinate per vertex (v = 0 at the bottom of the
            image): vertices on UV seams must already be split, as :func:`load_mesh` does.
        texture: float ``[Ht, Wt, 3]`` RGB in [0, 1] (clamped), row 0 the top of the image;
            stored as 8-bit.

    Raises:
        MeshError: the folder is missing or not writable, or a write fails.
        ValueError: tensors of the wrong shape.
    """
    path = Path(path)
    rows, faces = _obj_arrays(vertices, faces)
    uvs = uvs.detach().cpu().double().numpy()
    if uvs.shape != (len(rows), 2):
        raise ValueError(f"expected uvs {(len(rows), 2)}, got {tuple(uvs.shape)}")
    if texture.ndim != 3 or texture.shape[2] != 3:
        raise ValueError(f"expected texture [Ht,Wt,3], got {tuple(texture.shape)}")
    library = path.with_suffix(".mtl")
    image = path.with_name(f"{path.stem}_texture.png")
    _check_output_folder(path)
    try:
        save_png(image, texture)
        with atomic_output(library) as temporary:
            temporary.write_text(f"newmtl {_SAVED_MATERIAL}\nKd 1 1 1\nmap_Kd {image.name}\n")
        _write_obj(path, rows, faces, uvs, library.name)
    except OSError as exc:
        raise MeshError(f"cannot save mesh {path}: {_short_reason(exc)}") from exc


def _obj_arrays(vertices: Tensor, faces: Tensor) -> Tuple[np.ndarray, np.ndarray]:
    """float64 ``[V, 3]`` and int64 ``[F, 3]`` numpy copies, or ValueError for wrong shapes."""
    vertices = vertices.detach().cpu().double().numpy()
    faces = faces.detach().cpu().long().numpy()
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"expected vertices [V,3] and faces [F,3], got {vertices.shape} and {faces.shape}")
    return vertices, faces


def _check_output_folder(path: Path) -> None:
    """MeshError unless the folder ``path`` goes into exists and is writable."""
    folder = path.parent
    if not folder.is_dir():
        raise MeshError(f"cannot save mesh {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise MeshError(f"cannot save mesh {path}: folder {folder} is not writable")


def _write_obj(
    path: Path, rows: np.ndarray, faces: np.ndarray, uvs: Optional[np.ndarray] = None, library: Optional[str] = None
) -> None:
    """Write an OBJ atomically: ``v`` rows (float ``[V, 3 or 6]``), faces (0-based int ``[F, 3]``).

    With ``uvs`` (float ``[V, 2]``) vertex i has texture coordinate i, and with ``library``
    (an MTL file name) every face uses that library's one material.
    """
    with atomic_output(path) as temporary, open(temporary, "w") as out:
        if library is not None:
            out.write(f"mtllib {library}\n")
        np.savetxt(out, rows, fmt="v" + " %.9g" * rows.shape[1])
        if uvs is not None:
            np.savetxt(out, uvs, fmt="vt %.9g %.9g")
        if library is not None:
            out.write(f"usemtl {_SAVED_MATERIAL}\n")
        if uvs is None:
            np.savetxt(out, faces + 1, fmt="f %d %d %d")
        else:
            np.savetxt(out, np.repeat(faces + 1, 2, axis=1), fmt="f %d/%d %d/%d %d/%d")
