"""Shared helpers of the harness-performance benchmarks (issue 9).

Every benchmark prints ratios taken side by side in one run: absolute times on
the shared 2-core machines vary about 2x from one run to the next.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def engine_env() -> None:
    """The CPU engine's environment (ENVIRONMENT.md), set before vLLM is imported; explicit values win."""
    from pytest_rllm.engines.platform import cpu_engine_env

    for key, value in cpu_engine_env({}).items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cache = Path(tempfile.gettempdir()) / "rllm-bench-cache"
    os.environ.setdefault("VLLM_CACHE_ROOT", str(cache / "vllm"))
    os.environ.setdefault("HF_HOME", str(cache / "hf"))


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load average n/a"
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def machine() -> str:
    """One line that names the machine, for the results table."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    from pytest_rllm.engines.platform import engine_version_text

    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {engine_version_text()}"


def header(title: str) -> None:
    print(f"== {title}", flush=True)
    print(f"machine: {machine()}", flush=True)
    print(f"at start: {load_average()}", flush=True)


def model_dir() -> str:
    """The embedded pocket model; a random-weight one of the same shape if its weights are not there yet."""
    from pytest_rllm.pocket import MODEL_DIR

    if (Path(MODEL_DIR) / "model.safetensors").exists():
        return str(MODEL_DIR)
    out = Path(tempfile.mkdtemp(prefix="rllm-random-model-"))
    import torch
    from transformers import LlamaForCausalLM

    from pytest_rllm.pocket import tokenizer, train

    tokenizer.build(out)
    torch.manual_seed(0)
    LlamaForCausalLM(train.model_config()).to(torch.bfloat16).save_pretrained(out)
    print(f"(the pocket model has no weights yet: using a random model of its shape in {out})", flush=True)
    return str(out)


def pct(values: Sequence[float], q: float) -> float:
    import numpy as np

    arr = np.asarray(values, dtype=float)
    return float(np.percentile(arr, q)) if arr.size else math.nan


def median(values: Sequence[float]) -> float:
    return pct(values, 50)


def cv(gaps: Sequence[float]) -> float:
    import numpy as np

    arr = np.asarray(gaps, dtype=float)
    return float(arr.std() / arr.mean()) if len(arr) > 1 and arr.mean() > 0 else math.nan


def ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


# --------------------------------------------------------------------------- the mock server


@contextlib.contextmanager
def mock_server(*, ttft: float, itl: float, reasoning_tokens: int = 8, answer_tokens: int = 4,
                role_with_first_token: bool = True, uvloop: bool = True, max_seconds: float = 900,
                tag_answers: bool = False) -> Iterator[str]:
    """benchmarks/mock_server.py in a subprocess; yields its base URL and stops it on exit.

    The role chunk goes with the first token by default, as vLLM sends it:
    vLLM's benchmark client stamps TTFT on the first chunk, whatever it holds.
    """
    command = [
        sys.executable, str(ROOT / "benchmarks" / "mock_server.py"), "--port", "0",
        "--ttft", str(ttft), "--itl", str(itl),
        "--reasoning-tokens", str(reasoning_tokens), "--answer-tokens", str(answer_tokens),
        "--max-seconds", str(max_seconds), "--exit-on-stdin-eof",
    ] + (["--role-with-first-token"] if role_with_first_token else []) + (["--uvloop"] if uvloop else []) \
        + (["--tag-answers"] if tag_answers else [])
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("READY "):
            raise RuntimeError(f"mock server did not start (said {line!r}, exit code {proc.poll()})")
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def mock_served_ttft(url: str) -> dict[int, float]:
    """The mock's own stamps: request number -> the TTFT it really served (seconds)."""
    import urllib.request

    with urllib.request.urlopen(url + "/stats", timeout=30) as response:
        data = json.loads(response.read())
    return {int(k): float(v) for k, v in data["served_ttft"].items()}


def mock_request_number(text: str) -> int | None:
    """The " #N" tag a mock started with tag_answers=True puts at the end of each answer."""
    at = text.rfind("#")
    tail = text[at + 1:].strip() if at >= 0 else ""
    return int(tail) if tail.isdigit() else None


# --------------------------------------------------------------------------- vLLM's benchmark client


