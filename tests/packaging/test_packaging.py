"""Packaging checks that need no PyInstaller run: the spec, the desktop entry,
the icons and the frozen launcher's choice between the GUI and the CLI."""

from __future__ import annotations

import configparser
import os
import struct
import subprocess
import sys
import types
from pathlib import Path
from typing import Any, Dict, List

import pytest

import gui
from gui import frozen_main

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "orthanc_transfers_gui.spec"
DESKTOP = ROOT / "resources" / "orthanc-transfers-gui.desktop"
ICONS = ROOT / "resources" / "icons"
PNG_SIZES = (16, 32, 48, 64, 128, 256)

# What PyInstaller's analysis typically collects from PySide6, per platform:
# (path inside the bundle, whether the spec must keep it).
QT_FILES = [
    ("PySide6/Qt/translations/qtbase_de.qm", False),  # the interface is in English
    ("PySide6/Qt/lib/libQt6Core.so.6", True),
    ("PySide6/Qt/lib/libQt6Widgets.so.6", True),
    ("PySide6/Qt/lib/libQt6Svg.so.6", True),
    ("PySide6/Qt/lib/libQt6DBus.so.6", True),
    ("PySide6/Qt/lib/libQt6XcbQpa.so.6", True),
    ("PySide6/Qt/lib/libQt6WaylandClient.so.6", True),
    ("PySide6/Qt/lib/libQt6Quick.so.6", False),
    ("PySide6/Qt/lib/libQt6Qml.so.6", False),
    ("PySide6/Qt/lib/libQt6Pdf.so.6", False),
    ("PySide6/Qt/lib/libQt6VirtualKeyboard.so.6", False),
    ("PySide6/Qt/plugins/platforms/libqoffscreen.so", True),
    ("PySide6/Qt/plugins/platforms/libqxcb.so", True),
    ("PySide6/Qt/plugins/platforms/libqwayland.so", True),
    ("PySide6/Qt/plugins/platforms/libqvnc.so", False),
    ("PySide6/Qt/plugins/platforms/libqeglfs.so", False),
    ("PySide6/Qt/plugins/imageformats/libqsvg.so", True),
    ("PySide6/Qt/plugins/imageformats/libqjpeg.so", True),
    ("PySide6/Qt/plugins/imageformats/libqpdf.so", False),
    ("PySide6/Qt/plugins/iconengines/libqsvgicon.so", True),
    ("PySide6/Qt/plugins/platformthemes/libqgtk3.so", False),
    ("PySide6/Qt/plugins/platforminputcontexts/libqtvirtualkeyboardplugin.so", False),
    ("PySide6/Qt/plugins/qmltooling/libqmldbg_debugger.so", False),
    ("PySide6/Qt/plugins/egldeviceintegrations/libqeglfs-kms-integration.so", False),
    ("PySide6/Qt/plugins/wayland-shell-integration/libxdg-shell.so", True),
    ("PySide6/Qt/plugins/wayland-shell-integration/libivi-shell.so", False),
    ("PySide6/Qt/translations/qtdeclarative_de.qm", False),
    # Windows wheels: DLLs next to the bindings, plugins one level down.
    ("PySide6/Qt6Gui.dll", True),
    ("PySide6/Qt6Quick.dll", False),
    ("PySide6\\plugins\\platforms\\qwindows.dll", True),
    ("PySide6\\plugins\\imageformats\\qsvg.dll", True),
    ("PySide6\\plugins\\styles\\qmodernwindowsstyle.dll", True),
    # macOS wheels: frameworks.
    ("PySide6/Qt/lib/QtGui.framework/Versions/A/QtGui", True),
    ("PySide6/Qt/lib/QtQuick.framework/Versions/A/QtQuick", False),
    ("PySide6/Qt/plugins/platforms/libqcocoa.dylib", True),
    ("PySide6/Qt/plugins/styles/libqmacstyle.dylib", True),
    # Not Qt at all.
    ("cryptography/hazmat/bindings/_rust.abi3.so", True),
    ("libssl.so.3", True),
]


