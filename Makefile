# hybnn — set-up, demo, tests. Every target builds .venv first if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED_DATA := $(abspath ../shared/data)
ifneq ($(wildcard $(SHARED_DATA)/mnist),)
export HYBNN_DATA ?= $(SHARED_DATA)
endif
export FLWR_TELEMETRY_ENABLED := 0
export FLWR_DISABLE_UPDATE_CHECK := 1
# `flwr run .` (docs/federated.md): the local SuperLink Flower starts would otherwise install the
# app's dependencies (torch included) into a new environment for every run; .venv has them.
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1

.PHONY: setup demo results test lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[train,dev]' torch==2.13.0
	touch $@

# The main job, end to end on real MNIST, in a few minutes: 3 VAE epochs (the paper uses 20),
# 30 BNN epochs per task (the paper: 100). Prints one accuracy line per digit-pair task.
DEMO := runs/demo
demo: setup
	$(BIN)/hybnn pretrain-vae --epochs 3 --threads 2 --seed 0 --out $(DEMO)/vae.pt
	$(BIN)/hybnn extract --vae $(DEMO)/vae.pt --out $(DEMO)/codes.h5
	@for t in 1 2 3 4 5; do \
	  $(BIN)/hybnn train-bnn --codes $(DEMO)/codes.h5 --task $$t --epochs 30 --seed 0 \
	    --out $(DEMO)/bnn-task$$t.pt || exit 1; \
	done

# Every measured result in benchmarks/results/, then every number quoted in README.md and docs/
# regenerated from those files (hours on two cores; stages are cached in $(STUDY), so an
# interrupted run resumes).
STUDY := runs/study
results: setup
	$(BIN)/hybnn reproduce --threads 1 --vae-epochs 10 --no-fashion --work $(STUDY)
	$(BIN)/python benchmarks/federated.py --work $(STUDY)
	$(BIN)/python benchmarks/exactness.py --work $(STUDY)
	$(BIN)/hybnn pretrain-vae --dataset fashion-mnist --epochs 20 --threads 1 --seed 0 --out runs/vae-fashion.pt
	$(BIN)/hybnn extract --vae runs/vae-fashion.pt --dataset mnist --out runs/codes-fashion-on-mnist.h5
	$(BIN)/python benchmarks/continual.py --codes mnist=$(STUDY)/codes-mnist-1d59759d9ea3f475.h5 --codes fashion=runs/codes-fashion-on-mnist.h5
	$(BIN)/hybnn bench --out benchmarks/results/bench.json --plot benchmarks/results/speedup.png
	$(BIN)/python benchmarks/server_scale.py scaling
	$(BIN)/python benchmarks/server_scale.py union
	$(BIN)/hybnn report --docs

test: setup
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check src kernels tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
