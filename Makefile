# kdflow: `make pipeline` runs the whole pipeline on the bundled data, `make test` runs the tests.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export PREFECT_SERVER_ANALYTICS_ENABLED := false
# deploy and worker talk to the server `make server` runs, unless PREFECT_API_URL names another
LOCAL_API = PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:4200/api}
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup pipeline test lint clean server deploy worker flow serve update land-demo

setup: $(STAMP)

# torch and torchvision first, pinned: these exact versions are the ones that work together here
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; kdflow needs Python 3.11 (set PYTHON=...)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

pipeline: setup
	$(BIN)/dvc repro

test: setup
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check kdcore flows tasks tests benchmarks
	$(BIN)/ruff format --check kdcore flows tasks tests benchmarks

clean:
	rm -rf .kdflow

# --- Prefect (settings in prefect.toml: server on 127.0.0.1:4200, home in .prefect/) -------------
server: setup
	$(BIN)/prefect server start --host 127.0.0.1 --port 4200

deploy: setup
	$(LOCAL_API) $(BIN)/prefect work-pool inspect kdflow-process >/dev/null 2>&1 || \
		$(LOCAL_API) $(BIN)/prefect work-pool create kdflow-process --type process
	$(LOCAL_API) $(BIN)/prefect --no-prompt deploy --all

worker: setup
	$(LOCAL_API) $(BIN)/prefect worker start --pool kdflow-process

flow: setup
	$(BIN)/python -m flows.pipeline

serve: setup
	$(BIN)/python -m flows.serve

# --- lifelong updates: land demo batches of rotated digits, then learn the next one ------------------
land-demo: setup
	$(BIN)/dvc repro prepare
	$(BIN)/python -m kdcore.lifelong.demo --corrupt

update: setup
	$(BIN)/python -m flows.update
