"""Whether two configurations are one engine: their specs differ only in settings the running engine already resolved to.

On vLLM 0.32, `baseline` (prefix caching left to the engine) and `prefix-caching-on`
are the same engine when the engine turns prefix caching on by default. The engine's
own report of what it resolved (the labels of vllm:cache_config_info) decides; a
setting the engine does not report is never assumed.
"""

from __future__ import annotations

from typing import Any, Mapping

from pytest_rllm.engines.spec import EngineSpec

# Engine arguments whose resolved value a running engine reports, and the cache_config_info label that says it.
RESOLVED_BY_ENGINE = {"enable_prefix_caching": "enable_prefix_caching"}


def same_engine(running: EngineSpec, other: EngineSpec, cache_config: Mapping[str, Any]) -> str | None:
    """Why `other` is the engine that `running` started as (words for the report), or None where it is not."""
    if (running.model, running.extra_server_args, running.variant) != (other.model, other.extra_server_args, other.variant):
        return None
    mine, theirs = running.args(), other.args()
    resolved = []
    for name in sorted(set(mine) | set(theirs)):
        if mine.get(name) == theirs.get(name):
            continue
        label = RESOLVED_BY_ENGINE.get(name)
        reported = _as_bool(cache_config.get(label)) if label else None
        if reported is None:
            return None
        # One side left it to the engine, and the other asked for what the engine chose.
        given = [spec_args[name] for spec_args in (mine, theirs) if name in spec_args]
        if len(given) != 1 or given[0] != reported:
            return None
        resolved.append(f"{name}={reported} is the engine's default")
    return "; ".join(resolved) if resolved else "the same engine arguments"


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if str(value) in ("True", "true"):
        return True
    if str(value) in ("False", "false"):
        return False
    return None
