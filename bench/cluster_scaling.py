"""`make bench-cluster` (issue 15, item 5): what a second Spark worker and a second Celery worker buy.

Runs on a private cluster profile (`make up PROFILE=cluster`'s shape on free 127.0.0.1 ports):

- **spark**: raw_to_bronze for one date of BENCH_CLUSTER_TICKS (10 M) ticks, submitted to the standalone
  master as the DAG submits it, with one executor (``spark.cores.max=1``: one worker's core) and with
  one executor on each of the two workers (``spark.cores.max=2``), alternating ABAB over
  BENCH_CLUSTER_REPEATS (1). The master's record of each application says how many cores it got.
- **celery**: one run of a DAG of BENCH_CELERY_TASKS (24) mapped tasks that wait
  BENCH_CELERY_TASK_SECONDS (5) each, as a stage task waits on its spark-submit, and one run of as
  many empty tasks (what Airflow itself costs per task), on two Celery workers and then on one after
  the other is stopped, after one unmeasured warm-up run. Throughput is tasks per minute from the
  first task's start to the last one's end.

This machine has two cores: the driver, both executors and the stack share them, so a second Spark
worker here gains far less than on a cluster whose workers have cores of their own. The README's
scale-out section says how to read the figures. Writes bench/cluster_scaling.json.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.sampler import log  # noqa: E402
from bench.stage_fixed import run_stage  # noqa: E402
from jobs.contract import RAW_TO_BRONZE, spark_stage_conf  # noqa: E402

TRADE_DATE = dt.date(2026, 3, 3)  # a Tuesday in the past, as bench/run.py
DAG = "bench_celery_fanout"
DAG_SOURCE = f"""
import pendulum
from airflow.sdk import dag, task


@dag(dag_id="{DAG}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False,
     is_paused_upon_creation=False, max_active_tasks=64, tags=["bench"])
def bench_celery_fanout():
    @task
    def work(i: int):
        import time

        from airflow.sdk import get_current_context

        time.sleep(float(get_current_context()["dag_run"].conf.get("seconds", 0)))
        return i

    work.expand(i=list(range(int({{tasks}}))))


bench_celery_fanout()
"""


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


def spark_scaling(env: dict[str, str], repeats: int) -> dict:
    """raw_to_bronze with one and with two executors (one core each), alternating."""
    from scripts.devstack.health import spark_master_status

    conf = {**spark_stage_conf(env["SPARK_MASTER"]), "spark.executor.cores": "1"}
    runs: dict[str, list[dict]] = {"1": [], "2": []}
    for r in range(repeats):
        for n in (("1", "2") if r % 2 == 0 else ("2", "1")):
            result = run_stage(RAW_TO_BRONZE, env, TRADE_DATE, {**conf, "spark.cores.max": n,
                                                                "spark.executor.memory": env["SPARK_EXECUTOR_MEMORY"]})
            apps = sorted((spark_master_status(env) or {}).get("completedapps", []), key=lambda a: a["starttime"])
            result["cores_granted"] = apps[-1]["cores"] if apps else None
            runs[n].append(result)
            log(f"spark {n} executor(s) #{r + 1}: {result['wall']:.1f}s, cores {result['cores_granted']}, "
                f"work {result['phases'].get('work')}")
    best = {n: min(r["wall"] for r in rs) for n, rs in runs.items()}
    return {"stage": RAW_TO_BRONZE, "repeats": repeats,
            "runs": {n: [{"wall": round(r["wall"], 1), "work": r["phases"].get("work"),
                          "cores_granted": r["cores_granted"]} for r in rs] for n, rs in runs.items()},
            "seconds_best": {n: round(s, 1) for n, s in best.items()},
            "speedup_2_over_1": round(best["1"] / best["2"], 2)}


def _parse(ts: str) -> dt.datetime:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))


def celery_run(airflow, tasks: int, seconds: float) -> dict:
    """One run of the fan-out DAG; its tasks' own start and end times."""
    run_id = f"bench__{time.time_ns()}"
    status, body = airflow.call("POST", f"/api/v2/dags/{DAG}/dagRuns",
                                {"dag_run_id": run_id, "logical_date": None, "conf": {"seconds": seconds}})
    if status not in (200, 201):
        raise RuntimeError(f"triggering {DAG} returned {status}: {body}")
    t0 = time.monotonic()
    while (state := airflow.run_state(run_id, DAG)) not in ("success", "failed"):
        if time.monotonic() - t0 > 1800:
            raise RuntimeError(f"{DAG} run {run_id} still {state} after 30 min")
        time.sleep(1)  # polling the API for the run's end, not synchronising with it
    if state != "success":
        raise RuntimeError(f"{DAG} run {run_id} {state}: {airflow.task_states(run_id, DAG)}")
    tis = airflow.task_instances(run_id, DAG)
    first, last = min(_parse(t["start_date"]) for t in tis), max(_parse(t["end_date"]) for t in tis)
    span = (last - first).total_seconds()
    return {"tasks": len(tis), "task_seconds": seconds, "span_seconds": round(span, 1),
            "tasks_per_minute": round(60 * len(tis) / span, 1)}


