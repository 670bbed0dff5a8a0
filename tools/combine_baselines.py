"""Make one baseline tree from several recording sessions: each metric's entry from the session that read its median.

On the 2-core CPU hosts one `pytest suites/ --rllm-update-baselines=all` session
stores whatever the host gave it that hour: the kv-fp8-e4m3 throughput ratio read
0.60-1.77 across four quiet sessions (benchmarks/RESULTS.md), and a file holding
one session's value put the next CI run outside the band. Record three (or five)
sessions into separate folders, then keep, per metric, the entry of the session
whose value is the median, whole (value, interval, n, tolerance): a value and
its interval stay from one measurement, and one odd session cannot move it.

    for i in 1 2 3; do pytest suites/ --rllm-update-baselines=all --rllm-baseline-dir=/tmp/rec/$i; done
    python tools/combine_baselines.py /tmp/rec/1 /tmp/rec/2 /tmp/rec/3 --out baselines

A file's header (engine, configuration, hardware key) must agree across the
recordings, or the tool stops and names the file: those would be different
baselines. A metric that some sessions did not store (a speed not recorded on a
busy host) takes the median of those that did. Files are written the way the
plugin writes them (sorted, rounded, atomic), over the files of the same name under
--out; files no recording holds are left as they are.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pytest_rllm.baseline_store import BaselineError, BaselineStore, atomic_write_text, dumps  # noqa: E402

# What must be the same in every recording of one file; the metrics are what is combined.
HEADER_KEYS = ("configuration", "hardware_key", "model", "test", "engine", "schema_version")


class CombineError(Exception):
    """Recordings that cannot be one baseline; the message names the file and what differs."""


def median_entry(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The entry whose value is the median (the lower of the middle two for an even count)."""
    ordered = sorted(entries, key=lambda e: e["value"])
    return dict(ordered[(len(ordered) - 1) // 2])


def combine_files(files: Sequence[Mapping[str, Any]], name: str = "") -> dict[str, Any]:
    """One baseline file's data from several recordings of it (each a validated file's data)."""
    if not files:
        raise CombineError(f"{name}: no recording to combine")
    first = files[0]
    for other in files[1:]:
        for key in HEADER_KEYS:
            if other.get(key) != first.get(key):
                raise CombineError(f"{name}: the recordings differ in {key!r} ({first.get(key)!r} against "
                                   f"{other.get(key)!r}); record every session with the same engine and options")
    names = sorted({m for f in files for m in f["metrics"]})
    metrics = {m: median_entry([f["metrics"][m] for f in files if m in f["metrics"]]) for m in names}
    return {**{k: v for k, v in first.items() if k != "metrics"}, "metrics": metrics}


def combine_trees(roots: Sequence[Path], out: Path) -> list[str]:
    """Combine every file found under any of `roots` into `out`; returns one line per file written."""
    relative = sorted({p.relative_to(root) for root in roots for p in root.rglob("*.json")})
    lines = []
    for rel in relative:
        present = [BaselineStore(root).read(root / rel) for root in roots if (root / rel).exists()]
        data = combine_files([d for d in present if d is not None], str(rel))
        atomic_write_text(out / rel, dumps(data))
        lines.append(f"{rel}: {len(data['metrics'])} metric(s) from {len(present)} of {len(roots)} recording(s)")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recordings", nargs="+", type=Path, help="baseline folders, one per recording session")
    parser.add_argument("--out", type=Path, required=True, help="the baseline folder to write (e.g. baselines)")
    args = parser.parse_args(argv)
    missing = [str(r) for r in args.recordings if not r.is_dir()]
    if missing:
        parser.error(f"not a folder: {', '.join(missing)} (give the --rllm-baseline-dir of each recording session)")
    try:
        for line in combine_trees(args.recordings, args.out):
            print(line)
    except (CombineError, BaselineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
