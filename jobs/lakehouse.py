"""The one place where Spark, Iceberg and MLflow are wired together.

Stage scripts (``jobs/<stage>.py``) stay thin: they parse the Airflow context, open a tracked
stage run, call pure transforms from ``jobs.transforms`` and publish through the helpers here.
Everything is configured from environment variables documented in ``.env.example``.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

REPO_ROOT = Path(__file__).resolve().parent.parent

# Table names, one constant each, so tests, jobs and the demo summary agree.
BRONZE = "bronze_option_ticks"
SILVER = "silver_option_ticks"
QUARANTINE = "quarantine_option_ticks"
GOLD = "gold_option_bars_1m"
FEATURES = "features_option_bars"
PREDICTIONS = "predictions_option_bars"
DRIFT = "monitoring_feature_drift"
QUARANTINE_FILES = "quarantine_raw_files"
ALL_TABLES = (BRONZE, SILVER, QUARANTINE, QUARANTINE_FILES, GOLD, FEATURES, PREDICTIONS, DRIFT)

STAGES = (
    "raw_to_bronze",
    "bronze_to_silver",
    "silver_to_gold",
    "feature_engineering",
    "model_training",
    "model_deployment",
    "monitoring",
)


def _env(name: str, default: str = "") -> str:
    value = os.environ.get(name, "")
    return value if value.strip() else default


def _switch(name: str) -> bool:
    """An on/off variable, on unless set to off, 0, false or no."""
    return _env(name, "on").lower() not in ("off", "0", "false", "no")


def _quality_mode(value: str) -> str:
    from jobs.transforms.quality import MODES

    mode = value.strip().lower()
    if mode not in MODES:
        raise ValueError(f"QUALITY_GATES must be one of {', '.join(MODES)}, got {value!r}")
    return mode


@dataclass(frozen=True)
class Settings:
    """Pipeline configuration resolved from the environment (safe defaults = embedded run)."""

    home: Path
    catalog: str
    catalog_type: str
    catalog_uri: str
    warehouse: str
    namespace: str
    raw_ticks_path: str
    timezone: str
    shuffle_partitions: int
    experiment: str
    model_name: str
    airflow_ui_url: str
    drift_psi_threshold: float
    promotion_margin: float
    extra_catalog_props: dict[str, str] = field(default_factory=dict)
    quality_gates: str = "enforce"
    quality_gates_file: str = ""
    raw_column_aliases: dict[str, str] = field(default_factory=dict)
    trading_session: str = "08:45-15:45"
    known_underlyings: tuple[str, ...] = ("KOSPI200",)

    @classmethod
    def from_env(cls) -> "Settings":
        home = Path(_env("LAKEHOUSE_HOME", str(REPO_ROOT / "var" / "stack")))
        if not home.is_absolute():
            home = (REPO_ROOT / home).resolve()
        extra = json.loads(_env("ICEBERG_CATALOG_PROPERTIES", "{}"))
        return cls(
            home=home,
            catalog=_env("ICEBERG_CATALOG", "local"),
            catalog_type=_env("ICEBERG_CATALOG_TYPE", "jdbc"),
            catalog_uri=_env("ICEBERG_CATALOG_URI", f"jdbc:sqlite:{home}/iceberg/catalog.db"),
            warehouse=_env("ICEBERG_WAREHOUSE", f"file://{home}/iceberg/warehouse"),
            namespace=_env("ICEBERG_NAMESPACE", "option_ticks_db"),
            raw_ticks_path=_env("RAW_TICKS_PATH", str(home / "raw" / "ticks")),
            timezone=_env("PIPELINE_TIMEZONE", "Asia/Seoul"),
            shuffle_partitions=int(_env("SPARK_SQL_SHUFFLE_PARTITIONS", "8")),
            experiment=_env("MLFLOW_EXPERIMENT_NAME", "lakehouse-tick-pipeline"),
            model_name=_env("MLFLOW_MODEL_NAME", "TickPricePredictor"),
            airflow_ui_url=_env("AIRFLOW_UI_URL", "http://127.0.0.1:8080").rstrip("/"),
            drift_psi_threshold=float(_env("DRIFT_PSI_THRESHOLD", "0.25")),
            promotion_margin=float(_env("PROMOTION_MARGIN", "0.0")),
            extra_catalog_props={str(k): str(v) for k, v in extra.items()},
            quality_gates=_quality_mode(_env("QUALITY_GATES", "enforce")),
            quality_gates_file=_env("QUALITY_GATES_FILE"),
            raw_column_aliases={str(k): str(v) for k, v in json.loads(_env("RAW_COLUMN_ALIASES", "{}")).items()},
            trading_session=_env("TRADING_SESSION", "08:45-15:45"),
            known_underlyings=tuple(u.strip() for u in _env("KNOWN_UNDERLYINGS", "KOSPI200").split(",")
                                    if u.strip()),
        )

    def row_rules(self):
        """Silver's row-level validation settings."""
        from jobs.transforms.silver import RowRules

        try:
            start, end = (dt.time.fromisoformat(t.strip()) for t in self.trading_session.split("-"))
        except ValueError:
            raise ValueError(f"TRADING_SESSION must look like 08:45-15:45, got {self.trading_session!r}") from None
        return RowRules(session_open=start, session_close=end, known_underlyings=self.known_underlyings,
                        timezone=self.timezone)

    def quality_rules(self, layer: str) -> dict:
        from jobs.transforms.quality import load_rules

        return load_rules(self.quality_gates_file or None).get(layer, {})

    def ensure_local_dirs(self) -> None:
        """SQLite and file warehouses need their folders before the first connection."""
        if self.catalog_uri.startswith("jdbc:sqlite:"):
            Path(self.catalog_uri.removeprefix("jdbc:sqlite:")).parent.mkdir(parents=True, exist_ok=True)
        if self.warehouse.startswith("file://"):
            Path(self.warehouse.removeprefix("file://")).mkdir(parents=True, exist_ok=True)

    def table(self, name: str) -> str:
        return f"{self.catalog}.{self.namespace}.{name}"

    def spark_catalog_conf(self) -> dict[str, str]:
        """Spark properties for the Iceberg catalog (jdbc embedded, hive or rest in production)."""
        prefix = f"spark.sql.catalog.{self.catalog}"
        conf = {
            prefix: "org.apache.iceberg.spark.SparkCatalog",
            f"{prefix}.type": self.catalog_type,
            f"{prefix}.uri": self.catalog_uri,
            f"{prefix}.warehouse": self.warehouse,
        }
        if self.catalog_type == "jdbc":
            conf[f"{prefix}.jdbc.schema-version"] = "V1"
            if self.catalog_uri.startswith("jdbc:sqlite:"):
                # SQLite allows one writer: wait for a concurrent reader instead of failing the commit.
                conf[f"{prefix}.jdbc.busy_timeout"] = "30000"
        conf.update({f"{prefix}.{k}": v for k, v in self.extra_catalog_props.items()})
        return conf

    def pyiceberg_catalog(self):
        """The same catalog seen from pyiceberg (tests, the demo summary, monitoring)."""
        from pyiceberg.catalog import load_catalog

        props: dict[str, str] = {"warehouse": self.warehouse}
        if self.catalog_type == "jdbc":
            if not self.catalog_uri.startswith("jdbc:sqlite:"):
                raise ValueError(f"pyiceberg supports only SQLite JDBC URIs here: {self.catalog_uri}")
            path = self.catalog_uri.removeprefix("jdbc:sqlite:")
            props.update(type="sql", uri=f"sqlite:///{path}")
        else:
            props.update(type=self.catalog_type, uri=self.catalog_uri)
        endpoint = _env("MLFLOW_S3_ENDPOINT_URL")
        if endpoint:
            props.update({
                "s3.endpoint": endpoint,
                "s3.access-key-id": _env("AWS_ACCESS_KEY_ID"),
                "s3.secret-access-key": _env("AWS_SECRET_ACCESS_KEY"),
                "s3.path-style-access": "true",
            })
        return load_catalog(self.catalog, **props)


