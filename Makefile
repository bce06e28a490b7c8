# One command each: `make reproduce` (mini profile, offline) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
export MPLBACKEND := agg

.PHONY: install reproduce reproduce-smoke test lab report clean-results

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

reproduce-smoke: install
	$(PY) -m vlpt_lib reproduce --profile smoke

# results/smoke is cleared so no run cached by older code can hide a bug.
test: install
	rm -rf results/smoke
	$(PY) -m pytest

report: install
	$(PY) -m vlpt_lib report --profile mini

lab: install
	$(VENV)/bin/jupyter lab notebooks/

clean-results:
	rm -rf results/smoke results/mini/world results/mini/runs results/mini/notebooks results/mini/report
