"""A real embedded stack on free ports in a temporary LAKEHOUSE_HOME, for test sessions and the benchmark.

Used by tests/stack (with a probe DAG), tests/e2e and tests/faults (with the project's DAGs) and
bench/run.py (with an empty DAG folder). The stack is driven through the CLI exactly as a developer
does; `running_stack` always runs `down`, and keeps the state folder (with logs) only when
something failed.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import socket
import subprocess
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from scripts.devstack.dotenv import read_env_file
from scripts.devstack.env import GRPC_OFFSET, JOBS_VENV, LOOPBACK, REPO

SCRIPTS = REPO / "scripts"
JOBS_PYTHON = JOBS_VENV / "bin" / "python"

PORT_VARS = [
    "SEAWEEDFS_S3_PORT", "SEAWEEDFS_MASTER_PORT", "SEAWEEDFS_VOLUME_PORT", "SEAWEEDFS_FILER_PORT",
    "SEAWEEDFS_S3_GRPC_PORT", "SEAWEEDFS_MASTER_GRPC_PORT", "SEAWEEDFS_VOLUME_GRPC_PORT",
    "SEAWEEDFS_FILER_GRPC_PORT", "MLFLOW_PORT", "AIRFLOW_API_PORT", "ALERT_RECEIVER_PORT",
    "HIVE_METASTORE_PORT", "TRINO_PORT", "PUSHGATEWAY_PORT", "PROMETHEUS_PORT",
    "STATSD_EXPORTER_PORT", "STATSD_PORT", "SPARK_MASTER_PORT", "SPARK_MASTER_WEBUI_PORT",
    "POSTGRES_PORT", "REDIS_PORT",
]
# Ports of services that run only in some configurations (variable -> service).
OPTIONAL_SERVICE_PORTS = {"HIVE_METASTORE_PORT": "hive-metastore", "TRINO_PORT": "trino",
                          "PUSHGATEWAY_PORT": "pushgateway", "PROMETHEUS_PORT": "prometheus",
                          "STATSD_EXPORTER_PORT": "statsd-exporter", "STATSD_PORT": "statsd-exporter",
                          "SPARK_MASTER_PORT": "spark", "SPARK_MASTER_WEBUI_PORT": "spark",
                          "POSTGRES_PORT": "postgres", "REDIS_PORT": "redis"}


def free_ports(n: int) -> list[int]:
    """Distinct ports free right now (all sockets held open together so none repeats)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind((LOOPBACK, 0))
        return [s.getsockname()[1] for s in socks]


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def admin_port(taken: set[int]) -> int:
    """SeaweedFS's admin port: its gRPC twin (port + GRPC_OFFSET) must be free as well."""
    for _ in range(500):
        grpc = free_ports(1)[0]
        port = grpc - GRPC_OFFSET
        if port > 1024 and not {port, grpc} & taken and _is_free(port):
            return port
    raise RuntimeError("no free port pair for the SeaweedFS admin server")


@dataclass
class Stack:
    proc_env: dict[str, str]          # environment for stack.py subprocesses
    env: dict[str, str]               # what the stack resolved (`stack.py env`)
    ports: dict[str, int]             # the port variables given to the stack
    up_output: str
    home: Path
    probe_keys: tuple[str, ...] = ()   # what the probe DAG's task reports from its environment

    @property
    def started_services(self) -> list[str]:
        """The services `up` brought up healthy, in start order (its `<name>: ... (healthy, N s)` lines)."""
        return [line.split(":")[0] for line in self.up_output.splitlines() if "(healthy," in line]

    @property
    def listening_ports(self) -> dict[str, int]:
        """Every port the stack opens, including the admin gRPC port derived from the admin one.

        The metastore's and Trino's only when `up` started them: the catalog choice and the machine
        (a Java 24+ JDK for Trino) decide that, not the test.
        """
        started = ("", *self.started_services)
        ports = {k: v for k, v in self.ports.items() if OPTIONAL_SERVICE_PORTS.get(k, "") in started}
        return {**ports, f"SEAWEEDFS_ADMIN_PORT+{GRPC_OFFSET}": self.ports["SEAWEEDFS_ADMIN_PORT"] + GRPC_OFFSET}

    def cli(self, *args: str, timeout: float = 300, env_overrides: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess:
        return subprocess.run([str(JOBS_PYTHON), str(SCRIPTS / "stack.py"), *args],
                              env={**self.proc_env, **(env_overrides or {})},
                              capture_output=True, text=True, timeout=timeout, cwd=REPO)


def _hermetic_env(settings: dict[str, str]) -> dict[str, str]:
    """The caller's environment without project variables (an outer `stack.py run`, other fixtures)."""
    project_keys = set(read_env_file(REPO / ".env.example"))
    project_keys |= {"AIRFLOW_HOME", "SPARK_SUBMIT_BINARY", "PYSPARK_PYTHON"}
    env = {k: v for k, v in os.environ.items()
           if k not in project_keys and not k.startswith(("LAKEHOUSE_", "AIRFLOW__", "AIRFLOW_CONN_", "MLFLOW_"))}
    env.update(settings)
    return env


def parse_exports(text: str) -> dict[str, str]:
    result = {}
    for line in text.splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            result[key] = shlex.split(value)[0] if value else ""
    return result


@contextlib.contextmanager
def running_stack(root: Path, settings: dict[str, str], keep_on_failure=lambda: False):
    """Bring a stack up under ``root`` on free ports; always bring it down again."""
    home = root / "home"
    ports = dict(zip(PORT_VARS, free_ports(len(PORT_VARS)), strict=True))
    ports["SEAWEEDFS_ADMIN_PORT"] = admin_port(set(ports.values()))
    full = {"LAKEHOUSE_HOME": str(home), "LAKEHOUSE_ENV_FILE": str(root / ".env"),
            "LAKEHOUSE_START_TIMEOUT": "150", **settings, **{k: str(v) for k, v in ports.items()}}
    proc_env = _hermetic_env(full)
    st = Stack(proc_env=proc_env, env={}, ports=ports, up_output="", home=home)
    failed = True
    try:
        up = st.cli("up")
        assert up.returncode == 0, f"stack up failed:\n{up.stdout}\n{up.stderr}"
        st.up_output = up.stdout
        exported = st.cli("env")
        assert exported.returncode == 0, exported.stderr
        st.env = parse_exports(exported.stdout)
        yield st
        failed = False
    finally:
        down = st.cli("down", timeout=120)
        if down.returncode != 0:
            print(f"stack down failed:\n{down.stdout}\n{down.stderr}", file=sys.stderr)
        if down.returncode == 0 and not failed and not keep_on_failure():
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"stack state and logs kept in {root}", file=sys.stderr)
