"""`make help` is the list of targets: every target a person can run has its one-line description."""
from __future__ import annotations

import re
from pathlib import Path

MAKEFILE = Path(__file__).resolve().parents[2] / "Makefile"


def test_every_target_has_a_help_line_and_is_phony():
    text = MAKEFILE.read_text()
    targets = re.findall(r"^([a-z0-9-]+):", text, re.M)
    assert {"help", "lint", "test", "test-dags", "test-e2e"} <= set(targets)
    undocumented = [t for t in targets if not re.search(rf"^{t}:[^\n]*## \S", text, re.M)]
    assert not undocumented, f"add `## ...` to: {undocumented}"
    phony = set(re.search(r"^\.PHONY:(.*)$", text, re.M).group(1).split())
    assert set(targets) <= phony, sorted(set(targets) - phony)
