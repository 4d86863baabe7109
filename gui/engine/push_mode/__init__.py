"""Accelerated push mode: the target speaks the transfers accelerator protocol."""

from gui.engine.push_mode.bucket_pusher import BucketPusher
from gui.engine.push_mode.push_transaction import PushTransaction, TransactionGone
from gui.engine.push_mode.push_transport import PushTransport

__all__ = ["PushTransport", "BucketPusher", "PushTransaction", "TransactionGone"]
