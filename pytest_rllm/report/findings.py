"""What a TestReport carries back to the controller: findings-table rows and baseline check outcomes.

Duck-typed on the report, so the xdist controller reads what its workers sent.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from pytest_rllm.baseline_outcome import outcomes_from_user_properties
from pytest_rllm.properties import CLAIM_PROPERTY, EVIDENCE_PROPERTY, FINDING_PROPERTY


def checks_from_user_properties(user_properties: Iterable[tuple[str, object]]) -> list[dict[str, Any]]:
    """Baseline check outcomes carried by a TestReport (on the xdist controller too)."""
    return outcomes_from_user_properties(user_properties)


def finding(claim: str, verdict: str, evidence: str = "", nodeid: str = "") -> dict[str, str]:
    """One row of the findings table. verdict: holds | flagged | fails | xfail | skipped | error."""
    return {"claim": claim, "verdict": verdict, "evidence": evidence, "nodeid": nodeid}


def expected_failure(report: Any) -> str | None:
    """The xfail reason ("" when none was given) of an xfailed test's report, else None."""
    xfail = getattr(report, "wasxfail", None)
    return None if xfail is None or not getattr(report, "skipped", False) else str(xfail)


def _assertion_message(report: Any) -> str:
    # The "E   " lines are the assertion message; the traceback above them is noise here.
    text = str(getattr(report, "longreprtext", "") or "")
    return "\n".join([line[1:].strip() for line in text.splitlines() if line.startswith("E ")][:12])


def finding_from_report(report: Any, flags: Sequence[str] = ()) -> dict[str, str] | None:
    """The findings-table row for a TestReport (duck-typed), or None when it is not a finding's verdict.

    A test is a finding when it carries a CLAIM_PROPERTY user property. The
    verdict comes from the call phase (or a setup phase that skipped or
    errored): passed -> "holds", or "flagged" when `flags` (the messages of
    FindingFlag warnings the test raised) is not empty; failed -> "fails";
    an xfailed test -> "xfail"; skipped -> "skipped"; a setup error -> "error". Evidence is the test's
    EVIDENCE_PROPERTY entries, then the flag messages, then the failure or skip reason.
    """
    props = list(getattr(report, "user_properties", None) or [])
    claims = [str(v) for k, v in props if k == CLAIM_PROPERTY]
    when = getattr(report, "when", "call")
    if not claims or (when != "call" and getattr(report, "passed", False)) or when == "teardown":
        return None
    evidence = [str(v) for k, v in props if k == EVIDENCE_PROPERTY]
    checks = [v for k, v in props if k == FINDING_PROPERTY and isinstance(v, dict)]
    evidence.extend(f"flag: {f}" for f in flags)
    xfail = expected_failure(report)
    if xfail is not None:
        # An expected failure (a known engine issue): the reason, then what failed.
        verdict = "xfail"
        evidence.append(f"expected failure ({xfail or 'no reason given'})")
        evidence.append(_assertion_message(report))
    elif getattr(report, "skipped", False):
        verdict = "skipped"
        longrepr = getattr(report, "longrepr", None)
        reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr or "")
        evidence.append(reason.removeprefix("Skipped: "))
    elif getattr(report, "failed", False):
        verdict = "fails" if when == "call" else "error"
        # rllm_finding's typed verdicts say what failed; the failure text only for other checks.
        failed = [c for c in checks if c.get("verdict") in ("fails", "inconclusive")]
        if failed and when == "call":
            verdict = "inconclusive" if all(c["verdict"] == "inconclusive" for c in failed) else "fails"
            evidence.extend(str(c.get("message") or c.get("what")) for c in failed)
        else:
            text = str(getattr(report, "longreprtext", "") or "")
            evidence.append(_assertion_message(report) or (text.splitlines() or [""])[-1])
    else:
        verdict = "flagged" if flags else "holds"
    return finding(claims[-1], verdict, "\n".join(e for e in evidence if e), str(getattr(report, "nodeid", "")))
