#!/usr/bin/env bash
# The CPU kernels under AddressSanitizer: builds diffrender._C again with -fsanitize=address into
# build/cpu_asan (incrementally), puts it in a package beside the sources' renderer/ and cli/, and
# runs the tests of the ops on it, so that an out-of-bounds read or write stops the run with a report.
# `make test` runs it after the CUDA emulation's sanitized run; PY picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=build/cpu_asan
ASAN_LIB=$(gcc -print-file-name=libasan.so)
if [ ! -f "$ASAN_LIB" ]; then echo "cpu-asan: libasan not found, skipped"; exit 0; fi
mkdir -p "$OUT"

echo "cpu-asan: compiling the CPU kernels with AddressSanitizer (once; then only what changed)"
CFLAGS="-fsanitize=address -fno-omit-frame-pointer" LDFLAGS="-fsanitize=address" DIFFRENDER_CUDA=0 \
  "$PY" setup.py -q build_ext --build-lib "$OUT/lib" --build-temp "$OUT/temp" > "$OUT/build.log" 2>&1 \
  || { tail -20 "$OUT/build.log"; exit 1; }

package="$OUT/package/diffrender"
rm -rf "$OUT/package"
mkdir -p "$package"
ln -s "$PWD"/renderer/*.py "$package/"
ln -s "$PWD/cli" "$package/cli"
ln -s "$PWD"/$OUT/lib/diffrender/_C*.so "$package/"

export PYTHONPATH="$PWD/$OUT/package" LD_PRELOAD="$ASAN_LIB $(gcc -print-file-name=libstdc++.so)" \
       ASAN_OPTIONS="detect_leaks=0:log_path=$OUT/asan-report"
rm -f "$OUT"/asan-report.*
"$PY" -c "import torch; from diffrender._ext import _C; assert '$OUT' in _C.__file__, _C.__file__"
"$PY" -m pytest -q -m "not cuda and not cuda_emulation" tests/test_barycentric.py tests/test_soft.py \
  tests/test_soft_texture.py tests/test_antialias.py tests/test_texture.py tests/test_pixel_shading.py \
  tests/test_shading.py tests/test_render_arguments.py tests/test_shapes_mesh.py \
  || { cat "$OUT"/asan-report.* 2>/dev/null | head -40; exit 1; }
