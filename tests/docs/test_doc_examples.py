"""Every Python and shell example of README.md and docs/ runs (see tests/helpers/doc_examples.py for how: tiny model
types, a sandbox folder of small files, and the list of examples not run here with the reason)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.doc_examples import NOT_RUN, REPO, collect

EXAMPLES = collect()


@pytest.fixture(scope="module")
def statuses(tmp_path_factory) -> dict[str, str]:
    """Runs every example once, in one subprocess (the examples register plugins of their own)."""
    out = tmp_path_factory.mktemp("doc_examples") / "status.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "LAVISLITE_CACHE": str(out.parent / "cache"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(Path(__file__).parents[1] / "helpers" / "doc_examples.py"), str(out)], env=env,
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.id for e in EXAMPLES])
def test_doc_example_runs(example, statuses):
    status = statuses[example.id]
    assert not status.startswith("failed"), f"{example.id} fails:\n{example.code}\n{status}"


def test_every_not_run_entry_still_matches_an_example():
    lines = {(e.page, line) for e in EXAMPLES for line in e.code.splitlines()}
    stale = [key for key in NOT_RUN if not any(page == key[0] and key[1] in line for page, line in lines)]
    assert not stale, f"NOT_RUN entries that match no example any more (remove them): {stale}"


def test_the_collector_sees_every_page():
    pages = {e.page for e in EXAMPLES}
    assert {"README.md", "docs/models.md", "docs/inference.md", "docs/tasks.md"} <= pages
