"""Shared by the suites that run in the jobs environment: repo and tests/ importable."""
from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
for p in (str(TESTS), str(TESTS.parent), str(TESTS.parent / "scripts")):
    if p not in sys.path:
        sys.path.insert(0, p)
