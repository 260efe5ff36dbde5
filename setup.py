"""Builds diffrender._C from csrc/: CPU always, CUDA when torch has CUDA and nvcc is found
(or DIFFRENDER_CUDA=1 forces it, DIFFRENDER_CUDA=0 forbids it)."""
import glob
import os
import shutil
import subprocess

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def want_cuda() -> bool:
    forced = os.environ.get("DIFFRENDER_CUDA")
    if forced is not None:
        return forced == "1"
    import torch

    return torch.version.cuda is not None and shutil.which("nvcc") is not None


def locate_cuda_toolkit() -> None:
    """Sets CUDA_HOME, unless given, to the toolkit of the nvcc on PATH. torch would take nvcc's
    parent folder, which is not the toolkit when nvcc is a wrapper script (/usr/local/bin/nvcc
    running /usr/local/cuda-13.0/bin/nvcc); nvcc's dry run names its real root."""
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or not shutil.which("nvcc"):
        return
    dry_run = subprocess.run(["nvcc", "-dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull],
                             capture_output=True, text=True)
    for line in dry_run.stderr.splitlines():
        if line.startswith("#$ TOP="):
            os.environ["CUDA_HOME"] = os.path.realpath(line[len("#$ TOP="):].strip())


def wheel_cuda_header_flags(site: str = "") -> list:
    """-idirafter for the CUDA headers of torch's nvidia-* wheels (in site, by default torch's
    site-packages): torch's CUDA headers include cuSPARSE's, which a toolkit may lack. Searched
    last, so the toolkit's own headers come first."""
    if not site:
        import torch

        site = os.path.dirname(os.path.dirname(torch.__file__))
    return [flag for folder in sorted(glob.glob(os.path.join(site, "nvidia", "*", "include")))
            for flag in ("-idirafter", folder)]


def sources(pattern: str) -> list:
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "csrc", "**", pattern), recursive=True))


def extension():
    """diffrender._C: the CPU kernels always, and the CUDA ones when want_cuda()."""
    # at::parallel_for is an inline OpenMP loop: without -fopenmp at compile *and* link time it
    # silently runs on one thread.
    cxx_flags = ["-O3", "-fopenmp"]
    common = dict(include_dirs=[os.path.join(ROOT, "csrc")], extra_link_args=["-fopenmp"])
    build_cuda = want_cuda()
    if build_cuda:
        locate_cuda_toolkit()
    from torch.utils import cpp_extension  # reads CUDA_HOME when first imported

    if not build_cuda:
        return cpp_extension.CppExtension("diffrender._C", sources("*.cpp"), extra_compile_args={"cxx": cxx_flags},
                                          **common)
    return cpp_extension.CUDAExtension(
        "diffrender._C",
        sources("*.cpp") + sources("*.cu"),
        define_macros=[("WITH_CUDA", None)],
        extra_compile_args={"cxx": cxx_flags + wheel_cuda_header_flags(),
                            "nvcc": ["-O3", "-std=c++17", "--fmad=false"]},
        **common,
    )


# Guarded so that the tests can load these helpers; pip and `python setup.py` run it as __main__.
if __name__ == "__main__":
    diffrender_c = extension()  # before anything imports cpp_extension, which fixes CUDA_HOME then
    from torch.utils.cpp_extension import BuildExtension

    setup(ext_modules=[diffrender_c], cmdclass={"build_ext": BuildExtension})
