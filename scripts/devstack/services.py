"""What runs: the command line, folder, ports and environment of each service.

SeaweedFS (`weed mini`: master, volume, filer, S3), the Hive metastore of catalog hive_prod
(LAKEHOUSE_CATALOG=hive), Trino over it (scripts/devstack/trino.py), the MLflow server, the
Pushgateway and Prometheus (Debian's binaries), statsd_exporter for Airflow's own metrics,
the cluster profile's Spark standalone master and workers, and Airflow's four components, all
bound to 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from xml.sax.saxutils import escape

from jobs import contract
from scripts.devstack.env import (
    AIRFLOW_COMPONENTS,
    AIRFLOW_VENV,
    ALERT_RECEIVER,
    FIXED_GRPC,
    GRPC_OFFSET,
    HIVE_METASTORE,
    JOBS_VENV,
    LOOPBACK,
    POSTGRES,
    PROMETHEUS,
    PUSHGATEWAY,
    REDIS,
    REPO,
    SEAWEEDFS_PORTS,
    SERVICE_NAMES,
    SPARK_CLUSTER,
    SPARK_MASTER_PROCESS,
    STATSD_EXPORTER,
    TRINO,
    StackError,
    alert_receiver_used,
    alerts_file,
    catalog_services,
    celery_worker_names,
    cluster_profile,
    grpc_var,
    metrics_binary,
    mlflow_auth_ini,
    mlflow_auth_on,
    seaweedfs_internal_auth_on,
)
from scripts.devstack.processes import Service, dirs
from scripts.devstack.trino import trino_service
from scripts.mlflow_auth import write_private


def _socket_path(env: dict, name: str) -> str:
    path = dirs(env)["run"] / f"{name}.sock"
    if len(str(path)) < 100:  # AF_UNIX path limit is 108 bytes
        return str(path)
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    return f"/tmp/lakehouse-{digest}-{name}.sock"


def remove_sockets(env: dict) -> None:
    """SeaweedFS leaves its unix sockets behind on exit."""
    for name in ("seaweedfs-filer", "seaweedfs-s3"):
        Path(_socket_path(env, name)).unlink(missing_ok=True)


SEAWEEDFS_GOMEMLIMIT_DEFAULT = "320MiB"


def seaweedfs_service(env: dict) -> Service:
    d = dirs(env)
    port = {name: int(env[var]) for name, (var, _) in SEAWEEDFS_PORTS.items()}
    grpc = {name: port[name] + GRPC_OFFSET if name in FIXED_GRPC else int(env[grpc_var(name)])
            for name in SEAWEEDFS_PORTS}
    iceberg = int(env.get("SEAWEEDFS_ICEBERG_PORT") or 0)
    argv = [
        str(JOBS_VENV / "bin" / "weed"), "mini",
        f"-dir={d['seaweedfs'] / 'data'}", f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
        f"-s3.config={d['seaweedfs'] / 's3.json'}",
        f"-s3.port={port['s3']}", f"-s3.port.grpc={grpc['s3']}",
        f"-s3.port.iceberg={iceberg}", "-s3.port.lance=0",
        f"-master.port={port['master']}", f"-master.port.grpc={grpc['master']}",
        f"-volume.port={port['volume']}", f"-volume.port.grpc={grpc['volume']}",
        f"-filer.port={port['filer']}", f"-filer.port.grpc={grpc['filer']}",
        f"-admin.port={port['admin']}", f"-admin.port.grpc={grpc['admin']}",
        "-admin.ui=false", f"-admin.dataDir={d['seaweedfs'] / 'admin'}",
        "-webdav=false", "-master.telemetry=false",
        f"-filer.localSocket={_socket_path(env, 'seaweedfs-filer')}",
        f"-s3.localSocket={_socket_path(env, 'seaweedfs-s3')}",
    ]
    ports = [(var, port[n]) for n, (var, _) in SEAWEEDFS_PORTS.items()]
    ports += [(f"SEAWEEDFS_ADMIN_PORT + {GRPC_OFFSET}" if n in FIXED_GRPC else grpc_var(n), grpc[n])
              for n in SEAWEEDFS_PORTS]
    if iceberg:
        ports.append(("SEAWEEDFS_ICEBERG_PORT", iceberg))
    for var, p in ports:
        if not 0 < p < 65536:
            raise StackError(f"{var}={p} is not a valid port")
    # GOMEMLIMIT bounds the heap Go lets grow to twice its live size between collections (.env.example).
    limit = {"GOMEMLIMIT": env.get("SEAWEEDFS_GOMEMLIMIT") or SEAWEEDFS_GOMEMLIMIT_DEFAULT}
    return Service("seaweedfs", "seaweedfs", argv, d["seaweedfs"], ports, limit)


def write_s3_identities(env: dict) -> Path:
    """One identity with the .env keys: with any identity configured, SeaweedFS refuses anonymous calls."""
    path = dirs(env)["seaweedfs"] / "s3.json"
    config = {"identities": [{
        "name": "lakehouse",
        "credentials": [{"accessKey": env["AWS_ACCESS_KEY_ID"], "secretKey": env["AWS_SECRET_ACCESS_KEY"]}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}
    return write_private(path, json.dumps(config, indent=2))


SEAWEEDFS_JWT_SECTIONS = ("jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read")
# Every gRPC server `weed mini` runs, and its outgoing client: mutual TLS with the stack's own CA.
SEAWEEDFS_GRPC_SECTIONS = ("grpc.master", "grpc.volume", "grpc.filer", "grpc.s3", "grpc.admin", "grpc.worker",
                           "grpc.client")


def seaweedfs_tls_dir(env: dict) -> Path:
    return dirs(env)["seaweedfs"] / "tls"


def write_seaweedfs_tls(env: dict) -> dict[str, Path]:
    """A fresh CA and one certificate for 127.0.0.1 signed by it, on every start (see write_seaweedfs_security).

    The CA's key is never written: nothing can sign another certificate the servers would accept.
    """
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key, node_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lakehouse-seaweedfs-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=365))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    node = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "seaweedfs")]))
            .issuer_name(ca_name).public_key(node_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK)),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    d = seaweedfs_tls_dir(env)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths = {"ca": d / "ca.crt", "cert": d / "node.crt", "key": d / "node.key"}
    write_private(paths["ca"], ca.public_bytes(serialization.Encoding.PEM).decode())
    write_private(paths["cert"], node.public_bytes(serialization.Encoding.PEM).decode())
    write_private(paths["key"], node_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()).decode())
    return paths


def write_seaweedfs_security(env: dict) -> Path | None:
    """security.toml in weed's working folder: JWTs on filer and volume HTTP, mutual TLS on gRPC and the master.

    Without it the filer, volume and master ports take unauthenticated reads and writes (from any
    local process, or a browser through DNS rebinding), bypassing the S3 identities. `weed mini` is
    one process, so its S3 gateway signs with the same keys; fresh keys on every start (the tokens
    live 10 s). The master's HTTP API (/dir/assign hands out volume write tokens to its caller) and
    every gRPC port want a client certificate of the stack's CA, which only weed itself holds.
    SEAWEEDFS_INTERNAL_AUTH=off brings the filer UI (and all of that openness) back.
    """
    import secrets

    path = dirs(env)["seaweedfs"] / "security.toml"
    if not seaweedfs_internal_auth_on(env):
        path.unlink(missing_ok=True)
        return None
    tls = write_seaweedfs_tls(env)
    body = "".join(f'[{section}]\nkey = "{secrets.token_urlsafe(32)}"\nexpires_after_seconds = 10\n\n'
                   for section in SEAWEEDFS_JWT_SECTIONS) + "[access]\nui = false\n\n"
    body += f'[grpc]\nca = "{tls["ca"]}"\n\n'
    body += "".join(f'[{section}]\ncert = "{tls["cert"]}"\nkey = "{tls["key"]}"\n\n'
                    for section in SEAWEEDFS_GRPC_SECTIONS)
    body += f'[https.master]\ncert = "{tls["cert"]}"\nkey = "{tls["key"]}"\nca = "{tls["ca"]}"\n'
    return write_private(path, body)


def _pyspark_jars() -> Path:
    return next((JOBS_VENV / "lib").glob("python3*/site-packages/pyspark/jars"))


def write_hive_site(env: dict) -> Path:
    """hive-site.xml of the embedded metastore: its catalog database (Derby, or Postgres in the cluster
    profile) and S3A on SeaweedFS.

    Creating a table or namespace makes its folder through Hadoop's FileSystem, hence S3A here
    (hadoop-aws from var/jars); the keys and the database password are the .env ones, so the file is private.
    """
    d = dirs(env)["hive-metastore"]
    conf = {**metastore_database(env),
        "datanucleus.schema.autoCreateAll": "true",
        "hive.metastore.schema.verification": "false",
        "hive.metastore.warehouse.dir": env["ICEBERG_WAREHOUSE"],
        "fs.s3a.endpoint": env["MLFLOW_S3_ENDPOINT_URL"],
        "fs.s3a.path.style.access": "true",
        "fs.s3a.connection.ssl.enabled": "false",
        "fs.s3a.access.key": env["AWS_ACCESS_KEY_ID"],
        "fs.s3a.secret.key": env["AWS_SECRET_ACCESS_KEY"],
        "fs.s3a.aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
        "derby.stream.error.file": str(d / "derby.log"),
    }
    body = "".join(f"  <property><name>{k}</name><value>{escape(v)}</value></property>\n" for k, v in conf.items())
    xml = f'<?xml version="1.0"?>\n<configuration>\n{body}</configuration>\n'
    return write_private(d / "conf" / "hive-site.xml", xml)


def metastore_database(env: dict) -> dict[str, str]:
    """Where the metastore keeps its catalog: Derby in its folder, or in the cluster profile the
    profile's Postgres under HIVE_METASTORE_DB_* (the role and database `_postgres_databases` makes)."""
    if not cluster_profile(env):
        return {"javax.jdo.option.ConnectionURL":
                f"jdbc:derby:;databaseName={dirs(env)['hive-metastore'] / 'metastore_db'};create=true"}
    return {
        "javax.jdo.option.ConnectionURL":
            f"jdbc:postgresql://{LOOPBACK}:{env['POSTGRES_PORT']}/{env.get('HIVE_METASTORE_DB_NAME') or 'metastore'}",
        "javax.jdo.option.ConnectionDriverName": "org.postgresql.Driver",
        "javax.jdo.option.ConnectionUserName": env.get("HIVE_METASTORE_DB_USER") or "hive",
        "javax.jdo.option.ConnectionPassword": env["HIVE_METASTORE_DB_PASSWORD"],
    }


