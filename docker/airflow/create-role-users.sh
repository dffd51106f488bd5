#!/usr/bin/env bash
# The team's Airflow users beside the admin (issue 17): run by airflow-init after the migration.
#   AIRFLOW_VIEWER_USER / AIRFLOW_VIEWER_PASSWORD  -> FAB role Viewer (DAGs, runs, task logs; read only)
#   AIRFLOW_OP_USER / AIRFLOW_OP_PASSWORD          -> FAB role Op (also trigger, clear, backfill, pause)
# A user that exists already is left as it is (roles and passwords are then managed in the UI or
# with `airflow users`). The password goes to `airflow users create` on its standard input (its
# prompt reads stdin when the container has no terminal), never as an argument: argv is visible to
# every process of the host (`ps`). An empty user name skips that role.
set -euo pipefail

existing_users() {
  airflow users list --output json 2>/dev/null \
    | python -c 'import json, sys; print("\n".join(u["username"] for u in json.load(sys.stdin)))'
}

create_user() {  # role, user name, name of the variable holding the password
  local role=$1 user=$2 password_var=$3
  if [ -z "$user" ]; then
    echo "no user for role $role configured; skipped"
    return 0
  fi
  if existing_users | grep -qxF -- "$user"; then
    echo "user $user exists; left unchanged (role $role wanted)"
    return 0
  fi
  local password=${!password_var:-}
  if [ -z "$password" ]; then
    echo "$password_var is empty: cannot create $role user $user" >&2
    return 1
  fi
  printf '%s\n%s\n' "$password" "$password" | airflow users create --username "$user" --role "$role" \
    --firstname "$role" --lastname "user" --email "$user@example.com" >/dev/null
  existing_users | grep -qxF -- "$user" || { echo "user $user missing after airflow users create" >&2; return 1; }
  echo "created $role user $user"
}

create_user Viewer "${AIRFLOW_VIEWER_USER:-}" AIRFLOW_VIEWER_PASSWORD
create_user Op "${AIRFLOW_OP_USER:-}" AIRFLOW_OP_PASSWORD
