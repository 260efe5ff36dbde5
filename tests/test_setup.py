"""setup.py's CUDA build helpers, on which a GPU machine's `pip install` depends (the whole build
is `make cuda-build-check`)."""
import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SETUP_PY = Path(__file__).resolve().parents[1] / "setup.py"
SETUP = runpy.run_path(str(SETUP_PY), run_name="setup_helpers")


@pytest.fixture
def no_cuda_home(monkeypatch):
    # setenv first, so that monkeypatch also removes the CUDA_HOME the code under test sets.
    for name in ("CUDA_HOME", "CUDA_PATH"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def nvcc_wrapper_on_path(tmp_path: Path, monkeypatch) -> None:
    """Puts first on PATH a script named nvcc that runs the real one, as some machines have."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not found")
    wrapper = tmp_path / "bin" / "nvcc"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nexec "{nvcc}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}")


def test_the_toolkit_is_found_behind_an_nvcc_wrapper_script(tmp_path, monkeypatch, no_cuda_home):
    nvcc_wrapper_on_path(tmp_path, monkeypatch)
    SETUP["locate_cuda_toolkit"]()
    home = Path(os.environ["CUDA_HOME"])
    assert home != tmp_path, "the wrapper's parent folder is what torch would have guessed"
    assert (home / "bin" / "nvcc").is_file() and (home / "include" / "cuda_runtime.h").is_file(), home


def test_a_given_cuda_home_is_kept(monkeypatch, no_cuda_home):
    monkeypatch.setenv("CUDA_HOME", "/opt/my-cuda")
    SETUP["locate_cuda_toolkit"]()
    assert os.environ["CUDA_HOME"] == "/opt/my-cuda"


def test_wheel_headers_are_searched_after_the_toolkit(tmp_path):
    for package in ("cu13", "cusparse"):
        (tmp_path / "nvidia" / package / "include").mkdir(parents=True)
    (tmp_path / "nvidia" / "no_headers").mkdir()
    flags = SETUP["wheel_cuda_header_flags"](str(tmp_path))
    assert flags == ["-idirafter", str(tmp_path / "nvidia" / "cu13" / "include"),
                     "-idirafter", str(tmp_path / "nvidia" / "cusparse" / "include")]


# Run as pip runs it, in a process of its own, with setuptools.setup capturing the extension.
CUDA_EXTENSION_OF_SETUP = """
import json, runpy, setuptools
captured = {}
setuptools.setup = lambda **kwargs: captured.update(kwargs)
runpy.run_path(%r, run_name="__main__")
from torch.utils import cpp_extension
extension = captured["ext_modules"][0]
print(json.dumps({"cuda_home": cpp_extension.CUDA_HOME, "include_dirs": extension.include_dirs}))
"""


@pytest.mark.skipif(torch.version.cuda is None, reason="needs a CUDA build of torch (make cuda-build-check runs it)")
def test_setup_builds_against_the_toolkit_behind_an_nvcc_wrapper(tmp_path, monkeypatch, no_cuda_home):
    # torch fixes its CUDA_HOME when cpp_extension is first imported, so setup.py must locate the
    # toolkit before anything imports it.
    nvcc_wrapper_on_path(tmp_path, monkeypatch)
    monkeypatch.setenv("DIFFRENDER_CUDA", "1")
    result = subprocess.run([sys.executable, "-c", CUDA_EXTENSION_OF_SETUP % str(SETUP_PY)], capture_output=True,
                            text=True, check=True)
    build = json.loads(result.stdout.strip().splitlines()[-1])
    home = Path(build["cuda_home"])
    assert home != tmp_path and (home / "include" / "cuda_runtime.h").is_file(), build
    assert str(home / "include") in build["include_dirs"]
