"""Shared by every suite: the repo root importable (`jobs`, `scripts.devstack`, `bench`)."""
from __future__ import annotations

import sys
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[1])
if REPO not in sys.path:
    sys.path.insert(0, REPO)
