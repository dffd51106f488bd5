"""A running stage opens no port beyond the loopback interface (issue 14, "loopback means loopback").

raw_to_bronze runs under spark-submit with the settings StageSubmitOperator gives a local master
(``contract.spark_stage_conf``): the Spark UI off, the driver and block manager bound to 127.0.0.1.
While it runs, every listening TCP socket of its process group (Python driver, py4j gateway, JVM)
is collected from /proc. The second test removes the driver's bind setting and must see the
driver listen beyond loopback, so the scan itself is shown to catch a leak.
"""
from __future__ import annotations

import time

from faults_support import start_stage

from scripts.devstack import processes

LOOPBACK = {"127.0.0.1", "::1"}


def listening_while_running(stack, trade_date, log, **kwargs) -> tuple[int, set[tuple[str, int]]]:
    proc = start_stage(stack, "raw_to_bronze", trade_date, log, **kwargs)
    seen: set[tuple[str, int]] = set()
    try:
        while proc.poll() is None:  # sampling the sockets for as long as the stage lives
            seen |= {(address, port) for _, address, port in
                     processes.listening_sockets(processes.session_members(proc.pid))}
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    return proc.returncode, seen


def test_a_running_stage_listens_on_loopback_only(stack, raw_small, tmp_path):
    code, seen = listening_while_running(stack, raw_small, tmp_path / "stage.log")
    assert code == 0, (tmp_path / "stage.log").read_text()[-3000:]
    assert len(seen) >= 2, seen  # at least the driver's RPC endpoint and its block manager
    assert {address for address, _ in seen} <= LOOPBACK, sorted(seen)


def test_the_scan_sees_a_driver_bound_beyond_loopback(stack, raw_small, tmp_path):
    code, seen = listening_while_running(stack, raw_small, tmp_path / "stage.log",
                                         conf={"spark.driver.bindAddress": "0.0.0.0"})
    assert code == 0, (tmp_path / "stage.log").read_text()[-3000:]
    assert {address for address, _ in seen} - LOOPBACK, sorted(seen)
