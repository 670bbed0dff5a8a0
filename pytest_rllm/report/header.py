"""The "rllm:" lines of pytest's report header: model, engine, hardware, dtype, the workload knobs and the candidate."""

from __future__ import annotations

import os

from pytest_rllm.hardware import hardware_key_for
from pytest_rllm.settings import RllmSettings


def header_lines(settings: RllmSettings) -> list[str]:
    """What this session will measure, said before any engine starts."""
    if settings.endpoint:
        engine = f"endpoint {settings.endpoint}"  # its version is known once it answered: the rllm section says it
        model = _endpoint_model_text(settings)
    else:
        from pytest_rllm.engines.identity import local_identity

        engine = f"{settings.engine} ({local_identity().text})"
        model = "pocket (embedded reasoning model)" if settings.uses_embedded_model else settings.model
    lines = [
        f"rllm: model={model} engine={engine} hardware={hardware_key_for(settings)}",
        f"rllm: optimizations={','.join(settings.optimizations)} dataset={','.join(settings.dataset)} "
        f"arrival={settings.arrival} max_tokens={settings.max_tokens} seed={settings.seed}",
    ]
    if not settings.endpoint:  # an endpoint serves in the dtype and parser it was started with
        from pytest_rllm.engines.spec import dtype_for

        lines.append(f"rllm: {_reasoning_text(settings)}")
        lines.append(f"rllm: dtype={dtype_for(settings).text}")
    if settings.has_candidate:
        version = ""
        if settings.candidate_python:
            from pytest_rllm.parsers import probe_python_vllm

            found = probe_python_vllm(settings.candidate_python)  # cached: checked when the option was read
            version = f" ({found[0]} {found[1]})" if isinstance(found, tuple) else ""
        lines.append(f"rllm: candidate={settings.candidate_text()}{version} "
                     f"optimizations={','.join(settings.candidate_optimizations)} engines={settings.candidate_engines}")
    return lines


def _endpoint_model_text(settings: RllmSettings) -> str:
    """The header's model in endpoint mode: the name the server serves, asked of it (GET /v1/models)."""
    from pytest_rllm.engines.base import EngineStartError
    from pytest_rllm.engines.endpoint import served_model_ids

    wanted = settings.served_model_wanted
    key = os.environ.get(settings.api_key_env) if settings.api_key_env else None  # never printed
    try:
        served = served_model_ids(settings.endpoint or "", api_key=key, timeout=3.0)
    except EngineStartError:
        # The first run says why, with the fix; the header only must not guess a model.
        return f"{wanted} (not checked: the endpoint did not answer)" if wanted else \
            "the endpoint's first served model (not known: the endpoint did not answer)"
    if not served:
        return f"{wanted} (the endpoint serves no model)" if wanted else "none (the endpoint serves no model)"
    if wanted is None:
        return f"{served[0]} (the endpoint's first served model)"
    if wanted not in served:
        return f"{wanted} (NOT served by the endpoint, which serves {', '.join(served)})"
    return f"{wanted} (served by the endpoint)"


def _reasoning_text(settings: RllmSettings) -> str:
    """How reasoning is told from the answer: the server's parser, or the harness's split at </think>."""
    from pytest_rllm.engines.spec import resolve_model
    from pytest_rllm.reasoning import reasoning_choice

    try:
        model = resolve_model(settings.model)
    except Exception:  # a missing embedded model: the first run says so, with the fix
        model = settings.model
    choice = reasoning_choice(settings, model)
    if settings.engine == "inprocess":
        how = "the harness splits replies at </think>" if choice.thinks else "replies are all answer"
        return f"reasoning: {how} ({choice.reason})"
    return f"reasoning_parser={choice.text}"
