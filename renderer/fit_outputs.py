"""The output folder of a fit: previews, the progress MP4, states, the log, the loss plot, the
fitted OBJ and params.json. Every file is written atomically (see :mod:`diffrender.images`).

Layout of ``OUT``:

- ``fit.obj``: the final mesh in world space (posed), with vertex colours when they were fitted;
  after a texture fit, with its UVs, ``fit.mtl`` and the texture as ``fit_texture.png``;
- ``params.json``: final pose and camera, per-view cameras and targets, IoU, truth and errors for
  synthetic fits, and the settings used;
- ``previews/step_NNNN.png`` (+ ``.obj``, the untextured shape, when vertices are fitted): render |
  target per view;
- ``progress.mp4``: the same layout, one frame every ``frame_every`` steps plus the final state;
- ``states.pt``: the replay states (format in :mod:`diffrender.fit`);
- ``losses.csv`` and ``loss.png``: every loss term, the total and the hard IoU per step.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from torch import Tensor

from .fit import FitProblem, FitResult, FitState, camera_fovs, euler_from_matrix, rotation_angle_deg
from .images import atomic_output, save_png, to_uint8
from .mesh import save_obj, save_textured_obj
from .video import VideoWriter


def over_white(rgba: Tensor) -> np.ndarray:
    """float ``[...,4]`` premultiplied RGBA → uint8 ``[...,3]`` over white."""
    rgba = rgba.detach().float().cpu()
    return to_uint8(rgba[..., :3] + (1.0 - rgba[..., 3:]).clamp(0.0, 1.0))


def side_by_side(rgba: Tensor, targets: Tensor) -> np.ndarray:
    """Renders next to targets over white: float ``[B,H,W,4]`` premultiplied RGBA each →
    uint8 ``[B·H, 2W, 3]``, one row per view, the render on the left."""
    pairs = over_white(torch.cat([rgba.detach().float().cpu(), targets.float().cpu()], dim=2))  # [B,H,2W,3]
    return pairs.reshape(-1, *pairs.shape[2:])


class FitRecorder:
    """Collects a fit's images, states and log, and writes the output folder.

    Use as a context manager around :func:`diffrender.fit.run_fit` (it streams the MP4), then
    call :meth:`finish`. ``out_dir`` and ``out_dir/previews`` must exist and be writable.
    """

    def __init__(self, out_dir: Path, problem: FitProblem):
        self.out = Path(out_dir)
        self.problem = problem
        self.fit_vertices = "vertices" in problem.settings.params
        self.fit_colors = "colors" in problem.settings.params
        self.fit_texture = "texture" in problem.settings.params
        self.video = VideoWriter(self.out / "progress.mp4", problem.settings.fps)
        self.rows: List[Dict[str, float]] = []
        keys = ["steps", "vertices", "rotation", "translation", "eye", "lookat", "fov", "colors", "sigma"]
        self.states: Dict[str, List[Tensor]] = {key: [] for key in keys + (["texture"] if self.fit_texture else [])}
        self.recorded = {"frame": set(), "preview": set()}

    def __enter__(self) -> "FitRecorder":
        self.video.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.video.__exit__(exc_type, exc, tb)

    def log(self, step: int, total: float, terms: Dict[str, float], ious: List[float], sigma: float) -> None:
        """One row of losses.csv: the state after ``step`` steps (terms unweighted, ``ious`` per view)."""
        row = {"step": step, "total": total, **terms, "iou": sum(ious) / len(ious)}
        row.update({f"iou_{view}": value for view, value in enumerate(ious)})
        row["sigma"] = sigma
        self.rows.append(row)

    def snapshot(self, step: int, state: FitState, rgba: Tensor, vertices: Tensor, sigma: float,
                 frame: bool, preview: bool) -> None:
        """Writes a video frame and/or a preview of the state after ``step`` steps.

        Args:
            rgba: float ``[B,H,W,4]`` render of every view; vertices: float ``[V,3]`` posed.
        """
        image = side_by_side(rgba, self.problem.views.targets)
        # A step counts as recorded only once its files are written: a Ctrl-C in between must
        # leave it for the final record to write again.
        if frame and step not in self.recorded["frame"]:
            self.video.append(image)
            self._keep_state(step, state, sigma)
            self.recorded["frame"].add(step)
        if preview and step not in self.recorded["preview"]:
            save_png(self.out / "previews" / f"step_{step:04d}.png", torch.from_numpy(image).float() / 255.0)
            if self.fit_vertices:
                save_obj(self.out / "previews" / f"step_{step:04d}.obj", vertices, state.faces,
                         state.colors if self.fit_colors else None)
            self.recorded["preview"].add(step)

    def _keep_state(self, step: int, state: FitState, sigma: float) -> None:
        values = {"steps": torch.tensor(step), "vertices": state.vertices, "rotation": state.rotation(),
                  "translation": state.translation, "eye": state.eye, "lookat": state.lookat, "fov": state.fov,
                  "sigma": torch.tensor(sigma)}
        if self.fit_colors or not self.states["colors"]:
            values["colors"] = state.colors
        if self.fit_texture:
            values["texture"] = torch.from_numpy(to_uint8(state.texture))
        for key, value in values.items():
            self.states[key].append(value.detach().to("cpu", copy=True))

    # ----------------------------------------------------------------------------------------
    # Final files
    # ----------------------------------------------------------------------------------------

    def finish(self, result: FitResult, settings: Dict, wall_seconds: Optional[float] = None) -> Dict:
        """Writes fit.obj (+ fit.mtl and fit_texture.png), states.pt, losses.csv, loss.png and
        (last) params.json.

        ``settings`` is stored under ``"settings"`` in params.json. Returns the params dict.
        """
        state = result.state
        vertices, _ = state.posed()
        if self.fit_texture:
            save_textured_obj(self.out / "fit.obj", vertices.detach(), state.faces, state.uvs, state.texture.detach())
        else:
            save_obj(self.out / "fit.obj", vertices.detach(), state.faces,
                     state.colors.detach() if self.fit_colors else None)
        self._write_states(state)
        self._write_csv()
        self._write_plot()
        params = self.params(result, settings, wall_seconds)
        with atomic_output(self.out / "params.json") as temporary:
            temporary.write_text(json.dumps(params, indent=2) + "\n")
        return params

    def _write_states(self, state: FitState) -> None:
        # Integer states (steps, 8-bit textures) keep their dtype; the rest are stored as float32.
        stacked = {key: torch.stack(values) if not values[0].is_floating_point() else torch.stack(values).float()
                   for key, values in self.states.items()}
        stacked.update({"format": 2, "faces": state.faces.cpu().clone(), "up": state.up.detach().float().cpu().clone(),
                        "targets": torch.from_numpy(over_white(self.problem.views.targets))})
        if self.fit_texture:
            stacked["uvs"] = state.uvs.float().cpu().clone()
        with atomic_output(self.out / "states.pt") as temporary:
            torch.save(stacked, temporary)

    def _columns(self) -> List[str]:
        return list(self.rows[0]) if self.rows else ["step", "total", "iou", "sigma"]

    def _write_csv(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self._columns(), lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({key: f"{value:.9g}" if isinstance(value, float) else value
                             for key, value in row.items()})
        with atomic_output(self.out / "losses.csv") as temporary:
            temporary.write_text(buffer.getvalue())

    def _write_plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot

        steps = [row["step"] for row in self.rows]
        terms = [name for name in self._columns()
                 if name not in ("step", "iou", "sigma") and not name.startswith("iou_")]
        figure, (losses, iou) = pyplot.subplots(2, 1, figsize=(7, 6), sharex=True, height_ratios=[2, 1])
        for name in terms:
            # Log scale: terms span orders of magnitude; exact zeros are lifted to stay drawable.
            losses.plot(steps, [max(row[name], 1e-12) for row in self.rows], label=name,
                        linewidth=2.0 if name == "total" else 1.0)
        losses.set_yscale("log")
        losses.set_ylabel("loss (terms unweighted, total weighted)")
        losses.legend(loc="upper right", fontsize="small")
        iou.plot(steps, [row["iou"] for row in self.rows], color="black")
        iou.set_ylabel("hard IoU (mean)")
        iou.set_xlabel("step")
        figure.tight_layout()
        with atomic_output(self.out / "loss.png", ".png") as temporary:
            figure.savefig(temporary, format="png", dpi=100)
        pyplot.close(figure)

    def params(self, result: FitResult, settings: Dict, wall_seconds: Optional[float]) -> Dict:
        """The contents of params.json (plain JSON types)."""
        state, problem = result.state, self.problem
        pose = state.pose()
        cameras = [{"target": name, "eye": state.eye[i].tolist(), "lookat": state.lookat[i].tolist(),
                    "up": state.up[i].tolist(), "fov": float(state.fov[i]),
                    "initial": {"eye": problem.views.camera.eye[i].tolist(),
                                "lookat": problem.views.camera.lookat[i].tolist()}}
                   for i, name in enumerate(problem.views.names)]
        params = {
            "camera": {key: cameras[0][key] for key in ("eye", "lookat", "up", "fov")},
            "pose": {"euler": euler_from_matrix(pose.rotation).tolist(), "translation": pose.translation.tolist()},
            "views": cameras,
            "image_size": list(problem.image_size),
            "iou": result.iou.tolist(),
            "iou_mean": float(result.iou.mean()),
            "steps_completed": result.steps_completed,
            "stopped": result.stopped,
            "fit_seconds": result.seconds,
            "threads": torch.get_num_threads(),
            "states": "states.pt",
            "settings": settings,
        }
        if wall_seconds is not None:
            params["wall_seconds"] = wall_seconds
        if problem.truth is not None:
            truth = problem.truth
            params["truth"] = {
                "camera": {"eye": truth.eye[0].tolist(), "lookat": cameras[0]["initial"]["lookat"],
                           "up": cameras[0]["up"], "fov": float(camera_fovs(problem.views.camera)[0])},
                "pose": {"euler": euler_from_matrix(truth.pose.rotation).tolist(),
                         "translation": truth.pose.translation.tolist()},
            }
            params["error"] = {
                "rotation_deg": rotation_angle_deg(pose.rotation, truth.pose.rotation),
                "translation": float((pose.translation - truth.pose.translation).norm()),
                "eye": float((state.eye.detach() - truth.eye).norm(dim=-1).max()),
            }
        return params
