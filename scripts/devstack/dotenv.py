"""The project's dotenv files: parse them, and create or complete `.env` from `.env.example`.

Placeholders (values starting with ``change-me``) are replaced with fresh secrets so that no two
checkouts share credentials and nothing secret is ever committed. Standard library only, because
`make env` runs it before any virtual environment exists.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import string
import sys
import tempfile
from pathlib import Path

PLACEHOLDER = "change-me"
_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$")

# The one form of KEY=VALUE that a POSIX shell (`set -a; . ./.env`), Docker Compose and
# python-dotenv all read alike (README "Configuration"): no blanks around `=`; the value bare (only
# the characters below: no blanks, globs, `$`, `~`, quotes or `#`), or in single quotes (literal
# everywhere; no `'` or backslash inside, which python-dotenv and Compose would unescape but a
# shell would not; no `${`, which python-dotenv expands even there), or in double quotes (no `$`,
# back-tick, `"` or backslash inside: no expansion, no escapes); then optionally blanks and a
# `# comment`.
_BARE = re.compile(r"[A-Za-z0-9_@%+=:,./-]*")
_PORTABLE = re.compile(r"(?:export\s+)?[A-Za-z_][A-Za-z0-9_]*="
                       r"""(?:[A-Za-z0-9_@%+=:,./-]*|'(?:[^'\\\n$]|\$(?!\{))*'|"[^"$`\\\n]*")(?:[ \t]+#.*)?""")


def format_value(value: str) -> str:
    """``value`` written so that a shell, Docker Compose and python-dotenv all read it back unchanged.

    Bare when it is made of harmless characters, else single-quoted (literal, so `$`, `*`, `#` and
    JSON are safe), else double-quoted (a value holding `'`). A value with both `'` and `$`, a
    `${`, a backslash or a newline has no such form: refused rather than written ambiguously.
    """
    if "${" in value:
        raise ValueError(f"python-dotenv expands ${{...}} even in single quotes: {value!r}")
    if _BARE.fullmatch(value):
        return value
    if not any(c in value for c in "'\\\n\r"):
        return f"'{value}'"
    if not any(c in value for c in '"$`\\\n\r'):
        return f'"{value}"'
    raise ValueError(f"no quoting reads the same in sh, Compose and python-dotenv: {value!r}")


def portable(line: str) -> bool:
    """Whether an assignment line is in the form every tool reads alike (see ``_PORTABLE``)."""
    return bool(_PORTABLE.fullmatch(line.rstrip("\r\n")))


def parse_value(raw: str) -> str:
    """The value of the text after ``=``, read as a POSIX shell would (and Compose, python-dotenv).

    Single quotes: literal up to the next `'`. Double quotes: a backslash escapes `$`, back-tick,
    `"` and itself, as in sh. Unquoted: up to blanks followed by `#` (an inline comment), trimmed.
    No interpolation: `.env.example` and `make env` never put a `$` where a tool would expand it.
    """
    raw = raw.strip()
    if raw[:1] == "'" and "'" in raw[1:]:
        return raw[1:raw.index("'", 1)]
    if raw[:1] == '"':
        out, i = [], 1
        while i < len(raw) and raw[i] != '"':
            if raw[i] == "\\" and i + 1 < len(raw) and raw[i + 1] in '$`"\\':
                i += 1
            out.append(raw[i])
            i += 1
        if i < len(raw):
            return "".join(out)
    return re.sub(r"\s+#.*$", "", raw).strip()


