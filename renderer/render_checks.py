"""Argument checks that the renderers' ops share, made before any op runs, so that a wrong shape,
dtype or size is one error naming the argument instead of a failure deep inside an op (or a size
quietly truncated)."""
import operator
from typing import Any

import torch
from torch import Tensor


def check_vertices(vertices: Any) -> None:
    """``vertices`` must be a float32 or float64 [B,V,3] tensor."""
    if not isinstance(vertices, Tensor) or vertices.dim() != 3 or vertices.shape[-1] != 3:
        got = list(vertices.shape) if isinstance(vertices, Tensor) else type(vertices).__name__
        raise ValueError(f"vertices must be a [B,V,3] tensor, got {got}")
    if vertices.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"vertices must be float32 or float64, got {vertices.dtype}")


def check_triangles(triangles: Any) -> Tensor:
    """``triangles`` as the int64 [F,3] tensor the compiled ops take; int32 is widened."""
    if not isinstance(triangles, Tensor) or triangles.dtype not in (torch.int32, torch.int64):
        raise TypeError("triangles must be an integer (int32 or int64) tensor of shape [F,3]")
    if triangles.dim() != 2 or triangles.shape[1] != 3:
        raise ValueError(f"triangles must have shape [F,3], got {list(triangles.shape)}")
    return triangles.long()


def check_per_vertex(value: Any, name: str, vertices: Tensor, alternative: str = "") -> None:
    """``value`` must be a tensor of the vertices' [B,V,3] shape; ``alternative`` says what may
    be given instead, in the message."""
    if not isinstance(value, Tensor) or value.shape != vertices.shape:
        got = list(value.shape) if isinstance(value, Tensor) else value
        raise ValueError(f"{name} must have shape {list(vertices.shape)}{alternative}, got {got}")


def check_image_size(value: Any, name: str) -> int:
    """``value`` as a positive int; any integer type passes, a bool or a float does not."""
    try:
        if isinstance(value, bool):
            raise TypeError
        size = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    if size <= 0:
        raise ValueError(f"{name} must be positive, got {size}")
    return size
