"""Built-in meshes: icosphere, cube and the Utah teapot.

Every builder returns ``(vertices, faces)`` with

* ``vertices``: ``torch.float32`` tensor of shape ``[V, 3]``,
* ``faces``: ``torch.int64`` tensor of shape ``[F, 3]``,

wound counter-clockwise when seen from outside (OBJ convention, so the right-hand-rule
normal ``(v1 - v0) x (v2 - v0)`` points outward), without duplicate vertices or
degenerate triangles.
"""
import functools
from typing import Callable, Dict, Tuple

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "BUILTIN_SHAPES",
    "builtin_shape",
    "cube",
    "icosphere",
    "normalize_unit",
    "teapot",
]

MeshTensors = Tuple[Tensor, Tensor]

# Coordinates closer than this are the same vertex when welding patch grids.
_WELD_DECIMALS = 6


def normalize_unit(vertices: Tensor) -> Tensor:
    """Centre the bounding box at the origin and scale uniformly so the longest extent spans [-1, 1].

    Args:
        vertices: float tensor ``[..., V, 3]`` (any float dtype; leading dims are batched).

    Returns:
        Tensor of the same shape and dtype. A point-like mesh (zero extent) is only centred.
    """
    lo = vertices.amin(dim=-2, keepdim=True)
    hi = vertices.amax(dim=-2, keepdim=True)
    centre = (lo + hi) / 2
    half_extent = ((hi - lo).amax(dim=-1, keepdim=True) / 2).clamp_min(torch.finfo(vertices.dtype).tiny)
    return (vertices - centre) / half_extent


