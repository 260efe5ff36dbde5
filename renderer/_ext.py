"""The compiled kernels. torch must be imported first: _C links against libc10.so, which only
torch's import puts on the loader path."""
from typing import Optional

import torch  # must precede the extension import

from . import _C  # noqa: E402

__all__ = ["_C", "cuda_unavailable_reason"]


def cuda_unavailable_reason() -> Optional[str]:
    """None where the CUDA kernels can run; otherwise which of their two needs is missing here."""
    if not _C.with_cuda():
        return ("this diffrender was built without CUDA "
                "(reinstall it with DIFFRENDER_CUDA=1 where torch has CUDA and nvcc is found)")
    if not torch.cuda.is_available():
        return "torch sees no CUDA GPU here"
    return None
