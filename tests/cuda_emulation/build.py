"""Builds diffrender's CUDA kernels and their torch glue as a CPU module for the tests: the .cu
files are compiled as C++ against the emulated CUDA runtime in include/ (their kernel launches
rewritten into calls), the *_ops.cpp glue with WITH_CUDA, so that every "CUDA" path of every op
runs on CPU tensors."""
import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator, List

from torch.utils import cpp_extension

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CSRC = ROOT / "csrc"
BUILD = ROOT / "build" / "cuda_emulation"
TRANSLATED = BUILD / "translated"
MODULE = "diffrender_cuda_emulated"


def _matching(text: str, start: int, opening: str, closing: str, step: int) -> int:
    """Index of the bracket that closes the one at text[start], scanning by step (+1 or -1)."""
    depth = 0
    i = start
    while 0 <= i < len(text):
        if text[i] == opening:
            depth += 1
        elif text[i] == closing:
            depth -= 1
            if depth == 0:
                return i
        i += step
    raise ValueError(f"unbalanced {opening}{closing} from offset {start}")


def translate_launches(source: str) -> str:
    """Rewrites each `kernel<Targs><<<config>>>(args)` into
    `::cuda_emulation::launch(::cuda_emulation::config(config), kernel<Targs>, args)`."""
    out: List[str] = []
    pos = 0
    while (start := source.find("<<<", pos)) >= 0:
        config_end = source.index(">>>", start)
        name_start = start
        if source[name_start - 1] == ">":  # explicit template arguments
            name_start = _matching(source, name_start - 1, ">", "<", -1)
        while name_start > 0 and (source[name_start - 1].isalnum() or source[name_start - 1] in "_:"):
            name_start -= 1
        call_start = config_end + 3
        if source[call_start] != "(":
            raise ValueError(f"kernel launch without arguments at offset {start}")
        call_end = _matching(source, call_start, "(", ")", +1)
        kernel, config = source[name_start:start], source[start + 3:config_end]
        args = source[call_start + 1:call_end]
        out += [source[pos:name_start], f"::cuda_emulation::launch(::cuda_emulation::config({config}), {kernel}",
                f", {args})" if args.strip() else ")"]
        pos = call_end + 1
    out.append(source[pos:])
    return "".join(out)


def _translate_tree() -> List[str]:
    """Mirrors csrc's .cu and .cuh files under TRANSLATED (the .cu ones as .cpp), rewriting a file
    only when its text changes so that ninja rebuilds only what changed. Returns the .cpp paths."""
    sources = []
    for path in sorted(CSRC.rglob("*.cu")) + sorted(CSRC.rglob("*.cuh")):
        relative = path.relative_to(CSRC)
        target = TRANSLATED / (relative.with_suffix(".emulated.cpp") if path.suffix == ".cu" else relative)
        text = f'#line 1 "{path}"\n' + translate_launches(path.read_text())
        if not target.exists() or target.read_text() != text:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        if path.suffix == ".cu":
            sources.append(str(target))
    return sources


# DIFFRENDER_EMULATION_ASAN=1 builds a separate AddressSanitizer module (run python with
# LD_PRELOAD=$(gcc -print-file-name=libasan.so)): out-of-bounds reads and writes of the kernels,
# in scratch and in torch's tensors alike, then stop with a report, as compute-sanitizer would.
ASAN = os.environ.get("DIFFRENDER_EMULATION_ASAN") == "1"
SANITIZE = ["-fsanitize=address", "-fno-omit-frame-pointer"] if ASAN else []

# The soft kernels' 2^31 - 1 limit on a call's binned pairs (soft_cuda.h), lowered so that the
# tests reach it with scenes the emulation runs in moments, yet above what the other tests' scenes
# count (at most about 12000 pairs and 5400 walk chunks, against this and a third of it).
SOFT_CUDA_MAX_PAIRS = 1 << 15


@contextlib.contextmanager
def sole_build(build: Path) -> Iterator[None]:
    """Makes this process the only one building in ``build`` until the block ends.

    torch's builder marks a build with a ``lock`` file and waits, forever, while one exists; a
    build that was killed (a timeout, SIGKILL) leaves it behind. An flock on ``owner.lock``, which
    the kernel releases when its process ends however it ends, tells the two cases apart: once
    this process holds it, no other build is running, so a ``lock`` file is a leftover.
    """
    with open(build / "owner.lock", "w") as owner:
        fcntl.flock(owner, fcntl.LOCK_EX)
        (build / "lock").unlink(missing_ok=True)
        yield


def load(verbose: bool = False):
    """Compiles (incrementally) and imports the emulated module."""
    build = BUILD / "asan" if ASAN else BUILD
    build.mkdir(parents=True, exist_ok=True)
    sources = sorted(str(p) for p in CSRC.rglob("*.cpp")) + [str(HERE / "runtime.cpp")] + _translate_tree()
    # The compilers need no preloaded sanitizer runtime (this process already has it).
    preload = os.environ.pop("LD_PRELOAD", None)
    try:
        with sole_build(build):
            return cpp_extension.load(
                name=MODULE + ("_asan" if ASAN else ""),
                sources=sources,
                # The translated .cuh files shadow csrc's.
                extra_include_paths=[str(HERE / "include"), str(TRANSLATED), str(CSRC)],
                extra_cflags=["-O1", "-fopenmp", "-DWITH_CUDA", "-DDIFFRENDER_CUDA_EMULATION",
                              f"-DDIFFRENDER_SOFT_CUDA_MAX_PAIRS={SOFT_CUDA_MAX_PAIRS}"] + SANITIZE,
                extra_ldflags=["-fopenmp"] + SANITIZE,
                build_directory=str(build),
                verbose=verbose,
            )
    finally:
        if preload is not None:
            os.environ["LD_PRELOAD"] = preload


def main() -> None:
    print("cuda-emulation: compiling the CUDA kernels for the CPU (once; then only what changed)", flush=True)
    module = load()
    print(f"cuda-emulation: {module.__file__}")


if __name__ == "__main__":
    main()
