#!/usr/bin/env bash
# Set up, then run the whole test suite (extra arguments go to pytest).
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
exec .venv/bin/python -m pytest "$@"
