"""`make bench`: what monitoring costs, how the pipeline grows with data, how far Spark is from a
single-process engine, and how much memory the embedded stack takes, as ratios from one run.

One run on this machine:

1. brings up a private embedded stack (SeaweedFS, the Hive metastore of the default catalog hive_prod,
   MLflow, Airflow; Trino when the machine runs it) on free 127.0.0.1 ports in a
   temporary LAKEHOUSE_HOME (never the user's var/stack; Airflow gets an empty DAG folder, so it
   idles and schedules nothing), and generates the RAW ticks of each size (one trade date each);
2. starts one SparkSession (local[*], the embedded run's driver memory and shuffle partitions) and
   calls each stage's ``run(spark, settings, ctx, tracker)`` in-process: raw_to_bronze,
   bronze_to_silver, silver_to_gold, feature_engineering, model_training;
   * "on": MLflow parent run + one child run per stage (``jobs.lakehouse.tracking.stage_run``), quality
     gates enforced, model_training.run as deployed (sweep with nested runs, figures, model
     logged to S3 and registered);
   * "off": ``NullTracker``, ``QUALITY_GATES=off``, and for training the same computation without
     MLflow (snapshot read and ``jobs.ml.modeling.fit``: split, sweep, final fit, both evaluations) - the figures,
     ROC points, dataset inputs and model upload exist only to be logged, so they are tracking cost;
   on and off alternate in every repeat (on/off, off/on, ...) to cancel drift of the machine;
3. runs ``bench/duckdb_reference.py`` (the same Bronze → Gold logic in DuckDB, in its own process)
   on the same RAW Parquet after each repeat, and checks its Gold bars against the Spark Gold table;
4. samples resident memory (RSS from /proc, PSS now and then) of the stack's process sessions,
   the Spark driver JVM and the driver's Python process every BENCH_SAMPLE_SECONDS in a thread;
5. writes bench/results.json, prints a table, stops Spark and the stack and deletes every
   temporary file (BENCH_KEEP=1 keeps them for a look).

Knobs (environment): BENCH_SIZES (default 1000000,10000000; 1M/100k suffixes allowed),
BENCH_REPEATS (default 3), BENCH_OUTPUT (default bench/results.json), BENCH_SAMPLE_SECONDS (0.5),
BENCH_AIRFLOW (1: include Airflow in the stack), BENCH_EVENT_LOG_DIR (keep Spark event logs there
for profiling), BENCH_KEEP (0).

What users experience (issue 11), in the same run:

6. ``stage_fixed_seconds`` (bench/stage_fixed.py): every stage as its own spark-submit on a tiny date
   (BENCH_FIXED_TICKS, 500) against the same stack, BENCH_FIXED_REPEATS (3) times, median wall and
   phases (JVM start, Python imports, preflight, MLflow, SparkContext, Iceberg catalog, work);
   BENCH_FIXED=0 skips it;
7. ``airflow_date_seconds`` (bench/airflow_date.py): after that stack is down, one trade date of each
   BENCH_AIRFLOW_SIZES (default 333333,10000000; empty or 0 skips) through the real scheduler of a
   fresh stack with the project's DAGs; ``orchestration_ratio`` = its raw_to_bronze..model_training
   span / the in-session tracked pipeline of the same size (those sizes are added to BENCH_SIZES).
   A short variant: BENCH_SIZES=100000 BENCH_AIRFLOW_SIZES=333333 BENCH_REPEATS=1.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import gc
import importlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/run.py` as well as `python -m bench.run`
    sys.path.insert(0, str(REPO))

from bench.sampler import Sampler, log, machine_info  # noqa: E402
from bench.summary import STAGES, add_user_view, label, print_table, summarize  # noqa: E402
from jobs.contract import (  # noqa: E402
    BRONZE,
    BRONZE_TO_SILVER,
    FEATURE_ENGINEERING,
    FEATURES,
    GOLD,
    MODEL_TRAINING,
    QUARANTINE,
    RAW_TO_BRONZE,
    ROLE_DAG_RUN,
    SILVER,
    SILVER_TO_GOLD,
    TAG_ROLE,
    TAG_TRADE_DATE,
)
from scripts.devstack.env import DEFAULT_CATALOG, job_services  # noqa: E402

TRADE_DATE = dt.date(2026, 3, 3)   # a Tuesday in the past: no tick is later than the ingestion time
WARMUP_TICKS = 200_000


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------

def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*([\d_]+(?:\.\d+)?)\s*([kKmM]?)\s*", text)
    if not m:
        raise ValueError(f"not a tick count: {text!r} (e.g. 1000000, 1M, 500k)")
    value = float(m.group(1).replace("_", "")) * {"": 1, "k": 1e3, "m": 1e6}[m.group(2).lower()]
    if value < 10_000:
        raise ValueError(f"size {text!r} is too small for a one-minute-bar model (at least 10k ticks)")
    return int(value)



def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def bench_config() -> dict:
    sizes = sorted({parse_size(s) for s in (os.environ.get("BENCH_SIZES") or "1000000,10000000").split(",")
                    if s.strip()})
    repeats = _env_int("BENCH_REPEATS", 3)
    if repeats < 1:
        raise ValueError("BENCH_REPEATS must be at least 1")
    airflow_sizes = sorted({parse_size(s) for s in
                            (os.environ.get("BENCH_AIRFLOW_SIZES", "333333,10000000")).split(",")
                            if s.strip() and s.strip() != "0"})
    return {
        "sizes": sorted({*sizes, *airflow_sizes}),
        "airflow_sizes": airflow_sizes,
        "fixed": (os.environ.get("BENCH_FIXED") or "1").strip().lower() not in ("0", "off", "false", "no"),
        "fixed_ticks": _env_int("BENCH_FIXED_TICKS", 500),
        "fixed_repeats": _env_int("BENCH_FIXED_REPEATS", 3),
        "repeats": repeats,
        "output": Path(os.environ.get("BENCH_OUTPUT") or REPO / "bench" / "results.json"),
        "sample_seconds": float(os.environ.get("BENCH_SAMPLE_SECONDS") or 0.5),
        "airflow": (os.environ.get("BENCH_AIRFLOW") or "1").strip().lower() not in ("0", "off", "false", "no"),
        "event_log_dir": os.environ.get("BENCH_EVENT_LOG_DIR", "").strip(),
        "keep": (os.environ.get("BENCH_KEEP") or "0").strip().lower() in ("1", "yes", "true", "on"),
    }



# --------------------------------------------------------------------------------------------------
# The pipeline, in-process
# --------------------------------------------------------------------------------------------------

def train_untracked(spark, settings, ctx) -> int:
    """model_training.run's computation without MLflow (``fit``): what training costs with tracking off."""
    from jobs.lakehouse.registry import HOLDOUT_FRACTION, load_training_frame
    from jobs.lakehouse.tables import current_snapshot
    from jobs.ml.modeling import fit

    snap = current_snapshot(spark, settings.table(FEATURES))
    frame = load_training_frame(spark, settings, snap.snapshot_id, ctx.trade_date, settings.training_lookback_days)
    fit(frame, HOLDOUT_FRACTION)
    return len(frame)


