"""The stack's processes: pid files, liveness, sessions, start, stop and memory.

Every service runs in a session of its own (`start_new_session`), so "the service" is the whole
session: its forked workers, task runners and JVMs are stopped and measured with it.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from scripts.devstack.env import LOOPBACK, StackError, process_env

STOP_GRACE_SECONDS = 20.0


@dataclass
class Service:
    name: str
    group: str
    argv: list[str]
    cwd: Path
    ports: list[tuple[str, int]] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)


def dirs(env: dict) -> dict[str, Path]:
    """The folders under LAKEHOUSE_HOME the stack writes to."""
    home = Path(env["LAKEHOUSE_HOME"])
    return {"home": home, "run": home / "run", "logs": home / "logs", "seaweedfs": home / "seaweedfs",
            "mlflow": home / "mlflow", "airflow": Path(env["AIRFLOW_HOME"]), "iceberg": home / "iceberg",
            "raw": home / "raw", "hive-metastore": home / "hive-metastore", "trino": home / "trino",
            "pushgateway": home / "pushgateway", "prometheus": home / "prometheus",
            "statsd-exporter": home / "statsd-exporter", "spark": home / "spark",
            "postgres": home / "postgres", "redis": home / "redis"}


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state is [0], pgrp [2], session [3])."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rfind(")") + 2:].split()


_BOOT_TIME: float | None = None


def _start_epoch(fields: list[str]) -> float:
    global _BOOT_TIME
    if _BOOT_TIME is None:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                _BOOT_TIME = float(line.split()[1])
    return (_BOOT_TIME or 0.0) + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of a session: the service and everything it spawned."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields and fields[0] != "Z" and int(fields[3]) == sid:
                members.append(int(entry))
    return members


def _listen_table(udp: bool = False) -> dict[str, tuple[str, int]]:
    """socket inode -> (address, port) of every listening TCP socket, from /proc/net/tcp{,6}; with
    ``udp`` also every bound, unconnected UDP socket (/proc/net/udp{,6}), e.g. statsd_exporter's."""
    import ipaddress

    result = {}
    tables = [("/proc/net/tcp", 4, "0A"), ("/proc/net/tcp6", 16, "0A")]  # 0A: LISTEN
    if udp:
        tables += [("/proc/net/udp", 4, "07"), ("/proc/net/udp6", 16, "07")]  # 07: bound, no peer
    for table, width, state in tables:
        with suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] != state:
                    continue
                hex_address, hex_port = fields[1].split(":")
                raw = bytes.fromhex(hex_address)  # the kernel prints each 32-bit word in host (little-endian) order
                packed = b"".join(raw[i:i + 4][::-1] for i in range(0, width, 4))
                address = ipaddress.ip_address(packed)
                if getattr(address, "ipv4_mapped", None):
                    address = address.ipv4_mapped
                result[fields[9]] = (str(address), int(hex_port, 16))
    return result


def listening_sockets(pids: list[int], udp: bool = False) -> set[tuple[int, str, int]]:
    """(pid, address, port) of every TCP socket those processes listen on (Linux /proc), and with
    ``udp`` of every UDP socket they have bound."""
    table, found = _listen_table(udp), set()
    for pid in pids:
        with suppress(OSError):
            for fd in os.scandir(f"/proc/{pid}/fd"):
                with suppress(OSError):
                    target = os.readlink(fd.path)
                    if target.startswith("socket:[") and (entry := table.get(target[8:-1])):
                        found.add((pid, *entry))
    return found


def _pid_file(env: dict, name: str) -> tuple[int | None, bool]:
    """(pid recorded for a service, whether that process is still ours and alive)."""
    path = dirs(env)["run"] / f"{name}.pid"
    try:
        pid = int(path.read_text().split()[0])
        written = path.stat().st_mtime
    except (FileNotFoundError, ValueError, IndexError):
        return None, False
    fields = _stat(pid)
    # A pid reused by an unrelated process started after we wrote the file; ours started before.
    alive = fields is not None and fields[0] != "Z" and _start_epoch(fields) <= written + 2
    return pid, alive


def read_pid(env: dict, name: str) -> int | None:
    """The pid of a running service, or None (no side effects; see clear_stale)."""
    pid, alive = _pid_file(env, name)
    return pid if alive else None


