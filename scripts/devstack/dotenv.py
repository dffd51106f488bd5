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


def parse_line(line: str) -> tuple[str, str] | None:
    """Return (key, value) for an assignment line, None for comments and blanks."""
    if not line.strip() or line.lstrip().startswith("#"):
        return None
    m = _LINE.match(line.rstrip("\r\n"))
    if not m:
        return None
    value = m.group(2).strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return m.group(1), value


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a dotenv file (KEY=VALUE, comments, optional quotes; no interpolation)."""
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
    return f"{key}={generate_secret(key)}\n"


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
    comments from the example), and leftover ``change-me`` placeholders are filled.
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
    filled = [_fill(line, generated) for line in current_lines]

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

    if not generated and not appended:
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
    log(msg)
    return generated
