"""Grade every RequestRecord against its item's reference, reasoning-aware.

Rules, in order (see :func:`grade`):

1. An errored request is wrong (not truncated).
2. Only the *visible* answer is graded. If it is empty -- the token budget ran
   out before the end of thinking, or the model never closed its think block --
   the record is wrong and flagged ``truncated_in_reasoning``. The reasoning
   text is never parsed for an answer: a model that "knew" the answer but was
   cut off mid-thought did not deliver it to the user.
3. The grader named by the record picks the extraction and the comparison:
   ``math`` (math-verify's extraction and symbolic equivalence, then the
   hand-written extraction: boxed, "The answer is", "####", "Answer:"; the
   last ``\boxed{}`` wins), ``choice`` (a letter A-D) or ``exact`` (procedural items:
   an "Answer:" line, a box, "the answer is", else the reply's last run of numbers).

The module is pure: importing it pulls neither vLLM nor torch nor lm-eval.
``math-verify`` is imported lazily, on the first math grade.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from fractions import Fraction

from pytest_rllm.reasoning import THINK_OPEN, visible_text
from pytest_rllm.records import RequestRecord

CHOICE_LETTERS = "ABCD"


@dataclass(frozen=True)
class Grade:
    correct: bool
    truncated_in_reasoning: bool
    extracted: str | None  # the answer read from the visible text; None if none was found


# -- visible text ------------------------------------------------------------
def visible_answer(record: RequestRecord) -> str | None:
    """The text the user sees (reasoning.visible_text of the answer), or None when it never left the reasoning."""
    return visible_text(record.answer_text or "")


def _truncated_in_reasoning(record: RequestRecord) -> bool:
    """Empty visible answer after a reasoning phase or a hit token budget.

    A reply that is empty end to end (no reasoning, no answer, a normal stop)
    is wrong but was not cut off inside the reasoning, so it is not counted
    on that line.
    """
    return bool((record.reasoning_text or "").strip()) or record.finish_reason == "length" or (
        THINK_OPEN in (record.answer_text or "")
    )


# -- small text helpers --------------------------------------------------------
def last_boxed(text: str) -> str | None:
    r"""Content of the last ``\boxed{...}`` (or ``\fbox{...}``), braces balanced."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    for start in reversed(starts):
        depth, i = 1, start
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            return text[start : i - 1].strip()
    # "\boxed 5" (no braces) is valid LaTeX and some models write it.
    m = list(re.finditer(r"\\boxed\s+([^\s$]+)", text))
    return m[-1].group(1) if m else None


_ANSWER_LINE = re.compile(r"(?im)^[ \t*#>_-]*(?:final\s+)?answer\s*[:：]\s*(.+?)\s*$")
_ANSWER_IS = re.compile(r"(?i)(?:final\s+)?answer\s+is\s*[:：]?\s*(.+?)(?:\s*$|\.\s|\.$|\n)")
_HASHES = re.compile(r"(?m)####\s*(.+?)\s*$")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")


def _last(pattern: re.Pattern[str], text: str) -> str | None:
    found = pattern.findall(text)
    return found[-1].strip() if found else None


def _strip_wrappers(value: str) -> str:
    """Markdown and math-mode dressing around an answer: **42**, $42$, \\(42\\), 42."""
    value = value.strip()
    for _ in range(3):
        before = value
        value = value.strip().strip("*_`").strip()
        if value.startswith("$") and value.endswith("$"):
            value = value.strip("$").strip()
        if value.startswith("\\(") and value.endswith("\\)"):
            value = value[2:-2].strip()
        if value.startswith("\\[") and value.endswith("\\]"):
            value = value[2:-2].strip()
        value = value.rstrip(".").strip()
        if value == before:
            break
    return value


# -- math ----------------------------------------------------------------------
def extract_math(text: str) -> str | None:
    """The final answer of a math solution, or None.

    Preference: the last ``\\boxed{}``; then "answer is X"; then "#### X"
    (GSM8K); then an "Answer: X" line; then the last number in the text (the
    "flexible" fallback lm-eval's GSM8K uses), so a bare "... so 42" still counts.
    """
    for found in (
        last_boxed(text),
        _last(_ANSWER_IS, text),
        _last(_HASHES, text),
        _last(_ANSWER_LINE, text),
    ):
        if found:
            inner = last_boxed(found)  # "The answer is $\boxed{5}$"
            value = _strip_wrappers(inner if inner is not None else found)
            if value:
                return value
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")


