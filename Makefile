# Quick start: `make serve` (set up and serve the default model), `make test` (set up and run the tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export BENTOML_DO_NOT_TRACK := True
export RAY_USAGE_STATS_ENABLED := 0
HOST ?= 127.0.0.1
PORT ?= 3000

.PHONY: serve test test-slow lint image image-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The serving path has no torch.
$(VENV)/.serve: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[serve]'
	touch $@

# torch==2.13.0 first: the local CPU build (a bare `torch` would pull several GB of CUDA).
$(VENV)/.all: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[serve,train,export,dev,ray,client]'
	touch $@ $(VENV)/.serve

serve: $(VENV)/.serve
	$(BIN)/soundarc serve --host $(HOST) --port $(PORT)

test: $(VENV)/.all
	$(BIN)/python -m pytest -q

test-slow: $(VENV)/.all
	$(BIN)/python -m pytest -q -m slow

# The service image from deploy/Dockerfile (deploy/image.sh: docker where an engine runs, else
# buildah; VARIANT=gpu for the CUDA build).
image:
	deploy/image.sh

# Build with buildah (cached layers make a rebuild quick), then serve a real clip from inside the image.
image-test:
	ENGINE=buildah deploy/image.sh
	deploy/image_test.sh

lint: $(VENV)/.all
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
