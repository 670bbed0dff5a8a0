"""Run lm-eval tasks against the engine under test, and put its score beside ours.

Opt-in with ``--rllm-accuracy=lm-eval:TASKS``. lm-eval (0.4.x) is imported only
inside :func:`run_lm_eval`, so the plugin stays cheap to import without it.

lm-eval talks to the running server through its ``local-chat-completions``
model: the server applies the chat template (``apply_chat_template=True``), and
with a reasoning parser the reply's ``content`` is the visible answer only, so
lm-eval scores what a user sees -- the same rule the built-in grader follows.

The shipped tasks live in ``tasks/`` (see :data:`SHIPPED_TASKS`). They read
their JSONL rows through a small loader next to the YAML, so they run offline
from wherever the package is installed; ``TaskManager(include_defaults=False)``
keeps lm-eval's start-up at a fraction of a second.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

from pytest_rllm.records import RequestRecord

TASKS_DIR = Path(__file__).resolve().parent / "tasks"

# Shipped task -> how its data was made, so the built-in run on the same items
# can be reproduced: procedural.items(n, seed).
SHIPPED_TASKS: dict[str, dict[str, Any]] = {
    "rllm_procedural": {"dataset": "procedural", "n": 48, "seed": 0, "grader": "exact"},
}


def parse_tasks(setting: str) -> list[str]:
    """``"lm-eval:a,b"`` -> ``["a", "b"]``; ``"builtin"`` -> ``[]``."""
    if not setting.startswith("lm-eval:"):
        return []
    return [t.strip() for t in setting[len("lm-eval:") :].split(",") if t.strip()]


def chat_completions_url(base_url: str) -> str:
    """``http://host:port`` (or ``.../v1``) -> ``http://host:port/v1/chat/completions``."""
    url = base_url.rstrip("/")
    if url.endswith("/v1/chat/completions"):
        return url
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    return url + "/v1/chat/completions"


