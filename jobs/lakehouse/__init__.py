"""The one package where Spark, Iceberg and MLflow are wired together, one concern per module.

``settings`` (environment) <- ``tables`` (Spark + Iceberg I/O), ``raw_files`` (RAW readers),
``dependencies`` (service probes) <- ``tracking`` (MLflow stage runs) <- ``gates``, ``registry``
(models and their lineage) <- ``cli`` (the entry point every stage shares). Import the module
you need; nothing is re-exported here.
"""
