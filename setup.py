"""Builds diffrender._C from csrc/: CPU always, CUDA when torch has CUDA and nvcc is found
(or DIFFRENDER_CUDA=1 forces it, DIFFRENDER_CUDA=0 forbids it)."""
import glob
import os
import shutil

from setuptools import setup
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))


def want_cuda() -> bool:
    forced = os.environ.get("DIFFRENDER_CUDA")
    if forced is not None:
        return forced == "1"
    import torch

    return torch.version.cuda is not None and shutil.which("nvcc") is not None


def sources(pattern: str) -> list:
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "csrc", "**", pattern), recursive=True))


# at::parallel_for is an inline OpenMP loop: without -fopenmp at compile *and* link time it
# silently runs on one thread.
cxx_flags = ["-O3", "-fopenmp"]
link_flags = ["-fopenmp"]
include_dirs = [os.path.join(ROOT, "csrc")]

if want_cuda():
    extension = cpp_extension.CUDAExtension(
        "diffrender._C",
        sources("*.cpp") + sources("*.cu"),
        include_dirs=include_dirs,
        define_macros=[("WITH_CUDA", None)],
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-std=c++17", "--fmad=false"]},
        extra_link_args=link_flags,
    )
else:
    extension = cpp_extension.CppExtension(
        "diffrender._C",
        sources("*.cpp"),
        include_dirs=include_dirs,
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=link_flags,
    )

setup(ext_modules=[extension], cmdclass={"build_ext": cpp_extension.BuildExtension})
