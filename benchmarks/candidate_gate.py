"""Does candidate mode fail a uniformly slower engine and pass the unchanged one, session after session?

Issue 14 asks the gate on a 2-core CPU host to fail an engine 1.5x slower and pass
the unchanged one in every one of several sessions. Across sessions, stored speeds
cannot (the host drifts 1.8x within an hour; RESULTS.md), so on these hosts that
gate is candidate mode: the engine under test and a pinned reference installation,
their trials interleaved in one session.

This runs `pytest suites/test_candidate_engine.py` repeatedly, each session a fresh
pair of engines, with the candidate given as `--rllm-candidate-python`: this
installation's python behind a wrapper that puts the candidate server's processes
in a cgroup. In the "capped" sessions the cgroup's quota is --cpus cores (the engine
is uniformly slower; the harness and the reference keep the whole machine); in the
"unchanged" sessions it is the whole machine, so both kinds of session have the
same shape. The order alternates (unchanged, capped, capped, unchanged, ...), so a
drift in the host meets both kinds.

Right means: an unchanged session passes (pytest exit 0; an inconclusive verdict is
a flag, not a failure), and a capped one fails test_candidate_does_not_lower_throughput
with output_throughput regressed.

    sudo python benchmarks/candidate_gate.py --sessions 6 --cpus 1.1 --trials 5

Needs root and a writable cgroup cpu controller (tests/cpu_cap.py says why not).
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, load_average, machine  # noqa: E402

sys.path.insert(0, str(ROOT / "tests"))
from cpu_cap import CpuCap  # noqa: E402

THROUGHPUT_TEST = "test_candidate_does_not_lower_throughput"


def wrapper(folder: Path, cap: CpuCap) -> Path:
    """A python for --rllm-candidate-python: joins the cap's cgroup, then runs this installation's python."""
    assert cap.path is not None
    path = folder / "candidate-python"
    path.write_text(
        "#!/bin/sh\n"
        "# The candidate engine: this installation, its processes in one cgroup (benchmarks/candidate_gate.py).\n"
        f"echo $$ > {cap.path / 'cgroup.procs'}\n"
        f"exec {sys.executable} \"$@\"\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def failed_tests(junit: Path) -> list[str]:
    """Names of the tests that failed or errored, from pytest's --junitxml file."""
    if not junit.exists():
        return ["(no junit file: pytest did not finish)"]
    out = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            out.append(case.get("name", "?"))
    return out


def throughput_row(report: Path) -> dict:
    if not report.exists():
        return {}
    rows = json.loads(report.read_text()).get("ab") or []
    for row in rows:
        if row.get("metric") == "output_throughput" and str(row.get("run", "")).startswith("baseline/"):
            return row
    return {}


def one_session(kind: str, cpus: float, trials: int, folder: Path, extra: list[str]) -> dict:
    folder.mkdir(parents=True)
    with CpuCap(cpus) as cap:
        python = wrapper(folder, cap)
        report, junit = folder / "ab.json", folder / "junit.xml"
        command = [sys.executable, "-m", "pytest", "suites/test_candidate_engine.py", "-p", "no:cacheprovider", "-q",
                   f"--rllm-candidate-python={python}", f"--rllm-trials={trials}",
                   f"--rllm-report={report}", f"--junitxml={junit}", *extra]
        t0 = time.monotonic()
        with open(folder / "pytest.log", "w") as log:
            rc = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
        seconds = time.monotonic() - t0
    failed = failed_tests(junit)
    row = throughput_row(report)
    return {"kind": kind, "cpus": cpus, "rc": rc, "failed": failed, "row": row, "right": verdict_right(kind, rc, failed, row),
            "seconds": seconds, "log": str(folder / "pytest.log")}


def verdict_right(kind: str, rc: int, failed: list[str], row: dict) -> bool:
    """An unchanged candidate passes the session (flags allowed); a capped one fails the throughput check, regressed."""
    if kind == "unchanged":
        return rc == 0
    return rc == 1 and any(name.startswith(THROUGHPUT_TEST) for name in failed) and row.get("verdict") == "regressed"


def describe(result: dict) -> str:
    row = result["row"]
    if row:
        ratio = f"x{row['effect']:.3f} [{row['low']:.3f}, {row['high']:.3f}]" if row.get("low") is not None \
            else f"x{row['effect']:.3f}"
        tput = f"{row['reference']:.0f} -> {row['candidate']:.0f} tok/s, {ratio}, {row['verdict']}"
    else:
        tput = "no A/B row"
    failed = ", ".join(f.replace("test_candidate_", "") for f in result["failed"]) or "none"
    return (f"{result['kind']:9} (cap {result['cpus']:.2f} cores) | rc {result['rc']} | {tput} | "
            f"failed: {failed} | {'right' if result['right'] else 'WRONG'} | {result['seconds']:.0f}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=4, help="sessions of each kind (unchanged and capped)")
    parser.add_argument("--cpus", type=float, default=1.1, help="the capped candidate's cores (the machine has %d)" % (os.cpu_count() or 0))
    parser.add_argument("--trials", type=int, default=5, help="--rllm-trials: interleaved trials per engine")
    parser.add_argument("--out", default=None, help="folder for each session's log, JSON report and junit file")
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER, help="more pytest arguments, after --")
    args = parser.parse_args()
    problem = CpuCap.unavailable()
    if problem:
        print(f"cannot cap the candidate here: {problem}", file=sys.stderr)
        return 2
    extra = args.pytest_args[1:] if args.pytest_args[:1] == ["--"] else args.pytest_args
    out = Path(args.out or tempfile.mkdtemp(prefix="rllm-candidate-gate-"))
    whole = float(os.cpu_count() or 2)
    # ABBA order: each kind meets early and late host states alike.
    order = [k for i in range(args.sessions) for k in (("unchanged", "capped") if i % 2 == 0 else ("capped", "unchanged"))]
    print(machine(), "|", load_average(), flush=True)
    print(f"{args.sessions} sessions of each kind, --rllm-trials={args.trials}, capped candidate at {args.cpus} cores; "
          f"logs in {out}", flush=True)
    results = []
    for index, kind in enumerate(order):
        cpus = whole if kind == "unchanged" else args.cpus
        result = one_session(kind, cpus, args.trials, out / f"{index:02d}-{kind}", extra)
        results.append(result)
        print(f"{time.strftime('%H:%M:%S')} session {index}: {describe(result)}", flush=True)
    for kind in ("unchanged", "capped"):
        mine = [r for r in results if r["kind"] == kind]
        print(f"{kind}: {sum(r['right'] for r in mine)} of {len(mine)} sessions right")
    return 0 if all(r["right"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
