"""The `diffrender fit` TOML schema: defaults, presets, overrides and errors that name the key and
the file:line (or the flag)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffrender.camera import Camera
from diffrender.cli.config import ConfigError, Override, key_lines, load_config, parse_value

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture
def target(tmp_path) -> Path:
    path = tmp_path / "target.png"
    Image.fromarray(np.zeros((8, 8, 4), dtype=np.uint8)).save(path)
    return path


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fit.toml"
    path.write_text(text)
    return path


def error_of(*args, **kwargs) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(*args, **kwargs)
    assert caught.value.code == 2
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_defaults_fit_a_sphere_to_one_front_view(target):
    config = load_config(None, targets=[str(target)])
    assert config.renderer == "soft" and config.image_size is None
    assert config.init.mesh == "sphere" and config.init.subdivisions == 3
    assert config.optimize.params == ("vertices",) and config.optimize.steps == 1000
    assert (config.optimize.optimizer, config.optimize.lr, config.optimize.momentum) == ("sgd", 4.0, 0.1)
    assert (config.loss.silhouette, config.loss.edge, config.loss.laplacian, config.loss.iou) == (1.0, 0.1, 0.1, 0.0)
    assert (config.soft.sigma, config.soft.gamma) == (1e-4, 1e-4)
    assert len(config.views) == 1 and config.views[0].eye == (0.0, 0.0, 3.0)
    assert config.views[0].target == str(target)
    assert config.synthetic is None and config.output.dir == "fit_out"


@pytest.mark.parametrize("name", ["cube_pose", "teapot_pose", "teapot_camera", "demo", "four_views"])
def test_presets_are_valid(name, target):
    targets = [str(target)] * 4 if name == "four_views" else []
    config = load_config(CONFIGS / f"{name}.toml", targets=targets)
    assert config.views and all(view.target or config.synthetic for view in config.views)


def test_four_views_preset_is_the_seed_recipe(target):
    config = load_config(CONFIGS / "four_views.toml", targets=[str(target)] * 4)
    assert [view.eye for view in config.views] == [(0.0, 0.0, -3.0), (3.0, 0.0, 0.0), (-3.0, 0.0, 0.0), (0.0, 0.0, 3.0)]
    assert config.image_size == (96, 96) and config.camera.fov == 60.0
    assert (config.optimize.optimizer, config.optimize.lr, config.optimize.momentum, config.optimize.steps) == \
        ("sgd", 4.0, 0.1, 1000)
    assert (config.soft.sigma, config.soft.gamma) == (1e-4, 1e-4)


def test_command_line_targets_fill_views_in_order(tmp_path, target):
    other = tmp_path / "other.png"
    other.write_bytes(target.read_bytes())
    path = write(tmp_path, '[[views]]\ntarget = "x.png"\neye = [0, 0, 3]\n[[views]]\nazimuth = 90\nelevation = 0\n'
                           'distance = 3\ntarget = "target.png"\n')
    config = load_config(path, targets=[str(other)])
    assert config.views[0].target == str(other)
    assert config.views[1].target == str(tmp_path / "target.png"), "file targets are relative to the config"


def test_several_targets_without_a_config_explain_how_to_give_cameras(target):
    message = error_of(None, targets=[str(target), str(target)])
    assert "2 targets but 0 [[views]]" in message and "camera" in message and "[[views]]" in message


def test_more_targets_than_views_is_an_error(tmp_path, target):
    path = write(tmp_path, "[[views]]\neye = [0, 0, 3]\n")
    assert "2 targets but 1 [[views]]" in error_of(path, targets=[str(target)] * 2)


def test_one_target_against_a_config_without_views_says_target_in_the_singular(tmp_path, target):
    assert "1 target but 0 [[views]]" in error_of(write(tmp_path, "seed = 1\n"), targets=[str(target)])


def test_no_views_at_all_is_an_error(tmp_path):
    assert "no views to fit" in error_of(write(tmp_path, "seed = 1\n"))


def test_unknown_key_names_file_line_and_key(tmp_path, target):
    path = write(tmp_path, f'[[views]]\ntarget = "{target}"\neye = [0, 0, 3]\n\n[optimize]\nsteps = 5\nlrate = 2.0\n')
    message = error_of(path)
    assert message.startswith(f"{path}:7: optimize.lrate: unknown key"), message
    assert "lr" in message


def test_wrong_type_names_file_line_and_key(tmp_path, target):
    path = write(tmp_path, f'[[views]]\ntarget = "{target}"\neye = [0, 0, 3]\n[optimize]\nlr = "fast"\n')
    assert error_of(path) == f"{path}:5: optimize.lr: expected a number, got 'fast'"


@pytest.mark.parametrize("text, fragment", [
    ("[[views]]\neye = [0, 0]\n", ":2: views.0.eye: expected a list of 3 numbers"),
    ('renderer = "raytracer"\n', ":1: renderer: must be one of soft, barycentric"),
    ("[optimize]\nsteps = 0\n", ":2: optimize.steps: must be positive"),
    ("[optimize]\nsteps = 2.5\n", ":2: optimize.steps: expected an integer"),
    ('[optimize]\nparams = ["shape"]\n', ":2: optimize.params: expected a non-empty list of vertices, pose"),
    ("[camera]\nfov = 200\n", ":2: camera.fov: must lie in (0, 180)"),
    ("[camera]\nnear = 5.0\nfar = 1.0\n", ":2: camera.near: must be less than camera.far"),
    ("image_size = [0, 96]\n", ":1: image_size: must be positive"),
    ("[loss]\nsilhouette = 0\nedge = 0\nlaplacian = 0\n", ":1: loss: every weight is 0"),
    ("[[lights]]\nintensity = -1\n", ":2: lights.0.intensity: must not be negative"),
    ("[[lights]]\nintensity = [1, -0.5, 0]\n", ":2: lights.0.intensity: must not be negative, got [1, -0.5, 0]"),
    ("seed = 2.0\n", ":1: seed: expected an integer"),
    ("[camera]\nfov = inf\n", ":2: camera.fov: expected a finite number, got inf"),
    ('[output]\ndir = ""\n', ":2: output.dir: expected a non-empty string"),
    ("strict = 1\n", ":1: strict: expected true or false, got 1"),
    ("image_size = [64]\n", ":1: image_size: expected [height, width], got [64]"),
    ("image_size = [5000, 64]\n", ":1: image_size: at most 4096 pixels per side"),
    ("[optimize]\ntexture_size = 8192\n", ":2: optimize.texture_size: at most 4096 texels per side"),
    ("threshold = 1.5\n", ":1: threshold: must lie in [0, 1], got 1.5"),
    ("[[views]]\neye = [0, 0, 0]\n", ":2: views.0.eye: eye and lookat must differ"),
    ('renderer = "barycentric"\n[soft]\nsigma_final = 1e-6\n', ":3: soft.sigma_final: only applies to the soft renderer"),
    ("[soft]\nsigma = -1e-4\n", ":2: soft.sigma: must be positive"),
    ("[output]\nfps = 0\n", ":2: output.fps: must lie in [0.01, 240]"),
    ("[output]\nfps = 1e-300\n", ":2: output.fps: must lie in [0.01, 240]"),
    ("views = 3\n", ":1: views: expected an array of tables"),
    ("[init]\ncolor = [1.0, 2.0, 0.5]\n", ":2: init.color: expected [r, g, b] in [0, 1], got [1.0, 2.0, 0.5]"),
    ("[init]\nsubdivisions = 9\n", ":2: init.subdivisions: at most 8 (1,310,720 triangles), got 9"),
])
def test_bad_values_name_the_line_and_key(tmp_path, text, fragment):
    path = write(tmp_path, text)
    message = error_of(path)
    assert message.startswith(str(path)) and fragment in message, message


def test_view_needs_exactly_one_kind_of_camera(tmp_path, target):
    both = write(tmp_path, f'[[views]]\ntarget = "{target}"\neye = [0, 0, 3]\nazimuth = 0\n')
    assert "views.0: give either eye/lookat/up or azimuth/elevation/distance" in error_of(both)
    neither = write(tmp_path, f'[[views]]\ntarget = "{target}"\nazimuth = 0\n')
    assert "views.0: needs a camera" in error_of(neither)


@pytest.mark.parametrize("view, fragment", [
    ("eye = [0, 3, 0]", ":2: views.0.up: must be non-zero and not parallel to lookat - eye"),
    ("eye = [1, 2, 3]\nup = [2, 4, 6]", ":5: views.0.up: must be non-zero and not parallel to lookat - eye"),
    ("eye = [0, 0, 3]\nup = [0, 0, 0]", ":5: views.0.up: must be non-zero"),
    ("azimuth = 30\nelevation = 90\ndistance = 3\nup = [0, 1, 0]", ":7: views.0.up: must be non-zero and not parallel to the view from"),
    ("azimuth = 30\nelevation = -90\ndistance = 3\nup = [0, -2, 0]", ":7: views.0.up: must be non-zero and not parallel to the view from"),
])
def test_an_up_along_the_view_is_refused(tmp_path, target, view, fragment):
    """A camera whose up is zero or parallel to its view has no defined roll (a singular view matrix)."""
    assert fragment in error_of(write(tmp_path, f'\n[[views]]\ntarget = "{target}"\n{view}\n'))


def test_a_synthetic_eye_along_a_views_up_is_refused(tmp_path):
    path = write(tmp_path, '[[views]]\neye = [0, 0, 3]\n[synthetic]\nmesh = "cube"\neye = [0, 3, 0]\n')
    assert ":5: synthetic.eye: looks along views.0.up" in error_of(path)


def test_cameras_near_and_on_a_pole_are_accepted_with_the_orbits_own_up(tmp_path, target):
    """An orbit view without up takes Camera.orbit's, so elevation ±90 has a roll; an eye view
    takes +y."""
    elevations = [89.9, 90.0, -90.0, 20.0]
    orbits = "".join(f'[[views]]\ntarget = "{target}"\nazimuth = 30\nelevation = {el}\ndistance = 3\n'
                     for el in elevations)
    config = load_config(write(tmp_path, orbits + f'[[views]]\ntarget = "{target}"\neye = [0, 3, 0.01]\n'))
    orbit = Camera.orbit(torch.full((4,), 30.0, dtype=torch.float64), torch.tensor(elevations, dtype=torch.float64),
                         torch.full((4,), 3.0, dtype=torch.float64), torch.zeros(4, 3, dtype=torch.float64))
    torch.testing.assert_close(torch.tensor([view.camera_up() for view in config.views[:4]], dtype=torch.float64),
                               orbit.up, atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.tensor([view.camera_position() for view in config.views[:4]],
                                            dtype=torch.float64), orbit.eye, atol=1e-12, rtol=0)
    assert config.views[4].camera_up() == (0.0, 1.0, 0.0)


@pytest.mark.parametrize("dotted, value, flag, toml", [("antialias", True, "--antialias", "true"),
                                                       ("antialias", False, "--antialias", "false"),
                                                       ("texture_filter", "bilinear", "--texture-filter", '"bilinear"')])
def test_barycentric_flags_are_refused_for_a_soft_fit_but_not_in_a_shared_preset(tmp_path, target, dotted, value,
                                                                                    flag, toml):
    views = f'[[views]]\ntarget = "{target}"\neye = [0, 0, 3]\n'
    path = write(tmp_path, f'renderer = "soft"\n{views}')
    assert error_of(path, [Override(dotted, value, flag)]) == f"{flag}: {dotted}: only applies to the barycentric renderer"
    barycentric = load_config(path, [Override("renderer", "barycentric", "--renderer"), Override(dotted, value, flag)])
    assert getattr(barycentric, dotted) == value
    preset = write(tmp_path, f'renderer = "soft"\n{dotted} = {toml}\n{views}')
    assert getattr(load_config(preset), dotted) == value


def test_missing_target_file_names_the_key_and_the_file(tmp_path):
    path = write(tmp_path, '\n[[views]]\ntarget = "nowhere.png"\neye = [0, 0, 3]\n')
    message = error_of(path)
    assert message.startswith(f"{path}:3: views.0.target: target file not found") and "nowhere.png" in message


def test_view_without_target_needs_synthetic(tmp_path):
    path = write(tmp_path, "[[views]]\neye = [0, 0, 3]\n")
    assert "views.0: has no target image" in error_of(path)
    config = load_config(write(tmp_path, '[[views]]\neye = [0, 0, 3]\n[synthetic]\nmesh = "cube"\n'))
    assert config.synthetic.mesh == "cube" and config.synthetic.eye is None


def test_invalid_toml_names_the_line(tmp_path):
    path = write(tmp_path, "seed = 1\n[optimize\nsteps = 3\n")
    message = error_of(path)
    assert message.startswith(f"{path}:2: invalid TOML"), message


def test_missing_config_file(tmp_path):
    assert "config file not found" in error_of(tmp_path / "absent.toml")


def test_overrides_replace_file_values_and_errors_name_the_flag(tmp_path, target):
    path = write(tmp_path, f'[[views]]\ntarget = "{target}"\neye = [0, 0, 3]\n[optimize]\nsteps = 5\n')
    config = load_config(path, [Override("optimize.steps", 7, "--steps"), Override("soft.sigma", 1e-5, "--sigma"),
                                Override("views.0.eye", [1.0, 2.0, 3.0], "--set views.0.eye"),
                                Override("synthetic.mesh", "cube", "--synthetic")])
    assert config.optimize.steps == 7 and config.soft.sigma == 1e-5 and config.views[0].eye == (1.0, 2.0, 3.0)
    assert config.synthetic.mesh == "cube"
    assert error_of(path, [Override("optimize.lr", -1.0, "--lr")]) == "--lr: optimize.lr: must be positive, got -1.0"
    assert error_of(path, [Override("optimize.bogus", 1, "--set optimize.bogus")]).startswith(
        "--set optimize.bogus: optimize.bogus: unknown key")


def test_errors_inside_a_value_a_flag_gave_name_that_flag_not_the_file(tmp_path, target):
    path = write(tmp_path, f'[[views]]\ntarget = "{target}"\neye = [0, 0, 3]\n[[lights]]\nposition = [1, 2, 3]\n'
                           '[loss]\nedge = 0.1\n')
    # A flag that replaced a whole table answers for the keys inside it.
    lights = [{"position": [1.0, 2.0]}]
    assert error_of(path, [Override("lights", lights, "--light")]) == \
        "--light: lights.0.position: expected a list of 3 numbers, got [1.0, 2.0]"
    # A table that a --set created is the --set's, in a file and without one.
    for config in (path, None):
        message = error_of(config, [Override("loss.silhouette.weight", 2, "--set loss.silhouette.weight")],
                           targets=[str(target)])
        assert message == "--set loss.silhouette.weight: loss.silhouette: expected a number, got {'weight': 2}"
    appended = error_of(path, [Override("views.1.azimuth", 90.0, "--set views.1.azimuth")])
    assert appended.startswith("--set views.1.azimuth: views.1: needs a camera"), appended


def test_overrides_can_append_a_view(tmp_path, target):
    path = write(tmp_path, f'[[views]]\ntarget = "{target}"\neye = [0, 0, 3]\n')
    config = load_config(path, [Override("views.1.eye", [3.0, 0.0, 0.0], "--set"),
                                Override("views.1.target", str(target), "--set")])
    assert len(config.views) == 2 and config.views[1].eye == (3.0, 0.0, 0.0)
    assert "there is no [[...]] entry 5" in error_of(path, [Override("views.5.eye", [0, 0, 1], "--set")])


def test_parse_value_reads_toml_and_falls_back_to_strings():
    assert parse_value("3") == 3 and parse_value("2.5") == 2.5 and parse_value("true") is True
    assert parse_value("[0, 1, 0]") == [0, 1, 0] and parse_value('"x y"') == "x y"
    assert parse_value("teapot") == "teapot"


def test_key_lines_follow_tables_and_arrays_of_tables():
    text = "seed = 1\n[camera]\nfov = 40\n\n[[views]]\neye = [0, 0, 1]\n[[views]]\n# note\neye = [1, 0, 0]\n"
    lines = key_lines(text)
    assert lines == {"seed": 1, "camera": 2, "camera.fov": 3, "views.0": 5, "views.0.eye": 6, "views.1": 7,
                     "views.1.eye": 9}


TOML_FALLBACK = """
import sys
from pathlib import Path
sys.modules["tomllib"] = None  # as on Python 3.10, whose standard library has no tomllib
from diffrender.cli import config
assert config.tomllib.__name__ == "tomli", config.tomllib
print(repr(config.load_config(Path(sys.argv[1]), targets=[sys.argv[2]] * 4)))
try:
    config.load_config(Path(sys.argv[3]))
except config.ConfigError as error:
    print(error)
"""


def test_configs_read_the_same_through_tomli_where_python_lacks_tomllib(tmp_path, target):
    """Python 3.10 has no tomllib: cli/config.py falls back to tomli, the same parser."""
    preset = CONFIGS / "four_views.toml"
    broken = write(tmp_path, 'renderer = "soft"\n\n[optimize\nsteps = 3\n')
    run = subprocess.run([sys.executable, "-c", TOML_FALLBACK, str(preset), str(target), str(broken)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    parsed, error = run.stdout.splitlines()
    assert parsed == repr(load_config(preset, targets=[str(target)] * 4))
    assert error.startswith(f"{broken}:3: invalid TOML") and error == error_of(broken)
