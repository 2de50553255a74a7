# EntangleCodec — every target does its own set-up on a fresh machine.
#   make demo   install what is missing, then speech, music, a sound and a mixture through the bundled
#               model beside Codec2 700C and Opus 6 kbps -> demo_out/index.html (path printed last)
#   make bench  speed, memory and start-up (hyperfine) benchmarks -> reports/bench*.md
#   make test   install what is missing, then lint, type-check and run the test suite
#   make eval-real  build the real-speech test set if missing, then score the bundled model and the
#                   classical codecs on it -> reports/reconstruction-real.md (+ .csv, .json, PNGs);
#                   extra options through EVAL_REAL_ARGS, e.g. make eval-real EVAL_REAL_ARGS="--threads 2"
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
REAL_SPEECH ?= data/real-speech
EVAL_REAL_ARGS ?=

.PHONY: all install debian demo test lint typecheck bench eval-real clean

all: test

# Debian packages listed in requirements/debian.txt, installed only when running as root and missing.
debian:
	@pkgs=$$(grep -v '^\s*#' requirements/debian.txt | grep -v '^\s*$$' | tr '\n' ' '); \
	missing=""; for p in $$pkgs; do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "warning: missing Debian packages (not root, not installing):$$missing"; fi; \
	fi

$(STAMP): pyproject.toml requirements/debian.txt
	@$(MAKE) --no-print-directory debian
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip "setuptools<81" wheel
	$(PIP) install -q "torch==$(TORCH_VERSION)"
	$(PIP) install -q "setuptools<81" -e ".[all,dev]"
	@touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: $(STAMP)
	@$(MAKE) --no-print-directory debian
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q -x --durations=15

demo: $(STAMP)
	@$(MAKE) --no-print-directory debian
	$(VENV)/bin/entanglecodec demo --out demo_out

# torch would pick one thread per physical core (1 on this 2-vCPU machine); the targets are for every CPU
BENCH_THREADS ?= $(shell nproc)

bench: $(STAMP)
	@$(MAKE) --no-print-directory debian
	$(VENV)/bin/entanglecodec eval bench --out reports --threads $(BENCH_THREADS)
	$(VENV)/bin/entanglecodec eval bench-rss --out reports
	$(VENV)/bin/entanglecodec eval bench-startup --out reports

# Real recorded speech (test split): the bundled codec, Codec2 700C/1200/3200, Opus 6 kbps and the mel
# oracles in one run, Whisper WER/CER/insertions (originals' floor included), DNSMOS, F0, STOI, PESQ, ...
eval-real: $(STAMP)
	@$(MAKE) --no-print-directory debian
	@test -f $(REAL_SPEECH)/manifest.jsonl || $(VENV)/bin/entanglecodec data real-speech --out $(REAL_SPEECH)
	$(VENV)/bin/entanglecodec eval reconstruct --manifest $(REAL_SPEECH)/manifest.jsonl --split test \
	    --out reports/reconstruction-real $(EVAL_REAL_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache demo_out