def metastore_jars() -> list[Path]:
    """The Postgres JDBC driver `make deps` puts in var/metastore-jars (requirements/jars/metastore)."""
    return sorted((REPO / "var" / "metastore-jars").glob("*.jar"))


def hive_metastore_service(env: dict) -> Service:
    """Hive 2.3.9's metastore from pyspark's jars, on 127.0.0.1 through LoopbackMetastore.java."""
    d = dirs(env)["hive-metastore"]
    jars = REPO / "var" / "jars"
    s3a = sorted(str(p) for p in (*jars.glob("hadoop-aws-*.jar"), *jars.glob("aws-java-sdk-bundle-*.jar")))
    extra: list[str] = []
    if cluster_profile(env):
        extra = [str(p) for p in metastore_jars()]
        if not extra:
            raise StackError("the cluster profile's metastore needs the Postgres JDBC driver in var/metastore-jars; "
                             "run `make deps`")
    classpath = os.pathsep.join([str(d / "conf"), f"{_pyspark_jars()}/*", *s3a, *extra])
    argv = [str(Path(env["JAVA_HOME"]) / "bin" / "java"), f"-Xmx{env.get('HIVE_METASTORE_HEAP') or '512m'}",
            "-Dlog4j2.contextSelector=org.apache.logging.log4j.core.selector.ClassLoaderContextSelector",
            f"-Dderby.system.home={d}", "-cp", classpath,
            str(Path(__file__).with_name("java") / "LoopbackMetastore.java"), LOOPBACK, env["HIVE_METASTORE_PORT"]]
    if cluster_profile(env) or not (d / "metastore_db").exists():
        argv.append("--init-txn")  # on Postgres it checks for the tables itself
    return Service(HIVE_METASTORE, HIVE_METASTORE, argv, d, [("HIVE_METASTORE_PORT", int(env["HIVE_METASTORE_PORT"]))])


