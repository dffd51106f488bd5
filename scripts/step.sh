#!/usr/bin/env bash
# One step of `make deps`: say what runs, keep saying it is still running, say how long it took.
#
#   bash scripts/step.sh "LABEL" COMMAND [ARGS...]
#
# Plain lines (CI logs keep them): "==> LABEL", every STEP_HEARTBEAT seconds (default 10)
# "    ... LABEL: still running (45s)", then "<== LABEL: done in 84s" or "!!! LABEL: failed
# (exit N) after 12s". The command's own output passes through. Bash only: it runs before any venv.
set -uo pipefail

label=$1
shift
beat=${STEP_HEARTBEAT:-10}
start=$SECONDS
echo "==> $label"
"$@" &
pid=$!
# Forward Ctrl-C / TERM to the step, so make stops it instead of leaving it running.
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; exit 130' INT TERM
next=$((start + beat))
while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= next)); then
        echo "    ... $label: still running ($((SECONDS - start))s)"
        next=$((next + beat))
    fi
    sleep 1 &
    tick=$!
    wait -n "$pid" "$tick"  # whichever ends first: the step, or a one-second tick
    kill "$tick" 2>/dev/null
done
wait "$pid"
rc=$?
if ((rc == 0)); then
    echo "<== $label: done in $((SECONDS - start))s"
else
    echo "!!! $label: failed (exit $rc) after $((SECONDS - start))s" >&2
fi
exit "$rc"
