"""The compiled kernels. torch must be imported first: _C links against libc10.so, which only
torch's import puts on the loader path."""
import torch  # noqa: F401  (must precede the extension import)

from . import _C  # noqa: E402

__all__ = ["_C"]