def _normalise_math(value: str) -> str:
    value = _strip_wrappers(value)
    value = re.sub(r"\\text\s*\{([^{}]*)\}", r"\1", value)
    value = re.sub(r"\\(?:left|right|,|!|;|:)", "", value)
    value = value.replace("\\%", "").replace("%", "").replace("^\\circ", "").replace("^{\\circ}", "")
    value = re.sub(r"\\[dt]frac", r"\\frac", value)
    value = re.sub(r"(?<=\d),(?=\d{3}\b)", "", value)  # 1,000 -> 1000
    return re.sub(r"\s+", "", value).lower()


def _as_fraction(value: str) -> Fraction | None:
    text = _LATEX_FRAC.sub(r"(\1)/(\2)", value)
    text = text.replace("(", "").replace(")", "")
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            return Fraction(num) / Fraction(den)
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


def _fallback_equal(reference: str, answer: str) -> bool:
    """Equality without math-verify: same number (exactly, as fractions) or same normalised text."""
    ref, ans = _normalise_math(reference), _normalise_math(answer)
    if ref == ans:
        return True
    a, b = _as_fraction(ref), _as_fraction(ans)
    if b is None:
        # "42 apples", "18 dollars": a number followed by a unit in words.
        unit = re.match(r"\s*(-?[\d.,/]+)\s+[A-Za-z]", _strip_wrappers(answer))
        b = _as_fraction(_normalise_math(unit.group(1))) if unit else None
    return a is not None and b is not None and a == b


def _math_verify(reference: str, answer: str) -> tuple[bool, str] | None:
    """(math-verify's verdict, the answer it read), or None when it is not installed, fails or reads nothing."""
    try:
        from math_verify import parse, verify
    except ImportError:
        return None
    timeout = 5 if threading.current_thread() is threading.main_thread() else None  # SIGALRM: main thread only
    try:
        # parse's default extraction configs: LaTeX (boxed, math mode, "answer is"), then plain expressions.
        gold = parse(_as_latex(reference), parsing_timeout=timeout)
        pred = parse(answer, parsing_timeout=timeout)
        if not gold or not pred:
            return None
        return bool(verify(gold, pred, timeout_seconds=timeout)), str(pred[-1])
    except Exception:  # a parser crash on odd input must not fail a whole run
        return None


def _math_verify_equal(reference: str, answer: str) -> bool | None:
    """math-verify's verdict on an extracted answer, or None when math-verify is not installed or fails."""
    verdict = _math_verify(reference, _as_latex(answer))
    return None if verdict is None else verdict[0]


def _as_latex(value: str) -> str:
    # math-verify looks for math-mode or boxed answers; a bare "3/4" is wrapped.
    return value if "$" in value or "\\boxed" in value else f"${value}$"


def grade_math(reference: str, text: str) -> tuple[str | None, bool]:
    """(the extracted answer, correct) of a visible math answer.

    math-verify reads the text first; only its last ``\\boxed{}``, where it has
    one: math-verify reads boxes a few characters apart ("\\boxed{1} then
    \\boxed{2}") as one set of answers, where a model restating itself means
    the last. What it does not accept gets a second look from extract_math and
    math_equal: math-verify reads LaTeX outside math mode poorly ("Answer:
    2 \\sqrt{3}" as 2, "10^{3}" as 10, a word not at all), and it is an extra.
    """
    boxed = last_boxed(text)
    verdict = _math_verify(reference, text if boxed is None else f"$\\boxed{{{boxed}}}$")
    if verdict is not None and verdict[0]:
        return verdict[1], True
    extracted = extract_math(text)
    return extracted, extracted is not None and math_equal(reference, extracted)


def math_equal(reference: str, answer: str) -> bool:
    """Whether two math answers are equivalent.

    Uses ``math-verify`` (symbolic: 0.75 == \\frac{3}{4}, 2\\sqrt{2} ==
    \\sqrt{8}, (x+1)^2 == x^2+2x+1) when it is installed. Without it -- it is
    an optional extra -- the comparison falls back to exact rational equality
    of numbers and fractions (\\frac{3}{4}, 3/4, 0.75) and otherwise to
    normalised string equality, which misses equivalent expressions written
    differently.
    """
    if _fallback_equal(reference, answer):
        return True
    verdict = _math_verify_equal(reference, answer)
    return bool(verdict)


