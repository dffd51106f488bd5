"""A local stand-in for the team's Slack webhook: records every alert the pipeline would have sent.

The embedded stack runs it as the service `alert-receiver` when ALERT_WEBHOOK_URL is unset, and
points ALERT_WEBHOOK_URL of the Airflow processes at it, so a newcomer sees what paging looks like
(`make demo` lists what arrived). Each POST becomes one JSON line in the output file:
``{"received_at": ISO-8601 UTC, "path": "/alerts", "payload": <the JSON body, or its text>}``.

    python scripts/devstack/alert_receiver.py --port 8099 --out var/stack/alerts/alerts.jsonl

Standard library only (it runs from any Python); binds 127.0.0.1. GET /health answers "OK".
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

LOOPBACK = "127.0.0.1"
MAX_BODY = 1 << 20  # an alert is a few hundred bytes; refuse anything absurd


def read_alerts(path: str | Path, since: dt.datetime | None = None) -> list[dict]:
    """The recorded alerts (oldest first), optionally only those received at or after ``since`` (aware)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    alerts = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by a crash
        at = dt.datetime.fromisoformat(record.get("received_at", "1970-01-01T00:00:00+00:00"))
        if since is None or at >= since:
            alerts.append(record)
    return alerts


def make_server(port: int, out: Path) -> ThreadingHTTPServer:
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: bytes, kind: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802 - http.server's naming
            if self.path.rstrip("/") in ("", "/health"):
                self._answer(200, b"OK")
            else:
                self._answer(404, b"POST alerts here; GET /health")

        def do_POST(self):  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._answer(413, b"too large")
                return
            raw = self.rfile.read(length).decode("utf-8", errors="replace")
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = raw
            record = {"received_at": dt.datetime.now(dt.UTC).isoformat(), "path": self.path,
                      "payload": payload}
            with lock, out.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            title = payload.get("title") if isinstance(payload, dict) else None
            print(f"alert received: {title or raw[:120]}", file=sys.stderr, flush=True)
            self._answer(200, b'{"ok": true}', "application/json")

        def log_message(self, format, *args):  # noqa: A002 - keep the service log to the alerts
            pass

    return ThreadingHTTPServer((LOOPBACK, port), Handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    server = make_server(args.port, args.out)
    # SIGTERM (`make down`) ends serve_forever from another thread, so the socket closes cleanly.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    print(f"alert receiver on http://{LOOPBACK}:{args.port}/alerts, writing {args.out}", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
