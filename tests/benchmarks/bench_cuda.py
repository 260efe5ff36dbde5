"""Times the CUDA kernels against the GPU targets, each next to the same work on the CPU and in
pure PyTorch on the GPU (torch_baselines.py):

- hard rasterization + interpolation (normals), forward: the cow, 81,920 and 1,310,720-triangle
  icospheres, at 512², 1024² and 2048², batch 1 and 16 (target: 1M triangles at 1024² < 2 ms);
- soft silhouette forward + backward of the cow at 512² and 1024², batch 1 and 16 (target: 512²,
  batch 1 < 5 ms), and of a cube, whose 12 screen-sized triangles are the backward walk's worst
  case;
- `diffrender fit --config configs/four_views.toml` on the seed's cow targets, 1000 steps
  (target: < 10 s), and in the sweep the same fit on the CPU and one step of it, timed in the fit
  engine with diffrender's soft silhouettes and with the pure-PyTorch ones in their place.

    python tests/benchmarks/bench_cuda.py [--device cuda|cpu] [--quick] [--part all|targets|sweep]
                                          [--json out/bench_cuda.json]

The three targets run first (JSON "targets"), then the sweeps ("sweep"), which end with the same
fit on the CPU; the JSON is rewritten after every table, so a run cut short by a time limit keeps
what it measured. ``--part`` runs one of the two, so that a short GPU session can put the CUDA
tests between them.

Without a GPU it says so and stops; `--device cpu` runs the same tables on the CPU, which checks
the script itself. A script, not a test: pytest collects nothing here.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

from bench_fit import COW_TARGETS, FOUR_VIEWS, median_step_ms
from common import benchmark_meshes, median_ms, print_table, write_json
from diffrender import barycentric, camera, fit, shapes, soft
from diffrender._ext import cuda_unavailable_reason
from diffrender.cli.config import load_config
from diffrender.cli.fit import build_problem
from diffrender.mesh import vertex_normals
from torch_baselines import interpolate, rasterize_fragments, soft_silhouette, soft_silhouette_backward

TARGETS_MS = {"raster": 2.0, "soft": 5.0}
TARGET_FIT_S = 10.0
FIT_COLUMNS = ["device", "loop s", "wall s", "min IoU", "target s"]
SIGMA = 1e-4


def timed(device: torch.device, function, budget_s: float = 2.0) -> float:
    """Median ms of ``function`` with the device's queue drained around each call."""
    def run():
        function()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return median_ms(run, repeats=10, warmup=2, budget_s=budget_s)


def guarded(device: torch.device, function) -> str:
    try:
        return f"{timed(device, function):.2f}"
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return "out of memory"


def scene(vertices, faces, batch: int, device: torch.device):
    cam = camera.frame_vertices(vertices, 30.0, 20.0)
    clip = camera.transform_homogeneous(cam.matrices(1.0), vertices[None]).expand(batch, -1, -1).contiguous()
    normals = vertex_normals(vertices[None], faces).expand(batch, -1, -1).contiguous()
    return clip.to(device), faces.to(device), normals.to(device)


def time_columns(device: torch.device, batch: int, work_on, baseline_batches) -> dict:
    """{column: ms or "-"}: diffrender on ``device``, pure PyTorch on ``device`` (only for batches
    in ``baseline_batches``) and diffrender on the CPU (beside a GPU). CPU work runs at batch 1.
    ``work_on(where, baseline)`` returns the closure to time."""
    columns = (("diffrender", device, False), ("pure torch", device, True),
               ("diffrender cpu", torch.device("cpu"), False))
    timings = {}
    for label, where, baseline in columns:
        skipped = (where.type == "cpu" and batch > 1) or (baseline and batch not in baseline_batches) or \
            (label == "diffrender cpu" and device.type == "cpu")
        timings[label] = "-" if skipped else guarded(where, work_on(where, baseline))
    return timings


