"""Helpers of tests/security (a module of its own: every test folder has a conftest.py)."""
from __future__ import annotations

import socket


def connect_refused(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(3)
        return s.connect_ex((address, port)) != 0
