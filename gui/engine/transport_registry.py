"""Which transport class moves the data of each mode.

The engine is given the classes (``TransferEngine(transports=...)``), so a
test or another front end can run with other ones; ``default_transports()``
is the set this package ships. A mode without a class is not available:
``auto`` does not choose it and asking for it fails the job with a reason.
Local uploads have their own transport (gui/engine/local_upload.py), made
with the files it reads.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Type

from gui.engine.delegated_mode import DelegatedTransport
from gui.engine.events import TransferMode
from gui.engine.plain_mode import PlainTransport
from gui.engine.planner import PlanningError
from gui.engine.pull_mode import PullTransport
from gui.engine.push_mode import PushTransport
from gui.engine.transport_base import Transport


class TransportRegistry:
    def __init__(self, classes: Mapping[TransferMode, Type[Transport]]) -> None:
        self._classes: Dict[TransferMode, Type[Transport]] = dict(classes)

    def get(self, mode: TransferMode) -> Optional[Type[Transport]]:
        return self._classes.get(mode)

    def create(self, mode: TransferMode) -> Transport:
        cls = self._classes.get(mode)
        if cls is None:
            raise PlanningError(f"{mode.value} mode is not available in this installation")
        return cls()

    def available(self) -> Dict[TransferMode, bool]:
        """For planner.choose_mode: every mode that moves data between peers."""
        return {mode: mode in self._classes for mode in
                (TransferMode.PLAIN, TransferMode.PUSH, TransferMode.PULL, TransferMode.DELEGATE)}

    def replaced(self, mode: TransferMode, cls: Type[Transport]) -> "TransportRegistry":
        """A copy with ``cls`` for ``mode`` (tests: a transport that misbehaves)."""
        classes = dict(self._classes)
        classes[mode] = cls
        return TransportRegistry(classes)


def default_transports() -> TransportRegistry:
    """The transports of this package, one per mode."""
    return TransportRegistry({
        TransferMode.PLAIN: PlainTransport,
        TransferMode.PUSH: PushTransport,
        TransferMode.PULL: PullTransport,
        TransferMode.DELEGATE: DelegatedTransport,
    })
