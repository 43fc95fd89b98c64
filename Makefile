# Two entry points for a fresh clone (only Python >= 3.11 and make needed):
#   make run    set up .venv if needed, then run the default study (snakemake --cores all:
#               every CPU this process may use; CORES=N for fewer)
#   make test   set up .venv if needed, then run the whole test suite
# and, while working: make test-fast, the unit tests only (no Snakemake run, cluster or browser)
PYTHON ?= python3
VENV ?= .venv
CORES ?= all
CONFIG ?=
SNAKEMAKE_ARGS ?=
PYTEST_ARGS ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast bench lint format report clean-results

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required, found " + sys.version.split()[0] + "; set PYTHON=python3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/snakemake --profile profiles/local --cores $(CORES) $(if $(CONFIG),--configfile $(CONFIG)) $(SNAKEMAKE_ARGS)

report: $(STAMP)
	$(BIN)/snakemake --cores 1 $(if $(CONFIG),--configfile $(CONFIG)) --report report.html

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

FAST_MARKERS := not integration and not slow and not slurm and not peft and not browser and not tutorial and not gpu
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "$(FAST_MARKERS)" $(PYTEST_ARGS)

# Benchmarks (not part of the tests): needs the optional loralib/PEFT extra. BENCH_ARGS picks
# suites, e.g. make bench BENCH_ARGS="step memory".
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src workflow tests benchmarks
	$(BIN)/ruff format --check src workflow tests benchmarks
	$(BIN)/snakefmt --check Snakefile workflow/Snakefile workflow/rules
	$(BIN)/snakemake --lint

format: $(STAMP)
	$(BIN)/ruff format src workflow tests benchmarks
	$(BIN)/ruff check --fix src workflow tests benchmarks
	$(BIN)/snakefmt Snakefile workflow/Snakefile workflow/rules

clean-results:
	rm -rf results .snakemake
