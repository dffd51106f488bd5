"""After the pipeline's runs, the embedded Trino reads every Iceberg table as pyiceberg does.

Both read hive_prod (the Hive metastore, tables on SeaweedFS) written by the Spark stages: the
same rows per trade date and the same current snapshot, table by table. Skips, with the reason,
where the stack cannot run Trino (no Java 24+, `make deps` not run, TRINO=off).
"""
from __future__ import annotations

from collections import Counter

import pytest

from jobs import contract
from jobs.lakehouse.settings import Settings
from scripts.devstack.env import LOOPBACK
from scripts.devstack.processes import read_pid
from scripts.devstack.trino import TRINO_USER, trino_on, trino_problem


def test_trino_reads_every_table_like_pyiceberg(pipeline):
    import trino

    env = pipeline.stack.env
    if not trino_on(env):
        pytest.skip(f"Trino unavailable: {trino_problem(env) or 'TRINO=off'}")
    assert read_pid(env, "trino") is not None, "the stack was to run Trino"
    settings = Settings.from_env()
    catalog = settings.pyiceberg_catalog()
    cursor = trino.dbapi.connect(host=LOOPBACK, port=int(env["TRINO_PORT"]), user=TRINO_USER,
                                 catalog=settings.catalog, schema=settings.namespace).cursor()
    # Made on the first change only: a lakehouse whose vendor never changed its columns has none.
    maybe_empty = (contract.QUARANTINE, contract.QUARANTINE_FILES, contract.SCHEMA_EVENTS)
    for name in contract.ALL_TABLES:
        if name == contract.SCHEMA_EVENTS and not catalog.table_exists(f"{settings.namespace}.{name}"):
            continue
        table = catalog.load_table(f"{settings.namespace}.{name}")
        snapshot = table.current_snapshot()
        assert snapshot is not None, f"{name} has no snapshot"
        if "trade_date" in {f.name for f in table.schema().fields}:
            dates = table.scan(selected_fields=("trade_date",)).to_arrow().column("trade_date").to_pylist()
            expected = dict(Counter(dates))
            cursor.execute(f"SELECT trade_date, count(*) FROM {name} GROUP BY trade_date")
        else:
            expected = {None: table.scan().to_arrow().num_rows}
            cursor.execute(f"SELECT NULL, count(*) FROM {name}")
        assert dict(cursor.fetchall()) == expected, f"{name}: Trino's rows per date differ from pyiceberg's"
        assert sum(expected.values()) > 0 or name in maybe_empty, name
        cursor.execute(f'SELECT snapshot_id FROM "{name}$snapshots" ORDER BY committed_at DESC LIMIT 1')
        assert cursor.fetchall() == [[snapshot.snapshot_id]], f"{name}: Trino's current snapshot differs"
