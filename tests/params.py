"""Shared parametrisation for the test files: implementations in rotation across cases,
and hypothesis example budgets that the ``slow`` profile scales up.

The default run (``python -m pytest -n 2``) is sized to about ten minutes on two cores;
``python -m pytest -m slow`` runs every (case, implementation) pair that rotation left
out, and ``HYPOTHESIS_PROFILE=slow`` multiplies every random-configuration budget.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

#: ``HYPOTHESIS_PROFILE=slow`` runs every ``examples(n)`` test with this many times n
SLOW_EXAMPLES_FACTOR = 20


def examples(n: int, **kwargs) -> settings:
    """``settings(max_examples=n)`` in the default run; ``SLOW_EXAMPLES_FACTOR * n``
    under ``HYPOTHESIS_PROFILE=slow`` (an explicit budget would override the profile's)."""
    slow = os.environ.get("HYPOTHESIS_PROFILE") == "slow"
    return settings(max_examples=n * (SLOW_EXAMPLES_FACTOR if slow else 1), **kwargs)


def rotated(cases, impls, ids=None) -> list:
    """Every (case, implementation) pair as a ``pytest.param``: by default each case
    runs one implementation, taken in turn, and the other pairs are marked ``slow``.
    Ids are ``<case>-<impl>``: the case itself where it is a string, else ``ids[i]``
    or its index."""
    params = []
    for i, case in enumerate(cases):
        name = ids[i] if ids else case if isinstance(case, str) else str(i)
        for j, impl in enumerate(impls):
            marks = () if j == i % len(impls) else (pytest.mark.slow,)
            params.append(pytest.param(case, impl, marks=marks, id=f"{name}-{impl}"))
    return params
