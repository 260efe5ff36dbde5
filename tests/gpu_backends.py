"""The two places the CUDA parity tests run the CUDA kernels: a real GPU (a CUDA build of
diffrender on an NVIDIA machine) and the CUDA emulation (tests/cuda_emulation: the same .cu
kernels and WITH_CUDA glue compiled for the CPU), which runs everywhere, CI included.

A test takes the `gpu` fixture and runs the GPU side of a comparison inside `with gpu():` on
tensors moved to `gpu.device`; its CPU reference runs outside. `gpu(schedule)` picks the order of
the emulated threads, blocks and atomics (a real GPU picks its own), so that repeated runs under
different schedules test that the result does not depend on them."""
import contextlib
from typing import Iterator

import pytest
import torch

from diffrender._ext import _C, cuda_unavailable_reason

NO_CUDA_REASON = cuda_unavailable_reason()
HAS_CUDA = NO_CUDA_REASON is None


def _op_names(module) -> list:
    return [name for name in dir(module) if name.endswith(("_forward", "_backward"))]


class RealCuda:
    device = "cuda"
    soft_max_binned_pairs = 2**31 - 1  # soft_cuda.h

    @contextlib.contextmanager
    def __call__(self, schedule: int = 0) -> Iterator[None]:
        yield


class EmulatedCuda:
    """Routes every op of diffrender._ext._C to the emulated module while active. Tensors stay on
    the CPU, and torch fills new empty tensors with NaN meanwhile, so that an output element no
    kernel writes cannot pass for a right answer."""

    device = "cpu"

    def __init__(self):
        from cuda_emulation import build

        self.module = build.load()
        self.soft_max_binned_pairs = build.SOFT_CUDA_MAX_PAIRS
        missing = set(_op_names(_C)) ^ set(_op_names(self.module))
        assert not missing, f"the emulated module and _C differ in their ops: {sorted(missing)}"

    @contextlib.contextmanager
    def __call__(self, schedule: int = 0) -> Iterator[None]:
        originals = {name: getattr(_C, name) for name in _op_names(_C)}
        deterministic = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
        self.module.set_schedule(schedule)
        for name in originals:
            setattr(_C, name, getattr(self.module, name))
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            for name, op in originals.items():
                setattr(_C, name, op)
            torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
            self.module.set_schedule(0)


_emulated = None


def backend(name: str):
    """The backend called name; skips the test when it cannot run here."""
    global _emulated
    if name == "cuda":
        if not HAS_CUDA:
            pytest.skip(NO_CUDA_REASON)
        return RealCuda()
    if _emulated is None:
        _emulated = EmulatedCuda()
    return _emulated


GPU_PARAMS = [pytest.param("cuda", marks=pytest.mark.cuda, id="cuda"),
              pytest.param("emulated", marks=pytest.mark.cuda_emulation, id="emulated")]
