"""Airflow-side wiring for the lakehouse ML pipeline: config, Spark stages, MLflow tracking, links.

Lives in plugins/ because Airflow puts that folder on sys.path for every component (scheduler,
dag-processor, workers, api-server), so DAG files can stay thin and import from here.

The names shared with the Spark jobs come from ``jobs.contract`` and ``jobs.trade_calendar``
(standard library only), so the repository root must be importable. Every deployment puts it on
PYTHONPATH (the image, the compose file, scripts/stack.py); when Airflow runs from a checkout
without it, the root next to plugins/ is appended here, after everything else, so it never shadows.
"""
import sys
from pathlib import Path

_REPO_ROOT = str(Path(__file__).resolve().parents[2])
if _REPO_ROOT not in sys.path:
    sys.path.append(_REPO_ROOT)