# --------------------------------------------------------------------------------------------------
# Spark
# --------------------------------------------------------------------------------------------------

def default_jars() -> str:
    """Comma list of the offline Iceberg jars built by `make deps` (used when SPARK_JARS is empty)."""
    jar_dir = REPO_ROOT / "var" / "jars"
    return ",".join(str(p) for p in sorted(jar_dir.glob("*.jar")))


def spark_session(app_name: str, settings: Settings, master: str | None = None):
    """Build (or reuse) the SparkSession with Iceberg wired in.

    Under spark-submit the master and jars come from the command line; ``master`` is for tests
    and notebooks, which also get the offline jars here.
    """
    from pyspark.sql import SparkSession

    settings.ensure_local_dirs()
    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
        jars = _env("SPARK_JARS", default_jars())
        if jars:
            builder = builder.config("spark.jars", jars)
        builder = builder.config("spark.ui.enabled", "false")
    conf = {
        "spark.sql.extensions": "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
        "spark.sql.session.timeZone": settings.timezone,
        "spark.sql.shuffle.partitions": str(settings.shuffle_partitions),
        "spark.sql.adaptive.enabled": "true",
        # Every write replaces one trade_date partition: Iceberg's default hash distribution by
        # partition would shuffle all rows into one writer task (make bench, Spark event logs).
        "spark.sql.iceberg.distribution-mode": "none",
        **settings.spark_catalog_conf(),
    }
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(_env("SPARK_LOG_LEVEL", "WARN"))
    spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {settings.catalog}.{settings.namespace}")
    return spark


