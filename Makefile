# Everything a developer or CI runs. `make test` from a fresh clone sets itself up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: help venv protos protos-check lint test test-fast demo small-model serve-embedder clean

help:
	@echo "make demo          set up, start the embedder on the bundled model, run example queries"
	@echo "make test          set up, lint, check generated code, run every test"
	@echo "make test-fast     tests without the slow exporter parity suite"
	@echo "make protos        regenerate Python code from protos/"
	@echo "make small-model   retrain and re-export the bundled small model (~7 min on 2 cores)"
	@echo "make serve-embedder  run the embedder in the foreground (EMBEDDER_* settings apply)"

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[cpu,export,dev]'
	touch $@

venv: $(STAMP)

protos: $(STAMP)
	PYTHON=$(BIN)/python scripts/gen_protos.sh

protos-check: protos
	@git diff --exit-code -- imagesearch/embedder imagesearch/search \
		|| (echo "generated code is stale: run 'make protos' and commit" && exit 1)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint protos-check
	$(BIN)/python -m pytest -q -ra

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -ra -m "not slow"

demo: $(STAMP)
	$(BIN)/python -m imagesearch.demo

small-model: $(STAMP)
	$(BIN)/python -m embedder_service.export.small_model

serve-embedder: $(STAMP)
	EMBEDDER_LOG_FORMAT=$${EMBEDDER_LOG_FORMAT:-text} $(BIN)/imagesearch-embedder

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
