# Two commands matter: `make test` and `make demo`. Both build .venv on first use.
# torch is pinned here (a local CPU wheel on the project machines) *before* the project is
# installed, so pip never resolves `torch>=2.4` to a multi-GB CUDA build. GPU users install
# their own torch first and then `pip install -e .`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: test test-all demo venv bench reproduce clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n 2

test-all: $(STAMP)
	$(PY) -m pytest -q -n 2 -m ""

demo: $(STAMP)
	$(VENV)/bin/fimkit demo

# Everything issue 14 asks for, 1 and 2 threads, into benchmarks/results (benchmarks/README.md).
bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	$(VENV)/bin/fimkit bench --full --optimizers all --threads 1,2 --repeats 5 --out-dir benchmarks/results

# The paper's figures at CPU scale: hours, cached and resumable (run it again to continue).
reproduce: $(STAMP)
	$(VENV)/bin/fimkit reproduce --preset nano

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
