# virtcenter developer entry points. CI runs .ci/run, which runs `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help install test test-fast run lint clean distclean

help:
	@echo "make install    Debian packages (if missing) + .venv with '.[agent,test]'"
	@echo "make test       install, throwaway Redis/PostgreSQL, all suites, timing table"
	@echo "make test-fast  unit + in-process API tiers, fuzzing left out (scripts/test.sh fast)"
	@echo "make run        run virtcenter locally (scripts/run.sh)"
	@echo "make lint       ruff, mypy and the import-linter contracts (scripts/lint.sh)"
	@echo "make clean      remove caches and build output (keeps .venv)"
	@echo "make distclean  clean + remove .venv"

install:
	scripts/install.sh

test:
	scripts/test.sh

test-fast:
	scripts/test.sh fast

run:
	scripts/run.sh $(RUN_ARGS)

lint: install
	scripts/lint.sh

clean:
	find . -path ./.venv -prune -o -path ./.git -prune -o \
	  \( -name __pycache__ -o -name .pytest_cache -o -name '*.egg-info' \) -type d -print0 \
	  | xargs -0r rm -rf
	rm -rf build/ dist/ run/ .import_linter_cache/

distclean: clean
	rm -rf .venv/
