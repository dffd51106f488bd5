#!/usr/bin/env python3
"""MLflow's basic-auth app for this pipeline: its config file, and the pipeline's user and grants.

    python3 scripts/mlflow_auth.py ini [--output PATH]   # the auth config (stdout, or a 0600 file)
    python3 scripts/mlflow_auth.py init [--wait SECONDS] # as the admin, against MLFLOW_TRACKING_URI

`ini` renders what `mlflow server --app-name basic-auth` reads from MLFLOW_AUTH_CONFIG_PATH: the
admin (created by the server on its first start against an empty user store), the user database
(MLFLOW_AUTH_DATABASE_URI) and default permission READ, so every logged-in person can read and
only admins and a resource's MANAGE holders change anything.

`init` is idempotent. As the admin it creates the pipeline's service user (MLFLOW_PIPELINE_USER),
or resets its password to MLFLOW_PIPELINE_PASSWORD when that no longer logs in (rotation: change
the value in .env, run init again); makes sure the pipeline's experiment exists with its tags;
and grants the pipeline user MANAGE on the experiment and on the registered model. A model that
does not exist yet is created by the pipeline user at its first registration, which makes that user
its owner (MANAGE). Run twice, the second run changes nothing. It prints what it changed, never a
password.

Settings from the environment (.env.example documents them): MLFLOW_ADMIN_USER,
MLFLOW_ADMIN_PASSWORD, MLFLOW_PIPELINE_USER, MLFLOW_PIPELINE_PASSWORD, MLFLOW_AUTH_DATABASE_URI
(`ini` only), MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME, MLFLOW_MODEL_NAME. Standard library only
(it runs in the MLflow image and before any virtual environment); names shared with the rest of
the project come from jobs/contract.py.
"""
from __future__ import annotations

import argparse
import base64
import configparser
import io
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if not __package__:  # run as a file (also with `python -I`): make `jobs.contract` importable
    sys.path.insert(0, str(REPO))

from jobs import contract  # noqa: E402

EXPERIMENT = "experiment"  # the auth app's resource types (mlflow.server.auth.permissions)
REGISTERED_MODEL = "registered_model"


class AuthInitError(RuntimeError):
    """The server refused or failed a step; the message says which and why (never a password)."""


# --------------------------------------------------------------------------------------------------
# Settings and the config file
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AuthSettings:
    tracking_uri: str
    admin_user: str
    admin_password: str
    pipeline_user: str
    pipeline_password: str
    experiment: str
    model_name: str


def _value(env: Mapping[str, str], name: str, default: str = "") -> str:
    value = env.get(name, "")
    return value if value.strip() else default


def _required(env: Mapping[str, str], name: str) -> str:
    value = _value(env, name)
    if not value:
        raise AuthInitError(f"{name} is not set (make env generates it)")
    return value


def settings_from_env(env: Mapping[str, str]) -> AuthSettings:
    s = AuthSettings(
        tracking_uri=_value(env, "MLFLOW_TRACKING_URI", contract.DEFAULT_MLFLOW_URL).rstrip("/"),
        admin_user=_value(env, "MLFLOW_ADMIN_USER", contract.DEFAULT_MLFLOW_ADMIN_USER),
        admin_password=_required(env, "MLFLOW_ADMIN_PASSWORD"),
        pipeline_user=_value(env, "MLFLOW_PIPELINE_USER", contract.DEFAULT_MLFLOW_PIPELINE_USER),
        pipeline_password=_required(env, "MLFLOW_PIPELINE_PASSWORD"),
        experiment=_value(env, "MLFLOW_EXPERIMENT_NAME", contract.DEFAULT_EXPERIMENT),
        model_name=_value(env, "MLFLOW_MODEL_NAME", contract.DEFAULT_MODEL_NAME),
    )
    if s.pipeline_user == s.admin_user:
        raise AuthInitError("MLFLOW_PIPELINE_USER must differ from MLFLOW_ADMIN_USER: the pipeline is no admin")
    return s


def _ini_value(name: str, value: str) -> str:
    if any(c in value for c in "\r\n") or value != value.strip():
        raise AuthInitError(f"{name} cannot go into the auth config (a newline or surrounding blanks)")
    return value.replace("%", "%%")  # configparser's interpolation reads %% back as %


def render_ini(admin_user: str, admin_password: str, database_uri: str,
               default_permission: str = contract.MLFLOW_DEFAULT_PERMISSION) -> str:
    """The auth app's config file. The admin settings count only on the server's first start."""
    config = configparser.ConfigParser(interpolation=None)
    config["mlflow"] = {
        "default_permission": default_permission,
        "database_uri": _ini_value("MLFLOW_AUTH_DATABASE_URI", database_uri),
        "admin_username": _ini_value("MLFLOW_ADMIN_USER", admin_user),
        "admin_password": _ini_value("MLFLOW_ADMIN_PASSWORD", admin_password),
        "authorization_function": contract.MLFLOW_AUTH_FUNCTION,
    }
    out = io.StringIO()
    config.write(out)
    return out.getvalue()