def run_pipeline(spark, settings, tracked: bool, tag: str) -> dict[str, float]:
    """Every stage once for TRADE_DATE; seconds per stage and for the whole pipeline."""
    from jobs.lakehouse.tracking import NullTracker, RunContext, mlflow_experiment_id, stage_run

    modules = {name: importlib.import_module(f"jobs.stages.{name}") for name in STAGES}
    seconds: dict[str, float] = {}
    gc.collect()
    started = time.perf_counter()
    parent = None
    if tracked:  # what start_tracking does in the DAG: one parent run per pipeline run
        from mlflow import MlflowClient

        client = MlflowClient()
        parent = client.create_run(mlflow_experiment_id(settings), run_name=f"bench {tag}",
                                   tags={TAG_ROLE: ROLE_DAG_RUN, TAG_TRADE_DATE: TRADE_DATE.isoformat(),
                                         "bench": tag}).info.run_id
    for name in STAGES:
        ctx = RunContext(stage=name, trade_date=TRADE_DATE, parent_run_id=parent)
        t = time.perf_counter()
        # MLflow prints "View run ... at: <url>" for every run it ends: not for the benchmark's output.
        with contextlib.redirect_stdout(io.StringIO()):
            if tracked:
                with stage_run(ctx, settings) as tracker:
                    modules[name].run(spark, settings, ctx, tracker)
            elif name == MODEL_TRAINING:
                train_untracked(spark, settings, ctx)
            else:
                modules[name].run(spark, settings, ctx, NullTracker())
        seconds[name] = time.perf_counter() - t
    if parent:
        with contextlib.redirect_stdout(io.StringIO()):
            client.set_terminated(parent, "FINISHED")
    seconds["pipeline"] = time.perf_counter() - started
    spark.catalog.clearCache()
    log(f"{tag}: pipeline {seconds['pipeline']:.1f}s (" +
        ", ".join(f"{s} {seconds[s]:.1f}" for s in STAGES) + ")")
    return seconds


