"""The embedded single-machine stack: SeaweedFS, MLflow and Airflow as plain local processes.

Used where there is no Docker engine (developer machines of this project's kind, CI). Every service
runs from the project's virtual environments, binds to 127.0.0.1 only and keeps its state under
$LAKEHOUSE_HOME, so `down` plus deleting that folder is a full reset.

    .venv-jobs/bin/python scripts/stack.py up | down | status | env | run -- CMD...
    .venv-jobs/bin/python scripts/stack.py stop SERVICE... | start SERVICE...   (seaweedfs, mlflow, airflow, ...)
    .venv-jobs/bin/python scripts/stack.py open | logs [SERVICE] [--no-follow]
    .venv-jobs/bin/python scripts/stack.py sql [TRINO CLI ARGS]   (the Trino CLI on catalog hive_prod)
    .venv-jobs/bin/python scripts/stack.py backup [--include-secrets] [--force] | restore [ARCHIVE|latest]

`up` prints what it starts and how long each health check took (progress on stderr, results on
stdout); `status` shows each process's health, port, pid and memory; `open` the UIs and their
login; `logs` follows every service's log, or one.

Configuration: <repo>/.env (created by make_env.py when missing), overridden by the process
environment. Knobs read from the environment only: LAKEHOUSE_ENV_FILE (another .env, e.g. for tests),
LAKEHOUSE_DAGS_FOLDER (default <repo>/dags), LAKEHOUSE_START_TIMEOUT (seconds per health wait),
LAKEHOUSE_SERVICES (comma list of the services `up` starts and `status` judges; default all).
`stop`/`start` take one service down and bring it back with its data (fault drills, tests).
Other scripts import `resolve_env` (scripts/devstack/env.py) and `airflow_token`
(scripts/devstack/health.py) instead of re-deriving paths and ports.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from jobs.contract import PROMOTION_POOL
from scripts.devstack.env import (
    AIRFLOW_COMPONENTS,
    AIRFLOW_VENV,
    ALERT_RECEIVER,
    HIVE_METASTORE,
    LOOPBACK,
    POSTGRES,
    PROMETHEUS,
    PUSHGATEWAY,
    REDIS,
    SERVICE_NAMES,
    SPARK_CLUSTER,
    SPARK_MASTER_PROCESS,
    STATSD_EXPORTER,
    TRINO,
    StackError,
    airflow_users,
    alert_receiver_used,
    alerts_file,
    celery_worker_names,
    mlflow_auth_on,
    process_env,
    resolve_env,
    seaweedfs_internal_auth_on,
)
from scripts.devstack.health import (
    airflow_health,
    airflow_password,
    alert_receiver_health,
    celery_workers_health,
    ensure_buckets,
    ensure_experiment,
    hive_metastore_health,
    http_get,
    mlflow_health,
    password_file,
    postgres_health,
    prometheus_health,
    pushgateway_health,
    redis_health,
    seaweedfs_health,
    spark_cluster_health,
    statsd_exporter_health,
)
from scripts.devstack.processes import dirs, failure, log_path, memory_mb, read_pid, start_service, stop_services
from scripts.devstack.services import (
    airflow_services,
    alert_receiver_service,
    all_services,
    hive_metastore_service,
    mlflow_service,
    parse_services,
    postgres_binary,
    postgres_data,
    postgres_service,
    prepare_mlflow,
    prometheus_service,
    pushgateway_service,
    redis_config,
    redis_service,
    remove_sockets,
    seaweedfs_service,
    selected_services,
    service_processes,
    spark_services,
    spark_worker_names,
    statsd_exporter_service,
    unprivileged,
    unprivileged_refusal,
    write_hive_site,
    write_prometheus_config,
    write_s3_identities,
    write_seaweedfs_security,
)
from scripts.devstack.trino import (
    TRINO_USER,
    cli_argv,
    trino_health,
    trino_problem,
    trino_service,
    trino_switched_off,
    trino_url,
    write_trino_config,
)

POLL_SECONDS = 0.5
# Set by a desktop session (not project configuration): a browser can show up only with one of them.
GRAPHICAL_SESSION = ("DISPLAY", "WAYLAND_DISPLAY")
HEARTBEAT_SECONDS = 5.0  # a health wait says what it waits for at least this often


def progress(message: str) -> None:
    """A progress line: stderr, so stdout keeps only results (scripts and tests read those)."""
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# Bringing services up
# --------------------------------------------------------------------------------------------------

def _timeout(default: float) -> float:
    value = os.environ.get("LAKEHOUSE_START_TIMEOUT")
    return float(value) if value else default


def _wait(env: dict, names: list[str], check, label: str, timeout: float) -> None:
    """Poll `check` until it passes; fail fast if a watched process dies, else at the deadline.

    Says every HEARTBEAT_SECONDS what it still waits for, with the elapsed seconds and the reason.
    """
    started = time.monotonic()
    deadline = started + timeout
    next_beat = started + HEARTBEAT_SECONDS
    detail = ""
    while True:
        ok, detail = check()
        if ok:
            if time.monotonic() - started >= 1:
                progress(f"  {label}: healthy after {time.monotonic() - started:.1f}s")
            return
        if time.monotonic() >= next_beat:
            next_beat += HEARTBEAT_SECONDS
            progress(f"  waiting for {label}: {time.monotonic() - started:.0f}s of at most {timeout:.0f}s "
                     f"({detail}; log: {log_path(env, names[0])})")
        dead = [n for n in names if read_pid(env, n) is None]
        if dead:
            raise failure(env, dead, f"{', '.join(dead)} exited while waiting for {label} ({detail})")
        if time.monotonic() > deadline:
            raise failure(env, names, f"{label} not healthy after {timeout:.0f}s: {detail}")
        time.sleep(POLL_SECONDS)


def _up_seaweedfs(env: dict) -> str:
    svc = seaweedfs_service(env)
    if read_pid(env, svc.name) is not None and seaweedfs_health(env)[0]:
        return "already running"
    if read_pid(env, svc.name) is None:
        remove_sockets(env)
        write_s3_identities(env)
        write_seaweedfs_security(env)
        progress(f"seaweedfs: starting `weed mini` (log: {log_path(env, svc.name)})")
        start_service(env, svc)
        state = "started"
    else:
        state = "running, waiting for health"
    s3 = env["MLFLOW_S3_ENDPOINT_URL"]

    def s3_answers():
        status, _ = http_get(f"{s3}/")
        return status == 403, f"anonymous GET / on {s3} returned {status or 'no answer'}"

    _wait(env, [svc.name], s3_answers, "SeaweedFS S3", _timeout(60))
    ensure_buckets(env)
    _wait(env, [svc.name], lambda: seaweedfs_health(env), "SeaweedFS", _timeout(30))
    return state


def _start_if_stopped(env: dict, svc, what: str, prepare=None) -> str:
    """Start ``svc`` unless its process runs: its config written first by ``prepare``, one progress line."""
    if read_pid(env, svc.name) is not None:
        return "already running"
    if prepare:
        prepare(env)
    progress(f"{svc.name}: starting {what} (log: {log_path(env, svc.name)})")
    start_service(env, svc)
    return "started"


def _up_postgres(env: dict) -> str:
    """Postgres as the compose's `postgres` and `mlflow-db-init` leave it: a cluster whose superuser is
    POSTGRES_USER with POSTGRES_DB, then MLflow's role and two databases (that service's own SQL), and
    the embedded metastore's role and database."""
    svc = postgres_service(env)
    if read_pid(env, svc.name) is None and (why := unprivileged_refusal()):
        raise StackError(f"Postgres refuses to run as root and cannot be given another user here: {why}; "
                         "run the cluster profile as an ordinary user, or where user namespaces are allowed")
    if read_pid(env, svc.name) is None and not (postgres_data(env) / "PG_VERSION").exists():
        _initdb(env)
    state = _start_if_stopped(env, svc, f"on {LOOPBACK}:{env['POSTGRES_PORT']}")
    _wait(env, [svc.name], lambda: postgres_health(env), "Postgres", _timeout(60))
    _postgres_databases(env)  # idempotent, as the compose's one-shot service: repairs a start that failed half-way
    return state


