#!/usr/bin/env bash
# Install everything the tests need into .venv and run them: the README's test command.
#   bash scripts/test.sh [pytest args]
# `playwright install` downloads browsers and cannot work offline, so it is never used.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
# System tools the tests use: chromium (the real-browser test) and strace (the no-outbound-connection
# test watches system calls). Installed with apt where possible; otherwise those tests skip (or,
# under CONVSCOPE_REQUIRE_BROWSER=1 / CI, fail).
missing=()
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing+=(chromium)
command -v strace >/dev/null || missing+=(strace)
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "installing ${missing[*]} (apt) for the tests"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null) \
      || echo "could not install ${missing[*]}: the tests that need them will skip (or fail in CI)"
  else
    echo "${missing[*]} not found: the tests that need them will skip (install them to run them)"
  fi
fi
.venv/bin/ruff check .
.venv/bin/python scripts/update_readme.py --check
exec .venv/bin/python -m pytest "$@"
