"""Optional side-by-side reference: Mesa's llvmpipe (a JIT-compiled, SIMD, multi-threaded software
OpenGL) drawing the same clip-space triangles with a depth test, and reading back triangle ids
and depth: the hard forward pass without gradients. Needs `pip install moderngl` and Mesa's EGL
(Debian: libegl-mesa0, libgl1-mesa-dri); :func:`available` says why not when they are missing.
"""
from __future__ import annotations

import os
from typing import Callable, Optional

import numpy as np
import torch

VERTEX_SHADER = """#version 330
in vec4 clip;
void main() { gl_Position = clip; }
"""
FRAGMENT_SHADER = """#version 330
out int triangle;
void main() { triangle = gl_PrimitiveID; }
"""


def available() -> Optional[str]:
    """None when a headless llvmpipe context opens, else the reason it does not."""
    try:
        LlvmpipeRasterizer()
    except Exception as error:  # noqa: BLE001 - any failure means: no reference on this machine
        return f"{type(error).__name__}: {error}"
    return None


class LlvmpipeRasterizer:
    """One headless EGL context on llvmpipe (``LP_NUM_THREADS`` sets its threads)."""

    def __init__(self):
        import moderngl

        os.environ.setdefault("LIBGL_ALWAYS_SOFTWARE", "1")
        self.moderngl = moderngl
        self.ctx = moderngl.create_context(standalone=True, backend="egl")
        renderer = self.ctx.info["GL_RENDERER"]
        if "llvmpipe" not in renderer:
            raise RuntimeError(f"the EGL renderer is {renderer}, not llvmpipe")
        self.program = self.ctx.program(vertex_shader=VERTEX_SHADER, fragment_shader=FRAGMENT_SHADER)

    def prepare(self, clip: torch.Tensor, faces: torch.Tensor, width: int, height: int) -> Callable[[], tuple]:
        """A closure drawing clip [V,4] / faces [F,3] once and returning (ids [H,W] int32, -1 where
        uncovered; depth [H,W] in [0,1]), row 0 at NDC y = -1 as in rasterize_triangles."""
        ctx = self.ctx
        vertices = ctx.buffer(clip.detach().float().contiguous().numpy().tobytes())
        indices = ctx.buffer(faces.to(torch.int32).contiguous().numpy().tobytes())
        array = ctx.vertex_array(self.program, [(vertices, "4f", "clip")], index_buffer=indices,
                                 index_element_size=4)
        target = ctx.framebuffer([ctx.renderbuffer((width, height), components=1, dtype="i4")],
                                 ctx.depth_renderbuffer((width, height)))

        def draw():
            target.use()
            ctx.enable(self.moderngl.DEPTH_TEST)
            ctx.depth_func = "<="  # equal depths go to the later triangle, as in tf
            target.clear(red=-1, depth=1.0)
            array.render(self.moderngl.TRIANGLES)
            ids = np.frombuffer(target.read(components=1, dtype="i4"), dtype=np.int32).reshape(height, width)
            depth = np.frombuffer(target.read(attachment=-1, components=1, dtype="f4"), dtype=np.float32).reshape(height, width)
            return ids, depth
        return draw
