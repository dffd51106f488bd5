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
RETAIN_LAST = 2  # ICEBERG_SNAPSHOT_RETAIN_LAST of the session's stack


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


RETRAIN = """
import datetime as dt, json, sys
from jobs.lakehouse.registry import load_training_frame
from jobs.lakehouse.settings import Settings
from jobs.lakehouse.tables import spark_session
from jobs.ml.modeling import evaluate, time_split, train_classifier

params = json.loads(sys.argv[1])
settings = Settings.from_env()
spark = spark_session("e2e-retrain", settings, master="local[2]")
frame = load_training_frame(spark, settings, int(params["features_snapshot_id"]),
                            dt.date.fromisoformat(params["trade_date"]), int(params["lookback_days"]))
spark.stop()
split = time_split(frame, float(params["holdout_fraction"]))
metrics = evaluate(train_classifier(split.train, json.loads(params["best_params"])), split.holdout)
print(json.dumps({"rows": len(frame), **metrics}))
"""


def assert_champion_retrains_to_its_metrics(client) -> None:
    """Refit the champion from the features snapshot its run logged: the same rows, the same metrics.

    Runs in its own process, as a data scientist's notebook would: its JVM and catalog
    connections end with it.
    """
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import pytest

    champion = client.get_model_version_by_alias("TickPricePredictor", "champion")
    run = client.get_run(champion.run_id)
    out = subprocess.run([sys.executable, "-c", RETRAIN, json.dumps(run.data.params)], env=os.environ.copy(),
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2], timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads(out.stdout.strip().splitlines()[-1])
    assert int(run.data.metrics["rows_in"]) == metrics["rows"]
    for name in ("auc", "accuracy", "f1", "log_loss"):
        assert metrics[name] == pytest.approx(run.data.metrics[name], abs=1e-9), name
