# Shortcuts for ./run.sh (which needs nothing but bash): make demo, make test, make bench.
.PHONY: install demo test bench unit down

install demo test bench:
	./run.sh $@

unit:      ## unit tests only (no root needed once installed)
	.venv/bin/python -m pytest -q tests/unit

down:      ## take down a lab left running (only the lab's own leftovers)
	.venv/bin/kubelab down