def mlflow_service(env: dict) -> Service:
    d = dirs(env)
    port = env["MLFLOW_PORT"]
    # Job execution (GenAI scorers) spawns extra huey workers we do not use.
    extra = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    if cluster_profile(env):
        # The production compose's backend store (Postgres), read from the environment as there, so
        # the password stays off the command line.
        from scripts.devstack import compose

        backend = []
        extra["MLFLOW_BACKEND_STORE_URI"] = compose.service_variable("mlflow", "MLFLOW_BACKEND_STORE_URI", env)
    else:
        backend = ["--backend-store-uri", f"sqlite:///{d['mlflow'] / 'mlflow.db'}"]
    argv = [
        str(JOBS_VENV / "bin" / "mlflow"), "server",
        "--host", LOOPBACK, "--port", port, "--workers", "1", *backend,
        "--artifacts-destination", env["MLFLOW_ARTIFACTS_DESTINATION"],
        "--allowed-hosts", f"{LOOPBACK}:{port},localhost:{port},{LOOPBACK},localhost",
        # MLflow's own request metrics on /metrics (prometheus-flask-exporter, multiprocess files here).
        "--expose-prometheus", str(mlflow_metrics_dir(env)),
    ]
    if mlflow_auth_on(env):
        # MLflow's basic-auth app; its config (written by write_mlflow_auth_ini) and the Flask
        # secret (MLFLOW_FLASK_SERVER_SECRET_KEY, from .env) come from the environment, not argv.
        argv += ["--app-name", contract.MLFLOW_AUTH_APP]
        extra["MLFLOW_AUTH_CONFIG_PATH"] = str(mlflow_auth_ini(env))
    return Service("mlflow", "mlflow", argv, d["mlflow"], [("MLFLOW_PORT", int(port))], extra)


