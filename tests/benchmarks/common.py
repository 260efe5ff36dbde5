"""Shared benchmark plumbing: timing, meshes, tables and JSON."""
from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch
from rich.console import Console
from rich.table import Table

from diffrender import shapes
from diffrender.mesh import load_mesh

# ../shared/reference beside the repository, or DIFFRENDER_REFERENCE (a copy carried to a GPU machine).
REFERENCE = Path(os.environ.get("DIFFRENDER_REFERENCE") or Path(__file__).resolve().parents[3] / "shared" / "reference")


def median_ms(function: Callable[[], object], repeats: int = 5, warmup: int = 1, budget_s: float = 3.0) -> float:
    """Median wall time in ms; fewer repeats when a single run is slow."""
    for _ in range(warmup):
        function()
    times: List[float] = []
    start = time.perf_counter()
    while len(times) < repeats and (not times or time.perf_counter() - start < budget_s):
        begin = time.perf_counter()
        function()
        times.append(time.perf_counter() - begin)
    return 1000.0 * statistics.median(times)


def benchmark_meshes(max_subdivisions: int) -> Dict[str, tuple]:
    """name → (vertices [V,3], faces [F,3]): the seed teapot (or the built-in one), the cow when
    the shared reference data is present, and icospheres of 1,280 to 20·4^max triangles."""
    meshes = {}
    seed_teapot = REFERENCE / "seed" / "teapot.obj"
    teapot = load_mesh(seed_teapot if seed_teapot.exists() else "teapot")
    meshes[f"teapot ({teapot.num_faces})"] = (teapot.vertices, teapot.faces)
    cow = REFERENCE / "cow" / "cow.obj"
    if cow.exists():
        mesh = load_mesh(cow)
        meshes[f"cow ({mesh.num_faces})"] = (mesh.vertices, mesh.faces)
    for level in range(3, max_subdivisions + 1):
        vertices, faces = shapes.icosphere(level)
        meshes[f"icosphere ({faces.shape[0]})"] = (vertices, faces)
    return meshes


def print_table(title: str, columns: List[str], rows: List[List[str]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right" if column not in ("mesh", "work") else "left")
    for row in rows:
        table.add_row(*row)
    Console(width=200).print(table)


def write_json(path: str, payload: dict) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = {"torch": torch.__version__, "threads_available": torch.get_num_threads(), **payload}
    target.write_text(json.dumps(payload, indent=2))
    print(f"wrote {target}")
