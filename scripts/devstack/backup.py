"""Backups of the embedded stack that restore: `make backup`, `make restore` (issue 17, item 4).

What cannot be recomputed is archived: Airflow's metadata database and task logs, MLflow's backend
store (runs, registry, aliases such as @champion, the basic-auth users), SeaweedFS's data (the
Iceberg warehouse with the quarantine tables, MLflow's artifacts), the Iceberg catalog (the Hive
metastore's Derby database, or the JDBC catalog), the RAW deliveries and the alert history. What
the stack regenerates at every start is left out: configuration files, Trino's and Prometheus's
state, pid files, service logs, certificates and S3 identities written from `.env`.

Consistent by quiescing, the way a filesystem snapshot is: a backup refuses while a DAG run is
queued or running (unless forced), stops every service in `down`'s order (Airflow first, storage
last), copies the state with SQLite's online-backup API for the SQLite files, and starts again
what was running. The embedded stack is one machine; the pause is seconds plus one `up`.

Secrets stay out unless asked for (`--include-secrets`): `.env` and Airflow's generated password
file. Restoring without them needs the same `.env` (keep it in the team's password store).
SeaweedFS's own key-encryption files under its data folder are part of the data and always go in,
so an archive is private (0600) either way.

Versioned: `lakehouse-backup-<UTC time>.tar.gz` with a `MANIFEST.json` (format version, time, the
git commit, the catalog kind, each component's files, bytes and SHA-256); `BACKUP_KEEP` newest
archives are kept. A restore checks the manifest, refuses while a service runs, moves the current
state aside (never deletes it) and unpacks; `make up` then starts the restored stack.
"""
from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from scripts.devstack.env import ALERT_RECEIVER, REPO, SERVICE_NAMES, StackError, cluster_profile
from scripts.devstack.processes import dirs, read_pid

FORMAT_VERSION = 1
PREFIX = "lakehouse-backup-"
MANIFEST = "MANIFEST.json"
DEFAULT_KEEP = 7
ACTIVE_STATES = ("queued", "running")


@dataclass(frozen=True)
class Component:
    """One folder of LAKEHOUSE_HOME: what of it is state (globs relative to the folder)."""

    name: str
    folder: str                      # key of processes.dirs()
    include: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    secret: bool = False             # only with --include-secrets


COMPONENTS = (
    Component("airflow", "airflow", ("airflow.db", "logs/**")),
    Component("airflow-secrets", "airflow", ("simple_auth_manager_passwords.json.generated",), secret=True),
    Component("mlflow", "mlflow", ("*.db",)),
    # mini.options is weed mini's record of its last flags (ports included), written at every start.
    Component("seaweedfs", "seaweedfs", ("data/**",), ("data/mini.options",)),
    Component("hive-metastore", "hive-metastore", ("metastore_db/**",), ("*.lck", "metastore_db/tmp/**")),
    Component("iceberg-catalog", "iceberg", ("**",)),
    Component("raw", "raw", ("**",)),
    Component("alerts", "alerts", ("**",)),
)
SQLITE_SUFFIXES = (".db",)
SQLITE_SIDECARS = ("-wal", "-shm", "-journal")


def backup_dir(env: dict) -> Path:
    return Path(env.get("BACKUP_DIR") or REPO / "var" / "backups").expanduser()


def backup_keep(env: dict) -> int:
    keep = int(env.get("BACKUP_KEEP") or DEFAULT_KEEP)
    if keep < 1:
        raise StackError(f"BACKUP_KEEP={keep}: keep at least one backup")
    return keep


def _matches(rel: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(rel, p) or (p.endswith("/**") and rel.startswith(p[:-3] + "/")) for p in patterns)


def component_root(env: dict, comp: Component) -> Path:
    folders = {**dirs(env), "alerts": Path(env["LAKEHOUSE_HOME"]) / "alerts"}
    return folders[comp.folder]


def component_files(env: dict, comp: Component, everything: bool = False) -> Iterator[tuple[Path, str]]:
    """(file, path relative to its folder) of one component, sorted. SQLite sidecars and the excluded
    files are left out, unless `everything` (a restore moves those aside too)."""
    root = component_root(env, comp)
    if not root.is_dir():
        return
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = path.relative_to(root).as_posix()
        sidecar = next((x for x in SQLITE_SIDECARS if rel.endswith(x)), "")
        if not _matches(rel[:len(rel) - len(sidecar)], comp.include):  # a WAL goes with its database
            continue
        if everything or not (rel.endswith(SQLITE_SIDECARS) or _matches(rel, comp.exclude)):
            yield path, rel


