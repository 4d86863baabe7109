"""Accelerated pull mode: the source speaks the transfers accelerator protocol."""

from gui.engine.pull_mode.pull_transport import PullTransport

__all__ = ["PullTransport"]
