#!/usr/bin/env bash
# mypy on src/ (pyproject.toml [tool.mypy]: strict for nubis.services) against the
# committed baseline: a new error fails, and so does an error that is gone but still
# in the baseline (the baseline only shrinks). After fixing some, shrink it with
#   .venv/bin/mypy | .venv/bin/mypy-baseline sync --baseline-path scripts/mypy-baseline.txt
set -u  # the filter decides (mypy itself exits 1 while the baseline has errors)
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
"$VENV/bin/mypy" --no-error-summary | "$VENV/bin/mypy-baseline" filter \
  --baseline-path scripts/mypy-baseline.txt --no-colors
