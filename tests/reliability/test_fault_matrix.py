"""Every cell of the fault matrix against real Orthanc servers.

A cell passes when its end state is completed-verified or
unchanged-clean-failure, as judged by ``tests.devtools.faults.checker`` (the target's
instances and MD5s compared with the source and with a snapshot taken
before).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.devtools.faults.registry import SCENARIOS, cells, run_cell


def _params():
    out = []
    for item, transport in cells():
        if transport in item.not_applicable:
            continue
        out.append(pytest.param(item.key, transport, id=f"{item.key}-{transport}"))
    return out


@pytest.mark.timeout(150)
@pytest.mark.parametrize("key,transport", _params())
def test_cell(key: str, transport: str, tmp_path: Path) -> None:
    result = run_cell(SCENARIOS[key], transport, tmp_path)
    assert result.verdict.outcome.acceptable, f"{key}/{transport}: {result.verdict}"


def test_every_scenario_of_the_issue_is_in_the_matrix() -> None:
    keys = {s.key for s, _ in cells()}
    wanted = {"reset-upload", "reset-download", "stall-timeout", "corrupt-upload", "corrupt-download",
              "truncated-gzip", "target-503-recovers", "target-500-forever", "target-restart",
              "source-stopped", "commit-timeout", "sigkill-resume", "two-jobs", "staging-disk-full",
              "lookup-wrong-md5", "lookup-wrong-size", "lookup-100gb", "invalid-json", "html-page",
              "redirect-other-host", "unknown-resource", "wrong-credentials", "tls-self-signed",
              "tls-expired", "upload-bad-files", "secrets-and-permissions", "plugin-hostile-input"}
    assert wanted <= keys, sorted(wanted - keys)
