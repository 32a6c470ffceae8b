# The commands of the README:  make demo,  make test (before a commit, minutes)  and
# make test-all (the full suite CI runs: Kafka, the standalone cluster, the demo end to end).
# Everything else is what they need, created when missing.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat setup.cfg | cksum | cut -d' ' -f1)

.PHONY: demo test test-all lint venv jars kafka-broker clean-warehouse bench

venv: $(STAMP)
$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	rm -f $(VENV)/.installed-* && touch $@

jars: venv
	$(PY) -m lakecdp.jvm spark

kafka-broker: venv
	$(PY) -m tests.support.kafka_broker

demo: venv jars
	$(PY) -m lakecdp demo

# The developer tier: unit and engine-backed tests; no broker, cluster, demo world or job-level runs.
# Two pytest-xdist workers (each its own Spark session): most of a test's time is Spark's per-job
# latency, not CPU, so two workers on two cores take about half the time of one (946 tests:
# 2:35 on a fresh clone, 2026-12-03).
# LAKECDP_TEST_TIER=fast: Hypothesis property tests draw a quarter of their examples
# (tests/support/examples.py); the full suite draws them all.
FAST := not kafka and not cluster and not e2e and not slow
TEST_WORKERS ?= 2

test: venv jars
	LAKECDP_TEST_TIER=fast $(PY) -m pytest -n $(TEST_WORKERS) -m "$(FAST)" $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check lib tests bench jobs
	$(VENV)/bin/ruff format --check lib tests bench jobs
	$(VENV)/bin/mypy

# The full suite on the same two workers, one test file per worker at a time (--dist loadfile): a
# file's module-scoped fixtures are built once, on one worker; the demo world is built once per run
# (by the standalone cluster's spark-submit run, which goes first) and copied into each file that
# starts from it (tests/support/worlds.py). The heaviest files go
# first, in the order tests/conftest.py gives them (--no-loadscope-reorder keeps that order;
# xdist's own orders files by their number of tests, which left the one-test cluster file last).
test-all: venv jars kafka-broker
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

bench: venv jars kafka-broker
	$(PY) -m bench.run_all $(BENCH_ARGS)

clean-warehouse:
	rm -rf warehouse