def _to_tensors(vertices: np.ndarray, faces: np.ndarray) -> MeshTensors:
    """numpy ``[V,3]`` floats and ``[F,3]`` ints -> (float32 ``[V,3]``, int64 ``[F,3]``) tensors."""
    return (
        torch.from_numpy(np.ascontiguousarray(vertices, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(faces, dtype=np.int64)),
    )


# --------------------------------------------------------------------------------------------
# Icosphere
# --------------------------------------------------------------------------------------------

_PHI = (1.0 + 5.0**0.5) / 2.0
_ICOSAHEDRON_VERTICES = np.array(
    [
        [-1, _PHI, 0], [1, _PHI, 0], [-1, -_PHI, 0], [1, -_PHI, 0],
        [0, -1, _PHI], [0, 1, _PHI], [0, -1, -_PHI], [0, 1, -_PHI],
        [_PHI, 0, -1], [_PHI, 0, 1], [-_PHI, 0, -1], [-_PHI, 0, 1],
    ],
    dtype=np.float64,
)
_ICOSAHEDRON_FACES = np.array(
    [
        [0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11],
        [1, 5, 9], [5, 11, 4], [11, 10, 2], [10, 7, 6], [7, 1, 8],
        [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9],
        [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1],
    ],
    dtype=np.int64,
)


def _subdivide_on_sphere(vertices: np.ndarray, faces: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Split every triangle into 4, sharing one new unit-length vertex per edge.

    Args:
        vertices: float64 ``[V, 3]`` unit vectors.
        faces: int64 ``[F, 3]``.

    Returns:
        float64 ``[V + E, 3]`` vertices (old ones first) and int64 ``[4F, 3]`` faces, same winding.
    """
    num_vertices = len(vertices)
    # Edges (v0,v1), (v1,v2), (v2,v0) of every face, as [F, 3, 2].
    edges = np.stack([faces, np.roll(faces, -1, axis=1)], axis=-1)
    # One integer key per undirected edge; unique() is the vectorised "midpoint cache".
    keys = edges.min(axis=-1) * num_vertices + edges.max(axis=-1)
    unique_keys, edge_id = np.unique(keys.ravel(), return_inverse=True)
    midpoints = vertices[unique_keys // num_vertices] + vertices[unique_keys % num_vertices]
    midpoints /= np.linalg.norm(midpoints, axis=1, keepdims=True)

    mid = edge_id.reshape(-1, 3) + num_vertices  # m01, m12, m20 per face
    v0, v1, v2 = faces.T
    m01, m12, m20 = mid.T
    new_faces = np.concatenate(
        [
            np.stack([v0, m01, m20], axis=1),
            np.stack([v1, m12, m01], axis=1),
            np.stack([v2, m20, m12], axis=1),
            np.stack([m01, m12, m20], axis=1),
        ]
    )
    return np.concatenate([vertices, midpoints]), new_faces


def icosphere(subdivisions: int = 3, radius: float = 1.0) -> MeshTensors:
    """Sphere from a recursively subdivided icosahedron with vertices on the sphere.

    Args:
        subdivisions: number of 1-to-4 splits; gives ``10 * 4**n + 2`` vertices and
            ``20 * 4**n`` faces (n=0 is the icosahedron itself).
        radius: sphere radius; the sphere is centred at the origin.

    Returns:
        vertices float32 ``[V, 3]``, faces int64 ``[F, 3]`` (closed, CCW outward).
    """
    if subdivisions < 0:
        raise ValueError(f"subdivisions must be >= 0, got {subdivisions}")
    vertices = _ICOSAHEDRON_VERTICES / np.linalg.norm(_ICOSAHEDRON_VERTICES, axis=1, keepdims=True)
    faces = _ICOSAHEDRON_FACES
    for _ in range(subdivisions):
        vertices, faces = _subdivide_on_sphere(vertices, faces)
    return _to_tensors(vertices * radius, faces)


# --------------------------------------------------------------------------------------------
# Cube
# --------------------------------------------------------------------------------------------

# Corner i has coordinates (bit2, bit1, bit0) of i, mapped {0,1} -> {-1,+1}.
_CUBE_FACES = np.array(
    [
        [0, 1, 3], [0, 3, 2],  # x = -1
        [4, 6, 7], [4, 7, 5],  # x = +1
        [0, 4, 5], [0, 5, 1],  # y = -1
        [2, 3, 7], [2, 7, 6],  # y = +1
        [0, 2, 6], [0, 6, 4],  # z = -1
        [1, 5, 7], [1, 7, 3],  # z = +1
    ],
    dtype=np.int64,
)


def cube(size: float = 2.0) -> MeshTensors:
    """Axis-aligned cube centred at the origin.

    Args:
        size: edge length (the default 2 spans [-1, 1] on every axis).

    Returns:
        vertices float32 ``[8, 3]``, faces int64 ``[12, 3]`` (closed, CCW outward).
    """
    bits = (np.arange(8)[:, None] >> np.array([2, 1, 0])) & 1
    vertices = (bits * 2.0 - 1.0) * (size / 2.0)
    return _to_tensors(vertices, _CUBE_FACES)


# --------------------------------------------------------------------------------------------
# Utah teapot (Martin Newell's 32 bicubic Bezier patches, z-up)
# --------------------------------------------------------------------------------------------

# 1-based indices into _TEAPOT_POINTS, 4x4 control points per patch, row-major.
# Patches: rim 0-3, upper body 4-7, lower body 8-11, handle 12-15, spout 16-19,
# lid knob 20-23, lid 24-27, bottom 28-31.
_TEAPOT_PATCHES = np.array(
    [
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16],
        [4, 17, 18, 19, 8, 20, 21, 22, 12, 23, 24, 25, 16, 26, 27, 28],
        [19, 29, 30, 31, 22, 32, 33, 34, 25, 35, 36, 37, 28, 38, 39, 40],
        [31, 41, 42, 1, 34, 43, 44, 5, 37, 45, 46, 9, 40, 47, 48, 13],
        [13, 14, 15, 16, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60],
        [16, 26, 27, 28, 52, 61, 62, 63, 56, 64, 65, 66, 60, 67, 68, 69],
        [28, 38, 39, 40, 63, 70, 71, 72, 66, 73, 74, 75, 69, 76, 77, 78],
        [40, 47, 48, 13, 72, 79, 80, 49, 75, 81, 82, 53, 78, 83, 84, 57],
        [57, 58, 59, 60, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96],
        [60, 67, 68, 69, 88, 97, 98, 99, 92, 100, 101, 102, 96, 103, 104, 105],
        [69, 76, 77, 78, 99, 106, 107, 108, 102, 109, 110, 111, 105, 112, 113, 114],
        [78, 83, 84, 57, 108, 115, 116, 85, 111, 117, 118, 89, 114, 119, 120, 93],
        [121, 122, 123, 124, 125, 126, 127, 128, 129, 130, 131, 132, 133, 134, 135, 136],
        [124, 137, 138, 121, 128, 139, 140, 125, 132, 141, 142, 129, 136, 143, 144, 133],
        [133, 134, 135, 136, 145, 146, 147, 148, 149, 150, 151, 152, 69, 153, 154, 155],
        [136, 143, 144, 133, 148, 156, 157, 145, 152, 158, 159, 149, 155, 160, 161, 69],
        [162, 163, 164, 165, 166, 167, 168, 169, 170, 171, 172, 173, 174, 175, 176, 177],
        [165, 178, 179, 162, 169, 180, 181, 166, 173, 182, 183, 170, 177, 184, 185, 174],
        [174, 175, 176, 177, 186, 187, 188, 189, 190, 191, 192, 193, 194, 195, 196, 197],
        [177, 184, 185, 174, 189, 198, 199, 186, 193, 200, 201, 190, 197, 202, 203, 194],
        [204, 204, 204, 204, 207, 208, 209, 210, 211, 211, 211, 211, 212, 213, 214, 215],
        [204, 204, 204, 204, 210, 217, 218, 219, 211, 211, 211, 211, 215, 220, 221, 222],
        [204, 204, 204, 204, 219, 224, 225, 226, 211, 211, 211, 211, 222, 227, 228, 229],
        [204, 204, 204, 204, 226, 230, 231, 207, 211, 211, 211, 211, 229, 232, 233, 212],
        [212, 213, 214, 215, 234, 235, 236, 237, 238, 239, 240, 241, 242, 243, 244, 245],
        [215, 220, 221, 222, 237, 246, 247, 248, 241, 249, 250, 251, 245, 252, 253, 254],
        [222, 227, 228, 229, 248, 255, 256, 257, 251, 258, 259, 260, 254, 261, 262, 263],
        [229, 232, 233, 212, 257, 264, 265, 234, 260, 266, 267, 238, 263, 268, 269, 242],
        [270, 270, 270, 270, 279, 280, 281, 282, 275, 276, 277, 278, 271, 272, 273, 274],
        [270, 270, 270, 270, 282, 289, 290, 291, 278, 286, 287, 288, 274, 283, 284, 285],
        [270, 270, 270, 270, 291, 298, 299, 300, 288, 295, 296, 297, 285, 292, 293, 294],
        [270, 270, 270, 270, 300, 305, 306, 279, 297, 303, 304, 275, 294, 301, 302, 271],
    ],
    dtype=np.int64,
)

_TEAPOT_POINTS = np.array(
    [
        [1.4, 0.0, 2.4], [1.4, -0.784, 2.4], [0.784, -1.4, 2.4], [0.0, -1.4, 2.4],
        [1.3375, 0.0, 2.53125], [1.3375, -0.749, 2.53125], [0.749, -1.3375, 2.53125],
        [0.0, -1.3375, 2.53125], [1.4375, 0.0, 2.53125], [1.4375, -0.805, 2.53125],
        [0.805, -1.4375, 2.53125], [0.0, -1.4375, 2.53125], [1.5, 0.0, 2.4], [1.5, -0.84, 2.4],
        [0.84, -1.5, 2.4], [0.0, -1.5, 2.4], [-0.784, -1.4, 2.4], [-1.4, -0.784, 2.4],
        [-1.4, 0.0, 2.4], [-0.749, -1.3375, 2.53125], [-1.3375, -0.749, 2.53125],
        [-1.3375, 0.0, 2.53125], [-0.805, -1.4375, 2.53125], [-1.4375, -0.805, 2.53125],
        [-1.4375, 0.0, 2.53125], [-0.84, -1.5, 2.4], [-1.5, -0.84, 2.4], [-1.5, 0.0, 2.4],
        [-1.4, 0.784, 2.4], [-0.784, 1.4, 2.4], [0.0, 1.4, 2.4], [-1.3375, 0.749, 2.53125],
        [-0.749, 1.3375, 2.53125], [0.0, 1.3375, 2.53125], [-1.4375, 0.805, 2.53125],
        [-0.805, 1.4375, 2.53125], [0.0, 1.4375, 2.53125], [-1.5, 0.84, 2.4], [-0.84, 1.5, 2.4],
        [0.0, 1.5, 2.4], [0.784, 1.4, 2.4], [1.4, 0.784, 2.4], [0.749, 1.3375, 2.53125],
        [1.3375, 0.749, 2.53125], [0.805, 1.4375, 2.53125], [1.4375, 0.805, 2.53125],
        [0.84, 1.5, 2.4], [1.5, 0.84, 2.4], [1.75, 0.0, 1.875], [1.75, -0.98, 1.875],
        [0.98, -1.75, 1.875], [0.0, -1.75, 1.875], [2.0, 0.0, 1.35], [2.0, -1.12, 1.35],
        [1.12, -2.0, 1.35], [0.0, -2.0, 1.35], [2.0, 0.0, 0.9], [2.0, -1.12, 0.9],
        [1.12, -2.0, 0.9], [0.0, -2.0, 0.9], [-0.98, -1.75, 1.875], [-1.75, -0.98, 1.875],
        [-1.75, 0.0, 1.875], [-1.12, -2.0, 1.35], [-2.0, -1.12, 1.35], [-2.0, 0.0, 1.35],
        [-1.12, -2.0, 0.9], [-2.0, -1.12, 0.9], [-2.0, 0.0, 0.9], [-1.75, 0.98, 1.875],
        [-0.98, 1.75, 1.875], [0.0, 1.75, 1.875], [-2.0, 1.12, 1.35], [-1.12, 2.0, 1.35],
        [0.0, 2.0, 1.35], [-2.0, 1.12, 0.9], [-1.12, 2.0, 0.9], [0.0, 2.0, 0.9],
        [0.98, 1.75, 1.875], [1.75, 0.98, 1.875], [1.12, 2.0, 1.35], [2.0, 1.12, 1.35],
        [1.12, 2.0, 0.9], [2.0, 1.12, 0.9], [2.0, 0.0, 0.45], [2.0, -1.12, 0.45],
        [1.12, -2.0, 0.45], [0.0, -2.0, 0.45], [1.5, 0.0, 0.225], [1.5, -0.84, 0.225],
        [0.84, -1.5, 0.225], [0.0, -1.5, 0.225], [1.5, 0.0, 0.15], [1.5, -0.84, 0.15],
        [0.84, -1.5, 0.15], [0.0, -1.5, 0.15], [-1.12, -2.0, 0.45], [-2.0, -1.12, 0.45],
        [-2.0, 0.0, 0.45], [-0.84, -1.5, 0.225], [-1.5, -0.84, 0.225], [-1.5, 0.0, 0.225],
        [-0.84, -1.5, 0.15], [-1.5, -0.84, 0.15], [-1.5, 0.0, 0.15], [-2.0, 1.12, 0.45],
        [-1.12, 2.0, 0.45], [0.0, 2.0, 0.45], [-1.5, 0.84, 0.225], [-0.84, 1.5, 0.225],
        [0.0, 1.5, 0.225], [-1.5, 0.84, 0.15], [-0.84, 1.5, 0.15], [0.0, 1.5, 0.15],
        [1.12, 2.0, 0.45], [2.0, 1.12, 0.45], [0.84, 1.5, 0.225], [1.5, 0.84, 0.225],
        [0.84, 1.5, 0.15], [1.5, 0.84, 0.15], [-1.6, 0.0, 2.025], [-1.6, -0.3, 2.025],
        [-1.5, -0.3, 2.25], [-1.5, 0.0, 2.25], [-2.3, 0.0, 2.025], [-2.3, -0.3, 2.025],
        [-2.5, -0.3, 2.25], [-2.5, 0.0, 2.25], [-2.7, 0.0, 2.025], [-2.7, -0.3, 2.025],
        [-3.0, -0.3, 2.25], [-3.0, 0.0, 2.25], [-2.7, 0.0, 1.8], [-2.7, -0.3, 1.8],
        [-3.0, -0.3, 1.8], [-3.0, 0.0, 1.8], [-1.5, 0.3, 2.25], [-1.6, 0.3, 2.025],
        [-2.5, 0.3, 2.25], [-2.3, 0.3, 2.025], [-3.0, 0.3, 2.25], [-2.7, 0.3, 2.025],
        [-3.0, 0.3, 1.8], [-2.7, 0.3, 1.8], [-2.7, 0.0, 1.575], [-2.7, -0.3, 1.575],
        [-3.0, -0.3, 1.35], [-3.0, 0.0, 1.35], [-2.5, 0.0, 1.125], [-2.5, -0.3, 1.125],
        [-2.65, -0.3, 0.9375], [-2.65, 0.0, 0.9375], [-2.0, -0.3, 0.9], [-1.9, -0.3, 0.6],
        [-1.9, 0.0, 0.6], [-3.0, 0.3, 1.35], [-2.7, 0.3, 1.575], [-2.65, 0.3, 0.9375],
        [-2.5, 0.3, 1.125], [-1.9, 0.3, 0.6], [-2.0, 0.3, 0.9], [1.7, 0.0, 1.425],
        [1.7, -0.66, 1.425], [1.7, -0.66, 0.6], [1.7, 0.0, 0.6], [2.6, 0.0, 1.425],
        [2.6, -0.66, 1.425], [3.1, -0.66, 0.825], [3.1, 0.0, 0.825], [2.3, 0.0, 2.1],
        [2.3, -0.25, 2.1], [2.4, -0.25, 2.025], [2.4, 0.0, 2.025], [2.7, 0.0, 2.4],
        [2.7, -0.25, 2.4], [3.3, -0.25, 2.4], [3.3, 0.0, 2.4], [1.7, 0.66, 0.6],
        [1.7, 0.66, 1.425], [3.1, 0.66, 0.825], [2.6, 0.66, 1.425], [2.4, 0.25, 2.025],
        [2.3, 0.25, 2.1], [3.3, 0.25, 2.4], [2.7, 0.25, 2.4], [2.8, 0.0, 2.475],
        [2.8, -0.25, 2.475], [3.525, -0.25, 2.49375], [3.525, 0.0, 2.49375], [2.9, 0.0, 2.475],
        [2.9, -0.15, 2.475], [3.45, -0.15, 2.5125], [3.45, 0.0, 2.5125], [2.8, 0.0, 2.4],
        [2.8, -0.15, 2.4], [3.2, -0.15, 2.4], [3.2, 0.0, 2.4], [3.525, 0.25, 2.49375],
        [2.8, 0.25, 2.475], [3.45, 0.15, 2.5125], [2.9, 0.15, 2.475], [3.2, 0.15, 2.4],
        [2.8, 0.15, 2.4], [0.0, 0.0, 3.15], [0.0, -0.002, 3.15], [0.002, 0.0, 3.15],
        [0.8, 0.0, 3.15], [0.8, -0.45, 3.15], [0.45, -0.8, 3.15], [0.0, -0.8, 3.15],
        [0.0, 0.0, 2.85], [0.2, 0.0, 2.7], [0.2, -0.112, 2.7], [0.112, -0.2, 2.7],
        [0.0, -0.2, 2.7], [-0.002, 0.0, 3.15], [-0.45, -0.8, 3.15], [-0.8, -0.45, 3.15],
        [-0.8, 0.0, 3.15], [-0.112, -0.2, 2.7], [-0.2, -0.112, 2.7], [-0.2, 0.0, 2.7],
        [0.0, 0.002, 3.15], [-0.8, 0.45, 3.15], [-0.45, 0.8, 3.15], [0.0, 0.8, 3.15],
        [-0.2, 0.112, 2.7], [-0.112, 0.2, 2.7], [0.0, 0.2, 2.7], [0.45, 0.8, 3.15],
        [0.8, 0.45, 3.15], [0.112, 0.2, 2.7], [0.2, 0.112, 2.7], [0.4, 0.0, 2.55],
        [0.4, -0.224, 2.55], [0.224, -0.4, 2.55], [0.0, -0.4, 2.55], [1.3, 0.0, 2.55],
        [1.3, -0.728, 2.55], [0.728, -1.3, 2.55], [0.0, -1.3, 2.55], [1.3, 0.0, 2.4],
        [1.3, -0.728, 2.4], [0.728, -1.3, 2.4], [0.0, -1.3, 2.4], [-0.224, -0.4, 2.55],
        [-0.4, -0.224, 2.55], [-0.4, 0.0, 2.55], [-0.728, -1.3, 2.55], [-1.3, -0.728, 2.55],
        [-1.3, 0.0, 2.55], [-0.728, -1.3, 2.4], [-1.3, -0.728, 2.4], [-1.3, 0.0, 2.4],
        [-0.4, 0.224, 2.55], [-0.224, 0.4, 2.55], [0.0, 0.4, 2.55], [-1.3, 0.728, 2.55],
        [-0.728, 1.3, 2.55], [0.0, 1.3, 2.55], [-1.3, 0.728, 2.4], [-0.728, 1.3, 2.4],
        [0.0, 1.3, 2.4], [0.224, 0.4, 2.55], [0.4, 0.224, 2.55], [0.728, 1.3, 2.55],
        [1.3, 0.728, 2.55], [0.728, 1.3, 2.4], [1.3, 0.728, 2.4], [0.0, 0.0, 0.0],
        [1.5, 0.0, 0.15], [1.5, 0.84, 0.15], [0.84, 1.5, 0.15], [0.0, 1.5, 0.15],
        [1.5, 0.0, 0.075], [1.5, 0.84, 0.075], [0.84, 1.5, 0.075], [0.0, 1.5, 0.075],
        [1.425, 0.0, 0.0], [1.425, 0.798, 0.0], [0.798, 1.425, 0.0], [0.0, 1.425, 0.0],
        [-0.84, 1.5, 0.15], [-1.5, 0.84, 0.15], [-1.5, 0.0, 0.15], [-0.84, 1.5, 0.075],
        [-1.5, 0.84, 0.075], [-1.5, 0.0, 0.075], [-0.798, 1.425, 0.0], [-1.425, 0.798, 0.0],
        [-1.425, 0.0, 0.0], [-1.5, -0.84, 0.15], [-0.84, -1.5, 0.15], [0.0, -1.5, 0.15],
        [-1.5, -0.84, 0.075], [-0.84, -1.5, 0.075], [0.0, -1.5, 0.075], [-1.425, -0.798, 0.0],
        [-0.798, -1.425, 0.0], [0.0, -1.425, 0.0], [0.84, -1.5, 0.15], [1.5, -0.84, 0.15],
        [0.84, -1.5, 0.075], [1.5, -0.84, 0.075], [0.798, -1.425, 0.0], [1.425, -0.798, 0.0],
    ],
    dtype=np.float64,
)

# Default grid resolution per patch: 32 * 2 * 6**2 quads' triangles, minus the 8 * 6 that
# collapse at the lid tip and bottom pole, gives 2,256 triangles (close to the 2,464 of the
# classic low-poly teapot.obj); 7 would give 3,080.
TEAPOT_DEFAULT_RESOLUTION = 6


def _bernstein3(t: np.ndarray) -> np.ndarray:
    """Cubic Bernstein basis at parameters ``t`` (float64 ``[N]``) -> float64 ``[N, 4]``."""
    t = t[:, None]
    k = np.arange(4)
    binomial = np.array([1.0, 3.0, 3.0, 1.0])
    return binomial * t**k * (1.0 - t) ** (3 - k)


def _grid_triangles(resolution: int) -> np.ndarray:
    """Triangles of one patch's ``(n+1) x (n+1)`` vertex grid, indexed ``u * (n+1) + v``.

    Returns int64 ``[2 n^2, 3]``. Each quad ``(u,v),(u,v+1),(u+1,v+1),(u+1,v)`` is split along
    the diagonal from its ``(u,v)`` corner, so at a patch pole (a row ``u`` whose points all
    coincide) exactly one triangle of the quad collapses and the other survives.
    """
    stride = resolution + 1
    u, v = np.meshgrid(np.arange(resolution), np.arange(resolution), indexing="ij")
    a = (u * stride + v).ravel()
    b, c, d = a + 1, a + stride + 1, a + stride
    return np.concatenate([np.stack([a, b, c], axis=1), np.stack([a, c, d], axis=1)])


def _weld(points: np.ndarray, faces: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Merge coincident points (to ``1e-6``) and drop triangles that collapse as a result.

    Args:
        points: float64 ``[P, 3]``.
        faces: int64 ``[F, 3]`` into ``points``.

    Returns:
        float64 ``[V, 3]`` unique vertices and int64 ``[F', 3]`` faces with three distinct corners.
    """
    vertices, inverse = np.unique(np.round(points, _WELD_DECIMALS), axis=0, return_inverse=True)
    faces = inverse.reshape(-1)[faces]
    distinct = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])
    return vertices, faces[distinct]


