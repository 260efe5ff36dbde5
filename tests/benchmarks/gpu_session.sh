#!/usr/bin/env bash
# Issue 6's whole GPU check in one call of the device tool: builds diffrender with CUDA for the
# machine's GPU, times the three targets (bench_cuda.py --part targets), runs the CUDA tests
# (-m cuda), then the benchmark sweep, and with what time is left a few CUDA tests under
# compute-sanitizer's memcheck. Logs and JSON go to $OUT.
#
# The GPU machine has torch, nvcc, pytest, typer, rich, imageio, matplotlib and pillow, but not
# trimesh, imageio-ffmpeg or a setuptools new enough for pyproject.toml, and no ../shared. So,
# once, in the repository root here:
#   printf '/.whl/\n/.reference/\n' >> .git/info/exclude
#   cp -r ../shared/reference .reference
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     trimesh imageio-ffmpeg==0.6.0 'setuptools>=77'
# (imageio-ffmpeg 0.8's wheel, 68 MB, is larger than all that the device tool carries.)
# then call the device tool's run once (a session's 15 minutes of device time hold one such call
# and the machine's start, not two) with
#   command: bash tests/benchmarks/gpu_session.sh     carry: [".whl", ".reference"]     timeout_s: 580
# The script stops itself after SESSION_SECONDS (540) from the start of the build.
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

# The device tool stops a command at 600 s: each step gets at most what is left of SESSION_SECONDS,
# the targets first; bench_cuda.py rewrites its JSON after every table.
deadline=$(( started + ${SESSION_SECONDS:-540} ))
left() { echo $(( deadline - $(date +%s) )); }
timeout "$(left)" "$PYTHON" tests/benchmarks/bench_cuda.py --part targets --json "$OUT/bench_targets.json" 2>&1 |
  tee "$OUT/bench_targets.log"
timeout "$(( $(left) < 200 ? $(left) : 200 ))" "$PYTHON" -m pytest -v -rfE -p no:cacheprovider --durations=5 -m cuda tests \
  2>&1 | tee "$OUT/pytest_cuda.log"
[ "$(left)" -gt 30 ] || { echo "no time left for the benchmark sweep"; exit 1; }
timeout "$(( $(left) - 20 ))" "$PYTHON" tests/benchmarks/bench_cuda.py --part sweep --json "$OUT/bench_sweep.json" 2>&1 |
  tee "$OUT/bench_sweep.log"
# Out-of-bounds accesses inside one of torch's cached blocks go unseen unless torch allocates each
# tensor on its own.
if command -v compute-sanitizer >/dev/null && [ "$(left)" -gt 40 ]; then
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout "$(left)" compute-sanitizer --tool memcheck --target-processes all \
    --print-limit 20 "$PYTHON" -m pytest -q -p no:cacheprovider -m cuda -x tests/test_cuda.py \
    -k "rasterize_parity or interpolate_and_phong or soft_backward_parity or empty_and_degenerate" 2>&1 |
    tee "$OUT/memcheck.log" | tail -40
fi
echo "gpu_session: done in $(( $(date +%s) - started )) s"