@dataclass(frozen=True)
class Snapshot:
    table: str
    snapshot_id: int
    added_records: int
    deleted_records: int
    total_records: int


def current_snapshot(spark, table: str) -> Snapshot | None:
    rows = spark.sql(
        f"SELECT snapshot_id, summary FROM {table}.snapshots ORDER BY committed_at DESC LIMIT 1"
    ).collect()
    if not rows:
        return None
    summary = rows[0]["summary"] or {}
    return Snapshot(
        table=table,
        snapshot_id=int(rows[0]["snapshot_id"]),
        added_records=int(summary.get("added-records", 0)),
        deleted_records=int(summary.get("deleted-records", 0)),
        total_records=int(summary.get("total-records", 0)),
    )


def partition_rows(spark, table: str, trade_date: dt.date) -> int:
    """Rows of one trade date from Iceberg metadata: no data scan (tables are copy-on-write)."""
    rows = spark.sql(
        f"SELECT sum(record_count) AS n FROM {table}.partitions "
        f"WHERE partition.trade_date = DATE '{trade_date.isoformat()}'"
    ).collect()
    return int(rows[0]["n"] or 0)


def read_date(spark, table: str, trade_date: dt.date):
    from pyspark.sql import functions as F

    if not spark.catalog.tableExists(table):
        raise RuntimeError(f"{table} does not exist yet: run the upstream stage first")
    return spark.table(table).where(F.col("trade_date") == F.lit(trade_date))


def add_new_columns(spark, table: str, df) -> list[str]:
    """Additive schema evolution: columns a newer job version writes are added to the table."""
    existing = set(spark.table(table).columns)
    missing = [f for f in df.schema.fields if f.name not in existing]
    if missing:
        cols = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in missing)
        spark.sql(f"ALTER TABLE {table} ADD COLUMNS ({cols})")
    return [f.name for f in missing]


