"""`make bench`: what monitoring costs, how the pipeline grows with data, how far Spark is from a
single-process engine, and how much memory the embedded stack takes, as ratios from one run.

One run on this machine:

1. brings up a private embedded stack (SeaweedFS + MLflow + Airflow) on free 127.0.0.1 ports in a
   temporary LAKEHOUSE_HOME (never the user's var/stack; Airflow gets an empty DAG folder, so it
   idles and schedules nothing), and generates the RAW ticks of each size (one trade date each);
2. starts one SparkSession (local[*], the embedded run's driver memory and shuffle partitions) and
   calls each stage's ``run(spark, settings, ctx, tracker)`` in-process: raw_to_bronze,
   bronze_to_silver, silver_to_gold, feature_engineering, model_training;
   * "on": MLflow parent run + one child run per stage (``jobs.lakehouse.stage_run``), quality
     gates enforced, model_training.run as deployed (sweep with nested runs, figures, model
     logged to S3 and registered);
   * "off": ``NullTracker``, ``QUALITY_GATES=off``, and for training the same computation without
     MLflow (snapshot read, split, sweep, final fit, holdout and train evaluation) - the figures,
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
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import gc
import io
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/run.py` as well as `python -m bench.run`
    sys.path.insert(0, str(REPO))

TRADE_DATE = dt.date(2026, 3, 3)   # a Tuesday in the past: no tick is later than the ingestion time
STAGES = ("raw_to_bronze", "bronze_to_silver", "silver_to_gold", "feature_engineering", "model_training")
BRONZE_TO_GOLD = STAGES[:3]
WARMUP_TICKS = 200_000
TARGETS = {"tracking_overhead_ratio": 1.05, "scaling_ratio_10x": 6.0, "duckdb_ratio": 3.0, "stack_rss_mb": 2560.0}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# Configuration and machine
# --------------------------------------------------------------------------------------------------

def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*([\d_]+(?:\.\d+)?)\s*([kKmM]?)\s*", text)
    if not m:
        raise ValueError(f"not a tick count: {text!r} (e.g. 1000000, 1M, 500k)")
    value = float(m.group(1).replace("_", "")) * {"": 1, "k": 1e3, "m": 1e6}[m.group(2).lower()]
    if value < 10_000:
        raise ValueError(f"size {text!r} is too small for a one-minute-bar model (at least 10k ticks)")
    return int(value)


def label(n: int) -> str:
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def bench_config() -> dict:
    sizes = sorted({parse_size(s) for s in (os.environ.get("BENCH_SIZES") or "1000000,10000000").split(",")
                    if s.strip()})
    repeats = _env_int("BENCH_REPEATS", 3)
    if repeats < 1:
        raise ValueError("BENCH_REPEATS must be at least 1")
    return {
        "sizes": sizes,
        "repeats": repeats,
        "output": Path(os.environ.get("BENCH_OUTPUT") or REPO / "bench" / "results.json"),
        "sample_seconds": float(os.environ.get("BENCH_SAMPLE_SECONDS") or 0.5),
        "airflow": (os.environ.get("BENCH_AIRFLOW") or "1").strip().lower() not in ("0", "off", "false", "no"),
        "event_log_dir": os.environ.get("BENCH_EVENT_LOG_DIR", "").strip(),
        "keep": (os.environ.get("BENCH_KEEP") or "0").strip().lower() in ("1", "yes", "true", "on"),
    }


def _first_match(path: str, pattern: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            m = re.match(pattern, line)
            if m:
                return m.group(1).strip()
    except OSError:
        pass
    return None


def machine_info(java_home: str) -> dict:
    import duckdb
    import mlflow
    import pyspark

    java = Path(java_home) / "bin" / "java" if java_home else "java"
    try:
        out = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=30)
        java_version = (out.stderr or out.stdout).splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        java_version = "unknown"
    mem_kb = _first_match("/proc/meminfo", r"MemTotal:\s+(\d+)")
    return {
        "cpu_model": _first_match("/proc/cpuinfo", r"model name\s*:\s*(.*)") or platform.processor(),
        "cpus": os.cpu_count(),
        "ram_gib": round(int(mem_kb) / 1024 / 1024, 1) if mem_kb else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "pyspark": pyspark.__version__,
        "java": java_version,
        "mlflow": mlflow.__version__,
        "duckdb": duckdb.__version__,
        "loadavg_at_start": [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]],
    }


# --------------------------------------------------------------------------------------------------
# Memory and CPU sampling
# --------------------------------------------------------------------------------------------------

_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
_CLK = os.sysconf("SC_CLK_TCK")


def _proc_table() -> dict[int, tuple[int, int, int]]:
    """pid -> (ppid, session id, utime + stime ticks) of every live process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2:].split()
        if fields[0] == "Z":
            continue
        table[int(entry)] = (int(fields[1]), int(fields[3]), int(fields[11]) + int(fields[12]))
    return table