def mlflow_metrics_dir(env: dict) -> Path:
    return dirs(env)["mlflow"] / "prometheus-metrics"


def prepare_mlflow(env: dict) -> None:
    """Before MLflow starts: its login config, and no metric files of an earlier process (prometheus_client's
    multiprocess mode would add a dead process's counters to the new one's)."""
    write_mlflow_auth_ini(env)
    shutil.rmtree(mlflow_metrics_dir(env), ignore_errors=True)
    mlflow_metrics_dir(env).mkdir(parents=True)


def write_mlflow_auth_ini(env: dict) -> Path | None:
    """The basic-auth app's config (0600 from creation), users in a SQLite file beside MLflow's own.

    The admin is created from it on the first start only; MLFLOW_AUTH=off removes the file (it holds
    the admin password) and keeps the user database for the next time it is on.
    """
    from scripts import mlflow_auth

    path = mlflow_auth_ini(env)
    if not mlflow_auth_on(env):
        path.unlink(missing_ok=True)
        return None
    database = f"sqlite:///{dirs(env)['mlflow'] / 'basic_auth.db'}"
    if cluster_profile(env):  # the compose's user database on Postgres
        import configparser

        from scripts.devstack import compose

        ini = configparser.ConfigParser(interpolation=None)
        ini.read_string(compose.config_content("mlflow-auth-ini", env))
        database = ini["mlflow"]["database_uri"]
    return write_private(path, mlflow_auth.render_ini(
        env["MLFLOW_ADMIN_USER"], env["MLFLOW_ADMIN_PASSWORD"], database))


