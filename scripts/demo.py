#!/usr/bin/env python3
"""`make demo`: generate RAW ticks, run ml_pipeline through Airflow for each demo date, summarise.

Drives Airflow the way a user would, through its REST API: the real scheduler runs the tasks.
Run inside the resolved stack environment (`scripts/stack.py run -- python scripts/demo.py`).
The functions here are also what the end-to-end test uses.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from zoneinfo import ZoneInfo

SCRIPTS = Path(__file__).resolve().parent
REPO = SCRIPTS.parent
for p in (str(SCRIPTS), str(REPO)):
    if p not in sys.path:
        sys.path.insert(0, p)

import stack  # noqa: E402

DAG_ID = "ml_pipeline"
STAGES = ("raw_to_bronze", "bronze_to_silver", "silver_to_gold", "feature_engineering",
          "model_training", "model_deployment", "monitoring")
TERMINAL = {"success", "failed"}


class Airflow:
    """A minimal Airflow 3 REST client (api/v2) authenticated as the stack's admin user."""

    def __init__(self, env: dict):
        self.base = env["AIRFLOW_API_URL"].rstrip("/")
        self.env = env
        self._token = stack.airflow_token(env)

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.base}{path}", data=data, method=method, headers={
            "Authorization": f"Bearer {self._token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")
            try:
                return err.code, json.loads(detail)
            except ValueError:
                return err.code, {"detail": detail}

    def wait_for_dag(self, dag_id: str = DAG_ID, timeout: float = 180) -> dict:
        """Wait until the dag-processor has parsed the DAG (a fresh stack needs a few seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            status, body = self.call("GET", f"/api/v2/dags/{dag_id}")
            if status == 200:
                return body
            if time.monotonic() > deadline:
                _, errors = self.call("GET", "/api/v2/importErrors")
                raise TimeoutError(f"DAG {dag_id} not parsed after {timeout:.0f}s "
                                   f"(HTTP {status}); import errors: {errors}")
            time.sleep(1)

    def unpause(self, dag_id: str = DAG_ID) -> None:
        status, body = self.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        if status != 200:
            raise RuntimeError(f"unpause {dag_id}: HTTP {status} {body}")

    @staticmethod
    def logical_date_for(trade_date: dt.date) -> dt.datetime:
        """02:00 Asia/Seoul the next day: the run the daily schedule starts for ``trade_date``."""
        return dt.datetime.combine(trade_date + dt.timedelta(days=1), dt.time(2, 0), ZoneInfo("Asia/Seoul"))

    def find_run(self, trade_date: dt.date, dag_id: str = DAG_ID) -> str | None:
        at = urllib.parse.quote(self.logical_date_for(trade_date).isoformat())
        status, body = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns?logical_date_gte={at}&logical_date_lte={at}")
        runs = body.get("dag_runs", []) if status == 200 else []
        return runs[0]["dag_run_id"] if runs else None

    def trigger(self, trade_date: dt.date, dag_id: str = DAG_ID, tag: str = "demo",
                conf: dict | None = None) -> str:
        """Trigger the run that the 02:00 schedule would start for ``trade_date``.

        The logical date is 02:00 Asia/Seoul of the next day, so the DAG derives the trade date
        exactly as it does for scheduled runs.
        """
        run_id = f"{tag}__{trade_date}__{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S}"
        status, body = self.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", {
            "dag_run_id": run_id, "logical_date": self.logical_date_for(trade_date).isoformat(),
            "conf": conf or {}, "note": f"{tag} run for trade date {trade_date}"})
        if status not in (200, 201):
            raise RuntimeError(f"trigger {dag_id} for {trade_date}: HTTP {status} {body}")
        return body["dag_run_id"]

    def clear(self, run_id: str, dag_id: str = DAG_ID) -> str:
        """Rerun every task of an existing DAG run, as the UI's "Clear" does."""
        status, body = self.call("POST", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/clear",
                                 {"dry_run": False, "only_failed": False})
        if status != 200:
            raise RuntimeError(f"clear {dag_id} {run_id}: HTTP {status} {body}")
        return run_id

    def run_date(self, trade_date: dt.date, tag: str = "demo") -> str:
        """Trigger the date's run, or rerun it if the date already has one (reruns are idempotent)."""
        existing = self.find_run(trade_date)
        return self.clear(existing) if existing else self.trigger(trade_date, tag=tag)

    def run_state(self, run_id: str, dag_id: str = DAG_ID) -> str:
        status, body = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")
        return body.get("state", f"http-{status}")

    def task_states(self, run_id: str, dag_id: str = DAG_ID) -> dict[str, str | None]:
        _, body = self.call(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances")
        return {ti["task_id"]: ti.get("state") for ti in body.get("task_instances", [])}

    def runs_of(self, dag_id: str) -> list[dict]:
        status, body = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=50")
        return body.get("dag_runs", []) if status == 200 else []

    @staticmethod
    def trade_date_of(logical_date: str | dt.datetime) -> dt.date:
        """Inverse of ``logical_date_for``: the trade date a run with this logical date processes."""
        at = dt.datetime.fromisoformat(str(logical_date).replace("Z", "+00:00")) if isinstance(logical_date, str) \
            else logical_date
        return at.astimezone(ZoneInfo("Asia/Seoul")).date() - dt.timedelta(days=1)

    def backfill(self, first: dt.date, last: dt.date, reprocess: str = "completed", max_active_runs: int = 1,
                 dry_run: bool = False, dag_id: str = DAG_ID) -> dict:
        """An Airflow backfill (POST /api/v2/backfills) of the trade dates ``first``..``last``, inclusive.

        Airflow takes the range as logical dates: the 02:00 Asia/Seoul ticks that process those
        trade dates (``logical_date_for``), both ends inclusive. ``reprocess``: ``completed`` also
        reruns dates that already have a finished run (in place: that run is cleared and becomes a
        backfill run, same run id), ``failed`` only failed ones, ``none`` only dates without a run.
        Weekend dates get a run that skips. ``dry_run``: only list the logical dates it would run.
        """
        body = {"dag_id": dag_id, "from_date": self.logical_date_for(first).isoformat(),
                "to_date": self.logical_date_for(last).isoformat(), "reprocess_behavior": reprocess,
                "max_active_runs": max_active_runs}
        status, answer = self.call("POST", "/api/v2/backfills/dry_run" if dry_run else "/api/v2/backfills", body)
        if status not in (200, 201):
            raise RuntimeError(f"backfill {dag_id} {first}..{last}: HTTP {status} {answer}")
        return answer

    def backfill_runs(self, backfill: dict, dag_id: str = DAG_ID) -> dict[str, str]:
        """Trade date -> run id of the backfill runs in a backfill's range (created or taken over)."""
        lo, hi = (urllib.parse.quote(backfill[k]) for k in ("from_date", "to_date"))
        status, body = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns?logical_date_gte={lo}"
                                        f"&logical_date_lte={hi}&run_type=backfill&limit=100")
        if status != 200:
            raise RuntimeError(f"runs of backfill {backfill.get('id')}: HTTP {status} {body}")
        runs = sorted(body.get("dag_runs", []), key=lambda r: r["logical_date"])
        return {self.trade_date_of(r["logical_date"]).isoformat(): r["dag_run_id"] for r in runs}

    def wait_backfill(self, backfill_id: int, timeout: float = 120) -> dict:
        """Wait until the scheduler marks the backfill complete (all its runs finished)."""
        deadline = time.monotonic() + timeout
        while True:
            status, body = self.call("GET", f"/api/v2/backfills/{backfill_id}")
            if status == 200 and body.get("completed_at"):
                return body
            if time.monotonic() > deadline:
                raise TimeoutError(f"backfill {backfill_id} not complete after {timeout:.0f}s: HTTP {status} {body}")
            time.sleep(2)

    def wait(self, runs: dict[str, str], timeout: float = 3600, out=sys.stdout,
             dag_id: str = DAG_ID) -> dict[str, str]:
        """Poll until every run is terminal, printing each task state change as it happens."""
        deadline = time.monotonic() + timeout
        seen: dict[tuple[str, str], str | None] = {}
        states: dict[str, str] = {}
        started = time.monotonic()
        while True:
            for label, run_id in runs.items():
                if states.get(label) in TERMINAL:
                    continue
                for task, state in self.task_states(run_id, dag_id).items():
                    if state and seen.get((label, task)) != state:
                        seen[(label, task)] = state
                        print(f"  [{time.monotonic() - started:6.0f}s] {label} {task:<20} {state}",
                              file=out, flush=True)
                states[label] = self.run_state(run_id, dag_id)
                if states[label] in TERMINAL:
                    print(f"  [{time.monotonic() - started:6.0f}s] {label} run {states[label].upper()}",
                          file=out, flush=True)
            if all(s in TERMINAL for s in states.values()) and len(states) == len(runs):
                return states
            if time.monotonic() > deadline:
                raise TimeoutError(f"runs not finished after {timeout:.0f}s: {states}")
            time.sleep(2)


