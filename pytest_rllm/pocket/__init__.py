"""The pocket reasoning model: a ~1M-parameter Llama trained on the procedural tasks.

It ships inside the package (``model/``) and is the default ``--rllm-model``, so
the suites mean something on any CPU. Importing this module is cheap: it never
imports torch, transformers or vllm.
"""

from __future__ import annotations

from pathlib import Path

MODEL_DIR: Path = Path(__file__).resolve().parent / "model"

# Checked on vLLM 0.32 by tests/test_pocket.py: the one parser that puts the
# reasoning in `reasoning` with thinking on AND the answer in `content` with
# thinking off, where the chat template writes the think tags into the prompt.
REASONING_PARSER = "qwen3"

__all__ = ["MODEL_DIR", "REASONING_PARSER"]
