"""Iceberg maintenance that keeps lineage: expire, remove orphans, compact, clean metadata.

Every run, rerun and backfill adds a snapshot to each table; this keeps them bounded. First each
registered model version's training snapshot is (re)tagged (``model_v<version>``), so expiry never
takes away what deployment, monitoring and a retraining time-travel to. Then, per table of
``contract.ALL_TABLES``: metadata-file cleanup properties, ``rewrite_data_files`` (small files),
``rewrite_manifests``, ``expire_snapshots`` (older than ICEBERG_SNAPSHOT_MAX_AGE_DAYS, keeping at
least ICEBERG_SNAPSHOT_RETAIN_LAST) and ``remove_orphan_files`` (older than
ICEBERG_ORPHAN_MIN_AGE_HOURS). What it did per table is logged to MLflow.

    spark-submit jobs/ops/iceberg_maintenance.py --trade-date 2026-11-29   # what the DAG runs
    python -m jobs.ops.iceberg_maintenance --trade-date 2026-11-29          # the same, local Spark
"""
from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from jobs.contract import ALL_TABLES, ICEBERG_MAINTENANCE, env
from jobs.lakehouse.cli import stage_cli
from jobs.lakehouse.registry import ensure_lineage_tags
from jobs.lakehouse.settings import Settings
from jobs.lakehouse.tables import table_footprint
from jobs.lakehouse.tracking import RunContext, StageTracker

REPORT_ARTIFACT = "maintenance.json"
# Iceberg's remove_orphan_files refuses anything younger: a file that young may belong to a
# write that has not committed yet.
MIN_ORPHAN_AGE_HOURS = 24


@dataclass(frozen=True)
class Policy:
    snapshot_max_age_days: float = 7.0
    retain_last: int = 10
    orphan_min_age_hours: float = 72.0
    metadata_versions_max: int = 10
    # Iceberg's default: a partition of fewer files is left alone (rewriting it would also double
    # the bytes of every tagged snapshot that still references the old files).
    rewrite_min_input_files: int = 5

    @classmethod
    def from_env(cls) -> Policy:
        policy = cls(
            snapshot_max_age_days=float(env("ICEBERG_SNAPSHOT_MAX_AGE_DAYS", "7")),
            retain_last=int(env("ICEBERG_SNAPSHOT_RETAIN_LAST", "10")),
            orphan_min_age_hours=float(env("ICEBERG_ORPHAN_MIN_AGE_HOURS", "72")),
            metadata_versions_max=int(env("ICEBERG_METADATA_VERSIONS_MAX", "10")),
        )
        if policy.orphan_min_age_hours < MIN_ORPHAN_AGE_HOURS:
            raise ValueError(f"ICEBERG_ORPHAN_MIN_AGE_HOURS must be at least {MIN_ORPHAN_AGE_HOURS}: "
                             f"younger files may belong to a write in progress")
        if policy.retain_last < 1 or policy.snapshot_max_age_days < 0:
            raise ValueError("ICEBERG_SNAPSHOT_RETAIN_LAST must be >= 1 and ICEBERG_SNAPSHOT_MAX_AGE_DAYS >= 0")
        return policy

    def table_properties(self) -> dict[str, str]:
        """Old metadata.json files are deleted on commit, beyond the last ``metadata_versions_max``."""
        return {"write.metadata.delete-after-commit.enabled": "true",
                "write.metadata.previous-versions-max": str(self.metadata_versions_max)}


def timestamp_literal(moment: dt.datetime, timezone: str) -> str:
    """A Spark TIMESTAMP literal for ``moment``: literals are read in the session time zone."""
    local = moment.astimezone(ZoneInfo(timezone))
    return f"TIMESTAMP '{local.strftime('%Y-%m-%d %H:%M:%S.%f')[:-3]}'"


