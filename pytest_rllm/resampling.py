"""Intervals of a candidate/reference ratio, from resampled requests or from per-trial values.

Pure numpy on plain data (arrays keyed by item), so the A/B verdicts of
:mod:`pytest_rllm.candidate` are tested without an engine. Seeded: the same
data gives the same interval every run.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

CONFIDENCE = 0.95
N_RESAMPLES = 2000
N_RESAMPLES_POOLED = 400  # ITL pools every token gap, so each resample costs more


def _stat(arrays: Sequence[np.ndarray], idx: np.ndarray, stat: Callable[..., np.ndarray]) -> np.ndarray:
    """`stat` of each resample (rows of `idx`) of the requests' pooled values."""
    if all(len(a) == 1 for a in arrays):
        flat = np.concatenate(arrays)
        return stat(flat[idx], axis=1)
    return np.asarray([stat(np.concatenate([arrays[i] for i in row])) for row in idx])


def bootstrap_ratio(reference: Mapping[Any, np.ndarray], candidate: Mapping[Any, np.ndarray],
                    stat: Callable[..., np.ndarray], *, seed: int = 0) -> tuple[float, float, str] | None:
    """Percentile bootstrap interval of stat(candidate) / stat(reference), over requests.

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
    stat_a, stat_b = _stat(a, idx_a, stat), _stat(b, idx_b, stat)
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
    found = bootstrap_ratio(as_arrays(reference), as_arrays(candidate), np.mean)
    return None if found is None else (found[0], found[1], f"{len(reference)} vs {len(candidate)} trials")
