"""The stack under test runs a probe DAG of its own, not the project's pipeline."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from stack_support import PROBE_DAG, PROBE_KEYS, Stack, running_stack  # noqa: F401  (re-exported)


@pytest.fixture(scope="session")
def stack(request) -> Stack:
    # Not tmp_path_factory: concurrent pytest sessions prune each other's old basetemp folders.
    root = Path(tempfile.mkdtemp(prefix="lakehouse-stack-"))
    (root / "dags").mkdir()
    (root / "dags" / "stack_probe.py").write_text(PROBE_DAG)
    settings = {"LAKEHOUSE_DAGS_FOLDER": str(root / "dags"), "STACK_PROBE_KEYS": json.dumps(PROBE_KEYS)}
    with running_stack(root, settings, keep_on_failure=lambda: request.session.testsfailed > 0) as st:
        st.probe_keys = tuple(PROBE_KEYS)
        yield st