def run_duckdb(raw_dir: Path, out_dir: Path, tag: str) -> dict:
    shutil.rmtree(out_dir, ignore_errors=True)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bench.duckdb_reference", "--raw", str(raw_dir),
                           "--out", str(out_dir), "--trade-date", TRADE_DATE.isoformat()],
                          cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"DuckDB reference failed:\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - t
    log(f"{tag}: DuckDB Bronze→Gold {result['seconds']['bronze_to_gold']:.1f}s")
    return result


def generate(n: int, root: Path) -> tuple[Path, float]:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "jobs.synthetic.raw_ticks", "--dates", TRADE_DATE.isoformat(),
                    "--ticks", str(n), "--out", str(root)], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return root / f"trade_date={TRADE_DATE.isoformat()}", time.perf_counter() - t


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------

def main() -> int:
    cfg = bench_config()
    sizes, repeats = cfg["sizes"], cfg["repeats"]
    root = Path(tempfile.mkdtemp(prefix="lakehouse-bench-"))
    log(f"sizes {', '.join(label(n) for n in sizes)}, {repeats} repeats; temporary state in {root}")
    (root / "dags").mkdir()
    # The catalog named explicitly, so the services started (the metastore for hive) match its tables.
    stack_settings = {"LAKEHOUSE_DAGS_FOLDER": str(root / "dags"), "LAKEHOUSE_CATALOG": DEFAULT_CATALOG}
    if not cfg["airflow"]:
        stack_settings["LAKEHOUSE_SERVICES"] = job_services(DEFAULT_CATALOG)
    spark = sampler = None
    started = time.perf_counter()
    try:
        from scripts.devstack.processes import read_pid
        from scripts.devstack.services import all_services
        from scripts.devstack.temporary import running_stack

        with running_stack(root / "stack", stack_settings) as st:
            log(f"stack up: {', '.join(line.split(':')[0] for line in st.up_output.splitlines() if 'healthy' in line)}")
            os.environ.update(st.env)
            os.environ.update({"LAKEHOUSE_TRACKING": "on", "QUALITY_GATES": "enforce",
                               "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable})
            extra_conf = [f"--conf spark.local.dir={root / 'spark-local'}", "--conf spark.ui.showConsoleProgress=false"]
            if cfg["event_log_dir"]:
                Path(cfg["event_log_dir"]).mkdir(parents=True, exist_ok=True)
                extra_conf += ["--conf spark.eventLog.enabled=true",
                               f"--conf spark.eventLog.dir=file://{Path(cfg['event_log_dir']).resolve()}"]
            driver_memory = os.environ.get("SPARK_DRIVER_MEMORY") or "2g"
            os.environ["PYSPARK_SUBMIT_ARGS"] = f"--driver-memory {driver_memory} {' '.join(extra_conf)} pyspark-shell"
            machine = machine_info(os.environ.get("JAVA_HOME", ""))

            raw: dict[int, Path] = {}
            gen_seconds = {}
            for n in sorted({*sizes, WARMUP_TICKS}):
                raw[n], gen_seconds[label(n)] = generate(n, root / "raw" / label(n))
                log(f"RAW {label(n)} ticks generated in {gen_seconds[label(n)]:.1f}s")

            from bench import duckdb_reference as ref
            from jobs.lakehouse.settings import Settings
            from jobs.lakehouse.tables import partition_rows, spark_session

            base = Settings.from_env()
            t = time.perf_counter()
            spark = spark_session("lakehouse-bench", base, master=os.environ.get("SPARK_MASTER") or "local[*]")
            startup = time.perf_counter() - t
            jvm_pid = int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())
            log(f"SparkSession up in {startup:.1f}s (driver JVM pid {jvm_pid}, {spark.sparkContext.master}, "
                f"driver memory {driver_memory}, shuffle partitions {base.shuffle_partitions})")

            services: dict[str, list[int]] = {}
            for svc in all_services(st.env):
                pid = read_pid(st.env, svc.name)
                if pid:
                    services.setdefault(svc.group, []).append(pid)
            sampler = Sampler(cfg["sample_seconds"], services, jvm_pid)
            sampler.start()

            def settings_for(namespace: str, raw_root: Path, tracked: bool):
                spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {base.catalog}.{namespace}")
                return dataclasses.replace(base, namespace=namespace, raw_ticks_path=str(raw_root.parent),
                                           quality_gates="enforce" if tracked else "off")

            # Warm-up (untimed): JIT, MLflow connections, the registered model, on a small date of its own.
            sampler.phase = "warm-up"
            for tracked in (True, False):
                run_pipeline(spark, settings_for("bench_warmup", raw[WARMUP_TICKS], tracked), tracked,
                             f"warm-up {'on' if tracked else 'off'}")

            fixed = None
            if cfg["fixed"]:  # each stage as Airflow starts it, on a tiny date of its own
                from bench import stage_fixed

                sampler.phase = "stage fixed cost"
                fixed_env = {**st.env, "LAKEHOUSE_TRACKING": "on", "QUALITY_GATES": "enforce",
                             "ICEBERG_NAMESPACE": "bench_fixed", "RAW_TICKS_PATH": str(root / "raw" / "fixed"),
                             "SPARK_DRIVER_MEMORY": driver_memory}
                stage_fixed.generate_tiny(fixed_env["RAW_TICKS_PATH"], cfg["fixed_ticks"])
                fixed = stage_fixed.measure({"current": (fixed_env, stage_fixed.spark_stage_conf(
                    st.env.get("SPARK_MASTER") or "local[*]"))}, cfg["fixed_repeats"])["current"]

            runs: dict[int, dict[str, list]] = {}
            duck: dict[int, list] = {}
            rows: dict[int, dict] = {}
            gold: dict[int, dict] = {}
            for n in sizes:
                lab = label(n)
                ns = f"bench_{lab.lower()}"
                runs[n] = {"on": [], "off": []}
                duck[n] = []
                for r in range(repeats):
                    for variant in (("on", "off") if r % 2 == 0 else ("off", "on")):
                        sampler.phase = f"{lab} {variant}"
                        tracked = variant == "on"
                        runs[n][variant].append(run_pipeline(spark, settings_for(ns, raw[n], tracked), tracked,
                                                             f"{lab} {variant} #{r + 1}"))
                    sampler.phase = f"{lab} duckdb"
                    duck[n].append(run_duckdb(raw[n], root / "duckdb" / lab, f"{lab} #{r + 1}"))
                cfg_n = settings_for(ns, raw[n], False)
                rows[n] = {
                    RAW_TO_BRONZE: n,
                    BRONZE_TO_SILVER: partition_rows(spark, cfg_n.table(BRONZE), TRADE_DATE),
                    SILVER_TO_GOLD: partition_rows(spark, cfg_n.table(SILVER), TRADE_DATE),
                    FEATURE_ENGINEERING: partition_rows(spark, cfg_n.table(GOLD), TRADE_DATE),
                    MODEL_TRAINING: partition_rows(spark, cfg_n.table(FEATURES), TRADE_DATE),
                }
                check = ref.compare_gold(ref.gold_frame_spark(spark, cfg_n.table(GOLD), TRADE_DATE),
                                         ref.gold_frame_duckdb(duck[n][-1]["paths"]["gold"]))
                spark_rejected = {r["reject_reason"]: int(r["n"]) for r in spark.sql(
                    f"SELECT reject_reason, count(*) AS n FROM {cfg_n.table(QUARANTINE)} "
                    f"WHERE trade_date = DATE '{TRADE_DATE}' GROUP BY 1").collect()}
                check["rejected_spark"] = {k: spark_rejected.get(k, 0) for k in ref.REASONS}
                check["rejected_duckdb"] = duck[n][-1]["rejected"]
                check["silver_rows"] = {"spark": rows[n][SILVER_TO_GOLD], "duckdb": duck[n][-1]["rows"]["silver"]}
                check["match"] = bool(check["match"] and check["rejected_spark"] == check["rejected_duckdb"]
                                      and rows[n][SILVER_TO_GOLD] == duck[n][-1]["rows"]["silver"])
                gold[n] = check
                log(f"{lab}: Gold rows match DuckDB: {check['match']} ({check['rows_spark']} bars)")
            sampler.phase = "shutdown"
            sampler.stop()
            memory = sampler.report()
            memory["services_sampled"] = sorted(services)
            spark.stop()
            spark = None
        airflow, airflow_errors = {}, {}
        for n in cfg["airflow_sizes"]:  # a fresh stack with the project's DAGs, after this one is down
            from bench.airflow_date import airflow_date

            try:
                airflow[label(n)] = airflow_date(n, TRADE_DATE)
            except Exception as exc:  # keep the hour of in-session figures; say what failed
                log(f"Airflow run of {label(n)} failed: {type(exc).__name__}: {exc}")
                airflow_errors[label(n)] = f"{type(exc).__name__}: {exc}"[:2000]
        extra = {"spark_session_startup_s": round(startup, 2),
                 "spark_session_startup_note": "paid once here; under Airflow every stage is its own spark-submit "
                                               "and pays it per task",
                 "raw_generation_s": {k: round(v, 1) for k, v in gen_seconds.items()},
                 "trade_date": TRADE_DATE.isoformat(),
                 "catalog": DEFAULT_CATALOG,
                 "spark_driver_memory": driver_memory,
                 "shuffle_partitions": base.shuffle_partitions,
                 "warmup_ticks": WARMUP_TICKS,
                 "total_wall_s": round(time.perf_counter() - started, 1)}
        result = summarize(cfg, runs, duck, rows, gold, memory, machine, extra)
        add_user_view(result, fixed, airflow)
        if airflow_errors:
            result["details"]["airflow_errors"] = airflow_errors
    finally:
        if sampler is not None and sampler.is_alive():
            sampler.stop()
        if spark is not None:
            spark.stop()
        if cfg["keep"]:
            log(f"kept {root} (BENCH_KEEP=1)")
        else:
            shutil.rmtree(root, ignore_errors=True)
    out = cfg["output"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"\nwritten {out} ({result['details']['total_wall_s']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
