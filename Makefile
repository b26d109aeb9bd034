# graftnet: set-up and everyday commands. Every target works from a fresh clone.
#   make venv   - .venv with graftnet installed (editable) and the dev tools
#   make data   - make sure Fashion-MNIST (and MNIST) are on disk
#   make test   - venv + data, then the test suite
#   make demo   - venv + data, then `graftnet demo`
#   make demo-budgets - the demo under its three training budgets, compared (runs/demo/budgets.md)
#   make bench  - the benchmarks in bench/
#   make bench-study - the Fashion A->B study: wall time with batched ensembles vs one run at a time
#   make bench-vgg - the notes' VGG16 workflow (30 + 30 epochs) against Keras, and the feature build vs predict
#   make bench-conv - the VGG16 feature build in float32 and bfloat16 against Keras predict; bf16 error, accuracy
#   make fuzz   - every importer on >= 1,000 damaged files each (minutes; not part of make test)
#   make pretrain-study - Hands-On ML ch. 11 exercise 10 over 10 seeds (pretraining vs scratch), CPU-heavy
#   make pretrain-label-study - every pretrained base vs scratch at 100/300/1,000 labels, 10 seeds (CPU-heavy)
#   make examples - every book companion (examples/book/) at full size; figures in examples/results/book/
#   make rank-validation - transferability ranking vs 10-seed studies (CPU-heavy; bench/results/)
#   make study-cnn - the Fashion A->B and MNIST 0-4->5-9 studies with CNN and MLP bases, compared (CPU-heavy)
#   make clean  - remove build outputs (keeps .venv, runs/ and models/)

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch goes in first, pinned: then `torch>=2.2,<3` is already met and pip pulls no multi-GB CUDA build.
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.graftnet-dev.stamp
PYTEST_WORKERS ?= 2
FASHION_APT_PACKAGE := dataset-fashion-mnist
APT_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq

# The project's shared data (MNIST, ...) when it sits beside the clone; a user's own setting wins.
ifneq ($(wildcard ../shared/data),)
GRAFTNET_DATA ?= $(abspath ../shared/data)
export GRAFTNET_DATA
endif

