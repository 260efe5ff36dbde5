"""Times `diffrender animate`'s turntable pipeline: batched rendering, uint8 conversion and
H.264 encoding of a 120-frame 512×512 turntable of the cow, with both renderers.

    python tests/benchmarks/bench_animate.py [--frames 120] [--size 512] [--json out/bench_animate.json]

Uses the built-in teapot when ../shared/reference/cow is absent. "render fps" leaves the encoder
out; "video fps" is the whole pipeline writing an MP4, as the command runs it (mesh loading and
interpreter start-up excluded). The machine is shared, so the CPU time per frame (this process
and ffmpeg) and the load average are recorded too: wall-clock rates drop when others are busy.
"""
from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import torch

from common import REFERENCE, print_table, write_json
from diffrender.animation import frames_per_batch, turntable_azimuths, turntable_cameras, turntable_frames
from diffrender.cli.scene import Look
from diffrender.mesh import load_mesh
from diffrender.renderers import make_renderer
from diffrender.video import VideoWriter

TARGET_FPS = 30.0


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its finished children (ffmpeg)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def pipeline(renderer, mesh, look: Look, frames: int, size: int, output: Path | None):
    """(frames per second, CPU ms per frame) of one turntable, written to ``output`` (an MP4) or
    only rendered."""
    started, cpu_started = time.perf_counter(), cpu_seconds()
    cameras = turntable_cameras(mesh.vertices, turntable_azimuths(frames, 360.0, 30.0), 20.0, (size, size))
    batches = turntable_frames(renderer, mesh, look.vertex_colors(mesh), cameras, look, (size, size))
    if output is None:
        for _ in batches:
            pass
    else:
        with VideoWriter(output, 30.0) as video:
            for batch in batches:
                for frame in batch:
                    video.append(frame)
    return frames / (time.perf_counter() - started), 1000.0 * (cpu_seconds() - cpu_started) / frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--json", default="out/bench_animate.json")
    args = parser.parse_args()

    cow = REFERENCE / "cow" / "cow.obj"
    mesh = load_mesh(cow if cow.exists() else "teapot")
    name = "cow" if cow.exists() else "teapot (built-in; ../shared/reference/cow is absent)"
    look = Look()
    rows, results = [], {}
    with tempfile.TemporaryDirectory() as folder:
        for renderer_name in ("barycentric", "soft"):
            renderer = make_renderer(renderer_name)
            # One batch first, so thread pools and allocator caches are warm as in a long run.
            pipeline(renderer, mesh, look, frames_per_batch((args.size, args.size)), args.size, None)
            render_fps, render_cpu = pipeline(renderer, mesh, look, args.frames, args.size, None)
            video_fps, video_cpu = pipeline(renderer, mesh, look, args.frames, args.size, Path(folder) / "turntable.mp4")
            results[renderer_name] = {"render_fps": render_fps, "video_fps": video_fps,
                                      "render_cpu_ms_per_frame": render_cpu, "video_cpu_ms_per_frame": video_cpu}
            verdict = "yes" if video_fps >= TARGET_FPS else "no"
            rows.append([renderer_name, f"{render_fps:.1f}", f"{video_fps:.1f}", f"{video_cpu:.1f}",
                         verdict if renderer_name == "barycentric" else "-"])
    load = os.getloadavg()
    print_table(f"animate: {args.frames}-frame {args.size}x{args.size} turntable of the {name} "
                f"({mesh.num_faces} triangles), {torch.get_num_threads()} threads, load average {load[0]:.1f}",
                ["renderer", "render fps", "video fps (MP4 included)", "video CPU ms/frame",
                 f"barycentric >= {TARGET_FPS:g} fps"], rows)
    write_json(args.json, {"mesh": name, "triangles": mesh.num_faces, "frames": args.frames, "size": args.size,
                           "batch": frames_per_batch((args.size, args.size)), "target_fps": TARGET_FPS,
                           "cpus": os.cpu_count(), "load_average_1min": load[0], "results": results})


if __name__ == "__main__":
    main()
