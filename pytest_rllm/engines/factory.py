"""The engine a configuration runs on, from the settings: an external endpoint, vLLM in process, or `vllm serve`.

Each engine module is imported only when its kind is asked for, so importing the
plugin stays light.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from pytest_rllm.choices import REFERENCE
from pytest_rllm.engines.base import Engine, EngineStartError
from pytest_rllm.engines.spec import EngineSpec, PresetUnavailable
from pytest_rllm.reasoning import ParserChoice
from pytest_rllm.settings import RllmSettings


def api_key_from_env(name: str | None) -> str | None:
    """The API key in environment variable `name` (--rllm-api-key-env); None without a name."""
    if not name:
        return None
    key = os.environ.get(name)
    if not key:
        raise EngineStartError(f"--rllm-api-key-env={name}: the environment variable {name} is not set")
    return key


def make_engine(settings: RllmSettings, spec: EngineSpec, label: str, *, choice: Callable[[], ParserChoice],
                gpu_ids: list[int] | None, log_dir: Path | None, python: str | None = None) -> Engine:
    """An engine for `spec`, not yet started; `python`: another installation's interpreter (a candidate's).

    `choice()` picks the reasoning parser for its model.

    An endpoint serves with its own parser, so `choice` is called only for engines the harness starts.
    """
    if settings.endpoint:
        if label not in ("baseline", REFERENCE):
            # An external server runs one fixed configuration: comparisons need engines we start.
            raise PresetUnavailable(
                f"{label} needs an engine the harness starts; --rllm-endpoint serves one fixed configuration"
            )
        from pytest_rllm.engines.endpoint import ExternalEndpoint

        # --rllm-model names what the server serves; None: the first id of its /v1/models.
        return ExternalEndpoint(spec, settings.endpoint, api_key=api_key_from_env(settings.api_key_env),
                                model=settings.served_model_wanted)
    if settings.engine == "inprocess" and python is None:  # another installation runs in its own process
        from pytest_rllm.engines.inprocess import InProcessEngine

        return InProcessEngine(spec, split_thinking=choice().thinks)
    from pytest_rllm.engines.server import VllmServer

    env = dict(os.environ)
    if gpu_ids is not None and "CUDA_VISIBLE_DEVICES" not in os.environ:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in gpu_ids)
    picked = choice()
    return VllmServer(
        spec,
        reasoning_parser=picked.parser,
        split_thinking=picked.split_by_harness,
        startup_timeout=settings.startup_timeout,
        log_dir=log_dir,
        env=env,
        python=python,
    )
