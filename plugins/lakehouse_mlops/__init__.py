"""Airflow-side wiring for the lakehouse ML pipeline: config, Spark stages, MLflow tracking, links.

Lives in plugins/ because Airflow puts that folder on sys.path for every component (scheduler,
dag-processor, workers, api-server), so DAG files can stay thin and import from here.
"""
