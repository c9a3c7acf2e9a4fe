#!/usr/bin/env bash
# Runs the whole test suite (installs what it needs into ./.venv first).
source "$(dirname "$0")/env.sh"
ruff check .
ruff format --check .
python -m pytest -n 2 "$@"
