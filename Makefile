# stackpatch: `make demo` tries the whole routine on a local sandbox; `make test` runs the test suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SANDBOX_DIR ?= $(CURDIR)/.sandbox

.PHONY: setup venv demo test test-fast bench clean-sandbox docs report-png crash-matrix

# the system packages first (python3-venv among them: Debian's python3 cannot make a venv without it)
setup:
	bash scripts/setup-system.sh
	@$(MAKE) --no-print-directory venv

venv: $(BIN)/stackpatch

$(BIN)/stackpatch: pyproject.toml
	@$(PY) -c 'import ensurepip, venv' 2>/dev/null || { echo "make: $(PY) cannot create a venv: run 'make setup' as root (it installs python3-venv)" >&2; exit 2; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip >/dev/null 2>&1 || true
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

demo: setup
	bash scripts/demo.sh "$(SANDBOX_DIR)"

# two phases (scripts/test.sh): in parallel, then alone the tests that measure traffic; the slowest tests
# of each are listed at its end (--durations): where the suite's time goes
test: setup
	bash scripts/test.sh $(PYTEST_ARGS)

test-fast: venv
	$(BIN)/python -m pytest -q -m "not docker and not browser" $(PYTEST_ARGS)

# the benchmark's own scripts checked end to end on a sandbox fork and a 3-node sandbox (marker `bench`), then the benchmark
bench: setup
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m pytest -q -p no:cacheprovider -m bench
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

docs: venv
	$(BIN)/python -m stackpatch.config > docs/config.md

# docs/report.png: Chromium's screenshot of the report page of a real ship on a sandbox fork (the browser test)
report-png: setup
	STACKPATCH_REPORT_PNG=$(CURDIR)/docs/report.png $(BIN)/python -m pytest -q -p no:cacheprovider \
		tests/test_report_browser.py -k real_ship

clean-sandbox: venv
	$(BIN)/stackpatch sandbox down --dir "$(SANDBOX_DIR)" --all

# kill -9 at every journal boundary (in-memory target) and at one point per step kind (sandbox), then
# resume / abort: rewrites docs/crash-matrix.md from the outcomes
crash-matrix: setup
	SP_WRITE_CRASH_MATRIX=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_crash_matrix.py \
		tests/test_crash_sandbox.py $(PYTEST_ARGS)
