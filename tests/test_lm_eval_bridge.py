"""The lm-eval bridge: pure helpers offline, then end to end against a real vLLM server on CPU."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from pytest_rllm.accuracy import lm_eval_bridge as bridge
from pytest_rllm.accuracy.lm_eval_bridge import (
    SHIPPED_TASKS,
    TASKS_DIR,
    builtin_scores,
    chat_completions_url,
    parse_tasks,
    side_by_side,
)

HAVE_LM_EVAL = importlib.util.find_spec("lm_eval") is not None
HAVE_VLLM = importlib.util.find_spec("vllm") is not None


# -- pure helpers -------------------------------------------------------------------
def test_parse_tasks_and_url() -> None:
    assert parse_tasks("lm-eval:rllm_procedural, gsm8k_local") == ["rllm_procedural", "gsm8k_local"]
    assert parse_tasks("builtin") == []
    assert chat_completions_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000/v1/chat/completions"
    assert chat_completions_url("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000/v1/chat/completions"
    assert chat_completions_url("http://h/v1/chat/completions") == "http://h/v1/chat/completions"


def test_shipped_data_is_what_the_generator_makes() -> None:
    # The JSONL is committed; it must not drift from procedural.items(n, seed).
    spec = SHIPPED_TASKS["rllm_procedural"]
    shipped = [json.loads(line) for line in (TASKS_DIR / "rllm_procedural.jsonl").read_text().splitlines()]
    assert shipped == bridge.procedural_rows(spec["n"], spec["seed"])
    assert len(shipped) == spec["n"] and {r["grader"] for r in shipped} == {"exact"}


def test_builtin_scores_and_side_by_side() -> None:
    samples = {
        "rllm_procedural": [
            {"doc": {"id": "a", "domain": "addition", "difficulty": 1.0, "reference": "12", "grader": "exact"},
             "target": "12", "response": "<think>\n8+4\n</think>\n\nAnswer: 12", "filtered": "12"},
            {"doc": {"id": "b", "domain": "sorting", "difficulty": 2.0, "reference": "3 5 9", "grader": "exact"},
             "target": "3 5 9", "response": "Answer: 3, 5, 9", "filtered": "3 5 9"},
            {"doc": {"id": "c", "domain": "sorting", "difficulty": 2.0, "reference": "1 2", "grader": "exact"},
             "target": "1 2", "response": "", "filtered": "[invalid]"},
        ]
    }
    built = builtin_scores(samples)
    overall = built["rllm_procedural"]["overall"]
    assert (overall["n"], overall["correct"]) == (3, 2)
    assert built["rllm_procedural"]["by_domain"]["sorting"]["correct"] == 1
    lm = {"rllm_procedural": {"exact_match,answer-line": 2 / 3, "exact_match_stderr,answer-line": 0.33, "n": 3.0}}
    (row,) = side_by_side(lm, built)
    assert row["metric"] == "exact_match,answer-line"
    assert row["lm_eval"] == pytest.approx(2 / 3) and row["builtin"] == pytest.approx(2 / 3)
    assert row["diff"] == pytest.approx(0.0) and row["lm_eval_within_builtin_ci"]
    assert (row["lm_eval_n"], row["builtin_n"]) == (3, 3)
    # A task only lm-eval ran still gets a row, with the built-in side empty.
    (row,) = side_by_side({"other": {"acc": 0.5, "n": 2.0}}, {})
    assert row["lm_eval"] == 0.5 and math.isnan(row["builtin"]) and not row["lm_eval_within_builtin_ci"]
    assert "other" in bridge.format_side_by_side([row])


@pytest.mark.skipif(not HAVE_LM_EVAL, reason="lm-eval is not installed (pip install 'pytest-rllm[eval]')")
def test_shipped_task_loads_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    assert "rllm_procedural" in manager.all_tasks
    task = manager.load(["rllm_procedural"])["tasks"]["rllm_procedural"] if hasattr(manager, "load") else None
    if task is None:  # older 0.4.x
        from lm_eval.tasks import get_task_dict

        task = get_task_dict(["rllm_procedural"], manager)["rllm_procedural"]
    docs = list(task.test_docs())
    assert len(docs) == SHIPPED_TASKS["rllm_procedural"]["n"]
    assert task.doc_to_text(docs[0]) == docs[0]["prompt"]
    assert task.doc_to_target(docs[0]) == docs[0]["reference"]


def test_unknown_task_is_named(tmp_path: Path) -> None:
    if not HAVE_LM_EVAL:
        pytest.skip("lm-eval is not installed")
    with pytest.raises(ValueError, match="unknown lm-eval task.*nope"):
        bridge.run_lm_eval("http://127.0.0.1:9", "m", ["nope"], task_dir=TASKS_DIR)


# -- end to end on the CPU engine ------------------------------------------------------
def _build_tiny_llama(path: Path) -> Path:
    """A random 2-layer Llama with a byte-level BPE tokenizer and a chat template.

    Stands in for the pocket model until it is trained: the plumbing (chat
    template, request, reply, scoring) is the same, only the answers are noise.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from pytest_rllm.workloads import procedural

    text = [f"{it.prompt}\nAnswer: {it.reference}" for it in procedural.items(200, seed=3)]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(text, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None
    )
    # Think tags as ordinary added tokens (as in Qwen3 and R1), so a reasoning
    # parser can find them and decoding does not drop them.
    fast.add_tokens(["<think>", "</think>"])
    fast.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    fast.save_pretrained(path)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=384,  # >= the tokenizer, a multiple of 64
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,  # head_dim 32, one the CPU attention kernels support
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=fast.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=fast.convert_tokens_to_ids("<|endoftext|>"),
        bos_token_id=None,
        tie_word_embeddings=True,
        torch_dtype="float32",
    )
    LlamaForCausalLM(config).save_pretrained(path, safe_serialization=True)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    # The server forks engine processes; the whole group goes, gently first.
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def served_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A vLLM OpenAI server on the pocket model (or a tiny random Llama until it exists)."""
    if not (HAVE_VLLM and HAVE_LM_EVAL):
        pytest.skip("needs vLLM and lm-eval installed")
    from pytest_rllm import pocket

    tmp = tmp_path_factory.mktemp("lm_eval_bridge")
    if (pocket.MODEL_DIR / "config.json").exists():
        model_dir, parser, trained = pocket.MODEL_DIR, pocket.REASONING_PARSER, True
    else:
        # A random model has no reasoning to split, so no parser: its replies are all content.
        model_dir, parser, trained = _build_tiny_llama(tmp / "tiny-llama"), None, False
    port = _free_port()
    env = dict(
        os.environ,
        VLLM_CPU_KVCACHE_SPACE="1",
        VLLM_CPU_OMP_THREADS_BIND="0-1",
        OMP_NUM_THREADS="2",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_HOME=str(tmp / "hf"),
        VLLM_CACHE_ROOT=str(tmp / "vllm-cache"),
    )
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--served-model-name", "under-test",
        "--host", "127.0.0.1", "--port", str(port),
        "--max-model-len", "512", "--max-num-seqs", "4", "--enforce-eager", "--seed", "0",
    ]
    if parser:
        cmd += ["--reasoning-parser", parser]
    log = tmp / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited with {proc.returncode} during start-up:\n{_log_tail(log)}")
            try:
                with urllib.request.urlopen(base_url + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM server not healthy within 300 s:\n{_log_tail(log)}")
            time.sleep(1)
        yield {"base_url": base_url, "model": "under-test", "trained": trained, "parser": parser, "env": env}
    finally:
        _stop_group(proc)


def _chat(base_url: str, prompt: str, max_tokens: int) -> str:
    body = {"model": "under-test", "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens, "temperature": 0}
    req = urllib.request.Request(base_url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        return json.load(resp)["choices"][0]["message"]["content"] or ""


@pytest.mark.engine
def test_lm_eval_scores_the_served_model_offline(served_model: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HOME"):
        monkeypatch.setenv(key, served_model["env"][key])
    limit = 4
    max_gen_toks = 128 if served_model["trained"] else 12
    samples: dict[str, list[dict[str, Any]]] = {}
    results = bridge.run_lm_eval(
        served_model["base_url"], served_model["model"], ["rllm_procedural"],
        task_dir=TASKS_DIR, limit=limit, max_gen_toks=max_gen_toks, samples=samples,
    )
    metrics = results["rllm_procedural"]
    assert metrics["n"] == limit
    score = metrics["exact_match,answer-line"]
    assert 0.0 <= score <= 1.0
    logged = samples["rllm_procedural"]
    assert [s["doc"]["id"] for s in logged] == [r["id"] for r in bridge.procedural_rows(limit, 0)]

    # lm-eval sent each prompt through the server's chat template and kept the
    # visible content: the same greedy request made directly gives the same reply.
    for s in logged:
        assert s["response"] == _chat(served_model["base_url"], s["doc"]["prompt"], max_gen_toks)

    # Its score sits beside the built-in grader's on those same replies.
    (row,) = side_by_side(results, builtin_scores(samples))
    assert row["lm_eval_n"] == row["builtin_n"] == limit
    if served_model["trained"]:
        # Both scorers read the final "Answer:" line; on the pocket model's
        # well-formed replies they must agree exactly, and it must get some right.
        assert row["builtin"] == pytest.approx(row["lm_eval"])
        assert row["builtin"] > 0
    else:
        # Random weights: noise, which neither scorer may count as correct.
        assert row["lm_eval"] == 0.0 and row["builtin"] == 0.0


@pytest.mark.engine
def test_lm_eval_counts_answers_cut_off_in_reasoning_as_wrong(
    served_model: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    if not served_model["parser"]:
        pytest.skip("needs the pocket model and its reasoning parser (not trained yet)")
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HOME"):
        monkeypatch.setenv(key, served_model["env"][key])
    samples: dict[str, list[dict[str, Any]]] = {}
    # 4 tokens end every reply inside <think>: no visible content at all.
    results = bridge.run_lm_eval(
        served_model["base_url"], served_model["model"], ["rllm_procedural"],
        limit=2, max_gen_toks=4, samples=samples,
    )
    assert results["rllm_procedural"]["exact_match,answer-line"] == 0.0
    assert all(s["response"] == "" for s in samples["rllm_procedural"])
    assert builtin_scores(samples)["rllm_procedural"]["overall"]["correct"] == 0
