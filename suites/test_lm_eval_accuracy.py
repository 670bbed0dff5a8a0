"""Accuracy on the same serving run, cross-checked: lm-eval's score agrees with the built-in grader.

Opt-in: --rllm-accuracy=lm-eval:TASKS (e.g. lm-eval:rllm_procedural, a task shipped offline).
"""

from __future__ import annotations

import math

import pytest


@pytest.mark.rllm_needs(("baseline", "main"))
def test_lm_eval_agrees_with_the_builtin_grader(rllm_session, rllm_settings, rllm_finding):
    """lm-eval's score on the engine under test lies inside the built-in grader's 95% interval for the same replies."""
    if not rllm_settings.accuracy.startswith("lm-eval:"):
        pytest.skip("lm-eval bridge not requested: pass --rllm-accuracy=lm-eval:rllm_procedural")
    from pytest_rllm.accuracy.lm_eval_bridge import builtin_scores, format_side_by_side, parse_tasks, run_lm_eval, side_by_side
    from pytest_rllm.session import RunFailed, RunUnavailable

    try:
        engine = rllm_session.engine("baseline")
    except RunUnavailable as exc:
        pytest.skip(str(exc))
    except RunFailed as exc:
        pytest.fail(str(exc), pytrace=False)
    if engine.base_url is None:
        pytest.skip("lm-eval talks HTTP: use --rllm-engine=server or --rllm-endpoint")
    samples: dict = {}
    results = run_lm_eval(engine.base_url, engine.served_model, parse_tasks(rllm_settings.accuracy),
                          api_key=rllm_session.api_key(), max_gen_toks=rllm_settings.max_tokens, samples=samples)
    rows = side_by_side(results, builtin_scores(samples))
    for line in format_side_by_side(rows).splitlines():
        rllm_finding.evidence(line)
    for row in rows:
        rllm_finding.require(not math.isnan(row["lm_eval"]), f"lm-eval returned no score for {row['task']}")
        rllm_finding.require(row["lm_eval_within_builtin_ci"],
                f"{row['task']}: lm-eval {row['lm_eval']:.3f} is outside the built-in 95% interval "
                f"[{row['builtin_low']:.3f}, {row['builtin_high']:.3f}] on the same replies")
