"""One embedded stack for every attempt in tests/security (issue 14, item 8), as a user runs it.

All services (SeaweedFS, the Hive metastore, MLflow with its login on, the alert receiver and
Airflow's four processes) on free 127.0.0.1 ports, started once per session through `stack.py up`
(scripts/devstack/temporary.py) and always taken down. Airflow's DAG folder holds only a one-task
probe DAG (test_roles.py triggers and clears it as each role): the attempts need its api-server
and the plugin, not the pipeline. The stack runs with the demo's umask, so the private-files check
judges what the product creates.
"""
from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest
from security_support import ROLES_DAG, ROLES_DAG_SOURCE

from jobs import contract
from scripts.devstack.temporary import Stack, running_stack


@pytest.fixture(scope="session")
def stack(request) -> Stack:
    root = Path(tempfile.mkdtemp(prefix="lakehouse-security-"))
    (root / "dags").mkdir()
    (root / "dags" / f"{ROLES_DAG}.py").write_text(ROLES_DAG_SOURCE)
    settings = {contract.MLFLOW_AUTH_SWITCH: "on", "LAKEHOUSE_DAGS_FOLDER": str(root / "dags")}
    umask = os.umask(0o077)
    try:
        with running_stack(root, settings, keep_on_failure=lambda: request.session.testsfailed > 0) as st:
            yield st
    finally:
        os.umask(umask)


@pytest.fixture(scope="session")
def lan_address() -> str:
    """The machine's address on its network (the one a neighbour would dial); no packet is sent."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("198.51.100.1", 9))  # TEST-NET-2: routing only picks the outgoing interface
            address = s.getsockname()[0]
        except OSError:
            address = ""
    if not address or address.startswith("127."):
        pytest.skip("this machine has no address beyond loopback to scan")
    return address
