"""The names every process relies on, defined once: stages, task and DAG ids, tables, MLflow keys.

Both sides import this module: the Airflow plugin (``plugins/lakehouse_mlops``) and the Spark
jobs, plus the scripts, the benchmark and the tests. It may import only the standard library, so
the wall between the Airflow and the jobs environments stays intact (a test in ``tests/dags``
enforces it). A renamed tag or stage changes here and nowhere else.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote

REPO_ROOT = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------------------------------
# Stages, task ids, DAG ids
# --------------------------------------------------------------------------------------------------

RAW_TO_BRONZE = "raw_to_bronze"
BRONZE_TO_SILVER = "bronze_to_silver"
SILVER_TO_GOLD = "silver_to_gold"
FEATURE_ENGINEERING = "feature_engineering"
MODEL_TRAINING = "model_training"
MODEL_DEPLOYMENT = "model_deployment"
MONITORING = "monitoring"
# In pipeline order; each is one spark-submit entry point, jobs/stages/<stage>.py, and one task.
STAGES = (RAW_TO_BRONZE, BRONZE_TO_SILVER, SILVER_TO_GOLD, FEATURE_ENGINEERING,
          MODEL_TRAINING, MODEL_DEPLOYMENT, MONITORING)
# The stages ml_retraining reruns (features are already there; drift was just measured).
RETRAINING_STAGES = (MODEL_TRAINING, MODEL_DEPLOYMENT)

# The Python tasks that frame the stages.
START_TRACKING = "start_tracking"
WAIT_FOR_RAW = "wait_for_raw"  # ml_pipeline's deferrable sensor for the date's RAW delivery
DRIFT_GATE = "drift_gate"
PUBLISH_REPORT = "publish_report"
FINISH_TRACKING = "finish_tracking"

ML_PIPELINE = "ml_pipeline"
ML_RETRAINING = "ml_retraining"

QUARANTINE_REPLAY = "quarantine_replay"  # stage name of jobs/ops/replay_quarantine.py (make replay-quarantine)
ICEBERG_MAINTENANCE = "iceberg_maintenance"  # DAG id, task id and stage name (jobs/ops/iceberg_maintenance.py)

# Airflow pool with one slot that every task moving the champion alias runs in (MLflow has no
# compare-and-set on aliases); `make up` and the compose file's airflow-init create it.
PROMOTION_POOL = "model_promotion"
# The pool of a stage's task, where it needs one (the DAG files read this).
STAGE_POOLS = {MODEL_DEPLOYMENT: PROMOTION_POOL}

# The asset drift_gate emits and ml_retraining is scheduled on.
FEATURE_DRIFT_ASSET = "feature_drift_alert"
FEATURE_DRIFT_ASSET_URI = "lakehouse://option_ticks_db/feature_drift_alert"

# How a stage's exit code tells Airflow whether a retry can help (jobs/lakehouse/cli.py writes it,
# plugins/lakehouse_mlops/spark_stage.py reads it). The values are sysexits.h's.
EXIT_DETERMINISTIC = 65  # EX_DATAERR: a quality gate, a missing delivery, bad settings: fail at once
EXIT_DEPENDENCY_UNAVAILABLE = 75  # EX_TEMPFAIL: a service is down: Airflow retries with backoff

# --------------------------------------------------------------------------------------------------
# RAW deliveries: one folder per trade date; complete when the marker file is in it
# --------------------------------------------------------------------------------------------------
RAW_DELIVERY_MARKER_DEFAULT = "_SUCCESS"


def raw_date_folder(raw_root: str, trade_date) -> str:
    """The folder of one trade date's RAW files under the RAW root (local path, s3:// or s3a://)."""
    return f"{str(raw_root).rstrip('/')}/trade_date={trade_date.isoformat()}"


def raw_delivery_marker() -> str | None:
    """The completion marker's file name (``RAW_DELIVERY_MARKER``); None with ``none``: quiet period."""
    name = env("RAW_DELIVERY_MARKER", RAW_DELIVERY_MARKER_DEFAULT).strip()
    return None if name.lower() in ("none", "off") else name


# --------------------------------------------------------------------------------------------------
# Iceberg tables (names inside the configured catalog and namespace)
# --------------------------------------------------------------------------------------------------

