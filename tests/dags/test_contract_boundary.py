"""The Airflow side takes every cross-process name from jobs.contract, and nothing else from jobs.

The two environments never import each other: plugins/ and dags/ may import only the jobs modules
that are standard library themselves (the contract, the schema, the trade calendar), so the Airflow
venv never needs pyspark, pandas or scikit-learn.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import ml_pipeline
import ml_retraining
from jobs import contract

REPO = Path(__file__).resolve().parents[2]
SHARED = {"jobs.contract", "jobs.schema", "jobs.trade_calendar"}
# The one exception to "standard library only": the KRX exchange calendar comes from `holidays`
# (pinned in both requirements/*.lock), imported lazily inside jobs.trade_calendar.krx_holidays.
THIRD_PARTY = {"jobs.trade_calendar": {"holidays"}}


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, absolute names; ``from jobs import contract`` is jobs.contract."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = ".".join(path.relative_to(REPO).with_suffix("").parts[:-node.level])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            if module == "jobs":
                names.update(f"jobs.{alias.name}" for alias in node.names)
            else:
                names.add(module)
    return names


def airflow_side_files() -> list[Path]:
    return sorted([*(REPO / "plugins").rglob("*.py"), *(REPO / "dags").rglob("*.py")])


def test_the_import_parser_sees_every_spelling():
    here = imported_modules(Path(__file__))
    assert {"ast", "ml_pipeline", "jobs.contract"} <= here
    tasks = REPO / "plugins" / "lakehouse_mlops" / "tasks.py"
    assert {"jobs.contract", "jobs.trade_calendar"} <= imported_modules(tasks)


def test_plugins_and_dags_import_from_jobs_only_the_standard_library_modules():
    files = airflow_side_files()
    assert files
    offending = {str(f.relative_to(REPO)): sorted(m for m in imported_modules(f)
                                                  if (m == "jobs" or m.startswith("jobs.")) and m not in SHARED)
                 for f in files}
    assert not {f: m for f, m in offending.items() if m}


def test_the_shared_jobs_modules_import_only_the_standard_library_and_each_other():
    present = [name for name in sorted(SHARED) if (REPO / f"{name.replace('.', '/')}.py").is_file()]
    assert {"jobs.contract", "jobs.trade_calendar"} <= set(present)
    for name in present:
        path = REPO / f"{name.replace('.', '/')}.py"
        foreign = sorted(m for m in imported_modules(path)
                         if m not in SHARED and m.split(".")[0] not in sys.stdlib_module_names
                         and m not in THIRD_PARTY.get(name, set()))
        assert not foreign, f"{name} imports {foreign}"


def test_the_pipeline_documents_exactly_the_contract_stages_in_order():
    assert list(ml_pipeline.STAGES) == list(contract.STAGES)


def test_retraining_documents_exactly_the_contract_retraining_stages_in_order():
    assert list(ml_retraining.STAGES) == list(contract.RETRAINING_STAGES)