# -- multiple choice --------------------------------------------------------------
_L = f"[{CHOICE_LETTERS}]"
_CHOICE_PATTERNS = (
    re.compile(rf"\\boxed\s*\{{\s*(?:\\text(?:bf)?\s*\{{)?\s*\(?({_L})\)?\s*\}}?\s*\}}"),
    re.compile(rf"(?i)answer\s*(?:is)?\s*[:：]?\s*[*$]*\s*\(?({_L})\b(?![a-z'])", re.I),
    re.compile(rf"\(({_L})\)"),
    re.compile(rf"(?m)^\s*[*$]*({_L})[*$]*[.)]?\s*$"),
)


def extract_choice(text: str) -> str | None:
    """The chosen letter: ``\\boxed{C}``, ``Answer: C``, ``answer is (C)``, ``(C)``, a lone ``C``.

    Patterns are tried from the most explicit to the least, and within one
    pattern the last match wins (models restate options before concluding).
    """
    for pattern in _CHOICE_PATTERNS:
        found = pattern.findall(text)
        if found:
            return found[-1].upper()
    return None


def _reference_letter(reference: str) -> str:
    ref = reference.strip()
    letter = extract_choice(ref)
    return letter if letter is not None else ref.strip("() .").upper()


# -- exact (procedural) --------------------------------------------------------------
# A number, "1,234" as one; and a run of them, as a list is written: "3 12 57", "3, 12 and 57".
_RUN_NUMBER = r"-?\d{1,3}(?:,\d{3})+(?![\d,])|-?\d+(?:\.\d+)?"
_NUMBER_RUN = re.compile(rf"(?:{_RUN_NUMBER})(?:(?:\s*[,;]\s*|\s+and\s+|\s+)(?:{_RUN_NUMBER}))*")


def _last_number_run(text: str) -> str | None:
    """The last run of numbers in text, space-separated: "so 12, 16 and 31." -> "12 16 31"."""
    runs = _NUMBER_RUN.findall(text)
    if not runs:
        return None
    return " ".join(n.replace(",", "") for n in re.findall(_RUN_NUMBER, runs[-1]))


def extract_exact(text: str, reference: str | None = None) -> str | None:
    """The answer of a reply to an exact item.

    In order: the value on the last ``Answer:`` line; the last ``\\boxed{}``; the last
    "the answer is ..."; else, where the reference is numbers (every procedural item is), the
    last run of numbers in the reply, as lm-eval's flexible-extract reads GSM8K ("8 + 4 = 12."
    answers 12); else the last non-empty line. Against a numeric reference an extracted
    "x = 12" is read as its last run of numbers too.
    """
    numeric = reference is not None and _NUMBER_RUN.fullmatch(normalise_exact(reference)) is not None
    found = _last(_ANSWER_LINE, text)
    if found is None:
        found = last_boxed(text)
    if found is None:
        found = _last(_ANSWER_IS, text)
    if found is None and numeric:
        found = _last_number_run(text)
    if found is None:
        lines = [line for line in text.splitlines() if line.strip()]
        found = lines[-1] if lines else None
    if found is None:
        return None
    if numeric:
        found = _last_number_run(found) or found
    value = _strip_wrappers(found)
    return value or None


_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+$")


def normalise_exact(value: str) -> str:
    """Whitespace and comma insensitive form: "[1, 3,5]" -> "1 3 5"; "1,234" -> "1234"."""
    value = _strip_wrappers(value)
    if value[:1] + value[-1:] in ("[]", "()", "{}"):
        value = value[1:-1]
    if _THOUSANDS.match(value.strip()):
        return value.strip().replace(",", "")
    return " ".join(value.replace(",", " ").split()).lower()


# -- grade -------------------------------------------------------------------------
def grade(record: RequestRecord) -> Grade:
    """Grade one record: see the module docstring for the rules."""
    if record.error is not None:
        return Grade(False, False, None)
    text = visible_answer(record)
    if text is None:
        return Grade(False, _truncated_in_reasoning(record), None)
    if record.grader == "math":
        extracted, correct = grade_math(record.reference, text)
    elif record.grader == "choice":
        extracted = extract_choice(text)
        correct = extracted is not None and extracted == _reference_letter(record.reference)
    elif record.grader == "exact":
        extracted = extract_exact(text, record.reference)
        correct = extracted is not None and normalise_exact(extracted) == normalise_exact(record.reference)
    else:
        raise ValueError(f"record {record.item_id!r}: unknown grader {record.grader!r}")
    return Grade(bool(correct), False, extracted)


__all__ = [
    "CHOICE_LETTERS",
    "Grade",
    "extract_choice",
    "extract_exact",
    "extract_math",
    "grade",
    "grade_math",
    "last_boxed",
    "math_equal",
    "normalise_exact",
    "visible_answer",
]
