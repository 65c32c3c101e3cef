#!/usr/bin/env bash
# One entry point that sets up a fresh machine and then runs a job:
#   ./dev.sh demo    a small end-to-end search, report and exported spec in runs/
#   ./dev.sh test    the test suite (what CI runs)
#   ./dev.sh bench   the committed benchmarks
#   ./dev.sh shell   an interactive shell with the environment active
set -euo pipefail
cd "$(dirname "$0")"

venv=${STRUCTSEARCH_VENV:-.venv}
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
py="$venv/bin/python"

# A CPU build of torch 2.13.0 lies on this machine's disk; asking for it first keeps pip
# from resolving pyproject's loose range to a multi-GB CUDA build.
if ! "$py" -c "import torch" >/dev/null 2>&1; then
    "$py" -m pip install --quiet "torch==2.13.0"
fi
# Reinstall the package only when pyproject.toml changed since the last install.
stamp="$venv/.structsearch-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$py" -m pip install --quiet -e ".[dev]"
    touch "$stamp"
fi
export PATH="$PWD/$venv/bin:$PATH"

job=${1:-help}
shift || true
case "$job" in
    demo) exec "$py" -m structsearch.demo "$@" ;;
    test) exec "$py" -m pytest "$@" ;;
    bench) for script in benchmarks/*.py; do "$py" "$script" "$@"; done ;;
    shell) exec "${SHELL:-bash}" ;;
    *) sed -n '2,6p' "$0"; exit 2 ;;
esac
