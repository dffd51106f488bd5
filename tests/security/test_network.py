"""Port scans and SeaweedFS's internal ports: nothing beyond loopback, nothing unsigned (issue 14, items 1 and 5).

Each refusal has a control beside it that the same probe succeeds once the protection is absent
(a socket bound to every interface, Spark's default bind address, a caller holding the stack's
certificate), so a scan that sees nothing or a probe that cannot connect at all would fail.
"""
from __future__ import annotations

import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from security_support import connect_refused

from jobs import contract
from scripts.devstack import health, processes
from scripts.devstack.env import JOBS_VENV, REPO

LOOPBACK = {"127.0.0.1", "::1"}


def stack_sockets(stack) -> set[tuple[str, str, int]]:
    """(service, address, port) of every TCP listener of the stack and of its UDP ports.

    UDP sockets count on the ports the stack declares (statsd_exporter's StatsD port): the send-only
    sockets of Airflow's StatsD client, which the kernel binds to 0.0.0.0 on their first sendto and
    nothing ever reads, are clients, not listeners.
    """
    declared, found = set(stack.listening_ports.values()), set()
    for pid_file in (stack.home / "run").glob("*.pid"):
        members = processes.session_members(int(pid_file.read_text().split()[0]))
        tcp = processes.listening_sockets(members)
        udp = {s for s in processes.listening_sockets(members, udp=True) - tcp if s[2] in declared}
        found |= {(pid_file.stem, address, port) for _, address, port in tcp | udp}
    return found


def _scan_until_every_port_is_seen(stack, timeout: float = 30) -> set[tuple[str, str, int]]:
    """The union of scans until each of the stack's ports has been seen once.

    UDP counts (statsd_exporter's StatsD port is one). /proc/net/tcp is not one atomic snapshot: a
    socket can be left out of a read while the table changes under it, so one scan may miss a port
    that is open. A port that never shows within the timeout is missing for real.
    """
    expected, seen = stack.listening_ports, set()
    deadline = time.monotonic() + timeout
    while True:
        seen |= stack_sockets(stack)
        missing = {name: port for name, port in expected.items() if port not in {p for _, _, p in seen}}
        if not missing or time.monotonic() > deadline:
            assert missing == {}, f"ports of the stack that no service of it listens on: {missing}"
            return seen
        time.sleep(0.5)


def test_every_socket_of_the_stack_is_on_loopback_and_the_lan_address_refuses(stack, lan_address):
    seen = _scan_until_every_port_is_seen(stack)
    assert {address for _, address, _ in seen} <= LOOPBACK, sorted(seen)
    open_on_lan = sorted((name, port) for name, _, port in seen if not connect_refused(lan_address, port))
    assert open_on_lan == [], open_on_lan
    # Control: a socket on every interface is reachable at that address, so the probe can connect.
    with socket.create_server(("0.0.0.0", 0)) as control:
        assert not connect_refused(lan_address, control.getsockname()[1])


SPARK_PROBE = """
import os, sys, time
from pyspark.sql import SparkSession
spark = SparkSession.builder.master("local[1]").appName("security-scan").getOrCreate()
assert spark.sparkContext.parallelize(range(10)).count() == 10
open(sys.argv[1], "w").close()
deadline = time.monotonic() + 300
while not os.path.exists(sys.argv[2]) and time.monotonic() < deadline:
    time.sleep(0.2)
spark.stop()
"""


def _spark(stack, tmp: Path, conf: dict[str, str]) -> tuple[subprocess.Popen, Path, Path]:
    script, ready, release = tmp / "probe.py", tmp / "ready", tmp / "release"
    script.write_text(SPARK_PROBE)
    argv = [str(JOBS_VENV / "bin" / "spark-submit"), "--master", "local[1]", "--driver-memory", "512m"]
    for key, value in conf.items():
        argv += ["--conf", f"{key}={value}"]
    env = {**stack.proc_env, **stack.env, "PYSPARK_PYTHON": str(JOBS_VENV / "bin" / "python")}
    log = open(tmp / "spark.log", "wb")
    proc = subprocess.Popen([*argv, str(script), str(ready), str(release)], cwd=REPO, env=env,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return proc, ready, release


def _listening_when_ready(proc, ready: Path, log: Path) -> set[tuple[str, int]]:
    deadline = time.monotonic() + 240
    while not ready.exists():  # the driver wrote it after its first job: every server socket is open
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "the Spark probe never got going:\n" + log.read_text()[-3000:]
        time.sleep(0.2)
    return {(a, p) for _, a, p in processes.listening_sockets(processes.session_members(proc.pid))}


def test_a_spark_stage_run_while_the_stack_is_up_listens_on_loopback_only(stack, lan_address, tmp_path):
    """The settings StageSubmitOperator gives a local master, and Spark's defaults as the control."""
    runs = {}
    for name, conf in (("stage", contract.spark_stage_conf("local[1]")),
                       ("spark defaults", {"spark.ui.port": "0"})):
        (tmp_path / name).mkdir()
        runs[name] = _spark(stack, tmp_path / name, conf)
    try:
        seen = {name: _listening_when_ready(proc, ready, tmp_path / name / "spark.log")
                for name, (proc, ready, _) in runs.items()}
        stage = seen["stage"]
        assert len(stage) >= 2, stage  # the driver's RPC endpoint and its block manager at least
        assert {a for a, _ in stage} <= LOOPBACK, sorted(stage)
        assert [p for _, p in stage if not connect_refused(lan_address, p)] == []
        # Control: Spark's own defaults (UI on, driver on the host's address) are reachable from the LAN.
        leaked = [p for a, p in seen["spark defaults"] if a not in LOOPBACK]
        assert leaked and not all(connect_refused(lan_address, p) for p in leaked), sorted(seen["spark defaults"])
    finally:
        for _, _, release in runs.values():
            release.touch()
        for proc, _, _ in runs.values():
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# ----------------------------------------------------------------------------------------- SeaweedFS

def _status(method: str, url: str, data: bytes | None = None, context: ssl.SSLContext | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method), timeout=10,
                                    context=context) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def test_s3_refuses_anonymous_put_and_get_and_takes_signed_ones(stack):
    endpoint, bucket = stack.env["MLFLOW_S3_ENDPOINT_URL"], stack.env["S3_BUCKET"]
    key = f"security/{uuid.uuid4().hex}.txt"
    assert _status("PUT", f"{endpoint}/{bucket}/{key}", b"anonymous") == 403
    client = health.s3_client(stack.env)
    client.put_object(Bucket=bucket, Key=key, Body=b"signed")  # control: the identity of .env writes
    assert _status("GET", f"{endpoint}/{bucket}/{key}") == 403
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == b"signed"


