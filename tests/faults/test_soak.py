"""A short soak (bench/soak.py): mixed adds, searches, duplicate lookups and deletes from many
workers on the embedded default, with no error and exactly the acknowledged ids stored."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.faults.processes import ROOT

pytestmark = pytest.mark.slow


def test_a_short_soak_has_no_error_and_stores_exactly_what_was_acknowledged():
    done = subprocess.run([sys.executable, "-m", "bench.soak", "--minutes", "0.4",
                           "--interval-s", "8", "--concurrency", "16"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "mismatches: 0; errors: 0." in done.stdout
