"""Alerts to people: a Slack-compatible webhook and/or e-mail, configured by environment.

Used for task failures (as an Airflow notifier) and for drift alerts. Delivery is bounded:
a few attempts with backoff, then the error is logged; an alert must never hang a task.
"""
from __future__ import annotations

import json
import logging
import re
import smtplib
import time
import urllib.request
from email.message import EmailMessage

from airflow.sdk import BaseNotifier
from airflow.sdk.exceptions import AirflowFailException

from jobs import contract
from jobs.contract import env

log = logging.getLogger(__name__)
ATTEMPTS = 3


def send_alert(title: str, fields: dict[str, object]) -> list[str]:
    """Send to every configured channel; returns the channels that accepted the message."""
    text = "\n".join([f"*{title}*", *(f"{k}: {v}" for k, v in fields.items() if v not in (None, ""))])
    delivered = []
    url = env("ALERT_WEBHOOK_URL")
    if url and _retry(lambda: _post_webhook(url, {"text": text, "title": title,
                                                  **{k: str(v) for k, v in fields.items()}})):
        delivered.append("webhook")
    if env("SMTP_HOST") and env("ALERT_EMAIL_TO") and _retry(lambda: _send_mail(title, text)):
        delivered.append("email")
    if not delivered:
        log.warning("alert not delivered (no channel configured or all failed): %s", text)
    return delivered


def _retry(send) -> bool:
    for attempt in range(1, ATTEMPTS + 1):
        try:
            send()
            return True
        except Exception as exc:  # network errors of any kind
            log.warning("alert delivery attempt %d/%d failed: %s", attempt, ATTEMPTS, exc)
            if attempt < ATTEMPTS:
                time.sleep(2 ** attempt)
    return False


def _post_webhook(url: str, payload: dict) -> None:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        if resp.status >= 300:
            raise RuntimeError(f"webhook answered HTTP {resp.status}")


def _send_mail(subject: str, body: str) -> None:
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = env("ALERT_EMAIL_FROM", "lakehouse-mlops@localhost")
    msg["To"] = env("ALERT_EMAIL_TO")
    msg.set_content(body)
    with smtplib.SMTP(env("SMTP_HOST"), int(env("SMTP_PORT", "587")), timeout=10) as smtp:
        if env("SMTP_STARTTLS", "true").lower() == "true":
            smtp.starttls()
        if env("SMTP_USER"):
            smtp.login(env("SMTP_USER"), env("SMTP_PASSWORD"))
        smtp.send_message(msg)


_ROOT_CAUSE = re.compile(r"^\s*(?:[\w.]+\.)?(\w*(?:Error|Exception|Exit|Failed)\w*): (.+)$")


def summarize_error(error: BaseException | None, limit: int = 1500) -> str:
    """The line a person needs first: the job's own exception, not spark-submit's command line.

    SparkSubmitOperator raises "Cannot execute: <command> ... Last spark-submit output: ...";
    the Python traceback of the job sits at the end of that text.
    """
    if error is None:
        return "unknown"
    text = str(error)
    causes = [m.group(0).strip() for line in text.splitlines() if (m := _ROOT_CAUSE.match(line))]
    if causes:
        return causes[-1][:limit]
    summary = f"{type(error).__name__}: {text}"
    return summary if len(summary) <= limit else "..." + summary[-limit:]


def task_log_url(dag_id: str, run_id: str, task_id: str, try_number: int | None) -> str:
    url = contract.task_url(env("AIRFLOW_UI_URL", contract.DEFAULT_AIRFLOW_UI_URL), dag_id, run_id, task_id)
    return f"{url}?try_number={try_number}" if try_number else url


class AlreadyAlerted(AirflowFailException):
    """Fails a task (and so the DAG run) for failures whose own task has alerted already.

    finish_tracking raises it when a stage, the sensor or tracking failed: the run must end failed,
    but the person was paged once, by the task that failed; FailureNotifier sends nothing for it.
    """


def _trade_date(ti, context) -> str | None:
    try:
        started = ti.xcom_pull(task_ids=contract.START_TRACKING) if ti is not None else None
    except Exception:  # the failure may be in start_tracking itself
        started = None
    if (started or {}).get("trade_date"):
        return started["trade_date"]
    from lakehouse_mlops.tasks import _requested_trade_date  # lazy: tasks imports this module

    try:
        return _requested_trade_date(context)
    except Exception:
        return None


class FailureNotifier(BaseNotifier):
    """on_failure_callback of every task: who failed, for which trade date, why, where the log is.

    An exception with an ``alert_title`` (the RAW sensor's timeout) gives the alert its title.
    """

    def notify(self, context) -> None:
        ti = context.get("ti") or context.get("task_instance")
        dag_run = context.get("dag_run")
        dag_id = getattr(dag_run, "dag_id", None) or getattr(ti, "dag_id", "?")
        run_id = getattr(dag_run, "run_id", None) or getattr(ti, "run_id", "?")
        task_id = getattr(ti, "task_id", "?")
        error = context.get("exception")
        if isinstance(error, AlreadyAlerted):
            log.info("not alerting for %s.%s: %s", dag_id, task_id, error)
            return
        title = getattr(error, "alert_title", None) or f"Airflow task failed: {dag_id}.{task_id}"
        send_alert(title, {
            "dag": dag_id,
            "task": task_id,
            "run": run_id,
            "trade_date": _trade_date(ti, context),
            "try": getattr(ti, "try_number", None),
            "error": summarize_error(error),
            "log_url": task_log_url(dag_id, run_id, task_id, getattr(ti, "try_number", None)),
        })
