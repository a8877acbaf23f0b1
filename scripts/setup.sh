#!/usr/bin/env bash
# Creates .venv and installs qa into it with every extra the app and the commands use (web, eval,
# soak). `--test` adds what the test suite needs (pytest, playwright, ruff, mypy, Debian's
# chromium). `--ray` (alone or after --test) adds the [ray] extra, for the sharded build and the
# cluster tests. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# The CPU build of torch first: an unpinned torch would pull a CUDA build of several GB.
# Elsewhere, set QA_TORCH to the torch requirement you want (e.g. QA_TORCH=torch).
"${pip[@]}" "${QA_TORCH:-torch==2.13.0}"
extras="web,eval,soak"
for arg in "$@"; do
  [ "$arg" = "--ray" ] && extras="$extras,ray"
done
if [ "${1:-}" = "--test" ]; then
  "${pip[@]}" -e ".[$extras,test]"
  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    else
      echo "browser tests need Debian's chromium: sudo apt-get install chromium chromium-driver" >&2
    fi
  fi
else
  "${pip[@]}" -e ".[$extras]"
fi
