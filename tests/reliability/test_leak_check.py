"""The leak check every engine cell runs must find a password in any of its forms and places."""

from __future__ import annotations

import base64
from pathlib import Path

from tests.devtools.faults.lab import USERNAME, JobResult, Lab


def test_leak_check_finds_the_password_everywhere(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    token = base64.b64encode(f"{USERNAME}:{lab.password}".encode()).decode()
    clean = JobResult(False, "target: HTTP 401: wrong username or password", {"state": "Failure"},
                      logs="GET http://127.0.0.1:8042/system 401")
    assert lab.leak_in(clean) is None
    assert lab.leak_in(JobResult(False, None, None, logs=f"Authorization: Basic {token}")) == "the logs"
    assert lab.leak_in(JobResult(False, f"bad {lab.password}", None)) == "the error shown to the user"
    assert lab.leak_in(JobResult(True, None, {"source": f"http://u:{lab.password}@h"})) == "the report"
    (tmp_path / "engine").mkdir()
    (tmp_path / "engine" / "jobs.sqlite3-wal").write_bytes(b"\0\1" + lab.password.encode())
    assert lab.leak_in(clean) == "the job database (jobs.sqlite3-wal)"
