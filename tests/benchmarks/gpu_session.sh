#!/usr/bin/env bash
# Issue 6's whole GPU check in one call of the device tool: builds diffrender with CUDA for the
# machine's GPU, runs the CUDA tests (-m cuda), then bench_cuda.py. Logs and JSON go to $OUT.
#
# The GPU machine has torch, nvcc, pytest, typer, rich, imageio, matplotlib and pillow, but not
# trimesh, imageio-ffmpeg or a setuptools new enough for pyproject.toml, and no ../shared. So,
# once, in the repository root here:
#   printf '/.whl/\n/.reference/\n' >> .git/info/exclude
#   cp -r ../shared/reference .reference
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     trimesh imageio-ffmpeg 'setuptools>=77'
# then call the device tool's run with
#   command: bash tests/benchmarks/gpu_session.sh     carry: [".whl", ".reference"]
# Here, `PYTHON=.venv/bin/python DIFFRENDER_CUDA=0 bash tests/benchmarks/gpu_session.sh` checks the
# script itself (everything but the GPU parts, which then skip).
set -uo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-out/gpu_session}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

if compgen -G ".whl/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/diffrender_site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/diffrender_site${PYTHONPATH:+:$PYTHONPATH}
fi
[ -d .reference ] && export DIFFRENDER_REFERENCE=$PWD/.reference

# The GPU's own architecture only, which halves the compile.
arch=$("$PYTHON" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability() if torch.cuda.is_available() else '')")
export DIFFRENDER_CUDA=${DIFFRENDER_CUDA:-1}
[ -n "${TORCH_CUDA_ARCH_LIST:-$arch}" ] && export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$arch}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1; "$PYTHON" -c "import torch; print('torch', torch.__version__, torch.version.cuda)"; } | tee "$OUT/machine.txt"

started=$(date +%s)
"$PYTHON" setup.py -q build_ext --inplace > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - started )) s (DIFFRENDER_CUDA=$DIFFRENDER_CUDA, TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-})"

# diffrender without installing it: renderer/ is the package and cli/ its cli, as pyproject maps them.
package=/tmp/diffrender_package/diffrender
rm -rf "$package" && mkdir -p "$package"
for path in renderer/*; do ln -s "$PWD/$path" "$package/"; done
ln -s "$PWD/cli" "$package/cli"
export PYTHONPATH=/tmp/diffrender_package${PYTHONPATH:+:$PYTHONPATH}
"$PYTHON" -c "import torch; from diffrender._ext import _C; print('diffrender._C with CUDA:', _C.with_cuda(), '| GPU:', torch.cuda.is_available())"

# The device tool stops a command at 600 s: the benchmark gets what is left of SESSION_SECONDS
# (its targets come first and its JSON is rewritten after every table).
deadline=$(( started + ${SESSION_SECONDS:-570} ))
timeout 200 "$PYTHON" -m pytest -q -p no:cacheprovider -m cuda tests 2>&1 | tee "$OUT/pytest_cuda.log"
left=$(( deadline - $(date +%s) ))
[ "$left" -gt 30 ] || { echo "no time left for bench_cuda.py"; exit 1; }
timeout "$left" "$PYTHON" tests/benchmarks/bench_cuda.py --json "$OUT/bench_cuda.json" 2>&1 | tee "$OUT/bench_cuda.log"
