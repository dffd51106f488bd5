"""What the e2e modules share besides fixtures: the dates of the session and a webhook receiver.

A module of its own (not conftest.py): with several conftest.py files in the tree, `from conftest
import ...` resolves to whichever was imported last.
"""
from __future__ import annotations

import datetime as dt

GOOD_DATES = (dt.date(2026, 11, 24), dt.date(2026, 11, 25))
DRIFT_DATE = dt.date(2026, 11, 26)    # a stressed market: volatility, spreads and sizes x3
MISSING_DATE = dt.date(2026, 11, 23)  # a Monday with no RAW delivered
MESSY_DATE = GOOD_DATES[1]            # also gets a messy second vendor delivery (every kind of bad input)
TICKS_PER_DATE = 40_000
# RAW_DELIVERY_TIMEOUT of the session's stack. Not the 07:00 default: whenever the suite runs between
# 02:00 and 07:00 Seoul time, the scheduler makes that night's real run (no RAW here) and, with 07:00,
# it would hold ml_pipeline's one run slot for hours; with 02:05 it fails (and pages) at once.
RAW_DELIVERY_BY = "02:05"


class WebhookReceiver:
    """A real HTTP endpoint on 127.0.0.1 standing in for Slack: records every JSON it is sent."""

    def __init__(self):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.messages: list[dict] = []
        received = self.messages

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