def airflow_services(env: dict) -> list[Service]:
    d = dirs(env)
    airflow = str(AIRFLOW_VENV / "bin" / "airflow")
    # Airflow's venv first; the jobs venv after it so a bare `spark-submit` resolves to full pyspark.
    path = os.pathsep.join([str(AIRFLOW_VENV / "bin"), str(JOBS_VENV / "bin"),
                            str(Path(env["JAVA_HOME"]) / "bin"), os.environ.get("PATH", "/usr/bin:/bin")])
    extra = {"PATH": path}
    port = int(env["AIRFLOW_API_PORT"])
    argvs = {
        "api-server": [airflow, "api-server", "--host", LOOPBACK, "--port", str(port),
                       "--workers", env.get("AIRFLOW__API__WORKERS") or "1"],
        # --skip-serve-logs: the log server binds every interface; logs are read from local files here.
        "scheduler": [airflow, "scheduler", "--skip-serve-logs"],
        "dag-processor": [airflow, "dag-processor"],
        "triggerer": [airflow, "triggerer", "--skip-serve-logs"],
    }
    components = [Service(f"airflow-{c}", "airflow", argvs[c], d["airflow"],
                          [("AIRFLOW_API_PORT", port)] if c == "api-server" else [], extra)
                  for c in AIRFLOW_COMPONENTS]
    # The compose's `celery worker`, one per name; --skip-serve-logs: its log server binds every
    # interface, and the api-server reads the task logs from the shared local folder.
    workers = [Service(name, "airflow", [airflow, "celery", "worker", "--celery-hostname", f"{name}@%h",
                                         "--skip-serve-logs"], d["airflow"], [], extra)
               for name in celery_worker_names(env)]
    return components + workers


def alert_receiver_service(env: dict) -> Service:
    """The local webhook receiver that records the alerts Airflow sends (ALERT_WEBHOOK_URL left unset)."""
    out = alerts_file(env)
    argv = [str(JOBS_VENV / "bin" / "python"), str(Path(__file__).with_name("alert_receiver.py")),
            "--port", env["ALERT_RECEIVER_PORT"], "--out", str(out)]
    port = [("ALERT_RECEIVER_PORT", int(env["ALERT_RECEIVER_PORT"]))]
    return Service(ALERT_RECEIVER, "airflow", argv, out.parent, port)


RULES_DIR = REPO / "docker" / "prometheus" / "rules"
# Short enough that a stage's push shows in Prometheus (and a test waits) seconds after it ends.
EMBEDDED_SCRAPE_INTERVAL = "5s"
EMBEDDED_RETENTION = "7d"


def pushgateway_service(env: dict) -> Service:
    """Its own persistence file: Debian's default (/var/lib/prometheus) is shared by every stack."""
    d = dirs(env)["pushgateway"]
    port = int(env["PUSHGATEWAY_PORT"])
    argv = [metrics_binary(PUSHGATEWAY) or "prometheus-pushgateway", f"--web.listen-address={LOOPBACK}:{port}",
            f"--persistence.file={d / 'pushgateway.data'}", "--persistence.interval=1m"]
    return Service(PUSHGATEWAY, PUSHGATEWAY, argv, d, [("PUSHGATEWAY_PORT", port)])


STATSD_MAPPINGS = REPO / "docker" / "statsd-exporter" / "airflow-mappings.yml"


def mlflow_scrape_password_file(env: dict) -> Path:
    return dirs(env)["prometheus"] / "mlflow_admin_password"