def raster_rows(meshes, sizes, batches, device, results):
    rows = []
    for name, (vertices, faces) in meshes.items():
        for size in sizes:
            for batch in batches:
                def work_on(where, baseline):
                    clip, tris, normals = scene(vertices, faces, batch, where)

                    def work():
                        if baseline:
                            ids, bary = rasterize_fragments(clip, tris, size, size)
                            return interpolate(normals, tris, ids, bary)
                        ids, bary, _ = barycentric.rasterize_triangles(clip, tris, size, size)
                        return barycentric.interpolate(normals, tris, ids, bary)
                    return work
                timings = time_columns(device, batch, work_on, batches)
                target = TARGETS_MS["raster"] if faces.shape[0] >= 1_000_000 and size == 1024 and batch == 1 else None
                results.append({"work": "raster+interpolate forward", "mesh": name, "size": size, "batch": batch,
                                "ms": timings, "target_ms": target})
                rows.append([name, f"{size}²", str(batch), *timings.values(),
                             target_text(timings["diffrender"], target)])
    return rows


def soft_rows(meshes, sizes, batches, device, results):
    rows = []
    for name, (vertices, faces) in meshes.items():
        for size in sizes:
            for batch in batches:
                def work_on(where, baseline):
                    clip, tris, _ = scene(vertices, faces, batch, where)
                    grad = torch.randn(batch, size, size, generator=torch.Generator().manual_seed(0)).to(where)

                    def work():
                        if baseline:
                            return soft_silhouette_backward(clip, tris, size, size, SIGMA, grad)
                        leaf = clip.detach().requires_grad_(True)
                        alpha = soft.rasterize(leaf, tris, None, size, size, sigma_val=SIGMA)[..., -1]
                        return torch.autograd.grad(alpha, leaf, grad)
                    return work
                # The dense pure-PyTorch silhouette is timed at batch 1 only: it is far slower.
                timings = time_columns(device, batch, work_on, (1,))
                target = TARGETS_MS["soft"] if name.startswith("cow") and size == 512 and batch == 1 else None
                results.append({"work": "soft silhouette forward+backward", "mesh": name, "size": size,
                                "batch": batch, "ms": timings, "target_ms": target})
                rows.append([name, f"{size}²", str(batch), *timings.values(),
                             target_text(timings["diffrender"], target)])
    return rows


def fit_row(device: torch.device, results) -> list:
    """The preset through the real command on ``device``: loop seconds (params.json) and wall."""
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "diffrender.cli", "fit", "--config", str(FOUR_VIEWS),
                   *map(str, COW_TARGETS), "-o", folder, "--device", device.type]
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        wall = time.perf_counter() - started
        params = json.loads((Path(folder) / "params.json").read_text())
    loop = params["fit_seconds"]
    results.append({"work": "four_views fit (1000 steps)", "device": device.type, "loop_s": loop, "wall_s": wall,
                    "iou": params["iou"], "target_s": TARGET_FIT_S})
    return [device.type, f"{loop:.2f}", f"{wall:.2f}", f"{min(params['iou']):.3f}",
            f"{TARGET_FIT_S:.0f} {'ok' if loop <= TARGET_FIT_S else 'MISSED'}"]


def torch_soft_silhouettes(sigma: float, gamma: float, vertices, faces, views, image_size, clip_matrices=None):
    """fit.soft_silhouettes with the pure-PyTorch silhouette (every pixel against every triangle)."""
    height, width = image_size
    clip = fit._clip_space(vertices, views, image_size, clip_matrices)
    alpha = soft_silhouette(clip, faces, width, height, sigma).flip(1)[..., None]
    return torch.cat([torch.zeros_like(alpha).expand(-1, -1, -1, 3), alpha], dim=-1)


def fit_step_ms(where: torch.device, baseline: bool, image_size, steps: int = 20, warmup: int = 3) -> str:
    """Median ms of one step of four_views.toml's fit in the fit engine, on ``where``, rendering
    with diffrender's soft silhouettes or (``baseline``) the pure-PyTorch ones."""
    config = load_config(FOUR_VIEWS, targets=[str(path) for path in COW_TARGETS])
    config.optimize.steps = warmup + steps
    config.image_size = image_size
    problem = build_problem(config).to(where)
    swap = mock.patch.object(fit, "soft_silhouettes", torch_soft_silhouettes) if baseline else contextlib.nullcontext()
    try:
        with swap:
            return f"{median_step_ms(problem, warmup):.2f}"
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return "out of memory"