class _Recorder:
    """Stands in for one of PyInstaller's build classes and keeps its arguments."""

    made: List["_Recorder"] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs
        type(self).made.append(self)


def run_spec(dist: Path, platform: str = sys.platform) -> Dict[str, Any]:
    """Execute the spec as PyInstaller would on ``platform``, with recording
    stand-ins for PyInstaller's classes; the bundle folder goes to ``dist``."""
    made: List[_Recorder] = []

    def recorder(kind: str) -> type:
        return type(kind, (_Recorder,), {"made": made})

    Analysis, Collect = recorder("Analysis"), recorder("COLLECT")

    def analysis(*args: Any, **kwargs: Any) -> Any:
        result = Analysis(*args, **kwargs)
        result.binaries = [(dest, "/collected/" + dest, "BINARY") for dest, _ in QT_FILES]
        result.datas = []
        result.pure = []
        result.scripts = [("frozen_main", args[0][0], "PYSOURCE")]
        return result

    def collect(*args: Any, **kwargs: Any) -> Any:
        (dist / kwargs["name"]).mkdir(parents=True, exist_ok=True)  # as PyInstaller does
        return Collect(*args, **kwargs)

    namespace: Dict[str, Any] = {
        "__file__": str(SPEC), "__name__": "__main__", "SPECPATH": str(ROOT), "DISTPATH": str(dist),
        "Analysis": analysis, "PYZ": recorder("PYZ"), "EXE": recorder("EXE"),
        "COLLECT": collect, "BUNDLE": recorder("BUNDLE"),
    }
    saved_platform, saved_path = sys.platform, list(sys.path)
    sys.platform = platform  # the spec reads it to pick icons and executables
    try:
        exec(compile(SPEC.read_text(encoding="utf-8"), str(SPEC), "exec"), namespace)
    finally:
        sys.platform = saved_platform
        sys.path[:] = saved_path
    namespace["_made"] = made
    return namespace


