"""Roll the served model back: `previous` becomes `champion` (run it again to roll forward).

    make rollback                      # in the embedded run
    python -m jobs.ops.rollback_champion   # anywhere MLFLOW_TRACKING_URI points at the server
"""
from __future__ import annotations

import sys

from jobs.lakehouse.registry import rollback_champion
from jobs.lakehouse.settings import Settings


def main() -> int:
    settings = Settings.from_env()
    try:
        old, new = rollback_champion(settings)
    except RuntimeError as exc:
        print(f"rollback refused: {exc}", file=sys.stderr)
        return 1
    print(f"{settings.model_name}: champion v{old} -> v{new} (v{old} is now 'previous')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
