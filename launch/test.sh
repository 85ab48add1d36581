#!/usr/bin/env bash
# Set up, then run the whole test suite (extra arguments go to pytest).
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
# the report's test looks at the page in a real browser: Debian's Chromium, installed here when running as root
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "[test] installing Debian's chromium for the report's browser test"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
    || echo "[test] chromium could not be installed: the report's browser test will skip" >&2
fi
exec .venv/bin/python -m pytest "$@"
