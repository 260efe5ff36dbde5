"""One-line errors for the CLI: expected failures print `error: ...` and exit non-zero, with no
traceback."""
from __future__ import annotations

import contextlib
import functools
import sys

import typer

from diffrender.images import ImageError, OutputError
from diffrender.mesh import MeshError


class CliError(Exception):
    """A user-facing error; ``code`` 2 for bad arguments, 1 for everything else."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def bad_argument(message: str) -> CliError:
    return CliError(message, code=2)


@contextlib.contextmanager
def writing(path):
    """Turns an OSError while writing ``path`` (a full disk, ffmpeg dying mid-stream) into one
    line naming it; an :class:`OutputError` already names its problem."""
    try:
        yield
    except OutputError:
        raise
    except OSError as error:
        raise CliError(f"writing {path} failed: {error.strerror or error}") from None


def one_line_errors(command):
    """Decorates a Typer command so that expected errors become one line on stderr."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except CliError as error:
            code = error.code
            message = str(error)
        except (MeshError, ImageError, OutputError) as error:
            code, message = 1, str(error)
        except KeyboardInterrupt:
            code, message = 130, "interrupted"
        except MemoryError:
            code, message = 1, "out of memory; try a smaller --size"
        typer.echo(f"error: {message.splitlines()[0] if message else 'failed'}", err=True)
        sys.stderr.flush()
        raise typer.Exit(code)

    return wrapper
