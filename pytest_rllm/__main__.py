"""``python -m pytest_rllm compare A.json B.json``: two saved ``--rllm-report`` files, compared offline.

A is the reference, B the candidate. Runs pair by name (configuration / workload);
each paired run prints metric | reference | candidate | ratio [95% interval] |
verdict (rules in :mod:`pytest_rllm.candidate`).

Exit status: 0 no regression, 1 a regression, 2 a usage error (a missing or
unreadable file, no runs in common, a bad flag), said in one line.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

EXIT_OK, EXIT_REGRESSED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """One line for stderr; the CLI exits 2."""


def _tolerance_arg(text: str) -> tuple[str, str]:
    from pytest_rllm.tolerance import parse_tolerance

    name, sep, tolerance = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=TOLERANCE (e.g. output_throughput=10%), got {text!r}")
    try:
        parse_tolerance(tolerance)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{name.strip()}: {exc}") from None
    return name.strip(), tolerance.strip()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pytest_rllm", description="pytest-rllm offline tools.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    compare = commands.add_parser(
        "compare", help="compare two saved --rllm-report JSON files (A reference, B candidate)",
        description="Paired A/B verdicts on two saved --rllm-report JSON files. "
                    "Exit 0: no regression; 1: a regression; 2: usage error.")
    compare.add_argument("reference", metavar="A.json", help="the reference report")
    compare.add_argument("candidate", metavar="B.json", help="the candidate report")
    compare.add_argument("--metric", action="append", default=[], metavar="NAME",
                         help="compare only this metric (repeatable); default: throughputs, latency p50/p99, "
                              "accuracy, failed/truncated counts, KV capacity")
    compare.add_argument("--tolerance", action="append", default=[], type=_tolerance_arg, metavar="NAME=TOL",
                         help="tolerance for a metric or pattern (repeatable), e.g. output_throughput=10%%, "
                              "accuracy=5pt, 'ttft_*=20%%'; default: by metric family")
    compare.add_argument("--json", action="store_true", help="print machine-readable JSON instead of the table")
    return parser


def load_runs(path: str, role: str) -> list[dict[str, Any]]:
    """The runs of a saved report; UsageError naming the file and the fix otherwise."""
    from pytest_rllm.report import read_json_report

    try:
        data = read_json_report(path)
    except FileNotFoundError:
        raise UsageError(f"{role} report {path!r} does not exist; pass a file written by pytest --rllm-report=PATH") from None
    except IsADirectoryError:
        raise UsageError(f"{role} report {path!r} is a folder; pass the JSON file written by --rllm-report=PATH") from None
    except OSError as exc:
        raise UsageError(f"cannot read {role} report {path!r}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{role} report {path!r} is not valid JSON ({exc}); rewrite it with pytest --rllm-report=PATH") from None
    except ValueError as exc:
        raise UsageError(f"{exc}; pass a file written by pytest --rllm-report=PATH") from None
    runs = data.get("runs")
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise UsageError(f"{role} report {path!r} has no list of runs; pass a file written by pytest --rllm-report=PATH")
    if not runs:
        raise UsageError(f"{role} report {path!r} holds no runs; save a session that ran engines (--rllm-report=PATH)")
    return runs


def compare_command(args: argparse.Namespace) -> int:
    from pytest_rllm.candidate import DEFAULT_METRICS, compare_reports, format_ab_table, summary_line

    reference, candidate = load_runs(args.reference, "reference"), load_runs(args.candidate, "candidate")
    metrics = list(dict.fromkeys(args.metric)) or list(DEFAULT_METRICS)
    comparison = compare_reports(reference, candidate, metrics, dict(args.tolerance))
    if not comparison.rows and not comparison.skipped:
        raise UsageError(
            f"no runs in common: {args.reference} has {', '.join(comparison.only_reference) or 'none'}; "
            f"{args.candidate} has {', '.join(comparison.only_candidate) or 'none'}; "
            "compare reports of the same configurations and workloads")
    if not comparison.rows:
        raise UsageError(f"none of the metrics {', '.join(metrics)} is in both reports; choose others with --metric")
    from pytest_rllm.report.values import engine_identities

    engines = {"reference": engine_identities(reference), "candidate": engine_identities(candidate)}
    if args.json:
        data = {"reference": args.reference, "candidate": args.candidate, "engines": engines, **comparison.to_dict()}
        print(json.dumps(data, indent=1, sort_keys=True, allow_nan=False, default=str))
    else:
        for role, path in (("reference", args.reference), ("candidate", args.candidate)):
            # Which engine each side ran, where the report recorded it: the first suspect for any change.
            texts = "; ".join(e["text"] for e in engines[role])
            print(f"{role}: {path}" + (f" ({texts})" if texts else ""))
        print()
        print(format_ab_table(comparison.rows))
        print()
        for name in comparison.only_reference:
            print(f"only in the reference: {name}")
        for name in comparison.only_candidate:
            print(f"only in the candidate: {name}")
        print(summary_line(comparison))
    return EXIT_REGRESSED if comparison.regressed else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse exits 2 on a usage error, as ours do
    try:
        return compare_command(args)
    except UsageError as exc:
        print(f"python -m pytest_rllm {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
