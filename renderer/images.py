"""Image files: atomic writes and reading targets."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Tuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor


class OutputError(OSError):
    """An output file cannot be written; the message is one line naming the path."""


class ImageError(ValueError):
    """An input image is missing or unreadable; the message is one line naming the file."""


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yields a temporary path beside ``path``; renames it onto ``path`` only if the block
    succeeds, so a failure never leaves a partial file behind.

    ``suffix`` keeps the extension on the temporary name for writers that pick a format by it.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"output folder does not exist: {folder}")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"output folder is not writable: {folder}")
    if target.is_dir():
        raise OutputError(f"output is an existing folder, not a file: {target}")
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or target.suffix, dir=folder)
    os.close(handle)
    try:
        yield Path(temporary)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def to_uint8(image: Tensor) -> np.ndarray:
    """[H,W,C] float in [0,1] (clamped) as uint8."""
    return (image.detach().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8).cpu().numpy())


def save_png(path: str | os.PathLike, image: Tensor) -> None:
    """Writes an [H,W,3|4] float image in [0,1] as an 8-bit PNG, atomically."""
    array = to_uint8(image)
    with atomic_output(path, ".png") as temporary:
        Image.fromarray(array, mode="RGBA" if array.shape[-1] == 4 else "RGB").save(temporary, format="PNG")


def load_image(path: str | os.PathLike) -> Tuple[Tensor, bool]:
    """Reads a PNG or JPEG.

    Returns:
        rgba: float32 [H,W,4] in [0,1]; alpha is 1 when the file has none.
        has_alpha: whether the file carries transparency.
    """
    source = Path(path)
    if not source.is_file():
        raise ImageError(f"image file not found: {source}")
    try:
        with Image.open(source) as image:
            image.load()
            has_alpha = "A" in image.getbands() or "transparency" in image.info
            array = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"cannot read image {source}: {str(error).splitlines()[0] if str(error) else 'not an image'}") from None
    return torch.from_numpy(array.copy()), has_alpha
