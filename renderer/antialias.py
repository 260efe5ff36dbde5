"""Analytic antialiasing for the barycentric renderer (Laine et al. 2020, "Modular Primitives for
High-Performance Differentiable Rendering", the antialiasing pass of nvdiffrast), on CPU and CUDA.

A z-buffer image is piecewise constant in the vertex positions: moving a silhouette edge by less
than a pixel changes nothing, so its gradient is zero. :func:`antialias` blends each pair of
neighbouring pixels that see different surfaces by how far between their centres a silhouette
edge of the front surface crosses. The blend moves continuously with the edge's two vertices,
which gives silhouettes and occlusion boundaries a gradient, and smooths the stair steps. Unlike
nvdiffrast, which only tests the edges of the front pixel's own triangle, the search follows the
front surface across interior edges to the silhouette, so the thin triangles along a finely
tessellated smooth outline do not hide it.

Only true silhouette edges count: an edge with no neighbouring triangle (open meshes, boundary
edges), or whose neighbour faces the other way in this view. Interior edges of a smooth surface
never blend, so they add no spurious gradients. Which triangle neighbours which depends only on
the faces; :func:`edge_topology` computes it once per faces tensor and caches it.

    ids, bary, z = barycentric.rasterize_triangles(clip, faces, W, H)
    color = ...                                             # [B,H,W,C] from ids and bary
    color = antialias(color, ids, clip, faces, barycentrics=bary, z_buffer=z)
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from ._ext import _C
from .render_checks import check_triangles

__all__ = ["EdgeTopology", "antialias", "edge_topology", "clear_topology_cache"]


@dataclass(frozen=True)
class EdgeTopology:
    """Which triangle lies across each edge of each triangle, for one faces tensor.

    Attributes:
        faces: int64 ``[F,3]``, a private copy of the faces this was built from.
        neighbors: int64 ``[F,3]``: for edge k of face f, the edge from corner k to corner k+1,
            the other face on that edge, or -1 when the edge has no neighbour (a boundary edge),
            is shared by more than two faces, or is degenerate. Such edges are always treated as
            silhouettes. Adjacency is by vertex index, whatever the winding.
    """

    faces: Tensor
    neighbors: Tensor

    @staticmethod
    def from_faces(faces: Tensor) -> "EdgeTopology":
        """Builds the topology of int ``[F,3]`` faces (vectorised: one sort of the 3F edges)."""
        faces = check_triangles(faces)
        count = faces.shape[0]
        neighbors = torch.full((count, 3), -1, dtype=torch.int64, device=faces.device)
        if count == 0:
            return EdgeTopology(faces.clone(), neighbors)
        # Corner k of every face owns the edge (k, k+1); edge e = 3f + k belongs to face e // 3.
        start, end = faces, faces.roll(-1, dims=1)
        low, high = torch.minimum(start, end).reshape(-1), torch.maximum(start, end).reshape(-1)
        keys = low * (int(faces.max()) + 1) + high
        degenerate = ((faces[:, 0] == faces[:, 1]) | (faces[:, 1] == faces[:, 2]) | (faces[:, 2] == faces[:, 0]))
        keys = torch.where(degenerate.repeat_interleave(3), torch.full_like(keys, -1), keys)  # match nothing
        order = torch.argsort(keys, stable=True)
        sorted_keys = keys[order]
        # Runs of equal keys: an edge shared by exactly two faces is a run of two.
        new_run = torch.ones_like(sorted_keys, dtype=torch.bool)
        new_run[1:] = sorted_keys[1:] != sorted_keys[:-1]
        run_id = torch.cumsum(new_run.long(), 0) - 1
        run_length = torch.bincount(run_id)[run_id]
        first = new_run & (run_length == 2) & (sorted_keys >= 0)
        a = order[first]
        b = order[first.nonzero().squeeze(1) + 1]
        flat = neighbors.reshape(-1)
        flat[a] = b // 3
        flat[b] = a // 3
        return EdgeTopology(faces.clone(), neighbors)

    def to(self, device) -> "EdgeTopology":
        return EdgeTopology(self.faces.to(device), self.neighbors.to(device))


_CACHE_SIZE = 8
_cache: "OrderedDict[tuple, EdgeTopology]" = OrderedDict()
_cache_lock = threading.Lock()


def edge_topology(faces: Tensor) -> EdgeTopology:
    """The :class:`EdgeTopology` of ``faces``, from a small cache.

    The cache holds the last 8 distinct faces tensors (by device, shape and content: an entry is
    reused only when ``torch.equal`` to the faces passed, so faces edited in place or a new tensor
    at a recycled address are never served stale data). A fit with fixed topology builds it once;
    each later call costs one comparison of the faces. Pass ``topology=`` to :func:`antialias` to
    skip even that, or call :func:`clear_topology_cache` to drop the cached tensors.
    """
    faces = check_triangles(faces)
    key_prefix = (str(faces.device), tuple(faces.shape))
    with _cache_lock:
        for key, topology in reversed(_cache.items()):
            if key[:2] == key_prefix and torch.equal(topology.faces, faces):
                _cache.move_to_end(key)
                return topology
    topology = EdgeTopology.from_faces(faces)
    with _cache_lock:
        _cache[key_prefix + (id(topology),)] = topology
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return topology


def clear_topology_cache() -> None:
    """Empties the :func:`edge_topology` cache."""
    with _cache_lock:
        _cache.clear()


class _Antialias(torch.autograd.Function):
    @staticmethod
    def forward(ctx, color: Tensor, clip: Tensor, ids: Tensor, triangles: Tensor, neighbors: Tensor,
                barycentrics: Optional[Tensor], z_buffer: Optional[Tensor]):
        out, pair_alpha, pair_code = _C.antialias_forward(color, ids, clip, triangles, neighbors, barycentrics,
                                                          z_buffer)
        ctx.save_for_backward(color, clip, ids, triangles, neighbors, pair_alpha, pair_code)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        color, clip, ids, triangles, neighbors, pair_alpha, pair_code = ctx.saved_tensors
        grad_color, grad_clip = _C.antialias_backward(grad_out.contiguous(), color, ids, clip, triangles, neighbors,
                                                      pair_alpha, pair_code)
        return grad_color, grad_clip, None, None, None, None, None


def antialias(color: Tensor, triangle_ids: Tensor, clip_space_vertices: Tensor, triangles: Tensor,
              barycentrics: Optional[Tensor] = None, z_buffer: Optional[Tensor] = None,
              topology: Optional[EdgeTopology] = None) -> Tensor:
    """Antialiases silhouette edges of a rasterized image, differentiably.

    Where two horizontally or vertically neighbouring pixels see different surfaces (two
    triangles, or a triangle and the background), the surface in front is found (the covered
    pixel, or the smaller depth). The segment from its centre to the other centre is followed
    through the front surface (across interior edges) to the first silhouette edge; if that edge
    crosses the segment at distance d from the front centre, colour moves across:
    for d < ½ the front pixel takes (½ - d) of the back pixel's colour, for d > ½ the back pixel
    takes (d - ½) of the front pixel's. Everything else passes through unchanged.

    Args:
        color: [B,H,W,C] float32/float64, e.g. the RGBA of :func:`diffrender.barycentric.render`
            (use premultiplied colour with the coverage as alpha so the background blends in).
        triangle_ids: [B,H,W] int64 from :func:`~diffrender.barycentric.rasterize_triangles`.
        clip_space_vertices: [B,V,4] float, the clip-space vertices *that were rasterized*
            (:func:`~diffrender.barycentric.render` mirrors y; pass the mirrored ones).
        triangles: [F,3] int, the rasterized triangles.
        barycentrics, z_buffer: the rasterizer's [B,H,W,3] and [B,H,W] outputs, for coverage and
            depth (faster). When omitted, both are replayed from the ids and vertices with the
            rasterizer's own test (exact when ``color`` has the dtype the vertices were rasterized
            in).
        topology: :func:`edge_topology` of ``triangles``; looked up in its cache when omitted.
    Returns:
        [B,H,W,C] float. Differentiable with respect to ``color`` and the clip x, y and w of the
        silhouette edges' vertices (clip z gets no gradient).

    Each pair blends independently (as in nvdiffrast), so a pixel between several silhouettes,
    e.g. a one-pixel-wide sliver, can take up to four blends and leave the range of its inputs.

    Limitations: only triangles entirely in front of the eye (w > 0) antialias their edges; an
    intersection line between interpenetrating triangles is not an edge and is not smoothed;
    vertices duplicated along seams (same position, different index) make the seam a boundary,
    which blends (nearly equal) colours across it: weld such meshes for clean gradients.
    """
    for name, t in (("color", color), ("clip_space_vertices", clip_space_vertices)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor")
    if color.dim() != 4:
        raise ValueError(f"color must have shape [B,H,W,C], got {list(color.shape)}")
    if clip_space_vertices.dim() != 3 or clip_space_vertices.shape[-1] != 4:
        raise ValueError(f"clip_space_vertices must have shape [B,V,4], got {list(clip_space_vertices.shape)}")
    if (barycentrics is None) != (z_buffer is None):
        raise ValueError("antialias: pass barycentrics and z_buffer together (or neither)")
    triangles = check_triangles(triangles)
    if topology is None:
        topology = edge_topology(triangles)
    elif topology.faces.shape != triangles.shape:
        raise ValueError(f"topology was built for faces of shape {list(topology.faces.shape)}, "
                         f"not {list(triangles.shape)}")
    neighbors = topology.neighbors.to(triangles.device)
    clip = clip_space_vertices.to(color.dtype)
    if barycentrics is not None:
        barycentrics = barycentrics.detach().to(color.dtype)
        z_buffer = z_buffer.detach().to(color.dtype)
    return _Antialias.apply(color, clip, triangle_ids, triangles, neighbors, barycentrics, z_buffer)
