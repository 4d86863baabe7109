"""A regular (non-editable) install is a working app: build the wheel, install
it into a fresh virtual environment outside the checkout and run the demo
there, with both Orthanc servers loading the server plugin from the install.

The fresh environment borrows the test environment's dependencies (Qt,
httpx, ...) through a path file, so nothing is downloaded; the project
itself comes only from the wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from gui.sandbox.orthanc_process import ORTHANC_BINARY, PYTHON_PLUGIN

ROOT = Path(__file__).resolve().parents[2]
# What a copy of the checkout needs to build; build/ and egg-info left by an
# earlier in-tree build could otherwise slip stale files into the wheel.
COPY_IGNORED = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                                      "*.pyc", ".pytest_cache", ".hypothesis", "bench-results")


@pytest.fixture(autouse=True)
def orthanc_installed() -> None:
    # Like every test that starts servers: fail, never skip, without them.
    assert os.path.exists(ORTHANC_BINARY) and os.path.exists(PYTHON_PLUGIN), \
        "needs Orthanc and orthanc-python (scripts/run-tests.sh installs them)"


def _run(command: List[str], env: Dict[str, str], cwd: Path, timeout: float = 300) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(command)} exited with {done.returncode}:\n{output}"
    return output


def _clean_env(tmp_path: Path) -> Dict[str, str]:
    """No PYTHONPATH (the checkout must not be importable), private settings."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(QT_QPA_PLATFORM="offscreen", ORTHANC_TRANSFERS_KEYRING="0",
               ORTHANC_TRANSFERS_CONFIG=str(tmp_path / "config" / "config.json"),
               ORTHANC_TRANSFERS_DATA=str(tmp_path / "data"))
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=COPY_IGNORED, symlinks=True)
    out = work / "out"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(source)],
         _clean_env(work), work)
    (built,) = out.glob("orthanc_transfers_gui-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh virtual environment (outside the checkout) with the wheel installed."""
    home = tmp_path_factory.mktemp("fresh")
    env_dir = home / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        _clean_env(home), home).strip())
    # The test environment's packages, after the fresh environment's own: a
    # plain path line does not run that folder's .pth files, so an editable
    # install of the checkout there stays invisible.
    borrowed = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (purelib / "borrowed-dependencies.pth").write_text("\n".join(sorted(borrowed)) + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
          "--quiet", str(wheel)], _clean_env(home), home)
    yield env_dir


def test_the_wheel_holds_the_resources_and_no_development_tools(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for resource in ("gui/resources/__init__.py", "gui/resources/style.qss",
                     "gui/resources/orthanc-transfers-gui.desktop",
                     "gui/resources/icons/orthanc-transfers.svg",
                     "gui/resources/server_plugin/transfers_accelerator.py",
                     "gui/resources/server_plugin/install_wire.py",
                     "gui/resources/server_plugin/transfers_plugin/plugin.py",
                     "gui/protocol/wire.py"):
        assert resource in names, f"the wheel lacks {resource}"
    assert not [n for n in names if n.startswith("tests/") or "devtools" in n or "screenshots" in n]
    # pyproject.toml lists the packages: each one under gui/ must be there.
    for init in (ROOT / "gui").rglob("__init__.py"):
        relative = init.relative_to(ROOT).as_posix()
        assert relative in names, f"{relative} is missing: add its package to [tool.setuptools] packages"


def test_the_installed_app_finds_its_resources_in_the_install(installed: Path, tmp_path: Path) -> None:
    python = installed / "bin" / "python"
    out = _run([str(python), "-c",
                "import gui, gui.resources; from gui.resource_paths import resource_path;"
                "print(gui.__file__); print(resource_path('style.qss'));"
                "print(resource_path('server_plugin', 'transfers_accelerator.py'))"],
               _clean_env(tmp_path), tmp_path)
    paths = [Path(line) for line in out.split()]
    assert all(path.is_relative_to(installed) for path in paths), out
    assert not any(path.is_relative_to(ROOT) for path in paths), out


def test_the_installed_app_runs_the_demo_with_both_servers_accelerated(installed: Path, tmp_path: Path) -> None:
    out = _run([str(installed / "bin" / "orthanc-transfers-gui"), "--demo", "--self-test",
                "--demo-studies", "1", "--demo-slices", "2"], _clean_env(tmp_path), tmp_path, timeout=240)
    assert "both with the transfers accelerator" in out, out
    assert "self-test ok" in out, out
