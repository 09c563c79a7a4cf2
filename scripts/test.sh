#!/usr/bin/env bash
# Install everything the tests need into .venv and run them: the README's test command.
#   bash scripts/test.sh [pytest args]
# Chromium for the real-browser test comes from the system (Debian: apt-get install chromium);
# `playwright install` downloads browsers and cannot work offline, so it is never used.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "installing chromium (apt) for the browser test"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "could not install chromium: the browser test will skip (or fail under CONVSCOPE_REQUIRE_BROWSER=1)"
  else
    echo "chromium not found: the browser test will skip (install chromium to run it)"
  fi
fi
.venv/bin/ruff check .
.venv/bin/python scripts/update_readme.py --check
exec .venv/bin/python -m pytest "$@"
