"""A real local Spark session with a real Iceberg catalog (SQLite JDBC) in a temp folder."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
HERE = Path(__file__).resolve().parent
_ENVIRON_BEFORE: dict[str, str] = {}


def pytest_runtest_teardown(item, nextitem):
    """Give later suites (tests/stack, tests/e2e) the environment as it was before these tests.

    The session fixtures below point os.environ at a unit catalog (ICEBERG_CATALOG=unit, a temp
    LAKEHOUSE_HOME); resolve_env rightly prefers os.environ, so a stack started later in the same
    pytest process would otherwise run with the unit catalog instead of hive_prod.
    """
    if _ENVIRON_BEFORE and (nextitem is None or HERE not in Path(str(nextitem.path)).resolve().parents):
        os.environ.clear()
        os.environ.update(_ENVIRON_BEFORE)


@pytest.fixture(scope="session")
def settings(tmp_path_factory):
    from jobs.lakehouse.settings import Settings

    home = tmp_path_factory.mktemp("lakehouse")
    _ENVIRON_BEFORE.update(os.environ)
    os.environ["LAKEHOUSE_HOME"] = str(home)
    for name in ("ICEBERG_CATALOG_URI", "ICEBERG_WAREHOUSE", "RAW_TICKS_PATH", "ICEBERG_CATALOG_TYPE"):
        os.environ.pop(name, None)
    os.environ["ICEBERG_CATALOG"] = "unit"
    os.environ["SPARK_SQL_SHUFFLE_PARTITIONS"] = "2"
    return Settings.from_env()


@pytest.fixture(scope="session")
def spark(settings):
    from jobs.lakehouse.tables import spark_session

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = spark_session("unit-tests", settings, master="local[2]")
    yield session
    session.stop()
