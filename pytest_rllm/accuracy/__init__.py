"""Accuracy measured on the same serving run.

- :mod:`pytest_rllm.accuracy.grading`: grade each RequestRecord (math, choice,
  exact), reasoning-aware (pure, light).
- :mod:`pytest_rllm.accuracy.summary`: accuracy with Wilson intervals, and the
  A/B pairs of two runs, from those grades (pure, light).
- :mod:`pytest_rllm.accuracy.lm_eval_bridge`: opt-in lm-eval tasks against the
  running server (lm-eval is imported only when used).

Nothing is imported here, so ``import pytest_rllm.accuracy`` stays free.
"""