def celery_scaling(st, tasks: int, seconds: float) -> dict:
    from scripts.devstack.airflow_api import Airflow
    from scripts.devstack.env import celery_worker_names
    from scripts.devstack.processes import stop_services

    airflow = Airflow(st.env)
    airflow.wait_for_dag(DAG)
    workers = celery_worker_names(st.env)
    # The first run pays for each worker's first parse of the DAG and the first task processes: not measured.
    log(f"celery warm-up: {celery_run(airflow, tasks, 0)}")
    out = {}
    for count in (len(workers), 1):
        if count < len(workers):
            stopped = stop_services({**st.proc_env, **st.env}, workers[count:])
            log(f"celery: stopped {', '.join(stopped)}")
        out[str(count)] = {"waiting": celery_run(airflow, tasks, seconds), "empty": celery_run(airflow, tasks, 0)}
        log(f"celery {count} worker(s): {out[str(count)]}")
    two, one = out[str(len(workers))], out["1"]
    out["speedup_2_over_1"] = {kind: round(two[kind]["tasks_per_minute"] / one[kind]["tasks_per_minute"], 2)
                               for kind in ("waiting", "empty")}
    return out


def main() -> int:
    from bench.run import generate
    from bench.sampler import machine_info
    from scripts.devstack.temporary import running_stack

    ticks = _env_int("BENCH_CLUSTER_TICKS", 10_000_000)
    repeats = _env_int("BENCH_CLUSTER_REPEATS", 1)
    tasks = _env_int("BENCH_CELERY_TASKS", 24)
    seconds = float(os.environ.get("BENCH_CELERY_TASK_SECONDS") or 5)
    with tempfile.TemporaryDirectory(prefix="lakehouse-bench-cluster-") as tmp:
        dags = Path(tmp) / "dags"
        dags.mkdir()
        (dags / f"{DAG}.py").write_text(DAG_SOURCE.replace("{tasks}", str(tasks)))
        settings = {"LAKEHOUSE_PROFILE": "cluster", "LAKEHOUSE_CATALOG": "hive", "TRINO": "off",
                    "LAKEHOUSE_DAGS_FOLDER": str(dags), "SPARK_WORKERS": "2", "CELERY_WORKERS": "2",
                    "MLOPS_SPARK_WORKER_CORES": "1", "MLOPS_SPARK_WORKER_MEMORY": "3g",
                    "SPARK_EXECUTOR_MEMORY": "3g", "SPARK_DRIVER_MEMORY": "2g",
                    "MLOPS_CELERY_WORKER_CONCURRENCY": "2"}
        with running_stack(Path(tmp) / "stack", settings) as st:
            env = {**st.env, "LAKEHOUSE_TRACKING": "on", "QUALITY_GATES": "enforce"}
            _, generated = generate(ticks, Path(env["RAW_TICKS_PATH"]))
            log(f"generated {ticks:,} ticks in {generated:.0f}s")
            load = os.getloadavg()
            spark = spark_scaling(env, repeats)
            celery = celery_scaling(st, tasks, seconds)
            report = {"machine": machine_info(env["JAVA_HOME"]), "cpus": os.cpu_count(), "ticks": ticks,
                      "loadavg_start": load, "loadavg_end": os.getloadavg(),
                      "spark_worker": {"cores": 1, "executor_memory": env["SPARK_EXECUTOR_MEMORY"]},
                      "celery_worker_concurrency": int(env["AIRFLOW__CELERY__WORKER_CONCURRENCY"]),
                      "spark": spark, "celery": celery}
    text = json.dumps(report, indent=2)
    (REPO / "bench" / "cluster_scaling.json").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
