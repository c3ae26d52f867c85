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

# Every measured result in benchmarks/results/, each made by one command, then every number quoted
# in README.md and docs/ regenerated from those files (hours on two cores). An interrupted run
# resumes: the study's stages are cached in $(STUDY) under keys that hold the code version, and the
# scripts that write row by row keep the rows made by the same code with the same command.
#
# Result file           the line below that makes it
#   reproduction.json     hybnn reproduce --threads 1 --vae-epochs 10 --no-fashion --work $(STUDY)
#   federated.json        benchmarks/federated.py --work $(STUDY) --variants iid,bits,dirichlet
#   exactness.json        benchmarks/exactness.py --work $(STUDY)
#   feddp.json            benchmarks/fedpriv.py --study dp --codes $(ENC)/codes-mnist.h5 --noises 0,0.1,0.5,1,2
#   fedbyzantine.json     benchmarks/fedpriv.py --study byzantine --codes $(ENC)/codes-mnist.h5
#   continual.json        benchmarks/continual.py --codes mnist=$(ENC)/codes-mnist.h5
#   forgetproof.json      benchmarks/forgetproof.py --codes mnist=$(ENC)/codes-mnist.h5
#   fedtune.json          benchmarks/fedtune.py --codes $(ENC)/codes-mnist.h5 --jobs 2
#   fedscale.json         benchmarks/fedscale.py --codes $(ENC)/codes-mnist.h5 --rounds 100
#   bench.json            hybnn bench --out benchmarks/results/bench.json --plot benchmarks/results/speedup.png
#   gemm-efficiency.json  benchmarks/gemm_efficiency.py --sizes 256 512 1024 2048 4096 --pairs 30
#   e2e.json              benchmarks/e2e.py --bundle $(ENC)/bundle --venvs runs/e2e/venvs --threads 2
#   int8.json             benchmarks/int8.py --bundle $(ENC)/bundle --threads 2
#   ddp-scaling.json      benchmarks/server_scale.py scaling --epochs 1
#   union-encoder.json    benchmarks/server_scale.py union --vae-epochs 1 --bnn-epochs 10 --threads 1
#   folder-throughput.json  benchmarks/folder_throughput.py --vae $(ENC)/vae-mnist.pt --repeats 5
#   bits.json             benchmarks/bits.py --jobs 2
# The other lines make inputs. $(ENC) holds the two encoders the plan-run studies
# (benchmarks/plans/) and the DP and Byzantine studies use: MNIST and Fashion-MNIST VAEs, 10 epochs,
# seed 0 (the Fashion-MNIST VAE's codes of MNIST are the continual study's second encoder); and the
# deploy bundle of the end-to-end and int8 benchmarks: the MNIST encoder with six heads
# trained on its codes at the learning rates the reproduction study chose on validation.
STUDY := runs/study
ENC := runs/enc
results: setup
	$(BIN)/hybnn reproduce --threads 1 --vae-epochs 10 --no-fashion --work $(STUDY)
	$(BIN)/python benchmarks/federated.py --work $(STUDY) --variants iid,bits,dirichlet
	$(BIN)/python benchmarks/exactness.py --work $(STUDY)
	test -f $(ENC)/codes-mnist.h5 || { $(BIN)/hybnn pretrain-vae --epochs 10 --threads 1 --seed 0 \
	  --out $(ENC)/vae-mnist.pt && $(BIN)/hybnn extract --vae $(ENC)/vae-mnist.pt --threads 1 \
	  --out $(ENC)/codes-mnist.h5; }
	test -f $(ENC)/codes-fashion-on-mnist.h5 || { $(BIN)/hybnn pretrain-vae --dataset fashion-mnist \
	  --epochs 10 --threads 1 --seed 0 --out $(ENC)/vae-fashion.pt && $(BIN)/hybnn extract \
	  --vae $(ENC)/vae-fashion.pt --threads 1 --dataset mnist --out $(ENC)/codes-fashion-on-mnist.h5; }
	$(BIN)/python benchmarks/fedpriv.py --study dp --codes $(ENC)/codes-mnist.h5 --noises 0,0.1,0.5,1,2
	$(BIN)/python benchmarks/fedpriv.py --study byzantine --codes $(ENC)/codes-mnist.h5
	$(BIN)/python benchmarks/continual.py --codes mnist=$(ENC)/codes-mnist.h5 \
	  --codes fashion=$(ENC)/codes-fashion-on-mnist.h5 \
	  --note "fashion=Fashion-MNIST VAE, 10 epochs, seed 0, never saw a digit" --jobs 2
	$(BIN)/python benchmarks/forgetproof.py --codes mnist=$(ENC)/codes-mnist.h5 \
	  --codes fashion=$(ENC)/codes-fashion-on-mnist.h5 --jobs 1
	$(BIN)/python benchmarks/fedtune.py --codes $(ENC)/codes-mnist.h5 --jobs 2
	$(BIN)/python benchmarks/fedscale.py --codes $(ENC)/codes-mnist.h5 --rounds 100 --threads 1 \
	  --fed-options-from benchmarks/results/fedtune.json
	$(BIN)/hybnn bench --out benchmarks/results/bench.json --plot benchmarks/results/speedup.png
	$(BIN)/python benchmarks/gemm_efficiency.py --sizes 256 512 1024 2048 4096 --pairs 30
	$(BIN)/hybnn train-bnn --codes $(ENC)/codes-mnist.h5 --task 1 --epochs 100 --lr 0.003 --seed 0 --threads 1 --out $(ENC)/bnn-task1.pt
	$(BIN)/hybnn train-bnn --codes $(ENC)/codes-mnist.h5 --task 2 --epochs 100 --lr 0.03 --seed 0 --threads 1 --out $(ENC)/bnn-task2.pt
	$(BIN)/hybnn train-bnn --codes $(ENC)/codes-mnist.h5 --task 3 --epochs 100 --lr 0.03 --seed 0 --threads 1 --out $(ENC)/bnn-task3.pt
	$(BIN)/hybnn train-bnn --codes $(ENC)/codes-mnist.h5 --task 4 --epochs 100 --lr 0.003 --seed 0 --threads 1 --out $(ENC)/bnn-task4.pt
	$(BIN)/hybnn train-bnn --codes $(ENC)/codes-mnist.h5 --task 5 --epochs 100 --lr 0.01 --seed 0 --threads 1 --out $(ENC)/bnn-task5.pt
	$(BIN)/hybnn train-bnn --codes $(ENC)/codes-mnist.h5 --task all --hidden 512 --epochs 100 --lr 0.03 --seed 0 --threads 1 --out $(ENC)/bnn-all.pt
	$(BIN)/hybnn export $(ENC)/bnn-task1.pt $(ENC)/bnn-task2.pt $(ENC)/bnn-task3.pt $(ENC)/bnn-task4.pt \
	  $(ENC)/bnn-task5.pt $(ENC)/bnn-all.pt --vae $(ENC)/vae-mnist.pt --int8 --seed 0 --out $(ENC)/bundle
	$(BIN)/python benchmarks/e2e.py --bundle $(ENC)/bundle --venvs runs/e2e/venvs --threads 2
	$(BIN)/python benchmarks/int8.py --bundle $(ENC)/bundle --threads 2
	$(BIN)/python benchmarks/server_scale.py scaling --epochs 1
	$(BIN)/python benchmarks/server_scale.py union --vae-epochs 1 --bnn-epochs 10 --threads 1
	$(BIN)/python benchmarks/folder_throughput.py --vae $(ENC)/vae-mnist.pt --repeats 5
	$(BIN)/python benchmarks/bits.py --jobs 2
	$(BIN)/hybnn report --docs

test: setup
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check src kernels tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
