"""RllmSettings: every --rllm-* option resolved once per session, frozen, hashable and serialisable.

Resolution is CLI, then ini, then the default (options.raw_values reads the texts);
each text is parsed by its option's parser (parsers.py), then the combinations
that cannot work are refused, so a bad value stops the run before any engine starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_rllm.choices import EMBEDDED_MODEL, PRESETS
from pytest_rllm.options import OPTIONS_BY_NAME, raw_values
from pytest_rllm.parsers import SettingError, parse_served_model

if TYPE_CHECKING:
    import pytest


NO_CANDIDATE = ("no candidate engine given: pass --rllm-candidate-python=PATH (another installation), "
                "--rllm-candidate-endpoint=URL (a running server) or --rllm-candidate-server-arg=ARG "
                "(this installation with other engine flags)")


def _check_candidate(values: dict[str, Any]) -> None:
    """Combinations of the candidate options that cannot work, refused before anything starts."""
    python, endpoint = values.get("candidate_python"), values.get("candidate_endpoint")
    if python and endpoint:
        raise SettingError("--rllm-candidate-python and --rllm-candidate-endpoint are two different candidates; "
                           "give one of them (the endpoint is a server already running, the python one the harness starts)")
    if endpoint and values.get("candidate_server_arg"):
        raise SettingError("--rllm-candidate-server-arg needs an engine the harness starts; --rllm-candidate-endpoint "
                           "is already running with its own flags: pass them where that server starts")
    for name in ("candidate_api_key_env", "candidate_model"):
        if values.get(name) and not endpoint:
            cli = OPTIONS_BY_NAME[name].cli
            raise SettingError(f"{cli} applies to --rllm-candidate-endpoint=URL, which is not given")
    if (python or values.get("candidate_server_arg")) and values.get("endpoint"):
        raise SettingError("--rllm-endpoint serves the reference from elsewhere, so a candidate the harness starts "
                           "would not be known to serve the same model: compare it with --rllm-candidate-endpoint=URL, "
                           "or drop --rllm-endpoint")
    if (python or values.get("candidate_server_arg")) and values.get("engine") == "inprocess":
        raise SettingError("--rllm-candidate-python / --rllm-candidate-server-arg start the candidate as a server; "
                           "compare it with a server reference: drop --rllm-engine=inprocess")


def _check_dtype(values: dict[str, Any]) -> None:
    if values.get("dtype", "auto") != "auto" and values.get("endpoint"):
        raise SettingError(f"--rllm-dtype={values['dtype']} applies to engines the harness starts; --rllm-endpoint "
                           f"serves in the dtype it was started with: pass --dtype where that server starts")


def _check_run_store(values: dict[str, Any]) -> None:
    if values.get("no_cache") and values.get("reuse_runs"):
        raise SettingError("--rllm-reuse-runs reads the run store that --rllm-no-cache switches off: pass one of them")
    if values.get("from_report") and values.get("update_baselines", "none") != "none":
        raise SettingError("--rllm-update-baselines records what this session measures; --rllm-from-report measures "
                           "nothing: record baselines from a session that generates its runs")


def _frozen(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


@dataclass(frozen=True)
class RllmSettings:
    """All options, resolved once per session; frozen, hashable, serialisable."""

    model: str = EMBEDDED_MODEL
    engine: str = "server"
    endpoint: str | None = None
    api_key_env: str | None = None
    optimizations: tuple[str, ...] = PRESETS
    draft_model: str | None = None
    quantized_model: tuple[tuple[str, str], ...] = ()
    reference_model: str | None = None
    server_arg: tuple[str, ...] = ()
    dtype: str = "auto"
    reasoning_parser: str = "auto"
    startup_timeout: float = 600.0
    request_timeout: float = 600.0
    run_timeout: float = 3600.0
    dataset: tuple[str, ...] = ("procedural",)
    num_prompts: int = 100
    repeats: int = 1
    trials: int = 1
    warm_up: int = 8
    max_tokens: int = 4096
    temperature: float = 0.6
    top_p: float = 0.95
    seed: int = 0
    arrival: str = "batch"
    max_concurrency: int | None = None
    slo: tuple[tuple[str, float], ...] = ()
    accuracy: str = "builtin"
    threshold: tuple[tuple[str, float], ...] = ()
    metrics_interval: float | None = None  # None: the engine's own (Engine.metrics_interval)
    baseline_dir: str | None = None
    update_baselines: str = "none"
    tolerance: tuple[tuple[str, str], ...] = ()
    hardware_key: str | None = None
    report: str | None = None
    html: str | None = None
    gpus_per_worker: int = 1
    cache_dir: str = ".rllm_cache"
    no_cache: bool = False
    reuse_runs: bool = False
    from_report: str | None = None
    candidate_python: str | None = None
    candidate_endpoint: str | None = None
    candidate_api_key_env: str | None = None
    candidate_model: str | None = None
    candidate_server_arg: tuple[str, ...] = ()
    candidate_optimizations: tuple[str, ...] = ("baseline",)
    candidate_engines: str = "auto"
    start_ahead: str = "auto"
    extras: tuple[tuple[str, Any], ...] = field(default=(), compare=False)

    @classmethod
    def from_config(cls, config: pytest.Config) -> RllmSettings:
        """CLI value, else ini value, else the default; every value validated with a message naming the fix."""
        return cls.from_values(raw_values(config))

    @classmethod
    def from_values(cls, raw: dict[str, Any]) -> RllmSettings:
        """Parse raw option texts (as CLI or ini give them); unknown names are an error."""
        values: dict[str, Any] = {}
        # With an endpoint, --rllm-model is the name the server serves: any text, and
        # by default "" (the first id of its GET /v1/models), never the embedded model.
        endpoint_mode = raw.get("endpoint") is not None
        for name, text in raw.items():
            option = OPTIONS_BY_NAME.get(name)
            if option is None:
                raise SettingError(f"unknown rllm option {name!r}")
            if text is None or (option.repeatable and not text):
                continue
            parse = parse_served_model if name == "model" and endpoint_mode else option.parse
            try:
                values[name] = _frozen(parse(text))
            except SettingError as exc:
                raise SettingError(f"{option.cli} / {option.ini}: {exc}") from None
        if endpoint_mode:
            values.setdefault("model", "")
        _check_candidate(values)
        _check_dtype(values)
        _check_run_store(values)
        return cls(**values)

    @property
    def has_candidate(self) -> bool:
        """A candidate engine is given (--rllm-candidate-python, -endpoint or -server-arg)."""
        return bool(self.candidate_python or self.candidate_endpoint or self.candidate_server_arg)

    def candidate_text(self) -> str:
        """The candidate in words, for skip reasons, headers and the A/B table's title."""
        if self.candidate_endpoint:
            return f"endpoint {self.candidate_endpoint}" + (f" (model {self.candidate_model})" if self.candidate_model else "")
        parts = [f"python {self.candidate_python}"] if self.candidate_python else ["this installation"]
        if self.candidate_server_arg:
            parts.append("with " + " ".join(self.candidate_server_arg))
        return " ".join(parts)

    def replace(self, **changes: Any) -> RllmSettings:
        return dataclasses.replace(self, **changes)

    @property
    def uses_embedded_model(self) -> bool:
        return self.model == EMBEDDED_MODEL

    @property
    def served_model_wanted(self) -> str | None:
        """Endpoint mode: the model asked of the server (--rllm-model); None: the first id it serves."""
        return (self.model or None) if self.endpoint else None

    def slo_seconds(self) -> dict[str, float]:
        return dict(self.slo)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("extras")
        return data
