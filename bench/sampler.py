"""Memory and CPU of the benchmark's processes, read from /proc in a background thread.

Also the machine description results.json starts with, and the log line format of ``make bench``.
"""
from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import threading
import time
from pathlib import Path


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)



def _first_match(path: str, pattern: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            m = re.match(pattern, line)
            if m:
                return m.group(1).strip()
    except OSError:
        pass
    return None


def machine_info(java_home: str) -> dict:
    import duckdb
    import mlflow
    import pyspark

    java = Path(java_home) / "bin" / "java" if java_home else "java"
    try:
        out = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=30)
        java_version = (out.stderr or out.stdout).splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        java_version = "unknown"
    mem_kb = _first_match("/proc/meminfo", r"MemTotal:\s+(\d+)")
    return {
        "cpu_model": _first_match("/proc/cpuinfo", r"model name\s*:\s*(.*)") or platform.processor(),
        "cpus": os.cpu_count(),
        "ram_gib": round(int(mem_kb) / 1024 / 1024, 1) if mem_kb else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "pyspark": pyspark.__version__,
        "java": java_version,
        "mlflow": mlflow.__version__,
        "duckdb": duckdb.__version__,
        "loadavg_at_start": [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]],
    }



_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
_CLK = os.sysconf("SC_CLK_TCK")


def _proc_table() -> dict[int, tuple[int, int, int]]:
    """pid -> (ppid, session id, utime + stime ticks) of every live process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2:].split()
        if fields[0] == "Z":
            continue
        table[int(entry)] = (int(fields[1]), int(fields[3]), int(fields[11]) + int(fields[12]))
    return table


def _rss_kb(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE_KB
    except (OSError, IndexError, ValueError):
        return 0


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, IndexError, ValueError):
        pass
    return 0


def _descendants(table: dict, root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in table and pid not in out:
            out.add(pid)
            todo.extend(children.get(pid, ()))
    return out


class Sampler(threading.Thread):
    """Peak RSS per component and in total, plus CPU used by processes that are not ours.

    Components: each stack service's whole process session (as `stack.py status` counts it), the
    Spark driver JVM with its children, and the driver's Python process (this one: PySpark client,
    pandas/scikit-learn training, MLflow client). The generator and DuckDB run in child processes
    of their own, counted apart (``reference_processes``), not in the stack total.
    """

    def __init__(self, interval: float, services: dict[str, list[int]], jvm_pid: int, pss_every: int = 4):
        super().__init__(daemon=True, name="bench-sampler")
        self.interval = interval
        self.services = services            # component -> session leader pids
        self.jvm_pid = jvm_pid
        self.me = os.getpid()
        self.pss_every = pss_every
        self.phase = "startup"
        self._stop_event = threading.Event()
        self.samples = 0
        self.peak_total_kb = 0
        self.peak_at: dict = {}
        self.peak_component_kb: dict[str, int] = {}
        self.peak_pss_total_kb = 0
        self.peak_pss_component_kb: dict[str, int] = {}
        self.peak_by_phase_kb: dict[str, int] = {}
        self.peak_reference_kb = 0
        self.cpu_ticks = {"ours": 0, "others": 0}
        self._last_cpu: dict[int, int] = {}
        self.started_at = self.stopped_at = None

    def groups(self, table: dict) -> tuple[dict[str, set[int]], set[int]]:
        by_sid: dict[int, set[int]] = {}
        for pid, (_, sid, _) in table.items():
            by_sid.setdefault(sid, set()).add(pid)
        groups = {name: set().union(*(by_sid.get(s, set()) for s in sids)) for name, sids in self.services.items()}
        jvm = _descendants(table, self.jvm_pid)
        groups["spark_driver_jvm"] = jvm
        groups["spark_driver_python"] = {self.me}
        reference = _descendants(table, self.me) - jvm - {self.me}
        return groups, reference

    def sample(self) -> None:
        table = _proc_table()
        groups, reference = self.groups(table)
        per = {name: sum(_rss_kb(p) for p in pids) for name, pids in groups.items()}
        total = sum(per.values())
        for name, kb in per.items():
            self.peak_component_kb[name] = max(self.peak_component_kb.get(name, 0), kb)
        if total > self.peak_total_kb:
            self.peak_total_kb = total
            self.peak_at = {"phase": self.phase, "components_mb": {k: round(v / 1024) for k, v in per.items()}}
        self.peak_by_phase_kb[self.phase] = max(self.peak_by_phase_kb.get(self.phase, 0), total)
        self.peak_reference_kb = max(self.peak_reference_kb, sum(_rss_kb(p) for p in reference))
        if self.samples % self.pss_every == 0:
            pss = {name: sum(_pss_kb(p) for p in pids) for name, pids in groups.items()}
            self.peak_pss_total_kb = max(self.peak_pss_total_kb, sum(pss.values()))
            for name, kb in pss.items():
                self.peak_pss_component_kb[name] = max(self.peak_pss_component_kb.get(name, 0), kb)
        ours = set().union(*groups.values(), reference)
        cpu = {pid: t for pid, (_, _, t) in table.items()}
        if self._last_cpu:
            for pid, ticks in cpu.items():
                delta = ticks - self._last_cpu.get(pid, 0)
                self.cpu_ticks["ours" if pid in ours else "others"] += max(delta, 0)
        self._last_cpu = cpu
        self.samples += 1

    def run(self) -> None:
        self.started_at = time.monotonic()
        while not self._stop_event.is_set():
            try:
                self.sample()
            except Exception as exc:  # never let sampling break the benchmark
                log(f"sampler: {type(exc).__name__}: {exc}")
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)
        self.stopped_at = time.monotonic()

    def report(self) -> dict:
        wall = (self.stopped_at or time.monotonic()) - (self.started_at or time.monotonic())
        cpus = os.cpu_count() or 1
        mb = lambda kb: round(kb / 1024, 1)  # noqa: E731
        return {
            "peak_rss_mb": mb(self.peak_total_kb),
            "peak_rss_mb_by_component": {k: mb(v) for k, v in self.peak_component_kb.items()},
            "peak_rss_components_at_peak_mb": self.peak_at.get("components_mb", {}),
            "peak_rss_phase": self.peak_at.get("phase"),
            "peak_rss_mb_by_phase": {k: mb(v) for k, v in self.peak_by_phase_kb.items()},
            "peak_pss_mb": mb(self.peak_pss_total_kb),
            "peak_pss_mb_by_component": {k: mb(v) for k, v in self.peak_pss_component_kb.items()},
            "reference_processes_peak_rss_mb": mb(self.peak_reference_kb),
            "samples": self.samples,
            "interval_s": self.interval,
            "sampled_wall_s": round(wall, 1),
            "cpu_s_ours": round(self.cpu_ticks["ours"] / _CLK, 1),
            "cpu_s_other_processes": round(self.cpu_ticks["others"] / _CLK, 1),
            "other_processes_cpu_share": round(self.cpu_ticks["others"] / _CLK / (wall * cpus), 3) if wall else None,
        }
