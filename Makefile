.PHONY: setup test test-slow
setup:
	scripts/setup.sh
test:
	scripts/test.sh
test-slow:
	.venv/bin/python -m pytest -q -m slow