BRONZE = "bronze_option_ticks"
SILVER = "silver_option_ticks"
QUARANTINE = "quarantine_option_ticks"
QUARANTINE_FILES = "quarantine_raw_files"
GOLD = "gold_option_bars_1m"
FEATURES = "features_option_bars"
PREDICTIONS = "predictions_option_bars"
DRIFT = "monitoring_feature_drift"
# Monitoring facts the stages write about themselves (jobs/lakehouse/facts.py): one row per stage try.
STAGE_RUNS = "stage_runs"
COLUMN_PROFILES = "column_profiles"  # per table, date and column (jobs/lakehouse/profiles.py)
RAW_SCHEMAS = "raw_schemas"  # each accepted date's delivered columns (jobs/lakehouse/schema_changes.py)
SCHEMA_EVENTS = "schema_events"  # columns added, removed, renamed, retyped since the last accepted date
ANOMALY_CHECKS = "anomaly_checks"  # each watched figure against its baseline (jobs/lakehouse/anomalies.py)
ALL_TABLES = (BRONZE, SILVER, QUARANTINE, QUARANTINE_FILES, GOLD, FEATURES, PREDICTIONS, DRIFT, STAGE_RUNS,
              COLUMN_PROFILES, RAW_SCHEMAS, SCHEMA_EVENTS, ANOMALY_CHECKS)

# --------------------------------------------------------------------------------------------------
# MLflow: tag keys, metric keys, model aliases
# --------------------------------------------------------------------------------------------------

TAG_STAGE = "pipeline.stage"
TAG_ROLE = "pipeline.role"
ROLE_DAG_RUN = "dag_run"  # the parent run of one Airflow DAG run
ROLE_CANDIDATE = "candidate"  # a nested run of model_training's hyperparameter sweep
TAG_TRADE_DATE = "pipeline.trade_date"
TAG_FAILED_STAGES = "pipeline.failed_stages"
TAG_HEALTH = "pipeline.health"  # the trade date's verdict (jobs/report/health.py), set with the report
TAG_DAG_ID = "airflow.dag_id"
TAG_RUN_ID = "airflow.run_id"
TAG_TASK_ID = "airflow.task_id"
TAG_TRY_NUMBER = "airflow.try_number"
TAG_AIRFLOW_URL = "airflow.url"
TAG_PARENT_RUN = "mlflow.parentRunId"
TAG_NOTE = "mlflow.note.content"
TAG_ERROR = "error"
TAG_ERROR_TYPE = "error.type"
TAG_SUPERSEDED_BY = "superseded_by"
TAG_TABLE = "iceberg.table"
TAG_SNAPSHOT_ID = "iceberg.snapshot_id"
TAG_SPARK_APP_ID = "spark.application_id"
TAG_SPARK_MASTER = "spark.master"
TAG_DRIFT_FEATURES = "drift.features"
TAG_DRIFT_EXCLUDED_PREFIX = "drift.excluded."  # drift.excluded.<feature> = why it is not judged (schema.DRIFT_EXCLUDED)
TAG_MODEL_NAME = "model.name"
TAG_MODEL_VERSION = "model.version"
TAG_CHAMPION_BEFORE = "model.champion_before"
TAG_DEPLOYMENT_DECISION = "deployment.decision"
TAG_DEPLOYMENT_REASON = "deployment.reason"
TAG_QUALITY_GATE = "quality_gate"  # quality_gate.<layer> = passed | warned | failed | off
# quality_gate.anomaly = passed | warned | failed | learning | off; anomaly.<figure> = "<warn|fail>: <why>"
ANOMALY_GATE = "anomaly"
TAG_ANOMALY_PREFIX = "anomaly."

METRIC_ROWS_IN = "rows_in"
METRIC_ROWS_OUT = "rows_out"
METRIC_ROWS_REJECTED = "rows_rejected"
METRIC_DURATION = "duration_seconds"
# Where a stage process spent its wall time (stage_cli): phase.<name>_seconds, and the stderr line
# `make bench` parses from spark-submit's output.
PHASE_METRIC_PREFIX = "phase."
PHASE_LINE_PREFIX = "stage phases: "