def prometheus_config(env: dict) -> dict:
    """The production compose's scrape jobs on this stack's ports: the Pushgateway (honor_labels keeps
    job/stage), MLflow's /metrics, Airflow's metrics through statsd_exporter, and Prometheus itself.

    With MLFLOW_AUTH=on MLflow's basic-auth app lets only admins read /metrics (it denies routes without a
    permission rule), so Prometheus logs in as the admin from a 0600 password file (README "Operating it").
    """
    jobs = [{"job_name": "pushgateway", "honor_labels": True,
             "static_configs": [{"targets": [f"{LOOPBACK}:{env['PUSHGATEWAY_PORT']}"]}]}]
    if env.get("MLFLOW_PORT"):  # every resolved env has it; a test's Prometheus over a bare Pushgateway not
        mlflow = {"job_name": "mlflow", "static_configs": [{"targets": [f"{LOOPBACK}:{env['MLFLOW_PORT']}"]}]}
        if mlflow_auth_on(env):
            mlflow["basic_auth"] = {"username": env["MLFLOW_ADMIN_USER"],
                                    "password_file": str(mlflow_scrape_password_file(env))}
        jobs.append(mlflow)
    if env.get("STATSD_EXPORTER_PORT") and metrics_binary(STATSD_EXPORTER):
        jobs.append({"job_name": "airflow",
                     "static_configs": [{"targets": [f"{LOOPBACK}:{env['STATSD_EXPORTER_PORT']}"]}]})
    jobs.append({"job_name": "prometheus", "static_configs": [{"targets": [f"{LOOPBACK}:{env['PROMETHEUS_PORT']}"]}]})
    return {
        "global": {"scrape_interval": EMBEDDED_SCRAPE_INTERVAL, "evaluation_interval": EMBEDDED_SCRAPE_INTERVAL},
        "rule_files": [str(RULES_DIR / "*.rules.yml")],
        "scrape_configs": jobs,
    }


def write_prometheus_config(env: dict) -> Path:
    """prometheus.yml, rewritten on every start (the ports may change); JSON is valid YAML."""
    path = dirs(env)["prometheus"] / "prometheus.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = mlflow_scrape_password_file(env)
    if mlflow_auth_on(env):
        write_private(secret, env["MLFLOW_ADMIN_PASSWORD"])
    else:
        secret.unlink(missing_ok=True)
    path.write_text(json.dumps(prometheus_config(env), indent=2) + "\n")
    return path


def statsd_exporter_service(env: dict) -> Service:
    """Airflow's StatsD in on STATSD_PORT (UDP only), Prometheus series out on STATSD_EXPORTER_PORT."""
    d = dirs(env)[STATSD_EXPORTER]
    port = int(env["STATSD_EXPORTER_PORT"])
    argv = [metrics_binary(STATSD_EXPORTER) or "statsd_exporter", f"--web.listen-address={LOOPBACK}:{port}",
            f"--statsd.listen-udp={LOOPBACK}:{env['STATSD_PORT']}", "--statsd.listen-tcp=",
            f"--statsd.mapping-config={STATSD_MAPPINGS}"]
    return Service(STATSD_EXPORTER, STATSD_EXPORTER, argv, d, [("STATSD_EXPORTER_PORT", port)])


def prometheus_service(env: dict) -> Service:
    d = dirs(env)["prometheus"]
    port = int(env["PROMETHEUS_PORT"])
    argv = [metrics_binary(PROMETHEUS) or "prometheus", f"--config.file={d / 'prometheus.yml'}",
            f"--storage.tsdb.path={d / 'data'}", f"--storage.tsdb.retention.time={EMBEDDED_RETENTION}",
            f"--web.listen-address={LOOPBACK}:{port}"]
    return Service(PROMETHEUS, PROMETHEUS, argv, d, [("PROMETHEUS_PORT", port)])


