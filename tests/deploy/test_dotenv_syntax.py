""".env.example and a `make env` .env read the same in a POSIX shell, python-dotenv and our parser.

The shell is the real one (`sh -c 'set -a; . FILE; env -0'` in an empty environment), python-dotenv
is the installed library (`dotenv_values`, interpolation on, as its users call it), ours is
scripts/devstack/dotenv.py (what the embedded stack reads). Docker Compose is not installed here:
its documented env-file rules (https://docs.docker.com/compose/environment-variables/env-file/:
single-quoted values literal, double-quoted and unquoted ones interpolated, ` #` starts an inline
comment after an unquoted value) are covered by the portable form every assignment must have.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from dotenv import dotenv_values

from scripts.devstack import dotenv

REPO = Path(__file__).resolve().parents[2]
ENV_EXAMPLE = REPO / ".env.example"

# Values that broke or could break one of the readers: blanks, globs, comment and dollar signs,
# JSON with double quotes, a quote of each kind, a URL with a query string.
TRICKY = {
    "PIPELINE_SCHEDULE": "0 2 * * *",
    "SPARK_MASTER": "local[*]",
    "MLOPS_MLFLOW_ALLOWED_HOSTS": "mlflow,localhost:*,127.0.0.1:*",
    "ICEBERG_CATALOG_PROPERTIES": '{"io-impl": "org.apache.iceberg.aws.s3.S3FileIO", "s3.path-style-access": "true"}',
    "RAW_COLUMN_ALIASES": '{"zeit": "exchange_ts", "preis": "price"}',
    "A_HASH": "abc # not a comment",
    "A_HASH_START": "#abc",
    "A_DOLLAR": "pa$$word$PATH$",
    "A_TILDE": "~/data",
    "AN_APOSTROPHE": "it's fine",
    "A_URL": "https://hooks.example.com/x?a=1&b=2;c",
    "EMPTY": "",
    "A_BACKTICK": "`date`",
}


def shell_values(path: Path) -> dict[str, str]:
    """What `set -a; . FILE` exports, read in an empty environment (so nothing leaks in)."""
    sh = shutil.which("sh")
    assert sh
    done = subprocess.run(["env", "-i", sh, "-c", 'set -a; . "$1" || exit 3; env -0', "sh", str(path)],
                          capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr.decode()
    assert not done.stderr, f"sh complained while sourcing {path}: {done.stderr.decode()}"
    pairs = (item.split(b"=", 1) for item in done.stdout.split(b"\0") if item)
    return {k.decode(): v.decode() for k, v in pairs}


def assert_all_readers_agree(path: Path) -> dict[str, str]:
    ours = dotenv.read_env_file(path)
    theirs = dict(dotenv_values(path))
    shell = shell_values(path)
    assert ours, path
    for key, value in ours.items():
        assert theirs.get(key) == value, f"{key}: python-dotenv {theirs.get(key)!r} != ours {value!r}"
        assert shell.get(key) == value, f"{key}: sh {shell.get(key)!r} != ours {value!r}"
    assert set(theirs) == set(ours)
    return ours


def test_env_example_reads_the_same_in_sh_python_dotenv_and_our_parser():
    values = assert_all_readers_agree(ENV_EXAMPLE)
    assert values["PIPELINE_SCHEDULE"] == "0 2 * * *"
    assert values["SPARK_MASTER"] == "local[*]"


def test_every_assignment_in_env_example_has_the_portable_form():
    """The form Compose's documented rules read like the others: no `$` it would interpolate."""
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    odd = [line for line in lines if dotenv.parse_line(line) and not dotenv.portable(line)]
    assert not odd, f"quote these the portable way (see the head of .env.example): {odd}"


def test_a_generated_env_reads_the_same_everywhere(tmp_path):
    path = tmp_path / ".env"
    generated = dotenv.ensure_env(path, ENV_EXAMPLE, log=lambda msg: None)
    assert "AIRFLOW__CORE__FERNET_KEY" in generated and "POSTGRES_PASSWORD" in generated
    values = assert_all_readers_agree(path)
    for key in generated:
        assert not values[key].startswith(dotenv.PLACEHOLDER) and len(values[key]) >= 20, key
    lines = path.read_text(encoding="utf-8").splitlines()
    assert all(dotenv.portable(line) for line in lines if dotenv.parse_line(line))


@pytest.mark.parametrize("key", sorted(TRICKY))
def test_format_value_round_trips_through_every_reader(tmp_path, key):
    path = tmp_path / ".env"
    line = f"{key}={dotenv.format_value(TRICKY[key])}"
    assert dotenv.portable(line), line
    path.write_text(line + "\n", encoding="utf-8")
    assert assert_all_readers_agree(path) == {key: TRICKY[key]}


def test_values_no_quoting_can_carry_are_refused():
    for value in ("it's $HOME", "${HOME}/x", "back\\slash", "two\nlines"):
        with pytest.raises(ValueError):
            dotenv.format_value(value)


def test_an_inline_comment_after_a_value_is_no_part_of_it(tmp_path):
    path = tmp_path / ".env"
    path.write_text("A=plain # a comment\nB='0 2 * * *' # another\nC=x#y\n", encoding="utf-8")
    assert assert_all_readers_agree(path) == {"A": "plain", "B": "0 2 * * *", "C": "x#y"}


def test_make_env_quotes_the_values_an_older_env_left_bare(tmp_path):
    """A .env written from an older example (`PIPELINE_SCHEDULE=0 2 * * *`) becomes sourceable."""
    path = tmp_path / ".env"
    dotenv.ensure_env(path, ENV_EXAMPLE, log=lambda msg: None)
    text = path.read_text(encoding="utf-8")
    old = (text.replace("PIPELINE_SCHEDULE='0 2 * * *'", "PIPELINE_SCHEDULE=0 2 * * *")
               .replace("SPARK_MASTER='local[*]'", "SPARK_MASTER=local[*]")
           + "MY_OWN=\"${LAKEHOUSE_HOME}/x\"\n")
    path.write_text(old, encoding="utf-8")
    before = dotenv.read_env_file(path)
    messages = []
    assert dotenv.ensure_env(path, ENV_EXAMPLE, log=messages.append) == []
    assert messages and "quoted for sh and Compose: PIPELINE_SCHEDULE, SPARK_MASTER" in messages[0]
    assert dotenv.read_env_file(path) == before
    new = path.read_text(encoding="utf-8")
    assert "PIPELINE_SCHEDULE='0 2 * * *'\n" in new and "SPARK_MASTER='local[*]'\n" in new
    assert 'MY_OWN="${LAKEHOUSE_HOME}/x"\n' in new  # a `$` may be meant for the shell: left as written
    assert path.stat().st_mode & 0o777 == 0o600
