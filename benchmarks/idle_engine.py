"""Does an idle second vLLM server take CPU from the active one? (candidate mode keeps both up on CPU)

Runs the baseline main workload on the reference engine in alternating rounds:
alone, then with a second vLLM server up and idle (the candidate installation's,
or this one's), and prints each round's output tok/s, the idle server's own CPU
seconds during the round (its process group, from /proc), and the ratio of the
with/without rounds (geometric mean, paired by round).

    python benchmarks/idle_engine.py --rounds 3 [--python /work/candidate-venv-0.31.0/bin/python]
    python benchmarks/idle_engine.py --rounds 5 --paused   # beside a paused server (--rllm-start-ahead)
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import engine_env, load_average, machine  # noqa: E402

from pytest_rllm.candidate_engine import group_cpu_seconds  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--python", default=None, help="the idle server's python (default: this installation)")
    parser.add_argument("--num-prompts", type=int, default=100)
    parser.add_argument("--paused", action="store_true",
                        help="pause the second server (SIGSTOP), as --rllm-start-ahead leaves a server waiting its turn")
    args = parser.parse_args()
    engine_env()
    from pytest_rllm.engines.server import VllmServer
    from pytest_rllm.engines.spec import build_spec
    from pytest_rllm.pocket import MODEL_DIR, REASONING_PARSER
    from pytest_rllm.session import RllmSession
    from pytest_rllm.settings import RllmSettings

    settings = RllmSettings(num_prompts=args.num_prompts)
    log_dir = Path(tempfile.mkdtemp(prefix="rllm-idle-"))
    session = RllmSession(settings, log_dir=log_dir)
    spec = build_spec("baseline", settings, str(MODEL_DIR))
    print(machine(), "|", load_average())
    print("idle server:", args.python or "this installation", "(paused)" if args.paused else "")
    rows = []
    try:
        session.measure("baseline", "main", trials=1)  # start + warm-up + one unrecorded run
        for index in range(args.rounds):
            for with_idle in (False, True):
                idle = None
                if with_idle:
                    idle = VllmServer(spec, reasoning_parser=REASONING_PARSER, startup_timeout=600, log_dir=log_dir,
                                      python=args.python)
                    idle.start()
                    time.sleep(5)  # past its start-up work
                    if args.paused:
                        idle.pause()
                cpu0 = group_cpu_seconds(idle.proc.pid) if idle else 0.0
                run = session.measure("baseline", "main", trials=1)
                cpu1 = group_cpu_seconds(idle.proc.pid) if idle else 0.0
                if idle:
                    idle.stop()
                s = run.summary()
                rows.append((index, with_idle, s["output_throughput"], run.t_end - run.t_start, cpu1 - cpu0,
                             run.host.get("foreign_cpu_share")))
                print(f"round {index} {'with idle server' if with_idle else 'alone           '}: "
                      f"{s['output_throughput']:.0f} tok/s, {run.t_end - run.t_start:.1f}s, idle server CPU "
                      f"{cpu1 - cpu0:.2f}s, foreign share {run.host.get('foreign_cpu_share', float('nan')):.1%}", flush=True)
    finally:
        session.close()
    ratios = [w[2] / a[2] for a, w in zip(rows[0::2], rows[1::2])]
    geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    idle_cpu = [w[4] / w[3] for w in rows[1::2]]
    print(f"with/without idle server, output tok/s: {', '.join(f'x{r:.3f}' for r in ratios)}; geometric mean x{geo:.3f}")
    print(f"idle server's CPU during the runs: {', '.join(f'{c:.1%}' for c in idle_cpu)} of one core")


if __name__ == "__main__":
    main()
