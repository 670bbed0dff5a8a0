"""Shared fixtures for the plugin's own tests.

Engine tests run real vLLM (the CPU build here) on a small model: the embedded
pocket model when it is shipped, otherwise a random-weight model with the same
tokenizer, built in a temporary folder. Nothing is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

# Offline and quiet, and a small KV cache: these apply to every engine the tests start.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build_random_model(out: Path) -> Path:
    """A random-weight Llama with the pocket tokenizer: plumbing only, accuracy 0."""
    import torch
    from transformers import LlamaForCausalLM

    from pytest_rllm.pocket import tokenizer, train

    tokenizer.build(out)
    torch.manual_seed(0)
    LlamaForCausalLM(train.model_config()).to(torch.bfloat16).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def engine_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A model folder vLLM CPU serves: the shipped pocket model, else a random one."""
    from pytest_rllm.pocket import MODEL_DIR

    if (Path(MODEL_DIR) / "model.safetensors").exists():
        return str(MODEL_DIR)
    return str(build_random_model(tmp_path_factory.mktemp("random-model")))


@pytest.fixture(scope="session")
def random_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_random_model(tmp_path_factory.mktemp("random-model")))


def vllm_processes() -> list[int]:
    """PIDs of vLLM server / engine processes on this machine (for leak checks)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "vllm.entrypoints.openai.api_server" in cmdline or "vllm serve" in cmdline:
            pids.append(int(proc.name))
    return pids