def test_filer_and_volume_http_refuse_unsigned_writes_and_reads(stack):
    """The JWT keys of security.toml: S3's identities cannot be bypassed through the internal ports."""
    bucket, key = stack.env["S3_BUCKET"], f"internal-{uuid.uuid4().hex}.txt"
    health.s3_client(stack.env).put_object(Bucket=bucket, Key=key, Body=b"signed")
    filer = f"http://127.0.0.1:{stack.env['SEAWEEDFS_FILER_PORT']}"
    volume = f"http://127.0.0.1:{stack.env['SEAWEEDFS_VOLUME_PORT']}"
    attempts = [("PUT", f"{filer}/buckets/{bucket}/planted.txt", b"x"),
                ("GET", f"{filer}/buckets/{bucket}/{key}", None),
                ("DELETE", f"{filer}/buckets/{bucket}/{key}", None), ("POST", f"{volume}/1,01637037d6", b"x"),
                ("GET", f"{volume}/1,01", None)]
    got = {(method, url): _status(method, url, data) for method, url, data in attempts}
    assert set(got.values()) == {401}, got
    assert health.s3_client(stack.env).get_object(Bucket=bucket, Key=key)["Body"].read() == b"signed"


def _tls(stack, with_cert: bool) -> ssl.SSLContext:
    tls = stack.home / "seaweedfs" / "tls"
    ctx = ssl.create_default_context(cafile=str(tls / "ca.crt"))
    if with_cert:  # what only weed itself holds: the stack's certificate, under the 0700 home
        ctx.load_cert_chain(str(tls / "node.crt"), str(tls / "node.key"))
    return ctx


def test_the_master_hands_no_write_token_to_a_caller_without_the_stacks_certificate(stack):
    """/dir/assign answers a file id and, in its Authorization header, a volume write JWT: mutual TLS only."""
    import json

    master = f"127.0.0.1:{stack.env['SEAWEEDFS_MASTER_PORT']}"
    assert _status("GET", f"http://{master}/dir/assign") == 400  # Go's answer to plain HTTP on a TLS port
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)) as refused:
        _status("GET", f"https://{master}/dir/assign", context=_tls(stack, with_cert=False))
    assert "CERTIFICATE_REQUIRED" in str(refused.value) or "certificate required" in str(refused.value), refused.value
    # Control: with the stack's certificate the master assigns, and its token writes to the volume,
    # which is what any local process could do before the master wanted a client certificate.
    with urllib.request.urlopen(f"https://{master}/dir/assign", timeout=10, context=_tls(stack, True)) as resp:
        token, assigned = resp.headers["Authorization"], json.loads(resp.read())
    volume = f"http://{assigned['url']}/{assigned['fid']}"
    assert _status("POST", volume, b"planted") == 401  # the volume still wants the token
    planted = urllib.request.Request(volume, data=b"planted", method="POST", headers={"Authorization": token})
    with urllib.request.urlopen(planted, timeout=10) as resp:
        assert resp.status == 201


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # + empty SETTINGS


def _grpc_answer(port: int, ctx: ssl.SSLContext | None) -> str:
    """What a gRPC port says to an HTTP/2 client: 'settings' (it talks), or why it would not."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1") if ctx else raw
        try:
            sock.sendall(H2_PREFACE)
            frame = sock.recv(9)
        except (ssl.SSLError, OSError) as err:
            return f"refused: {err}"
        finally:
            sock.close()
    return "settings" if len(frame) == 9 and frame[3] == 0x04 else f"refused: {frame!r}"


def test_grpc_ports_refuse_a_client_without_the_stacks_certificate(stack):
    ports = {name: int(stack.env[f"SEAWEEDFS_{name}_GRPC_PORT"]) for name in ("MASTER", "VOLUME", "FILER", "S3")}
    ports["ADMIN"] = int(stack.env["SEAWEEDFS_ADMIN_PORT"]) + 10000
    for name, port in ports.items():
        for ctx in (None, _tls_no_cert := _tls(stack, with_cert=False)):
            answer = _grpc_answer(port, ctx)
            assert answer.startswith("refused"), (name, port, "TLS" if ctx is _tls_no_cert else "plaintext", answer)
        # Control: the same probe with the stack's certificate gets the server's SETTINGS frame.
        assert _grpc_answer(port, _tls(stack, with_cert=True)) == "settings", (name, port)