def render_ini_from_env(env: Mapping[str, str]) -> str:
    return render_ini(_value(env, "MLFLOW_ADMIN_USER", contract.DEFAULT_MLFLOW_ADMIN_USER),
                      _required(env, "MLFLOW_ADMIN_PASSWORD"), _required(env, "MLFLOW_AUTH_DATABASE_URI"))


def write_private(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` with mode 0600 from creation (it holds the admin password)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o600)
    return path


# --------------------------------------------------------------------------------------------------
# The server's REST API, as one user
# --------------------------------------------------------------------------------------------------

class Api:
    """JSON calls to an MLflow server with HTTP basic auth (or none)."""

    def __init__(self, base_url: str, user: str | None = None, password: str | None = None,
                 timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.user = user
        self.timeout = timeout
        self._auth = None
        if user is not None:
            token = base64.b64encode(f"{user}:{password or ''}".encode()).decode("ascii")
            self._auth = f"Basic {token}"

    def call(self, method: str, path: str, body: dict | None = None,
             query: dict | None = None) -> tuple[int, dict]:
        url = self.base_url + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        headers = {"Content-Type": "application/json"}
        if self._auth:
            headers["Authorization"] = self._auth
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        except (urllib.error.URLError, OSError) as e:
            raise AuthInitError(f"MLflow at {self.base_url} did not answer {method} {path}: {e}") from e
        try:
            return status, json.loads(raw or b"{}")
        except ValueError:
            return status, {"message": raw.decode(errors="replace")[:200]}


def _fail(step: str, status: int, body: dict) -> AuthInitError:
    return AuthInitError(f"{step}: HTTP {status} {body.get('error_code', '')} {body.get('message', '')}".rstrip())


def wait_for_health(base_url: str, seconds: float) -> None:
    """Poll /health (exempt from the login) until it answers OK or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(f"{base_url.rstrip('/')}/health", timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() >= deadline:
            raise AuthInitError(f"MLflow at {base_url} not healthy after {seconds:.0f}s")
        time.sleep(1.0)


# --------------------------------------------------------------------------------------------------
# init: the pipeline's user, experiment and grants
# --------------------------------------------------------------------------------------------------

def _check_admin(admin: Api) -> None:
    status, body = admin.call("GET", "/api/2.0/mlflow/users/current")
    if status == 401:
        raise AuthInitError(
            f"the server refused the admin login {admin.user!r}: MLFLOW_ADMIN_PASSWORD does not match. "
            "The server sets the admin password only on its first start; change it with the "
            "update-password API (README \"Security model\") before changing .env")
    if status != 200:
        raise _fail("checking the admin login", status, body)
    if not (body.get("user") or {}).get("is_admin"):
        raise AuthInitError(f"user {admin.user!r} is not an MLflow admin")


def ensure_user(admin: Api, settings: AuthSettings) -> list[str]:
    """Create the pipeline user, or reset its password when the configured one no longer logs in."""
    user, password = settings.pipeline_user, settings.pipeline_password
    status, body = admin.call("GET", "/api/2.0/mlflow/users/get", query={"username": user})
    if status == 404:
        status, body = admin.call("POST", "/api/2.0/mlflow/users/create", {"username": user, "password": password})
        if status != 200:
            raise _fail(f"creating user {user!r}", status, body)
        return [f"created user {user}"]
    if status != 200:
        raise _fail(f"looking up user {user!r}", status, body)
    changes = []
    status, _ = Api(admin.base_url, user, password, admin.timeout).call("GET", "/api/2.0/mlflow/users/current")
    if status == 401:
        status, body = admin.call("PATCH", "/api/2.0/mlflow/users/update-password",
                                  {"username": user, "password": password})
        if status != 200:
            raise _fail(f"updating the password of {user!r}", status, body)
        changes.append(f"updated the password of {user}")
    elif status != 200:
        raise AuthInitError(f"logging in as {user!r} answered HTTP {status}")
    return changes


def ensure_experiment(admin: Api, name: str) -> tuple[str, list[str]]:
    """The experiment's id; created with contract.EXPERIMENT_TAGS, or given the tags it lacks."""
    status, body = admin.call("GET", "/api/2.0/mlflow/experiments/get-by-name", query={"experiment_name": name})
    if status == 404:
        tags = [{"key": k, "value": v} for k, v in contract.EXPERIMENT_TAGS.items()]
        status, body = admin.call("POST", "/api/2.0/mlflow/experiments/create", {"name": name, "tags": tags})
        if status != 200:
            raise _fail(f"creating experiment {name!r}", status, body)
        return body["experiment_id"], [f"created experiment {name} ({body['experiment_id']})"]
    if status != 200:
        raise _fail(f"looking up experiment {name!r}", status, body)
    exp = body["experiment"]
    if exp.get("lifecycle_stage") == "deleted":
        raise AuthInitError(f"experiment {name!r} is deleted; restore it (mlflow experiments restore) first")
    changes = []
    tags = {t["key"]: t["value"] for t in exp.get("tags") or []}
    for key, value in contract.missing_experiment_tags(tags).items():
        status, body = admin.call("POST", "/api/2.0/mlflow/experiments/set-experiment-tag",
                                  {"experiment_id": exp["experiment_id"], "key": key, "value": value})
        if status != 200:
            raise _fail(f"tagging experiment {name!r}", status, body)
        changes.append(f"set tag {key}={value} on experiment {name}")
    return exp["experiment_id"], changes


def model_exists(admin: Api, name: str) -> bool:
    status, body = admin.call("GET", "/api/2.0/mlflow/registered-models/get", query={"name": name})
    if status == 404:
        return False
    if status != 200:
        raise _fail(f"looking up registered model {name!r}", status, body)
    return True


def permission(admin: Api, user: str, resource_type: str, resource_id: str) -> str:
    """The user's effective permission on one resource, as the server resolves it."""
    status, body = admin.call("GET", "/api/3.0/mlflow/users/permissions/get",
                              query={"username": user, "resource_type": resource_type, "resource_id": resource_id})
    if status != 200:
        raise _fail(f"reading {user!r}'s permission on {resource_type} {resource_id}", status, body)
    return body["permission"]


def ensure_grant(admin: Api, user: str, resource_type: str, resource_id: str,
                 wanted: str = contract.MLFLOW_PIPELINE_PERMISSION) -> list[str]:
    if permission(admin, user, resource_type, resource_id) == wanted:
        return []
    grant = {"username": user, "resource_type": resource_type, "resource_id": resource_id, "permission": wanted}
    status, body = admin.call("POST", "/api/3.0/mlflow/users/permissions/grant", grant)
    if status == 400 and body.get("error_code") == "RESOURCE_ALREADY_EXISTS":
        # A weaker grant of its own is in the way (the grant API only inserts): replace it.
        target = {k: grant[k] for k in ("username", "resource_type", "resource_id")}
        status, body = admin.call("POST", "/api/3.0/mlflow/users/permissions/revoke", target)
        if status != 200:
            raise _fail(f"replacing {user!r}'s grant on {resource_type} {resource_id}", status, body)
        status, body = admin.call("POST", "/api/3.0/mlflow/users/permissions/grant", grant)
    if status != 200:
        raise _fail(f"granting {wanted} on {resource_type} {resource_id} to {user!r}", status, body)
    if (now := permission(admin, user, resource_type, resource_id)) != wanted:
        raise AuthInitError(f"{user!r} has {now} on {resource_type} {resource_id} after granting {wanted}")
    return [f"granted {wanted} on {resource_type} {resource_id} to {user}"]


def init(settings: AuthSettings, timeout: float = 30.0, note=None) -> list[str]:
    """Bring users and grants to the wanted state; return what changed (empty: nothing to do).

    ``note`` receives remarks that are no change (a model not registered yet).
    """
    admin = Api(settings.tracking_uri, settings.admin_user, settings.admin_password, timeout)
    _check_admin(admin)
    changes = ensure_user(admin, settings)
    experiment_id, more = ensure_experiment(admin, settings.experiment)
    changes += more
    changes += ensure_grant(admin, settings.pipeline_user, EXPERIMENT, experiment_id)
    if model_exists(admin, settings.model_name):
        changes += ensure_grant(admin, settings.pipeline_user, REGISTERED_MODEL, settings.model_name)
    elif note:
        note(f"registered model {settings.model_name} does not exist yet: {settings.pipeline_user} "
             "creates it at its first registration and owns it (MANAGE)")
    return changes


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ini = sub.add_parser("ini", help="render the auth config file from the environment")
    ini.add_argument("--output", type=Path, help="write it here (mode 0600) instead of stdout")
    run = sub.add_parser("init", help="create or update the pipeline user, its experiment and grants")
    run.add_argument("--wait", type=float, default=60.0, help="seconds to wait for /health first")
    args = parser.parse_args(argv)
    try:
        if args.command == "ini":
            text = render_ini_from_env(env)
            if args.output:
                write_private(args.output, text)
                print(f"mlflow-auth: wrote {args.output}")
            else:
                sys.stdout.write(text)
            return 0
        settings = settings_from_env(env)
        wait_for_health(settings.tracking_uri, args.wait)
        changes = init(settings, note=lambda line: print(f"mlflow-auth: {line}"))
    except AuthInitError as e:
        print(f"mlflow-auth: {e}", file=sys.stderr)
        return 1
    for line in changes:
        print(f"mlflow-auth: {line}")
    print(f"mlflow-auth: {f'{len(changes)} change(s)' if changes else 'nothing to change'} "
          f"(user {settings.pipeline_user}, experiment {settings.experiment}, model {settings.model_name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
