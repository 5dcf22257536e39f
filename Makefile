# dino-speech: `make demo` runs the whole mission on the built-in demo corpus; `make test` runs the test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DATA ?= data/demo
DEMO_RUN ?= runs/demo
# The recipes' seed (weights, crops, augmentation, batch order); benchmarks/demo_seeds.py sweeps it.
SEED ?= 0
PYTEST_ARGS ?=

.PHONY: venv sysdeps corpus demo test test-fast lint format bench clean

venv: $(STAMP)

# Reinstall when the dependency list changes; pip's cache makes a re-run cheap.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# Speech synthesisers for the demo corpus (Debian packages). Without root, see README "Without root".
sysdeps:
	@if command -v espeak-ng >/dev/null && command -v flite >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		(apt-get install -y -qq espeak-ng flite >/dev/null 2>&1 || \
		 (apt-get update -qq >/dev/null && apt-get install -y -qq espeak-ng flite >/dev/null)); \
	else echo "espeak-ng/flite missing: run 'sudo apt-get install espeak-ng flite' (or see README, Without root)"; fi

corpus: venv sysdeps
	$(VENV)/bin/dino-speech demo-corpus --out $(DEMO_DATA)

# The whole mission on the demo corpus: corpus (cached), DINO, pseudo-labels, evaluation and report.
# Each step resumes or reuses what an interrupted earlier run left (Ctrl-C leaves checkpoints).
demo: corpus
	$(PY) train.py dino --config configs/demo.yaml --resume data.train=$(DEMO_DATA)/train.csv \
		data.augment.musan_root=$(DEMO_DATA)/musan_standin eval.trials=$(DEMO_DATA)/trials_real_new.txt \
		eval.audio_root=$(DEMO_DATA) output_dir=$(DEMO_RUN)/dino seed=$(SEED)
	$(PY) train.py pseudo-label --config configs/pseudo_label_demo.yaml --resume --init $(DEMO_RUN)/dino/final \
		data.train=$(DEMO_DATA)/train.csv data.augment.musan_root=$(DEMO_DATA)/musan_standin \
		eval.trials=$(DEMO_DATA)/trials_real_new.txt eval.audio_root=$(DEMO_DATA) output_dir=$(DEMO_RUN)/pseudo_label seed=$(SEED)
	$(VENV)/bin/dino-speech demo-report --data $(DEMO_DATA) --runs $(DEMO_RUN)

# pytest exits 5 when it collects no test: not a failure of the suite.
test: venv sysdeps
	$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then rc=0; fi; exit $$rc

test-fast: venv
	$(PY) -m pytest -q -m "not slow" -x $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then rc=0; fi; exit $$rc

# ruff: the linter and the formatter's check (`make format` applies the formatter).
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: venv
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
