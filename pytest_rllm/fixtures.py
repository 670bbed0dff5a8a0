"""Run fixtures: a test names the runs it reads by asking for them, and the plan is read from that.

    baseline_run = run_fixture("baseline", "main")

    def test_tail(baseline_run, rllm_finding):
        rllm_finding.at_least(baseline_run.summary()["output_tokens_p99_over_p50"], "length_tail_ratio", "length p99/p50")

A run fixture's function carries `rllm_needs(settings, param) -> [(configuration, workload), ...]`;
at collection the plugin reads it from every item's fixtures (with the item's
indirect parameter, for `preset_run`), so each engine starts once and runs all of
its workloads together. The `rllm_needs` marker stays for checks that call
`rllm_run` themselves.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import pytest

from pytest_rllm.choices import REFERENCE

Pair = tuple[str, str]


def plans(needs: Callable[[Any, Any], list[Pair]]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a fixture function (under @pytest.fixture) with the runs it reads: needs(settings, param)."""

    def mark(func: Callable[..., Any]) -> Callable[..., Any]:
        func.rllm_needs = needs  # type: ignore[attr-defined]
        return func

    return mark


def run_fixture(label: str, workload: str = "main", *, doc: str | None = None) -> Any:
    """A function-scoped fixture that returns the cached (label, workload) run; assign it to a module name."""

    def run(rllm_run: Any) -> Any:
        return rllm_run(label, workload)

    run.__doc__ = doc or f"The {label!r} configuration's run of the {workload!r} workload."
    return pytest.fixture(plans(lambda settings, param: [(label, workload)])(run))


baseline_run = run_fixture("baseline", "main", doc="""The baseline configuration's run of the main workload.

    def test_done(baseline_run):
        assert baseline_run.summary()["completed"] > 0
""")
gamma_run = run_fixture("baseline", "gamma", doc="The baseline configuration under Gamma-distributed arrivals.")


def _preset_needs(settings: Any, param: Any) -> list[Pair]:
    return [(str(param), "main")] if param is not None else []


@pytest.fixture
@plans(_preset_needs)
def preset_run(rllm_run: Any, request: pytest.FixtureRequest) -> Any:
    """The main-workload run of the preset given as an indirect parameter.

        @pytest.mark.parametrize("preset_run", ["quant-int8", "quant-fp8"], indirect=True)
        def test_fast(baseline_run, preset_run): ...
    """
    if not hasattr(request, "param"):
        raise pytest.UsageError(
            f"{request.node.nodeid}: preset_run needs a preset; parametrize it: "
            "@pytest.mark.parametrize('preset_run', ['quant-int8'], indirect=True)"
        )
    return rllm_run(str(request.param), "main")


def _reference_needs(settings: Any, param: Any) -> list[Pair]:
    if getattr(settings, "reference_model", None):
        return [(REFERENCE, "main")]
    return [("baseline", "no-thinking"), ("baseline", "main")]


@pytest.fixture
@plans(_reference_needs)
def reference_run(rllm_run: Any, rllm_settings: Any) -> Any:
    """The plain-LLM reference: --rllm-reference-model, else the same model with thinking off.

        def test_x(reference_run):
            assert reference_run.summary()["completed"] > 0
    """
    if rllm_settings.reference_model:
        return rllm_run(REFERENCE, "main")
    run = rllm_run("baseline", "no-thinking")
    thinking = rllm_run("baseline", "main")
    # A model whose template ignores enable_thinking (R1-Distill) still reasons: no reference then.
    reasoning_chars = sum(len(r.reasoning_text) for r in run.records)
    thinking_chars = sum(len(r.reasoning_text) for r in thinking.records) or 1
    if reasoning_chars > 0.5 * thinking_chars:
        pytest.skip(
            "the model kept reasoning with enable_thinking=false, so it offers no plain reference; "
            "pass --rllm-reference-model=PLAIN_LLM (e.g. Qwen/Qwen2.5-Math-7B)"
        )
    return run


@pytest.fixture
@plans(lambda settings, param: [("baseline", "main")])
def rllm_reasoning_model(rllm_run: Any) -> Any:
    """For findings only a reasoning model makes: skips, with what was measured, when the baseline run showed no reasoning.

        def test_thinking_pays(rllm_reasoning_model, baseline_run, reference_run, rllm_finding): ...

    The answer is the same for every test: it is read from the one cached baseline run.
    """
    from pytest_rllm.checks.reasoning_evidence import reasoning_evidence

    evidence = reasoning_evidence(rllm_run("baseline", "main"))
    if not evidence.is_reasoning_model:
        pytest.skip(evidence.skip_reason())
    return evidence


