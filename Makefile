.PHONY: setup setup-check test test-all
setup:
	bash scripts/setup.sh

# mmcv's source build (as on a machine without a wheel cache) up to, not including, the compile.
setup-check:
	d=$$(mktemp -d); bash scripts/mmcv_source.sh "$$d" prepare; rc=$$?; rm -rf "$$d"; exit $$rc

test:
	.venv/bin/python -m pytest -q

test-all:
	.venv/bin/python -m pytest -q -m "slow or not slow"
