"""Publish the morning report of one DAG run on its MLflow parent run (HTML + PNG).

    python -m jobs.report.publish --parent-run-id RUN_ID

Collects what the stages logged (``jobs.report.collect``), judges the date's health with its
30-day history from the stage_runs table (``jobs.report.health``), tags the parent run with it,
renders it (``jobs.report.render``) and logs ``report/morning_report.{html,png}``. Also runs for
failed DAG runs: that is the morning the report matters most.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
from pathlib import PurePosixPath

from jobs.contract import REPORT_HTML_ARTIFACT, TAG_HEALTH, env
from jobs.report.collect import collect
from jobs.report.health import judge, read_history
from jobs.report.render import write_report

REPORT_DIR = str(PurePosixPath(REPORT_HTML_ARTIFACT).parent)  # "report"


def publish(parent_run_id: str) -> dict:
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    ui = env("MLFLOW_UI_URL", mlflow.get_tracking_uri()).rstrip("/")
    report = collect(client, parent_run_id, ui)
    report["health"] = judge(report)
    trade_date = report["dag_run"].get("trade_date")
    if trade_date:
        report["health"]["history"], report["health"]["history_error"] = read_history(dt.date.fromisoformat(trade_date))
    client.set_tag(parent_run_id, TAG_HEALTH, report["health"]["verdict"])
    with tempfile.TemporaryDirectory() as tmp:
        for path in write_report(report, tmp).values():
            client.log_artifact(parent_run_id, str(path), REPORT_DIR)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parent-run-id", required=True)
    args = parser.parse_args(argv)
    report = publish(args.parent_run_id)
    print(f"morning report for {report['dag_run']['trade_date']} ({report['dag_run']['state']}, "
          f"health {report['health']['verdict']}) "
          f"logged to run {args.parent_run_id} under {REPORT_DIR}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
