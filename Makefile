# The README's two commands: `make app` (set up, create the demo data, start the workbench)
# and `make test` (set up, run the whole test suite). Everything else here serves those two.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WORKSPACE ?= workspace
# The workbench listens on this machine only. HOST=0.0.0.0 (or an interface address) serves it to the
# network: then it asks for the password in $RCMAE_PASSWORD / $RCMAE_PASSWORD_FILE (README, Security).
HOST ?= 127.0.0.1
PORT ?= 8501

.PHONY: app test setup browser lint bench

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements.txt
	$(BIN)/pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

setup: $(STAMP)

# Debian's Chromium for the browser test (never `playwright install`: it downloads a browser).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: run 'sudo apt-get install chromium' for the browser test (it is skipped until then)"; fi; }

app: $(STAMP)
	$(BIN)/rcmae demo-data $(WORKSPACE)/data/quick-demo --train-per-id 20 --test-per-id 10 --if-missing --quiet \
		--recording $(WORKSPACE)/recordings/demo_fan_id_00.wav
	$(BIN)/rcmae demo-data $(WORKSPACE)/data/demo --if-missing
	@echo "rcmae workbench: open http://$(HOST):$(PORT) (Ctrl+C stops it)"
	RCMAE_WORKSPACE=$(WORKSPACE) $(BIN)/streamlit run app/main.py --server.address $(HOST) --server.port $(PORT) --server.headless true --browser.gatherUsageStats false

test: $(STAMP) browser
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q
	# The numeric-equality tests once more on the SSE4.2 kernels every x86-64 CPU runs (torch's MKL), which
	# differ from this CPU's own: a tolerance that holds only on one kernel fails here (docs/DESIGN.md).
	MKL_ENABLE_INSTRUCTIONS=SSE4_2 $(BIN)/python -m pytest -q -m numeric -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check rcmae app pages tests bench
	$(BIN)/lint-imports --no-cache

bench: $(STAMP)
	$(BIN)/python bench/run_all.py
