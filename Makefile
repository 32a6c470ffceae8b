# The two commands of the README:  make demo   and   make test
# Everything else is what they need, created when missing.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat setup.cfg | cksum | cut -d' ' -f1)

.PHONY: demo test venv jars kafka-broker clean-warehouse bench

venv: $(STAMP)
$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	rm -f $(VENV)/.installed-* && touch $@

jars: venv
	$(PY) -m lakecdp.jvm spark

kafka-broker: venv
	$(PY) -m lakecdp.jvm kafka

demo: venv jars
	$(PY) -m lakecdp demo

test: venv jars kafka-broker
	$(PY) -m pytest $(PYTEST_ARGS)

bench: venv jars kafka-broker
	$(PY) -m bench.run_all $(BENCH_ARGS)

clean-warehouse:
	rm -rf warehouse
