"""Shared pytest setup: the tests folder goes on ``sys.path`` so test modules can ``import harness``
(whatever the import mode), and a seeded ``rng`` fixture. Slow tests are deselected by pyproject's
``addopts = -m 'not slow'``; run them with ``-m slow``."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240611)