def phase_metric(name: str) -> str:
    return f"{PHASE_METRIC_PREFIX}{name}_seconds"

METRIC_DRIFT_SHARE = "drift_share"
METRIC_STAGES_FAILED = "stages_failed"
METRIC_STAGES_TOTAL_SECONDS = "stages_total_seconds"
# The figures of every child run that the parent run rolls up as <stage>.<key>.
ROLLUP_METRICS = (METRIC_ROWS_IN, METRIC_ROWS_OUT, METRIC_ROWS_REJECTED, METRIC_DURATION)

CHAMPION = "champion"
PREVIOUS = "previous"

# The experiment is a model-training one in MLflow 3's UI (opens on its training runs, not the GenAI
# view). Values from the UI's ExperimentKind enum (mlflow/server/js, MLflow 3.17).
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND_TRAINING = "custom_model_development"
EXPERIMENT_TAGS = {TAG_EXPERIMENT_KIND: EXPERIMENT_KIND_TRAINING}
# Kinds nobody chose (empty, or the UI's own guesses): replaced by ours; an explicit kind is kept.
_UNCHOSEN_EXPERIMENT_KINDS = ("", "no_inferred_type", "genai_development_inferred",
                              "custom_model_development_inferred")

# MLflow with authentication: the tracking server's own basic-auth app (`mlflow server
# --app-name basic-auth`). scripts/mlflow_auth.py renders its config file (the production compose
# file has the same template inline) and, as the admin, makes the pipeline's service user, its
# experiment and its grants; every Airflow container and Spark stage logs in as that user through
# MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, which the MLflow client reads itself.
MLFLOW_AUTH_APP = "basic-auth"
MLFLOW_AUTH_FUNCTION = "mlflow.server.auth:authenticate_request_basic_auth"
MLFLOW_AUTH_SWITCH = "MLFLOW_AUTH"  # the embedded stack's on/off (production is always on)
MLFLOW_AUTH_INI = "basic_auth.ini"  # the embedded stack's file name under $LAKEHOUSE_HOME/mlflow
# Every logged-in user may read everything; only admins and a resource's MANAGE holders change it.
MLFLOW_DEFAULT_PERMISSION = "READ"
MLFLOW_PIPELINE_PERMISSION = "MANAGE"  # the pipeline user's on its experiment and registered model
DEFAULT_MLFLOW_ADMIN_USER = "admin"
DEFAULT_MLFLOW_PIPELINE_USER = "lakehouse-pipeline"
# The client's own variables (mlflow.environment_variables): how a process logs in.
MLFLOW_CLIENT_USER_VAR = "MLFLOW_TRACKING_USERNAME"
MLFLOW_CLIENT_PASSWORD_VAR = "MLFLOW_TRACKING_PASSWORD"

# The morning report on the parent run (jobs/report/publish.py logs it under this artifact path).
REPORT_HTML_ARTIFACT = "report/morning_report.html"
REPORT_PNG_ARTIFACT = "report/morning_report.png"


def missing_experiment_tags(tags: dict[str, str] | None) -> dict[str, str]:
    """The EXPERIMENT_TAGS an existing experiment lacks (set them idempotently, with set_experiment_tag)."""
    tags = tags or {}
    missing = {k: v for k, v in EXPERIMENT_TAGS.items() if k not in tags}
    if tags.get(TAG_EXPERIMENT_KIND, "") in _UNCHOSEN_EXPERIMENT_KINDS:
        missing[TAG_EXPERIMENT_KIND] = EXPERIMENT_KIND_TRAINING
    return missing

# Model version tags: the last trade date of the training data (a model never replaces a champion
# trained on newer data) and the Iceberg tag that keeps its training snapshot through expiry.
VERSION_TAG_DATA_THROUGH = "training.data_through"
VERSION_TAG_FEATURES_TABLE = "features_table"
VERSION_TAG_FEATURES_SNAPSHOT = "features_snapshot_id"
VERSION_TAG_FEATURES_REF = "lineage.features_tag"
# The only types a registered model's skops file may ask to load beyond skops' safe defaults:
# training declares them (mlflow.sklearn.log_model), model_trust refuses any version trusting more.
SKOPS_TRUSTED_TYPES = ("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",)


