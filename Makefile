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

.PHONY: demo test venv clean system-deps

# Debian packages for the real programs the tests drive: Chromium (report rendering and the
# end-to-end browser test, with its chromedriver), PostgreSQL (the API suite runs on it too) and
# Mosquitto (the streaming suite's real broker).
DEBS := $(if $(shell command -v chromium),,chromium fonts-dejavu-core) \
        $(if $(shell command -v chromedriver),,chromium-driver) \
        $(if $(wildcard /usr/lib/postgresql/*/bin/initdb),,postgresql) \
        $(if $(wildcard /usr/sbin/mosquitto),,mosquitto)

system-deps:
ifneq ($(strip $(DEBS)),)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian packages the tests use: $(strip $(DEBS))"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			$(strip $(DEBS)) >/dev/null; \
	else \
		echo "note: 'sudo apt-get install $(strip $(DEBS))' lets the browser and PostgreSQL tests run"; \
	fi
endif

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,test]'
	touch $(STAMP)

# The main job: prepare the demo models from the data mirror (trained once, then cached in
# $$MEDDX_HOME/demo), print their test metrics, create the admin account and print its one-time
# password, and serve the API and the clinicians' page on http://127.0.0.1:8000/.
demo: $(STAMP)
	$(BIN)/meddx info
	$(BIN)/python -m meddx.service.demo
	$(BIN)/meddx serve --host 127.0.0.1 --port 8000 --model pneumoniamnist-cnn-small --model breastmnist-cnn-small-ensemble5

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
