# Two entry points: `make quickstart` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export RSBENCH_SHARED_DATA ?= $(abspath ../shared/data)

.PHONY: install browser engines engines-stop quickstart test clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The report tests open the HTML in a real headless browser: Debian's chromium (needs root/apt).
browser:
	@command -v chromium >/dev/null 2>&1 || { echo "installing chromium (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# The engine tests (pytest -m engines) run against a real PostgreSQL and a one-node CPU-only SLURM cluster
# (munge, slurmctld, slurmd) on localhost: .ci/engines.sh installs them with apt-get (root) when missing and
# starts what is not running; `make test` stops what it started when pytest ends.
engines:
	@.ci/engines.sh start >/dev/null

engines-stop:
	@.ci/engines.sh stop

quickstart: $(STAMP)
	$(BIN)/rsbench quickstart --out quickstart-output

# Lint first (ruff, rules in pyproject.toml): a lint or format error fails the target before pytest runs.
# The real-data suite must never skip silently: a missing data folder is a failure,
# and so is pytest's exit code 5 (no tests collected). The engines must be there too (RSBENCH_ENGINES=required:
# an engine test fails, never skips, when one is missing).
test: $(STAMP) browser
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	@test -d "$(RSBENCH_SHARED_DATA)/rasters" || { echo "error: real test data not found at RSBENCH_SHARED_DATA=$(RSBENCH_SHARED_DATA)" >&2; exit 1; }
	@.ci/engines.sh start >/dev/null
	@RSBENCH_ENGINES=required $(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; .ci/engines.sh stop; \
	  if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

clean:
	rm -rf $(VENV) quickstart-output .pytest_cache
