"""Seeded, exact arithmetic tasks with a difficulty knob and a step-by-step chain of thought.

One generator serves two masters: the pocket model is trained on it
(pytest_rllm.pocket.train) and the workloads draw the `procedural` data set from
it. Keeping both on the same text format is what lets the shipped model answer
the workload's prompts.

Each task has
- a short question (the user message),
- a chain of thought written one step per line (one digit, or one pick of the
  smallest number), so its length grows with the difficulty,
- one final answer line, ``Answer: <value>``, which is all the grader reads.

Pure Python on purpose: importing it must not pull numpy or torch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterable

from pytest_rllm.records import Item

DOMAINS: tuple[str, ...] = ("addition", "subtraction", "multiplication", "sorting")
# The knob: number of digits of the operands (addition, subtraction, the
# multiplicand of multiplication) or the list length minus one (sorting).
DIFFICULTIES: tuple[int, ...] = (1, 2, 3, 4, 5, 6)

ANSWER_PREFIX = "Answer: "
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


@dataclass(frozen=True)
class Task:
    domain: str
    difficulty: int
    question: str
    answer: str  # the bare value, e.g. "1234" or "3 12 57"
    thinking: str  # the chain of thought, without the <think> tags

    @property
    def answer_line(self) -> str:
        return ANSWER_PREFIX + self.answer

    def completion(self, thinking: bool = True) -> str:
        """The whole assistant message the model is trained on.

        With thinking off the think block is present but empty, as in Qwen3's
        template: the chat template writes that empty block into the prompt, so
        the model itself only produces the answer line and a reasoning parser
        sees no reasoning.
        """
        body = f"\n{self.thinking}\n" if thinking else "\n\n"
        return f"{THINK_OPEN}{body}{THINK_CLOSE}\n\n{self.answer_line}"


def _check(domain: str, difficulty: int) -> None:
    if domain not in DOMAINS:
        raise ValueError(f"unknown procedural domain {domain!r}; expected one of {', '.join(DOMAINS)}")
    if difficulty not in DIFFICULTIES:
        raise ValueError(
            f"procedural difficulty must be one of {', '.join(map(str, DIFFICULTIES))}, got {difficulty!r}"
        )


def _number(rng: random.Random, digits: int) -> int:
    """A number with exactly `digits` digits (1 digit includes 0)."""
    low = 0 if digits == 1 else 10 ** (digits - 1)
    return rng.randint(low, 10**digits - 1)


def _digits_lsb(value: int, width: int) -> list[int]:
    """Digits from least significant, zero-padded to `width`."""
    return [int(c) for c in reversed(str(value).zfill(width))]


def _with_carries(columns: list[tuple[str, int]]) -> list[str]:
    """Lines "<shown>+<carry>=<total> c<carry out>", least significant column first, then "=<result>".

    Addition and multiplication by one digit carry alike; only a column's value (x+y or x*b) differs.
    """
    lines, carry, out = [], 0, []
    for shown, value in columns:
        total = value + carry
        lines.append(f"{shown}+{carry}={total} c{total // 10}")
        out.append(total % 10)
        carry = total // 10
    if carry:
        out.append(carry)
    lines.append("=" + "".join(map(str, reversed(out))))
    return lines


def _addition(rng: random.Random, d: int) -> Task:
    a, b = _number(rng, d), _number(rng, d)
    columns = [(f"{x}+{y}", x + y) for x, y in zip(_digits_lsb(a, d), _digits_lsb(b, d))]
    lines = [f"{a}+{b}"] + _with_carries(columns)
    return Task("addition", d, f"Compute {a} + {b}.", str(a + b), "\n".join(lines))


def _subtraction(rng: random.Random, d: int) -> Task:
    a, b = _number(rng, d), _number(rng, d)
    if a < b:
        a, b = b, a
    lines = [f"{a}-{b}"]
    borrow, out = 0, []
    for x, y in zip(_digits_lsb(a, d), _digits_lsb(b, d)):
        diff = x - y - borrow
        new_borrow = 1 if diff < 0 else 0
        diff += 10 * new_borrow
        lines.append(f"{x}-{y}-{borrow}={diff} b{new_borrow}")
        out.append(diff)
        borrow = new_borrow
    # Leading zeros stay in the thinking (one digit per step) and are dropped
    # in the answer, so the answer compares exactly with str(a - b).
    lines.append("=" + "".join(map(str, reversed(out))))
    return Task("subtraction", d, f"Compute {a} - {b}.", str(a - b), "\n".join(lines))


def _multiplication(rng: random.Random, d: int) -> Task:
    a, b = _number(rng, d), rng.randint(2, 9)
    lines = [f"{a}*{b}"] + _with_carries([(f"{x}*{b}", x * b) for x in _digits_lsb(a, d)])
    return Task("multiplication", d, f"Compute {a} * {b}.", str(a * b), "\n".join(lines))


def _sorting(rng: random.Random, d: int) -> Task:
    values = [rng.randint(10, 99) for _ in range(d + 1)]
    shown = " ".join(map(str, values))
    # Selection sort, one pick per line: "smallest | what is left".
    lines = [shown]
    rest, picked = list(values), []
    while rest:
        smallest = min(rest)
        rest.remove(smallest)
        picked.append(smallest)
        lines.append(f"{smallest} | {' '.join(map(str, rest))}".rstrip())
    answer = " ".join(map(str, picked))
    return Task("sorting", d, f"Sort ascending: {shown}", answer, "\n".join(lines))


_MAKERS = {
    "addition": _addition,
    "subtraction": _subtraction,
    "multiplication": _multiplication,
    "sorting": _sorting,
}


def generate(domain: str, difficulty: int, n: int, seed: int) -> list[Task]:
    """`n` tasks of one domain and difficulty, the same for the same seed."""
    _check(domain, difficulty)
    if n < 0:
        raise ValueError(f"n must be 0 or more, got {n}")
    # A string seed is hashed deterministically (unlike hash()), and keying it
    # by cell keeps one cell's tasks independent of which other cells are drawn.
    rng = random.Random(f"procedural/{domain}/{difficulty}/{seed}")
    make = _MAKERS[domain]
    return [make(rng, difficulty) for _ in range(n)]


def parse_answer(text: str) -> str | None:
    """The value on the last ``Answer:`` line of a visible answer, or None.

    Only the text after a closed think block should be passed in: an answer cut
    off inside ``<think>`` is wrong, never parsed.
    """
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith(ANSWER_PREFIX.strip()):
            return " ".join(line[len(ANSWER_PREFIX.strip()) :].split())
    return None


def items(
    n: int,
    seed: int,
    domains: Iterable[str] | None = None,
    difficulties: Iterable[int] | None = None,
) -> list[Item]:
    """`n` items, round-robin over domain x difficulty so every cell is equally used."""
    chosen_domains = tuple(domains) if domains is not None else DOMAINS
    chosen_levels = tuple(difficulties) if difficulties is not None else DIFFICULTIES
    if not chosen_domains or not chosen_levels:
        raise ValueError("items() needs at least one domain and one difficulty")
    cells = [(dom, lvl) for lvl in chosen_levels for dom in chosen_domains]
    for dom, lvl in cells:
        _check(dom, lvl)
    per_cell = [(n - i + len(cells) - 1) // len(cells) for i in range(len(cells))]
    tasks = {cell: generate(cell[0], cell[1], count, seed) for cell, count in zip(cells, per_cell)}
    out = []
    for k in range(n):
        dom, lvl = cells[k % len(cells)]
        index = k // len(cells)
        task = tasks[(dom, lvl)][index]
        out.append(
            Item(
                id=f"procedural/{dom}/d{lvl}/{index}",
                domain=dom,
                difficulty=float(lvl),
                prompt=task.question,
                reference=task.answer,
                grader="exact",
                dataset="procedural",
            )
        )
    return out


__all__ = ["ANSWER_PREFIX", "DIFFICULTIES", "DOMAINS", "Task", "generate", "items", "parse_answer"]
