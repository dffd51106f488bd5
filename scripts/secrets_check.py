#!/usr/bin/env python3
"""Refuse to start the production stack with placeholder or weak secrets (the `secrets-check` service).

Compose's `${VAR:?}` stops only an empty or unset variable; a `.env` copied from `.env.example`
still holds `change-me-...` values, publicly known. docker-compose-mlops.yml runs this file (mounted
read-only, standard library only, no network) as a one-shot that every other service waits for;
a non-zero exit keeps the whole stack down and the log names each offending variable, never its value.

Checks every variable in its environment whose name says it is a secret (the compose file hands it
exactly those), plus any value at all that is still a placeholder. Run it by hand against a `.env`:
`set -a; . ./.env; set +a; python3 scripts/secrets_check.py`.
"""
from __future__ import annotations

import base64
import binascii
import os
import re
import sys
from collections.abc import Callable, Mapping

PLACEHOLDER = "change-me"  # scripts/devstack/dotenv.py PLACEHOLDER: what `make env` replaces


def _fernet(value: str) -> str | None:
    try:
        raw = base64.urlsafe_b64decode(value.encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return "is not a Fernet key (url-safe base64); generate one with `make env`"
    return None if len(raw) == 32 else "is not a Fernet key (must decode to 32 bytes)"


def _min_length(n: int) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        if len(value) < n:
            return f"is too short ({len(value)} characters, at least {n})"
        if len(set(value)) < 8:
            return "is too weak (fewer than 8 different characters)"
        return None
    return check


def _ini_safe(check: Callable[[str], str | None]) -> Callable[[str], str | None]:
    """Values Compose writes into MLflow's auth config file as they are (configparser reads `%`)."""
    def wrapped(value: str) -> str | None:
        if "%" in value or any(c.isspace() for c in value):
            return "cannot go into MLflow's auth config (no `%` and no blanks)"
        return check(value)
    return wrapped


# (name pattern, rule) in order; the first matching pattern decides. .env.example names the rule
# beside each secret.
RULES: list[tuple[re.Pattern[str], Callable[[str], str | None]]] = [
    (re.compile(r"FERNET_KEY$"), _fernet),
    # Airflow signs its JWTs with HS512: PyJWT warns below 64 bytes of key.
    (re.compile(r"JWT_SECRET$"), _min_length(64)),
    (re.compile(r"SECRET_ACCESS_KEY$"), _min_length(32)),
    (re.compile(r"ACCESS_KEY_ID$"), _min_length(16)),
    # MLflow's login: the admin and pipeline passwords and the auth database's URL (MLFLOW_DB_PASSWORD)
    # are written into the auth config file (docker-compose-mlops.yml configs: mlflow-auth-ini).
    (re.compile(r"^MLFLOW_(ADMIN|PIPELINE|DB)_PASSWORD$"), _ini_safe(_min_length(16))),
    # MLFLOW_FLASK_SERVER_SECRET_KEY signs the MLflow UI's CSRF tokens: the SECRET_KEY rule below.
    (re.compile(r"PASSWORD$"), _min_length(16)),
    (re.compile(r"(SECRET_KEY|SECRET)$"), _min_length(32)),
]


def problems(env: Mapping[str, str]) -> list[str]:
    """One line per refused variable: its name and the rule it breaks (never the value)."""
    found = []
    for name in sorted(env):
        value = env[name]
        if value.strip().lower().startswith(PLACEHOLDER):
            found.append(f"{name} is still the .env.example placeholder ({PLACEHOLDER}-...); "
                         "run `make env` or set a value of your own")
            continue
        rule = next((check for pattern, check in RULES if pattern.search(name)), None)
        if rule is None or value == "":  # not a secret, or optional and unset (`:?` guards required ones)
            continue
        if reason := rule(value):
            found.append(f"{name} {reason}")
    return found


def main(env: Mapping[str, str] | None = None) -> int:
    env = dict(os.environ if env is None else env)
    checked = sorted(n for n in env if any(p.search(n) for p, _ in RULES))
    if not checked:
        print("secrets-check: no secret variables were handed to the check; refusing to start", file=sys.stderr)
        return 1
    found = problems(env)
    for line in found:
        print(f"secrets-check: {line}", file=sys.stderr)
    if found:
        print(f"secrets-check: refusing to start: {len(found)} variable(s) in .env above", file=sys.stderr)
        return 1
    print(f"secrets-check: {len(checked)} secrets pass ({', '.join(checked)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
