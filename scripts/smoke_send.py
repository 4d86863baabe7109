"""Smoke test of a built command line: send a study between two real Orthanc servers.

    python scripts/smoke_send.py --cli dist/orthanc-transfers-gui/orthanc-transfers

Starts two test Orthanc servers with the SOURCE tree's test bed
(gui.sandbox.orthanc_process), uploads a small synthetic study to the
first, runs ``<cli> send --from URL --to URL --study ID --json`` and checks
that the command reports ``"state": "Success"`` and that the second server
now holds every instance with the same MD5 as the first. Done once between
stock servers and once between servers running the accelerator plugin
(when orthanc-python is installed). Exit status 0 only if every run passed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gui.sandbox import synthetic_studies as synth  # noqa: E402
from gui.sandbox.orthanc_process import (  # noqa: E402
    PYTHON_PLUGIN, OrthancProcess, accelerator_plugin_script)

CLI_TIMEOUT_S = 300


def say(message: str) -> None:
    print(f"[smoke_send] {message}", flush=True)


class SmokeFailure(Exception):
    pass


def study_files() -> List[bytes]:
    """A small study: a few CT-like slices and some tiny instances."""
    spec = synth.make_study_spec(4242, "CT SMOKE")
    files = list(synth.ct_series(spec, 4, rows=128, cols=128, seed=4242))
    files += list(synth.tiny_instances(spec, 3, size=2048, seed=4242))
    return files


def last_json_object(stdout: str) -> Dict[str, Any]:
    """The report: the whole output as one JSON object, or else the last
    line that is one (progress lines may come first)."""
    text = stdout.strip()
    try:
        value = json.loads(text)
        if isinstance(value, dict):
            return value
    except ValueError:
        pass
    for line in reversed(text.splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    raise SmokeFailure(f"the command printed no JSON object:\n{stdout[-2000:]}")


def isolated_env(home: Path) -> Dict[str, str]:
    """The user's own settings, keyring and display stay out of the test."""
    env = dict(os.environ)
    env.update({
        "ORTHANC_TRANSFERS_CONFIG": str(home / "config" / "config.json"),
        "ORTHANC_TRANSFERS_DATA": str(home / "data"),
        "ORTHANC_TRANSFERS_KEYRING": "0",
        "QT_QPA_PLATFORM": "offscreen",
    })
    for name in ("DISPLAY", "WAYLAND_DISPLAY"):
        env.pop(name, None)
    return env


def send_once(cli: str, mode: str, extra_args: List[str]) -> None:
    accelerated = mode == "accelerator"
    servers: List[OrthancProcess] = []
    try:
        for name in ("smoke-source", "smoke-target"):
            servers.append(OrthancProcess(name, with_accelerator=accelerated).start())
        source, target = servers
        files = study_files()
        study_id = ""
        for data in files:
            study_id = source.upload(data)["ParentStudy"]
        expected = source.instance_md5s()
        say(f"[{mode}] {len(expected)} instances in study {study_id} on {source.url}; target {target.url}")

        command = [cli, "send", "--from", source.url, "--to", target.url,
                   "--study", study_id, "--json", *extra_args]
        say(f"[{mode}] running: {' '.join(command)}")
        with tempfile.TemporaryDirectory(prefix="smoke-send-home-") as home:
            try:
                done = subprocess.run(command, capture_output=True, text=True,
                                      timeout=CLI_TIMEOUT_S, env=isolated_env(Path(home)))
            except subprocess.TimeoutExpired:
                raise SmokeFailure(f"[{mode}] the command did not finish within {CLI_TIMEOUT_S} s")
        if done.returncode != 0:
            raise SmokeFailure(f"[{mode}] the command exited with status {done.returncode}\n"
                               f"stdout:\n{done.stdout[-2000:]}\nstderr:\n{done.stderr[-2000:]}")
        report = last_json_object(done.stdout)
        state = report.get("state")
        if state != "Success":
            raise SmokeFailure(f"[{mode}] the report says state={state!r}, expected 'Success':\n"
                               f"{json.dumps(report, indent=2)[:2000]}")
        say(f'[{mode}] the command reported "state": "Success" (transfer mode: {report.get("mode")})')
        received = target.instance_md5s()
        if received != expected:
            missing = sorted(set(expected) - set(received))
            wrong = sorted(i for i in expected if i in received and received[i] != expected[i])
            raise SmokeFailure(f"[{mode}] the target does not hold the study: "
                               f"{len(missing)} instances missing, {len(wrong)} with another MD5")
        say(f"[{mode}] the target holds all {len(received)} instances with the same MD5s")
    finally:
        for server in servers:
            server.stop()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cli", required=True, help="the orthanc-transfers executable to test")
    parser.add_argument("--modes", default="stock,accelerator",
                        help="comma-separated: stock (no plugin), accelerator (the project's plugin)")
    parser.add_argument("cli_args", nargs="*", help="extra arguments for the send command (after --)")
    args = parser.parse_args(argv)

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - {"stock", "accelerator"}
    if unknown:
        parser.error(f"unknown mode(s): {', '.join(sorted(unknown))}")
    if "accelerator" in modes and not os.path.exists(PYTHON_PLUGIN):
        say(f"FAILED: the accelerator run needs {PYTHON_PLUGIN} (or pass --modes stock)")
        return 1
    if "accelerator" in modes:
        accelerator_plugin_script()  # MissingResourceError names the missing plugin
    if not os.access(args.cli, os.X_OK):
        say(f"FAILED: {args.cli} is not an executable file")
        return 1
    failures = 0
    for mode in modes:
        try:
            send_once(args.cli, mode, args.cli_args)
        except SmokeFailure as exc:
            failures += 1
            say(f"FAILED: {exc}")
        except Exception as exc:  # a server that did not start, an upload refused...
            failures += 1
            say(f"FAILED: [{mode}] {type(exc).__name__}: {exc}")
    if failures:
        return 1
    say("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