def _initdb(env: dict) -> None:
    from scripts.mlflow_auth import write_private

    pwfile = write_private(dirs(env)[POSTGRES] / "initdb.pw", env["POSTGRES_PASSWORD"])
    progress(f"postgres: creating the cluster in {postgres_data(env)} (log: {log_path(env, 'postgres-initdb')})")
    try:
        with open(log_path(env, "postgres-initdb"), "ab") as log:
            rc = subprocess.call(unprivileged([postgres_binary("initdb") or "initdb", "-D", str(postgres_data(env)),
                                               "-U", env.get("POSTGRES_USER") or "airflow", f"--pwfile={pwfile}",
                                               "--auth=scram-sha-256", "-E", "UTF8", "--no-locale"]),
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    finally:
        pwfile.unlink(missing_ok=True)
    if rc != 0:
        raise failure(env, ["postgres-initdb"], f"initdb failed with exit code {rc}")


# The metastore's role and database (profile only: in production the metastore is the lakehouse's own),
# made the way the compose's mlflow-db-init makes MLflow's; secrets through \getenv, never argv.
METASTORE_DATABASE_SQL = """\\getenv db_user DB_USER
\\getenv db_name DB_NAME
\\getenv db_password DB_PASSWORD
SELECT format('CREATE ROLE %I LOGIN', :'db_user')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'db_user')\\gexec
ALTER ROLE :"db_user" WITH LOGIN PASSWORD :'db_password';
SELECT format('CREATE DATABASE %I OWNER %I', :'db_name', :'db_user')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db_name')\\gexec
REVOKE ALL ON DATABASE :"db_name" FROM PUBLIC;
"""


def _postgres_databases(env: dict) -> None:
    from scripts.devstack import compose

    database = env.get("POSTGRES_DB") or "airflow"
    admin = {"PGHOST": LOOPBACK, "PGPORT": env["POSTGRES_PORT"], "PGUSER": env.get("POSTGRES_USER") or "airflow",
             "PGPASSWORD": env["POSTGRES_PASSWORD"], "PGDATABASE": "postgres", "DB": database}
    create = ("\\getenv db DB\nSELECT format('CREATE DATABASE %I', :'db') "
              "WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')\\gexec\n")
    init = compose.service_environment("mlflow-db-init", env)
    script = compose.service_command("mlflow-db-init", env)
    metastore = {**admin, "DB_USER": env.get("HIVE_METASTORE_DB_USER") or "hive",
                 "DB_NAME": env.get("HIVE_METASTORE_DB_NAME") or "metastore",
                 "DB_PASSWORD": env["HIVE_METASTORE_DB_PASSWORD"]}
    with open(log_path(env, "postgres-initdb"), "ab") as log:
        for argv, extra, stdin in ((["psql", "-v", "ON_ERROR_STOP=1", "-q"], admin, create),
                                   (script, {**init, "PGHOST": LOOPBACK, "PGPORT": env["POSTGRES_PORT"]}, ""),
                                   (["psql", "-v", "ON_ERROR_STOP=1", "-q"], metastore, METASTORE_DATABASE_SQL)):
            proc = subprocess.run(argv, input=stdin, text=True, env={**os.environ, **extra}, stdout=log,
                                  stderr=subprocess.STDOUT)
            if proc.returncode != 0:
                raise failure(env, ["postgres-initdb"],
                              f"creating the databases failed ({argv[0]} exit {proc.returncode})")


def _up_redis(env: dict) -> str:
    svc = redis_service(env)
    state = _start_if_stopped(env, svc, f"the Celery broker on {LOOPBACK}:{env['REDIS_PORT']}", redis_config)
    _wait(env, [svc.name], lambda: redis_health(env), "Redis", _timeout(30))
    return state


def _up_hive_metastore(env: dict) -> str:
    """The catalog hive_prod: its schema (Derby, or Postgres in the cluster profile) is created on the
    first start (~10-60 s)."""
    svc = hive_metastore_service(env)
    state = _start_if_stopped(env, svc, f"the Hive metastore on {LOOPBACK}:{env['HIVE_METASTORE_PORT']}",
                              write_hive_site)
    _wait(env, [svc.name], lambda: hive_metastore_health(env), "the Hive metastore", _timeout(240))
    return state


def _up_trino(env: dict) -> str:
    """Trino over hive_prod; healthy once it answers a query through that catalog (~20-40 s)."""
    svc = trino_service(env)
    state = _start_if_stopped(env, svc, f"Trino on {trino_url(env)} with Java {env['TRINO_JAVA_HOME']}",
                              write_trino_config)
    _wait(env, [svc.name], lambda: trino_health(env), "Trino", _timeout(180))
    return state


def _trino_off_line(env: dict) -> str | None:
    """Why `up` left Trino out, when it did (TRINO=off, no JDK 24+, not installed, jdbc catalog)."""
    if trino_switched_off(env):
        return "trino: off (TRINO=off); `make sql` and the demo's Trino query are unavailable"
    problem = trino_problem(env)
    return f"trino: unavailable, {problem}; the rest of the stack runs without it" if problem else None


def _up_mlflow(env: dict) -> str:
    svc = mlflow_service(env)
    login = " with login (MLFLOW_AUTH=on)" if mlflow_auth_on(env) else ""
    state = _start_if_stopped(env, svc, f"the tracking server{login}", prepare_mlflow)
    _wait(env, [svc.name], lambda: mlflow_health(env), "MLflow", _timeout(120))
    if mlflow_auth_on(env):
        _mlflow_auth_init(env)  # the pipeline's user, experiment and grants, as the admin
    else:
        ensure_experiment(env)
    return state


def _mlflow_auth_init(env: dict) -> None:
    from scripts import mlflow_auth

    try:
        changes = mlflow_auth.init(mlflow_auth.settings_from_env(env))
    except mlflow_auth.AuthInitError as e:
        raise failure(env, ["mlflow"], f"MLflow login setup failed: {e}") from e
    for line in changes:
        progress(f"  mlflow: {line}")


def _mlflow_login_note(env: dict) -> str:
    if not mlflow_auth_on(env):
        return "no login (MLFLOW_AUTH=off)"
    return (f"login: user {env['MLFLOW_ADMIN_USER']}, password MLFLOW_ADMIN_PASSWORD in {env['LAKEHOUSE_ENV_FILE']}; "
            f"the stack's processes log in as {env['MLFLOW_PIPELINE_USER']}")


def _up_spark(env: dict) -> str:
    """The standalone master, then its workers; healthy once every worker has registered (~10-20 s)."""
    from scripts.devstack.env import spark_master_ui

    master, *workers = spark_services(env)
    ui = spark_master_ui(env)
    states = [_start_if_stopped(env, master, f"the standalone master {env['SPARK_MASTER']} (UI {ui})")]
    states += [_start_if_stopped(env, w, f"a worker of {env['SPARK_MASTER']}") for w in workers]
    _wait(env, [master.name, *(w.name for w in workers)], lambda: spark_cluster_health(env),
          f"the Spark master and {len(workers)} workers", _timeout(120))
    started = [s.name for s, state in zip([master, *workers], states, strict=True) if state == "started"]
    return "started " + ", ".join(started) if started else "already running"


def _up_pushgateway(env: dict) -> str:
    svc = pushgateway_service(env)
    state = _start_if_stopped(env, svc, f"on {env['PUSHGATEWAY_URL']}")
    _wait(env, [svc.name], lambda: pushgateway_health(env), "the Pushgateway", _timeout(30))
    return state


def _up_prometheus(env: dict) -> str:
    svc = prometheus_service(env)
    state = _start_if_stopped(env, svc, f"on {env['PROMETHEUS_URL']}", write_prometheus_config)
    _wait(env, [svc.name], lambda: prometheus_health(env), "Prometheus", _timeout(60))
    return state


def _up_statsd_exporter(env: dict) -> str:
    svc = statsd_exporter_service(env)
    state = _start_if_stopped(env, svc, f"for Airflow's metrics (StatsD on udp {LOOPBACK}:{env['STATSD_PORT']})")
    _wait(env, [svc.name], lambda: statsd_exporter_health(env), "statsd_exporter", _timeout(30))
    return state


def _up_alert_receiver(env: dict) -> list[str]:
    """The local webhook receiver Airflow's alerts go to, when ALERT_WEBHOOK_URL is unset."""
    if not alert_receiver_used(env):
        return []
    svc = alert_receiver_service(env)
    started = []
    if read_pid(env, svc.name) is None:
        progress(f"{svc.name}: starting (alerts recorded in {alerts_file(env)})")
        start_service(env, svc)
        started = [svc.name]
    _wait(env, [svc.name], lambda: alert_receiver_health(env), "the alert receiver", _timeout(30))
    return started


def _up_airflow(env: dict) -> str:
    receiver = _up_alert_receiver(env)
    services = airflow_services(env)
    missing = [s for s in services if read_pid(env, s.name) is None]
    if missing:
        migrate_log = log_path(env, "airflow-db-migrate")
        t0 = time.monotonic()
        progress(f"airflow: migrating the metadata database (log: {migrate_log})")
        with open(migrate_log, "ab") as log:
            rc = subprocess.call([str(AIRFLOW_VENV / "bin" / "airflow"), "db", "migrate"],
                                 cwd=env["AIRFLOW_HOME"], env={**process_env(env), **services[0].extra_env},
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        if rc != 0:
            raise failure(env, ["airflow-db-migrate"], f"`airflow db migrate` failed with exit code {rc}")
        with open(migrate_log, "ab") as log:  # one slot: promotions never run at once (jobs.contract)
            rc = subprocess.call([str(AIRFLOW_VENV / "bin" / "airflow"), "pools", "set", PROMOTION_POOL, "1",
                                  "Serialises moves of the champion model alias"],
                                 cwd=env["AIRFLOW_HOME"], env={**process_env(env), **services[0].extra_env},
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        if rc != 0:
            raise failure(env, ["airflow-db-migrate"], f"`airflow pools set {PROMOTION_POOL}` failed ({rc})")
        progress(f"  airflow: database ready in {time.monotonic() - t0:.1f}s; starting "
                 f"{', '.join(s.name for s in missing)} (logs in {dirs(env)['logs']})")
        for svc in missing:
            start_service(env, svc)
    since = {s.name.removeprefix("airflow-"): time.time() for s in missing}

    def healthy():
        comps, detail = airflow_health(env, since)
        bad = [c for c, ok in comps.items() if not ok]
        return not bad, (f"not healthy: {', '.join(bad)}; {detail}" if bad else "ok")

    _wait(env, [s.name for s in services], healthy, "Airflow", _timeout(180))
    if workers := celery_worker_names(env):
        _wait(env, workers, lambda: celery_workers_health(env, workers), f"{len(workers)} Celery workers",
              _timeout(180))
    _wait(env, ["airflow-api-server"], lambda: (airflow_password(env) is not None, f"no {password_file(env)}"),
          "the generated Airflow password", _timeout(30))
    os.chmod(password_file(env), 0o600)
    started = receiver + [s.name for s in missing]
    return "started " + ", ".join(started) if started else "already running"


def _airflow_login_line(env: dict) -> str:
    """Show the generated passwords once; afterwards only where they are kept."""
    url = env["AIRFLOW_API_URL"]
    users = airflow_users(env)
    admin = users["admin"]
    pw_file = password_file(env)
    marker = Path(env["AIRFLOW_HOME"]) / ".password_shown"
    passwords = {user: airflow_password(env, user) for user in users.values()}
    if passwords[admin] and not marker.exists():
        marker.write_text(f"{pw_file}\n")
        others = "".join(f"; {role} user: {user}  password: {passwords[user]}"
                         for role, user in users.items() if role != "admin" and passwords[user])
        return (f"Airflow UI: {url}  user: {admin}  password: {passwords[admin]}{others} "
                f"(generated; stored in {pw_file})")
    others = ", ".join(f"{role} {user}" for role, user in users.items() if role != "admin")
    return f"Airflow UI: {url}  user: {admin}  password: stored in {pw_file} (also users {others})"


def _filer_line(env: dict) -> str:
    if not seaweedfs_internal_auth_on(env):
        return f"SeaweedFS filer UI: http://{LOOPBACK}:{env['SEAWEEDFS_FILER_PORT']}  (SEAWEEDFS_INTERNAL_AUTH=off)"
    return ("SeaweedFS filer UI: closed (its HTTP ports want SeaweedFS's JWTs; browse with an S3 client, "
            "or SEAWEEDFS_INTERNAL_AUTH=off)")


def _urls(env: dict, services: list[str] | tuple[str, ...] = SERVICE_NAMES) -> list[str]:
    lines = []
    if "seaweedfs" in services:
        lines += [f"SeaweedFS S3: {env['MLFLOW_S3_ENDPOINT_URL']}  bucket: {env['S3_BUCKET']}  "
                  f"(keys AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in {env['LAKEHOUSE_ENV_FILE']})",
                  _filer_line(env)]
    if HIVE_METASTORE in services:
        lines.append(f"Iceberg catalog {env['ICEBERG_CATALOG']}: Hive metastore {env['ICEBERG_CATALOG_URI']}, "
                     f"tables under {env['ICEBERG_WAREHOUSE']}")
    if TRINO in services:
        lines.append(f"Trino: {trino_url(env)}  catalog {env['ICEBERG_CATALOG']}, schema {env['ICEBERG_NAMESPACE']} "
                     f"(user {TRINO_USER}, no password; `make sql` opens its CLI)")
    if "mlflow" in services:
        lines.append(f"MLflow UI: {env['MLFLOW_TRACKING_URI']}  experiment: {env['MLFLOW_EXPERIMENT_NAME']}"
                     + (f"  ({_mlflow_login_note(env)})" if mlflow_auth_on(env) else ""))
    if PUSHGATEWAY in services:
        lines.append(f"Pushgateway: {env['PUSHGATEWAY_URL']}  (every stage pushes its figures there)")
    if PROMETHEUS in services:
        lines.append(f"Prometheus: {env['PROMETHEUS_URL']}  (alert rules: {env['PROMETHEUS_URL']}/alerts)")
    if STATSD_EXPORTER in services:
        lines.append(f"Airflow's metrics: http://{LOOPBACK}:{env['STATSD_EXPORTER_PORT']}/metrics  (statsd_exporter)")
    if SPARK_CLUSTER in services:
        from scripts.devstack.env import spark_master_ui

        lines.append(f"Spark master: {env['SPARK_MASTER']}  UI {spark_master_ui(env)}  "
                     f"({env['SPARK_WORKERS']} workers; every stage is one of its applications)")
    if "airflow" in services:
        lines.append(_airflow_login_line(env))
        if alert_receiver_used(env):
            lines.append(f"Alerts: {env['ALERT_WEBHOOK_URL']} records them in {alerts_file(env)}")
    return lines


# --------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------

def cmd_up(env: dict, services: list[str] | None = None) -> int:
    started = time.monotonic()
    services = services or selected_services(env)
    for d in dirs(env).values():
        d.mkdir(parents=True, exist_ok=True)
    for d in (dirs(env)["home"], dirs(env)["logs"]):  # made before the umask by an older version, or by hand
        os.chmod(d, 0o700)
    for key in ("AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__PLUGINS_FOLDER"):
        Path(env[key]).mkdir(parents=True, exist_ok=True)
    if TRINO in parse_services(os.environ.get("LAKEHOUSE_SERVICES")) and (line := _trino_off_line(env)):
        print(line, flush=True)
    for label, fn in (("seaweedfs", _up_seaweedfs), (POSTGRES, _up_postgres), (REDIS, _up_redis),
                      (HIVE_METASTORE, _up_hive_metastore), (TRINO, _up_trino),
                      ("mlflow", _up_mlflow), (SPARK_CLUSTER, _up_spark), (PUSHGATEWAY, _up_pushgateway),
                      (PROMETHEUS, _up_prometheus),
                      (STATSD_EXPORTER, _up_statsd_exporter), ("airflow", _up_airflow)):
        if label not in services:
            continue
        t0 = time.monotonic()
        state = fn(env)
        print(f"{label}: {state} (healthy, {time.monotonic() - t0:.1f}s)", flush=True)
    print(f"stack up in {time.monotonic() - started:.1f}s (state in {env['LAKEHOUSE_HOME']})")
    for line in _urls(env, services):
        print(line)
    return 0


def cmd_start(env: dict, names: list[str]) -> int:
    """Start (or wait for) the named services only, e.g. after `stop seaweedfs`."""
    if not names:
        print(f"usage: stack.py start SERVICE... ({', '.join(SERVICE_NAMES)})", file=sys.stderr)
        return 2
    return cmd_up(env, parse_services(names))


def cmd_stop(env: dict, names: list[str]) -> int:
    """Stop the named services only; their data stays, `start` brings them back."""
    if not names:
        print(f"usage: stack.py stop SERVICE... ({', '.join(SERVICE_NAMES)})", file=sys.stderr)
        return 2
    services = parse_services(names)
    if not dirs(env)["run"].exists():
        print("nothing to stop")
        return 0
    t0 = time.monotonic()
    stopped = []
    for name in reversed(services):  # dependants first, storage last, as `down` does
        stopped += stop_services(env, service_processes(env, name))
    if "seaweedfs" in services:
        remove_sockets(env)
    print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'} ({time.monotonic() - t0:.1f}s)")
    return 0


def cmd_down(env: dict) -> int:
    if not dirs(env)["run"].exists():
        print("nothing to stop")
        return 0
    t0 = time.monotonic()
    stopped = []
    # Airflow first (its tasks may still write to MLflow/S3), then MLflow, Trino, the catalog, storage last.
    for group in (["airflow-scheduler", "airflow-triggerer", "airflow-dag-processor", *celery_worker_names(env)],
                  ["airflow-api-server"], [ALERT_RECEIVER], [STATSD_EXPORTER], [PROMETHEUS], [PUSHGATEWAY],
                  spark_worker_names(env), [SPARK_MASTER_PROCESS], ["mlflow"], [TRINO], [HIVE_METASTORE],
                  [REDIS], [POSTGRES], ["seaweedfs"]):
        stopped += stop_services(env, group)
    remove_sockets(env)
    print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'} ({time.monotonic() - t0:.1f}s)")
    return 0


def cmd_status(env: dict) -> int:
    health: dict[str, bool] = {"seaweedfs": False, "mlflow": False, HIVE_METASTORE: False, TRINO: False,
                               PUSHGATEWAY: False, PROMETHEUS: False, STATSD_EXPORTER: False}
    pids = {svc.name: read_pid(env, svc.name) for svc in all_services(env)}
    health.update({name: False for name in pids if name not in health})
    if pids["seaweedfs"]:
        health["seaweedfs"] = seaweedfs_health(env)[0]
    if pids.get(HIVE_METASTORE):
        health[HIVE_METASTORE] = hive_metastore_health(env)[0]
    if pids.get(TRINO):
        health[TRINO] = trino_health(env)[0]
    if pids["mlflow"]:
        health["mlflow"] = mlflow_health(env)[0]
    if pids.get(PUSHGATEWAY):
        health[PUSHGATEWAY] = pushgateway_health(env)[0]
    if pids.get(PROMETHEUS):
        health[PROMETHEUS] = prometheus_health(env)[0]
    if pids.get(STATSD_EXPORTER):
        health[STATSD_EXPORTER] = statsd_exporter_health(env)[0]
    if pids.get(POSTGRES):
        health[POSTGRES] = postgres_health(env)[0]
    if pids.get(REDIS):
        health[REDIS] = redis_health(env)[0]
    if workers := [w for w in celery_worker_names(env) if pids.get(w)]:
        ping = celery_workers_health(env, workers)[0]
        health.update({w: ping for w in workers})
    if pids.get(SPARK_MASTER_PROCESS):  # the cluster is healthy only with every worker registered
        cluster_ok = spark_cluster_health(env)[0]
        for name in service_processes(env, SPARK_CLUSTER):
            health[name] = cluster_ok and pids.get(name) is not None
    if ALERT_RECEIVER in pids:
        health[ALERT_RECEIVER] = bool(pids[ALERT_RECEIVER]) and alert_receiver_health(env)[0]
    comps = airflow_health(env)[0] if pids["airflow-api-server"] else {}
    for c in AIRFLOW_COMPONENTS:
        health[f"airflow-{c}"] = bool(comps.get(c)) and pids[f"airflow-{c}"] is not None
    ports = {"seaweedfs": env["SEAWEEDFS_S3_PORT"], "mlflow": env["MLFLOW_PORT"],
             HIVE_METASTORE: env["HIVE_METASTORE_PORT"], TRINO: env["TRINO_PORT"],
             "airflow-api-server": env["AIRFLOW_API_PORT"], ALERT_RECEIVER: env["ALERT_RECEIVER_PORT"],
             PUSHGATEWAY: env["PUSHGATEWAY_PORT"], PROMETHEUS: env["PROMETHEUS_PORT"],
             STATSD_EXPORTER: env["STATSD_EXPORTER_PORT"], SPARK_MASTER_PROCESS: env["SPARK_MASTER_PORT"],
             POSTGRES: env["POSTGRES_PORT"], REDIS: env["REDIS_PORT"]}
    print(f"{'SERVICE':<24}{'PID':>8}  {'PORT':>6}  {'RSS MB':>7}  {'PSS MB':>7}  HEALTH")
    for name, pid in pids.items():
        rss, pss = (f"{m:.0f}" for m in memory_mb(pid)) if pid else ("-", "-")
        state = "healthy" if health[name] else ("unhealthy" if pid else "stopped")
        print(f"{name:<24}{pid or '-':>8}  {ports.get(name, '-'):>6}  {rss:>7}  {pss:>7}  {state}")
    services = selected_services(env)
    judged = [p for s in services for p in service_processes(env, s)]
    ok = all(health[name] for name in judged)
    if ok:
        for line in _urls(env, services):
            print(line)
    return 0 if ok else 1


def cmd_open(env: dict) -> int:
    """Print the UIs with their login; open them in a browser only where one can show up."""
    users = airflow_users(env)
    ui = {"Airflow": env["AIRFLOW_UI_URL"], "MLflow": env["MLFLOW_UI_URL"]}
    print(f"Airflow UI    : {ui['Airflow']}  (user {users['admin']}, read-only {users['viewer']}, operator "
          f"{users['op']}; generated passwords in {password_file(env)})")
    print(f"MLflow UI     : {ui['MLflow']}  "
          f"(experiment {env.get('MLFLOW_EXPERIMENT_NAME', '')}; {_mlflow_login_note(env)})")
    print(f"SeaweedFS S3  : {env['MLFLOW_S3_ENDPOINT_URL']}  bucket {env.get('S3_BUCKET', 'lakehouse')} "
          f"(keys AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in {env['LAKEHOUSE_ENV_FILE']})")
    print(_filer_line(env))
    if read_pid(env, PROMETHEUS) is not None:
        print(f"Prometheus    : {env['PROMETHEUS_URL']}  (the stages' metrics, from {env['PUSHGATEWAY_URL']})")
    if read_pid(env, TRINO) is not None:
        print(f"Trino         : {trino_url(env)}  (catalog {env['ICEBERG_CATALOG']}, user {TRINO_USER}; `make sql`)")
    reports = Path(env["LAKEHOUSE_HOME"]) / "reports"
    if reports.is_dir():
        print(f"Morning reports: {reports}/<trade date>.html")
    if alert_receiver_used(env):
        print(f"Alerts received: {alerts_file(env)}")
    opener = shutil.which("xdg-open")
    if opener and any(os.environ.get(name) for name in GRAPHICAL_SESSION):
        for url in ui.values():
            subprocess.Popen([opener, url], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        print("opened in your browser")
    else:
        print("(no display or no xdg-open here: open the URLs above yourself, e.g. through an SSH tunnel)")
    return 0


def log_names(env: dict) -> dict[str, list[str]]:
    """What `logs` accepts: every process, and each service of SERVICE_NAMES for all its processes."""
    names = {svc.name: [svc.name] for svc in all_services(env)}
    names["airflow-db-migrate"] = ["airflow-db-migrate"]
    for service in SERVICE_NAMES:
        names.setdefault(service, service_processes(env, service))
    return names


def cmd_logs(env: dict, argv: list[str]) -> int:
    """Follow the logs of every service, or of one (`tail -F`: survives restarts and rotations)."""
    follow = "--no-follow" not in argv
    wanted = [a for a in argv if not a.startswith("--")]
    names = log_names(env)
    unknown = [w for w in wanted if w not in names]
    if unknown:
        print(f"stack.py logs: unknown service {', '.join(unknown)}; valid names: {', '.join(names)}",
              file=sys.stderr)
        return 2
    chosen = [n for w in wanted for n in names[w]] if wanted else [n for n in names if n not in SERVICE_NAMES]
    paths = [str(log_path(env, n)) for n in dict.fromkeys(chosen)]
    existing = [p for p in paths if Path(p).exists()]
    if not follow:
        if not existing:
            print(f"no logs yet in {dirs(env)['logs']} (start the stack with `make up`)", file=sys.stderr)
            return 1
        return subprocess.call(["tail", "-n", "50", *existing])
    print(f"following {', '.join(paths)} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        return subprocess.call(["tail", "-n", "20", "-F", *paths])
    except KeyboardInterrupt:
        return 0


def cmd_sql(env: dict, argv: list[str]) -> int:
    """The Trino CLI on the stack's Trino (`make sql`); extra arguments go to the CLI."""
    if read_pid(env, TRINO) is None:
        reason = _trino_off_line(env) or "trino: not running (start it with `make up`)"
        print(f"stack.py sql: {reason}", file=sys.stderr)
        return 1
    try:
        return subprocess.call(cli_argv(env, *argv), env=process_env(env))
    except KeyboardInterrupt:
        return 130


def _quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def cmd_env(env: dict) -> int:
    for key, value in env.items():
        print(f"export {key}={_quote(value)}")
    return 0


def cmd_run(env: dict, argv: list[str]) -> int:
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print("usage: stack.py run -- CMD [ARGS...]", file=sys.stderr)
        return 2
    try:
        return subprocess.call(argv, env=process_env(env))
    except FileNotFoundError:
        print(f"stack.py run: command not found: {argv[0]}", file=sys.stderr)
        return 127
    except KeyboardInterrupt:
        return 130


USAGE = ("usage: stack.py {up|down|status|env|open|logs [SERVICE]|sql [CLI ARGS]|run -- CMD...|"
         "stop SERVICE...|start SERVICE...|backup [--include-secrets] [--force]|restore [ARCHIVE|latest]}")


def cmd_backup(env: dict, argv: list[str]) -> int:
    """Quiesce the stack, archive its state, start it again (scripts/devstack/backup.py)."""
    from scripts.devstack import backup

    unknown = [a for a in argv if a not in ("--include-secrets", "--force")]
    if unknown:
        print(f"stack.py backup: unknown argument(s) {' '.join(unknown)}\n{USAGE}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    archive, manifest, pruned = backup.backup(env, cmd_down, cmd_up, include_secrets="--include-secrets" in argv,
                                              force="--force" in argv)
    for name, comp in manifest["components"].items():
        print(f"  {name:<16}{len(comp['files']):>6} files  {comp['bytes'] / 1e6:>9.1f} MB")
    print(f"backup: {archive} ({archive.stat().st_size / 1e6:.1f} MB, {time.monotonic() - t0:.1f}s"
          f"{', secrets included' if manifest['includes_secrets'] else ', no secrets'})")
    for old in pruned:
        print(f"backup: removed {old.name} (BACKUP_KEEP={backup.backup_keep(env)})")
    return 0


def cmd_restore(env: dict, argv: list[str]) -> int:
    """Unpack a backup into LAKEHOUSE_HOME (the stack stopped); `up` starts the restored state."""
    from scripts.devstack import backup

    if len(argv) > 1:
        print(USAGE, file=sys.stderr)
        return 2
    archive = backup.resolve_archive(env, argv[0] if argv else "latest")
    aside, manifest = backup.restore(env, archive)
    print(f"restore: {archive.name} (made {manifest['created_at']}, commit {manifest.get('git_commit') or '?'}) "
          f"into {env['LAKEHOUSE_HOME']}")
    print(f"restore: the state it replaced is in {aside}" if aside.exists() else "restore: nothing was replaced")
    print("restore: done; `make up` starts the restored stack")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `stack.py status | head` should not traceback
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__.strip() + "\n\n" + USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    commands = {"up": cmd_up, "down": cmd_down, "status": cmd_status, "env": cmd_env, "open": cmd_open}
    with_names = {"start": cmd_start, "stop": cmd_stop, "logs": cmd_logs, "sql": cmd_sql,
                  "backup": cmd_backup, "restore": cmd_restore}
    if command not in commands and command not in with_names and command != "run":
        print(USAGE, file=sys.stderr)
        return 2
    if command == "run" and not [a for a in rest if a != "--"][:1]:
        print("usage: stack.py run -- CMD [ARGS...]", file=sys.stderr)
        return 2
    # Everything the stack and its services create (logs, the generated password, the warehouse) is
    # private to this user from creation: 0700 folders, 0600 files.
    os.umask(0o077)
    try:
        env = resolve_env()
        if command == "run":
            return cmd_run(env, rest)
        if command in with_names:
            return with_names[command](env, rest)
        return commands[command](env)
    except StackError as e:
        print(f"stack.py {command}: {e}", file=sys.stderr)
        return 1

