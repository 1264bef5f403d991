# One-command set-up on a fresh machine: `make setup` (creates .venv) then `make test`.
PY ?= python3
VENV ?= .venv

setup:
	bash scripts/setup.sh $(VENV)

test:
	$(VENV)/bin/python -m pytest -q

.PHONY: setup test
