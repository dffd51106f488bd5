"""Deploy tests run in the Airflow environment, like tests/dags: throw-away AIRFLOW_HOME, no services."""
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
# An address nothing listens on: building operators must never need MLflow or Spark.
os.environ["MLFLOW_TRACKING_URI"] = "http://127.0.0.1:9"
# The root for jobs.contract, plugins/ for the DAG-side package, scripts/ for make_env (standard
# library only).
for p in (REPO, REPO / "plugins", REPO / "dags", REPO / "scripts"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
