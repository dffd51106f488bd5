"""What a person watching a DAG run needs to see: task k/N, the current task, elapsed time and an estimate.

The formatting functions are pure: they take the Airflow REST API's own shapes (a DAG run of
GET /api/v2/dags/{dag}/dagRuns, the task instances of .../taskInstances) and a clock, so tests
feed them dicts. `watch` polls a client (scripts/devstack/airflow_api.Airflow) and prints a line
whenever a task changes state, a heartbeat when nothing changed for HEARTBEAT_SECONDS, and names
any run of the same DAG that is ahead of the awaited ones (a run the scheduler created on
unpause, another user's trigger): with max_active_runs=1 it blocks them, so it must never be silent.
"""
from __future__ import annotations

import datetime as dt
import statistics
import sys
import time
from collections.abc import Iterable, Mapping

TERMINAL_RUN = {"success", "failed"}
# A task instance in one of these states is done with for this try of the run.
DONE_TASK = {"success", "skipped", "failed", "upstream_failed", "removed"}
# ... and in one of these it is what the run is doing right now.
ACTIVE_TASK = {"running", "queued", "scheduled", "up_for_retry", "up_for_reschedule", "deferred", "restarting"}
HEARTBEAT_SECONDS = 10.0
POLL_SECONDS = 2.0


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def duration(seconds: float | None) -> str:
    """1h02m, 4m05s, 37s."""
    if seconds is None:
        return "?"
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def run_seconds(run: Mapping) -> float | None:
    """Wall time of a finished run (end - start), None while it runs."""
    start, end = parse_time(run.get("start_date")), parse_time(run.get("end_date"))
    return (end - start).total_seconds() if start and end else None


def estimate(runs: Iterable[Mapping], exclude: Iterable[str] = ()) -> tuple[float | None, int]:
    """(median wall time of the earlier successful runs, how many there were); (None, 0) without any."""
    skip = set(exclude)
    times = [s for r in runs if r.get("state") == "success" and r.get("dag_run_id") not in skip
             and (s := run_seconds(r)) is not None]
    return (statistics.median(times), len(times)) if times else (None, 0)


def task_position(task_instances: Iterable[Mapping], total: int | None = None) -> tuple[int, int, list[Mapping]]:
    """(k, N, the active task instances): k is the task being worked on, counting finished ones first."""
    tis = [ti for ti in task_instances if ti.get("map_index", -1) in (-1, None)]
    n = max(total or 0, len(tis))
    done = sum(1 for ti in tis if ti.get("state") in DONE_TASK)
    active = [ti for ti in tis if ti.get("state") in ACTIVE_TASK]
    k = min(done + (1 if active or done < n else 0), n)
    return k, n, active


def _task_phrase(ti: Mapping, now: dt.datetime) -> str:
    state = ti.get("state")
    phrase = f"{ti['task_id']} {state}"
    started = parse_time(ti.get("start_date"))
    if state == "running" and started:
        phrase += f" {duration((now - started).total_seconds())}"
    if (ti.get("try_number") or 1) > 1:
        phrase += f" (try {ti['try_number']})"
    return phrase


def describe_tasks(task_instances: Iterable[Mapping], total: int | None, now: dt.datetime) -> str:
    """'task 3/11 bronze_to_silver running 1m05s'."""
    k, n, active = task_position(task_instances, total)
    if not n:
        return "no tasks yet"
    current = ", ".join(_task_phrase(ti, now) for ti in active) or "between tasks"
    return f"task {k}/{n} {current}"


def describe_estimate(run: Mapping, median: float | None, count: int, now: dt.datetime) -> str:
    """'elapsed 2m10s, estimate 6m00s (median of 2 earlier runs), ~3m50s left'."""
    started = parse_time(run.get("start_date"))
    if not started:
        queued = parse_time(run.get("queued_at"))
        text = f"queued {duration((now - queued).total_seconds())}" if queued else "queued"
    else:
        text = f"elapsed {duration((now - started).total_seconds())}"
    if median is None:
        return text + ", no estimate yet (no earlier successful run of this DAG)"
    text += f", estimate {duration(median)} (median of {count} earlier run{'s' if count != 1 else ''})"
    if started:
        left = median - (now - started).total_seconds()
        text += f", ~{duration(left)} left" if left > 0 else ", taking longer than usual"
    return text


def _sort_key(run: Mapping) -> tuple:
    """The scheduler's order: running runs first, then queued ones by run_after (then logical date)."""
    return (run.get("state") != "running", str(run.get("run_after") or ""), str(run.get("logical_date") or ""),
            str(run.get("queued_at") or ""))


def ahead_of(run_id: str, dag_runs: Iterable[Mapping]) -> list[Mapping]:
    """Runs of the same DAG the scheduler works on before ``run_id`` (empty once it runs or finished)."""
    runs = [r for r in dag_runs if r.get("state") not in TERMINAL_RUN]
    mine = next((r for r in runs if r["dag_run_id"] == run_id), None)
    if mine is None or mine.get("state") == "running":
        return []
    return [r for r in runs if r["dag_run_id"] != run_id and _sort_key(r) < _sort_key(mine)]


def describe_ahead(run: Mapping, task_instances: Iterable[Mapping] | None, total: int | None,
                   now: dt.datetime, own_labels: Mapping[str, str]) -> str:
    """Who blocks the awaited run: 'scheduled__... (a scheduled run the demo did not start): running, task 2/11 ...'."""
    rid = run["dag_run_id"]
    if rid in own_labels:
        who = f"{own_labels[rid]} ({rid})"
    else:
        who = f"{rid} (a {run.get('run_type') or 'other'} run not started here)"
    what = run.get("state") or "?"
    if run.get("state") == "running" and task_instances is not None:
        what += ", " + describe_tasks(task_instances, total, now)
    elif run.get("state") == "queued":
        what += ", waiting for a free run slot (max_active_runs)"
    return f"{who}: {what}"