# --------------------------------------------------------------------------------------------------
# Summary, read back from MLflow, the registry, Iceberg and SeaweedFS
# --------------------------------------------------------------------------------------------------

def collect_summary(env: dict, runs: dict[str, str]) -> dict:
    import mlflow
    from mlflow import MlflowClient

    from jobs.contract import ALL_TABLES, CHAMPION
    from jobs.lakehouse.settings import Settings

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    client = MlflowClient()
    settings = Settings.from_env()
    exp = client.get_experiment_by_name(settings.experiment)
    summary: dict = {"experiment_id": exp.experiment_id if exp else None, "dates": {}}
    for label, run_id in runs.items():
        parents = client.search_runs([exp.experiment_id], filter_string=(
            f"tags.`airflow.run_id` = '{run_id}' and tags.`pipeline.role` = 'dag_run'"), max_results=1)
        if not parents:
            summary["dates"][label] = {"parent": None, "stages": {}}
            continue
        parent = parents[0]
        children = client.search_runs([exp.experiment_id], filter_string=(
            f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"), order_by=["attributes.start_time ASC"])
        stages = {}
        for child in children:  # the last try of a stage wins
            stages[child.data.tags.get("pipeline.stage")] = {
                "status": child.info.status, "metrics": child.data.metrics, "tags": child.data.tags,
                "run_id": child.info.run_id}
        summary["dates"][label] = {"parent": {"run_id": parent.info.run_id, "status": parent.info.status},
                                   "stages": stages}
    try:
        champion = client.get_model_version_by_alias(settings.model_name, CHAMPION)
        summary["champion"] = {"version": champion.version, "run_id": champion.run_id,
                               "tags": dict(champion.tags)}
    except Exception:  # no champion yet
        summary["champion"] = None
    catalog = settings.pyiceberg_catalog()
    tables = {}
    for name in ALL_TABLES:
        ident = f"{settings.namespace}.{name}"
        if catalog.table_exists(ident):
            table = catalog.load_table(ident)
            snap = table.current_snapshot()
            tables[name] = {"rows": int(snap.summary.get("total-records", 0)) if snap else 0,
                            "snapshot_id": snap.snapshot_id if snap else None}
    summary["tables"] = tables
    s3 = stack.s3_client(env)
    listing = s3.list_objects_v2(Bucket=env.get("S3_BUCKET", "lakehouse"), Prefix="mlflow/")
    summary["s3_mlflow_objects"] = listing.get("KeyCount", 0)
    return summary


def _fmt(value, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and digits:
        return f"{value:.{digits}f}"
    return f"{value:,.0f}" if isinstance(value, (int, float)) else str(value)


def _quality_lines(stages: dict) -> list[str]:
    """Files and rows set aside, by reason, and the quality gates' verdicts."""
    bronze = stages.get("raw_to_bronze", {}).get("metrics", {})
    silver = stages.get("bronze_to_silver", {}).get("metrics", {})
    files = {k.split(".", 1)[1]: int(v) for k, v in bronze.items() if k.startswith("files_quarantined.") and v}
    rows = {k.split(".", 1)[1]: int(v) for k, v in silver.items() if k.startswith("rejected.") and v}
    gates = {layer: stages.get(stage, {}).get("tags", {}).get(f"quality_gate.{layer}")
             for layer, stage in (("bronze", "raw_to_bronze"), ("silver", "bronze_to_silver"),
                                  ("gold", "silver_to_gold"), ("features", "feature_engineering"))}
    out = []
    if files:
        out.append("  files quarantined: " + ", ".join(f"{r} {n}" for r, n in files.items()))
    if rows:
        out.append("  rows quarantined: " + ", ".join(f"{r} {n:,}" for r, n in rows.items()))
    if any(gates.values()):
        out.append("  quality gates: " + ", ".join(f"{layer} {state}" for layer, state in gates.items() if state))
    return out


def format_summary(env: dict, summary: dict, states: dict[str, str]) -> str:
    lines = ["", "=" * 96, "lakehouse-mlops demo summary", "=" * 96]
    for label, info in summary["dates"].items():
        parent = info["parent"] or {}
        lines.append(f"\nTrade date {label}: Airflow run {states.get(label, '?').upper()}, "
                     f"MLflow parent run {parent.get('status', 'missing')}")
        lines.append(f"  {'stage':<22}{'rows in':>12}{'rows out':>12}{'rejected':>10}{'seconds':>9}  snapshot")
        for stage in STAGES:
            s = info["stages"].get(stage)
            if not s:
                lines.append(f"  {stage:<22}{'(no run)':>12}")
                continue
            m = s["metrics"]
            lines.append(f"  {stage:<22}{_fmt(m.get('rows_in')):>12}{_fmt(m.get('rows_out')):>12}"
                         f"{_fmt(m.get('rows_rejected')):>10}{_fmt(m.get('duration_seconds'), 1):>9}  "
                         f"{s['tags'].get('iceberg.snapshot_id', '')}"
                         + ("" if s["status"] == "FINISHED" else f"  [{s['status']}: {s['tags'].get('error', '')[:80]}]"))
        lines.extend(_quality_lines(info["stages"]))
        train = info["stages"].get("model_training", {}).get("metrics", {})
        deploy = info["stages"].get("model_deployment", {})
        monitor = info["stages"].get("monitoring", {})
        if train:
            lines.append(f"  model: v{info['stages']['model_training']['tags'].get('model.version', '?')} "
                         f"holdout AUC {_fmt(train.get('auc'), 3)}  accuracy {_fmt(train.get('accuracy'), 3)}  "
                         f"F1 {_fmt(train.get('f1'), 3)}  log loss {_fmt(train.get('log_loss'), 3)}")
        if deploy:
            lines.append(f"  deployment: {deploy['tags'].get('deployment.decision', '?')}, "
                         f"champion v{deploy['tags'].get('model.champion_version', '?')}")
        if monitor:
            mm = monitor["metrics"]
            lines.append(f"  monitoring: drift share {_fmt(mm.get('drift_share'), 2)} "
                         f"(drifted: {monitor['tags'].get('drift.features', '-')}), "
                         f"realised AUC {_fmt(mm.get('realized_auc'), 3)}")
    champ = summary.get("champion")
    lines.append("\nModel registry: " + (
        f"{os.environ.get('MLFLOW_MODEL_NAME', 'TickPricePredictor')}@champion = version {champ['version']}"
        if champ else "no champion"))
    lines.append("Iceberg tables (rows in current snapshot):")
    for name, t in summary["tables"].items():
        lines.append(f"  {name:<28}{t['rows']:>12,}  snapshot {t['snapshot_id']}")
    lines.append(f"MLflow artifacts in SeaweedFS s3://{env.get('S3_BUCKET', 'lakehouse')}/mlflow/: "
                 f"{summary['s3_mlflow_objects']} objects")
    lines.append("Morning report of each run: MLflow parent run -> Artifacts -> report/morning_report.html (and .png)")
    exp = summary.get("experiment_id")
    lines += [
        "",
        f"Airflow UI : {env['AIRFLOW_API_URL']}/dags/{DAG_ID}   (user {env.get('AIRFLOW_ADMIN_USER') or 'admin'}, "
        f"password in {stack.password_file(env)})",
        f"MLflow UI  : {env['MLFLOW_UI_URL']}/#/experiments/{exp}" if exp else f"MLflow UI  : {env['MLFLOW_UI_URL']}",
        f"S3 (SeaweedFS): {env['MLFLOW_S3_ENDPOINT_URL']}  bucket {env.get('S3_BUCKET', 'lakehouse')}",
        "Services keep running for browsing; `make down` stops them.",
    ]
    return "\n".join(lines)


def generate_raw(env: dict, dates: list[dt.date], ticks: int, regime: float = 1.0) -> None:
    from jobs.synthetic.raw_ticks import main as generate

    generate(["--dates", ",".join(d.isoformat() for d in dates), "--ticks", str(ticks),
              "--out", env["RAW_TICKS_PATH"], "--regime", str(regime)])


def main(argv: list[str] | None = None) -> int:
    env = stack.resolve_env()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dates", default=env.get("DEMO_TRADE_DATES") or "2026-11-24,2026-11-25,2026-11-26")
    parser.add_argument("--ticks", type=int, default=int(env.get("DEMO_TICKS") or 1_000_000))
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args(argv)
    os.environ.update(env)
    dates = [dt.date.fromisoformat(d.strip()) for d in args.dates.split(",") if d.strip()]

    stressed = {dt.date.fromisoformat(d.strip()) for d in (env.get("DEMO_STRESSED_DATES") or "").split(",") if d.strip()}
    print(f"1/4 Generating {args.ticks:,} RAW ticks for {', '.join(map(str, dates))} into {env['RAW_TICKS_PATH']}"
          + (f" ({', '.join(map(str, sorted(stressed)))} as a stressed market)" if stressed else ""))
    per_date = args.ticks // len(dates)
    calm = [d for d in dates if d not in stressed]
    if calm:
        generate_raw(env, calm, per_date * len(calm))
    for d in sorted(stressed & set(dates)):
        generate_raw(env, [d], per_date, regime=3.0)
    default_messy = dates[min(1, len(dates) - 1)].isoformat()
    messy = {dt.date.fromisoformat(d.strip()) for d in (env.get("DEMO_MESSY_DATES") or default_messy).split(",")
             if d.strip()}
    for d in sorted(messy & set(dates)):
        from jobs.synthetic import messy_delivery as generate_messy_delivery

        generate_messy_delivery.write(env["RAW_TICKS_PATH"], d)
        print(f"    {d}: plus a messy second vendor delivery (CSV, JSON lines, a truncated Parquet file, "
              "a spreadsheet) to show the quarantine")
    print("2/4 Waiting for Airflow to parse ml_pipeline, then unpausing it")
    airflow = Airflow(env)
    airflow.wait_for_dag()
    airflow.unpause()
    print("3/4 Triggering one run per trade date, or rerunning it if it exists (one at a time: max_active_runs=1)")
    runs = {d.isoformat(): airflow.run_date(d) for d in dates}
    for label, run_id in runs.items():
        print(f"  {label}: {run_id}")
    started = time.monotonic()
    before = {r["dag_run_id"] for r in airflow.runs_of("ml_retraining")}
    states = airflow.wait(runs, timeout=args.timeout)
    alerted = [label for label, run_id in runs.items() if airflow.task_states(run_id).get("drift_gate") == "success"]
    retraining: dict[str, str] = {}
    if alerted:
        print(f"  drift alert on {', '.join(alerted)}: waiting for ml_retraining")
        deadline = time.monotonic() + 300
        while not (new := [r["dag_run_id"] for r in airflow.runs_of("ml_retraining") if r["dag_run_id"] not in before]):
            if time.monotonic() > deadline:
                raise TimeoutError("the drift alert did not start ml_retraining within 5 minutes")
            time.sleep(2)
        retraining = airflow.wait({f"retraining {i + 1}": r for i, r in enumerate(new)}, timeout=args.timeout,
                                  dag_id="ml_retraining")
    print(f"4/4 All runs finished in {time.monotonic() - started:.0f}s; reading results back")
    summary = collect_summary(env, runs)
    print(format_summary(env, summary, states))
    if alerted:
        print(f"Drift alerts: {', '.join(alerted)} -> ml_retraining "
              + ", ".join(f"{label} {state.upper()}" for label, state in retraining.items()))
    ok = all(s == "success" for s in [*states.values(), *retraining.values()]) and summary.get("champion")
    if not ok:
        print("\nSome runs failed: open the Airflow UI above, or see var/stack/logs/.", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
