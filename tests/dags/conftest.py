"""DAG tests run in the Airflow environment, against a throw-away AIRFLOW_HOME (no services)."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_home = tempfile.mkdtemp(prefix="airflow-home-")
os.environ.setdefault("AIRFLOW_HOME", _home)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
# An address nothing listens on: parsing a DAG must never need MLflow or Spark.
os.environ["MLFLOW_TRACKING_URI"] = "http://127.0.0.1:9"
os.environ.setdefault("AIRFLOW_CONN_SPARK_DEFAULT", '{"conn_type": "spark", "host": "local[*]"}')
# The repository root for jobs.contract / jobs.trade_calendar, as PYTHONPATH gives it to Airflow.
for p in (REPO, REPO / "plugins", REPO / "dags"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
