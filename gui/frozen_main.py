"""Entry point of the PyInstaller bundle: one program, two personalities.

The bundle ships the desktop app and the command line. Both executables
run this module; it picks the command line when the program is called
``orthanc-transfers`` (whatever the extension, e.g. ``.exe`` on Windows) or
when the first argument is ``cli``, and the desktop app otherwise. A source
install does not use this module: its console scripts point at
``gui.cli:main`` and ``gui.app:main`` directly.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, List, Optional, Sequence, Tuple

CLI_PROGRAM = "orthanc-transfers"
GUI_PROGRAM = "orthanc-transfers-gui"
CLI_ARGUMENT = "cli"


def program_name(argv0: str) -> str:
    """The name the program was called by, without directory or ``.exe``."""
    base = os.path.basename(argv0.replace("\\", "/"))
    stem, ext = os.path.splitext(base)
    if ext.lower() == ".exe":
        base = stem
    return base.lower()


def choose(argv: Sequence[str]) -> Tuple[str, List[str]]:
    """Decide which front end runs: ``("cli" | "gui", remaining arguments)``."""
    argv0 = argv[0] if argv else GUI_PROGRAM
    args = list(argv[1:])
    if program_name(argv0) == CLI_PROGRAM:
        return "cli", args
    if args and args[0] == CLI_ARGUMENT:
        return "cli", args[1:]
    return "gui", args


def _load_entry(kind: str) -> Callable[..., Any]:
    # Plain import statements (not importlib) so PyInstaller's analysis sees
    # both front ends and bundles them.
    if kind == "cli":
        from gui.cli import main as cli_main
        return cli_main
    from gui.app import main as gui_main
    return gui_main


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the chosen front end and return its exit status."""
    # A frozen program that starts worker processes must let them run their
    # task instead of a second copy of the app; a no-op otherwise.
    import multiprocessing
    multiprocessing.freeze_support()

    argv = list(sys.argv if argv is None else argv)
    kind, args = choose(argv)
    program = CLI_PROGRAM if kind == "cli" else GUI_PROGRAM
    entry = _load_entry(kind)
    # The front ends parse sys.argv themselves (argparse), so present them
    # with the command line they would get from a source install.
    sys.argv = [program, *args]
    status = entry()
    if status is None:
        return 0
    if isinstance(status, int):
        return int(status)
    # Anything else (e.g. an error message) follows sys.exit's convention.
    print(status, file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
