"""Helpers of tests/security (a module of its own: every test folder has a conftest.py)."""
from __future__ import annotations

import socket

# The one DAG of the security stack (conftest.py), run and cleared by each role in test_roles.py.
ROLES_DAG = "roles_probe"
ROLES_LOG_LINE = "roles probe ran"
ROLES_DAG_SOURCE = f"""
import pendulum
from airflow.sdk import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False,
     is_paused_upon_creation=False, tags=["security-test"])
def {ROLES_DAG}():
    @task
    def say():
        print("{ROLES_LOG_LINE}")

    say()


{ROLES_DAG}()
"""


def connect_refused(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(3)
        return s.connect_ex((address, port)) != 0
