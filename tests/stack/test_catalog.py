"""The embedded catalog choice (LAKEHOUSE_CATALOG): hive_prod on a loopback metastore, or SQLite.

Configuration only, no services: the running metastore is exercised by `make up` and the e2e run.
"""
from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from scripts.devstack.env import catalog_services, resolve_env  # noqa: E402
from scripts.devstack.services import hive_metastore_service, write_hive_site  # noqa: E402


@pytest.fixture(autouse=True)
def _no_catalog_from_the_environment(monkeypatch):
    """resolve_env prefers os.environ; tests/jobs' session sets ICEBERG_CATALOG=unit there."""
    for key in [k for k in os.environ if k.startswith("ICEBERG_") or k == "LAKEHOUSE_CATALOG"]:
        monkeypatch.delenv(key)


def _env(tmp_path, **extra):
    return resolve_env({"LAKEHOUSE_ENV_FILE": str(tmp_path / ".env"), "LAKEHOUSE_HOME": str(tmp_path / "home"),
                        "SEAWEEDFS_S3_PORT": "8444", "HIVE_METASTORE_PORT": "9183", **extra})


def test_hive_catalog_is_hive_prod_on_seaweedfs(tmp_path):
    env = _env(tmp_path, LAKEHOUSE_CATALOG="hive")
    assert (env["ICEBERG_CATALOG"], env["ICEBERG_CATALOG_TYPE"]) == ("hive_prod", "hive")
    assert env["ICEBERG_CATALOG_URI"] == "thrift://127.0.0.1:9183"
    assert env["ICEBERG_WAREHOUSE"] == "s3a://lakehouse/warehouse"
    props = json.loads(env["ICEBERG_CATALOG_PROPERTIES"])
    assert props["io-impl"] == "org.apache.iceberg.aws.s3.S3FileIO"
    assert props["s3.endpoint"] == "http://127.0.0.1:8444" and props["s3.path-style-access"] == "true"
    assert props["s3.access-key-id"] == env["AWS_ACCESS_KEY_ID"]
    assert "hive-metastore" in catalog_services(env)


def test_an_older_env_with_the_jdbc_defaults_follows_lakehouse_catalog(tmp_path):
    env = _env(tmp_path, LAKEHOUSE_CATALOG="hive", ICEBERG_CATALOG="local", ICEBERG_CATALOG_TYPE="jdbc")
    assert (env["ICEBERG_CATALOG"], env["ICEBERG_CATALOG_TYPE"]) == ("hive_prod", "hive")


def test_jdbc_catalog_is_the_lightest_setup(tmp_path):
    env = _env(tmp_path, LAKEHOUSE_CATALOG="jdbc")
    home = tmp_path / "home"
    assert (env["ICEBERG_CATALOG"], env["ICEBERG_CATALOG_TYPE"]) == ("local", "jdbc")
    assert env["ICEBERG_CATALOG_URI"] == f"jdbc:sqlite:{home}/iceberg/catalog.db"
    assert env["ICEBERG_WAREHOUSE"] == f"file://{home}/iceberg/warehouse"
    assert "hive-metastore" not in catalog_services(env)


def test_metastore_binds_loopback_and_keeps_its_keys_private(tmp_path):
    env = _env(tmp_path, LAKEHOUSE_CATALOG="hive")
    site = write_hive_site(env)
    assert stat.S_IMODE(site.stat().st_mode) == 0o600
    text = site.read_text()
    assert "s3a://lakehouse/warehouse" in text and "http://127.0.0.1:8444" in text
    svc = hive_metastore_service(env)
    assert svc.argv[-3:] == ["127.0.0.1", "9183", "--init-txn"]  # first start: no Derby database yet
    assert svc.argv[-4].endswith("LoopbackMetastore.java")
