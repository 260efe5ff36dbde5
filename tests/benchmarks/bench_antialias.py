"""Times what analytic antialiasing adds to the barycentric renderer: render forward + backward
with and without ``antialias=True``, over meshes, image sizes and thread counts, plus the
antialiasing op on its own. Issue 8's budget: at most +50 % at 512².

    python tests/benchmarks/bench_antialias.py [--quick] [--json out/bench_antialias.json]
"""
from __future__ import annotations

import argparse

import torch

from bench_barycentric import forward_backward
from common import benchmark_meshes, median_ms, print_table, write_json
from diffrender import antialias as aa
from diffrender import barycentric, camera
from diffrender.mesh import vertex_normals

BUDGET = 0.5  # the most antialiasing may add to forward + backward at 512²


def op_only(vertices, faces, cam, size, backward):
    """The antialiasing op alone on a rasterized RGBA image."""
    clip = camera.transform_homogeneous(cam.matrices(1.0), vertices[None]).requires_grad_(True)
    ids, bary, z = barycentric.rasterize_triangles(clip.detach(), faces, size, size)
    color = torch.cat([bary.detach(), barycentric.coverage(bary.detach())], -1).requires_grad_(True)
    aa.edge_topology(faces)  # build the cached topology outside the timing

    def run():
        out = aa.antialias(color, ids, clip, faces, barycentrics=bary, z_buffer=z)
        if backward:
            out.sum().backward()
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="teapot, cow and one sphere at 256² and 512²")
    parser.add_argument("--json", default="out/bench_antialias.json")
    args = parser.parse_args()
    meshes = benchmark_meshes(max_subdivisions=4 if args.quick else 6)
    sizes = [256, 512] if args.quick else [256, 512, 1024]
    thread_counts = [1, 2]
    results, rows = [], []
    for name, (vertices, faces) in meshes.items():
        cam = camera.frame_vertices(vertices, 30.0, 20.0)
        normals = vertex_normals(vertices[None], faces)
        for size in sizes:
            for threads in thread_counts:
                torch.set_num_threads(threads)
                plain = median_ms(forward_backward(vertices, faces, normals, cam, size, False))
                smooth = median_ms(forward_backward(vertices, faces, normals, cam, size, True))
                forward = median_ms(op_only(vertices, faces, cam, size, False))
                both = median_ms(op_only(vertices, faces, cam, size, True))
                overhead = smooth / plain - 1.0
                results.append({"mesh": name, "size": size, "threads": threads, "render_fwd_bwd_ms": plain,
                                "render_fwd_bwd_antialias_ms": smooth, "overhead": overhead,
                                "antialias_forward_ms": forward, "antialias_forward_backward_ms": both})
                verdict = ("ok" if overhead <= BUDGET else "OVER") if size == 512 else "-"
                rows.append([name, f"{size}²", str(threads), f"{plain:.1f}", f"{smooth:.1f}",
                             f"{100 * overhead:+.0f}%", f"{forward:.2f}", f"{both:.2f}", verdict])
    print_table("antialiasing cost (ms, median): render forward+backward without / with antialias=True",
                ["mesh", "size", "threads", "plain", "antialiased", "overhead", "aa fwd", "aa fwd+bwd",
                 f"≤ +{100 * BUDGET:.0f}% at 512²"], rows)
    write_json(args.json, {"benchmark": "antialias", "budget_at_512": BUDGET, "results": results})


if __name__ == "__main__":
    main()