def set_properties(spark, table: str, wanted: dict[str, str]) -> int:
    """Set the properties that differ (an unchanged ALTER would still write a metadata file)."""
    current = {r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES {table}").collect()}
    changed = {k: v for k, v in wanted.items() if current.get(k) != v}
    if changed:
        props = ", ".join(f"'{k}' = '{v}'" for k, v in changed.items())
        spark.sql(f"ALTER TABLE {table} SET TBLPROPERTIES ({props})")
    return len(changed)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def maintain_table(spark, settings: Settings, name: str, policy: Policy,
                   now: Callable[[], dt.datetime] = utc_now) -> dict[str, int]:
    """One table: compact, then expire (its own compaction snapshots included), remove orphans.

    Ages are measured when each step runs, so the snapshots the rewrites just made count as the
    newest ones: only ``retain_last`` and the tagged snapshots survive a max age of 0.
    """
    table = settings.table(name)
    ident = f"{settings.namespace}.{name}"
    call = f"CALL {settings.catalog}.system"
    before = table_footprint(spark, table)
    figures: dict[str, int] = {**before.as_metrics("before")}
    figures["properties_set"] = set_properties(spark, table, policy.table_properties())

    rewrite = spark.sql(f"{call}.rewrite_data_files(table => '{ident}', options => map("
                        f"'min-input-files', '{policy.rewrite_min_input_files}'))").collect()[0]
    figures["rewritten_data_files"] = int(rewrite["rewritten_data_files_count"])
    figures["added_data_files"] = int(rewrite["added_data_files_count"])
    figures["rewritten_bytes"] = int(rewrite["rewritten_bytes_count"])
    manifests = spark.sql(f"{call}.rewrite_manifests(table => '{ident}')").collect()[0]
    figures["rewritten_manifests"] = int(manifests["rewritten_manifests_count"])

    older = timestamp_literal(now() - dt.timedelta(days=policy.snapshot_max_age_days), settings.timezone)
    expired = spark.sql(f"{call}.expire_snapshots(table => '{ident}', older_than => {older}, "
                        f"retain_last => {policy.retain_last})").collect()[0]
    figures["deleted_data_files"] = int(expired["deleted_data_files_count"])
    figures["deleted_manifests"] = int(expired["deleted_manifest_files_count"])
    figures["deleted_manifest_lists"] = int(expired["deleted_manifest_lists_count"])

    orphan_cutoff = timestamp_literal(now() - dt.timedelta(hours=policy.orphan_min_age_hours), settings.timezone)
    # prefix_listing: list the table's folder through its own FileIO (S3FileIO on an S3 warehouse),
    # not a Hadoop FileSystem, which would need fs.s3a.* settings of its own to reach the same bucket.
    orphans = spark.sql(f"{call}.remove_orphan_files(table => '{ident}', older_than => {orphan_cutoff}, "
                        "prefix_listing => true)").collect()
    figures["orphan_files_removed"] = len(orphans)
    figures.update(table_footprint(spark, table).as_metrics("after"))
    return figures


def run(spark, settings: Settings, ctx: RunContext, tracker: StageTracker, policy: Policy | None = None,
        now: Callable[[], dt.datetime] = utc_now) -> dict[str, dict]:
    """Protect lineage, then maintain every table; a failed table fails the run after the others."""
    import mlflow

    policy = policy or Policy.from_env()
    # Before anything expires: every registered version's training snapshot carries its tag. If
    # the registry cannot be read this raises, and nothing is expired.
    lineage = ensure_lineage_tags(spark, settings)
    tracker.metrics({"lineage.versions": len(lineage),
                     "lineage.tags_written": sum(o in ("created", "updated") for o in lineage.values()),
                     "lineage.unprotected": sum(o == "snapshot_expired" for o in lineage.values())})
    tracker.params({"snapshot_max_age_days": policy.snapshot_max_age_days, "retain_last": policy.retain_last,
                    "orphan_min_age_hours": policy.orphan_min_age_hours,
                    "metadata_versions_max": policy.metadata_versions_max})
    report: dict[str, dict] = {"lineage": lineage}
    failed: dict[str, str] = {}
    for name in ALL_TABLES:
        if not spark.catalog.tableExists(settings.table(name)):
            continue
        try:
            figures = maintain_table(spark, settings, name, policy, now)
        except Exception as exc:  # the other tables still get maintained; the run fails below
            failed[name] = f"{type(exc).__name__}: {exc}"[:500]
            print(f"{name}: maintenance failed: {failed[name]}", file=sys.stderr)
            continue
        report[name] = figures
        tracker.metrics({f"{name}.{k}": v for k, v in figures.items()})
        print(f"{name}: snapshots {figures['before.snapshots']} -> {figures['after.snapshots']}, data files "
              f"{figures['before.data_files']} -> {figures['after.data_files']}, bytes "
              f"{figures['before.data_bytes']} -> {figures['after.data_bytes']}", file=sys.stderr)
    if tracker.run_id:
        mlflow.log_dict({**report, "failed": failed}, REPORT_ARTIFACT)
    tracker.metrics({"tables_maintained": len(report) - 1, "tables_failed": len(failed)})
    if failed:
        raise RuntimeError("maintenance failed on " + "; ".join(f"{k}: {v}" for k, v in failed.items()))
    return report


if __name__ == "__main__":
    sys.exit(stage_cli(ICEBERG_MAINTENANCE, run))
