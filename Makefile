# Everything a fresh machine needs goes through the .venv stamp, so `make demo` and `make test`
# are the only two commands a newcomer types.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test browser lint typecheck synth check check-deployed bench-training bench-inference bench-sheets eval-sheets clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements.lock -e ".[training,infra,dev]"
	touch $(STAMP)

## The main job: the whole pipeline once on the local embedded runtime (moto), one JSON line out.
demo: $(STAMP)
	$(BIN)/tessera demo

## The tests: unit, integration (moto), infra (CDK assertions), end-to-end and the console in
## a real browser (Chromium, which `browser` installs when it is missing and apt can).
test: $(STAMP) browser
	$(BIN)/python -m pytest

## Debian's Chromium for the console's browser tests (Playwright drives it; it downloads none).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || \
		echo "no chromium and no root to install it: the browser tests will skip"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy shared/tessera shared/tessera_dev functions training infra tests

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

## cdk synth with real local bundling, cdk-nag and cfn-lint (no Docker needed).
synth: $(STAMP) node_modules/.installed
	bash infra/check.sh

## What `make synth` staged, run for real: the Lambda bundles under CPython 3.12, the ASL.
check-deployed: $(STAMP) node_modules/.installed
	@# The training-image check runs as a non-root user, who needs a Python 3.11 outside /root.
	@/usr/bin/python3.11 -c "import ensurepip, venv" 2>/dev/null || \
		(apt-get update -qq && apt-get install -y -qq python3.11-venv)
	$(BIN)/python -m pytest -m deployed tests/deployed

check: lint test synth check-deployed

bench-training: $(STAMP)
	$(BIN)/tessera bench training

bench-inference: $(STAMP)
	$(BIN)/tessera bench inference

bench-sheets: $(STAMP)
	$(BIN)/tessera bench sheets

eval-sheets: $(STAMP)
	$(BIN)/tessera eval sheets

clean:
	rm -rf $(VENV) node_modules cdk.out cdk.out.gpu build .pytest_cache .mypy_cache .ruff_cache
