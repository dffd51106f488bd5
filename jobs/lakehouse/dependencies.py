"""MLflow and S3 probed before a stage starts: bounded waits, then a clear failure.

A stage that finds a service down exits with ``DEPENDENCY_EXIT_CODE`` after a few retries, so
Airflow's own retry (not a hung task) deals with the outage and the log says which service.
"""
from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from jobs.contract import EXIT_DEPENDENCY_UNAVAILABLE, MODEL_DEPLOYMENT, MODEL_TRAINING, MONITORING, env, switch
from jobs.lakehouse.settings import Settings, tracking_enabled

# EX_TEMPFAIL (sysexits.h): a service the stage needs is down; a later retry may succeed.
DEPENDENCY_EXIT_CODE = EXIT_DEPENDENCY_UNAVAILABLE
# Stages that read or write MLflow artifacts (models, figures), which the tracking server keeps in S3.
ARTIFACT_STAGES = (MODEL_TRAINING, MODEL_DEPLOYMENT, MONITORING)


class DependencyUnavailable(RuntimeError):
    """A service stayed unreachable through every attempt (or went away while the stage ran)."""

    def __init__(self, dependency: Dependency, attempts: int, elapsed: float, reason: str,
                 during: str | None = None):
        self.dependency, self.attempts, self.elapsed, self.reason = dependency, attempts, elapsed, reason
        if during is None:
            message = (f"{dependency.name} {dependency.url} unreachable after {attempts} attempt"
                       f"{'s' if attempts != 1 else ''} over {elapsed:.0f} s: {reason}")
        else:
            message = f"{dependency.name} {dependency.url} unreachable ({reason}); the stage failed with {during}"
        super().__init__(message)


@dataclass(frozen=True)
class Dependency:
    """A service a stage needs, probed with one HTTP GET."""

    name: str
    url: str
    probe_path: str = "/"
    healthy_status: tuple[int, int] = (200, 499)  # inclusive range of answers that count as up

    def problem(self, timeout: float) -> str | None:
        """None when the service answers as expected, else why not (exception type or HTTP status)."""
        try:
            with urllib.request.urlopen(self.url.rstrip("/") + self.probe_path, timeout=timeout) as resp:
                status = resp.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            return type(reason).__name__ if isinstance(reason, BaseException) else str(reason)
        low, high = self.healthy_status
        return None if low <= status <= high else f"HTTP {status} from {self.probe_path}"


def _uses_s3(path: str) -> bool:
    return path.startswith(("s3://", "s3a://", "s3n://"))


def stage_dependencies(stage: str, settings: Settings) -> tuple[list[Dependency], list[Dependency]]:
    """(needed before the run is opened, needed by the stage body) for one stage.

    MLflow first: without it no run can be recorded. S3 (MLFLOW_S3_ENDPOINT_URL) when the stage
    moves MLflow artifacts or its RAW/warehouse paths are on S3; it is checked once the run is open,
    so the outage is recorded on the run.
    """
    before: list[Dependency] = []
    tracking_uri = env("MLFLOW_TRACKING_URI")
    if tracking_enabled() and tracking_uri.startswith(("http://", "https://")):
        before.append(Dependency("MLflow tracking server", tracking_uri.rstrip("/"), "/health", (200, 200)))
    during: list[Dependency] = []
    endpoint = env("MLFLOW_S3_ENDPOINT_URL")
    needs_s3 = ((stage in ARTIFACT_STAGES and tracking_enabled())
                or _uses_s3(settings.raw_ticks_path) or _uses_s3(settings.warehouse))
    if endpoint and needs_s3:
        during.append(Dependency("S3 endpoint", endpoint.rstrip("/"), "/", (200, 499)))
    return before, during


def preflight_enabled() -> bool:
    """DEPENDENCY_PREFLIGHT=off skips the up-front checks; a failure is still diagnosed afterwards."""
    return switch("DEPENDENCY_PREFLIGHT")


def dependency_retry_policy() -> tuple[int, float]:
    """(attempts, first backoff in seconds): DEPENDENCY_RETRIES retries after the first attempt."""
    return 1 + max(0, int(env("DEPENDENCY_RETRIES", "3"))), max(0.0, float(env("DEPENDENCY_BACKOFF_SECONDS", "2")))


def wait_for_dependencies(deps: list[Dependency], probe_timeout: float = 5.0) -> None:
    """Probe each dependency; retry with exponential backoff; raise DependencyUnavailable at the end."""
    attempts, backoff = dependency_retry_policy()
    for dep in deps:
        started = time.monotonic()
        for attempt in range(1, attempts + 1):
            problem = dep.problem(probe_timeout)
            if problem is None:
                break
            if attempt == attempts:
                raise DependencyUnavailable(dep, attempts, time.monotonic() - started, problem)
            delay = backoff * 2 ** (attempt - 1)
            print(f"{dep.name} {dep.url} not reachable ({problem}); attempt {attempt}/{attempts}, "
                  f"next in {delay:.1f} s", file=sys.stderr)
            time.sleep(delay)


def first_unreachable(deps: list[Dependency], probe_timeout: float = 5.0) -> tuple[Dependency, str] | None:
    """One quick probe each: which dependency (and why) is down right now, if any."""
    for dep in deps:
        problem = dep.problem(probe_timeout)
        if problem is not None:
            return dep, problem
    return None