def replace_date_partition(df, table: str, trade_date: dt.date, partition_col: str = "trade_date") -> Snapshot:
    """Atomically replace one trade date of ``table`` with ``df`` (creating the table if needed).

    One Iceberg commit: a rerun of the same date yields the same table, never duplicates, and
    readers see either the old or the new snapshot. Row counts come from the snapshot summary,
    so publishing costs no extra Spark action.
    """
    from pyspark.sql import functions as F

    spark = df.sparkSession
    if not spark.catalog.tableExists(table):
        (df.limit(0).writeTo(table).partitionedBy(partition_col)
           .tableProperty("format-version", "2")
           .tableProperty("write.parquet.compression-codec", "zstd")
           .create())
    else:
        add_new_columns(spark, table, df)
    df.writeTo(table).overwrite(F.col(partition_col) == F.lit(trade_date))
    snap = current_snapshot(spark, table)
    assert snap is not None, f"no snapshot after writing {table}"
    return snap


def quality_gate(layer: str, settings: Settings, tracker: "StageTracker", trade_date: dt.date,
                 figures: dict[str, float | None]) -> None:
    """Log the layer's figures and gate results; raise before publishing when a gate fails.

    Call it after computing ``figures`` and before writing the layer's table.
    """
    from jobs.transforms.quality import QualityGateFailed, evaluate, failure_message

    tracker.metrics({f"dq.{k}": v for k, v in figures.items()})
    if settings.quality_gates == "off":
        tracker.tags({f"quality_gate.{layer}": "off"})
        return
    results = evaluate(settings.quality_rules(layer), figures)
    tracker.metrics({f"gate.{r.rule}": 1.0 if r.passed else 0.0 for r in results if not r.skipped})
    failed = [r for r in results if not r.passed]
    if not failed:
        tracker.tags({f"quality_gate.{layer}": "passed"})
        return
    message = failure_message(layer, trade_date, failed)
    if settings.quality_gates == "warn":
        tracker.tags({f"quality_gate.{layer}": "warned", f"quality_gate.{layer}.failures": message[:4900]})
        print(f"WARNING {message}", file=sys.stderr)
        return
    tracker.tags({f"quality_gate.{layer}": "failed"})
    raise QualityGateFailed(message)


def gates_enabled(settings: Settings) -> bool:
    return settings.quality_gates != "off"


def recent_partition_rows(spark, table: str, before: dt.date, limit: int) -> list[int]:
    """Row counts of the latest ``limit`` dates before ``before``, from metadata (no data scan)."""
    if not spark.catalog.tableExists(table):
        return []
    rows = spark.sql(
        f"SELECT partition.trade_date AS d, sum(record_count) AS n FROM {table}.partitions "
        f"WHERE partition.trade_date < DATE '{before.isoformat()}' GROUP BY 1 ORDER BY 1 DESC LIMIT {int(limit)}"
    ).collect()
    return [int(r["n"]) for r in rows if r["n"]]


# --------------------------------------------------------------------------------------------------
# MLflow: one child run per stage under the DAG run's parent run
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunContext:
    """Who is running this stage: the Airflow task instance (or a person at a shell)."""

    stage: str
    trade_date: dt.date
    parent_run_id: str | None = None
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    try_number: int | None = None

    def tags(self, settings: Settings) -> dict[str, str]:
        tags = {
            "pipeline.stage": self.task_id or self.stage,
            "pipeline.trade_date": self.trade_date.isoformat(),
        }
        if self.dag_id:
            tags["airflow.dag_id"] = self.dag_id
        if self.run_id:
            tags["airflow.run_id"] = self.run_id
        if self.task_id:
            tags["airflow.task_id"] = self.task_id
        if self.try_number is not None:
            tags["airflow.try_number"] = str(self.try_number)
        if self.dag_id and self.run_id and self.task_id:
            url = airflow_task_url(settings.airflow_ui_url, self.dag_id, self.run_id, self.task_id)
            tags["airflow.url"] = url
            tags["mlflow.note.content"] = (
                f"Stage `{self.stage}` for trade date {self.trade_date}. "
                f"[Open this task instance in Airflow]({url})"
            )
        return tags


