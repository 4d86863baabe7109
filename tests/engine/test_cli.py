"""The command line: --json contract, exit codes, Ctrl-C, kill and resume."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import List

from gui.engine.job_store import DB_NAME
from gui.sandbox.orthanc_process import free_port
from tests.engine.helpers import upload_files

ROOT = Path(__file__).resolve().parents[2]
REPORT_KEYS = {"job", "state", "mode", "source", "target", "compression", "instances", "transferred",
               "skipped", "verified", "bytes", "wire_bytes", "seconds", "error", "failures", "details"}


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gui.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def start_cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gui.cli", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def url_with_credentials(server) -> str:
    return server.url.replace("http://", f"http://{server.username}:{server.password}@")


def done_buckets(data_dir: Path) -> int:
    db = data_dir / DB_NAME
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT COUNT(*) FROM buckets WHERE state = 'done'").fetchone()[0]
    except sqlite3.Error:
        return 0


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def write_config(path: Path, **peers) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"OrthancPeers": {name: {"Url": server.url, "Username": server.username,
                                                        "Password": server.password}
                                                 for name, server in peers.items()}}))
    return path


def test_version_and_help():
    result = cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("orthanc-transfers ")
    assert cli().returncode == 2


def test_every_command_and_flag_has_a_help_text():
    import argparse

    from gui.cli import build_parser

    def undocumented(parser: argparse.ArgumentParser, where: str) -> list:
        missing = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    if not choice.help:
                        missing.append(f"{where} {choice.dest}")
                for name, sub in action.choices.items():
                    missing += undocumented(sub, f"{where} {name}")
            elif action.help != argparse.SUPPRESS and not action.help:
                missing.append(f"{where} {'/'.join(action.option_strings) or action.dest}")
        return missing
    assert undocumented(build_parser(), "orthanc-transfers") == []


def test_send_json_contract_with_configured_peers_and_uids(orthanc_factory, tmp_path, ct_study_files):
    source = orthanc_factory("source", username="u", password="p1")
    target = orthanc_factory("target", username="u", password="p2")
    ids = upload_files(source, ct_study_files)
    config = write_config(tmp_path / "cfg.json", src=source, dst=target)
    study_uid = source.request("GET", f"/studies/{next(iter(ids.values()))}")["MainDicomTags"]["StudyInstanceUID"]

    result = cli("send", "--from", "src", "--to", "dst", "--study", study_uid, "--config", str(config),
                 "--bucket-size", "64", "--json")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)           # stdout is exactly one JSON object
    assert set(report) >= REPORT_KEYS
    assert report["state"] == "Success" and report["mode"] == "plain"
    # What the user waited for counts the planning done before the job began.
    assert report["command_seconds"] > report["seconds"] > 0
    assert report["planning_seconds"] > 0
    assert report["instances"] == report["verified"] == report["transferred"] == len(ids)
    assert report["failures"] == [] and report["skipped"] == 0
    assert "Traceback" not in result.stderr

    peers = cli("--config", str(config), "peers")
    assert peers.returncode == 0
    assert "src" in peers.stdout and "accelerator no" in peers.stdout
    assert "p1" not in peers.stdout


def test_send_with_url_peers_and_failure_exit_codes(orthanc_factory, tmp_path, ct_study_files):
    source = orthanc_factory("source", username="u", password="secret-one")
    ids = upload_files(source, ct_study_files[:2])
    study = next(iter(ids.values()))
    src_url = url_with_credentials(source)
    nowhere = f"http://127.0.0.1:{free_port()}/"

    failed = cli("send", "--from", src_url, "--to", nowhere, "--study", study, "--retries", "0", "--json")
    assert failed.returncode == 1
    report = json.loads(failed.stdout)
    assert set(report) >= REPORT_KEYS and report["state"] == "Failure"
    assert "connection refused" in report["error"]
    assert "secret-one" not in failed.stdout + failed.stderr

    bad_id = cli("send", "--from", src_url, "--to", nowhere, "--study", "1.2.3.4.5", "--json")
    assert bad_id.returncode == 2
    assert "no study with UID '1.2.3.4.5'" in bad_id.stderr
    assert json.loads(bad_id.stdout)["state"] == "Failure"
    assert "Traceback" not in bad_id.stderr

    bad_peer = cli("send", "--from", "not-configured", "--to", nowhere, "--study", study)
    assert bad_peer.returncode == 2 and "no peer named 'not-configured'" in bad_peer.stderr
    assert bad_peer.stdout == ""


def test_ctrl_c_cancels_rolls_back_and_exits_130(stock_pair, tmp_path, long_study_files):
    source, target = stock_pair
    ids = upload_files(source, long_study_files)
    study = next(iter(ids.values()))
    data = Path(os.environ["ORTHANC_TRANSFERS_DATA"])

    process = start_cli("send", "--from", source.url, "--to", target.url, "--study", study,
                        "--threads", "1", "--bucket-size", "64", "--json")
    try:
        wait_until(lambda: done_buckets(data) > 0 or process.poll() is not None, 120, "a bucket sent")
        assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    report = json.loads(out)
    assert report["state"] == "Canceled"
    assert target.instance_md5s() == {}
    assert "Traceback" not in err


def test_killed_cli_resumes_without_resending(stock_pair, tmp_path, long_study_files):
    source, target = stock_pair
    ids = upload_files(source, long_study_files)
    study = next(iter(ids.values()))
    data = Path(os.environ["ORTHANC_TRANSFERS_DATA"])
    args: List[str] = ["send", "--from", source.url, "--to", target.url, "--study", study,
                       "--threads", "1", "--bucket-size", "64", "--json"]

    process = start_cli(*args)
    try:
        wait_until(lambda: done_buckets(data) >= 2 or process.poll() is not None, 120, "buckets sent")
        assert process.poll() is None, "the transfer ended before it could be killed"
        process.kill()                     # SIGKILL: no chance to clean up
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    arrived = len(target.instance_md5s())
    assert 0 < arrived < len(ids)

    listing = cli("jobs")
    assert "Paused" in listing.stdout

    rerun = cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming unfinished job" in rerun.stderr
    report = json.loads(rerun.stdout)
    assert report["state"] == "Success"
    assert report["verified"] == report["instances"] == len(ids)
    # What the killed run had delivered is not sent again.
    assert report["skipped"] >= arrived > 0
    assert report["transferred"] == len(ids) - report["skipped"]
    assert target.instance_md5s() == source.instance_md5s()


def test_resume_command_finishes_a_killed_job(stock_pair, tmp_path, long_study_files):
    source, target = stock_pair
    ids = upload_files(source, long_study_files)
    study = next(iter(ids.values()))
    data = Path(os.environ["ORTHANC_TRANSFERS_DATA"])
    process = start_cli("send", "--from", source.url, "--to", target.url, "--study", study,
                        "--threads", "1", "--bucket-size", "64")
    try:
        wait_until(lambda: done_buckets(data) >= 1 or process.poll() is not None, 120, "a bucket sent")
        assert process.poll() is None, "the transfer ended before it could be killed"
        process.kill()
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    jobs = json.loads(cli("jobs", "--json").stdout)
    assert len(jobs) == 1 and jobs[0]["state"] == "Paused"

    resumed = cli("resume", jobs[0]["job"][:8], "--json")
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["state"] == "Success" and report["verified"] == len(ids)
    assert report["skipped"] > 0
    assert cli("resume", jobs[0]["job"]).returncode == 2     # finished: nothing to resume


def test_peers_lists_unreachable_peers_with_the_reason(tmp_path):
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"OrthancPeers": {
        "gone": {"Url": f"http://127.0.0.1:{free_port()}", "Username": "u", "Password": "pw-123"}}}))
    result = cli("--config", str(config), "peers")
    assert result.returncode == 0
    assert "gone" in result.stdout and "error: connection refused" in result.stdout
    assert "pw-123" not in result.stdout + result.stderr
    rows = json.loads(cli("--config", str(config), "peers", "--json").stdout)
    assert rows[0]["name"] == "gone" and rows[0]["error"]


def test_a_failed_send_reads_as_a_failure(orthanc_factory, tmp_path, ct_study_files):
    source = orthanc_factory("source", username="u", password="secret-two")
    study = next(iter(upload_files(source, ct_study_files[:1]).values()))
    nowhere = f"http://127.0.0.1:{free_port()}/"
    failed = cli("send", "--from", url_with_credentials(source), "--to", nowhere, "--study", study,
                 "--retries", "0")
    assert failed.returncode == 1
    assert "100.0%" not in failed.stderr and "0/0" not in failed.stderr + failed.stdout
    assert failed.stderr.count("planning") <= 1, failed.stderr
    assert "failed before any instance was sent: " in failed.stderr
    assert failed.stdout.startswith("Failure: nothing was sent to "), failed.stdout
    assert "connection refused" in failed.stdout


def test_help_hints_peers_header_and_jobs_named_like_the_app(orthanc_factory, tmp_path, ct_study_files):
    helped = cli("send", "--help")
    text = " ".join(helped.stdout.split())
    for words in ("push when the target has the transfers accelerator", "measured on the first bucket",
                  "buckets moved at the same time", "small instances are grouped"):
        assert words in text, words

    hint = cli("send", "--from", "127.0.0.1:8042", "--to", "elsewhere", "--study", "1.2.3")
    assert hint.returncode == 2
    assert "write it as a URL: http://127.0.0.1:8042" in hint.stderr

    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    nothing = cli("--config", str(empty), "peers")
    assert nothing.returncode == 0 and "no peers configured" in nothing.stdout
    assert "OrthancPeers" in nothing.stdout and "Settings" in nothing.stdout

    source = orthanc_factory("source", username="u", password="p1")
    target = orthanc_factory("target", username="u", password="p2")
    study = next(iter(upload_files(source, ct_study_files).values()))
    tags = source.request("GET", f"/studies/{study}")
    name = tags["PatientMainDicomTags"]["PatientName"].replace("^", " ")
    config = write_config(tmp_path / "cfg.json", src=source, dst=target)
    peers = cli("--config", str(config), "peers")
    assert peers.stdout.splitlines()[0].split() == ["NAME", "URL", "STATUS"]
    sent = cli("send", "--from", "src", "--to", "dst", "--study", study, "--config", str(config))
    assert sent.returncode == 0, sent.stderr
    jobs = cli("--config", str(config), "jobs")
    line = next(row for row in jobs.stdout.splitlines() if "src -> dst" in row)
    assert f"{name} · {tags['MainDicomTags']['StudyDescription']}" in line, line