def clear_stale(env: dict, name: str) -> None:
    """Remove a dead service's pid file and end what it left running (e.g. after `kill -9`).

    Linux never hands out a pid still used as a session id, so the members of a dead leader's
    session are leftovers of that service (LocalExecutor workers, task runners, JVMs).
    """
    pid, alive = _pid_file(env, name)
    if pid is None or alive:
        return
    if _stat(pid) is None or (_stat(pid) or ["Z"])[0] == "Z":
        orphans = session_members(pid)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for member in orphans:
                with suppress(ProcessLookupError):
                    os.kill(member, sig)
            deadline = time.monotonic() + 5
            while (orphans := session_members(pid)) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not orphans:
                break
    (dirs(env)["run"] / f"{name}.pid").unlink(missing_ok=True)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def tail(path: Path, lines: int = 30) -> str:
    try:
        content = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(content[-lines:])


def log_path(env: dict, name: str) -> Path:
    return dirs(env)["logs"] / f"{name}.log"


def failure(env: dict, names: list[str], message: str) -> StackError:
    """A StackError that carries the end of each named service's log."""
    parts = [message]
    for name in names:
        parts.append(f"--- last 30 lines of {log_path(env, name)} ---\n{tail(log_path(env, name))}")
    parts.append("Stop what was started with: scripts/stack.py down")
    return StackError("\n".join(parts))


def start_service(env: dict, svc: Service) -> int:
    for var, port in svc.ports:
        if port and not _port_free(port):
            raise StackError(f"{svc.name}: port {port} ({var}) is already in use on {LOOPBACK}; "
                             f"stop that process or set {var} in {env['LAKEHOUSE_ENV_FILE']}")
    d = dirs(env)
    clear_stale(env, svc.name)
    svc.cwd.mkdir(parents=True, exist_ok=True)
    with open(log_path(env, svc.name), "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {shlex.join(svc.argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(svc.argv, cwd=svc.cwd, env={**process_env(env), **svc.extra_env},
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    (d["run"] / f"{svc.name}.pid").write_text(f"{proc.pid}\n")
    return proc.pid


def stop_services(env: dict, names: list[str], grace: float = STOP_GRACE_SECONDS) -> list[str]:
    """SIGTERM each service's process group, wait for its whole session to exit, SIGKILL late ones."""
    run_dir = dirs(env)["run"]
    pids = {}
    for name in names:
        pid = read_pid(env, name)
        if pid is None:
            clear_stale(env, name)
            continue
        pids[name] = pid
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    stopped = []
    deadline = time.monotonic() + grace
    killed = False
    while pids:
        for name, pid in list(pids.items()):
            if not session_members(pid):
                (run_dir / f"{name}.pid").unlink(missing_ok=True)
                stopped.append(name)
                del pids[name]
        if not pids:
            break
        if time.monotonic() > deadline:
            if killed:
                raise StackError(f"could not stop {', '.join(pids)} (pids {list(pids.values())})")
            for name, pid in pids.items():
                print(f"{name}: no exit {grace:.0f}s after SIGTERM, sending SIGKILL", file=sys.stderr)
                for member in session_members(pid):
                    try:
                        os.kill(member, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            killed = True
            deadline = time.monotonic() + 10
        time.sleep(0.2)
    return stopped


def memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, PSS) in MiB of a service's whole session; PSS does not double-count forked workers."""
    rss, pss = smaps_mb(pid, "Rss", "Pss")
    return rss, pss


def smaps_mb(pid: int, *fields: str) -> tuple[float, ...]:
    """Sums of /proc/<pid>/smaps_rollup ``fields`` (Rss, Pss, Pss_Anon, ...) in MiB over the service's session.

    Pss_Anon is the heap a leak grows; Pss also holds file pages (a binary's or jar's code, read
    in as it is first used), which the kernel can drop and which only grow until warm.
    """
    totals = dict.fromkeys(fields, 0)
    for member in session_members(pid):
        try:
            for line in Path(f"/proc/{member}/smaps_rollup").read_text().splitlines():
                name, _, value = line.partition(":")
                if name in totals:
                    totals[name] += int(value.split()[0])
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return tuple(totals[f] / 1024 for f in fields)
