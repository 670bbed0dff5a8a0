"""Accuracy measured on the same serving run.

- :mod:`pytest_rllm.accuracy.grading`: grade each RequestRecord (math, choice,
  exact), reasoning-aware, and summarise with Wilson intervals (pure, light).
- :mod:`pytest_rllm.accuracy.lm_eval_bridge`: opt-in lm-eval tasks against the
  running server (lm-eval is imported only when used).

Nothing is imported here, so ``import pytest_rllm.accuracy`` stays free.
"""
