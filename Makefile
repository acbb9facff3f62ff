# Everything a developer or CI runs. `make test` from a fresh clone sets itself up, from the
# committed locks alone (requirements/*.txt, clients/typescript/package-lock.json).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
hash = $(shell cat $(1) | sha1sum | cut -c1-12)
# One virtualenv: the services' runtime first (make demo needs no more), the test and export
# tools added over it by the first target that needs them. Each stamp names what it installed.
RUNTIME := $(VENV)/.runtime-$(call hash,pyproject.toml requirements/build.txt requirements/runtime.txt)
TESTENV := $(VENV)/.test-$(call hash,pyproject.toml requirements/build.txt requirements/test.txt)
TS := clients/typescript
TS_STAMP := $(TS)/node_modules/.installed-$(call hash,$(TS)/package-lock.json $(TS)/package.json)
BUF := $(TS)/node_modules/.bin/buf

.PHONY: help venv venv-test protos protos-check api-check docs docs-check lint deploy-check \
	image-venv lock lock-upgrade lock-check test test-fast faults soak demo small-model second-model multilingual-tower \
	serve-embedder serve-search clean

help:
	@echo "make demo          set up, start both services on the embedded defaults, index, search"
	@echo "make test          set up, lint, check generated code and locks, run every test"
	@echo "make test-fast     tests without the slow exporter parity suite"
	@echo "make protos        regenerate Python code from protos/"
	@echo "make api-check     buf lint, and buf breaking against main (or the previous commit on main)"
	@echo "make docs          regenerate docs/api.md from the protos"
	@echo "make deploy-check  lint the Dockerfiles; render, validate and policy-check every overlay"
	@echo "make lock          re-lock after editing dependencies (keeps every pin that still fits)"
	@echo "make lock-upgrade  re-lock on purpose at the newest releases of everything"
	@echo "make lock-check    fail if a lock or requirements/ export is stale"
	@echo "make faults        the long fault-injection run (100 trials per backend, ~1 h)"
	@echo "make soak          10 minutes of mixed load on the embedded default"
	@echo "make small-model   retrain and re-export the bundled small model (~11.5 min on 2 idle cores)"
	@echo "make multilingual-tower  distil its multilingual text tower again (~1.5 min)"
	@echo "make second-model  retrain the second model, synthetic-clip-wide (~4.5 min)"
	@echo "make serve-embedder  run the embedder in the foreground (EMBEDDER_* settings apply)"
	@echo "make serve-search    run the search service in the foreground (SEARCH_* settings)"

$(RUNTIME):
	scripts/venv.sh $(VENV) --project requirements/runtime.txt
	touch $@

$(TESTENV):
	scripts/venv.sh $(VENV) --project requirements/test.txt
	touch $@

venv: $(RUNTIME)

venv-test: $(TESTENV)

lock: $(TESTENV)
	$(BIN)/python scripts/lock.py

lock-upgrade: $(TESTENV)
	$(BIN)/python scripts/lock.py --upgrade

lock-check: $(TESTENV)
	$(BIN)/python scripts/lock.py --check

# The TypeScript client's tools (buf, protoc-gen-es, tsc), exactly as locked. npm ci refuses a
# lock that does not match package.json; clients/typescript/.npmrc makes a dependency that
# needs a newer Node.js than package.json's engines an error.
$(TS_STAMP):
	cd $(TS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

api-check: $(TS_STAMP)
	$(BUF) lint protos
	BUF=$(BUF) scripts/buf_breaking.sh

docs: $(TESTENV)
	$(BIN)/python scripts/api_docs.py > docs/api.md

docs-check: docs
	@git diff --exit-code -- docs/api.md \
		|| (echo "docs/api.md is stale: run 'make docs' and commit" && exit 1)

protos: $(TESTENV)
	PYTHON=$(BIN)/python scripts/gen_protos.sh

protos-check: protos
	@git diff --exit-code -- imagesearch/embedder imagesearch/search \
		|| (echo "generated code is stale: run 'make protos' and commit" && exit 1)

lint: $(TESTENV)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# hadolint, kubernetes-validate and checkov, from their own virtualenv (.venv-deploy).
deploy-check:
	scripts/deploy_check.sh

# The CPU embedder image's install, without Docker (tests/deploy runs it). Always redone: it
# must hold the current code; with its dependencies in place that takes seconds.
image-venv:
	scripts/image_venv.sh

# Inside a loopback-only network namespace: the suite runs a real Milvus server, whose
# components listen on every interface (see scripts/loopback-only.sh).
test: lint lock-check protos-check api-check docs-check deploy-check image-venv $(TS_STAMP)
	scripts/loopback-only.sh $(BIN)/python -m pytest -q -ra

test-fast: $(TESTENV)
	scripts/loopback-only.sh $(BIN)/python -m pytest -q -ra -m "not slow"

# Results go to bench/RESULTS.md (appended; commit them with the command).
faults: $(TESTENV)
	scripts/loopback-only.sh $(BIN)/python -m tests.faults --trials 100 --report bench/RESULTS.md

soak: $(TESTENV)
	$(BIN)/python -m bench.soak --minutes 10 --concurrency 32 --report bench/RESULTS.md

demo: $(RUNTIME)
	$(BIN)/python -m imagesearch.demo

# The export rewrites the bundle, so the multilingual tower is distilled again from the new
# English tower (its space has changed).
small-model: $(TESTENV)
	$(BIN)/python -m embedder_service.export.small_model
	$(MAKE) multilingual-tower

# A second model in another space (96 dimensions, 48 px), for serving several models at once.
second-model: $(TESTENV)
	$(BIN)/python -m embedder_service.export.small_model --variant wide

multilingual-tower: $(TESTENV)
	$(BIN)/python -m embedder_service.export.multilingual

serve-embedder: $(RUNTIME)
	EMBEDDER_LOG_FORMAT=$${EMBEDDER_LOG_FORMAT:-text} $(BIN)/imagesearch-embedder

serve-search: $(RUNTIME)
	SEARCH_LOG_FORMAT=$${SEARCH_LOG_FORMAT:-text} $(BIN)/imagesearch-search

clean:
	rm -rf $(VENV) .venv-deploy .venv-image .mypy_cache .ruff_cache .pytest_cache build *.egg-info
