# Everything installs into .venv; a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install lint format test demo schema clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,export,tensorboard,wandb]'
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	$(BIN)/python -m pytest -q

schema: install
	$(BIN)/reid recipe schema > recipes/schema.json

# The main job end to end on built-in synthetic data: prepare -> train -> evaluate.
demo: install
	$(BIN)/reid recipe validate recipes/*.yaml
	$(BIN)/reid prepare synthetic --out data/synthetic --ids 200 --val-ids 10
	rm -rf runs/quickstart-demo
	$(BIN)/reid train recipes/quickstart.yaml --out runs/quickstart-demo
	$(BIN)/reid eval runs/quickstart-demo

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
