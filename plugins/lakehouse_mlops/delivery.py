"""When is a trade date's RAW delivery complete? The convention, as pure functions and a listing.

The vendor (or ``jobs/synthetic``) writes one folder per trade date,
``<RAW_TICKS_PATH>/trade_date=YYYY-MM-DD/``, and, after its last data file, an empty completion
marker ``RAW_DELIVERY_MARKER`` (default ``_SUCCESS``, the Hadoop convention) into that folder.
The delivery is complete when the marker is there. For senders that cannot write a marker,
``RAW_DELIVERY_MARKER=none``: complete when the folder holds at least one data file and nothing
in it changed (newest modification time) for ``RAW_DELIVERY_QUIET_SECONDS``.

Hidden and underscore files (``.x.tmp`` uploads, the marker) are never data files, as for
``jobs/lakehouse/raw_files.list_raw_files``. Works on local folders and ``s3://`` / ``s3a://``
(boto3, same endpoint and credential variables as the jobs: ``MLFLOW_S3_ENDPOINT_URL``,
``AWS_*``). No Airflow import here: ``raw_sensor`` wraps it in a deferrable operator.
"""
from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from urllib.parse import urlparse
from zoneinfo import ZoneInfo

from jobs.contract import env
from jobs.trade_calendar import logical_date_for


@dataclass(frozen=True)
class Entry:
    name: str
    size: int
    modified: float  # seconds since the epoch


def is_data_file(name: str) -> bool:
    return not name.startswith((".", "_"))


def delivery_state(entries: list[Entry], marker: str | None, quiet_seconds: float,
                   now: float) -> tuple[bool, str]:
    """(complete?, what was seen) for a folder listing by the rule in the module doc."""
    data = [e for e in entries if is_data_file(e.name)]
    if marker is not None:
        if any(e.name == marker for e in entries):
            return True, f"marker {marker} present with {len(data)} data file(s)"
        return False, f"{len(data)} data file(s), no marker {marker} yet"
    if not data:
        return False, "no data file yet"
    quiet = now - max(e.modified for e in data)
    if quiet >= quiet_seconds:
        return True, f"{len(data)} data file(s), unchanged for {quiet:.0f}s (>= {quiet_seconds:.0f}s)"
    return False, f"{len(data)} data file(s), last change {quiet:.0f}s ago (waiting for {quiet_seconds:.0f}s)"


def list_folder(folder: str) -> list[Entry]:
    """The files directly in ``folder`` (local path, file://, s3:// or s3a://); [] if it does not exist."""
    parsed = urlparse(folder)
    if parsed.scheme in ("s3", "s3a"):
        return _list_s3(parsed.netloc, parsed.path.strip("/") + "/")
    if parsed.scheme == "file":
        folder = parsed.path
    elif parsed.scheme and len(parsed.scheme) > 1:
        raise ValueError(f"unsupported RAW location {folder!r} (local path, s3:// or s3a://)")
    try:
        with os.scandir(folder) as it:
            return [Entry(e.name, (st := e.stat()).st_size, st.st_mtime) for e in it if e.is_file()]
    except FileNotFoundError:
        return []


def _list_s3(bucket: str, prefix: str) -> list[Entry]:
    import boto3  # lazily: only S3 RAW needs it

    client = boto3.client("s3", endpoint_url=env("MLFLOW_S3_ENDPOINT_URL") or None,
                          region_name=env("AWS_DEFAULT_REGION", "us-east-1"))
    entries = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        for obj in page.get("Contents", []):
            name = obj["Key"][len(prefix):]
            if name:
                entries.append(Entry(name, int(obj["Size"]), obj["LastModified"].timestamp()))
    return entries


_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([sm]?)$")


def delivery_deadline(spec: str, trade_date: dt.date, timezone: str, schedule: str,
                      started: dt.datetime) -> tuple[dt.datetime, str]:
    """When to give up waiting (UTC) and how the alert says it, from ``RAW_DELIVERY_TIMEOUT``.

    ``HH:MM``: that local time (``PIPELINE_TIMEZONE``) at or after the scheduled run of the trade
    date (07:00 the morning after it, with the 02:00 default schedule), so a rerun or backfill of a
    date whose RAW never came fails at once. ``N`` or ``Nm`` minutes, ``Ns`` seconds: after the
    wait began (``started``).
    """
    zone = ZoneInfo(timezone)
    text = spec.strip().lower()
    if m := _CLOCK.match(text):
        hour, minute = int(m.group(1)), int(m.group(2))
        if not (0 <= hour < 24 and 0 <= minute < 60):
            raise ValueError(f"RAW_DELIVERY_TIMEOUT has no valid time of day: {spec!r}")
        tick = logical_date_for(trade_date, schedule, timezone)
        due = tick.replace(hour=hour, minute=minute, second=0, microsecond=0)
        if due < tick:
            due += dt.timedelta(days=1)
        return due.astimezone(dt.UTC), f"{due:%H:%M} {timezone}"
    if m := _DURATION.match(text):
        seconds = float(m.group(1)) * (1 if m.group(2) == "s" else 60)
        due = started.astimezone(dt.UTC) + dt.timedelta(seconds=seconds)
        return due, f"{due.astimezone(zone):%H:%M:%S} {timezone} ({spec.strip()} after the wait began)"
    raise ValueError(f"RAW_DELIVERY_TIMEOUT must be a time of day (07:00) or minutes (90, 90m, 45s), got {spec!r}")
