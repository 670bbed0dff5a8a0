"""Time to verdict: the wall time of `pytest suites/` on the embedded default, and where it went.

    python benchmarks/time_to_verdict.py                  # the whole suites/ folder
    python benchmarks/time_to_verdict.py -- -k prefix     # anything after -- goes to pytest
    python benchmarks/time_to_verdict.py --timeout 1800

Runs pytest in a subprocess (so its imports are counted), with a JSON report,
and prints the plugin's own "time to verdict" lines (engine start, generation,
engine stop, collection/analysis/reports), the wall time seen from outside,
how many engines were started against how many configurations ran, and
whether any (configuration, workload) was generated twice.
Goal (issue 9): under 15 minutes on 2 cores; aim for 5.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

MARKERS = ("time to verdict:", "  engine start", "  generation:", "  engine stop:", "  collection, analysis")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1:]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", default=str(C.ROOT / "suites"))
    parser.add_argument("--timeout", type=float, default=1800.0, help="stop pytest after this many seconds")
    parser.add_argument("--quick", action="store_true", help="fewer prompts (--rllm-num-prompts=16)")
    args = parser.parse_args(argv)
    C.header("time to verdict: pytest suites/ on the embedded default")
    suites = Path(args.suites)
    tests = sorted(suites.glob("test_*.py")) if suites.is_dir() else []
    if not tests:
        print(f"no test modules in {suites} yet: nothing to time")
        return 0
    print(f"{len(tests)} suite modules: {', '.join(t.stem for t in tests)}", flush=True)
    report = Path(tempfile.mkdtemp(prefix="rllm-ttv-")) / "report.json"
    command = [sys.executable, "-m", "pytest", str(suites), "-p", "no:cacheprovider", "-q", "-rs",
               f"--rllm-report={report}"]
    if args.quick:
        command.append("--rllm-num-prompts=16")
    command += extra
    print("$ " + " ".join(command), flush=True)
    env = dict(os.environ)
    C.engine_env()
    env.update({k: v for k, v in os.environ.items() if k not in env})
    t0 = time.perf_counter()
    # Its own process group, so a timeout ends pytest and every engine it started.
    proc = subprocess.Popen(command, cwd=C.ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        print(f"pytest did not finish within --timeout={args.timeout:g}s; stopped it")
    wall = time.perf_counter() - t0
    lines = out.splitlines()
    outcome = next((line for line in reversed(lines) if line.startswith("=") and " in " in line), lines[-1] if lines else "")
    verdict = [line for line in lines if line.startswith(MARKERS)]
    print(f"pytest exit code {proc.returncode}; {outcome.strip('= ')}")
    print(f"wall time seen from outside (imports included): {wall:.1f}s ({wall / 60:.1f} min; goal < 15 min, aim 5)")
    if verdict:
        print("the plugin's breakdown:")
        for line in verdict:
            print("  " + line)
    else:
        print("the plugin printed no 'time to verdict' lines (no run happened?); last lines of pytest:")
        for line in lines[-15:]:
            print("  " + line)
    started = next((line for line in verdict if "engine start" in line), "")
    if report.exists():
        data = json.loads(report.read_text())
        keys = Counter((r.get("label"), r.get("workload")) for r in data.get("runs", []))
        labels = sorted({label for label, _ in keys})
        twice = {f"{k[0]}/{k[1]}": n for k, n in keys.items() if n > 1}
        print(f"configurations run: {len(labels)} ({', '.join(str(x) for x in labels)}); "
              f"engines started: {started.split('(')[-1].split(')')[0] if started else 'n/a'}; "
              f"workload runs: {sum(keys.values())}; generated twice: {twice or 'none'}")
    else:
        print("no JSON report was written")
    print(f"at end: {C.load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