def model_snapshot_tag(version: object) -> str:
    """The Iceberg tag on the features table that pins a registered version's training snapshot."""
    return f"model_v{int(str(version))}"

# --------------------------------------------------------------------------------------------------
# MLflow run filters: one spelling of "this DAG run's parent" and "its child runs"
# --------------------------------------------------------------------------------------------------

# Airflow's own shapes, ASCII only: KEY_REGEX (airflow.utils.helpers) for dag and task ids (a task
# group adds dots), and the default `[scheduler] allowed_run_id_pattern` for run ids; both at most 250
# characters (the columns' length). A value of these shapes can never end a quoted filter literal.
AIRFLOW_KEY_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,250}")
AIRFLOW_RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9_.~:+-]{1,250}")
# Every value that goes into a filter: the union of the shapes above (run ids, task ids, DAG ids,
# ISO dates, MLflow run ids, run statuses). No quote, backslash, back-tick, blank or `%`.
_SAFE_FILTER_VALUE = re.compile(r"[A-Za-z0-9_.:+~-]{1,250}")


def filter_value(value: object) -> str:
    """A value quoted for an MLflow filter string; refuses anything that could end the quote.

    Run ids, task ids, dates and MLflow run ids have known shapes; a quote, a backslash or a
    back-tick in one is a bug or an attack, never data to search for.
    """
    text = str(value)
    if not _SAFE_FILTER_VALUE.fullmatch(text):
        raise ValueError(f"refusing an unexpected character in an MLflow filter value: {text!r}")
    return f"'{text}'"


def tag_equals(key: str, value: object) -> str:
    return f"tags.`{key}` = {filter_value(value)}"


def parent_run_filter(dag_id: str, run_id: str) -> str:
    """The parent run of one Airflow DAG run."""
    return " and ".join((tag_equals(TAG_DAG_ID, dag_id), tag_equals(TAG_RUN_ID, run_id),
                         tag_equals(TAG_ROLE, ROLE_DAG_RUN)))


def child_runs_filter(parent_run_id: str) -> str:
    """Every stage run (and every try of it) under one parent run."""
    return tag_equals(TAG_PARENT_RUN, parent_run_id)


def stage_runs_filter(stage: str, dag_id: str | None = None, run_id: str | None = None,
                      status: str | None = None) -> str:
    """Runs of one stage, optionally of one DAG run and with one status."""
    parts = [tag_equals(TAG_STAGE, stage)]
    if dag_id:
        parts.append(tag_equals(TAG_DAG_ID, dag_id))
    if run_id:
        parts.append(tag_equals(TAG_RUN_ID, run_id))
    if status:
        parts.append(f"attributes.status = {filter_value(status)}")
    return " and ".join(parts)


def latest_per_stage(runs: Iterable) -> dict[str, object]:
    """The latest run per stage among MLflow runs (the last try wins), keyed by stage name.

    ``runs`` may come in any order; ties on start time keep the later one in the input.
    """
    latest: dict[str, object] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time or 0):
        latest[run.data.tags.get(TAG_STAGE, run.info.run_name)] = run
    return latest


# --------------------------------------------------------------------------------------------------
# URLs the alerts, MLflow notes and the report link to
# --------------------------------------------------------------------------------------------------

def dag_run_url(airflow_ui: str, dag_id: str, run_id: str) -> str:
    return f"{airflow_ui.rstrip('/')}/dags/{quote(dag_id)}/runs/{quote(run_id, safe='')}"


def task_url(airflow_ui: str, dag_id: str, run_id: str, task_id: str) -> str:
    return f"{dag_run_url(airflow_ui, dag_id, run_id)}/tasks/{quote(task_id)}"


# MLflow 3.17's UI picks its "GenAI" or "Model training" view from this query parameter, else from
# the browser's last choice (GenAI by default), whatever the experiment's kind tag says: every link
# we hand out opens the training view.
MLFLOW_UI_QUERY = "workflowType=machine_learning"


def mlflow_experiment_url(mlflow_ui: str, experiment_id: str) -> str:
    return f"{mlflow_ui.rstrip('/')}/#/experiments/{experiment_id}?{MLFLOW_UI_QUERY}"


