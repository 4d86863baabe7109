"""Fault injection: the reliability matrix, its soak mode and the pieces they share.

- :mod:`gui.faults.checker`   snapshot a source and a target, classify the end state
- :mod:`gui.faults.http_front` an asyncio HTTP front that injects faults in front of a real Orthanc
- :mod:`gui.faults.tls`       throw-away certificates and a TLS front
- :mod:`gui.faults.scenarios` the scenarios, one function per row of the matrix
- :mod:`gui.faults.matrix`    ``python -m gui.faults.matrix``: run every cell once, write the table
- :mod:`gui.faults.soak`      ``python -m gui.faults.soak --minutes 30``: repeat with random fault timing
"""

from gui.faults.checker import Outcome, TransferChecker, Verdict

__all__ = ["Outcome", "TransferChecker", "Verdict"]
