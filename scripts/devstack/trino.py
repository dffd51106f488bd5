"""Trino on the embedded stack: its JDK, configuration, process, health and a small REST client.

Trino 476 (var/trino, from requirements/trino/pom.xml by `make deps`) needs Java 24+; the stack's
Spark and metastore stay on Java 17, so Trino has its own TRINO_JAVA_HOME. One coordinator that
also runs the work, on 127.0.0.1 (node.bind-ip), with a small heap, and one catalog, hive_prod:
the Iceberg connector over the stack's Hive metastore and SeaweedFS. The S3 keys reach Trino
through its ${ENV:...} substitution, so no secret is written to its files or its argv.
Standard library only.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

from jobs.contract import is_on
from scripts.devstack.env import LOOPBACK, REPO, TRINO, StackError
from scripts.devstack.processes import Service, dirs

TRINO_HOME = REPO / "var" / "trino"
TRINO_MIN_JAVA = 24
DEFAULT_TRINO_JAVA = Path("/usr/lib/jvm/temurin-25-jdk-amd64")
TRINO_USER = "lakehouse"


def java_major(home: str | Path) -> int | None:
    """The feature release of the JDK at `home` (its `release` file), None when there is none."""
    try:
        text = (Path(home) / "release").read_text()
    except OSError:
        return None
    match = re.search(r'^JAVA_VERSION="(\d+)', text, re.M)
    return int(match.group(1)) if match else None


def trino_java_home(configured: str = "") -> str:
    """TRINO_JAVA_HOME when set, else the Temurin 25 default, else any Java 24+ under /usr/lib/jvm."""
    if configured:
        return configured
    candidates = [DEFAULT_TRINO_JAVA, *sorted(Path("/usr/lib/jvm").glob("*"), reverse=True)]
    for home in candidates:
        if (java_major(home) or 0) >= TRINO_MIN_JAVA and (home / "bin" / "java").exists():
            return str(home)
    return ""


def trino_java_problem(home: str) -> str | None:
    """Why that JDK cannot run Trino, or None."""
    if not home:
        return f"no Java {TRINO_MIN_JAVA}+ JDK found (Trino 476 needs one; set TRINO_JAVA_HOME)"
    if not (Path(home) / "bin" / "java").exists():
        return f"TRINO_JAVA_HOME={home} has no bin/java"
    major = java_major(home)
    if major is None or major < TRINO_MIN_JAVA:
        return f"TRINO_JAVA_HOME={home} is Java {major or '?'}, Trino 476 needs {TRINO_MIN_JAVA}+"
    return None


def trino_problem(env: dict) -> str | None:
    """Why the stack cannot run Trino (JDK, `make deps`, catalog), or None when it can."""
    problem = trino_java_problem(env.get("TRINO_JAVA_HOME", ""))
    if problem:
        return problem
    if not (TRINO_HOME / "server" / "lib").is_dir() or not (TRINO_HOME / "trino-cli.jar").exists():
        return f"Trino is not installed in {TRINO_HOME} (run `make deps`)"
    if env.get("LAKEHOUSE_CATALOG") != "hive":
        return "LAKEHOUSE_CATALOG=jdbc: Trino reads the hive_prod catalog only"
    return None


def trino_switched_off(env: dict) -> bool:
    return not is_on(env.get("TRINO"), True)


def trino_on(env: dict) -> bool:
    """TRINO=off never runs it; on or empty runs it whenever trino_problem finds nothing."""
    return not trino_switched_off(env) and trino_problem(env) is None


def trino_url(env: dict) -> str:
    return f"http://{LOOPBACK}:{env['TRINO_PORT']}"


def _properties(path: Path, values: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))


def hive_prod_properties(env: dict) -> dict[str, str]:
    """The catalog file: the same keys a user puts in their own Trino (README), loopback addresses here."""
    return {
        "connector.name": "iceberg",
        "iceberg.catalog.type": "hive_metastore",
        "hive.metastore.uri": f"thrift://{LOOPBACK}:{env['HIVE_METASTORE_PORT']}",
        "fs.native-s3.enabled": "true",
        "s3.endpoint": env["MLFLOW_S3_ENDPOINT_URL"],
        "s3.path-style-access": "true",
        "s3.region": env.get("AWS_DEFAULT_REGION") or "us-east-1",
        "s3.aws-access-key": "${ENV:AWS_ACCESS_KEY_ID}",
        "s3.aws-secret-key": "${ENV:AWS_SECRET_ACCESS_KEY}",
    }


def write_trino_config(env: dict) -> Path:
    """etc/ under $LAKEHOUSE_HOME/trino: server, logging and the hive_prod catalog (no secrets)."""
    etc = dirs(env)[TRINO] / "etc"
    port = env["TRINO_PORT"]
    memory = env.get("TRINO_QUERY_MAX_MEMORY") or "512MB"
    _properties(etc / "config.properties", {
        "coordinator": "true",
        "node-scheduler.include-coordinator": "true",
        "http-server.http.port": port,
        "discovery.uri": f"http://{LOOPBACK}:{port}",
        "plugin.dir": str(TRINO_HOME / "server" / "plugin"),
        "catalog.config-dir": str(etc / "catalog"),
        "query.max-memory": memory,
        "query.max-memory-per-node": memory,
    })
    _properties(etc / "log.properties", {"io.trino": "INFO"})
    _properties(etc / "catalog" / f"{env['ICEBERG_CATALOG']}.properties", hive_prod_properties(env))
    return etc


def trino_service(env: dict) -> Service:
    """`java ... io.trino.server.TrinoServer` (what Trino's launcher runs), bound to 127.0.0.1."""
    d = dirs(env)[TRINO]
    etc = d / "etc"
    # C1 only (TieredStopAtLevel=1): the embedded tables are small and the start dominates; on 2 busy
    # cores Trino was healthy in 35-40 s with it and in 52-72 s without (C2 compiling the start path).
    argv = [str(Path(env["TRINO_JAVA_HOME"]) / "bin" / "java"), f"-Xmx{env.get('TRINO_HEAP') or '1500m'}",
            "-XX:+UseG1GC", "-XX:+ExitOnOutOfMemoryError", "-XX:ReservedCodeCacheSize=256M",
            "-XX:TieredStopAtLevel=1",
            "-Djdk.attach.allowAttachSelf=true", "-Dnode.environment=lakehouse", "-Dnode.id=embedded",
            f"-Dnode.bind-ip={LOOPBACK}", f"-Dnode.internal-address={LOOPBACK}",
            f"-Dconfig={etc / 'config.properties'}", f"-Dlog.levels-file={etc / 'log.properties'}",
            "-cp", f"{TRINO_HOME / 'server' / 'lib'}/*", "io.trino.server.TrinoServer"]
    return Service(TRINO, TRINO, argv, d / "data", [("TRINO_PORT", int(env["TRINO_PORT"]))])


def cli_argv(env: dict, *extra: str) -> list[str]:
    """The Trino CLI on the stack's server: catalog hive_prod, the pipeline's namespace as schema."""
    return [str(Path(env["TRINO_JAVA_HOME"]) / "bin" / "java"), "-jar", str(TRINO_HOME / "trino-cli.jar"),
            "--server", trino_url(env), "--user", TRINO_USER, "--catalog", env["ICEBERG_CATALOG"],
            "--schema", env.get("ICEBERG_NAMESPACE") or "option_ticks_db", *extra]


# --------------------------------------------------------------------------------------------------
# The REST protocol (POST /v1/statement, follow nextUri): health checks and the demo's summary
# --------------------------------------------------------------------------------------------------

def _call(method: str, url: str, data: bytes | None, timeout: float) -> dict:
    req = urllib.request.Request(url, data=data, method=method, headers={
        "X-Trino-User": TRINO_USER, "X-Trino-Source": "lakehouse-devstack"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"{}")


def query(env: dict, sql: str, catalog: str | None = None, schema: str | None = None,
          timeout: float = 120) -> tuple[list[str], list[list]]:
    """(column names, rows) of one statement; StackError with Trino's message when it fails."""
    url = f"{trino_url(env)}/v1/statement"
    req = urllib.request.Request(url, data=sql.encode(), method="POST", headers={
        "X-Trino-User": TRINO_USER, "X-Trino-Source": "lakehouse-devstack",
        **({"X-Trino-Catalog": catalog} if catalog else {}), **({"X-Trino-Schema": schema} if schema else {})})
    deadline = time.monotonic() + timeout
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        page = json.loads(resp.read())
    columns, rows = [], []
    while True:
        if page.get("error"):
            raise StackError(f"Trino: {page['error'].get('message')}")
        columns = [c["name"] for c in page.get("columns") or []] or columns
        rows += page.get("data") or []
        if not page.get("nextUri"):
            return columns, rows
        if time.monotonic() > deadline:
            raise StackError(f"Trino: no answer to {sql!r} within {timeout:.0f}s")
        page = _call("GET", page["nextUri"], None, timeout)


def trino_health(env: dict) -> tuple[bool, str]:
    """Healthy = started (/v1/info starting=false) and it answers a query through the catalog."""
    try:
        info = _call("GET", f"{trino_url(env)}/v1/info", None, 5)
    except (urllib.error.URLError, OSError, ValueError) as e:
        return False, f"GET /v1/info: {e}"
    if info.get("starting", True):
        return False, "GET /v1/info says starting"
    try:
        _, rows = query(env, "SELECT count(*) FROM system.metadata.catalogs "
                             f"WHERE catalog_name = '{env['ICEBERG_CATALOG']}'", timeout=30)
    except (StackError, urllib.error.URLError, OSError, ValueError) as e:
        return False, f"SELECT from system.metadata.catalogs: {e}"
    if rows != [[1]]:
        return False, f"catalog {env['ICEBERG_CATALOG']} not loaded"
    return True, f"Trino {info.get('nodeVersion', {}).get('version', '?')}"



# --------------------------------------------------------------------------------------------------
# The demo summary's query
# --------------------------------------------------------------------------------------------------

def rows_per_date_sql(tables: list[str] | tuple[str, ...]) -> str:
    return " UNION ALL ".join(f"SELECT '{t}' AS table_name, trade_date, count(*) AS row_count FROM {t} "
                              "GROUP BY trade_date" for t in tables) + " ORDER BY 1, 2"


def demo_query(env: dict, tables: list[str] | tuple[str, ...]) -> dict:
    """Rows per table per trade date, answered by Trino: {"sql", "rows", "seconds"}, {"off"} or {"error"}."""
    from scripts.devstack.processes import read_pid

    if trino_switched_off(env):
        return {"off": "TRINO=off"}
    problem = trino_problem(env)
    if problem or read_pid(env, TRINO) is None:
        return {"off": problem or "not running (`make up` starts it)"}
    if not tables:
        return {"off": "no silver, gold or features table yet"}
    sql = rows_per_date_sql(tables)
    started = time.monotonic()
    try:
        _, rows = query(env, sql, catalog=env["ICEBERG_CATALOG"], schema=env.get("ICEBERG_NAMESPACE"))
    except (StackError, urllib.error.URLError, OSError, ValueError) as e:
        return {"error": str(e), "sql": sql}
    return {"sql": sql, "rows": rows, "seconds": time.monotonic() - started}


def format_demo_query(env: dict, result: dict) -> list[str]:
    if "off" in result:
        return [f"Trino: off ({result['off']}); the rows-per-date query was not answered by Trino"]
    head = f"Answered by Trino ({trino_url(env)}, catalog {env['ICEBERG_CATALOG']}): rows per table per trade date"
    if "error" in result:
        return [head, f"  FAILED: {result['error'][:300]}"]
    lines = [f"{head} ({result['seconds']:.1f}s; `make sql` for more)"]
    lines += [f"  {table:<28}{date:>12}{count:>12,}" for table, date, count in result["rows"]]
    return lines