def mlflow_run_url(mlflow_ui: str, experiment_id: str, run_id: str) -> str:
    return f"{mlflow_ui.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{MLFLOW_UI_QUERY}"


def mlflow_artifact_url(mlflow_ui: str, experiment_id: str, run_id: str, path: str) -> str:
    """The MLflow UI showing one artifact of a run (e.g. REPORT_HTML_ARTIFACT)."""
    return f"{mlflow_ui.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}/artifacts/{path}?{MLFLOW_UI_QUERY}"


# --------------------------------------------------------------------------------------------------
# Environment: how every setting is read (values and defaults are documented in .env.example)
# --------------------------------------------------------------------------------------------------

# Defaults of the settings both environments read (the values of the embedded stack).
DEFAULT_EXPERIMENT = "lakehouse-tick-pipeline"
DEFAULT_MODEL_NAME = "TickPricePredictor"
DEFAULT_AIRFLOW_UI_URL = "http://127.0.0.1:8080"
DEFAULT_MLFLOW_URL = "http://127.0.0.1:5000"
DEFAULT_SHUFFLE_PARTITIONS = "8"
# Drift share at which drift_gate alerts and retrains, and a date's health is "degraded".
DEFAULT_DRIFT_SHARE_THRESHOLD = "0.3"
# spark-submit conf every stage gets (plugins spark_stage, `make bench`): no Spark UI (its start
# costs the driver time and opens a port).
SPARK_STAGE_CONF = {
    "spark.ui.showConsoleProgress": "false",
    "spark.ui.enabled": "false",
}
# With a local master, or a standalone master on this machine's loopback (the cluster profile),
# the driver listens on the loopback interface only; on a real cluster executors must reach the
# driver's host, so Spark's default stays.
SPARK_LOCAL_DRIVER_CONF = {
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.driver.host": "127.0.0.1",
}
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


def spark_master_on_this_machine(master: str | None) -> bool:
    master = (master or "").strip()
    if master.startswith("local"):
        return True
    host = master.removeprefix("spark://").split(",")[0].rsplit(":", 1)[0] if master.startswith("spark://") else ""
    return host in LOOPBACK_HOSTS


def spark_stage_conf(master: str | None) -> dict[str, str]:
    return {**SPARK_STAGE_CONF, **(SPARK_LOCAL_DRIVER_CONF if spark_master_on_this_machine(master) else {})}


def env(name: str, default: str = "") -> str:
    """A variable's value; empty or blank counts as unset (compose passes unset ones as "")."""
    value = os.environ.get(name, "")
    return value if value.strip() else default


ON_WORDS = ("on", "1", "true", "yes")
OFF_WORDS = ("off", "0", "false", "no")


def is_on(value: str | None, default: bool) -> bool:
    """One parser for every on/off setting (the stack's switches, compose's): on/1/true/yes or
    off/0/false/no in any case, blanks around ignored; unset, empty or anything else is ``default``."""
    word = (value or "").strip().lower()
    if word in ON_WORDS:
        return True
    if word in OFF_WORDS:
        return False
    return default


def switch(name: str, default: str = "on") -> bool:
    """An on/off variable of this process: on unless set to off, 0, false or no (default on)."""
    return is_on(os.environ.get(name), is_on(default, True))


def bounded_mlflow_http(max_retries: int | None = None, max_timeout: int | None = None) -> None:
    """Bound the MLflow client's HTTP retries before talking to MLflow.

    MLflow's own defaults retry one call for about 4 minutes; a task waiting on a dead tracking
    server should fail in seconds and leave the retrying to Airflow. A caller that must answer a
    person (the api-server's link endpoint) caps retries and per-request timeout further.
    """
    retries = int(env("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3"))
    timeout = int(env("MLFLOW_HTTP_REQUEST_TIMEOUT", "60"))
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(retries if max_retries is None else min(retries, max_retries))
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = env("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(timeout if max_timeout is None else min(timeout, max_timeout))


def default_jars(repo: Path = REPO_ROOT) -> str:
    """Comma list of the Spark jars `make deps` puts in var/jars (used when SPARK_JARS is empty)."""
    return ",".join(str(p) for p in sorted((repo / "var" / "jars").glob("*.jar")))
