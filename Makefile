# kubelab's entry points. Run as root on Debian/Ubuntu; every target installs what is missing.
VENV ?= $(CURDIR)/.venv
PY := $(VENV)/bin/python
export KUBELAB_VENV := $(VENV)

.PHONY: install demo test unit bench clean

install:
	@bash scripts/install.sh

demo: install            ## bring up the default lab, show traffic through every Service type
	$(VENV)/bin/kubelab demo

test: install            ## the whole test suite (traffic tests need root)
	$(PY) -m pytest -ra tests

unit: install            ## unit tests only (no root needed once installed)
	$(PY) -m pytest -q tests/unit

bench: install           ## the benchmark table
	$(VENV)/bin/kubelab bench

clean:                   ## take down a lab left running (only the lab's own leftovers)
	-$(VENV)/bin/kubelab down
