"""Airflow-side wiring for the lakehouse ML pipeline: config, Spark stages, MLflow tracking, links.

Lives in plugins/ because Airflow puts that folder on sys.path for every component (scheduler,
dag-processor, workers, api-server), so DAG files can stay thin and import from here.

The names shared with the Spark jobs come from ``jobs.contract`` and ``jobs.trade_calendar``
(standard library only), so the repository root must be on the Airflow processes' PYTHONPATH:
the image and the compose file set it (/opt/airflow), and so does scripts/stack.py for the
embedded run. No sys.path edits here: the DAG files import ``jobs`` before this package.
"""
