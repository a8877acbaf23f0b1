#!/usr/bin/env bash
# Creates .venv and installs qa into it with every extra the app and the commands use (web, eval,
# soak). `--test` adds what the test suite needs (pytest, playwright, ruff, mypy, Debian's
# chromium and a CJK font). `--ray` (alone or after --test) adds the [ray] extra, for the sharded
# build and the cluster tests. Safe to run again.
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
  # The browser and a CJK font: without one, a Chinese question is drawn as boxes in the
  # screenshots of the browser tests.
  need=()
  { command -v chromium >/dev/null && command -v chromedriver >/dev/null; } || need+=(chromium chromium-driver)
  fc-list :lang=zh 2>/dev/null | grep -q . || need+=(fonts-noto-cjk)
  if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
      echo "browser tests need: sudo apt-get install ${need[*]}" >&2
    fi
  fi
else
  "${pip[@]}" -e ".[$extras]"
fi
