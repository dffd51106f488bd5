"""Bad input on real Spark and real Iceberg tables: kept, explained, counted; gates stop publishing.

Each test drives the real stage code (``raw_to_bronze.run`` / ``bronze_to_silver.run``) on RAW
files written to the local RAW zone, with a recording tracker in place of MLflow (the MLflow side
is covered by tests/e2e). Every test uses its own trade date, so they share the session's tables.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import pyarrow.compute as pc
import pytest

from jobs.contract import BRONZE, QUARANTINE, QUARANTINE_FILES, SILVER
from jobs.lakehouse.tables import current_snapshot, partition_rows
from jobs.lakehouse.tracking import NullTracker, RunContext
from jobs.quality.rules import QualityGateFailed, evaluate
from jobs.schema import REASONS
from jobs.stages import bronze_to_silver, raw_to_bronze
from jobs.synthetic import messy_delivery as generate_messy_delivery
from jobs.synthetic import raw_ticks as gen
from jobs.transforms.bronze import map_columns


class Recorder(NullTracker):
    """Collects what a stage reports, as the MLflow run would receive it."""

    def __init__(self):
        super().__init__()
        self.logged: dict[str, float] = {}
        self.tagged: dict[str, str] = {}

    def metrics(self, values):
        self.logged.update({k: v for k, v in values.items() if v is not None})

    def tags(self, values):
        self.tagged.update({k: str(v) for k, v in values.items()})


def run_stage(stage, spark, settings, day) -> Recorder:
    rec = Recorder()
    stage.run(spark, settings, RunContext(stage=stage.__name__.rsplit(".", 1)[-1], trade_date=day), rec)
    return rec


def rules_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "gates.toml"
    path.write_text(text)
    return str(path)


def date_rows(spark, settings, table, day):
    return spark.table(settings.table(table)).where(f"trade_date = DATE '{day}'")


# ---------------------------------------------------------------------------------------------
# Column mapping (pure)
# ---------------------------------------------------------------------------------------------

def test_vendor_names_map_to_ours_and_unknown_columns_are_kept_as_extra():
    m = map_columns(["TS", "Seq", "symbol", "bid_price", "ask", "LAST", "venue", "price"])
    assert m.renames == {"TS": "exchange_ts", "Seq": "seq_no", "symbol": "contract_id", "bid_price": "bid",
                         "LAST": "last"}
    # `price` is an alias of last, but LAST already claimed it: kept, not overwritten.
    assert m.extra == ("venue", "price")
    assert m.missing_required == ()
    assert "strike" in m.missing


def test_configured_aliases_extend_the_defaults_and_required_columns_are_reported():
    m = map_columns(["zeit", "seq_no", "contract_id", "ask", "last"], aliases={"zeit": "exchange_ts"})
    assert m.renames == {"zeit": "exchange_ts"}
    assert m.missing_required == ("bid",)


# ---------------------------------------------------------------------------------------------
# A messy delivery end to end through Bronze and Silver
# ---------------------------------------------------------------------------------------------

MESSY = dt.date(2026, 11, 16)
CLEAN_TICKS = 3000


@pytest.fixture(scope="module")
def messy(spark, settings):
    gen.write_raw(gen.generate_ticks(MESSY, CLEAN_TICKS), settings.raw_ticks_path, MESSY)
    files, _ = generate_messy_delivery.build(MESSY)
    expected = generate_messy_delivery.write(settings.raw_ticks_path, MESSY)
    bronze = run_stage(raw_to_bronze, spark, settings, MESSY)
    silver = run_stage(bronze_to_silver, spark, settings, MESSY)
    return {"files": files, "expected": expected, "bronze": bronze, "silver": silver}


def test_unloadable_files_are_quarantined_with_a_reason_and_the_rest_loads(spark, settings, messy):
    rows = date_rows(spark, settings, QUARANTINE_FILES, MESSY).collect()
    assert {Path(r["source_file"]).name: r["reason"] for r in rows} == messy["expected"]["files"]
    assert all(r["detail"] and r["size_bytes"] > 0 for r in rows)
    unreadable = next(r for r in rows if r["reason"] == "unreadable")
    assert "parquet" in unreadable["detail"].lower()
    logged = messy["bronze"].logged
    assert logged["files_in"] == 6 and logged["files_loaded"] == 3 and logged["files_quarantined"] == 3
    assert logged["files_quarantined.unreadable"] == 1 and logged["files_quarantined.missing_columns"] == 1
    # Bronze holds every row of every loaded file, in all three formats.
    assert partition_rows(spark, settings.table(BRONZE), MESSY) == CLEAN_TICKS + messy["expected"]["rows_loaded"]
    formats = {r["_source_format"]
               for r in date_rows(spark, settings, BRONZE, MESSY).select("_source_format").distinct().collect()}
    assert formats == {"parquet", "csv", "json"}


def test_renamed_columns_are_mapped_extra_columns_kept_and_contract_attributes_derived(spark, settings, messy):
    tags = messy["bronze"].tagged
    for vendor, ours in messy["expected"]["renamed"].items():
        assert f"{vendor}->{ours}" in tags["schema.renamed"]
    assert tags["schema.extra_columns"] == "venue"
    vendor_b = date_rows(spark, settings, BRONZE, MESSY).where("_source_file LIKE '%vendor-b%'").first()
    assert json.loads(vendor_b["_extra"]) == {"venue": "KRX"}
    silver_b = date_rows(spark, settings, SILVER, MESSY).where("_source_file LIKE '%vendor-b%'").collect()
    assert len(silver_b) == 40
    assert all(r["underlying"] == "KOSPI200" and r["strike"] > 0 and r["expiry"] >= MESSY
               and r["option_type"] in ("C", "P") for r in silver_b)


def test_every_rejected_row_has_its_reason_and_the_rows_add_up(spark, settings, messy):
    planted = gen.bad_row_counts(CLEAN_TICKS, 0.002)
    want = {r: 0 for r in REASONS}
    want.update({"duplicate": planted["duplicate"], "crossed_quote": planted["crossed_quote"],
                 "non_positive_price": planted["non_positive_price"], "null_key": planted["null_contract"]})
    for reason, n in messy["expected"]["rejected"].items():
        want[reason] += n
    logged = messy["silver"].logged
    assert {r: logged[f"rejected.{r}"] for r in REASONS} == want
    # rows_in = rows_out + rows_rejected, in the MLflow figures and in the tables.
    assert logged["rows_in"] == logged["rows_out"] + logged["rows_rejected"]
    assert logged["rows_in"] == partition_rows(spark, settings.table(BRONZE), MESSY)
    assert partition_rows(spark, settings.table(SILVER), MESSY) == logged["rows_out"]
    quarantined = date_rows(spark, settings, QUARANTINE, MESSY)
    assert quarantined.count() == logged["rows_rejected"] == sum(want.values())
    by_reason = {r["reject_reason"]: r["count"] for r in quarantined.groupBy("reject_reason").count().collect()}
    assert by_reason == {r: n for r, n in want.items() if n}
    assert quarantined.where("reject_detail IS NULL OR raw_content IS NULL OR _source_file IS NULL").count() == 0


def test_a_malformed_line_is_kept_verbatim(spark, settings, messy):
    csv_text = messy["files"][f"vendor-b-{MESSY:%Y%m%d}.csv"].decode()
    cut_short = [ln for ln in csv_text.splitlines() if ln.count(",") == 2]
    assert len(cut_short) == 1
    kept = [r["raw_content"] for r in
            date_rows(spark, settings, QUARANTINE, MESSY).where("reject_reason = 'malformed_record'").collect()]
    assert cut_short[0] in kept
    # The JSON line cut off mid-transfer is kept as delivered too.
    assert any(k.startswith("{") and not k.rstrip().endswith("}") for k in kept)


def test_a_utc_feed_without_offsets_is_flagged_as_wrong_timezone(spark, settings, messy):
    rows = date_rows(spark, settings, QUARANTINE, MESSY).where("reject_reason = 'wrong_timezone'").collect()
    assert len(rows) == 5 and all("vendor-c" in r["_source_file"] for r in rows)
    assert all("read as UTC" in r["reject_detail"] for r in rows)


def test_reruns_of_the_same_date_yield_the_same_tables(spark, settings, messy):
    def content(table):
        cols = [c for c in spark.table(settings.table(table)).columns if c not in ("_ingested_at", "reject_detail")]
        return sorted(repr(tuple(r)) for r in date_rows(spark, settings, table, MESSY).select(*cols).collect())

    before = {t: content(t) for t in (BRONZE, SILVER, QUARANTINE, QUARANTINE_FILES)}
    for _ in range(3):
        run_stage(raw_to_bronze, spark, settings, MESSY)
        run_stage(bronze_to_silver, spark, settings, MESSY)
    assert {t: content(t) for t in before} == before
    keys = date_rows(spark, settings, SILVER, MESSY).groupBy("contract_id", "seq_no").count()
    assert keys.where("count > 1").count() == 0


# ---------------------------------------------------------------------------------------------
# Quality gates
# ---------------------------------------------------------------------------------------------

def test_gate_rules_bound_figures_and_skip_what_is_not_known():
    rules = {"min_rows": 1, "max_rejected_share": 0.05, "volume_ratio": [0.2, 5.0],
             "max_null_share": {"bid_size": 0.01}, "ranges": {"strike": [1, 10]}, "volume_lookback_dates": 5}
    results = {r.rule: r for r in evaluate(rules, {"rows": 10, "rejected_share": 0.2, "volume_ratio": None,
                                                    "null_share.bid_size": 0.0, "out_of_range_share.strike": 0.1})}
    assert set(results) == {"min_rows", "max_rejected_share", "volume_ratio", "max_null_share.bid_size",
                            "ranges.strike"}
    assert results["min_rows"].passed and results["max_null_share.bid_size"].passed
    assert not results["max_rejected_share"].passed and not results["ranges.strike"].passed
    assert results["volume_ratio"].skipped and results["volume_ratio"].passed


def test_a_failing_silver_gate_publishes_nothing_but_explains_the_batch(spark, settings, tmp_path):
    day = dt.date(2026, 11, 18)
    gen.write_raw(gen.generate_ticks(day, 2000, bad_share=0.01), settings.raw_ticks_path, day)
    run_stage(raw_to_bronze, spark, settings, day)
    run_stage(bronze_to_silver, spark, settings, day)
    published = current_snapshot(spark, settings.table(SILVER))
    strict = dataclasses.replace(
        settings, quality_gates_file=rules_file(tmp_path, "[silver]\nmax_rejected_share = 0.001\n"))
    rec = Recorder()
    with pytest.raises(QualityGateFailed, match=r"quality gate 'silver' failed for 2026-11-18.*rejected_share = 0.01"):
        bronze_to_silver.run(spark, strict, RunContext(stage="bronze_to_silver", trade_date=day), rec)
    # Silver still holds the previous publication; the quarantine explains the batch; figures logged.
    assert current_snapshot(spark, settings.table(SILVER)).snapshot_id == published.snapshot_id
    assert date_rows(spark, settings, QUARANTINE, day).count() == 20
    assert rec.logged["dq.rejected_share"] == pytest.approx(0.01)
    assert rec.logged["gate.max_rejected_share"] == 0.0 and rec.tagged["quality_gate.silver"] == "failed"
    # warn: the same failure is logged and tagged, and Silver is published.
    warned = run_stage(bronze_to_silver, spark, dataclasses.replace(strict, quality_gates="warn"), day)
    assert warned.tagged["quality_gate.silver"] == "warned"
    assert current_snapshot(spark, settings.table(SILVER)).snapshot_id != published.snapshot_id


def test_volume_and_freshness_gates_compare_raw_with_recent_dates(spark, settings):
    history = [dt.date(2026, 11, 9), dt.date(2026, 11, 10), dt.date(2026, 11, 11)]
    for day in history:
        gen.write_raw(gen.generate_ticks(day, 2000), settings.raw_ticks_path, day)
        passed = run_stage(raw_to_bronze, spark, settings, day)
    assert passed.tagged["quality_gate.bronze"] == "passed"
    short = dt.date(2026, 11, 12)
    ticks = gen.generate_ticks(short, 2000)
    cutoff = dt.datetime.combine(short, dt.time(12, 0), gen.KST)
    morning = ticks.filter(pc.less(ticks["exchange_ts"], cutoff)).slice(0, 150)  # a feed that stopped early
    gen.write_raw(morning, settings.raw_ticks_path, short)
    rec = Recorder()
    with pytest.raises(QualityGateFailed) as failure:
        raw_to_bronze.run(spark, settings, RunContext(stage="raw_to_bronze", trade_date=short), rec)
    assert "volume_ratio" in str(failure.value) and "last_tick_gap_minutes" in str(failure.value)
    assert rec.logged["dq.volume_ratio"] == pytest.approx(150 / 2000)
    assert rec.logged["dq.last_tick_gap_minutes"] > 200
    assert partition_rows(spark, settings.table(BRONZE), short) == 0  # nothing published


def test_a_date_whose_files_are_all_unloadable_fails_and_records_each_file(spark, settings):
    day = dt.date(2026, 11, 13)
    folder = Path(gen.resolve_target(settings.raw_ticks_path, day)[1]).parent
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ticks.csv").write_bytes(b"")
    (folder / "ticks.parquet").write_bytes(b"PAR1 cut off")
    (folder / ".ticks.csv.uploading").write_bytes(b"partial")  # hidden: an upload in progress, ignored
    rec = Recorder()
    with pytest.raises(QualityGateFailed, match="min_rows"):
        raw_to_bronze.run(spark, settings, RunContext(stage="raw_to_bronze", trade_date=day), rec)
    rows = date_rows(spark, settings, QUARANTINE_FILES, day).collect()
    assert sorted((Path(r["source_file"]).name, r["reason"]) for r in rows) == [
        ("ticks.csv", "empty_file"), ("ticks.parquet", "unreadable")]
    assert rec.logged["dq.quarantined_file_share"] == 1.0


def test_a_date_without_raw_files_fails_clearly(spark, settings):
    with pytest.raises(FileNotFoundError, match="no RAW ticks for 2026-11-06"):
        run_stage(raw_to_bronze, spark, settings, dt.date(2026, 11, 6))


def test_quality_gates_mode_is_validated(monkeypatch):
    from jobs.lakehouse.settings import Settings

    monkeypatch.setenv("QUALITY_GATES", "sometimes")
    with pytest.raises(ValueError, match="QUALITY_GATES must be one of enforce, warn, off"):
        Settings.from_env()
    monkeypatch.setenv("QUALITY_GATES", "off")
    assert Settings.from_env().quality_gates == "off"
