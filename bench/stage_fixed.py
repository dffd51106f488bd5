"""`stage_fixed_seconds`: what each stage costs as its own spark-submit on a tiny date, split by phase.

Users never run a stage in a warm session: Airflow starts ``spark-submit jobs/stages/<stage>.py``
with a cold JVM, Python imports, preflight, MLflow calls and a fresh Iceberg catalog. On a date of
a few hundred ticks the work is near zero, so the wall time is the fixed cost. Each stage prints
its phases (``stage_cli``'s PhaseClock: jvm_start, python_imports, preflight, mlflow_open,
spark_context, iceberg_catalog, work, mlflow_close) and logs them as ``phase.<name>_seconds``.

Used by ``bench/run.py`` (the stack it already runs) and standalone to measure a cut, paired:
``python -m bench.stage_fixed --compare ui`` runs every stage with the conf before and after the cut,
alternating within each repeat, on a private SeaweedFS + MLflow stack.
Knobs: BENCH_FIXED_TICKS (500), BENCH_FIXED_REPEATS (3).
"""
from __future__ import annotations

import argparse
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

TINY_DATE = dt.date(2026, 3, 4)
# Paired comparisons of the spark-submit conf (first variant = before): the record behind each conf cut.
COMPARE = {
    "ui": {"before": {"spark.ui.showConsoleProgress": "false"},
           "no_ui_loopback": {**SPARK_STAGE_CONF, **SPARK_LOCAL_DRIVER_CONF},
           "no_ui_loopback_c1": {**SPARK_STAGE_CONF, **SPARK_LOCAL_DRIVER_CONF,
                                 "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1"}},
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


def measure(env: dict[str, str], repeats: int, variants: dict[str, dict[str, str]],
            stages: tuple[str, ...] = STAGES, trade_date: dt.date = TINY_DATE) -> dict[str, dict]:
    """Every stage ``repeats`` times per variant, variants alternating (ABAB, BABA) against drift."""
    runs = {v: {s: [] for s in stages} for v in variants}
    names = list(variants)
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for stage in stages:
            for v in order:
                res = run_stage(stage, env, trade_date, variants[v])
                runs[v][stage].append(res)
                log(f"fixed {v} #{r + 1} {stage}: {res['wall']:.1f}s {res['phases']}")
    return {v: summarize(runs[v]) for v in variants}


def generate_tiny(raw_root: str, ticks: int, trade_date: dt.date = TINY_DATE) -> None:
    subprocess.run([sys.executable, "-m", "jobs.synthetic.raw_ticks", "--dates", trade_date.isoformat(),
                    "--ticks", str(ticks), "--out", raw_root], cwd=REPO, check=True, stdout=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", choices=sorted(COMPARE), default=None)
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--out", default=None, help="write the JSON here as well")
    args = parser.parse_args(argv)
    ticks = int(os.environ.get("BENCH_FIXED_TICKS") or 500)
    repeats = int(os.environ.get("BENCH_FIXED_REPEATS") or 3)
    variants = COMPARE[args.compare] if args.compare else {"current": spark_stage_conf("local[*]")}
    from scripts.devstack.temporary import running_stack

    with tempfile.TemporaryDirectory(prefix="lakehouse-fixed-") as tmp, \
            running_stack(Path(tmp) / "stack", {"LAKEHOUSE_SERVICES": "seaweedfs,mlflow"}) as st:
        env = {**st.env, "LAKEHOUSE_TRACKING": "on", "QUALITY_GATES": "enforce"}
        generate_tiny(env["RAW_TICKS_PATH"], ticks)
        load = os.getloadavg()
        result = measure(env, repeats, variants, tuple(args.stages.split(",")))
    report = {"ticks": ticks, "repeats": repeats, "loadavg_start": load, "loadavg_end": os.getloadavg(),
              "variants": {k: v for k, v in variants.items()}, "results": result}
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
