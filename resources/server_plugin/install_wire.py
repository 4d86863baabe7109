"""Copy the wire-format module next to the plugin, for installs outside the source tree.

Run from a source checkout (or an installed app, where this folder is
``gui/resources/server_plugin``), before copying the folder to the server::

    python3 resources/server_plugin/install_wire.py

It writes ``transfers_wire.py`` beside ``transfers_accelerator.py``; the
plugin prefers that copy to ``../../gui/protocol/wire.py``. Re-run it after
updating the source tree so both ends keep the same wire format.
"""

import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
# A source checkout's layout first, then an installed app's.
SOURCES = [os.path.normpath(os.path.join(HERE, "..", "..", "gui", "protocol", "wire.py")),
           os.path.normpath(os.path.join(HERE, "..", "..", "protocol", "wire.py"))]
SOURCE = next((path for path in SOURCES if os.path.isfile(path)), SOURCES[0])
TARGET = os.path.join(HERE, "transfers_wire.py")


def install_wire(source: str = SOURCE, target: str = TARGET) -> str:
    shutil.copyfile(source, target)
    return target


if __name__ == "__main__":
    print("wrote", install_wire())
