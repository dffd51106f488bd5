""".env.example documents exactly the variables the code reads: nothing unread, nothing missing.

Both directions are checked over the whole repository (the tests excepted; they set variables for
themselves): the Python code of every area, the compose file, the Dockerfile, the shell scripts and
the Makefile. Standard library only, like the code it reads.
"""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENV_EXAMPLE = REPO / ".env.example"
COMPOSE_FILE = REPO / "docker-compose-mlops.yml"
DOCKERFILE = REPO / "docker" / "airflow" / "Dockerfile"
SKIPPED_PARTS = {".git", "var", "tests", "__pycache__", "node_modules"}

# Reads in Python: os.environ[...] (not an assignment), os.environ.get / os.getenv, and the
# project's readers, which all take the variable's name first: contract.env / switch,
# jobs.contract env / switch, scripts/devstack/env.py _knob, bench/run.py _env_int.
_PY_READ = re.compile(
    r"""(?:\bos\.environ\.get|\bos\.getenv|\b_?env|\b_?switch|\b_knob|\b_env_int)\(\s*["']([A-Z][A-Z0-9_]*)["']"""
    r"""|\bos\.environ\[\s*["']([A-Z][A-Z0-9_]*)["']\s*\](?!\s*=[^=])""")
_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")
_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=", re.M)

# Set by the tools themselves, not by this project's configuration: read, never documented.
SET_BY_TOOLS = {
    "JAVA_HOME",  # the JDK install (the image sets it; scripts/devstack detects it when unset)
    "PATH",  # the shell's; scripts/devstack puts Java's bin/ in front of it for Airflow
    "PYTHONPATH",  # the caller's; the embedded stack puts the repository root in front of it
    "AIRFLOW_USER_HOME_DIR",  # set by the apache/airflow base image, used in the Dockerfile
}
# Documented, and read under a name derived at run time rather than spelled out: scripts/devstack/env.py
# grpc_var() turns SEAWEEDFS_<SERVICE>_PORT into SEAWEEDFS_<SERVICE>_GRPC_PORT.
DERIVED = {"SEAWEEDFS_S3_GRPC_PORT": "SEAWEEDFS_S3_PORT",
           "SEAWEEDFS_MASTER_GRPC_PORT": "SEAWEEDFS_MASTER_PORT",
           "SEAWEEDFS_VOLUME_GRPC_PORT": "SEAWEEDFS_VOLUME_PORT",
           "SEAWEEDFS_FILER_GRPC_PORT": "SEAWEEDFS_FILER_PORT"}


def code_files() -> list[Path]:
    """Every file that may read a variable: code, compose file, Dockerfile, shell scripts, Makefile."""
    files = []
    for path in sorted(REPO.rglob("*")):
        parts = path.relative_to(REPO).parts
        if not path.is_file() or parts[0].startswith(".venv") or SKIPPED_PARTS & set(parts):
            continue
        if path.suffix in (".py", ".sh", ".yml", ".yaml", ".toml") or path.name in ("Dockerfile", "Makefile") \
                or parts[0] == ".ci":
            files.append(path)
    return files


def _without_comment_lines(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def variables_read() -> dict[str, set[str]]:
    """Variable name -> the files that read it."""
    read: dict[str, set[str]] = {}
    for path in code_files():
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".py":
            names = {a or b for a, b in _PY_READ.findall(text)}
        elif path == COMPOSE_FILE:  # interpolated from .env; $$ escapes a container's own variable
            names = set(_REF.findall(_without_comment_lines(text).replace("$$", "")))
        elif path == DOCKERFILE:  # what the build arguments and the image's ENV do not define
            text = _without_comment_lines(text)
            defined = set(re.findall(r"^\s*ARG\s+([A-Z_][A-Z0-9_]*)", text, re.M))
            for block in re.findall(r"^\s*ENV\s+((?:.*\\\n)*.*)", text, re.M):
                defined |= set(re.findall(r"([A-Z_][A-Z0-9_]*)=", block))
            names = {n for n in _REF.findall(text) if n.isupper()} - defined
        else:  # shell and make variables there are the scripts' own
            names = set()
        for name in names:
            read.setdefault(name, set()).add(str(path.relative_to(REPO)))
    return read


def documented() -> tuple[set[str], str]:
    """Names assigned in .env.example, and its whole text (a name in a comment documents it too)."""
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    return set(_ASSIGNMENT.findall(text)), text


def test_the_scanner_sees_every_kind_of_read():
    read = variables_read()
    assert "plugins/lakehouse_mlops/config.py" in read["SPARK_SUBMIT_BINARY"]  # env("...")
    assert "jobs/contract.py" in read["MLFLOW_HTTP_REQUEST_TIMEOUT"]  # env() inside os.environ[...] = ...
    assert "docker-compose-mlops.yml" in read["MLOPS_SPARK_MASTER"]  # ${VAR:-default}
    assert "scripts/devstack/env.py" in read["LAKEHOUSE_ENV_FILE"]  # _knob("...")
    assert "bench/run.py" in read["BENCH_REPEATS"]  # _env_int("...")
    assert "AIRFLOW_USER_HOME_DIR" in read and "ICEBERG_VERSION" not in read  # Dockerfile, ARGs excluded
    assert "VAR" not in read  # a ${VAR} in a compose comment is no read


def test_every_variable_the_code_reads_is_documented_in_env_example():
    names, text = documented()
    undocumented = {name: sorted(files) for name, files in variables_read().items()
                    if name not in names and name not in SET_BY_TOOLS and not re.search(rf"\b{name}\b", text)}
    assert not undocumented, f"document in .env.example (or say why it is set by a tool): {undocumented}"


def test_every_variable_in_env_example_is_read_somewhere():
    names, _ = documented()
    code = "\n".join(path.read_text(encoding="utf-8") for path in code_files())
    unread = sorted(n for n in names - set(DERIVED) if not re.search(rf"\b{n}\b", code))
    assert not unread, f"documented in .env.example but read nowhere: {unread}"
    for name, base in DERIVED.items():
        assert name in names and re.search(rf"\b{base}\b", code) and "_GRPC_PORT" in code, name


def test_the_allow_lists_hold_nothing_stale():
    read = variables_read()
    names, _ = documented()
    assert SET_BY_TOOLS <= set(read), sorted(SET_BY_TOOLS - set(read))
    assert not SET_BY_TOOLS & names, "a variable set by a tool is not project configuration"
