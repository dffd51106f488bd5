"""The morning report of one DAG run: collect from MLflow, render HTML + PNG, publish on the parent run."""
