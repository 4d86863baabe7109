"""Fault injection: the reliability matrix, its soak mode and the pieces they share.

- :mod:`tests.devtools.faults.checker`   snapshot a source and a target, classify the end state
- :mod:`tests.devtools.faults.http_front` an asyncio HTTP front that injects faults in front of a real Orthanc
- :mod:`tests.devtools.faults.tls`       throw-away certificates and a TLS front
- :mod:`tests.devtools.faults.scenarios` the scenarios, one function per row of the matrix
- :mod:`tests.devtools.faults.matrix`    ``python -m tests.devtools.faults.matrix``: run every cell once,
  write the table
- :mod:`tests.devtools.faults.soak`      ``python -m tests.devtools.faults.soak --minutes 30``: repeat with
  random fault timing
"""

from tests.devtools.faults.checker import Outcome, TransferChecker, Verdict

__all__ = ["Outcome", "TransferChecker", "Verdict"]
