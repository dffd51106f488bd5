"""A minimal Airflow 3 REST client (api/v2), authenticated as the stack's admin user (or another one).

Drives Airflow the way a user would: the real scheduler runs the tasks. Shared by `make demo`,
`make backfill` and the end-to-end tests. Trade dates map to logical dates through
jobs.trade_calendar with the stack's PIPELINE_SCHEDULE and PIPELINE_TIMEZONE, so a triggered run
derives its trade date exactly as a scheduled one does.
"""
from __future__ import annotations

import datetime as dt
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from jobs.contract import ML_PIPELINE
from jobs.trade_calendar import logical_date_for, pipeline_schedule, pipeline_timezone, resolve_trade_date
from scripts.devstack.health import airflow_token
from scripts.devstack.progress import TERMINAL_RUN, watch

DAG_ID = ML_PIPELINE
TERMINAL = TERMINAL_RUN


def _quoted(run_id: str) -> str:
    return urllib.parse.quote(run_id, safe="")


class Airflow:
    """The calls the demo, the backfill and the tests make, one method each."""

    def __init__(self, env: dict, user: str | None = None):
        self.base = env["AIRFLOW_API_URL"].rstrip("/")
        self.env = env
        self.schedule = env.get("PIPELINE_SCHEDULE") or pipeline_schedule()
        self.timezone = env.get("PIPELINE_TIMEZONE") or pipeline_timezone()
        self._token = airflow_token(env, user=user)  # the admin unless another role is under test

    @property
    def auth_header(self) -> dict[str, str]:
        """What a request to the api-server (REST or a plugin route) needs to be let in."""
        return {"Authorization": f"Bearer {self._token}"}

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

    # ------------------------------------------------------------------------------ trade dates

    def logical_date_for(self, trade_date: dt.date) -> dt.datetime:
        """The logical date of the run the daily schedule starts for ``trade_date`` (the next local day)."""
        return logical_date_for(trade_date, self.schedule, self.timezone)

    def trade_date_of(self, logical_date: str | dt.datetime) -> dt.date:
        """Inverse of ``logical_date_for``: the trade date a run with this logical date processes."""
        at = dt.datetime.fromisoformat(str(logical_date).replace("Z", "+00:00")) if isinstance(logical_date, str) \
            else logical_date
        return resolve_trade_date(None, at, self.timezone)

    # ------------------------------------------------------------------------------ DAGs and runs

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

    def find_run(self, trade_date: dt.date, dag_id: str = DAG_ID) -> str | None:
        at = urllib.parse.quote(self.logical_date_for(trade_date).isoformat())
        status, body = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns?logical_date_gte={at}&logical_date_lte={at}")
        runs = body.get("dag_runs", []) if status == 200 else []
        return runs[0]["dag_run_id"] if runs else None

    def trigger(self, trade_date: dt.date, dag_id: str = DAG_ID, tag: str = "demo",
                conf: dict | None = None) -> str:
        """Trigger the run that the daily schedule would start for ``trade_date``.

        Its logical date is the schedule's tick on the next local day, so the DAG derives the
        trade date exactly as it does for scheduled runs.
        """
        run_id = f"{tag}__{trade_date}__{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}"
        status, body = self.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", {
            "dag_run_id": run_id, "logical_date": self.logical_date_for(trade_date).isoformat(),
            "conf": conf or {}, "note": f"{tag} run for trade date {trade_date}"})
        if status not in (200, 201):
            raise RuntimeError(f"trigger {dag_id} for {trade_date}: HTTP {status} {body}")
        return body["dag_run_id"]

    def clear(self, run_id: str, dag_id: str = DAG_ID) -> str:
        """Rerun every task of an existing DAG run, as the UI's "Clear" does."""
        status, body = self.call("POST", f"/api/v2/dags/{dag_id}/dagRuns/{_quoted(run_id)}/clear",
                                 {"dry_run": False, "only_failed": False})
        if status != 200:
            raise RuntimeError(f"clear {dag_id} {run_id}: HTTP {status} {body}")
        return run_id

    def run_date(self, trade_date: dt.date, tag: str = "demo") -> str:
        """Trigger the date's run, or rerun it if the date already has one (reruns are idempotent)."""
        existing = self.find_run(trade_date)
        return self.clear(existing) if existing else self.trigger(trade_date, tag=tag)

    def run(self, run_id: str, dag_id: str = DAG_ID) -> dict:
        """One DAG run as the REST API returns it (state, start_date, end_date, run_type, ...)."""
        status, body = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{_quoted(run_id)}")
        return body if status == 200 else {"dag_run_id": run_id, "state": f"http-{status}"}

    def run_state(self, run_id: str, dag_id: str = DAG_ID) -> str:
        return self.run(run_id, dag_id).get("state", "?")

    def task_instances(self, run_id: str, dag_id: str = DAG_ID) -> list[dict]:
        _, body = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{_quoted(run_id)}/taskInstances")
        return body.get("task_instances", [])

    def task_states(self, run_id: str, dag_id: str = DAG_ID) -> dict[str, str | None]:
        return {ti["task_id"]: ti.get("state") for ti in self.task_instances(run_id, dag_id)}

    def task_count(self, dag_id: str = DAG_ID) -> int | None:
        """How many tasks the DAG has (the N of "task k/N")."""
        status, body = self.call("GET", f"/api/v2/dags/{dag_id}/tasks")
        return body.get("total_entries", len(body.get("tasks", []))) if status == 200 else None

    def runs_of(self, dag_id: str, limit: int = 100) -> list[dict]:
        """The DAG's latest ``limit`` runs, oldest first."""
        status, body = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit={limit}&order_by=-id")
        return list(reversed(body.get("dag_runs", []))) if status == 200 else []

    def wait_for_new_runs(self, dag_id: str, known: set[str], timeout: float = 300) -> list[str]:
        """Run ids of ``dag_id`` not in ``known``, once there is one (e.g. runs an asset event starts)."""
        deadline = time.monotonic() + timeout
        while not (new := [r["dag_run_id"] for r in self.runs_of(dag_id) if r["dag_run_id"] not in known]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no new {dag_id} run within {timeout:.0f}s")
            time.sleep(2)
        return new

    def wait(self, runs: dict[str, str], timeout: float = 3600, out=sys.stdout,
             dag_id: str = DAG_ID) -> dict[str, str]:
        """Poll until every run is terminal, printing task state changes, task k/N, elapsed and an
        estimate, and any run ahead of them (scripts/devstack/progress.py); never silent for long."""
        return watch(self, runs, dag_id, timeout=timeout, out=out)

    # ------------------------------------------------------------------------------ backfills

    def backfill(self, first: dt.date, last: dt.date, reprocess: str = "completed", max_active_runs: int = 1,
                 dry_run: bool = False, dag_id: str = DAG_ID) -> dict:
        """An Airflow backfill (POST /api/v2/backfills) of the trade dates ``first``..``last``, inclusive.

        Airflow takes the range as logical dates: the schedule's ticks that process those trade
        dates (``logical_date_for``), both ends inclusive. ``reprocess``: ``completed`` also
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
