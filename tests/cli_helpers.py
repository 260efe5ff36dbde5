"""Running the CLI in-process and decoding what it wrote."""
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from diffrender.cli.app import app


def run_cli(*args: str):
    """Invokes `diffrender ARGS...`; returns the click Result (exit_code, stdout, stderr)."""
    return CliRunner().invoke(app, [str(a) for a in args])


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "RGBA", image.mode
        return np.asarray(image)


def assert_one_line_error(result, *fragments: str, code=(1, 2)):
    """A clean failure: non-zero exit, one `error:` line naming the problem, no traceback."""
    assert result.exit_code in (code if isinstance(code, tuple) else (code,)), (result.exit_code, result.output)
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message, message
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def assert_error_after_progress(result, *fragments: str, code: int = 1):
    """A clean failure once a progress bar has run: non-zero exit, stderr ending in one `error:`
    line naming the problem, no traceback."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in last, (fragment, last)
