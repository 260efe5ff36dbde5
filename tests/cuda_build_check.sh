#!/usr/bin/env bash
# The build a GPU machine does, checked on one without a GPU (`make cuda-build-check`).
# `make cuda-check` compiles the .cu files alone, and the CUDA emulation compiles the WITH_CUDA glue
# against stand-in CUDA headers. This script does the real thing: `pip install` with DIFFRENDER_CUDA=1
# against a CUDA build of torch, so every .cu and .cpp is compiled with torch's own CUDA headers and
# linked to the CUDA runtime. It then imports the result and runs the test suite on it; the cuda
# tests skip for want of a GPU. A CUDA torch is several GB, so it lives in a venv of its own
# (CUDA_VENV). CUDA_TORCH must be built for nvcc's CUDA major version.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
CUDA_VENV=$(realpath -m "${CUDA_VENV:-.venv-cuda}")
CUDA_TORCH=${CUDA_TORCH:-torch==2.14.1}
PY=$CUDA_VENV/bin/python
PIP="$PY -m pip --disable-pip-version-check -q"

[ -x "$PY" ] || "$PYTHON" -m venv "$CUDA_VENV"
$PIP install "$CUDA_TORCH" "setuptools>=77" wheel ninja "tomli; python_version < '3.11'"
# The dependencies by name, so that installing the package below builds it once (one a line: a
# requirement's environment marker holds spaces).
"$PY" -c "
try:
    import tomllib
except ModuleNotFoundError:
    import tomli as tomllib
project = tomllib.load(open('pyproject.toml', 'rb'))['project']
print('\n'.join(project['dependencies'] + project['optional-dependencies']['test']))" > "$CUDA_VENV/requirements.txt"
$PIP install -r "$CUDA_VENV/requirements.txt"
nvcc_major=$(nvcc --version | sed -n 's/.*release \([0-9]*\)\..*/\1/p')
torch_cuda=$("$PY" -c "import torch; print(torch.version.cuda or '')")
if [ -z "$torch_cuda" ]; then
  echo "cuda-build-check: $CUDA_TORCH is a CPU build of torch; set CUDA_TORCH to a CUDA build" >&2; exit 1
elif [ "${torch_cuda%%.*}" != "$nvcc_major" ]; then
  echo "cuda-build-check: torch is built for CUDA $torch_cuda, nvcc is CUDA $nvcc_major; set CUDA_TORCH to match" >&2
  exit 1
fi

# The working tree is built from a copy that keeps its build/ folder between runs: ninja then
# recompiles only what changed, and the main venv's in-place CPU build is left alone.
source_copy=$CUDA_VENV/source
mkdir -p "$source_copy"
find "$source_copy" -mindepth 1 -maxdepth 1 ! -name build -exec rm -rf {} +
git ls-files -z --cached --others --exclude-standard | tar --null --ignore-failed-read -T - -cf - 2>/dev/null |
  tar -xf - -C "$source_copy"

started=$(date +%s)
(cd "$source_copy" && DIFFRENDER_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-8.0;9.0} \
  $PIP install --no-build-isolation --no-deps .)
echo "cuda-build-check: built and installed in $(( $(date +%s) - started )) s (torch $("$PY" -c 'import torch; print(torch.__version__)'), nvcc $nvcc_major)"

"$PY" -c "import torch; from diffrender._ext import _C
assert _C.with_cuda(), 'diffrender._C was built without its CUDA kernels'
print('cuda-build-check: diffrender._C has its CUDA kernels; a GPU here:', torch.cuda.is_available())"
"$PY" -m pytest -q -p no:cacheprovider -m "not cuda_emulation" tests