def write_prompts(prompts: Sequence[str], folder: str | Path) -> str:
    """A JSONL data set for vLLM's `--dataset-name custom`."""
    path = Path(folder) / "prompts.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        for prompt in prompts:
            handle.write(json.dumps({"prompt": prompt}) + "\n")
    return str(path)


class PeerSchedule:
    """What vLLM's benchmark client drew: its gamma gaps and its start time, on perf_counter().

    `serve.get_request` draws every gap with np.random.gamma, rescales their
    cumulative sum to end at n/rate, takes `start_ts = time.time()` and sleeps
    each request to start_ts + delay. Recording the draws and that time.time()
    call rebuilds the exact schedule, so its send lag is measured like ours.
    """

    def __init__(self) -> None:
        self.gammas: list[float] = []
        self.calls_at_last_draw = -1
        self.clock_calls: list[tuple[float, float]] = []  # (time.time(), perf_counter())

    def offsets(self, n: int, rate: float) -> list[float]:
        import numpy as np

        draws = np.asarray(self.gammas[-n:], dtype=float)
        delays = np.cumsum(draws)
        if delays[-1] != 0:
            delays = delays * ((n / rate) / delays[-1])
        return [float(x) for x in delays]

    def start_perf(self) -> float | None:
        """perf_counter() of the peer's start_ts (its first time.time() after the last draw)."""
        if self.calls_at_last_draw < 0 or self.calls_at_last_draw >= len(self.clock_calls):
            return None
        wall, perf = self.clock_calls[self.calls_at_last_draw]
        return perf


@contextlib.contextmanager
def record_peer_schedule() -> Iterator[PeerSchedule]:
    import numpy as np
    from vllm.benchmarks import serve

    box = PeerSchedule()
    real_gamma = np.random.gamma
    real_time = serve.time

    def gamma(*args: Any, **kwargs: Any) -> Any:
        value = real_gamma(*args, **kwargs)
        box.gammas.append(float(value))
        box.calls_at_last_draw = len(box.clock_calls)
        return value

    class Clock:
        def __getattr__(self, name: str) -> Any:
            return getattr(real_time, name)

        def time(self) -> float:
            pair = (real_time.time(), real_time.perf_counter())
            box.clock_calls.append(pair)
            return pair[0]

    np.random.gamma = gamma
    serve.time = Clock()
    try:
        yield box
    finally:
        np.random.gamma = real_gamma
        serve.time = real_time


def run_vllm_bench(argv: list[str], *, quiet: bool = True) -> dict[str, Any]:
    """vLLM's own serving benchmark (vllm.benchmarks.serve), in this process; returns its result dict.

    The installed CPU build has no `vllm bench` CLI, so its parser is built by
    hand (ENVIRONMENT.md). Its chatter goes to a buffer, printed on failure.
    """
    from vllm.benchmarks import serve
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    serve.add_cli_args(parser)
    args = parser.parse_args(argv)
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer) if quiet else contextlib.nullcontext():
            return serve.main(args)
    except BaseException:
        sys.stdout.write(buffer.getvalue()[-4000:])
        raise


def vllm_bench_args(*, url: str, model: str, tokenizer: str, dataset: str, num_prompts: int, output_len: int,
                    rate: float | None, burstiness: float = 1.0, seed: int = 0, temperature: float | None = None,
                    top_p: float | None = None, extra: Sequence[str] = ()) -> list[str]:
    """The peer's argument list for a chat-completions run on our data set."""
    args = [
        "--backend", "openai-chat", "--endpoint", "/v1/chat/completions", "--base-url", url,
        "--model", model, "--tokenizer", tokenizer,
        "--dataset-name", "custom", "--dataset-path", dataset, "--disable-shuffle", "--skip-chat-template",
        "--custom-output-len", str(output_len), "--num-prompts", str(num_prompts),
        "--seed", str(seed), "--burstiness", str(burstiness),
        "--request-rate", "inf" if rate is None else str(rate),
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99",
        "--save-detailed", "--disable-tqdm",
    ]
    if temperature is not None:
        args += ["--temperature", str(temperature)]
    if top_p is not None:
        args += ["--top-p", str(top_p)]
    return args + list(extra)


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
