"""Time to verdict: the wall time of `pytest suites/` on the embedded default, and where it went.

    python benchmarks/time_to_verdict.py                  # the whole suites/ folder
    python benchmarks/time_to_verdict.py -- -k prefix     # anything after -- goes to pytest
    python benchmarks/time_to_verdict.py --timeout 1800
    python benchmarks/time_to_verdict.py --modes server,reuse,inprocess,xdist   # the four RESULTS.md carries
    python benchmarks/time_to_verdict.py --modes server-one,server   # servers one at a time, then started ahead

Runs pytest in a subprocess (so its imports are counted), with a JSON report,
and prints the plugin's own "time to verdict" lines (engine start, generation,
engine stop, collection/analysis/reports), the wall time seen from outside,
how many engines were started against how many configurations ran, and
whether any (configuration, workload) was generated twice.
Each cold mode starts from an empty run store; "reuse" re-checks the runs the
mode before it kept (--rllm-reuse-runs). Goals (issue 15): server engines under
5 minutes on 2 cores, in process under 3, a re-check under 15 s.
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

# What each mode adds to the pytest command. "reuse" re-checks the runs the mode before it kept
# (it must follow a cold mode); "xdist" is in process with two workers sharing one run store.
MODES = {
    "server": [],
    "server-one": ["--rllm-start-ahead=off"],  # one server at a time: what --rllm-start-ahead saves
    "inprocess": ["--rllm-engine=inprocess"],
    "reuse": ["--rllm-reuse-runs"],
    "xdist": ["--rllm-engine=inprocess", "-n", "2"],
}


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
    parser.add_argument("--modes", default="server",
                        help="comma-separated, in order: server (cold), server-one (cold, --rllm-start-ahead=off), inprocess (cold), reuse (re-check of the "
                             "previous mode's runs), xdist (in process, -n 2, cold); e.g. server,reuse,inprocess,xdist")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or (modes and modes[0] == "reuse"):
        parser.error(f"--modes: {', '.join(unknown) or 'reuse'} " + ("unknown; known: " + ", ".join(MODES) if unknown
                                                                     else "re-checks the runs of a mode before it"))
    C.header("time to verdict: pytest suites/ on the embedded default")
    suites = Path(args.suites)
    tests = sorted(suites.glob("test_*.py")) if suites.is_dir() else []
    if not tests:
        print(f"no test modules in {suites} yet: nothing to time")
        return 0
    print(f"{len(tests)} suite modules: {', '.join(t.stem for t in tests)}", flush=True)
    cache = Path(tempfile.mkdtemp(prefix="rllm-ttv-store-"))
    previous: list[str] = []
    for mode in modes:
        if mode != "reuse":
            # A cold mode starts from an empty run store; reuse re-checks with the mode before it.
            cache = Path(tempfile.mkdtemp(prefix="rllm-ttv-store-"))
            previous = MODES[mode]
        mode_args = previous + MODES["reuse"] if mode == "reuse" else MODES[mode]
        print(f"\n--- {mode} ---", flush=True)
        time_one(args, [*mode_args, f"--rllm-cache-dir={cache}", *extra])
    return 0


def time_one(args: argparse.Namespace, extra: list[str]) -> None:
    suites = Path(args.suites)
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
    verdict = verdict_block(lines)
    print(f"pytest exit code {proc.returncode}; {outcome.strip('= ')}")
    print(f"wall time seen from outside (imports included): {wall:.1f}s ({wall / 60:.1f} min)")
    if verdict:
        print("the plugin's breakdown:")
        for line in verdict:
            print("  " + line)
    else:
        print("the plugin printed no 'time to verdict' lines (no run happened?); last lines of pytest:")
        for line in lines[-15:]:
            print("  " + line)
    started = sum(int(line.split("(import + load, ")[1].split(" ")[0]) for line in verdict if "(import + load, " in line)
    if report.exists():
        data = json.loads(report.read_text())
        runs = data.get("runs", [])
        generated = Counter((r.get("label"), r.get("workload")) for r in runs if not r.get("reused"))
        labels = sorted({r.get("label") for r in runs})
        twice = {f"{k[0]}/{k[1]}": n for k, n in generated.items() if n > 1}
        print(f"configurations run: {len(labels)} ({', '.join(str(x) for x in labels)}); engines started: {started}; "
              f"runs generated: {sum(generated.values())}; reused: {sum(1 for r in runs if r.get('reused'))}; "
              f"generated twice: {twice or 'none'}")
    else:
        print("no JSON report was written")
    print(f"at end: {C.load_average()}", flush=True)


def verdict_block(lines: list[str]) -> list[str]:
    """The rllm section's "time to verdict" block: its first line and the indented lines under it."""
    out: list[str] = []
    for line in lines:
        if line.startswith("time to verdict:"):
            out.append(line)
        elif out and line.startswith("  "):
            out.append(line)
        elif out:
            break
    return out


if __name__ == "__main__":
    raise SystemExit(main())
