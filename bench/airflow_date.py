"""`airflow_date_seconds`: one trade date through the real scheduler, as users run it.

A private stack (scripts/devstack/temporary.py) with the project's DAG folder, RAW ticks of one
date, one triggered run of the daily DAG (scripts/devstack/airflow_api.py): every stage is its own
spark-submit started by Airflow, tracking and gates on. Reported: the DAG run's wall seconds, each
task's seconds, and ``bronze_to_training_seconds`` (first stage task start to model_training end),
which ``bench/run.py`` divides by the in-session pipeline of the same size (``orchestration_ratio``).
"""
from __future__ import annotations

import datetime as dt
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.sampler import log  # noqa: E402
from jobs.contract import MODEL_TRAINING, RAW_TO_BRONZE  # noqa: E402


def _at(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def airflow_date(ticks: int, trade_date: dt.date, timeout: float = 3600) -> dict:
    """Trigger one date of the daily DAG on a fresh stack and time it from the REST API's records."""
    from scripts.devstack.airflow_api import Airflow
    from scripts.devstack.temporary import running_stack

    with tempfile.TemporaryDirectory(prefix="lakehouse-bench-airflow-") as tmp, \
            running_stack(Path(tmp) / "stack", {}) as st:
        subprocess.run([sys.executable, "-m", "jobs.synthetic.raw_ticks", "--dates", trade_date.isoformat(),
                        "--ticks", str(ticks), "--out", st.env["RAW_TICKS_PATH"]], cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL)
        airflow = Airflow(st.env)
        airflow.wait_for_dag()
        airflow.unpause()
        run_id = airflow.trigger(trade_date, tag="bench")
        log(f"Airflow: {ticks:,} ticks for {trade_date} triggered as {run_id}")
        state = airflow.wait({"bench": run_id}, timeout=timeout, out=io.StringIO())["bench"]
        run = airflow.run(run_id)
        tasks = {ti["task_id"]: ti for ti in airflow.task_instances(run_id)}
    if state != "success":
        raise RuntimeError(f"the benchmark's DAG run ended {state}: "
                           f"{ {k: v.get('state') for k, v in tasks.items()} }")
    seconds = {k: round((_at(t["end_date"]) - _at(t["start_date"])).total_seconds(), 1)
               for k, t in tasks.items() if t.get("start_date") and t.get("end_date")}
    total = (_at(run["end_date"]) - _at(run["start_date"])).total_seconds()
    first, trained = tasks.get(RAW_TO_BRONZE, {}), tasks.get(MODEL_TRAINING, {})
    span = ((_at(trained["end_date"]) - _at(first["start_date"])).total_seconds()
            if first.get("start_date") and trained.get("end_date") else None)
    log(f"Airflow: DAG run {total:.0f}s, raw_to_bronze..model_training {span or 0:.0f}s; tasks {seconds}")
    return {"ticks": ticks, "airflow_date_seconds": round(total, 1),
            "bronze_to_training_seconds": round(span, 1) if span is not None else None,
            "task_seconds": seconds, "loadavg_end": list(os.getloadavg())}


if __name__ == "__main__":
    import json

    print(json.dumps(airflow_date(int(sys.argv[1]) if len(sys.argv) > 1 else 333_333, dt.date(2026, 3, 3)),
                     indent=2))
