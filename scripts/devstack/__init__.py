"""The embedded stack as a library: configuration, processes, health, services, the CLI, the Airflow REST client.

Imports only the standard library, `jobs.contract` and `jobs.trade_calendar` (boto3 lazily, in
health.s3_client); `dotenv` is standard library only, because `make env` runs before any venv exists.
"""
