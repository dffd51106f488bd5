"""RAW that arrives late, RAW that never arrives, a holiday: on a real embedded stack, briefly.

Not the full pipeline (its Spark stages would take minutes): a DAG built from the pipeline's own
pieces (start_tracking and finish_tracking against the stack's MLflow, the deferrable wait_for_raw
on the real triggerer, every task's FailureNotifier) with a shell task standing in for the first
Spark stage, so "no Spark job started" is a file that is not there. Timeouts are seconds
(RAW_DELIVERY_TIMEOUT=45s, polled every second); alerts go to a real HTTP receiver on 127.0.0.1.
"""
from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path

import pytest
from e2e_support import WebhookReceiver
from nights_support import wait_until

from scripts.devstack.temporary import running_stack

DAG_ID = "night_paths_probe"
LATE, NEVER, CHUSEOK = dt.date(2026, 11, 24), dt.date(2026, 11, 25), dt.date(2026, 9, 25)
PROBE_DAG = f'''
import os

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import Param, chain, dag

from lakehouse_mlops.config import PipelineConfig
from lakehouse_mlops.raw_sensor import RawDeliverySensor
from lakehouse_mlops.tasks import finish_tracking_task, start_tracking_task

CFG = PipelineConfig.from_env()


@dag(dag_id="{DAG_ID}", schedule=None, start_date=None, catchup=False, is_paused_upon_creation=False,
     default_args=CFG.default_args(), tags=["e2e"],
     params={{"trade_date": Param(None, type=["null", "string"], format="date")}})
def probe():
    stand_in = BashOperator(task_id="raw_to_bronze",
                            bash_command="touch $LAKEHOUSE_HOME/stage-ran-{{{{ params.trade_date }}}}")
    chain(start_tracking_task(CFG), RawDeliverySensor(cfg=CFG), stand_in, finish_tracking_task(CFG, ["raw_to_bronze"]))


probe()
'''


@pytest.fixture(scope="module")
def night(request):
    root = Path(tempfile.mkdtemp(prefix="lakehouse-night-"))
    (root / "dags").mkdir()
    (root / "dags" / f"{DAG_ID}.py").write_text(PROBE_DAG)
    webhook = WebhookReceiver()
    settings = {"LAKEHOUSE_DAGS_FOLDER": str(root / "dags"), "ALERT_WEBHOOK_URL": webhook.url,
                "RAW_DELIVERY_TIMEOUT": "45s", "RAW_DELIVERY_POLL_SECONDS": "1",
                "PIPELINE_RETRIES": "2", "PIPELINE_RETRY_DELAY_SECONDS": "1", "PIPELINE_DEADLINE_MINUTES": "0"}
    try:
        with running_stack(root, settings, keep_on_failure=lambda: request.session.testsfailed > 0) as st:
            from scripts.devstack.airflow_api import Airflow

            airflow = Airflow(st.env)
            airflow.wait_for_dag(DAG_ID)
            yield st, airflow, webhook
    finally:
        webhook.close()


def test_late_delivery_waits_missing_delivery_pages_once_holiday_skips(night):
    st, airflow, webhook = night
    runs = {d: airflow.trigger(d, dag_id=DAG_ID, tag="night", conf={"trade_date": d.isoformat()})
            for d in (LATE, NEVER, CHUSEOK)}
    # Both trading days wait on the triggerer (no worker slot) for their delivery.
    for d in (LATE, NEVER):
        wait_until(lambda d=d: airflow.task_states(runs[d], DAG_ID).get("wait_for_raw") == "deferred", 120,
                   f"wait_for_raw deferred for {d}")
    # The late delivery arrives now, after its run started; the generator writes the marker last.
    saved = dict(os.environ)
    os.environ.update(st.env)
    try:
        from jobs.synthetic.raw_ticks import main as generate

        assert generate(["--dates", LATE.isoformat(), "--ticks", "200", "--out", st.env["RAW_TICKS_PATH"]]) == 0
    finally:
        os.environ.clear()
        os.environ.update(saved)
    states = airflow.wait({str(d): r for d, r in runs.items()}, timeout=300, dag_id=DAG_ID)
    assert states == {str(LATE): "success", str(NEVER): "failed", str(CHUSEOK): "success"}

    home = Path(st.env["LAKEHOUSE_HOME"])
    assert (home / f"stage-ran-{LATE}").exists()
    assert not (home / f"stage-ran-{NEVER}").exists()  # no stage started for the date without RAW
    never = airflow.task_states(runs[NEVER], DAG_ID)
    assert never["wait_for_raw"] == "failed" and never["raw_to_bronze"] == "upstream_failed"
    assert never["finish_tracking"] == "failed"
    assert airflow.task_states(runs[CHUSEOK], DAG_ID)["start_tracking"] == "skipped"

    alerts = wait_until(lambda: [m for m in webhook.messages if m.get("run") == runs[NEVER]], 60, "the alert")
    assert len(alerts) == 1, alerts
    assert alerts[0]["title"].startswith(f"RAW for {NEVER} not delivered by ")
    assert alerts[0]["task"] == "wait_for_raw" and alerts[0]["trade_date"] == NEVER.isoformat()
    # Nothing else paged: not the late date, not the holiday, not finish_tracking a second time.
    assert [m for m in webhook.messages if m.get("run") != runs[NEVER]] == []
    assert len([m for m in webhook.messages if m.get("run") == runs[NEVER]]) == 1