def airflow_task_url(base: str, dag_id: str, run_id: str, task_id: str) -> str:
    from urllib.parse import quote

    return f"{base}/dags/{quote(dag_id)}/runs/{quote(run_id, safe='')}/tasks/{quote(task_id)}"


class StageTracker:
    """What a stage reports: thin wrapper so stage code never touches MLflow plumbing."""

    def __init__(self, run_id: str):
        self.run_id = run_id

    def metrics(self, values: dict[str, float]) -> None:
        import mlflow

        clean = {k: float(v) for k, v in values.items() if v is not None}
        if clean:
            mlflow.log_metrics(clean)

    def params(self, values: dict[str, Any]) -> None:
        import mlflow

        mlflow.log_params({k: str(v) for k, v in values.items()})

    def tags(self, values: dict[str, Any]) -> None:
        import mlflow

        mlflow.set_tags({k: str(v) for k, v in values.items()})

    def published(self, snap: Snapshot, rows_in: int | None = None, prefix: str = "") -> None:
        """Record a table write: rows and the Iceberg snapshot that holds them."""
        if not prefix:
            self.tags({"iceberg.table": snap.table, "iceberg.snapshot_id": snap.snapshot_id})
            self.metrics({"rows_out": snap.added_records, "rows_in": rows_in})
        else:
            self.tags({f"iceberg.{prefix}_table": snap.table,
                       f"iceberg.{prefix}_snapshot_id": snap.snapshot_id})
            self.metrics({f"rows_{prefix}": snap.added_records})


class NullTracker(StageTracker):
    """Tracking switched off (LAKEHOUSE_TRACKING=off, benchmarks): every report is dropped."""

    def __init__(self) -> None:
        super().__init__(run_id="")

    def metrics(self, values: dict[str, float]) -> None:
        pass

    def params(self, values: dict[str, Any]) -> None:
        pass

    def tags(self, values: dict[str, Any]) -> None:
        pass


def tracking_enabled() -> bool:
    return _switch("LAKEHOUSE_TRACKING")


def mlflow_experiment_id(settings: Settings) -> str:
    import mlflow

    exp = mlflow.get_experiment_by_name(settings.experiment)
    if exp is not None:
        return exp.experiment_id
    try:
        return mlflow.create_experiment(settings.experiment)
    except Exception:  # created concurrently by another stage
        exp = mlflow.get_experiment_by_name(settings.experiment)
        if exp is None:
            raise
        return exp.experiment_id