def postgres_binary(name: str) -> str | None:
    """A Postgres server program: on PATH, else Debian's newest /usr/lib/postgresql/<major>/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: int(p.parts[-3])
                        if p.parts[-3].isdigit() else 0)
    return str(candidates[-1]) if candidates else None


def unprivileged(argv: list[str]) -> list[str]:
    """Postgres refuses to run as root. As root, it runs in a user namespace where this user is
    `nobody`: the server sees itself unprivileged and owning its data folder, while the files stay
    root's on disk under the 0700 LAKEHOUSE_HOME (no chown, no second account)."""
    if os.geteuid() != 0:
        return argv
    import pwd

    nobody = pwd.getpwnam("nobody")
    return ["unshare", "--user", f"--map-user={nobody.pw_uid}", f"--map-group={nobody.pw_gid}", *argv]


def unprivileged_refusal() -> str:
    """Why `unprivileged` cannot work on this machine (root in a container without user namespaces),
    or "" when it can: asked once before Postgres starts, so the failure names its cause."""
    if os.geteuid() != 0:
        return ""
    probe = subprocess.run(unprivileged(["true"]), capture_output=True, text=True)
    return "" if probe.returncode == 0 else f"root without user namespaces ({probe.stderr.strip() or probe.returncode})"


def postgres_data(env: dict) -> Path:
    return dirs(env)[POSTGRES] / "data"


def postgres_service(env: dict) -> Service:
    """Debian's Postgres server on 127.0.0.1:POSTGRES_PORT, TCP only (no unix socket)."""
    binary = postgres_binary("postgres")
    if binary is None:
        raise StackError("the cluster profile needs a Postgres server (Debian: postgresql); "
                         "run `bash scripts/system_deps.sh cluster`")
    port = int(env["POSTGRES_PORT"])
    argv = unprivileged([binary, "-D", str(postgres_data(env)), "-p", str(port), "-c", f"listen_addresses={LOOPBACK}",
                         "-c", "unix_socket_directories=", "-c", "shared_buffers=64MB", "-c", "max_connections=200"])
    return Service(POSTGRES, POSTGRES, argv, dirs(env)[POSTGRES], [("POSTGRES_PORT", port)])


def redis_config(env: dict) -> Path:
    """The compose's redis.conf (password, maxmemory, noeviction) plus this machine's address and folder."""
    from scripts.devstack import compose

    d = dirs(env)[REDIS]
    local = (f"bind {LOOPBACK}\nport {env['REDIS_PORT']}\nprotected-mode yes\ndaemonize no\n"
             f"dir {d}\nsave \"\"\nappendonly yes\nlogfile \"\"\n")
    return write_private(d / "redis.conf", compose.config_content("redis-conf", env) + local)


def redis_service(env: dict) -> Service:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        raise StackError("the cluster profile needs redis-server (Debian: redis-server); "
                         "run `bash scripts/system_deps.sh cluster`")
    port = int(env["REDIS_PORT"])
    return Service(REDIS, REDIS, [binary, str(dirs(env)[REDIS] / "redis.conf")], dirs(env)[REDIS],
                   [("REDIS_PORT", port)])


SPARK_MASTER_CLASS = "org.apache.spark.deploy.master.Master"
SPARK_WORKER_SERVICE = "spark-worker"  # the production compose's worker, whose command the workers run


def spark_worker_names(env: dict) -> list[str]:
    return [f"spark-worker-{i}" for i in range(1, int(env.get("SPARK_WORKERS") or 2) + 1)]


