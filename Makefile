# One command each: `make reproduce` (mini profile, offline) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: install reproduce dry-run reproduce-smoke test test-kernels kernel-matrix lab report clean-results gpu-check gpu-wheels

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

# Re-installs when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (vlpt)"
	touch $@

install: $(VENV)/.installed

reproduce: install
	$(PY) -m vlpt_lib reproduce --profile mini

# The paper profile end to end on a synthetic, paper-shaped data root with random ViT-B/16 weights (caps in
# params/dry-run/, printed first); results in results/dry-run/ (cleared first: nothing cached can hide a bug).
dry-run: install
	rm -rf results/dry-run/paper
	$(PY) -m vlpt_lib reproduce --profile paper --dry-run

reproduce-smoke: install
	$(PY) -m vlpt_lib reproduce --profile smoke

# results/smoke is cleared so no run cached by older code can hide a bug.
test: install
	rm -rf results/smoke
	$(PY) -m pytest

# The exactness and fidelity tests again on torch's portable kernels (no AVX2/AVX-512): a tolerance that holds
# only on one CPU's vector kernels fails here, not on a user's machine. CI runs it after `make test`.
test-kernels: install
	ATEN_CPU_CAPABILITY=default $(PY) -m pytest -q tests/test_cocoop_exact.py tests/test_fidelity_cocoop.py \
		tests/test_fidelity_mvp.py tests/test_spine_launch.py tests/test_kgcoop_exact.py tests/test_targets.py \
		tests/test_maple_exact.py tests/test_promptsrc_exact.py

# Every CPU kernel variant this machine can select (threads, ATen capability, MKL_CBWR, oneDNN ISA), with the
# worst float32 error each gave per comparison (scripts/kernel_matrix.sh; about 10 minutes).
kernel-matrix: install
	bash scripts/kernel_matrix.sh

report: install
	$(PY) -m vlpt_lib report --profile mini

lab: install
	$(VENV)/bin/jupyter lab notebooks/

clean-results:
	rm -rf results/smoke results/mini/world results/mini/runs results/mini/notebooks results/mini/report

# On a machine with one H100/H200 and no network, before anything else: the benches and the dry run on CUDA in
# at most 8 minutes (scripts/gpu_check.py); results/bench/gpu_check-<card>.json + figures. Needs .whl/ from
# `make gpu-wheels` and the machine's own python3 with torch (GPU_PYTHON=... names another); no `install`.
# GPU_CHECK_ARGS passes options, e.g. GPU_CHECK_ARGS='--budget-s 580 --work /tmp/logs'.
GPU_CHECK_ARGS ?=
gpu-check:
	bash scripts/gpu_check.sh $(GPU_CHECK_ARGS)

# Where the package registry is: the wheels the GPU machine lacks (open_clip, ftfy, papermill, ... and this
# project) for its Python version, into .whl/ (ignored by git); prints their size against the device's 64 MiB.
GPU_PYTHON_VERSION ?= 3.12
gpu-wheels: install
	$(PY) scripts/gpu_check.py wheels --python-version $(GPU_PYTHON_VERSION) --dest .whl
