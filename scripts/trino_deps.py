#!/usr/bin/env python3
"""`make deps` step 5: Trino's server and CLI from Maven Central into var/trino, or why not.

Trino 476 needs Java 24+: without such a JDK (TRINO_JAVA_HOME, else the Temurin 25 default) the
step says Trino is unavailable and why, downloads nothing and succeeds, so the rest of the stack
still builds. Otherwise `mvn -C` (checksums verified) copies the artifacts pinned in
requirements/trino/pom.xml, and lib/ plus the iceberg plugin are unpacked with their hard links
resolved (maven-dependency-plugin's unpack leaves those empty). Stdlib only: runs before any venv.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.devstack.trino import TRINO_HOME, trino_java_home, trino_java_problem  # noqa: E402

POM = REPO / "requirements" / "trino" / "pom.xml"
# Members kept, below the tarball's trino-server-<version>/ folder.
KEEP = re.compile(r"^(lib/|plugin/iceberg/|NOTICE$)")


def _dotenv_value(name: str) -> str:
    """TRINO_JAVA_HOME from the environment, else from .env (deps runs before `make env` may)."""
    if os.environ.get(name):
        return os.environ[name]
    for path in (REPO / ".env", REPO / ".env.example"):
        if path.exists():
            for line in path.read_text().splitlines():
                if line.startswith(f"{name}="):
                    return line.split("=", 1)[1].strip().strip("'\"")
    return ""


def unpack(tarball: Path, dest: Path) -> tuple[int, int]:
    """Extract the kept members into dest; (files, bytes on disk). Two streaming passes over the gzip."""
    with tarfile.open(tarball, "r|gz") as tar:
        members = [(m.name, m.linkname if m.islnk() else None) for m in tar]
    def strip(name: str) -> str:
        return name.split("/", 1)[1] if "/" in name else ""

    wanted = {strip(n): link for n, link in members if KEEP.match(strip(n)) and not n.endswith("/")}
    targets = {strip(link) for link in wanted.values() if link}
    stash = dest.parent / "linked"
    with tarfile.open(tarball, "r|gz") as tar:
        for m in tar:
            rel = strip(m.name)
            if not m.isfile() or (rel not in wanted and rel not in targets):
                continue
            out = dest / rel if rel in wanted else stash / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(m) as src, open(out, "wb") as fh:
                shutil.copyfileobj(src, fh, 1 << 20)
    for rel, link in wanted.items():
        if link:
            target = strip(link)
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            os.link(dest / target if target in wanted else stash / target, out)
    shutil.rmtree(stash, ignore_errors=True)
    inodes = {p.stat().st_ino: p.stat().st_size for p in dest.rglob("*") if p.is_file()}
    return len(wanted), sum(inodes.values())


def main() -> int:
    java_home = trino_java_home(_dotenv_value("TRINO_JAVA_HOME"))
    problem = trino_java_problem(java_home)
    if problem:
        print(f"Trino unavailable: {problem}. Skipped the download; the stack runs without Trino "
              "(set TRINO_JAVA_HOME in .env to a JDK 24+ and rerun `make deps`).")
        return 0
    shutil.rmtree(TRINO_HOME, ignore_errors=True)
    subprocess.run(["mvn", "-B", "-q", "-C", "-f", str(POM), "dependency:copy"], check=True)
    download = TRINO_HOME / "download"
    files, size = unpack(download / "trino-server.tar.gz", TRINO_HOME / "server")
    (download / "trino-cli.jar").rename(TRINO_HOME / "trino-cli.jar")
    shutil.rmtree(download)
    shutil.rmtree(TRINO_HOME / "maven", ignore_errors=True)
    print(f"Trino: {files} files ({size / 1e6:.0f} MB on disk) in {TRINO_HOME / 'server'}, "
          f"CLI {TRINO_HOME / 'trino-cli.jar'}, Java {java_home}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
