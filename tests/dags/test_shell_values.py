"""Run values reach shell commands only as data: an XCom holding shell syntax is never executed.

publish_report is the pipeline's one BashOperator; its command is rendered by Airflow's own template
machinery and run by the operator's own bash invocation, with a recorder program standing in for the
jobs environment's Python (no MLflow here). The Spark stages take the same XCom as an argv element of
spark-submit, which the provider starts without a shell.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys

import pytest

from jobs import contract
from lakehouse_mlops.config import PipelineConfig
from lakehouse_mlops.tasks import SKIP_EXIT_CODE, publish_report_task


class _TI:
    """What the templates call: ti.xcom_pull(task_ids='start_tracking')."""

    def __init__(self, value):
        self.value = value
        self.task_id = contract.PUBLISH_REPORT

    def xcom_pull(self, task_ids=None, **_):
        assert task_ids == contract.START_TRACKING
        return self.value


def _hostile(marker) -> list[str]:
    return [f"x; touch {marker}", f"$(touch {marker})", f"`touch {marker}`", f"'; touch {marker}; '",
            f'"; touch {marker}; "', f"x\ntouch {marker}"]


@pytest.fixture
def recorder(tmp_path):
    """A stand-in for PYSPARK_PYTHON that writes its argv to a file; its path has a blank to need quoting."""
    folder = tmp_path / "jobs env"
    folder.mkdir()
    program = folder / "python"
    program.write_text(f"#!{sys.executable}\nimport json, sys\n"
                       f"open({str(tmp_path / 'argv.json')!r}, 'w').write(json.dumps(sys.argv[1:]))\n")
    program.chmod(0o755)
    return program, tmp_path / "argv.json"


def _run(op, ti):
    op.render_template_fields({"ti": ti, "task_instance": ti})
    env = {**os.environ, **op.env}
    return op._run_inline_command(bash_path=shutil.which("bash"), env=env)


@pytest.mark.parametrize("index", range(6))
def test_a_hostile_parent_run_id_is_passed_as_one_argument_and_never_run(tmp_path, recorder, index):
    program, argv_file = recorder
    marker = tmp_path / "pwned"
    value = _hostile(marker)[index]
    op = publish_report_task(dataclasses.replace(PipelineConfig.from_env(), pyspark_python=str(program)))
    result = _run(op, _TI({"trade_date": "2026-11-24", "parent_run_id": value}))
    assert result.exit_code == 0, result.output
    assert not marker.exists(), f"shell syntax in an XCom ran: {value!r}"
    assert json.loads(argv_file.read_text()) == ["-m", "jobs.report.publish", "--parent-run-id", value]
    assert value not in op.bash_command  # the value lives in the environment, not in the script


def test_nothing_tracked_skips_without_running_the_report(recorder):
    program, argv_file = recorder
    op = publish_report_task(dataclasses.replace(PipelineConfig.from_env(), pyspark_python=str(program)))
    result = _run(op, _TI(None))
    assert result.exit_code == SKIP_EXIT_CODE and not argv_file.exists()


def test_spark_stages_get_the_xcom_as_an_argv_element(monkeypatch, tmp_path):
    from lakehouse_mlops.spark_stage import STAGE_ARGS

    value = f"x; touch {tmp_path / 'pwned'}"
    i = STAGE_ARGS.index("--parent-run-id") + 1
    from jinja2.sandbox import SandboxedEnvironment

    rendered = SandboxedEnvironment().from_string(STAGE_ARGS[i]).render(
        ti=_TI({"trade_date": "2026-11-24", "parent_run_id": value}))
    assert rendered == value
    # SparkSubmitHook starts spark-submit with subprocess.Popen(list): no shell parses the arguments.
    import inspect

    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

    source = inspect.getsource(SparkSubmitHook.submit)
    assert "subprocess.Popen(" in source and "shell=True" not in source
