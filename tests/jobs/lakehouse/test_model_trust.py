"""Only the pipeline's own models are loaded, and a refused one never runs its code (real MLflow server).

The hostile model is a real pickled MLflow model whose unpickling creates a marker file: loading it
the plain way creates the marker (the danger is real); the pipeline's loader refuses it first.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from jobs import contract as c
from jobs.lakehouse.model_trust import (
    UntrustedModel,
    format_problems,
    load_trusted_model,
    provenance_problems,
)
from jobs.lakehouse.tracking import mlflow_experiment_id

GOOD_FLAVORS = {
    "python_function": {"loader_module": "mlflow.sklearn", "model_path": "model.skops", "predict_fn": "predict"},
    "sklearn": {"code": None, "pickled_model": "model.skops", "serialization_format": "skops",
                "skops_trusted_types": list(c.SKOPS_TRUSTED_TYPES)},
}


class Planted:
    """Unpickling this object runs a shell command: what a hostile model file can do."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)

    def predict(self, x):  # never reached
        return np.zeros(len(x))


def test_the_format_check_accepts_the_pipelines_flavour_and_names_every_danger():
    assert format_problems(GOOD_FLAVORS) == []
    pickled = {**GOOD_FLAVORS, "sklearn": {**GOOD_FLAVORS["sklearn"], "serialization_format": "cloudpickle"}}
    assert "not 'skops'" in format_problems(pickled)[0]
    wide = {**GOOD_FLAVORS, "sklearn": {**GOOD_FLAVORS["sklearn"], "skops_trusted_types": ["builtins.eval"]}}
    assert format_problems(wide) == ["trusts types the pipeline never uses: builtins.eval"]
    code = {**GOOD_FLAVORS, "sklearn": {**GOOD_FLAVORS["sklearn"], "code": "code"}}
    assert format_problems(code) == ["sklearn flavour ships code paths (code)"]
    custom = {"python_function": {"loader_module": "mlflow.pyfunc.model", "python_model": "python_model.pkl",
                                  "cloudpickle_version": "3.1"}}
    problems = format_problems(custom)
    assert problems[0].startswith("no sklearn flavour") and len(problems) == 3, problems


def test_a_foreign_pickled_champion_is_refused_before_it_can_run(settings, mlflow_server, tmp_path):
    import mlflow
    from mlflow import MlflowClient

    scoped = dataclasses.replace(settings, model_name="TrustModel", experiment="unit-tests-trust")
    marker = tmp_path / "pwned"
    experiment_id = mlflow_experiment_id(scoped)
    with mlflow.start_run(experiment_id=experiment_id, run_name="not a pipeline stage"):
        info = mlflow.sklearn.log_model(Planted(str(marker)), name="model", serialization_format="cloudpickle",
                                        registered_model_name=scoped.model_name)
    version = MlflowClient().get_model_version(scoped.model_name, str(info.registered_model_version))
    MlflowClient().set_registered_model_alias(scoped.model_name, c.CHAMPION, version.version)
    marker.unlink(missing_ok=True)  # log_model itself loads the model back once (the attacker's side)

    with pytest.raises(UntrustedModel) as refused:
        load_trusted_model(scoped, version)
    reason = str(refused.value)
    assert reason.startswith(f"refusing to load TrustModel version {version.version}: ")
    assert f"logged by no pipeline stage, not {c.MODEL_TRAINING}" in reason
    assert "serialization format 'cloudpickle', not 'skops'" in reason
    assert f"without the lineage tag training writes ({c.VERSION_TAG_FEATURES_SNAPSHOT})" in reason
    assert not marker.exists()

    mlflow.sklearn.load_model(f"models:/{scoped.model_name}/{version.version}")  # what the check prevents
    assert marker.exists()


def test_provenance_wants_a_training_run_of_the_pipelines_experiment(settings, mlflow_server):
    import mlflow
    from mlflow import MlflowClient

    scoped = dataclasses.replace(settings, experiment="unit-tests-trust")
    experiment_id = mlflow_experiment_id(scoped)
    with mlflow.start_run(experiment_id=experiment_id, tags={c.TAG_STAGE: c.MODEL_TRAINING,
                                                             c.TAG_DAG_ID: c.ML_PIPELINE}) as run:
        pass
    run = MlflowClient().get_run(run.info.run_id)
    version = dataclasses.make_dataclass("V", ["run_id", "tags"])(run.info.run_id,
                                                                   {c.VERSION_TAG_FEATURES_SNAPSHOT: "1"})
    assert provenance_problems(version, run, experiment_id) == []
    assert provenance_problems(version, run, "0") == [f"logged in experiment {experiment_id}, not the pipeline's (0)"]
    with mlflow.start_run(experiment_id=experiment_id, tags={c.TAG_STAGE: c.MODEL_TRAINING,
                                                             c.TAG_DAG_ID: "someone_elses_dag"}) as foreign:
        pass
    foreign = MlflowClient().get_run(foreign.info.run_id)
    assert provenance_problems(version, foreign, experiment_id) == ["trained by DAG 'someone_elses_dag'"]
    assert provenance_problems(version, None, experiment_id)[0].startswith("its run ")