def spark_services(env: dict) -> list[Service]:
    """The cluster profile's standalone master and workers (pyspark's spark-class, no Spark download).

    Each worker runs the production compose's spark-worker entrypoint and command (its cores, memory
    and master from the same variables), plus what one machine needs: loopback addresses, free ports
    for the workers, a work folder each. SPARK_LOCAL_IP keeps every daemon, web UI and executor
    socket on 127.0.0.1; PYTHONPATH lets executors import the jobs package as a driver does.
    """
    from scripts.devstack import compose

    d = dirs(env)["spark"]
    common = {"SPARK_LOCAL_IP": LOOPBACK, "SPARK_NO_DAEMONIZE": "1", "PYTHONPATH": str(REPO),
              "SPARK_DAEMON_MEMORY": env.get("SPARK_DAEMON_MEMORY") or "256m", "JAVA_HOME": env["JAVA_HOME"],
              "SPARK_LOG_DIR": str(d / "logs")}
    port, ui = int(env["SPARK_MASTER_PORT"]), int(env["SPARK_MASTER_WEBUI_PORT"])
    master = Service(SPARK_MASTER_PROCESS, SPARK_CLUSTER,
                     [str(JOBS_VENV / "bin" / "spark-class"), SPARK_MASTER_CLASS, "--host", LOOPBACK,
                      "--port", str(port), "--webui-port", str(ui)],
                     d / "master", [("SPARK_MASTER_PORT", port), ("SPARK_MASTER_WEBUI_PORT", ui)], common)
    *worker, master_url = compose.service_command(SPARK_WORKER_SERVICE, env)
    worker_env = compose.service_environment(SPARK_WORKER_SERVICE, env)
    workers = []
    for name in spark_worker_names(env):
        work = d / name
        argv = [*worker, "--host", LOOPBACK, "--port", "0", "--webui-port", "0", "--work-dir", str(work), master_url]
        workers.append(Service(name, SPARK_CLUSTER, argv, work,
                               [], {**worker_env, **common, "SPARK_WORKER_DIR": str(work)}))
    return [master, *workers]


def all_services(env: dict) -> list[Service]:
    """Every process the stack may run, in start order (the receiver only when alerts go to it)."""
    receiver = [alert_receiver_service(env)] if alert_receiver_used(env) else []
    running = catalog_services(env)
    metastore = [hive_metastore_service(env)] if HIVE_METASTORE in running else []
    trino = [trino_service(env)] if TRINO in running else []
    metrics = [*([pushgateway_service(env)] if PUSHGATEWAY in running else []),
               *([prometheus_service(env)] if PROMETHEUS in running else []),
               *([statsd_exporter_service(env)] if STATSD_EXPORTER in running else [])]
    spark = spark_services(env) if SPARK_CLUSTER in running else []
    stores = [*([postgres_service(env)] if POSTGRES in running else []),
              *([redis_service(env)] if REDIS in running else [])]
    return [seaweedfs_service(env), *stores, *metastore, *trino, mlflow_service(env), *spark, *metrics, *receiver,
            *airflow_services(env)]


def parse_services(names: list[str] | str | None) -> list[str]:
    """Validated service names in start order; empty or None means all of them."""
    if isinstance(names, str):
        names = names.split(",")
    wanted = [n.strip().lower() for n in (names or []) if n.strip()]
    unknown = sorted(set(wanted) - set(SERVICE_NAMES))
    if unknown:
        raise StackError(f"unknown service(s) {', '.join(unknown)}; choose from {', '.join(SERVICE_NAMES)}")
    return [n for n in SERVICE_NAMES if n in wanted] if wanted else list(SERVICE_NAMES)


def selected_services(env: dict | None = None) -> list[str]:
    """What `up` starts and `status` judges: LAKEHOUSE_SERVICES, default all (the metastore only for hive)."""
    chosen = parse_services(os.environ.get("LAKEHOUSE_SERVICES"))
    return [n for n in chosen if env is None or n in catalog_services(env)]


def service_processes(env: dict, name: str) -> list[str]:
    """Process names (pid files) of one service of SERVICE_NAMES; Airflow's include the alert receiver it sends to."""
    if name == SPARK_CLUSTER:
        return [SPARK_MASTER_PROCESS, *spark_worker_names(env)]
    if name != "airflow":
        return [name]
    return [s.name for s in airflow_services(env)] + ([ALERT_RECEIVER] if alert_receiver_used(env) else [])
