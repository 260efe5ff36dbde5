"""Streaming video output: MP4 (H.264, yuv420p, faststart), GIF, or a numbered PNG sequence.

Frames are written as they come, so memory stays bounded for any frame count, and the file
appears under its final name only once it is complete.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path
from typing import List

import imageio.v2 as imageio
import imageio_ffmpeg
import numpy as np

from .images import OutputError, atomic_output

# ffmpeg takes the rate as a fraction with a denominator of at most 10^6 (imageio-ffmpeg), so far
# slower rates would round to 0 frames per second: one frame per 100 s is slow enough.
MIN_FPS, MAX_FPS = 0.01, 240.0
FPS_RANGE = f"[{MIN_FPS:g}, {MAX_FPS:g}]"


class VideoError(ValueError):
    """Bad video settings or an unusable encoder; the message is one line."""


def video_kind(path: str | os.PathLike) -> str:
    """'mp4', 'gif' or 'png-sequence' (a path with a %d-style pattern and a .png suffix)."""
    text = str(path)
    if re.search(r"%0?\d*d", text) and text.lower().endswith(".png"):
        _check_frame_pattern(text)
        return "png-sequence"
    suffix = Path(text).suffix.lower()
    if suffix in (".mp4", ".gif"):
        return suffix[1:]
    raise VideoError(f"unknown output type '{Path(text).name}': use .mp4, .gif or a pattern like frames/%04d.png")


def _check_frame_pattern(text: str) -> None:
    """A PNG-sequence path must name each frame apart with one %d-style number (and %% for a
    literal percent sign), since frame k is written to ``text % k``."""
    try:
        first, second = text % 0, text % 1
    except (TypeError, ValueError):
        first = second = None
    if first is None or first == second:
        raise VideoError(f"frame pattern '{Path(text).name}' must hold exactly one %d-style number, like %04d")


def check_fps(fps: float) -> None:
    if not MIN_FPS <= fps <= MAX_FPS:
        raise VideoError(f"fps must lie in {FPS_RANGE}, got {fps:g}")


def pad_to_even(frame: np.ndarray) -> np.ndarray:
    """H.264 with yuv420p needs even sides: pad one pixel of edge colour, never rescale."""
    height, width = frame.shape[:2]
    return np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")


def flatten_alpha(frame: np.ndarray, background: int = 255) -> np.ndarray:
    """uint8 [H,W,3|4] → [H,W,3], compositing RGBA over a plain background."""
    if frame.shape[-1] == 3:
        return frame
    alpha = frame[..., 3:].astype(np.float32) / 255.0
    rgb = frame[..., :3].astype(np.float32) * alpha + background * (1.0 - alpha)
    return np.round(rgb).astype(np.uint8)


class VideoWriter:
    """Context manager: ``with VideoWriter(path, fps) as video: video.append(frame)``.

    ``frame`` is uint8 [H,W,3] or [H,W,4] (RGBA is composited over white for MP4 and GIF). On an
    exception nothing is left behind.
    """

    def __init__(self, path: str | os.PathLike, fps: float):
        self.path = Path(path)
        self.kind = video_kind(path)
        check_fps(fps)
        self.fps = float(fps)
        self.frames = 0
        self._stack = contextlib.ExitStack()
        self._writer = None
        self._written: List[Path] = []
        self._gif_path: Path | None = None

    def __enter__(self) -> "VideoWriter":
        if self.kind == "png-sequence":
            folder = self.path.parent
            if not folder.is_dir():
                raise OutputError(f"output folder does not exist: {folder}")
            if not os.access(folder, os.W_OK):
                raise OutputError(f"output folder is not writable: {folder}")
            return self
        temporary = self._stack.enter_context(atomic_output(self.path, self.path.suffix))
        try:
            if self.kind == "mp4":
                self._writer = imageio.get_writer(
                    temporary, format="FFMPEG", fps=self.fps, codec="libx264", pixelformat="yuv420p",
                    macro_block_size=1, ffmpeg_log_level="error", output_params=["-movflags", "+faststart"])
            else:
                # ffmpeg streams GIF frames (each with its own palette); imageio's Pillow writer
                # would hold every frame until the end. It starts at the first frame's size.
                self._gif_path = temporary
        except (RuntimeError, OSError) as error:
            self._stack.close()
            raise VideoError(f"cannot start the {self.kind} encoder (imageio-ffmpeg ships ffmpeg; is it installed?): "
                             f"{str(error).splitlines()[0]}") from None
        return self

    def append(self, frame: np.ndarray) -> None:
        if self.kind == "png-sequence":
            target = Path(str(self.path) % self.frames)
            with atomic_output(target, ".png") as temporary:
                imageio.imwrite(temporary, frame, format="PNG")
            self._written.append(target)
        elif self.kind == "mp4":
            self._writer.append_data(pad_to_even(flatten_alpha(frame)))
        else:
            rgb = np.ascontiguousarray(flatten_alpha(frame))
            if self._writer is None:
                self._writer = _GifStream(self._gif_path, rgb.shape[1], rgb.shape[0], self.fps)
            self._writer.append_data(rgb)
        self.frames += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
        finally:
            if exc_type is not None:
                for written in self._written:
                    with contextlib.suppress(FileNotFoundError):
                        written.unlink()
            self._stack.__exit__(exc_type, exc, tb)


class _GifStream:
    """An animated GIF written by ffmpeg as frames arrive (looping, per-frame palettes)."""

    def __init__(self, path: Path, width: int, height: int, fps: float):
        self.size = (height, width)
        self._frames = imageio_ffmpeg.write_frames(
            str(path), (width, height), fps=fps, codec="gif", pix_fmt_in="rgb24", pix_fmt_out="pal8",
            macro_block_size=1, ffmpeg_log_level="error",
            output_params=["-filter_complex", "split[a][b];[a]palettegen=stats_mode=single[p];[b][p]paletteuse=new=1",
                           "-loop", "0"])
        self._frames.send(None)

    def append_data(self, rgb: np.ndarray) -> None:
        if rgb.shape[:2] != self.size:
            raise VideoError(f"GIF frames must all be {self.size[1]}x{self.size[0]}, got {rgb.shape[1]}x{rgb.shape[0]}")
        self._frames.send(rgb.tobytes())

    def close(self) -> None:
        self._frames.close()


def ffmpeg_available() -> bool:
    """Whether imageio-ffmpeg's bundled (or a system) ffmpeg can be found."""
    try:
        return Path(imageio_ffmpeg.get_ffmpeg_exe()).exists()
    except RuntimeError:
        return shutil.which("ffmpeg") is not None
