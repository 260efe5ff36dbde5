"""Times the soft rasterizer (SoftRas): silhouettes, Phong-shaded RGB and Phong shading of a 256²
texture (spherical uvs), forward and forward + backward, over meshes, image sizes, σ and thread
counts, against PyTorch3D's CPU figures. A quad's 2 and a cube's 12 screen-sized triangles show
whether the backward pass spreads a few big triangles over the threads.

    python tests/benchmarks/bench_soft.py [--quick] [--json out/bench_soft.json]

A script, not a test: pytest collects nothing here.
"""
from __future__ import annotations

import argparse
import math
import platform

import torch

from common import benchmark_meshes, median_ms, print_table, write_json
from diffrender import camera, shapes, soft

# PyTorch3D (SoftRasterizer-style blur, CPU) on the same kind of machine, in ms.
PYTORCH3D_CPU_MS = {
    ("teapot", "silhouette", 128, "forward+backward"): 1950.0,
    ("teapot", "silhouette", 256, "forward"): 960.0,
    ("teapot", "silhouette", 256, "forward+backward"): 7200.0,
    ("teapot", "phong", 256, "forward+backward"): 11400.0,
    ("icosphere (5120)", "silhouette", 128, "forward+backward"): 7100.0,
}
TARGET_SPEEDUP = 200.0  # issue 3's target, for forward + backward only
WORKS = ("forward", "forward+backward")


def pytorch3d_reference(mesh: str, mode: str, size: int, work: str):
    key = "teapot" if mesh.startswith("teapot") else mesh
    return PYTORCH3D_CPU_MS.get((key, mode, size, work))


def spherical_uvs(vertices):
    """[V,2] longitude/latitude uvs about the mesh's centre."""
    centred = vertices - vertices.mean(0)
    x, y, z = centred.unbind(-1)
    u = torch.atan2(z, x) / (2 * math.pi) + 0.5
    v = torch.asin((y / centred.norm(dim=-1).clamp_min(1e-12)).clamp(-1, 1)) / math.pi + 0.5
    return torch.stack([u, v], dim=-1)


def verdict(speedup, work: str) -> str:
    """The speed-up against PyTorch3D, judged against the target where the target applies."""
    if speedup is None:
        return "-"
    if work != "forward+backward":
        return f"{speedup:.0f}×"
    return f"{speedup:.0f}× {'ok' if speedup >= TARGET_SPEEDUP else 'MISSED'}"


def make_run(mode: str, work: str, vertices, faces, cam, size: int, sigma: float):
    """A closure that renders once (and back-propagates a fixed random image gradient)."""
    leaf = vertices[None].clone().requires_grad_(True)
    colors = torch.full_like(leaf, 0.8).requires_grad_(True)
    textured = {}
    if mode == "textured":
        texture = torch.rand(256, 256, 3, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
        textured = dict(uvs=spherical_uvs(vertices).requires_grad_(True), texture=texture)
    matrices = cam.matrices(1.0)
    channels = 1 if mode == "silhouette" else 4
    grad = torch.randn(1, size, size, channels, generator=torch.Generator().manual_seed(0))
    lights = cam.eye[:, None] + torch.tensor([0.5, 1.0, 0.0])
    intensities = torch.ones(1, 1, 3)

    def run():
        if mode == "silhouette":
            clip = camera.transform_homogeneous(matrices, leaf)
            image = soft.rasterize(clip, faces, None, size, size, sigma_val=sigma, gamma_val=1e-4,
                                   near_clip=cam.near, far_clip=cam.far)
        else:
            image = soft.render(leaf, faces, colors, cam.eye, cam.lookat, cam.up, lights, intensities, size, size,
                                sigma_val=sigma, gamma_val=1e-4, fov_y=cam.fov_y, near_clip=cam.near,
                                far_clip=cam.far, **textured)
        if work == "forward+backward":
            image.backward(grad)
        return image

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="teapot, cow and icospheres up to 5,120 triangles at 128² and 256², σ = 1e-4")
    parser.add_argument("--json", default="out/bench_soft.json")
    args = parser.parse_args()
    quad = (torch.tensor([[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 1.0, 0.0]]),
            torch.tensor([[0, 1, 2], [0, 2, 3]]))
    meshes = {"quad (2)": quad, "cube (12)": shapes.cube(), **benchmark_meshes(max_subdivisions=4 if args.quick else 7)}
    sizes = [128, 256] if args.quick else [64, 128, 256, 512]
    sigmas = [1e-4] if args.quick else [1e-4, 1e-5]
    thread_counts = [1, 2]
    modes = ("silhouette", "phong", "textured")
    previous_threads = torch.get_num_threads()
    results, rows = [], []
    try:
        for name, (vertices, faces) in meshes.items():
            cam = camera.frame_vertices(vertices, 30.0, 20.0)
            for mode in modes:
                for size in sizes:
                    for sigma in sigmas:
                        timings = {}
                        for threads in thread_counts:
                            torch.set_num_threads(threads)
                            for work in WORKS:
                                timings[(work, threads)] = median_ms(make_run(mode, work, vertices, faces, cam, size, sigma),
                                                                  repeats=7, warmup=2)
                        for work in WORKS:
                            reference = pytorch3d_reference(name, mode, size, work)
                            best = min(timings[(work, t)] for t in thread_counts)
                            speedup = reference / best if reference else None
                            results.append({"mesh": name, "triangles": int(faces.shape[0]), "mode": mode, "size": size,
                                            "sigma": sigma, "work": work,
                                            **{f"ms_{t}_threads": timings[(work, t)] for t in thread_counts},
                                            "pytorch3d_cpu_ms": reference, "speedup_vs_pytorch3d": speedup})
                            rows.append([name, mode, f"{size}²", f"{sigma:g}", work,
                                         f"{timings[(work, 1)]:.2f}", f"{timings[(work, 2)]:.2f}",
                                         f"{timings[(work, 1)] / timings[(work, 2)]:.2f}×",
                                         f"{reference:.0f}" if reference else "-",
                                         verdict(speedup, work)])
    finally:
        torch.set_num_threads(previous_threads)
    print_table("soft rasterizer (ms, median)",
                ["mesh", "mode", "size", "σ", "work", "1 thread", "2 threads", "speed-up", "PyTorch3D CPU",
                 f"vs PyTorch3D (fwd+bwd target ≥{TARGET_SPEEDUP:.0f}×)"], rows)
    write_json(args.json, {"benchmark": "soft", "quick": args.quick, "machine": platform.processor() or platform.machine(),
                           "gamma": 1e-4, "results": results})


if __name__ == "__main__":
    main()
