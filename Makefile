# The two commands of the README: `make demo` and `make test`. Both set up .venv/ first.
.PHONY: setup demo test lint services openapi bench-graders bench-serving bench-quality bench-overhead bench-distributed bench-load

VENV := .venv
BIN := $(VENV)/bin

setup:
	@bash scripts/setup.sh

services:
	@bash scripts/services.sh

demo: setup
	$(BIN)/openrft demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -q -p no:cacheprovider tests/test_import_rules.py  # the import table of docs/DESIGN.md

# The suite on every core (pytest-xdist; tests/conftest.py says how tests share services and stay apart).
# TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= auto
test: setup services lint
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup

openapi: setup
	$(BIN)/python -m app.openapi_export openapi.yaml
	$(BIN)/python -m app.options_doc docs/options.md
	$(BIN)/python -m openrft.cli_doc docs/cli.md

bench-graders: setup
	$(BIN)/python -m bench.graders
bench-serving: setup
	$(BIN)/python -m bench.serving
QUALITY_BUDGET ?= user
bench-quality: setup
	$(BIN)/python -m bench.quality --budget $(QUALITY_BUDGET)
bench-overhead: setup
	$(BIN)/python -m bench.overhead
bench-distributed: setup
	$(BIN)/python -m bench.distributed
bench-load: setup services
	$(BIN)/python -m bench.load
