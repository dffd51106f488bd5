#!/usr/bin/env python3
"""Create or complete the local `.env` from `.env.example` (`make env`).

Placeholders (values starting with ``change-me``) are replaced with fresh secrets. Runs with the
system Python before any virtual environment exists: the work is in scripts/devstack/dotenv.py,
standard library only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if not __package__:  # run as a file, not as `python -m scripts.make_env`: make `scripts.` importable
    sys.path.insert(0, str(REPO))

# read_env_file and PLACEHOLDER are also read from here by tests/deploy (scripts/ on its path).
from scripts.devstack.dotenv import PLACEHOLDER, ensure_env, read_env_file  # noqa: E402, F401


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=Path, default=REPO / ".env", help="the .env file to write")
    parser.add_argument("--example", type=Path, default=REPO / ".env.example", help="the template")
    parser.add_argument("--force", action="store_true", help="regenerate even if the file exists")
    args = parser.parse_args(argv)
    if not args.example.exists():
        parser.error(f"{args.example} not found")
    before = args.path.read_bytes() if args.path.exists() else None
    ensure_env(args.path, args.example, force=args.force, log=print)
    if before is not None and before == args.path.read_bytes():
        print(f"{args.path} exists and is complete; left unchanged (use --force to regenerate)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
