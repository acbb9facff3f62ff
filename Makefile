# Everything a developer or CI runs. `make test` from a fresh clone sets itself up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
TS := clients/typescript
TS_STAMP := $(TS)/node_modules/.installed-$(shell cat $(TS)/package-lock.json | sha1sum | cut -c1-12)
BUF := $(TS)/node_modules/.bin/buf

.PHONY: help venv protos protos-check api-check docs docs-check lint deploy-check image-venv \
	test test-fast demo small-model serve-embedder serve-search clean

help:
	@echo "make demo          set up, start both services on the embedded defaults, index, search"
	@echo "make test          set up, lint, check generated code, run every test"
	@echo "make test-fast     tests without the slow exporter parity suite"
	@echo "make protos        regenerate Python code from protos/"
	@echo "make api-check     buf lint, and buf breaking against main (or the previous commit on main)"
	@echo "make docs          regenerate docs/api.md from the protos"
	@echo "make deploy-check  lint the Dockerfiles; render, validate and policy-check every overlay"
	@echo "make small-model   retrain and re-export the bundled small model (~7 min on 2 cores)"
	@echo "make serve-embedder  run the embedder in the foreground (EMBEDDER_* settings apply)"
	@echo "make serve-search    run the search service in the foreground (SEARCH_* settings)"

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[cpu,search,export,dev]'
	touch $@

venv: $(STAMP)

# The TypeScript client's tools (buf, protoc-gen-es, tsc), as locked (every version in
# package.json is exact too). Not `npm ci`: npm 11 refuses this lock file for leaving out
# the other platforms' optional buf binaries, which it never writes into it.
$(TS_STAMP): $(TS)/package-lock.json
	cd $(TS) && npm install --no-audit --no-fund --loglevel=error
	touch $@

api-check: $(TS_STAMP)
	$(BUF) lint protos
	BUF=$(BUF) scripts/buf_breaking.sh

docs: $(STAMP)
	$(BIN)/python scripts/api_docs.py > docs/api.md

docs-check: docs
	@git diff --exit-code -- docs/api.md \
		|| (echo "docs/api.md is stale: run 'make docs' and commit" && exit 1)

protos: $(STAMP)
	PYTHON=$(BIN)/python scripts/gen_protos.sh

protos-check: protos
	@git diff --exit-code -- imagesearch/embedder imagesearch/search \
		|| (echo "generated code is stale: run 'make protos' and commit" && exit 1)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# hadolint, kubernetes-validate and checkov, from their own virtualenv (.venv-deploy).
deploy-check:
	scripts/deploy_check.sh

# The CPU embedder image's install, without Docker (tests/deploy runs it). Always redone: it
# must hold the current code; with its dependencies in place that takes seconds.
image-venv: $(STAMP)
	scripts/image_venv.sh

# Inside a loopback-only network namespace: the suite runs a real Milvus server, whose
# components listen on every interface (see scripts/loopback-only.sh).
test: lint protos-check api-check docs-check deploy-check image-venv $(TS_STAMP)
	scripts/loopback-only.sh $(BIN)/python -m pytest -q -ra

test-fast: $(STAMP)
	scripts/loopback-only.sh $(BIN)/python -m pytest -q -ra -m "not slow"

demo: $(STAMP)
	$(BIN)/python -m imagesearch.demo

small-model: $(STAMP)
	$(BIN)/python -m embedder_service.export.small_model

serve-embedder: $(STAMP)
	EMBEDDER_LOG_FORMAT=$${EMBEDDER_LOG_FORMAT:-text} $(BIN)/imagesearch-embedder

serve-search: $(STAMP)
	SEARCH_LOG_FORMAT=$${SEARCH_LOG_FORMAT:-text} $(BIN)/imagesearch-search

clean:
	rm -rf $(VENV) .venv-deploy .venv-image .mypy_cache .ruff_cache .pytest_cache build *.egg-info