def _numbers(task_results: Mapping[str, Any]) -> dict[str, float]:
    # lm-eval mixes its metrics ("metric,filter") with bookkeeping ("alias",
    # "sample_len") and "N/A" stderrs: keep the numeric metrics only.
    return {
        k: float(v)
        for k, v in task_results.items()
        if "," in k and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def run_lm_eval(
    base_url: str,
    model: str,
    tasks: list[str],
    *,
    task_dir: Path | str = TASKS_DIR,
    limit: int | None = None,
    api_key: str | None = None,
    max_gen_toks: int | None = None,
    num_concurrent: int = 1,
    timeout: float = 600.0,
    samples: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[str, dict[str, float]]:
    """Run lm-eval ``tasks`` against the OpenAI server at ``base_url``.

    ``model`` is the served model name. Returns ``{task: {metric: value}}`` with
    lm-eval's own metric keys (``"exact_match,answer-line"``) plus ``"n"``, the
    items evaluated. lm-eval's bootstrap stderrs are switched off (minutes of
    CPU on a small machine); the built-in side carries Wilson intervals instead.

    Greedy, as the shipped task asks. The payload lm-eval sends carries a fixed
    ``seed``; vLLM's CPU build accepts it for greedy requests (checked), though
    ENVIRONMENT.md reports that per-request seeds crash its sampler when sampling.
    A reply whose visible content is empty (cut off inside the reasoning: the
    server returns ``content: null``) reaches lm-eval as "" and scores as wrong.

    Pass a dict as ``samples`` to receive, per task, one entry per item:
    ``{"doc": {...}, "target": str, "response": str, "filtered": str}`` --
    the raw visible reply and lm-eval's extraction of it. :func:`builtin_scores`
    grades those same replies with the built-in grader.
    """
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError as exc:  # the eval extra is optional
        raise RuntimeError(
            "--rllm-accuracy=lm-eval:... needs lm-eval: pip install 'pytest-rllm[eval]'"
        ) from exc
    if not tasks:
        raise ValueError("run_lm_eval needs at least one task")

    model_args: dict[str, Any] = {
        "model": model,
        "base_url": chat_completions_url(base_url),
        "num_concurrent": int(num_concurrent),
        "max_retries": 1,  # a failing engine should fail the check, not be retried for minutes
        "timeout": int(math.ceil(timeout)),
        "tokenized_requests": False,
        "tokenizer_backend": None,
    }
    if api_key:
        model_args["header"] = {"Authorization": f"Bearer {api_key}"}
    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise ValueError(f"unknown lm-eval task(s) {unknown} in {task_dir}; known: {sorted(manager.all_tasks)}")
    out = lm_eval.simple_evaluate(
        model="local-chat-completions",
        model_args=model_args,
        tasks=list(tasks),
        task_manager=manager,
        limit=limit,
        apply_chat_template=True,
        log_samples=True,
        gen_kwargs={"max_gen_toks": int(max_gen_toks)} if max_gen_toks else None,
        bootstrap_iters=0,  # the stderr of a mean is closed-form; bootstraps cost minutes on 2 cores
    )
    if out is None:  # simple_evaluate returns None on non-zero ranks only
        raise RuntimeError("lm-eval returned no results")
    results: dict[str, dict[str, float]] = {}
    for task in tasks:
        metrics = _numbers(out["results"].get(task, {}))
        logged = out.get("samples", {}).get(task, [])
        metrics["n"] = float(len(logged))
        results[task] = metrics
        if samples is not None:
            samples[task] = [_sample(s) for s in logged]
    return results


def _sample(s: Mapping[str, Any]) -> dict[str, Any]:
    def first(value: Any) -> Any:
        while isinstance(value, (list, tuple)) and value:
            value = value[0]
        return value

    response = first(s.get("resps"))
    return {
        "doc": dict(s.get("doc") or {}),
        "target": str(s.get("target", "")),
        "response": response if isinstance(response, str) else "",
        "filtered": first(s.get("filtered_resps")),
    }


def sample_records(task: str, task_samples: Iterable[Mapping[str, Any]]) -> list[RequestRecord]:
    """lm-eval's logged replies as RequestRecords, ready for the built-in grader.

    lm-eval keeps only the visible content, so whether an empty reply was cut
    off inside the reasoning cannot be told here: such a reply is wrong, and
    ``truncated_in_reasoning`` stays 0 for lm-eval samples.
    """
    default_grader = SHIPPED_TASKS.get(task, {}).get("grader", "math")
    records = []
    for i, s in enumerate(task_samples):
        doc = s.get("doc") or {}
        records.append(
            RequestRecord(
                item_id=str(doc.get("id", f"{task}/{i}")),
                domain=str(doc.get("domain", task)),
                difficulty=float(doc.get("difficulty", 0.0)),
                reference=str(doc.get("reference", s.get("target", ""))),
                grader=str(doc.get("grader", default_grader)),
                answer_text=str(s.get("response") or ""),
                finish_reason="stop",
            )
        )
    return records


def builtin_scores(samples: Mapping[str, Iterable[Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """The built-in grader's accuracy_summary for each task, on lm-eval's own replies."""
    from pytest_rllm.accuracy.summary import accuracy_summary

    return {task: accuracy_summary(sample_records(task, ss)) for task, ss in samples.items()}


def primary_metric(metrics: Mapping[str, float]) -> tuple[str, float] | None:
    """The task's headline score: the first non-stderr metric other than ``n``."""
    for key, value in metrics.items():
        if key != "n" and "_stderr" not in key:
            return key, value
    return None


def side_by_side(
    lm_results: Mapping[str, Mapping[str, float]],
    builtin: Mapping[str, Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """One row per task: lm-eval's score next to the built-in one.

    ``builtin`` maps a task to an :func:`~pytest_rllm.accuracy.summary.accuracy_summary`
    -- from :func:`builtin_scores` (same replies, two scorers) or from a
    RunResult on the same items (same items, two runs). Row::

        {"task", "metric", "lm_eval", "lm_eval_n", "builtin", "builtin_low",
         "builtin_high", "builtin_n", "diff" (lm_eval - builtin), "lm_eval_within_builtin_ci"}

    A task missing on either side gives NaN in the missing columns.
    """
    rows = []
    for task in sorted(set(lm_results) | set(builtin)):
        metrics = lm_results.get(task, {})
        head = primary_metric(metrics)
        overall = (builtin.get(task) or {}).get("overall", {})
        lm_value = head[1] if head else math.nan
        b_value = float(overall.get("accuracy", math.nan))
        low = float(overall.get("wilson_low", math.nan))
        high = float(overall.get("wilson_high", math.nan))
        rows.append(
            {
                "task": task,
                "metric": head[0] if head else None,
                "lm_eval": lm_value,
                "lm_eval_n": int(metrics.get("n", 0)),
                "builtin": b_value,
                "builtin_low": low,
                "builtin_high": high,
                "builtin_n": int(overall.get("n", 0)),
                "diff": lm_value - b_value,
                "lm_eval_within_builtin_ci": bool(low <= lm_value <= high),
            }
        )
    return rows


def format_side_by_side(rows: Iterable[Mapping[str, Any]]) -> str:
    """A small table for the terminal summary."""
    lines = [f"{'task':<22} {'lm-eval':>8} {'builtin':>8} {'builtin 95% CI':>16} {'n':>5}"]
    for r in rows:
        lines.append(
            f"{r['task']:<22} {r['lm_eval']:>8.3f} {r['builtin']:>8.3f} "
            f"{'[%.3f, %.3f]' % (r['builtin_low'], r['builtin_high']):>16} {r['lm_eval_n']:>5}"
        )
    return "\n".join(lines)


# -- shipped data ---------------------------------------------------------------
def procedural_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """The JSONL rows of the procedural task, from the workload's own generator."""
    from pytest_rllm.workloads import procedural

    return [
        {
            "id": it.id,
            "domain": it.domain,
            "difficulty": it.difficulty,
            "prompt": it.prompt,
            "reference": it.reference,
            "grader": it.grader,
        }
        for it in procedural.items(n, seed)
    ]


def write_shipped_data(task_dir: Path | str = TASKS_DIR) -> list[Path]:
    """(Re)write the shipped JSONL files from their generators; returns the paths."""
    written = []
    for task, spec in SHIPPED_TASKS.items():
        if spec["dataset"] != "procedural":
            continue
        path = Path(task_dir) / f"{task}.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for row in procedural_rows(spec["n"], spec["seed"]):
                f.write(json.dumps(row, sort_keys=True) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":  # python -m pytest_rllm.accuracy.lm_eval_bridge --write-data
    import sys

    if sys.argv[1:] != ["--write-data"]:
        sys.exit("usage: python -m pytest_rllm.accuracy.lm_eval_bridge --write-data")
    for p in write_shipped_data():
        print(p)


__all__ = [
    "SHIPPED_TASKS",
    "TASKS_DIR",
    "builtin_scores",
    "chat_completions_url",
    "format_side_by_side",
    "parse_tasks",
    "primary_metric",
    "procedural_rows",
    "run_lm_eval",
    "sample_records",
    "side_by_side",
    "write_shipped_data",
]