def teapot(resolution: int = TEAPOT_DEFAULT_RESOLUTION) -> MeshTensors:
    """The Utah teapot, tessellated from Newell's 32 bicubic Bezier patches.

    Each patch is evaluated on a ``(resolution+1)^2`` grid, shared patch borders are welded and
    the triangles that collapse at the lid tip and the bottom pole are dropped. The result is
    rotated to +y up (lid towards +y, spout towards +x) and normalised with
    :func:`normalize_unit`. The mesh is open (the spout and handle ends and the lid/rim gap).

    Args:
        resolution: grid cells per patch side, >= 1 (default gives 2,256 triangles).

    Returns:
        vertices float32 ``[V, 3]``, faces int64 ``[F, 3]`` (CCW outward).
    """
    if resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    control = _TEAPOT_POINTS[_TEAPOT_PATCHES - 1].reshape(-1, 4, 4, 3)  # [32, 4(u), 4(v), 3]
    basis = _bernstein3(np.linspace(0.0, 1.0, resolution + 1))
    grid = np.einsum("ui,vj,pijc->puvc", basis, basis, control)  # [32, n+1, n+1, 3]

    # Newell's patches are parametrised so that dS/dv x dS/du points out of the pot, which is
    # the right-hand-rule normal of the grid triangles (u,v) -> (u,v+1) -> (u+1,v+1).
    per_patch = grid.shape[1] * grid.shape[2]
    offsets = np.arange(len(control))[:, None, None] * per_patch
    faces = (_grid_triangles(resolution)[None] + offsets).reshape(-1, 3)
    vertices, faces = _weld(grid.reshape(-1, 3), faces)

    # z-up -> y-up: a proper rotation about x, (x, y, z) -> (x, z, -y), keeps the winding.
    vertices = np.stack([vertices[:, 0], vertices[:, 2], -vertices[:, 1]], axis=1)
    vertices = normalize_unit(torch.from_numpy(vertices)).numpy()
    return _to_tensors(vertices, faces)


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

# Zero-argument factories; keyword arguments still override the defaults (see builtin_shape).
BUILTIN_SHAPES: Dict[str, Callable[..., MeshTensors]] = {
    "cube": cube,
    "sphere": functools.partial(icosphere, subdivisions=3),
    "teapot": teapot,
}


def builtin_shape(name: str, **kwargs) -> MeshTensors:
    """Build a built-in shape by name ("cube", "sphere", "teapot").

    Keyword arguments go to the builder (``size`` for cube, ``subdivisions``/``radius`` for
    sphere, ``resolution`` for teapot).

    Returns:
        vertices float32 ``[V, 3]``, faces int64 ``[F, 3]``.

    Raises:
        ValueError: unknown name.
    """
    if name not in BUILTIN_SHAPES:
        choices = ", ".join(sorted(BUILTIN_SHAPES))
        raise ValueError(f"unknown built-in shape '{name}'; choose one of: {choices}")
    return BUILTIN_SHAPES[name](**kwargs)
