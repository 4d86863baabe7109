"""A corrupt configuration, and the app's entry point run as a user would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import List

import pytest

import gui
from gui.config import load_config
from gui.ui.async_tasks import TaskRunner

ROOT = Path(__file__).resolve().parents[2]
GARBAGE = '{"OrthancPeers": {"a": ["http://x"], oops'


def app_env(tmp_path: Path, **extra: str) -> dict:
    env = dict(os.environ)
    env.update(PYTHONPATH=str(ROOT), ORTHANC_TRANSFERS_KEYRING="0",
               ORTHANC_TRANSFERS_CONFIG=str(tmp_path / "user" / "config.json"),
               ORTHANC_TRANSFERS_DATA=str(tmp_path / "data"), QT_QPA_PLATFORM="offscreen")
    env.update(extra)
    return env


def run_app(tmp_path: Path, *args: str, env: dict = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gui.app", *args], cwd=str(tmp_path),
                          env=env or app_env(tmp_path), capture_output=True, text=True, timeout=timeout)


def test_corrupt_config_is_reported_and_kept_aside(qtbot, make_window, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(GARBAGE)
    config = load_config(path)
    window = make_window(config)
    assert config.recovered_from is not None and config.recovered_from.exists()
    assert config.recovered_from.read_text() == GARBAGE      # nothing lost
    assert not path.exists()                                 # nothing written over it yet
    notice = window.notices[-1]
    assert str(config.recovered_from) in notice and "could not be read" in notice
    assert window.notice_label.isVisibleTo(window)
    assert all(p.peer is None for p in window.panes)


def test_failures_in_tasks_become_messages_not_tracebacks(qtbot, qloop):
    runner = TaskRunner()
    messages: List[str] = []
    runner.failed.connect(messages.append)

    async def boom():
        raise ValueError("the answer was not what we expected")

    with qtbot.waitSignal(runner.failed, timeout=5000):
        runner.start(boom(), what="Loading the list")
    assert messages == ["Loading the list: the answer was not what we expected"]


def test_version_works_without_a_display(tmp_path):
    env = app_env(tmp_path)
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        env.pop(name, None)
    result = run_app(tmp_path, "--version", env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"orthanc-transfers-gui {gui.__version__}"


def test_self_test_opens_the_window_and_exits(tmp_path):
    result = run_app(tmp_path, "--self-test")
    assert result.returncode == 0, result.stderr
    assert "self-test ok" in result.stdout


def test_self_test_with_a_corrupt_config_file_keeps_it(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(GARBAGE)
    result = run_app(tmp_path, "--self-test", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "self-test ok" in result.stdout
    kept = list(tmp_path.glob("mine.json.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_text() == GARBAGE
    assert "kept aside" in result.stderr


def _demo_urls(line: str) -> List[str]:
    return [word for word in line.replace(",", " ").split() if word.startswith("http://")]


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url + "/system", timeout=5).read()
        return True
    except (urllib.error.URLError, OSError):
        return False


def test_demo_servers_stop_when_the_app_quits(tmp_path):
    result = run_app(tmp_path, "--demo", "--demo-studies", "1", "--demo-slices", "2", "--self-test",
                     timeout=240)
    assert result.returncode == 0, result.stderr
    line = next(text for text in result.stdout.splitlines() if text.startswith("Demo servers running"))
    urls = _demo_urls(line)
    assert len(urls) == 2 and "self-test ok" in result.stdout
    assert not any(_answers(url) for url in urls)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_demo_servers_stop_on_a_signal(tmp_path, signum):
    process = subprocess.Popen(
        [sys.executable, "-m", "gui.app", "--demo", "--demo-studies", "1", "--demo-slices", "2"],
        cwd=str(tmp_path), env=app_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        line = process.stdout.readline()   # blocks until the demo is up (or the app died)
        assert line.startswith("Demo servers running"), process.stderr.read() if not line else line
        urls = _demo_urls(line)
        assert all(_answers(url) for url in urls)
        process.send_signal(signum)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()
    # The app exits only after the demo servers have been stopped.
    assert not any(_answers(url) for url in urls)
