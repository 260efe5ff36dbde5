# Quickstart: `make demo` and `make test` each set up .venv (once) and then run.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
NVCC ?= nvcc
CUDA_ARCHS ?= 80 90
CSRC := $(shell find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh')
BUILT := $(VENV)/.built

.PHONY: demo test bench cuda-check cuda-build-check cuda-emulation-test cpu-asan-test install clean

install: $(BUILT)

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch goes in first and pinned, so pip never resolves a multi-GB CUDA build by itself.
$(VENV)/.torch: | $(PY)
	$(PIP) install "$(TORCH)"
	touch $@

$(VENV)/.package: pyproject.toml setup.py $(VENV)/.torch
	$(PIP) install "setuptools>=77" wheel ninja
	$(PIP) install --no-build-isolation -e ".[test]"
	touch $@

# The editable install compiles the kernels once; afterwards only edits to csrc/ rebuild them.
$(BUILT): $(VENV)/.package $(CSRC)
	@if [ -z "$$(ls renderer/_C*.so 2>/dev/null)" ] || [ -n "$$(find csrc setup.py -newer $$(ls renderer/_C*.so | head -1))" ]; then \
		$(PY) setup.py -q build_ext --inplace; fi
	touch $@

demo: install
	mkdir -p out
	$(VENV)/bin/diffrender render teapot -o out/teapot.png
	@echo "wrote out/teapot.png"
	$(VENV)/bin/diffrender fit --config configs/demo.toml -o out/fit
	@echo "wrote out/fit/progress.mp4 (a sphere fitted to four silhouettes of the teapot)"

test: install cuda-check
	$(PY) -m pytest -q -m "not cuda and not cuda_emulation" tests
	$(MAKE) --no-print-directory cuda-emulation-test
	$(MAKE) --no-print-directory cpu-asan-test

bench: install
	@for script in tests/benchmarks/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

# Compiles every .cu for each architecture without torch, so CUDA code cannot rot on CPU-only CI:
# one nvcc per file for all the architectures (the host side is compiled once), files in parallel.
GENCODES := $(foreach arch,$(CUDA_ARCHS),-gencode arch=compute_$(arch),code=sm_$(arch))
cuda-check:
	@if ! command -v $(NVCC) >/dev/null 2>&1; then echo "cuda-check: nvcc not found, skipped"; exit 0; fi; \
	files=$$(find csrc -name '*.cu'); \
	if [ -z "$$files" ]; then echo "cuda-check: no .cu files"; exit 0; fi; \
	echo "$$files" | xargs -P "$$(nproc)" -I{} $(NVCC) -std=c++17 -O3 --fmad=false -Icsrc $(GENCODES) -c {} -o /dev/null \
	|| exit 1; echo "cuda-check: compiled $$(echo $$files | wc -w) .cu file(s) for sm_$(CUDA_ARCHS)"

# The whole CUDA build as a GPU machine does it (pip install against a CUDA torch), imported and
# tested without a GPU; in .venv-cuda, several GB, so not part of `make test`.
cuda-build-check:
	PYTHON=$(PYTHON) bash tests/cuda_build_check.sh

# The CUDA kernels and their WITH_CUDA glue compiled for the CPU against tests/cuda_emulation, and
# the CUDA parity tests run on them; with AddressSanitizer where gcc has it, so that any
# out-of-bounds read or write of a kernel stops the run with a report (compute-sanitizer's memcheck,
# on the CPU). Incremental: only what changed is recompiled.
ASAN_LIB = $(shell gcc -print-file-name=libasan.so)
ASAN_REPORT = build/cuda_emulation/asan-report
cuda-emulation-test: install
	@if [ -f "$(ASAN_LIB)" ]; then \
	  export DIFFRENDER_EMULATION_ASAN=1 LD_PRELOAD="$(ASAN_LIB) $$(gcc -print-file-name=libstdc++.so)" \
	         ASAN_OPTIONS=detect_leaks=0:log_path=$(ASAN_REPORT); rm -f $(ASAN_REPORT).*; \
	else echo "cuda-emulation: libasan not found, running without AddressSanitizer"; fi; \
	$(PY) tests/cuda_emulation/build.py && $(PY) -m pytest -q -m cuda_emulation tests \
	|| { grep -hv "swapcontext" $(ASAN_REPORT).* 2>/dev/null | head -40; exit 1; }

# The CPU kernels built again with AddressSanitizer and the ops' tests run on them: an
# out-of-bounds read or write stops the run with a report.
cpu-asan-test: install
	PY=$(PY) bash tests/cpu_asan.sh

clean:
	rm -rf build renderer/_C*.so $(BUILT)
