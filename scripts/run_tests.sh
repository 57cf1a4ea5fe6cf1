#!/usr/bin/env bash
# Lint, then the whole test suite, in the project's own .venv (made on first use). Extra args go to pytest.
source "$(dirname "$0")/_venv.sh" requirements-dev.txt
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
