"""Accuracy of a run from its graded records: Wilson intervals overall, per domain and per difficulty; A/B pairs.

    summary = accuracy_summary(run.records)          # plain JSON, see accuracy_summary
    a, b, keys = paired_outcomes(reference.records, candidate.records)

Pure, like grading: importing it pulls neither vLLM nor torch nor lm-eval.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable, Sequence

from pytest_rllm.accuracy.grading import Grade, grade
from pytest_rllm.records import RequestRecord
from pytest_rllm.stats import wilson_interval


def _difficulty_key(value: float) -> str:
    # JSON keys are strings; 3.0 reads better as "3".
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _cell(grades: Sequence[Grade], errors: int, confidence: float) -> dict[str, Any]:
    n = len(grades)
    correct = sum(g.correct for g in grades)
    low, high = wilson_interval(correct, n, confidence)
    return {
        "n": n,
        "correct": correct,
        "accuracy": correct / n if n else math.nan,
        "wilson_low": low,
        "wilson_high": high,
        "truncated_in_reasoning": sum(g.truncated_in_reasoning for g in grades),
        "errors": errors,
    }


def accuracy_summary(
    records: Iterable[RequestRecord],
    grades: Sequence[Grade] | None = None,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Accuracy with Wilson intervals, overall, per domain and per difficulty.

    Every record counts once, so ``n`` is requests (items x repeats), and
    errored or truncated requests count as wrong: the denominator is what was
    asked, not what came back. Shape (plain JSON; NaN accuracy only when n == 0)::

        {
          "confidence": 0.95,
          "overall":       CELL,
          "by_domain":     {"addition": CELL, ...},           # sorted by name
          "by_difficulty": {"1": CELL, "2.5": CELL, ...},     # sorted numerically
        }
        CELL = {"n": int, "correct": int, "accuracy": float,
                "wilson_low": float, "wilson_high": float,
                "truncated_in_reasoning": int, "errors": int}

    Pass ``grades`` (same order as ``records``) to reuse grades already computed.
    """
    records = list(records)
    if grades is None:
        grades = [grade(r) for r in records]
    if len(grades) != len(records):
        raise ValueError(f"{len(grades)} grades for {len(records)} records")
    by_domain: dict[str, list[int]] = defaultdict(list)
    by_level: dict[float, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        by_domain[r.domain].append(i)
        by_level[float(r.difficulty)].append(i)

    def cell(indices: Sequence[int]) -> dict[str, Any]:
        errors = sum(records[i].error is not None for i in indices)
        return _cell([grades[i] for i in indices], errors, confidence)

    return {
        "confidence": confidence,
        "overall": cell(range(len(records))),
        "by_domain": {d: cell(by_domain[d]) for d in sorted(by_domain)},
        "by_difficulty": {_difficulty_key(k): cell(by_level[k]) for k in sorted(by_level)},
    }


def paired_outcomes(
    records_a: Iterable[RequestRecord], records_b: Iterable[RequestRecord]
) -> tuple[list[bool], list[bool], list[tuple[str, int]]]:
    """Correctness of A and B on the (item, repeat) pairs both runs answered.

    The order is sorted by (item_id, repeat), so the lists line up for
    :func:`pytest_rllm.stats.mcnemar` and :func:`pytest_rllm.stats.accuracy_within`.
    Records present in only one run are left out; the third list names the
    pairs kept, so a caller can see how many were dropped.
    """
    a = {(r.item_id, r.repeat): r for r in records_a}
    b = {(r.item_id, r.repeat): r for r in records_b}
    keys = sorted(a.keys() & b.keys())
    return [grade(a[k]).correct for k in keys], [grade(b[k]).correct for k in keys], keys


__all__ = ["accuracy_summary", "paired_outcomes"]
