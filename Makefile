.PHONY: setup test test-all
setup:
	bash scripts/setup.sh

test:
	.venv/bin/python -m pytest -q

test-all:
	.venv/bin/python -m pytest -q -m "slow or not slow"