def _rss_kb(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE_KB
    except (OSError, IndexError, ValueError):
        return 0


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, IndexError, ValueError):
        pass
    return 0


def _descendants(table: dict, root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in table and pid not in out:
            out.add(pid)
            todo.extend(children.get(pid, ()))
    return out


class Sampler(threading.Thread):
    """Peak RSS per component and in total, plus CPU used by processes that are not ours.

    Components: each stack service's whole process session (as `stack.py status` counts it), the
    Spark driver JVM with its children, and the driver's Python process (this one: PySpark client,
    pandas/scikit-learn training, MLflow client). The generator and DuckDB run in child processes
    of their own, counted apart (``reference_processes``), not in the stack total.
    """

    def __init__(self, interval: float, services: dict[str, list[int]], jvm_pid: int, pss_every: int = 4):
        super().__init__(daemon=True, name="bench-sampler")
        self.interval = interval
        self.services = services            # component -> session leader pids
        self.jvm_pid = jvm_pid
        self.me = os.getpid()
        self.pss_every = pss_every
        self.phase = "startup"
        self._stop_event = threading.Event()
        self.samples = 0
        self.peak_total_kb = 0
        self.peak_at: dict = {}
        self.peak_component_kb: dict[str, int] = {}
        self.peak_pss_total_kb = 0
        self.peak_pss_component_kb: dict[str, int] = {}
        self.peak_by_phase_kb: dict[str, int] = {}
        self.peak_reference_kb = 0
        self.cpu_ticks = {"ours": 0, "others": 0}
        self._last_cpu: dict[int, int] = {}
        self.started_at = self.stopped_at = None

    def groups(self, table: dict) -> tuple[dict[str, set[int]], set[int]]:
        by_sid: dict[int, set[int]] = {}
        for pid, (_, sid, _) in table.items():
            by_sid.setdefault(sid, set()).add(pid)
        groups = {name: set().union(*(by_sid.get(s, set()) for s in sids)) for name, sids in self.services.items()}
        jvm = _descendants(table, self.jvm_pid)
        groups["spark_driver_jvm"] = jvm
        groups["spark_driver_python"] = {self.me}
        reference = _descendants(table, self.me) - jvm - {self.me}
        return groups, reference

    def sample(self) -> None:
        table = _proc_table()
        groups, reference = self.groups(table)
        per = {name: sum(_rss_kb(p) for p in pids) for name, pids in groups.items()}
        total = sum(per.values())
        for name, kb in per.items():
            self.peak_component_kb[name] = max(self.peak_component_kb.get(name, 0), kb)
        if total > self.peak_total_kb:
            self.peak_total_kb = total
            self.peak_at = {"phase": self.phase, "components_mb": {k: round(v / 1024) for k, v in per.items()}}
        self.peak_by_phase_kb[self.phase] = max(self.peak_by_phase_kb.get(self.phase, 0), total)
        self.peak_reference_kb = max(self.peak_reference_kb, sum(_rss_kb(p) for p in reference))
        if self.samples % self.pss_every == 0:
            pss = {name: sum(_pss_kb(p) for p in pids) for name, pids in groups.items()}
            self.peak_pss_total_kb = max(self.peak_pss_total_kb, sum(pss.values()))
            for name, kb in pss.items():
                self.peak_pss_component_kb[name] = max(self.peak_pss_component_kb.get(name, 0), kb)
        ours = set().union(*groups.values(), reference)
        cpu = {pid: t for pid, (_, _, t) in table.items()}
        if self._last_cpu:
            for pid, ticks in cpu.items():
                delta = ticks - self._last_cpu.get(pid, 0)
                self.cpu_ticks["ours" if pid in ours else "others"] += max(delta, 0)
        self._last_cpu = cpu
        self.samples += 1

    def run(self) -> None:
        self.started_at = time.monotonic()
        while not self._stop_event.is_set():
            try:
                self.sample()
            except Exception as exc:  # never let sampling break the benchmark
                log(f"sampler: {type(exc).__name__}: {exc}")
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)
        self.stopped_at = time.monotonic()

    def report(self) -> dict:
        wall = (self.stopped_at or time.monotonic()) - (self.started_at or time.monotonic())
        cpus = os.cpu_count() or 1
        mb = lambda kb: round(kb / 1024, 1)  # noqa: E731
        return {
            "peak_rss_mb": mb(self.peak_total_kb),
            "peak_rss_mb_by_component": {k: mb(v) for k, v in self.peak_component_kb.items()},
            "peak_rss_components_at_peak_mb": self.peak_at.get("components_mb", {}),
            "peak_rss_phase": self.peak_at.get("phase"),
            "peak_rss_mb_by_phase": {k: mb(v) for k, v in self.peak_by_phase_kb.items()},
            "peak_pss_mb": mb(self.peak_pss_total_kb),
            "peak_pss_mb_by_component": {k: mb(v) for k, v in self.peak_pss_component_kb.items()},
            "reference_processes_peak_rss_mb": mb(self.peak_reference_kb),
            "samples": self.samples,
            "interval_s": self.interval,
            "sampled_wall_s": round(wall, 1),
            "cpu_s_ours": round(self.cpu_ticks["ours"] / _CLK, 1),
            "cpu_s_other_processes": round(self.cpu_ticks["others"] / _CLK, 1),
            "other_processes_cpu_share": round(self.cpu_ticks["others"] / _CLK / (wall * cpus), 3) if wall else None,
        }


