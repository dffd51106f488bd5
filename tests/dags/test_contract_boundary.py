"""The Airflow side takes every cross-process name from jobs.contract, and nothing else from jobs."""
from __future__ import annotations

import ml_pipeline
import ml_retraining

from jobs import contract


def test_the_pipeline_documents_exactly_the_contract_stages_in_order():
    assert list(ml_pipeline.STAGES) == list(contract.STAGES)


def test_retraining_documents_exactly_the_contract_retraining_stages_in_order():
    assert list(ml_retraining.STAGES) == list(contract.RETRAINING_STAGES)