def supersede_ghost_runs(ctx: RunContext, settings: Settings, new_run_id: str, experiment_id: str) -> list[str]:
    """End earlier attempts of this stage that are still RUNNING (their process died) as KILLED.

    Same stage, trade date and DAG-run parent; without a parent, runs of the same stage and date
    started outside Airflow. Each gets ``superseded_by=<new run>``, and so do its RUNNING nested runs
    (training candidates), so a killed attempt never stays RUNNING next to its retry.
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    stage = ctx.task_id or ctx.stage
    query = (f"attributes.status = 'RUNNING' and tags.`pipeline.stage` = '{stage}' "
             f"and tags.`pipeline.trade_date` = '{ctx.trade_date.isoformat()}'")
    if ctx.parent_run_id:
        query += f" and tags.`mlflow.parentRunId` = '{ctx.parent_run_id}'"
    ghosts = [r for r in client.search_runs([experiment_id], query, max_results=100)
              if r.info.run_id != new_run_id
              and (ctx.parent_run_id or not ({"airflow.run_id", "mlflow.parentRunId"} & set(r.data.tags)))]
    ended = []
    for ghost in ghosts:
        nested = client.search_runs(
            [experiment_id], f"attributes.status = 'RUNNING' and tags.`mlflow.parentRunId` = '{ghost.info.run_id}'",
            max_results=1000)
        for run in [*nested, ghost]:
            client.set_tag(run.info.run_id, "superseded_by", new_run_id)
            client.set_terminated(run.info.run_id, status="KILLED")
            ended.append(run.info.run_id)
        print(f"run {ghost.info.run_id} of an earlier attempt was still RUNNING: ended KILLED, "
              f"superseded by {new_run_id}", file=sys.stderr)
    return ended


@contextlib.contextmanager
def stage_run(ctx: RunContext, settings: Settings, dependencies: "list[Dependency] | None" = None,
              check_first: bool = True) -> Iterator[StageTracker]:
    """Open the stage's MLflow child run; always log duration; end FAILED with the error on failure.

    ``dependencies`` (S3 for artifacts and data) are checked once the run exists (unless
    ``check_first`` is off), so an outage is recorded on the run; a failure while one of them is
    down is reported as that outage.
    """
    import mlflow

    if not tracking_enabled():
        if check_first:
            wait_for_dependencies(dependencies or [])
        yield NullTracker()
        return
    experiment_id = mlflow_experiment_id(settings)
    started = time.monotonic()
    run = mlflow.start_run(
        experiment_id=experiment_id,
        run_name=f"{ctx.stage} {ctx.trade_date}",
        parent_run_id=ctx.parent_run_id or None,
        tags=ctx.tags(settings),
    )
    tracker = StageTracker(run.info.run_id)
    try:
        tracker.params({"trade_date": ctx.trade_date.isoformat(), "stage": ctx.stage})
        supersede_ghost_runs(ctx, settings, run.info.run_id, experiment_id)
        if check_first:
            wait_for_dependencies(dependencies or [])
        try:
            yield tracker
        except Exception as exc:
            down = first_unreachable(dependencies or [])
            if down is None:
                raise
            raise DependencyUnavailable(down[0], 1, 0.0, down[1], during=f"{type(exc).__name__}: {exc}") from exc
    except BaseException as exc:
        message = f"{type(exc).__name__}: {exc}"
        mlflow.set_tags({"error": message[:4900], "error.type": type(exc).__name__})
        mlflow.log_metric("duration_seconds", time.monotonic() - started)
        mlflow.end_run(status="FAILED")
        raise
    else:
        mlflow.log_metric("duration_seconds", time.monotonic() - started)
        mlflow.end_run(status="FINISHED")


# --------------------------------------------------------------------------------------------------
# Dependencies: MLflow and S3 probed before a stage starts; bounded waits, then a clear failure
# --------------------------------------------------------------------------------------------------

# EX_TEMPFAIL (sysexits.h): a service the stage needs is down; a later retry may succeed.
DEPENDENCY_EXIT_CODE = 75
# Stages that read or write MLflow artifacts (models, figures), which the tracking server keeps in S3.
ARTIFACT_STAGES = ("model_training", "model_deployment", "monitoring")


class DependencyUnavailable(RuntimeError):
    """A service stayed unreachable through every attempt (or went away while the stage ran)."""

    def __init__(self, dependency: "Dependency", attempts: int, elapsed: float, reason: str,
                 during: str | None = None):
        self.dependency, self.attempts, self.elapsed, self.reason = dependency, attempts, elapsed, reason
        if during is None:
            message = (f"{dependency.name} {dependency.url} unreachable after {attempts} attempt"
                       f"{'s' if attempts != 1 else ''} over {elapsed:.0f} s: {reason}")
        else:
            message = f"{dependency.name} {dependency.url} unreachable ({reason}); the stage failed with {during}"
        super().__init__(message)


@dataclass(frozen=True)
class Dependency:
    """A service a stage needs, probed with one HTTP GET."""

    name: str
    url: str
    probe_path: str = "/"
    healthy_status: tuple[int, int] = (200, 499)  # inclusive range of answers that count as up

    def problem(self, timeout: float) -> str | None:
        """None when the service answers as expected, else why not (exception type or HTTP status)."""
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(self.url.rstrip("/") + self.probe_path, timeout=timeout) as resp:
                status = resp.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            return type(reason).__name__ if isinstance(reason, BaseException) else str(reason)
        low, high = self.healthy_status
        return None if low <= status <= high else f"HTTP {status} from {self.probe_path}"


def bounded_mlflow_http() -> None:
    """Bound the MLflow client's own HTTP retries: its defaults retry one call for about 4 minutes."""
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = _env("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = _env("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = _env("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")


def _uses_s3(path: str) -> bool:
    return path.startswith(("s3://", "s3a://", "s3n://"))


def stage_dependencies(stage: str, settings: Settings) -> tuple[list[Dependency], list[Dependency]]:
    """(needed before the run is opened, needed by the stage body) for one stage.

    MLflow first: without it no run can be recorded. S3 (MLFLOW_S3_ENDPOINT_URL) when the stage
    moves MLflow artifacts or its RAW/warehouse paths are on S3; it is checked once the run is open,
    so the outage is recorded on the run.
    """
    before: list[Dependency] = []
    tracking_uri = _env("MLFLOW_TRACKING_URI")
    if tracking_enabled() and tracking_uri.startswith(("http://", "https://")):
        before.append(Dependency("MLflow tracking server", tracking_uri.rstrip("/"), "/health", (200, 200)))
    during: list[Dependency] = []
    endpoint = _env("MLFLOW_S3_ENDPOINT_URL")
    needs_s3 = ((stage in ARTIFACT_STAGES and tracking_enabled())
                or _uses_s3(settings.raw_ticks_path) or _uses_s3(settings.warehouse))
    if endpoint and needs_s3:
        during.append(Dependency("S3 endpoint", endpoint.rstrip("/"), "/", (200, 499)))
    return before, during


def preflight_enabled() -> bool:
    """DEPENDENCY_PREFLIGHT=off skips the up-front checks; a failure is still diagnosed afterwards."""
    return _switch("DEPENDENCY_PREFLIGHT")


def dependency_retry_policy() -> tuple[int, float]:
    """(attempts, first backoff in seconds): DEPENDENCY_RETRIES retries after the first attempt."""
    return 1 + max(0, int(_env("DEPENDENCY_RETRIES", "3"))), max(0.0, float(_env("DEPENDENCY_BACKOFF_SECONDS", "2")))


def wait_for_dependencies(deps: list[Dependency], probe_timeout: float = 5.0) -> None:
    """Probe each dependency; retry with exponential backoff; raise DependencyUnavailable at the end."""
    attempts, backoff = dependency_retry_policy()
    for dep in deps:
        started = time.monotonic()
        for attempt in range(1, attempts + 1):
            problem = dep.problem(probe_timeout)
            if problem is None:
                break
            if attempt == attempts:
                raise DependencyUnavailable(dep, attempts, time.monotonic() - started, problem)
            delay = backoff * 2 ** (attempt - 1)
            print(f"{dep.name} {dep.url} not reachable ({problem}); attempt {attempt}/{attempts}, "
                  f"next in {delay:.1f} s", file=sys.stderr)
            time.sleep(delay)


def first_unreachable(deps: list[Dependency], probe_timeout: float = 5.0) -> tuple[Dependency, str] | None:
    """One quick probe each: which dependency (and why) is down right now, if any."""
    for dep in deps:
        problem = dep.problem(probe_timeout)
        if problem is not None:
            return dep, problem
    return None


# --------------------------------------------------------------------------------------------------
# CLI shared by every stage script
# --------------------------------------------------------------------------------------------------

def parse_date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (expected YYYY-MM-DD): {value!r}") from None


def stage_cli(stage: str, body: Callable[[Any, Settings, RunContext, StageTracker], None],
              argv: list[str] | None = None, needs_spark: bool = True) -> int:
    """Parse the Airflow context, open the stage run, start Spark, run ``body``."""
    parser = argparse.ArgumentParser(prog=stage, description=f"Pipeline stage {stage}")
    parser.add_argument("--trade-date", type=parse_date, required=True)
    parser.add_argument("--parent-run-id", default=None, help="MLflow run of the DAG run")
    parser.add_argument("--dag-id", default=None)
    parser.add_argument("--run-id", default=None, help="Airflow DAG run id")
    parser.add_argument("--task-id", default=None)
    parser.add_argument("--try-number", type=int, default=None)
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    ctx = RunContext(stage=stage, trade_date=args.trade_date, parent_run_id=args.parent_run_id,
                     dag_id=args.dag_id, run_id=args.run_id, task_id=args.task_id,
                     try_number=args.try_number)
    bounded_mlflow_http()
    before_run, during_run = stage_dependencies(stage, settings)
    try:
        if preflight_enabled():  # no run is opened and no Spark started while MLflow is down
            wait_for_dependencies(before_run)
        with stage_run(ctx, settings, during_run, check_first=preflight_enabled()) as tracker:
            spark = spark_session(f"lakehouse-{stage}-{ctx.trade_date}", settings) if needs_spark else None
            if spark is not None:
                tracker.tags({"spark.application_id": spark.sparkContext.applicationId,
                              "spark.master": spark.sparkContext.master})
            body(spark, settings, ctx, tracker)
    except DependencyUnavailable as exc:
        print(f"{stage} {ctx.trade_date}: FAILED, dependency unavailable: {exc}", file=sys.stderr)
        return DEPENDENCY_EXIT_CODE
    print(f"{stage} {ctx.trade_date}: done", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------------------------------
# Model registry helpers shared by training, deployment and monitoring
# --------------------------------------------------------------------------------------------------

CHAMPION = "champion"
PREVIOUS = "previous"


def read_snapshot(spark, table: str, snapshot_id: int):
    """Read a table as of one snapshot (Iceberg time travel): what a model was trained on."""
    return spark.read.format("iceberg").option("snapshot-id", str(snapshot_id)).load(table)


def model_version_by_alias(settings: Settings, alias: str):
    """The registered version behind an alias, or None when the alias is not set yet."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return MlflowClient().get_model_version_by_alias(settings.model_name, alias)
    except MlflowException as exc:
        if "not found" in str(exc).lower() or "RESOURCE_DOES_NOT_EXIST" in str(exc):
            return None
        raise


def training_run_of_dag_run(settings: Settings, ctx: RunContext):
    """The latest finished model_training run of the same DAG run (None outside Airflow)."""
    import mlflow

    if not ctx.run_id:
        return None
    runs = mlflow.search_runs(
        experiment_ids=[mlflow_experiment_id(settings)],
        filter_string=(f"tags.`airflow.run_id` = '{ctx.run_id}' and "
                       "tags.`pipeline.stage` = 'model_training' and attributes.status = 'FINISHED'"),
        order_by=["attributes.start_time DESC"], max_results=1, output_format="list",
    )
    return runs[0] if runs else None


def promote(settings: Settings, version: str) -> None:
    """Make ``version`` the champion; the outgoing champion keeps the ``previous`` alias."""
    from mlflow import MlflowClient

    client = MlflowClient()
    current = model_version_by_alias(settings, CHAMPION)
    if current is not None and current.version == str(version):
        return
    if current is not None:
        client.set_registered_model_alias(settings.model_name, PREVIOUS, current.version)
    client.set_registered_model_alias(settings.model_name, CHAMPION, str(version))


def rollback_champion(settings: Settings) -> tuple[str, str]:
    """Swap ``champion`` and ``previous``; returns (old champion, new champion) versions."""
    champion = model_version_by_alias(settings, CHAMPION)
    previous = model_version_by_alias(settings, PREVIOUS)
    if champion is None or previous is None:
        raise RuntimeError(f"{settings.model_name} needs both '{CHAMPION}' and '{PREVIOUS}' aliases to roll back")
    promote(settings, previous.version)
    return champion.version, previous.version
