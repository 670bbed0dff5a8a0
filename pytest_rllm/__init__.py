"""pytest-rllm: serving checks for reasoning LLMs, as a pytest plugin.

Importing this package must stay cheap: it never imports vllm, torch or lm_eval
(pytest imports every installed plugin on every run). Heavy modules are imported
inside the functions that start an engine or run an evaluation.
"""

from __future__ import annotations

__version__ = "0.1.0"


class FindingFlag(UserWarning):
    """A finding of the study that did not hold here, where the study says it *may* not.

    Flags are reported, not failed. Strict gates turn them into failures with
    ``-W error::pytest_rllm.FindingFlag``.
    """


__all__ = ["FindingFlag", "__version__"]