.PHONY: venv data demo demo-budgets test bench bench-vgg bench-study bench-conv fuzz clean pretrain-study pretrain-bases pretrain-label-study \
	examples rank-validation study-cnn

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || { echo "creating $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@$(PY) -c "import torch" 2>/dev/null || { echo "installing $(TORCH_PIN)"; $(PY) -m pip install -q $(TORCH_PIN); }
	@echo "installing graftnet (editable) with the dev extras"
	@$(PY) -m pip install -q -e '.[dev]'
	@touch $@

data: venv
	@if ! $(PY) scripts/ensure_data.py --find-only fashion_mnist >/dev/null 2>&1 \
		&& [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Fashion-MNIST: installing the Debian package $(FASHION_APT_PACKAGE)"; \
		$(APT_INSTALL) $(FASHION_APT_PACKAGE) \
		|| { apt-get update -qq && $(APT_INSTALL) $(FASHION_APT_PACKAGE); } \
		|| echo "apt-get could not install $(FASHION_APT_PACKAGE); downloading instead"; \
	fi
	@$(PY) scripts/ensure_data.py fashion_mnist mnist

demo: venv data
	$(VENV)/bin/graftnet demo

# The demo under equal epochs, equal training FLOPs and to convergence (about 20 min on 2 idle cores).
demo-budgets: venv data
	nice -n 10 $(VENV)/bin/graftnet demo --budget all --out runs/demo

test: venv data
	$(PY) -m pytest -n $(PYTEST_WORKERS) -q

# Keras (TensorFlow backend) for the comparisons lives in its own venv, run in a subprocess.
BENCH_VENV ?= .venv-bench
BENCH_ARGS ?=
bench: venv data
	@if [ ! -x $(BENCH_VENV)/bin/python ]; then \
		echo "creating $(BENCH_VENV) with tensorflow-cpu for the Keras comparisons"; \
		$(PYTHON) -m venv $(BENCH_VENV) && $(BENCH_VENV)/bin/pip install -q tensorflow-cpu==2.21.0 keras \
		|| echo "tensorflow-cpu not installed: the Keras rows will say so"; \
	fi
	GRAFTNET_BENCH_KERAS_PYTHON=$(abspath $(BENCH_VENV))/bin/python $(PY) bench/run.py $(BENCH_ARGS)

# The VGG16 workflow of issue 11 (item 3): graftnet vs Keras fit per stage; writes bench/results/vgg-workflow.json
BENCH_VGG_ARGS ?= --threads 1 --images 64
bench-vgg: venv
	@if [ ! -x $(BENCH_VENV)/bin/python ]; then \
		echo "creating $(BENCH_VENV) with tensorflow-cpu for the Keras comparisons"; \
		$(PYTHON) -m venv $(BENCH_VENV) && $(BENCH_VENV)/bin/pip install -q tensorflow-cpu==2.21.0 keras; \
	fi
	GRAFTNET_BENCH_KERAS_PYTHON=$(abspath $(BENCH_VENV))/bin/python nice -n 10 $(PY) bench/vgg_workflow.py \
		$(BENCH_VGG_ARGS) --json bench/results/vgg-workflow.json

# Issue 17 (item 4): the Fashion A -> B study's wall time (model A cold, runs, report), the seeds of
# each variant as batched ensembles against one run at a time, run by run compared; run it on an idle machine.
bench-study: venv data
	$(PY) bench/study_wall.py --json bench/results/study-wall.json

# Issue 17 item 3: FeatureCache build (float32, bfloat16) vs Keras predict on VGG16 at 150x150, the
# bfloat16 features' error and the downstream accuracy; writes bench/results/conv-build.json (~10 min, 1 core)
BENCH_CONV_ARGS ?= --threads 1
bench-conv: venv
	@if [ ! -x $(BENCH_VENV)/bin/python ]; then \
		echo "creating $(BENCH_VENV) with tensorflow-cpu for the Keras comparisons"; \
		$(PYTHON) -m venv $(BENCH_VENV) && $(BENCH_VENV)/bin/pip install -q tensorflow-cpu==2.21.0 keras; \
	fi
	GRAFTNET_BENCH_KERAS_PYTHON=$(abspath $(BENCH_VENV))/bin/python nice -n 10 $(PY) bench/conv_build.py \
		$(BENCH_CONV_ARGS) --json bench/results/conv-build.json

# Mutated and truncated copies of the seed corpus (fuzz/corpus) fed to every importer, offline:
# exits 1 on any crash, hang, unclear message or write. FUZZ_ARGS="--cases 5000 --seed 1" for more.
FUZZ_ARGS ?= --cases 1000 --workers $(PYTEST_WORKERS)
fuzz: venv
	PYTHONPATH=src $(PY) fuzz/run.py $(FUZZ_ARGS)

# Exercise 10 of Hands-On ML ch. 11 (same-digit pairs, a greedy autoencoder and SimCLR against
# scratch) over 10 seeds; resumes from its results.json. PRETRAIN_SIZE=notebook runs the notebook's epochs.
# The notebook's size: PRETRAIN_SIZE=notebook PRETRAIN_JOBS=2 PRETRAIN_METHODS=scratch,siamese-frozen,autoencoder-frozen
# PRETRAIN_CHECKPOINTS=1,3,10,30 (about 10 CPU-minutes per seed on an idle core).
PRETRAIN_SIZE ?= small
PRETRAIN_SEEDS ?= 10
PRETRAIN_JOBS ?= 1
PRETRAIN_METHODS ?= scratch,siamese-frozen,autoencoder-frozen,contrastive-frozen
PRETRAIN_CHECKPOINTS ?=
pretrain-study: venv data
	nice -n 10 $(PY) examples/pretrain_exercise10.py --size $(PRETRAIN_SIZE) --seeds $(PRETRAIN_SEEDS) \
		--jobs $(PRETRAIN_JOBS) --methods $(PRETRAIN_METHODS) --checkpoints "$(PRETRAIN_CHECKPOINTS)" \
		--out examples/results/pretrain-exercise10$(if $(filter-out small,$(PRETRAIN_SIZE)),-$(PRETRAIN_SIZE))
# The bases of the label-budget study, each pretrained once on MNIST's 55,000 training images
# (runs/pretrain-<method>/model), and the supervised one (runs/mnist-split1-supervised/model).
pretrain-bases: venv data
	for method in autoencoder denoising rbm discriminate contrastive siamese; do \
		nice -n 10 $(PY) -m graftnet pretrain examples/recipes/pretrain_mnist_$$method.toml --threads 1 --quiet || exit 1; \
	done
	OMP_NUM_THREADS=1 nice -n 10 $(PY) -m graftnet train examples/recipes/mnist_split1_supervised.toml -q
	run=$$(ls -td runs/mnist_split1_supervised-*/ | head -1) && rm -rf runs/mnist-split1-supervised && \
		mkdir -p runs/mnist-split1-supervised && cp -r $$run/model runs/mnist-split1-supervised/model
# One `graftnet study` per label budget, every base in each; the comparison in examples/results/pretrain-label-study/
pretrain-label-study: pretrain-bases
	nice -n 10 $(PY) examples/pretrain_study.py --run --budgets 100,300,1000
# Sorted order runs ch11_1_4 (which saves the model the 11.2 companions reuse) before them.
EXAMPLE_ARGS ?=
examples: venv data
	@mkdir -p examples/results/book
	@set -o pipefail; cd examples/book && for script in $$(ls ch*.py | sort); do \
		echo "== $$script"; \
		PYTHONPATH=$(abspath src) nice -n 10 $(abspath $(PY)) $$script $(EXAMPLE_ARGS) \
			| tee ../results/book/$${script%.py}.log || exit 1; \
	done
# LogME / LEEP / H-score rankings against studies over 10 seeds, Fashion A->B and MNIST 0-4 -> 5-9
RANK_ARGS ?=
rank-validation: venv data
	nice -n 10 $(PY) bench/rank_validation.py $(RANK_ARGS)

# The MLP and CNN studies of both book tasks (10 seeds each; resumable), then MLP vs CNN side by side.
# The MLP Fashion study's model A is the demo's (~/.cache/graftnet/demo); MNIST's label-budget curve is off.
STUDY_OUT ?= examples/results
STUDY := nice -n 10 $(VENV)/bin/graftnet study --threads 1 --quiet
study-cnn: venv data
	$(STUDY) --recipe examples/recipes/study_fashion_ab.toml --base-cache ~/.cache/graftnet/demo --out $(STUDY_OUT)/study-fashion-ab
	$(STUDY) --recipe examples/recipes/study_fashion_ab_cnn.toml --out $(STUDY_OUT)/study-fashion-ab-cnn
	$(STUDY) --compare $(STUDY_OUT)/study-fashion-ab $(STUDY_OUT)/study-fashion-ab-cnn --labels MLP,CNN --out $(STUDY_OUT)/fashion-ab-mlp-vs-cnn
	$(STUDY) --recipe examples/recipes/study_mnist_0-4_to_5-9.toml --budgets "" --out $(STUDY_OUT)/study-mnist-0-4-to-5-9-mlp
	$(STUDY) --recipe examples/recipes/study_mnist_0-4_to_5-9_cnn.toml --out $(STUDY_OUT)/study-mnist-0-4-to-5-9-cnn
	$(STUDY) --compare $(STUDY_OUT)/study-mnist-0-4-to-5-9-mlp $(STUDY_OUT)/study-mnist-0-4-to-5-9-cnn --labels MLP,CNN --out $(STUDY_OUT)/mnist-0-4-to-5-9-mlp-vs-cnn

clean:
	rm -rf build dist src/*.egg-info .pytest_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -print0 | xargs -0 rm -rf
