"""Intervals of a candidate/reference ratio, from resampled requests or from per-trial values.

Pure numpy on plain data (arrays keyed by item), so the A/B verdicts of
:mod:`pytest_rllm.candidate` are tested without an engine. Seeded: the same
data gives the same interval every run.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

CONFIDENCE = 0.95
N_RESAMPLES = 2000
N_RESAMPLES_POOLED = 1000  # ITL pools every token gap, so each resample costs more
HISTOGRAM_BINS = 2048  # pooled percentiles within ~0.5 % of numpy (wide tail bins; far inside any interval)


def _stat(arrays: Sequence[np.ndarray], idx: np.ndarray, q: float | None) -> np.ndarray:
    """Percentile `q` (None: the mean) of each resample (rows of `idx`) of the requests' pooled values."""
    if all(len(a) == 1 for a in arrays):
        drawn = np.concatenate(arrays)[idx]
        return drawn.mean(axis=1) if q is None else np.percentile(drawn, q, axis=1)
    # Pooled (every token gap of a request): a resample weights each value by how
    # often its request was drawn, so nothing is concatenated per resample.
    counts = np.stack([np.bincount(row, minlength=len(arrays)) for row in idx]).astype(float)
    if q is None:
        sums, sizes = np.asarray([a.sum() for a in arrays]), np.asarray([len(a) for a in arrays], dtype=float)
        return (counts @ sums) / (counts @ sizes)
    # A histogram per request on bins at the pooled quantiles: a resample's histogram
    # is one matrix product, and its percentile is read between the bin's edges.
    values = np.concatenate(arrays)
    owner = np.repeat(np.arange(len(arrays)), [len(a) for a in arrays])
    edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)))
    if len(edges) < 2:
        return np.full(len(idx), values[0])
    bins = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    per_request = np.bincount(owner * (len(edges) - 1) + bins, minlength=len(arrays) * (len(edges) - 1))
    weights = counts @ per_request.reshape(len(arrays), len(edges) - 1).astype(float)
    cum = np.cumsum(weights, axis=1)
    target = (q / 100.0) * cum[:, -1]
    at = np.minimum((cum < target[:, None]).sum(axis=1), len(edges) - 2)
    rows = np.arange(len(idx))
    before = np.where(at > 0, cum[rows, np.maximum(at - 1, 0)], 0.0)
    inside = np.clip((target - before) / np.maximum(weights[rows, at], 1e-300), 0.0, 1.0)
    return edges[at] + inside * (edges[at + 1] - edges[at])


def bootstrap_ratio(reference: Mapping[Any, np.ndarray], candidate: Mapping[Any, np.ndarray],
                    q: float | None, *, seed: int = 0) -> tuple[float, float, str] | None:
    """Percentile bootstrap interval of the ratio of the q-th percentiles (None: means), candidate / reference.

    Requests keyed alike in both (same item and repeat) are resampled as pairs, which
    keeps the per-item correlation (a hard item is slow on both engines); otherwise
    the two sides are resampled independently. None with fewer than 2 requests a side.
    """
    common = sorted(reference.keys() & candidate.keys())
    paired = len(common) >= 2 and len(common) >= 0.9 * max(len(reference), len(candidate))
    rng = np.random.default_rng(seed)
    if paired:
        a, b = [reference[k] for k in common], [candidate[k] for k in common]
    else:
        a, b = list(reference.values()), list(candidate.values())
        if len(a) < 2 or len(b) < 2:
            return None
    pooled = any(len(x) > 1 for x in a + b)
    resamples = N_RESAMPLES_POOLED if pooled else N_RESAMPLES
    idx_a = rng.integers(0, len(a), size=(resamples, len(a)))
    idx_b = idx_a if paired else rng.integers(0, len(b), size=(resamples, len(b)))
    stat_a, stat_b = _stat(a, idx_a, q), _stat(b, idx_b, q)
    ok = stat_a > 0
    if not ok.any():
        return None
    ratios = stat_b[ok] / stat_a[ok]
    alpha = 1.0 - CONFIDENCE
    low, high = np.percentile(ratios, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high), "bootstrap (paired)" if paired else "bootstrap"


def trials_ratio(reference: Sequence[float], candidate: Sequence[float]) -> tuple[float, float, str] | None:
    """Interval of the candidate/reference ratio from per-trial values.

    Equal counts are paired by index (interleaved trials share the host's drift):
    a Student-t interval of the mean log ratio. Otherwise a bootstrap of the means.
    """
    if len(reference) < 2 or len(candidate) < 2 or min(reference) <= 0 or min(candidate) <= 0:
        return None
    if len(reference) == len(candidate):
        from pytest_rllm.stats import mean_interval

        _, low, high = mean_interval(np.log(np.asarray(candidate) / np.asarray(reference)), CONFIDENCE)
        return math.exp(low), math.exp(high), f"{len(reference)} paired trials"
    as_arrays = lambda xs: {i: np.asarray([x]) for i, x in enumerate(xs)}  # noqa: E731
    found = bootstrap_ratio(as_arrays(reference), as_arrays(candidate), None)
    return None if found is None else (found[0], found[1], f"{len(reference)} vs {len(candidate)} trials")
