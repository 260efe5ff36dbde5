"""tf_mesh_renderer's test scenes (see ../shared/reference/README.md) and its image criterion."""
import numpy as np
import torch
from PIL import Image

CUBE_VERTICES = [[-1, -1, 1], [-1, -1, -1], [-1, 1, -1], [-1, 1, 1],
                 [1, -1, 1], [1, -1, -1], [1, 1, -1], [1, 1, 1]]
CUBE_TRIANGLES = [[0, 1, 2], [2, 3, 0], [3, 2, 6], [6, 7, 3], [7, 6, 5], [5, 4, 7],
                  [4, 5, 1], [1, 0, 4], [5, 6, 2], [2, 1, 5], [7, 4, 0], [0, 3, 7]]
TRIANGLE_CLIP = [[-0.5, -0.5, 0.8, 1.0], [0.0, 0.5, 0.3, 1.0], [0.5, -0.5, 0.3, 1.0]]


def cube(dtype=torch.float32):
    """(vertices [8,3], triangles [12,3] int64, normals [8,3]) of tf's test cube."""
    vertices = torch.tensor(CUBE_VERTICES, dtype=dtype)
    return vertices, torch.tensor(CUBE_TRIANGLES), vertices / vertices.norm(dim=-1, keepdim=True)


def load_png(path) -> np.ndarray:
    """[H,W,4] float64 in [0,1]."""
    return np.asarray(Image.open(path).convert("RGBA"), dtype=np.float64) / 255.0


def outlier_fraction(image, expected: np.ndarray, tolerance: float = 0.01) -> float:
    """tf's criterion: the fraction of pixels whose worst channel differs by more than tolerance."""
    image = np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)
    return float((np.abs(image - expected).max(axis=-1) > tolerance).mean())