def parse_line(line: str) -> tuple[str, str] | None:
    """Return (key, value) for an assignment line, None for comments and blanks."""
    if not line.strip() or line.lstrip().startswith("#"):
        return None
    m = _LINE.match(line.rstrip("\r\n"))
    if not m:
        return None
    return m.group(1), parse_value(m.group(2))


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a dotenv file (KEY=VALUE, comments, quotes as in sh; no interpolation)."""
    result: dict[str, str] = {}
    if not path.exists():
        return result
    for line in path.read_text(encoding="utf-8").splitlines():
        parsed = parse_line(line)
        if parsed:
            result[parsed[0]] = parsed[1]
    return result


def generate_secret(name: str) -> str:
    """Pick the secret format the consuming service validates (S3 key shapes, Fernet)."""
    upper = name.upper()
    if "ACCESS_KEY_ID" in upper:
        alphabet = string.ascii_uppercase + string.digits
        return "".join(secrets.choice(alphabet) for _ in range(20))
    if "SECRET_ACCESS_KEY" in upper:
        alphabet = string.ascii_letters + string.digits
        return "".join(secrets.choice(alphabet) for _ in range(40))
    if "FERNET" in upper:
        return base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")
    if "JWT" in upper:
        # Airflow signs with HS512; PyJWT warns below 64 bytes of key.
        return secrets.token_urlsafe(64)
    if upper.endswith("PASSWORD"):
        # Passwords end up inside DB/broker URLs and command lines (docker-compose-mlops.yml):
        # letters and digits only, so no quoting or URL escaping is ever needed.
        alphabet = string.ascii_letters + string.digits
        return "".join(secrets.choice(alphabet) for _ in range(40))
    return secrets.token_urlsafe(32)


def _fill(line: str, generated: list[str]) -> str:
    parsed = parse_line(line)
    if parsed is None or not parsed[1].startswith(PLACEHOLDER):
        return line
    key = parsed[0]
    generated.append(key)
    return f"{key}={format_value(generate_secret(key))}\n"


def _requote(line: str, requoted: list[str]) -> str:
    """An assignment line another tool would misread (say ``PIPELINE_SCHEDULE=0 2 * * *``) rewritten
    in the portable form, with the value it had for this parser; other lines unchanged."""
    parsed = parse_line(line)
    if parsed is None or portable(line) or "$" in line:  # a `$` may be meant for the shell: left alone
        return line
    try:
        text = f"{parsed[0]}={format_value(parsed[1])}\n"
    except ValueError:
        return line
    requoted.append(parsed[0])
    return text


def _write_private(path: Path, text: str) -> None:
    """Write atomically with mode 0600 so the secrets are never world-readable, even briefly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".env.", dir=str(path.parent))
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    os.chmod(path, 0o600)


def ensure_env(path: Path, example: Path, force: bool = False, log=None) -> list[str]:
    """Create `path` from `example`, or complete an existing one; return the generated names.

    An existing file keeps its values: only variables missing from it are appended (with their
    comments from the example), leftover ``change-me`` placeholders are filled, and values another
    tool would misread (an unquoted ``0 2 * * *`` from an older example) are quoted.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    path, example = Path(path), Path(example)
    example_lines = example.read_text(encoding="utf-8").splitlines(keepends=True)
    generated: list[str] = []

    if force or not path.exists():
        text = "".join(_fill(line, generated) for line in example_lines)
        _write_private(path, text)
        log(f"wrote {path}" + (f"; generated: {', '.join(generated)}" if generated else ""))
        return generated

    current_lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    if current_lines and not current_lines[-1].endswith("\n"):
        current_lines[-1] += "\n"
    present = {p[0] for p in map(parse_line, current_lines) if p}
    requoted: list[str] = []
    filled = [_fill(_requote(line, requoted), generated) for line in current_lines]

    appended: list[str] = []
    comments: list[str] = []
    for line in example_lines:
        parsed = parse_line(line)
        if parsed is None:
            # Keep the comment block right above a missing variable, drop the rest.
            comments = comments + [line] if line.lstrip().startswith("#") else []
            continue
        if parsed[0] not in present:
            appended.extend(comments)
            appended.append(_fill(line, generated))
        comments = []

    if not generated and not appended and not requoted:
        if os.stat(path).st_mode & 0o077:
            os.chmod(path, 0o600)
        return []
    if appended:
        filled.append("\n# --- Added from .env.example by make_env.py ---\n")
        filled.extend(appended)
    _write_private(path, "".join(filled))
    added = [p[0] for p in map(parse_line, appended) if p]
    msg = f"updated {path}"
    if added:
        msg += f"; added: {', '.join(added)}"
    if generated:
        msg += f"; generated: {', '.join(generated)}"
    if requoted:
        msg += f"; quoted for sh and Compose: {', '.join(requoted)}"
    log(msg)
    return generated
