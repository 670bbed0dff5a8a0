"""Shared fixtures for the plugin's own tests.

Engine tests run real vLLM (the CPU build here) on a small model: the embedded
pocket model when it is shipped, otherwise a random-weight model with the same
tokenizer, built in a temporary folder. Nothing is downloaded.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from host_lock import HostLock

pytest_plugins = ["pytester"]

# Offline and quiet, and a small KV cache: these apply to every engine the tests start.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# --------------------------------------------------------------------------- tests that run alone
# `pytest tests/ -n 2` runs two tests at once: two engine tests overlap their start-ups, which
# import on one core each (benchmarks/RESULTS.md). A test marked `alone` times an engine against
# itself (the regression gate's 1.45x slowdown) and would read the other worker's load as a
# slower engine, or skip as a busy host: it holds a lock that every other test of the run shares,
# so it starts once the running tests end and none starts until it ends. Outside xdist the lock
# is not taken: one test runs at a time anyway.


def _host_lock(config: pytest.Config) -> HostLock | None:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:
        return None
    # One folder per run, named by the run id every worker of it shares.
    folder = Path(tempfile.gettempdir()) / f"pytest-rllm-tests-{workerinput['testrunuid']}"
    folder.mkdir(exist_ok=True)
    return HostLock(folder)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Under xdist, the order in which files are handed to the workers: engine files first (long
    # ones that overlap well), then the fast ones, which fill the gaps, and the `alone` ones last,
    # when the other worker has the least left to wait for. Every worker sorts the same way, as
    # xdist requires. One at a time, files keep their usual order.
    if getattr(config, "workerinput", None) is None:
        return

    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("alone"):
            return 2
        return 0 if item.get_closest_marker("engine") else 1

    # Per file (its most urgent test), so a file's tests stay together and in their order.
    file_rank: dict[Path, int] = {}
    for item in items:
        file_rank[item.path] = min(file_rank.get(item.path, 2), rank(item))
    items.sort(key=lambda item: file_rank[item.path])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    lock = _host_lock(item.config)
    if lock is None:
        return (yield)
    # Around set-up, call and teardown: a module fixture's engine starts in its first test's set-up.
    held = lock.hold(alone=item.get_closest_marker("alone") is not None)
    try:
        return (yield)
    finally:
        held.close()


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
