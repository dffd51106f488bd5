#!/usr/bin/env python3
"""`make up|down|status`: the embedded stack's command line (the code is in scripts/devstack/).

    .venv-jobs/bin/python scripts/stack.py up | down | status | env | run -- CMD...
    .venv-jobs/bin/python scripts/stack.py stop SERVICE... | start SERVICE...
"""
from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as a file, not as `python -m scripts.stack`: make `scripts.` and `jobs.` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.devstack.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
