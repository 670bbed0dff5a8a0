"""The workloads the suites run on every configuration, and where a gamma workload's rate comes from."""

from __future__ import annotations

from dataclasses import dataclass

from pytest_rllm.results import RunResult
from pytest_rllm.runner import Workload


# The workloads the suites use, in the order a configuration runs them ("main"
# first: GAMMA_RATE reads baseline's main run).
WORKLOADS: dict[str, Workload] = {
    "main": Workload("main"),
    "no-thinking": Workload("no-thinking", thinking=False),
    "shared-prefix": Workload("shared-prefix", shared_prefix=True),
    "gamma": Workload("gamma", arrival="gamma"),
}


# Worked examples in the shared prefix (~300 characters): long enough to span
# several KV blocks, short enough that prefix caching off stays affordable on CPU.
SHARED_PREFIX_EXAMPLES = 6


@dataclass(frozen=True)
class GammaRatePolicy:
    """The offered rate of a gamma workload when --rllm-arrival does not give one.

    Load near what the engine sustained in a closed batch, in Gamma bursts: the
    study's real-world workload shape. The rate is the baseline configuration's
    main-run request throughput, the same for every configuration so that their
    gamma runs compare; before that run exists, `fallback_rate`.
    """

    burstiness: float = 0.5  # CV 1.41
    fallback_rate: float = 4.0  # requests/s
    min_rate: float = 0.1

    def arrival(self, baseline_main: RunResult | None) -> tuple[str, str]:
        """(arrival text, where its rate came from)."""
        if baseline_main is None:
            return f"gamma:{self.fallback_rate:.4g}:{self.burstiness:g}", "fallback rate: no baseline main run yet"
        rate = max(baseline_main.summary().get("request_throughput", self.fallback_rate), self.min_rate)
        return f"gamma:{rate:.4g}:{self.burstiness:g}", "baseline/main request_throughput"


GAMMA_RATE = GammaRatePolicy()
