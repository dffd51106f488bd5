"""Pipeline configuration resolved from the environment (values documented in ``.env.example``)."""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

from jobs.contract import (
    DEFAULT_AIRFLOW_UI_URL,
    DEFAULT_EXPERIMENT,
    DEFAULT_MODEL_NAME,
    DEFAULT_SHUFFLE_PARTITIONS,
    REPO_ROOT,
    env,
    switch,
)
from jobs.quality.rules import MODES, load_rules
from jobs.trade_calendar import pipeline_timezone


def _quality_mode(value: str) -> str:
    mode = value.strip().lower()
    if mode not in MODES:
        raise ValueError(f"QUALITY_GATES must be one of {', '.join(MODES)}, got {value!r}")
    return mode


def tracking_enabled() -> bool:
    """LAKEHOUSE_TRACKING=off runs the stages without MLflow (benchmarks, quick local checks)."""
    return switch("LAKEHOUSE_TRACKING")


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
    training_lookback_days: int = 20  # ml_retraining overrides it per run through the task's env

    @classmethod
    def from_env(cls) -> Settings:
        home = Path(env("LAKEHOUSE_HOME", str(REPO_ROOT / "var" / "stack")))
        if not home.is_absolute():
            home = (REPO_ROOT / home).resolve()
        extra = json.loads(env("ICEBERG_CATALOG_PROPERTIES", "{}"))
        return cls(
            home=home,
            catalog=env("ICEBERG_CATALOG", "local"),
            catalog_type=env("ICEBERG_CATALOG_TYPE", "jdbc"),
            catalog_uri=env("ICEBERG_CATALOG_URI", f"jdbc:sqlite:{home}/iceberg/catalog.db"),
            warehouse=env("ICEBERG_WAREHOUSE", f"file://{home}/iceberg/warehouse"),
            namespace=env("ICEBERG_NAMESPACE", "option_ticks_db"),
            raw_ticks_path=env("RAW_TICKS_PATH", str(home / "raw" / "ticks")),
            timezone=pipeline_timezone(),
            shuffle_partitions=int(env("SPARK_SQL_SHUFFLE_PARTITIONS", DEFAULT_SHUFFLE_PARTITIONS)),
            experiment=env("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT),
            model_name=env("MLFLOW_MODEL_NAME", DEFAULT_MODEL_NAME),
            airflow_ui_url=env("AIRFLOW_UI_URL", DEFAULT_AIRFLOW_UI_URL).rstrip("/"),
            drift_psi_threshold=float(env("DRIFT_PSI_THRESHOLD", "0.25")),
            promotion_margin=float(env("PROMOTION_MARGIN", "0.0")),
            extra_catalog_props={str(k): str(v) for k, v in extra.items()},
            quality_gates=_quality_mode(env("QUALITY_GATES", "enforce")),
            quality_gates_file=env("QUALITY_GATES_FILE"),
            raw_column_aliases={str(k): str(v) for k, v in json.loads(env("RAW_COLUMN_ALIASES", "{}")).items()},
            trading_session=env("TRADING_SESSION", "08:45-15:45"),
            known_underlyings=tuple(u.strip() for u in env("KNOWN_UNDERLYINGS", "KOSPI200").split(",")
                                    if u.strip()),
            training_lookback_days=int(env("TRAINING_LOOKBACK_DAYS", "20")),
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
            if self.catalog_type == "hive":
                # Hive 2.x metastores (the embedded 2.3.9) reject 'timestamp with local time zone'
                # columns; Iceberg's Java HiveCatalog writes plain 'timestamp' for them, so does this.
                props["hive.hive2-compatible"] = env("ICEBERG_HIVE2_COMPATIBLE", "true")
        endpoint = env("MLFLOW_S3_ENDPOINT_URL")
        if endpoint:
            props.update({
                "s3.endpoint": endpoint,
                "s3.access-key-id": env("AWS_ACCESS_KEY_ID"),
                "s3.secret-access-key": env("AWS_SECRET_ACCESS_KEY"),
                "s3.path-style-access": "true",
                "s3.region": env("AWS_DEFAULT_REGION", "us-east-1"),
            })
        return load_catalog(self.catalog, **props)
