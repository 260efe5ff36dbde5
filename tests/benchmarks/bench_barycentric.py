"""Times the barycentric renderer: hard rasterization, and forward + backward through
interpolation and Phong shading, over meshes, image sizes and thread counts.

    python tests/benchmarks/bench_barycentric.py [--quick] [--llvmpipe] [--json out/bench_barycentric.json]

With --llvmpipe (needs moderngl and Mesa's EGL, see llvmpipe.py) the hard forward rows also time
Mesa's llvmpipe drawing the same triangles on this machine, with its own thread count.
"""
from __future__ import annotations

import argparse

import torch

from common import benchmark_meshes, median_ms, print_table, write_json
from diffrender import barycentric, camera
from diffrender.mesh import vertex_normals

# Mesa llvmpipe, hard forward with depth and read-back, on this kind of 2-core machine (ms).
LLVMPIPE_MS = {("teapot", 256): 0.53, ("teapot", 512): 1.23, ("teapot", 1024): 3.2,
               ("icosphere (5120)", 1024): 6.2, ("icosphere (81920)", 1024): 24.0}


def llvmpipe_reference(mesh: str, size: int):
    key = ("teapot", size) if mesh.startswith("teapot") else (mesh, size)
    return LLVMPIPE_MS.get(key)


def make_scene(vertices, faces, size):
    cam = camera.frame_vertices(vertices, 30.0, 20.0)
    clip = camera.transform_homogeneous(cam.matrices(1.0), vertices[None])
    normals = vertex_normals(vertices[None], faces)
    return cam, clip, normals


def forward(clip, faces, size):
    return lambda: barycentric.rasterize_triangles(clip, faces, size, size)


def forward_backward(vertices, faces, normals, cam, size, antialias=False):
    """One render forward + backward (a fit's step), as a closure."""
    leaf = vertices[None].clone().requires_grad_(True)
    colors = torch.full_like(leaf, 0.8).requires_grad_(True)

    def run():
        image = barycentric.render(leaf, faces, normals, colors, cam.eye, cam.lookat, cam.up, cam.eye[:, None],
                                   torch.ones(1, 1, 3), size, size, near_clip=cam.near, far_clip=cam.far,
                                   antialias=antialias)
        image.sum().backward()
    return run


def llvmpipe_timer(wanted: bool):
    """(mesh clip [1,V,4], faces, size) → (ms, share of covered pixels with our triangle id), or None."""
    if not wanted:
        return None
    from llvmpipe import LlvmpipeRasterizer, available

    reason = available()
    if reason is not None:
        print(f"--llvmpipe: no llvmpipe reference on this machine ({reason})")
        return None
    gl = LlvmpipeRasterizer()

    def measure(clip, faces, size):
        draw = gl.prepare(clip[0], faces, size, size)
        ids, _ = draw()
        ours, bary, _ = barycentric.rasterize_triangles(clip, faces, size, size)
        covered = (bary[0].sum(-1) > 0.5).numpy()
        agreement = float((ids[covered] == ours[0].numpy()[covered]).mean()) if covered.any() else 1.0
        return median_ms(draw), agreement
    return measure


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="teapot, cow and two spheres at 256² to 1024²")
    parser.add_argument("--llvmpipe", action="store_true", help="also time Mesa's llvmpipe here (optional)")
    parser.add_argument("--json", default="out/bench_barycentric.json")
    args = parser.parse_args()
    llvmpipe = llvmpipe_timer(args.llvmpipe)
    meshes = benchmark_meshes(max_subdivisions=4 if args.quick else 8)
    sizes = [256, 512, 1024] if args.quick else [256, 512, 1024, 2048]
    thread_counts = [1, 2]
    results, rows = [], []
    for name, (vertices, faces) in meshes.items():
        for size in sizes:
            cam, clip, normals = make_scene(vertices, faces, size)
            timings = {}
            for threads in thread_counts:
                torch.set_num_threads(threads)
                timings[("forward", threads)] = median_ms(forward(clip, faces, size))
                timings[("forward+backward", threads)] = median_ms(forward_backward(vertices, faces, normals, cam, size))
            reference = llvmpipe_reference(name, size)
            measured = llvmpipe(clip, faces, size) if llvmpipe else None
            for work in ("forward", "forward+backward"):
                record = {"mesh": name, "size": size, "work": work,
                          **{f"ms_{t}_threads": timings[(work, t)] for t in thread_counts},
                          "llvmpipe_ms": reference}
                if measured and work == "forward":
                    record.update(llvmpipe_measured_ms=measured[0], llvmpipe_same_ids=measured[1])
                results.append(record)
                target = (2.0 if work == "forward" else 5.0) * reference if reference else None
                best = timings[(work, 2)]
                rows.append([name, f"{size}²", work, f"{timings[(work, 1)]:.2f}", f"{best:.2f}",
                             f"{timings[(work, 1)] / best:.2f}×",
                             f"{reference:.2f}" if reference else "-",
                             f"{measured[0]:.2f}" if measured and work == "forward" else "-",
                             (f"{target:.1f} {'ok' if best <= target else 'MISSED'}") if target else "-"])
    print_table("barycentric renderer (ms, median)",
                ["mesh", "size", "work", "1 thread", "2 threads", "speed-up", "llvmpipe", "llvmpipe here",
                 "target (2×/5×)"], rows)
    write_json(args.json, {"benchmark": "barycentric", "results": results})


if __name__ == "__main__":
    main()
