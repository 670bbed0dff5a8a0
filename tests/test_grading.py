"""Grading on hand-written model outputs: correct, wrong, truncated, boxed, fractions, choice, exact."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from pytest_rllm.accuracy import grading
from pytest_rllm.accuracy.grading import Grade, grade
from pytest_rllm.accuracy.summary import accuracy_summary, paired_outcomes
from pytest_rllm.records import RequestRecord


def rec(
    answer: str,
    reference: str = "42",
    grader: str = "math",
    *,
    reasoning: str = "let me think",
    finish: str | None = "stop",
    error: str | None = None,
    domain: str = "math",
    difficulty: float = 1.0,
    item: str = "i0",
    repeat: int = 0,
) -> RequestRecord:
    fields = dict(item_id=item, domain=domain, difficulty=difficulty, reference=reference, grader=grader)
    return RequestRecord(**fields, repeat=repeat, reasoning_text=reasoning, answer_text=answer,
                         finish_reason=finish, error=error)


# -- math ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "answer, reference",
    [
        ("So the total is \\boxed{42}.", "42"),
        ("The answer is 42.", "42"),
        ("Natalia sold 48+24 = 72 clips.\n#### 72", "72"),
        ("Answer: 72", "72"),
        ("**Final answer:** $1,234$", "1234"),
        ("Thus \\boxed{\\frac{3}{4}}", "\\frac{3}{4}"),
        ("The answer is 0.75", "\\frac{3}{4}"),  # decimal vs fraction
        ("The answer is $\\dfrac{3}{4}$.", "3/4"),
        ("\\boxed{\\frac{1}{2}}", "0.5"),
        ("so the answer is 2.50", "5/2"),
        ("The answer is $\\boxed{2\\sqrt{2}}$", "\\sqrt{8}"),  # equivalent expressions (math-verify)
        ("\\boxed{(x+1)^2}", "x^2+2x+1"),
        ("We get 40 + 2, so 42", "42"),  # last-number fallback
        ("Nested: \\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}"),
    ],
)
def test_math_correct(answer: str, reference: str) -> None:
    g = grade(rec(answer, reference))
    assert g.correct, g
    assert not g.truncated_in_reasoning


@pytest.mark.parametrize(
    "answer, reference",
    [
        ("The answer is 41.", "42"),
        ("\\boxed{\\frac{1}{3}}", "0.33"),
        ("\\boxed{43} ... earlier I thought \\boxed{42}? no: \\boxed{43}", "42"),  # last boxed wins
        ("Answer: 7/8", "\\frac{3}{4}"),
        ("I cannot solve this.", "42"),
    ],
)
def test_math_wrong(answer: str, reference: str) -> None:
    assert grade(rec(answer, reference)).correct is False


def test_math_extracts_last_boxed_with_nested_braces() -> None:
    g = grade(rec("first \\boxed{1} then \\boxed{\\frac{2}{3}}", "2/3"))
    assert g == Grade(True, False, "\\frac{2}{3}")


def test_math_fallback_without_math_verify(monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulate the optional extra being absent: numbers and fractions still compare exactly.
    monkeypatch.setattr(grading, "_math_verify_equal", lambda ref, ans: None)
    assert grading.math_equal("\\frac{3}{4}", "0.75")
    assert grading.math_equal("1234", "1,234")
    assert grading.math_equal("3/4", "\\dfrac{3}{4}")
    assert not grading.math_equal("3/4", "0.7")
    assert grading.math_equal("42", "42 apples")
    assert not grading.math_equal("42", "41 apples")
    # ...and an equivalent expression written differently is the documented blind spot.
    assert not grading.math_equal("2\\sqrt{2}", "\\sqrt{8}")


# -- reasoning awareness ----------------------------------------------------------
def test_budget_hit_inside_reasoning_is_wrong_and_flagged() -> None:
    # The reasoning holds the right answer, but it never reached the user.
    r = rec("", reasoning="... so the result is \\boxed{42} and I should double check", finish="length")
    assert grade(r) == Grade(False, True, None)


def test_empty_visible_answer_after_reasoning_is_truncated() -> None:
    r = rec("   \n", reasoning="The answer is 42", finish="stop")
    assert grade(r) == Grade(False, True, None)


def test_unclosed_think_block_in_raw_text_is_truncated() -> None:
    # No reasoning parser: the raw text carries the think block itself.
    r = rec("<think>so it is 42, answer: 42", reasoning="", finish="length")
    assert grade(r) == Grade(False, True, None)


def test_raw_text_think_block_is_skipped() -> None:
    # The reasoning says 41; only the text after </think> is graded.
    r = rec("<think>maybe \\boxed{41}</think>\n\nThe answer is \\boxed{42}", reasoning="")
    assert grade(r) == Grade(True, False, "42")
    r = rec("template opened it\n</think>\nAnswer: 42", reasoning="")
    assert grade(r).correct


def test_answer_cut_off_after_reasoning_is_graded_not_flagged() -> None:
    # The budget ran out inside the visible answer, after the answer was given.
    r = rec("The answer is \\boxed{42}. To double-check, we", finish="length")
    assert grade(r) == Grade(True, False, "42")


def test_errored_request_is_wrong_not_truncated() -> None:
    r = rec("The answer is 42", error="ReadTimeout")
    assert grade(r) == Grade(False, False, None)


def test_empty_reply_without_reasoning_is_wrong_but_not_truncated() -> None:
    assert grade(rec("", reasoning="", finish="stop")) == Grade(False, False, None)


# -- multiple choice ----------------------------------------------------------------
@pytest.mark.parametrize(
    "answer, expected",
    [
        ("Answer: C", "C"),
        ("The correct answer is (C).", "C"),
        ("\\boxed{C}", "C"),
        ("$\\boxed{\\text{C}}$", "C"),
        ("Options (A) and (B) are wrong, so (C)", "C"),
        ("After weighing everything:\nC", "C"),
        ("**Answer: C**", "C"),
    ],
)
def test_choice_extraction(answer: str, expected: str) -> None:
    g = grade(rec(answer, "C", "choice"))
    assert g.extracted == expected
    assert g.correct


@pytest.mark.parametrize("reference", ["C", "(C)", " c "])
def test_choice_reference_forms(reference: str) -> None:
    assert grade(rec("Answer: C", reference, "choice")).correct


def test_choice_wrong_and_missing() -> None:
    assert grade(rec("Answer: B", "C", "choice")) == Grade(False, False, "B")
    # No letter at all: wrong, nothing extracted (never guessed from prose).
    assert grade(rec("I am not sure which one.", "C", "choice")) == Grade(False, False, None)


# -- exact (procedural) ----------------------------------------------------------------
@pytest.mark.parametrize(
    "answer, reference",
    [
        ("Answer: 1234", "1234"),
        ("\n\nAnswer: 3 12 57", "3 12 57"),
        ("Answer: 3, 12, 57", "3 12 57"),
        ("Answer: [3, 12, 57]", "3 12 57"),
        ("Answer:   3  12 57  ", "3 12 57"),
        ("Answer: 1,234", "1234"),
        ("Answer: -17", "-17"),
        ("The result is \\boxed{99}", "99"),  # no Answer line: last boxed
        ("work\n\n99\n", "99"),  # no Answer line, no box: last non-empty line
        ("Answer: 5\nAnswer: 7", "7"),  # the last answer line counts
        # Free-form replies of a plain instruct model (SmolLM2-135M's own words): with no
        # Answer line, the last run of numbers answers a numeric item.
        ("To add 8 and 4, we can simply add them together: 8 + 4 = 12.", "12"),
        ("we can use the formula 2 * 6 = 12. In this case, multiply 2 by 6, which gives us 12.", "12"),
        ("So, the answer is 5141.", "5141"),
        ("The answer is S = 3", "3"),
        ("The sorted list is 12, 16, 18 and 31.", "12 16 18 31"),
        ("Sorted: 1,234 and 5,000", "1234 5000"),
        ("The capital of France:\n\nParis.", "paris"),  # a text reference keeps the last line
    ],
)
def test_exact_correct(answer: str, reference: str) -> None:
    assert grade(rec(answer, reference, "exact")).correct


@pytest.mark.parametrize(
    "answer, reference",
    [
        ("Answer: 1243", "1234"),
        ("Answer: 12 3 57", "3 12 57"),  # order matters for a sorted list
        ("Answer: 3 12", "3 12 57"),
        ("Answer: 7\nAnswer: 5", "7"),
        ("To compute 73 - 27, we subtract: 73 - 27 = 22. So, 73 - 27 is equal to 85.", "46"),
        ("So, 403 + 327 = 739.", "727"),
        ("Sorting is a fundamental operation in mathematics.", "72 82"),  # no number at all
        ("71, 97, 91, 68, 30", "30 68 71 91 97"),
        ("The capital of France is Paris. 2 million people live there.", "Paris"),
    ],
)
def test_exact_wrong(answer: str, reference: str) -> None:
    assert not grade(rec(answer, reference, "exact")).correct


def test_exact_matches_the_procedural_generator() -> None:
    # The shipped generator's own completions must grade as correct.
    from pytest_rllm.workloads import procedural

    for task in procedural.generate("sorting", 4, 3, seed=1) + procedural.generate("subtraction", 3, 3, seed=1):
        thinking, answer = task.completion().split("</think>")
        r = rec(answer, task.answer, "exact", reasoning=thinking)
        assert grade(r).correct, (task, answer)


# -- summary --------------------------------------------------------------------------
def test_accuracy_summary_shape_and_counts() -> None:
    records = [
        rec("Answer: 1", "1", "exact", domain="addition", difficulty=1),
        rec("Answer: 2", "2", "exact", domain="addition", difficulty=1),
        rec("Answer: 9", "3", "exact", domain="addition", difficulty=2),
        rec("", "4", "exact", domain="sorting", difficulty=2, finish="length"),
        rec("Answer: 5", "5", "exact", domain="sorting", difficulty=2.5, error="boom"),
    ]
    s = accuracy_summary(records)
    json.dumps(s, allow_nan=False)  # plain JSON
    o = s["overall"]
    assert (o["n"], o["correct"], o["truncated_in_reasoning"], o["errors"]) == (5, 2, 1, 1)
    assert o["accuracy"] == pytest.approx(0.4)
    assert 0.0 < o["wilson_low"] < 0.4 < o["wilson_high"] < 1.0
    assert list(s["by_domain"]) == ["addition", "sorting"]
    assert s["by_domain"]["addition"]["correct"] == 2
    assert s["by_domain"]["sorting"]["truncated_in_reasoning"] == 1
    assert list(s["by_difficulty"]) == ["1", "2", "2.5"]
    assert s["by_difficulty"]["1"]["accuracy"] == 1.0
    assert s["by_difficulty"]["2"] == {
        "n": 2, "correct": 0, "accuracy": 0.0, "wilson_low": 0.0,
        "wilson_high": pytest.approx(0.6576, abs=1e-4), "truncated_in_reasoning": 1, "errors": 0,
    }


def test_accuracy_summary_empty_run() -> None:
    s = accuracy_summary([])
    assert s["overall"]["n"] == 0 and math.isnan(s["overall"]["accuracy"])
    assert (s["overall"]["wilson_low"], s["overall"]["wilson_high"]) == (0.0, 1.0)
    assert s["by_domain"] == {} and s["by_difficulty"] == {}


def test_paired_outcomes_align_by_item_and_repeat() -> None:
    a = [rec("Answer: 1", "1", "exact", item="x"), rec("Answer: 0", "2", "exact", item="y"),
         rec("Answer: 3", "3", "exact", item="z")]
    b = [rec("Answer: 2", "2", "exact", item="y"), rec("Answer: 9", "1", "exact", item="x"),
         rec("Answer: 1", "1", "exact", item="x", repeat=1)]
    ac, bc, keys = paired_outcomes(a, b)
    assert keys == [("x", 0), ("y", 0)]
    assert (ac, bc) == ([True, False], [False, True])


def test_importing_grading_stays_light() -> None:
    code = (
        "import sys, pytest_rllm.accuracy.grading, pytest_rllm.accuracy.summary, pytest_rllm.stats\n"
        "bad = [m for m in ('vllm', 'torch', 'lm_eval', 'scipy', 'math_verify') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
