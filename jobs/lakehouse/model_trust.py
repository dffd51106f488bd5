"""Only the pipeline's own models are loaded, and loading one runs no code.

Whoever can write to MLflow can register a version or move ``@champion``; model_deployment and
monitoring then load what the alias names inside a worker that holds the pipeline's secrets. So
before any load, a version must pass two checks:

- **format** (cannot be forged into code execution): the MLmodel is the scikit-learn flavour in
  skops format, trusting no type beyond ``contract.SKOPS_TRUSTED_TYPES``, with no code
  paths, and its pyfunc loader is ``mlflow.sklearn`` (no cloudpickled ``python_model``);
- **provenance**: it was logged by a model_training run of the pipeline's own experiment, and it
  carries the lineage tags that run writes. Tags can be written by anyone who can write to MLflow,
  so this check keeps out mistakes and foreign models, not a determined writer; the format check
  holds either way.

A refused version raises ``UntrustedModel``: the stage fails at once (no retry), and its alert
names the version and every reason.
"""
from __future__ import annotations

from jobs import contract as c


class UntrustedModel(ValueError):
    """A registered version the pipeline refuses to load."""


def format_problems(flavors: dict, trusted_types=c.SKOPS_TRUSTED_TYPES) -> list[str]:
    """What is wrong with an MLmodel's flavours for a code-free load (empty: nothing)."""
    sk = flavors.get("sklearn")
    pyfunc = flavors.get("python_function") or {}
    problems = []
    if not isinstance(sk, dict):
        problems.append(f"no sklearn flavour (flavours: {', '.join(sorted(flavors)) or 'none'})")
        sk = {}
    elif sk.get("serialization_format") != "skops":
        problems.append(f"serialization format {sk.get('serialization_format')!r}, not 'skops' (pickle runs code)")
    extra = sorted(set(sk.get("skops_trusted_types") or []) - set(trusted_types))
    if extra:
        problems.append(f"trusts types the pipeline never uses: {', '.join(extra)}")
    for flavour, conf in (("sklearn", sk), ("python_function", pyfunc)):
        if conf.get("code"):
            problems.append(f"{flavour} flavour ships code paths ({conf.get('code')})")
    if pyfunc and pyfunc.get("loader_module") != "mlflow.sklearn":
        problems.append(f"pyfunc loader {pyfunc.get('loader_module')!r}, not 'mlflow.sklearn'")
    if pyfunc.get("python_model") or pyfunc.get("cloudpickle_version"):
        problems.append("a cloudpickled python_model")
    return problems


def provenance_problems(version, run, experiment_id: str) -> list[str]:
    """Whether a version came from one of the pipeline's own training runs (empty: it did)."""
    if run is None:
        return [f"its run {getattr(version, 'run_id', None)!r} does not exist"]
    tags = run.data.tags
    problems = []
    if run.info.experiment_id != experiment_id:
        problems.append(f"logged in experiment {run.info.experiment_id}, not the pipeline's ({experiment_id})")
    if tags.get(c.TAG_STAGE) != c.MODEL_TRAINING:
        problems.append(f"logged by {tags.get(c.TAG_STAGE) or 'no pipeline stage'}, not {c.MODEL_TRAINING}")
    dag_id = tags.get(c.TAG_DAG_ID)
    if dag_id and dag_id not in (c.ML_PIPELINE, c.ML_RETRAINING):
        problems.append(f"trained by DAG {dag_id!r}")
    version_tags = getattr(version, "tags", None) or {}
    if c.VERSION_TAG_FEATURES_SNAPSHOT not in version_tags:  # training tags every version it registers
        problems.append(f"without the lineage tag training writes ({c.VERSION_TAG_FEATURES_SNAPSHOT})")
    return problems


def trusted_model_uri(settings, version) -> str:
    """The ``models:/`` URI of ``version`` once both checks pass; else UntrustedModel with every reason."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from jobs.lakehouse.tracking import mlflow_experiment_id

    uri = f"models:/{settings.model_name}/{version.version}"
    try:
        run = MlflowClient().get_run(version.run_id) if version.run_id else None
    except MlflowException:
        run = None
    problems = provenance_problems(version, run, mlflow_experiment_id(settings))
    problems += format_problems(mlflow.models.get_model_info(uri).flavors)
    if problems:
        raise UntrustedModel(f"refusing to load {settings.model_name} version {version.version}: "
                             + "; ".join(problems))
    return uri


def load_trusted_model(settings, version):
    """The scikit-learn model of a version that passed both checks."""
    import mlflow

    return mlflow.sklearn.load_model(trusted_model_uri(settings, version))