@pytest.fixture(scope="module")
def linux_build(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    dist = tmp_path_factory.mktemp("dist")
    build = run_spec(dist, "linux")
    build["_dist"] = dist
    return build


def _made(spec: Dict[str, Any], kind: str) -> List[_Recorder]:
    return [m for m in spec["_made"] if type(m).__name__ == kind]


def test_spec_analyses_the_launcher_with_every_app_module(linux_build: Dict[str, Any]) -> None:
    (analysis,) = _made(linux_build, "Analysis")
    assert [Path(s) for s in analysis.args[0]] == [ROOT / "gui" / "frozen_main.py"]
    hidden = analysis.kwargs["hiddenimports"]
    assert {"gui.app", "gui.cli", "gui.frozen_main", "gui.protocol.wire"} <= set(hidden)
    assert not any(m.startswith("tests") for m in hidden)
    assert not any(m.endswith("__main__") for m in hidden)
    assert "PySide6.QtQuick" in analysis.kwargs["excludes"]
    (hooks,) = analysis.kwargs["hookspath"]
    assert (Path(hooks) / "hook-PySide6.QtGui.py").is_file()


def test_linux_bundle_is_one_executable_with_a_cli_link(linux_build: Dict[str, Any]) -> None:
    (exe,) = _made(linux_build, "EXE")
    assert exe.kwargs["name"] == "orthanc-transfers-gui"
    assert exe.kwargs["upx"] is False  # UPX breaks Qt plugins
    assert exe.kwargs["icon"] is None
    (collect,) = _made(linux_build, "COLLECT")
    assert collect.kwargs["name"] == "orthanc-transfers-gui"
    assert collect.args[0] is exe
    link = linux_build["_dist"] / "orthanc-transfers-gui" / "orthanc-transfers"
    assert link.is_symlink()
    assert os.readlink(link) == "orthanc-transfers-gui"  # relative: the folder can move
    assert not _made(linux_build, "BUNDLE")


def test_windows_bundle_has_a_console_executable_for_the_cli(tmp_path: Path) -> None:
    build = run_spec(tmp_path, "win32")
    exes = {e.kwargs["name"]: e for e in _made(build, "EXE")}
    assert set(exes) == {"orthanc-transfers-gui", "orthanc-transfers"}
    assert exes["orthanc-transfers-gui"].kwargs["console"] is False
    assert exes["orthanc-transfers"].kwargs["console"] is True
    assert all(e.kwargs["icon"] == str(ICONS / "orthanc-transfers.ico") for e in exes.values())
    assert all(e.kwargs["strip"] is False for e in exes.values())
    (collect,) = _made(build, "COLLECT")
    assert set(collect.args[:2]) == set(exes.values())
    assert not (tmp_path / "orthanc-transfers-gui" / "orthanc-transfers").exists()


def test_macos_build_also_makes_an_app(tmp_path: Path) -> None:
    build = run_spec(tmp_path, "darwin")
    (bundle,) = _made(build, "BUNDLE")
    assert bundle.kwargs["icon"] == str(ICONS / "orthanc-transfers.icns")
    assert bundle.kwargs["name"].endswith(".app")
    assert (tmp_path / "orthanc-transfers-gui" / "orthanc-transfers").is_symlink()


def test_spec_bundles_existing_resources_where_the_app_looks(linux_build: Dict[str, Any]) -> None:
    (collect,) = _made(linux_build, "COLLECT")
    datas = collect.args[2]
    for dest, source, kind in datas:
        assert kind == "DATA"
        assert Path(source).is_file(), f"{dest} comes from a missing file {source}"
        assert Path(source).resolve().is_relative_to(ROOT), source
    dests = {Path(dest).as_posix() for dest, _, _ in datas}
    # resources/ travels as the package gui.resources, as in the wheel.
    expected = {
        "gui/resources/__init__.py",
        "gui/resources/orthanc-transfers-gui.desktop",
        "gui/resources/style.qss",
        "gui/resources/icons/orthanc-transfers.svg",
        "gui/resources/server_plugin/transfers_accelerator.py",
        "gui/resources/server_plugin/transfers_plugin/plugin.py",
        # The plugin loads the wire format from this copy in the bundle.
        "gui/resources/server_plugin/transfers_wire.py",
    } | {f"gui/resources/icons/orthanc-transfers-{n}.png" for n in PNG_SIZES}
    assert expected <= dests
    # Everything shipped comes from resources/ (the wire copy from gui/protocol).
    assert all(d.startswith("gui/resources/") for d in dests), sorted(dests)
    assert "gui/resources/server_plugin/install_wire.py" not in dests
    assert not any("screenshots" in d or "devtools" in d for d in dests)
    assert not any("__pycache__" in d or d.endswith(".pyc") for d in dests)
    wire_copy = next(src for dest, src, _ in datas if dest.endswith("transfers_wire.py"))
    assert Path(wire_copy) == ROOT / "gui" / "protocol" / "wire.py"


def test_spec_has_no_machine_specific_paths() -> None:
    for path in (SPEC, ROOT / "packaging" / "qt_selection.py"):
        text = path.read_text(encoding="utf-8")
        for fragment in ("/usr/", "/tmp/", "/home/", "/work/", "site-packages", "C:\\"):
            assert fragment not in text, f"{fragment} in {path.name}"


@pytest.mark.parametrize("dest,kept", QT_FILES)
def test_spec_keeps_only_the_qt_parts_the_app_uses(
        linux_build: Dict[str, Any], dest: str, kept: bool) -> None:
    assert linux_build["keep_bundle_file"](dest) is kept
    (collect,) = _made(linux_build, "COLLECT")
    assert any(entry[0] == dest for entry in collect.args[1]) is kept


def test_the_app_needs_none_of_the_qt_parts_left_out() -> None:
    """QtNetwork is excluded and Qt's translations dropped: that holds only
    while the app neither uses QtNetwork nor installs a QTranslator."""
    for path in (ROOT / "gui").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "QtNetwork" not in text, f"{path} uses QtNetwork: take it out of the spec's excludes"
        assert "QTranslator" not in text, f"{path} translates: keep Qt's catalogues in qt_selection.py"


def test_desktop_entry_has_the_required_keys() -> None:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keys are case-sensitive
    parser.read(DESKTOP, encoding="utf-8")
    entry = parser["Desktop Entry"]
    assert entry["Type"] == "Application"
    assert entry["Name"]
    assert entry["Comment"]
    assert entry["Exec"].split()[0] == "orthanc-transfers-gui"
    assert entry["Icon"] == "orthanc-transfers"
    assert entry["Terminal"] == "false"
    categories = entry["Categories"]
    assert categories.endswith(";")
    assert categories.split(";")[0] in {"Network", "Graphics", "Science", "Utility", "Office"}
    # The icon it names ships in the sizes desktops look for.
    assert (ICONS / "orthanc-transfers.svg").is_file()


def _render_icons_module() -> types.ModuleType:
    import importlib.util
    spec = importlib.util.spec_from_file_location("render_icons", ROOT / "scripts" / "render_icons.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_window_icon_is_the_one_source_svg(qapp: Any) -> None:
    """One icon everywhere: the window shows the SVG the PNG/ICO/ICNS files are
    rendered from, and there is no second copy of it anywhere in gui/."""
    from gui.ui.main_window import app_icon
    source = _render_icons_module().SOURCE_SVG
    assert source == ICONS / "orthanc-transfers.svg"
    assert not app_icon().isNull()
    assert not list((ROOT / "gui").rglob("*.svg")), "icons belong in resources/icons/"


@pytest.mark.parametrize("size", (16, 256))
def test_desktop_icons_are_rendered_from_the_source_svg(qapp: Any, size: int) -> None:
    """The committed PNGs match a fresh rendering of the SVG: run
    scripts/render_icons.py again after changing it. Compared pixel by pixel
    with a small tolerance, as anti-aliasing may differ between Qt versions."""
    from PySide6.QtGui import QImage
    fresh = QImage.fromData(_render_icons_module().render_png(ICONS / "orthanc-transfers.svg", size))
    committed = QImage(str(ICONS / f"orthanc-transfers-{size}.png"))
    assert (committed.width(), committed.height()) == (fresh.width(), fresh.height()) == (size, size)
    fresh = fresh.convertToFormat(QImage.Format.Format_RGBA8888)
    committed = committed.convertToFormat(QImage.Format.Format_RGBA8888)
    a, b = bytes(fresh.constBits()), bytes(committed.constBits())
    differing = sum(1 for x, y in zip(a, b) if abs(x - y) > 16)
    assert differing <= len(a) // 100, f"{differing} of {len(a)} channel values differ: icons are stale"


def _png_size(data: bytes) -> tuple:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("size", PNG_SIZES)
def test_icon_png_in_every_size(size: int) -> None:
    path = ICONS / f"orthanc-transfers-{size}.png"
    assert _png_size(path.read_bytes()) == (size, size)


def test_windows_and_macos_icons_hold_the_png_sizes() -> None:
    ico = (ICONS / "orthanc-transfers.ico").read_bytes()
    reserved, kind, count = struct.unpack("<HHH", ico[:6])
    assert (reserved, kind) == (0, 1)
    sizes = []
    for index in range(count):
        width, height, _, _, _, _, length, offset = struct.unpack(
            "<BBBBHHII", ico[6 + 16 * index: 22 + 16 * index])
        image_size = _png_size(ico[offset: offset + length])
        assert image_size == (width or 256, height or 256)
        sizes.append(image_size[0])
    assert sorted(sizes) == list(PNG_SIZES)

    icns = (ICONS / "orthanc-transfers.icns").read_bytes()
    assert icns[:4] == b"icns"
    assert struct.unpack(">I", icns[4:8])[0] == len(icns)


@pytest.mark.parametrize("argv,kind,args", [
    (["/opt/orthanc-transfers-gui/orthanc-transfers", "peers"], "cli", ["peers"]),
    (["C:\\Program Files\\Orthanc Transfers\\orthanc-transfers.exe", "--version"], "cli", ["--version"]),
    (["ORTHANC-TRANSFERS.EXE"], "cli", []),
    (["/opt/orthanc-transfers-gui/orthanc-transfers-gui", "cli", "send", "--json"], "cli", ["send", "--json"]),
    (["/opt/orthanc-transfers-gui/orthanc-transfers-gui"], "gui", []),
    (["orthanc-transfers-gui.exe", "--self-test"], "gui", ["--self-test"]),
    # Only the first argument selects the command line.
    (["orthanc-transfers-gui", "--demo", "cli"], "gui", ["--demo", "cli"]),
    ([], "gui", []),
])
def test_launcher_chooses_the_front_end(argv: List[str], kind: str, args: List[str]) -> None:
    assert frozen_main.choose(argv) == (kind, args)


@pytest.mark.parametrize("argv,expected_module,expected_argv", [
    (["/b/orthanc-transfers", "peers", "--json"], "gui.cli", ["orthanc-transfers", "peers", "--json"]),
    (["/b/orthanc-transfers-gui", "cli", "--version"], "gui.cli", ["orthanc-transfers", "--version"]),
    (["/b/orthanc-transfers-gui", "--self-test"], "gui.app", ["orthanc-transfers-gui", "--self-test"]),
])
def test_launcher_runs_the_chosen_main_with_its_arguments(
        monkeypatch: pytest.MonkeyPatch, argv: List[str], expected_module: str,
        expected_argv: List[str]) -> None:
    calls: List[tuple] = []
    for name, status in (("gui.cli", 3), ("gui.app", 0)):
        fake = types.ModuleType(name)
        fake.main = lambda name=name, status=status: calls.append((name, list(sys.argv))) or status
        monkeypatch.setitem(sys.modules, name, fake)
    monkeypatch.setattr(sys, "argv", list(argv))
    status = frozen_main.main()
    assert calls == [(expected_module, expected_argv)]
    assert status == (3 if expected_module == "gui.cli" else 0)


@pytest.mark.parametrize("argv", [
    ["orthanc-transfers", "--version"],
    ["orthanc-transfers-gui", "cli", "--version"],
    ["orthanc-transfers-gui", "--version"],
])
def test_launcher_reaches_the_real_front_ends(argv: List[str], tmp_path: Path) -> None:
    """Through the launcher, both front ends answer --version, with no display."""
    code = ("import sys; from gui import frozen_main; "
            f"sys.argv = {argv!r}; sys.exit(frozen_main.main())")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert gui.__version__ in done.stdout + done.stderr


# --- stripping and the run-time hook ----------------------------------------------

def _load_packaging_module(name: str) -> types.ModuleType:
    """A module of packaging/ (not a package: PyInstaller loads them by path)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"packaging_{name}", ROOT / "packaging" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


strip_binaries = _load_packaging_module("strip_binaries")


def make_elf(section_names: List[str], bits: int = 64) -> bytes:
    """A minimal ELF file (header and section table only) with these sections."""
    names = b"\0" + b"".join(n.encode() + b"\0" for n in [*section_names, ".shstrtab"])
    header_size, entry_size = (64, 64) if bits == 64 else (52, 40)
    names_offset = header_size
    table_offset = names_offset + len(names)
    count = len(section_names) + 2  # the null section and .shstrtab too

    def section(name_index: int, offset: int = 0, size: int = 0) -> bytes:
        if bits == 64:
            return struct.pack("<IIQQQQIIQQ", name_index, 1, 0, 0, offset, size, 0, 0, 1, 0)
        return struct.pack("<IIIIIIIIII", name_index, 1, 0, 0, offset, size, 0, 0, 1, 0)

    table = section(0)
    for name in section_names:
        table += section(names.index(b"\0" + name.encode() + b"\0") + 1)
    table += section(names.index(b"\0.shstrtab\0") + 1, names_offset, len(names))
    ident = b"\x7fELF" + bytes([2 if bits == 64 else 1, 1, 1]) + bytes(9)
    if bits == 64:
        header = ident + struct.pack("<HHIQQQIHHHHHH", 3, 62, 1, 0, 0, table_offset, 0,
                                     header_size, 0, 0, entry_size, count, count - 1)
    else:
        header = ident + struct.pack("<HHIIIIIHHHHHH", 3, 3, 1, 0, 0, table_offset, 0,
                                     header_size, 0, 0, entry_size, count, count - 1)
    return header + names + table


@pytest.mark.parametrize("bits", [64, 32])
@pytest.mark.parametrize("sections,expected", [
    ([".text", ".dynsym", ".symtab", ".strtab"], True),
    ([".text", ".debug_info", ".debug_line"], True),
    ([".text", ".dynsym", ".dynstr"], False),  # already stripped
])
def test_strip_looks_for_symbols_and_debug_information(
        tmp_path: Path, bits: int, sections: List[str], expected: bool) -> None:
    path = tmp_path / "lib.so"
    path.write_bytes(make_elf(sections, bits))
    assert strip_binaries.has_strippable_sections(str(path)) is expected


def test_strip_ignores_files_that_are_not_elf(tmp_path: Path) -> None:
    (tmp_path / "data.py").write_text("print('hello')\n")
    (tmp_path / "short").write_bytes(b"\x7fELF")
    assert not strip_binaries.has_strippable_sections(str(tmp_path / "data.py"))
    assert not strip_binaries.has_strippable_sections(str(tmp_path / "short"))


def test_strip_leaves_patched_wheels_alone(tmp_path: Path) -> None:
    """A wheel that vendors libraries (``<name>.libs``) patched them after its
    build, and stripping them breaks them (numpy's OpenBLAS did, when the
    bundle had numpy): neither ``<name>.libs`` nor ``<name>`` is touched."""
    bundle = tmp_path / "_internal"
    with_symbols = make_elf([".text", ".symtab"])
    for relative in ("libpython3.so", "python3/lib-dynload/_json.so", "numpy.libs/libopenblas.so",
                     "numpy/_core/_multiarray_umath.so", "PySide6/Qt/lib/libicudata.so.73"):
        (bundle / relative).parent.mkdir(parents=True, exist_ok=True)
        (bundle / relative).write_bytes(with_symbols)
    (bundle / "libalready.so").write_bytes(make_elf([".text"]))
    (bundle / "liblink.so").symlink_to("libpython3.so")
    log = tmp_path / "strip.log"
    fake_strip = tmp_path / "strip"
    fake_strip.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\n')
    fake_strip.chmod(0o755)

    stripped, _saved = strip_binaries.strip_bundle(str(bundle), strip=str(fake_strip))

    done = sorted(Path(p).relative_to(bundle).as_posix() for p in stripped)
    assert done == ["PySide6/Qt/lib/libicudata.so.73", "libpython3.so", "python3/lib-dynload/_json.so"]
    assert all(line.startswith("--strip-unneeded ") for line in log.read_text().splitlines())


@pytest.mark.parametrize("before,after", [
    ({"LD_LIBRARY_PATH": "{bundle}"}, {}),
    ({"LD_LIBRARY_PATH": "{bundle}:/opt/lib", "LD_LIBRARY_PATH_ORIG": "/opt/lib"},
     {"LD_LIBRARY_PATH": "/opt/lib"}),
    ({"LD_LIBRARY_PATH": "{bundle}", "LD_LIBRARY_PATH_ORIG": ""}, {"LD_LIBRARY_PATH": ""}),
    ({}, {}),
])
def test_programs_started_by_the_bundle_get_the_users_library_path(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, before: Dict[str, str],
        after: Dict[str, str]) -> None:
    """Orthanc started by the frozen demo must not load the bundle's libpython."""
    import runpy
    bundle = str(tmp_path / "_internal")
    monkeypatch.setattr(sys, "_MEIPASS", bundle, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    for name in ("LD_LIBRARY_PATH", "LD_LIBRARY_PATH_ORIG"):
        monkeypatch.delenv(name, raising=False)
    for name, value in before.items():
        monkeypatch.setenv(name, value.format(bundle=bundle))
    runpy.run_path(str(ROOT / "packaging" / "runtime_hooks" / "restore_library_path.py"))
    seen = {k: os.environ[k] for k in ("LD_LIBRARY_PATH", "LD_LIBRARY_PATH_ORIG") if k in os.environ}
    assert seen == after
