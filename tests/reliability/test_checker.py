"""The one checker every scenario relies on: it must call each end state by its name."""

from __future__ import annotations

from typing import Dict

import pytest

from tests.devtools.faults.checker import Outcome, TransferChecker


class FakeServer:
    def __init__(self, md5s: Dict[str, str]) -> None:
        self.md5s = dict(md5s)

    def instance_md5s(self) -> Dict[str, str]:
        return dict(self.md5s)


SOURCE = {"a": "1" * 32, "b": "2" * 32, "c": "3" * 32}
ALREADY = {"z": "9" * 32}


def checked() -> tuple:
    source, target = FakeServer(SOURCE), FakeServer(ALREADY)
    return source, target, TransferChecker(source, target, settle_interval=0).before()


def test_whole_transfer_with_success_is_completed_verified() -> None:
    source, target, checker = checked()
    target.md5s.update(SOURCE)
    assert checker.classify(succeeded=True).outcome is Outcome.COMPLETED_VERIFIED


def test_untouched_target_with_a_reason_is_a_clean_failure() -> None:
    _, _, checker = checked()
    verdict = checker.classify(succeeded=False, error="target: HTTP 503: busy (PUT http://x/transfers/push/1/0)")
    assert verdict.outcome is Outcome.UNCHANGED_CLEAN_FAILURE


@pytest.mark.parametrize("error", [None, "", "Traceback (most recent call last):\n  File x"])
def test_a_failure_without_a_readable_reason_is_failed(error) -> None:
    _, _, checker = checked()
    assert checker.classify(succeeded=False, error=error).outcome is Outcome.FAILED


def test_half_imported_study_is_failed_whatever_the_job_says() -> None:
    for succeeded in (True, False):
        source, target, checker = checked()
        target.md5s["a"] = SOURCE["a"]
        verdict = checker.classify(succeeded=succeeded, error="something broke")
        assert verdict.outcome is Outcome.FAILED
        assert "missing" in verdict.detail


def test_wrong_md5_on_target_is_failed() -> None:
    source, target, checker = checked()
    target.md5s.update(SOURCE)
    target.md5s["b"] = "f" * 32
    verdict = checker.classify(succeeded=True)
    assert verdict.outcome is Outcome.FAILED and "wrong MD5" in verdict.detail


def test_success_report_over_an_unchanged_target_is_failed() -> None:
    _, _, checker = checked()
    assert checker.classify(succeeded=True).outcome is Outcome.FAILED


def test_complete_target_but_failure_reported_is_failed() -> None:
    source, target, checker = checked()
    target.md5s.update(SOURCE)
    assert checker.classify(succeeded=False, error="commit timed out").outcome is Outcome.FAILED


def test_a_modified_source_is_failed() -> None:
    source, target, checker = checked()
    target.md5s.update(SOURCE)
    del source.md5s["c"]
    verdict = checker.classify(succeeded=True)
    assert verdict.outcome is Outcome.FAILED and "source" in verdict.detail


def test_instance_removed_from_target_is_failed() -> None:
    source, target, checker = checked()
    target.md5s.update(SOURCE)
    del target.md5s["z"]
    assert checker.classify(succeeded=True).outcome is Outcome.FAILED


def test_report_counts_must_match() -> None:
    source, target, checker = checked()
    target.md5s.update(SOURCE)
    good = {"state": "Success", "instances": 3, "verified": 3, "failures": []}
    assert checker.classify(succeeded=True, report=good).outcome is Outcome.COMPLETED_VERIFIED
    short = dict(good, verified=2)
    assert checker.classify(succeeded=True, report=short).outcome is Outcome.FAILED


def test_nothing_to_do_is_completed_when_target_already_has_everything() -> None:
    source = FakeServer(SOURCE)
    target = FakeServer(SOURCE)
    checker = TransferChecker(source, target, settle_interval=0).before()
    assert checker.classify(succeeded=True).outcome is Outcome.COMPLETED_VERIFIED
