"""The README's test command (`pytest -n auto --dist loadgroup`) relies on pytest-xdist's
``xdist_group`` mark keeping a group's tests on one worker (the browser tests share one server,
the read replica's tests one primary and standby). pytest 9.2 silently broke that
(pytest-xdist#1386: the tests spread as if unmarked); pyproject.toml keeps pytest below it. This
runs a two-worker session of three grouped tests and checks they ran on one worker, so that an
upgrade that breaks it again fails here rather than only slowing the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TESTS = '''
import os, time, pytest

@pytest.mark.xdist_group("one")
@pytest.mark.parametrize("i", range(4))
def test_grouped(i):
    time.sleep(0.2)
    print("WORKER", os.environ["PYTEST_XDIST_WORKER"])

@pytest.mark.parametrize("i", range(4))
def test_free(i):
    time.sleep(0.2)
'''


def test_an_xdist_group_runs_on_one_worker(tmp_path: Path) -> None:
    (tmp_path / "test_grouped.py").write_text(TESTS)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider", "-rA", "-q",
         "--rootdir", str(tmp_path), "-c", "/dev/null", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    workers = {line.split()[1] for line in done.stdout.splitlines() if line.startswith("WORKER ")}
    assert len(workers) == 1, f"the group's tests ran on {sorted(workers)}:\n{done.stdout}"