# --------------------------------------------------------------------------------------------------
# The pipeline, in-process
# --------------------------------------------------------------------------------------------------

def train_untracked(spark, settings, ctx) -> int:
    """model_training.run's computation without MLflow: what training costs with tracking off."""
    from jobs import model_training as mt
    from jobs.lakehouse import FEATURES, current_snapshot
    from jobs.transforms.modeling import best_candidate, evaluate, sweep, time_split, train_classifier

    snap = current_snapshot(spark, settings.table(FEATURES))
    frame = mt.load_training_frame(spark, settings, snap.snapshot_id, ctx.trade_date, mt.lookback_days())
    split = time_split(frame, mt.HOLDOUT_FRACTION)
    best = best_candidate(sweep(split.train))
    model = train_classifier(split.train, best.params)
    evaluate(model, split.holdout)
    evaluate(model, split.train)
    return len(frame)


def run_pipeline(spark, settings, tracked: bool, tag: str) -> dict[str, float]:
    """Every stage once for TRADE_DATE; seconds per stage and for the whole pipeline."""
    from jobs import bronze_to_silver, feature_engineering, model_training, raw_to_bronze, silver_to_gold
    from jobs.lakehouse import NullTracker, RunContext, mlflow_experiment_id, stage_run

    modules = {"raw_to_bronze": raw_to_bronze, "bronze_to_silver": bronze_to_silver,
               "silver_to_gold": silver_to_gold, "feature_engineering": feature_engineering,
               "model_training": model_training}
    seconds: dict[str, float] = {}
    gc.collect()
    started = time.perf_counter()
    parent = None
    if tracked:  # what start_tracking does in the DAG: one parent run per pipeline run
        from mlflow import MlflowClient

        client = MlflowClient()
        parent = client.create_run(mlflow_experiment_id(settings), run_name=f"bench {tag}",
                                   tags={"pipeline.role": "dag_run", "pipeline.trade_date": TRADE_DATE.isoformat(),
                                         "bench": tag}).info.run_id
    for name in STAGES:
        ctx = RunContext(stage=name, trade_date=TRADE_DATE, parent_run_id=parent)
        t = time.perf_counter()
        # MLflow prints "View run ... at: <url>" for every run it ends: not for the benchmark's output.
        with contextlib.redirect_stdout(io.StringIO()):
            if tracked:
                with stage_run(ctx, settings) as tracker:
                    modules[name].run(spark, settings, ctx, tracker)
            elif name == "model_training":
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
    subprocess.run([sys.executable, "-m", "jobs.generate_raw_ticks", "--dates", TRADE_DATE.isoformat(),
                    "--ticks", str(n), "--out", str(root)], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return root / f"trade_date={TRADE_DATE.isoformat()}", time.perf_counter() - t


# --------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------

def stats(values: list[float]) -> dict:
    med = statistics.median(values)
    return {"median": round(med, 3), "min": round(min(values), 3), "max": round(max(values), 3),
            "spread_pct": round((max(values) - min(values)) / med * 100, 1) if med else None,
            "runs": [round(v, 3) for v in values]}


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def summarize(cfg: dict, runs: dict, duck: dict, rows: dict, gold: dict, memory: dict, machine: dict,
              extra: dict) -> dict:
    sizes = cfg["sizes"]
    per_size: dict[str, dict] = {}
    for n in sizes:
        lab = label(n)
        entry: dict = {"ticks": n, "rows_in": rows[n]}
        for variant in ("on", "off"):
            samples = runs[n][variant]
            entry[variant] = {key: stats([s[key] for s in samples]) for key in (*STAGES, "pipeline")}
            entry[variant]["bronze_to_gold"] = stats([sum(s[k] for k in BRONZE_TO_GOLD) for s in samples])
            entry[variant]["throughput_rows_per_s"] = {
                **{st: round(rows[n][st] / entry[variant][st]["median"]) for st in STAGES},
                "pipeline_ticks": round(n / entry[variant]["pipeline"]["median"]),
            }
        pairs = [a["pipeline"] / b["pipeline"] for a, b in zip(runs[n]["on"], runs[n]["off"])]
        entry["tracking_overhead_ratio"] = ratio(entry["on"]["pipeline"]["median"], entry["off"]["pipeline"]["median"])
        entry["tracking_overhead_ratio_paired_median"] = round(statistics.median(pairs), 3)
        entry["tracking_overhead_ratio_by_stage"] = {
            st: ratio(entry["on"][st]["median"], entry["off"][st]["median"]) for st in STAGES}
        entry["duckdb"] = {key: stats([d["seconds"][key] for d in duck[n]])
                           for key in ("bronze", "silver", "gold", "bronze_to_gold")}
        entry["duckdb"]["rows"] = duck[n][-1]["rows"]
        entry["duckdb"]["threads"] = duck[n][-1]["threads"]
        entry["duckdb_ratio"] = ratio(entry["off"]["bronze_to_gold"]["median"],
                                      entry["duckdb"]["bronze_to_gold"]["median"])
        entry["duckdb_ratio_tracking_on"] = ratio(entry["on"]["bronze_to_gold"]["median"],
                                                  entry["duckdb"]["bronze_to_gold"]["median"])
        entry["gold_check"] = gold[n]
        per_size[lab] = entry

    largest = sizes[-1]
    big = per_size[label(largest)]
    scaling = scaling_off = None
    if largest // 10 in sizes and largest % 10 == 0:
        small = per_size[label(largest // 10)]
        scaling = ratio(big["on"]["pipeline"]["median"], small["on"]["pipeline"]["median"])
        scaling_off = ratio(big["off"]["pipeline"]["median"], small["off"]["pipeline"]["median"])
    headline = {
        "tracking_overhead_ratio": big["tracking_overhead_ratio"],
        "scaling_ratio_10x": scaling,
        "duckdb_ratio": big["duckdb_ratio"],
        "stack_rss_mb": round(memory["peak_rss_mb"]),
    }
    targets = {k: {"target": f"<= {TARGETS[k]:g}", "value": v, "met": (v is not None and v <= TARGETS[k])}
               for k, v in headline.items()}
    gold_ok = all(g["match"] for g in gold.values())
    return {
        **headline,
        "gold_rows_match": gold_ok,
        "targets": targets,
        "machine": machine,
        "generated_at": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "details": {
            "definitions": {
                "tracking_overhead_ratio": f"median whole-pipeline seconds with MLflow tracking and quality gates on / "
                                           f"off, at {label(largest)} ticks (other sizes under sizes.*)",
                "scaling_ratio_10x": f"median whole-pipeline seconds (tracking on) at {label(largest)} / "
                                     f"{label(largest // 10)} ticks; scaling_ratio_10x_tracking_off beside it",
                "duckdb_ratio": f"median Spark Bronze→Gold seconds (raw_to_bronze + bronze_to_silver + silver_to_gold, "
                                f"tracking and gates off) / median DuckDB Bronze→Gold seconds, same RAW Parquet, "
                                f"{label(largest)} ticks",
                "stack_rss_mb": "peak of the summed resident memory (RSS, sampled together) of the embedded services' "
                                "process sessions (SeaweedFS, MLflow" + (", Airflow idle with no DAGs" if cfg["airflow"]
                                                                         else "") +
                                ") + the Spark driver JVM + the driver's Python process, over the whole run; "
                                "RSS counts pages shared by forked workers once per process, PSS does not",
                "pipeline": "wall seconds of all five stages in one SparkSession (the MLflow parent run included "
                            "when on); stage seconds include the stage's MLflow child run when on",
                "training_off": "tracking off trains without MLflow: same snapshot read, split, 4-candidate sweep, "
                                "final fit and holdout/train evaluation; the on variant is model_training.run as "
                                "deployed (nested candidate runs, dataset inputs, figures, ROC points, model logged "
                                "to S3 and registered)",
                "throughput_rows_per_s": "stage input rows / median stage seconds (RAW ticks, Bronze, Silver, Gold, "
                                         "feature rows for training); pipeline_ticks = RAW ticks / pipeline seconds",
                "spread_pct": "(max - min) / median of the repeats",
                "gold_check": "Gold bars of the Spark table vs DuckDB: same keys, same counts, prices within "
                              "rel 1e-9; reject counts per reason compared as well",
            },
            "scaling_ratio_10x_tracking_off": scaling_off,
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.items()},
            **extra,
            "memory": memory,
            "sizes": per_size,
        },
    }


def print_table(result: dict) -> None:
    d = result["details"]
    lines = []
    for lab, e in d["sizes"].items():
        lines.append(f"\n{lab} ticks (median of {len(e['on']['pipeline']['runs'])}; spread = (max-min)/median)")
        lines.append(f"  {'stage':<20}{'on s':>9}{'spread':>8}{'off s':>9}{'spread':>8}{'on/off':>8}"
                     f"{'rows/s on':>12}{'rows/s off':>12}")
        for st in (*STAGES, "pipeline"):
            on, off = e["on"][st], e["off"][st]
            tp_on = e["on"]["throughput_rows_per_s"].get(st, e["on"]["throughput_rows_per_s"]["pipeline_ticks"])
            tp_off = e["off"]["throughput_rows_per_s"].get(st, e["off"]["throughput_rows_per_s"]["pipeline_ticks"])
            lines.append(f"  {st:<20}{on['median']:>9.1f}{on['spread_pct']:>7.0f}%{off['median']:>9.1f}"
                         f"{off['spread_pct']:>7.0f}%{ratio(on['median'], off['median']):>8.2f}{tp_on:>12,}{tp_off:>12,}")
        dk = e["duckdb"]["bronze_to_gold"]
        lines.append(f"  Bronze→Gold: Spark off {e['off']['bronze_to_gold']['median']:.1f}s, DuckDB {dk['median']:.1f}s "
                     f"(spread {dk['spread_pct']:.0f}%) → ratio {e['duckdb_ratio']}; Gold rows match: "
                     f"{e['gold_check']['match']} ({e['gold_check']['rows_spark']} bars)")
    lines.append("\nheadline                       value    target   met")
    for key, t in result["targets"].items():
        lines.append(f"  {key:<27}{str(t['value']):>9}{t['target']:>10}   {'yes' if t['met'] else 'NO'}")
    m = d["memory"]
    lines.append(f"  peak RSS by component (MB): {m['peak_rss_mb_by_component']}; peak PSS total {m['peak_pss_mb']} MB")
    lines.append(f"  other processes used {m['other_processes_cpu_share']:.0%} of the machine's CPU during the run")
    print("\n".join(lines))


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------

def main() -> int:
    cfg = bench_config()
    sizes, repeats = cfg["sizes"], cfg["repeats"]
    root = Path(tempfile.mkdtemp(prefix="lakehouse-bench-"))
    log(f"sizes {', '.join(label(n) for n in sizes)}, {repeats} repeats; temporary state in {root}")
    (root / "dags").mkdir()
    stack_settings = {"LAKEHOUSE_DAGS_FOLDER": str(root / "dags")}
    if not cfg["airflow"]:
        stack_settings["LAKEHOUSE_SERVICES"] = "seaweedfs,mlflow"
    spark = sampler = None
    started = time.perf_counter()
    try:
        from scripts.devstack.temporary import running_stack

        from scripts.devstack.processes import read_pid
        from scripts.devstack.services import all_services

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

            from jobs.lakehouse import GOLD, FEATURES, QUARANTINE, SILVER, BRONZE, Settings, partition_rows, spark_session
            from bench import duckdb_reference as ref

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
                    "raw_to_bronze": n,
                    "bronze_to_silver": partition_rows(spark, cfg_n.table(BRONZE), TRADE_DATE),
                    "silver_to_gold": partition_rows(spark, cfg_n.table(SILVER), TRADE_DATE),
                    "feature_engineering": partition_rows(spark, cfg_n.table(GOLD), TRADE_DATE),
                    "model_training": partition_rows(spark, cfg_n.table(FEATURES), TRADE_DATE),
                }
                check = ref.compare_gold(ref.gold_frame_spark(spark, cfg_n.table(GOLD), TRADE_DATE),
                                         ref.gold_frame_duckdb(duck[n][-1]["paths"]["gold"]))
                spark_rejected = {r["reject_reason"]: int(r["n"]) for r in spark.sql(
                    f"SELECT reject_reason, count(*) AS n FROM {cfg_n.table(QUARANTINE)} "
                    f"WHERE trade_date = DATE '{TRADE_DATE}' GROUP BY 1").collect()}
                check["rejected_spark"] = {k: spark_rejected.get(k, 0) for k in ref.REASONS}
                check["rejected_duckdb"] = duck[n][-1]["rejected"]
                check["silver_rows"] = {"spark": rows[n]["silver_to_gold"], "duckdb": duck[n][-1]["rows"]["silver"]}
                check["match"] = bool(check["match"] and check["rejected_spark"] == check["rejected_duckdb"]
                                      and rows[n]["silver_to_gold"] == duck[n][-1]["rows"]["silver"])
                gold[n] = check
                log(f"{lab}: Gold rows match DuckDB: {check['match']} ({check['rows_spark']} bars)")
            sampler.phase = "shutdown"
            sampler.stop()
            memory = sampler.report()
            memory["services_sampled"] = sorted(services)
            spark.stop()
            spark = None
        extra = {"spark_session_startup_s": round(startup, 2),
                 "spark_session_startup_note": "paid once here; under Airflow every stage is its own spark-submit "
                                               "and pays it per task",
                 "raw_generation_s": {k: round(v, 1) for k, v in gen_seconds.items()},
                 "trade_date": TRADE_DATE.isoformat(),
                 "spark_driver_memory": driver_memory,
                 "shuffle_partitions": base.shuffle_partitions,
                 "warmup_ticks": WARMUP_TICKS,
                 "total_wall_s": round(time.perf_counter() - started, 1)}
        result = summarize(cfg, runs, duck, rows, gold, memory, machine, extra)
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