@pytest.fixture
def rllm_finding(rllm_settings: Any, request: pytest.FixtureRequest) -> Any:
    """The test's finding checks, each recorded on its report as a typed verdict.

        def test_kv_fluctuates(baseline_run, rllm_finding):
            rllm_finding.at_least(baseline_run.summary()["kv_cache_usage_cv"], "kv_cv", "KV usage CV")
    """
    from pytest_rllm.checks.finding import Finding

    return Finding(rllm_settings, request.node.user_properties)


def needs_of(item: pytest.Item, settings: Any) -> list[Pair]:
    """The (configuration, workload) runs an item reads: its rllm_needs markers, then its run fixtures."""
    pairs: list[Pair] = []

    def add(found: Iterable[Any]) -> None:
        for pair in found:
            if tuple(pair) not in pairs:
                pairs.append(tuple(pair))  # type: ignore[arg-type]

    for marker in item.iter_markers("rllm_needs"):
        add(marker.args)
    info = getattr(item, "_fixtureinfo", None)
    params = getattr(getattr(item, "callspec", None), "params", {})
    for name in getattr(item, "fixturenames", ()):
        defs = info.name2fixturedefs.get(name) if info is not None else None
        needs = getattr(defs[-1].func, "rllm_needs", None) if defs else None
        if needs is not None:
            add(needs(settings, params.get(name)))
    return pairs


@pytest.fixture
def rllm_ab(rllm_candidate: Any, request: pytest.FixtureRequest) -> Any:
    """A preset's side-by-side comparison with the candidate engine (candidate_engine.ABPair), run once per session.

        def test_faster(rllm_ab, rllm_finding):
            rllm_finding.ab(rllm_ab("baseline").row("output_throughput"), "candidate throughput")

    Its rows travel with the test's report (the A/B table of the terminal, JSON and HTML reports).
    """
    from pytest_rllm.properties import AB_PROPERTY
    from pytest_rllm.session import RunFailed, RunUnavailable

    def get(label: str = "baseline", workload: str = "main") -> Any:
        __tracebackhide__ = True
        try:
            pair = rllm_candidate.pair(label, workload)
        except RunUnavailable as exc:
            skip, failure = str(exc), None
        except RunFailed as exc:
            skip, failure = None, str(exc)
        else:
            from pytest_rllm.candidate_engine import engine_texts

            reference, candidate = engine_texts(pair)
            known = {(r.get("run"), r.get("metric")) for k, r in request.node.user_properties if k == AB_PROPERTY}
            request.node.user_properties.extend(
                (AB_PROPERTY, {**row.to_dict(), "reference_engine": reference, "candidate_engine": candidate,
                               "trials": len(pair.reference.trials), "engines_up": "both" if pair.keep_both else "one",
                               "redone": list(pair.redone)})
                for row in pair.rows if (row.run, row.metric) not in known)
            return pair
        if skip is not None:
            pytest.skip(skip)
        pytest.fail(f"the candidate comparison of {label} failed: {failure}", pytrace=False)

    return get


def served_model_of(session: Any) -> Callable[[], str]:
    """Endpoint mode: a callable giving the model the endpoint serves to this session (rllm_baseline keys by it).

    The session's endpoint engine knows it once started (GET /v1/models); if no run
    started it yet, it is started now (for an endpoint that is that one request).
    """

    def resolve() -> str:
        __tracebackhide__ = True
        from pytest_rllm.session import RunFailed, RunUnavailable

        for info in session.engine_infos.values():
            if info.get("kind") == "endpoint" and info.get("model"):
                return str(info["model"])
        try:
            return str(session.engine("baseline").served_model)
        except RunUnavailable as exc:
            skip, failure = str(exc), None
        except RunFailed as exc:
            skip, failure = None, str(exc)
        # Outside the except clauses: the message is the whole story, no chained traceback.
        if skip is not None:
            pytest.skip(skip)
        pytest.fail(f"rllm_baseline: baselines are stored under the model the endpoint serves, "
                    f"and the endpoint could not say which: {failure}", pytrace=False)

    return resolve
