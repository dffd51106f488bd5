"""contract.is_on: the one on/off parser behind contract.switch, SEAWEEDFS_INTERNAL_AUTH and MLFLOW_AUTH."""
from __future__ import annotations

import pytest

from jobs import contract
from scripts.devstack import cli
from scripts.devstack.env import mlflow_auth_on, seaweedfs_internal_auth_on


@pytest.mark.parametrize("value", ["on", "ON", " yes ", "1", "True"])
def test_on_words_are_on_whatever_the_default(value):
    assert contract.is_on(value, default=False) and contract.is_on(value, default=True)


@pytest.mark.parametrize("value", ["off", "Off", " no", "0", "FALSE"])
def test_off_words_are_off_whatever_the_default(value):
    assert not contract.is_on(value, default=True) and not contract.is_on(value, default=False)


@pytest.mark.parametrize("value", [None, "", "   ", "maybe", "enabled"])
def test_anything_else_is_the_default(value):
    assert contract.is_on(value, default=True) and not contract.is_on(value, default=False)


def test_the_stack_switches_keep_their_defaults():
    # SeaweedFS's internal auth: on unless switched off; MLflow's login: off unless switched on.
    assert seaweedfs_internal_auth_on({}) and seaweedfs_internal_auth_on({"SEAWEEDFS_INTERNAL_AUTH": "maybe"})
    assert not seaweedfs_internal_auth_on({"SEAWEEDFS_INTERNAL_AUTH": "No"})
    assert not mlflow_auth_on({}) and not mlflow_auth_on({contract.MLFLOW_AUTH_SWITCH: "maybe"})
    assert mlflow_auth_on({contract.MLFLOW_AUTH_SWITCH: " On "})
    env = {"SEAWEEDFS_FILER_PORT": "8888"}
    assert "closed" in cli._filer_line(env) and "8888" in cli._filer_line({**env, "SEAWEEDFS_INTERNAL_AUTH": "0"})


def test_switch_reads_the_process_environment(monkeypatch):
    monkeypatch.delenv("LAKEHOUSE_TRACKING", raising=False)
    assert contract.switch("LAKEHOUSE_TRACKING")
    monkeypatch.setenv("LAKEHOUSE_TRACKING", "")
    assert contract.switch("LAKEHOUSE_TRACKING")  # blank counts as unset
    monkeypatch.setenv("LAKEHOUSE_TRACKING", "false")
    assert not contract.switch("LAKEHOUSE_TRACKING")
    assert not contract.switch("SOME_UNSET_SWITCH_OF_THIS_TEST", default="off")