def _sqlite_copy(source: Path, target: Path) -> None:
    """SQLite's online backup: one self-contained file, the WAL folded in, consistent at one moment."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


def _is_sqlite(path: Path) -> bool:
    if path.suffix not in SQLITE_SUFFIXES:
        return False
    with path.open("rb") as fh:
        return fh.read(16) == b"SQLite format 3\x00"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def write_archive(env: dict, out_dir: Path, include_secrets: bool = False, now: dt.datetime | None = None
                  ) -> tuple[Path, dict]:
    """The archive of a quiesced stack (no service may be writing: see `backup`), and its manifest."""
    now = now or dt.datetime.now(dt.UTC)
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    name = f"{PREFIX}{now:%Y%m%dT%H%M%S}Z"
    target = out_dir / f"{name}.tar.gz"
    if target.exists():
        raise StackError(f"{target} exists already")
    manifest: dict = {"format": FORMAT_VERSION, "created_at": now.isoformat(timespec="seconds"),
                      "git_commit": _git_commit(), "catalog": env.get("LAKEHOUSE_CATALOG") or "hive",
                      "lakehouse_home": env["LAKEHOUSE_HOME"], "includes_secrets": include_secrets, "components": {}}
    partial = out_dir / f".{name}.partial"
    with tempfile.TemporaryDirectory(prefix="lakehouse-backup-") as tmp, \
            tarfile.open(partial, "w:gz", compresslevel=6) as tar:
        os.chmod(partial, 0o600)
        for comp in COMPONENTS:
            if comp.secret and not include_secrets:
                continue
            files = []
            for path, rel in component_files(env, comp):
                source = path
                if _is_sqlite(path):
                    source = Path(tmp) / f"{comp.name}-{rel.replace('/', '_')}"
                    _sqlite_copy(path, source)
                files.append({"path": rel, "bytes": source.stat().st_size, "sha256": _sha256(source)})
                tar.add(source, arcname=f"{comp.name}/{rel}", recursive=False)
            manifest["components"][comp.name] = {"folder": comp.folder, "files": files,
                                                 "bytes": sum(f["bytes"] for f in files)}
        if include_secrets and (env_file := Path(env.get("LAKEHOUSE_ENV_FILE") or REPO / ".env")).is_file():
            tar.add(env_file, arcname="secrets/.env", recursive=False)
            manifest["env_file"] = "secrets/.env"
        data = json.dumps(manifest, indent=2, sort_keys=True).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mtime, info.mode = len(data), int(now.timestamp()), 0o600
        tar.addfile(info, io.BytesIO(data))
    partial.rename(target)  # a crash mid-write leaves a dot-file, never a truncated archive
    return target, manifest


def archives(out_dir: Path) -> list[Path]:
    """Complete archives, oldest first (their names sort by time)."""
    return sorted(out_dir.glob(f"{PREFIX}*.tar.gz")) if out_dir.is_dir() else []


def prune(out_dir: Path, keep: int) -> list[Path]:
    """Removes all but the `keep` newest archives; returns the removed ones."""
    old = archives(out_dir)[:-keep]
    for path in old:
        path.unlink()
    return old


def running_services(env: dict) -> list[str]:
    """The services of SERVICE_NAMES with a live process (from the pid files, as `status` reads them)."""
    run = dirs(env)["run"]
    alive = {p.stem for p in run.glob("*.pid") if read_pid(env, p.stem)} if run.is_dir() else set()
    return [s for s in SERVICE_NAMES
            if s in alive or (s == "airflow" and any(a.startswith("airflow-") or a == ALERT_RECEIVER for a in alive))]


def active_runs(env: dict) -> list[str]:
    """DAG runs queued or running, as "dag_id/run_id"; a backup taken under them would be half a night."""
    from scripts.devstack.airflow_api import Airflow

    airflow = Airflow(env)
    found = []
    for state in ACTIVE_STATES:
        status, body = airflow.call("GET", f"/api/v2/dags/~/dagRuns?state={state}&limit=100")
        if status != 200:
            raise StackError(f"cannot list {state} DAG runs (HTTP {status}): {body}")
        found += [f"{r['dag_id']}/{r['dag_run_id']}" for r in body.get("dag_runs", [])]
    return found


def refuse_cluster_profile(env: dict) -> None:
    """The cluster profile keeps Airflow's, MLflow's and the metastore's state in Postgres, which these
    file archives do not hold: refused, rather than an archive that would restore without them."""
    if cluster_profile(env):
        raise StackError("make backup/restore cover the default profile's files; the cluster profile keeps Airflow, "
                         "MLflow and the metastore in Postgres: back it up with pg_dumpall (README, Backups)")


def backup(env: dict, stop: Callable[[dict], object], start: Callable[[dict, list[str]], object], *,
           out_dir: Path | None = None, keep: int | None = None, include_secrets: bool = False,
           force: bool = False) -> tuple[Path, dict, list[Path]]:
    """Quiesce, archive, start again what ran, prune. Returns the archive, its manifest, the pruned ones."""
    refuse_cluster_profile(env)
    out_dir = out_dir or backup_dir(env)
    keep = keep or backup_keep(env)
    running = running_services(env)
    if "airflow" in running and not force and (busy := active_runs(env)):
        raise StackError(f"{len(busy)} DAG run(s) queued or running ({', '.join(busy[:5])}): a backup now would "
                         "catch a night half-written; wait for them, or pass --force")
    if running:
        stop(env)
    try:
        archive, manifest = write_archive(env, out_dir, include_secrets)
    finally:
        if running:
            start(env, running)
    return archive, manifest, prune(out_dir, keep)


def read_manifest(archive: Path) -> dict:
    with tarfile.open(archive, "r:gz") as tar:
        return _manifest_of(tar, archive)


def _manifest_of(tar: tarfile.TarFile, archive: Path) -> dict:
    try:
        member = tar.extractfile(MANIFEST)
    except KeyError:
        member = None
    if member is None:
        raise StackError(f"{archive} has no {MANIFEST}: not a lakehouse backup")
    manifest = json.loads(member.read())
    if manifest.get("format") != FORMAT_VERSION:
        raise StackError(f"{archive}: backup format {manifest.get('format')}, this version reads {FORMAT_VERSION}")
    return manifest


def resolve_archive(env: dict, which: str) -> Path:
    if which in ("", "latest"):
        found = archives(backup_dir(env))
        if not found:
            raise StackError(f"no backup in {backup_dir(env)} (BACKUP_DIR)")
        return found[-1]
    path = Path(which).expanduser()
    if not path.is_file():
        raise StackError(f"{path}: no such backup")
    return path


def restore(env: dict, archive: Path, now: dt.datetime | None = None) -> tuple[Path, dict]:
    """Unpacks `archive` into LAKEHOUSE_HOME; returns where the state it replaced went, and the manifest."""
    refuse_cluster_profile(env)
    if running := running_services(env):
        raise StackError(f"services still running ({', '.join(running)}): `make down` first")
    known = {c.name: c for c in COMPONENTS}
    now = now or dt.datetime.now(dt.UTC)
    aside = Path(env["LAKEHOUSE_HOME"]) / f"pre-restore-{now:%Y%m%dT%H%M%S}Z"
    with tarfile.open(archive, "r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        manifest = _manifest_of(tar, archive)
        for name, entry in manifest["components"].items():
            if name not in known:
                raise StackError(f"{archive}: unknown component {name!r} (made by a newer version?)")
            for f in entry["files"]:
                member = members.get(f"{name}/{f['path']}")
                if member is None or not member.isfile() or member.size != f["bytes"]:
                    raise StackError(f"{archive}: {name}/{f['path']} missing or truncated")
        for name in manifest["components"]:  # moved aside only once the archive is known to be whole
            comp = known[name]
            for path, rel in list(component_files(env, comp, everything=True)):
                dest = aside / comp.folder / rel
                dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                shutil.move(path, dest)
        for name, entry in manifest["components"].items():
            folder = component_root(env, known[name])
            for f in entry["files"]:
                dest = folder / f["path"]
                dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                with tar.extractfile(members[f"{name}/{f['path']}"]) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out)
                os.chmod(dest, 0o600)
                if _sha256(dest) != f["sha256"]:
                    raise StackError(f"{dest}: checksum differs from the manifest's")
    return aside, manifest
