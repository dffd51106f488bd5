"""MLflow unreachable: stages and the Airflow-side tracking fail in bounded time with a clear
message, no run is left behind, and after recovery the retry is the one FINISHED run.

The drill itself (fixture `mlflow_outage`) is in conftest.py: the atomic-write drill builds on it.
"""
from __future__ import annotations

from faults_support import BOUND_SECONDS, SMALL_TICKS, children_of


def test_stage_fails_fast_with_a_clear_message_while_mlflow_is_down(mlflow_outage, stack):
    down = mlflow_outage.down
    assert down.returncode == 75, down.output[-3000:]
    assert down.seconds < BOUND_SECONDS, f"took {down.seconds:.1f} s"
    expected = f"MLflow tracking server {stack.env['MLFLOW_TRACKING_URI']} unreachable after 4 attempts over"
    assert expected in down.output, down.output[-3000:]
    assert "ConnectionRefusedError" in down.output
    assert "Running Spark version" not in down.output, "Spark was started although MLflow was down"


def test_no_run_is_recorded_for_the_attempt_made_while_mlflow_was_down(mlflow_outage):
    assert mlflow_outage.runs_after_outage == []


def test_after_recovery_the_retry_is_the_one_finished_run(mlflow_outage, client, experiment_id):
    up = mlflow_outage.up
    assert up.returncode == 0, up.output[-3000:]
    assert "Running Spark version" in up.output  # what the failed attempt must not show
    runs = children_of(client, experiment_id, mlflow_outage.parent_run_id)
    assert [(r.data.tags["pipeline.stage"], r.data.tags["airflow.try_number"], r.info.status) for r in runs] == [
        ("raw_to_bronze", "2", "FINISHED")]
    assert runs[0].data.metrics["rows_out"] == SMALL_TICKS


def test_airflow_tracking_task_fails_in_bounded_time_while_mlflow_is_down(mlflow_outage):
    # MLflow's own client defaults retry one call for about 4 minutes; the plugin bounds them.
    assert mlflow_outage.tracking_error is not None
    assert mlflow_outage.tracking_seconds < BOUND_SECONDS, f"took {mlflow_outage.tracking_seconds:.1f} s"
    assert "Connection refused" in str(mlflow_outage.tracking_error) or "Max retries" in str(
        mlflow_outage.tracking_error), repr(mlflow_outage.tracking_error)
