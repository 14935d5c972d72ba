# Two commands for a fresh clone: `make demo` (the main job) and `make test`.
# Each creates .venv on first use and reuses it afterwards (re-installed when
# pyproject.toml changes).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Use the local data mirror beside the checkout when the caller has not chosen one.
MEDDX_DATA_MIRROR ?= $(abspath $(wildcard ../shared/data))
export MEDDX_DATA_MIRROR

DEMO_RUN := runs/demo-breastmnist

.PHONY: demo test venv clean system-deps

# Debian packages for real programs the tests drive: Chromium renders the HTML report.
CHROMIUM := $(shell command -v chromium || command -v chromium-browser || command -v google-chrome)

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/meddx info
	$(BIN)/meddx data info breastmnist
	$(BIN)/meddx train breastmnist --model cnn-small --epochs 40 --seed 0 --out $(DEMO_RUN) --no-progress
	$(BIN)/meddx evaluate $(DEMO_RUN) breastmnist --split test --out $(DEMO_RUN)/evaluation --record
	$(BIN)/meddx models register $(DEMO_RUN)

system-deps:
ifeq ($(CHROMIUM),)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium (renders the validation report in the tests)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			chromium fonts-dejavu-core >/dev/null; \
	else \
		echo "note: run 'sudo apt-get install chromium' so the report render tests can run"; \
	fi
endif

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
