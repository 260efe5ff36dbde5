"""tf_mesh_renderer's test scenes (see ../shared/reference/README.md) and its image criterion."""
import numpy as np
import torch
from PIL import Image

from diffrender import barycentric, camera

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


def simple_triangle(scales=(1.0, 1.0, 1.0), dtype=torch.float32):
    """(clip [1,3,4], triangles [1,3]): the Simple_Triangle scene, each vertex's row scaled."""
    clip = torch.tensor(TRIANGLE_CLIP, dtype=dtype) * torch.tensor(scales, dtype=dtype)[:, None]
    return clip[None], torch.tensor([[0, 1, 2]])


def unlit_cube_scene():
    """(vertices [2,8,3], attributes [2,8,4], triangles, matrices [2,4,4]) of Unlit_Cube_0/1."""
    vertices, triangles, _ = cube()
    eyes = torch.tensor([[2.0, 3.0, 6.0], [-3.0, 1.0, 6.0]])
    view = camera.look_at(eyes, torch.zeros(2, 3), torch.tensor([[0.0, 1.0, 0.0]] * 2))
    matrices = camera.perspective(640 / 480, 40.0, 0.01, 10.0) @ view
    attributes = torch.cat([(vertices + 1) / 2, torch.ones(8, 1)], dim=-1).expand(2, 8, 4)
    return vertices.expand(2, 8, 3), attributes, triangles, matrices


def gray_cube_render(angles, width=640, height=480):
    """[B,H,W,4] render of the Gray_Cube scene for euler angles [B,3], on the angles' device."""
    vertices, triangles, normals = (t.to(angles.device) for t in cube())
    rotation = camera.euler_matrices(angles)[:, :3, :3]
    batch = angles.shape[0]
    eye = torch.tensor([[0.0, 0.0, 6.0]], device=angles.device).expand(batch, 3)
    return barycentric.render(
        vertices @ rotation.transpose(1, 2), triangles, normals @ rotation.transpose(1, 2),
        torch.ones(batch, 8, 3, device=angles.device), eye, torch.zeros(batch, 3, device=angles.device),
        torch.tensor([[0.0, 1.0, 0.0]], device=angles.device).expand(batch, 3), eye[:, None, :],
        torch.ones(batch, 1, 3, device=angles.device), width, height)


def fit_cube_rotation(target: np.ndarray, device="cpu") -> np.ndarray:
    """tf's testThatCubeRotates on ``device``: euler angles from (0,0,0), 35 steps of SGD (lr 0.7,
    momentum 0.1, gradient norm clipped to 1) on mean |render − target|; the final render."""
    target = torch.from_numpy(target).float().to(device)
    angles = torch.zeros(1, 3, device=device, requires_grad=True)
    optimizer = torch.optim.SGD([angles], lr=0.7, momentum=0.1)
    for _ in range(35):
        optimizer.zero_grad()
        loss = (gray_cube_render(angles)[0] - target).abs().mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([angles], 1.0)
        optimizer.step()
    return gray_cube_render(angles.detach())[0].cpu().numpy()


GOLDEN_NAMES = ["Simple_Triangle", "Perspective_Corrected_Triangle", "Unlit_Cube_0", "Unlit_Cube_1",
                "Gray_Cube_0", "Gray_Cube_1"]


def render_golden_scenes(device="cpu") -> dict:
    """{name in GOLDEN_NAMES: [480,640,4] render of that scene on ``device``, on the CPU}."""
    renders = {}
    for name, scales in (("Simple_Triangle", (1, 1, 1)), ("Perspective_Corrected_Triangle", (0.2, 0.5, 2.0))):
        clip, triangles = (t.to(device) for t in simple_triangle(scales))
        _, bary, _ = barycentric.rasterize_triangles(clip, triangles, 640, 480)
        renders[name] = torch.cat([bary, torch.ones_like(bary[..., :1])], dim=-1)[0].cpu()
    vertices, attributes, triangles, matrices = (t.to(device) for t in unlit_cube_scene())
    unlit = barycentric.rasterize(vertices, attributes, triangles, matrices, 640, 480, [0, 0, 0, 0])
    gray = gray_cube_render(torch.tensor([[-20.0, 0.0, 60.0], [45.0, 60.0, 0.0]], device=device))
    for i in range(2):
        renders[f"Unlit_Cube_{i}"] = unlit[i].cpu()
        renders[f"Gray_Cube_{i}"] = gray[i].detach().cpu()
    return renders


def numeric_jacobian(function, x, step):
    """Central differences, one input entry at a time: [outputs, inputs]."""
    flat = x.reshape(-1)
    columns = []
    for i in range(flat.numel()):
        plus, minus = flat.clone(), flat.clone()
        plus[i] += step
        minus[i] -= step
        columns.append((function(plus.view_as(x)) - function(minus.view_as(x))).reshape(-1) / (2 * step))
    return torch.stack(columns, dim=1)


def analytic_jacobian(function, x):
    leaf = x.clone().requires_grad_(True)
    return torch.autograd.functional.jacobian(function, leaf).reshape(-1, x.numel())


def tf_outliers(numeric, analytic):
    # tf's check_jacobians_are_nearly_equal divides by the signed numeric value, as here.
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.abs(numeric - analytic) / numeric
    return np.nan_to_num(ratio, nan=0.0, posinf=np.inf) > 0.01


TF_CUBE_CLIP_XYZ = [[-0.43889722, -0.53184521, 0.85293502], [-0.37635487, 0.22206162, 0.90555805],
                    [-0.22849123, 0.76811147, 0.80993629], [-0.2805393, -0.14092168, 0.71602166],
                    [0.18631913, -0.62634289, 0.88603103], [0.16183566, 0.08129397, 0.93020856],
                    [0.44147962, 0.53497446, 0.85076219], [0.53008741, -0.31276882, 0.77620775]]

# The share of outlier entries tf_mesh_renderer's own tests allow.
TF_JACOBIAN_MAX_OUTLIERS = {"Simple_Triangle": 0.0, "Cube": 0.01}


def tf_jacobian_checks(device="cpu") -> dict:
    """tf's two gradient tests on ``device``, step 4e-2: {name: (outlier share, Σ|analytic|)}.
    Simple_Triangle: the barycentrics of pixel (325, 245) w.r.t. the clip vertices; Cube: the
    whole 28×21 barycentric image w.r.t. TF_CUBE_CLIP_XYZ with w = 1."""
    clip, triangles = (t.to(device) for t in simple_triangle())
    cube_clip = torch.cat([torch.tensor(TF_CUBE_CLIP_XYZ), torch.ones(8, 1)], dim=-1)[None].to(device)
    cube_triangles = cube()[1].to(device)
    cases = {
        "Simple_Triangle": (lambda c: barycentric.rasterize_triangles(c, triangles, 640, 480)[1][0, 245, 325], clip),
        "Cube": (lambda c: barycentric.rasterize_triangles(c, cube_triangles, 28, 21)[1], cube_clip),
    }
    checks = {}
    for name, (function, x) in cases.items():
        numeric = numeric_jacobian(function, x, 4e-2).cpu().numpy()
        analytic = analytic_jacobian(function, x).cpu().numpy()
        checks[name] = (float(tf_outliers(numeric, analytic).mean()), float(np.abs(analytic).sum()))
    return checks
