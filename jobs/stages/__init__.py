"""One spark-submit entry point per pipeline stage: ``jobs/stages/<stage>.py`` (see ``jobs.contract.STAGES``)."""