def fit_step_row(device: torch.device, image_size, results) -> list:
    timings = {"diffrender": fit_step_ms(device, False, image_size),
               "pure torch": fit_step_ms(device, True, image_size),
               "diffrender cpu": "-" if device.type == "cpu" else fit_step_ms(torch.device("cpu"), False, image_size)}
    results.append({"work": "four_views fit step", "size": list(image_size), "ms": timings})
    return [f"{image_size[0]}²", *timings.values()]


def target_text(measured: str, target) -> str:
    if target is None:
        return "-"
    try:
        return f"{target:.0f} {'ok' if float(measured) <= target else 'MISSED'}"
    except ValueError:
        return f"{target:.0f} MISSED"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--quick", action="store_true", help="small meshes and sizes, batch 1 (checks the script)")
    parser.add_argument("--part", default="all", choices=["all", "targets", "sweep"])
    parser.add_argument("--json", default="out/bench_cuda.json")
    args = parser.parse_args()
    unavailable = cuda_unavailable_reason()
    if args.device == "cuda" and unavailable:
        print(f"bench_cuda: {unavailable}: nothing to time (--device cpu runs the same tables on the CPU)")
        return
    device = torch.device(args.device)
    meshes = benchmark_meshes(max_subdivisions=4 if args.quick else 8)
    cow_name, cow = next(((name, mesh) for name, mesh in meshes.items() if name.startswith("cow")), (None, None))
    if not args.quick:
        meshes = {name: mesh for name, mesh in meshes.items()
                  if name.startswith("cow") or mesh[1].shape[0] in (81920, 1310720)}
    sizes = [128, 256] if args.quick else [512, 1024, 2048]
    batches = [1] if args.quick else [1, 16]
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    results = {"targets": [], "sweep": []}

    def save():  # after every table, so that a run cut short by a time limit keeps what it measured
        write_json(args.json, {"benchmark": "cuda", "device": gpu, **results})

    columns = ["mesh", "size", "batch", f"diffrender {device.type}", f"pure torch {device.type}", "diffrender cpu",
               "target ms"]
    soft_meshes = {"cube (12)": shapes.cube()}
    if cow is not None:
        soft_meshes = {cow_name: cow, **soft_meshes}
    biggest = max(meshes, key=lambda name: meshes[name][1].shape[0])
    cow_targets_there = all(path.exists() for path in COW_TARGETS)
    fit_targets_there = cow_targets_there and not args.quick
    if args.part in ("all", "targets"):
        # The three targets first: they are what a short GPU session must not miss.
        target_rows = raster_rows({biggest: meshes[biggest]}, [1024 if not args.quick else 256], [1], device,
                                  results["targets"])
        if cow is not None:
            target_rows += soft_rows({cow_name: cow}, [512 if not args.quick else 64], [1], device,
                                     results["targets"])
        print_table(f"issue 6's targets, the first two forward (+ backward for soft) in ms ({gpu})", columns,
                    target_rows)
        save()
        if fit_targets_there:
            print_table(f"four_views.toml fit, 1000 steps ({gpu})", FIT_COLUMNS, [fit_row(device, results["targets"])])
            save()
    if args.part in ("all", "sweep"):
        print_table(f"soft silhouette, forward + backward (ms, {gpu}, σ = {SIGMA:g})", columns,
                    soft_rows(soft_meshes, [64] if args.quick else [512, 1024], batches, device, results["sweep"]))
        save()
        print_table(f"hard rasterization + interpolation, forward (ms, {gpu})", columns,
                    raster_rows(meshes, sizes, batches, device, results["sweep"]))
        save()
        if cow_targets_there:
            # The pure-PyTorch step keeps 4 views × every pixel × every triangle for its backward.
            step_size = (24, 24) if args.quick else (96, 96)
            print_table(f"one four_views.toml fit step, 4 views, 1280 triangles (ms, {gpu})",
                        ["size", f"diffrender {device.type}", f"pure torch {device.type}", "diffrender cpu"],
                        [fit_step_row(device, step_size, results["sweep"])])
            save()
        if fit_targets_there and device.type == "cuda":
            print_table("four_views.toml fit, 1000 steps, on the CPU", FIT_COLUMNS,
                        [fit_row(torch.device("cpu"), results["sweep"])])
            save()


if __name__ == "__main__":
    main()
