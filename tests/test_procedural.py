"""The procedural generator: seeded, exact, and harder levels think for longer."""

from __future__ import annotations

import statistics

import pytest

from pytest_rllm.workloads import procedural
from pytest_rllm.workloads.procedural import DIFFICULTIES, DOMAINS, generate, items, parse_answer


def _expected(task: procedural.Task) -> str:
    """Recompute the answer from the question with Python itself."""
    if task.domain == "sorting":
        values = [int(v) for v in task.question.split(":", 1)[1].split()]
        return " ".join(map(str, sorted(values)))
    a, op, b = task.question.removeprefix("Compute ").removesuffix(".").split()
    a, b = int(a), int(b)
    return str({"+": a + b, "-": a - b, "*": a * b}[op])


def test_has_several_domains_and_levels():
    assert len(DOMAINS) >= 2
    assert list(DIFFICULTIES) == sorted(DIFFICULTIES) and len(DIFFICULTIES) >= 3


def test_same_seed_same_tasks_other_seed_other_tasks():
    for domain in DOMAINS:
        assert generate(domain, 4, 20, seed=3) == generate(domain, 4, 20, seed=3)
        assert generate(domain, 4, 20, seed=3) != generate(domain, 4, 20, seed=4)


@pytest.mark.parametrize("domain", DOMAINS)
@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_answers_are_exact(domain, difficulty):
    for task in generate(domain, difficulty, 50, seed=11):
        assert task.answer == _expected(task), task
        assert task.domain == domain and task.difficulty == difficulty


@pytest.mark.parametrize("domain", ["addition", "subtraction", "multiplication"])
def test_operands_have_the_difficulty_as_digit_count(domain):
    for difficulty in DIFFICULTIES:
        for task in generate(domain, difficulty, 30, seed=0):
            a = task.question.split()[1]
            assert len(a) == difficulty


def test_subtraction_never_goes_negative():
    for difficulty in DIFFICULTIES:
        assert all(not t.answer.startswith("-") for t in generate("subtraction", difficulty, 100, seed=2))


def test_thinking_ends_with_the_result_the_answer_states():
    for domain in ("addition", "subtraction", "multiplication"):
        for task in generate(domain, 5, 30, seed=5):
            last = task.thinking.splitlines()[-1]
            assert last.startswith("=") and int(last[1:]) == int(task.answer)


@pytest.mark.parametrize("domain", DOMAINS)
def test_thinking_grows_with_difficulty(domain):
    means = [statistics.mean(len(t.thinking) for t in generate(domain, d, 40, seed=1)) for d in DIFFICULTIES]
    assert all(a < b for a, b in zip(means, means[1:])), means
    # One step per digit (or per pick): the step count is the difficulty plus a header and a result.
    for d in DIFFICULTIES:
        task = generate(domain, d, 1, seed=1)[0]
        assert len(task.thinking.splitlines()) >= d + 1


def test_completion_forms():
    task = generate("addition", 3, 1, seed=0)[0]
    with_thinking = task.completion(thinking=True)
    without = task.completion(thinking=False)
    assert with_thinking.startswith("<think>\n") and task.thinking in with_thinking
    assert with_thinking.endswith("</think>\n\nAnswer: " + task.answer)
    assert without == "<think>\n\n</think>\n\nAnswer: " + task.answer
    # The grader reads exactly one answer line, the last one.
    assert parse_answer(with_thinking.split("</think>")[1]) == task.answer
    assert with_thinking.count("Answer:") == 1


def test_parse_answer():
    assert parse_answer("Answer: 12") == "12"
    assert parse_answer("blah\nAnswer:  3  5 7 \n") == "3 5 7"
    assert parse_answer("no answer here") is None


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: generate("division", 1, 1, 0), "division"),
        (lambda: generate("addition", 0, 1, 0), "0"),
        (lambda: generate("addition", 7, 1, 0), "7"),
        (lambda: items(4, 0, domains=["addition", "poetry"]), "poetry"),
        (lambda: items(4, 0, difficulties=[99]), "99"),
        (lambda: generate("addition", 1, -1, 0), "-1"),
    ],
)
def test_bad_input_is_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_items_are_balanced_round_robin_and_deterministic():
    cells = len(DOMAINS) * len(DIFFICULTIES)
    drawn = items(cells * 3 + 1, seed=7)
    assert drawn == items(cells * 3 + 1, seed=7)
    assert len({it.id for it in drawn}) == len(drawn)
    counts = {}
    for it in drawn:
        counts[(it.domain, it.difficulty)] = counts.get((it.domain, it.difficulty), 0) + 1
    assert len(counts) == cells and set(counts.values()) == {3, 4}
    first = drawn[0]
    assert first.id == f"procedural/{DOMAINS[0]}/d{DIFFICULTIES[0]}/0"
    assert first.grader == "exact" and first.dataset == "procedural"
    assert first.difficulty == float(DIFFICULTIES[0])
    for it in drawn:
        task = generate(it.domain, int(it.difficulty), int(it.id.rsplit("/", 1)[1]) + 1, seed=7)[-1]
        assert (it.prompt, it.reference) == (task.question, task.answer)


def test_items_subset_of_cells():
    drawn = items(10, seed=0, domains=["sorting"], difficulties=[2, 5])
    assert {(it.domain, it.difficulty) for it in drawn} == {("sorting", 2.0), ("sorting", 5.0)}
