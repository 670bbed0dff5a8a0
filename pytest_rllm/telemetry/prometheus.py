"""Parse the engine's Prometheus text into the handful of series the suites use."""

from __future__ import annotations

import math
import urllib.parse
from typing import TYPE_CHECKING, Callable, Collection, Iterable

if TYPE_CHECKING:
    from prometheus_client.samples import Sample

# Timeline name -> (vLLM metric name without the _total suffix, how series with
# different labels combine). Usage is a fraction 0..1, averaged over engines;
# counts and counters add up.
SERIES: dict[str, tuple[str, str]] = {
    "kv_cache_usage": ("vllm:kv_cache_usage_perc", "mean"),
    "num_requests_running": ("vllm:num_requests_running", "sum"),
    "num_requests_waiting": ("vllm:num_requests_waiting", "sum"),
    "num_preemptions": ("vllm:num_preemptions", "sum"),
    "prefix_cache_queries": ("vllm:prefix_cache_queries", "sum"),
    "prefix_cache_hits": ("vllm:prefix_cache_hits", "sum"),
    "prompt_tokens": ("vllm:prompt_tokens", "sum"),
    "generation_tokens": ("vllm:generation_tokens", "sum"),
    "spec_decode_num_drafts": ("vllm:spec_decode_num_drafts", "sum"),
    "spec_decode_num_draft_tokens": ("vllm:spec_decode_num_draft_tokens", "sum"),
    "spec_decode_num_accepted_tokens": ("vllm:spec_decode_num_accepted_tokens", "sum"),
}
# Cumulative counters: a run's value is the difference between its end and start.
COUNTERS = (
    "num_preemptions",
    "prefix_cache_queries",
    "prefix_cache_hits",
    "prompt_tokens",
    "generation_tokens",
    "spec_decode_num_drafts",
    "spec_decode_num_draft_tokens",
    "spec_decode_num_accepted_tokens",
)


def _sample_names() -> frozenset[str]:
    names = {"vllm:cache_config_info"}
    for key, (name, _) in SERIES.items():
        names.add(name + "_total" if key in COUNTERS else name)
    return frozenset(names)


# The exposition names of everything the harness reads: SERIES (counters with
# their _total suffix) and the cache configuration.
SAMPLE_NAMES = _sample_names()


def name_query(names: Collection[str]) -> str:
    """The path after /metrics that asks prometheus_client for these series only.

    vLLM 0.32 answers GET /metrics from a FastAPI handler that ignores query
    parameters, and /metrics/ from prometheus_client's own ASGI app, which
    filters on ?name[]=a&name[]=b.
    """
    return "/?" + urllib.parse.urlencode([("name[]", n) for n in sorted(names)])


class MetricsScraper:
    """GET /metrics, asking only for the series the harness reads where the server can filter.

    Why: rendering all of vLLM's /metrics, 10 times a second, takes the API
    server's CPU and blocks its token-streaming event loop (benchmarks/RESULTS.md).
    The first filtered scrape decides: a server that answers it with the series
    filters (or ignores the filter and sends everything, which parses the
    same); one that refuses it (another server's 404) or returns none of the
    series (prometheus_client's multiprocess mode cannot restrict) is asked
    for everything from then on, once it has answered a plain scrape.
    """

    def __init__(self, fetch: Callable[[str], str | None]) -> None:
        self._fetch = fetch  # path after /metrics ("" or name_query(...)) -> body, or None when not answered
        self.filtering: bool | None = None  # unknown until the first filtered scrape is settled

    def text(self, only: Collection[str] | None = None) -> str | None:
        if not only or self.filtering is False:
            return self._fetch("")
        text = self._fetch(name_query(only))
        if self.filtering is None:
            if text is not None and parse_metrics(text):
                self.filtering = True
                return text
            text = self._fetch("")
            if text is not None:  # the server answers, just not the filtered form
                self.filtering = False
        return text

    def series(self) -> dict[str, float] | None:
        """{timeline name: value} of a filtered scrape; None when the server did not answer."""
        text = self.text(SAMPLE_NAMES)
        return None if text is None else parse_metrics(text)


class ScrapedMetrics:
    """metrics_text() and samples() of an engine that serves /metrics over HTTP (its `_scraper`)."""

    _scraper: MetricsScraper

    def metrics_text(self, only: Collection[str] | None = None) -> str | None:
        """/metrics as text; `only`: just these exposition names (see MetricsScraper)."""
        return self._scraper.text(only)

    def samples(self) -> dict[str, float] | None:
        """The telemetry's series from /metrics; None when it did not answer."""
        return self._scraper.series()


_WANTED = {name: (key, how) for key, (name, how) in SERIES.items()}
# A server's /metrics holds hundreds of lines (histogram buckets, process and
# GC series) and is scraped 10 times a second: a prefix test drops the lines
# no SERIES name begins before prometheus_client's parser reads the rest.
_PREFIXES = tuple(sorted({name for name, _ in SERIES.values()}))


def text_samples(text: str) -> list[Sample]:
    """Every sample of Prometheus exposition text, parsed by prometheus_client.

    A malformed line is skipped, not fatal: the text is then parsed a line at a time.
    """
    from prometheus_client.parser import text_string_to_metric_families

    try:
        return [sample for family in text_string_to_metric_families(text) for sample in family.samples]
    except ValueError:
        samples: list[Sample] = []
        for line in text.splitlines():
            try:
                samples += [sample for family in text_string_to_metric_families(line + "\n") for sample in family.samples]
            except ValueError:
                continue
        return samples


def series(samples: Iterable[Sample]) -> dict[str, float]:
    """Samples (parsed text or a prometheus_client registry's) -> {timeline name: value} for SERIES."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for sample in samples:
        name = sample.name
        if name.endswith("_total"):
            name = name[: -len("_total")]
        wanted = _WANTED.get(name)
        if wanted is None:
            continue
        value = float(sample.value)
        if math.isnan(value):
            continue
        key = wanted[0]
        sums[key] = sums.get(key, 0.0) + value
        counts[key] = counts.get(key, 0) + 1
    return {key: (sums[key] / counts[key] if SERIES[key][1] == "mean" else sums[key]) for key in sums}


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus exposition text -> {timeline name: value} for the series in SERIES."""
    return series(text_samples("".join(line + "\n" for line in text.splitlines() if line.startswith(_PREFIXES))))


def histogram_totals(text: str) -> dict[str, tuple[float, float]]:
    """{histogram name: (sum, count)}, added over its label sets, from Prometheus text."""
    totals: dict[str, list[float]] = {}
    for sample in text_samples(text):
        for suffix, index in (("_sum", 0), ("_count", 1)):
            if sample.name.endswith(suffix):
                totals.setdefault(sample.name[: -len(suffix)], [0.0, 0.0])[index] += float(sample.value)
    return {name: (total, count) for name, (total, count) in totals.items()}


def cache_labels(samples: Iterable[Sample]) -> dict[str, str]:
    """Labels of vllm:cache_config_info (block_size, cache_dtype, enable_prefix_caching, ...)."""
    for sample in samples:
        if sample.name == "vllm:cache_config_info":
            return dict(sample.labels)
    return {}


def cache_config(text: str) -> dict[str, str]:
    """cache_labels of Prometheus text."""
    return cache_labels(text_samples("".join(line + "\n" for line in text.splitlines() if line.startswith("vllm:cache_config_info"))))