def heartbeat_line(label: str, run: Mapping, task_instances: Iterable[Mapping], total: int | None,
                   median: float | None, count: int, now: dt.datetime) -> str:
    """One line for one awaited run: where it is, how long it took so far, how long it should take."""
    if run.get("state") == "running":
        return f"{label}: {describe_tasks(task_instances, total, now)}; {describe_estimate(run, median, count, now)}"
    if run.get("state") == "queued":
        return f"{label}: {describe_estimate(run, median, count, now)}"
    return f"{label}: {run.get('state')}; {describe_estimate(run, median, count, now)}"


# --------------------------------------------------------------------------------------------------
# The polling loop
# --------------------------------------------------------------------------------------------------

def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def heartbeat_lines(airflow, runs: Mapping[str, str], states: Mapping[str, str], by_id: Mapping[str, Mapping],
                    tis_of: Mapping[str, list], total: int | None, median: float | None, count: int,
                    now: dt.datetime, dag_id: str) -> list[str]:
    """A line per running awaited run and per one blocked by a stranger; the rest queued in one line."""
    own_labels = {rid: label for label, rid in runs.items()}
    lines, queued = [], []
    for label, run_id in runs.items():
        if states.get(label) in TERMINAL_RUN or run_id not in by_id:
            continue
        run = by_id[run_id]
        strangers = [r for r in ahead_of(run_id, by_id.values()) if r["dag_run_id"] not in own_labels]
        if run.get("state") != "running" and not strangers:
            queued.append(label)
            continue
        line = heartbeat_line(label, run, tis_of.get(run_id, []), total, median, count, now)
        if strangers:
            first = strangers[0]
            tis = airflow.task_instances(first["dag_run_id"], dag_id) if first.get("state") == "running" else None
            line += f"; waits behind {describe_ahead(first, tis, total, now, own_labels)}"
            if len(strangers) > 1:
                line += f" (+{len(strangers) - 1} more)"
        lines.append(line)
    if queued:
        lines.append(f"queued, one run at a time: {', '.join(queued)}")
    return lines


def watch(airflow, runs: dict[str, str], dag_id: str, timeout: float = 3600, out=sys.stdout,
          heartbeat: float = HEARTBEAT_SECONDS, poll: float = POLL_SECONDS) -> dict[str, str]:
    """Poll until every run in ``runs`` (label -> run id) is terminal; returns label -> final state.

    Prints each task state change as it happens, and at least every ``heartbeat`` seconds one line
    per unfinished run (task k/N, current task, elapsed, estimate), naming what is ahead of it.
    """
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    last_print = started
    seen: dict[tuple[str, str], str | None] = {}
    states: dict[str, str] = {}
    announced_ahead: set[str] = set()
    own_labels = {rid: label for label, rid in runs.items()}
    total = airflow.task_count(dag_id)

    def emit(text: str) -> None:
        nonlocal last_print
        print(f"  [{time.monotonic() - started:6.0f}s] {text}", file=out, flush=True)
        last_print = time.monotonic()

    while True:
        now = _utcnow()
        dag_runs = airflow.runs_of(dag_id)
        by_id = {r["dag_run_id"]: r for r in dag_runs}
        median, count = estimate(dag_runs)
        tis_of: dict[str, list[dict]] = {}
        for label, run_id in runs.items():
            if states.get(label) in TERMINAL_RUN:
                continue
            tis_of[run_id] = airflow.task_instances(run_id, dag_id)
            for ti in tis_of[run_id]:
                state = ti.get("state")
                if state and seen.get((label, ti["task_id"])) != state:
                    seen[(label, ti["task_id"])] = state
                    emit(f"{label} {ti['task_id']:<20} {state}")
            run = by_id.get(run_id) or airflow.run(run_id, dag_id)
            by_id[run_id] = run
            states[label] = run.get("state") or "?"
            if states[label] in TERMINAL_RUN:
                emit(f"{label} run {states[label].upper()} after {duration(run_seconds(run))}")
        # Runs the awaited ones wait behind; announce a stranger once, loudly, then in every heartbeat.
        blockers: dict[str, Mapping] = {}
        for label, run_id in runs.items():
            if states.get(label) not in TERMINAL_RUN and run_id in by_id:
                for other in ahead_of(run_id, by_id.values()):
                    blockers.setdefault(other["dag_run_id"], other)
        for rid, other in blockers.items():
            if rid not in own_labels and rid not in announced_ahead:
                announced_ahead.add(rid)
                tis = airflow.task_instances(rid, dag_id) if other.get("state") == "running" else None
                emit(f"NOTE: {dag_id} run {describe_ahead(other, tis, total, now, own_labels)} is ahead of "
                     f"the runs awaited here and runs first (one run at a time)")
        if all(states.get(label) in TERMINAL_RUN for label in runs):
            return states
        if time.monotonic() - last_print >= heartbeat:
            for line in heartbeat_lines(airflow, runs, states, by_id, tis_of, total, median, count, now, dag_id):
                emit(line)
        if time.monotonic() > deadline:
            raise TimeoutError(f"runs not finished after {timeout:.0f}s: {states}")
        time.sleep(poll)
