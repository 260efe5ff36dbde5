"""The fit runs wherever its problem's tensors are (``diffrender fit --device``): every tensor it
makes follows them. Checked here without a GPU by making the default device "meta", where a
tensor created without an explicit device lands and then fails to mix with the CPU ones."""
import dataclasses
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from diffrender.cli.config import Override, load_config
from diffrender.cli.fit import build_problem
from diffrender.fit import FitProblem, run_fit

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


class DiscardingRecorder:
    def log(self, *args) -> None:
        pass

    def snapshot(self, *args, **kwargs) -> None:
        pass


def small_problem(config: str, changes=None) -> FitProblem:
    """A 3-step fit of a preset; ``changes`` maps dotted config keys to values."""
    overrides = [Override(k, v, "test") for k, v in {"optimize.steps": 3, **(changes or {})}.items()]
    return build_problem(load_config(CONFIGS / config, overrides, []))


def tensors_of(value, path="problem"):
    """(path, tensor) for every tensor inside nested dataclasses, lists and dicts."""
    if isinstance(value, torch.Tensor):
        yield path, value
    elif dataclasses.is_dataclass(value):
        for field in dataclasses.fields(value):
            yield from tensors_of(getattr(value, field.name), f"{path}.{field.name}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from tensors_of(item, f"{path}[{index}]")


CASES = [
    ("demo.toml", {"optimize.views_per_step": 2}),  # vertices, soft, a random subset of views per step
    ("cube_pose.toml", {}),  # pose, synthetic truth
    ("teapot_camera.toml", {}),  # camera
    ("cube_pose.toml", {"renderer": "barycentric", "optimize.params": ["pose", "colors"], "loss.rgb": 1.0}),
    ("teapot_camera.toml", {"renderer": "barycentric", "optimize.camera": ["eye", "fov"]}),
]


@contextmanager
def default_device_meta_outside_optimizer_steps():
    """The default device is "meta", except inside torch's own optimizer steps: before torch 2.13,
    Adam made its step counters on the default device, which is torch's doing, not the fit's."""
    torch.set_default_device("meta")
    before = register_optimizer_step_pre_hook(lambda *_: torch.set_default_device(None))
    after = register_optimizer_step_post_hook(lambda *_: torch.set_default_device("meta"))
    try:
        yield
    finally:
        before.remove()
        after.remove()
        torch.set_default_device(None)


@pytest.mark.parametrize("config,changes", CASES)
def test_the_fit_makes_no_tensor_off_its_problem_device(config, changes):
    problem = small_problem(config, changes)
    with default_device_meta_outside_optimizer_steps():
        result = run_fit(problem, DiscardingRecorder())
    assert result.stopped == "finished" and result.steps_completed == 3
    assert all(t.device.type == "cpu" for _, t in tensors_of(result.state.parameters))


def test_problem_to_moves_every_tensor():
    problem = small_problem("cube_pose.toml")
    found = list(tensors_of(problem))
    assert {path for path, _ in found} >= {"problem.template.vertices", "problem.views.camera.eye",
                                           "problem.views.targets", "problem.lights.positions", "problem.truth.eye"}
    moved = list(tensors_of(problem.to("meta")))
    assert [path for path, _ in moved] == [path for path, _ in found]
    assert all(tensor.is_meta for _, tensor in moved)
