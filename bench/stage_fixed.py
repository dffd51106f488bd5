"""`stage_fixed_seconds`: what each stage costs as its own spark-submit on a tiny date, split by phase.

Users never run a stage in a warm session: Airflow starts ``spark-submit jobs/stages/<stage>.py``
with a cold JVM, Python imports, preflight, MLflow calls and a fresh Iceberg catalog. On a date of
a few hundred ticks the work is near zero, so the wall time is the fixed cost. Each stage prints
its phases (``stage_cli``'s PhaseClock: jvm_start, python_imports, preflight, mlflow_open,
spark_context, iceberg_catalog, work, mlflow_close) and logs them as ``phase.<name>_seconds``.

Used by ``bench/run.py`` (the stack it already runs) and standalone to measure a cut, paired:
``python -m bench.stage_fixed --compare ui`` runs every stage with the conf before and after the cut,
alternating within each repeat, on a private stack of what the stages reach (``job_services``).
``--compare catalog`` (issue 13 item 6) prices the default catalog: hive_prod in a Hive metastore
with tables on SeaweedFS S3 against the SQLite catalog with tables in a local folder, as two stacks up
at once, so every stage alternates between them on the same machine state; it adds hive/jdbc ratios
and each stack's resident memory after the runs.
Knobs: BENCH_FIXED_TICKS (500; e.g. 333000 for a demo-size date), BENCH_FIXED_REPEATS (3).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.sampler import log  # noqa: E402
from jobs.contract import (  # noqa: E402
    DEFAULT_SHUFFLE_PARTITIONS,
    PHASE_LINE_PREFIX,
    SPARK_LOCAL_DRIVER_CONF,
    SPARK_STAGE_CONF,
    STAGES,
    default_jars,
    spark_stage_conf,
)
from scripts.devstack.env import DEFAULT_CATALOG, job_services  # noqa: E402

TINY_DATE = dt.date(2026, 3, 4)
CURRENT = spark_stage_conf("local[*]")
# Paired comparisons, variant -> (the stack's LAKEHOUSE_CATALOG, spark-submit conf); the first variant
# is "before". One stack per catalog named here, all up together. The record behind each cut.
COMPARE = {
    "ui": {"before": (DEFAULT_CATALOG, {"spark.ui.showConsoleProgress": "false"}),
           "no_ui_loopback": (DEFAULT_CATALOG, {**SPARK_STAGE_CONF, **SPARK_LOCAL_DRIVER_CONF}),
           "no_ui_loopback_c1": (DEFAULT_CATALOG, {**SPARK_STAGE_CONF, **SPARK_LOCAL_DRIVER_CONF,
                                                   "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1"})},
    "catalog": {"hive": ("hive", CURRENT), "jdbc": ("jdbc", CURRENT)},
}


def submit_command(stage: str, env: dict[str, str], trade_date: dt.date, conf: dict[str, str]) -> list[str]:
    """What the Airflow StageSubmitOperator runs (lakehouse_mlops.spark_stage), minus Airflow."""
    python = env.get("PYSPARK_PYTHON") or sys.executable
    cmd = [env.get("SPARK_SUBMIT_BINARY") or str(Path(sys.executable).parent / "spark-submit"),
           "--master", env.get("SPARK_MASTER") or "local[*]", "--name", f"lakehouse-{stage}"]
    jars = env.get("SPARK_JARS") or default_jars(REPO)
    if jars:
        cmd += ["--jars", jars]
    full = {"spark.sql.shuffle.partitions": env.get("SPARK_SQL_SHUFFLE_PARTITIONS") or DEFAULT_SHUFFLE_PARTITIONS,
            "spark.pyspark.python": python, "spark.pyspark.driver.python": python, **conf}
    if env.get("SPARK_DRIVER_JAVA_OPTIONS") and "spark.driver.extraJavaOptions" not in conf:
        full["spark.driver.extraJavaOptions"] = env["SPARK_DRIVER_JAVA_OPTIONS"]
    for key, value in full.items():
        cmd += ["--conf", f"{key}={value}"]
    cmd += ["--driver-memory", env.get("SPARK_DRIVER_MEMORY") or "2g",
            str(REPO / "jobs" / "stages" / f"{stage}.py"), "--trade-date", trade_date.isoformat()]
    return cmd


def run_stage(stage: str, env: dict[str, str], trade_date: dt.date, conf: dict[str, str]) -> dict:
    """One spark-submit; wall seconds and the phases the stage printed."""
    proc_env = {**{k: v for k, v in os.environ.items() if k != "PYSPARK_SUBMIT_ARGS"},  # the bench's own session
                **env, "PYTHONPATH": str(REPO), "PYSPARK_PYTHON": env.get("PYSPARK_PYTHON") or sys.executable}
    t = time.perf_counter()
    proc = subprocess.run(submit_command(stage, env, trade_date, conf), env=proc_env, cwd=REPO,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{stage} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    phases = {}
    # spark-submit's PythonRunner copies the Python process's stderr to its own stdout
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.startswith(PHASE_LINE_PREFIX):
            phases = json.loads(line[len(PHASE_LINE_PREFIX):])
    # what the phases do not cover: spark-submit's shell scripts before the JVM, JVM shutdown
    phases["unaccounted"] = round(wall - sum(phases.values()), 3)
    return {"wall": wall, "phases": phases}


def summarize(runs: dict[str, list[dict]]) -> dict:
    """Median wall and median of each phase per stage."""
    out = {}
    for stage, rs in runs.items():
        names = sorted({k for r in rs for k in r["phases"]})
        out[stage] = {"median": round(statistics.median(r["wall"] for r in rs), 2),
                      "runs": [round(r["wall"], 2) for r in rs],
                      "phases": {k: round(statistics.median(r["phases"].get(k, 0.0) for r in rs), 2) for k in names}}
    return out


def measure(variants: dict[str, tuple[dict[str, str], dict[str, str]]], repeats: int,
            stages: tuple[str, ...] = STAGES, trade_date: dt.date = TINY_DATE) -> dict[str, dict]:
    """Every stage ``repeats`` times per variant (name -> (stage env, conf)), variants alternating
    (ABAB, BABA) so drift of the machine hits them alike."""
    runs = {v: {s: [] for s in stages} for v in variants}
    names = list(variants)
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for stage in stages:
            for v in order:
                env, conf = variants[v]
                res = run_stage(stage, env, trade_date, conf)
                runs[v][stage].append(res)
                log(f"fixed {v} #{r + 1} {stage}: {res['wall']:.1f}s {res['phases']}")
    return {v: summarize(runs[v]) for v in variants}


def generate_tiny(raw_root: str, ticks: int, trade_date: dt.date = TINY_DATE) -> None:
    subprocess.run([sys.executable, "-m", "jobs.synthetic.raw_ticks", "--dates", trade_date.isoformat(),
                    "--ticks", str(ticks), "--out", raw_root], cwd=REPO, check=True, stdout=subprocess.DEVNULL)


def ratios(a: dict, b: dict) -> dict[str, float]:
    """Median wall of a / b per stage and for the sum of the stages (the whole date's fixed cost)."""
    out = {st: round(a[st]["median"] / b[st]["median"], 2) for st in a}
    out["sum_of_stages"] = round(sum(r["median"] for r in a.values()) / sum(r["median"] for r in b.values()), 2)
    return out


def stack_memory(env: dict[str, str]) -> dict:
    """Resident memory of each running service (its whole process session, as `stack.py status`)."""
    from scripts.devstack.processes import memory_mb, read_pid
    from scripts.devstack.services import all_services

    rss, pss = {}, {}
    for svc in all_services(env):
        if pid := read_pid(env, svc.name):
            rss[svc.name], pss[svc.name] = (round(mb, 1) for mb in memory_mb(pid))
    return {"rss_mb": rss, "pss_mb": pss, "total_rss_mb": round(sum(rss.values()), 1),
            "total_pss_mb": round(sum(pss.values()), 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", choices=sorted(COMPARE), default=None)
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--out", default=None, help="write the JSON here as well")
    args = parser.parse_args(argv)
    ticks = int(os.environ.get("BENCH_FIXED_TICKS") or 500)
    repeats = int(os.environ.get("BENCH_FIXED_REPEATS") or 3)
    variants = COMPARE[args.compare] if args.compare else {"current": (DEFAULT_CATALOG, CURRENT)}
    from scripts.devstack.temporary import running_stack

    with tempfile.TemporaryDirectory(prefix="lakehouse-fixed-") as tmp, contextlib.ExitStack() as stacks:
        envs = {}  # catalog -> the env its stack's stages run with
        for catalog in dict.fromkeys(c for c, _ in variants.values()):
            settings = {"LAKEHOUSE_CATALOG": catalog, "LAKEHOUSE_SERVICES": job_services(catalog)}
            st = stacks.enter_context(running_stack(Path(tmp) / catalog, settings))
            log(f"stack {catalog} up: {', '.join(st.started_services)}")
            envs[catalog] = {**st.env, "LAKEHOUSE_TRACKING": "on", "QUALITY_GATES": "enforce"}
            generate_tiny(envs[catalog]["RAW_TICKS_PATH"], ticks)  # deterministic: the same date in each
        load = os.getloadavg()
        result = measure({v: (envs[c], conf) for v, (c, conf) in variants.items()}, repeats,
                         tuple(args.stages.split(",")))
        memory = {c: stack_memory(env) for c, env in envs.items()}
    report = {"ticks": ticks, "repeats": repeats, "loadavg_start": load, "loadavg_end": os.getloadavg(),
              "variants": {v: conf for v, (_, conf) in variants.items()},
              "catalogs": {v: c for v, (c, _) in variants.items()},
              "results": result, "stack_memory_after_runs": memory}
    if args.compare == "catalog":
        report["ratio_hive_to_jdbc"] = ratios(result["hive"], result["jdbc"])
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
