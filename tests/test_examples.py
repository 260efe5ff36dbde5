"""The runnable examples run and produce what they claim."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name, *args, cwd):
    return subprocess.run([sys.executable, str(EXAMPLES / name), *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300, check=True).stdout


@pytest.mark.parametrize("name", sorted(path.name for path in EXAMPLES.glob("*.py")))
def test_help_describes_the_example_and_writes_nothing(tmp_path, name):
    output = run_example(name, "--help", cwd=tmp_path)
    assert output.startswith(f"usage: {name}") and "show this help message" in output, output
    assert list(tmp_path.iterdir()) == []


def test_render_teapot_writes_both_renderers_side_by_side(tmp_path):
    out = tmp_path / "teapots.png"
    run_example("render_teapot.py", out, cwd=tmp_path)
    image = np.asarray(Image.open(out))
    assert image.shape == (256, 512, 4)
    left, right = image[..., :256, 3] > 127, image[..., 256:, 3] > 127
    assert left.mean() > 0.1 and right.mean() > 0.1
    assert (left != right).mean() < 0.05, "the two renderers agree on the silhouette"


def test_cube_rotation_converges(tmp_path):
    output = run_example("cube_rotation.py", cwd=tmp_path)
    fraction = float(re.search(r"more than 0.04: ([\d.]+)%", output).group(1))
    assert fraction <= 1.0, output


def test_texture_fit_recovers_the_checker_and_writes_a_textured_obj(tmp_path):
    output = run_example("texture_fit.py", tmp_path / "out", 40, cwd=tmp_path)
    psnr = float(re.search(r"texture PSNR between latitudes ±60°: ([\d.]+) dB", output).group(1))
    assert psnr >= 30, output
    for name in ("sphere.obj", "sphere.mtl", "sphere_texture.png", "fit/fit.obj", "fit/fit.mtl",
                 "fit/fit_texture.png", "fit/states.pt", "fit/progress.mp4"):
        assert (tmp_path / "out" / name).is_file(), name
    fitted = np.asarray(Image.open(tmp_path / "out" / "fit" / "fit_texture.png"))
    truth = np.asarray(Image.open(tmp_path / "out" / "sphere_texture.png"))
    assert fitted.shape == truth.shape == (128, 128, 3)
