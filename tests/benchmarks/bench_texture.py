"""Times texture sampling forward + backward (gradients for the texture and the UVs): bilinear and
trilinear (which includes building the mip pyramid and its backward), RGB float32 textures of
1024² and 4096², output images of 512² and 1024², on 1 and 2 threads, clamp mode. For scale,
the bilinear rows also time torch's F.grid_sample on the same samples (2 threads).

    python tests/benchmarks/bench_texture.py [--json out/bench_texture.json]
"""
from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F

from common import median_ms, print_table, write_json
from diffrender import texture

TEXTURE_SIZES = [1024, 4096]
IMAGE_SIZES = [512, 1024]
FILTERS = ["bilinear", "trilinear"]
THREAD_COUNTS = [1, 2]


def plane_uv(size: int) -> torch.Tensor:
    """[1,size,size,2] UVs of the whole texture, turned by 20° and foreshortened towards the top,
    so the texels per pixel vary across the image as on a real surface."""
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    depth = 1.0 / (0.5 + 0.5 * y)
    angle = math.radians(20)
    u, v = (x - 0.5) * depth, 1.0 - y * depth / 2
    return torch.stack([u * math.cos(angle) - v * math.sin(angle) + 0.5,
                        u * math.sin(angle) + v * math.cos(angle)], dim=-1)[None]


def forward_backward(tex: torch.Tensor, uv: torch.Tensor, filter: str):
    """One sample forward + backward, as a closure."""
    leaves = [tex.clone().requires_grad_(True), uv.clone().requires_grad_(True)]

    def run():
        out = texture.sample(*leaves, filter=filter, boundary="clamp")
        torch.autograd.grad(out.sum(), leaves)
    return run


def grid_sample_forward_backward(tex: torch.Tensor, uv: torch.Tensor):
    """The same bilinear samples through F.grid_sample (channels-first), as a closure."""
    leaves = [tex.permute(2, 0, 1)[None].clone().requires_grad_(True),
              torch.stack([2 * uv[..., 0] - 1, 1 - 2 * uv[..., 1]], dim=-1).requires_grad_(True)]

    def run():
        out = F.grid_sample(*leaves, mode="bilinear", padding_mode="border", align_corners=False)
        torch.autograd.grad(out.sum(), leaves)
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="out/bench_texture.json")
    args = parser.parse_args()
    results, rows = [], []
    for texture_size in TEXTURE_SIZES:
        tex = torch.rand(texture_size, texture_size, 3, generator=torch.Generator().manual_seed(0))
        for image_size in IMAGE_SIZES:
            uv = plane_uv(image_size)
            for filter in FILTERS:
                timings = {}
                for threads in THREAD_COUNTS:
                    torch.set_num_threads(threads)
                    timings[threads] = median_ms(forward_backward(tex, uv, filter), repeats=3, budget_s=2.0)
                reference = (median_ms(grid_sample_forward_backward(tex, uv), repeats=3, budget_s=2.0)
                             if filter == "bilinear" else None)
                results.append({"texture": texture_size, "image": image_size, "filter": filter,
                                **{f"ms_{t}_threads": timings[t] for t in THREAD_COUNTS},
                                "grid_sample_ms_2_threads": reference})
                rows.append([f"{texture_size}²", f"{image_size}²", filter, f"{timings[1]:.1f}", f"{timings[2]:.1f}",
                             f"{timings[1] / timings[2]:.2f}×", f"{reference:.1f}" if reference else "-"])
    print_table("texture.sample forward + backward, RGB float32 (ms, median)",
                ["texture", "image", "filter", "1 thread", "2 threads", "speed-up", "grid_sample"], rows)
    write_json(args.json, {"benchmark": "texture", "results": results})


if __name__ == "__main__":
    main()
